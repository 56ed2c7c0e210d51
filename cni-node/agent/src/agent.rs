//! The agent's long-running tasks, each fed by the same `watch` channel of [`Desired`] state:
//!
//! ```text
//!  Index snapshots ──translate──► Desired ─┬─► rules task: bounded runner → Syncer (v4, v6) → iptables-restore
//!                                          │                              └► health-check listeners, metrics
//!                                          ├─► routes task: on change and every period → netlink
//!                                          └─► CNI task: own Node's podCIDRs → conflist + plugin binary
//! ```

use crate::cni::{CniSettings, Families, install_plugin, render_conflist, write_atomic};
use crate::conntrack::{ConntrackTool, StaleFlows};
use crate::http::{HealthEntry, HealthServers, HealthState};
use crate::metrics::Metrics;
use crate::routes::{Router, wanted_routes};
use crate::runner::Bucket;
use crate::sink::RuleSink;
use crate::sync::Syncer;
use causeway_model::{Diagnostic, NodeTable, ServiceTable, TrafficPolicy};
use causeway_rules::{Family, NodeCtx, local_ready_endpoints};
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until};
use tracing::{info, warn};

/// What the cluster wants, as of one source snapshot.
#[derive(Debug)]
pub struct Desired {
    pub services: ServiceTable,
    pub nodes: NodeTable,
    pub diagnostics: Vec<Diagnostic>,
    /// When the snapshot arrived (start of the network-programming latency).
    pub seen_at: Instant,
}

/// Settings of the rules task.
#[derive(Clone, Debug)]
pub struct RulesConfig {
    pub node_name: String,
    pub cluster_cidrs: Vec<IpNet>,
    pub masquerade_bit: u8,
    pub localhost_nodeports: bool,
    pub drop_invalid: bool,
    pub egress_masquerade: bool,
    pub random_fully: bool,
    pub min_sync_period: Duration,
    pub sync_period: Duration,
    pub full_sync_period: Duration,
    pub retry_period: Duration,
    pub health_bind: IpAddr,
    /// Deletes stale conntrack flows after each successful sync; `None` turns clean-up off.
    pub conntrack: Option<ConntrackTool>,
}

impl RulesConfig {
    fn ctx(&self, family: Family, nodes: &NodeTable) -> NodeCtx {
        let mut c = NodeCtx::new(self.node_name.clone(), family);
        c.cluster_cidrs = self.cluster_cidrs.clone();
        c.masquerade_bit = self.masquerade_bit;
        c.localhost_nodeports = self.localhost_nodeports;
        c.drop_invalid = self.drop_invalid;
        c.egress_masquerade = self.egress_masquerade;
        c.random_fully = self.random_fully;
        c.node_ips = nodes
            .nodes
            .iter()
            .find(|n| n.name == self.node_name)
            .map(|n| n.internal_ips.iter().copied().filter(|ip| family.has(*ip)).collect())
            .unwrap_or_default();
        c
    }
}

fn family_label(f: Family) -> &'static str {
    match f {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    }
}

/// The health-check entries for this node: Services with `externalTrafficPolicy: Local` and a
/// `healthCheckNodePort`, counting ready local endpoint IPs over all their ports.
pub fn health_entries(table: &ServiceTable, node: &str) -> BTreeMap<u16, HealthEntry> {
    let mut out: BTreeMap<u16, HealthEntry> = BTreeMap::new();
    for sp in &table.ports {
        let Some(port) = sp.health_check_node_port.filter(|p| *p != 0) else { continue };
        if sp.external_traffic_policy != TrafficPolicy::Local {
            continue;
        }
        let count = local_ready_endpoints(sp, node);
        let e = out.entry(port).or_insert_with(|| HealthEntry {
            namespace: sp.name.namespace.clone(),
            name: sp.name.name.clone(),
            local_endpoints: 0,
        });
        e.local_endpoints = e.local_endpoints.max(count);
    }
    out
}

