//! Changes while running and bad input, on one shared three-node cluster: scaling a Service up and down under
//! load (through kube-proxy-style rules and through the edge proxy), deleting a pod, ADDs that fail, an agent
//! killed and restarted, and a manifests file written half-way. Each check is a named step; the cluster is
//! removed whatever happens.
//!
//! Pods: `s1` (node1), `s2` and `x2` (node2), `cl` (node3, the in-cluster client); `s3` joins during scaling.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use causeway_netns_cluster::Check;
use causeway_netns_cluster::cluster::{AGENT_ADMIN, POD_PORT, node_ip};
use causeway_netns_cluster::netns::Netns;
use causeway_netns_cluster::probe::now_ms;
use causeway_netns_cluster::{Cluster, Error, PodSpec, Result, Suite, Svc, SvcPort, ensure, sys};

const HALF_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 22);

mod common;
use common::paths::{CONVERGE, sa};
use common::scale::{SCALE_HOST, SCALE_IP};

fn populate(c: &mut Cluster) -> Result<()> {
    common::scale::populate(c)?;
    c.add_pod("x2", 1, PodSpec::default())?;
    c.add_pod("cl", 2, PodSpec::default())?;
    Ok(())
}

/// The scaling check of `common/scale.rs`, with every change written to the manifests directory.
fn scale_up_and_down_moves_traffic_within_2s(c: &mut Cluster) -> Result<()> {
    common::scale::scale_up_and_down_moves_traffic_within_2s(c, "cl")
}

fn deleting_a_pod_releases_its_address(c: &mut Cluster) -> Result<()> {
    // s1 was deleted by the scaling check (if it ran); its address must be gone from node1's store.
    let held = c.ipam_addresses(0)?;
    let veths_before = c.veths(0)?;
    let ip = c.add_pod("d1", 0, PodSpec::default())?;
    ensure!(c.ipam_addresses(0)?.contains(&ip), "after ADD, node1's IPAM store does not hold d1's {ip}");
    ensure!(
        c.veths(0)?.len() == veths_before.len() + 1,
        "ADD did not add exactly one veth on node1: {:?}",
        c.veths(0)?
    );
    let x2 = c.pod_ns("x2")?;
    c.get_eventually(&x2, sa(ip, POD_PORT), CONVERGE)?;
    let pod = c.delete_pod("d1")?;
    let now = c.ipam_addresses(0)?;
    ensure!(!now.contains(&ip), "after DEL, node1's IPAM store still holds d1's {ip}: {now:?}");
    ensure!(now == held, "after ADD+DEL the store changed: before {held:?}, after {now:?}");
    ensure!(
        c.veths(0)? == veths_before,
        "after DEL, node1's veths are {:?}, before ADD {:?}",
        c.veths(0)?,
        veths_before
    );
    ensure!(sys::ip_in(&pod.ns.name, &["link", "show", "eth0"]).is_err(), "after DEL, d1's netns still has eth0");
    ensure!(
        c.probe.get(&x2, sa(ip, POD_PORT), None, "/", Duration::from_millis(700)).is_err(),
        "{ip} still answers after DEL"
    );
    // The released address can be allocated again: a new pod takes the next free address and serves.
    let ip2 = c.add_pod("d2", 0, PodSpec::default())?;
    c.get_eventually(&x2, sa(ip2, POD_PORT), CONVERGE)?;
    c.delete_pod("d2")?;
    Ok(())
}

