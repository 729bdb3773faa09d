/*
 * process.c: deferred_process, the engine that moves items from producers
 * through processors to a consumer.
 *
 * Events are plain function calls down the stages: a producer's emit calls
 * the next stage's handle, which may emit to the one after it, and so on,
 * so one item costs one indirect call per stage and no allocation.  Flow
 * control, cancel and failure go back up the same way.
 *
 * The design decision to know: everything that ends the stream is settled
 * only when the outermost stage call returns.  The process counts how deep
 * its stage calls are nested (depth); a cancel or a failure only records
 * what happened, the calls on the stack unwind (each delivery adding its
 * context frame to a failure as it passes), and settle() then cancels the
 * producers and delivers finish downstream, exactly once.  So no stage is
 * ever told "finish" while it is still inside its own handle, and nothing
 * is delivered after a cancel.  The same discipline keeps producers from
 * nesting: a resume that arrives while the producer is inside its resume
 * operation only lets its loop go on.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/deferred-private.h"
#include "process-private.h"


static void settle(deferred_process_t *p);

/* A failure the process makes itself (library domain), recorded at the
 * user's deferred_process_run() call. */
static deferred_failure_t *process_failure(const deferred_process_t *p, int code,
                                           const char *fmt, ...) DEFERRED_PRINTF(3, 4);
static deferred_failure_t *process_failure(const deferred_process_t *p, int code,
                                           const char *fmt, ...)
{
    deferred_failure_t *f;
    va_list ap;

    va_start(ap, fmt);
    f = deferred_failure_newv_at(p ? p->file : NULL, p ? p->line : 0,
                                 DEFERRED_DOMAIN_LIBRARY, code, fmt, ap);
    va_end(ap);
    return f;
}

deferred_failure_t *deferred_stage_failure(const deferred_stage_t *st, deferred_domain_t domain,
                                           int code, const char *fmt, ...)
{
    const deferred_process_t *p = st ? st->p : NULL;
    deferred_failure_t *f;
    va_list ap;

    va_start(ap, fmt);
    f = deferred_failure_newv_at(p ? p->file : NULL, p ? p->line : 0, domain, code, fmt, ap);
    va_end(ap);
    return f;
}

deferred_t *(deferred_process_run)(deferred_process_t *p)
{
    return deferred_process_run_at(NULL, 0, p);
}

/* The one flag the per-item path reads, kept in step with the states it
 * sums up. */
static inline void update_open(deferred_process_t *p)
{
    p->open = p->running && !p->failure && !p->cancelling && !p->finished &&
              !p->in_finish;
}

/* ---- stages ------------------------------------------------------------ */

deferred_stage_t *deferred_stage_new(const deferred_stage_ops_t *ops, void *data,
                                     unsigned flags)
{
    deferred_stage_t *st;

    int e = EINVAL;

    if (!ops || (!ops->handle && !ops->resume) || (flags & ~DEFERRED_STAGE_AUTOPAUSE))
        goto out_destroy;
    st = deferred__malloc(sizeof(*st));
    if (!st) {
        e = ENOMEM;
        goto out_destroy;
    }
    memset(st, 0, sizeof(*st));
    st->ops = ops;
    st->data = data;
    st->flags = flags;
    return st;

out_destroy:
    if (ops && ops->destroy)
        ops->destroy(data);
    errno = e;
    return NULL;
}

void *deferred_stage_data(const deferred_stage_t *st)
{
    return st ? st->data : NULL;
}

const char *deferred_stage_name(const deferred_stage_t *st)
{
    return st && st->ops->name ? st->ops->name : "stage";
}

uint64_t deferred_stage_items(const deferred_stage_t *st)
{
    return st ? st->items : 0;
}

static void route_pop(deferred_stage_t *st);

void deferred_stage_free(deferred_stage_t *st)
{
    if (!st)
        return;
    while (st->routes)
        route_pop(st);
    if (st->ops->destroy)
        st->ops->destroy(st->data);
    deferred__free(st);
}

/* ---- the process ------------------------------------------------------- */

deferred_process_t *deferred_process_new(unsigned flags)
{
    deferred_process_t *p;

    if (flags & ~DEFERRED_PROCESS_PAUSED) {
        errno = EINVAL;
        return NULL;
    }
    p = deferred__malloc(sizeof(*p));
    if (!p)
        return NULL; /* errno ENOMEM */
    memset(p, 0, sizeof(*p));
    p->refs = 1;
    p->flags = flags;
    return p;
}

