#!/bin/sh
# Renders Faena's Mosquitto configuration (password file, ACL, mosquitto.conf)
# into a run directory and starts the broker in its place (exec), so the
# broker gets SIGTERM directly. The stack's image runs it as its entrypoint;
# the tests run the same script against Debian's mosquitto.
#
# Passwords come from files (Docker secrets), one per account:
#   FAENA_MQTT_MASTER_PASSWORD_FILE    (default /run/secrets/faena_mqtt_master_password)
#   FAENA_MQTT_WORKER_PASSWORD_FILE    (default /run/secrets/faena_mqtt_worker_password)
#   FAENA_MQTT_OBSERVER_PASSWORD_FILE  (default /run/secrets/faena_mqtt_observer_password)
# TLS (mqtts), when the certificate and key files exist (scripts/make-certs.sh):
#   MOSQUITTO_TLS_CERT_FILE  (default /run/secrets/faena_tls_mosquitto_cert)
#   MOSQUITTO_TLS_KEY_FILE   (default /run/secrets/faena_tls_mosquitto_key)
#   MOSQUITTO_TLS_PORT       TLS listener port (default 8883), beside the plain one
# Other settings:
#   FAENA_TOPIC_PREFIX  topic prefix the ACL covers   (default faena)
#   MOSQUITTO_PORT      the services' listener port   (default 1883)
#   MOSQUITTO_OBSERVER_PORT  the observers' listener  (default 1884)
#   MOSQUITTO_BIND      listener address              (default 0.0.0.0)
#   MOSQUITTO_RUN_DIR   rendered files                (default /mosquitto/run)
#   MOSQUITTO_DATA_DIR  persistence                   (default /mosquitto/data)
#   MOSQUITTO_USER      user to run as when started as root (default mosquitto)
#   MOSQUITTO_BIN       the broker                    (default mosquitto on PATH)
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
: > "$run/passwd.tmp"
: > "$run/passwd-observer.tmp"
for account in master worker observer; do
  var=$(echo "FAENA_MQTT_${account}_PASSWORD_FILE" | tr '[:lower:]' '[:upper:]')
  file=""
  eval "file=\${$var:-/run/secrets/faena_mqtt_${account}_password}"
  if [ ! -r "$file" ]; then
    echo "setup.sh: no password for the $account account: cannot read $file ($var)" >&2
    exit 1
  fi
  password=$(head -n 1 "$file" | tr -d '\r')
  if [ -z "$password" ]; then
    echo "setup.sh: the $account password in $file is empty" >&2
    exit 1
  fi
  # Plain text first, hashed in place below: the password never goes on a
  # command line. The observer's account lives on its own listener.
  if [ "$account" = observer ]; then
    printf '%s:%s\n' "$account" "$password" >> "$run/passwd-observer.tmp"
    # Defaults for mosquitto_sub run with XDG_CONFIG_HOME=$run (the health check).
    printf -- '-u observer\n-P %s\n-p %s\n' "$password" "${MOSQUITTO_OBSERVER_PORT:-1884}" > "$run/mosquitto_sub"
  else
    printf '%s:%s\n' "$account" "$password" >> "$run/passwd.tmp"
  fi
done
for f in passwd passwd-observer; do
  mosquitto_passwd -U "$run/$f.tmp"
  mv "$run/$f.tmp" "$run/$f"
done

user=${MOSQUITTO_USER:-mosquitto}
sed "s/@PREFIX@/$prefix/g" "$here/acl.in" > "$run/acl"
sed "s/@PREFIX@/$prefix/g" "$here/acl-observer.in" > "$run/acl-observer"
sed -e "s#@PORT@#${MOSQUITTO_PORT:-1883}#" -e "s#@OBSERVER_PORT@#${MOSQUITTO_OBSERVER_PORT:-1884}#" \
    -e "s#@BIND@#${MOSQUITTO_BIND:-0.0.0.0}#" \
    -e "s#@USER@#$user#" -e "s#@RUN@#$run#" -e "s#@DATA@#$data#" "$here/mosquitto.conf.in" > "$run/mosquitto.conf"

cert=${MOSQUITTO_TLS_CERT_FILE:-/run/secrets/faena_tls_mosquitto_cert}
key=${MOSQUITTO_TLS_KEY_FILE:-/run/secrets/faena_tls_mosquitto_key}
if [ -r "$cert" ] && [ -r "$key" ]; then
  # Copied so the broker's own user can read them after it drops root.
  cp "$cert" "$run/tls.pem"
  cp "$key" "$run/tls.key"
  cat >> "$run/mosquitto.conf" <<EOF

# mqtts: the services' accounts and ACL, over TLS 1.2+ (the stack's services use it).
listener ${MOSQUITTO_TLS_PORT:-8883} ${MOSQUITTO_BIND:-0.0.0.0}
allow_anonymous false
password_file $run/passwd
acl_file $run/acl
certfile $run/tls.pem
keyfile $run/tls.key
tls_version tlsv1.2
EOF
  echo "setup.sh: mqtts on port ${MOSQUITTO_TLS_PORT:-8883}" >&2
fi

# Started as root, Mosquitto drops to MOSQUITTO_USER, which must read these.
if [ "$(id -u)" = 0 ] && [ "$user" != root ]; then
  chown -R "$user" "$run" "$data"
fi

exec "${MOSQUITTO_BIN:-mosquitto}" -c "$run/mosquitto.conf"
