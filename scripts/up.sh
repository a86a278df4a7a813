#!/usr/bin/env bash
# Quickstart: bring genq up on this machine and run a real batch end to end.
#
#   scripts/up.sh            run one sample batch, print its results, stop everything
#   scripts/up.sh --serve    the same, then keep the API (port 8000) and a worker running
#
# Uses GENQ_MODEL if set; otherwise fetches GPT-2 from Hugging Face (genqctl model pull), or where
# that fails (offline), synthesizes a GPT-2 124M-shape model whose text is noise.
# The API asks for an API key: the script makes a development key (a tenant key of tenant
# `local`, no limits) and keeps it in .genq/dev-api-key (mode 600), reused on later runs while it
# still authenticates; it prints how to use it.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

serve=0
case "${1:-}" in
    --serve) serve=1 ;;
    "") ;;
    *) echo "usage: $0 [--serve]" >&2; exit 2 ;;
esac

ensure_services
# Only what the quickstart runs: the benchmark, fault suite and tests are built by their scripts.
build_release -p genq-api -p genq-worker -p genqctl

bin="$GENQ_ROOT/target/release"
state="$GENQ_ROOT/.genq"
mkdir -p "$state"
export GENQ_API_ADDR="${GENQ_API_ADDR:-127.0.0.1:8000}"
if [ "${GENQ_AUTH:-on}" = off ]; then
    warn "GENQ_AUTH=off is set in this shell: the API will take requests without a key (development only)."
fi
export GENQ_API_URL="http://$GENQ_API_ADDR"

if [ -z "${GENQ_MODEL:-}" ]; then
    GENQ_MODEL="$GENQ_ROOT/models/gpt2.Q8_0.gguf"
    if [ ! -f "$GENQ_MODEL" ]; then
        say "fetching GPT-2 (Q8_0 GGUF) from Hugging Face into $GENQ_MODEL"
        if ! "$bin/genqctl" model pull --out "$GENQ_MODEL"; then
            GENQ_MODEL="$GENQ_ROOT/models/gpt2-124m-synthetic-q8_0.gguf"
            if [ ! -f "$GENQ_MODEL" ]; then
                say "synthesizing $GENQ_MODEL"
                "$bin/genqctl" model synth --out "$GENQ_MODEL" --shape gpt2-124m
            fi
            warn "Could not fetch GPT-2 (no network?): using a synthesized GPT-2 124M-shape model with RANDOM weights."
            warn "Its text is meaningless; run 'genqctl model pull' (HF_ENDPOINT for a mirror) or set GENQ_MODEL for real text."
        fi
    fi
fi
export GENQ_MODEL

say "migrating"
"$bin/genqctl" migrate

pids=()
stop_all() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop_all EXIT

say "starting genq-api on $GENQ_API_ADDR (log: $state/api.log)"
"$bin/genq-api" >"$state/api.log" 2>&1 &
pids+=($!)
say "starting genq-worker (log: $state/worker.log)"
"$bin/genq-worker" >"$state/worker.log" 2>&1 &
pids+=($!)

for _ in $(seq 100); do
    curl -fsS "$GENQ_API_URL/ready" >/dev/null 2>&1 && break
    sleep 0.2
done
curl -fsS "$GENQ_API_URL/ready" >/dev/null || { warn "API not ready; see $state/api.log"; exit 1; }

# The HTTP status GET /history answers with key $1. The key goes to curl on stdin, not in its
# arguments, where any local user could read it (ps).
key_status() {
    printf 'Authorization: Bearer %s\n' "$1" |
        curl -sS -o /dev/null -w '%{http_code}' -H @- "$GENQ_API_URL/history?limit=1" || true
}

key_file="$state/dev-api-key"
api_key=""
if [ -s "$key_file" ]; then
    api_key="$(cat "$key_file")"
    status="$(key_status "$api_key")"
    if [ "$status" = 200 ]; then
        chmod 600 "$key_file"
        say "using the API key saved in $key_file"
    else
        say "the API key saved in $key_file no longer authenticates (HTTP $status): making a new one"
        api_key=""
    fi
fi
if [ -z "$api_key" ]; then
    # Tenant `local` is the tenant of jobs recorded before keys existed, so their history stays
    # visible to the development key.
    key_name="dev-$(date +%s)-$$"
    say "creating API key $key_name"
    api_key="$("$bin/genqctl" keys create --name "$key_name" --tenant local)"
    (umask 077 && printf '%s\n' "$api_key" >"$key_file.tmp")
    chmod 600 "$key_file.tmp"
    mv -f "$key_file.tmp" "$key_file"
fi
# genqctl submit reads it.
export GENQ_API_KEY="$api_key"

# The model started here serves requests that name none, whatever an earlier run registered.
if [ -n "${GENQ_MODEL_NAME:-}" ]; then
    "$bin/genqctl" models default "$GENQ_MODEL_NAME"
else
    "$bin/genqctl" models default --file "$GENQ_MODEL"
fi

say "submitting a sample batch"
"$bin/genqctl" submit --wait --max-tokens 32 --seed 7 \
    "Once upon a time" "The meaning of life is" "In a distant galaxy"

say "every route but /health, /ready, /metrics, /docs and /ui needs an API key; yours is in $key_file (mode 600):"
echo "  export GENQ_API_KEY=\"\$(cat '$key_file')\""
echo "  curl -s '$GENQ_API_URL/history?limit=5' -H \"Authorization: Bearer \$GENQ_API_KEY\""
if [ "$serve" -eq 1 ]; then
    say "serving on $GENQ_API_URL; Ctrl-C stops. Try:"
    echo "  curl -s $GENQ_API_URL/batch -H \"Authorization: Bearer \$GENQ_API_KEY\" \\"
    echo "       -H 'content-type: application/json' -d '{\"prompts\":[\"Hello\"]}'"
    wait
fi