deferred_process_t *deferred_process_ref(deferred_process_t *p)
{
    if (p)
        p->refs++;
    return p;
}

void deferred_process_unref(deferred_process_t *p)
{
    size_t i;

    if (!p || --p->refs)
        return;
    for (i = 0; i < p->n; i++)
        deferred_stage_free(p->stages[i]);
    deferred__free(p->stages);
    deferred_failure_unref(p->failure);
    deferred_value_release(p->outcome);
    deferred_unref(p->done);
    deferred__free(p);
}

int deferred_process_add(deferred_process_t *p, deferred_stage_t *st)
{
    bool producer;

    if (!p || !st)
        goto out_einval;
    if (p->running || p->done || p->finished) {
        deferred_stage_free(st);
        return -EBUSY;
    }
    if (st->p)
        return -EINVAL; /* already in a process: not ours to free */
    producer = st->ops->resume && !st->ops->handle;
    /* Producers first; nothing after the consumer (a stage without
     * resume that is not a processor is only known as the consumer once
     * the process runs, so only order is checked here). */
    if (producer && p->n > p->nproducers)
        goto out_einval;
    if (p->n > p->nproducers && p->stages[p->n - 1]->consumer)
        goto out_einval; /* after a built-in consumer */
    if (!producer && !st->ops->handle)
        goto out_einval;
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 4;
        deferred_stage_t **stages = NULL;

        /* Stage indices are 32 bits; the array's size must not wrap. */
        if (cap <= UINT32_MAX && cap <= SIZE_MAX / sizeof(*stages))
            stages = deferred__realloc(p->stages, cap * sizeof(*stages));
        if (!stages) {
            deferred_stage_free(st);
            return -ENOMEM;
        }
        p->stages = stages;
        p->cap = cap;
    }
    st->p = p;
    st->producer = producer;
    st->index = (uint32_t)p->n;
    p->stages[p->n++] = st;
    if (producer)
        p->nproducers++;
    return 0;

out_einval:
    deferred_stage_free(st);
    return -EINVAL;
}

static void process_cancel_cb(deferred_t *d, void *arg)
{
    (void)d;
    deferred_process_cancel(arg);
}

static void process_unref_cb(void *arg)
{
    deferred_process_unref(arg);
}

/* Enter and leave a stage call; leaving the outermost one settles what the
 * calls left pending.  The outermost call holds a reference across it (a
 * settle may drop the process's own); inner calls are covered by it. */
static inline void enter(deferred_process_t *p)
{
    if (p->depth++ == 0)
        p->refs++;
}

void deferred__settle_unref(deferred_process_t *p)
{
    settle(p);
    deferred_process_unref(p);
}

static inline void leave(deferred_process_t *p)
{
    if (--p->depth == 0)
        deferred__settle_unref(p);
}


/* Run a producer's resume operation, never nested: a resume asked for
 * while it runs only lets its loop go on, or runs it again afterwards. */
static void call_resume(deferred_stage_t *st, deferred_stage_t *by)
{
    if (st->in_resume) {
        st->resume_again = true;
        return;
    }
    st->in_resume = true;
    do {
        st->resume_again = false;
        st->ops->resume(st, by);
    } while (st->resume_again && !deferred__producer_blocked(st));
    st->in_resume = false;
}

static void pause_producers(deferred_process_t *p, deferred_stage_t *by)
{
    size_t i;

    /* Before the process runs, pauses are only counted (p->held and each
     * stage's held): run() hands their sum to every producer, so that a
     * producer added after a pause is paused too. */
    if (!p->running)
        return;
    for (i = 0; i < p->nproducers; i++) {
        deferred_stage_t *pr = p->stages[i];

        if (pr->paused++ == 0 && pr->ops->pause && !pr->cancelled && !pr->finished)
            pr->ops->pause(pr, by);
    }
}

static void resume_producers(deferred_process_t *p, deferred_stage_t *by)
{
    size_t i;

    if (!p->running)
        return;
    for (i = 0; i < p->nproducers; i++) {
        deferred_stage_t *pr = p->stages[i];

        if (pr->paused && --pr->paused == 0 && !deferred__producer_blocked(pr))
            call_resume(pr, by);
    }
}

