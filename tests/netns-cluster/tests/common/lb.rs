//! LoadBalancer addresses announced on the node network (issue 7 items 3, 4 and 6), on one three-node cluster
//! whose agents run with `--lb-interface eth0`: an IPPool and LoadBalancer Services in the source (a manifests
//! directory, or the API server), the outside client on the same L2 as the nodes (an on-link route for the pool,
//! no router), real ARP. `tests/lb.rs` and `tests/lb_kube.rs` run these checks against each source.
//!
//! Pods: `l1` (node1), `l2` (node2), `l3` (node3), each serving TCP and UDP on the pod port.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use causeway_netns_cluster::Check;
use causeway_netns_cluster::cluster::{CLIENT_IP, NODES, POD_PORT, node_ip, pod_cidr};
use causeway_netns_cluster::objects::{self, LoadBalancer};
use causeway_netns_cluster::probe::{LoopRecord, now_ms};
use causeway_netns_cluster::{Cluster, Error, PodSpec, Result, Source, Svc, SvcPort, ensure, sys};
use serde_json::{Value, json};

pub const POOL: &str = "172.18.255.200/29";
const LB_SVC_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 40);
const LOCAL_SVC_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 41);
const UDP_PORT: u16 = 5353;
pub const CONVERGE: Duration = Duration::from_secs(10);
/// Issue 7's goal for the time an outside client's requests fail while the address moves.
const FAILOVER_GOAL_MS: u64 = 2000;

pub fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

pub fn in_pool(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    o[0] == 172 && o[1] == 18 && o[2] == 255 && (200..208).contains(&o[3])
}

pub fn lb_svc(name: &str, ip: Ipv4Addr, local: bool) -> Svc {
    let mut s = Svc::new(name, ip, vec![SvcPort::tcp("http", 80, POD_PORT), SvcPort::udp("dns", UDP_PORT, POD_PORT)]);
    // No status: the address comes from the pool (the agents compute the same deterministic allocation).
    s.load_balancer = Some(LoadBalancer { class: None, ips: vec![] });
    s.local = local;
    s
}

pub fn ip_pool() -> Value {
    json!({
        "apiVersion": "causeway.dev/v1alpha1",
        "kind": "IPPool",
        "metadata": {"name": "outside", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"blocks": [{"cidr": POOL}]},
    })
}

/// The cluster file with node `not_ready` (if any) marked NotReady.
fn write_nodes(c: &Cluster, not_ready: Option<usize>) -> Result<()> {
    let mut docs = vec![objects::namespace("default"), objects::ingress_class()];
    for (i, n) in c.nodes.iter().enumerate() {
        let mut node = objects::node(&n.name, &pod_cidr(i), n.ip);
        if not_ready == Some(i) {
            node["status"]["conditions"] = json!([{"type": "Ready", "status": "False", "reason": "NodeStatusUnknown"}]);
        }
        docs.push(node);
    }
    c.apply("00-cluster", &docs)
}

pub fn populate(c: &mut Cluster) -> Result<()> {
    for (i, name) in ["l1", "l2", "l3"].iter().enumerate() {
        c.add_pod(name, i, PodSpec::default())?;
    }
    // The client is on the nodes' segment; the pool is on-link there, as on a flat L2 network (no router).
    sys::ip_in(&c.client.name, &["route", "add", POOL, "dev", "eth0"])?;
    c.apply("ippool", &[ip_pool()])?;
    c.apply_service(&lb_svc("lb", LB_SVC_IP, false), &["l1", "l2", "l3"])
}

/// The pool addresses on node `i`'s eth0.
pub fn pool_addresses(c: &Cluster, i: usize) -> Result<BTreeSet<Ipv4Addr>> {
    let out = sys::ip_in(c.node_ns(i), &["-4", "-o", "addr", "show", "dev", "eth0"])?;
    Ok(out
        .split_whitespace()
        .filter_map(|w| w.split('/').next()?.parse::<Ipv4Addr>().ok())
        .filter(|ip| in_pool(*ip))
        .collect())
}

fn mac_of(c: &Cluster, ns: &str) -> Result<String> {
    let out = sys::ip_in(ns, &["-o", "link", "show", "dev", "eth0"])?;
    let mut words = out.split_whitespace();
    words
        .find(|w| *w == "link/ether")
        .and(words.next())
        .map(str::to_string)
        .ok_or_else(|| Error::check(format!("no MAC in {out:?} ({})", c.run)))
}

