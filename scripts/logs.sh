#!/usr/bin/env bash
# Shows Faena's logs.
#
#   ./scripts/logs.sh [-n COUNT]            log lines from the faena/logs topic
#   ./scripts/logs.sh SERVICE [-n COUNT]    a service's container logs
#
# Without a service: every component's log lines as JSON, one per line, read
# with mosquitto_sub under the read-only observer account (its password from
# the broker's secret on this manager, or FAENA_MQTT_OBSERVER_PASSWORD); it
# follows until Ctrl-C, or stops after COUNT lines.
# With a service (master, worker, mosquitto): docker service logs, following,
# or the last COUNT lines.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/stack.sh

service="" count=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    -n)
      [[ "${2:-}" =~ ^[0-9]+$ ]] || die "-n needs a count"
      count=$2
      shift
      ;;
    master | worker | mosquitto) service=$1 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
docker info >/dev/null 2>&1 || die "no Docker engine answers (is dockerd running?)"

if [ -n "$service" ]; then
  docker service inspect "${FAENA_STACK}_$service" >/dev/null 2>&1 || die "stack '$FAENA_STACK' has no $service service"
  if [ -n "$count" ]; then
    exec docker service logs --raw --tail "$count" "${FAENA_STACK}_$service"
  fi
  exec docker service logs --raw --follow --tail 20 "${FAENA_STACK}_$service"
fi
args=(-t "$FAENA_TOPIC_PREFIX/logs")
[ -n "$count" ] && args+=(-C "$count")
observer_sub "${args[@]}"
