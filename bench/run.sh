#!/usr/bin/env bash
# The benchmark: llama.cpp alone vs genq end to end vs Python transformers, one table.
#   bench/run.sh                      all workloads, 3 repetitions each (about 10 minutes on 2 cores)
#   bench/run.sh --workloads b --reps 5
#   bench/run.sh --python-all         also the Python row on workload (c) (slow)
#   bench/run.sh --workers-per-host [--reps 5]
#                                     1, 2 and 3 workers with default settings on this host, and 3
#                                     with GENQ_DECODE_LOCK=off, on the tiny model (a few minutes)
# Flags are genq-bench's (--help; `genq-bench workers-per-host --help`). The Python row needs torch
# and transformers; they are installed into bench/.venv on first use, and the row is skipped,
# saying why, if that fails.

source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

mode=()
if [ "${1:-}" = "--workers-per-host" ]; then
    mode=(workers-per-host)
    shift
fi

ensure_services
build_release

venv="$GENQ_ROOT/bench/.venv"
if [ "${#mode[@]}" -eq 0 ] && [[ " $* " != *" --no-python "* ]] &&
    ! "$venv/bin/python" -c 'import torch, transformers' 2>/dev/null; then
    say "installing torch and transformers into $venv (large download, once)"
    { python3 -m venv "$venv" && "$venv/bin/pip" install -q torch transformers; } ||
        warn "could not install the Python stack; its row will say so"
fi

cd "$GENQ_ROOT"
exec target/release/genq-bench "${mode[@]}" "$@"
