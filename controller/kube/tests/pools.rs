//! IPPool through a real API server: without the CRD the kind is empty and everything else keeps working; once
//! `manifests/crd-ippool.yaml` is applied, pools reach the index; a pool the decoder cannot read (possible only
//! with a CRD that lacks the schema, such as another version of it) is a diagnostic and an Event naming the pool
//! and the field, keeps its last good version, and never stops the watch.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use causeway_kube::{KubeMetrics, Notice, ip_pool_resource, run_event_writer};
use causeway_translate::{Kind, KubeObject, ObjectKey};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{DEADLINE, Feed, TestCluster, eventually};
use tokio::sync::watch;

/// The watcher retries a missing CRD with its backoff (at most 30 s apart); allow for one full period.
const CRD_PICKUP: Duration = Duration::from_secs(45);

fn pool_key(name: &str) -> ObjectKey {
    ObjectKey::new(Kind::IpPool, "", name)
}

fn pool(name: &str, spec: serde_json::Value) -> DynamicObject {
    let mut obj = DynamicObject::new(name, &ip_pool_resource());
    obj.data = json!({ "spec": spec });
    obj
}

fn blocks_of(feed: &Feed, name: &str) -> Option<Vec<String>> {
    match feed.get(&pool_key(name))? {
        KubeObject::IpPool(p) => Some(p.spec.blocks.iter().filter_map(|b| b.cidr.clone()).collect()),
        _ => None,
    }
}

