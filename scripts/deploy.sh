#!/usr/bin/env bash
# Deploys (or updates) the Faena stack on this Docker Swarm manager.
#
#   ./scripts/deploy.sh [--test] [--monitoring] [--autoscale MIN:MAX] [--gemini-key-file FILE]
#                       [--store postgres|sqlite] [--store-url-file FILE] [--move-sqlite-store]
#
# Initialises a swarm when this node is in none, creates the secrets that are
# missing — a generated cluster token and broker passwords (master, worker,
# observer), the cluster CA and TLS certificates (scripts/make-certs.sh), and
# the Gemini key — then runs docker stack deploy with the
# images build.sh made. Safe to re-run: existing secrets are kept and only
# services whose image or settings changed are updated (rolling, one at a time).
#
#   --store postgres        the default: jobs, history, mining and live config in
#                           PostgreSQL — the stack's own (stack.postgres.yml: Debian's
#                           PostgreSQL 15 on the manager, TLS, a generated password)
#                           or yours with --store-url-file
#   --store sqlite          one SQLite file on the manager's master-data volume, one
#                           master pinned to it (stack.sqlite.yml; what stacks before
#                           PostgreSQL ran). On PostgreSQL the masters are several
#                           (FAENA_MASTER_REPLICAS, default 2): one leads, any may die
#   --store-url-file FILE   your PostgreSQL: a file holding postgres://user:pw@host/db?…
#                           (sslmode=verify-full&sslrootcert=/run/secrets/faena_tls_ca
#                           trusts the cluster CA); becomes the faena_store_url secret
#   --move-sqlite-store     a stack that ran on SQLite moves to PostgreSQL: the master
#                           stops, `faena store copy` copies its store (resumable: run
#                           again after a failure), then the master starts on PostgreSQL
#   --test                  add stack.test.yml (fake Gemini, light-mode workers)
#   --autoscale MIN:MAX     add stack.autoscale.yml: the master scales the workers
#                           between MIN and MAX on queue wait and backlog
#                           (FAENA_AUTOSCALE_WAIT_MS, _COOLDOWN_SECS, _SETTLE_SECS, _EVERY_MS)
#   --monitoring            add stack.monitoring.yml (Prometheus with Faena's alerts,
#                           on the manager's port ${FAENA_PROMETHEUS_PORT:-9090}; build.sh --monitoring first)
#   --api-token-file FILE   the token the REST API and the web page require
#   FAENA_API_TOKEN         the same, from the environment (default: generated;
#                           read it with: docker exec $(docker ps -qf name=faena_master | head -n1) cat /run/secrets/faena_api_token)
#   --no-api-token          no token: REST and the page open to all who reach the port
#   --gemini-key-file FILE  the Gemini API key, from a file
#   GEMINI_API_KEY / GEMINI_API_KEY_FILE  the same, from the environment
#     (without a key the secret is empty and workers offer no Gemini; to change
#     a key later: ./scripts/stop.sh --secrets, then deploy again)
#   FAENA_STACK=faena  FAENA_WEB_PORT=8888  FAENA_MQTT_PORT=1883
#   FAENA_WORKERS=2 (a re-run keeps the current count unless this is set)
#   FAENA_WORKER_CPUS=2  FAENA_WORKER_MEMORY=3G  FAENA_RANDOMX_MODE=auto
#   REGISTRY=host:port      deploy the images build.sh pushed there
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/stack.sh

