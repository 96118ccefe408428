# syntax=docker/dockerfile:1
#
# tollgate container image: one static binary on distroless/static, non-root, no shell.
#
#   docker build -t tollgate .
#   docker run --rm -v "$PWD/tollgate.toml:/etc/tollgate/tollgate.toml:ro" \
#       -p 8080:8080 -p 9090:9090 tollgate
#
# The binary is linked statically against musl (x86_64-unknown-linux-musl). A static glibc
# build (-C target-feature=+crt-static on x86_64-unknown-linux-gnu) was rejected: glibc's
# getaddrinfo loads NSS modules at run time even from a static binary, and the final image
# has none, so DNS resolution of the issuers and token endpoints would be at risk.
# docs/deployment.md ("Container image") lists what was verified without a Docker engine.

ARG RUST_VERSION=1.95.0

# ---- build ---------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-bookworm AS build

# musl-gcc: aws-lc-sys (the TLS and JWT crypto) compiles C for the musl target.
# Debian bookworm's package versions are fixed within the release; not pinned here.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# rust-toolchain.toml pins the toolchain; add the musl target to that toolchain.
COPY rust-toolchain.toml ./
RUN rustup target add x86_64-unknown-linux-musl

COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY config ./config
COPY benches ./benches

# --locked: Cargo.lock is the source of truth; a stale lock file fails the build.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target x86_64-unknown-linux-musl --bin tollgate \
    && cp target/x86_64-unknown-linux-musl/release/tollgate /tollgate

# ---- run -----------------------------------------------------------------------------
# distroless/static: no shell, no package manager, a nonroot user (65532), CA certificates
# and tzdata. tollgate trusts the bundled webpki roots (plus ca_file), not the image's.
FROM gcr.io/distroless/static-debian12:nonroot

LABEL org.opencontainers.image.title="tollgate" \
      org.opencontainers.image.description="Authenticating sidecar proxy: Entra ID JWT validation inbound, managed-identity tokens egress" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"

COPY --from=build /tollgate /tollgate

# The configuration file, read by every subcommand unless --config names another. Mount it
# read-only, e.g. from a ConfigMap; tollgate reloads it on change. Override the variable to
# move it.
ENV TOLLGATE_CONFIG=/etc/tollgate/tollgate.toml

# 8080: inbound listener ([server] listen). 9090: admin /healthz /readyz /metrics
# ([admin] listen; set it to 0.0.0.0:9090 in a container, the default is loopback).
# The egress listener (127.0.0.1:15001) is for the app in the same pod and is not exposed.
EXPOSE 8080 9090

# Numeric, so runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532

ENTRYPOINT ["/tollgate"]
CMD ["run"]
