#!/usr/bin/env bash
# RandomX dataset initialisation (the 256 MiB cache, then the 2 GiB dataset
# from it), contenders alternated round by round, medians compared:
#   compiled       Faena's programs compiled to AVX-512 (what workers run),
#                  transparent huge pages as the worker gets them;
#   compiled-huge  the same on reserved 2 MiB pages (--large-pages), when
#                  at least 1,168 are free (vm.nr_hugepages);
#   avx2           the programs compiled to AVX2 (CPUs without AVX-512);
#   interpreted    Faena's interpreter (CPUs with neither);
#   randomx        RandomX's own randomx_init_dataset (what Faena ran before);
#   xmrig          XMRig 6.x, when XMRIG is set: from its "init dataset"
#                  line to "dataset ready", which covers the same steps;
#   before         compiled, by another build of faena-randomx-bench
#                  (BEFORE=/path, e.g. the last commit's), for a change's
#                  effect measured beside XMRig in the same run.
# Run as root, XMRig reserves 2 MiB pages itself and leaves them reserved,
# so from its first run on it and compiled-huge use the same page size.
# With HASHES=N, compiled, compiled-huge and XMRig also hash on every thread
# once their dataset is ready: N nonces for Faena (its mining loop, H/s over
# the whole run), for XMRig the mean of its 10-second speed reports over
# about as long (the hashing itself is RandomX's JIT code in Faena whichever
# way the dataset was built). Not part of CI: every run builds a 2 GiB dataset.
#
#   scripts/bench-dataset.sh [rounds]      (default 3)
#   env: THREADS=<cores>  XMRIG=/path/to/xmrig (built from XMRig's source)
#        HASHES=0 (nonces to hash after init; e.g. 30000)
#        CONTENDERS="compiled compiled-huge avx2 interpreted randomx xmrig"
#        BEFORE=/path/to/another/faena-randomx-bench (adds the before contender)
#        FAENA_BIN_DIR=<dir> (prebuilt release binaries; nothing is built)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/prereqs.sh
help_if_asked "$@"
rounds=${1:-3}
threads=${THREADS:-$(nproc)}
hashes=${HASHES:-0}
bench=$(release_bins -p faena-worker --bin faena-randomx-bench)/faena-randomx-bench
runs=$(mktemp)
log=$(mktemp)
trap 'rm -f "$runs" "$log"' EXIT

ours() {
  local who=$1 how=$2 nonces=$3; shift 3
  local threads_hashing=$threads
  [ "$nonces" -gt 1 ] || threads_hashing=1
  FAENA_RANDOMX_DATASET_INIT=$how "${bin:-$bench}" --mode fast --threads "$threads_hashing" --init "$threads" \
    --nonces "$nonces" "$@" | awk -v w="$who" -v n="$nonces" '
      /^Memory initialized in/ { init = $4 }
      /^Calculated result:/ { res = $3 }
      /^Performance:/ { hr = (n > 1) ? $2 : "-" }
      END { print w, init, hr, n, res }' | tee -a "$runs" >&2
}

