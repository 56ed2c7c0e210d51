//! The proxy engine alone, for benchmarking and profiling without the controller:
//! `bench_proxy LISTEN_ADDR BACKEND_ADDR [WORKER_THREADS] [serve|threads]` routes every request to
//! BACKEND_ADDR. `serve` (the default): `Proxy::serve` on a multi-thread runtime with WORKER_THREADS workers
//! (0: a current-thread runtime). `threads`: `Proxy::serve_on_threads(WORKER_THREADS)`.
//! `tests/bench/l7.sh` uses it when `CAUSEWAY_ENGINE_ONLY=1`.

use causeway_model::{
    Backend, Endpoint, HostPattern, ObjectRef, PathMatch, Route, RouteTable, ServiceRef, VirtualHost,
};
use causeway_proxy::{Proxy, ProxyConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bench_proxy LISTEN_ADDR BACKEND_ADDR [WORKER_THREADS]";
    let listen = args.next().ok_or(usage)?.parse()?;
    let backend = args.next().ok_or(usage)?.parse()?;
    let workers: usize = args.next().map(|w| w.parse()).transpose()?.unwrap_or(1);
    let on_threads = args.next().as_deref() == Some("threads");
    // 0 worker threads: a current-thread runtime (everything on the main thread).
    let runtime = if workers == 0 || on_threads {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()?
    };
    runtime.block_on(async move {
        let config = ProxyConfig { http_addr: listen, https_addr: "127.0.0.1:0".parse()?, ..ProxyConfig::default() };
        let proxy = Proxy::bind(config, &prometheus::Registry::new()).await?;
        proxy.store(RouteTable {
            virtual_hosts: vec![VirtualHost {
                host: HostPattern::Any,
                routes: vec![Route {
                    path: PathMatch::prefix("/"),
                    backend: Backend {
                        service: ServiceRef { namespace: "bench".into(), name: "nginx".into(), port: 80 },
                        endpoints: vec![Endpoint { address: backend }],
                    },
                    ingress: ObjectRef::new("Ingress", "bench", "bench"),
                    ssl_redirect: false,
                }],
            }],
            ..RouteTable::default()
        });
        eprintln!("bench_proxy: {} -> {backend}", proxy.local_addrs().http);
        let stop = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        if on_threads {
            proxy.serve_on_threads(workers, stop).await?
        } else {
            proxy.serve(stop).await?
        }
        Ok(())
    })
}
