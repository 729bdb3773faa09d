/*
 * t/test-ev.c: the libev binding (deferred/ev.h): time, timeouts, fd
 * readiness, the line producer, the thread pool and cross-thread firing.
 *
 * Tests are named by their scenario id (E01 to E06, defined in
 * docs/scenarios.md) where they have one.  Each test makes its own loop
 * (ev_loop_new) and destroys it, and the fixture proves that nothing
 * allocated through the library is left.
 *
 * Threads and the counting allocator: testutil's allocator is not
 * thread-safe, so every test keeps the library's allocations on the loop
 * thread; that is the binding's design anyway (a remote handle is
 * allocated whole when made, a pool job when queued; firing and running
 * never allocate).
 *
 * DEFERRED_TEST_SCALE=N divides the stress test's 1,000,000 fires by N;
 * under valgrind (seen through LD_PRELOAD) it defaults to 100.
 */
#include "testutil.h"

#include <ev.h>
#include <deferred/ev.h>
#include <deferred/combinators.h>

#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct ev_loop *loop;
static pthread_t loop_thread;

static void setup(void)
{
    tu_setup();
    loop = ev_loop_new(EVFLAG_AUTO);
    ck_assert_ptr_nonnull(loop);
    loop_thread = pthread_self();
}

static void teardown(void)
{
    ev_loop_destroy(loop);
    loop = NULL;
    tu_teardown();
}

static int result_code(deferred_t *d)
{
    return deferred_failure_code(deferred_value_get_failure(deferred_result(d)));
}

static long test_scale(void)
{
    const char *s = getenv("DEFERRED_TEST_SCALE");
    const char *pre = getenv("LD_PRELOAD");
    long n;

    if (s && (n = strtol(s, NULL, 10)) > 0)
        return n;
    if (pre && strstr(pre, "vgpreload"))
        return 100;
    return 1;
}

/* ---- E01: later --------------------------------------------------------- */

static double fired_at;

static deferred_value_t note_time(deferred_value_t v, void *arg)
{
    (void)arg;
    fired_at = ev_time();
    ck_assert(pthread_equal(pthread_self(), loop_thread));
    return v;
}

START_TEST(test_E01_later_fires_after_delay)
{
    double start = ev_time();
    deferred_t *d = deferred_ev_later(loop, 0.01);

    ck_assert_ptr_nonnull(d);
    ck_assert(!deferred_has_fired(d));
    fired_at = 0;
    ck_assert_int_eq(deferred_add_callback(d, note_time, NULL), 0);
    ev_run(loop, 0);
    ck_assert(deferred_has_result(d));
    ck_assert(fired_at - start >= 0.01);
    ck_assert(deferred_value_is_none(deferred_result(d)));
    deferred_unref(d);
}
END_TEST

START_TEST(test_E01_later_cancelled_never_fires)
{
    double start = ev_time();
    deferred_t *d = deferred_ev_later(loop, 10.0);

    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_cancel(d), 0);
    ck_assert_int_eq(result_code(d), ECANCELED);
    /* Nothing left to wait for: ev_run returns at once. */
    ev_run(loop, 0);
    ck_assert(ev_time() - start < 5.0);
    ck_assert_int_eq(tu_log_count(1), 0);
    deferred_unref(d);
}
END_TEST

START_TEST(test_E01_later_freed_stops_timer)
{
    double start = ev_time();
    deferred_t *d = deferred_ev_later(loop, 10.0);

    ck_assert_ptr_nonnull(d);
    deferred_unref(d);
    ev_run(loop, 0);
    ck_assert(ev_time() - start < 5.0);
}
END_TEST

/* ---- E02, E03: timeouts ------------------------------------------------ */

START_TEST(test_E02_timeout_expires)
{
    deferred_t *d = deferred_new();
    deferred_failure_t *f;

    ck_assert_int_eq(deferred_ev_add_timeout(d, loop, 0.01), 0);
    ck_assert(!deferred_has_fired(d));
    ev_run(loop, 0);
    ck_assert(deferred_has_result(d));
    f = deferred_value_get_failure(deferred_result(d));
    ck_assert_int_eq(deferred_failure_code(f), ETIMEDOUT);
    ck_assert_int_eq(deferred_failure_code(deferred_failure_cause(f)), ECANCELED);
    ck_assert_ptr_nonnull(strstr(deferred_failure_message(f), "timed out"));
    deferred_value_release(deferred_result_take(d));
    deferred_unref(d);
}
END_TEST

static deferred_value_t fire_other(deferred_value_t v, void *arg)
{
    deferred_callback((deferred_t *)arg, deferred_value_int(5));
    return v;
}

START_TEST(test_E02_result_first_stops_timer)
{
    double start = ev_time();
    deferred_t *d = deferred_new();
    deferred_t *soon = deferred_ev_later(loop, 0.001);

    ck_assert_int_eq(deferred_ev_add_timeout(d, loop, 10.0), 0);
    ck_assert_int_eq(deferred_add_callback(soon, fire_other, d), 0);
    ev_run(loop, 0);
    /* The loop did not wait the 10 s of the timeout. */
    ck_assert(ev_time() - start < 5.0);
    ck_assert_int_eq(deferred_value_get_int(deferred_result(d)), 5);
    deferred_unref(soon);
    deferred_unref(d);
}
END_TEST

START_TEST(test_E02_timeout_on_fired_deferred)
{
    double start = ev_time();
    deferred_t *d = deferred_succeed(deferred_value_int(3));

    ck_assert_int_eq(deferred_ev_add_timeout(d, loop, 10.0), 0);
    ev_run(loop, 0);
    ck_assert(ev_time() - start < 5.0);
    ck_assert_int_eq(deferred_value_get_int(deferred_result(d)), 3);
    deferred_unref(d);
}
END_TEST

START_TEST(test_E02_other_cancel_stays_ecanceled)
{
    double start = ev_time();
    deferred_t *d = deferred_new();

    ck_assert_int_eq(deferred_ev_add_timeout(d, loop, 10.0), 0);
    deferred_cancel(d);
    ck_assert_int_eq(result_code(d), ECANCELED);
    ev_run(loop, 0);
    ck_assert(ev_time() - start < 5.0);
    deferred_value_release(deferred_result_take(d));
    deferred_unref(d);
}
END_TEST

START_TEST(test_E02_freed_deferred_stops_timer)
{
    double start = ev_time();
    deferred_t *d = deferred_new();

    ck_assert_int_eq(deferred_ev_add_timeout(d, loop, 10.0), 0);
    deferred_unref(d);
    ev_run(loop, 0);
    ck_assert(ev_time() - start < 5.0);
}
END_TEST

static int hook_destroyed;

static deferred_value_t on_timeout_42(deferred_value_t v, double seconds, void *arg)
{
    ck_assert_int_eq(ARGI(arg), 7);
    ck_assert(seconds == 0.005);
    ck_assert_int_eq(deferred_failure_code(deferred_value_get_failure(v)), ECANCELED);
    deferred_value_release(v);
    return deferred_value_int(42);
}

static void hook_destroy(void *arg)
{
    ck_assert_int_eq(ARGI(arg), 7);
    hook_destroyed++;
}