deferred_t *deferred_process_run_at(const char *file, int line, deferred_process_t *p)
{
    deferred_t *d;
    uint64_t pauses;
    size_t i;

    /* Misuse found now is NULL with EINVAL (deferred/common.h), not an
     * already-failed deferred. */
    if (!p || p->done || p->running || p->finished || p->nproducers == 0 ||
        p->n == p->nproducers) {
        errno = EINVAL;
        return NULL;
    }
    /* What the process fails with on its own (a cancel, a misuse, no
     * memory) names this call: the user's code, not the library's. */
    p->file = file;
    p->line = line;
    d = deferred_new_cancellable(process_cancel_cb, deferred_process_ref(p),
                                 process_unref_cb);
    if (!d) {
        errno = ENOMEM;
        return NULL;
    }
    for (i = 0; i < p->n; i++)
        p->stages[i]->down = i + 1 < p->n ? p->stages[i + 1] : NULL;
    /* Producers all feed the first stage after them. */
    for (i = 0; i < p->nproducers; i++)
        p->stages[i]->down = p->stages[p->nproducers];
    deferred__refresh_fast(p);
    if (p->flags & DEFERRED_PROCESS_PAUSED)
        p->held++;
    /* The pauses counted before the run (the process's own and its
     * stages') now apply to every producer. */
    pauses = p->held;
    for (i = p->nproducers; i < p->n; i++)
        pauses += p->stages[i]->held;
    for (i = 0; i < p->nproducers; i++)
        p->stages[i]->paused = (uint32_t)(pauses > UINT32_MAX ? UINT32_MAX : pauses);
    p->done = d;
    p->running = true;
    update_open(p);
    p->refs++; /* held until finish is delivered */
    enter(p);
    for (i = p->nproducers; i < p->n && !p->failure; i++) {
        deferred_stage_t *st = p->stages[i], *sub = NULL;
        deferred_failure_t *f;

        if (!st->ops->start)
            continue;
        f = st->ops->start(st, p->stages[0], deferred_value_none(), &sub);
        deferred_stage_free(sub); /* the whole stream has no parent */
        if (f) {
            deferred_failure_add_context(f, deferred_stage_name(st), "starting");
            p->failure = f;
            update_open(p);
        }
    }
    for (i = 0; i < p->nproducers; i++)
        if (!deferred__producer_blocked(p->stages[i]))
            call_resume(p->stages[i], NULL);
    deferred_ref(d);
    leave(p);
    return d;
}

/* ---- failure and finish ------------------------------------------------ */

/* Add the frame of st handling item to the failure in flight.  Frames are
 * put in front as the failure travels up towards the producer, so the
 * first frame is the input's and the story reads from the consumer back. */
static void add_frame(deferred_stage_t *st, deferred_value_t item)
{
    deferred_process_t *p = st->p;
    char small[256], *desc = small, *big = NULL;
    char where[64];
    int n = 0;

    small[0] = '\0';
    if (st->ops->describe) {
        n = st->ops->describe(st, item, small, sizeof(small));
        /* A longer description (the whole SQL of a query) is not cut. */
        if (n >= (int)sizeof(small) && (big = deferred__malloc((size_t)n + 1))) {
            big[0] = '\0';
            if (st->ops->describe(st, item, big, (size_t)n + 1) >= 0)
                desc = big;
        }
        if (n < 0)
            small[0] = '\0';
    }
    if (st->producer && st->items == 0)
        where[0] = '\0'; /* nothing emitted yet: no item to name */
    else if (st->producer)
        snprintf(where, sizeof(where), "item %llu emitted",
                 (unsigned long long)st->items);
    else
        snprintf(where, sizeof(where), "item %llu", (unsigned long long)st->items);
    if (!where[0] && !desc[0])
        snprintf(where, sizeof(where), "before its first item");
    deferred__failure_push_context(p->failure, deferred_stage_name(st), "%s%s%s",
                                   where, where[0] && desc[0] ? ": " : "", desc);
    deferred__free(big);
}

/* st failed with f (taken) while holding item. */
static void fail(deferred_stage_t *st, deferred_failure_t *f, deferred_value_t item)
{
    deferred_process_t *p = st->p;

    if (p->failure || p->finished) {
        deferred_failure_unref(f); /* the first failure tells the story */
        return;
    }
    p->failure = f;
    update_open(p);
    p->framed = p->depth;
    add_frame(st, item);
}

static deferred_stage_t *target_of(deferred_stage_t *st)
{
    return st->routes ? st->routes->sub : st;
}

