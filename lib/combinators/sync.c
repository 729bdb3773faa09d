/*
 * sync.c: the deferred lock, semaphore and queue.
 *
 * All three serve FIFO waiters: a waiting acquire or get is an unfired
 * deferred, linked in an intrusive list through a small "waiter" block that
 * is the deferred's canceller argument (freed with the deferred).
 *
 * The design decision to know: the list holds a reference on each deferred
 * linked in it, as Twisted's waiting list does.  A linked deferred is
 * therefore always alive, so serving the head is safe whatever user code
 * (a destroy function, a release function) runs meanwhile; the way out of
 * the list is to be served, to be cancelled (the canceller unlinks and
 * drops the list's reference), or the owner's death (the last reference
 * to the semaphore or queue fails the waiters still linked with
 * ECANCELED).  Waiters hold no reference on their owner, so there is no
 * cycle: a semaphore run holds only a weak reference on its semaphore
 * (the memory, not the semaphore's life), so a run that waits on an
 * acquire of its own semaphore is freed with it.  A waiter fired by someone else than its owner (its
 * caller, say) leaves the list as it fires: the first entry of its chain
 * is the owner's and unlinks it.
 */
#include <errno.h>
#include <string.h>

#include "core/deferred-private.h"
#include "core/ring.h"
#include "deferred/combinators.h"

/* ---- waiters ----------------------------------------------------------- */

struct waitq {
    struct waiter *head, *tail;
    size_t n;
};

struct waiter {
    struct waiter *prev, *next;
    struct waitq *q;  /* the list it is linked in; NULL once unlinked */
    deferred_t *d;    /* weak: the deferred owns the waiter */
    bool *granted;    /* set when served (a semaphore run's flag), or NULL */
};

static void waiter_unlink(struct waiter *w)
{
    struct waitq *q = w->q;

    if (!q)
        return;
    if (w->prev)
        w->prev->next = w->next;
    else
        q->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        q->tail = w->prev;
    q->n--;
    w->q = NULL;
    w->prev = w->next = NULL;
}

/* The canceller of a waiting deferred: leave the list and drop its
 * reference (deferred_cancel() holds one of its own meanwhile). */
static void waiter_cancel(deferred_t *d, void *arg)
{
    struct waiter *w = arg;

    if (w->q) {
        waiter_unlink(w);
        deferred_unref(d);
    }
}

static void waiter_destroy(void *arg)
{
    deferred__free(arg);
}

/* The first entry of a waiter's chain: fired while still linked, it was
 * not served by its owner, so it leaves the list (with the list's
 * reference: the runner holds one of its own). */
static deferred_value_t waiter_fired(deferred_value_t v, void *arg)
{
    struct waiter *w = arg;

    if (w->q) {
        waiter_unlink(w);
        deferred_unref(w->d);
    }
    return v;
}

/* A new unfired deferred linked at the tail of q, with two references: the
 * caller's and the list's.  NULL on allocation failure (nothing linked).
 * *wout (may be NULL) receives the waiter. */
static deferred_t *waiter_new(struct waitq *q, bool *granted,
                              struct waiter **wout)
{
    struct waiter *w = deferred__malloc(sizeof(*w));
    deferred_t *d;

    if (!w)
        return NULL;
    w->prev = w->next = NULL;
    w->q = NULL;
    w->granted = granted;
    d = deferred_new_cancellable(waiter_cancel, w, waiter_destroy);
    if (!d)
        return NULL; /* waiter_destroy freed w */
    if (deferred_add_both(d, waiter_fired, w) < 0) {
        deferred_unref(d);
        return NULL;
    }
    w->d = deferred_ref(d);
    w->q = q;
    w->prev = q->tail;
    if (q->tail)
        q->tail->next = w;
    else
        q->head = w;
    q->tail = w;
    q->n++;
    if (wout)
        *wout = w;
    return d;
}

/* Unlink the first waiter and return its deferred with the list's
 * reference (the caller fires it, then drops it), or NULL when q is
 * empty. */
