//! A baseline for profiling only: the smallest hyper proxy (auto server + hyper-util legacy pooled client, no
//! routing, no metrics, no header rewriting). `minimal_hyper LISTEN_ADDR BACKEND_ADDR`. Compare its CPU per
//! request with `bench_proxy` to see what the engine's own layers cost.

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen: std::net::SocketAddr = args.next().ok_or("LISTEN_ADDR")?.parse()?;
    let backend: String = args.next().ok_or("BACKEND_ADDR")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    runtime.block_on(async move {
        let client: Client<_, Incoming> = Client::builder(TokioExecutor::new()).build_http();
        let listener = tokio::net::TcpListener::bind(listen).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let (client, backend) = (client.clone(), backend.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |mut req: hyper::Request<Incoming>| {
                    let client = client.clone();
                    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
                    *req.uri_mut() = format!("http://{backend}{pq}").parse().unwrap_or_default();
                    async move { client.request(req).await }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}
