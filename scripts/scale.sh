#!/usr/bin/env bash
# What a deep backlog and a long history cost. Prints one table:
# - backlog, no worker: bulk intake rate (POST /batches, 10,000 jobs a request), Redis and
#   PostgreSQL memory per queued job, CPU of API + PostgreSQL + Redis while it waits, one
#   reconciler pass, POST /batch and GET /batch_result p99 empty vs with the backlog, and what one
#   API process takes of single-job POST /batch;
# - drain: one worker's tokens/s taking jobs off the backlog vs the same worker on a second system
#   whose queue holds only 10,000 jobs, the windows interleaved;
# - history: GET /history p99 (first and a deep page) and retention passes with JOBS finished
#   jobs more (written by SQL: draining a million jobs would take hours here).
# Not in CI: about 10 minutes for a million jobs.
#
#   scripts/scale.sh [JOBS]             default 1,000,000
#
# Runs alone: nothing else should use the cores meanwhile. Uses its own databases and Redis
# namespaces (genq_scale, genq_scale_small), dropped at the end.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# A failure inside $(...) ends the script too, not only that subshell: no blank figures.
shopt -s inherit_errexit
source "$(dirname "${BASH_SOURCE[0]}")/scale-lib.sh"

jobs="${1:-1000000}"
per_request=10000
drain_secs=30
drain_reps=2
ensure_services
command -v wrk >/dev/null || { say "installing wrk"; apt_install wrk; }
build_release -p genq-api -p genq-worker -p genqctl

