#!/usr/bin/env bash
# Scales the stack's workers or masters and waits until the replicas run.
#
#   ./scripts/scale.sh worker N
#   ./scripts/scale.sh master N
#
# Masters scale on a PostgreSQL store (the default): one leads, the others
# stand by and pass their clients on to it, and lead within seconds when it
# dies. On SQLite (deploy.sh --store sqlite) the master owns one file and
# runs exactly once; so does the broker, which holds the sessions.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/stack.sh

case "${1:-}" in
  -h | --help) usage; exit 0 ;;
esac
[ $# -eq 2 ] || die "usage: scale.sh worker|master N (see --help)"
service=$1 n=$2
case "$service" in
  worker | master) ;;
  mosquitto) die "mosquitto runs exactly once (one broker holds the sessions); 'worker' and 'master' scale" ;;
  *) die "no service '$service' to scale; 'worker' and 'master' scale" ;;
esac
[[ "$n" =~ ^[0-9]+$ ]] || die "N must be a whole number (got '$n')"
docker info >/dev/null 2>&1 || die "no Docker engine answers (is dockerd running?)"
docker service inspect "${FAENA_STACK}_$service" >/dev/null 2>&1 ||
  die "stack '$FAENA_STACK' has no $service service; deploy it first (./scripts/deploy.sh)"
if [ "$service" = master ]; then
  . scripts/lib/store.sh
  [[ " $(master_secrets) " == *" ${FAENA_STACK}_store_url "* ]] ||
    die "the master keeps its jobs in SQLite here and runs once; move to PostgreSQL first (./scripts/deploy.sh --move-sqlite-store)"
  [ "$n" -ge 1 ] || die "at least one master (0 stops the stack's API; use ./scripts/stop.sh)"
fi

say "scaling ${FAENA_STACK}_$service to $n"
docker service scale --detach=false "${FAENA_STACK}_$service=$n" >/dev/null
service_replicas | grep "^${FAENA_STACK}_$service "
