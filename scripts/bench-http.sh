#!/usr/bin/env bash
# The web port's own cost a request, apart from workers and dispatch: a
# release master (embedded broker, SQLite with fsync, no worker) under
# ApacheBench at 64 keep-alive clients, on GET /healthz (the layers and
# routing every request goes through) and on POST /api/jobs (a noop job
# stored and queued, answered 202 once committed; no worker takes it).
# Prints requests/s and the master's CPU a request (from /proc) for each,
# a fresh master and data directory each time. With BASE=<another
# faena-master binary>, each round runs that one too, the two taking turns
# (which goes first alternates), and the ratios of the medians are printed
# (this build / BASE). Not part of CI; needs ab (Debian's apache2-utils,
# installed when missing).
#
#   scripts/bench-http.sh [rounds=6] [requests=200000]
#   env: BASE=path/to/faena-master   FAENA_BIN_DIR=<prebuilt binaries>
#        FAENA_API_TOKEN=<token>: the masters ask for it on the REST API
#        (as the stack's do) and POST sends it
#
# POST sends a fifth of the requests (at most 90,000: the queue holds 100,000).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/prereqs.sh
. scripts/lib/prereqs.sh
# shellcheck source=scripts/lib/bench.sh
. scripts/lib/bench.sh
help_if_asked "$@"
rounds=${1:-6}
requests=${2:-200000}
check_rounds_requests bench-http "$rounds" "$requests"
posts=$((requests / 5 > 90000 ? 90000 : requests / 5))
need_packages ab:apache2-utils python3:python3
bins=$(release_bins -p faena-master)
this=$(realpath "$bins/faena-master")
if [ -n "${BASE:-}" ] && [ ! -x "$BASE" ]; then
  echo "bench-http: BASE=$BASE is not an executable faena-master" >&2
  exit 2
fi
work=$(mktemp -d)
master=""
cleanup() {
  [ -z "$master" ] || kill "$master" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
printf '{"kind": "noop", "params": {"payload": "bench-http"}}' >"$work/job.json"
auth=()
[ -z "${FAENA_API_TOKEN:-}" ] || auth=(-H "Authorization: Bearer $FAENA_API_TOKEN")

# One master, both loads: appends "<GET req/s> <GET µs> <POST req/s> <POST µs>"
# to the file $2 (run here, not in a subshell, so the trap knows the master).
measure() {
  local bin=$1 data http out t0 t1 get_rate post_rate get_us post_us
  data=$(mktemp -d "$work/data.XXXX")
  http=127.0.0.1:$(free_port)
  : >"$data/master.log"
  FAENA_DATA_DIR=$data FAENA_HTTP_ADDR=$http FAENA_GRPC_ADDR=127.0.0.1:$(free_port) \
    FAENA_MQTT_ADDR=127.0.0.1:$(free_port) "$bin" >"$data/master.log" 2>&1 &
  master=$!
  wait_ready "$master" "$data/master.log" "bench-http: the master"
  ab -q -k -c 64 -n 5000 "http://$http/healthz" >/dev/null
  t0=$(cpu_ticks "$master")
  out=$(ab -q -k -c 64 -n "$requests" "http://$http/healthz")
  t1=$(cpu_ticks "$master")
  grep -q "^Non-2xx" <<<"$out" && { echo "bench-http: GET /healthz answered other than 200" >&2; exit 1; }
  get_rate=$(awk '/^Requests per second/ {print $4}' <<<"$out")
  get_us=$(awk -v t="$((t1 - t0))" -v n="$requests" 'BEGIN {printf "%.1f", t * 1e4 / n}')
  t0=$(cpu_ticks "$master")
  # ab counts answers of another length than the first as failed: each 202 names its own job.
  out=$(ab -q -k -c 64 -n "$posts" "${auth[@]}" -p "$work/job.json" -T application/json "http://$http/api/jobs")
  t1=$(cpu_ticks "$master")
  grep -q "^Non-2xx" <<<"$out" && { echo "bench-http: POST /api/jobs answered other than 202" >&2; exit 1; }
  post_rate=$(awk '/^Requests per second/ {print $4}' <<<"$out")
  post_us=$(awk -v t="$((t1 - t0))" -v n="$posts" 'BEGIN {printf "%.1f", t * 1e4 / n}')
  kill "$master"
  wait "$master" 2>/dev/null || true
  master=""
  rm -rf "$data"
  echo "$get_rate $get_us $post_rate $post_us" >>"$2"
}

echo "bench-http: $rounds rounds, GET /healthz x $requests, POST /api/jobs x $posts, 64 keep-alive clients, $(nproc) cores"
: >"$work/this"
: >"$work/base"
for r in $(seq "$rounds"); do
  order="this"
  if [ -n "${BASE:-}" ]; then
    order="this base"
    [ $((r % 2)) -eq 0 ] || order="base this"
  fi
  for who in $order; do
    bin=$this
    [ "$who" = this ] || bin=$BASE
    measure "$bin" "$work/$who"
    read -r gr gu pr pu < <(tail -n 1 "$work/$who")
    printf '%-5s round %d  GET %9.0f req/s %6.1f µs/req   POST %9.0f req/s %6.1f µs/req\n' "$who" "$r" "$gr" "$gu" "$pr" "$pu"
  done
done
# The median of column $1 of file $2.
column_median() { median <(cut -d' ' -f"$1" "$2"); }
for who in this base; do
  [ -s "$work/$who" ] || continue
  printf '%-5s medians  GET %9.0f req/s %6.1f µs/req   POST %9.0f req/s %6.1f µs/req\n' "$who" \
    "$(column_median 1 "$work/$who")" "$(column_median 2 "$work/$who")" \
    "$(column_median 3 "$work/$who")" "$(column_median 4 "$work/$who")"
done
if [ -s "$work/base" ]; then
  ratio() { awk -v a="$(column_median "$1" "$work/this")" -v b="$(column_median "$1" "$work/base")" 'BEGIN {printf "%.3f", a / b}'; }
  echo "this/base GET req/s $(ratio 1)  µs/req $(ratio 2)   POST req/s $(ratio 3)  µs/req $(ratio 4)"
fi
