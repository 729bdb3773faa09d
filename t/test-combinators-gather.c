/*
 * test-combinators-gather.c: gather and list.
 *
 * The scenarios C01 to C04 and C06 (defined in docs/scenarios.md), then
 * the cases of Twisted's test_defer.py for DeferredList and gatherResults,
 * in spirit, a gather of 100,000 inputs, and the out-of-memory sweep of a
 * gather.  The other combinators: t/test-combinators-race-merge.c and
 * t/test-combinators-sync.c.
 *
 * The allocator, the report hook and the sweep are testutil's; every
 * test's teardown (combinators-util.c) asserts that no block is alive and
 * that nothing was reported unless the test said it expected it.
 */
#include "combinators-util.h"

/* ---- C: acceptance ----------------------------------------------------- */

START_TEST(test_C01_gather)
{
    deferred_t *in[2], *g;
    deferred_value_t v;
    deferred_array_t *r;
    deferred_failure_t *f;

    /* [1, 2] gives [1, 2]. */
    in[0] = deferred_new();
    in[1] = deferred_new();
    g = deferred_gather(in, 2, 0);
    ck_assert_ptr_nonnull(g);
    ck_assert(!deferred_has_fired(g));
    deferred_callback(in[0], tu_tracked(1));
    ck_assert(!deferred_has_fired(g));
    deferred_callback(in[1], tu_tracked(2));
    v = take_and_drop(g);
    r = deferred_value_get_array(v);
    ck_assert_ptr_nonnull(r);
    ck_assert_uint_eq(deferred_array_size(r), 2);
    ck_assert_int_eq(num(deferred_array_get(r, 0)), 1);
    ck_assert_int_eq(num(deferred_array_get(r, 1)), 2);
    ck_assert_int_eq(tu_released, 0);
    deferred_value_release(v);
    ck_assert_int_eq(tu_released, 2);
    /* The values moved: the inputs' chains go on with the empty value. */
    deferred_add_callback(in[0], record, NULL);
    ck_assert(seen.none[0]);
    deferred_unref(in[0]);
    deferred_unref(in[1]);

    /* A failure at index 1: fails once, with first-error index 1. */
    memset(&seen, 0, sizeof(seen));
    in[0] = deferred_new();
    in[1] = deferred_new();
    g = deferred_gather(in, 2, DEFERRED_KEEP_ERRORS);
    deferred_add_both(g, record, NULL);
    deferred_errback(in[1], user_failure(7));
    ck_assert_int_eq(seen.n, 1);
    ck_assert(seen.failure[0]);
    ck_assert_int_eq(seen.code[0], DEFERRED_EFIRSTERROR);
    f = deferred_value_get_failure(deferred_result(g));
    ck_assert_int_eq(deferred_failure_index(f), 1);
    ck_assert(deferred_failure_is(deferred_failure_cause(f), DEFERRED_DOMAIN_USER, 7));
    tu_released = 0;
    deferred_callback(in[0], tu_tracked(1)); /* later: released, no second fire */
    ck_assert_int_eq(seen.n, 1);
    ck_assert_int_eq(tu_released, 1);
    deferred_value_release(take_and_drop(g));
    /* With DEFERRED_KEEP_ERRORS the input keeps its failure. */
    deferred_add_errback(in[1], record_drop, NULL);
    ck_assert_int_eq(seen.n, 2);
    ck_assert(seen.failure[1]);
    ck_assert_int_eq(seen.code[1], 7);
    deferred_unref(in[0]);
    deferred_unref(in[1]);

    /* With consume-errors the input's own later errbacks see no failure. */
    memset(&seen, 0, sizeof(seen));
    in[0] = deferred_new();
    in[1] = deferred_new();
    g = deferred_gather(in, 2, DEFERRED_CONSUME_ERRORS);
    deferred_errback(in[1], user_failure(7));
    f = deferred_value_get_failure(deferred_result(g));
    ck_assert_int_eq(deferred_failure_index(f), 1);
    deferred_add_both(in[1], record, NULL);
    ck_assert_int_eq(seen.n, 1);
    ck_assert(!seen.failure[0]);
    ck_assert(seen.none[0]);
    deferred_callback(in[0], deferred_value_int(1));
    deferred_value_release(take_and_drop(g));
    deferred_unref(in[0]);
    deferred_unref(in[1]); /* nothing reported */
}
END_TEST

