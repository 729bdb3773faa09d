#!/bin/sh
# t/check-man.sh: the manual pages cover the API (make check).
#
# The pages are made by man/gen-man.pl into $top_builddir/man/man3 (with
# man/man3.index: NAME, PAGE, KIND, the words of its comment), from the
# headers that this build installs.  This test checks that
#  - every function exported by the shared libraries this build made
#    (nm -D --defined-only lib/.libs/libdeferred*.so, as
#    t/check-exports.sh reads them) and every DEFERRED_EXPORT function of
#    those headers (the index) has a page or a link page ".so man3/PAGE.3"
#    whose target exists, and a comment in its header;
#  - every macro and inline function the generator documented has one too;
#  - each page renders without a warning (groff -man -ww, or mandoc -Tlint
#    when groff is missing; with neither, rendering is skipped with a note);
#  - each function's rendered page shows its comment's text (compared word
#    for word, letters and digits only, so filling and fonts do not count).
# The optional libraries (ev, sqlite, pg) are checked when this build made
# them: their headers are then among the ones the pages come from.
set -eu

builddir=${top_builddir:-.}
NM=${NM:-nm}
man3=$builddir/man/man3
index=$builddir/man/man3.index

if test ! -f "$index" || test ! -d "$man3"; then
    echo "check-man: FAIL: no pages in $man3 (run make first)"
    exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
fail() {
    echo "check-man: FAIL: $*"
    status=1
}

# The names to check: the index (from the headers), and what the shared
# libraries export.
cut -f1 "$index" | sort -u > "$tmp/indexed"
: > "$tmp/exported"
for lib in "$builddir"/lib/.libs/libdeferred.so "$builddir"/lib/.libs/libdeferred-*.so; do
    test -f "$lib" || continue
    $NM -D --defined-only "$lib" | awk 'NF >= 3 && $2 ~ /^[A-Z]$/ { print $3 }' \
        | sed 's/@.*//' | grep '^deferred_' >> "$tmp/exported" || true
done
sort -u "$tmp/exported" -o "$tmp/exported"
if test ! -s "$tmp/exported"; then
    echo "check-man: note: no shared library built: checking the headers' DEFERRED_EXPORT functions only"
fi

# An exported symbol that no header of this build declares has no page.
for name in $(comm -23 "$tmp/exported" "$tmp/indexed"); do
    fail "$name is exported but no installed header declares it (DEFERRED_EXPORT), so it has no page"
done

# Each indexed name: a page, a comment, and (exported ones) the export.
tab=$(printf '\t')
while IFS=$tab read -r name page kind words; do
    f=$man3/$name.3
    if test ! -f "$f"; then
        fail "$name ($kind): no page $f"
        continue
    fi
    if test "$name" != "$page"; then
        if test "$(cat "$f")" != ".so man3/$page.3"; then
            fail "$name: $f is not the link page \".so man3/$page.3\""
        fi
    fi
    if test ! -f "$man3/$page.3" || grep -q '^\.so ' "$man3/$page.3"; then
        fail "$name: its page $man3/$page.3 is missing or itself a link"
    fi
    if test -z "$words" && grep -qx "$name" "$tmp/exported"; then
        kind=export
    fi
    if test -z "$words"; then
        case $kind in
        export) fail "$name (exported) has no comment in its header: write one above its declaration" ;;
        *) echo "check-man: note: $name ($kind) has no comment in its header" ;;
        esac
    fi
done < "$index"

# Rendering.
render=
if command -v groff >/dev/null 2>&1; then
    render=groff
elif command -v mandoc >/dev/null 2>&1; then
    render=mandoc
else
    echo "check-man: note: neither groff nor mandoc is installed: rendering not checked"
fi

pages=$(cut -f2 "$index" | sort -u)
# The overview page is not in the index when it declares no function.
test -f "$man3/deferred.3" && pages="$pages deferred"
for page in $(printf '%s\n' $pages | sort -u); do
    f=$man3/$page.3
    test -f "$f" || { fail "page $f is missing"; continue; }
    case $render in
    groff)
        groff -man -Tutf8 -ww -z "$f" > "$tmp/warn" 2>&1 || echo "groff exit status $?" >> "$tmp/warn"
        groff -man -Tutf8 -P-cbu "$f" 2>/dev/null > "$tmp/text" || true
        ;;
    mandoc)
        mandoc -Tlint -Wwarning "$f" > "$tmp/warn" 2>&1 || true
        mandoc -Tutf8 "$f" 2>/dev/null | col -b > "$tmp/text" || true
        ;;
    *) continue ;;
    esac
    if test -s "$tmp/warn"; then
        fail "$f does not render cleanly ($render):"
        sed 's/^/  /' "$tmp/warn"
    fi
    # The rendered words, one line, one space between words.
    { printf ' '; tr -cs 'A-Za-z0-9' ' ' < "$tmp/text"; printf ' \n'; } > "$tmp/words.$page"
done

if test -n "$render"; then
    shown=0
    while IFS=$tab read -r name page kind words; do
        test -n "$words" || continue
        test -f "$tmp/words.$page" || continue
        if grep -F -q -e " $words " "$tmp/words.$page"; then
            shown=$((shown + 1))
        else
            fail "$name: $page(3) does not show its comment (\"$(echo "$words" | cut -c1-60)...\")"
        fi
    done < "$index"
fi

if test $status -eq 0; then
    echo "check-man: PASS: $(wc -l < "$index") names with pages ($(wc -l < "$tmp/exported") exported symbols), ${render:-no} rendering${render:+, $shown comments shown}"
fi
exit $status
