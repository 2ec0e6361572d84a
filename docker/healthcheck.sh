#!/bin/bash
# faena-healthcheck PORT PATH: exits 0 when http://127.0.0.1:PORT/PATH answers
# 200. Bash's /dev/tcp, so the images need no curl.
set -u
exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$2" >&3
IFS= read -r -t 5 status <&3 || exit 1
case "$status" in
  "HTTP/1."?" 200"*) exit 0 ;;
  *) echo "unhealthy: $status" >&2; exit 1 ;;
esac