void deferred__refresh_fast(deferred_process_t *p)
{
    size_t i;

    for (i = 0; i < p->n; i++) {
        deferred_stage_t *st = p->stages[i], *to = st->down;

        st->fast = to && !to->routes && !(to->flags & DEFERRED_STAGE_AUTOPAUSE) &&
                   !st->cancelled && !st->finished;
    }
}

static void route_pop(deferred_stage_t *st)
{
    struct route *r = st->routes;
    deferred_stage_t *sub = r->sub;

    st->routes = r->up;
    /* Not while the process is being freed: its stages go one by one. */
    if (st->p && st->p->running && !st->p->finished)
        deferred__refresh_fast(st->p);
    /* Pauses the subordinate still holds on the producers go with it. */
    if (sub->held && sub->p && !sub->p->finished) {
        while (sub->held) {
            sub->held--;
            resume_producers(sub->p, sub);
        }
    }
    sub->p = NULL;
    deferred_stage_free(sub);
    deferred__free(r);
}

/* Deliver item to stage to (or the subordinate it delegates to). */
/* Deliver item to stage to (or the subordinate it delegates to).  This is
 * the per-item path: one indirect call, a few counters, no allocation. */
static inline int deliver(deferred_process_t *p, deferred_stage_t *to,
                          deferred_stage_t *from, deferred_value_t tag,
                          deferred_value_t item)
{
    deferred_stage_t *t = DEFERRED_LIKELY(!to->routes) ? to : to->routes->sub;
    deferred_failure_t *f;

    t->items++;
    if (DEFERRED_UNLIKELY(t->flags & DEFERRED_STAGE_AUTOPAUSE)) {
        t->held++;
        pause_producers(p, t);
    }
    f = t->ops->handle(t, from, tag, &item);
    if (DEFERRED_UNLIKELY(f != NULL))
        fail(t, f, item);
    else if (DEFERRED_UNLIKELY(p->failure != NULL) && p->framed > p->depth) {
        /* A failure from further down passes through t. */
        p->framed = p->depth;
        add_frame(t, item);
    }
    deferred__release(item);
    return DEFERRED_LIKELY(p->open) || (!p->failure && !p->cancelling) ? 0 : -ECANCELED;
}

/* May st send downstream now?  Producers stop at a cancel or failure;
 * while finishing, the stage whose finish runs may still emit, and so may
 * the stages after it (not finished yet: what it emits goes through them,
 * a batch flushing, say); those before it are done. */
static bool may_emit(const deferred_stage_t *st)
{
    const deferred_process_t *p = st->p;

    if (!p || !st->down || !p->running || p->failure)
        return false;
    if (p->in_finish)
        return !st->producer && st->index >= p->finishing;
    if (p->cancelling || p->finished)
        return false;
    return !(st->producer && (st->cancelled || st->finished));
}

/* The general emit: the first call on the stack, a stream that is ending,
 * a consumer with subordinates or autopause. */
int deferred__emit_slow(deferred_stage_t *self, deferred_value_t tag,
                        deferred_value_t item)
{
    deferred_process_t *p;
    int rc;

    if (!self || !self->p || !self->down) {
        deferred_value_release(item);
        return -EINVAL;
    }
    p = self->p;
    if (!may_emit(self)) {
        deferred_value_release(item);
        return -ECANCELED;
    }
    enter(p);
    self->items += self->producer;
    rc = deliver(p, self->down, self, tag, item);
    if (rc < 0 && self->producer && p->failure && p->framed > 0) {
        p->framed = 0;
        add_frame(self, deferred_value_none());
    }
    leave(p);
    return rc;
}

/* What follows a handle that failed, or after which the stream no longer
 * flows: frames for the failure, the item released, the depth undone. */
int deferred__emit_unwind(deferred_process_t *p, deferred_stage_t *self,
                          deferred_stage_t *to, deferred_value_t item,
                          deferred_failure_t *f)
{
    int rc;

    if (f)
        fail(to, f, item);
    else if (p->failure && p->framed > p->depth) {
        p->framed = p->depth;
        add_frame(to, item);
    }
    deferred_value_release(item);
    rc = p->failure || p->cancelling ? -ECANCELED : 0;
    if (rc < 0 && self->producer && p->failure && p->framed > 0) {
        p->framed = 0;
        add_frame(self, deferred_value_none());
    }
    leave(p);
    return rc;
}

/* The per-item path is deferred__emit() in process-private.h, inlined
 * into the built-in stages; this is its exported form. */
