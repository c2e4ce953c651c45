//! Child processes for tests: the real `coffer` binary, and a watchdog that
//! makes sure no child outlives the test process.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileTypeExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::{free_port, http, tempdir, wait_for};

/// How long `Coffer::start` waits for the sockets and `/readyz`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `Coffer::stop` waits for the process to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Environment prefixes removed from every child so that the developer's or
/// CI's environment cannot change what a test runs (clap `env` settings,
/// Vault/OpenBao/AWS client defaults). Tests add back what they need.
const SCRUBBED_ENV_PREFIXES: &[&str] = &["COFFER_", "VAULT_", "BAO_", "AWS_"];

/// Removes the [`SCRUBBED_ENV_PREFIXES`] variables and `RUST_LOG` from `cmd`.
pub fn scrub_env(cmd: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars_os() {
        let name = k.to_string_lossy();
        if name == "RUST_LOG" || SCRUBBED_ENV_PREFIXES.iter().any(|p| name.starts_with(p)) {
            cmd.env_remove(&k);
        }
    }
    cmd
}

/// The real coffer binary: Cargo's for integration tests; for the
/// `e2e/compat.rs` example (which Cargo gives no binary path) `COFFER_BIN`,
/// else `target/release/coffer`.
pub fn coffer_bin() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_coffer") {
        Some(p) => PathBuf::from(p),
        None => std::env::var_os("COFFER_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| super::manifest_dir().join("target/release/coffer")),
    }
}

/// A `Command` for the real coffer binary (`coffer mount ...`,
/// `coffer check ...`), with a scrubbed environment and stdin closed.
pub fn coffer_cmd() -> Command {
    let mut cmd = Command::new(coffer_bin());
    scrub_env(&mut cmd);
    cmd.stdin(Stdio::null());
    cmd
}

/// Sends `signal` (a name such as `TERM`, `HUP`, `KILL`) to `pid` with the
/// `kill` utility (the crate forbids `unsafe` and nix is built without its
/// `signal` feature). Returns whether `kill` succeeded.
pub fn send_signal(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Waits up to `timeout` for `child` to exit.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    wait_for(timeout, || child.try_wait().ok().flatten())
}

/// Kills `child` with SIGKILL (if still running) and reaps it.
pub fn kill_and_reap(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A watchdog process: SIGKILLs `target` if the test process dies without
/// running destructors (killed, aborted), and exits by itself once `target`
/// is gone. It runs in its own process group; dropping the `Reaper` kills
/// that group and reaps it.
pub struct Reaper {
    child: Option<Child>,
}

impl Reaper {
    pub fn watch(target: u32) -> Reaper {
        let script = r#"while kill -0 "$1" 2>/dev/null; do
  kill -0 "$2" 2>/dev/null || exit 0
  sleep 1
done
kill -KILL "$2" 2>/dev/null
exit 0"#;
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("coffer-test-reaper")
            .arg(std::process::id().to_string())
            .arg(target.to_string())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        Reaper { child }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // The whole group: `sh` and a `sleep` it may be in.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", c.id())])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            kill_and_reap(&mut c);
        }
    }
}

/// A running `coffer serve` (the real binary).
///
/// Started as
/// `coffer serve --socket-dir DIR --provider NAME [--provider NAME ...]
///  --health-addr 127.0.0.1:PORT --log-format json --log-level debug EXTRA...`
/// with stdout and stderr appended to one log file. Dropping it SIGKILLs the
/// process; call [`Coffer::stop`] to test graceful shutdown.
pub struct Coffer {
    child: Option<Child>,
    reaper: Option<Reaper>,
    dir: tempfile::TempDir,
    pub socket_dir: PathBuf,
    /// `127.0.0.1:PORT` of the health/metrics HTTP server.
    pub health_addr: String,
    pub log_path: PathBuf,
    pub providers: Vec<String>,
}

impl Coffer {
    /// Starts coffer and waits (≤ 20 s) until every provider socket exists
    /// and `GET /readyz` answers 200. Panics with the log on failure.
    pub fn start(providers: &[&str], extra_args: &[&str]) -> Coffer {
        Self::start_with_env(providers, extra_args, &[])
    }

    /// [`Coffer::start`] with extra environment variables for the child.
    pub fn start_with_env(
        providers: &[&str],
        extra_args: &[&str],
        envs: &[(&str, &str)],
    ) -> Coffer {
        let c = Self::spawn(providers, extra_args, envs);
        c.wait_ready(READY_TIMEOUT);
        c
    }

