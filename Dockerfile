# syntax=docker/dockerfile:1
# One image with the three binaries:
#   /usr/local/bin/causeway       controller + L7/L4 proxy (Deployment, runs as uid 65532)
#   /usr/local/bin/causeway-node  node agent (DaemonSet, runs as root with NET_ADMIN + NET_RAW)
#   /usr/local/bin/causeway-cni   CNI plugin (copied to the host's /opt/cni/bin by the DaemonSet's init container)
#
#   docker build -t causeway:dev .
#
# The build needs no OpenSSL, aws-lc or cmake (rustls with the ring provider); a C compiler for ring is in the
# rust image.

# --- Build ------------------------------------------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
ENV CARGO_TARGET_DIR=/target \
    CARGO_INCREMENTAL=0 \
    CARGO_TERM_COLOR=never
COPY . .
# The cache mounts keep the registry and the target directory between builds; the binaries are copied out of
# the cache mount in the same step (it is not part of the layer).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/target \
    cargo build --release --locked -p causeway -p causeway-node -p causeway-cni \
    && mkdir -p /out \
    && cp /target/release/causeway /target/release/causeway-node /target/release/causeway-cni /out/

# --- Runtime ----------------------------------------------------------------------------------------------------
FROM debian:bookworm-slim
# iptables (iptables-restore, the nft backend by default; `update-alternatives --set iptables
# /usr/sbin/iptables-legacy` in a derived image for legacy hosts), nftables for the coming nftables mode,
# iproute2 for diagnostics (`kubectl exec ... ip route`), conntrack for the node agent's clean-up of stale flows
# after rule syncs, ca-certificates for the API server's and upstream CAs.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        iptables nftables iproute2 conntrack ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 65532 causeway \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin causeway
COPY --from=build /out/causeway /out/causeway-node /out/causeway-cni /usr/local/bin/
# The controller's user; the DaemonSet overrides it with runAsUser: 0 for the node agent.
USER 65532:65532
EXPOSE 80 443 10254
ENTRYPOINT ["/usr/local/bin/causeway"]
CMD ["run"]
