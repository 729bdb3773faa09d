#!/bin/sh
# examples/every-loop.sh: the examples that take --loop, on every loop this
# build has (examples/orders --help names them: ev, and uv, glib, clock).
# examples/pipe-lines must sum its pipe's lines right, and
# examples/orders-async must print examples/orders's report line for line,
# on each; examples/orders-scale.sh runs the flagship itself on each.
set -u

top_builddir=${top_builddir:-.}
ex=$top_builddir/examples
ref=$(mktemp)
out=$(mktemp)
trap 'rm -f "$ref" "$out"' EXIT
status=0

loops=$("$ex/orders" --help | sed -n 's/.*--loop L .*run on: \(.*\) (ev)$/\1/p' | tr -d ',')
test -n "$loops" || { echo "FAIL: orders --help names no loop"; exit 1; }
"$ex/orders" | sed -n '/^Orders report$/,/^Grand total/p' > "$ref"
test -s "$ref" || { echo "FAIL: no report from examples/orders"; exit 1; }

for loop in $loops; do
    if said=$("$ex/pipe-lines" --loop "$loop" 3000 2>&1); then
        echo "PASS: pipe-lines --loop $loop: $said"
    else
        echo "FAIL: pipe-lines --loop $loop: $said"
        status=1
    fi
    if "$ex/orders-async" --loop "$loop" > "$out.full" 2>&1 &&
        sed -n '/^Orders report$/,/^Grand total/p' "$out.full" > "$out" &&
        diff -u "$ref" "$out"; then
        echo "PASS: orders-async --loop $loop prints examples/orders's report"
    else
        cat "$out.full"
        echo "FAIL: orders-async --loop $loop"
        status=1
    fi
    rm -f "$out.full"
done
exit $status
