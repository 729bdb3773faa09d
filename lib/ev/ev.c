/*
 * ev.c: the libev binding's time, timeouts, fd readiness and cross-thread
 * firing (deferred/ev.h); the thread pool is in ev-pool.c and the line
 * producer in ev-lines.c.
 *
 * Every watcher lives inside a library struct and points back to it
 * through its data field (as hiredis' adapters/libev.h does).  The design
 * decision to know: a watcher never holds a reference on the deferred it
 * fires.  The deferred owns the struct instead (as its canceller's or
 * callback's argument, with a destroy function), and freeing the deferred
 * stops the watcher.  So a watcher never keeps a deferred alive that
 * nobody wants, its callback always finds its deferred alive, and a
 * cancelled or freed deferred leaves nothing for the loop to wait for.
 *
 * Cross-thread firing goes through one mailbox per loop (ev-mailbox.c:
 * one ev_async, a mutex-protected FIFO of messages allocated on the loop
 * thread, found through a small registry): firing from another thread
 * never allocates.
 */
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "ev-mailbox.h"

deferred_t *deferred__ev_failed(int code, const char *fmt, ...)
{
    (void)fmt;
    errno = code;
    return NULL;
}

/* A delay is valid when it is finite and not negative. */
static bool bad_delay(double seconds)
{
    return !(seconds >= 0.0) || isinf(seconds);
}

/* ---- later ------------------------------------------------------------- */

struct later {
    ev_timer timer;
    struct ev_loop *loop;
    deferred_t *d; /* borrowed: d owns this struct */
    deferred__ev_item_t dbg;
};

static void later_describe(deferred_dump_t *w, deferred__ev_item_t *it)
{
    struct later *t = DEFERRED_EV_ITEM_OF(it, struct later, dbg);
    char buf[32];

    deferred_dump_node(w, "timer", "later");
    snprintf(buf, sizeof(buf), "%.3f", ev_timer_remaining(t->loop, &t->timer));
    deferred_dump_str(w, "remaining_s", ev_is_active(&t->timer) ? buf : NULL);
    deferred_dump_deferred(w, "fires", t->d);
}

static void later_fired(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct later *t = w->data;

    (void)loop;
    (void)revents;
    /* A one-shot timer is stopped already.  d is alive: freeing it would
     * have stopped the timer.  Its chain may free it (and t) inside. */
    deferred_callback(t->d, deferred_value_none());
}

static void later_cancel(deferred_t *d, void *arg)
{
    struct later *t = arg;

    (void)d;
    ev_timer_stop(t->loop, &t->timer);
}

static void later_destroy(void *arg)
{
    struct later *t = arg;

    ev_timer_stop(t->loop, &t->timer);
    deferred__ev_untrack(&t->dbg);
    deferred_free(t);
}

deferred_t *deferred_ev_later(struct ev_loop *loop, double seconds)
{
    struct later *t;
    deferred_t *d;

    if (!loop)
        return deferred__ev_failed(EINVAL, "deferred_ev_later: NULL loop");
    if (bad_delay(seconds))
        return deferred__ev_failed(EINVAL, "deferred_ev_later: invalid delay %g s "
                                   "(must be finite and >= 0)", seconds);
    t = deferred_malloc(sizeof *t);
    if (!t)
        return NULL;
    t->loop = loop;
    ev_timer_init(&t->timer, later_fired, seconds, 0.0);
    t->timer.data = t;
    t->dbg.b = NULL;
    d = deferred_new_cancellable(later_cancel, t, later_destroy);
    if (!d)
        return NULL; /* t freed by later_destroy; errno ENOMEM */
    t->d = d;
    deferred__ev_track(loop, &t->dbg, later_describe);
    /* The delay counts from now, not from the loop's cached time, which
     * may be stale when the loop has been busy. */
    ev_now_update(loop);
    ev_timer_start(loop, &t->timer);
    return d;
}

/* ---- timeouts ---------------------------------------------------------- */

struct timeout {
    ev_timer timer;
    struct ev_loop *loop;
    deferred_t *d; /* borrowed: d owns this struct through its chain */
    double seconds;
    bool timed_out;
    deferred_ev_timeout_fn hook;
    void *arg;
    deferred_destroy_fn destroy;
    deferred__ev_item_t dbg;
};

