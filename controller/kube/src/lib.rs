//! The controller's Kubernetes API side: watchers that feed the same source events as the manifests
//! directory, leader election on a Lease, the Ingress status writer, diagnostics as Events, and the metrics
//! of all of these.
//!
//! ```text
//!  kube-apiserver ──watch──► watch_cluster ──SourceEvent──► (caller) Index ──► tables, diagnostics, owned set
//!        ▲                                                                        │            │
//!        │ Lease          spawn_elector / run_leader_election ──is_leader─┐        │            │
//!        ├──────────────────────────────────────────────────────────────┤        ▼            ▼
//!        │ Events                                  run_event_writer ◄────┤   diagnostics    owned Ingresses
//!        └ ingresses/status                        run_status_writer ◄───┘        (watch channels)
//! ```
//!
//! What it deliberately does not do: it holds no index and translates nothing (that is `causeway-translate`,
//! one code path for every source); it never writes anything but Lease, Event and Ingress status; and it does
//! not decide which Ingresses are ours (the caller passes the set the translation computed).
//!
//! Start-up: [`check_access`] with the `required_access()` of each part turns missing RBAC into one clear
//! [`Error::Forbidden`] naming every verb and resource, instead of watchers retrying a 403 forever.
#![forbid(unsafe_code)]

mod access;
mod error;
mod events;
mod feed;
mod lease;
mod metrics;
mod status;
mod watch;

pub use access::check_access;
pub use error::{Access, Error, Result};
pub use events::{required_access as event_required_access, run_event_writer};
pub use feed::{CLUSTER_SOURCE, watch_cluster};
pub use lease::{LeaderHandle, LeaseConfig, run_leader_election, spawn_elector};
pub use metrics::KubeMetrics;
pub use status::{
    Address, OwnedIngresses, Publish, ingress_addresses, ingresses_with_routes, run_status_writer, service_addresses,
};
pub use watch::{TLS_SECRET_SELECTOR, WATCHED_KINDS, required_access as watch_required_access};
