/*
 * t/test-uv.c: the libuv adapter (deferred/uv.h) against the contract of
 * deferred_loop_ops_t (deferred/loop.h), driven through the ops table
 * itself: timers, fd readiness, cross-thread wakeups, the release, and
 * allocation failures.
 *
 * Each test gets its loop from t/harness-uv.c (the harness of the
 * parametrised loop tests): a uv_loop_t of its own wrapped by
 * deferred_uv_loop_new().  The fixture destroys it, which fails the test
 * when a handle is left open on the uv loop, and then proves that nothing
 * allocated through the library is left (the adapter's blocks included).
 *
 * Nothing here depends on how fast the machine is: orders are checked,
 * and one delay is checked from below only (a busy callback must not
 * shorten it; a loaded machine only lengthens it).  uv_loop_alive() says
 * whether uv_run() would keep going, so the keep-alive rules are checked
 * without waiting.  testutil's allocator is not thread-safe: the threads
 * here only call wakeup_send, which never allocates.
 */
#include "testutil.h"

#include <uv.h>
#include <deferred/uv.h>

#include "loop/loop-private.h"
#include "loop-harness.h"

#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const tl_harness_t *const H = &tl_harness_uv;
static deferred_loop_t *L;
static void *S;                        /* the harness's state */
static uv_loop_t *UV;                  /* the same, as the uv loop */
static const deferred_loop_ops_t *O;   /* L's adapter */
static void *I;                        /* and its state */
static pthread_t loop_thread;

static void setup(void)
{
    tu_setup();
    L = H->make(&S);
    ck_assert_ptr_nonnull(L);
    UV = S;
    O = L->ops;
    I = L->impl;
    loop_thread = pthread_self();
    signal(SIGPIPE, SIG_IGN);
}

static void teardown(void)
{
    if (L)
        H->destroy(L, S);
    L = NULL;
    tu_teardown();
}

static void run_nowait(void)
{
    H->run_nowait(L, S);
}

static void run(void)
{
    H->run(L, S);
}

/* ---- timers ------------------------------------------------------------- */

#define MAXREC 16
static int rec[MAXREC];
static int nrec;

static void record(void *arg)
{
    ck_assert(pthread_equal(pthread_self(), loop_thread));
    ck_assert_int_lt(nrec, MAXREC);
    rec[nrec++] = (int)ARGI(arg);
}

static void reset_rec(void)
{
    nrec = 0;
    memset(rec, 0, sizeof rec);
}

START_TEST(test_name_and_now)
{
    double a, b;

    ck_assert_str_eq(deferred_loop_name(L), "uv");
    ck_assert_ptr_eq(deferred_loop_impl(L), I);
    uv_update_time(UV);
    a = deferred_loop_now(L);
    ck_assert(a == (double)uv_now(UV) / 1000.0);
    usleep(3000);
    uv_update_time(UV);
    b = deferred_loop_now(L);
    ck_assert(b >= a + 0.002);
}
END_TEST

/* Started one after the other, each delay counts from its own start (the
 * time timer_start refreshed, which deferred_loop_now() then reads): the
 * order expected is that of the due times, start + delay rounded up to
 * the millisecond (ties in start order).  Normally 2, 1, 3, 0; on a slow
 * machine (valgrind) the starts may be far enough apart to change it. */
START_TEST(test_timers_fire_once_in_order_of_delays)
{
    static const double delays[4] = { 0.030, 0.010, 0.0, 0.020 };
    double due[4];
    int expect[4];
    void *t[4];
    int i, j;

    reset_rec();
    for (i = 0; i < 4; i++) {
        t[i] = O->timer_new(I, record, TAG(i));
        ck_assert_ptr_nonnull(t[i]);
        O->timer_start(t[i], delays[i]);
        due[i] = deferred_loop_now(L) + ceil(delays[i] * 1000.0) / 1000.0;
    }
    ck_assert_int_eq(nrec, 0); /* nothing runs inside timer_start */
    for (i = 0; i < 4; i++) {
        /* insertion by due time, stable */
        for (j = i; j > 0 && due[expect[j - 1]] > due[i] + 1e-9; j--)
            expect[j] = expect[j - 1];
        expect[j] = i;
    }
    run(); /* returns once no timer is running */
    ck_assert_int_eq(nrec, 4);
    for (i = 0; i < 4; i++)
        ck_assert_msg(rec[i] == expect[i], "timer %d fired %dth, timer %d was due then",
                      rec[i], i + 1, expect[i]);
    /* one-shot: nothing left to keep the loop going, nothing fires again */
    ck_assert_int_eq(uv_loop_alive(UV), 0);
    run();
    ck_assert_int_eq(nrec, 4);
    for (i = 0; i < 4; i++)
        O->timer_free(t[i]);
}
END_TEST

static void *restart_target;

static void restart_other(void *arg)
{
    record(arg);
    O->timer_start(restart_target, 0.001);
}

START_TEST(test_timer_restart)
{
    void *a = O->timer_new(I, record, TAG(1));
    void *b = O->timer_new(I, record, TAG(2));
    void *c = O->timer_new(I, restart_other, TAG(3));
    void *z = O->timer_new(I, record, TAG(4));

    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_nonnull(c);
    ck_assert_ptr_nonnull(z);
    reset_rec();
    /* a restarted later than b: b first, a once */
    O->timer_start(a, 0.001);
    O->timer_start(b, 0.010);
    O->timer_start(a, 0.080);
    /* z started with 0, then with a delay: it leaves the next-iteration
     * list and fires after b (the gaps leave a slow machine 30 ms between
     * these starts) */
    O->timer_start(z, 0.0);
    O->timer_start(z, 0.040);
    run();
    ck_assert_int_eq(nrec, 3);
    ck_assert_int_eq(rec[0], 2);
    ck_assert_int_eq(rec[1], 4);
    ck_assert_int_eq(rec[2], 1);

    /* a running timer restarted from another's callback: from 1,000 s
     * down to 1 ms (without the restart, run() would wait 1,000 s) */
    reset_rec();
    O->timer_start(a, 1000.0);
    restart_target = a;
    O->timer_start(c, 0.0);
    run();
    ck_assert_int_eq(nrec, 2);
    ck_assert_int_eq(rec[0], 3);
    ck_assert_int_eq(rec[1], 1);

    O->timer_free(a);
    O->timer_free(b);
    O->timer_free(c);
    O->timer_free(z);
}
END_TEST

