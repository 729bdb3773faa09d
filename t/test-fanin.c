/*
 * test-fanin.c: the fan-in engine that gather, list, race and merge share
 * (lib/combinators/fanin.c), by what its users see.
 *
 *  - merge's backpressure is O(1) per row: with an asynchronous step per
 *    row, only an input that delivers while the stream is held is paused,
 *    whatever the number of inputs (counted through the inputs' flow
 *    hooks);
 *  - inputs fired before the call are seen in input order, one listed
 *    twice included;
 *  - failures move into the combinator by default, and stay on the input
 *    with DEFERRED_KEEP_ERRORS;
 *  - cancelling cancels each unfired input exactly once, also when a
 *    canceller fires another input or cancels the combinator again; a
 *    late loser's fire is swallowed without a report;
 *  - the empty cases, and the combinator's deferred naming its inputs for
 *    deferred_chain_to()'s cycle check;
 *  - out of memory at each allocation of scenarios that hold, release and
 *    let go, and depth: a merge of many inputs resumed on a small stack.
 */
#include "testutil.h"

#include <deferred/combinators.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static deferred_failure_t *user_failure(int code)
{
    return deferred_failure_new(DEFERRED_DOMAIN_USER, code, "user %d", code);
}

/* ---- merge: O(1) per row --------------------------------------------- */

/* Flow hook calls of every input, counted together. */
static long flow_calls;

static void count_flow(deferred_t *d, bool paused, void *arg)
{
    (void)d;
    (void)paused;
    (void)arg;
    flow_calls++;
}

/* The asynchronous step: each row waits on a new pending deferred, kept
 * here for the driver to fire. */
static deferred_t *step_gate;
static long rows_seen;

static deferred_value_t async_step(deferred_value_t v, void *arg)
{
    (void)arg;
    deferred_value_release(v);
    rows_seen++;
    ck_assert_ptr_null(step_gate);
    step_gate = deferred_new();
    ck_assert_ptr_nonnull(step_gate);
    return deferred_value_deferred(deferred_ref(step_gate));
}

static void open_gate(void)
{
    deferred_t *g = step_gate;

    ck_assert_ptr_nonnull(g);
    step_gate = NULL;
    deferred_callback(g, deferred_value_none());
    deferred_unref(g);
}

/* K multi-fire inputs, `rows` rows emitted round robin, each row's step
 * waiting until the driver opens it.  Returns the inputs' flow hook calls
 * per row. */
static double merge_async_pauses_per_row(size_t k, long rows)
{
    deferred_t **in = malloc(k * sizeof(*in)), *m;
    size_t i;
    long r;

    ck_assert_ptr_nonnull(in);
    for (i = 0; i < k; i++) {
        in[i] = deferred_multi_new();
        ck_assert_ptr_nonnull(in[i]);
        deferred_multi_set_flow(in[i], count_flow, NULL);
    }
    m = deferred_merge(in, k);
    ck_assert_ptr_nonnull(m);
    ck_assert_int_eq(deferred_add_callback(m, async_step, NULL), 0);
    ck_assert_int_eq(deferred_unpause(m), 0);
    flow_calls = 0;
    rows_seen = 0;
    for (r = 0; r < rows; r++) {
        ck_assert_int_eq(deferred_multi_emit(in[(size_t)r % k], deferred_value_int(r)), 0);
        ck_assert_int_eq(rows_seen, r + 1);
        /* Only the input that delivered is held, never the others. */
        ck_assert(deferred_is_paused(in[(size_t)r % k]));
        ck_assert(!deferred_is_paused(in[((size_t)r + 1) % k]) || k == 1);
        open_gate();
        ck_assert(!deferred_is_paused(in[(size_t)r % k]));
    }
    for (i = 0; i < k; i++)
        deferred_multi_finish(in[i], deferred_value_none());
    ck_assert(deferred_has_fired(m));
    deferred_unref(m);
    for (i = 0; i < k; i++)
        deferred_unref(in[i]);
    free(in);
    return (double)flow_calls / (double)rows;
}

