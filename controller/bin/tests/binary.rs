//! The `causeway` binary driven the way a user drives it: a manifests directory, real sockets, file edits while
//! it runs, signals. Backends are small HTTP servers on 127.0.0.1:0 started by the test.

mod common;

use common::*;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn serves_the_directory_and_applies_each_change_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (backend("a", Duration::ZERO), backend("b", Duration::ZERO));
    write_atomic(dir.path(), "app.yaml", &manifests(&[("/", "a")], &[("a", a), ("b", b)]));
    let proxy = start(dir.path());
    wait_for(
        "the first table",
        Duration::from_secs(10),
        || matches!(get(proxy.http, "app.test", "/x"), Ok((200, ref body)) if body == "a /x"),
    );

    // Add a path: served within 1 s of the write.
    write_atomic(dir.path(), "app.yaml", &manifests(&[("/", "a"), ("/b", "b")], &[("a", a), ("b", b)]));
    let took = wait_for(
        "the new /b route",
        Duration::from_secs(5),
        || matches!(get(proxy.http, "app.test", "/b/1"), Ok((200, ref body)) if body == "b /b/1"),
    );
    assert!(took < Duration::from_secs(1), "route added after {took:?}");

    // Remove it again.
    write_atomic(dir.path(), "app.yaml", &manifests(&[("/", "a")], &[("a", a), ("b", b)]));
    let took = wait_for(
        "the /b route to go",
        Duration::from_secs(5),
        || matches!(get(proxy.http, "app.test", "/b/1"), Ok((200, ref body)) if body == "a /b/1"),
    );
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
    // With dedicated worker threads (the nginx worker model), which must drain the same way.
    let mut proxy =
        start_with(&["--manifests".as_ref(), dir.path().as_os_str(), "--worker-threads".as_ref(), "2".as_ref()]);
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

/// A free TCP port on 127.0.0.1 (for Service ports, which a manifest must name before anything binds them).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn load_balancer_services_get_pool_addresses_and_l4_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let backend_addr = backend("l4", Duration::ZERO);
    let port = free_port();
    // A one-address pool on loopback: the first Service gets it, the second stays pending.
    let lb_service = |name: &str| {
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: t\nspec:\n  type: LoadBalancer\n  loadBalancerClass: causeway.dev/proxy\n  ports:\n  - port: {port}\n    targetPort: {bp}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: t\n  labels:\n    kubernetes.io/service-name: {name}\naddressType: IPv4\nports:\n- port: {bp}\nendpoints:\n- addresses: [\"127.0.0.1\"]\n",
            bp = backend_addr.port()
        )
    };
    let yaml = format!(
        "apiVersion: causeway.dev/v1alpha1\nkind: IPPool\nmetadata:\n  name: loop\nspec:\n  blocks:\n  - cidr: 127.0.99.1/32\n{}{}",
        lb_service("first"),
        lb_service("second")
    );
    write_atomic(dir.path(), "lb.yaml", &yaml);
    let proxy = start(dir.path());
    let lb: SocketAddr = format!("127.0.99.1:{port}").parse().unwrap();
    wait_for(
        "the L4 listener on the allocated address",
        Duration::from_secs(10),
        || matches!(get(lb, "anything", "/via-l4"), Ok((200, ref body)) if body == "l4 /via-l4"),
    );
    let (_, metrics) = get(proxy.admin, "localhost", "/metrics").unwrap();
    for line in [
        r#"causeway_lb_pool_addresses{pool="loop",state="total"} 1"#,
        r#"causeway_lb_pool_addresses{pool="loop",state="used"} 1"#,
        "causeway_lb_services_pending 1",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    let (_, routes) = get(proxy.admin, "localhost", "/debug/routes").unwrap();
    assert!(
        routes.contains("Service t/second") || routes.contains("\"second\""),
        "no diagnostic for the pending Service: {routes}"
    );
}
