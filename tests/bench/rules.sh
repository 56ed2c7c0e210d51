#!/usr/bin/env bash
# causeway-node rule-sync benchmark (issue 5): N Services x 3 endpoints, in throwaway network namespaces.
#
# For each iptables backend and size it prints: render time, the agent's full sync (iptables-save + render +
# iptables-restore --noflush), a one-Service endpoint change and a one-Service add (partial syncs), the same
# endpoint change written the way kube-proxy's partial sync writes it (top-level chains in full), and a plain
# `iptables-restore --noflush` of the same full ruleset into a fresh namespace. chg_render_ms is the CPU part of
# the one-Service change (incremental build + diff); empty_restore_ms is what iptables-restore costs for an empty
# batch on that ruleset (the floor of any change).
#
# Usage (root): tests/bench/rules.sh            SIZES="1000 5000 10000" BACKENDS="nft legacy"
# Never touches the root namespace's rules: everything runs under `ip netns exec`.
set -euo pipefail
cd "$(dirname "$0")/../.."

SIZES=${SIZES:-"1000 5000 10000"}
BACKENDS=${BACKENDS:-"nft legacy"}
TARGET=${CARGO_TARGET_DIR:-target}

if [[ $(id -u) -ne 0 ]]; then
    echo "rules.sh: needs root (network namespaces, iptables)" >&2
    exit 1
fi

cargo build --release -q -p causeway-node --example rules_bench
BIN="$TARGET/release/examples/rules_bench"
TMP=$(mktemp -d)
NS_A="cwbench$$a"
NS_B="cwbench$$b"
cleanup() {
    ip netns del "$NS_A" 2>/dev/null || true
    ip netns del "$NS_B" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

get() { sed -n "s/.*\b$1=\([0-9.]*\).*/\1/p" <<<"$2" | head -1; }

printf '%-7s %6s %10s %12s %14s %12s %16s %14s %15s %17s\n' backend svcs render_ms full_sync_ms one_change_ms one_add_ms kp_style_chg_ms plain_full_ms chg_render_ms empty_restore_ms
for backend in $BACKENDS; do
    restore="iptables-$backend-restore"
    save="iptables-$backend-save"
    command -v "$restore" >/dev/null || { echo "skip $backend: no $restore" >&2; continue; }
    for n in $SIZES; do
        cleanup 2>/dev/null; TMP=$(mktemp -d)
        ip netns add "$NS_A"
        ip netns add "$NS_B"
        out=$(ip netns exec "$NS_A" "$BIN" --services "$n" --restore "$restore" --save "$save" --out "$TMP/full.rules")
        start=$(date +%s.%N)
        ip netns exec "$NS_B" "$restore" --noflush -w 5 <"$TMP/full.rules"
        end=$(date +%s.%N)
        plain=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", (b - a) * 1000 }')
        printf '%-7s %6s %10s %12s %14s %12s %16s %14s %15s %17s\n' "$backend" "$n" \
            "$(get render_full_ms "$out")" "$(get agent_full_sync_ms "$out")" \
            "$(get agent_one_service_change_ms "$out")" "$(get agent_one_service_add_ms "$out")" \
            "$(get kube_proxy_style_one_service_change_ms "$out")" "$plain" "$(get partial_render_ms "$out")" "$(get empty_restore_ms "$out")"
        ip netns del "$NS_A"
        ip netns del "$NS_B"
    done
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
