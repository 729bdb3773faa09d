/*
 * async.c: async functions, stackless coroutines (deferred/async.h): the
 * driver, awaits, cancel, making and starting; streams are in
 * async-stream.c.
 *
 * The design decisions to know:
 *
 * One allocation.  A coroutine is its deferred: deferred__new_extra()
 * makes the deferred with room after it for the library's state (struct
 * deferred__async) and the user's frame, so a call costs one malloc and
 * the frame lives exactly as long as the deferred.
 *
 * Who holds whom.  An await of a deferred X without a result adds one
 * callback pair to X whose argument is the state's embedded
 * struct deferred__owned (no allocation), and that pair holds a reference
 * on the coroutine's deferred until the core says it is done with it
 * (after it ran, or when X is freed unrun: the coroutine is then dropped).
 * The coroutine holds no reference on X, so nothing owns itself: as in
 * Twisted, what the coroutine awaits keeps it alive, not the reverse.
 *
 * Cancel.  The core runs a canceller once and then fails the deferred
 * with ECANCELED, but a coroutine that handles the cancel goes on (and a
 * second cancel must reach what it awaits then).  So the canceller fires
 * the deferred waiting on a fresh cancellable deferred
 * (deferred__fire_waiting(), as if a first callback had returned it),
 * which the coroutine's end fires instead (Twisted's
 * _cancellableInlineCallbacks does the same with a callback of its own).
 * The allocation happens on cancel only, and nothing is in the chain of a
 * coroutine that is never cancelled.
 *
 * No recursion.  An await of a deferred that has its result takes it and
 * the body goes on in the same call.  A resume that arrives while the
 * body runs only marks it resumed: the driver's loop calls the body
 * again.  Runs nested deeper than NEST_MAX drives (a coroutine started or
 * resumed from a coroutine's end, down a chain of them) are queued on a
 * per-thread list that the outermost drive empties before it returns.
 */
#include <stdio.h>
#include <string.h>

#include "async-private.h"
/* The one place a layer above the core sees the deferred's structure: the
 * await of a deferred that has its result takes it inline (a few loads and
 * stores, no call and so no frame), the common await of a coroutine. */
#include "core/core-private.h"
#include "deferred/dump.h"

static THREAD_LOCAL unsigned depth;
static THREAD_LOCAL struct deferred__async *runq_head, *runq_tail;


static struct deferred__async *state_of(deferred_t *d)
{
    return deferred__extra(d);
}

static struct deferred__async *owned_state(struct deferred__owned *o)
{
    return (struct deferred__async *)(void *)o; /* its first member */
}

static deferred_failure_t *cancelled_failure(const char *why)
{
    return deferred_failure_new_at(NULL, 0, DEFERRED_DOMAIN_LIBRARY, ECANCELED, "%s", why);
}

static const char *base_name(const char *file)
{
    const char *s = file ? strrchr(file, '/') : NULL;

    return s ? s + 1 : file ? file : "?";
}

/* A failure that passes out of the coroutine: "async NAME", what where. */
void deferred__async_add_frame(struct deferred__async *st, deferred_failure_t *f, const char *what,
                      const char *file, int line)
{
    char stage[160];

    snprintf(stage, sizeof(stage), "async %s", st->name);
    deferred_failure_add_context(f, stage, "%s at %s:%d", what, base_name(file), line);
}

/* Point the body at its cleanups, or at its end once they run. */
void deferred__async_unwind(deferred_async_t *co)
{
    co->line = co->finally_ ? DEFERRED_ASYNC_LINE_END_ : DEFERRED_ASYNC_LINE_FINALLY_;
}


/* ---- the driver -------------------------------------------------------- */

static bool waits(const struct deferred__async *st)
{
    return (st->flags & (A_WAIT_PAIR | A_WAIT_ITER)) != 0;
}

static deferred_value_t hold_fn(deferred_value_t v, void *arg)
{
    (void)arg;
    return v;
}

