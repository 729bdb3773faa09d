/*
 * t/header-dump.c: <deferred/dump.h> compiles alone, included first and by
 * itself in its translation unit (part of the header compile tests, built
 * as C99 -pedantic and, through t/header-dump.cc, as C++), and a dump of
 * the (empty) registry gives its summary line.
 */
#include <deferred/dump.h>
#include "header-alone.h"

static int header_sink(const char *text, size_t len, void *arg)
{
    (void)text;
    *(size_t *)arg += len;
    return 0;
}

int deferred_test_header_dump(void)
{
    DEFERRED_TEST_HEADER_DUMP_TYPE h = { 0, 0, 0, 0, 0 };
    size_t bytes = 0;

    deferred_dump_holder_remove(&h);
    return deferred_dump_to(DEFERRED_DUMP_TEXT, header_sink, &bytes, 0) == 0 && bytes > 0;
}
