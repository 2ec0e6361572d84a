#!/usr/bin/env bash
# Makes the Python worker's virtual environment (pip, requirements.txt),
# generates its gRPC stubs from the repository's proto/proto/faena/v1/master.proto
# (never committed), and starts it with the Rust worker's settings
# (FAENA_MASTER_URL, FAENA_MQTT_URL, FAENA_CLUSTER_TOKEN, FAENA_WORKER_ID, ...).
#
#   examples/python-worker/run.sh            set up when needed, then run
#   examples/python-worker/run.sh --setup    set up only
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
proto_dir=$(cd "$here/../../proto/proto" && pwd)
proto="$proto_dir/faena/v1/master.proto"
venv="$here/.venv"
gen="$here/gen"

# shellcheck source=SCRIPTDIR/../../scripts/lib/venv.sh
. "$here/../../scripts/lib/venv.sh"

setup() {
  need_venv "$venv" "$here/requirements.txt"
  # Stubs follow the .proto: made again whenever it is newer than they are.
  if [ ! -f "$gen/faena/v1/master_pb2_grpc.py" ] || [ "$proto" -nt "$gen/faena/v1/master_pb2_grpc.py" ]; then
    local tmp
    tmp=$(mktemp -d "$here/.gen.XXXXXX")
    "$venv/bin/python" -m grpc_tools.protoc -I "$proto_dir" --python_out="$tmp" --grpc_python_out="$tmp" "$proto"
    rm -rf "$gen"
    mv "$tmp" "$gen"
  fi
}

# Several workers may start at once from one checkout: one sets up, the others wait.
run_locked "$here/.setup.lock" setup
[ "${1:-}" = "--setup" ] && exit 0
exec "$venv/bin/python" -u "$here/worker.py" "$@"
