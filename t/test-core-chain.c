/*
 * test-core-chain.c: the deferred core, the chain: callbacks, errbacks
 * and both (P01 to P06), adds while the chain runs (P22), destroy
 * functions (P23), and the branches of the chain runner: which half of a
 * pair runs, skipping by kind, NULL halves, a callback firing, dropping
 * or returning deferreds.
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

/* The runner keeps a chain's plain callbacks in registers while they run
 * one after another; a callback that changes its own deferred's chain
 * makes it look again.  Two entries inline, the first adds one: the chain
 * is compacted (the entry that follows moves to the front), and the added
 * callback still runs after it. */
static deferred_value_t add_tag3(deferred_value_t v, void *arg)
{
    ck_assert_int_eq(deferred_add_callback(arg, tu_record, TAG(3)), 0);
    return v;
}

START_TEST(test_add_during_run_compacts)
{
    deferred_t *d = deferred_new();
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_add_callback(d, add_tag3, d), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(2)), 0);
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(4)), 0);
    ck_assert_int_eq(tu_log.n, 2);
    ck_assert_int_eq(tu_log.e[0].tag, 2);
    ck_assert_int_eq(tu_log.e[1].tag, 3);
    ck_assert_int_eq(tu_log.e[1].value, 4);
    deferred_unref(d);
}
END_TEST

/* A full heap block of entries, the first adds two: the chain moves to a
 * bigger block (the old one freed) while the runner is in it; the rest
 * run from the new block, in order (AddressSanitizer and valgrind see a
 * runner that kept reading the old one). */
static deferred_value_t add_two(deferred_value_t v, void *arg)
{
    ck_assert_int_eq(deferred_add_callback(arg, tu_record, TAG(20)), 0);
    ck_assert_int_eq(deferred_add_callback(arg, tu_record, TAG(21)), 0);
    return v;
}

START_TEST(test_add_during_run_moves_block)
{
    deferred_t *d = deferred_new();
    int i;

    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_add_callback(d, add_two, d), 0);
    for (i = 1; i < 12; i++)
        ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(i)), 0);
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(0)), 0);
    ck_assert_int_eq(tu_log.n, 13);
    for (i = 1; i < 12; i++)
        ck_assert_int_eq(tu_log.e[i - 1].tag, i);
    ck_assert_int_eq(tu_log.e[11].tag, 20);
    ck_assert_int_eq(tu_log.e[12].tag, 21);
    deferred_unref(d);
}
END_TEST

/* A callback pauses its own deferred: the plain callbacks after it wait
 * for the unpause. */
static deferred_value_t pause_self(deferred_value_t v, void *arg)
{
    ck_assert_int_eq(deferred_pause(arg), 0);
    return v;
}

START_TEST(test_callback_pauses_own_deferred)
{
    deferred_t *d = deferred_new();
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_add_callback(d, pause_self, d), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_add_one, NULL), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(2)), 0);
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(5)), 0);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert(deferred_is_paused(d));
    ck_assert(!deferred_has_result(d));
    ck_assert_int_eq(deferred_unpause(d), 0);
    ck_assert_int_eq(tu_log.n, 2);
    ck_assert_int_eq(tu_log.e[1].tag, 2);
    ck_assert_int_eq(tu_log.e[1].value, 6);
    ck_assert_int_eq(result_int(d), 6);
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

/*
 * A chain of plain callbacks writes no kind bytes; the first entry of
 * another kind after them makes the chain keep its kinds from then on.
 * For chains of every size around the inline entries and the heap
 * blocks' sizes: lead plain callbacks, then an errback, a both, a
 * recovering errback and trail plain callbacks (across the next block
 * too), fired with a value and with a failure.  Each entry must run or be
 * skipped by its own kind.
 */
static void kinds_chain(deferred_t *d, int lead, int trail)
{
    int k;

    for (k = 0; k < lead; k++)
        ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(1000 + k)), 0);
    ck_assert_int_eq(deferred_add_errback(d, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_add_both(d, tu_record, TAG(2)), 0);
    ck_assert_int_eq(deferred_add_errback(d, tu_recover, TAG(7)), 0);
    for (k = 0; k < trail; k++)
        ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(2000 + k)), 0);
}

START_TEST(test_kinds_kept_after_plain_callbacks)
{
    static const int leads[] = {0, 1, 2, 3, 4, 5, 6, 11, 12, 13, 25, 40};
    size_t t;

    for (t = 0; t < sizeof leads / sizeof leads[0]; t++) {
        int lead = leads[t], trail = 14, k, at = 0;
        deferred_t *v = deferred_new(), *f = deferred_new();

        ck_assert_ptr_nonnull(v);
        ck_assert_ptr_nonnull(f);
        kinds_chain(v, lead, trail);
        kinds_chain(f, lead, trail);

        tu_log_reset();
        ck_assert_int_eq(deferred_callback(v, deferred_value_int(5)), 0);
        ck_assert_int_eq(tu_log.n, lead + 1 + trail);
        for (k = 0; k < lead; k++, at++) {
            ck_assert_int_eq(tu_log.e[at].tag, 1000 + k);
            ck_assert_int_eq(tu_log.e[at].value, 5);
        }
        ck_assert_int_eq(tu_log.e[at].tag, 2); /* the errback skipped */
        ck_assert_int_eq(tu_log.e[at].kind, TU_VALUE);
        for (at++, k = 0; k < trail; k++, at++) {
            ck_assert_int_eq(tu_log.e[at].tag, 2000 + k);
            ck_assert_int_eq(tu_log.e[at].value, 5);
        }
        ck_assert_int_eq(result_int(v), 5);

        tu_log_reset();
        ck_assert_int_eq(deferred_errback(f, user_failure(9)), 0);
        ck_assert_int_eq(tu_log.n, 2 + trail);
        ck_assert_int_eq(tu_log.e[0].tag, 1); /* the lead callbacks skipped */
        ck_assert_int_eq(tu_log.e[0].code, 9);
        ck_assert_int_eq(tu_log.e[1].tag, 2);
        ck_assert_int_eq(tu_log.e[1].code, 9);
        for (k = 0; k < trail; k++) {
            ck_assert_int_eq(tu_log.e[2 + k].tag, 2000 + k);
            ck_assert_int_eq(tu_log.e[2 + k].value, 7); /* recovered */
        }
        ck_assert_int_eq(result_int(f), 7);
        deferred_unref(v);
        deferred_unref(f);
    }
}
END_TEST

/* Kinds move with their entries: a chain paused by its first entry (a
 * both) is compacted when entries are added to its full inline entries,
 * then grows into a heap block; the failure it was fired with still skips
 * the callback and reaches the errbacks. */
