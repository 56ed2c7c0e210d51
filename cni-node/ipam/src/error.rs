//! Error types of the IPAM crate, one enum per concern.

use std::net::IpAddr;
use std::path::PathBuf;

/// A configuration problem; every variant names the offending field (`ipam.ranges[0][0].subnet`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A key we do not know (a typo or a feature we do not implement). CNI error code 2.
    #[error("unsupported field {field} = {value}")]
    Unsupported {
        /// Dotted path of the key.
        field: String,
        /// The value as JSON text.
        value: String,
    },
    /// A required key is absent. CNI error code 7.
    #[error("missing required field {field}")]
    Missing {
        /// Dotted path of the key.
        field: String,
    },
    /// A key has an unusable value. CNI error code 7.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Dotted path of the key.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ConfigError {
    /// Shorthand for [`ConfigError::Invalid`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid { field: field.into(), reason: reason.into() }
    }

    /// Shorthand for [`ConfigError::Missing`].
    pub fn missing(field: impl Into<String>) -> Self {
        ConfigError::Missing { field: field.into() }
    }
}

/// A failure of the on-disk (or fake) reservation store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file or directory operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What we tried (`create`, `read`, `lock`, ...).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io { op, path: path.into(), source }
    }
}

/// Why an allocation failed.
#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    /// The attachment already holds an address in this range set (host-local refuses this too).
    #[error("{ip} has been allocated to {id}, duplicate allocation is not allowed")]
    Duplicate {
        /// The address already held.
        ip: IpAddr,
        /// The container id holding it.
        id: String,
    },
    /// Every candidate of the set is taken.
    #[error("no IP addresses available in range set {field}: {set}")]
    Exhausted {
        /// Which range set, e.g. `ipam.ranges[0]`.
        field: String,
        /// The set's candidate ranges.
        set: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