/// The MAC the client's ARP entry for `ip` holds, if any.
fn client_arp(c: &Cluster, ip: Ipv4Addr) -> Result<Option<String>> {
    let out = sys::ip_in(&c.client.name, &["-4", "neigh", "show", &ip.to_string(), "dev", "eth0"])?;
    let mut words = out.split_whitespace();
    Ok(words.find(|w| *w == "lladdr").and(words.next()).map(str::to_string))
}

/// Waits until exactly one node holds exactly one pool address outside `except`; returns (node, address).
pub fn wait_owner(c: &Cluster, except: &BTreeSet<Ipv4Addr>, eligible: &[usize]) -> Result<(usize, Ipv4Addr)> {
    sys::poll("one node to hold the LoadBalancer address", CONVERGE, Duration::from_millis(50), || {
        let mut holders = Vec::new();
        for i in 0..NODES {
            for ip in pool_addresses(c, i)?.difference(except) {
                holders.push((i, *ip));
            }
        }
        match holders.as_slice() {
            [(i, ip)] if eligible.contains(i) => Ok((*i, *ip)),
            _ => Err(Error::check(format!("pool addresses on nodes (index, address): {holders:?}"))),
        }
    })
}

fn lb_address_reached_from_outside_tcp_and_udp(c: &mut Cluster) -> Result<()> {
    let (owner, ip) = wait_owner(c, &BTreeSet::new(), &[0, 1, 2])?;
    let client = c.client.name.clone();
    let want: BTreeSet<String> = ["l1", "l2", "l3"].iter().map(|s| s.to_string()).collect();
    let mut seen = BTreeSet::new();
    seen.insert(c.get_eventually(&client, sa(ip, 80), CONVERGE)?.pod);
    for _ in 0..15 {
        seen.insert(c.get(&client, sa(ip, 80))?.pod);
    }
    ensure!(
        seen.is_subset(&want) && seen.len() >= 2,
        "outside -> {ip}:80 answered by {seen:?}, want several of {want:?}"
    );
    let r = c.probe.udp(&client, sa(ip, UDP_PORT), Duration::from_secs(2))?;
    ensure!(want.contains(&r.pod), "outside -> {ip}:{UDP_PORT}/udp answered by {}", r.pod);
    let owner_mac = mac_of(c, c.node_ns(owner))?;
    let arp = client_arp(c, ip)?;
    ensure!(
        arp.as_deref() == Some(owner_mac.as_str()),
        "the client's ARP entry for {ip} is {arp:?}, want the owner {}'s MAC {owner_mac}",
        c.nodes[owner].name
    );
    Ok(())
}