START_TEST(test_merge_async_step_is_o1_per_row)
{
    double k2 = merge_async_pauses_per_row(2, 200);
    double k1000 = merge_async_pauses_per_row(1000, 200);

    /* One pause and one resume of the delivering input per row; before,
     * every input was paused and resumed for each row (2 * K). */
    ck_assert(k2 <= 2.0);
    ck_assert(k1000 <= 2.0);
}
END_TEST

/* A row that arrives while the stream is held goes to the stream's queue;
 * only then is its input held: its next rows wait inside it. */
START_TEST(test_merge_holds_only_who_delivers)
{
    deferred_t *in[3], *m;
    int i;

    for (i = 0; i < 3; i++) {
        in[i] = deferred_multi_new();
        deferred_multi_set_flow(in[i], count_flow, NULL);
    }
    m = deferred_merge(in, 3);
    ck_assert_int_eq(deferred_add_callback(m, tu_record, TAG(1)), 0);
    /* Paused after the call: nothing delivered, nothing held. */
    flow_calls = 0;
    for (i = 0; i < 3; i++)
        ck_assert(!deferred_is_paused(in[i]));
    ck_assert_int_eq(deferred_multi_emit(in[1], deferred_value_int(10)), 0);
    ck_assert(deferred_is_paused(in[1]));
    ck_assert(!deferred_is_paused(in[0]) && !deferred_is_paused(in[2]));
    ck_assert_int_eq(deferred_multi_emit(in[1], deferred_value_int(11)), 0);
    ck_assert_uint_eq(deferred_multi_queued(in[1]), 1);
    ck_assert_uint_eq(deferred_multi_queued(m), 1);
    ck_assert_int_eq(flow_calls, 1);
    ck_assert_int_eq(tu_log.n, 0);
    ck_assert_int_eq(deferred_unpause(m), 0);
    ck_assert_int_eq(tu_log.n, 2);
    ck_assert_int_eq(tu_log.e[0].value, 10);
    ck_assert_int_eq(tu_log.e[1].value, 11);
    ck_assert(!deferred_is_paused(in[1]));
    ck_assert_int_eq(flow_calls, 2);
    for (i = 0; i < 3; i++)
        deferred_multi_finish(in[i], deferred_value_none());
    ck_assert(deferred_has_fired(m));
    deferred_unref(m);
    for (i = 0; i < 3; i++)
        deferred_unref(in[i]);
}
END_TEST

/* A multi-fire input whose source cancels it when told to pause: the
 * merge holds it after its row, the pause ends it, and the slot is over
 * during the pause.  Freeing the input, then the stream, touches nothing
 * freed (before: the slot kept the freed input as held, and the stream's
 * release resumed it). */
static void cancel_on_pause(deferred_t *d, bool paused, void *arg)
{
    (void)arg;
    if (paused)
        deferred_cancel(d);
}

START_TEST(test_merge_input_ended_by_its_pause)
{
    deferred_t *m = deferred_multi_new(), *f, *s, *in[3];

    deferred_multi_set_flow(m, cancel_on_pause, NULL);
    f = deferred_fail(user_failure(5));
    in[0] = m;
    in[1] = f;
    in[2] = m;
    s = deferred_merge(in, 3); /* left paused */
    ck_assert_ptr_nonnull(s);
    deferred_unref(f);
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_failure(user_failure(6))), 0);
    ck_assert(deferred_has_fired(m));
    ck_assert(!deferred_is_paused(m));
    deferred_unref(m);
    deferred_unref(s);
}
END_TEST

/* ---- input order ------------------------------------------------------ */

/* Inputs 0 (failed with 3) and 1 (failed with 5), gathered as [0, 1, 0]:
 * first-error index 0, code 3 (Twisted: the callbacks of fired inputs
 * run as they are added, in input order). */
