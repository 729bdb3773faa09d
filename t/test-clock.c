/*
 * test-clock.c: the clock (deferred/clock.h), the K scenarios, tested at
 * the adapter's level: its timers, fd watchers and wakeups are driven
 * through its table of functions (read from the loop object through
 * lib/loop/loop-private.h, which loop.h has no accessor for), and the
 * clock's own functions move time and run rounds.  Orders are checked
 * through the record log (tu_log), times through the virtual clock: no
 * assertion depends on real time.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <dirent.h>
#include <unistd.h>

#include "testutil.h"
#include <deferred/clock.h>
#include "loop/loop-private.h"
#include "loop-harness.h"

/* ---- helpers ---- */

static const deferred_loop_ops_t *ops_of(deferred_loop_t *l)
{
    return l->ops;
}

static deferred_loop_t *new_clock(void)
{
    deferred_loop_t *l = deferred_clock_new();

    ck_assert_ptr_nonnull(l);
    ck_assert_str_eq(deferred_loop_name(l), "clock");
    return l;
}

/* A timer with a tag and the time its callback saw. */
struct ktm {
    deferred_loop_t *l;
    void *h;
    int tag;
    double seen;
    int fired;
    /* what the callback does besides recording */
    void (*then)(struct ktm *t);
    void *other;
    double delay;
};

static void tm_cb(void *arg)
{
    struct ktm *t = arg;

    t->seen = deferred_loop_now(t->l);
    t->fired++;
    tu_record(deferred_value_int(t->tag), TAG(t->tag));
    if (t->then)
        t->then(t);
}

static void tm_init(struct ktm *t, deferred_loop_t *l, int tag)
{
    memset(t, 0, sizeof *t);
    t->l = l;
    t->tag = tag;
    t->h = ops_of(l)->timer_new(deferred_loop_impl(l), tm_cb, t);
    ck_assert_ptr_nonnull(t->h);
}

static void tm_start(struct ktm *t, double s)
{
    ops_of(t->l)->timer_start(t->h, s);
}

static void tm_free(struct ktm *t)
{
    if (t->h)
        ops_of(t->l)->timer_free(t->h);
    t->h = NULL;
}

static void log_is(const int *tags, int n)
{
    int i;

    ck_assert_int_eq(tu_log.n, n);
    for (i = 0; i < n; i++)
        ck_assert_msg(tu_log.e[i].tag == tags[i], "entry %d: tag %d, expected %d", i,
                      tu_log.e[i].tag, tags[i]);
}

/* ---- K01: order and time ---- */

START_TEST(test_K01_order_by_due_ties_by_start)
{
    deferred_loop_t *l = new_clock();
    struct ktm t[6];
    static const int order[] = {2, 4, 5, 1, 3, 0};
    int i;

    for (i = 0; i < 6; i++)
        tm_init(&t[i], l, i);
    tm_start(&t[0], 3.0);
    tm_start(&t[1], 1.0);
    tm_start(&t[2], 0.25);
    tm_start(&t[3], 2.0);
    tm_start(&t[4], 1.0);
    tm_start(&t[5], 1.0);
    tm_start(&t[1], 1.0); /* restarted: now after 4 and 5 */
    ck_assert_uint_eq(deferred_clock_timers(l), 6);
    ck_assert_int_eq(tu_log.n, 0); /* starting runs nothing */
    ck_assert_int_eq(deferred_clock_advance(l, 5.0), 0);
    log_is(order, 6);
    ck_assert_double_eq(t[2].seen, 0.25);
    ck_assert_double_eq(t[4].seen, 1.0);
    ck_assert_double_eq(t[1].seen, 1.0);
    ck_assert_double_eq(t[3].seen, 2.0);
    ck_assert_double_eq(t[0].seen, 3.0);
    ck_assert_double_eq(deferred_loop_now(l), 5.0);
    ck_assert_double_eq(deferred_clock_now(l), 5.0);
    ck_assert_uint_eq(deferred_clock_timers(l), 0);
    for (i = 0; i < 6; i++) {
        ck_assert_int_eq(t[i].fired, 1);
        tm_free(&t[i]);
    }
    deferred_loop_unref(l);
}
END_TEST

START_TEST(test_K01_partial_advance_and_boundary)
{
    deferred_loop_t *l = new_clock();
    struct ktm a, b, c;
    double due = -1;
    int i;

    tm_init(&a, l, 1);
    tm_init(&b, l, 2);
    tm_init(&c, l, 3);
    ck_assert_int_eq(deferred_clock_next(l, &due), -ENOENT);
    ck_assert_double_eq(due, -1);
    tm_start(&a, 1.0);
    tm_start(&b, 2.0);
    tm_start(&c, 1.0);
    ck_assert_int_eq(deferred_clock_next(l, &due), 0);
    ck_assert_double_eq(due, 1.0);
    ck_assert_int_eq(deferred_clock_advance(l, 0.5), 0);
    ck_assert_int_eq(tu_log.n, 0);
    ck_assert_int_eq(deferred_clock_advance(l, 1.0), 0);
    ck_assert_int_eq(tu_log.n, 2);
    ck_assert_uint_eq(deferred_clock_timers(l), 1);
    ck_assert_int_eq(deferred_clock_next(l, &due), 0);
    ck_assert_double_eq(due, 2.0);
    ck_assert_double_eq(deferred_clock_now(l), 1.5);
    /* exactly at the due time: fires */
    ck_assert_int_eq(deferred_clock_advance(l, 0.5), 0);
    ck_assert_int_eq(b.fired, 1);
    ck_assert_double_eq(b.seen, 2.0);
    /* ten steps of 0.1 reach a timer of 1 s exactly */
    tm_start(&a, 1.0);
    for (i = 0; i < 9; i++)
        ck_assert_int_eq(deferred_clock_advance(l, 0.1), 0);
    ck_assert_int_eq(a.fired, 1);
    ck_assert_int_eq(deferred_clock_advance(l, 0.1), 0);
    ck_assert_int_eq(a.fired, 2);
    ck_assert_double_eq(a.seen, 3.0);
    ck_assert_double_eq(deferred_clock_now(l), 3.0);
    tm_free(&a);
    tm_free(&b);
    tm_free(&c);
    deferred_loop_unref(l);
}
END_TEST

