//! The cluster: an underlay bridge inside its own namespace, three node namespaces on it, an outside client, the
//! node agent on every node, the edge proxy on node 1, and pods created through the CNI plugin.
//!
//! ```text
//!                    netns <run>-u:  br0 172.18.0.1 (the nodes' default gateway; the API server, if the source)
//!          ┌──────────────┬──────────┴───┬──────────────┐
//!   <run>-n1 eth0     <run>-n2 eth0   <run>-n3 eth0   <run>-cl eth0
//!   172.18.0.2        172.18.0.3      172.18.0.4      172.18.0.100
//!   cni0 10.244.0.1   cni0 10.244.1.1 cni0 10.244.2.1
//!   causeway-node     causeway-node   causeway-node   (outside client)
//!   causeway run
//!     └ pods <run>-pK (eth0 from causeway-cni ADD; probe servers inside)
//! ```
//!
//! The root namespace is never connected: every veth is created inside the underlay namespace with its peer
//! placed straight into the node's namespace. Everything is removed when the [`Cluster`] is dropped, whether the
//! checks passed or not; [`crate::netns::sweep_leftovers`] removes what a killed run left.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::apiserver::ApiServer;
use crate::bins::Bins;
use crate::cni::{self, Invocation, NetworkList};
use crate::error::{Error, Result};
use crate::manifests::ManifestDir;
use crate::netns::{self, Netns};
use crate::objects::{self, Endpoint, Svc};
use crate::probe::{Probe, Reply};
use crate::source::{Component, ObjectStore, Source};
use crate::sys::{self, Proc};

/// Number of nodes.
pub const NODES: usize = 3;
/// The node network's gateway (held by the underlay namespace's bridge).
pub const GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 1);
/// The outside client's address on the node network.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 100);
/// The cluster (pod) CIDR.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// The Service CIDR.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The port the probe servers listen on in every pod (TCP and UDP).
pub const POD_PORT: u16 = 8080;
/// The node agent's admin listener inside each node namespace (the namespace is ours alone, so a fixed port
/// cannot collide with anything).
pub const AGENT_ADMIN: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 10256);
/// The edge proxy's admin listener inside node 1's namespace.
pub const PROXY_ADMIN: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 10254);

/// The address of node `i` (0-based) on the node network: 172.18.0.2, .3, .4.
pub fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(172, 18, 0, 2 + i as u8)
}

/// The podCIDR of node `i`: 10.244.i.0/24.
pub fn pod_cidr(i: usize) -> String {
    format!("10.244.{i}.0/24")
}

/// One node.
#[derive(Debug)]
pub struct Node {
    /// `node1`, `node2`, `node3` (the Node object's name and `--node-name`).
    pub name: String,
    /// Its address on the node network.
    pub ip: Ipv4Addr,
    /// Its namespace.
    pub ns: Netns,
    /// `--cni-conf-dir`.
    pub conf_dir: PathBuf,
    /// `--cni-bin-dir` (`CNI_PATH`).
    pub bin_dir: PathBuf,
    /// `--ipam-dir`.
    pub ipam_dir: PathBuf,
    /// The running agent.
    pub agent: Option<Proc>,
    /// The agent's log.
    pub agent_log: PathBuf,
}

