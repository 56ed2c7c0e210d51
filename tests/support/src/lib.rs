//! Test support shared by the integration suites that need a real control plane.
//!
//! [`ControlPlane`] runs `tests/cluster/start.sh` (etcd + kube-apiserver, built by `tests/cluster/build.sh`) in a
//! temporary directory and stops both by PID on drop; if the test process dies without dropping it, the watchdog
//! start.sh leaves behind (`CAUSEWAY_CLUSTER_OWNER_PID`) stops them when the process exits. [`TestNetns`] moves
//! the calling thread into a network namespace of the test's own, for tests whose objects need non-loopback
//! addresses (the API server refuses loopback endpoint addresses).
//!
//! This is test code: failures panic with a message naming what failed and, for the scripts and kubectl, their
//! stderr.

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// How start.sh reports that kube-apiserver or etcd is not built.
const EXIT_NOT_BUILT: i32 = 3;

/// `tests/cluster/` of the workspace.
fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../cluster")
}

/// Runs `tests/cluster/<name> [--only apiserver] <dir>` with this process as the owner of what it starts.
fn run_script(name: &str, only_apiserver: bool, dir: &Path, address: Option<IpAddr>) -> Output {
    let script = scripts().join(name);
    let mut cmd = Command::new(&script);
    if only_apiserver {
        cmd.args(["--only", "apiserver"]);
    }
    cmd.arg(dir).env("CAUSEWAY_CLUSTER_OWNER_PID", std::process::id().to_string());
    // kube-apiserver keeps serving open watch streams after SIGTERM until they end; test data is disposable, so
    // do not wait long before SIGKILL.
    cmd.env("CAUSEWAY_CLUSTER_STOP_GRACE", "3");
    if let Some(address) = address {
        cmd.env("CAUSEWAY_CLUSTER_ADDRESS", address.to_string());
    }
    cmd.output().unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()))
}

/// How to start a [`ControlPlane`].
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The address the API server binds and advertises (`CAUSEWAY_CLUSTER_ADDRESS`); it must exist in the network
    /// namespace of the calling thread. `None`: start.sh's default, 127.0.0.1.
    pub address: Option<IpAddr>,
}

impl Options {
    pub fn address(mut self, address: IpAddr) -> Self {
        self.address = Some(address);
        self
    }
}

/// etcd + kube-apiserver started by `tests/cluster/start.sh`, in the network namespace of the calling thread;
/// stopped on drop. Set `CAUSEWAY_KEEP_CLUSTER_DIR` to keep the directory (logs, kubeconfigs) after the test.
pub struct ControlPlane {
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
    address: Option<IpAddr>,
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver on loopback. See [`ControlPlane::start_with`].
    pub fn start() -> Self {
        Self::start_with(Options::default())
    }

    /// Starts etcd and kube-apiserver. Fails the test, naming `tests/cluster/build.sh`, when the binaries are
    /// missing. A start that fails otherwise is tried once more in a fresh directory with fresh ports (another
    /// process may take a free port between start.sh picking it and the server binding it).
    pub fn start_with(options: Options) -> Self {
        let mut failures = Vec::new();
        for _ in 0..2 {
            let dir = tempfile::Builder::new()
                .prefix("causeway-cluster-")
                .tempdir()
                .unwrap_or_else(|e| panic!("cannot create a temporary directory for the control plane: {e}"));
            let out = run_script("start.sh", false, dir.path(), options.address);
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            if out.status.code() == Some(EXIT_NOT_BUILT) {
                panic!("kube-apiserver and etcd are not built; run tests/cluster/build.sh first (CI does).\n{stderr}");
            }
            if out.status.success() {
                let env = parse_env(&String::from_utf8_lossy(&out.stdout));
                return Self { dir, env, address: options.address };
            }
            eprintln!("tests/cluster/start.sh failed ({}), trying once more:\n{stderr}", out.status);
            failures.push(stderr);
        }
        panic!("tests/cluster/start.sh failed twice:\n{}", failures.join("\n---\n"));
    }

    /// The directory holding everything of this control plane (pki/, logs, kubeconfigs, `env`); tests may put
    /// their own files here too.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A value of the `env` file start.sh writes (APISERVER_URL, KUBECONFIG, KUBECTL, CA_FILE, ...).
    pub fn env(&self, key: &str) -> &str {
        self.env.get(key).unwrap_or_else(|| {
            let mut keys: Vec<&str> = self.env.keys().map(String::as_str).collect();
            keys.sort_unstable();
            panic!("tests/cluster/start.sh reported no {key}; it reported {keys:?}")
        })
    }

    /// The kubeconfig of `causeway-admin` (group system:masters).
    pub fn kubeconfig(&self) -> &str {
        self.env("KUBECONFIG")
    }

