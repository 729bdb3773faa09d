/*
 * loop-time.c: time, timeouts, fd readiness and cross-thread firing on any
 * loop (deferred/loop.h); the thread pool is in loop-pool.c and the line
 * producer in loop-lines.c.
 *
 * Every watcher lives inside a library struct.  The design decision to
 * know: a watcher never holds a reference on the deferred it fires.  The
 * deferred owns the struct instead (as its canceller's or callback's
 * argument, with a destroy function), and freeing the deferred stops the
 * watcher.  So a watcher never keeps a deferred alive that nobody wants,
 * its callback always finds its deferred alive, and a cancelled or freed
 * deferred leaves nothing for the loop to wait for.
 *
 * Cross-thread firing goes through the loop's mailbox (loop.c: one
 * wakeup, a mutex-protected FIFO of messages allocated on the loop
 * thread): firing from another thread never allocates.
 */
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/deferred-private.h"
#include "loop-private.h"

/* A constructor's answer to an error found before it returns
 * (deferred/common.h): NULL with errno set to code.  The message is
 * formatted for nobody (kept so each call site says what it checks). */
static deferred_t *failed(int code, const char *fmt, ...) DEFERRED_PRINTF(2, 3);
static deferred_t *failed(int code, const char *fmt, ...)
{
    (void)fmt;
    errno = code;
    return NULL;
}

/* ---- later ------------------------------------------------------------- */

struct later {
    struct deferred_loop_timer timer;
    deferred_t *d; /* borrowed: d owns this struct */
    deferred__loop_item_t dbg;
};

static void later_describe(deferred_dump_t *w, deferred__loop_item_t *it)
{
    struct later *t = DEFERRED_LOOP_ITEM_OF(it, struct later, dbg);
    char buf[32];

    deferred_dump_node(w, "timer", "later");
    snprintf(buf, sizeof(buf), "%.3f", deferred_loop_timer_remaining(&t->timer));
    deferred_dump_str(w, "remaining_s", t->timer.active ? buf : NULL);
    deferred_dump_deferred(w, "fires", t->d);
}

static void later_fired(void *arg)
{
    struct later *t = arg;

    /* A one-shot timer is stopped already.  d is alive: freeing it would
     * have stopped the timer.  Its chain may free it (and t) inside. */
    deferred_callback(t->d, deferred_value_none());
}

static void later_cancel(deferred_t *d, void *arg)
{
    struct later *t = arg;

    (void)d;
    deferred_loop_timer_stop(&t->timer);
}

static void later_destroy(void *arg)
{
    struct later *t = arg;

    deferred__loop_untrack(&t->dbg); /* before the fini drops the loop */
    deferred__timer_fini(&t->timer);
    deferred_free(t);
}

deferred_t *deferred_loop_later(deferred_loop_t *loop, double seconds)
{
    struct later *t;
    deferred_t *d;

    if (!loop)
        return failed(EINVAL, "deferred_loop_later: NULL loop");
    if (deferred__bad_delay(seconds))
        return failed(EINVAL, "deferred_loop_later: invalid delay %g s "
                                   "(must be finite and >= 0)", seconds);
    t = deferred_malloc(sizeof *t);
    if (!t)
        return NULL;
    if (deferred__timer_init(&t->timer, loop, later_fired, t) < 0) {
        deferred_free(t);
        errno = ENOMEM;
        return NULL;
    }
    t->dbg.loop = NULL;
    d = deferred_new_cancellable(later_cancel, t, later_destroy);
    if (!d)
        return NULL; /* t freed by later_destroy; errno ENOMEM */
    t->d = d;
    deferred__loop_track(loop, &t->dbg, later_describe);
    /* The delay counts from now (the adapter refreshes a cached time). */
    deferred_loop_timer_start(&t->timer, seconds);
    return d;
}

/* ---- timeouts ---------------------------------------------------------- */

struct timeout {
    struct deferred_loop_timer timer;
    deferred_t *d; /* borrowed: d owns this struct through its chain */
    double seconds;
    bool timed_out;
    deferred_loop_timeout_fn hook;
    void *arg;
    deferred_destroy_fn destroy;
    deferred__loop_item_t dbg;
};

