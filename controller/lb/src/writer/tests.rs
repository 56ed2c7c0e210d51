use super::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::core::v1::LoadBalancerIngress;
use std::convert::Infallible;
use tokio::sync::mpsc;

/// One request the mock API server saw: method, path, content type, body.
type Seen = (String, String, String, serde_json::Value);

/// A kube client whose API server answers 200 (with a Service), 404 for Services named `gone`, and 500 for
/// Services named `broken`; every request is also sent on the returned channel.
fn mock_client() -> (kube::Client, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let tx = tx.clone();
        async move {
            let method = req.method().to_string();
            let path = req.uri().path().to_owned();
            let ctype = req
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body = req.into_body().collect().await.expect("request body").to_bytes();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            let _ = tx.send((method, path.clone(), ctype, json));
            let (code, body) = if path.contains("/services/gone/") {
                (404, r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#)
            } else if path.contains("/services/broken/") {
                (500, r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"InternalError","code":500}"#)
            } else {
                (200, r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"x","namespace":"default"}}"#)
            };
            let resp = http::Response::builder()
                .status(code)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .expect("response");
            Ok::<_, Infallible>(resp)
        }
    });
    (kube::Client::new(svc, "default"), rx)
}

fn status(ips: &[&str]) -> LoadBalancerStatus {
    let ingress: Vec<LoadBalancerIngress> = ips
        .iter()
        .map(|ip| LoadBalancerIngress { ip: Some((*ip).to_owned()), ip_mode: Some("VIP".into()), ..Default::default() })
        .collect();
    LoadBalancerStatus { ingress: (!ingress.is_empty()).then_some(ingress) }
}

fn key(name: &str) -> ServiceKey {
    ServiceKey::new("default", name)
}

#[test]
fn patches_set_or_remove_the_ingress_list() {
    assert_eq!(
        status_patch(&status(&["172.18.255.200"])),
        serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": "172.18.255.200", "ipMode": "VIP"}]}}})
    );
    assert_eq!(status_patch(&status(&[])), serde_json::json!({"status": {"loadBalancer": {"ingress": null}}}));
}

#[tokio::test]
async fn writes_merge_patches_to_the_status_subresource() {
    let (client, mut seen) = mock_client();
    let updates =
        vec![(key("web"), status(&["172.18.255.200"])), (key("gone"), status(&[])), (key("broken"), status(&[]))];
    let report = write_statuses(&client, &updates).await;
    assert_eq!(report.written, [key("web")]);
    assert_eq!(report.gone, [key("gone")]);
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].0, key("broken"));
    let (method, path, ctype, body) = seen.recv().await.expect("a request");
    assert_eq!(method, "PATCH");
    assert_eq!(path, "/api/v1/namespaces/default/services/web/status");
    assert_eq!(ctype, "application/merge-patch+json");
    assert_eq!(body, status_patch(&status(&["172.18.255.200"])));
}

async fn next_path(seen: &mut mpsc::UnboundedReceiver<Seen>) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(2), seen.recv()).await.ok().flatten().map(|s| s.1)
}

async fn nothing_more(seen: &mut mpsc::UnboundedReceiver<Seen>) -> bool {
    tokio::time::timeout(Duration::from_millis(100), seen.recv()).await.is_err()
}

