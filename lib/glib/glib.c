/*
 * glib.c: libdeferred-glib, the GLib adapter of the loop interface
 * (deferred/loop.h, deferred/glib.h): deferred_loop_ops_t on GSources
 * attached to a borrowed GMainContext.
 *
 * The loop's state (struct gl_loop) holds the context's reference, the
 * timers' source and a binary heap of the running timers.  One source
 * carries every timer of the loop, so that timers due in the same
 * iteration fire in deadline order (GLib dispatches the ready sources of
 * one priority in the order they were attached, not by time); its
 * prepare and check look at the heap's first deadline.  The heap's array always has room
 * for every timer handle (timer_new grows it), so timer_start never
 * allocates and cannot fail.
 *
 * Each fd watcher and each wakeup is a source of its own, pointing at its
 * handle (from deferred_malloc) and pointed at by it; freeing the handle
 * destroys and unrefs the source, after which GLib never dispatches it.
 * Freeing from inside the source's own dispatch is safe: GLib holds a
 * reference on a source while it dispatches it, and the dispatch
 * functions touch nothing after the user's callback returns.
 *
 * The timers' dispatch is the one that goes on after a callback (to fire
 * the next due timer), and a callback may drop the loop's last reference
 * (the last deferred made on it fires); the release then only marks the
 * state, which the dispatch frees when the callback returns.
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include <glib.h>

#include "deferred.h"
#include "deferred/glib.h"

/* The longest delay a timer takes (about 146,000 years): longer ones are
 * clamped, so that deadlines and GLib's arithmetic on ready times do not
 * overflow. */
#define GL_MAX_DELAY_US (G_MAXINT64 / 4)

/* GLib 2.70 has g_source_set_static_name(), which does not copy. */
#if GLIB_CHECK_VERSION(2, 70, 0)
#define gl_source_name(s, n) g_source_set_static_name((s), (n))
#else
#define gl_source_name(s, n) g_source_set_name((s), (n))
#endif

struct gl_timer;

struct gl_loop {
    GMainContext *ctx;        /* our reference */
    GSource *clock;           /* the timers' source (struct gl_clock_source) */
    struct gl_timer **heap;   /* running timers, ordered by (deadline, seq) */
    size_t n;                 /* running timers */
    size_t cap;               /* room in heap: >= handles */
    size_t handles;           /* timer handles alive */
    uint64_t seq;             /* the next start's sequence number */
    bool dispatching;         /* inside the timers' dispatch */
    bool released;            /* released while dispatching: free after */
};

struct gl_clock_source {
    GSource base;
    struct gl_loop *loop;
};

struct gl_timer {
    struct gl_loop *loop;
    deferred_loop_fn cb;
    void *arg;
    gint64 deadline;          /* g_get_monotonic_time() microseconds */
    uint64_t seq;             /* start order, for equal deadlines */
    size_t index;             /* in loop->heap; SIZE_MAX: not running */
};

struct gl_io {
    GSource *src;             /* struct gl_io_source */
    gpointer tag;             /* g_source_add_unix_fd's; NULL: not polled */
    int fd;
    int events;               /* DEFERRED_LOOP_READ | _WRITE */
    deferred_loop_io_fn cb;
    void *arg;
};

struct gl_io_source {
    GSource base;
    struct gl_io *io;
};

struct gl_wakeup {
    GSource *src;             /* struct gl_wakeup_source */
    GMainContext *ctx;        /* borrowed: the loop holds the reference */
    int pending;              /* atomic: a send not yet dispatched */
    deferred_loop_fn cb;
    void *arg;
};

struct gl_wakeup_source {
    GSource base;
    struct gl_wakeup *w;
};

/* ---- time ---------------------------------------------------------------- */

static double gl_now(void *impl)
{
    (void)impl;
    return (double)g_get_monotonic_time() / 1e6;
}

/* ---- the timers' heap ------------------------------------------------------ */

static bool gl_before(const struct gl_timer *a, const struct gl_timer *b)
{
    return a->deadline < b->deadline || (a->deadline == b->deadline && a->seq < b->seq);
}

static void gl_heap_put(struct gl_loop *l, size_t i, struct gl_timer *t)
{
    l->heap[i] = t;
    t->index = i;
}

static void gl_heap_up(struct gl_loop *l, size_t i)
{
    struct gl_timer *t = l->heap[i];

    while (i > 0) {
        size_t parent = (i - 1) / 2;

        if (!gl_before(t, l->heap[parent]))
            break;
        gl_heap_put(l, i, l->heap[parent]);
        i = parent;
    }
    gl_heap_put(l, i, t);
}

