//! Per-node heartbeat Leases: how the node agents learn within a second or two that another agent stopped, with
//! one Lease per node (never one per Service) and no trust in anybody's wall clock.
//!
//! ```text
//!  spawn_heartbeat ── merge patch every renew_interval ──► Lease causeway-node-<node> (namespace of the agents)
//!        │ stop: release (empty holderIdentity)                    │ label causeway.dev/heartbeat=node
//!        ▼                                                         ▼
//!  watch_heartbeats ◄── watch (label selector) ── Observations ── liveness::judge(now) ──► Verdict (dead, live)
//! ```
//!
//! - **Renewing** ([`spawn_heartbeat`]): a JSON merge patch of `spec.renewTime` (with holder, duration, labels
//!   and annotations, so a Lease edited by hand heals), one API write per interval; a create when the Lease does
//!   not exist. `spec.leaseDurationSeconds` holds whole seconds, so the exact duration also goes into the
//!   annotation [`DURATION_ANNOTATION`] (milliseconds), which observers prefer. The node's name is in
//!   `holderIdentity` and in the annotation [`NODE_ANNOTATION`] (a released Lease has no holder).
//! - **Releasing** ([`HeartbeatHandle::release`]): `holderIdentity` removed, with the `resourceVersion` of our last
//!   renewal as a precondition, so an old process stopping after its successor started cannot release the
//!   successor's heartbeat. Observers treat a released Lease as dead at once.
//! - **Observing** ([`watch_heartbeats`]): every change of a Lease record is stamped with the local monotonic time
//!   it was seen; [`judge`] turns that into live and dead nodes (see the `liveness` module for the rules,
//!   including why an observer's own heartbeat guards against judging from a stale watch).

mod liveness;

pub use liveness::{Heartbeat, HeartbeatRecord, Observations, OwnHeartbeat, Verdict, heartbeat_key, judge};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use prometheus::{IntCounterVec, Opts, Registry};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::error::{Access, Error, Result, is_status};

/// Label on every heartbeat Lease; its value is the component (`node`, `proxy`), and observers select on it.
pub const HEARTBEAT_LABEL: &str = "causeway.dev/heartbeat";
/// Annotation naming the node a heartbeat Lease belongs to (kept when the Lease is released).
pub const NODE_ANNOTATION: &str = "causeway.dev/node";
/// Annotation with the Lease's exact duration in milliseconds (`leaseDurationSeconds` holds whole seconds).
pub const DURATION_ANNOTATION: &str = "causeway.dev/lease-duration-ms";
/// The component value of the node agent's heartbeat.
pub const NODE_COMPONENT: &str = "node";
/// The component value of the proxy's heartbeat (`causeway run --node-name`).
pub const PROXY_COMPONENT: &str = "proxy";

/// Settings of one heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatConfig {
    /// Namespace of the Leases (the agents' own, `causeway-system` in the manifests).
    pub namespace: String,
    /// The node this heartbeat speaks for.
    pub node: String,
    /// Which component heartbeats ([`NODE_COMPONENT`]): the label value and part of the Lease name.
    pub component: String,
    /// How often the Lease is renewed [500 ms].
    pub renew_interval: Duration,
    /// How long the Lease stays alive without a renewal [1500 ms]; more than twice the renew interval.
    pub lease_duration: Duration,
}

impl HeartbeatConfig {
    /// A node agent's heartbeat with the default timings (500 ms renewals, 1500 ms duration).
    pub fn node(namespace: impl Into<String>, node: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            node: node.into(),
            component: NODE_COMPONENT.to_owned(),
            renew_interval: Duration::from_millis(500),
            lease_duration: Duration::from_millis(1500),
        }
    }

    /// The Lease's name: `causeway-<component>-<node>`.
    pub fn lease_name(&self) -> String {
        lease_name(&self.component, &self.node)
    }

    /// What an observer renewing this heartbeat passes to [`watch_heartbeats`].
    pub fn own(&self) -> OwnHeartbeat {
        OwnHeartbeat { key: heartbeat_key(&self.component, &self.node), lease_duration: self.lease_duration }
    }

    /// Checks the timings: a renew interval above zero and a duration more than twice as long (observers freeze
    /// their view after half a duration without seeing their own renewal, which must not happen when healthy).
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidHeartbeat(msg));
        if self.node.is_empty() {
            return bad("the node name is empty".into());
        }
        if self.renew_interval.is_zero() {
            return bad("the renew interval must be above zero".into());
        }
        if self.lease_duration <= self.renew_interval * 2 {
            return bad(format!(
                "the lease duration ({:?}) must be more than twice the renew interval ({:?})",
                self.lease_duration, self.renew_interval
            ));
        }
        Ok(())
    }

    /// The permissions renewing and observing need: get/create/patch and list/watch of Leases in the namespace.
    pub fn required_access(&self) -> Vec<Access> {
        let mut needed = self.renew_required_access();
        needed.extend(watch_required_access(&self.namespace));
        needed
    }

    /// The permissions renewing alone needs: get/create/patch of Leases in the namespace.
    pub fn renew_required_access(&self) -> Vec<Access> {
        ["get", "create", "patch"]
            .into_iter()
            .map(|verb| Access {
                verb,
                group: "coordination.k8s.io",
                resource: "leases",
                namespace: Some(self.namespace.clone()),
            })
            .collect()
    }
}

