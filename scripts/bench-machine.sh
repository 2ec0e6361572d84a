#!/usr/bin/env bash
# The whole machine's figures (issue 32) from prebuilt release binaries, for
# a machine that does not build Faena itself (a lent 16-core one):
#
#   scripts/bench-machine.sh pack DIR       here: builds the release binaries
#       the benches run and strips them into DIR, with XMRig (XMRIG=/path,
#       built from its public source) and the shared libraries it links;
#       with BEFORE=/path, another build of faena-randomx-bench beside it
#   scripts/bench-machine.sh run DIR OUT    there: the figures, into OUT
#
# `run`, in this order:
#   1. the machine (CPU, cores, page settings) into OUT/machine.txt;
#   2. faena-bench's batch and one-by-one dispatch on N CPUs for N in CORES
#      (master, workers and bench all confined there with taskset, so each N
#      is a machine of N cores: one CPU of each physical core first, then
#      their SMT siblings), rounds alternated, medians, each against 2 cores;
#      the master's threads as faena-bench prints them; with MASTERS="A B"
#      (release masters in DIR), each of them, alternated; `A:4` runs A with
#      its SQLite store over 4 files (FAENA_STORE_SHARDS);
#   3. RandomX on every CPU: dataset init and hashrate, Faena (transparent
#      huge pages, the worker's default; reserved 2 MiB pages) against XMRig
#      (scripts/bench-dataset.sh);
#   4. the same on 2 threads, both confined to 2 CPUs of 2 physical cores
#      (one round); in 3 and 4, a packed BEFORE build hashes beside them;
#   5. (only when PHASES names it: scale) faena-scale-bench's 10,000-deep
#      queue with 1,000 simulated workers and 1,000 watchers, ROUNDS times;
#   6. (only when PHASES names it: writer) the SQLite store's writer alone
#      (faena-writer-bench, 409,600 jobs) over 1 store and over several
#      side by side (SHARDS="1 2 4 8"), in batches and one by one, ROUNDS
#      times alternated, medians against 1 store.
# env: ROUNDS=2  JOBS=50000  SLOTS=512 (each worker's)  HASHES=100000 (nonces
#      a RandomX run hashes on every CPU; a fifth on 2)  CORES="2 8 <all>"
#      PHASES="dispatch randomx randomx2"
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/prereqs.sh
. scripts/lib/prereqs.sh
help_if_asked "$@"

pack() {
  local dir=$1
  [ -n "${XMRIG:-}" ] || { echo "XMRIG=/path/to/xmrig is needed (built from XMRig's source)" >&2; exit 2; }
  need_build_tools
  cargo build --locked --release -p faena-master -p faena-worker -p faena-testkit \
    --bin faena-master --bin faena-worker --bin faena-bench --bin faena-randomx-bench --bin faena-scale-bench \
    --bin faena-writer-bench >/dev/null
  mkdir -p "$dir/lib"
  for b in faena-master faena-worker faena-bench faena-randomx-bench faena-scale-bench faena-writer-bench; do
    strip -o "$dir/$b" "target/release/$b"
  done
  [ -z "${BEFORE:-}" ] || strip -o "$dir/faena-randomx-bench-before" "$BEFORE"
  strip -o "$dir/lib/xmrig" "$XMRIG"
  # Its libraries that a bare machine may lack (glibc's own are left out).
  ldd "$XMRIG" | awk '/=> \// { print $3 }' | grep -vE '/lib(c|m|pthread|dl|rt)\.so' |
    while read -r lib; do cp -L "$lib" "$dir/lib/"; done
  # shellcheck disable=SC2016 # the wrapper's own variables
  printf '#!/bin/sh\nd=$(dirname "$(readlink -f "$0")")/lib\nLD_LIBRARY_PATH=$d exec "$d/xmrig" "$@"\n' >"$dir/xmrig"
  chmod +x "$dir/xmrig"
  du -sh "$dir"
}

