#!/usr/bin/env bash
# Installs what the tests need (cmake, mosquitto, ...) if missing, builds the
# binaries the integration tests start, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/prereqs.sh
need_build_tools
need_packages mosquitto:mosquitto mosquitto_sub:mosquitto-clients mosquitto_passwd:mosquitto curl:curl

cargo build --locked --workspace --bins
cargo test --locked --workspace "$@"
