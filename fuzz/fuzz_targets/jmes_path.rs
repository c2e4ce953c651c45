//! jmesPath expressions (the aws dialect's `jmesPath` entries): the plan-time
//! check and evaluation against a JSON value. An expression is refused or
//! evaluated; nothing may overflow the stack (which aborts the process, out
//! of `catch_unwind`'s reach), and errors quote at most the expression's start.
//!
//! First byte % 2 == 0: the rest is `expression \0 json` (seeds, dictionary).
//! == 1: an expression built with `arbitrary` from the grammar's pieces,
//! nested as deep as the input asks (thousands of levels), against a fixed
//! document: the depth attacks the flat scan must stop.

#![no_main]

use arbitrary::Unstructured;
use coffer::backend::aws::jmes;
use coffer_fuzz::fields;
use libfuzzer_sys::fuzz_target;

const DOC: &str = r#"{"a":{"b":[1,2,{"c":"d"}]},"e":[{"f":1},{"f":2}],"s":"x","n":null}"#;
const ATOMS: &[&str] = &["a", "b", "c", "@", "`1`", "'s'", "\"a\"", "e[*].f", "length(@)"];

/// One piece of an expression wrapped around `inner`.
fn wrap(u: &mut Unstructured, inner: String) -> arbitrary::Result<String> {
    Ok(match u.int_in_range(0..=11)? {
        0 => format!("({inner})"),
        1 => format!("[{inner}]"),
        2 => format!("{{k: {inner}}}"),
        3 => format!("!{inner}"),
        4 => format!("&{inner}"),
        5 => format!("{inner}.b"),
        6 => format!("{inner}[*]"),
        7 => format!("{inner} | a"),
        8 => format!("{inner} || a"),
        9 => format!("a[?{inner}]"),
        10 => format!("abs({inner})"),
        _ => format!("{inner}[0]"),
    })
}

fn check(path: &str, json: &serde_json::Value) {
    let checked = jmes::check(path);
    let validated = jmes::validate(path);
    if checked.is_err() {
        assert!(validated.is_err(), "validate passed what check refused: {path:?}");
    }
    for e in [checked.err(), validated.err()].into_iter().flatten() {
        // Messages quote at most 64 bytes of the expression (plus its size).
        assert!(e.to_string().len() < 256 + 64, "long message for {} bytes", path.len());
    }
    let _ = jmes::extract(json, path, "alias");
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector % 2 == 0 {
        let f = fields(rest, 2);
        let path = f.first().map(String::as_str).unwrap_or("");
        let json = f
            .get(1)
            .and_then(|j| jmes::parse("s", j.as_bytes()).ok())
            .unwrap_or(serde_json::Value::Null);
        check(path, &json);
        return;
    }
    let mut u = Unstructured::new(rest);
    let Ok(atom) = u.choose(ATOMS) else {
        return;
    };
    let mut path = (*atom).to_owned();
    // Up to 5,000 levels: far past the limits, and past what would overflow
    // the parser's stack without them.
    let Ok(levels) = u.int_in_range(0..=5_000u32) else {
        return;
    };
    for _ in 0..levels {
        match wrap(&mut u, path.clone()) {
            Ok(p) => path = p,
            Err(_) => break,
        }
    }
    let doc = jmes::parse("s", DOC.as_bytes()).expect("the fixed document is JSON");
    check(&path, &doc);
});
