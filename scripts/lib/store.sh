# shellcheck shell=bash
# The stack's job store, for deploy.sh: the PostgreSQL secrets, the guard
# against silently leaving a SQLite store behind, and the move from SQLite.
# Sourced after stack.sh; uses deploy.sh's store_url_file, files, resolve and
# stack_deploy.

# The store URL secret: from --store-url-file, or made with a generated
# password for the stack's own PostgreSQL (which initialises its faena role
# with the same password, from its own secret).
store_secrets() {
  local url_secret="${FAENA_STACK}_store_url" pw_secret="${FAENA_STACK}_postgres_password" pw
  if [ -n "$store_url_file" ]; then
    if create_secret "$url_secret" <"$store_url_file"; then
      say "created secret $url_secret from $store_url_file"
    else
      say "secret $url_secret exists and is kept (to replace it: ./scripts/stop.sh --secrets)"
    fi
    return 0
  fi
  if docker secret inspect "$pw_secret" >/dev/null 2>&1; then
    docker secret inspect "$url_secret" >/dev/null 2>&1 ||
      die "secret $pw_secret exists without $url_secret; remove both (./scripts/stop.sh --secrets) and deploy again"
    return 0
  fi
  docker secret inspect "$url_secret" >/dev/null 2>&1 &&
    die "secret $url_secret names a store given before (--store-url-file); deploy with it again, or remove it (./scripts/stop.sh --secrets)"
  pw=$(random_secret)
  printf '%s' "$pw" | create_secret "$pw_secret"
  printf 'postgres://faena:%s@postgres:5432/faena?sslmode=verify-full&sslrootcert=/run/secrets/faena_tls_ca' "$pw" |
    create_secret "$url_secret"
  say "created secrets $pw_secret and $url_secret (generated password)"
}

# The master service's secrets, space-separated ("" when it is not deployed).
master_secrets() {
  docker service inspect "${FAENA_STACK}_master" \
    --format '{{range .Spec.TaskTemplate.ContainerSpec.Secrets}}{{.SecretName}} {{end}}' 2>/dev/null || true
}

# A stack already running on SQLite does not switch to an empty PostgreSQL
# store without being told how its jobs move.
refuse_sqlite_switch() {
  docker service inspect "${FAENA_STACK}_master" >/dev/null 2>&1 || return 0
  [[ " $(master_secrets) " == *" ${FAENA_STACK}_store_url "* ]] && return 0
  die "stack '$FAENA_STACK' keeps its jobs in SQLite on the manager's master-data volume.
  Move them into PostgreSQL:  ./scripts/deploy.sh --move-sqlite-store [--store-url-file FILE]
  or stay on SQLite:          ./scripts/deploy.sh --store sqlite"
}

# Waits until the stack's postgres container on this node is healthy.
wait_postgres() {
  local c
  for _ in $(seq 180); do
    c=$(docker ps -q --filter "label=com.docker.swarm.service.name=${FAENA_STACK}_postgres" --filter health=healthy | head -n 1)
    [ -n "$c" ] && return 0
    sleep 1
  done
  die "the stack's PostgreSQL is not healthy after 180 s (docker service ps ${FAENA_STACK}_postgres)"
}

# Stops the master, deploys the store, copies the SQLite store from the
# master's volume with `faena store copy` (in a one-off container of the
# master's image on the stack's network), and leaves the master to start
# on PostgreSQL in the deploy that follows. The SQLite file stays on the
# volume as it was. The volume is local: run this on the manager where the
# master ran.
move_sqlite_store() {
  local volume="${FAENA_STACK}_master-data" work url
  docker volume inspect "$volume" >/dev/null 2>&1 ||
    die "no volume $volume on this node: run --move-sqlite-store on the manager where the master ran"
  if docker service inspect "${FAENA_STACK}_master" >/dev/null 2>&1; then
    say "stopping the master (its store must not change while it is copied)"
    docker service scale --detach=false "${FAENA_STACK}_master=0" >/dev/null
  fi
  FAENA_MASTER_REPLICAS=0 stack_deploy
  work=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now: work is local
  trap "rm -rf '$work'" RETURN
  if [ -n "$store_url_file" ]; then
    url=$(cat "$store_url_file")
  else
    wait_postgres
    url="postgres://faena:$(secret_of postgres faena_postgres_password)@postgres:5432/faena?sslmode=verify-full&sslrootcert=/run/secrets/faena_tls_ca"
  fi
  # Read by the copy as a file, never an argument or an environment value.
  (umask 077 && printf '%s' "$url" >"$work/store-url")
  say "copying the SQLite store into PostgreSQL (faena store copy)"
  docker run --rm --user 0:0 --network "${FAENA_STACK}_faena" \
    -v "$volume:/var/lib/faena" -v "$work/store-url:/run/faena/store-url:ro" \
    -v "$(realpath "$FAENA_TLS_DIR/ca.pem"):/run/secrets/faena_tls_ca:ro" \
    -e FAENA_STORE_URL_FILE=/run/faena/store-url --entrypoint faena \
    "${FAENA_IMAGE_PREFIX:-}faena-master:${FAENA_MASTER_TAG:-latest}" \
    store copy --from sqlite:/var/lib/faena/faena.db >&2 ||
    die "the copy failed; the master stays stopped. Fix the cause and run --move-sqlite-store again (it resumes)"
}
