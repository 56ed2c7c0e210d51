//! A small lab for the netns tests: a node namespace with a bridge and pod namespaces, an outside client
//! namespace, the agent binary running inside the node namespace, TCP servers and clients inside namespaces.
//!
//! Every namespace is named `cwa<role><n>_<pid>` (≤ 15 characters), deleted on drop even when a test fails;
//! leftovers of killed runs (same pattern, dead pid) are deleted on start. The root namespace is never
//! connected to a lab; iptables only ever runs inside lab namespaces; traffic stays inside them.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// Whether this process may create namespaces (root with `ip` available). Tests call [`require_root`].
pub fn can_run() -> bool {
    nix::unistd::Uid::effective().is_root() && Command::new("ip").arg("-V").output().is_ok_and(|o| o.status.success())
}

/// Panics with a clear message when the lab cannot run: CI runs as root, and a silent skip would hide failures.
pub fn require_root() {
    assert!(can_run(), "these tests need root, iproute2 and iptables (CI runs them as root)");
    cleanup_leftovers();
}

/// Runs a command, panicking with its output on failure.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command, returning (success, stdout+stderr).
pub fn try_sh(args: &[&str]) -> (bool, String) {
    match Command::new(args[0]).args(&args[1..]).output() {
        Ok(o) => (
            o.status.success(),
            format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
        ),
        Err(e) => (false, e.to_string()),
    }
}

fn cleanup_leftovers() {
    let (_, list) = try_sh(&["ip", "netns", "list"]);
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix("cwa") else { continue };
        let Some((_, pid)) = rest.split_once('_') else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = try_sh(&["ip", "netns", "del", name]);
        }
    }
}

/// Polls `f` every 50 ms until it returns `Some`, or panics after `timeout` with `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(role: char) -> Self {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("cwa{role}{n}_{}", std::process::id());
        assert!(name.len() <= 15, "{name} too long");
        sh(&["ip", "netns", "add", &name]);
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Netns { name }
    }

    /// `ip -n NAME args...`
    pub fn ip(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// `ip netns exec NAME args...`
    pub fn exec(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        sh(&v)
    }

    pub fn try_exec(&self, args: &[&str]) -> (bool, String) {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        try_sh(&v)
    }

    /// `iptables-save` of this namespace.
    pub fn iptables_save(&self) -> String {
        self.exec(&["iptables-save"])
    }

    /// Runs `f` on a fresh thread that joined this namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("netns thread panicked")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = try_sh(&["ip", "netns", "del", &self.name]);
    }
}

/// A TCP server in a namespace: on each connection it writes `<name> <client ip>\n`, then echoes lines.
pub struct Server {
    stop: Arc<AtomicBool>,
    ns: String,
    addr: SocketAddr,
}

impl Server {
    pub fn start(ns: &Netns, name: &str, addr: SocketAddr) -> Server {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let path = format!("/run/netns/{}", ns.name);
        let (stop2, name) = (stop.clone(), name.to_string());
        std::thread::spawn(move || {
            let file = File::open(&path).expect("netns");
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let listener = TcpListener::bind(addr);
            let ok = listener.is_ok();
            let _ = tx.send(listener.as_ref().map(|_| ()).map_err(|e| e.to_string()));
            let Ok(listener) = listener else { return };
            let _ = ok;
            for conn in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                let name = name.clone();
                std::thread::spawn(move || {
                    let peer = conn.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
                    if conn.write_all(format!("{name} {peer}\n").as_bytes()).is_err() {
                        return;
                    }
                    let Ok(clone) = conn.try_clone() else { return };
                    let mut reader = BufReader::new(clone);
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                        if conn.write_all(line.as_bytes()).is_err() {
                            return;
                        }
                        line.clear();
                    }
                });
            }
        });
        rx.recv().expect("server thread").unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        Server { stop, ns: path_name(&ns.name), addr }
    }
}

fn path_name(n: &str) -> String {
    n.to_string()
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so the thread sees the flag.
        let path = format!("/run/netns/{}", self.ns);
        let addr = self.addr;
        let _ = std::thread::spawn(move || {
            if let Ok(file) = File::open(&path)
                && nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).is_ok()
            {
                let local = match addr.ip() {
                    IpAddr::V4(_) => SocketAddr::new("127.0.0.1".parse().unwrap(), addr.port()),
                    IpAddr::V6(_) => SocketAddr::new("::1".parse().unwrap(), addr.port()),
                };
                let _ = TcpStream::connect_timeout(&local, Duration::from_millis(200));
            }
        })
        .join();
    }
}

