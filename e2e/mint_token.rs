//! Mints an RS256 JWT shaped like a projected ServiceAccount token, signed
//! with the test key in tests/fixtures — the demo's stand-in for kubelet.
//!
//! cargo run --example mint-token -- NAMESPACE SERVICE_ACCOUNT POD POD_UID AUDIENCE [TTL_SECONDS]

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 5 {
        return Err(
            "usage: mint-token NAMESPACE SERVICE_ACCOUNT POD POD_UID AUDIENCE [TTL_SECONDS]".into(),
        );
    }
    let (ns, sa, pod, uid, aud) = (&args[0], &args[1], &args[2], &args[3], &args[4]);
    let ttl: i64 = args.get(5).map(|s| s.parse()).transpose()?.unwrap_or(3600);
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    let claims = json!({
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": format!("system:serviceaccount:{ns}:{sa}"),
        "aud": [aud],
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "kubernetes.io": {
            "namespace": ns,
            "pod": {"name": pod, "uid": uid},
            "serviceaccount": {"name": sa, "uid": "00000000-0000-4000-8000-000000000001"},
        },
    });
    let key_path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sa-signing-key.pem"
    );
    let key = EncodingKey::from_rsa_pem(&std::fs::read(key_path)?)?;
    println!("{}", encode(&Header::new(Algorithm::RS256), &claims, &key)?);
    Ok(())
}
