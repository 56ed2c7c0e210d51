//! From a [`ServiceTable`] to per-service-port rules in kube-proxy's iptables layout (reference §5.3–§5.7).
//!
//! The result is structured (top-level rules per chain, owned chains with their rules) so that a full sync and
//! a partial sync can both be written from it; `restore` turns it into text.

use crate::ctx::NodeCtx;
use crate::hash::{endpoint_chain, endpoint_string, service_port_hash};
use crate::select::{Categorized, categorize};
use causeway_model::{Diagnostic, EndpointInfo, ObjectRef, ServicePort, ServicePortName, ServiceTable, TrafficPolicy};
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

/// Above this many endpoints in total, kube-proxy drops the comments of endpoint rules ("large cluster mode").
pub const LARGE_CLUSTER_ENDPOINTS: usize = 1000;

/// An iptables table we write to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Filter,
    Nat,
}

impl Table {
    /// The name after `*` in restore input.
    pub fn as_str(self) -> &'static str {
        match self {
            Table::Filter => "filter",
            Table::Nat => "nat",
        }
    }
}

/// Chain names of the fixed kube-proxy layout.
pub mod chains {
    pub const SERVICES: &str = "KUBE-SERVICES";
    pub const EXTERNAL_SERVICES: &str = "KUBE-EXTERNAL-SERVICES";
    pub const NODEPORTS: &str = "KUBE-NODEPORTS";
    pub const POSTROUTING: &str = "KUBE-POSTROUTING";
    pub const MARK_MASQ: &str = "KUBE-MARK-MASQ";
    pub const FORWARD: &str = "KUBE-FORWARD";
    pub const PROXY_FIREWALL: &str = "KUBE-PROXY-FIREWALL";
    pub const FIREWALL: &str = "KUBE-FIREWALL";
    /// Our own egress masquerade chain (pods → outside the cluster CIDRs), kindnet's `KIND-MASQ-AGENT` role.
    pub const EGRESS_MASQ: &str = "CAUSEWAY-MASQ";
    /// Empty chain written on full syncs; if it disappears someone flushed the table, and the agent resyncs in full.
    pub const CANARY: &str = "KUBE-PROXY-CANARY";
}

/// One rule in a shared top-level chain (`KUBE-SERVICES`, `KUBE-NODEPORTS`, ...), owned by one service port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopRule {
    pub table: Table,
    pub chain: &'static str,
    /// Everything after `-A <chain> `.
    pub spec: String,
}

/// A nat chain owned by one service port (`KUBE-SVC-*`, `KUBE-SVL-*`, `KUBE-EXT-*`, `KUBE-FW-*`, `KUBE-SEP-*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedChain {
    pub name: String,
    /// Rule specs, in order, each without `-A <name> `.
    pub rules: Vec<String>,
}

/// Everything one service port contributes to the ruleset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRules {
    pub name: ServicePortName,
    pub top: Vec<TopRule>,
    /// Nat chains, in the order kube-proxy declares them.
    pub chains: Vec<OwnedChain>,
}

/// The rendered state for one family: what a full sync writes, keyed so a partial sync can diff it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ruleset {
    pub ctx: NodeCtx,
    /// Whether endpoint-rule comments were dropped (more than [`LARGE_CLUSTER_ENDPOINTS`] endpoints).
    pub large_cluster: bool,
    pub services: BTreeMap<ServicePortName, Arc<ServiceRules>>,
    /// What each entry of `services` was rendered from (same order as `services`), so the next build can
    /// reuse unchanged entries.
    cache: Vec<CacheEntry>,
}

/// The input, diagnostics and endpoint count behind one rendered service port.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CacheEntry {
    input: Arc<ServicePort>,
    diags: Vec<Diagnostic>,
    reachable: usize,
}

