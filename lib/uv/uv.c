/*
 * uv.c: the libuv adapter (deferred/uv.h): deferred_loop_ops_t over the
 * user's uv_loop_t.
 *
 * Every handle lives inside a block of the adapter (allocated through
 * deferred_malloc()), its data field pointing back at the block.  A
 * handle the library frees is uv_close()d at once, which silences it (libuv
 * never calls a closed handle's callback), and its block is freed in the
 * close callback, on a later iteration.  The adapter's state (struct uvl)
 * counts its handles that are not yet closed and freed; it goes when the
 * loop is released (the last deferred_loop_unref()) and that count is 0,
 * so a close callback always finds it.
 *
 * What maps to what:
 *   timer    a uv_timer_t (milliseconds, rounded up), after uv_update_time();
 *            a delay of 0 goes on the "soon" list instead: libuv runs a
 *            0 ms uv_timer_t started from a timer callback in the same
 *            uv__run_timers() pass, so a callback that restarts its own
 *            timer with 0 would never let the loop poll.  The list is run
 *            by one 0 ms uv_timer_t of the adapter's (so it fires among the
 *            other timers in the order of their due times), armed at most
 *            once per iteration: a pass runs only the timers started
 *            before it began, and the list's timer is armed again by a
 *            uv_prepare_t, after the timers' phase of the iteration, when
 *            a timer's callback started one;
 *   io       libuv allows one uv_poll_t per fd and loop, so the watchers of
 *            one fd share one (struct uvl_fd, found by fd in a table), started
 *            with the union of their events; its callback hands each watcher
 *            the events it asked for; an fd that epoll refuses (a regular
 *            file) gets a uv_idle_t instead, always ready;
 *   wakeup   a uv_async_t, uv_unref()ed unless held.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <uv.h>

#include "deferred.h"
#include "deferred/uv.h"

#define WATCHABLE (DEFERRED_LOOP_READ | DEFERRED_LOOP_WRITE)

struct uvl_timer;
struct uvl_fd;

/* The adapter's state (deferred_loop_impl()). */
struct uvl {
    uv_loop_t *loop;
    /* Handles of this adapter whose close callback has not run yet: the
     * timers, fd pollers and wakeups made, and the soon list's two. */
    size_t handles;
    bool released; /* the deferred_loop_t is gone */
    bool in_timer; /* inside a timer's callback (the timers' phase) */
    /* The soon list: timers started with 0, in start order, and the pass
     * counter of the callback that runs them.  soon (made with the first
     * 0 delay, with soon_prep) is armed while the list waits; soon_ran:
     * its pass ran in this iteration's timers' phase, so soon_prep (before
     * the iteration polls) arms it for the next one. */
    struct uvl_timer *soon_head, *soon_tail;
    unsigned long soon_pass;
    bool soon_made, soon_armed, soon_ran;
    uv_timer_t soon;
    uv_prepare_t soon_prep;
    /* The fd pollers, indexed by fd (NULL: none); nfds entries, used of
     * them not NULL. */
    struct uvl_fd **fds;
    size_t nfds, used;
};

struct uvl_timer {
    uv_timer_t h;
    struct uvl *u;
    deferred_loop_fn cb;
    void *arg;
    /* On the soon list: linked, and the pass it was started in. */
    bool soon;
    unsigned long soon_pass;
    struct uvl_timer *soon_prev, *soon_next;
};

struct uvl_io;

/* The one uv_poll_t of an fd, shared by its watchers; or, for an fd that
 * epoll refuses (a regular file, which poll() reports always ready), a
 * uv_idle_t that reports it ready on every iteration. */
struct uvl_fd {
    union {
        uv_handle_t handle;
        uv_poll_t poll;
        uv_idle_t idle;
    } h;
    struct uvl *u;
    int fd;
    bool always;       /* h.idle: always ready */
    int started;       /* the UV_* events h.poll runs with (0: stopped);
                        * always: 1 while h.idle runs */
    int dispatching;   /* inside its callback */
    size_t live;       /* watchers not freed */
    struct uvl_io *head;
};

struct uvl_io {
    struct uvl_fd *f;
    deferred_loop_io_fn cb;
    void *arg;
    int events;        /* DEFERRED_LOOP_READ | _WRITE */
    bool dead;         /* freed during its fd's callback, unlinked after */
    struct uvl_io *prev, *next;
};

struct uvl_wakeup {
    uv_async_t h;
    struct uvl *u;
    deferred_loop_fn cb;
    void *arg;
};

