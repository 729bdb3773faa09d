/*
 * test-core.c: the deferred core against the P scenarios of
 * docs/scenarios.md (test_P01_... to test_P23_...) and every branch of the
 * chain runner.
 *
 * Every test runs inside the checked fixture of testutil.c, whose teardown
 * asserts that no block allocated through the library's allocator is
 * alive: each test also proves that nothing leaks.
 */
#include "testutil.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static intptr_t result_int(deferred_t *d)
{
    deferred_value_t v = deferred_result(d);
    ck_assert(!deferred_value_is_failure(v));
    return deferred_value_get_int(v);
}

/* Take d's failure result, check its code, drop it. */
static void take_failure_code(deferred_t *d, int code)
{
    deferred_value_t v = deferred_result_take(d);
    ck_assert(deferred_value_is_failure(v));
    ck_assert_int_eq(deferred_failure_code(deferred_value_get_failure(v)), code);
    deferred_value_release(v);
}

static const struct tu_entry *find_tag(int tag)
{
    int i;
    for (i = 0; i < tu_log.n && i < TU_MAX_LOG; i++)
        if (tu_log.e[i].tag == tag)
            return &tu_log.e[i];
    ck_abort_msg("no record with tag %d", tag);
    return NULL;
}

static deferred_failure_t *user_failure(int code)
{
    return deferred_failure_new(DEFERRED_DOMAIN_USER, code, "user failure %d",
                                code);
}

/* ---------------------------------------------------------------- P01-P08 */

START_TEST(test_P01_add_callback_result)
{
    deferred_t *d = deferred_new();
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_add_callback(d, tu_add_one, NULL), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(6)), 0);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(tu_log.e[0].kind, TU_VALUE);
    ck_assert_int_eq(tu_log.e[0].value, 7);
    ck_assert(deferred_has_fired(d));
    ck_assert(deferred_has_result(d));
    ck_assert_int_eq(result_int(d), 7);
    deferred_unref(d);
    ck_assert_int_eq(tu_reports.total, 0);
}
END_TEST

START_TEST(test_P02_callback_fails_skips_to_errback)
{
    deferred_t *d = deferred_new();
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_add_callback(d, tu_fail_with, TAG(5)), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_add_errback(d, tu_record, TAG(2)), 0);
    ck_assert_int_eq(deferred_add_errback(d, tu_recover, TAG(0)), 0);
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(1)), 0);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(tu_log.e[0].tag, 2);
    ck_assert_int_eq(tu_log.e[0].kind, TU_FAILURE);
    ck_assert_int_eq(tu_log.e[0].code, 5);
    ck_assert_ptr_eq(tu_log.e[0].failure, tu_last_failure);
    deferred_unref(d);
    ck_assert_int_eq(tu_reports.unhandled, 0);
}
END_TEST

START_TEST(test_P03_errback_recovers)
{
    deferred_t *d = deferred_new();
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_add_callback(d, tu_fail_with, TAG(5)), 0);
    ck_assert_int_eq(deferred_add_errback(d, tu_recover, TAG(42)), 0);
    ck_assert_int_eq(deferred_add_errback(d, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(2)), 0);
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(1)), 0);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(tu_log.e[0].tag, 2);
    ck_assert_int_eq(tu_log.e[0].kind, TU_VALUE);
    ck_assert_int_eq(tu_log.e[0].value, 42);
    ck_assert_int_eq(result_int(d), 42);
    deferred_unref(d);
    ck_assert_int_eq(tu_reports.total, 0);
}
END_TEST

START_TEST(test_P04_add_both_sees_value_and_failure)
{
    deferred_t *a = deferred_new(), *b = deferred_new();
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(deferred_add_both(a, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_add_both(b, tu_record, TAG(2)), 0);
    ck_assert_int_eq(deferred_callback(a, deferred_value_int(3)), 0);
    ck_assert_int_eq(deferred_errback(b, user_failure(9)), 0);
    ck_assert_int_eq(tu_log.n, 2);
    ck_assert_int_eq(tu_log.e[0].tag, 1);
    ck_assert_int_eq(tu_log.e[0].kind, TU_VALUE);
    ck_assert_int_eq(tu_log.e[0].value, 3);
    ck_assert_int_eq(tu_log.e[1].tag, 2);
    ck_assert_int_eq(tu_log.e[1].kind, TU_FAILURE);
    ck_assert_int_eq(tu_log.e[1].code, 9);
    take_failure_code(b, 9);
    deferred_unref(a);
    deferred_unref(b);
    ck_assert_int_eq(tu_reports.total, 0);
}
END_TEST

START_TEST(test_P05_add_to_fired_runs_at_once)
{
    deferred_t *d = deferred_new();
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(5)), 0);
    ck_assert_int_eq(tu_log.n, 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(1)), 0);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(tu_log.e[0].value, 5);
    ck_assert_int_eq(deferred_add_callback(d, tu_add_one, NULL), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(2)), 0);
    ck_assert_int_eq(tu_log.n, 2);
    ck_assert_int_eq(tu_log.e[1].value, 6);
    ck_assert_int_eq(result_int(d), 6);
    deferred_unref(d);
}
END_TEST

START_TEST(test_P06_second_failing_callback_skipped)
{
    deferred_t *d = deferred_new();
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_add_callback(d, tu_fail_with, TAG(1)), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_fail_with, TAG(2)), 0);
    ck_assert_int_eq(deferred_add_errback(d, tu_record, TAG(3)), 0);
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(0)), 0);
    ck_assert_int_eq(tu_fail_calls, 1);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(tu_log.e[0].kind, TU_FAILURE);
    ck_assert_int_eq(tu_log.e[0].code, 1);
    /* the first failure object itself, not a copy */
    ck_assert_ptr_eq(tu_log.e[0].failure, tu_last_failure);
    ck_assert_ptr_eq(deferred_value_get_failure(deferred_result(d)),
                     tu_last_failure);
    take_failure_code(d, 1);
    deferred_unref(d);
    ck_assert_int_eq(tu_reports.total, 0);
}
END_TEST

START_TEST(test_P07_pause_after_fire)
{
    deferred_t *d = deferred_new();
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(1)), 0);
    ck_assert_int_eq(deferred_pause(d), 0);
    ck_assert(deferred_is_paused(d));
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_add_one, NULL), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(2)), 0);
    ck_assert_int_eq(tu_log.n, 0);
    ck_assert(!deferred_has_result(d));
    ck_assert_int_eq(deferred_unpause(d), 0);
    ck_assert(!deferred_is_paused(d));
    ck_assert_int_eq(tu_log.n, 2);
    ck_assert_int_eq(tu_log.e[0].tag, 1);
    ck_assert_int_eq(tu_log.e[0].value, 1);
    ck_assert_int_eq(tu_log.e[1].tag, 2);
    ck_assert_int_eq(tu_log.e[1].value, 2);
    ck_assert(deferred_has_result(d));
    deferred_unref(d);
}
END_TEST

START_TEST(test_P08_pause_unpause_unfired)
{
    deferred_t *d = deferred_new();
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_pause(d), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_add_errback(d, tu_record, TAG(2)), 0);
    ck_assert_int_eq(deferred_unpause(d), 0);
    ck_assert_int_eq(tu_log.n, 0);
    ck_assert(!deferred_has_fired(d));
    ck_assert(!deferred_has_result(d));
    ck_assert(deferred_value_is_none(deferred_result(d)));
    deferred_unref(d);
    ck_assert_int_eq(tu_log.n, 0);
    ck_assert_int_eq(tu_reports.total, 0);
}
END_TEST

/* ---------------------------------------------------------------- P09-P12 */

