#!/usr/bin/env bash
# Checks a deployed Faena stack end to end and prints a table; exits 0 only
# when every check passes.
#
#   ./scripts/verify.sh [--timeout SECONDS] [--no-jobs]
#
# Checks: every service at its desired replicas, the master healthy, the web
# page and Socket.IO answering, every worker registered, then one job of each kind runs: noop, randomx.hash
# (checked against RandomX's reference vector), randomx.mine, ai.query (when a
# worker offers an AI provider; otherwise reported as skipped).
# Waits up to --timeout (default 300 s) for the stack to converge.
# Talks to the master at https://127.0.0.1:$FAENA_WEB_PORT (default 8888),
# trusting $FAENA_TLS_DIR/ca.pem (.faena-tls); FAENA_WEB_SCHEME=http for a
# docker-compose deployment, which serves plain HTTP.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/stack.sh

timeout=300 jobs=1
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --timeout)
      [[ "${2:-}" =~ ^[0-9]+$ ]] || die "--timeout needs seconds"
      timeout=$2
      shift
      ;;
    --no-jobs) jobs=0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done
need_packages curl:curl jq:jq
docker info >/dev/null 2>&1 || die "no Docker engine answers (is dockerd running?)"

deadline=$(($(date +%s) + timeout))
rows=()
failed=0
# row CHECK STATUS START_MS DETAIL
row() {
  rows+=("$1|$2|$(since "$3") s|$4")
  [ "$2" = FAIL ] && failed=1
  printf '  %-14s %-5s %s\n' "$1" "$2" "$4" >&2
}
left() {
  [ "$(date +%s)" -lt "$deadline" ]
}

# 1. Services converged.
t=$(now_ms)
while :; do
  lines=$(service_replicas)
  pending=$(echo "$lines" | awk '{ split($2, r, "/"); if (r[1] != r[2]) print $1 " " $2 }')
  [ -n "$lines" ] && [ -z "$pending" ] && break
  left || break
  sleep 2
done
if [ -z "$lines" ]; then
  row services FAIL "$t" "no services of stack '$FAENA_STACK' (deploy it with ./scripts/deploy.sh)"
elif [ -n "$pending" ]; then
  row services FAIL "$t" "not converged: $(echo "$pending" | tr '\n' ' ')"
else
  row services ok "$t" "$(echo "$lines" | sed "s/^${FAENA_STACK}_//" | tr '\n' ' ')"
fi

load_api_token

# 2. Master healthy.
t=$(now_ms)
health=""
while :; do
  health=$(web_curl -fsS --max-time 5 "$(api /healthz)" 2>/dev/null) && break
  left || break
  sleep 1
done
if [ -n "$health" ] && [ "$(echo "$health" | jq -r .status)" = ok ]; then
  row master ok "$t" "healthz: $(echo "$health" | jq -c .)"
else
  row master FAIL "$t" "no healthy answer from $(api /healthz)"
fi

