/*
 * loop.c: the loop object (deferred/loop.h): an adapter's table and state
 * with a reference count; the watchers through which the rest of the
 * library drives the adapter's handles, counting what keeps the loop
 * alive; the mailbox; and what a dump shows of a loop.
 */
#include <fcntl.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>

#include "loop-private.h"

static void mailbox_drain(void *arg);

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
    /* The mailbox's wakeup, made now so that expecting a message never
     * fails (a remote, a pool job or a query's batch cannot be refused
     * half-way). */
    l->wake = ops->wakeup_new(impl, mailbox_drain, l);
    if (!l->wake) {
        deferred_free(l);
        errno = ENOMEM;
        return NULL;
    }
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
    /* A poster that pushed the last message may still be waking the
     * loop (deferred_loop_post()): a few instructions and a send. */
    while (__atomic_load_n(&loop->posting, __ATOMIC_ACQUIRE) != 0)
        sched_yield();
    if (loop->holder_on)
        deferred_dump_holder_remove(&loop->holder);
    loop->ops->wakeup_free(loop->wake);
    /* No remote is left (each holds a reference): the slab's chunk is
     * empty. */
    deferred_free(loop->rchunk);
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

size_t deferred_loop_alive(const deferred_loop_t *loop)
{
    return loop ? loop->alive : 0;
}

bool deferred__bad_delay(double seconds)
{
    return !(seconds >= 0.0) || isinf(seconds);
}

/* ---- timers ---------------------------------------------------------------- */

static void timer_fired(void *arg)
{
    struct deferred_loop_timer *t = arg;

    if (!t->active)
        return; /* an adapter's late call after a stop */
    t->active = false;
    t->loop->alive--;
    t->cb(t->arg); /* may free t */
}

int deferred__timer_init(struct deferred_loop_timer *t, deferred_loop_t *loop,
                         deferred_loop_fn cb, void *arg)
{
    t->loop = NULL;
    t->h = loop->ops->timer_new(loop->impl, timer_fired, t);
    if (!t->h)
        return -ENOMEM;
    t->loop = deferred_loop_ref(loop);
    t->cb = cb;
    t->arg = arg;
    t->due = 0.0;
    t->active = false;
    return 0;
}

static void timer_stop(struct deferred_loop_timer *t)
{
    if (!t->active)
        return;
    t->active = false;
    t->loop->alive--;
    t->loop->ops->timer_stop(t->h);
}

void deferred__timer_fini(struct deferred_loop_timer *t)
{
    deferred_loop_t *loop = t->loop;

    if (!loop)
        return;
    timer_stop(t);
    loop->ops->timer_free(t->h);
    t->loop = NULL;
    deferred_loop_unref(loop);
}

deferred_loop_timer_t *deferred_loop_timer_new(deferred_loop_t *loop, deferred_loop_fn cb,
                                               void *arg)
{
    struct deferred_loop_timer *t;

    if (!loop || !cb) {
        errno = EINVAL;
        return NULL;
    }
    t = deferred_malloc(sizeof *t);
    if (!t || deferred__timer_init(t, loop, cb, arg) < 0) {
        deferred_free(t);
        errno = ENOMEM;
        return NULL;
    }
    return t;
}

int deferred_loop_timer_start(deferred_loop_timer_t *t, double seconds)
{
    if (!t || !t->loop || deferred__bad_delay(seconds))
        return -EINVAL;
    if (!t->active) {
        t->active = true;
        t->loop->alive++;
    }
    t->loop->ops->timer_start(t->h, seconds);
    t->due = t->loop->ops->now(t->loop->impl) + seconds;
    return 0;
}

void deferred_loop_timer_stop(deferred_loop_timer_t *t)
{
    if (t && t->loop)
        timer_stop(t);
}

bool deferred_loop_timer_is_active(const deferred_loop_timer_t *t)
{
    return t && t->active;
}

double deferred_loop_timer_remaining(const deferred_loop_timer_t *t)
{
    double left;

    if (!t || !t->active)
        return 0.0;
    left = t->due - t->loop->ops->now(t->loop->impl);
    return left > 0.0 ? left : 0.0;
}

void deferred_loop_timer_free(deferred_loop_timer_t *t)
{
    if (!t)
        return;
    deferred__timer_fini(t);
    deferred_free(t);
}

/* ---- fd watchers ----------------------------------------------------------- */

static void io_ready(void *arg, int revents)
{
    struct deferred_loop_io *io = arg;

    if (io->events == 0)
        return;
    io->cb(io->arg, revents); /* may free io */
}

int deferred__io_init(struct deferred_loop_io *io, deferred_loop_t *loop, int fd,
                      deferred_loop_io_fn cb, void *arg)
{
    io->loop = NULL;
    errno = 0;
    io->h = loop->ops->io_new(loop->impl, fd, io_ready, io);
    if (!io->h)
        return errno > 0 ? -errno : -ENOMEM; /* the loop's reason, as told */
    io->loop = deferred_loop_ref(loop);
    io->cb = cb;
    io->arg = arg;
    io->fd = fd;
    io->events = 0;
    return 0;
}