START_TEST(test_E02_timeout_hook)
{
    deferred_t *d = deferred_new();

    hook_destroyed = 0;
    ck_assert_int_eq(deferred_ev_add_timeout_full(d, loop, 0.005, on_timeout_42,
                                                  TAG(7), hook_destroy), 0);
    ev_run(loop, 0);
    ck_assert_int_eq(deferred_value_get_int(deferred_result(d)), 42);
    ck_assert_int_eq(hook_destroyed, 1);
    deferred_unref(d);
}
END_TEST


/* ---- fd readiness ------------------------------------------------------ */

START_TEST(test_fd_readable_writable)
{
    int fds[2];
    deferred_t *w, *r;

    ck_assert_int_eq(pipe(fds), 0);
    w = deferred_ev_writable(loop, fds[1]);
    r = deferred_ev_readable(loop, fds[0]);
    ck_assert_ptr_nonnull(w);
    ck_assert_ptr_nonnull(r);
    ev_run(loop, EVRUN_NOWAIT);
    ck_assert(deferred_has_result(w));
    ck_assert_int_eq(deferred_value_get_int(deferred_result(w)), fds[1]);
    ck_assert(!deferred_has_fired(r));
    ck_assert_int_eq(write(fds[1], "x", 1), 1);
    ev_run(loop, 0);
    ck_assert(deferred_has_result(r));
    ck_assert_int_eq(deferred_value_get_int(deferred_result(r)), fds[0]);
    deferred_unref(w);
    deferred_unref(r);

    /* Cancelled: the watcher stops, the loop has nothing to wait for. */
    r = deferred_ev_readable(loop, fds[0]);
    ck_assert_ptr_nonnull(r);
    /* fds[0] is readable (the byte is still there): cancel before running. */
    deferred_cancel(r);
    ck_assert_int_eq(result_code(r), ECANCELED);
    ev_run(loop, 0);
    deferred_unref(r);
    close(fds[0]);
    close(fds[1]);
}
END_TEST

/* ---- bad input --------------------------------------------------------- */

/* Bad input to a constructor is NULL with errno set (deferred/common.h),
 * never an already-failed deferred.  errno is cleared before the call. */
static void check_null_errno(deferred_t *d, int code)
{
    int e = errno;

    ck_assert_ptr_null(d);
    ck_assert_int_eq(e, code);
}
#define check_failed(call, code, domain) \
    (errno = 0, check_null_errno((call), (code)), (void)(domain))

static deferred_value_t int_job(void *arg)
{
    (void)arg;
    return deferred_value_int(1);
}

START_TEST(test_bad_input)
{
    deferred_t *d = deferred_new();
    deferred_ev_pool_t *pool;
    int fds[2];

    check_failed(deferred_ev_later(loop, -1.0), EINVAL, DEFERRED_DOMAIN_LIBRARY);
    check_failed(deferred_ev_later(loop, NAN), EINVAL, DEFERRED_DOMAIN_LIBRARY);
    check_failed(deferred_ev_later(loop, INFINITY), EINVAL, DEFERRED_DOMAIN_LIBRARY);
    check_failed(deferred_ev_later(NULL, 1.0), EINVAL, DEFERRED_DOMAIN_LIBRARY);

    ck_assert_int_eq(deferred_ev_add_timeout(d, loop, -0.5), -EINVAL);
    ck_assert_int_eq(deferred_ev_add_timeout(d, loop, NAN), -EINVAL);
    ck_assert_int_eq(deferred_ev_add_timeout(NULL, loop, 1.0), -EINVAL);
    ck_assert_int_eq(deferred_ev_add_timeout(d, NULL, 1.0), -EINVAL);
    ck_assert(!deferred_has_fired(d));
    deferred_unref(d);
    d = deferred_multi_new();
    ck_assert_int_eq(deferred_ev_add_timeout(d, loop, 1.0), -EINVAL);
    deferred_unref(d);

    check_failed(deferred_ev_readable(loop, -1), EINVAL, DEFERRED_DOMAIN_LIBRARY);
    check_failed(deferred_ev_writable(NULL, 1), EINVAL, DEFERRED_DOMAIN_LIBRARY);
    ck_assert_int_eq(pipe(fds), 0);
    close(fds[0]);
    close(fds[1]);
    /* fds[0] is closed now. */
    check_failed(deferred_ev_readable(loop, fds[0]), EBADF, DEFERRED_DOMAIN_SYSTEM);

    errno = 0;
    ck_assert_ptr_null(deferred_ev_lines(loop, -1, 0));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_ptr_null(deferred_ev_lines(loop, fds[0], 0));
    ck_assert_int_eq(errno, EBADF);
    ck_assert_ptr_null(deferred_ev_lines(NULL, 0, 0));

    errno = 0;
    ck_assert_ptr_null(deferred_ev_pool_new(loop, 0));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_ptr_null(deferred_ev_pool_new(NULL, 2));
    ck_assert_int_eq(deferred_ev_pool_shutdown(NULL, true), -EINVAL);
    deferred_ev_pool_free(NULL);
    ck_assert_uint_eq(deferred_ev_pool_threads(NULL), 0);

    pool = deferred_ev_pool_new(loop, 2);
    ck_assert_ptr_nonnull(pool);
    ck_assert_uint_eq(deferred_ev_pool_threads(pool), 2);
    check_failed(deferred_ev_pool_run(pool, NULL, NULL, NULL), EINVAL,
                 DEFERRED_DOMAIN_LIBRARY);
    ck_assert_int_eq(deferred_ev_pool_shutdown(pool, true), 0);
    ck_assert_int_eq(deferred_ev_pool_shutdown(pool, true), 0);
    ck_assert_uint_eq(deferred_ev_pool_threads(pool), 0);
    {
        int destroyed = 0;

        check_failed(deferred_ev_pool_run(pool, int_job, &destroyed, tu_count_destroy),
                     ESHUTDOWN, DEFERRED_DOMAIN_LIBRARY);
        ck_assert_int_eq(destroyed, 1);
    }
    deferred_ev_pool_free(pool);

    errno = 0;
    ck_assert_ptr_null(deferred_ev_remote_new(NULL, NULL));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(deferred_ev_remote_callback(NULL, deferred_value_int(1)), -EINVAL);
    deferred_ev_remote_drop(NULL);
    ev_run(loop, 0);
}
END_TEST

/* ---- E04: the thread pool ---------------------------------------------- */

#define E04_JOBS 10000

static unsigned char e04_seen[E04_JOBS];
static int e04_delivered;
static int e04_on_loop_runs; /* jobs that ran on the loop thread (must stay 0) */

static deferred_value_t e04_job(void *arg)
{
    if (pthread_equal(pthread_self(), loop_thread))
        __atomic_add_fetch(&e04_on_loop_runs, 1, __ATOMIC_RELAXED);
    return deferred_value_int(ARGI(arg) * 2);
}

static deferred_value_t e04_done(deferred_value_t v, void *arg)
{
    intptr_t i = ARGI(arg);

    ck_assert(pthread_equal(pthread_self(), loop_thread));
    ck_assert_int_eq(deferred_value_get_int(v), i * 2);
    e04_seen[i]++;
    e04_delivered++;
    return v;
}

