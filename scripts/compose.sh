#!/usr/bin/env bash
# Runs Faena on one Docker host with docker-compose (docker-compose.yml), for
# those without a swarm. Same images (./scripts/build.sh first).
#
#   ./scripts/compose.sh up [N]            start or update, with N workers (default 2)
#   ./scripts/compose.sh down [--volumes]  stop; --volumes also deletes the job store
#   ./scripts/compose.sh ps                the containers
#
# Secrets are files in .faena-secrets/ (mode 700), made on first use: a
# generated cluster token, API token (the page and REST API ask for it:
# .faena-secrets/api_token) and broker passwords, and the Gemini key from
# GEMINI_API_KEY or GEMINI_API_KEY_FILE (none: workers offer no Gemini).
# FAENA_WEB_PORT (8888) and FAENA_MQTT_PORT (1883) as for the stack.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/stack.sh
# docker-compose.yml serves the web port without TLS (one trusted host).
FAENA_WEB_SCHEME=http

compose() {
  docker-compose --compatibility -p "$FAENA_STACK" -f docker-compose.yml "$@"
}

secrets_dir() {
  mkdir -p .faena-secrets
  chmod 700 .faena-secrets
  local name
  for name in cluster_token api_token mqtt_master_password mqtt_observer_password; do
    [ -s ".faena-secrets/$name" ] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >".faena-secrets/$name"
  done
  if [ ! -e .faena-secrets/gemini_api_key ]; then
    if [ -n "${GEMINI_API_KEY_FILE:-}" ]; then
      cp "$GEMINI_API_KEY_FILE" .faena-secrets/gemini_api_key
    elif [ -n "${GEMINI_API_KEY:-}" ]; then
      printf '%s' "$GEMINI_API_KEY" >.faena-secrets/gemini_api_key
    else
      printf '\n' >.faena-secrets/gemini_api_key
    fi
  fi
  # Bind-mounted as they are: the services' own users must read them (the
  # directory keeps other local users out).
  chmod 644 .faena-secrets/*
}

case "${1:-}" in
  -h | --help | "") usage; exit 0 ;;
  up)
    n=${2:-2}
    [[ "$n" =~ ^[0-9]+$ ]] || die "N must be a whole number (got '$n')"
    need_docker
    need_packages docker-compose:docker-compose
    load_images
    secrets_dir
    need_images master worker mosquitto
    compose up -d --remove-orphans --scale "worker=$n"
    say "Faena runs: http://127.0.0.1:$FAENA_WEB_PORT/ ($n workers); ./scripts/compose.sh down stops it"
    ;;
  down)
    need_packages docker-compose:docker-compose
    case "${2:-}" in
      "") compose down ;;
      --volumes) compose down --volumes ;;
      *) die "unknown option '$2' (see --help)" ;;
    esac
    ;;
  ps)
    need_packages docker-compose:docker-compose
    compose ps
    ;;
  *) die "unknown command '$1' (see --help)" ;;
esac