int deferred_stage_emit_tagged(deferred_stage_t *self, deferred_value_t tag,
                               deferred_value_t item)
{
    return deferred__emit(self, tag, item);
}

int deferred_stage_emit(deferred_stage_t *self, deferred_value_t item)
{
    return deferred_stage_emit_tagged(self, deferred_value_none(), item);
}

/* A group opens at stage to. */
static void deliver_start(deferred_stage_t *to, deferred_stage_t *from,
                          deferred_value_t tag)
{
    deferred_process_t *p = to->p;

    while (to && !p->failure) {
        deferred_stage_t *t = target_of(to), *sub = NULL;
        deferred_failure_t *f = NULL;
        bool consumer = to->down == NULL;

        if (t->ops->start)
            f = t->ops->start(t, from, tag, &sub);
        if (f) {
            deferred_stage_free(sub);
            fail(t, f, tag);
            return;
        }
        if (sub) {
            struct route *r;

            if (!consumer) {
                deferred_stage_free(sub);
                fail(t, process_failure(p, EINVAL,
                                             "only the consumer may hand back a "
                                             "subordinate consumer"), tag);
                return;
            }
            r = deferred__malloc(sizeof(*r));
            if (!r || !sub->ops->handle) {
                deferred__free(r);
                deferred_stage_free(sub);
                fail(t, r ? process_failure(p, EINVAL,
                                                 "a subordinate must be a consumer")
                          : process_failure(p, ENOMEM, NULL),
                     tag);
                return;
            }
            sub->p = p;
            sub->index = to->index;
            r->sub = sub;
            r->depth = 0;
            r->up = to->routes;
            to->routes = r;
            deferred__refresh_fast(p);
            if (sub->ops->start) {
                deferred_stage_t *ignored = NULL;

                f = sub->ops->start(sub, from, tag, &ignored);
                deferred_stage_free(ignored);
                if (f) {
                    fail(sub, f, tag);
                    return;
                }
            }
            return;
        }
        if (to->routes)
            to->routes->depth++;
        if (consumer)
            return;
        from = to;
        to = to->down;
    }
}

/* t's finish for the end of a group.  Only the stream's end may wait on
 * a deferred: one returned here is a mistake, reported as a failure
 * (the deferred is let go). */
static deferred_value_t group_finish(deferred_stage_t *t, deferred_stage_t *from,
                                     deferred_value_t tag, deferred_value_t outcome)
{
    deferred_value_t out = t->ops->finish(t, from, tag, outcome);

    if (DEFERRED_UNLIKELY(deferred_value_is_deferred(out))) {
        deferred_value_release(out);
        out = deferred_value_failure(process_failure(
            t->p, EINVAL,
            "%s returned a deferred from the finish of a group (only the "
            "stream's end may wait)", deferred_stage_name(t)));
        if (!t->p->failure)
            fail(t, deferred_failure_ref(deferred_value_get_failure(out)), tag);
    }
    return out;
}

/* A group closes at stage to with outcome (taken). */
static void deliver_end(deferred_stage_t *to, deferred_stage_t *from,
                        deferred_value_t tag, deferred_value_t outcome)
{
    deferred_process_t *p = to->p;

    while (to) {
        deferred_stage_t *t = target_of(to);
        bool consumer = to->down == NULL;
        deferred_value_t out = outcome;

        if (to->routes && to->routes->depth == 0) {
            /* The delegated group ends: the subordinate's result goes to
             * the parent (or the next subordinate out) as an item. */
            deferred_stage_t *parent;
            deferred_failure_t *f;

            if (t->ops->finish)
                out = group_finish(t, from, tag, outcome);
            route_pop(to);
            if (deferred_value_is_failure(out)) {
                if (!p->failure)
                    fail(to, deferred_value_take_failure(out), tag);
                else
                    deferred_value_release(out);
                return;
            }
            parent = target_of(to);
            parent->items++;
            f = parent->ops->handle(parent, from, tag, &out);
            if (f)
                fail(parent, f, out);
            deferred_value_release(out);
            return;
        }
        if (to->routes)
            to->routes->depth--;
        if (t->ops->finish)
            out = group_finish(t, from, tag, outcome);
        if (consumer || p->failure) {
            deferred_value_release(out);
            return;
        }
        outcome = out;
        from = to;
        to = to->down;
    }
    deferred_value_release(outcome);
}

