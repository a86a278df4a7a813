#!/usr/bin/env bash
# The fault-injection suite: genq's API (three replicas behind a balancer) and four workers on the
# tiny model under load, while workers are SIGKILLed and restarted, Redis is restarted empty,
# flushed and filled to maxmemory, PostgreSQL is restarted and its disk filled, the API replicas
# are killed, all at once or in turn, and a worker or an API replica, each in a network namespace
# of its own, is cut off from PostgreSQL, Redis or both, or a worker's links turn slow, silent or
# cut. Then every job is audited in PostgreSQL: it fails (exit 1) if any accepted job was lost or
# any result stored twice, or a fault did not heal.
#
#   scripts/chaos.sh                 full run: >= 5,000 jobs, 20 faults of each kind
#   scripts/chaos.sh --short         CI's run: at least 300 jobs, 1 fault of each kind; lasting
#                                    faults 5 s, partitions 25 s (past a lease)
#   scripts/chaos.sh [--short] -- --jobs 10000 --workers 2 ...   any genq-chaos flag after --
#
# It restarts this machine's local PostgreSQL and Redis (127.0.0.1:5432 and :6379) and leaves
# both running. Logs go to .genq/chaos/; the jobs stay in the genq_chaos database for a look.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# The fault suite restarts PostgreSQL and Redis: they must not inherit what this shell holds.
close_inherited_fds

run=(--jobs 5000 --faults-per-kind 20)
full_run=1
# The suite's database lives on a small tmpfs (below). Clients keep submitting until the last fault
# heals, about 50 jobs/s here, and each job stores about 7 KB: the full run's two hours need
# about 3 GB, which a 1 GB disk would run out of before any fault filled it. A tmpfs is memory,
# and the disk-full faults fill it whole: 6 GB only where that leaves room.
small_disk_size=6g
if [ "${1:-}" = "--short" ]; then
    run=(--jobs 300 --faults-per-kind 1 --short-faults)
    full_run=0
    small_disk_size=1g
    shift
elif [ "$(awk '/^MemAvailable:/ { print int($2 / 1048576) }' /proc/meminfo)" -lt 12 ]; then
    warn "under 12 GB of memory free: the full run's database gets a 2 GB disk, which may fill"
    small_disk_size=2g
fi
if [ "${1:-}" = "--" ]; then shift; fi

ensure_services
build_release
bin="$GENQ_ROOT/target/release"
model="$GENQ_ROOT/models/gpt2-tiny-synthetic.gguf"
if [ ! -f "$model" ]; then
    mkdir -p "$(dirname "$model")"
    "$bin/genqctl" model synth --shape tiny --out "$model"
fi

# Restart Redis with the settings it runs with now, so it comes back as it was (and empty).
redis_setting() { redis-cli -h 127.0.0.1 -p 6379 config get "$1" | sed -n 2p; }
redis_start="redis-server --daemonize yes --port 6379 --bind '$(redis_setting bind)'"
redis_start+=" --save '' --appendonly no --dir '$(redis_setting dir)' --logfile '$(redis_setting logfile)'"
redis_restart="redis-cli -h 127.0.0.1 -p 6379 shutdown nosave >/dev/null 2>&1;"
redis_restart+=" while redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; do sleep 0.05; done;"
redis_restart+=" $redis_start && until redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; do sleep 0.05; done"

# The cluster answering on 5432, restarted by Debian's wrapper (fast: open connections are cut).
pg_cluster="$(pg_lsclusters --no-header 2>/dev/null | awk '$3 == 5432 { print $1, $2; exit }' || true)"
postgres_restart="pg_ctlcluster --skip-systemctl-redirect $pg_cluster restart -m fast"
if [ "$(id -u)" -ne 0 ]; then
    redis_restart="sudo sh -c \"$redis_restart\""
    postgres_restart="sudo $postgres_restart"
fi
# The suite's database goes in a tablespace of its own on a small tmpfs, made afresh each run (a
# tmpfs does not outlive a reboot, and the tablespace must start empty).
small_disk=/run/genq-chaos-disk
prepare_small_disk() {
    local psql=(psql -q -v ON_ERROR_STOP=1 "postgres://postgres@127.0.0.1:5432/postgres")
    "${psql[@]}" -c "drop database if exists genq_chaos with (force)" \
        -c "drop tablespace if exists genq_chaos_space"
    mountpoint -q "$small_disk" && umount "$small_disk"
    mkdir -p "$small_disk"
    mount -t tmpfs -o "size=$small_disk_size" genq-chaos-disk "$small_disk"
    mkdir "$small_disk/data"
    chown postgres:postgres "$small_disk/data"
    "${psql[@]}" -c "create tablespace genq_chaos_space location '$small_disk/data'"
}

kinds="worker-kill,redis-restart,redis-flushall,postgres-restart,api-restart,api-replicas-in-turn"
kinds+=",redis-maxmemory"
if [ -z "$pg_cluster" ]; then
    warn "no Debian PostgreSQL cluster on port 5432: PostgreSQL restarts are left out"
    kinds="${kinds/postgres-restart,/}"
fi
# Partitions and link faults put each worker in a network namespace, and PostgreSQL's disk fills
# a tmpfs mounted for the run: root only.
disk=()
if [ "$(id -u)" -eq 0 ]; then
    command -v iptables >/dev/null || apt_install iptables
    command -v ip >/dev/null || apt_install iproute2
    kinds+=",partition-postgres,partition-redis,partition-both,slow-link,stalled-link"
    kinds+=",dropped-connections,api-partition-postgres,api-partition-redis"
    if [ -n "$pg_cluster" ]; then
        prepare_small_disk
        kinds+=",postgres-disk-full"
        # dd stops at the full disk, with an error; the check after it says whether it is full.
        fill="dd if=/dev/zero of=$small_disk/filler bs=64k 2>/dev/null;"
        fill+=" test \"\$(df --output=avail -k $small_disk | tail -1)\" -lt 1024"
        disk=(--postgres-tablespace genq_chaos_space --postgres-fill "$fill"
            --postgres-free "rm -f $small_disk/filler")
    fi
else
    warn "not root: partitions, link faults and PostgreSQL's full disk are left out"
fi

# A run stopped half-way must not leave Redis refusing writes or the small disk full.
redis_memory=("$(redis_setting maxmemory)" "$(redis_setting maxmemory-policy)")
restore() {
    redis-cli -h 127.0.0.1 -p 6379 config set maxmemory "${redis_memory[0]}" \
        maxmemory-policy "${redis_memory[1]}" >/dev/null 2>&1 || true
    rm -f "$small_disk/filler"
    autovacuum_give_back
}
trap restore EXIT
# The full run lasts hours: with autovacuum, as production runs (see lib.sh).
if [ "$full_run" = 1 ]; then autovacuum_on; fi

# Earlier runs' queues: the reconciler vacuums finished tasks, but a killed run leaves some.
redis-cli --scan --pattern 'genq_chaos_*' | xargs -r redis-cli del >/dev/null

say "running the fault-injection suite (${run[*]} $*)"
cd "$GENQ_ROOT"
"$bin/genq-chaos" --model "$model" --redis-restart "$redis_restart" \
    --postgres-restart "$postgres_restart" --kinds "$kinds" "${disk[@]}" "${run[@]}" "$@"
