//! `causeway run --kubeconfig` against a real kube-apiserver and etcd (`tests/cluster/`): objects created through
//! the API are served, Ingress status is written, and an API server outage under load fails no request.

mod common;

use causeway_test_support::{ControlPlane, TestNetns};
use common::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// kubectl as the admin user, for reads that are polled: its output, empty when it fails (the object may not
/// exist yet).
fn read(plane: &ControlPlane, args: &[&str]) -> String {
    plane.try_kubectl(args, None).unwrap_or_default()
}

/// The objects of [`manifests`] plus the Namespace the API server requires.
fn cluster_objects(paths: &[(&str, &str)], backends: &[(&str, SocketAddr)]) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: t\n---\n{}", manifests(paths, backends))
}

/// An endpoint address on `lo` of the test's own network namespace ([`TestNetns`]). The API server refuses
/// loopback endpoint addresses, so the backends need a real one; the whole test (control plane, proxy, backends,
/// clients) runs inside that namespace, and the host's namespace is never touched.
const POD_IP: &str = "10.244.250.1";

#[test]
fn serves_the_cluster_writes_status_and_survives_an_api_outage_under_load() {
    let _netns = TestNetns::enter("cw-bin-", &[POD_IP.parse().expect("POD_IP is an address")]);
    let plane = ControlPlane::start();
    let (a, b) = (backend_at(POD_IP, "a", Duration::ZERO, None), backend_at(POD_IP, "b", Duration::ZERO, None));
    plane.apply(&cluster_objects(&[("/", "a")], &[("a", a), ("b", b)]));

    let kubeconfig = PathBuf::from(plane.kubeconfig());
    let proxy = start_with(&[
        "--kubeconfig".as_ref(),
        kubeconfig.as_os_str(),
        "--publish-address".as_ref(),
        "127.0.0.1".as_ref(),
        "--lease-namespace".as_ref(),
        "default".as_ref(),
        "--node-name".as_ref(),
        "node-p".as_ref(),
    ]);
    wait_for(
        "the first table from the API",
        Duration::from_secs(20),
        || matches!(get(proxy.http, "app.test", "/x"), Ok((200, ref body)) if body == "a /x"),
    );

    // `--node-name`: the proxy's heartbeat Lease, which the node agents read to announce proxy-class addresses.
    let proxy_heartbeat = || {
        let jsonpath = "jsonpath={.metadata.labels.causeway\\.dev/heartbeat}/{.spec.holderIdentity}";
        read(&plane, &["-n", "default", "get", "lease", "causeway-proxy-node-p", "-o", jsonpath])
    };
    wait_for("the proxy's heartbeat Lease", Duration::from_secs(10), || proxy_heartbeat() == "proxy/node-p");

    // A change through the API is served within a second.
    plane.apply(&cluster_objects(&[("/", "a"), ("/b", "b")], &[("a", a), ("b", b)]));
    let took = wait_for(
        "the /b route",
        Duration::from_secs(10),
        || matches!(get(proxy.http, "app.test", "/b/1"), Ok((200, ref body)) if body == "b /b/1"),
    );
    assert!(took < Duration::from_secs(1), "the API change was served after {took:?}");

    // The leader writes Ingress status.
    wait_for("Ingress status", Duration::from_secs(20), || {
        read(&plane, &["-n", "t", "get", "ingress", "web", "-o", "jsonpath={.status.loadBalancer.ingress[*].ip}"])
            == "127.0.0.1"
    });

    // Steady load while the API server goes away and comes back.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, ok, failed, http) = (stop.clone(), ok.clone(), failed.clone(), proxy.http);
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                match get(http, "app.test", "/steady") {
                    Ok((200, body)) if body == "a /steady" => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        failures.push(format!("{other:?}"));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                std::thread::sleep(Duration::from_millis(5));
            }
            failures
        })
    };
    let served_since = |n: u64| {
        let target = ok.load(Ordering::Relaxed) + n;
        wait_for("requests to be served", Duration::from_secs(20), || ok.load(Ordering::Relaxed) >= target);
    };
    served_since(50);
    plane.stop_apiserver();
    served_since(200); // the proxy keeps serving the last table while the API is down
    plane.start_apiserver();

    // A change made after the outage takes effect once the watchers resync.
    plane.apply(&cluster_objects(&[("/", "a"), ("/b", "b"), ("/c", "b")], &[("a", a), ("b", b)]));
    wait_for(
        "the /c route after the outage",
        Duration::from_secs(30),
        || matches!(get(proxy.http, "app.test", "/c"), Ok((200, ref body)) if body == "b /c"),
    );
    served_since(50);
    stop.store(true, Ordering::Relaxed);
    let failures = load.join().unwrap();
    assert_eq!(failed.load(Ordering::Relaxed), 0, "failed requests during the outage: {failures:?}");
    assert!(ok.load(Ordering::Relaxed) >= 350);

    // SIGTERM: the drain starts and the heartbeat is released at once (the agents move proxy-class addresses).
    let out = Command::new("kill").args(["-TERM", &proxy.child.id().to_string()]).output().expect("kill");
    assert!(out.status.success(), "kill -TERM: {}", String::from_utf8_lossy(&out.stderr));
    wait_for("the proxy's heartbeat released", Duration::from_secs(10), || proxy_heartbeat() == "proxy/");
}