START_TEST(test_P09_chaining_async)
{
    deferred_t *outer = deferred_new(), *inner = deferred_new();
    ck_assert_ptr_nonnull(outer);
    ck_assert_ptr_nonnull(inner);
    ck_assert_int_eq(deferred_add_callback(outer, tu_return_deferred, inner), 0);
    ck_assert_int_eq(deferred_add_callback(outer, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_callback(outer, deferred_value_int(1)), 0);
    ck_assert_int_eq(tu_log.n, 0);
    ck_assert(deferred_has_fired(outer));
    ck_assert(deferred_is_paused(outer));
    ck_assert(!deferred_has_result(outer));
    ck_assert(deferred_value_is_none(deferred_result(outer)));
    ck_assert(deferred_value_is_none(deferred_result_take(outer)));
    ck_assert_int_eq(deferred_callback(inner, deferred_value_int(7)), 0);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(tu_log.e[0].kind, TU_VALUE);
    ck_assert_int_eq(tu_log.e[0].value, 7);
    ck_assert(!deferred_is_paused(outer));
    ck_assert(deferred_has_result(outer));
    ck_assert_int_eq(result_int(outer), 7);
    /* the inner is left with an empty result */
    ck_assert(deferred_value_is_none(deferred_result(inner)));
    deferred_unref(inner);
    deferred_unref(outer);
}
END_TEST

START_TEST(test_P10_chaining_sync)
{
    deferred_t *outer = deferred_new(), *inner = deferred_new();
    ck_assert_ptr_nonnull(outer);
    ck_assert_ptr_nonnull(inner);
    ck_assert_int_eq(deferred_callback(inner, deferred_value_int(8)), 0);
    ck_assert_int_eq(deferred_add_callback(outer, tu_return_deferred, inner), 0);
    ck_assert_int_eq(deferred_add_callback(outer, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_callback(outer, deferred_value_int(1)), 0);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(tu_log.e[0].tag, 1);
    ck_assert_int_eq(tu_log.e[0].value, 8);
    ck_assert(deferred_has_result(outer));
    ck_assert(!deferred_is_paused(outer));
    ck_assert_int_eq(deferred_add_callback(inner, tu_record, TAG(2)), 0);
    ck_assert_int_eq(tu_log.n, 2);
    ck_assert_int_eq(tu_log.e[1].tag, 2);
    ck_assert_int_eq(tu_log.e[1].kind, TU_NONE);
    deferred_unref(inner);
    deferred_unref(outer);
}
END_TEST

START_TEST(test_P11_chaining_paused_inner)
{
    deferred_t *outer = deferred_new(), *inner = deferred_new();
    ck_assert_ptr_nonnull(outer);
    ck_assert_ptr_nonnull(inner);
    ck_assert_int_eq(deferred_callback(inner, deferred_value_int(8)), 0);
    ck_assert_int_eq(deferred_pause(inner), 0);
    ck_assert_int_eq(deferred_add_callback(outer, tu_return_deferred, inner), 0);
    ck_assert_int_eq(deferred_add_callback(outer, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_callback(outer, deferred_value_int(1)), 0);
    ck_assert_int_eq(tu_log.n, 0);
    ck_assert(deferred_is_paused(outer));
    ck_assert(!deferred_has_result(outer));
    ck_assert_int_eq(deferred_unpause(inner), 0);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(tu_log.e[0].value, 8);
    ck_assert(deferred_has_result(outer));
    ck_assert(deferred_value_is_none(deferred_result(inner)));
    deferred_unref(inner);
    deferred_unref(outer);
}
END_TEST

START_TEST(test_P12_chaining_three_levels)
{
    deferred_t *first = deferred_new(), *second = deferred_new(),
               *third = deferred_new();
    ck_assert_ptr_nonnull(first);
    ck_assert_ptr_nonnull(second);
    ck_assert_ptr_nonnull(third);
    ck_assert_int_eq(deferred_add_callback(second, tu_return_deferred, first), 0);
    ck_assert_int_eq(deferred_add_callback(third, tu_return_deferred, second), 0);
    ck_assert_int_eq(deferred_add_callback(third, tu_record, TAG(3)), 0);
    ck_assert_int_eq(deferred_callback(second, deferred_value_int(0)), 0);
    ck_assert_int_eq(deferred_callback(third, deferred_value_int(0)), 0);
    ck_assert_int_eq(tu_log.n, 0);
    ck_assert(deferred_is_paused(third));
    ck_assert(deferred_is_paused(second));
    ck_assert_int_eq(deferred_callback(first, deferred_value_int(33)), 0);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(tu_log.e[0].tag, 3);
    ck_assert_int_eq(tu_log.e[0].value, 33);
    ck_assert_int_eq(result_int(third), 33);
    ck_assert(deferred_has_result(second));
    ck_assert(deferred_has_result(first));
    deferred_unref(first);
    deferred_unref(second);
    deferred_unref(third);
}
END_TEST

/* Three levels, the outermost fired first (it waits on an unfired one). */
START_TEST(test_chaining_three_levels_outer_first)
{
    deferred_t *first = deferred_new(), *second = deferred_new(),
               *third = deferred_new();
    ck_assert_ptr_nonnull(third);
    ck_assert_int_eq(deferred_add_callback(second, tu_return_deferred, first), 0);
    ck_assert_int_eq(deferred_add_callback(third, tu_return_deferred, second), 0);
    ck_assert_int_eq(deferred_add_callback(third, tu_record, TAG(3)), 0);
    ck_assert_int_eq(deferred_callback(third, deferred_value_int(0)), 0);
    ck_assert_int_eq(deferred_callback(second, deferred_value_int(0)), 0);
    ck_assert_int_eq(tu_log.n, 0);
    ck_assert_int_eq(deferred_callback(first, deferred_value_int(34)), 0);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(tu_log.e[0].value, 34);
    deferred_unref(third);
    deferred_unref(second);
    deferred_unref(first);
}
END_TEST

/* ---------------------------------------------------------------- P13 */

#define P13_N 1000000
#define P13_STACK (256 * 1024)

struct p13 {
    deferred_t **d;
    int mode;        /* 0: fire innermost; 1: free waiting chain; 2: cancel */
    int ok_alloc;
    int rc_fail;     /* count of unexpected return codes */
    int cancels;
    bool inner_result_none;
};

static void p13_build(struct p13 *p, bool cancellable_inner)
{
    int i;

    for (i = 0; i < P13_N; i++) {
        if (i == P13_N - 1 && cancellable_inner)
            p->d[i] = deferred_new_cancellable(tu_canceller_count, &p->cancels,
                                               NULL);
        else
            p->d[i] = deferred_new();
        if (!p->d[i]) {
            p->ok_alloc = 0;
            return;
        }
    }
    for (i = 0; i < P13_N - 1; i++)
        if (deferred_add_callback(p->d[i], tu_return_deferred, p->d[i + 1]) != 0)
            p->rc_fail++;
    if (deferred_add_both(p->d[0], tu_record, TAG(1)) != 0)
        p->rc_fail++;
    /* Fire from the outermost in: each one waits on the next, unfired. */
    for (i = 0; i < P13_N - 1; i++)
        if (deferred_callback(p->d[i], deferred_value_int(i)) != 0)
            p->rc_fail++;
}

static void *p13_thread(void *arg)
{
    struct p13 *p = arg;
    int i;

    p->ok_alloc = 1;
    p13_build(p, p->mode == 2);
    if (!p->ok_alloc)
        return NULL;
    if (p->mode == 0) {
        /* the result propagates back through a million waits */
        if (deferred_callback(p->d[P13_N - 1], deferred_value_int(4242)) != 0)
            p->rc_fail++;
        p->inner_result_none =
            deferred_value_is_none(deferred_result(p->d[P13_N - 1]));
        for (i = 0; i < P13_N; i++)
            deferred_unref(p->d[i]);
    } else if (p->mode == 1) {
        /* the chain holds every inner one; dropping d[0] frees them all */
        for (i = P13_N - 1; i >= 1; i--)
            deferred_unref(p->d[i]);
        deferred_unref(p->d[0]);
    } else {
        if (deferred_cancel(p->d[0]) != 0)
            p->rc_fail++;
        if (deferred_cancel(p->d[0]) != 0)
            p->rc_fail++;
        deferred_value_release(deferred_result_take(p->d[0]));
        for (i = 0; i < P13_N; i++)
            deferred_unref(p->d[i]);
    }
    return NULL;
}

static void p13_run(struct p13 *p, int mode)
{
    pthread_attr_t attr;
    pthread_t th;

    memset(p, 0, sizeof *p);
    p->mode = mode;
    p->d = malloc(sizeof *p->d * P13_N);
    ck_assert_ptr_nonnull(p->d);
    ck_assert_int_eq(pthread_attr_init(&attr), 0);
    ck_assert_int_eq(pthread_attr_setstacksize(&attr, P13_STACK), 0);
    ck_assert_int_eq(pthread_create(&th, &attr, p13_thread, p), 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    pthread_attr_destroy(&attr);
    free(p->d);
    ck_assert_int_eq(p->ok_alloc, 1);
    ck_assert_int_eq(p->rc_fail, 0);
}

START_TEST(test_P13_million_chain_fire)
{
    struct p13 p;
    p13_run(&p, 0);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(tu_log.e[0].kind, TU_VALUE);
    ck_assert_int_eq(tu_log.e[0].value, 4242);
    ck_assert(p.inner_result_none);
    ck_assert_int_eq(tu_reports.total, 0);
    ck_assert_uint_eq(tu_live(), 0);
}
END_TEST

START_TEST(test_P13_million_chain_free)
{
    struct p13 p;
    p13_run(&p, 1);
    ck_assert_int_eq(tu_log.n, 0);
    ck_assert_int_eq(tu_reports.total, 0);
    ck_assert_uint_eq(tu_live(), 0);
}
END_TEST

START_TEST(test_P13_million_chain_cancel)
{
    struct p13 p;
    p13_run(&p, 2);
    ck_assert_int_eq(p.cancels, 1);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(tu_log.e[0].kind, TU_FAILURE);
    ck_assert_int_eq(tu_log.e[0].code, ECANCELED);
    ck_assert_int_eq(tu_reports.total, 0);
    ck_assert_uint_eq(tu_live(), 0);
}
END_TEST

/* ---------------------------------------------------------------- P14-P15 */

START_TEST(test_P14_return_self_edeadlk)
{
    deferred_t *d = deferred_new();
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_add_callback(d, tu_return_deferred, d), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_add_errback(d, tu_record, TAG(2)), 0);
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(1)), 0);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(tu_log.e[0].tag, 2);
    ck_assert_int_eq(tu_log.e[0].kind, TU_FAILURE);
    ck_assert_int_eq(tu_log.e[0].code, EDEADLK);
    ck_assert(deferred_has_result(d));
    ck_assert(!deferred_is_paused(d));
    take_failure_code(d, EDEADLK);
    deferred_unref(d);
}
END_TEST

/* A fire: kind 0 callback with a tracked value, 1 errback. */
static int fire_tracked(deferred_t *d, int kind, int x)
{
    if (kind == 0)
        return deferred_callback(d, tu_tracked(x));
    return deferred_errback(d, user_failure(x));
}

START_TEST(test_P15_double_fire)
{
    int first, second;

    for (first = 0; first < 2; first++) {
        for (second = 0; second < 2; second++) {
            deferred_t *d = deferred_new();
            size_t live;
            ck_assert_ptr_nonnull(d);
            tu_log_reset();
            tu_released = 0;
            ck_assert_int_eq(deferred_add_both(d, tu_record, TAG(1)), 0);
            ck_assert_int_eq(fire_tracked(d, first, 10), 0);
            live = tu_live();
            ck_assert_int_eq(fire_tracked(d, second, 20), -EALREADY);
            /* the second value was released, the first result stands */
            ck_assert_uint_eq(tu_live(), live);
            ck_assert_int_eq(tu_released, second == 0 ? 1 : 0);
            ck_assert_int_eq(tu_log.n, 1);
            if (first == 0) {
                deferred_value_t v = deferred_result(d);
                ck_assert(tu_is_tracked(v));
                ck_assert_int_eq(tu_tracked_get(v), 10);
            } else {
                ck_assert_int_eq(deferred_failure_code(deferred_value_get_failure(
                                     deferred_result(d))), 10);
                take_failure_code(d, 10);
            }
            deferred_unref(d);
            ck_assert_uint_eq(tu_live(), 0);
            /* debug mode is off: no report */
            ck_assert_int_eq(tu_reports.already_fired, 0);
            ck_assert_int_eq(tu_reports.total, 0);
        }
    }
}
END_TEST

START_TEST(test_P15_double_fire_debug_sites)
{
    int kind;

    deferred_set_debug(true);
    ck_assert(deferred_get_debug());
    for (kind = 0; kind < 4; kind++) {
        int line_new, line_fire, line_second, rc;
        deferred_t *d;

        memset(&tu_reports, 0, sizeof tu_reports);
        line_new = __LINE__; d = deferred_new();
        ck_assert_ptr_nonnull(d);
        if (kind < 2) {
            line_fire = __LINE__; rc = deferred_callback(d, deferred_value_int(1));
        } else {
            line_fire = __LINE__; rc = deferred_errback(d, user_failure(1));
        }
        ck_assert_int_eq(rc, 0);
        if (kind % 2 == 0) {
            line_second = __LINE__; rc = deferred_callback(d, tu_tracked(2));
        } else {
            line_second = __LINE__; rc = deferred_errback(d, user_failure(2));
        }
        ck_assert_int_eq(rc, -EALREADY);
        ck_assert_int_eq(tu_reports.already_fired, 1);
        ck_assert_int_eq(tu_reports.total, 1);
        ck_assert_int_eq(tu_reports.last_kind, DEFERRED_REPORT_ALREADY_FIRED);
        ck_assert_msg(strstr(tu_reports.last_message, "test-core.c") != NULL,
                      "message lacks the file name: %s", tu_reports.last_message);
        ck_assert_msg(tu_contains_number(tu_reports.last_message, line_new),
                      "message lacks creation line %d: %s", line_new,
                      tu_reports.last_message);
        ck_assert_msg(tu_contains_number(tu_reports.last_message, line_fire),
                      "message lacks first fire line %d: %s", line_fire,
                      tu_reports.last_message);
        ck_assert_msg(tu_contains_number(tu_reports.last_message, line_second),
                      "message lacks second fire line %d: %s", line_second,
                      tu_reports.last_message);
        if (kind >= 2)
            take_failure_code(d, 1);
        else
            ck_assert_int_eq(result_int(d), 1);
        deferred_unref(d);
        ck_assert_uint_eq(tu_live(), 0);
    }
    deferred_set_debug(false);
    ck_assert(!deferred_get_debug());
}
END_TEST

/* ---------------------------------------------------------------- P16-P20 */

START_TEST(test_P16_cancel_without_canceller)
{
    deferred_t *d = deferred_new();
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_add_errback(d, tu_record, TAG(2)), 0);
    ck_assert_int_eq(deferred_cancel(d), 0);
    ck_assert(deferred_has_fired(d));
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(tu_log.e[0].tag, 2);
    ck_assert_int_eq(tu_log.e[0].kind, TU_FAILURE);
    ck_assert_int_eq(tu_log.e[0].code, ECANCELED);
    /* the next fire is swallowed, its value released */
    ck_assert_int_eq(deferred_callback(d, tu_tracked(5)), 0);
    ck_assert_int_eq(tu_released, 1);
    ck_assert_int_eq(tu_log.n, 1);
    /* the one after is -EALREADY */
    ck_assert_int_eq(deferred_callback(d, tu_tracked(6)), -EALREADY);
    ck_assert_int_eq(tu_released, 2);
    ck_assert_int_eq(deferred_errback(d, user_failure(3)), -EALREADY);
    ck_assert_int_eq(tu_log.n, 1);
    take_failure_code(d, ECANCELED);
    deferred_unref(d);
    ck_assert_int_eq(tu_reports.total, 0);
}
END_TEST

