#!/usr/bin/env bash
# Prints the `export GGML_...=ON` lines that build genq's llama.cpp for this host's CPU: ggml's
# AVX2 baseline (what llama-cpp-sys-2 builds by default) plus the AVX-512 extensions the CPU
# reports. scripts/lib.sh applies them to every build the scripts make; in a shell of your own:
#   eval "$(scripts/host-cpu-flags.sh)" && cargo build --release ...
# Not GGML_NATIVE (-march=native): on a CPU that reports AMX, a native build uses it, and where a
# sandbox refuses AMX it dies with SIGILL at the first matrix product. GENQ_CPU_BUILD=portable
# prints nothing: the AVX2 baseline, what a binary for other machines needs.
# docs/performance.md, "CPU builds", has the figures behind this.
set -euo pipefail

[ "${GENQ_CPU_BUILD:-host}" = portable ] && exit 0
# Nothing to add where /proc/cpuinfo has no x86 flags line (another architecture).
flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2 || true) "
has() {
    local flag
    for flag in "$@"; do [[ "$flags" == *" $flag "* ]] || return 1; done
}

# ggml's GGML_AVX512 compiles with -mavx512f, cd, vl, dq and bw.
if has avx512f avx512cd avx512vl avx512dq avx512bw; then
    echo "export GGML_AVX512=ON"
    has avx512_vnni && echo "export GGML_AVX512_VNNI=ON"
    has avx512_bf16 && echo "export GGML_AVX512_BF16=ON"
    has avx512vbmi && echo "export GGML_AVX512_VBMI=ON"
fi
has avx_vnni && echo "export GGML_AVX_VNNI=ON"
exit 0
