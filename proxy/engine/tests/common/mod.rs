//! Test support: echo backends, a proxy on ephemeral ports, small clients. Everything on 127.0.0.1:0.
#![allow(dead_code)]

use bytes::Bytes;
use causeway_model::{
    Backend, Endpoint, HostPattern, ObjectRef, PathMatch, Route, RouteTable, ServiceRef, TlsCertificate, VirtualHost,
};
use causeway_proxy::{Proxy, ProxyConfig, ProxyHandle};
use futures::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// An HTTP/1.1 echo server. Paths: `/sleep/MS` answers after MS milliseconds; `/ws` accepts a WebSocket and
/// echoes messages; `/body` answers with the request body's length; anything else answers JSON describing the
/// request (`backend`, `path`, `headers`).
pub struct EchoBackend {
    pub addr: SocketAddr,
    pub name: String,
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn echo_backend(name: &str) -> EchoBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (c, r, n) = (connections.clone(), requests.clone(), name.to_owned());
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            c.fetch_add(1, Ordering::SeqCst);
            let (r, n) = (r.clone(), n.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    r.fetch_add(1, Ordering::SeqCst);
                    let n = n.clone();
                    async move { Ok::<_, Infallible>(echo(&n, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    EchoBackend { addr, name: name.to_owned(), connections, requests, task }
}

async fn echo(name: &str, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    if let Some(ms) = path.strip_prefix("/sleep/") {
        let ms: u64 = ms.parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if path == "/ws" {
        let key = req.headers().get("sec-websocket-key").cloned();
        let Some(key) = key else { return text(StatusCode::BAD_REQUEST, "no key") };
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else { return };
            let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await;
            let (mut tx, mut rx) = ws.split();
            while let Some(Ok(msg)) = rx.next().await {
                if msg.is_close() {
                    break;
                }
                if tx.send(msg).await.is_err() {
                    break;
                }
            }
        });
        return Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-accept", accept)
            .body(Full::new(Bytes::new()))
            .unwrap();
    }
    if path == "/body" {
        return match req.into_body().collect().await {
            Ok(b) => text(StatusCode::OK, &b.to_bytes().len().to_string()),
            Err(_) => text(StatusCode::BAD_REQUEST, "body error"),
        };
    }
    let mut headers = BTreeMap::new();
    for (k, v) in req.headers() {
        headers
            .entry(k.as_str().to_owned())
            .and_modify(|s: &mut String| {
                s.push_str(", ");
                s.push_str(v.to_str().unwrap_or("?"));
            })
            .or_insert_with(|| v.to_str().unwrap_or("?").to_owned());
    }
    let body = serde_json::json!({ "backend": name, "path": req.uri().to_string(), "headers": headers });
    let mut resp = text(StatusCode::OK, &body.to_string());
    resp.headers_mut().insert("x-backend", name.parse().unwrap());
    resp
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())));
    *r.status_mut() = status;
    r
}

/// A proxy on ephemeral ports, served in a task until [`TestProxy::shutdown`].
pub struct TestProxy {
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub handle: ProxyHandle,
    pub registry: prometheus::Registry,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<causeway_proxy::Result<()>>>,
}

pub fn local_config() -> ProxyConfig {
    ProxyConfig {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        https_addr: "127.0.0.1:0".parse().unwrap(),
        ..ProxyConfig::default()
    }
}

pub async fn start_proxy(config: ProxyConfig) -> TestProxy {
    start_proxy_on(config, None).await
}

/// `threads: Some(n)` serves with [`Proxy::serve_on_threads`].
pub async fn start_proxy_on(config: ProxyConfig, threads: Option<usize>) -> TestProxy {
    let registry = prometheus::Registry::new();
    let proxy = Proxy::bind(config, &registry).await.unwrap();
    let addrs = proxy.local_addrs();
    let handle = proxy.handle();
    let (tx, rx) = oneshot::channel::<()>();
    let stopped = async move {
        let _ = rx.await;
    };
    let task = match threads {
        None => tokio::spawn(proxy.serve(stopped)),
        Some(n) => tokio::spawn(proxy.serve_on_threads(n, stopped)),
    };
    TestProxy { http: addrs.http, https: addrs.https, handle, registry, stop: Some(tx), task: Some(task) }
}

