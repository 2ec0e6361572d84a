#!/bin/bash
# faena-postgres: the store's PostgreSQL in the stack (docker/postgres.Dockerfile).
#
# Runs as root only to prepare: the TLS key is copied where the server may
# read it (owned by postgres, 0600, as PostgreSQL insists), and a new data
# directory is initialised with a `faena` role and database whose password
# comes from FAENA_POSTGRES_PASSWORD_FILE (never an argument or a log line).
# Then the server replaces this script as PID 1, as the postgres user.
#
#   FAENA_POSTGRES_PASSWORD_FILE  the faena role's password (required)
#   FAENA_POSTGRES_TLS_CERT_FILE, FAENA_POSTGRES_TLS_KEY_FILE
#                                 the server's certificate and key; with them
#                                 the network gets TLS only (hostssl)
#   FAENA_POSTGRES_ARGS           extra `-c name=value` settings
set -euo pipefail
PGDATA=${PGDATA:-/var/lib/postgresql/data}
run_dir=/var/run/postgresql

die() {
  echo "faena-postgres: $*" >&2
  exit 1
}
as_postgres() {
  setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
}

pw_file=${FAENA_POSTGRES_PASSWORD_FILE:-}
if [ -z "$pw_file" ] || [ ! -s "$pw_file" ]; then
  die "FAENA_POSTGRES_PASSWORD_FILE must name a non-empty file"
fi
mkdir -p "$PGDATA" "$run_dir"
chown postgres:postgres "$PGDATA" "$run_dir"
chmod 0700 "$PGDATA"

tls=()
if [ -n "${FAENA_POSTGRES_TLS_CERT_FILE:-}" ]; then
  if [ ! -r "$FAENA_POSTGRES_TLS_CERT_FILE" ] || [ ! -r "${FAENA_POSTGRES_TLS_KEY_FILE:-}" ]; then
    die "FAENA_POSTGRES_TLS_CERT_FILE and FAENA_POSTGRES_TLS_KEY_FILE must both be readable"
  fi
  install -o postgres -g postgres -m 0644 "$FAENA_POSTGRES_TLS_CERT_FILE" "$run_dir/server.pem"
  install -o postgres -g postgres -m 0600 "$FAENA_POSTGRES_TLS_KEY_FILE" "$run_dir/server.key"
  tls=(-c ssl=on -c "ssl_cert_file=$run_dir/server.pem" -c "ssl_key_file=$run_dir/server.key")
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  echo "faena-postgres: initialising $PGDATA" >&2
  as_postgres initdb -D "$PGDATA" --username=postgres --auth-local=peer --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  # Only on the socket while the role is made.
  as_postgres pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w -s start
  {
    printf "SET password_encryption = 'scram-sha-256';\n"
    printf "CREATE ROLE faena LOGIN PASSWORD %s;\n" "$(sed -e "s/'/''/g" -e "s/^/'/" -e "s/\$/'/" "$pw_file" | head -n 1)"
    printf "CREATE DATABASE faena OWNER faena;\n"
  } | as_postgres psql -q -v ON_ERROR_STOP=1 -U postgres -d postgres >/dev/null
  as_postgres pg_ctl -D "$PGDATA" -m fast -w -s stop
  # The network logs in with a password; with a certificate, over TLS only.
  {
    echo "local all all peer"
    if [ ${#tls[@]} -gt 0 ]; then
      echo "hostssl all all all scram-sha-256"
    else
      echo "host all all all scram-sha-256"
    fi
  } >"$PGDATA/pg_hba.conf"
  chown postgres:postgres "$PGDATA/pg_hba.conf"
fi

# shellcheck disable=SC2206 # word splitting is what FAENA_POSTGRES_ARGS asks for
extra=(${FAENA_POSTGRES_ARGS:-})
exec setpriv --reuid=postgres --regid=postgres --init-groups -- \
  postgres -D "$PGDATA" -c listen_addresses='*' -c port=5432 -c "unix_socket_directories=$run_dir" \
  "${tls[@]}" "${extra[@]}"