START_TEST(test_C02_list_order)
{
    deferred_t *in[4], *l;
    deferred_value_t v;
    deferred_array_t *r;
    int order[4] = {2, 0, 3, 1}, i;

    for (i = 0; i < 4; i++)
        in[i] = deferred_new();
    l = deferred_list(in, 4, DEFERRED_CONSUME_ERRORS);
    for (i = 0; i < 4; i++) {
        ck_assert(!deferred_has_fired(l));
        if (order[i] == 3)
            deferred_errback(in[3], user_failure(33));
        else
            deferred_callback(in[order[i]], tu_tracked(10 + order[i]));
    }
    v = take_and_drop(l);
    r = deferred_value_get_array(v);
    ck_assert_uint_eq(deferred_array_size(r), 4);
    for (i = 0; i < 3; i++) {
        ck_assert(!deferred_value_is_failure(deferred_array_get(r, i)));
        ck_assert_int_eq(num(deferred_array_get(r, i)), 10 + i);
    }
    ck_assert(deferred_failure_is(deferred_value_get_failure(deferred_array_get(r, 3)),
                                  DEFERRED_DOMAIN_USER, 33));
    ck_assert_ptr_nonnull(r);
    /* A value moved out is the caller's. */
    deferred_value_release(deferred_array_take(r, 0));
    ck_assert_int_eq(tu_released, 1);
    ck_assert(deferred_value_is_none(deferred_array_get(r, 0)));
    deferred_value_release(v);
    ck_assert_int_eq(tu_released, 3);
    for (i = 0; i < 4; i++)
        deferred_unref(in[i]);
}
END_TEST

START_TEST(test_C03_list_fire_on_one)
{
    deferred_t *in[3], *l;
    deferred_value_t v;
    deferred_indexed_t *x;
    deferred_failure_t *f;
    int i;

    /* Fire on one callback: the first success, with its index. */
    for (i = 0; i < 3; i++)
        in[i] = deferred_new();
    l = deferred_list(in, 3, DEFERRED_FIRE_ON_SUCCESS | DEFERRED_CONSUME_ERRORS);
    deferred_errback(in[0], user_failure(1));
    ck_assert(!deferred_has_fired(l));
    deferred_callback(in[2], tu_tracked(42));
    ck_assert(deferred_has_fired(l));
    deferred_callback(in[1], tu_tracked(43)); /* later: released */
    ck_assert_int_eq(tu_released, 1);
    v = take_and_drop(l);
    x = deferred_value_get_indexed(v);
    ck_assert_ptr_nonnull(x);
    ck_assert_uint_eq(x->index, 2);
    ck_assert_int_eq(num(x->value), 42);
    deferred_value_release(v);
    ck_assert_int_eq(tu_released, 2);
    for (i = 0; i < 3; i++)
        deferred_unref(in[i]);

    /* Fire on one errback: the first failure, with its index. */
    tu_released = 0;
    for (i = 0; i < 3; i++)
        in[i] = deferred_new();
    l = deferred_list(in, 3, DEFERRED_FIRE_ON_FAILURE | DEFERRED_CONSUME_ERRORS);
    deferred_callback(in[0], tu_tracked(1));
    ck_assert(!deferred_has_fired(l));
    deferred_errback(in[1], user_failure(5));
    f = deferred_value_get_failure(deferred_result(l));
    ck_assert(deferred_failure_is(f, DEFERRED_DOMAIN_LIBRARY, DEFERRED_EFIRSTERROR));
    ck_assert_int_eq(deferred_failure_index(f), 1);
    ck_assert_int_eq(tu_released, 1); /* value 1 dropped with the list */
    deferred_errback(in[2], user_failure(6)); /* consumed, not reported */
    deferred_value_release(take_and_drop(l));
    for (i = 0; i < 3; i++)
        deferred_unref(in[i]);

    /* Fire on one callback when every input fails: the outcome list. */
    for (i = 0; i < 2; i++)
        in[i] = deferred_new();
    l = deferred_list(in, 2, DEFERRED_FIRE_ON_SUCCESS | DEFERRED_CONSUME_ERRORS);
    deferred_errback(in[1], user_failure(2));
    deferred_errback(in[0], user_failure(1));
    v = take_and_drop(l);
    ck_assert_uint_eq(deferred_array_size(deferred_value_get_array(v)), 2);
    ck_assert_int_eq(deferred_failure_code(deferred_value_get_failure(
                         deferred_array_get(deferred_value_get_array(v), 0))), 1);
    deferred_value_release(v);
    for (i = 0; i < 2; i++)
        deferred_unref(in[i]);
}
END_TEST

