#!/usr/bin/env bash
# The whole test suite, against real PostgreSQL, Redis and llama.cpp, then the fault-injection
# suite's short version. `.ci/run` calls this.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_services

# Tests make a database and a Redis namespace each and drop them; a killed run leaves some behind.
say "dropping leftovers of earlier test runs"
psql -h 127.0.0.1 -U postgres -d postgres -Atc \
    "select datname from pg_database where datname like 'genq\_test\_%'" |
    while read -r db; do psql -h 127.0.0.1 -U postgres -d postgres -qc "drop database \"$db\" with (force)"; done
redis-cli --scan --pattern 'genq_test_*' | xargs -r redis-cli del >/dev/null

build_release
say "running the tests"
cd "$GENQ_ROOT"
cargo test --release --workspace --locked --no-fail-fast "$@"

# Last, as it restarts PostgreSQL and Redis: the fault-injection suite's short version.
"$GENQ_ROOT/scripts/chaos.sh" --short
