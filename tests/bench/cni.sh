#!/usr/bin/env bash
# ADD/DEL latency of causeway-cni against the reference bridge + host-local plugins on this machine.
#
# Both plugins get one "node" network namespace (each its own bridge there) and N pod namespaces each;
# the timing loop runs inside the node namespace and calls the plugins exactly as a runtime does (CNI_*
# environment + stdin JSON), interleaved, timing each call with bash's $EPOCHREALTIME.
# Prints median and p99 of ADD and DEL for both, and ours/reference ratios (goal: ADD ratio <= 0.5).
#
# Usage: tests/bench/cni.sh [N]   (root; N pods, default 100; needs tests/cni/setup.sh to have run)
# Env:   CARGO_TARGET_DIR (default /var/tmp/cw-target-cni), CNI_BIN (skip the build), REF_DIR (/usr/lib/cni)
set -euo pipefail

N="${1:-100}"
REF_DIR="${REF_DIR:-/usr/lib/cni}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
[ "$(id -u)" = 0 ] || { echo "cni.sh: needs root (network namespaces)" >&2; exit 1; }
[ -x "$REF_DIR/bridge" ] || { echo "cni.sh: $REF_DIR/bridge missing: run tests/cni/setup.sh" >&2; exit 1; }
[ "$N" -ge 1 ] && [ "$N" -le 250 ] || { echo "cni.sh: N must be 1..250" >&2; exit 1; }

if [ -z "${CNI_BIN:-}" ]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/cw-target-cni}"
    (cd "$ROOT" && cargo build --release -q -p causeway-cni)
    CNI_BIN="$CARGO_TARGET_DIR/release/causeway-cni"
fi

TAG="cwbench-$$"
WORK="$(mktemp -d)"
NSES=()
cleanup() {
    for ns in "${NSES[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
# Remove leftovers of killed earlier runs.
for ns in $(ip netns list | awk '{print $1}' | grep '^cwbench-' || true); do
    pid="${ns#cwbench-}"; pid="${pid%%-*}"
    [ -d "/proc/$pid" ] || ip netns del "$ns" 2>/dev/null || true
done

mkns() { ip netns add "$1"; NSES+=("$1"); }

# Both plugins share one node namespace (each with its own bridge and subnet) and the calls are
# interleaved, alternating which goes first, so both see the same machine load.
NODE="$TAG-node"
mkns "$NODE"
ip -n "$NODE" link set lo up
for i in $(seq 0 $((N + 2))); do mkns "$TAG-ours-p$i"; mkns "$TAG-ref-p$i"; done
mkconf() { # name type subnet
    printf '{"cniVersion":"1.0.0","name":"bench-%s","type":"%s","bridge":"br-%s","isGateway":true,"isDefaultGateway":true,"hairpinMode":true,"mtu":1400,"ipam":{"type":"host-local","ranges":[[{"subnet":"%s"}]],"dataDir":"%s/ipam"}}' \
        "$1" "$2" "$1" "$3" "$WORK" > "$WORK/$1.conf"
}
mkconf ours causeway-cni 10.123.0.0/24
mkconf ref bridge 10.124.0.0/24

ip netns exec "$NODE" env -i PATH="$PATH" OURS="$CNI_BIN" REF="$REF_DIR/bridge" WORK="$WORK" TAG="$TAG" N="$N" \
    CNI_PATH="$REF_DIR" bash -s <<'INNER'
set -euo pipefail
call() { # name cmd id pod
    local bin; if [ "$1" = ours ]; then bin="$OURS"; else bin="$REF"; fi
    CNI_COMMAND="$2" CNI_CONTAINERID="$3" CNI_NETNS="/run/netns/$TAG-$1-p$4" CNI_IFNAME=eth0 "$bin" < "$WORK/$1.conf" > /dev/null
}
timed() { # name cmd id pod -> appends µs to $WORK/name.cmd
    local t0=$EPOCHREALTIME; call "$@"; local t1=$EPOCHREALTIME
    local a="${t0/./}" b="${t1/./}"; echo $(( 10#$b - 10#$a )) >> "$WORK/$1.$2"
}
# Warm-up (creates the bridges, pages in the binaries); not measured.
for w in 0 1 2; do
    for p in ours ref; do call "$p" ADD "warm$w" "$((N + w))"; call "$p" DEL "warm$w" "$((N + w))"; done
done
for op in ADD DEL; do
    for i in $(seq 0 $((N - 1))); do
        if [ $((i % 2)) = 0 ]; then order="ours ref"; else order="ref ours"; fi
        for p in $order; do timed "$p" "$op" "ctr$i" "$i"; done
    done
done
INNER
for p in ours ref; do
    left=$(ip -n "$NODE" -o link show master "br-$p" | wc -l)
    [ "$left" = 0 ] || { echo "cni.sh: $p left $left veths behind" >&2; exit 1; }
done

# stat FILE -> "median p99" in µs
stat() {
    sort -n "$1" | awk '{v[NR]=$1} END {
        m = (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2
        p = int(NR * 0.99 + 0.999999); if (p < 1) p = 1; if (p > NR) p = NR
        printf "%d %d\n", m, v[p] }'
}


read -r oa_m oa_p < <(stat "$WORK/ours.ADD")
read -r od_m od_p < <(stat "$WORK/ours.DEL")
read -r ra_m ra_p < <(stat "$WORK/ref.ADD")
read -r rd_m rd_p < <(stat "$WORK/ref.DEL")
ms() { awk -v v="$1" 'BEGIN { printf "%.2f", v / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo "causeway-cni vs reference bridge+host-local ($REF_DIR), $N pods each, interleaved, $(nproc) cores, load $(cut -d" " -f1 /proc/loadavg)"
printf '%-10s %14s %14s %14s %14s\n' "" "ADD median ms" "ADD p99 ms" "DEL median ms" "DEL p99 ms"
printf '%-10s %14s %14s %14s %14s\n' ours "$(ms "$oa_m")" "$(ms "$oa_p")" "$(ms "$od_m")" "$(ms "$od_p")"
printf '%-10s %14s %14s %14s %14s\n' reference "$(ms "$ra_m")" "$(ms "$ra_p")" "$(ms "$rd_m")" "$(ms "$rd_p")"
printf '%-10s %14s %14s %14s %14s\n' ratio "$(ratio "$oa_m" "$ra_m")" "$(ratio "$oa_p" "$ra_p")" "$(ratio "$od_m" "$rd_m")" "$(ratio "$od_p" "$rd_p")"
goal=$(awk -v a="$oa_m" -v b="$ra_m" 'BEGIN { print (a <= 0.5 * b) ? "met" : "NOT met" }')
echo "goal (ours ADD median <= 0.5 x reference): $goal"
