#!/usr/bin/env bash
# Every deployment and observability check, with one closing line `N passed, M failed` (non-zero exit on failure):
#   manifests.sh            the kustomize base (static; server-side against tests/cluster/ when it is built)
#   metrics_reference.py    docs/operations.md names every metric and flag the code has
#   generate.py --check     dashboards/*.json are what dashboards/generate.py writes
#   prometheus.sh           a real Prometheus over running causeway / causeway-node; every dashboard query
#   tests/e2e/kind/run.sh   only when OBS_KIND=1 (it needs Docker and kind, and takes minutes)
#
# Usage: sudo tests/observability/run.sh     (root: prometheus.sh uses a network namespace)
# Environment: as prometheus.sh (CAUSEWAY_BIN, CAUSEWAY_NODE_BIN, CARGO_TARGET_DIR, OBS_TIMEOUT, OBS_KEEP).
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
LOG="$(mktemp /tmp/causeway-obs-run.XXXXXX)"
trap 'rm -f "$LOG"' EXIT

passed=0 failed=0
# run NAME COMMAND...: runs a check that ends with `N passed, M failed`, and adds its counts.
run() {
    local name="$1" p f
    shift
    printf '\n=== %s (%s)\n' "$name" "$(date -u +%H:%M:%S)"
    "$@" 2>&1 | tee "$LOG"
    read -r p f < <(grep -Eo '^[0-9]+ passed, [0-9]+ failed' "$LOG" | tail -n1 | awk '{print $1, $3}')
    if [ -z "${p:-}" ]; then
        echo "FAIL  $name ended without a summary"
        failed=$((failed + 1))
    else
        passed=$((passed + p))
        failed=$((failed + f))
    fi
}
# The metrics reference prints ok/FAIL lines only; count them.
docs_check() {
    local out rc
    out="$(python3 "$HERE/metrics_reference.py" --check; python3 "$ROOT/dashboards/generate.py" --check)"
    rc=$?
    grep -q '^FAIL' <<<"$out" && rc=1
    echo "$out"
    echo "$(grep -c '^ok' <<<"$out") passed, $(grep -c '^FAIL' <<<"$out") failed"
    return "$rc"
}

# The binaries, built once for every check (debug, as the rest of the suite).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/causeway-target}"
if [ -z "${CAUSEWAY_BIN:-}" ] || [ -z "${CAUSEWAY_NODE_BIN:-}" ]; then
    printf '\n=== building causeway and causeway-node (%s)\n' "$(date -u +%H:%M:%S)"
    if (cd "$ROOT" && cargo build -q -p causeway -p causeway-node); then
        export CAUSEWAY_BIN="${CAUSEWAY_BIN:-$CARGO_TARGET_DIR/debug/causeway}"
        export CAUSEWAY_NODE_BIN="${CAUSEWAY_NODE_BIN:-$CARGO_TARGET_DIR/debug/causeway-node}"
    else
        echo "FAIL  cargo build -p causeway -p causeway-node"
        failed=$((failed + 1))
    fi
fi

run "manifests" "$HERE/manifests.sh"
run "docs" docs_check
run "prometheus and dashboards" "$HERE/prometheus.sh"
if [ "${OBS_KIND:-}" = 1 ]; then
    run "kind e2e" "$ROOT/tests/e2e/kind/run.sh"
fi

echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