int deferred_stage_start(deferred_stage_t *self, deferred_value_t tag)
{
    deferred_process_t *p;

    /* The empty tag stands for the whole stream: no group has it. */
    if (!self || !self->p || !self->down || self->groups == UINT32_MAX ||
        deferred_value_is_none(tag))
        return -EINVAL;
    /* Counted even when it is not delivered, so that its end matches. */
    self->groups++;
    if (!may_emit(self))
        return -ECANCELED;
    p = self->p;
    enter(p);
    deliver_start(self->down, self, tag);
    leave(p);
    return p->failure || p->cancelling ? -ECANCELED : 0;
}

int deferred_stage_end(deferred_stage_t *self, deferred_value_t tag,
                       deferred_value_t outcome)
{
    deferred_process_t *p;
    int rc;

    if (!self || !self->p || !self->down) {
        deferred_value_release(outcome);
        return -EINVAL;
    }
    if (self->groups == 0) {
        /* Consumers would close a group of someone else's: the stream's
         * structure is broken, so the stream fails. */
        deferred_value_release(outcome);
        if (may_emit(self))
            deferred_stage_fail(self, process_failure(
                                          self->p, EINVAL,
                                          "deferred_stage_end: %s ended a group it "
                                          "never opened",
                                          deferred_stage_name(self)));
        return -EINVAL;
    }
    self->groups--;
    if (!may_emit(self)) {
        deferred_value_release(outcome);
        return -ECANCELED;
    }
    p = self->p;
    enter(p);
    if (DEFERRED_UNLIKELY(deferred_value_is_deferred(outcome))) {
        /* A group ends when its outcome is known: one still in flight is
         * a mistake.  The group still ends (the consumers' counts stay
         * right), with the failure the stream now fails with. */
        deferred_failure_t *f = process_failure(
            p, EINVAL, "deferred_stage_end: %s ended a group with a deferred (an "
            "outcome is a value or a failure)", deferred_stage_name(self));

        deferred_value_release(outcome);
        outcome = deferred_value_failure(deferred_failure_ref(f));
        if (!p->failure) {
            p->failure = f;
            update_open(p);
            p->framed = 0;
            add_frame(self, deferred_value_none());
        } else {
            deferred_failure_unref(f);
        }
        deliver_end(self->down, self, tag, outcome);
        leave(p);
        return -EINVAL;
    }
    deliver_end(self->down, self, tag, outcome);
    rc = p->failure || p->cancelling ? -ECANCELED : 0;
    leave(p);
    return rc;
}

int deferred_stage_finish(deferred_stage_t *self, deferred_value_t outcome)
{
    deferred_process_t *p;
    int rc = 0;

    if (!self || !self->p || !self->producer) {
        deferred_value_release(outcome);
        return -EINVAL;
    }
    p = self->p;
    if (self->finished || self->cancelled || p->finished) {
        deferred_value_release(outcome);
        return -EALREADY;
    }
    enter(p);
    self->finished = true;
    self->fast = false;
    p->producers_done++;
    if (DEFERRED_UNLIKELY(deferred_value_is_deferred(outcome))) {
        /* A producer finishes when its work is done: an outcome still in
         * flight is a mistake, and the stream fails rather than hang. */
        deferred_value_release(outcome);
        outcome = deferred_value_failure(process_failure(
            p, EINVAL,
            "deferred_stage_finish: %s finished with a deferred (a producer's "
            "outcome is a value or a failure)", deferred_stage_name(self)));
        rc = -EINVAL;
    }
    if (deferred_value_is_failure(outcome)) {
        if (!p->failure) {
            p->failure = deferred_value_take_failure(outcome);
            update_open(p);
            p->framed = 0;
            add_frame(self, deferred_value_none());
        } else {
            deferred_value_release(outcome);
        }
    } else {
        deferred_value_release(p->outcome);
        p->outcome = outcome;
    }
    leave(p);
    return rc;
}

int deferred_stage_fail(deferred_stage_t *self, deferred_failure_t *f)
{
    deferred_process_t *p;
    uint32_t i;

    if (!self || !self->p || !f) {
        deferred_failure_unref(f);
        return -EINVAL;
    }
    p = self->p;
    if (p->failure || p->finished || !p->running) {
        deferred_failure_unref(f);
        return -EALREADY;
    }
    enter(p);
    p->failure = f;
    update_open(p);
    p->framed = 0;
    /* Nothing is on the stack to add frames as it unwinds: add them all,
     * from self back to the producers. */
    add_frame(self, deferred_value_none());
    if (!self->producer)
        for (i = self->index; i-- > 0;)
            add_frame(p->stages[i], deferred_value_none());
    leave(p);
    return 0;
}

