//! A real control plane (`causeway_test_support`) inside a network namespace of the test's own, and the
//! processes the tests start in it; shared by `cluster.rs`, `failover.rs` and `kube_proxy.rs`.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub use causeway_test_support::{ControlPlane, TestNetns};

/// An endpoint address (on `lo` of the test namespace).
pub const POD_IP: &str = "10.244.250.1";

/// Enters a network namespace of this test's own with [`POD_IP`] on its `lo`.
pub fn enter_netns() -> TestNetns {
    TestNetns::enter("cwna-", &[POD_IP.parse().expect("POD_IP is an address")])
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
