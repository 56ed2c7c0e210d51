//! Allocation, ownership and announcement together: two node agents compute `causeway_lb::plan` from the same
//! manifests and each drives its own announcer; the owner dies and the survivor takes the address.
//!
//! The node's death reaches the survivor as a change of its index (the Node turns NotReady, or its heartbeat
//! stops: `PlanOptions::alive_nodes`); both are exercised. What is measured is how long an outside client's
//! requests fail from the moment the survivor learns of the loss.

mod common;
use common::*;

use causeway_announce::AnnounceWorker;
use causeway_lb::{PlanOptions, plan, plan_with};
use causeway_translate::Index;
use std::collections::BTreeSet;
use std::time::Duration;

fn node(name: &str, ready: bool) -> String {
    format!(
        "---\napiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\nspec: {{podCIDR: 10.244.0.0/24}}\n\
         status:\n  addresses: [{{type: InternalIP, address: 10.77.0.1}}]\n  \
         conditions: [{{type: Ready, status: \"{}\"}}]\n",
        if ready { "True" } else { "False" }
    )
}

fn index(a_ready: bool, b_ready: bool) -> Index {
    let yaml = format!(
        "apiVersion: causeway.dev/v1alpha1\nkind: IPPool\nmetadata: {{name: lab}}\n\
         spec: {{blocks: [{{cidr: {VIP}/32}}]}}\n\
         ---\napiVersion: v1\nkind: Service\nmetadata: {{name: echo}}\n\
         spec: {{type: LoadBalancer, clusterIP: 10.96.0.10, ports: [{{port: 7777, protocol: UDP}}]}}\n{}{}",
        node("node-a", a_ready),
        node("node-b", b_ready)
    );
    let (objects, diags) = causeway_source::parse_manifests("lab.yaml", yaml.as_bytes());
    assert!(diags.is_empty(), "{diags:?}");
    let mut index = Index::new();
    for o in objects {
        index.apply(o);
    }
    index
}

/// Which lab namespace plays which node, so that the plan's owner (decided by the hash) is the one that dies.
fn roles(lab: &Lab, owner: &str) -> (String, String, &'static str) {
    // (owner namespace, survivor namespace, survivor node name)
    if owner == "node-a" { (lab.a.clone(), lab.b.clone(), "node-b") } else { (lab.b.clone(), lab.a.clone(), "node-a") }
}

fn failover(node_not_ready: bool) {
    let lab = Lab::new();
    let _echo_a = udp_echo(&lab.a);
    let _echo_b = udp_echo(&lab.b);
    let healthy = index(true, true);
    // Whoever owns the address in the healthy cluster plays the victim: swap node names if node-b owns it.
    let owner = plan(&healthy, "node-a").owners.values().next().cloned().flatten().expect("an owner");
    let (owner_ns, survivor_ns, survivor) = roles(&lab, &owner);
    let victim_plan = plan(&healthy, &owner);
    assert_eq!(victim_plan.my_addresses, set(&[VIP]));
    assert!(plan(&healthy, survivor).my_addresses.is_empty());

    let victim = AnnounceWorker::spawn(announcer(&owner_ns), Duration::from_secs(5)).expect("worker");
    let saver = AnnounceWorker::spawn(announcer(&survivor_ns), Duration::from_secs(5)).expect("worker");
    victim.set(victim_plan.my_addresses.clone());
    saver.set(BTreeSet::new());
    let mut client = Prober::new(&lab.obs);
    assert!(client.until_answer(Duration::from_secs(3)).is_some(), "the owner never answered");

    // The owner node dies: its link goes down and its agent is gone (the worker is dropped, nothing withdrawn).
    sh(&["ip", "-n", &owner_ns, "link", "set", "eth0", "down"]);
    drop(victim);
    assert!(!client.probe(), "a dead owner still answers");
    // The survivor learns of it and recomputes.
    let after = if node_not_ready {
        plan(&index(owner != "node-a", owner != "node-b"), survivor)
    } else {
        let alive = BTreeSet::from([survivor.to_owned()]);
        plan_with(&healthy, survivor, &PlanOptions { alive_nodes: Some(alive), ..Default::default() })
    };
    assert_eq!(after.my_addresses, set(&[VIP]), "the survivor must own the address now");
    saver.set(after.my_addresses);
    let gap = client.until_answer(Duration::from_secs(2)).expect("no answer within 2 s");
    eprintln!(
        "failover ({}): requests failed for {} ms after the survivor learned of the loss",
        if node_not_ready { "Node NotReady" } else { "heartbeat" },
        gap.as_millis()
    );
    assert!(gap < Duration::from_millis(500), "{gap:?}");
    assert_eq!(saver.stats().announced, set(&[VIP]));
}

#[test]
fn failover_when_the_owner_node_turns_not_ready() {
    failover(true);
}

#[test]
fn failover_when_the_owner_stops_heartbeating() {
    failover(false);
}
