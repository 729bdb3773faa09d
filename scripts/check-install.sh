#!/bin/sh
# scripts/check-install.sh BUILDDIR: install the build in BUILDDIR into a
# scratch directory (make install DESTDIR=...), then build and run small
# programs outside the tree with nothing but the installed pkg-config
# files: one per library (deferred, deferred-ev, and deferred-uv,
# deferred-sqlite, deferred-pg and deferred-glib when they were built).
# Each program also calls its dependency directly (ev_run, uv_loop_init,
# sqlite3_open, PQlibVersion, g_main_context_iteration), so a library
# missing from a .pc file's Libs or Requires fails the link.
set -eu

build=${1:?usage: $0 BUILDDIR}
build=$(cd "$build" && pwd)
CC=${CC:-cc}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

make -C "$build" install DESTDIR="$scratch/root" >"$scratch/install.log" 2>&1 || {
    cat "$scratch/install.log"
    echo "check-install: make install failed" >&2
    exit 1
}
prefix=$(sed -n 's/^prefix *= *//p' "$build/Makefile" | head -n 1)
libdir=$(sed -n 's/^libdir *= *//p' "$build/Makefile" | head -n 1)
libdir=$(echo "$libdir" | sed "s|\${exec_prefix}|$prefix|; s|\$(exec_prefix)|$prefix|")
pcdir="$scratch/root$libdir/pkgconfig"
# The installed .pc files name the configured prefix: point them at the
# scratch copy (their prefix= line only), and use nothing else of them.
for pc in "$pcdir"/*.pc; do
    sed -i "s|^prefix=.*|prefix=$scratch/root$prefix|" "$pc"
done
PKG_CONFIG_PATH=$pcdir
export PKG_CONFIG_PATH

status=0
# try NAME MODULE: compile $scratch/NAME.c with `pkg-config MODULE` alone,
# run it against the installed libraries.
try() {
    name=$1 module=$2
    if ! test -f "$pcdir/$module.pc"; then
        echo "check-install: $module: not built, skipped"
        return 0
    fi
    # shellcheck disable=SC2046 # pkg-config prints a list of flags
    if ! $CC -o "$scratch/$name" "$scratch/$name.c" \
        $(pkg-config --cflags "$module") $(pkg-config --libs "$module") \
        >"$scratch/$name.log" 2>&1; then
        cat "$scratch/$name.log"
        echo "FAIL: $module: an outside program does not build with pkg-config alone"
        status=1
        return 0
    fi
    if LD_LIBRARY_PATH="$scratch/root$libdir" "$scratch/$name"; then
        echo "PASS: $module: an outside program builds and runs with pkg-config alone"
    else
        echo "FAIL: $module: the outside program failed"
        status=1
    fi
}

cat >"$scratch/core.c" <<'C'
#include <deferred.h>
#include <stdio.h>
static deferred_value_t add_one(deferred_value_t v, void *arg)
{
    (void)arg;
    return deferred_value_int(deferred_value_get_int(v) + 1);
}
int main(void)
{
    deferred_t *d = deferred_new();
    int ok;
    deferred_add_callback(d, add_one, NULL);
    deferred_callback(d, deferred_value_int(41));
    ok = deferred_value_get_int(deferred_result(d)) == 42;
    deferred_unref(d);
    printf("libdeferred %s\n", deferred_version());
    return ok ? 0 : 1;
}
C
cat >"$scratch/ev.c" <<'C'
#include <deferred.h>
#include <deferred/ev.h>
#include <ev.h>
int main(void)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    deferred_t *d = deferred_ev_later(loop, 0.001);
    int ok;
    ev_run(loop, 0);
    ok = deferred_has_fired(d);
    deferred_unref(d);
    ev_loop_destroy(loop);
    return ok ? 0 : 1;
}
C
cat >"$scratch/sqlite.c" <<'C'
#include <deferred.h>
#include <deferred/sqlite.h>
#include <sqlite3.h>
int main(void)
{
    sqlite3 *db;
    int ok = sqlite3_open(":memory:", &db) == SQLITE_OK;
    ok = ok && deferred_sqlite_set_batch(NULL, 1) < 0;
    sqlite3_close(db);
    return ok ? 0 : 1;
}
C
cat >"$scratch/uv.c" <<'C'
#include <deferred.h>
#include <deferred/uv.h>
#include <uv.h>
int main(void)
{
    uv_loop_t loop;
    deferred_loop_t *l;
    int ok = uv_loop_init(&loop) == 0 && (l = deferred_uv_loop_new(&loop)) != NULL;
    ok = ok && deferred_loop_now(l) >= 0.0;
    deferred_loop_unref(l);
    return ok && deferred_uv_loop_close(&loop) == 0 ? 0 : 1;
}
C
cat >"$scratch/pg.c" <<'C'
#include <deferred.h>
#include <deferred/pg.h>
#include <libpq-fe.h>
int main(void)
{
    return PQlibVersion() > 0 && !deferred_value_get_pg(deferred_value_none()) ? 0 : 1;
}
C
cat >"$scratch/glib.c" <<'C'
#include <deferred.h>
#include <deferred/glib.h>
#include <glib.h>
#include <string.h>
int main(void)
{
    GMainContext *context = g_main_context_new();
    deferred_loop_t *loop = deferred_glib_loop_new(context);
    int ok = loop && strcmp(deferred_loop_name(loop), "glib") == 0 &&
             deferred_loop_now(loop) > 0;
    deferred_loop_unref(loop);
    g_main_context_iteration(context, FALSE);
    g_main_context_unref(context);
    return ok ? 0 : 1;
}
C

try core deferred
try ev deferred-ev
try uv deferred-uv
try sqlite deferred-sqlite
try pg deferred-pg
try glib deferred-glib
exit $status
