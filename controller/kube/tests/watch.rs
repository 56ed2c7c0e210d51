//! The cluster source against a real kube-apiserver: the initial list, then create, update and delete of every
//! watched kind reach the index within one second.

mod support;

use std::time::Duration;

use causeway_translate::{Kind, KubeObject, ObjectKey, ObjectRef, TranslateConfig, route_table};
use k8s_openapi::api::core::v1::{Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde::de::DeserializeOwned;
use serde_json::json;
use support::{DEADLINE, Feed, TestCluster, eventually};

/// The latency the issue promises between an API write and the index.
const WITHIN: Duration = Duration::from_secs(1);

fn obj<T: DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("valid test object")
}

fn service(name: &str) -> Service {
    obj(json!({
        "metadata": { "name": name, "namespace": "default" },
        "spec": { "ports": [{ "name": "http", "port": 80, "targetPort": 8080 }] }
    }))
}

fn ingress_class() -> IngressClass {
    obj(json!({
        "metadata": { "name": "causeway" },
        "spec": { "controller": "causeway.dev/ingress-controller" }
    }))
}

fn ingress(name: &str, host: &str, backend: &str) -> Ingress {
    obj(json!({
        "metadata": { "name": name, "namespace": "default" },
        "spec": {
            "ingressClassName": "causeway",
            "rules": [{ "host": host, "http": { "paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": { "service": { "name": backend, "port": { "number": 80 } } }
            }]}}]
        }
    }))
}

fn slice(name: &str, service: &str, ip: &str) -> EndpointSlice {
    obj(json!({
        "metadata": { "name": name, "namespace": "default", "labels": { "kubernetes.io/service-name": service } },
        "addressType": "IPv4",
        "endpoints": [{ "addresses": [ip], "conditions": { "ready": true } }],
        "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }]
    }))
}

fn secret(name: &str, type_: &str) -> Secret {
    // The API server does not parse the PEM; the translation reports it if it is broken.
    obj(json!({
        "metadata": { "name": name, "namespace": "default" },
        "type": type_,
        "data": { "tls.crt": "LS0tLS0=", "tls.key": "LS0tLS0=" }
    }))
}

fn key(kind: Kind, ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new(kind, ns, name)
}

/// Waits until `check` holds on the index and asserts it took at most [`WITHIN`].
async fn within_a_second(feed: &Feed, what: &str, check: impl Fn(&Feed) -> bool) {
    let ((), took) = eventually(what, DEADLINE, || async { check(feed).then_some(()) }).await;
    assert!(took <= WITHIN, "{what} took {took:?}, more than {WITHIN:?}");
}

