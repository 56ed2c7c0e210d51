//! LoadBalancer Services on bare metal: address pools, allocation, and which node announces each address.
//!
//! ```text
//!  Index ─ip_pools()──► validate_pools ──► [Pool] ─┐
//!        ─services()──► lb_service ──► [LbService] ┴► allocate ──► Allocation (assignments, pending, usage)
//!        ─nodes(), endpoint slices ──► eligible nodes per address ──► owner_node (rendezvous hash)
//!                                          plan(&Index, node) = all of the above ──► LbPlan { my_addresses, … }
//! ```
//!
//! - [`validate_pools`]: IPPool objects (`causeway.dev/v1alpha1`) to [`Pool`]s; malformed blocks and overlaps
//!   between pools become diagnostics naming both objects, and the bad block is left out.
//! - [`allocate`]: deterministic, stable allocation (see its rules). Deterministic means **manifests mode needs
//!   no status writes**: every component computing the allocation from the same directory gets the same answer.
//! - [`owner_node`]: the node that announces an address, by highest-random-weight hashing over the eligible
//!   nodes — no Lease per Service, and losing a node moves only that node's addresses.
//! - [`plan`]: everything at once for one node; [`status_updates`] lists the `status.loadBalancer` writes the
//!   leader must make; [`with_assigned_status`] applies them to an index copy instead, so that `service_table`
//!   (node agent chains) and `route_table` (proxy L4 listeners) pick the addresses up unchanged when nobody
//!   writes status (manifests mode).
//!
//! Which Services: type LoadBalancer with `spec.loadBalancerClass` unset, `causeway.dev/proxy` or
//! `causeway.dev/lb` ([`OUR_CLASSES`]); any other class belongs to someone else and is ignored.
//!
//! With feature `kube`, module `writer` holds the leader's `services/status` writer (merge patches of
//! `status.loadBalancer`) and its `ippools/status` writer (`total`, `used` from [`pool_counts`]); Events for the diagnostics go through the controller's Event writer like every other
//! diagnostic, with [`LbPlan::notes`] giving each its precise reason (`AllocationFailed`, `IPPoolOverlap`, ...)
//! and the other object involved.
//!
//! What it deliberately does not do: no I/O and no Kubernetes client outside the `kube` feature, no Events, no
//! announcement (that is `causeway-announce` on each node), and no dual-stack allocation yet (a Service gets one
//! address of its first IP family, or the addresses it asks for).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod addr;
mod alloc;
mod note;
mod owner;
mod pool;
mod service;
#[cfg(test)]
mod test_util;
#[cfg(feature = "kube")]
pub mod writer;

pub use addr::{AddrRange, Family};
pub use alloc::{Allocation, Assignment, PoolUsage, allocate};
pub use note::{
    EventNote, REASON_ADDRESS_CONFLICT, REASON_ADDRESS_RELEASED, REASON_ALLOCATION_FAILED, REASON_INVALID_POOL,
    REASON_POOL_OVERLAP,
};
pub use owner::{EXCLUDE_LABEL, local_endpoint_nodes, owner_node, ready_nodes, weight};
pub use pool::{Pool, Requirement, Selector, validate_pools};
pub use service::{LbService, PortKey, ServiceKey, is_ours, lb_service};

use causeway_model::Diagnostic;
use causeway_translate::{Index, KubeObject};
use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, ServiceStatus};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

/// Service annotation: the IPPool to take the address from.
pub const ADDRESS_POOL_ANNOTATION: &str = "causeway.dev/address-pool";
/// Service annotation: the address(es) wanted, comma-separated (wins over `spec.loadBalancerIP`).
pub const LOAD_BALANCER_IPS_ANNOTATION: &str = "causeway.dev/loadBalancerIPs";
/// Service annotation: Services with the same value may share an address when their ports do not collide.
pub const SHARED_IP_ANNOTATION: &str = "causeway.dev/allow-shared-ip";
/// `loadBalancerClass` naming this allocator explicitly (node agent chains, like an unset class).
pub const LB_CLASS: &str = "causeway.dev/lb";
/// The `loadBalancerClass` values (besides unset) whose Services get addresses here.
pub const OUR_CLASSES: [&str; 2] = [causeway_translate::PROXY_LOAD_BALANCER_CLASS, LB_CLASS];

