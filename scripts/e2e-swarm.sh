#!/usr/bin/env bash
# End-to-end test of the Swarm stack on this machine, from a Docker engine and
# nothing else of Faena's: build, deploy, verify, re-run build and deploy
# (nothing changes), run RandomX and AI jobs (AI against the fake Gemini
# service of stack.test.yml), scale to 5 workers (monitor.sh shows them), kill
# a worker container mid-job, scale down to 2 mid-job, read the JSON log
# lines, check that anonymous MQTT is refused, stop; then the same images
# with docker-compose on one host. Prints each step's time and a summary;
# exits non-zero when a step fails. Heavy (images, a swarm, 5 workers): not part of CI.
#
#   ./scripts/e2e-swarm.sh [--keep]
#
#   --keep   leave the stack running at the end (or after a failure)
#
# It deploys its own stack, FAENA_STACK=faena-e2e, on 127.0.0.1:18888 (web,
# REST) and 127.0.0.1:11883 (MQTT), so it never touches a deployed 'faena',
# and removes it with its volumes and secrets when done. Only loopback
# traffic: the stack is reached through the ports it publishes.
set -euo pipefail
cd "$(dirname "$0")/.."

keep=0
for arg in "$@"; do
  case "$arg" in
    -h | --help) sed -n '2,/^[^#]/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    --keep) keep=1 ;;
    *) echo "e2e-swarm.sh: unknown option '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

export FAENA_STACK=${FAENA_STACK:-faena-e2e}
export FAENA_WEB_PORT=${FAENA_WEB_PORT:-18888}
export FAENA_MQTT_PORT=${FAENA_MQTT_PORT:-11883}
. scripts/lib/stack.sh

work=$(mktemp -d)
summary=()
started=$(now_ms)
current=""

finish() {
  local rc=$?
  trap - EXIT
  if [ "$rc" -ne 0 ] && [ -n "$current" ]; then
    summary+=("$current|FAILED|-")
    echo "--- step '$current' failed; the stack as it is:" >&2
    docker service ls --filter "label=com.docker.stack.namespace=$FAENA_STACK" >&2 || true
    for s in master worker mosquitto; do
      echo "--- last log lines of $s:" >&2
      docker service logs --raw --tail 15 "${FAENA_STACK}_$s" >&2 2>&1 || true
    done
    if [ "$keep" = 0 ]; then
      ./scripts/stop.sh --volumes --secrets >/dev/null 2>&1 || true
      ./scripts/compose.sh down --volumes >/dev/null 2>&1 || true
    fi
  fi
  jobs -p | xargs -r kill 2>/dev/null || true
  rm -rf "$work"
  echo
  echo "e2e-swarm summary (stack $FAENA_STACK):"
  printf '  %-72s %-7s %8s\n' STEP RESULT SECONDS
  local r name result took
  for r in "${summary[@]}"; do
    IFS='|' read -r name result took <<<"$r"
    printf '  %-72s %-7s %8s\n' "$name" "$result" "$took"
  done
  printf '  %-72s %-7s %8s\n' total "$([ "$rc" -eq 0 ] && echo ok || echo FAILED)" "$(since "$started")"
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

# step NAME: starts a step (the previous one passed).
step_t=0
step() {
  [ -n "$current" ] && summary+=("$current|ok|$(since "$step_t")")
  current=$1
  step_t=$(now_ms)
  echo
  echo "### $current" >&2
}
fail() {
  echo "FAIL: $*" >&2
  exit 1
}

post_job() {
  curl -fsS -XPOST "$(api /api/jobs)" -H 'content-type: application/json' -d "$1" | jq -r .id
}
wait_job() {
  local id=$1 job
  for _ in $(seq 600); do
    job=$(curl -fsS "$(api "/api/jobs/$id")")
    case "$(echo "$job" | jq -r .state)" in succeeded | failed | cancelled) echo "$job"; return 0 ;; esac
    sleep 0.5
  done
  fail "job $id did not finish within 5 minutes: $job"
}

step "prerequisites (docker engine, swarm, tools)"
need_docker
need_swarm
need_packages curl:curl jq:jq mosquitto_sub:mosquitto-clients
docker service ls --filter "label=com.docker.stack.namespace=$FAENA_STACK" -q | grep -q . &&
  fail "stack '$FAENA_STACK' already exists; remove it with FAENA_STACK=$FAENA_STACK ./scripts/stop.sh --volumes --secrets"

step "build.sh --test (binaries, images)"
./scripts/build.sh --test

step "deploy.sh --test (secrets, stack)"
GEMINI_API_KEY="e2e-test-key-$(date +%s)" FAENA_WORKERS=2 ./scripts/deploy.sh --test

step "verify.sh (converge, health, one job per kind)"
./scripts/verify.sh --timeout 300

