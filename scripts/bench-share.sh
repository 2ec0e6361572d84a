#!/usr/bin/env bash
# One RandomX dataset per machine: two fast-mode processes of the worker's
# engine (faena-randomx-bench, the worker's mining loop) on one machine,
# each building its own 2 GiB dataset ("private", as workers without
# FAENA_RANDOMX_SHARE_DIR do) against sharing one through a directory:
# /dev/shm as it comes (4 KiB pages unless the kernel's shmem THP is on), and,
# when run as root, a tmpfs mounted here with huge=within_size (what the
# stack's worker volume is). The first process builds, hashes and holds; the
# second then starts beside it. Per setup: each one's dataset time, each
# one's H/s, and the memory the two hold together (MemTotal - MemAvailable,
# against before). Setups alternate in order by round; medians.
# Not part of CI: every round builds three to four 2 GiB datasets.
#
#   scripts/bench-share.sh [rounds]   (default 2)
#   env: THREADS=<cores>  NONCES=3000
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/prereqs.sh
help_if_asked "$@"
need_build_tools
rounds=${1:-2}
threads=${THREADS:-$(nproc)}
nonces=${NONCES:-3000}
cargo build --locked --release -p faena-worker --bin faena-randomx-bench >/dev/null 2>&1
bench=target/release/faena-randomx-bench
work=$(mktemp -d)
huge_dir=""
cleanup() {
  [ -z "$huge_dir" ] || umount "$huge_dir" 2>/dev/null || true
  rm -rf "$work" /dev/shm/faena-bench-share
}
trap cleanup EXIT
setups="private shm"
if [ "$(id -u)" = 0 ]; then
  huge_dir=$work/huge
  mkdir -p "$huge_dir"
  if mount -t tmpfs -o size=5g,huge=within_size tmpfs "$huge_dir" 2>/dev/null; then
    setups="$setups tmpfs-huge"
  else
    huge_dir=""
  fi
fi

used_kib() { awk '/^MemTotal:/ {t=$2} /^MemAvailable:/ {a=$2} END {print t-a}' /proc/meminfo; }

# Starts one holding process; its output goes to $1. Returns once it holds.
start_one() {
  local out=$1; shift
  mkfifo "$out.in"
  "$bench" --mode fast --threads "$threads" --init "$(nproc)" --nonces "$nonces" --hold "$@" < "$out.in" > "$out" 2>&1 &
  exec {hold}> "$out.in"
  holds+=("$hold")
  until grep -q '^holding' "$out" 2>/dev/null; do
    kill -0 "$!" 2>/dev/null || { cat "$out" >&2; echo "the bench process died" >&2; exit 1; }
    sleep 0.2
  done
}

run() {
  local setup=$1 round=$2 args=()
  case $setup in
    shm) args=(--share /dev/shm/faena-bench-share) ;;
    tmpfs-huge) args=(--share "$huge_dir/share") ;;
  esac
  holds=()
  local before a=$work/$setup-$round-a b=$work/$setup-$round-b
  before=$(used_kib)
  start_one "$a" "${args[@]}"
  start_one "$b" "${args[@]}"
  local held=$(( ($(used_kib) - before) / 1024 ))
  for fd in "${holds[@]}"; do exec {fd}>&-; done
  wait
  rm -f "$a.in" "$b.in"
  for who in a b; do
    awk -v s="$setup" -v w="$who" -v m="$held" '
      /^Memory initialized in/ { init = $4 }
      /^Calculated result:/ { res = $3 }
      /^Performance:/ { hr = $2 }
      END { printf "%s %s %.1f %.3f %s %s\n", s, w, hr, init, m, res }' "$work/$setup-$round-$who"
  done | tee -a "$work/runs" >&2
}

for r in $(seq "$rounds"); do
  order=$setups
  [ $((r % 2)) = 1 ] || order=$(echo "$setups" | tr ' ' '\n' | tac | tr '\n' ' ')
  for s in $order; do run "$s" "$r"; done
done

python3 - "$work/runs" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
med = lambda xs: statistics.median(xs) if xs else float("nan")
setups = list(dict.fromkeys(r[0] for r in rows))
sel = lambda s, who, i: [float(r[i]) for r in rows if r[0] == s and r[1] == who]
private_mem = med(sel("private", "a", 4))
print(f"\n{'setup':<12}{'1st init':>10}{'2nd init':>10}{'1st H/s':>9}{'2nd H/s':>9}{'MiB held':>10}{'vs private':>12}  same result")
for s in setups:
    results = {r[5] for r in rows if r[0] == s} | {r[5] for r in rows if r[0] == "private"}
    mem = med(sel(s, "a", 4))
    print(f"{s:<12}{med(sel(s, 'a', 3)):>9.2f}s{med(sel(s, 'b', 3)):>9.2f}s{med(sel(s, 'a', 2)):>9.1f}"
          f"{med(sel(s, 'b', 2)):>9.1f}{mem:>10.0f}{mem / private_mem:>11.2f}x  {'yes' if len(results) == 1 else 'NO'}")
PY
