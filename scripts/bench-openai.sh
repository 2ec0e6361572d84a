#!/usr/bin/env bash
# Issue 31's benchmarks (testkit/src/bin/faena-openai-bench.rs), in one run:
#   overhead  time to first token and requests/s for 1, 32 and 256 streaming
#             clients: straight to a fake OpenAI-compatible backend
#             (faena-fake-ai), through LiteLLM's proxy (PyPI litellm[proxy],
#             pinned in bench/litellm) and through Faena, alternated; Faena
#             on its embedded broker, then on Mosquitto (Debian's);
#   overload  two keys at 9:1 load on 10x more clients than AI slots;
#   failover  100 streams cut mid-answer, continued by the fallback;
#   local     the local model's tokens/s through /v1 and as a Faena job.
#
#   ./scripts/bench-openai.sh [overhead|overload|failover|local|all]   (all: ~15 min; not part of CI)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/prereqs.sh
. scripts/lib/prereqs.sh
# shellcheck source=scripts/lib/bench.sh
. scripts/lib/bench.sh
help_if_asked "$@"
need_build_tools
what=${1:-all}
cargo build --locked --release -p faena-master -p faena-worker -p faena-testkit --bins
bench=target/release/faena-openai-bench

if [ "$what" = overhead ] || [ "$what" = all ]; then
  # shellcheck source=scripts/lib/venv.sh
  . scripts/lib/venv.sh
  need_packages mosquitto:mosquitto mosquitto_passwd:mosquitto
  venv=bench/litellm/.venv
  need_venv "$venv" bench/litellm/requirements.txt
  dir=$(mktemp -d)
  fake_port=$(free_port)
  proxy_port=$(free_port)
  target/release/faena-fake-ai "127.0.0.1:$fake_port" >"$dir/fake.log" 2>&1 &
  fake_pid=$!
  cat >"$dir/litellm.yaml" <<YAML
model_list:
  - model_name: fake
    litellm_params:
      model: openai/fake-gpt
      api_base: http://127.0.0.1:$fake_port/v1
      api_key: none
litellm_settings:
  telemetry: false
YAML
  LITELLM_LOCAL_MODEL_COST_MAP=True NO_PROXY=127.0.0.1 "$venv/bin/litellm" --config "$dir/litellm.yaml" \
    --host 127.0.0.1 --port "$proxy_port" >"$dir/litellm.log" 2>&1 &
  proxy_pid=$!
  trap 'kill "$fake_pid" "$proxy_pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
  for _ in $(seq 1 120); do
    curl -sf "http://127.0.0.1:$proxy_port/health/liveliness" >/dev/null 2>&1 && break
    kill -0 "$proxy_pid" 2>/dev/null || { cat "$dir/litellm.log" >&2; exit 1; }
    sleep 1
  done
  "$bench" overhead "http://127.0.0.1:$fake_port" "http://127.0.0.1:$proxy_port"
  kill "$fake_pid" "$proxy_pid" 2>/dev/null || true
fi
for part in overload failover local; do
  if [ "$what" = "$part" ] || [ "$what" = all ]; then
    [ "$part" = local ] && FAENA_TEST_LOCAL_MODEL=$(./scripts/fetch-model.sh) && export FAENA_TEST_LOCAL_MODEL
    "$bench" "$part"
  fi
done