START_TEST(test_C04_empty_inputs)
{
    deferred_t *d;
    deferred_value_t v;
    deferred_failure_t *f;
    unsigned flags[] = {0, DEFERRED_FIRE_ON_SUCCESS, DEFERRED_FIRE_ON_FAILURE,
                        DEFERRED_CONSUME_ERRORS | DEFERRED_FIRE_ON_SUCCESS |
                            DEFERRED_FIRE_ON_FAILURE};
    size_t i;

    d = deferred_gather(NULL, 0, 0);
    ck_assert(deferred_has_result(d));
    v = take_and_drop(d);
    ck_assert_ptr_nonnull(deferred_value_get_array(v));
    ck_assert_uint_eq(deferred_array_size(deferred_value_get_array(v)), 0);
    ck_assert(deferred_value_is_none(deferred_array_get(deferred_value_get_array(v), 0)));
    deferred_value_release(v);

    for (i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        d = deferred_list(NULL, 0, flags[i]);
        ck_assert(deferred_has_result(d));
        v = take_and_drop(d);
        ck_assert_uint_eq(deferred_array_size(deferred_value_get_array(v)), 0);
        ck_assert_ptr_nonnull(deferred_value_get_array(v));
        deferred_value_release(v);
    }

    /* race of nothing: an empty failure group, at once. */
    d = deferred_race(NULL, 0);
    ck_assert(deferred_has_result(d));
    f = deferred_value_get_failure(deferred_result(d));
    ck_assert(deferred_failure_is(f, DEFERRED_DOMAIN_LIBRARY, DEFERRED_EGROUP));
    ck_assert_uint_eq(deferred_failure_group_size(f), 0);
    deferred_value_release(take_and_drop(d));
}
END_TEST

START_TEST(test_C06_cancel_gather)
{
    deferred_t *in[3], *g;
    int cancels[3] = {0, 0, 0}, i;
    deferred_failure_t *f;

    for (i = 0; i < 3; i++)
        in[i] = deferred_new_cancellable(tu_canceller_count, &cancels[i], NULL);
    g = deferred_gather(in, 3, DEFERRED_KEEP_ERRORS);
    deferred_callback(in[1], tu_tracked(1));
    deferred_cancel(g);
    ck_assert_int_eq(cancels[0], 1);
    ck_assert_int_eq(cancels[1], 0); /* it had fired */
    ck_assert_int_eq(cancels[2], 1);
    f = deferred_value_get_failure(deferred_result(g));
    ck_assert(deferred_failure_is(f, DEFERRED_DOMAIN_LIBRARY, DEFERRED_EFIRSTERROR));
    ck_assert_int_eq(deferred_failure_index(f), 0);
    ck_assert(deferred_failure_is(deferred_failure_cause(f), DEFERRED_DOMAIN_LIBRARY,
                                  ECANCELED));
    ck_assert_int_eq(tu_released, 1); /* the gathered value, dropped */
    deferred_cancel(g);            /* idempotent */
    ck_assert_int_eq(cancels[0] + cancels[2], 2);
    deferred_value_release(take_and_drop(g));
    /* With DEFERRED_KEEP_ERRORS the inputs keep their ECANCELED:
     * dropping them unhandled reports both (as Twisted logs them). */
    expected_unhandled = 2;
    for (i = 0; i < 3; i++)
        deferred_unref(in[i]);
    ck_assert_int_eq(tu_reports.last_code, ECANCELED);
}
END_TEST

