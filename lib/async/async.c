/*
 * async.c: async functions, stackless coroutines (deferred/async.h).
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
 * the deferred with a private marker value that the deferred's first
 * callback (the trap, added before the caller sees it) turns into a wait
 * on a fresh cancellable deferred, which the coroutine's end fires instead
 * (Twisted's _cancellableInlineCallbacks does the same).  The allocation
 * happens on cancel only.
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

#include "core/deferred-private.h"
#include "deferred/process.h"
#include "deferred/async.h"

#if defined(__GNUC__)
#define THREAD_LOCAL __thread __attribute__((tls_model("initial-exec")))
#else
#define THREAD_LOCAL _Thread_local
#endif

#define NEST_MAX 32

enum {
    A_STARTED = 1u << 0,
    A_RUNNING = 1u << 1,   /* the body is on the stack */
    A_DONE = 1u << 2,      /* ended: the outcome went to the deferred */
    A_DROPPED = 1u << 3,   /* what it awaited was freed unfired */
    A_QUEUED = 1u << 4,    /* on the run queue */
    A_WAIT_PAIR = 1u << 5, /* waits on st->awaited through its pair */
    A_WAIT_ITER = 1u << 6, /* waits for an item of st->waiting */
    A_CANCEL = 1u << 7,    /* cancelled while running: cancel the next wait */
    A_CONSUMER = 1u << 8   /* a process's consumer, started by its start */
};

struct deferred__async_link;

struct deferred__async {
    struct deferred__owned owned; /* the pair's argument: first member */
    struct deferred__owned hold;  /* holds self until a cancel's target ran */
    deferred_async_fn body;
    void *frame;
    const char *name;
    deferred_t *self;      /* the coroutine's deferred, this block's owner */
    deferred_t *target;    /* what the end fires: self, or after a cancel the
                              deferred self waits on (borrowed) */
    deferred_t *rearm;     /* made by a cancel, for the trap (a reference) */
    deferred_t *awaited;   /* borrowed, valid while A_WAIT_PAIR */
    deferred_value_t got;  /* what the last await gave */
    deferred_value_t outcome;
    struct deferred__async *next_run;
    struct deferred__async_link *iters;   /* open iterators */
    struct deferred__async_link *waiting; /* the iterator waited on */
    deferred_async_iter_t input;          /* a consumer's input */
    deferred_stage_t *stage;              /* a stage coroutine's stage */
    unsigned flags;
    bool ran; /* the pair ran: its dispose comes next */
};

/* A stream a coroutine iterates: the data of the consumer stage that
 * receives its items, shared by that stage and the iterator (refs). */
struct deferred__async_link {
    unsigned refs;
    struct deferred__async *st; /* NULL once detached from the coroutine */
    deferred_stage_t *stage;    /* NULL once the stage is destroyed */
    deferred_async_iter_t *it;
    struct deferred__async_link *next; /* st's open iterators */
    deferred_t *self; /* the coroutine's deferred (a reference): a consumer's
                         until the stream's end hands it to the process, an
                         iterator's while attached */
    deferred_value_t item;
    deferred_value_t outcome;
    bool has, ended, held, waiting, consumer;
};

static THREAD_LOCAL unsigned depth;
static THREAD_LOCAL struct deferred__async *runq_head, *runq_tail;

#define STATE_SIZE ((sizeof(struct deferred__async) + 15) & ~(size_t)15)

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
static void add_frame(struct deferred__async *st, deferred_failure_t *f, const char *what,
                      const char *file, int line)
{
    char stage[160];

    snprintf(stage, sizeof(stage), "async %s", st->name);
    deferred_failure_add_context(f, stage, "%s at %s:%d", what, base_name(file), line);
}

/* Point the body at its cleanups, or at its end once they run. */
static void unwind(deferred_async_t *co)
{
    co->line = co->finally_ ? DEFERRED_ASYNC_LINE_END_ : DEFERRED_ASYNC_LINE_FINALLY_;
}

static void link_unref(struct deferred__async_link *l);
static void iter_detach(struct deferred__async_link *l);

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

