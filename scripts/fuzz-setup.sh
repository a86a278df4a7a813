#!/usr/bin/env bash
# Install schemathesis (the OpenAPI fuzzer) into .genq/fuzz-venv. Idempotent: does nothing when the
# pinned version is already there. Prints the venv's bin directory on stdout, so a caller can do
#   PATH="$(scripts/fuzz-setup.sh):$PATH"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_python_package fuzz-venv schemathesis 4.32.5 >&2
echo "$GENQ_ROOT/.genq/fuzz-venv/bin"
