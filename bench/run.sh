#!/usr/bin/env bash
# The benchmark: genq over HTTP (polling, long-poll, SSE) beside llama.cpp alone, llama-server,
# llama-batched-bench and Python transformers, one table; repetitions interleaved across rows.
#   bench/run.sh                      all workloads, 3 repetitions each
#   bench/run.sh --workloads b --reps 5
#   bench/run.sh --systems llama-server,genq-poll --worker-env GENQ_SLOTS=48
#                                     only those rows; a setting for genq's worker (A/B tests)
#   bench/run.sh --no-peer            without llama-server and llama-batched-bench (and no build)
#   bench/run.sh --python-all         also the Python row on workload (c) (slow)
#   bench/run.sh --workers-per-host [--reps 5]
#                                     1, 2 and 3 workers with default settings on this host, and 3
#                                     with GENQ_DECODE_LOCK=off, on the tiny model (a few minutes)
# Flags are genq-bench's (--help; `genq-bench workers-per-host --help`). The peer rows need
# scripts/peer-build.sh's binaries, built as llama.cpp's users build it and AVX2-only (both built
# here on first use, about 6 minutes each on 2 cores); the Python
# row needs torch and transformers, installed into bench/.venv on first use. Either row is skipped,
# saying why, if its setup fails. Run nothing else meanwhile: every process shares the cores.

source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

mode=()
if [ "${1:-}" = "--workers-per-host" ]; then
    mode=(workers-per-host)
    shift
fi

ensure_services
build_release

if [ "${#mode[@]}" -eq 0 ] && [[ " $* " != *" --no-peer "* ]]; then
    "$GENQ_ROOT/scripts/peer-build.sh" >/dev/null ||
        warn "could not build llama-server and llama-batched-bench; their rows will say so"
    GENQ_PEER_BUILD=avx2 "$GENQ_ROOT/scripts/peer-build.sh" >/dev/null ||
        warn "could not build the AVX2-only llama-server and llama-batched-bench; their rows will say so"
fi

venv="$GENQ_ROOT/bench/.venv"
if [ "${#mode[@]}" -eq 0 ] && [[ " $* " != *" --no-python "* ]] &&
    ! "$venv/bin/python" -c 'import torch, transformers' 2>/dev/null; then
    say "installing torch and transformers into $venv (large download, once)"
    { python3 -m venv "$venv" && "$venv/bin/pip" install -q torch transformers; } ||
        warn "could not install the Python stack; its row will say so"
fi

cd "$GENQ_ROOT"
exec target/release/genq-bench "${mode[@]}" "$@"
