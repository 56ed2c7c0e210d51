//! An agent killed and restarted under load (issue 6, bad input), the same check on either source:
//! `tests/churn.rs` runs it on a manifests directory, `tests/kube.rs` through the API server (where the restarted
//! agent also re-lists everything and renews its heartbeat again).

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use causeway_netns_cluster::cluster::{AGENT_ADMIN, NODES, POD_PORT, node_ip};
use causeway_netns_cluster::probe::{LoopRecord, now_ms};
use causeway_netns_cluster::{Cluster, Error, Result, Svc, SvcPort, ensure, sys};

use super::paths::{CONVERGE, sa};
use super::scale::SCALE_IP;

const LATE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 21);

/// A running request loop and where its output goes.
struct Loop {
    name: &'static str,
    proc: sys::Proc,
}

impl Loop {
    fn records(&self) -> Vec<LoopRecord> {
        LoopRecord::parse(&std::fs::read_to_string(&self.proc.log).unwrap_or_default())
    }
}

pub fn rules(dump: &str) -> Vec<String> {
    let mut table = "";
    let mut v = Vec::new();
    for line in dump.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t;
        } else if line.starts_with("-A ") {
            v.push(format!("{table} {line}"));
        }
    }
    v.sort();
    v
}

/// Node2's agent is SIGKILLed while traffic flows and restarted: what it programmed keeps working while it is
/// down (new connections to a ClusterIP from node2's pod `x2`, one kept-alive connection, pod `cl` on node3
/// reaching `x2`), a Service added meanwhile (endpoint `cl`) is picked up by the others and by the restarted
/// agent, and the restarted agent's rules and routes are exactly those from before, nothing lost or duplicated.
/// Needs Service `scale` (`common/scale.rs`); `x2` must run on node2 and `cl` elsewhere.
pub fn killed_agent_keeps_connectivity_and_restarted_agent_converges(
    c: &mut Cluster,
    x2: &str,
    cl: &str,
) -> Result<()> {
    let (x2_name, cl_name) = (x2.to_string(), cl.to_string());
    let node = 1;
    ensure!(c.pod(x2)?.node == node, "{x2} must run on node2, whose agent is killed");
    let before = rules(&c.iptables_save(node)?);
    let routes_before = c.routes(node)?;
    let (cl, x2) = (c.pod_ns(cl)?, c.pod_ns(x2)?);
    // Traffic from node2 through the whole kill and restart: new connections to a ClusterIP, and one
    // established (kept-alive) connection through it, which a restart must not drop (design invariant 5).
    let mut fresh = Loop {
        name: "new connections from node2 -> scale",
        proc: c.probe.spawn_loop(
            &x2,
            sa(SCALE_IP, 80),
            None,
            Duration::from_secs(40),
            Duration::from_millis(50),
            &c.dir.join("loop-restart.log"),
        )?,
    };
    let mut held = Loop {
        name: "kept-alive connection from node2 -> scale",
        proc: c.probe.spawn_keepalive(
            &x2,
            sa(SCALE_IP, 80),
            800,
            Duration::from_millis(50),
            &c.dir.join("keepalive-restart.log"),
        )?,
    };
    for l in [&fresh, &held] {
        sys::poll(&format!("the {} to start", l.name), Duration::from_secs(5), Duration::from_millis(50), || {
            if l.records().len() >= 4 { Ok(()) } else { Err(Error::check(format!("records: {:?}", l.records()))) }
        })?;
    }
    c.kill_agent(node);

    // With the agent gone, what it programmed stays: cross-node pod traffic and Service traffic on node2.
    let x2_ip = c.pod(&x2_name)?.ip;
    let r = c.get(&cl, sa(x2_ip, POD_PORT))?;
    ensure!(r.pod == x2_name, "agent down: {cl_name} -> {x2_name} answered by {}", r.pod);
    let r = c.get(&x2, sa(SCALE_IP, 80))?;
    ensure!(r.pod.starts_with('s'), "agent down: {x2_name} -> scale answered by {}", r.pod);

    // A change while it is down: a new Service.
    let late = Svc::new("late", LATE_IP, vec![SvcPort::tcp("http", 80, POD_PORT)]);
    c.apply_service(&late, &[cl_name.as_str()])?;
    // Other nodes pick it up meanwhile.
    c.get_eventually(&cl, sa(LATE_IP, 80), CONVERGE)?;

    c.start_agent(node)?;
    let r = c.get_eventually(&x2, sa(LATE_IP, 80), CONVERGE)?;
    ensure!(r.pod == cl_name, "restarted agent: {x2_name} -> late answered by {}", r.pod);
    let ns = c.node_ns(node).to_string();
    sys::poll("the restarted agent's /readyz", CONVERGE, Duration::from_millis(100), || {
        c.probe.get_raw(&ns, SocketAddr::V4(AGENT_ADMIN), "/readyz", Duration::from_millis(500))
    })?;
    let t_ready = now_ms();
    for l in [&fresh, &held] {
        sys::poll(
            &format!("{}: requests after the restart", l.name),
            Duration::from_secs(5),
            Duration::from_millis(50),
            || {
                let recs = l.records();
                if recs.iter().any(|r| r.outcome.is_err()) || recs.iter().filter(|r| r.at_ms > t_ready).count() >= 10 {
                    Ok(())
                } else {
                    Err(Error::check("not yet"))
                }
            },
        )?;
    }
    fresh.proc.kill();
    held.proc.kill();
    for l in [&fresh, &held] {
        let recs = l.records();
        let failed: Vec<String> = recs.iter().filter_map(|r| r.outcome.as_ref().err().cloned()).collect();
        ensure!(
            failed.is_empty(),
            "{}: {} of {} requests failed across the agent's kill and restart: {}",
            l.name,
            failed.len(),
            recs.len(),
            failed.join("; ")
        );
    }
    let held_recs = held.records();
    let conns: BTreeSet<String> = held_recs
        .iter()
        .filter_map(|r| r.outcome.as_ref().ok().map(|rep| format!("{} via {}", rep.pod, rep.peer)))
        .collect();
    ensure!(conns.len() == 1, "the kept-alive connection was not one flow to one pod across the restart: {conns:?}");

    // Converged, not duplicated: every rule from before is still there once, and nothing appears twice.
    let after = rules(&c.iptables_save(node)?);
    let mut dups: Vec<&String> = after.windows(2).filter(|w| w[0] == w[1]).map(|w| &w[0]).collect();
    dups.dedup();
    ensure!(dups.is_empty(), "after the restart, rules appear twice: {dups:?}");
    let missing: Vec<&String> = before.iter().filter(|r| !after.contains(r)).collect();
    ensure!(missing.is_empty(), "after the restart, rules from before are gone: {missing:?}");
    let routes_after = c.routes(node)?;
    for i in (0..NODES).filter(|&i| i != node) {
        let want = format!("10.244.{i}.0/24 via {}", node_ip(i));
        ensure!(routes_after.contains(&want), "after the restart, node2 lacks the route {want:?}: {routes_after}");
        ensure!(routes_before.contains(&want), "before the kill, node2 lacked the route {want:?}: {routes_before}");
    }
    Ok(())
}
