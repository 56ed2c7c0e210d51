//! LoadBalancer failover with per-node heartbeat Leases, against a real kube-apiserver and etcd
//! (`tests/cluster/`): three real `causeway-node --kubeconfig` processes, each announcing on an interface of its
//! own (one end of a veth pair), with the permissions of `manifests/node-rbac.yaml` only. The owner of a
//! Service's address is killed (SIGKILL, no release) and another agent must own the address within the lease
//! duration plus one renewal; then the new owner is stopped gracefully and must hand the address over at once.
//! Before that, an API server outage longer than the lease must move nothing, and the address of a
//! `loadBalancerClass: causeway.dev/proxy` Service must follow the proxy heartbeat (renewed from the test with the
//! code `causeway run --node-name` runs).
//!
//! Everything runs inside a network namespace this test creates (the agents add addresses to interfaces); the
//! host's namespace is never touched.

mod control_plane;

use control_plane::*;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NAMESPACE: &str = "causeway-system";
const ADDRESS: &str = "192.0.2.77";
const INTERVAL: Duration = Duration::from_millis(500);
const LEASE: Duration = Duration::from_millis(1500);

/// The node RBAC of the manifests, plus bindings of its roles to the limited user's group.
fn rbac() -> String {
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../manifests/node-rbac.yaml"))
        .expect("manifests/node-rbac.yaml");
    format!(
        "apiVersion: v1
kind: Namespace
metadata: {{name: {NAMESPACE}}}
---
{manifest}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: causeway-node-limited}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: causeway-node}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: Group, name: \"causeway:limited\"}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: causeway-node-heartbeat-limited, namespace: {NAMESPACE}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: causeway-node-heartbeat}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: Group, name: \"causeway:limited\"}}]
"
    )
}

const OBJECTS: &str = "apiVersion: v1
kind: Node
metadata: {name: node-a}
---
apiVersion: v1
kind: Node
metadata: {name: node-b}
---
apiVersion: v1
kind: Node
metadata: {name: node-c}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: LoadBalancer
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
";

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("ip (iproute2)");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether the interface `dev` holds the test address.
fn holds(dev: &str) -> bool {
    holds_address(dev, ADDRESS)
}

fn holds_address(dev: &str, address: &str) -> bool {
    ip(&["-o", "-4", "addr", "show", "dev", dev]).contains(&format!(" {address}/32 "))
}

/// A Service of `loadBalancerClass: causeway.dev/proxy` and its address.
const PROXIED: &str = "apiVersion: v1
kind: Service
metadata: {name: l4, namespace: default}
spec:
  type: LoadBalancer
  loadBalancerClass: causeway.dev/proxy
  ports: [{name: tcp, port: 9000, protocol: TCP}]
";
const PROXIED_ADDRESS: &str = "192.0.2.78";

/// Whether the proxy-class address is on `who`'s interface and on no other.
fn only_on(who: Option<&str>) -> impl FnMut(&[Node]) -> bool + '_ {
    move |nodes: &[Node]| nodes.iter().all(|n| holds_address(&n.dev, PROXIED_ADDRESS) == (Some(n.name) == who))
}

/// Renews the proxy heartbeat of `node` from this test, with the code `causeway run --node-name` runs.
fn proxy_heartbeat(
    rt: &tokio::runtime::Runtime,
    plane: &ControlPlane,
    node: &str,
) -> causeway_kube::heartbeat::HeartbeatHandle {
    use causeway_kube::heartbeat::{HeartbeatConfig, HeartbeatMetrics, PROXY_COMPONENT, spawn_heartbeat};
    rt.block_on(async {
        let kubeconfig = kube::config::Kubeconfig::read_from(plane.kubeconfig()).expect("kubeconfig");
        let options = kube::config::KubeConfigOptions::default();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.expect("kube config");
        let client = kube::Client::try_from(config).expect("kube client");
        let config =
            HeartbeatConfig { component: PROXY_COMPONENT.to_owned(), ..HeartbeatConfig::node(NAMESPACE, node) };
        let metrics = HeartbeatMetrics::register(&prometheus::Registry::new()).expect("metrics");
        spawn_heartbeat(client, config, metrics)
    })
}

/// One agent and the interface it announces on.
struct Node {
    name: &'static str,
    dev: String,
    agent: Agent,
}

fn start_agent(plane: &ControlPlane, name: &'static str) -> Node {
    let dev = format!("lb-{}", &name[5..]);
    // A veth pair stands for the node's network interface (this kernel may lack the dummy driver).
    let peer = format!("lbp-{}", &name[5..]);
    ip(&["link", "add", &dev, "type", "veth", "peer", "name", &peer]);
    ip(&["link", "set", &dev, "up"]);
    ip(&["link", "set", &peer, "up"]);
    let log = plane.dir().join(format!("{name}.log"));
    let log_file = std::fs::File::create(&log).expect("agent log");
    let child = Command::new(env!("CARGO_BIN_EXE_causeway-node"))
        .args(["--node-name", name, "--kubeconfig", plane.limited_kubeconfig()])
        .args(["--proxy-mode", "none", "--no-cni", "--no-routes", "--admin-addr", "127.0.0.1:0"])
        // Sysctls are not this test's subject: an empty tree, so nothing real is written.
        .arg("--sysctl-root")
        .arg(plane.dir().join("no-sysctls"))
        .args(["--lb-interface", &dev, "--heartbeat-namespace", NAMESPACE])
        .args(["--heartbeat-interval", &format!("{}ms", INTERVAL.as_millis())])
        .args(["--heartbeat-lease-duration", &format!("{}ms", LEASE.as_millis())])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("starting causeway-node");
    Node { name, dev, agent: Agent { child, log } }
}

