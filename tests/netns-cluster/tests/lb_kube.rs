//! LoadBalancer addresses (the checks in `common/lb.rs`) on a cluster whose source is the real kube-apiserver:
//! the IPPool is a custom resource, the leader (the edge proxy's controller) writes `status.loadBalancer`, a lost
//! node is noticed through its agent's heartbeat Lease (nobody marks it NotReady), and exhaustion is an Event.

mod common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use causeway_netns_cluster::cluster::{Options, POD_PORT};
use causeway_netns_cluster::objects::LoadBalancer;
use causeway_netns_cluster::{Check, Cluster, Error, Result, Source, Suite, Svc, SvcPort, ensure, sys};
use common::lb::{CONVERGE, sa};
use serde_json::{Value, json};

/// A pool of one address, to exhaust.
const TINY: Ipv4Addr = Ipv4Addr::new(172, 18, 255, 210);

fn kubectl(c: &Cluster, args: &[&str]) -> Result<String> {
    c.store.api_server()?.kubectl(args, None)
}

/// Service `name` asking for pool `tiny`, with its endpoint on pod `l1`.
fn tiny_svc(c: &Cluster, name: &str, ip: Ipv4Addr) -> Result<Vec<Value>> {
    let mut svc = Svc::new(name, ip, vec![SvcPort::tcp("http", 80, POD_PORT)]);
    svc.load_balancer = Some(LoadBalancer { class: None, ips: vec![] });
    let mut obj = svc.to_object();
    obj["metadata"]["annotations"] = json!({"causeway.dev/address-pool": "tiny"});
    Ok(vec![obj, svc.slice(&c.endpoints(&["l1"])?)])
}

fn status_ip(c: &Cluster, name: &str) -> Result<String> {
    Ok(kubectl(c, &["get", "service", name, "-o", "jsonpath={.status.loadBalancer.ingress[*].ip}"])?.trim().into())
}

/// Two Services want the one address of pool `tiny`: the older gets it (written to its status by the leader,
/// which also counts the pool's used addresses in the pool's status), the other stays pending with an
/// `AllocationFailed` Event naming the pool; when the first is deleted, the
/// address goes to the second and an outside client reaches it there.
fn pool_exhaustion_leaves_the_service_pending_with_an_event(c: &mut Cluster) -> Result<()> {
    let pool = json!({
        "apiVersion": "causeway.dev/v1alpha1",
        "kind": "IPPool",
        "metadata": {"name": "tiny"},
        "spec": {"blocks": [{"cidr": format!("{TINY}/32")}], "autoAssign": false},
    });
    c.apply("ippool-tiny", &[pool])?;
    // Like the main pool, on-link for the client (a flat L2 network).
    sys::ip_in(&c.client.name, &["route", "replace", &format!("{TINY}/32"), "dev", "eth0"])?;
    c.apply("svc-ex1", &tiny_svc(c, "ex1", Ipv4Addr::new(10, 96, 0, 42))?)?;
    sys::poll("ex1 to get the pool's address in its status", CONVERGE, Duration::from_millis(100), || {
        let ip = status_ip(c, "ex1")?;
        if ip == TINY.to_string() { Ok(()) } else { Err(Error::check(format!("status {ip:?}"))) }
    })?;
    c.apply("svc-ex2", &tiny_svc(c, "ex2", Ipv4Addr::new(10, 96, 0, 43))?)?;
    let event = sys::poll("an AllocationFailed Event on ex2", CONVERGE, Duration::from_millis(200), || {
        let out = kubectl(
            c,
            &[
                "get",
                "events",
                "-n",
                "default",
                "--field-selector",
                "involvedObject.kind=Service,involvedObject.name=ex2,reason=AllocationFailed",
                "-o",
                "jsonpath={.items[*].message}",
            ],
        )?;
        if out.trim().is_empty() { Err(Error::check("no Event yet")) } else { Ok(out) }
    })?;
    ensure!(event.contains("tiny"), "the exhaustion Event does not name the pool: {event}");
    ensure!(status_ip(c, "ex2")?.is_empty(), "ex2 got an address from an exhausted pool");
    ensure!(status_ip(c, "ex1")? == TINY.to_string(), "ex1 lost its address when ex2 asked");
    // The leader keeps the pool's counts in its status (`kubectl get ippools`: Total 1, Used 1).
    sys::poll("the tiny pool's status to count 1 of 1 used", CONVERGE, Duration::from_millis(100), || {
        let counts = kubectl(c, &["get", "ippool", "tiny", "-o", "jsonpath={.status.total}/{.status.used}"])?;
        if counts.trim() == "1/1" { Ok(()) } else { Err(Error::check(format!("status {counts:?}"))) }
    })?;

    // Deleting ex1 releases the address to ex2, announced and reachable from outside.
    c.store.remove("svc-ex1")?;
    sys::poll("ex2 to get the released address", CONVERGE, Duration::from_millis(100), || {
        let ip = status_ip(c, "ex2")?;
        if ip == TINY.to_string() { Ok(()) } else { Err(Error::check(format!("status {ip:?}"))) }
    })?;
    let client = c.client.name.clone();
    let r = c.get_eventually(&client, sa(TINY, 80), CONVERGE)?;
    ensure!(r.pod == "l1", "outside -> {TINY}:80 answered by {}", r.pod);
    c.store.remove("svc-ex2")?;
    c.store.remove("ippool-tiny")
}

const KUBE_LB_CHECKS: &[(&str, Check)] = &[(
    "pool_exhaustion_leaves_the_service_pending_with_an_event",
    pool_exhaustion_leaves_the_service_pending_with_an_event,
)];

#[test]
fn netns_cluster_lb_kube() {
    // The exhaustion check first: the failover check takes a node's link down, and the leader (the edge proxy's
    // controller, on node1) may be on it.
    let checks: Vec<(&str, Check)> = KUBE_LB_CHECKS.iter().chain(common::lb::CHECKS).copied().collect();
    let options = Options {
        source: Source::ApiServer,
        agent_args: vec!["--lb-interface".into(), "eth0".into()],
        ..Options::default()
    };
    Suite::run(
        "netns_cluster_lb_kube",
        || Cluster::start_with(Path::new(env!("CARGO_BIN_EXE_cw-netns-probe")), options),
        common::lb::populate,
        &checks,
    );
}