impl Ruleset {
    /// Number of rules a full sync writes for the services (fixed rules not counted).
    pub fn service_rule_count(&self) -> usize {
        self.services.values().map(|s| s.top.len() + s.chains.iter().map(|c| c.rules.len()).sum::<usize>()).sum()
    }
}

/// `-m comment --comment X`, quoted when `X` has a space, as kube-proxy writes it.
fn comment(text: &str) -> String {
    if text.contains(' ') { format!("-m comment --comment \"{text}\"") } else { format!("-m comment --comment {text}") }
}

/// kube-proxy's probability string for rule `i` of `n`: `1/(n-i)` with 10 decimals.
pub fn probability(n: usize, i: usize) -> String {
    let remaining = n.saturating_sub(i).max(1);
    format!("{:.10}", 1.0 / remaining as f64)
}

/// Whether `s` is safe to place in a rule comment: DNS-1123 characters only. Names reach iptables only
/// after this check (design invariant 7: no user string is templated into another program's input unchecked).
fn is_safe_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

fn object_of(name: &ServicePortName) -> ObjectRef {
    ObjectRef::new("Service", name.namespace.clone(), name.name.clone())
}

/// Checks one service port; `Err` carries the diagnostic and the port is left out.
fn validate(sp: &ServicePort) -> Result<(), Box<Diagnostic>> {
    let n = &sp.name;
    let err = |field: &str, msg: String| Err(Box::new(Diagnostic::error(object_of(n), field, msg)));
    if !is_safe_name(&n.namespace, 63) {
        return err("metadata.namespace", format!("namespace {:?} is not a DNS-1123 label", n.namespace));
    }
    if !is_safe_name(&n.name, 63) {
        return err("metadata.name", format!("name {:?} is not a DNS-1123 label", n.name));
    }
    if !n.port.is_empty() && !is_safe_name(&n.port, 63) {
        return err("spec.ports[].name", format!("port name {:?} is not a valid port name", n.port));
    }
    if sp.port == 0 {
        return err("spec.ports[].port", format!("port 0 of {n} is out of range"));
    }
    if sp.node_port == Some(0) {
        return err("spec.ports[].nodePort", format!("nodePort 0 of {n} is out of range"));
    }
    Ok(())
}

/// Builds the ruleset of one family. Service ports that are invalid are skipped with a diagnostic;
/// service ports without a ClusterIP of this family produce nothing (as in kube-proxy's per-family proxier).
pub fn build_ruleset(table: &ServiceTable, ctx: &NodeCtx) -> (Ruleset, Vec<Diagnostic>) {
    build_ruleset_incremental(table, ctx, None)
}