/* ---- the state and the handles' ends ---------------------------------- */

static void handle_gone(struct uvl *u)
{
    if (--u->handles == 0 && u->released)
        deferred_free(u);
}

/* The close callbacks: each handle's data is its block. */
static void on_own_closed(uv_handle_t *h)
{
    handle_gone(h->data); /* the soon list's handles are inside u */
}

static void on_timer_closed(uv_handle_t *h)
{
    struct uvl_timer *t = h->data;
    struct uvl *u = t->u;

    deferred_free(t);
    handle_gone(u);
}

static void on_fd_closed(uv_handle_t *h)
{
    struct uvl_fd *f = h->data;
    struct uvl *u = f->u;

    deferred_free(f);
    handle_gone(u);
}

static void on_wakeup_closed(uv_handle_t *h)
{
    struct uvl_wakeup *k = h->data;
    struct uvl *u = k->u;

    deferred_free(k);
    handle_gone(u);
}

static double uvl_now(void *impl)
{
    struct uvl *u = impl;

    return (double)uv_now(u->loop) / 1000.0;
}

static void uvl_release(void *impl)
{
    struct uvl *u = impl;

    /* Every handle was freed: the fd table holds no live poller (one
     * whose callback is still running removes itself without it). */
    u->released = true;
    deferred_free(u->fds);
    u->fds = NULL;
    u->nfds = 0;
    if (u->soon_made) {
        uv_close((uv_handle_t *)&u->soon, on_own_closed);
        uv_close((uv_handle_t *)&u->soon_prep, on_own_closed);
    }
    if (u->handles == 0)
        deferred_free(u);
}

/* A dump's line for the loop (debug mode): the adapter's handles on the
 * uv loop (closing ones included) and the fds it watches. */
static void uvl_describe(void *impl, deferred_dump_t *w)
{
    struct uvl *u = impl;

    deferred_dump_int(w, "uv_handles", (long long)u->handles);
    deferred_dump_int(w, "fds", (long long)u->used);
}

/* ---- timers ------------------------------------------------------------ */

static void soon_unlink(struct uvl_timer *t)
{
    struct uvl *u = t->u;

    if (t->soon_prev)
        t->soon_prev->soon_next = t->soon_next;
    else
        u->soon_head = t->soon_next;
    if (t->soon_next)
        t->soon_next->soon_prev = t->soon_prev;
    else
        u->soon_tail = t->soon_prev;
    t->soon_prev = t->soon_next = NULL;
    t->soon = false;
    /* the list's timer keeps uv_run() going: only while a timer waits */
    if (!u->soon_head && u->soon_armed && !u->released) {
        uv_timer_stop(&u->soon);
        u->soon_armed = false;
    }
}

static void on_soon(uv_timer_t *h);
static void on_soon_prep(uv_prepare_t *h);

/* The list has a timer: arm the list's timer, for this iteration's
 * timers' phase when that is still to come, else for the next one. */
static void soon_arm(struct uvl *u)
{
    if (u->soon_armed)
        return;
    if (u->soon_ran || u->in_timer) {
        /* a 0 ms timer started now would run in this very pass */
        uv_prepare_start(&u->soon_prep, on_soon_prep);
        return;
    }
    uv_timer_start(&u->soon, on_soon, 0, 0);
    u->soon_armed = true;
}

/* The list's pass: the timers started with 0 before it began, in start
 * order; those their callbacks start wait for the next iteration. */
static void on_soon(uv_timer_t *h)
{
    struct uvl *u = h->data;
    struct uvl_timer *t;
    unsigned long pass = u->soon_pass++;

    u->soon_armed = false;
    u->soon_ran = true;
    uv_prepare_start(&u->soon_prep, on_soon_prep); /* clears soon_ran */
    while ((t = u->soon_head) != NULL && t->soon_pass == pass) {
        soon_unlink(t);
        t->cb(t->arg); /* may free t, start timers, release u */
    }
}

/* After the timers' phase, before the poll: arm the list's timer for the
 * next iteration if a callback of this one started a timer with 0. */
static void on_soon_prep(uv_prepare_t *h)
{
    struct uvl *u = h->data;

    uv_prepare_stop(h);
    u->soon_ran = false;
    if (u->soon_head)
        soon_arm(u);
}