/// Polls `check` every 5 ms until it holds (panics with every agent's log after `timeout`); returns when it
/// first held.
fn poll(what: &str, timeout: Duration, nodes: &mut [Node], mut check: impl FnMut(&[Node]) -> bool) -> Instant {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check(nodes) {
            return Instant::now();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let logs: Vec<String> = nodes.iter().map(|n| format!("--- {} ---\n{}", n.name, n.agent.log())).collect();
    panic!("timed out after {timeout:?} waiting for {what}\n{}", logs.join("\n"));
}

/// The agent's metric value, from its admin endpoint (the port is in its log).
fn metric(node: &Node, name: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let log = node.agent.log();
    let line = log.lines().find(|l| l.contains("Admin endpoints listening."))?;
    let addr = line.split("addr=").nth(1)?.split_whitespace().next()?;
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn owner_killed_or_stopped_moves_the_address() {
    let _netns = enter_netns();
    let plane = ControlPlane::start();
    plane.kubectl(&["apply", "-f", "-"], Some(&rbac()));
    plane.kubectl(&["apply", "-f", "-"], Some(OBJECTS));
    // No IPPool: the allocator keeps the address in status as it is (causeway_lb's dormant mode).
    let status =
        format!("{{\"status\":{{\"loadBalancer\":{{\"ingress\":[{{\"ip\":\"{ADDRESS}\",\"ipMode\":\"VIP\"}}]}}}}}}");
    plane.kubectl(
        &["-n", "default", "patch", "service", "web", "--subresource=status", "--type=merge", "-p", &status],
        None,
    );

    let mut nodes: Vec<Node> = ["node-a", "node-b", "node-c"].into_iter().map(|n| start_agent(&plane, n)).collect();
    let address: IpAddr = ADDRESS.parse().expect("address");
    let names: Vec<&str> = nodes.iter().map(|n| n.name).collect();
    let owner = causeway_lb::owner_node(address, names.iter().copied()).expect("an owner").to_owned();
    let rest: Vec<&str> = names.iter().copied().filter(|n| *n != owner).collect();
    let successor = causeway_lb::owner_node(address, rest.iter().copied()).expect("a successor").to_owned();
    let last = rest.iter().copied().find(|n| *n != successor).expect("a third node").to_owned();
    let index = |name: &str| names.iter().position(|n| *n == name).expect("node index");
    let (o, s, l) = (index(&owner), index(&successor), index(&last));
    println!("{ADDRESS}: owner {owner}, then {successor}, then {last}");

    // Steady state: every agent sees three live heartbeats, and only the owner holds the address.
    poll("three live heartbeats on every agent", Duration::from_secs(30), &mut nodes, |nodes| {
        nodes.iter().all(|n| metric(n, "causeway_node_heartbeat_live_nodes") == Some(3.0))
    });
    poll("the address on the owner only", Duration::from_secs(10), &mut nodes, |nodes| {
        holds(&nodes[o].dev) && !holds(&nodes[s].dev) && !holds(&nodes[l].dev)
    });
    let leases = plane.kubectl(
        &[
            "-n",
            NAMESPACE,
            "get",
            "leases",
            "-l",
            "causeway.dev/heartbeat=node",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.spec.holderIdentity} {end}",
        ],
        None,
    );
    for name in &names {
        assert!(leases.contains(&format!("causeway-node-{name}={name}")), "heartbeat Leases: {leases}");
    }

    // `loadBalancerClass: causeway.dev/proxy`: announced by the hash over every node until a proxy heartbeats, then
    // only from nodes with a live proxy; when the last proxy releases, from nowhere.
    plane.kubectl(&["apply", "-f", "-"], Some(PROXIED));
    let status78 = format!(
        "{{\"status\":{{\"loadBalancer\":{{\"ingress\":[{{\"ip\":\"{PROXIED_ADDRESS}\",\"ipMode\":\"VIP\"}}]}}}}}}"
    );
    plane.kubectl(
        &["-n", "default", "patch", "service", "l4", "--subresource=status", "--type=merge", "-p", &status78],
        None,
    );
    let hashed: IpAddr = PROXIED_ADDRESS.parse().expect("address");
    let hashed = causeway_lb::owner_node(hashed, names.iter().copied()).expect("an owner").to_owned();
    poll("the proxy-class address on its hash owner", Duration::from_secs(10), &mut nodes, only_on(Some(&hashed)));
    let proxy_node = *names.iter().find(|n| **n != hashed).expect("another node");
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let started = Instant::now();
    let proxy = proxy_heartbeat(&rt, &plane, proxy_node);
    let moved = poll(
        "the proxy-class address on the proxy's node",
        Duration::from_secs(10),
        &mut nodes,
        only_on(Some(proxy_node)),
    );
    println!(
        "proxy heartbeat on {proxy_node}: {PROXIED_ADDRESS} moved there from {hashed} after {:.0} ms",
        (moved - started).as_secs_f64() * 1000.0
    );
    rt.block_on(proxy.release());
    poll("the proxy-class address withdrawn with the last proxy", Duration::from_secs(5), &mut nodes, only_on(None));
    drop(rt);

    // The manifests' RBAC is enough (checked before the outage: a restarting API server answers 403 for a moment
    // while its authorizer warms up).
    for n in &nodes {
        let log = n.agent.log();
        assert!(!log.contains("Forbidden") && !log.contains("denies"), "{}: permission problems:\n{log}", n.name);
    }

    // An API server outage three lease durations long: nobody can renew, nobody sees anything, and no address may
    // move, neither during the outage (every view freezes) nor when the renewals come back one by one.
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        let devs: Vec<String> = nodes.iter().map(|n| n.dev.clone()).collect();
        // A thread inherits this thread's network namespace.
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut moves = Vec::new();
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                let held: Vec<bool> = devs.iter().map(|d| holds(d)).collect();
                if held.iter().enumerate().any(|(i, h)| *h != (i == o)) {
                    moves.push(format!("{:?}: {held:?}", started.elapsed()));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            moves
        })
    };
    plane.stop_apiserver();
    let outage = Instant::now();
    std::thread::sleep(LEASE * 2);
    for n in &nodes {
        assert_eq!(metric(n, "causeway_node_heartbeat_view_fresh"), Some(0.0), "{}: view not frozen", n.name);
    }
    std::thread::sleep((LEASE * 3).saturating_sub(outage.elapsed()));
    plane.start_apiserver();
    println!("API server down for {:.1} s", outage.elapsed().as_secs_f64());
    poll("every view current again with three live heartbeats", Duration::from_secs(60), &mut nodes, |nodes| {
        nodes.iter().all(|n| {
            metric(n, "causeway_node_heartbeat_view_fresh") == Some(1.0)
                && metric(n, "causeway_node_heartbeat_live_nodes") == Some(3.0)
        })
    });
    std::thread::sleep(LEASE * 2);
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let moves = sampler.join().expect("sampler thread");
    assert!(moves.is_empty(), "the address moved during or after the API server outage: {moves:?}");

    // SIGKILL: no release, no withdrawal; the survivors see the Lease expire.
    nodes[o].agent.child.kill().expect("kill the owner's agent");
    let killed = Instant::now();
    let _ = nodes[o].agent.child.wait();
    let took =
        poll("the successor to take the address", Duration::from_secs(10), &mut nodes, |nodes| holds(&nodes[s].dev))
            - killed;
    println!("owner {owner} killed: {successor} holds {ADDRESS} after {:.0} ms", took.as_secs_f64() * 1000.0);
    assert!(!holds(&nodes[l].dev), "{last} took the address too");
    // Expiry comes between one lease duration minus one renewal and one lease duration after the last renewal
    // seen; the planner and the announcer add milliseconds. Half a second of slack for a loaded CI machine.
    let bound = LEASE + INTERVAL + Duration::from_millis(500);
    assert!(took <= bound, "failover took {took:?}, more than {bound:?}");
    assert!(took >= LEASE - INTERVAL - Duration::from_millis(100), "failover after {took:?}: before any expiry?");

    // SIGTERM: the agent withdraws its address, then releases its Lease: the next owner takes it at once.
    let pid = i32::try_from(nodes[s].agent.child.id()).expect("pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGTERM).expect("SIGTERM");
    let stopped = Instant::now();
    let mut withdrawn_first = true;
    let handed = poll("the third node to take the address", Duration::from_secs(10), &mut nodes, |nodes| {
        let taken = holds(&nodes[l].dev);
        if taken && holds(&nodes[s].dev) {
            withdrawn_first = false;
        }
        taken
    }) - stopped;
    println!("{successor} stopped gracefully: {last} holds {ADDRESS} after {:.0} ms", handed.as_secs_f64() * 1000.0);
    assert!(withdrawn_first, "both {successor} and {last} held the address");
    // A takeover by expiry could not happen before LEASE - INTERVAL; the release makes it much faster.
    assert!(handed < LEASE - INTERVAL - Duration::from_millis(100), "graceful hand-over took {handed:?}");
    let status = nodes[s].agent.child.wait().expect("wait for the stopped agent");
    assert!(status.success(), "the stopped agent exited with {status}");
    let log = nodes[s].agent.log();
    assert!(log.contains("Released the heartbeat Lease."), "{log}");
    let holder = plane.kubectl(
        &[
            "-n",
            NAMESPACE,
            "get",
            "lease",
            &format!("causeway-node-{successor}"),
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
        None,
    );
    assert_eq!(holder, "", "the released Lease still names a holder");
}
