//! The user-facing manifests hold up against the real binary:
//!
//! * every `examples/**/*.yaml` passes a plain `coffer check`, without any
//!   server flag, as in a GitOps CI (the `examples/aws/` ones only when this
//!   coffer has the AWS backend — skipped with a note otherwise); the ones
//!   relying on the chart's `vault.address` get a note, and fail `--strict`;
//! * every pod in them mounts its SecretProviderClass through the driver,
//!   read-only;
//! * the Helm chart's default `coffer serve` arguments start the real binary
//!   (needs helm from `bash e2e/helm.sh`, which `make test` runs first, so
//!   the test is `#[ignore]`d and fails without helm when run).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_yaml::Value;

const DRIVER: &str = "secrets-store.csi.k8s.io";
const AWS_MISSING: &str = "backend \"aws\" is not available";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
}

fn examples() -> Vec<PathBuf> {
    let mut files = Vec::new();
    yaml_files(&root().join("examples"), &mut files);
    assert!(!files.is_empty(), "no examples/**/*.yaml found");
    files
}

/// `coffer check [FLAGS] FILE` with a clean environment: (exit code, output).
fn check_with(flags: &[&str], file: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .arg("check")
        .args(flags)
        .arg(file)
        .env_remove("VAULT_ADDR")
        .env_remove("VAULT_NAMESPACE")
        .env_remove("COFFER_VAULT_AUTH_MOUNT")
        .env_remove("AWS_REGION")
        .output()
        .unwrap_or_else(|e| panic!("run coffer check: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().expect("coffer check was killed"), text)
}

/// A plain `coffer check FILE`: (success, output).
fn check(file: &Path) -> (bool, String) {
    let (code, text) = check_with(&[], file);
    (code == 0, text)
}

/// Whether this coffer has the AWS backend: `coffer check` on one AWS
/// example either passes or says backend "aws" is not available. Any other
/// outcome keeps the AWS examples in, so their failure is reported.
fn aws_backend_available() -> bool {
    let probe = root().join("examples/aws/secretsmanager.yaml");
    let (ok, out) = check(&probe);
    if !ok && out.contains(AWS_MISSING) {
        eprintln!(
            "note: this coffer has no AWS backend; skipping examples/aws/ ({})",
            out.trim()
        );
        return false;
    }
    true
}

#[test]
fn every_example_passes_coffer_check() {
    let aws = aws_backend_available();
    let aws_dir = root().join("examples/aws");
    let mut failures = Vec::new();
    let mut checked = 0;
    for file in examples() {
        if !aws && file.starts_with(&aws_dir) {
            continue;
        }
        let (ok, out) = check(&file);
        if ok {
            checked += 1;
        } else {
            failures.push(format!("{}:\n{}", file.display(), out.trim()));
        }
    }
    assert!(
        failures.is_empty(),
        "coffer check failed on:\n{}",
        failures.join("\n")
    );
    assert!(checked >= 5, "only {checked} examples checked");
}

#[test]
fn check_notes_a_class_relying_on_the_servers_vault_address_and_documents_its_exit_codes() {
    // No vaultAddress: the chart's vault.address provides it.
    let file = root().join("examples/coffer/vault-kv.yaml");
    let (code, out) = check_with(&[], &file);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("note: relies on the server's default Vault address"),
        "{out}"
    );
    assert!(
        out.contains("ok: 1 file(s), 1 SecretProviderClass(es) checked, 1 note(s)"),
        "{out}"
    );

    let (code, out) = check_with(&["--strict"], &file);
    assert_eq!(code, 1, "--strict fails on a note: {out}");
    let (code, out) = check_with(
        &["--vault-addr", "https://vault.vault.svc:8200", "--strict"],
        &file,
    );
    assert_eq!(
        code, 0,
        "with the server's address there is nothing to note: {out}"
    );

    let (code, out) = check_with(&["--format", "json"], &file);
    assert_eq!(code, 0, "{out}");
    let json: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(json["ok"], true, "{json}");
    assert_eq!(json["notes"], 1, "{json}");
    assert_eq!(json["errors"], 0, "{json}");
    assert_eq!(json["findings"][0]["severity"], "note", "{json}");
    assert_eq!(json["findings"][0]["class"], "worker-secrets", "{json}");

    let broken = tempfile::tempdir().unwrap();
    let bad = broken.path().join("bad.yaml");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("roleName", "rolName");
    std::fs::write(&bad, text).unwrap();
    let (code, out) = check_with(&["--format", "json"], &bad);
    assert_eq!(code, 1, "an error fails: {out}");
    let json: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(json["ok"], false);
    assert_eq!(json["findings"][0]["severity"], "error", "{json}");

    let (code, out) = check_with(&["--format", "yaml"], &file);
    assert_eq!(code, 2, "a bad command line is 2: {out}");
}

fn documents(file: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(file).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            <Value as serde::Deserialize>::deserialize(d)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut v = v;
    for key in path {
        v = v.get(*key)?;
    }
    v.as_str()
}

#[test]
fn every_example_pod_mounts_its_class_through_the_driver() {
    let demo = root().join("examples/demo");
    let mut pods_seen = 0;
    for file in examples() {
        let docs = documents(&file);
        let kind = |d: &Value| str_at(d, &["kind"]).unwrap_or("").to_owned();
        let classes: Vec<(String, Option<String>)> = docs
            .iter()
            .filter(|d| kind(d) == "SecretProviderClass")
            .map(|d| {
                (
                    str_at(d, &["metadata", "name"]).unwrap_or("").to_owned(),
                    str_at(d, &["metadata", "namespace"]).map(str::to_owned),
                )
            })
            .collect();
        assert!(
            !classes.is_empty(),
            "{}: no SecretProviderClass",
            file.display()
        );
        let pods: Vec<&Value> = docs.iter().filter(|d| kind(d) == "Pod").collect();
        // Secrets Store Sync Controller examples sync to Secrets, no pod volume.
        let syncs = docs.iter().any(|d| kind(d) == "SecretSync");
        if !file.starts_with(&demo) && !syncs {
            assert!(!pods.is_empty(), "{}: no pod spec", file.display());
        }
        for pod in pods {
            pods_seen += 1;
            let name = str_at(pod, &["metadata", "name"]).unwrap_or("?");
            let at = format!("{}: pod {name}", file.display());
            let namespace = str_at(pod, &["metadata", "namespace"]).map(str::to_owned);
            let volumes = pod["spec"]["volumes"]
                .as_sequence()
                .unwrap_or_else(|| panic!("{at}: no volumes"));
            let csi: Vec<&Value> = volumes.iter().filter(|v| v.get("csi").is_some()).collect();
            assert!(!csi.is_empty(), "{at}: no csi volume");
            for volume in csi {
                let vname = str_at(volume, &["name"]).unwrap_or("?");
                assert_eq!(
                    str_at(volume, &["csi", "driver"]),
                    Some(DRIVER),
                    "{at}: volume {vname}: csi.driver"
                );
                assert_eq!(
                    volume["csi"]["readOnly"].as_bool(),
                    Some(true),
                    "{at}: volume {vname}: csi.readOnly must be true (the driver refuses others)"
                );
                let class = str_at(volume, &["csi", "volumeAttributes", "secretProviderClass"])
                    .unwrap_or_else(|| {
                        panic!("{at}: volume {vname}: no volumeAttributes.secretProviderClass")
                    });
                assert!(
                    classes.iter().any(|(n, ns)| n == class
                        && ns.as_ref().is_none_or(|ns| Some(ns) == namespace.as_ref())),
                    "{at}: volume {vname}: class {class:?} is not in the file (in the pod's namespace)"
                );
                let mounted = pod["spec"]["containers"]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                    .flat_map(|c| c["volumeMounts"].as_sequence().into_iter().flatten())
                    .filter(|m| str_at(m, &["name"]) == Some(vname))
                    .collect::<Vec<_>>();
                assert!(!mounted.is_empty(), "{at}: volume {vname} is not mounted");
                for m in mounted {
                    assert_eq!(
                        m["readOnly"].as_bool(),
                        Some(true),
                        "{at}: mount of {vname} must be readOnly"
                    );
                }
            }
        }
    }
    assert!(pods_seen >= 5, "only {pods_seen} pods in the examples");
}

/// The value of `--flag=value` in a container's args.
fn flag<'a>(container: &'a Value, flag: &str) -> Vec<&'a str> {
    container["args"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str()?.strip_prefix(flag)?.strip_prefix('='))
        .collect()
}

