//! LoadBalancer addresses on this node (issue 7 items 3–4): from each index snapshot, `causeway_lb::plan` names
//! the addresses this node owns (a stateless hash over the eligible nodes); the [`AnnounceWorker`] adds them to
//! the `--lb-interface` and sends gratuitous ARP, and removes the ones another node took.
//!
//! ```text
//!  Index ──plan(index, node)──► my_addresses ──► AnnounceWorker::set (own thread: netlink + GARP, resync)
//!                         └───► assignments ──► with_assigned_status (manifests mode) ──► service_table
//! ```
//!
//! In a cluster the leader writes `status.loadBalancer` and the watch brings it back, so the chains come from
//! the plain index; a manifests directory has nobody to write status, so the agent translates from the index
//! with the allocation applied (deterministic: every agent and the proxy agree).
//!
//! **Failover** (cluster mode): every agent renews its node's heartbeat Lease and watches all of them
//! ([`start_heartbeat`], `causeway_kube::heartbeat`); [`Liveness`] turns what it saw into
//! `PlanOptions::alive_nodes` (Ready nodes minus those whose Lease is released or expired; a node without a
//! Lease is judged by readiness alone) and wakes the planner when that set changes, on a Lease event or on the
//! timer of the next expiry. A killed agent's addresses move within about one lease duration; a stopped agent
//! withdraws its addresses and releases its Lease, so they move at once. A manifests directory has no Leases:
//! readiness alone, as before.

use crate::metrics::Metrics;
use causeway_announce::AnnounceWorker;
use causeway_kube::heartbeat::{
    HeartbeatConfig, HeartbeatHandle, HeartbeatMetrics, NODE_COMPONENT, Observations, PROXY_COMPONENT, Verdict, judge,
    spawn_heartbeat, watch_heartbeats,
};
use causeway_lb::{LbPlan, PlanOptions};
use causeway_translate::Index;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;
use tracing::{error, info, warn};

/// What changed in this node's set of owned addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnershipChange {
    pub acquired: Vec<IpAddr>,
    pub released: Vec<IpAddr>,
}

/// The difference between two owned sets.
pub fn ownership_change(before: &BTreeSet<IpAddr>, after: &BTreeSet<IpAddr>) -> OwnershipChange {
    OwnershipChange {
        acquired: after.difference(before).copied().collect(),
        released: before.difference(after).copied().collect(),
    }
}

/// The agent's announcement state: the worker (when `--lb-interface` is given) and the last owned set.
pub struct Announcement {
    worker: Option<AnnounceWorker>,
    owned: Option<BTreeSet<IpAddr>>,
    errors_seen: u64,
}

impl Announcement {
    /// `worker: None` computes ownership (metrics, logs) without touching any interface.
    pub fn new(worker: Option<AnnounceWorker>) -> Self {
        Self { worker, owned: None, errors_seen: 0 }
    }

    /// Hands this node's addresses of `plan` to the worker; logs and counts ownership changes.
    pub fn apply(&mut self, plan: &LbPlan, metrics: &Metrics) {
        let mine = plan.my_addresses.clone();
        if let Some(w) = &self.worker {
            w.set(mine.clone());
        }
        let change = ownership_change(self.owned.as_ref().unwrap_or(&BTreeSet::new()), &mine);
        for ip in &change.acquired {
            info!(message = "LoadBalancer address owned by this node.", address = %ip, announced = self.worker.is_some());
        }
        for ip in &change.released {
            info!(message = "LoadBalancer address no longer owned by this node.", address = %ip);
        }
        metrics.lb_ownership_changes.with_label_values(&["acquired"]).inc_by(change.acquired.len() as u64);
        metrics.lb_ownership_changes.with_label_values(&["released"]).inc_by(change.released.len() as u64);
        metrics.lb_addresses_owned.set(mine.len() as i64);
        self.owned = Some(mine);
    }

    /// Takes the worker out (to stop it, withdrawing the addresses); later plans only update the metrics.
    pub fn take_worker(&mut self) -> Option<AnnounceWorker> {
        self.worker.take()
    }

    /// Reports the worker's new errors (a failed netlink request or gratuitous ARP) and counts them.
    pub fn check_worker(&mut self, metrics: &Metrics) {
        let Some(w) = &self.worker else { return };
        let stats = w.stats();
        if stats.errors > self.errors_seen {
            metrics.lb_announce_failures.inc_by(stats.errors - self.errors_seen);
            warn!(
                message = "Announcing LoadBalancer addresses failed; retrying.",
                error = stats.last_error.as_deref().unwrap_or("(recovered)")
            );
            self.errors_seen = stats.errors;
        }
    }
}