static void on_timer(uv_timer_t *h)
{
    struct uvl_timer *t = h->data;
    struct uvl *u = t->u;

    u->in_timer = true;
    t->cb(t->arg); /* may free t (its block stays until the close), release u
                    * (which stays while t's handle is not closed) */
    u->in_timer = false;
}

static void *uvl_timer_new(void *impl, deferred_loop_fn cb, void *arg)
{
    struct uvl *u = impl;
    struct uvl_timer *t = deferred_malloc(sizeof *t);

    if (!t) {
        errno = ENOMEM;
        return NULL;
    }
    memset(t, 0, sizeof *t);
    t->u = u;
    t->cb = cb;
    t->arg = arg;
    uv_timer_init(u->loop, &t->h); /* cannot fail */
    t->h.data = t;
    u->handles++;
    return t;
}

static void uvl_timer_stop(void *timer)
{
    struct uvl_timer *t = timer;

    if (t->soon)
        soon_unlink(t);
    uv_timer_stop(&t->h);
}

/* A delay in whole milliseconds, rounded up (so a timer never fires
 * before uv_now() moved on by it), saturated at libuv's "never". */
static uint64_t delay_ms(double seconds)
{
    double ms = ceil(seconds * 1000.0);

    if (!(ms < 18446744073709549568.0)) /* the largest double below 2^64 */
        return UINT64_MAX;
    return (uint64_t)ms;
}

static void uvl_timer_start(void *timer, double seconds)
{
    struct uvl_timer *t = timer;
    struct uvl *u = t->u;

    uvl_timer_stop(t);
    if (!(seconds > 0.0)) {
        /* 0: the soon list */
        if (!u->soon_made) {
            uv_timer_init(u->loop, &u->soon); /* cannot fail */
            uv_prepare_init(u->loop, &u->soon_prep);
            u->soon.data = u;
            u->soon_prep.data = u;
            u->soon_made = true;
            u->handles += 2;
        }
        t->soon = true;
        t->soon_pass = u->soon_pass;
        t->soon_prev = u->soon_tail;
        t->soon_next = NULL;
        if (u->soon_tail)
            u->soon_tail->soon_next = t;
        else
            u->soon_head = t;
        u->soon_tail = t;
        soon_arm(u);
        return;
    }
    /* the cached time may be stale in a busy callback */
    uv_update_time(u->loop);
    uv_timer_start(&t->h, on_timer, delay_ms(seconds), 0);
}

static void uvl_timer_free(void *timer)
{
    struct uvl_timer *t = timer;

    uvl_timer_stop(t);
    uv_close((uv_handle_t *)&t->h, on_timer_closed);
}

/* ---- fd readiness ------------------------------------------------------ */

static int uv_events(int events)
{
    int e = 0;

    /* UV_DISCONNECT: a peer's shutdown of a socket (POLLRDHUP) is an end
     * of file to read. */
    if (events & DEFERRED_LOOP_READ)
        e |= UV_READABLE | UV_DISCONNECT;
    if (events & DEFERRED_LOOP_WRITE)
        e |= UV_WRITABLE;
    return e;
}

static void on_poll(uv_poll_t *h, int status, int events);
static void on_always(uv_idle_t *h);

/* Start, change or stop f's handle for its watchers' union. */
static void fd_update(struct uvl_fd *f)
{
    struct uvl_io *w;
    int want = 0;

    for (w = f->head; w; w = w->next)
        want |= w->events;
    if (f->always)
        want = want != 0;
    else
        want = uv_events(want);
    if (want == f->started)
        return;
    if (f->always && want)
        uv_idle_start(&f->h.idle, on_always);
    else if (f->always)
        uv_idle_stop(&f->h.idle);
    else if (want)
        uv_poll_start(&f->h.poll, want, on_poll);
    else
        uv_poll_stop(&f->h.poll);
    f->started = want;
}

static void io_unlink(struct uvl_io *w)
{
    struct uvl_fd *f = w->f;

    if (w->prev)
        w->prev->next = w->next;
    else
        f->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
}

/* After a change outside f's callback, or at its end: drop the watchers
 * freed meanwhile, close f when none is left, else restart it for the
 * rest. */
static void fd_settle(struct uvl_fd *f)
{
    struct uvl_io *w, *next;
    struct uvl *u = f->u;

    for (w = f->head; w; w = next) {
        next = w->next;
        if (w->dead) {
            io_unlink(w);
            deferred_free(w);
        }
    }
    if (f->live > 0) {
        fd_update(f);
        return;
    }
    if (!u->released) {
        u->fds[f->fd] = NULL;
        u->used--;
    }
    uv_close(&f->h.handle, on_fd_closed);
}

