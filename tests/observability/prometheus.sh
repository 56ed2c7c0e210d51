#!/usr/bin/env bash
# The observability test: a real Prometheus scrapes a running `causeway` and `causeway-node` under load, then
# every query of every dashboard in dashboards/ is evaluated through Prometheus's HTTP API.
#
#   1. Installs Debian's `prometheus` package when missing (it brings promtool); if apt starts the package's own
#      service, stops it again (only a service this script caused to be started).
#   2. Builds `causeway` and `causeway-node` (debug) unless CAUSEWAY_BIN / CAUSEWAY_NODE_BIN name them.
#   3. In a throwaway network namespace (nothing is asked of the root namespace; every address is on its `lo`):
#      an HTTP backend, `causeway run --manifests` over a generated directory (Ingress over HTTP and HTTPS, a
#      Service whose endpoint is down, two L4 proxy listeners), and two `causeway-node --manifests` on the same
#      objects: node-a healthy (its route to node-c, on no connected network, fails), node-b with an
#      iptables-restore that fails (so the failure series exist).
#   4. Bounded load (wrk or a curl loop, a few seconds): 2xx, 404, 502, HTTPS, failed TLS handshakes, L4.
#   5. `promtool check metrics` on both /metrics outputs.
#   6. Prometheus on 127.0.0.1 (a free port, 1 s scrapes); waits (with a deadline) for samples taken after the
#      load, then check_dashboards.py evaluates every panel and variable query: valid PromQL with >= 1 series.
#
# Needs root (network namespace, iptables inside it). Prints one line per check and `N passed, M failed`;
# exits non-zero on any failure.
#
# Environment: CAUSEWAY_BIN, CAUSEWAY_NODE_BIN   binaries to test [built with cargo into $CARGO_TARGET_DIR]
#              CARGO_TARGET_DIR                  [/var/tmp/causeway-target]
#              OBS_TIMEOUT                       seconds for each wait [60]
#              OBS_KEEP=1                        keep the work directory (logs) after the run
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TIMEOUT="${OBS_TIMEOUT:-60}"

