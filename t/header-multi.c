/*
 * t/header-multi.c: <deferred/multi.h> compiles alone, included first and
 * by itself in its translation unit (part of the header compile tests,
 * built as C99 -pedantic and, through t/header-multi.cc, as C++).
 */
#include <deferred/multi.h>
#include "header-alone.h"

int deferred_test_header_multi(void)
{
    return (int)sizeof(DEFERRED_TEST_HEADER_MULTI_TYPE) > 0;
}
