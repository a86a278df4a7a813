#!/usr/bin/env bash
# Install schemathesis (the OpenAPI fuzzer) into .genq/fuzz-venv. Idempotent: does nothing when the
# pinned version is already there. Prints the venv's bin directory on stdout, so a caller can do
#   PATH="$(scripts/fuzz-setup.sh):$PATH"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SCHEMATHESIS_VERSION=4.32.5
venv="$GENQ_ROOT/.genq/fuzz-venv"

installed() {
    local query='import importlib.metadata as m; print(m.version("schemathesis"))' got
    got="$("$venv/bin/python" -c "$query" 2>/dev/null)" || return 1
    [ "$got" = "$SCHEMATHESIS_VERSION" ]
}

if ! installed; then
    command -v python3 >/dev/null || apt_install python3 python3-venv
    if [ ! -x "$venv/bin/python" ]; then
        say "creating $venv"
        # Debian's python3 leaves out venv (and ensurepip) unless python3-venv is installed.
        python3 -m venv "$venv" 2>/dev/null || {
            rm -rf "$venv"
            apt_install python3-venv
            python3 -m venv "$venv"
        }
    fi
    say "installing schemathesis $SCHEMATHESIS_VERSION"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "schemathesis==$SCHEMATHESIS_VERSION"
    installed || { warn "schemathesis $SCHEMATHESIS_VERSION did not install"; exit 1; }
fi

echo "$venv/bin"
