# Shared by up.sh, test.sh and the bench/fault scripts: make sure the build tools, PostgreSQL and
# Redis are there and running. Written for Debian/Ubuntu; sourced, not run.

set -euo pipefail

GENQ_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export GENQ_ROOT

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
warn() { printf '\033[1;33m!!! %s\033[0m\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
    if [ "$apt_updated" -eq 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# llama-cpp-sys-2 builds llama.cpp with cmake and generates bindings with libclang.
ensure_build_tools() {
    local missing=()
    command -v cmake >/dev/null || missing+=(cmake)
    command -v clang >/dev/null || missing+=(clang)
    # libclang itself, not libclang-cpp (which clang's package brings and bindgen cannot use).
    ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/llvm-*/lib/libclang-[0-9]*.so* >/dev/null 2>&1 ||
        missing+=(libclang-dev)
    command -v pg_isready >/dev/null || missing+=(postgresql-client)
    command -v redis-cli >/dev/null || missing+=(redis-tools)
    if [ "${#missing[@]}" -gt 0 ]; then
        say "installing ${missing[*]}"
        apt_install "${missing[@]}"
    fi
    command -v cargo >/dev/null || {
        warn "cargo not found: install Rust from https://rustup.rs first"
        exit 1
    }
}

# The dashboard's test drives Debian's Chromium through ChromeDriver.
ensure_browser() {
    if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
        say "installing chromium and chromium-driver (the dashboard's browser test)"
        apt_install chromium chromium-driver
    fi
}

# Installs a pinned PyPI package into a virtual environment under .genq/ (never into git), unless
# that version is there already: ensure_python_package VENV_NAME PACKAGE VERSION.
ensure_python_package() {
    local venv="$GENQ_ROOT/.genq/$1" package="$2" version="$3"
    local query="import importlib.metadata as m; print(m.version('$package'))"
    [ "$("$venv/bin/python" -c "$query" 2>/dev/null)" = "$version" ] && return
    command -v python3 >/dev/null || apt_install python3 python3-venv
    if [ ! -x "$venv/bin/python" ]; then
        say "creating $venv"
        # Debian's python3 leaves out venv (and ensurepip) unless python3-venv is installed.
        python3 -m venv "$venv" 2>/dev/null || {
            rm -rf "$venv"
            apt_install python3-venv
            python3 -m venv "$venv"
        }
    fi
    say "installing $package $version into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$package==$version"
    [ "$("$venv/bin/python" -c "$query" 2>/dev/null)" = "$version" ] ||
        { warn "$package $version did not install"; exit 1; }
}

# Only a local default service is installed and started: a DATABASE_URL or REDIS_URL pointing
# elsewhere is taken as given.
# Closes this shell's file descriptors beyond stdio. A daemon started from here would inherit them:
# one holding a lock taken with flock, or a CI runner's pipe, would keep it open as long as it runs.
close_inherited_fds() {
    local fd
    for fd in $(ls /proc/$BASHPID/fd); do
        [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-" 2>/dev/null
    done
    return 0
}

# Runs a command that starts a daemon, without the file descriptors above.
detached() {
    (
        close_inherited_fds
        "$@"
    )
}

ensure_postgres() {
    if pg_isready -q -h 127.0.0.1 -p 5432; then return; fi
    if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
        say "installing PostgreSQL"
        apt_install postgresql
    fi
    say "starting PostgreSQL"
    local version
    version="$(ls /etc/postgresql | sort -V | tail -1)"
    detached as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
    pg_isready -q -h 127.0.0.1 -p 5432 || { warn "PostgreSQL did not start"; exit 1; }
    # genq connects as `postgres` over TCP; a fresh Debian cluster wants a password there, so
    # trust local connections as the CI machines do.
    if ! psql -h 127.0.0.1 -U postgres -d postgres -c 'select 1' >/dev/null 2>&1; then
        local hba="/etc/postgresql/$version/main/pg_hba.conf"
        say "allowing local TCP connections without a password ($hba)"
        as_root sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
        as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload
    fi
}

ensure_redis() {
    if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then return; fi
    command -v redis-server >/dev/null || { say "installing Redis"; apt_install redis-server; }
    say "starting Redis"
    as_root mkdir -p /var/lib/redis /var/log/redis
    detached as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
        --appendonly no --dir /var/lib/redis --logfile /var/log/redis/genq.log
    for _ in $(seq 50); do redis-cli ping >/dev/null 2>&1 && break; sleep 0.2; done
    redis-cli ping >/dev/null 2>&1 || { warn "Redis did not start"; exit 1; }
}

# PostgreSQL's autovacuum is on by default, and genq counts on it: without it no table is ever
# analyzed or vacuumed, so plans go stale and partial indexes keep every row that ever matched
# them (the reconciler's scan of running jobs read 150,000 entries for none after two hours).
# Some CI machines turn it off. The runs that last (the soak, the full fault suite) turn it on
# with `autovacuum_on`; `autovacuum_give_back` restores what was there.
autovacuum_give_back_sql=""
autovacuum_on() {
    local psql=(psql -h 127.0.0.1 -U postgres -d postgres -qAt) setting set_in
    read -r setting set_in < <("${psql[@]}" -c \
        "select setting, coalesce(sourcefile, '-') from pg_settings where name = 'autovacuum'")
    [ "$setting" = off ] || return 0
    warn "PostgreSQL's autovacuum is off here: on for this run"
    case "$set_in" in
        */postgresql.auto.conf) autovacuum_give_back_sql="alter system set autovacuum = off" ;;
        *) autovacuum_give_back_sql="alter system reset autovacuum" ;;
    esac
    "${psql[@]}" -c "alter system set autovacuum = on" -c "select pg_reload_conf()" >/dev/null
    sleep 1 # the reload is asynchronous
    [ "$("${psql[@]}" -c 'show autovacuum')" = on ] ||
        warn "autovacuum stayed off (set on PostgreSQL's command line?): the figures are without it"
}
autovacuum_give_back() {
    [ -n "$autovacuum_give_back_sql" ] || return 0
    psql -h 127.0.0.1 -U postgres -d postgres -qAt -c "$autovacuum_give_back_sql" \
        -c "select pg_reload_conf()" >/dev/null
}

ensure_services() {
    ensure_build_tools
    ensure_postgres
    ensure_redis
}

# With no arguments builds every binary and test, as scripts/test.sh does: cargo resolves
# dependencies' features per invocation and dev-dependencies change some, so test.sh, fuzz.sh,
# chaos.sh and bench/run.sh all build the same way and none rebuilds (llama.cpp included) after
# another. Otherwise passes its arguments (`-p genq-api ...`, as up.sh does).
#
# llama.cpp is built for this host's CPU (scripts/host-cpu-flags.sh). llama-cpp-sys-2 configures
# llama.cpp's CMake build once and ignores later option changes, so a build configured with
# other instruction sets is cleaned first (once: several minutes).
build_release() {
    use_host_cpu_flags
    say "building genq (release; the first build compiles llama.cpp and takes several minutes)"
    local what=("$@")
    [ "${#what[@]}" -gt 0 ] || what=(--workspace --bins --tests)
    (cd "$GENQ_ROOT" && cargo build --release --locked "${what[@]}")
}

# The instruction-set options to build llama.cpp with, exported (and so in force for `cargo test`
# after build_release too). $1: the target directory, relative to the workspace (default target).
GENQ_CPU_OPTIONS=(GGML_AVX512 GGML_AVX512_VBMI GGML_AVX512_VNNI GGML_AVX512_BF16 GGML_AVX_VNNI)
use_host_cpu_flags() {
    local target_dir="${1:-target}"
    eval "$("$GENQ_ROOT/scripts/host-cpu-flags.sh")"
    local option cache configured
    for option in "${GENQ_CPU_OPTIONS[@]}"; do
        export "$option=${!option:-OFF}"
    done
    for cache in "$GENQ_ROOT/$target_dir"/release/build/llama-cpp-sys-2-*/out/build/CMakeCache.txt; do
        [ -f "$cache" ] || continue
        for option in "${GENQ_CPU_OPTIONS[@]}"; do
            configured=$(sed -n "s/^$option:[A-Z]*=//p" "$cache")
            if [ "${configured:-OFF}" != "${!option}" ]; then
                say "llama.cpp was configured with $option=${configured:-OFF}, this host's build wants ${!option}: rebuilding it"
                (cd "$GENQ_ROOT" && cargo clean --release -p llama-cpp-sys-2 --target-dir "$target_dir")
                return
            fi
        done
    done
}