/// The heartbeat Lease name of `node` for `component`. Names that would pass the 253-character limit of object
/// names are cut and end in a hash of the whole node name, so they stay unique.
pub fn lease_name(component: &str, node: &str) -> String {
    let name = format!("causeway-{component}-{node}");
    if name.len() <= 253 {
        return name;
    }
    let hash = format!("{:016x}", fnv1a(node.as_bytes()));
    let keep = 253 - hash.len() - 1;
    let mut cut = name[..keep].trim_end_matches(['-', '.']).to_owned();
    cut.push('-');
    cut.push_str(&hash);
    cut
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// The heartbeat's metric: renewals by result.
#[derive(Clone, Debug)]
pub struct HeartbeatMetrics {
    renewals: IntCounterVec,
}

impl HeartbeatMetrics {
    /// Registers the metric in `registry`.
    pub fn register(registry: &Registry) -> Result<Self> {
        let renewals = IntCounterVec::new(
            Opts::new("causeway_kube_heartbeat_renewals_total", "Heartbeat Lease renewals by result (ok, error)."),
            &["result"],
        )
        .map_err(Error::Metrics)?;
        registry.register(Box::new(renewals.clone())).map_err(Error::Metrics)?;
        Ok(Self { renewals })
    }
}

// === Renewing ===

/// A running heartbeat. [`HeartbeatHandle::release`] stops it and releases the Lease; dropping the handle does the
/// same in the background; [`HeartbeatHandle::abort`] stops without releasing, as a crash would.
#[derive(Debug)]
pub struct HeartbeatHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl HeartbeatHandle {
    /// Stops renewing and releases the Lease (observers see the node dead at once); waits for the release.
    pub async fn release(self) {
        let _ = self.stop.send(true);
        if let Err(error) = self.task.await {
            warn!(message = "Heartbeat task failed.", %error);
        }
    }

    /// Stops renewing without releasing: observers see the node dead when the Lease expires.
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Starts renewing the heartbeat Lease of `config` (validate it first with [`HeartbeatConfig::validate`]).
pub fn spawn_heartbeat(client: Client, config: HeartbeatConfig, metrics: HeartbeatMetrics) -> HeartbeatHandle {
    let (stop_tx, stop_rx) = watch::channel(false);
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let task = tokio::spawn(renew_loop(api, config, stop_rx, metrics));
    HeartbeatHandle { stop: stop_tx, task }
}

async fn renew_loop(
    api: Api<Lease>,
    config: HeartbeatConfig,
    mut stop: watch::Receiver<bool>,
    metrics: HeartbeatMetrics,
) {
    let name = config.lease_name();
    let mut interval = tokio::time::interval(config.renew_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The resourceVersion of our last renewal: the precondition of the release.
    let mut last_version: Option<String> = None;
    let mut renewed = false;
    let mut failing = false;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            // A stop request, or the handle dropped.
            _ = stop.changed() => break,
        }
        let first = !renewed;
        let result = match tokio::time::timeout(config.lease_duration, renew(&api, &config, &name, first)).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", config.lease_duration)),
        };
        match result {
            Ok(lease) => {
                metrics.renewals.with_label_values(&["ok"]).inc();
                if failing || first {
                    info!(message = "Heartbeat Lease renewed.", lease = %name, namespace = %config.namespace);
                }
                failing = false;
                renewed = true;
                if lease.metadata.resource_version.is_some() {
                    last_version = lease.metadata.resource_version;
                }
            }
            Err(error) => {
                metrics.renewals.with_label_values(&["error"]).inc();
                if failing {
                    debug!(message = "Renewing the heartbeat Lease failed again.", lease = %name, %error);
                } else {
                    warn!(message = "Renewing the heartbeat Lease failed; other nodes will take this node's \
                                     LoadBalancer addresses if it stays so.", lease = %name, %error);
                }
                failing = true;
            }
        }
    }
    if let Some(version) = last_version {
        match tokio::time::timeout(config.lease_duration, release(&api, &name, &version)).await {
            Ok(Ok(())) => info!(message = "Released the heartbeat Lease.", lease = %name),
            Ok(Err(error)) if is_status(&error, 409) => {
                info!(message = "Heartbeat Lease renewed by a newer process; not released.", lease = %name);
            }
            Ok(Err(error)) => warn!(message = "Releasing the heartbeat Lease failed.", lease = %name, %error),
            Err(_) => warn!(message = "Releasing the heartbeat Lease timed out.", lease = %name),
        }
    }
}

