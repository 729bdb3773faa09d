/*
 * t/header-ev.c: <deferred/ev.h> compiles alone, included first and by
 * itself in its translation unit (part of the header compile tests, built
 * as C99 -pedantic and, through t/header-ev.cc, as C++).  The libev
 * binding is optional: without libev the test only says so.
 */
#ifdef DEFERRED_TEST_HAVE_LIBEV
#include <deferred/ev.h>
#include "header-alone.h"

int deferred_test_header_ev(void)
{
    return (int)sizeof(DEFERRED_TEST_HEADER_EV_TYPE) > 0;
}
#else
#include "header-alone.h"

int deferred_test_header_ev(void)
{
    return 1;
}
#endif
