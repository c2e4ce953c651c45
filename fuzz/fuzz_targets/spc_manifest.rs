//! `spc::parse` of a SecretProviderClass manifest (any YAML text), then
//! what `coffer check` does with each class: the provider name check and a
//! plan by the Vault backend, which runs `check_plan` on the files.

#![no_main]

use std::sync::Arc;

use coffer::backend::vault::{self, VaultBackend};
use coffer::metrics::Metrics;
use coffer::mount::Backends;
use coffer::request::Parameters;
use libfuzzer_sys::fuzz_target;

fn backends() -> &'static Backends {
    static B: std::sync::OnceLock<Backends> = std::sync::OnceLock::new();
    B.get_or_init(|| {
        let mut config = vault::Config::default();
        config.defaults.address = Some("http://127.0.0.1:8200".into());
        let mut b = Backends::default();
        b.add(Arc::new(VaultBackend::new(
            config,
            Arc::new(Metrics::new()),
        )));
        b
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let classes = match coffer::spc::parse(text, "fuzz.yaml") {
        Ok(c) => c,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert!(!classes.is_empty(), "Ok with no class");
    for class in classes {
        let spc = match class {
            Ok(spc) => spc,
            Err(e) => {
                let _ = e.to_string();
                continue;
            }
        };
        assert!(!spc.name.is_empty());
        assert!(!spc.provider.is_empty());
        assert!(!spc.parameters.is_empty());
        if coffer::server::socket::validate_name(&spc.provider).is_err() {
            continue;
        }
        let params: Parameters = spc.parameters.into_iter().collect();
        match backends().plan(&spc.provider, &params) {
            Ok(plan) => {
                assert!(!plan.plan.files.is_empty());
                let _ = format!("{plan:?}");
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
});
