#!/bin/sh
# examples/orders-pg.sh: examples/orders-pg (the flagship against
# PostgreSQL, its per-order queries in flight together on a connection in
# pipeline mode) prints the same report as examples/orders (SQLite), on a
# throwaway server (t/pg-harness.sh): for the five-order fixture and for
# 500 generated orders, the lines from "Orders report" to "Grand total",
# the merge's counts and the SQL check must be equal, and both programs
# must exit 0 (each checks itself against SQL).  Skips (77) without the
# server binaries.
set -u

top_builddir=${top_builddir:-.}
srcdir=${srcdir:-.}
harness="$srcdir/t/pg-harness.sh"
out=$(mktemp -d)
dir=
cleanup() {
    test -n "$dir" && sh "$harness" stop "$dir"
    rm -rf "$out"
}
trap cleanup EXIT
env=$(sh "$harness" start) || { rc=$?; test $rc -eq 77 && exit 77; echo "FAIL: no server"; exit 1; }
eval "$env"
status=0

report() { # the parts of an output that must not differ
    sed -n '/^Orders report$/,/^Grand total/p;/ rows from the orders query, /p;/^SQL says: /p' "$1"
}

for args in "" "--orders 500"; do
    # shellcheck disable=SC2086
    "$top_builddir/examples/orders" $args > "$out/sqlite" ||
        { echo "FAIL: examples/orders $args exited $?"; status=1; }
    # shellcheck disable=SC2086
    "$top_builddir/examples/orders-pg" $args "$conninfo" > "$out/pg" 2> "$out/pg.err" ||
        { echo "FAIL: examples/orders-pg $args exited $?"; cat "$out/pg" "$out/pg.err"; status=1; }
    report "$out/sqlite" > "$out/a"
    report "$out/pg" > "$out/b"
    if test ! -s "$out/a" || test ! -s "$out/b"; then
        echo "FAIL: no report in an output ($args)"
        status=1
    elif ! diff -u "$out/a" "$out/b"; then
        echo "FAIL: examples/orders-pg $args: its report differs from examples/orders's (diff above)"
        status=1
    else
        echo "PASS: examples/orders-pg $args prints examples/orders's report ($(wc -l < "$out/a") lines)"
    fi
done
exit $status
