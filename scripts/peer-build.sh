#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` and `llama-batched-bench`, the benchmark's peer and limit rows,
# from PyPI's llama-cpp-python source distribution (it vendors the whole llama.cpp tree; neither
# tool is packaged here). Everything goes under .genq/peer/ (gitignored):
#   .genq/peer/src/          the downloaded sdist, unpacked
#   .genq/peer/build/        the build as llama.cpp's users make it; binaries in build/bin/
#   .genq/peer/build-avx2/   the AVX2-only build (GENQ_PEER_BUILD=avx2)
#
#   scripts/peer-build.sh                 build once (about 6 minutes on 2 cores); later runs only
#                                         print where the binaries are
#   GENQ_PEER_BUILD=avx2 scripts/peer-build.sh
#                                         the second, AVX2-only build
#   GENQ_PEER_VERSION=0.3.36 scripts/peer-build.sh
#                                         a given llama-cpp-python release instead of the newest
#   GENQ_PEER_CMAKE_ARGS="-DGGML_OPENMP=OFF" scripts/peer-build.sh
#                                         other llama.cpp build options (rebuilds when they change)
#
# The default build is llama.cpp's own defaults, as its README's `cmake -B build` makes it:
# GGML_NATIVE=ON (-march=native) and OpenMP. One exception: on a CPU that reports AMX, a native
# build uses it, and where the sandbox refuses AMX (this machine kind's Intel Xeons) both binaries
# die with SIGILL at the first matrix product; there the build turns on instead every AVX-512
# extension the CPU reports (scripts/host-cpu-flags.sh), keeps OpenMP, and says so.
# GENQ_PEER_BUILD=avx2 is the build genq's own llama.cpp gets from llama-cpp-sys-2 without
# scripts/lib.sh's host flags (AVX2, FMA, F16C, BMI2; no OpenMP): a second, labelled row.
# The server's web UI is not fetched (LLAMA_USE_PREBUILT_UI=OFF: no download at build time; the
# benchmark runs it with --no-webui anyway).
#
# The last line of stdout is the bin directory; the binaries need it in LD_LIBRARY_PATH.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

peer="$GENQ_ROOT/.genq/peer"
src="$peer/src"

options=(-DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_CURL=OFF
    -DLLAMA_OPENSSL=OFF -DLLAMA_USE_PREBUILT_UI=OFF)
case "${GENQ_PEER_BUILD:-default}" in
    default)
        build="$peer/build"
        if grep -qw amx_tile /proc/cpuinfo 2>/dev/null; then
            isa=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON)
            while read -r _ assignment; do
                isa+=("-D$assignment")
            done < <(GENQ_CPU_BUILD=host "$GENQ_ROOT/scripts/host-cpu-flags.sh")
            warn "this CPU reports AMX, which a native build would use and a sandbox may refuse \
(SIGILL): building with ${isa[*]} and OpenMP instead of GGML_NATIVE"
            options+=("${isa[@]}")
        fi
        ;;
    avx2)
        build="$peer/build-avx2"
        options+=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
            -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_OPENMP=OFF)
        ;;
    *)
        warn "GENQ_PEER_BUILD is default or avx2, not ${GENQ_PEER_BUILD}"
        exit 1
        ;;
esac
bin="$build/bin"
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
say "building llama-server and llama-batched-bench from $tree (about 6 minutes on 2 cores)"
rm -f "$stamp" "$build/CMakeCache.txt"
cmake -S "$tree" -B "$build" "${options[@]}" >/dev/null
cmake --build "$build" --target llama-server llama-batched-bench -j2
echo "$wanted" >"$stamp"
say "built: $bin/llama-server, $bin/llama-batched-bench (run with LD_LIBRARY_PATH=$bin)"
echo "$bin"