fn now_micro() -> MicroTime {
    MicroTime(Timestamp::now())
}

fn duration_secs(d: Duration) -> i32 {
    i32::try_from(d.as_millis().div_ceil(1000).max(1)).unwrap_or(i32::MAX)
}

fn duration_ms(d: Duration) -> String {
    d.as_millis().to_string()
}

async fn renew(api: &Api<Lease>, config: &HeartbeatConfig, name: &str, first: bool) -> kube::Result<Lease> {
    let now = now_micro();
    let mut spec = serde_json::json!({
        "holderIdentity": config.node,
        "leaseDurationSeconds": duration_secs(config.lease_duration),
        "renewTime": now,
    });
    if first {
        spec["acquireTime"] = serde_json::json!(now);
    }
    let patch = serde_json::json!({
        "metadata": {
            "labels": {HEARTBEAT_LABEL: config.component},
            "annotations": {NODE_ANNOTATION: config.node, DURATION_ANNOTATION: duration_ms(config.lease_duration)},
        },
        "spec": spec,
    });
    match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Err(error) if is_status(&error, 404) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    namespace: Some(config.namespace.clone()),
                    labels: Some(BTreeMap::from([(HEARTBEAT_LABEL.to_owned(), config.component.clone())])),
                    annotations: Some(BTreeMap::from([
                        (NODE_ANNOTATION.to_owned(), config.node.clone()),
                        (DURATION_ANNOTATION.to_owned(), duration_ms(config.lease_duration)),
                    ])),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(config.node.clone()),
                    lease_duration_seconds: Some(duration_secs(config.lease_duration)),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    ..LeaseSpec::default()
                }),
            };
            api.create(&PostParams::default(), &lease).await
        }
        other => other,
    }
}

async fn release(api: &Api<Lease>, name: &str, version: &str) -> kube::Result<()> {
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": version},
        "spec": {"holderIdentity": null, "renewTime": now_micro()},
    });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ())
}

// === Observing ===

/// The permissions [`watch_heartbeats`] needs: list and watch of Leases in `namespace`.
pub fn watch_required_access(namespace: &str) -> Vec<Access> {
    ["list", "watch"]
        .into_iter()
        .map(|verb| Access {
            verb,
            group: "coordination.k8s.io",
            resource: "leases",
            namespace: Some(namespace.to_owned()),
        })
        .collect()
}

/// The key ([`heartbeat_key`]) and record of a heartbeat Lease; `None` when it names no component or node.
pub fn heartbeat_of(lease: &Lease) -> Option<(String, HeartbeatRecord)> {
    let component = lease.metadata.labels.as_ref()?.get(HEARTBEAT_LABEL).filter(|c| !c.is_empty())?;
    let annotations = lease.metadata.annotations.as_ref();
    let node = annotations
        .and_then(|a| a.get(NODE_ANNOTATION))
        .filter(|n| !n.is_empty())
        .cloned()
        .or_else(|| lease.metadata.name.as_deref()?.strip_prefix(&format!("causeway-{component}-")).map(str::to_owned))
        .filter(|n| !n.is_empty() && !n.contains('/'))?;
    let spec = lease.spec.as_ref();
    let precise = annotations.and_then(|a| a.get(DURATION_ANNOTATION)).and_then(|ms| ms.parse::<u64>().ok());
    let seconds = spec.and_then(|s| s.lease_duration_seconds).and_then(|s| u64::try_from(s).ok());
    // A Lease that does not say how long it is valid is not trusted at all (zero: expired when seen).
    let duration = precise.map(Duration::from_millis).or(seconds.map(Duration::from_secs)).unwrap_or_default();
    let record = HeartbeatRecord {
        holder: spec.and_then(|s| s.holder_identity.clone()).filter(|h| !h.is_empty()),
        renew_time: spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0.to_string()),
        duration,
    };
    Some((heartbeat_key(component, &node), record))
}

