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

/// The `[alias: --a]` and `[aliases: --a, --b]` of `coffer SUBCOMMAND --help`.
fn aliases_of(subcommand: &str) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args([subcommand, "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut aliases: Vec<String> = help
        .replace("[alias: ", "[aliases: ")
        .split("[aliases: ")
        .skip(1)
        .filter_map(|rest| rest.split(']').next())
        .flat_map(|list| list.split(", ").map(|a| a.trim().to_owned()))
        .collect();
    aliases.sort();
    aliases.dedup();
    aliases
}

#[test]
fn every_peer_flag_alias_is_mapped_in_migration_md() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/migration.md")).unwrap();
    let aliases = aliases_of("serve");
    for expected in [
        "--provider-volume",
        "--vault-mount",
        "--vault-tls-ca-cert",
        "--vault-tls-ca-directory",
        "--vault-tls-client-cert",
        "--vault-tls-client-key",
        "--vault-tls-skip-verify",
        "--openbao-addr",
        "--pod-identity-http-timeout",
    ] {
        assert!(
            aliases.iter().any(|a| a == expected),
            "{expected} is not an alias: {aliases:?}"
        );
    }
    for alias in aliases
        .iter()
        .chain(["--endpoint".to_owned(), "--debug".to_owned()].iter())
    {
        assert!(
            doc.contains(&format!("`{alias}`")) || doc.contains(&format!("`{alias}=")),
            "{alias} is not mapped in docs/migration.md"
        );
        let go = format!("`-{}", alias.trim_start_matches("--"));
        assert!(
            doc.contains(&go) || !alias.starts_with("--vault-") && !alias.starts_with("--openbao-"),
            "the peer's spelling {go}` is not in docs/migration.md"
        );
    }
}

#[test]
fn peer_flags_as_written_in_their_charts_start_the_parser() {
    // `coffer check` takes the backend flags too and needs no server: the
    // Go spellings (one dash, =value, Go durations) must all be accepted.
    let dir = std::env::temp_dir().join(format!("coffer-docs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spc = dir.join("spc.yaml");
    std::fs::write(
        &spc,
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata: {name: db}\nspec:\n  provider: vault\n  parameters:\n    roleName: web\n    objects: |\n      - {objectName: p, secretPath: secret/data/db, secretKey: password}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .arg("check")
        .args([
            "-vault-addr=https://vault:8200",
            "-vault-mount=kubernetes",
            "-vault-tls-skip-verify=true",
            "--vault-request-timeout=1m30s",
            "--pod-identity-http-timeout=1.5s",
            "--vault-addr=https://vault.example:8200",
            "--strict",
        ])
        .arg(&spc)
        .env_remove("VAULT_ADDR")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ok: 1 file(s)"), "{text}");
}