static void hold_dispose(struct deferred__owned *o)
{
    struct deferred__async *st =
        (struct deferred__async *)(void *)((char *)o - offsetof(struct deferred__async, hold));

    deferred_unref(st->self);
}

static DEFERRED_NOINLINE void finish_slow(struct deferred__async *st);

/* The coroutine ended: the outcome goes to its deferred (see finish_slow()
 * for everything but the common end). */
void deferred__async_finish(struct deferred__async *st)
{
    deferred_t *self = st->self;
    deferred_value_t v;

    /* The common end, as one path (a leaf but for the fire): self has not
     * fired (so no cancel was captured: that fires self waiting, and
     * target is self), nothing dropped it and no iterator is open, so no
     * user code runs before the outcome goes to self (the drive's caller
     * holds self across it).  The last await's value was taken: deliver()
     * takes it before the body goes on. */
    if (DEFERRED_LIKELY(!(self->flags & F_CALLED) && !(st->flags & A_DROPPED) && !st->iters)) {
        st->flags = (st->flags | A_DONE) & ~(unsigned)A_CANCEL;
        v = st->outcome;
        st->outcome = deferred_value_none();
        /* A value, or a failure value: never a deferred one (the return
         * turns that into a failure). */
        deferred__fire(self, v, __FILE__, __LINE__);
        return;
    }
    finish_slow(st);
}

/* The end in general: the iterators close, the outcome goes to target
 * (released, for a dropped coroutine).  target is held across the
 * iterators' closing, which runs user code (a stream's end resumes other
 * coroutines), and so may cancel this coroutine's deferred: the core then
 * cancels target (a rearmed one is freed once it failed), and a target
 * that already has its outcome is not fired again. */
static DEFERRED_NOINLINE void finish_slow(struct deferred__async *st)
{
    deferred_value_t v;
    deferred_t *target;

    st->flags |= A_DONE;
    st->flags &= ~A_CANCEL;
    target = deferred_ref(st->target); /* NULL: it failed at a cancel already */
    while (st->iters)
        deferred__async_iter_detach(st->iters);
    deferred_value_release(st->got);
    st->got = deferred_value_none();
    v = st->outcome;
    st->outcome = deferred_value_none();
    if ((st->flags & A_DROPPED) || !target || deferred_has_fired(target)) {
        deferred_value_release(v);
        /* A consumer's deferred is what its process's result waits on:
         * dropped, it fails, or the process would wait (and live)
         * forever. */
        if ((st->flags & (A_DROPPED | A_CONSUMER)) == (A_DROPPED | A_CONSUMER) && target &&
            !deferred_has_fired(target))
            deferred_errback(target, cancelled_failure(
                                         "a consumer coroutine was dropped: what it awaited "
                                         "was freed without firing"));
        deferred_unref(target);
        return;
    }
    if (target != st->self) {
        /* After a captured cancel self waits on target: self must live
         * until target's chain has handed it the outcome (the core may
         * run that chain later, holding target only).  An entry after
         * self's continue entry holds it that long. */
        deferred_ref(st->self);
        if (deferred__add_both_holding(target, hold_fn, &st->hold) < 0)
            deferred_unref(st->self); /* not reached: target has room */
    }
    if (deferred_value_is_failure(v))
        deferred_errback(target, deferred_value_take_failure(v));
    else
        deferred_callback(target, v);
    deferred_unref(target);
}

/* Call the body until it waits or ends.  The caller holds self (the
 * start's caller, the pair that resumed it, the run queue, the stream that
 * woke it): the end may release what else holds it, the frame with it. */
static DEFERRED_ALWAYS_INLINE inline void step(struct deferred__async *st)
{
    st->flags |= A_RUNNING;
    for (;;) {
        int rc = st->body(st->frame);

        if (rc == DEFERRED_ASYNC_AGAIN_)
            continue;
        if (rc == DEFERRED_ASYNC_SUSPEND_) {
            if (!waits(st))
                continue; /* resumed while it ran */
            break;
        }
        st->flags &= ~A_RUNNING;
        deferred__async_finish(st);
        return;
    }
    st->flags &= ~A_RUNNING;
}

