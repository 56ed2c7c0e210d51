//! Issue 5 item 9: upstream kube-proxy (iptables mode, built from `k8s.io/kubernetes` by `tests/cluster/build.sh`)
//! and `causeway-node --kubeconfig` against the same API objects produce the same `KUBE-*` nat content, compared
//! order-insensitively (chains and rules as sets, counters dropped). The known, intended differences are listed in
//! [`KNOWN_ONLY_KUBE_PROXY`] / [`KNOWN_ONLY_CAUSEWAY`] and asserted exactly, so a new difference (or a difference
//! that went away) fails the test.
//!
//! Both run one after the other inside one network namespace of the test's own (the API server is bound to its
//! loopback): kube-proxy syncs, its table is saved, it is stopped and `kube-proxy --cleanup` removes its rules;
//! then the agent syncs the same objects. The host's namespace is never touched.

mod control_plane;

use control_plane::*;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

const KUBE_PROXY: &str = "/var/cache/causeway/k8s-v1.35.4/kube-proxy";
const NODE: &str = "node-a";

/// The objects: a Node (podCIDR, InternalIP) and Services of every kind the agent renders.
const OBJECTS: &str = "apiVersion: v1
kind: Node
metadata: {name: node-a, labels: {kubernetes.io/hostname: node-a}}
spec: {podCIDR: 10.244.0.0/24, podCIDRs: [10.244.0.0/24]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}, {name: dns, port: 53, targetPort: 5353, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata: {name: sticky, namespace: default}
spec:
  clusterIP: 10.96.0.11
  sessionAffinity: ClientIP
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: np, namespace: default}
spec:
  type: NodePort
  clusterIP: 10.96.0.12
  externalIPs: [192.168.77.50]
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP, nodePort: 30080}]
---
apiVersion: v1
kind: Service
metadata: {name: npl, namespace: default}
spec:
  type: NodePort
  clusterIP: 10.96.0.13
  externalTrafficPolicy: Local
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP, nodePort: 30081}]
---
apiVersion: v1
kind: Service
metadata: {name: itp, namespace: default}
spec:
  clusterIP: 10.96.0.14
  internalTrafficPolicy: Local
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: default}
spec:
  clusterIP: 10.96.0.15
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
";

fn slice(service: &str, ports: &str, endpoints: &[(&str, &str)]) -> String {
    let eps: String = endpoints
        .iter()
        .map(|(ip, node)| format!("- {{addresses: [\"{ip}\"], nodeName: {node}, conditions: {{ready: true, serving: true, terminating: false}}}}\n"))
        .collect();
    format!(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {service}-1\n  namespace: default\n  \
         labels: {{kubernetes.io/service-name: {service}, endpointslice.kubernetes.io/managed-by: test}}\n\
         addressType: IPv4\nports: {ports}\nendpoints:\n{eps}"
    )
}

fn slices() -> String {
    let http = "[{name: http, port: 8080, protocol: TCP}]";
    let two = [("10.244.0.5", NODE), ("10.244.1.5", "node-b")];
    [
        slice("web", "[{name: http, port: 8080, protocol: TCP}, {name: dns, port: 5353, protocol: UDP}]", &two),
        slice("sticky", http, &two),
        slice("np", http, &two),
        slice("npl", http, &two),
        slice("itp", http, &two),
    ]
    .concat()
}

/// The `KUBE-*` content of a nat table: chain declarations (counters and policy dropped) and every rule of a
/// `KUBE-*` chain or jumping to one.
fn kube_content(nat: &str) -> BTreeSet<String> {
    nat.lines()
        .filter_map(|l| {
            if let Some(decl) = l.strip_prefix(':') {
                let name = decl.split_whitespace().next()?;
                return name.starts_with("KUBE-").then(|| format!(":{name}"));
            }
            let rule = l.strip_prefix("-A ")?;
            let chain = rule.split_whitespace().next()?;
            (chain.starts_with("KUBE-") || rule.contains("-j KUBE-")).then(|| l.to_string())
        })
        .collect()
}

const LOCALHOST_NODEPORTS: &str = "kube-proxy accepts NodePorts on 127.0.0.0/8 by default \
     (--iptables-localhost-nodeports, with route_localnet=1 and an nfacct counter); causeway-node does not unless \
     --localhost-nodeports is given, because it does not set route_localnet (a known security footgun, \
     CVE-2020-8558)";
const RECENT_ORDER: &str = "same matches in another order: causeway-rules renders `-m tcp` before `-m recent --set`, \
     kube-proxy after it; with `-p tcp` already in the rule the two are equivalent (only TCP packets reach the \
     recent match either way)";

