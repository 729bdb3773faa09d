#!/bin/sh
# bench/icount.sh: instructions per operation of each benchmark workload
# and of its C floor, counted by callgrind (make bench-icount).
#
#   bench/icount.sh BENCH-BINARY [WORKLOAD...]
#
# Each workload runs under callgrind twice, with --runs 1 and --runs 2 at
# the --quick size, collection toggled on its run function (and on the
# thread function of its producer thread, for cross-thread); the
# difference is one timed run, so start-up, the untimed warm-up run and
# the building of the test data cancel out.  Divided by the operations of
# one run, that is the count per operation.  The same for the floor, and
# the ratio of the two.  Wall-clock ratios on a shared machine move by
# tens of percent; these do not move between runs of the same binary.
#
# Prints a table (tab-separated with ICOUNT_TSV=1).  Exit status 0, or 1
# when valgrind is missing or a run fails.
set -u

bin=${1:?usage: bench/icount.sh BENCH-BINARY [WORKLOAD...]}
shift
command -v valgrind >/dev/null 2>&1 || {
    echo "bench-icount: valgrind is not installed" >&2
    exit 1
}
test -x "$bin" || {
    echo "bench-icount: $bin is not an executable (make bench-build first)" >&2
    exit 1
}

# name  run-function(s)  floor-function(s)  operations per quick run
table='chain10 run_chain10 floor_chain10 20000
chain10-after run_chain10_after floor_chain10 20000
chain10-async run_chain10_async floor_chain10 20000
multifire run_multifire floor_multifire 20000
stream run_stream floor_stream 20000
gather-10k run_gather_10k floor_gather_10k 20000
gather-100k run_gather_100k floor_gather_100k 20000
merge-2 run_merge_2 floor_merge_2 20000
merge-10k run_merge_10k floor_merge_10k 20000
merge-async-2 run_merge_async_2 floor_merge_async_2 20000
merge-async-100 run_merge_async_100 floor_merge_async_100 20000
cross-thread run_cross_thread,ct_fire floor_cross_thread,ct_floor_fire 20000
sqlite-rows run_sqlite_rows,sqw_main floor_sqlite_rows 20000
pg-rows run_pg_rows floor_pg_rows 20000'

# count WORKLOAD FUNCTIONS RUNS: the instructions callgrind collected.
count() {
    toggles=
    for fn in $(echo "$2" | tr ',' ' '); do
        toggles="$toggles --toggle-collect=$fn"
    done
    # The library's per-thread block cache is off under valgrind unless
    # DEFERRED_BLOCK_CACHE is set: count what a program runs without
    # valgrind.
    # shellcheck disable=SC2086
    out=$(DEFERRED_BLOCK_CACHE=1 valgrind --tool=callgrind --callgrind-out-file=/dev/null $toggles \
        "$bin" --only "$1" --quick --no-peers --runs "$3" 2>&1) || {
        echo "bench-icount: $1 failed under callgrind:" >&2
        echo "$out" | tail -5 >&2
        return 1
    }
    echo "$out" | sed -n 's/.*Collected : *\([0-9][0-9]*\).*/\1/p' | tail -1
}

# per_op WORKLOAD FUNCTIONS OPS: instructions per operation.
per_op() {
    one=$(count "$1" "$2" 1) && two=$(count "$1" "$2" 2) || return 1
    test -n "$one" && test -n "$two" || return 1
    echo "$one $two $3" | awk '{ printf "%.0f", ($2 - $1) / $3 }'
}

# Which workloads this binary has (cross-thread, sqlite-rows are optional):
# the usage message lists them.
have=$("$bin" --help 2>&1 | sed -n 's/^Workloads: *//p' | tr ' ' '\n')

tsv=${ICOUNT_TSV:-0}
if test "$tsv" = 1; then
    printf 'workload\tinstructions/op\tfloor\tratio\n'
else
    printf '%-16s %14s %10s %8s\n' workload "instr/op" floor ratio
fi
status=0
while read -r name run floor ops; do
    if test $# -gt 0; then
        want=no
        for w in "$@"; do test "$w" = "$name" && want=yes; done
        test $want = yes || continue
    fi
    if test -n "$have" && ! echo "$have" | grep -qx "$name"; then
        continue
    fi
    r=$(per_op "$name" "$run" "$ops") || { status=1; echo "bench-icount: $name: no count" >&2; continue; }
    f=$(per_op "$name" "$floor" "$ops") || { status=1; echo "bench-icount: $name floor: no count" >&2; continue; }
    ratio=$(echo "$r $f" | awk '{ if ($2 > 0) printf "%.2f", $1 / $2; else print "-" }')
    if test "$tsv" = 1; then
        printf '%s\t%s\t%s\t%s\n' "$name" "$r" "$f" "$ratio"
    else
        printf '%-16s %14s %10s %7sx\n' "$name" "$r" "$f" "$ratio"
    fi
done <<EOF
$table
EOF
exit $status
