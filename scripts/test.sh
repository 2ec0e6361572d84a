#!/usr/bin/env bash
# Installs what the tests need (cmake, libclang, mosquitto, node + the page's
# npm packages, chromium, postgresql, shellcheck, monerod, promtool, the default local model,
# the Python worker's venv) if missing, lints the scripts and the Rust
# code (rustfmt, clippy with warnings as errors), builds the binaries the
# integration tests start, and runs every test.
#
#   ./scripts/test.sh [cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/prereqs.sh
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
need_build_tools
need_packages mosquitto:mosquitto mosquitto_sub:mosquitto-clients mosquitto_passwd:mosquitto curl:curl
need_web
# The page's tests drive Debian's chromium (headless) with playwright-core.
need_packages chromium:chromium
# The store's tests run a real PostgreSQL (Debian's server, initdb'd by the
# test harness on a free loopback port; no system service is used).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || install_packages postgresql
# Mining tests run a real regtest Monero node and its wallet RPC.
need_packages monerod:monero monero-wallet-rpc:monero
# The local AI provider's tests run the real default model (fetched once).
FAENA_TEST_LOCAL_MODEL=$(./scripts/fetch-model.sh)
export FAENA_TEST_LOCAL_MODEL

# The Python worker's tests start it against a real master: its virtual
# environment (pip) and gRPC stubs are made once here, not inside a test's wait.
examples/python-worker/run.sh --setup
# The OpenAI API's tests run PyPI's `openai` and LiteLLM against a master.
examples/openai-clients/run.sh --setup

# The operator scripts: linted, and each answers --help.
need_packages shellcheck:shellcheck
shellcheck -x scripts/*.sh scripts/lib/*.sh mosquitto/setup.sh docker/healthcheck.sh examples/python-worker/run.sh \
  examples/openai-clients/run.sh \
  postgres/entrypoint.sh
for s in scripts/*.sh; do
  [ "$s" = scripts/test.sh ] && continue
  bash "$s" --help >/dev/null || { echo "$s --help failed" >&2; exit 1; }
done

# The monitoring overlay: Prometheus's config and Faena's alert rules are
# valid (Debian's promtool), and each alert fires in a promtool test case.
need_packages promtool:prometheus
promtool check config monitoring/prometheus.yml
promtool test rules monitoring/alerts.test.yml

# CI builds once from a clean clone: incremental state would only take disk.
if [ -n "${CI:-}" ]; then
  export CARGO_INCREMENTAL=0
fi
df -h . /tmp | sed 's/^/disk: /'

# Lints are law: formatting and clippy (warnings are errors) before any test.
rustup component add rustfmt clippy >/dev/null 2>&1 || true
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings

cargo build --locked --workspace --bins
cargo test --locked --workspace "$@"
# The end-to-end suites that touch the job store, again on PostgreSQL: each
# cluster's master gets a server of its own (FAENA_TEST_STORE, testkit).
FAENA_TEST_STORE=postgres cargo test --locked -p faena-testkit --test jobs_api --test job_actions \
  --test failures --test queueing --test e2e --test live_config --test job_semantics "$@"
# Those that store jobs with dependencies, unique keys and failures, on
# PostgreSQL with four writers (FAENA_STORE_WRITERS).
FAENA_TEST_STORE=postgres-writers cargo test --locked -p faena-testkit --test jobs_api --test failures \
  --test job_semantics "$@"
# And those that read, restore and list jobs, on SQLite over four files.
FAENA_TEST_STORE=sqlite-shards cargo test --locked -p faena-testkit --test jobs_api --test job_actions \
  --test failures --test job_semantics "$@"