static void gl_heap_down(struct gl_loop *l, size_t i)
{
    struct gl_timer *t = l->heap[i];

    for (;;) {
        size_t child = 2 * i + 1;

        if (child >= l->n)
            break;
        if (child + 1 < l->n && gl_before(l->heap[child + 1], l->heap[child]))
            child++;
        if (!gl_before(l->heap[child], t))
            break;
        gl_heap_put(l, i, l->heap[child]);
        i = child;
    }
    gl_heap_put(l, i, t);
}

static void gl_heap_remove(struct gl_loop *l, struct gl_timer *t)
{
    size_t i = t->index;
    struct gl_timer *last;

    t->index = SIZE_MAX;
    last = l->heap[--l->n];
    if (last == t)
        return;
    gl_heap_put(l, i, last);
    if (i > 0 && gl_before(last, l->heap[(i - 1) / 2]))
        gl_heap_up(l, i);
    else
        gl_heap_down(l, i);
}

/* The timers' source: ready when the first deadline has come, else its
 * poll waits until then (rounded up to the millisecond).  prepare and
 * check read the heap, which only the loop thread changes, and never
 * while it polls: a start or stop needs nothing from GLib until the next
 * prepare.  (g_source_set_ready_time() would do, but each change of the
 * first deadline would write to the context's wakeup fd.) */
static gboolean gl_clock_prepare(GSource *source, gint *timeout)
{
    struct gl_loop *l = ((struct gl_clock_source *)source)->loop;
    gint64 wait;

    if (l->n == 0) {
        *timeout = -1;
        return FALSE;
    }
    wait = l->heap[0]->deadline - g_get_monotonic_time();
    if (wait <= 0) {
        *timeout = 0;
        return TRUE;
    }
    wait = (wait + 999) / 1000;
    *timeout = wait > G_MAXINT ? G_MAXINT : (gint)wait;
    return FALSE;
}

static gboolean gl_clock_check(GSource *source)
{
    struct gl_loop *l = ((struct gl_clock_source *)source)->loop;

    return l->n > 0 && l->heap[0]->deadline <= g_get_monotonic_time();
}

/* Fires the due timers in order.  A timer started by a callback of this
 * dispatch waits for the next iteration (its sequence number is at least
 * limit), even when its deadline has already come: a 0 delay means the
 * next iteration, and a timer that restarts itself cannot loop here. */
static gboolean gl_clock_dispatch(GSource *source, GSourceFunc unused, gpointer data)
{
    struct gl_loop *l = ((struct gl_clock_source *)source)->loop;
    gint64 now = g_get_monotonic_time();
    uint64_t limit = l->seq;

    (void)unused;
    (void)data;
    l->dispatching = true;
    while (l->n > 0) {
        struct gl_timer *t = l->heap[0];

        if (t->deadline > now || t->seq >= limit)
            break;
        gl_heap_remove(l, t);
        t->cb(t->arg);
        if (l->released) {
            /* the callback dropped the loop's last reference: the
             * release destroyed this source and left the state to us */
            deferred_free(l);
            return G_SOURCE_REMOVE;
        }
    }
    l->dispatching = false;
    return G_SOURCE_CONTINUE;
}

static GSourceFuncs gl_clock_funcs = {
    gl_clock_prepare, gl_clock_check, gl_clock_dispatch, NULL, NULL, NULL
};

/* ---- timers ---------------------------------------------------------------- */

static void *gl_timer_new(void *impl, deferred_loop_fn cb, void *arg)
{
    struct gl_loop *l = impl;
    struct gl_timer *t;

    t = deferred_malloc(sizeof *t);
    if (!t) {
        errno = ENOMEM;
        return NULL;
    }
    if (l->handles == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        struct gl_timer **heap;

        if (cap > SIZE_MAX / sizeof *heap ||
            !(heap = deferred_malloc(cap * sizeof *heap))) {
            deferred_free(t);
            errno = ENOMEM;
            return NULL;
        }
        if (l->n > 0)
            memcpy(heap, l->heap, l->n * sizeof *heap);
        deferred_free(l->heap);
        l->heap = heap;
        l->cap = cap;
    }
    l->handles++;
    t->loop = l;
    t->cb = cb;
    t->arg = arg;
    t->deadline = 0;
    t->seq = 0;
    t->index = SIZE_MAX;
    return t;
}

static void gl_timer_stop(void *timer)
{
    struct gl_timer *t = timer;

    if (t->index != SIZE_MAX)
        gl_heap_remove(t->loop, t);
}

