#!/usr/bin/env bash
# Install the official openai Python SDK, pinned, into .genq/openai-venv: the tests of genq's /v1
# routes (tests/tests/openai.rs) drive genq with it. Idempotent. Prints the venv's python, which
# the tests take from GENQ_OPENAI_PYTHON.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_python_package openai-venv openai 3.63.0 >&2
echo "$GENQ_ROOT/.genq/openai-venv/bin/python"