// === LoadBalancer address pools in a real cluster ===

/// The Events of `namespace` as JSON objects (`events.k8s.io/v1`).
fn events(plane: &ControlPlane, namespace: &str) -> Vec<serde_json::Value> {
    let out = read(plane, &["-n", namespace, "get", "events.v1.events.k8s.io", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    list["items"].as_array().cloned().unwrap_or_default()
}

/// The first Event with `reason` on the object `kind`/`name` of `namespace`, if any.
fn event_on(plane: &ControlPlane, namespace: &str, kind: &str, name: &str, reason: &str) -> Option<serde_json::Value> {
    events(plane, namespace)
        .into_iter()
        .find(|e| e["regarding"]["kind"] == kind && e["regarding"]["name"] == name && e["reason"] == reason)
}

fn lb_ips(plane: &ControlPlane, name: &str) -> String {
    read(plane, &["-n", "t", "get", "service", name, "-o", "jsonpath={.status.loadBalancer.ingress[*].ip}"])
}

/// The value of an unlabelled metric on the admin listener.
fn metric(admin: SocketAddr, name: &str) -> Option<f64> {
    let (_, body) = get(admin, "localhost", "/metrics").ok()?;
    body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn lb_service(name: &str, annotations: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: t\n  annotations: {{{annotations}}}\n\
         spec:\n  type: LoadBalancer\n  ports: [{{port: 80}}]\n"
    )
}

fn start_controller(plane: &ControlPlane) -> Running {
    let kubeconfig = PathBuf::from(plane.kubeconfig());
    start_with(&["--kubeconfig".as_ref(), kubeconfig.as_os_str(), "--lease-namespace".as_ref(), "default".as_ref()])
}

/// SIGTERM (the controller releases its Lease) and wait for the exit.
fn stop_gracefully(mut running: Running) {
    let pid = nix::unistd::Pid::from_raw(running.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(20);
    while running.child.try_wait().expect("try_wait").is_none() {
        assert!(Instant::now() < deadline, "the controller did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn load_balancer_addresses_from_ip_pools_in_a_cluster() {
    let plane = ControlPlane::start();
    let crd = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/crd-ippool.yaml");
    plane.apply(&std::fs::read_to_string(crd).expect("manifests/crd-ippool.yaml"));
    plane.kubectl(&["wait", "--for=condition=Established", "--timeout=30s", "crd/ippools.causeway.dev"], None);
    // Two addresses; lb-a and lb-b (same second, so by name) take them.
    plane.apply(
        "apiVersion: causeway.dev/v1alpha1\nkind: IPPool\nmetadata: {name: p1}\nspec:\n  blocks: [{cidr: 10.255.0.0/31}]\n\
         ---\napiVersion: v1\nkind: Namespace\nmetadata: {name: t}\n",
    );
    plane.apply(&(lb_service("lb-a", "") + &lb_service("lb-b", "")));

    let controller = start_controller(&plane);
    let (a, b) = ("10.255.0.0", "10.255.0.1");
    let took = wait_for("status.loadBalancer of lb-a and lb-b", Duration::from_secs(20), || {
        lb_ips(&plane, "lb-a") == a && lb_ips(&plane, "lb-b") == b
    });
    println!("the leader wrote both LoadBalancer addresses {took:?} after start");

    // Exhaustion: lb-c stays pending, with an Event naming the pool and the metric.
    plane.apply(&lb_service("lb-c", ""));
    let (event, _) = wait_value("an AllocationFailed Event on lb-c", || {
        event_on(&plane, "t", "Service", "lb-c", "AllocationFailed")
    });
    let note = event["note"].as_str().unwrap_or_default();
    assert!(note.contains("IPPool p1"), "note: {note}");
    assert_eq!(event["related"]["name"], "p1", "{event}");
    assert_eq!(event["type"], "Warning");
    wait_for("causeway_lb_services_pending 1", Duration::from_secs(10), || {
        metric(controller.admin, "causeway_lb_services_pending") == Some(1.0)
    });
    assert_eq!(lb_ips(&plane, "lb-c"), "");

    // Restart. Meanwhile lb-x asks for lb-a's address: the holder keeps it (the address is in its status) and
    // the request is refused with an Event naming both Services.
    stop_gracefully(controller);
    plane.apply(&lb_service("lb-x", &format!("causeway.dev/loadBalancerIPs: \"{a}\"")));
    let controller = start_controller(&plane);
    let (event, _) =
        wait_value("an AddressConflict Event on lb-x", || event_on(&plane, "t", "Service", "lb-x", "AddressConflict"));
    let note = event["note"].as_str().unwrap_or_default();
    assert!(note.contains(&format!("{a} is held by Service t/lb-a")), "note: {note}");
    assert_eq!((&event["related"]["kind"], &event["related"]["name"]), (&"Service".into(), &"lb-a".into()));
    wait_for("causeway_lb_services_pending 2", Duration::from_secs(10), || {
        metric(controller.admin, "causeway_lb_services_pending") == Some(2.0)
    });
    assert_eq!((lb_ips(&plane, "lb-a"), lb_ips(&plane, "lb-b")), (a.to_owned(), b.to_owned()), "stable");
    assert_eq!((lb_ips(&plane, "lb-c"), lb_ips(&plane, "lb-x")), (String::new(), String::new()));

    // Released: lb-a deleted, its address goes to lb-x (which asked for it); lb-b turns ClusterIP, its address
    // goes to lb-c.
    plane.kubectl(&["-n", "t", "delete", "service", "lb-a"], None);
    wait_for("lb-x to get lb-a's address", Duration::from_secs(10), || lb_ips(&plane, "lb-x") == a);
    let to_cluster_ip = r#"{"spec":{"type":"ClusterIP"}}"#;
    plane.kubectl(&["-n", "t", "patch", "service", "lb-b", "--type=merge", "-p", to_cluster_ip], None);
    wait_for("lb-c to get lb-b's address", Duration::from_secs(10), || lb_ips(&plane, "lb-c") == b);
    wait_for("causeway_lb_services_pending 0", Duration::from_secs(10), || {
        metric(controller.admin, "causeway_lb_services_pending") == Some(0.0)
    });

    // An overlapping pool: an Event on each pool naming the other; nothing allocated moves.
    plane.apply("apiVersion: causeway.dev/v1alpha1\nkind: IPPool\nmetadata: {name: p2}\nspec:\n  blocks: [{cidr: 10.255.0.0/30}]\n");
    for (pool, other) in [("p2", "p1"), ("p1", "p2")] {
        let (event, _) = wait_value(&format!("an IPPoolOverlap Event on {pool}"), || {
            event_on(&plane, "default", "IPPool", pool, "IPPoolOverlap")
        });
        let note = event["note"].as_str().unwrap_or_default();
        assert!(note.contains(&format!("IPPool {other}")), "note: {note}");
        assert_eq!(event["related"]["name"], other, "{event}");
    }
    assert_eq!((lb_ips(&plane, "lb-x"), lb_ips(&plane, "lb-c")), (a.to_owned(), b.to_owned()), "nothing moved");
    stop_gracefully(controller);
}

/// Polls `check` until it returns `Some` (20 s at most).
fn wait_value<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> (T, Duration) {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return (v, start.elapsed());
        }
        assert!(start.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The IPPool CRD without its schema (another version of it might be): the API server stores malformed pools.
const SCHEMALESS_CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: ippools.causeway.dev}
spec:
  group: causeway.dev
  scope: Cluster
  names: {kind: IPPool, listKind: IPPoolList, plural: ippools, singular: ippool}
  versions:
  - name: v1alpha1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
";

#[test]
fn malformed_pools_are_events_on_the_pool_and_the_others_still_serve() {
    let plane = ControlPlane::start();
    plane.apply(SCHEMALESS_CRD);
    plane.kubectl(&["wait", "--for=condition=Established", "--timeout=30s", "crd/ippools.causeway.dev"], None);
    plane.apply(
        "apiVersion: causeway.dev/v1alpha1\nkind: IPPool\nmetadata: {name: bad-cidr}\nspec:\n  blocks: [{cidr: 10.255.0.0/33}]\n\
         ---\napiVersion: causeway.dev/v1alpha1\nkind: IPPool\nmetadata: {name: typo}\nspec:\n  block: [{cidr: 10.255.1.0/30}]\n\
         ---\napiVersion: causeway.dev/v1alpha1\nkind: IPPool\nmetadata: {name: good}\nspec:\n  blocks: [{start: 10.255.2.7, stop: 10.255.2.9}]\n\
         ---\napiVersion: v1\nkind: Namespace\nmetadata: {name: t}\n",
    );
    plane.apply(&lb_service("lb", ""));
    let controller = start_controller(&plane);
    wait_for("lb to get an address of the good pool", Duration::from_secs(20), || lb_ips(&plane, "lb") == "10.255.2.7");
    for (pool, reason, note_start) in [
        ("bad-cidr", "InvalidIPPool", "spec.blocks[0]: \"10.255.0.0/33\" is not a CIDR"),
        ("typo", "InvalidObject", "spec.block: unknown field `block`"),
    ] {
        let (event, _) = wait_value(&format!("a {reason} Event on IPPool {pool}"), || {
            event_on(&plane, "default", "IPPool", pool, reason)
        });
        let note = event["note"].as_str().unwrap_or_default();
        assert!(note.starts_with(note_start), "note: {note}");
    }
    stop_gracefully(controller);
}
