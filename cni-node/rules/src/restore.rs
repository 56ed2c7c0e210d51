//! Writing a [`Ruleset`] as `iptables-restore --noflush` input: a full sync (every chain we own, declared and
//! written; missing jump rules inserted; stale chains deleted) or a partial sync (only what changed since the
//! previous ruleset).
//!
//! A partial sync differs from kube-proxy's on purpose: kube-proxy rewrites the shared top-level chains
//! (`KUBE-SERVICES`, ...) in full on every sync, which at 10k Services means 10k+ rules per change. We delete and
//! insert only the changed rules of those chains (`-D` by spec, `-I ... 1`). Order inside those chains does not
//! matter (their matches are disjoint) except for the NodePort jump, which stays last because we insert at the
//! top. If a `-D` finds no rule (someone changed our chains) the batch fails and the agent falls back to a full
//! sync, which rewrites everything.

use crate::ctx::{Family, NodeCtx};
use crate::parse::{Dump, canonical, tokenize};
use crate::ruleset::{Ruleset, ServiceRules, Table, TopRule, chains};
use causeway_model::ServicePortName;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// Restore input plus what is needed to explain a failure.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restore {
    /// The text for `iptables-restore --noflush`; empty when there is nothing to do.
    pub text: String,
    /// Owner of each line (index = line number − 1), as an index into `owners`.
    line_owner: Vec<Option<u32>>,
    owners: Vec<ServicePortName>,
    /// Number of `-A`/`-I` rule lines written.
    pub rules_written: usize,
    /// Service ports whose rules this batch changes.
    pub services_written: usize,
}

impl Restore {
    /// The service port whose rules are on `line` (1-based, as `iptables-restore` reports it).
    pub fn owner_of_line(&self, line: usize) -> Option<&ServicePortName> {
        let idx = self.line_owner.get(line.checked_sub(1)?).copied().flatten()?;
        self.owners.get(idx as usize)
    }

    /// The text of `line` (1-based).
    pub fn line(&self, line: usize) -> Option<&str> {
        self.text.lines().nth(line.checked_sub(1)?)
    }

    /// Whether there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }
}

/// Accumulates lines with owners.
#[derive(Default)]
struct Writer {
    out: Restore,
    owner_idx: BTreeMap<ServicePortName, u32>,
    last: Option<(ServicePortName, u32)>,
}

impl Writer {
    fn line(&mut self, owner: Option<&ServicePortName>, text: &str) {
        let idx = owner.map(|o| {
            // Consecutive lines usually share an owner: avoid a map lookup (and a clone) per line.
            if let Some((last, i)) = &self.last
                && last == o
            {
                return *i;
            }
            let next = self.out.owners.len() as u32;
            let i = *self.owner_idx.entry(o.clone()).or_insert_with(|| {
                self.out.owners.push(o.clone());
                next
            });
            self.last = Some((o.clone(), i));
            i
        });
        self.out.text.push_str(text);
        self.out.text.push('\n');
        self.out.line_owner.push(idx);
        if text.starts_with("-A ") || text.starts_with("-I ") {
            self.out.rules_written += 1;
        }
    }

    fn finish(mut self, services_written: usize) -> Restore {
        self.out.services_written = services_written;
        self.out
    }
}

/// Chains whose names mark them as per-service chains we own.
pub fn is_service_chain(name: &str) -> bool {
    ["KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SEP-"].iter().any(|p| name.starts_with(p))
}

/// A jump rule from a built-in chain into ours, ensured on every full sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JumpRule {
    pub table: Table,
    pub chain: &'static str,
    pub spec: String,
    /// Inserted at the top (kube-proxy's jumps) or appended (our egress masquerade, like kindnet's).
    pub prepend: bool,
}

