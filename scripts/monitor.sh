#!/usr/bin/env bash
# Watches a deployed Faena stack: worker and master status as the broker
# carries it (MQTT, read-only observer account) and the queue as the master's
# API reports it.
#
#   ./scripts/monitor.sh [--interval SECONDS] [--once]
#
# Live (default): a worker table and the queue every --interval (default 5 s),
# with each status change from MQTT printed as it arrives. Ctrl-C stops.
# --once: one snapshot (workers from the API, retained status from MQTT,
# queue), then exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/stack.sh

interval=5 once=0
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --interval)
      [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || die "--interval needs seconds"
      interval=$2
      shift
      ;;
    --once) once=1 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done
need_packages curl:curl jq:jq
docker info >/dev/null 2>&1 || die "no Docker engine answers (is dockerd running?)"
load_api_token

# "prefix/workers/ID/status {json}" -> a readable line, when the state or
# the number of running units changed (workers repeat their status often).
status_lines() {
  local topic payload who what rate
  declare -A last=()
  while read -r topic payload; do
    IFS=$'\t' read -r who what rate < <(echo "$payload" | jq -r '
      [(if .worker_id then "worker \(.worker_id)" else "master" end),
       "\(.state)" + (if .slots then "  running \(.running)/\(.slots)" else "" end),
       (if (.hashrate // 0) > 0 then "  \(.hashrate | floor) H/s" else "" end)] | @tsv' 2>/dev/null) ||
      { echo "$topic (unreadable payload)"; continue; }
    [ "${last[$who]:-}" = "$what" ] && continue
    last[$who]=$what
    echo "$(date +%H:%M:%S)  mqtt  $who: $what$rate"
  done
}

snapshot() {
  local workers metrics
  if ! workers=$(api_curl -fsS --max-time 5 "$(api /api/workers)"); then
    echo "$(date +%H:%M:%S)  master not answering at $(api /api/workers)"
    return 0
  fi
  metrics=$(web_curl -fsS --max-time 5 "$(api /metrics)" || true)
  metric() {
    echo "$metrics" | awk -v m="$1" '$1 == m { printf "%d", $2; found = 1 } END { if (!found) printf "?" }'
  }
  echo "$(date +%H:%M:%S)  queue: high $(metric 'faena_queue_depth{priority="high"}')  normal $(metric 'faena_queue_depth{priority="normal"}')  low $(metric 'faena_queue_depth{priority="low"}')  | running $(metric 'faena_jobs_active{state="running"}')  | workers $(echo "$workers" | jq ".workers | length")"
  echo "$workers" | jq -r '
    ["WORKER", "STATE", "RUNNING", "AI", "H/S", "MODES", "PROVIDERS", "SEEN"],
    (.workers | sort_by(.id)[] | [.id, .state, "\(.running)/\(.slots)", "\(.ai_slots)", (.hashrate | floor | tostring),
      (.randomx_modes | join(",")), (.ai_providers | join(",") | if . == "" then "-" else . end), "\(.last_seen_ms) ms"])
    | @tsv' | column -t -s $'\t' | sed 's/^/  /'
}

topics=(-t "$FAENA_TOPIC_PREFIX/workers/+/status" -t "$FAENA_TOPIC_PREFIX/master/status")
if [ "$once" = 1 ]; then
  snapshot
  echo "retained status on the broker:"
  observer_sub -v --retained-only -W 2 "${topics[@]}" 2>/dev/null | status_lines || true
  exit 0
fi

(observer_sub -v "${topics[@]}" | status_lines) &
watcher=$!
# The watcher and what it started (mosquitto_sub), children first.
kill_tree() {
  local child
  for child in $(pgrep -P "$1"); do
    kill_tree "$child"
  done
  kill "$1" 2>/dev/null || true
}
trap 'kill_tree "$watcher"' EXIT
trap 'exit 0' INT TERM
while :; do
  snapshot
  sleep "$interval"
done