static void timeout_describe(deferred_dump_t *w, deferred__ev_item_t *it)
{
    struct timeout *t = DEFERRED_EV_ITEM_OF(it, struct timeout, dbg);
    char buf[32];

    deferred_dump_node(w, "timeout", NULL);
    snprintf(buf, sizeof(buf), "%g", t->seconds);
    deferred_dump_str(w, "after_s", buf);
    snprintf(buf, sizeof(buf), "%.3f", ev_timer_remaining(t->loop, &t->timer));
    deferred_dump_str(w, "remaining_s", ev_is_active(&t->timer) ? buf : NULL);
    deferred_dump_deferred(w, "on", t->d);
}

static void timeout_fired(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct timeout *t = w->data;

    (void)loop;
    (void)revents;
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

    ev_timer_stop(t->loop, &t->timer);
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

    ev_timer_stop(t->loop, &t->timer);
    deferred__ev_untrack(&t->dbg);
    if (t->destroy)
        t->destroy(t->arg);
    deferred_free(t);
}

int deferred_ev_add_timeout_full(deferred_t *d, struct ev_loop *loop, double seconds,
                                 deferred_ev_timeout_fn on_timeout, void *arg,
                                 deferred_destroy_fn destroy)
{
    struct timeout *t;

    if (!d || !loop || deferred_is_multi(d) || bad_delay(seconds)) {
        if (destroy)
            destroy(arg);
        return -EINVAL;
    }
    t = deferred_malloc(sizeof *t);
    if (!t) {
        if (destroy)
            destroy(arg);
        return -ENOMEM;
    }
    t->loop = loop;
    t->d = d;
    t->seconds = seconds;
    t->timed_out = false;
    t->hook = on_timeout;
    t->arg = arg;
    t->destroy = destroy;
    ev_timer_init(&t->timer, timeout_fired, seconds, 0.0);
    t->timer.data = t;
    deferred__ev_track(loop, &t->dbg, timeout_describe);
    /* Started first: if d already has a result, adding the pair runs it,
     * which stops the timer and frees t before the add returns; on error
     * the add has freed t (stopping the timer) too.  t is not touched
     * after it.  The delay counts from now (see deferred_ev_later()). */
    ev_now_update(loop);
    ev_timer_start(loop, &t->timer);
    return deferred_add_both_full(d, timeout_outcome, t, timeout_destroy);
}

int deferred_ev_add_timeout(deferred_t *d, struct ev_loop *loop, double seconds)
{
    return deferred_ev_add_timeout_full(d, loop, seconds, NULL, NULL, NULL);
}

/* ---- fd readiness ------------------------------------------------------ */

struct io_wait {
    ev_io io;
    struct ev_loop *loop;
    deferred_t *d; /* borrowed: d owns this struct */
    deferred__ev_item_t dbg;
};

static void io_wait_describe(deferred_dump_t *w, deferred__ev_item_t *it)
{
    struct io_wait *t = DEFERRED_EV_ITEM_OF(it, struct io_wait, dbg);

    deferred_dump_node(w, "io", (t->io.events & EV_READ) ? "readable" : "writable");
    deferred_dump_int(w, "fd", t->io.fd);
    deferred_dump_deferred(w, "fires", t->d);
}

static void io_wait_ready(struct ev_loop *loop, ev_io *w, int revents)
{
    struct io_wait *t = w->data;

    (void)revents;
    ev_io_stop(loop, &t->io);
    deferred_callback(t->d, deferred_value_int(t->io.fd));
}

static void io_wait_cancel(deferred_t *d, void *arg)
{
    struct io_wait *t = arg;

    (void)d;
    ev_io_stop(t->loop, &t->io);
}

static void io_wait_destroy(void *arg)
{
    struct io_wait *t = arg;

    ev_io_stop(t->loop, &t->io);
    deferred__ev_untrack(&t->dbg);
    deferred_free(t);
}

static deferred_t *io_wait_new(struct ev_loop *loop, int fd, int events,
                               const char *what)
{
    struct io_wait *t;
    deferred_t *d;

    if (!loop)
        return deferred__ev_failed(EINVAL, "%s: NULL loop", what);
    if (fd < 0)
        return deferred__ev_failed(EINVAL, "%s: invalid fd %d", what, fd);
    if (fcntl(fd, F_GETFD) == -1)
        return NULL; /* errno EBADF */
    t = deferred_malloc(sizeof *t);
    if (!t)
        return NULL;
    t->loop = loop;
    ev_io_init(&t->io, io_wait_ready, fd, events);
    t->io.data = t;
    t->dbg.b = NULL;
    d = deferred_new_cancellable(io_wait_cancel, t, io_wait_destroy);
    if (!d)
        return NULL;
    t->d = d;
    deferred__ev_track(loop, &t->dbg, io_wait_describe);
    ev_io_start(loop, &t->io);
    return d;
}

