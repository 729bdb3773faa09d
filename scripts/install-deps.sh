#!/bin/sh
# scripts/install-deps.sh: install what building and testing libdeferred
# needs on Debian (12 or later), and only what is missing.
#
# Checks each package with dpkg first: when all are installed it does
# nothing and returns at once.  Otherwise it runs apt-get update and
# apt-get install for the missing ones, as root or through sudo.  Runs
# without a terminal (CI): no prompt is ever asked.
set -eu

packages="build-essential autoconf automake libtool pkg-config libev-dev libuv1-dev libglib2.0-dev check valgrind libsqlite3-dev libpq-dev postgresql-15 python3-twisted"

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "install-deps: this is not a Debian-like system (no dpkg-query)." >&2
    echo "install-deps: install by hand: a C compiler, make, autoconf, automake," >&2
    echo "install-deps: libtool, pkg-config, libev, Check (>= 0.11) and valgrind." >&2
    exit 1
fi

missing=
for pkg in $packages; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    case $status in
        *" installed") ;;
        *) missing="$missing $pkg" ;;
    esac
done

if test -z "$missing"; then
    echo "install-deps: all present:$(printf ' %s' $packages)"
    exit 0
fi

if test "$(id -u)" -eq 0; then
    sudo=
elif command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
    echo "install-deps: not root: using sudo"
else
    echo "install-deps: missing:$missing" >&2
    echo "install-deps: run this script as root, or install sudo." >&2
    exit 1
fi

echo "install-deps: missing:$missing"
echo "install-deps: running apt-get update"
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
echo "install-deps: running apt-get install -y$missing"
# shellcheck disable=SC2086 # $missing is a list of package names
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    --no-install-recommends $missing </dev/null
echo "install-deps: done"
