#!/usr/bin/env bash
# Makes a cluster CA and the certificates Faena's nodes serve TLS with, and
# (with --secrets) stores them as Docker Swarm secrets for the stack.
#
#   ./scripts/make-certs.sh [--out DIR] [--secrets] [--days N]
#
#   --out DIR   where the files go (default: .faena-tls, which git ignores)
#   --secrets   also create the stack's secrets from them, named after the
#               stack (FAENA_STACK, default faena: faena_tls_ca, ...); existing
#               ones are kept (./scripts/stop.sh --secrets, then again, to rotate)
#   --days N    validity of the certificates (default 825)
#
# Files: ca.pem / ca.key (the CA: keep ca.key offline once done), and for
# each server <name>.pem / <name>.key: master (gRPC), mosquitto (mqtts),
# postgres (the store's server in stack.postgres.yml).
# Each certificate names its service (the stack's DNS name), localhost and
# 127.0.0.1; FAENA_TLS_SANS adds more, e.g. "DNS:faena.example.org,IP:10.0.0.5".
# Keys are created 0600. An existing CA in DIR is reused, so new server
# certificates stay trusted by nodes that already have ca.pem.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/prereqs.sh

out=.faena-tls
secrets=false
days=825
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --secrets) secrets=true; shift ;;
    --days) days=$2; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "make-certs.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
need_packages openssl:openssl

mkdir -p "$out"
umask 077
if [ ! -s "$out/ca.key" ] || [ ! -s "$out/ca.pem" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
    -keyout "$out/ca.key" -out "$out/ca.pem" -days "$days" -subj "/CN=Faena cluster CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  echo "made a new cluster CA: $out/ca.pem"
fi

for name in master mosquitto postgres; do
  sans="DNS:$name,DNS:localhost,IP:127.0.0.1${FAENA_TLS_SANS:+,$FAENA_TLS_SANS}"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
    -keyout "$out/$name.key" -out "$out/$name.csr" -subj "/CN=$name" 2>/dev/null
  openssl x509 -req -in "$out/$name.csr" -CA "$out/ca.pem" -CAkey "$out/ca.key" -CAcreateserial \
    -out "$out/$name.pem" -days "$days" -sha256 \
    -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n' "$sans") 2>/dev/null
  rm -f "$out/$name.csr"
  echo "made $out/$name.pem ($sans)"
done
chmod 0644 "$out/ca.pem" "$out/master.pem" "$out/mosquitto.pem" "$out/postgres.pem"

if $secrets; then
  stack=${FAENA_STACK:-faena}
  create() {
    if docker secret inspect "${stack}_$1" >/dev/null 2>&1; then
      echo "secret ${stack}_$1 exists; kept"
    else
      docker secret create --label "com.faena.stack=$stack" "${stack}_$1" "$2" >/dev/null && echo "secret ${stack}_$1 created"
    fi
  }
  create tls_ca "$out/ca.pem"
  create tls_master_cert "$out/master.pem"
  create tls_master_key "$out/master.key"
  create tls_mosquitto_cert "$out/mosquitto.pem"
  create tls_mosquitto_key "$out/mosquitto.key"
  create tls_postgres_cert "$out/postgres.pem"
  create tls_postgres_key "$out/postgres.key"
fi
