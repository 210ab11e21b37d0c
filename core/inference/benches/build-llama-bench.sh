#!/usr/bin/env bash
# Builds llama.cpp's `llama-bench` for the side-by-side LLM benchmark (benches/llm.rs).
#
# llama.cpp's sources are taken from the source distribution of the `llama-cpp-python` package
# (it vendors llama.cpp), fetched with pip into a scratch directory OUTSIDE the repository.
# Nothing is copied into the repository. Idempotent: an existing build is reused.
#
# Usage: core/inference/benches/build-llama-bench.sh [VERSION]
#   VERSION   llama-cpp-python version (default below; pin it so runs are comparable)
#   NEXUS_BENCH_CACHE  scratch directory (default: ~/.cache/nexus-bench)
# Prints the path of the llama-bench binary on its last line, e.g.
#   LLAMA_BENCH=$(core/inference/benches/build-llama-bench.sh | tail -n1) \
#     cargo bench -p nexus-inference --bench llm
# It also builds `llama-completion` next to it, for the chat start-up benchmark:
#   LLAMA_CPP_BIN_DIR=$(dirname "$(core/inference/benches/build-llama-bench.sh | tail -n1)") \
#     cargo bench -p nexus-cli --bench startup
set -euo pipefail

VERSION="${1:-0.3.36}"
CACHE="${NEXUS_BENCH_CACHE:-$HOME/.cache/nexus-bench}"
SRC="$CACHE/llama-cpp-python-$VERSION"
LLAMA="$SRC/vendor/llama.cpp"
BIN="$LLAMA/build/bin/llama-bench"

if [[ -x "$BIN" && -x "$LLAMA/build/bin/llama-completion" ]]; then
    echo "llama-bench already built" >&2
    echo "$BIN"
    exit 0
fi

if ! command -v cmake >/dev/null 2>&1; then
    echo "installing cmake" >&2
    if [[ $(id -u) -eq 0 ]]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq cmake build-essential >&2
fi

mkdir -p "$CACHE"
if [[ ! -d "$LLAMA" ]]; then
    echo "fetching the llama-cpp-python $VERSION source distribution" >&2
    python3 -m pip download --quiet --no-deps --no-binary=:all: \
        --dest "$CACHE" "llama-cpp-python==$VERSION" >&2
    tar -xzf "$CACHE/llama_cpp_python-$VERSION.tar.gz" -C "$CACHE" 2>/dev/null \
        || tar -xzf "$CACHE/llama-cpp-python-$VERSION.tar.gz" -C "$CACHE"
    if [[ -d "$CACHE/llama_cpp_python-$VERSION" && ! -d "$SRC" ]]; then
        mv "$CACHE/llama_cpp_python-$VERSION" "$SRC"
    fi
fi

JOBS="${JOBS:-$(nproc)}"
echo "building llama-bench with $JOBS jobs (a few minutes)" >&2
cmake -S "$LLAMA" -B "$LLAMA/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
    -DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF >&2
cmake --build "$LLAMA/build" --target llama-bench llama-completion -j "$JOBS" >&2

echo "$BIN"
