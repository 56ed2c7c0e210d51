//! Calling CNI plugins exactly as containerd (go-cni + libcni) does: the first `*.conf`/`*.conflist`/`*.json` of
//! the node's conf dir in lexical order is the pod network; each plugin of the list is executed from `CNI_PATH`
//! with the `CNI_*` environment and the plugin object on stdin, with `name` and `cniVersion` injected,
//! `runtimeConfig` built from the capabilities the plugin declares, and `prevResult` chained through the list.
//! DEL runs the list in reverse with the final ADD result as `prevResult`.
//!
//! The plugins run inside the node's network namespace (`ip netns exec`), which is the "host" namespace a
//! runtime on that node would run them in.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::sys;

/// The highest spec version this "runtime" implements (libcni 1.3).
const RUNTIME_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// How long one plugin call may take (containerd's CNI calls are bounded by the CRI request deadline).
const PLUGIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A loaded network configuration list.
#[derive(Debug, Clone)]
pub struct NetworkList {
    /// The file it came from.
    pub file: PathBuf,
    /// `name`.
    pub name: String,
    /// The negotiated `cniVersion`.
    pub version: String,
    /// The plugin objects, in order.
    pub plugins: Vec<Value>,
}

fn version_key(v: &str) -> Vec<u32> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// Loads the pod network from `conf_dir` as go-cni does (lexically first of `*.conf`, `*.conflist`, `*.json`).
pub fn load_network(conf_dir: &Path) -> Result<NetworkList> {
    let entries = std::fs::read_dir(conf_dir).map_err(|e| Error::io(format!("listing {}", conf_dir.display()), e))?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("conf" | "conflist" | "json")))
        .collect();
    files.sort();
    let file = files
        .into_iter()
        .next()
        .ok_or_else(|| Error::check(format!("no CNI configuration in {}", conf_dir.display())))?;
    let text = std::fs::read_to_string(&file).map_err(|e| Error::io(format!("reading {}", file.display()), e))?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| Error::check(format!("{}: invalid JSON: {e}", file.display())))?;
    parse_network(&v, file)
}

/// Parses a conflist (or a single-plugin `.conf`, which libcni wraps into a list) and negotiates the version.
pub fn parse_network(v: &Value, file: PathBuf) -> Result<NetworkList> {
    let bad = |msg: &str| Error::check(format!("{}: {msg}", file.display()));
    let name = v.get("name").and_then(Value::as_str).ok_or_else(|| bad("no `name`"))?.to_string();
    let plugins = match v.get("plugins") {
        Some(Value::Array(ps)) if !ps.is_empty() => ps.clone(),
        Some(_) => return Err(bad("`plugins` is not a non-empty array")),
        None if v.get("type").is_some() => vec![v.clone()],
        None => return Err(bad("neither `plugins` nor `type`")),
    };
    // libcni: the highest of cniVersion ∪ cniVersions that the runtime implements.
    let mut candidates: Vec<String> = v
        .get("cniVersions")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    if let Some(cv) = v.get("cniVersion").and_then(Value::as_str) {
        candidates.push(cv.to_string());
    }
    candidates.retain(|c| RUNTIME_VERSIONS.contains(&c.as_str()));
    candidates.sort_by_key(|c| version_key(c));
    let version = candidates.pop().ok_or_else(|| bad("no cniVersion this runtime implements"))?;
    Ok(NetworkList { file, name, version, plugins })
}

/// Per-call parameters.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    /// The node namespace the plugins run in.
    pub node_ns: &'a str,
    /// `CNI_PATH`.
    pub bin_dir: &'a Path,
    /// `CNI_CONTAINERID`.
    pub container_id: &'a str,
    /// `CNI_NETNS`.
    pub netns_path: &'a str,
    /// `CNI_IFNAME`.
    pub ifname: &'a str,
    /// Pod name, for `CNI_ARGS`.
    pub pod_name: &'a str,
    /// The `portMappings` capability argument (hostPort → containerPort, protocol).
    pub port_mappings: &'a [(u16, u16, &'a str)],
}

