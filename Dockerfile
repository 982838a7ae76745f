# syntax=docker/dockerfile:1
# Herald: multi-stage build → a small non-root runtime image.
#   docker build -t herald .
#   docker run -p 8080:8080 -e HERALD__PROFILE=development herald   # a local try: one node, SQLite in
#                                                                     # /var/lib/herald/data, the dev secret
#   docker run -p 8080:8080 -e HERALD__AUTH__JWT_SECRET=... -e HERALD__AUTH__SERVICE_KEYS=... herald
#     (the image runs the production profile, which refuses the repository's public development secret and key)
# docker-compose.yml runs two nodes with RabbitMQ, PostgreSQL and Redis behind a load balancer.
#
# Base images are pinned by exact tag and digest (the digests were taken from public references, not pulled from
# this repository's CI). To refresh one: choose the new tag on Docker Hub (rust: the toolchain the tests use;
# node: the version scripts/test.sh builds the demo with; debian: the newest bookworm-YYYYMMDD-slim), then
#   docker buildx imagetools inspect <image>:<tag> --format '{{json .Manifest.Digest}}'
# (or `docker pull <image>:<tag>` and `docker inspect --format '{{index .RepoDigests 0}}' <image>:<tag>`) and
# replace both the tag and the @sha256 in the FROM line. scripts/check-dockerfile.sh re-checks every stage's
# inputs after any edit here (no Docker engine needed).

# ---- build: Herald. One `cargo build` of the copied sources, dependencies included: cargo-chef's cached
# dependency layer cannot hold the crate patched in vendor/ (vendor/README.md): its `cook` replaces every path
# crate's sources with a stub, and the crates that use the patched one then fail to compile against it.
FROM rust:1.95.0-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1 AS build
WORKDIR /src
# The image ships a stripped binary without debug info; Cargo.toml's [profile.release] keeps `debug = 1` for
# the profiling in BENCHMARKS.md (these variables apply to this stage only).
ENV CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_PROFILE_RELEASE_STRIP=symbols
# .cargo/config.toml's [env] sets how the bundled SQLite is compiled (fdatasync).
COPY .cargo .cargo
COPY Cargo.toml Cargo.lock ./
COPY vendor vendor
# Cargo loads every workspace member: the load tool comes along (it is not built).
COPY loadtest loadtest
# src/ include_str!s config/default.toml, config/rules.toml and migrations/postgres/*.sql.
COPY src src
COPY config config
COPY migrations migrations
# The version check proves the binary is Herald's.
RUN cargo build --release --locked --bin herald \
    && ./target/release/herald --version > herald-version \
    && grep -q '^herald ' herald-version

# ---- demo: the SDK, then the web demo built against it ----
FROM node:20.20.2-bookworm-slim@sha256:2cf067cfed83d5ea958367df9f966191a942351a2df77d6f0193e162b5febfc0 AS demo
WORKDIR /src
COPY client-sdk client-sdk
COPY web-demo web-demo
# The demo's publish panel bundles the event fixtures (web-demo/src/catalog.ts: import.meta.glob of
# ../../tests/fixtures/events/*.json); without them it would build fine and offer nothing to publish.
COPY tests/fixtures/events tests/fixtures/events
WORKDIR /src/client-sdk
RUN npm ci --no-audit --no-fund && npm run build
WORKDIR /src/web-demo
RUN npm ci --no-audit --no-fund && npm run build

# ---- console: the admin console (served at /admin; no SDK needed, it calls the admin API directly) ----
FROM node:20.20.2-bookworm-slim@sha256:2cf067cfed83d5ea958367df9f966191a942351a2df77d6f0193e162b5febfc0 AS console
WORKDIR /src/admin-console
COPY admin-console ./
RUN npm ci --no-audit --no-fund && npm run build

# ---- runtime ----
FROM debian:bookworm-20261005-slim@sha256:7c7b2c966bc9ee8cedfeef67e0e279108992c77681fa595db4a9d65c06ccc587 AS runtime
# Unpinned apt package on purpose: ca-certificates should be the suite's current one; the base digest pins the rest.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 herald \
    && useradd --system --uid 10001 --gid herald --home-dir /var/lib/herald --shell /usr/sbin/nologin herald \
    && mkdir -p /var/lib/herald/data && chown herald:herald /var/lib/herald/data
COPY --from=build /src/target/release/herald /usr/local/bin/herald
COPY config /etc/herald
COPY deploy/image.toml /etc/herald/image.toml
COPY --from=demo /src/web-demo/dist /usr/share/herald/demo
COPY --from=console /src/admin-console/dist /usr/share/herald/admin
WORKDIR /var/lib/herald
# Configuration, later wins: the compiled-in defaults → /etc/herald/image.toml (this image's paths and bind
# address) → your file (`HERALD_CONFIG=PATH`, e.g. mounted; `serve --config PATH` works too, but only the
# variable reaches the HEALTHCHECK's `herald healthcheck`, which otherwise probes the image's port, 8080) →
# HERALD__SECTION__KEY variables. The image's defaults are a file, not variables, so that your file can override
# them.
ENV HERALD_BASE_CONFIG=/etc/herald/image.toml
USER 10001:10001
EXPOSE 8080
VOLUME ["/var/lib/herald/data"]
# No curl in the image: `herald healthcheck` GETs http://127.0.0.1:<port of server.bind>/healthz (exit 0 on 200).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["herald", "healthcheck", "--timeout-ms", "2500"]
ENTRYPOINT ["herald"]
CMD ["serve"]
