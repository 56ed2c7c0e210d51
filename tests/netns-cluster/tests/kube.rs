//! The netns cluster on the real kube-apiserver (issue 6 item 1: "the real kube-apiserver — support both"):
//! `tests/cluster/start.sh` runs in the underlay namespace on 172.18.0.1, every `causeway-node` and the edge
//! proxy (`causeway run`, with leader election) watch it through a kubeconfig, and the harness writes the same
//! objects as in manifests mode through the API (Node status through the status subresource, EndpointSlices
//! with the CNI ADD results). Every path check of `common/paths.rs` runs here too, plus what only a cluster has:
//! the objects as the API server holds them, the leader's Ingress status, a pod reaching the API server through
//! the `kubernetes` Service, a Service scaled up and down through the API under load, and one deleted.
//!
//! Pods: those of `common/paths.rs`, plus `s1` (node1) and `s2` (node2) behind `scale`; `s3` (node3) joins
//! during scaling.

mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use causeway_netns_cluster::cluster::{NODES, Options, POD_PORT, node_ip, pod_cidr};
use causeway_netns_cluster::probe::now_ms;
use causeway_netns_cluster::{Check, Cluster, Error, Result, Source, Suite, Svc, SvcPort, ensure, sys};
use common::paths::{CONVERGE, sa};

const GONE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 23);
/// The `kubernetes` Service the API server creates for itself (the first address of the Service CIDR).
const KUBERNETES_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
use common::scale::MOVE_WITHIN_MS;

fn populate(c: &mut Cluster) -> Result<()> {
    common::paths::populate(c)?;
    common::scale::populate(c)
}

/// The restart check of `common/restart.rs` on the API server: node2's agent (pod b1) killed and restarted.
fn killed_agent_converges_through_the_api(c: &mut Cluster) -> Result<()> {
    common::restart::killed_agent_keeps_connectivity_and_restarted_agent_converges(c, "b1", "c1")
}

/// The scaling check of `common/scale.rs`, with every change written through the API server.
fn scale_through_the_api_moves_traffic_within_2s(c: &mut Cluster) -> Result<()> {
    common::scale::scale_up_and_down_moves_traffic_within_2s(c, "a2")
}

fn kubectl(c: &Cluster, args: &[&str]) -> Result<String> {
    c.store.api_server()?.kubectl(args, None)
}

/// The API server holds what the harness wrote: Nodes with their podCIDR, InternalIP and Ready condition (the
/// last one written through the status subresource), and EndpointSlices with the addresses the CNI ADDs returned.
fn api_server_holds_the_cluster(c: &mut Cluster) -> Result<()> {
    for i in 0..NODES {
        let name = &c.nodes[i].name;
        let got = kubectl(
            c,
            &[
                "get",
                "node",
                name,
                "-o",
                "jsonpath={.spec.podCIDR} {.status.addresses[?(@.type==\"InternalIP\")].address} \
                 {.status.conditions[?(@.type==\"Ready\")].status}",
            ],
        )?;
        let want = format!("{} {} True", pod_cidr(i), node_ip(i));
        ensure!(got.trim() == want, "Node {name} in the API server: `{}`, want `{want}`", got.trim());
    }
    let got =
        kubectl(c, &["-n", "default", "get", "endpointslice", "web-1", "-o", "jsonpath={.endpoints[*].addresses[0]}"])?;
    let got: BTreeSet<String> = got.split_whitespace().map(str::to_string).collect();
    let want: BTreeSet<String> =
        ["a1", "b1", "c1"].iter().map(|p| c.pod(p).map(|p| p.ip.to_string())).collect::<Result<_>>()?;
    ensure!(got == want, "EndpointSlice web-1 lists {got:?}, want the ADD results {want:?}");
    Ok(())
}

/// The components' kubeconfigs are their ServiceAccounts of the kustomize base, not the admin: the API server
/// answers `whoami` with the account, and the accounts may read what they watch but not write Services.
fn components_run_as_their_service_accounts(c: &mut Cluster) -> Result<()> {
    let api = c.store.api_server()?;
    for (kubeconfig, account) in [(&api.node_kubeconfig, "causeway-node"), (&api.proxy_kubeconfig, "causeway")] {
        let user = format!("system:serviceaccount:causeway-system:{account}");
        let who =
            api.kubectl_with(kubeconfig, &["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"], None)?;
        ensure!(who.trim() == user, "{}: the API server sees `{}`, want {user}", kubeconfig.display(), who.trim());
        let can = |verb: &str, what: &str| {
            // `auth can-i` exits 1 for "no": read the answer, not the status.
            let mut cmd = sys::in_ns(&api.ns, &api.kubectl);
            cmd.arg("--kubeconfig").arg(kubeconfig).args(["auth", "can-i", verb, what, "-n", "default"]);
            sys::output(&mut cmd).map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        };
        ensure!(can("watch", "endpointslices.discovery.k8s.io")? == "yes", "{user} cannot watch EndpointSlices");
        ensure!(can("create", "services")? == "no", "{user} may create Services (it should only read them)");
    }
    Ok(())
}