/// Like [`build_ruleset`], reusing the rendering of every service port that is unchanged since `prev` (same
/// input, same node context, same comment mode). The result is identical to a fresh build; only faster when
/// few Services changed.
pub fn build_ruleset_incremental(
    table: &ServiceTable,
    ctx: &NodeCtx,
    prev: Option<&Ruleset>,
) -> (Ruleset, Vec<Diagnostic>) {
    let prev = prev.filter(|p| p.ctx == *ctx && p.cache.len() == p.services.len());
    let mut diags = Vec::new();
    let mut slots: Vec<Slot> = Vec::with_capacity(table.ports.len());
    // The table is sorted by name (a ServiceTable invariant), so unchanged entries are found by walking the
    // previous ruleset alongside it; an unsorted table only loses reuse, not correctness.
    let mut old = prev.map(|p| p.services.iter().zip(p.cache.iter()).peekable());
    for sp in &table.ports {
        if let Some(it) = old.as_mut() {
            while it.peek().is_some_and(|((k, _), _)| *k < &sp.name) {
                it.next();
            }
            if let Some(((k, rules), entry)) = it.peek()
                && **k == sp.name
                && *entry.input == *sp
            {
                diags.extend(entry.diags.iter().cloned());
                slots.push(Slot::Reused((*k).clone(), (*rules).clone(), (*entry).clone()));
                it.next();
                continue;
            }
        }
        if let Err(d) = validate(sp) {
            diags.push(*d);
            continue;
        }
        let diags_before = diags.len();
        let Some(cluster_ip) = sp.cluster_ips.iter().copied().find(|ip| ctx.family.has(*ip)) else {
            continue;
        };
        let mut eps = Vec::new();
        let mut foreign = 0usize;
        for e in &sp.endpoints {
            if ctx.family.has(e.ip) {
                if e.port == 0 {
                    diags.push(Diagnostic::error(
                        object_of(&sp.name),
                        "endpoints[].port",
                        format!("endpoint {} of {} has port 0; skipped", e.ip, sp.name),
                    ));
                } else {
                    eps.push(e);
                }
            } else {
                foreign += 1;
            }
        }
        if foreign > 0 && !sp.cluster_ips.iter().any(|ip| !ctx.family.has(*ip)) {
            diags.push(Diagnostic::warning(
                object_of(&sp.name),
                "endpoints",
                format!("{foreign} endpoint(s) of {} are of another address family; skipped", sp.name),
            ));
        }
        let mut ranges = Vec::new();
        for r in &sp.load_balancer_source_ranges {
            match r.trim().parse::<IpNet>() {
                Ok(net) if ctx.family.has_net(&net) => ranges.push(net.trunc()),
                Ok(_) => {}
                Err(_) => diags.push(Diagnostic::error(
                    object_of(&sp.name),
                    "spec.loadBalancerSourceRanges",
                    format!("{r:?} is not a CIDR; skipped"),
                )),
            }
        }
        let own_diags = diags[diags_before..].to_vec();
        slots.push(Slot::New(Box::new(Plan::new(sp, cluster_ip, eps, ranges, ctx)), own_diags));
    }
    let total: usize = slots
        .iter()
        .map(|s| match s {
            Slot::Reused(_, _, e) => e.reachable,
            Slot::New(p, _) => p.cat.all_reachable.len(),
        })
        .sum();
    let large_cluster = total > LARGE_CLUSTER_ENDPOINTS;
    if let Some(p) = prev
        && p.large_cluster != large_cluster
        && slots.iter().any(|s| matches!(s, Slot::Reused(..)))
    {
        // The comment mode flipped: every chain changes, nothing can be reused.
        return build_ruleset_incremental(table, ctx, None);
    }
    let mut pairs: Vec<(ServicePortName, (Arc<ServiceRules>, CacheEntry))> = Vec::with_capacity(slots.len());
    for slot in slots {
        match slot {
            Slot::Reused(name, rules, entry) => pairs.push((name, (rules, entry))),
            Slot::New(plan, own_diags) => {
                let rules = plan.render(ctx, large_cluster);
                let entry = CacheEntry {
                    input: Arc::new(plan.sp.clone()),
                    diags: own_diags,
                    reachable: plan.cat.all_reachable.len(),
                };
                pairs.push((rules.name.clone(), (Arc::new(rules), entry)));
            }
        }
    }
    // Sorted already in the normal case, so this is linear; it also makes an unsorted table well-formed.
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs.dedup_by(|a, b| a.0 == b.0);
    let mut cache = Vec::with_capacity(pairs.len());
    let services: BTreeMap<ServicePortName, Arc<ServiceRules>> = pairs
        .into_iter()
        .map(|(name, (rules, entry))| {
            cache.push(entry);
            (name, rules)
        })
        .collect();
    (Ruleset { ctx: ctx.clone(), large_cluster, services, cache }, diags)
}

/// One service port during a build: reused from the previous ruleset, or to be rendered.
enum Slot<'a> {
    Reused(ServicePortName, Arc<ServiceRules>, CacheEntry),
    New(Box<Plan<'a>>, Vec<Diagnostic>),
}

