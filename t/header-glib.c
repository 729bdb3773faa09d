/*
 * t/header-glib.c: <deferred/glib.h> compiles alone, included first and by
 * itself in its translation unit (part of the header compile tests, built
 * as C99 -pedantic and, through t/header-glib.cc, as C++).  The header
 * does not include <glib.h>, so this compiles with or without GLib; the
 * function's prototype is used in a sizeof only (the program does not
 * link libdeferred-glib).
 */
#include <deferred/glib.h>
#include "header-alone.h"

int deferred_test_header_glib(void)
{
    return (int)sizeof(DEFERRED_TEST_HEADER_GLIB_TYPE) > 0 &&
           sizeof(deferred_glib_loop_new((struct _GMainContext *)0)) ==
               sizeof(deferred_loop_t *);
}
