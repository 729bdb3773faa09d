/*
 * async-stream.c: a coroutine iterating a stream (async-for over a
 * producer stage or a multi-fire deferred, with backpressure: the stream
 * is held while the block awaits) and coroutines as process stages (a
 * consumer or a processor that awaits the next item).
 */
#include <string.h>

#include "async-private.h"
#include "core/core-private.h"

/* ---- streams ------------------------------------------------------------ */

void deferred__async_link_unref(struct deferred__async_link *l)
{
    deferred_t *self = l->self;

    if (--l->refs)
        return;
    deferred_value_release(l->item);
    deferred_value_release(l->outcome);
    deferred__free(l);
    deferred_unref(self);
}

/* An event for a coroutine waiting on this stream. */
static void link_wake(struct deferred__async_link *l)
{
    struct deferred__async *st = l->st;
    deferred_t *self;

    if (!st || !l->waiting)
        return;
    l->waiting = false;
    st->waiting = NULL;
    st->flags &= ~A_WAIT_ITER;
    /* The drive's caller holds self: the coroutine's end detaches this
     * link, whose reference may be the last. */
    self = deferred_ref(st->self);
    deferred__async_drive(st);
    deferred_unref(self);
}

static deferred_failure_t *link_start(deferred_stage_t *self, deferred_stage_t *from,
                                      deferred_value_t tag, deferred_stage_t **sub)
{
    struct deferred__async_link *l = deferred_stage_data(self);

    (void)from;
    (void)sub;
    if (l->consumer && deferred_value_is_none(tag) && l->st &&
        !(l->st->flags & A_STARTED)) {
        deferred_t *co_self = deferred_ref(l->st->self); /* as link_wake() */

        l->st->flags |= A_STARTED;
        deferred__async_drive(l->st);
        deferred_unref(co_self);
    }
    return NULL;
}

static deferred_failure_t *link_handle(deferred_stage_t *self, deferred_stage_t *from,
                                       deferred_value_t tag, deferred_value_t *item)
{
    struct deferred__async_link *l = deferred_stage_data(self);

    (void)from;
    (void)tag;
    if (!l->st)
        return NULL; /* detached: the library releases the item */
    if (DEFERRED_UNLIKELY(l->has))
        return deferred_stage_failure(self, DEFERRED_DOMAIN_LIBRARY, EBUSY,
                                      "async-for: an item arrived while the one before it "
                                      "was held (a producer emitted while paused)");
    l->item = *item;
    *item = deferred_value_none();
    l->has = true;
    l->held = true; /* AUTOPAUSE paused the producers */
    link_wake(l);
    return NULL;
}

static deferred_value_t link_finish(deferred_stage_t *self, deferred_stage_t *from,
                                    deferred_value_t tag, deferred_value_t outcome)
{
    struct deferred__async_link *l = deferred_stage_data(self);

    (void)from;
    if (!deferred_value_is_none(tag) || l->ended) {
        deferred_value_release(outcome); /* a group's end */
        return deferred_value_none();
    }
    l->ended = true;
    if (l->st)
        l->outcome = outcome;
    else
        deferred_value_release(outcome);
    if (l->consumer) {
        deferred_t *self_d = l->self;

        l->self = NULL;
        link_wake(l);
        /* What the coroutine returns is the process's result. */
        return deferred_value_deferred(self_d);
    }
    link_wake(l);
    return deferred_value_none();
}

static void link_destroy(void *data)
{
    struct deferred__async_link *l = data;

    l->stage = NULL;
    if (l->consumer && l->st && !(l->st->flags & A_STARTED)) {
        /* A consumer whose process never ran: its frame goes unstarted
         * (with the link's reference, when the link goes). */
        l->st->flags |= A_STARTED | A_DONE;
        deferred__async_iter_detach(l);
    }
    deferred__async_link_unref(l);
}

static const deferred_stage_ops_t link_ops = {
    .name = "async-for",
    .start = link_start,
    .handle = link_handle,
    .finish = link_finish,
    .destroy = link_destroy,
};

static struct deferred__async_link *link_new(struct deferred__async *st,
                                             deferred_async_iter_t *it)
{
    struct deferred__async_link *l = deferred__malloc(sizeof(*l));

    if (!l)
        return NULL;
    memset(l, 0, sizeof(*l));
    l->refs = 2; /* the stage's and the iterator's */
    l->st = st;
    l->it = it;
    l->item = deferred_value_none();
    l->outcome = deferred_value_none();
    return l;
}

