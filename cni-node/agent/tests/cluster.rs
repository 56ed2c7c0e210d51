//! `causeway-node --kubeconfig` against a real kube-apiserver and etcd (`tests/cluster/`), with a user that may
//! only list and watch Services, EndpointSlices, Nodes and IPPools: a Service created through the API gets its
//! ClusterIP chain applied (real `iptables-restore`) within a few seconds, and deleting it removes the chain.
//! Without the IPPool CRD the agent says so and works on; once the CRD and a pool exist, it owns the address of
//! a LoadBalancer Service (it computes the same allocation as the controller's leader).
//!
//! Everything runs inside a network namespace this test creates (the API server refuses loopback endpoint
//! addresses, and the agent's rules must not land in the host's tables); the host's namespace is never touched.

mod control_plane;

use control_plane::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// list/watch on exactly the agent's kinds, for the limited user's group (nothing on Ingresses or Secrets).
const RBAC: &str = "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: causeway-node}
rules:
- {apiGroups: [\"\"], resources: [services, nodes], verbs: [list, watch]}
- {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list, watch]}
- {apiGroups: [causeway.dev], resources: [ippools], verbs: [list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: causeway-node}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: causeway-node}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: \"causeway:limited\"}
";

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: {kubernetes.io/service-name: web, endpointslice.kubernetes.io/managed-by: test}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- addresses: [\"10.244.250.1\"]
  conditions: {ready: true}
";

#[test]
fn service_created_through_the_api_gets_its_cluster_ip_chain() {
    let _netns = enter_netns();
    let plane = ControlPlane::start();
    plane.kubectl(&["apply", "-f", "-"], Some(RBAC));

    let log = plane.dir().join("agent.log");
    let log_file = std::fs::File::create(&log).expect("agent log");
    let child = Command::new(env!("CARGO_BIN_EXE_causeway-node"))
        .args(["--node-name", "node-a", "--kubeconfig", plane.limited_kubeconfig()])
        .args(["--cluster-cidr", "10.244.0.0/16", "--no-cni", "--no-routes"])
        // Sysctls are not this test's subject: an empty tree, so nothing real is written.
        .arg("--sysctl-root")
        .arg(plane.dir().join("no-sysctls"))
        .args(["--admin-addr", "127.0.0.1:0", "--min-sync-period", "100ms"])
        // This user may not touch Leases: heartbeats are `failover.rs`' subject, under the manifests' RBAC.
        .arg("--no-heartbeat")
        .arg("--xtables-lock")
        .arg(plane.dir().join("xtables.lock"))
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("starting causeway-node");
    let mut agent = Agent { child, log };

    // The first sync follows the initial list of the three kinds (a user without Ingress/Secret access).
    wait_for("the first sync (KUBE-SERVICES)", Duration::from_secs(20), &mut agent, || {
        nat_table().contains(":KUBE-SERVICES")
    });

    plane.kubectl(&["apply", "-f", "-"], Some(SERVICE));
    let created = Instant::now();
    let cluster_ip =
        plane.kubectl(&["-n", "default", "get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"], None);
    assert!(cluster_ip.parse::<std::net::Ipv4Addr>().is_ok(), "ClusterIP {cluster_ip:?}");
    let dest = format!("-d {cluster_ip}/32 ");
    let is_rule = |l: &str| {
        l.starts_with("-A KUBE-SERVICES ")
            && l.contains(&dest)
            && l.contains("default/web:http cluster IP")
            && l.contains("-j KUBE-SVC-")
    };
    wait_for("the ClusterIP rule of default/web", Duration::from_secs(10), &mut agent, || {
        let nat = nat_table();
        nat.lines().any(is_rule)
            && nat.lines().any(|l| l.starts_with("-A KUBE-SEP-") && l.contains("--to-destination 10.244.250.1:8080"))
    });
    let took = created.elapsed();
    println!("default/web's ClusterIP chain applied {took:?} after kubectl apply");
    assert!(took < Duration::from_secs(5), "the Service's chain took {took:?}");

    plane.kubectl(&["-n", "default", "delete", "service", "web"], None);
    wait_for("the ClusterIP rule to go with the Service", Duration::from_secs(10), &mut agent, || {
        !nat_table().lines().any(is_rule)
    });
    let log = agent.log();
    assert!(!log.contains("Forbidden") && !log.contains("denies"), "permission problems:\n{log}");
    assert!(log.contains("The IPPool CRD (ippools.causeway.dev) is not installed"), "no CRD warning:\n{log}");

    // LoadBalancer pools: the CRD, a pool, this node and a LoadBalancer Service. No controller runs, so no status
    // is written: the address the agent owns comes from its own allocation over the pools it watches.
    let admin = log
        .lines()
        .find(|l| l.contains("Admin endpoints listening."))
        .and_then(|l| l.split("addr=").nth(1))
        .and_then(|a| a.split_whitespace().next())
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .expect("the admin address in the agent's log");
    let owned = || -> Option<String> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect_timeout(&admin, Duration::from_secs(2)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n").ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        text.lines().find_map(|l| l.strip_prefix("causeway_node_lb_addresses_owned ").map(str::to_owned))
    };
    assert_eq!(owned().as_deref(), Some("0"));
    let crd = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/crd-ippool.yaml");
    plane.kubectl(&["apply", "-f", &crd.to_string_lossy()], None);
    plane.kubectl(&["wait", "--for=condition=Established", "--timeout=30s", "crd/ippools.causeway.dev"], None);
    plane.kubectl(&["apply", "-f", "-"], Some(LOAD_BALANCER));
    // The agent retries the missing CRD with the watcher's backoff (at most 30 s apart).
    let took = wait_for("the agent to own the LoadBalancer address", Duration::from_secs(45), &mut agent, || {
        owned().as_deref() == Some("1")
    });
    println!("IPPool picked up and the address owned {took:?} after the CRD and pool were applied");
    assert!(agent.log().contains("The IPPool CRD is installed"), "{}", agent.log());
}

const LOAD_BALANCER: &str = "apiVersion: causeway.dev/v1alpha1
kind: IPPool
metadata: {name: lab}
spec:
  blocks: [{cidr: 10.255.0.0/31}]
---
apiVersion: v1
kind: Node
metadata: {name: node-a}
---
apiVersion: v1
kind: Service
metadata: {name: lb, namespace: default}
spec:
  type: LoadBalancer
  ports: [{port: 80}]
";