/* The coroutine ended: its iterators close, the outcome goes to target
 * (released, for a dropped coroutine). */
static void finish(struct deferred__async *st)
{
    deferred_value_t v;

    st->flags |= A_DONE;
    st->flags &= ~A_CANCEL;
    while (st->iters)
        iter_detach(st->iters);
    deferred_value_release(st->got);
    st->got = deferred_value_none();
    v = st->outcome;
    st->outcome = deferred_value_none();
    if (st->flags & A_DROPPED) {
        deferred_value_release(v);
        return;
    }
    if (st->target != st->self) {
        /* After a captured cancel self waits on target: self must live
         * until target's chain has handed it the outcome (the core may
         * run that chain later, holding target only).  An entry after
         * self's continue entry holds it that long. */
        deferred_ref(st->self);
        if (deferred__add_both_owned(st->target, hold_fn, &st->hold) < 0)
            deferred_unref(st->self); /* not reached: target has room */
    }
    if (deferred_value_is_failure(v))
        deferred_errback(st->target, deferred_value_take_failure(v));
    else
        deferred_callback(st->target, v);
}

/* Call the body until it waits or ends. */
static void step(struct deferred__async *st)
{
    deferred_t *self = st->self;

    deferred_ref(self);
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
        finish(st);
        break;
    }
    st->flags &= ~A_RUNNING;
    deferred_unref(self);
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
static void drive(struct deferred__async *st)
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
    deferred_value_release(st->got);
    st->got = v;
    drive(st);
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
        deferred_unref(self);
        return;
    }
    st->awaited = NULL;
    st->flags &= ~A_WAIT_PAIR;
    st->flags |= A_DROPPED;
    drive(st);
    deferred_unref(self);
}

/* What an await gave (st->got) goes to *out, or, a failure and not
 * try_, becomes the outcome; or a dropped coroutine unwinds. */
static int deliver(deferred_async_t *co, struct deferred__async *st, deferred_value_t *out,
                   int try_, const char *file, int line)
{
    deferred_value_t v = st->got;

    st->got = deferred_value_none();
    if (DEFERRED_UNLIKELY(st->flags & A_DROPPED) && !co->finally_) {
        deferred_value_release(v);
        unwind(co);
        return DEFERRED_ASYNC_AGAIN_;
    }
    if (DEFERRED_UNLIKELY(deferred_value_is_failure(v)) && !try_) {
        add_frame(st, deferred_value_get_failure(v), "await", file, line);
        deferred_value_release(st->outcome);
        st->outcome = v;
        unwind(co);
        return DEFERRED_ASYNC_AGAIN_;
    }
    *out = v;
    return DEFERRED_ASYNC_DONE_;
}

/* Everything but the common case of deferred_async_await(). */
static DEFERRED_NOINLINE int await_slow(deferred_async_t *co, deferred_t *d,
                                        deferred_value_t *out, int try_,
                                        const char *file, int line)
{
    struct deferred__async *st;
    deferred_value_t v;

    if (DEFERRED_UNLIKELY(!co || !co->state_ || !out)) {
        deferred_unref(d);
        return -EINVAL;
    }
    st = co->state_;
    if (DEFERRED_LIKELY(d != NULL) && !(st->flags & A_DROPPED) &&
        deferred__take_result(d, &v)) {
        st->got = v;
        return deliver(co, st, out, try_, file, line);
    }
    if (DEFERRED_UNLIKELY(!d)) {
        st->got = deferred_value_deferred(NULL); /* errno's failure */
        return deliver(co, st, out, try_, file, line);
    }
    if (DEFERRED_UNLIKELY(st->flags & A_DROPPED)) {
        deferred_unref(d);
        st->got = deferred_value_failure(cancelled_failure("await in a dropped coroutine"));
        return deliver(co, st, out, try_, file, line);
    }
    if (DEFERRED_UNLIKELY(deferred_is_multi(d))) {
        deferred_t *end = deferred_multi_when_finished(d);

        deferred_unref(d);
        if (deferred__take_result(end, &st->got))
            return deliver(co, st, out, try_, file, line);
        d = end;
    }
    if (deferred__add_both_owned(d, resume_fn, &st->owned) < 0) {
        deferred_unref(d);
        st->got = deferred_value_failure(deferred_failure_new_at(
            NULL, 0, DEFERRED_DOMAIN_LIBRARY, ENOMEM,
            "out of memory while awaiting a deferred"));
        return deliver(co, st, out, try_, file, line);
    }
    deferred_ref(st->self); /* the pair's */
    st->awaited = d;
    st->flags |= A_WAIT_PAIR;
    co->line = line;
    if (DEFERRED_UNLIKELY(st->flags & A_CANCEL)) {
        st->flags &= ~A_CANCEL;
        deferred_cancel(d);
    }
    /* The caller's reference: d lives as long as its other holders keep
     * it (freed now, the pair's dispose drops the coroutine). */
    deferred_unref(d);
    return DEFERRED_ASYNC_SUSPEND_;
}

