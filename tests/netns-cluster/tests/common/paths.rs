//! Every path of design §1 with real packets, on one shared three-node cluster: each check is a named step, a
//! failure names its check (and prints the agents' and the proxy's log tails), and the cluster is removed whatever
//! happens. The population and the checks are source-agnostic: `tests/paths.rs` runs them on a manifests
//! directory, `tests/kube.rs` on the real kube-apiserver.
//!
//! Pods: `a1`, `a2` on node1; `b1` on node2; `c1` and `h1` (hostPort 18080) on node3. `a1` has a second container
//! on 127.0.0.1:9000. The outside client runs a server on 172.18.0.100:8080.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use causeway_netns_cluster::Check;
use causeway_netns_cluster::cluster::{CLIENT_IP, NODES, POD_PORT, PROXY_ADMIN, node_ip};
use causeway_netns_cluster::objects::{self, IngressPath, LoadBalancer};
use causeway_netns_cluster::probe::{LoopRecord, Reply};
use causeway_netns_cluster::{Cluster, Error, PodSpec, Result, Svc, SvcPort, ensure, sys, tls};

const WEB_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const SOLO_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);
const STICKY_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 12);
const NP_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 13);
const NPL_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 14);
const EXT_SVC_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 15);
const ING_A_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 16);
const ING_API_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 17);
const ING_B_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 18);
const L4_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 19);
/// The proxy's L4 ports (a `loadBalancerClass: causeway.dev/proxy` Service whose load-balancer address is node1's,
/// where the edge proxy runs).
const L4_TCP_PORT: u16 = 5432;
const L4_UDP_PORT: u16 = 5353;
const LB_SVC_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 30);
/// A LoadBalancer address from the pool (design §4: 172.18.255.200/29), routed by the client via node3 as a
/// BGP-speaking router would.
const LB_ROUTED_IP: Ipv4Addr = Ipv4Addr::new(172, 18, 255, 201);
/// The externalIP: an address on the node network that no interface holds; the client routes it via node2.
const EXTERNAL_IP: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 50);
const NODE_PORT: u16 = 30080;
const NODE_PORT_LOCAL: u16 = 30081;
const HOST_PORT: u16 = 18080;
const SIDECAR_PORT: u16 = 9000;
const HOST_A: &str = "a.example.test";
const HOST_B: &str = "b.example.test";

/// How long a freshly written object may take to reach the data path before a check gives up (design: watch
/// events within 1 s, plus the agents' sync).
pub const CONVERGE: Duration = Duration::from_secs(10);

pub fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

fn web_port() -> SvcPort {
    SvcPort::tcp("http", 80, POD_PORT)
}

