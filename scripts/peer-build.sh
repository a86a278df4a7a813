#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` and `llama-batched-bench`, the benchmark's peer and limit rows,
# from PyPI's llama-cpp-python source distribution (it vendors the whole llama.cpp tree; neither
# tool is packaged here). Everything goes under .genq/peer/ (gitignored):
#   .genq/peer/src/     the downloaded sdist, unpacked
#   .genq/peer/build/   the cmake build; the binaries and their shared libraries are in build/bin/
#
#   scripts/peer-build.sh                 build once (about 8 minutes on 2 cores); later runs only
#                                         print where the binaries are
#   GENQ_PEER_VERSION=0.3.36 scripts/peer-build.sh
#                                         a given llama-cpp-python release instead of the newest
#   GENQ_PEER_CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_OPENMP=ON" scripts/peer-build.sh
#                                         other llama.cpp build options (rebuilds when they change)
#
# llama.cpp is built with the CPU options genq's own llama.cpp gets from llama-cpp-sys-2 (see its
# CMakeCache.txt under target/release/build/): AVX2, FMA, F16C and BMI2, no -march=native, no
# OpenMP. So the rows compare serving, not instruction sets or thread pools. llama.cpp's default
# (-march=native) is also unusable on this machine kind: the CPU reports AMX, the native build uses
# it, and both binaries die with SIGILL at the first matrix multiplication (`tilezero`: the sandbox
# does not grant AMX). The server's web UI is not fetched (LLAMA_USE_PREBUILT_UI=OFF: no download
# at build time; the benchmark runs it with --no-webui anyway).
#
# The last line of stdout is the bin directory; the binaries need it in LD_LIBRARY_PATH.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

peer="$GENQ_ROOT/.genq/peer"
src="$peer/src"
build="$peer/build"
bin="$build/bin"

options=(-DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_CURL=OFF
    -DLLAMA_OPENSSL=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
    -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_OPENMP=OFF -DLLAMA_USE_PREBUILT_UI=OFF)
# shellcheck disable=SC2206 # split on purpose: several options in one variable
options+=(${GENQ_PEER_CMAKE_ARGS:-})

# The newest source already here (or the asked-for version), else a download.
tree=$(ls -d "$src"/llama_cpp_python-${GENQ_PEER_VERSION:-*}/vendor/llama.cpp 2>/dev/null |
    sort -V | tail -1 || true)
if [ -z "$tree" ]; then
    command -v python3 >/dev/null || { warn "python3 (with pip) is needed to fetch the source"; exit 1; }
    spec="llama-cpp-python${GENQ_PEER_VERSION:+==$GENQ_PEER_VERSION}"
    say "downloading the $spec source distribution from PyPI"
    mkdir -p "$src"
    python3 -m pip download -q --no-deps --no-binary :all: "$spec" -d "$src"
    sdist=$(ls "$src"/llama_cpp_python-${GENQ_PEER_VERSION:-*}.tar.gz | sort -V | tail -1)
    tar xzf "$sdist" -C "$src"
    tree="${sdist%.tar.gz}/vendor/llama.cpp"
    [ -f "$tree/CMakeLists.txt" ] || { warn "no llama.cpp tree in $sdist"; exit 1; }
fi

# What the binaries were built from and with; a different source or option rebuilds them.
stamp="$build/genq-peer-build"
wanted="$tree ${options[*]}"
if [ -x "$bin/llama-server" ] && [ -x "$bin/llama-batched-bench" ] &&
    [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
    say "llama-server and llama-batched-bench already built in $bin"
    echo "$bin"
    exit 0
fi

ensure_build_tools
say "building llama-server and llama-batched-bench from $tree (about 8 minutes on 2 cores)"
rm -f "$stamp" "$build/CMakeCache.txt"
cmake -S "$tree" -B "$build" "${options[@]}" >/dev/null
cmake --build "$build" --target llama-server llama-batched-bench -j2
echo "$wanted" >"$stamp"
say "built: $bin/llama-server, $bin/llama-batched-bench (run with LD_LIBRARY_PATH=$bin)"
echo "$bin"
