#!/usr/bin/env bash
# Fuzz the HTTP API against its own OpenAPI document (/openapi.json) with schemathesis: a
# genq-api built from this tree, on a throwaway database and Redis namespace, no worker (so
# /generate answers 202 after 2 s). Two runs: with a tenant key, and with no key at all. Each
# sends schema examples and generated valid and invalid requests to every operation and checks
# that no answer is a 5xx and every answer (status, content type, headers, body) is one the
# document describes.
#
#   scripts/fuzz.sh            long run: 500 examples per operation (about 8,000 requests, 6 minutes)
#   scripts/fuzz.sh --short    CI's run: 30 examples per operation (about 500 requests, 30 s)
#
# Reports (JUnit, JSON, HAR) go to .genq/fuzz-report/{with-key,no-key}/, the API's log to
# .genq/fuzz-report/api.log.
# Exits non-zero if schemathesis failed or any run had a 5xx, a conformance failure, a timeout or
# a network error. The database, the Redis keys and the API are removed on exit, also on failure.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

max_examples=500
case "${1:-}" in
    "") ;;
    --short) max_examples=30 ;;
    *)
        warn "usage: scripts/fuzz.sh [--short]"
        exit 2
        ;;
esac
# Fixed, so a run can be repeated; change it to explore other inputs.
seed=20261123
checks=not_a_server_error,status_code_conformance,content_type_conformance
checks+=,response_headers_conformance,response_schema_conformance

ensure_services
# The whole workspace, as scripts/test.sh builds it: `-p` would resolve features differently and
# rebuild crates that are already built.
build_release
PATH="$("$GENQ_ROOT/scripts/fuzz-setup.sh"):$PATH"

bin="$GENQ_ROOT/target/release"
reports="$GENQ_ROOT/.genq/fuzz-report"
ns="genq_fuzz_$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
psql_admin=(psql -h 127.0.0.1 -U postgres -d postgres -qAt)
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$ns"
export REDIS_URL="redis://127.0.0.1:6379"
export GENQ_QUEUE="$ns"
export RUST_LOG="${RUST_LOG:-warn}"

api_pid=""
cleanup() {
    local status=$?
    if [ -n "$api_pid" ]; then
        kill "$api_pid" 2>/dev/null || true
        wait "$api_pid" 2>/dev/null || true
    fi
    "${psql_admin[@]}" -c "drop database if exists \"$ns\" with (force)" >/dev/null 2>&1 ||
        warn "could not drop the database $ns"
    redis-cli --scan --pattern "$ns:*" | xargs -r redis-cli del >/dev/null || true
    # Whatever schemathesis and Hypothesis leave behind besides the reports.
    rm -rf "$reports"/*/.schemathesis "$reports"/*/.hypothesis \
        "$GENQ_ROOT/.schemathesis" "$GENQ_ROOT/.hypothesis"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "database and Redis namespace $ns"
# The API knows its model, as deployed: a request naming another is refused (404), and with no
# worker running, one naming it would wait out GENQ_GENERATE_TIMEOUT_SECS and answer 504.
model="$GENQ_ROOT/models/gpt2-tiny-synthetic.gguf"
[ -f "$model" ] || "$bin/genqctl" model synth --shape tiny --out "$model" >/dev/null
export GENQ_MODEL="$model"
"$bin/genqctl" migrate >/dev/null
key="$("$bin/genqctl" keys create --name fuzz)"

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
rm -rf "$reports/with-key" "$reports/no-key"
mkdir -p "$reports/with-key" "$reports/no-key"
GENQ_AUTH=on GENQ_API_ADDR="127.0.0.1:$port" GENQ_GENERATE_TIMEOUT_SECS=2 \
    GENQ_RECONCILE_INTERVAL_SECS=0 "$bin/genq-api" >"$reports/api.log" 2>&1 &
api_pid=$!
# python3 rather than curl: the venv needs it anyway.
ready() {
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
        "$base/ready" 2>/dev/null
}
for _ in $(seq 300); do
    ready && break
    kill -0 "$api_pid" 2>/dev/null || { warn "genq-api exited:"; cat "$reports/api.log" >&2; exit 1; }
    sleep 0.1
done
ready || { warn "genq-api not ready after 30 s"; exit 1; }

# Prints one line of figures from a run's reports and exits non-zero if any is not 0.
summarize() {
    python3 - "$1" <<'PY'
import json, sys
from pathlib import Path

run = Path(sys.argv[1])
entries = json.loads((run / "har.json").read_text())["log"]["entries"]
report = json.loads((run / "report.json").read_text())
statuses = [e["response"]["status"] for e in entries]
server_errors = sum(1 for s in statuses if s >= 500)
failures = len(report.get("failures", []))
errors = len(report.get("errors", []))
print(f"{run.name}: {len(entries)} requests, {server_errors} responses 5xx, "
      f"{failures} schema/conformance failures, {errors} timeouts/network errors")
sys.exit(1 if server_errors or failures or errors else 0)
PY
}

# Runs schemathesis from the report directory so that what it keeps beside the reports stays there.
fuzz() {
    local run="$1"
    shift
    say "schemathesis ($run, $max_examples examples per operation)"
    local started=$SECONDS status=0
    (
        cd "$reports/$run"
        schemathesis run "$base/openapi.json" "$@" \
            --checks "$checks" \
            --phases examples,fuzzing \
            --max-examples "$max_examples" \
            --request-timeout 10 \
            --seed "$seed" \
            --generation-database none \
            --report junit,json,har \
            --report-dir . \
            --report-json-path report.json \
            --report-har-path har.json \
            --report-junit-path junit.xml \
            --no-color
    ) || status=$?
    summarize "$reports/$run" || status=1
    say "$run: schemathesis exited $status after $((SECONDS - started)) s"
    return "$status"
}

failed=0
fuzz with-key -H "Authorization: Bearer $key" || failed=1
fuzz no-key || failed=1
if [ "$failed" -ne 0 ]; then
    warn "the fuzzer found problems: see .genq/fuzz-report/ (the API's log: api.log)"
    exit 1
fi
say "no 5xx, no conformance failure, no timeout in either run"
