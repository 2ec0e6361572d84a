#!/usr/bin/env bash
# Several masters under fire, on a real PostgreSQL and Mosquitto (not part
# of CI; ~10 min): the takeover benchmark (the leader kill -9ed 20 times
# under load, default lease), the cost of a standby when nothing fails,
# the chaos drill on two and on three masters (leader, standby, workers
# and broker killed, the leader paused, for 60 s each), and the store's own
# failover (a Patroni pair on etcd, its primary killed under load). Each
# prints its figures and fails on a lost, doubled or fenced-through job.
#
#   ./scripts/drill-masters.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/prereqs.sh
. scripts/lib/prereqs.sh
help_if_asked "$@"
need_build_tools
need_packages mosquitto:mosquitto patroni:patroni etcd:etcd-server
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || install_packages postgresql
cargo build --locked --release -p faena-master -p faena-worker -p faena-testkit --bins
target/release/faena-takeover-bench 20
target/release/faena-ha-bench 20000 2000
target/release/faena-ha-drill 2 60 10000
target/release/faena-ha-drill 3 60 10000
target/release/faena-patroni-drill 500
