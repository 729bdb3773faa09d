#!/bin/sh
# autogen.sh: make configure and Makefile.in from a git checkout.
set -eu
cd "$(dirname "$0")"
autoreconf -fi
echo "Now run ./configure (or mkdir build && cd build && ../configure) and make."
