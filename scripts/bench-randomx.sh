#!/usr/bin/env bash
# RandomX speed of the worker's engine against RandomX's own randomx-benchmark,
# built from the RandomX sources that the randomx-rs crate ships, on the same
# work (same template, key and nonces: both print the same "Calculated result").
# Per mode and thread count, runs are interleaved (reference, reference with
# transparent huge pages, ours; the order alternates by round), and medians
# are compared. Not part
# of CI: every fast-mode run initialises a 2 GiB dataset.
#
#   scripts/bench-randomx.sh [rounds]     (default 3)
#   env: MODES="fast light"  THREADS="1 <cores>"  NONCES_FAST=3000  NONCES_LIGHT=200
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/prereqs.sh
help_if_asked "$@"
need_build_tools
rounds=${1:-3}
threads_list=${THREADS:-"1 $(nproc)"}
modes=${MODES:-"fast light"}
init=$(nproc)

src=$(cargo metadata --locked --format-version 1 | python3 -c '
import json, os, sys
pkgs = json.load(sys.stdin)["packages"]
print(next(os.path.dirname(p["manifest_path"]) for p in pkgs if p["name"] == "randomx-rs"))')/RandomX
ref_dir=target/randomx-reference
if [ ! -x "$ref_dir/randomx-benchmark" ]; then
  cmake -S "$src" -B "$ref_dir" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$ref_dir" --target randomx-benchmark -j "$(nproc)" >/dev/null
fi
cargo build --locked --release -p faena-worker --bin faena-randomx-bench >/dev/null 2>&1
ours=target/release/faena-randomx-bench
ref=$ref_dir/randomx-benchmark
runs=$(mktemp)

# One line per run: mode threads who hashrate init result. The reference's
# light mode (--verify) reports "ms per hash"; both become H/s.
record() {
  local mode=$1 t=$2 who=$3; shift 3
  "$@" | awk -v m="$mode" -v t="$t" -v w="$who" '
    /^Memory initialized in/ { init = $4 }
    /^Calculated result:/ { res = $3 }
    /^Performance:/ { hr = ($3 == "ms") ? 1000 / $2 : $2 }
    END { printf "%s %s %s %.2f %.3f %s\n", m, t, w, hr, init, res }' | tee -a "$runs" >&2
}

for mode in $modes; do
  for t in $threads_list; do
    if [ "$mode" = fast ]; then n=${NONCES_FAST:-3000}; ref_mode="--mine"; else n=${NONCES_LIGHT:-200}; ref_mode="--verify"; fi
    run_ref() { record "$mode" "$t" ref "$ref" $ref_mode --jit --threads "$t" --init "$init" --nonces "$n"; }
    run_thp() {
      GLIBC_TUNABLES=glibc.malloc.hugetlb=1 \
        record "$mode" "$t" ref-thp "$ref" $ref_mode --jit --threads "$t" --init "$init" --nonces "$n"
    }
    run_ours() { record "$mode" "$t" ours "$ours" --mode "$mode" --threads "$t" --init "$init" --nonces "$n"; }
    for r in $(seq "$rounds"); do
      # Alternate the order, so no contender always runs first or last.
      if [ $((r % 2)) = 1 ]; then run_ref; run_thp; run_ours; else run_ours; run_thp; run_ref; fi
    done
  done
done

python3 - "$runs" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
med = lambda xs: statistics.median(xs) if xs else float("nan")
print(f"\n{'mode':<6}{'thr':>4}{'ref H/s':>10}{'ref+THP':>10}{'ours H/s':>10}{'vs ref':>8}{'vs +THP':>9}"
      f"{'ref init':>10}{'ours init':>10}{'init x':>8}  same result")
for key in dict.fromkeys((r[0], r[1]) for r in rows):
    sel = lambda who, i: [float(r[i]) for r in rows if (r[0], r[1]) == key and r[2] == who]
    results = {r[5] for r in rows if (r[0], r[1]) == key}
    ref, thp, ours = med(sel("ref", 3)), med(sel("ref-thp", 3)), med(sel("ours", 3))
    ri, oi = med(sel("ref", 4)), med(sel("ours", 4))
    thp_s = f"{thp:>10.1f}" if thp == thp else f"{'-':>10}"
    vs_thp = f"{100*ours/thp:>8.1f}%" if thp == thp else f"{'-':>9}"
    print(f"{key[0]:<6}{key[1]:>4}{ref:>10.1f}{thp_s}{ours:>10.1f}{100*ours/ref:>7.1f}%{vs_thp}"
          f"{ri:>9.2f}s{oi:>9.2f}s{oi/ri:>7.2f}x  {'yes' if len(results) == 1 else 'NO'}")
PY
rm -f "$runs"
