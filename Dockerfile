# syntax=docker/dockerfile:1
#
# lucca-sync as a container: a release binary built in a builder stage, run
# from a small Debian image as a non-root user (uid 10001, the uid the
# Kubernetes manifests in deploy/kubernetes/ expect).
#
#   docker build -t lucca-sync .
#   docker run --rm -e LUCCA_BASE_URL -e LUCCA_API_KEY -v "$PWD/out:/work/out" lucca-sync
#
# The first build is long: DuckDB's bundled C++ takes about 35 minutes on 2
# cores. The dependency layer below and the ccache cache mount make later
# builds cost only the crate itself while Cargo.lock is unchanged.

# Both stages are on the same Debian release (bookworm), so the binary finds
# the glibc and libstdc++ it was linked against at run time.
ARG RUST_VERSION=1.95.0
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder

# scripts/cc and scripts/cxx (which .cargo/config.toml sets as CC and CXX)
# go through ccache when it is installed; its cache is a BuildKit cache mount,
# so DuckDB's C++ objects survive a change of Cargo.lock.
# Debian stable keeps only the current version of a package, so an exact
# version pin breaks the build at the next point release; the image tag above
# is the pin.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ccache \
    && rm -rf /var/lib/apt/lists/*

ENV CARGO_TERM_COLOR=never \
    CCACHE_DIR=/var/cache/ccache
WORKDIR /src

# The build needs .cargo/config.toml and the compiler wrappers it names,
# otherwise every C/C++ compilation of the build scripts fails.
COPY .cargo ./.cargo
COPY scripts/cc scripts/cxx ./scripts/
COPY Cargo.toml Cargo.lock ./

# Dependency layer: every dependency (DuckDB included) compiled against stub
# sources. It is rebuilt only when Cargo.toml, Cargo.lock or the compiler
# set-up changes, not on every source change.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/var/cache/ccache,sharing=locked \
    mkdir -p src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bin lucca-sync \
    && rm -rf src

# The crate itself. fixtures/ is include_str!'d by src/sandbox. The stub's
# fingerprints are removed: COPY keeps the files' modification times, which
# can be older than the stub build, and cargo would then keep the stub binary.
COPY src ./src
COPY fixtures ./fixtures
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    rm -rf target/release/.fingerprint/lucca-sync-* \
    && cargo build --release --locked --bin lucca-sync \
    && install -D -m 0755 target/release/lucca-sync /out/lucca-sync

# Runtime: CA certificates (rustls verifies the tenant's certificate against
# the system store), a non-root user, the binary and the shipped pipelines.
FROM debian:${DEBIAN_RELEASE}-slim

ARG VERSION=dev
LABEL org.opencontainers.image.title="lucca-sync" \
      org.opencontainers.image.description="Copies HR data out of Lucca into DuckDB tables and Parquet files" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}"

# Same reason as in the builder for not pinning the package version.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 lucca \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /work --shell /usr/sbin/nologin lucca \
    && install -d -o 10001 -g 10001 -m 0755 /work

COPY --from=builder /out/lucca-sync /usr/local/bin/lucca-sync
# Baked-in pipelines (they read LUCCA_BASE_URL and LUCCA_API_KEY and write
# out/ under the working directory). Kubernetes mounts its own pipeline
# ConfigMap over this directory instead.
COPY pipelines /etc/lucca-sync/pipelines

# No HEALTHCHECK: lucca-sync is a batch job, not a service. Its exit code is
# its health (see the README's exit codes), and Kubernetes ignores Docker
# health checks anyway.
# No init process either: the binary handles SIGTERM and SIGINT itself as
# PID 1 (it stops within seconds with exit code 130) and starts no children.
USER 10001:10001
WORKDIR /work
ENTRYPOINT ["lucca-sync"]
CMD ["run", "/etc/lucca-sync/pipelines/users.yaml"]
