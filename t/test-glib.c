/*
 * test-glib.c: libdeferred-glib (deferred/glib.h), the loop interface's
 * contract (deferred/loop.h, deferred_loop_ops_t) on a GMainContext.
 *
 * The tests drive the adapter's table directly, as the library's loop
 * layer does: the table comes from the loop object (lib/loop/
 * loop-private.h; deferred/loop.h has no public accessor for it).  Each
 * test runs on a GMainContext of its own (the fixture's), iterated with
 * g_main_context_iteration(); a guard source on it wakes a blocking
 * iteration every 50 ms, so that a callback that never comes fails the
 * test after 10 s (ITERATE_UNTIL) instead of hanging it, under valgrind
 * too.  Ordering is checked by sleeping until every timer is due and
 * then running one iteration, against bounds of each deadline read
 * around its start (so a test thread descheduled between two starts
 * cannot make a right order look wrong); the only time bound asserted is
 * a lower one (a timer never fires early).
 *
 * testutil's allocator is not thread-safe: the threads here only call
 * wakeup_send, which does not allocate.
 */
#include "testutil.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>
#include <deferred/glib.h>

#include "loop/loop-private.h"
#include "loop-harness.h"

static GMainContext *ctx;
static deferred_loop_t *loop;
static const deferred_loop_ops_t *ops;
static void *impl;

static gboolean guard_tick(gpointer data)
{
    (void)data;
    return G_SOURCE_CONTINUE;
}

static void add_guard(GMainContext *c)
{
    GSource *guard = g_timeout_source_new(50);

    g_source_set_callback(guard, guard_tick, NULL, NULL);
    g_source_attach(guard, c);
    g_source_unref(guard);
}

static void setup(void)
{
    tu_setup();
    ctx = g_main_context_new();
    add_guard(ctx);
    loop = deferred_glib_loop_new(ctx);
    ck_assert_ptr_nonnull(loop);
    ops = loop->ops;
    impl = deferred_loop_impl(loop);
}

static void teardown(void)
{
    deferred_loop_unref(loop);
    loop = NULL;
    g_main_context_unref(ctx);
    ctx = NULL;
    tu_teardown();
}

