//! Where rendered rules go: the [`RuleSink`] trait, the real [`IptablesRestore`], and [`FakeSink`] for tests.

use causeway_rules::parse::{Dump, ParseError};
use parking_lot::Mutex;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Errors applying or reading rules.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The program could not be started or its pipes failed.
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// `iptables-restore` rejected the batch; `line` is the failing line when the message names one.
    #[error("{program} rejected the batch{}: {stderr}", line.map(|l| format!(" at line {l}")).unwrap_or_default())]
    Rejected { program: String, line: Option<usize>, stderr: String },
    /// `iptables-save` failed.
    #[error("{program} failed: {stderr}")]
    Save { program: String, stderr: String },
    /// `iptables-save` output could not be read.
    #[error("cannot parse {program} output: {source}")]
    Parse {
        program: String,
        #[source]
        source: ParseError,
    },
}

impl SinkError {
    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            SinkError::Spawn { .. } => "spawn",
            SinkError::Rejected { .. } => "rejected",
            SinkError::Save { .. } => "save",
            SinkError::Parse { .. } => "parse",
        }
    }
}

/// Applies `iptables-restore --noflush` input and reads the current rules.
pub trait RuleSink: Send + Sync {
    /// Applies `text` without flushing anything it does not declare.
    fn restore(&self, text: &str) -> Result<(), SinkError>;
    /// The current nat and filter tables.
    fn save(&self) -> Result<Dump, SinkError>;
    /// Whether `chain` exists in `table` (a cheap check, unlike `save` on a large ruleset).
    fn chain_exists(&self, table: &str, chain: &str) -> Result<bool, SinkError>;
}

/// The real thing: `iptables-restore --noflush -w` and `iptables-save`, under the xtables lock.
#[derive(Clone, Debug)]
pub struct IptablesRestore {
    /// `iptables-restore` (or `ip6tables-restore`), looked up in `PATH` unless absolute.
    pub restore: PathBuf,
    /// `iptables-save` (or `ip6tables-save`).
    pub save: PathBuf,
    /// `iptables` (or `ip6tables`), for single-chain queries.
    pub iptables: PathBuf,
    /// Seconds to wait for the xtables lock (`-w`).
    pub wait_seconds: u32,
    /// The lock file, passed as `XTABLES_LOCKFILE` to the children (the process's own environment is left
    /// alone); `None` keeps iptables' default `/run/xtables.lock`.
    pub lock_file: Option<PathBuf>,
}

impl IptablesRestore {
    /// IPv4 tools from `PATH`, waiting up to 5 s for the lock.
    pub fn v4() -> Self {
        Self {
            restore: "iptables-restore".into(),
            save: "iptables-save".into(),
            iptables: "iptables".into(),
            wait_seconds: 5,
            lock_file: None,
        }
    }

    /// IPv6 tools from `PATH`.
    pub fn v6() -> Self {
        Self {
            restore: "ip6tables-restore".into(),
            save: "ip6tables-save".into(),
            iptables: "ip6tables".into(),
            wait_seconds: 5,
            lock_file: None,
        }
    }

    fn command(&self, program: &PathBuf) -> Command {
        let mut c = Command::new(program);
        if let Some(lock) = &self.lock_file {
            c.env("XTABLES_LOCKFILE", lock);
        }
        c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    }
}

impl RuleSink for IptablesRestore {
    fn restore(&self, text: &str) -> Result<(), SinkError> {
        let program = self.restore.display().to_string();
        let spawn_err = |source| SinkError::Spawn { program: program.clone(), source };
        let mut cmd = self.command(&self.restore);
        cmd.arg("--noflush").arg("-w").arg(self.wait_seconds.to_string());
        let mut child = cmd.spawn().map_err(spawn_err)?;
        if let Some(mut stdin) = child.stdin.take() {
            // A write error (the child died early) shows up in its exit status and stderr below.
            let _ = stdin.write_all(text.as_bytes());
        }
        let out = child.wait_with_output().map_err(spawn_err)?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(SinkError::Rejected { program, line: causeway_rules::failed_line(&stderr), stderr })
    }

    fn save(&self) -> Result<Dump, SinkError> {
        let program = self.save.display().to_string();
        let mut text = String::new();
        for table in ["filter", "nat"] {
            let out = self
                .command(&self.save)
                .arg("-t")
                .arg(table)
                .stdin(Stdio::null())
                .output()
                .map_err(|source| SinkError::Spawn { program: program.clone(), source })?;
            if !out.status.success() {
                return Err(SinkError::Save {
                    program,
                    stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
            text.push_str(&String::from_utf8_lossy(&out.stdout));
        }
        Dump::parse(&text).map_err(|source| SinkError::Parse { program, source })
    }

    fn chain_exists(&self, table: &str, chain: &str) -> Result<bool, SinkError> {
        let program = self.iptables.display().to_string();
        let out = self
            .command(&self.iptables)
            .arg("-w")
            .arg(self.wait_seconds.to_string())
            .arg("-t")
            .arg(table)
            .arg("-S")
            .arg(chain)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| SinkError::Spawn { program, source })?;
        // Exit status 1 with "No chain/target/match by that name" means it does not exist.
        Ok(out.status.success())
    }
}

/// An in-memory sink that simulates `--noflush` restore on a [`Dump`]; it can be told to reject batches.
#[derive(Debug, Default)]
pub struct FakeSink {
    pub state: Mutex<Dump>,
    /// Reject every batch containing this text, naming the line it is on.
    pub reject_containing: Mutex<Option<String>>,
    /// Every batch received.
    pub batches: Mutex<Vec<String>>,
}

impl RuleSink for FakeSink {
    fn restore(&self, text: &str) -> Result<(), SinkError> {
        self.batches.lock().push(text.to_string());
        if let Some(bad) = self.reject_containing.lock().as_deref()
            && let Some(idx) = text.lines().position(|l| l.contains(bad))
        {
            return Err(SinkError::Rejected {
                program: "fake".into(),
                line: Some(idx + 1),
                stderr: format!("fake: line {} failed", idx + 1),
            });
        }
        // Like the kernel, a failed batch changes nothing.
        let mut next = self.state.lock().clone();
        match next.apply_restore(text) {
            Ok(()) => {
                *self.state.lock() = next;
                Ok(())
            }
            Err(ParseError::Syntax { line, msg }) => {
                Err(SinkError::Rejected { program: "fake".into(), line: Some(line), stderr: msg })
            }
        }
    }

    fn save(&self) -> Result<Dump, SinkError> {
        Ok(self.state.lock().clone())
    }

    fn chain_exists(&self, table: &str, chain: &str) -> Result<bool, SinkError> {
        Ok(self.state.lock().tables.get(table).is_some_and(|t| t.chains.contains_key(chain)))
    }
}