/// The derived flags of one service port (kube-proxy `serviceport.go` and §5.4).
struct Plan<'a> {
    sp: &'a ServicePort,
    cluster_ip: IpAddr,
    external_ips: Vec<IpAddr>,
    lb_ips: Vec<IpAddr>,
    ranges: Vec<IpNet>,
    cat: Categorized<'a>,
    external_local: bool,
    internal_local: bool,
    externally_accessible: bool,
}

impl<'a> Plan<'a> {
    fn new(
        sp: &'a ServicePort,
        cluster_ip: IpAddr,
        eps: Vec<&'a EndpointInfo>,
        ranges: Vec<IpNet>,
        ctx: &NodeCtx,
    ) -> Self {
        let external_ips: Vec<IpAddr> = sp.external_ips.iter().copied().filter(|ip| ctx.family.has(*ip)).collect();
        let lb_ips: Vec<IpAddr> = sp.load_balancer_ips.iter().copied().filter(|ip| ctx.family.has(*ip)).collect();
        let externally_accessible = sp.node_port.is_some() || !lb_ips.is_empty() || !external_ips.is_empty();
        let external_local = sp.external_traffic_policy == TrafficPolicy::Local && externally_accessible;
        let internal_local = sp.internal_traffic_policy == TrafficPolicy::Local;
        let uses_cluster = !internal_local || externally_accessible;
        let uses_local = internal_local || external_local;
        let cat = categorize(&eps, &ctx.node_name, uses_cluster, uses_local);
        Self {
            sp,
            cluster_ip,
            external_ips,
            lb_ips,
            ranges,
            cat,
            external_local,
            internal_local,
            externally_accessible,
        }
    }

