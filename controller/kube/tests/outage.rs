//! An API outage: the kube-apiserver is stopped and started again (etcd keeps the data). Meanwhile the index
//! keeps everything it had and the leader steps down (it cannot renew); afterwards the watchers resync, changes
//! take effect, unchanged objects are never deleted, the errors are counted, and the replica leads again.

mod support;

use std::time::Duration;

use causeway_kube::{KubeMetrics, LeaseConfig, spawn_elector};
use causeway_translate::{Kind, ObjectKey};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use support::{DEADLINE, Feed, TestCluster, eventually};

fn service(name: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": { "name": name, "namespace": "default" },
        "spec": { "ports": [{ "name": "http", "port": 80 }] }
    }))
    .expect("service")
}

fn slice(name: &str, service: &str) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": { "name": name, "namespace": "default", "labels": { "kubernetes.io/service-name": service } },
        "addressType": "IPv4",
        "endpoints": [{ "addresses": ["10.244.2.9"], "conditions": { "ready": true } }],
        "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }]
    }))
    .expect("slice")
}

fn key(kind: Kind, name: &str) -> ObjectKey {
    ObjectKey::new(kind, "default", name)
}

fn total(counter: &prometheus::IntCounterVec) -> u64 {
    ["Ingress", "IngressClass", "Service", "EndpointSlice", "Secret", "Node"]
        .iter()
        .map(|k| counter.with_label_values(&[k]).get())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_resync_after_the_api_server_restarts() {
    let cluster = TestCluster::start();
    let client = cluster.client().await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    services.create(&pp, &service("stable")).await.expect("create Service");
    slices.create(&pp, &slice("stable-1", "stable")).await.expect("create EndpointSlice");
    services.create(&pp, &service("doomed")).await.expect("create Service");

    let feed = Feed::start(client.clone());
    feed.wait_init_done().await;
    let stable = [key(Kind::Service, "stable"), key(Kind::EndpointSlice, "stable-1")];
    let stable_objects: Vec<_> = stable.iter().map(|k| feed.get(k)).collect();
    assert!(stable_objects.iter().all(Option::is_some), "initial state missing");

    // A leader, to see that it steps down when it cannot renew, and leads again afterwards.
    let lease = LeaseConfig {
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_millis(300),
        ..LeaseConfig::new("default", "outage", "replica-a")
    };
    let elector = spawn_elector(client.clone(), lease, KubeMetrics::unregistered().expect("metrics"));
    let is_leader = elector.is_leader();
    eventually("leadership", DEADLINE, || async { (*is_leader.borrow()).then_some(()) }).await;

    // Outage: the watchers notice (errors counted), and the index keeps what it had.
    let outage = std::time::Instant::now();
    cluster.stop_apiserver();
    let stopping = outage.elapsed();
    eventually("the leader to step down", DEADLINE, || async { (!*is_leader.borrow()).then_some(()) }).await;
    // The API server may answer while it shuts down; from the moment it is gone the leader has at most the
    // renew deadline (2 s) plus one retry before it must stop leading.
    let took = outage.elapsed();
    eprintln!("leader stepped down {took:?} after the stop began ({stopping:?} to stop)");
    assert!(took <= stopping + Duration::from_millis(2300 + 700), "stepped down only after {took:?}");
    eventually("watch errors during the outage", DEADLINE, || async {
        (total(&feed.metrics.watch_errors) > 0).then_some(())
    })
    .await;
    assert_eq!(stable.iter().map(|k| feed.get(k)).collect::<Vec<_>>(), stable_objects, "index changed while down");

    // Back up; changes made right away land while the watchers are still backing off, and must take effect.
    cluster.start_apiserver();
    services.create(&pp, &service("added")).await.expect("create Service after restart");
    services.delete("doomed", &DeleteParams::default()).await.expect("delete Service after restart");
    // kube-rs's default backoff grows to 30 s between attempts, so allow for one full step.
    let resync_deadline = DEADLINE + Duration::from_secs(30);
    let ((), took) = eventually("resync after the restart", resync_deadline, || async {
        (feed.get(&key(Kind::Service, "added")).is_some() && feed.get(&key(Kind::Service, "doomed")).is_none())
            .then_some(())
    })
    .await;
    eprintln!("resynced {took:?} after the API server was ready again");

    eventually("leadership again after the outage", DEADLINE, || async { (*is_leader.borrow()).then_some(()) }).await;
    elector.shutdown().await;

    // Objects that did not change were never deleted on the way, and are still the same objects.
    feed.with(|s| {
        for (applied, k) in s.log.iter().flatten() {
            assert!(*applied || !stable.contains(k), "{k} was deleted during the outage");
        }
    });
    assert_eq!(stable.iter().map(|k| feed.get(k)).collect::<Vec<_>>(), stable_objects);
    eprintln!("watch errors {}, restarts {}", total(&feed.metrics.watch_errors), total(&feed.metrics.watch_restarts));
}