/// Pods, Services, the Ingress and its Secrets.
pub fn populate(c: &mut Cluster) -> Result<()> {
    c.add_pod("a1", 0, PodSpec::default())?;
    c.add_pod("a2", 0, PodSpec::default())?;
    c.add_pod("b1", 1, PodSpec::default())?;
    c.add_pod("c1", 2, PodSpec::default())?;
    c.add_pod("h1", 2, PodSpec { host_ports: vec![(HOST_PORT, POD_PORT, "tcp")] })?;
    c.add_container("a1", "a1-sidecar", sa(Ipv4Addr::LOCALHOST, SIDECAR_PORT))?;
    let client = c.client.name.clone();
    c.serve_in(&client, "outside", sa(CLIENT_IP, POD_PORT))?;
    // The client reaches the externalIP through node2, as an upstream router would be told to.
    sys::ip_in(&client, &["route", "add", &format!("{EXTERNAL_IP}/32"), "via", &node_ip(1).to_string()])?;
    sys::ip_in(&client, &["route", "add", &format!("{LB_ROUTED_IP}/32"), "via", &node_ip(2).to_string()])?;

    let web = Svc::new("web", WEB_IP, vec![web_port(), SvcPort::udp("dns", 53, POD_PORT)]);
    c.apply_service(&web, &["a1", "b1", "c1"])?;
    c.apply_service(&Svc::new("solo", SOLO_IP, vec![web_port()]), &["a1"])?;
    let mut sticky = Svc::new("sticky", STICKY_IP, vec![web_port()]);
    sticky.affinity = true;
    c.apply_service(&sticky, &["a1", "b1", "c1"])?;
    c.apply_service(&Svc::new("np", NP_IP, vec![web_port().node_port(NODE_PORT)]), &["b1", "c1"])?;
    let mut npl = Svc::new("nplocal", NPL_IP, vec![web_port().node_port(NODE_PORT_LOCAL)]);
    npl.local = true;
    c.apply_service(&npl, &["b1"])?;
    let mut ext = Svc::new("ext", EXT_SVC_IP, vec![web_port()]);
    ext.external_ips = vec![EXTERNAL_IP];
    c.apply_service(&ext, &["c1"])?;

    c.apply_service(&Svc::new("ing-a", ING_A_IP, vec![web_port()]), &["a2"])?;
    c.apply_service(&Svc::new("ing-api", ING_API_IP, vec![web_port()]), &["c1"])?;
    c.apply_service(&Svc::new("ing-b", ING_B_IP, vec![web_port()]), &["b1"])?;
    let mut l4 = Svc::new(
        "l4",
        L4_IP,
        vec![SvcPort::tcp("stream", L4_TCP_PORT, POD_PORT), SvcPort::udp("dgram", L4_UDP_PORT, POD_PORT)],
    );
    l4.load_balancer = Some(LoadBalancer { class: Some("causeway.dev/proxy".into()), ips: vec![node_ip(0)] });
    c.apply_service(&l4, &["c1"])?;
    let mut lb = Svc::new("lb", LB_SVC_IP, vec![web_port()]);
    lb.load_balancer = Some(LoadBalancer { class: None, ips: vec![LB_ROUTED_IP] });
    c.apply_service(&lb, &["a1", "b1"])?;
    let pki = tls::generate(&[HOST_A, HOST_B])?;
    std::fs::write(c.dir.join("ca.pem"), &pki.ca_pem).map_err(|e| Error::io("writing ca.pem", e))?;
    let mut docs = Vec::new();
    let mut tls_refs = Vec::new();
    for (host, cert, key) in &pki.leaves {
        let secret = format!("tls-{}", host.split('.').next().unwrap_or("x"));
        docs.push(objects::tls_secret(&secret, cert, key));
        tls_refs.push((host.clone(), secret));
    }
    let path = |host: &str, path: &str, service: &str| IngressPath {
        host: host.into(),
        path: path.into(),
        service: service.into(),
        port: 80,
    };
    let paths = [path(HOST_A, "/", "ing-a"), path(HOST_A, "/api", "ing-api"), path(HOST_B, "/", "ing-b")];
    docs.push(objects::ingress("edge", &paths, &tls_refs));
    c.apply("ingress", &docs)
}

// === checks ===

fn container_to_container_over_localhost(c: &mut Cluster) -> Result<()> {
    let ns = c.pod_ns("a1")?;
    let r = c.get(&ns, sa(Ipv4Addr::LOCALHOST, SIDECAR_PORT))?;
    ensure!(r.pod == "a1-sidecar", "answered by {}, want the sidecar container", r.pod);
    ensure!(r.peer_ip() == IpAddr::V4(Ipv4Addr::LOCALHOST), "the sidecar saw {}, want 127.0.0.1", r.peer);
    Ok(())
}

/// GET from pod `from` to pod `to`'s IP: answered by `to`, source address unchanged.
fn pod_to_pod(c: &Cluster, from: &str, to: &str) -> Result<()> {
    let (src, dst) = (c.pod(from)?.ip, c.pod(to)?.ip);
    let r = c.get_eventually(&c.pod_ns(from)?, sa(dst, POD_PORT), CONVERGE)?;
    ensure!(r.pod == to, "{from} -> {dst}: answered by {}, want {to}", r.pod);
    ensure!(
        r.peer_ip() == IpAddr::V4(src),
        "{from} -> {to}: source seen as {}, want {src} (no NAT between pods)",
        r.peer_ip()
    );
    Ok(())
}

fn pod_to_pod_same_node(c: &mut Cluster) -> Result<()> {
    pod_to_pod(c, "a2", "a1")?;
    pod_to_pod(c, "a1", "a2")
}

