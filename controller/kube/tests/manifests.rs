//! The deployment manifests under `manifests/` are valid for a real kube-apiserver of the version we build
//! against: `kubectl apply -k manifests/ --dry-run=server` runs every object through the API server's
//! decoding, defaulting, validation and admission without storing it.

mod support;

use std::path::Path;

use causeway_kube::{LeaseConfig, Publish, check_access, event_required_access, watch_required_access};
use kube::Config;
use kube::config::{KubeConfigOptions, Kubeconfig};
use support::TestCluster;

fn kubectl(cluster: &TestCluster, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let out = cluster.kubectl_output(args, stdin);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Whether a rendered document is of a kind that other objects need stored first.
fn is_prerequisite(doc: &str) -> bool {
    doc.lines().any(|l| l == "kind: Namespace" || l == "kind: CustomResourceDefinition")
}

#[test]
fn manifests_pass_server_side_dry_run() {
    let manifests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests");
    assert!(manifests.join("kustomization.yaml").is_file(), "manifests/kustomization.yaml is missing");
    let dir = manifests.to_str().expect("UTF-8 path");
    let cluster = TestCluster::start();

    // A dry run stores nothing, so objects in a new namespace, or of a kind a new CRD defines, cannot be checked
    // in the same run: store the namespaces and CRDs first (they are dry-run again below with the rest).
    let (ok, rendered) = kubectl(&cluster, &["kustomize", dir], None);
    assert!(ok, "kubectl kustomize manifests/ failed:\n{rendered}");
    let prerequisites: Vec<&str> = rendered.split("\n---\n").filter(|d| is_prerequisite(d)).collect();
    if !prerequisites.is_empty() {
        let (ok, out) = kubectl(&cluster, &["apply", "-f", "-"], Some(&prerequisites.join("\n---\n")));
        assert!(ok, "applying the namespaces and CRDs of manifests/ failed:\n{out}");
        let (ok, out) =
            kubectl(&cluster, &["wait", "--for", "condition=established", "--timeout", "60s", "crd", "--all"], None);
        assert!(ok || out.contains("no matching resources"), "CRDs not established:\n{out}");
    }

    let (ok, out) = kubectl(&cluster, &["apply", "-k", dir, "--dry-run=server"], None);
    assert!(ok, "kubectl apply -k manifests/ --dry-run=server failed:\n{out}");
    eprintln!("{out}");
}

/// The RBAC in `manifests/controller-rbac.yaml` grants the controller's service account every permission
/// causeway-kube asks for at start-up, checked by impersonating that service account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_rbac_grants_what_the_controller_checks() {
    let manifests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests");
    let cluster = TestCluster::start();
    for file in ["namespace.yaml", "controller-rbac.yaml"] {
        let path = manifests.join(file);
        let (ok, out) = kubectl(&cluster, &["apply", "-f", path.to_str().expect("UTF-8 path")], None);
        assert!(ok, "applying manifests/{file} failed:\n{out}");
    }

    let kubeconfig = Kubeconfig::read_from(cluster.kubeconfig()).expect("kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("config");
    config.auth_info.impersonate = Some("system:serviceaccount:causeway-system:causeway".to_owned());
    let client = kube::Client::try_from(config).expect("client");

    let mut needed = watch_required_access();
    needed.extend(LeaseConfig::new("causeway-system", "causeway", "replica").required_access());
    needed.extend(Publish::Addresses(Vec::new()).required_access());
    needed.extend(Publish::service("causeway-system/causeway").expect("publish service").required_access());
    needed.extend(event_required_access());
    // RBAC bindings take effect shortly after they are created: poll until they do; at the deadline, the
    // error names every missing permission.
    let start = std::time::Instant::now();
    loop {
        match check_access(&client, &needed).await {
            Ok(()) => break,
            Err(error) if start.elapsed() > support::DEADLINE => {
                panic!("manifests/controller-rbac.yaml is missing permissions: {error}")
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
}