/* Run the queued coroutines, at the outermost drive. */
static DEFERRED_NOINLINE void drain(void)
{
    struct deferred__async *st;

    while ((st = runq_head)) {
        deferred_t *self = st->self;

        runq_head = st->next_run;
        if (!runq_head)
            runq_tail = NULL;
        st->flags &= ~A_QUEUED;
        if (!(st->flags & A_DONE) && !waits(st))
            step(st);
        deferred_unref(self);
    }
}

/* The coroutine may go on: run it now, or, nested too deep, queue it. */
void deferred__async_drive(struct deferred__async *st)
{
    if (st->flags & (A_RUNNING | A_DONE))
        return; /* the running body's loop sees it; or nothing to do */
    if (DEFERRED_UNLIKELY(depth >= NEST_MAX)) {
        if (!(st->flags & A_QUEUED)) {
            st->flags |= A_QUEUED;
            deferred_ref(st->self);
            st->next_run = NULL;
            if (runq_tail)
                runq_tail->next_run = st;
            else
                runq_head = st;
            runq_tail = st;
        }
        return;
    }
    depth++;
    step(st);
    if (DEFERRED_UNLIKELY(depth == 1) && runq_head)
        drain();
    depth--;
}

/* ---- awaiting a deferred ----------------------------------------------- */

/* The pair on an awaited deferred: the result is the coroutine's. */
static deferred_value_t resume_fn(deferred_value_t v, void *arg)
{
    struct deferred__async *st = owned_state(arg);

    st->awaited = NULL;
    st->flags &= ~A_WAIT_PAIR;
    if (DEFERRED_LIKELY(v.release != deferred__release_failure || (st->how & DEFERRED_ASYNC_TRY_)) &&
        DEFERRED_LIKELY(st->got.release == NULL) && DEFERRED_LIKELY(st->out != NULL)) {
        /* What deferred_async_resume() would do: the value goes to the
         * await's out now, and the body goes on without the call (the
         * pair runs only while the coroutine waits on it, not dropped). */
        *st->out = v;
        ((deferred_async_t *)st->frame)->resumed_ = 1;
    } else {
        deferred_value_release(st->got);
        st->got = v;
    }
    deferred__async_drive(st); /* the pair holds self */
    st->ran = true; /* set last: a pair disposed meanwhile is another's */
    return deferred_value_none();
}

/* The core is done with the pair: it ran (ran is set), or the awaited
 * deferred was freed with it unrun: nothing can resume the coroutine. */
static void pair_dispose(struct deferred__owned *o)
{
    struct deferred__async *st = owned_state(o);
    deferred_t *self = st->self;

    if (st->ran) {
        st->ran = false;
        if (DEFERRED_LIKELY(self->refs > 1))
            self->refs--; /* the common case, without a call */
        else
            deferred_unref(self);
        return;
    }
    st->awaited = NULL;
    st->flags &= ~A_WAIT_PAIR;
    st->flags |= A_DROPPED;
    ((deferred_async_t *)st->frame)->dropped_ = 1; /* for the inline await */
    deferred__async_drive(st);
    deferred_unref(self);
}

/* What an await gave (st->got) goes to *out, or, a failure and not
 * DEFERRED_ASYNC_TRY_ in how, becomes the outcome; or a dropped coroutine
 * unwinds. */
static int deliver(deferred_async_t *co, struct deferred__async *st, deferred_value_t *out,
                   int how, const char *file, int line)
{
    deferred_value_t v = value_take(&st->got);

    if (DEFERRED_UNLIKELY(st->flags & A_DROPPED) && !co->finally_) {
        deferred_value_release(v);
        deferred__async_unwind(co);
        return DEFERRED_ASYNC_AGAIN_;
    }
    if (DEFERRED_UNLIKELY(v.release == deferred__release_failure) &&
        !(how & DEFERRED_ASYNC_TRY_)) {
        deferred__async_add_frame(st, deferred_value_get_failure(v), "await", file, line);
        deferred_value_release(st->outcome);
        st->outcome = v;
        deferred__async_unwind(co);
        return DEFERRED_ASYNC_AGAIN_;
    }
    *out = v;
    return DEFERRED_ASYNC_DONE_;
}

