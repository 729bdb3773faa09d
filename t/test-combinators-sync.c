/*
 * test-combinators-sync.c: lock, semaphore and queue, and bad input to
 * every combinator.
 *
 * The scenario C08 (defined in docs/scenarios.md), then the cases of
 * Twisted's test_defer.py for DeferredLock, DeferredSemaphore and
 * DeferredQueue, in spirit, bad input, and the out-of-memory sweeps of a
 * semaphore and a queue.
 *
 * The allocator, the report hook and the sweep are testutil's; every
 * test's teardown (combinators-util.c) asserts that no block is alive and
 * that nothing was reported unless the test said it expected it.
 */
#include "combinators-util.h"

/* ---- C: acceptance ----------------------------------------------------- */

START_TEST(test_C08_semaphore_queue)
{
    deferred_semaphore_t *s = deferred_semaphore_new(2);
    deferred_queue_t *q;
    deferred_t *a[3], *g[3];
    int i;

    for (i = 0; i < 3; i++)
        a[i] = deferred_semaphore_acquire(s);
    ck_assert(deferred_has_fired(a[0]));
    ck_assert(deferred_has_fired(a[1]));
    ck_assert(!deferred_has_fired(a[2]));
    ck_assert_uint_eq(deferred_semaphore_tokens(s), 0);
    ck_assert_uint_eq(deferred_semaphore_waiting(s), 1);
    ck_assert_ptr_eq(deferred_result(a[0]).ptr, s);
    deferred_add_errback(a[2], record_drop, NULL);
    deferred_cancel(a[2]);
    ck_assert_uint_eq(deferred_semaphore_waiting(s), 0);
    ck_assert(seen.failure[0]);
    ck_assert_int_eq(seen.code[0], ECANCELED);
    ck_assert_int_eq(deferred_semaphore_release(s), 0);
    ck_assert_int_eq(deferred_semaphore_release(s), 0);
    ck_assert_uint_eq(deferred_semaphore_tokens(s), 2);
    ck_assert_int_eq(deferred_semaphore_release(s), -EPERM);
    for (i = 0; i < 3; i++)
        deferred_unref(a[i]);
    deferred_semaphore_unref(s);

    /* A queue delivers FIFO; overflow and underflow are errors. */
    q = deferred_queue_new(2, 1);
    ck_assert_int_eq(deferred_queue_put(q, tu_tracked(1)), 0);
    ck_assert_int_eq(deferred_queue_put(q, tu_tracked(2)), 0);
    ck_assert_int_eq(deferred_queue_put(q, tu_tracked(3)), -ENOSPC);
    ck_assert_int_eq(tu_released, 1);
    for (i = 0; i < 2; i++) {
        ck_assert_int_eq(deferred_queue_get(q, &g[i]), 0);
        ck_assert_int_eq(num(deferred_result(g[i])), i + 1);
    }
    ck_assert_int_eq(deferred_queue_get(q, &g[2]), 0);
    ck_assert(!deferred_has_fired(g[2]));
    ck_assert_int_eq(deferred_queue_get(q, &a[0]), -EBUSY);
    ck_assert_ptr_null(a[0]);
    ck_assert_int_eq(deferred_queue_put(q, tu_tracked(4)), 0);
    ck_assert_int_eq(num(deferred_result(g[2])), 4);
    for (i = 0; i < 3; i++)
        deferred_unref(g[i]);
    ck_assert_int_eq(tu_released, 4);
    deferred_queue_unref(q);
}
END_TEST

/* ---- bad input --------------------------------------------------------- */

