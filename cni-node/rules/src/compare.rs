//! An order-normalising comparison of two rulesets (restore text or `iptables-save` output), and a check that
//! every jump target exists.

use crate::parse::{Dump, canonical, is_builtin_chain, target_of};
use std::collections::BTreeSet;

/// Chains whose rule order does not matter (disjoint matches), apart from the NodePort jump kept last.
const UNORDERED: &[&str] = &["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-EXTERNAL-SERVICES", "KUBE-PROXY-FIREWALL"];

/// Targets that are not chains.
const BUILTIN_TARGETS: &[&str] = &[
    "ACCEPT",
    "DROP",
    "REJECT",
    "RETURN",
    "DNAT",
    "SNAT",
    "MASQUERADE",
    "MARK",
    "CONNMARK",
    "LOG",
    "REDIRECT",
    "NOTRACK",
    "CT",
];

/// Selects the (table, chain) pairs a comparison looks at.
pub type ChainFilter<'a> = &'a dyn Fn(&str, &str) -> bool;

/// One chain in normalised form.
fn normalised(dump: &Dump, table: &str, chain: &str) -> Vec<String> {
    let mut rules: Vec<String> = dump.chain(table, chain).iter().map(|r| canonical(r)).collect();
    if UNORDERED.contains(&chain) {
        let last = rules.iter().position(|r| r.contains("-jKUBE-NODEPORTS") && table == "nat").map(|i| rules.remove(i));
        rules.sort();
        rules.extend(last);
    }
    rules
}

/// Compares the chains named in `only` (or, when `only` is `None`, every chain of either side), ignoring rule
/// order where it does not matter and spelling differences `canonical` removes. Returns a readable diff.
pub fn compare(expected: &Dump, actual: &Dump, only: Option<ChainFilter<'_>>) -> Result<(), String> {
    let mut diff = String::new();
    let tables: BTreeSet<&String> = expected.tables.keys().chain(actual.tables.keys()).collect();
    for t in tables {
        let mut names: BTreeSet<&String> = BTreeSet::new();
        for d in [expected, actual] {
            if let Some(tt) = d.tables.get(t.as_str()) {
                names.extend(tt.chains.keys());
            }
        }
        for c in names {
            if only.is_some_and(|f| !f(t, c)) {
                continue;
            }
            let e_has = expected.tables.get(t.as_str()).is_some_and(|x| x.chains.contains_key(c.as_str()));
            let a_has = actual.tables.get(t.as_str()).is_some_and(|x| x.chains.contains_key(c.as_str()));
            if e_has != a_has {
                diff.push_str(&format!(
                    "{t} {c}: chain {} only on the {} side\n",
                    c,
                    if e_has { "expected" } else { "actual" }
                ));
                continue;
            }
            let (e, a) = (normalised(expected, t, c), normalised(actual, t, c));
            if e != a {
                diff.push_str(&format!("{t} {c}:\n  expected:\n"));
                for r in &e {
                    diff.push_str(&format!("    {r}\n"));
                }
                diff.push_str("  actual:\n");
                for r in &a {
                    diff.push_str(&format!("    {r}\n"));
                }
            }
        }
    }
    if diff.is_empty() { Ok(()) } else { Err(diff) }
}

/// Every `-j`/`-g` target is a built-in target or a chain present in the same table.
pub fn check_targets(dump: &Dump) -> Result<(), String> {
    let mut missing = Vec::new();
    for (t, table) in &dump.tables {
        for (c, rules) in &table.chains {
            for r in rules {
                if let Some(target) = target_of(r)
                    && !BUILTIN_TARGETS.contains(&target)
                    && !is_builtin_chain(target)
                    && !table.chains.contains_key(target)
                {
                    missing.push(format!("{t} {c} jumps to missing chain {target}"));
                }
            }
        }
    }
    if missing.is_empty() { Ok(()) } else { Err(missing.join("\n")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_only_matters_where_it_should() {
        let a = Dump::parse("*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-NODEPORTS - [0:0]\n:X - [0:0]\n:Y - [0:0]\n-A KUBE-SERVICES -d 1.1.1.1 -j X\n-A KUBE-SERVICES -d 2.2.2.2 -j Y\n-A KUBE-SERVICES -j KUBE-NODEPORTS\n-A X -j ACCEPT\n-A X -j DROP\nCOMMIT\n").unwrap();
        let b = Dump::parse("*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-NODEPORTS - [0:0]\n:X - [0:0]\n:Y - [0:0]\n-A KUBE-SERVICES -d 2.2.2.2/32 -j Y\n-A KUBE-SERVICES -d 1.1.1.1 -j X\n-A KUBE-SERVICES -j KUBE-NODEPORTS\n-A X -j ACCEPT\n-A X -j DROP\nCOMMIT\n").unwrap();
        assert_eq!(compare(&a, &b, None), Ok(()));
        let c = Dump::parse("*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-NODEPORTS - [0:0]\n:X - [0:0]\n:Y - [0:0]\n-A KUBE-SERVICES -d 1.1.1.1 -j X\n-A KUBE-SERVICES -d 2.2.2.2 -j Y\n-A KUBE-SERVICES -j KUBE-NODEPORTS\n-A X -j DROP\n-A X -j ACCEPT\nCOMMIT\n").unwrap();
        assert!(compare(&a, &c, None).is_err());
    }

    #[test]
    fn missing_targets_are_found() {
        let d = Dump::parse("*nat\n:A - [0:0]\n-A A -j B\n-A A -j DNAT --to-destination 1.2.3.4:80\nCOMMIT\n").unwrap();
        assert_eq!(check_targets(&d), Err("nat A jumps to missing chain B".to_string()));
    }
}