/* d's reference that a taking await was given goes; a borrowed d is the
 * caller's. */
static void drop_taken(deferred_t *d, int how)
{
    if (!(how & DEFERRED_ASYNC_BORROW_))
        deferred_unref(d);
}

/* The await: every case (the common one, a deferred that has its result,
 * is taken inline before the call: deferred__async_ready() in
 * deferred/async.h). */
int deferred_async_await(deferred_async_t *co, deferred_t *d, deferred_value_t *out, int how,
                         const char *file, int line)
{
    struct deferred__async *st;
    int rc;

    if (DEFERRED_UNLIKELY(!co || !co->state_ || !out)) {
        drop_taken(d, how);
        return -EINVAL;
    }
    st = co->state_;
    if (DEFERRED_UNLIKELY(!d)) {
        if (how & DEFERRED_ASYNC_BORROW_)
            st->got = deferred_value_failure(deferred_failure_new_at(
                file, line, DEFERRED_DOMAIN_LIBRARY, EINVAL, "await of a NULL deferred"));
        else
            st->got = deferred_value_deferred(NULL); /* errno's failure */
        return deliver(co, st, out, how, file, line);
    }
    if (DEFERRED_UNLIKELY(st->flags & A_DROPPED)) {
        drop_taken(d, how);
        st->got = deferred_value_failure(cancelled_failure("await in a dropped coroutine"));
        return deliver(co, st, out, how, file, line);
    }
    if (single_result_ready(d)) {
        /* Its result, taken as deferred__take_result() does (the fast
         * path left this for the last reference, or a failure). */
        st->got = value_take(&d->result);
        if (!(how & DEFERRED_ASYNC_BORROW_)) {
            if (DEFERRED_LIKELY(d->refs > 1))
                d->refs--;
            else
                deferred_unref(d);
        }
        return deliver(co, st, out, how, file, line);
    }
    if (DEFERRED_UNLIKELY(is_multi(d))) {
        deferred_t *end = deferred_multi_when_finished(d);

        drop_taken(d, how);
        how &= ~DEFERRED_ASYNC_BORROW_; /* end is a reference of its own */
        if (deferred__take_result(end, &st->got))
            return deliver(co, st, out, how, file, line);
        d = end;
    }
    /* The pair on d will hold self: when self holds d already (d is
     * self, or, through others, waits on this coroutine), nothing could
     * ever fire or free either. */
    if (DEFERRED_UNLIKELY((rc = deferred__hold_would_cycle(d, st->self)) != 0)) {
        drop_taken(d, how);
        st->got = deferred_value_failure(
            rc > 0 ? deferred_failure_new_at(file, line, DEFERRED_DOMAIN_LIBRARY, EDEADLK,
                                             "async %s awaited a deferred that waits on it "
                                             "(a cycle)", st->name)
                   : deferred_failure_new_at(file, line, DEFERRED_DOMAIN_LIBRARY, ENOMEM,
                                             "out of memory while awaiting a deferred"));
        return deliver(co, st, out, how, file, line);
    }
    if (deferred__add_both_holding(d, resume_fn, &st->owned) < 0) {
        drop_taken(d, how);
        st->got = deferred_value_failure(deferred_failure_new_at(
            NULL, 0, DEFERRED_DOMAIN_LIBRARY, ENOMEM,
            "out of memory while awaiting a deferred"));
        return deliver(co, st, out, how, file, line);
    }
    st->self->refs++; /* the pair's (self is alive: its body runs) */
    st->awaited = d;
    /* An out in the frame can take the value when d fires (resume_fn());
     * one elsewhere (a local of the body's call) is set by the resume. */
    st->out = (char *)out >= (char *)st->frame &&
                      (char *)out - (char *)st->frame <=
                          (ptrdiff_t)(st->frame_size - sizeof(*out))
                  ? out
                  : NULL;
    st->how = how;
    st->flags |= A_WAIT_PAIR;
    co->line = line;
    if (DEFERRED_UNLIKELY(st->flags & A_CANCEL)) {
        st->flags &= ~A_CANCEL;
        deferred_cancel(d);
    }
    /* A taken d's reference goes: d lives as long as its other holders
     * keep it (freed now, the pair's dispose drops the coroutine). */
    drop_taken(d, how);
    return DEFERRED_ASYNC_SUSPEND_;
}

