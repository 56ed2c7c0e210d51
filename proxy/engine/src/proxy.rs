//! The listeners, the per-connection driver and the per-request forwarding logic.

use crate::admin::TableView;
use crate::body::{PooledBody, ProxyBody, UpBody, UpBodyError};
use crate::config::ProxyConfig;
use crate::error::{Error, Result};
use crate::l4::L4Manager;
use crate::metrics::Metrics;
use crate::table::{CompiledRoute, CompiledTable, Compiler, normalize_host};
use crate::tls;
use crate::upstream::{self, PoolSettings, SendError};
use arc_swap::ArcSwap;
use causeway_model::{Diagnostic, RouteTable};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

/// The addresses the proxy's listeners are bound to (useful when the configuration asked for port 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalAddrs {
    pub http: SocketAddr,
    pub https: SocketAddr,
}

/// The edge proxy: bound listeners plus the shared state. Serve it with [`Proxy::serve`]; change what it serves
/// through [`Proxy::handle`] (or [`Proxy::store`]) at any time, from any task.
pub struct Proxy {
    handle: ProxyHandle,
    http: TcpListener,
    https: TcpListener,
    addrs: LocalAddrs,
}

/// A cheap, cloneable handle to a proxy's live table.
#[derive(Clone)]
pub struct ProxyHandle {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    table: Arc<ArcSwap<CompiledTable>>,
    compiler: parking_lot::Mutex<Compiler>,
    metrics: Metrics,
    config: ProxyConfig,
    tls: TlsAcceptor,
    builder: auto::Builder<TokioExecutor>,
    l4: L4Manager,
}

/// Signals shared by every connection task of one [`Proxy::serve`] call.
#[derive(Clone)]
pub(crate) struct Lifecycle {
    /// Becomes true when the proxy stops accepting: finish in-flight requests, then close.
    pub stop: watch::Receiver<bool>,
    /// Becomes true when the drain bound has passed: close now.
    pub cut: watch::Receiver<bool>,
    /// Held by every task that must finish before `serve` returns.
    pub drain: mpsc::Sender<()>,
}

impl Proxy {
    /// Binds the HTTP and HTTPS listeners now (port 0 works) and registers the metrics on `registry`.
    /// Until the first [`Proxy::store`], every request answers 404 and TLS serves a generated certificate.
    pub async fn bind(config: ProxyConfig, registry: &prometheus::Registry) -> Result<Self> {
        let metrics = Metrics::register(registry)?;
        let default_cert = tls::generate_default()?;
        let pool_settings = PoolSettings {
            max_idle: config.limits.max_idle_per_endpoint,
            idle_timeout: config.timeouts.upstream_idle,
            connect_timeout: config.timeouts.connect,
        };
        let mut compiler = Compiler::new(metrics.clone(), default_cert, pool_settings);
        let table = Arc::new(ArcSwap::from_pointee(compiler.empty()));
        let tls = TlsAcceptor::from(tls::server_config(table.clone())?);

        let http = bind(config.http_addr).await?;
        let https = bind(config.https_addr).await?;
        let addrs = LocalAddrs { http: http.local_addr()?, https: https.local_addr()? };

        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(config.timeouts.client_header_read)
            .max_buf_size(config.limits.max_request_header_bytes.max(8192))
            .max_headers(config.limits.max_request_headers)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(config.limits.max_request_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(256);

        let l4 = L4Manager::new(metrics.clone(), table.clone(), config.timeouts.clone(), config.limits.clone());
        let shared =
            Arc::new(Shared { table, compiler: parking_lot::Mutex::new(compiler), metrics, config, tls, builder, l4 });
        Ok(Self { handle: ProxyHandle { shared }, http, https, addrs })
    }

    /// Where the listeners are bound.
    pub fn local_addrs(&self) -> LocalAddrs {
        self.addrs
    }

    /// A handle for storing tables while [`Proxy::serve`] runs.
    pub fn handle(&self) -> ProxyHandle {
        self.handle.clone()
    }

    /// Same as [`ProxyHandle::store`].
    pub fn store(&self, table: RouteTable) -> Vec<Diagnostic> {
        self.handle.store(table)
    }

    /// Same as [`ProxyHandle::table_view`].
    pub fn table_view(&self) -> TableView {
        self.handle.table_view()
    }

    /// Serves until `shutdown` resolves; then stops accepting (HTTP, HTTPS and L4 listeners close), lets
    /// in-flight requests and upgraded tunnels finish for at most [`crate::Timeouts::drain`], cuts what is left,
    /// and returns.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let Proxy { handle, http, https, .. } = self;
        let shared = handle.shared;
        let (stop_tx, stop_rx) = watch::channel(false);
        let (cut_tx, cut_rx) = watch::channel(false);
        let (drain_tx, drain_rx) = mpsc::channel::<()>(1);
        let life = Lifecycle { stop: stop_rx, cut: cut_rx, drain: drain_tx };
        accept_loop(&shared, &http, &https, &life, shutdown).await;
        drop(http);
        drop(https);
        drain(&shared, life, stop_tx, cut_tx, drain_rx).await;
        Ok(())
    }

