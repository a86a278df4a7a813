#!/usr/bin/env bash
# What a client polling GET /batch_result costs: requests per second one API answers, latency,
# and CPU per request of the API and PostgreSQL together, on a finished 10-prompt job (the
# biggest answer a poll gets), with the query plan that serves it.
#
#   scripts/poll-cost.sh [SECONDS]      default 10 s of load (wrk, 8 connections, 1 thread)
#
# Runs alone: nothing else should use the cores meanwhile. Uses its own database and Redis
# namespace (genq_pollcost), dropped at the end.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

seconds="${1:-10}"
ensure_services
command -v wrk >/dev/null || { say "installing wrk"; apt_install wrk; }
build_release -p genq-api -p genq-worker -p genqctl

bin="$GENQ_ROOT/target/release"
state="$GENQ_ROOT/.genq/poll-cost"
mkdir -p "$state"
name=genq_pollcost
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$name"
export GENQ_QUEUE="$name" GENQ_API_ADDR=127.0.0.1:8071 RUST_LOG=warn
export GENQ_MODEL="$GENQ_ROOT/models/gpt2-tiny-synthetic.gguf"
url="http://$GENQ_API_ADDR"
[ -f "$GENQ_MODEL" ] || "$bin/genqctl" model synth --out "$GENQ_MODEL" --shape tiny

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    psql -h 127.0.0.1 -U postgres -d postgres -qc "drop database if exists $name with (force)" || true
    redis-cli --scan --pattern "$name:*" | xargs -r redis-cli del >/dev/null || true
}
trap cleanup EXIT
psql -h 127.0.0.1 -U postgres -d postgres -qc "drop database if exists $name with (force)"
"$bin/genqctl" migrate >/dev/null

close_inherited_fds
"$bin/genq-api" >"$state/api.log" 2>&1 &
api_pid=$!
pids+=("$api_pid")
"$bin/genq-worker" >"$state/worker.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -fsS "$url/ready" >/dev/null 2>&1 && break; sleep 0.2; done

export GENQ_API_KEY="$("$bin/genqctl" keys create --name poll-cost)"
id=$(curl -fsS "$url/batch" -H "Authorization: Bearer $GENQ_API_KEY" -H 'content-type: application/json' \
    -d '{"prompts": ["a","b","c","d","e","f","g","h","i","j"], "max_tokens": 32, "seed": 1}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["task_id"])')
status=$(curl -fsS "$url/batch_result/$id?wait=60" -H "Authorization: Bearer $GENQ_API_KEY" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
[ "$status" = completed ] || { warn "the job ended $status"; exit 1; }
# The worker idles from here; stop it so only the API and PostgreSQL are measured.
kill -TERM "${pids[1]}"; wait "${pids[1]}" 2>/dev/null || true

# CPU seconds (user + system) of the API and of every PostgreSQL process, from /proc.
cpu_ticks() {
    local total=0 pid
    for pid in "$api_pid" $(pgrep -x postgres); do
        [ -r "/proc/$pid/stat" ] || continue
        total=$((total + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$pid/stat")))
    done
    echo "$total"
}
before=$(cpu_ticks)
wrk -t1 -c8 -d"${seconds}s" --latency -H "Authorization: Bearer $GENQ_API_KEY" \
    "$url/batch_result/$id" >"$state/wrk.txt"
after=$(cpu_ticks)
requests=$(awk '/requests in/ {print $1}' "$state/wrk.txt")
hz=$(getconf CLK_TCK)
say "GET /batch_result/<10-prompt job>, $seconds s, wrk -t1 -c8:"
grep -E 'Requests/sec|50%|99%' "$state/wrk.txt"
python3 -c "print(f'API + PostgreSQL CPU per request: {($after - $before) / $hz / $requests * 1e6:.0f} us ({$requests} requests)')"
say "the query behind it:"
psql -h 127.0.0.1 -U postgres -d "$name" -Atc "explain (costs off) select (select count(*) from generations g where g.job_id = jobs.id) from jobs where id = '$id'"