/* ---- gather and list, Twisted's cases ---------------------------------- */

/* Inputs that fired before the combinator was built are seen in input
 * order (test_defer: testDeferredListWithAlreadyFiredDeferreds). */
START_TEST(test_gather_already_fired)
{
    deferred_t *in[3], *g;
    deferred_value_t v;
    deferred_array_t *r;

    in[0] = deferred_succeed(tu_tracked(1));
    in[1] = deferred_new();
    in[2] = deferred_succeed(deferred_value_int(3));
    g = deferred_gather(in, 3, 0);
    ck_assert(!deferred_has_fired(g));
    deferred_callback(in[1], deferred_value_int(2));
    v = take_and_drop(g);
    r = deferred_value_get_array(v);
    ck_assert_int_eq(num(deferred_array_get(r, 0)), 1);
    ck_assert_int_eq(num(deferred_array_get(r, 1)), 2);
    ck_assert_int_eq(num(deferred_array_get(r, 2)), 3);
    deferred_value_release(v);
    deferred_unref(in[0]);
    deferred_unref(in[1]);
    deferred_unref(in[2]);

    /* All fired already: the gather fires before it returns. */
    in[0] = deferred_succeed(deferred_value_int(1));
    in[1] = deferred_fail(user_failure(2));
    g = deferred_gather(in, 2, DEFERRED_CONSUME_ERRORS);
    ck_assert(deferred_has_result(g));
    ck_assert_int_eq(deferred_failure_index(deferred_value_get_failure(deferred_result(g))), 1);
    deferred_value_release(take_and_drop(g));
    deferred_unref(in[0]);
    deferred_unref(in[1]);
}
END_TEST

/* A failed gather's other results are released exactly once, whether
 * they arrived before or after the failure. */
START_TEST(test_gather_failure_releases_values)
{
    deferred_t *in[4], *g;
    int i;

    for (i = 0; i < 4; i++)
        in[i] = deferred_new();
    g = deferred_gather(in, 4, DEFERRED_CONSUME_ERRORS);
    deferred_callback(in[0], tu_tracked(0));
    deferred_callback(in[3], tu_tracked(3));
    ck_assert_int_eq(tu_released, 0);
    deferred_errback(in[2], user_failure(2));
    ck_assert_int_eq(tu_released, 2);
    deferred_callback(in[1], tu_tracked(1));
    ck_assert_int_eq(tu_released, 3);
    deferred_value_release(take_and_drop(g));
    for (i = 0; i < 4; i++)
        deferred_unref(in[i]);
    ck_assert_int_eq(tu_released, 3);
}
END_TEST

/* Only the first failure counts (testDeferredListFireOnOneError). */
START_TEST(test_gather_first_failure_only)
{
    deferred_t *in[3], *g;
    int i;

    for (i = 0; i < 3; i++)
        in[i] = deferred_new();
    g = deferred_gather(in, 3, DEFERRED_CONSUME_ERRORS);
    deferred_add_both(g, record_drop, NULL);
    deferred_errback(in[2], user_failure(2));
    deferred_errback(in[0], user_failure(0));
    deferred_callback(in[1], deferred_value_int(1));
    ck_assert_int_eq(seen.n, 1);
    ck_assert_int_eq(seen.code[0], DEFERRED_EFIRSTERROR);
    deferred_unref(g);
    for (i = 0; i < 3; i++)
        deferred_unref(in[i]);
}
END_TEST

