#!/usr/bin/env bash
# L7 benchmark (issue 2 item 9). Not a test: it prints numbers.
#
# One run measures, with wrk (keep-alive, 64 connections, DURATION seconds, ROUNDS rounds, after a warm-up):
#   direct    wrk -> nginx backend
#   nginx     wrk -> nginx proxy (1 worker, upstream keepalive) -> backend
#   haproxy   wrk -> haproxy (1 thread, http-reuse always) -> backend
#   causeway  wrk -> causeway run --manifests DIR --worker-threads 1 -> backend
# Every proxy runs pinned to PROXY_CPU; wrk and the backend share LOAD_CPU. It prints the median of the rounds
# (req/s, p50, p99, proxy CPU µs per request) and the ratios causeway/nginx, causeway/haproxy, causeway/direct.
#
# Environment: ROUNDS [3], DURATION [10], CONNECTIONS [64], PROXY_CPU [1], LOAD_CPU [0],
#   CAUSEWAY_BIN [built with cargo into $CARGO_TARGET_DIR], CAUSEWAY_ENGINE_ONLY=1 to bench the proxy engine
#   alone (proxy/engine/examples/bench_proxy.rs) instead of the binary, CAUSEWAY_ENGINE_WORKERS [1] its tokio
#   worker threads (0: a current-thread runtime), CAUSEWAY_ENGINE_MODE=threads to use Proxy::serve_on_threads.
# Needs: wrk, nginx, haproxy, taskset, python3, cargo. Traffic stays on 127.0.0.1; ports are picked at run time.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/causeway-target}

for tool in wrk nginx haproxy taskset python3; do
    command -v "$tool" >/dev/null || { echo "l7.sh: $tool is required (apt-get install wrk nginx haproxy util-linux)" >&2; exit 2; }
done

WORK=$(mktemp -d /tmp/causeway-bench.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    [[ -n "${KEEP_WORK:-}" ]] || rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_port() { # wait_port PORT: until something answers HTTP on it (at most 20 s)
    local deadline=$((SECONDS + 20))
    until curl -s -o /dev/null "http://127.0.0.1:$1/" 2>/dev/null; do
        if ((SECONDS > deadline)); then echo "l7.sh: nothing listens on port $1" >&2; exit 1; fi
        sleep 0.1
    done
}

# --- causeway binary ---------------------------------------------------------------------------------------------
if [[ "${CAUSEWAY_ENGINE_ONLY:-0}" == 1 ]]; then
    (cd "$ROOT" && cargo build --release -q -p causeway-proxy --example bench_proxy)
    ENGINE="$CARGO_TARGET_DIR/release/examples/bench_proxy"
else
    if [[ -z "${CAUSEWAY_BIN:-}" ]]; then
        (cd "$ROOT" && cargo build --release -q -p causeway)
        CAUSEWAY_BIN="$CARGO_TARGET_DIR/release/causeway"
    fi
fi

# --- backend: nginx returning a ~100-byte body -------------------------------------------------------------------
BACKEND_PORT=$(free_port)
BODY=$(printf 'causeway-bench %.0s' 1 2 3 4 5 6)   # 96 bytes
BODY="${BODY}ok!\n"
USER_LINE=""
[[ $(id -u) == 0 ]] && USER_LINE="user root;"
common_nginx() { # common_nginx NAME
    mkdir -p "$WORK/$1"
    cat <<EOF
$USER_LINE
worker_processes 1;
daemon off;
pid $WORK/$1/nginx.pid;
error_log $WORK/$1/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/$1/body;
    proxy_temp_path $WORK/$1/proxy;
    fastcgi_temp_path $WORK/$1/fastcgi;
    uwsgi_temp_path $WORK/$1/uwsgi;
    scgi_temp_path $WORK/$1/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
EOF
}
{
    common_nginx backend
    cat <<EOF
    server {
        listen 127.0.0.1:$BACKEND_PORT;
        location / { default_type text/plain; return 200 "$BODY"; }
    }
}
EOF
} >"$WORK/backend.conf"
taskset -c "$LOAD_CPU" nginx -p "$WORK/backend" -c "$WORK/backend.conf" 2>"$WORK/backend.log" &
PIDS+=($!)