fn failed_add_leaves_nothing_behind(c: &mut Cluster) -> Result<()> {
    let node = 1;
    let (ips, veths) = (c.ipam_addresses(node)?, c.veths(node)?);
    // 1. A netns path that does not exist.
    let id = format!("{}-bad1", c.run);
    let missing = format!("/run/netns/{}-missing", c.run);
    match c.raw_add(node, &id, &missing) {
        Ok(r) => return Err(Error::check(format!("ADD into a missing netns succeeded: {r}"))),
        Err(Error::Cni { msg, .. }) => ensure!(msg.contains("code"), "the failed ADD printed no CNI error JSON: {msg}"),
        Err(e) => return Err(e),
    }
    ensure!(
        c.ipam_addresses(node)? == ips,
        "a failed ADD (missing netns) leaked an address: {:?} -> {:?}",
        ips,
        c.ipam_addresses(node)?
    );
    ensure!(c.veths(node)? == veths, "a failed ADD (missing netns) leaked a veth: {:?}", c.veths(node)?);
    c.raw_del(node, &id, &missing).map_err(|e| Error::check(format!("DEL after the failed ADD must succeed: {e}")))?;

    // 2. The interface name is already taken inside the pod's namespace.
    let ns = Netns::create_bare(format!("{}-bad2", c.run))?;
    sys::ip_in(&ns.name, &["link", "add", "eth0", "type", "veth", "peer", "name", "taken0"])?;
    let id2 = format!("{}-bad2", c.run);
    if let Ok(r) = c.raw_add(node, &id2, &ns.path()) {
        return Err(Error::check(format!("ADD into a netns that already has eth0 succeeded: {r}")));
    }
    ensure!(
        c.ipam_addresses(node)? == ips,
        "a failed ADD (eth0 taken) leaked an address: {:?} -> {:?}",
        ips,
        c.ipam_addresses(node)?
    );
    ensure!(c.veths(node)? == veths, "a failed ADD (eth0 taken) leaked a veth: {:?}", c.veths(node)?);
    c.raw_del(node, &id2, &ns.path())
        .map_err(|e| Error::check(format!("DEL after the failed ADD must succeed: {e}")))?;
    drop(ns);

    // The rest of the node is untouched: its pods still talk across nodes, and a good ADD still works.
    let cl = c.pod_ns("cl")?;
    let s2 = c.pod(if c.pods.contains_key("s2") { "s2" } else { "x2" })?.ip;
    c.get_eventually(&cl, sa(s2, POD_PORT), CONVERGE)?;
    let ip = c.add_pod("good", node, PodSpec::default())?;
    c.get_eventually(&cl, sa(ip, POD_PORT), CONVERGE)?;
    c.delete_pod("good")?;
    Ok(())
}

/// The rules (`-A` lines) of an `iptables-save` dump, each prefixed with its table, sorted.
/// The restart check of `common/restart.rs`, with the Service added meanwhile written to the manifests directory.
fn killed_agent_keeps_connectivity_and_restarted_agent_converges(c: &mut Cluster) -> Result<()> {
    common::restart::killed_agent_keeps_connectivity_and_restarted_agent_converges(c, "x2", "cl")
}