START_TEST(test_E04_pool_jobs_delivered_on_loop_thread)
{
    deferred_ev_pool_t *pool = deferred_ev_pool_new(loop, 4);
    intptr_t i;

    ck_assert_ptr_nonnull(pool);
    memset(e04_seen, 0, sizeof e04_seen);
    e04_delivered = 0;
    e04_on_loop_runs = 0;
    for (i = 0; i < E04_JOBS; i++) {
        deferred_t *d = deferred_ev_pool_run(pool, e04_job, TAG(i), NULL);

        ck_assert_ptr_nonnull(d);
        ck_assert_int_eq(deferred_add_callback(d, e04_done, TAG(i)), 0);
        deferred_unref(d);
    }
    ev_run(loop, 0); /* returns once every job was delivered */
    ck_assert_int_eq(e04_delivered, E04_JOBS);
    for (i = 0; i < E04_JOBS; i++)
        ck_assert_int_eq(e04_seen[i], 1);
    ck_assert_int_eq(__atomic_load_n(&e04_on_loop_runs, __ATOMIC_RELAXED), 0);
    deferred_ev_pool_free(pool);
}
END_TEST

/* A gate that holds jobs until the test opens it. */
static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static bool gate_open;
static int gate_entered;
static int job_runs;

static deferred_value_t gated_job(void *arg)
{
    pthread_mutex_lock(&gate_lock);
    gate_entered++;
    pthread_cond_broadcast(&gate_cond);
    while (!gate_open)
        pthread_cond_wait(&gate_cond, &gate_lock);
    job_runs++;
    pthread_mutex_unlock(&gate_lock);
    return deferred_value_int(ARGI(arg));
}

static void gate_reset(void)
{
    pthread_mutex_lock(&gate_lock);
    gate_open = false;
    gate_entered = 0;
    job_runs = 0;
    pthread_mutex_unlock(&gate_lock);
}

static void gate_wait_entered(int n)
{
    pthread_mutex_lock(&gate_lock);
    while (gate_entered < n)
        pthread_cond_wait(&gate_cond, &gate_lock);
    pthread_mutex_unlock(&gate_lock);
}

static void gate_release(void)
{
    pthread_mutex_lock(&gate_lock);
    gate_open = true;
    pthread_cond_broadcast(&gate_cond);
    pthread_mutex_unlock(&gate_lock);
}

static int gate_runs(void)
{
    int n;

    pthread_mutex_lock(&gate_lock);
    n = job_runs;
    pthread_mutex_unlock(&gate_lock);
    return n;
}

static void *open_gate_later(void *arg)
{
    (void)arg;
    usleep(20000);
    gate_release();
    return NULL;
}

START_TEST(test_pool_cancel_before_start_never_runs)
{
    deferred_ev_pool_t *pool = deferred_ev_pool_new(loop, 1);
    deferred_t *first, *second, *third;
    int destroyed = 0;

    gate_reset();
    first = deferred_ev_pool_run(pool, gated_job, TAG(1), NULL);
    gate_wait_entered(1); /* the only worker holds the first job */
    second = deferred_ev_pool_run(pool, gated_job, &destroyed, tu_count_destroy);
    third = deferred_ev_pool_run(pool, gated_job, TAG(3), NULL);
    deferred_cancel(second);
    ck_assert_int_eq(result_code(second), ECANCELED);
    /* Cancelling the running one: it fails at once, its result is dropped. */
    deferred_cancel(first);
    ck_assert_int_eq(result_code(first), ECANCELED);
    gate_release();
    ev_run(loop, 0);
    ck_assert_int_eq(gate_runs(), 2); /* the first and the third */
    ck_assert_int_eq(destroyed, 1);
    ck_assert_int_eq(deferred_value_get_int(deferred_result(third)), 3);
    deferred_value_release(deferred_result_take(first));
    deferred_value_release(deferred_result_take(second));
    deferred_unref(first);
    deferred_unref(second);
    deferred_unref(third);
    deferred_ev_pool_free(pool);
}
END_TEST

START_TEST(test_pool_shutdown_cancels_or_finishes)
{
    deferred_ev_pool_t *pool = deferred_ev_pool_new(loop, 1);
    deferred_t *d[3];
    pthread_t opener;
    int i;

    /* Cancelling: the running job finishes, the queued ones never run. */
    gate_reset();
    for (i = 0; i < 3; i++)
        d[i] = deferred_ev_pool_run(pool, gated_job, TAG(i), NULL);
    gate_wait_entered(1);
    /* The gate opens 20 ms from now, while the shutdown waits for the
     * running job. */
    ck_assert_int_eq(pthread_create(&opener, NULL, open_gate_later, NULL), 0);
    ck_assert_int_eq(deferred_ev_pool_shutdown(pool, true), 0);
    pthread_join(opener, NULL);
    ck_assert_int_eq(gate_runs(), 1);
    ck_assert_int_eq(deferred_value_get_int(deferred_result(d[0])), 0);
    for (i = 1; i < 3; i++) {
        ck_assert_int_eq(result_code(d[i]), ECANCELED);
        deferred_value_release(deferred_result_take(d[i]));
    }
    for (i = 0; i < 3; i++)
        deferred_unref(d[i]);
    deferred_ev_pool_free(pool);

    /* Finishing: every queued job runs before the threads are joined. */
    pool = deferred_ev_pool_new(loop, 2);
    gate_reset();
    gate_release();
    for (i = 0; i < 3; i++)
        d[i] = deferred_ev_pool_run(pool, gated_job, TAG(i + 10), NULL);
    ck_assert_int_eq(deferred_ev_pool_shutdown(pool, false), 0);
    ck_assert_int_eq(gate_runs(), 3);
    for (i = 0; i < 3; i++) {
        ck_assert_int_eq(deferred_value_get_int(deferred_result(d[i])), i + 10);
        deferred_unref(d[i]);
    }
    deferred_ev_pool_free(pool);
    ev_run(loop, 0);
}
END_TEST

/* ---- E05: cross-thread firing ------------------------------------------ */

static deferred_value_t on_loop_thread(deferred_value_t v, void *arg)
{
    (void)arg;
    ck_assert(pthread_equal(pthread_self(), loop_thread));
    tu_record(v, TAG(1));
    return v;
}

struct fire_job {
    deferred_ev_remote_t *r;
    int how;              /* 0 callback, 1 errback, 2 drop */
    deferred_failure_t *f; /* made on the loop thread, handed over */
};

static void *fire_thread(void *arg)
{
    struct fire_job *j = arg;

    if (j->how == 0)
        deferred_ev_remote_callback(j->r, deferred_value_int(7));
    else if (j->how == 1)
        deferred_ev_remote_errback(j->r, j->f);
    else
        deferred_ev_remote_drop(j->r);
    return NULL;
}

