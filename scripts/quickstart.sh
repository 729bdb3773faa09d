#!/bin/sh
# scripts/quickstart.sh: from a fresh clone to the flagship example.
#
# Installs what is missing (scripts/install-deps.sh), generates the build
# system, configures out of tree in ./build, builds the library and the
# examples (examples/orders, and examples/orders-pg when libpq is found),
# and runs the flagship example, examples/orders: an orders report
# streamed from an embedded SQLite database it creates, then a summary of
# what streamed (rows, queries, queries in flight, pauses, time).
# JOBS=N sets make's parallelism (default: the number of processors).
set -eu

cd "$(dirname "$0")/.."
top=$(pwd)
jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}

echo "== quickstart: installing what is missing"
scripts/install-deps.sh

echo "== quickstart: autoreconf -fi"
autoreconf -fi

echo "== quickstart: configuring in $top/build"
mkdir -p build
cd build
../configure

echo "== quickstart: building (make -j$jobs)"
make -j"$jobs"

echo "== quickstart: running the flagship example, build/examples/orders"
./examples/orders
echo "== quickstart: done.  Next:"
echo "   build/examples/orders --orders 100000          the report at scale (progress on stderr)"
echo "   build/examples/orders --orders 100000 --quiet  only the totals and the summary"
if test -x ./examples/orders-pg; then
    echo "   eval \"\$(t/pg-harness.sh start)\"; build/examples/orders-pg \"\$conninfo\"; t/pg-harness.sh stop \"\$dir\""
    echo "                                                  the same on a throwaway PostgreSQL server"
fi
echo "   scripts/test-all.sh                             the whole test suite"
