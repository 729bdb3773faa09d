/*
 * t/header-uv.c: <deferred/uv.h> compiles alone, included first and by
 * itself in its translation unit (part of the header compile tests, built
 * as C99 -pedantic and, through t/header-uv.cc, as C++).  The libuv
 * adapter is optional: without libuv the test only says so.
 */
#ifdef DEFERRED_TEST_HAVE_UV
#include <deferred/uv.h>
#include "header-alone.h"

int deferred_test_header_uv(void)
{
    /* without <uv.h>: struct uv_loop_s is only named; deferred_loop_ops_t
     * comes through <deferred/loop.h>. */
    return (int)sizeof(DEFERRED_TEST_HEADER_UV_TYPE) > 0 &&
           (int)sizeof(deferred_loop_ops_t) > 0;
}
#else
#include "header-alone.h"

int deferred_test_header_uv(void)
{
    return 1;
}
#endif