/* The swallowed fire may also be an errback. */
START_TEST(test_cancel_without_canceller_swallows_errback)
{
    deferred_t *d = deferred_new();
    ck_assert_ptr_nonnull(d);
    size_t live;
    ck_assert_int_eq(deferred_cancel(d), 0);
    live = tu_live(); /* d and its ECANCELED failure */
    ck_assert_int_eq(deferred_errback(d, user_failure(3)), 0);
    ck_assert_uint_eq(tu_live(), live); /* the swallowed failure released */
    ck_assert_int_eq(deferred_errback(d, user_failure(4)), -EALREADY);
    ck_assert_int_eq(deferred_cancel(d), 0);
    ck_assert_int_eq(deferred_cancel(d), 0);
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(1)), -EALREADY);
    take_failure_code(d, ECANCELED);
    deferred_unref(d);
}
END_TEST

START_TEST(test_P17_canceller_fires_value)
{
    int cancels = 0;
    deferred_t *d = deferred_new_cancellable(tu_canceller_fire, &cancels, NULL);
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_add_both(d, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_cancel(d), 0);
    ck_assert_int_eq(cancels, 1);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(tu_log.e[0].kind, TU_VALUE);
    ck_assert_int_eq(tu_log.e[0].value, 99);
    ck_assert_int_eq(result_int(d), 99);
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(1)), -EALREADY);
    deferred_unref(d);
    ck_assert_int_eq(tu_reports.total, 0);
}
END_TEST

START_TEST(test_P18_cancel_twice_canceller_once)
{
    int cancels = 0;
    deferred_t *d = deferred_new_cancellable(tu_canceller_count, &cancels, NULL);
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_add_errback(d, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_cancel(d), 0);
    ck_assert_int_eq(deferred_cancel(d), 0);
    ck_assert_int_eq(cancels, 1);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(tu_log.e[0].code, ECANCELED);
    /* with a canceller, a later fire is -EALREADY */
    ck_assert_int_eq(deferred_callback(d, tu_tracked(1)), -EALREADY);
    ck_assert_int_eq(tu_released, 1);
    take_failure_code(d, ECANCELED);
    ck_assert_int_eq(deferred_cancel(d), 0);
    ck_assert_int_eq(cancels, 1);
    deferred_unref(d);
}
END_TEST

START_TEST(test_P19_cancel_after_fire)
{
    int cancels = 0;
    deferred_t *d = deferred_new_cancellable(tu_canceller_count, &cancels, NULL);
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(5)), 0);
    ck_assert_int_eq(deferred_add_both(d, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_cancel(d), 0);
    ck_assert_int_eq(cancels, 0);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(tu_log.e[0].value, 5);
    ck_assert_int_eq(result_int(d), 5);
    ck_assert_int_eq(deferred_add_both(d, tu_record, TAG(2)), 0);
    ck_assert_int_eq(tu_log.e[1].kind, TU_VALUE);
    ck_assert_int_eq(tu_log.e[1].value, 5);
    deferred_unref(d);
}
END_TEST

START_TEST(test_P20_cancel_goes_to_inner)
{
    int outer_cancels = 0, inner_cancels = 0;
    deferred_t *outer = deferred_new_cancellable(tu_canceller_count,
                                                 &outer_cancels, NULL);
    deferred_t *inner = deferred_new_cancellable(tu_canceller_count,
                                                 &inner_cancels, NULL);
    ck_assert_ptr_nonnull(outer);
    ck_assert_ptr_nonnull(inner);
    ck_assert_int_eq(deferred_add_callback(outer, tu_return_deferred, inner), 0);
    ck_assert_int_eq(deferred_add_callback(outer, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_add_errback(outer, tu_record, TAG(2)), 0);
    ck_assert_int_eq(deferred_callback(outer, deferred_value_int(1)), 0);
    ck_assert_int_eq(deferred_cancel(outer), 0);
    ck_assert_int_eq(inner_cancels, 1);
    ck_assert_int_eq(outer_cancels, 0);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(tu_log.e[0].tag, 2);
    ck_assert_int_eq(tu_log.e[0].code, ECANCELED);
    ck_assert_int_eq(deferred_cancel(outer), 0);
    ck_assert_int_eq(inner_cancels, 1);
    ck_assert_int_eq(outer_cancels, 0);
    /* the failure moved to the outer: the inner holds nothing */
    ck_assert(deferred_value_is_none(deferred_result(inner)));
    take_failure_code(outer, ECANCELED);
    deferred_unref(inner);
    deferred_unref(outer);
    ck_assert_int_eq(tu_reports.total, 0);
}
END_TEST

/* ---------------------------------------------------------------- P21 */

START_TEST(test_P21_unhandled_reported_once)
{
    deferred_t *d = deferred_new();
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_add_callback(d, tu_fail_with, TAG(7)), 0);
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(1)), 0);
    ck_assert_ptr_eq(deferred_ref(d), d);
    deferred_unref(d);
    ck_assert_int_eq(tu_reports.total, 0);
    deferred_unref(d);
    ck_assert_int_eq(tu_reports.total, 1);
    ck_assert_int_eq(tu_reports.unhandled, 1);
    ck_assert_int_eq(tu_reports.last_kind, DEFERRED_REPORT_UNHANDLED);
    ck_assert_int_eq(tu_reports.last_code, 7);
    ck_assert_str_eq(tu_reports.last_message, "fail_with 7");
    ck_assert_msg(strstr(tu_reports.last_story, "fail_with 7") != NULL,
                  "story: %s", tu_reports.last_story);
    ck_assert_msg(strstr(tu_reports.last_story, "testutil.c") != NULL,
                  "story lacks the site: %s", tu_reports.last_story);
}
END_TEST

START_TEST(test_P21_handled_not_reported)
{
    deferred_t *a = deferred_new(), *b = deferred_new(), *c = deferred_new();
    deferred_t *outer = deferred_new(), *inner = deferred_new();
    deferred_t *outer2 = deferred_new(), *inner2 = deferred_new();
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(inner2);

    /* an errback handled it */
    ck_assert_int_eq(deferred_errback(a, user_failure(1)), 0);
    ck_assert_int_eq(deferred_add_errback(a, tu_recover, TAG(0)), 0);
    deferred_unref(a);

    /* taken with result_take */
    ck_assert_int_eq(deferred_errback(b, user_failure(2)), 0);
    take_failure_code(b, 2);
    deferred_unref(b);

    /* errback added after the fire, passing to a callback that is skipped
     * and then an errback that recovers */
    ck_assert_int_eq(deferred_errback(c, user_failure(3)), 0);
    ck_assert_int_eq(deferred_add_callback(c, tu_add_one, NULL), 0);
    ck_assert_int_eq(deferred_add_errback(c, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_add_errback(c, tu_recover, TAG(0)), 0);
    deferred_unref(c);

    /* moved to a chained deferred, synchronously */
    ck_assert_int_eq(deferred_errback(inner, user_failure(4)), 0);
    ck_assert_int_eq(deferred_add_callback(outer, tu_return_deferred, inner), 0);
    ck_assert_int_eq(deferred_add_errback(outer, tu_record, TAG(2)), 0);
    ck_assert_int_eq(deferred_add_errback(outer, tu_recover, TAG(0)), 0);
    ck_assert_int_eq(deferred_callback(outer, deferred_value_int(0)), 0);
    ck_assert(deferred_value_is_none(deferred_result(inner)));
    deferred_unref(inner);
    deferred_unref(outer);

    /* moved to a chained deferred, asynchronously */
    ck_assert_int_eq(deferred_add_callback(outer2, tu_return_deferred, inner2), 0);
    ck_assert_int_eq(deferred_add_errback(outer2, tu_record, TAG(3)), 0);
    ck_assert_int_eq(deferred_add_errback(outer2, tu_recover, TAG(0)), 0);
    ck_assert_int_eq(deferred_callback(outer2, deferred_value_int(0)), 0);
    ck_assert_int_eq(deferred_errback(inner2, user_failure(5)), 0);
    ck_assert(deferred_value_is_none(deferred_result(inner2)));
    deferred_unref(inner2);
    deferred_unref(outer2);

    ck_assert_int_eq(tu_log.n, 3);
    ck_assert_int_eq(tu_log.e[0].code, 3);
    ck_assert_int_eq(tu_log.e[1].code, 4);
    ck_assert_int_eq(tu_log.e[2].code, 5);
    ck_assert_int_eq(tu_reports.total, 0);
}
END_TEST

/* The failure moved to a chained outer that does not handle it: reported
 * once, for the outer, never for the inner. */
START_TEST(test_unhandled_moved_reported_once_for_outer)
{
    deferred_t *outer = deferred_new(), *inner = deferred_new();
    ck_assert_ptr_nonnull(outer);
    ck_assert_ptr_nonnull(inner);
    ck_assert_int_eq(deferred_add_callback(outer, tu_return_deferred, inner), 0);
    ck_assert_int_eq(deferred_callback(outer, deferred_value_int(0)), 0);
    ck_assert_int_eq(deferred_errback(inner, user_failure(6)), 0);
    deferred_unref(inner);
    ck_assert_int_eq(tu_reports.total, 0);
    deferred_unref(outer);
    ck_assert_int_eq(tu_reports.unhandled, 1);
    ck_assert_int_eq(tu_reports.total, 1);
    ck_assert_int_eq(tu_reports.last_code, 6);
}
END_TEST

/* A failure moved with chain_to is the target's, not the source's. */
START_TEST(test_unhandled_chain_to_moves_failure)
{
    deferred_t *d = deferred_new(), *t = deferred_new();
    ck_assert_ptr_nonnull(d);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(deferred_chain_to(d, t), 0);
    ck_assert_int_eq(deferred_errback(d, user_failure(8)), 0);
    ck_assert(deferred_value_is_none(deferred_result(d)));
    deferred_unref(d);
    ck_assert_int_eq(tu_reports.total, 0);
    deferred_unref(t);
    ck_assert_int_eq(tu_reports.unhandled, 1);
    ck_assert_int_eq(tu_reports.last_code, 8);
}
END_TEST

/* deferred_fail() dropped unhandled: reported once; succeed(): never. */
START_TEST(test_unhandled_fail_constructor)
{
    deferred_t *d = deferred_fail(user_failure(12));
    ck_assert_ptr_nonnull(d);
    deferred_unref(d);
    ck_assert_int_eq(tu_reports.unhandled, 1);
    ck_assert_int_eq(tu_reports.last_code, 12);
    d = deferred_succeed(deferred_value_int(1));
    ck_assert_ptr_nonnull(d);
    deferred_unref(d);
    ck_assert_int_eq(tu_reports.total, 1);
}
END_TEST

/* ---------------------------------------------------------------- P22 */

static int p22_nested;
static deferred_value_t p22_adder(deferred_value_t v, void *arg)
{
    deferred_t *d = arg;
    int before = tu_log.n;

    tu_depth++;
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(3)), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_add_one, NULL), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(4)), 0);
    if (tu_log.n != before)
        p22_nested++;
    tu_depth--;
    return v;
}

START_TEST(test_P22_add_during_run)
{
    deferred_t *d = deferred_new();
    ck_assert_ptr_nonnull(d);
    p22_nested = 0;
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_add_callback(d, p22_adder, d), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(2)), 0);
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(10)), 0);
    ck_assert_int_eq(p22_nested, 0);
    ck_assert_int_eq(tu_log.n, 4);
    ck_assert_int_eq(tu_log.e[0].tag, 1);
    ck_assert_int_eq(tu_log.e[1].tag, 2);
    ck_assert_int_eq(tu_log.e[2].tag, 3);
    ck_assert_int_eq(tu_log.e[3].tag, 4);
    ck_assert_int_eq(tu_log.e[2].value, 10);
    ck_assert_int_eq(tu_log.e[3].value, 11);
    ck_assert_int_eq(tu_log.e[2].depth, 0);
    ck_assert_int_eq(tu_log.e[3].depth, 0);
    ck_assert_int_eq(result_int(d), 11);
    deferred_unref(d);
}
END_TEST

