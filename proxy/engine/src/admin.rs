//! The admin server: `/metrics`, `/healthz`, `/readyz`, `/debug/routes`.

use crate::body::ProxyBody;
use crate::error::{Error, Result};
use crate::proxy::plain;
use crate::table::CompiledTable;
use arc_swap::ArcSwap;
use causeway_model::RouteTable;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;

/// A readiness flag the binary sets once every watched kind has finished its initial list (design
/// invariant 2). Clones share the flag.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// A flag that starts not ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the flag; `/readyz` answers 200 while it is true, 503 otherwise.
    pub fn set_ready(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    /// The flag's value.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Read access to a proxy's live table.
#[derive(Clone)]
pub struct TableView {
    table: Arc<ArcSwap<CompiledTable>>,
}

impl TableView {
    pub(crate) fn new(table: Arc<ArcSwap<CompiledTable>>) -> Self {
        Self { table }
    }

    /// The table being served.
    pub fn current(&self) -> Arc<CompiledTable> {
        self.table.load_full()
    }

    /// The live [`RouteTable`] as pretty JSON, compile diagnostics appended to `diagnostics`. Private keys are
    /// never serialised.
    pub fn routes_json(&self) -> String {
        routes_json(&self.table.load())
    }
}

/// `table`'s source as JSON, with the compile diagnostics appended to the translation's.
pub fn routes_json(table: &CompiledTable) -> String {
    let mut ir: RouteTable = (**table.source()).clone();
    ir.diagnostics.extend(table.diagnostics().iter().cloned());
    serde_json::to_string_pretty(&ir).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

struct AdminState {
    registry: prometheus::Registry,
    readiness: Readiness,
    view: TableView,
}

/// The admin HTTP/1.1 server.
pub struct AdminServer {
    listener: TcpListener,
    state: Arc<AdminState>,
}

impl AdminServer {
    /// Binds `addr` now (port 0 works).
    pub async fn bind(
        addr: SocketAddr,
        registry: prometheus::Registry,
        readiness: Readiness,
        view: TableView,
    ) -> Result<Self> {
        let listener = TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })?;
        Ok(Self { listener, state: Arc::new(AdminState { registry, readiness, view }) })
    }

    /// Where the server listens.
    pub fn local_addr(&self) -> SocketAddr {
        // A bound listener always has an address; fall back to unspecified rather than panic.
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until `shutdown` resolves, then stops accepting and returns.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        tokio::pin!(shutdown);
        loop {
            let (stream, _) = tokio::select! {
                () = &mut shutdown => return Ok(()),
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(error) => {
                        tracing::warn!(message = "Admin accept failed.", %error);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
            };
            let state = self.state.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(admin(&state, req)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), svc);
                if let Err(error) = conn.await {
                    tracing::debug!(message = "Admin connection failed.", %error);
                }
            });
        }
    }
}

fn admin(state: &AdminState, req: Request<Incoming>) -> Response<ProxyBody> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match req.uri().path() {
        "/healthz" => plain(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if state.readiness.is_ready() {
                plain(StatusCode::OK, "ready\n")
            } else {
                plain(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        "/metrics" => {
            let text = prometheus::TextEncoder::new()
                .encode_to_string(&state.registry.gather())
                .unwrap_or_else(|e| format!("# encoding failed: {e}\n"));
            with_type(Response::new(ProxyBody::full(text)), "text/plain; version=0.0.4; charset=utf-8")
        }
        "/debug/routes" => with_type(Response::new(ProxyBody::full(state.view.routes_json())), "application/json"),
        _ => plain(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn with_type(mut resp: Response<ProxyBody>, content_type: &'static str) -> Response<ProxyBody> {
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}
