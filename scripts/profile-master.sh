#!/usr/bin/env bash
# Where the master's CPU goes: faena-bench's batch phase (release master,
# embedded broker, SQLite with fsync, two workers) with `perf record` on the
# master for a few seconds of it, then the samples summed by thread and by
# part (kernel, gRPC/HTTP, SQLite, engine, MQTT, allocator, ...). faena-bench
# itself prints each master thread's µs/job, cores busy and run-queue wait
# (as a share of its CPU) per phase.
# Not part of CI; needs perf (Debian's linux-perf).
#
#   scripts/profile-master.sh [jobs]   (default 90000; the queue holds 100,000)
#   env: SECONDS_RECORDED=3
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/prereqs.sh
. scripts/lib/prereqs.sh
help_if_asked "$@"
need_build_tools
command -v perf >/dev/null || { apt-get install -y -q linux-perf >/dev/null || { echo "perf is needed (apt-get install linux-perf)" >&2; exit 1; }; }
jobs=${1:-90000}
cargo build --locked --release -p faena-master -p faena-worker -p faena-testkit --bins >/dev/null 2>&1
work=$(mktemp -d)
bench_pid=""
cleanup() {
  [ -z "$bench_pid" ] || kill "$bench_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
target/release/faena-bench "$jobs" 200 >"$work/bench.log" 2>&1 &
bench_pid=$!
master=""
until [ -n "$master" ]; do
  kill -0 "$bench_pid" 2>/dev/null || { cat "$work/bench.log" >&2; exit 1; }
  master=$(pgrep -P "$bench_pid" -x faena-master || true)
  sleep 0.2
done
# The batch phase starts once the warm-up's 2,000 jobs are through.
until grep -q "dashboards" "$work/bench.log"; do sleep 0.2; done
sleep 1.5
perf record -q -F 1999 -g -p "$master" -o "$work/perf.data" -- sleep "${SECONDS_RECORDED:-3}" >/dev/null 2>&1
wait "$bench_pid"
bench_pid=""
grep -v '^faena-bench' "$work/bench.log"
echo "master samples by thread and part (perf, ${SECONDS_RECORDED:-3} s of the batch phase):"
perf report -i "$work/perf.data" --no-children --sort comm,sym -g none 2>/dev/null | python3 scripts/lib/perf-buckets.py
