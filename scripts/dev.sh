#!/usr/bin/env bash
# Runs a whole Faena cluster on this machine: the master with its embedded
# MQTT broker and FAENA_WORKERS workers (default 2) as separate processes.
# Builds first if needed. Ctrl-C stops everything.
#
#   FAENA_DEV_PROFILE  dev-cluster (default: built in minutes, Rust
#                    unoptimised, RandomX and the local model at full
#                    speed) or release (as images and benchmarks: a longer
#                    first build, about 4x the dispatch)
#   FAENA_HTTP_ADDR  web page and REST API   (default 127.0.0.1:8888)
#   FAENA_GRPC_ADDR  worker callbacks (gRPC)  (default 127.0.0.1:50051)
#   FAENA_MQTT_ADDR  embedded broker          (default 127.0.0.1:1883)
#   FAENA_STRATUM_ADDR  Stratum for XMRig     (default 127.0.0.1:3333)
#   FAENA_WORKERS    number of workers        (default 2)
#   FAENA_PYTHON_WORKERS  Python workers offering x.wordcount, from
#                    examples/python-worker (default 0)
#   FAENA_DATA_DIR   job store                (default .faena-dev)
#   FAENA_LOCAL_MODEL  the workers' local AI model (default: SmolLM2-135M,
#                    fetched once by scripts/fetch-model.sh; empty: none)
#   FAENA_RANDOMX_SHARE_DIR  where the workers share one RandomX dataset
#                    (default /dev/shm/faena-<uid>; empty: one each)
#   FAENA_MASTERS    masters (default 1); 2 or more share a PostgreSQL
#                    (port FAENA_PG_PORT, default 5433) and a Mosquitto
#                    (on FAENA_MQTT_ADDR's port, observers on the next)
#                    started here from Debian's packages; master N listens
#                    on each address's port + N-1. One leads, the others
#                    stand by: kill the leader to watch a standby take over.
# Every other FAENA_* / GEMINI_* / OPENAI_* variable is passed through.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/prereqs.sh

if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
  sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
profile=${FAENA_DEV_PROFILE:-dev-cluster}
case $profile in
  dev-cluster | release) ;;
  *) echo "FAENA_DEV_PROFILE must be dev-cluster or release" >&2; exit 2 ;;
esac

need_build_tools
need_web
# The default local model, so the chat answers with no key and no internet
# (FAENA_LOCAL_MODEL= to run without it; any GGUF path works).
if [ -z "${FAENA_LOCAL_MODEL+set}" ]; then
  FAENA_LOCAL_MODEL=$(./scripts/fetch-model.sh)
  export FAENA_LOCAL_MODEL
elif [ -z "$FAENA_LOCAL_MODEL" ]; then
  # Set but empty: none (a worker given an empty path refuses to start).
  unset FAENA_LOCAL_MODEL
fi
# Only what runs here (not the benches and tools of the workspace): on a
# fresh machine this build is most of the wait.
cargo build --locked --profile "$profile" --bin faena-master --bin faena-worker --bin faena
bin=target/$profile

export FAENA_HTTP_ADDR=${FAENA_HTTP_ADDR:-127.0.0.1:8888}
export FAENA_GRPC_ADDR=${FAENA_GRPC_ADDR:-127.0.0.1:50051}
export FAENA_MQTT_ADDR=${FAENA_MQTT_ADDR:-127.0.0.1:1883}
export FAENA_STRATUM_ADDR=${FAENA_STRATUM_ADDR:-127.0.0.1:3333}
export FAENA_DATA_DIR=${FAENA_DATA_DIR:-.faena-dev}
workers=${FAENA_WORKERS:-2}
# One fast-mode dataset for all the workers started here, not 2 GiB each.
if [ -z "${FAENA_RANDOMX_SHARE_DIR+set}" ] && [ -d /dev/shm ]; then
  FAENA_RANDOMX_SHARE_DIR="/dev/shm/faena-$(id -u)"
  export FAENA_RANDOMX_SHARE_DIR
elif [ -z "${FAENA_RANDOMX_SHARE_DIR:-}" ]; then
  unset FAENA_RANDOMX_SHARE_DIR
fi
masters=${FAENA_MASTERS:-1}
case $masters in ''|*[!0-9]*) echo "FAENA_MASTERS must be a number" >&2; exit 2 ;; esac
[ "$masters" -ge 1 ] || { echo "FAENA_MASTERS must be at least 1" >&2; exit 2; }
# One token for this run, shared by the processes started here (not printed).
if [ -z "${FAENA_CLUSTER_TOKEN:-}" ] && [ -z "${FAENA_CLUSTER_TOKEN_FILE:-}" ]; then
  FAENA_CLUSTER_TOKEN="$(tr -d '-' < /proc/sys/kernel/random/uuid)$(tr -d '-' < /proc/sys/kernel/random/uuid)"
  export FAENA_CLUSTER_TOKEN
fi

