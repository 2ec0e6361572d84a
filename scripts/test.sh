#!/usr/bin/env bash
# Installs what the tests need (cmake, mosquitto, node + the page's npm
# packages, chromium, shellcheck) if missing, lints the scripts, builds the
# binaries the integration tests start, and runs every test.
#
#   ./scripts/test.sh [cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/prereqs.sh
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
  sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
need_build_tools
need_packages mosquitto:mosquitto mosquitto_sub:mosquitto-clients mosquitto_passwd:mosquitto curl:curl
need_web
# The page's tests drive Debian's chromium (headless) with playwright-core.
need_packages chromium:chromium

# The operator scripts: linted, and each answers --help.
need_packages shellcheck:shellcheck
shellcheck -x scripts/*.sh scripts/lib/*.sh mosquitto/setup.sh docker/healthcheck.sh
for s in scripts/*.sh; do
  [ "$s" = scripts/test.sh ] && continue
  bash "$s" --help >/dev/null || { echo "$s --help failed" >&2; exit 1; }
done

cargo build --locked --workspace --bins
cargo test --locked --workspace "$@"