    /// Like [`Proxy::serve`], but runs the HTTP and HTTPS data path on `threads` dedicated OS threads, each with
    /// its own current-thread tokio runtime accepting from the same listening sockets (the nginx worker model).
    /// A current-thread runtime costs less CPU per request than a work-stealing one (about 12-15% measured with
    /// one thread, see `tests/bench/l7.sh`). Table stores, L4 listeners, the TLS resolver and metrics are shared
    /// as with `serve`; the calling runtime only waits for `shutdown` and then drains (bounded) as `serve` does.
    pub async fn serve_on_threads(self, threads: usize, shutdown: impl Future<Output = ()>) -> Result<()> {
        let Proxy { handle, http, https, .. } = self;
        let shared = handle.shared;
        let http = http.into_std()?;
        let https = https.into_std()?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let (cut_tx, cut_rx) = watch::channel(false);
        let (drain_tx, drain_rx) = mpsc::channel::<()>(1);
        let life = Lifecycle { stop: stop_rx, cut: cut_rx, drain: drain_tx };
        for i in 0..threads.max(1) {
            let (http, https) = (http.try_clone()?, https.try_clone()?);
            let (shared, life) = (shared.clone(), life.clone());
            std::thread::Builder::new()
                .name(format!("causeway-proxy-{i}"))
                .spawn(move || worker_thread(shared, http, https, life))?;
        }
        // The workers hold their own clones of the sockets; ours must not keep the listeners open.
        drop(http);
        drop(https);
        shutdown.await;
        drain(&shared, life, stop_tx, cut_tx, drain_rx).await;
        Ok(())
    }
}

/// One worker of [`Proxy::serve_on_threads`]: accept until stopped, then run the connection tasks until they
/// finish or are cut. Holding `life.drain` until then is what the drain in the calling runtime waits for.
fn worker_thread(shared: Arc<Shared>, http: std::net::TcpListener, https: std::net::TcpListener, life: Lifecycle) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(error) => {
            tracing::error!(message = "Cannot start a proxy worker runtime.", %error);
            return;
        }
    };
    runtime.block_on(async move {
        let (http, https) = match (TcpListener::from_std(http), TcpListener::from_std(https)) {
            (Ok(h), Ok(s)) => (h, s),
            (Err(error), _) | (_, Err(error)) => {
                tracing::error!(message = "Cannot register the listeners in a worker runtime.", %error);
                return;
            }
        };
        // Connection tasks of this thread hold `local`; the thread lives until they are all gone.
        let (local_tx, mut local_rx) = mpsc::channel::<()>(1);
        let local = Lifecycle { stop: life.stop.clone(), cut: life.cut.clone(), drain: local_tx };
        let mut stop = life.stop.clone();
        accept_loop(&shared, &http, &https, &local, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
        drop((http, https));
        let mut cut = local.cut.clone();
        drop(local);
        tokio::select! {
            _ = local_rx.recv() => {}
            _ = cut.wait_for(|c| *c) => {
                // Give the cut tasks one turn to close their sockets before the runtime drops them.
                let _ = tokio::time::timeout(Duration::from_millis(200), local_rx.recv()).await;
            }
        }
        drop(life);
    });
}

/// Accepts on both listeners until `until` resolves.
async fn accept_loop(
    shared: &Arc<Shared>,
    http: &TcpListener,
    https: &TcpListener,
    life: &Lifecycle,
    until: impl Future<Output = ()>,
) {
    let http_accepted = shared.metrics.connections.with_label_values(&["http"]);
    let https_accepted = shared.metrics.connections.with_label_values(&["https"]);
    tokio::pin!(until);
    loop {
        tokio::select! {
            biased;
            () = &mut until => break,
            accepted = http.accept() => match accepted {
                Ok((stream, peer)) => {
                    http_accepted.inc();
                    tokio::spawn(serve_plain(shared.clone(), stream, peer, life.clone()));
                }
                Err(error) => accept_backoff(&error).await,
            },
            accepted = https.accept() => match accepted {
                Ok((stream, peer)) => {
                    https_accepted.inc();
                    tokio::spawn(serve_tls(shared.clone(), stream, peer, life.clone()));
                }
                Err(error) => accept_backoff(&error).await,
            },
        }
    }
}