static void timeout_describe(deferred_dump_t *w, deferred__loop_item_t *it)
{
    struct timeout *t = DEFERRED_LOOP_ITEM_OF(it, struct timeout, dbg);
    char buf[32];

    deferred_dump_node(w, "timeout", NULL);
    snprintf(buf, sizeof(buf), "%g", t->seconds);
    deferred_dump_str(w, "after_s", buf);
    snprintf(buf, sizeof(buf), "%.3f", deferred_loop_timer_remaining(&t->timer));
    deferred_dump_str(w, "remaining_s", t->timer.active ? buf : NULL);
    deferred_dump_deferred(w, "on", t->d);
}

static void timeout_fired(void *arg)
{
    struct timeout *t = arg;

    t->timed_out = true;
    /* May run the chain, which reaches timeout_outcome() and frees t. */
    deferred_cancel(t->d);
}

/*
 * Whether f is what a cancel leaves: ECANCELED itself, or a failure that
 * has one among its causes or, for a failure group, among its members'
 * (a gather's first-error wrapping ECANCELED, a race's group of them, a
 * process's or a stage's wrapper).  Iterative: the cause chain in a loop,
 * the groups through a small stack of fixed depth (groups nested deeper
 * than that are not searched).
 */
#define CANCEL_SEARCH_DEPTH 16

static bool from_cancel(const deferred_failure_t *f)
{
    struct {
        const deferred_failure_t *group;
        size_t next;
    } stack[CANCEL_SEARCH_DEPTH];
    size_t depth = 0;

    for (;;) {
        for (; f; f = deferred_failure_cause(f)) {
            if (deferred_failure_is(f, DEFERRED_DOMAIN_ANY, ECANCELED))
                return true;
            if (deferred_failure_group_size(f) > 0 && depth < CANCEL_SEARCH_DEPTH) {
                stack[depth].group = f;
                stack[depth].next = 0;
                depth++;
                break;
            }
        }
        f = NULL;
        while (!f && depth > 0) {
            size_t i = stack[depth - 1].next++;

            if (i >= deferred_failure_group_size(stack[depth - 1].group))
                depth--;
            else
                f = deferred_failure_group_get(stack[depth - 1].group, i);
        }
        if (!f)
            return false;
    }
}

/*
 * The callback pair added by add_timeout, both halves in one function
 * (Twisted adds convertCancelled and cancelTimeout, one after the other).
 * It stops the timer whatever the result, and converts only when the
 * timer fired.
 */
static deferred_value_t timeout_outcome(deferred_value_t v, void *arg)
{
    struct timeout *t = arg;
    deferred_failure_t *f;

    deferred_loop_timer_stop(&t->timer);
    if (!t->timed_out)
        return v;
    if (t->hook)
        return t->hook(v, t->seconds, t->arg);
    f = deferred_value_get_failure(v);
    if (!f || !from_cancel(f))
        return v;
    f = deferred_value_take_failure(v);
    return deferred_value_failure(deferred_failure_wrap(
        f, DEFERRED_DOMAIN_LIBRARY, ETIMEDOUT, "timed out after %g s", t->seconds));
}

static void timeout_destroy(void *arg)
{
    struct timeout *t = arg;

    deferred__loop_untrack(&t->dbg); /* before the fini drops the loop */
    deferred__timer_fini(&t->timer);
    if (t->destroy)
        t->destroy(t->arg);
    deferred_free(t);
}

