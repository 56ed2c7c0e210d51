//! Rendered rules against the real kernel: every golden file loads with `iptables-restore --noflush` and reads
//! back (through `iptables-save`) equal to what we wrote; a sequence of partial syncs through the real sink
//! leaves exactly what a fresh full sync would. Needs root; runs in throwaway namespaces.

mod common;

use causeway_model::{EndpointInfo, Protocol, ServicePort, ServicePortName, ServiceTable};
use causeway_node::sink::{IptablesRestore, RuleSink};
use causeway_node::sync::{SyncKind, Syncer};
use causeway_rules::parse::{Dump, is_builtin_chain};
use causeway_rules::{Family, NodeCtx, build_ruleset, check_targets, compare, render_iptables};
use common::*;
use std::path::PathBuf;
use std::sync::Arc;

/// Compares the chains `expected` has (built-in chains only for the rules it put there).
fn assert_same(expected: &Dump, actual: &Dump, what: &str) {
    let only = |t: &str, c: &str| {
        let in_expected = expected.tables.get(t).is_some_and(|x| x.chains.contains_key(c));
        in_expected || (!is_builtin_chain(c) && (c.starts_with("KUBE-") || c.starts_with("CAUSEWAY-")))
    };
    if let Err(diff) = compare(expected, actual, Some(&only)) {
        panic!("{what}: kernel differs from the rendering:\n{diff}");
    }
}

#[test]
fn golden_files_load_into_iptables_and_read_back_equal() {
    require_root();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../rules/tests/golden");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("golden dir") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("rules") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("golden");
        let v6 = path.file_stem().and_then(|s| s.to_str()) == Some("ipv6");
        let (restore, save) =
            if v6 { ("ip6tables-restore", "ip6tables-save") } else { ("iptables-restore", "iptables-save") };
        let ns = Netns::new('k');
        let file = path.display().to_string();
        ns.exec(&["sh", "-c", &format!("{restore} --noflush -w 5 < '{file}'")]);
        let saved = ns.exec(&[save]);
        let actual = Dump::parse(&saved).expect("parse iptables-save");
        let expected = Dump::parse(&text).expect("parse golden");
        assert_same(&expected, &actual, &file);
        check_targets(&actual).unwrap_or_else(|e| panic!("{file}: {e}"));
        n += 1;
    }
    assert!(n >= 8, "only {n} golden files found in {}", dir.display());
}

fn mk_svc(name: &str, ip: &str, node_port: Option<u16>, eps: &[&str]) -> ServicePort {
    ServicePort {
        node_port,
        endpoints: eps.iter().map(|e| EndpointInfo::ready(e.parse().unwrap(), 8080, Some("node-a"))).collect(),
        ..ServicePort::new(ServicePortName::new("default", name, "http", Protocol::Tcp), ip.parse().unwrap(), 80)
    }
}

#[test]
fn partial_syncs_through_the_real_sink_equal_a_full_sync() {
    require_root();
    let ns = Netns::new('k');
    let mut ctx = NodeCtx::new("node-a", Family::V4);
    ctx.cluster_cidrs = vec!["10.244.0.0/16".parse().unwrap()];
    let a = mk_svc("a", "10.96.0.1", None, &["10.244.1.1", "10.244.1.2"]);
    let b = mk_svc("b", "10.96.0.2", Some(30002), &["10.244.1.3"]);
    let mut a2 = a.clone();
    a2.endpoints.pop();
    let mut a3 = a2.clone();
    a3.endpoints.clear();
    let mut b2 = b.clone();
    b2.session_affinity_timeout = Some(60);
    let c = mk_svc("c", "10.96.0.3", None, &["10.244.2.1", "10.244.2.2", "10.244.2.3"]);
    let steps = vec![
        vec![a.clone(), b.clone()],
        vec![a2.clone(), b.clone()],
        vec![a3.clone(), b.clone()],
        vec![a3.clone(), b2.clone(), c.clone()],
        vec![b2.clone(), c.clone()],
        vec![a.clone(), c],
        vec![],
    ];
    let ctx2 = ctx.clone();
    let results = ns.run(move || {
        let sink: Arc<dyn RuleSink> = Arc::new(IptablesRestore::v4());
        let mut syncer = Syncer::new(sink.clone());
        let mut out = Vec::new();
        for ports in steps {
            let table = ServiceTable { ports };
            let kind = syncer.sync(&table, &ctx2).map(|r| r.kind).map_err(|e| e.to_string());
            let saved = sink.save().map_err(|e| e.to_string());
            out.push((table, kind, saved));
        }
        out
    });
    for (i, (table, kind, saved)) in results.into_iter().enumerate() {
        let kind = kind.unwrap_or_else(|e| panic!("step {i}: {e}"));
        assert_eq!(kind, if i == 0 { SyncKind::Full } else { SyncKind::Partial }, "step {i}");
        let actual = saved.unwrap_or_else(|e| panic!("step {i}: {e}"));
        let (rs, _) = build_ruleset(&table, &ctx);
        let expected = Dump::parse(&render_iptables(&rs)).unwrap();
        assert_same(&expected, &actual, &format!("step {i}"));
        // No stale per-service chain is left behind.
        let nat = &actual.tables["nat"].chains;
        let stale: Vec<&String> =
            nat.keys().filter(|c| c.starts_with("KUBE-S") && !expected.tables["nat"].chains.contains_key(*c)).collect();
        assert!(stale.is_empty(), "step {i}: stale chains {stale:?}");
    }
}
