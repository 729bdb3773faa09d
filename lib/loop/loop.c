/*
 * loop.c: the loop object (deferred/loop.h): an adapter's table and state
 * with a reference count, and the thin layer through which the rest of
 * the library drives the adapter's handles (loop-private.h).
 */
#include <string.h>

#include "loop-private.h"

deferred_loop_t *deferred_loop_new(const deferred_loop_ops_t *ops, void *impl)
{
    deferred_loop_t *l;

    if (!ops || ops->version != DEFERRED_LOOP_OPS_VERSION || !ops->now ||
        !ops->timer_new || !ops->timer_start || !ops->timer_stop || !ops->timer_free ||
        !ops->io_new || !ops->io_set || !ops->io_free || !ops->wakeup_new ||
        !ops->wakeup_send || !ops->wakeup_hold || !ops->wakeup_free) {
        errno = EINVAL;
        return NULL;
    }
    l = deferred_malloc(sizeof *l);
    if (!l) {
        errno = ENOMEM;
        return NULL;
    }
    memset(l, 0, sizeof *l);
    l->ops = ops;
    l->impl = impl;
    l->refs = 1;
    return l;
}

deferred_loop_t *deferred_loop_ref(deferred_loop_t *loop)
{
    if (loop)
        loop->refs++;
    return loop;
}

void deferred_loop_unref(deferred_loop_t *loop)
{
    if (!loop || --loop->refs > 0)
        return;
    if (loop->ops->release)
        loop->ops->release(loop->impl);
    deferred_free(loop);
}

const char *deferred_loop_name(const deferred_loop_t *loop)
{
    return loop ? loop->ops->name : NULL;
}

void *deferred_loop_impl(const deferred_loop_t *loop)
{
    return loop ? loop->impl : NULL;
}

double deferred_loop_now(const deferred_loop_t *loop)
{
    return loop ? loop->ops->now(loop->impl) : 0.0;
}
