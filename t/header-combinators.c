/*
 * t/header-combinators.c: <deferred/combinators.h> compiles alone, included first and
 * by itself in its translation unit (part of the header compile tests,
 * built as C99 -pedantic and, through t/header-combinators.cc, as C++).
 */
#include <deferred/combinators.h>
#include "header-alone.h"

int deferred_test_header_combinators(void)
{
    return (int)sizeof(DEFERRED_TEST_HEADER_COMBINATORS_TYPE) > 0;
}
