#!/usr/bin/env bash
# Stops what tests/cluster/start.sh started in DIR, by the PIDs it recorded: SIGTERM, then SIGKILL after a grace
# period. Idempotent: a component that is not running is skipped.
#
# Usage: tests/cluster/stop.sh [--only etcd|apiserver] DIR
set -euo pipefail

ONLY=""
if [ "${1:-}" = "--only" ]; then ONLY="${2:-}"; shift 2; fi
[ $# -eq 1 ] || { echo "usage: $0 [--only etcd|apiserver] DIR" >&2; exit 2; }
DIR="$1"
GRACE="${CAUSEWAY_CLUSTER_STOP_GRACE:-15}"

# stop NAME: TERM the recorded PID, wait for it to exit (bounded), then KILL.
stop() {
    local name="$1" pid deadline
    [ -f "$DIR/$name.pid" ] || return 0
    pid="$(cat "$DIR/$name.pid")"
    # Only signal the process if it is still the one we started (a recycled PID belongs to someone else).
    if kill -0 "$pid" 2>/dev/null && grep -qa -- "$DIR" "/proc/$pid/cmdline" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        deadline=$(( $(date +%s) + GRACE ))
        while kill -0 "$pid" 2>/dev/null; do
            if [ "$(date +%s)" -ge "$deadline" ]; then
                kill -KILL "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.1
        done
    fi
    rm -f "$DIR/$name.pid"
}

case "$ONLY" in
    etcd) stop etcd ;;
    apiserver) stop apiserver ;;
    "")
        stop apiserver
        stop etcd
        # The watchdog's command line names DIR too; stopping it last lets a watchdog-initiated stop finish.
        if [ -f "$DIR/watchdog.pid" ] && [ "$(cat "$DIR/watchdog.pid")" = "$$" ]; then
            # We are the watchdog, stopping the cluster because its owner exited.
            rm -f "$DIR/watchdog.pid"
        elif [ -f "$DIR/watchdog.pid" ]; then
            wd="$(cat "$DIR/watchdog.pid")"
            rm -f "$DIR/watchdog.pid"
            if kill -0 "$wd" 2>/dev/null && grep -qa -- "$DIR" "/proc/$wd/cmdline" 2>/dev/null; then
                # Its `tail` child holds the process group; end the group the watchdog leads (setsid made it one).
                kill -TERM -- "-$wd" 2>/dev/null || true
            fi
        fi
        ;;
    *) echo "stop.sh: --only takes etcd or apiserver" >&2; exit 2 ;;
esac