START_TEST(test_timer_stop)
{
    void *a = O->timer_new(I, record, TAG(1));
    void *z = O->timer_new(I, record, TAG(2));

    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(z);
    reset_rec();
    O->timer_stop(a); /* not running: a no-op */
    O->timer_start(a, 0.001);
    O->timer_start(z, 0.0);
    ck_assert_int_ne(uv_loop_alive(UV), 0);
    O->timer_stop(a);
    O->timer_stop(z);
    /* neither keeps the loop: the idle handle of 0-delay timers stopped too */
    ck_assert_int_eq(uv_loop_alive(UV), 0);
    run();
    usleep(2000);
    run_nowait();
    ck_assert_int_eq(nrec, 0);
    O->timer_stop(z);
    /* and they start again */
    O->timer_start(a, 0.001);
    O->timer_start(z, 0.0);
    run();
    ck_assert_int_eq(nrec, 2);
    ck_assert_int_eq(rec[0], 2);
    ck_assert_int_eq(rec[1], 1);
    O->timer_free(a);
    O->timer_free(z);
}
END_TEST

/* A timer that restarts itself with 0 from its callback, up to 5 times. */
static void *self_timer;
static int self_count;

static void restart_self(void *arg)
{
    (void)arg;
    if (++self_count < 5)
        O->timer_start(self_timer, 0.0);
}

START_TEST(test_timer_zero_next_iteration)
{
    int i;

    self_count = 0;
    self_timer = O->timer_new(I, restart_self, NULL);
    ck_assert_ptr_nonnull(self_timer);
    O->timer_start(self_timer, 0.0);
    ck_assert_int_eq(self_count, 0); /* never inside timer_start */
    /* once per iteration: a 0 ms uv_timer_t restarted from its own
     * callback would fire again in the same pass (5 at once) */
    for (i = 1; i <= 5; i++) {
        run_nowait();
        ck_assert_int_eq(self_count, i);
    }
    run_nowait();
    ck_assert_int_eq(self_count, 5);
    ck_assert_int_eq(uv_loop_alive(UV), 0);
    O->timer_free(self_timer);
}
END_TEST

/* A 0 timer started from another timer's callback: not in the same pass
 * of the timers either. */
static void *zero_from_timer;

static void start_zero(void *arg)
{
    record(arg);
    O->timer_start(zero_from_timer, 0.0);
}

START_TEST(test_timer_zero_from_timer_callback)
{
    void *a = O->timer_new(I, start_zero, TAG(1));
    int i;

    zero_from_timer = O->timer_new(I, record, TAG(2));
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(zero_from_timer);
    reset_rec();
    O->timer_start(a, 0.001);
    for (i = 0; i < 10000 && nrec == 0; i++) {
        usleep(1000);
        run_nowait();
    }
    ck_assert_int_eq(nrec, 1); /* a fired; the 0 timer it started waits */
    run_nowait();
    ck_assert_int_eq(nrec, 2);
    ck_assert_int_eq(rec[1], 2);
    O->timer_free(a);
    O->timer_free(zero_from_timer);
}
END_TEST

/* 0 timers fire among the others in the order of their due times: a 0
 * timer started before a 1 ms one fires first, also when both are due
 * by the time the loop runs. */
START_TEST(test_timer_zero_orders_with_due_timers)
{
    void *z = O->timer_new(I, record, TAG(1));
    void *a = O->timer_new(I, record, TAG(2));
    uint64_t until;

    ck_assert_ptr_nonnull(z);
    ck_assert_ptr_nonnull(a);
    reset_rec();
    O->timer_start(z, 0.0);
    O->timer_start(a, 0.001);
    until = uv_hrtime() + 5 * 1000000ull;
    while (uv_hrtime() < until)
        ;
    run();
    ck_assert_int_eq(nrec, 2);
    ck_assert_int_eq(rec[0], 1);
    ck_assert_int_eq(rec[1], 2);
    O->timer_free(z);
    O->timer_free(a);
}
END_TEST

/* A callback that keeps the loop busy for 30 ms, then starts a 20 ms
 * timer: counted from the time it was started, not from the cached time
 * of the iteration's start.  (A 0 timer started after it makes the next
 * iteration come at once: from the stale time, the 20 ms timer would be
 * due then.) */
static void *busy_timer, *late_timer, *nudge_timer;
static uint64_t late_started;
static double late_started_now;
static uint64_t late_fired;
static double late_fired_now;

static void on_late(void *arg)
{
    (void)arg;
    late_fired = uv_hrtime();
    late_fired_now = deferred_loop_now(L);
}

static void on_busy(void *arg)
{
    uint64_t until = uv_hrtime() + 30 * 1000000ull;

    (void)arg;
    while (uv_hrtime() < until)
        ;
    late_started = uv_hrtime();
    O->timer_start(late_timer, 0.020);
    late_started_now = deferred_loop_now(L);
    O->timer_start(nudge_timer, 0.0);
}

static void on_nudge(void *arg)
{
    (void)arg;
}

