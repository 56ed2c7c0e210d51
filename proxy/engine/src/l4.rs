//! L4 listeners: TCP and UDP forwarding for `RouteTable::l4_listeners` (Services of
//! `loadBalancerClass: causeway.dev/proxy`).
//!
//! Listeners are opened and closed live by [`L4Manager::reconcile`] after every table swap. A listener looks
//! the table up once per TCP connection (or once per UDP flow), so a swap never touches an open connection:
//! it keeps the endpoint it was given until it ends or idles out. A listener whose entry disappears stops
//! accepting; its open connections are left to finish. Addresses are bound with `IP_FREEBIND`, so a
//! LoadBalancer address that is not (yet) on this node can still be listened on.

use crate::config::{Limits, Timeouts};
use crate::metrics::Metrics;
use crate::table::{CompiledTable, L4Route};
use arc_swap::ArcSwap;
use causeway_model::{Diagnostic, L4Protocol, ObjectRef};
use parking_lot::Mutex;
use prometheus::{IntCounter, IntGauge};
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

type Key = (L4Protocol, SocketAddr);

/// Opens and closes L4 listeners as tables change, and drains their connections on shutdown.
pub(crate) struct L4Manager {
    inner: Arc<Inner>,
    open: Mutex<HashMap<Key, OpenListener>>,
    drain_rx: Mutex<Option<mpsc::Receiver<()>>>,
}

struct Inner {
    metrics: Metrics,
    table: Arc<ArcSwap<CompiledTable>>,
    timeouts: Timeouts,
    limits: Limits,
    runtime: tokio::runtime::Handle,
    cut: watch::Sender<bool>,
    drain: Mutex<Option<mpsc::Sender<()>>>,
}

struct OpenListener {
    local: SocketAddr,
    /// Dropping it stops the accept loop and closes the socket.
    _close: oneshot::Sender<()>,
}

impl L4Manager {
    /// Must be called inside a tokio runtime (listeners are spawned on it, whichever thread stores a table).
    pub fn new(metrics: Metrics, table: Arc<ArcSwap<CompiledTable>>, timeouts: Timeouts, limits: Limits) -> Self {
        let (drain_tx, drain_rx) = mpsc::channel(1);
        let inner = Arc::new(Inner {
            metrics,
            table,
            timeouts,
            limits,
            runtime: tokio::runtime::Handle::current(),
            cut: watch::channel(false).0,
            drain: Mutex::new(Some(drain_tx)),
        });
        Self { inner, open: Mutex::new(HashMap::new()), drain_rx: Mutex::new(Some(drain_rx)) }
    }

    /// Opens listeners the table has and we do not, closes those it no longer has. A listener that cannot be
    /// bound is a diagnostic; the next reconcile tries again.
    pub fn reconcile(&self, table: &CompiledTable) -> Vec<Diagnostic> {
        let mut diags = Vec::new();
        let mut open = self.open.lock();
        let Some(drain) = self.inner.drain.lock().clone() else {
            // Shutting down: open nothing new.
            return diags;
        };
        open.retain(|key, _| table.l4.contains_key(key));
        for (key, route) in &table.l4 {
            if open.contains_key(key) {
                continue;
            }
            match self.open_listener(*key, drain.clone()) {
                Ok(l) => {
                    tracing::info!(message = "L4 listener open.", protocol = ?key.0, listen = %l.local, service = %route.service);
                    open.insert(*key, l);
                }
                Err(error) => {
                    tracing::warn!(message = "Cannot open L4 listener.", protocol = ?key.0, listen = %key.1, %error);
                    diags.push(Diagnostic::error(
                        ObjectRef::new("Service", &route.service.namespace, &route.service.name),
                        "spec.ports",
                        format!("cannot listen on {:?} {}: {error}", key.0, key.1),
                    ));
                }
            }
        }
        self.inner.metrics.l4_listeners.set(open.len() as i64);
        diags
    }

    fn open_listener(&self, key: Key, drain: mpsc::Sender<()>) -> io::Result<OpenListener> {
        let (protocol, addr) = key;
        let socket = match protocol {
            L4Protocol::Tcp => Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?,
            L4Protocol::Udp => Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?,
        };
        socket.set_reuse_address(true)?;
        // Best effort: lets a LoadBalancer address be listened on before it is assigned to this node.
        let _ = match addr {
            SocketAddr::V4(_) => socket.set_freebind_v4(true),
            SocketAddr::V6(_) => socket.set_freebind_v6(true),
        };
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        let (close_tx, close_rx) = oneshot::channel();
        let inner = self.inner.clone();
        let _guard = self.inner.runtime.enter();
        let local = match protocol {
            L4Protocol::Tcp => {
                socket.listen(1024)?;
                let listener = TcpListener::from_std(socket.into())?;
                let local = listener.local_addr()?;
                self.inner.runtime.spawn(accept_tcp(inner, key, listener, close_rx, drain));
                local
            }
            L4Protocol::Udp => {
                let udp = UdpSocket::from_std(socket.into())?;
                let local = udp.local_addr()?;
                self.inner.runtime.spawn(serve_udp(inner, key, Arc::new(udp), close_rx));
                local
            }
        };
        Ok(OpenListener { local, _close: close_tx })
    }

