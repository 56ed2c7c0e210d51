#!/usr/bin/env bash
# The kind end-to-end test: Causeway as the only network of a real cluster.
#
#   1. Creates a kind cluster with no CNI and no kube-proxy (one control plane, two workers).
#   2. Builds the image from the repository's Dockerfile and loads it into the nodes.
#   3. Applies manifests/ (through a temporary overlay: the image tag, the API server's real address for the node
#      agent, an IPPool on the kind network) and waits for the node agents, the nodes and the controller.
#   4. Runs the checks of the netns cluster against real pods:
#        path 1   container -> container in one pod (localhost)
#        path 2a  pod -> pod on the same node;  2b  pod -> pod across nodes;  2c  pod -> outside (masqueraded)
#        path 3   pod -> Service (ClusterIP, through cluster DNS)
#        path 4a  outside -> NodePort, outside -> LoadBalancer address (from a container on the kind network,
#                 which is outside the nodes)
#        path 4b  outside -> Ingress over HTTP and HTTPS (SNI) on the causeway Service's LoadBalancer address
#   5. Deletes the cluster (KEEP=1 keeps it for debugging).
#
# Where Docker (a reachable engine) or kind is missing it says so and exits 0 without running anything.
#
# Usage: tests/e2e/kind/run.sh            Env: CLUSTER [causeway-e2e], KEEP=1, TIMEOUT [300 s per wait],
#                                              IMAGE [causeway:e2e] (name:tag), SKIP_BUILD=1 (use an IMAGE already built)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
CLUSTER="${CLUSTER:-causeway-e2e}"
IMAGE="${IMAGE:-causeway:e2e}"
TIMEOUT="${TIMEOUT:-300}"
# Test images (pulled by the nodes and by docker): an HTTP server that reports the client address, and curl.
SERVER_IMAGE="${SERVER_IMAGE:-registry.k8s.io/e2e-test-images/agnhost:2.53}"
CURL_IMAGE="${CURL_IMAGE:-docker.io/curlimages/curl:8.11.1}"