# ================================================================================================================
# Inside the network namespace.
# ================================================================================================================
inside() {
    PIDS=()
    cleanup_inside() {
        local pid
        if [ -n "${CLUSTER_STARTED:-}" ]; then "$ROOT/tests/cluster/stop.sh" "$W/cluster" >/dev/null 2>&1 || true; fi
        for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
        for pid in "${PIDS[@]}"; do
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null || true
        done
    }
    trap cleanup_inside EXIT

    passed=0 failed=0
    ok() { passed=$((passed + 1)); echo "ok    $*"; }
    fail() { failed=$((failed + 1)); echo "FAIL  $*"; }
    free_port() {
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
    }
    # wait_http NAME PID URL: polls URL until it answers 2xx, with a deadline; fails early if PID exits.
    wait_http() {
        local name="$1" pid="$2" url="$3" deadline=$(( $(date +%s) + TIMEOUT ))
        until curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
            if ! kill -0 "$pid" 2>/dev/null; then
                fail "$name exited before $url answered; last lines of its log:"
                tail -n 20 "$W/$name.log" | sed 's/^/      /'
                return 1
            fi
            if [ "$(date +%s)" -ge "$deadline" ]; then
                fail "$name: $url did not answer within ${TIMEOUT}s"
                tail -n 20 "$W/$name.log" | sed 's/^/      /'
                return 1
            fi
            sleep 0.2
        done
        ok "$name answers on $url"
    }
    finish() {
        echo
        echo "$passed passed, $failed failed"
        [ "$failed" -eq 0 ]
        exit
    }

    # kube_phase: sets KUBE_TARGET (host:port of a causeway on the Kubernetes source) or SKIP_EMPTY.
    kube_phase() {
        local cache="${CAUSEWAY_CLUSTER_CACHE:-/var/cache/causeway}"
        local apiserver="${KUBE_APISERVER:-$cache/k8s-${K8S_VERSION:-v1.35.4}/kube-apiserver}"
        local etcd="${ETCD:-$cache/etcd-${ETCD_VERSION:-v3.6.16}/etcd}"
        SKIP_EMPTY=(--skip-empty causeway-controller)
        if [ ! -x "$ROOT/tests/cluster/start.sh" ] || [ ! -x "$apiserver" ] || [ ! -x "$etcd" ]; then
            echo "skip  Kubernetes source: the test control plane is not built (tests/cluster/build.sh)"
            return 1
        fi
        local kc="$W/cluster/admin.kubeconfig" kadmin kpid
        CLUSTER_STARTED=1
        if ! CAUSEWAY_CLUSTER_OWNER_PID=$$ "$ROOT/tests/cluster/start.sh" "$W/cluster" >"$W/cluster-start.log" 2>&1; then
            fail "tests/cluster/start.sh: $(tail -n 3 "$W/cluster-start.log")"
            return 1
        fi
        kubectl --kubeconfig "$kc" create namespace causeway-system >/dev/null 2>&1 || true
        # The same objects, minus what the API server refuses (loopback endpoint addresses; status on create),
        # plus an Ingress naming a Service that does not exist (a diagnostic, hence an Event).
        local py=python3
        "$py" -c 'import yaml' 2>/dev/null || py=/usr/bin/python3
        if ! "$py" -c 'import yaml' 2>/dev/null; then
            fail "Kubernetes source: PyYAML is needed (apt-get install python3-yaml)"
            return 1
        fi
        "$py" - "$M/objects.yaml" "$W/kube-objects.yaml" <<'PY'
import sys, yaml
objs = [o for o in yaml.safe_load_all(open(sys.argv[1])) if o]
for o in objs:
    o.pop("status", None)
    if o["kind"] == "EndpointSlice":
        for e in o.get("endpoints", []):
            e["addresses"] = ["10.255.0.1"]
objs.append({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
             "metadata": {"name": "broken", "namespace": "obs"},
             "spec": {"rules": [{"host": "broken.obs.test", "http": {"paths": [{"path": "/", "pathType": "Prefix",
                      "backend": {"service": {"name": "missing", "port": {"number": 80}}}}]}}]}})
yaml.safe_dump_all(objs, open(sys.argv[2], "w"))
PY
        if ! kubectl --kubeconfig "$kc" apply -f "$W/kube-objects.yaml" >"$W/kube-apply.log" 2>&1; then
            fail "kubectl apply of the test objects: $(tail -n 3 "$W/kube-apply.log")"
            return 1
        fi
        kadmin="$(free_port)"
        POD_NAME=obs-kube POD_NAMESPACE=causeway-system "$CAUSEWAY_BIN" run --kubeconfig "$kc" \
            --http-addr "127.0.0.1:$(free_port)" --https-addr "127.0.0.1:$(free_port)" \
            --admin-addr "127.0.0.1:$kadmin" --publish-address 127.0.0.1 >"$W/causeway-kube.log" 2>&1 &
        kpid=$!
        PIDS+=("$kpid")
        # A build without the Kubernetes source says so and exits: report it as skipped, not failed.
        for _ in $(seq 50); do
            kill -0 "$kpid" 2>/dev/null || break
            curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$kadmin/healthz" 2>/dev/null && break
            sleep 0.2
        done
        if ! kill -0 "$kpid" 2>/dev/null && grep -q "not wired" "$W/causeway-kube.log"; then
            echo "skip  Kubernetes source: this causeway build has none ($(grep -o 'no source[^(]*' "$W/causeway-kube.log" | head -n1))"
            return 1
        fi
        wait_http causeway-kube "$kpid" "http://127.0.0.1:$kadmin/readyz" || return 1
        # An API server outage: every watch breaks and re-lists.
        "$ROOT/tests/cluster/stop.sh" --only apiserver "$W/cluster" >/dev/null 2>&1
        "$ROOT/tests/cluster/start.sh" --only apiserver "$W/cluster" >>"$W/cluster-start.log" 2>&1 \
            || { fail "restarting kube-apiserver: $(tail -n 3 "$W/cluster-start.log")"; return 1; }
        local deadline=$(( $(date +%s) + TIMEOUT ))
        until curl -fsS --max-time 2 "http://127.0.0.1:$kadmin/metrics" 2>/dev/null \
            | grep -q '^causeway_kube_watch_restarts_total{'; do
            if [ "$(date +%s)" -ge "$deadline" ]; then
                fail "causeway-kube: no watch restart counted ${TIMEOUT}s after the API server restarted"
                return 1
            fi
            sleep 0.5
        done
        ok "causeway-kube re-listed after an API server restart"
        KUBE_TARGET="127.0.0.1:$kadmin"
        SKIP_EMPTY=()
    }
    CLUSTER_STARTED=""

    ip link set lo up
    # The node's address for the agent (routes to other nodes need a connected next hop): one end of a veth
    # pair that stays inside this namespace (veth needs no extra kernel module, unlike dummy).
    ip link add cw-obs0 type veth peer name cw-obs1
    ip addr add 172.18.0.2/24 dev cw-obs0
    ip link set cw-obs1 up
    ip link set cw-obs0 up

    BACKEND_PORT="$(free_port)"
    DEAD_PORT="$(free_port)" # nothing listens here: connects fail with ECONNREFUSED
    HTTP_PORT="$(free_port)"
    HTTPS_PORT="$(free_port)"
    ADMIN_PORT="$(free_port)"
    NODE_ADMIN_PORT="$(free_port)"
    NODE_B_ADMIN_PORT="$(free_port)"
    L4_PORT="$(free_port)"
    L4_DEAD_PORT="$(free_port)"
    PROM_PORT="$(free_port)"

    # --- Manifests ----------------------------------------------------------------------------------------------
    M="$W/manifests"
    mkdir -p "$M" "$W/cni/net.d" "$W/cni/bin" "$W/cni/networks"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj "/CN=web.obs.test" \
        -addext "subjectAltName=DNS:web.obs.test" -keyout "$W/tls.key" -out "$W/tls.crt" 2>/dev/null
    cat >"$M/objects.yaml" <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: obs}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: causeway
  annotations: {ingressclass.kubernetes.io/is-default-class: "true"}