/// Rules present only in kube-proxy's table, by design (each with the reason).
const KNOWN_ONLY_KUBE_PROXY: &[(&str, &str)] = &[
    (
        "-A KUBE-NODEPORTS -d 127.0.0.0/8 -p tcp -m comment --comment \"default/np:http\" -m tcp --dport 30080 -m nfacct \
         --nfacct-name  localhost_nps_accepted_pkts -j KUBE-EXT-QUMPV5Z3SF2IMFUJ",
        LOCALHOST_NODEPORTS,
    ),
    (
        "-A KUBE-NODEPORTS -d 127.0.0.0/8 -p tcp -m comment --comment \"default/npl:http\" -m tcp --dport 30081 -m nfacct \
         --nfacct-name  localhost_nps_accepted_pkts -j KUBE-EXT-BZ5JPCVO4OCN4IDL",
        LOCALHOST_NODEPORTS,
    ),
    (
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this \
         chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS",
        LOCALHOST_NODEPORTS,
    ),
    (
        "-A KUBE-SEP-5JVIOGTSXP5GUM2F -p tcp -m comment --comment \"default/sticky:http\" -m recent --set --name \
         KUBE-SEP-5JVIOGTSXP5GUM2F --mask 255.255.255.255 --rsource -m tcp -j DNAT --to-destination 10.244.1.5:8080",
        RECENT_ORDER,
    ),
    (
        "-A KUBE-SEP-GARCDMCMKIOMQ542 -p tcp -m comment --comment \"default/sticky:http\" -m recent --set --name \
         KUBE-SEP-GARCDMCMKIOMQ542 --mask 255.255.255.255 --rsource -m tcp -j DNAT --to-destination 10.244.0.5:8080",
        RECENT_ORDER,
    ),
];
/// Rules present only in the agent's table, by design (each with the reason).
const KNOWN_ONLY_CAUSEWAY: &[(&str, &str)] = &[
    (
        "-A KUBE-SERVICES ! -d 127.0.0.0/8 -m comment --comment \"kubernetes service nodeports; NOTE: this must be the \
         last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS",
        LOCALHOST_NODEPORTS,
    ),
    (
        "-A KUBE-SEP-5JVIOGTSXP5GUM2F -p tcp -m comment --comment \"default/sticky:http\" -m tcp -m recent --set --name \
         KUBE-SEP-5JVIOGTSXP5GUM2F --mask 255.255.255.255 --rsource -j DNAT --to-destination 10.244.1.5:8080",
        RECENT_ORDER,
    ),
    (
        "-A KUBE-SEP-GARCDMCMKIOMQ542 -p tcp -m comment --comment \"default/sticky:http\" -m tcp -m recent --set --name \
         KUBE-SEP-GARCDMCMKIOMQ542 --mask 255.255.255.255 --rsource -j DNAT --to-destination 10.244.0.5:8080",
        RECENT_ORDER,
    ),
];

fn wait_for_table(what: &str, proc: &mut Agent, mut done: impl FnMut(&str) -> bool) -> String {
    let mut last = String::new();
    wait_for(what, Duration::from_secs(30), proc, || {
        last = nat_table();
        done(&last)
    });
    // One more full period: both sync in bursts; take the table once it is stable.
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = nat_table();
        if kube_content(&now) == kube_content(&last) {
            return now;
        }
        last = now;
    }
}

fn spawn(plane: &ControlPlane, name: &str, program: &str, args: &[&str]) -> Agent {
    let log = plane.dir().join(format!("{name}.log"));
    let file = std::fs::File::create(&log).expect("log file");
    let child = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {program}: {e}"));
    Agent { child, log }
}