START_TEST(test_K01_pump)
{
    deferred_loop_t *l = new_clock();
    static const double steps[] = {0.5, 0.5, 1.0};
    struct ktm a, b;

    tm_init(&a, l, 1);
    tm_init(&b, l, 2);
    tm_start(&a, 0.75);
    tm_start(&b, 1.5);
    ck_assert_int_eq(deferred_clock_pump(l, steps, 3), 0);
    ck_assert_double_eq(a.seen, 0.75);
    ck_assert_double_eq(b.seen, 1.5);
    ck_assert_double_eq(deferred_clock_now(l), 2.0);
    ck_assert_int_eq(deferred_clock_pump(l, NULL, 0), 0);
    ck_assert_double_eq(deferred_clock_now(l), 2.0);
    tm_free(&a);
    tm_free(&b);
    deferred_loop_unref(l);
}
END_TEST

/* ---- K02: stop and restart ---- */

START_TEST(test_K02_stop_restart)
{
    deferred_loop_t *l = new_clock();
    struct ktm a, b;

    tm_init(&a, l, 1);
    tm_init(&b, l, 2);
    ops_of(l)->timer_stop(a.h); /* not running: a no-op */
    tm_start(&a, 1.0);
    tm_start(&b, 1.0);
    ops_of(l)->timer_stop(a.h);
    ops_of(l)->timer_stop(a.h);
    ck_assert_uint_eq(deferred_clock_timers(l), 1);
    ck_assert_int_eq(deferred_clock_advance(l, 0.5), 0);
    tm_start(&b, 1.0); /* restarted at 0.5: due at 1.5, not 1 */
    ck_assert_int_eq(deferred_clock_advance(l, 0.75), 0);
    ck_assert_int_eq(tu_log.n, 0);
    ck_assert_int_eq(deferred_clock_advance(l, 0.25), 0);
    ck_assert_int_eq(b.fired, 1);
    ck_assert_double_eq(b.seen, 1.5);
    ck_assert_int_eq(a.fired, 0);
    /* a fired timer may be started again */
    tm_start(&b, 2.0);
    ck_assert_int_eq(deferred_clock_advance(l, 2.0), 0);
    ck_assert_int_eq(b.fired, 2);
    ck_assert_double_eq(b.seen, 3.5);
    tm_free(&a);
    tm_free(&b);
    deferred_loop_unref(l);
}
END_TEST

/* ---- K03: 0 delay ---- */

static void restart_zero(struct ktm *t)
{
    if (t->fired < 3)
        tm_start(t, 0);
}

START_TEST(test_K03_zero_delay_next_round)
{
    deferred_loop_t *l = new_clock();
    struct ktm a, b;

    tm_init(&a, l, 1);
    tm_init(&b, l, 2);
    tm_start(&a, 0);
    ck_assert_int_eq(tu_log.n, 0); /* never inside start */
    ck_assert_uint_eq(deferred_clock_timers(l), 1);
    /* a 0-delay timer that restarts itself runs once per round */
    a.then = restart_zero;
    ck_assert_int_eq(deferred_clock_run_once(l, false), 1);
    ck_assert_int_eq(a.fired, 1);
    ck_assert_int_eq(deferred_clock_run_once(l, false), 1);
    ck_assert_int_eq(a.fired, 2);
    ck_assert_int_eq(deferred_clock_run_once(l, false), 1);
    ck_assert_int_eq(a.fired, 3);
    ck_assert_int_eq(deferred_clock_run_once(l, false), 0);
    ck_assert_double_eq(deferred_clock_now(l), 0.0);
    /* advance(0) runs a 0-delay timer, and what it starts with 0 too */
    a.fired = 0;
    tm_start(&a, 0);
    ck_assert_int_eq(deferred_clock_advance(l, 0), 0);
    ck_assert_int_eq(a.fired, 3);
    /* a timer not yet due is not run by a round */
    tm_start(&b, 1.0);
    ck_assert_int_eq(deferred_clock_run_once(l, false), 0);
    ck_assert_int_eq(b.fired, 0);
    ck_assert_double_eq(deferred_clock_now(l), 0.0);
    tm_free(&a);
    tm_free(&b);
    deferred_loop_unref(l);
}
END_TEST

/* ---- K04: timers started by callbacks during an advance ---- */

static void start_two(struct ktm *t)
{
    struct ktm *o = t->other;

    tm_start(&o[0], 0.5);
    tm_start(&o[1], 10.0);
}

START_TEST(test_K04_started_by_callbacks)
{
    deferred_loop_t *l = new_clock();
    struct ktm a, o[2];
    static const int order[] = {1, 2};
    double due;

    tm_init(&a, l, 1);
    tm_init(&o[0], l, 2);
    tm_init(&o[1], l, 3);
    a.then = start_two;
    a.other = o;
    tm_start(&a, 1.0);
    ck_assert_int_eq(deferred_clock_advance(l, 2.0), 0);
    log_is(order, 2);
    ck_assert_double_eq(o[0].seen, 1.5);
    ck_assert_uint_eq(deferred_clock_timers(l), 1);
    ck_assert_int_eq(deferred_clock_next(l, &due), 0);
    ck_assert_double_eq(due, 11.0);
    tm_free(&a);
    tm_free(&o[0]);
    tm_free(&o[1]);
    ck_assert_uint_eq(deferred_clock_timers(l), 0);
    deferred_loop_unref(l);
}
END_TEST

/* ---- K05: free from inside callbacks ---- */

static void free_self(struct ktm *t)
{
    tm_free(t);
}

static void free_other(struct ktm *t)
{
    tm_free(t->other);
}

