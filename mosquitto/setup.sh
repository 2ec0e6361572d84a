#!/bin/sh
# Renders Faena's Mosquitto configuration into a run directory and starts
# the broker in its place (exec), so the broker gets SIGTERM directly. The
# stack's image runs it as its entrypoint; the tests run the same script
# against Debian's mosquitto.
#
# Two listeners, each with its own accounts (per_listener_settings):
# - the services' listener (mqtts on MOSQUITTO_TLS_PORT when the TLS files
#   exist, else plain MQTT on MOSQUITTO_PORT), under Mosquitto's dynamic
#   security plugin: the master's account is its admin and gives every
#   worker an account and a role of its own, confined to its own topics
#   and bound to its client id (the master runs with FAENA_MQTT_DYNSEC=true).
#   Worker accounts live until the broker restarts; a refused worker asks
#   the master for a new one.
# - the observers' listener (MOSQUITTO_OBSERVER_PORT): the observer account
#   alone, reading status and logs, publishing nothing.
#
# Passwords come from files (Docker secrets):
#   FAENA_MQTT_MASTER_PASSWORD_FILE    (default /run/secrets/faena_mqtt_master_password)
#   FAENA_MQTT_OBSERVER_PASSWORD_FILE  (default /run/secrets/faena_mqtt_observer_password)
# TLS (mqtts), when the certificate and key files exist (scripts/make-certs.sh):
#   MOSQUITTO_TLS_CERT_FILE  (default /run/secrets/faena_tls_mosquitto_cert)
#   MOSQUITTO_TLS_KEY_FILE   (default /run/secrets/faena_tls_mosquitto_key)
#   MOSQUITTO_TLS_PORT       the services' TLS port (default 8883)
# Other settings:
#   FAENA_TOPIC_PREFIX  topic prefix the rules cover   (default faena)
#   MOSQUITTO_PORT      the services' plain port       (default 1883), without TLS
#   MOSQUITTO_OBSERVER_PORT  the observers' listener   (default 1884)
#   MOSQUITTO_BIND      listener address              (default 0.0.0.0)
#   MOSQUITTO_RUN_DIR   rendered files                (default /mosquitto/run)
#   MOSQUITTO_DATA_DIR  persistence                   (default /mosquitto/data)
#   MOSQUITTO_USER      user to run as when started as root (default mosquitto)
#   MOSQUITTO_BIN       the broker                    (default mosquitto on PATH)
#   MOSQUITTO_DYNSEC_PLUGIN  the plugin (default: found under /usr/lib)

set -eu

here=$(cd "$(dirname "$0")" && pwd)
prefix=${FAENA_TOPIC_PREFIX:-faena}
run=${MOSQUITTO_RUN_DIR:-/mosquitto/run}
data=${MOSQUITTO_DATA_DIR:-/mosquitto/data}

case "$prefix" in
  ''|*[!A-Za-z0-9_.-]*) echo "setup.sh: FAENA_TOPIC_PREFIX must be letters, digits, _ . - (got '$prefix')" >&2; exit 2 ;;
esac

mkdir -p "$run" "$data"
umask 077

# One line of a password file (Docker secret); fails loudly when absent.
password_of() {
  var=$(echo "FAENA_MQTT_${1}_PASSWORD_FILE" | tr '[:lower:]' '[:upper:]')
  file=""
  eval "file=\${$var:-/run/secrets/faena_mqtt_${1}_password}"
  if [ ! -r "$file" ]; then
    echo "setup.sh: no password for the $1 account: cannot read $file ($var)" >&2
    exit 1
  fi
  password=$(head -n 1 "$file" | tr -d '\r')
  if [ -z "$password" ]; then
    echo "setup.sh: the $1 password in $file is empty" >&2
    exit 1
  fi
  printf '%s' "$password"
}

# The observer: a password file hashed in place (the password never goes on
# a command line), and defaults for mosquitto_sub run with
# XDG_CONFIG_HOME=$run (the health check).
observer=$(password_of observer)
printf 'observer:%s\n' "$observer" > "$run/passwd-observer.tmp"
mosquitto_passwd -U "$run/passwd-observer.tmp"
mv "$run/passwd-observer.tmp" "$run/passwd-observer"
printf -- '-u observer\n-P %s\n-p %s\n' "$observer" "${MOSQUITTO_OBSERVER_PORT:-1884}" > "$run/mosquitto_sub"