step "re-run build.sh and deploy.sh: nothing changes"
# Swarm replaces a service's tasks exactly when its task template changes.
templates() {
  docker service ls --filter "label=com.docker.stack.namespace=$FAENA_STACK" -q |
    xargs docker service inspect --format '{{.Spec.Name}} {{json .Spec.TaskTemplate}}' | sort | sha256sum
}
before=$(templates)
./scripts/build.sh --test --no-cargo 2>&1 | grep -q 'building' && fail "build.sh rebuilt an image nothing changed in"
GEMINI_API_KEY="ignored-when-the-secret-exists" FAENA_WORKERS=2 ./scripts/deploy.sh --test
after=$(templates)
[ "$before" = "$after" ] || fail "deploy.sh changed task templates although nothing changed (tasks would restart)"

step "RandomX jobs: hash batch and mine"
id=$(post_job '{"kind": "randomx.hash", "params": {"key": "test key 000", "inputs": ["This is a test", "Lorem ipsum dolor sit amet"]}}')
job=$(wait_job "$id")
echo "$job" | jq -e '.state == "succeeded" and .result.hashes[0] == "639183aae1bf4c9a35884cb46b09cad9175f04efd7684e7262a0ac1c2f0b4e3f"
  and .result.hashes[1] == "300a0adb47603dedb42228ccb2b211104f4da45af709cd7547cd049e9489c969"' >/dev/null ||
  fail "randomx.hash batch: $job"
id=$(post_job '{"kind": "randomx.mine", "params": {"key": "6532652d6d696e65", "blob": "'"$(printf '07%.0s' $(seq 76))"'", "difficulty": 20, "nonce_count": 300}}')
job=$(wait_job "$id")
echo "$job" | jq -e '.state == "succeeded" and .result.hashes >= 300 and (.result.shares | length) > 0
  and ([.result.ranges[].count] | add) == 300' >/dev/null || fail "randomx.mine: $job"
echo "  mine: $(echo "$job" | jq -r '"\(.result.hashes) hashes, \(.result.shares | length) shares by \([.result.workers[].worker] | join(", "))"')" >&2

step "AI job against the fake Gemini (streamed)"
prompt='[[fake {\"chunks\": [\"Hello\", \" from\", \" the\", \" swarm\"], \"gap_ms\": 150}]] greet'
id=$(post_job "{\"kind\": \"ai.query\", \"params\": {\"prompt\": \"$prompt\", \"provider\": \"gemini\"}}")
curl -fsSN --max-time 60 "$(api "/api/jobs/$id/events")" >"$work/ai.sse" || true
job=$(wait_job "$id")
echo "$job" | jq -e '.state == "succeeded" and .result.text == "Hello from the swarm" and .result.provider == "gemini"' >/dev/null ||
  fail "ai.query: $job"
chunks=$(grep -c '^event: progress' "$work/ai.sse" || true)
[ "$chunks" -ge 4 ] || fail "ai.query streamed $chunks progress events, expected 4: $(cat "$work/ai.sse")"
echo "  ai.query: \"$(echo "$job" | jq -r .result.text)\" in $chunks streamed pieces" >&2

step "scale.sh worker 5 (master lists 5 workers)"
./scripts/scale.sh worker 5
for _ in $(seq 120); do
  online=$(curl -fsS "$(api /api/workers)" | jq '[.workers[] | select(.state == "online")] | length')
  [ "$online" -eq 5 ] && break
  sleep 1
done
[ "$online" -eq 5 ] || fail "the master lists $online online workers, expected 5"
./scripts/monitor.sh --once

step "kill a worker container mid-job (the job finishes once)"
# Log lines from now on, as an operator would read them (observer account).
./scripts/logs.sh -n 5 >"$work/logs.out" 2>"$work/logs.err" &
logs_pid=$!
# A mining job long enough to be spread over the workers; kill one of them
# while it holds a unit.
id=$(post_job '{"kind": "randomx.mine", "params": {"key": "6b696c6c", "blob": "'"$(printf '11%.0s' $(seq 76))"'", "difficulty": 50, "nonce_count": 1500}}')
curl -fsSN --max-time 600 "$(api "/api/jobs/$id/events")" >"$work/mine.sse" 2>/dev/null &
sse_pid=$!
victim=""
for _ in $(seq 240); do
  victim=$(curl -fsS "$(api /api/workers)" | jq -r '[.workers[] | select(.running > 0) | .id] | first // empty')
  [ -n "$victim" ] && break
  sleep 0.25