/// The volume a container mounts at `path`.
fn volume_at<'a>(container: &'a Value, path: &str) -> Option<&'a str> {
    container["volumeMounts"]
        .as_sequence()?
        .iter()
        .find(|m| str_at(m, &["mountPath"]) == Some(path))
        .and_then(|m| str_at(m, &["name"]))
}

#[test]
fn every_sync_controller_example_wires_coffer_into_the_controller_pod() {
    let mut seen = 0;
    for file in examples() {
        let docs = documents(&file);
        let kind = |d: &Value| str_at(d, &["kind"]).unwrap_or("").to_owned();
        let syncs: Vec<&Value> = docs.iter().filter(|d| kind(d) == "SecretSync").collect();
        if syncs.is_empty() {
            continue;
        }
        seen += 1;
        let at = file.display().to_string();
        let pod = &docs
            .iter()
            .find(|d| kind(d) == "Deployment")
            .unwrap_or_else(|| panic!("{at}: no controller Deployment"))["spec"]["template"]["spec"];
        let containers = pod["containers"].as_sequence().expect("containers");
        let controller = containers
            .iter()
            .find(|c| !flag(c, "--provider-volume").is_empty())
            .unwrap_or_else(|| panic!("{at}: no container with --provider-volume"));
        let coffer = containers
            .iter()
            .find(|c| !flag(c, "--socket-dir").is_empty())
            .unwrap_or_else(|| panic!("{at}: no coffer container with --socket-dir"));
        // One emptyDir, mounted where each side expects the sockets.
        let shared = volume_at(controller, flag(controller, "--provider-volume")[0])
            .unwrap_or_else(|| {
                panic!("{at}: nothing mounted at the controller's --provider-volume")
            });
        assert_eq!(
            volume_at(coffer, flag(coffer, "--socket-dir")[0]),
            Some(shared),
            "{at}: coffer's --socket-dir is not the controller's provider volume"
        );
        let volume = pod["volumes"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|v| str_at(v, &["name"]) == Some(shared))
            .unwrap_or_else(|| panic!("{at}: no volume {shared}"));
        assert!(
            volume.get("emptyDir").is_some(),
            "{at}: {shared} is not an emptyDir"
        );
        // The controller sends its own pod UID: it must be set.
        let env_uid = controller["env"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|e| str_at(e, &["name"]) == Some("SYNC_CONTROLLER_POD_UID"));
        assert_eq!(
            env_uid.and_then(|e| str_at(e, &["valueFrom", "fieldRef", "fieldPath"])),
            Some("metadata.uid"),
            "{at}: SYNC_CONTROLLER_POD_UID"
        );
        let audiences: Vec<&str> = flag(controller, "--token-request-audience")
            .iter()
            .flat_map(|a| a.split(','))
            .collect();
        let providers = flag(coffer, "--provider");
        for sync in syncs {
            let ns = str_at(sync, &["metadata", "namespace"]);
            let class_name = str_at(sync, &["spec", "secretProviderClassName"]).unwrap_or("?");
            let class = docs
                .iter()
                .find(|d| {
                    kind(d) == "SecretProviderClass"
                        && str_at(d, &["metadata", "name"]) == Some(class_name)
                        && str_at(d, &["metadata", "namespace"]) == ns
                })
                .unwrap_or_else(|| {
                    panic!("{at}: class {class_name} not in the SecretSync's namespace")
                });
            let provider = str_at(class, &["spec", "provider"]).unwrap_or("?");
            assert!(
                providers.contains(&provider),
                "{at}: coffer does not serve socket {provider}"
            );
            let params = &class["spec"]["parameters"];
            let vault = matches!(provider, "vault" | "openbao")
                || str_at(params, &["backend"]) == Some("vault");
            if vault {
                let default = if provider == "openbao" {
                    "openbao"
                } else {
                    "vault"
                };
                let audience = str_at(params, &["audience"]).unwrap_or(default);
                assert!(
                    audiences.contains(&audience),
                    "{at}: the controller requests no token for audience {audience}"
                );
            }
            assert!(
                str_at(sync, &["spec", "serviceAccountName"]).is_some(),
                "{at}: SecretSync without serviceAccountName"
            );
        }
    }
    assert!(seen >= 1, "no Secrets Store Sync Controller example");
}

