#!/bin/bash
# faena-healthcheck PORT PATH: exits 0 when 127.0.0.1:PORT/PATH answers 200.
# Plain HTTP through bash's /dev/tcp (the worker image has no curl); a
# master serving its web port over HTTPS (FAENA_WEB_TLS=true) is asked with
# curl, trusting the cluster CA.
set -u
case "${FAENA_WEB_TLS:-false}" in
  true | 1 | yes)
    ca=()
    [ -n "${FAENA_TLS_CA_FILE:-}" ] && ca=(--cacert "$FAENA_TLS_CA_FILE")
    exec curl -fsS --max-time 5 -o /dev/null "${ca[@]}" "https://127.0.0.1:$1$2"
    ;;
esac
exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$2" >&3
IFS= read -r -t 5 status <&3 || exit 1
case "$status" in
  "HTTP/1."?" 200"*) exit 0 ;;
  *) echo "unhealthy: $status" >&2; exit 1 ;;
esac
