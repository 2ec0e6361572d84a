#!/usr/bin/env bash
# Runs a whole Faena cluster on this machine: the master with its embedded
# MQTT broker and FAENA_WORKERS workers (default 2) as separate processes.
# Builds first if needed (release profile). Ctrl-C stops everything.
#
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
# Every other FAENA_* / GEMINI_* / OPENAI_* variable is passed through.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/prereqs.sh

if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi

need_build_tools
need_web
# The default local model, so the chat answers with no key and no internet
# (FAENA_LOCAL_MODEL= to run without it; any GGUF path works).
if [ -z "${FAENA_LOCAL_MODEL+set}" ]; then
  FAENA_LOCAL_MODEL=$(./scripts/fetch-model.sh)
  export FAENA_LOCAL_MODEL
fi
# The whole workspace, so features unify as in every other build (no second set of artifacts).
cargo build --locked --release --workspace --bins
bin=target/release

export FAENA_HTTP_ADDR=${FAENA_HTTP_ADDR:-127.0.0.1:8888}
export FAENA_GRPC_ADDR=${FAENA_GRPC_ADDR:-127.0.0.1:50051}
export FAENA_MQTT_ADDR=${FAENA_MQTT_ADDR:-127.0.0.1:1883}
export FAENA_STRATUM_ADDR=${FAENA_STRATUM_ADDR:-127.0.0.1:3333}
export FAENA_DATA_DIR=${FAENA_DATA_DIR:-.faena-dev}
workers=${FAENA_WORKERS:-2}
# One token for this run, shared by the processes started here (not printed).
if [ -z "${FAENA_CLUSTER_TOKEN:-}" ] && [ -z "${FAENA_CLUSTER_TOKEN_FILE:-}" ]; then
  FAENA_CLUSTER_TOKEN="$(tr -d '-' < /proc/sys/kernel/random/uuid)$(tr -d '-' < /proc/sys/kernel/random/uuid)"
  export FAENA_CLUSTER_TOKEN
fi

pids=()
cleanup() {
  trap - EXIT INT TERM
  if [ ${#pids[@]} -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
  fi
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

ready=$(mktemp)
"$bin/faena-master" > "$ready" &
pids+=($!)
for _ in $(seq 300); do
  grep -q '^FAENA_READY ' "$ready" && break
  kill -0 "${pids[0]}" 2>/dev/null || { echo "faena-master failed to start" >&2; exit 1; }
  sleep 0.1
done
grep -q '^FAENA_READY ' "$ready" || { echo "faena-master did not become ready" >&2; exit 1; }
rm -f "$ready"

for i in $(seq "$workers"); do
  FAENA_WORKER_ID="${FAENA_WORKER_ID_PREFIX:-local}-$i" \
  FAENA_MASTER_URL="http://$FAENA_GRPC_ADDR" \
  FAENA_MQTT_URL="mqtt://$FAENA_MQTT_ADDR" \
    "$bin/faena-worker" > /dev/null &
  pids+=($!)
done
python_workers=${FAENA_PYTHON_WORKERS:-0}
if [ "$python_workers" -gt 0 ]; then
  examples/python-worker/run.sh --setup
fi
for i in $(seq "$python_workers"); do
  FAENA_WORKER_ID="${FAENA_WORKER_ID_PREFIX:-local}-py-$i" \
  FAENA_MASTER_URL="http://$FAENA_GRPC_ADDR" \
  FAENA_MQTT_URL="mqtt://$FAENA_MQTT_ADDR" \
    examples/python-worker/run.sh > /dev/null &
  pids+=($!)
done

cat <<MSG

  Faena is running: master + embedded broker + $workers workers (+ $python_workers in Python).
    web page               http://$FAENA_HTTP_ADDR/
    dashboard              http://$FAENA_HTTP_ADDR/dashboard
    REST API               http://$FAENA_HTTP_ADDR/api/jobs
    submit a job           curl -s -H 'content-type: application/json' http://$FAENA_HTTP_ADDR/api/jobs -d '{"kind":"noop","params":{"payload":"hi"}}'
    workers                curl -s http://$FAENA_HTTP_ADDR/api/workers
    Stratum (XMRig)        xmrig -o $FAENA_STRATUM_ADDR -u NAME -p x -a rx/0   (after adding a source:
                           curl -s -H 'content-type: application/json' http://$FAENA_HTTP_ADDR/api/mining/sources -d '{"kind":"daemon","url":"http://127.0.0.1:18081","wallet":"<address>"}')
    watch logs and status  mosquitto_sub -h ${FAENA_MQTT_ADDR%:*} -p ${FAENA_MQTT_ADDR##*:} -t 'faena/#' -v
  Ctrl-C stops everything.

MSG
wait -n "${pids[@]}" || true
echo "a Faena process exited; stopping the rest" >&2
