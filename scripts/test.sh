#!/usr/bin/env bash
# The whole test suite, against real PostgreSQL, Redis and llama.cpp, then the fault-injection
# suite's short version. `.ci/run` calls this.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_services
ensure_browser

# Each test drops its database and Redis namespace when it ends, passed or failed; only a run
# killed outright leaves some behind.
say "dropping leftovers of earlier test runs"
psql -h 127.0.0.1 -U postgres -d postgres -Atc \
    "select datname from pg_database where datname like 'genq\_test\_%'" |
    while read -r db; do psql -h 127.0.0.1 -U postgres -d postgres -qc "drop database \"$db\" with (force)"; done
redis-cli --scan --pattern 'genq_test_*' | xargs -r redis-cli del >/dev/null

# Dependencies: licences, sources and bans (not advisories: their database cannot be fetched here).
"$GENQ_ROOT/scripts/deny.sh"

# Kubernetes manifests, the KEDA resource and compose.yaml against their schemas.
"$GENQ_ROOT/scripts/validate-deploy.sh"

# Every environment variable the binaries read is in .env.sample and docs/configuration.md.
"$GENQ_ROOT/scripts/check-docs.sh"

# The API's tokenizer classes are those of the llama.cpp that Cargo.lock pins: regenerated, unchanged.
"$GENQ_ROOT/scripts/gen-unicode-classes.sh"
git -C "$GENQ_ROOT" diff --exit-code -- model/src/bpe/classes.rs ||
    { warn "model/src/bpe/classes.rs differs from llama.cpp's tables: commit the regenerated file"; exit 1; }

# The official openai SDK, which the tests of the /v1 routes drive genq with.
GENQ_OPENAI_PYTHON="$("$GENQ_ROOT/scripts/openai-sdk-setup.sh")"
export GENQ_OPENAI_PYTHON

# The binaries the tests start and the tests themselves, in one cargo invocation (see lib.sh).
build_release
say "running the tests"
cd "$GENQ_ROOT"
# The end-to-end tests mostly wait on PostgreSQL, Redis and the workers: four at a time finish the
# suite in about 110 s here instead of 190 s with one per core (2 cores). RUST_TEST_THREADS wins.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-4}"
cargo test --release --workspace --locked --no-fail-fast "$@"

# The tests must have cleaned up after themselves.
left_dbs=$(psql -h 127.0.0.1 -U postgres -d postgres -Atc \
    "select count(*) from pg_database where datname like 'genq\_test\_%'")
left_keys=$(redis-cli --scan --pattern 'genq_test_*' | wc -l)
if [ "$left_dbs" != 0 ] || [ "$left_keys" != 0 ]; then
    warn "the tests left $left_dbs database(s) and $left_keys Redis key(s) behind"
    exit 1
fi
say "the tests left no database or Redis key behind"

# The API against its own OpenAPI description: generated requests with a key and without one,
# no 5xx, no answer outside the description, no hang (the long form: scripts/fuzz.sh).
"$GENQ_ROOT/scripts/fuzz.sh" --short

# Last, as it restarts PostgreSQL and Redis: the fault-injection suite's short version.
"$GENQ_ROOT/scripts/chaos.sh" --short
