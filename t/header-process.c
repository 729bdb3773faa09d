/*
 * t/header-process.c: <deferred/process.h> compiles alone, included first and
 * by itself in its translation unit (part of the header compile tests,
 * built as C99 -pedantic and, through t/header-process.cc, as C++).
 */
#include <deferred/process.h>
#include "header-alone.h"

int deferred_test_header_process(void)
{
    return (int)sizeof(DEFERRED_TEST_HEADER_PROCESS_TYPE) > 0;
}
