#!/usr/bin/env python3
"""Static checks of the kustomize base in manifests/ (no cluster needed).

Reads the output of `kubectl kustomize manifests/` (a file or stdin) and checks what the deployment promises:
namespace, least-privilege RBAC, the controller's security context, probes and flags, the node agent's host
access, the pool CRD. Flags passed to the binaries are checked against their `--help` when the binaries are given
(CAUSEWAY_BIN / CAUSEWAY_NODE_BIN), otherwise against the clap definitions in the source.

Prints one line per check and a closing `N passed, M failed`; exits 1 on any failure.
"""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NS = "causeway-system"

passed = 0
failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok    {name}")
    else:
        failed += 1
        print(f"FAIL  {name}" + (f": {detail}" if detail else ""))


def find(objs, kind, name):
    for o in objs:
        if o.get("kind") == kind and o.get("metadata", {}).get("name") == name:
            return o
    return None


def rules_of(role):
    out = set()
    for r in role.get("rules", []):
        for g in r.get("apiGroups", []):
            for res in r.get("resources", []):
                for v in r.get("verbs", []):
                    out.add((g, res, v))
    return out


def help_flags(binary, args):
    """Long flags a binary's --help lists, or None when the binary is not there."""
    if not binary or not os.access(binary, os.X_OK):
        return None
    try:
        out = subprocess.run([binary, *args, "--help"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return set(re.findall(r"--([a-z0-9][a-z0-9-]*)", out))


def source_flags(paths):
    """Long flags declared with clap's derive (`#[arg(long ...)] pub field_name`), from Rust sources."""
    flags = set()
    for path in paths:
        try:
            text = open(path, encoding="utf-8").read()
        except OSError:
            continue
        # `#[arg(long = "name")]` or `#[arg(long, ...)]` followed by the field.
        for m in re.finditer(r"#\[arg\(([^\]]*)\)\]\s*(?:///[^\n]*\n\s*|#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?(\w+)\s*:", text):
            attrs, field = m.group(1), m.group(2)
            explicit = re.search(r'long\s*=\s*"([^"]+)"', attrs)
            if explicit:
                flags.add(explicit.group(1))
            elif re.search(r"\blong\b", attrs):
                flags.add(field.replace("_", "-"))
    return flags


def flags_in(args):
    return [a[2:].split("=", 1)[0] for a in args if a.startswith("--")]


def main():
    import yaml  # only here: metrics_reference.py imports source_flags without needing PyYAML

    src = sys.argv[1] if len(sys.argv) > 1 else "-"
    text = sys.stdin.read() if src == "-" else open(src, encoding="utf-8").read()
    objs = [o for o in yaml.safe_load_all(text) if o]
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objs}
    print(f"{len(objs)} objects from kustomize")

    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "IngressClass"}
    for o in objs:
        md = o["metadata"]
        if o["kind"] in cluster_scoped:
            check(f"{o['kind']}/{md['name']} is cluster-scoped", "namespace" not in md, md.get("namespace", ""))
        else:
            check(f"{o['kind']}/{md['name']} is in {NS}", md.get("namespace") == NS, md.get("namespace", ""))

    for want in [("Namespace", NS), ("ServiceAccount", "causeway"), ("ServiceAccount", "causeway-node"),
                 ("IngressClass", "causeway"), ("Deployment", "causeway"), ("Service", "causeway"),
                 ("PodDisruptionBudget", "causeway"), ("DaemonSet", "causeway-node"),
                 ("CustomResourceDefinition", "ippools.causeway.dev"), ("ClusterRole", "causeway"),
                 ("ClusterRole", "causeway-node"), ("Role", "causeway-leader-election"),
                 ("Role", "causeway-node-heartbeat"), ("RoleBinding", "causeway-node-heartbeat")]:
        check(f"{want[0]}/{want[1]} exists", want in kinds)

    # --- RBAC ------------------------------------------------------------------------------------------------
    for o in objs:
        if o["kind"] in ("ClusterRole", "Role"):
            for r in o.get("rules", []):
                wild = "*" in r.get("verbs", []) or "*" in r.get("resources", []) or "*" in r.get("apiGroups", [])
                check(f"{o['kind']}/{o['metadata']['name']} has no wildcard", not wild, str(r))
    cr = rules_of(find(objs, "ClusterRole", "causeway") or {})
    for g, res in [("networking.k8s.io", "ingresses"), ("networking.k8s.io", "ingressclasses"), ("", "services"),
                   ("discovery.k8s.io", "endpointslices"), ("", "secrets"), ("", "nodes"), ("causeway.dev", "ippools")]:
        for v in ("get", "list", "watch"):
            check(f"controller may {v} {res}", (g, res, v) in cr)
    # The status writers send merge patches only (controller/kube/src/status.rs, controller/lb/src/writer.rs).
    for g, res in [("networking.k8s.io", "ingresses/status"), ("", "services/status"), ("causeway.dev", "ippools/status")]:
        check(f"controller may patch {res}", (g, res, "patch") in cr)
        check(f"controller may not update {res}", (g, res, "update") not in cr)
    check("controller may create events", ("events.k8s.io", "events", "create") in cr)
    write_verbs = {"create", "update", "patch", "delete", "deletecollection"}
    writes = {(g, res, v) for (g, res, v) in cr if v in write_verbs}
    allowed_writes = {("networking.k8s.io", "ingresses/status"), ("", "services/status"),
                      ("causeway.dev", "ippools/status"), ("events.k8s.io", "events")}
    check("controller writes only status subresources and Events",
          all((g, res) in allowed_writes for (g, res, _) in writes), str(sorted(writes)))
    check("controller ClusterRole has no Lease access", not any(res == "leases" for (_, res, _) in cr))
    role = find(objs, "Role", "causeway-leader-election") or {}
    check("Lease Role is namespaced to causeway-system", role.get("metadata", {}).get("namespace") == NS)
    check("Lease Role is exactly get/create/update/patch leases",
          rules_of(role) == {("coordination.k8s.io", "leases", v) for v in ("get", "create", "update", "patch")},
          str(sorted(rules_of(role))))
    nr = rules_of(find(objs, "ClusterRole", "causeway-node") or {})
    for g, res in [("", "services"), ("discovery.k8s.io", "endpointslices"), ("", "nodes"), ("causeway.dev", "ippools")]:
        for v in ("get", "list", "watch"):
            check(f"node agent may {v} {res}", (g, res, v) in nr)
    check("node agent is read-only", all(v in ("get", "list", "watch") for (_, _, v) in nr), str(sorted(nr)))
    check("node agent cannot read Secrets", not any(res == "secrets" for (_, res, _) in nr))
    hb = find(objs, "Role", "causeway-node-heartbeat") or {}
    check("node heartbeat Role is namespaced to causeway-system", hb.get("metadata", {}).get("namespace") == NS)
    check("node heartbeat Role is exactly get/list/watch/create/patch leases",
          rules_of(hb) == {("coordination.k8s.io", "leases", v) for v in ("get", "list", "watch", "create", "patch")},
          str(sorted(rules_of(hb))))
    for b in [o for o in objs if o["kind"] in ("ClusterRoleBinding", "RoleBinding")]:
        subj = b.get("subjects", [])
        check(f"{b['kind']}/{b['metadata']['name']} binds a ServiceAccount of {NS}",
              len(subj) == 1 and subj[0].get("kind") == "ServiceAccount" and subj[0].get("namespace") == NS)

    # --- IngressClass ----------------------------------------------------------------------------------------
    ic = find(objs, "IngressClass", "causeway") or {}
    check("IngressClass controller is causeway.dev/ingress-controller",
          ic.get("spec", {}).get("controller") == "causeway.dev/ingress-controller")

    # --- Controller Deployment -------------------------------------------------------------------------------
    dep = find(objs, "Deployment", "causeway") or {}
    spec = dep.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    ctr = (pod.get("containers") or [{}])[0]
    args = ctr.get("args", [])
    check("Deployment has 2 replicas", spec.get("replicas") == 2)
    check("Deployment runs as the causeway ServiceAccount", pod.get("serviceAccountName") == "causeway")
    check("Deployment pod is non-root", pod.get("securityContext", {}).get("runAsNonRoot") is True
          and pod.get("securityContext", {}).get("runAsUser", 0) != 0)
    sc = ctr.get("securityContext", {})
    check("controller root filesystem is read-only", sc.get("readOnlyRootFilesystem") is True)
    check("controller cannot escalate privileges", sc.get("allowPrivilegeEscalation") is False)
    check("controller drops ALL capabilities but NET_BIND_SERVICE",
          sc.get("capabilities", {}).get("drop") == ["ALL"]
          and sc.get("capabilities", {}).get("add") == ["NET_BIND_SERVICE"])
    check("controller admin listener is reachable by probes", "--admin-addr=0.0.0.0:10254" in args, str(args))
    ports = {p["name"]: p["containerPort"] for p in ctr.get("ports", [])}
    check("controller admin port is 10254", ports.get("admin") == 10254)
    for probe, path in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]:
        p = ctr.get(probe, {}).get("httpGet", {})
        check(f"controller {probe} is GET {path} on the admin port",
              p.get("path") == path and p.get("port") in ("admin", 10254), str(p))
    check("controller has resource requests", bool(ctr.get("resources", {}).get("requests")))
    check("controller has a memory limit", "memory" in ctr.get("resources", {}).get("limits", {}))
    aff = pod.get("affinity", {}).get("podAntiAffinity", {})
    check("controller replicas spread by pod anti-affinity", bool(aff))
    check("controller listens on 80 and 443",
          "--http-addr=0.0.0.0:80" in args and "--https-addr=0.0.0.0:443" in args, str(args))
    pdb = find(objs, "PodDisruptionBudget", "causeway") or {}
    check("PDB selects the controller pods",
          pdb.get("spec", {}).get("selector", {}).get("matchLabels") == spec.get("selector", {}).get("matchLabels"))
    check("PDB keeps one replica", pdb.get("spec", {}).get("minAvailable") == 1)
    svc = find(objs, "Service", "causeway") or {}
    check("Service causeway is a LoadBalancer", svc.get("spec", {}).get("type") == "LoadBalancer")
    check("Service causeway exposes 80 and 443",
          sorted(p["port"] for p in svc.get("spec", {}).get("ports", [])) == [80, 443])
    check("Service causeway selects the controller pods",
          svc.get("spec", {}).get("selector") == spec.get("selector", {}).get("matchLabels"))

    # --- Node agent DaemonSet --------------------------------------------------------------------------------
    ds = find(objs, "DaemonSet", "causeway-node") or {}
    dpod = ds.get("spec", {}).get("template", {}).get("spec", {})
    dctr = (dpod.get("containers") or [{}])[0]
    dargs = dctr.get("args", [])
    check("DaemonSet uses hostNetwork", dpod.get("hostNetwork") is True)
    check("DaemonSet is system-node-critical", dpod.get("priorityClassName") == "system-node-critical")
    check("DaemonSet tolerates every taint", {"operator": "Exists"} in dpod.get("tolerations", []))
    check("DaemonSet runs as the causeway-node ServiceAccount", dpod.get("serviceAccountName") == "causeway-node")
    caps = dctr.get("securityContext", {}).get("capabilities", {})
    check("node agent has exactly NET_ADMIN and NET_RAW",
          caps.get("drop") == ["ALL"] and sorted(caps.get("add", [])) == ["NET_ADMIN", "NET_RAW"], str(caps))
    check("node agent is not privileged", dctr.get("securityContext", {}).get("privileged") is False)
    host_paths = {v["hostPath"]["path"]: v["name"] for v in dpod.get("volumes", []) if "hostPath" in v}
    mounts = {m["name"]: m for m in dctr.get("volumeMounts", [])}
    for path in ["/etc/cni/net.d", "/opt/cni/bin", "/var/lib/cni", "/run/xtables.lock", "/lib/modules"]:
        check(f"node agent mounts host {path}", path in host_paths and host_paths[path] in mounts)
    lm = mounts.get(host_paths.get("/lib/modules", ""), {})
    check("/lib/modules is read-only", lm.get("readOnly") is True)
    env = {e["name"]: e for e in dctr.get("env", [])}
    check("NODE_NAME comes from the downward API",
          env.get("NODE_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "spec.nodeName")
    check("node agent gets --node-name", any(a.startswith("--node-name=") for a in dargs))
    kc = next((a.split("=", 1)[1] for a in dargs if a.startswith("--kubeconfig=")), None)
    check("node agent watches the cluster (--kubeconfig)", kc is not None)
    writers = [c for c in dpod.get("initContainers", []) if kc and kc in " ".join(c.get("command", []))]
    check("an init container writes the agent's kubeconfig (ServiceAccount token file and CA)",
          bool(writers) and "tokenFile" in " ".join(writers[0]["command"]))
    cni_bin = mounts.get(host_paths.get("/opt/cni/bin", ""), {})
    check("the agent can install causeway-cni into /opt/cni/bin", not cni_bin.get("readOnly", False))
    check("sysctl root is the host's /proc/sys (mounted /proc/sys/net)",
          "--sysctl-root=/host/proc/sys" in dargs and host_paths.get("/proc/sys/net") in mounts
          and mounts[host_paths["/proc/sys/net"]]["mountPath"] == "/host/proc/sys/net")
    port = {p["name"]: p["containerPort"] for p in dctr.get("ports", [])}.get("admin")
    check("node agent admin port matches --admin-addr and the scrape annotation",
          any(a.startswith("--admin-addr=") and a.endswith(f":{port}") for a in dargs)
          and ds["spec"]["template"]["metadata"].get("annotations", {}).get("prometheus.io/port") == str(port))
    for probe, path in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]:
        p = dctr.get(probe, {}).get("httpGet", {})
        check(f"node agent {probe} is GET {path} on the admin port", p.get("path") == path
              and p.get("port") in ("admin", port))

    # --- CRD -------------------------------------------------------------------------------------------------
    crd = find(objs, "CustomResourceDefinition", "ippools.causeway.dev") or {}
    cs = crd.get("spec", {})
    check("CRD group causeway.dev, kind IPPool", cs.get("group") == "causeway.dev"
          and cs.get("names", {}).get("kind") == "IPPool")
    versions = cs.get("versions", [])
    check("CRD serves and stores v1alpha1", any(v["name"] == "v1alpha1" and v["served"] and v["storage"]
                                                for v in versions))
    schema = (versions or [{}])[0].get("schema", {}).get("openAPIV3Schema", {})
    blocks = schema.get("properties", {}).get("spec", {}).get("properties", {}).get("blocks", {})
    check("CRD validates blocks (cidr, start, stop)",
          set(blocks.get("items", {}).get("properties", {})) >= {"cidr", "start", "stop"}
          and bool(blocks.get("items", {}).get("x-kubernetes-validations")))

    # --- Flags exist in the binaries -------------------------------------------------------------------------
    controller_flags = help_flags(os.environ.get("CAUSEWAY_BIN"), ["run"])
    how = "causeway run --help"
    if controller_flags is None:
        controller_flags = source_flags([os.path.join(ROOT, "controller/bin/src/cli.rs")])
        how = "controller/bin/src/cli.rs"
    for f in flags_in(args):
        check(f"causeway accepts --{f} ({how})", f in controller_flags)
    node_flags = help_flags(os.environ.get("CAUSEWAY_NODE_BIN"), [])
    how = "causeway-node --help"
    if node_flags is None:
        agent_src = os.path.join(ROOT, "cni-node/agent/src")
        paths = [os.path.join(dp, f) for dp, _, fs in os.walk(agent_src) for f in fs if f.endswith(".rs")]
        node_flags = source_flags(paths)
        how = "cni-node/agent/src"
    if not node_flags:
        print(f"note  causeway-node declares no flags yet ({how}); its flags are not checked")
    else:
        for f in flags_in(dargs):
            check(f"causeway-node accepts --{f} ({how})", f in node_flags)

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