START_TEST(test_K05_free_inside_callbacks)
{
    deferred_loop_t *l = new_clock();
    struct ktm a, b, c;
    static const int order[] = {1, 3};

    tm_init(&a, l, 1);
    tm_init(&b, l, 2);
    tm_init(&c, l, 3);
    a.then = free_other; /* a frees b, due at the same time */
    a.other = &b;
    c.then = free_self;
    tm_start(&a, 1.0);
    tm_start(&b, 1.0);
    tm_start(&c, 1.0);
    ck_assert_int_eq(deferred_clock_advance(l, 1.0), 0);
    log_is(order, 2);
    ck_assert_int_eq(b.fired, 0);
    ck_assert_ptr_null(b.h);
    ck_assert_ptr_null(c.h);
    ck_assert_uint_eq(deferred_clock_timers(l), 0);
    /* the same in a round of run_once */
    tu_log_reset();
    tm_init(&b, l, 2);
    tm_init(&c, l, 3);
    b.then = free_other;
    b.other = &a;
    c.then = free_self;
    tm_start(&b, 0);
    tm_start(&a, 0);
    tm_start(&c, 0);
    ck_assert_int_eq(deferred_clock_run_once(l, false), 2);
    ck_assert_ptr_null(a.h);
    ck_assert_int_eq(tu_log_count(1), 0);
    tm_free(&b);
    deferred_loop_unref(l);
}
END_TEST

/* ---- K06: 100,000 timers in one advance ---- */

#define MANY 100000
struct many {
    deferred_loop_t *l;
    void *h[MANY];
    int idx[MANY];
    int64_t due_ns[MANY];
    int fired;
    int last;
    int bad;
};

static struct many *many_state;

static void many_cb(void *arg)
{
    struct many *m = many_state;
    int i = *(int *)arg;
    double now = deferred_loop_now(m->l);

    if (llround(now * 1e9) != m->due_ns[i])
        m->bad++;
    if (m->last >= 0) {
        int p = m->last;

        if (m->due_ns[p] > m->due_ns[i] || (m->due_ns[p] == m->due_ns[i] && p > i))
            m->bad++;
    }
    m->last = i;
    m->fired++;
}

static void many_body(void *arg)
{
    struct many *m = arg;
    uint32_t x = 12345;
    int i;

    for (i = 0; i < MANY; i++) {
        /* delays in [0, 100) ms steps of 1 ms: many ties */
        x = x * 1103515245u + 12345u;
        m->idx[i] = i;
        m->h[i] = ops_of(m->l)->timer_new(deferred_loop_impl(m->l), many_cb, &m->idx[i]);
        ck_assert_ptr_nonnull(m->h[i]);
        m->due_ns[i] = (int64_t)((x >> 8) % 100) * 1000000;
        ops_of(m->l)->timer_start(m->h[i], (double)((x >> 8) % 100) / 1000.0);
    }
    ck_assert_uint_eq(deferred_clock_timers(m->l), MANY);
    ck_assert_int_eq(deferred_clock_advance(m->l, 0.1), 0);
}

START_TEST(test_K06_hundred_thousand_timers)
{
    struct many *m = deferred_malloc(sizeof *m);
    int i;

    ck_assert_ptr_nonnull(m);
    m->l = new_clock();
    m->fired = 0;
    m->last = -1;
    m->bad = 0;
    many_state = m;
    tu_run_small_stack(many_body, m);
    ck_assert_int_eq(m->fired, MANY);
    ck_assert_int_eq(m->bad, 0);
    ck_assert_uint_eq(deferred_clock_timers(m->l), 0);
    for (i = 0; i < MANY; i++)
        ops_of(m->l)->timer_free(m->h[i]);
    deferred_loop_unref(m->l);
    deferred_free(m);
}
END_TEST

/* ---- K07: run ---- */

START_TEST(test_K07_run_jumps_time)
{
    deferred_loop_t *l = new_clock();
    struct ktm a, b;
    static const int order[] = {2, 1};

    tm_init(&a, l, 1);
    tm_init(&b, l, 2);
    tm_start(&a, 10.0);
    tm_start(&b, 5.0);
    ck_assert_int_eq(deferred_clock_run(l), 0);
    log_is(order, 2);
    ck_assert_double_eq(b.seen, 5.0);
    ck_assert_double_eq(a.seen, 10.0);
    ck_assert_double_eq(deferred_clock_now(l), 10.0);
    /* nothing alive: run and a blocking run_once return at once */
    ck_assert_int_eq(deferred_clock_run(l), 0);
    ck_assert_int_eq(deferred_clock_run_once(l, true), 0);
    /* a blocking run_once with only a timer jumps to it */
    tm_start(&a, 3.0);
    ck_assert_int_eq(deferred_clock_run_once(l, true), 1);
    ck_assert_double_eq(a.seen, 13.0);
    tm_free(&a);
    tm_free(&b);
    deferred_loop_unref(l);
}
END_TEST

/* A wakeup sent from another thread while run() blocks. */
struct wk {
    deferred_loop_t *l;
    void *h;
    int delivered;
    double seen;
    bool unhold;
};

static void wk_cb(void *arg)
{
    struct wk *w = arg;

    w->delivered++;
    w->seen = deferred_loop_now(w->l);
    tu_record(deferred_value_int(7), TAG(7));
    if (w->unhold)
        ops_of(w->l)->wakeup_hold(w->h, false);
}

static void *send_later(void *arg)
{
    struct wk *w = arg;

    usleep(20000); /* let run() block first (not required for the result) */
    ops_of(w->l)->wakeup_send(w->h);
    return NULL;
}

