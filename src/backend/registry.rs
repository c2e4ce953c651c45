//! The backends this build has. Each backend brings its own clap flags
//! (`Args`, flattened into `coffer serve` and `coffer check`) and its own
//! `build(&Args, metrics)`; the one list below names them, each behind its
//! Cargo feature. Adding a backend is one line here.

use std::sync::Arc;

use super::Backend;
use crate::metrics::Metrics;

macro_rules! backends {
    ($($feature:literal => $module:ident),* $(,)?) => {
        /// Every backend's flags, as `coffer serve` and `coffer check` take them.
        #[derive(Debug, Clone, clap::Args)]
        pub struct BackendArgs {
            $(
                #[cfg(feature = $feature)]
                #[command(flatten)]
                pub $module: super::$module::Args,
            )*
        }

        impl BackendArgs {
            /// One configured instance of every backend this build has.
            pub fn build(&self, metrics: &Arc<Metrics>) -> Vec<Arc<dyn Backend>> {
                let _ = metrics;
                vec![
                    $(
                        #[cfg(feature = $feature)]
                        super::$module::build(&self.$module, metrics.clone()),
                    )*
                ]
            }
        }
    };
}

backends! {
    "vault" => vault,
    "aws" => aws,
}
