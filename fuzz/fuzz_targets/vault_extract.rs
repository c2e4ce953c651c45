//! `backend::vault::extract::extract` on a Vault response, and
//! `gojson::to_vec` (which writes JSON values and whole responses), each
//! checked against what it must produce.
//!
//! First byte even: textual `secretKey \0 encoding \0 response JSON` (the
//! seeds; an empty key means no secretKey). Odd: a structured response
//! built with `arbitrary`, often shaped like KV v1/v2 answers.

#![no_main]

use arbitrary::Unstructured;
use base64::Engine;
use coffer::backend::vault::extract::{ExtractError, extract};
use coffer::backend::vault::params::{Encoding, Method, Object};
use coffer::gojson;
use coffer_fuzz::{arb_json, arb_key, fields};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn object(key: Option<String>, encoding: Encoding) -> Object {
    Object {
        name: "o".into(),
        path: "secret/data/x".into(),
        query: vec![],
        key,
        method: Method::Get,
        args: None,
        encoding,
        mode: None,
        template_only: false,
        all_keys: false,
        optional: false,
    }
}

/// Go's `hex.DecodeString`: pairs of hex digits, nothing else.
fn hex_reference(raw: &[u8]) -> Option<Vec<u8>> {
    if !raw.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    raw.chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// Equality with a few units in the last place of room for floats:
/// serde_json's default float parser is not correctly rounded in every case
/// (the fuzzer found one: a subnormal, 1.23795469788273e-309, read back as
/// 1.237954697882728e-309). What is checked is gojson, not that parser.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if x.is_f64() || y.is_f64() {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                x == y
                    || (x.is_sign_positive() == y.is_sign_positive()
                        && x.to_bits().abs_diff(y.to_bits()) <= 4)
            } else {
                x == y
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// Go's encoder output: valid JSON, equal to the value, and HTML-safe.
fn check_gojson(v: &Value) {
    let bytes = gojson::to_vec(v);
    let text = std::str::from_utf8(&bytes).expect("gojson writes UTF-8");
    for c in ['<', '>', '&', '\u{2028}', '\u{2029}'] {
        assert!(!text.contains(c), "gojson left {c:?} unescaped: {text}");
    }
    let back: Value = serde_json::from_str(text).expect("gojson writes valid JSON");
    assert!(same(v, &back), "gojson round trip changed {v} into {back}");
}

fn check(response: &Value, key: Option<String>, encoding: Encoding) {
    check_gojson(response);
    let obj = object(key.clone(), encoding);
    let got = extract(&obj, response);
    let Some(key) = key else {
        // The whole response: a JSON object with Go's Secret fields in order.
        let bytes = got.expect("the whole response never fails");
        let back: Value = serde_json::from_slice(&bytes).expect("the whole response is JSON");
        let map = back.as_object().expect("the whole response is an object");
        assert!(same(
            map.get("data").unwrap_or(&Value::Null),
            response.get("data").unwrap_or(&Value::Null)
        ));
        return;
    };
    // Where the value is, by the rules: data, or data.data when that is a map.
    let value = match response.get("data") {
        Some(Value::Object(data)) => match data.get("data") {
            Some(Value::Object(inner)) => inner.get(&key),
            _ => data.get(&key),
        },
        _ => {
            assert!(
                matches!(got, Err(ExtractError::NoData { .. })),
                "{got:?} for a response without a data map"
            );
            return;
        }
    };
    let Some(value) = value else {
        assert!(
            matches!(got, Err(ExtractError::MissingKey { .. })),
            "{got:?}"
        );
        return;
    };
    let raw = match value {
        Value::String(s) => s.as_bytes().to_vec(),
        other => gojson::to_vec(other),
    };
    let expected = match encoding {
        Encoding::Utf8 => Some(raw),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD.decode(&raw).ok(),
        Encoding::Hex => hex_reference(&raw),
    };
    match (got, expected) {
        (Ok(g), Some(e)) => assert_eq!(g, e, "wrong bytes for {encoding:?}"),
        (Err(ExtractError::Decode { .. }), None) => {}
        (g, e) => panic!("{encoding:?} of {value}: got {g:?}, expected {e:?}"),
    }
}

fn encoding(n: u8) -> Encoding {
    match n % 3 {
        0 => Encoding::Utf8,
        1 => Encoding::Base64,
        _ => Encoding::Hex,
    }
}

fn structured(u: &mut Unstructured) -> arbitrary::Result<()> {
    let key = if u.ratio(1, 5)? {
        None
    } else {
        Some(arb_key(u)?)
    };
    let enc = encoding(u.arbitrary()?);
    let inner = arb_json(u, 3)?;
    let response = match (u.int_in_range(0..=2)?, &key) {
        // KV v2: {data: {data: {key: value}, metadata: …}}
        (0, Some(k)) => {
            let value = if u.arbitrary()? {
                Value::String(arb_hexish(u, enc)?)
            } else {
                inner
            };
            serde_json::json!({"request_id": "r", "data": {"data": {k.clone(): value}, "metadata": {"version": 1}}})
        }
        // KV v1 / dynamic: {data: {key: value}}
        (1, Some(k)) => {
            let value = if u.arbitrary()? {
                Value::String(arb_hexish(u, enc)?)
            } else {
                inner
            };
            serde_json::json!({"lease_id": "", "data": {k.clone(): value}, "warnings": []})
        }
        _ => inner,
    };
    check(&response, key, enc);
    Ok(())
}

/// A string that is often close to valid in the encoding.
fn arb_hexish(u: &mut Unstructured, enc: Encoding) -> arbitrary::Result<String> {
    let alphabet: &[u8] = match enc {
        Encoding::Hex => b"0123456789abcdefABCDEF+-_ xg",
        Encoding::Base64 => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ ",
        Encoding::Utf8 => return u.arbitrary(),
    };
    let n = u.int_in_range(0..=16)?;
    let mut s = String::with_capacity(n);
    for _ in 0..n {
        s.push(char::from(*u.choose(alphabet)?));
    }
    Ok(s)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let f = fields(rest, 3);
        let get = |i: usize| f.get(i).cloned().unwrap_or_default();
        let key = Some(get(0)).filter(|k| !k.is_empty());
        let enc = match get(1).as_str() {
            "base64" => Encoding::Base64,
            "hex" => Encoding::Hex,
            _ => Encoding::Utf8,
        };
        if let Ok(response) = serde_json::from_str::<Value>(&get(2)) {
            check(&response, key, enc);
        }
    } else {
        let _ = structured(&mut Unstructured::new(rest));
    }
});