START_TEST(test_kinds_move_with_compacted_entries)
{
    deferred_t *d = deferred_new();

    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_add_both(d, pause_self, d), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(8)), 0);
    ck_assert_int_eq(deferred_add_errback(d, tu_record, TAG(9)), 0);
    ck_assert_int_eq(deferred_errback(d, user_failure(4)), 0);
    ck_assert(deferred_is_paused(d));
    ck_assert_int_eq(tu_log.n, 0);
    /* The run is over: the paused chain's consumed entry is compacted
     * away for this one, then the chain spills. */
    ck_assert_int_eq(deferred_add_errback(d, tu_recover, TAG(7)), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(10)), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(11)), 0);
    ck_assert_int_eq(deferred_unpause(d), 0);
    ck_assert_int_eq(tu_log.n, 3);
    ck_assert_int_eq(tu_log.e[0].tag, 9);
    ck_assert_int_eq(tu_log.e[0].code, 4);
    ck_assert_int_eq(tu_log.e[1].tag, 10);
    ck_assert_int_eq(tu_log.e[1].value, 7);
    ck_assert_int_eq(tu_log.e[2].tag, 11);
    ck_assert_int_eq(result_int(d), 7);
    deferred_unref(d);
}
END_TEST

/* A plain callback of a chain of plain callbacks adds an errback and a
 * callback to its own deferred (the chain keeps its kinds from then on,
 * and grows out of its inline entries while it runs), then fails: the
 * plain callback after it and the one it added are skipped, the errback
 * it added runs. */
static deferred_value_t add_kinds_then_fail(deferred_value_t v, void *arg)
{
    deferred_t *d = arg;

    ck_assert_int_eq(deferred_add_errback(d, tu_record, TAG(31)), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(32)), 0);
    return tu_fail_with(v, TAG(12));
}

START_TEST(test_kinds_kept_from_inside_a_plain_run)
{
    deferred_t *d = deferred_new();

    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(29)), 0);
    ck_assert_int_eq(deferred_add_callback(d, add_kinds_then_fail, d), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(30)), 0);
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(1)), 0);
    ck_assert_int_eq(tu_log.n, 2);
    ck_assert_int_eq(tu_log.e[0].tag, 29);
    ck_assert_int_eq(tu_log.e[1].tag, 31);
    ck_assert_int_eq(tu_log.e[1].code, 12);
    take_failure_code(d, 12);
    deferred_unref(d);
}
END_TEST

/* A chain with other kinds that ran to its end is a chain of plain
 * callbacks again: entries stored later on the fired deferred (paused, so
 * they wait) run or are skipped by their own kinds. */
START_TEST(test_kinds_after_the_chain_emptied)
{
    deferred_t *d = deferred_new();

    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_add_errback(d, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_add_both(d, tu_record, TAG(2)), 0);
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(3)), 0);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(deferred_pause(d), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(4)), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_fail_with, TAG(9)), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(5)), 0);
    ck_assert_int_eq(deferred_add_errback(d, tu_record, TAG(6)), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(7)), 0);
    ck_assert_int_eq(deferred_unpause(d), 0);
    ck_assert_int_eq(tu_log.n, 3);
    ck_assert_int_eq(tu_log.e[1].tag, 4);
    ck_assert_int_eq(tu_log.e[1].value, 3);
    ck_assert_int_eq(tu_log.e[2].tag, 6);
    ck_assert_int_eq(tu_log.e[2].code, 9);
    take_failure_code(d, 9);
    deferred_unref(d);
}
END_TEST

/* A callback that adds tu_record (tag 7) to the deferred arg: a plain
 * callback, which changes no flag of a chain of plain callbacks but the
 * one that tells a runner under way. */
static deferred_value_t add_record_to(deferred_value_t v, void *arg)
{
    ck_assert_int_eq(deferred_add_callback(arg, tu_record, TAG(7)), 0);
    return v;
}

/* A callback that returns a deferred failed with ARGI(arg). */
static deferred_value_t return_failed(deferred_value_t v, void *arg)
{
    deferred_value_release(v);
    return deferred_value_deferred(deferred_fail(user_failure((int)ARGI(arg))));
}

/*
 * An entry that a callback run at once (the header's inline run of an add
 * to a fired idle deferred, or the library's) adds to its own deferred
 * runs, whatever calls came before: a pause and unpause of the fired
 * deferred, a pause across the fire, or an entry run at once by the
 * library (a pair, an errback skipped on a value, a pair whose errback
 * returned a fired deferred) each once left a flag set that hid the add
 * from the inline run, which then ended the run with the entry in the
 * chain, never run, and the deferred never again had its result.
 * (Found by fuzz/fuzz-chain.c.)
 */