/* The same deferred twice: the first pair takes its value, the second sees
 * the empty value. */
START_TEST(test_gather_same_input_twice)
{
    deferred_t *d = deferred_new(), *in[2] = {d, d}, *g;
    deferred_value_t v;
    deferred_array_t *r;

    g = deferred_gather(in, 2, 0);
    deferred_callback(d, tu_tracked(5));
    v = take_and_drop(g);
    r = deferred_value_get_array(v);
    ck_assert_int_eq(num(deferred_array_get(r, 0)), 5);
    ck_assert(deferred_value_is_none(deferred_array_get(r, 1)));
    deferred_value_release(v);
    ck_assert_int_eq(tu_released, 1);
    deferred_unref(d);
}
END_TEST

/* Dropping the combinator early: inputs go on, values are released, and
 * inputs dropped unfired are freed (nothing owns itself). */
START_TEST(test_gather_dropped_early)
{
    deferred_t *in[3], *g;
    int cancels = 0, i;

    for (i = 0; i < 3; i++)
        in[i] = deferred_new_cancellable(tu_canceller_count, &cancels, NULL);
    g = deferred_gather(in, 3, 0);
    deferred_unref(g);
    deferred_callback(in[0], tu_tracked(1));
    ck_assert_int_eq(tu_released, 1);
    ck_assert_int_eq(cancels, 0); /* dropping is not cancelling */
    deferred_unref(in[1]);        /* unfired: freed */
    deferred_unref(in[0]);
    deferred_callback(in[2], deferred_value_int(2));
    deferred_unref(in[2]);

    /* Everything dropped unfired. */
    for (i = 0; i < 3; i++)
        in[i] = deferred_new();
    g = deferred_list(in, 3, 0);
    deferred_unref(g);
    for (i = 0; i < 3; i++)
        deferred_unref(in[i]);

    /* A failed gather whose other inputs are then dropped unfired. */
    for (i = 0; i < 3; i++)
        in[i] = deferred_new();
    g = deferred_gather(in, 3, DEFERRED_CONSUME_ERRORS);
    deferred_errback(in[1], user_failure(1));
    deferred_value_release(take_and_drop(g));
    for (i = 0; i < 3; i++)
        deferred_unref(in[i]);
}
END_TEST

/* Without flags a list never fails; with consume-errors the inputs' later
 * errbacks see nothing (testDeferredListConsumeErrors). */
START_TEST(test_list_consume_errors)
{
    deferred_t *in[2], *l;
    deferred_value_t v;
    deferred_array_t *r;

    in[0] = deferred_new();
    in[1] = deferred_new();
    l = deferred_list(in, 2, DEFERRED_KEEP_ERRORS);
    deferred_errback(in[0], user_failure(1));
    deferred_callback(in[1], deferred_value_int(2));
    v = take_and_drop(l);
    r = deferred_value_get_array(v);
    ck_assert(deferred_value_is_failure(deferred_array_get(r, 0)));
    ck_assert_int_eq(num(deferred_array_get(r, 1)), 2);
    deferred_value_release(v);
    /* Kept: the input still holds its failure. */
    deferred_add_errback(in[0], record_drop, NULL);
    ck_assert_int_eq(seen.n, 1);
    ck_assert_int_eq(seen.code[0], 1);
    deferred_unref(in[0]);
    deferred_unref(in[1]);

    in[0] = deferred_new();
    l = deferred_list(in, 1, DEFERRED_CONSUME_ERRORS);
    deferred_errback(in[0], user_failure(1));
    deferred_add_both(in[0], record, NULL);
    ck_assert_int_eq(seen.n, 2);
    ck_assert(seen.none[1]);
    deferred_value_release(take_and_drop(l));
    deferred_unref(in[0]);
}
END_TEST

