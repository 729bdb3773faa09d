/* Coroutine X iterates the multi-fire deferred M, breaks after its first
 * row and cancels its own deferred (cancel_common() makes the rearm
 * deferred R: st->target = R), then ends.  Its end
 * (deferred__async_finish()) sets A_DONE, then closes its iterator, which
 * cancels M; M's end resumes coroutine Y (which awaits M), and Y cancels
 * X's deferred: X is done, so the core cancels R, freeing it (runner.c
 * cancel_now()'s deferred_unref()).  Back in X's finish, st->target is
 * still R: deferred__add_both_owned(st->target, ...) (async.c:130) reads
 * it after free.  ASan: heap-use-after-free in deferred__add_both_owned. */
#include <stdio.h>

#include "deferred.h"
#include "deferred/async.h"

static deferred_t *x_deferred;

struct xframe {
    deferred_async_t co;
    deferred_t *m;
    deferred_async_iter_t it;
    deferred_value_t v;
};

static int x_body(void *frame)
{
    struct xframe *f = frame;

    DEFERRED_ASYNC_BEGIN(f);
    deferred_async_iter_open_multi(&f->co, &f->it, f->m);
    DEFERRED_ASYNC_FOR(f, &f->it, f->v) {
        deferred_value_release(f->v);
        break;
    }
    deferred_cancel(deferred_async_self(&f->co));
    DEFERRED_ASYNC_END(f);
}

struct yframe {
    deferred_async_t co;
    deferred_t *m;
    deferred_value_t v;
};

static int y_body(void *frame)
{
    struct yframe *f = frame;

    DEFERRED_ASYNC_BEGIN(f);
    DEFERRED_AWAIT_TRY(f, deferred_ref(f->m), f->v);
    deferred_value_release(f->v);
    deferred_cancel(x_deferred);
    DEFERRED_ASYNC_END(f);
}

int main(void)
{
    deferred_t *m = deferred_multi_new(), *y;
    struct xframe *xf = DEFERRED_ASYNC_NEW(struct xframe, x_body, "X");
    struct yframe *yf = DEFERRED_ASYNC_NEW(struct yframe, y_body, "Y");

    xf->m = m;
    x_deferred = deferred_async_start(xf);
    yf->m = m;
    y = deferred_async_start(yf);
    deferred_multi_emit(m, deferred_value_int(1)); /* X breaks, cancels itself, ends */
    deferred_unref(x_deferred);
    deferred_unref(y);
    deferred_unref(m);
    puts("no crash");
    return 0;
}