/// Stop accepting everywhere, let in-flight work finish within the drain bound, then cut what is left.
async fn drain(
    shared: &Shared,
    life: Lifecycle,
    stop_tx: watch::Sender<bool>,
    cut_tx: watch::Sender<bool>,
    mut drain_rx: mpsc::Receiver<()>,
) {
    tracing::info!(message = "Stopped accepting; draining in-flight requests.");
    let _ = stop_tx.send(true);
    let mut l4_drain = shared.l4.stop();
    drop(life);
    let bound = shared.config.timeouts.drain;
    let drained = async {
        let _ = drain_rx.recv().await;
        if let Some(rx) = l4_drain.as_mut() {
            let _ = rx.recv().await;
        }
    };
    if tokio::time::timeout(bound, drained).await.is_err() {
        tracing::warn!(message = "Drain bound reached; cutting the remaining connections.", drain = ?bound);
        let _ = cut_tx.send(true);
        shared.l4.cut();
        // Tasks exit promptly once cut; wait briefly so that they release their sockets before we return.
        let _ = tokio::time::timeout(Duration::from_secs(1), drain_rx.recv()).await;
    }
}

impl ProxyHandle {
    /// Compiles `table` (off the request path, here in the caller) and swaps it in atomically. Requests that
    /// already loaded the old table finish with it. L4 listeners are opened and closed to match. Returns the
    /// compile diagnostics (bad certificates, duplicates); translation's own are kept in the table.
    pub fn store(&self, table: RouteTable) -> Vec<Diagnostic> {
        // The compiler lock also orders L4 reconciles with their tables.
        let mut compiler = self.shared.compiler.lock();
        let compiled = Arc::new(compiler.compile(Arc::new(table)));
        self.shared.table.store(compiled.clone());
        let mut diagnostics = compiled.diagnostics().to_vec();
        diagnostics.extend(self.shared.l4.reconcile(&compiled));
        drop(compiler);
        let m = &self.shared.metrics;
        m.table_swaps.inc();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        m.last_swap.set(now);
        let all = compiled.source().diagnostics.iter().chain(&diagnostics);
        let (mut errors, mut warnings) = (0, 0);
        for d in all {
            match d.severity {
                causeway_model::Severity::Error => errors += 1,
                causeway_model::Severity::Warning => warnings += 1,
            }
        }
        m.diagnostics.with_label_values(&["error"]).set(errors);
        m.diagnostics.with_label_values(&["warning"]).set(warnings);
        let source = compiled.source();
        let routes = source.virtual_hosts.iter().map(|v| v.routes.len()).sum::<usize>()
            + usize::from(source.default_route.is_some());
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        m.table_entries.with_label_values(&["virtual_hosts"]).set(count(source.virtual_hosts.len()));
        m.table_entries.with_label_values(&["routes"]).set(count(routes));
        m.table_entries.with_label_values(&["certificates"]).set(count(source.certificates.len()));
        m.table_entries.with_label_values(&["l4_listeners"]).set(count(source.l4_listeners.len()));
        for d in &diagnostics {
            tracing::warn!(message = "Route table diagnostic.", object = %d.object, field = %d.field, error = %d.message);
        }
        diagnostics
    }

    /// The live table, for the admin server's `/debug/routes`.
    pub fn table_view(&self) -> TableView {
        TableView::new(self.shared.table.clone())
    }

    /// The table requests are served from right now.
    pub fn current(&self) -> Arc<CompiledTable> {
        self.shared.table.load_full()
    }

    /// The L4 listeners open right now: (protocol, address in the table, address bound). They differ when the
    /// table asks for port 0.
    pub fn l4_local_addrs(&self) -> Vec<(causeway_model::L4Protocol, SocketAddr, SocketAddr)> {
        self.shared.l4.local_addrs()
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })
}

/// Out of file descriptors and similar: log, pause briefly so that we do not spin, go on.
async fn accept_backoff(error: &std::io::Error) {
    tracing::warn!(message = "Accept failed.", %error);
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// What a request handler needs to know about its connection.
struct ConnInfo {
    tls: bool,
    peer_ip: HeaderValue,
    peer_ip_text: String,
    life: Lifecycle,
}

impl ConnInfo {
    fn new(tls: bool, peer: SocketAddr, life: Lifecycle) -> Self {
        let text = peer.ip().to_string();
        // An IP address is always a valid header value.
        let peer_ip = HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("unknown"));
        Self { tls, peer_ip, peer_ip_text: text, life }
    }
}