static void cancel_producers(deferred_process_t *p, deferred_stage_t *by)
{
    size_t i;

    for (i = 0; i < p->nproducers; i++) {
        deferred_stage_t *pr = p->stages[i];

        if (pr->cancelled || pr->finished)
            continue;
        pr->cancelled = true;
        pr->fast = false;
        if (pr->ops->cancel)
            pr->ops->cancel(pr, by);
    }
}

static void finish_from(deferred_process_t *p, size_t i, deferred_value_t outcome);

/* A stage's finish returned a deferred: the finish goes on from the next
 * stage with its result. */
static deferred_value_t finish_resumed(deferred_value_t v, void *arg)
{
    deferred_process_t *p = arg;
    deferred_t *wait = p->finish_wait;

    /* Our reference on it goes (it holds itself while it runs us). */
    p->finish_wait = NULL;
    deferred_unref(wait);
    finish_from(p, p->finishing + 1, v);
    return deferred_value_none();
}

static void process_unref_destroy(void *arg)
{
    deferred_process_unref(arg);
}

/*
 * Finish the stages from index i on with outcome (taken), in order.  A
 * stage whose finish returns a deferred (work still in flight, such as an
 * asynchronous map) suspends the sequence until that deferred fires; the
 * stage may still emit meanwhile.  At the end the process's deferred fires
 * with the consumer's result.
 */
static void finish_from(deferred_process_t *p, size_t i, deferred_value_t outcome)
{
    deferred_t *done;

    p->depth++;
    for (; i < p->n; i++) {
        deferred_stage_t *st = p->stages[i];

        if (p->failure) {
            /* What a finish flushed downstream failed. */
            deferred_value_release(outcome);
            outcome = deferred_value_failure(p->failure);
            p->failure = NULL;
        }
        /* Groups left open end with the stream. */
        while (st->routes) {
            deferred_stage_t *sub = st->routes->sub;

            if (sub->ops->finish)
                deferred_value_release(sub->ops->finish(
                    sub, p->stages[0], deferred_value_none(),
                    deferred_value_failure(process_failure(
                        p, ECANCELED,
                        "the stream ended inside this group"))));
            route_pop(st);
        }
        p->finishing = i;
        if (st->ops->finish)
            outcome = st->ops->finish(st, p->stages[0], deferred_value_none(), outcome);
        if (DEFERRED_UNLIKELY(deferred_value_is_deferred(outcome))) {
            deferred_t *wait = outcome.ptr;

            /* The process owns the reference the finish handed over until
             * the deferred fired (finish_resumed() lets it go). */
            p->finish_wait = wait;
            p->refs++;
            if (deferred_add_both_full(wait, finish_resumed, p, process_unref_destroy) == 0) {
                p->depth--;
                /* A cancelled or failed stream wants nothing a stage
                 * still waits on (even when a finish before it replaced
                 * the failure by a value): the cancel goes on to what it
                 * waits on, and the finish goes on with its ECANCELED. */
                if (p->failure || p->cancelling)
                    p->aborted = true;
                if (p->aborted && p->finish_wait == wait)
                    deferred_cancel_at(wait, p->file, p->line);
                return;
            }
            p->finish_wait = NULL;
            deferred_unref(wait);
            outcome = deferred_value_failure(
                process_failure(p, ENOMEM, NULL));
        }
    }
    if (p->failure) {
        deferred_value_release(outcome);
        outcome = deferred_value_failure(p->failure);
        p->failure = NULL;
    }
    p->finished = true;
    p->in_finish = false;
    update_open(p);
    p->depth--;
    /* The deferred holds the process (its canceller's argument); the
     * process lets go of the deferred once it fired, so neither keeps the
     * other alive. */
    done = p->done;
    p->done = NULL;
    deferred_callback(done, outcome);
    deferred_unref(done);
    deferred_process_unref(p); /* the reference held while running */
}

/* The stream was cancelled or failed while it finishes: cancel what the
 * finish waits on (it goes on with the ECANCELED), and every later wait
 * too (finish_from()). */
static void abort_waits(deferred_process_t *p)
{
    p->aborted = true;
    if (p->finish_wait)
        deferred_cancel_at(p->finish_wait, p->file, p->line);
}

/* The end of the stream, once the stage calls have unwound: cancel the
 * producers if it failed or was cancelled, then finish every stage after
 * them in order. */
