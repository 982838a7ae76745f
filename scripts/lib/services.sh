# Helpers for test scripts: install Debian packages on demand and start real services on loopback, each on a
# free port in a temporary directory, stopped by `stop_services` (the callers trap EXIT).
# shellcheck shell=bash

HERALD_SERVICES_DIR="${HERALD_SERVICES_DIR:-$(mktemp -d /tmp/herald-services.XXXXXX)}"
mkdir -p "$HERALD_SERVICES_DIR"
# Exported: the restart_* functions below also work from a child shell (the chaos harness calls them).
export HERALD_SERVICES_DIR
_HERALD_PIDS=()
_HERALD_STOPS=()

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

free_port() {
  # Never one handed out before in this services directory: a service started a moment ago may not listen yet,
  # so the kernel could offer its port again.
  local port used="$HERALD_SERVICES_DIR/ports-handed-out"
  while :; do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
    grep -qx "$port" "$used" 2>/dev/null || { echo "$port" >> "$used"; echo "$port"; return 0; }
  done
}

# ensure_packages CMD:PACKAGE ... — apt-get install the packages whose command (or file, given a path) is missing.
ensure_packages() {
  local missing=() pair cmd pkg
  for pair in "$@"; do
    cmd="${pair%%:*}"; pkg="${pair#*:}"
    command -v "$cmd" >/dev/null 2>&1 || [ -e "$cmd" ] || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  log "installing ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "need root to apt-get install ${missing[*]}" >&2
    return 1
  fi
  if [ ! -f /tmp/.herald-apt-updated ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null && touch /tmp/.herald-apt-updated
  fi
  # Packages must not start their system services on default ports: the tests start their own.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
}

wait_for_port() { # host port seconds
  local deadline=$((SECONDS + $3))
  until (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

stop_services() {
  local s
  for s in "${_HERALD_STOPS[@]}"; do eval "$s" >/dev/null 2>&1 || true; done
  for pid in "${_HERALD_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$HERALD_SERVICES_DIR"
}

# start_rabbitmq — exports HERALD_TEST_AMQP_URL, HERALD_TEST_AMQPS_URL (the same broker over TLS; its CA is
# HERALD_TEST_TLS_CA), HERALD_TEST_RABBITMQ_NODE (for `rabbitmqctl -n`) and
# HERALD_TEST_RABBITMQ_PORT. The node has its own name, ports, data and logs under $HERALD_SERVICES_DIR; only epmd
# (the Erlang name service, port 4369) is shared with any other node on the machine, as Erlang intends.
start_rabbitmq() {
  ensure_packages rabbitmq-server:rabbitmq-server
  make_test_tls || return 1
  local port tls dist dir node pid deadline
  port=$(free_port); tls=$(free_port); dist=$(free_port)
  dir="$HERALD_SERVICES_DIR/rabbitmq"; mkdir -p "$dir/mnesia" "$dir/log"
  node="herald-test-$$-$port@localhost"
  echo '[rabbitmq_auth_mechanism_ssl].' > "$dir/enabled_plugins"
  # Small, fast and quiet: no disk alarm on a busy CI disk, no file log rotation.
  # Also AMQP over TLS on its own port, with make_test_tls's certificate. A client certificate is verified when
  # one is presented (not required); EXTERNAL logs in as the user its common name names (mutual TLS, no password).
  printf '%s\n' 'disk_free_limit.absolute = 10MB' 'log.file.level = warning' 'log.console = false' \
    "listeners.ssl.1 = 127.0.0.1:$tls" "ssl_options.cacertfile = $HERALD_TEST_TLS_DIR/ca.pem" \
    "ssl_options.certfile = $HERALD_TEST_TLS_DIR/server.pem" "ssl_options.keyfile = $HERALD_TEST_TLS_DIR/server.key" \
    'ssl_options.verify = verify_peer' 'ssl_options.fail_if_no_peer_cert = false' \
    'auth_mechanisms.1 = PLAIN' 'auth_mechanisms.2 = AMQPLAIN' 'auth_mechanisms.3 = EXTERNAL' \
    'ssl_cert_login_from = common_name' > "$dir/rabbitmq.conf"
  # As root, the Debian wrapper drops to the `rabbitmq` user (and its Erlang cookie, which rabbitmqctl shares):
  # that user must be able to reach and write the node's directory.
  if [ "$(id -u)" -eq 0 ] && id rabbitmq >/dev/null 2>&1; then
    chmod 755 "$HERALD_SERVICES_DIR"
    chown -R rabbitmq: "$dir"
  fi
  log "starting rabbitmq on 127.0.0.1:$port (node $node)"
  RABBITMQ_NODE_PORT=$port RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_DIST_PORT=$dist \
    RABBITMQ_NODENAME=$node RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" RABBITMQ_CONFIG_FILE="$dir/rabbitmq" \
    RABBITMQ_CONF_ENV_FILE=/dev/null RABBITMQ_PID_FILE="$dir/rabbitmq.pid" \
    rabbitmq-server >"$dir/stdout.log" 2>&1 &
  pid=$!
  _HERALD_PIDS+=("$pid")
  _HERALD_STOPS+=("rabbitmqctl -n $node stop")
  export HERALD_TEST_RABBITMQ_NODE=$node
  # Wait for the broker to boot completely (not only the port), failing fast if the node dies.
  deadline=$((SECONDS + 90))
  until rabbitmqctl -n "$node" -q await_startup --timeout 5 >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null || ((SECONDS >= deadline)); then
      echo "rabbitmq did not start; its output:" >&2
      tail -n 40 "$dir/stdout.log" "$dir"/log/*.log >&2 2>/dev/null
      return 1
    fi
    sleep 0.5
  done
  wait_for_port 127.0.0.1 "$port" 10 || { tail -n 40 "$dir/stdout.log" >&2; return 1; }
  wait_for_port 127.0.0.1 "$tls" 10 || { tail -n 40 "$dir/stdout.log" >&2; return 1; }
  export HERALD_TEST_AMQP_URL="amqp://guest:guest@127.0.0.1:$port/%2f"
  # guest may log in from loopback only; this is loopback too.
  export HERALD_TEST_AMQPS_URL="amqps://guest:guest@127.0.0.1:$tls/%2f"
  # No password: the client certificate (HERALD_TEST_TLS_CLIENT_CERT, common name `guest`) is the login.
  export HERALD_TEST_AMQPS_EXTERNAL_URL="amqps://127.0.0.1:$tls/%2f?auth_mechanism=external"
  export HERALD_TEST_RABBITMQ_PORT=$port
}

# make_test_tls — a throwaway certificate authority and a server certificate for 127.0.0.1 and localhost, signed
# by it, in $HERALD_SERVICES_DIR/tls (ca.pem, server.pem, server.key), and a client certificate it signed for
# mutual TLS (client.pem, client.key; common name `guest`, the broker user it logs in as with EXTERNAL). Exports
# HERALD_TEST_TLS_CA (the CA's PEM file, which Herald is given as `amqp.ca_file` / `cluster.redis_ca_file`),
# HERALD_TEST_TLS_CLIENT_CERT and HERALD_TEST_TLS_CLIENT_KEY, and HERALD_TEST_TLS_DIR.
make_test_tls() {
  local d="$HERALD_SERVICES_DIR/tls"; mkdir -p "$d"
  # Made once per services directory, each part only if missing: services already running keep their CA.
  if [ ! -f "$d/server.pem" ]; then
    ensure_packages openssl:openssl
    # The server certificate also serves as a client's (`clientAuth`): a TLS Redis Cluster's nodes present it to
    # each other on the cluster bus, which asks for one like the clients' port does.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=herald-test-ca \
      -keyout "$d/ca.key" -out "$d/ca.pem" 2>"$d/openssl.log" \
      && openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
        -keyout "$d/server.key" -out "$d/server.csr" 2>>"$d/openssl.log" \
      && printf '%s\n' 'subjectAltName = IP:127.0.0.1, DNS:localhost' 'basicConstraints = CA:FALSE' \
        'keyUsage = digitalSignature, keyEncipherment' 'extendedKeyUsage = serverAuth, clientAuth' > "$d/server.ext" \
      && openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -days 2 \
        -extfile "$d/server.ext" -out "$d/server.pem" 2>>"$d/openssl.log" \
      || { cat "$d/openssl.log" >&2; return 1; }
  fi
  if [ ! -f "$d/client.pem" ]; then
    ensure_packages openssl:openssl
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=guest \
      -keyout "$d/client.key" -out "$d/client.csr" 2>>"$d/openssl.log" \
      && printf '%s\n' 'basicConstraints = CA:FALSE' 'keyUsage = digitalSignature' 'extendedKeyUsage = clientAuth' \
        > "$d/client.ext" \
      && openssl x509 -req -in "$d/client.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -days 2 \
        -extfile "$d/client.ext" -out "$d/client.pem" 2>>"$d/openssl.log" \
      || { cat "$d/openssl.log" >&2; return 1; }
  fi
  # The brokers run as their own users (RabbitMQ drops to `rabbitmq`): a test key, readable by all.
  chmod 755 "$HERALD_SERVICES_DIR" "$d"; chmod 644 "$d"/*
  export HERALD_TEST_TLS_DIR=$d HERALD_TEST_TLS_CA=$d/ca.pem
  export HERALD_TEST_TLS_CLIENT_CERT=$d/client.pem HERALD_TEST_TLS_CLIENT_KEY=$d/client.key
}

# The redis-server of start_redis and restart_redis: plain TCP on HERALD_TEST_REDIS_PORT and TLS on
# HERALD_TEST_REDIS_TLS_PORT, with make_test_tls's certificate (clients are not asked for one).
_redis_server() {
  local d=$HERALD_TEST_TLS_DIR
  redis-server --port "$HERALD_TEST_REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$HERALD_SERVICES_DIR/redis" --tls-port "$HERALD_TEST_REDIS_TLS_PORT" --tls-cert-file "$d/server.pem" \
    --tls-key-file "$d/server.key" --tls-ca-cert-file "$d/ca.pem" --tls-auth-clients no
}

# start_redis — exports HERALD_TEST_REDIS_URL and HERALD_TEST_REDISS_URL (the same server over TLS; its CA is
# HERALD_TEST_TLS_CA), and HERALD_TEST_REDISS_MTLS_URL: a second server, TLS only, that refuses a client without
# a certificate its CA signed (`tls-auth-clients yes`; make_test_tls's client certificate is one).
start_redis() {
  ensure_packages redis-server:redis-server
  make_test_tls || return 1
  local port tls mtls dir d=$HERALD_TEST_TLS_DIR
  port=$(free_port); tls=$(free_port); mtls=$(free_port); dir="$HERALD_SERVICES_DIR/redis"; mkdir -p "$dir" "$dir-mtls"
  export HERALD_TEST_REDIS_PORT=$port HERALD_TEST_REDIS_TLS_PORT=$tls
  log "starting redis on 127.0.0.1:$port (TLS on $tls; mutual TLS on $mtls)"
  _redis_server >"$dir/stdout.log" 2>&1 &
  _HERALD_PIDS+=($!)
  # A restart_redis from another shell replaces the process: stop whatever listens on the port.
  _HERALD_STOPS+=("redis-cli -p $port shutdown nosave")
  redis-server --port 0 --bind 127.0.0.1 --save '' --appendonly no --dir "$dir-mtls" --tls-port "$mtls" \
    --tls-cert-file "$d/server.pem" --tls-key-file "$d/server.key" --tls-ca-cert-file "$d/ca.pem" \
    --tls-auth-clients yes >"$dir-mtls/stdout.log" 2>&1 &
  _HERALD_PIDS+=($!)
  wait_for_port 127.0.0.1 "$port" 20 || { cat "$dir/stdout.log" >&2; return 1; }
  wait_for_port 127.0.0.1 "$tls" 20 || { cat "$dir/stdout.log" >&2; return 1; }
  wait_for_port 127.0.0.1 "$mtls" 20 || { cat "$dir-mtls/stdout.log" >&2; return 1; }
  export HERALD_TEST_REDIS_URL="redis://127.0.0.1:$port"
  export HERALD_TEST_REDISS_URL="rediss://127.0.0.1:$tls"
  export HERALD_TEST_REDISS_MTLS_URL="rediss://127.0.0.1:$mtls"
}

# start_postgres — exports HERALD_TEST_POSTGRES_URL (database `herald`, user `herald`, trust auth on loopback). The
# server also speaks TLS (make_test_tls's certificate; HERALD_TEST_POSTGRES_TLS=1 says so), and its role `guest`
# logs in over TLS with make_test_tls's client certificate only; HERALD_POSTGRES_TLS=0: no TLS.
# As root, the server runs as the `postgres` user (PostgreSQL refuses to run as root): that user must be able to
# reach the data directory and the socket directory under $HERALD_SERVICES_DIR.
# HERALD_POSTGRES_DURABLE=1: production durability (fsync and synchronous_commit on, PostgreSQL's defaults), for
# benchmarks; unset or 0 (tests): fsync off.
start_postgres() {
  local bin port dir
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$bin" ]; then
    ensure_packages /usr/lib/postgresql:postgresql
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  port=$(free_port); dir="$HERALD_SERVICES_DIR/postgres"; mkdir -p "$dir"
  local as=()
  if [ "$(id -u)" -eq 0 ]; then
    chmod 755 "$HERALD_SERVICES_DIR"
    chown postgres: "$dir"
    as=(runuser -u postgres --)
  fi
  log "starting postgresql on 127.0.0.1:$port"
  "${as[@]}" "$bin/initdb" -D "$dir/data" -U herald --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; return 1; }
  # fsync off: test data need not survive a power cut, and commits are then cheap on a busy CI disk.
  local durability="-c fsync=off"
  if [ "${HERALD_POSTGRES_DURABLE:-0}" = 1 ]; then
    durability="-c fsync=on -c synchronous_commit=on"
    log "postgresql at production durability (fsync and synchronous_commit on)"
  fi
  # TLS too, with make_test_tls's certificate; the role `guest` logs in only over TLS and only with a client
  # certificate the test CA signed whose common name is `guest` (make_test_tls's client certificate). Clients
  # then use TLS unless their URL says `sslmode=disable` (sqlx prefers it). HERALD_POSTGRES_TLS=0 (the
  # benchmarks, measured without it since the first): no TLS.
  local tls=""
  if [ "${HERALD_POSTGRES_TLS:-1}" != 0 ]; then
    make_test_tls || return 1
    cp "$HERALD_TEST_TLS_DIR/server.pem" "$HERALD_TEST_TLS_DIR/server.key" "$dir/"
    chmod 600 "$dir/server.key"
    if [ "$(id -u)" -eq 0 ]; then chown postgres: "$dir/server.pem" "$dir/server.key"; fi
    { printf '%s\n' "hostssl all guest 127.0.0.1/32 cert" "host all guest 127.0.0.1/32 reject" "local all guest reject"
      cat "$dir/data/pg_hba.conf"; } > "$dir/pg_hba.conf" && cat "$dir/pg_hba.conf" > "$dir/data/pg_hba.conf"
    tls="-c ssl=on -c ssl_cert_file=$dir/server.pem -c ssl_key_file=$dir/server.key -c ssl_ca_file=$HERALD_TEST_TLS_CA"
  fi
  # HERALD_POSTGRES_OPTIONS: more server options (e.g. scripts/pg-statements.sh loads pg_stat_statements).
  local opts="-p $port -k $dir -c listen_addresses=127.0.0.1 $durability $tls -c max_connections=200 ${HERALD_POSTGRES_OPTIONS:-}"
  "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 -o "$opts" start >/dev/null \
    || { tail -n 40 "$dir/log" >&2; return 1; }
  _HERALD_STOPS+=("${as[*]} $bin/pg_ctl -D $dir/data -m fast stop")
  export HERALD_TEST_POSTGRES_BIN=$bin
  "${as[@]}" "$bin/createdb" -h 127.0.0.1 -p "$port" -U herald herald
  if [ -n "$tls" ]; then
    "${as[@]}" "$bin/psql" -q -h 127.0.0.1 -p "$port" -U herald -d herald -c 'CREATE ROLE guest LOGIN' >/dev/null
    export HERALD_TEST_POSTGRES_TLS=1
  else
    unset HERALD_TEST_POSTGRES_TLS
  fi
  export HERALD_TEST_POSTGRES_URL="postgres://herald@127.0.0.1:$port/herald"
}

# Restarts for fault injection (scripts/chaos.sh). Each works from any shell that has the variables the start_*
# functions export (the chaos harness runs `bash -c 'source scripts/lib/services.sh; restart_redis'`), and
# returns once the service answers again.

# restart_redis — SHUTDOWN NOSAVE (everything in it is gone, as after a crash: Herald keeps nothing there that
# the inbox does not have) and a new redis-server on the same port.
restart_redis() {
  local port=$HERALD_TEST_REDIS_PORT dir="$HERALD_SERVICES_DIR/redis"
  redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.1; done
  _redis_server >>"$dir/stdout.log" 2>&1 &
  wait_for_port 127.0.0.1 "$port" 20
}

# start_pgbouncer [MODE] — PgBouncer in front of start_postgres's server, in pool mode MODE (default `session`),
# every database passed through (`*`), trust auth on loopback, its other settings PgBouncer's defaults (no startup
# option ignored; 20 server connections per database). Exports HERALD_TEST_PGBOUNCER_SESSION_PORT (or
# _TRANSACTION_PORT, _STATEMENT_PORT): a URL of HERALD_TEST_POSTGRES_URL's with this port instead reaches the same
# database through the pooler.
start_pgbouncer() {
  ensure_packages /usr/sbin/pgbouncer:pgbouncer
  local port dir pg_port as=()
  port=$(free_port); dir="$HERALD_SERVICES_DIR/pgbouncer-${1:-session}"; mkdir -p "$dir"
  pg_port=${HERALD_TEST_POSTGRES_URL##*:}; pg_port=${pg_port%%/*}
  echo '"herald" ""' > "$dir/users.txt"
  printf '%s\n' '[databases]' "* = host=127.0.0.1 port=$pg_port" '[pgbouncer]' "listen_addr = 127.0.0.1" \
    "listen_port = $port" "unix_socket_dir = $dir" 'auth_type = trust' "auth_file = $dir/users.txt" \
    "pool_mode = ${1:-session}" "pidfile = $dir/pgbouncer.pid" "logfile = $dir/pgbouncer.log" \
    'server_idle_timeout = 10' > "$dir/pgbouncer.ini"
  # PgBouncer refuses to run as root: as root, it runs as the `postgres` user, like the server.
  if [ "$(id -u)" -eq 0 ]; then chown -R postgres: "$dir"; as=(runuser -u postgres --); fi
  log "starting pgbouncer (${1:-session} mode) on 127.0.0.1:$port"
  "${as[@]}" /usr/sbin/pgbouncer -d "$dir/pgbouncer.ini" || { cat "$dir/pgbouncer.log" >&2; return 1; }
  _HERALD_STOPS+=("kill \$(cat $dir/pgbouncer.pid)")
  wait_for_port 127.0.0.1 "$port" 20 || { cat "$dir/pgbouncer.log" >&2; return 1; }
  local mode=${1:-session}
  export "HERALD_TEST_PGBOUNCER_${mode^^}_PORT=$port"
}

# restart_postgres — an immediate shutdown (no checkpoint: the next start runs crash recovery, as after a crash)
# and a start with the same options.
restart_postgres() {
  local dir="$HERALD_SERVICES_DIR/postgres" as=()
  [ "$(id -u)" -eq 0 ] && as=(runuser -u postgres --)
  "${as[@]}" "$HERALD_TEST_POSTGRES_BIN/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 -m immediate restart >/dev/null
}

# restart_rabbitmq — stop and start the broker application: every connection and channel drops, durable queues
# and their unacknowledged messages are recovered from disk. The Erlang VM stays up (booting a new one costs
# tens of seconds on a busy machine and tests nothing more of Herald).
restart_rabbitmq() {
  rabbitmqctl -n "$HERALD_TEST_RABBITMQ_NODE" -q stop_app >/dev/null
  rabbitmqctl -n "$HERALD_TEST_RABBITMQ_NODE" -q start_app >/dev/null
  rabbitmqctl -n "$HERALD_TEST_RABBITMQ_NODE" -q await_startup --timeout 60 >/dev/null
}

# start_redis_cluster [--tls] — a Redis Cluster of three masters (no replicas) on free loopback ports, each in its
# own directory. Exports HERALD_TEST_REDIS_CLUSTER_URLS (comma-separated seed URLs) and HERALD_TEST_REDIS_CLUSTER_DIR:
# a shard on port P lives in $HERALD_TEST_REDIS_CLUSTER_DIR/P, `sh .../P/start` starts it again (same node id and
# slots, from its nodes.conf) and .../P/redis.pid holds its pid, so a test can kill and restart one shard.
# With --tls, a second cluster that speaks only TLS (clients and its bus, make_test_tls's certificate) and refuses
# a client without a certificate its CA signed (make_test_tls's client certificate is one):
# HERALD_TEST_REDISS_CLUSTER_URLS (rediss:// seeds; the CA is HERALD_TEST_TLS_CA).
start_redis_cluster() {
  ensure_packages redis-server:redis-server redis-cli:redis-tools
  local port bus dir ports=() hosts=() urls=() state deadline root listen scheme=redis cli=()
  root="$HERALD_SERVICES_DIR/redis-cluster"
  if [ "${1:-}" = --tls ]; then
    make_test_tls || return 1
    root="$HERALD_SERVICES_DIR/redis-cluster-tls"; scheme=rediss
    cli=(--tls --cacert "$HERALD_TEST_TLS_CA" --cert "$HERALD_TEST_TLS_CLIENT_CERT" --key "$HERALD_TEST_TLS_CLIENT_KEY")
  fi
  mkdir -p "$root"
  for _ in 1 2 3; do
    # The cluster bus gets its own free port (the default, port + 10000, may be taken or beyond 65535).
    port=$(free_port); bus=$(free_port); dir="$root/$port"; mkdir -p "$dir"
    listen="--port $port"
    if [ "$scheme" = rediss ]; then
      listen="--port 0 --tls-port $port --tls-cluster yes --tls-cert-file \"$HERALD_TEST_TLS_DIR/server.pem\""
      listen+=" --tls-key-file \"$HERALD_TEST_TLS_DIR/server.key\" --tls-ca-cert-file \"$HERALD_TEST_TLS_CA\""
      listen+=" --tls-auth-clients yes"
    fi
    # A short node timeout: a killed shard is noticed (and a restarted one rejoins) within seconds.
    cat > "$dir/start" <<SH
exec redis-server $listen --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \\
  --cluster-enabled yes --cluster-port $bus --cluster-config-file "$dir/nodes.conf" --cluster-node-timeout 2000 \\
  --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
SH
    sh "$dir/start"
    _HERALD_STOPS+=("kill \$(cat $dir/redis.pid)")
    ports+=("$port"); hosts+=("127.0.0.1:$port"); urls+=("$scheme://127.0.0.1:$port")
  done
  log "starting a redis cluster on 127.0.0.1:${ports[*]}${cli:+ (TLS only)}"
  for port in "${ports[@]}"; do
    wait_for_port 127.0.0.1 "$port" 20 || { cat "$root/$port/redis.log" >&2; return 1; }
  done
  redis-cli "${cli[@]}" --cluster create "${hosts[@]}" --cluster-replicas 0 --cluster-yes >"$root/create.log" 2>&1 \
    || { cat "$root/create.log" >&2; return 1; }
  for port in "${ports[@]}"; do
    deadline=$((SECONDS + 30))
    until state=$(redis-cli "${cli[@]}" -p "$port" cluster info 2>/dev/null) && [[ $state == *cluster_state:ok* ]]; do
      ((SECONDS < deadline)) || { echo "redis cluster never became ok on :$port" >&2; return 1; }
      sleep 0.2
    done
  done
  if [ "$scheme" = rediss ]; then
    export HERALD_TEST_REDISS_CLUSTER_URLS
    HERALD_TEST_REDISS_CLUSTER_URLS=$(IFS=,; echo "${urls[*]}")
    return 0
  fi
  export HERALD_TEST_REDIS_CLUSTER_URLS
  HERALD_TEST_REDIS_CLUSTER_URLS=$(IFS=,; echo "${urls[*]}")
  export HERALD_TEST_REDIS_CLUSTER_DIR=$root
}