START_TEST(test_timer_busy_callback_does_not_shorten_delay)
{
    busy_timer = O->timer_new(I, on_busy, NULL);
    late_timer = O->timer_new(I, on_late, NULL);
    nudge_timer = O->timer_new(I, on_nudge, NULL);
    ck_assert_ptr_nonnull(nudge_timer);
    ck_assert_ptr_nonnull(busy_timer);
    ck_assert_ptr_nonnull(late_timer);
    late_fired = 0;
    O->timer_start(busy_timer, 0.0);
    run();
    ck_assert_uint_ne(late_fired, 0);
    /* uv_now() counts whole milliseconds: 1 ms of truncation at most */
    ck_assert_msg(late_fired - late_started >= 19 * 1000000ull,
                  "a 20 ms timer fired after %.3f ms",
                  (double)(late_fired - late_started) / 1e6);
    ck_assert_msg(late_fired_now - late_started_now >= 0.020 - 1e-9,
                  "a 20 ms timer fired %.4f s after it started on the loop's clock",
                  late_fired_now - late_started_now);
    O->timer_free(busy_timer);
    O->timer_free(late_timer);
    O->timer_free(nudge_timer);
}
END_TEST

/* A delay between two milliseconds is rounded up, never down: on the
 * loop's own clock (uv_now()), a 1.5 ms timer fires 2 ms or more after it
 * started. */
static double frac_started, frac_fired;

static void on_frac(void *arg)
{
    (void)arg;
    frac_fired = deferred_loop_now(L);
}

START_TEST(test_timer_delay_rounded_up)
{
    void *t = O->timer_new(I, on_frac, NULL);
    int i;

    ck_assert_ptr_nonnull(t);
    for (i = 0; i < 5; i++) {
        frac_fired = -1.0;
        O->timer_start(t, 0.0015);
        frac_started = deferred_loop_now(L); /* refreshed by timer_start */
        run();
        ck_assert(frac_fired >= 0.0);
        ck_assert_msg(frac_fired - frac_started >= 0.002 - 1e-9,
                      "a 1.5 ms timer fired %.4f s after it started on the loop's clock",
                      frac_fired - frac_started);
    }
    O->timer_free(t);
}
END_TEST

/* Freed from inside their own callbacks; freed before they fire. */
static void *freeing_handle;
static int freeing_calls;

static void free_timer_cb(void *arg)
{
    (void)arg;
    freeing_calls++;
    O->timer_free(freeing_handle);
}

static void free_io_cb(void *arg, int revents)
{
    (void)arg;
    ck_assert_int_eq(revents, DEFERRED_LOOP_READ);
    freeing_calls++;
    O->io_free(freeing_handle);
}

static void free_wakeup_cb(void *arg)
{
    (void)arg;
    freeing_calls++;
    O->wakeup_free(freeing_handle);
}

static void count_cb(void *arg)
{
    (*(int *)arg)++;
}

static void count_io_cb(void *arg, int revents)
{
    (void)revents;
    (*(int *)arg)++;
}

START_TEST(test_free_from_own_callback)
{
    int p[2], calls = 0;
    void *t, *w, *k;

    freeing_calls = 0;
    freeing_handle = O->timer_new(I, free_timer_cb, NULL);
    ck_assert_ptr_nonnull(freeing_handle);
    O->timer_start(freeing_handle, 0.0);
    run();
    ck_assert_int_eq(freeing_calls, 1);
    freeing_handle = O->timer_new(I, free_timer_cb, NULL);
    ck_assert_ptr_nonnull(freeing_handle);
    O->timer_start(freeing_handle, 0.001);
    run();
    ck_assert_int_eq(freeing_calls, 2);

    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(write(p[1], "x", 1), 1);
    freeing_handle = O->io_new(I, p[0], free_io_cb, NULL);
    ck_assert_ptr_nonnull(freeing_handle);
    O->io_set(freeing_handle, DEFERRED_LOOP_READ);
    run(); /* the fd stays readable: returns only because it was freed */
    ck_assert_int_eq(freeing_calls, 3);

    freeing_handle = O->wakeup_new(I, free_wakeup_cb, NULL);
    ck_assert_ptr_nonnull(freeing_handle);
    O->wakeup_hold(freeing_handle, true);
    O->wakeup_send(freeing_handle);
    run();
    ck_assert_int_eq(freeing_calls, 4);

    /* freed while due: the callbacks never run */
    t = O->timer_new(I, count_cb, &calls);
    w = O->io_new(I, p[0], count_io_cb, &calls);
    k = O->wakeup_new(I, count_cb, &calls);
    ck_assert_ptr_nonnull(t);
    ck_assert_ptr_nonnull(w);
    ck_assert_ptr_nonnull(k);
    O->timer_start(t, 0.0);
    O->io_set(w, DEFERRED_LOOP_READ);
    O->wakeup_send(k);
    O->timer_free(t);
    O->io_free(w);
    O->wakeup_free(k);
    run();
    run_nowait();
    ck_assert_int_eq(calls, 0);
    close(p[0]);
    close(p[1]);
}
END_TEST

/* ---- fd readiness --------------------------------------------------------- */

static int io_calls, io_last;

static void io_record(void *arg, int revents)
{
    (void)arg;
    ck_assert(pthread_equal(pthread_self(), loop_thread));
    io_calls++;
    io_last = revents;
}

