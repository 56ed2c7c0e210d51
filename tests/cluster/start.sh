#!/usr/bin/env bash
# Starts a real control plane on loopback (or CAUSEWAY_CLUSTER_ADDRESS): one etcd and one kube-apiserver (built by
# tests/cluster/build.sh), with free ports picked at run time and certificates generated here with openssl. Stop it
# with tests/cluster/stop.sh.
#
# Usage: tests/cluster/start.sh [--only etcd|apiserver] DIR
#   DIR is created if needed and holds everything: pki/, etcd data, logs, *.pid, kubeconfigs and `env`.
#   --only apiserver  restarts just the API server of an existing DIR on the same port (outage tests).
#
# What you get in DIR:
#   admin.kubeconfig    user `causeway-admin` in group system:masters (every verb on everything)
#   limited.kubeconfig  user `causeway-limited` in group `causeway:limited`, with no RBAC bindings: tests grant it
#                       exactly the roles they need (authorization is RBAC,Node)
#   env                 shell-style KEY=VALUE lines: APISERVER_URL, APISERVER_PORT, ETCD_URL, ETCD_PID,
#                       APISERVER_PID, KUBECONFIG, LIMITED_KUBECONFIG, CA_FILE, DIR, KUBECTL (the matching kubectl)
#
# Environment:
#   KUBE_APISERVER, ETCD        binaries [the cache build.sh fills: /var/cache/causeway/{k8s,etcd}-<version>/]
#   K8S_VERSION, ETCD_VERSION, CAUSEWAY_CLUSTER_CACHE   as in build.sh, to find the cache
#   CAUSEWAY_CLUSTER_OWNER_PID  if set, everything started here is stopped when that process exits (tests set it
#                               so a killed test run leaves no API server behind)
#   CAUSEWAY_CLUSTER_TIMEOUT    seconds to wait for readiness [120]
#   CAUSEWAY_CLUSTER_ADDRESS    the address the API server binds and advertises [127.0.0.1]; it must exist in the
#                               network namespace start.sh runs in (the netns cluster runs it in its underlay
#                               namespace on 172.18.0.1, so node agents reach it over the test network). etcd
#                               stays on that namespace's loopback.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ONLY=""
if [ "${1:-}" = "--only" ]; then ONLY="${2:-}"; shift 2; fi
[ $# -eq 1 ] || { echo "usage: $0 [--only etcd|apiserver] DIR" >&2; exit 2; }
case "$ONLY" in "" | etcd | apiserver) ;; *) echo "start.sh: --only takes etcd or apiserver" >&2; exit 2 ;; esac

K8S_VERSION="${K8S_VERSION:-v1.35.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
CACHE="${CAUSEWAY_CLUSTER_CACHE:-/var/cache/causeway}"
KUBE_APISERVER="${KUBE_APISERVER:-$CACHE/k8s-$K8S_VERSION/kube-apiserver}"
ETCD="${ETCD:-$CACHE/etcd-$ETCD_VERSION/etcd}"
KUBECTL="${KUBECTL:-$CACHE/k8s-$K8S_VERSION/kubectl}"
TIMEOUT="${CAUSEWAY_CLUSTER_TIMEOUT:-120}"
ADDRESS="${CAUSEWAY_CLUSTER_ADDRESS:-127.0.0.1}"

die() { printf 'start.sh: error: %s\n' "$*" >&2; exit 1; }

for bin in "$KUBE_APISERVER" "$ETCD"; do
    if [ ! -x "$bin" ]; then
        printf 'start.sh: error: %s is missing; run tests/cluster/build.sh first (it builds kube-apiserver %s and etcd %s into %s).\n' \
            "$bin" "$K8S_VERSION" "$ETCD_VERSION" "$CACHE" >&2
        exit 3
    fi
done
command -v openssl >/dev/null || die "openssl is needed to generate the test certificates."
command -v curl >/dev/null || die "curl is needed to probe readiness."

mkdir -p "$1"
DIR="$(cd "$1" && pwd)"
PKI="$DIR/pki"

# A failed start leaves nothing running: stop whatever this invocation started.
STARTED=()
cleanup_on_failure() {
    local status=$?
    if [ "$status" -ne 0 ]; then
        for name in "${STARTED[@]}"; do "$HERE/stop.sh" --only "$name" "$DIR" || true; done
    fi
    exit "$status"
}
trap cleanup_on_failure EXIT

# A free port on address $1 [127.0.0.1]: bind port 0 and report what the kernel chose. The port is released
# before the server binds it; the kernel hands out ephemeral ports in rotation, so a reuse within that window is
# unlikely.
free_port() {
    python3 -c 'import socket, sys; s=socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1]); s.close()' \
        "${1:-127.0.0.1}"
}

# --- Certificates ------------------------------------------------------------------------------------------------
# EC P-256 throughout: fast to generate, accepted by kube-apiserver, etcd and rustls.
gen_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# sign NAME SUBJECT EXTENSIONS: a leaf certificate signed by the test CA.
sign() {
    local name="$1" subj="$2" ext="$3"
    gen_key "$PKI/$name.key"
    openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
    printf '%s\n' "$ext" >"$PKI/$name.ext"
    openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
        -days 30 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
    rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

EXTRA_SAN=""
[ "$ADDRESS" = 127.0.0.1 ] || EXTRA_SAN=",IP:$ADDRESS"
if [ ! -f "$PKI/done" ]; then
    mkdir -p "$PKI"
    chmod 700 "$PKI"
    gen_key "$PKI/ca.key"
    openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=causeway-test-ca" -days 30 -sha256 \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out "$PKI/ca.crt" 2>/dev/null
    sign apiserver "/CN=kube-apiserver" "$(printf '%s\n' \
        "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
        "extendedKeyUsage=serverAuth" \
        "subjectAltName=IP:127.0.0.1${EXTRA_SAN},DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.96.0.1")"
    client_ext="$(printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
        "extendedKeyUsage=clientAuth")"
    sign admin "/O=system:masters/CN=causeway-admin" "$client_ext"
    sign limited "/O=causeway:limited/CN=causeway-limited" "$client_ext"
    # Service-account tokens: the API server signs with the private key and verifies with the public one.
    gen_key "$PKI/sa.key"
    openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
    touch "$PKI/done"
