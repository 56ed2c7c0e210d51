//! The harness's one error type: every variant says what was being done, so a failed check reads as a sentence.

use std::time::Duration;

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while building the cluster or running a check.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The suite needs root (network namespaces, iptables inside them).
    #[error(
        "the netns cluster tests create network namespaces and need root (CAP_NET_ADMIN); run `sudo ./tests/run.sh`"
    )]
    NotRoot,
    /// A binary under test is missing.
    #[error(
        "binary `{name}` not found in {dir} (the test looks there, or in $CAUSEWAY_BIN_DIR); \
         build it first: `cargo build -p {package}`"
    )]
    MissingBinary {
        /// Binary name.
        name: String,
        /// Package that builds it.
        package: String,
        /// Directory searched.
        dir: String,
    },
    /// A command could not be started or exited non-zero.
    #[error("`{cmd}` failed ({status}): {output}")]
    Command {
        /// The command line.
        cmd: String,
        /// Exit status or spawn error.
        status: String,
        /// stderr (and stdout when useful), trimmed.
        output: String,
    },
    /// A file or directory operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A condition did not become true in time.
    #[error("timed out after {waited:?} waiting for {what}; last observation: {last}")]
    Timeout {
        /// The condition.
        what: String,
        /// How long we waited.
        waited: Duration,
        /// The last thing seen (an error, a reply).
        last: String,
    },
    /// A CNI call failed or returned something a runtime would reject.
    #[error("CNI {command} for {container}: {msg}")]
    Cni {
        /// ADD or DEL.
        command: String,
        /// Container id.
        container: String,
        /// Why.
        msg: String,
    },
    /// A check observed the wrong behaviour.
    #[error("{0}")]
    Check(String),
}

impl Error {
    /// A failed check, from anything printable.
    pub fn check(msg: impl Into<String>) -> Self {
        Self::Check(msg.into())
    }

    /// An I/O error with context.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io { what: what.into(), source }
    }
}

/// Fails a check with a formatted message: `ensure!(cond, "peer was {peer}")`.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err($crate::Error::check(format!($($arg)+)));
        }
    };
}