/// The owner's agent is killed (SIGKILL: its address stays on its interface) and, as when the node is lost, its
/// link goes down and its endpoint leaves the slice. How the others learn of it depends on the source: from a
/// manifests directory the harness marks the Node NotReady (nobody else can); on the API server nothing is
/// written, and the others see the dead agent's heartbeat Lease expire. The stateless hash picks another node,
/// whose gratuitous ARP moves the client's ARP entry. A request loop measures how long requests fail.
fn owner_lost_address_moves_within_2s(c: &mut Cluster) -> Result<()> {
    let (owner, ip) = wait_owner(c, &BTreeSet::new(), &[0, 1, 2])?;
    let client = c.client.name.clone();
    let log = c.dir.join("loop-lb-failover.log");
    // New connections every 20 ms, each given 200 ms (the harness's loop default of 1 s would hide the outage's
    // length behind one timeout).
    let mut cmd = c.probe.cmd(&client);
    cmd.arg("loop").arg(sa(ip, 80).to_string());
    cmd.args(["--duration-ms", "12000", "--interval-ms", "20", "--timeout-ms", "200"]);
    let mut lp = sys::Proc::spawn(format!("request loop {client} -> {ip}:80"), cmd, &log)?;
    let records = || LoopRecord::parse(&std::fs::read_to_string(&log).unwrap_or_default());
    sys::poll("the request loop to start", Duration::from_secs(5), Duration::from_millis(20), || {
        let ok = records().iter().filter(|r| r.outcome.is_ok()).count();
        if ok >= 5 { Ok(()) } else { Err(Error::check(format!("{ok} answered requests"))) }
    })?;
    let old_mac = mac_of(c, c.node_ns(owner))?;
    let t_lost = now_ms();
    c.kill_agent(owner);
    sys::ip_in(c.node_ns(owner), &["link", "set", "eth0", "down"])?;
    if c.store.source() == Source::Manifests {
        write_nodes(c, Some(owner))?;
    }
    let survivors: Vec<&str> =
        ["l1", "l2", "l3"].into_iter().enumerate().filter(|(i, _)| *i != owner).map(|(_, p)| p).collect();
    c.apply_service(&lb_svc("lb", LB_SVC_IP, false), &survivors)?;
    let others: Vec<usize> = (0..NODES).filter(|i| *i != owner).collect();
    // The dead node still holds the address (nobody removed it), but it is unreachable; count only live nodes.
    let new_owner = sys::poll("another node to take the address", CONVERGE, Duration::from_millis(20), || {
        let holders: Vec<usize> =
            others.iter().copied().filter(|i| pool_addresses(c, *i).is_ok_and(|a| a.contains(&ip))).collect();
        match holders.as_slice() {
            [one] => Ok(*one),
            _ => Err(Error::check(format!("live holders of {ip}: {holders:?}"))),
        }
    })?;
    let new_mac = mac_of(c, c.node_ns(new_owner))?;
    sys::poll("the client's ARP entry to move to the new owner", CONVERGE, Duration::from_millis(20), || {
        let arp = client_arp(c, ip)?;
        if arp.as_deref() == Some(new_mac.as_str()) { Ok(()) } else { Err(Error::check(format!("entry {arp:?}"))) }
    })?;
    // Requests must be answered again, by surviving pods only.
    sys::poll("requests answered after the move", CONVERGE, Duration::from_millis(50), || {
        let after: Vec<LoopRecord> = records().into_iter().filter(|r| r.at_ms > t_lost).collect();
        let last: Vec<String> = after
            .iter()
            .rev()
            .take(5)
            .map(|r| match &r.outcome {
                Ok(rep) => format!("{}: {}", r.at_ms - t_lost, rep.pod),
                Err(e) => format!("{}: {e}", r.at_ms - t_lost),
            })
            .collect();
        if after.iter().rev().take(5).filter(|r| r.outcome.is_ok()).count() == 5 {
            Ok(())
        } else {
            Err(Error::check(format!("the last 5 requests did not all succeed (ms after the loss): {last:?}")))
        }
    })?;
    lp.kill();
    let recs = records();
    let after: Vec<&LoopRecord> = recs.iter().filter(|r| r.at_ms >= t_lost).collect();
    let failed: Vec<&&LoopRecord> = after.iter().filter(|r| r.outcome.is_err()).collect();
    // Outage: from the loss to the start of the first request that succeeded after the last failure.
    let outage = match failed.last() {
        None => 0,
        Some(last) => after
            .iter()
            .find(|r| r.at_ms > last.at_ms && r.outcome.is_ok())
            .map(|r| r.at_ms.saturating_sub(t_lost))
            .ok_or_else(|| Error::check("no request succeeded after the last failure"))?,
    };
    println!(
        "    failover ({:?}): {} ({old_mac}) lost -> {} ({new_mac}) owns {ip}; requests failed for {outage} ms \
         ({} of {} requests after the loss failed)",
        c.store.source(),
        c.nodes[owner].name,
        c.nodes[new_owner].name,
        failed.len(),
        after.len()
    );
    for r in &after {
        if let Ok(rep) = &r.outcome {
            ensure!(
                survivors.contains(&rep.pod.as_str()) || r.at_ms < t_lost + 100,
                "answered by {} after the loss",
                rep.pod
            );
        }
    }
    ensure!(outage < FAILOVER_GOAL_MS, "requests to {ip} failed for {outage} ms (goal {FAILOVER_GOAL_MS} ms)");

    // The node comes back: link up, agent restarted, Ready again, its pod listed again.
    sys::ip_in(c.node_ns(owner), &["link", "set", "eth0", "up"])?;
    sys::ip_in(c.node_ns(owner), &["route", "replace", "default", "via", "172.18.0.1"])?;
    c.start_agent(owner)?;
    write_nodes(c, None)?;
    c.apply_service(&lb_svc("lb", LB_SVC_IP, false), &["l1", "l2", "l3"])?;
    // The stateless hash gives the address back to its first owner, and only it holds it (the restarted agent
    // adopts the address its predecessor left; the interim owner removes its copy).
    sys::poll("the address back on exactly its first owner", CONVERGE, Duration::from_millis(50), || {
        let holders: Vec<usize> = (0..NODES).filter(|i| pool_addresses(c, *i).is_ok_and(|a| a.contains(&ip))).collect();
        if holders == vec![owner] { Ok(()) } else { Err(Error::check(format!("holders {holders:?}"))) }
    })?;
    c.get_eventually(&client, sa(ip, 80), CONVERGE)?;
    Ok(())
}