/* A callback added by a callback that then fails: the added callback is
 * skipped and the first errback after it sees the failure (Twisted
 * test_reentrantRunCallbacksWithFailure). */
static deferred_value_t add_then_fail(deferred_value_t v, void *arg)
{
    deferred_t *d = arg;
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(5)), 0);
    ck_assert_int_eq(deferred_add_errback(d, tu_record, TAG(6)), 0);
    ck_assert_int_eq(deferred_add_errback(d, tu_recover, TAG(0)), 0);
    return tu_fail_with(v, TAG(13));
}

START_TEST(test_reentrant_add_then_fail)
{
    deferred_t *d = deferred_new();
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_add_callback(d, add_then_fail, d), 0);
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(1)), 0);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(tu_log.e[0].tag, 6);
    ck_assert_int_eq(tu_log.e[0].code, 13);
    deferred_unref(d);
    ck_assert_int_eq(tu_reports.total, 0);
}
END_TEST

/* ---------------------------------------------------------------- P23 */

static void canceller_none(deferred_t *d, void *arg)
{
    (void)d;
    (void)arg;
}

START_TEST(test_P23_destroy_functions)
{
    int ran = 0, skipped = 0, cb_pair = 0, eb_pair = 0, shared = 0, both = 0;
    int dropped = 0, dropped2 = 0, waiting = 0, einval1 = 0, einval2 = 0,
        einval3 = 0, canc_ran = 0, canc_not = 0, canc_fail = 0;
    deferred_t *d = deferred_new(), *d2 = deferred_new(), *w = deferred_new(),
               *inner = deferred_new();
    deferred_t *c1, *c2;
    struct tu_carg *sa;

    ck_assert_ptr_nonnull(d);
    ck_assert_ptr_nonnull(inner);
    ck_assert_int_eq(deferred_add_callback_full(d, tu_record_carg, tu_carg(1, &ran),
                                                tu_carg_destroy), 0);
    ck_assert_int_eq(deferred_add_errback_full(d, tu_record_carg,
                                               tu_carg(2, &skipped),
                                               tu_carg_destroy), 0);
    ck_assert_int_eq(deferred_add_callbacks_full(d, tu_record_carg,
                                                 tu_carg(3, &cb_pair),
                                                 tu_carg_destroy, tu_record_carg,
                                                 tu_carg(4, &eb_pair),
                                                 tu_carg_destroy), 0);
    sa = tu_carg(5, &shared);
    ck_assert_int_eq(deferred_add_callbacks_full(d, tu_record_carg, sa,
                                                 tu_carg_destroy, tu_record_carg,
                                                 sa, tu_carg_destroy), 0);
    ck_assert_int_eq(deferred_add_both_full(d, tu_record_carg, tu_carg(6, &both),
                                            tu_carg_destroy), 0);
    ck_assert_int_eq(ran + skipped + cb_pair + eb_pair + shared + both, 0);
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(1)), 0);
    ck_assert_int_eq(ran, 1);
    ck_assert_int_eq(skipped, 1);
    ck_assert_int_eq(cb_pair, 1);
    ck_assert_int_eq(eb_pair, 1);
    ck_assert_int_eq(shared, 1);
    ck_assert_int_eq(both, 1);
    ck_assert_int_eq(tu_log.n, 4);
    ck_assert_int_eq(tu_log.e[0].tag, 1);
    ck_assert_int_eq(tu_log.e[1].tag, 3);
    ck_assert_int_eq(tu_log.e[2].tag, 5);
    ck_assert_int_eq(tu_log.e[3].tag, 6);
    deferred_unref(d);
    ck_assert_int_eq(ran + skipped + cb_pair + eb_pair + shared + both, 6);

    /* dropped unfired */
    ck_assert_int_eq(deferred_add_callback_full(d2, tu_record_carg,
                                                tu_carg(7, &dropped),
                                                tu_carg_destroy), 0);
    ck_assert_int_eq(deferred_add_callbacks_full(d2, tu_record_carg,
                                                 tu_carg(7, &dropped2),
                                                 tu_carg_destroy, tu_record_carg,
                                                 tu_carg(7, &dropped2),
                                                 tu_carg_destroy), 0);
    deferred_unref(d2);
    ck_assert_int_eq(dropped, 1);
    ck_assert_int_eq(dropped2, 2);

    /* never reached: the chain waits forever, then is dropped */
    ck_assert_int_eq(deferred_add_callback(w, tu_return_deferred, inner), 0);
    ck_assert_int_eq(deferred_add_both_full(w, tu_record_carg,
                                            tu_carg(8, &waiting),
                                            tu_carg_destroy), 0);
    ck_assert_int_eq(deferred_callback(w, deferred_value_int(1)), 0);
    deferred_unref(w);
    ck_assert_int_eq(waiting, 1);
    deferred_unref(inner);

    /* errors: destroyed before returning, never run */
    ck_assert_int_eq(deferred_add_callback_full(NULL, tu_record_carg,
                                                tu_carg(9, &einval1),
                                                tu_carg_destroy), -EINVAL);
    ck_assert_int_eq(einval1, 1);
    d = deferred_new();
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_add_callbacks_full(d, NULL, tu_carg(9, &einval2),
                                                 tu_carg_destroy, NULL,
                                                 tu_carg(9, &einval2),
                                                 tu_carg_destroy), -EINVAL);
    ck_assert_int_eq(einval2, 2);
    ck_assert_int_eq(deferred_add_both_full(NULL, tu_record_carg,
                                            tu_carg(9, &einval3),
                                            tu_carg_destroy), -EINVAL);
    ck_assert_int_eq(einval3, 1);
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(1)), 0);
    deferred_unref(d);
    ck_assert_int_eq(tu_log.n, 4);

    /* the canceller's argument: once, whether the canceller ran or not */
    c1 = deferred_new_cancellable(canceller_none, tu_carg(10, &canc_ran),
                                  tu_carg_destroy);
    c2 = deferred_new_cancellable(canceller_none, tu_carg(11, &canc_not),
                                  tu_carg_destroy);
    ck_assert_ptr_nonnull(c1);
    ck_assert_ptr_nonnull(c2);
    ck_assert_int_eq(deferred_cancel(c1), 0);
    ck_assert_int_eq(canc_ran, 0);
    take_failure_code(c1, ECANCELED);
    deferred_unref(c1);
    deferred_unref(c2);
    ck_assert_int_eq(canc_ran, 1);
    ck_assert_int_eq(canc_not, 1);

    /* failing constructor: destroy called already */
    tu_fail_from(1);
    c1 = deferred_new_cancellable(canceller_none, &canc_fail, tu_count_destroy);
    tu_fail_at(0);
    ck_assert_ptr_null(c1);
    ck_assert_int_eq(canc_fail, 1);
}
END_TEST

/* A destroy function runs after its half, not before: the half sees its
 * argument intact (tu_record_carg reads it), and a value callback's own
 * argument is destroyed when its errback ran instead. */
START_TEST(test_destroy_after_errback_path)
{
    int cb = 0, eb = 0;
    deferred_t *d = deferred_new();
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_add_callbacks_full(d, tu_record_carg,
                                                 tu_carg(1, &cb), tu_carg_destroy,
                                                 tu_record_carg, tu_carg(2, &eb),
                                                 tu_carg_destroy), 0);
    ck_assert_int_eq(deferred_errback(d, user_failure(1)), 0);
    ck_assert_int_eq(cb, 1);
    ck_assert_int_eq(eb, 1);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(tu_log.e[0].tag, 2);
    take_failure_code(d, 1);
    deferred_unref(d);
}
END_TEST

/* ---------------------------------------------------------------- runner */

START_TEST(test_pair_exactly_one_half)
{
    deferred_t *a = deferred_new(), *b = deferred_new();
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(deferred_add_callbacks(a, tu_record, TAG(1), tu_record, TAG(2)), 0);
    ck_assert_int_eq(deferred_add_callbacks(b, tu_record, TAG(3), tu_record, TAG(4)), 0);
    ck_assert_int_eq(deferred_callback(a, deferred_value_int(1)), 0);
    ck_assert_int_eq(deferred_errback(b, user_failure(2)), 0);
    ck_assert_int_eq(tu_log.n, 2);
    ck_assert_int_eq(tu_log.e[0].tag, 1);
    ck_assert_int_eq(tu_log.e[1].tag, 4);
    ck_assert_int_eq(tu_log.e[1].code, 2);
    /* a callback half that fails does not run its own errback */
    ck_assert_int_eq(deferred_add_callbacks(a, tu_fail_with, TAG(3), tu_record,
                                            TAG(5)), 0);
    ck_assert_int_eq(tu_log.n, 2);
    ck_assert_int_eq(deferred_add_callbacks(a, tu_record, TAG(6), tu_record,
                                            TAG(7)), 0);
    ck_assert_int_eq(tu_log.n, 3);
    ck_assert_int_eq(tu_log.e[2].tag, 7);
    /* an errback half that recovers does not run its own callback */
    ck_assert_int_eq(deferred_add_callbacks(b, tu_record, TAG(8), tu_recover,
                                            TAG(9)), 0);
    ck_assert_int_eq(tu_log.n, 3);
    ck_assert_int_eq(result_int(b), 9);
    take_failure_code(a, 3);
    deferred_unref(a);
    deferred_unref(b);
}
END_TEST

