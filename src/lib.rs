//! coffer: a Secrets Store CSI driver provider.
//!
//! The data path, in reading order: [`server`] (sockets and gRPC glue) →
//! [`mount`] (parse the request, plan, fetch, assemble files and versions)
//! → [`backend`] (where secrets come from). [`standin`] is the driver's
//! side, for `coffer mount`; [`check`] validates manifests offline.

#![forbid(unsafe_code)]
// Nothing a SecretProviderClass or a backend sends may panic the process:
// no unwrap, expect or unchecked indexing outside tests. Each remaining
// exception is an `#[expect]` with its reason.
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod backend;
pub mod check;
pub mod cli;
pub mod errors;
pub mod goflags;
pub mod gojson;
pub mod grpc;
pub mod health;
pub mod metrics;
pub mod mount;
pub mod request;
pub mod secret;
pub mod serve;
pub mod server;
pub mod spc;
pub mod standin;
pub mod yaml;