START_TEST(test_fired_input_listed_twice_keeps_input_order)
{
    deferred_t *x, *y, *in[3], *g;
    const deferred_failure_t *f;
    unsigned flags[3] = {0, DEFERRED_KEEP_ERRORS, DEFERRED_CONSUME_ERRORS};
    int k;

    for (k = 0; k < 3; k++) {
        x = deferred_fail(user_failure(3));
        y = deferred_fail(user_failure(5));
        in[0] = x;
        in[1] = y;
        in[2] = x;
        g = deferred_gather(in, 3, flags[k]);
        ck_assert_ptr_nonnull(g);
        ck_assert(deferred_has_result(g));
        f = deferred_value_get_failure(deferred_result(g));
        ck_assert_int_eq(deferred_failure_code(f), DEFERRED_EFIRSTERROR);
        ck_assert_int_eq(deferred_failure_index(f), 0);
        ck_assert_int_eq(deferred_failure_code(deferred_failure_cause(f)), 3);
        /* Nothing paused is left behind. */
        ck_assert(!deferred_is_paused(x));
        ck_assert(!deferred_is_paused(y));
        deferred_value_release(deferred_result_take(g));
        deferred_unref(g);
        if (flags[k] & DEFERRED_KEEP_ERRORS) {
            deferred_value_release(deferred_result_take(x));
            deferred_value_release(deferred_result_take(y));
        }
        deferred_unref(x);
        deferred_unref(y);
    }
    ck_assert_int_eq(tu_reports.total, 0);

    /* The same for a list failing on the first failure. */
    x = deferred_fail(user_failure(3));
    y = deferred_fail(user_failure(5));
    in[0] = x;
    in[1] = y;
    in[2] = x;
    g = deferred_list(in, 3, DEFERRED_FIRE_ON_FAILURE);
    f = deferred_value_get_failure(deferred_result(g));
    ck_assert_int_eq(deferred_failure_index(f), 0);
    ck_assert_int_eq(deferred_failure_code(deferred_failure_cause(f)), 3);
    deferred_value_release(deferred_result_take(g));
    deferred_unref(g);
    deferred_unref(x);
    deferred_unref(y);

    /* A race over [failed, succeeded, the failed one again]: the success
     * at index 1 wins, not the empty value the failed one's chain went on
     * with. */
    x = deferred_fail(user_failure(3));
    y = deferred_succeed(deferred_value_int(7));
    in[0] = x;
    in[1] = y;
    in[2] = x;
    g = deferred_race(in, 3);
    ck_assert_ptr_nonnull(deferred_value_get_indexed(deferred_result(g)));
    ck_assert_uint_eq(deferred_value_get_indexed(deferred_result(g))->index, 1);
    ck_assert_int_eq(deferred_value_get_int(deferred_value_get_indexed(deferred_result(g))->value), 7);
    deferred_value_release(deferred_result_take(g));
    deferred_unref(g);
    deferred_unref(x);
    deferred_unref(y);
}
END_TEST

/* An input the user paused after it fired waits for the user, and does
 * not hold back the others. */
START_TEST(test_fired_but_paused_input)
{
    deferred_t *in[2], *g;
    deferred_array_t *a;

    in[0] = deferred_succeed(deferred_value_int(1));
    in[1] = deferred_succeed(deferred_value_int(2));
    deferred_pause(in[0]);
    g = deferred_gather(in, 2, 0);
    ck_assert(!deferred_has_fired(g));
    ck_assert_int_eq(deferred_unpause(in[0]), 0);
    ck_assert(deferred_has_result(g));
    a = deferred_value_get_array(deferred_result(g));
    ck_assert_int_eq(deferred_value_get_int(deferred_array_get(a, 0)), 1);
    ck_assert_int_eq(deferred_value_get_int(deferred_array_get(a, 1)), 2);
    deferred_value_release(deferred_result_take(g));
    deferred_unref(g);
    deferred_unref(in[0]);
    deferred_unref(in[1]);
}
END_TEST

/* ---- failures move ---------------------------------------------------- */

