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
//!
//! Wiring, as the `causeway` binary does it:
//!
//! ```no_run
//! use std::sync::Arc;
//! use causeway_kube::*;
//! use causeway_source::IndexFeed;
//! use causeway_translate::{TranslateConfig, route_table};
//! use tokio::sync::{mpsc, watch};
//!
//! async fn run(client: kube::Client, registry: &prometheus::Registry) -> Result<()> {
//!     let metrics = KubeMetrics::register(registry)?;
//!     let publish = Publish::Addresses(vec!["192.0.2.10".into()]);
//!     let lease = LeaseConfig::new("causeway-system", "causeway", "causeway-7d9f-abcde");
//!     let mut needed = watch_required_access();
//!     needed.extend(lease.required_access());
//!     needed.extend(publish.required_access());
//!     needed.extend(event_required_access());
//!     check_access(&client, &needed).await?; // Error::Forbidden names every missing verb and resource.
//!
//!     let (tx, rx) = mpsc::channel(1024);
//!     let (mut snapshots, _feed) = IndexFeed::spawn([CLUSTER_SOURCE], rx);
//!     tokio::spawn(watch_cluster(client.clone(), tx, metrics.clone()));
//!     let leader = spawn_elector(client.clone(), lease, metrics.clone());
//!     let (owned_tx, owned_rx) = watch::channel(None);
//!     let (diag_tx, diag_rx) = watch::channel(Arc::new(Vec::<Notice>::new()));
//!     tokio::spawn(run_status_writer(client.clone(), publish, leader.is_leader(), owned_rx, metrics.clone()));
//!     let controller = "causeway.dev/ingress-controller".to_owned();
//!     let identity = "causeway-7d9f-abcde".to_owned();
//!     tokio::spawn(run_event_writer(client, controller, identity, leader.is_leader(), diag_rx, metrics));
//!     while snapshots.changed().await.is_ok() {
//!         let Some(index) = snapshots.borrow_and_update().clone() else { continue };
//!         let table = route_table(&index, &TranslateConfig::default());
//!         owned_tx.send_replace(ingresses_with_routes(&table));
//!         diag_tx.send_replace(Arc::new(table.diagnostics.iter().cloned().map(Notice::from).collect()));
//!         // ... compile `table` and store it for the proxy.
//!     }
//!     leader.shutdown().await; // Releases the Lease so another replica takes over at once.
//!     Ok(())
//! }
//! ```
#![forbid(unsafe_code)]

mod access;
mod error;
mod events;
mod feed;
pub mod heartbeat;
mod lease;
mod metrics;
mod pool;
mod status;
mod watch;

pub use access::check_access;
pub use error::{Access, Error, Result};
pub use events::{Notice, required_access as event_required_access, run_event_writer};
pub use feed::{CLUSTER_SOURCE, watch_cluster, watch_cluster_kinds};
pub use lease::{LeaderHandle, LeaseConfig, run_leader_election, spawn_elector};
pub use metrics::KubeMetrics;
pub use pool::{IP_POOL_CRD, IP_POOL_CRD_MANIFEST, crd_missing_message, ip_pool_resource};
pub use status::{
    Address, OwnedIngresses, Publish, ingress_addresses, ingresses_with_routes, run_status_writer, service_addresses,
};
pub use watch::{
    TLS_SECRET_SELECTOR, WATCHED_KINDS, required_access as watch_required_access,
    required_access_for as watch_required_access_for,
};