START_TEST(test_K07_run_blocks_for_held_wakeup)
{
    deferred_loop_t *l = new_clock();
    struct wk w = {l, NULL, 0, -1, true};
    struct ktm t;
    static const int order[] = {7, 1};
    pthread_t th;

    tm_init(&t, l, 1);
    tm_start(&t, 1.0);
    w.h = ops_of(l)->wakeup_new(deferred_loop_impl(l), wk_cb, &w);
    ck_assert_ptr_nonnull(w.h);
    ops_of(l)->wakeup_hold(w.h, true);
    ops_of(l)->wakeup_hold(w.h, true); /* does not nest */
    ck_assert_int_eq(pthread_create(&th, NULL, send_later, &w), 0);
    ck_assert_int_eq(deferred_clock_run(l), 0);
    pthread_join(th, NULL);
    /* the wakeup came before virtual time passed */
    log_is(order, 2);
    ck_assert_int_eq(w.delivered, 1);
    ck_assert_double_eq(w.seen, 0.0);
    ck_assert_double_eq(t.seen, 1.0);
    ops_of(l)->wakeup_free(w.h);
    tm_free(&t);
    deferred_loop_unref(l);
}
END_TEST

/* ---- K08: fd watchers ---- */

struct fdw {
    deferred_loop_t *l;
    void *h;
    int fd;
    int calls;
    int revents;
    bool stop;       /* set(0) in the callback */
    bool read_it;
    struct fdw *other; /* set(0) or free it */
    bool free_other;
    bool free_self;
};

static void fd_cb(void *arg, int revents)
{
    struct fdw *f = arg;
    char buf[16];

    f->calls++;
    f->revents = revents;
    tu_record(deferred_value_int(f->fd), TAG(100 + f->fd));
    if (f->read_it)
        (void)!read(f->fd, buf, sizeof buf);
    if (f->stop)
        ops_of(f->l)->io_set(f->h, 0);
    if (f->other && f->other->h) {
        if (f->free_other) {
            ops_of(f->l)->io_free(f->other->h);
            f->other->h = NULL;
        } else {
            ops_of(f->l)->io_set(f->other->h, 0);
        }
    }
    if (f->free_self) {
        ops_of(f->l)->io_free(f->h);
        f->h = NULL;
    }
}

static void fdw_init(struct fdw *f, deferred_loop_t *l, int fd, int events)
{
    memset(f, 0, sizeof *f);
    f->l = l;
    f->fd = fd;
    f->h = ops_of(l)->io_new(deferred_loop_impl(l), fd, fd_cb, f);
    ck_assert_ptr_nonnull(f->h);
    ops_of(l)->io_set(f->h, events);
}

static void fdw_free(struct fdw *f)
{
    if (f->h)
        ops_of(f->l)->io_free(f->h);
    f->h = NULL;
}

static void *write_later(void *arg)
{
    int fd = *(int *)arg;

    usleep(20000);
    (void)!write(fd, "x", 1);
    return NULL;
}

START_TEST(test_K08_run_blocks_for_readable_pipe)
{
    deferred_loop_t *l = new_clock();
    struct fdw f;
    struct ktm t;
    int p[2];
    pthread_t th;

    ck_assert_int_eq(pipe(p), 0);
    tm_init(&t, l, 1);
    tm_start(&t, 1.0);
    fdw_init(&f, l, p[0], DEFERRED_LOOP_READ);
    f.stop = true;
    f.read_it = true;
    ck_assert_int_eq(pthread_create(&th, NULL, write_later, &p[1]), 0);
    ck_assert_int_eq(deferred_clock_run(l), 0);
    pthread_join(th, NULL);
    ck_assert_int_eq(f.calls, 1);
    ck_assert_int_eq(f.revents, DEFERRED_LOOP_READ);
    /* the fd came before virtual time passed, then time jumped */
    ck_assert_int_eq(tu_log.n, 2);
    ck_assert_int_eq(tu_log.e[0].tag, 100 + p[0]);
    ck_assert_int_eq(tu_log.e[1].tag, 1);
    ck_assert_double_eq(t.seen, 1.0);
    fdw_free(&f);
    tm_free(&t);
    close(p[0]);
    close(p[1]);
    deferred_loop_unref(l);
}
END_TEST

START_TEST(test_K08_set_zero_stops_level_triggered)
{
    deferred_loop_t *l = new_clock();
    struct fdw f, g;
    int p[2], q[2];

    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(pipe(q), 0);
    ck_assert_int_eq(write(p[1], "x", 1), 1);
    ck_assert_int_eq(write(q[1], "x", 1), 1);
    fdw_init(&f, l, p[0], DEFERRED_LOOP_READ);
    /* not watched yet: nothing; level-triggered: every round while ready */
    fdw_init(&g, l, q[0], 0);
    ck_assert_int_eq(deferred_clock_run_once(l, false), 1);
    ck_assert_int_eq(deferred_clock_run_once(l, false), 1);
    ck_assert_int_eq(f.calls, 2);
    ck_assert_int_eq(g.calls, 0);
    ops_of(l)->io_set(f.h, 0);
    ck_assert_int_eq(deferred_clock_run_once(l, false), 0);
    ck_assert_int_eq(deferred_clock_run(l), 0); /* nothing watched: returns */
    /* set(0) by another callback of the same round: only one runs */
    ops_of(l)->io_set(f.h, DEFERRED_LOOP_READ);
    ops_of(l)->io_set(g.h, DEFERRED_LOOP_READ);
    f.other = &g;
    g.other = &f;
    f.stop = g.stop = true;
    ck_assert_int_eq(deferred_clock_run_once(l, false), 1);
    ck_assert_int_eq(f.calls + g.calls, 3);
    ck_assert_int_eq(deferred_clock_run_once(l, false), 0);
    /* free of another in the same round, and of itself */
    f.calls = g.calls = 0;
    ops_of(l)->io_set(f.h, DEFERRED_LOOP_READ);
    ops_of(l)->io_set(g.h, DEFERRED_LOOP_READ);
    f.free_other = g.free_other = true;
    f.free_self = g.free_self = true;
    ck_assert_int_eq(deferred_clock_run_once(l, false), 1);
    ck_assert_int_eq(f.calls + g.calls, 1);
    ck_assert_ptr_null(f.h);
    ck_assert_ptr_null(g.h);
    ck_assert_int_eq(deferred_clock_run_once(l, false), 0);
    close(p[0]);
    close(p[1]);
    close(q[0]);
    close(q[1]);
    deferred_loop_unref(l);
}
END_TEST