/// The helm binary `e2e/helm.sh` installs, or `COFFER_HELM`.
fn helm() -> Option<PathBuf> {
    if let Some(h) = std::env::var_os("COFFER_HELM") {
        return Some(PathBuf::from(h));
    }
    let h = root().join("e2e/.tools/helm/helm");
    h.is_file().then_some(h)
}

#[test]
#[ignore = "needs helm from e2e/helm.sh: run make test"]
fn chart_default_args_start_coffer_serve() {
    let helm = helm().unwrap_or_else(|| {
        panic!("helm not installed: run `bash e2e/helm.sh` (make test does) or set COFFER_HELM")
    });
    let out = Command::new(&helm)
        .args(["template", "coffer"])
        .arg(root().join("charts/coffer"))
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", helm.display()));
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let daemonset = serde_yaml::Deserializer::from_str(&text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .find(|d| str_at(d, &["kind"]) == Some("DaemonSet"))
        .expect("no DaemonSet rendered");
    let args: Vec<String> = daemonset["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .expect("no args")
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();

    // The same arguments, with the pod's paths and port moved somewhere local.
    let tmp = tempfile::tempdir().unwrap();
    let sockets = tmp.path().join("providers");
    std::fs::create_dir(&sockets).unwrap();
    let key = tmp.path().join("hmac-key");
    std::fs::write(
        &key,
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZab",
    )
    .unwrap();
    let mut providers = Vec::new();
    let local: Vec<String> = args
        .iter()
        .map(|a| {
            let (flag, value) = a.split_once('=').unwrap_or((a, ""));
            match flag {
                "--socket-dir" => format!("--socket-dir={}", sockets.display()),
                "--hmac-key-file" => format!("--hmac-key-file={}", key.display()),
                "--health-addr" => "--health-addr=127.0.0.1:0".to_owned(),
                "--provider" => {
                    providers.push(value.to_owned());
                    a.clone()
                }
                _ => a.clone(),
            }
        })
        .collect();
    assert!(!providers.is_empty(), "no --provider in {args:?}");

    // The image's entrypoint is `/coffer serve`.
    let mut child = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .arg("serve")
        .args(&local)
        .env_clear()
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let all_bound = || {
        providers
            .iter()
            .all(|p| sockets.join(format!("{p}.sock")).exists())
    };
    while !all_bound() {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "coffer serve {local:?} exited {status}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            Instant::now() < deadline,
            "coffer serve {local:?} did not create its sockets within 20s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn examples_readme_lists_every_example_and_nothing_else() {
    let readme = std::fs::read_to_string(root().join("examples/README.md")).unwrap();
    let listed: Vec<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(f, _)| f.to_owned()))
        .collect();
    let dir = root().join("examples");
    let files: Vec<String> = examples()
        .iter()
        .map(|f| f.strip_prefix(&dir).unwrap().to_string_lossy().into_owned())
        .collect();
    let unlisted: Vec<_> = files.iter().filter(|f| !listed.contains(f)).collect();
    let missing: Vec<_> = listed.iter().filter(|f| !files.contains(f)).collect();
    assert!(
        unlisted.is_empty(),
        "examples not in examples/README.md: {unlisted:?}"
    );
    assert!(
        missing.is_empty(),
        "examples/README.md lists files that do not exist: {missing:?}"
    );
}