/// Service rules: waits for the first snapshot, then syncs on every change (coalesced by a bounded-frequency
/// runner: burst of 2, then one per `min_sync_period`), every `sync_period`, and after a failure every
/// `retry_period` (with a full sync). Also keeps the health-check listeners in step.
pub async fn rules_task(
    cfg: RulesConfig,
    sinks: Vec<(Family, Arc<dyn RuleSink>)>,
    mut rx: watch::Receiver<Option<Arc<Desired>>>,
    metrics: Metrics,
    health: Arc<HealthState>,
    ready: Arc<AtomicBool>,
) {
    let mut syncers: Vec<(Family, Arc<dyn RuleSink>, Option<Syncer>)> =
        sinks.into_iter().map(|(f, s)| (f, s.clone(), Some(Syncer::new(s)))).collect();
    let mut servers = HealthServers::new(cfg.health_bind, health.clone());
    let now = Instant::now();
    let mut bucket = Bucket::new(cfg.min_sync_period, 2, now);
    let mut next_periodic = now + cfg.sync_period;
    let mut next_full = now + cfg.full_sync_period;
    let mut retry_at: Option<Instant> = None;
    let mut last_seen: Option<Instant> = None;
    // The Services whose rules were last applied on every family: what conntrack clean-up diffs against.
    let mut applied: Option<Arc<Desired>> = None;
    let mut pending = true;
    loop {
        if !pending {
            let far = Instant::now() + Duration::from_secs(86_400);
            let mut periodic = false;
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = sleep_until(next_periodic) => periodic = true,
                _ = sleep_until(retry_at.unwrap_or(far)), if retry_at.is_some() => {}
            }
            if periodic {
                for (family, sink, slot) in syncers.iter_mut() {
                    let Some(mut syncer) = slot.take() else { continue };
                    let (syncer, flushed) = tokio::task::spawn_blocking(move || {
                        let f = syncer.check_canary();
                        (syncer, f)
                    })
                    .await
                    .unwrap_or_else(|_| (Syncer::new(sink.clone()), true));
                    if flushed {
                        warn!(
                            message = "Our chains were flushed by someone else; resyncing in full.",
                            family = family_label(*family)
                        );
                    }
                    *slot = Some(syncer);
                }
            }
        }
        pending = false;
        let wait = bucket.wait_time(Instant::now());
        if !wait.is_zero() {
            sleep(wait).await;
        }
        let Some(desired) = rx.borrow_and_update().clone() else {
            // Not ready: nothing is programmed before the first complete snapshot (design invariant 2).
            next_periodic = Instant::now() + cfg.sync_period;
            continue;
        };
        let now = Instant::now();
        bucket.take(now);
        if now >= next_full {
            for (_, _, s) in syncers.iter_mut() {
                if let Some(s) = s.as_mut() {
                    s.request_full();
                }
            }
            next_full = now + cfg.full_sync_period;
        }
        let mut all_ok = true;
        let mut rules = 0i64;
        let mut ports = 0i64;
        let mut diags = desired.diagnostics.len() as i64;
        for (family, sink, slot) in syncers.iter_mut() {
            let Some(mut syncer) = slot.take() else { continue };
            let ctx = cfg.ctx(*family, &desired.nodes);
            let d = desired.clone();
            let started = Instant::now();
            let joined = tokio::task::spawn_blocking(move || {
                let r = syncer.sync(&d.services, &ctx);
                (syncer, r)
            })
            .await;
            let Ok((syncer, result)) = joined else {
                warn!(message = "Rule sync task failed; retrying with a full sync.");
                *slot = Some(Syncer::new(sink.clone()));
                all_ok = false;
                continue;
            };
            *slot = Some(syncer);
            let fam = family_label(*family);
            match result {
                Ok(report) => {
                    let secs = started.elapsed().as_secs_f64();
                    metrics.sync_duration.with_label_values(&[report.kind.as_str(), fam]).observe(secs);
                    metrics.syncs.with_label_values(&[report.kind.as_str(), fam]).inc();
                    rules += report.service_rules as i64;
                    ports += report.service_ports as i64;
                    diags += report.diagnostics.len() as i64;
                    for d in &report.diagnostics {
                        warn!(message = "Service port skipped.", diagnostic = %d);
                    }
                    if report.rules_written > 0 || report.services_written > 0 {
                        info!(
                            message = "Rules applied.",
                            kind = report.kind.as_str(),
                            family = fam,
                            rules = report.rules_written,
                            services = report.services_written,
                            seconds = secs
                        );
                    }
                    if last_seen != Some(desired.seen_at) {
                        metrics
                            .programming_latency
                            .with_label_values(&[fam])
                            .observe(desired.seen_at.elapsed().as_secs_f64());
                    }
                }
                Err(error) => {
                    all_ok = false;
                    metrics.sync_failures.with_label_values(&[error.metric_label(), fam]).inc();
                    warn!(message = "Failed to apply rules; previous rules stay, next sync is full.", %error, family = fam);
                }
            }
        }
        last_seen = Some(desired.seen_at);
        health.proxy_healthy.store(all_ok, Ordering::Relaxed);
        if all_ok {
            ready.store(true, Ordering::Relaxed);
            retry_at = None;
            metrics.iptables_rules.set(rules);
            metrics.service_ports.set(ports);
            metrics.diagnostics.set(diags);
            let unix = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
            metrics.last_sync_timestamp.set(unix as i64);
            // Only once the rules are in place: a flow deleted earlier would be recreated by its next packet
            // exactly as before.
            // A periodic resync of the same snapshot changes nothing: no need to diff the whole table again.
            let same_snapshot = applied.as_ref().is_some_and(|a| Arc::ptr_eq(a, &desired));
            if let Some(tool) = cfg.conntrack.clone().filter(|_| !same_snapshot) {
                let stale = StaleFlows::between(applied.as_ref().map(|d| &d.services), &desired.services);
                if !stale.is_empty() {
                    match tokio::task::spawn_blocking(move || tool.clean(&stale)).await {
                        Ok(Ok(0)) => {}
                        Ok(Ok(n)) => {
                            metrics.conntrack_deleted.inc_by(n as u64);
                            info!(message = "Stale conntrack flows deleted.", flows = n);
                        }
                        Ok(Err(error)) => {
                            metrics.conntrack_failures.inc();
                            warn!(message = "Conntrack clean-up failed; stale flows may linger.", %error);
                        }
                        Err(_) => metrics.conntrack_failures.inc(),
                    }
                }
            }
            applied = Some(desired.clone());
        } else {
            retry_at = Some(Instant::now() + cfg.retry_period);
        }
        for (port, error) in servers.update(health_entries(&desired.services, &cfg.node_name)).await {
            warn!(message = "Cannot open health-check node port.", port, %error);
        }
        next_periodic = Instant::now() + cfg.sync_period;
    }
}

