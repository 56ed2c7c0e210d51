//! Keep-alive HTTP/1.1 connections to endpoints, one small LIFO pool per endpoint address.
//!
//! Pools live in the [`crate::table::Compiler`]'s registry and are shared by every table that names the
//! endpoint, so a table swap keeps warm connections. The pool lock is held only to push or pop one sender.

use crate::body::UpBody;
use crate::table::CompiledBackend;
use http_body::Body as _;
use hyper::Request;
use hyper::Response;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// The sending half of an HTTP/1.1 connection to an endpoint.
pub(crate) type UpstreamSender = hyper::client::conn::http1::SendRequest<UpBody>;

/// Pool and connect settings, from [`crate::ProxyConfig`].
#[derive(Clone, Debug)]
pub(crate) struct PoolSettings {
    pub max_idle: usize,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self { max_idle: 64, idle_timeout: Duration::from_secs(60), connect_timeout: Duration::from_secs(5) }
    }
}

/// Idle connections to one endpoint.
pub(crate) struct EndpointPool {
    addr: SocketAddr,
    settings: PoolSettings,
    idle: Mutex<Vec<(UpstreamSender, Instant)>>,
}

/// Why a connection to an endpoint could not be made.
#[derive(Debug)]
pub(crate) enum ConnectError {
    Timeout,
    Io(std::io::Error),
    Handshake(hyper::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Timeout => f.write_str("connect timed out"),
            ConnectError::Io(e) => write!(f, "connect failed: {e}"),
            ConnectError::Handshake(e) => write!(f, "HTTP/1.1 handshake failed: {e}"),
        }
    }
}

impl EndpointPool {
    pub fn new(addr: SocketAddr, settings: PoolSettings) -> Self {
        Self { addr, settings, idle: Mutex::new(Vec::new()) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The most recently used idle connection that is still open and not too old.
    fn checkout(&self) -> Option<UpstreamSender> {
        let mut idle = self.idle.lock();
        while let Some((sender, since)) = idle.pop() {
            if !sender.is_closed() && since.elapsed() < self.settings.idle_timeout {
                return Some(sender);
            }
        }
        None
    }

    /// Returns a connection whose last response has been read completely.
    pub fn checkin(&self, sender: UpstreamSender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock();
        if idle.len() < self.settings.max_idle {
            idle.push((sender, Instant::now()));
        }
    }

    /// Opens a new connection; its driver task runs until the endpoint or we close it.
    async fn connect(&self) -> Result<UpstreamSender, ConnectError> {
        let stream = match tokio::time::timeout(self.settings.connect_timeout, TcpStream::connect(self.addr)).await {
            Err(_) => return Err(ConnectError::Timeout),
            Ok(Err(e)) => return Err(ConnectError::Io(e)),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(ConnectError::Handshake)?;
        tokio::spawn(async move {
            if let Err(error) = conn.with_upgrades().await {
                tracing::debug!(message = "Upstream connection ended with an error.", %error);
            }
        });
        Ok(sender)
    }
}

/// How forwarding a request failed.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No endpoint accepted a connection; `timed_out` when the last attempt timed out.
    Connect { timed_out: bool },
    /// The response headers did not arrive in time.
    ResponseTimeout,
    /// The endpoint failed after the request was (possibly) sent.
    Upstream(hyper::Error),
}

/// A response from an endpoint and the connection to give back once its body is read.
pub(crate) struct Sent {
    pub response: Response<Incoming>,
    pub sender: UpstreamSender,
    pub pool: Arc<EndpointPool>,
}

/// Sends `req` to the backend's next endpoint in round-robin order, reusing an idle connection when there is
/// one. A connect failure moves on to the next endpoint, at most `max_attempts` endpoints in all. A request is
/// sent twice only when it is idempotent, has no body, and its first try was on a reused keep-alive connection
/// that failed before answering (the endpoint closed it as we sent: the classic keep-alive race); the second
/// try is on a new connection. Any other failure after hyper took the request is final.
pub(crate) async fn send(
    backend: &CompiledBackend,
    mut req: Request<UpBody>,
    max_attempts: usize,
    response_timeout: Duration,
    on_connect_error: impl Fn(),
) -> Result<Sent, SendError> {
    let n = backend.endpoints.len();
    let start = backend.next_index();
    let mut timed_out = false;
    for attempt in 0..max_attempts.clamp(1, n.max(1)) {
        let Some(pool) = backend.endpoints.get((start + attempt) % n.max(1)) else { break };
        // Idle connections first; one the endpoint has closed hands the request back untouched.
        while let Some(mut sender) = pool.checkout() {
            if sender.ready().await.is_err() {
                continue;
            }
            let replay = replayable_copy(&req);
            match try_send(&mut sender, req, response_timeout).await {
                Ok(response) => return Ok(Sent { response, sender, pool: pool.clone() }),
                Err(Attempt::Unsent(r)) => req = r,
                Err(Attempt::Failed(SendError::Upstream(error))) => match replay {
                    Some(copy) => {
                        tracing::debug!(message = "Reused connection failed; retrying on a new one.", %error);
                        req = copy;
                        break;
                    }
                    None => return Err(SendError::Upstream(error)),
                },
                Err(Attempt::Failed(e)) => return Err(e),
            }
        }
        let mut sender = match pool.connect().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(message = "Connect to endpoint failed.", endpoint = %pool.addr(), error = %e);
                timed_out = matches!(e, ConnectError::Timeout);
                on_connect_error();
                continue;
            }
        };
        if sender.ready().await.is_err() {
            on_connect_error();
            continue;
        }
        match try_send(&mut sender, req, response_timeout).await {
            Ok(response) => return Ok(Sent { response, sender, pool: pool.clone() }),
            Err(Attempt::Unsent(r)) => {
                on_connect_error();
                req = r;
            }
            Err(Attempt::Failed(e)) => return Err(e),
        }
    }
    Err(SendError::Connect { timed_out })
}

/// A copy to replay if `req` is idempotent, bodiless and not an upgrade; `None` otherwise.
fn replayable_copy(req: &Request<UpBody>) -> Option<Request<UpBody>> {
    use http::Method;
    let idempotent =
        matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE);
    if !idempotent || !req.body().is_end_stream() || req.headers().contains_key(http::header::UPGRADE) {
        return None;
    }
    let mut copy = Request::new(UpBody::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

// The request travels back by value on the rare "not sent" path; boxing it would cost every request an allocation.
#[allow(clippy::large_enum_variant)]
enum Attempt {
    Unsent(Request<UpBody>),
    Failed(SendError),
}

async fn try_send(
    sender: &mut UpstreamSender,
    req: Request<UpBody>,
    response_timeout: Duration,
) -> Result<Response<Incoming>, Attempt> {
    match tokio::time::timeout(response_timeout, sender.try_send_request(req)).await {
        Err(_) => Err(Attempt::Failed(SendError::ResponseTimeout)),
        Ok(Ok(response)) => Ok(response),
        Ok(Err(mut e)) => match e.take_message() {
            Some(req) => Err(Attempt::Unsent(req)),
            None => Err(Attempt::Failed(SendError::Upstream(e.into_error()))),
        },
    }
}
