//! `causeway-node --kubeconfig` against a real kube-apiserver and etcd (`tests/cluster/`), with a user that may
//! only list and watch Services, EndpointSlices and Nodes: a Service created through the API gets its ClusterIP
//! chain applied (real `iptables-restore`) within a few seconds, and deleting it removes the chain.
//!
//! Everything runs inside a network namespace this test creates (the API server refuses loopback endpoint
//! addresses, and the agent's rules must not land in the host's tables); the host's namespace is never touched.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An endpoint address (on `lo` of the test namespace).
const POD_IP: &str = "10.244.250.1";

/// A network namespace of this test's own; the calling thread (and every process it starts) enters it.
struct TestNetns(String);

impl TestNetns {
    fn enter() -> Self {
        assert!(nix::unistd::geteuid().is_root(), "this test creates a network namespace: run it as root");
        let name = format!("cwna-{}", std::process::id());
        let ns = TestNetns(name.clone());
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("ip (iproute2)");
            assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let _ = Command::new("ip").args(["netns", "del", &name]).output(); // a leftover of a killed run
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
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

/// etcd + kube-apiserver started by `tests/cluster/start.sh`; stopped on drop (and by its watchdog if we die).
struct ControlPlane {
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
}

impl ControlPlane {
    fn script(dir: &Path, name: &str) -> std::process::Output {
        Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/cluster").join(name))
            .arg(dir)
            .env("CAUSEWAY_CLUSTER_OWNER_PID", std::process::id().to_string())
            .env("CAUSEWAY_CLUSTER_STOP_GRACE", "3")
            .output()
            .unwrap_or_else(|e| panic!("cannot run tests/cluster/{name}: {e}"))
    }

    fn start() -> Self {
        let dir = tempfile::Builder::new().prefix("causeway-node-cluster-").tempdir().expect("temp dir");
        let out = Self::script(dir.path(), "start.sh");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(
            out.status.code(),
            Some(3),
            "kube-apiserver/etcd not built; run tests/cluster/build.sh first.\n{stderr}"
        );
        assert!(out.status.success(), "tests/cluster/start.sh failed:\n{stderr}");
        let env = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Self { dir, env }
    }

    /// `kubectl` as the admin user; panics on failure.
    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        let mut child = Command::new(&self.env["KUBECTL"])
            .args(["--kubeconfig", &self.env["KUBECONFIG"]])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        if let Some(text) = stdin {
            child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("kubectl stdin");
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().expect("kubectl");
        assert!(out.status.success(), "kubectl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let out = Self::script(self.dir.path(), "stop.sh");
        if !out.status.success() {
            eprintln!("stop.sh failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// The agent process, killed (by its PID) on drop.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nat_table() -> String {
    let out = Command::new("iptables-save").args(["-t", "nat"]).output().expect("iptables-save");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_for(what: &str, timeout: Duration, agent: &mut Agent, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check() {
            return start.elapsed();
        }
        if let Ok(Some(status)) = agent.child.try_wait() {
            panic!("causeway-node exited ({status}) while waiting for {what}:\n{}", agent.log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {timeout:?} waiting for {what}\nagent log:\n{}\nnat table:\n{}", agent.log(), nat_table());
}

/// list/watch on exactly the agent's kinds, for the limited user's group (nothing on Ingresses or Secrets).
const RBAC: &str = "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: causeway-node}
rules:
- {apiGroups: [\"\"], resources: [services, nodes], verbs: [list, watch]}
- {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: causeway-node}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: causeway-node}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: \"causeway:limited\"}
";

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: {kubernetes.io/service-name: web, endpointslice.kubernetes.io/managed-by: test}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- addresses: [\"10.244.250.1\"]
  conditions: {ready: true}
";

#[test]
fn service_created_through_the_api_gets_its_cluster_ip_chain() {
    let _netns = TestNetns::enter();
    let plane = ControlPlane::start();
    plane.kubectl(&["apply", "-f", "-"], Some(RBAC));

    let log = plane.dir.path().join("agent.log");
    let log_file = std::fs::File::create(&log).expect("agent log");
    let child = Command::new(env!("CARGO_BIN_EXE_causeway-node"))
        .args(["--node-name", "node-a", "--kubeconfig", &plane.env["LIMITED_KUBECONFIG"]])
        .args(["--cluster-cidr", "10.244.0.0/16", "--no-cni", "--no-routes"])
        // Sysctls are not this test's subject: an empty tree, so nothing real is written.
        .arg("--sysctl-root")
        .arg(plane.dir.path().join("no-sysctls"))
        .args(["--admin-addr", "127.0.0.1:0", "--min-sync-period", "100ms"])
        .arg("--xtables-lock")
        .arg(plane.dir.path().join("xtables.lock"))
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("starting causeway-node");
    let mut agent = Agent { child, log };

    // The first sync follows the initial list of the three kinds (a user without Ingress/Secret access).
    wait_for("the first sync (KUBE-SERVICES)", Duration::from_secs(20), &mut agent, || {
        nat_table().contains(":KUBE-SERVICES")
    });

    plane.kubectl(&["apply", "-f", "-"], Some(SERVICE));
    let created = Instant::now();
    let cluster_ip =
        plane.kubectl(&["-n", "default", "get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"], None);
    assert!(cluster_ip.parse::<std::net::Ipv4Addr>().is_ok(), "ClusterIP {cluster_ip:?}");
    let dest = format!("-d {cluster_ip}/32 ");
    let is_rule = |l: &str| {
        l.starts_with("-A KUBE-SERVICES ")
            && l.contains(&dest)
            && l.contains("default/web:http cluster IP")
            && l.contains("-j KUBE-SVC-")
    };
    wait_for("the ClusterIP rule of default/web", Duration::from_secs(10), &mut agent, || {
        let nat = nat_table();
        nat.lines().any(is_rule)
            && nat.lines().any(|l| l.starts_with("-A KUBE-SEP-") && l.contains("--to-destination 10.244.250.1:8080"))
    });
    let took = created.elapsed();
    println!("default/web's ClusterIP chain applied {took:?} after kubectl apply");
    assert!(took < Duration::from_secs(5), "the Service's chain took {took:?}");

    plane.kubectl(&["-n", "default", "delete", "service", "web"], None);
    wait_for("the ClusterIP rule to go with the Service", Duration::from_secs(10), &mut agent, || {
        !nat_table().lines().any(is_rule)
    });
    let log = agent.log();
    assert!(!log.contains("Forbidden") && !log.contains("denies"), "permission problems:\n{log}");
}