START_TEST(test_K08_hangup_readable_and_writable)
{
    deferred_loop_t *l = new_clock();
    struct fdw r, w;
    int p[2], q[2];

    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(pipe(q), 0);
    close(p[1]); /* hangup */
    fdw_init(&r, l, p[0], DEFERRED_LOOP_READ);
    r.stop = true;
    ck_assert_int_eq(deferred_clock_run_once(l, false), 1);
    ck_assert_int_eq(r.revents, DEFERRED_LOOP_READ);
    /* a pipe with room is writable; watching READ too reports only WRITE */
    fdw_init(&w, l, q[1], DEFERRED_LOOP_READ | DEFERRED_LOOP_WRITE);
    w.stop = true;
    ck_assert_int_eq(deferred_clock_run_once(l, false), 1);
    ck_assert_int_eq(w.revents, DEFERRED_LOOP_WRITE);
    ck_assert_int_eq(deferred_clock_run(l), 0);
    fdw_free(&r);
    fdw_free(&w);
    close(p[0]);
    close(q[0]);
    close(q[1]);
    deferred_loop_unref(l);
}
END_TEST

/* ---- K09: wakeups ---- */

static void free_wk(void *arg)
{
    struct wk *w = arg;

    w->delivered++;
    ops_of(w->l)->wakeup_free(w->h);
    w->h = NULL;
}

struct wk_pair {
    struct wk a, b;
};

static void free_partner(void *arg)
{
    struct wk_pair *p = arg;

    p->a.delivered++;
    if (p->b.h) {
        ops_of(p->a.l)->wakeup_free(p->b.h);
        p->b.h = NULL;
    }
}

static void count_b(void *arg)
{
    struct wk_pair *p = arg;

    p->b.delivered++;
    if (p->a.h) {
        ops_of(p->a.l)->wakeup_free(p->a.h);
        p->a.h = NULL;
    }
}

START_TEST(test_K09_wakeups)
{
    deferred_loop_t *l = new_clock();
    struct wk w = {l, NULL, 0, -1, false};
    struct wk f = {l, NULL, 0, -1, false};
    struct wk_pair pr;
    struct ktm t;

    w.h = ops_of(l)->wakeup_new(deferred_loop_impl(l), wk_cb, &w);
    ck_assert_ptr_nonnull(w.h);
    /* not sent: nothing; sent twice: one call (coalesced) */
    ck_assert_int_eq(deferred_clock_run_once(l, false), 0);
    ops_of(l)->wakeup_send(w.h);
    ops_of(l)->wakeup_send(w.h);
    ck_assert_int_eq(w.delivered, 0); /* never inside send */
    ck_assert_int_eq(deferred_clock_run_once(l, false), 1);
    ck_assert_int_eq(w.delivered, 1);
    ck_assert_int_eq(deferred_clock_run_once(l, false), 0);
    /* an unheld wakeup does not keep run() alive */
    ck_assert_int_eq(deferred_clock_run(l), 0);
    /* advance delivers a sent wakeup; its callback sees the clock's time */
    tm_init(&t, l, 1);
    tm_start(&t, 2.0);
    ck_assert_int_eq(deferred_clock_advance(l, 1.0), 0);
    ck_assert_int_eq(w.delivered, 1);
    ops_of(l)->wakeup_send(w.h);
    ck_assert_int_eq(deferred_clock_advance(l, 0), 0);
    ck_assert_int_eq(w.delivered, 2);
    ck_assert_double_eq(w.seen, 1.0);
    tm_free(&t);
    /* freed inside its own callback */
    f.h = ops_of(l)->wakeup_new(deferred_loop_impl(l), free_wk, &f);
    ck_assert_ptr_nonnull(f.h);
    ops_of(l)->wakeup_hold(f.h, true);
    ops_of(l)->wakeup_send(f.h);
    ck_assert_int_eq(deferred_clock_run(l), 0); /* the free released the hold */
    ck_assert_int_eq(f.delivered, 1);
    ck_assert_ptr_null(f.h);
    /* two sent, the first delivered frees the other: it never runs */
    memset(&pr, 0, sizeof pr);
    pr.a.l = pr.b.l = l;
    pr.a.h = ops_of(l)->wakeup_new(deferred_loop_impl(l), free_partner, &pr);
    pr.b.h = ops_of(l)->wakeup_new(deferred_loop_impl(l), count_b, &pr);
    ck_assert_ptr_nonnull(pr.a.h);
    ck_assert_ptr_nonnull(pr.b.h);
    ops_of(l)->wakeup_send(pr.a.h);
    ops_of(l)->wakeup_send(pr.b.h);
    ck_assert_int_eq(deferred_clock_run_once(l, false), 1);
    ck_assert_int_eq(pr.a.delivered + pr.b.delivered, 1);
    if (pr.a.h)
        ops_of(l)->wakeup_free(pr.a.h);
    if (pr.b.h)
        ops_of(l)->wakeup_free(pr.b.h);
    ops_of(l)->wakeup_free(w.h);
    deferred_loop_unref(l);
}
END_TEST

/* Many threads send while the loop runs; the last delivery after every
 * thread is done releases the hold. */
#define SENDERS 4
#define SENDS 2000
struct storm {
    deferred_loop_t *l;
    void *h;
    atomic_int done;
    int delivered;
};

static void storm_cb(void *arg)
{
    struct storm *s = arg;

    s->delivered++;
    if (atomic_load(&s->done) == SENDERS)
        ops_of(s->l)->wakeup_hold(s->h, false);
}

static void *storm_thread(void *arg)
{
    struct storm *s = arg;
    int i;

    for (i = 0; i < SENDS; i++)
        ops_of(s->l)->wakeup_send(s->h);
    atomic_fetch_add(&s->done, 1);
    ops_of(s->l)->wakeup_send(s->h);
    return NULL;
}

