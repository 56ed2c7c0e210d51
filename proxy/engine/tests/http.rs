//! The L7 proxy against real echo backends on 127.0.0.1:0.

mod common;

use bytes::Bytes;
use causeway_model::PathMatch;
use common::*;
use futures::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::{Full, StreamBody};
use std::time::Duration;

#[tokio::test]
async fn routes_by_host_wildcard_and_path_precedence() {
    let (root, api, exact, wild, any) = (
        echo_backend("root").await,
        echo_backend("api").await,
        echo_backend("exact").await,
        echo_backend("wild").await,
        echo_backend("any").await,
    );
    let proxy = start_proxy(local_config()).await;
    let diags = proxy.handle.store(table(vec![
        vhost(
            "a.example.com",
            vec![
                mk_route(PathMatch::prefix("/"), "root", &[root.addr]),
                mk_route(PathMatch::prefix("/api"), "api", &[api.addr]),
                mk_route(PathMatch::Exact("/api/exact".into()), "exact", &[exact.addr]),
            ],
        ),
        vhost("*.example.com", vec![mk_route(PathMatch::prefix("/"), "wild", &[wild.addr])]),
        vhost("*", vec![mk_route(PathMatch::prefix("/"), "any", &[any.addr])]),
    ]));
    assert!(diags.is_empty(), "{diags:?}");
    let cases = [
        ("a.example.com", "/", "root"),
        ("A.EXAMPLE.com:8080", "/api/v1?x=1", "api"),
        ("a.example.com", "/apiv1", "root"),
        ("a.example.com", "/api/exact", "exact"),
        ("a.example.com", "/api/exact/", "api"),
        ("b.example.com", "/api", "wild"),
        ("x.b.example.com", "/", "any"),
        ("other.test", "/", "any"),
    ];
    let mut c = H1::connect(proxy.http).await;
    for (host, path, want) in cases {
        let a = c.get(host, path).await;
        assert_eq!(a.status, StatusCode::OK, "{host}{path}");
        assert_eq!(a.backend(), want, "{host}{path}");
    }
    // The query string reaches the endpoint untouched.
    assert_eq!(c.get("a.example.com", "/api/v1?x=1").await.json()["path"], "/api/v1?x=1");
}

