//! Tiny HTTP servers: the admin endpoints (`/metrics`, `/healthz`, `/readyz`) and one `healthCheckNodePort`
//! listener per Service with `externalTrafficPolicy: Local` (reference §5.9).

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A handler: path → (status, content type, body, extra headers).
pub type Handler = Arc<dyn Fn(&str) -> (StatusCode, &'static str, String, Vec<(&'static str, String)>) + Send + Sync>;

/// Serves `handler` on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, handler: Handler) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let handler = handler.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let (status, ctype, body, headers) = handler(req.uri().path());
                let mut resp = Response::new(Full::new(Bytes::from(body)));
                *resp.status_mut() = status;
                if let Ok(v) = ctype.parse() {
                    resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
                }
                for (k, v) in headers {
                    if let Ok(v) = v.parse() {
                        resp.headers_mut().insert(k, v);
                    }
                }
                async move { Ok::<_, std::convert::Infallible>(resp) }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

/// One Service's health-check entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthEntry {
    pub namespace: String,
    pub name: String,
    /// Distinct ready endpoint IPs on this node.
    pub local_endpoints: usize,
}

/// Shared state behind the health-check listeners.
#[derive(Debug, Default)]
pub struct HealthState {
    entries: RwLock<BTreeMap<u16, HealthEntry>>,
    /// Whether the last rule sync succeeded (`serviceProxyHealthy`).
    pub proxy_healthy: AtomicBool,
}

impl HealthState {
    /// The response for a request to health-check port `port` (any path): 200 iff there are local endpoints and
    /// the proxy is healthy, else 503; JSON body and headers as kube-proxy's.
    pub fn respond(&self, port: u16) -> (StatusCode, &'static str, String, Vec<(&'static str, String)>) {
        let healthy = self.proxy_healthy.load(Ordering::Relaxed);
        let entry = self.entries.read().get(&port).cloned();
        let (ns, name, count) = entry.map(|e| (e.namespace, e.name, e.local_endpoints)).unwrap_or_default();
        let body = serde_json::json!({
            "service": { "namespace": ns, "name": name },
            "localEndpoints": count,
            "serviceProxyHealthy": healthy,
        });
        let status = if count > 0 && healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        let text = serde_json::to_string_pretty(&body).unwrap_or_default();
        (
            status,
            "application/json",
            text,
            vec![("x-content-type-options", "nosniff".into()), ("x-load-balancing-endpoint-weight", count.to_string())],
        )
    }
}

/// The set of running health-check listeners.
pub struct HealthServers {
    bind: IpAddr,
    state: Arc<HealthState>,
    tasks: BTreeMap<u16, JoinHandle<()>>,
}

impl HealthServers {
    /// Listeners will bind `bind:<healthCheckNodePort>`.
    pub fn new(bind: IpAddr, state: Arc<HealthState>) -> Self {
        Self { bind, state, tasks: BTreeMap::new() }
    }

    /// Replaces the entries and starts/stops listeners to match. Returns ports that could not be bound.
    pub async fn update(&mut self, entries: BTreeMap<u16, HealthEntry>) -> Vec<(u16, std::io::Error)> {
        let mut failed = Vec::new();
        *self.state.entries.write() = entries.clone();
        self.tasks.retain(|port, task| {
            let keep = entries.contains_key(port);
            if !keep {
                task.abort();
            }
            keep
        });
        for port in entries.keys() {
            if self.tasks.contains_key(port) {
                continue;
            }
            match TcpListener::bind(SocketAddr::new(self.bind, *port)).await {
                Ok(l) => {
                    let state = self.state.clone();
                    let p = *port;
                    let handler: Handler = Arc::new(move |_path: &str| state.respond(p));
                    self.tasks.insert(*port, tokio::spawn(serve(l, handler)));
                }
                Err(e) => failed.push((*port, e)),
            }
        }
        failed
    }
}

impl Drop for HealthServers {
    fn drop(&mut self) {
        for t in self.tasks.values() {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_response_table() {
        let s = HealthState::default();
        s.entries
            .write()
            .insert(32000, HealthEntry { namespace: "default".into(), name: "lb".into(), local_endpoints: 2 });
        s.entries
            .write()
            .insert(32001, HealthEntry { namespace: "default".into(), name: "none".into(), local_endpoints: 0 });
        // (port, proxy healthy, status)
        for (port, healthy, want) in [(32000, true, 200), (32000, false, 503), (32001, true, 503), (32002, true, 503)] {
            s.proxy_healthy.store(healthy, Ordering::Relaxed);
            let (status, _, body, headers) = s.respond(port);
            assert_eq!(status.as_u16(), want, "port {port} healthy {healthy}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["serviceProxyHealthy"], healthy);
            assert!(headers.iter().any(|(k, _)| *k == "x-load-balancing-endpoint-weight"));
        }
    }
}