START_TEST(test_failures_move_by_default)
{
    deferred_t *in[2], *g;
    int k;

    /* gather and list: the input's chain goes on with the empty value; a
     * failure after the gather failed is dropped: nothing is reported. */
    for (k = 0; k < 2; k++) {
        in[0] = deferred_new();
        in[1] = deferred_new();
        g = k == 0 ? deferred_gather(in, 2, 0) : deferred_list(in, 2, 0);
        deferred_errback(in[0], user_failure(3));
        deferred_errback(in[1], user_failure(4));
        deferred_add_both(in[0], tu_record, TAG(1));
        deferred_add_both(in[1], tu_record, TAG(2));
        ck_assert_int_eq(tu_log.n, 2 * (k + 1));
        ck_assert_int_eq(tu_log.e[tu_log.n - 2].kind, TU_NONE);
        ck_assert_int_eq(tu_log.e[tu_log.n - 1].kind, TU_NONE);
        deferred_value_release(deferred_result_take(g));
        deferred_unref(g);
        deferred_unref(in[0]);
        deferred_unref(in[1]);
    }
    ck_assert_int_eq(tu_reports.unhandled, 0);

    /* DEFERRED_KEEP_ERRORS: the input keeps its failure (shared), so an
     * input nobody handles is reported, as in Twisted. */
    in[0] = deferred_new();
    in[1] = deferred_new();
    g = deferred_gather(in, 2, DEFERRED_KEEP_ERRORS);
    deferred_errback(in[0], user_failure(3));
    deferred_errback(in[1], user_failure(4));
    ck_assert_int_eq(deferred_failure_code(deferred_value_get_failure(deferred_result(in[0]))), 3);
    ck_assert_ptr_eq(deferred_failure_cause(deferred_value_get_failure(deferred_result(g))),
                     deferred_value_get_failure(deferred_result(in[0])));
    deferred_value_release(deferred_result_take(g));
    deferred_unref(g);
    deferred_unref(in[0]);
    deferred_unref(in[1]);
    ck_assert_int_eq(tu_reports.unhandled, 2);

    /* Both ways at once is a contradiction. */
    ck_assert_ptr_null(deferred_gather(in, 0, DEFERRED_KEEP_ERRORS | DEFERRED_CONSUME_ERRORS));
    ck_assert_int_eq(errno, EINVAL);
}
END_TEST

/* ---- cancelling ------------------------------------------------------- */

static int cancels[4];
static deferred_t *cancel_inputs[4], *cancel_out;

/* Input 0's canceller: fires input 1 and cancels the combinator again. */
static void reentrant_canceller(deferred_t *d, void *arg)
{
    (void)d;
    cancels[ARGI(arg)]++;
    deferred_callback(cancel_inputs[1], deferred_value_int(1));
    deferred_cancel(cancel_out);
}

START_TEST(test_cancel_each_input_once)
{
    int which, i;

    for (which = 0; which < 4; which++) {
        memset(cancels, 0, sizeof(cancels));
        cancel_inputs[0] = deferred_new_cancellable(reentrant_canceller, TAG(0), NULL);
        for (i = 1; i < 4; i++)
            cancel_inputs[i] = deferred_new_cancellable(tu_canceller_count, &cancels[i], NULL);
        if (which == 0)
            cancel_out = deferred_gather(cancel_inputs, 4, 0);
        else if (which == 1)
            cancel_out = deferred_list(cancel_inputs, 4, 0);
        else if (which == 2)
            cancel_out = deferred_merge(cancel_inputs, 4);
        else
            cancel_out = deferred_race(cancel_inputs, 4);
        ck_assert_ptr_nonnull(cancel_out);
        if (which == 2)
            deferred_unpause(cancel_out);
        deferred_cancel(cancel_out);
        deferred_cancel(cancel_out);
        if (which == 3) {
            /* Input 1's value, fired from input 0's canceller, won: the
             * race cancels the others as it wins. */
            ck_assert_ptr_nonnull(deferred_value_get_indexed(deferred_result(cancel_out)));
            ck_assert_uint_eq(deferred_value_get_indexed(deferred_result(cancel_out))->index, 1);
        } else {
            ck_assert(deferred_has_fired(cancel_out));
        }
        ck_assert_int_eq(cancels[0], 1);
        ck_assert_int_eq(cancels[1], 0); /* fired by input 0's canceller */
        ck_assert_int_eq(cancels[2], 1);
        ck_assert_int_eq(cancels[3], 1);
        if (which != 2) {
            deferred_value_release(deferred_result_take(cancel_out));
        } else {
            /* The stream ended with ECANCELED: handle its end. */
            deferred_t *end = deferred_multi_when_finished(cancel_out);

            ck_assert_int_eq(deferred_failure_code(deferred_value_get_failure(
                                 deferred_result(end))), ECANCELED);
            deferred_value_release(deferred_result_take(end));
            deferred_unref(end);
        }
        ck_assert_int_eq(tu_reports.total, 0);
        deferred_unref(cancel_out);
        for (i = 0; i < 4; i++)
            deferred_unref(cancel_inputs[i]);
    }
    ck_assert_int_eq(tu_reports.total, 0);
}
END_TEST

