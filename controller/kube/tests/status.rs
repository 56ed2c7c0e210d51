//! The Ingress status writer against a real kube-apiserver: only the leader writes, the address follows
//! `--publish-address` or `--publish-service`, and Ingresses that stop being ours are cleared.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use causeway_kube::{Address, KubeMetrics, OwnedIngresses, Publish, ingress_addresses, run_status_writer};
use causeway_translate::{Kind, ObjectKey};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{DEADLINE, TestCluster, eventually};
use tokio::sync::watch;

fn ingress(name: &str) -> Ingress {
    serde_json::from_value(json!({
        "metadata": { "name": name, "namespace": "default" },
        "spec": { "ingressClassName": "causeway", "defaultBackend": { "service": { "name": "web", "port": { "number": 80 } } } }
    }))
    .expect("ingress")
}

fn owned(names: &[&str]) -> OwnedIngresses {
    Some(Arc::new(names.iter().map(|n| ObjectKey::new(Kind::Ingress, "default", *n)).collect::<BTreeSet<_>>()))
}

fn ip(s: &str) -> Address {
    Address::Ip(s.to_owned())
}

async fn status_of(api: &Api<Ingress>, name: &str) -> Vec<Address> {
    api.get(name).await.map(|i| ingress_addresses(&i)).unwrap_or_default()
}

async fn wait_status(api: &Api<Ingress>, name: &str, want: &[Address]) {
    eventually(&format!("status of {name} to be {want:?}"), DEADLINE, || async {
        (status_of(api, name).await == want).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_writes_status_and_clears_what_stops_being_ours() {
    let cluster = TestCluster::start();
    let client = cluster.client().await;
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    ingresses.create(&pp, &ingress("mine")).await.expect("create Ingress");
    ingresses.create(&pp, &ingress("foreign")).await.expect("create Ingress");

    let (ours_tx, ours_rx) = watch::channel(owned(&["mine"]));
    let (lead_a, lead_a_rx) = watch::channel(true);
    let (lead_b, lead_b_rx) = watch::channel(false);
    let metrics = KubeMetrics::unregistered().expect("metrics");
    let a = tokio::spawn(run_status_writer(
        client.clone(),
        Publish::Addresses(vec!["192.0.2.1".into()]),
        lead_a_rx,
        ours_rx.clone(),
        metrics.clone(),
    ));
    let b = tokio::spawn(run_status_writer(
        client.clone(),
        Publish::Addresses(vec!["192.0.2.2".into(), "lb.example".into()]),
        lead_b_rx,
        ours_rx,
        KubeMetrics::unregistered().expect("metrics"),
    ));

    // A leads: its address, on our Ingress only.
    wait_status(&ingresses, "mine", &[ip("192.0.2.1")]).await;
    assert_eq!(status_of(&ingresses, "foreign").await, vec![]);
    assert!(metrics.status_updates.with_label_values(&["ok"]).get() >= 1);

    // Leadership moves to B: B's addresses replace A's, and A (now a follower) does not write them back.
    lead_a.send_replace(false);
    lead_b.send_replace(true);
    let want_b = [ip("192.0.2.2"), Address::Hostname("lb.example".into())];
    wait_status(&ingresses, "mine", &want_b).await;
    let steady = Instant::now();
    while steady.elapsed() < Duration::from_secs(1) {
        assert_eq!(status_of(&ingresses, "mine").await, want_b, "a follower wrote status");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // "mine" stops being ours (for example its class changed): the leader clears its status.
    ours_tx.send_replace(owned(&[]));
    wait_status(&ingresses, "mine", &[]).await;

    drop((lead_a, lead_b, ours_tx));
    a.await.expect("writer a").expect("writer a ended cleanly");
    b.await.expect("writer b").expect("writer b ended cleanly");

    // --publish-service: the Service's external IP, following its changes.
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let edge: Service = serde_json::from_value(json!({
        "metadata": { "name": "edge", "namespace": "default" },
        "spec": { "ports": [{ "port": 80 }], "externalIPs": ["203.0.113.7"] }
    }))
    .expect("service");
    services.create(&pp, &edge).await.expect("create Service");
    let (_ours_tx, ours_rx) = watch::channel(owned(&["foreign"]));
    let (_lead, lead_rx) = watch::channel(true);
    let publish = Publish::service("default/edge").expect("publish service");
    let c = tokio::spawn(run_status_writer(client.clone(), publish, lead_rx, ours_rx, metrics.clone()));
    wait_status(&ingresses, "foreign", &[ip("203.0.113.7")]).await;
    let patch = json!({ "spec": { "externalIPs": ["203.0.113.8"] } });
    services.patch("edge", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch Service");
    wait_status(&ingresses, "foreign", &[ip("203.0.113.8")]).await;
    c.abort();
}