START_TEST(test_inline_run_sees_an_add_after_any_call)
{
    for (int before = 0; before < 6; before++) {
        for (int form = 0; form < 3; form++) {
            deferred_t *d = before == 1 ? deferred_new() : deferred_succeed(deferred_value_int(1));
            int rc;

            ck_assert_ptr_nonnull(d);
            tu_log_reset();
            switch (before) {
            case 0:
                ck_assert_int_eq(deferred_pause(d), 0);
                ck_assert_int_eq(deferred_unpause(d), 0);
                break;
            case 1:
                ck_assert_int_eq(deferred_pause(d), 0);
                ck_assert_int_eq(deferred_callback(d, deferred_value_int(1)), 0);
                ck_assert_int_eq(deferred_unpause(d), 0);
                break;
            case 2:
                ck_assert_int_eq(deferred_add_callbacks(d, tu_pass, NULL, tu_pass, NULL), 0);
                break;
            case 3:
                ck_assert_int_eq(deferred_add_errback(d, tu_pass, NULL), 0);
                break;
            case 4:
                ck_assert_int_eq(deferred_add_callbacks(d, return_failed, TAG(5), NULL, NULL), 0);
                ck_assert_int_eq(deferred_add_callbacks(d, NULL, NULL, return_failed, TAG(6)), 0);
                ck_assert_int_eq(deferred_add_errback(d, tu_recover, TAG(1)), 0);
                break;
            default:
                ck_assert_int_eq(deferred_add_both(d, tu_pass, NULL), 0);
                break;
            }
            ck_assert(deferred_has_result(d));
            /* The header's inline code, the function, and the function
             * of a both. */
            if (form == 0)
                rc = deferred_add_callback(d, add_record_to, d);
            else if (form == 1)
                rc = (deferred_add_callback)(d, add_record_to, d);
            else
                rc = deferred_add_both(d, add_record_to, d);
            ck_assert_int_eq(rc, 0);
            ck_assert_msg(tu_log.n == 1, "before %d, form %d: the added entry ran %d times",
                          before, form, tu_log.n);
            ck_assert_int_eq(tu_log.e[0].tag, 7);
            ck_assert_int_eq(tu_log.e[0].value, 1);
            ck_assert(deferred_has_result(d));
            ck_assert_int_eq(result_int(d), 1);
            deferred_unref(d);
        }
    }
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


/* ---- the deferred's size and the per-thread block cache ---- */

/* An allocator that remembers the size of each block it gives. */
#define SIZED_MAX 16
static void *sized_ptr[SIZED_MAX];
static size_t sized_size[SIZED_MAX];
static unsigned sized_n, sized_live;

static void *sized_malloc(size_t n)
{
    void *p = malloc(n);

    if (p && sized_n < SIZED_MAX) {
        sized_ptr[sized_n] = p;
        sized_size[sized_n++] = n;
    }
    if (p)
        sized_live++;
    return p;
}

static void *sized_realloc(void *p, size_t n)
{
    if (!p)
        return sized_malloc(n);
    return realloc(p, n);
}

static void sized_free(void *p)
{
    if (p)
        sized_live--;
    free(p);
}

/* A pending deferred with one callback, or two, is one block of at most
 * 120 bytes (128 with malloc's own rounding); the third entry moves the
 * chain to a second block; the chain still runs in order. */
/*
 * deferred_add_callback(), _errback() and _both() are macros over inline
 * functions (deferred/core.h) that store an entry on a pending deferred
 * themselves when its block has room, and call the function otherwise.
 * Both ways must be the function's: each argument evaluated once, the
 * same errors, the right kind of entry, the entries in order across the
 * inline entries and the heap blocks the calls grow into, and the
 * parenthesized name and a pointer reaching the function.
 */
static deferred_value_t record_tag_kind(deferred_value_t v, void *arg)
{
    return tu_record(v, arg);
}

START_TEST(test_inline_add_is_the_function)
{
    int (*add_cb)(deferred_t *, deferred_fn, void *) = deferred_add_callback;
    deferred_t *ok = deferred_new(), *bad = deferred_new(), *ds[2];
    int i, k, calls = 0;

    ck_assert_ptr_nonnull(ok);
    ck_assert_ptr_nonnull(bad);
    /* Each argument once, on the inline path and past it. */
    ds[0] = ok;
    ds[1] = bad;
    for (k = 0; k < 30; k++) {
        int j;

        for (j = 0; j < 2; j++) {
            i = j;
            calls = 100 + 3 * k;
            ck_assert_int_eq(deferred_add_callback(ds[i++], record_tag_kind, TAG(calls++)), 0);
            ck_assert_int_eq(i, j + 1);
            i = j;
            ck_assert_int_eq(deferred_add_errback(ds[i++], record_tag_kind, TAG(calls++)), 0);
            ck_assert_int_eq(i, j + 1);
            i = j;
            ck_assert_int_eq(deferred_add_both(ds[i++], record_tag_kind, TAG(calls++)), 0);
            ck_assert_int_eq(i, j + 1);
            ck_assert_int_eq(calls, 100 + 3 * k + 3);
        }
    }
    /* The errors, through the macros and the functions. */
    ck_assert_int_eq(deferred_add_callback(NULL, tu_add_one, NULL), -EINVAL);
    ck_assert_int_eq(deferred_add_errback(NULL, tu_add_one, NULL), -EINVAL);
    ck_assert_int_eq(deferred_add_both(NULL, tu_add_one, NULL), -EINVAL);
    ck_assert_int_eq(deferred_add_callback(ok, NULL, NULL), -EINVAL);
    ck_assert_int_eq(deferred_add_errback(ok, NULL, NULL), -EINVAL);
    ck_assert_int_eq(deferred_add_both(ok, NULL, NULL), -EINVAL);
    ck_assert_int_eq((deferred_add_callback)(NULL, tu_add_one, NULL), -EINVAL);
    ck_assert_int_eq(add_cb(ok, NULL, NULL), -EINVAL);
    /* A value runs the callbacks and the boths, in order, and skips the
     * errbacks; a failure the reverse. */
    ck_assert_int_eq(deferred_callback(ok, deferred_value_int(5)), 0);
    ck_assert_int_eq(tu_log.n, 60);
    for (k = 0; k < 30; k++) {
        ck_assert_int_eq(tu_log.e[2 * k].tag, 100 + 3 * k);
        ck_assert_int_eq(tu_log.e[2 * k].kind, TU_VALUE);
        ck_assert_int_eq(tu_log.e[2 * k].value, 5);
        ck_assert_int_eq(tu_log.e[2 * k + 1].tag, 100 + 3 * k + 2);
    }
    tu_log_reset();
    ck_assert_int_eq(deferred_errback(bad, user_failure(9)), 0);
    ck_assert_int_eq(tu_log.n, 60);
    for (k = 0; k < 30; k++) {
        ck_assert_int_eq(tu_log.e[2 * k].tag, 100 + 3 * k + 1);
        ck_assert_int_eq(tu_log.e[2 * k].kind, TU_FAILURE);
        ck_assert_int_eq(tu_log.e[2 * k + 1].tag, 100 + 3 * k + 2);
        ck_assert_int_eq(tu_log.e[2 * k + 1].kind, TU_FAILURE);
    }
    take_failure_code(bad, 9);
    /* On a fired deferred the call runs the callback at once; the
     * parenthesized name and the pointer reach the function. */
    ck_assert_int_eq(deferred_add_callback(ok, tu_add_one, NULL), 0);
    ck_assert_int_eq((deferred_add_callback)(ok, tu_add_one, NULL), 0);
    ck_assert_int_eq(add_cb(ok, tu_add_one, NULL), 0);
    ck_assert_int_eq(result_int(ok), 8);
    deferred_unref(ok);
    deferred_unref(bad);
    /* The pointer, on a pending deferred: stored, run when it fires. */
    ok = deferred_new();
    ck_assert_ptr_nonnull(ok);
    for (k = 0; k < 5; k++)
        ck_assert_int_eq(add_cb(ok, tu_add_one, NULL), 0);
    ck_assert_int_eq(deferred_callback(ok, deferred_value_int(0)), 0);
    ck_assert_int_eq(result_int(ok), 5);
    deferred_unref(ok);
}
END_TEST

/*
 * The macros' inline run: a callback added to a fired idle deferred runs
 * in the caller's code (deferred/core.h), and must do what the library's
 * runner does in every case the inline code takes or hands on.
 */
static deferred_t *inline_self;
static int inline_saw_result = -1, inline_fire_rc;

/* Adds entries to its own deferred while it runs, looks at it, and tries
 * to fire it: the entries wait their turn, the deferred shows no result
 * and cannot be fired meanwhile. */
static deferred_value_t inline_adder(deferred_value_t v, void *arg)
{
    (void)arg;
    inline_saw_result = deferred_has_result(inline_self);
    inline_fire_rc = deferred_callback(inline_self, deferred_value_int(99));
    ck_assert_int_eq(deferred_add_callback(inline_self, tu_record, TAG(31)), 0);
    ck_assert_int_eq(deferred_add_callback(inline_self, tu_add_one, NULL), 0);
    ck_assert_int_eq(deferred_add_callback(inline_self, tu_record, TAG(32)), 0);
    ck_assert_int_eq(tu_log_count(31), 0); /* not yet: this one runs */
    return deferred_value_int(deferred_value_get_int(v) * 10);
}

START_TEST(test_inline_run_on_fired)
{
    deferred_t *d = deferred_new(), *inner = deferred_new(), *ds[1];
    int later = 0, i;

    ck_assert_ptr_nonnull(d);
    ck_assert_ptr_nonnull(inner);
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(4)), 0);
    /* By kind: an errback on a value is skipped, the value stays. */
    ck_assert_int_eq(deferred_add_errback(d, tu_recover, TAG(77)), 0);
    ck_assert_int_eq(result_int(d), 4);
    ck_assert_int_eq(deferred_add_both(d, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_add_one, NULL), 0);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(tu_log.e[0].value, 4);
    ck_assert_int_eq(result_int(d), 5);
    /* Each argument once. */
    ds[0] = d;
    i = 0;
    ck_assert_int_eq(deferred_add_callback(ds[i++], tu_add_one, NULL), 0);
    ck_assert_int_eq(i, 1);
    ck_assert_int_eq(result_int(d), 6);
    /* Entries added by the running callback run after it, in order. */
    inline_self = d;
    ck_assert_int_eq(deferred_add_callback(d, inline_adder, NULL), 0);
    ck_assert_int_eq(inline_saw_result, 0);
    ck_assert_int_eq(inline_fire_rc, -EALREADY);
    ck_assert_int_eq(tu_log_count(31), 1);
    ck_assert_int_eq(find_tag(31)->value, 60);
    ck_assert_int_eq(find_tag(32)->value, 61);
    ck_assert_int_eq(result_int(d), 61);
    /* A callback on a failure is skipped; an errback and a both run. */
    ck_assert_int_eq(deferred_add_callback(d, tu_fail_with, TAG(8)), 0);
    ck_assert(deferred_value_is_failure(deferred_result(d)));
    ck_assert_int_eq(deferred_add_callback(d, tu_add_one, NULL), 0);
    ck_assert(deferred_value_is_failure(deferred_result(d)));
    ck_assert_int_eq(deferred_add_both(d, tu_record, TAG(2)), 0);
    ck_assert_int_eq(find_tag(2)->kind, TU_FAILURE);
    ck_assert_int_eq(find_tag(2)->code, 8);
    ck_assert_int_eq(deferred_add_errback(d, tu_recover, TAG(3)), 0);
    ck_assert_int_eq(result_int(d), 3);
    /* A callback that returns a pending deferred: d waits on it, and what
     * is added meanwhile waits too. */
    ck_assert_int_eq(deferred_add_callback(d, tu_return_deferred, inner), 0);
    ck_assert(!deferred_has_result(d));
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(4)), 0);
    ck_assert_int_eq(tu_log_count(4), 0);
    ck_assert_int_eq(deferred_callback(inner, deferred_value_int(40)), 0);
    ck_assert_int_eq(find_tag(4)->value, 40);
    ck_assert_int_eq(result_int(d), 40);
    /* A paused deferred runs nothing until it is unpaused. */
    ck_assert_int_eq(deferred_pause(d), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(5)), 0);
    ck_assert_int_eq(tu_log_count(5), 0);
    ck_assert_int_eq(deferred_unpause(d), 0);
    ck_assert_int_eq(tu_log_count(5), 1);
    /* A callback that drops the last reference: d is freed after it,
     * with the entries it holds. */
    ck_assert_int_eq(deferred_add_callback_full(d, tu_record_carg, tu_carg(6, &later),
                                                tu_carg_destroy), 0);
    ck_assert_int_eq(later, 1);
    ck_assert_int_eq(deferred_add_callback(d, unref_arg, d), 0);
    deferred_unref(inner);
    ck_assert_uint_eq(tu_live(), 0);
}
END_TEST