START_TEST(test_E05_fired_from_other_thread_runs_on_loop_thread)
{
    static const int codes[3] = {0, 1234, ECANCELED};
    int how;

    for (how = 0; how < 3; how++) {
        deferred_t *d = deferred_new();
        struct fire_job j;
        pthread_t t;

        tu_log_reset();
        ck_assert_int_eq(deferred_add_both(d, on_loop_thread, NULL), 0);
        j.r = deferred_ev_remote_new(loop, d);
        ck_assert_ptr_nonnull(j.r);
        j.how = how;
        j.f = how == 1 ? deferred_failure_new(DEFERRED_DOMAIN_USER, 1234, "remote")
                       : NULL;
        ck_assert_int_eq(pthread_create(&t, NULL, fire_thread, &j), 0);
        /* The pending remote keeps the loop running until it arrives. */
        ev_run(loop, 0);
        ck_assert_int_eq(pthread_join(t, NULL), 0);
        ck_assert_int_eq(tu_log.n, 1);
        if (how == 0) {
            ck_assert_int_eq(tu_log.e[0].kind, TU_VALUE);
            ck_assert_int_eq(tu_log.e[0].value, 7);
        } else {
            ck_assert_int_eq(tu_log.e[0].code, codes[how]);
            deferred_value_release(deferred_result_take(d));
        }
        deferred_unref(d);
    }
}
END_TEST

START_TEST(test_E05_cancelled_before_delivery_released)
{
    deferred_t *d = deferred_new();
    deferred_ev_remote_t *r = deferred_ev_remote_new(loop, d);
    int before = tu_released;

    ck_assert_ptr_nonnull(r);
    deferred_cancel(d);
    ck_assert_int_eq(result_code(d), ECANCELED);
    /* Fired on the loop thread itself: delivered later, then released. */
    ck_assert_int_eq(deferred_ev_remote_callback(r, tu_tracked(5)), 0);
    ck_assert_int_eq(tu_released, before);
    ev_run(loop, 0);
    ck_assert_int_eq(tu_released, before + 1);
    ck_assert_int_eq(result_code(d), ECANCELED);
    deferred_value_release(deferred_result_take(d));
    deferred_unref(d);
}
END_TEST

/* The stress test: N fires from 4 threads, each remote made on the loop
 * thread and handed to a firing thread through a small queue; the loop
 * keeps at most WINDOW remotes in flight per thread and makes the next
 * one as each arrives. */
#define STRESS_THREADS 4
#define STRESS_WINDOW 1024

struct stress_queue {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    deferred_ev_remote_t *items[STRESS_WINDOW + 1];
    intptr_t ids[STRESS_WINDOW + 1];
    unsigned head, tail; /* ring of STRESS_WINDOW + 1 */
    bool stop;
    pthread_t thread;
};

static struct stress_queue stress_q[STRESS_THREADS];
static unsigned char *stress_seen;
static long stress_n, stress_made, stress_delivered, stress_dups, stress_wrong;

static void *stress_fire(void *arg)
{
    struct stress_queue *q = arg;
    deferred_ev_remote_t *batch[STRESS_WINDOW];
    intptr_t ids[STRESS_WINDOW];
    unsigned n, i;

    for (;;) {
        pthread_mutex_lock(&q->lock);
        while (q->head == q->tail && !q->stop)
            pthread_cond_wait(&q->cond, &q->lock);
        if (q->head == q->tail) {
            pthread_mutex_unlock(&q->lock);
            return NULL;
        }
        for (n = 0; q->head != q->tail; n++) {
            batch[n] = q->items[q->head];
            ids[n] = q->ids[q->head];
            q->head = (q->head + 1) % (STRESS_WINDOW + 1);
        }
        pthread_mutex_unlock(&q->lock);
        for (i = 0; i < n; i++)
            deferred_ev_remote_callback(batch[i], deferred_value_int(ids[i]));
    }
}

static deferred_value_t stress_arrived(deferred_value_t v, void *arg);

static long stress_in_flight[STRESS_THREADS];

/* Make n remotes for thread t and hand them over in one go. */
static void stress_make(int t, long n)
{
    struct stress_queue *q = &stress_q[t];
    deferred_ev_remote_t *rs[STRESS_WINDOW];
    intptr_t ids[STRESS_WINDOW];
    bool was_empty;
    long i;

    if (n > stress_n - stress_made)
        n = stress_n - stress_made;
    for (i = 0; i < n; i++) {
        intptr_t id = stress_made++;
        deferred_t *d = deferred_new();

        /* No ck_assert here: in fork mode each one writes a checkpoint. */
        if (!d || deferred_add_callback(d, stress_arrived,
                                        TAG(id * STRESS_THREADS + t)) != 0)
            abort();
        rs[i] = deferred_ev_remote_new(loop, d);
        if (!rs[i])
            abort();
        ids[i] = id;
        deferred_unref(d); /* the remote holds it until it is delivered */
    }
    stress_in_flight[t] += n;
    pthread_mutex_lock(&q->lock);
    was_empty = q->head == q->tail;
    for (i = 0; i < n; i++) {
        q->items[q->tail] = rs[i];
        q->ids[q->tail] = ids[i];
        q->tail = (q->tail + 1) % (STRESS_WINDOW + 1);
    }
    if (was_empty)
        pthread_cond_signal(&q->cond);
    pthread_mutex_unlock(&q->lock);
}

/* Runs on the loop thread; when a thread's window is half empty, refill
 * it with a batch. */
static deferred_value_t stress_arrived(deferred_value_t v, void *arg)
{
    intptr_t id = ARGI(arg) / STRESS_THREADS;
    int t = (int)(ARGI(arg) % STRESS_THREADS);

    if (!pthread_equal(pthread_self(), loop_thread) || deferred_value_get_int(v) != id)
        stress_wrong++;
    if (stress_seen[id]++)
        stress_dups++;
    stress_delivered++;
    if (--stress_in_flight[t] <= STRESS_WINDOW / 2 && stress_made < stress_n)
        stress_make(t, STRESS_WINDOW - stress_in_flight[t]);
    return v;
}

START_TEST(test_stress_cross_thread_fires)
{
    long i;
    int t;
    double start = ev_time();

    stress_n = 1000000 / test_scale();
    stress_made = stress_delivered = stress_dups = stress_wrong = 0;
    stress_seen = calloc((size_t)stress_n, 1);
    ck_assert_ptr_nonnull(stress_seen);
    for (t = 0; t < STRESS_THREADS; t++) {
        struct stress_queue *q = &stress_q[t];

        pthread_mutex_init(&q->lock, NULL);
        pthread_cond_init(&q->cond, NULL);
        q->head = q->tail = 0;
        q->stop = false;
        ck_assert_int_eq(pthread_create(&q->thread, NULL, stress_fire, q), 0);
    }
    /* Each thread gets a window of remotes, refilled in batches. */
    for (t = 0; t < STRESS_THREADS; t++) {
        stress_in_flight[t] = 0;
        stress_make(t, STRESS_WINDOW);
    }
    ev_run(loop, 0);
    for (t = 0; t < STRESS_THREADS; t++) {
        struct stress_queue *q = &stress_q[t];

        pthread_mutex_lock(&q->lock);
        q->stop = true;
        pthread_cond_signal(&q->cond);
        pthread_mutex_unlock(&q->lock);
        pthread_join(q->thread, NULL);
        pthread_cond_destroy(&q->cond);
        pthread_mutex_destroy(&q->lock);
    }
    ck_assert_int_eq(stress_delivered, stress_n);
    ck_assert_int_eq(stress_dups, 0);
    ck_assert_int_eq(stress_wrong, 0);
    for (i = 0; i < stress_n; i++)
        if (stress_seen[i] != 1)
            ck_abort_msg("id %ld delivered %d times", i, stress_seen[i]);
    free(stress_seen);
    fprintf(stderr, "stress: %ld cross-thread fires from %d threads in %.2f s\n",
            stress_n, STRESS_THREADS, ev_time() - start);
}
END_TEST

