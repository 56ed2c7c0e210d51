//! TLS: SNI certificate choice from the live table, ALPN, versions, diagnostics for broken certificates.

mod common;

use bytes::Bytes;
use causeway_model::{PathMatch, Severity};
use common::*;
use http::{Request, StatusCode};
use http_body_util::Full;

#[tokio::test]
async fn sni_picks_exact_then_wildcard_then_default() {
    let b = echo_backend("b").await;
    let proxy = start_proxy(local_config()).await;
    let exact = mk_cert("exact", &["a.example.com"]);
    let wild = mk_cert("wild", &["*.example.com"]);
    let default = mk_cert("default", &["default.test"]);
    let mut t = table(vec![vhost("*", vec![mk_route(PathMatch::prefix("/"), "b", &[b.addr])])]);
    t.certificates = vec![exact.clone(), wild.clone()];
    t.default_certificate = Some(default.clone());
    assert!(proxy.handle.store(t).is_empty());

    let cases: [(Option<&str>, &str); 6] = [
        (Some("a.example.com"), &exact.cert_pem),
        (Some("A.Example.Com"), &exact.cert_pem),
        (Some("b.example.com"), &wild.cert_pem),
        (Some("x.b.example.com"), &default.cert_pem),
        (Some("example.com"), &default.cert_pem),
        (None, &default.cert_pem),
    ];
    for (sni, want) in cases {
        let s = tls_connect(proxy.https, sni, &[b"http/1.1"], false).await;
        assert_eq!(presented_leaf(&s), leaf_der(want), "SNI {sni:?}");
    }

    // A new table's certificate is served by the very next handshake, with no restart.
    let replaced = mk_cert("exact2", &["a.example.com"]);
    let mut t = table(vec![]);
    t.certificates = vec![replaced.clone()];
    proxy.handle.store(t);
    let s = tls_connect(proxy.https, Some("a.example.com"), &[], false).await;
    assert_eq!(presented_leaf(&s), leaf_der(&replaced.cert_pem));
    // Without a default certificate in the table the generated one is served.
    let s = tls_connect(proxy.https, Some("unknown.test"), &[], false).await;
    let generated = presented_leaf(&s);
    assert_ne!(generated, leaf_der(&default.cert_pem));
    assert_ne!(generated, leaf_der(&replaced.cert_pem));
}

#[tokio::test]
async fn broken_certificate_is_a_diagnostic_and_its_hosts_get_the_default() {
    let proxy = start_proxy(local_config()).await;
    let good = mk_cert("good", &["good.test"]);
    let other = mk_cert("other", &["other.test"]);
    let mut mismatched = mk_cert("mismatched", &["mismatch.test"]);
    mismatched.key_pem = other.key_pem.clone();
    let mut garbage = mk_cert("garbage", &["garbage.test"]);
    garbage.cert_pem = "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n".into();
    let mut no_key = mk_cert("nokey", &["nokey.test"]);
    no_key.key_pem.clear();
    let default = mk_cert("default", &["default.test"]);
    let mut t = table(vec![]);
    t.certificates = vec![good.clone(), mismatched, garbage, no_key];
    t.default_certificate = Some(default.clone());
    let diags = proxy.handle.store(t.clone());
    let mut named: Vec<_> = diags.iter().map(|d| (d.severity, d.object.name.as_str())).collect();
    named.sort();
    assert_eq!(
        named,
        [(Severity::Error, "garbage"), (Severity::Error, "mismatched"), (Severity::Error, "nokey")],
        "{diags:?}"
    );
    assert!(diags.iter().any(|d| d.message.contains("does not match")), "{diags:?}");
    assert_eq!(causeway_proxy::check(&t).unwrap(), diags, "check() reports the same");

    for host in ["mismatch.test", "garbage.test", "nokey.test"] {
        let s = tls_connect(proxy.https, Some(host), &[], false).await;
        assert_eq!(presented_leaf(&s), leaf_der(&default.cert_pem), "{host}");
    }
    let s = tls_connect(proxy.https, Some("good.test"), &[], false).await;
    assert_eq!(presented_leaf(&s), leaf_der(&good.cert_pem));
    let m = proxy.metrics_text();
    assert!(m.contains(r#"causeway_route_table_diagnostics{severity="error"} 3"#), "{m}");
    assert!(m.contains(r#"causeway_tls_certificate_expiry_timestamp_seconds{host="good.test"}"#), "{m}");
}

#[tokio::test]
async fn h2_is_negotiated_by_alpn_and_http1_still_works() {
    let b = echo_backend("b").await;
    let proxy = start_proxy(local_config()).await;
    let mut t = table(vec![vhost("a.example.com", vec![mk_route(PathMatch::prefix("/"), "b", &[b.addr])])]);
    t.certificates = vec![mk_cert("a", &["a.example.com"])];
    proxy.handle.store(t);

    let s = tls_connect(proxy.https, Some("a.example.com"), &[b"h2", b"http/1.1"], false).await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("https://a.example.com/x?y=1").body(Full::new(Bytes::new())).unwrap();
    let a = collect(sender.send_request(req).await.unwrap()).await.unwrap();
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["path"], "/x?y=1");
    assert_eq!(a.json()["headers"]["x-forwarded-proto"], "https");
    assert_eq!(a.json()["headers"]["x-forwarded-host"], "a.example.com");

    let s = tls_connect(proxy.https, Some("a.example.com"), &[b"http/1.1"], true).await;
    assert_eq!(s.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s)).await.unwrap();
    tokio::spawn(conn);
    let a = collect(sender.send_request(get_req("a.example.com", "/")).await.unwrap()).await.unwrap();
    assert_eq!(a.status, StatusCode::OK);

    let s = tls_connect(proxy.https, Some("a.example.com"), &[], false).await;
    assert_eq!(s.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
}
