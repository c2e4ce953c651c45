//! The `csi.storage.k8s.io/serviceAccount.tokens` attribute: the input is
//! the attribute's JSON text, byte for byte. First byte even: it arrives in
//! `attributes`; odd: in `secrets` (serviceAccountTokenInSecrets). Then
//! `for_audience` on every audience it names.

#![no_main]

use coffer::grpc;
use coffer::request::{self, keys};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(tokens) = std::str::from_utf8(rest) else {
        return;
    };
    let mut attributes = serde_json::json!({
        keys::POD_NAME: "web-0",
        keys::POD_NAMESPACE: "default",
        keys::POD_UID: "1f43f7c5",
    });
    let mut secrets = "null".to_owned();
    if mode % 2 == 0 {
        attributes[keys::TOKENS] = tokens.into();
    } else {
        secrets = serde_json::json!({ keys::TOKENS: tokens }).to_string();
    }
    let req = grpc::MountRequest {
        attributes: attributes.to_string(),
        secrets,
        target_path: "/t".into(),
        permission: "420".into(),
        current_object_version: vec![],
    };
    let Ok(parsed) = request::parse(&req) else {
        return;
    };
    let audiences: Vec<String> = parsed.tokens.audiences().map(str::to_owned).collect();
    for audience in audiences.iter().map(String::as_str).chain(["vault", ""]) {
        if let Err(e) = parsed.tokens.for_audience(audience) {
            let _ = (e.to_string(), e.is_precondition());
        }
    }
});