static deferred_t *waiter_pop(struct waitq *q, bool **granted)
{
    struct waiter *w = q->head;

    if (!w)
        return NULL;
    waiter_unlink(w);
    if (granted)
        *granted = w->granted;
    return w->d;
}

/* Fail every waiter of q with ECANCELED: their owner is going away. */
static void waiters_cancel_all(struct waitq *q, const char *what)
{
    deferred_t *d;

    while ((d = waiter_pop(q, NULL))) {
        deferred_errback(d, deferred_failure_new(DEFERRED_DOMAIN_LIBRARY,
                                                 ECANCELED, "%s freed", what));
        deferred_unref(d);
    }
}

/* ---- semaphore and lock ------------------------------------------------ */

struct deferred_semaphore {
    size_t refs;
    size_t weak;   /* runs that may still release: the memory stays */
    size_t tokens; /* free now */
    size_t limit;
    bool dying;
    struct waitq waiters;
};

/* A lock is a semaphore of one token; the cast between them is exact. */
struct deferred_lock {
    struct deferred_semaphore sem;
};

deferred_semaphore_t *deferred_semaphore_new(size_t tokens)
{
    deferred_semaphore_t *s;

    if (tokens == 0) {
        errno = EINVAL;
        return NULL;
    }
    s = deferred__malloc(sizeof(*s));
    if (!s) {
        errno = ENOMEM;
        return NULL;
    }
    memset(s, 0, sizeof(*s));
    s->refs = 1;
    s->tokens = tokens;
    s->limit = tokens;
    return s;
}

deferred_semaphore_t *deferred_semaphore_ref(deferred_semaphore_t *s)
{
    if (s)
        s->refs++;
    return s;
}

void deferred_semaphore_unref(deferred_semaphore_t *s)
{
    if (!s || s->dying || --s->refs)
        return;
    s->dying = true;
    s->weak++; /* a run freed by the cancels below keeps s meanwhile */
    waiters_cancel_all(&s->waiters, "semaphore");
    if (--s->weak == 0)
        deferred__free(s);
}

/* The weak reference of a run: the semaphore's memory, not its life. */
static void semaphore_weak_unref(deferred_semaphore_t *s)
{
    if (--s->weak == 0 && s->dying)
        deferred__free(s);
}

/* Acquire.  *wout (may be NULL) receives the waiter when it waits, NULL
 * when the token was free. */
static deferred_t *acquire(deferred_semaphore_t *s, struct waiter **wout)
{
    deferred_t *d;

    if (!s || s->dying) {
        errno = EINVAL;
        return NULL;
    }
    if (wout)
        *wout = NULL;
    if (s->tokens == 0) {
        d = waiter_new(&s->waiters, NULL, wout);
        if (!d)
            errno = ENOMEM;
        return d;
    }
    d = deferred_new();
    if (!d) {
        errno = ENOMEM;
        return NULL;
    }
    s->tokens--;
    deferred_callback(d, deferred_value_make(s, NULL));
    return d;
}

deferred_t *deferred_semaphore_acquire(deferred_semaphore_t *s)
{
    return acquire(s, NULL);
}

int deferred_semaphore_release(deferred_semaphore_t *s)
{
    deferred_t *d;
    bool *granted;

    if (!s || s->dying)
        return -EINVAL;
    if (s->tokens >= s->limit)
        return -EPERM;
    d = waiter_pop(&s->waiters, &granted);
    if (!d) {
        s->tokens++;
        return 0;
    }
    /* The token goes straight to the first waiter. */
    if (granted)
        *granted = true;
    deferred_callback(d, deferred_value_make(s, NULL));
    deferred_unref(d);
    return 0;
}

size_t deferred_semaphore_tokens(const deferred_semaphore_t *s)
{
    return s ? s->tokens : 0;
}

size_t deferred_semaphore_limit(const deferred_semaphore_t *s)
{
    return s ? s->limit : 0;
}