/// `externalTrafficPolicy: Local` with its only endpoint on node2: only node2 may announce the address, and the
/// pod sees the outside client's own address.
fn local_policy_announced_by_endpoint_node_and_client_address_kept(c: &mut Cluster) -> Result<()> {
    let before: BTreeSet<Ipv4Addr> =
        (0..NODES).map(|i| pool_addresses(c, i)).collect::<Result<Vec<_>>>()?.into_iter().flatten().collect();
    c.apply_service(&lb_svc("lbl", LOCAL_SVC_IP, true), &["l2"])?;
    let (owner, ip) = wait_owner(c, &before, &[1])?;
    ensure!(owner == 1, "the Local-policy address {ip} is on node{}, want node2 (its only endpoint)", owner + 1);
    let client = c.client.name.clone();
    for _ in 0..5 {
        let r = c.get_eventually(&client, sa(ip, 80), CONVERGE)?;
        ensure!(r.pod == "l2", "outside -> {ip}:80 (Local) answered by {}", r.pod);
        ensure!(
            r.peer_ip() == IpAddr::V4(CLIENT_IP),
            "outside -> {ip}:80 (Local): the pod saw {}, want {CLIENT_IP}",
            r.peer
        );
    }
    let r = c.probe.udp(&client, sa(ip, UDP_PORT), Duration::from_secs(2))?;
    ensure!(r.pod == "l2" && r.peer_ip() == IpAddr::V4(CLIENT_IP), "UDP (Local): {} saw {}", r.pod, r.peer);
    // The endpoint moves to node3: so does the address.
    c.apply_service(&lb_svc("lbl", LOCAL_SVC_IP, true), &["l3"])?;
    sys::poll("the Local address to move to node3 with its endpoint", CONVERGE, Duration::from_millis(50), || {
        let holders: Vec<usize> = (0..NODES).filter(|i| pool_addresses(c, *i).is_ok_and(|a| a.contains(&ip))).collect();
        if holders == vec![2] { Ok(()) } else { Err(Error::check(format!("holders {holders:?}"))) }
    })?;
    let r = c.get_eventually(&client, sa(ip, 80), CONVERGE)?;
    ensure!(r.pod == "l3" && r.peer_ip() == IpAddr::V4(CLIENT_IP), "after the move: {} saw {}", r.pod, r.peer);
    Ok(())
}

fn agents_count_owned_addresses(c: &mut Cluster) -> Result<()> {
    let mut total = 0;
    for i in 0..NODES {
        let held = pool_addresses(c, i)?.len();
        let ns = c.node_ns(i).to_string();
        let text = sys::poll("the agent's metrics", CONVERGE, Duration::from_millis(100), || {
            c.probe.get_raw(
                &ns,
                SocketAddr::V4(causeway_netns_cluster::cluster::AGENT_ADMIN),
                "/metrics",
                Duration::from_secs(1),
            )
        })?;
        let owned = text
            .lines()
            .find_map(|l| l.strip_prefix("causeway_node_lb_addresses_owned "))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .ok_or_else(|| Error::check(format!("node{}: no causeway_node_lb_addresses_owned", i + 1)))?;
        ensure!(owned == held, "node{}: the gauge says {owned} owned addresses, eth0 holds {held}", i + 1);
        ensure!(
            text.contains("causeway_node_lb_ownership_changes_total{change=\"acquired\"}"),
            "node{}: no ownership change counter",
            i + 1
        );
        total += owned;
    }
    ensure!(total == 2, "{total} addresses owned over all nodes, want 2 (one per Service)");
    let _ = node_ip(0);
    Ok(())
}

pub const CHECKS: &[(&str, Check)] = &[
    ("lb_address_reached_from_outside_tcp_and_udp", lb_address_reached_from_outside_tcp_and_udp),
    ("owner_lost_address_moves_within_2s", owner_lost_address_moves_within_2s),
    (
        "local_policy_announced_by_endpoint_node_and_client_address_kept",
        local_policy_announced_by_endpoint_node_and_client_address_kept,
    ),
    ("agents_count_owned_addresses", agents_count_owned_addresses),
];
