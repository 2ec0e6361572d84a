#!/usr/bin/env bash
# Faena's PostgreSQL store beside Graphile Worker (npm graphile-worker, in
# bench/graphile) on the same PostgreSQL, and beside Faena's SQLite store,
# in one run (testkit/src/bin/faena-pg-bench.rs). Prints the ratios.
#
#   ./scripts/bench-postgres.sh [jobs=20000] [low-load samples=2000]   (~3 min; not part of CI)
#
#   FAENA_BENCH_GRAPHILE_CONCURRENCY=24,10   Graphile Worker's concurrency per run
#   FAENA_STORE_WRITERS=4                    the PostgreSQL master's writers (default 1)
set -euo pipefail
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/prereqs.sh
. scripts/lib/prereqs.sh
need_build_tools
need_web
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || install_packages postgresql
(cd bench/graphile && npm ci --no-audit --no-fund --loglevel=error)
cargo build --locked --release -p faena-master -p faena-worker -p faena-testkit --bins
exec target/release/faena-pg-bench "$@"
