//! YAML in parameters with depth and aliases: `yaml::check_cost` and then
//! every parser of a YAML parameter (Vault `objects`, `templates`, AWS
//! `objects`, whole manifests). Whatever the nesting or the aliases, the
//! checks refuse or the parsers finish, within the fuzzer's time and memory
//! limits: an alias bomb that got past the node budget shows up as a
//! timeout or an out-of-memory.
//!
//! First byte % 2 == 0: the rest is YAML text (seeds, dictionary).
//! == 1: a document built with `arbitrary`: nested block and flow
//! collections, anchors on any node and aliases to earlier anchors, up to
//! 2,000 levels and 4,000 aliases.

#![no_main]

use arbitrary::Unstructured;
use coffer::backend::aws;
use coffer::backend::vault::params;
use libfuzzer_sys::fuzz_target;

struct Builder {
    out: String,
    anchors: Vec<String>,
    nodes: usize,
}

impl Builder {
    fn node(&mut self, u: &mut Unstructured, depth: usize) -> arbitrary::Result<()> {
        self.nodes += 1;
        if self.nodes > 20_000 {
            self.out.push('x');
            return Ok(());
        }
        if !self.anchors.is_empty() && u.ratio(1, 4)? {
            let name = u.choose(&self.anchors)?.clone();
            self.out.push('*');
            self.out.push_str(&name);
            return Ok(());
        }
        if u.ratio(1, 4)? {
            let name = format!("a{}", self.anchors.len());
            self.out.push('&');
            self.out.push_str(&name);
            self.out.push(' ');
            // The anchor is usable after its node.
            self.anchored(u, depth)?;
            self.anchors.push(name);
            return Ok(());
        }
        self.anchored(u, depth)
    }

    fn anchored(&mut self, u: &mut Unstructured, depth: usize) -> arbitrary::Result<()> {
        if depth >= 2_000 || u.is_empty() {
            self.out.push_str("objectName");
            return Ok(());
        }
        match u.int_in_range(0..=3)? {
            0 => {
                self.out.push('[');
                let n = u.int_in_range(0..=4)?;
                for i in 0..n {
                    if i > 0 {
                        self.out.push_str(", ");
                    }
                    self.node(u, depth + 1)?;
                }
                self.out.push(']');
            }
            1 => {
                self.out.push('{');
                let n = u.int_in_range(0..=3)?;
                for i in 0..n {
                    if i > 0 {
                        self.out.push_str(", ");
                    }
                    self.out.push_str(&format!("k{i}: "));
                    self.node(u, depth + 1)?;
                }
                self.out.push('}');
            }
            2 => self.out.push_str(u.choose(&["secret/data/x", "\"q*\"", "0600", "true", "~"])?),
            _ => {
                let n: u16 = u.arbitrary()?;
                self.out.push_str(&n.to_string());
            }
        }
        Ok(())
    }
}

fn parse_everything(text: &str) {
    let checked = coffer::yaml::check_cost(text);
    let vault = params::parse_objects(text);
    let templates = coffer::mount::templates::parse(Some(text));
    let aws_objects = aws::params::parse_objects(text, None, Some("us-east-1"), None, &mut Vec::new());
    if checked.is_err() {
        assert!(vault.is_err() && templates.is_err() && aws_objects.is_err(),
            "a parser accepted what check_cost refused");
    }
    let _ = coffer::spc::parse(text, "fuzz.yaml");
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector % 2 == 0 {
        if let Ok(text) = std::str::from_utf8(rest) {
            parse_everything(text);
        }
        return;
    }
    let mut u = Unstructured::new(rest);
    let mut b = Builder {
        out: String::from("- objectName: a\n  objectType: secretsmanager\n  secretPath: p\n  extra: "),
        anchors: Vec::new(),
        nodes: 0,
    };
    if b.node(&mut u, 0).is_err() {
        return;
    }
    b.out.push('\n');
    // Then as many aliases of the anchors as the input asks for.
    let aliases = u.int_in_range(0..=4_000usize).unwrap_or(0);
    if let Some(last) = b.anchors.last().cloned() {
        b.out.push_str("  more: [");
        b.out.push_str(&format!("*{last}, ").repeat(aliases));
        b.out.push_str("x]\n");
    }
    parse_everything(&b.out);
});
