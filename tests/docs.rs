//! The documentation describes the binary as it is: every flag of every
//! subcommand appears in docs/operations.md, and every metric family in it too.

use std::process::Command;

fn flags_of(subcommand: &str) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args([subcommand, "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let mut flags: Vec<String> = help
        .split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[' || c == '<')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_owned()
        })
        .filter(|w| w != "--help" && w != "--version")
        .collect();
    flags.sort();
    flags.dedup();
    flags
}

#[test]
fn every_flag_is_documented_in_operations_md() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .unwrap();
    for sub in ["serve", "mount", "check"] {
        let flags = flags_of(sub);
        assert!(flags.len() >= 3, "{sub}: {flags:?}");
        for flag in flags {
            assert!(
                doc.contains(&format!("`{flag}`")),
                "coffer {sub} {flag} is not in docs/operations.md"
            );
        }
    }
}

#[test]
fn every_metric_family_is_documented_in_operations_md() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .unwrap();
    let text = coffer::metrics::Metrics::new().encode();
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(families.len() >= 6, "{families:?}");
    for family in families {
        assert!(
            doc.contains(family),
            "metric {family} is not in docs/operations.md"
        );
    }
}
