#!/bin/sh
# t/twisted-diff.sh: the differential test against Twisted itself.  Runs
# t/twisted-diff.py, which gives the same random programs to
# fuzz/regress-chain (the library, traced) and to Twisted's Deferred and
# compares every call and result.  TWISTED_DIFF_PROGRAMS (default 1000)
# and TWISTED_DIFF_SEED (default 1) choose the programs.  Skips (exit 77)
# when no python3 has Twisted (Debian: python3-twisted, which
# scripts/install-deps.sh installs).
set -eu

builddir=${top_builddir:-.}
py=
for p in /usr/bin/python3 python3; do
    if "$p" -c 'import twisted.internet.defer' >/dev/null 2>&1; then
        py=$p
        break
    fi
done
if test -z "$py"; then
    echo "twisted-diff: SKIP: no python3 with Twisted (python3-twisted)"
    exit 77
fi
exec "$py" "${srcdir:-.}/t/twisted-diff.py" "$builddir/fuzz/regress-chain" \
    "${TWISTED_DIFF_PROGRAMS:-1000}" "${TWISTED_DIFF_SEED:-1}"
