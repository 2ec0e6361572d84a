#!/usr/bin/env bash
# Mining across a RandomX seed change (faena-seed-bench): a regtest monerod
# chain grown to just before its first key change, mined across it by a
# master and two fast-mode workers, with the next key built ahead and, as
# the reference in the same run, at the switch. Prints each worker's hashing
# gap and the stale shares at the switch. Not part of CI (~15 minutes).
#
#   scripts/bench-seed.sh            env: DIFFICULTY (2000), START (2070), ROUNDS (1)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/prereqs.sh
help_if_asked "$@"
need_build_tools
need_packages monerod:monero
cargo build --locked --release --workspace --bins
target/release/faena-seed-bench "$@"