/// Outcome of one connection attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// The greeting: (server name, client IP it saw).
    Hello(String, String),
    Refused,
    Timeout,
    Other(String),
}

/// Reads the server's greeting line (`NAME CLIENT-IP`) from a connected stream.
pub fn greeting(s: TcpStream) -> Reply {
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    match BufReader::new(s).read_line(&mut line) {
        Ok(n) if n > 0 => {
            let mut it = line.split_whitespace();
            Reply::Hello(it.next().unwrap_or_default().into(), it.next().unwrap_or_default().into())
        }
        Ok(_) => Reply::Other("closed".into()),
        Err(e) => Reply::Other(e.to_string()),
    }
}

/// Connects from `ns` to `addr` and reads the greeting.
pub fn hello(ns: &Netns, addr: SocketAddr) -> Reply {
    ns.run(move || match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(s) => greeting(s),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Reply::Refused,
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut || e.kind() == std::io::ErrorKind::WouldBlock => {
            Reply::Timeout
        }
        Err(e) => Reply::Other(e.to_string()),
    })
}

/// A plain HTTP GET from `ns`; returns (status, body).
pub fn http_get(ns: &Netns, addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let path = path.to_string();
    ns.run(move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        let status = buf.split_whitespace().nth(1)?.parse().ok()?;
        let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        Some((status, body))
    })
}

/// The lab: node namespace `node` with bridge `cbr0` (10.244.0.1/24), pods on it, and an outside namespace
/// linked to the node at 172.18.0.2 ↔ 172.18.0.100.
pub struct Lab {
    pub node: Netns,
    pub outside: Netns,
    pub pods: Vec<Netns>,
    pub dir: tempfile::TempDir,
}

pub const NODE_IP: &str = "172.18.0.2";
pub const OUTSIDE_IP: &str = "172.18.0.100";

impl Lab {
    pub fn new(pods: usize) -> Lab {
        require_root();
        let node = Netns::new('n');
        let outside = Netns::new('o');
        node.ip(&["link", "add", "cbr0", "type", "bridge"]);
        node.ip(&["addr", "add", "10.244.0.1/24", "dev", "cbr0"]);
        node.ip(&["link", "set", "cbr0", "up"]);
        node.ip(&["link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", &outside.name]);
        node.ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", "eth1"]);
        node.ip(&["link", "set", "eth1", "up"]);
        outside.ip(&["addr", "add", &format!("{OUTSIDE_IP}/24"), "dev", "eth0"]);
        outside.ip(&["link", "set", "eth0", "up"]);
        outside.ip(&["route", "add", "10.96.0.0/16", "via", NODE_IP]);
        // Like a real node, the node has a default route (here: into the outside namespace); without one,
        // a packet to a ClusterIP without rules fails routing before the filter table can REJECT it.
        node.ip(&["route", "add", "default", "via", OUTSIDE_IP]);
        let mut lab = Lab { node, outside, pods: Vec::new(), dir: tempfile::tempdir().expect("tempdir") };
        for _ in 0..pods {
            lab.add_pod();
        }
        std::fs::create_dir_all(lab.manifests()).expect("manifests dir");
        lab
    }