files=(-c stack.yml)
gemini_file=${GEMINI_API_KEY_FILE:-}
api_token_file="" open_api=0
store=postgres store_url_file="" move_sqlite=0
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --test) files+=(-c stack.test.yml) ;;
    --monitoring) files+=(-c stack.monitoring.yml) ;;
    --autoscale)
      [ $# -ge 2 ] || die "--autoscale needs MIN:MAX"
      files+=(-c stack.autoscale.yml)
      export FAENA_AUTOSCALE=$2
      shift
      ;;
    --api-token-file)
      [ $# -ge 2 ] || die "--api-token-file needs a file"
      api_token_file=$2
      shift
      ;;
    --no-api-token) open_api=1 ;;
    --store)
      [ $# -ge 2 ] || die "--store needs postgres or sqlite"
      case "$2" in postgres | sqlite) store=$2 ;; *) die "--store $2: give postgres or sqlite" ;; esac
      shift
      ;;
    --store-url-file)
      [ $# -ge 2 ] || die "--store-url-file needs a file"
      store_url_file=$2
      shift
      ;;
    --move-sqlite-store) move_sqlite=1 ;;
    --gemini-key-file)
      [ $# -ge 2 ] || die "--gemini-key-file needs a file"
      gemini_file=$2
      shift
      ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done
[ -z "$gemini_file" ] || [ -r "$gemini_file" ] || die "cannot read the Gemini key file $gemini_file"
[ -z "$api_token_file" ] || [ -r "$api_token_file" ] || die "cannot read the API token file $api_token_file"
[ -z "$store_url_file" ] || [ -r "$store_url_file" ] || die "cannot read the store URL file $store_url_file"
if [ "$store" = sqlite ]; then
  files+=(-c stack.sqlite.yml)
  [ -z "$store_url_file" ] || die "--store-url-file names a PostgreSQL store; it does not go with --store sqlite"
  [ "$move_sqlite" = 0 ] || die "--move-sqlite-store moves into PostgreSQL; it does not go with --store sqlite"
else
  files+=(-c stack.store.yml)
  [ -n "$store_url_file" ] || files+=(-c stack.postgres.yml)
fi

need_docker
need_swarm
load_images
export FAENA_STACK FAENA_WEB_PORT FAENA_MQTT_PORT FAENA_TOPIC_PREFIX

# The images must exist here (or in REGISTRY).
resolve=never
if [ -n "${REGISTRY:-}" ]; then
  resolve=always
  export FAENA_IMAGE_PREFIX="${REGISTRY%/}/"
else
  need_images master worker mosquitto
  if [[ " ${files[*]} " == *" stack.postgres.yml "* ]]; then
    need_images postgres
  fi
  if [[ " ${files[*]} " == *" stack.test.yml "* ]]; then
    need_images fake-ai
  fi
  if [[ " ${files[*]} " == *" stack.monitoring.yml "* ]]; then
    need_images prometheus
  fi
fi

# A re-run keeps the worker count scale.sh set (docker stack deploy would
# reset it to the file's), unless FAENA_WORKERS says otherwise.
if [ -z "${FAENA_WORKERS:-}" ]; then
  current=$(docker service inspect "${FAENA_STACK}_worker" --format '{{.Spec.Mode.Replicated.Replicas}}' 2>/dev/null || true)
  if [ -n "$current" ]; then
    export FAENA_WORKERS=$current
  fi
fi
# The same for the masters on PostgreSQL (SQLite runs exactly one); a stack
# that ran the single master of older releases gets the default two.
if [ -z "${FAENA_MASTER_REPLICAS:-}" ] && [ "$store" = postgres ] && [ "$move_sqlite" = 0 ]; then
  current=$(docker service inspect "${FAENA_STACK}_master" --format '{{.Spec.Mode.Replicated.Replicas}}' 2>/dev/null || true)
  if [ -n "$current" ] && [ "$current" -gt 1 ]; then
    export FAENA_MASTER_REPLICAS=$current
  fi
fi

random_secret() {
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'
}

# Creates a secret from stdin unless it exists (secrets are immutable).
create_secret() {
  local name=$1
  if docker secret inspect "$name" >/dev/null 2>&1; then
    cat >/dev/null
    return 1
  fi
  docker secret create --label "com.faena.stack=$FAENA_STACK" "$name" - >/dev/null
}

for name in cluster_token mqtt_master_password mqtt_observer_password; do
  if random_secret | create_secret "${FAENA_STACK}_$name"; then
    say "created secret ${FAENA_STACK}_$name (generated)"
  fi
done
# TLS between the stack's services: a cluster CA and the master's and the
# broker's certificates (scripts/make-certs.sh; the CA's key stays in
# FAENA_TLS_DIR, default .faena-tls, to sign more later).
if ! docker secret inspect "${FAENA_STACK}_tls_ca" >/dev/null 2>&1 ||
  ! docker secret inspect "${FAENA_STACK}_tls_postgres_cert" >/dev/null 2>&1; then
  FAENA_STACK=$FAENA_STACK ./scripts/make-certs.sh --out "${FAENA_TLS_DIR:-.faena-tls}" --secrets >&2
fi
# The API token: given, generated, or (--no-api-token) empty, which leaves the API open.
api_secret="${FAENA_STACK}_api_token"
if [ -n "$api_token_file" ]; then
  create_secret "$api_secret" <"$api_token_file" && say "created secret $api_secret from $api_token_file"
elif [ -n "${FAENA_API_TOKEN:-}" ]; then
  printf '%s' "$FAENA_API_TOKEN" | create_secret "$api_secret" && say "created secret $api_secret from FAENA_API_TOKEN"
elif [ "$open_api" = 1 ]; then
  printf '\n' | create_secret "$api_secret" && say "created an empty $api_secret: the REST API and the page are open"
else
  random_secret | create_secret "$api_secret" && say "created secret $api_secret (generated)"
fi || say "secret $api_secret exists and is kept (to replace it: ./scripts/stop.sh --secrets)"
if [ -n "$gemini_file" ]; then
  if create_secret "${FAENA_STACK}_gemini_api_key" <"$gemini_file"; then
    say "created secret ${FAENA_STACK}_gemini_api_key from $gemini_file"
  else
    say "secret ${FAENA_STACK}_gemini_api_key exists and is kept (to replace it: ./scripts/stop.sh --secrets)"
  fi
elif [ -n "${GEMINI_API_KEY:-}" ]; then
  if printf '%s' "$GEMINI_API_KEY" | create_secret "${FAENA_STACK}_gemini_api_key"; then
    say "created secret ${FAENA_STACK}_gemini_api_key from GEMINI_API_KEY"
  else
    say "secret ${FAENA_STACK}_gemini_api_key exists and is kept (to replace it: ./scripts/stop.sh --secrets)"
  fi
elif printf '\n' | create_secret "${FAENA_STACK}_gemini_api_key"; then
  say "no Gemini key given: created an empty ${FAENA_STACK}_gemini_api_key (workers offer no Gemini)"
fi

. scripts/lib/store.sh
if [ "$store" = postgres ]; then
  store_secrets
  [ "$move_sqlite" = 1 ] || refuse_sqlite_switch
fi

stack_deploy() {
  say "deploying stack '$FAENA_STACK' from $(printf '%s ' "${files[@]}" | sed 's/-c //g')"
  docker stack deploy --resolve-image "$resolve" --prune "${files[@]}" "$FAENA_STACK" 2>&1 |
    grep -v -e '^Since --detach=false' -e '^In a future release, --detach=false' >&2 || true
}
if [ "$move_sqlite" = 1 ]; then
  move_sqlite_store
fi
stack_deploy
cat >&2 <<MSG

  Stack '$FAENA_STACK' deployed. Next:
    ./scripts/verify.sh            wait until it runs, then check it end to end
    web page and REST API          https://127.0.0.1:$FAENA_WEB_PORT/ (trust ${FAENA_TLS_DIR:-.faena-tls}/ca.pem;
                                   the CLI: faena --ca-file ${FAENA_TLS_DIR:-.faena-tls}/ca.pem --url https://…)
    their access token             docker exec \$(docker ps -qf name=${FAENA_STACK}_master | head -n1) cat /run/secrets/faena_api_token
    ./scripts/monitor.sh           live workers and queue
    ./scripts/logs.sh              log lines from faena/logs (observer account)

MSG