/* ---- E06: the line producer --------------------------------------------- */

#define E06_LINES 20000
/* 50-byte lines: the 1 MB written is far beyond what the pipe holds. */
#define E06_FORMAT "line %06ld ......................................"

static int e06_wfd;
static long e06_written; /* atomic: lines the writer has written */

static void *e06_writer(void *arg)
{
    char buf[4096];
    long i = 0;

    (void)arg;
    while (i < E06_LINES) {
        size_t len = 0, off = 0;
        long first = i;

        while (i < E06_LINES && len < sizeof buf - 64)
            len += (size_t)snprintf(buf + len, sizeof buf - len, E06_FORMAT "\n", i++);
        while (off < len) {
            ssize_t n = write(e06_wfd, buf + off, len - off);

            if (n < 0)
                break;
            off += (size_t)n;
        }
        (void)first;
        __atomic_store_n(&e06_written, i, __ATOMIC_RELAXED);
    }
    close(e06_wfd);
    return NULL;
}

struct e06 {
    deferred_stage_t *lines;
    deferred_stage_t *consumer;
    long got;
    long pauses;
    size_t live_at_pause;
    long written_at_pause;
    bool bad;
    ev_timer check;
};

static struct e06 e06;

static void e06_check(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
    /* Paused for 30 ms while the writer kept writing: the read watcher is
     * stopped, nothing was allocated, the buffer is within its bound and
     * the writer is held back by the full pipe. */
    if (deferred_ev_lines_is_reading(e06.lines))
        e06.bad = true, fprintf(stderr, "E06: still reading while paused\n");
    /* At the pause the line being handled was still alive. */
    if (tu_live() >= e06.live_at_pause)
        e06.bad = true, fprintf(stderr, "E06: memory grew while paused\n");
    if (deferred_ev_lines_buffered(e06.lines) > deferred_ev_lines_capacity(e06.lines))
        e06.bad = true, fprintf(stderr, "E06: buffer over its bound\n");
    if (__atomic_load_n(&e06_written, __ATOMIC_RELAXED) >= E06_LINES)
        e06.bad = true, fprintf(stderr, "E06: writer not held back\n");
    e06.pauses++;
    deferred_stage_resume(e06.consumer);
}

static deferred_failure_t *e06_handle(deferred_stage_t *self, deferred_stage_t *from,
                                      deferred_value_t tag, deferred_value_t *item)
{
    char want[64];

    (void)from;
    (void)tag;
    snprintf(want, sizeof want, E06_FORMAT, e06.got);
    if (strcmp(item->ptr, want) != 0)
        e06.bad = true;
    if (deferred_ev_lines_buffered(e06.lines) > deferred_ev_lines_capacity(e06.lines))
        e06.bad = true;
    e06.got++;
    if (e06.got % 5000 == 100) {
        /* A slow consumer: pause, look again in 30 ms, resume. */
        deferred_stage_pause(self);
        e06.live_at_pause = tu_live();
        ev_timer_set(&e06.check, 0.03, 0.0);
        ev_timer_start(loop, &e06.check);
    }
    return NULL;
}

static deferred_value_t e06_finish(deferred_stage_t *self, deferred_stage_t *from,
                                   deferred_value_t tag, deferred_value_t outcome)
{
    (void)self;
    (void)from;
    (void)tag;
    if (deferred_value_is_failure(outcome))
        return outcome;
    deferred_value_release(outcome);
    return deferred_value_int(e06.got);
}

static const deferred_stage_ops_t e06_ops = {
    "slow consumer", NULL, NULL, NULL, NULL, e06_handle, e06_finish, NULL, NULL,
};

START_TEST(test_E06_line_producer_pause_bounds_memory)
{
    int fds[2];
    pthread_t writer;
    deferred_process_t *p = deferred_process_new(0);
    deferred_t *done;

    ck_assert_int_eq(pipe(fds), 0);
    memset(&e06, 0, sizeof e06);
    ev_init(&e06.check, e06_check);
    e06_wfd = fds[1];
    e06_written = 0;
    e06.lines = deferred_ev_lines(loop, fds[0], 64);
    ck_assert_ptr_nonnull(e06.lines);
    e06.consumer = deferred_stage_new(&e06_ops, NULL, 0);
    ck_assert_int_eq(deferred_process_add(p, e06.lines), 0);
    ck_assert_int_eq(deferred_process_add(p, e06.consumer), 0);
    ck_assert_int_eq(pthread_create(&writer, NULL, e06_writer, NULL), 0);
    done = deferred_process_run(p);
    /* Nothing is read before run returns: reading starts from the loop. */
    ck_assert_int_eq(e06.got, 0);
    ck_assert(!deferred_has_fired(done));
    ck_assert(deferred_ev_lines_is_reading(e06.lines));
    ev_run(loop, 0);
    pthread_join(writer, NULL);
    ck_assert(!e06.bad);
    ck_assert_int_eq(e06.pauses, E06_LINES / 5000);
    ck_assert_int_eq(deferred_value_get_int(deferred_result(done)), E06_LINES);
    ck_assert_uint_eq(deferred_ev_lines_count(e06.lines), E06_LINES);
    ck_assert(!deferred_ev_lines_is_reading(e06.lines));
    deferred_unref(done);
    deferred_process_unref(p);
    close(fds[0]);
}
END_TEST

/* Run a lines producer over text written at once into a pipe (then
 * closed), collecting; returns the process's deferred. */
static deferred_t *lines_through(const char *text, size_t max_line, int *rfd)
{
    int fds[2];
    deferred_process_t *p = deferred_process_new(0);
    deferred_t *done;

    ck_assert_int_eq(pipe(fds), 0);
    ck_assert_int_eq(write(fds[1], text, strlen(text)), (ssize_t)strlen(text));
    close(fds[1]);
    ck_assert_int_eq(deferred_process_add(p, deferred_ev_lines(loop, fds[0], max_line)), 0);
    ck_assert_int_eq(deferred_process_add(p, deferred_stage_collect()), 0);
    done = deferred_process_run(p);
    ck_assert(!deferred_has_fired(done));
    ev_run(loop, 0);
    deferred_process_unref(p);
    *rfd = fds[0];
    return done;
}

