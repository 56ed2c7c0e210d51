//! The Causeway data plane: an edge proxy that serves a [`causeway_model::RouteTable`].
//!
//! What it does: HTTP/1.1 and HTTP/2 (h2 via ALPN on TLS, h2c with prior knowledge on plain HTTP) from clients,
//! routed by host (exact, then `*.suffix`, then host-less rules) and path (`Exact`, then the longest `Prefix`)
//! to endpoints over pooled keep-alive HTTP/1.1 connections, round-robin, with a bounded connect retry on
//! another endpoint; WebSocket/`Upgrade` passthrough; `X-Forwarded-For/-Proto/-Host`; hop-by-hop headers
//! removed; TLS 1.2/1.3 with the certificate chosen per handshake by SNI from the live table; 308 to https for
//! `ssl_redirect` routes; L4 TCP/UDP listeners; Prometheus metrics and an admin server.
//!
//! Status codes of its own: 404 no route, 503 no endpoints, 502 upstream error or refused connects, 504
//! connect/response-header timeout, 431 oversized request headers, 400 malformed requests (both from hyper),
//! 413 body over the limit, 308 redirect.
//!
//! What it deliberately does not do: it knows nothing of Kubernetes (no kube, no k8s-openapi: the controller
//! translates objects into the table); it never reloads (a table change is one `ArcSwap::store` of a table
//! compiled off the request path); it does not retry a request once sent (only connects are retried); it does
//! not speak HTTP/2 to endpoints, cache, or rewrite bodies.
//!
//! ```text
//!  RouteTable ──ProxyHandle::store──► compile ──► ArcSwap<CompiledTable> ◄── load once per request / connection
//!                                       │                 │                    (TLS resolver reads it too)
//!                      pools, round-robin state           └─► L4 listeners opened/closed to match
//!                      (survive swaps, keyed by endpoint)
//! ```
//!
//! Usage, as the `causeway` binary does it:
//!
//! ```no_run
//! # async fn run(table: causeway_model::RouteTable) -> Result<(), causeway_proxy::Error> {
//! use causeway_proxy::{AdminServer, Proxy, ProxyConfig, Readiness};
//! let registry = prometheus::Registry::new();
//! let config = ProxyConfig {
//!     http_addr: "127.0.0.1:0".parse().unwrap(),
//!     https_addr: "127.0.0.1:0".parse().unwrap(),
//!     ..ProxyConfig::default()
//! };
//! let proxy = Proxy::bind(config, &registry).await?;      // listeners bound now; proxy.local_addrs()
//! let handle = proxy.handle();                            // Clone + Send + Sync: store from the watcher task
//! let diagnostics = handle.store(table);                  // compile diagnostics (bad certificates, ...)
//! let readiness = Readiness::new();
//! let admin = AdminServer::bind("127.0.0.1:0".parse().unwrap(), registry, readiness.clone(), proxy.table_view())
//!     .await?;
//! readiness.set_ready(true);
//! let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
//! # drop(stop_tx);
//! tokio::select! {
//!     r = proxy.serve(async { let _ = stop_rx.await; }) => r?,  // stop accepting, drain (bounded), return
//!     r = admin.serve(std::future::pending()) => r?,
//! }
//! // Or `proxy.serve_on_threads(n, shutdown)`: the data path on n dedicated current-thread runtimes, cheaper
//! // per request than tokio's work-stealing scheduler.
//! # let _ = diagnostics;
//! # Ok(())
//! # }
//! ```
//!
//! Performance (`tests/bench/l7.sh`, proxy pinned to one core of a shared 2-core VM, keep-alive, 64 connections,
//! ~100-byte body; the machine was loaded by other builds, so CPU time per request is the figure to compare):
//! nginx 29-41 µs, haproxy 28-44 µs, this engine 36-42 µs with [`Proxy::serve_on_threads`] and 45-61 µs with
//! [`Proxy::serve`] on a one-worker multi-thread runtime. The engine's own layers cost about what a bare hyper +
//! hyper-util proxy costs (`examples/minimal_hyper.rs`, same CPU per request within noise); about 60% of the
//! CPU is the kernel's loopback TCP path (writev and the wake-ups it causes), which every proxy pays.
#![forbid(unsafe_code)]

mod admin;
mod body;
mod config;
mod error;
mod l4;
mod metrics;
mod proxy;
mod table;
mod tls;
mod upstream;

pub use admin::{AdminServer, Readiness, TableView, routes_json};
pub use config::{Limits, ProxyConfig, Timeouts};
pub use error::{Error, Result};
pub use proxy::{LocalAddrs, Proxy, ProxyHandle};
pub use table::{CompiledTable, RouteMatch};

use causeway_model::{Diagnostic, RouteTable};

/// Compiles `table` without serving it and returns what compilation would report (unreadable certificates,
/// keys that do not match, duplicate hosts or L4 addresses). For `causeway routes` / `causeway check`.
pub fn check(table: &RouteTable) -> Result<Vec<Diagnostic>> {
    let metrics = metrics::Metrics::unregistered();
    let default = tls::generate_default()?;
    let mut compiler = table::Compiler::new(metrics, default, upstream::PoolSettings::default());
    Ok(compiler.compile(std::sync::Arc::new(table.clone())).diagnostics().to_vec())
}