size_t deferred_semaphore_waiting(const deferred_semaphore_t *s)
{
    return s ? s->waiters.n : 0;
}

/*
 * A run in progress.  Shared by the pair on the acquire deferred (run_both)
 * and, when fn returns a deferred, the pair appended to it (release_both);
 * the last of them to go releases the token if it is still held.
 */
struct run_ctx {
    size_t refs;
    deferred_semaphore_t *s; /* a weak reference (see the file comment) */
    deferred_fn fn;
    void *arg;
    deferred_destroy_fn destroy;
    bool acquired; /* the token is this run's */
    bool released; /* and was given back */
};

static void run_release(struct run_ctx *ctx)
{
    if (ctx->acquired && !ctx->released) {
        ctx->released = true;
        deferred_semaphore_release(ctx->s);
    }
}

static void run_ctx_unref(void *arg)
{
    struct run_ctx *ctx = arg;

    if (--ctx->refs)
        return;
    run_release(ctx);
    if (ctx->destroy)
        ctx->destroy(ctx->arg);
    semaphore_weak_unref(ctx->s);
    deferred__free(ctx);
}

static deferred_value_t release_both(deferred_value_t v, void *arg)
{
    run_release(arg);
    return v;
}

static deferred_value_t run_both(deferred_value_t v, void *arg)
{
    struct run_ctx *ctx = arg;
    deferred_value_t r;
    deferred_t *inner;

    if (deferred_value_is_failure(v) || !ctx->acquired)
        return v; /* the acquire was cancelled: fn never runs */
    r = ctx->fn(v, ctx->arg);
    if (!deferred_value_is_deferred(r))
        return r; /* released when this pair's reference goes, just after */
    inner = r.ptr;
    ctx->refs++;
    if (deferred_add_both_full(inner, release_both, ctx, run_ctx_unref) < 0) {
        /* The token cannot wait for inner: stop inner rather than let it
         * run unguarded. */
        deferred_cancel(inner);
        deferred_value_release(r);
        return deferred_value_failure(deferred_failure_new(
            DEFERRED_DOMAIN_LIBRARY, ENOMEM, "semaphore run: out of memory"));
    }
    return r;
}

deferred_t *deferred_semaphore_run(deferred_semaphore_t *s, deferred_fn fn,
                                   void *arg, deferred_destroy_fn destroy)
{
    struct run_ctx *ctx;
    struct waiter *w;
    deferred_t *d;

    if (!s || !fn || s->dying) {
        errno = EINVAL;
        goto out_destroy;
    }
    ctx = deferred__malloc(sizeof(*ctx));
    if (!ctx) {
        errno = ENOMEM;
        goto out_destroy;
    }
    ctx->refs = 1;
    ctx->s = s;
    s->weak++;
    ctx->fn = fn;
    ctx->arg = arg;
    ctx->destroy = destroy;
    ctx->acquired = false;
    ctx->released = false;

    d = acquire(s, &w);
    if (!d)
        goto out_free_ctx;
    /* Paused so that fn runs only once the pair is in place. */
    deferred_pause(d);
    if (deferred_add_both_full(d, run_both, ctx, run_ctx_unref) < 0) {
        /* ctx is gone (nothing marked acquired): give back the token, or
         * leave the queue. */
        if (w && w->q) {
            waiter_unlink(w);
            deferred_unref(d);
        } else {
            deferred_semaphore_release(s);
        }
        deferred_unpause(d);
        deferred_unref(d);
        errno = ENOMEM;
        return NULL;
    }
    if (w) {
        w->granted = &ctx->acquired; /* the pair keeps ctx alive */
    } else {
        ctx->acquired = true;
    }
    deferred_unpause(d);
    return d;

out_free_ctx: {
    int e = errno; /* the destroy function may change it */

    run_ctx_unref(ctx);
    errno = e;
    return NULL;
}
out_destroy:
    if (destroy) {
        int e = errno;

        destroy(arg);
        errno = e;
    }
    return NULL;
}