spec: {controller: causeway.dev/ingress-controller}
---
apiVersion: v1
kind: Secret
type: kubernetes.io/tls
metadata: {name: web-tls, namespace: obs}
data:
  tls.crt: $(base64 -w0 <"$W/tls.crt")
  tls.key: $(base64 -w0 <"$W/tls.key")
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: obs}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: http, port: 80, targetPort: $BACKEND_PORT}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: obs
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: $BACKEND_PORT, protocol: TCP}]
endpoints: [{addresses: ["127.0.0.1"], conditions: {ready: true}}]
---
apiVersion: v1
kind: Service
metadata: {name: down, namespace: obs}
spec:
  clusterIP: 10.96.0.21
  ports: [{name: http, port: 80, targetPort: $DEAD_PORT}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: down-1
  namespace: obs
  labels: {kubernetes.io/service-name: down}
addressType: IPv4
ports: [{name: http, port: $DEAD_PORT, protocol: TCP}]
endpoints: [{addresses: ["127.0.0.1"], conditions: {ready: true}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  namespace: obs
  annotations: {causeway.dev/ssl-redirect: "false"}
spec:
  tls: [{hosts: [web.obs.test], secretName: web-tls}]
  rules:
    - host: web.obs.test
      http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}
          - {path: /down, pathType: Prefix, backend: {service: {name: down, port: {number: 80}}}}
---
apiVersion: v1
kind: Service
metadata: {name: tcp-web, namespace: obs}
spec:
  type: LoadBalancer
  loadBalancerClass: causeway.dev/proxy
  clusterIP: 10.96.0.22
  ports: [{name: tcp, port: $L4_PORT, targetPort: $BACKEND_PORT, protocol: TCP}]
status:
  loadBalancer: {ingress: [{ip: 127.0.0.1}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: tcp-web-1
  namespace: obs
  labels: {kubernetes.io/service-name: tcp-web}
addressType: IPv4
ports: [{name: tcp, port: $BACKEND_PORT, protocol: TCP}]
endpoints: [{addresses: ["127.0.0.1"], conditions: {ready: true}}]
---
apiVersion: v1
kind: Service
metadata: {name: tcp-down, namespace: obs}
spec:
  type: LoadBalancer
  loadBalancerClass: causeway.dev/proxy
  clusterIP: 10.96.0.23
  ports: [{name: tcp, port: $L4_DEAD_PORT, targetPort: $DEAD_PORT, protocol: TCP}]
status:
  loadBalancer: {ingress: [{ip: 127.0.0.1}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: tcp-down-1
  namespace: obs
  labels: {kubernetes.io/service-name: tcp-down}
addressType: IPv4
ports: [{name: tcp, port: $DEAD_PORT, protocol: TCP}]
endpoints: [{addresses: ["127.0.0.1"], conditions: {ready: true}}]
---
# A LoadBalancer Service whose address is already in its status. No IPPool here on purpose: without pools the
# allocator keeps the addresses found in status (the proxy-class Services above keep 127.0.0.1) and only
# computes which node announces each.
apiVersion: v1
kind: Service
metadata: {name: web-lb, namespace: obs}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.24
  ports: [{name: http, port: 80, targetPort: $BACKEND_PORT}]
status:
  loadBalancer: {ingress: [{ip: 172.18.255.200}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-lb-1
  namespace: obs
  labels: {kubernetes.io/service-name: web-lb}
addressType: IPv4
ports: [{name: http, port: $BACKEND_PORT, protocol: TCP}]
endpoints: [{addresses: ["127.0.0.1"], conditions: {ready: true}}]
---
apiVersion: v1
kind: Node
metadata: {name: node-a}
spec: {podCIDR: 10.244.0.0/24, podCIDRs: [10.244.0.0/24]}
status:
  # The only Ready node: it owns (and announces) every LoadBalancer address.
  conditions: [{type: Ready, status: "True"}]
  addresses: [{type: InternalIP, address: 172.18.0.2}, {type: Hostname, address: node-a}]
---
apiVersion: v1
kind: Node
metadata: {name: node-b}
spec: {podCIDR: 10.244.1.0/24, podCIDRs: [10.244.1.0/24]}
status:
  addresses: [{type: InternalIP, address: 172.18.0.3}, {type: Hostname, address: node-b}]
---
apiVersion: v1
kind: Node
metadata: {name: node-c}
spec: {podCIDR: 10.244.2.0/24, podCIDRs: [10.244.2.0/24]}
status:
  addresses: [{type: InternalIP, address: 192.0.2.10}, {type: Hostname, address: node-c}]
EOF

    # --- Processes ----------------------------------------------------------------------------------------------
    python3 "$HERE/backend.py" 127.0.0.1 "$BACKEND_PORT" >"$W/backend.log" 2>&1 &
    PIDS+=($!)
    wait_http backend "$!" "http://127.0.0.1:$BACKEND_PORT/" || finish

    "$CAUSEWAY_BIN" run --manifests "$M" --http-addr "127.0.0.1:$HTTP_PORT" --https-addr "127.0.0.1:$HTTPS_PORT" \
        --admin-addr "127.0.0.1:$ADMIN_PORT" >"$W/causeway.log" 2>&1 &
    PIDS+=($!)
    CAUSEWAY_PID=$!
    wait_http causeway "$CAUSEWAY_PID" "http://127.0.0.1:$ADMIN_PORT/readyz" || finish

    # node-a: a healthy agent (rules, routes, CNI configuration, LoadBalancer addresses announced on the veth,
    # which stays inside this namespace). Its route to node-c cannot be installed (no connected network reaches
    # 192.0.2.10), which the route failure panels show.
    "$CAUSEWAY_NODE_BIN" --node-name node-a --manifests "$M" \
        --cluster-cidr 10.244.0.0/16 --service-cidr 10.96.0.0/16 \
        --cni-conf-dir "$W/cni/net.d" --cni-bin-dir "$W/cni/bin" --ipam-dir "$W/cni/networks" \
        --proxy-mode iptables --admin-addr "127.0.0.1:$NODE_ADMIN_PORT" --lb-interface cw-obs0 \
        >"$W/causeway-node.log" 2>&1 &
    PIDS+=($!)
    NODE_PID=$!
    wait_http causeway-node "$NODE_PID" "http://127.0.0.1:$NODE_ADMIN_PORT/readyz" || finish
    # node-b: an agent whose iptables-restore fails (rule sync failures); no routes, no CNI, sysctls in a scratch dir.
    printf '#!/bin/sh\ncat >/dev/null\necho "iptables-restore: line 2 failed (observability test)" >&2\nexit 1\n' \
        >"$W/iptables-restore-broken"
    chmod +x "$W/iptables-restore-broken"
    mkdir -p "$W/sysctl-b"
    "$CAUSEWAY_NODE_BIN" --node-name node-b --manifests "$M" --cluster-cidr 10.244.0.0/16 \
        --service-cidr 10.96.0.0/16 --no-cni --no-routes --sysctl-root "$W/sysctl-b" \
        --iptables-restore "$W/iptables-restore-broken" --admin-addr "127.0.0.1:$NODE_B_ADMIN_PORT" \
        >"$W/causeway-node-b.log" 2>&1 &
    PIDS+=($!)
    NODE_B_PID=$!
    wait_http causeway-node-b "$NODE_B_PID" "http://127.0.0.1:$NODE_B_ADMIN_PORT/metrics" || finish

    # --- The Kubernetes source (watch health, leadership, status, Events) ----------------------------------------
    # A second causeway watches a real kube-apiserver (tests/cluster/, started inside this namespace) when the
    # control plane is built and this causeway build has the Kubernetes source; an API server restart in the
    # middle gives the watch error and restart series. Otherwise the Controller dashboard is reported skipped.
    KUBE_TARGET=""
    SKIP_EMPTY=()
    kube_phase || true
    TARGETS=3
    [ -n "$KUBE_TARGET" ] && TARGETS=4

    cat >"$W/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: causeway
    static_configs: [{targets: ["127.0.0.1:$ADMIN_PORT"]}]
  - job_name: causeway-node
    static_configs:
      - {targets: ["127.0.0.1:$NODE_ADMIN_PORT"], labels: {node: node-a}}
      - {targets: ["127.0.0.1:$NODE_B_ADMIN_PORT"], labels: {node: node-b}}
EOF
    if [ -n "$KUBE_TARGET" ]; then
        printf '  - job_name: causeway-kube\n    static_configs: [{targets: ["%s"]}]\n' "$KUBE_TARGET" \
            >>"$W/prometheus.yml"
    fi
    if promtool check config "$W/prometheus.yml" >"$W/promtool-config.out" 2>&1; then
        ok "promtool check config"
    else
        fail "promtool check config: $(cat "$W/promtool-config.out")"
    fi
    prometheus --config.file="$W/prometheus.yml" --storage.tsdb.path="$W/tsdb" \
        --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn >"$W/prometheus.log" 2>&1 &
    PIDS+=($!)
    PROM_PID=$!
    PROM="http://127.0.0.1:$PROM_PORT"
    wait_http prometheus "$PROM_PID" "$PROM/-/ready" || finish

    # prom_value EXPR: the first sample's value of an instant query, or nothing.
    prom_value() {
        curl -fsS --max-time 5 -G "$PROM/api/v1/query" --data-urlencode "query=$1" 2>/dev/null \
            | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")' \
                2>/dev/null || true
    }
    # wait_prom NAME EXPR: polls until EXPR returns a sample (a comparison filters until it holds).
    wait_prom() {
        local name="$1" expr="$2" deadline=$(( $(date +%s) + TIMEOUT ))
        until [ -n "$(prom_value "$expr")" ]; do
            if [ "$(date +%s)" -ge "$deadline" ]; then
                fail "$name: Prometheus has no sample for '$expr' after ${TIMEOUT}s"
                tail -n 10 "$W/prometheus.log" | sed 's/^/      /'
                return 1
            fi
            sleep 0.5
        done
        ok "$name"
    }
    wait_prom "Prometheus scrapes every target ($TARGETS)" "count(up == 1) == $TARGETS" || finish

    # --- Load (bounded) -----------------------------------------------------------------------------------------
    H="http://127.0.0.1:$HTTP_PORT"
    code() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" || true; }
    [ "$(code -H 'Host: web.obs.test' "$H/")" = 200 ] && ok "HTTP via Ingress: 200" || fail "HTTP via Ingress: not 200"
    [ "$(code -H 'Host: web.obs.test' "$H/down")" = 502 ] && ok "HTTP to a down endpoint: 502" \
        || fail "HTTP to a down endpoint: not 502"
    [ "$(code -H 'Host: nowhere.obs.test' "$H/")" = 404 ] && ok "HTTP for an unknown host: 404" \
        || fail "HTTP for an unknown host: not 404"
    [ "$(code -k --resolve "web.obs.test:$HTTPS_PORT:127.0.0.1" "https://web.obs.test:$HTTPS_PORT/")" = 200 ] \
        && ok "HTTPS via Ingress (SNI web.obs.test): 200" || fail "HTTPS via Ingress: not 200"
    # L4 listeners (Services of loadBalancerClass causeway.dev/proxy): checked when the proxy opened them.
    L4_OPEN="$(curl -fsS --max-time 5 "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '$1 == "causeway_l4_listeners" {print $2}')"
    if [ "${L4_OPEN:-0}" = 0 ]; then
        echo "note  the proxy opened no L4 listener for the two causeway.dev/proxy Services; no L4 traffic is sent"
    elif [ "$(code "http://127.0.0.1:$L4_PORT/")" = 200 ]; then
        ok "L4 proxy listener: 200 from the backend ($L4_OPEN listeners)"
    else
        fail "L4 proxy listener: no answer from the backend"
    fi

    LOAD_SECONDS=4
    load_end=$(( $(date +%s) + LOAD_SECONDS ))
    if command -v wrk >/dev/null; then
        wrk -t2 -c8 -d"${LOAD_SECONDS}s" -H 'Host: web.obs.test' "$H/" >"$W/wrk.out" 2>&1 &
        WRK_PID=$!
        PIDS+=("$WRK_PID")
    fi
    n=0
    while [ "$(date +%s)" -lt "$load_end" ]; do
        code -H 'Host: web.obs.test' "$H/" >/dev/null
        code -H 'Host: web.obs.test' "$H/down" >/dev/null
        code -H 'Host: nowhere.obs.test' "$H/" >/dev/null
        code -k --resolve "web.obs.test:$HTTPS_PORT:127.0.0.1" "https://web.obs.test:$HTTPS_PORT/" >/dev/null
        code "http://127.0.0.1:$HTTPS_PORT/" >/dev/null # plain HTTP on the TLS port: a failed handshake
        if [ "${L4_OPEN:-0}" != 0 ]; then
            code "http://127.0.0.1:$L4_PORT/" >/dev/null
            code "http://127.0.0.1:$L4_DEAD_PORT/" >/dev/null # the L4 endpoint is down: a failed connect
        fi
        n=$((n + 1))
    done
    if [ -n "${WRK_PID:-}" ]; then
        wait "$WRK_PID" 2>/dev/null || true
        echo "      wrk: $(grep -E 'Requests/sec' "$W/wrk.out" || echo 'no summary')"
    fi
    ok "load: ${LOAD_SECONDS}s (wrk + $n curl rounds)"
    load_done=$(date +%s)

    # --- promtool check metrics ---------------------------------------------------------------------------------
    TARGET_LIST=("causeway $ADMIN_PORT" "causeway-node $NODE_ADMIN_PORT" "causeway-node-b $NODE_B_ADMIN_PORT")
    [ -n "$KUBE_TARGET" ] && TARGET_LIST+=("causeway-kube ${KUBE_TARGET##*:}")
    for target in "${TARGET_LIST[@]}"; do
        set -- $target
        if curl -fsS --max-time 5 "http://127.0.0.1:$2/metrics" >"$W/$1.metrics" 2>"$W/$1.metrics.err"; then
            if promtool check metrics <"$W/$1.metrics" >"$W/$1.promtool" 2>&1; then
                ok "promtool check metrics: $1 ($(grep -c '^# TYPE' "$W/$1.metrics") metric families)"
            else
                fail "promtool check metrics: $1:"
                sed 's/^/      /' "$W/$1.promtool"
            fi
        else
            fail "GET /metrics of $1: $(cat "$W/$1.metrics.err")"
        fi
    done

    # --- Every dashboard query ----------------------------------------------------------------------------------
    # Samples taken after the load ended, from both targets, so that rates over the load are complete.
    wait_prom "Prometheus has samples from after the load" \
        "count(timestamp(up) > $((load_done + 1))) == $TARGETS" || finish
    set +e
    python3 "$HERE/check_dashboards.py" --dashboards "$ROOT/dashboards" --prometheus "$PROM" "${SKIP_EMPTY[@]}" \
        >"$W/dashboards.out" 2>&1
    set -e
    grep -v '^[0-9]* passed, [0-9]* failed$' "$W/dashboards.out" || true
    read -r dp df < <(awk '/^[0-9]+ passed, [0-9]+ failed$/ {print $1, $3}' "$W/dashboards.out" | tail -n1)
    if [ -z "${dp:-}" ]; then
        fail "check_dashboards.py did not finish: $(tail -n 5 "$W/dashboards.out")"
    else
        passed=$((passed + dp)); failed=$((failed + df))
    fi
    finish
}

if [ "${1:-}" = "--inside" ]; then
    inside
fi

# ================================================================================================================
# Outside: tools, binaries, the namespace.
# ================================================================================================================
if [ "$(id -u)" -ne 0 ]; then
    echo "prometheus.sh: needs root (it runs everything in a throwaway network namespace)."
    echo "0 passed, 1 failed"
    exit 1
fi

if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
    echo "Installing Debian's prometheus package (brings promtool)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    # The package may start its own service on :9090; this run caused that, so stop it again.
    if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
        systemctl stop prometheus || true
    elif [ -f /run/prometheus/prometheus.pid ]; then
        pid="$(cat /run/prometheus/prometheus.pid)"
        if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = prometheus ]; then kill -TERM "$pid" || true; fi
    fi
fi
# PyYAML for the Kubernetes-source phase (Debian's python3-yaml when the first python3 has none).
if ! python3 -c 'import yaml' 2>/dev/null && ! /usr/bin/python3 -c 'import yaml' 2>/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-yaml >/dev/null || true
fi
for tool in curl openssl python3 ip iptables-restore; do
    command -v "$tool" >/dev/null || { echo "prometheus.sh: $tool is needed"; echo "0 passed, 1 failed"; exit 1; }
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/causeway-target}"
if [ -z "${CAUSEWAY_BIN:-}" ] || [ -z "${CAUSEWAY_NODE_BIN:-}" ]; then
    echo "Building causeway and causeway-node (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    if ! (cd "$ROOT" && cargo build -q -p causeway -p causeway-node); then
        echo "FAIL  cargo build -p causeway -p causeway-node"
        echo "0 passed, 1 failed"
        exit 1
    fi
fi
export CAUSEWAY_BIN="${CAUSEWAY_BIN:-$CARGO_TARGET_DIR/debug/causeway}"
export CAUSEWAY_NODE_BIN="${CAUSEWAY_NODE_BIN:-$CARGO_TARGET_DIR/debug/causeway-node}"
export TIMEOUT HERE ROOT

W="$(mktemp -d /tmp/causeway-obs.XXXXXX)"
export W
NS="cw-obs-$$-$RANDOM"
cleanup() {
    # Anything still in our namespace was started by this run (the inner trap normally ended it already).
    local pid
    for pid in $(ip netns pids "$NS" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns delete "$NS" 2>/dev/null || true
    if [ "${OBS_KEEP:-}" = 1 ]; then echo "work directory kept: $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
ip netns add "$NS"
set +e
ip netns exec "$NS" "$0" --inside
status=$?
set -e
exit "$status"