# --- Prerequisites: say what is missing and stop without pretending ----------------------------------------------
missing=()
command -v docker >/dev/null || missing+=("docker")
command -v kind >/dev/null || missing+=("kind")
command -v kubectl >/dev/null || missing+=("kubectl")
if [ ${#missing[@]} -gt 0 ]; then
    echo "kind e2e: SKIPPED, not run: ${missing[*]} not found on PATH."
    echo "  It needs Docker, kind and kubectl; install them and run $0 again."
    exit 0
fi
if ! docker info >/dev/null 2>&1; then
    echo "kind e2e: SKIPPED, not run: the docker CLI is here but no Docker engine answers (docker info failed)."
    exit 0
fi

passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok    $*"; }
fail() { failed=$((failed + 1)); echo "FAIL  $*"; }
log() { printf '\n=== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

WORK="$(mktemp -d /tmp/causeway-kind.XXXXXX)"
OUTSIDE="$CLUSTER-outside"
export KUBECONFIG="$WORK/kubeconfig"
cleanup() {
    docker rm -f "$OUTSIDE" "$OUTSIDE-srv" >/dev/null 2>&1 || true
    if [ "${KEEP:-}" = 1 ]; then
        echo "kept: kind cluster $CLUSTER (KUBECONFIG=$KUBECONFIG), work directory $WORK"
    else
        kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# --- 1. Cluster --------------------------------------------------------------------------------------------------
log "Creating kind cluster $CLUSTER (no CNI, no kube-proxy)"
cat >"$WORK/kind.yaml" <<'EOF'
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  disableDefaultCNI: true
  kubeProxyMode: none
  podSubnet: 10.244.0.0/16
  serviceSubnet: 10.96.0.0/16
nodes:
  - role: control-plane
  - role: worker
  - role: worker
EOF
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    echo "kind e2e: a cluster named $CLUSTER already exists; delete it or set CLUSTER." >&2
    trap - EXIT
    rm -rf "$WORK"
    exit 1
fi
kind create cluster --name "$CLUSTER" --config "$WORK/kind.yaml" --kubeconfig "$KUBECONFIG" --wait 0s

# --- 2. Image ----------------------------------------------------------------------------------------------------
if [ "${SKIP_BUILD:-}" != 1 ]; then
    log "Building $IMAGE"
    docker build -t "$IMAGE" "$ROOT"
fi
kind load docker-image --name "$CLUSTER" "$IMAGE"

# --- 3. Install --------------------------------------------------------------------------------------------------
CP_IP="$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$CLUSTER-control-plane")"
SUBNET="$(docker network inspect kind -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}' | tr ' ' '\n' | grep -m1 '\.')"
# The LoadBalancer pool: .255.200/29 of the kind network's first two octets (172.18.255.200/29 by default).
POOL="$(echo "$SUBNET" | awk -F. '{print $1"."$2".255.200/29"}')"
log "Installing (API server $CP_IP:6443, pool $POOL)"
mkdir -p "$WORK/overlay"
REL="$(python3 -c 'import os,sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "$ROOT/manifests" "$WORK/overlay")"
cat >"$WORK/overlay/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $REL
images:
  - name: causeway
    newName: ${IMAGE%%:*}
    newTag: ${IMAGE##*:}
patches:
  # kind nodes hold their InternalIP on eth0: LoadBalancer addresses are announced there.
  - target: {kind: DaemonSet, name: causeway-node}
    patch: |-
      - op: add
        path: /spec/template/spec/containers/0/args/-
        value: --lb-interface=eth0
configMapGenerator:
  - name: causeway-node-apiserver
    namespace: causeway-system
    options: {disableNameSuffixHash: true}
    literals:
      - KUBERNETES_SERVICE_HOST=$CP_IP
      - KUBERNETES_SERVICE_PORT=6443
EOF
kubectl apply -k "$WORK/overlay"
kubectl wait --for=condition=Established --timeout=60s crd/ippools.causeway.dev
cat <<EOF | kubectl apply -f -
apiVersion: causeway.dev/v1alpha1
kind: IPPool
metadata: {name: kind}
spec:
  blocks: [{cidr: "$POOL"}]
EOF

# finish: the summary line and the exit status.
finish() {
    echo
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit
}
# give_up WHAT: without the node agents or the controller no later check can pass; show why and stop.
give_up() {
    fail "$1"
    echo "--- kubectl -n causeway-system get pods -o wide"
    kubectl -n causeway-system get pods -o wide || true
    for app in causeway-node causeway; do
        echo "--- last log lines of $app"
        kubectl -n causeway-system logs -l "app.kubernetes.io/name=$app" --tail=15 --prefix 2>&1 || true
    done
    finish
}

log "Waiting for the node agents, the nodes and the controller"
if kubectl -n causeway-system rollout status ds/causeway-node --timeout="${TIMEOUT}s"; then
    ok "causeway-node runs on every node"
else
    give_up "causeway-node DaemonSet not ready"
fi
if kubectl wait --for=condition=Ready nodes --all --timeout="${TIMEOUT}s"; then
    ok "every node is Ready (CNI configured by causeway-node)"
else
    give_up "nodes not Ready"
fi
if kubectl -n causeway-system rollout status deploy/causeway --timeout="${TIMEOUT}s"; then
    ok "causeway Deployment available (readiness on /readyz)"
else
    give_up "causeway Deployment not available"
fi
kubectl -n kube-system rollout status deploy/coredns --timeout="${TIMEOUT}s" || fail "CoreDNS not ready"

# --- 4. Workloads ------------------------------------------------------------------------------------------------
log "Deploying the test workloads"
read -r -a WORKERS < <(kubectl get nodes -l '!node-role.kubernetes.io/control-plane' -o jsonpath='{.items[*].metadata.name}')
[ ${#WORKERS[@]} -ge 2 ] || { fail "expected two workers, got ${WORKERS[*]:-none}"; }
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=web.e2e.test" \
    -addext "subjectAltName=DNS:web.e2e.test" -keyout "$WORK/tls.key" -out "$WORK/tls.crt" 2>/dev/null
kubectl create namespace e2e
kubectl -n e2e create secret tls web-tls --cert "$WORK/tls.crt" --key "$WORK/tls.key"
pod() { # pod NAME NODE: an HTTP server (netexec on 8080) with a curl sidecar, pinned to NODE
    cat <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: e2e, labels: {app: web}}
spec:
  nodeName: $2
  containers:
    - name: server
      image: $SERVER_IMAGE
      args: ["netexec", "--http-port=8080"]
      ports: [{containerPort: 8080}]
    - name: client
      image: $CURL_IMAGE
      command: ["sleep", "86400"]
---
EOF
}
{
    pod a1 "${WORKERS[0]}"
    pod a2 "${WORKERS[0]}"
    pod b1 "${WORKERS[1]}"
    cat <<EOF
apiVersion: v1
kind: Service
metadata: {name: web, namespace: e2e}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-np, namespace: e2e}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-lb, namespace: e2e}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  namespace: e2e
  annotations: {causeway.dev/ssl-redirect: "false"}
spec:
  ingressClassName: causeway
  tls: [{hosts: [web.e2e.test], secretName: web-tls}]
  rules:
    - host: web.e2e.test
      http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
EOF
} | kubectl apply -f -
kubectl -n e2e wait --for=condition=Ready pod/a1 pod/a2 pod/b1 --timeout="${TIMEOUT}s" || fail "test pods not Ready"

ip_of() { kubectl -n e2e get pod "$1" -o jsonpath='{.status.podIP}'; }
in_pod() { kubectl -n e2e exec "$1" -c client -- curl -fsS --max-time 5 "${@:2}"; }
# expect NAME COMMAND...: passes when COMMAND succeeds within a few attempts (rules converge in about a second).
expect() {
    local name="$1" out
    shift
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        if out="$("$@" 2>&1)"; then
            ok "$name: $(echo "$out" | head -c 80 | tr '\n' ' ')"
            return 0
        fi
        sleep 2
    done
    fail "$name: $(echo "$out" | tail -n 2 | tr '\n' ' ')"
}
A1="$(ip_of a1)" A2="$(ip_of a2)" B1="$(ip_of b1)"
echo "pods: a1=$A1 a2=$A2 (${WORKERS[0]}), b1=$B1 (${WORKERS[1]})"

# An outside client: a container on the kind network that is not a node.
docker run -d --name "$OUTSIDE" --network kind --entrypoint sleep "$CURL_IMAGE" 86400 >/dev/null
OUTSIDE_IP="$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$OUTSIDE")"
outside() { docker exec "$OUTSIDE" curl -fsS --max-time 5 "$@"; }
# An outside server for path 2c (it reports the source address it sees).
docker run -d --name "$OUTSIDE-srv" --network kind "$SERVER_IMAGE" netexec --http-port=8080 >/dev/null
SRV_IP="$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$OUTSIDE-srv")"

log "Checks"
expect "path 1: container -> container in pod a1 (localhost)" in_pod a1 "http://127.0.0.1:8080/hostname"
expect "path 2a: pod a1 -> pod a2, same node" in_pod a1 "http://$A2:8080/hostname"
expect "path 2b: pod a1 -> pod b1, across nodes" in_pod a1 "http://$B1:8080/hostname"
# The pod's source address arrives unchanged across nodes (no NAT between pods).
expect "path 2b: no NAT between pods" bash -c "[ \"\$(kubectl -n e2e exec a1 -c client -- curl -fsS --max-time 5 http://$B1:8080/clientip | cut -d: -f1)\" = $A1 ]"
# Leaving the cluster, the source is masqueraded to the node's address (not the pod's).
expect "path 2c: pod -> outside, masqueraded" bash -c "src=\$(kubectl -n e2e exec b1 -c client -- curl -fsS --max-time 5 http://$SRV_IP:8080/clientip | cut -d: -f1); [ -n \"\$src\" ] && [ \"\$src\" != $B1 ]"
expect "path 3: pod -> Service by DNS name (ClusterIP)" in_pod a1 "http://web.e2e.svc.cluster.local/hostname"
NODE_PORT="$(kubectl -n e2e get svc web-np -o jsonpath='{.spec.ports[0].nodePort}')"
NODE_IP="$(kubectl get node "${WORKERS[1]}" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')"
expect "path 4a: outside ($OUTSIDE_IP) -> NodePort $NODE_IP:$NODE_PORT" outside "http://$NODE_IP:$NODE_PORT/hostname"

lb_ip() { kubectl -n "$1" get svc "$2" -o jsonpath='{.status.loadBalancer.ingress[0].ip}'; }
wait_lb() {
    local deadline=$(( $(date +%s) + TIMEOUT )) ip=""
    while [ -z "$ip" ] && [ "$(date +%s)" -lt "$deadline" ]; do ip="$(lb_ip "$1" "$2")"; [ -n "$ip" ] || sleep 1; done
    echo "$ip"
}
LB_IP="$(wait_lb e2e web-lb)"
if [ -n "$LB_IP" ]; then
    ok "Service web-lb got LoadBalancer address $LB_IP from pool $POOL"
    expect "path 4a: outside -> LoadBalancer $LB_IP" outside "http://$LB_IP/hostname"
else
    fail "Service web-lb got no LoadBalancer address within ${TIMEOUT}s"
fi
EDGE_IP="$(wait_lb causeway-system causeway)"
if [ -n "$EDGE_IP" ]; then
    ok "Service causeway-system/causeway got LoadBalancer address $EDGE_IP"
    expect "path 4b: outside -> Ingress over HTTP" outside -H "Host: web.e2e.test" "http://$EDGE_IP/hostname"
    expect "path 4b: outside -> Ingress over HTTPS (SNI)" outside -k --resolve "web.e2e.test:443:$EDGE_IP" \
        "https://web.e2e.test/hostname"
    expect "Ingress status carries the address" bash -c \
        "[ \"\$(kubectl -n e2e get ingress web -o jsonpath='{.status.loadBalancer.ingress[0].ip}')\" = $EDGE_IP ]"
else
    fail "the causeway Service got no LoadBalancer address within ${TIMEOUT}s"
fi

finish