/// What one node needs to know about LoadBalancer addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LbPlan {
    /// Every Service holding an address, with its addresses (status.loadBalancer.ingress to write).
    pub assignments: BTreeMap<ServiceKey, Assignment>,
    /// Services that get no address (an exhaustion or a refusal; see the diagnostics), oldest first.
    pub pending: Vec<ServiceKey>,
    /// Per pool: size and use (for IPPool status and metrics).
    pub usage: Vec<PoolUsage>,
    /// The announcing node of every assigned address (`None`: no eligible node, nobody announces it).
    pub owners: BTreeMap<IpAddr, Option<String>>,
    /// The addresses the node given to [`plan`] owns: add them to its interface and announce them.
    pub my_addresses: BTreeSet<IpAddr>,
    /// Pool validation, allocation and ownership problems, each naming its object.
    pub diagnostics: Vec<Diagnostic>,
    /// How a diagnostic of [`Self::diagnostics`] reads as a Kubernetes Event: its reason (`AllocationFailed`,
    /// `IPPoolOverlap`, ...) and the other object involved. Diagnostics without a note use the generic Event.
    pub notes: BTreeMap<Diagnostic, EventNote>,
}

/// Compute the plan for `node_name` from the index: validate pools, allocate, and pick an owner per address.
///
/// Eligible nodes for an address: [`ready_nodes`]; for a Service with `externalTrafficPolicy: Local`, only those
/// with a ready endpoint of it ([`local_endpoint_nodes`]). A shared address takes the nodes eligible for every
/// Service holding it; if that leaves none while each alone has some, the oldest holder's nodes are used and a
/// warning says the other Services' `Local` traffic may be dropped.
///
/// **Dormant without pools**: when the index holds no IPPool at all, nothing is allocated or released; the
/// addresses already in the Services' status (written by another allocator, or by hand in a manifests
/// directory) are taken as they are, and only ownership is computed.
pub fn plan(index: &Index, node_name: &str) -> LbPlan {
    plan_with(index, node_name, &PlanOptions::default())
}

/// What [`plan_with`] takes besides the index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// Nodes known to run a live announcer (for example nodes whose agent renewed its per-node heartbeat Lease
    /// within a second or two). `None`: every Ready node counts as live.
    ///
    /// Node readiness alone reacts in tens of seconds (the kubelet's grace period); a per-*node* heartbeat
    /// (one Lease per node, not per Service) is what brings failover under two seconds.
    pub alive_nodes: Option<BTreeSet<String>>,
    /// Nodes running a live proxy (its per-node heartbeat, `causeway run --node-name`). The proxy itself listens
    /// on the addresses of Services of `loadBalancerClass: causeway.dev/proxy`, so only these nodes may announce
    /// them. `None` (no proxy heartbeats at all): every eligible node, as for other Services.
    pub proxy_nodes: Option<BTreeSet<String>>,
}

