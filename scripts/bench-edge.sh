#!/usr/bin/env bash
# What the edge costs a request: one release master (embedded broker,
# SQLite) under ApacheBench at 64 keep-alive clients on GET /healthz, asked
# directly (the reference) and through a release faena-edge in front of it,
# in turns. Prints requests/s and the CPU a request of the edge and of the
# master (from /proc), and the ratios through the edge / direct. With
# BASE=<another faena-edge binary>, each round asks through that edge too
# (which goes first rotates), and the ratios this / base are printed. Not
# part of CI; needs ab (Debian's apache2-utils, installed when missing).
#
#   scripts/bench-edge.sh [rounds=5] [requests=50000]
#   env: BASE=path/to/faena-edge   FAENA_BIN_DIR=<prebuilt binaries>
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/prereqs.sh
. scripts/lib/prereqs.sh
# shellcheck source=scripts/lib/bench.sh
. scripts/lib/bench.sh
help_if_asked "$@"
rounds=${1:-5}
requests=${2:-50000}
check_rounds_requests bench-edge "$rounds" "$requests"
need_packages ab:apache2-utils python3:python3 curl:curl
bins=$(release_bins -p faena-master)
if [ -n "${BASE:-}" ] && [ ! -x "$BASE" ]; then
  echo "bench-edge: BASE=$BASE is not an executable faena-edge" >&2
  exit 2
fi
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
export FAENA_CLUSTER_TOKEN
FAENA_CLUSTER_TOKEN=bench-edge-$RANDOM$RANDOM

# Starts $1 with its log in $2 and waits for its ready line: sets $started.
start() {
  local bin=$1 log=$2
  "$bin" >"$log" 2>&1 &
  started=$!
  pids+=("$started")
  wait_ready "$started" "$log" "bench-edge: $bin"
}

http=127.0.0.1:$(free_port)
FAENA_DATA_DIR=$work FAENA_HTTP_ADDR=$http FAENA_GRPC_ADDR=127.0.0.1:$(free_port) \
  FAENA_MQTT_ADDR=127.0.0.1:$(free_port) start "$bins/faena-master" "$work/master.log"
master=$started
declare -A edge_at edge_pid
for who in this base; do
  bin=$bins/faena-edge
  if [ "$who" = base ]; then
    [ -n "${BASE:-}" ] || continue
    bin=$BASE
  fi
  edge_at[$who]=127.0.0.1:$(free_port)
  FAENA_HTTP_ADDR=${edge_at[$who]} FAENA_EDGE_MASTERS=$http start "$bin" "$work/edge-$who.log"
  edge_pid[$who]=$started
  # The edge forwards once it has seen the master lead.
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://${edge_at[$who]}/healthz")" = 200 ] && break
    sleep 0.1
  done
done

# Asks $requests times at $1, appending "<req/s> <edge µs> <master µs>" to
# the file $2 (edge µs is 0 when asked directly); $3 is the edge's pid.
measure() {
  local at=$1 edge=${3:-} out t0 e0 t1 e1 rate
  ab -q -k -c 64 -n 2000 "http://$at/healthz" >/dev/null
  t0=$(cpu_ticks "$master")
  e0=0
  [ -z "$edge" ] || e0=$(cpu_ticks "$edge")
  out=$(ab -q -k -c 64 -n "$requests" "http://$at/healthz")
  t1=$(cpu_ticks "$master")
  e1=0
  [ -z "$edge" ] || e1=$(cpu_ticks "$edge")
  grep -q "^Non-2xx" <<<"$out" && { echo "bench-edge: GET /healthz at $at answered other than 200" >&2; exit 1; }
  rate=$(awk '/^Requests per second/ {print $4}' <<<"$out")
  awk -v r="$rate" -v e="$((e1 - e0))" -v m="$((t1 - t0))" -v n="$requests" \
    'BEGIN {printf "%s %.1f %.1f\n", r, e * 1e4 / n, m * 1e4 / n}' >>"$2"
}

echo "bench-edge: $rounds rounds, GET /healthz x $requests, 64 keep-alive clients, $(nproc) cores"
whos=(direct this)
[ -z "${BASE:-}" ] || whos+=(base)
for w in "${whos[@]}"; do : >"$work/$w"; done
for r in $(seq "$rounds"); do
  n=${#whos[@]}
  for i in $(seq 0 $((n - 1))); do
    who=${whos[$(((i + r) % n))]}
    if [ "$who" = direct ]; then measure "$http" "$work/direct"; else measure "${edge_at[$who]}" "$work/$who" "${edge_pid[$who]}"; fi
    read -r rate eu mu < <(tail -n 1 "$work/$who")
    printf '%-6s round %d  %9.0f req/s   edge %6.1f µs/req   master %6.1f µs/req\n' "$who" "$r" "$rate" "$eu" "$mu"
  done
done
column_median() { median <(cut -d' ' -f"$1" "$2"); }
for w in "${whos[@]}"; do
  printf '%-6s medians  %9.0f req/s   edge %6.1f µs/req   master %6.1f µs/req\n' "$w" \
    "$(column_median 1 "$work/$w")" "$(column_median 2 "$work/$w")" "$(column_median 3 "$work/$w")"
done
ratio() { awk -v a="$(column_median "$1" "$work/$2")" -v b="$(column_median "$1" "$work/$3")" 'BEGIN {printf "%.3f", a / b}'; }
echo "this/direct req/s $(ratio 1 this direct)  master µs/req $(ratio 3 this direct)"
if [ -n "${BASE:-}" ]; then
  echo "base/direct req/s $(ratio 1 base direct)  master µs/req $(ratio 3 base direct)"
  echo "this/base   req/s $(ratio 1 this base)  edge µs/req $(ratio 2 this base)  master µs/req $(ratio 3 this base)"
fi
