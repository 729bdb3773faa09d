#!/bin/sh
# examples/orders-scale.sh: the flagship at scale, as "make check" runs it.
# examples/orders --orders 2000 --quiet generates 2,000 orders (about 4,000
# lines), streams the report with line queries in flight four at once, and
# checks itself against SQL; this test also reads its output and checks
# that the report's totals (orders, lines, the grand total) are the ones
# SQL gave, and that the summary counts every row and query and saw the
# window's backpressure.  It does so on every event loop the flagship was
# built with (its --loop option: ev, and uv, glib and clock when built).
# examples/orders-pg runs the same when DEFERRED_PG_CONNINFO names a
# server.
set -u

top_builddir=${top_builddir:-.}
orders=2000
status=0

check() { # check NAME PROGRAM [ARGS]
    name=$1
    shift
    what="$name $(echo "$*" | sed 's/^[^ ]* *//')"
    out=$(mktemp)
    "$@" --orders $orders --quiet > "$out" 2> "$out.err"
    rc=$?
    if test $rc -eq 77; then
        echo "SKIP: $name: $(cat "$out")"
        rm -f "$out" "$out.err"
        return 0
    fi
    cat "$out"
    # The report's totals, the SQL's, and the summary's counts.
    report=$(sed -n 's/^\([0-9]*\) orders, \([0-9]*\) lines$/\1 \2/p' "$out")
    grand=$(sed -n 's/^Grand total *\([0-9.]*\)$/\1/p' "$out")
    sql=$(sed -n 's/^SQL says: \([0-9]*\) lines, total \([0-9.]*\);.*/\1 \2/p' "$out")
    rows=$(sed -n 's/^  rows streamed *\([0-9]*\) (\([0-9]*\) orders, \([0-9]*\) lines.*/\1 \2 \3/p' "$out")
    queries=$(sed -n 's/^  queries issued *\([0-9]*\) (1 of the orders, \([0-9]*\) of lines.*/\1 \2/p' "$out")
    pauses=$(sed -n 's/^  pauses applied *\([0-9]*\).*/\1/p' "$out")
    progress=$(grep -c "^$name: .*% .* of $orders orders" "$out.err")
    set -- $report
    r_orders=${1:-}; r_lines=${2:-}
    set -- $sql
    s_lines=${1:-}; s_total=${2:-}
    set -- $rows
    rows_orders=${2:-}; rows_lines=${3:-}
    set -- $queries
    q_lines=${2:-}
    fail=
    test $rc -eq 0 || fail="$fail exit status $rc;"
    test "$r_orders" = $orders || fail="$fail report has '$r_orders' orders, not $orders;"
    test -n "$s_lines" && test "$r_lines" = "$s_lines" ||
        fail="$fail report has '$r_lines' lines, SQL says '$s_lines';"
    test -n "$s_total" && test "$grand" = "$s_total" ||
        fail="$fail grand total '$grand', SQL says '$s_total';"
    test "$rows_orders" = $orders && test "$rows_lines" = "$s_lines" ||
        fail="$fail summary streamed '$rows_orders' orders and '$rows_lines' lines;"
    test "$q_lines" = $orders || fail="$fail summary has '$q_lines' line queries;"
    test "${pauses:-0}" -gt 0 || fail="$fail no pause applied;"
    test "$progress" -ge 10 || fail="$fail $progress progress lines on stderr;"
    if test -n "$fail"; then
        cat "$out.err"
        echo "FAIL: $what --orders $orders:$fail"
        status=1
    else
        echo "PASS: $what --orders $orders: $r_orders orders, $r_lines lines, total $grand" \
            "as SQL says; $pauses pauses"
    fi
    rm -f "$out" "$out.err"
}

# The loops it knows, from its --help: "--loop L ... run on: ev, uv (ev)".
loops=$("$top_builddir/examples/orders" --help |
    sed -n 's/.*--loop L .*run on: \(.*\) (ev)$/\1/p' | tr -d ',')
test -n "$loops" || { echo "FAIL: orders --help names no loop"; exit 1; }
for loop in $loops; do
    check orders "$top_builddir/examples/orders" --loop "$loop"
done
if test -n "${DEFERRED_PG_CONNINFO:-}" && test -x "$top_builddir/examples/orders-pg"; then
    check orders-pg "$top_builddir/examples/orders-pg"
fi
exit $status
