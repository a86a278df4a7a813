#!/usr/bin/env bash
# The soak: genq's API (three replicas behind a balancer) and four workers on the tiny model under
# steady mixed traffic (batches polled and sometimes cancelled, POST /generate, batches followed
# over SSE, history pages) for an hour, a worker SIGKILLed and restarted every 10 minutes. Every
# minute a row: each process's resident memory, p50/p99 latency of each kind of request, the sizes
# of PostgreSQL's database and Redis. Then the verdict against the targets (after a 10-minute
# warm-up: RSS growth <= 5% per process, p99 of the last ten minutes <= 1.2x the first ten, no
# error) and a plot. Not in CI: it takes the hour.
#
#   scripts/soak.sh                    60 minutes
#   scripts/soak.sh -- --soak-minutes 15 --kill-every-minutes 5 --warm-up-minutes 3
#
# The table goes to stdout, the CSV to .genq/soak/soak.csv, the plot to .genq/soak/soak.png.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ "${1:-}" = "--" ]; then shift; fi
ensure_services
build_release
command -v gnuplot >/dev/null || apt_install gnuplot-nox
bin="$GENQ_ROOT/target/release"
model="$GENQ_ROOT/models/gpt2-tiny-synthetic.gguf"
if [ ! -f "$model" ]; then
    mkdir -p "$(dirname "$model")"
    "$bin/genqctl" model synth --shape tiny --out "$model"
fi
logs="$GENQ_ROOT/.genq/soak"
mkdir -p "$logs"

# An hour's growth as production would see it: with autovacuum (see lib.sh).
autovacuum_on
trap autovacuum_give_back EXIT

say "soaking genq (logs and CSV in $logs)"
status=0
"$bin/genq-chaos" --model "$model" --logs "$logs" --kinds worker-kill --soak-minutes 60 "$@" ||
    status=$?

csv="$logs/soak.csv"
if [ -s "$csv" ]; then
    # Columns: minute, one RSS per process, p50 and p99 of four kinds, PostgreSQL, Redis, errors.
    columns=$(head -1 "$csv" | tr ',' '\n' | wc -l)
    processes=$((columns - 1 - 8 - 3))
    rss="" latency=""
    for ((c = 2; c < 2 + processes; c++)); do rss+="'$csv' using 1:$c with lines title columnheader($c), "; done
    for ((c = 3 + processes; c < 2 + processes + 8; c += 2)); do
        latency+="'$csv' using 1:$c with lines title columnheader($c), "
    done
    store=$((2 + processes + 8))
    gnuplot <<PLOT
set datafile separator ","
set terminal png size 1200,1100
set output "$logs/soak.png"
set multiplot layout 3,1 title "genq soak"
set xlabel "minute"
set key outside right
set ylabel "RSS MiB"
plot ${rss%, }
set ylabel "p99 latency s"
plot ${latency%, }
set ylabel "MiB"
plot '$csv' using 1:$store with lines title columnheader($store), '$csv' using 1:$((store + 1)) with lines title columnheader($((store + 1)))
unset multiplot
PLOT
    say "plot: $logs/soak.png"
fi
exit "$status"
