/*
 * t/harness-glib.c: the GLib harness of t/loop-harness.h: a GMainContext
 * of its own (never the global default one, so that tests do not see
 * each other's sources) under deferred_glib_loop_new().  A GLib loop
 * never returns by itself, so run() iterates, blocking, while the library
 * has something on the loop (deferred_loop_alive()).
 */
#include <glib.h>
#include <deferred/glib.h>

#include "loop-harness.h"

#include <errno.h>

static deferred_loop_t *glib_make(void **state)
{
    GMainContext *ctx = g_main_context_new();
    deferred_loop_t *l = deferred_glib_loop_new(ctx);
    int e;

    *state = ctx;
    if (!l) {
        e = errno;
        g_main_context_unref(ctx);
        *state = NULL;
        errno = e;
    }
    return l;
}

static void glib_run(deferred_loop_t *l, void *state)
{
    while (deferred_loop_alive(l) > 0)
        g_main_context_iteration((GMainContext *)state, TRUE);
}

static void glib_run_nowait(deferred_loop_t *l, void *state)
{
    (void)l;
    g_main_context_iteration((GMainContext *)state, FALSE);
}

/* The loop's release drops its reference on the context and destroys its
 * source; ours goes last.  Nothing is left to close first: a freed
 * handle's source is destroyed at once. */
static void glib_destroy(deferred_loop_t *l, void *state)
{
    deferred_loop_unref(l);
    if (state)
        g_main_context_unref((GMainContext *)state);
}

const tl_harness_t tl_harness_glib = {
    "glib", glib_make, glib_run, glib_run_nowait, glib_destroy,
};
