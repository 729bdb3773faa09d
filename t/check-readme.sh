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

# The dump in "When it hangs" is what examples/hang prints, the source
# directory taken off its paths; the line numbers in lib/ may drift (the
# library's own sites), the example's may not.
hang=${top_builddir:-.}/examples/hang
if test ! -x "$hang"; then
    echo "check-readme: FAIL: $hang is not built"
    exit 1
fi
awk '
    /^<!-- dump: examples\/hang -->$/ { marker = 1; next }
    marker && !inblock && /^```text$/ { inblock = 1; next }
    inblock && /^```$/ { exit }
    inblock { print }
' "$readme" | sed -E 's|(lib/[^ :]*):[0-9]+|\1:N|g' > "$block"
if test ! -s "$block"; then
    echo "check-readme: FAIL: no dump block in $readme"
    exit 1
fi
dump=$(mktemp)
trap 'rm -f "$block" "$dump"' EXIT
srcdir_re=$(printf '%s/' "$srcdir" | sed 's/[].[*^$\\|]/\\&/g')
"$hang" | sed -e "s|$srcdir_re||g" -E -e 's|(lib/[^ :]*):[0-9]+|\1:N|g' > "$dump"
if ! diff -u "$dump" "$block"; then
    echo "check-readme: FAIL: the dump in README is not what examples/hang prints (diff above)"
    exit 1
fi
echo "check-readme: PASS: the README dump is what examples/hang prints"
