/*
 * test-core-cancel.c: the deferred core, cancellation: without a
 * canceller (P16), cancellers (P17, P18), cancel after fire (P19),
 * cancel going to the inner a deferred waits on (P20), chains of waits,
 * paused deferreds, and the cancel site in debug mode.
 *
 * The tests named test_Pnn_... show the P scenarios of docs/scenarios.md;
 * the core's tests are split over t/test-core-chain.c,
 * t/test-core-pause-chaining.c, t/test-core-cancel.c and
 * t/test-core-report.c.  Every test runs inside the checked fixture of
 * testutil.c, whose teardown asserts that no block allocated through the
 * library's allocator is alive: each test also proves that nothing leaks.
 */
#include "core-util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
    ck_assert_ptr_nonnull(strstr(tu_reports.last_message, "test-core-cancel.c"));
    ck_assert_ptr_null(strstr(tu_reports.last_message, "lib/core/"));
    /* The function form works too. */
    ck_assert_int_eq((deferred_cancel)(NULL), -EINVAL);
    deferred_unref(d);
}
END_TEST

static Suite *core_suite(void)
{
    Suite *s = suite_create("core-cancel");
    TCase *tc = tcase_create("P");
    TCase *rn = tcase_create("runner");

    tcase_add_checked_fixture(tc, tu_setup, tu_teardown);
    tcase_add_checked_fixture(rn, tu_setup, tu_teardown);

    tcase_add_test(tc, test_P16_cancel_without_canceller);
    tcase_add_test(tc, test_P17_canceller_fires_value);
    tcase_add_test(tc, test_P18_cancel_twice_canceller_once);
    tcase_add_test(tc, test_P19_cancel_after_fire);
    tcase_add_test(tc, test_P20_cancel_goes_to_inner);
    tcase_add_test(rn, test_cancel_without_canceller_swallows_errback);
    tcase_add_test(rn, test_cancel_chain_of_waits_to_innermost);
    tcase_add_test(rn, test_cancel_outer_inner_without_canceller);
    tcase_add_test(rn, test_canceller_does_not_fire);
    tcase_add_test(rn, test_cancel_after_canceller_fired);
    tcase_add_test(rn, test_cancel_paused);
    tcase_add_test(rn, test_debug_cancel_site);

    suite_add_tcase(s, tc);
    suite_add_tcase(s, rn);
    return s;
}

int main(void)
{
    return tu_run_suite(core_suite());
}
