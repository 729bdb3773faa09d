#!/bin/sh
# examples/orders-async.sh: examples/orders-async (the flagship's per-order
# logic as a coroutine) prints the same report as examples/orders: the
# lines from "Orders report" to "Grand total" of both runs must be equal,
# and both must exit 0 (each checks its grand total against SQL).
set -u

top_builddir=${top_builddir:-.}
a=$(mktemp)
b=$(mktemp)
trap 'rm -f "$a" "$a.full" "$b" "$b.full"' EXIT
status=0

"$top_builddir/examples/orders" > "$a.full" || { echo "FAIL: examples/orders exited $?"; status=1; }
"$top_builddir/examples/orders-async" > "$b.full" || { echo "FAIL: examples/orders-async exited $?"; status=1; }
sed -n '/^Orders report$/,/^Grand total/p' "$a.full" > "$a"
sed -n '/^Orders report$/,/^Grand total/p' "$b.full" > "$b"
if test ! -s "$a" || test ! -s "$b"; then
    echo "FAIL: no report in an output"
    cat "$a.full" "$b.full"
    exit 1
fi
if ! diff -u "$a" "$b"; then
    echo "FAIL: examples/orders-async's report differs from examples/orders's (diff above)"
    status=1
fi
test $status -eq 0 && echo "PASS: examples/orders-async prints examples/orders's report ($(wc -l < "$a") lines)"
exit $status