static void gl_timer_start(void *timer, double seconds)
{
    struct gl_timer *t = timer;
    struct gl_loop *l = t->loop;
    gint64 now, delay;
    double us;

    if (t->index != SIZE_MAX)
        gl_heap_remove(l, t);
    /* the caller checked seconds; !(us > 0) also takes NaN to 0.  The
     * delay is rounded up to the microsecond, never down. */
    us = seconds * 1e6;
    if (!(us > 0)) {
        delay = 0;
    } else if (us >= (double)GL_MAX_DELAY_US) {
        delay = GL_MAX_DELAY_US;
    } else {
        delay = (gint64)us;
        if ((double)delay < us)
            delay++;
    }
    now = g_get_monotonic_time();
    t->deadline = now + delay;
    t->seq = l->seq++;
    l->heap[l->n] = t;
    t->index = l->n++;
    gl_heap_up(l, t->index);
}

static void gl_timer_free(void *timer)
{
    struct gl_timer *t = timer;

    if (!t)
        return;
    gl_timer_stop(t);
    t->loop->handles--;
    deferred_free(t);
}

/* ---- fd watchers ----------------------------------------------------------- */

static gboolean gl_io_dispatch(GSource *source, GSourceFunc unused, gpointer data)
{
    struct gl_io *io = ((struct gl_io_source *)source)->io;
    GIOCondition got;
    int revents = 0;

    (void)unused;
    (void)data;
    /* set(0) by an earlier callback of this iteration removed the fd */
    if (!io || !io->tag)
        return G_SOURCE_CONTINUE;
    got = g_source_query_unix_fd(source, io->tag);
    if (got & G_IO_IN)
        revents |= DEFERRED_LOOP_READ;
    if (got & G_IO_OUT)
        revents |= DEFERRED_LOOP_WRITE;
    /* hangup, error, closed fd: the read or write that follows says
     * which (0 bytes, EPIPE, EBADF), rather than a silent hang */
    if (got & (G_IO_HUP | G_IO_ERR | G_IO_NVAL))
        revents |= io->events;
    revents &= io->events;
    if (revents)
        io->cb(io->arg, revents);
    return G_SOURCE_CONTINUE;
}

static GSourceFuncs gl_io_funcs = {
    NULL, NULL, gl_io_dispatch, NULL, NULL, NULL
};

static void *gl_io_new(void *impl, int fd, deferred_loop_io_fn cb, void *arg)
{
    struct gl_loop *l = impl;
    struct gl_io *io;
    GSource *src;

    if (fd < 0) {
        errno = EINVAL;
        return NULL;
    }
    io = deferred_malloc(sizeof *io);
    if (!io) {
        errno = ENOMEM;
        return NULL;
    }
    src = g_source_new(&gl_io_funcs, sizeof(struct gl_io_source));
    ((struct gl_io_source *)src)->io = io;
    gl_source_name(src, "deferred fd watcher");
    io->src = src;
    io->tag = NULL;
    io->fd = fd;
    io->events = 0;
    io->cb = cb;
    io->arg = arg;
    g_source_attach(src, l->ctx);
    return io;
}

/* Watching nothing removes the fd from the poll set: poll() reports a
 * hangup or an error even for no events, and the loop would spin. */
static void gl_io_set(void *watcher, int events)
{
    struct gl_io *io = watcher;
    GIOCondition cond = G_IO_HUP | G_IO_ERR;

    events &= DEFERRED_LOOP_READ | DEFERRED_LOOP_WRITE;
    if (events == io->events)
        return;
    io->events = events;
    if (events == 0) {
        g_source_remove_unix_fd(io->src, io->tag);
        io->tag = NULL;
        return;
    }
    if (events & DEFERRED_LOOP_READ)
        cond |= G_IO_IN;
    if (events & DEFERRED_LOOP_WRITE)
        cond |= G_IO_OUT;
    if (io->tag)
        g_source_modify_unix_fd(io->src, io->tag, cond);
    else
        io->tag = g_source_add_unix_fd(io->src, io->fd, cond);
}

static void gl_io_free(void *watcher)
{
    struct gl_io *io = watcher;

    if (!io)
        return;
    ((struct gl_io_source *)io->src)->io = NULL;
    g_source_destroy(io->src);
    g_source_unref(io->src);
    deferred_free(io);
}

/* ---- wakeups --------------------------------------------------------------- */

static gboolean gl_wakeup_prepare(GSource *source, gint *timeout)
{
    struct gl_wakeup *w = ((struct gl_wakeup_source *)source)->w;

    *timeout = -1;
    return w && __atomic_load_n(&w->pending, __ATOMIC_ACQUIRE) != 0;
}

