/*
 * t/header-row.c: <deferred/row.h> compiles alone, included first and by
 * itself in its translation unit (part of the header compile tests, built
 * as C99 -pedantic and, through t/header-row.cc, as C++).
 */
#include <deferred/row.h>
#include "header-alone.h"

int deferred_test_header_row(void)
{
    DEFERRED_TEST_HEADER_ROW_TYPE p = deferred_param_int(7);

    return p.type == DEFERRED_ROW_INTEGER && p.u.i == 7 &&
           deferred_param_null().type == DEFERRED_ROW_NULL;
}