START_TEST(test_bad_input)
{
    deferred_t *in[2] = {NULL, NULL}, *d;
    deferred_semaphore_t *s;
    deferred_lock_t *l;
    deferred_queue_t *q;
    int destroyed = 0;

    errno = 0;
    ck_assert_ptr_null(deferred_gather(NULL, 2, 0));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_ptr_null(deferred_list(in, 2, 0));
    ck_assert_int_eq(errno, EINVAL);
    in[0] = deferred_new();
    errno = 0;
    ck_assert_ptr_null(deferred_race(in, 2));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_ptr_null(deferred_gather(in, 1, DEFERRED_FIRE_ON_SUCCESS));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_ptr_null(deferred_list(in, 1, 0x100));
    ck_assert_int_eq(errno, EINVAL);
    deferred_callback(in[0], tu_tracked(1)); /* untouched by the calls */
    ck_assert_int_eq(num(deferred_result(in[0])), 1);
    deferred_unref(in[0]);

    errno = 0;
    ck_assert_ptr_null(deferred_semaphore_new(0));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_ptr_null(deferred_semaphore_acquire(NULL));
    ck_assert_int_eq(deferred_semaphore_release(NULL), -EINVAL);
    ck_assert_ptr_null(deferred_semaphore_run(NULL, record, &destroyed, tu_count_destroy));
    ck_assert_int_eq(destroyed, 1);
    s = deferred_semaphore_new(1);
    ck_assert_ptr_null(deferred_semaphore_run(s, NULL, &destroyed, tu_count_destroy));
    ck_assert_int_eq(destroyed, 2);
    ck_assert_int_eq(deferred_semaphore_release(s), -EPERM);
    deferred_semaphore_unref(s);
    deferred_semaphore_unref(NULL);

    l = deferred_lock_new();
    ck_assert(!deferred_lock_is_locked(l));
    ck_assert_int_eq(deferred_lock_release(l), -EPERM);
    ck_assert_int_eq(deferred_lock_release(NULL), -EINVAL);
    deferred_lock_unref(l);

    tu_released = 0;
    q = deferred_queue_new(DEFERRED_QUEUE_UNLIMITED, DEFERRED_QUEUE_UNLIMITED);
    d = deferred_new();
    ck_assert_int_eq(deferred_queue_put(q, deferred_value_deferred(d)), -EINVAL);
    ck_assert_int_eq(deferred_queue_put(NULL, tu_tracked(1)), -EINVAL);
    ck_assert_int_eq(tu_released, 1);
    ck_assert_int_eq(deferred_queue_get(q, NULL), -EINVAL);
    ck_assert_int_eq(deferred_queue_get(NULL, &d), -EINVAL);
    ck_assert_ptr_null(d);
    deferred_queue_unref(q);
    deferred_queue_unref(NULL);
}
END_TEST

/* ---- lock and semaphore, Twisted's cases ------------------------------- */

/* testLock: FIFO hand-over, locked while held. */
START_TEST(test_lock_fifo)
{
    deferred_lock_t *l = deferred_lock_new();
    deferred_t *a[3];
    int i;

    for (i = 0; i < 3; i++) {
        a[i] = deferred_lock_acquire(l);
        deferred_add_callback(a[i], record, NULL);
    }
    ck_assert(deferred_lock_is_locked(l));
    ck_assert_uint_eq(deferred_lock_waiting(l), 2);
    ck_assert_int_eq(seen.n, 1);
    ck_assert_ptr_eq(deferred_result(a[0]).ptr, l);
    ck_assert_int_eq(deferred_lock_release(l), 0);
    ck_assert(deferred_has_fired(a[1]));
    ck_assert(!deferred_has_fired(a[2]));
    ck_assert(deferred_lock_is_locked(l));
    ck_assert_int_eq(deferred_lock_release(l), 0);
    ck_assert(deferred_has_fired(a[2]));
    ck_assert_int_eq(deferred_lock_release(l), 0);
    ck_assert(!deferred_lock_is_locked(l));
    ck_assert_int_eq(deferred_lock_release(l), -EPERM);
    for (i = 0; i < 3; i++)
        deferred_unref(a[i]);
    deferred_lock_unref(l);
}
END_TEST

/* A deferred the run's fn returns, so the test can fire it. */
static deferred_t *pending_work;