/* The last reference dropped by the inline run's callback, with a value
 * to release and an entry it added: freed once, after the entry ran. */
static deferred_value_t unref_and_add(deferred_value_t v, void *arg)
{
    deferred_t *d = arg;

    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(7)), 0);
    deferred_unref(d);
    deferred_value_release(v);
    return tu_tracked(70);
}

START_TEST(test_inline_run_drops_last_reference)
{
    deferred_t *d = deferred_succeed(tu_tracked(1));

    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_add_callback(d, unref_and_add, d), 0);
    ck_assert_int_eq(find_tag(7)->value, 70);
    ck_assert_int_eq(tu_released, 2);
    ck_assert_uint_eq(tu_live(), 0);
}
END_TEST

/* Past the runner's nesting limit a fired deferred is queued with its
 * chain still to run: an entry added to it then must not run first (the
 * inline run of the macros leaves a queued deferred to the library). */
#define NEST_LEVELS 64
static deferred_t *nest_ds[NEST_LEVELS + 1];

static deferred_value_t nest_fire(deferred_value_t v, void *arg)
{
    intptr_t k = ARGI(arg);

    if (k < NEST_LEVELS) {
        ck_assert_int_eq(deferred_callback(nest_ds[k + 1], deferred_value_int(k + 1)), 0);
        ck_assert_int_eq(deferred_add_callback(nest_ds[k + 1], tu_record, TAG(1000 + k + 1)), 0);
    }
    return v;
}