/* A race's loser without a canceller fails with ECANCELED when the race
 * is won; its late fire is swallowed, and nothing is reported. */
START_TEST(test_race_late_loser_swallowed)
{
    deferred_t *in[2], *r;

    deferred_set_debug(true);
    in[0] = deferred_new();
    in[1] = deferred_new();
    r = deferred_race(in, 2);
    deferred_callback(in[0], tu_tracked(1));
    ck_assert(deferred_has_fired(in[1]));
    ck_assert_int_eq(deferred_callback(in[1], tu_tracked(2)), 0);
    ck_assert_int_eq(tu_released, 1);
    deferred_add_both(in[1], tu_record, TAG(1));
    ck_assert_int_eq(tu_log.e[0].kind, TU_NONE);
    deferred_value_release(deferred_result_take(r));
    deferred_unref(r);
    deferred_unref(in[0]);
    deferred_unref(in[1]);
    ck_assert_int_eq(tu_reports.total, 0);
}
END_TEST

/* ---- empty inputs ----------------------------------------------------- */

START_TEST(test_empty_inputs)
{
    deferred_t *d;
    deferred_failure_t *f;

    d = deferred_gather(NULL, 0, 0);
    ck_assert(deferred_has_result(d));
    ck_assert_uint_eq(deferred_array_size(deferred_value_get_array(deferred_result(d))), 0);
    deferred_unref(d);
    d = deferred_list(NULL, 0, DEFERRED_FIRE_ON_SUCCESS | DEFERRED_FIRE_ON_FAILURE);
    ck_assert_ptr_nonnull(deferred_value_get_array(deferred_result(d)));
    deferred_unref(d);
    d = deferred_race(NULL, 0);
    f = deferred_value_get_failure(deferred_result(d));
    ck_assert_int_eq(deferred_failure_code(f), DEFERRED_EGROUP);
    ck_assert_uint_eq(deferred_failure_group_size(f), 0);
    deferred_value_release(deferred_result_take(d));
    deferred_unref(d);
    d = deferred_merge(NULL, 0);
    ck_assert(deferred_has_fired(d));
    ck_assert(deferred_is_paused(d));
    ck_assert_int_eq(deferred_unpause(d), 0);
    deferred_unref(d);
    ck_assert_int_eq(tu_reports.total, 0);
}
END_TEST

/* ---- the cycle check -------------------------------------------------- */

/* The combinator's deferred names the inputs it holds: making an input
 * follow it would be a cycle nothing frees (deferred_chain_to()). */
START_TEST(test_out_names_its_inputs)
{
    deferred_t *a = deferred_new(), *b = deferred_new(), *in[2], *c;
    int which;

    in[0] = a;
    in[1] = b;
    for (which = 0; which < 4; which++) {
        if (which == 0)
            c = deferred_gather(in, 2, 0);
        else if (which == 1)
            c = deferred_list(in, 2, 0);
        else if (which == 2)
            c = deferred_race(in, 2);
        else
            c = deferred_merge(in, 2);
        ck_assert_ptr_nonnull(c);
        ck_assert_int_eq(deferred_chain_to(b, c), -EDEADLK);
        deferred_unref(c);
    }
    deferred_unref(a);
    deferred_unref(b);
}
END_TEST

/* ---- depth ------------------------------------------------------------ */

#define DEEP_K 20000

static deferred_value_t count_row(deferred_value_t v, void *arg)
{
    (*(long *)arg)++;
    deferred_value_release(v);
    return deferred_value_none();
}

/* A merge of many inputs that all fired before the call, resumed at once
 * by the caller's unpause, and a gather of as many: constant stack. */