START_TEST(test_io_pipe_read_write_level_triggered)
{
    int p[2];
    char c;
    void *r, *w;

    ck_assert_int_eq(pipe(p), 0);
    io_calls = 0;
    r = O->io_new(I, p[0], io_record, NULL);
    ck_assert_ptr_nonnull(r);
    /* watching nothing: no keep-alive */
    ck_assert_int_eq(uv_loop_alive(UV), 0);
    O->io_set(r, DEFERRED_LOOP_READ);
    ck_assert_int_ne(uv_loop_alive(UV), 0);
    run_nowait();
    ck_assert_int_eq(io_calls, 0); /* nothing to read */
    ck_assert_int_eq(write(p[1], "ab", 2), 2);
    run_nowait();
    ck_assert_int_eq(io_calls, 1);
    ck_assert_int_eq(io_last, DEFERRED_LOOP_READ);
    /* level-triggered: still readable, reported again */
    run_nowait();
    ck_assert_int_eq(io_calls, 2);
    ck_assert_int_eq(read(p[0], &c, 1), 1);
    run_nowait();
    ck_assert_int_eq(io_calls, 3);
    ck_assert_int_eq(read(p[0], &c, 1), 1);
    run_nowait();
    ck_assert_int_eq(io_calls, 3);
    /* set(0) stops: no call although readable, nothing keeps the loop */
    ck_assert_int_eq(write(p[1], "c", 1), 1);
    O->io_set(r, 0);
    ck_assert_int_eq(uv_loop_alive(UV), 0);
    run_nowait();
    ck_assert_int_eq(io_calls, 3);
    O->io_free(r);

    /* the write end: writable at once, WRITE only */
    io_calls = 0;
    w = O->io_new(I, p[1], io_record, NULL);
    ck_assert_ptr_nonnull(w);
    O->io_set(w, DEFERRED_LOOP_WRITE);
    run_nowait();
    ck_assert_int_eq(io_calls, 1);
    ck_assert_int_eq(io_last, DEFERRED_LOOP_WRITE);
    /* watching READ on a write end: never ready */
    O->io_set(w, DEFERRED_LOOP_READ);
    run_nowait();
    ck_assert_int_eq(io_calls, 1);
    O->io_free(w);
    close(p[0]);
    close(p[1]);
}
END_TEST

/* Two watchers of one fd (libuv allows one uv_poll_t per fd): each sees
 * the events it asked for. */
static int two_r, two_w;

static void two_cb(void *arg, int revents)
{
    if (ARGI(arg) == 1) {
        ck_assert_int_eq(revents, DEFERRED_LOOP_READ);
        two_r++;
    } else {
        ck_assert_int_eq(revents, DEFERRED_LOOP_WRITE);
        two_w++;
    }
}

START_TEST(test_io_two_watchers_one_fd)
{
    int s[2];
    void *r, *w;

    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, s), 0);
    two_r = two_w = 0;
    r = O->io_new(I, s[0], two_cb, TAG(1));
    w = O->io_new(I, s[0], two_cb, TAG(2));
    ck_assert_ptr_nonnull(r);
    ck_assert_ptr_nonnull(w);
    O->io_set(r, DEFERRED_LOOP_READ);
    O->io_set(w, DEFERRED_LOOP_WRITE);
    run_nowait();
    ck_assert_int_eq(two_r, 0);
    ck_assert_int_eq(two_w, 1);
    ck_assert_int_eq(write(s[1], "x", 1), 1);
    run_nowait();
    ck_assert_int_eq(two_r, 1);
    ck_assert_int_eq(two_w, 2);
    /* one stopped, the other goes on */
    O->io_set(w, 0);
    run_nowait();
    ck_assert_int_eq(two_r, 2);
    ck_assert_int_eq(two_w, 2);
    O->io_free(r);
    run_nowait();
    ck_assert_int_eq(two_r, 2);
    ck_assert_int_eq(uv_loop_alive(UV), 0);
    O->io_set(w, DEFERRED_LOOP_WRITE);
    run_nowait();
    ck_assert_int_eq(two_w, 3);
    O->io_free(w);
    close(s[0]);
    close(s[1]);
}
END_TEST


/* Watchers of one fd freeing each other, and making a new one for the
 * same fd, from inside the shared callback. */
static void *pair[2];
static int pair_fd, pair_calls;
static void *pair_new;
static int pair_new_calls;

static void pair_new_cb(void *arg, int revents)
{
    (void)arg;
    ck_assert_int_eq(revents, DEFERRED_LOOP_READ);
    pair_new_calls++;
}

static void pair_cb(void *arg, int revents)
{
    int me = (int)ARGI(arg);

    ck_assert_int_eq(revents, DEFERRED_LOOP_READ);
    pair_calls++;
    /* the other one first (it may not have run yet), then myself: the
     * fd has no watcher left ... */
    O->io_free(pair[1 - me]);
    pair[1 - me] = NULL;
    O->io_free(pair[me]);
    pair[me] = NULL;
    /* ... until a new one comes, in the same callback */
    pair_new = O->io_new(I, pair_fd, pair_new_cb, NULL);
    ck_assert_ptr_nonnull(pair_new);
    O->io_set(pair_new, DEFERRED_LOOP_READ);
}

START_TEST(test_io_free_each_other_and_renew)
{
    int p[2];

    ck_assert_int_eq(pipe(p), 0);
    pair_fd = p[0];
    pair_calls = pair_new_calls = 0;
    pair[0] = O->io_new(I, p[0], pair_cb, TAG(0));
    pair[1] = O->io_new(I, p[0], pair_cb, TAG(1));
    ck_assert_ptr_nonnull(pair[0]);
    ck_assert_ptr_nonnull(pair[1]);
    O->io_set(pair[0], DEFERRED_LOOP_READ);
    O->io_set(pair[1], DEFERRED_LOOP_READ);
    ck_assert_int_eq(write(p[1], "x", 1), 1);
    run_nowait();
    /* one ran and freed the other before its turn; the new watcher was
     * made during the callback and is called from the next iteration */
    ck_assert_int_eq(pair_calls, 1);
    ck_assert_int_eq(pair_new_calls, 0);
    run_nowait();
    ck_assert_int_eq(pair_calls, 1);
    ck_assert_int_eq(pair_new_calls, 1);
    O->io_free(pair_new);
    close(p[0]);
    close(p[1]);
}
END_TEST