# The master, in the dynamic security plugin's file: its password hashed by
# mosquitto_ctrl (on its command line, inside this container, for the
# moment it runs), then the rules below. Made afresh on every start.
plugin=${MOSQUITTO_DYNSEC_PLUGIN:-}
for candidate in /usr/lib/*/mosquitto_dynamic_security.so /usr/lib/mosquitto_dynamic_security.so; do
  if [ -z "$plugin" ] && [ -r "$candidate" ]; then plugin=$candidate; fi
done
if [ -z "$plugin" ] || [ ! -r "$plugin" ]; then
  echo "setup.sh: Mosquitto's dynamic security plugin is missing (mosquitto >= 2.0; MOSQUITTO_DYNSEC_PLUGIN)" >&2
  exit 1
fi
rm -f "$run/dynsec-init.json"
master=$(password_of master)
mosquitto_ctrl dynsec init "$run/dynsec-init.json" master "$master" >/dev/null
field() { sed -n "s/^[[:space:]]*\"$1\":[[:space:]]*\"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}[[:space:]]*$/\1/p" "$run/dynsec-init.json" | head -n 1; }
hash=$(field password)
salt=$(field salt)
iterations=$(field iterations)
rm -f "$run/dynsec-init.json"
if [ -z "$hash" ] || [ -z "$salt" ] || [ -z "$iterations" ]; then
  echo "setup.sh: could not read the master's hashed password from mosquitto_ctrl" >&2
  exit 1
fi
sed -e "s/@PREFIX@/$prefix/g" -e "s#@MASTER_HASH@#$hash#" -e "s#@MASTER_SALT@#$salt#" \
    -e "s#@MASTER_ITERATIONS@#$iterations#" "$here/dynamic-security.json.in" > "$run/dynamic-security.json"

user=${MOSQUITTO_USER:-mosquitto}
sed "s/@PREFIX@/$prefix/g" "$here/acl-observer.in" > "$run/acl-observer"
sed -e "s#@OBSERVER_PORT@#${MOSQUITTO_OBSERVER_PORT:-1884}#" -e "s#@BIND@#${MOSQUITTO_BIND:-0.0.0.0}#" \
    -e "s#@USER@#$user#" -e "s#@RUN@#$run#" -e "s#@DATA@#$data#" "$here/mosquitto.conf.in" > "$run/mosquitto.conf"

# The services' listener: mqtts when the certificate and key exist.
cert=${MOSQUITTO_TLS_CERT_FILE:-/run/secrets/faena_tls_mosquitto_cert}
key=${MOSQUITTO_TLS_KEY_FILE:-/run/secrets/faena_tls_mosquitto_key}
{
  echo
  echo "# The services: the master's account and the workers' (dynamic security)."
  if [ -r "$cert" ] && [ -r "$key" ]; then
    # Copied so the broker's own user can read them after it drops root.
    cp "$cert" "$run/tls.pem"
    cp "$key" "$run/tls.key"
    echo "listener ${MOSQUITTO_TLS_PORT:-8883} ${MOSQUITTO_BIND:-0.0.0.0}"
    echo "certfile $run/tls.pem"
    echo "keyfile $run/tls.key"
    echo "tls_version tlsv1.2"
    echo "setup.sh: services on mqtts port ${MOSQUITTO_TLS_PORT:-8883}" >&2
  else
    echo "listener ${MOSQUITTO_PORT:-1883} ${MOSQUITTO_BIND:-0.0.0.0}"
    echo "setup.sh: services on plain MQTT port ${MOSQUITTO_PORT:-1883} (no TLS files)" >&2
  fi
  echo "allow_anonymous false"
  echo "plugin $plugin"
  echo "plugin_opt_config_file $run/dynamic-security.json"
} >> "$run/mosquitto.conf"

# Started as root, Mosquitto drops to MOSQUITTO_USER, which must read these.
if [ "$(id -u)" = 0 ] && [ "$user" != root ]; then
  chown -R "$user" "$run" "$data"
fi

exec "${MOSQUITTO_BIN:-mosquitto}" -c "$run/mosquitto.conf"
