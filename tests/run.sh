#!/usr/bin/env bash
# The whole test suite: unit, component (real sockets, real TLS), network-namespace tests (real iptables, real CNI
# calls, the netns cluster) and the real-control-plane tests (kube-apiserver + etcd built from source, cached).
#
# Needs root (network namespaces, iptables). Installs what it needs; safe to run again.
# Usage: sudo ./tests/run.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
# CI may start with a bare environment: rustup, cargo and go find their homes through HOME.
export HOME="${HOME:-/root}"
export PATH="/usr/local/go/bin:${HOME}/.cargo/bin:${PATH}"

if [ "$(id -u)" -ne 0 ]; then
    echo "tests/run.sh: the suite creates network namespaces and iptables rules; run it as root." >&2
    exit 1
fi

log() { printf '\n=== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

# --- System packages -----------------------------------------------------------------------------------------
PKGS=(iptables nftables iproute2 containernetworking-plugins curl jq conntrack socat openssl nginx-light haproxy wrk)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "Installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# nginx and haproxy are only used by benchmarks; make sure the packages' own services do not hold ports.
systemctl stop nginx haproxy >/dev/null 2>&1 || true
modprobe br_netfilter >/dev/null 2>&1 || true

# --- Build settings ------------------------------------------------------------------------------------------
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/causeway-target}"
export CARGO_INCREMENTAL=0
export CARGO_TERM_COLOR=never

# --- Test-only tools built from source (cached by version outside the repository) ----------------------------
for setup in tests/cni/setup.sh tests/cluster/build.sh; do
    if [ -x "$setup" ]; then
        log "Running $setup"
        "$setup"
    fi
done

log "Building"
cargo build --workspace --all-targets

log "Running the tests"
set +e
cargo test --workspace --no-fail-fast "$@" 2>&1 | tee /var/tmp/causeway-test.log
cargo_status=${PIPESTATUS[0]}
read -r passed failed skipped < <(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed; [0-9]+ ignored' \
    /var/tmp/causeway-test.log | awk '{p+=$4; f+=$6; i+=$8} END {printf "%d %d %d\n", p, f, i}')

# Deployment and observability checks (kustomize base, a real Prometheus over the running binaries, docs).
obs_status=0
if [ -x tests/observability/run.sh ]; then
    log "Running tests/observability/run.sh"
    tests/observability/run.sh 2>&1 | tee /var/tmp/causeway-obs.log
    obs_status=${PIPESTATUS[0]}
    read -r op of < <(grep -Eo '^[0-9]+ passed, [0-9]+ failed' /var/tmp/causeway-obs.log | tail -n1 | awk '{print $1, $3}')
    if [ -z "${op:-}" ]; then
        op=0 of=1
    fi
    passed=$((passed + op))
    failed=$((failed + of))
fi
set -e

echo
echo "${passed} passed, ${failed} failed, ${skipped} skipped"
if [ "${cargo_status}" -ne 0 ] || [ "${obs_status}" -ne 0 ] || [ "${failed}" -ne 0 ]; then
    exit 1
fi