fn pod_to_pod_across_nodes(c: &mut Cluster) -> Result<()> {
    for (from, to) in [("a1", "b1"), ("b1", "c1"), ("c1", "a2")] {
        pod_to_pod(c, from, to)?;
    }
    Ok(())
}

fn pod_to_outside_is_masqueraded(c: &mut Cluster) -> Result<()> {
    for (pod, node) in [("a1", 0), ("b1", 1), ("c1", 2)] {
        let r = c.get_eventually(&c.pod_ns(pod)?, sa(CLIENT_IP, POD_PORT), CONVERGE)?;
        ensure!(r.pod == "outside", "{pod} -> outside: answered by {}", r.pod);
        let want = node_ip(node);
        ensure!(
            r.peer_ip() == IpAddr::V4(want),
            "{pod} -> outside: source seen as {}, want its node's address {want}",
            r.peer_ip()
        );
    }
    Ok(())
}

fn web_pods() -> BTreeSet<String> {
    ["a1", "b1", "c1"].iter().map(|s| s.to_string()).collect()
}

fn cluster_ip_from_every_node(c: &mut Cluster) -> Result<()> {
    let to = sa(WEB_IP, 80);
    for pod in ["a1", "b1", "c1"] {
        let ns = c.pod_ns(pod)?;
        let src = c.pod(pod)?.ip;
        c.get_eventually(&ns, to, CONVERGE)?;
        let mut seen = BTreeSet::new();
        for _ in 0..30 {
            let r = c.get(&ns, to)?;
            ensure!(web_pods().contains(&r.pod), "{pod} -> web: answered by {}, not an endpoint", r.pod);
            if r.pod != pod {
                ensure!(
                    r.peer_ip() == IpAddr::V4(src),
                    "{pod} -> web -> {}: source seen as {}, want the pod's {src}",
                    r.pod,
                    r.peer_ip()
                );
            }
            seen.insert(r.pod);
        }
        ensure!(seen == web_pods(), "{pod} -> web: 30 requests reached only {seen:?} of {:?}", web_pods());
    }
    // Host-network clients on every node (the node's own namespace) reach it too.
    for i in 0..NODES {
        let ns = c.node_ns(i).to_string();
        let r = c.get_eventually(&ns, to, CONVERGE)?;
        ensure!(web_pods().contains(&r.pod), "node{} -> web: answered by {}", i + 1, r.pod);
    }
    Ok(())
}

fn udp_to_cluster_ip(c: &mut Cluster) -> Result<()> {
    for pod in ["a1", "b1", "c1"] {
        let ns = c.pod_ns(pod)?;
        let what = format!("a UDP answer from web:53 to {pod}");
        let r = sys::poll(&what, CONVERGE, Duration::from_millis(100), || {
            c.probe.udp(&ns, sa(WEB_IP, 53), Duration::from_millis(700))
        })?;
        ensure!(web_pods().contains(&r.pod), "{pod} -> web:53/udp: answered by {}", r.pod);
    }
    Ok(())
}

fn hairpin_pod_reaches_itself_through_its_service(c: &mut Cluster) -> Result<()> {
    let ns = c.pod_ns("a1")?;
    let r = c.get_eventually(&ns, sa(SOLO_IP, 80), CONVERGE)?;
    ensure!(r.pod == "a1", "a1 -> solo (whose only endpoint is a1): answered by {}", r.pod);
    Ok(())
}

fn session_affinity(c: &mut Cluster) -> Result<()> {
    for pod in ["a2", "b1", "c1"] {
        let ns = c.pod_ns(pod)?;
        let first = c.get_eventually(&ns, sa(STICKY_IP, 80), CONVERGE)?;
        for i in 0..20 {
            let r = c.get(&ns, sa(STICKY_IP, 80))?;
            ensure!(
                r.pod == first.pod,
                "{pod} -> sticky (ClientIP affinity): request {i} went to {}, the first to {}",
                r.pod,
                first.pod
            );
        }
    }
    Ok(())
}

