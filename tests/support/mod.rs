//! Shared support for coffer's integration / end-to-end tests.
//!
//! Use from a test file with `mod support;`. Everything here runs real parts:
//! the real `coffer` binary ([`serve::Coffer`]), a real OpenBao dev server
//! ([`bao::Bao`]), a real moto server ([`moto::Moto`]), real RS256 ServiceAccount-shaped JWTs ([`jwt`]) and a real
//! gRPC-core client (`e2e/grpc_client.py`, [`python_client`]).
//!
//! The external tools (OpenBao, the Python venv) come from `bash e2e/setup.sh`,
//! which writes `e2e/.tools/env`; `make test` runs it. Environment variables
//! `COFFER_BAO_BIN` / `COFFER_PYTHON` override that file.
//!
//! The three servers share one child-process helper ([`proc::Process`],
//! started by [`proc::start`]): a temp dir and a log per process, retry when
//! the chosen port was taken, the log's tail when a test fails, and a kill
//! when its handle drops; a small watchdog ([`proc::Reaper`]) kills it too if
//! the test process dies without unwinding. Mount requests for the
//! driver-side client come from [`mount::MountBuilder`], metrics are read
//! with [`metrics::metric`]. Everything listens on 127.0.0.1 only.
#![allow(dead_code)]

pub mod bao;
pub mod driver;
pub mod http;
pub mod jwt;
pub mod metrics;
pub mod moto;
pub mod moto_api;
pub mod mount;
pub mod proc;
pub mod proxy;
pub mod raw;
pub mod serve;
pub mod stub;

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[allow(unused_imports)]
pub use serve::{Coffer, coffer_cmd};

/// The message tests fail with when `e2e/setup.sh` has not been run.
pub const NOT_INSTALLED: &str = "OpenBao not installed: run `bash e2e/setup.sh` (make test does)";

/// How long a `python_client` run may take before it is killed (the client's
/// own per-call deadline is 30 s).
pub const PYTHON_CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

pub fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `e2e/.tools/env` (written by `e2e/setup.sh`).
pub fn tools_env_path() -> PathBuf {
    manifest_dir().join("e2e/.tools/env")
}

/// `KEY` from the process environment, else from `e2e/.tools/env`.
pub fn tool_setting(key: &str) -> Option<String> {
    if let Ok(v) = std::env::var(key)
        && !v.is_empty()
    {
        return Some(v);
    }
    let text = std::fs::read_to_string(tools_env_path()).ok()?;
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Path of the real `bao` binary, or panic with [`NOT_INSTALLED`].
pub fn bao_bin() -> PathBuf {
    match tool_setting("COFFER_BAO_BIN") {
        Some(p) if Path::new(&p).is_file() => PathBuf::from(p),
        _ => panic!("{NOT_INSTALLED}"),
    }
}

/// The venv Python that has grpcio and the generated stubs.
pub fn python_bin() -> PathBuf {
    match tool_setting("COFFER_PYTHON") {
        Some(p) if Path::new(&p).is_file() => PathBuf::from(p),
        _ => panic!("Python gRPC client not installed: run `bash e2e/setup.sh` (make test does)"),
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// Polls `f` every 50 ms until it returns `Some`, or `None` after `timeout`.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Random lowercase hex (`n_bytes` bytes of OS randomness).
pub fn random_hex(n_bytes: usize) -> String {
    let mut buf = vec![0u8; n_bytes];
    getrandom::fill(&mut buf).expect("OS randomness");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh temp dir named `coffer-PREFIX-XXXXXX`, removed on drop.
pub fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("coffer-{prefix}-"))
        .tempdir()
        .expect("create temp dir")
}

/// Runs `COFFER_PYTHON e2e/grpc_client.py ARGS...` and returns its one JSON
/// line. Panics (with stderr) on a non-zero exit, on no JSON output, or after
/// [`PYTHON_CLIENT_TIMEOUT`].
///
/// Example: `python_client(&["--socket", s, "--authority-mode", "path", "version"])`.
pub fn python_client(args: &[&str]) -> Value {
    let script = manifest_dir().join("e2e/grpc_client.py");
    let mut child = Command::new(python_bin())
        .arg(&script)
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("GRPC_VERBOSITY", "ERROR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python gRPC client");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = wait_for(PYTHON_CLIENT_TIMEOUT, || child.try_wait().ok().flatten());
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("grpc_client.py {args:?} did not finish within {PYTHON_CLIENT_TIMEOUT:?}");
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    assert!(
        status.success(),
        "grpc_client.py {args:?} exited with {status}\nstdout: {stdout}\nstderr: {stderr}"
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_else(|| panic!("grpc_client.py {args:?} printed nothing\nstderr: {stderr}"));
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!("grpc_client.py printed non-JSON ({e}): {line}\nstderr: {stderr}")
    })
}

/// `Version` over the socket with the given authority mode
/// (`localhost`, `path`, `percent`, `default`).
pub fn python_version(socket: &Path, authority_mode: &str) -> Value {
    let s = socket.to_str().expect("UTF-8 socket path");
    python_client(&["--socket", s, "--authority-mode", authority_mode, "version"])
}

/// `Mount` over the socket; `request` is the JSON the client reads:
/// `{"attributes": "<json string>", "secrets": "null", "target_path": "...", "permission": "420"}`
/// (see [`mount_request`]).
pub fn python_mount(socket: &Path, authority_mode: &str, request: &Value) -> Value {
    let dir = tempdir("mount-req");
    let file = dir.path().join("request.json");
    std::fs::write(&file, serde_json::to_vec(request).unwrap()).expect("write request JSON");
    let s = socket.to_str().expect("UTF-8 socket path");
    python_client(&[
        "--socket",
        s,
        "--authority-mode",
        authority_mode,
        "mount",
        "--request-json",
        file.to_str().unwrap(),
    ])
}

/// A MountRequest in the client's JSON form, as driver v1.6 builds it:
/// `attributes` is the JSON string of the given string map, `secrets` is
/// `"null"` when `None`, `permission` is `"420"`.
pub fn mount_request(attributes: &Value, secrets: Option<&Value>, target_path: &str) -> Value {
    assert!(attributes.is_object(), "attributes must be a JSON object");
    serde_json::json!({
        "attributes": attributes.to_string(),
        "secrets": secrets.map(|s| s.to_string()).unwrap_or_else(|| "null".to_string()),
        "target_path": target_path,
        "permission": "420",
    })
}
