#!/bin/sh
# scripts/quickstart.sh: from a fresh clone to the flagship example.
#
# Installs what is missing (scripts/install-deps.sh), generates the build
# system, configures out of tree in ./build, builds the library and the
# examples, and runs the flagship example, examples/orders: an orders
# report streamed from an embedded SQLite database it creates.
set -eu

cd "$(dirname "$0")/.."
top=$(pwd)
jobs=$(nproc 2>/dev/null || echo 2)

echo "== quickstart: installing what is missing"
scripts/install-deps.sh

echo "== quickstart: autoreconf -fi"
autoreconf -fi

echo "== quickstart: configuring in $top/build"
mkdir -p build
cd build
../configure

echo "== quickstart: building"
make -j"$jobs"
make -j"$jobs" examples/orders

echo "== quickstart: running the flagship example, build/examples/orders"
./examples/orders
echo "== quickstart: done.  Next: scripts/test-all.sh runs the whole test suite."