START_TEST(test_skipping_by_kind)
{
    deferred_t *a = deferred_new(), *b = deferred_new();
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    /* value path: errbacks skipped, callbacks and both run */
    ck_assert_int_eq(deferred_add_errback(a, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_add_callback(a, tu_record, TAG(2)), 0);
    ck_assert_int_eq(deferred_add_both(a, tu_record, TAG(3)), 0);
    ck_assert_int_eq(deferred_add_errback(a, tu_record, TAG(4)), 0);
    /* failure path: callbacks skipped, errbacks and both run */
    ck_assert_int_eq(deferred_add_callback(b, tu_record, TAG(5)), 0);
    ck_assert_int_eq(deferred_add_errback(b, tu_record, TAG(6)), 0);
    ck_assert_int_eq(deferred_add_both(b, tu_record, TAG(7)), 0);
    ck_assert_int_eq(deferred_add_callback(b, tu_record, TAG(8)), 0);
    ck_assert_int_eq(deferred_callback(a, deferred_value_int(1)), 0);
    ck_assert_int_eq(deferred_errback(b, user_failure(2)), 0);
    ck_assert_int_eq(tu_log.n, 4);
    ck_assert_int_eq(tu_log.e[0].tag, 2);
    ck_assert_int_eq(tu_log.e[1].tag, 3);
    ck_assert_int_eq(tu_log.e[2].tag, 6);
    ck_assert_int_eq(tu_log.e[3].tag, 7);
    ck_assert_int_eq(tu_log.e[3].code, 2);
    take_failure_code(b, 2);
    deferred_unref(a);
    deferred_unref(b);
}
END_TEST

START_TEST(test_null_halves_pass_through)
{
    deferred_t *a = deferred_new(), *b = deferred_new();
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(deferred_add_callbacks(a, NULL, NULL, tu_recover, TAG(0)), 0);
    ck_assert_int_eq(deferred_add_callbacks(a, tu_add_one, NULL, NULL, NULL), 0);
    ck_assert_int_eq(deferred_add_callbacks(b, tu_add_one, NULL, NULL, NULL), 0);
    ck_assert_int_eq(deferred_add_callbacks(b, NULL, NULL, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_add_callbacks(a, NULL, NULL, NULL, NULL), -EINVAL);
    ck_assert_int_eq(deferred_callback(a, deferred_value_int(1)), 0);
    ck_assert_int_eq(result_int(a), 2);
    ck_assert_int_eq(deferred_errback(b, user_failure(3)), 0);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(tu_log.e[0].code, 3);
    take_failure_code(b, 3);
    deferred_unref(a);
    deferred_unref(b);
}
END_TEST

/* An errback that returns another failure: the next errback sees the new
 * one; one that returns a deferred makes the chain wait. */
static deferred_value_t replace_failure(deferred_value_t v, void *arg)
{
    deferred_failure_t *cause = deferred_value_take_failure(v);
    ck_assert_ptr_nonnull(cause);
    return deferred_value_failure(deferred_failure_wrap(cause, DEFERRED_DOMAIN_USER,
                                                        (int)ARGI(arg), "wrapped"));
}

static bool cause_found;
static deferred_value_t find_cause(deferred_value_t v, void *arg)
{
    cause_found = deferred_failure_find(deferred_value_get_failure(v),
                                        DEFERRED_DOMAIN_USER, (int)ARGI(arg)) != NULL;
    return v;
}

START_TEST(test_errback_replaces_and_chains)
{
    deferred_t *d = deferred_new(), *inner = deferred_new();
    deferred_value_t r;
    ck_assert_ptr_nonnull(d);
    ck_assert_ptr_nonnull(inner);
    ck_assert_int_eq(deferred_add_errback(d, replace_failure, TAG(20)), 0);
    ck_assert_int_eq(deferred_add_errback(d, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_add_errback(d, find_cause, TAG(10)), 0);
    ck_assert_int_eq(deferred_add_errback(d, tu_return_deferred, inner), 0);
    ck_assert_int_eq(deferred_add_both(d, tu_record, TAG(2)), 0);
    ck_assert_int_eq(deferred_errback(d, user_failure(10)), 0);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(tu_log.e[0].code, 20);
    ck_assert(cause_found);
    ck_assert(deferred_is_paused(d));
    ck_assert_int_eq(deferred_callback(inner, deferred_value_int(5)), 0);
    ck_assert_int_eq(tu_log.n, 2);
    ck_assert_int_eq(tu_log.e[1].kind, TU_VALUE);
    ck_assert_int_eq(tu_log.e[1].value, 5);
    r = deferred_result_take(d);
    ck_assert_int_eq(deferred_value_get_int(r), 5);
    deferred_unref(d);
    deferred_unref(inner);
    ck_assert_int_eq(tu_reports.total, 0);
}
END_TEST

/* Returning an already-failed deferred: the outer takes its failure. */
START_TEST(test_return_failed_deferred)
{
    deferred_t *outer = deferred_new(), *inner = deferred_fail(user_failure(31));
    ck_assert_ptr_nonnull(outer);
    ck_assert_ptr_nonnull(inner);
    ck_assert_int_eq(deferred_add_callback(outer, tu_return_deferred, inner), 0);
    ck_assert_int_eq(deferred_add_callback(outer, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_add_errback(outer, tu_record, TAG(2)), 0);
    ck_assert_int_eq(deferred_callback(outer, deferred_value_int(0)), 0);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(tu_log.e[0].tag, 2);
    ck_assert_int_eq(tu_log.e[0].code, 31);
    ck_assert(deferred_value_is_none(deferred_result(inner)));
    deferred_unref(inner);
    ck_assert_int_eq(tu_reports.total, 0);
    take_failure_code(outer, 31);
    deferred_unref(outer);
    ck_assert_int_eq(tu_reports.total, 0);
}
END_TEST

/* Returning a paused, unfired deferred: waits for fire and unpause. */
START_TEST(test_return_paused_unfired)
{
    deferred_t *outer = deferred_new(), *inner = deferred_new();
    ck_assert_ptr_nonnull(outer);
    ck_assert_ptr_nonnull(inner);
    ck_assert_int_eq(deferred_pause(inner), 0);
    ck_assert_int_eq(deferred_add_callback(outer, tu_return_deferred, inner), 0);
    ck_assert_int_eq(deferred_add_callback(outer, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_callback(outer, deferred_value_int(0)), 0);
    ck_assert_int_eq(deferred_callback(inner, deferred_value_int(3)), 0);
    ck_assert_int_eq(tu_log.n, 0);
    ck_assert(deferred_is_paused(outer));
    ck_assert_int_eq(deferred_unpause(inner), 0);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(tu_log.e[0].value, 3);
    deferred_unref(outer);
    deferred_unref(inner);
}
END_TEST

/* Returning a deferred that itself waits (fired, waiting on another):
 * Twisted test_resultOfDeferredResultOfDeferredOfFiredDeferredCalled. */
START_TEST(test_return_waiting_deferred)
{
    deferred_t *first = deferred_new(), *second = deferred_new(),
               *third = deferred_new();
    ck_assert_ptr_nonnull(first);
    ck_assert_ptr_nonnull(second);
    ck_assert_ptr_nonnull(third);
    ck_assert_int_eq(deferred_add_callback(first, tu_return_deferred, second), 0);
    ck_assert_int_eq(deferred_add_callback(first, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_add_callback(second, tu_return_deferred, third), 0);
    ck_assert_int_eq(deferred_add_callback(second, tu_add_one, NULL), 0);
    ck_assert_int_eq(deferred_callback(second, deferred_value_int(0)), 0);
    ck_assert(deferred_is_paused(second));
    ck_assert_int_eq(deferred_callback(first, deferred_value_int(0)), 0);
    ck_assert(deferred_is_paused(first));
    ck_assert_int_eq(tu_log.n, 0);
    /* a callback added to second while it waits runs before first's turn */
    ck_assert_int_eq(deferred_add_callback(second, tu_record, TAG(2)), 0);
    ck_assert_int_eq(deferred_callback(third, deferred_value_int(40)), 0);
    /* second ran add_one (41), then reached the point where first attached
     * (before record 2): first continues with 41, second is left empty */
    ck_assert_int_eq(tu_log.n, 2);
    ck_assert_int_eq(tu_log_count(1), 1);
    ck_assert_int_eq(tu_log_count(2), 1);
    ck_assert_int_eq(find_tag(1)->kind, TU_VALUE);
    ck_assert_int_eq(find_tag(1)->value, 41);
    ck_assert_int_eq(find_tag(2)->kind, TU_NONE);
    ck_assert_int_eq(result_int(first), 41);
    deferred_unref(first);
    deferred_unref(second);
    deferred_unref(third);
}
END_TEST

START_TEST(test_outer_freed_while_waiting)
{
    deferred_t *outer = deferred_new(), *inner = deferred_new();
    ck_assert_ptr_nonnull(outer);
    ck_assert_ptr_nonnull(inner);
    ck_assert_int_eq(deferred_add_callback(outer, tu_return_deferred, inner), 0);
    ck_assert_int_eq(deferred_add_callback(outer, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_callback(outer, deferred_value_int(0)), 0);
    deferred_unref(outer);
    /* the inner outlives the outer that waited on it */
    ck_assert_int_eq(deferred_add_callback(inner, tu_record, TAG(2)), 0);
    ck_assert_int_eq(deferred_callback(inner, tu_tracked(6)), 0);
    ck_assert_int_eq(tu_log_count(1), 0);
    ck_assert_int_eq(tu_log_count(2), 1);
    deferred_unref(inner);
    ck_assert_int_eq(tu_released, 1);
}
END_TEST

START_TEST(test_chain_to)
{
    deferred_t *d = deferred_new(), *t = deferred_new(), *e = deferred_new(),
               *te = deferred_new();
    ck_assert_ptr_nonnull(d);
    ck_assert_ptr_nonnull(te);
    ck_assert_int_eq(deferred_add_callback(d, tu_add_one, NULL), 0);
    ck_assert_int_eq(deferred_chain_to(d, t), 0);
    ck_assert_int_eq(deferred_add_both(d, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_add_both(t, tu_record, TAG(2)), 0);
    deferred_unref(t); /* d keeps target alive until it fires it */
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(1)), 0);
    ck_assert_int_eq(tu_log.n, 2);
    ck_assert_int_eq(tu_log.e[0].tag, 2);
    ck_assert_int_eq(tu_log.e[0].value, 2);
    ck_assert_int_eq(tu_log.e[1].tag, 1);
    ck_assert_int_eq(tu_log.e[1].kind, TU_NONE);
    deferred_unref(d);

    /* failure: the target fails; the source goes on with the empty value */
    ck_assert_int_eq(deferred_chain_to(e, te), 0);
    ck_assert_int_eq(deferred_add_callback(e, tu_record, TAG(3)), 0);
    ck_assert_int_eq(deferred_errback(e, user_failure(4)), 0);
    ck_assert_int_eq(tu_log.n, 3);
    ck_assert_int_eq(tu_log.e[2].kind, TU_NONE);
    ck_assert(deferred_has_fired(te));
    take_failure_code(te, 4);
    deferred_unref(te);
    deferred_unref(e);
    ck_assert_int_eq(tu_reports.total, 0);
}
END_TEST

START_TEST(test_chain_to_errors_and_unfired_drop)
{
    deferred_t *d = deferred_new(), *t = deferred_new();
    ck_assert_ptr_nonnull(d);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(deferred_chain_to(NULL, t), -EINVAL);
    ck_assert_int_eq(deferred_chain_to(d, NULL), -EINVAL);
    ck_assert_int_eq(deferred_chain_to(d, d), -EINVAL);
    ck_assert_int_eq(deferred_chain_to(d, t), 0);
    deferred_unref(t);
    deferred_unref(d); /* drops its reference on the unfired target */
    ck_assert_uint_eq(tu_live(), 0);
}
END_TEST

START_TEST(test_succeed_fail_constructors)
{
    deferred_t *s = deferred_succeed(tu_tracked(4));
    deferred_t *f;
    ck_assert_ptr_nonnull(s);
    ck_assert(deferred_has_fired(s));
    ck_assert(deferred_has_result(s));
    ck_assert(tu_is_tracked(deferred_result(s)));
    ck_assert_int_eq(deferred_add_callback(s, tu_add_one, NULL), 0);
    ck_assert_int_eq(result_int(s), 5);
    ck_assert_int_eq(tu_released, 1);
    ck_assert_int_eq(deferred_callback(s, deferred_value_int(1)), -EALREADY);
    deferred_unref(s);

    f = deferred_fail(user_failure(3));
    ck_assert_ptr_nonnull(f);
    ck_assert(deferred_has_fired(f));
    ck_assert(deferred_has_result(f));
    ck_assert(deferred_value_is_failure(deferred_result(f)));
    ck_assert_int_eq(deferred_add_errback(f, tu_record, TAG(1)), 0);
    ck_assert_int_eq(tu_log.e[0].code, 3);
    ck_assert_int_eq(deferred_errback(f, user_failure(5)), -EALREADY);
    take_failure_code(f, 3);
    deferred_unref(f);

    /* allocation failure: NULL, the value or failure released */
    tu_released = 0;
    {
        deferred_value_t v = tu_tracked(9);
        deferred_failure_t *ff = user_failure(9);
        tu_fail_from(1);
        ck_assert_ptr_null(deferred_succeed(v));
        ck_assert_ptr_null(deferred_fail(ff));
        tu_fail_at(0);
        ck_assert_int_eq(tu_released, 1);
    }
    ck_assert_int_eq(tu_reports.total, 0);
}
END_TEST

START_TEST(test_result_accessors)
{
    deferred_t *d = deferred_new();
    deferred_value_t v;
    ck_assert_ptr_nonnull(d);
    ck_assert(!deferred_has_fired(d));
    ck_assert(!deferred_has_result(d));
    ck_assert(!deferred_is_paused(d));
    ck_assert(deferred_value_is_none(deferred_result(d)));
    ck_assert(deferred_value_is_none(deferred_result_take(d)));
    ck_assert(deferred_value_is_none(deferred_result_take(NULL)));
    ck_assert_int_eq(deferred_callback(d, tu_tracked(3)), 0);
    ck_assert(deferred_has_fired(d));
    ck_assert(deferred_has_result(d));
    v = deferred_result(d);
    ck_assert(tu_is_tracked(v));
    ck_assert_int_eq(tu_tracked_get(v), 3);
    /* borrowed: still there */
    ck_assert(tu_is_tracked(deferred_result(d)));
    v = deferred_result_take(d);
    ck_assert(tu_is_tracked(v));
    ck_assert(deferred_value_is_none(deferred_result(d)));
    ck_assert(deferred_has_result(d));
    ck_assert_int_eq(tu_released, 0);
    deferred_value_release(v);
    ck_assert_int_eq(tu_released, 1);
    /* a callback added after the take sees the empty value */
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(1)), 0);
    ck_assert_int_eq(tu_log.e[0].kind, TU_NONE);
    /* pending callback while paused: no result */
    ck_assert_int_eq(deferred_pause(d), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_return_int, TAG(8)), 0);
    ck_assert(!deferred_has_result(d));
    ck_assert(deferred_has_fired(d));
    ck_assert_int_eq(deferred_unpause(d), 0);
    ck_assert(deferred_has_result(d));
    ck_assert_int_eq(result_int(d), 8);
    deferred_unref(d);
}
END_TEST

START_TEST(test_final_value_released_on_free)
{
    deferred_t *d = deferred_new();
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_callback(d, tu_tracked(1)), 0);
    ck_assert_int_eq(tu_released, 0);
    deferred_unref(d);
    ck_assert_int_eq(tu_released, 1);
}
END_TEST

START_TEST(test_pause_counting)
{
    deferred_t *d = deferred_new();
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_unpause(d), -EINVAL);
    ck_assert_int_eq(deferred_pause(d), 0);
    ck_assert_int_eq(deferred_pause(d), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(2)), 0);
    ck_assert_int_eq(tu_log.n, 0);
    ck_assert_int_eq(deferred_unpause(d), 0);
    ck_assert_int_eq(tu_log.n, 0);
    ck_assert(deferred_is_paused(d));
    ck_assert_int_eq(deferred_unpause(d), 0);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert(!deferred_is_paused(d));
    ck_assert_int_eq(deferred_unpause(d), -EINVAL);
    /* the count did not go below zero: one pause pauses */
    ck_assert_int_eq(deferred_pause(d), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(2)), 0);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(deferred_unpause(d), 0);
    ck_assert_int_eq(tu_log.n, 2);
    deferred_unref(d);
}
END_TEST

