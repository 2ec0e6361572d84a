#!/usr/bin/env bash
# Runs the real OpenAI clients (PyPI's `openai` and LiteLLM, pinned in
# requirements.txt) against a Faena master's /v1, in a virtual environment
# made here once.
#
#   examples/openai-clients/run.sh BASE_URL API_KEY MODEL   check (check.py)
#   examples/openai-clients/run.sh --setup                  set up only
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
  sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
venv="$here/.venv"

# shellcheck source=SCRIPTDIR/../../scripts/lib/venv.sh
. "$here/../../scripts/lib/venv.sh"

setup() {
  need_venv "$venv" "$here/requirements.txt"
}

run_locked "$here/.setup.lock" setup
[ "${1:-}" = "--setup" ] && exit 0
# LiteLLM reads its model price list from the package, not from GitHub:
# the checks reach nothing but the master.
export LITELLM_LOCAL_MODEL_COST_MAP=True NO_PROXY=127.0.0.1,localhost
exec "$venv/bin/python" -u "$here/check.py" "$@"
