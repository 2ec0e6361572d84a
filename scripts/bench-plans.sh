#!/usr/bin/env bash
# Issue 30's benchmarks (testkit/src/bin/faena-plans-bench.rs), in one run:
#   cost      batch jobs/s before the job options existed and now, interleaved
#             (the baseline master is built from FAENA_BENCH_BASELINE_REV,
#             default a5620a1, in a worktree under target/), then with every
#             job in a group and with a unique key;
#   fairness  group A submits 200,000 jobs, then group B 100: B's queue wait
#             without groups and with them, then the same on open-source
#             BullMQ (bench/bullmq, on a Redis started here), which has no groups;
#   timers    1,000,000 jobs delayed over an hour: master RSS, coordinator
#             tick, and how late the jobs due in the first 10 minutes queued.
#
#   ./scripts/bench-plans.sh [cost|fairness|timers|all]   (all: ~25 min; not part of CI)
set -euo pipefail
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/prereqs.sh
. scripts/lib/prereqs.sh
need_build_tools
what=${1:-all}
cargo build --locked --release -p faena-master -p faena-worker -p faena-testkit --bins
bench=target/release/faena-plans-bench

if [ "$what" = cost ] || [ "$what" = all ]; then
  rev=${FAENA_BENCH_BASELINE_REV:-a5620a1}
  src=target/baseline-src
  if [ ! -d "$src" ]; then git worktree add --detach "$src" "$rev" >/dev/null; fi
  git -C "$src" checkout --quiet --detach "$rev"
  CARGO_TARGET_DIR=$PWD/target/baseline cargo build --locked --release -p faena-master --manifest-path "$src/Cargo.toml"
  FAENA_BENCH_BASELINE_MASTER=$PWD/target/baseline/release/faena-master "$bench" cost
fi

if [ "$what" = fairness ] || [ "$what" = all ]; then
  "$bench" fairness
  need_web
  need_packages redis-server:redis-server
  (cd bench/bullmq && npm ci --no-audit --no-fund --loglevel=error)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  dir=$(mktemp -d)
  redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --dir "$dir" --daemonize no >"$dir/redis.log" 2>&1 &
  redis=$!
  trap 'kill "$redis" 2>/dev/null; wait "$redis" 2>/dev/null; rm -rf "$dir"' EXIT
  until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done
  node bench/bullmq/fairness.mjs "$port"
fi

if [ "$what" = timers ] || [ "$what" = all ]; then
  "$bench" timers
fi
