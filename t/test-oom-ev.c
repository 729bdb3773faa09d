/*
 * test-oom-ev.c: the failing-allocator test of the libev binding, the
 * twin of t/test-oom.c (the core) for that layer.
 *
 * Each scenario runs under a real libev loop (made by the fixture,
 * destroyed after the test): timers (later, timeouts that expire and
 * timeouts that a result beats, E01 to E03 of docs/scenarios.md), remote
 * handles fired from another thread and dropped (E05), the thread pool
 * (E04) and the line producer through a process (E06).  Each checks every
 * return: a constructor's NULL (errno ENOMEM), an action's -ENOMEM, an
 * ENOMEM failure as a result.  tu_oom_sweep() (t/testutil.c) fails the
 * 1st, 2nd, ... Nth allocation until a run injects nothing and asserts for
 * each N: no crash, no hang (the loop returns: nothing the library started
 * is left waiting), nothing alive afterwards, and the run ended cleanly
 * (ENOMEM, or the normal result).
 *
 * Delays are 0 (the next loop iteration) or long timeouts that a result
 * beats, so that nothing depends on the clock.  testutil's allocator is
 * not thread-safe: as in t/test-ev.c, the library's allocations stay on
 * the loop thread (a remote handle is allocated whole when made, a pool
 * job when queued; firing and running jobs never allocate, and the jobs
 * here make plain integers).
 */
#include "testutil.h"

#include <ev.h>
#include <deferred/ev.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static struct ev_loop *loop;

static void setup(void)
{
    tu_setup();
    loop = ev_loop_new(EVFLAG_AUTO);
    ck_assert_ptr_nonnull(loop);
}

static void teardown(void)
{
    ev_loop_destroy(loop);
    loop = NULL;
    tu_teardown();
}

/* ---- E01 to E03: later and timeouts ---- */

static deferred_value_t fire_arg(deferred_value_t v, void *arg)
{
    deferred_callback((deferred_t *)arg, deferred_value_int(5));
    return v;
}

/* A later(0) with a callback; a deferred with a 0 timeout (ETIMEDOUT);
 * a deferred with a 1,000 s timeout that a later(0)'s callback fires
 * first (the timer stopped, so the loop returns at once). */
static void sc_timers(struct tu_oom *r)
{
    deferred_t *a = NULL, *t = NULL, *b = NULL, *w = NULL;
    intptr_t av, tv, bv;
    int rc;

    TU_NEW(r, a, deferred_ev_later(loop, 0.0), out);
    TU_ACT(r, deferred_add_callback(a, tu_return_int, TAG(7)));
    TU_NEW(r, t, deferred_new(), out);
    TU_ACT(r, deferred_ev_add_timeout(t, loop, 0.0));
    TU_NEW(r, b, deferred_new(), out);
    TU_ACT(r, deferred_ev_add_timeout(b, loop, 1000.0));
    TU_NEW(r, w, deferred_ev_later(loop, 0.0), out);
    /* without this callback b's timer would keep the loop 1,000 s */
    rc = deferred_add_callback(w, fire_arg, b);
    if (rc == -ENOMEM) {
        r->saw = true;
        goto out;
    }
    ck_assert_int_eq(rc, 0);
    ev_run(loop, 0);
    ck_assert(deferred_has_result(a));
    ck_assert(deferred_has_result(w));
    av = tu_oom_take(r, a);
    tv = deferred_has_result(t) ? tu_oom_take(r, t) : 0;
    bv = deferred_has_result(b) ? tu_oom_take(r, b) : 0;
    r->ok = av == 7 && tv == -1000 - ETIMEDOUT && bv == 5;
out:
    /* freeing a deferred stops its timer: then the loop has nothing left */
    deferred_unref(a);
    deferred_unref(t);
    deferred_unref(b);
    deferred_unref(w);
    ev_run(loop, 0);
}

/* ---- E05: remote handles ---- */

struct remote_call {
    deferred_ev_remote_t *fire, *drop;
};

static void *remote_thread(void *p)
{
    struct remote_call *c = p;

    if (c->fire)
        ck_assert_int_eq(deferred_ev_remote_callback(c->fire, deferred_value_int(2)), 0);
    deferred_ev_remote_drop(c->drop);
    return NULL;
}

/* Two remotes handed to another thread: one fired with 2, the other
 * dropped (its deferred cancelled on the loop thread). */
