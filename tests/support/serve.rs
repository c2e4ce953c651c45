//! The real `coffer` binary: `coffer serve` as a fixture ([`Coffer`]) and
//! one-shot commands ([`coffer_cmd`]).

use std::ffi::OsString;
use std::os::unix::fs::FileTypeExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use super::proc::{self, Fixture, Process, Readiness, Spec, scrub_env, tail};
use super::{free_port, http, metrics};

/// How long `Coffer::start` waits for the sockets and `/readyz`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `Coffer::stop` waits for the process to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

const SPEC: Spec = Spec {
    name: "coffer",
    dir_prefix: "e2e",
    log_file: "coffer.log",
    tail_lines: 200,
};

fn coffer_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_coffer"))
}

/// A `Command` for the real coffer binary (`coffer mount ...`,
/// `coffer check ...`), with a scrubbed environment and stdin closed.
pub fn coffer_cmd() -> Command {
    let mut cmd = Command::new(coffer_bin());
    scrub_env(&mut cmd);
    cmd.stdin(Stdio::null());
    cmd
}

/// A running `coffer serve` (the real binary).
///
/// Started as
/// `coffer serve --socket-dir DIR --provider NAME [--provider NAME ...]
///  --health-addr 127.0.0.1:PORT --log-format json --log-level trace EXTRA...`
/// with stdout and stderr appended to one log file. Dropping it SIGKILLs the
/// process and, unless the test is already failing, asserts that the log
/// holds none of the [`LEAK_PATTERNS`]; call [`Coffer::stop`] to test
/// graceful shutdown.
pub struct Coffer {
    process: Process,
    pub socket_dir: PathBuf,
    /// `127.0.0.1:PORT` of the health/metrics HTTP server.
    pub health_addr: String,
    pub log_path: PathBuf,
    pub providers: Vec<String>,
}

impl Fixture for Coffer {
    fn process(&self) -> &Process {
        &self.process
    }

    fn is_ready(&self) -> bool {
        self.providers.iter().all(|p| is_socket(&self.socket(p)))
            && http::probe(&self.health_addr, "/readyz")
                .map(|r| r.status == 200)
                .unwrap_or(false)
    }

    fn awaiting(&self) -> String {
        format!(
            "sockets {:?}, GET http://{}/readyz",
            self.providers
                .iter()
                .map(|p| self.socket(p))
                .collect::<Vec<_>>(),
            self.health_addr
        )
    }
}

impl Coffer {
    /// Starts coffer and waits (≤ 20 s) until every provider socket exists
    /// and `GET /readyz` answers 200 (again on a new health port if the
    /// first was taken, see [`proc::start`]). Panics with the log on failure.
    pub fn start(providers: &[&str], extra_args: &[&str]) -> Coffer {
        Self::start_with_env(providers, extra_args, &[])
    }

    /// [`Coffer::start`] with extra environment variables for the child.
    pub fn start_with_env(
        providers: &[&str],
        extra_args: &[&str],
        envs: &[(&str, &str)],
    ) -> Coffer {
        proc::start(READY_TIMEOUT, || Self::spawn(providers, extra_args, envs))
    }

    /// Starts coffer without waiting for readiness (for tests of start-up
    /// failures: use [`Coffer::wait_exit`] and [`Coffer::log_text`]).
    pub fn spawn(providers: &[&str], extra_args: &[&str], envs: &[(&str, &str)]) -> Coffer {
        let health_addr = format!("127.0.0.1:{}", free_port());
        let process = Process::spawn(SPEC, coffer_bin(), |cmd, dir| {
            let socket_dir = dir.join("sockets");
            std::fs::create_dir(&socket_dir).expect("create socket dir");
            let mut args: Vec<OsString> =
                vec!["serve".into(), "--socket-dir".into(), socket_dir.into()];
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
            cmd.args(&args);
            for (k, v) in envs {
                cmd.env(k, v);
            }
        });
        Coffer {
            socket_dir: process.dir().join("sockets"),
            health_addr,
            log_path: process.log_path().to_owned(),
            providers: providers.iter().map(|s| s.to_string()).collect(),
            process,
        }
    }

    /// Waits until all sockets exist and `/readyz` is 200; panics with the
    /// log if coffer exits or `timeout` passes.
    pub fn wait_ready(&self, timeout: Duration) {
        match self.process.wait_ready(timeout, || self.is_ready()) {
            Readiness::Ready => {}
            Readiness::Exited => panic!(
                "coffer exited during start-up; log:\n{}",
                self.process.log_tail()
            ),
            Readiness::TimedOut => panic!(
                "coffer not ready within {timeout:?} ({}); log:\n{}",
                self.awaiting(),
                self.process.log_tail()
            ),
        }
    }

    /// `<socket_dir>/<name>.sock`
    pub fn socket(&self, name: &str) -> PathBuf {
        self.socket_dir.join(format!("{name}.sock"))
    }

    /// The temp dir holding sockets and the log (removed on drop).
    pub fn dir(&self) -> &Path {
        self.process.dir()
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Everything coffer wrote to stdout and stderr so far.
    pub fn log_text(&self) -> String {
        self.process.log_text()
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

    /// `GET /metrics` read with [`metrics::metric`]: the sum of the samples
    /// whose line starts with `prefix`, 0 when there are none.
    pub fn metric(&self, prefix: &str) -> f64 {
        metrics::metric(&self.health_get("/metrics").text(), prefix)
    }

    /// Sends a signal by name (`HUP`, `TERM`, ...). Panics if not running.
    pub fn signal(&self, signal: &str) {
        self.process.signal(signal);
    }

    pub fn has_exited(&self) -> bool {
        self.process.has_exited()
    }

    /// Waits up to `timeout` for coffer to exit on its own; reaps it.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.process.wait_exit(timeout)
    }

    /// SIGTERM, then waits (≤ 15 s) for the exit status. If coffer does not
    /// exit in time it is SIGKILLed and this panics with the log.
    pub fn stop(&mut self) -> ExitStatus {
        self.process.stop(STOP_TIMEOUT)
    }
}

impl Drop for Coffer {
    fn drop(&mut self) {
        // Killed first, so the log is complete; `Process` prints its tail
        // when the test is panicking.
        self.process.kill();
        if !std::thread::panicking() {
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