done
[ -n "$victim" ] || fail "no worker took a unit of job $id"
slot=${victim#worker-}
container=$(docker ps --format '{{.ID}} {{.Names}}' | awk -v p="${FAENA_STACK}_worker.$slot." 'index($2, p) == 1 { print $1 }')
[ -n "$container" ] || fail "no container for $victim"
docker kill "$container" >/dev/null
echo "  killed $victim (container $container) while it ran a unit of $id" >&2
job=$(wait_job "$id")
wait "$sse_pid" || true
echo "$job" | jq -e '.state == "succeeded"' >/dev/null || fail "the mining job did not succeed after the kill: $job"
# Once: its finished ranges cover the 1500 nonces exactly, without overlap, and no share is counted twice.
echo "$job" | jq -e '
  (.result.ranges | sort_by(.start)) as $r
  | ([$r[].count] | add) == 1500
  and ([range(1; $r | length) as $i | $r[$i - 1].start + $r[$i - 1].count == $r[$i].start] | all)
  and ([.result.shares[].nonce] | length) == ([.result.shares[].nonce] | unique | length)' >/dev/null ||
  fail "the job's result is not one exact cover of its range: $(echo "$job" | jq -c .result.ranges)"
# The master noticed the loss: the job's watchers were told its range is split again.
lost=$(grep -c '^event: requeued' "$work/mine.sse" || true)
[ "$lost" -ge 1 ] || fail "no unit of the job was lost: the kill did not interrupt it ($(grep '^event:' "$work/mine.sse" | sort | uniq -c | tr '\n' ' '))"
finals=$(grep -c -E '^event: (succeeded|failed|cancelled)' "$work/mine.sse" || true)
[ "$finals" -eq 1 ] || fail "watchers saw $finals final events, expected 1"
echo "  $(echo "$job" | jq -r '"\(.result.hashes) hashes over \(.result.ranges | length) ranges by \([.result.workers[].worker] | unique | join(", ")), \(.result.shares | length) shares"'); one final event; $(grep -m1 -o '"reason":"[^"]*"' "$work/mine.sse")" >&2

step "scale.sh worker 2 mid-job (drained workers hand back, the job finishes)"
id=$(post_job '{"kind": "randomx.mine", "params": {"key": "6472616e", "blob": "'"$(printf '22%.0s' $(seq 76))"'", "difficulty": 50, "nonce_count": 1500}}')
for _ in $(seq 240); do
  busy=$(curl -fsS "$(api /api/workers)" | jq '[.workers[] | select(.running > 0)] | length')
  [ "$busy" -ge 3 ] && break
  sleep 0.25
done
[ "$busy" -ge 3 ] || fail "the job never ran on 3 workers at once"
./scripts/scale.sh worker 2
job=$(wait_job "$id")
echo "$job" | jq -e '.state == "succeeded" and ([.result.ranges[].count] | add) == 1500' >/dev/null ||
  fail "the job did not finish whole after the scale-down: $(echo "$job" | jq -c '{state, error, ranges: .result.ranges}')"
echo "  $(echo "$job" | jq -r '"\(.result.hashes) hashes by \([.result.workers[].worker] | unique | join(", ")); scaled down from 5 to 2 while \(.result.workers | length) workers mined it"')" >&2

step "logs.sh shows JSON log lines"
for _ in $(seq 60); do
  kill -0 "$logs_pid" 2>/dev/null || break
  sleep 1
done
kill "$logs_pid" 2>/dev/null || true
lines=$(wc -l <"$work/logs.out")
[ "$lines" -ge 5 ] || fail "logs.sh printed $lines lines: $(cat "$work/logs.out" "$work/logs.err")"
jq -e -s 'all(.v == 1 and (.component | type) == "string" and (.message | type) == "string")' "$work/logs.out" >/dev/null ||
  fail "logs.sh printed lines that are not Faena's JSON log lines: $(head -5 "$work/logs.out")"
echo "  e.g. $(head -1 "$work/logs.out" | cut -c1-160)" >&2

step "anonymous mosquitto_sub is refused"
if mosquitto_sub -h 127.0.0.1 -p "$FAENA_MQTT_PORT" -t "$FAENA_TOPIC_PREFIX/#" -C 1 -W 5 >"$work/anon.out" 2>&1; then
  fail "an anonymous client read: $(cat "$work/anon.out")"
fi
grep -q 'not authorised' "$work/anon.out" || fail "anonymous client failed for another reason: $(cat "$work/anon.out")"
echo "  $(cat "$work/anon.out")" >&2

if [ "$keep" = 1 ]; then
  step "stop (skipped: --keep)"
else
  step "stop.sh --volumes --secrets"
  ./scripts/stop.sh --volumes --secrets
  [ -z "$(service_replicas)" ] || fail "services remain"
fi

step "compose.sh up 2: the same images on one host (docker-compose)"
FAENA_RANDOMX_MODE=light ./scripts/compose.sh up 2
for _ in $(seq 240); do
  online=$(curl -fsS "$(api /api/workers)" 2>/dev/null | jq '[.workers[] | select(.state == "online")] | length' || echo 0)
  [ "$online" -eq 2 ] && break
  sleep 0.5
done
[ "$online" -eq 2 ] || fail "docker-compose: $online workers online, expected 2"
id=$(post_job '{"kind": "randomx.hash", "params": {"key": "test key 000", "input": "This is a test"}}')
job=$(wait_job "$id")
echo "$job" | jq -e '.result.hash == "639183aae1bf4c9a35884cb46b09cad9175f04efd7684e7262a0ac1c2f0b4e3f"' >/dev/null ||
  fail "docker-compose: randomx.hash: $job"
if [ "$keep" = 0 ]; then
  ./scripts/compose.sh down --volumes
fi
summary+=("$current|ok|$(since "$step_t")")
current=""
