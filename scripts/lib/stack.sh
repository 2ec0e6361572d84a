# shellcheck shell=bash
# Shared by the Swarm scripts (build, deploy, verify, monitor, logs, scale,
# stop, e2e-swarm). Sourced from the repository root.

. scripts/lib/prereqs.sh

FAENA_STACK=${FAENA_STACK:-faena}
FAENA_WEB_PORT=${FAENA_WEB_PORT:-8888}
FAENA_MQTT_PORT=${FAENA_MQTT_PORT:-1883}
FAENA_TOPIC_PREFIX=${FAENA_TOPIC_PREFIX:-faena}
# What build.sh produced: image names and content tags (see build.sh).
IMAGES_ENV=target/docker/images.env
# The stack's secrets, named "${FAENA_STACK}_<name>" (stack.yml mounts them
# as /run/secrets/faena_<name>).
# shellcheck disable=SC2034 # used by the scripts that source this
SECRETS=(cluster_token api_token mqtt_master_password mqtt_observer_password gemini_api_key
  tls_ca tls_master_cert tls_master_key tls_mosquitto_cert tls_mosquitto_key
  store_url postgres_password tls_postgres_cert tls_postgres_key)

die() {
  echo "$(basename "$0"): $*" >&2
  exit 1
}

say() {
  echo "==> $*" >&2
}

# Prints the comment block at the top of the calling script (its --help).
usage() {
  sed -n '2,/^[^#]/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

# The master's web port serves HTTPS in the stack (FAENA_WEB_TLS, with the
# certificate make-certs.sh signed) and plain HTTP under docker-compose
# (compose.sh sets FAENA_WEB_SCHEME=http). curl trusts the cluster CA.
FAENA_WEB_SCHEME=${FAENA_WEB_SCHEME:-https}
FAENA_TLS_DIR=${FAENA_TLS_DIR:-.faena-tls}

api() {
  echo "$FAENA_WEB_SCHEME://127.0.0.1:$FAENA_WEB_PORT$1"
}

# curl for the master's web port: the cluster CA trusted over https.
web_curl() {
  if [ "$FAENA_WEB_SCHEME" = https ]; then
    curl --cacert "$FAENA_TLS_DIR/ca.pem" "$@"
  else
    curl "$@"
  fi
}

# A Docker engine that answers: installs Debian's docker.io and starts
# dockerd (through systemd when it runs, else in the background) if needed.
need_docker() {
  docker info >/dev/null 2>&1 && return 0
  need_packages dockerd:docker.io
  if [ -d /run/systemd/system ]; then
    systemctl start docker || true
  elif ! pgrep -x dockerd >/dev/null; then
    [ "$(id -u)" -eq 0 ] || die "the Docker engine is not running; start dockerd (as root)"
    say "starting dockerd (log: /var/log/faena-dockerd.log)"
    # In its own session, not a job of this script: it outlives the script.
    (setsid dockerd >/var/log/faena-dockerd.log 2>&1 </dev/null &)
  fi
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && return 0
    sleep 1
  done
  die "the Docker engine did not come up (see /var/log/faena-dockerd.log)"
}

# This node in a swarm, as a manager. Initialises one when there is none:
# FAENA_ADVERTISE_ADDR, else Docker's choice, else loopback (one node).
need_swarm() {
  local state
  state=$(docker info --format '{{.Swarm.LocalNodeState}}')
  case "$state" in
    active)
      [ "$(docker info --format '{{.Swarm.ControlAvailable}}')" = true ] ||
        die "this node is a swarm worker; run the scripts on a manager"
      ;;
    inactive)
      say "initialising a swarm on this node"
      if [ -n "${FAENA_ADVERTISE_ADDR:-}" ]; then
        docker swarm init --advertise-addr "$FAENA_ADVERTISE_ADDR" >/dev/null
      elif ! docker swarm init >/dev/null 2>&1; then
        say "no single address to advertise; using 127.0.0.1 (a one-node swarm; set FAENA_ADVERTISE_ADDR to add nodes)"
        docker swarm init --advertise-addr 127.0.0.1 >/dev/null
      fi
      ;;
    *) die "swarm state is '$state'; fix it with docker swarm (join or leave) first" ;;
  esac
}

load_images() {
  if [ -f "$IMAGES_ENV" ]; then
    set -a
    # shellcheck source=/dev/null
    . "$IMAGES_ENV"
    set +a
  fi
}

# Dies unless each image (faena-NAME, at build.sh's tag) exists here.
need_images() {
  local name var
  for name in "$@"; do
    var=$(echo "FAENA_${name}_TAG" | tr '[:lower:]-' '[:upper:]_')
    docker image inspect "${FAENA_IMAGE_PREFIX:-}faena-$name:${!var:-latest}" >/dev/null 2>&1 ||
      die "image ${FAENA_IMAGE_PREFIX:-}faena-$name:${!var:-latest} not found; run ./scripts/build.sh$([ "$name" = fake-ai ] && echo ' --test') first"
  done
}

# The stack's services and their replicas ("running/desired"), one per line.
service_replicas() {
  docker service ls --filter "label=com.docker.stack.namespace=$FAENA_STACK" --format '{{.Name}} {{.Replicas}}'
}

# secret_of SERVICE NAME: the secret /run/secrets/NAME as a running
# container of the stack's SERVICE (Swarm or docker-compose) on this node
# sees it; empty when there is none.
secret_of() {
  local container
  container=$(docker ps -q --filter "label=com.docker.swarm.service.name=${FAENA_STACK}_$1" | head -n 1)
  if [ -z "$container" ]; then
    container=$(docker ps -q --filter "label=com.docker.compose.project=$FAENA_STACK" \
      --filter "label=com.docker.compose.service=$1" | head -n 1)
  fi
  [ -n "$container" ] || return 0
  docker exec "$container" cat "/run/secrets/$2" 2>/dev/null | tr -d '\r\n' || true
}

# The master's API token, once per script: FAENA_API_TOKEN, else the
# master's secret; empty for a master without one.
load_api_token() {
  API_TOKEN=${FAENA_API_TOKEN:-$(secret_of master faena_api_token)}
}

# curl for the master's API, with the token as a header read from stdin
# (never on a command line).
api_curl() {
  if [ -n "${API_TOKEN:-}" ]; then
    printf 'Authorization: Bearer %s\n' "$API_TOKEN" | web_curl -H @/dev/stdin "$@"
  else
    web_curl "$@"
  fi
}

# mosquitto_sub as the observer. The password comes from
# FAENA_MQTT_OBSERVER_PASSWORD, else from the broker's own secret (on the
# manager that runs it); it goes into a private options file, never argv.
observer_sub() {
  need_packages mosquitto_sub:mosquitto-clients
  local password=${FAENA_MQTT_OBSERVER_PASSWORD:-$(secret_of mosquitto faena_mqtt_observer_password)}
  [ -n "$password" ] || die "no broker container of stack '$FAENA_STACK' on this node; set FAENA_MQTT_OBSERVER_PASSWORD"
  observer_conf=$(mktemp -d)
  trap 'rm -rf "$observer_conf"' EXIT
  trap 'exit 130' INT TERM
  printf -- '-u observer\n-P %s\n' "$password" >"$observer_conf/mosquitto_sub"
  XDG_CONFIG_HOME=$observer_conf mosquitto_sub -h 127.0.0.1 -p "$FAENA_MQTT_PORT" "$@"
}

# Elapsed seconds since $1 (from now_ms), one decimal.
now_ms() {
  date +%s%3N
}
since() {
  local ms=$(($(now_ms) - $1))
  printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100))
}