START_TEST(test_inline_run_keeps_order_past_nesting_limit)
{
    int k, i, first, second;

    for (k = 0; k <= NEST_LEVELS; k++) {
        nest_ds[k] = deferred_new();
        ck_assert_ptr_nonnull(nest_ds[k]);
        ck_assert_int_eq(deferred_add_callback(nest_ds[k], tu_record, TAG(k)), 0);
        ck_assert_int_eq(deferred_add_callback(nest_ds[k], nest_fire, TAG(k)), 0);
    }
    ck_assert_int_eq(deferred_callback(nest_ds[0], deferred_value_int(0)), 0);
    ck_assert_int_eq(tu_log.n, 2 * NEST_LEVELS + 1);
    for (k = 1; k <= NEST_LEVELS; k++) {
        first = second = -1;
        for (i = 0; i < tu_log.n; i++) {
            if (tu_log.e[i].tag == k)
                first = i;
            if (tu_log.e[i].tag == 1000 + k)
                second = i;
        }
        ck_assert_msg(first >= 0 && second > first,
                      "level %d: the added entry ran at %d, before the chain's at %d",
                      k, second, first);
        ck_assert_int_eq(tu_log.e[second].value, k);
    }
    for (k = 0; k <= NEST_LEVELS; k++)
        deferred_unref(nest_ds[k]);
}
END_TEST

/* A deferred being freed has no references: its result's release
 * function, called then, that adds a callback to it must not see the
 * callback run (on the value being released). */
static deferred_t *dying_d;
static int dying_released;

static void add_while_dying(void *ptr)
{
    (void)ptr;
    dying_released++;
    /* Its result, being released now, can be neither seen nor taken. */
    ck_assert(!deferred_has_result(dying_d));
    ck_assert(deferred_value_is_none(deferred_result(dying_d)));
    ck_assert(deferred_value_is_none(deferred_result_take(dying_d)));
    ck_assert_int_eq(deferred_add_callback(dying_d, tu_record, TAG(9)), 0);
}

START_TEST(test_inline_run_skips_dying_deferred)
{
    deferred_value_t v;

    v.ptr = &dying_released;
    v.release = add_while_dying;
    dying_d = deferred_succeed(v);
    ck_assert_ptr_nonnull(dying_d);
    deferred_unref(dying_d);
    ck_assert_int_eq(dying_released, 1);
    ck_assert_int_eq(tu_log_count(9), 0);
    ck_assert_uint_eq(tu_live(), 0);
}
END_TEST

/* While a waiting deferred is freed, its wait is undone before the
 * canceller's destroy function runs: that function sees it neither
 * waiting nor paused (the flags agree with the wait). */
static deferred_t *unwaited_d;
static int unwaited_checks;

static void check_unwaited(void *arg)
{
    (void)arg;
    ck_assert(!deferred_is_waiting(unwaited_d));
    ck_assert(!deferred_is_paused(unwaited_d));
    unwaited_checks++;
}

START_TEST(test_freed_waiter_is_unwaited)
{
    deferred_t *inner = deferred_new();
    int cancels = 0;

    ck_assert_ptr_nonnull(inner);
    unwaited_d = deferred_new_cancellable(tu_canceller_count, &cancels, check_unwaited);
    ck_assert_ptr_nonnull(unwaited_d);
    ck_assert_int_eq(deferred_add_callback(unwaited_d, tu_return_deferred, inner), 0);
    ck_assert_int_eq(deferred_callback(unwaited_d, deferred_value_int(1)), 0);
    ck_assert(deferred_is_waiting(unwaited_d));
    ck_assert(deferred_is_paused(unwaited_d));
    deferred_unref(unwaited_d);
    ck_assert_int_eq(unwaited_checks, 1);
    ck_assert_int_eq(cancels, 0);
    /* inner no longer carries the waiter's entry: it fires alone. */
    ck_assert_int_eq(deferred_callback(inner, deferred_value_int(2)), 0);
    ck_assert_int_eq(result_int(inner), 2);
    deferred_unref(inner);
}
END_TEST

START_TEST(test_pending_deferred_is_small)
{
    deferred_t *d;

    ck_assert_int_eq(deferred_set_allocator(sized_malloc, sized_realloc, sized_free), 0);
    sized_n = sized_live = 0;
    d = deferred_new();
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_add_callback(d, tu_add_one, NULL), 0);
    ck_assert_uint_eq(sized_n, 1);
    ck_assert_uint_le(sized_size[0], 120);
    /* Three entries fit in the deferred's block; a fourth spills. */
    ck_assert_int_eq(deferred_add_callback(d, tu_add_one, NULL), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_add_one, NULL), 0);
    ck_assert_uint_eq(sized_n, 1);
    ck_assert_int_eq(deferred_add_callback(d, tu_add_one, NULL), 0);
    ck_assert_uint_eq(sized_n, 2);
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(0)), 0);
    ck_assert_int_eq(deferred_value_get_int(deferred_result(d)), 4);
    deferred_unref(d);
    ck_assert_uint_eq(sized_live, 0);
    tu_install_allocator();
}
END_TEST

static deferred_value_t return_inner(deferred_value_t v, void *arg)
{
    deferred_value_release(v);
    return deferred_value_deferred(deferred_ref(arg));
}

/* Chains of every length class (inline, the 6- and 12-entry blocks, a
 * doubled one), waits and their frees, with the default allocator, so
 * the cache serves blocks again and again: each result right. */
static void cache_workout(void)
{
    static const int lengths[] = { 1, 2, 3, 5, 12, 13, 30 };
    size_t k;
    int round, i;

    for (round = 0; round < 200; round++) {
        for (k = 0; k < sizeof lengths / sizeof lengths[0]; k++) {
            deferred_t *d = deferred_new(), *inner = deferred_new();

            ck_assert_ptr_nonnull(d);
            ck_assert_ptr_nonnull(inner);
            for (i = 0; i < lengths[k]; i++)
                ck_assert_int_eq(deferred_add_callback(d, tu_add_one, NULL), 0);
            ck_assert_int_eq(deferred_add_callback(d, return_inner, inner), 0);
            ck_assert_int_eq(deferred_add_callback(d, tu_add_one, NULL), 0);
            /* inner gets three entries and d's continue entry: a spill
             * to the 6-entry block. */
            ck_assert_int_eq(deferred_add_callback(inner, tu_add_one, NULL), 0);
            ck_assert_int_eq(deferred_add_callback(inner, tu_add_one, NULL), 0);
            ck_assert_int_eq(deferred_add_callback(inner, tu_add_one, NULL), 0);
            ck_assert_int_eq(deferred_callback(d, deferred_value_int(0)), 0);
            ck_assert(deferred_is_waiting(d));
            ck_assert_int_eq(deferred_callback(inner, deferred_value_int(100)), 0);
            ck_assert(!deferred_is_waiting(d));
            ck_assert_int_eq(deferred_value_get_int(deferred_result(d)), 104);
            deferred_unref(inner);
            deferred_unref(d);
        }
    }
}

static void *cache_thread(void *arg)
{
    (void)arg;
    cache_workout();
    return NULL;
}