/// Watches the heartbeat Leases of `components` in `namespace` and publishes what was seen after every change
/// (nothing before the first complete list). `own`: the heartbeat this observer renews itself, if any (see the
/// `liveness` module). The watch restarts quickly after errors (250 ms doubling to 2 s) and runs until every
/// receiver is dropped.
pub fn watch_heartbeats(
    client: Client,
    namespace: &str,
    components: &[&str],
    own: Option<OwnHeartbeat>,
) -> watch::Receiver<Arc<Observations>> {
    let (tx, rx) = watch::channel(Arc::new(Observations::new(own.clone())));
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let selector = format!("{HEARTBEAT_LABEL} in ({})", components.join(","));
    tokio::spawn(async move {
        let mut stream = watcher::watcher(api, watcher::Config::default().labels(&selector))
            .backoff(QuickBackoff::default())
            .boxed();
        let mut observations = Observations::new(own);
        let mut listing: Option<Vec<(String, HeartbeatRecord)>> = None;
        let mut failing = false;
        loop {
            let event = tokio::select! {
                event = stream.next() => event,
                () = tx.closed() => return,
            };
            let Some(event) = event else { return };
            let now = Instant::now();
            match event {
                Ok(Event::Init) => listing = Some(Vec::new()),
                Ok(Event::InitApply(lease)) => {
                    if let Some(seen) = heartbeat_of(&lease) {
                        listing.get_or_insert_with(Vec::new).push(seen);
                    }
                }
                Ok(Event::InitDone) => {
                    observations.relist(listing.take().unwrap_or_default(), now);
                }
                Ok(Event::Apply(lease)) => {
                    if let Some((key, record)) = heartbeat_of(&lease) {
                        observations.observe(&key, record, now);
                    }
                }
                Ok(Event::Delete(lease)) => {
                    if let Some((key, _)) = heartbeat_of(&lease) {
                        observations.forget(&key);
                    }
                }
                Err(error) => {
                    if !failing {
                        warn!(message = "Watching heartbeat Leases failed; retrying.", %error);
                    }
                    failing = true;
                    continue;
                }
            }
            if failing {
                info!(message = "Watching heartbeat Leases again.");
                failing = false;
            }
            if observations.synced_at.is_some() && listing.is_none() {
                tx.send_replace(Arc::new(observations.clone()));
            }
        }
    });
    rx
}

/// Watch restart backoff for heartbeats: 250 ms doubling to 2 s (the default's 30 s would blind failover).
struct QuickBackoff {
    next: Duration,
}

impl Default for QuickBackoff {
    fn default() -> Self {
        Self { next: Duration::from_millis(250) }
    }
}

impl Iterator for QuickBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let current = self.next;
        self.next = (current * 2).min(Duration::from_secs(2));
        Some(current)
    }
}