/* The await's failure that d had already: the outcome, or try_'s. */
static DEFERRED_NOINLINE int await_failed(deferred_async_t *co, deferred_value_t *out,
                                          int try_, const char *file, int line)
{
    co->state_->got = *out;
    *out = deferred_value_none();
    return deliver(co, co->state_, out, try_, file, line);
}

int deferred_async_await(deferred_async_t *co, deferred_t *d, deferred_value_t *out,
                         int try_, const char *file, int line)
{
    /* The common case: d has its result, a value (or try_), and the body
     * goes on at once: one call into the core, then tail calls only. */
    if (DEFERRED_LIKELY(co && co->state_ && out && d && !(co->state_->flags & A_DROPPED)) &&
        deferred__take_result(d, out)) {
        if (DEFERRED_LIKELY(out->release != deferred__release_failure) || try_)
            return DEFERRED_ASYNC_DONE_;
        return await_failed(co, out, try_, file, line);
    }
    return await_slow(co, d, out, try_, file, line);
}

int deferred_async_resume(deferred_async_t *co, deferred_value_t *out, int try_,
                          const char *file, int line)
{
    if (!co || !co->state_ || !out)
        return -EINVAL;
    return deliver(co, co->state_, out, try_, file, line);
}

int deferred_async_return(deferred_async_t *co, deferred_value_t v)
{
    struct deferred__async *st = co ? co->state_ : NULL;

    if (!st) {
        deferred_value_release(v);
        return -EINVAL;
    }
    if (DEFERRED_UNLIKELY(deferred_value_is_deferred(v))) {
        deferred_value_release(v);
        v = deferred_value_failure(deferred_failure_new_at(
            NULL, 0, DEFERRED_DOMAIN_LIBRARY, EINVAL,
            "async %s returned a deferred (await it, then return its value)", st->name));
    }
    deferred_value_release(st->outcome);
    st->outcome = v;
    unwind(co);
    return 0;
}

/* ---- cancel ------------------------------------------------------------ */

/* The marker a cancel fires the target with; its release (the deferred
 * freed before its trap ran) lets go of the deferred made for the trap. */
static void marker_release(void *ptr)
{
    struct deferred__async *st = ptr;

    deferred_unref(st->rearm);
    st->rearm = NULL;
}

/* Every target's first callback: the marker becomes a wait on rearm. */
static deferred_value_t trap_fn(deferred_value_t v, void *arg)
{
    struct deferred__async *st = arg;
    deferred_t *next;

    if (DEFERRED_LIKELY(v.release != marker_release))
        return v;
    next = st->rearm;
    st->rearm = NULL;
    return deferred_value_deferred(next);
}

static void cancel_rearmed(deferred_t *d, void *arg);

