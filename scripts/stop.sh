#!/usr/bin/env bash
# Removes the Faena stack. Keeps the volumes (job store, broker sessions) and
# the secrets unless asked, so a later deploy.sh carries on where this left.
#
#   ./scripts/stop.sh [--volumes] [--secrets]
#
#   --volumes   also delete the master's job store and the broker's data
#   --secrets   also delete the secrets (token, broker passwords, Gemini key)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/stack.sh

volumes=0 secrets=0
for arg in "$@"; do
  case "$arg" in
    -h | --help) usage; exit 0 ;;
    --volumes) volumes=1 ;;
    --secrets) secrets=1 ;;
    *) die "unknown option '$arg' (see --help)" ;;
  esac
done
docker info >/dev/null 2>&1 || die "no Docker engine answers (is dockerd running?)"

if [ -n "$(service_replicas)" ]; then
  say "removing stack '$FAENA_STACK'"
  # Removes the services; the network may still be in use by tasks that are
  # draining ("failed to remove some resources"): removed again below.
  docker stack rm "$FAENA_STACK" >/dev/null 2>&1 || true
else
  say "stack '$FAENA_STACK' is not deployed"
fi
# Containers get their stop grace period (workers drain); wait until they and
# the stack's network are gone, so volumes and secrets are free.
for _ in $(seq 120); do
  left=$(docker ps -aq --filter "label=com.docker.stack.namespace=$FAENA_STACK" | wc -l)
  nets=$(docker network ls -q --filter "label=com.docker.stack.namespace=$FAENA_STACK" | wc -l)
  [ "$left" -eq 0 ] && [ "$nets" -eq 0 ] && break
  if [ "$left" -eq 0 ]; then
    docker stack rm "$FAENA_STACK" >/dev/null 2>&1 || true
  fi
  sleep 1
done
[ "$left" -eq 0 ] || die "$left containers of '$FAENA_STACK' still exist after 120 s"
[ "$nets" -eq 0 ] || die "the network of '$FAENA_STACK' is still in use after 120 s (docker network ls)"

if [ "$volumes" = 1 ]; then
  for v in $(docker volume ls -q --filter "label=com.docker.stack.namespace=$FAENA_STACK"); do
    docker volume rm "$v" >/dev/null && say "removed volume $v"
  done
fi
if [ "$secrets" = 1 ]; then
  # mqtt_worker_password: the shared worker account of earlier releases.
  for s in "${SECRETS[@]/#/${FAENA_STACK}_}" "${FAENA_STACK}_mqtt_worker_password"; do
    if docker secret inspect "$s" >/dev/null 2>&1; then
      docker secret rm "$s" >/dev/null && say "removed secret $s"
    fi
  done
fi
say "stopped"