/* Cancelling a list cancels every input; it fires with every outcome
 * (testCancelDeferredList). */
START_TEST(test_list_cancel)
{
    deferred_t *in[2], *l;
    int cancels[2] = {0, 0};
    deferred_value_t v;
    deferred_array_t *r;

    in[0] = deferred_new_cancellable(tu_canceller_count, &cancels[0], NULL);
    in[1] = deferred_new_cancellable(succeed_canceller, &cancels[1], NULL);
    l = deferred_list(in, 2, DEFERRED_CONSUME_ERRORS);
    deferred_cancel(l);
    ck_assert_int_eq(cancels[0], 1);
    ck_assert_int_eq(cancels[1], 1);
    v = take_and_drop(l);
    r = deferred_value_get_array(v);
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(deferred_failure_code(deferred_value_get_failure(deferred_array_get(r, 0))),
                     ECANCELED);
    ck_assert_int_eq(num(deferred_array_get(r, 1)), 99);
    deferred_value_release(v);
    deferred_unref(in[0]);
    deferred_unref(in[1]);

    /* Once fired, cancelling does nothing to the inputs
     * (testCancelFiredDeferredList). */
    in[0] = deferred_new_cancellable(tu_canceller_count, &cancels[0], NULL);
    l = deferred_list(in, 1, DEFERRED_FIRE_ON_FAILURE | DEFERRED_CONSUME_ERRORS);
    deferred_callback(in[0], deferred_value_int(1));
    deferred_cancel(l);
    ck_assert_int_eq(cancels[0], 1);
    deferred_value_release(take_and_drop(l));
    deferred_unref(in[0]);
}
END_TEST

/* The combinator's own callbacks may drop it, cancel inputs, or fire
 * other inputs: nothing breaks. */
static deferred_value_t fire_arg(deferred_value_t v, void *arg)
{
    deferred_callback(arg, deferred_value_int(7));
    return v;
}

START_TEST(test_list_reentrant)
{
    deferred_t *in[2], *l;

    in[0] = deferred_new();
    in[1] = deferred_new();
    /* in[0]'s own callback, after the list's pair, fires in[1]. */
    l = deferred_list(in, 2, 0);
    deferred_add_callback(in[0], fire_arg, in[1]);
    deferred_callback(in[0], deferred_value_int(1));
    ck_assert(deferred_has_result(l));
    ck_assert_uint_eq(deferred_array_size(deferred_value_get_array(deferred_result(l))), 2);
    deferred_unref(l);
    deferred_unref(in[0]);
    deferred_unref(in[1]);
}
END_TEST

/* An input whose only entry is the gather's pair: the gather fires from
 * inside that pair, and its callback adds a callback to the input.  The
 * input has fired and stops running as the pair returns: the new callback
 * runs then, before the input's deferred_callback() returns, on what the
 * input's chain goes on with (the empty value: the gather took the
 * value); a paused input keeps it until unpaused. */
struct late_add {
    deferred_t *input;
    bool seen_none;
    int runs;
};

static deferred_value_t late_record(deferred_value_t v, void *arg)
{
    struct late_add *la = arg;

    la->seen_none = deferred_value_is_none(v);
    la->runs++;
    return deferred_value_int(8);
}

static deferred_value_t add_to_input(deferred_value_t v, void *arg)
{
    struct late_add *la = arg;

    ck_assert_int_eq(deferred_add_callback(la->input, late_record, la), 0);
    ck_assert_int_eq(la->runs, 0); /* the input is running: it waits its turn */
    return v;
}

