//! Bad input becomes a Kubernetes Event on the object concerned: an Ingress naming a Service that does not exist
//! goes through the whole pipeline (watch → index → translation → diagnostics) and the leader publishes an Event
//! naming the Ingress and the field. The translation keeps running; nothing crashes.

mod support;

use std::sync::Arc;

use causeway_kube::{KubeMetrics, Notice, run_event_writer};
use causeway_translate::{TranslateConfig, route_table};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use support::{DEADLINE, Feed, TestCluster, eventually};
use tokio::sync::watch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnostics_become_events_on_the_object() {
    let cluster = TestCluster::start();
    let client = cluster.client().await;
    let pp = PostParams::default();
    let class: IngressClass = serde_json::from_value(json!({
        "metadata": { "name": "causeway" },
        "spec": { "controller": "causeway.dev/ingress-controller" }
    }))
    .expect("class");
    Api::<IngressClass>::all(client.clone()).create(&pp, &class).await.expect("create IngressClass");
    let broken: Ingress = serde_json::from_value(json!({
        "metadata": { "name": "broken", "namespace": "default" },
        "spec": { "ingressClassName": "causeway", "rules": [{ "host": "broken.example", "http": { "paths": [{
            "path": "/", "pathType": "Prefix",
            "backend": { "service": { "name": "missing", "port": { "number": 80 } } } }] } }] }
    }))
    .expect("ingress");
    let created = Api::<Ingress>::namespaced(client.clone(), "default").create(&pp, &broken).await.expect("create");

    // The controller's wiring: snapshots → route table → diagnostics → Event writer (this replica leads).
    let feed = Feed::start(client.clone());
    feed.wait_init_done().await;
    let (diag_tx, diag_rx) = watch::channel(Arc::new(Vec::<Notice>::new()));
    let mut snapshots = feed.snapshots.clone();
    let translate = tokio::spawn(async move {
        loop {
            let snapshot = snapshots.borrow_and_update().clone();
            if let Some(index) = snapshot {
                let table = route_table(&index, &TranslateConfig::default());
                diag_tx.send_replace(Arc::new(table.diagnostics.into_iter().map(Notice::from).collect()));
            }
            if snapshots.changed().await.is_err() {
                return;
            }
        }
    });
    let (_leader, is_leader) = watch::channel(true);
    let metrics = KubeMetrics::unregistered().expect("metrics");
    let writer = tokio::spawn(run_event_writer(
        client.clone(),
        "causeway.dev/ingress-controller".to_owned(),
        "replica-a".to_owned(),
        is_leader,
        diag_rx,
        metrics.clone(),
    ));

    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let (event, _) = eventually("an Event on Ingress default/broken", DEADLINE, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| {
            e.regarding
                .as_ref()
                .is_some_and(|r| r.kind.as_deref() == Some("Ingress") && r.name.as_deref() == Some("broken"))
        })
    })
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(event.reporting_controller.as_deref(), Some("causeway.dev/ingress-controller"));
    let regarding = event.regarding.expect("regarding");
    assert_eq!(regarding.uid, created.metadata.uid, "the Event names the object's UID");
    let note = event.note.unwrap_or_default();
    assert!(note.contains("spec.rules[0]") && note.contains("missing"), "note: {note}");
    assert!(metrics.events.with_label_values(&["ok"]).get() >= 1);

    writer.abort();
    translate.abort();
}
