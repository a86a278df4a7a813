#!/usr/bin/env bash
# Compiles and links `genq-worker --features cuda` without a GPU, a driver or NVIDIA's installer:
# the CUDA 13 toolkit comes from NVIDIA's PyPI wheels (nvcc, cicc, headers, cudart, cuBLAS, CCCL),
# pinned below, into .genq/cuda-venv. Not in CI (a cold build took 27 minutes on 2 cores, most of
# it llama.cpp's CUDA kernels); docs/deployment.md says what it verifies and what it does not.
#
#   scripts/check-cuda-build.sh            # compute capability 9.0 (H100, H200)
#   GENQ_CUDA_ARCHITECTURES="80;90" scripts/check-cuda-build.sh
#
# What differs from the CUDA image's build (Dockerfile.worker): the wheels carry no static cuBLAS,
# so llama.cpp is built as shared libraries (LLAMA_BUILD_SHARED_LIBS=1) and the worker links
# libcublas.so.13 instead; and libcuda.so, which only a driver installs, is a stub made here from
# cuda.h, as the toolkit's own lib/stubs/libcuda.so is.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

architectures="${GENQ_CUDA_ARCHITECTURES:-90}"
target_dir="$GENQ_ROOT/target/cuda"
venv="$GENQ_ROOT/.genq/cuda-venv"
# The toolkit's parts, one CUDA release (13.x); versions verified together on this machine.
packages=(
    nvidia-cuda-nvcc==13.5.37
    nvidia-cuda-crt==13.5.37
    nvidia-nvvm==13.5.37
    nvidia-cuda-runtime==13.5.37
    nvidia-cublas==13.10.0.20
    nvidia-cuda-cccl==13.3.5.0.6
)

ensure_build_tools
cd "$GENQ_ROOT"
if [ ! -x "$venv/bin/python" ]; then
    say "creating $venv"
    python3 -m venv "$venv"
fi
say "installing the CUDA toolkit's wheels (${packages[*]})"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${packages[@]}"
toolkit="$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')"

# The wheels ship versioned shared libraries only; CMake's FindCUDAToolkit and the linker look
# for the unversioned names, and for libcuda.so under lib/stubs (nvcc.profile names that too).
for lib in cudart cublas cublasLt; do
    ln -sfn "$(basename "$(ls "$toolkit/lib/lib$lib.so."*[0-9] | head -1)")" "$toolkit/lib/lib$lib.so"
done
ln -sfn lib "$toolkit/lib64"
mkdir -p "$toolkit/lib/stubs"
if [ ! -f "$toolkit/lib/stubs/libcuda.so" ]; then
    say "making a stub libcuda.so from cuda.h (every driver entry point, returning an error)"
    stub_dir="$(mktemp -d)"
    trap 'rm -rf "$stub_dir"' EXIT
    # After the preprocessor, cuda.h's versioning macros have named each function's real symbol
    # (cuMemAlloc is cuMemAlloc_v2): those are what libcuda.so.1 exports.
    echo '#include <cuda.h>' | cc -E -P -I "$toolkit/include" - |
        grep -oE '\bCUresult[[:space:]]+(cu[A-Za-z0-9_]+)[[:space:]]*\(' |
        sed -E 's/CUresult[[:space:]]+(cu[A-Za-z0-9_]+).*/int \1(void) { return 999; }/' |
        sort -u >"$stub_dir/stub.c"
    [ "$(wc -l <"$stub_dir/stub.c")" -gt 300 ] ||
        { warn "found only $(wc -l <"$stub_dir/stub.c") driver functions in cuda.h"; exit 1; }
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$toolkit/lib/stubs/libcuda.so" "$stub_dir/stub.c"
    rm -rf "$stub_dir"
    trap - EXIT
fi
"$toolkit/bin/nvcc" --version | tail -2

say "building genq-worker --features cuda for compute capability $architectures in $target_dir"
started=$(date +%s)
CUDA_PATH="$toolkit" CUDAToolkit_ROOT="$toolkit" PATH="$toolkit/bin:$PATH" \
    LIBRARY_PATH="$toolkit/lib/stubs:$toolkit/lib" \
    CMAKE_CUDA_COMPILER="$toolkit/bin/nvcc" CMAKE_CUDA_ARCHITECTURES="$architectures" \
    LLAMA_BUILD_SHARED_LIBS=1 \
    cargo build --release --locked -p genq-worker --features cuda --target-dir "$target_dir"
took=$(($(date +%s) - started))

worker="$target_dir/release/genq-worker"
# Built as shared libraries, llama.cpp's stay in its build script's output directory.
# The newest, should an older build's directory be there too.
lib_dir="$(ls -td "$target_dir"/release/build/llama-cpp-sys-2-*/out/lib | head -1)"
cuda_lib="$(readlink -f "$lib_dir/libggml-cuda.so")"
[ -f "$cuda_lib" ] || { warn "no libggml-cuda.so in $lib_dir"; exit 1; }
# The kernels are there for each asked architecture: the CUDA library's fat binary names them.
for arch in ${architectures//;/ }; do
    grep -aq "sm_${arch%%-*}" "$cuda_lib" ||
        { warn "$cuda_lib has no code for sm_${arch%%-*}"; exit 1; }
done
readelf -d "$cuda_lib" | grep -E 'NEEDED.*(cublas|cudart|libcuda)'
# Every symbol the worker and its libraries need resolves (LD_BIND_NOW), the driver's against the
# stub: the binary loads. Running it on a GPU is what this cannot check.
runtime="$(mktemp -d)"
trap 'rm -rf "$runtime"' EXIT
ln -s "$toolkit/lib/stubs/libcuda.so" "$runtime/libcuda.so.1"
LD_BIND_NOW=1 LD_LIBRARY_PATH="$lib_dir:$toolkit/lib:$runtime" "$worker" --help >/dev/null ||
    { warn "$worker does not load"; exit 1; }
say "genq-worker --features cuda compiled, linked and loads (${took} s on $(nproc) cores; \
$(du -h "$cuda_lib" | cut -f1) $(basename "$cuda_lib")); not run on a GPU (none here)"