/* Hand each watcher of f the events of revents it watches. */
static void fd_dispatch(struct uvl_fd *f, int revents)
{
    struct uvl_io *w;

    /* Watchers made by a callback are linked at the head, so the walk
     * skips them; freed ones are only marked (their next stays valid). */
    f->dispatching++;
    for (w = f->head; w; w = w->next) {
        int r = revents & w->events;

        if (r && !w->dead)
            w->cb(w->arg, r);
    }
    f->dispatching--;
    fd_settle(f);
}

static void on_always(uv_idle_t *h)
{
    fd_dispatch(h->data, WATCHABLE);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct uvl_fd *f = h->data;
    int revents = 0;

    if (status < 0) {
        /* An error on the fd (POLLERR): libuv stopped h.  It is readiness
         * for everything watched, so that the read or write that follows
         * sees the error; fd_settle() starts h again (level-triggered: the
         * error is reported on each iteration while it lasts). */
        revents = WATCHABLE;
        f->started = 0;
    } else {
        /* A hang-up without data reaches here as UV_READABLE (libuv merges
         * the watched events into a lone POLLHUP), a peer's shutdown as
         * UV_DISCONNECT. */
        if (events & (UV_READABLE | UV_DISCONNECT))
            revents |= DEFERRED_LOOP_READ;
        if (events & UV_WRITABLE)
            revents |= DEFERRED_LOOP_WRITE;
    }
    fd_dispatch(f, revents);
}

/* The table entry for fd, growing the table; NULL on allocation failure. */
static struct uvl_fd **fd_slot(struct uvl *u, int fd)
{
    if ((size_t)fd >= u->nfds) {
        size_t n = u->nfds ? u->nfds : 16;
        struct uvl_fd **fds;

        while (n <= (size_t)fd)
            n *= 2;
        fds = deferred_malloc(n * sizeof *fds);
        if (!fds)
            return NULL;
        memset(fds, 0, n * sizeof *fds);
        if (u->nfds)
            memcpy(fds, u->fds, u->nfds * sizeof *fds);
        deferred_free(u->fds);
        u->fds = fds;
        u->nfds = n;
    }
    return &u->fds[fd];
}

/* A poll handle on fd, O_NONBLOCK as the caller left it; NULL with errno. */
static struct uvl_fd *fd_open(struct uvl *u, int fd)
{
    struct uvl_fd *f;
    int flags, rc;

    flags = fcntl(fd, F_GETFL);
    if (flags < 0)
        return NULL; /* errno EBADF */
    f = deferred_malloc(sizeof *f);
    if (!f) {
        errno = ENOMEM;
        return NULL;
    }
    memset(f, 0, sizeof *f);
    rc = uv_poll_init(u->loop, &f->h.poll, fd);
    /* uv_poll_init() makes fd non-blocking, which uv_poll_t does not need:
     * the fd's flags stay the caller's. */
    if (!(flags & O_NONBLOCK))
        (void)fcntl(fd, F_SETFL, flags);
    if (rc == UV_EPERM) {
        /* epoll refuses fd (a regular file, a directory): poll() says
         * such an fd is always ready, and so does the adapter (as libev
         * does), from an idle handle */
        uv_idle_init(u->loop, &f->h.idle); /* cannot fail */
        f->always = true;
        rc = 0;
    }
    if (rc < 0) {
        /* EEXIST: another poll handle (the user's) has fd on this loop */
        deferred_free(f);
        errno = -rc;
        return NULL;
    }
    f->h.handle.data = f;
    f->u = u;
    f->fd = fd;
    u->handles++;
    return f;
}

static void *uvl_io_new(void *impl, int fd, deferred_loop_io_fn cb, void *arg)
{
    struct uvl *u = impl;
    struct uvl_fd **slot, *f;
    struct uvl_io *w;

    if (fd < 0) {
        errno = EINVAL;
        return NULL;
    }
    w = deferred_malloc(sizeof *w);
    if (!w) {
        errno = ENOMEM;
        return NULL;
    }
    slot = fd_slot(u, fd);
    if (!slot) {
        deferred_free(w);
        errno = ENOMEM;
        return NULL;
    }
    f = *slot;
    if (!f) {
        f = fd_open(u, fd);
        if (!f) {
            int e = errno;

            deferred_free(w);
            errno = e;
            return NULL;
        }
        *slot = f;
        u->used++;
    }
    memset(w, 0, sizeof *w);
    w->f = f;
    w->cb = cb;
    w->arg = arg;
    w->next = f->head;
    if (f->head)
        f->head->prev = w;
    f->head = w;
    f->live++;
    return w;
}

