/*
 * examples/example-loop.h: the examples' --loop option.  An example does
 * everything through deferred/loop.h; only making, running and freeing
 * the event loop itself differs between libev (ev, the default), libuv
 * (uv), GLib (glib) and the virtual-clock loop (clock).  Header only: each
 * example includes it once.  libuv and GLib are there when the example is
 * built with EXAMPLE_HAVE_UV and EXAMPLE_HAVE_GLIB (Makefile.am defines
 * them when configure found the adapters).
 */
#ifndef EXAMPLE_LOOP_H
#define EXAMPLE_LOOP_H

#include <stdio.h>
#include <string.h>

#include <ev.h>
#include <deferred/ev.h>
#include <deferred/clock.h>
#ifdef EXAMPLE_HAVE_UV
#include <uv.h>
#include <deferred/uv.h>
#endif
#ifdef EXAMPLE_HAVE_GLIB
#include <glib.h>
#include <deferred/glib.h>
#endif

/* The kinds this build knows, for --help and its errors. */
static const char *const example_loop_kinds = "ev"
#ifdef EXAMPLE_HAVE_UV
    ", uv"
#endif
#ifdef EXAMPLE_HAVE_GLIB
    ", glib"
#endif
    ", clock";

static struct {
    const char *kind;
    struct ev_loop *ev;
#ifdef EXAMPLE_HAVE_UV
    uv_loop_t uv;
    int uv_open;
#endif
#ifdef EXAMPLE_HAVE_GLIB
    GMainContext *context;
#endif
    deferred_loop_t *loop;
} example_loop;

/* Whether kind names a loop of this build. */
static int example_loop_known(const char *kind)
{
    return strcmp(kind, "ev") == 0 || strcmp(kind, "clock") == 0
#ifdef EXAMPLE_HAVE_UV
           || strcmp(kind, "uv") == 0
#endif
#ifdef EXAMPLE_HAVE_GLIB
           || strcmp(kind, "glib") == 0
#endif
        ;
}

/* Make the loop of kind (ev: the default libev loop); NULL with a message
 * naming prog when it cannot be made. */
static deferred_loop_t *example_loop_open(const char *kind, const char *prog)
{
    example_loop.kind = kind;
    if (strcmp(kind, "ev") == 0) {
        example_loop.ev = ev_default_loop(0);
        example_loop.loop = example_loop.ev ? deferred_ev_loop_new(example_loop.ev) : NULL;
#ifdef EXAMPLE_HAVE_UV
    } else if (strcmp(kind, "uv") == 0) {
        example_loop.uv_open = uv_loop_init(&example_loop.uv) == 0;
        example_loop.loop = example_loop.uv_open ? deferred_uv_loop_new(&example_loop.uv)
                                                 : NULL;
#endif
#ifdef EXAMPLE_HAVE_GLIB
    } else if (strcmp(kind, "glib") == 0) {
        example_loop.context = g_main_context_new();
        example_loop.loop = deferred_glib_loop_new(example_loop.context);
#endif
    } else if (strcmp(kind, "clock") == 0) {
        example_loop.loop = deferred_clock_new();
    }
    if (!example_loop.loop)
        fprintf(stderr, "%s: could not make the %s loop\n", prog, kind);
    return example_loop.loop;
}

/* One iteration, waiting for something to happen; 0 when the library has
 * nothing left on the loop (nothing could ever happen again). */
static int example_loop_once(void)
{
    deferred_loop_t *l = example_loop.loop;

    if (deferred_loop_alive(l) == 0)
        return 0;
    if (example_loop.ev)
        ev_run(example_loop.ev, EVRUN_ONCE);
#ifdef EXAMPLE_HAVE_UV
    else if (example_loop.uv_open)
        uv_run(&example_loop.uv, UV_RUN_ONCE);
#endif
#ifdef EXAMPLE_HAVE_GLIB
    else if (example_loop.context)
        g_main_context_iteration(example_loop.context, TRUE);
#endif
    else
        deferred_clock_run_once(l, true);
    return 1;
}

/* Run until nothing is left, then free the loop. */
static void example_loop_close(void)
{
    while (example_loop_once())
        ;
    deferred_loop_unref(example_loop.loop);
    example_loop.loop = NULL;
    if (example_loop.ev)
        ev_loop_destroy(example_loop.ev);
#ifdef EXAMPLE_HAVE_UV
    if (example_loop.uv_open)
        deferred_uv_loop_close(&example_loop.uv);
#endif
#ifdef EXAMPLE_HAVE_GLIB
    if (example_loop.context)
        g_main_context_unref(example_loop.context);
#endif
}

#endif /* EXAMPLE_LOOP_H */