fn node_port_cluster_policy_on_every_node(c: &mut Cluster) -> Result<()> {
    let client = c.client.name.clone();
    for i in 0..NODES {
        let mut seen = BTreeSet::new();
        let r = c.get_eventually(&client, sa(node_ip(i), NODE_PORT), CONVERGE)?;
        seen.insert(r.pod);
        for _ in 0..10 {
            seen.insert(c.get(&client, sa(node_ip(i), NODE_PORT))?.pod);
        }
        let want: BTreeSet<String> = ["b1", "c1"].iter().map(|s| s.to_string()).collect();
        ensure!(
            seen.is_subset(&want) && !seen.is_empty(),
            "outside -> node{}:{NODE_PORT}: answered by {seen:?}, want endpoints {want:?}",
            i + 1
        );
    }
    Ok(())
}

fn node_port_local_policy_preserves_client_address(c: &mut Cluster) -> Result<()> {
    let client = c.client.name.clone();
    let r = c.get_eventually(&client, sa(node_ip(1), NODE_PORT_LOCAL), CONVERGE)?;
    ensure!(r.pod == "b1", "outside -> node2:{NODE_PORT_LOCAL}: answered by {}", r.pod);
    ensure!(
        r.peer_ip() == IpAddr::V4(CLIENT_IP),
        "Local policy: b1 saw {}, want the client's {CLIENT_IP}",
        r.peer_ip()
    );
    // Nodes without a local endpoint must not forward (kube-proxy drops there).
    for i in [0, 2] {
        if let Ok(r) = c.probe.get(&client, sa(node_ip(i), NODE_PORT_LOCAL), None, "/", Duration::from_millis(1000)) {
            return Err(Error::check(format!(
                "Local policy: node{} has no local endpoint but {} answered",
                i + 1,
                r.pod
            )));
        }
    }
    Ok(())
}

fn external_ips(c: &mut Cluster) -> Result<()> {
    let client = c.client.name.clone();
    let r = c.get_eventually(&client, sa(EXTERNAL_IP, 80), CONVERGE)?;
    ensure!(r.pod == "c1", "outside -> {EXTERNAL_IP}:80 (externalIP via node2): answered by {}", r.pod);
    Ok(())
}

fn load_balancer_ip_routed_to_a_node(c: &mut Cluster) -> Result<()> {
    let client = c.client.name.clone();
    let mut seen = BTreeSet::new();
    seen.insert(c.get_eventually(&client, sa(LB_ROUTED_IP, 80), CONVERGE)?.pod);
    for _ in 0..10 {
        seen.insert(c.get(&client, sa(LB_ROUTED_IP, 80))?.pod);
    }
    let want: BTreeSet<String> = ["a1", "b1"].iter().map(|s| s.to_string()).collect();
    ensure!(
        seen.is_subset(&want),
        "outside -> {LB_ROUTED_IP}:80 (LoadBalancer, via node3): answered by {seen:?}, want {want:?}"
    );
    Ok(())
}

pub fn wait_proxy_ready(c: &Cluster) -> Result<()> {
    let ns = c.node_ns(0).to_string();
    sys::poll("the edge proxy's /readyz to answer 200", Duration::from_secs(15), Duration::from_millis(100), || {
        c.probe.get_raw(&ns, SocketAddr::V4(PROXY_ADMIN), "/readyz", Duration::from_millis(500))
    })?;
    Ok(())
}

fn ingress_get(c: &Cluster, host: &str, path: &str) -> Result<Reply> {
    c.probe.get(&c.client.name, sa(node_ip(0), 80), Some(host), path, Duration::from_secs(2))
}

fn ingress_http_by_host_and_path(c: &mut Cluster) -> Result<()> {
    wait_proxy_ready(c)?;
    let first = sys::poll("the Ingress to route a.example.test/", CONVERGE, Duration::from_millis(100), || {
        ingress_get(c, HOST_A, "/")
    })?;
    ensure!(first.pod == "a2", "http://{HOST_A}/: answered by {}, want a2", first.pod);
    for (host, path, want) in [
        (HOST_A, "/index.html", "a2"),
        (HOST_A, "/api/users", "c1"),
        (HOST_A, "/api", "c1"),
        (HOST_B, "/", "b1"),
        (HOST_B, "/api", "b1"),
    ] {
        let r = ingress_get(c, host, path)?;
        ensure!(r.pod == want, "http://{host}{path}: answered by {}, want {want}", r.pod);
        ensure!(r.path == path && r.host == host, "http://{host}{path}: the pod saw host {} path {}", r.host, r.path);
    }
    match ingress_get(c, "unknown.example.test", "/") {
        Ok(r) => Err(Error::check(format!("a host no Ingress names was routed to {}", r.pod))),
        Err(e) if e.to_string().contains("404") => Ok(()),
        Err(e) => Err(Error::check(format!("a host no Ingress names: want 404, got {e}"))),
    }
}