/* Attach l to its coroutine's open iterators, holding the coroutine. */
static void iter_attach(struct deferred__async_link *l)
{
    l->next = l->st->iters;
    l->st->iters = l;
    l->it->link_ = l;
    l->it->done_ = 0;
    if (!l->consumer)
        l->self = deferred_ref(l->st->self);
}

/* Let go of the stream: cancelled if it still runs; the iterator's
 * reference on the link goes. */
void deferred__async_iter_detach(struct deferred__async_link *l)
{
    struct deferred__async *st = l->st;
    struct deferred__async_link **pp;
    deferred_t *self = NULL;

    if (!st)
        return;
    for (pp = &st->iters; *pp && *pp != l; pp = &(*pp)->next)
        ;
    if (*pp)
        *pp = l->next;
    if (st->waiting == l) {
        st->waiting = NULL;
        st->flags &= ~A_WAIT_ITER;
    }
    l->st = NULL;
    l->waiting = false;
    l->it->link_ = NULL;
    l->it->done_ = 1;
    deferred_value_release(l->item);
    l->item = deferred_value_none();
    l->has = false;
    if (!l->consumer) {
        self = l->self;
        l->self = NULL;
    }
    if (!l->ended && l->stage)
        deferred_stage_cancel(l->stage);
    deferred__async_link_unref(l);
    deferred_unref(self);
}

static deferred_value_t swallow(deferred_value_t v, void *arg)
{
    (void)arg;
    deferred_value_release(v);
    return deferred_value_none();
}

int deferred_async_iter_open(deferred_async_t *co, deferred_async_iter_t *it,
                             deferred_stage_t *producer)
{
    struct deferred__async *st = co ? co->state_ : NULL;
    struct deferred__async_link *l;
    deferred_stage_t *consumer;
    deferred_process_t *p;
    deferred_t *pd;
    int rc;

    if (!st || !it || !producer || it->link_) {
        deferred_stage_free(producer);
        return -EINVAL;
    }
    l = link_new(st, it);
    if (!l) {
        deferred_stage_free(producer);
        goto nomem;
    }
    consumer = deferred_stage_new(&link_ops, l, DEFERRED_STAGE_AUTOPAUSE);
    if (!consumer) {
        deferred__async_link_unref(l); /* its destroy dropped the stage's reference */
        deferred_stage_free(producer);
        goto nomem;
    }
    l->stage = consumer;
    p = deferred_process_new(0);
    rc = p ? deferred_process_add(p, producer) : (deferred_stage_free(producer), -ENOMEM);
    if (rc < 0) {
        deferred_stage_free(consumer);
        deferred__async_link_unref(l);
        deferred_process_unref(p);
        if (rc == -ENOMEM)
            goto nomem;
        it->done_ = 1;
        return rc;
    }
    if ((rc = deferred_process_add(p, consumer)) < 0) {
        deferred__async_link_unref(l);
        deferred_process_unref(p);
        goto nomem;
    }
    iter_attach(l);
    pd = deferred_process_run(p);
    deferred_process_unref(p); /* a running process keeps itself */
    if (!pd) {
        /* Its stages went with it: the stream failed before it began. */
        l->ended = true;
        l->outcome = deferred_value_failure(deferred_failure_new_at(
            NULL, 0, DEFERRED_DOMAIN_LIBRARY, ENOMEM, "async-for: out of memory"));
        return -ENOMEM;
    }
    /* The stream's outcome reaches the iterator; the process's deferred
     * has nothing more to tell. */
    if (deferred_add_both(pd, swallow, NULL) < 0)
        deferred_cancel(pd);
    deferred_unref(pd);
    return 0;

nomem:
    /* No stream: a DEFERRED_ASYNC_FOR() over it fails with ENOMEM. */
    it->link_ = NULL;
    it->done_ = -ENOMEM;
    return -ENOMEM;
}