int deferred_loop_add_timeout_full(deferred_t *d, deferred_loop_t *loop, double seconds,
                                   deferred_loop_timeout_fn on_timeout, void *arg,
                                   deferred_destroy_fn destroy)
{
    struct timeout *t;

    if (!d || !loop || deferred_is_multi(d) || deferred__bad_delay(seconds)) {
        if (destroy)
            destroy(arg);
        return -EINVAL;
    }
    t = deferred_malloc(sizeof *t);
    if (!t || deferred__timer_init(&t->timer, loop, timeout_fired, t) < 0) {
        deferred_free(t);
        if (destroy)
            destroy(arg);
        return -ENOMEM;
    }
    t->d = d;
    t->seconds = seconds;
    t->timed_out = false;
    t->hook = on_timeout;
    t->arg = arg;
    t->destroy = destroy;
    deferred__loop_track(loop, &t->dbg, timeout_describe);
    /* Started first: if d already has a result, adding the pair runs it,
     * which stops the timer and frees t before the add returns; on error
     * the add has freed t (stopping the timer) too.  t is not touched
     * after it.  The delay counts from now. */
    deferred_loop_timer_start(&t->timer, seconds);
    return deferred_add_both_full(d, timeout_outcome, t, timeout_destroy);
}

int deferred_loop_add_timeout(deferred_t *d, deferred_loop_t *loop, double seconds)
{
    return deferred_loop_add_timeout_full(d, loop, seconds, NULL, NULL, NULL);
}

/* ---- fd readiness ------------------------------------------------------ */

struct io_wait {
    struct deferred_loop_io io;
    int want; /* DEFERRED_LOOP_READ or _WRITE */
    deferred_t *d; /* borrowed: d owns this struct */
    deferred__loop_item_t dbg;
};

static void io_wait_describe(deferred_dump_t *w, deferred__loop_item_t *it)
{
    struct io_wait *t = DEFERRED_LOOP_ITEM_OF(it, struct io_wait, dbg);

    deferred_dump_node(w, "io", t->want == DEFERRED_LOOP_READ ? "readable" : "writable");
    deferred_dump_int(w, "fd", t->io.fd);
    deferred_dump_deferred(w, "fires", t->d);
}

static void io_wait_ready(void *arg, int revents)
{
    struct io_wait *t = arg;

    (void)revents;
    deferred_loop_io_set(&t->io, 0);
    deferred_callback(t->d, deferred_value_int(t->io.fd));
}

static void io_wait_cancel(deferred_t *d, void *arg)
{
    struct io_wait *t = arg;

    (void)d;
    deferred_loop_io_set(&t->io, 0);
}

static void io_wait_destroy(void *arg)
{
    struct io_wait *t = arg;

    deferred__loop_untrack(&t->dbg); /* before the fini drops the loop */
    deferred__io_fini(&t->io);
    deferred_free(t);
}

static deferred_t *io_wait_new(deferred_loop_t *loop, int fd, int events,
                               const char *what)
{
    struct io_wait *t;
    deferred_t *d;
    int rc;

    if (!loop)
        return failed(EINVAL, "%s: NULL loop", what);
    if (fd < 0)
        return failed(EINVAL, "%s: invalid fd %d", what, fd);
    if (fcntl(fd, F_GETFD) == -1)
        return NULL; /* errno EBADF */
    t = deferred_malloc(sizeof *t);
    if (!t)
        return NULL;
    rc = deferred__io_init(&t->io, loop, fd, io_wait_ready, t);
    if (rc < 0) {
        deferred_free(t);
        errno = -rc;
        return NULL;
    }
    t->want = events;
    t->dbg.loop = NULL;
    d = deferred_new_cancellable(io_wait_cancel, t, io_wait_destroy);
    if (!d)
        return NULL;
    t->d = d;
    deferred__loop_track(loop, &t->dbg, io_wait_describe);
    deferred_loop_io_set(&t->io, events);
    return d;
}

deferred_t *deferred_loop_readable(deferred_loop_t *loop, int fd)
{
    return io_wait_new(loop, fd, DEFERRED_LOOP_READ, "deferred_loop_readable");
}

deferred_t *deferred_loop_writable(deferred_loop_t *loop, int fd)
{
    return io_wait_new(loop, fd, DEFERRED_LOOP_WRITE, "deferred_loop_writable");
}

/* ---- remote handles ---------------------------------------------------- */

enum remote_kind { REMOTE_VALUE, REMOTE_DROP };