fn ingress_https_with_sni(c: &mut Cluster) -> Result<()> {
    wait_proxy_ready(c)?;
    let ca = c.dir.join("ca.pem");
    let client = c.client.name.clone();
    for (host, want) in [(HOST_A, "a2"), (HOST_B, "b1")] {
        // curl sends SNI = host and verifies the certificate chain and name against our CA: a wrong certificate
        // for the name fails the handshake.
        let curl = || {
            sys::run(sys::in_ns(&client, "curl").args([
                "-sS",
                "--max-time",
                "3",
                "--cacert",
                &ca.display().to_string(),
                "--resolve",
                &format!("{host}:443:{}", node_ip(0)),
                &format!("https://{host}/secure"),
            ]))
        };
        let body =
            sys::poll(&format!("https://{host}/ through the edge proxy"), CONVERGE, Duration::from_millis(200), curl)?;
        let r: Reply = body.trim().parse()?;
        ensure!(
            r.pod == want && r.path == "/secure",
            "https://{host}/secure: answered by {} (path {}), want {want}",
            r.pod,
            r.path
        );
    }
    Ok(())
}

fn l4_tcp_and_udp_through_the_edge_proxy(c: &mut Cluster) -> Result<()> {
    wait_proxy_ready(c)?;
    let client = c.client.name.clone();
    let r = c.get_eventually(&client, sa(node_ip(0), L4_TCP_PORT), CONVERGE)?;
    ensure!(r.pod == "c1", "outside -> node1:{L4_TCP_PORT}/tcp (proxy L4 listener): answered by {}", r.pod);
    let what = format!("a UDP answer through the proxy's listener node1:{L4_UDP_PORT}");
    let r = sys::poll(&what, CONVERGE, Duration::from_millis(100), || {
        c.probe.udp(&client, sa(node_ip(0), L4_UDP_PORT), Duration::from_millis(700))
    })?;
    ensure!(r.pod == "c1", "outside -> node1:{L4_UDP_PORT}/udp (proxy L4 listener): answered by {}", r.pod);

    // A table swap does not cut an open connection: one kept-alive TCP connection through the listener keeps
    // answering while a new Ingress makes the proxy compile and swap in a new table.
    let swaps = || -> Result<u64> {
        let ns = c.node_ns(0).to_string();
        let text = c.probe.get_raw(&ns, SocketAddr::V4(PROXY_ADMIN), "/metrics", Duration::from_secs(1))?;
        text.lines()
            .find_map(|l| l.strip_prefix("causeway_route_table_swaps_total "))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| Error::check("no causeway_route_table_swaps_total in the proxy's metrics"))
    };
    let log = c.dir.join("l4-keepalive.log");
    let mut held =
        c.probe.spawn_keepalive(&client, sa(node_ip(0), L4_TCP_PORT), 60, Duration::from_millis(50), &log)?;
    let records = || LoopRecord::parse(&std::fs::read_to_string(&log).unwrap_or_default());
    sys::poll("the kept-alive L4 connection to answer", CONVERGE, Duration::from_millis(50), || {
        if records().len() >= 4 { Ok(()) } else { Err(Error::check("fewer than 4 answers")) }
    })?;
    let before = swaps()?;
    let path = IngressPath { host: "swap.example.test".into(), path: "/".into(), service: "ing-api".into(), port: 80 };
    c.apply("ingress-swap", &[objects::ingress("swap", &[path], &[])])?;
    sys::poll("the proxy to swap in a new table", CONVERGE, Duration::from_millis(50), || {
        let now = swaps()?;
        if now > before { Ok(()) } else { Err(Error::check(format!("{now} swaps"))) }
    })?;
    let at_swap = records().len();
    sys::poll("answers on the kept-alive connection after the swap", CONVERGE, Duration::from_millis(50), || {
        let recs = records();
        if recs.iter().any(|r| r.outcome.is_err()) || recs.len() >= at_swap + 5 {
            Ok(())
        } else {
            Err(Error::check(format!("{} answers, {at_swap} before the swap", recs.len())))
        }
    })?;
    held.kill();
    let recs = records();
    let failed: Vec<&String> = recs.iter().filter_map(|r| r.outcome.as_ref().err()).collect();
    ensure!(failed.is_empty(), "the kept-alive L4 connection broke across the table swap: {failed:?}");
    let flows: BTreeSet<String> = recs
        .iter()
        .filter_map(|r| r.outcome.as_ref().ok().map(|rep| format!("{} via {}", rep.pod, rep.peer)))
        .collect();
    ensure!(flows.len() == 1, "the kept-alive L4 connection was not one flow across the swap: {flows:?}");
    c.store.remove("ingress-swap")
}

