#!/usr/bin/env bash
# What per-worker broker accounts cost Mosquitto: work units from the master's
# account to N workers, each subscribed to its own jobs topic at QoS 1, on
#   reference: the shared worker account with the client-id ACL patterns the
#              stack used before (password_file + acl_file), and
#   per-worker: the stack's configuration now (mosquitto/setup.sh: the
#              dynamic security plugin, one account and role per worker).
# Prints messages/s and the broker's CPU per message for each, and the ratio.
#
#   ./scripts/bench-broker.sh [WORKERS] [UNITS_PER_WORKER]     (default 50 2000)
#
# Loopback only; needs mosquitto and mosquitto-clients (Debian).
set -euo pipefail
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi

workers=${1:-50}
units=${2:-2000}
case "$workers$units" in
  '' | *[!0-9]*) echo "bench-broker: WORKERS and UNITS_PER_WORKER are numbers (see --help)" >&2; exit 2 ;;
esac
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
broker_pid=""
cleanup() {
  [ -z "$broker_pid" ] || kill "$broker_pid" 2>/dev/null || true
  jobs -p | xargs -r kill 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=scripts/lib/bench.sh
. "$here/scripts/lib/bench.sh"

wait_port() {
  for _ in $(seq 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "bench-broker: the broker did not start: $(cat "$2")" >&2
  exit 1
}

# The configuration of the stack before per-worker accounts.
start_reference() {
  local dir=$work/reference port=$1
  mkdir -p "$dir/data"
  printf 'master:master-pw\nworker:worker-pw\n' >"$dir/passwd"
  mosquitto_passwd -U "$dir/passwd"
  cat >"$dir/acl" <<'EOF'
user master
topic readwrite faena/#
user worker
topic read faena/master/status
topic write faena/logs
pattern read faena/workers/%c/jobs
pattern read faena/workers/%c/control
pattern write faena/workers/%c/status
EOF
  cat >"$dir/mosquitto.conf" <<EOF
per_listener_settings true
user root
listener $port 127.0.0.1
allow_anonymous false
password_file $dir/passwd
acl_file $dir/acl
max_queued_messages 0
max_inflight_messages 0
set_tcp_nodelay true
log_dest stdout
connection_messages true
EOF
  mosquitto -c "$dir/mosquitto.conf" >"$dir/log" 2>&1 &
  broker_pid=$!
  wait_port "$port" "$dir/log"
}

# The stack's configuration now, rendered by its own setup.sh.
start_per_worker() {
  local dir=$work/per-worker port=$1
  mkdir -p "$dir"
  echo master-pw >"$dir/master"
  echo observer-pw >"$dir/observer"
  FAENA_MQTT_MASTER_PASSWORD_FILE=$dir/master FAENA_MQTT_OBSERVER_PASSWORD_FILE=$dir/observer \
    MOSQUITTO_PORT=$port MOSQUITTO_OBSERVER_PORT=$(free_port) MOSQUITTO_BIND=127.0.0.1 \
    MOSQUITTO_RUN_DIR=$dir/run MOSQUITTO_DATA_DIR=$dir/data MOSQUITTO_USER=root \
    MOSQUITTO_TLS_CERT_FILE=$dir/none "$here/mosquitto/setup.sh" >"$dir/log" 2>&1 &
  broker_pid=$!
  wait_port "$port" "$dir/log"
  # One role and account per worker, as the master makes them (one batch).
  local cmds="" i
  for i in $(seq "$workers"); do
    cmds+="{\"command\":\"createRole\",\"rolename\":\"faena-worker-w$i\",\"acls\":["
    cmds+="{\"acltype\":\"subscribeLiteral\",\"topic\":\"faena/workers/w$i/jobs\",\"allow\":true},"
    cmds+="{\"acltype\":\"publishClientReceive\",\"topic\":\"faena/workers/w$i/jobs\",\"allow\":true}]},"
    cmds+="{\"command\":\"createClient\",\"username\":\"w$i\",\"password\":\"w$i-pw\",\"clientid\":\"w$i\","
    cmds+="\"roles\":[{\"rolename\":\"faena-worker-w$i\"}]},"
  done
  # shellcheck disable=SC2016 # a literal topic name
  local control='$CONTROL/dynamic-security/v1'
  mosquitto_sub -h 127.0.0.1 -p "$port" -u master -P master-pw -t "$control/response" \
    -C 1 -W 30 >"$dir/answer" &
  local answer=$!
  sleep 0.5
  mosquitto_pub -h 127.0.0.1 -p "$port" -u master -P master-pw -q 1 -t "$control" \
    -m "{\"commands\":[${cmds%,}]}"
  wait "$answer"
  if grep -q '"error"' "$dir/answer"; then
    echo "bench-broker: the plugin refused: $(cat "$dir/answer")" >&2
    exit 1
  fi
}

# Subscribers first (each counts its units), then one publisher per topic.
run() {
  local name=$1 port=$2 login=$3 i
  local subs=()
  # A retained marker on each topic: a subscriber has it once its
  # subscription is in place, so waiting for it waits for that.
  for i in $(seq "$workers"); do
    mosquitto_pub -h 127.0.0.1 -p "$port" -u master -P master-pw -q 1 -r -t "faena/workers/w$i/jobs" -m ready
  done
  for i in $(seq "$workers"); do
    local user=worker pw=worker-pw
    if [ "$login" = own ]; then user=w$i pw=w$i-pw; fi
    mosquitto_sub -h 127.0.0.1 -p "$port" -u "$user" -P "$pw" -i "w$i" -c -q 1 \
      -t "faena/workers/w$i/jobs" -C "$((units + 1))" -W 300 >"$work/$name/sub$i.out" &
    subs+=($!)
  done
  for i in $(seq "$workers"); do
    for _ in $(seq 600); do
      [ -s "$work/$name/sub$i.out" ] && break
      sleep 0.05
    done
    [ -s "$work/$name/sub$i.out" ] || { echo "bench-broker: $name: w$i never subscribed" >&2; exit 1; }
  done
  local t0 c0 t1 c1
  c0=$(cpu_ticks "$broker_pid")
  t0=$(date +%s.%N)
  for i in $(seq "$workers"); do
    seq "$units" | sed 's/.*/{"v":1,"job_id":"&","attempt":1,"token":"0123456789abcdef","kind":"noop","params":{}}/' |
      mosquitto_pub -h 127.0.0.1 -p "$port" -u master -P master-pw -i "pub$i" -q 1 -t "faena/workers/w$i/jobs" -l &
  done
  local failed=0
  for pid in "${subs[@]}"; do wait "$pid" || failed=1; done
  t1=$(date +%s.%N)
  c1=$(cpu_ticks "$broker_pid")
  [ "$failed" = 0 ] || { echo "bench-broker: $name: a subscriber did not get all its units" >&2; exit 1; }
  local total=$((workers * units)) hz
  hz=$(getconf CLK_TCK)
  awk -v n="$name" -v m="$total" -v t0="$t0" -v t1="$t1" -v c="$((c1 - c0))" -v hz="$hz" 'BEGIN {
    secs = t1 - t0; printf "%-10s %8d units in %6.2f s: %8.0f units/s, broker CPU %5.2f us/unit\n", n, m, secs, m / secs, c / hz * 1e6 / m
    print m / secs > "/dev/stderr" }' 2>"$work/$name.rate"
  awk -v c="$((c1 - c0))" -v hz="$hz" -v m="$total" 'BEGIN { print c / hz * 1e6 / m }' >"$work/$name.cpu"
  kill "$broker_pid"
  wait "$broker_pid" 2>/dev/null || true
  broker_pid=""
}

echo "mosquitto $(mosquitto -h 2>/dev/null | head -n 1 | awk '{print $3}'), $workers workers x $units units (QoS 1)"
port=$(free_port)
start_reference "$port"
run reference "$port" shared
port=$(free_port)
start_per_worker "$port"
run per-worker "$port" own
awk -v a="$(cat "$work/reference.rate")" -v b="$(cat "$work/per-worker.rate")" \
  -v ca="$(cat "$work/reference.cpu")" -v cb="$(cat "$work/per-worker.cpu")" \
  'BEGIN { cpu = "(too few units to tell)"; if (ca > 0) cpu = sprintf("%.2f", cb / ca)
           printf "per-worker / reference: throughput %.2f, broker CPU per unit %s\n", b / a, cpu }'
