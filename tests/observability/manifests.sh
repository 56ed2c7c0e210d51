#!/usr/bin/env bash
# Checks the kustomize base in manifests/:
#   1. `kubectl kustomize manifests/` renders, and the static checks of check_manifests.py pass (namespace,
#      least-privilege RBAC, security contexts, probes, host paths, flags the binaries really accept).
#   2. When the test control plane of tests/cluster/ is built (kube-apiserver + etcd in its cache), against a
#      throwaway API server: `kubectl apply --dry-run=server -k manifests/` is accepted; after a real apply,
#      `kubectl auth can-i` as each ServiceAccount matches what the binaries need and nothing more; the IPPool
#      CRD's validation accepts good pools and rejects bad ones; the real `causeway` (CAUSEWAY_BIN) starts with
#      the Deployment's arguments under exactly the manifests' roles and becomes ready, holding its Lease.
# Without the control plane, part 2 is reported as skipped (not passed).
#
# Usage: tests/observability/manifests.sh
# Env: CAUSEWAY_BIN, CAUSEWAY_NODE_BIN (optional): their --help is checked for the flags the manifests pass, and
#      with the control plane, `causeway` runs against it under the manifests' RBAC only.
# Prints one line per check and a closing `N passed, M failed[, K skipped]`; exits non-zero on any failure.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"

PY=python3
if ! "$PY" -c 'import yaml' 2>/dev/null; then
    if /usr/bin/python3 -c 'import yaml' 2>/dev/null; then
        PY=/usr/bin/python3
    else
        apt-get install -y -qq --no-install-recommends python3-yaml >/dev/null
        PY=/usr/bin/python3
    fi
fi
command -v kubectl >/dev/null || { echo "manifests.sh: kubectl is needed"; echo "0 passed, 1 failed"; exit 1; }