static void uvl_io_set(void *io, int events)
{
    struct uvl_io *w = io;

    w->events = events & WATCHABLE;
    if (!w->f->dispatching)
        fd_update(w->f);
}

static void uvl_io_free(void *io)
{
    struct uvl_io *w = io;
    struct uvl_fd *f = w->f;

    w->dead = true;
    w->events = 0;
    f->live--;
    if (f->dispatching)
        return; /* fd_settle() at the end of the callback */
    io_unlink(w);
    deferred_free(w);
    fd_settle(f);
}

/* ---- wakeups ----------------------------------------------------------- */

static void on_async(uv_async_t *h)
{
    struct uvl_wakeup *k = h->data;

    k->cb(k->arg);
}

static void *uvl_wakeup_new(void *impl, deferred_loop_fn cb, void *arg)
{
    struct uvl *u = impl;
    struct uvl_wakeup *k = deferred_malloc(sizeof *k);
    int rc;

    if (!k) {
        errno = ENOMEM;
        return NULL;
    }
    memset(k, 0, sizeof *k);
    k->u = u;
    k->cb = cb;
    k->arg = arg;
    /* The loop's first uv_async_t opens its eventfd: EMFILE is possible. */
    rc = uv_async_init(u->loop, &k->h, on_async);
    if (rc < 0) {
        deferred_free(k);
        errno = -rc;
        return NULL;
    }
    k->h.data = k;
    uv_unref((uv_handle_t *)&k->h); /* not held */
    u->handles++;
    return k;
}

static void uvl_wakeup_send(void *wakeup)
{
    struct uvl_wakeup *k = wakeup;

    uv_async_send(&k->h);
}

static void uvl_wakeup_hold(void *wakeup, bool hold)
{
    struct uvl_wakeup *k = wakeup;

    if (hold)
        uv_ref((uv_handle_t *)&k->h);
    else
        uv_unref((uv_handle_t *)&k->h);
}

static void uvl_wakeup_free(void *wakeup)
{
    struct uvl_wakeup *k = wakeup;

    uv_close((uv_handle_t *)&k->h, on_wakeup_closed);
}

/* ---- the loop ---------------------------------------------------------- */

static const deferred_loop_ops_t uvl_ops = {
    .version = DEFERRED_LOOP_OPS_VERSION,
    .name = "uv",
    .now = uvl_now,
    .timer_new = uvl_timer_new,
    .timer_start = uvl_timer_start,
    .timer_stop = uvl_timer_stop,
    .timer_free = uvl_timer_free,
    .io_new = uvl_io_new,
    .io_set = uvl_io_set,
    .io_free = uvl_io_free,
    .wakeup_new = uvl_wakeup_new,
    .wakeup_send = uvl_wakeup_send,
    .wakeup_hold = uvl_wakeup_hold,
    .wakeup_free = uvl_wakeup_free,
    .release = uvl_release,
    .describe = uvl_describe,
};

deferred_loop_t *deferred_uv_loop_new(uv_loop_t *loop)
{
    struct uvl *u;
    deferred_loop_t *l;

    if (!loop) {
        errno = EINVAL;
        return NULL;
    }
    u = deferred_malloc(sizeof *u);
    if (!u) {
        errno = ENOMEM;
        return NULL;
    }
    memset(u, 0, sizeof *u);
    u->loop = loop;
    l = deferred_loop_new(&uvl_ops, u);
    if (!l) {
        int e = errno;

        /* deferred_loop_new() does not release u when it fails: a handle
         * it made and freed meanwhile may still be closing */
        uvl_release(u);
        errno = e;
        return NULL;
    }
    return l;
}

static void find_closing(uv_handle_t *h, void *arg)
{
    if (uv_is_closing(h))
        *(bool *)arg = true;
}

int deferred_uv_loop_close(uv_loop_t *loop)
{
    if (!loop)
        return -EINVAL;
    for (;;) {
        bool closing = false;

        uv_walk(loop, find_closing, &closing);
        if (!closing)
            break;
        uv_run(loop, UV_RUN_NOWAIT);
    }
    return uv_loop_close(loop);
}
