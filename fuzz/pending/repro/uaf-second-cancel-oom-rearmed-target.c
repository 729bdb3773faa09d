/* A coroutine whose cancel was captured (its deferred waits on the fresh
 * "rearm" deferred that cancel_common() made) and handled, cancels its own
 * deferred again from its body while an allocation fails (the new rearm
 * deferred of that second cancel_common()); the core's cancel then frees
 * the first rearm deferred (runner.c cancel_now's unref), st->target still
 * points to it, and the coroutine's end (deferred__async_finish(),
 * async.c, deferred__add_both_owned(st->target, ...)) uses it after free.
 * ASan: heap-use-after-free in deferred__add_both_owned. */
#include <stdio.h>
#include <stdlib.h>

#include "deferred.h"
#include "deferred/async.h"

static int fail_next;
static void *my_malloc(size_t n)
{
    if (fail_next) {
        fail_next = 0;
        return NULL;
    }
    return malloc(n);
}
static void *my_realloc(void *p, size_t n) { return realloc(p, n); }
static void my_free(void *p) { free(p); }

struct frame {
    deferred_async_t co;
    deferred_t *m;
    deferred_value_t v;
};

static int body(void *frame)
{
    struct frame *f = frame;

    DEFERRED_ASYNC_BEGIN(f);
    DEFERRED_AWAIT_TRY(f, deferred_ref(f->m), f->v); /* the first cancel: ECANCELED, handled */
    deferred_value_release(f->v);
    fail_next = 1;
    deferred_cancel(deferred_async_self(&f->co)); /* the second cancel, out of memory */
    fail_next = 0;
    DEFERRED_ASYNC_FINALLY(f);
    DEFERRED_ASYNC_RETURN(f, deferred_value_int(1));
    DEFERRED_ASYNC_END(f);
}

int main(void)
{
    deferred_t *m, *d;
    struct frame *f;

    deferred_set_allocator(my_malloc, my_realloc, my_free);
    m = deferred_multi_new();
    f = DEFERRED_ASYNC_NEW(struct frame, body, "self-cancel");
    f->m = m;
    d = deferred_async_start(f);
    deferred_cancel(d);
    deferred_unref(d);
    deferred_unref(m);
    puts("no crash");
    return 0;
}