/// The jump rules of kube-proxy (reference §5.1) plus ours.
pub fn jump_rules(ctx: &NodeCtx) -> Vec<JumpRule> {
    let new = "-m conntrack --ctstate NEW";
    let j = |table, chain, spec: String| JumpRule { table, chain, spec, prepend: true };
    let mut v = vec![
        j(
            Table::Filter,
            "INPUT",
            format!(
                "{new} -m comment --comment \"kubernetes externally-visible service portals\" -j {}",
                chains::EXTERNAL_SERVICES
            ),
        ),
        j(
            Table::Filter,
            "FORWARD",
            format!(
                "{new} -m comment --comment \"kubernetes externally-visible service portals\" -j {}",
                chains::EXTERNAL_SERVICES
            ),
        ),
        j(
            Table::Filter,
            "INPUT",
            format!("-m comment --comment \"kubernetes health check service ports\" -j {}", chains::NODEPORTS),
        ),
        j(
            Table::Filter,
            "FORWARD",
            format!("{new} -m comment --comment \"kubernetes service portals\" -j {}", chains::SERVICES),
        ),
        j(
            Table::Filter,
            "OUTPUT",
            format!("{new} -m comment --comment \"kubernetes service portals\" -j {}", chains::SERVICES),
        ),
        j(
            Table::Filter,
            "FORWARD",
            format!("-m comment --comment \"kubernetes forwarding rules\" -j {}", chains::FORWARD),
        ),
        j(
            Table::Filter,
            "INPUT",
            format!("{new} -m comment --comment \"kubernetes load balancer firewall\" -j {}", chains::PROXY_FIREWALL),
        ),
        j(
            Table::Filter,
            "OUTPUT",
            format!("{new} -m comment --comment \"kubernetes load balancer firewall\" -j {}", chains::PROXY_FIREWALL),
        ),
        j(
            Table::Filter,
            "FORWARD",
            format!("{new} -m comment --comment \"kubernetes load balancer firewall\" -j {}", chains::PROXY_FIREWALL),
        ),
        j(Table::Nat, "OUTPUT", format!("-m comment --comment \"kubernetes service portals\" -j {}", chains::SERVICES)),
        j(
            Table::Nat,
            "PREROUTING",
            format!("-m comment --comment \"kubernetes service portals\" -j {}", chains::SERVICES),
        ),
        j(
            Table::Nat,
            "POSTROUTING",
            format!("-m comment --comment \"kubernetes postrouting rules\" -j {}", chains::POSTROUTING),
        ),
    ];
    if writes_firewall(ctx) {
        v.push(j(Table::Filter, "INPUT", format!("-j {}", chains::FIREWALL)));
        v.push(j(Table::Filter, "OUTPUT", format!("-j {}", chains::FIREWALL)));
    }
    if writes_egress_masq(ctx) {
        v.push(JumpRule {
            table: Table::Nat,
            chain: "POSTROUTING",
            spec: format!("-m comment --comment \"causeway egress masquerade\" -j {}", chains::EGRESS_MASQ),
            prepend: false,
        });
    }
    v
}

fn writes_firewall(ctx: &NodeCtx) -> bool {
    ctx.localhost_nodeports && ctx.family == Family::V4
}

fn writes_egress_masq(ctx: &NodeCtx) -> bool {
    ctx.egress_masquerade && ctx.family_cidrs().next().is_some()
}

/// Fixed chains and rules of one table (reference §5.3, plus our egress masquerade chain).
fn fixed(ctx: &NodeCtx, table: Table) -> (Vec<&'static str>, Vec<(&'static str, String)>) {
    let m = ctx.mark();
    match table {
        Table::Filter => {
            let mut decl = vec![
                chains::NODEPORTS,
                chains::SERVICES,
                chains::EXTERNAL_SERVICES,
                chains::FORWARD,
                chains::PROXY_FIREWALL,
            ];
            let mut rules = Vec::new();
            if ctx.drop_invalid {
                rules.push((chains::FORWARD, "-m conntrack --ctstate INVALID -j DROP".to_string()));
            }
            rules.push((
                chains::FORWARD,
                format!("-m comment --comment \"kubernetes forwarding rules\" -m mark --mark {m}/{m} -j ACCEPT"),
            ));
            rules.push((
                chains::FORWARD,
                "-m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".to_string(),
            ));
            if writes_firewall(ctx) {
                decl.push(chains::FIREWALL);
                rules.push((
                    chains::FIREWALL,
                    "-m comment --comment \"block incoming localnet connections\" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP".to_string(),
                ));
            }
            (decl, rules)
        }
        Table::Nat => {
            let mut decl =
                vec![chains::SERVICES, chains::NODEPORTS, chains::POSTROUTING, chains::MARK_MASQ, chains::CANARY];
            let random = if ctx.random_fully { " --random-fully" } else { "" };
            let mut rules = vec![
                (chains::POSTROUTING, format!("-m mark ! --mark {m}/{m} -j RETURN")),
                (chains::POSTROUTING, format!("-j MARK --xor-mark {m}")),
                (
                    chains::POSTROUTING,
                    format!("-m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE{random}"),
                ),
                (chains::MARK_MASQ, format!("-j MARK --or-mark {m}")),
            ];
            if writes_egress_masq(ctx) {
                decl.push(chains::EGRESS_MASQ);
                for cidr in ctx.family_cidrs() {
                    rules.push((
                        chains::EGRESS_MASQ,
                        format!(
                            "-d {cidr} -m comment --comment \"causeway: pod-to-pod traffic keeps its source\" -j RETURN"
                        ),
                    ));
                }
                for cidr in ctx.family_cidrs() {
                    rules.push((
                        chains::EGRESS_MASQ,
                        format!("-s {cidr} -m comment --comment \"causeway: pod traffic leaving the cluster is masqueraded\" -j MASQUERADE"),
                    ));
                }
            }
            (decl, rules)
        }
    }
}