static deferred_value_t work_returning_deferred(deferred_value_t v, void *arg)
{
    (void)arg;
    deferred_value_release(v);
    pending_work = deferred_new();
    return deferred_value_deferred(deferred_ref(pending_work));
}

static deferred_value_t work_failing(deferred_value_t v, void *arg)
{
    (void)arg;
    deferred_value_release(v);
    return deferred_value_failure(user_failure(9));
}

static deferred_value_t work_value(deferred_value_t v, void *arg)
{
    deferred_value_release(v);
    return deferred_value_int((intptr_t)arg);
}

/* testLockRun and testSemaphoreRun: released on success and on failure,
 * held while fn's deferred is pending. */
START_TEST(test_lock_run)
{
    deferred_lock_t *l = deferred_lock_new();
    deferred_t *r1, *r2, *r3;
    int destroyed = 0;

    r1 = deferred_lock_run(l, work_returning_deferred, &destroyed, tu_count_destroy);
    ck_assert_ptr_nonnull(pending_work);
    ck_assert(deferred_lock_is_locked(l));
    r2 = deferred_lock_run(l, work_failing, &destroyed, tu_count_destroy);
    ck_assert(!deferred_has_fired(r2));
    r3 = deferred_lock_run(l, work_value, (void *)(intptr_t)5, NULL);
    deferred_callback(pending_work, tu_tracked(1));
    /* r1 got the value; the lock went to r2 (fails), then r3. */
    ck_assert_int_eq(num(deferred_result(r1)), 1);
    ck_assert_int_eq(deferred_failure_code(deferred_value_get_failure(deferred_result(r2))), 9);
    ck_assert_int_eq(num(deferred_result(r3)), 5);
    ck_assert(!deferred_lock_is_locked(l));
    ck_assert_int_eq(destroyed, 2);
    deferred_add_errback(r2, record_drop, NULL);
    deferred_unref(r1);
    deferred_unref(r2);
    deferred_unref(r3);
    deferred_unref(pending_work);
    pending_work = NULL;
    deferred_lock_unref(l);
}
END_TEST

/* Cancelling a run that waits for a token: removed, fn never runs,
 * destroy called once (testCancelSemaphoreBeforeAcquired); cancelling a
 * run that waits on fn's deferred cancels it and releases. */
START_TEST(test_semaphore_run_cancel)
{
    deferred_semaphore_t *s = deferred_semaphore_new(1);
    deferred_t *hold, *r;
    int destroyed = 0;

    hold = deferred_semaphore_acquire(s);
    r = deferred_semaphore_run(s, work_value, NULL, NULL);
    ck_assert_uint_eq(deferred_semaphore_waiting(s), 1);
    deferred_add_errback(r, record_drop, NULL);
    deferred_cancel(r);
    ck_assert_uint_eq(deferred_semaphore_waiting(s), 0);
    ck_assert_int_eq(seen.code[0], ECANCELED);
    ck_assert_int_eq(deferred_semaphore_release(s), 0);
    ck_assert_uint_eq(deferred_semaphore_tokens(s), 1);
    deferred_unref(r);
    deferred_unref(hold);

    r = deferred_semaphore_run(s, work_returning_deferred, &destroyed, tu_count_destroy);
    ck_assert_uint_eq(deferred_semaphore_tokens(s), 0);
    deferred_add_errback(r, record_drop, NULL);
    deferred_cancel(r);
    ck_assert_int_eq(seen.code[1], ECANCELED);
    ck_assert_uint_eq(deferred_semaphore_tokens(s), 1);
    ck_assert_int_eq(destroyed, 1);
    deferred_unref(r);
    deferred_unref(pending_work);
    pending_work = NULL;

    /* A waiting run dropped by its caller still runs, and releases. */
    hold = deferred_semaphore_acquire(s);
    r = deferred_semaphore_run(s, work_value, NULL, NULL);
    deferred_unref(r);
    ck_assert_int_eq(deferred_semaphore_release(s), 0);
    ck_assert_uint_eq(deferred_semaphore_tokens(s), 1);
    deferred_unref(hold);
    deferred_semaphore_unref(s);
}
END_TEST

