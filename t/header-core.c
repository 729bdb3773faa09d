/*
 * t/header-core.c: <deferred/core.h> compiles alone, included first and by
 * itself in its translation unit (part of the header compile tests, built
 * as C99 -pedantic and, through t/header-core.cc, as C++).
 */
#include <deferred/core.h>
#include "header-alone.h"

int deferred_test_header_core(void)
{
    return (int)sizeof(DEFERRED_TEST_HEADER_CORE_TYPE) > 0;
}