xmrig() {
  : >"$log"
  "$XMRIG" --bench=1M --threads="$threads" --randomx-init="$threads" --no-color --print-time=10 \
    --log-file="$log" >/dev/null 2>&1 &
  local pid=$!
  # Speed reports to wait for: the first after the dataset says n/a, then
  # one per 10 s of hashing, as long as Faena's nonces take at ~350 H/s a thread.
  local reports=0
  [ "$hashes" -le 0 ] || reports=$((2 + hashes / (3500 * threads)))
  local until='dataset ready'
  [ "$reports" -eq 0 ] || until='speed 10s'
  # XMRig says nothing else when its dataset is ready: follow its log.
  local want=$((reports > 0 ? reports : 1)) seen
  seen=$(grep -F -m"$want" "$until" < <(timeout 600 tail -n +1 --pid="$pid" -f "$log") | wc -l)
  if [ "$seen" -lt "$want" ]; then
    kill "$pid" 2>/dev/null || true
    echo "xmrig: no dataset ready (or speed reports) within 600 s" >&2
    exit 1
  fi
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  # What XMRig says of its pages and MSR tweaks, once: they move its hashrate.
  [ -n "${told:-}" ] || grep -iE 'huge pages|msr|1gb' "$log" | sed 's/^/xmrig: /' >&2 || true
  told=1
  python3 - "$log" <<'PY' | tee -a "$runs" >&2
import datetime, re, sys
stamp = lambda l: datetime.datetime.strptime(re.match(r"\[([^\]]+)\]", l).group(1), "%Y-%m-%d %H:%M:%S.%f")
lines = open(sys.argv[1]).read().splitlines()
start = next(stamp(l) for l in lines if "init dataset" in l)
ready = next(stamp(l) for l in lines if "dataset ready" in l)
speeds = [l.split("H/s")[0].split()[-3] for l in lines if "speed 10s" in l]
speeds = [float(x) for x in speeds[1:] if x != "n/a"]
hr = f"{sum(speeds) / len(speeds):.1f}" if speeds else "-"
print(f"xmrig {(ready - start).total_seconds():.3f} {hr}")
PY
}

huge_free() { awk '/^HugePages_Free:/ { print $2 }' /proc/meminfo; }

run() {
  case $1 in
    compiled) ours compiled jit "$((hashes > 1 ? hashes : 1))" ;;
    compiled-huge) [ "$(huge_free)" -lt 1168 ] || ours compiled-huge jit "$((hashes > 1 ? hashes : 1))" --large-pages ;;
    avx2) ours avx2 avx2 1 ;;
    interpreted) ours interpreted interpreted 1 ;;
    randomx) ours randomx randomx 1 ;;
    xmrig) [ -z "${XMRIG:-}" ] || xmrig ;;
    before) [ -z "${BEFORE:-}" ] || bin=$BEFORE ours before jit "$((hashes > 1 ? hashes : 1))" ;;
  esac
}

echo "dataset init, $threads threads, $rounds rounds;$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)" >&2
order=${CONTENDERS:-compiled compiled-huge avx2 interpreted randomx xmrig${BEFORE:+ before}}
for _ in $(seq "$rounds"); do
  # Alternate the order, so no contender always runs first or last.
  for c in $order; do run "$c"; done
  order=$(echo "$order" | tr ' ' '\n' | tac | tr '\n' ' ')
done

python3 - "$runs" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
who = list(dict.fromkeys(r[0] for r in rows))
col = lambda w, i: [float(r[i]) for r in rows if r[0] == w and len(r) > i and r[i] != "-"]
med = {w: statistics.median(col(w, 1)) for w in who}
hr = {w: statistics.median(col(w, 2)) for w in who if col(w, 2)}
print(f"\n{'contender':<15}{'runs':>5}{'init s':>8}{'min':>7}{'max':>7}{'/ xmrig':>9}{'H/s':>8}{'/ xmrig':>9}")
for w in who:
    xs = col(w, 1)
    vs = f"{med[w] / med['xmrig']:>8.2f}x" if "xmrig" in med else f"{'-':>9}"
    h = f"{hr[w]:>8.1f}" if w in hr else f"{'-':>8}"
    hv = f"{hr[w] / hr['xmrig']:>9.3f}" if w in hr and "xmrig" in hr else f"{'-':>9}"
    print(f"{w:<15}{len(xs):>5}{med[w]:>8.2f}{min(xs):>7.2f}{max(xs):>7.2f}{vs}{h}{hv}")
# Every Faena run over the same nonces hashed over its dataset to one result.
results = {}
for r in rows:
    if len(r) == 5:
        results.setdefault(r[3], set()).add(r[4])
same = all(len(v) == 1 for v in results.values())
print(f"\nsame XOR of hashes in every Faena run over the same nonces: {'yes' if same else 'NO'}")
if not same:
    sys.exit(1)
PY
