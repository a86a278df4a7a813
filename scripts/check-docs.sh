#!/usr/bin/env bash
# Every environment variable a genq binary reads is in .env.sample and docs/configuration.md, and
# every variable .env.sample names is read by one. Run by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

# clap's `env = "NAME"` and direct reads (std::env::var / var_os) in the binaries' crates.
read_by_code=$(grep -rhoE 'env = "[A-Z][A-Z0-9_]+"|env::var(_os)?\("[A-Z][A-Z0-9_]+"\)' \
        api/src worker/src ctl/src shared/src engine/src model/src |
    grep -oE '"[A-Z0-9_]+"' | tr -d '"' | sort -u)
# Names in .env.sample, set or commented out (`# NAME=`).
in_sample=$(grep -oE '^#? ?[A-Z][A-Z0-9_]+=' .env.sample | tr -d '#= ' | sort -u)

problems=0
for name in $read_by_code; do
    if ! grep -qx "$name" <<<"$in_sample"; then
        echo "check-docs: $name is read by genq but missing from .env.sample" >&2
        problems=1
    fi
    if ! grep -q "\`$name\`" docs/configuration.md; then
        echo "check-docs: $name is read by genq but missing from docs/configuration.md" >&2
        problems=1
    fi
done
for name in $in_sample; do
    # RUST_LOG is read by tracing-subscriber's EnvFilter, not by name in genq's code.
    if [ "$name" != RUST_LOG ] && ! grep -qx "$name" <<<"$read_by_code"; then
        echo "check-docs: .env.sample names $name, which no genq binary reads" >&2
        problems=1
    fi
done
[ "$problems" = 0 ] || exit 1
echo "check-docs: $(wc -w <<<"$read_by_code") variables, each in .env.sample and docs/configuration.md"
