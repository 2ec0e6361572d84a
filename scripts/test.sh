#!/usr/bin/env bash
# Installs what the tests need (cmake, mosquitto, node + the page's npm
# packages, ...) if missing, builds the
# binaries the integration tests start, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/prereqs.sh
need_build_tools
need_packages mosquitto:mosquitto mosquitto_sub:mosquitto-clients mosquitto_passwd:mosquitto curl:curl
need_web
# The page's tests drive Debian's chromium (headless) with playwright-core.
need_packages chromium:chromium

cargo build --locked --workspace --bins
cargo test --locked --workspace "$@"
