//! Issue 2 item 6: the table is swapped at least 100 times under a steady request load while a WebSocket is
//! open. No request fails, the WebSocket survives, and every change is served by the next request.

mod common;

use causeway_model::PathMatch;
use common::*;
use futures::{SinkExt, StreamExt};
use http::StatusCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const SWAPS: usize = 150;
const CLIENTS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_swaps_under_load_with_an_open_websocket() {
    let backends = [echo_backend("b0").await, echo_backend("b1").await, echo_backend("b2").await];
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let proxy = start_proxy(local_config()).await;

    // Version i of the table: `load.test/` goes to a rotating, never empty subset of the endpoints; an extra
    // route and an extra host come and go; the WebSocket's route changes endpoints too.
    let version = |i: usize| {
        // Even versions never send `load.test/` to b2, so a request that b2 answers went to `/extra*`.
        let subset: Vec<_> = (0..3)
            .filter(|&k| if i.is_multiple_of(2) { k != 2 } else { !(i + k).is_multiple_of(3) })
            .map(|k| addrs[k])
            .collect();
        let mut load_routes = vec![mk_route(PathMatch::prefix("/"), "load", &subset)];
        if i % 2 == 1 {
            load_routes.push(mk_route(PathMatch::prefix(&format!("/extra{i}")), "extra", &[addrs[2]]));
        }
        let mut hosts = vec![
            vhost("load.test", load_routes),
            vhost("ws.test", vec![mk_route(PathMatch::prefix("/"), "ws", &addrs[..1 + i % 3])]),
        ];
        if i.is_multiple_of(3) {
            hosts.push(vhost(&format!("h{i}.test"), vec![mk_route(PathMatch::prefix("/"), "tmp", &[addrs[1]])]));
        }
        table(hosts)
    };
    proxy.handle.store(version(0));

    let stream = tokio::net::TcpStream::connect(proxy.http).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async("ws://ws.test/ws", stream).await.unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (done, ok, failed, http) = (done.clone(), ok.clone(), failed.clone(), proxy.http);
        clients.push(tokio::spawn(async move {
            let mut conn = H1::connect(http).await;
            // Bounded in count as well as by the swapper finishing.
            for n in 0..200_000usize {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                // Every 50th request on a fresh connection, the rest on a kept-alive one.
                if (n + c) % 50 == 0 {
                    conn = H1::connect(http).await;
                }
                match conn.send(get_req("load.test", "/")).await {
                    Ok(a) if a.status == StatusCode::OK => ok.fetch_add(1, Ordering::SeqCst),
                    other => {
                        eprintln!("failed request: {:?}", other.map(|a| (a.status, a.body)));
                        failed.fetch_add(1, Ordering::SeqCst)
                    }
                };
            }
        }));
    }

    let started = std::time::Instant::now();
    for i in 1..=SWAPS {
        // Pace the swaps by the load: at least a few requests complete between two swaps.
        let before = ok.load(Ordering::SeqCst) + failed.load(Ordering::SeqCst);
        let progressed = eventually(Duration::from_secs(10), || {
            let (ok, failed) = (ok.clone(), failed.clone());
            async move { ok.load(Ordering::SeqCst) + failed.load(Ordering::SeqCst) >= before + 4 }
        })
        .await;
        assert!(progressed, "load stalled at swap {i}");
        proxy.handle.store(version(i));

        // The change is served by the very next request.
        if i % 2 == 1 {
            let a = get(proxy.http, "load.test", &format!("/extra{i}")).await;
            assert_eq!((a.status, a.backend()), (StatusCode::OK, "b2".to_owned()), "swap {i}");
        } else {
            let a = get(proxy.http, "load.test", &format!("/extra{}", i - 1)).await;
            assert_eq!(a.status, StatusCode::OK);
            assert_ne!(a.backend(), "b2", "route /extra{} is gone at swap {i}", i - 1);
        }
        let removed_host = get(proxy.http, &format!("h{}.test", i - 1), "/").await.status;
        assert_eq!(removed_host, StatusCode::NOT_FOUND, "host of version {} is gone at swap {i}", i - 1);

        if i % 10 == 0 {
            ws.send(Message::text(format!("swap {i}"))).await.unwrap();
            let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
            assert_eq!(echoed.into_text().unwrap().as_str(), format!("swap {i}"));
        }
    }
    done.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    let elapsed = started.elapsed();

    ws.send(Message::text("after")).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "after");

    let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    eprintln!("{SWAPS} swaps in {elapsed:?}: {ok} requests ok, {failed} failed");
    assert_eq!(failed, 0);
    assert!(ok >= SWAPS * 4, "{ok} requests");
    assert!(proxy.metrics_text().contains(&format!("causeway_route_table_swaps_total {}", SWAPS + 1)));
    // Every backend took part.
    for b in &backends {
        assert!(b.requests.load(Ordering::SeqCst) > 0, "{} got no request", b.name);
    }
}