    /// Stops accepting: closes every listener and opens no more. Returns a receiver that yields `None` once every
    /// L4 connection has ended.
    pub fn stop(&self) -> Option<mpsc::Receiver<()>> {
        self.open.lock().clear();
        self.inner.metrics.l4_listeners.set(0);
        self.inner.drain.lock().take();
        self.drain_rx.lock().take()
    }

    /// Cuts the connections still open after the drain bound.
    pub fn cut(&self) {
        let _ = self.inner.cut.send(true);
    }

    /// (protocol, configured address, bound address) of each open listener.
    pub fn local_addrs(&self) -> Vec<(L4Protocol, SocketAddr, SocketAddr)> {
        let mut out: Vec<_> = self.open.lock().iter().map(|((p, a), l)| (*p, *a, l.local)).collect();
        out.sort();
        out
    }
}

/// The current table's route for a listener (once per connection or flow).
fn route_of(inner: &Inner, key: &Key) -> Option<Arc<L4Route>> {
    inner.table.load().l4.get(key).cloned()
}

fn service_label(route: &L4Route) -> String {
    format!("{}/{}:{}", route.service.namespace, route.service.name, route.service.port)
}

fn proto_label(p: L4Protocol) -> &'static str {
    match p {
        L4Protocol::Tcp => "tcp",
        L4Protocol::Udp => "udp",
    }
}

/// Pre-resolved per-connection metric handles.
struct ConnStats {
    active: IntGauge,
    rx: IntCounter,
    tx: IntCounter,
}

impl ConnStats {
    fn new(m: &Metrics, route: &L4Route, protocol: L4Protocol) -> Self {
        let (svc, proto) = (service_label(route), proto_label(protocol));
        m.l4_connections.with_label_values(&[&svc, proto]).inc();
        let active = m.l4_active.with_label_values(&[&svc, proto]);
        active.inc();
        Self {
            active,
            rx: m.l4_bytes.with_label_values(&[&svc, proto, "from_client"]),
            tx: m.l4_bytes.with_label_values(&[&svc, proto, "to_client"]),
        }
    }
}

impl Drop for ConnStats {
    fn drop(&mut self) {
        self.active.dec();
    }
}

// === TCP ===

async fn accept_tcp(
    inner: Arc<Inner>,
    key: Key,
    listener: TcpListener,
    mut close: oneshot::Receiver<()>,
    drain: mpsc::Sender<()>,
) {
    loop {
        tokio::select! {
            biased;
            _ = &mut close => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(tcp_connection(inner.clone(), key, stream, drain.clone()));
                }
                Err(error) => {
                    tracing::warn!(message = "L4 accept failed.", %error);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        }
    }
    tracing::info!(message = "L4 listener closed.", protocol = ?key.0, listen = %key.1);
}

async fn tcp_connection(inner: Arc<Inner>, key: Key, client: TcpStream, _drain: mpsc::Sender<()>) {
    let Some(route) = route_of(&inner, &key) else { return };
    let n = route.endpoints.len();
    if n == 0 {
        // No endpoint: close at once, as kube-proxy's REJECT would.
        return;
    }
    let connect_errors = inner.metrics.l4_connect_errors.with_label_values(&[&service_label(&route), "tcp"]);
    let start = route.next_index();
    let mut upstream = None;
    for attempt in 0..inner.limits.max_connect_attempts.clamp(1, n) {
        let endpoint = route.endpoints[(start + attempt) % n];
        match tokio::time::timeout(inner.timeouts.connect, TcpStream::connect(endpoint)).await {
            Ok(Ok(s)) => {
                upstream = Some(s);
                break;
            }
            Ok(Err(error)) => tracing::debug!(message = "L4 connect failed.", %endpoint, %error),
            Err(_) => tracing::debug!(message = "L4 connect timed out.", %endpoint),
        }
        connect_errors.inc();
    }
    let Some(upstream) = upstream else { return };
    let _ = upstream.set_nodelay(true);
    let stats = ConnStats::new(&inner.metrics, &route, L4Protocol::Tcp);
    let epoch = Instant::now();
    let activity = AtomicU64::new(0);
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let both = async {
        tokio::join!(
            pump(&mut cr, &mut uw, &activity, epoch, &stats.rx),
            pump(&mut ur, &mut cw, &activity, epoch, &stats.tx)
        )
    };
    let mut cut = inner.cut.subscribe();
    tokio::select! {
        _ = both => {}
        _ = idle(&activity, epoch, inner.timeouts.tcp_idle) => {
            tracing::debug!(message = "L4 connection idle; closing.", service = %route.service);
        }
        _ = cut.wait_for(|c| *c) => {}
    }
}

