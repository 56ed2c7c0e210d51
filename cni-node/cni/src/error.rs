//! The CNI error object and its codes. This is the only place where an error becomes the spec's JSON.

use serde_json::{Value, json};

use causeway_ipam::{AllocError, ConfigError, StoreError};

use crate::netlink::NlError;
use crate::netns::NetnsError;

/// Error codes (spec §"Error", plus libcni's internal code and ours above 100).
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration (message names key and value).
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables (message names them).
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO: u32 = 5;
    /// Failed to decode content.
    pub const DECODE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN: u32 = 11;
    /// STATUS: the plugin cannot serve ADD.
    pub const NOT_AVAILABLE: u32 = 50;
    /// CHECK found that the attachment differs from its ADD result (ours).
    pub const CHECK_FAILED: u32 = 100;
    /// ADD found `CNI_IFNAME` already present in the container (ours).
    pub const IFACE_EXISTS: u32 = 101;
    /// A kernel or file operation failed (libcni's generic internal code).
    pub const INTERNAL: u32 = 999;
}

/// A CNI error: code, message, optional details.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg} (code {code})")]
pub struct CniError {
    /// Spec code.
    pub code: u32,
    /// One-line message naming the field or variable at fault.
    pub msg: String,
    /// Extra context.
    pub details: Option<String>,
}

impl CniError {
    /// An error with a code and a message.
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError { code, msg: msg.into(), details: None }
    }

    /// Add details.
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(details.into());
        self
    }

    /// The spec's error JSON, in `version` (the request's version string, or our newest).
    pub fn to_json(&self, version: &str) -> Value {
        let mut v = json!({"cniVersion": version, "code": self.code, "msg": self.msg});
        if let (Some(d), Some(obj)) = (&self.details, v.as_object_mut()) {
            obj.insert("details".into(), Value::String(d.clone()));
        }
        v
    }
}

impl From<ConfigError> for CniError {
    fn from(e: ConfigError) -> Self {
        let code = match e {
            ConfigError::Unsupported { .. } => code::UNSUPPORTED_FIELD,
            ConfigError::Missing { .. } | ConfigError::Invalid { .. } => code::INVALID_CONFIG,
        };
        CniError::new(code, e.to_string())
    }
}

impl From<StoreError> for CniError {
    fn from(e: StoreError) -> Self {
        CniError::new(code::IO, format!("ipam store: {e}"))
    }
}

impl From<AllocError> for CniError {
    fn from(e: AllocError) -> Self {
        match e {
            // Addresses free up as pods go away: the runtime should retry.
            AllocError::Exhausted { .. } => CniError::new(code::TRY_AGAIN, e.to_string()),
            AllocError::Duplicate { .. } => CniError::new(code::INTERNAL, format!("ipam: {e}")),
            AllocError::Store(s) => s.into(),
        }
    }
}

impl From<NlError> for CniError {
    fn from(e: NlError) -> Self {
        CniError::new(code::INTERNAL, e.to_string())
    }
}

impl From<NetnsError> for CniError {
    fn from(e: NetnsError) -> Self {
        match e {
            NetnsError::NotFound { .. } => CniError::new(code::UNKNOWN_CONTAINER, format!("CNI_NETNS: {e}")),
            NetnsError::Invalid { .. } => CniError::new(code::INVALID_ENV, format!("CNI_NETNS: {e}")),
            NetnsError::Io { .. } => CniError::new(code::IO, format!("CNI_NETNS: {e}")),
        }
    }
}
