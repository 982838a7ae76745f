# syntax=docker/dockerfile:1
# Herald: multi-stage build → a small non-root runtime image.
#   docker build -t herald .
#   docker run -p 8080:8080 herald            # one node, SQLite in /var/lib/herald/data
# docker-compose.yml runs two nodes with RabbitMQ, PostgreSQL and Redis behind a load balancer.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY loadtest/Cargo.toml loadtest/Cargo.toml
RUN mkdir -p src loadtest/src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > loadtest/src/main.rs \
    && cargo build --release --locked --bin herald || true
COPY src src
COPY config config
COPY migrations migrations
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin herald

FROM node:20-bookworm-slim AS demo
WORKDIR /src
COPY client-sdk client-sdk
COPY web-demo web-demo
RUN cd client-sdk && npm ci --no-audit --no-fund && npm run build \
    && cd ../web-demo && npm ci --no-audit --no-fund && npm run build

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/herald --shell /usr/sbin/nologin herald \
    && mkdir -p /var/lib/herald/data && chown herald:herald /var/lib/herald/data
COPY --from=build /src/target/release/herald /usr/local/bin/herald
COPY config /etc/herald
COPY --from=demo /src/web-demo/dist /usr/share/herald/demo
WORKDIR /var/lib/herald
# Configuration: /etc/herald/*.toml (mount your own, or pass --config), HERALD__SECTION__KEY variables win.
ENV HERALD__SERVER__BIND=0.0.0.0:8080 \
    HERALD__RULES__PATH=/etc/herald/rules.toml \
    HERALD__SERVER__DEMO_DIR=/usr/share/herald/demo \
    HERALD__STORE__URL=sqlite:///var/lib/herald/data/herald.db \
    HERALD__LOG__FORMAT=json
USER herald
EXPOSE 8080
VOLUME ["/var/lib/herald/data"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["herald"]
CMD ["serve"]