# --- nginx as the proxy -------------------------------------------------------------------------------------------
NGINX_PORT=$(free_port)
{
    common_nginx nginx-proxy
    cat <<EOF
    upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 128; keepalive_requests 10000000; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
        }
    }
}
EOF
} >"$WORK/nginx-proxy.conf"
taskset -c "$PROXY_CPU" nginx -p "$WORK/nginx-proxy" -c "$WORK/nginx-proxy.conf" 2>"$WORK/nginx-proxy.log" &
PIDS+=($!)
NGINX_PID=$!

# --- haproxy -------------------------------------------------------------------------------------------------------
HAPROXY_PORT=$(free_port)
cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    option forwardfor
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend bench
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend nginx
backend nginx
    server b1 127.0.0.1:$BACKEND_PORT
EOF
taskset -c "$PROXY_CPU" haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
PIDS+=($!)
HAPROXY_PID=$!

# --- causeway ------------------------------------------------------------------------------------------------------
CAUSEWAY_PORT=$(free_port)
if [[ "${CAUSEWAY_ENGINE_ONLY:-0}" == 1 ]]; then
    taskset -c "$PROXY_CPU" "$ENGINE" "127.0.0.1:$CAUSEWAY_PORT" "127.0.0.1:$BACKEND_PORT" "${CAUSEWAY_ENGINE_WORKERS:-1}" \
        "${CAUSEWAY_ENGINE_MODE:-serve}" \
        >"$WORK/causeway.log" 2>&1 &
else
    mkdir -p "$WORK/manifests"
    cat >"$WORK/manifests/bench.yaml" <<EOF
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: causeway
  annotations:
    ingressclass.kubernetes.io/is-default-class: "true"
spec:
  controller: causeway.dev/ingress-controller
---
apiVersion: v1
kind: Service
metadata: {name: nginx, namespace: bench}
spec:
  ports: [{name: http, port: 80, targetPort: $BACKEND_PORT}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: nginx-1
  namespace: bench
  labels: {kubernetes.io/service-name: nginx}
addressType: IPv4
ports: [{name: http, port: $BACKEND_PORT}]
endpoints: [{addresses: ["127.0.0.1"]}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: bench, namespace: bench}
spec:
  ingressClassName: causeway
  rules:
    - http:
        paths: [{path: /, pathType: Prefix, backend: {service: {name: nginx, port: {number: 80}}}}]
EOF
    taskset -c "$PROXY_CPU" "$CAUSEWAY_BIN" run --manifests "$WORK/manifests" \
        --http-addr "127.0.0.1:$CAUSEWAY_PORT" --https-addr "127.0.0.1:$(free_port)" \
        --admin-addr "127.0.0.1:$(free_port)" --worker-threads 1 >"$WORK/causeway.log" 2>&1 &
fi
PIDS+=($!)
CAUSEWAY_PID=$!

for port in $BACKEND_PORT $NGINX_PORT $HAPROXY_PORT; do wait_port "$port"; done
# causeway answers 404 until its table is in: wait for a 200.
deadline=$((SECONDS + 20))
until [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$CAUSEWAY_PORT/") == 200 ]]; do
    if ((SECONDS > deadline)); then echo "l7.sh: causeway never answered 200; log:" >&2; cat "$WORK/causeway.log" >&2; exit 1; fi
    sleep 0.1
done
for port in $BACKEND_PORT $NGINX_PORT $HAPROXY_PORT $CAUSEWAY_PORT; do
    got=$(curl -s "http://127.0.0.1:$port/")
    [[ "$got" == causeway-bench* ]] || { echo "l7.sh: port $port answered '$got'" >&2; exit 1; }
done

cpu_ticks() { # utime+stime of a process and its threads, in clock ticks
    awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0
}
proxy_ticks() { # proxy_ticks NAME: CPU ticks of the proxy under test (nginx: master + workers)
    case $1 in
        nginx) local t=0; for p in $NGINX_PID $(pgrep -P "$NGINX_PID" || true); do t=$((t + $(cpu_ticks "$p"))); done; echo $t ;;
        haproxy) cpu_ticks "$HAPROXY_PID" ;;
        causeway) cpu_ticks "$CAUSEWAY_PID" ;;
        *) echo 0 ;;
    esac
}
to_us() { # wrk latency (e.g. 1.23ms, 850.00us, 1.01s) -> microseconds
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); print v + 0 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); print v * 1000 }
        else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000000 }
        else print v }'
}
TICK=$(getconf CLK_TCK)

