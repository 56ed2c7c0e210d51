//! A lab for the announcer's netns tests: two nodes and an observer on one bridge (in a hub namespace).
//!
//! Namespaces are named `cwl<role><n>_<pid>` (≤ 15 characters) and deleted on drop even when a test fails. The
//! root namespace is never connected: every link is created inside a lab namespace (`ip -n`), and traffic stays
//! on the lab bridge.
#![allow(dead_code)]

use causeway_announce::{Announcer, GarpConfig};
use std::collections::BTreeSet;
use std::fs::File;
use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub static SEQ: AtomicUsize = AtomicUsize::new(0);

pub const VIP: &str = "10.77.0.200";
pub const VIP6: &str = "fd00:77::c8";
pub const MAC_A: &str = "02:00:00:77:00:0a";
pub const MAC_B: &str = "02:00:00:77:00:0b";

pub fn require_root() {
    let ok = nix::unistd::Uid::effective().is_root()
        && Command::new("ip").arg("-V").output().is_ok_and(|o| o.status.success());
    assert!(ok, "these tests need root and iproute2 (CI runs them as root)");
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

pub fn sh(args: &[&str]) -> String {
    let (ok, out) = try_sh(args);
    assert!(ok, "{args:?} failed: {out}");
    out
}

/// Hub (bridge), node a, node b, observer.
pub struct Lab {
    pub hub: String,
    pub a: String,
    pub b: String,
    pub obs: String,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b, &self.obs, &self.hub] {
            let _ = try_sh(&["ip", "netns", "del", ns]);
        }
    }
}

impl Lab {
    pub fn new() -> Self {
        require_root();
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let name = |role: char| format!("cwl{role}{n}_{pid}");
        let lab = Lab { hub: name('h'), a: name('a'), b: name('b'), obs: name('o') };
        for ns in [&lab.hub, &lab.a, &lab.b, &lab.obs] {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        sh(&["ip", "-n", &lab.hub, "link", "add", "br0", "type", "bridge"]);
        sh(&["ip", "-n", &lab.hub, "link", "set", "br0", "up"]);
        for (ns, port, addr, addr6, mac) in [
            (&lab.a, "va", "10.77.0.1/24", "fd00:77::1/64", MAC_A),
            (&lab.b, "vb", "10.77.0.2/24", "fd00:77::2/64", MAC_B),
            (&lab.obs, "vo", "10.77.0.100/24", "fd00:77::64/64", "02:00:00:77:00:64"),
        ] {
            sh(&["ip", "-n", &lab.hub, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns]);
            sh(&["ip", "-n", &lab.hub, "link", "set", port, "master", "br0", "up"]);
            sh(&["ip", "-n", ns, "link", "set", "eth0", "address", mac]);
            sh(&["ip", "-n", ns, "addr", "add", addr, "dev", "eth0"]);
            // No duplicate address detection: the lab's addresses are usable at once.
            sh(&["ip", "-n", ns, "addr", "add", addr6, "dev", "eth0", "nodad"]);
            sh(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
        }
        lab
    }

    pub fn ping_vip(&self) -> bool {
        try_sh(&["ip", "netns", "exec", &self.obs, "ping", "-c", "1", "-W", "1", VIP]).0
    }

    pub fn neighbour(&self) -> String {
        sh(&["ip", "-n", &self.obs, "neigh", "show", VIP])
    }

    pub fn ping_vip6(&self) -> bool {
        try_sh(&["ip", "netns", "exec", &self.obs, "ping", "-6", "-c", "1", "-W", "1", VIP6]).0
    }

    pub fn neighbour6(&self) -> String {
        sh(&["ip", "-n", &self.obs, "-6", "neigh", "show", VIP6])
    }
}

/// Runs `f` on a thread that has entered namespace `ns`; sockets opened there stay bound to it.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("namespace thread")
}

pub fn announcer(ns: &str) -> Announcer {
    let garp = GarpConfig { count: 3, interval: Duration::from_millis(100) };
    in_ns(ns, move || Announcer::new("eth0", garp)).expect("announcer")
}

pub fn set(ips: &[&str]) -> BTreeSet<IpAddr> {
    ips.iter().map(|s| s.parse().expect("address")).collect()
}

pub fn vip() -> IpAddr {
    VIP.parse().expect("vip")
}

pub fn vip6() -> IpAddr {
    VIP6.parse().expect("vip6")
}

/// A UDP echo server on port 7777 in namespace `ns`, answering until the returned guard is dropped.
pub struct Echo(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for Echo {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

pub fn udp_echo(ns: &str) -> Echo {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sock = in_ns(ns, || std::net::UdpSocket::bind("0.0.0.0:7777")).expect("bind echo");
    sock.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
    let flag = stop.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while !flag.load(Ordering::SeqCst) {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(&buf[..n], from);
            }
        }
    });
    Echo(stop)
}

/// A UDP client in a namespace that sends numbered probes to the VIP's echo port and waits 10 ms for each answer.
pub struct Prober {
    sock: std::net::UdpSocket,
    seq: u32,
}

impl Prober {
    pub fn new(ns: &str) -> Self {
        let sock = in_ns(ns, || std::net::UdpSocket::bind("0.0.0.0:0")).expect("client");
        sock.set_read_timeout(Some(Duration::from_millis(10))).expect("timeout");
        // Not connected: the echo servers answer from their primary address (they are bound to 0.0.0.0).
        Self { sock, seq: 0 }
    }

    /// One probe: whether its own answer came back within 10 ms.
    pub fn probe(&mut self) -> bool {
        self.seq += 1;
        let seq = self.seq.to_be_bytes();
        if self.sock.send_to(&seq, (VIP, 7777)).is_err() {
            return false;
        }
        let deadline = Instant::now() + Duration::from_millis(10);
        let mut buf = [0u8; 4];
        // Late answers to earlier probes are drained; only this probe's answer counts.
        while Instant::now() < deadline {
            match self.sock.recv_from(&mut buf) {
                Ok((4, _)) if buf == seq => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
        false
    }

    /// Probe until an answer comes, for at most `limit`; the time it took.
    pub fn until_answer(&mut self, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.probe() {
                return Some(start.elapsed());
            }
        }
        None
    }
}