#[tokio::test]
async fn answers_404_without_route_and_503_without_endpoints() {
    let b = echo_backend("b").await;
    let proxy = start_proxy(local_config()).await;
    // Before any table: 404.
    assert_eq!(get(proxy.http, "a.example.com", "/").await.status, StatusCode::NOT_FOUND);
    proxy.handle.store(table(vec![vhost(
        "a.example.com",
        vec![mk_route(PathMatch::prefix("/app"), "b", &[b.addr]), mk_route(PathMatch::prefix("/empty"), "none", &[])],
    )]));
    assert_eq!(get(proxy.http, "a.example.com", "/app").await.status, StatusCode::OK);
    assert_eq!(get(proxy.http, "a.example.com", "/other").await.status, StatusCode::NOT_FOUND);
    assert_eq!(get(proxy.http, "b.example.com", "/app").await.status, StatusCode::NOT_FOUND);
    assert_eq!(get(proxy.http, "a.example.com", "/empty").await.status, StatusCode::SERVICE_UNAVAILABLE);
    let m = proxy.metrics_text();
    assert!(
        m.contains(
            r#"causeway_http_requests_total{ingress="default/ing-none",service="default/none",status_class="5xx"} 1"#
        ),
        "{m}"
    );
    assert!(m.contains(r#"causeway_http_requests_total{ingress="",service="",status_class="4xx"} 3"#), "{m}");
}

#[tokio::test]
async fn failed_connect_tries_another_endpoint_then_502() {
    let live = echo_backend("live").await;
    let dead = dead_addr().await;
    let proxy = start_proxy(local_config()).await;
    proxy.handle.store(table(vec![
        vhost("mixed.test", vec![mk_route(PathMatch::prefix("/"), "mixed", &[dead, live.addr])]),
        vhost("dead.test", vec![mk_route(PathMatch::prefix("/"), "dead", &[dead])]),
    ]));
    for _ in 0..10 {
        let a = get(proxy.http, "mixed.test", "/").await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.backend(), "live");
    }
    assert_eq!(get(proxy.http, "dead.test", "/").await.status, StatusCode::BAD_GATEWAY);
    let m = proxy.metrics_text();
    assert!(m.contains(r#"causeway_upstream_connect_errors_total{service="default/mixed"} 5"#), "{m}");
}

/// A raw HTTP/1.1 server whose connections answer their first request and close on the second without a
/// response: the keep-alive race (the endpoint closes an idle connection just as the proxy reuses it), made
/// deterministic. Returns its address and the number of connections it accepted.
async fn one_shot_backend() -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { continue };
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                let mut answered = false;
                loop {
                    let Ok(n) = s.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        if answered {
                            return; // Second request: close without answering.
                        }
                        answered = true;
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn idempotent_requests_are_replayed_once_after_a_keep_alive_race() {
    let (addr, accepted) = one_shot_backend().await;
    let proxy = start_proxy(local_config()).await;
    proxy.handle.store(table(vec![vhost("*", vec![mk_route(PathMatch::prefix("/"), "race", &[addr])])]));
    let mut c = H1::connect(proxy.http).await;
    for i in 0..5 {
        let a = c.get("a.test", "/").await;
        assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "ok"), "GET {i}");
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 5, "one new connection per replay");
    // A POST is never sent twice: the race surfaces as 502.
    let post = Request::post("/").header("host", "a.test").body(Full::new(Bytes::new())).unwrap();
    assert_eq!(c.send(post).await.unwrap().status, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn response_header_timeout_gives_504() {
    let slow = echo_backend("slow").await;
    let mut config = local_config();
    config.timeouts.response_header = Duration::from_millis(1000);
    let proxy = start_proxy(config).await;
    proxy.handle.store(table(vec![vhost("slow.test", vec![mk_route(PathMatch::prefix("/"), "slow", &[slow.addr])])]));
    assert_eq!(get(proxy.http, "slow.test", "/sleep/5000").await.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(get(proxy.http, "slow.test", "/sleep/10").await.status, StatusCode::OK);
}

#[tokio::test]
async fn connect_timeout_gives_504() {
    // A listener that never accepts, with its accept queue filled: further SYNs go unanswered.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
    socket.listen(0).unwrap();
    let black_hole = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(black_hole)).await {
            Ok(Ok(s)) => fillers.push(s),
            _ => break,
        }
    }
    let mut config = local_config();
    config.timeouts.connect = Duration::from_millis(200);
    let proxy = start_proxy(config).await;
    proxy.handle.store(table(vec![vhost("*", vec![mk_route(PathMatch::prefix("/"), "hole", &[black_hole])])]));
    let started = std::time::Instant::now();
    assert_eq!(get(proxy.http, "a.test", "/").await.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(socket);
}

#[tokio::test]
async fn oversized_headers_get_431_and_malformed_requests_get_400() {
    let b = echo_backend("b").await;
    let mut config = local_config();
    config.limits.max_request_header_bytes = 8192;
    let proxy = start_proxy(config).await;
    proxy.handle.store(table(vec![vhost("*", vec![mk_route(PathMatch::prefix("/"), "b", &[b.addr])])]));
    let big = format!("GET / HTTP/1.1\r\nHost: a.test\r\nX-Big: {}\r\n\r\n", "x".repeat(20_000));
    let out = raw(proxy.http, big.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let out = raw(proxy.http, format!("GET / HTTP/1.1\r\nHost: a.test\r\n{many}\r\n").as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    for bad in [&b"GARBAGE\r\n\r\n"[..], b"GET / HTTP/1.1\r\nHost a.test\r\n\r\n", b"GET /\x01 HTTP/1.1\r\n\r\n"] {
        let out = raw(proxy.http, bad).await;
        assert!(out.starts_with("HTTP/1.1 400"), "{:?} -> {out}", String::from_utf8_lossy(bad));
    }
    // A reverse proxy refuses CONNECT; absolute-form requests are served with an origin-form path upstream.
    let out = raw(proxy.http, b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 405"), "{out}");
    let out = raw(proxy.http, b"GET http://a.test/abs?q=1 HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 200") && out.contains(r#""path":"/abs?q=1""#), "{out}");
    // Still serving.
    assert_eq!(get(proxy.http, "a.test", "/").await.status, StatusCode::OK);
}

#[tokio::test]
async fn request_body_over_the_limit_gets_413() {
    let b = echo_backend("b").await;
    let mut config = local_config();
    config.limits.max_request_body_bytes = Some(1000);
    let proxy = start_proxy(config).await;
    proxy.handle.store(table(vec![vhost("*", vec![mk_route(PathMatch::prefix("/"), "b", &[b.addr])])]));
    let mut c = H1::connect(proxy.http).await;
    let small = Request::post("/body").header("host", "a.test").body(Full::new(Bytes::from(vec![b'a'; 1000]))).unwrap();
    let a = c.send(small).await.unwrap();
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "1000"));
    let big = Request::post("/body").header("host", "a.test").body(Full::new(Bytes::from(vec![b'a'; 1001]))).unwrap();
    assert_eq!(c.send(big).await.unwrap().status, StatusCode::PAYLOAD_TOO_LARGE);

    // A chunked body with no Content-Length is cut off once it grows past the limit.
    let chunks: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> =
        (0..10).map(|_| Ok(http_body::Frame::data(Bytes::from(vec![b'b'; 300])))).collect();
    let stream_body = StreamBody::new(futures::stream::iter(chunks));
    let stream = tokio::net::TcpStream::connect(proxy.http).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::post("/body").header("host", "a.test").body(stream_body).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn forwarded_headers_are_set_and_hop_by_hop_headers_removed() {
    let b = echo_backend("b").await;
    let proxy = start_proxy(local_config()).await;
    proxy.handle.store(table(vec![vhost("*", vec![mk_route(PathMatch::prefix("/"), "b", &[b.addr])])]));
    let mut c = H1::connect(proxy.http).await;
    let a = c.get("Shop.Test:8080", "/").await;
    let h = &a.json()["headers"];
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "Shop.Test:8080");
    assert_eq!(h["host"], "Shop.Test:8080");

    let req = Request::get("/")
        .header("host", "a.test")
        .header("x-forwarded-for", "203.0.113.7")
        .header("connection", "keep-alive, x-private")
        .header("x-private", "secret")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("proxy-authorization", "Basic Zm9v")
        .header("x-kept", "yes")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let a = c.send(req).await.unwrap();
    let h = &a.json()["headers"];
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(h["x-kept"], "yes");
    for gone in ["x-private", "keep-alive", "te", "proxy-authorization"] {
        assert!(h.get(gone).is_none(), "{gone} reached the endpoint: {h}");
    }
    // hyper's client adds its own `connection` only when needed; ours never passes through.
    assert_ne!(h.get("connection").and_then(|v| v.as_str()), Some("keep-alive, x-private"));
}

#[tokio::test]
async fn keep_alive_connections_to_endpoints_are_reused() {
    let b = echo_backend("b").await;
    let proxy = start_proxy(local_config()).await;
    proxy.handle.store(table(vec![vhost("*", vec![mk_route(PathMatch::prefix("/"), "b", &[b.addr])])]));
    for _ in 0..30 {
        // A new client connection each time: reuse must come from the upstream pool.
        assert_eq!(get(proxy.http, "a.test", "/").await.status, StatusCode::OK);
    }
    let mut c = H1::connect(proxy.http).await;
    for _ in 0..30 {
        assert_eq!(c.get("a.test", "/").await.status, StatusCode::OK);
    }
    assert_eq!(b.requests.load(std::sync::atomic::Ordering::SeqCst), 60);
    let conns = b.connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!(conns <= 2, "{conns} upstream connections for 60 sequential requests");
}

#[tokio::test]
async fn round_robin_spreads_requests_over_endpoints() {
    let (b1, b2, b3) = (echo_backend("b1").await, echo_backend("b2").await, echo_backend("b3").await);
    let proxy = start_proxy(local_config()).await;
    proxy
        .handle
        .store(table(vec![vhost("*", vec![mk_route(PathMatch::prefix("/"), "b", &[b1.addr, b2.addr, b3.addr])])]));
    let mut c = H1::connect(proxy.http).await;
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..30 {
        *seen.entry(c.get("a.test", "/").await.backend()).or_insert(0) += 1;
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        [("b1".to_owned(), 10), ("b2".to_owned(), 10), ("b3".to_owned(), 10)]
    );
}

#[tokio::test]
async fn ssl_redirect_answers_308_on_plain_http_only() {
    let b = echo_backend("b").await;
    let mut config = local_config();
    config.redirect_https_port = Some(8443);
    let proxy = start_proxy(config).await;
    let mut route = mk_route(PathMatch::prefix("/"), "b", &[b.addr]);
    route.ssl_redirect = true;
    let mut t = table(vec![vhost("secure.test", vec![route])]);
    t.certificates.push(mk_cert("secure", &["secure.test"]));
    proxy.handle.store(t);
    let a = get(proxy.http, "Secure.Test:80", "/p/q?x=1").await;
    assert_eq!(a.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(a.headers["location"], "https://secure.test:8443/p/q?x=1");
    // Over TLS the same route is served.
    let tls = tls_connect(proxy.https, Some("secure.test"), &[b"http/1.1"], false).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let resp = sender.send_request(get_req("secure.test", "/p")).await.unwrap();
    let a = collect(resp).await.unwrap();
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["headers"]["x-forwarded-proto"], "https");
}

#[tokio::test]
async fn websocket_upgrade_is_passed_through() {
    let b = echo_backend("ws").await;
    let proxy = start_proxy(local_config()).await;
    proxy.handle.store(table(vec![vhost("ws.test", vec![mk_route(PathMatch::prefix("/"), "ws", &[b.addr])])]));
    let stream = tokio::net::TcpStream::connect(proxy.http).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async("ws://ws.test/ws", stream).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    for i in 0..5 {
        ws.send(tokio_tungstenite::tungstenite::Message::text(format!("hello {i}"))).await.unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), format!("hello {i}"));
    }
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn h2c_with_prior_knowledge() {
    let b = echo_backend("b").await;
    let proxy = start_proxy(local_config()).await;
    proxy.handle.store(table(vec![vhost("h2.test", vec![mk_route(PathMatch::prefix("/"), "b", &[b.addr])])]));
    let stream = tokio::net::TcpStream::connect(proxy.http).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut pending = Vec::new();
    for i in 0..10 {
        let req = Request::get(format!("http://h2.test/stream/{i}")).body(Full::new(Bytes::new())).unwrap();
        pending.push(sender.send_request(req));
    }
    for (i, f) in pending.into_iter().enumerate() {
        let a = collect(f.await.unwrap()).await.unwrap();
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.json()["path"], format!("/stream/{i}"));
        assert_eq!(a.json()["headers"]["host"], "h2.test");
    }
}

#[tokio::test]
async fn graceful_shutdown_drains_in_flight_requests() {
    let b = echo_backend("b").await;
    let mut config = local_config();
    config.timeouts.drain = Duration::from_secs(10);
    let mut proxy = start_proxy(config).await;
    proxy.handle.store(table(vec![vhost("*", vec![mk_route(PathMatch::prefix("/"), "b", &[b.addr])])]));
    let mut c = H1::connect(proxy.http).await;
    let in_flight = tokio::spawn(async move { c.get("a.test", "/sleep/500").await });
    // Wait until the request has reached the backend, then ask the proxy to stop.
    assert!(
        eventually(Duration::from_secs(5), || async { b.requests.load(std::sync::atomic::Ordering::SeqCst) == 1 })
            .await
    );
    let started = std::time::Instant::now();
    let serve = proxy.begin_shutdown();
    let a = in_flight.await.unwrap();
    assert_eq!(a.status, StatusCode::OK);
    tokio::time::timeout(Duration::from_secs(5), serve).await.unwrap().unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(tokio::net::TcpStream::connect(proxy.http).await.is_err(), "listener closed after shutdown");
}

#[tokio::test]
async fn drain_is_bounded() {
    let b = echo_backend("b").await;
    let mut config = local_config();
    config.timeouts.drain = Duration::from_millis(300);
    let mut proxy = start_proxy(config).await;
    proxy.handle.store(table(vec![vhost("*", vec![mk_route(PathMatch::prefix("/"), "b", &[b.addr])])]));
    let mut c = H1::connect(proxy.http).await;
    let in_flight = tokio::spawn(async move { c.send(get_req("a.test", "/sleep/20000")).await });
    assert!(
        eventually(Duration::from_secs(5), || async { b.requests.load(std::sync::atomic::Ordering::SeqCst) == 1 })
            .await
    );
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), proxy.begin_shutdown()).await.unwrap().unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(3), "serve returned after {:?}", started.elapsed());
    assert!(in_flight.await.unwrap().is_err(), "the cut request fails instead of hanging");
}

#[tokio::test]
async fn garbage_on_both_listeners_does_not_break_the_proxy() {
    let b = echo_backend("b").await;
    let proxy = start_proxy(local_config()).await;
    proxy.handle.store(table(vec![vhost("*", vec![mk_route(PathMatch::prefix("/"), "b", &[b.addr])])]));
    let mut seed: u32 = 0x1234_5678;
    for len in [1usize, 7, 64, 512, 4096] {
        let junk: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as u8
            })
            .collect();
        let _ = raw(proxy.http, &junk).await;
        let _ = raw(proxy.https, &junk).await;
        // An HTTP/2 preface followed by junk.
        let mut h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        h2.extend_from_slice(&junk);
        let _ = raw(proxy.http, &h2).await;
    }
    assert_eq!(get(proxy.http, "a.test", "/").await.status, StatusCode::OK);
    assert!(proxy.metrics_text().contains("causeway_tls_handshake_errors_total 5"));
}

