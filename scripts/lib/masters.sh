# shellcheck shell=bash
# dev.sh with FAENA_MASTERS=N (N >= 2): several masters on this machine,
# sharing a PostgreSQL and a Mosquitto that this starts from Debian's
# packages (no system services), in FAENA_DATA_DIR. Sourced by dev.sh,
# which sets $bin, $pids and the FAENA_*_ADDR defaults first.

# The PostgreSQL server's own files: FAENA_DATA_DIR/postgres, where the
# server's account can reach it (root runs the server as `postgres`).
local_pg_dir() {
  local dir=$1/postgres
  if [ "$(id -u)" -eq 0 ]; then
    mkdir -p "$dir"
    chown postgres "$dir"
    if ! runuser -u postgres -- test -x "$dir"; then
      dir=/var/tmp/faena-dev-postgres
      mkdir -p "$dir"
      chown postgres "$dir"
    fi
  fi
  echo "$dir"
}

# The newest PostgreSQL installed (Debian: /usr/lib/postgresql/<major>/bin).
pg_bin() {
  local bins=(/usr/lib/postgresql/*/bin)
  echo "${bins[-1]}"
}

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Starts PostgreSQL on 127.0.0.1:$2 with its files in $1 (made on first
# use, with a password for the `faena` role kept beside them); sets
# FAENA_STORE_URL.
start_local_pg() {
  local dir=$1 port=$2 pgbin
  pgbin=$(pg_bin)
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    local pw
    pw=$(tr -d '-' < /proc/sys/kernel/random/uuid)
    printf '%s\n' "$pw" > "$dir/faena.pw.tmp"
    chmod 600 "$dir/faena.pw.tmp"
    [ "$(id -u)" -ne 0 ] || chown postgres "$dir/faena.pw.tmp"
    as_pg "$pgbin/initdb" -D "$dir/data" -U faena --pwfile="$dir/faena.pw.tmp" -A scram-sha-256 >/dev/null
    mv "$dir/faena.pw.tmp" "$dir/faena.pw"
  fi
  as_pg "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1" start >/dev/null
  PGPASSWORD=$(cat "$dir/faena.pw") "$pgbin/psql" -q -h 127.0.0.1 -p "$port" -U faena -d postgres \
    -c "SELECT 1 FROM pg_database WHERE datname = 'faena'" -tA | grep -q 1 ||
    PGPASSWORD=$(cat "$dir/faena.pw") "$pgbin/createdb" -h 127.0.0.1 -p "$port" -U faena faena
  FAENA_STORE_URL="postgres://faena:$(cat "$dir/faena.pw")@127.0.0.1:$port/faena?sslmode=disable"
  export FAENA_STORE_URL
}

stop_local_pg() {
  local pgbin
  pgbin=$(pg_bin)
  as_pg "$pgbin/pg_ctl" -D "$1/data" -m fast stop >/dev/null 2>&1 || true
}

# Starts Mosquitto (the stack's configuration, mosquitto/setup.sh) with its
# services' listener on $2 and the observers' on $3, files in $1 — in a
# session of its own, so a Ctrl-C reaches the masters first and they say
# goodbye through it before cleanup stops it.
start_local_mosquitto() {
  local dir=$1 port=$2 observer=$3 user
  mkdir -p "$dir"
  for account in master observer; do
    [ -f "$dir/$account" ] || tr -d '-' < /proc/sys/kernel/random/uuid > "$dir/$account"
    chmod 600 "$dir/$account"
  done
  user=$(id -un)
  MOSQUITTO_PORT=$port MOSQUITTO_OBSERVER_PORT=$observer MOSQUITTO_BIND=127.0.0.1 \
  MOSQUITTO_RUN_DIR="$dir/run" MOSQUITTO_DATA_DIR="$dir/data" MOSQUITTO_USER=$user \
  MOSQUITTO_BIN=/usr/sbin/mosquitto MOSQUITTO_TLS_CERT_FILE="$dir/none.pem" MOSQUITTO_TLS_KEY_FILE="$dir/none.key" \
  FAENA_MQTT_MASTER_PASSWORD_FILE="$dir/master" FAENA_MQTT_OBSERVER_PASSWORD_FILE="$dir/observer" \
    setsid mosquitto/setup.sh > "$dir/mosquitto.log" 2>&1 &
  infra_pids+=($!)
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "mosquitto did not start: $(tail -5 "$dir/mosquitto.log")" >&2
  return 1
}

master_pids=()
# infra_pids (dev.sh's): Mosquitto, stopped after the masters and workers,
# which say goodbye through it.

# Returns when no master is left (a failover by hand kills one: the rest
# carry on) or another process of the cluster stopped.
wait_masters() {
  local p alive
  while true; do
    sleep 1
    for p in "${pids[@]}" "${infra_pids[@]}"; do
      case " ${master_pids[*]} " in *" $p "*) continue ;; esac
      kill -0 "$p" 2>/dev/null || return 0
    done
    alive=0
    for p in "${master_pids[@]}"; do
      kill -0 "$p" 2>/dev/null && alive=1
    done
    [ "$alive" -eq 1 ] || return 0
  done
}

# "host:port" moved up by $2 ports.
port_plus() {
  echo "${1%:*}:$(( ${1##*:} + $2 ))"
}

# Starts master number $1 (0-based): ports moved up by $1, data in $2.
# Waits for its ready line. ($bin: dev.sh's.)
# shellcheck disable=SC2154
start_master_n() {
  local n=$1 data=$2 ready
  ready=$(mktemp)
  FAENA_HTTP_ADDR=$(port_plus "$FAENA_HTTP_ADDR" "$n") \
  FAENA_GRPC_ADDR=$(port_plus "$FAENA_GRPC_ADDR" "$n") \
  FAENA_STRATUM_ADDR=$(port_plus "$FAENA_STRATUM_ADDR" "$n") \
  FAENA_DATA_DIR="$data" \
    "$bin/faena-master" > "$ready" &
  local pid=$!
  pids+=("$pid")
  master_pids+=("$pid")
  for _ in $(seq 300); do
    grep -q '^FAENA_READY ' "$ready" && break
    kill -0 "$pid" 2>/dev/null || { echo "faena-master $((n + 1)) failed to start" >&2; return 1; }
    sleep 0.1
  done
  grep -q '^FAENA_READY ' "$ready" || { echo "faena-master $((n + 1)) did not become ready" >&2; return 1; }
  rm -f "$ready"
}