/// Which nodes may announce: from the heartbeat Leases, or from Node readiness alone.
pub struct Liveness {
    heartbeats: Option<watch::Receiver<Arc<Observations>>>,
    verdict: Verdict,
}

impl Liveness {
    /// Readiness alone (manifests mode, or `--no-heartbeat`): [`Self::changed`] never returns.
    pub fn readiness_only() -> Self {
        Self { heartbeats: None, verdict: Verdict::default() }
    }

    /// Judged from the observations of [`watch_heartbeats`].
    pub fn from_heartbeats(heartbeats: watch::Receiver<Arc<Observations>>) -> Self {
        Self { heartbeats: Some(heartbeats), verdict: Verdict::default() }
    }

    /// The heartbeats (keys `<component>/<node>`) judged dead at the last judgement.
    pub fn dead(&self) -> &BTreeSet<String> {
        &self.verdict.dead
    }

    /// The plan options for `index`: every Node of the index but those whose agent heartbeat is released or
    /// expired (the planner intersects them with the Ready nodes); and, once any proxy heartbeats, the nodes with
    /// a live proxy (for `causeway.dev/proxy` Services).
    pub fn plan_options(&self, index: &Index) -> PlanOptions {
        match self.heartbeats {
            None => PlanOptions::default(),
            Some(_) => {
                let names = index.nodes().filter_map(|n| n.metadata.name.as_deref());
                PlanOptions {
                    alive_nodes: Some(self.verdict.alive_among(NODE_COMPONENT, names)),
                    proxy_nodes: proxy_nodes(&self.verdict),
                }
            }
        }
    }

    /// Waits until the set of dead nodes changes, judging again at every heartbeat event and at the next expiry
    /// (so a Lease that simply stops changing is noticed without any event). Cancel-safe.
    pub async fn changed(&mut self, metrics: &Metrics) {
        loop {
            let Some(rx) = self.heartbeats.as_mut() else {
                return std::future::pending().await;
            };
            let recheck = self.verdict.recheck_at.map(tokio::time::Instant::from_std);
            tokio::select! {
                event = rx.changed() => {
                    if event.is_err() {
                        error!(message = "The heartbeat watch ended; keeping the last judgement of live nodes.");
                        self.heartbeats = None;
                        continue;
                    }
                }
                () = sleep_until_some(recheck) => {}
            }
            let observations = rx.borrow_and_update().clone();
            let verdict = judge(&observations, Instant::now());
            metrics.heartbeat_live_nodes.set(verdict.live_nodes(NODE_COMPONENT).len() as i64);
            metrics.heartbeat_dead_nodes.set(verdict.dead_nodes(NODE_COMPONENT).len() as i64);
            metrics.heartbeat_view_fresh.set(i64::from(verdict.fresh));
            if verdict.fresh != self.verdict.fresh && observations.synced_at.is_some() {
                if verdict.fresh {
                    info!(message = "Heartbeat view current again.");
                } else {
                    warn!(
                        message = "Own heartbeat not seen through the watch for half its duration; no node is \
                                     judged dead until it is."
                    );
                }
            }
            let changed = verdict.dead != self.verdict.dead || proxy_nodes(&verdict) != proxy_nodes(&self.verdict);
            if changed {
                let died: Vec<&String> = verdict.dead.difference(&self.verdict.dead).collect();
                let back: Vec<&String> = self.verdict.dead.difference(&verdict.dead).collect();
                let proxies = proxy_nodes(&verdict);
                info!(message = "Heartbeats changed which nodes are alive.", ?died, ?back, ?proxies);
            }
            self.verdict = verdict;
            if changed {
                return;
            }
        }
    }
}

/// The nodes with a live proxy heartbeat, once any proxy heartbeats at all.
fn proxy_nodes(verdict: &Verdict) -> Option<BTreeSet<String>> {
    verdict.knows(PROXY_COMPONENT).then(|| verdict.live_nodes(PROXY_COMPONENT))
}

