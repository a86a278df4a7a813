#!/usr/bin/env bash
# The engine's tests on llama.cpp as it ships, without genq's kernels: the `upstream-kernels` build
# (engine/Cargo.toml), what a llama.cpp that the kernels have not been checked against is built
# with. CI runs it after scripts/test.sh; it builds llama.cpp a second time, in a target directory
# of its own (target/upstream-kernels), so that neither build undoes the other.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_build_tools
use_host_cpu_flags target/upstream-kernels
say "building and testing genq-engine without genq's kernels (the first build compiles llama.cpp)"
cd "$GENQ_ROOT"
GGML_GENQ_OVERRIDES=off cargo test --release --locked -p genq-engine --features upstream-kernels \
    --target-dir target/upstream-kernels "$@"
