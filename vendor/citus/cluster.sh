#!/usr/bin/env bash
# A local Citus cluster (a coordinator and workers, all on 127.0.0.1) for the
# tests and for trying the service on Citus. Used by `make cluster`,
# `make cluster-stop` and the cluster step of `make test`.
#
#   cluster.sh build            install Debian's PostgreSQL 15 (apt-get, if missing),
#                               build and install Citus from the vendored source
#                               (once: skipped while the installed build is current)
#   cluster.sh start            build, then init/start the nodes and register the
#                               workers; prints DATABASE_URL=... as its last line
#   cluster.sh stop             stop the nodes (their data stays)
#   cluster.sh with CMD...      start, run CMD with DATABASE_URL set, then stop
#                               the cluster again if this call started it
#
# Every step is idempotent. Settings (environment): CITUS_CLUSTER_DIR (.cluster),
# CITUS_DATA_DIR (<cluster dir>/data), CITUS_PORT (9700: the coordinator; workers
# take the next ports), CITUS_WORKERS (2), CITUS_DB (chain), CITUS_SHARD_COUNT (8:
# shards per distributed table, for tables created from then on; Citus's default
# is 32, fewer keep the tests' per-test TRUNCATE short on a small machine).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CITUS_VERSION=13.2.2
PG_MAJOR=15
PG_BIN=/usr/lib/postgresql/$PG_MAJOR/bin
PG_CONFIG=$PG_BIN/pg_config
CLUSTER_DIR=${CITUS_CLUSTER_DIR:-$ROOT/.cluster}
DATA_DIR=${CITUS_DATA_DIR:-$CLUSTER_DIR/data}
BUILD_DIR=$CLUSTER_DIR/build
PORT=${CITUS_PORT:-9700}
WORKERS=${CITUS_WORKERS:-2}
DB=${CITUS_DB:-chain}
SHARD_COUNT=${CITUS_SHARD_COUNT:-8}
HOST=127.0.0.1
PACKAGES=(postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR gcc make patch
    liblz4-dev libzstd-dev libcurl4-openssl-dev libkrb5-dev libssl-dev flex bison)

say() { echo "cluster: $*" >&2; }
die() { say "$*"; exit 1; }

installed_version() { dpkg-query -W -f='${db:Status-Status} ${Version}' "$1" 2>/dev/null || true; }