static void cancel_common(struct deferred__async *st, deferred_t *target)
{
    deferred_t *next;

    if (st->flags & (A_DONE | A_DROPPED) || target != st->target)
        return; /* the core fails target with ECANCELED */
    /* Keep target from failing: it waits on next, which the end fires. */
    next = deferred_new_cancellable(cancel_rearmed, st, NULL);
    if (next && st->rearm == NULL && deferred_add_callback(next, trap_fn, st) == 0) {
        st->rearm = next;
        st->target = next;
        deferred_callback(target, deferred_value_make(st, marker_release));
    } else {
        /* No memory: target fails with ECANCELED now; the end finds it
         * fired and its outcome is released. */
        deferred_unref(next);
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
    st->owned.dispose = pair_dispose;
    st->hold.dispose = hold_dispose;
    st->body = body;
    st->frame = (char *)st + STATE_SIZE;
    st->name = name ? name : "async function";
    st->self = d;
    st->target = d;
    st->got = deferred_value_none();
    st->outcome = deferred_value_none();
    co = st->frame;
    co->state_ = st;
    /* First in the chain, before the caller can add anything; a pending
     * deferred's first entry needs no allocation. */
    deferred_add_callback(d, trap_fn, st);
    return st->frame;
}

static struct deferred__async *unstarted(void *frame)
{
    deferred_async_t *co = frame;

    if (!co || !co->state_ || (co->state_->flags & (A_STARTED | A_CONSUMER)))
        return NULL;
    return co->state_;
}

deferred_t *deferred_async_start(void *frame)
{
    struct deferred__async *st = unstarted(frame);

    if (!st) {
        errno = EINVAL;
        return NULL;
    }
    st->flags |= A_STARTED;
    /* The reference deferred_async_new() made is the caller's now. */
    drive(st);
    return st->self;
}

void deferred_async_discard(void *frame)
{
    struct deferred__async *st = unstarted(frame);

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

/* ---- streams ------------------------------------------------------------ */

static void link_unref(struct deferred__async_link *l)
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

    if (!st || !l->waiting)
        return;
    l->waiting = false;
    st->waiting = NULL;
    st->flags &= ~A_WAIT_ITER;
    drive(st);
}

static deferred_failure_t *link_start(deferred_stage_t *self, deferred_stage_t *from,
                                      deferred_value_t tag, deferred_stage_t **sub)
{
    struct deferred__async_link *l = deferred_stage_data(self);

    (void)from;
    (void)sub;
    if (l->consumer && deferred_value_is_none(tag) && l->st &&
        !(l->st->flags & A_STARTED)) {
        l->st->flags |= A_STARTED;
        drive(l->st);
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
        iter_detach(l);
    }
    link_unref(l);
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
static void iter_detach(struct deferred__async_link *l)
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
    link_unref(l);
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
        link_unref(l); /* its destroy dropped the stage's reference */
        deferred_stage_free(producer);
        goto nomem;
    }
    l->stage = consumer;
    p = deferred_process_new(0);
    rc = p ? deferred_process_add(p, producer) : (deferred_stage_free(producer), -ENOMEM);
    if (rc < 0) {
        deferred_stage_free(consumer);
        link_unref(l);
        deferred_process_unref(p);
        if (rc == -ENOMEM)
            goto nomem;
        it->done_ = 1;
        return rc;
    }
    if ((rc = deferred_process_add(p, consumer)) < 0) {
        link_unref(l);
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
        iter_detach(it->link_);
}

int deferred_async_next(deferred_async_t *co, deferred_async_iter_t *it,
                        deferred_value_t *item, const char *file, int line)
{
    struct deferred__async *st = co ? co->state_ : NULL;
    struct deferred__async_link *l;

    if (!st || !it || !item)
        return -EINVAL;
    if ((st->flags & A_DROPPED) && !co->finally_) {
        unwind(co);
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
            add_frame(st, f, "async-for", file, line);
            deferred_value_release(st->outcome);
            st->outcome = deferred_value_failure(f);
            unwind(co);
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
        *item = l->item;
        l->item = deferred_value_none();
        l->has = false;
        it->done_ = 0;
        return 0;
    }
    if (l->ended) {
        deferred_value_t v = l->outcome;

        l->outcome = deferred_value_none();
        iter_detach(l);
        if (deferred_value_is_failure(v)) {
            add_frame(st, deferred_value_get_failure(v), "async-for", file, line);
            deferred_value_release(st->outcome);
            st->outcome = v;
            unwind(co);
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
    struct deferred__async *st = unstarted(frame);
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
