# Helpers of scripts/scale.sh; sourced, not run. Two systems, each its own database, Redis
# namespace and API: big (the backlog, port 8072) and small (a queue of 10,000 jobs, port 8073).
# Expects $bin, $state, $url (big's API), $auth (a key of big's) and $drain_secs.

scale_db() { if [ "$1" = small ]; then echo genq_scale_small; else echo genq_scale; fi; }

# System $1's database, queue and API address, as env(1) takes them.
system_env() {
    local db port=8072
    db=$(scale_db "$1")
    [ "$1" = small ] && port=8073
    echo "DATABASE_URL=postgres://postgres@127.0.0.1:5432/$db GENQ_QUEUE=$db GENQ_API_ADDR=127.0.0.1:$port"
}

# Runs a command (not a shell function) against system $1.
on() {
    local vars
    vars=$(system_env "$1")
    shift
    # shellcheck disable=SC2086 # one word per variable
    env $vars "$@"
}

started_pids=()
# Starts a command against system $1 in the background, output appended to $2; its pid (the
# command's own, through env's exec: a backgrounded shell function would leave it orphaned when
# killed) goes to $started_pid.
spawn() {
    local vars log=$2
    vars=$(system_env "$1")
    shift 2
    # shellcheck disable=SC2086
    env $vars "$@" >>"$log" 2>&1 &
    started_pid=$!
    started_pids+=("$started_pid")
}

sql() { psql -h 127.0.0.1 -U postgres -d "$(scale_db "$1")" -Atc "$2"; }

scale_reset() {
    local db
    db=$(scale_db "$1")
    psql -h 127.0.0.1 -U postgres -d postgres -qc "drop database if exists $db with (force)" || true
    redis-cli --scan --pattern "$db:*" | xargs -r -n 1000 redis-cli del >/dev/null || true
}

# Starts system $1's API and waits until it is ready; its pid goes to $started_pid.
start_api() {
    local port=8072
    [ "$1" = small ] && port=8073
    if curl -fsS "http://127.0.0.1:$port/ready" >/dev/null 2>&1; then
        warn "something already serves port $port (a scale.sh run that was killed?); stop it first"
        exit 1
    fi
    : >"$state/api-$1.log"
    spawn "$1" "$state/api-$1.log" "$bin/genq-api"
    for _ in $(seq 100); do
        curl -fsS "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    warn "the $1 API did not get ready: see $state/api-$1.log"
    exit 1
}

scale_cleanup() {
    local pid
    for pid in "${started_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${started_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    scale_reset big
    scale_reset small
}

# wrk's output for 5 s (or $duration) of requests to $1 with 8 connections (or $connections);
# further arguments go to wrk. Every request must get a 2xx answer in time: wrk leaves errors and
# timed-out requests out of its latencies.
load() {
    local target=$1 out
    shift
    out=$(wrk -t2 -c"${connections:-8}" -d"${duration:-5s}" --timeout 30s --latency -H "$auth" \
        "$@" "$target")
    if grep -q 'Non-2xx\|Socket errors' <<<"$out"; then
        warn "$target answered errors under load:"
        echo "$out" >&2
        return 1
    fi
    echo "$out"
}

p99() {
    local out
    out=$(load "$@")
    awk '/ 99%/ {print $2}' <<<"$out"
}

# p99 of POST /batch and of GET /batch_result/<a queued job> on big: "post get".
latencies() {
    local id post get
    id=$(curl -fsS "$url/batch" -H "$auth" -H 'content-type: application/json' \
        -d '{"prompts": ["probe"], "max_tokens": 8}' |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["task_id"])')
    post=$(p99 "$url/batch" -s "$state/post.lua")
    get=$(p99 "$url/batch_result/$id")
    echo "$post $get"
}

