#!/usr/bin/env bash
# genq's Q8_0 matrix kernel beside ggml's on GPT-2 124M's matrix shapes (q8_0_matmul.cpp says
# what it checks and measures), linked against the llama.cpp libraries of genq's release build.
#   bench/kernels/run.sh        one thread (per-core speed)
#   bench/kernels/run.sh 2      two threads, as the worker runs on this machine
# Run nothing else meanwhile: every process shares the cores.

source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

build_release
# The llama.cpp build with genq's kernels as they are now: each cargo feature set has a build
# directory of its own, and only those cargo rebuilt since the kernels last changed are current.
lib=
for dir in "$GENQ_ROOT"/target/release/build/llama-cpp-sys-2-*/out; do
    archive="$dir/lib/libggml-cpu.a"
    current=true
    for source in "$GENQ_ROOT"/engine/ggml/*; do
        [ "$archive" -nt "$source" ] || current=false
    done
    if $current && ! grep -q '^GGML_OPENMP:BOOL=ON' "$dir/build/CMakeCache.txt"; then
        lib="$dir/lib"
        break
    fi
done
if [ -z "$lib" ]; then
    warn "no llama.cpp build (without OpenMP) of genq's kernels as they are now under target/release/build"
    exit 1
fi
include="$(dirname "$lib")/include"

out="$GENQ_ROOT/target/release/q8_0_matmul_bench"
# The same instruction sets as the llama.cpp build (AVX2, FMA, F16C; see scripts/peer-build.sh).
g++ -O2 -std=c++17 -mavx2 -mfma -mf16c -I"$include" "$GENQ_ROOT/bench/kernels/q8_0_matmul.cpp" \
    "$lib/libggml-cpu.a" "$lib/libggml-base.a" -lpthread -lm -o "$out"
"$out" "${1:-1}"