    /// The kubeconfig of `causeway-limited` (group `causeway:limited`), which has no RBAC bindings.
    pub fn limited_kubeconfig(&self) -> &str {
        self.env("LIMITED_KUBECONFIG")
    }

    /// Runs the matching kubectl as the admin user, with `stdin` on its standard input. Panics only when kubectl
    /// cannot be run at all.
    pub fn kubectl_output(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let kubectl = self.env("KUBECTL");
        let mut child = Command::new(kubectl)
            .args(["--kubeconfig", self.kubeconfig()])
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {kubectl} (built by tests/cluster/build.sh): {e}"));
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).unwrap_or_else(|e| panic!("kubectl {args:?}: writing stdin: {e}"));
        }
        child.wait_with_output().unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
    }

    /// kubectl as the admin user: its stdout, or its stderr as the error.
    pub fn try_kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        let out = self.kubectl_output(args, stdin);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!("kubectl {args:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr)))
        }
    }

    /// kubectl as the admin user: its stdout; panics with its stderr when it fails.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        self.try_kubectl(args, stdin).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `kubectl apply -f -` with `yaml`, as the admin user; panics when it fails.
    pub fn apply(&self, yaml: &str) {
        self.kubectl(&["apply", "-f", "-"], Some(yaml));
    }

    /// Stops only the API server (etcd keeps the data), as an outage would.
    pub fn stop_apiserver(&self) {
        self.only_apiserver("stop.sh");
    }

    /// Starts the API server again on the same port, and waits until it is ready.
    pub fn start_apiserver(&self) {
        self.only_apiserver("start.sh");
    }

    fn only_apiserver(&self, name: &str) {
        let out = run_script(name, true, self.dir(), self.address);
        assert!(
            out.status.success(),
            "tests/cluster/{name} --only apiserver failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let out = run_script("stop.sh", false, self.dir.path(), self.address);
        if !out.status.success() {
            eprintln!("tests/cluster/stop.sh failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
        }
        if std::env::var_os("CAUSEWAY_KEEP_CLUSTER_DIR").is_some() {
            match tempfile::tempdir() {
                Ok(empty) => {
                    let kept = std::mem::replace(&mut self.dir, empty);
                    eprintln!("cluster directory kept: {}", kept.keep().display());
                }
                Err(e) => eprintln!("cannot keep the cluster directory {}: {e}", self.dir.path().display()),
            }
        }
    }
}

/// The `KEY=VALUE` lines start.sh prints (the same as its `env` file).
fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// A network namespace of this test's own, with `lo` up and holding the given addresses; the calling thread
/// enters it, and threads and processes started from that thread afterwards inherit it. The host's namespace is
/// never touched. Deleted on drop; drop it after everything running in it (declare it first).
pub struct TestNetns(String);

impl TestNetns {
    /// Creates `<prefix><pid>` (a leftover of a killed run of the same name is deleted first) and moves the
    /// calling thread into it. The name must fit the kernel's 15 characters.
    pub fn enter(prefix: &str, lo_addresses: &[IpAddr]) -> Self {
        assert!(nix::unistd::geteuid().is_root(), "this test creates a network namespace: run it as root");
        let name = format!("{prefix}{}", std::process::id());
        assert!(name.len() <= 15, "network namespace name {name:?} is longer than 15 characters");
        let _ = Command::new("ip").args(["netns", "del", &name]).output(); // a leftover of a killed run
        ip(&["netns", "add", &name]);
        let ns = TestNetns(name);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
        for address in lo_addresses {
            let prefix_len = if address.is_ipv4() { 32 } else { 128 };
            // On `lo` of the namespace: no dummy-link module needed, and the address exists only in here.
            ip(&["-n", &ns.0, "addr", "add", &format!("{address}/{prefix_len}"), "dev", "lo"]);
        }
        let path = format!("/run/netns/{}", ns.0);
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns into the test namespace {}: {e}", ns.0));
        ns
    }

    pub fn name(&self) -> &str {
        &self.0
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// `ip <args>`; panics with its stderr when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| panic!("cannot run ip (iproute2): {e}"));
    assert!(out.status.success(), "ip {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_env_lines_of_start_sh() {
        let env = parse_env("APISERVER_URL=https://127.0.0.1:6443\nKUBECONFIG=/d/admin.kubeconfig\nnoise\nA=b=c\n");
        let cases = [
            ("APISERVER_URL", Some("https://127.0.0.1:6443")),
            ("KUBECONFIG", Some("/d/admin.kubeconfig")),
            ("A", Some("b=c")),
            ("noise", None),
        ];
        for (key, want) in cases {
            assert_eq!(env.get(key).map(String::as_str), want, "{key}");
        }
        assert_eq!(env.len(), 3);
    }
}
