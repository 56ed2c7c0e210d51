//! The `causeway` binary driven the way a user drives it: a manifests directory, real sockets, file edits while
//! it runs, signals. Backends are small HTTP servers on 127.0.0.1:0 started by the test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_causeway");

/// A blocking HTTP/1.1 backend that answers every request with `name path`, after `delay`.
fn backend(name: &'static str, delay: Duration) -> SocketAddr {
    backend_notifying(name, delay, None)
}

/// Like [`backend`], and tells `arrived` each time a request's headers are in.
fn backend_notifying(name: &'static str, delay: Duration, arrived: Option<mpsc::Sender<()>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
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
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).unwrap_or(0) == 0 {
                            return;
                        }
                        if header == "\r\n" {
                            break;
                        }
                    }
                    if let Some(arrived) = &arrived {
                        let _ = arrived.send(());
                    }
                    std::thread::sleep(delay);
                    let body = format!("{name} {path}");
                    let response =
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                    if stream.write_all(response.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn manifests(ingress_paths: &[(&str, &str)], backends: &[(&str, SocketAddr)]) -> String {
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
fn write_atomic(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

struct Running {
    child: Child,
    http: SocketAddr,
    admin: SocketAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `causeway run` on `dir` with every listener on port 0, and reads the bound addresses from its log.
fn start(dir: &Path) -> Running {
    let mut child = Command::new(BIN)
        .args(["run", "--manifests"])
        .arg(dir)
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
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("no Listening line");
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
fn get(addr: SocketAddr, host: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

#[test]
fn serves_the_directory_and_applies_each_change_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (backend("a", Duration::ZERO), backend("b", Duration::ZERO));
    write_atomic(dir.path(), "app.yaml", &manifests(&[("/", "a")], &[("a", a), ("b", b)]));
    let proxy = start(dir.path());
    wait_for("the first table", Duration::from_secs(10), || {
        matches!(get(proxy.http, "app.test", "/x"), Ok((200, ref body)) if body == "a /x")
    });

    // Add a path: served within 1 s of the write.
    write_atomic(dir.path(), "app.yaml", &manifests(&[("/", "a"), ("/b", "b")], &[("a", a), ("b", b)]));
    let took = wait_for("the new /b route", Duration::from_secs(5), || {
        matches!(get(proxy.http, "app.test", "/b/1"), Ok((200, ref body)) if body == "b /b/1")
    });
    assert!(took < Duration::from_secs(1), "route added after {took:?}");

    // Remove it again.
    write_atomic(dir.path(), "app.yaml", &manifests(&[("/", "a")], &[("a", a), ("b", b)]));
    let took = wait_for("the /b route to go", Duration::from_secs(5), || {
        matches!(get(proxy.http, "app.test", "/b/1"), Ok((200, ref body)) if body == "a /b/1")
    });
    assert!(took < Duration::from_secs(1), "route removed after {took:?}");

    // Unknown host: 404 from the proxy itself.
    assert_eq!(get(proxy.http, "other.test", "/").unwrap().0, 404);
}

#[test]
fn a_broken_file_is_reported_and_everything_else_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let a = backend("a", Duration::ZERO);
    write_atomic(dir.path(), "app.yaml", &manifests(&[("/", "a")], &[("a", a)]));
    let proxy = start(dir.path());
    wait_for("the first table", Duration::from_secs(10), || matches!(get(proxy.http, "app.test", "/"), Ok((200, _))));

    write_atomic(dir.path(), "broken.yaml", "apiVersion: v1\nkind: Service\nmetadata: [unclosed\n");
    wait_for("the diagnostic naming broken.yaml", Duration::from_secs(5), || {
        get(proxy.admin, "localhost", "/debug/routes").map(|(_, body)| body.contains("broken.yaml")).unwrap_or(false)
    });
    for _ in 0..20 {
        assert_eq!(get(proxy.http, "app.test", "/").unwrap(), (200, "a /".to_owned()));
    }
    let (status, metrics) = get(proxy.admin, "localhost", "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("causeway_"), "metrics: {metrics}");
    assert_eq!(get(proxy.admin, "localhost", "/readyz").unwrap().0, 200);
    assert_eq!(get(proxy.admin, "localhost", "/healthz").unwrap().0, 200);
}

#[test]
fn sigterm_drains_in_flight_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (arrived_tx, arrived) = mpsc::channel();
    let slow = backend_notifying("slow", Duration::from_millis(800), Some(arrived_tx));
    write_atomic(dir.path(), "app.yaml", &manifests(&[("/", "slow")], &[("slow", slow)]));
    let mut proxy = start(dir.path());
    wait_for("the first table", Duration::from_secs(10), || matches!(get(proxy.http, "app.test", "/"), Ok((200, _))));

    let http = proxy.http;
    while arrived.try_recv().is_ok() {}
    let in_flight = std::thread::spawn(move || get(http, "app.test", "/slow"));
    arrived.recv_timeout(Duration::from_secs(5)).expect("the request never reached the backend");
    let pid = nix::unistd::Pid::from_raw(proxy.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(in_flight.join().unwrap().unwrap(), (200, "slow /slow".to_owned()));
    let status = proxy.child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
}

#[test]
fn check_and_routes_report_diagnostics() {
    let dir = tempfile::tempdir().unwrap();
    let a: SocketAddr = "127.0.0.1:9".parse().unwrap();
    write_atomic(dir.path(), "app.yaml", &manifests(&[("/", "a"), ("/missing", "nope")], &[("a", a)]));
    let routes = Command::new(BIN).args(["routes", "--manifests"]).arg(dir.path()).output().unwrap();
    assert!(routes.status.success());
    let table: serde_json::Value = serde_json::from_slice(&routes.stdout).unwrap();
    assert_eq!(table["virtual_hosts"][0]["host"], "app.test");
    let diagnostics = table["diagnostics"].to_string();
    assert!(diagnostics.contains("nope"), "diagnostics: {diagnostics}");

    let check = Command::new(BIN).args(["check", "--manifests"]).arg(dir.path()).output().unwrap();
    assert_eq!(check.status.code(), Some(1), "{}", String::from_utf8_lossy(&check.stdout));
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(text.contains("Ingress t/web") && text.contains("nope"), "{text}");

    write_atomic(dir.path(), "app.yaml", &manifests(&[("/", "a")], &[("a", a)]));
    let check = Command::new(BIN).args(["check", "--manifests"]).arg(dir.path()).output().unwrap();
    assert_eq!(check.status.code(), Some(0), "{}", String::from_utf8_lossy(&check.stdout));
}