/* What the firing thread writes (msg.next, v, kind) and reads (loop)
 * comes first, in the handle's first 64 bytes, so that a firing moves one
 * cache line between the threads. */
struct deferred_remote {
    deferred_loop_msg_t msg; /* first: the message is the handle */
    deferred_value_t v;
    deferred_loop_t *loop;   /* expecting this message */
    int kind;
    deferred_t *d; /* a reference */
    deferred_value_t refused; /* a deferred given to callback: released here */
    struct deferred__remote_chunk *chunk; /* the slab's chunk it was cut from */
    deferred__loop_item_t dbg;
};

/*
 * The remotes' slab: a loop cuts its handles, in order, from a chunk of
 * REMOTE_CHUNK of them, one allocation for REMOTE_CHUNK handles (malloc
 * and free cost about ten times what the rest of a handle's life does).
 * A chunk counts its live handles; the loop's current chunk (loop->rchunk)
 * starts over when its last handle is freed, a full one is freed with its
 * last handle, and a new one is allocated when the current one is full
 * (the only way making a remote can fail).  So a loop holds at most one
 * chunk beyond those its live handles are in, and a chunk a single live
 * handle of which is left stays until that one is delivered.  Loop thread
 * only: handles are made and freed there.  A freed handle is poisoned for
 * AddressSanitizer, as freed memory would be; under valgrind each handle
 * is a block of its own for memcheck.
 */
#define REMOTE_CHUNK 128

struct deferred__remote_chunk {
    unsigned used; /* handles cut */
    unsigned live; /* of those, not yet freed */
    bool marked;   /* its handles are memcheck blocks */
    deferred_remote_t slot[REMOTE_CHUNK];
};

#if defined(__SANITIZE_ADDRESS__)
#define REMOTE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define REMOTE_ASAN 1
#endif
#endif
#ifdef REMOTE_ASAN
#include <sanitizer/asan_interface.h>
#endif
#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#define REMOTE_VALGRIND 1
#endif
#endif

#ifdef REMOTE_VALGRIND
/* Handles are marked as blocks for memcheck under valgrind, unless
 * DEFERRED_BLOCK_CACHE is set (bench/icount.sh counts what a program
 * runs without valgrind, as the core's block cache does): 1 or 0 once
 * known, -1 before. */
static int remote_marking = -1;

static bool remote_marked(void)
{
    int m = __atomic_load_n(&remote_marking, __ATOMIC_RELAXED);

    if (m < 0) {
        m = RUNNING_ON_VALGRIND && !getenv("DEFERRED_BLOCK_CACHE");
        __atomic_store_n(&remote_marking, m, __ATOMIC_RELAXED);
    }
    return m;
}
#endif

static deferred_remote_t *remote_alloc(deferred_loop_t *loop)
{
    struct deferred__remote_chunk *c = loop->rchunk;
    deferred_remote_t *r;

    if (!c || c->used == REMOTE_CHUNK) {
        /* c, if full, has a live handle (else it would have started
         * over): its last one frees it. */
        c = deferred_malloc(sizeof *c);
        if (!c)
            return NULL;
        c->used = c->live = 0;
        c->marked = false;
#ifdef REMOTE_VALGRIND
        c->marked = remote_marked();
#endif
#ifdef REMOTE_ASAN
        ASAN_POISON_MEMORY_REGION(c->slot, sizeof c->slot);
#endif
        loop->rchunk = c;
    }
    r = &c->slot[c->used++];
    c->live++;
#ifdef REMOTE_ASAN
    ASAN_UNPOISON_MEMORY_REGION(r, sizeof *r);
#endif
#ifdef REMOTE_VALGRIND
    if (c->marked)
        VALGRIND_MALLOCLIKE_BLOCK(r, sizeof *r, 0, 0);
#endif
    r->chunk = c;
    return r;
}

static void remote_free(deferred_loop_t *loop, deferred_remote_t *r)
{
    struct deferred__remote_chunk *c = r->chunk;

#ifdef REMOTE_VALGRIND
    if (c->marked)
        VALGRIND_FREELIKE_BLOCK(r, 0);
#endif
#ifdef REMOTE_ASAN
    ASAN_POISON_MEMORY_REGION(r, sizeof *r);
#endif
    if (--c->live > 0)
        return;
    if (c == loop->rchunk)
        c->used = 0; /* start over */
    else
        deferred_free(c);
}