/// [`plan`] with options: eligible nodes are further limited to [`PlanOptions::alive_nodes`].
pub fn plan_with(index: &Index, node_name: &str, options: &PlanOptions) -> LbPlan {
    let (pools, pool_diags) = pool::validate(index.ip_pools());
    let mut diagnostics = pool_diags.list;
    let mut notes = pool_diags.notes;
    let services: Vec<LbService> = index.services().filter_map(|s| lb_service(s, &mut diagnostics)).collect();
    let allocation = if index.ip_pools().next().is_none() {
        diagnostics.clear();
        notes.clear();
        dormant(&services)
    } else {
        allocate(&pools, &services)
    };
    diagnostics.extend(allocation.diagnostics);
    notes.extend(allocation.notes);

    let mut ready = ready_nodes(index);
    if let Some(alive) = &options.alive_nodes {
        ready.retain(|n| alive.contains(n));
    }
    let mut holders: BTreeMap<IpAddr, Vec<&ServiceKey>> = BTreeMap::new();
    for (key, a) in &allocation.assignments {
        for ip in &a.addresses {
            holders.entry(*ip).or_default().push(key);
        }
    }
    // `allocate` orders nothing by age in `assignments` (a map by key), so order holders by age here.
    let ages: BTreeMap<&ServiceKey, _> =
        services.iter().map(|s| (&s.key, (s.created.is_none(), s.created.clone()))).collect();
    let age = |k: &ServiceKey| ages.get(k).cloned();
    let mut owners = BTreeMap::new();
    for (ip, mut keys) in holders {
        keys.sort_by_key(|k| (age(k), (*k).clone()));
        let sets: Vec<BTreeSet<String>> =
            keys.iter().map(|k| eligible_for(index, k, &ready, options.proxy_nodes.as_ref())).collect();
        let mut eligible = sets.first().cloned().unwrap_or_default();
        for s in sets.iter().skip(1) {
            eligible = eligible.intersection(s).cloned().collect();
        }
        if eligible.is_empty() && sets.len() > 1 && sets.iter().all(|s| !s.is_empty()) {
            eligible = sets[0].clone();
            for k in keys.iter().skip(1) {
                diagnostics.push(Diagnostic::warning(
                    k.object_ref(),
                    "spec.externalTrafficPolicy",
                    format!(
                        "{ip} is shared with Service {} and no node has local endpoints of both; it is announced \
                         from that Service's nodes, so traffic to this one may find no local endpoint",
                        keys[0]
                    ),
                ));
            }
        }
        owners.insert(ip, owner_node(ip, &eligible).map(str::to_owned));
    }
    let my_addresses = owners.iter().filter(|(_, o)| o.as_deref() == Some(node_name)).map(|(ip, _)| *ip).collect();
    LbPlan {
        assignments: allocation.assignments,
        pending: allocation.pending,
        usage: allocation.usage,
        owners,
        my_addresses,
        diagnostics: dedup(diagnostics),
        notes,
    }
}

/// The allocation when no pool exists: every Service keeps its status addresses, nothing else happens.
fn dormant(services: &[LbService]) -> Allocation {
    let mut out = Allocation::default();
    for s in services {
        if s.current.is_empty() {
            out.pending.push(s.key.clone());
        } else {
            out.assignments.insert(s.key.clone(), Assignment { addresses: s.current.clone(), pool: String::new() });
        }
    }
    out
}

/// Nodes that may announce for one Service.
fn eligible_for(
    index: &Index,
    key: &ServiceKey,
    ready: &BTreeSet<String>,
    proxy_nodes: Option<&BTreeSet<String>>,
) -> BTreeSet<String> {
    let spec = index.service(&key.namespace, &key.name).and_then(|s| s.spec.as_ref());
    let local = spec.is_some_and(|s| s.external_traffic_policy.as_deref() == Some("Local"));
    let mut out: BTreeSet<String> = if local {
        local_endpoint_nodes(index, &key.namespace, &key.name).intersection(ready).cloned().collect()
    } else {
        ready.clone()
    };
    let proxied =
        spec.is_some_and(|s| s.load_balancer_class.as_deref() == Some(causeway_translate::PROXY_LOAD_BALANCER_CLASS));
    if let Some(proxies) = proxy_nodes
        && proxied
    {
        out.retain(|n| proxies.contains(n));
    }
    out
}

/// What the leader writes into an IPPool's status (the CRD's `Total` and `Used` columns).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolCounts {
    /// Addresses in the pool's usable ranges (saturating at `i64::MAX`: the field is an int64).
    pub total: i64,
    /// Distinct addresses of the pool held by Services.
    pub used: i64,
}

