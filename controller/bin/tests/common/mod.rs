//! Helpers shared by the binary's tests: backends, manifests, starting `causeway`, plain HTTP/1.1 requests.
#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_causeway");

/// A blocking HTTP/1.1 backend that answers every request with `name path`, after `delay`.
pub fn backend(name: &'static str, delay: Duration) -> SocketAddr {
    backend_notifying(name, delay, None)
}

/// Like [`backend`], and tells `arrived` each time a request's headers are in.
pub fn backend_notifying(name: &'static str, delay: Duration, arrived: Option<mpsc::Sender<()>>) -> SocketAddr {
    backend_at("127.0.0.1", name, delay, arrived)
}

/// Like [`backend_notifying`], listening on `ip` (port 0).
pub fn backend_at(ip: &str, name: &'static str, delay: Duration, arrived: Option<mpsc::Sender<()>>) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let arrived = arrived.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = request_line.split_whitespace().nth(1).unwrap_or("?").to_owned();
                    let mut close = false;
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).unwrap_or(0) == 0 {
                            return;
                        }
                        if header == "\r\n" {
                            break;
                        }
                        close |= header.to_ascii_lowercase().starts_with("connection: close");
                    }
                    if let Some(arrived) = &arrived {
                        let _ = arrived.send(());
                    }
                    std::thread::sleep(delay);
                    let body = format!("{name} {path}");
                    let response = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                    if stream.write_all(response.as_bytes()).is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    addr
}

pub fn manifests(ingress_paths: &[(&str, &str)], backends: &[(&str, SocketAddr)]) -> String {
    let mut out = String::from(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: causeway\n  annotations:\n    ingressclass.kubernetes.io/is-default-class: \"true\"\nspec:\n  controller: causeway.dev/ingress-controller\n",
    );
    for (svc, addr) in backends {
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {svc}\n  namespace: t\nspec:\n  ports:\n  - port: 80\n    targetPort: {port}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {svc}-1\n  namespace: t\n  labels:\n    kubernetes.io/service-name: {svc}\naddressType: IPv4\nports:\n- port: {port}\nendpoints:\n- addresses: [\"{ip}\"]\n",
            port = addr.port(),
            ip = addr.ip()
        ));
    }
    out.push_str("---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: web\n  namespace: t\nspec:\n  rules:\n  - host: app.test\n    http:\n      paths:\n");
    for (path, svc) in ingress_paths {
        out.push_str(&format!(
            "      - path: {path}\n        pathType: Prefix\n        backend:\n          service:\n            name: {svc}\n            port:\n              number: 80\n"
        ));
    }
    out
}

/// Writes a file atomically (write + rename), the way editors and config tools do.
pub fn write_atomic(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

pub struct Running {
    pub child: Child,
    pub http: SocketAddr,
    pub admin: SocketAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `causeway run` on `dir` with every listener on port 0, and reads the bound addresses from its log.
pub fn start(dir: &Path) -> Running {
    start_with(&["--manifests".as_ref(), dir.as_os_str()])
}

/// Starts `causeway run` with `source` flags and every listener on port 0; reads the bound addresses from its log.
pub fn start_with(source: &[&std::ffi::OsStr]) -> Running {
    let mut child = Command::new(BIN)
        .arg("run")
        .args(source)
        .args(["--http-addr", "127.0.0.1:0", "--https-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
        .args(["--log-format", "json", "--drain-timeout", "10s"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
            // Never leave the process behind, even when the test fails here.
            let _ = child.kill();
            let _ = child.wait();
            panic!("causeway never logged its Listening line");
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        if v["fields"]["message"] == "Listening." {
            let http = v["fields"]["http"].as_str().unwrap().parse().unwrap();
            let admin = v["fields"]["admin"].as_str().unwrap().parse().unwrap();
            // Keep draining the log so the child never blocks on a full pipe.
            std::thread::spawn(move || while rx.recv().is_ok() {});
            return Running { child, http, admin };
        }
    }
}

/// One HTTP/1.1 request on a fresh connection; returns (status, body).
pub fn get(addr: SocketAddr, host: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

pub fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}
