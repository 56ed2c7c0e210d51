//! `causeway demo`: the edge proxy on the bundled demo manifests, with the demo backends those manifests name.
//!
//! The demo writes the embedded manifests (plus a TLS Secret for `demo.local` generated at start) into a fresh
//! directory, starts one small HTTP backend per endpoint the manifests list, and then runs exactly what
//! `causeway run --manifests <that directory>` runs. Edit the files while it runs to see live changes.

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::net::SocketAddr;
use std::path::Path;

/// The demo manifests, embedded so the demo runs from the binary alone.
pub const DEMO_MANIFESTS: &str = include_str!("../../../demo/demo.yaml");

/// The backends the demo EndpointSlices point at: (name, address).
pub const DEMO_BACKENDS: &[(&str, &str)] =
    &[("web-a", "127.0.0.1:18081"), ("web-b", "127.0.0.2:18081"), ("api", "127.0.0.1:18083")];

/// Writes the demo manifests and a freshly generated TLS Secret for `demo.local` into `dir`.
pub fn write_demo_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::write(dir.join("demo.yaml"), DEMO_MANIFESTS).context("writing demo.yaml")?;
    let cert =
        rcgen::generate_simple_self_signed(vec!["demo.local".to_owned()]).context("generating the demo certificate")?;
    // Written with `data` (base64), the form the API server stores, so the demo does not depend on `stringData`.
    let mut data = std::collections::BTreeMap::new();
    data.insert("tls.crt".to_owned(), ByteString(cert.cert.pem().into_bytes()));
    data.insert("tls.key".to_owned(), ByteString(cert.signing_key.serialize_pem().into_bytes()));
    let secret = Secret {
        metadata: ObjectMeta { name: Some("demo-tls".into()), namespace: Some("demo".into()), ..Default::default() },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Default::default()
    };
    let mut value = serde_json::to_value(&secret)?;
    if let Some(obj) = value.as_object_mut() {
        obj.insert("apiVersion".into(), "v1".into());
        obj.insert("kind".into(), "Secret".into());
    }
    std::fs::write(dir.join("demo-tls.json"), serde_json::to_vec_pretty(&value)?).context("writing demo-tls.json")?;
    Ok(())
}

/// Starts every demo backend; each answers with its own name, the method, the path and the Host it saw.
pub async fn start_backends() -> anyhow::Result<()> {
    for (name, addr) in DEMO_BACKENDS {
        let addr: SocketAddr = addr.parse().context("demo backend address")?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding demo backend {name} on {addr} (is another demo running?)"))?;
        tokio::spawn(serve_backend(name, listener));
    }
    Ok(())
}

async fn serve_backend(name: &'static str, listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| async move {
                let host = req.headers().get(hyper::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("-");
                let body = format!("{name}: {} {} (Host: {host})\n", req.method(), req.uri());
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(body))))
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