/// The edge proxy won the Lease and, as the leader, wrote its address into the Ingresses' status.
fn leader_writes_ingress_status(c: &mut Cluster) -> Result<()> {
    let want = node_ip(0).to_string();
    sys::poll("the leader to write Ingress edge's status", CONVERGE, Duration::from_millis(200), || {
        let got = kubectl(
            c,
            &["-n", "default", "get", "ingress", "edge", "-o", "jsonpath={.status.loadBalancer.ingress[*].ip}"],
        )?;
        if got.trim() == want { Ok(()) } else { Err(Error::check(format!("status holds `{}`", got.trim()))) }
    })?;
    let holder =
        kubectl(c, &["-n", "causeway-system", "get", "lease", "causeway", "-o", "jsonpath={.spec.holderIdentity}"])?;
    ensure!(!holder.trim().is_empty(), "Lease causeway-system/causeway has no holder");
    Ok(())
}

/// A pod reaches the API server as in-cluster clients do: `https://kubernetes.default.svc` on the `kubernetes`
/// Service's ClusterIP, which the agents forward to the endpoint the API server advertises (172.18.0.1); curl
/// checks the serving certificate's name and answers to the admin's client certificate.
fn pod_reaches_the_api_server_through_the_kubernetes_service(c: &mut Cluster) -> Result<()> {
    let pki = c.store.api_server()?.dir.join("pki");
    let ns = c.pod_ns("b1")?;
    let file = |f: &str| pki.join(f).display().to_string();
    let body = sys::poll("b1 -> https://kubernetes.default.svc/readyz", CONVERGE, Duration::from_millis(200), || {
        sys::run(sys::in_ns(&ns, "curl").args([
            "-sS",
            "--max-time",
            "3",
            "--cacert",
            &file("ca.crt"),
            "--cert",
            &file("admin.crt"),
            "--key",
            &file("admin.key"),
            "--resolve",
            &format!("kubernetes.default.svc:443:{KUBERNETES_IP}"),
            "https://kubernetes.default.svc/readyz",
        ]))
    })?;
    ensure!(body.trim() == "ok", "https://kubernetes.default.svc/readyz from b1 answered {body:?}");
    Ok(())
}

/// A Service and its slice created and then deleted through the API: served, then its objects are gone from the
/// API server and its ClusterIP stops answering within 2 s.
fn deleted_service_stops_answering(c: &mut Cluster) -> Result<()> {
    let ns = c.pod_ns("b1")?;
    c.apply_service(&Svc::new("gone", GONE_IP, vec![SvcPort::tcp("http", 80, POD_PORT)]), &["a1"])?;
    let r = c.get_eventually(&ns, sa(GONE_IP, 80), CONVERGE)?;
    ensure!(r.pod == "a1", "b1 -> gone: answered by {}", r.pod);
    let t = now_ms();
    c.store.remove("svc-gone")?;
    let left = kubectl(c, &["-n", "default", "get", "service,endpointslice", "--ignore-not-found", "-o", "name"])?;
    ensure!(!left.lines().any(|l| l.ends_with("/gone") || l.ends_with("/gone-1")), "still in the API server: {left}");
    let stopped = sys::poll("b1 -> gone to stop answering", Duration::from_secs(5), Duration::from_millis(50), || {
        // Three requests in a row unanswered, so one lost request does not pass for a deleted Service.
        let from = now_ms();
        for _ in 0..3 {
            if let Ok(r) = c.probe.get(&ns, sa(GONE_IP, 80), None, "/", Duration::from_millis(300)) {
                return Err(Error::check(format!("answered by {}", r.pod)));
            }
        }
        Ok(from)
    })?;
    let took = stopped.saturating_sub(t);
    eprintln!("  gone stopped answering {took} ms after the delete started");
    ensure!(took <= MOVE_WITHIN_MS, "the deleted Service answered until {took} ms after the delete started");
    Ok(())
}

const KUBE_CHECKS: &[(&str, Check)] = &[
    ("api_server_holds_the_cluster", api_server_holds_the_cluster),
    ("components_run_as_their_service_accounts", components_run_as_their_service_accounts),
    ("leader_writes_ingress_status", leader_writes_ingress_status),
    (
        "pod_reaches_the_api_server_through_the_kubernetes_service",
        pod_reaches_the_api_server_through_the_kubernetes_service,
    ),
    ("scale_through_the_api_moves_traffic_within_2s", scale_through_the_api_moves_traffic_within_2s),
    ("killed_agent_converges_through_the_api", killed_agent_converges_through_the_api),
    ("deleted_service_stops_answering", deleted_service_stops_answering),
];

#[test]
fn netns_cluster_kube() {
    let checks: Vec<(&str, Check)> = common::paths::CHECKS.iter().chain(KUBE_CHECKS).copied().collect();
    let options = Options { source: Source::ApiServer, ..Options::default() };
    Suite::run(
        "netns_cluster_kube",
        || Cluster::start_with(Path::new(env!("CARGO_BIN_EXE_cw-netns-probe")), options),
        populate,
        &checks,
    );
}