/* Cancelling an acquire that has fired does nothing
 * (testCancelSemaphoreAfterAcquired); the last reference fails waiters. */
START_TEST(test_semaphore_misc)
{
    deferred_semaphore_t *s = deferred_semaphore_new(1);
    deferred_t *a, *b;

    ck_assert_uint_eq(deferred_semaphore_limit(s), 1);
    a = deferred_semaphore_acquire(s);
    deferred_cancel(a);
    ck_assert(!deferred_value_is_failure(deferred_result(a)));
    b = deferred_semaphore_acquire(s);
    deferred_add_errback(b, record_drop, NULL);
    deferred_semaphore_unref(s);
    ck_assert_int_eq(seen.n, 1);
    ck_assert_int_eq(seen.code[0], ECANCELED);
    deferred_unref(a);
    deferred_unref(b);
}
END_TEST

/* ---- queue, Twisted's cases -------------------------------------------- */

START_TEST(test_queue)
{
    deferred_queue_t *q = deferred_queue_new(0, 2);
    deferred_t *g[3];
    int i;

    /* Size 0: a put succeeds only into a waiting get. */
    ck_assert_int_eq(deferred_queue_put(q, tu_tracked(1)), -ENOSPC);
    for (i = 0; i < 2; i++)
        ck_assert_int_eq(deferred_queue_get(q, &g[i]), 0);
    ck_assert_uint_eq(deferred_queue_waiting(q), 2);
    /* Cancelling a waiting get removes it (testCancelQueueAfterGet). */
    deferred_add_errback(g[0], record_drop, NULL);
    deferred_cancel(g[0]);
    ck_assert_uint_eq(deferred_queue_waiting(q), 1);
    ck_assert_int_eq(deferred_queue_put(q, tu_tracked(2)), 0);
    ck_assert_int_eq(num(deferred_result(g[1])), 2);
    /* A failure value makes the get fail. */
    ck_assert_int_eq(deferred_queue_get(q, &g[2]), 0);
    ck_assert_int_eq(deferred_queue_put(q, deferred_value_failure(user_failure(4))), 0);
    ck_assert_int_eq(deferred_failure_code(deferred_value_get_failure(deferred_result(g[2]))), 4);
    deferred_add_errback(g[2], record_drop, NULL);
    for (i = 0; i < 3; i++)
        deferred_unref(g[i]);
    ck_assert_int_eq(tu_released, 2);
    deferred_queue_unref(q);

    /* Unlimited, growing past its first ring; the last reference releases
     * what is kept and fails what waits. */
    q = deferred_queue_new(DEFERRED_QUEUE_UNLIMITED, DEFERRED_QUEUE_UNLIMITED);
    for (i = 0; i < 20; i++)
        ck_assert_int_eq(deferred_queue_put(q, tu_tracked(i)), 0);
    for (i = 0; i < 5; i++) {
        ck_assert_int_eq(deferred_queue_get(q, &g[0]), 0);
        ck_assert_int_eq(num(deferred_result(g[0])), i);
        deferred_unref(g[0]);
    }
    for (i = 20; i < 30; i++)
        ck_assert_int_eq(deferred_queue_put(q, tu_tracked(i)), 0);
    ck_assert_uint_eq(deferred_queue_pending(q), 25);
    ck_assert_int_eq(deferred_queue_get(q, &g[0]), 0);
    ck_assert_int_eq(num(deferred_result(g[0])), 5);
    deferred_unref(g[0]);
    deferred_queue_unref(q);
    ck_assert_int_eq(tu_released, 2 + 30);

    q = deferred_queue_new(1, 1);
    ck_assert_int_eq(deferred_queue_get(q, &g[0]), 0);
    deferred_add_errback(g[0], record_drop, NULL);
    deferred_queue_unref(q);
    ck_assert_int_eq(seen.code[seen.n - 1], ECANCELED);
    deferred_unref(g[0]);
}
END_TEST

