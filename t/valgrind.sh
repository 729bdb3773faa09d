#!/bin/sh
# t/valgrind.sh PROGRAM...: run each test program or example under valgrind
# ("make check-valgrind").  Check runs without fork (CK_FORK=no) so that
# valgrind sees every test in one process.  Any memory error, or any
# definite, indirect or possible leak, fails the run; so does a failing
# test.  Each program's full output goes to PROGRAM.valgrind.log; its Check
# summary line is printed here.
set -eu

VALGRIND=${VALGRIND:-valgrind}
if ! command -v "$VALGRIND" >/dev/null 2>&1; then
    echo "check-valgrind: valgrind not found (Debian: apt-get install valgrind)" >&2
    exit 1
fi
if test $# -eq 0; then
    echo "usage: $0 PROGRAM..." >&2
    exit 2
fi

CK_FORK=no
export CK_FORK
# Tests that bound a delay loosen it under valgrind (one thread at a time).
TU_UNDER_VALGRIND=1
export TU_UNDER_VALGRIND

failed=0
passed=0
for prog in "$@"; do
    log="$prog.valgrind.log"
    if test ! -x "$prog"; then
        echo "FAIL: $prog: not built"
        failed=$((failed + 1))
        continue
    fi
    case $prog in
        /*) run=$prog ;;
        *) run=./$prog ;;
    esac
    status=0
    start=$(date +%s)
    echo "check-valgrind: $prog ... (started $(date +%H:%M:%S))"
    "$VALGRIND" --quiet --error-exitcode=1 --leak-check=full \
        --show-leak-kinds=definite,indirect,possible \
        --errors-for-leak-kinds=definite,indirect,possible \
        "$run" > "$log" 2>&1 || status=$?
    summary=$(grep -E '^[0-9]+%: Checks: ' "$log" || true)
    if test -z "$summary"; then
        summary="(exit status $status)"
    fi
    summary="$summary [$(( $(date +%s) - start )) s]"
    if test "$status" -eq 0; then
        echo "PASS: valgrind $prog: $summary"
        passed=$((passed + 1))
    else
        echo "FAIL: valgrind $prog: $summary"
        echo "----- $log -----"
        cat "$log"
        echo "----- end of $log -----"
        failed=$((failed + 1))
    fi
done
echo "check-valgrind: $passed passed, $failed failed"
test "$failed" -eq 0
