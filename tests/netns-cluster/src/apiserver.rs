//! The real control plane as the cluster's source: `tests/cluster/start.sh` (etcd + kube-apiserver, binaries
//! cached by `tests/cluster/build.sh`) run inside the underlay namespace, the API server bound to and advertising
//! the node network's gateway address (172.18.0.1), etcd on that namespace's loopback. Node agents and the edge
//! proxy reach it over the test network with the admin kubeconfig; the root namespace never sees it.
//!
//! The harness writes objects with `kubectl` (the one start.sh names), run inside the underlay namespace: a group
//! of objects (a "stem", one file in manifests mode) is applied server-side in one call, statuses go through the
//! status subresource, and objects that left the group are deleted, so both sources see the same changes.
//!
//! Every component runs as its own ServiceAccount from the kustomize base (`manifests/`: the Namespace, the
//! RBAC and the CRDs are applied at start): its kubeconfig is the admin's with `as:
//! system:serviceaccount:causeway-system:NAME`, so the API server impersonates the account and authorizes every
//! request against the ClusterRoles we ship. A missing grant fails the component's start-up access check.
//!
//! Clean-up: [`ApiServer`]'s drop runs `stop.sh`; start.sh's watchdog (`CAUSEWAY_CLUSTER_OWNER_PID`, the test
//! process) stops it if the test process is killed, and the sweep of a killed run kills whatever is left in its
//! underlay namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::sys;
use crate::yaml;

/// `tests/cluster/` of this repository.
pub fn cluster_scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../cluster")
}

/// The repository's kustomize base (`manifests/`), whose Namespace, CustomResourceDefinitions and RBAC are
/// installed at start.
pub fn manifests_base() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests")
}

/// How long to wait for a CustomResourceDefinition to be served before an object of its kind is refused.
const CRD_WAIT: Duration = Duration::from_secs(15);

/// A start.sh that is running in the background (the API server takes seconds to be ready; the harness builds
/// the rest of the network meanwhile).
#[derive(Debug)]
pub struct Starting {
    child: Child,
    dir: PathBuf,
    ns: String,
}

/// A running control plane.
#[derive(Debug)]
pub struct ApiServer {
    /// start.sh's directory (pki, logs, kubeconfigs, `env`).
    pub dir: PathBuf,
    /// `https://172.18.0.1:PORT`.
    pub url: String,
    /// The admin kubeconfig (user in `system:masters`): the harness's own.
    pub kubeconfig: PathBuf,
    /// The node agents' kubeconfig: ServiceAccount `causeway-system/causeway-node`.
    pub node_kubeconfig: PathBuf,
    /// The edge proxy's kubeconfig: ServiceAccount `causeway-system/causeway`.
    pub proxy_kubeconfig: PathBuf,
    /// The kubectl start.sh names.
    pub kubectl: PathBuf,
    /// The namespace everything runs in and kubectl is run from.
    pub ns: String,
    /// The objects each stem holds now (to delete those a later write leaves out).
    written: Mutex<BTreeMap<String, BTreeSet<ObjRef>>>,
    stopped: bool,
}

impl ApiServer {
    /// Starts `tests/cluster/start.sh DIR` inside namespace `ns`, binding the API server to `address` (which must
    /// exist there). Returns at once; [`Starting::wait`] waits for it.
    pub fn start(ns: &str, address: std::net::Ipv4Addr, dir: &Path) -> Result<Starting> {
        let script = cluster_scripts().join("start.sh");
        let mut cmd = sys::in_ns(ns, &script);
        cmd.arg(dir)
            .env("CAUSEWAY_CLUSTER_ADDRESS", address.to_string())
            .env("CAUSEWAY_CLUSTER_OWNER_PID", std::process::id().to_string())
            .env("CAUSEWAY_CLUSTER_STOP_GRACE", "3")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().map_err(|e| Error::Command {
            cmd: sys::describe(&cmd),
            status: "not started".into(),
            output: e.to_string(),
        })?;
        Ok(Starting { child, dir: dir.to_path_buf(), ns: ns.to_string() })
    }