static void deep_fanin(void *arg)
{
    deferred_t **in = malloc(DEEP_K * sizeof(*in)), *m;
    long rows = 0;
    size_t i;

    (void)arg;
    ck_assert_ptr_nonnull(in);
    for (i = 0; i < DEEP_K; i++)
        in[i] = deferred_succeed(deferred_value_int((intptr_t)i));
    m = deferred_merge(in, DEEP_K);
    ck_assert_ptr_nonnull(m);
    deferred_add_callback(m, count_row, &rows);
    deferred_unpause(m);
    ck_assert_int_eq(rows, DEEP_K);
    ck_assert(deferred_has_fired(m));
    deferred_unref(m);
    for (i = 0; i < DEEP_K; i++)
        deferred_unref(in[i]);

    for (i = 0; i < DEEP_K; i++)
        in[i] = deferred_succeed(deferred_value_int((intptr_t)i));
    m = deferred_gather(in, DEEP_K, 0);
    ck_assert(deferred_has_result(m));
    deferred_unref(m);
    for (i = 0; i < DEEP_K; i++)
        deferred_unref(in[i]);
    free(in);
}

START_TEST(test_deep_fanin_small_stack)
{
    tu_run_small_stack(deep_fanin, NULL);
}
END_TEST

/* ---- out of memory ---------------------------------------------------- */

/* Fired inputs (one listed twice), pending ones, a multi-fire one whose
 * rows are held, a cancel and the stream dropped early, in a gather
 * (r->arg 0), a race (1) and a merge (2): every allocation failed in turn
 * (tu_oom_sweep()), nothing may leak or crash.  The outcome is not
 * checked: a run that got its combinator counts as normal (r->ok). */
static void sc_fanin(struct tu_oom *r)
{
    int which = (int)ARGI(r->arg);
    deferred_t *x, *y, *ms, *in[4], *out;

    x = deferred_succeed(deferred_value_int(1));
    y = deferred_new();
    ms = deferred_multi_new();
    if (!x || !y || !ms) {
        deferred_unref(x);
        deferred_unref(y);
        deferred_unref(ms);
        r->saw = true;
        return;
    }
    in[0] = x;
    in[1] = y;
    in[2] = x;
    in[3] = ms;
    switch (which) {
    case 0:
        out = deferred_gather(in, 4, 0);
        break;
    case 1:
        out = deferred_race(in + 1, 3);
        break;
    default:
        out = deferred_merge(in, 4);
        break;
    }
    if (!out) {
        ck_assert_int_eq(errno, ENOMEM);
        r->saw = true;
        /* The inputs are as they were: x still has its value. */
        ck_assert_int_eq(deferred_value_get_int(deferred_result(x)), 1);
    } else {
        if (which == 2) {
            deferred_add_callback(out, tu_pass, NULL);
            deferred_multi_emit(ms, deferred_value_int(5));
            deferred_unpause(out);
            deferred_multi_emit(ms, deferred_value_int(6));
        }
        if (which == 1) {
            deferred_callback(y, deferred_value_int(2));
        } else {
            deferred_cancel(out);
        }
        deferred_value_release(deferred_result_take(out));
        deferred_unref(out);
        r->ok = true;
    }
    deferred_multi_finish(ms, deferred_value_none());
    deferred_unref(x);
    deferred_unref(y);
    deferred_unref(ms);
}

START_TEST(test_oom_fanin)
{
    tu_oom_sweep("gather", sc_fanin, TAG(0), 0);
    tu_oom_sweep("race", sc_fanin, TAG(1), 0);
    tu_oom_sweep("merge", sc_fanin, TAG(2), 0);
}
END_TEST

static Suite *fanin_suite(void)
{
    Suite *s = suite_create("fanin");
    TCase *tc = tcase_create("fanin");

    tcase_add_checked_fixture(tc, tu_setup, tu_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_merge_async_step_is_o1_per_row);
    tcase_add_test(tc, test_merge_holds_only_who_delivers);
    tcase_add_test(tc, test_merge_input_ended_by_its_pause);
    tcase_add_test(tc, test_fired_input_listed_twice_keeps_input_order);
    tcase_add_test(tc, test_fired_but_paused_input);
    tcase_add_test(tc, test_failures_move_by_default);
    tcase_add_test(tc, test_cancel_each_input_once);
    tcase_add_test(tc, test_race_late_loser_swallowed);
    tcase_add_test(tc, test_empty_inputs);
    tcase_add_test(tc, test_out_names_its_inputs);
    tcase_add_test(tc, test_deep_fanin_small_stack);
    tcase_add_test(tc, test_oom_fanin);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(fanin_suite());
}
