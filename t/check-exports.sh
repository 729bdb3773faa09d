#!/bin/sh
# t/check-exports.sh: only deferred_* symbols may leave the shared library
# (Jansson's check-exports).  Every defined global symbol that nm -D finds
# in lib/.libs/libdeferred.so, and in each optional library built beside
# it, must start with "deferred_" (and internal deferred__* names must not
# be among them).  Skips (exit 77)
# when no shared library was built (--disable-shared).
set -eu

builddir=${top_builddir:-.}
NM=${NM:-nm}

if test ! -f "$builddir/lib/.libs/libdeferred.so"; then
    echo "check-exports: SKIP: no shared library in $builddir/lib/.libs"
    exit 77
fi

symbols=$(mktemp)
trap 'rm -f "$symbols"' EXIT
status=0

# Every shared library of the project: the core and the optional parts
# (libdeferred-ev, -sqlite, -pg) that this build made.
for lib in "$builddir"/lib/.libs/libdeferred.so "$builddir"/lib/.libs/libdeferred-*.so; do
    test -f "$lib" || continue
    # Defined global symbols only: "nm -D --defined-only" prints
    # "ADDRESS TYPE NAME"; lowercase types are local.
    $NM -D --defined-only "$lib" | awk 'NF >= 3 && $2 ~ /^[A-Z]$/ { print $3 }' \
        | sed 's/@.*//' | sort -u > "$symbols"
    total=$(wc -l < "$symbols")
    if test "$total" -eq 0; then
        echo "check-exports: FAIL: $lib exports no symbol at all"
        status=1
        continue
    fi
    # Symbols that the toolchain itself defines in every shared object.
    # Internal names (deferred__*) must not leave either.
    bad=$( (grep -v -E '^(deferred_|_init$|_fini$|_edata$|_end$|__bss_start$)' "$symbols";
            grep -E '^deferred__' "$symbols") || true)
    exported=$(grep -c '^deferred_' "$symbols" || true)
    if test -n "$bad"; then
        echo "check-exports: FAIL: symbols not starting with deferred_ leave $lib:"
        echo "$bad" | sed 's/^/  /'
        echo "(mark internal functions static, or name them deferred__* without DEFERRED_EXPORT)"
        status=1
        continue
    fi
    echo "check-exports: PASS: ${lib##*/}: $exported exported symbols, all deferred_*"
done
exit $status
