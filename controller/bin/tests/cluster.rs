//! `causeway run --kubeconfig` against a real kube-apiserver and etcd (`tests/cluster/`): objects created through
//! the API are served, Ingress status is written, and an API server outage under load fails no request.

mod common;

use common::*;
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// etcd + kube-apiserver started by `tests/cluster/start.sh` in a temporary directory; stopped on drop.
struct ControlPlane {
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
}

fn cluster_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/cluster").join(name)
}

impl ControlPlane {
    fn script(&self, name: &str, only_apiserver: bool) -> std::process::Output {
        let mut cmd = Command::new(cluster_script(name));
        if only_apiserver {
            cmd.args(["--only", "apiserver"]);
        }
        cmd.arg(self.dir.path())
            .env("CAUSEWAY_CLUSTER_OWNER_PID", std::process::id().to_string())
            .env("CAUSEWAY_CLUSTER_STOP_GRACE", "3")
            .output()
            .unwrap_or_else(|e| panic!("cannot run tests/cluster/{name}: {e}"))
    }

    fn start() -> Self {
        let dir = tempfile::Builder::new().prefix("causeway-bin-cluster-").tempdir().unwrap();
        let mut plane = Self { dir, env: HashMap::new() };
        let out = plane.script("start.sh", false);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(3), "kube-apiserver/etcd not built; run tests/cluster/build.sh first.\n{stderr}");
        assert!(out.status.success(), "tests/cluster/start.sh failed:\n{stderr}");
        plane.env = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        plane
    }

    /// `kubectl apply -f -` with `yaml`, as the admin user.
    fn apply(&self, yaml: &str) {
        let mut child = Command::new(&self.env["KUBECTL"])
            .args(["--kubeconfig", &self.env["KUBECONFIG"], "apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        child.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "kubectl apply failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn kubectl(&self, args: &[&str]) -> String {
        let out = Command::new(&self.env["KUBECTL"])
            .args(["--kubeconfig", &self.env["KUBECONFIG"]])
            .args(args)
            .output()
            .expect("kubectl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let out = self.script("stop.sh", false);
        if !out.status.success() {
            eprintln!("stop.sh failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// The objects of [`manifests`] plus the Namespace the API server requires.
fn cluster_objects(paths: &[(&str, &str)], backends: &[(&str, SocketAddr)]) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: t\n---\n{}", manifests(paths, backends))
}

/// A network namespace of this test's own, with `lo` up holding [`POD_IP`] too. The API server
/// refuses loopback endpoint addresses, so the backends need a real one; the whole test (control plane, proxy,
/// backends, clients) runs inside this namespace, and the host's namespace is never touched.
struct TestNetns(String);

const POD_IP: &str = "10.244.250.1";

impl TestNetns {
    /// Creates the namespace and moves the calling thread into it. Threads and processes started from this thread
    /// afterwards inherit it.
    fn enter() -> Self {
        assert!(nix::unistd::geteuid().is_root(), "this test creates a network namespace: run it as root");
        let name = format!("cw-bin-{}", std::process::id());
        let ns = TestNetns(name.clone());
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("ip (iproute2)");
            assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let _ = Command::new("ip").args(["netns", "del", &name]).output(); // a leftover of a killed run
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        // On `lo` of the namespace: no dummy-link module needed, and the address exists only in here.
        ip(&["-n", &name, "addr", "add", &format!("{POD_IP}/32"), "dev", "lo"]);
        let file = std::fs::File::open(format!("/run/netns/{name}")).expect("netns file");
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns into the test namespace");
        ns
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

#[test]
fn serves_the_cluster_writes_status_and_survives_an_api_outage_under_load() {
    let _netns = TestNetns::enter();
    let plane = ControlPlane::start();
    let (a, b) = (backend_at(POD_IP, "a", Duration::ZERO, None), backend_at(POD_IP, "b", Duration::ZERO, None));
    plane.apply(&cluster_objects(&[("/", "a")], &[("a", a), ("b", b)]));

    let kubeconfig = PathBuf::from(&plane.env["KUBECONFIG"]);
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
    wait_for("the first table from the API", Duration::from_secs(20), || {
        matches!(get(proxy.http, "app.test", "/x"), Ok((200, ref body)) if body == "a /x")
    });

    // `--node-name`: the proxy's heartbeat Lease, which the node agents read to announce proxy-class addresses.
    let proxy_heartbeat = || {
        let jsonpath = "jsonpath={.metadata.labels.causeway\\.dev/heartbeat}/{.spec.holderIdentity}";
        plane.kubectl(&["-n", "default", "get", "lease", "causeway-proxy-node-p", "-o", jsonpath])
    };
    wait_for("the proxy's heartbeat Lease", Duration::from_secs(10), || proxy_heartbeat() == "proxy/node-p");

    // A change through the API is served within a second.
    plane.apply(&cluster_objects(&[("/", "a"), ("/b", "b")], &[("a", a), ("b", b)]));
    let took = wait_for("the /b route", Duration::from_secs(10), || {
        matches!(get(proxy.http, "app.test", "/b/1"), Ok((200, ref body)) if body == "b /b/1")
    });
    assert!(took < Duration::from_secs(1), "the API change was served after {took:?}");

    // The leader writes Ingress status.
    wait_for("Ingress status", Duration::from_secs(20), || {
        plane.kubectl(&["-n", "t", "get", "ingress", "web", "-o", "jsonpath={.status.loadBalancer.ingress[*].ip}"])
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
    let out = plane.script("stop.sh", true);
    assert!(out.status.success(), "stop.sh --only apiserver: {}", String::from_utf8_lossy(&out.stderr));
    served_since(200); // the proxy keeps serving the last table while the API is down
    let out = plane.script("start.sh", true);
    assert!(out.status.success(), "start.sh --only apiserver: {}", String::from_utf8_lossy(&out.stderr));

    // A change made after the outage takes effect once the watchers resync.
    plane.apply(&cluster_objects(&[("/", "a"), ("/b", "b"), ("/c", "b")], &[("a", a), ("b", b)]));
    wait_for("the /c route after the outage", Duration::from_secs(30), || {
        matches!(get(proxy.http, "app.test", "/c"), Ok((200, ref body)) if body == "b /c")
    });
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
