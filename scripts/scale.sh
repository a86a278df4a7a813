#!/usr/bin/env bash
# What a deep backlog costs: bulk intake rate (POST /batches, 10,000 jobs a request), Redis and
# PostgreSQL memory and disk per queued job, CPU of API + PostgreSQL + Redis while the backlog
# waits with no worker, one reconciler pass, and POST /batch and GET /batch_result latency on an
# empty system beside the same with the backlog. Not in CI: long.
#
#   scripts/scale.sh [JOBS]             default 1,000,000 queued jobs
#
# Runs alone: nothing else should use the cores meanwhile. Uses its own database and Redis
# namespace (genq_scale), dropped at the end.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

jobs="${1:-1000000}"
per_request=10000
ensure_services
command -v wrk >/dev/null || { say "installing wrk"; apt_install wrk; }
build_release -p genq-api -p genqctl

bin="$GENQ_ROOT/target/release"
state="$GENQ_ROOT/.genq/scale"
mkdir -p "$state"
name=genq_scale
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$name"
export GENQ_QUEUE="$name" GENQ_API_ADDR=127.0.0.1:8072 RUST_LOG=warn
url="http://$GENQ_API_ADDR"

api_pid=
cleanup() {
    [ -n "$api_pid" ] && { kill -TERM "$api_pid" 2>/dev/null; wait "$api_pid" 2>/dev/null; }
    psql -h 127.0.0.1 -U postgres -d postgres -qc "drop database if exists $name with (force)" || true
    redis-cli --scan --pattern "$name:*" | xargs -r -n 1000 redis-cli del >/dev/null || true
}
trap cleanup EXIT
psql -h 127.0.0.1 -U postgres -d postgres -qc "drop database if exists $name with (force)"
"$bin/genqctl" migrate >/dev/null
redis-cli --scan --pattern "$name:*" | xargs -r -n 1000 redis-cli del >/dev/null

close_inherited_fds
"$bin/genq-api" >"$state/api.log" 2>&1 &
api_pid=$!
for _ in $(seq 100); do curl -fsS "$url/ready" >/dev/null 2>&1 && break; sleep 0.2; done
export GENQ_API_KEY="$("$bin/genqctl" keys create --name scale)"
auth="Authorization: Bearer $GENQ_API_KEY"

