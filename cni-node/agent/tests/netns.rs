//! The agent against real iptables in network namespaces: a node namespace with pods on a bridge, an outside
//! client namespace, the `causeway-node` binary running in the node namespace and reading a manifests
//! directory. Needs root (CI runs as root).

mod common;

use common::*;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A Service manifest; `extra_spec` lines are indented under `spec:`.
#[allow(clippy::too_many_arguments)]
fn svc_yaml(
    name: &str,
    cluster_ip: &str,
    port_name: &str,
    port: u16,
    target: u16,
    ty: &str,
    node_port: Option<u16>,
    extra_spec: &str,
) -> String {
    let np = node_port.map(|p| format!("    nodePort: {p}\n")).unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  type: {ty}\n  clusterIP: {cluster_ip}\n  clusterIPs: [{cluster_ip}]\n  ports:\n  - name: {port_name}\n    port: {port}\n    targetPort: {target}\n    protocol: TCP\n{np}{extra_spec}"
    )
}

fn base(lab: &Lab) {
    lab.write_manifest("00-node.yaml", &node_yaml("node-a", "10.244.0.0/24", NODE_IP));
}

#[test]
fn cluster_ip_from_pods_including_hairpin_and_foreign_rules_untouched() {
    let lab = Lab::new(3);
    // Rules and chains that are not ours, created before the agent starts.
    lab.node.exec(&["iptables", "-t", "nat", "-N", "FOREIGN"]);
    lab.node.exec(&["iptables", "-t", "nat", "-A", "FOREIGN", "-s", "192.0.2.1", "-j", "RETURN"]);
    lab.node.exec(&["iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "192.0.2.2", "-j", "FOREIGN"]);
    lab.node.exec(&["iptables", "-A", "INPUT", "-s", "192.0.2.3", "-j", "ACCEPT"]);
    let _s1 = Server::start(&lab.pods[1], "pod1", addr("0.0.0.0:8080"));
    let _s2 = Server::start(&lab.pods[2], "pod2", addr("0.0.0.0:8080"));
    base(&lab);
    lab.write_manifest("10-web.yaml", &svc_yaml("web", "10.96.0.10", "http", 80, 8080, "ClusterIP", None, ""));
    lab.write_manifest(
        "11-web-eps.yaml",
        &slice_yaml(
            "web",
            "web-1",
            "http",
            8080,
            &[(&lab.pod_ip(1), "node-a", true), (&lab.pod_ip(2), "node-a", true)],
        ),
    );
    let agent = lab.start_agent(&[]);
    lab.wait_ready(&agent);

    // pod0 reaches both endpoints through the ClusterIP, with its own source address.
    let mut seen = BTreeSet::new();
    for _ in 0..40 {
        match hello(&lab.pods[0], addr("10.96.0.10:80")) {
            Reply::Hello(name, client) => {
                assert_eq!(client, lab.pod_ip(0), "pod-to-Service traffic keeps the pod's address");
                seen.insert(name);
            }
            other => panic!("ClusterIP from pod0: {other:?}\n{}", agent.log_text()),
        }
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen, BTreeSet::from(["pod1".to_string(), "pod2".to_string()]));

    // Hairpin: pod1 reaches itself through the Service (masqueraded by its SEP rule).
    lab.write_manifest(
        "11-web-eps.yaml",
        &slice_yaml("web", "web-1", "http", 8080, &[(&lab.pod_ip(1), "node-a", true)]),
    );
    wait_for("only pod1 behind web", Duration::from_secs(10), || {
        (0..5)
            .all(|_| matches!(hello(&lab.pods[0], addr("10.96.0.10:80")), Reply::Hello(n, _) if n == "pod1"))
            .then_some(())
    });
    match hello(&lab.pods[1], addr("10.96.0.10:80")) {
        Reply::Hello(name, _) => assert_eq!(name, "pod1"),
        other => panic!("hairpin: {other:?}"),
    }

    // Nothing we did not create was touched, across a full and a partial sync.
    let saved = lab.node.iptables_save();
    assert!(saved.contains("-A FOREIGN -s 192.0.2.1/32 -j RETURN"), "{saved}");
    assert!(saved.contains("-A POSTROUTING -s 192.0.2.2/32 -j FOREIGN"), "{saved}");
    assert!(saved.contains("-A INPUT -s 192.0.2.3/32 -j ACCEPT"), "{saved}");
    // Jump rules exist exactly once.
    assert_eq!(
        saved.matches("-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES").count(),
        1,
        "{saved}"
    );
    // The kernel's rules equal the rendering (order-insensitive where order does not matter).
    let live = causeway_rules::Dump::parse(&saved).unwrap();
    causeway_rules::check_targets(&live).unwrap();

    // Metrics.
    let m = lab.metrics();
    assert!(m.contains("causeway_node_sync_duration_seconds_bucket{family=\"ipv4\",kind=\"full\""), "{m}");
    assert!(m.contains("causeway_node_sync_duration_seconds_bucket{family=\"ipv4\",kind=\"partial\""), "{m}");
    assert!(m.contains("causeway_node_network_programming_latency_seconds_count"), "{m}");
    assert!(m.contains("causeway_node_iptables_rules "), "{m}");
    // Sysctls set in the node namespace.
    assert_eq!(lab.node.exec(&["cat", "/proc/sys/net/ipv4/ip_forward"]).trim(), "1");
    assert_eq!(lab.node.exec(&["cat", "/proc/sys/net/bridge/bridge-nf-call-iptables"]).trim(), "1");
}

#[test]
fn node_port_from_outside_and_no_endpoints_rejected_at_once() {
    let lab = Lab::new(2);
    let _s0 = Server::start(&lab.pods[0], "pod0", addr("0.0.0.0:8080"));
    base(&lab);
    lab.write_manifest("10-np.yaml", &svc_yaml("np", "10.96.0.20", "http", 80, 8080, "NodePort", Some(30080), ""));
    lab.write_manifest("11-np-eps.yaml", &slice_yaml("np", "np-1", "http", 8080, &[(&lab.pod_ip(0), "node-b", true)]));
    lab.write_manifest(
        "20-empty.yaml",
        &svc_yaml("empty", "10.96.0.21", "http", 80, 8080, "NodePort", Some(30081), ""),
    );
    let agent = lab.start_agent(&[]);
    lab.wait_ready(&agent);

    match hello(&lab.outside, addr(&format!("{NODE_IP}:30080"))) {
        Reply::Hello(name, client) => {
            assert_eq!(name, "pod0");
            // externalTrafficPolicy Cluster: masqueraded to the node's address on the pod network.
            assert_ne!(client, OUTSIDE_IP);
        }
        other => panic!("NodePort from outside: {other:?}\n{}", agent.log_text()),
    }
    // A Service without endpoints is refused at once, from a pod and from outside.
    for (from, to) in [(&lab.pods[1], "10.96.0.21:80".to_string()), (&lab.outside, format!("{NODE_IP}:30081"))] {
        let t = Instant::now();
        let r = hello(from, addr(&to));
        assert_eq!(r, Reply::Refused, "{to}");
        assert!(t.elapsed() < Duration::from_secs(1), "{to} took {:?}", t.elapsed());
    }
    // Egress masquerade: pod traffic to the outside network leaves with the node's address.
    let _out = Server::start(&lab.outside, "outside", addr("0.0.0.0:9000"));
    match hello(&lab.pods[1], addr(&format!("{OUTSIDE_IP}:9000"))) {
        Reply::Hello(_, client) => assert_eq!(client, NODE_IP),
        other => panic!("pod to outside: {other:?}"),
    }
}

#[test]
fn session_affinity_sticks() {
    let lab = Lab::new(4);
    let servers: Vec<Server> =
        (1..4).map(|i| Server::start(&lab.pods[i], &format!("pod{i}"), addr("0.0.0.0:8080"))).collect();
    base(&lab);
    let eps: Vec<String> = (1..4).map(|i| lab.pod_ip(i)).collect();
    let eps_ref: Vec<(&str, &str, bool)> = eps.iter().map(|e| (e.as_str(), "node-a", true)).collect();
    lab.write_manifest(
        "10-sticky.yaml",
        &svc_yaml("sticky", "10.96.0.30", "http", 80, 8080, "ClusterIP", None, "  sessionAffinity: ClientIP\n"),
    );
    lab.write_manifest("11-sticky-eps.yaml", &slice_yaml("sticky", "sticky-1", "http", 8080, &eps_ref));
    let agent = lab.start_agent(&[]);
    lab.wait_ready(&agent);
    let mut names = BTreeSet::new();
    for _ in 0..12 {
        match hello(&lab.pods[0], addr("10.96.0.30:80")) {
            Reply::Hello(n, _) => {
                names.insert(n);
            }
            other => panic!("{other:?}\n{}", agent.log_text()),
        }
    }
    assert_eq!(names.len(), 1, "ClientIP affinity: one backend for one client, got {names:?}");
    drop(servers);
}

#[test]
fn external_traffic_policy_local_uses_local_endpoints_and_keeps_client_ip() {
    let lab = Lab::new(2);
    let _s0 = Server::start(&lab.pods[0], "local0", addr("0.0.0.0:8080"));
    base(&lab);
    let lb = "  externalTrafficPolicy: Local\n  healthCheckNodePort: 32100\n";
    let status = "status:\n  loadBalancer:\n    ingress:\n    - ip: 172.18.255.200\n";
    lab.write_manifest(
        "10-lb.yaml",
        &format!("{}{status}", svc_yaml("lb", "10.96.0.40", "http", 80, 8080, "LoadBalancer", Some(30090), lb)),
    );
    // One local endpoint and one on another node (its address does not exist: reaching it would time out).
    lab.write_manifest(
        "11-lb-eps.yaml",
        &slice_yaml("lb", "lb-1", "http", 8080, &[(&lab.pod_ip(0), "node-a", true), ("10.244.1.50", "node-b", true)]),
    );
    let lb2 = "  externalTrafficPolicy: Local\n  healthCheckNodePort: 32101\n";
    lab.write_manifest(
        "20-remote.yaml",
        &svc_yaml("remote", "10.96.0.41", "http", 80, 8080, "LoadBalancer", Some(30091), lb2),
    );
    lab.write_manifest(
        "21-remote-eps.yaml",
        &slice_yaml("remote", "remote-1", "http", 8080, &[("10.244.1.51", "node-b", true)]),
    );
    lab.outside.ip(&["route", "add", "172.18.255.200/32", "via", NODE_IP]);
    let agent = lab.start_agent(&[]);
    lab.wait_ready(&agent);

    for target in [format!("{NODE_IP}:30090"), "172.18.255.200:80".to_string()] {
        for _ in 0..10 {
            match hello(&lab.outside, addr(&target)) {
                Reply::Hello(name, client) => {
                    assert_eq!(name, "local0", "{target}");
                    assert_eq!(client, OUTSIDE_IP, "{target}: the real client IP is preserved");
                }
                other => panic!("{target}: {other:?}\n{}", agent.log_text()),
            }
        }
    }
    // No local endpoint: external traffic is dropped (not refused) on this node.
    assert_eq!(hello(&lab.outside, addr(&format!("{NODE_IP}:30091"))), Reply::Timeout);

    // healthCheckNodePort: 200 with one local endpoint, 503 without.
    let hc = wait_for("health check server", Duration::from_secs(5), || {
        http_get(&lab.outside, addr(&format!("{NODE_IP}:32100")), "/")
    });
    assert_eq!(hc.0, 200, "{}", hc.1);
    let v: serde_json::Value = serde_json::from_str(&hc.1).unwrap();
    assert_eq!(v["localEndpoints"], 1);
    assert_eq!(v["service"]["name"], "lb");
    let hc2 = http_get(&lab.outside, addr(&format!("{NODE_IP}:32101")), "/").expect("second health check");
    assert_eq!(hc2.0, 503);
}

#[test]
fn restart_keeps_established_connection() {
    let lab = Lab::new(2);
    let _s1 = Server::start(&lab.pods[1], "pod1", addr("0.0.0.0:8080"));
    base(&lab);
    lab.write_manifest("10-web.yaml", &svc_yaml("web", "10.96.0.50", "http", 80, 8080, "ClusterIP", None, ""));
    lab.write_manifest(
        "11-web-eps.yaml",
        &slice_yaml("web", "web-1", "http", 8080, &[(&lab.pod_ip(1), "node-a", true)]),
    );
    let mut agent = lab.start_agent(&[]);
    lab.wait_ready(&agent);

    let pod0 = format!("/run/netns/{}", lab.pods[0].name);
    let (to_client, from_test) = std::sync::mpsc::channel::<String>();
    let (to_test, from_client) = std::sync::mpsc::channel::<Result<String, String>>();
    let client = std::thread::spawn(move || {
        let f = std::fs::File::open(&pod0).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let mut s = TcpStream::connect_timeout(&addr("10.96.0.50:80"), Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let _ = to_test.send(Ok(line.clone()));
        while let Ok(msg) = from_test.recv() {
            line.clear();
            let res = s
                .write_all(format!("{msg}\n").as_bytes())
                .map_err(|e| e.to_string())
                .and_then(|_| r.read_line(&mut line).map_err(|e| e.to_string()).map(|_| line.trim().to_string()));
            let _ = to_test.send(res);
        }
    });
    assert!(from_client.recv().unwrap().unwrap().starts_with("pod1"));
    to_client.send("before".into()).unwrap();
    assert_eq!(from_client.recv().unwrap(), Ok("before".into()));

    agent.stop();
    let agent2 = lab.start_agent(&[]);
    lab.wait_ready(&agent2);
    // The restarted agent did a full sync (re-declared every chain) before this point.
    assert!(
        agent2.log_text().contains("kind=\"full\"") || agent2.log_text().contains("kind=full"),
        "{}",
        agent2.log_text()
    );
    to_client.send("after".into()).unwrap();
    assert_eq!(from_client.recv().unwrap(), Ok("after".into()), "the established connection survives the restart");
    drop(to_client);
    client.join().unwrap();
}

#[test]
fn rejected_batch_keeps_previous_rules_and_names_the_service() {
    let lab = Lab::new(3);
    let _s1 = Server::start(&lab.pods[1], "pod1", addr("0.0.0.0:8080"));
    let _s2 = Server::start(&lab.pods[2], "pod2", addr("0.0.0.0:8080"));
    base(&lab);
    lab.write_manifest("10-web.yaml", &svc_yaml("web", "10.96.0.60", "http", 80, 8080, "ClusterIP", None, ""));
    let both = [(lab.pod_ip(1), "node-a", true), (lab.pod_ip(2), "node-a", true)];
    let both_ref: Vec<(&str, &str, bool)> = both.iter().map(|(a, b, c)| (a.as_str(), *b, *c)).collect();
    lab.write_manifest("11-web-eps.yaml", &slice_yaml("web", "web-1", "http", 8080, &both_ref));
    let agent = lab.start_agent(&[]);
    lab.wait_ready(&agent);
    // Someone else's rule now refers to pod2's endpoint chain, so deleting that chain must fail.
    let sep = {
        let saved = lab.node.iptables_save();
        let line = saved
            .lines()
            .find(|l| l.contains(&format!("--to-destination {}:8080", lab.pod_ip(2))))
            .unwrap_or_else(|| panic!("no DNAT to pod2:\n{saved}"))
            .to_string();
        line.split_whitespace().nth(1).unwrap().to_string()
    };
    lab.node.exec(&["iptables", "-t", "nat", "-N", "HOLDER"]);
    lab.node.exec(&["iptables", "-t", "nat", "-A", "HOLDER", "-j", &sep]);
    let before = lab.node.exec(&["iptables-save", "-t", "nat"]);
    lab.write_manifest(
        "11-web-eps.yaml",
        &slice_yaml("web", "web-1", "http", 8080, &[(&lab.pod_ip(1), "node-a", true)]),
    );
    let log = wait_for("a rejected batch in the log", Duration::from_secs(10), || {
        let t = agent.log_text();
        t.contains("Failed to apply rules").then_some(t)
    });
    assert!(log.contains("Service default/web:http"), "the error names the Service:\n{log}");
    let after = lab.node.exec(&["iptables-save", "-t", "nat"]);
    let rules = |s: &str| s.lines().filter(|l| l.starts_with("-A ")).map(str::to_string).collect::<BTreeSet<_>>();
    assert_eq!(rules(&before), rules(&after), "the previous rules stay in place");
    // Traffic still flows to both endpoints.
    assert!(matches!(hello(&lab.pods[0], addr("10.96.0.60:80")), Reply::Hello(..)));
    let m = lab.metrics();
    assert!(m.contains("causeway_node_sync_failures_total{family=\"ipv4\",reason=\"rejected\"}"), "{m}");
    // Once the foreign reference is gone, the retry (a full sync) succeeds.
    lab.node.exec(&["iptables", "-t", "nat", "-F", "HOLDER"]);
    wait_for("pod2 rules removed after retry", Duration::from_secs(15), || {
        (!lab.node.iptables_save().contains(&format!("{}:8080", lab.pod_ip(2)))).then_some(())
    });
}

#[test]
fn routes_follow_nodes_and_cni_config_is_written() {
    let lab = Lab::new(0);
    base(&lab);
    lab.write_manifest("01-node-b.yaml", &node_yaml("node-b", "10.244.1.0/24", "172.18.0.3"));
    lab.write_manifest("02-node-c.yaml", &node_yaml("node-c", "10.244.2.0/24", "172.18.0.4"));
    lab.node.ip(&["route", "add", "192.168.77.0/24", "via", "172.18.0.1"]);
    let agent = lab.start_agent(&[]);
    lab.wait_ready(&agent);
    let routes = |lab: &Lab| lab.node.ip(&["route", "show"]);
    wait_for("routes to node-b and node-c", Duration::from_secs(10), || {
        let r = routes(&lab);
        (r.contains("10.244.1.0/24 via 172.18.0.3") && r.contains("10.244.2.0/24 via 172.18.0.4")).then_some(())
    });
    // Deleted by hand: repaired by the periodic reconcile.
    lab.node.ip(&["route", "del", "10.244.1.0/24"]);
    wait_for("route repaired", Duration::from_secs(10), || {
        routes(&lab).contains("10.244.1.0/24 via 172.18.0.3").then_some(())
    });
    // A wrong gateway is fixed; a deleted Node's route is removed; a route we did not create stays.
    lab.write_manifest("01-node-b.yaml", &node_yaml("node-b", "10.244.1.0/24", "172.18.0.5"));
    lab.remove_manifest("02-node-c.yaml");
    wait_for("routes updated", Duration::from_secs(10), || {
        let r = routes(&lab);
        (r.contains("10.244.1.0/24 via 172.18.0.5") && !r.contains("10.244.2.0/24")).then_some(())
    });
    assert!(routes(&lab).contains("192.168.77.0/24 via 172.18.0.1"));
    let m = lab.metrics();
    assert!(m.contains("causeway_node_routes 1"), "{m}");

    // CNI: plugin installed, conflist written atomically from the Node's podCIDR.
    let cni = lab.dir.path().join("cni");
    let conf = wait_for("conflist", Duration::from_secs(10), || {
        std::fs::read_to_string(cni.join("net.d/10-causeway.conflist")).ok()
    });
    let v: serde_json::Value = serde_json::from_str(&conf).unwrap();
    assert_eq!(v["plugins"][0]["type"], "causeway-cni");
    assert_eq!(v["plugins"][0]["ipam"]["ranges"][0][0]["subnet"], "10.244.0.0/24");
    assert_eq!(v["plugins"][1]["type"], "portmap");
    assert!(cni.join("bin/causeway-cni").exists());
    let names: Vec<String> =
        std::fs::read_dir(cni.join("net.d")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names, ["10-causeway.conflist"]);
    drop(agent);
}

#[test]
fn rules_flushed_by_someone_else_are_restored() {
    let lab = Lab::new(2);
    let _s1 = Server::start(&lab.pods[1], "pod1", addr("0.0.0.0:8080"));
    base(&lab);
    lab.write_manifest("10-web.yaml", &svc_yaml("web", "10.96.0.70", "http", 80, 8080, "ClusterIP", None, ""));
    lab.write_manifest(
        "11-web-eps.yaml",
        &slice_yaml("web", "web-1", "http", 8080, &[(&lab.pod_ip(1), "node-a", true)]),
    );
    let agent = lab.start_agent(&["--sync-period", "500ms"]);
    lab.wait_ready(&agent);
    assert!(matches!(hello(&lab.pods[0], addr("10.96.0.70:80")), Reply::Hello(..)));
    // Someone flushes and deletes every nat chain.
    lab.node.exec(&["iptables", "-t", "nat", "-F"]);
    lab.node.exec(&["iptables", "-t", "nat", "-X"]);
    wait_for("the ClusterIP to work again", Duration::from_secs(10), || {
        matches!(hello(&lab.pods[0], addr("10.96.0.70:80")), Reply::Hello(..)).then_some(())
    });
    assert!(agent.log_text().contains("flushed by someone else"), "{}", agent.log_text());
}

/// Connects from `ns` to `to` from source port `sport` (a client that reuses a port, as busy clients do within
/// the 120 s a SYN_SENT conntrack entry lives) and reads the greeting; `timeout` bounds the connect.
fn hello_from_port(ns: &Netns, src: &str, sport: u16, to: SocketAddr, timeout: Duration) -> Reply {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, setsockopt, socket, sockopt};
    let src: SocketAddr = format!("{src}:{sport}").parse().unwrap();
    ns.run(move || {
        let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).expect("socket");
        setsockopt(&fd, sockopt::ReuseAddr, &true).expect("SO_REUSEADDR");
        // A blocking connect gives up after the send timeout.
        let tv = nix::sys::time::TimeVal::new(timeout.as_secs() as i64, timeout.subsec_micros() as i64);
        setsockopt(&fd, sockopt::SendTimeout, &tv).expect("SO_SNDTIMEO");
        let SocketAddr::V4(src) = src else { unreachable!() };
        let SocketAddr::V4(to) = to else { unreachable!() };
        bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(src)).expect("bind the source port");
        match connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(to)) {
            Ok(()) => greeting(TcpStream::from(fd)),
            Err(nix::errno::Errno::ECONNREFUSED) => Reply::Refused,
            Err(nix::errno::Errno::EINPROGRESS | nix::errno::Errno::EAGAIN | nix::errno::Errno::ETIMEDOUT) => {
                Reply::Timeout
            }
            Err(e) => Reply::Other(e.to_string()),
        }
    })
}

