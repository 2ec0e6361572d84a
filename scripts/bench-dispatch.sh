#!/usr/bin/env bash
# Faena's batch dispatch beside BullMQ's bulk path, in one run (issue 32,
# goal 1): faena-bench (release master, embedded broker, SQLite with fsync,
# two workers × 128 slots, 20,000 jobs in POST /api/jobs/batch calls of
# 1,000) and bench/bullmq/bulk.mjs (BullMQ 6.x, 20,000 jobs in addBulk calls
# of 1,000, two worker processes at concurrency 128) on a Redis started here,
# twice: without persistence (BullMQ's usual setup) and with every write
# fsync'd (`appendfsync always`, what Faena promises). Rounds alternate;
# the ratios are of the medians. Not part of CI.
#
#   scripts/bench-dispatch.sh [rounds=3] [jobs=20000] [slots=128]
#
# `slots` is each worker's, Faena's and BullMQ's alike (FAENA_BENCH_SLOTS):
# jobs in flight bound jobs/s at slots ÷ the time a job holds one.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/prereqs.sh
. scripts/lib/prereqs.sh
# shellcheck source=scripts/lib/bench.sh
. scripts/lib/bench.sh
help_if_asked "$@"
export FAENA_BENCH_SLOTS=${3:-128}
# Checked before anything is installed or started (BullMQ's rounds come
# before faena-bench, which checks it too).
if ! [[ $FAENA_BENCH_SLOTS =~ ^[1-9][0-9]{0,3}$ ]] || [ "$FAENA_BENCH_SLOTS" -gt 4096 ]; then
  echo "slots must be a number from 1 to 4096, not '$FAENA_BENCH_SLOTS'" >&2
  exit 2
fi
need_build_tools
need_packages node:nodejs npm:npm redis-server:redis-server
rounds=${1:-3}
jobs=${2:-20000}
cargo build --locked --release -p faena-master -p faena-worker -p faena-testkit --bins >/dev/null 2>&1
(cd bench/bullmq && npm ci --no-audit --no-fund --loglevel=error)
work=$(mktemp -d)
redis=""
stop_redis() {
  [ -z "$redis" ] || { kill "$redis" 2>/dev/null || true; wait "$redis" 2>/dev/null || true; }
  redis=""
}
trap 'stop_redis; rm -rf "$work"' EXIT

# bullmq NAME REDIS-ARGS...: one BullMQ round on a fresh Redis; its jobs/s to $work/NAME.
bullmq() {
  local name=$1 port
  shift
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  rm -rf "$work/redis" && mkdir "$work/redis"
  redis-server --bind 127.0.0.1 --port "$port" --save '' --dir "$work/redis" "$@" >"$work/redis.log" 2>&1 &
  redis=$!
  until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done
  node bench/bullmq/bulk.mjs "$port" "$jobs" >"$work/round.log"
  sed "s/^bullmq /$name /" "$work/round.log"
  awk '{print $5}' "$work/round.log" >>"$work/$name"
  stop_redis
}

for round in $(seq "$rounds"); do
  echo "== round $round"
  bullmq bullmq-memory --appendonly no
  target/release/faena-bench "$jobs" 200 | grep -E '^(batch|one-by-one|low load)' >"$work/round.log"
  sed 's/^/faena /' "$work/round.log"
  awk '$1 == "batch" {print $4}' "$work/round.log" >>"$work/faena"
  bullmq bullmq-fsync --appendonly yes --appendfsync always
done

faena=$(median "$work/faena")
memory=$(median "$work/bullmq-memory")
fsync=$(median "$work/bullmq-fsync")
echo
echo "medians of $rounds rounds, $jobs jobs, 2 workers x $FAENA_BENCH_SLOTS slots: Faena batch $faena jobs/s (durable: fsync per commit group)"
awk -v f="$faena" -v b="$memory" 'BEGIN {printf "  BullMQ, Redis without persistence   %6d jobs/s   Faena / BullMQ %.2fx\n", b, f / b}'
awk -v f="$faena" -v b="$fsync" 'BEGIN {printf "  BullMQ, Redis appendfsync always    %6d jobs/s   Faena / BullMQ %.2fx\n", b, f / b}'
