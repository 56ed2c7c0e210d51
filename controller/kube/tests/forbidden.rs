//! Missing RBAC is a clear start-up error naming the verb and resource, checked against a real API server with
//! RBAC authorization and a user that has only the rules the test grants.

mod support;

use causeway_kube::{Error, KubeMetrics, check_access, watch_cluster, watch_required_access};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, PostParams};
use serde_json::json;
use support::{TestCluster, client_from};
use tokio::sync::mpsc;

async fn start_error(client: kube::Client) -> Error {
    let (tx, _rx) = mpsc::channel(16);
    let metrics = KubeMetrics::unregistered().expect("metrics");
    match watch_cluster(client, tx, metrics).await {
        Err(e) => e,
        Ok(()) => panic!("watch_cluster started without the permissions it needs"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_rbac_names_verb_and_resource() {
    let cluster = TestCluster::start();
    let admin = cluster.client().await;
    let limited = cluster.limited_client().await;

    // No bindings at all: every list and watch is missing, and the message says who we are.
    let error = start_error(limited.clone()).await;
    let message = error.to_string();
    match &error {
        Error::Forbidden { missing, .. } => assert_eq!(missing.len(), 14, "{message}"),
        other => panic!("expected Forbidden, got {other}"),
    }
    assert!(message.contains("causeway-limited"), "{message}");
    assert!(message.contains("list ingresses (API group networking.k8s.io) in all namespaces"), "{message}");
    assert!(message.contains("watch nodes in all namespaces"), "{message}");
    assert!(message.contains("list ippools (API group causeway.dev) in all namespaces"), "{message}");

    // Everything but `watch endpointslices`: exactly that one is named.
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": { "name": "causeway-partial" },
        "rules": [
            { "apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "ingressclasses"], "verbs": ["list", "watch"] },
            { "apiGroups": [""], "resources": ["services", "secrets", "nodes"], "verbs": ["list", "watch"] },
            { "apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list"] },
            { "apiGroups": ["causeway.dev"], "resources": ["ippools"], "verbs": ["list", "watch"] }
        ]
    }))
    .expect("role");
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "causeway-partial" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "causeway-partial" },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "causeway:limited" }]
    }))
    .expect("binding");
    let pp = PostParams::default();
    Api::<ClusterRole>::all(admin.clone()).create(&pp, &role).await.expect("create ClusterRole");
    Api::<ClusterRoleBinding>::all(admin.clone()).create(&pp, &binding).await.expect("create ClusterRoleBinding");

    // RBAC changes apply within moments but not synchronously; poll until the review reflects the binding.
    let (error, _) = support::eventually("the binding to take effect", support::DEADLINE, || {
        let limited = limited.clone();
        async move {
            let error = start_error(limited).await;
            match &error {
                Error::Forbidden { missing, .. } if missing.len() == 1 => Some(error),
                _ => None,
            }
        }
    })
    .await;
    let message = error.to_string();
    assert!(message.contains("watch endpointslices (API group discovery.k8s.io) in all namespaces"), "{message}");
    assert!(!message.contains("list endpointslices"), "{message}");
    assert_eq!(error.metric_label(), "forbidden");

    // With the last rule granted, the source starts (and reaches InitDone) as that user.
    let patch = json!({ "rules": [
        { "apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "ingressclasses"], "verbs": ["list", "watch"] },
        { "apiGroups": [""], "resources": ["services", "secrets", "nodes"], "verbs": ["list", "watch"] },
        { "apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"] },
        { "apiGroups": ["causeway.dev"], "resources": ["ippools"], "verbs": ["list", "watch"] }
    ]});
    Api::<ClusterRole>::all(admin)
        .patch("causeway-partial", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
        .await
        .expect("patch ClusterRole");
    let limited = client_from(cluster.limited_kubeconfig()).await;
    support::eventually("the full role to take effect", support::DEADLINE, || async {
        check_access(&limited, &watch_required_access()).await.ok()
    })
    .await;
    let feed = support::Feed::start(limited);
    feed.wait_init_done().await;
}