/// Routes to other nodes: reconciled on every change and every `period` (which also repairs routes deleted by
/// hand).
pub async fn routes_task(
    node_name: String,
    period: Duration,
    mut rx: watch::Receiver<Option<Arc<Desired>>>,
    metrics: Metrics,
) {
    let router = match Router::connect() {
        Ok(r) => r,
        Err(error) => {
            warn!(message = "No netlink: routes to other nodes are not managed.", %error);
            metrics.route_failures.with_label_values(&["connect"]).inc();
            return;
        }
    };
    let mut last_diags = 0usize;
    loop {
        let desired = rx.borrow_and_update().clone();
        if let Some(d) = desired {
            let (wanted, diags) = wanted_routes(&d.nodes, &node_name);
            if diags.len() != last_diags {
                for diag in &diags {
                    warn!(message = "Node skipped for routing.", diagnostic = %diag);
                }
                last_diags = diags.len();
            }
            match router.reconcile(&wanted).await {
                Ok((count, ops)) => {
                    metrics.routes.set(count as i64);
                    if !ops.is_empty() {
                        info!(message = "Routes reconciled.", changes = ops.len(), routes = count);
                    }
                }
                Err(error) => {
                    metrics.route_failures.with_label_values(&["netlink"]).inc();
                    warn!(message = "Route reconcile failed.", %error);
                }
            }
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = sleep(period) => {}
        }
    }
}

/// Where the CNI files go.
#[derive(Clone, Debug)]
pub struct CniTarget {
    pub conf_dir: PathBuf,
    pub conf_name: String,
    pub bin_dir: PathBuf,
    /// The `causeway-cni` binary to install; `None` skips installing.
    pub plugin_src: Option<PathBuf>,
    pub settings: CniSettings,
}