/// One pod.
#[derive(Debug)]
pub struct Pod {
    /// Pod name (unique in the cluster).
    pub name: String,
    /// Index of its node.
    pub node: usize,
    /// Its namespace.
    pub ns: Netns,
    /// The address from the ADD result.
    pub ip: Ipv4Addr,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// The final ADD result (DEL's `prevResult`).
    pub result: Value,
    /// hostPort mappings it was created with.
    pub host_ports: Vec<(u16, u16, &'static str)>,
    /// Its "containers".
    pub procs: Vec<Proc>,
}

/// How to create a pod.
#[derive(Debug, Clone, Default)]
pub struct PodSpec {
    /// `(hostPort, containerPort, protocol)` mappings.
    pub host_ports: Vec<(u16, u16, &'static str)>,
}

/// The running cluster.
#[derive(Debug)]
pub struct Cluster {
    /// Run id (`cwnc<pid>`), the prefix of every name.
    pub run: String,
    /// Scratch directory (manifests, CNI dirs, logs).
    pub dir: PathBuf,
    /// Binaries under test.
    pub bins: Bins,
    /// The probe helper.
    pub probe: Probe,
    /// Where objects are written: the watched manifests directory or the API server ([`Options::source`]).
    pub store: ObjectStore,
    /// The nodes.
    pub nodes: Vec<Node>,
    /// The outside client.
    pub client: Netns,
    /// The edge proxy (on node 1).
    pub proxy: Option<Proc>,
    /// Pods by name.
    pub pods: BTreeMap<String, Pod>,
    /// Leftovers of earlier runs removed at start.
    pub swept: Vec<String>,
    /// Other processes (servers outside the cluster).
    pub extra: Vec<Proc>,
    underlay: Netns,
    next_pod: usize,
    options: Options,
    _scratch: Scratch,
}

/// A directory removed when dropped.
#[derive(Debug)]
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Extra settings of a cluster.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Appended to every `causeway-node` command line.
    pub agent_args: Vec<String>,
    /// Appended to the `causeway run` command line.
    pub proxy_args: Vec<String>,
    /// The source every component watches and the harness writes to.
    pub source: Source,
}

impl Cluster {
    /// Builds the whole cluster and starts every process. `probe` is the `cw-netns-probe` binary.
    pub fn start(probe: &Path) -> Result<Self> {
        Self::start_with(probe, Options::default())
    }

