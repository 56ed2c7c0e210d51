//! Golden files, traced packets and partial-sync equivalence for the rule renderer.
//!
//! Each scenario renders a hand-made `ServiceTable` and compares it with `tests/golden/<name>.rules`
//! (regenerate with `UPDATE_GOLDEN=1 cargo test -p causeway-rules`), checks that every jump target exists, and
//! traces packets through the rendered text.

use causeway_model::{EndpointInfo, Protocol, ServicePort, ServicePortName, ServiceTable, TrafficPolicy};
use causeway_rules::parse::Dump;
use causeway_rules::{
    Family, NodeCtx, Packet, Verdict, build_ruleset, check_targets, compare, render_full, render_iptables,
    render_partial, trace,
};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

const NODE: &str = "node-a";
const NODE_IP: &str = "172.18.0.2";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn mk_ctx() -> NodeCtx {
    let mut c = NodeCtx::new(NODE, Family::V4);
    c.cluster_cidrs = vec!["10.244.0.0/16".parse().unwrap()];
    c.node_ips = vec![ip(NODE_IP)];
    c
}

fn mk_ep(addr: &str, port: u16, node: &str) -> EndpointInfo {
    EndpointInfo::ready(ip(addr), port, Some(node))
}

fn mk_svc(ns: &str, name: &str, port_name: &str, cluster_ip: &str, port: u16, eps: Vec<EndpointInfo>) -> ServicePort {
    ServicePort {
        endpoints: eps,
        ..ServicePort::new(ServicePortName::new(ns, name, port_name, Protocol::Tcp), ip(cluster_ip), port)
    }
}

fn table(mut ports: Vec<ServicePort>) -> ServiceTable {
    ports.sort_by(|a, b| a.name.cmp(&b.name));
    ServiceTable { ports }
}

fn pkt(src: &str, dst: &str, dport: u16) -> Packet {
    Packet { src: ip(src), dst: ip(dst), proto: Protocol::Tcp, dport }
}

fn dnat(eps: &[&str], masquerade: bool) -> Verdict {
    Verdict::Dnat { endpoints: eps.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(), masquerade }
}