fi

# --- Ports (kept across restarts so clients reconnect to the same URL) --------------------------------------------
if [ -f "$DIR/ports" ]; then
    # shellcheck disable=SC1091
    . "$DIR/ports"
else
    ETCD_PORT="$(free_port)"
    ETCD_PEER_PORT="$(free_port)"
    APISERVER_PORT="$(free_port "$ADDRESS")"
    printf 'ETCD_PORT=%s\nETCD_PEER_PORT=%s\nAPISERVER_PORT=%s\n' "$ETCD_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT" \
        >"$DIR/ports"
fi
ETCD_URL="http://127.0.0.1:$ETCD_PORT"
APISERVER_URL="https://$ADDRESS:$APISERVER_PORT"

# wait_for NAME PID URL [curl args...]: poll URL until it answers 200, with a deadline; fail early if PID exits.
wait_for() {
    local name="$1" pid="$2" url="$3" deadline
    shift 3
    deadline=$(( $(date +%s) + TIMEOUT ))
    until curl -fsS -o /dev/null --max-time 2 "$@" "$url" 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$DIR/$name.log" >&2 || true
            die "$name exited during start-up; its log is $DIR/$name.log."
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            tail -n 30 "$DIR/$name.log" >&2 || true
            die "$name was not ready at $url within ${TIMEOUT}s; its log is $DIR/$name.log."
        fi
        # A short pause between probes; the deadline above bounds the wait.
        sleep 0.2
    done
}

running() { [ -f "$DIR/$1.pid" ] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; }

start_etcd() {
    running etcd && die "etcd of $DIR is already running (pid $(cat "$DIR/etcd.pid"))."
    # --unsafe-no-fsync: test data is thrown away, and fsync on a shared disk slows every write.
    setsid "$ETCD" --name default --data-dir "$DIR/etcd-data" \
        --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster "default=http://127.0.0.1:$ETCD_PEER_PORT" \
        --unsafe-no-fsync --log-level warn \
        >>"$DIR/etcd.log" 2>&1 </dev/null &
    echo $! >"$DIR/etcd.pid"
    STARTED+=(etcd)
    wait_for etcd "$!" "$ETCD_URL/health"
}

start_apiserver() {
    running apiserver && die "kube-apiserver of $DIR is already running (pid $(cat "$DIR/apiserver.pid"))."
    setsid "$KUBE_APISERVER" \
        --bind-address="$ADDRESS" --advertise-address="$ADDRESS" --secure-port="$APISERVER_PORT" \
        --etcd-servers="$ETCD_URL" \
        --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
        --client-ca-file="$PKI/ca.crt" \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
        --service-cluster-ip-range=10.96.0.0/16 \
        --authorization-mode=RBAC,Node --anonymous-auth=false \
        --profiling=false --enable-priority-and-fairness=false \
        --v=1 \
        >>"$DIR/apiserver.log" 2>&1 </dev/null &
    echo $! >"$DIR/apiserver.pid"
    STARTED+=(apiserver)
    wait_for apiserver "$!" "$APISERVER_URL/readyz" \
        --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key"
}

# write_kubeconfig FILE USER: certificates embedded, so the file works from any directory.
write_kubeconfig() {
    local file="$1" user="$2"
    cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: causeway-test
  cluster:
    server: $APISERVER_URL
    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$PKI/$user.crt")
    client-key-data: $(base64 -w0 <"$PKI/$user.key")
contexts:
- name: $user
  context:
    cluster: causeway-test
    user: $user
    namespace: default
current-context: $user
EOF
    chmod 600 "$file"
}

case "$ONLY" in
    etcd) start_etcd ;;
    apiserver) start_apiserver ;;
    *)
        start_etcd
        start_apiserver
        write_kubeconfig "$DIR/admin.kubeconfig" admin
        write_kubeconfig "$DIR/limited.kubeconfig" limited
        ;;
esac

# A watchdog that stops the control plane when its owner (a test process) goes away, however it ends.
# `tail --pid` waits for the process without a polling loop of ours.
if [ -n "${CAUSEWAY_CLUSTER_OWNER_PID:-}" ] && [ ! -f "$DIR/watchdog.pid" ]; then
    setsid bash -c 'tail --pid="$1" -f /dev/null; exec "$2" "$3"' watchdog \
        "$CAUSEWAY_CLUSTER_OWNER_PID" "$HERE/stop.sh" "$DIR" >/dev/null 2>&1 </dev/null &
    echo $! >"$DIR/watchdog.pid"
fi

cat >"$DIR/env" <<EOF
DIR=$DIR
APISERVER_URL=$APISERVER_URL
APISERVER_PORT=$APISERVER_PORT
APISERVER_PID=$(cat "$DIR/apiserver.pid" 2>/dev/null || true)
ETCD_URL=$ETCD_URL
ETCD_PID=$(cat "$DIR/etcd.pid" 2>/dev/null || true)
KUBECONFIG=$DIR/admin.kubeconfig
LIMITED_KUBECONFIG=$DIR/limited.kubeconfig
CA_FILE=$PKI/ca.crt
KUBECTL=$KUBECTL
EOF
cat "$DIR/env"
