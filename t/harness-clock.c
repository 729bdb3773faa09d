/*
 * t/harness-clock.c: the clock (deferred/clock.h) for the parametrised
 * loop tests (t/loop-harness.h).  It keeps no state: the clock is the
 * whole loop.  run is deferred_clock_run() (so virtual time jumps to each
 * timer once nothing else is runnable), run_nowait one round without
 * waiting, destroy drops the reference (the clock has nothing of its own
 * to close).
 */
#include <deferred/clock.h>

#include "loop-harness.h"

static deferred_loop_t *clock_make(void **state)
{
    *state = NULL;
    return deferred_clock_new();
}

static void clock_run(deferred_loop_t *l, void *state)
{
    (void)state;
    (void)deferred_clock_run(l);
}

static void clock_run_nowait(deferred_loop_t *l, void *state)
{
    (void)state;
    (void)deferred_clock_run_once(l, false);
}

static void clock_destroy(deferred_loop_t *l, void *state)
{
    (void)state;
    deferred_loop_unref(l);
}

const tl_harness_t tl_harness_clock = {
    "clock", clock_make, clock_run, clock_run_nowait, clock_destroy,
};
