//! The admin server: /healthz, /readyz, /metrics, /debug/routes.

mod common;

use causeway_model::PathMatch;
use causeway_proxy::{AdminServer, Readiness};
use common::*;
use http::StatusCode;

#[tokio::test]
async fn admin_endpoints() {
    let b = echo_backend("b").await;
    let proxy = start_proxy(local_config()).await;
    let readiness = Readiness::new();
    let admin = AdminServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        proxy.registry.clone(),
        readiness.clone(),
        proxy.handle.table_view(),
    )
    .await
    .unwrap();
    let addr = admin.local_addr();
    tokio::spawn(admin.serve(std::future::pending()));

    assert_eq!(get(addr, "admin", "/healthz").await.status, StatusCode::OK);
    assert_eq!(get(addr, "admin", "/readyz").await.status, StatusCode::SERVICE_UNAVAILABLE);
    readiness.set_ready(true);
    assert_eq!(get(addr, "admin", "/readyz").await.status, StatusCode::OK);
    assert_eq!(get(addr, "admin", "/nope").await.status, StatusCode::NOT_FOUND);

    let mut t = table(vec![vhost("a.example.com", vec![mk_route(PathMatch::prefix("/api"), "b", &[b.addr])])]);
    let cert = mk_cert("a", &["a.example.com"]);
    t.certificates = vec![cert.clone()];
    let mut broken = mk_cert("broken", &["broken.test"]);
    broken.cert_pem = "junk".into();
    t.certificates.push(broken);
    proxy.handle.store(t);
    assert_eq!(get(proxy.http, "a.example.com", "/api").await.status, StatusCode::OK);

    let routes = get(addr, "admin", "/debug/routes").await;
    assert_eq!(routes.status, StatusCode::OK);
    assert_eq!(routes.headers["content-type"], "application/json");
    let json = routes.json();
    assert_eq!(json["virtual_hosts"][0]["host"], "a.example.com");
    assert_eq!(json["virtual_hosts"][0]["routes"][0]["backend"]["endpoints"][0]["address"], b.addr.to_string());
    assert!(json["diagnostics"][0]["object"]["name"] == "broken", "{json}");
    assert!(!routes.body.contains("PRIVATE KEY"), "keys never leave the process");
    assert!(routes.body.contains("BEGIN CERTIFICATE"));

    let metrics = get(addr, "admin", "/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    for name in [
        r#"causeway_http_requests_total{ingress="default/ing-b",service="default/b",status_class="2xx"} 1"#,
        r#"causeway_http_request_duration_seconds_bucket{ingress="default/ing-b",service="default/b",le="+Inf"} 1"#,
        "causeway_route_table_swaps_total 1",
        "causeway_route_table_last_swap_timestamp_seconds",
        r#"causeway_route_table_diagnostics{severity="error"} 1"#,
        r#"causeway_route_table_entries{kind="virtual_hosts"} 1"#,
        r#"causeway_route_table_entries{kind="routes"} 1"#,
        r#"causeway_tls_certificate_expiry_timestamp_seconds{host="a.example.com"}"#,
        r#"causeway_connections_total{listener="http"}"#,
    ] {
        assert!(metrics.body.contains(name), "missing {name} in\n{}", metrics.body);
    }

    // A deleted Ingress stops being exported.
    proxy.handle.store(table(vec![]));
    let metrics = get(addr, "admin", "/metrics").await;
    assert!(!metrics.body.contains(r#"ingress="default/ing-b""#), "{}", metrics.body);
}
