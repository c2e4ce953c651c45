//! The Secrets Store CSI driver's own provider client, built by
//! `e2e/setup.sh` from `e2e/driverclient` against each pinned driver release
//! (`e2e/.tools/bin/driverclient-vX.Y.Z`), and the Kubernetes API stand-in
//! `e2e/kubestandin` built beside it.
//!
//! [`mount`] runs `driverclient mount`: the driver's `NodePublishVolume`
//! encoding of attributes, secrets and permission, its `PluginClientBuilder`
//! dial of `<socket_dir>/<provider>.sock`, its `MountContent` checks and its
//! atomic writer into the target directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::proc::{Reaper, kill_and_reap, open_log, scrub_env, tail};
use super::{tempdir, tool_setting, wait_for};

/// The driver releases `e2e/setup.sh` builds a client for (its DRIVER_VERSIONS).
pub const DRIVER_VERSIONS: &[&str] = &["v1.4.8", "v1.5.6", "v1.6.0"];

/// How long one `driverclient` run may take before it is killed (its own
/// mount deadline is 60 s).
pub const RUN_TIMEOUT: Duration = Duration::from_secs(90);

pub const NOT_INSTALLED: &str =
    "driver client not built: run `bash e2e/setup.sh` (make test does; needs Go)";

/// `e2e/.tools/bin` (or `COFFER_GO_BIN_DIR`).
pub fn go_bin_dir() -> PathBuf {
    match tool_setting("COFFER_GO_BIN_DIR") {
        Some(p) if Path::new(&p).is_dir() => PathBuf::from(p),
        _ => panic!("{NOT_INSTALLED}"),
    }
}

/// `driverclient-<version>`.
pub fn client_bin(version: &str) -> PathBuf {
    let p = go_bin_dir().join(format!("driverclient-{version}"));
    assert!(p.is_file(), "{} missing: {NOT_INSTALLED}", p.display());
    p
}

/// What the kubelet and the SecretProviderClass hand the driver for one mount.
pub struct Request {
    /// `spec.provider`: the socket the driver dials.
    pub provider: String,
    /// `spec.parameters`.
    pub parameters: Value,
    /// The volume attributes kubelet sends (pod name, namespace, uid,
    /// service account, tokens, secretProviderClass).
    pub volume_context: Value,
    /// `nodePublishSecretRef` data, or `None`.
    pub secrets: Option<Value>,
}

impl Request {
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "provider": self.provider,
            "parameters": self.parameters,
            "volumeContext": self.volume_context,
            "secrets": self.secrets,
        })
    }
}

/// Runs `driverclient-<version> mount` and returns its report:
/// `{"driver", "grpc", "provider", "runtimeVersion", "ok", "errorReason",
/// "code", "message", "objectVersions": {id: version}, "files": [{"path",
/// "mode": "0644", "contents": base64}]}`. Panics if the program itself
/// fails or does not finish within [`RUN_TIMEOUT`].
pub fn mount(version: &str, socket_dir: &Path, req: &Request, target: &Path) -> Value {
    let dir = tempdir("driver-req");
    let file = dir.path().join("request.json");
    std::fs::write(&file, serde_json::to_vec(&req.to_json()).unwrap()).unwrap();
    let mut cmd = Command::new(client_bin(version));
    cmd.arg("mount")
        .arg("-socket-dir")
        .arg(socket_dir)
        .arg("-request")
        .arg(&file)
        .arg("-target")
        .arg(target);
    run_json(cmd, &format!("driverclient-{version} mount"))
}

/// Runs a command that prints one JSON line, bounded by [`RUN_TIMEOUT`].
pub fn run_json(mut cmd: Command, what: &str) -> Value {
    scrub_env(&mut cmd);
    let dir = tempdir("driver-out");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(open_log(&out_path)))
        .stderr(Stdio::from(open_log(&err_path)))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let status = wait_for(RUN_TIMEOUT, || child.try_wait().ok().flatten());
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let Some(status) = status else {
        kill_and_reap(&mut child);
        panic!(
            "{what} did not finish within {RUN_TIMEOUT:?}\nstderr: {}",
            tail(&stderr, 30)
        );
    };
    assert!(
        status.success(),
        "{what} exited with {status}\nstdout: {stdout}\nstderr: {}",
        tail(&stderr, 30)
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_else(|| panic!("{what} printed nothing\nstderr: {}", tail(&stderr, 30)));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{what} printed non-JSON ({e}): {line}"))
}

/// The files of a report as (path, mode, contents).
pub fn files(report: &Value) -> Vec<(String, String, Vec<u8>)> {
    use base64::Engine as _;
    report["files"]
        .as_array()
        .unwrap_or_else(|| panic!("report has no files: {report}"))
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_owned(),
                f["mode"].as_str().unwrap().to_owned(),
                base64::engine::general_purpose::STANDARD
                    .decode(f["contents"].as_str().unwrap())
                    .unwrap(),
            )
        })
        .collect()
}

/// A running `kubestandin` (HTTPS on 127.0.0.1, its own CA), with the
/// objects given as its config. Stops on drop.
pub struct KubeStandin {
    child: Option<std::process::Child>,
    reaper: Option<Reaper>,
    dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub log_path: PathBuf,
}

impl KubeStandin {
    /// Starts the stand-in with `config` (see e2e/kubestandin) and `extra`
    /// arguments; waits (≤ 20 s) for it to write its address.
    pub fn start(config: &Value, extra: &[&str]) -> KubeStandin {
        let dir = tempdir("kube");
        let cfg = dir.path().join("objects.json");
        std::fs::write(&cfg, serde_json::to_vec(config).unwrap()).unwrap();
        let log_path = dir.path().join("requests.log");
        let log = open_log(&log_path);
        let log_err = log.try_clone().unwrap();
        let mut cmd = Command::new(go_bin_dir().join("kubestandin"));
        scrub_env(&mut cmd);
        let child = cmd
            .arg("-config")
            .arg(&cfg)
            .arg("-dir")
            .arg(dir.path())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn kubestandin: {e}"));
        let reaper = Reaper::watch(child.id());
        let mut k = KubeStandin {
            child: Some(child),
            reaper: Some(reaper),
            dir,
            addr: String::new(),
            log_path,
        };
        let addr_file = k.dir.path().join("addr");
        let addr = wait_for(Duration::from_secs(20), || {
            std::fs::read_to_string(&addr_file).ok()
        });
        match addr {
            Some(a) => k.addr = a,
            None => panic!(
                "kubestandin did not start; log:\n{}",
                tail(&k.log_text(), 30)
            ),
        }
        k
    }

    /// A kubeconfig for the stand-in (server, CA, a token).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// The stand-in's CA certificate (PEM).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// How many requests had this method and path.
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["method"] == method && v["path"] == path)
            .count()
    }
}

impl Drop for KubeStandin {
    fn drop(&mut self) {
        self.reaper = None;
        if let Some(mut c) = self.child.take() {
            kill_and_reap(&mut c);
        }
    }
}