START_TEST(test_gather_callback_added_to_input_from_inside)
{
    struct late_add la = {0};
    deferred_t *in, *g;
    int paused;

    for (paused = 0; paused < 2; paused++) {
        memset(&la, 0, sizeof(la));
        in = deferred_new();
        la.input = in;
        g = deferred_gather(&in, 1, 0);
        ck_assert_ptr_nonnull(g);
        ck_assert_int_eq(deferred_add_callback(g, add_to_input, &la), 0);
        if (paused)
            ck_assert_int_eq(deferred_pause(in), 0);
        ck_assert_int_eq(deferred_callback(in, deferred_value_int(7)), 0);
        if (paused) {
            /* Paused: nothing ran, the gather's pair neither. */
            ck_assert(!deferred_has_result(g));
            ck_assert_int_eq(deferred_unpause(in), 0);
        }
        ck_assert(deferred_has_result(g));
        ck_assert_int_eq(la.runs, 1);
        ck_assert(la.seen_none);
        ck_assert_int_eq(deferred_value_get_int(deferred_value_get_array(deferred_result(g)) ?
                                                    deferred_array_get(deferred_value_get_array(
                                                                           deferred_result(g)),
                                                                       0)
                                                                      : deferred_value_none()),
                         7);
        ck_assert(deferred_has_result(in));
        ck_assert_int_eq(deferred_value_get_int(deferred_result(in)), 8);
        deferred_unref(g);
        deferred_unref(in);
    }
}
END_TEST

/* ---- size -------------------------------------------------------------- */

static deferred_value_t sum_results(deferred_value_t v, void *arg)
{
    deferred_array_t *r = deferred_value_get_array(v);
    size_t i, n = deferred_array_size(r);
    intptr_t sum = 0;

    (void)arg;
    for (i = 0; i < n; i++)
        sum += deferred_value_get_int(deferred_array_get(r, i));
    deferred_value_release(v);
    return deferred_value_int(sum);
}

/* 100,000 pending deferreds gathered, each fired, the list summed; a
 * constant number of allocations besides the inputs. */
START_TEST(test_gather_many)
{
    enum { N = 100000 };
    deferred_t **in = malloc(N * sizeof(*in)), *g;
    size_t before, i;

    ck_assert_ptr_nonnull(in);
    for (i = 0; i < N; i++)
        in[i] = deferred_new();
    before = tu_live();
    g = deferred_gather(in, N, 0);
    ck_assert_uint_le(tu_live() - before, 8);
    deferred_add_callback(g, sum_results, NULL);
    for (i = N; i-- > 0;)
        deferred_callback(in[i], deferred_value_int((intptr_t)i));
    ck_assert_int_eq(deferred_value_get_int(deferred_result(g)), (intptr_t)N * (N - 1) / 2);
    deferred_unref(g);
    for (i = 0; i < N; i++)
        deferred_unref(in[i]);
    free(in);
}
END_TEST

/* ---- main -------------------------------------------------------------- */

START_TEST(test_oom_gather)
{
    tu_oom_sweep("oom_gather", cb_oom_gather_race, NULL, CB_OOM_FLAGS);
}
END_TEST

static Suite *combinators_suite(void)
{
    Suite *s = suite_create("combinators-gather");
    TCase *tc = tcase_create("combinators-gather");

    tcase_add_checked_fixture(tc, cb_setup, cb_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_C01_gather);
    tcase_add_test(tc, test_C02_list_order);
    tcase_add_test(tc, test_C03_list_fire_on_one);
    tcase_add_test(tc, test_C04_empty_inputs);
    tcase_add_test(tc, test_C06_cancel_gather);
    tcase_add_test(tc, test_gather_already_fired);
    tcase_add_test(tc, test_gather_failure_releases_values);
    tcase_add_test(tc, test_gather_first_failure_only);
    tcase_add_test(tc, test_gather_same_input_twice);
    tcase_add_test(tc, test_gather_dropped_early);
    tcase_add_test(tc, test_list_consume_errors);
    tcase_add_test(tc, test_list_cancel);
    tcase_add_test(tc, test_list_reentrant);
    tcase_add_test(tc, test_gather_callback_added_to_input_from_inside);
    tcase_add_test(tc, test_gather_many);
    tcase_add_test(tc, test_oom_gather);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(combinators_suite());
}
