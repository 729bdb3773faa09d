/*
 * t/harness-ev.c: the libev harness of t/loop-harness.h: a loop of its
 * own (ev_loop_new), run with ev_run() until it has no active watcher.
 */
#include <ev.h>
#include <deferred/ev.h>

#include "loop-harness.h"

#include <errno.h>

static deferred_loop_t *ev_make(void **state)
{
    struct ev_loop *ev = ev_loop_new(EVFLAG_AUTO);
    deferred_loop_t *l;
    int e;

    *state = ev;
    if (!ev) {
        errno = ENOMEM;
        return NULL;
    }
    l = deferred_ev_loop_new(ev);
    if (!l) {
        e = errno;
        ev_loop_destroy(ev);
        errno = e;
    }
    return l;
}

static void ev_run_all(deferred_loop_t *l, void *state)
{
    (void)l;
    ev_run(state, 0);
}

static void ev_run_nowait(deferred_loop_t *l, void *state)
{
    (void)l;
    ev_run(state, EVRUN_NOWAIT);
}

static void ev_destroy(deferred_loop_t *l, void *state)
{
    deferred_loop_unref(l);
    ev_loop_destroy(state);
}

const tl_harness_t tl_harness_ev = {
    "ev", ev_make, ev_run_all, ev_run_nowait, ev_destroy,
};