fn host_port(c: &mut Cluster) -> Result<()> {
    let client = c.client.name.clone();
    let r = c.get_eventually(&client, sa(node_ip(2), HOST_PORT), CONVERGE)?;
    ensure!(r.pod == "h1", "outside -> node3:{HOST_PORT} (hostPort of h1): answered by {}", r.pod);
    Ok(())
}

fn root_namespace_is_not_connected(c: &mut Cluster) -> Result<()> {
    let bad = c.links_leaving_the_cluster()?;
    ensure!(bad.is_empty(), "veths whose peer is outside the test namespaces: {bad:?}");
    Ok(())
}

/// Each agent's `causeway_node_ipam_addresses` reports the pods its node holds, and its pod CIDR's capacity.
fn agents_report_pod_address_usage(c: &mut Cluster) -> Result<()> {
    for i in 0..NODES {
        let pods = c.pods.values().filter(|p| p.node == i).count();
        let ns = c.node_ns(i).to_string();
        let want = format!("causeway_node_ipam_addresses{{state=\"allocated\"}} {pods}");
        let text = sys::poll("the agent's IPAM usage", CONVERGE, Duration::from_millis(200), || {
            let text = c.probe.get_raw(
                &ns,
                SocketAddr::V4(causeway_netns_cluster::cluster::AGENT_ADMIN),
                "/metrics",
                Duration::from_secs(1),
            )?;
            if text.lines().any(|l| l == want) {
                Ok(text)
            } else {
                Err(Error::check(format!("node{}: want `{want}`", i + 1)))
            }
        })?;
        // A /24 per node: 256 addresses less network, broadcast and gateway.
        ensure!(
            text.lines().any(|l| l == "causeway_node_ipam_addresses{state=\"capacity\"} 253"),
            "node{}: capacity is not 253",
            i + 1
        );
    }
    Ok(())
}

/// Every check, in order.
pub const CHECKS: &[(&str, Check)] = &[
    ("root_namespace_is_not_connected", root_namespace_is_not_connected),
    ("container_to_container_over_localhost", container_to_container_over_localhost),
    ("pod_to_pod_same_node", pod_to_pod_same_node),
    ("pod_to_pod_across_nodes", pod_to_pod_across_nodes),
    ("pod_to_outside_is_masqueraded", pod_to_outside_is_masqueraded),
    ("cluster_ip_from_every_node", cluster_ip_from_every_node),
    ("udp_to_cluster_ip", udp_to_cluster_ip),
    ("hairpin_pod_reaches_itself_through_its_service", hairpin_pod_reaches_itself_through_its_service),
    ("session_affinity", session_affinity),
    ("node_port_cluster_policy_on_every_node", node_port_cluster_policy_on_every_node),
    ("node_port_local_policy_preserves_client_address", node_port_local_policy_preserves_client_address),
    ("external_ips", external_ips),
    ("load_balancer_ip_routed_to_a_node", load_balancer_ip_routed_to_a_node),
    ("ingress_http_by_host_and_path", ingress_http_by_host_and_path),
    ("ingress_https_with_sni", ingress_https_with_sni),
    ("l4_tcp_and_udp_through_the_edge_proxy", l4_tcp_and_udp_through_the_edge_proxy),
    ("host_port", host_port),
    ("agents_report_pod_address_usage", agents_report_pod_address_usage),
];