/* A stray unpause never releases a chain that waits. */
START_TEST(test_unpause_does_not_release_wait)
{
    deferred_t *outer = deferred_new(), *inner = deferred_new();
    ck_assert_ptr_nonnull(outer);
    ck_assert_ptr_nonnull(inner);
    ck_assert_int_eq(deferred_add_callback(outer, tu_return_deferred, inner), 0);
    ck_assert_int_eq(deferred_add_callback(outer, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_callback(outer, deferred_value_int(0)), 0);
    ck_assert(deferred_is_paused(outer));
    ck_assert_int_eq(deferred_unpause(outer), -EINVAL);
    ck_assert(deferred_is_paused(outer));
    ck_assert_int_eq(tu_log.n, 0);
    /* a pause on top of the wait: the inner's result waits for unpause */
    ck_assert_int_eq(deferred_pause(outer), 0);
    ck_assert_int_eq(deferred_callback(inner, deferred_value_int(2)), 0);
    ck_assert_int_eq(tu_log.n, 0);
    ck_assert_int_eq(deferred_unpause(outer), 0);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(tu_log.e[0].value, 2);
    deferred_unref(outer);
    deferred_unref(inner);
}
END_TEST

static void drop_value(void *p)
{
    (void)p;
    tu_released++;
}

START_TEST(test_null_arguments)
{
    size_t live;
    deferred_t *d = deferred_new();
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_add_callbacks(NULL, tu_pass, NULL, tu_pass, NULL), -EINVAL);
    ck_assert_int_eq(deferred_add_callback(NULL, tu_pass, NULL), -EINVAL);
    ck_assert_int_eq(deferred_add_errback(NULL, tu_pass, NULL), -EINVAL);
    ck_assert_int_eq(deferred_add_both(NULL, tu_pass, NULL), -EINVAL);
    ck_assert_int_eq(deferred_add_callback(d, NULL, NULL), -EINVAL);
    ck_assert_int_eq(deferred_add_errback(d, NULL, NULL), -EINVAL);
    ck_assert_int_eq(deferred_add_both(d, NULL, NULL), -EINVAL);
    ck_assert_int_eq(deferred_pause(NULL), -EINVAL);
    ck_assert_int_eq(deferred_unpause(NULL), -EINVAL);
    ck_assert_int_eq(deferred_cancel(NULL), -EINVAL);
    ck_assert_ptr_null(deferred_ref(NULL));
    deferred_unref(NULL);
    /* values given to failing calls are released */
    ck_assert_int_eq(deferred_callback(NULL, tu_tracked(1)), -EINVAL);
    ck_assert_int_eq(tu_released, 1);
    ck_assert_int_eq(deferred_callback(NULL, deferred_value_make(d, drop_value)),
                     -EINVAL);
    ck_assert_int_eq(tu_released, 2);
    live = tu_live();
    ck_assert_int_eq(deferred_errback(NULL, user_failure(1)), -EINVAL);
    ck_assert_uint_eq(tu_live(), live); /* the failure was released */
    ck_assert_int_eq(deferred_errback(d, NULL), -EINVAL);
    ck_assert(!deferred_has_fired(d));
    /* d still works */
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(1)), 0);
    ck_assert_int_eq(result_int(d), 1);
    deferred_unref(d);
}
END_TEST

START_TEST(test_fire_with_deferred_value)
{
    deferred_t *d = deferred_new(), *other = deferred_new();
    ck_assert_ptr_nonnull(d);
    ck_assert_ptr_nonnull(other);
    ck_assert_int_eq(deferred_callback(d, deferred_value_deferred(deferred_ref(other))),
                     -EINVAL);
    ck_assert(!deferred_has_fired(d));
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(3)), 0);
    ck_assert_int_eq(result_int(d), 3);
    /* on a fired deferred: -EALREADY or -EINVAL, the value released */
    {
        int rc = deferred_callback(d, deferred_value_deferred(deferred_ref(other)));
        ck_assert(rc == -EINVAL || rc == -EALREADY);
    }
    deferred_unref(d);
    deferred_unref(other); /* freed now: no reference was kept */
    ck_assert_uint_eq(tu_live(), 0);
}
END_TEST

/* A callback drops the last reference to its own deferred: the chain
 * keeps it alive until the pass returns, the rest of the chain runs, then
 * it is freed with its final value. */
static deferred_value_t unref_arg(deferred_value_t v, void *arg)
{
    deferred_unref((deferred_t *)arg);
    return v;
}

START_TEST(test_callback_drops_last_reference)
{
    int later = 0;
    deferred_t *d = deferred_new();
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_add_callback(d, unref_arg, d), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_add_one, NULL), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_add_callback_full(d, tu_record_carg,
                                                tu_carg(2, &later),
                                                tu_carg_destroy), 0);
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(1)), 0);
    ck_assert_int_eq(tu_log.n, 2);
    ck_assert_int_eq(tu_log.e[0].value, 2);
    ck_assert_int_eq(later, 1);
    ck_assert_uint_eq(tu_live(), 0);
}
END_TEST

/* The same while the chain is paused by a wait: the outer is dropped by its
 * own callback, before the inner fires. */
START_TEST(test_callback_drops_last_reference_then_waits)
{
    deferred_t *d = deferred_new(), *inner = deferred_new();
    ck_assert_ptr_nonnull(d);
    ck_assert_ptr_nonnull(inner);
    ck_assert_int_eq(deferred_add_callback(d, unref_arg, d), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_return_deferred, inner), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_callback(d, tu_tracked(1)), 0);
    /* d is gone (nobody holds it); its wait on inner is undone */
    ck_assert_int_eq(deferred_callback(inner, deferred_value_int(2)), 0);
    ck_assert_int_eq(tu_log_count(1), 0);
    deferred_unref(inner);
    ck_assert_int_eq(tu_released, 1);
}
END_TEST

/* A callback fires another deferred: its chain runs at once. */
static deferred_value_t fire_arg(deferred_value_t v, void *arg)
{
    int before = tu_log.n;
    ck_assert_int_eq(deferred_callback((deferred_t *)arg, deferred_value_int(50)), 0);
    ck_assert_int_eq(tu_log.n, before + 1);
    return v;
}

/* A callback fires its own deferred: -EALREADY. */
static int self_fire_rc;
static deferred_value_t fire_self(deferred_value_t v, void *arg)
{
    self_fire_rc = deferred_callback((deferred_t *)arg, tu_tracked(1));
    return v;
}