async fn serve_plain(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr, life: Lifecycle) {
    let _ = stream.set_nodelay(true);
    serve_connection(shared, stream, ConnInfo::new(false, peer, life)).await;
}

async fn serve_tls(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr, life: Lifecycle) {
    let _ = stream.set_nodelay(true);
    let handshake = tokio::time::timeout(shared.config.timeouts.tls_handshake, shared.tls.accept(stream)).await;
    let stream = match handshake {
        Ok(Ok(s)) => s,
        Ok(Err(error)) => {
            shared.metrics.tls_handshake_errors.inc();
            tracing::debug!(message = "TLS handshake failed.", %error, %peer);
            return;
        }
        Err(_) => {
            shared.metrics.tls_handshake_errors.inc();
            return;
        }
    };
    serve_connection(shared, stream, ConnInfo::new(true, peer, life)).await;
}

async fn serve_connection<I>(shared: Arc<Shared>, io: I, info: ConnInfo)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut stop = info.life.stop.clone();
    let mut cut = info.life.cut.clone();
    let _drain = info.life.drain.clone();
    let info = Arc::new(info);
    let svc_shared = shared.clone();
    let svc = service_fn(move |req| {
        let shared = svc_shared.clone();
        let info = info.clone();
        async move { Ok::<_, Infallible>(handle(&shared, &info, req).await) }
    });
    let conn = shared.builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        biased;
        _ = conn.as_mut() => return,
        _ = stop.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
    }
    tokio::select! {
        biased;
        _ = conn.as_mut() => {}
        _ = cut.wait_for(|c| *c) => {}
    }
}

// === request handling ===

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

async fn handle(shared: &Shared, conn: &ConnInfo, req: Request<Incoming>) -> Response<ProxyBody> {
    let start = Instant::now();
    let host_value = host_of(&req);
    let (route, no_route) = {
        let host = host_value.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("");
        let host = normalize_host(host);
        // One table per request: load, resolve, clone the route out, drop the guard before any await.
        let table = shared.table.load();
        match table.find(&host, req.uri().path()) {
            Some(r) if req.method() != http::Method::CONNECT => (Some(r.clone()), None),
            _ => (None, Some(table.no_route.clone())),
        }
    };
    let Some(route) = route else {
        let resp = if req.method() == http::Method::CONNECT {
            // We are a reverse proxy, not a forward one.
            plain(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported\n")
        } else {
            plain(StatusCode::NOT_FOUND, "no route for this host and path\n")
        };
        if let Some(stats) = no_route {
            stats.observe(resp.status(), start.elapsed());
        }
        return resp;
    };
    let resp = forward(shared, conn, &route, host_value, req).await;
    route.stats.observe(resp.status(), start.elapsed());
    resp
}

/// The Host header, or the URI authority (HTTP/2, absolute-form).
fn host_of(req: &Request<Incoming>) -> Option<HeaderValue> {
    if let Some(h) = req.headers().get(header::HOST) {
        return Some(h.clone());
    }
    req.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok())
}

