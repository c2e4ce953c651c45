//! jmesPath files: JSON values cut out of a secret with JMESPath. Strings
//! are written as text (as the aws provider does); numbers, booleans,
//! arrays and objects as JSON, where the aws provider fails the mount
//! (its issue #250). Errors name the path and alias, never the value, and
//! no expression or value can panic the process.

use std::panic::{AssertUnwindSafe, catch_unwind};

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

/// Checks that an expression compiles (offline, for `coffer check`).
pub fn compiles(path: &str) -> bool {
    matches!(catch_unwind(|| jmespath::compile(path).is_ok()), Ok(true))
}

/// Evaluates `path` against `json`: the file's bytes.
pub fn extract(json: &serde_json::Value, path: &str, alias: &str) -> Result<Vec<u8>, JmesError> {
    let invalid = || JmesError::InvalidPath {
        path: path.to_owned(),
    };
    let failed = || JmesError::Evaluation {
        path: path.to_owned(),
        alias: alias.to_owned(),
    };
    let expr = match catch_unwind(|| jmespath::compile(path)) {
        Ok(Ok(expr)) => expr,
        Ok(Err(_)) | Err(_) => return Err(invalid()),
    };
    let found = match catch_unwind(AssertUnwindSafe(|| expr.search(json))) {
        Ok(Ok(found)) => found,
        Ok(Err(_)) | Err(_) => return Err(failed()),
    };
    if found.is_null() {
        return Err(JmesError::NoMatch {
            path: path.to_owned(),
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
                let _ = compiles(p);
            }
        }
    }
}