/* Iterate ctx, blocking, until cond holds; fail after 10 s. */
#define ITERATE_UNTIL(c, cond)                                               \
    do {                                                                     \
        gint64 until_ = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;        \
        while (!(cond) && g_get_monotonic_time() < until_)                   \
            g_main_context_iteration((c), TRUE);                             \
        ck_assert_msg((cond), "still not %s after 10 s", #cond);             \
    } while (0)

static void nowait(int times)
{
    while (times-- > 0)
        g_main_context_iteration(ctx, FALSE);
}

/* ---- the loop ---------------------------------------------------------- */

START_TEST(test_name_and_now)
{
    gint64 before, after;
    double now;

    ck_assert_str_eq(deferred_loop_name(loop), "glib");
    ck_assert_int_eq(ops->version, DEFERRED_LOOP_OPS_VERSION);
    before = g_get_monotonic_time();
    now = deferred_loop_now(loop);
    after = g_get_monotonic_time();
    /* g_get_monotonic_time() in seconds, read afresh */
    ck_assert(now * 1e6 >= (double)before - 1.0);
    ck_assert(now * 1e6 <= (double)after + 1.0);
}
END_TEST

/* ---- timers ------------------------------------------------------------ */

#define NT 64

struct tcall {
    int id;
    int calls;
    void *timer;
};

static int order[NT * 2];
static int norder;

static void record_timer(void *arg)
{
    struct tcall *c = arg;

    c->calls++;
    if (norder < NT * 2)
        order[norder++] = c->id;
}

static void sleep_us(gint64 us)
{
    g_usleep((gulong)us);
}

/* Each timer's deadline lies in [lo, hi] (monotonic microseconds, read
 * around its last start).  A timer that fired before another must not be
 * certainly due after it: lo of the first <= hi of the second.  Exact
 * while the starts run unbroken; robust when the test thread is
 * descheduled between two starts, which reorders the deadlines. */
static gint64 lo[NT], hi[NT];

static void start_timed(struct tcall *c, double seconds)
{
    gint64 us = (gint64)(seconds * 1e6);

    lo[c->id] = g_get_monotonic_time() + us;
    ops->timer_start(c->timer, seconds);
    hi[c->id] = g_get_monotonic_time() + us + 1;
}

static void check_deadline_order(void)
{
    int j;

    for (j = 1; j < norder; j++) {
        int a = order[j - 1], b = order[j];

        ck_assert_msg(lo[a] <= hi[b], "timer %d fired before %d, due %lld us after it",
                      a, b, (long long)(lo[a] - hi[b]));
    }
}

/* Whether the starts of timers 0..n-1 ran within 2 ms of each other (the
 * delays below differ by 5 ms or more: the order of the delays is then
 * the order of the deadlines). */
static bool starts_unbroken(const double *delays, int n)
{
    gint64 first = G_MAXINT64, last = 0;
    int i;

    for (i = 0; i < n; i++) {
        gint64 us = (gint64)(delays[i] * 1e6);

        first = MIN(first, lo[i] - us);
        last = MAX(last, hi[i] - us);
    }
    return last - first < 2000;
}

/* Due in the same iteration, timers fire in the order of their deadlines,
 * equal deadlines in start order, each once.  (Sources of one priority
 * would be dispatched in the order they were attached.) */
START_TEST(test_timers_in_order_same_iteration)
{
    static const double delays[5] = {0.030, 0.010, 0.020, 0.0, 0.010};
    static const int expect[5] = {3, 1, 4, 2, 0};
    struct tcall c[5];
    int i;

    norder = 0;
    for (i = 0; i < 5; i++) {
        c[i].id = i;
        c[i].calls = 0;
        c[i].timer = ops->timer_new(impl, record_timer, &c[i]);
        ck_assert_ptr_nonnull(c[i].timer);
    }
    for (i = 0; i < 5; i++)
        start_timed(&c[i], delays[i]);
    ck_assert_int_eq(norder, 0);
    sleep_us(60000);
    nowait(1);
    ck_assert_int_eq(norder, 5);
    check_deadline_order();
    if (starts_unbroken(delays, 5))
        for (i = 0; i < 5; i++)
            ck_assert_int_eq(order[i], expect[i]);
    nowait(3);
    for (i = 0; i < 5; i++) {
        ck_assert_int_eq(c[i].calls, 1);
        ops->timer_free(c[i].timer);
    }
}
END_TEST

/* The same without the sleep: each fires once, in order, whatever the
 * iterations they fall in. */
START_TEST(test_timers_in_order_running)
{
    static const double delays[4] = {0.040, 0.005, 0.020, 0.0};
    static const int expect[4] = {3, 1, 2, 0};
    struct tcall c[4], sentinel = {9, 0, NULL};
    int i;

    norder = 0;
    for (i = 0; i < 4; i++) {
        c[i].id = i;
        c[i].calls = 0;
        c[i].timer = ops->timer_new(impl, record_timer, &c[i]);
        ck_assert_ptr_nonnull(c[i].timer);
        start_timed(&c[i], delays[i]);
    }
    ITERATE_UNTIL(ctx, norder >= 4);
    ck_assert_int_eq(norder, 4);
    check_deadline_order();
    if (starts_unbroken(delays, 4))
        for (i = 0; i < 4; i++)
            ck_assert_int_eq(order[i], expect[i]);
    /* once: nothing more after a later timer */
    sentinel.timer = ops->timer_new(impl, record_timer, &sentinel);
    ck_assert_ptr_nonnull(sentinel.timer);
    ops->timer_start(sentinel.timer, 0.02);
    ITERATE_UNTIL(ctx, sentinel.calls == 1);
    ck_assert_int_eq(norder, 5);
    for (i = 0; i < 4; i++) {
        ck_assert_int_eq(c[i].calls, 1);
        ops->timer_free(c[i].timer);
    }
    ops->timer_free(sentinel.timer);
}
END_TEST

/* The heap under starts, restarts and stops of many timers (which also
 * grow the heap's array past its first 8 slots): the survivors fire in
 * deadline order, the stopped ones never. */
START_TEST(test_timers_heap)
{
    struct tcall c[NT];
    int k[NT], i, fired = 0;
    int stopped[NT];

    norder = 0;
    for (i = 0; i < NT; i++) {
        c[i].id = i;
        c[i].calls = 0;
        c[i].timer = ops->timer_new(impl, record_timer, &c[i]);
        ck_assert_ptr_nonnull(c[i].timer);
        stopped[i] = 0;
    }
    /* delays in 20 ms steps */
    for (i = 0; i < NT; i++) {
        k[i] = (i * 7) % 5;
        start_timed(&c[i], k[i] * 0.020);
    }
    for (i = 0; i < NT; i += 3) {
        k[i] = (i * 3 + 1) % 5;
        start_timed(&c[i], k[i] * 0.020); /* restart */
    }
    for (i = 1; i < NT; i += 5) {
        ops->timer_stop(c[i].timer);
        ops->timer_stop(c[i].timer); /* a no-op when not running */
        stopped[i] = 1;
    }
    sleep_us(150000);
    nowait(1);
    for (i = 0; i < NT; i++)
        fired += !stopped[i];
    ck_assert_int_eq(norder, fired);
    check_deadline_order();
    nowait(2);
    for (i = 0; i < NT; i++) {
        ck_assert_int_eq(c[i].calls, stopped[i] ? 0 : 1);
        ops->timer_free(c[i].timer);
    }
}
END_TEST

/* 0 means the next iteration, never inside start; a timer that restarts
 * itself with 0 fires once per iteration, not in a loop. */
static void restart_self(void *arg)
{
    struct tcall *c = arg;

    c->calls++;
    ops->timer_start(c->timer, 0.0);
}

START_TEST(test_timer_zero_next_iteration)
{
    struct tcall c = {0, 0, NULL}, r = {1, 0, NULL};

    c.timer = ops->timer_new(impl, record_timer, &c);
    r.timer = ops->timer_new(impl, restart_self, &r);
    ck_assert_ptr_nonnull(c.timer);
    ck_assert_ptr_nonnull(r.timer);
    norder = 0;
    ops->timer_start(c.timer, 0.0);
    ck_assert_int_eq(c.calls, 0);
    nowait(1);
    ck_assert_int_eq(c.calls, 1);
    ops->timer_start(r.timer, 0.0);
    ck_assert_int_eq(r.calls, 0);
    nowait(1);
    ck_assert_int_eq(r.calls, 1);
    nowait(1);
    ck_assert_int_eq(r.calls, 2);
    ops->timer_stop(r.timer);
    nowait(2);
    ck_assert_int_eq(r.calls, 2);
    ck_assert_int_eq(c.calls, 1);
    ops->timer_free(c.timer);
    ops->timer_free(r.timer);
}
END_TEST

/* Starting a running timer restarts it with the new delay. */
START_TEST(test_timer_restart)
{
    struct tcall c = {0, 0, NULL}, s = {1, 0, NULL};

    c.timer = ops->timer_new(impl, record_timer, &c);
    s.timer = ops->timer_new(impl, record_timer, &s);
    ck_assert_ptr_nonnull(c.timer);
    ck_assert_ptr_nonnull(s.timer);
    norder = 0;
    ops->timer_start(c.timer, 1000.0);
    ops->timer_start(c.timer, 0.0);
    nowait(1);
    ck_assert_int_eq(c.calls, 1);
    ops->timer_start(c.timer, 0.0);
    ops->timer_start(c.timer, 1000.0);
    ops->timer_start(s.timer, 0.02);
    ITERATE_UNTIL(ctx, s.calls == 1);
    nowait(1);
    ck_assert_int_eq(c.calls, 1);
    ops->timer_free(c.timer); /* free while running: stops it */
    ops->timer_free(s.timer);
}
END_TEST

/* Stopped, a timer never fires; stop when not running is a no-op. */
START_TEST(test_timer_stop)
{
    struct tcall c = {0, 0, NULL}, s = {1, 0, NULL};

    c.timer = ops->timer_new(impl, record_timer, &c);
    s.timer = ops->timer_new(impl, record_timer, &s);
    ck_assert_ptr_nonnull(c.timer);
    ck_assert_ptr_nonnull(s.timer);
    ops->timer_stop(c.timer);
    ops->timer_start(c.timer, 0.0);
    ops->timer_stop(c.timer);
    ops->timer_start(s.timer, 0.01);
    ITERATE_UNTIL(ctx, s.calls == 1);
    nowait(2);
    ck_assert_int_eq(c.calls, 0);
    /* stopped after it fired: still a no-op */
    ops->timer_start(c.timer, 0.0);
    nowait(1);
    ck_assert_int_eq(c.calls, 1);
    ops->timer_stop(c.timer);
    ops->timer_free(c.timer);
    ops->timer_free(s.timer);
}
END_TEST

/* A delay is never shortened: the callback comes at least that long
 * after start, on the monotonic clock and on the loop's time. */
static gint64 fired_at;
static double fired_now;

static void note_time(void *arg)
{
    struct tcall *c = arg;

    c->calls++;
    fired_at = g_get_monotonic_time();
    fired_now = deferred_loop_now(loop);
}

START_TEST(test_timer_not_early)
{
    struct tcall c = {0, 0, NULL};
    gint64 start;
    double start_now;

    c.timer = ops->timer_new(impl, note_time, &c);
    ck_assert_ptr_nonnull(c.timer);
    start = g_get_monotonic_time();
    start_now = deferred_loop_now(loop);
    ops->timer_start(c.timer, 0.0503);
    ITERATE_UNTIL(ctx, c.calls == 1);
    ck_assert_msg(fired_at - start >= 50300, "fired after %lld us",
                  (long long)(fired_at - start));
    ck_assert(fired_now - start_now >= 0.0503);
    ops->timer_free(c.timer);
}
END_TEST

/* Freed in its own callback; freed or stopped by another callback of the
 * same dispatch, before its turn: it never runs. */
static void free_self(void *arg)
{
    struct tcall *c = arg;

    c->calls++;
    ops->timer_free(c->timer);
    c->timer = NULL;
}

static struct tcall *pair[2];

static void free_other(void *arg)
{
    struct tcall *c = arg;
    struct tcall *o = pair[c == pair[0]];

    c->calls++;
    if (o->timer) {
        ops->timer_free(o->timer);
        o->timer = NULL;
    }
}

static void stop_other(void *arg)
{
    struct tcall *c = arg;
    struct tcall *o = pair[c == pair[0]];

    c->calls++;
    ops->timer_stop(o->timer);
}

START_TEST(test_timer_free_in_callback)
{
    struct tcall c = {0, 0, NULL}, a = {1, 0, NULL}, b = {2, 0, NULL};
    int i;

    c.timer = ops->timer_new(impl, free_self, &c);
    ck_assert_ptr_nonnull(c.timer);
    ops->timer_start(c.timer, 0.0);
    nowait(2);
    ck_assert_int_eq(c.calls, 1);
    ck_assert_ptr_null(c.timer);

    pair[0] = &a;
    pair[1] = &b;
    a.timer = ops->timer_new(impl, free_other, &a);
    b.timer = ops->timer_new(impl, free_other, &b);
    ck_assert_ptr_nonnull(a.timer);
    ck_assert_ptr_nonnull(b.timer);
    ops->timer_start(a.timer, 0.0);
    ops->timer_start(b.timer, 0.0);
    nowait(3);
    ck_assert_int_eq(a.calls + b.calls, 1);
    ops->timer_free(a.timer);
    ops->timer_free(b.timer);

    a.calls = b.calls = 0;
    a.timer = ops->timer_new(impl, stop_other, &a);
    b.timer = ops->timer_new(impl, stop_other, &b);
    ck_assert_ptr_nonnull(a.timer);
    ck_assert_ptr_nonnull(b.timer);
    for (i = 0; i < 2; i++)
        ops->timer_start(pair[i]->timer, 0.001);
    sleep_us(5000);
    nowait(3);
    ck_assert_int_eq(a.calls + b.calls, 1);
    ops->timer_free(a.timer);
    ops->timer_free(b.timer);
}
END_TEST

/* ---- fd watchers ------------------------------------------------------- */

struct iocall {
    int calls;
    int revents;
    void *io;
};

static void record_io(void *arg, int revents)
{
    struct iocall *c = arg;

    c->calls++;
    c->revents = revents;
}

static void make_pipe(int fds[2])
{
    ck_assert_int_eq(pipe(fds), 0);
    ck_assert_int_eq(fcntl(fds[0], F_SETFL, O_NONBLOCK), 0);
    ck_assert_int_eq(fcntl(fds[1], F_SETFL, O_NONBLOCK), 0);
}

/* Level-triggered read readiness; set(0) stops; watching again resumes. */
START_TEST(test_io_read)
{
    struct iocall c = {0, 0, NULL};
    int fds[2];
    char byte;

    make_pipe(fds);
    c.io = ops->io_new(impl, fds[0], record_io, &c);
    ck_assert_ptr_nonnull(c.io);
    nowait(2);
    ck_assert_int_eq(c.calls, 0); /* watching nothing */
    ops->io_set(c.io, DEFERRED_LOOP_READ);
    nowait(2);
    ck_assert_int_eq(c.calls, 0); /* nothing to read */
    ck_assert_int_eq(write(fds[1], "x", 1), 1);
    ck_assert_int_eq(c.calls, 0); /* never inside a call */
    nowait(1);
    ck_assert_int_eq(c.calls, 1);
    ck_assert_int_eq(c.revents, DEFERRED_LOOP_READ);
    nowait(1);
    ck_assert_int_eq(c.calls, 2); /* level-triggered: still readable */
    ops->io_set(c.io, 0);
    nowait(2);
    ck_assert_int_eq(c.calls, 2);
    ops->io_set(c.io, DEFERRED_LOOP_READ);
    nowait(1);
    ck_assert_int_eq(c.calls, 3);
    ck_assert_int_eq(read(fds[0], &byte, 1), 1);
    nowait(2);
    ck_assert_int_eq(c.calls, 3);
    ops->io_free(c.io);
    close(fds[0]);
    close(fds[1]);
}
END_TEST

/* Write readiness, and READ | WRITE on one fd reports only what is ready. */
START_TEST(test_io_write)
{
    struct iocall c = {0, 0, NULL};
    int fds[2];

    make_pipe(fds);
    c.io = ops->io_new(impl, fds[1], record_io, &c);
    ck_assert_ptr_nonnull(c.io);
    ops->io_set(c.io, DEFERRED_LOOP_WRITE);
    nowait(1);
    ck_assert_int_eq(c.calls, 1);
    ck_assert_int_eq(c.revents, DEFERRED_LOOP_WRITE);
    ops->io_set(c.io, DEFERRED_LOOP_READ | DEFERRED_LOOP_WRITE);
    nowait(1);
    ck_assert_int_eq(c.calls, 2);
    ck_assert_int_eq(c.revents, DEFERRED_LOOP_WRITE);
    ops->io_set(c.io, 0);
    nowait(2);
    ck_assert_int_eq(c.calls, 2);
    ops->io_free(c.io);
    close(fds[0]);
    close(fds[1]);
}
END_TEST

/* A hangup is readiness: the read that follows sees the end of file (poll
 * reports POLLHUP alone for a drained pipe whose writer closed).  A
 * writer whose reader closed is writable (POLLERR): the write gets EPIPE.
 * Watching nothing, neither is reported. */
START_TEST(test_io_hangup)
{
    struct iocall r = {0, 0, NULL}, w = {0, 0, NULL};
    int fds[2];
    char byte;

    make_pipe(fds);
    r.io = ops->io_new(impl, fds[0], record_io, &r);
    ck_assert_ptr_nonnull(r.io);
    ops->io_set(r.io, DEFERRED_LOOP_READ);
    close(fds[1]);
    nowait(1);
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(r.revents, DEFERRED_LOOP_READ);
    ck_assert_int_eq(read(fds[0], &byte, 1), 0);
    ops->io_set(r.io, 0);
    nowait(2);
    ck_assert_int_eq(r.calls, 1);
    ops->io_free(r.io);
    close(fds[0]);

    make_pipe(fds);
    w.io = ops->io_new(impl, fds[1], record_io, &w);
    ck_assert_ptr_nonnull(w.io);
    close(fds[0]);
    ops->io_set(w.io, DEFERRED_LOOP_WRITE);
    nowait(1);
    ck_assert_int_eq(w.calls, 1);
    ck_assert_int_eq(w.revents, DEFERRED_LOOP_WRITE);
    ck_assert_int_eq(write(fds[1], "x", 1), -1);
    ck_assert_int_eq(errno, EPIPE);
    ops->io_free(w.io);
    close(fds[1]);
}
END_TEST

/* Freed in its own callback; two watchers of one ready fd, each freeing
 * the other: only the first runs in that iteration. */
static void io_free_self(void *arg, int revents)
{
    struct iocall *c = arg;

    (void)revents;
    c->calls++;
    ops->io_free(c->io);
    c->io = NULL;
}

static struct iocall *iopair[2];

static void io_free_other(void *arg, int revents)
{
    struct iocall *c = arg;
    struct iocall *o = iopair[c == iopair[0]];

    (void)revents;
    c->calls++;
    if (o->io) {
        ops->io_free(o->io);
        o->io = NULL;
    }
}

START_TEST(test_io_free_in_callback)
{
    struct iocall c = {0, 0, NULL}, a = {0, 0, NULL}, b = {0, 0, NULL};
    int fds[2];

    make_pipe(fds);
    ck_assert_int_eq(write(fds[1], "x", 1), 1);
    c.io = ops->io_new(impl, fds[0], io_free_self, &c);
    ck_assert_ptr_nonnull(c.io);
    ops->io_set(c.io, DEFERRED_LOOP_READ);
    nowait(3);
    ck_assert_int_eq(c.calls, 1);
    ck_assert_ptr_null(c.io);

    iopair[0] = &a;
    iopair[1] = &b;
    a.io = ops->io_new(impl, fds[0], io_free_other, &a);
    b.io = ops->io_new(impl, fds[0], io_free_other, &b);
    ck_assert_ptr_nonnull(a.io);
    ck_assert_ptr_nonnull(b.io);
    ops->io_set(a.io, DEFERRED_LOOP_READ);
    ops->io_set(b.io, DEFERRED_LOOP_READ);
    nowait(1);
    ck_assert_int_eq(a.calls + b.calls, 1);
    ops->io_free(a.io);
    ops->io_free(b.io);
    close(fds[0]);
    close(fds[1]);
}
END_TEST

/* ---- wakeups ----------------------------------------------------------- */

struct wcall {
    int calls;
    int resend;               /* sends to make from the callback */
    pthread_t seen;           /* the callback's thread */
    int value;                /* what the sender wrote, seen by cb */
    int sent_value;           /* written by the sender before its send */
    void *w;
    int sends;                /* the thread's sends */
    int delay_us;             /* before the thread's first send */
};

static void record_wakeup(void *arg)
{
    struct wcall *c = arg;

    c->calls++;
    c->seen = pthread_self();
    c->value = c->sent_value;
    if (c->resend > 0) {
        c->resend--;
        ops->wakeup_send(c->w);
    }
}

static void *sender(void *arg)
{
    struct wcall *c = arg;
    int i;

    if (c->delay_us)
        g_usleep((gulong)c->delay_us);
    c->sent_value = 42;
    for (i = 0; i < c->sends; i++)
        ops->wakeup_send(c->w);
    return NULL;
}

/* A send from another thread wakes a context blocked in its poll (the
 * thread sends after a pause, and no guard source is on this context)
 * and runs the callback on the loop thread, which sees what the sender
 * wrote before it sent. */
START_TEST(test_wakeup_from_thread)
{
    GMainContext *quiet = g_main_context_new();
    deferred_loop_t *l = deferred_glib_loop_new(quiet);
    struct wcall c;
    pthread_t th;

    ck_assert_ptr_nonnull(l);
    memset(&c, 0, sizeof c);
    c.w = l->ops->wakeup_new(deferred_loop_impl(l), record_wakeup, &c);
    ck_assert_ptr_nonnull(c.w);
    c.sends = 1;
    c.delay_us = 20000;
    ck_assert_int_eq(pthread_create(&th, NULL, sender, &c), 0);
    /* blocks until the wakeup: nothing else is on this context */
    while (c.calls == 0)
        g_main_context_iteration(quiet, TRUE);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(c.calls, 1);
    ck_assert(pthread_equal(c.seen, pthread_self()));
    ck_assert_int_eq(c.value, 42);
    l->ops->wakeup_free(c.w);
    deferred_loop_unref(l);
    g_main_context_unref(quiet);
}
END_TEST

/* Sends before the callback starts coalesce into one call, from the loop
 * thread and from another; a send during the callback makes another. */
START_TEST(test_wakeup_coalesce)
{
    struct wcall c;
    pthread_t th;

    memset(&c, 0, sizeof c);
    c.w = ops->wakeup_new(impl, record_wakeup, &c);
    ck_assert_ptr_nonnull(c.w);
    nowait(2);
    ck_assert_int_eq(c.calls, 0);
    ops->wakeup_send(c.w);
    ops->wakeup_send(c.w);
    ops->wakeup_send(c.w);
    ck_assert_int_eq(c.calls, 0); /* never inside send */
    nowait(1);
    ck_assert_int_eq(c.calls, 1);
    nowait(2);
    ck_assert_int_eq(c.calls, 1);

    c.sends = 1000;
    ck_assert_int_eq(pthread_create(&th, NULL, sender, &c), 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    nowait(3);
    ck_assert_int_eq(c.calls, 2);
    ck_assert(pthread_equal(c.seen, pthread_self()));

    c.resend = 1;
    ops->wakeup_send(c.w);
    nowait(1);
    ck_assert_int_eq(c.calls, 3);
    nowait(1);
    ck_assert_int_eq(c.calls, 4);
    nowait(2);
    ck_assert_int_eq(c.calls, 4);
    ops->wakeup_free(c.w);
}
END_TEST

/* hold is accepted and changes nothing; freed in its own callback; freed
 * with a send pending, it never runs. */
static void wakeup_free_self(void *arg)
{
    struct wcall *c = arg;

    c->calls++;
    ops->wakeup_free(c->w);
    c->w = NULL;
}

START_TEST(test_wakeup_hold_and_free)
{
    struct wcall c, d;

    memset(&c, 0, sizeof c);
    memset(&d, 0, sizeof d);
    c.w = ops->wakeup_new(impl, wakeup_free_self, &c);
    ck_assert_ptr_nonnull(c.w);
    ops->wakeup_hold(c.w, true);
    ops->wakeup_hold(c.w, false);
    ops->wakeup_hold(c.w, true);
    nowait(2);
    ck_assert_int_eq(c.calls, 0);
    ops->wakeup_send(c.w);
    nowait(3);
    ck_assert_int_eq(c.calls, 1);
    ck_assert_ptr_null(c.w);

    d.w = ops->wakeup_new(impl, record_wakeup, &d);
    ck_assert_ptr_nonnull(d.w);
    ops->wakeup_send(d.w);
    ops->wakeup_free(d.w);
    nowait(3);
    ck_assert_int_eq(d.calls, 0);
}
END_TEST

/* ---- contexts and the loop's life -------------------------------------- */

static int finalized;

static void count_finalize(GSource *source)
{
    (void)source;
    finalized++;
}

static GSourceFuncs sentinel_funcs = {NULL, NULL, NULL, count_finalize, NULL, NULL};

/* The library holds a reference on the context until the loop's last
 * reference goes, and drops it then, once: a sentinel source attached to
 * the context is finalized when the context is freed. */
START_TEST(test_release_at_last_unref)
{
    GMainContext *c = g_main_context_new();
    GSource *sentinel = g_source_new(&sentinel_funcs, sizeof(GSource));
    deferred_loop_t *l;
    size_t live;
    struct tcall t = {0, 0, NULL};

    g_source_attach(sentinel, c);
    g_source_unref(sentinel); /* the context holds it now */
    finalized = 0;
    live = tu_live();
    l = deferred_glib_loop_new(c);
    ck_assert_ptr_nonnull(l);
    ck_assert_uint_gt(tu_live(), live);
    g_main_context_unref(c); /* the loop's reference keeps it */
    ck_assert_int_eq(finalized, 0);
    ck_assert_ptr_eq(deferred_loop_ref(l), l);
    deferred_loop_unref(l);
    ck_assert_int_eq(finalized, 0);
    /* the context still runs the loop's timers */
    t.timer = l->ops->timer_new(deferred_loop_impl(l), record_timer, &t);
    ck_assert_ptr_nonnull(t.timer);
    l->ops->timer_start(t.timer, 0.0);
    g_main_context_iteration(c, FALSE);
    ck_assert_int_eq(t.calls, 1);
    l->ops->timer_free(t.timer);
    deferred_loop_unref(l);
    ck_assert_int_eq(finalized, 1);
    ck_assert_uint_eq(tu_live(), live);
}
END_TEST

/* The last reference dropped from inside a timer's callback (as when the
 * last deferred made on a loop fires after the user dropped it), with
 * another timer due in the same dispatch: the release waits for the
 * dispatch to finish, and the other timer (freed by the same callback)
 * never runs. */
struct last_ref {
    deferred_loop_t *l;
    void *timer, *other;
    int calls, other_calls;
};

static void drop_last(void *arg)
{
    struct last_ref *r = arg;

    r->calls++;
    r->l->ops->timer_free(r->timer);
    r->l->ops->timer_free(r->other);
    deferred_loop_unref(r->l);
}

static void other_fired(void *arg)
{
    ((struct last_ref *)arg)->other_calls++;
}

START_TEST(test_release_inside_dispatch)
{
    GMainContext *c = g_main_context_new();
    struct last_ref r = {NULL, NULL, NULL, 0, 0};
    size_t live = tu_live();
    void *li;

    r.l = deferred_glib_loop_new(c);
    ck_assert_ptr_nonnull(r.l);
    li = deferred_loop_impl(r.l);
    r.timer = r.l->ops->timer_new(li, drop_last, &r);
    r.other = r.l->ops->timer_new(li, other_fired, &r);
    ck_assert_ptr_nonnull(r.timer);
    ck_assert_ptr_nonnull(r.other);
    r.l->ops->timer_start(r.timer, 0.0);
    r.l->ops->timer_start(r.other, 0.0);
    g_main_context_iteration(c, FALSE);
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(r.other_calls, 0);
    ck_assert_uint_eq(tu_live(), live);
    g_main_context_iteration(c, FALSE);
    g_main_context_unref(c);
}
END_TEST

/* NULL is the global default context; a loop's sources are on its own
 * context only. */
START_TEST(test_contexts)
{
    deferred_loop_t *d = deferred_glib_loop_new(NULL);
    struct tcall a = {0, 0, NULL}, b = {1, 0, NULL};
    int i;

    ck_assert_ptr_nonnull(d);
    a.timer = d->ops->timer_new(deferred_loop_impl(d), record_timer, &a);
    b.timer = ops->timer_new(impl, record_timer, &b);
    ck_assert_ptr_nonnull(a.timer);
    ck_assert_ptr_nonnull(b.timer);
    d->ops->timer_start(a.timer, 0.0);
    ops->timer_start(b.timer, 0.0);
    for (i = 0; i < 3; i++)
        g_main_context_iteration(NULL, FALSE);
    ck_assert_int_eq(a.calls, 1);
    ck_assert_int_eq(b.calls, 0);
    nowait(1);
    ck_assert_int_eq(b.calls, 1);
    ck_assert_int_eq(a.calls, 1);
    d->ops->timer_free(a.timer);
    ops->timer_free(b.timer);
    deferred_loop_unref(d);
}
END_TEST

/* ---- the harness ------------------------------------------------------- */

static void harness_fired(void *arg)
{
    (*(int *)arg)++;
}

/* tl_harness_glib: make, run while deferred_loop_alive() says the library
 * has something on the loop (two timers of the loop layer, then nothing:
 * run returns), one non-blocking iteration, destroy. */
START_TEST(test_harness)
{
    const tl_harness_t *h = &tl_harness_glib;
    void *state = NULL;
    deferred_loop_t *l = h->make(&state);
    deferred_loop_timer_t *a, *b;
    int ac = 0, bc = 0;

    ck_assert_str_eq(h->name, "glib");
    ck_assert_ptr_nonnull(l);
    ck_assert_str_eq(deferred_loop_name(l), "glib");
    a = deferred_loop_timer_new(l, harness_fired, &ac);
    b = deferred_loop_timer_new(l, harness_fired, &bc);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(deferred_loop_timer_start(a, 0.01), 0);
    ck_assert_int_eq(deferred_loop_timer_start(b, 0.02), 0);
    ck_assert_uint_eq(deferred_loop_alive(l), 2);
    h->run(l, state);
    ck_assert_int_eq(ac, 1);
    ck_assert_int_eq(bc, 1);
    ck_assert_uint_eq(deferred_loop_alive(l), 0);
    ck_assert_int_eq(deferred_loop_timer_start(a, 0.0), 0);
    h->run_nowait(l, state);
    ck_assert_int_eq(ac, 2);
    deferred_loop_timer_free(a);
    deferred_loop_timer_free(b);
    h->destroy(l, state);
}
END_TEST

/* ---- allocation failures ----------------------------------------------- */

static void oom_timer(void *arg)
{
    (*(int *)arg)++;
}

static void oom_io(void *arg, int revents)
{
    (void)revents;
    (*(int *)arg)++;
}

/* A loop, ten timers (the heap's array grows past 8), an fd watcher and
 * a wakeup, each used once; every constructor's NULL is ENOMEM and
 * leaves nothing behind. */
static void sc_handles(struct tu_oom *r)
{
    GMainContext *c = g_main_context_new();
    deferred_loop_t *l = NULL;
    void *t[10] = {NULL}, *io = NULL, *w = NULL;
    int fired = 0, io_calls = 0, woke = 0, fds[2] = {-1, -1};
    int made = 0, i;

    make_pipe(fds);
    TU_NEW(r, l, deferred_glib_loop_new(c), out);
    for (i = 0; i < 10; i++) {
        TU_NEW(r, t[i], l->ops->timer_new(deferred_loop_impl(l), oom_timer, &fired),
               out);
        made++;
    }
    TU_NEW(r, io, l->ops->io_new(deferred_loop_impl(l), fds[1], oom_io, &io_calls), out);
    TU_NEW(r, w, l->ops->wakeup_new(deferred_loop_impl(l), oom_timer, &woke), out);
    for (i = 0; i < 10; i++)
        l->ops->timer_start(t[i], 0.0);
    l->ops->io_set(io, DEFERRED_LOOP_WRITE);
    l->ops->wakeup_send(w);
    g_main_context_iteration(c, FALSE);
    g_main_context_iteration(c, FALSE);
    r->ok = fired == 10 && io_calls >= 1 && woke == 1;
out:
    if (l) {
        for (i = 0; i < made; i++)
            l->ops->timer_free(t[i]);
        if (io)
            l->ops->io_free(io);
        if (w)
            l->ops->wakeup_free(w);
        deferred_loop_unref(l);
    }
    g_main_context_unref(c);
    close(fds[0]);
    close(fds[1]);
}

START_TEST(test_oom_handles)
{
    unsigned long points = tu_oom_sweep("glib handles", sc_handles, NULL, TU_OOM_STRICT);

    /* the state, the loop and its mailbox's wakeup (made with it), ten
     * timers and the array's two sizes, the watcher, the wakeup */
    ck_assert_uint_eq(points, 3 + 10 + 2 + 1 + 1);
}
END_TEST

Suite *glib_suite(void);

Suite *glib_suite(void)
{
    Suite *s = suite_create("glib");
    TCase *tc = tcase_create("ops");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_name_and_now);
    tcase_add_test(tc, test_timers_in_order_same_iteration);
    tcase_add_test(tc, test_timers_in_order_running);
    tcase_add_test(tc, test_timers_heap);
    tcase_add_test(tc, test_timer_zero_next_iteration);
    tcase_add_test(tc, test_timer_restart);
    tcase_add_test(tc, test_timer_stop);
    tcase_add_test(tc, test_timer_not_early);
    tcase_add_test(tc, test_timer_free_in_callback);
    tcase_add_test(tc, test_io_read);
    tcase_add_test(tc, test_io_write);
    tcase_add_test(tc, test_io_hangup);
    tcase_add_test(tc, test_io_free_in_callback);
    tcase_add_test(tc, test_wakeup_from_thread);
    tcase_add_test(tc, test_wakeup_coalesce);
    tcase_add_test(tc, test_wakeup_hold_and_free);
    tcase_add_test(tc, test_release_at_last_unref);
    tcase_add_test(tc, test_release_inside_dispatch);
    tcase_add_test(tc, test_contexts);
    tcase_add_test(tc, test_harness);
    suite_add_tcase(s, tc);

    /* the sweep counts blocks from zero: no fixture loop here */
    tc = tcase_create("oom");
    tcase_add_checked_fixture(tc, tu_setup, tu_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_oom_handles);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    /* a write to a pipe without a reader fails with EPIPE, not a signal */
    signal(SIGPIPE, SIG_IGN);
    return tu_run_suite(glib_suite());
}