async fn forward(
    shared: &Shared,
    conn: &ConnInfo,
    route: &CompiledRoute,
    host: Option<HeaderValue>,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    let config = &shared.config;
    if route.ssl_redirect && !conn.tls {
        return redirect(config, host.as_ref(), req.uri());
    }
    let limit = config.limits.max_request_body_bytes;
    if let Some(limit) = limit
        && content_length(req.headers()).is_some_and(|len| len > limit)
    {
        return plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
    }
    if route.backend.endpoints.is_empty() {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "no ready endpoints for this service\n");
    }

    let upgrade = req.version() == Version::HTTP_11 && wants_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    parts.extensions.clear();
    parts.version = Version::HTTP_11;
    // Endpoints get origin-form (`/path?query`); HTTP/1.1 clients almost always sent that already.
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        let mut origin = http::uri::Parts::default();
        origin.path_and_query =
            Some(parts.uri.path_and_query().cloned().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")));
        parts.uri = Uri::from_parts(origin).unwrap_or_else(|_| Uri::from_static("/"));
    }
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers, upgrade);
    headers.remove(header::EXPECT);
    if let Some(host) = &host {
        if !headers.contains_key(header::HOST) {
            headers.insert(header::HOST, host.clone());
        }
        headers.insert(X_FORWARDED_HOST.clone(), host.clone());
    }
    append_forwarded_for(headers, conn);
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(if conn.tls { "https" } else { "http" }));
    let up_req = Request::from_parts(parts, UpBody::new(body, limit));

    let sent = upstream::send(
        &route.backend,
        up_req,
        config.limits.max_connect_attempts,
        config.timeouts.response_header,
        || route.stats.connect_errors.inc(),
    )
    .await;
    let sent = match sent {
        Ok(s) => s,
        Err(SendError::Connect { timed_out: true }) | Err(SendError::ResponseTimeout) => {
            return plain(StatusCode::GATEWAY_TIMEOUT, "upstream timed out\n");
        }
        Err(SendError::Connect { timed_out: false }) => {
            return plain(StatusCode::BAD_GATEWAY, "no endpoint accepted the connection\n");
        }
        Err(SendError::Upstream(e)) => {
            if caused_by_too_large(&e) {
                return plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
            }
            tracing::debug!(message = "Upstream request failed.", error = %e, service = %route.backend.service);
            return plain(StatusCode::BAD_GATEWAY, "upstream error\n");
        }
    };
    let mut resp = sent.response;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(tunnel(client_upgrade, upstream_upgrade, conn.life.clone()));
            let (parts, _) = resp.into_parts();
            return Response::from_parts(parts, ProxyBody::Full(None));
        }
        // A 101 the client did not ask for cannot be relayed.
        return plain(StatusCode::BAD_GATEWAY, "unexpected protocol switch from upstream\n");
    }
    strip_hop_by_hop(resp.headers_mut(), false);
    resp.map(|b| ProxyBody::Upstream(PooledBody::new(b, sent.sender, sent.pool)))
}

/// Copies bytes both ways between an upgraded client connection and an upgraded upstream connection.
async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade, life: Lifecycle) {
    let _drain = life.drain.clone();
    let mut cut = life.cut.clone();
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(error) => {
            tracing::debug!(message = "Upgrade failed.", %error);
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
        _ = cut.wait_for(|c| *c) => {}
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_has(headers, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1) and those the Connection header names. For an upgrade, the
/// `Upgrade` header is kept and `Connection: upgrade` restated.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            if keep_upgrade && name == header::UPGRADE {
                continue;
            }
            headers.remove(name);
        }
        headers.remove(header::CONNECTION);
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(header::TE);
    headers.remove(header::TRAILER);
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::PROXY_AUTHENTICATE);
    headers.remove(header::PROXY_AUTHORIZATION);
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

fn append_forwarded_for(headers: &mut HeaderMap, conn: &ConnInfo) {
    if !headers.contains_key(&X_FORWARDED_FOR) {
        headers.insert(X_FORWARDED_FOR.clone(), conn.peer_ip.clone());
        return;
    }
    let mut joined = String::new();
    for v in headers.get_all(&X_FORWARDED_FOR).iter() {
        if let Ok(s) = v.to_str() {
            if !joined.is_empty() {
                joined.push_str(", ");
            }
            joined.push_str(s.trim());
        }
    }
    if !joined.is_empty() {
        joined.push_str(", ");
    }
    joined.push_str(&conn.peer_ip_text);
    let value = HeaderValue::from_str(&joined).unwrap_or_else(|_| conn.peer_ip.clone());
    headers.insert(X_FORWARDED_FOR.clone(), value);
}

fn caused_by_too_large(e: &hyper::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(UpBodyError::TooLarge) = s.downcast_ref::<UpBodyError>() {
            return true;
        }
        source = s.source();
    }
    false
}

fn redirect(config: &ProxyConfig, host: Option<&HeaderValue>, uri: &Uri) -> Response<ProxyBody> {
    let host = host.and_then(|h| h.to_str().ok()).unwrap_or("");
    let host = normalize_host(host);
    let port = match config.redirect_https_port {
        Some(p) if p != 443 => format!(":{p}"),
        _ => String::new(),
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{host}{port}{path}");
    let Ok(location) = HeaderValue::from_str(&location) else {
        return plain(StatusCode::BAD_REQUEST, "bad host\n");
    };
    let mut resp = plain(StatusCode::PERMANENT_REDIRECT, "redirecting to https\n");
    resp.headers_mut().insert(header::LOCATION, location);
    resp
}

/// A short text response of our own.
pub(crate) fn plain(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, X-Secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn upgrade_headers_are_kept_for_upgrades() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(wants_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get(header::UPGRADE).unwrap(), "websocket");
        assert_eq!(h.get(header::CONNECTION).unwrap(), "upgrade");
    }
}