WORK="$(mktemp -d /tmp/causeway-manifests.XXXXXX)"
CLUSTER_DIR="$WORK/cluster"
cleanup() {
    if [ -f "$CLUSTER_DIR/env" ] || [ -f "$CLUSTER_DIR/apiserver.pid" ] || [ -f "$CLUSTER_DIR/etcd.pid" ]; then
        "$ROOT/tests/cluster/stop.sh" "$CLUSTER_DIR" >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

passed=0 failed=0 skipped=0
ok() { passed=$((passed + 1)); echo "ok    $*"; }
fail() { failed=$((failed + 1)); echo "FAIL  $*"; }

# --- 1. Render and static checks -------------------------------------------------------------------------------
if kubectl kustomize manifests/ >"$WORK/all.yaml" 2>"$WORK/kustomize.err"; then
    ok "kubectl kustomize manifests/ renders ($(grep -c '^kind:' "$WORK/all.yaml") objects)"
else
    fail "kubectl kustomize manifests/: $(cat "$WORK/kustomize.err")"
fi
# The edge overlay (proxies on the hosts' network): renders, and changes exactly what it says.
if kubectl kustomize overlays/edge-host-network/ >"$WORK/edge.yaml" 2>"$WORK/kustomize.err"; then
    if "$PY" - "$WORK/edge.yaml" <<'PYEOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "causeway")
pod = dep["spec"]["template"]["spec"]
c = pod["containers"][0]
want = {
    "hostNetwork": pod.get("hostNetwork") is True,
    "dnsPolicy ClusterFirstWithHostNet": pod.get("dnsPolicy") == "ClusterFirstWithHostNet",
    "edge nodeSelector": pod.get("nodeSelector") == {"causeway.dev/edge": "true"},
    "one per node": "requiredDuringSchedulingIgnoredDuringExecution" in pod["affinity"]["podAntiAffinity"],
    "no pod sysctls": "sysctls" not in pod.get("securityContext", {}),
    "--node-name": "--node-name=$(NODE_NAME)" in c["args"],
    "NODE_NAME from spec.nodeName": any(e["name"] == "NODE_NAME" and e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName" for e in c["env"]),
    "only NET_BIND_SERVICE": c["securityContext"]["capabilities"] == {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
    "no surge on host ports": dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0,
}
bad = [k for k, v in want.items() if not v]
print(", ".join(bad))
sys.exit(1 if bad else 0)
PYEOF
    then
        ok "kubectl kustomize overlays/edge-host-network/ renders the host-network edge proxy"
    else
        fail "overlays/edge-host-network/ renders, but not as documented (see the line above)"
    fi
else
    fail "kubectl kustomize overlays/edge-host-network/: $(cat "$WORK/kustomize.err")"
fi
set +e
"$PY" "$HERE/check_manifests.py" "$WORK/all.yaml" | tee "$WORK/static.out"
set -e
read -r sp sf < <(awk '/^[0-9]+ passed, [0-9]+ failed/ {print $1, $3}' "$WORK/static.out" | tail -n1)
if [ -z "${sp:-}" ]; then
    fail "check_manifests.py did not finish"
else
    passed=$((passed + sp)); failed=$((failed + sf))
fi

# --- 2. Against a real API server ------------------------------------------------------------------------------
K8S_VERSION="${K8S_VERSION:-v1.35.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
CACHE="${CAUSEWAY_CLUSTER_CACHE:-/var/cache/causeway}"
if [ ! -x "$ROOT/tests/cluster/start.sh" ] || [ ! -x "${KUBE_APISERVER:-$CACHE/k8s-$K8S_VERSION/kube-apiserver}" ] \
    || [ ! -x "${ETCD:-$CACHE/etcd-$ETCD_VERSION/etcd}" ]; then
    skipped=$((skipped + 1))
    echo "skip  server-side checks: the test control plane is not built (run tests/cluster/build.sh)"
else
    export CAUSEWAY_CLUSTER_OWNER_PID=$$
    if ! "$ROOT/tests/cluster/start.sh" "$CLUSTER_DIR" >"$WORK/start.out" 2>&1; then
        fail "tests/cluster/start.sh: $(tail -n 5 "$WORK/start.out")"
    else
        export KUBECONFIG="$CLUSTER_DIR/admin.kubeconfig"
        k() { kubectl --request-timeout=30s "$@"; }

        # The Namespace and the CRD first (a dry run of namespaced objects needs their namespace to exist).
        "$PY" - "$WORK/all.yaml" "$WORK/first.yaml" <<'EOF'
import sys, yaml
objs = [o for o in yaml.safe_load_all(open(sys.argv[1])) if o]
first = [o for o in objs if o["kind"] in ("Namespace", "CustomResourceDefinition")]
yaml.safe_dump_all(first, open(sys.argv[2], "w"))
EOF
        if k apply --dry-run=server -f "$WORK/first.yaml" >"$WORK/out" 2>&1; then
            ok "dry-run=server: Namespace and CRD"
        else
            fail "dry-run=server: Namespace and CRD: $(cat "$WORK/out")"
        fi
        if k apply -f "$WORK/first.yaml" >"$WORK/out" 2>&1 \
            && k wait --for=condition=Established --timeout=60s crd/ippools.causeway.dev >>"$WORK/out" 2>&1; then
            ok "Namespace and CRD applied; CRD established"
        else
            fail "applying Namespace and CRD: $(cat "$WORK/out")"
        fi
        if k apply --dry-run=server -k manifests/ >"$WORK/out" 2>&1; then
            ok "kubectl apply --dry-run=server -k manifests/ ($(wc -l <"$WORK/out") objects)"
        else
            fail "kubectl apply --dry-run=server -k manifests/: $(cat "$WORK/out")"
        fi
        if k apply --dry-run=server -k overlays/edge-host-network/ >"$WORK/out" 2>&1; then
            ok "kubectl apply --dry-run=server -k overlays/edge-host-network/"
        else
            fail "kubectl apply --dry-run=server -k overlays/edge-host-network/: $(cat "$WORK/out")"
        fi
        if k apply -k manifests/ >"$WORK/out" 2>&1; then
            ok "kubectl apply -k manifests/"
        else
            fail "kubectl apply -k manifests/: $(cat "$WORK/out")"
        fi

        # can_i WANT SA VERB RESOURCE [NAMESPACE]: WANT is yes or no.
        can_i() {
            local want="$1" sa="$2" verb="$3" res="$4" ns="${5:-}" got
            local nsargs=(--all-namespaces) sub=()
            [ -n "$ns" ] && nsargs=(-n "$ns")
            # RESOURCE/SUBRESOURCE: kubectl takes the subresource as a flag.
            case "$res" in */*) sub=(--subresource="${res#*/}") ;; esac
            got="$(k auth can-i "$verb" "${res%%/*}" "${sub[@]}" "${nsargs[@]}" \
                --as="system:serviceaccount:causeway-system:$sa" 2>/dev/null || true)"
            if [ "$got" = "$want" ]; then
                ok "can-i $sa $verb $res ${ns:-(all namespaces)} = $want"
            else
                fail "can-i $sa $verb $res ${ns:-(all namespaces)}: want $want, got '${got}'"
            fi
        }
        for res in ingresses.networking.k8s.io ingressclasses.networking.k8s.io services \
            endpointslices.discovery.k8s.io secrets nodes; do
            for verb in get list watch; do can_i yes causeway "$verb" "$res"; done
        done
        for verb in get list watch; do can_i yes causeway "$verb" ippools.causeway.dev; done
        can_i yes causeway patch ingresses.networking.k8s.io/status
        can_i yes causeway patch services/status
        can_i yes causeway patch ippools.causeway.dev/status
        can_i no causeway patch ippools.causeway.dev
        can_i no causeway update ingresses.networking.k8s.io/status
        can_i no causeway update services/status
        can_i yes causeway create events.events.k8s.io
        can_i yes causeway patch events.events.k8s.io
        for verb in get create update patch; do can_i yes causeway "$verb" leases.coordination.k8s.io causeway-system; done
        can_i no causeway update leases.coordination.k8s.io kube-system
        can_i no causeway delete leases.coordination.k8s.io causeway-system
        can_i no causeway update ingresses.networking.k8s.io
        can_i no causeway update services
        can_i no causeway create secrets
        can_i no causeway delete pods
        can_i no causeway list configmaps
        for res in services endpointslices.discovery.k8s.io nodes ippools.causeway.dev; do
            for verb in get list watch; do can_i yes causeway-node "$verb" "$res"; done
        done
        can_i no causeway-node get secrets
        can_i no causeway-node update nodes
        can_i no causeway-node update services/status
        can_i no causeway-node create events.events.k8s.io
        # Per-node heartbeat Leases: in causeway-system only, no update or delete.
        for verb in get list watch create patch; do
            can_i yes causeway-node "$verb" leases.coordination.k8s.io causeway-system
        done
        can_i no causeway-node patch leases.coordination.k8s.io kube-system
        can_i no causeway-node delete leases.coordination.k8s.io causeway-system

        # pool NAME WANT SPEC-JSON [MESSAGE]: WANT is accept, or reject with MESSAGE in the API server's answer
        # (so that a refusal for another reason, such as a missing CRD, does not pass).
        pool() {
            local name="$1" want="$2" spec="$3" msg="${4:-}"
            printf '{"apiVersion":"causeway.dev/v1alpha1","kind":"IPPool","metadata":{"name":"%s"},"spec":%s}\n' \
                "$name" "$spec" >"$WORK/pool.json"
            if k apply --dry-run=server --validate=strict -f "$WORK/pool.json" >"$WORK/out" 2>&1; then
                [ "$want" = accept ] && ok "IPPool $name accepted" || fail "IPPool $name accepted, want rejected"
            elif [ "$want" = reject ] && grep -qF -- "$msg" "$WORK/out"; then
                ok "IPPool $name rejected${msg:+ ($msg)}"
            else
                fail "IPPool $name: want $want${msg:+ with '$msg'}, got: $(cat "$WORK/out")"
            fi
        }
        pool kind-pool accept '{"blocks":[{"cidr":"172.18.255.200/29"},{"start":"172.18.255.210","stop":"172.18.255.219"}]}'
        pool single-range accept '{"blocks":[{"start":"10.0.0.5","stop":"10.0.0.5"}],"disabled":true,"autoAssign":false}'
        pool unknown-field reject '{"blocks":[{"cidr":"10.2.0.0/24"}],"autoassign":false}' 'unknown field "spec.autoassign"'
        pool selector accept '{"blocks":[{"cidr":"10.1.0.0/24"}],"serviceSelector":{"matchLabels":{"pool":"a"}}}'
        pool no-blocks reject '{"blocks":[]}' "should have at least 1 items"
        pool not-cidr reject '{"blocks":[{"cidr":"172.18.255.300/29"}]}' "cidr must be a CIDR"
        pool host-bits reject '{"blocks":[{"cidr":"172.18.255.201/29"}]}' "host bits"
        pool ipv6-later reject '{"blocks":[{"cidr":"fd00::/120"}]}' "only IPv4"
        pool both reject '{"blocks":[{"cidr":"10.0.0.0/24","start":"10.0.0.1","stop":"10.0.0.2"}]}' "either cidr or start/stop"
        pool half-range reject '{"blocks":[{"start":"10.0.0.1"}]}' "both start and stop"
        pool backwards reject '{"blocks":[{"start":"10.0.1.0","stop":"10.0.0.255"}]}' "stop must not be below start"
        pool bad-start reject '{"blocks":[{"start":"10.0.0.x","stop":"10.0.0.9"}]}' "start must be an IPv4 address"
        # Defaults filled in by the API server on a real create: disabled=false, autoAssign=true.
        pool_json='{"apiVersion":"causeway.dev/v1alpha1","kind":"IPPool","metadata":{"name":"defaults"},"spec":{"blocks":[{"cidr":"10.3.0.0/28"}]}}'
        if echo "$pool_json" | k create -f - >"$WORK/out" 2>&1 \
            && [ "$(k get ippool defaults -o jsonpath='{.spec.disabled}/{.spec.autoAssign}')" = "false/true" ]; then
            ok "IPPool defaults: disabled=false, autoAssign=true"
        else
            fail "IPPool defaults: $(cat "$WORK/out"; k get ippool defaults -o jsonpath='{.spec}' 2>&1)"
        fi
        pool bad-operator reject '{"blocks":[{"cidr":"10.0.0.0/24"}],"serviceSelector":{"matchExpressions":[{"key":"a","operator":"Maybe"}]}}' 'Unsupported value: "Maybe"'

        # The real controller under exactly these roles: a user with no permissions of its own is bound to the
        # ClusterRole `causeway` and the Role `causeway-leader-election`, then `causeway run` starts with the
        # Deployment's own arguments (listeners moved to free loopback ports). Its start-up access review and
        # its watches must pass: /readyz answers 200 and nothing is denied.
        if [ -n "${CAUSEWAY_BIN:-}" ] && [ -x "$CAUSEWAY_BIN" ]; then
            k create clusterrolebinding obs-limited-causeway --clusterrole=causeway --group=causeway:limited >/dev/null
            k -n causeway-system create rolebinding obs-limited-lease --role=causeway-leader-election \
                --group=causeway:limited >/dev/null
            free_port() {
                python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
            }
            admin="$(free_port)"
            mapfile -t dargs < <("$PY" - "$WORK/all.yaml" "$(free_port)" "$(free_port)" "$admin" <<'EOF'
import sys, yaml
objs = [o for o in yaml.safe_load_all(open(sys.argv[1])) if o]
dep = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "causeway")
args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
moved = {"--http-addr": sys.argv[2], "--https-addr": sys.argv[3], "--admin-addr": sys.argv[4]}
for a in args:
    key = a.split("=", 1)[0]
    print(f"{key}=127.0.0.1:{moved[key]}" if key in moved else a)
EOF
            )
            POD_NAME=obs-rbac POD_NAMESPACE=causeway-system "$CAUSEWAY_BIN" "${dargs[@]}" \
                --kubeconfig "$CLUSTER_DIR/limited.kubeconfig" >"$WORK/causeway.log" 2>&1 &
            cw_pid=$!
            deadline=$(( $(date +%s) + 60 ))
            until curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$admin/readyz" 2>/dev/null; do
                if ! kill -0 "$cw_pid" 2>/dev/null || [ "$(date +%s)" -ge "$deadline" ]; then break; fi
                sleep 0.2
            done
            if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$admin/readyz" 2>/dev/null; then
                ok "causeway ${dargs[*]} is ready under the manifests' RBAC only"
            else
                fail "causeway under the manifests' RBAC did not become ready: $(tail -n 5 "$WORK/causeway.log")"
            fi
            if grep -qiE "forbidden|permission denied|denies" "$WORK/causeway.log"; then
                fail "causeway under the manifests' RBAC was denied: $(grep -iE 'forbidden|permission denied|denies' "$WORK/causeway.log" | head -n 3 | cut -c1-300)"
            else
                ok "causeway under the manifests' RBAC: nothing denied"
            fi
            lease_holder="$(k -n causeway-system get lease causeway -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true)"
            [ "$lease_holder" = obs-rbac ] && ok "causeway holds its Lease in causeway-system" \
                || fail "Lease causeway-system/causeway holder is '$lease_holder', want obs-rbac"
            kill -TERM "$cw_pid" 2>/dev/null || true
            for _ in $(seq 100); do kill -0 "$cw_pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$cw_pid" 2>/dev/null || true
        else
            skipped=$((skipped + 1))
            echo "skip  causeway under the manifests' RBAC: set CAUSEWAY_BIN to a built causeway"
        fi

        # The node agent likewise, under exactly the ClusterRole `causeway-node` (a second user with no
        # permissions of its own would be cleaner; the limited user gets both roles, and the controller's
        # binding is removed first). No rules, routes or CNI: only its watches and readiness are checked.
        if [ -n "${CAUSEWAY_NODE_BIN:-}" ] && [ -x "$CAUSEWAY_NODE_BIN" ]; then
            k delete clusterrolebinding obs-limited-causeway --ignore-not-found >/dev/null
            k -n causeway-system delete rolebinding obs-limited-lease --ignore-not-found >/dev/null
            k create clusterrolebinding obs-limited-node --clusterrole=causeway-node --group=causeway:limited >/dev/null
            k -n causeway-system create rolebinding obs-limited-node-heartbeat --role=causeway-node-heartbeat \
                --group=causeway:limited >/dev/null
            nadmin="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
            mkdir -p "$WORK/sysctl"
            "$CAUSEWAY_NODE_BIN" --node-name obs-node --kubeconfig "$CLUSTER_DIR/limited.kubeconfig" \
                --cluster-cidr 10.244.0.0/16 --service-cidr 10.96.0.0/16 --proxy-mode none --no-cni --no-routes \
                --sysctl-root "$WORK/sysctl" --admin-addr "127.0.0.1:$nadmin" --heartbeat-namespace causeway-system \
                >"$WORK/causeway-node.log" 2>&1 &
            node_pid=$!
            deadline=$(( $(date +%s) + 60 ))
            until curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$nadmin/readyz" 2>/dev/null; do
                if ! kill -0 "$node_pid" 2>/dev/null || [ "$(date +%s)" -ge "$deadline" ]; then break; fi
                sleep 0.2
            done
            if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$nadmin/readyz" 2>/dev/null \
                && ! grep -qiE "forbidden|permission denied|denies" "$WORK/causeway-node.log"; then
                ok "causeway-node --kubeconfig is ready under the ClusterRole causeway-node and Role causeway-node-heartbeat only"
            else
                fail "causeway-node under the manifests' RBAC: $(tail -n 5 "$WORK/causeway-node.log" | cut -c1-300)"
            fi
            holder="$(k -n causeway-system get lease causeway-node-obs-node -o jsonpath='{.spec.holderIdentity}' 2>&1)"
            if [ "$holder" = obs-node ]; then
                ok "causeway-node renews its heartbeat Lease causeway-node-obs-node"
            else
                fail "causeway-node heartbeat Lease: holder '$holder'"
            fi
            kill -TERM "$node_pid" 2>/dev/null || true
            for _ in $(seq 100); do kill -0 "$node_pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$node_pid" 2>/dev/null || true
            holder="$(k -n causeway-system get lease causeway-node-obs-node -o jsonpath='{.spec.holderIdentity}' 2>&1)"
            if [ -z "$holder" ]; then
                ok "causeway-node released its heartbeat Lease on SIGTERM"
            else
                fail "causeway-node heartbeat Lease after SIGTERM: holder '$holder'"
            fi
        else
            skipped=$((skipped + 1))
            echo "skip  causeway-node under the manifests' RBAC: set CAUSEWAY_NODE_BIN to a built causeway-node"
        fi
    fi
fi

echo
if [ "$skipped" -gt 0 ]; then
    echo "$passed passed, $failed failed, $skipped skipped"
else
    echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