/* With the default allocator the blocks go round the cache, on the main
 * thread and on one that exits (its cache is emptied then: the sanitizer
 * build's leak check fails this test otherwise); a replaced allocator
 * bypasses the cache, so it is asked for every block. */
START_TEST(test_block_cache)
{
    pthread_t t;
    deferred_t *d;

    ck_assert_int_eq(deferred_set_allocator(NULL, NULL, NULL), 0);
    cache_workout();
    ck_assert_int_eq(pthread_create(&t, NULL, cache_thread, NULL), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    /* The main thread's cache is warm now; a counting allocator still sees
     * the next deferred's block. */
    tu_install_allocator();
    tu_reset_counts();
    d = deferred_new();
    ck_assert_ptr_nonnull(d);
    ck_assert_uint_eq(tu_total(), 1);
    ck_assert_uint_eq(tu_live(), 1);
    deferred_unref(d);
    ck_assert_uint_eq(tu_live(), 0);
}
END_TEST

/* ---- the block cache's reserve ---- */

#define BURST 1000

/* Make n deferreds (no callback: one block each), then free them all.
 * One assertion at the end: Check records each assertion it passes, which
 * would cost more than the deferreds in the decay test's millions. */
static void burst(deferred_t **ds, size_t n)
{
    size_t i, made = 0;

    for (i = 0; i < n; i++)
        made += (ds[i] = deferred_new()) != NULL;
    for (i = 0; i < n; i++)
        deferred_unref(ds[i]);
    ck_assert_uint_eq(made, n);
}

/* The bytes one deferred's block adds to the cache; 0 when the cache is
 * off (valgrind, DEFERRED_NO_BLOCK_CACHE): the reserve tests then have
 * nothing to see, and say so. */
static size_t one_block(void)
{
    deferred_t *d;

    deferred_block_cache_trim();
    ck_assert_uint_eq(deferred_block_cache_size(), 0);
    d = deferred_new();
    ck_assert_ptr_nonnull(d);
    deferred_unref(d);
    return deferred_block_cache_size();
}

/* The default allocator, an empty cache, and the bytes of one block; 0
 * (with a note naming the test) when the cache is off. */
static size_t reserve_setup(const char *test)
{
    size_t one;

    ck_assert_int_eq(deferred_set_allocator(NULL, NULL, NULL), 0);
    one = one_block();
    if (!one)
        fprintf(stderr, "%s: block cache off, nothing checked\n", test);
    deferred_block_cache_trim();
    return one;
}

/* A burst of 1,000 deferreds freed together stays in the cache (64 at
 * hand, the rest in bundles of 64 in the reserve) and the next burst takes
 * every block of it back; trim gives them all to free(). */
START_TEST(test_block_reserve_serves_bursts)
{
    static deferred_t *ds[BURST];
    size_t one;
    int round;

    one = reserve_setup("test_block_reserve_serves_bursts");
    if (!one)
        return;
    for (round = 0; round < 3; round++) {
        size_t i;

        burst(ds, BURST);
        ck_assert_uint_eq(deferred_block_cache_size(), BURST * one);
        /* The next burst is served by the cache: nothing is left in it
         * while all are alive. */
        for (i = 0; i < BURST; i++)
            ds[i] = deferred_new();
        ck_assert_uint_eq(deferred_block_cache_size(), 0);
        for (i = 0; i < BURST; i++)
            deferred_unref(ds[i]);
    }
    deferred_block_cache_trim();
    ck_assert_uint_eq(deferred_block_cache_size(), 0);
}
END_TEST

/* The limit bounds the reserve (the 64 at hand are not counted); 0 keeps
 * none; the call returns the limit it replaces. */
START_TEST(test_block_reserve_limit)
{
    static deferred_t *ds[BURST];
    size_t one, old;

    one = reserve_setup("test_block_reserve_limit");
    if (!one)
        return;
    old = deferred_set_block_cache_limit(0);
    ck_assert_uint_eq(old, (size_t)256 << 20);
    burst(ds, BURST);
    ck_assert_uint_eq(deferred_block_cache_size(), 64 * one);
    /* Room for three bundles and a little more. */
    deferred_block_cache_trim();
    ck_assert_uint_eq(deferred_set_block_cache_limit(3 * 64 * one + one), 0);
    burst(ds, BURST);
    ck_assert_uint_eq(deferred_block_cache_size(), (64 + 3 * 64) * one);
    ck_assert_uint_eq(deferred_set_block_cache_limit(old), 3 * 64 * one + one);
    deferred_block_cache_trim();
    ck_assert_uint_eq(deferred_block_cache_size(), 0);
}
END_TEST

/* What a thread that exits leaves: its reserve's bundles go to the
 * depot (within the limit), and a thread whose cache is empty takes a
 * bundle from there before it calls malloc(); trim empties the depot, and
 * a limit of 0 keeps nothing in it. */
struct depot_job {
    size_t made;      /* deferreds to make and keep (0: a burst instead) */
    size_t first;     /* the cache's bytes after the first deferred_new() */
    size_t after;     /* the cache's bytes with all made alive */
    size_t burst_left; /* the cache's bytes after a burst */
};

static void *depot_thread(void *arg)
{
    static deferred_t *kept[BURST];
    struct depot_job *j = arg;
    size_t i;

    if (!j->made) {
        burst(kept, BURST);
        j->burst_left = deferred_block_cache_size();
        return NULL;
    }
    for (i = 0; i < j->made; i++) {
        kept[i] = deferred_new();
        ck_assert_ptr_nonnull(kept[i]);
        if (i == 0)
            j->first = deferred_block_cache_size();
    }
    j->after = deferred_block_cache_size();
    for (i = 0; i < j->made; i++)
        deferred_unref(kept[i]);
    return NULL;
}

static void on_a_thread(struct depot_job *j)
{
    pthread_t t;

    ck_assert_int_eq(pthread_create(&t, NULL, depot_thread, j), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
}

START_TEST(test_block_depot_serves_next_thread)
{
    struct depot_job a = {0}, b = {0}, c = {0};
    /* A burst of 1,000 leaves 15 bundles of 64 in the reserve (and 40 at
     * hand, which its exit frees). */
    const size_t bundles = (BURST - 1) / 64;
    size_t one, old;

    one = reserve_setup("test_block_depot_serves_next_thread");
    if (!one)
        return;
    on_a_thread(&a);
    ck_assert_uint_eq(a.burst_left, BURST * one);
    /* The next thread's first deferred comes out of a bundle of the
     * depot: 63 of its blocks are left at hand.  All 15 bundles serve it,
     * then malloc() does. */
    b.made = bundles * 64 + 1;
    on_a_thread(&b);
    ck_assert_uint_eq(b.first, 63 * one);
    ck_assert_uint_eq(b.after, 0);
    /* Trim empties the depot that b's exit filled again. */
    deferred_block_cache_trim();
    c.made = 1;
    on_a_thread(&c);
    ck_assert_uint_eq(c.first, 0);
    /* With a limit of 0 an exiting thread leaves nothing. */
    deferred_block_cache_trim();
    old = deferred_set_block_cache_limit(0);
    memset(&a, 0, sizeof(a));
    on_a_thread(&a);
    ck_assert_uint_eq(a.burst_left, 64 * one); /* at hand only */
    c.first = 1;
    on_a_thread(&c);
    ck_assert_uint_eq(c.first, 0);
    /* A limit of one bundle: the depot keeps one of the 15. */
    deferred_set_block_cache_limit(64 * one);
    on_a_thread(&a);
    deferred_set_block_cache_limit(old);
    b.made = 65;
    on_a_thread(&b);
    ck_assert_uint_eq(b.first, 63 * one);
    ck_assert_uint_eq(b.after, 0);
    deferred_block_cache_trim();
}
END_TEST

/* A fired deferred with four callbacks (its entries in a 12-entry
 * block), or one that another waited on (its three callbacks and the
 * waiter's continue entry in a 6-entry block), freed: each block goes to
 * the cache of its size while that has room, and past 64 of a size to
 * the reserve (none here: its limit is 0) or to free(). */
static deferred_t *spilled(int waited_on, deferred_t **outer)
{
    deferred_t *d = deferred_new();
    int i;

    ck_assert_ptr_nonnull(d);
    for (i = 0; i < (waited_on ? 3 : 4); i++)
        ck_assert_int_eq(deferred_add_callback(d, tu_add_one, NULL), 0);
    *outer = NULL;
    if (waited_on) {
        *outer = deferred_new();
        ck_assert_ptr_nonnull(*outer);
        ck_assert_int_eq(deferred_add_callback(*outer, tu_return_deferred, d), 0);
        ck_assert_int_eq(deferred_callback(*outer, deferred_value_int(0)), 0);
        ck_assert(deferred_is_waiting(*outer));
    }
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(1)), 0);
    if (waited_on)
        ck_assert_int_eq(result_int(*outer), 4);
    else
        ck_assert_int_eq(result_int(d), 5);
    return d;
}