START_TEST(test_lines_last_line_and_too_long)
{
    int fd;
    deferred_t *done = lines_through("a\n\nbc\nlast", 0, &fd);
    deferred_array_t *a = deferred_value_get_array(deferred_result(done));
    deferred_failure_t *f;
    char *story;

    ck_assert_ptr_nonnull(a);
    ck_assert_uint_eq(deferred_array_size(a), 4);
    ck_assert_str_eq(deferred_array_get(a, 0).ptr, "a");
    ck_assert_str_eq(deferred_array_get(a, 1).ptr, "");
    ck_assert_str_eq(deferred_array_get(a, 2).ptr, "bc");
    ck_assert_str_eq(deferred_array_get(a, 3).ptr, "last");
    deferred_unref(done);
    close(fd);

    done = lines_through("short\nthis line is too long\n", 8, &fd);
    f = deferred_value_get_failure(deferred_result(done));
    ck_assert_int_eq(deferred_failure_code(f), EMSGSIZE);
    ck_assert_ptr_nonnull(strstr(deferred_failure_message(f), "line 2 of fd"));
    story = deferred_failure_story_alloc(f);
    ck_assert_ptr_nonnull(story);
    ck_assert_ptr_nonnull(strstr(story, "line 1 of fd"));
    deferred_free(story);
    deferred_value_release(deferred_result_take(done));
    deferred_unref(done);
    close(fd);
}
END_TEST

START_TEST(test_lines_read_error_and_cancel)
{
    int dfd = open(".", O_RDONLY);
    int fds[2];
    deferred_process_t *p;
    deferred_t *done;
    deferred_failure_t *f;
    double start;

    /* Reading a directory fails with EISDIR: a system-domain failure. */
    ck_assert_int_ge(dfd, 0);
    p = deferred_process_new(0);
    ck_assert_int_eq(deferred_process_add(p, deferred_ev_lines(loop, dfd, 0)), 0);
    ck_assert_int_eq(deferred_process_add(p, deferred_stage_collect()), 0);
    done = deferred_process_run(p);
    ev_run(loop, 0);
    f = deferred_value_get_failure(deferred_result(done));
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(deferred_failure_domain(f), DEFERRED_DOMAIN_SYSTEM);
    ck_assert_int_eq(deferred_failure_code(f), EISDIR);
    deferred_value_release(deferred_result_take(done));
    deferred_unref(done);
    deferred_process_unref(p);
    close(dfd);

    /* Cancel: the watcher stops and the loop has nothing to wait for, even
     * though the writer never closes its end. */
    ck_assert_int_eq(pipe(fds), 0);
    p = deferred_process_new(0);
    ck_assert_int_eq(deferred_process_add(p, deferred_ev_lines(loop, fds[0], 0)), 0);
    ck_assert_int_eq(deferred_process_add(p, deferred_stage_collect()), 0);
    done = deferred_process_run(p);
    ck_assert_int_eq(deferred_ev_add_timeout(done, loop, 0.01), 0);
    start = ev_time();
    ev_run(loop, 0);
    ck_assert(ev_time() - start < 5.0);
    ck_assert_int_eq(result_code(done), ETIMEDOUT);
    deferred_value_release(deferred_result_take(done));
    deferred_unref(done);
    deferred_process_unref(p);
    close(fds[0]);
    close(fds[1]);
}
END_TEST

/* The last references to a process and its result go from the result's
 * own callback, which runs inside the line producer's pump (the end of
 * the fd is read there): the producer is destroyed from inside its own
 * pump body, which must leave its memory to the pump's guard and free it
 * on the way out (ASan and valgrind see a use after free otherwise). */
struct dropped {
    deferred_process_t *p;
    deferred_t *done;
    size_t lines;
    bool ran;
};

static deferred_value_t drop_all(deferred_value_t v, void *arg)
{
    struct dropped *x = arg;
    deferred_array_t *a = deferred_value_get_array(v);

    x->ran = true;
    x->lines = a ? deferred_array_size(a) : 0;
    deferred_process_unref(x->p);
    deferred_unref(x->done); /* the runner's reference is the last */
    return v;
}

START_TEST(test_lines_freed_from_inside_its_pump)
{
    int fds[2];
    struct dropped x = {0};

    x.p = deferred_process_new(0);
    ck_assert_ptr_nonnull(x.p);
    ck_assert_int_eq(pipe(fds), 0);
    ck_assert_int_eq(write(fds[1], "one\ntwo\n", 8), 8);
    close(fds[1]);
    ck_assert_int_eq(deferred_process_add(x.p, deferred_ev_lines(loop, fds[0], 0)), 0);
    ck_assert_int_eq(deferred_process_add(x.p, deferred_stage_collect()), 0);
    x.done = deferred_process_run(x.p);
    ck_assert_int_eq(deferred_add_callback(x.done, drop_all, &x), 0);
    ev_run(loop, 0);
    ck_assert(x.ran);
    ck_assert_uint_eq(x.lines, 2);
    close(fds[0]);
}
END_TEST

/* ---- out of memory ------------------------------------------------------ */

/* Each allocation failing in turn (tu_oom_sweep()) in a later, a
 * timeout, a pool running a job and a remote handle; the whole layer's
 * sweeps, under more scenarios, are in t/test-oom-ev.c. */
static void sc_later(struct tu_oom *r)
{
    deferred_t *d;

    TU_NEW(r, d, deferred_ev_later(loop, 0.0), out);
    ev_run(loop, 0);
    r->ok = deferred_has_result(d) && deferred_value_is_none(deferred_result(d));
    deferred_unref(d);
out:
    ck_assert_uint_eq(tu_live(), 0);
}

static void sc_timeout(struct tu_oom *r)
{
    deferred_t *d;
    int rc;

    TU_NEW(r, d, deferred_new(), out);
    rc = deferred_ev_add_timeout(d, loop, 0.0);
    ck_assert(rc == 0 || rc == -ENOMEM);
    if (rc == -ENOMEM)
        r->saw = true;
    ev_run(loop, 0);
    /* refused: d unchanged; else it timed out, or the timeout's failure
     * could not be made (a failure injected after the add) */
    if (rc == 0 && result_code(d) == ENOMEM)
        r->saw = true;
    else
        ck_assert_int_eq(result_code(d), rc == 0 ? ETIMEDOUT : 0);
    r->ok = rc == 0 && result_code(d) == ETIMEDOUT;
    deferred_value_release(deferred_result_take(d));
    deferred_unref(d);
out:
    ck_assert_uint_eq(tu_live(), 0);
}

static void sc_pool(struct tu_oom *r)
{
    deferred_ev_pool_t *pool;
    deferred_t *d;

    TU_NEW(r, pool, deferred_ev_pool_new(loop, 2), out);
    errno = 0;
    d = deferred_ev_pool_run(pool, int_job, NULL, NULL);
    if (!d) {
        ck_assert_int_eq(errno, ENOMEM);
        r->saw = true;
    }
    ev_run(loop, 0);
    if (d)
        ck_assert_int_eq(deferred_value_get_int(deferred_result(d)), 1);
    r->ok = d != NULL;
    deferred_unref(d);
    deferred_ev_pool_free(pool);
out:
    ck_assert_uint_eq(tu_live(), 0);
}

static void sc_remote(struct tu_oom *r)
{
    deferred_t *d;
    deferred_ev_remote_t *rm;

    TU_NEW(r, d, deferred_new(), out);
    TU_NEW(r, rm, deferred_ev_remote_new(loop, d), drop);
    deferred_ev_remote_callback(rm, deferred_value_int(2));
    ev_run(loop, 0);
    ck_assert_int_eq(deferred_value_get_int(deferred_result(d)), 2);
    r->ok = true;
drop:
    deferred_unref(d);
out:
    ck_assert_uint_eq(tu_live(), 0);
}

