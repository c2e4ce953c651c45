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
//!
//! Aliases are the other cost: serde_yaml expands every `*alias` into a copy
//! of its anchored node, so 4,000 aliases of a 4,000-item anchor (80 KB)
//! become 16 million nodes. When the text can hold an alias, a first pass
//! counts the nodes serde_yaml would produce, and stops at a budget that
//! grows with the text (a document without aliases never comes near it).
//! The same pass bounds documents with nothing but plain nodes, so the
//! budget is also the only bound the size check needs.

use std::cell::Cell;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// `[`/`{` allowed whatever the size: serde_yaml refuses deeper nesting anyway.
pub const FREE_FLOW_OPENERS: usize = 128;
/// Above that, `[`/`{` count × length in bytes may not exceed this.
pub const MAX_FLOW_WORK: usize = 64 << 20;

/// Largest YAML parameter (`objects`, `templates`): about 10,000 objects.
pub const MAX_YAML_BYTES: usize = 1024 * 1024;
/// Nodes (after alias expansion) allowed for any text...
pub const FREE_NODES: usize = 100_000;
/// ...or this many per byte of text, whichever is more.
pub const NODES_PER_BYTE: usize = 2;

/// `Err` with a reason (no content quoted) when `text` may be too costly to parse.
pub fn check_cost(text: &str) -> Result<(), String> {
    if text.len() > MAX_YAML_BYTES {
        return Err(format!(
            "is {} bytes, above the limit of {MAX_YAML_BYTES}",
            text.len()
        ));
    }
    check_structure(text)
}

/// The flow-nesting and alias checks of [`check_cost`], without its size
/// limit (for whole manifests, whose size is the reader's business).
pub fn check_structure(text: &str) -> Result<(), String> {
    check_flow(text)?;
    check_aliases(text)
}

fn check_flow(text: &str) -> Result<(), String> {
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

/// Most nodes `text` may expand to.
pub fn node_budget(text: &str) -> usize {
    FREE_NODES.max(text.len().saturating_mul(NODES_PER_BYTE))
}

/// Refuses text whose aliases expand past [`node_budget`]. Text without a
/// `*` has no alias and is not parsed here.
fn check_aliases(text: &str) -> Result<(), String> {
    if !text.contains('*') {
        return Ok(());
    }
    let budget = node_budget(text);
    let counter = Counter {
        left: Cell::new(budget),
        exceeded: Cell::new(false),
    };
    for document in serde_yaml::Deserializer::from_str(text) {
        // Errors other than the budget are left to the real parse (and
        // end the loop: after a syntax error the iterator does not).
        let result = (&counter).deserialize(document);
        if counter.exceeded.get() {
            return Err(format!(
                "expands to more than {budget} nodes through its aliases (*name): \
                 write the entries out instead of repeating an anchor"
            ));
        }
        if result.is_err() {
            break;
        }
    }
    Ok(())
}

/// Counts nodes down from a budget as serde_yaml hands them out (aliases
/// included) and fails the parse when none are left. Its recursion follows
/// the YAML nesting, which serde_yaml limits to 128.
struct Counter {
    left: Cell<usize>,
    exceeded: Cell<bool>,
}

impl Counter {
    fn take<E: de::Error>(&self) -> Result<(), E> {
        match self.left.get().checked_sub(1) {
            Some(n) => {
                self.left.set(n);
                Ok(())
            }
            None => {
                self.exceeded.set(true);
                Err(E::custom("node budget exceeded"))
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for &Counter {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for &Counter {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any YAML node")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.take()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.take()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.take()
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        self.take()
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        self.take()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.take()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.take()
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<(), E> {
        self.take()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.take()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.take()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.take::<A::Error>()?;
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.take::<A::Error>()?;
        while map.next_key_seed(self)?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        // A tagged node (`!tag value`): count the tag and its value.
        use de::VariantAccess;
        self.take::<A::Error>()?;
        let ((), variant) = data.variant_seed(self)?;
        variant.newtype_variant_seed(self)
    }
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

    #[test]
    fn alias_expansion_is_budgeted() {
        // 4,000 aliases of a 4,000-item anchor: 16 million nodes from 80 KB.
        let mut bomb = String::from("a: &a [");
        bomb.push_str(&"x,".repeat(4_000));
        bomb.push_str("x]\nb: [");
        bomb.push_str(&"*a,".repeat(4_000));
        bomb.push_str("*a]\n");
        let err = check_cost(&bomb).unwrap_err();
        assert!(err.contains("aliases"), "{err}");
        // Nested: 9 levels of 9 aliases each.
        let mut nested = String::from("l0: &l0 [x,x,x,x,x,x,x,x,x]\n");
        for i in 1..10 {
            let p = i - 1;
            nested.push_str(&format!(
                "l{i}: &l{i} [{}]\n",
                vec![format!("*l{p}"); 9].join(",")
            ));
        }
        assert!(check_cost(&nested).unwrap_err().contains("aliases"));
        // A few aliases, and a `*` in a quoted value, are fine.
        let ok =
            "- &o {objectName: a, secretPath: p}\n- *o\n- {objectName: b, secretKey: \"a*b\"}\n";
        assert!(check_cost(ok).is_ok());
        let tagged = "- !!str *\n- !custom {a: *}\n";
        let _ = check_cost(tagged);
    }

    #[test]
    fn oversized_yaml_is_refused() {
        let big = "#".repeat(MAX_YAML_BYTES + 1);
        assert!(check_cost(&big).unwrap_err().contains("limit"));
    }
}