#[tokio::test]
async fn only_the_leader_writes_and_pending_writes_are_not_repeated() {
    let (client, mut seen) = mock_client();
    let (leader_tx, leader_rx) = watch::channel(false);
    let web = (key("web"), status(&["172.18.255.200"]));
    let (updates_tx, updates_rx) = watch::channel(Arc::new(vec![web.clone()]));
    let task = tokio::spawn(run_status_writer(client, leader_rx, updates_rx, Duration::from_millis(50)));

    assert!(nothing_more(&mut seen).await, "a follower writes nothing");
    leader_tx.send_replace(true);
    assert_eq!(next_path(&mut seen).await.as_deref(), Some("/api/v1/namespaces/default/services/web/status"));
    // The same update again (the watch has not brought the status back yet): not written twice.
    updates_tx.send_replace(Arc::new(vec![web.clone()]));
    assert!(nothing_more(&mut seen).await, "a pending write is repeated");
    // The status arrived (the update disappears); later someone clobbers it and the update reappears.
    updates_tx.send_replace(Arc::new(Vec::new()));
    assert!(nothing_more(&mut seen).await);
    updates_tx.send_replace(Arc::new(vec![web.clone()]));
    assert_eq!(next_path(&mut seen).await.as_deref(), Some("/api/v1/namespaces/default/services/web/status"));
    // A failing write is retried.
    updates_tx.send_replace(Arc::new(vec![web, (key("broken"), status(&[]))]));
    for _ in 0..2 {
        assert_eq!(next_path(&mut seen).await.as_deref(), Some("/api/v1/namespaces/default/services/broken/status"));
    }
    // Losing the lead stops the writes; closing the channels ends the task.
    leader_tx.send_replace(false);
    while !nothing_more(&mut seen).await {}
    drop(leader_tx);
    drop(updates_tx);
    tokio::time::timeout(Duration::from_secs(2), task).await.expect("writer ends").expect("no panic");
}

fn counts(total: i64, used: i64) -> PoolCounts {
    PoolCounts { total, used }
}

#[test]
fn pool_counts_saturate_and_patch_only_the_counts() {
    let usage = [
        crate::PoolUsage { pool: "small".into(), total: 8, used: 2 },
        crate::PoolUsage { pool: "huge".into(), total: u128::MAX, used: 0 },
    ];
    let got = crate::pool_counts(&usage);
    assert_eq!(got["small"], counts(8, 2));
    assert_eq!(got["huge"], counts(i64::MAX, 0), "an int64 field saturates");
    assert_eq!(pool_status_patch(counts(8, 2)), serde_json::json!({"status": {"total": 8, "used": 2}}));
}

#[tokio::test]
async fn pool_counts_are_written_by_the_leader_once_per_change_and_again_after_a_new_term() {
    let (client, mut seen) = mock_client();
    let (leader_tx, leader_rx) = watch::channel(false);
    let pools = |used: i64| Arc::new(BTreeMap::from([("outside".to_owned(), counts(8, used))]));
    let (updates_tx, updates_rx) = watch::channel(pools(1));
    let task = tokio::spawn(run_pool_status_writer(client, leader_rx, updates_rx, Duration::from_millis(50)));
    assert!(nothing_more(&mut seen).await, "a follower writes nothing");
    leader_tx.send_replace(true);
    let (method, path, ctype, body) =
        tokio::time::timeout(Duration::from_secs(2), seen.recv()).await.expect("a write").expect("a request");
    assert_eq!((method.as_str(), path.as_str()), ("PATCH", "/apis/causeway.dev/v1alpha1/ippools/outside/status"));
    assert_eq!(ctype, "application/merge-patch+json");
    assert_eq!(body, serde_json::json!({"status": {"total": 8, "used": 1}}));
    updates_tx.send_replace(pools(1));
    assert!(nothing_more(&mut seen).await, "unchanged counts are not written again");
    updates_tx.send_replace(pools(2));
    assert_eq!(next_path(&mut seen).await.as_deref(), Some("/apis/causeway.dev/v1alpha1/ippools/outside/status"));
    // A new term writes the counts again: another leader may have written something else meanwhile.
    leader_tx.send_replace(false);
    assert!(nothing_more(&mut seen).await);
    leader_tx.send_replace(true);
    assert_eq!(next_path(&mut seen).await.as_deref(), Some("/apis/causeway.dev/v1alpha1/ippools/outside/status"));
    drop(leader_tx);
    drop(updates_tx);
    tokio::time::timeout(Duration::from_secs(2), task).await.expect("writer ends").expect("no panic");
}