START_TEST(test_K09_send_from_threads)
{
    struct storm s;
    pthread_t th[SENDERS];
    size_t before;
    int i;

    s.l = new_clock();
    atomic_init(&s.done, 0);
    s.delivered = 0;
    s.h = ops_of(s.l)->wakeup_new(deferred_loop_impl(s.l), storm_cb, &s);
    ck_assert_ptr_nonnull(s.h);
    ops_of(s.l)->wakeup_hold(s.h, true);
    before = tu_total();
    for (i = 0; i < SENDERS; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, storm_thread, &s), 0);
    ck_assert_int_eq(deferred_clock_run(s.l), 0);
    for (i = 0; i < SENDERS; i++)
        pthread_join(th[i], NULL);
    ck_assert_int_ge(s.delivered, 1);
    ck_assert_int_le(s.delivered, SENDERS * (SENDS + 1));
    ck_assert_uint_eq(tu_total(), before); /* sending never allocates */
    ops_of(s.l)->wakeup_free(s.h);
    deferred_loop_unref(s.l);
}
END_TEST

/* ---- K10: the loop's life ---- */

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    ck_assert_ptr_nonnull(d);
    while ((e = readdir(d)) != NULL)
        n++;
    closedir(d);
    return n;
}

static void drop_loop(struct ktm *t)
{
    deferred_loop_unref(t->other);
}

START_TEST(test_K10_release_once)
{
    int fds = count_fds();
    deferred_loop_t *l = new_clock();
    struct ktm t;

    ck_assert_int_eq(count_fds(), fds + 2); /* the wakeup pipe */
    ck_assert_ptr_eq(deferred_loop_ref(l), l);
    deferred_loop_unref(l);
    ck_assert_int_eq(count_fds(), fds + 2); /* one reference left: alive */
    ck_assert_int_eq(deferred_clock_advance(l, 1.0), 0);
    /* a callback drops the last reference: released when advance is done */
    tm_init(&t, l, 1);
    t.then = drop_loop;
    t.other = l;
    tm_start(&t, 1.0);
    tm_free(&t); /* stopped and freed: the loop may go with no handle */
    deferred_loop_unref(l);
    ck_assert_int_eq(count_fds(), fds);
    ck_assert_uint_eq(tu_live(), 0);
}
END_TEST

/* The reference the clock's own calls hold. */
struct holder {
    deferred_loop_t *l;
    void *h;
};

static void drop_and_free(void *arg)
{
    struct holder *h = arg;

    ops_of(h->l)->timer_free(h->h);
    deferred_loop_unref(h->l); /* the last reference but advance's */
}

START_TEST(test_K10_callback_drops_last_reference)
{
    int fds = count_fds();
    struct holder h;

    h.l = new_clock();
    h.h = ops_of(h.l)->timer_new(deferred_loop_impl(h.l), drop_and_free, &h);
    ck_assert_ptr_nonnull(h.h);
    ops_of(h.l)->timer_start(h.h, 1.0);
    ck_assert_int_eq(deferred_clock_advance(h.l, 2.0), 0);
    ck_assert_int_eq(count_fds(), fds);
    ck_assert_uint_eq(tu_live(), 0);
}
END_TEST

/* ---- K11: bad input ---- */

static double fake_now(void *impl)
{
    (void)impl;
    return 42.0;
}
static void *fake_new(void *impl, deferred_loop_fn cb, void *arg)
{
    (void)impl;
    (void)cb;
    (void)arg;
    return NULL;
}
static void fake_start(void *h, double s)
{
    (void)h;
    (void)s;
}
static void fake_h(void *h)
{
    (void)h;
}
static void *fake_io_new(void *impl, int fd, deferred_loop_io_fn cb, void *arg)
{
    (void)impl;
    (void)fd;
    (void)cb;
    (void)arg;
    return NULL;
}
static void fake_set(void *h, int e)
{
    (void)h;
    (void)e;
}
static void fake_hold(void *h, bool b)
{
    (void)h;
    (void)b;
}

/* Another adapter that calls itself "clock". */
static int fake_wakeup;
static void *fake_wakeup_new(void *impl, deferred_loop_fn cb, void *arg)
{
    (void)impl;
    (void)cb;
    (void)arg;
    return &fake_wakeup; /* the loop object makes its mailbox's */
}

static const deferred_loop_ops_t fake_ops = {
    .version = DEFERRED_LOOP_OPS_VERSION,
    .name = "clock",
    .now = fake_now,
    .timer_new = fake_new,
    .timer_start = fake_start,
    .timer_stop = fake_h,
    .timer_free = fake_h,
    .io_new = fake_io_new,
    .io_set = fake_set,
    .io_free = fake_h,
    .wakeup_new = fake_wakeup_new,
    .wakeup_send = fake_h,
    .wakeup_hold = fake_hold,
    .wakeup_free = fake_h,
};

static void record_timer(void *arg)
{
    tu_record(deferred_value_int(1), arg);
}

static void nested(void *arg)
{
    deferred_loop_t *l = arg;
    static const double one = 1.0;

    ck_assert_int_eq(deferred_clock_advance(l, 1.0), -EBUSY);
    ck_assert_int_eq(deferred_clock_pump(l, &one, 1), -EBUSY);
    ck_assert_int_eq(deferred_clock_run(l), -EBUSY);
    ck_assert_int_eq(deferred_clock_run_once(l, false), -EBUSY);
    tu_record(deferred_value_int(2), TAG(2));
}

