//! Issue 7 item 5: L4 TCP/UDP listeners opened and closed live, round-robin, connect retry, idle timeouts,
//! per-Service metrics, and table swaps that do not cut open connections.

mod common;

use causeway_model::{Endpoint, L4Listener, L4Protocol, RouteTable};
use common::*;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// A TCP server that answers every read with `NAME:` + the bytes read.
async fn tcp_echo(name: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else { continue };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let mut out = format!("{name}:").into_bytes();
                    out.extend_from_slice(&buf[..n]);
                    if s.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

/// A UDP server that answers every datagram with `NAME:` + the datagram.
async fn udp_echo(name: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        loop {
            let Ok((n, from)) = s.recv_from(&mut buf).await else { continue };
            let mut out = format!("{name}:").into_bytes();
            out.extend_from_slice(&buf[..n]);
            let _ = s.send_to(&out, from).await;
        }
    });
    (addr, task)
}

fn listener(protocol: L4Protocol, listen: &str, service: &str, endpoints: &[SocketAddr]) -> L4Listener {
    L4Listener {
        protocol,
        listen: listen.parse().unwrap(),
        service: svc(service),
        endpoints: endpoints.iter().map(|&address| Endpoint { address }).collect(),
    }
}

fn l4_table(listeners: Vec<L4Listener>) -> RouteTable {
    RouteTable { l4_listeners: listeners, ..RouteTable::default() }
}

fn bound(proxy: &TestProxy, protocol: L4Protocol, listen: &str) -> Option<SocketAddr> {
    let listen: SocketAddr = listen.parse().unwrap();
    proxy.handle.l4_local_addrs().into_iter().find(|(p, l, _)| *p == protocol && *l == listen).map(|(_, _, b)| b)
}