pids=()
infra_pids=()
pg_dir=""
cleanup() {
  trap - EXIT INT TERM
  if [ ${#pids[@]} -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
  fi
  wait "${pids[@]}" 2>/dev/null || true
  if [ ${#infra_pids[@]} -gt 0 ]; then
    kill -TERM "${infra_pids[@]}" 2>/dev/null || true
  fi
  wait 2>/dev/null || true
  [ -z "$pg_dir" ] || stop_local_pg "$pg_dir"
}
trap cleanup EXIT INT TERM

# shellcheck source=scripts/lib/masters.sh
. scripts/lib/masters.sh
mqtt_url="mqtt://$FAENA_MQTT_ADDR"
grpc_urls="http://$FAENA_GRPC_ADDR"
if [ "$masters" -ge 2 ]; then
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || install_packages postgresql
  need_packages mosquitto:mosquitto
  mkdir -p "$FAENA_DATA_DIR"
  pg_dir=$(local_pg_dir "$FAENA_DATA_DIR")
  start_local_pg "$pg_dir" "${FAENA_PG_PORT:-5433}"
  start_local_mosquitto "$FAENA_DATA_DIR/mosquitto" "${FAENA_MQTT_ADDR##*:}" "$(( ${FAENA_MQTT_ADDR##*:} + 1 ))"
  export FAENA_MQTT_URL=$mqtt_url FAENA_MQTT_USERNAME=master FAENA_MQTT_DYNSEC=true
  export FAENA_MQTT_PASSWORD_FILE="$FAENA_DATA_DIR/mosquitto/master"
  for n in $(seq 0 $((masters - 1))); do
    start_master_n "$n" "$FAENA_DATA_DIR/master-$((n + 1))"
    [ "$n" -eq 0 ] || grpc_urls="$grpc_urls,http://$(port_plus "$FAENA_GRPC_ADDR" "$n")"
  done
else
  start_master_n 0 "$FAENA_DATA_DIR"
fi

for i in $(seq "$workers"); do
  FAENA_WORKER_ID="${FAENA_WORKER_ID_PREFIX:-local}-$i" \
  FAENA_MASTER_URL="$grpc_urls" \
  FAENA_MQTT_URL="$mqtt_url" \
    "$bin/faena-worker" > /dev/null &
  pids+=($!)
done
python_workers=${FAENA_PYTHON_WORKERS:-0}
if [ "$python_workers" -gt 0 ]; then
  examples/python-worker/run.sh --setup
fi
for i in $(seq "$python_workers"); do
  FAENA_WORKER_ID="${FAENA_WORKER_ID_PREFIX:-local}-py-$i" \
  FAENA_MASTER_URL="$grpc_urls" \
  FAENA_MQTT_URL="$mqtt_url" \
    examples/python-worker/run.sh > /dev/null &
  pids+=($!)
done

what="master + embedded broker"
if [ "$masters" -ge 2 ]; then
  what="$masters masters (the web page below is master 1's; any master serves it)"
  echo
  echo "  $masters masters on one PostgreSQL (127.0.0.1:${FAENA_PG_PORT:-5433}) and one Mosquitto ($mqtt_url):"
  for n in $(seq 0 $((masters - 1))); do
    http=$(port_plus "$FAENA_HTTP_ADDR" "$n")
    role=$(curl -s "http://$http/healthz" | sed -n 's/.*"role":"\([a-z]*\)".*/\1/p')
    echo "    master $((n + 1)) ($role)  http://$http/  gRPC $(port_plus "$FAENA_GRPC_ADDR" "$n")  Stratum $(port_plus "$FAENA_STRATUM_ADDR" "$n")   role: curl -s http://$http/healthz"
  done
  echo "    watch logs and status  mosquitto_sub -h 127.0.0.1 -p $(( ${FAENA_MQTT_ADDR##*:} + 1 )) -u observer -P \"\$(cat $FAENA_DATA_DIR/mosquitto/observer)\" -t 'faena/#' -v"
  echo "    a failover by hand     kill the leader's process (its pid: pgrep -f faena-master); a standby leads within FAENA_LEADER_LEASE_MS"
fi
# A live configuration kept in this data directory wins over this run's
# FAENA_* settings: say which, once the workers run it.
if [ "$workers" -gt 0 ]; then
  "$bin/faena" --url "http://$FAENA_HTTP_ADDR" config get --wait-workers "$workers" --timeout 20 2>/dev/null \
    | sed -n 's/^live configuration/  live configuration/p' || true
fi
cat <<MSG

  Faena is running: $what + $workers workers (+ $python_workers in Python).
    web page               http://$FAENA_HTTP_ADDR/
    dashboard              http://$FAENA_HTTP_ADDR/dashboard
    REST API               http://$FAENA_HTTP_ADDR/api/jobs
    submit a job           curl -s -H 'content-type: application/json' http://$FAENA_HTTP_ADDR/api/jobs -d '{"kind":"noop","params":{"payload":"hi"}}'
    workers                curl -s http://$FAENA_HTTP_ADDR/api/workers
    Stratum (XMRig)        xmrig -o $FAENA_STRATUM_ADDR -u NAME -p x -a rx/0   (after adding a source:
                           curl -s -H 'content-type: application/json' http://$FAENA_HTTP_ADDR/api/mining/sources -d '{"kind":"daemon","url":"http://127.0.0.1:18081","wallet":"<address>"}')
$( [ "$masters" -ge 2 ] || echo "    watch logs and status  mosquitto_sub -h ${FAENA_MQTT_ADDR%:*} -p ${FAENA_MQTT_ADDR##*:} -t 'faena/#' -v")
    built as               $profile$( [ "$profile" = release ] || echo " (quick to build; to measure dispatch: FAENA_DEV_PROFILE=release)")
  Ctrl-C stops everything.

MSG
if [ "$masters" -ge 2 ]; then
  wait_masters
else
  wait -n "${pids[@]}" || true
fi
echo "a Faena process exited; stopping the rest" >&2
