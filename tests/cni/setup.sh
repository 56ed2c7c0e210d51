#!/usr/bin/env bash
# Idempotent setup for the causeway-cni tests and benchmark (run as root):
#   - Debian packages: containernetworking-plugins (reference bridge/host-local in /usr/lib/cni),
#     iproute2 (ip netns), iputils-ping (connectivity checks), util-linux (nsenter), iptables (portmap).
#   - cnitool (a real libcni client) built from github.com/containernetworking/cni through the Go module
#     proxy into $CNITOOL_DIR (default /var/cache/causeway/bin). Tests look for it at $CNITOOL, else
#     $CNITOOL_DIR/cnitool.
set -euo pipefail

CNITOOL_VERSION="${CNITOOL_VERSION:-v1.3.0}"
CNITOOL_DIR="${CNITOOL_DIR:-/var/cache/causeway/bin}"

need=()
[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] || need+=(containernetworking-plugins)
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v nsenter >/dev/null || need+=(util-linux)
command -v iptables-save >/dev/null || need+=(iptables)
if [ "${#need[@]}" -gt 0 ]; then
    echo "setup.sh: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}"
fi

if [ -x "$CNITOOL_DIR/cnitool" ] && [ -f "$CNITOOL_DIR/cnitool.version" ] \
    && [ "$(cat "$CNITOOL_DIR/cnitool.version")" = "$CNITOOL_VERSION" ]; then
    echo "setup.sh: cnitool $CNITOOL_VERSION already in $CNITOOL_DIR"
else
    GO="$(command -v go || true)"
    [ -n "$GO" ] || [ ! -x /usr/local/go/bin/go ] || GO=/usr/local/go/bin/go
    [ -n "$GO" ] || { echo "setup.sh: go is required to build cnitool" >&2; exit 1; }
    mkdir -p "$CNITOOL_DIR"
    echo "setup.sh: building cnitool $CNITOOL_VERSION into $CNITOOL_DIR"
    GOBIN="$CNITOOL_DIR" CGO_ENABLED=0 "$GO" install "github.com/containernetworking/cni/cnitool@$CNITOOL_VERSION"
    echo "$CNITOOL_VERSION" > "$CNITOOL_DIR/cnitool.version"
fi
"$CNITOOL_DIR/cnitool" 2>&1 | head -1 || true