START_TEST(test_block_cache_bounds_entry_blocks)
{
    static deferred_t *ds[BURST], *outers[BURST];
    size_t one, old, block;
    int waited_on, i;

    one = reserve_setup("test_block_cache_bounds_entry_blocks");
    if (!one)
        return;
    old = deferred_set_block_cache_limit(0);
    for (waited_on = 0; waited_on < 2; waited_on++) {
        /* The bytes one such deferred's blocks add to the cache. */
        deferred_block_cache_trim();
        ds[0] = spilled(waited_on, &outers[0]);
        deferred_unref(outers[0]);
        deferred_unref(ds[0]);
        block = deferred_block_cache_size() - (waited_on ? 2 : 1) * one;
        ck_assert_uint_gt(block, 0);
        deferred_block_cache_trim();
        for (i = 0; i < BURST; i++)
            ds[i] = spilled(waited_on, &outers[i]);
        for (i = 1; i < BURST; i++) {
            deferred_unref(outers[i]);
            deferred_unref(ds[i]);
        }
        /* 64 deferreds and 64 blocks of entries at hand, no more. */
        ck_assert_uint_eq(deferred_block_cache_size(), 64 * one + 64 * block);
        /* The blocks of entries' list full, the deferreds' not: the
         * last one's deferreds go to the cache, its block of entries
         * does not. */
        outers[1] = deferred_new();
        ds[1] = waited_on ? deferred_new() : NULL;
        ck_assert_uint_eq(deferred_block_cache_size(),
                          (64 - (waited_on ? 2 : 1)) * one + 64 * block);
        deferred_unref(outers[0]);
        deferred_unref(ds[0]);
        ck_assert_uint_eq(deferred_block_cache_size(), 64 * one + 64 * block);
        deferred_unref(outers[1]);
        deferred_unref(ds[1]);
    }
    ck_assert_uint_eq(deferred_set_block_cache_limit(old), 0);
    deferred_block_cache_trim();
}
END_TEST

/* Bundles the thread stops drawing on go back by halves, at the end of
 * each epoch of 65,536 bundle moves: those that stayed in the reserve
 * through the whole epoch (its fewest), halved.  20 bundles kept (20
 * moves), then rounds that dip one bundle out of the reserve and back (2
 * moves each).  The first epoch began with none, so it frees none; the
 * second kept 19 all through and frees 9; the third kept 10 and frees 5. */
static void decay_rounds(deferred_t **ds, size_t rounds)
{
    size_t made = 0, i;

    while (rounds-- > 0) {
        for (i = 0; i < 128; i++)
            made += (ds[i] = deferred_new()) != NULL;
        for (i = 0; i < 128; i++)
            deferred_unref(ds[i]);
        if (made != 128)
            break;
        made = 0;
    }
    ck_assert_uint_eq(made, 0);
}

START_TEST(test_block_reserve_decays)
{
    static deferred_t *ds[21 * 64];
    size_t one, bundle;

    one = reserve_setup("test_block_reserve_decays");
    if (!one)
        return;
    bundle = 64 * one;
    burst(ds, 21 * 64); /* 64 at hand, 20 bundles: 20 moves */
    ck_assert_uint_eq(deferred_block_cache_size(), 21 * bundle);
    decay_rounds(ds, (65536 - 20) / 2 - 1);
    ck_assert_uint_eq(deferred_block_cache_size(), 21 * bundle);
    decay_rounds(ds, 1); /* the first epoch ends */
    ck_assert_uint_eq(deferred_block_cache_size(), 21 * bundle);
    decay_rounds(ds, 65536 / 2 - 1);
    ck_assert_uint_eq(deferred_block_cache_size(), 21 * bundle);
    decay_rounds(ds, 1); /* the second */
    ck_assert_uint_eq(deferred_block_cache_size(), (1 + 20 - 9) * bundle);
    decay_rounds(ds, 65536 / 2);
    ck_assert_uint_eq(deferred_block_cache_size(), (1 + 11 - 5) * bundle);
    deferred_block_cache_trim();
    ck_assert_uint_eq(deferred_block_cache_size(), 0);
}
END_TEST

