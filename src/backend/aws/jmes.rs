//! jmesPath files: JSON values cut out of a secret with JMESPath. Strings
//! are written as text (as the aws provider does); numbers, booleans,
//! arrays and objects as JSON, where the aws provider fails the mount
//! (its issue #250). Errors name the path and alias, never the value, and
//! no expression or value can panic the process.
//!
//! The jmespath crate parses recursively, one stack frame (or more) per
//! nesting level, and a stack overflow aborts the process where no
//! `catch_unwind` can help: 20,000 nested parentheses took coffer down.
//! So an expression is first measured by a flat scan ([`check`]): its
//! length, its bracket depth and its count of operators, each of which can
//! add a frame to the parser, are bounded before the parser sees it.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

/// Longest expression, in bytes.
pub const MAX_LEN: usize = 1024;
/// Deepest nesting of `(`, `[` and `{`.
pub const MAX_DEPTH: usize = 16;
/// Most operators (`.`, `|`, `[`, `(`, `{`, `!`, `&`, `*`, `?`, `,`, `:` and
/// comparisons) outside quotes: each may add a parser (and evaluation)
/// frame. Measured in a debug build: about 200 such frames fill the 2 MiB
/// stack of a tokio worker; real expressions use fewer than ten.
pub const MAX_OPERATORS: usize = 64;

/// Why a jmesPath entry produced no file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JmesError {
    #[error("Invalid JSON used with jmesPath in secret: {object}.")]
    NotJson { object: String },
    #[error(
        "allKeys: the value of {object} is not a JSON object, so it has no keys to write as files."
    )]
    NotObject { object: String },
    #[error("Invalid JMES Path: {path}.")]
    InvalidPath { path: String },
    #[error("JMES Path {path} is too complex: {reason}")]
    TooComplex { path: String, reason: String },
    #[error("JMES Path - {path} for object alias - {alias} does not point to a valid object.")]
    NoMatch { path: String, alias: String },
    #[error(
        "JMES Path - {path} for object alias - {alias} could not be evaluated (a function was given a value of the wrong type, or the expression failed)"
    )]
    Evaluation { path: String, alias: String },
}

/// Parses a secret's value as JSON once, for all its jmesPath entries.
pub fn parse(object: &str, value: &[u8]) -> Result<serde_json::Value, JmesError> {
    serde_json::from_slice(value).map_err(|_| JmesError::NotJson {
        object: object.to_owned(),
    })
}

/// Every key of a JSON object value (`allKeys`), sorted: strings as text,
/// other values as JSON (as jmesPath files are written).
pub fn keys(object: &str, value: &[u8]) -> Result<Vec<(String, Vec<u8>)>, JmesError> {
    let not_object = || JmesError::NotObject {
        object: object.to_owned(),
    };
    let json = parse(object, value).map_err(|_| not_object())?;
    let map = json.as_object().ok_or_else(not_object)?;
    let mut out = Vec::with_capacity(map.len());
    for (key, value) in map {
        let bytes = match value {
            serde_json::Value::String(s) => s.as_bytes().to_vec(),
            other => serde_json::to_vec(other).map_err(|_| not_object())?,
        };
        out.push((key.clone(), bytes));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// `path` shortened for messages: a refused expression may be huge.
fn shown(path: &str) -> String {
    const SHOWN: usize = 64;
    if path.len() <= SHOWN {
        return path.to_owned();
    }
    let mut end = SHOWN;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &path[..end], path.len())
}

/// Bounds an expression's size and nesting with one flat pass (no
/// recursion, whatever the input), skipping quoted identifiers (`"…"`),
/// raw strings (`'…'`) and JSON literals (`` `…` ``, which serde_json
/// parses with its own depth limit).
pub fn check(path: &str) -> Result<(), JmesError> {
    let too_complex = |reason: String| JmesError::TooComplex {
        path: shown(path),
        reason,
    };
    if path.len() > MAX_LEN {
        return Err(too_complex(format!(
            "{} bytes, above the limit of {MAX_LEN}",
            path.len()
        )));
    }
    let (mut depth, mut deepest, mut operators) = (0usize, 0usize, 0usize);
    let mut quote: Option<u8> = None;
    let mut escaped = false;
    for b in path.bytes() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == q {
                quote = None;
            }
            continue;
        }
        match b {
            b'"' | b'\'' | b'`' => quote = Some(b),
            b'(' | b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
                operators += 1;
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b'.' | b'|' | b'!' | b'&' | b'*' | b'?' | b',' | b':' | b'<' | b'>' | b'=' => {
                operators += 1
            }
            _ => {}
        }
    }
    if deepest > MAX_DEPTH {
        return Err(too_complex(format!(
            "nested {deepest} levels deep, above the limit of {MAX_DEPTH}"
        )));
    }
    if operators > MAX_OPERATORS {
        return Err(too_complex(format!(
            "{operators} operators, above the limit of {MAX_OPERATORS}"
        )));
    }
    Ok(())
}