impl kube::runtime::utils::Backoff for QuickBackoff {
    fn reset(&mut self) {
        self.next = Duration::from_millis(250);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_names_fit_and_stay_unique() {
        assert_eq!(lease_name("node", "worker-1"), "causeway-node-worker-1");
        let long_a = format!("{}a", "n".repeat(250));
        let long_b = format!("{}b", "n".repeat(250));
        let (a, b) = (lease_name("node", &long_a), lease_name("node", &long_b));
        assert!(a.len() <= 253 && b.len() <= 253, "{} {}", a.len(), b.len());
        assert_ne!(a, b);
        assert!(a.starts_with("causeway-node-nnn"));
    }

    #[test]
    fn timings_are_validated() {
        let ok = HeartbeatConfig::node("causeway-system", "a");
        assert!(ok.validate().is_ok());
        let cases = [
            (Duration::ZERO, Duration::from_secs(1), "above zero"),
            (Duration::from_millis(500), Duration::from_millis(1000), "more than twice"),
        ];
        for (renew, duration, want) in cases {
            let c = HeartbeatConfig { renew_interval: renew, lease_duration: duration, ..ok.clone() };
            let err = c.validate().expect_err("invalid timings").to_string();
            assert!(err.contains(want), "{err}");
        }
        let c = HeartbeatConfig { node: String::new(), ..ok };
        assert!(c.validate().is_err());
    }

    #[test]
    fn whole_seconds_round_up() {
        assert_eq!(duration_secs(Duration::from_millis(1500)), 2);
        assert_eq!(duration_secs(Duration::from_millis(1000)), 1);
        assert_eq!(duration_secs(Duration::from_millis(10)), 1);
    }

    fn lease(name: &str, annotations: &[(&str, &str)], spec: LeaseSpec) -> Lease {
        labelled(name, Some(NODE_COMPONENT), annotations, spec)
    }

    fn labelled(name: &str, component: Option<&str>, annotations: &[(&str, &str)], spec: LeaseSpec) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: component.map(|c| BTreeMap::from([(HEARTBEAT_LABEL.to_owned(), c.to_owned())])),
                annotations: Some(annotations.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()),
                ..ObjectMeta::default()
            },
            spec: Some(spec),
        }
    }

    #[test]
    fn heartbeat_records_from_leases() {
        let spec = |holder: Option<&str>, secs: Option<i32>| LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: secs,
            ..LeaseSpec::default()
        };
        struct Case {
            name: &'static str,
            lease: Lease,
            want: Option<(&'static str, Option<&'static str>, Duration)>,
        }
        let cases = [
            Case {
                name: "annotations win",
                lease: lease(
                    "causeway-node-x",
                    &[(NODE_ANNOTATION, "real"), (DURATION_ANNOTATION, "1500")],
                    spec(Some("real"), Some(2)),
                ),
                want: Some(("node/real", Some("real"), Duration::from_millis(1500))),
            },
            Case {
                name: "name and whole seconds without annotations",
                lease: lease("causeway-node-b", &[], spec(Some("b"), Some(3))),
                want: Some(("node/b", Some("b"), Duration::from_secs(3))),
            },
            Case {
                name: "a bad duration annotation falls back to seconds",
                lease: lease("causeway-node-b", &[(DURATION_ANNOTATION, "soon")], spec(Some("b"), Some(3))),
                want: Some(("node/b", Some("b"), Duration::from_secs(3))),
            },
            Case {
                name: "released: empty holder",
                lease: lease("causeway-node-c", &[(NODE_ANNOTATION, "c")], spec(Some(""), Some(2))),
                want: Some(("node/c", None, Duration::from_secs(2))),
            },
            Case {
                name: "no duration at all is not trusted",
                lease: lease("causeway-node-d", &[], spec(Some("d"), None)),
                want: Some(("node/d", Some("d"), Duration::ZERO)),
            },
            Case {
                name: "a proxy heartbeat, named by its Lease",
                lease: labelled("causeway-proxy-p", Some(PROXY_COMPONENT), &[], spec(Some("p"), Some(2))),
                want: Some(("proxy/p", Some("p"), Duration::from_secs(2))),
            },
            Case {
                name: "no component label",
                lease: labelled("causeway-node-x", None, &[(NODE_ANNOTATION, "x")], spec(Some("x"), Some(2))),
                want: None,
            },
            Case { name: "names no node", lease: lease("something-else", &[], spec(Some("x"), Some(2))), want: None },
        ];
        for c in cases {
            let got = heartbeat_of(&c.lease);
            let got = got.as_ref().map(|(n, r)| (n.as_str(), r.holder.as_deref(), r.duration));
            assert_eq!(got, c.want, "{}", c.name);
        }
    }

    #[test]
    fn backoff_doubles_to_two_seconds_and_resets() {
        use kube::runtime::utils::Backoff as _;
        let mut b = QuickBackoff::default();
        let first: Vec<u128> = b.by_ref().take(5).map(|d| d.as_millis()).collect();
        assert_eq!(first, [250, 500, 1000, 2000, 2000]);
        b.reset();
        assert_eq!(b.next(), Some(Duration::from_millis(250)));
    }
}