    fn render(&self, ctx: &NodeCtx, large: bool) -> ServiceRules {
        let sp = self.sp;
        let name = &sp.name;
        let spn = name.to_string();
        let p = name.protocol.as_lower();
        let h = service_port_hash(name);
        let svc = format!("KUBE-SVC-{h}");
        let svl = format!("KUBE-SVL-{h}");
        let ext = format!("KUBE-EXT-{h}");
        let fw = format!("KUBE-FW-{h}");
        let cat = &self.cat;
        let has_endpoints = cat.has_any;
        let uses_svc = !cat.cluster.is_empty();
        let uses_svl = !cat.local.is_empty();
        let internal_chain = if self.internal_local { &svl } else { &svc };
        let external_chain = if self.external_local { &svl } else { &svc };
        let has_internal = has_endpoints && (!self.internal_local || uses_svl);
        let has_external = has_endpoints && (!self.external_local || uses_svl);
        let uses_ext = has_endpoints && self.externally_accessible;
        let uses_fw = has_endpoints && !self.lb_ips.is_empty() && !self.ranges.is_empty();
        let lb_chain = if uses_fw { &fw } else { &ext };
        let (int_verdict, int_comment) = if !has_endpoints {
            ("REJECT", format!("{spn} has no endpoints"))
        } else {
            ("DROP", format!("{spn} has no local endpoints"))
        };
        let ext_verdict = int_verdict;
        let ext_comment = int_comment.clone();

        let mut top = Vec::new();
        let mut push = |table, chain, spec: String| top.push(TopRule { table, chain, spec });
        let mut chains: Vec<OwnedChain> = Vec::new();
        if uses_svc {
            chains.push(OwnedChain { name: svc.clone(), rules: Vec::new() });
        }
        if uses_svl {
            chains.push(OwnedChain { name: svl.clone(), rules: Vec::new() });
        }
        if uses_ext {
            chains.push(OwnedChain { name: ext.clone(), rules: Vec::new() });
        }
        if uses_fw {
            chains.push(OwnedChain { name: fw.clone(), rules: Vec::new() });
        }
        let seps: Vec<(String, &EndpointInfo)> =
            cat.all_reachable.iter().map(|e| (endpoint_chain(name, e), *e)).collect();
        for (chain, _) in &seps {
            chains.push(OwnedChain { name: chain.clone(), rules: Vec::new() });
        }
        let mut add = |chain: &str, spec: String| {
            if let Some(c) = chains.iter_mut().find(|c| c.name == chain) {
                c.rules.push(spec);
            }
        };

        // Internal (ClusterIP) traffic.
        let vip_match = |ip: IpAddr, port: u16| format!("-m {p} -p {p} -d {ip} --dport {port}");
        let cluster_match = vip_match(self.cluster_ip, sp.port);
        if has_internal {
            let cidrs: Vec<&IpNet> = ctx.family_cidrs().collect();
            for cidr in &cidrs {
                add(
                    internal_chain,
                    format!(
                        "{} {cluster_match} ! -s {cidr} -j {}",
                        comment(&format!("{spn} cluster IP")),
                        chains::MARK_MASQ
                    ),
                );
            }
            push(
                Table::Nat,
                chains::SERVICES,
                format!("{} {cluster_match} -j {internal_chain}", comment(&format!("{spn} cluster IP"))),
            );
        } else {
            push(
                Table::Filter,
                chains::SERVICES,
                format!("{} {cluster_match} -j {int_verdict}", comment(&int_comment)),
            );
        }

        // externalIPs.
        for ip in &self.external_ips {
            let m = vip_match(*ip, sp.port);
            if has_endpoints {
                push(Table::Nat, chains::SERVICES, format!("{} {m} -j {ext}", comment(&format!("{spn} external IP"))));
            }
            if !has_external {
                push(
                    Table::Filter,
                    chains::EXTERNAL_SERVICES,
                    format!("{} {m} -j {ext_verdict}", comment(&ext_comment)),
                );
            }
        }

        // LoadBalancer VIPs.
        for ip in &self.lb_ips {
            let m = vip_match(*ip, sp.port);
            if has_endpoints {
                push(
                    Table::Nat,
                    chains::SERVICES,
                    format!("{} {m} -j {lb_chain}", comment(&format!("{spn} loadbalancer IP"))),
                );
            }
            if uses_fw {
                push(
                    Table::Filter,
                    chains::PROXY_FIREWALL,
                    format!("{} {m} -j DROP", comment(&format!("{spn} traffic not accepted by {fw}"))),
                );
            }
        }
        if !has_external {
            for ip in &self.lb_ips {
                let m = vip_match(*ip, sp.port);
                push(
                    Table::Filter,
                    chains::EXTERNAL_SERVICES,
                    format!("{} {m} -j {ext_verdict}", comment(&ext_comment)),
                );
            }
        }

        // NodePort.
        if let Some(np) = sp.node_port {
            if has_endpoints {
                push(Table::Nat, chains::NODEPORTS, format!("{} -m {p} -p {p} --dport {np} -j {ext}", comment(&spn)));
            }
            if !has_external {
                push(
                    Table::Filter,
                    chains::EXTERNAL_SERVICES,
                    format!(
                        "{} -m addrtype --dst-type LOCAL -m {p} -p {p} --dport {np} -j {ext_verdict}",
                        comment(&ext_comment)
                    ),
                );
            }
        }

        // healthCheckNodePort: accepted whatever the endpoints.
        if let Some(hc) = sp.health_check_node_port.filter(|p| *p != 0) {
            push(
                Table::Filter,
                chains::NODEPORTS,
                format!("{} -m tcp -p tcp --dport {hc} -j ACCEPT", comment(&format!("{spn} health check node port"))),
            );
        }

        // KUBE-EXT-*.
        if uses_ext {
            if !self.external_local {
                add(
                    &ext,
                    format!(
                        "{} -j {}",
                        comment(&format!("masquerade traffic for {spn} external destinations")),
                        chains::MARK_MASQ
                    ),
                );
            } else {
                for cidr in ctx.family_cidrs() {
                    add(
                        &ext,
                        format!(
                            "{} -s {cidr} -j {svc}",
                            comment(&format!("pod traffic for {spn} external destinations"))
                        ),
                    );
                }
                add(
                    &ext,
                    format!(
                        "{} -m addrtype --src-type LOCAL -j {}",
                        comment(&format!("masquerade LOCAL traffic for {spn} external destinations")),
                        chains::MARK_MASQ
                    ),
                );
                add(
                    &ext,
                    format!(
                        "{} -m addrtype --src-type LOCAL -j {svc}",
                        comment(&format!("route LOCAL traffic for {spn} external destinations"))
                    ),
                );
            }
            if has_external {
                add(&ext, format!("-j {external_chain}"));
            }
        }

        // KUBE-FW-*: loadBalancerSourceRanges allow-list; what falls through is dropped by KUBE-PROXY-FIREWALL.
        if uses_fw {
            let c = comment(&format!("{spn} loadbalancer IP"));
            let mut allow_from_node = false;
            for net in &self.ranges {
                add(&fw, format!("{c} -s {net} -j {ext}"));
                if ctx.node_ips.iter().any(|ip| net.contains(ip)) {
                    allow_from_node = true;
                }
            }
            if allow_from_node {
                for ip in &self.lb_ips {
                    add(&fw, format!("{c} -s {ip} -j {ext}"));
                }
            }
            add(&fw, comment(&format!("other traffic to {spn} will be dropped by KUBE-PROXY-FIREWALL")));
        }

        // Endpoint dispatch.
        let sep_of = |e: &EndpointInfo| endpoint_chain(name, e);
        let dispatch = |eps: &[&EndpointInfo]| -> Vec<String> {
            let mut out = Vec::new();
            let ep_comment = |e: &EndpointInfo| {
                if large {
                    String::new()
                } else {
                    format!("{} ", comment(&format!("{spn} -> {}", endpoint_string(e.ip, e.port))))
                }
            };
            if let Some(timeout) = sp.session_affinity_timeout {
                for e in eps {
                    let sep = sep_of(e);
                    out.push(format!(
                        "{}-m recent --name {sep} --rcheck --seconds {timeout} --reap -j {sep}",
                        ep_comment(e)
                    ));
                }
            }
            let n = eps.len();
            for (i, e) in eps.iter().enumerate() {
                let stat = if i + 1 < n {
                    format!("-m statistic --mode random --probability {} ", probability(n, i))
                } else {
                    String::new()
                };
                out.push(format!("{}{stat}-j {}", ep_comment(e), sep_of(e)));
            }
            out
        };
        if uses_svc {
            for r in dispatch(&cat.cluster) {
                add(&svc, r);
            }
        }
        if uses_svl {
            for r in dispatch(&cat.local) {
                add(&svl, r);
            }
        }
        for (sep, e) in &seps {
            let c = if large { String::new() } else { format!("{} ", comment(&spn)) };
            add(sep, format!("{c}-s {} -j {}", e.ip, chains::MARK_MASQ));
            let affinity = if sp.session_affinity_timeout.is_some() {
                format!(" -m recent --name {sep} --set")
            } else {
                String::new()
            };
            add(sep, format!("{c}-m {p} -p {p}{affinity} -j DNAT --to-destination {}", endpoint_string(e.ip, e.port)));
        }
        ServiceRules { name: name.clone(), top, chains }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_match_go_formatting() {
        assert_eq!(probability(2, 0), "0.5000000000");
        assert_eq!(probability(3, 0), "0.3333333333");
        assert_eq!(probability(4, 0), "0.2500000000");
        assert_eq!(probability(7, 0), "0.1428571429");
    }

    #[test]
    fn unsafe_names_are_rejected() {
        for bad in ["", "a\"b", "a b", "A", "x\ny", &"a".repeat(64)] {
            assert!(!is_safe_name(bad, 63), "{bad:?}");
        }
        assert!(is_safe_name("kube-system", 63));
    }
}