bin="$GENQ_ROOT/target/release"
state="$GENQ_ROOT/.genq/scale"
mkdir -p "$state"
rm -f "$state"/*.log
export GENQ_MODEL="${GENQ_MODEL:-$GENQ_ROOT/models/gpt2-124m-synthetic-q8_0.gguf}"
[ -f "$GENQ_MODEL" ] || "$bin/genqctl" model synth --out "$GENQ_MODEL" --shape gpt2-124m
# A deep backlog waits longer than the default deadline of a job (600 s).
export RUST_LOG=warn GENQ_JOB_TIMEOUT_SECS=86400
url="http://127.0.0.1:8072"

trap scale_cleanup EXIT
close_inherited_fds
for system in big small; do
    scale_reset "$system"
    on "$system" "$bin/genqctl" migrate >/dev/null
done
start_api big
big_api=$started_pid
auth="Authorization: Bearer $(on big "$bin/genqctl" keys create --name scale)"

cat >"$state/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = '{"prompts": ["a queued job"], "max_tokens": 8}'
wrk.headers["Content-Type"] = "application/json"
EOF
python3 - "$per_request" >"$state/bulk.json" <<'EOF'
import json, sys
n = int(sys.argv[1])
print(json.dumps({"jobs": [{"prompts": [f"backlog job {i}"], "max_tokens": 8} for i in range(n)]}))
EOF

say "empty system: POST /batch and GET /batch_result p99, then POST /batch at 64 connections"
figures=$(latencies)
read -r post_empty get_empty <<<"$figures"
rate=$(connections=64 duration=10s load "$url/batch" -s "$state/post.lua")
submissions=$(awk '/Requests\/sec/ {printf "%\047.0f", $2}' <<<"$rate")

redis_before=$(redis_bytes)
jobs_before=$(queued big)
requests=$(( (jobs + per_request - 1) / per_request ))
say "building the backlog: $requests x POST /batches of $per_request jobs, 2 at a time"
started=$(date +%s.%N)
seq "$requests" | xargs -P 2 -I{} curl -sS -o /dev/null -w '%{http_code}\n' "$url/batches" \
    -H "$auth" -H 'content-type: application/json' --data-binary @"$state/bulk.json" \
    >"$state/bulk-codes.txt" || true
ended=$(date +%s.%N)
accepted=$(grep -c '^202$' "$state/bulk-codes.txt" || true)
[ "$accepted" = "$requests" ] || { warn "only $accepted of $requests bulk requests were accepted"; exit 1; }
backlog=$(queued big)
added=$((backlog - jobs_before))
intake=$(python3 -c "print(f'{$added / ($ended - $started):,.0f}')")
redis_per_job=$(python3 -c "print(f'{($(redis_bytes) - $redis_before) / $added:.0f}')")
pg_per_job=$(sql big "select pg_total_relation_size('jobs') / $backlog")

say "backlog of $backlog queued jobs; waiting for the reconciler to have checked the intake"
reconciler_caught_up big
say "idle for 30 s (reconciler passes every 5 s)"
read -r seq_before idx_before vac_before an_before <<<"$(scans)"
before=$(cpu_ticks "$big_api")
sleep 30
idle=$(cpu_share "$before" "$(cpu_ticks "$big_api")" 30)
read -r seq_after idx_after vac_after an_after <<<"$(scans)"
figures=$(timed_pass big checked)
read -r checked pass_ms <<<"$figures"

say "full system: POST /batch and GET /batch_result p99"
figures=$(latencies)
read -r post_full get_full <<<"$figures"

say "drain: one worker for ${drain_secs} s on the small queue, then on the backlog, $drain_reps times"
start_api small
small_auth="Authorization: Bearer $(on small "$bin/genqctl" keys create --name scale)"
for rep in $(seq "$drain_reps"); do
    on small "$bin/genqctl" queue purge --yes >/dev/null
    curl -fsS -o /dev/null "http://127.0.0.1:8073/batches" -H "$small_auth" \
        -H 'content-type: application/json' --data-binary @"$state/bulk.json"
    reconciler_caught_up small
    drain_window small
    drain_window big
done
figures=$(drain_summary)
read -r small_tps big_tps drain_rows <<<"$figures"

say "history: $jobs finished jobs more, written by SQL"
hist_small=$(p99 "$url/history?limit=50")
bytes_before=$(finished_bytes)
finished_before=$(sql big "select count(*) from jobs where finished_at is not null")
write_finished "$jobs"
# As autovacuum would have by the time a history this long had built up.
sql big "vacuum analyze jobs" >/dev/null
sql big "vacuum analyze generations" >/dev/null
sql big "vacuum analyze job_attempts" >/dev/null
finished=$(sql big "select count(*) from jobs where finished_at is not null")
finished_per_job=$(( ($(finished_bytes) - bytes_before) / (finished - finished_before) ))
hist_first=$(p99 "$url/history?limit=50")
deep=$(sql big "select seq from generations where tenant = 'scale' order by seq limit 1 offset 1000")
hist_deep=$(p99 "$url/history?limit=50&before=$deep")
list_started=$(date +%s.%N)
on big "$bin/genqctl" jobs list --limit 50 >/dev/null
list_ms=$(python3 -c "print(f'{($(date +%s.%N) - $list_started) * 1000:.0f}')")
figures=$(GENQ_RESULT_RETENTION_SECS=172800 timed_pass big deleted)
read -r deleted retention_ms <<<"$figures"
figures=$(GENQ_RESULT_RETENTION_SECS=172800 timed_pass big deleted)
read -r deleted_again retention_again_ms <<<"$figures"

cat <<EOF

| figure | value |
| --- | ---: |
| bulk intake (POST /batches, $per_request jobs each, 2 clients) | $intake jobs/s |
| single-job POST /batch, one API process, 64 connections, empty system | $submissions requests/s |
| queued jobs | $backlog |
| Redis memory per queued job | $redis_per_job bytes |
| PostgreSQL jobs table + indexes per queued job | $pg_per_job bytes |
| API + PostgreSQL + Redis CPU, idle with the backlog (30 s) | $idle |
| meanwhile on jobs: sequential / index scans, autovacuums / autoanalyzes | $((seq_after - seq_before)) / $((idx_after - idx_before)), $((vac_after - vac_before)) / $((an_after - an_before)) |
| one reconciler pass (genqctl, process start included): jobs checked, time | $checked, $pass_ms ms |
| POST /batch p99, empty / with backlog | $post_empty / $post_full |
| GET /batch_result p99, empty / with backlog | $get_empty / $get_full |
| one worker draining, tokens/s: 10,000 queued / the backlog, per window | $drain_rows |
| drain rate with the backlog / with 10,000 queued (mean of windows) | $big_tps / $small_tps = $(python3 -c "print(f'{$big_tps / $small_tps:.2f}x')") |
| finished jobs | $finished |
| PostgreSQL per finished job (jobs, generations, attempts + indexes; one prompt, 8 tokens) | $finished_per_job bytes |
| GET /history?limit=50 p99: before / first page / 1,000 rows from the oldest | $hist_small / $hist_first / $hist_deep |
| genqctl jobs list --limit 50 (newest of every status, process start included) | $list_ms ms |
| retention pass: jobs deleted, time (10,000 past retention) / next pass | $deleted, $retention_ms ms / $deleted_again, $retention_again_ms ms |
EOF