#[test]
fn kube_proxy_and_causeway_node_program_the_same_kube_chains() {
    assert!(
        std::path::Path::new(KUBE_PROXY).exists(),
        "{KUBE_PROXY} is missing: run tests/cluster/build.sh (it prints KUBE_PROXY=)"
    );
    let _netns = enter_netns();
    // The node's InternalIP lives on lo of the test namespace.
    let ip = Command::new("ip").args(["addr", "add", "192.168.77.2/32", "dev", "lo"]).output().expect("ip");
    assert!(ip.status.success(), "ip addr add: {}", String::from_utf8_lossy(&ip.stderr));
    let plane = ControlPlane::start();
    plane.kubectl(&["apply", "-f", "-"], Some(&format!("{OBJECTS}{}", slices())));
    plane.kubectl(
        &[
            "patch",
            "node",
            NODE,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"addresses":[{"type":"InternalIP","address":"192.168.77.2"}],"conditions":[{"type":"Ready","status":"True"}]}}"#,
        ],
        None,
    );
    let kubeconfig = plane.kubeconfig().to_owned();
    let sync_of_all = |nat: &str| {
        ["web:http", "web:dns", "sticky:http", "npl:http", "itp:http"]
            .iter()
            .all(|s| nat.contains(&format!("default/{s} cluster IP")))
    };

    let mut kp = spawn(
        &plane,
        "kube-proxy",
        KUBE_PROXY,
        &[
            "--kubeconfig",
            &kubeconfig,
            "--hostname-override",
            NODE,
            "--cluster-cidr",
            "10.244.0.0/16",
            "--proxy-mode",
            "iptables",
            // Global sysctls are left alone (the conntrack table size and timeouts are not per namespace).
            "--conntrack-max-per-core",
            "0",
            "--conntrack-tcp-timeout-established",
            "0",
            "--conntrack-tcp-timeout-close-wait",
            "0",
            // No metrics or healthz listeners (it refuses port 0; empty disables them).
            "--metrics-bind-address",
            "",
            "--healthz-bind-address",
            "",
        ],
    );
    let kp_nat = wait_for_table("kube-proxy's rules", &mut kp, sync_of_all);
    drop(kp);
    let cleanup = Command::new(KUBE_PROXY).args(["--cleanup", "--proxy-mode", "iptables"]).output().expect("cleanup");
    assert!(cleanup.status.success(), "kube-proxy --cleanup: {}", String::from_utf8_lossy(&cleanup.stderr));
    assert!(kube_content(&nat_table()).is_empty(), "kube-proxy --cleanup left:\n{}", nat_table());

    let sysctls = plane.dir().join("no-sysctls");
    let lock = plane.dir().join("xtables.lock");
    let mut agent = spawn(
        &plane,
        "causeway-node",
        env!("CARGO_BIN_EXE_causeway-node"),
        &[
            "--node-name",
            NODE,
            "--kubeconfig",
            &kubeconfig,
            "--cluster-cidr",
            "10.244.0.0/16",
            "--no-cni",
            "--no-routes",
            "--sysctl-root",
            sysctls.to_str().expect("utf-8 path"),
            "--xtables-lock",
            lock.to_str().expect("utf-8 path"),
            "--admin-addr",
            "127.0.0.1:0",
            // Rules are this test's subject; heartbeats are `failover.rs`'.
            "--no-heartbeat",
        ],
    );
    let cw_nat = wait_for_table("causeway-node's rules", &mut agent, sync_of_all);
    drop(agent);

    let (kp_set, cw_set) = (kube_content(&kp_nat), kube_content(&cw_nat));
    let only_kp: BTreeSet<&String> = kp_set.difference(&cw_set).collect();
    let only_cw: BTreeSet<&String> = cw_set.difference(&kp_set).collect();
    println!(
        "{} KUBE-* lines from kube-proxy, {} from causeway-node, {} in common",
        kp_set.len(),
        cw_set.len(),
        kp_set.intersection(&cw_set).count()
    );
    let reason = |known: &[(&str, &str)], l: &str| {
        known.iter().find(|(k, _)| *k == l).map_or("UNEXPECTED", |(_, r)| *r).to_string()
    };
    for l in &only_kp {
        println!("only kube-proxy: {l}\n    why: {}", reason(KNOWN_ONLY_KUBE_PROXY, l));
    }
    for l in &only_cw {
        println!("only causeway:   {l}\n    why: {}", reason(KNOWN_ONLY_CAUSEWAY, l));
    }
    // Most of the content must be shared (guards against both sides being empty or unrelated).
    assert!(
        kp_set.intersection(&cw_set).count() >= 80,
        "only {} KUBE-* lines in common",
        kp_set.intersection(&cw_set).count()
    );
    let want_kp: BTreeSet<&str> = KNOWN_ONLY_KUBE_PROXY.iter().map(|(l, _)| *l).collect();
    let want_cw: BTreeSet<&str> = KNOWN_ONLY_CAUSEWAY.iter().map(|(l, _)| *l).collect();
    let got_kp: BTreeSet<&str> = only_kp.iter().map(|s| s.as_str()).collect();
    let got_cw: BTreeSet<&str> = only_cw.iter().map(|s| s.as_str()).collect();
    assert_eq!(got_kp, want_kp, "lines only kube-proxy writes differ from the known differences");
    assert_eq!(got_cw, want_cw, "lines only causeway-node writes differ from the known differences");
}
