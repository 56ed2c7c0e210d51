//! `causeway-node --kubeconfig` against a real kube-apiserver and etcd (`tests/cluster/`), with a user that may
//! only list and watch Services, EndpointSlices and Nodes: a Service created through the API gets its ClusterIP
//! chain applied (real `iptables-restore`) within a few seconds, and deleting it removes the chain.
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
    let _netns = TestNetns::enter();
    let plane = ControlPlane::start();
    plane.kubectl(&["apply", "-f", "-"], Some(RBAC));

    let log = plane.dir.path().join("agent.log");
    let log_file = std::fs::File::create(&log).expect("agent log");
    let child = Command::new(env!("CARGO_BIN_EXE_causeway-node"))
        .args(["--node-name", "node-a", "--kubeconfig", &plane.env["LIMITED_KUBECONFIG"]])
        .args(["--cluster-cidr", "10.244.0.0/16", "--no-cni", "--no-routes"])
        // Sysctls are not this test's subject: an empty tree, so nothing real is written.
        .arg("--sysctl-root")
        .arg(plane.dir.path().join("no-sysctls"))
        .args(["--admin-addr", "127.0.0.1:0", "--min-sync-period", "100ms"])
        // This user may not touch Leases: heartbeats are `failover.rs`' subject, under the manifests' RBAC.
        .arg("--no-heartbeat")
        .arg("--xtables-lock")
        .arg(plane.dir.path().join("xtables.lock"))
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
}