    /// Adds a pod at 10.244.0.(10+i) on the bridge, hairpin on.
    pub fn add_pod(&mut self) {
        let i = self.pods.len();
        let pod = Netns::new('p');
        let host = format!("vp{i}");
        self.node.ip(&["link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &pod.name]);
        self.node.ip(&["link", "set", &host, "master", "cbr0"]);
        self.node.ip(&["link", "set", &host, "up"]);
        self.node.ip(&["link", "set", &host, "type", "bridge_slave", "hairpin", "on"]);
        pod.ip(&["addr", "add", &format!("{}/24", self.pod_ip(i)), "dev", "eth0"]);
        pod.ip(&["link", "set", "eth0", "up"]);
        pod.ip(&["route", "add", "default", "via", "10.244.0.1"]);
        self.pods.push(pod);
    }

    pub fn pod_ip(&self, i: usize) -> String {
        format!("10.244.0.{}", 10 + i)
    }

    pub fn manifests(&self) -> PathBuf {
        self.dir.path().join("manifests")
    }

    /// Writes a manifests file atomically (the source must never see half a file).
    pub fn write_manifest(&self, name: &str, yaml: &str) {
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, yaml).expect("write manifest");
        std::fs::rename(&tmp, self.manifests().join(name)).expect("rename manifest");
    }

    pub fn remove_manifest(&self, name: &str) {
        let _ = std::fs::remove_file(self.manifests().join(name));
    }

    /// Starts the agent in the node namespace.
    pub fn start_agent(&self, extra: &[&str]) -> Agent {
        let log = self.dir.path().join(format!("agent-{}.log", SEQ.fetch_add(1, Ordering::Relaxed)));
        let cni = self.dir.path().join("cni");
        let plugin = self.dir.path().join("fake-causeway-cni");
        if !plugin.exists() {
            std::fs::write(&plugin, b"#!/bin/sh\nexit 0\n").expect("plugin");
        }
        let mut args: Vec<String> = vec![
            "netns".into(),
            "exec".into(),
            self.node.name.clone(),
            env!("CARGO_BIN_EXE_causeway-node").into(),
            "--node-name".into(),
            "node-a".into(),
            "--manifests".into(),
            self.manifests().display().to_string(),
            "--cluster-cidr".into(),
            "10.244.0.0/16".into(),
            "--cni-conf-dir".into(),
            cni.join("net.d").display().to_string(),
            "--cni-bin-dir".into(),
            cni.join("bin").display().to_string(),
            "--cni-plugin".into(),
            plugin.display().to_string(),
            "--ipam-dir".into(),
            cni.join("ipam").display().to_string(),
            "--xtables-lock".into(),
            self.dir.path().join("xtables.lock").display().to_string(),
            // Inside the lab's own namespace nothing else listens, so a fixed port cannot collide.
            "--admin-addr".into(),
            "127.0.0.1:10249".into(),
            "--min-sync-period".into(),
            "100ms".into(),
            "--route-period".into(),
            "500ms".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new("ip")
            .args(&args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn agent");
        Agent { child: Some(child), log }
    }

    pub fn admin(&self) -> SocketAddr {
        "127.0.0.1:10249".parse().unwrap()
    }

    /// Waits until the agent reports ready (first sync applied).
    pub fn wait_ready(&self, agent: &Agent) {
        let addr = self.admin();
        wait_for("agent /readyz", Duration::from_secs(20), || {
            agent.assert_alive();
            http_get(&self.node, addr, "/readyz").filter(|(s, _)| *s == 200)
        });
    }

    /// The agent's `/metrics` text.
    pub fn metrics(&self) -> String {
        http_get(&self.node, self.admin(), "/metrics").map(|(_, b)| b).unwrap_or_default()
    }
}

/// The agent process, stopped (SIGTERM, then kill) on drop.
pub struct Agent {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Agent {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn assert_alive(&self) {
        if let Some(c) = &self.child {
            let pid = c.id();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            assert!(!stat.is_empty() && !stat.contains(") Z "), "agent exited:\n{}", self.log_text());
        }
    }

    /// Stops the agent with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // `ip netns exec` execs the agent, so this pid is the agent's own.
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// YAML for the lab's own Node (node-a, podCIDR 10.244.0.0/24, InternalIP 172.18.0.2).
pub fn node_yaml(name: &str, cidr: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\nspec:\n  podCIDR: {cidr}\n  podCIDRs: [{cidr}]\nstatus:\n  addresses:\n  - type: InternalIP\n    address: {ip}\n"
    )
}

/// YAML for an EndpointSlice of `svc` with one port `port_name`/`port` and endpoints (ip, node, ready).
pub fn slice_yaml(svc: &str, slice: &str, port_name: &str, port: u16, eps: &[(&str, &str, bool)]) -> String {
    let mut s = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {slice}\n  namespace: default\n  labels:\n    kubernetes.io/service-name: {svc}\naddressType: IPv4\nports:\n- name: {port_name}\n  port: {port}\n  protocol: TCP\nendpoints:\n"
    );
    if eps.is_empty() {
        s.push_str("[]\n");
        s = s.replace("endpoints:\n[]\n", "endpoints: []\n");
    }
    for (ip, node, ready) in eps {
        s.push_str(&format!(
            "- addresses: [\"{ip}\"]\n  nodeName: {node}\n  conditions:\n    ready: {ready}\n    serving: {ready}\n    terminating: false\n"
        ));
    }
    s
}