/* A thread that draws a burst of 2,000 blocks from its reserve round
 * after round keeps all of them across epochs: what it draws from the
 * reserve counts as its demand as much as what it takes from malloc (3,300
 * rounds of 62 bundle moves: past three epochs). */
START_TEST(test_block_reserve_steady_bursts)
{
    static deferred_t *ds[2000];
    size_t one, round, short_rounds = 0;

    one = reserve_setup("test_block_reserve_steady_bursts");
    if (!one)
        return;
    for (round = 0; round < 3300; round++) {
        size_t i, made = 0;

        for (i = 0; i < 2000; i++)
            made += (ds[i] = deferred_new()) != NULL;
        for (i = 0; i < 2000; i++)
            deferred_unref(ds[i]);
        if (made != 2000)
            break;
        short_rounds += deferred_block_cache_size() != 2000 * one;
    }
    ck_assert_uint_eq(round, 3300);
    ck_assert_uint_eq(short_rounds, 0);
    deferred_block_cache_trim();
}
END_TEST

/* A thread that frees what another thread made keeps little: its reserve
 * holds no more than the thread drew itself (nothing here) plus 16
 * bundles; the rest goes to free().  The thread that made them draws on
 * its own cache as before. */
#define HANDED 3000
static deferred_t *handed[HANDED];

static void *free_handed(void *arg)
{
    size_t i;

    (void)arg;
    for (i = 0; i < HANDED; i++)
        deferred_unref(handed[i]);
    return (void *)deferred_block_cache_size();
}

START_TEST(test_block_reserve_freeing_thread)
{
    pthread_t t;
    void *held;
    size_t one, i, made = 0;

    one = reserve_setup("test_block_reserve_freeing_thread");
    if (!one)
        return;
    for (i = 0; i < HANDED; i++)
        made += (handed[i] = deferred_new()) != NULL;
    ck_assert_uint_eq(made, HANDED);
    ck_assert_int_eq(pthread_create(&t, NULL, free_handed, NULL), 0);
    ck_assert_int_eq(pthread_join(t, &held), 0);
    ck_assert_uint_eq((size_t)held, (64 + 16 * 64) * one);
    ck_assert_uint_eq(deferred_block_cache_size(), 0);
}
END_TEST

/* A thread that exits with a full reserve gives it all back (the
 * sanitizer build's leak check fails this test otherwise). */
static void *reserve_thread(void *arg)
{
    static deferred_t *ds[BURST];

    (void)arg;
    burst(ds, BURST);
    return (void *)deferred_block_cache_size();
}

START_TEST(test_block_reserve_thread_exit)
{
    pthread_t t;
    void *held;
    size_t one;

    ck_assert_int_eq(deferred_set_allocator(NULL, NULL, NULL), 0);
    one = one_block();
    deferred_block_cache_trim();
    ck_assert_int_eq(pthread_create(&t, NULL, reserve_thread, NULL), 0);
    ck_assert_int_eq(pthread_join(t, &held), 0);
    ck_assert_uint_eq((size_t)held, BURST * one);
    /* The main thread's cache is its own. */
    ck_assert_uint_eq(deferred_block_cache_size(), 0);
}
END_TEST

static Suite *core_suite(void)
{
    Suite *s = suite_create("core-chain");
    TCase *tc = tcase_create("P");
    TCase *rn = tcase_create("runner");

    tcase_add_checked_fixture(tc, tu_setup, tu_teardown);
    tcase_add_checked_fixture(rn, tu_setup, tu_teardown);

    tcase_add_test(tc, test_P01_add_callback_result);
    tcase_add_test(tc, test_P02_callback_fails_skips_to_errback);
    tcase_add_test(tc, test_P03_errback_recovers);
    tcase_add_test(tc, test_P04_add_both_sees_value_and_failure);
    tcase_add_test(tc, test_P05_add_to_fired_runs_at_once);
    tcase_add_test(tc, test_P06_second_failing_callback_skipped);
    tcase_add_test(tc, test_P22_add_during_run);
    tcase_add_test(tc, test_P23_destroy_functions);
    tcase_add_test(rn, test_reentrant_add_then_fail);
    tcase_add_test(rn, test_add_during_run_compacts);
    tcase_add_test(rn, test_add_during_run_moves_block);
    tcase_add_test(rn, test_callback_pauses_own_deferred);
    tcase_add_test(rn, test_destroy_after_errback_path);
    tcase_add_test(rn, test_pair_exactly_one_half);
    tcase_add_test(rn, test_skipping_by_kind);
    tcase_add_test(rn, test_kinds_kept_after_plain_callbacks);
    tcase_add_test(rn, test_kinds_move_with_compacted_entries);
    tcase_add_test(rn, test_kinds_kept_from_inside_a_plain_run);
    tcase_add_test(rn, test_kinds_after_the_chain_emptied);
    tcase_add_test(rn, test_inline_run_sees_an_add_after_any_call);
    tcase_add_test(rn, test_null_halves_pass_through);
    tcase_add_test(rn, test_errback_replaces_and_chains);
    tcase_add_test(rn, test_fire_with_deferred_value);
    tcase_add_test(rn, test_callback_drops_last_reference);
    tcase_add_test(rn, test_callback_drops_last_reference_then_waits);
    tcase_add_test(rn, test_callback_fires_other_deferreds);
    tcase_add_test(rn, test_many_callbacks);
    tcase_add_test(rn, test_inline_add_is_the_function);
    tcase_add_test(rn, test_inline_run_on_fired);
    tcase_add_test(rn, test_inline_run_drops_last_reference);
    tcase_add_test(rn, test_freed_waiter_is_unwaited);
    tcase_add_test(rn, test_inline_run_skips_dying_deferred);
    tcase_add_test(rn, test_inline_run_keeps_order_past_nesting_limit);
    tcase_add_test(rn, test_block_reserve_serves_bursts);
    tcase_add_test(rn, test_block_reserve_limit);
    tcase_add_test(rn, test_block_depot_serves_next_thread);
    tcase_add_test(rn, test_block_cache_bounds_entry_blocks);
    tcase_add_test(rn, test_block_reserve_decays);
    tcase_add_test(rn, test_block_reserve_thread_exit);
    tcase_add_test(rn, test_block_reserve_freeing_thread);
    tcase_add_test(rn, test_block_reserve_steady_bursts);
    tcase_add_test(rn, test_return_new_deferred);
    tcase_add_test(rn, test_pending_deferred_is_small);
    tcase_add_test(rn, test_block_cache);

    suite_add_tcase(s, tc);
    suite_add_tcase(s, rn);
    return s;
}

int main(void)
{
    return tu_run_suite(core_suite());
}