static gboolean gl_wakeup_check(GSource *source)
{
    struct gl_wakeup *w = ((struct gl_wakeup_source *)source)->w;

    return w && __atomic_load_n(&w->pending, __ATOMIC_ACQUIRE) != 0;
}

/* The flag is cleared before the callback: a send during the callback
 * makes another one. */
static gboolean gl_wakeup_dispatch(GSource *source, GSourceFunc unused, gpointer data)
{
    struct gl_wakeup *w = ((struct gl_wakeup_source *)source)->w;

    (void)unused;
    (void)data;
    if (w && __atomic_exchange_n(&w->pending, 0, __ATOMIC_ACQ_REL) != 0)
        w->cb(w->arg);
    return G_SOURCE_CONTINUE;
}

static GSourceFuncs gl_wakeup_funcs = {
    gl_wakeup_prepare, gl_wakeup_check, gl_wakeup_dispatch, NULL, NULL, NULL
};

static void *gl_wakeup_new(void *impl, deferred_loop_fn cb, void *arg)
{
    struct gl_loop *l = impl;
    struct gl_wakeup *w;
    GSource *src;

    w = deferred_malloc(sizeof *w);
    if (!w) {
        errno = ENOMEM;
        return NULL;
    }
    src = g_source_new(&gl_wakeup_funcs, sizeof(struct gl_wakeup_source));
    ((struct gl_wakeup_source *)src)->w = w;
    gl_source_name(src, "deferred wakeup");
    w->src = src;
    w->ctx = l->ctx;
    w->pending = 0;
    w->cb = cb;
    w->arg = arg;
    g_source_attach(src, l->ctx);
    return w;
}

/* Any thread; no allocation (g_main_context_wakeup() writes to the
 * context's eventfd or pipe).  Only the send that raises the flag wakes
 * the context: the others coalesce into the same dispatch. */
static void gl_wakeup_send(void *wakeup)
{
    struct gl_wakeup *w = wakeup;

    if (__atomic_exchange_n(&w->pending, 1, __ATOMIC_ACQ_REL) == 0)
        g_main_context_wakeup(w->ctx);
}

/* A GLib loop runs until it is quit: holding changes nothing here
 * (deferred_loop_alive() counts held wakeups for the user's quit). */
static void gl_wakeup_hold(void *wakeup, bool hold)
{
    (void)wakeup;
    (void)hold;
}

static void gl_wakeup_free(void *wakeup)
{
    struct gl_wakeup *w = wakeup;

    if (!w)
        return;
    ((struct gl_wakeup_source *)w->src)->w = NULL;
    g_source_destroy(w->src);
    g_source_unref(w->src);
    deferred_free(w);
}

/* ---- the loop -------------------------------------------------------------- */

static void gl_release(void *impl)
{
    struct gl_loop *l = impl;

    g_source_destroy(l->clock);
    g_source_unref(l->clock);
    g_main_context_unref(l->ctx);
    deferred_free(l->heap);
    l->heap = NULL;
    l->n = l->cap = 0;
    if (l->dispatching)
        l->released = true; /* gl_clock_dispatch frees it */
    else
        deferred_free(l);
}

static const deferred_loop_ops_t gl_ops = {
    DEFERRED_LOOP_OPS_VERSION,
    "glib",
    gl_now,
    gl_timer_new,
    gl_timer_start,
    gl_timer_stop,
    gl_timer_free,
    gl_io_new,
    gl_io_set,
    gl_io_free,
    gl_wakeup_new,
    gl_wakeup_send,
    gl_wakeup_hold,
    gl_wakeup_free,
    gl_release,
    NULL, /* describe: a dump shows the loop layer's own lines only */
};

deferred_loop_t *deferred_glib_loop_new(GMainContext *context)
{
    struct gl_loop *l;
    deferred_loop_t *loop;

    l = deferred_malloc(sizeof *l);
    if (!l) {
        errno = ENOMEM;
        return NULL;
    }
    memset(l, 0, sizeof *l);
    l->ctx = g_main_context_ref(context ? context : g_main_context_default());
    l->clock = g_source_new(&gl_clock_funcs, sizeof(struct gl_clock_source));
    ((struct gl_clock_source *)l->clock)->loop = l;
    gl_source_name(l->clock, "deferred timers");
    loop = deferred_loop_new(&gl_ops, l);
    if (!loop) {
        int err = errno;

        g_source_unref(l->clock);
        g_main_context_unref(l->ctx);
        deferred_free(l);
        errno = err;
        return NULL;
    }
    g_source_attach(l->clock, l->ctx);
    return loop;
}
