//! Helpers shared by the fuzz targets: input splitting, a bounded arbitrary
//! JSON value, and the canary used to check that secret values never reach
//! an error message or a `Debug` string.

use arbitrary::{Arbitrary, Unstructured};
use serde_json::Value;

/// Put into every token and secret value the targets build; removed from
/// every other string, so its presence in an error or `Debug` text means a
/// secret leaked.
pub const MARK: &str = "Zq7CanaryXv";

/// `s` without any occurrence of [`MARK`] (also ones that removal creates).
pub fn clean(s: &str) -> String {
    let mut s = s.to_owned();
    while s.contains(MARK) {
        s = s.replace(MARK, "");
    }
    s
}

/// Panics when `text` (an error or `Debug` rendering) contains the canary.
pub fn assert_no_mark(what: &str, text: &str) {
    assert!(!text.contains(MARK), "{what} leaks a secret value: {text}");
}

/// Splits `data` at NUL bytes into at most `n` UTF-8 fields (lossy), the
/// last one taking the rest. Textual seeds are written in this form.
pub fn fields(data: &[u8], n: usize) -> Vec<String> {
    data.splitn(n, |b| *b == 0)
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect()
}

/// Names fuzzed JSON objects are likely to use: Vault response fields and
/// the keys the parsers look for.
const KEYS: &[&str] = &[
    "data",
    "metadata",
    "request_id",
    "lease_id",
    "lease_duration",
    "renewable",
    "warnings",
    "auth",
    "wrap_info",
    "mount_type",
    "key",
    "password",
    "token",
    "expirationTimestamp",
    "sub",
    "exp",
];

/// A key: usually one of [`KEYS`], sometimes arbitrary.
pub fn arb_key(u: &mut Unstructured) -> arbitrary::Result<String> {
    if u.ratio(3, 4)? {
        Ok((*u.choose(KEYS)?).to_owned())
    } else {
        u.arbitrary()
    }
}

/// An arbitrary JSON value at most `depth` levels deep.
pub fn arb_json(u: &mut Unstructured, depth: u32) -> arbitrary::Result<Value> {
    let top = if depth == 0 { 4 } else { 6 };
    Ok(match u.int_in_range(0..=top)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => match u.int_in_range(0..=2)? {
            0 => Value::from(i64::arbitrary(u)?),
            1 => Value::from(u64::arbitrary(u)?),
            _ => serde_json::Number::from_f64(f64::arbitrary(u)?)
                .map(Value::Number)
                .unwrap_or(Value::Null),
        },
        3 | 4 => Value::String(u.arbitrary()?),
        5 => {
            let n = u.int_in_range(0..=4)?;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(arb_json(u, depth - 1)?);
            }
            Value::Array(items)
        }
        _ => {
            let n = u.int_in_range(0..=5)?;
            let mut map = serde_json::Map::new();
            for _ in 0..n {
                let k = arb_key(u)?;
                map.insert(k, arb_json(u, depth - 1)?);
            }
            Value::Object(map)
        }
    })
}

/// A current-thread runtime, one per fuzzing process.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
    })
}
