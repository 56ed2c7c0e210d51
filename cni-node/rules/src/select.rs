//! Endpoint selection, after kube-proxy's `CategorizeEndpoints` (reference §7.4), without topology hints
//! (the model carries no hints yet).

use causeway_model::{EndpointInfo, ServicePort};
use std::collections::BTreeSet;

/// The endpoints one service port uses on this node.
#[derive(Debug, Default)]
pub struct Categorized<'a> {
    /// Endpoints for cluster-policy traffic (`KUBE-SVC-*`).
    pub cluster: Vec<&'a EndpointInfo>,
    /// Endpoints for local-policy traffic (`KUBE-SVL-*`).
    pub local: Vec<&'a EndpointInfo>,
    /// Union of both (these get `KUBE-SEP-*` chains), sorted like the others.
    pub all_reachable: Vec<&'a EndpointInfo>,
    /// Whether the service has any usable endpoint anywhere.
    pub has_any: bool,
}

/// kube-proxy's ordering: by the `IP:port` string, byte-wise.
fn sort_by_string(eps: &mut [&EndpointInfo]) {
    eps.sort_by_cached_key(|e| crate::hash::endpoint_string(e.ip, e.port));
}

/// Chooses the cluster and local endpoint sets of `sp` (endpoints already filtered to this family).
pub fn categorize<'a>(
    eps: &[&'a EndpointInfo],
    node_name: &str,
    uses_cluster: bool,
    uses_local: bool,
) -> Categorized<'a> {
    let mut out = Categorized::default();
    if uses_cluster {
        out.cluster = eps.iter().copied().filter(|e| e.ready).collect();
        if out.cluster.is_empty() {
            // Graceful termination (KEP-1669): fall back to serving, terminating endpoints.
            out.cluster = eps.iter().copied().filter(|e| e.serving && e.terminating).collect();
        }
        out.has_any = !out.cluster.is_empty();
    }
    if uses_local {
        let is_local = |e: &&EndpointInfo| e.node_name.as_deref() == Some(node_name);
        out.local = eps.iter().copied().filter(|e| is_local(e) && e.ready).collect();
        if out.local.is_empty() {
            out.local = eps.iter().copied().filter(|e| is_local(e) && e.serving && e.terminating).collect();
        }
        if eps.iter().any(|e| e.ready || (e.serving && e.terminating)) {
            out.has_any = true;
        }
    }
    sort_by_string(&mut out.cluster);
    sort_by_string(&mut out.local);
    let mut seen = BTreeSet::new();
    let mut all: Vec<&EndpointInfo> = Vec::new();
    for e in out.cluster.iter().chain(out.local.iter()) {
        if seen.insert((e.ip, e.port)) {
            all.push(e);
        }
    }
    sort_by_string(&mut all);
    out.all_reachable = all;
    out
}

/// The number of distinct *ready* endpoint IPs of `sp` on `node_name`: what the `healthCheckNodePort` server
/// reports (reference §5.9; serving-but-terminating endpoints do not count).
pub fn local_ready_endpoints(sp: &ServicePort, node_name: &str) -> usize {
    sp.endpoints
        .iter()
        .filter(|e| e.ready && e.node_name.as_deref() == Some(node_name))
        .map(|e| e.ip)
        .collect::<BTreeSet<_>>()
        .len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_ep(ip: &str, node: &str, ready: bool, serving: bool, terminating: bool) -> EndpointInfo {
        EndpointInfo {
            ip: ip.parse().unwrap(),
            port: 80,
            node_name: Some(node.into()),
            zone: None,
            ready,
            serving,
            terminating,
        }
    }

    /// (endpoints, uses_cluster, uses_local) → (cluster IPs, local IPs, has_any)
    #[test]
    fn categorize_table() {
        let r1 = mk_ep("10.0.0.1", "n1", true, true, false);
        let r2 = mk_ep("10.0.0.2", "n2", true, true, false);
        let t1 = mk_ep("10.0.0.3", "n1", false, true, true);
        let t2 = mk_ep("10.0.0.4", "n2", false, true, true);
        let dead = mk_ep("10.0.0.5", "n1", false, false, false);
        type Case<'a> = (&'a str, Vec<&'a EndpointInfo>, bool, bool, Vec<&'a str>, Vec<&'a str>, bool);
        let cases: Vec<Case> = vec![
            ("ready only", vec![&r1, &r2, &t1], true, false, vec!["10.0.0.1", "10.0.0.2"], vec![], true),
            ("terminating fallback", vec![&t1, &t2, &dead], true, false, vec!["10.0.0.3", "10.0.0.4"], vec![], true),
            ("nothing usable", vec![&dead], true, true, vec![], vec![], false),
            ("local ready", vec![&r1, &r2], true, true, vec!["10.0.0.1", "10.0.0.2"], vec!["10.0.0.1"], true),
            ("local terminating fallback", vec![&t1, &r2], false, true, vec![], vec!["10.0.0.3"], true),
            ("no local, but some remote", vec![&r2], false, true, vec![], vec![], true),
        ];
        for (what, eps, uc, ul, want_c, want_l, want_any) in cases {
            let c = categorize(&eps, "n1", uc, ul);
            let ips = |v: &[&EndpointInfo]| v.iter().map(|e| e.ip.to_string()).collect::<Vec<_>>();
            assert_eq!(ips(&c.cluster), want_c, "{what}: cluster");
            assert_eq!(ips(&c.local), want_l, "{what}: local");
            assert_eq!(c.has_any, want_any, "{what}: has_any");
        }
    }

    #[test]
    fn sorted_as_strings_not_numbers() {
        let a = mk_ep("10.244.10.2", "n", true, true, false);
        let b = mk_ep("10.244.2.7", "n", true, true, false);
        let c = categorize(&[&b, &a], "n", true, false);
        assert_eq!(c.cluster[0].ip.to_string(), "10.244.10.2");
    }
}