START_TEST(test_oom_later_timeout_pool_remote)
{
    tu_oom_sweep("later", sc_later, NULL, 0);
    tu_oom_sweep("timeout", sc_timeout, NULL, 0);
    tu_oom_sweep("pool", sc_pool, NULL, 0);
    tu_oom_sweep("remote", sc_remote, NULL, 0);
}
END_TEST

/* The line producer made with each allocation failing in turn, then a
 * whole run of it through a process. */
static void sc_lines_new(struct tu_oom *r)
{
    deferred_stage_t *st;
    int fds[2];

    ck_assert_int_eq(pipe(fds), 0);
    ck_assert_int_eq(write(fds[1], "a\nb\n", 4), 4);
    close(fds[1]);
    TU_NEW(r, st, deferred_ev_lines(loop, fds[0], 0), out);
    deferred_stage_free(st);
    r->ok = true;
out:
    close(fds[0]);
    ck_assert_uint_eq(tu_live(), 0);
}

static void sc_lines_run(struct tu_oom *r)
{
    int fds[2];
    deferred_process_t *p;
    deferred_stage_t *st;
    deferred_t *d;

    ck_assert_int_eq(pipe(fds), 0);
    ck_assert_int_eq(write(fds[1], "a\nb\n", 4), 4);
    close(fds[1]);
    TU_NEW(r, p, deferred_process_new(0), out);
    errno = 0;
    st = deferred_ev_lines(loop, fds[0], 0);
    if (!st) {
        ck_assert_int_eq(errno, ENOMEM);
        r->saw = true;
    }
    /* a NULL stage is refused (-EINVAL): the run then fails */
    if (deferred_process_add(p, st) == -ENOMEM)
        r->saw = true;
    st = deferred_stage_collect();
    if (!st)
        r->saw = true;
    if (deferred_process_add(p, st) == -ENOMEM)
        r->saw = true;
    errno = 0;
    d = deferred_process_run(p);
    if (!d)
        r->saw = true;
    ev_run(loop, 0);
    if (d) {
        deferred_value_t v;
        deferred_array_t *a;

        ck_assert(deferred_has_result(d));
        v = tu_oom_note(r, deferred_result_take(d));
        a = deferred_value_get_array(v);
        r->ok = a && deferred_array_size(a) == 2;
        deferred_value_release(v);
    }
    deferred_unref(d);
    deferred_process_unref(p);
out:
    close(fds[0]);
    ck_assert_uint_eq(tu_live(), 0);
}

START_TEST(test_oom_lines)
{
    tu_oom_sweep("lines_new", sc_lines_new, NULL, 0);
    tu_oom_sweep("lines_run", sc_lines_run, NULL, 0);
}
END_TEST

/* ---- contracts at the edges (issue 12) ------------------------------------ */

/* Item 3 waits on a timer whose deferred only the map holds. */
static deferred_value_t map_later(deferred_value_t v, void *arg)
{
    (void)arg;
    if (deferred_value_get_int(v) == 3)
        return deferred_value_deferred(deferred_ev_later(loop, 0.05));
    return v;
}

START_TEST(test_map_holds_timer_deferred)
{
    deferred_value_t items[5];
    deferred_process_t *p = deferred_process_new(0);
    deferred_array_t *a;
    deferred_t *d;
    int i;

    for (i = 0; i < 5; i++)
        items[i] = deferred_value_int(i + 1);
    ck_assert_int_eq(deferred_process_add(p, deferred_stage_array(items, 5)), 0);
    ck_assert_int_eq(deferred_process_add(p, deferred_stage_map("later", map_later, NULL)), 0);
    ck_assert_int_eq(deferred_process_add(p, deferred_stage_collect()), 0);
    d = deferred_process_run(p);
    deferred_process_unref(p);
    ck_assert(!deferred_has_fired(d));
    /* The timer keeps the loop running until the process is done. */
    ev_run(loop, 0);
    ck_assert(deferred_has_fired(d));
    a = deferred_value_get_array(deferred_result(d));
    ck_assert_ptr_nonnull(a);
    ck_assert_uint_eq(deferred_array_size(a), 5);
    ck_assert(deferred_value_is_none(deferred_array_get(a, 2))); /* the timer's value */
    ck_assert_int_eq(deferred_value_get_int(deferred_array_get(a, 3)), 4);
    deferred_unref(d);
}
END_TEST

START_TEST(test_remote_refuses_deferreds_and_multi)
{
    deferred_t *d = deferred_new(), *m = deferred_multi_new();
    deferred_ev_remote_t *r;

    /* A deferred value: a clear error, and the target still fires. */
    r = deferred_ev_remote_new(loop, d);
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(deferred_ev_remote_callback(r, deferred_value_deferred(deferred_new())),
                     -EINVAL);
    ev_run(loop, 0);
    ck_assert(deferred_has_fired(d));
    ck_assert(deferred_failure_is(deferred_value_get_failure(deferred_result(d)),
                                  DEFERRED_DOMAIN_LIBRARY, EINVAL));
    deferred_unref(d);

    /* A multi-fire deferred has no single firing. */
    errno = 0;
    ck_assert_ptr_null(deferred_ev_remote_new(loop, m));
    ck_assert_int_eq(errno, EINVAL);
    deferred_unref(m);
}
END_TEST

/* ---- DU09, DU10: the loop in a dump, and the dump on a signal ----------- */

struct sigdump {
    char *text;
    size_t len;
    int lines;
    bool on_loop_thread;
    deferred_t *wait; /* cancelled once the dump came */
};

/* Appends with libc (the dump's own allocations are the library's). */
static int sig_sink(const char *text, size_t len, void *arg)
{
    struct sigdump *c = arg;
    char *p = realloc(c->text, c->len + len + 1);

    ck_assert_ptr_nonnull(p);
    memcpy(p + c->len, text, len);
    c->len += len;
    p[c->len] = '\0';
    c->text = p;
    c->lines++;
    c->on_loop_thread = pthread_equal(pthread_self(), loop_thread);
    return 0;
}

static void *send_sigusr1(void *arg)
{
    (void)arg;
    kill(getpid(), SIGUSR1);
    return NULL;
}

/* Once the dump came: let the loop end. */
static void sig_poll(struct ev_loop *l, ev_timer *w, int revents)
{
    struct sigdump *c = w->data;

    (void)revents;
    if (c->lines == 0)
        return;
    ev_timer_stop(l, w);
    deferred_cancel(c->wait);
}