impl TestProxy {
    /// Signals shutdown and returns the join handle of `serve`.
    pub fn begin_shutdown(&mut self) -> JoinHandle<causeway_proxy::Result<()>> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.take().unwrap()
    }

    pub fn metrics_text(&self) -> String {
        prometheus::TextEncoder::new().encode_to_string(&self.registry.gather()).unwrap()
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

// === tables ===

pub fn svc(name: &str) -> ServiceRef {
    ServiceRef { namespace: "default".into(), name: name.into(), port: 80 }
}

pub fn mk_route(path: PathMatch, service: &str, endpoints: &[SocketAddr]) -> Route {
    Route {
        path,
        backend: Backend {
            service: svc(service),
            endpoints: endpoints.iter().map(|&address| Endpoint { address }).collect(),
        },
        ingress: ObjectRef::new("Ingress", "default", format!("ing-{service}")),
        ssl_redirect: false,
    }
}

pub fn vhost(host: &str, routes: Vec<Route>) -> VirtualHost {
    let host = if host == "*" { HostPattern::Any } else { host.parse().unwrap() };
    VirtualHost { host, routes }
}

pub fn table(vhosts: Vec<VirtualHost>) -> RouteTable {
    RouteTable { virtual_hosts: vhosts, ..RouteTable::default() }
}

/// A self-signed certificate for `names`, as a table entry.
pub fn mk_cert(secret: &str, names: &[&str]) -> TlsCertificate {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let generated = rcgen::generate_simple_self_signed(names.clone()).unwrap();
    TlsCertificate {
        hosts: names.iter().map(|n| n.parse().unwrap()).collect(),
        cert_pem: generated.cert.pem(),
        key_pem: generated.signing_key.serialize_pem(),
        secret: ObjectRef::new("Secret", "default", secret),
    }
}

/// The DER of the first certificate of a PEM chain.
pub fn leaf_der(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().to_vec()
}

/// An address nothing listens on (bound, then released).
pub async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

// === clients ===

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    pub fn backend(&self) -> String {
        self.json()["backend"].as_str().unwrap_or("").to_owned()
    }
}

/// One HTTP/1.1 connection to the proxy, for several requests.
pub struct H1 {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl H1 {
    pub async fn connect(addr: SocketAddr) -> H1 {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        H1 { sender }
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Answer, hyper::Error> {
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        collect(resp).await
    }

    pub async fn get(&mut self, host: &str, path: &str) -> Answer {
        self.send(get_req(host, path)).await.unwrap()
    }
}

pub fn get_req(host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::builder().uri(path).header("host", host).body(Full::new(Bytes::new())).unwrap()
}

pub async fn collect(resp: Response<Incoming>) -> Result<Answer, hyper::Error> {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Answer { status: parts.status, headers: parts.headers, body: String::from_utf8_lossy(&body).into_owned() })
}

/// A GET on a fresh connection.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Answer {
    H1::connect(addr).await.get(host, path).await
}

/// Writes `bytes` on a fresh connection and reads until the proxy closes it (at most 5 s).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Polls `check` until it returns true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// === TLS client ===

/// Accepts any server certificate (the tests check *which* certificate was presented, not its trust).
#[derive(Debug)]
pub struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Connects with TLS; `sni: None` sends no SNI. `tls12_only` restricts the client to TLS 1.2.
pub async fn tls_connect(
    addr: SocketAddr,
    sni: Option<&str>,
    alpn: &[&[u8]],
    tls12_only: bool,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] =
        if tls12_only { &[&rustls::version::TLS12] } else { &[&rustls::version::TLS13, &rustls::version::TLS12] };
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = match sni {
        Some(s) => rustls_pki_types::ServerName::try_from(s.to_owned()).unwrap(),
        None => {
            config.enable_sni = false;
            rustls_pki_types::ServerName::try_from("unused.invalid".to_owned()).unwrap()
        }
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector.connect(name, tcp).await.unwrap()
}

/// The leaf certificate the server presented.
pub fn presented_leaf(s: &tokio_rustls::client::TlsStream<TcpStream>) -> Vec<u8> {
    s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}