    /// Runs kubectl (as the admin) inside the namespace with `stdin`; its stdout.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        self.kubectl_with(&self.kubeconfig, args, stdin)
    }

    /// Runs kubectl with `kubeconfig` (a component's identity) inside the namespace with `stdin`; its stdout.
    pub fn kubectl_with(&self, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut cmd = sys::in_ns(&self.ns, &self.kubectl);
        cmd.arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.join("kubectl-cache"))
            .arg("--request-timeout=10s")
            .args(args);
        let Some(input) = stdin else { return sys::run(&mut cmd) };
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let what = sys::describe(&cmd);
        let mut child = cmd.spawn().map_err(|e| Error::Command {
            cmd: what.clone(),
            status: "not started".into(),
            output: e.to_string(),
        })?;
        if let Some(mut pipe) = child.stdin.take() {
            pipe.write_all(input.as_bytes()).map_err(|e| Error::io(format!("writing to {what}"), e))?;
        }
        let out = child.wait_with_output().map_err(|e| Error::io(format!("waiting for {what}"), e))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(Error::Command {
                cmd: what,
                status: out.status.to_string(),
                output: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// Installs what the kustomize base (`manifests/`) gives a cluster before the workloads: the Namespace,
    /// the CustomResourceDefinitions (so IPPools can be written as in manifests mode) and the components' RBAC.
    pub fn install_base(&self) -> Result<()> {
        let base = manifests_base();
        let entries = std::fs::read_dir(&base).map_err(|e| Error::io(format!("listing {}", base.display()), e))?;
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(is_base_file))
            .collect();
        // The Namespace before the objects in it (kubectl applies a stream in order).
        files.sort_by_key(|p| (!p.ends_with("namespace.yaml"), p.clone()));
        let mut text = String::new();
        for f in files {
            let t = std::fs::read_to_string(&f).map_err(|e| Error::io(format!("reading {}", f.display()), e))?;
            text.push_str(&t);
            text.push_str("\n---\n");
        }
        self.kubectl(&["apply", "--server-side", "--field-manager=netns-cluster", "-f", "-"], Some(&text))
            .map(drop)
            .map_err(|e| Error::check(format!("installing the kustomize base's namespace, CRDs and RBAC: {e}")))
    }

    /// Makes the objects of group `stem` exactly `docs`: applies them (server-side), writes their statuses
    /// through the status subresource, and deletes the objects an earlier write of `stem` had and this one has
    /// not.
    pub fn write(&self, stem: &str, docs: &[Value]) -> Result<()> {
        let refs: BTreeSet<ObjRef> = docs.iter().map(ObjRef::of).collect::<Result<_>>()?;
        let bodies: Vec<Value> = docs.iter().map(for_apply).collect();
        self.with_crd_retry(stem, || {
            self.kubectl(
                &["apply", "--server-side", "--force-conflicts", "--field-manager=netns-cluster", "-f", "-"],
                Some(&yaml::to_yaml_stream(&bodies)),
            )
        })?;
        let statuses: Vec<Value> = docs.iter().filter_map(with_status).collect();
        if !statuses.is_empty() {
            // A PUT to each object's /status: only its status changes (spec is the status strategy's to ignore).
            self.kubectl(&["replace", "--subresource=status", "-f", "-"], Some(&yaml::to_yaml_stream(&statuses)))?;
        }
        let mut written = self.written.lock();
        let before = written.remove(stem).unwrap_or_default();
        self.delete(stem, before.difference(&refs))?;
        written.insert(stem.to_string(), refs);
        Ok(())
    }

    /// Deletes every object group `stem` holds.
    pub fn remove(&self, stem: &str) -> Result<()> {
        let mut written = self.written.lock();
        let before = written.remove(stem).unwrap_or_default();
        self.delete(stem, before.iter())
    }

    fn delete<'a>(&self, stem: &str, refs: impl Iterator<Item = &'a ObjRef>) -> Result<()> {
        let docs: Vec<Value> = refs.map(ObjRef::to_value).collect();
        if docs.is_empty() {
            return Ok(());
        }
        self.kubectl(&["delete", "--ignore-not-found", "--wait=false", "-f", "-"], Some(&yaml::to_yaml_stream(&docs)))
            .map_err(|e| Error::check(format!("deleting what left group {stem}: {e}")))?;
        Ok(())
    }

    /// Runs `f`, again while it fails because a kind is not served yet (a CRD installed moments ago).
    fn with_crd_retry(&self, stem: &str, mut f: impl FnMut() -> Result<String>) -> Result<String> {
        let deadline = Instant::now() + CRD_WAIT;
        loop {
            match f() {
                Err(e) if is_unknown_kind(&e.to_string()) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(Error::check(format!("writing group {stem} to the API server: {e}"))),
                Ok(out) => return Ok(out),
            }
        }
    }

    /// The API server's log tail (for failed checks).
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join("apiserver.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Runs `stop.sh` (TERM, then KILL after 3 s), once.
    pub fn stop(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.stopped, true) {
            return Ok(());
        }
        sys::run(Command::new(cluster_scripts().join("stop.sh")).arg(&self.dir).env("CAUSEWAY_CLUSTER_STOP_GRACE", "3"))
            .map(drop)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("stopping the control plane in {}: {e}", self.dir.display());
        }
    }
}