/// Renders, compares with the golden file, checks targets, and traces each `(packet, expected verdict)`.
fn check(name: &str, t: &ServiceTable, ctx: &NodeCtx, traces: &[(Packet, Verdict)]) {
    let (rs, diags) = build_ruleset(t, ctx);
    assert!(diags.is_empty(), "{name}: unexpected diagnostics {diags:?}");
    let text = render_iptables(&rs);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(format!("{name}.rules"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let golden =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    let (want, got) = (Dump::parse(&golden).unwrap(), Dump::parse(&text).unwrap());
    if let Err(diff) = compare(&want, &got, None) {
        panic!("{name}: rendered rules differ from {}:\n{diff}", path.display());
    }
    check_targets(&got).unwrap_or_else(|e| panic!("{name}: {e}"));
    let local = [ip(NODE_IP)];
    for (p, want) in traces {
        let got = trace(&got, p, &local, ctx.masquerade_bit);
        assert_eq!(&got, want, "{name}: trace {p:?}");
    }
}

/// The reference's worked example (§5.12), compared order-insensitively with its nat table.
#[test]
fn worked_example_matches_reference() {
    let t = table(vec![mk_svc(
        "default",
        "web",
        "http",
        "10.96.0.10",
        80,
        vec![mk_ep("10.244.1.5", 8080, "n1"), mk_ep("10.244.2.7", 8080, "n2")],
    )]);
    let mut ctx = mk_ctx();
    ctx.localhost_nodeports = true;
    ctx.egress_masquerade = false;
    let (rs, _) = build_ruleset(&t, &ctx);
    let ours = Dump::parse(&render_iptables(&rs)).unwrap();
    let reference = Dump::parse(REFERENCE_EXAMPLE).unwrap();
    compare(
        &reference,
        &ours,
        Some(&|table: &str, c: &str| table == "nat" && c.starts_with("KUBE-") && c != "KUBE-PROXY-CANARY"),
    )
    .unwrap();
}

const REFERENCE_EXAMPLE: &str = r#"*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-SVC-CDGGSHYLG3RE2FKL - [0:0]
:KUBE-SEP-AFGSLHOD2HFNCBX4 - [0:0]
:KUBE-SEP-2RIJ5GIYXEFH6G4D - [0:0]
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-SERVICES -m comment --comment "default/web:http cluster IP" -m tcp -p tcp -d 10.96.0.10 --dport 80 -j KUBE-SVC-CDGGSHYLG3RE2FKL
-A KUBE-SVC-CDGGSHYLG3RE2FKL -m comment --comment "default/web:http cluster IP" -m tcp -p tcp -d 10.96.0.10 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
-A KUBE-SVC-CDGGSHYLG3RE2FKL -m comment --comment "default/web:http -> 10.244.1.5:8080" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-AFGSLHOD2HFNCBX4
-A KUBE-SVC-CDGGSHYLG3RE2FKL -m comment --comment "default/web:http -> 10.244.2.7:8080" -j KUBE-SEP-2RIJ5GIYXEFH6G4D
-A KUBE-SEP-AFGSLHOD2HFNCBX4 -m comment --comment default/web:http -s 10.244.1.5 -j KUBE-MARK-MASQ
-A KUBE-SEP-AFGSLHOD2HFNCBX4 -m comment --comment default/web:http -m tcp -p tcp -j DNAT --to-destination 10.244.1.5:8080
-A KUBE-SEP-2RIJ5GIYXEFH6G4D -m comment --comment default/web:http -s 10.244.2.7 -j KUBE-MARK-MASQ
-A KUBE-SEP-2RIJ5GIYXEFH6G4D -m comment --comment default/web:http -m tcp -p tcp -j DNAT --to-destination 10.244.2.7:8080
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
COMMIT
"#;

#[test]
fn golden_cluster_ip() {
    let t = table(vec![mk_svc(
        "default",
        "web",
        "http",
        "10.96.0.10",
        80,
        vec![mk_ep("10.244.1.5", 8080, "n1"), mk_ep("10.244.2.7", 8080, "n2"), mk_ep("10.244.10.2", 8080, NODE)],
    )]);
    check(
        "cluster_ip",
        &t,
        &mk_ctx(),
        &[
            // From a pod: DNAT to any endpoint, no masquerade.
            (
                pkt("10.244.0.9", "10.96.0.10", 80),
                dnat(&["10.244.1.5:8080", "10.244.10.2:8080", "10.244.2.7:8080"], false),
            ),
            // From outside the cluster CIDR: masqueraded.
            (
                pkt("172.18.0.100", "10.96.0.10", 80),
                dnat(&["10.244.1.5:8080", "10.244.10.2:8080", "10.244.2.7:8080"], true),
            ),
            // Hairpin: an endpoint reaching itself is masqueraded by its SEP rule.
            (
                pkt("10.244.1.5", "10.96.0.10", 80),
                dnat(&["10.244.1.5:8080", "10.244.10.2:8080", "10.244.2.7:8080"], true),
            ),
            (pkt("10.244.0.9", "10.96.0.10", 81), Verdict::NoMatch),
            (pkt("10.244.0.9", "10.96.0.11", 80), Verdict::NoMatch),
        ],
    );
}

#[test]
fn golden_node_port() {
    let mut s = mk_svc("default", "np", "", "10.96.0.20", 80, vec![mk_ep("10.244.1.5", 8080, "n1")]);
    s.node_port = Some(30080);
    check(
        "node_port",
        &table(vec![s]),
        &mk_ctx(),
        &[
            (pkt("172.18.0.100", NODE_IP, 30080), dnat(&["10.244.1.5:8080"], true)),
            (pkt("172.18.0.100", "10.96.0.20", 80), dnat(&["10.244.1.5:8080"], true)),
            // NodePorts only on local addresses, and not on 127.0.0.0/8 (localhost NodePorts off).
            (pkt("172.18.0.100", "172.18.0.3", 30080), Verdict::NoMatch),
            (pkt("127.0.0.1", "127.0.0.1", 30080), Verdict::NoMatch),
        ],
    );
}

#[test]
fn golden_external_traffic_policy_local() {
    let mut s = mk_svc(
        "default",
        "lb",
        "http",
        "10.96.0.30",
        80,
        vec![mk_ep("10.244.0.5", 8080, NODE), mk_ep("10.244.1.5", 8080, "n1")],
    );
    s.node_port = Some(30081);
    s.load_balancer_ips = vec![ip("172.18.255.200")];
    s.external_traffic_policy = TrafficPolicy::Local;
    s.health_check_node_port = Some(32000);
    let mut remote_only =
        mk_svc("default", "lb-remote", "http", "10.96.0.31", 80, vec![mk_ep("10.244.1.6", 8080, "n1")]);
    remote_only.node_port = Some(30082);
    remote_only.external_traffic_policy = TrafficPolicy::Local;
    check(
        "external_traffic_policy_local",
        &table(vec![s, remote_only]),
        &mk_ctx(),
        &[
            // External clients reach only the local endpoint, with their own source address.
            (pkt("172.18.0.100", NODE_IP, 30081), dnat(&["10.244.0.5:8080"], false)),
            (pkt("172.18.0.100", "172.18.255.200", 80), dnat(&["10.244.0.5:8080"], false)),
            // Pods are short-circuited to every endpoint.
            (pkt("10.244.0.9", "172.18.255.200", 80), dnat(&["10.244.0.5:8080", "10.244.1.5:8080"], false)),
            // The ClusterIP uses every endpoint.
            (pkt("10.244.0.9", "10.96.0.30", 80), dnat(&["10.244.0.5:8080", "10.244.1.5:8080"], false)),
            // No local endpoint: external traffic is dropped, ClusterIP still works.
            (pkt("172.18.0.100", NODE_IP, 30082), Verdict::Drop),
            (pkt("10.244.0.9", "10.96.0.31", 80), dnat(&["10.244.1.6:8080"], false)),
        ],
    );
}

#[test]
fn golden_internal_traffic_policy_local() {
    let mut s = mk_svc(
        "default",
        "itp",
        "",
        "10.96.0.40",
        53,
        vec![mk_ep("10.244.0.5", 53, NODE), mk_ep("10.244.1.5", 53, "n1")],
    );
    s.internal_traffic_policy = TrafficPolicy::Local;
    let mut none_here = mk_svc("default", "itp-remote", "", "10.96.0.41", 53, vec![mk_ep("10.244.1.6", 53, "n1")]);
    none_here.internal_traffic_policy = TrafficPolicy::Local;
    check(
        "internal_traffic_policy_local",
        &table(vec![s, none_here]),
        &mk_ctx(),
        &[
            (pkt("10.244.0.9", "10.96.0.40", 53), dnat(&["10.244.0.5:53"], false)),
            (pkt("10.244.0.9", "10.96.0.41", 53), Verdict::Drop),
        ],
    );
}

#[test]
fn golden_no_endpoints() {
    let mut s = mk_svc("default", "empty", "", "10.96.0.50", 80, vec![]);
    s.node_port = Some(30090);
    s.external_ips = vec![ip("172.18.0.50")];
    let mut not_ready = mk_ep("10.244.1.5", 80, "n1");
    not_ready.ready = false;
    not_ready.serving = false;
    let dead = mk_svc("default", "dead", "", "10.96.0.51", 80, vec![not_ready]);
    check(
        "no_endpoints",
        &table(vec![s, dead]),
        &mk_ctx(),
        &[
            (pkt("10.244.0.9", "10.96.0.50", 80), Verdict::Reject),
            (pkt("172.18.0.100", NODE_IP, 30090), Verdict::Reject),
            (pkt("172.18.0.100", "172.18.0.50", 80), Verdict::Reject),
            (pkt("10.244.0.9", "10.96.0.51", 80), Verdict::Reject),
        ],
    );
}

#[test]
fn golden_session_affinity() {
    let mut s = mk_svc(
        "default",
        "sticky",
        "http",
        "10.96.0.60",
        80,
        vec![mk_ep("10.244.1.5", 8080, "n1"), mk_ep("10.244.2.5", 8080, "n2")],
    );
    s.session_affinity_timeout = Some(10800);
    check(
        "session_affinity",
        &table(vec![s]),
        &mk_ctx(),
        &[(pkt("10.244.0.9", "10.96.0.60", 80), dnat(&["10.244.1.5:8080", "10.244.2.5:8080"], false))],
    );
}

#[test]
fn golden_terminating_fallback_and_source_ranges() {
    let mut term = mk_ep("10.244.1.5", 8080, "n1");
    term.ready = false;
    term.terminating = true;
    let mut gone = mk_ep("10.244.1.6", 8080, "n1");
    gone.ready = false;
    gone.serving = false;
    gone.terminating = true;
    let draining = mk_svc("default", "draining", "", "10.96.0.70", 80, vec![term, gone]);
    let mut fw = mk_svc("default", "fw", "", "10.96.0.71", 80, vec![mk_ep("10.244.2.5", 8080, "n2")]);
    fw.load_balancer_ips = vec![ip("172.18.255.201")];
    fw.load_balancer_source_ranges = vec!["192.168.0.0/16".into(), "172.18.0.0/24".into()];
    check(
        "terminating_and_source_ranges",
        &table(vec![draining, fw]),
        &mk_ctx(),
        &[
            (pkt("10.244.0.9", "10.96.0.70", 80), dnat(&["10.244.1.5:8080"], false)),
            (pkt("192.168.3.4", "172.18.255.201", 80), dnat(&["10.244.2.5:8080"], true)),
            (pkt("8.8.8.8", "172.18.255.201", 80), Verdict::Drop),
            // The node itself is inside an allowed range, so traffic sourced from the VIP is allowed too.
            (pkt("172.18.255.201", "172.18.255.201", 80), dnat(&["10.244.2.5:8080"], true)),
        ],
    );
}

#[test]
fn golden_ipv6() {
    let mut s = mk_svc("default", "v6", "http", "fd00:10:96::10", 80, vec![mk_ep("fd00:10:244:1::5", 8080, "n1")]);
    s.cluster_ips.push(ip("10.96.0.80"));
    s.node_port = Some(30100);
    let mut ctx = NodeCtx::new(NODE, Family::V6);
    ctx.cluster_cidrs = vec!["fd00:10:244::/56".parse().unwrap(), "10.244.0.0/16".parse().unwrap()];
    ctx.node_ips = vec![ip("fc00:f853:ccd:e793::2")];
    check(
        "ipv6",
        &table(vec![s]),
        &ctx,
        &[(pkt("fd00:10:244::9", "fd00:10:96::10", 80), dnat(&["[fd00:10:244:1::5]:8080"], false))],
    );
}

/// Invalid service ports become diagnostics; the rest renders.
#[test]
fn bad_input_is_skipped_with_a_diagnostic() {
    let good = mk_svc("default", "good", "", "10.96.0.90", 80, vec![mk_ep("10.244.1.5", 80, "n1")]);
    let zero_port = mk_svc("default", "zero", "", "10.96.0.91", 0, vec![]);
    let bad_name = mk_svc("default", "bad\" -j ACCEPT", "", "10.96.0.92", 80, vec![]);
    let mut bad_range = mk_svc("default", "badrange", "", "10.96.0.93", 80, vec![mk_ep("10.244.1.6", 80, "n1")]);
    bad_range.load_balancer_ips = vec![ip("172.18.255.202")];
    bad_range.load_balancer_source_ranges = vec!["not-a-cidr".into()];
    let mut foreign = mk_svc("default", "foreign", "", "10.96.0.94", 80, vec![mk_ep("fd00::5", 80, "n1")]);
    foreign.endpoints.push(mk_ep("10.244.1.7", 80, "n1"));
    let (rs, diags) = build_ruleset(&table(vec![good, zero_port, bad_name, bad_range, foreign]), &mk_ctx());
    let fields: Vec<(&str, &str)> = diags.iter().map(|d| (d.object.name.as_str(), d.field.as_str())).collect();
    assert_eq!(
        fields,
        [
            ("bad\" -j ACCEPT", "metadata.name"),
            ("badrange", "spec.loadBalancerSourceRanges"),
            ("foreign", "endpoints"),
            ("zero", "spec.ports[].port"),
        ]
    );
    let names: Vec<String> = rs.services.keys().map(|n| n.name.clone()).collect();
    assert_eq!(names, ["badrange", "foreign", "good"]);
    assert!(!render_iptables(&rs).contains("ACCEPT\""));
}

/// Large cluster mode drops endpoint comments, as kube-proxy does above 1000 endpoints.
#[test]
fn large_cluster_mode_drops_endpoint_comments() {
    let ports: Vec<ServicePort> = (0..501)
        .map(|i| {
            mk_svc(
                "ns",
                &format!("s{i}"),
                "",
                &format!("10.96.{}.{}", i / 250, i % 250 + 1),
                80,
                vec![
                    mk_ep(&format!("10.244.{}.{}", i / 250, i % 250 + 1), 80, "n1"),
                    mk_ep(&format!("10.245.{}.{}", i / 250, i % 250 + 1), 80, "n1"),
                ],
            )
        })
        .collect();
    let (rs, _) = build_ruleset(&table(ports), &mk_ctx());
    assert!(rs.large_cluster);
    let text = render_iptables(&rs);
    assert!(!text.lines().any(|l| l.starts_with("-A KUBE-SEP-") && l.contains("--comment")));
    assert!(text.contains("\"ns/s0 cluster IP\""));
}

/// A partial sync applied to the state left by a full sync gives exactly the next full sync, for a sequence of
/// changes (endpoint added/removed, Service added/removed, policy flipped, no endpoints).
#[test]
fn partial_sync_equals_full_sync() {
    let ctx = mk_ctx();
    let a =
        mk_svc("default", "a", "", "10.96.1.1", 80, vec![mk_ep("10.244.1.5", 80, "n1"), mk_ep("10.244.2.5", 80, "n2")]);
    let b = mk_svc("default", "b", "http", "10.96.1.2", 80, vec![mk_ep("10.244.1.6", 80, NODE)]);
    let mut steps: Vec<ServiceTable> = vec![table(vec![a.clone(), b.clone()])];
    let mut a2 = a.clone();
    a2.endpoints.push(mk_ep("10.244.3.5", 80, "n3"));
    steps.push(table(vec![a2.clone(), b.clone()]));
    let mut a3 = a2.clone();
    a3.endpoints.remove(0);
    a3.node_port = Some(30001);
    a3.external_traffic_policy = TrafficPolicy::Local;
    steps.push(table(vec![a3.clone(), b.clone()]));
    let mut b2 = b.clone();
    b2.endpoints.clear();
    steps.push(table(vec![a3.clone(), b2.clone()]));
    steps.push(table(vec![b2.clone()]));
    let c = mk_svc("default", "c", "", "10.96.1.3", 443, vec![mk_ep("10.244.4.4", 8443, "n1")]);
    steps.push(table(vec![b.clone(), c]));
    steps.push(table(vec![]));

    let mut kernel = Dump::default();
    let (first, _) = build_ruleset(&steps[0], &ctx);
    kernel.apply_restore(&render_full(&first, &kernel).text).unwrap();
    let mut prev = first;
    for (i, step) in steps.iter().enumerate().skip(1) {
        let (next, _) = build_ruleset(step, &ctx);
        // Reusing unchanged renderings gives exactly the fresh result.
        let (incremental, _) = causeway_rules::build_ruleset_incremental(step, &ctx, Some(&prev));
        assert_eq!(render_iptables(&incremental), render_iptables(&next), "step {i}: incremental build differs");
        let partial = render_partial(&prev, &next);
        kernel.apply_restore(&partial.text).unwrap_or_else(|e| panic!("step {i}: {e}\n{}", partial.text));
        let full = Dump::parse(&render_iptables(&next)).unwrap();
        compare(&full, &kernel, None).unwrap_or_else(|d| panic!("step {i}:\n{d}\npartial was:\n{}", partial.text));
        check_targets(&kernel).unwrap();
        assert!(partial.services_written <= 2, "step {i} rewrote {} services", partial.services_written);
        prev = next;
    }
    // Nothing changed → nothing to apply.
    assert!(render_partial(&prev, &prev.clone()).is_empty());
}

/// A full sync on top of leftovers deletes stale per-service chains and does not duplicate jump rules.
#[test]
fn full_sync_removes_stale_chains_and_keeps_jumps_unique() {
    let ctx = mk_ctx();
    let a = mk_svc("default", "a", "", "10.96.1.1", 80, vec![mk_ep("10.244.1.5", 80, "n1")]);
    let b = mk_svc("default", "b", "", "10.96.1.2", 80, vec![mk_ep("10.244.1.6", 80, "n1")]);
    let mut kernel = Dump::parse("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:FOREIGN - [0:0]\n-A FOREIGN -j RETURN\nCOMMIT\n").unwrap();
    let (one, _) = build_ruleset(&table(vec![a.clone(), b]), &ctx);
    kernel.apply_restore(&render_full(&one, &kernel).text).unwrap();
    let (two, _) = build_ruleset(&table(vec![a]), &ctx);
    let restore = render_full(&two, &kernel);
    kernel.apply_restore(&restore.text).unwrap();
    compare(&Dump::parse(&render_iptables(&two)).unwrap(), &kernel, Some(&|_t: &str, c: &str| c.starts_with("KUBE-")))
        .unwrap();
    assert_eq!(kernel.chain("nat", "PREROUTING").len(), 1, "jump rules are not duplicated");
    assert_eq!(kernel.chain("nat", "FOREIGN").len(), 1, "foreign chains are untouched");
}
