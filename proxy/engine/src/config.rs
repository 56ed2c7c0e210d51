//! Listener addresses, timeouts and limits of the proxy.

use std::net::SocketAddr;
use std::time::Duration;

/// Everything [`crate::Proxy::bind`] needs besides the route table.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Plain-HTTP listener (`--http-addr`). Port 0 picks a free port; see [`crate::Proxy::local_addrs`].
    pub http_addr: SocketAddr,
    /// TLS listener (`--https-addr`).
    pub https_addr: SocketAddr,
    /// Port written into `ssl_redirect` Locations. `None`: no port (the client's default, 443). Set it when the
    /// HTTPS listener is reachable on another port (tests, non-root runs).
    pub redirect_https_port: Option<u16>,
    pub timeouts: Timeouts,
    pub limits: Limits,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            http_addr: SocketAddr::from(([0, 0, 0, 0], 80)),
            https_addr: SocketAddr::from(([0, 0, 0, 0], 443)),
            redirect_https_port: None,
            timeouts: Timeouts::default(),
            limits: Limits::default(),
        }
    }
}

/// Timeouts. Every one of them is a bound on waiting for a peer; none is a sleep.
#[derive(Clone, Debug)]
pub struct Timeouts {
    /// TCP connect to an endpoint. Expiry on the last attempt answers 504.
    pub connect: Duration,
    /// From sending a request upstream to receiving its response headers. Expiry answers 504.
    pub response_header: Duration,
    /// A client must finish sending request headers within this (slowloris guard, HTTP/1.1).
    pub client_header_read: Duration,
    /// A TLS handshake must finish within this.
    pub tls_handshake: Duration,
    /// An idle pooled upstream connection older than this is closed instead of reused.
    pub upstream_idle: Duration,
    /// Graceful shutdown: how long in-flight requests (and upgraded tunnels) may take before they are cut.
    pub drain: Duration,
    /// An L4 TCP connection with no bytes in either direction for this long is closed.
    pub tcp_idle: Duration,
    /// An L4 UDP flow (client address) with no datagram for this long is forgotten.
    pub udp_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            response_header: Duration::from_secs(60),
            client_header_read: Duration::from_secs(30),
            tls_handshake: Duration::from_secs(10),
            upstream_idle: Duration::from_secs(60),
            drain: Duration::from_secs(30),
            tcp_idle: Duration::from_secs(3600),
            udp_idle: Duration::from_secs(60),
        }
    }
}

/// Size and retry limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Bytes of HTTP/1.1 request line + headers; beyond it the client gets 431. hyper's floor is 8192, so smaller
    /// values are raised to it. Also the HTTP/2 header list limit.
    pub max_request_header_bytes: usize,
    /// Number of request headers (HTTP/1.1); beyond it the client gets 431.
    pub max_request_headers: usize,
    /// Request body bytes; a larger `Content-Length` (or a streamed body that grows past it) gets 413.
    /// `None`: unlimited.
    pub max_request_body_bytes: Option<u64>,
    /// Idle keep-alive connections kept per endpoint.
    pub max_idle_per_endpoint: usize,
    /// Endpoints tried when connecting fails (each a different endpoint when the backend has several).
    pub max_connect_attempts: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_header_bytes: 16 * 1024,
            max_request_headers: 100,
            max_request_body_bytes: Some(8 * 1024 * 1024),
            max_idle_per_endpoint: 256,
            max_connect_attempts: 3,
        }
    }
}
