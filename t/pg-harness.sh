#!/bin/sh
# t/pg-harness.sh: a throwaway PostgreSQL server, as the tests make one
# (t/pg-harness.c), for trying examples/orders-pg by hand.
#
#   t/pg-harness.sh start        prints dir=... and conninfo=... (for eval)
#   t/pg-harness.sh stop DIR     stops that server and removes DIR
#
# It runs initdb into a new directory under /tmp and starts postgres
# listening only on a Unix socket in that directory, as an unprivileged
# user (through runuser when run as root).  It never touches a system
# cluster.
set -eu

bindir=${PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
if test -z "$bindir" || test ! -x "$bindir/initdb"; then
    echo "pg-harness: no PostgreSQL server binaries in /usr/lib/postgresql/*/bin" >&2
    echo "pg-harness: (Debian: apt-get install postgresql-15)" >&2
    exit 77
fi
as() {
    if test "$(id -u)" -eq 0; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

case ${1:-} in
start)
    dir=$(mktemp -d /tmp/pgh.XXXXXX)
    : > "$dir/log"
    if test "$(id -u)" -eq 0; then chown -R postgres: "$dir"; fi
    as "$bindir/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync >> "$dir/log" 2>&1
    as "$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
        -o "-c listen_addresses='' -k $dir -p 5432 -c fsync=off" start >> "$dir/log" 2>&1
    echo "dir='$dir'"
    echo "conninfo='host=$dir port=5432 user=postgres dbname=postgres'"
    ;;
stop)
    dir=${2:?usage: $0 stop DIR}
    as "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >> "$dir/log" 2>&1 || true
    rm -rf "$dir"
    ;;
*)
    echo "usage: $0 start | stop DIR" >&2
    exit 2
    ;;
esac