/// The last rule of nat `KUBE-SERVICES`: NodePorts on the node's local addresses.
fn nodeports_rule(ctx: &NodeCtx) -> String {
    let not_lo = match (ctx.family, ctx.localhost_nodeports) {
        (Family::V4, false) => " ! -d 127.0.0.0/8",
        (Family::V4, true) => "",
        (Family::V6, _) => " ! -d ::1/128",
    };
    format!(
        "-m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL{not_lo} -j {}",
        chains::NODEPORTS
    )
}

/// Whether `existing` already has `spec` in `table`/`chain`.
fn has_rule(existing: &Dump, table: Table, chain: &str, spec: &str) -> bool {
    let want = canonical(&tokenize(spec));
    existing.chain(table.as_str(), chain).iter().any(|r| canonical(r) == want)
}

/// A full sync: every chain we own declared (flushed) and written, missing jump rules added, and every
/// per-service chain found in `existing` (the current `iptables-save`) that the ruleset no longer has deleted.
pub fn render_full(rs: &Ruleset, existing: &Dump) -> Restore {
    let mut w = Writer::default();
    let ctx = &rs.ctx;
    let jumps = jump_rules(ctx);
    for table in [Table::Filter, Table::Nat] {
        let (decl, fixed_rules) = fixed(ctx, table);
        w.line(None, &format!("*{}", table.as_str()));
        for c in &decl {
            w.line(None, &format!(":{c} - [0:0]"));
        }
        let mut stale = Vec::new();
        if table == Table::Nat {
            for s in rs.services.values() {
                for c in &s.chains {
                    w.line(Some(&s.name), &format!(":{} - [0:0]", c.name));
                }
            }
            let ours: BTreeSet<&str> =
                rs.services.values().flat_map(|s| s.chains.iter().map(|c| c.name.as_str())).collect();
            if let Some(t) = existing.tables.get("nat") {
                stale =
                    t.chains.keys().filter(|c| is_service_chain(c) && !ours.contains(c.as_str())).cloned().collect();
            }
            for c in &stale {
                w.line(None, &format!(":{c} - [0:0]"));
            }
        }
        for j in jumps.iter().filter(|j| j.table == table) {
            if !has_rule(existing, table, j.chain, &j.spec) {
                if j.prepend {
                    w.line(None, &format!("-I {} 1 {}", j.chain, j.spec));
                } else {
                    w.line(None, &format!("-A {} {}", j.chain, j.spec));
                }
            }
        }
        for (chain, spec) in &fixed_rules {
            w.line(None, &format!("-A {chain} {spec}"));
        }
        for s in rs.services.values() {
            for r in s.top.iter().filter(|r| r.table == table) {
                w.line(Some(&s.name), &format!("-A {} {}", r.chain, r.spec));
            }
            if table == Table::Nat {
                for c in &s.chains {
                    for r in &c.rules {
                        w.line(Some(&s.name), &format!("-A {} {r}", c.name));
                    }
                }
            }
        }
        if table == Table::Nat {
            w.line(None, &format!("-A {} {}", chains::SERVICES, nodeports_rule(ctx)));
            for c in &stale {
                w.line(None, &format!("-X {c}"));
            }
        }
        w.line(None, "COMMIT");
    }
    w.finish(rs.services.len())
}

/// Whether a partial sync from `prev` to `next` is possible (same node settings and comment mode).
pub fn can_partial(prev: &Ruleset, next: &Ruleset) -> bool {
    prev.ctx == next.ctx && prev.large_cluster == next.large_cluster
}

fn top_multiset(s: Option<&ServiceRules>, table: Table) -> BTreeMap<(&'static str, &str), usize> {
    let mut m = BTreeMap::new();
    for r in s.into_iter().flat_map(|s| s.top.iter()).filter(|r: &&TopRule| r.table == table) {
        *m.entry((r.chain, r.spec.as_str())).or_insert(0) += 1;
    }
    m
}