static DEFERRED_NOINLINE int resume_slow(deferred_async_t *co, deferred_value_t *out, int how,
                                         const char *file, int line)
{
    if (!co || !co->state_ || !out)
        return -EINVAL;
    return deliver(co, co->state_, out, how, file, line);
}

int deferred_async_resume(deferred_async_t *co, deferred_value_t *out, int how,
                          const char *file, int line)
{
    struct deferred__async *st;

    if (DEFERRED_LIKELY(co != NULL) && co->resumed_) {
        co->resumed_ = 0; /* the value is in *out already */
        return DEFERRED_ASYNC_DONE_;
    }
    /* The common case, a leaf: what deliver() does with a value in a
     * coroutine that was not dropped. */
    if (DEFERRED_LIKELY(co != NULL) && DEFERRED_LIKELY(out != NULL) &&
        DEFERRED_LIKELY((st = co->state_) != NULL) && !(st->flags & A_DROPPED) &&
        DEFERRED_LIKELY(st->got.release != deferred__release_failure)) {
        *out = value_take(&st->got);
        return DEFERRED_ASYNC_DONE_;
    }
    return resume_slow(co, out, how, file, line);
}

/* Everything but the common case of deferred_async_return(). */
static DEFERRED_NOINLINE int return_slow(deferred_async_t *co, deferred_value_t v)
{
    struct deferred__async *st = co ? co->state_ : NULL;

    if (!st) {
        deferred_value_release(v);
        return -EINVAL;
    }
    if (DEFERRED_UNLIKELY(v.release == deferred__release_deferred)) {
        deferred_value_release(v);
        v = deferred_value_failure(deferred_failure_new_at(
            NULL, 0, DEFERRED_DOMAIN_LIBRARY, EINVAL,
            "async %s returned a deferred (await it, then return its value)", st->name));
    }
    deferred_value_release(st->outcome);
    st->outcome = v;
    deferred__async_unwind(co);
    return 0;
}

int deferred_async_return(deferred_async_t *co, deferred_value_t v)
{
    struct deferred__async *st;

    /* The common case, a leaf: no outcome yet and v no deferred. */
    if (DEFERRED_LIKELY(co != NULL) && DEFERRED_LIKELY((st = co->state_) != NULL) &&
        DEFERRED_LIKELY(st->outcome.release == NULL) &&
        DEFERRED_LIKELY(v.release != deferred__release_deferred)) {
        st->outcome = v;
        deferred__async_unwind(co);
        return 0;
    }
    return return_slow(co, v);
}

/* ---- cancel ------------------------------------------------------------ */

static void cancel_rearmed(deferred_t *d, void *arg);

static void cancel_common(struct deferred__async *st, deferred_t *target)
{
    deferred_t *next;

    if (st->flags & (A_DONE | A_DROPPED) || target != st->target)
        return; /* the core fails target with ECANCELED */
    /* Keep target from failing: it fires waiting on next, which the end
     * fires (target's chain runs then, and a second cancel of target
     * reaches next).  The core makes the wait (no entry of ours in
     * target's chain: a coroutine that is never cancelled pays nothing
     * for this); it cannot fail on a fresh next, which has room. */
    next = deferred_new_cancellable(cancel_rearmed, st, NULL);
    if (next && deferred__fire_waiting(target, deferred_ref(next), __FILE__, __LINE__) == 0) {
        st->target = next; /* borrowed: target's wait holds it */
        deferred_unref(next);
    } else {
        /* No memory: target fails with ECANCELED now; the end finds it
         * fired and its outcome is released.  A rearmed target is freed
         * once its waiter has taken that failure: forget it. */
        deferred_unref(next);
        if (target != st->self)
            st->target = NULL;
    }
    if (st->flags & A_WAIT_PAIR)
        deferred_cancel(st->awaited);
    else if ((st->flags & A_WAIT_ITER) && st->waiting && st->waiting->stage)
        deferred_stage_cancel(st->waiting->stage);
    else
        st->flags |= A_CANCEL; /* running, or queued: the next wait */
}