    /// [`Cluster::start`] with extra flags for the components (for suites of features behind a flag).
    pub fn start_with(probe: &Path, options: Options) -> Result<Self> {
        sys::require_root()?;
        let bins = Bins::locate(&Bins::default_dir()?)?;
        let tmp = std::env::temp_dir();
        let swept = netns::sweep_leftovers(&tmp);
        let run = netns::run_id();
        let dir = tmp.join(&run);
        let _ = std::fs::remove_dir_all(&dir);
        cni::ensure_dir(&dir)?;
        // Removes the directory if anything below fails before the cluster (whose Drop removes it) exists.
        let scratch = Scratch(dir.clone());

        // The underlay: a bridge that exists only inside its own namespace.
        let underlay = Netns::create(format!("{run}-u"))?;
        sys::ip_in(&underlay.name, &["link", "add", "br0", "type", "bridge"])?;
        sys::ip_in(&underlay.name, &["link", "set", "br0", "up"])?;
        // The underlay namespace also plays the node network's gateway (docker's bridge address in kind), so
        // nodes have a default route like real ones; it forwards nothing (forwarding is off in a new namespace).
        sys::ip_in(&underlay.name, &["addr", "add", &format!("{GATEWAY_IP}/24"), "dev", "br0"])?;
        // The control plane, when it is the source, lives in the underlay namespace too: the API server on the
        // gateway address (reachable from every node, advertised as the `kubernetes` Service's endpoint), etcd
        // on that namespace's loopback. It starts in the background while the nodes are built.
        let starting = match options.source {
            Source::Manifests => None,
            Source::ApiServer => Some(ApiServer::start(&underlay.name, GATEWAY_IP, &dir.join("control-plane"))?),
        };
        let plug = |ns: &Netns, port: &str, addr: Ipv4Addr| -> Result<()> {
            sys::ip_in(
                &underlay.name,
                &["link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", &ns.name],
            )?;
            sys::ip_in(&underlay.name, &["link", "set", port, "master", "br0", "up"])?;
            sys::ip_in(&ns.name, &["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            sys::ip_in(&ns.name, &["link", "set", "eth0", "up"])?;
            Ok(())
        };

        let mut nodes = Vec::new();
        for i in 0..NODES {
            let name = format!("node{}", i + 1);
            let ns = Netns::create(format!("{run}-n{}", i + 1))?;
            plug(&ns, &format!("vn{}", i + 1), node_ip(i))?;
            sys::ip_in(&ns.name, &["route", "add", "default", "via", &GATEWAY_IP.to_string()])?;
            // No sysctl is set here: forwarding and bridge-nf-call-iptables are the agent's job (it sets them
            // in its own namespace), and a fresh namespace starts with forwarding off, so the checks see
            // whether it did.
            let node_dir = dir.join(&name);
            let (conf_dir, bin_dir, ipam_dir) = (node_dir.join("net.d"), node_dir.join("bin"), node_dir.join("ipam"));
            for d in [&conf_dir, &bin_dir, &ipam_dir] {
                cni::ensure_dir(d)?;
            }
            // The plugin binary is not put there: causeway-node installs it (from next to its own executable).
            let agent_log = node_dir.join("agent.log");
            nodes.push(Node { name, ip: node_ip(i), ns, conf_dir, bin_dir, ipam_dir, agent: None, agent_log });
        }
        let client = Netns::create(format!("{run}-cl"))?;
        plug(&client, "vcl", CLIENT_IP)?;
        let store = match starting {
            None => ObjectStore::Manifests(ManifestDir::create(&dir.join("manifests"))?),
            Some(s) => {
                let plane = s.wait()?;
                // The kustomize base's Namespace, CRDs (IPPool, so any suite's objects can be written here) and
                // the RBAC the components run under.
                plane.install_base()?;
                ObjectStore::ApiServer(plane)
            }
        };

        let mut cluster = Self {
            run,
            dir,
            bins,
            probe: Probe::new(probe),
            store,
            nodes,
            client,
            proxy: None,
            pods: BTreeMap::new(),
            swept,
            extra: Vec::new(),
            underlay,
            next_pod: 0,
            options,
            _scratch: scratch,
        };
        cluster.write_base_objects()?;
        for i in 0..NODES {
            cluster.start_agent(i)?;
        }
        cluster.start_proxy()?;
        for i in 0..NODES {
            cluster.wait_cni_config(i, Duration::from_secs(20))?;
        }
        Ok(cluster)
    }

    fn write_base_objects(&self) -> Result<()> {
        let mut docs = vec![objects::namespace("default"), objects::ingress_class()];
        for (i, n) in self.nodes.iter().enumerate() {
            docs.push(objects::node(&n.name, &pod_cidr(i), n.ip));
        }
        self.store.write("00-cluster", &docs)
    }

    /// Replaces the objects of group `stem` (a file in manifests mode) with `docs`, in whichever source the
    /// cluster runs on.
    pub fn apply(&self, stem: &str, docs: &[Value]) -> Result<()> {
        self.store.write(stem, docs)
    }

    /// The manifests directory (an error naming the source when the cluster runs on the API server).
    pub fn manifests(&self) -> Result<&ManifestDir> {
        self.store.manifests()
    }

    /// Starts (or restarts) the agent on node `i`.
    pub fn start_agent(&mut self, i: usize) -> Result<()> {
        let n = &self.nodes[i];
        let mut cmd = sys::in_ns(&n.ns.name, &self.bins.node);
        cmd.arg("--node-name")
            .arg(&n.name)
            .args(self.store.component_args(Component::Node))
            .arg("--cni-conf-dir")
            .arg(&n.conf_dir)
            .arg("--cni-bin-dir")
            .arg(&n.bin_dir)
            .arg("--ipam-dir")
            .arg(&n.ipam_dir)
            .arg("--cluster-cidr")
            .arg(CLUSTER_CIDR)
            .arg("--service-cidr")
            .arg(SERVICE_CIDR)
            .arg("--admin-addr")
            .arg(AGENT_ADMIN.to_string())
            .args(&self.options.agent_args);
        let proc = Proc::spawn(format!("causeway-node on {}", n.name), cmd, &n.agent_log)?;
        self.nodes[i].agent = Some(proc);
        Ok(())
    }

    /// Kills node `i`'s agent with SIGKILL (no chance to clean up, as a crash or OOM kill).
    pub fn kill_agent(&mut self, i: usize) {
        if let Some(mut a) = self.nodes[i].agent.take() {
            a.kill();
        }
    }

    fn start_proxy(&mut self) -> Result<()> {
        let n = &self.nodes[0];
        let mut cmd = sys::in_ns(&n.ns.name, &self.bins.causeway);
        cmd.arg("run")
            .args(self.store.component_args(Component::Proxy))
            .arg("--http-addr")
            .arg(format!("{}:80", n.ip))
            .arg("--https-addr")
            .arg(format!("{}:443", n.ip))
            .arg("--admin-addr")
            .arg(PROXY_ADMIN.to_string())
            .arg("--publish-address")
            .arg(n.ip.to_string())
            .args(&self.options.proxy_args);
        self.proxy = Some(Proc::spawn("causeway run on node1", cmd, &self.dir.join("proxy.log"))?);
        Ok(())
    }

    /// Waits until the agent on node `i` has written the CNI configuration (as containerd waits before it
    /// reports NetworkReady), and links any chained reference plugin it names that the node lacks.
    pub fn wait_cni_config(&mut self, i: usize, timeout: Duration) -> Result<NetworkList> {
        let conf_dir = self.nodes[i].conf_dir.clone();
        let what =
            format!("causeway-node on {} to write a CNI configuration into {}", self.nodes[i].name, conf_dir.display());
        let net = sys::poll(&what, timeout, Duration::from_millis(50), || {
            if let Some(agent) = self.nodes[i].agent.as_mut()
                && let Some(status) = agent.exited()
            {
                return Err(Error::check(format!("the agent exited ({status}): {}", agent.log_tail(15))));
            }
            cni::load_network(&conf_dir)
        })?;
        for p in &net.plugins {
            let ty = p.get("type").and_then(Value::as_str).unwrap_or_default();
            if !self.nodes[i].bin_dir.join(ty).exists()
                && let Some(src) = cni::find_reference_plugin(ty)
            {
                cni::install_plugin(&self.nodes[i].bin_dir, ty, &src)?;
            }
        }
        Ok(net)
    }

    // === pods ===

    fn invocation<'a>(
        &'a self,
        node: usize,
        container_id: &'a str,
        netns_path: &'a str,
        pod_name: &'a str,
        host_ports: &'a [(u16, u16, &'a str)],
    ) -> Invocation<'a> {
        Invocation {
            node_ns: &self.nodes[node].ns.name,
            bin_dir: &self.nodes[node].bin_dir,
            container_id,
            netns_path,
            ifname: "eth0",
            pod_name,
            port_mappings: host_ports,
        }
    }

    /// Creates pod `name` on node `node` as containerd would (netns, CNI ADD) and starts its probe server on
    /// [`POD_PORT`] (TCP and UDP).
    pub fn add_pod(&mut self, name: &str, node: usize, spec: PodSpec) -> Result<Ipv4Addr> {
        self.next_pod += 1;
        let ns = Netns::create_bare(format!("{}-p{}", self.run, self.next_pod))?;
        let container_id = format!("{}-{}", self.run, name);
        let net = cni::load_network(&self.nodes[node].conf_dir)?;
        let path = ns.path();
        let result = {
            let inv = self.invocation(node, &container_id, &path, name, &spec.host_ports);
            match inv.add(&net) {
                Ok(r) => r,
                Err(e) => {
                    // containerd follows a failed ADD with DEL.
                    let _ = inv.del(&net, None);
                    return Err(e);
                }
            }
        };
        let ip = match cni::pod_ip(&result, "eth0", &path) {
            Ok(ip) => ip,
            Err(e) => {
                // containerd rejects the result and tears the sandbox down with DEL.
                let _ = self.invocation(node, &container_id, &path, name, &spec.host_ports).del(&net, Some(&result));
                return Err(e);
            }
        };
        let mut pod = Pod {
            name: name.into(),
            node,
            ns,
            ip,
            container_id,
            result,
            host_ports: spec.host_ports,
            procs: Vec::new(),
        };
        let log = self.dir.join(format!("pod-{name}.log"));
        let mut cmd = self.probe.cmd(&pod.ns.name);
        cmd.args([
            "serve",
            "--name",
            name,
            "--tcp",
            &format!("0.0.0.0:{POD_PORT}"),
            "--udp",
            &format!("0.0.0.0:{POD_PORT}"),
        ]);
        let mut server = Proc::spawn(format!("pod {name} server"), cmd, &log)?;
        server.wait_for_log("ready", Duration::from_secs(5))?;
        pod.procs.push(server);
        self.pods.insert(name.into(), pod);
        Ok(ip)
    }

    /// Starts another process in pod `name`'s namespace (a second container): a probe server named `label` on
    /// `addr`.
    pub fn add_container(&mut self, pod: &str, label: &str, addr: SocketAddr) -> Result<()> {
        let p = self.pods.get(pod).ok_or_else(|| Error::check(format!("no pod {pod}")))?;
        let log = self.dir.join(format!("pod-{pod}-{label}.log"));
        let mut cmd = self.probe.cmd(&p.ns.name);
        cmd.args(["serve", "--name", label, "--tcp", &addr.to_string()]);
        let mut server = Proc::spawn(format!("pod {pod} container {label}"), cmd, &log)?;
        server.wait_for_log("ready", Duration::from_secs(5))?;
        if let Some(p) = self.pods.get_mut(pod) {
            p.procs.push(server);
        }
        Ok(())
    }

    /// Starts a probe server named `label` on `addr` inside namespace `ns` (the outside client, a node).
    pub fn serve_in(&mut self, ns: &str, label: &str, addr: SocketAddr) -> Result<()> {
        let log = self.dir.join(format!("serve-{label}.log"));
        let mut cmd = self.probe.cmd(ns);
        cmd.args(["serve", "--name", label, "--tcp", &addr.to_string(), "--udp", &addr.to_string()]);
        let mut server = Proc::spawn(format!("server {label} in {ns}"), cmd, &log)?;
        server.wait_for_log("ready", Duration::from_secs(5))?;
        self.extra.push(server);
        Ok(())
    }

    /// Stops pod `name`'s processes, runs CNI DEL with the ADD result, and removes its namespace.
    pub fn delete_pod(&mut self, name: &str) -> Result<Pod> {
        let mut pod = self.pods.remove(name).ok_or_else(|| Error::check(format!("no pod {name}")))?;
        for p in &mut pod.procs {
            p.kill();
        }
        let net = cni::load_network(&self.nodes[pod.node].conf_dir)?;
        let path = pod.ns.path();
        self.invocation(pod.node, &pod.container_id, &path, name, &pod.host_ports).del(&net, Some(&pod.result))?;
        Ok(pod)
    }

    /// A raw ADD on node `node` for a pod that has no entry in the cluster (bad-input checks).
    pub fn raw_add(&self, node: usize, container_id: &str, netns_path: &str) -> Result<Value> {
        let net = cni::load_network(&self.nodes[node].conf_dir)?;
        self.invocation(node, container_id, netns_path, container_id, &[]).add(&net)
    }

    /// A raw DEL on node `node` (no `prevResult`).
    pub fn raw_del(&self, node: usize, container_id: &str, netns_path: &str) -> Result<()> {
        let net = cni::load_network(&self.nodes[node].conf_dir)?;
        self.invocation(node, container_id, netns_path, container_id, &[]).del(&net, None)
    }

    /// The pod called `name`.
    pub fn pod(&self, name: &str) -> Result<&Pod> {
        self.pods.get(name).ok_or_else(|| Error::check(format!("no pod {name}")))
    }

    /// Endpoints for the named pods, in order.
    pub fn endpoints(&self, names: &[&str]) -> Result<Vec<Endpoint>> {
        names
            .iter()
            .map(|n| {
                let p = self.pod(n)?;
                Ok(Endpoint { ip: p.ip, node: self.nodes[p.node].name.clone(), pod: p.name.clone(), ready: true })
            })
            .collect()
    }

    /// Writes Service `svc` and its EndpointSlice listing `pods` to the source (group `svc-NAME`).
    pub fn apply_service(&self, svc: &Svc, pods: &[&str]) -> Result<()> {
        let eps = self.endpoints(pods)?;
        self.store.write(&format!("svc-{}", svc.name), &[svc.to_object(), svc.slice(&eps)])
    }

    /// The IPAM store directory of node `i`'s network (`<ipam-dir>/<network name>`).
    pub fn ipam_store(&self, i: usize) -> Result<PathBuf> {
        let net = cni::load_network(&self.nodes[i].conf_dir)?;
        Ok(self.nodes[i].ipam_dir.join(net.name))
    }

    /// The addresses node `i`'s IPAM store holds (one file per allocated IP, host-local's layout).
    pub fn ipam_addresses(&self, i: usize) -> Result<std::collections::BTreeSet<Ipv4Addr>> {
        let store = self.ipam_store(i)?;
        let entries = match std::fs::read_dir(&store) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
            Err(e) => return Err(Error::io(format!("listing {}", store.display()), e)),
        };
        Ok(entries.flatten().filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok())).collect())
    }

    /// The veth interfaces in node `i`'s namespace (one host end per pod).
    pub fn veths(&self, i: usize) -> Result<Vec<String>> {
        let out = sys::ip_in(self.node_ns(i), &["-o", "link", "show", "type", "veth"])?;
        Ok(out
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or_default().to_string())
            .collect())
    }

    // === requests ===

    /// One GET from namespace `ns`.
    pub fn get(&self, ns: &str, to: SocketAddr) -> Result<Reply> {
        self.probe.get(ns, to, None, "/", Duration::from_secs(2))
    }

    /// Polls a GET from `ns` to `to` until it answers (the rules or routes may still be converging).
    pub fn get_eventually(&self, ns: &str, to: SocketAddr, timeout: Duration) -> Result<Reply> {
        let what = format!("GET http://{to}/ from {ns} to succeed");
        sys::poll(&what, timeout, Duration::from_millis(100), || {
            self.probe.get(ns, to, None, "/", Duration::from_millis(700))
        })
    }

    /// The namespace name of pod `name`.
    pub fn pod_ns(&self, name: &str) -> Result<String> {
        Ok(self.pod(name)?.ns.name.clone())
    }

    /// Node `i`'s namespace name.
    pub fn node_ns(&self, i: usize) -> &str {
        &self.nodes[i].ns.name
    }

    /// A string with every process's state and log tail, printed when a check fails.
    pub fn diagnostics(&mut self) -> String {
        let mut out = String::new();
        for n in &mut self.nodes {
            let state = match n.agent.as_mut() {
                Some(a) => a.exited().map_or("running".to_string(), |s| format!("exited {s}")),
                None => "not running".into(),
            };
            let tail = std::fs::read_to_string(&n.agent_log).unwrap_or_default();
            let lines: Vec<&str> = tail.lines().collect();
            out.push_str(&format!(
                "--- causeway-node on {} ({state}), last lines:\n{}\n",
                n.name,
                lines[lines.len().saturating_sub(12)..].join("\n")
            ));
        }
        if let Some(p) = self.proxy.as_mut() {
            let state = p.exited().map_or("running".to_string(), |s| format!("exited {s}"));
            out.push_str(&format!("--- causeway run on node1 ({state}), last lines:\n{}\n", p.log_tail(12)));
        }
        if let ObjectStore::ApiServer(a) = &self.store {
            out.push_str(&format!("--- kube-apiserver at {}, last lines:\n{}\n", a.url, a.log_tail(6)));
        }
        out
    }

    /// `iptables-save` (every table) inside node `i`.
    pub fn iptables_save(&self, i: usize) -> Result<String> {
        sys::run(&mut sys::in_ns(self.node_ns(i), "iptables-save"))
    }

    /// `ip route` inside node `i`.
    pub fn routes(&self, i: usize) -> Result<String> {
        sys::ip_in(self.node_ns(i), &["-4", "route", "show"])
    }

    /// Veths in any of this cluster's namespaces whose peer is not in one of this cluster's namespaces (a peer
    /// in the root namespace, which has no name, shows as `link-netnsid N`). Empty when the test network is
    /// closed.
    pub fn links_leaving_the_cluster(&self) -> Result<Vec<String>> {
        let ours = format!("link-netns {}-", self.run);
        let mut names: Vec<&str> = vec![&self.underlay.name, &self.client.name];
        names.extend(self.nodes.iter().map(|n| n.ns.name.as_str()));
        names.extend(self.pods.values().map(|p| p.ns.name.as_str()));
        let mut bad = Vec::new();
        for ns in names {
            let out = sys::ip_in(ns, &["-o", "link", "show", "type", "veth"])?;
            bad.extend(
                out.lines()
                    .filter(|l| !l.contains(&ours))
                    .map(|l| format!("{ns}: {}", l.split('\\').next().unwrap_or(l))),
            );
        }
        Ok(bad)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Processes first (by PID), then the namespaces (their guards), then the scratch directory.
        if let Some(mut p) = self.proxy.take() {
            p.kill();
        }
        for n in &mut self.nodes {
            if let Some(mut a) = n.agent.take() {
                a.kill();
            }
        }
        for p in self.pods.values_mut() {
            for proc in &mut p.procs {
                proc.kill();
            }
        }
        for p in &mut self.extra {
            p.kill();
        }
        // The control plane before its namespace goes (stop.sh: TERM, then KILL).
        if let ObjectStore::ApiServer(a) = &mut self.store
            && let Err(e) = a.stop()
        {
            eprintln!("stopping the control plane: {e}");
        }
        self.pods.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