async fn ask(s: &mut TcpStream, msg: &str) -> String {
    s.write_all(msg.as_bytes()).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn tcp_round_robin_swaps_keep_open_connections_and_listeners_close_live() {
    let ((a, _ta), (b, _tb)) = (tcp_echo("a").await, tcp_echo("b").await);
    let proxy = start_proxy(local_config()).await;
    let diags = proxy.handle.store(l4_table(vec![listener(L4Protocol::Tcp, "127.0.0.1:0", "tcp", &[a, b])]));
    assert!(diags.is_empty(), "{diags:?}");
    let addr = bound(&proxy, L4Protocol::Tcp, "127.0.0.1:0").unwrap();

    let mut names = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        names.push(ask(&mut s, "hi").await);
    }
    names.sort();
    assert_eq!(names, ["a:hi", "a:hi", "b:hi", "b:hi"]);

    // A long-lived connection survives 50 swaps that change the endpoint set back and forth.
    let mut held = TcpStream::connect(addr).await.unwrap();
    let first = ask(&mut held, "0").await;
    let held_name = first.split(':').next().unwrap().to_owned();
    for i in 1..=50 {
        let endpoints = if i % 2 == 1 { vec![a, b] } else { vec![b] };
        proxy.handle.store(l4_table(vec![listener(L4Protocol::Tcp, "127.0.0.1:0", "tcp", &endpoints)]));
        assert_eq!(bound(&proxy, L4Protocol::Tcp, "127.0.0.1:0"), Some(addr), "listener kept across swaps");
        assert_eq!(ask(&mut held, &i.to_string()).await, format!("{held_name}:{i}"));
    }
    // New connections follow the new table: only b.
    for _ in 0..3 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        assert_eq!(ask(&mut s, "x").await, "b:x");
    }

    // Removed from the table: the listener closes, the open connection stays.
    proxy.handle.store(l4_table(vec![]));
    assert!(bound(&proxy, L4Protocol::Tcp, "127.0.0.1:0").is_none());
    assert!(eventually(Duration::from_secs(5), || async { TcpStream::connect(addr).await.is_err() }).await);
    assert_eq!(ask(&mut held, "still").await, format!("{held_name}:still"));

    let m = proxy.metrics_text();
    assert!(m.contains(r#"causeway_l4_connections_total{protocol="tcp",service="default/tcp:80"} 8"#), "{m}");
    assert!(m.contains(r#"causeway_l4_active_connections{protocol="tcp",service="default/tcp:80"} 1"#), "{m}");
    assert!(m.contains(r#"causeway_l4_bytes_total{direction="from_client",protocol="tcp",service="default/tcp:80"}"#));
    assert!(m.contains("causeway_l4_listeners 0"), "{m}");
}

#[tokio::test]
async fn tcp_connect_retries_another_endpoint_and_no_endpoint_closes() {
    let (live, _t) = tcp_echo("live").await;
    let dead = dead_addr().await;
    let proxy = start_proxy(local_config()).await;
    proxy.handle.store(l4_table(vec![
        listener(L4Protocol::Tcp, "127.0.0.1:0", "mixed", &[dead, live]),
        listener(L4Protocol::Tcp, "127.0.0.2:0", "empty", &[]),
    ]));
    let addr = bound(&proxy, L4Protocol::Tcp, "127.0.0.1:0").unwrap();
    for _ in 0..6 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        assert_eq!(ask(&mut s, "q").await, "live:q");
    }
    let m = proxy.metrics_text();
    assert!(m.contains(r#"causeway_l4_connect_errors_total{protocol="tcp",service="default/mixed:80"} 3"#), "{m}");

    let empty = bound(&proxy, L4Protocol::Tcp, "127.0.0.2:0").unwrap();
    let mut s = TcpStream::connect(empty).await.unwrap();
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "closed at once");
}

#[tokio::test]
async fn tcp_idle_connections_are_closed() {
    let (a, _t) = tcp_echo("a").await;
    let mut config = local_config();
    config.timeouts.tcp_idle = Duration::from_millis(1000);
    let proxy = start_proxy(config).await;
    proxy.handle.store(l4_table(vec![listener(L4Protocol::Tcp, "127.0.0.1:0", "idle", &[a])]));
    let addr = bound(&proxy, L4Protocol::Tcp, "127.0.0.1:0").unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    // Activity keeps it open past the idle limit (5 x 300 ms > 1 s).
    let mut last = std::time::Instant::now();
    for i in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(ask(&mut s, &i.to_string()).await, format!("a:{i}"));
        last = std::time::Instant::now();
    }
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0);
    assert!(last.elapsed() >= Duration::from_millis(950), "closed {:?} after the last byte", last.elapsed());
}

#[tokio::test]
async fn udp_flows_round_robin_survive_swaps_and_idle_out() {
    let ((a, _ta), (b, _tb)) = (udp_echo("a").await, udp_echo("b").await);
    let mut config = local_config();
    config.timeouts.udp_idle = Duration::from_millis(1500);
    let proxy = start_proxy(config).await;
    proxy.handle.store(l4_table(vec![listener(L4Protocol::Udp, "127.0.0.1:0", "dns", &[a, b])]));
    let addr = bound(&proxy, L4Protocol::Udp, "127.0.0.1:0").unwrap();

    async fn exchange(c: &UdpSocket, to: SocketAddr, msg: &str) -> String {
        c.send_to(msg.as_bytes(), to).await.unwrap();
        let mut buf = [0u8; 2048];
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), c.recv_from(&mut buf)).await.unwrap().unwrap();
        assert_eq!(from, to, "replies come from the listener address");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    let c1 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let c2 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let r1 = exchange(&c1, addr, "one").await;
    let r2 = exchange(&c2, addr, "two").await;
    let n1 = r1.split(':').next().unwrap().to_owned();
    let n2 = r2.split(':').next().unwrap().to_owned();
    assert_ne!(n1, n2, "two clients, two endpoints: {r1} {r2}");

    // A flow keeps its endpoint across swaps (it only consults the table when it starts).
    for i in 0..20 {
        let endpoints = if i % 2 == 0 { vec![b] } else { vec![a] };
        proxy.handle.store(l4_table(vec![listener(L4Protocol::Udp, "127.0.0.1:0", "dns", &endpoints)]));
        assert_eq!(exchange(&c1, addr, &i.to_string()).await, format!("{n1}:{i}"));
    }
    // After the idle timeout the flow is forgotten and the next datagram follows the current table (a).
    assert!(
        eventually(Duration::from_secs(5), || async {
            proxy
                .metrics_text()
                .contains(r#"causeway_l4_active_connections{protocol="udp",service="default/dns:80"} 0"#)
        })
        .await
    );
    assert_eq!(exchange(&c1, addr, "later").await, "a:later");
    let m = proxy.metrics_text();
    assert!(m.contains(r#"causeway_l4_connections_total{protocol="udp",service="default/dns:80"} 3"#), "{m}");
}

#[tokio::test]
async fn l4_listeners_close_on_shutdown_and_bind_failures_are_diagnostics() {
    let (a, _t) = tcp_echo("a").await;
    let mut proxy = start_proxy(local_config()).await;
    // A port someone else holds.
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let diags = proxy.handle.store(l4_table(vec![
        listener(L4Protocol::Tcp, "127.0.0.1:0", "ok", &[a]),
        listener(L4Protocol::Tcp, &taken_addr, "clash", &[a]),
    ]));
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert_eq!(diags[0].object.name, "clash");
    let addr = bound(&proxy, L4Protocol::Tcp, "127.0.0.1:0").unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(ask(&mut s, "x").await, "a:x");
    drop(s);
    tokio::time::timeout(Duration::from_secs(5), proxy.begin_shutdown()).await.unwrap().unwrap().unwrap();
    assert!(TcpStream::connect(addr).await.is_err());
}