impl Invocation<'_> {
    fn cni_args(&self) -> String {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID=uid-{}",
            self.pod_name, self.container_id, self.pod_name
        )
    }

    /// The capability arguments a runtime has for this pod.
    fn capability_args(&self) -> Map<String, Value> {
        let mut m = Map::new();
        if !self.port_mappings.is_empty() {
            let pm: Vec<Value> = self
                .port_mappings
                .iter()
                .map(
                    |(host, container, proto)| json!({"hostPort": host, "containerPort": container, "protocol": proto}),
                )
                .collect();
            m.insert("portMappings".into(), Value::Array(pm));
        }
        m
    }

    /// The stdin of one plugin: its object plus `name`, `cniVersion`, `runtimeConfig` and `prevResult`.
    fn stdin_for(&self, net: &NetworkList, plugin: &Value, prev: Option<&Value>) -> Value {
        let mut obj = plugin.as_object().cloned().unwrap_or_default();
        obj.insert("name".into(), json!(net.name));
        obj.insert("cniVersion".into(), json!(net.version));
        let caps = obj.get("capabilities").and_then(Value::as_object).cloned().unwrap_or_default();
        let mut rc = Map::new();
        for (k, v) in self.capability_args() {
            if caps.get(&k).and_then(Value::as_bool) == Some(true) {
                rc.insert(k, v);
            }
        }
        if !rc.is_empty() {
            obj.insert("runtimeConfig".into(), Value::Object(rc));
        }
        if let Some(p) = prev {
            obj.insert("prevResult".into(), p.clone());
        }
        Value::Object(obj)
    }

    fn exec(&self, command: &str, plugin_type: &str, stdin: &Value) -> Result<Value> {
        let fail = |msg: String| Error::Cni { command: command.into(), container: self.container_id.into(), msg };
        let bin = self.bin_dir.join(plugin_type);
        if !bin.exists() {
            return Err(fail(format!("plugin {plugin_type:?} not found in CNI_PATH {}", self.bin_dir.display())));
        }
        let mut cmd = sys::in_ns(self.node_ns, &bin);
        cmd.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", self.container_id)
            .env("CNI_NETNS", self.netns_path)
            .env("CNI_IFNAME", self.ifname)
            .env("CNI_ARGS", self.cni_args())
            .env("CNI_PATH", self.bin_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| fail(format!("starting {}: {e}", bin.display())))?;
        if let Some(mut input) = child.stdin.take() {
            input.write_all(stdin.to_string().as_bytes()).map_err(|e| fail(format!("writing stdin: {e}")))?;
        }
        // A plugin that hangs (a lock never released) must fail the check, not hang the suite: wait on another
        // thread and kill the plugin by PID after the deadline.
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let out = match rx.recv_timeout(PLUGIN_TIMEOUT) {
            Ok(r) => r.map_err(|e| fail(format!("waiting: {e}")))?,
            Err(_) => {
                if let Ok(pid) = i32::try_from(pid) {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                }
                return Err(fail(format!("{plugin_type} did not finish within {PLUGIN_TIMEOUT:?}; killed")));
            }
        };
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if !out.status.success() {
            // libcni: the error is the JSON on stdout; stderr only when stdout is empty.
            let msg = match serde_json::from_str::<Value>(&stdout) {
                Ok(v) => format!(
                    "{plugin_type} exited {}: code {} msg {:?} details {:?}",
                    out.status,
                    v.get("code").cloned().unwrap_or(Value::Null),
                    v.get("msg").and_then(Value::as_str).unwrap_or_default(),
                    v.get("details").and_then(Value::as_str).unwrap_or_default()
                ),
                Err(_) => format!(
                    "{plugin_type} exited {} with no error JSON; stdout {stdout:?} stderr {stderr:?}",
                    out.status
                ),
            };
            return Err(fail(msg));
        }
        if stdout.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&stdout).map_err(|e| fail(format!("{plugin_type}: result is not JSON ({e}): {stdout:?}")))
    }

    /// ADD through the whole list; the final result.
    pub fn add(&self, net: &NetworkList) -> Result<Value> {
        let mut prev: Option<Value> = None;
        for plugin in &net.plugins {
            let ty = plugin.get("type").and_then(Value::as_str).unwrap_or_default();
            let stdin = self.stdin_for(net, plugin, prev.as_ref());
            prev = Some(self.exec("ADD", ty, &stdin)?);
        }
        prev.ok_or_else(|| Error::check("empty plugin list"))
    }

    /// DEL through the list in reverse, each plugin given the final ADD result (when known).
    pub fn del(&self, net: &NetworkList, result: Option<&Value>) -> Result<()> {
        for plugin in net.plugins.iter().rev() {
            let ty = plugin.get("type").and_then(Value::as_str).unwrap_or_default();
            let stdin = self.stdin_for(net, plugin, result);
            self.exec("DEL", ty, &stdin)?;
        }
        Ok(())
    }
}