#[tokio::test]
async fn serve_on_threads_routes_upgrades_and_drains() {
    let (b1, b2) = (echo_backend("b1").await, echo_backend("b2").await);
    let mut config = local_config();
    config.timeouts.drain = Duration::from_secs(10);
    let mut proxy = start_proxy_on(config, Some(2)).await;
    proxy.handle.store(table(vec![
        vhost("one.test", vec![mk_route(PathMatch::prefix("/"), "b1", &[b1.addr])]),
        vhost("two.test", vec![mk_route(PathMatch::prefix("/"), "b2", &[b2.addr])]),
    ]));
    let mut clients = Vec::new();
    for i in 0..8 {
        let http = proxy.http;
        clients.push(tokio::spawn(async move {
            let mut c = H1::connect(http).await;
            let host = if i % 2 == 0 { "one.test" } else { "two.test" };
            for _ in 0..20 {
                let a = c.get(host, "/").await;
                assert_eq!(a.status, StatusCode::OK);
                assert_eq!(a.backend(), if i % 2 == 0 { "b1" } else { "b2" });
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let stream = tokio::net::TcpStream::connect(proxy.http).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async("ws://one.test/ws", stream).await.unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text("over a worker thread")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().into_text().unwrap().as_str(), "over a worker thread");
    ws.close(None).await.unwrap();
    // An open tunnel would (rightly) hold the drain until its bound.
    drop(ws);

    let mut c = H1::connect(proxy.http).await;
    let in_flight = tokio::spawn(async move { c.get("one.test", "/sleep/500").await });
    let before = b1.requests.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(5), || async { b1.requests.load(std::sync::atomic::Ordering::SeqCst) > before })
            .await
    );
    let serve = proxy.begin_shutdown();
    assert_eq!(in_flight.await.unwrap().status, StatusCode::OK);
    tokio::time::timeout(Duration::from_secs(5), serve).await.unwrap().unwrap().unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async { tokio::net::TcpStream::connect(proxy.http).await.is_err() })
            .await,
        "listeners closed after shutdown"
    );
}