deferred_lock_t *deferred_lock_new(void)
{
    return (deferred_lock_t *)deferred_semaphore_new(1);
}

deferred_lock_t *deferred_lock_ref(deferred_lock_t *l)
{
    return (deferred_lock_t *)deferred_semaphore_ref(l ? &l->sem : NULL);
}

void deferred_lock_unref(deferred_lock_t *l)
{
    deferred_semaphore_unref(l ? &l->sem : NULL);
}

deferred_t *deferred_lock_acquire(deferred_lock_t *l)
{
    return acquire(l ? &l->sem : NULL, NULL);
}

int deferred_lock_release(deferred_lock_t *l)
{
    return deferred_semaphore_release(l ? &l->sem : NULL);
}

bool deferred_lock_is_locked(const deferred_lock_t *l)
{
    return l && l->sem.tokens == 0;
}

size_t deferred_lock_waiting(const deferred_lock_t *l)
{
    return l ? l->sem.waiters.n : 0;
}

deferred_t *deferred_lock_run(deferred_lock_t *l, deferred_fn fn, void *arg,
                              deferred_destroy_fn destroy)
{
    return deferred_semaphore_run(l ? &l->sem : NULL, fn, arg, destroy);
}

/* ---- queue ------------------------------------------------------------- */

struct deferred_queue {
    size_t refs;
    size_t size;    /* bound on values kept */
    size_t backlog; /* bound on gets waiting */
    bool dying;
    struct deferred__ring kept; /* the values kept, first in first out */
    struct waitq waiters;
};

deferred_queue_t *deferred_queue_new(size_t size, size_t backlog)
{
    deferred_queue_t *q = deferred__malloc(sizeof(*q));

    if (!q) {
        errno = ENOMEM;
        return NULL;
    }
    memset(q, 0, sizeof(*q));
    q->refs = 1;
    q->size = size;
    q->backlog = backlog;
    return q;
}

deferred_queue_t *deferred_queue_ref(deferred_queue_t *q)
{
    if (q)
        q->refs++;
    return q;
}

void deferred_queue_unref(deferred_queue_t *q)
{
    if (!q || q->dying || --q->refs)
        return;
    q->dying = true;
    deferred__ring_clear(&q->kept);
    waiters_cancel_all(&q->waiters, "queue");
    deferred__free(q);
}

int deferred_queue_put(deferred_queue_t *q, deferred_value_t v)
{
    deferred_t *d;
    int rc;

    if (!q || q->dying || deferred_value_is_deferred(v)) {
        rc = -EINVAL;
        goto out_release;
    }
    d = waiter_pop(&q->waiters, NULL);
    if (d) {
        deferred_callback(d, v);
        deferred_unref(d);
        return 0;
    }
    if (q->kept.len >= q->size) {
        rc = -ENOSPC;
        goto out_release;
    }
    if ((rc = deferred__ring_push(&q->kept, v)) < 0)
        goto out_release;
    return 0;

out_release:
    deferred_value_release(v);
    return rc;
}

int deferred_queue_get(deferred_queue_t *q, deferred_t **out)
{
    deferred_value_t v;
    deferred_t *d;

    if (out)
        *out = NULL;
    if (!q || !out || q->dying)
        return -EINVAL;
    if (q->kept.len) {
        d = deferred_new();
        if (!d)
            return -ENOMEM;
        v = deferred__ring_pop(&q->kept);
        deferred_callback(d, v);
        *out = d;
        return 0;
    }
    if (q->waiters.n >= q->backlog)
        return -EBUSY;
    d = waiter_new(&q->waiters, NULL, NULL);
    if (!d)
        return -ENOMEM;
    *out = d;
    return 0;
}

size_t deferred_queue_pending(const deferred_queue_t *q)
{
    return q ? q->kept.len : 0;
}

size_t deferred_queue_waiting(const deferred_queue_t *q)
{
    return q ? q->waiters.n : 0;
}