static void settle(deferred_process_t *p)
{
    deferred_value_t outcome;

    if (p->finished || !p->running)
        return;
    if (p->in_finish) {
        /* A failure or a cancel while a finish waits (a stage failed, a
         * consumer took what it wanted): what it waits on is no longer
         * wanted.  Once: later waits are cancelled by finish_from(). */
        if ((p->failure || p->cancelling) && !p->aborted)
            abort_waits(p);
        return;
    }
    if (!p->failure && !p->cancelling && p->producers_done < p->nproducers)
        return;
    p->in_finish = true;
    update_open(p);
    if (p->failure || p->cancelling) {
        p->aborted = true;
        p->depth++;
        cancel_producers(p, NULL);
        p->depth--;
    }
    if (p->failure) {
        outcome = deferred_value_failure(p->failure);
        p->failure = NULL;
    } else if (p->cancelling) {
        outcome = deferred_value_failure(process_failure(
            p, ECANCELED, "the process was cancelled"));
    } else {
        outcome = p->outcome;
        p->outcome = deferred_value_none();
    }
    finish_from(p, p->nproducers, outcome);
}

/* ---- flow control ------------------------------------------------------ */

int deferred_stage_pause(deferred_stage_t *self)
{
    deferred_process_t *p;

    if (!self || !self->p || self->producer || self->held == UINT32_MAX)
        return -EINVAL;
    p = self->p;
    enter(p);
    self->held++;
    pause_producers(p, self);
    leave(p);
    return 0;
}

int deferred_stage_resume(deferred_stage_t *self)
{
    deferred_process_t *p;

    if (!self || !self->p || self->producer || self->held == 0)
        return -EINVAL;
    p = self->p;
    enter(p);
    self->held--;
    resume_producers(p, self);
    leave(p);
    return 0;
}

int deferred_stage_cancel(deferred_stage_t *self)
{
    deferred_process_t *p;

    if (!self || !self->p)
        return -EINVAL;
    p = self->p;
    if (p->cancelling || p->finished)
        return 0;
    enter(p);
    p->cancelling = true;
    update_open(p);
    cancel_producers(p, self->producer ? NULL : self);
    leave(p);
    return 0;
}

bool deferred_stage_is_paused(const deferred_stage_t *self)
{
    size_t i;

    if (!self || !self->p)
        return false;
    if (self->producer)
        return deferred__producer_blocked(self);
    if (!self->p->running && !self->p->finished)
        return deferred_process_is_paused(self->p); /* pauses not applied yet */
    for (i = 0; i < self->p->nproducers; i++)
        if (self->p->stages[i]->paused)
            return true;
    return false;
}

int deferred_process_pause(deferred_process_t *p)
{
    if (!p || p->held == UINT32_MAX)
        return -EINVAL;
    p->held++;
    /* Before the run only the count changes (see pause_producers()). */
    if (p->running) {
        enter(p);
        pause_producers(p, NULL);
        leave(p);
    }
    return 0;
}

int deferred_process_resume(deferred_process_t *p)
{
    if (!p || p->held == 0)
        return -EINVAL;
    p->held--;
    if (p->running) {
        enter(p);
        resume_producers(p, NULL);
        leave(p);
    }
    return 0;
}

int deferred_process_cancel(deferred_process_t *p)
{
    if (!p)
        return -EINVAL;
    if (p->finish_wait) {
        /* What the finish waits on, and whatever a later finish waits on. */
        p->aborted = true;
        return deferred_cancel_at(p->finish_wait, p->file, p->line);
    }
    if (!p->running || p->cancelling || p->finished)
        return 0;
    enter(p);
    p->cancelling = true;
    update_open(p);
    cancel_producers(p, NULL);
    leave(p);
    return 0;
}

bool deferred_process_is_paused(const deferred_process_t *p)
{
    size_t i;

    if (!p)
        return false;
    if (!p->running && !p->finished) {
        /* Not applied to the producers yet (see deferred_process_run()). */
        if (p->held || (p->flags & DEFERRED_PROCESS_PAUSED))
            return true;
        for (i = p->nproducers; i < p->n; i++)
            if (p->stages[i]->held)
                return true;
        return false;
    }
    for (i = 0; i < p->nproducers; i++)
        if (p->stages[i]->paused)
            return true;
    return false;
}

bool deferred_process_is_finished(const deferred_process_t *p)
{
    return p && p->finished;
}