START_TEST(test_callback_fires_other_deferreds)
{
    deferred_t *a = deferred_new(), *b = deferred_new();
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(deferred_add_callback(b, tu_record, TAG(2)), 0);
    ck_assert_int_eq(deferred_add_callback(a, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_add_callback(a, fire_arg, b), 0);
    ck_assert_int_eq(deferred_add_callback(a, fire_self, a), 0);
    ck_assert_int_eq(deferred_add_callback(a, tu_record, TAG(3)), 0);
    ck_assert_int_eq(deferred_callback(a, deferred_value_int(1)), 0);
    ck_assert_int_eq(tu_log.n, 3);
    ck_assert_int_eq(tu_log.e[0].tag, 1);
    ck_assert_int_eq(tu_log.e[1].tag, 2);
    ck_assert_int_eq(tu_log.e[1].value, 50);
    ck_assert_int_eq(tu_log.e[2].tag, 3);
    ck_assert_int_eq(tu_log.e[2].value, 1);
    ck_assert_int_eq(self_fire_rc, -EALREADY);
    ck_assert_int_eq(tu_released, 1);
    deferred_unref(a);
    deferred_unref(b);
}
END_TEST

START_TEST(test_cancel_chain_of_waits_to_innermost)
{
    int c0 = 0, c1 = 0, c2 = 0;
    deferred_t *a = deferred_new_cancellable(tu_canceller_count, &c0, NULL);
    deferred_t *b = deferred_new_cancellable(tu_canceller_count, &c1, NULL);
    deferred_t *c = deferred_new_cancellable(tu_canceller_count, &c2, NULL);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_nonnull(c);
    ck_assert_int_eq(deferred_add_callback(a, tu_return_deferred, b), 0);
    ck_assert_int_eq(deferred_add_both(a, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_add_callback(b, tu_return_deferred, c), 0);
    ck_assert_int_eq(deferred_add_both(b, tu_record, TAG(2)), 0);
    ck_assert_int_eq(deferred_callback(b, deferred_value_int(0)), 0);
    ck_assert_int_eq(deferred_callback(a, deferred_value_int(0)), 0);
    ck_assert_int_eq(deferred_cancel(a), 0);
    ck_assert_int_eq(c0, 0);
    ck_assert_int_eq(c1, 0);
    ck_assert_int_eq(c2, 1);
    ck_assert_int_eq(tu_log.n, 2);
    ck_assert_int_eq(tu_log.e[0].tag, 2);
    ck_assert_int_eq(tu_log.e[0].code, ECANCELED);
    ck_assert_int_eq(tu_log.e[1].tag, 1);
    ck_assert_int_eq(tu_log.e[1].code, ECANCELED);
    take_failure_code(a, ECANCELED);
    deferred_unref(a);
    deferred_unref(b);
    deferred_unref(c);
    ck_assert_int_eq(tu_reports.total, 0);
}
END_TEST

/* The innermost has no canceller: it fails with ECANCELED, the outer sees
 * it, and the inner's next fire is swallowed. */
START_TEST(test_cancel_outer_inner_without_canceller)
{
    deferred_t *outer = deferred_new(), *inner = deferred_new();
    ck_assert_ptr_nonnull(outer);
    ck_assert_ptr_nonnull(inner);
    ck_assert_int_eq(deferred_add_callback(outer, tu_return_deferred, inner), 0);
    ck_assert_int_eq(deferred_add_errback(outer, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_callback(outer, deferred_value_int(0)), 0);
    ck_assert_int_eq(deferred_cancel(outer), 0);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(tu_log.e[0].code, ECANCELED);
    ck_assert_int_eq(deferred_callback(inner, tu_tracked(1)), 0);
    ck_assert_int_eq(tu_released, 1);
    ck_assert_int_eq(tu_log.n, 1);
    take_failure_code(outer, ECANCELED);
    deferred_unref(outer);
    deferred_unref(inner);
    ck_assert_int_eq(tu_reports.total, 0);
}
END_TEST

static deferred_t *canceller_seen_d;
static void canceller_record(deferred_t *d, void *arg)
{
    canceller_seen_d = d;
    (*(int *)arg)++;
}

START_TEST(test_canceller_does_not_fire)
{
    int cancels = 0;
    deferred_t *d = deferred_new_cancellable(canceller_record, &cancels, NULL);
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_add_errback(d, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_cancel(d), 0);
    ck_assert_int_eq(cancels, 1);
    ck_assert_ptr_eq(canceller_seen_d, d);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(tu_log.e[0].code, ECANCELED);
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(1)), -EALREADY);
    ck_assert_int_eq(deferred_errback(d, user_failure(1)), -EALREADY);
    take_failure_code(d, ECANCELED);
    deferred_unref(d);
}
END_TEST

static void canceller_errback(deferred_t *d, void *arg)
{
    (*(int *)arg)++;
    deferred_errback(d, user_failure(77));
}

START_TEST(test_cancel_after_canceller_fired)
{
    int cancels = 0, cancels2 = 0;
    deferred_t *d = deferred_new_cancellable(tu_canceller_fire, &cancels, NULL);
    deferred_t *e = deferred_new_cancellable(canceller_errback, &cancels2, NULL);
    ck_assert_ptr_nonnull(d);
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(deferred_cancel(d), 0);
    ck_assert_int_eq(deferred_cancel(d), 0);
    ck_assert_int_eq(cancels, 1);
    ck_assert_int_eq(result_int(d), 99);
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(1)), -EALREADY);
    ck_assert_int_eq(deferred_cancel(e), 0);
    ck_assert_int_eq(deferred_cancel(e), 0);
    ck_assert_int_eq(cancels2, 1);
    take_failure_code(e, 77);
    deferred_unref(d);
    deferred_unref(e);
}
END_TEST

/* Cancel a paused, unfired deferred: it fails, but nothing runs until it
 * is unpaused. */
START_TEST(test_cancel_paused)
{
    deferred_t *d = deferred_new();
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_pause(d), 0);
    ck_assert_int_eq(deferred_add_errback(d, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_cancel(d), 0);
    ck_assert(deferred_has_fired(d));
    ck_assert_int_eq(tu_log.n, 0);
    ck_assert_int_eq(deferred_unpause(d), 0);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(tu_log.e[0].code, ECANCELED);
    take_failure_code(d, ECANCELED);
    deferred_unref(d);
}
END_TEST

/* Many callbacks: the link array grows. */
START_TEST(test_many_callbacks)
{
    int i;
    deferred_t *d = deferred_new();
    ck_assert_ptr_nonnull(d);
    for (i = 0; i < 1000; i++)
        ck_assert_int_eq(deferred_add_callback(d, tu_add_one, NULL), 0);
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(0)), 0);
    ck_assert_int_eq(result_int(d), 1000);
    for (i = 0; i < 1000; i++)
        ck_assert_int_eq(deferred_add_callback(d, tu_add_one, NULL), 0);
    ck_assert_int_eq(result_int(d), 2000);
    deferred_unref(d);
}
END_TEST

/* A callback that returns a new deferred made inside it, fired later. */
static deferred_t *made_inside;
static deferred_value_t return_new(deferred_value_t v, void *arg)
{
    (void)arg;
    deferred_value_release(v);
    made_inside = deferred_new();
    return deferred_value_deferred(deferred_ref(made_inside));
}

START_TEST(test_return_new_deferred)
{
    deferred_t *d = deferred_new();
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_add_callback(d, return_new, NULL), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(0)), 0);
    ck_assert_ptr_nonnull(made_inside);
    deferred_unref(d); /* the chain is freed; made_inside lives on */
    ck_assert_int_eq(deferred_callback(made_inside, deferred_value_int(1)), 0);
    ck_assert_int_eq(tu_log.n, 0);
    deferred_unref(made_inside);
}
END_TEST

START_TEST(test_library_codes)
{
    ck_assert_str_eq(deferred_err_name(ECANCELED), "ECANCELED");
    ck_assert_str_eq(deferred_err_name(-ECANCELED), "ECANCELED");
    ck_assert_str_eq(deferred_err_name(ENOMEM), "ENOMEM");
    ck_assert_str_eq(deferred_err_name(-EALREADY), "EALREADY");
    ck_assert_str_eq(deferred_err_name(ETIMEDOUT), "ETIMEDOUT");
    ck_assert_str_eq(deferred_err_name(EDEADLK), "EDEADLK");
    ck_assert_str_eq(deferred_err_name(EINVAL), "EINVAL");
    ck_assert_ptr_nonnull(strstr(deferred_err_name(DEFERRED_EFIRSTERROR), "EFIRSTERROR"));
    ck_assert_ptr_nonnull(strstr(deferred_err_name(-DEFERRED_EFIRSTERROR), "EFIRSTERROR"));
    ck_assert_ptr_nonnull(strstr(deferred_err_name(DEFERRED_EGROUP), "EGROUP"));
    ck_assert_str_eq(deferred_err_name(987654), "EUNKNOWN");
    ck_assert_str_eq(deferred_err_name(-987654), "EUNKNOWN");

    ck_assert_ptr_nonnull(deferred_strerror(ECANCELED));
    ck_assert_uint_gt(strlen(deferred_strerror(ECANCELED)), 0);
    ck_assert_str_eq(deferred_strerror(ECANCELED), deferred_strerror(-ECANCELED));
    ck_assert_uint_gt(strlen(deferred_strerror(DEFERRED_EFIRSTERROR)), 0);
    ck_assert_str_eq(deferred_strerror(DEFERRED_EFIRSTERROR),
                     deferred_strerror(-DEFERRED_EFIRSTERROR));
    ck_assert_msg(strncmp(deferred_strerror(DEFERRED_EFIRSTERROR), "Unknown", 7) != 0,
                  "EFIRSTERROR has no message of its own: %s",
                  deferred_strerror(DEFERRED_EFIRSTERROR));
    ck_assert_str_ne(deferred_strerror(DEFERRED_EFIRSTERROR),
                     deferred_strerror(DEFERRED_EGROUP));
    /* A code outside the table gets a static text of its own. */
    ck_assert_str_eq(deferred_strerror(987654), "unknown error");
    ck_assert_str_eq(deferred_err_name(987654), "EUNKNOWN");
    ck_assert_ptr_nonnull(deferred_strerror(-987654));
    ck_assert_uint_gt(strlen(deferred_strerror(-987654)), 0);
    ck_assert_str_eq(deferred_version(), DEFERRED_VERSION_STRING);
}
END_TEST

/* The numeric version, at compile time and at run time. */
#if !DEFERRED_CHECK_VERSION(0, 1, 0) || DEFERRED_CHECK_VERSION(99, 0, 0)
#error "DEFERRED_CHECK_VERSION is wrong"
#endif
START_TEST(test_version_number)
{
    char s[32];

    ck_assert_uint_eq(deferred_version_number(), DEFERRED_VERSION_NUMBER);
    snprintf(s, sizeof s, "%lu.%lu.%lu", deferred_version_number() >> 16,
             (deferred_version_number() >> 8) & 0xff,
             deferred_version_number() & 0xff);
    ck_assert_str_eq(s, deferred_version());
    ck_assert(DEFERRED_CHECK_VERSION(DEFERRED_VERSION_MAJOR, DEFERRED_VERSION_MINOR,
                                     DEFERRED_VERSION_PATCH));
    ck_assert(!DEFERRED_CHECK_VERSION(DEFERRED_VERSION_MAJOR, DEFERRED_VERSION_MINOR,
                                      DEFERRED_VERSION_PATCH + 1));
}
END_TEST

START_TEST(test_set_allocator_partial_einval)
{
    deferred_failure_t *f;
    ck_assert_int_eq(deferred_set_allocator(malloc, NULL, free), -EINVAL);
    ck_assert_int_eq(deferred_set_allocator(NULL, realloc, NULL), -EINVAL);
    /* the counting allocator is still the one in use */
    f = user_failure(1);
    ck_assert_uint_gt(tu_live(), 0);
    deferred_failure_unref(f);
    ck_assert_uint_eq(tu_live(), 0);
}
END_TEST

/* Capture what is written to stderr between stderr_begin() and
 * stderr_end(), which returns it NUL-terminated in out (its length). */
struct stderr_capture {
    int fds[2];
    int saved;
};

static void stderr_begin(struct stderr_capture *c)
{
    ck_assert_int_eq(pipe(c->fds), 0);
    fflush(stderr);
    c->saved = dup(2);
    dup2(c->fds[1], 2);
}

static ssize_t stderr_end(struct stderr_capture *c, char *out, size_t size)
{
    ssize_t n;

    fflush(stderr);
    dup2(c->saved, 2);
    close(c->saved);
    close(c->fds[1]);
    n = read(c->fds[0], out, size - 1);
    close(c->fds[0]);
    ck_assert_int_gt(n, 0);
    out[n] = '\0';
    return n;
}

/* The default report hook writes one line to stderr, the whole story on it. */
START_TEST(test_default_hook_one_line)
{
    struct stderr_capture cap;
    char out[2048];
    ssize_t n;
    deferred_t *d = deferred_new();
    deferred_failure_t *f = deferred_failure_new(DEFERRED_DOMAIN_USER, 3, "bad row");

    deferred_failure_add_context(f, "stage one", "item %d", 4);
    stderr_begin(&cap);
    deferred_set_report_hook(NULL, NULL);
    deferred_errback(d, deferred_failure_wrap(f, DEFERRED_DOMAIN_LIBRARY, EIO, "outer"));
    deferred_unref(d);
    n = stderr_end(&cap, out, sizeof out);
    ck_assert_ptr_nonnull(strstr(out, "unhandled failure"));
    ck_assert_ptr_nonnull(strstr(out, "outer"));
    ck_assert_ptr_nonnull(strstr(out, "bad row"));
    ck_assert_ptr_nonnull(strstr(out, "in stage one: item 4"));
    ck_assert_ptr_eq(strchr(out, '\n'), out + n - 1); /* one line */
}
END_TEST

/* Debug mode: a fire after a cancel names the cancel's site as the first
 * fire; the ECANCELED failure was made there too. */
