//! From a Vault response to file bytes, with hashicorp's output rules.

use base64::Engine;
use serde_json::Value;

use super::params::{Encoding, Object};
use crate::gojson;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExtractError {
    #[error("the response from {path:?} has no data")]
    NoData { path: String },
    #[error("key {key:?} does not exist at {path:?}")]
    MissingKey { key: String, path: String },
    #[error("the value of key {key:?} is not valid {encoding}")]
    Decode { key: String, encoding: &'static str },
}

/// The bytes of one object's file.
pub fn extract(object: &Object, response: &Value) -> Result<Vec<u8>, ExtractError> {
    let Some(key) = object.key.as_deref() else {
        return Ok(whole_response(response));
    };
    let data = match response.get("data") {
        Some(Value::Object(map)) => map,
        _ => {
            return Err(ExtractError::NoData {
                path: object.path.clone(),
            });
        }
    };
    // KV v2 answers {data: {data: {...}, metadata: {...}}}: use the inner map.
    let map = match data.get("data") {
        Some(Value::Object(inner)) => inner,
        _ => data,
    };
    // A top-level key first (hashicorp's rule); else a dotted path into
    // nested JSON, `\.` standing for a literal dot (coffer extension).
    let value =
        map.get(key)
            .or_else(|| nested(map, key))
            .ok_or_else(|| ExtractError::MissingKey {
                key: key.to_owned(),
                path: object.path.clone(),
            })?;
    encode(object, key, value)
}

/// Every key of the secret's data (`allKeys`), sorted: the same rules as a
/// `secretKey` for each value (KV v2 unwrap, strings raw, other JSON as Go
/// writes it, then the encoding).
pub fn extract_keys(
    object: &Object,
    response: &Value,
) -> Result<Vec<(String, Vec<u8>)>, ExtractError> {
    let map = match response.get("data") {
        Some(Value::Object(data)) => match data.get("data") {
            Some(Value::Object(inner)) => inner,
            _ => data,
        },
        _ => {
            return Err(ExtractError::NoData {
                path: object.path.clone(),
            });
        }
    };
    let mut out = Vec::with_capacity(map.len());
    for (key, value) in map {
        out.push((key.clone(), encode(object, key, value)?));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// One value's bytes: strings raw, other JSON as Go writes it, then decoded.
fn encode(object: &Object, key: &str, value: &Value) -> Result<Vec<u8>, ExtractError> {
    let raw = match value {
        Value::String(s) => s.as_bytes().to_vec(),
        other => gojson::to_vec(other),
    };
    let decode_err = |encoding| ExtractError::Decode {
        key: key.to_owned(),
        encoding,
    };
    match object.encoding {
        Encoding::Utf8 => Ok(raw),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(&raw)
            .map_err(|_| decode_err("base64")),
        Encoding::Hex => decode_hex(&raw).ok_or_else(|| decode_err("hex")),
    }
}

/// `a.b.c` into nested objects (and arrays by index); `\.` is a literal dot.
fn nested<'a>(map: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a Value> {
    if !key.contains('.') {
        return None;
    }
    let mut segments = vec![String::new()];
    let mut chars = key.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'.') => {
                chars.next();
                segments.last_mut()?.push('.');
            }
            '.' => segments.push(String::new()),
            c => segments.last_mut()?.push(c),
        }
    }
    let mut current = map.get(segments.first()?)?;
    for segment in segments.iter().skip(1) {
        current = match current {
            Value::Object(m) => m.get(segment)?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(current)
}

/// Go's `hex.DecodeString`: pairs of hex digits and nothing else (no sign:
/// `u8::from_str_radix` would take `"+f"`).
fn decode_hex(raw: &[u8]) -> Option<Vec<u8>> {
    if !raw.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    raw.chunks_exact(2)
        .map(|pair| match pair {
            [high, low] => Some(digit(*high)? << 4 | digit(*low)?),
            _ => None,
        })
        .collect()
}

/// The whole response in the field order of the Vault Go client's `Secret`.
fn whole_response(response: &Value) -> Vec<u8> {
    let field = |name: &str| response.get(name).cloned().unwrap_or(Value::Null);
    let mut out = String::from("{");
    let mut push = |name: &str, value: &Value| {
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&gojson::string(name));
        out.push(':');
        out.push_str(&String::from_utf8_lossy(&gojson::to_vec(value)));
    };
    let or = |v: Value, default: Value| if v.is_null() { default } else { v };
    push(
        "request_id",
        &or(field("request_id"), Value::String(String::new())),
    );
    push(
        "lease_id",
        &or(field("lease_id"), Value::String(String::new())),
    );
    push(
        "lease_duration",
        &or(field("lease_duration"), Value::from(0)),
    );
    push("renewable", &or(field("renewable"), Value::Bool(false)));
    push("data", &field("data"));
    let warnings = match field("warnings") {
        Value::Array(a) if a.is_empty() => Value::Null,
        other => other,
    };
    push("warnings", &warnings);
    for optional in ["auth", "wrap_info"] {
        let v = field(optional);
        if !v.is_null() {
            push(optional, &v);
        }
    }
    if let Value::String(s) = field("mount_type")
        && !s.is_empty()
    {
        push("mount_type", &Value::String(s));
    }
    out.push('}');
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::vault::params::Method;
    use serde_json::json;

    fn object(key: Option<&str>, encoding: Encoding) -> Object {
        Object {
            name: "o".into(),
            path: "secret/data/x".into(),
            query: vec![],
            key: key.map(str::to_owned),
            method: Method::Get,
            args: None,
            encoding,
            mode: None,
            template_only: false,
            all_keys: false,
            optional: false,
        }
    }

    #[test]
    fn all_keys_take_every_key_with_the_same_rules() {
        let mut all = object(None, Encoding::Utf8);
        all.all_keys = true;
        let kv2 = json!({"data": {"data": {"user": "u", "n": 10, "j": {"b": 1, "a": "<"}}, "metadata": {"version": 3}}});
        let keys = extract_keys(&all, &kv2).unwrap();
        assert_eq!(
            keys,
            [
                ("j".to_owned(), br#"{"a":"\u003c","b":1}"#.to_vec()),
                ("n".to_owned(), b"10".to_vec()),
                ("user".to_owned(), b"u".to_vec())
            ]
        );
        let kv1 = json!({"data": {"user": "u1", "data": "not-a-map"}});
        let names: Vec<String> = extract_keys(&all, &kv1)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(names, ["data", "user"]);
        assert!(matches!(
            extract_keys(&all, &json!({"data": null})),
            Err(ExtractError::NoData { .. })
        ));
        all.encoding = Encoding::Base64;
        let b64 = json!({"data": {"data": {"a": "aGVsbG8=", "bad": "%%"}}});
        let err = extract_keys(&all, &b64).unwrap_err();
        assert_eq!(
            err,
            ExtractError::Decode {
                key: "bad".into(),
                encoding: "base64"
            }
        );
    }

    #[test]
    fn kv2_inner_data_is_unwrapped_and_strings_are_raw() {
        let resp = json!({"data": {"data": {"password": "s3cr3t", "n": 10, "j": {"b": "hop", "a": 1}, "arr": [6, "stilton", true]}, "metadata": {"version": 1}}});
        assert_eq!(
            extract(&object(Some("password"), Encoding::Utf8), &resp).unwrap(),
            b"s3cr3t"
        );
        assert_eq!(
            extract(&object(Some("n"), Encoding::Utf8), &resp).unwrap(),
            b"10"
        );
        assert_eq!(
            extract(&object(Some("j"), Encoding::Utf8), &resp).unwrap(),
            br#"{"a":1,"b":"hop"}"#
        );
        assert_eq!(
            extract(&object(Some("arr"), Encoding::Utf8), &resp).unwrap(),
            br#"[6,"stilton",true]"#
        );
    }

    #[test]
    fn nested_keys_with_escaped_dots() {
        let resp = json!({"data": {"data": {"config": {"db": {"password": "p", "hosts": ["a", "b"]}, "x.y": "dotted"}, "plain.key": "top"}}});
        assert_eq!(
            extract(&object(Some("config.db.password"), Encoding::Utf8), &resp).unwrap(),
            b"p"
        );
        assert_eq!(
            extract(&object(Some("config.db.hosts.1"), Encoding::Utf8), &resp).unwrap(),
            b"b"
        );
        assert_eq!(
            extract(&object(Some("config.x\\.y"), Encoding::Utf8), &resp).unwrap(),
            b"dotted"
        );
        assert_eq!(
            extract(&object(Some("plain.key"), Encoding::Utf8), &resp).unwrap(),
            b"top",
            "top-level key wins"
        );
        assert_eq!(
            extract(&object(Some("config.db"), Encoding::Utf8), &resp).unwrap(),
            br#"{"hosts":["a","b"],"password":"p"}"#
        );
        assert!(matches!(
            extract(&object(Some("config.nope.x"), Encoding::Utf8), &resp),
            Err(ExtractError::MissingKey { .. })
        ));
    }

    #[test]
    fn kv1_and_string_data_field() {
        let resp = json!({"data": {"data": "not-a-map", "user": "u"}});
        assert_eq!(
            extract(&object(Some("user"), Encoding::Utf8), &resp).unwrap(),
            b"u"
        );
        assert_eq!(
            extract(&object(Some("data"), Encoding::Utf8), &resp).unwrap(),
            b"not-a-map"
        );
    }

    #[test]
    fn missing_key_and_empty_data_are_errors_without_values() {
        let resp = json!({"data": {"data": {"password": "s3cr3t"}}});
        let err = extract(&object(Some("nope"), Encoding::Utf8), &resp).unwrap_err();
        assert_eq!(
            err,
            ExtractError::MissingKey {
                key: "nope".into(),
                path: "secret/data/x".into()
            }
        );
        assert!(matches!(
            extract(&object(Some("k"), Encoding::Utf8), &json!({"data": null})),
            Err(ExtractError::NoData { .. })
        ));
    }

    #[test]
    fn encodings_decode_the_value() {
        let resp = json!({"data": {"b": "aGVsbG8=", "h": "68656c6c6f", "bad": "%%%"}});
        assert_eq!(
            extract(&object(Some("b"), Encoding::Base64), &resp).unwrap(),
            b"hello"
        );
        assert_eq!(
            extract(&object(Some("h"), Encoding::Hex), &resp).unwrap(),
            b"hello"
        );
        let err = extract(&object(Some("bad"), Encoding::Base64), &resp)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("%%%"));
    }

    /// Found by the `vault_extract` fuzz target (docs/fuzzing.md): a `+`
    /// before a hex digit was taken as a sign, so `"35dE+9+e300000"` decoded
    /// to 7 bytes where Go's `hex.DecodeString` (hashicorp's provider) fails.
    #[test]
    fn hex_accepts_hex_digits_only() {
        let resp = json!({"data": {"fuzz": "35dE+9+e300000", "plus": "+f", "minus": "-1", "space": " f", "ok": "00fFaA"}});
        for key in ["fuzz", "plus", "minus", "space"] {
            assert!(
                matches!(
                    extract(&object(Some(key), Encoding::Hex), &resp),
                    Err(ExtractError::Decode { .. })
                ),
                "{key}"
            );
        }
        assert_eq!(
            extract(&object(Some("ok"), Encoding::Hex), &resp).unwrap(),
            [0x00, 0xff, 0xaa]
        );
    }

    #[test]
    fn whole_response_uses_the_go_field_order() {
        let resp = json!({"request_id": "r", "lease_id": "", "renewable": false, "lease_duration": 0, "data": {"data": {"a": "<b>"}, "metadata": {"version": 2}}, "wrap_info": null, "warnings": null, "auth": null, "mount_type": "kv"});
        assert_eq!(
            String::from_utf8(extract(&object(None, Encoding::Utf8), &resp).unwrap()).unwrap(),
            r#"{"request_id":"r","lease_id":"","lease_duration":0,"renewable":false,"data":{"data":{"a":"\u003cb\u003e"},"metadata":{"version":2}},"warnings":null,"mount_type":"kv"}"#
        );
    }
}