# CPU ticks (user + system) of the API $1, PostgreSQL and Redis: "api postgres redis".
cpu_ticks() {
    local pids part sums=()
    for pids in "$1" "$(pgrep -x postgres)" "$(pgrep -x redis-server)"; do
        part=0
        for pid in $pids; do
            [ -r "/proc/$pid/stat" ] && part=$((part + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
        done
        sums+=("$part")
    done
    echo "${sums[*]}"
}

# The share of a core between two cpu_ticks readings $1 and $2, $3 seconds apart.
cpu_share() {
    python3 -c "
b = [int(x) for x in '$1'.split()]; a = [int(x) for x in '$2'.split()]
d = [(y - x) / $(getconf CLK_TCK) / $3 * 100 for x, y in zip(b, a)]
print(f'{sum(d):.2f} % of a core (API {d[0]:.2f}, PostgreSQL {d[1]:.2f}, Redis {d[2]:.2f})')"
}

redis_bytes() { redis-cli info memory | awk -F: '/^used_memory:/ {print $2}' | tr -d '\r'; }
queued() { sql "$1" "select count(*) from jobs where status = 'queued'"; }
# Scans of big's jobs table so far: "sequential index autovacuums autoanalyzes".
scans() {
    sql big "select seq_scan || ' ' || coalesce(idx_scan, 0) || ' ' || autovacuum_count || ' ' ||
        autoanalyze_count from pg_stat_user_tables where relname = 'jobs'"
}

# One reconciler pass on system $1 by genqctl (again while an API's pass holds the lock):
# "<field $2 of the pass> <milliseconds, process start included>". Fails if a step failed.
timed_pass() {
    local started ms
    for _ in $(seq 240); do
        started=$(date +%s.%N)
        on "$1" "$bin/genqctl" queue reconcile --json >"$state/pass.json"
        ms=$(python3 -c "print(f'{($(date +%s.%N) - $started) * 1000:.0f}')")
        python3 -c "import json, sys; sys.exit(json.load(open('$state/pass.json'))['skipped'])" &&
            break
        sleep 0.25
    done
    grep -q '"skipped": false' "$state/pass.json" || sessions "$1"
    python3 - "$state/pass.json" "$2" "$ms" <<'EOF'
import json, sys
p = json.load(open(sys.argv[1]))
if p["skipped"]:
    sys.exit("for 60 s every pass found another holding the lock")
print(p[sys.argv[2]], sys.argv[3])
EOF
}

# What system $1's PostgreSQL sessions are doing (when a pass never gets the lock).
sessions() {
    sql "$1" "select pid, state, wait_event, now() - query_start, left(query, 160)
        from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()" >&2
}

# Waits until system $1's reconciler has checked every dispatch made before now (each one once,
# GENQ_REDISPATCH_AFTER_SECS = 10 s after it): until then it is not idle.
reconciler_caught_up() {
    local now caught_up=f
    now=$(sql "$1" "select now()")
    for _ in $(seq 120); do
        caught_up=$(sql "$1" "select coalesce(max(checked_until) > '$now', false) from reconciler_marks")
        [ "$caught_up" = t ] && return 0
        sleep 1
    done
    warn "the $1 reconciler did not catch up with the intake in 120 s"
    return 1
}

drains=()
# One worker on system $1: once its first job has finished and 5 s more (every slot busy), the
# tokens it generated in $drain_secs. Appends "$1:<tokens/s>" to $drains.
drain_window() {
    local last worker t0 t1 tps
    last=$(sql "$1" "select coalesce(max(seq), 0) from generations")
    spawn "$1" "$state/worker-$1.log" "$bin/genq-worker"
    worker=$started_pid
    local first=f
    for _ in $(seq 600); do
        first=$(sql "$1" "select coalesce(max(seq), 0) > $last from generations")
        [ "$first" = t ] && break
        sleep 0.1
    done
    [ "$first" = t ] || { warn "the $1 worker finished no job in 60 s: see $state/worker-$1.log"; exit 1; }
    sleep 5
    t0=$(sql "$1" "select now()")
    sleep "$drain_secs"
    t1=$(sql "$1" "select now()")
    kill -TERM "$worker"
    wait "$worker" || true
    tps=$(sql "$1" "select round(coalesce(sum(completion_tokens), 0)
            / extract(epoch from '$t1'::timestamptz - '$t0'::timestamptz), 1)
        from generations where created_at >= '$t0' and created_at < '$t1'")
    [ "$(queued "$1")" -gt 0 ] || { warn "the $1 queue ran dry within the window"; exit 1; }
    drains+=("$1:$tps")
}

# From $drains: "<small mean> <big mean> <small / big of each repetition, comma-separated>".
drain_summary() {
    python3 - "${drains[@]}" <<'EOF'
import sys
pairs = [tuple(d.split(":")) for d in sys.argv[1:]]
small = [float(v) for k, v in pairs if k == "small"]
big = [float(v) for k, v in pairs if k == "big"]
rows = ", ".join(f"{s} / {b}" for s, b in zip(small, big))
print(f"{sum(small) / len(small):.1f} {sum(big) / len(big):.1f} {rows}")
EOF
}

# PostgreSQL bytes of what a finished job keeps: jobs, generations, job_attempts with indexes.
finished_bytes() {
    sql big "select pg_total_relation_size('jobs') + pg_total_relation_size('generations')
        + pg_total_relation_size('job_attempts')"
}

# $1 finished jobs of big's tenant `scale`, each a copy of one it ran (job, attempt, one
# generation): 10,000 finished 3 days ago, the rest within the last day.
write_finished() {
    sql big "
with template as (
    select j.prompts, j.params, j.model, j.worker, j.tenant, j.api_key_id, g.prompt,
           g.generated_text, g.completion_tokens, g.finish_reason, g.model_name
    from jobs j join generations g on g.job_id = j.id where j.tenant = 'scale' limit 1),
made as (
    insert into jobs (id, status, prompts, prompt_count, params, model, worker, attempt,
                      created_at, started_at, finished_at, queued_at, dispatch_id, tenant,
                      api_key_id)
    select gen_random_uuid(), 'completed', t.prompts, 1, t.params, t.model, t.worker, 1,
           f - interval '2 s', f - interval '1 s', f, f - interval '2 s', gen_random_uuid(),
           t.tenant, t.api_key_id
    from template t, generate_series(1, $1) i,
         lateral (select case when i <= 10000 then now() - interval '3 days'
                              else now() - interval '1 day' + i * interval '10 ms' end as f) x
    returning id, started_at, finished_at, worker, tenant),
attempts as (
    insert into job_attempts (job_id, attempt, worker, claimed_at, ended_at, outcome,
                              prompts_generated)
    select id, 1, worker, started_at, finished_at, 'completed', 1 from made)
insert into generations (id, job_id, prompt_index, prompt, generated_text, completion_tokens,
                         finish_reason, model_name, created_at, tenant)
select gen_random_uuid(), m.id, 0, t.prompt, t.generated_text, t.completion_tokens,
       t.finish_reason, t.model_name, m.finished_at, m.tenant
from made m, template t" >/dev/null
}