/// containerd's acceptance of an ADD result: an interface named `ifname` whose sandbox is the pod's netns, with at
/// least one IP pointing at it (IPs without an index count for `eth0`). Returns the pod IP (the first IPv4).
pub fn pod_ip(result: &Value, ifname: &str, netns_path: &str) -> Result<Ipv4Addr> {
    let bad = |msg: String| Error::check(format!("ADD result rejected as containerd would: {msg}; result: {result}"));
    let ifaces = result.get("interfaces").and_then(Value::as_array).cloned().unwrap_or_default();
    let idx = ifaces
        .iter()
        .position(|i| i.get("name").and_then(Value::as_str) == Some(ifname))
        .ok_or_else(|| bad(format!("no interface named {ifname}")))?;
    let sandbox = ifaces[idx].get("sandbox").and_then(Value::as_str).unwrap_or_default();
    if sandbox != netns_path {
        return Err(bad(format!("interface {ifname} has sandbox {sandbox:?}, want {netns_path:?}")));
    }
    let ips = result.get("ips").and_then(Value::as_array).cloned().unwrap_or_default();
    for ip in &ips {
        let on_if = match ip.get("interface").and_then(Value::as_u64) {
            Some(i) => {
                if i as usize >= ifaces.len() {
                    return Err(bad(format!("ips[].interface {i} out of range")));
                }
                i as usize == idx
            }
            None => ifname == "eth0",
        };
        let addr = ip.get("address").and_then(Value::as_str).unwrap_or_default();
        if let (true, Some(Ok(v4))) = (on_if, addr.split('/').next().map(str::parse::<Ipv4Addr>)) {
            return Ok(v4);
        }
    }
    Err(bad(format!("no IPv4 address on {ifname}")))
}

/// Links a plugin binary into a node's CNI bin dir (what a node image or an installer DaemonSet does).
pub fn install_plugin(bin_dir: &Path, name: &str, from: &Path) -> Result<()> {
    let dst = bin_dir.join(name);
    if dst.exists() {
        return Ok(());
    }
    std::os::unix::fs::symlink(from, &dst)
        .map_err(|e| Error::io(format!("linking {} to {}", dst.display(), from.display()), e))
}

/// Where a host keeps the reference plugins (`containernetworking-plugins`), for chained types we do not build.
pub fn find_reference_plugin(name: &str) -> Option<PathBuf> {
    ["/opt/cni/bin", "/usr/lib/cni", "/usr/libexec/cni"].iter().map(|d| Path::new(d).join(name)).find(|p| p.exists())
}

/// `mkdir -p`, with the path in the error.
pub fn ensure_dir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).map_err(|e| Error::io(format!("creating {}", p.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_the_highest_common_version() {
        let v = json!({"name": "n", "cniVersion": "1.0.0", "cniVersions": ["0.4.0", "1.1.0", "9.9.9"], "plugins": [{"type": "x"}]});
        assert_eq!(parse_network(&v, "f".into()).unwrap().version, "1.1.0");
        let single = json!({"name": "n", "cniVersion": "0.3.1", "type": "bridge"});
        let net = parse_network(&single, "f".into()).unwrap();
        assert_eq!((net.version.as_str(), net.plugins.len()), ("0.3.1", 1));
        assert!(parse_network(&json!({"name": "n", "cniVersion": "0.2.0", "type": "x"}), "f".into()).is_err());
    }

    #[test]
    fn runtime_config_only_for_declared_capabilities() {
        let net = parse_network(&json!({"name": "n", "cniVersion": "1.0.0", "plugins": [{"type": "a"}]}), "f".into())
            .unwrap();
        let pm = [(8080, 80, "tcp")];
        let inv = Invocation {
            node_ns: "x",
            bin_dir: Path::new("/nonexistent"),
            container_id: "c",
            netns_path: "/run/netns/p",
            ifname: "eth0",
            pod_name: "p",
            port_mappings: &pm,
        };
        let plain = inv.stdin_for(&net, &json!({"type": "a"}), None);
        assert!(plain.get("runtimeConfig").is_none());
        assert_eq!(plain["name"], "n");
        let with = inv.stdin_for(
            &net,
            &json!({"type": "portmap", "capabilities": {"portMappings": true}}),
            Some(&json!({"ips": []})),
        );
        assert_eq!(with["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
        assert!(with.get("prevResult").is_some());
    }

    #[test]
    fn containerd_result_rules() {
        let ns = "/run/netns/p";
        let ok = json!({"interfaces": [{"name": "cni0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": ns}],
            "ips": [{"address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 2}]});
        assert_eq!(pod_ip(&ok, "eth0", ns).unwrap(), Ipv4Addr::new(10, 244, 1, 5));
        let wrong_index = json!({"interfaces": [{"name": "eth0", "sandbox": ns}], "ips": [{"address": "10.0.0.1/24", "interface": 3}]});
        assert!(pod_ip(&wrong_index, "eth0", ns).is_err());
        let no_iface = json!({"interfaces": [], "ips": [{"address": "10.0.0.1/24"}]});
        assert!(pod_ip(&no_iface, "eth0", ns).is_err());
    }
}