void deferred__io_fini(struct deferred_loop_io *io)
{
    deferred_loop_t *loop = io->loop;

    if (!loop)
        return;
    deferred_loop_io_set(io, 0);
    loop->ops->io_free(io->h);
    io->loop = NULL;
    deferred_loop_unref(loop);
}

deferred_loop_io_t *deferred_loop_io_new(deferred_loop_t *loop, int fd,
                                         deferred_loop_io_fn cb, void *arg)
{
    struct deferred_loop_io *io;
    int rc;

    if (!loop || !cb || fd < 0) {
        errno = EINVAL;
        return NULL;
    }
    if (fcntl(fd, F_GETFD) == -1)
        return NULL; /* errno EBADF */
    io = deferred_malloc(sizeof *io);
    if (!io) {
        errno = ENOMEM;
        return NULL;
    }
    rc = deferred__io_init(io, loop, fd, cb, arg);
    if (rc < 0) {
        deferred_free(io);
        errno = -rc;
        return NULL;
    }
    return io;
}

int deferred_loop_io_set(deferred_loop_io_t *io, int events)
{
    if (!io || !io->loop || (events & ~(DEFERRED_LOOP_READ | DEFERRED_LOOP_WRITE)))
        return -EINVAL;
    if (events == io->events)
        return 0;
    if (io->events == 0)
        io->loop->alive++;
    else if (events == 0)
        io->loop->alive--;
    io->events = events;
    io->loop->ops->io_set(io->h, events);
    return 0;
}

int deferred_loop_io_events(const deferred_loop_io_t *io)
{
    return io ? io->events : 0;
}

int deferred_loop_io_fd(const deferred_loop_io_t *io)
{
    return io ? io->fd : -1;
}

void deferred_loop_io_free(deferred_loop_io_t *io)
{
    if (!io)
        return;
    deferred__io_fini(io);
    deferred_free(io);
}

/* ---- the mailbox ----------------------------------------------------------- */

/* The wakeup's callback, on the loop thread: deliver every queued message
 * (a delivery may post more; they ride on the next wakeup or this loop). */
static void mailbox_drain(void *arg)
{
    deferred__loop_drain(arg);
}

void deferred__loop_drain(deferred_loop_t *l)
{
    deferred_loop_msg_t *m, *next, *fifo;

    l->refs++; /* a delivery may drop the last other reference */
    for (;;) {
        /* The whole stack at once, newest first: turned around, it is
         * the order of posting. */
        m = __atomic_exchange_n(&l->inbox, NULL, __ATOMIC_ACQUIRE);
        if (!m)
            break;
        for (fifo = NULL; m; m = next) {
            next = m->next;
            m->next = fifo;
            fifo = m;
        }
        for (m = fifo; m; m = next) {
            next = m->next;
            m->deliver(m);
        }
    }
    deferred_loop_unref(l);
}

int deferred_loop_expect(deferred_loop_t *loop)
{
    if (!loop)
        return -EINVAL;
    deferred__loop_expect(loop);
    return 0;
}

void deferred_loop_done(deferred_loop_t *loop)
{
    if (loop)
        deferred__loop_done(loop);
}

int deferred_loop_post(deferred_loop_t *loop, deferred_loop_msg_t *m)
{
    /* pending is the loop thread's: read here it may be stale, but it is
     * above zero for as long as the caller's expected message is. */
    if (!loop || !m || !m->deliver)
        return -EINVAL;
    deferred__loop_post(loop, m);
    return 0;
}

/* ---- the dump -------------------------------------------------------------- */

static void describe_loop(deferred_dump_t *w, void *arg)
{
    deferred_loop_t *l = arg;
    deferred__loop_item_t *it;
    char at[32];

    snprintf(at, sizeof(at), "%p", l->impl);
    deferred_dump_node(w, "loop", l->ops->name ? l->ops->name : "?");
    deferred_dump_str(w, "at", at);
    deferred_dump_int(w, "items", (long long)l->items);
    if (l->ops->describe)
        l->ops->describe(l->impl, w);
    deferred_dump_enter(w);
    for (it = l->first; it; it = it->next)
        it->describe(w, it);
    deferred_dump_leave(w);
}

void deferred__loop_track_on(deferred_loop_t *loop, deferred__loop_item_t *it,
                             void (*describe)(deferred_dump_t *w, deferred__loop_item_t *it))
{
    it->loop = NULL;
    it->prev = it->next = NULL;
    it->describe = describe;
    if (!loop->holder_on) {
        deferred_dump_holder_add(&loop->holder, describe_loop, loop);
        loop->holder_on = true;
    }
    it->loop = loop;
    it->prev = loop->last;
    if (loop->last)
        loop->last->next = it;
    else
        loop->first = it;
    loop->last = it;
    loop->items++;
}

void deferred__loop_untrack_on(deferred__loop_item_t *it)
{
    deferred_loop_t *l = it->loop;

    if (it->prev)
        it->prev->next = it->next;
    else
        l->first = it->next;
    if (it->next)
        it->next->prev = it->prev;
    else
        l->last = it->prev;
    l->items--;
    it->loop = NULL;
    it->prev = it->next = NULL;
    if (!l->first && l->holder_on) {
        deferred_dump_holder_remove(&l->holder);
        l->holder_on = false;
    }
}