async fn wait_established(client: &kube::Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    eventually("the IPPool CRD to be established", DEADLINE, || async {
        let crd = crds.get_opt("ippools.causeway.dev").await.ok()??;
        let conditions = crd.status?.conditions?;
        conditions.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_crd_pools_are_empty_and_are_watched_once_it_is_applied() {
    let cluster = TestCluster::start();
    let client = cluster.client().await;
    let feed = Feed::start(client.clone());
    feed.wait_init_done().await;
    assert_eq!(feed.metrics.watch_synced.with_label_values(&["IPPool"]).get(), 1, "IPPool counts as listed");
    assert_eq!(feed.index().map(|i| i.ip_pools().count()), Some(0));
    // The rest keeps working.
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({
        "metadata": { "name": "web" }, "spec": { "ports": [{ "port": 80 }] }
    }))
    .expect("service");
    services.create(&PostParams::default(), &svc).await.expect("create Service");
    eventually("the Service in the index", DEADLINE, || async {
        feed.get(&ObjectKey::new(Kind::Service, "default", "web")).map(|_| ())
    })
    .await;

    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/crd-ippool.yaml");
    cluster.kubectl(&["apply", "-f", manifest.to_str().expect("UTF-8 path")], None);
    wait_established(&client).await;
    let pools: Api<DynamicObject> = Api::all_with(client.clone(), &ip_pool_resource());
    pools
        .create(&PostParams::default(), &pool("lab", json!({ "blocks": [{ "cidr": "10.255.0.0/30" }] })))
        .await
        .expect("create IPPool");
    let (_, took) = eventually("the IPPool in the index", CRD_PICKUP, || async {
        (blocks_of(&feed, "lab")? == ["10.255.0.0/30"]).then_some(())
    })
    .await;
    println!("IPPool picked up {took:?} after its creation (CRD applied after the controller started)");
    assert_eq!(feed.with(|s| s.ended.clone()), None, "watch_cluster ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_that_does_not_decode_is_an_event_and_keeps_its_last_good_version() {
    let cluster = TestCluster::start();
    let client = cluster.client().await;
    // The IPPool CRD without its schema (as another version of it might be): the API server stores anything.
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": { "name": "ippools.causeway.dev" },
        "spec": {
            "group": "causeway.dev", "scope": "Cluster",
            "names": { "kind": "IPPool", "listKind": "IPPoolList", "plural": "ippools", "singular": "ippool" },
            "versions": [{ "name": "v1alpha1", "served": true, "storage": true,
                "schema": { "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } } }]
        }
    }))
    .expect("crd");
    Api::<CustomResourceDefinition>::all(client.clone()).create(&PostParams::default(), &crd).await.expect("CRD");
    wait_established(&client).await;
    let pools: Api<DynamicObject> = Api::all_with(client.clone(), &ip_pool_resource());
    let pp = PostParams::default();
    let good = pools.create(&pp, &pool("good", json!({ "blocks": [{ "cidr": "10.255.0.0/30" }] }))).await;
    let good = good.expect("create good pool");
    pools.create(&pp, &pool("typo", json!({ "block": [{ "cidr": "10.255.1.0/30" }] }))).await.expect("typo pool");

    let feed = Feed::start(client.clone());
    feed.wait_init_done().await;
    let diagnostics = |feed: &Feed| -> Vec<String> {
        feed.index().map(|i| i.source_diagnostics().map(ToString::to_string).collect()).unwrap_or_default()
    };
    assert_eq!(blocks_of(&feed, "good"), Some(vec!["10.255.0.0/30".to_owned()]));
    assert!(feed.get(&pool_key("typo")).is_none(), "a pool that never decoded is left out");
    let got = diagnostics(&feed);
    assert!(
        got.len() == 1 && got[0].starts_with("IPPool typo: spec.block: unknown field `block`"),
        "diagnostics: {got:?}"
    );

    // good turns bad: its last good version stays in the index, and a diagnostic names the field.
    let patch = json!({ "spec": { "blocks": "10.255.0.0/30" } });
    pools.patch("good", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch good");
    eventually("a diagnostic on IPPool good", DEADLINE, || async {
        diagnostics(&feed).iter().any(|d| d.starts_with("IPPool good: spec.blocks: invalid type")).then_some(())
    })
    .await;
    match feed.get(&pool_key("good")) {
        Some(KubeObject::IpPool(p)) => {
            assert_eq!(p.metadata.resource_version, good.metadata.resource_version, "the last good version")
        }
        other => panic!("IPPool good left the index: {other:?}"),
    }

    // The leader publishes the diagnostics as Events on the pools (cluster-scoped: namespace default).
    let (notices_tx, notices_rx) = watch::channel(Arc::new(Vec::<Notice>::new()));
    let notices: Vec<Notice> =
        feed.index().map(|i| i.source_diagnostics().cloned().map(Notice::from).collect()).unwrap_or_default();
    notices_tx.send_replace(Arc::new(notices));
    let (_leader, is_leader) = watch::channel(true);
    let metrics = KubeMetrics::unregistered().expect("metrics");
    let writer = tokio::spawn(run_event_writer(
        client.clone(),
        "causeway.dev/ingress-controller".to_owned(),
        "replica-a".to_owned(),
        is_leader,
        notices_rx,
        metrics,
    ));
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    for (name, field) in [("typo", "spec.block: unknown field `block`"), ("good", "spec.blocks: invalid type")] {
        let (event, _) = eventually(&format!("an Event on IPPool {name}"), DEADLINE, || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items.into_iter().find(|e| {
                e.regarding
                    .as_ref()
                    .is_some_and(|r| r.kind.as_deref() == Some("IPPool") && r.name.as_deref() == Some(name))
            })
        })
        .await;
        assert_eq!(event.type_.as_deref(), Some("Warning"));
        assert!(event.regarding.and_then(|r| r.uid).is_some(), "the Event names the pool's UID");
        let note = event.note.unwrap_or_default();
        assert!(note.starts_with(field), "note: {note}");
    }
    writer.abort();

    // Fixed: the new version replaces the old one and the diagnostic goes; the watch never stopped.
    let patch = json!({ "spec": { "blocks": [{ "cidr": "10.255.2.0/30" }] } });
    pools.patch("good", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("fix good");
    eventually("the fixed pool", DEADLINE, || async {
        let fixed = blocks_of(&feed, "good")? == ["10.255.2.0/30"];
        (fixed && diagnostics(&feed).len() == 1).then_some(())
    })
    .await;
    assert_eq!(feed.with(|s| s.ended.clone()), None, "watch_cluster ended");
    assert_eq!(feed.metrics.watch_errors.with_label_values(&["IPPool"]).get(), 0, "no watch errors");
}