fn half_written_manifest_keeps_the_rest_serving(c: &mut Cluster) -> Result<()> {
    let half = Svc::new("half", HALF_IP, vec![SvcPort::tcp("http", 80, POD_PORT)]);
    let eps = c.endpoints(&["x2"])?;
    let docs = [half.to_object(), half.slice(&eps)];
    let mut problems = Vec::new();
    c.manifests()?.write_truncated("svc-half", &docs, 0.5)?;
    let file = "svc-half.yaml";
    // Give every watcher time to see the file: the 1 s contract, plus margin. This is a bound on a
    // negative (nothing may break), so it is a deadline on observations, each of which must succeed.
    let cl = c.pod_ns("cl")?;
    let client = c.client.name.clone();
    let until = now_ms() + 2500;
    for _ in 0..200 {
        if now_ms() >= until {
            break;
        }
        let r = c.get(&cl, sa(SCALE_IP, 80))?;
        ensure!(r.pod.starts_with('s'), "with a half-written file: cl -> scale answered by {}", r.pod);
        if c.proxy.is_some()
            && c.probe.get(&client, sa(node_ip(0), 80), Some(SCALE_HOST), "/", Duration::from_secs(2)).is_err()
        {
            problems.push("the Ingress stopped answering while a manifests file was half-written".to_string());
            break;
        }
    }
    for n in &mut c.nodes {
        if let Some(status) = n.agent.as_mut().and_then(sys::Proc::exited) {
            return Err(Error::check(format!("causeway-node on {} exited on a half-written file: {status}", n.name)));
        }
    }
    // Each watcher reports the bad file by name (design §4: "reported by name and skipped"; invariant 3: a
    // log line and a metric). For an agent that does not log it, its diagnostics gauge is quoted, to tell
    // "counted but not named" from "not seen".
    let mut logs: Vec<(String, std::path::PathBuf, Option<String>)> = c
        .nodes
        .iter()
        .map(|n| (format!("causeway-node on {}", n.name), n.agent_log.clone(), Some(n.ns.name.clone())))
        .collect();
    if let Some(p) = c.proxy.as_ref() {
        logs.push(("causeway run".into(), p.log.clone(), None));
    }
    for (who, log, agent_ns) in &logs {
        if !std::fs::read_to_string(log).unwrap_or_default().contains(file) {
            let gauge = agent_ns
                .as_ref()
                .and_then(|ns| {
                    c.probe.get_raw(ns, SocketAddr::V4(AGENT_ADMIN), "/metrics", Duration::from_secs(1)).ok()
                })
                .and_then(|m| m.lines().find(|l| l.starts_with("causeway_node_diagnostics ")).map(str::to_string))
                .map(|g| format!(" (its metrics say: {g})"))
                .unwrap_or_default();
            problems.push(format!("{who} did not report the half-written {file} in its log{gauge}"));
        }
    }
    // Completing the file applies it.
    c.manifests()?.write("svc-half", &docs)?;
    let r = c.get_eventually(&cl, sa(HALF_IP, 80), CONVERGE)?;
    ensure!(r.pod == "x2", "completed file: cl -> half answered by {}", r.pod);
    if problems.is_empty() { Ok(()) } else { Err(Error::check(problems.join("; "))) }
}

fn connectivity_after_churn(c: &mut Cluster) -> Result<()> {
    let live: Vec<String> = c.pods.keys().cloned().collect();
    for from in &live {
        let ns = c.pod_ns(from)?;
        let src = c.pod(from)?.ip;
        for to in live.iter().filter(|t| *t != from) {
            let r = c.get_eventually(&ns, sa(c.pod(to)?.ip, POD_PORT), CONVERGE)?;
            ensure!(
                &r.pod == to && r.peer_ip() == IpAddr::V4(src),
                "{from} -> {to}: answered by {} seeing {}",
                r.pod,
                r.peer
            );
        }
        let r = c.get_eventually(&ns, sa(SCALE_IP, 80), CONVERGE)?;
        ensure!(r.pod.starts_with('s') && c.pods.contains_key(&r.pod), "{from} -> scale answered by {}", r.pod);
    }
    Ok(())
}

const CHECKS: &[(&str, Check)] = &[
    ("scale_up_and_down_moves_traffic_within_2s", scale_up_and_down_moves_traffic_within_2s),
    ("deleting_a_pod_releases_its_address", deleting_a_pod_releases_its_address),
    ("failed_add_leaves_nothing_behind", failed_add_leaves_nothing_behind),
    (
        "killed_agent_keeps_connectivity_and_restarted_agent_converges",
        killed_agent_keeps_connectivity_and_restarted_agent_converges,
    ),
    ("half_written_manifest_keeps_the_rest_serving", half_written_manifest_keeps_the_rest_serving),
    ("connectivity_after_churn", connectivity_after_churn),
];

#[test]
fn netns_cluster_churn() {
    Suite::run(
        "netns_cluster_churn",
        || Cluster::start(Path::new(env!("CARGO_BIN_EXE_cw-netns-probe"))),
        populate,
        CHECKS,
    );
}