START_TEST(test_K11_bad_input)
{
    deferred_loop_t *fake = deferred_loop_new(&fake_ops, NULL);
    deferred_loop_t *l = new_clock();
    const double bad[] = {-1.0, -0.0 - 1e-300, NAN, INFINITY, -INFINITY};
    double steps[3] = {1.0, NAN, 1.0};
    double due = 5;
    void *t;
    size_t i;

    ck_assert_ptr_nonnull(fake);
    ck_assert(!deferred_clock_is_clock(fake));
    ck_assert(!deferred_clock_is_clock(NULL));
    ck_assert(deferred_clock_is_clock(l));
    ck_assert_int_eq(deferred_clock_advance(fake, 1.0), -EINVAL);
    ck_assert_int_eq(deferred_clock_advance(NULL, 1.0), -EINVAL);
    ck_assert_int_eq(deferred_clock_pump(fake, steps, 1), -EINVAL);
    ck_assert_int_eq(deferred_clock_pump(NULL, steps, 1), -EINVAL);
    ck_assert_int_eq(deferred_clock_run(fake), -EINVAL);
    ck_assert_int_eq(deferred_clock_run(NULL), -EINVAL);
    ck_assert_int_eq(deferred_clock_run_once(fake, true), -EINVAL);
    ck_assert_int_eq(deferred_clock_run_once(NULL, false), -EINVAL);
    ck_assert_int_eq(deferred_clock_next(fake, &due), -EINVAL);
    ck_assert_int_eq(deferred_clock_next(NULL, &due), -EINVAL);
    ck_assert_int_eq(deferred_clock_next(l, NULL), -EINVAL);
    ck_assert_double_eq(due, 5);
    ck_assert_double_eq(deferred_clock_now(fake), -1.0);
    ck_assert_double_eq(deferred_clock_now(NULL), -1.0);
    ck_assert_uint_eq(deferred_clock_timers(fake), 0);
    ck_assert_uint_eq(deferred_clock_timers(NULL), 0);

    /* bad seconds: -EINVAL and nothing runs, time does not move */
    t = ops_of(l)->timer_new(deferred_loop_impl(l), record_timer, TAG(1));
    ck_assert_ptr_nonnull(t);
    ops_of(l)->timer_start(t, 0);
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_int_eq(deferred_clock_advance(l, bad[i]), -EINVAL);
    ck_assert_int_eq(deferred_clock_pump(l, steps, 3), -EINVAL);
    ck_assert_int_eq(deferred_clock_pump(l, NULL, 1), -EINVAL);
    ck_assert_int_eq(tu_log.n, 0);
    ck_assert_double_eq(deferred_clock_now(l), 0.0);
    /* a huge (finite) advance saturates and fires */
    ck_assert_int_eq(deferred_clock_advance(l, 1e300), 0);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_double_ge(deferred_clock_now(l), 9.2e9);
    ck_assert_int_eq(deferred_clock_advance(l, 1e300), 0);
    ops_of(l)->timer_free(t);

    /* the clock's calls from its own callbacks: -EBUSY */
    t = ops_of(l)->timer_new(deferred_loop_impl(l), nested, l);
    ck_assert_ptr_nonnull(t);
    ops_of(l)->timer_start(t, 0);
    ck_assert_int_eq(deferred_clock_run_once(l, false), 1);
    ck_assert_int_eq(tu_log_count(2), 1);
    ops_of(l)->timer_free(t);

    deferred_loop_unref(fake);
    deferred_loop_unref(l);
}
END_TEST

/* ---- K12: allocation failure of every *_new ---- */

static void noop(void *arg)
{
    (void)arg;
}

static void noop_io(void *arg, int revents)
{
    (void)arg;
    (void)revents;
}

#define OOM_TIMERS 40 /* past the heap's first two sizes */

static void sc_clock_new(struct tu_oom *r)
{
    deferred_loop_t *l;
    void *timers[OOM_TIMERS], *io[20], *w = NULL;
    int n = 0, nio = 0, i;
    int p[2];

    ck_assert_int_eq(pipe(p), 0);
    TU_NEW(r, l, deferred_clock_new(), out);
    for (; n < OOM_TIMERS; n++) {
        TU_NEW(r, timers[n], ops_of(l)->timer_new(deferred_loop_impl(l), noop, NULL), done);
        ops_of(l)->timer_start(timers[n], (double)(n % 3));
    }
    for (; nio < 20; nio++) {
        TU_NEW(r, io[nio], ops_of(l)->io_new(deferred_loop_impl(l), p[1], noop_io, NULL),
               done);
        ops_of(l)->io_set(io[nio], DEFERRED_LOOP_WRITE);
    }
    TU_NEW(r, w, ops_of(l)->wakeup_new(deferred_loop_impl(l), noop, NULL), done);
    ops_of(l)->wakeup_send(w);
    /* the rounds never allocate: one with everything ready */
    r->ok = deferred_clock_run_once(l, false) == 20 + 1 + 14;
done:
    if (w)
        ops_of(l)->wakeup_free(w);
    for (i = 0; i < nio; i++)
        ops_of(l)->io_free(io[i]);
    for (i = 0; i < n; i++)
        ops_of(l)->timer_free(timers[i]);
    deferred_loop_unref(l);
out:
    close(p[0]);
    close(p[1]);
}

START_TEST(test_K12_every_allocation_failed)
{
    unsigned long points = tu_oom_sweep("clock", sc_clock_new, NULL, TU_OOM_STRICT);

    /* clock, pfds, pios, loop; heap (3 sizes) + 40 timers; 20 ios and the
     * poll set's growth; the wakeup */
    ck_assert_uint_ge(points, 4 + 3 + OOM_TIMERS + 20 + 1);
}
END_TEST

/* ---- K13: the harness ---- */

START_TEST(test_K13_harness)
{
    const tl_harness_t *h = &tl_harness_clock;
    void *state = &state;
    deferred_loop_t *l;
    struct ktm t, z;

    ck_assert_str_eq(h->name, "clock");
    l = h->make(&state);
    ck_assert_ptr_nonnull(l);
    ck_assert(deferred_clock_is_clock(l));
    tm_init(&t, l, 1);
    tm_init(&z, l, 2);
    tm_start(&t, 30.0);
    tm_start(&z, 0);
    h->run_nowait(l, state);
    ck_assert_int_eq(z.fired, 1);
    ck_assert_int_eq(t.fired, 0); /* not due: run_nowait does not move time */
    h->run(l, state);
    ck_assert_int_eq(t.fired, 1);
    ck_assert_double_eq(t.seen, 30.0);
    tm_free(&t);
    tm_free(&z);
    h->destroy(l, state);
}
END_TEST

