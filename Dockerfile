# fhirsync as operators run it: a release build in a Rust image, then a small Debian runtime
# with CA certificates, a non-root user, the configuration on /config and the state on /state.
#
#   docker build -t fhirsync .
#   docker run --rm -v "$PWD/config:/config:ro" -v fhirsync-state:/state fhirsync sync --no-progress
#
# deploy/check.sh (run by .ci/run) checks this file offline; see the README, "Running it unattended".

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
# aws-lc-sys (TLS and JWT signing) builds C code; cmake is its fallback build system.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
ENV CARGO_PROFILE_RELEASE_STRIP=symbols
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY crates ./crates
RUN cargo build --release --locked -p fhirsync-cli

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tzdata \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 fhirsync \
 && useradd --system --uid 10001 --gid fhirsync --home-dir /state --shell /usr/sbin/nologin fhirsync \
 && install -d -o fhirsync -g fhirsync -m 0750 /state \
 && install -d -m 0755 /config
COPY --from=builder /src/target/release/fhirsync /usr/local/bin/fhirsync
# Relative paths of the configuration (fhirsync.db, .fhirsync/) resolve in /state.
WORKDIR /state
ENV FHIRSYNC_CONFIG=/config/fhirsync.toml
VOLUME ["/config", "/state"]
USER 10001:10001
ENTRYPOINT ["fhirsync"]
CMD ["sync", "--no-progress"]