# The web page, its Socket.IO client and a Socket.IO handshake.
t=$(now_ms)
page=$(web_curl -fsS --max-time 5 "$(api /)" 2>/dev/null || true)
client=$(web_curl -fsS --max-time 5 -o /dev/null -w '%{http_code} %{size_download}' "$(api /vendor/socket.io.min.js)" 2>/dev/null || true)
handshake=$(web_curl -fsS --max-time 5 "$(api '/socket.io/?EIO=4&transport=polling')" 2>/dev/null || true)
if [[ "$page" == *"<html"* ]] && [[ "$client" == 200* ]] && [[ "$handshake" == 0\{*'"sid"'* ]]; then
  row web ok "$t" "page, socket.io client (${client#200 } bytes), Socket.IO handshake"
else
  row web FAIL "$t" "page: ${#page} bytes, client: ${client:-none}, handshake: ${handshake:0:60}"
fi

# 3. Workers registered: as many online as the worker service's replicas.
t=$(now_ms)
want=$(docker service inspect "${FAENA_STACK}_worker" --format '{{.Spec.Mode.Replicated.Replicas}}' 2>/dev/null || echo 0)
online=0
while :; do
  workers=$(api_curl -fsS --max-time 5 "$(api /api/workers)" 2>/dev/null || echo '{"workers": []}')
  online=$(echo "$workers" | jq '[.workers[] | select(.state == "online")] | length')
  [ "$want" -gt 0 ] && [ "$online" -ge "$want" ] && break
  left || break
  sleep 1
done
if [ "$want" -gt 0 ] && [ "$online" -ge "$want" ]; then
  row workers ok "$t" "$online online: $(echo "$workers" | jq -r '[.workers[] | .id] | sort | join(", ")')"
else
  row workers FAIL "$t" "$online of $want workers online"
fi

# 4. One job of each kind.
# run_job KIND PARAMS_JSON: prints the finished job (or nothing on timeout).
run_job() {
  local id job state
  id=$(api_curl -fsS --max-time 10 -XPOST "$(api /api/jobs)" -H 'content-type: application/json' \
    -d "{\"kind\": \"$1\", \"params\": $2}" | jq -r .id) || return 0
  while left; do
    job=$(api_curl -fsS --max-time 10 "$(api "/api/jobs/$id")") || return 0
    state=$(echo "$job" | jq -r .state)
    case "$state" in succeeded | failed | cancelled) echo "$job"; return 0 ;; esac
    sleep 0.5
  done
}
# check_job NAME KIND PARAMS JQ_TEST DETAIL_JQ
check_job() {
  local t job
  t=$(now_ms)
  job=$(run_job "$2" "$3")
  if [ -z "$job" ]; then
    row "$1" FAIL "$t" "no final state before the timeout"
  elif echo "$job" | jq -e "$4" >/dev/null; then
    row "$1" ok "$t" "$(echo "$job" | jq -r "$5")"
  else
    row "$1" FAIL "$t" "$(echo "$job" | jq -c '{state, error, result}' | cut -c1-200)"
  fi
}
if [ "$jobs" = 1 ] && [ "$failed" = 0 ]; then
  check_job noop noop '{"payload": "verify"}' '.state == "succeeded" and .result.payload == "verify"' '"worker " + .worker'
  # RandomX's own test vector (randomx-rs, tests.cpp): key "test key 000", input "This is a test".
  check_job randomx.hash randomx.hash '{"key": "test key 000", "input": "This is a test"}' \
    '.state == "succeeded" and .result.hash == "639183aae1bf4c9a35884cb46b09cad9175f04efd7684e7262a0ac1c2f0b4e3f"' \
    '"hash " + .result.hash[0:16] + "… (reference vector) on " + .worker'
  check_job randomx.mine randomx.mine "{\"key\": \"$(printf verify | od -An -tx1 | tr -d ' \n')\", \"blob\": \"$(printf '07%.0s' $(seq 76))\", \"difficulty\": 50, \"nonce_count\": 200}" \
    '.state == "succeeded" and .result.hashes >= 200' \
    '"\(.result.hashes) hashes, \(.result.shares | length) shares, \(.result.hashrate | floor) H/s"'
  providers=$(echo "$workers" | jq -r '[.workers[] | .ai_providers[]?] | unique | join(" ")')
  if [ -n "$providers" ]; then
    provider=${providers%% *}
    check_job ai.query ai.query "{\"prompt\": \"Say hello to the verify script.\", \"provider\": \"$provider\"}" \
      '.state == "succeeded" and (.result.text | length) > 0' \
      '"\(.result.provider)/\(.result.model): \(.result.text[0:60])"'
  else
    row ai.query skip "$(now_ms)" "no worker offers an AI provider (deploy with a Gemini key)"
  fi
fi

echo
printf '%-14s %-5s %8s  %s\n' CHECK STATUS TIME DETAIL
for r in "${rows[@]}"; do
  IFS='|' read -r name status took detail <<<"$r"
  printf '%-14s %-5s %8s  %s\n' "$name" "$status" "$took" "$detail"
done
if [ "$failed" = 0 ]; then
  echo "stack '$FAENA_STACK': all checks passed"
else
  echo "stack '$FAENA_STACK': checks FAILED" >&2
  exit 1
fi
