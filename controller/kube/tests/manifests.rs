//! The deployment manifests under `manifests/` are valid for a real kube-apiserver of the version we build
//! against: `kubectl apply -k manifests/ --dry-run=server` runs every object through the API server's
//! decoding, defaulting, validation and admission without storing it.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use support::TestCluster;

fn kubectl(cluster: &TestCluster, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new(&cluster.env["KUBECTL"])
        .args(["--kubeconfig", &cluster.env["KUBECONFIG"]])
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {} (built by tests/cluster/build.sh): {e}", cluster.env["KUBECTL"]));
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).expect("write kubectl stdin");
    }
    let out = child.wait_with_output().expect("kubectl output");
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