impl Starting {
    /// Waits for start.sh to finish (the API server answers `/readyz`) and reads the `env` it prints.
    pub fn wait(self) -> Result<ApiServer> {
        let out = self.child.wait_with_output().map_err(|e| Error::io("waiting for tests/cluster/start.sh", e))?;
        // From here on the control plane may be running: the guard stops it whatever happens next.
        let mut plane = ApiServer {
            dir: self.dir.clone(),
            url: String::new(),
            kubeconfig: PathBuf::new(),
            node_kubeconfig: PathBuf::new(),
            proxy_kubeconfig: PathBuf::new(),
            kubectl: PathBuf::new(),
            ns: self.ns,
            written: Mutex::new(BTreeMap::new()),
            stopped: false,
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() == Some(3) {
            return Err(Error::check(format!(
                "kube-apiserver/etcd are not built: run tests/cluster/build.sh first.\n{}",
                stderr.trim()
            )));
        }
        if !out.status.success() {
            return Err(Error::check(format!("tests/cluster/start.sh failed ({}):\n{}", out.status, stderr.trim())));
        }
        let env = parse_env(&String::from_utf8_lossy(&out.stdout));
        let get = |k: &str| {
            env.get(k).cloned().ok_or_else(|| Error::check(format!("tests/cluster/start.sh printed no {k}= line")))
        };
        plane.url = get("APISERVER_URL")?;
        plane.kubeconfig = PathBuf::from(get("KUBECONFIG")?);
        let admin = std::fs::read_to_string(&plane.kubeconfig)
            .map_err(|e| Error::io(format!("reading {}", plane.kubeconfig.display()), e))?;
        for (file, account) in [("node.kubeconfig", "causeway-node"), ("proxy.kubeconfig", "causeway")] {
            let path = plane.dir.join(file);
            let text = impersonating(&admin, &format!("system:serviceaccount:causeway-system:{account}"))?;
            std::fs::write(&path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
            if account == "causeway" {
                plane.proxy_kubeconfig = path;
            } else {
                plane.node_kubeconfig = path;
            }
        }
        plane.kubectl = PathBuf::from(get("KUBECTL")?);
        if !plane.kubectl.is_file() {
            return Err(Error::check(format!(
                "kubectl {} (KUBECTL of start.sh) is missing: run tests/cluster/build.sh",
                plane.kubectl.display()
            )));
        }
        Ok(plane)
    }
}

/// `KEY=VALUE` lines (start.sh's `env`).
pub fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The files of `manifests/` installed before the workloads: the Namespace, CRDs and RBAC (not the Deployment
/// or DaemonSet: there is no kubelet; the harness runs the processes itself).
fn is_base_file(name: &str) -> bool {
    name == "namespace.yaml" || (name.ends_with(".yaml") && (name.starts_with("crd-") || name.ends_with("-rbac.yaml")))
}

/// start.sh's single-user kubeconfig with `as: USER` added to its user, so the API server impersonates `user`.
pub fn impersonating(kubeconfig: &str, user: &str) -> Result<String> {
    let mut out = String::with_capacity(kubeconfig.len() + 80);
    let mut added = 0;
    for line in kubeconfig.lines() {
        out.push_str(line);
        out.push('\n');
        if line == "  user:" {
            // JSON string quoting is valid YAML and keeps the colons of the name a scalar.
            out.push_str(&format!("    as: {}\n", Value::String(user.to_string())));
            added += 1;
        }
    }
    if added == 1 {
        Ok(out)
    } else {
        Err(Error::check(format!("the kubeconfig has {added} `  user:` lines, want 1 (start.sh's format changed?)")))
    }
}

/// Whether kubectl failed because the kind is not served (yet).
fn is_unknown_kind(msg: &str) -> bool {
    msg.contains("no matches for kind") || msg.contains("ensure CRDs are installed")
}

/// One object's identity: what `kubectl delete -f` needs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjRef {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// `metadata.namespace` (none for cluster-scoped objects).
    pub namespace: Option<String>,
    /// `metadata.name`.
    pub name: String,
}

impl ObjRef {
    /// The identity of `doc`, or an error naming the missing field.
    pub fn of(doc: &Value) -> Result<Self> {
        let field = |path: &[&str]| -> Option<String> {
            let mut v = doc;
            for p in path {
                v = v.get(p)?;
            }
            v.as_str().map(str::to_string)
        };
        let kind = field(&["kind"]).ok_or_else(|| Error::check(format!("an object without kind: {doc}")))?;
        let name = field(&["metadata", "name"])
            .filter(|n| !n.is_empty())
            .ok_or_else(|| Error::check(format!("a {kind} without metadata.name")))?;
        let api_version =
            field(&["apiVersion"]).ok_or_else(|| Error::check(format!("{kind} {name}: no apiVersion")))?;
        Ok(Self { api_version, kind, namespace: field(&["metadata", "namespace"]), name })
    }

    /// The minimal object naming it.
    pub fn to_value(&self) -> Value {
        let mut meta = json!({"name": self.name});
        if let Some(ns) = &self.namespace {
            meta["namespace"] = json!(ns);
        }
        json!({"apiVersion": self.api_version, "kind": self.kind, "metadata": meta})
    }
}

/// `doc` as the harness applies it: without status (written through the subresource) and without the fields the
/// API server owns (`uid`, `creationTimestamp`, `resourceVersion`), which the manifests source takes as given.
pub fn for_apply(doc: &Value) -> Value {
    let mut v = doc.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in ["uid", "creationTimestamp", "resourceVersion"] {
            meta.remove(k);
        }
    }
    v
}

/// `doc` as the body of a PUT to its status subresource, when it has a status worth writing (a non-empty object).
pub fn with_status(doc: &Value) -> Option<Value> {
    let status = doc.get("status")?;
    if status.as_object().is_none_or(|o| o.is_empty()) {
        return None;
    }
    let mut v = for_apply(doc);
    v["status"] = status.clone();
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_identities() {
        let cases: &[(Value, std::result::Result<ObjRef, &str>)] = &[
            (
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"}}),
                Ok(ObjRef {
                    api_version: "v1".into(),
                    kind: "Service".into(),
                    namespace: Some("default".into()),
                    name: "web".into(),
                }),
            ),
            (
                json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node1"}}),
                Ok(ObjRef { api_version: "v1".into(), kind: "Node".into(), namespace: None, name: "node1".into() }),
            ),
            (json!({"apiVersion": "v1", "metadata": {"name": "x"}}), Err("without kind")),
            (json!({"apiVersion": "v1", "kind": "Secret", "metadata": {}}), Err("a Secret without metadata.name")),
            (json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": ""}}), Err("without metadata.name")),
            (json!({"kind": "Secret", "metadata": {"name": "s"}}), Err("Secret s: no apiVersion")),
        ];
        for (doc, want) in cases {
            match (ObjRef::of(doc), want) {
                (Ok(got), Ok(want)) => {
                    assert_eq!(&got, want, "{doc}");
                    assert_eq!(ObjRef::of(&got.to_value()).ok().as_ref(), Some(want), "round trip of {doc}");
                }
                (Err(e), Err(needle)) => assert!(e.to_string().contains(needle), "{doc}: {e}"),
                (got, want) => panic!("{doc}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn apply_and_status_bodies() {
        let svc = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "lb", "namespace": "default", "uid": "uid-svc-lb", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"type": "LoadBalancer"},
            "status": {"loadBalancer": {"ingress": [{"ip": "172.18.255.201"}]}},
        });
        let applied = for_apply(&svc);
        assert_eq!(applied["metadata"], json!({"name": "lb", "namespace": "default"}));
        assert!(applied.get("status").is_none());
        let status = with_status(&svc).expect("a status to write");
        assert_eq!(status["status"], svc["status"]);
        assert_eq!(status["metadata"], applied["metadata"]);
        for none in [
            json!({"kind": "Service", "metadata": {"name": "a"}, "status": {}}),
            json!({"kind": "Secret", "metadata": {"name": "a"}}),
            json!({"kind": "Service", "metadata": {"name": "a"}, "status": null}),
        ] {
            assert_eq!(with_status(&none), None, "{none}");
        }
    }

    #[test]
    fn impersonating_kubeconfigs() {
        let admin = "users:\n- name: admin\n  user:\n    client-certificate-data: QQ==\ncontexts: []\n";
        let got = impersonating(admin, "system:serviceaccount:causeway-system:causeway").expect("one user");
        assert_eq!(
            got,
            "users:\n- name: admin\n  user:\n    as: \"system:serviceaccount:causeway-system:causeway\"\n    \
             client-certificate-data: QQ==\ncontexts: []\n"
        );
        assert!(impersonating("users: []\n", "x").is_err());
        assert!(impersonating("  user:\n  user:\n", "x").is_err());
    }

    #[test]
    fn base_files() {
        for (name, want) in [
            ("namespace.yaml", true),
            ("crd-ippool.yaml", true),
            ("node-rbac.yaml", true),
            ("controller-rbac.yaml", true),
            ("controller-deployment.yaml", false),
            ("node-daemonset.yaml", false),
            ("kustomization.yaml", false),
            ("crd-ippool.yaml.orig", false),
        ] {
            assert_eq!(is_base_file(name), want, "{name}");
        }
    }

    #[test]
    fn env_lines() {
        let env = parse_env("DIR=/tmp/x\nAPISERVER_URL=https://172.18.0.1:4000\nnoise\nlower=x\nKUBECTL=/k=v\n");
        assert_eq!(env.get("APISERVER_URL").map(String::as_str), Some("https://172.18.0.1:4000"));
        assert_eq!(env.get("KUBECTL").map(String::as_str), Some("/k=v"));
        assert!(!env.contains_key("lower"));
        assert_eq!(env.len(), 3);
    }

    #[test]
    fn unknown_kind_errors() {
        assert!(is_unknown_kind(
            "error: resource mapping not found for name: \"outside\" namespace: \"\" from \"STDIN\": no matches for kind \"IPPool\" in version \"causeway.dev/v1alpha1\"\nensure CRDs are installed first"
        ));
        assert!(!is_unknown_kind("The Service \"web\" is invalid: spec.clusterIPs"));
    }
}