/// Installs the plugin once, then writes the conflist whenever this Node's pod CIDRs change.
pub async fn cni_task(node_name: String, target: CniTarget, mut rx: watch::Receiver<Option<Arc<Desired>>>) {
    if let Some(src) = &target.plugin_src {
        match install_plugin(src, &target.bin_dir) {
            Ok(changed) => info!(message = "CNI plugin installed.", changed, dir = %target.bin_dir.display()),
            Err(error) => warn!(message = "Cannot install the CNI plugin.", %error, src = %src.display()),
        }
    }
    let mut warned = false;
    loop {
        let desired = rx.borrow_and_update().clone();
        if let Some(d) = desired {
            let cidrs = pod_cidrs_of(&d, &node_name);
            if cidrs.is_empty() {
                if !warned {
                    warn!(message = "This Node has no pod CIDR yet; no CNI config written.", node = %node_name);
                    warned = true;
                }
            } else {
                let text = render_conflist(&target.settings, &cidrs);
                match write_atomic(&target.conf_dir, &target.conf_name, text.as_bytes(), 0o644) {
                    Ok(true) => {
                        info!(message = "CNI config written.", file = %target.conf_dir.join(&target.conf_name).display())
                    }
                    Ok(false) => {}
                    Err(error) => warn!(message = "Cannot write the CNI config.", %error),
                }
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// The pod CIDRs of the Node named `node_name` (empty when it is unknown or has none).
fn pod_cidrs_of(desired: &Desired, node_name: &str) -> Vec<IpNet> {
    desired
        .nodes
        .nodes
        .iter()
        .find(|n| n.name == node_name)
        .map(|n| n.pod_cidrs.iter().filter_map(|c| c.parse().ok()).collect())
        .unwrap_or_default()
}

/// Keeps `causeway_node_ipam_addresses` current: `allocated` counts the address files in the IPAM store of this
/// node's network (the host-local layout: one file per reserved address), `capacity` the usable addresses of the
/// Node's pod CIDRs. Updated when the Node changes and every `period`.
pub async fn ipam_usage_task(
    node_name: String,
    store_dir: std::path::PathBuf,
    metrics: crate::metrics::Metrics,
    mut rx: watch::Receiver<Option<Arc<Desired>>>,
    period: std::time::Duration,
) {
    let mut cidrs: Vec<IpNet> = Vec::new();
    loop {
        if let Some(d) = rx.borrow_and_update().clone() {
            cidrs = pod_cidrs_of(&d, &node_name);
        }
        let allocated = count_allocated(&store_dir);
        metrics.ipam_addresses.with_label_values(&["allocated"]).set(i64::try_from(allocated).unwrap_or(i64::MAX));
        metrics.ipam_addresses.with_label_values(&["capacity"]).set(ipam_capacity(&cidrs));
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(period) => {}
        }
    }
}

/// Address files in a host-local store directory (names that parse as IP addresses; the lock and
/// `last_reserved_ip.*` files are not addresses). A missing directory holds none.
pub fn count_allocated(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.parse::<std::net::IpAddr>().is_ok()))
        .count()
}

/// Usable pod addresses of `cidrs`: all of each range but the network address, the broadcast address (IPv4) and
/// the gateway (the bridge's address), as host-local hands them out. Saturates at `i64::MAX`.
pub fn ipam_capacity(cidrs: &[IpNet]) -> i64 {
    let mut total: i64 = 0;
    for net in cidrs {
        let host_bits = u32::from(net.max_prefix_len() - net.prefix_len());
        if host_bits >= 63 {
            return i64::MAX;
        }
        let size: i64 = 1i64 << host_bits;
        let reserved = match net {
            IpNet::V4(_) => 3, // network, broadcast, gateway
            IpNet::V6(_) => 2, // network (subnet-router anycast), gateway
        };
        total = total.saturating_add((size - reserved).max(0));
    }
    total
}

/// The families the agent programs, from the cluster CIDRs.
pub fn families(cluster_cidrs: &[IpNet]) -> Families {
    Families::of(cluster_cidrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipam_capacity_counts_usable_pod_addresses() {
        let nets = |v: &[&str]| v.iter().map(|s| s.parse::<IpNet>().unwrap()).collect::<Vec<_>>();
        assert_eq!(ipam_capacity(&nets(&["10.244.1.0/24"])), 253);
        assert_eq!(ipam_capacity(&nets(&["10.244.1.0/24", "fd00:10:244:1::/120"])), 253 + 254);
        assert_eq!(ipam_capacity(&nets(&["10.244.1.0/31"])), 0);
        assert_eq!(ipam_capacity(&nets(&["fd00::/64"])), i64::MAX);
        assert_eq!(ipam_capacity(&[]), 0);
    }

    #[test]
    fn allocated_counts_only_address_files() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["10.244.1.2", "10.244.1.3", "fd00::5", "lock", "last_reserved_ip.0"] {
            std::fs::write(dir.path().join(name), "id\r\neth0").unwrap();
        }
        assert_eq!(count_allocated(dir.path()), 3);
        assert_eq!(count_allocated(&dir.path().join("missing")), 0);
    }
    use causeway_model::{EndpointInfo, Protocol, ServicePort, ServicePortName};

    #[test]
    fn health_entries_count_ready_local_ips() {
        let ep = |ip: &str, node: &str, ready: bool| EndpointInfo {
            ready,
            terminating: !ready,
            ..EndpointInfo::ready(ip.parse().unwrap(), 80, Some(node))
        };
        let sp = ServicePort {
            node_port: Some(30000),
            external_traffic_policy: TrafficPolicy::Local,
            health_check_node_port: Some(32000),
            endpoints: vec![
                ep("10.244.0.5", "me", true),
                ep("10.244.0.6", "me", false),
                ep("10.244.1.5", "other", true),
            ],
            ..ServicePort::new(ServicePortName::new("d", "lb", "", Protocol::Tcp), "10.96.0.1".parse().unwrap(), 80)
        };
        let mut cluster = sp.clone();
        cluster.external_traffic_policy = TrafficPolicy::Cluster;
        cluster.health_check_node_port = Some(32001);
        let e = health_entries(&ServiceTable { ports: vec![sp, cluster] }, "me");
        assert_eq!(e.len(), 1);
        assert_eq!(e[&32000].local_endpoints, 1);
    }
}
