//! Child processes for tests: [`Process`], the one helper under every server
//! fixture (OpenBao, moto, coffer), [`start`] with retry on a port clash, and
//! a watchdog ([`Reaper`]) that makes sure no child outlives the test process.

use std::fs::{File, OpenOptions};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::{tempdir, wait_for};

/// Environment prefixes removed from every child so that the developer's or
/// CI's environment cannot change what a test runs (clap `env` settings,
/// Vault/OpenBao/AWS client defaults). Tests add back what they need.
const SCRUBBED_ENV_PREFIXES: &[&str] = &["COFFER_", "VAULT_", "BAO_", "AWS_"];

/// How many times [`start`] launches a fixture whose port was taken.
pub const START_ATTEMPTS: usize = 3;

/// What a server writes when its listening port was taken between
/// [`super::free_port`] and its own bind (compared lower-case): Go's and
/// Rust's `EADDRINUSE` text (OpenBao, coffer, Python) and werkzeug's own
/// check (moto).
pub const PORT_CLASH: &[&str] = &["address already in use", "is in use by another program"];

/// Proxy settings, which all three HTTP stacks read (tests/proxy.rs sets
/// them where it means to).
const SCRUBBED_ENV: &[&str] = &[
    "RUST_LOG",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
];

/// Removes the [`SCRUBBED_ENV_PREFIXES`] and [`SCRUBBED_ENV`] variables from `cmd`.
pub fn scrub_env(cmd: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars_os() {
        let name = k.to_string_lossy();
        if SCRUBBED_ENV.contains(&name.as_ref())
            || SCRUBBED_ENV_PREFIXES.iter().any(|p| name.starts_with(p))
        {
            cmd.env_remove(&k);
        }
    }
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

/// Whether `log` says the process could not bind because the port was
/// taken (see [`PORT_CLASH`]).
pub fn is_port_clash(log: &str) -> bool {
    let log = log.to_ascii_lowercase();
    PORT_CLASH.iter().any(|p| log.contains(p))
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

/// How a fixture's process is named in messages and where its files go.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// In messages: `OpenBao`, `moto`, `coffer`.
    pub name: &'static str,
    /// The temp dir is `coffer-<dir_prefix>-XXXXXX`.
    pub dir_prefix: &'static str,
    /// The log file's name inside the temp dir.
    pub log_file: &'static str,
    /// How many log lines a failure shows (start-up panics, and the dump
    /// when a test panics while the process is alive).
    pub tail_lines: usize,
}

/// How a wait for readiness ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// The process exited first.
    Exited,
    TimedOut,
}

/// A child process with its own temp dir (its working directory) and one log
/// file taking its stdout and stderr, watched by a [`Reaper`].
///
/// Dropping it SIGKILLs and reaps the process, then removes the temp dir; if
/// the thread is panicking it first prints the last [`Spec::tail_lines`]
/// lines of the log to stderr.
pub struct Process {
    spec: Spec,
    child: Option<Child>,
    reaper: Option<Reaper>,
    dir: tempfile::TempDir,
    log_path: PathBuf,
}

impl Process {
    /// Creates the temp dir and log file, builds `Command::new(program)` with
    /// a scrubbed environment ([`scrub_env`]), the temp dir as working
    /// directory, stdin closed and stdout/stderr appended to the log, lets
    /// `configure` add arguments and environment (it gets the temp dir), and
    /// spawns it. Panics if the spawn fails.
    pub fn spawn(
        spec: Spec,
        program: &Path,
        configure: impl FnOnce(&mut Command, &Path),
    ) -> Process {
        let dir = tempdir(spec.dir_prefix);
        let log_path = dir.path().join(spec.log_file);
        let log = open_log(&log_path);
        let log_err = log.try_clone().expect("clone log file handle");
        let mut cmd = Command::new(program);
        scrub_env(&mut cmd);
        cmd.current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        configure(&mut cmd, dir.path());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        let reaper = Reaper::watch(child.id());
        Process {
            spec,
            child: Some(child),
            reaper: Some(reaper),
            dir,
            log_path,
        }
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The temp dir (working directory; removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The last [`Spec::tail_lines`] lines of the log.
    pub fn log_tail(&self) -> String {
        tail(&self.log_text(), self.spec.tail_lines)
    }

    /// `None` once the process was stopped or reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process has exited (reaped, or a zombie waiting to be).
    pub fn has_exited(&self) -> bool {
        let Some(pid) = self.pid() else {
            return true;
        };
        // try_wait needs &mut; peek through /proc instead.
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
                .unwrap_or(false),
            Err(_) => true,
        }
    }

    /// Polls `ready` every 50 ms for up to `timeout`, stopping early if the
    /// process exits.
    pub fn wait_ready(&self, timeout: Duration, mut ready: impl FnMut() -> bool) -> Readiness {
        let outcome = wait_for(timeout, || {
            if self.has_exited() {
                return Some(Readiness::Exited);
            }
            ready().then_some(Readiness::Ready)
        });
        outcome.unwrap_or(Readiness::TimedOut)
    }

    /// Sends a signal by name (`HUP`, `TERM`, ...). Panics if not running.
    pub fn signal(&self, signal: &str) {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("{} already stopped", self.spec.name));
        assert!(send_signal(pid, signal), "kill -{signal} {pid} failed");
    }

