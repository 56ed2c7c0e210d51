//! The leader's status writers (feature `kube`): `services/status` from [`crate::status_updates`], and
//! `ippools/status` (total and used addresses) from [`crate::pool_counts`], both as merge patches.

use crate::{PoolCounts, ServiceKey};
use k8s_openapi::api::core::v1::{LoadBalancerStatus, Service};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The status writes to make, as [`crate::status_updates`] returns them.
pub type StatusUpdates = Arc<Vec<(ServiceKey, LoadBalancerStatus)>>;

/// What one [`write_statuses`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// Services whose status was patched.
    pub written: Vec<ServiceKey>,
    /// Services that no longer exist (404): nothing to do.
    pub gone: Vec<ServiceKey>,
    /// Failed writes and why; the caller retries them.
    pub failed: Vec<(ServiceKey, String)>,
}

/// The merge patch that sets `status.loadBalancer.ingress` to `status`'s entries, or removes it (`null`) when
/// there are none (an empty object would leave the old entries in place under JSON merge patch).
pub fn status_patch(status: &LoadBalancerStatus) -> serde_json::Value {
    let ingress = match &status.ingress {
        Some(list) if !list.is_empty() => serde_json::to_value(list).unwrap_or(serde_json::Value::Null),
        _ => serde_json::Value::Null,
    };
    serde_json::json!({ "status": { "loadBalancer": { "ingress": ingress } } })
}

/// Patch each Service's `status.loadBalancer` (subresource `services/status`, verb `patch`).
pub async fn write_statuses(client: &kube::Client, updates: &[(ServiceKey, LoadBalancerStatus)]) -> WriteReport {
    let mut report = WriteReport::default();
    for (key, status) in updates {
        let api: Api<Service> = Api::namespaced(client.clone(), &key.namespace);
        let patch = status_patch(status);
        match api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => report.written.push(key.clone()),
            Err(kube::Error::Api(s)) if s.code == 404 => report.gone.push(key.clone()),
            Err(e) => report.failed.push((key.clone(), e.to_string())),
        }
    }
    report
}

/// Write the latest updates while `is_leader` is true, until either channel closes.
///
/// A write is not repeated while the same status is still pending (the watch has not brought the Service
/// back yet); once an update leaves the list (the status arrived), a later reappearance is written again. Failed
/// writes are retried every `retry`.
pub async fn run_status_writer(
    client: kube::Client,
    mut is_leader: watch::Receiver<bool>,
    mut updates: watch::Receiver<StatusUpdates>,
    retry: Duration,
) {
    let mut in_flight: BTreeMap<ServiceKey, LoadBalancerStatus> = BTreeMap::new();
    loop {
        let leading = *is_leader.borrow_and_update();
        let current = updates.borrow_and_update().clone();
        in_flight.retain(|k, v| current.iter().any(|(ck, cv)| ck == k && cv == v));
        let mut failed = false;
        if leading {
            let todo: Vec<(ServiceKey, LoadBalancerStatus)> =
                current.iter().filter(|(k, v)| in_flight.get(k) != Some(v)).cloned().collect();
            if !todo.is_empty() {
                let report = write_statuses(&client, &todo).await;
                for (key, status) in &todo {
                    if report.written.contains(key) {
                        in_flight.insert(key.clone(), status.clone());
                    }
                }
                for (key, error) in &report.failed {
                    tracing::warn!(
                        message = "Failed to write a Service's load-balancer status.",
                        %error,
                        namespace = %key.namespace,
                        name = %key.name
                    );
                }
                failed = !report.failed.is_empty();
            }
        }
        tokio::select! {
            r = is_leader.changed() => if r.is_err() { return },
            r = updates.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(retry), if failed => {}
        }
    }
}

/// Each pool's counts, as [`crate::pool_counts`] returns them.
pub type PoolStatuses = Arc<BTreeMap<String, PoolCounts>>;

/// The merge patch of an IPPool's status counts (conditions, if any, are left alone).
pub fn pool_status_patch(counts: PoolCounts) -> serde_json::Value {
    serde_json::json!({ "status": { "total": counts.total, "used": counts.used } })
}

/// Keep each IPPool's `status.total` and `status.used` current while `is_leader` is true, until either channel
/// closes. A pool's counts are written once per leadership term and then only when they change; a pool deleted
/// meanwhile (404) is skipped; failed writes are retried every `retry`.
pub async fn run_pool_status_writer(
    client: kube::Client,
    mut is_leader: watch::Receiver<bool>,
    mut updates: watch::Receiver<PoolStatuses>,
    retry: Duration,
) {
    let api: Api<DynamicObject> = Api::all_with(client, &causeway_kube::ip_pool_resource());
    let mut written: BTreeMap<String, PoolCounts> = BTreeMap::new();
    loop {
        let leading = *is_leader.borrow_and_update();
        let current = updates.borrow_and_update().clone();
        let mut failed = false;
        if leading {
            let todo: Vec<(String, PoolCounts)> =
                current.iter().filter(|(n, c)| written.get(*n) != Some(*c)).map(|(n, c)| (n.clone(), *c)).collect();
            for (name, counts) in todo {
                match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&pool_status_patch(counts))).await
                {
                    Ok(_) => {
                        written.insert(name, counts);
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 => {
                        written.insert(name, counts);
                    }
                    Err(error) => {
                        failed = true;
                        tracing::warn!(message = "Failed to write an IPPool's status.", %error, pool = %name);
                    }
                }
            }
        } else {
            // The next term starts from what the cluster holds, which another leader may have changed.
            written.clear();
        }
        written.retain(|name, _| current.contains_key(name));
        tokio::select! {
            r = is_leader.changed() => if r.is_err() { return },
            r = updates.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(retry), if failed => {}
        }
    }
}

#[cfg(test)]
mod tests;