machine() {
  {
    date -u
    uname -r
    lscpu
    echo "THP: $(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null)"
    echo "THP defrag: $(cat /sys/kernel/mm/transparent_hugepage/defrag 2>/dev/null)"
    grep -E '^(MemTotal|HugePages_Total|HugePages_Free|Hugepagesize)' /proc/meminfo
  } >"$out/machine.txt" 2>&1
  grep -E '^(Model name|CPU\(s\)|Thread|Core|Socket|NUMA node\(s\)|L2|L3)' "$out/machine.txt" || true
  grep -E '^THP' "$out/machine.txt"
}

# The first N CPUs, as taskset takes them: one of each physical core first,
# then the second thread of each, and so on.
first_cpus() {
  if command -v lscpu >/dev/null; then
    lscpu -p=CPU,CORE | grep -v '^#' | awk -F, '{ print (seen[$2]++), $2, $1 }' | sort -n -k1,1 -k2,2 |
      head -n "$1" | awk '{ print $3 }' | paste -sd,
  else
    seq -s, 0 "$(($1 - 1))"
  fi
}

dispatch() {
  local all cores rounds=${ROUNDS:-2} jobs=${JOBS:-50000} masters=${MASTERS:-faena-master} m
  all=$(nproc)
  cores=${CORES:-2 8 $all}
  export FAENA_BENCH_SLOTS=${SLOTS:-512}
  echo "== dispatch: faena-bench $jobs jobs, 2 workers x $FAENA_BENCH_SLOTS slots, on $cores cores, $rounds rounds ($masters)"
  # Each master beside its own copy of the bench and worker (the bench runs
  # the faena-master in its own folder).
  for m in $masters; do
    mkdir -p "$out/run-$m"
    cp "$bins/faena-bench" "$bins/faena-worker" "$out/run-$m/"
    cp "$bins/${m%%:*}" "$out/run-$m/faena-master"
  done
  for round in $(seq "$rounds"); do
    for n in $cores; do
      for m in $masters; do
        echo "-- round $round, $n cores: CPUs $(first_cpus "$n"), $m" >>"$out/dispatch.log"
        # `name:N`: the store over N files; the master inherits the bench's environment.
        local shards=1
        [[ $m == *:* ]] && shards=${m#*:}
        FAENA_STORE_SHARDS=$shards taskset -c "$(first_cpus "$n")" "$out/run-$m/faena-bench" "$jobs" 200 >"$out/round.log" 2>&1 || {
          cat "$out/round.log" >&2
          exit 1
        }
        cat "$out/round.log" >>"$out/dispatch.log"
        grep -E '^(batch|one-by-one)' "$out/round.log" |
          awk -v n="$n" -v m="$m" '{ print n, $1, $4, $10, m }' | tee -a "$out/dispatch.txt"
      done
      masters=$(echo "$masters" | tr ' ' '\n' | tac | tr '\n' ' ')
    done
    cores=$(echo "$cores" | tr ' ' '\n' | tac | tr '\n' ' ')
  done
  rm -rf "$out/round.log" "$out"/run-*
  python3 - "$out/dispatch.txt" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
cores = sorted({int(r[0]) for r in rows})
masters = list(dict.fromkeys(r[4] for r in rows))
print(f"\n{'master':<20}{'cores':>5} {'phase':<11}{'jobs/s':>9}{'min':>9}{'max':>9}{'/ 2 cores':>10}{'CPU µs/job':>11}")
for m in masters:
    for phase in ("batch", "one-by-one"):
        med = {}
        for n in cores:
            mine = [r for r in rows if int(r[0]) == n and r[1] == phase and r[4] == m]
            rates = [float(r[2]) for r in mine]
            cpu = statistics.median(float(r[3]) for r in mine)
            med[n] = statistics.median(rates)
            vs = f"{med[n] / med[2]:>9.2f}x" if 2 in med else f"{'-':>10}"
            print(f"{m:<20}{n:>5} {phase:<11}{med[n]:>9.0f}{min(rates):>9.0f}{max(rates):>9.0f}{vs}{cpu:>11.1f}")
PY
}

# The store's writer over 1 store and over several side by side: what a
# writer per shard commits on this machine's cores.
writer() {
  local rounds=${ROUNDS:-2} shards=${SHARDS:-1 2 4 8} n shape group
  echo "== writer: faena-writer-bench 409600 jobs over $shards stores side by side, $rounds rounds"
  for round in $(seq "$rounds"); do
    for n in $shards; do
      for shape in apart arrival; do
        # One by one, a master's groups are smaller.
        group=256
        [ "$shape" = arrival ] && group=64
        "$bins/faena-writer-bench" 409600 "$group" 3 "$shape" "$n" >"$out/round.log" 2>&1 || {
          cat "$out/round.log" >&2
          exit 1
        }
        cat "$out/round.log" >>"$out/writer.log"
        awk -v n="$n" -v s="$shape" '/µs\/job, floor/ { cpu = $3 } /jobs\/s, floor/ { print n, s, $3, cpu }' \
          "$out/round.log" | tee -a "$out/writer.txt"
      done
    done
    shards=$(echo "$shards" | tr ' ' '\n' | tac | tr '\n' ' ')
  done
  rm -f "$out/round.log"
  python3 - "$out/writer.txt" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
print(f"\n{'shape':<9}{'stores':>7}{'jobs/s':>9}{'min':>9}{'max':>9}{'/ 1 store':>10}{'CPU µs/job':>11}")
for shape in ("apart", "arrival"):
    med = {}
    for n in sorted({int(r[0]) for r in rows}):
        mine = [r for r in rows if int(r[0]) == n and r[1] == shape]
        rates = [float(r[2]) for r in mine]
        med[n] = statistics.median(rates)
        vs = f"{med[n] / med[1]:>9.2f}x" if 1 in med else f"{'-':>10}"
        cpu = statistics.median(float(r[3]) for r in mine)
        print(f"{shape:<9}{n:>7}{med[n]:>9.0f}{min(rates):>9.0f}{max(rates):>9.0f}{vs}{cpu:>11.2f}")
PY
}

randomx() {
  local threads=$1 hashes=$2 contenders=$3 rounds=$4
  shift 4
  # Room for a dataset, its cache and a scratchpad a thread on 2 MiB pages,
  # for Faena's reserved-page contender (XMRig reserves its own as root).
  echo 1600 >/proc/sys/vm/nr_hugepages 2>/dev/null || echo "could not reserve 2 MiB pages" >&2
  echo "== RandomX on $threads threads: $hashes nonces a run; HugePages_Free $(awk '/^HugePages_Free/ {print $2}' /proc/meminfo)"
  local before=$bins/faena-randomx-bench-before
  [ -x "$before" ] && contenders="$contenders before" || before=
  "$@" env THREADS="$threads" HASHES="$hashes" FAENA_BIN_DIR="$bins" XMRIG="$bins/xmrig" BEFORE="$before" \
    CONTENDERS="$contenders" scripts/bench-dataset.sh "$rounds" 2>&1 |
    tee "$out/randomx-$threads.log" | grep -vE '^\[' || true
}

run() {
  bins=$(readlink -f "$1")
  out=$2
  mkdir -p "$out"
  machine
  local phases=${PHASES:-dispatch randomx randomx2} hashes=${HASHES:-100000}
  for phase in $phases; do
    case $phase in
      dispatch) dispatch ;;
      randomx) randomx "$(nproc)" "$hashes" "compiled compiled-huge xmrig" "${ROUNDS:-2}" ;;
      scale)
        for round in $(seq "${ROUNDS:-2}"); do
          echo "== faena-scale-bench, round $round"
          "$bins/faena-scale-bench" 1000 10000 2>&1 | tee -a "$out/scale.log" | grep -vE '^ +([0-9]+:|at )' ||
            echo "faena-scale-bench failed: $out/scale.log"
        done
        ;;
      randomx2) randomx 2 "$((hashes / 5))" "compiled compiled-huge xmrig" 1 taskset -c "$(first_cpus 2)" ;;
      writer) writer ;;
      *) echo "unknown phase '$phase'" >&2; exit 2 ;;
    esac
  done
}

case ${1:-} in
  pack) pack "${2:?pack DIR}" ;;
  run) run "${2:?run DIR OUT}" "${3:?run DIR OUT}" ;;
  *)
    echo "usage: scripts/bench-machine.sh pack DIR | run DIR OUT (-h for more)" >&2
    exit 2
    ;;
esac