START_TEST(test_DU09_sigusr1_dump_on_loop_thread)
{
    struct sigdump c = { NULL, 0, 0, false, NULL };
    deferred_t *timed;
    ev_timer poll;
    pthread_t th;
    char want[600];
    int timed_line;

    deferred_set_debug(true);
    c.wait = deferred_ev_later(loop, 60.0);
    ck_assert_ptr_nonnull(c.wait);
    timed_line = __LINE__ + 1;
    timed = deferred_new();
    ck_assert_int_eq(deferred_ev_add_timeout(timed, loop, 30.0), 0);
    ck_assert_int_eq(deferred_ev_dump_on_signal(loop, -1, DEFERRED_DUMP_TEXT, NULL, NULL),
                     -EINVAL);
    ck_assert_int_eq(deferred_ev_dump_on_signal(NULL, 0, DEFERRED_DUMP_TEXT, NULL, NULL),
                     -EINVAL);
    ck_assert_int_eq(deferred_ev_dump_on_signal(loop, 0, DEFERRED_DUMP_TEXT, sig_sink, &c), 0);
    ev_timer_init(&poll, sig_poll, 0.01, 0.01);
    poll.data = &c;
    ev_timer_start(loop, &poll);
    ck_assert_int_eq(pthread_create(&th, NULL, send_sigusr1, NULL), 0);
    ev_run(loop, 0);
    pthread_join(th, NULL);
    ck_assert(c.on_loop_thread);
    ck_assert_ptr_nonnull(c.text);
    ck_assert_msg(strstr(c.text, "\nloop ") != NULL, "%s", c.text);
    snprintf(want, sizeof(want), "dump_signal=%d", SIGUSR1);
    ck_assert_ptr_nonnull(strstr(c.text, want));
    ck_assert_ptr_nonnull(strstr(c.text, "\n  timer later remaining_s="));
    /* deferred_ev_later() makes its deferred in the library: that site. */
    ck_assert_msg(strstr(c.text, "\n    fires: deferred ") != NULL, "%s", c.text);
    snprintf(want, sizeof(want), "\n    on: deferred %s:%d state=unfired", __FILE__, timed_line);
    ck_assert_msg(strstr(c.text, want) != NULL, "%s", c.text);
    ck_assert_ptr_nonnull(strstr(c.text, "\n  timeout after_s=30 remaining_s="));
    free(c.text);
    deferred_ev_dump_on_signal_stop(loop);
    deferred_ev_dump_on_signal_stop(loop);
    deferred_unref(c.wait);
    deferred_cancel(timed);
    deferred_unref(timed);
}
END_TEST

static int job_pipe[2];

static deferred_value_t blocking_job(void *arg)
{
    char ch;

    (void)arg;
    ck_assert_int_eq(read(job_pipe[0], &ch, 1), 1);
    return deferred_value_int(1);
}

START_TEST(test_DU10_pool_jobs_and_remote_in_dump)
{
    deferred_ev_pool_t *pool;
    deferred_t *a, *b, *r;
    deferred_ev_remote_t *h;
    char *s;
    const char *q;
    int n = 0;

    deferred_set_debug(true);
    ck_assert_int_eq(pipe(job_pipe), 0);
    pool = deferred_ev_pool_new(loop, 1);
    ck_assert_ptr_nonnull(pool);
    a = deferred_ev_pool_run(pool, blocking_job, NULL, NULL);
    b = deferred_ev_pool_run(pool, blocking_job, NULL, NULL);
    r = deferred_new();
    h = deferred_ev_remote_new(loop, r);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_nonnull(h);
    s = deferred_dump_string(DEFERRED_DUMP_JSON);
    ck_assert_ptr_nonnull(s);
    for (q = s; (q = strstr(q, "\"type\":\"pool_job\"")); q++)
        n++;
    ck_assert_msg(n == 2, "%s", s);
    /* The second job cannot have started: the only worker blocks. */
    ck_assert_ptr_nonnull(strstr(s, "\"type\":\"pool_job\",\"line\":"));
    ck_assert_ptr_nonnull(strstr(s, "\"name\":\"queued\""));
    ck_assert_ptr_nonnull(strstr(s, "\"type\":\"remote\""));
    ck_assert_ptr_nonnull(strstr(s, "\"role\":\"fires\""));
    deferred_free(s);
    ck_assert_int_eq(write(job_pipe[1], "xx", 2), 2);
    ck_assert_int_eq(deferred_ev_remote_callback(h, deferred_value_int(3)), 0);
    ev_run(loop, 0);
    ck_assert(deferred_has_fired(a));
    ck_assert(deferred_has_fired(b));
    ck_assert(deferred_has_fired(r));
    s = deferred_dump_string(DEFERRED_DUMP_TEXT);
    ck_assert_ptr_null(strstr(s, "pool_job"));
    ck_assert_ptr_null(strstr(s, "remote"));
    deferred_free(s);
    deferred_ev_pool_free(pool);
    deferred_unref(a);
    deferred_unref(b);
    deferred_unref(r);
    close(job_pipe[0]);
    close(job_pipe[1]);
}
END_TEST

static Suite *ev_suite(void)
{
    Suite *s = suite_create("ev");
    TCase *tc = tcase_create("ev");
    TCase *stress = tcase_create("stress");
    TCase *tcc = tcase_create("contracts");

    tcase_add_checked_fixture(tcc, setup, teardown);
    tcase_add_test(tcc, test_map_holds_timer_deferred);
    tcase_add_test(tcc, test_remote_refuses_deferreds_and_multi);
    suite_add_tcase(s, tcc);

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_E01_later_fires_after_delay);
    tcase_add_test(tc, test_E01_later_cancelled_never_fires);
    tcase_add_test(tc, test_E01_later_freed_stops_timer);
    tcase_add_test(tc, test_E02_timeout_expires);
    tcase_add_test(tc, test_E02_result_first_stops_timer);
    tcase_add_test(tc, test_E02_timeout_on_fired_deferred);
    tcase_add_test(tc, test_E02_other_cancel_stays_ecanceled);
    tcase_add_test(tc, test_E02_freed_deferred_stops_timer);
    tcase_add_test(tc, test_E02_timeout_hook);
    tcase_add_test(tc, test_fd_readable_writable);
    tcase_add_test(tc, test_bad_input);
    tcase_add_test(tc, test_E04_pool_jobs_delivered_on_loop_thread);
    tcase_add_test(tc, test_pool_cancel_before_start_never_runs);
    tcase_add_test(tc, test_pool_shutdown_cancels_or_finishes);
    tcase_add_test(tc, test_E05_fired_from_other_thread_runs_on_loop_thread);
    tcase_add_test(tc, test_E05_cancelled_before_delivery_released);
    tcase_add_test(tc, test_E06_line_producer_pause_bounds_memory);
    tcase_add_test(tc, test_lines_last_line_and_too_long);
    tcase_add_test(tc, test_lines_read_error_and_cancel);
    tcase_add_test(tc, test_lines_freed_from_inside_its_pump);
    tcase_add_test(tc, test_oom_later_timeout_pool_remote);
    tcase_add_test(tc, test_oom_lines);
    tcase_add_test(tc, test_DU09_sigusr1_dump_on_loop_thread);
    tcase_add_test(tc, test_DU10_pool_jobs_and_remote_in_dump);
    suite_add_tcase(s, tc);

    tcase_add_checked_fixture(stress, setup, teardown);
    tcase_set_timeout(stress, 600);
    tcase_add_test(stress, test_stress_cross_thread_fires);
    suite_add_tcase(s, stress);
    return s;
}

int main(void)
{
    return tu_run_suite(ev_suite());
}