    /// Waits up to `timeout` for the process to exit on its own; reaps it.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = wait_timeout(child, timeout)?;
        self.child = None;
        self.reaper = None;
        Some(status)
    }

    /// SIGTERM, then waits up to `timeout` for the exit status. If the
    /// process does not exit in time it is SIGKILLed and this panics with
    /// the log.
    pub fn stop(&mut self, timeout: Duration) -> ExitStatus {
        let name = self.spec.name;
        let mut child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("{name} already stopped"));
        send_signal(child.id(), "TERM");
        let status = wait_timeout(&mut child, timeout);
        if status.is_none() {
            kill_and_reap(&mut child);
        }
        self.reaper = None;
        status.unwrap_or_else(|| {
            panic!(
                "{name} did not exit within {timeout:?} of SIGTERM; log:\n{}",
                self.log_tail()
            )
        })
    }

    /// SIGKILLs and reaps the process (if still running). The log and the
    /// temp dir stay until drop.
    pub fn kill(&mut self) {
        // Reaper first: once the child is reaped its PID may be reused.
        self.reaper = None;
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let name = self.spec.name;
            eprintln!(
                "---- {name} log ({}), last {} lines ----\n{}\n---- end of {name} log ----",
                self.log_path.display(),
                self.spec.tail_lines,
                self.log_tail()
            );
        }
    }
}

/// A server fixture built on a [`Process`], for [`start`].
pub trait Fixture {
    fn process(&self) -> &Process;
    /// Whether it answers yet (polled every 50 ms while starting).
    fn is_ready(&self) -> bool;
    /// What readiness means, for the time-out message (an address, sockets).
    fn awaiting(&self) -> String;
}

/// Starts a fixture: `launch` spawns one attempt (picking its ports anew
/// each time), then this waits up to `timeout` for [`Fixture::is_ready`].
///
/// A port can be taken by someone else between probing it and the child's
/// bind: an attempt that exits with a [port clash](is_port_clash) in its log
/// is dropped and launched again, up to [`START_ATTEMPTS`] times. Any other
/// exit, or no readiness within `timeout`, panics with the log tail.
pub fn start<F: Fixture>(timeout: Duration, mut launch: impl FnMut() -> F) -> F {
    let mut last_tail = String::new();
    let mut name = "";
    for _ in 0..START_ATTEMPTS {
        let fixture = launch();
        let process = fixture.process();
        name = process.spec().name;
        match process.wait_ready(timeout, || fixture.is_ready()) {
            Readiness::Ready => return fixture,
            Readiness::Exited if is_port_clash(&process.log_text()) => {
                last_tail = process.log_tail();
                // Dropped here (killed and reaped); the next attempt takes other ports.
            }
            Readiness::Exited => panic!(
                "{name} exited during start-up ({}); log:\n{}",
                fixture.awaiting(),
                process.log_tail()
            ),
            Readiness::TimedOut => panic!(
                "{name} not ready within {timeout:?} ({}); log:\n{}",
                fixture.awaiting(),
                process.log_tail()
            ),
        }
    }
    panic!(
        "{name} failed to start {START_ATTEMPTS} times, its port taken each time; last log:\n{last_tail}"
    );
}

pub(crate) fn open_log(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open log {}: {e}", path.display()))
}