/// Copies one direction until EOF (then half-closes the other side) or an error.
async fn pump<R, W>(from: &mut R, to: &mut W, activity: &AtomicU64, epoch: Instant, bytes: &IntCounter)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        bytes.inc_by(n as u64);
        activity.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    let _ = to.shutdown().await;
}

/// Resolves once nothing has moved for `limit`.
async fn idle(activity: &AtomicU64, epoch: Instant, limit: Duration) {
    loop {
        let last = Duration::from_millis(activity.load(Ordering::Relaxed));
        let deadline = epoch + last + limit;
        tokio::time::sleep_until(deadline).await;
        if Duration::from_millis(activity.load(Ordering::Relaxed)) == last {
            return;
        }
    }
}

// === UDP ===

struct Flow {
    upstream: Arc<UdpSocket>,
    activity: Arc<AtomicU64>,
    from_client: IntCounter,
}

async fn serve_udp(inner: Arc<Inner>, key: Key, socket: Arc<UdpSocket>, mut close: oneshot::Receiver<()>) {
    let flows: Arc<Mutex<HashMap<SocketAddr, Flow>>> = Arc::new(Mutex::new(HashMap::new()));
    let epoch = Instant::now();
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, client) = tokio::select! {
            biased;
            _ = &mut close => break,
            received = socket.recv_from(&mut buf) => match received {
                Ok(r) => r,
                // ICMP errors from earlier sends surface here; they concern one client, not the listener.
                Err(_) => continue,
            },
        };
        let existing =
            flows.lock().get(&client).map(|f| (f.upstream.clone(), f.activity.clone(), f.from_client.clone()));
        let (upstream, activity, from_client) = match existing {
            Some(f) => f,
            None => match new_flow(&inner, &key, client, &socket, &flows, epoch).await {
                Some(f) => f,
                None => continue,
            },
        };
        if upstream.send(&buf[..n]).await.is_ok() {
            from_client.inc_by(n as u64);
            activity.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
    }
    // Closing the listener ends its flows too: their reply tasks see the map cleared.
    flows.lock().clear();
    tracing::info!(message = "L4 listener closed.", protocol = ?key.0, listen = %key.1);
}

/// Starts a flow for a new client: picks an endpoint (round-robin), connects a socket to it and spawns the task
/// relaying replies back to the client until the flow idles out.
async fn new_flow(
    inner: &Arc<Inner>,
    key: &Key,
    client: SocketAddr,
    listener: &Arc<UdpSocket>,
    flows: &Arc<Mutex<HashMap<SocketAddr, Flow>>>,
    epoch: Instant,
) -> Option<(Arc<UdpSocket>, Arc<AtomicU64>, IntCounter)> {
    let route = route_of(inner, key)?;
    let n = route.endpoints.len();
    if n == 0 {
        return None;
    }
    let endpoint = route.endpoints[route.next_index() % n];
    let bind: SocketAddr = if endpoint.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let upstream = match UdpSocket::bind(bind).await {
        Ok(s) => s,
        Err(_) => return None,
    };
    if upstream.connect(endpoint).await.is_err() {
        inner.metrics.l4_connect_errors.with_label_values(&[&service_label(&route), "udp"]).inc();
        return None;
    }
    let upstream = Arc::new(upstream);
    let activity = Arc::new(AtomicU64::new(epoch.elapsed().as_millis() as u64));
    let stats = ConnStats::new(&inner.metrics, &route, L4Protocol::Udp);
    let from_client = stats.rx.clone();
    flows.lock().insert(
        client,
        Flow { upstream: upstream.clone(), activity: activity.clone(), from_client: from_client.clone() },
    );
    let (inner, listener, flows, up, act) =
        (inner.clone(), listener.clone(), flows.clone(), upstream.clone(), activity.clone());
    tokio::spawn(async move {
        let mut cut = inner.cut.subscribe();
        let mut buf = vec![0u8; 65_536];
        let relay = async {
            loop {
                let Ok(n) = up.recv(&mut buf).await else { break };
                if listener.send_to(&buf[..n], client).await.is_err() {
                    break;
                }
                stats.tx.inc_by(n as u64);
                act.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
            }
        };
        tokio::select! {
            _ = relay => {}
            _ = idle(&act, epoch, inner.timeouts.udp_idle) => {}
            _ = cut.wait_for(|c| *c) => {}
        }
        let mut flows = flows.lock();
        if flows.get(&client).is_some_and(|f| Arc::ptr_eq(&f.upstream, &up)) {
            flows.remove(&client);
        }
        drop(stats);
    });
    Some((upstream, activity, from_client))
}
