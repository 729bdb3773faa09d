/*
 * t/header-common.c: <deferred/common.h> compiles alone, included first and by
 * itself in its translation unit (part of the header compile tests, built
 * as C99 -pedantic and, through t/header-common.cc, as C++).
 */
#include <deferred/common.h>
#include "header-alone.h"

int deferred_test_header_common(void)
{
    return (int)sizeof(DEFERRED_TEST_HEADER_COMMON_TYPE) > 0;
}