int deferred_async_iter_open_multi(deferred_async_t *co, deferred_async_iter_t *it,
                                   deferred_t *multi)
{
    deferred_stage_t *producer;

    if (!co || !co->state_ || !it || it->link_ || !deferred_is_multi(multi))
        return -EINVAL;
    producer = deferred_stage_from_multi(multi);
    if (!producer) {
        it->done_ = -ENOMEM;
        return -ENOMEM;
    }
    return deferred_async_iter_open(co, it, producer);
}

void deferred_async_iter_close(deferred_async_iter_t *it)
{
    if (it && it->link_)
        deferred__async_iter_detach(it->link_);
}

int deferred_async_next(deferred_async_t *co, deferred_async_iter_t *it,
                        deferred_value_t *item, const char *file, int line)
{
    struct deferred__async *st = co ? co->state_ : NULL;
    struct deferred__async_link *l;

    if (!st || !it || !item)
        return -EINVAL;
    if ((st->flags & A_DROPPED) && !co->finally_) {
        deferred__async_unwind(co);
        return -1;
    }
    l = it->link_;
    if (!l) {
        if (DEFERRED_UNLIKELY(it->done_ == -ENOMEM)) {
            /* Its open failed: the stream's failure. */
            deferred_failure_t *f = deferred_failure_new_at(
                NULL, 0, DEFERRED_DOMAIN_LIBRARY, ENOMEM,
                "async-for: out of memory while opening the stream");

            it->done_ = 1;
            deferred__async_add_frame(st, f, "async-for", file, line);
            deferred_value_release(st->outcome);
            st->outcome = deferred_value_failure(f);
            deferred__async_unwind(co);
            return -1;
        }
        it->done_ = 1; /* closed, or never opened: no items */
        return 0;
    }
    if (!l->has && !l->ended && l->held && l->stage) {
        /* Ask for the next item: it may arrive before this returns. */
        l->held = false;
        deferred_stage_resume(l->stage);
    }
    if (l->has) {
        *item = value_take(&l->item);
        l->has = false;
        it->done_ = 0;
        return 0;
    }
    if (l->ended) {
        deferred_value_t v = l->outcome;

        l->outcome = deferred_value_none();
        deferred__async_iter_detach(l);
        if (deferred_value_is_failure(v)) {
            deferred__async_add_frame(st, deferred_value_get_failure(v), "async-for", file, line);
            deferred_value_release(st->outcome);
            st->outcome = v;
            deferred__async_unwind(co);
            return -1;
        }
        deferred_value_release(v);
        return 0;
    }
    /* Wait for the next item or the end. */
    l->waiting = true;
    st->waiting = l;
    st->flags |= A_WAIT_ITER;
    co->line = line;
    if (DEFERRED_UNLIKELY(st->flags & A_CANCEL) && l->stage) {
        st->flags &= ~A_CANCEL;
        deferred_stage_cancel(l->stage);
    }
    return 1;
}

deferred_stage_t *deferred_async_consumer(void *frame)
{
    struct deferred__async *st = deferred__async_unstarted(frame);
    struct deferred__async_link *l;
    deferred_stage_t *stage;

    if (!st) {
        errno = EINVAL;
        return NULL;
    }
    l = link_new(st, &st->input);
    if (!l)
        goto nomem;
    l->consumer = true;
    l->self = st->self; /* the reference deferred_async_new() made */
    st->flags |= A_CONSUMER;
    stage = deferred_stage_new(&link_ops, l, DEFERRED_STAGE_AUTOPAUSE);
    if (!stage) {
        /* Its destroy ran: the frame went with it. */
        return NULL;
    }
    l->stage = stage;
    st->stage = stage; /* valid while the body can run: the process ends
                          only once the coroutine did */
    iter_attach(l);
    return stage;

nomem:
    st->flags |= A_STARTED | A_DONE;
    deferred_unref(st->self);
    errno = ENOMEM;
    return NULL;
}

int deferred_async_emit(deferred_async_t *co, deferred_value_t item)
{
    struct deferred__async *st = co ? co->state_ : NULL;

    if (!st || !st->stage || (st->flags & A_DONE)) {
        deferred_value_release(item);
        return -EINVAL;
    }
    return deferred_stage_emit(st->stage, item);
}

deferred_async_iter_t *deferred_async_input(deferred_async_t *co)
{
    if (!co || !co->state_ || !(co->state_->flags & A_CONSUMER))
        return NULL;
    return &co->state_->input;
}
