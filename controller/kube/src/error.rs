//! The crate's error type.

use std::fmt;

/// Result with this crate's [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One permission the controller needs: a verb on a resource.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Access {
    /// The verb, as RBAC spells it (`list`, `watch`, `patch`, ...).
    pub verb: &'static str,
    /// The API group; empty for the core group.
    pub group: &'static str,
    /// The plural resource name, with `/subresource` where one is meant (`ingresses/status`).
    pub resource: &'static str,
    /// The namespace; `None` means every namespace (cluster scope).
    pub namespace: Option<String>,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)?;
        if !self.group.is_empty() {
            write!(f, " (API group {})", self.group)?;
        }
        match &self.namespace {
            Some(ns) => write!(f, " in namespace {ns}"),
            None => write!(f, " in all namespaces"),
        }
    }
}

/// Errors of the Kubernetes side of the controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused one or more permissions the controller needs (missing RBAC).
    #[error("the API server denies {user} the permission to {}; grant it in the controller's ClusterRole", join(.missing))]
    Forbidden {
        /// Who we are, as the API server sees it (or `this service account` when unknown).
        user: String,
        /// Every missing permission.
        missing: Vec<Access>,
    },

    /// A call to the API server failed.
    #[error("{action} failed")]
    Api {
        /// What we were doing, for example `list ingresses`.
        action: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },

    /// The `--publish-service` value is not `namespace/name`.
    #[error("publish service {0:?} is not of the form namespace/name")]
    InvalidPublishService(String),

    /// The receiver of source events went away, so there is nobody left to feed.
    #[error("the source event receiver was dropped")]
    ReceiverGone,

    /// A metric could not be registered (a name clash in the registry).
    #[error("registering metrics failed")]
    Metrics(#[source] prometheus::Error),

    /// `watch_cluster_kinds` was asked for a kind the cluster source does not watch.
    #[error("the cluster source does not watch {0} objects")]
    UnsupportedKind(&'static str),

    /// A heartbeat setting is invalid (see `HeartbeatConfig::validate`).
    #[error("invalid heartbeat settings: {0}")]
    InvalidHeartbeat(String),
}

impl Error {
    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Forbidden { .. } => "forbidden",
            Error::Api { .. } => "api",
            Error::InvalidPublishService(_) => "invalid_publish_service",
            Error::ReceiverGone => "receiver_gone",
            Error::Metrics(_) => "metrics",
            Error::UnsupportedKind(_) => "unsupported_kind",
            Error::InvalidHeartbeat(_) => "invalid_heartbeat",
        }
    }

    pub(crate) fn api(action: impl Into<String>, source: kube::Error) -> Self {
        Error::Api { action: action.into(), source }
    }
}

fn join(missing: &[Access]) -> String {
    let parts: Vec<String> = missing.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

/// Whether a client error is the API server answering with the given HTTP status code.
pub(crate) fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}
