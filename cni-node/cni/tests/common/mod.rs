//! Helpers for the namespace tests: namespaces that clean up after themselves, a "node" namespace that
//! holds the bridge (never the root namespace), and plugin invocations exactly as a runtime makes them
//! (CNI_* environment + stdin JSON, run in the node's namespace through `nsenter`).
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

/// Our binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_causeway-cni");
/// Where Debian's containernetworking-plugins puts the reference plugins.
pub const REF_DIR: &str = "/usr/lib/cni";
/// Every version we support.
pub const VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// Namespace name prefix of these tests (leftovers of killed runs are removed by it).
const PREFIX: &str = "cwt-";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Fail clearly when not root, and remove namespaces left behind by killed earlier runs.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests need root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create network namespaces"
    );
    for f in [format!("{REF_DIR}/bridge"), format!("{REF_DIR}/host-local")] {
        assert!(Path::new(&f).exists(), "{f} missing: run tests/cni/setup.sh");
    }
    for tool in ["ip", "nsenter", "ping", "iptables-save"] {
        let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].iter().any(|d| Path::new(d).join(tool).exists());
        assert!(found, "{tool} missing: run tests/cni/setup.sh");
    }
    static CLEANED: std::sync::Once = std::sync::Once::new();
    CLEANED.call_once(|| {
        let Ok(entries) = std::fs::read_dir("/run/netns") else { return };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(rest) = name.strip_prefix(PREFIX) else { continue };
            let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid
                && !Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = Command::new("ip").args(["netns", "del", &name]).status();
            }
        }
    });
}