    /// Starts coffer without waiting for readiness (for tests of start-up
    /// failures: use [`Coffer::wait_exit`] and [`Coffer::log_text`]).
    pub fn spawn(providers: &[&str], extra_args: &[&str], envs: &[(&str, &str)]) -> Coffer {
        let dir = tempdir("e2e");
        let socket_dir = dir.path().join("sockets");
        std::fs::create_dir(&socket_dir).expect("create socket dir");
        let log_path = dir.path().join("coffer.log");
        let health_addr = format!("127.0.0.1:{}", free_port());

        let mut args: Vec<OsString> = vec![
            "serve".into(),
            "--socket-dir".into(),
            socket_dir.clone().into(),
        ];
        for p in providers {
            args.push("--provider".into());
            args.push((*p).into());
        }
        for a in [
            "--health-addr",
            &health_addr,
            "--log-format",
            "json",
            "--log-level",
            "trace",
        ] {
            args.push(a.into());
        }
        args.extend(extra_args.iter().map(OsString::from));

        let log = open_log(&log_path);
        let log_err = log.try_clone().expect("clone log file handle");
        let mut cmd = coffer_cmd();
        cmd.args(&args)
            .current_dir(dir.path())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", coffer_bin().display()));
        let reaper = Reaper::watch(child.id());
        Coffer {
            child: Some(child),
            reaper: Some(reaper),
            dir,
            socket_dir,
            health_addr,
            log_path,
            providers: providers.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Waits until all sockets exist and `/readyz` is 200; panics with the
    /// log if coffer exits or `timeout` passes.
    pub fn wait_ready(&self, timeout: Duration) {
        let ready = wait_for(timeout, || {
            if self.has_exited() {
                return Some(false);
            }
            let sockets_ok = self.providers.iter().all(|p| is_socket(&self.socket(p)));
            let health_ok = sockets_ok
                && http::get(&self.health_addr, "/readyz")
                    .map(|r| r.status == 200)
                    .unwrap_or(false);
            health_ok.then_some(true)
        });
        match ready {
            Some(true) => {}
            Some(false) => panic!("coffer exited during start-up; log:\n{}", self.log_text()),
            None => panic!(
                "coffer not ready within {timeout:?} (sockets {:?}, GET http://{}/readyz); log:\n{}",
                self.providers
                    .iter()
                    .map(|p| self.socket(p))
                    .collect::<Vec<_>>(),
                self.health_addr,
                self.log_text()
            ),
        }
    }

    /// `<socket_dir>/<name>.sock`
    pub fn socket(&self, name: &str) -> PathBuf {
        self.socket_dir.join(format!("{name}.sock"))
    }

    /// The temp dir holding sockets and the log (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything coffer wrote to stdout and stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The log lines that parse as JSON objects (`--log-format json`).
    pub fn log_json(&self) -> Vec<serde_json::Value> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.is_object())
            .collect()
    }

    /// `GET http://<health_addr><path>`
    pub fn health_get(&self, path: &str) -> http::Response {
        http::get(&self.health_addr, path)
            .unwrap_or_else(|e| panic!("GET {path} on {}: {e}", self.health_addr))
    }

    /// Sends a signal by name (`HUP`, `TERM`, ...). Panics if not running.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid().expect("coffer already stopped");
        assert!(send_signal(pid, signal), "kill -{signal} {pid} failed");
    }

    pub fn has_exited(&self) -> bool {
        match &self.child {
            None => true,
            Some(_) => {
                // try_wait needs &mut; peek through /proc instead.
                let pid = self.pid().unwrap();
                match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                    Ok(stat) => stat
                        .rsplit_once(')')
                        .map(|(_, rest)| rest.trim_start().starts_with('Z'))
                        .unwrap_or(false),
                    Err(_) => true,
                }
            }
        }
    }

    /// Waits up to `timeout` for coffer to exit on its own; reaps it.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = wait_timeout(child, timeout)?;
        self.child = None;
        self.reaper = None;
        Some(status)
    }

    /// SIGTERM, then waits (≤ 15 s) for the exit status. If coffer does not
    /// exit in time it is SIGKILLed and this panics with the log.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("coffer already stopped");
        send_signal(child.id(), "TERM");
        match wait_timeout(&mut child, STOP_TIMEOUT) {
            Some(status) => {
                self.reaper = None;
                status
            }
            None => {
                kill_and_reap(&mut child);
                self.reaper = None;
                panic!(
                    "coffer did not exit within {STOP_TIMEOUT:?} of SIGTERM; log:\n{}",
                    self.log_text()
                );
            }
        }
    }
}

impl Drop for Coffer {
    fn drop(&mut self) {
        // Reaper first: once the child is reaped its PID may be reused.
        self.reaper = None;
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
        if std::thread::panicking() {
            eprintln!(
                "---- coffer log ({}), last 200 lines ----\n{}\n---- end of coffer log ----",
                self.log_path.display(),
                tail(&self.log_text(), 200)
            );
        } else {
            // Every end-to-end test runs coffer at --log-level trace; its
            // whole output must hold nothing credential- or secret-shaped.
            let log = self.log_text();
            for (pattern, what) in LEAK_PATTERNS {
                assert!(
                    !log.contains(pattern),
                    "coffer's log contains {what} ({pattern:?}):\n{}",
                    tail(&log, 50)
                );
            }
        }
    }
}

/// What must never appear in coffer's output.
pub const LEAK_PATTERNS: &[(&str, &str)] = &[
    ("eyJ", "a JWT (ServiceAccount token)"),
    ("-----BEGIN", "PEM material (a key or certificate)"),
    ("PRIVATE KEY", "a private key"),
    ("hvs.", "a Vault token"),
    ("client_token", "a login response"),
    ("\"password\"", "a secret's field"),
];

fn is_socket(p: &Path) -> bool {
    std::fs::metadata(p)
        .map(|m| m.file_type().is_socket())
        .unwrap_or(false)
}

pub(crate) fn open_log(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open log {}: {e}", path.display()))
}