static void remote_describe(deferred_dump_t *w, deferred__loop_item_t *it)
{
    deferred_remote_t *r = DEFERRED_LOOP_ITEM_OF(it, deferred_remote_t, dbg);

    deferred_dump_node(w, "remote", NULL);
    deferred_dump_deferred(w, "fires", r->d);
}

static void remote_deliver(deferred_loop_msg_t *m)
{
    deferred_remote_t *r = (deferred_remote_t *)m;
    deferred_loop_t *loop = r->loop;
    deferred_t *d = r->d;

    if (r->kind == REMOTE_DROP)
        deferred_cancel(d);
    else if (deferred_has_fired(d))
        deferred_value_release(r->v); /* cancelled or fired meanwhile */
    else
        deferred_callback(d, r->v);
    /* A deferred belongs to its own thread's loop: it is let go here, on
     * the loop thread, like any value that crossed. */
    if (r->refused.release)
        deferred_value_release(r->refused);
    deferred__loop_untrack(&r->dbg);
    remote_free(loop, r);
    deferred_unref(d);
    deferred__loop_done(loop);
}

deferred_remote_t *deferred_loop_remote_new(deferred_loop_t *loop, deferred_t *d)
{
    deferred_remote_t *r;

    /* A remote fires d once: a multi-fire deferred has no single firing. */
    if (!loop || !d || deferred_is_multi(d)) {
        errno = EINVAL;
        return NULL;
    }
    r = remote_alloc(loop);
    if (!r) {
        errno = ENOMEM;
        return NULL;
    }
    deferred__loop_expect(loop);
    r->loop = loop;
    r->msg.deliver = remote_deliver;
    r->d = deferred_ref(d);
    /* v and kind are set by the firing call. */
    r->refused = deferred_value_none();
    deferred__loop_track(loop, &r->dbg, remote_describe);
    return r;
}

/* deferred_remote_callback() with a deferred v: see its comment. */
static __attribute__((noinline)) int remote_refuse(deferred_remote_t *r, deferred_value_t v)
{
    /* A deferred cannot fire r's deferred (nor be touched on this
     * thread): r's deferred fails instead, so that it still fires, and v
     * is released on the loop thread.  The failure is the one allocation
     * a remote may make; without memory it is the static ENOMEM
     * failure. */
    r->refused = v;
    r->v = deferred_value_failure(deferred_failure_new_at(
        NULL, 0, DEFERRED_DOMAIN_LIBRARY, EINVAL,
        "deferred_remote_callback: a remote fires with a value or a "
        "failure, not a deferred"));
    r->kind = REMOTE_VALUE;
    deferred__loop_post(r->loop, &r->msg);
    return -EINVAL;
}

int deferred_remote_callback(deferred_remote_t *r, deferred_value_t v)
{
    if (DEFERRED_UNLIKELY(!r)) {
        deferred_value_release(v);
        return -EINVAL;
    }
    /* deferred_value_is_deferred(v), without the call: this is the path
     * of every firing. */
    if (DEFERRED_UNLIKELY(v.release == deferred__release_deferred))
        return remote_refuse(r, v);
    r->v = v;
    r->kind = REMOTE_VALUE;
    deferred__loop_post(r->loop, &r->msg);
    return 0;
}

int deferred_remote_errback(deferred_remote_t *r, deferred_failure_t *f)
{
    if (!f)
        f = deferred_failure_new(DEFERRED_DOMAIN_LIBRARY, EINVAL,
                                 "deferred_remote_errback: NULL failure");
    return deferred_remote_callback(r, deferred_value_failure(f));
}

void deferred_remote_drop(deferred_remote_t *r)
{
    if (!r)
        return;
    r->kind = REMOTE_DROP;
    deferred__loop_post(r->loop, &r->msg);
}
