#!/usr/bin/env bash
# The Stratum server under load (faena-stratum-bench): 1,000 and 10,000
# simulated miners at vardiff rates (master RSS per connection, CPU, shares
# verified per second, p99 submit -> reply), the verifier flat out in light
# and fast mode, and, with XMRIG set to an XMRig 6.x binary, XMRig straight
# at monerod against the same XMRig through Faena. Not part of CI.
#
#   scripts/bench-stratum.sh [--quick]
#   env: XMRIG=/path/to/xmrig (XMRig is not in Debian: build it from its source)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/prereqs.sh
help_if_asked "$@"
need_build_tools
need_packages monerod:monero
# 10,000 miners are 10,000 sockets on each side.
ulimit -n "$(ulimit -Hn)"
cargo build --locked --release --workspace --bins
target/release/faena-stratum-bench "$@"