/// A unique short tag for names (bridge names must fit IFNAMSIZ).
pub fn tag() -> String {
    format!("{}x{}", std::process::id() % 100_000, COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(what: &str) -> Self {
        let name = format!("{PREFIX}{}-{}-{what}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        run("ip", &["netns", "add", &name]);
        Netns { name }
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// `ip -n <ns> <args>`, panicking on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// `ip -n <ns> -j <args>` parsed.
    pub fn ip_json(&self, args: &[&str]) -> Value {
        let mut full = vec!["-j"];
        full.extend_from_slice(args);
        let out = self.ip(&full);
        if out.trim().is_empty() {
            json!([])
        } else {
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip -j {args:?}: {e}: {out}"))
        }
    }

    /// Run a command inside the namespace.
    pub fn exec(&self, cmd: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", &self.name];
        full.extend_from_slice(cmd);
        Command::new("ip").args(&full).output().expect("spawn ip netns exec")
    }

    /// One ping (1 s timeout) to `dst`, whether it got a reply.
    pub fn ping(&self, dst: &str) -> bool {
        let flag = if dst.contains(':') { "-6" } else { "-4" };
        self.exec(&["ping", flag, "-c", "1", "-W", "2", dst]).status.success()
    }

    /// Link names in the namespace.
    pub fn links(&self) -> BTreeSet<String> {
        self.ip_json(&["link", "show"])
            .as_array()
            .map(|a| a.iter().filter_map(|l| l["ifname"].as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    }

    /// `ip -d link show dev X` as JSON (None if absent).
    pub fn link(&self, dev: &str) -> Option<Value> {
        let mut full = vec!["-n", self.name.as_str(), "-j", "-d", "link", "show", "dev", dev];
        let out = Command::new("ip").args(&mut full).output().expect("spawn ip");
        if !out.status.success() {
            return None;
        }
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v.as_array()?.first().cloned()
    }

    /// Global addresses of a link, as `a.b.c.d/len`.
    pub fn addrs(&self, dev: &str) -> Vec<String> {
        let out =
            Command::new("ip").args(["-n", &self.name, "-j", "addr", "show", "dev", dev]).output().expect("spawn ip");
        let v: Value =
            if out.status.success() { serde_json::from_slice(&out.stdout).unwrap_or(json!([])) } else { json!([]) };
        let mut out = Vec::new();
        for l in v.as_array().into_iter().flatten() {
            for a in l["addr_info"].as_array().into_iter().flatten() {
                if a["scope"] == "global" {
                    out.push(format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]));
                }
            }
        }
        out
    }

    /// Routes (both families) as `dst via gw dev` strings, without kernel-made ones.
    pub fn routes(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for fam in ["-4", "-6"] {
            let v = self.ip_json(&[fam, "route", "show"]);
            for r in v.as_array().into_iter().flatten() {
                if r["protocol"] == "kernel" {
                    continue;
                }
                let mut s = r["dst"].as_str().unwrap_or("").to_string();
                if let Some(gw) = r["gateway"].as_str() {
                    s += &format!(" via {gw}");
                }
                s += &format!(" dev {}", r["dev"].as_str().unwrap_or(""));
                out.insert(s);
            }
        }
        out
    }

    /// Veth links in the namespace.
    pub fn veths(&self) -> BTreeSet<String> {
        self.links().into_iter().filter(|l| l.starts_with("veth")).collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Run a command, panic with its output on failure.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("spawn {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A test node: its own namespace (where the bridge lives), its own IPAM directory and network name.
#[derive(Debug)]
pub struct Node {
    pub ns: Netns,
    pub bridge: String,
    pub network: String,
    pub data_dir: tempfile::TempDir,
}

impl Node {
    pub fn new() -> Self {
        require_root();
        let t = tag();
        let ns = Netns::new("node");
        ns.ip(&["link", "set", "lo", "up"]);
        Node {
            ns,
            bridge: format!("cb{t}"),
            network: format!("net{t}"),
            data_dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// A configuration for our plugin with the given version and ipam section.
    pub fn conf_with(&self, version: &str, ipam: Value) -> Value {
        json!({
            "cniVersion": version,
            "name": self.network,
            "type": "causeway-cni",
            "bridge": self.bridge,
            "isGateway": true,
            "isDefaultGateway": true,
            "hairpinMode": true,
            "mtu": 1400,
            "ipam": ipam,
        })
    }

    /// The default configuration: one /24.
    pub fn conf(&self, version: &str, subnet: &str) -> Value {
        self.conf_with(
            version,
            json!({"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": self.data_dir.path()}),
        )
    }

    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.path().join(&self.network)
    }

    /// Reserved addresses in the store (files named by an IP).
    pub fn reserved(&self) -> BTreeSet<String> {
        let Ok(rd) = std::fs::read_dir(self.store_dir()) else { return BTreeSet::new() };
        rd.flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect()
    }

    /// Call a plugin binary the way a runtime does, inside this node's namespace.
    pub fn call(&self, bin: &str, env: &[(&str, &str)], stdin: &[u8]) -> Reply {
        call_in(&self.ns, bin, env, stdin)
    }

    /// Call our plugin for one attachment.
    pub fn cni(&self, cmd: &str, id: &str, netns: &str, conf: &Value) -> Reply {
        self.call(
            BIN,
            &[
                ("CNI_COMMAND", cmd),
                ("CNI_CONTAINERID", id),
                ("CNI_NETNS", netns),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", REF_DIR),
            ],
            conf.to_string().as_bytes(),
        )
    }
}

/// What a plugin printed and returned.
#[derive(Debug)]
pub struct Reply {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?} stderr {:?}", self.stdout, self.stderr))
    }

    /// Assert success and return the parsed stdout (or Null when empty).
    pub fn expect_ok(&self, what: &str) -> Value {
        assert!(self.ok, "{what} failed: stdout {} stderr {}", self.stdout, self.stderr);
        if self.stdout.trim().is_empty() { Value::Null } else { self.json() }
    }

    /// Assert an error with `code` whose message contains `needle`.
    pub fn expect_err(&self, what: &str, code: u64, needle: &str) -> Value {
        assert!(!self.ok, "{what}: expected failure, got success: {}", self.stdout);
        let v = self.json();
        assert_eq!(v["code"].as_u64(), Some(code), "{what}: {v}");
        let msg = v["msg"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{what}: message {msg:?} does not name {needle:?}");
        v
    }
}

/// Run `bin` in namespace `ns` with exactly the given environment (plus PATH) and stdin.
pub fn call_in(ns: &Netns, bin: &str, env: &[(&str, &str)], stdin: &[u8]) -> Reply {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", ns.path())).arg("--").arg(bin);
    c.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn plugin");
    if let Some(mut si) = child.stdin.take() {
        let _ = si.write_all(stdin);
    }
    let out = child.wait_with_output().expect("wait plugin");
    Reply {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

/// The address (without prefix) of `ips[0]` of a result.
pub fn first_ip(result: &Value) -> String {
    result["ips"][0]["address"].as_str().and_then(|a| a.split('/').next()).unwrap_or_default().to_string()
}