ensure_packages() {
    local missing=() p server dev
    for p in "${PACKAGES[@]}"; do
        [[ $(installed_version "$p") == installed\ * ]] || missing+=("$p")
    done
    # The headers must be the server's own minor version (the vendored patch
    # depends on it): install both together when they differ.
    server=$(installed_version postgresql-$PG_MAJOR)
    dev=$(installed_version postgresql-server-dev-$PG_MAJOR)
    if [[ ${#missing[@]} -eq 0 && $server != "$dev" ]]; then
        missing=(postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR)
    fi
    [[ ${#missing[@]} -eq 0 ]] && return 0
    [[ $(id -u) -eq 0 ]] || die "missing Debian packages (${missing[*]}): run as root, or install them"
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Both, even if only one was missing, so that they stay the same version.
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
}

# What the installed citus.so was built from and against; a change rebuilds.
build_id() { echo "citus-$CITUS_VERSION $(sha256sum "$HERE"/*.patch | cut -c1-16) $("$PG_CONFIG" --version)"; }

build() {
    ensure_packages
    local libdir stamp
    libdir=$("$PG_CONFIG" --pkglibdir)
    stamp=$BUILD_DIR/installed
    if [[ -f $libdir/citus.so && -f $stamp && $(cat "$stamp") == "$(build_id)" ]]; then
        return 0
    fi
    [[ $(id -u) -eq 0 || -w $libdir ]] || die "installing Citus into $libdir needs root"
    local src=$BUILD_DIR/citus-$CITUS_VERSION
    if [[ ! -f $BUILD_DIR/built || $(cat "$BUILD_DIR/built") != "$(build_id)" ]]; then
        say "building Citus $CITUS_VERSION against $("$PG_CONFIG" --version) (2-3 minutes on 2 cores)"
        rm -rf "$src" "$BUILD_DIR/built"
        mkdir -p "$src"
        tar xzf "$HERE/citus-$CITUS_VERSION.tar.gz" -C "$src"
        (
            cd "$src"
            patch -s -p1 <"$HERE/pg15.20-have_createdb_privilege.patch"
            ./configure -q PG_CONFIG="$PG_CONFIG" >"$BUILD_DIR/configure.log" 2>&1 ||
                { tail -30 "$BUILD_DIR/configure.log"; exit 1; }
            make -s -j"$(nproc)" >"$BUILD_DIR/make.log" 2>&1 ||
                { tail -30 "$BUILD_DIR/make.log"; exit 1; }
        )
        build_id >"$BUILD_DIR/built"
    fi
    say "installing Citus into $libdir"
    make -s -C "$src" install >"$BUILD_DIR/install.log" 2>&1 ||
        { tail -30 "$BUILD_DIR/install.log"; exit 1; }
    build_id >"$stamp"
}

# PostgreSQL refuses to run as root: as root, the nodes run as Debian's
# `postgres` user (created by the postgresql-15 package).
as_owner() {
    if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

node_name() { if [[ $1 -eq 0 ]]; then echo coordinator; else echo "worker$1"; fi; }
node_dir() { echo "$DATA_DIR/$(node_name "$1")"; }
node_port() { echo $((PORT + $1)); }
running() { as_owner "$PG_BIN/pg_ctl" -D "$(node_dir "$1")" status >/dev/null 2>&1; }
psql_at() {
    local port=$1 db=$2
    shift 2
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$HOST" -p "$port" -U postgres -d "$db" -At "$@"
}

start_node() {
    local i=$1 dir port
    dir=$(node_dir "$i")
    port=$(node_port "$i")
    if [[ ! -f $dir/PG_VERSION ]]; then
        as_owner mkdir -p "$dir"
        as_owner "$PG_BIN/initdb" -D "$dir" -U postgres --auth=trust --encoding=UTF8 \
            --locale=C >/dev/null
        echo "include_if_exists = 'cluster.conf'" | as_owner tee -a "$dir/postgresql.conf" >/dev/null
    fi
    # Rewritten at every start (reloaded if running: settings that need a restart
    # apply at the next one).
    as_owner tee "$dir/cluster.conf" >/dev/null <<EOF
# Written by vendor/citus/cluster.sh: a local test cluster, loopback only.
listen_addresses = '$HOST'
port = $port
unix_socket_directories = ''
shared_preload_libraries = 'citus'
max_connections = 300
max_prepared_transactions = 300
shared_buffers = 128MB
max_wal_size = 2GB
wal_level = logical
fsync = on
synchronous_commit = on
citus.shard_count = $SHARD_COUNT
citus.enable_stat_counters = on
EOF
    if ! running "$i"; then
        as_owner "$PG_BIN/pg_ctl" -D "$dir" -l "$DATA_DIR/$(node_name "$i").log" -w -t 60 \
            start >/dev/null || { tail -20 "$DATA_DIR/$(node_name "$i").log" >&2; exit 1; }
    else
        as_owner "$PG_BIN/pg_ctl" -D "$dir" reload >/dev/null
    fi
    # The service's database, with the extension, on every node.
    if [[ -z $(psql_at "$port" postgres -c "SELECT 1 FROM pg_database WHERE datname = '$DB'") ]]; then
        psql_at "$port" postgres -c "CREATE DATABASE \"$DB\""
    fi
    psql_at "$port" "$DB" -c "SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS citus"
}

start() {
    build
    if [[ $(id -u) -eq 0 ]]; then
        mkdir -p "$DATA_DIR"
        chown postgres: "$DATA_DIR"
        runuser -u postgres -- test -w "$DATA_DIR" ||
            die "the postgres user cannot write $DATA_DIR: set CITUS_DATA_DIR to a folder it can reach"
    else
        mkdir -p "$DATA_DIR"
    fi
    local i
    for ((i = 0; i <= WORKERS; i++)); do start_node "$i"; done
    psql_at "$PORT" "$DB" -c "SELECT citus_set_coordinator_host('$HOST', $PORT)" >/dev/null
    for ((i = 1; i <= WORKERS; i++)); do
        psql_at "$PORT" "$DB" -c "SELECT citus_add_node('$HOST', $(node_port "$i"))
            WHERE NOT EXISTS (SELECT 1 FROM pg_dist_node
                              WHERE nodename = '$HOST' AND nodeport = $(node_port "$i"))" >/dev/null
    done
    say "coordinator on $HOST:$PORT, $WORKERS workers on the next ports; data in $DATA_DIR"
    echo "DATABASE_URL=postgresql://postgres@$HOST:$PORT/$DB"
}

stop() {
    local i
    for ((i = WORKERS; i >= 0; i--)); do
        if [[ -f $(node_dir "$i")/PG_VERSION ]] && running "$i"; then
            as_owner "$PG_BIN/pg_ctl" -D "$(node_dir "$i")" -m fast -w stop >/dev/null
        fi
    done
    say "stopped"
}

with() {
    local was_running=1 url rc=0
    [[ -x $PG_BIN/pg_ctl && -f $(node_dir 0)/PG_VERSION ]] && running 0 || was_running=0
    url=$(start | tail -n 1)
    DATABASE_URL=${url#DATABASE_URL=} "$@" || rc=$?
    [[ $was_running -eq 1 ]] || stop
    return "$rc"
}

case ${1:-} in
build) build ;;
start) start ;;
stop) stop ;;
with) shift; with "$@" ;;
*) die "usage: $0 build|start|stop|with CMD..." ;;
esac
