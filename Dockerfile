# syntax=docker/dockerfile:1
# Builder: a release binary (DuckDB's bundled C++ makes the first build long).
FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY fixtures ./fixtures
RUN cargo build --release --locked --bin lucca-sync

# Runtime: CA certificates, a non-root user, the binary and the pipelines.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates=* \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /work --create-home lucca
COPY --from=builder /src/target/release/lucca-sync /usr/local/bin/lucca-sync
COPY pipelines /etc/lucca-sync/pipelines
USER 10001
WORKDIR /work
ENTRYPOINT ["lucca-sync"]
CMD ["run", "/etc/lucca-sync/pipelines/users.yaml"]
