/*
 * t/harness-glib.c: the GLib loop of the parametrised loop tests
 * (t/loop-harness.h): a GMainContext of its own (never the global default
 * one, so that tests do not see each other's sources) under
 * deferred_glib_loop_new().
 *
 * A GLib loop never returns by itself, so run() iterates, blocking, while
 * the library has something on the loop: deferred_loop_alive(l) > 0.
 * NOT DONE until deferred_loop_alive() is on main: without
 * TL_HAVE_LOOP_ALIVE, run() iterates while tl_glib_outstanding (a count
 * that the test using this harness keeps of the callbacks it still waits
 * for) is above 0.
 */
#include <glib.h>
#include <deferred/glib.h>

#include "loop-harness.h"

#ifndef TL_HAVE_LOOP_ALIVE
int tl_glib_outstanding;
#endif

static deferred_loop_t *glib_make(void **state)
{
    GMainContext *ctx = g_main_context_new();
    deferred_loop_t *l = deferred_glib_loop_new(ctx);

    if (!l) {
        g_main_context_unref(ctx);
        *state = NULL;
        return NULL;
    }
    *state = ctx;
    return l;
}

static void glib_run(deferred_loop_t *l, void *state)
{
    GMainContext *ctx = state;

#ifdef TL_HAVE_LOOP_ALIVE
    while (deferred_loop_alive(l) > 0)
        g_main_context_iteration(ctx, TRUE);
#else
    (void)l;
    while (tl_glib_outstanding > 0)
        g_main_context_iteration(ctx, TRUE);
#endif
}

static void glib_run_nowait(deferred_loop_t *l, void *state)
{
    (void)l;
    g_main_context_iteration((GMainContext *)state, FALSE);
}

/* The loop's release drops its reference on the context and destroys its
 * source; ours goes last.  Nothing is left to close first: freed handles
 * are destroyed at once. */
static void glib_destroy(deferred_loop_t *l, void *state)
{
    deferred_loop_unref(l);
    if (state)
        g_main_context_unref((GMainContext *)state);
}

const tl_harness_t tl_harness_glib = {
    "glib", glib_make, glib_run, glib_run_nowait, glib_destroy,
};