START_TEST(test_debug_cancel_site)
{
    deferred_t *d;
    int cancel_line;

    deferred_set_debug(true);
    d = deferred_new_cancellable(tu_canceller_count, &tu_fail_calls, NULL);
    deferred_add_errback(d, tu_record, TAG(1));
    cancel_line = __LINE__ + 1;
    deferred_cancel(d);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(deferred_failure_line(tu_log.e[0].failure), cancel_line);
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(1)), -EALREADY);
    ck_assert_int_eq(tu_reports.already_fired, 1);
    ck_assert(tu_contains_number(tu_reports.last_message, cancel_line));
    ck_assert_ptr_nonnull(strstr(tu_reports.last_message, "test-core.c"));
    ck_assert_ptr_null(strstr(tu_reports.last_message, "lib/core/"));
    /* The function form works too. */
    ck_assert_int_eq((deferred_cancel)(NULL), -EINVAL);
    deferred_unref(d);
}
END_TEST

/* Debug mode: the unhandled-failure report names the deferred's creation
 * and fire sites, through the hook and in the default hook's line. */
START_TEST(test_debug_report_sites)
{
    struct stderr_capture cap;
    int made, fired;
    char out[2048], want[64];
    deferred_t *d;

    deferred_set_debug(true);
    made = __LINE__ + 1;
    d = deferred_new();
    fired = __LINE__ + 1;
    deferred_errback(d, deferred_failure_new(DEFERRED_DOMAIN_USER, 3, "lost"));
    deferred_unref(d);
    ck_assert_int_eq(tu_reports.unhandled, 1);
    ck_assert_ptr_nonnull(tu_reports.last_new_file);
    ck_assert_ptr_nonnull(strstr(tu_reports.last_new_file, "test-core.c"));
    ck_assert_int_eq(tu_reports.last_new_line, made);
    ck_assert_ptr_nonnull(strstr(tu_reports.last_fire_file, "test-core.c"));
    ck_assert_int_eq(tu_reports.last_fire_line, fired);

    /* the default hook says it too */
    stderr_begin(&cap);
    deferred_set_report_hook(NULL, NULL);
    made = __LINE__ + 1;
    d = deferred_new();
    fired = __LINE__ + 1;
    deferred_errback(d, deferred_failure_new(DEFERRED_DOMAIN_USER, 3, "lost"));
    deferred_unref(d);
    stderr_end(&cap, out, sizeof out);
    snprintf(want, sizeof want, "test-core.c:%d, fired at", made);
    ck_assert_ptr_nonnull(strstr(out, want));
    snprintf(want, sizeof want, "test-core.c:%d)", fired);
    ck_assert_ptr_nonnull(strstr(out, want));

    /* without debug mode there are no sites */
    deferred_set_report_hook(tu_report_hook, NULL);
    deferred_set_debug(false);
    d = deferred_fail(deferred_failure_new(DEFERRED_DOMAIN_USER, 3, "lost"));
    deferred_unref(d);
    ck_assert_int_eq(tu_reports.unhandled, 2);
    ck_assert_ptr_null(tu_reports.last_new_file);
    ck_assert_ptr_null(tu_reports.last_fire_file);
}
END_TEST

/* The pause count, waiting apart from pausing, what a deferred waits on. */
START_TEST(test_pause_count_and_waiting)
{
    deferred_t *d = deferred_new(), *inner = deferred_new();

    ck_assert_uint_eq(deferred_pause_count(d), 0);
    deferred_pause(d);
    deferred_pause(d);
    ck_assert_uint_eq(deferred_pause_count(d), 2);
    ck_assert(deferred_is_paused(d));
    ck_assert(!deferred_is_waiting(d));
    deferred_add_callback(d, tu_return_deferred, inner);
    deferred_callback(d, deferred_value_int(1));
    ck_assert(!deferred_is_waiting(d)); /* paused: the callback has not run */
    deferred_unpause(d);
    deferred_unpause(d);
    ck_assert_uint_eq(deferred_pause_count(d), 0);
    ck_assert(deferred_is_waiting(d));
    ck_assert(deferred_is_paused(d)); /* it will not run now */
    ck_assert_ptr_eq(deferred_waits_on(d), inner);
    ck_assert_int_eq(deferred_unpause(d), -EINVAL); /* waiting is no pause */
    deferred_callback(inner, deferred_value_int(7));
    ck_assert(!deferred_is_waiting(d));
    ck_assert_ptr_null(deferred_waits_on(d));
    ck_assert_int_eq(deferred_value_get_int(deferred_result(d)), 7);
    ck_assert_uint_eq(deferred_pause_count(NULL), 0);
    ck_assert(!deferred_is_waiting(NULL));
    ck_assert_ptr_null(deferred_waits_on(NULL));
    deferred_unref(d);
    deferred_unref(inner);
}
END_TEST

/* maybeDeferred: a value, a failure or a deferred comes back as a
 * deferred. */
START_TEST(test_maybe)
{
    deferred_t *d, *inner = deferred_new();

    d = deferred_maybe(tu_add_one, deferred_value_int(41), NULL);
    ck_assert(deferred_has_result(d));
    ck_assert_int_eq(deferred_value_get_int(deferred_result(d)), 42);
    deferred_unref(d);
    d = deferred_maybe(tu_fail_with, deferred_value_int(0), TAG(9));
    ck_assert(deferred_value_is_failure(deferred_result(d)));
    ck_assert_int_eq(deferred_failure_code(deferred_value_get_failure(deferred_result(d))), 9);
    deferred_value_release(deferred_result_take(d));
    deferred_unref(d);
    d = deferred_maybe(tu_return_deferred, deferred_value_none(), inner);
    ck_assert_ptr_eq(d, inner);
    deferred_unref(d);
    errno = 0;
    ck_assert_ptr_null(deferred_maybe(NULL, tu_tracked(1), NULL));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(tu_released, 1);
    {
        deferred_value_t v = tu_tracked(2);

        tu_fail_at(1);
        ck_assert_ptr_null(deferred_maybe(tu_pass, v, NULL));
    }
    ck_assert_int_eq(errno, ENOMEM);
    ck_assert_int_eq(tu_released, 2);
    deferred_unref(inner);
}
END_TEST

/* Integers are not "none": 0 travels as 0. */
START_TEST(test_int_zero_is_not_none)
{
    deferred_t *d = deferred_new();

    deferred_add_callback(d, tu_record, TAG(1));
    deferred_callback(d, deferred_value_int(0));
    ck_assert_int_eq(tu_log.e[0].kind, TU_VALUE);
    ck_assert(deferred_value_is_int(deferred_result(d)));
    ck_assert(!deferred_value_is_none(deferred_result(d)));
    ck_assert_int_eq(deferred_value_get_int(deferred_result(d)), 0);
    deferred_unref(d);
}
END_TEST

static Suite *core_suite(void)
{
    Suite *s = suite_create("core");
    TCase *tc = tcase_create("P");
    TCase *big = tcase_create("P13");
    TCase *rn = tcase_create("runner");

    tcase_add_checked_fixture(tc, tu_setup, tu_teardown);
    tcase_add_checked_fixture(big, tu_setup, tu_teardown);
    tcase_add_checked_fixture(rn, tu_setup, tu_teardown);
    tcase_set_timeout(big, 300);

    tcase_add_test(tc, test_P01_add_callback_result);
    tcase_add_test(tc, test_P02_callback_fails_skips_to_errback);
    tcase_add_test(tc, test_P03_errback_recovers);
    tcase_add_test(tc, test_P04_add_both_sees_value_and_failure);
    tcase_add_test(tc, test_P05_add_to_fired_runs_at_once);
    tcase_add_test(tc, test_P06_second_failing_callback_skipped);
    tcase_add_test(tc, test_P07_pause_after_fire);
    tcase_add_test(tc, test_P08_pause_unpause_unfired);
    tcase_add_test(tc, test_P09_chaining_async);
    tcase_add_test(tc, test_P10_chaining_sync);
    tcase_add_test(tc, test_P11_chaining_paused_inner);
    tcase_add_test(tc, test_P12_chaining_three_levels);
    tcase_add_test(big, test_P13_million_chain_fire);
    tcase_add_test(big, test_P13_million_chain_free);
    tcase_add_test(big, test_P13_million_chain_cancel);
    tcase_add_test(tc, test_P14_return_self_edeadlk);
    tcase_add_test(tc, test_P15_double_fire);
    tcase_add_test(tc, test_P15_double_fire_debug_sites);
    tcase_add_test(tc, test_P16_cancel_without_canceller);
    tcase_add_test(tc, test_P17_canceller_fires_value);
    tcase_add_test(tc, test_P18_cancel_twice_canceller_once);
    tcase_add_test(tc, test_P19_cancel_after_fire);
    tcase_add_test(tc, test_P20_cancel_goes_to_inner);
    tcase_add_test(tc, test_P21_unhandled_reported_once);
    tcase_add_test(tc, test_P21_handled_not_reported);
    tcase_add_test(tc, test_P22_add_during_run);
    tcase_add_test(tc, test_P23_destroy_functions);

    tcase_add_test(rn, test_chaining_three_levels_outer_first);
    tcase_add_test(rn, test_cancel_without_canceller_swallows_errback);
    tcase_add_test(rn, test_unhandled_moved_reported_once_for_outer);
    tcase_add_test(rn, test_unhandled_chain_to_moves_failure);
    tcase_add_test(rn, test_unhandled_fail_constructor);
    tcase_add_test(rn, test_reentrant_add_then_fail);
    tcase_add_test(rn, test_destroy_after_errback_path);
    tcase_add_test(rn, test_pair_exactly_one_half);
    tcase_add_test(rn, test_skipping_by_kind);
    tcase_add_test(rn, test_null_halves_pass_through);
    tcase_add_test(rn, test_errback_replaces_and_chains);
    tcase_add_test(rn, test_return_failed_deferred);
    tcase_add_test(rn, test_return_paused_unfired);
    tcase_add_test(rn, test_return_waiting_deferred);
    tcase_add_test(rn, test_outer_freed_while_waiting);
    tcase_add_test(rn, test_chain_to);
    tcase_add_test(rn, test_chain_to_errors_and_unfired_drop);
    tcase_add_test(rn, test_succeed_fail_constructors);
    tcase_add_test(rn, test_result_accessors);
    tcase_add_test(rn, test_final_value_released_on_free);
    tcase_add_test(rn, test_pause_counting);
    tcase_add_test(rn, test_unpause_does_not_release_wait);
    tcase_add_test(rn, test_null_arguments);
    tcase_add_test(rn, test_fire_with_deferred_value);
    tcase_add_test(rn, test_callback_drops_last_reference);
    tcase_add_test(rn, test_callback_drops_last_reference_then_waits);
    tcase_add_test(rn, test_callback_fires_other_deferreds);
    tcase_add_test(rn, test_cancel_chain_of_waits_to_innermost);
    tcase_add_test(rn, test_cancel_outer_inner_without_canceller);
    tcase_add_test(rn, test_canceller_does_not_fire);
    tcase_add_test(rn, test_cancel_after_canceller_fired);
    tcase_add_test(rn, test_cancel_paused);
    tcase_add_test(rn, test_many_callbacks);
    tcase_add_test(rn, test_return_new_deferred);
    tcase_add_test(rn, test_library_codes);
    tcase_add_test(rn, test_default_hook_one_line);
    tcase_add_test(rn, test_debug_cancel_site);
    tcase_add_test(rn, test_version_number);
    tcase_add_test(rn, test_debug_report_sites);
    tcase_add_test(rn, test_pause_count_and_waiting);
    tcase_add_test(rn, test_maybe);
    tcase_add_test(rn, test_int_zero_is_not_none);
    tcase_add_test(rn, test_set_allocator_partial_einval);

    suite_add_tcase(s, tc);
    suite_add_tcase(s, big);
    suite_add_tcase(s, rn);
    return s;
}

int main(void)
{
    return tu_run_suite(core_suite());
}
