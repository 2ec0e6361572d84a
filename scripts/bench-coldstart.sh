#!/usr/bin/env bash
# A newcomer's wait: from a fresh clone (an empty target/) to a dev.sh
# cluster that answers a chat question with the local model. Clones REV,
# runs ./scripts/dev.sh in it on spare ports and times three phases: the
# cargo build, the cluster up (its workers registered with ai.query), the
# first answer of an ai.query job. The crates.io downloads, the Debian
# packages and the model (~93 MB from PyPI, kept in ~/.cache/faena/models)
# are what this machine already has; a fresh machine adds their download.
# Not part of CI: a whole release build on every core.
#
#   scripts/bench-coldstart.sh [REV]   (default HEAD)
#   env: KEEP=1 keeps the clone
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi
rev=${1:-HEAD}
repo=$PWD
dir=$(mktemp -d /tmp/faena-coldstart-XXXXXX)
log=$dir.log
pid=""
cleanup() {
  if [ -n "$pid" ]; then
    kill -INT -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  [ "${KEEP:-0}" = 1 ] || rm -rf "$dir"
  [ -z "${share:-}" ] || rm -rf "$share"
}
trap cleanup EXIT
git clone -q "$repo" "$dir"
git -C "$dir" checkout -q "$(git rev-parse "$rev")"
base=$((20000 + RANDOM % 20000))
http=127.0.0.1:$base
share=/dev/shm/faena-coldstart-$base

now() { date +%s.%N; }
start=$(now)
(
  cd "$dir"
  export FAENA_HTTP_ADDR=$http FAENA_GRPC_ADDR=127.0.0.1:$((base + 1)) FAENA_MQTT_ADDR=127.0.0.1:$((base + 2))
  export FAENA_STRATUM_ADDR=127.0.0.1:$((base + 3)) FAENA_DATA_DIR=$dir/.faena-dev
  export FAENA_RANDOMX_SHARE_DIR=$share
  exec setsid ./scripts/dev.sh
) > "$log" 2>&1 &
pid=$!

wait_for() {
  local what=$1; shift
  until "$@"; do
    kill -0 "$pid" 2>/dev/null || { tail -30 "$log" >&2; echo "dev.sh ended while waiting for $what" >&2; exit 1; }
    sleep 0.5
  done
}
built() { grep -q 'Finished `' "$log"; }
ai_workers() {
  curl -sf "http://$http/api/workers" 2>/dev/null \
    | python3 -c '
import json, sys
w = json.load(sys.stdin)
w = w.get("workers", []) if isinstance(w, dict) else w
sys.exit(0 if sum("ai.query" in x.get("kinds", []) for x in w) >= 2 else 1)' 2>/dev/null
}
wait_for "the build" built
t_build=$(now)
wait_for "two workers offering ai.query" ai_workers
t_up=$(now)
id=$(curl -sf -H 'content-type: application/json' "http://$http/api/jobs" \
  -d '{"kind":"ai.query","params":{"prompt":"Say hello in five words.","provider":"local","max_tokens":32}}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
answered() {
  curl -sf "http://$http/api/jobs/$id" | python3 -c '
import json, sys
j = json.load(sys.stdin)
if j["state"] in ("failed", "cancelled"): print(j, file=sys.stderr); sys.exit(2)
sys.exit(0 if j["state"] == "succeeded" and j["result"]["text"] else 1)'
}
wait_for "the first answer" answered
t_answer=$(now)
python3 - "$start" "$t_build" "$t_up" "$t_answer" "$(git rev-parse --short "$rev")" "$(nproc)" <<'PY'
import sys
s, b, u, a = map(float, sys.argv[1:5])
m = lambda x: f"{int(x // 60)} min {x % 60:04.1f} s"
print(f"cold start of dev.sh at {sys.argv[5]} on {sys.argv[6]} cores:")
print(f"  cargo build          {m(b - s)}")
print(f"  cluster up           {m(u - b)}   (workers registered with ai.query)")
print(f"  first chat answer    {m(a - u)}")
print(f"  total                {m(a - s)}")
PY