/// A partial sync: only the service ports whose rules differ between `prev` (what the kernel has, from the last
/// successful sync) and `next`. Callers check [`can_partial`] first.
pub fn render_partial(prev: &Ruleset, next: &Ruleset) -> Restore {
    // Both maps are sorted by name: a merge walk finds the differences in one linear pass.
    type Change<'a> = (&'a ServicePortName, Option<&'a ServiceRules>, Option<&'a ServiceRules>);
    let mut changed: Vec<Change> = Vec::new();
    let mut a = prev.services.iter().peekable();
    let mut b = next.services.iter().peekable();
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    changed.push((ka, Some(va), None));
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    changed.push((kb, None, Some(vb)));
                    b.next();
                }
                std::cmp::Ordering::Equal => {
                    if !(std::sync::Arc::ptr_eq(va, vb) || va == vb) {
                        changed.push((ka, Some(va), Some(vb)));
                    }
                    a.next();
                    b.next();
                }
            },
            (Some((ka, va)), None) => {
                changed.push((ka, Some(va), None));
                a.next();
            }
            (None, Some((kb, vb))) => {
                changed.push((kb, None, Some(vb)));
                b.next();
            }
        }
    }
    let mut w = Writer::default();
    if changed.is_empty() {
        return w.finish(0);
    }
    for table in [Table::Filter, Table::Nat] {
        let mut body: Vec<(&ServicePortName, String)> = Vec::new();
        let mut decls: Vec<(&ServicePortName, String)> = Vec::new();
        let mut deletes: Vec<(&ServicePortName, String)> = Vec::new();
        for (name, a, b) in &changed {
            let old = top_multiset(*a, table);
            let new = top_multiset(*b, table);
            for ((chain, spec), n) in &old {
                for _ in new.get(&(*chain, *spec)).copied().unwrap_or(0)..*n {
                    body.push((name, format!("-D {chain} {spec}")));
                }
            }
            for ((chain, spec), n) in &new {
                for _ in old.get(&(*chain, *spec)).copied().unwrap_or(0)..*n {
                    body.push((name, format!("-I {chain} 1 {spec}")));
                }
            }
            if table == Table::Nat {
                let keep: BTreeSet<&str> = b.iter().flat_map(|s| s.chains.iter().map(|c| c.name.as_str())).collect();
                for c in b.iter().flat_map(|s| s.chains.iter()) {
                    decls.push((name, format!(":{} - [0:0]", c.name)));
                }
                for c in a.iter().flat_map(|s| s.chains.iter()).filter(|c| !keep.contains(c.name.as_str())) {
                    decls.push((name, format!(":{} - [0:0]", c.name)));
                    deletes.push((name, format!("-X {}", c.name)));
                }
            }
        }
        if table == Table::Nat {
            // Chain rules after the -D/-I lines, -X last: a chain is deleted only once nothing refers to it.
            for (name, _, b) in &changed {
                for c in b.iter().flat_map(|s| s.chains.iter()) {
                    for r in &c.rules {
                        body.push((name, format!("-A {} {r}", c.name)));
                    }
                }
            }
        }
        if body.is_empty() && decls.is_empty() && deletes.is_empty() {
            continue;
        }
        w.line(None, &format!("*{}", table.as_str()));
        for (n, l) in decls.iter().chain(body.iter()).chain(deletes.iter()) {
            w.line(Some(n), l);
        }
        w.line(None, "COMMIT");
    }
    w.finish(changed.len())
}

/// The complete restore text of a ruleset on an empty machine: what golden files hold.
pub fn render_iptables(rs: &Ruleset) -> String {
    render_full(rs, &Dump::default()).text
}

/// The line number (1-based) in an `iptables-restore` error message such as
/// `iptables-restore: line 12 failed` or `iptables-restore v1.8.9 (nf_tables): line 12: RULE_APPEND failed`.
pub fn failed_line(stderr: &str) -> Option<usize> {
    let idx = stderr.find("line ")?;
    let digits: String = stderr[idx + 5..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Counts `-A` lines per table in a full render (for metrics).
pub fn count_rules(text: &str) -> usize {
    text.lines().filter(|l| l.starts_with("-A ") || l.starts_with("-I ")).count()
}

/// Appends `-A` lines of one chain for display in diagnostics.
pub fn describe(s: &ServiceRules) -> String {
    let mut out = String::new();
    for r in &s.top {
        let _ = writeln!(out, "{} -A {} {}", r.table.as_str(), r.chain, r.spec);
    }
    for c in &s.chains {
        for r in &c.rules {
            let _ = writeln!(out, "nat -A {} {r}", c.name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_line_forms() {
        assert_eq!(failed_line("iptables-restore: line 12 failed\n"), Some(12));
        assert_eq!(
            failed_line(
                "iptables-restore v1.8.9 (nf_tables): line 7: RULE_DELETE failed (No such file or directory): rule in chain KUBE-SERVICES"
            ),
            Some(7)
        );
        assert_eq!(failed_line("Another app is currently holding the xtables lock"), None);
    }
}