static void cancel_self(deferred_t *d, void *arg)
{
    (void)arg;
    cancel_common(state_of(d), d);
}

static void cancel_rearmed(deferred_t *d, void *arg)
{
    cancel_common(arg, d);
}

/* ---- making and starting ----------------------------------------------- */

/* The coroutine's line in a dump: its name, where its body stopped, and
 * what it awaits (a child of its line). */
static void dump_note(deferred_dump_t *w, void *arg)
{
    struct deferred__async *st = arg;
    const deferred_async_t *co = st->frame;

    deferred_dump_str(w, "coroutine", st->name);
    if (co->line)
        deferred_dump_int(w, "at_line", co->line);
    if (st->flags & A_WAIT_PAIR)
        deferred_dump_deferred(w, "awaits", st->awaited);
    else if (st->flags & A_WAIT_ITER)
        deferred_dump_str(w, "awaits", "item");
}

void *deferred_async_new(deferred_async_fn body, size_t frame_size, const char *name)
{
    deferred_t *d;
    struct deferred__async *st;
    deferred_async_t *co;

    if (!body || frame_size < sizeof(deferred_async_t)) {
        errno = EINVAL;
        return NULL;
    }
    if (frame_size > SIZE_MAX - STATE_SIZE) {
        errno = ENOMEM;
        return NULL;
    }
    d = deferred__new_extra(STATE_SIZE + frame_size, __FILE__, __LINE__, cancel_self,
                            NULL, NULL);
    if (!d)
        return NULL; /* errno ENOMEM */
    st = state_of(d);
    memset(st, 0, STATE_SIZE + frame_size);
    st->owned.own.dispose = pair_dispose;
    st->owned.holds = d;
    st->hold.own.dispose = hold_dispose;
    st->hold.holds = d;
    st->body = body;
    st->frame = (char *)st + STATE_SIZE;
    st->frame_size = frame_size;
    st->name = name ? name : "async function";
    st->self = d;
    st->target = d;
    /* got and outcome are the empty value: zeroed */
    co = st->frame;
    co->state_ = st;
    if (DEFERRED_UNLIKELY(d->ext != NULL)) /* what deferred_dump_note() needs */
        deferred_dump_note(d, dump_note, st);
    return st->frame;
}

struct deferred__async *deferred__async_unstarted(void *frame)
{
    deferred_async_t *co = frame;

    if (!co || !co->state_ || (co->state_->flags & (A_STARTED | A_CONSUMER)))
        return NULL;
    return co->state_;
}

deferred_t *deferred_async_start(void *frame)
{
    struct deferred__async *st = deferred__async_unstarted(frame);

    if (!st) {
        errno = EINVAL;
        return NULL;
    }
    st->flags |= A_STARTED;
    /* The reference deferred_async_new() made is the caller's now. */
    deferred__async_drive(st);
    return st->self;
}

void deferred_async_discard(void *frame)
{
    struct deferred__async *st = deferred__async_unstarted(frame);

    if (st) {
        st->flags |= A_STARTED | A_DONE;
        deferred_unref(st->self);
    }
}

deferred_t *deferred_async_self(const deferred_async_t *co)
{
    return co && co->state_ ? co->state_->self : NULL;
}

const char *deferred_async_name(const deferred_async_t *co)
{
    return co && co->state_ ? co->state_->name : "";
}

bool deferred_async_dropped(const deferred_async_t *co)
{
    return co && co->state_ && (co->state_->flags & A_DROPPED);
}

