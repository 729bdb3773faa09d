/*
 * t/header-loop.c: <deferred/loop.h> compiles alone, included first and by
 * itself in its translation unit (part of the header compile tests, built
 * as C99 -pedantic and, through t/header-loop.cc, as C++), and an adapter
 * table can be filled with designated members of its own type.
 */
#include <deferred/loop.h>
#include "header-alone.h"

int deferred_test_header_loop(void)
{
    DEFERRED_TEST_HEADER_LOOP_TYPE ops = { DEFERRED_LOOP_OPS_VERSION, "none", 0, 0, 0, 0,
                                           0, 0, 0, 0, 0, 0, 0, 0, 0, 0 };

    /* An incomplete table is refused. */
    return deferred_loop_new(&ops, 0) == 0 && deferred_loop_alive(0) == 0;
}