/* ---- out of memory ----------------------------------------------------- */

/* Out of memory in a semaphore's acquire, runs and hand-offs: ENOMEM
 * surfaces, nothing leaks, the token comes back. */
static void sc_semaphore(struct tu_oom *r)
{
    deferred_semaphore_t *s;
    deferred_t *a = NULL, *r1 = NULL, *r2 = NULL;
    deferred_value_t v;
    intptr_t x1, x2;

    s = deferred_semaphore_new(1);
    if (!s) {
        r->saw = true;
        return;
    }
    a = deferred_semaphore_acquire(s);
    if (!a) {
        r->saw = true;
        goto out;
    }
    r1 = deferred_semaphore_run(s, work_returning_deferred, NULL, NULL);
    r2 = deferred_semaphore_run(s, work_value, (void *)(intptr_t)3, NULL);
    if (!r1 || !r2)
        r->saw = true;
    deferred_semaphore_release(s);
    if (pending_work) {
        deferred_callback(pending_work, tu_oom_tracked(r, 1));
        deferred_unref(pending_work);
        pending_work = NULL;
    }
    v = tu_oom_note(r, deferred_result_take(r1));
    x1 = deferred_value_is_failure(v) ? -1 : num(v);
    deferred_value_release(v);
    v = tu_oom_note(r, deferred_result_take(r2));
    x2 = deferred_value_is_failure(v) ? -1 : num(v);
    deferred_value_release(v);
    ck_assert_uint_eq(deferred_semaphore_tokens(s), 1);
    r->ok = r1 && r2 && x1 == 1 && x2 == 3;
out:
    deferred_unref(a);
    deferred_unref(r1);
    deferred_unref(r2);
    deferred_semaphore_unref(s);
}

/* Out of memory in a queue's puts and get. */
static void sc_queue(struct tu_oom *r)
{
    deferred_queue_t *q = deferred_queue_new(DEFERRED_QUEUE_UNLIMITED, 4);
    deferred_t *g = NULL;
    int i, rc, put = 0;

    if (!q) {
        r->saw = true;
        return;
    }
    for (i = 0; i < 10; i++) {
        rc = deferred_queue_put(q, deferred_value_int(i));
        if (rc == -ENOMEM)
            r->saw = true;
        else if (rc == 0)
            put++;
    }
    rc = deferred_queue_get(q, &g);
    if (rc == -ENOMEM)
        r->saw = true;
    r->ok = rc == 0 && put == 10 && deferred_has_result(g) &&
            tu_oom_take(r, g) == 0;
    deferred_unref(g);
    deferred_queue_unref(q);
}

/* ---- main -------------------------------------------------------------- */

START_TEST(test_oom_semaphore)
{
    tu_oom_sweep("oom_semaphore", sc_semaphore, NULL, CB_OOM_FLAGS);
}
END_TEST

START_TEST(test_oom_queue)
{
    tu_oom_sweep("oom_queue", sc_queue, NULL, CB_OOM_FLAGS);
}
END_TEST

static Suite *combinators_suite(void)
{
    Suite *s = suite_create("combinators-sync");
    TCase *tc = tcase_create("combinators-sync");

    tcase_add_checked_fixture(tc, cb_setup, cb_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_C08_semaphore_queue);
    tcase_add_test(tc, test_bad_input);
    tcase_add_test(tc, test_lock_fifo);
    tcase_add_test(tc, test_lock_run);
    tcase_add_test(tc, test_semaphore_run_cancel);
    tcase_add_test(tc, test_semaphore_misc);
    tcase_add_test(tc, test_queue);
    tcase_add_test(tc, test_oom_semaphore);
    tcase_add_test(tc, test_oom_queue);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(combinators_suite());
}