START_TEST(test_io_hangup_and_error_are_readiness)
{
    int p[2], s[2];
    char buf[4];
    void *r, *w;

    /* the writer closes: the read end is readable, read() says EOF */
    ck_assert_int_eq(pipe(p), 0);
    io_calls = 0;
    r = O->io_new(I, p[0], io_record, NULL);
    ck_assert_ptr_nonnull(r);
    O->io_set(r, DEFERRED_LOOP_READ);
    run_nowait();
    ck_assert_int_eq(io_calls, 0);
    close(p[1]);
    run_nowait();
    ck_assert_int_eq(io_calls, 1);
    ck_assert_int_eq(io_last, DEFERRED_LOOP_READ);
    ck_assert_int_eq(read(p[0], buf, sizeof buf), 0);
    run_nowait(); /* level-triggered: EOF lasts */
    ck_assert_int_eq(io_calls, 2);
    O->io_free(r);
    close(p[0]);

    /* the reader closes: an error on the write end (POLLERR, which libuv
     * reports as a status and stops its handle for): WRITE, on every
     * iteration, and write() says EPIPE */
    ck_assert_int_eq(pipe(p), 0);
    io_calls = 0;
    w = O->io_new(I, p[1], io_record, NULL);
    ck_assert_ptr_nonnull(w);
    O->io_set(w, DEFERRED_LOOP_WRITE);
    close(p[0]);
    run_nowait();
    ck_assert_int_eq(io_calls, 1);
    ck_assert_int_eq(io_last, DEFERRED_LOOP_WRITE);
    run_nowait();
    ck_assert_int_eq(io_calls, 2);
    ck_assert_int_eq(io_last, DEFERRED_LOOP_WRITE);
    errno = 0;
    ck_assert_int_eq(write(p[1], "x", 1), -1);
    ck_assert_int_eq(errno, EPIPE);
    /* watching both: both reported */
    O->io_set(w, DEFERRED_LOOP_READ | DEFERRED_LOOP_WRITE);
    run_nowait();
    ck_assert_int_eq(io_calls, 3);
    ck_assert_int_eq(io_last, DEFERRED_LOOP_READ | DEFERRED_LOOP_WRITE);
    O->io_free(w);
    close(p[1]);

    /* a socket's peer shuts its side down: readable, EOF */
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, s), 0);
    io_calls = 0;
    r = O->io_new(I, s[0], io_record, NULL);
    ck_assert_ptr_nonnull(r);
    O->io_set(r, DEFERRED_LOOP_READ);
    run_nowait();
    ck_assert_int_eq(io_calls, 0);
    ck_assert_int_eq(shutdown(s[1], SHUT_WR), 0);
    run_nowait();
    ck_assert_int_eq(io_calls, 1);
    ck_assert_int_eq(io_last, DEFERRED_LOOP_READ);
    ck_assert_int_eq(read(s[0], buf, sizeof buf), 0);
    O->io_free(r);
    close(s[0]);
    close(s[1]);
}
END_TEST

START_TEST(test_io_leaves_fd_flags_alone)
{
    int p[2];
    void *r, *w;

    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(fcntl(p[1], F_SETFL, fcntl(p[1], F_GETFL) | O_NONBLOCK), 0);
    r = O->io_new(I, p[0], io_record, NULL);
    w = O->io_new(I, p[1], io_record, NULL);
    ck_assert_ptr_nonnull(r);
    ck_assert_ptr_nonnull(w);
    /* uv_poll_init() made both non-blocking; the blocking one is back */
    ck_assert_int_eq(fcntl(p[0], F_GETFL) & O_NONBLOCK, 0);
    ck_assert_int_ne(fcntl(p[1], F_GETFL) & O_NONBLOCK, 0);
    O->io_free(r);
    O->io_free(w);
    close(p[0]);
    close(p[1]);
}
END_TEST

static void user_poll_cb(uv_poll_t *h, int status, int events)
{
    (void)h;
    (void)status;
    (void)events;
    ck_abort_msg("the user's poll handle was not to run");
}

START_TEST(test_io_refused_fds)
{
    int p[2];
    void *w;
    uv_poll_t poll;

    errno = 0;
    ck_assert_ptr_null(O->io_new(I, -1, io_record, NULL));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(pipe(p), 0);
    close(p[1]);
    errno = 0;
    ck_assert_ptr_null(O->io_new(I, p[1], io_record, NULL)); /* closed */
    ck_assert_int_eq(errno, EBADF);
    /* the user's own started uv_poll_t on the fd: EEXIST */
    ck_assert_int_eq(uv_poll_init(UV, &poll, p[0]), 0);
    ck_assert_int_eq(uv_poll_start(&poll, UV_READABLE, user_poll_cb), 0);
    errno = 0;
    ck_assert_ptr_null(O->io_new(I, p[0], io_record, NULL));
    ck_assert_int_eq(errno, EEXIST);
    /* The loop layer passes the refusal on, not as "out of memory". */
    errno = 0;
    ck_assert_ptr_null(deferred_loop_io_new(L, p[0], io_record, NULL));
    ck_assert_int_eq(errno, EEXIST);
    errno = 0;
    ck_assert_ptr_null(deferred_loop_readable(L, p[0]));
    ck_assert_int_eq(errno, EEXIST);
    uv_close((uv_handle_t *)&poll, NULL);
    run_nowait();
    /* and then it works */
    w = O->io_new(I, p[0], io_record, NULL);
    ck_assert_ptr_nonnull(w);
    O->io_free(w);
    close(p[0]);
}
END_TEST

/* A regular file, which epoll refuses: always ready, as poll() says. */
static int file_calls[2], file_last[2];
static void *file_w[2];

static void file_cb(void *arg, int revents)
{
    int i = (int)ARGI(arg);

    file_calls[i]++;
    file_last[i] = revents;
    if (i == 1 && file_calls[1] == 2)
        O->io_free(file_w[1]); /* from inside its callback */
}

