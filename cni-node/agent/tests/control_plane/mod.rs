//! A real control plane (`tests/cluster/start.sh`) inside a network namespace of the test's own, and the
//! processes the tests start in it; shared by `cluster.rs` and `kube_proxy.rs`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An endpoint address (on `lo` of the test namespace).
pub const POD_IP: &str = "10.244.250.1";

/// A network namespace of this test's own; the calling thread (and every process it starts) enters it.
pub struct TestNetns(pub String);

impl TestNetns {
    pub fn enter() -> Self {
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
pub struct ControlPlane {
    pub dir: tempfile::TempDir,
    pub env: HashMap<String, String>,
}

impl ControlPlane {
    pub fn script(dir: &Path, name: &str) -> std::process::Output {
        Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/cluster").join(name))
            .arg(dir)
            .env("CAUSEWAY_CLUSTER_OWNER_PID", std::process::id().to_string())
            .env("CAUSEWAY_CLUSTER_STOP_GRACE", "3")
            .output()
            .unwrap_or_else(|e| panic!("cannot run tests/cluster/{name}: {e}"))
    }

    pub fn start() -> Self {
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

    /// Stops only the API server (etcd keeps the data), as an outage would.
    pub fn stop_apiserver(&self) {
        self.only_apiserver("stop.sh");
    }

    /// Starts the API server again on the same port and waits until it is ready.
    pub fn start_apiserver(&self) {
        self.only_apiserver("start.sh");
    }

    fn only_apiserver(&self, name: &str) {
        let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/cluster").join(name))
            .args(["--only", "apiserver"])
            .arg(self.dir.path())
            .env("CAUSEWAY_CLUSTER_OWNER_PID", std::process::id().to_string())
            .env("CAUSEWAY_CLUSTER_STOP_GRACE", "3")
            .output()
            .unwrap_or_else(|e| panic!("cannot run tests/cluster/{name}: {e}"));
        assert!(out.status.success(), "{name} --only apiserver failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// `kubectl` as the admin user; panics on failure.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
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
pub struct Agent {
    pub child: Child,
    pub log: PathBuf,
}

impl Agent {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn nat_table() -> String {
    let out = Command::new("iptables-save").args(["-t", "nat"]).output().expect("iptables-save");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn wait_for(what: &str, timeout: Duration, agent: &mut Agent, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check() {
            return start.elapsed();
        }
        if let Ok(Some(status)) = agent.child.try_wait() {
            panic!("the process exited ({status}) while waiting for {what}:\n{}", agent.log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {timeout:?} waiting for {what}\nagent log:\n{}\nnat table:\n{}", agent.log(), nat_table());
}