fn endpoints_of_route(feed: &Feed, ingress: &str) -> Option<Vec<String>> {
    let table = route_table(&feed.index().expect("published"), &TranslateConfig::default());
    let want = ObjectRef::new("Ingress", "default", ingress);
    table
        .virtual_hosts
        .iter()
        .flat_map(|vh| vh.routes.iter())
        .find(|r| r.ingress == want)
        .map(|r| r.backend.endpoints.iter().map(|e| e.address.to_string()).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_list_then_changes_reach_the_index_within_a_second() {
    let cluster = TestCluster::start();
    let client = cluster.client().await;
    let pp = PostParams::default();
    let classes: Api<IngressClass> = Api::all(client.clone());
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), "default");
    let nodes: Api<Node> = Api::all(client.clone());

    // Objects that exist before the controller starts arrive in the initial state, before InitDone.
    classes.create(&pp, &ingress_class()).await.expect("create IngressClass");
    services.create(&pp, &service("web")).await.expect("create Service");
    let feed = Feed::start(client.clone());
    feed.wait_init_done().await;
    feed.with(|s| {
        let init = s.log.iter().position(Option::is_none).expect("InitDone logged");
        let before: Vec<_> = s.log[..init].iter().flatten().map(|(_, k)| k.clone()).collect();
        assert!(before.contains(&key(Kind::IngressClass, "", "causeway")), "initial state: {before:?}");
        assert!(before.contains(&key(Kind::Service, "default", "web")), "initial state: {before:?}");
    });
    // Slimmed before storing: no managed fields.
    match feed.get(&key(Kind::Service, "default", "web")) {
        Some(KubeObject::Service(svc)) => assert_eq!(svc.metadata.managed_fields, None),
        other => panic!("Service default/web not in the index: {other:?}"),
    }
    // IPPool too: this API server has no IPPool CRD, so the kind counts as listed and empty.
    for kind in ["Ingress", "IngressClass", "Service", "EndpointSlice", "Secret", "Node", "IPPool"] {
        assert_eq!(feed.metrics.watch_synced.with_label_values(&[kind]).get(), 1, "{kind} synced");
    }

    // Create: EndpointSlice, Ingress (and so a route with the slice's endpoint), Node.
    slices.create(&pp, &slice("web-1", "web", "10.244.1.5")).await.expect("create EndpointSlice");
    within_a_second(&feed, "EndpointSlice created", |f| f.get(&key(Kind::EndpointSlice, "default", "web-1")).is_some())
        .await;
    ingresses.create(&pp, &ingress("web", "web.example", "web")).await.expect("create Ingress");
    within_a_second(&feed, "route of the new Ingress", |f| {
        endpoints_of_route(f, "web") == Some(vec!["10.244.1.5:8080".to_owned()])
    })
    .await;
    nodes
        .create(&pp, &obj(json!({ "metadata": { "name": "node-a" }, "spec": { "podCIDR": "10.244.1.0/24" } })))
        .await
        .expect("create Node");
    within_a_second(&feed, "Node created", |f| f.get(&key(Kind::Node, "", "node-a")).is_some()).await;

    // Secrets: only kubernetes.io/tls ones. The Opaque one is created first; the TLS one arriving later proves
    // the Opaque one was filtered out rather than still on its way.
    secrets.create(&pp, &secret("opaque", "Opaque")).await.expect("create Opaque Secret");
    secrets.create(&pp, &secret("web-tls", "kubernetes.io/tls")).await.expect("create TLS Secret");
    within_a_second(&feed, "TLS Secret created", |f| f.get(&key(Kind::Secret, "default", "web-tls")).is_some()).await;
    assert!(feed.get(&key(Kind::Secret, "default", "opaque")).is_none(), "an Opaque Secret reached the index");

    // Update: new endpoints in the slice move the route.
    let patch = json!({ "endpoints": [{ "addresses": ["10.244.1.6"], "conditions": { "ready": true } }] });
    slices.patch("web-1", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch EndpointSlice");
    within_a_second(&feed, "route follows the updated slice", |f| {
        endpoints_of_route(f, "web") == Some(vec!["10.244.1.6:8080".to_owned()])
    })
    .await;
    // Update: the Ingress moves to another host.
    let patch = json!({ "spec": { "rules": [{ "host": "moved.example", "http": { "paths": [{
        "path": "/", "pathType": "Prefix",
        "backend": { "service": { "name": "web", "port": { "number": 80 } } } }] } }] } });
    ingresses.patch("web", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch Ingress");
    within_a_second(&feed, "Ingress update", |f| {
        let table = route_table(&f.index().expect("published"), &TranslateConfig::default());
        let hosts: Vec<String> = table.virtual_hosts.iter().map(|vh| vh.host.to_string()).collect();
        hosts == vec!["moved.example".to_owned()]
    })
    .await;

    // Delete: the slice (route keeps, without endpoints), then the Ingress (route gone), Service and Secret.
    slices.delete("web-1", &DeleteParams::default()).await.expect("delete EndpointSlice");
    within_a_second(&feed, "route without endpoints", |f| endpoints_of_route(f, "web") == Some(vec![])).await;
    ingresses.delete("web", &DeleteParams::default()).await.expect("delete Ingress");
    within_a_second(&feed, "route removed", |f| endpoints_of_route(f, "web").is_none()).await;
    services.delete("web", &DeleteParams::default()).await.expect("delete Service");
    secrets.delete("web-tls", &DeleteParams::default()).await.expect("delete Secret");
    nodes.delete("node-a", &DeleteParams::default()).await.expect("delete Node");
    within_a_second(&feed, "Service, Secret and Node deleted", |f| {
        f.get(&key(Kind::Service, "default", "web")).is_none()
            && f.get(&key(Kind::Secret, "default", "web-tls")).is_none()
            && f.get(&key(Kind::Node, "", "node-a")).is_none()
    })
    .await;
    assert_eq!(feed.with(|s| s.ended.clone()), None, "watch_cluster ended");
}
