/*
 * t/header-failure.c: <deferred/failure.h> compiles alone, included first and by
 * itself in its translation unit (part of the header compile tests, built
 * as C99 -pedantic and, through t/header-failure.cc, as C++).
 */
#include <deferred/failure.h>
#include "header-alone.h"

int deferred_test_header_failure(void)
{
    return (int)sizeof(DEFERRED_TEST_HEADER_FAILURE_TYPE) > 0;
}
