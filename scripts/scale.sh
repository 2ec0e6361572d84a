#!/usr/bin/env bash
# Scales the stack's workers and waits until the replicas run.
#
#   ./scripts/scale.sh worker N
#
# Only workers scale: the master owns one store file and the broker one set
# of sessions, so each runs once (Swarm restarts them when they fail).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/stack.sh

case "${1:-}" in
  -h | --help) usage; exit 0 ;;
esac
[ $# -eq 2 ] || die "usage: scale.sh worker N (see --help)"
service=$1 n=$2
case "$service" in
  worker) ;;
  master | mosquitto) die "$service runs exactly once (one store, one broker); only 'worker' scales" ;;
  *) die "no service '$service' to scale; only 'worker' scales" ;;
esac
[[ "$n" =~ ^[0-9]+$ ]] || die "N must be a whole number (got '$n')"
docker info >/dev/null 2>&1 || die "no Docker engine answers (is dockerd running?)"
docker service inspect "${FAENA_STACK}_worker" >/dev/null 2>&1 ||
  die "stack '$FAENA_STACK' has no worker service; deploy it first (./scripts/deploy.sh)"

say "scaling ${FAENA_STACK}_worker to $n"
docker service scale --detach=false "${FAENA_STACK}_worker=$n" >/dev/null
service_replicas | grep "^${FAENA_STACK}_worker "
