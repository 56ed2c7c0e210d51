//! Per-node heartbeat Leases against a real kube-apiserver: renewals are seen by an observer, a crashed renewer
//! expires within its duration, a released Lease is dead at once, and a process stopping after its successor
//! started (a rolling restart) cannot release the successor's heartbeat.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use causeway_kube::heartbeat::{
    DURATION_ANNOTATION, HEARTBEAT_LABEL, HeartbeatConfig, HeartbeatMetrics, NODE_ANNOTATION, NODE_COMPONENT,
    Observations, judge, spawn_heartbeat, watch_heartbeats,
};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use support::{DEADLINE, TestCluster, eventually};
use tokio::sync::watch;

const NS: &str = "default";
const INTERVAL: Duration = Duration::from_millis(200);
const DURATION: Duration = Duration::from_millis(1000);

fn config(node: &str) -> HeartbeatConfig {
    HeartbeatConfig { renew_interval: INTERVAL, lease_duration: DURATION, ..HeartbeatConfig::node(NS, node) }
}

fn metrics() -> HeartbeatMetrics {
    HeartbeatMetrics::register(&prometheus::Registry::new()).expect("metrics")
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

fn verdict_now(rx: &watch::Receiver<Arc<Observations>>) -> causeway_kube::heartbeat::Verdict {
    judge(&rx.borrow(), Instant::now())
}

async fn holder(api: &Api<Lease>, name: &str) -> Option<String> {
    api.get_opt(name).await.ok().flatten().and_then(|l| l.spec).and_then(|s| s.holder_identity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_expired_released_and_a_successor_is_never_released() {
    let cluster = TestCluster::start();
    let client = cluster.client().await;
    let api: Api<Lease> = Api::namespaced(client.clone(), NS);
    for node in ["obs", "a", "b"] {
        config(node).validate().expect("valid timings");
    }
    let observer = watch_heartbeats(client.clone(), NS, &[NODE_COMPONENT], Some(config("obs").own()));
    let obs = spawn_heartbeat(cluster.client().await, config("obs"), metrics());
    let a = spawn_heartbeat(cluster.client().await, config("a"), metrics());
    let b = spawn_heartbeat(cluster.client().await, config("b"), metrics());

    eventually("three live heartbeats", DEADLINE, || async {
        let v = verdict_now(&observer);
        (v.live == set(&["node/a", "node/b", "node/obs"]) && v.fresh).then_some(())
    })
    .await;
    let lease = api.get("causeway-node-a").await.expect("Lease causeway-node-a");
    let labels = lease.metadata.labels.clone().unwrap_or_default();
    let annotations = lease.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(labels.get(HEARTBEAT_LABEL).map(String::as_str), Some("node"));
    assert_eq!(annotations.get(NODE_ANNOTATION).map(String::as_str), Some("a"));
    assert_eq!(annotations.get(DURATION_ANNOTATION).map(String::as_str), Some("1000"));
    let spec = lease.spec.expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("a"));
    assert_eq!(spec.lease_duration_seconds, Some(1));
    assert!(spec.acquire_time.is_some() && spec.renew_time.is_some());

    // A crash: no release. Dead between one duration minus one interval and one duration after the last renewal.
    a.abort();
    let ((), took) = eventually("a's heartbeat to expire", DEADLINE, || async {
        verdict_now(&observer).dead.contains("node/a").then_some(())
    })
    .await;
    println!("crashed heartbeat judged dead after {took:?}");
    assert!(took <= DURATION + Duration::from_millis(300), "expiry took {took:?}");
    assert!(took + INTERVAL + Duration::from_millis(50) >= DURATION, "dead after {took:?}, before it could expire");
    assert_eq!(holder(&api, "causeway-node-a").await.as_deref(), Some("a"), "a crash releases nothing");

    // A graceful stop: released, dead at once.
    let stopping = Instant::now();
    b.release().await;
    let ((), _) =
        eventually("b's release", DEADLINE, || async { verdict_now(&observer).dead.contains("node/b").then_some(()) })
            .await;
    let took = stopping.elapsed();
    println!("released heartbeat judged dead after {took:?}");
    assert!(took < DURATION - INTERVAL, "a release took {took:?}, as long as an expiry");
    assert_eq!(holder(&api, "causeway-node-b").await, None);
    assert!(verdict_now(&observer).live.contains("node/obs"));

    // A rolling restart: the old process (renewing rarely here, so the order is certain) stops after the new one
    // renewed; its release carries its own last resourceVersion and is refused, so the node stays alive.
    let slow = HeartbeatConfig {
        renew_interval: Duration::from_secs(10),
        lease_duration: Duration::from_secs(30),
        ..config("c")
    };
    let old = spawn_heartbeat(cluster.client().await, slow, metrics());
    eventually("the old process's Lease", DEADLINE, || async { holder(&api, "causeway-node-c").await }).await;
    let before = api.get("causeway-node-c").await.expect("Lease").metadata.resource_version;
    let new = spawn_heartbeat(cluster.client().await, config("c"), metrics());
    eventually("a renewal by the new process", DEADLINE, || async {
        let now = api.get("causeway-node-c").await.ok()?.metadata.resource_version;
        (now != before).then_some(())
    })
    .await;
    old.release().await;
    assert_eq!(holder(&api, "causeway-node-c").await.as_deref(), Some("c"), "the old process released its successor");
    eventually("c alive", DEADLINE, || async { verdict_now(&observer).live.contains("node/c").then_some(()) }).await;
    new.release().await;
    assert_eq!(holder(&api, "causeway-node-c").await, None);
    obs.release().await;
}