deferred_t *deferred_ev_readable(struct ev_loop *loop, int fd)
{
    return io_wait_new(loop, fd, EV_READ, "deferred_ev_readable");
}

deferred_t *deferred_ev_writable(struct ev_loop *loop, int fd)
{
    return io_wait_new(loop, fd, EV_WRITE, "deferred_ev_writable");
}

/* ---- remote handles ---------------------------------------------------- */

enum remote_kind { REMOTE_VALUE, REMOTE_DROP };

struct deferred_ev_remote {
    deferred__ev_msg_t msg; /* first: the message is the handle */
    deferred__ev_mailbox_t *mb;
    deferred_t *d; /* a reference */
    deferred_value_t v;
    deferred_value_t refused; /* a deferred given to callback: released here */
    int kind;
    deferred__ev_item_t dbg;
};

static void remote_describe(deferred_dump_t *w, deferred__ev_item_t *it)
{
    deferred_ev_remote_t *r = DEFERRED_EV_ITEM_OF(it, deferred_ev_remote_t, dbg);

    deferred_dump_node(w, "remote", NULL);
    deferred_dump_deferred(w, "fires", r->d);
}

static void remote_deliver(deferred__ev_msg_t *m)
{
    deferred_ev_remote_t *r = (deferred_ev_remote_t *)m;
    deferred__ev_mailbox_t *mb = r->mb;
    deferred_t *d = r->d;

    if (r->kind == REMOTE_DROP)
        deferred_cancel(d);
    else if (deferred_has_fired(d))
        deferred_value_release(r->v); /* cancelled or fired meanwhile */
    else
        deferred_callback(d, r->v);
    /* A deferred belongs to its own thread's loop: it is let go here, on
     * the loop thread, like any value that crossed. */
    deferred_value_release(r->refused);
    deferred__ev_untrack(&r->dbg);
    deferred_free(r);
    deferred_unref(d);
    deferred__ev_mailbox_done(mb);
}

deferred_ev_remote_t *deferred_ev_remote_new(struct ev_loop *loop, deferred_t *d)
{
    deferred_ev_remote_t *r;

    /* A remote fires d once: a multi-fire deferred has no single firing. */
    if (!loop || !d || deferred_is_multi(d)) {
        errno = EINVAL;
        return NULL;
    }
    r = deferred_malloc(sizeof *r);
    if (!r) {
        errno = ENOMEM;
        return NULL;
    }
    r->mb = deferred__ev_mailbox_get(loop);
    if (!r->mb) {
        deferred_free(r);
        errno = ENOMEM;
        return NULL;
    }
    deferred__ev_mailbox_expect(r->mb);
    deferred__ev_mailbox_put(r->mb); /* expect holds the reference */
    r->msg.deliver = remote_deliver;
    r->d = deferred_ref(d);
    r->v = deferred_value_none();
    r->refused = deferred_value_none();
    r->kind = REMOTE_VALUE;
    deferred__ev_track(loop, &r->dbg, remote_describe);
    return r;
}

int deferred_ev_remote_callback(deferred_ev_remote_t *r, deferred_value_t v)
{
    int rc = 0;

    if (!r) {
        deferred_value_release(v);
        return -EINVAL;
    }
    if (deferred_value_is_deferred(v)) {
        /* A deferred cannot fire r's deferred (nor be touched on this
         * thread): r's deferred fails instead, so that it still fires, and
         * v is released on the loop thread.  The failure is the one
         * allocation a remote may make; without memory it is the static
         * ENOMEM failure. */
        r->refused = v;
        v = deferred_value_failure(deferred_failure_new_at(
            NULL, 0, DEFERRED_DOMAIN_LIBRARY, EINVAL,
            "deferred_ev_remote_callback: a remote fires with a value or a "
            "failure, not a deferred"));
        rc = -EINVAL;
    }
    r->v = v;
    r->kind = REMOTE_VALUE;
    deferred__ev_mailbox_post(r->mb, &r->msg);
    return rc;
}

int deferred_ev_remote_errback(deferred_ev_remote_t *r, deferred_failure_t *f)
{
    if (!f)
        f = deferred_failure_new(DEFERRED_DOMAIN_LIBRARY, EINVAL,
                                 "deferred_ev_remote_errback: NULL failure");
    return deferred_ev_remote_callback(r, deferred_value_failure(f));
}

void deferred_ev_remote_drop(deferred_ev_remote_t *r)
{
    if (!r)
        return;
    r->kind = REMOTE_DROP;
    deferred__ev_mailbox_post(r->mb, &r->msg);
}