run_wrk() { # run_wrk NAME PORT ROUND -> appends "name rps p50us p99us cpu_us_per_req" to results
    local name=$1 port=$2 out
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d2s "http://127.0.0.1:$port/" >/dev/null
    local t0; t0=$(proxy_ticks "$name")
    out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:$port/")
    local t1; t1=$(proxy_ticks "$name")
    echo "$out" >"$WORK/wrk-$name-$3.txt"
    local rps p50 p99 errors requests cpu
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    p50=$(to_us "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    p99=$(to_us "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out")
    [[ -z "$errors" ]] || echo "  warning: $name round $3: $errors" >&2
    cpu=$(awk -v d=$((t1 - t0)) -v tick="$TICK" -v n="$requests" 'BEGIN { if (n > 0 && d > 0) printf "%.1f", d / tick * 1e6 / n; else print "-" }')
    echo "$name $rps $p50 $p99 $cpu" >>"$WORK/results"
    printf '  round %s %-9s %10.0f req/s  p50 %7.0f µs  p99 %7.0f µs  cpu %s µs/req\n' "$3" "$name" "$rps" "$p50" "$p99" "$cpu" >&2
}

echo "l7.sh: ${ROUNDS} rounds x ${DURATION}s, ${CONNECTIONS} connections; proxies on CPU $PROXY_CPU, wrk+backend on CPU $LOAD_CPU" >&2
echo "l7.sh: before: $(uptime)" >&2
for round in $(seq 1 "$ROUNDS"); do
    run_wrk direct "$BACKEND_PORT" "$round"
    run_wrk nginx "$NGINX_PORT" "$round"
    run_wrk haproxy "$HAPROXY_PORT" "$round"
    run_wrk causeway "$CAUSEWAY_PORT" "$round"
done

echo "l7.sh: after: $(uptime) (a load average near or above the CPU count means the numbers are noisy)" >&2

python3 - "$WORK/results" <<'EOF'
import sys, statistics
rows = {}
for line in open(sys.argv[1]):
    name, rps, p50, p99, cpu = line.split()
    rows.setdefault(name, []).append((float(rps), float(p50), float(p99), None if cpu == "-" else float(cpu)))
med = {}
print(f"{'target':<10}{'req/s':>12}{'p50 µs':>10}{'p99 µs':>10}{'cpu µs/req':>12}   (median of {len(next(iter(rows.values())))} rounds)")
for name in ["direct", "nginx", "haproxy", "causeway"]:
    r = rows[name]
    cpus = [c for *_, c in r if c is not None]
    m = (statistics.median(x[0] for x in r), statistics.median(x[1] for x in r), statistics.median(x[2] for x in r),
         statistics.median(cpus) if cpus else float("nan"))
    med[name] = m
    print(f"{name:<10}{m[0]:>12.0f}{m[1]:>10.0f}{m[2]:>10.0f}{m[3]:>12.1f}")
c = med["causeway"]
for other in ["nginx", "haproxy", "direct"]:
    o = med[other]
    print(f"causeway/{other:<8} throughput {c[0] / o[0]:.2f}x   p99 {c[2] / o[2]:.2f}x")
goal = c[0] >= 1.25 * med["nginx"][0] and c[2] <= med["nginx"][2]
print(f"goal (throughput >= 1.25x nginx and p99 <= nginx): {'met' if goal else 'not met'}")
EOF
