//! The AWS API of one line of moto's request recording, as the tests and
//! the bench's scale model count them. Std, serde_json and base64 only, so
//! `e2e/bench.rs` includes it by path.

use base64::Engine as _;
use serde_json::Value;

/// The `X-Amz-Target` of a JSON API call (`secretsmanager.GetSecretValue`,
/// `AmazonSSM.GetParameters`), `sts.<Action>` for STS's query API; `None`
/// for anything else.
pub fn api_of(entry: &Value) -> Option<String> {
    let target = entry["headers"].as_object().and_then(|h| {
        h.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("x-amz-target"))
            .and_then(|(_, v)| v.as_str())
    });
    if let Some(t) = target {
        return Some(t.to_owned());
    }
    let raw = entry["body"].as_str().unwrap_or("");
    let body = if entry["body_encoded"] == true {
        base64::engine::general_purpose::STANDARD
            .decode(raw)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    } else {
        raw.to_owned()
    };
    body.split('&')
        .find_map(|kv| kv.strip_prefix("Action="))
        .map(|a| format!("sts.{a}"))
}
