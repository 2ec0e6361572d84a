# shellcheck shell=bash
# A Python virtual environment made from a pinned requirements file, made
# again only when the file changed. Sourced by the scripts that run Python
# (examples/*/run.sh, scripts/bench-openai.sh).

# need_venv VENV REQUIREMENTS: VENV/bin/python with REQUIREMENTS installed.
need_venv() {
  local venv=$1 requirements=$2
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    # shellcheck source=scripts/lib/prereqs.sh
    . "$(dirname "${BASH_SOURCE[0]}")/prereqs.sh"
    install_packages python3-venv
  fi
  if [ ! -x "$venv/bin/python" ] || ! cmp -s "$requirements" "$venv/.faena-requirements"; then
    echo "installing $(grep -vc '^#' "$requirements") Python packages into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/.faena-requirements"
  fi
}

# run_locked LOCKFILE COMMAND...: COMMAND while holding LOCKFILE, so that
# several processes starting at once from one checkout set up once.
run_locked() {
  local lock=$1
  shift
  exec 9>"$lock"
  flock 9
  "$@"
  flock -u 9
  exec 9>&-
}
