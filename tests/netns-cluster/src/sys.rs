//! Processes and commands: run a command and capture its failure as an [`Error`], run one inside a network
//! namespace, keep long-running processes in a guard that kills them by PID, and poll for a condition with a
//! deadline instead of sleeping.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// Fails with [`Error::NotRoot`] unless the effective user is root.
pub fn require_root() -> Result<()> {
    if nix::unistd::Uid::effective().is_root() { Ok(()) } else { Err(Error::NotRoot) }
}

/// The command line, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn trimmed(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let s = s.trim();
    // Keep messages readable: the tail holds the error.
    let chars: Vec<char> = s.chars().collect();
    if chars.len() > 2000 {
        format!("...{}", chars[chars.len() - 2000..].iter().collect::<String>())
    } else {
        s.to_string()
    }
}

/// Runs `cmd` to completion; its stdout when it exits 0, else [`Error::Command`] with its output.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = output(cmd)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let mut output = trimmed(&out.stderr);
        let stdout = trimmed(&out.stdout);
        if !stdout.is_empty() {
            output = format!("{output} (stdout: {stdout})");
        }
        Err(Error::Command { cmd: describe(cmd), status: out.status.to_string(), output })
    }
}

/// Runs `cmd` to completion and returns its raw output whatever the exit status.
pub fn output(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null()).output().map_err(|e| Error::Command {
        cmd: describe(cmd),
        status: "not started".into(),
        output: e.to_string(),
    })
}

/// `ip ARGS...` in the root namespace (only ever used with `-n NS` or `netns` subcommands).
pub fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args))
}

/// `ip -n NS ARGS...`: an `ip` command inside namespace `ns`.
pub fn ip_in(ns: &str, args: &[&str]) -> Result<String> {
    run(Command::new("ip").arg("-n").arg(ns).args(args))
}

/// A command that runs `program args...` inside network namespace `ns` (`ip netns exec`, which `exec`s the
/// program, so the child's PID is the program's).
pub fn in_ns(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("ip");
    c.arg("netns").arg("exec").arg(ns).arg(program);
    c
}

/// A long-running process we started: killed (SIGKILL, by PID) and reaped when dropped. Its stdout and stderr go
/// to a log file, so a failed check can show what it said.
#[derive(Debug)]
pub struct Proc {
    /// A short label (`agent node2`, `pod web-1`).
    pub label: String,
    child: Option<Child>,
    /// The combined stdout/stderr log.
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with output to `log` (appended, so a restarted process keeps its history).
    pub fn spawn(label: impl Into<String>, mut cmd: Command, log: &Path) -> Result<Self> {
        let label = label.into();
        let open = || {
            File::options()
                .create(true)
                .append(true)
                .open(log)
                .map_err(|e| Error::io(format!("opening {}", log.display()), e))
        };
        let out = open()?;
        let err = open()?;
        let child = cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn().map_err(|e| Error::Command {
            cmd: describe(&cmd),
            status: "not started".into(),
            output: e.to_string(),
        })?;
        Ok(Self { label, child: Some(child), log: log.to_path_buf() })
    }

    /// The PID.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process has exited (and its status).
    pub fn exited(&mut self) -> Option<String> {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => Some(status.to_string()),
            Some(Ok(None)) => None,
            Some(Err(e)) => Some(format!("unknown ({e})")),
            None => Some("killed by the harness".into()),
        }
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Waits until the log contains `needle` (or the process exits, or the deadline passes).
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let what = format!("{} to print {needle:?}", self.label);
        poll(&what, timeout, Duration::from_millis(20), || {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text.contains(needle) {
                return Ok(());
            }
            if let Some(status) = self.exited() {
                return Err(Error::check(format!("{} exited ({status}): {}", self.label, self.log_tail(20))));
            }
            Err(Error::check("not yet"))
        })
    }

    /// Sends SIGKILL by PID and reaps the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Calls `f` every `interval` until it returns `Ok`, or fails with [`Error::Timeout`] carrying the last error.
pub fn poll<T>(what: &str, timeout: Duration, interval: Duration, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    // Bounded in count as well as time, whatever the interval.
    let max_rounds = (timeout.as_millis() / interval.as_millis().max(1)) as usize + 2;
    let mut last = String::from("never tried");
    for _ in 0..max_rounds {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) => last = e.to_string(),
        }
        if start.elapsed() >= timeout {
            break;
        }
        std::thread::sleep(interval);
    }
    Err(Error::Timeout { what: what.to_string(), waited: start.elapsed(), last })
}