/// Each pool's counts from an allocation's usage, by pool name.
pub fn pool_counts(usage: &[PoolUsage]) -> BTreeMap<String, PoolCounts> {
    usage
        .iter()
        .map(|u| {
            let counts = PoolCounts {
                total: i64::try_from(u.total).unwrap_or(i64::MAX),
                used: i64::try_from(u.used).unwrap_or(i64::MAX),
            };
            (u.pool.clone(), counts)
        })
        .collect()
}

/// The `status.loadBalancer` that carries `addresses` (`ipMode: VIP`, in order); empty for no address.
pub fn load_balancer_status(addresses: &[IpAddr]) -> LoadBalancerStatus {
    let ingress: Vec<LoadBalancerIngress> = addresses
        .iter()
        .map(|ip| LoadBalancerIngress {
            ip: Some(ip.to_string()),
            ip_mode: Some("VIP".to_owned()),
            ..Default::default()
        })
        .collect();
    LoadBalancerStatus { ingress: (!ingress.is_empty()).then_some(ingress) }
}

/// The status writes the allocation needs: every Service of ours whose `status.loadBalancer.ingress` addresses
/// differ from its assignment (a new address, a moved one, or a release to nothing), with the status to write.
/// Ordered by namespace/name. Empty when the index has no IPPool (the allocator is dormant, see [`plan`]).
///
/// The leader writes each as a merge patch of `status.loadBalancer` on the `services/status` subresource; the
/// watch then brings the Service back with the status, and the next plan keeps it (rule 1 of [`allocate`]).
pub fn status_updates(
    index: &Index,
    assignments: &BTreeMap<ServiceKey, Assignment>,
) -> Vec<(ServiceKey, LoadBalancerStatus)> {
    if index.ip_pools().next().is_none() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for svc in index.services().filter(|s| is_ours(s)) {
        let key = ServiceKey::new(
            svc.metadata.namespace.clone().unwrap_or_default(),
            svc.metadata.name.clone().unwrap_or_default(),
        );
        let want: &[IpAddr] = assignments.get(&key).map(|a| a.addresses.as_slice()).unwrap_or_default();
        if status_addresses(svc) != want {
            out.push((key, load_balancer_status(want)));
        }
    }
    out
}

/// A copy of `index` whose Services of ours carry their assignments in `status.loadBalancer` (see
/// [`status_updates`]). Services whose status already says so are shared, not copied.
///
/// For manifests mode, where nobody writes status: run translation (`service_table`, `route_table`) on this
/// copy. In cluster mode the leader writes the same addresses into status and the watch brings them back, so
/// translating the plain index is enough (this copy differs from it only until the write comes back).
/// With no IPPool in the index the allocator is dormant (see [`plan`]) and the index is returned unchanged.
pub fn with_assigned_status(index: &Index, assignments: &BTreeMap<ServiceKey, Assignment>) -> Index {
    let mut out = index.clone();
    for (key, status) in status_updates(index, assignments) {
        let Some(svc) = index.service(&key.namespace, &key.name) else { continue };
        let mut copy = (**svc).clone();
        copy.status.get_or_insert_with(ServiceStatus::default).load_balancer = Some(status);
        out.apply(KubeObject::Service(Arc::new(copy)));
    }
    out
}

/// The addresses a Service's status holds now, in order (unparsable entries skipped).
pub fn status_addresses(svc: &k8s_openapi::api::core::v1::Service) -> Vec<IpAddr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|e| e.ip.as_deref()?.parse().ok())
        .collect()
}

/// Remove repeated diagnostics, keeping the first of each.
pub(crate) fn dedup(diagnostics: Vec<Diagnostic>) -> Vec<Diagnostic> {
    let mut seen = std::collections::HashSet::new();
    diagnostics.into_iter().filter(|d| seen.insert(d.clone())).collect()
}

#[cfg(test)]
mod tests;
