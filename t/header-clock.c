/*
 * t/header-clock.c: <deferred/clock.h> compiles alone, included first and
 * by itself in its translation unit (part of the header compile tests,
 * built as C99 -pedantic and, through t/header-clock.cc, as C++), and a
 * new clock starts at time 0 and moves when advanced.
 */
#include <deferred/clock.h>
#include "header-alone.h"

int deferred_test_header_clock(void)
{
    DEFERRED_TEST_HEADER_CLOCK_TYPE *l = deferred_clock_new();
    int ok;

    if (!l)
        return 0;
    ok = deferred_clock_is_clock(l) && deferred_clock_now(l) == 0.0 &&
         deferred_clock_advance(l, 1.5) == 0 && deferred_loop_now(l) == 1.5 &&
         deferred_clock_timers(l) == 0;
    deferred_loop_unref(l);
    return ok;
}
