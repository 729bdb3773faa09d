/* A consumer coroutine (deferred_async_consumer()) that is dropped (the
 * deferred it awaits is freed unfired) never ends its stage: the process
 * keeps itself alive forever (it does so "until its finish has been
 * delivered"), with its stages, the coroutine's frame and the process's
 * deferred.  Expected: the process's blocks freed once every reference is
 * dropped (its deferred never fires, as a dropped coroutine's).  Checked
 * here with deferred's allocator hook: blocks still alive at the end. */
#include <stdio.h>
#include <stdlib.h>

#include "deferred.h"
#include "deferred/async.h"

struct frame {
    deferred_async_t co;
    deferred_t *in;
    deferred_value_t v;
};

static int body(void *frame)
{
    struct frame *f = frame;

    DEFERRED_ASYNC_BEGIN(f);
    DEFERRED_AWAIT(f, f->in, f->v); /* waits: f->in never fires */
    deferred_value_release(f->v);
    DEFERRED_ASYNC_FOR(f, deferred_async_input(&f->co), f->v)
        deferred_value_release(f->v);
    DEFERRED_ASYNC_END(f);
}

static long live;
static void *my_malloc(size_t n) { live++; return malloc(n); }
static void *my_realloc(void *p, size_t n) { if (!p) live++; return realloc(p, n); }
static void my_free(void *p) { if (p) live--; free(p); }

int main(void)
{
    deferred_t *x, *d;
    deferred_process_t *p;
    struct frame *f;

    deferred_set_allocator(my_malloc, my_realloc, my_free);
    x = deferred_new();
    f = DEFERRED_ASYNC_NEW(struct frame, body, "consumer");
    f->in = deferred_ref(x);
    p = deferred_process_new(0);
    deferred_process_add(p, deferred_stage_array(NULL, 0));
    deferred_process_add(p, deferred_async_consumer(f));
    d = deferred_process_run(p);
    deferred_process_unref(p);
    deferred_unref(x); /* x freed unfired: the coroutine is dropped */
    deferred_unref(d);
    printf("blocks still alive: %ld\n", live);
    return live != 0;
}