/// Checks that an expression is within bounds and compiles (at plan time,
/// also for `coffer check`).
pub fn validate(path: &str) -> Result<(), JmesError> {
    check(path)?;
    match quietly(|| jmespath::compile(path).is_ok()) {
        Some(true) => Ok(()),
        _ => Err(JmesError::InvalidPath { path: shown(path) }),
    }
}

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, turning a panic into `None` without printing it: the default
/// panic hook would write the panic (with the expression in it) to stderr
/// outside the JSON log. Other panics still reach the previous hook.
fn quietly<T>(f: impl FnOnce() -> T) -> Option<T> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let was = QUIET.with(|q| q.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    result.ok()
}

/// Evaluates `path` against `json`: the file's bytes.
pub fn extract(json: &serde_json::Value, path: &str, alias: &str) -> Result<Vec<u8>, JmesError> {
    let invalid = || JmesError::InvalidPath { path: shown(path) };
    let failed = || JmesError::Evaluation {
        path: shown(path),
        alias: alias.to_owned(),
    };
    check(path)?;
    let expr = match quietly(|| jmespath::compile(path)) {
        Some(Ok(expr)) => expr,
        Some(Err(_)) | None => return Err(invalid()),
    };
    let found = match quietly(|| expr.search(json)) {
        Some(Ok(found)) => found,
        Some(Err(_)) | None => return Err(failed()),
    };
    if found.is_null() {
        return Err(JmesError::NoMatch {
            path: shown(path),
            alias: alias.to_owned(),
        });
    }
    if let Some(s) = found.as_string() {
        return Ok(s.as_bytes().to_vec());
    }
    serde_json::to_vec(&*found).map_err(|_| failed())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(value: &str, path: &str) -> Result<String, JmesError> {
        let json = parse("s", value.as_bytes())?;
        extract(&json, path, "alias").map(|b| String::from_utf8(b).unwrap())
    }

    const DOC: &str = r#"{"username":"app","password":"pw","port":5432,"tls":true,"ratio":0.5,
        "api-key":"k","nested":{"a":{"b":"deep"}},"list":["x","y"],"none":null}"#;

    #[test]
    fn all_keys_of_a_json_object_sorted_strings_raw() {
        let keys = keys("s", br#"{"user":"app","port":5432,"nested":{"a":1}}"#).unwrap();
        let keys: Vec<(&str, &[u8])> = keys
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        assert_eq!(
            keys,
            [
                ("nested", &br#"{"a":1}"#[..]),
                ("port", &b"5432"[..]),
                ("user", &b"app"[..])
            ]
        );
        for bad in [&b"plain text"[..], b"[1,2]", b"\"str\""] {
            assert_eq!(
                keys_err(bad),
                "allKeys: the value of s is not a JSON object, so it has no keys to write as files."
            );
        }
    }

    fn keys_err(value: &[u8]) -> String {
        keys("s", value).unwrap_err().to_string()
    }

    #[test]
    fn strings_are_raw_and_everything_else_is_json() {
        let cases: &[(&str, &str)] = &[
            ("username", "app"),
            ("nested.a.b", "deep"),
            ("\"api-key\"", "k"),
            ("list[1]", "y"),
            ("port", "5432"),
            ("tls", "true"),
            ("ratio", "0.5"),
            ("nested.a", r#"{"b":"deep"}"#),
            ("list", r#"["x","y"]"#),
            ("length(list)", "2"),
        ];
        for (path, want) in cases {
            assert_eq!(run(DOC, path).unwrap(), *want, "{path}");
        }
    }

    #[test]
    fn errors_match_the_aws_provider() {
        assert_eq!(
            run("not json", "a").unwrap_err().to_string(),
            "Invalid JSON used with jmesPath in secret: s."
        );
        assert_eq!(
            run(DOC, ".testpath").unwrap_err().to_string(),
            "Invalid JMES Path: .testpath."
        );
        for missing in ["missing", "none", "nested.x.y", "list[5]"] {
            assert_eq!(
                run(DOC, missing).unwrap_err().to_string(),
                format!(
                    "JMES Path - {missing} for object alias - alias does not point to a valid object."
                )
            );
        }
        assert!(matches!(
            run(DOC, "length(port)").unwrap_err(),
            JmesError::Evaluation { .. }
        ));
    }

    /// Runs `f` on a thread with half the stack of a tokio worker: if the
    /// bounds let through anything deep enough to threaten the workers'
    /// 2 MiB, this overflows (and aborts the test binary) first.
    fn on_small_stack(f: impl FnOnce() + Send + 'static) {
        std::thread::Builder::new()
            .stack_size(1024 * 1024)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn deep_or_long_expressions_are_refused_before_parsing() {
        let parens = format!("{}a{}", "(".repeat(20_000), ")".repeat(20_000));
        let nots = format!("{}a", "!".repeat(20_000));
        let long = format!("a.{}", "b".repeat(MAX_LEN));
        let projections = format!("{}a", "[*].".repeat(200));
        for path in [&parens, &nots, &long, &projections] {
            let err = validate(path).unwrap_err();
            assert!(matches!(err, JmesError::TooComplex { .. }), "{err}");
            // The message shows the start of the expression, not all of it.
            assert!(err.to_string().len() < 256, "{err}");
            let json = parse("s", b"{}").unwrap();
            assert!(matches!(
                extract(&json, path, "x").unwrap_err(),
                JmesError::TooComplex { .. }
            ));
        }
        // Unbalanced closers and quoted brackets do not fool the count.
        assert!(check(&format!("{}{}", ")".repeat(40), "(".repeat(40))).is_err());
        assert!(check(&format!("\"{}\"", "(".repeat(500))).is_ok());
        assert!(check(&format!("`{}`", "[".repeat(500))).is_ok());
    }

    #[test]
    fn expressions_at_the_limits_parse_on_a_small_stack() {
        on_small_stack(|| {
            let d = MAX_DEPTH;
            let shapes = [
                format!("{}a{}", "(".repeat(d), ")".repeat(d)),
                format!("{}a{}", "[".repeat(d), "]".repeat(d)),
                format!("{}a", "!".repeat(MAX_OPERATORS)),
                format!("{}a", "&".repeat(MAX_OPERATORS)),
                format!("a{}", "[*]".repeat(MAX_OPERATORS / 2)),
                format!("a{}", "[].b".repeat(MAX_OPERATORS / 2)),
                format!("{}@{}", "abs(".repeat(d), ")".repeat(d)),
                format!("a{}", ".b".repeat(MAX_OPERATORS)),
                format!("a{}", "|b".repeat(MAX_OPERATORS)),
                format!("a{}", "||b".repeat(MAX_OPERATORS / 2)),
                format!("{}a{}", "{a:".repeat(d / 2), "}".repeat(d / 2)),
                format!("a{}", "[?b".repeat(d / 2)) + &"]".repeat(d / 2),
            ];
            let json = parse("s", br#"{"a":{"b":[1,2]}}"#).unwrap();
            for path in &shapes {
                assert!(check(path).is_ok(), "{path}");
                let _ = validate(path);
                let _ = extract(&json, path, "x");
            }
        });
    }

    #[test]
    fn no_expression_or_value_panics() {
        let values = [
            DOC,
            "[]",
            "{}",
            "1e308",
            "-0",
            "\"s\"",
            "[[[[[[[[[[]]]]]]]]]]",
            r#"{"a":[1,"b",null,{"c":[]}]}"#,
        ];
        let paths = [
            "",
            "[",
            "]",
            "a[",
            "a[-1]",
            "a[::0]",
            "a[::-1]",
            "a[0:-1:2]",
            "*",
            "**",
            "@",
            "&",
            "`",
            "`{`",
            "'",
            "\"",
            "a.b.c.d.e.f.g",
            "a[?b]",
            "a[?b == `1`]",
            "sort(@)",
            "max_by(@, &a)",
            "to_number(@)",
            "join(',', @)",
            "reverse(@)",
            "ends_with(@, 'x')",
            "merge(@, @)",
            "not_null()",
            "abs(@)",
            "a | [0] | b",
            "[*].*.*",
            "{a: a}",
            "a || b",
            "!a",
            "a && b",
            "sum(@)",
            "avg(@)",
            "min_by(@, &a)",
            "starts_with(@, @)",
            "contains(@, `1`)",
            "map(&a, @)",
            "a[0][0][0][0]",
            "$",
            "a.\"\\u0000\"",
            "\"\\ud800\"",
        ];
        for v in values {
            let json = parse("s", v.as_bytes()).unwrap();
            for p in paths {
                let _ = extract(&json, p, "x");
                let _ = validate(p);
            }
        }
    }
}
