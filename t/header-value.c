/*
 * t/header-value.c: <deferred/value.h> compiles alone, included first and by
 * itself in its translation unit (part of the header compile tests, built
 * as C99 -pedantic and, through t/header-value.cc, as C++).
 */
#include <deferred/value.h>
#include "header-alone.h"

int deferred_test_header_value(void)
{
    return (int)sizeof(DEFERRED_TEST_HEADER_VALUE_TYPE) > 0;
}
