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

use crate::metrics::Metrics;
use causeway_announce::AnnounceWorker;
use causeway_lb::LbPlan;
use std::collections::BTreeSet;
use std::net::IpAddr;
use tracing::{info, warn};

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
}
