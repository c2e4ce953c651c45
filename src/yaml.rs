//! YAML and parameter-value helpers shared by the dialects and templates:
//! a bound on the work of parsing YAML that comes in a request, checked
//! before serde_yaml sees it.
//!
//! serde_yaml scans with libyaml (`unsafe-libyaml`), whose scanner checks
//! every open flow level's simple key on every token: the work grows with
//! tokens × flow nesting depth. 64,000 nested `{a: ` (256 KiB) took 33 s in
//! a debug build of `coffer check`, and serde_yaml's own depth limit (128)
//! refuses such input only after it has all been scanned. The depth itself
//! cannot be known without tokenizing (quoted `]` and `}` do not close
//! anything), so the bound uses what can be counted: the `[` and `{` bytes
//! (at least the depth) times the length (at least the tokens).

/// `[`/`{` allowed whatever the size: serde_yaml refuses deeper nesting anyway.
pub const FREE_FLOW_OPENERS: usize = 128;
/// Above that, `[`/`{` count × length in bytes may not exceed this.
pub const MAX_FLOW_WORK: usize = 64 << 20;

/// `Err` with a reason (no content quoted) when `text` may be too costly to parse.
pub fn check_cost(text: &str) -> Result<(), String> {
    let openers = text.bytes().filter(|b| matches!(b, b'[' | b'{')).count();
    if openers <= FREE_FLOW_OPENERS || openers.saturating_mul(text.len()) <= MAX_FLOW_WORK {
        return Ok(());
    }
    Err(format!(
        "has {openers} '[' or '{{' in {} bytes: that many flow collections cost too much to \
         parse (at most {FREE_FLOW_OPENERS}, or count × size at most {MAX_FLOW_WORK}); write \
         the list in block style (\"- objectName: ...\")",
        text.len()
    ))
}

/// A `filePermission` as YAML gives it: `0600` (YAML 1.1 octal, which
/// serde_yaml reads as a string), `"0600"`, `0o600`, or an integer taken
/// as is. `None` when it is not a mode.
pub fn mode(v: &serde_yaml::Value) -> Option<u32> {
    match v {
        serde_yaml::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        serde_yaml::Value::String(s) => {
            let s = s.trim();
            let digits = s
                .strip_prefix("0o")
                .or_else(|| s.strip_prefix('0'))
                .unwrap_or(s);
            if digits.is_empty() {
                return (s == "0").then_some(0);
            }
            u32::from_str_radix(digits, 8).ok()
        }
        _ => None,
    }
}

/// A boolean parameter as the Go providers read it: `strconv.ParseBool`.
pub fn parse_bool(raw: &str) -> Option<bool> {
    match raw {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_yaml_passes() {
        let flow: String = (0..500)
            .map(|i| {
                format!("- {{objectName: o{i}, secretPath: secret/data/x, secretArgs: [a]}}\n")
            })
            .collect();
        assert!(check_cost(&flow).is_ok(), "500 flow-style objects");
        assert!(check_cost(&"[".repeat(FREE_FLOW_OPENERS)).is_ok());
        assert!(check_cost("- objectName: a\n  secretPath: b\n").is_ok());
    }

    #[test]
    fn deep_or_dense_flow_nesting_is_refused() {
        let deep = "{a: ".repeat(16_000);
        let err = check_cost(&deep).unwrap_err();
        assert!(err.contains("16000 '['"), "{err}");
        // Quoted closers do not help: the count does not go down.
        let quoted = "{a: \"}}}}\", b: ".repeat(4_000);
        assert!(check_cost(&quoted).is_err());
    }
}