static void sc_remote(struct tu_oom *r)
{
    deferred_t *d = NULL, *e = NULL;
    struct remote_call c = {NULL, NULL};
    pthread_t th;
    intptr_t dv = 0, ev = 0;

    TU_NEW(r, d, deferred_new(), out);
    TU_NEW(r, e, deferred_new(), out);
    TU_ACT(r, deferred_add_errback(e, tu_record, TAG(1)));
    TU_NEW(r, c.fire, deferred_ev_remote_new(loop, d), out);
    TU_NEW(r, c.drop, deferred_ev_remote_new(loop, e), out);
    ck_assert_int_eq(pthread_create(&th, NULL, remote_thread, &c), 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    c.fire = c.drop = NULL;
    ev_run(loop, 0);
    ck_assert(deferred_has_result(d));
    ck_assert(deferred_has_result(e));
    dv = tu_oom_take(r, d);
    ev = tu_oom_take(r, e);
    r->ok = dv == 2 && ev == -1000 - ECANCELED && tu_log.n == 1 &&
            tu_log.e[0].code == ECANCELED;
out:
    /* a remote made before a later step failed: fire it here */
    if (c.fire)
        deferred_ev_remote_callback(c.fire, deferred_value_int(2));
    deferred_ev_remote_drop(c.drop);
    ev_run(loop, 0);
    deferred_unref(d);
    deferred_unref(e);
}

/* ---- E04: the pool ---- */

static deferred_value_t square_job(void *arg)
{
    intptr_t x = ARGI(arg);

    return deferred_value_int(x * x);
}

/* A pool of 2 threads running 4 jobs, then shut down. */
static void sc_pool(struct tu_oom *r)
{
    deferred_ev_pool_t *pool;
    deferred_t *d[4] = {NULL, NULL, NULL, NULL};
    int made = 0, i;
    intptr_t sum = 0;

    TU_NEW(r, pool, deferred_ev_pool_new(loop, 2), out);
    for (i = 0; i < 4; i++) {
        TU_NEW(r, d[i], deferred_ev_pool_run(pool, square_job, TAG(i + 1), NULL),
               jobs);
        made++;
    }
jobs:
    ev_run(loop, 0);
    for (i = 0; i < made; i++) {
        ck_assert(deferred_has_result(d[i]));
        sum += tu_oom_take(r, d[i]);
    }
    ck_assert_int_eq(deferred_ev_pool_shutdown(pool, true), 0);
    ev_run(loop, 0);
    r->ok = made == 4 && sum == 1 + 4 + 9 + 16;
out:
    deferred_ev_pool_free(pool);
    for (i = 0; i < 4; i++)
        deferred_unref(d[i]);
}

/* A pool of 1 thread running 3 jobs, freed: the destroy function of
 * every job (run, or refused for want of memory) ran exactly once. */
static int pool_destroyed;

static void count_pool_destroy(void *arg)
{
    (void)arg;
    pool_destroyed++;
}

static void sc_pool_destroy(struct tu_oom *r)
{
    deferred_ev_pool_t *pool;
    deferred_t *d[3] = {NULL, NULL, NULL};
    int tried = 0, i;

    pool_destroyed = 0;
    TU_NEW(r, pool, deferred_ev_pool_new(loop, 1), out);
    for (i = 0; i < 3; i++) {
        tried++;
        errno = 0;
        d[i] = deferred_ev_pool_run(pool, square_job, TAG(i), count_pool_destroy);
        if (!d[i]) {
            ck_assert_int_eq(errno, ENOMEM);
            r->saw = true;
        }
    }
    ev_run(loop, 0);
    for (i = 0; i < 3; i++)
        if (d[i])
            ck_assert(deferred_has_result(d[i]));
    deferred_ev_pool_free(pool);
    ck_assert_int_eq(pool_destroyed, tried);
    r->ok = d[0] && d[1] && d[2] && tu_oom_take(r, d[2]) == 4;
out:
    for (i = 0; i < 3; i++)
        deferred_unref(d[i]);
}

/* ---- E06: the line producer ---- */

/* Three lines from a pipe through a process: lines -> collect. */
static void sc_lines(struct tu_oom *r)
{
    deferred_process_t *p = NULL;
    deferred_stage_t *st;
    deferred_t *d = NULL;
    deferred_value_t v;
    deferred_array_t *a;
    int fds[2], rc;

    ck_assert_int_eq(pipe(fds), 0);
    ck_assert_int_eq(write(fds[1], "one\ntwo\nthree\n", 14), 14);
    close(fds[1]);
    TU_NEW(r, p, deferred_process_new(0), out);
    TU_NEW(r, st, deferred_ev_lines(loop, fds[0], 0), out);
    rc = deferred_process_add(p, st);
    if (rc == -ENOMEM) {
        r->saw = true;
        goto out;
    }
    ck_assert_int_eq(rc, 0);
    TU_NEW(r, st, deferred_stage_collect(), out);
    rc = deferred_process_add(p, st);
    if (rc == -ENOMEM) {
        r->saw = true;
        goto out;
    }
    ck_assert_int_eq(rc, 0);
    TU_NEW(r, d, deferred_process_run(p), out);
    ev_run(loop, 0);
    ck_assert(deferred_has_result(d));
    v = tu_oom_note(r, deferred_result_take(d));
    a = deferred_value_get_array(v);
    r->ok = a && deferred_array_size(a) == 3 &&
            strcmp(deferred_array_get(a, 0).ptr, "one") == 0 &&
            strcmp(deferred_array_get(a, 2).ptr, "three") == 0;
    deferred_value_release(v);
out:
    ev_run(loop, 0);
    deferred_unref(d);
    deferred_process_unref(p);
    close(fds[0]);
}

#define SCENARIO(name, flags)                                                \
    START_TEST(test_oom_##name)                                              \
    {                                                                        \
        tu_oom_sweep(#name, sc_##name, NULL, (flags));                       \
    }                                                                        \
    END_TEST

SCENARIO(timers, TU_OOM_STICKY)
SCENARIO(remote, TU_OOM_STICKY)
SCENARIO(pool, 0)
SCENARIO(pool_destroy, 0)
SCENARIO(lines, TU_OOM_STICKY)

static Suite *oom_ev_suite(void)
{
    Suite *s = suite_create("oom-ev");
    TCase *tc = tcase_create("oom-ev");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_oom_timers);
    tcase_add_test(tc, test_oom_remote);
    tcase_add_test(tc, test_oom_pool);
    tcase_add_test(tc, test_oom_pool_destroy);
    tcase_add_test(tc, test_oom_lines);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(oom_ev_suite());
}