START_TEST(test_io_regular_file_always_ready)
{
    char path[] = "/tmp/test-uv-XXXXXX";
    char buf[8];
    int fd = mkstemp(path);

    ck_assert_int_ge(fd, 0);
    unlink(path);
    ck_assert_int_eq(write(fd, "abc", 3), 3);
    ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
    memset(file_calls, 0, sizeof file_calls);
    file_w[0] = O->io_new(I, fd, file_cb, TAG(0));
    file_w[1] = O->io_new(I, fd, file_cb, TAG(1));
    ck_assert_ptr_nonnull(file_w[0]);
    ck_assert_ptr_nonnull(file_w[1]);
    ck_assert_int_eq(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
    ck_assert_int_eq(uv_loop_alive(UV), 0); /* watching nothing */
    O->io_set(file_w[0], DEFERRED_LOOP_READ);
    O->io_set(file_w[1], DEFERRED_LOOP_READ | DEFERRED_LOOP_WRITE);
    run_nowait();
    ck_assert_int_eq(file_calls[0], 1);
    ck_assert_int_eq(file_last[0], DEFERRED_LOOP_READ);
    ck_assert_int_eq(file_calls[1], 1);
    ck_assert_int_eq(file_last[1], DEFERRED_LOOP_READ | DEFERRED_LOOP_WRITE);
    ck_assert_int_eq(read(fd, buf, sizeof buf), 3);
    run_nowait(); /* at the end of the file: still ready (read() says EOF) */
    ck_assert_int_eq(file_calls[0], 2);
    ck_assert_int_eq(file_calls[1], 2); /* and freed itself */
    ck_assert_int_eq(read(fd, buf, sizeof buf), 0);
    run_nowait();
    ck_assert_int_eq(file_calls[0], 3);
    ck_assert_int_eq(file_calls[1], 2);
    O->io_set(file_w[0], 0);
    ck_assert_int_eq(uv_loop_alive(UV), 0);
    run_nowait();
    ck_assert_int_eq(file_calls[0], 3);
    O->io_free(file_w[0]);
    close(fd);
}
END_TEST

/* Many fds: the table of pollers grows (by fd) with watchers in it. */
START_TEST(test_io_many_fds)
{
    enum { N = 40 };
    int p[N][2], calls[N], i, second_calls = 0;
    void *w[N], *second;

    for (i = 0; i < N; i++) {
        ck_assert_int_eq(pipe(p[i]), 0);
        calls[i] = 0;
        w[i] = O->io_new(I, p[i][0], count_io_cb, &calls[i]);
        ck_assert_ptr_nonnull(w[i]);
        O->io_set(w[i], DEFERRED_LOOP_READ);
    }
    ck_assert_int_gt(p[N - 1][0], 64); /* past two growths of the table */
    /* the first fd's poller is still found: a second watcher shares it */
    second = O->io_new(I, p[0][0], count_io_cb, &second_calls);
    ck_assert_ptr_nonnull(second);
    O->io_set(second, DEFERRED_LOOP_READ);
    for (i = 0; i < N; i += 2)
        ck_assert_int_eq(write(p[i][1], "x", 1), 1);
    run_nowait();
    for (i = 0; i < N; i++)
        ck_assert_int_eq(calls[i], i % 2 == 0);
    ck_assert_int_eq(second_calls, 1);
    O->io_free(second);
    for (i = 0; i < N; i++) {
        O->io_free(w[i]);
        close(p[i][0]);
        close(p[i][1]);
    }
}
END_TEST

/* The last reference dropped from inside a callback of the adapter (an fd
 * watcher's, a 0 timer's), after freeing the handle: the state outlives
 * the walk it is in, and goes with the last close. */
static deferred_loop_t *inner_loop;
static const deferred_loop_ops_t *inner_ops;
static void *inner_handle;
static int inner_calls;

static void inner_io_drop(void *arg, int revents)
{
    (void)arg;
    (void)revents;
    inner_calls++;
    inner_ops->io_free(inner_handle);
    deferred_loop_unref(inner_loop);
}

static void inner_timer_drop(void *arg)
{
    (void)arg;
    inner_calls++;
    inner_ops->timer_free(inner_handle);
    deferred_loop_unref(inner_loop);
}

START_TEST(test_last_unref_from_callbacks)
{
    size_t before = tu_live();
    uv_loop_t uv;
    int p[2];

    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(write(p[1], "x", 1), 1);
    inner_calls = 0;
    ck_assert_int_eq(uv_loop_init(&uv), 0);
    inner_loop = deferred_uv_loop_new(&uv);
    ck_assert_ptr_nonnull(inner_loop);
    inner_ops = inner_loop->ops;
    inner_handle = inner_ops->io_new(inner_loop->impl, p[0], inner_io_drop, NULL);
    ck_assert_ptr_nonnull(inner_handle);
    inner_ops->io_set(inner_handle, DEFERRED_LOOP_READ);
    uv_run(&uv, UV_RUN_DEFAULT);
    ck_assert_int_eq(inner_calls, 1);
    ck_assert_int_eq(deferred_uv_loop_close(&uv), 0);
    ck_assert_uint_eq(tu_live(), before);

    ck_assert_int_eq(uv_loop_init(&uv), 0);
    inner_loop = deferred_uv_loop_new(&uv);
    ck_assert_ptr_nonnull(inner_loop);
    inner_ops = inner_loop->ops;
    inner_handle = inner_ops->timer_new(inner_loop->impl, inner_timer_drop, NULL);
    ck_assert_ptr_nonnull(inner_handle);
    inner_ops->timer_start(inner_handle, 0.0);
    uv_run(&uv, UV_RUN_DEFAULT);
    ck_assert_int_eq(inner_calls, 2);
    ck_assert_int_eq(deferred_uv_loop_close(&uv), 0);
    ck_assert_uint_eq(tu_live(), before);
    close(p[0]);
    close(p[1]);
}
END_TEST

/* ---- wakeups ------------------------------------------------------------ */

static atomic_int wake_calls;
static void *wake;
static atomic_int thread_done;
static int wake_sends = 1000;

static void on_wake(void *arg)
{
    (void)arg;
    ck_assert(pthread_equal(pthread_self(), loop_thread));
    atomic_fetch_add(&wake_calls, 1);
    if (atomic_load(&thread_done))
        O->wakeup_hold(wake, false);
}

static void *sender(void *arg)
{
    int i, n = *(int *)arg;

    for (i = 0; i < n; i++)
        O->wakeup_send(wake);
    atomic_store(&thread_done, 1);
    O->wakeup_send(wake); /* after done: one callback sees it */
    return NULL;
}

START_TEST(test_wakeup_from_other_thread)
{
    pthread_t th;
    int n = wake_sends;

    atomic_store(&wake_calls, 0);
    atomic_store(&thread_done, 0);
    wake = O->wakeup_new(I, on_wake, NULL);
    ck_assert_ptr_nonnull(wake);
    O->wakeup_hold(wake, true);
    ck_assert_int_eq(pthread_create(&th, NULL, sender, &n), 0);
    run(); /* held until a callback after the thread's last send */
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_ge(atomic_load(&wake_calls), 1);
    ck_assert_int_le(atomic_load(&wake_calls), n + 1);
    O->wakeup_free(wake);
}
END_TEST

START_TEST(test_wakeup_sends_coalesce)
{
    int calls = 0;
    void *k = O->wakeup_new(I, count_cb, &calls);

    ck_assert_ptr_nonnull(k);
    /* held, so that uv_run(UV_RUN_NOWAIT) makes an iteration (it makes
     * none when nothing keeps the loop alive) */
    O->wakeup_hold(k, true);
    O->wakeup_send(k);
    O->wakeup_send(k);
    O->wakeup_send(k);
    ck_assert_int_eq(calls, 0); /* never inside send */
    run_nowait();
    ck_assert_int_eq(calls, 1);
    run_nowait();
    ck_assert_int_eq(calls, 1);
    O->wakeup_send(k);
    run_nowait();
    ck_assert_int_eq(calls, 2);
    O->wakeup_free(k);
}
END_TEST

/* hold keeps uv_run(UV_RUN_DEFAULT) going; a timer's callback starts the
 * thread that sends, so without the hold uv_run() would return first. */
static void *hold_wake;
static int hold_calls;
static pthread_t hold_thread;
static bool hold_thread_made;

static void *send_once(void *arg)
{
    (void)arg;
    usleep(20000);
    O->wakeup_send(hold_wake);
    return NULL;
}

static void on_hold_timer(void *arg)
{
    (void)arg;
    hold_thread_made = pthread_create(&hold_thread, NULL, send_once, NULL) == 0;
}

static void on_hold_wake(void *arg)
{
    (void)arg;
    hold_calls++;
    O->wakeup_hold(hold_wake, false);
}

START_TEST(test_wakeup_hold_keeps_uv_run)
{
    void *t = O->timer_new(I, on_hold_timer, NULL);

    hold_calls = 0;
    hold_thread_made = false;
    hold_wake = O->wakeup_new(I, on_hold_wake, NULL);
    ck_assert_ptr_nonnull(t);
    ck_assert_ptr_nonnull(hold_wake);
    /* unheld: nothing keeps the loop */
    ck_assert_int_eq(uv_loop_alive(UV), 0);
    run();
    O->wakeup_hold(hold_wake, true);
    ck_assert_int_ne(uv_loop_alive(UV), 0);
    O->wakeup_hold(hold_wake, true); /* calls do not nest */
    O->wakeup_hold(hold_wake, false);
    ck_assert_int_eq(uv_loop_alive(UV), 0);
    O->wakeup_hold(hold_wake, true);
    O->timer_start(t, 0.0);
    run(); /* returns once the wakeup's callback unheld it */
    ck_assert(hold_thread_made);
    ck_assert_int_eq(pthread_join(hold_thread, NULL), 0);
    ck_assert_int_eq(hold_calls, 1);
    ck_assert_int_eq(uv_loop_alive(UV), 0);
    O->timer_free(t);
    O->wakeup_free(hold_wake);
}
END_TEST

/* ---- the loop: new, release, close -------------------------------------- */

START_TEST(test_new_and_close_bad_input)
{
    errno = 0;
    ck_assert_ptr_null(deferred_uv_loop_new(NULL));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(deferred_uv_loop_close(NULL), -EINVAL);
}
END_TEST

START_TEST(test_release_once_at_last_unref)
{
    size_t before = tu_live();
    uv_loop_t uv;
    deferred_loop_t *l;
    void *impl, *t;
    const deferred_loop_ops_t *ops;
    int calls = 0;

    ck_assert_int_eq(uv_loop_init(&uv), 0);
    l = deferred_uv_loop_new(&uv);
    ck_assert_ptr_nonnull(l);
    ops = l->ops;
    impl = l->impl;
    /* the loop, the state and the loop's own wakeup (its mailbox's) */
    ck_assert_uint_eq(tu_live(), before + 3);
    ck_assert_ptr_eq(deferred_loop_ref(l), l);
    deferred_loop_unref(l);
    /* one reference left: the state is there and works */
    ck_assert_uint_eq(tu_live(), before + 3);
    t = ops->timer_new(impl, count_cb, &calls);
    ck_assert_ptr_nonnull(t);
    ops->timer_start(t, 0.0);
    uv_run(&uv, UV_RUN_DEFAULT);
    ck_assert_int_eq(calls, 1);
    /* a handle closing at the last unref: the state waits for its close */
    ops->timer_free(t);
    deferred_loop_unref(l);
    /* the timer and the wakeup closing, and the state */
    ck_assert_uint_eq(tu_live(), before + 3);
    ck_assert_int_eq(uv_loop_close(&uv), UV_EBUSY);
    ck_assert_int_eq(deferred_uv_loop_close(&uv), 0);
    ck_assert_uint_eq(tu_live(), before);
}
END_TEST

START_TEST(test_loop_close_busy_while_referenced)
{
    void *t = O->timer_new(I, record, TAG(1));

    ck_assert_ptr_nonnull(t);
    /* the library's open timer (the loop still referenced): busy */
    ck_assert_int_eq(deferred_uv_loop_close(UV), UV_EBUSY);
    O->timer_free(t);
    /* the fixture's destroy closes it */
}
END_TEST

/* In debug mode a dump's line for the loop tells the adapter's handles
 * and the fds it watches. */
START_TEST(test_dump_describes_adapter)
{
    char *text = NULL;
    deferred_t *d;
    int p[2];
    void *w;

    ck_assert_int_eq(pipe(p), 0);
    deferred_set_debug(true);
    d = deferred_loop_later(L, 1000.0); /* a tracked item: the loop is dumped */
    ck_assert_ptr_nonnull(d);
    w = O->io_new(I, p[0], io_record, NULL);
    ck_assert_ptr_nonnull(w);
    text = deferred_dump_string(DEFERRED_DUMP_TEXT);
    ck_assert_ptr_nonnull(text);
    /* the mailbox's wakeup, the timer, the fd's poller */
    ck_assert_msg(text && strstr(text, "loop uv ") && strstr(text, "uv_handles=3") &&
                  strstr(text, "fds=1"), "%s", text ? text : "(none)");
    deferred_free(text);
    O->io_free(w);
    deferred_unref(d);
    deferred_set_debug(false);
    close(p[0]);
    close(p[1]);
}
END_TEST

/* ---- allocation failures ------------------------------------------------- */

static void sc_each_new(struct tu_oom *r)
{
    deferred_loop_t *l = NULL;
    void *state = NULL, *t = NULL, *w = NULL, *w2 = NULL, *k = NULL;
    const deferred_loop_ops_t *ops = NULL;
    void *impl;
    int p[2], tcalls = 0, kcalls = 0, wcalls = 0;

    ck_assert_int_eq(pipe(p), 0);
    TU_NEW(r, l, H->make(&state), out);
    ops = l->ops;
    impl = l->impl;
    TU_NEW(r, t, ops->timer_new(impl, count_cb, &tcalls), out);
    TU_NEW(r, k, ops->wakeup_new(impl, count_cb, &kcalls), out);
    /* the first watcher of an fd: the watcher, the fd table, the poller */
    TU_NEW(r, w, ops->io_new(impl, p[1], count_io_cb, &wcalls), out);
    /* the second one: the watcher alone */
    TU_NEW(r, w2, ops->io_new(impl, p[1], count_io_cb, &wcalls), out);
    ops->timer_start(t, 0.0);
    ops->wakeup_send(k);
    ops->io_set(w, DEFERRED_LOOP_WRITE);
    H->run_nowait(l, state);
    r->ok = tcalls == 1 && kcalls == 1 && wcalls == 1;
out:
    if (t)
        ops->timer_free(t);
    if (k)
        ops->wakeup_free(k);
    if (w)
        ops->io_free(w);
    if (w2)
        ops->io_free(w2);
    if (l)
        H->destroy(l, state);
    close(p[0]);
    close(p[1]);
}

START_TEST(test_oom_each_new)
{
    unsigned long points = tu_oom_sweep("uv loop, timer, wakeup, io", sc_each_new, NULL,
                                        TU_OOM_STRICT);

    /* the state, the loop and its mailbox's wakeup, a timer, a wakeup, an
     * fd's watcher, table and poller, a second watcher */
    ck_assert_uint_eq(points, 9);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("uv");
    TCase *tc = tcase_create("ops");

    if (getenv("TU_UNDER_VALGRIND"))
        wake_sends = 100;
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_name_and_now);
    tcase_add_test(tc, test_timers_fire_once_in_order_of_delays);
    tcase_add_test(tc, test_timer_restart);
    tcase_add_test(tc, test_timer_stop);
    tcase_add_test(tc, test_timer_zero_next_iteration);
    tcase_add_test(tc, test_timer_zero_from_timer_callback);
    tcase_add_test(tc, test_timer_zero_orders_with_due_timers);
    tcase_add_test(tc, test_timer_busy_callback_does_not_shorten_delay);
    tcase_add_test(tc, test_timer_delay_rounded_up);
    tcase_add_test(tc, test_free_from_own_callback);
    tcase_add_test(tc, test_io_pipe_read_write_level_triggered);
    tcase_add_test(tc, test_io_two_watchers_one_fd);
    tcase_add_test(tc, test_io_free_each_other_and_renew);
    tcase_add_test(tc, test_io_hangup_and_error_are_readiness);
    tcase_add_test(tc, test_io_leaves_fd_flags_alone);
    tcase_add_test(tc, test_io_refused_fds);
    tcase_add_test(tc, test_io_regular_file_always_ready);
    tcase_add_test(tc, test_io_many_fds);
    tcase_add_test(tc, test_last_unref_from_callbacks);
    tcase_add_test(tc, test_wakeup_from_other_thread);
    tcase_add_test(tc, test_wakeup_sends_coalesce);
    tcase_add_test(tc, test_wakeup_hold_keeps_uv_run);
    tcase_add_test(tc, test_new_and_close_bad_input);
    tcase_add_test(tc, test_release_once_at_last_unref);
    tcase_add_test(tc, test_loop_close_busy_while_referenced);
    tcase_add_test(tc, test_dump_describes_adapter);
    tcase_add_test(tc, test_oom_each_new);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
