#!/usr/bin/env bash
# Dependency policy (deny.toml): banned or duplicated crates, licences, sources. Advisories are not
# checked: their database comes from GitHub, which CI cannot reach. Extra arguments go to
# `cargo deny check` before the check names (`scripts/deny.sh --show-stats`).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CARGO_DENY_VERSION=0.20.2

if ! command -v cargo-deny >/dev/null; then
    command -v cargo >/dev/null || {
        warn "cargo not found: install Rust from https://rustup.rs first"
        exit 1
    }
    say "installing cargo-deny $CARGO_DENY_VERSION (compiles; a few minutes)"
    cargo install --locked cargo-deny --version "$CARGO_DENY_VERSION"
fi

cd "$GENQ_ROOT"
say "cargo deny check bans licenses sources"
# The inclusion graphs run to a thousand lines for the duplicate-version warnings alone;
# `cargo tree --locked -i CRATE` shows where a crate named here comes from.
cargo deny --locked check --hide-inclusion-graph "$@" bans licenses sources