cat >"$state/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = '{"prompts": ["a queued job"], "max_tokens": 8}'
wrk.headers["Content-Type"] = "application/json"
EOF
# p99 of POST /batch and GET /batch_result/<queued job>, 5 s each, 8 connections.
latencies() {
    local id
    id=$(curl -fsS "$url/batch" -H "$auth" -H 'content-type: application/json' \
        -d '{"prompts": ["probe"], "max_tokens": 8}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["task_id"])')
    wrk -t1 -c8 -d5s --latency -H "$auth" -s "$state/post.lua" "$url/batch" >"$state/post-$1.txt"
    wrk -t1 -c8 -d5s --latency -H "$auth" "$url/batch_result/$id" >"$state/get-$1.txt"
    echo "$(awk '/ 99%/ {print $2}' "$state/post-$1.txt") $(awk '/ 99%/ {print $2}' "$state/get-$1.txt")"
}
# CPU ticks (user + system) of the API, PostgreSQL and Redis: "api postgres redis".
cpu_ticks() {
    local pids part sums=()
    for pids in "$api_pid" "$(pgrep -x postgres)" "$(pgrep -x redis-server)"; do
        part=0
        for pid in $pids; do
            [ -r "/proc/$pid/stat" ] && part=$((part + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
        done
        sums+=("$part")
    done
    echo "${sums[*]}"
}
redis_bytes() { redis-cli info memory | awk -F: '/^used_memory:/ {print $2}' | tr -d '\r'; }
queued() { psql -h 127.0.0.1 -U postgres -d "$name" -Atc "select count(*) from jobs where status = 'queued'"; }

say "empty system: POST /batch and GET /batch_result p99"
read -r post_empty get_empty <<<"$(latencies empty)"

python3 - "$per_request" >"$state/bulk.json" <<'EOF'
import json, sys
n = int(sys.argv[1])
print(json.dumps({"jobs": [{"prompts": [f"backlog job {i}"], "max_tokens": 8} for i in range(n)]}))
EOF
redis_before=$(redis_bytes)
jobs_before=$(queued)
requests=$(( (jobs + per_request - 1) / per_request ))
say "building the backlog: $requests x POST /batches of $per_request jobs, 2 at a time"
started=$(date +%s.%N)
seq "$requests" | xargs -P 2 -I{} curl -fsS -o /dev/null -w '%{http_code}\n' "$url/batches" \
    -H "$auth" -H 'content-type: application/json' --data-binary @"$state/bulk.json" >"$state/bulk-codes.txt"
ended=$(date +%s.%N)
accepted=$(grep -c '^202$' "$state/bulk-codes.txt" || true)
[ "$accepted" = "$requests" ] || { warn "only $accepted of $requests bulk requests were accepted"; exit 1; }
backlog=$(queued)
added=$((backlog - jobs_before))
intake=$(python3 -c "print(f'{$added / ($ended - $started):,.0f}')")
redis_per_job=$(python3 -c "print(f'{($(redis_bytes) - $redis_before) / $added:.0f}')")
pg_per_job=$(psql -h 127.0.0.1 -U postgres -d "$name" -Atc \
    "select pg_total_relation_size('jobs') / $backlog")

intake_end=$(psql -h 127.0.0.1 -U postgres -d "$name" -Atc "select now()")
say "backlog of $backlog queued jobs; waiting for the reconciler to have checked the intake"
# It checks each dispatch once, 10 s after it (GENQ_REDISPATCH_AFTER_SECS): not idle until then.
for _ in $(seq 120); do
    caught_up=$(psql -h 127.0.0.1 -U postgres -d "$name" -Atc \
        "select coalesce(max(checked_until) > '$intake_end', false) from reconciler_marks")
    [ "$caught_up" = t ] && break
    sleep 1
done
[ "$caught_up" = t ] || { warn "the reconciler did not catch up with the intake in 120 s"; exit 1; }
say "idle for 30 s (reconciler passes every 5 s)"
hz=$(getconf CLK_TCK)
scans() {
    psql -h 127.0.0.1 -U postgres -d "$name" -Atc "select seq_scan || ' ' || coalesce(idx_scan, 0) || ' ' ||
        autovacuum_count || ' ' || autoanalyze_count from pg_stat_user_tables where relname = 'jobs'"
}
read -r seq_before idx_before vac_before an_before <<<"$(scans)"
before=$(cpu_ticks)
sleep 30
idle=$(python3 -c "
b = [int(x) for x in '$before'.split()]; a = [int(x) for x in '$(cpu_ticks)'.split()]
d = [(y - x) / $hz / 30 * 100 for x, y in zip(b, a)]
print(f'{sum(d):.2f} % of a core (API {d[0]:.2f}, PostgreSQL {d[1]:.2f}, Redis {d[2]:.2f})')")
read -r seq_after idx_after vac_after an_after <<<"$(scans)"

pass_started=$(date +%s.%N)
"$bin/genqctl" queue reconcile --json >"$state/pass.json"
pass_ms=$(python3 -c "print(f'{($(date +%s.%N) - $pass_started) * 1000:.0f}')")
checked=$(python3 -c "
import json; p = json.load(open('$state/pass.json'))
print('skipped (an API pass held the lock)' if p['skipped'] else p['checked'])")

say "full system: POST /batch and GET /batch_result p99"
read -r post_full get_full <<<"$(latencies full)"

cat <<EOF

| figure | value |
| --- | ---: |
| bulk intake (POST /batches, $per_request jobs each, 2 clients) | $intake jobs/s |
| queued jobs | $backlog |
| Redis memory per queued job | $redis_per_job bytes |
| PostgreSQL jobs table + indexes per job | $pg_per_job bytes |
| API + PostgreSQL + Redis CPU, idle with the backlog (30 s) | $idle |
| meanwhile on jobs: sequential / index scans, autovacuums / autoanalyzes | $((seq_after - seq_before)) / $((idx_after - idx_before)), $((vac_after - vac_before)) / $((an_after - an_before)) |
| one reconciler pass (genqctl, process start included): jobs checked, time | $checked, $pass_ms ms |
| POST /batch p99, empty / with backlog | $post_empty / $post_full |
| GET /batch_result p99, empty / with backlog | $get_empty / $get_full |
EOF
