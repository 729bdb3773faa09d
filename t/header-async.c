/*
 * t/header-async.c: <deferred/async.h> compiles alone, included first and
 * by itself in its translation unit (part of the header compile tests,
 * built as C99 -pedantic and, through t/header-async.cc, as C++11), and so
 * do its macros: a coroutine with every one of them is written here, and
 * deferred_test_header_async() runs it.
 */
#include <deferred/async.h>
#include "header-alone.h"

struct header_frame {
    deferred_async_t co;
    deferred_async_iter_t it;
    deferred_t *in;
    intptr_t sum;
    deferred_value_t v;
    deferred_value_t item;
};

static int header_body(void *frame)
{
    struct header_frame *f = (struct header_frame *)frame;

    DEFERRED_ASYNC_BEGIN(f);
    DEFERRED_AWAIT(f, f->in, f->v);
    f->sum = deferred_value_get_int(f->v);
    DEFERRED_AWAIT_TRY(f, deferred_fail(NULL), f->v);
    if (deferred_value_is_failure(f->v))
        f->sum += 1;
    deferred_value_release(f->v);
    deferred_async_iter_open_multi(&f->co, &f->it, NULL);
    DEFERRED_ASYNC_FOR(f, &f->it, f->item) {
        deferred_value_release(f->item);
    }
    if (f->sum < 0)
        DEFERRED_ASYNC_FAIL(f, NULL);
    DEFERRED_ASYNC_RETURN(f, deferred_value_int(f->sum));
    DEFERRED_ASYNC_FINALLY(f);
    f->sum = -f->sum;
    DEFERRED_ASYNC_END(f);
}

int deferred_test_header_async(void)
{
    struct header_frame *f = DEFERRED_ASYNC_NEW(struct header_frame, header_body, "header");
    deferred_t *d;
    int ok;

    if (!f)
        return 0;
    f->in = deferred_succeed(deferred_value_int(41));
    d = deferred_async_start(f);
    ok = (int)sizeof(DEFERRED_TEST_HEADER_ASYNC_TYPE) > 0 && d &&
         deferred_value_get_int(deferred_result(d)) == 42;
    deferred_unref(d);
    return ok;
}
