#!/bin/sh
# t/check-readme.sh: the API tour in README is examples/tour.c, which
# "make check" builds and runs.  The code block after the line
# "<!-- tour: examples/tour.c -->" must be that file, byte for byte, so the
# README never shows code that does not compile.
set -eu

srcdir=${srcdir:-.}
readme="$srcdir/README"
tour="$srcdir/examples/tour.c"

block=$(mktemp)
trap 'rm -f "$block"' EXIT

awk '
    /^<!-- tour: examples\/tour.c -->$/ { marker = 1; next }
    marker && !inblock && /^```c$/ { inblock = 1; next }
    inblock && /^```$/ { exit }
    inblock { print }
' "$readme" > "$block"

if test ! -s "$block"; then
    echo "check-readme: FAIL: no tour code block in $readme"
    exit 1
fi
if ! diff -u "$tour" "$block"; then
    echo "check-readme: FAIL: the tour in README differs from examples/tour.c (diff above)"
    exit 1
fi
echo "check-readme: PASS: the README tour is examples/tour.c ($(wc -l < "$tour") lines)"
