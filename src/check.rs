//! `coffer check`: what a mount would refuse, found before it happens.
//!
//! Made for CI (GitOps pipelines), where `coffer serve`'s flags are not
//! known: a class that passes only thanks to a server default (a Vault class
//! without `vaultAddress`, which `--vault-addr` / the chart's
//! `vault.address` fills in) gets a *note*, not an error, unless `--strict`.
//!
//! Exit status: 0 when nothing fails (notes alone do not fail), 1 when there
//! is an error or a warning (with `--strict`, a note too), 2 for a bad
//! command line (clap's own status).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use crate::backend::registry::BackendArgs;
use crate::cli::{CheckArgs, CheckFormat};
use crate::errors::chain;
use crate::metrics::Metrics;
use crate::mount::Backends;
use crate::request::Parameters;

/// Stand-in for the server's default Vault address while checking a class
/// that has none of its own (never contacted: check makes no request).
#[cfg(feature = "vault")]
const PLACEHOLDER_VAULT_ADDR: &str = "https://vault.invalid:8200";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Passes only with a server default that this run did not get.
    Note,
    /// Accepted by coffer, but most likely a mistake (unknown keys, ...).
    Warning,
    /// Refused by the API server, the driver or coffer.
    Error,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Note => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One finding about a file or a class in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub file: String,
    /// The SecretProviderClass's `metadata.name`; `None` for the file as a whole.
    pub class: Option<String>,
    pub severity: Severity,
    pub message: String,
}

impl std::fmt::Display for Finding {
    /// `file: SecretProviderClass "name": [warning: |note: ]message`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(class) = &self.class {
            write!(f, "{}: SecretProviderClass {class:?}: ", self.file)?;
        }
        match self.severity {
            Severity::Error => {}
            other => write!(f, "{}: ", other.as_str())?,
        }
        f.write_str(&self.message)
    }
}

/// What `coffer check` found in its files.
#[derive(Debug, Default)]
pub struct Report {
    pub files: usize,
    pub classes: usize,
    pub findings: Vec<Finding>,
}

impl Report {
    fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }

    /// Whether the run fails: any error or warning; with `strict`, any note too.
    pub fn fails(&self, strict: bool) -> bool {
        self.findings
            .iter()
            .any(|f| f.severity != Severity::Note || strict)
    }
}

/// Checks every file. `args.backends` are the server defaults to assume;
/// a Vault address not given there is replaced by a placeholder, and the
/// classes that need it get a note.
pub fn check(args: &CheckArgs) -> Report {
    let metrics = Arc::new(Metrics::new());
    let backends = crate::serve::backends(&args.backends, &metrics);
    let assumed = assume_server_defaults(&args.backends)
        .map(|defaults| crate::serve::backends(&defaults, &metrics));
    let mut report = Report::default();
    for path in &args.files {
        report.files += 1;
        check_file(path, &backends, assumed.as_ref(), &mut report);
    }
    report
}

/// The backend flags with a placeholder for each server default that a class
/// may rely on and that was not given (today: the Vault address); `None`
/// when there is nothing to assume.
fn assume_server_defaults(args: &BackendArgs) -> Option<BackendArgs> {
    #[cfg(feature = "vault")]
    if args.vault.vault_addr.as_deref().is_none_or(str::is_empty) {
        let mut assumed = args.clone();
        assumed.vault.vault_addr = Some(PLACEHOLDER_VAULT_ADDR.to_owned());
        return Some(assumed);
    }
    let _ = args;
    None
}

fn check_file(path: &Path, backends: &Backends, assumed: Option<&Backends>, report: &mut Report) {
    let file = path.display().to_string();
    let whole = |message: String| Finding {
        file: file.clone(),
        class: None,
        severity: Severity::Error,
        message,
    };
    let classes = match crate::spc::read(path) {
        Ok(c) => c,
        Err(e) => return report.findings.push(whole(chain(&e))),
    };
    for class in classes {
        report.classes += 1;
        let spc = match class {
            Ok(spc) => spc,
            Err(e) => {
                report.findings.push(whole(chain(&e)));
                continue;
            }
        };
        let finding = |severity, message| Finding {
            file: file.clone(),
            class: Some(spc.name.clone()),
            severity,
            message,
        };
        if !crate::spc::is_provider_name(&spc.provider) {
            report.findings.push(finding(
                Severity::Error,
                format!(
                    "spec.provider: invalid provider name {:?}: {}",
                    spc.provider,
                    crate::spc::PROVIDER_NAME_RULE
                ),
            ));
            continue;
        }
        let params: Parameters = spc
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let planned = match backends.plan(&spc.provider, &params) {
            Ok(plan) => Ok((plan, None)),
            Err(e) => match assumed.map(|b| b.plan(&spc.provider, &params)) {
                Some(Ok(plan)) => Ok((
                    plan,
                    Some(format!(
                        "relies on the server's default Vault address (coffer serve --vault-addr, \
                         chart value vault.address): checked with a placeholder; pass --vault-addr \
                         to check with yours, or --strict to fail ({})",
                        chain(&e)
                    )),
                )),
                _ => Err(e),
            },
        };
        match planned {
            Ok((plan, note)) => {
                report
                    .findings
                    .extend(note.map(|n| finding(Severity::Note, n)));
                report.findings.extend(
                    plan.plan
                        .warnings
                        .iter()
                        .map(|w| finding(Severity::Warning, w.to_string())),
                );
            }
            Err(e) => report.findings.push(finding(Severity::Error, chain(&e))),
        }
    }
}