async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Starts this node's heartbeat: checks the permissions (one clear error naming what is missing), starts
/// renewing the Lease and watching every node's. Returns the handle (release it on a graceful stop) and the
/// [`Liveness`] for the planner.
pub async fn start_heartbeat(
    client: kube::Client,
    config: HeartbeatConfig,
    registry: &prometheus::Registry,
) -> Result<(HeartbeatHandle, Liveness), causeway_kube::Error> {
    config.validate()?;
    causeway_kube::check_access(&client, &config.required_access()).await?;
    let metrics = HeartbeatMetrics::register(registry)?;
    let components = [config.component.as_str(), PROXY_COMPONENT];
    let observations = watch_heartbeats(client.clone(), &config.namespace, &components, Some(config.own()));
    info!(
        message = "Heartbeat on.",
        lease = %config.lease_name(),
        namespace = %config.namespace,
        renew_interval = ?config.renew_interval,
        lease_duration = ?config.lease_duration
    );
    let handle = spawn_heartbeat(client, config, metrics);
    Ok((handle, Liveness::from_heartbeats(observations)))
}

/// Plans the LoadBalancer addresses for `node` with the nodes `liveness` allows and hands them to the
/// announcement.
pub fn plan_and_announce(
    index: &Index,
    node: &str,
    liveness: &Liveness,
    announcement: &parking_lot::Mutex<Announcement>,
    metrics: &Metrics,
) -> LbPlan {
    let plan = causeway_lb::plan_with(index, node, &liveness.plan_options(index));
    announcement.lock().apply(&plan, metrics);
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_change_lists_both_directions() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let a: BTreeSet<IpAddr> = [ip("172.18.255.200"), ip("172.18.255.201")].into();
        let b: BTreeSet<IpAddr> = [ip("172.18.255.201"), ip("172.18.255.202")].into();
        let c = ownership_change(&a, &b);
        assert_eq!(c.acquired, vec![ip("172.18.255.202")]);
        assert_eq!(c.released, vec![ip("172.18.255.200")]);
        assert_eq!(ownership_change(&a, &a), OwnershipChange::default());
    }

    fn record(holder: Option<&str>, renew: &str, ms: u64) -> causeway_kube::heartbeat::HeartbeatRecord {
        causeway_kube::heartbeat::HeartbeatRecord {
            holder: holder.map(str::to_owned),
            renew_time: Some(renew.to_owned()),
            duration: std::time::Duration::from_millis(ms),
        }
    }

    #[tokio::test]
    async fn an_expiry_without_any_event_wakes_the_planner() {
        let metrics = Metrics::new().unwrap();
        let start = Instant::now();
        let mut seen = Observations::new(None);
        seen.relist(
            [("node/a".into(), record(Some("a"), "r1", 300)), ("node/b".into(), record(Some("b"), "r1", 60_000))],
            start,
        );
        let (tx, rx) = watch::channel(Arc::new(Observations::new(None)));
        let mut liveness = Liveness::from_heartbeats(rx);
        tx.send_replace(Arc::new(seen));
        // One event only (the list); `a` then simply stops changing.
        tokio::time::timeout(std::time::Duration::from_secs(10), liveness.changed(&metrics))
            .await
            .expect("the expiry of a's Lease woke the planner");
        let took = start.elapsed();
        assert!(took >= std::time::Duration::from_millis(300), "woke after {took:?}, before the expiry");
        assert_eq!(liveness.dead(), &BTreeSet::from(["node/a".to_owned()]));
        assert_eq!(metrics.heartbeat_live_nodes.get(), 1);
        assert_eq!(metrics.heartbeat_dead_nodes.get(), 1);
        drop(tx);
    }

    #[tokio::test]
    async fn a_released_lease_wakes_the_planner_at_once() {
        let metrics = Metrics::new().unwrap();
        let start = Instant::now();
        let mut seen = Observations::new(None);
        seen.relist([("node/a".into(), record(Some("a"), "r1", 60_000))], start);
        let (tx, rx) = watch::channel(Arc::new(seen.clone()));
        let mut liveness = Liveness::from_heartbeats(rx);
        seen.observe("node/a", record(None, "r2", 60_000), Instant::now());
        tx.send_replace(Arc::new(seen));
        tokio::time::timeout(std::time::Duration::from_secs(10), liveness.changed(&metrics))
            .await
            .expect("the release woke the planner");
        assert_eq!(liveness.dead(), &BTreeSet::from(["node/a".to_owned()]));
    }

    #[tokio::test]
    async fn readiness_only_never_wakes() {
        let metrics = Metrics::new().unwrap();
        let mut liveness = Liveness::readiness_only();
        let woke = tokio::time::timeout(std::time::Duration::from_millis(50), liveness.changed(&metrics)).await;
        assert!(woke.is_err());
        assert!(liveness.dead().is_empty());
    }
}