/* ---- K14: the dump ---- */

static int dump_sink(const char *text, size_t len, void *arg)
{
    char *out = arg;
    size_t have = strlen(out);

    if (have + len < 4096) {
        memcpy(out + have, text, len);
        out[have + len] = '\0';
    }
    return 0;
}

START_TEST(test_K14_dump_shows_time_and_timers)
{
    deferred_loop_t *l = new_clock();
    static char text[4096];
    deferred_t *d;

    deferred_set_debug(true);
    d = deferred_loop_later(l, 2.5);
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_clock_advance(l, 1.0), 0);
    text[0] = '\0';
    ck_assert_int_eq(deferred_dump_to(DEFERRED_DUMP_TEXT, dump_sink, text, NULL), 0);
    ck_assert_msg(strstr(text, "loop clock ") != NULL, "%s", text);
    ck_assert_msg(strstr(text, "now_ns=1000000000") != NULL, "%s", text);
    ck_assert_msg(strstr(text, "timers=1") != NULL, "%s", text);
    ck_assert_int_eq(deferred_clock_advance(l, 2.0), 0);
    ck_assert(deferred_has_result(d));
    deferred_unref(d);
    deferred_set_debug(false);
    deferred_loop_unref(l);
}
END_TEST

/* ---- K15: the library's layer on a clock ---- */

START_TEST(test_K15_timeout_without_sleeping)
{
    deferred_loop_t *l = new_clock();
    deferred_t *d = deferred_new(), *later;

    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_loop_add_timeout(d, l, 5.0), 0);
    later = deferred_loop_later(l, 2.0);
    ck_assert_ptr_nonnull(later);
    ck_assert_uint_eq(deferred_loop_alive(l), 2);
    ck_assert_int_eq(deferred_clock_advance(l, 2.0), 0);
    ck_assert(deferred_has_result(later));
    ck_assert_int_eq(deferred_clock_advance(l, 2.999999999), 0);
    ck_assert(!deferred_has_result(d));
    ck_assert_int_eq(deferred_clock_advance(l, 0.000000001), 0);
    ck_assert(deferred_has_result(d));
    ck_assert(deferred_value_is_failure(deferred_result(d)));
    ck_assert_int_eq(deferred_failure_code(deferred_value_get_failure(deferred_result(d))),
                     ETIMEDOUT);
    ck_assert_uint_eq(deferred_loop_alive(l), 0);
    ck_assert_uint_eq(deferred_clock_timers(l), 0);
    deferred_unref(d);
    deferred_unref(later);
    deferred_loop_unref(l);
}
END_TEST

static deferred_value_t slow_job(void *arg)
{
    (void)arg;
    usleep(20000);
    return deferred_value_int(42);
}

/* A job on the pool answers before a virtual timeout running beside it:
 * run() waits for the outside before it jumps time. */
START_TEST(test_K15_pool_before_virtual_timeout)
{
    deferred_loop_t *l = new_clock();
    deferred_pool_t *pool = deferred_loop_pool_new(l, 1);
    deferred_t *job, *guard;

    ck_assert_ptr_nonnull(pool);
    job = deferred_pool_run(pool, slow_job, NULL, NULL);
    ck_assert_ptr_nonnull(job);
    ck_assert_int_eq(deferred_loop_add_timeout(job, l, 1.0), 0);
    guard = deferred_loop_later(l, 3600.0);
    ck_assert_ptr_nonnull(guard);
    ck_assert_int_eq(deferred_clock_run(l), 0);
    ck_assert(deferred_has_result(job));
    ck_assert_int_eq(deferred_value_get_int(deferred_result(job)), 42);
    ck_assert(deferred_has_result(guard));
    ck_assert_double_eq(deferred_clock_now(l), 3600.0);
    deferred_unref(job);
    deferred_unref(guard);
    deferred_pool_free(pool);
    deferred_loop_unref(l);
}
END_TEST

static Suite *clock_suite(void)
{
    Suite *s = suite_create("clock");
    TCase *tc = tcase_create("clock");

    tcase_set_timeout(tc, 300);
    tcase_add_checked_fixture(tc, tu_setup, tu_teardown);
    tcase_add_test(tc, test_K01_order_by_due_ties_by_start);
    tcase_add_test(tc, test_K01_partial_advance_and_boundary);
    tcase_add_test(tc, test_K01_pump);
    tcase_add_test(tc, test_K02_stop_restart);
    tcase_add_test(tc, test_K03_zero_delay_next_round);
    tcase_add_test(tc, test_K04_started_by_callbacks);
    tcase_add_test(tc, test_K05_free_inside_callbacks);
    tcase_add_test(tc, test_K06_hundred_thousand_timers);
    tcase_add_test(tc, test_K07_run_jumps_time);
    tcase_add_test(tc, test_K07_run_blocks_for_held_wakeup);
    tcase_add_test(tc, test_K08_run_blocks_for_readable_pipe);
    tcase_add_test(tc, test_K08_set_zero_stops_level_triggered);
    tcase_add_test(tc, test_K08_hangup_readable_and_writable);
    tcase_add_test(tc, test_K09_wakeups);
    tcase_add_test(tc, test_K09_send_from_threads);
    tcase_add_test(tc, test_K10_release_once);
    tcase_add_test(tc, test_K10_callback_drops_last_reference);
    tcase_add_test(tc, test_K11_bad_input);
    tcase_add_test(tc, test_K12_every_allocation_failed);
    tcase_add_test(tc, test_K13_harness);
    tcase_add_test(tc, test_K14_dump_shows_time_and_timers);
    tcase_add_test(tc, test_K15_timeout_without_sleeping);
    tcase_add_test(tc, test_K15_pool_before_virtual_timeout);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(clock_suite());
}