/// The report as one JSON object (`--format json`), for CI annotations.
pub fn to_json(report: &Report, strict: bool) -> serde_json::Value {
    serde_json::json!({
        "ok": !report.fails(strict),
        "strict": strict,
        "files": report.files,
        "classes": report.classes,
        "errors": report.count(Severity::Error),
        "warnings": report.count(Severity::Warning),
        "notes": report.count(Severity::Note),
        "findings": report.findings.iter().map(|f| serde_json::json!({
            "file": f.file,
            "class": f.class,
            "severity": f.severity.as_str(),
            "message": f.message,
        })).collect::<Vec<_>>(),
    })
}

pub fn run(args: &CheckArgs) -> ExitCode {
    let report = check(args);
    let fails = report.fails(args.strict);
    match args.format {
        CheckFormat::Json => println!("{}", to_json(&report, args.strict)),
        CheckFormat::Text => {
            for finding in &report.findings {
                println!("{finding}");
            }
            if !fails {
                let notes = report.count(Severity::Note);
                let noted = if notes > 0 {
                    format!(", {notes} note(s)")
                } else {
                    String::new()
                };
                println!(
                    "ok: {} file(s), {} SecretProviderClass(es) checked{noted}",
                    report.files, report.classes
                );
            }
        }
    }
    if fails {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str], file: &Path) -> CheckArgs {
        let mut argv = vec!["coffer", "check"];
        argv.extend_from_slice(extra);
        argv.push(file.to_str().unwrap());
        match crate::cli::Cli::try_parse_from(argv).unwrap().command {
            crate::cli::Command::Check(a) => a,
            _ => unreachable!(),
        }
    }

    fn write(dir: &Path, text: &str) -> std::path::PathBuf {
        let path = dir.join("spc.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    const NO_ADDRESS: &str = "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata: {name: db}\nspec:\n  provider: vault\n  parameters:\n    roleName: web\n    objects: |\n      - {objectName: p, secretPath: secret/data/db, secretKey: password}\n";

    #[test]
    fn a_class_relying_on_the_servers_vault_address_gets_a_note_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), NO_ADDRESS);
        let report = check(&args(&[], &file));
        assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
        assert_eq!(report.findings[0].severity, Severity::Note);
        assert!(report.findings[0].message.contains("--vault-addr"));
        assert!(!report.fails(false));
        assert!(report.fails(true), "--strict fails on a note");

        let with_addr = check(&args(&["--vault-addr", "https://v:8200"], &file));
        assert!(with_addr.findings.is_empty(), "{:?}", with_addr.findings);
    }

    #[test]
    fn errors_stay_errors_whatever_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), &NO_ADDRESS.replace("    roleName: web\n", ""));
        let report = check(&args(&[], &file));
        assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
        assert_eq!(report.findings[0].severity, Severity::Error);
        assert!(
            report.findings[0].message.contains("roleName"),
            "{:?}",
            report.findings
        );
        assert!(report.fails(false));
    }

    #[test]
    fn json_lists_findings_with_file_class_and_severity() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), NO_ADDRESS);
        let report = check(&args(&[], &file));
        let json = to_json(&report, false);
        assert_eq!(json["ok"], true);
        assert_eq!(json["classes"], 1);
        assert_eq!(json["notes"], 1);
        assert_eq!(json["findings"][0]["class"], "db");
        assert_eq!(json["findings"][0]["severity"], "note");
        assert_eq!(json["findings"][0]["file"], file.display().to_string());
        assert_eq!(to_json(&report, true)["ok"], false);
    }
}