/// A pod sends a SYN to a ClusterIP before the Service's rules exist (a client starting early): conntrack keeps
/// the untranslated flow for 120 s, and a later connection that reuses the source port would follow it into
/// the void instead of the new rules. Returns what that later connection got.
fn reused_port_after_the_service_appears(cleanup: bool) -> (Reply, String) {
    let lab = Lab::new(2);
    let _s1 = Server::start(&lab.pods[1], "pod1", addr("0.0.0.0:8080"));
    base(&lab);
    let agent = lab.start_agent(if cleanup { &[] } else { &["--no-conntrack-cleanup"] });
    lab.wait_ready(&agent);
    let svc = addr("10.96.0.30:80");
    let early = hello_from_port(&lab.pods[0], &lab.pod_ip(0), 41000, svc, Duration::from_millis(300));
    assert!(!matches!(early, Reply::Hello(..)), "nothing serves 10.96.0.30 yet: {early:?}");
    let ct = lab.node.exec(&["conntrack", "-L", "-p", "tcp", "--orig-port-src", "41000"]);
    assert!(ct.contains("dst=10.96.0.30") && ct.contains("[UNREPLIED] src=10.96.0.30"), "no untranslated flow: {ct}");

    lab.write_manifest("10-late.yaml", &svc_yaml("late", "10.96.0.30", "http", 80, 8080, "ClusterIP", None, ""));
    lab.write_manifest(
        "11-late-eps.yaml",
        &slice_yaml("late", "late-1", "http", 8080, &[(&lab.pod_ip(1), "node-a", true)]),
    );
    // Fresh source ports reach the Service: its rules are in place.
    wait_for("the new Service to answer", Duration::from_secs(10), || {
        matches!(hello(&lab.pods[0], svc), Reply::Hello(..)).then_some(())
    });
    let reply = hello_from_port(&lab.pods[0], &lab.pod_ip(0), 41000, svc, Duration::from_secs(2));
    (reply, lab.metrics())
}

#[test]
fn untranslated_flow_from_before_a_service_is_deleted_once_it_has_endpoints() {
    let (reply, metrics) = reused_port_after_the_service_appears(true);
    assert!(matches!(&reply, Reply::Hello(name, _) if name == "pod1"), "reused port: {reply:?}");
    let deleted = metrics
        .lines()
        .find_map(|l| l.strip_prefix("causeway_node_conntrack_flows_deleted_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(deleted >= 1, "the stale flow was not counted: {metrics}");
}

/// The control: without clean-up the same connection fails, so the test above measures the clean-up.
#[test]
fn without_conntrack_cleanup_the_reused_port_follows_the_stale_flow() {
    let (reply, _) = reused_port_after_the_service_appears(false);
    assert!(
        !matches!(reply, Reply::Hello(..)),
        "the kernel now re-translates a reused SYN_SENT flow by itself; conntrack clean-up for TCP may be moot: \
         {reply:?}"
    );
}
