/*
 * test-multi.c: multi-fire deferreds (scenarios M01 to M04, defined in
 * docs/scenarios.md, and the rest of include/deferred/multi.h).
 */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* ---- helpers ---- */

static int flow_paused_calls, flow_resumed_calls;
static bool flow_state;

static void flow_hook(deferred_t *d, bool paused, void *arg)
{
    (void)d;
    (void)arg;
    flow_state = paused;
    if (paused)
        flow_paused_calls++;
    else
        flow_resumed_calls++;
}

static deferred_t *held;

/* Waits on a new deferred (kept in held) for the value ARGI(arg). */
static deferred_value_t wait_on(deferred_value_t v, void *arg)
{
    if (tu_is_tracked(v) ? tu_tracked_get(v) == ARGI(arg)
                         : deferred_value_get_int(v) == ARGI(arg)) {
        deferred_value_release(v);
        held = deferred_new();
        return deferred_value_deferred(deferred_ref(held));
    }
    return v;
}

/* wait_on with the tag of a struct tu_carg argument. */
static deferred_value_t wait_on_carg(deferred_value_t v, void *arg)
{
    return wait_on(v, TAG(((struct tu_carg *)arg)->tag));
}

/* Fails the value ARGI(arg). */
static deferred_value_t fail_on(deferred_value_t v, void *arg)
{
    if (deferred_value_get_int(v) == ARGI(arg)) {
        deferred_value_release(v);
        return deferred_value_failure(
            deferred_failure_new(DEFERRED_DOMAIN_USER, 42, "value %ld is bad", (long)ARGI(arg)));
    }
    return v;
}

static deferred_value_t end_record(deferred_value_t v, void *arg)
{
    return tu_record(v, arg);
}

static void setup(void)
{
    tu_setup();
    flow_paused_calls = flow_resumed_calls = 0;
    flow_state = false;
    held = NULL;
}

/* M01: three values through two callbacks, in order; the end once. */
START_TEST(test_M01_values_in_order)
{
    deferred_t *m = deferred_multi_new(), *end;

    ck_assert_ptr_nonnull(m);
    ck_assert(deferred_is_multi(m));
    ck_assert_int_eq(deferred_add_callback(m, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_add_callback(m, tu_add_one, NULL), 0);
    ck_assert_int_eq(deferred_add_callback(m, tu_record, TAG(2)), 0);
    end = deferred_multi_when_finished(m);
    ck_assert_int_eq(deferred_add_both(end, end_record, TAG(3)), 0);
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(10)), 0);
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(20)), 0);
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(30)), 0);
    ck_assert_int_eq(tu_log.n, 6);
    ck_assert_int_eq(tu_log.e[0].value, 10);
    ck_assert_int_eq(tu_log.e[1].value, 11);
    ck_assert_int_eq(tu_log.e[2].value, 20);
    ck_assert_int_eq(tu_log.e[3].value, 21);
    ck_assert_int_eq(tu_log.e[4].value, 30);
    ck_assert_int_eq(tu_log.e[5].value, 31);
    ck_assert(!deferred_has_fired(m));
    ck_assert_int_eq(deferred_multi_finish(m, deferred_value_int(99)), 0);
    ck_assert_int_eq(tu_log.n, 7);
    ck_assert_int_eq(tu_log.e[6].tag, 3);
    ck_assert_int_eq(tu_log.e[6].value, 99);
    ck_assert(deferred_has_fired(m));
    ck_assert_int_eq(deferred_multi_finish(m, deferred_value_int(1)), -EALREADY);
    ck_assert_int_eq(tu_log_count(3), 1);
    ck_assert_uint_eq(deferred_multi_rows(m), 3);
    deferred_unref(end);
    deferred_unref(m);
}
END_TEST

/* M02: a callback waits on the second value: the third is held back and
 * the deferred reports itself paused until that deferred fires. */
START_TEST(test_M02_waiting_callback_holds_back)
{
    deferred_t *m = deferred_multi_new();

    deferred_multi_set_flow(m, flow_hook, NULL);
    deferred_add_callback(m, wait_on, TAG(2));
    deferred_add_callback(m, tu_record, TAG(1));
    deferred_multi_emit(m, deferred_value_int(1));
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert(!deferred_is_paused(m));
    deferred_multi_emit(m, deferred_value_int(2));
    ck_assert_ptr_nonnull(held);
    ck_assert(deferred_is_paused(m));
    ck_assert_int_eq(flow_paused_calls, 1);
    ck_assert(flow_state);
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(3)), 0);
    ck_assert_int_eq(tu_log.n, 1); /* 3 not seen yet */
    ck_assert_uint_eq(deferred_multi_queued(m), 1);
    deferred_callback(held, deferred_value_int(200));
    ck_assert_int_eq(tu_log.n, 3);
    ck_assert_int_eq(tu_log.e[1].value, 200);
    ck_assert_int_eq(tu_log.e[2].value, 3);
    ck_assert(!deferred_is_paused(m));
    ck_assert_int_eq(flow_resumed_calls, 1);
    ck_assert(!flow_state);
    ck_assert_uint_eq(deferred_multi_queued(m), 0);
    deferred_unref(held);
    deferred_multi_finish(m, deferred_value_none());
    deferred_unref(m);
}
END_TEST

static int cancels;
static void count_cancel(deferred_t *d, void *arg)
{
    (void)d;
    (void)arg;
    cancels++;
}

/* M03: an unhandled failure on value 5 ends the stream, names the row,
 * cancels the source, and refuses later emits. */
START_TEST(test_M03_row_failure_ends_stream)
{
    deferred_t *m, *end;
    char story[1024];
    int i;

    cancels = 0;
    m = deferred_multi_new_cancellable(count_cancel, NULL, NULL);
    deferred_add_callback(m, fail_on, TAG(5));
    deferred_add_callback(m, tu_record, TAG(1));
    end = deferred_multi_when_finished(m);
    deferred_add_both(end, end_record, TAG(2));
    for (i = 1; i <= 4; i++)
        ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(i)), 0);
    ck_assert_int_eq(tu_log_count(1), 4);
    ck_assert_int_eq(cancels, 0);
    deferred_multi_emit(m, deferred_value_int(5));
    ck_assert_int_eq(cancels, 1);
    ck_assert_int_eq(tu_log_count(2), 1);
    ck_assert_int_eq(tu_log.e[tu_log.n - 1].kind, TU_FAILURE);
    ck_assert_int_eq(tu_log.e[tu_log.n - 1].code, 42);
    ck_assert(deferred_has_fired(m));
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(6)), -EALREADY);
    ck_assert_int_eq(deferred_multi_emit(m, tu_tracked(7)), -EALREADY);
    ck_assert_int_eq(tu_released, 1);
    ck_assert_int_eq(deferred_multi_finish(m, deferred_value_none()), -EALREADY);
    ck_assert_int_eq(tu_log_count(1), 4);
    /* The end failed with the row's failure, its context naming row 5. */
    {
        deferred_value_t r = deferred_result(end);
        deferred_failure_t *f = deferred_value_get_failure(r);

        ck_assert_ptr_nonnull(f);
        ck_assert_uint_eq(deferred_failure_context_size(f), 1);
        ck_assert_str_eq(deferred_failure_context_item(f, 0), "row 5");
        deferred_failure_story(f, story, sizeof(story));
        ck_assert_ptr_nonnull(strstr(story, "value 5 is bad"));
        ck_assert_ptr_nonnull(strstr(story, "row 5"));
        /* Handled here, so nothing is reported when it goes. */
        deferred_value_release(deferred_result_take(end));
    }
    deferred_unref(end);
    deferred_unref(m);
    ck_assert_int_eq(tu_reports.unhandled, 0);
}
END_TEST

/* M04: an errback recovers value 5's failure: the stream goes on. */
START_TEST(test_M04_errback_recovers_row)
{
    deferred_t *m = deferred_multi_new(), *end;
    int i;

    deferred_add_callback(m, fail_on, TAG(5));
    deferred_add_errback(m, tu_recover, TAG(-5));
    deferred_add_callback(m, tu_record, TAG(1));
    end = deferred_multi_when_finished(m);
    deferred_add_both(end, end_record, TAG(2));
    for (i = 1; i <= 8; i++)
        ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(i)), 0);
    ck_assert_int_eq(tu_log_count(1), 8);
    ck_assert_int_eq(tu_log.e[4].value, -5);
    ck_assert_int_eq(tu_log.e[5].value, 6);
    ck_assert(!deferred_has_fired(m));
    deferred_multi_finish(m, deferred_value_int(1000));
    ck_assert_int_eq(tu_log_count(2), 1);
    ck_assert_int_eq(tu_log.e[tu_log.n - 1].value, 1000);
    ck_assert_int_eq(tu_log.e[tu_log.n - 1].kind, TU_VALUE);
    deferred_unref(end);
    deferred_unref(m);
}
END_TEST

/* A row's callback cancels its own stream: the callbacks after it do not
 * run for that row (the runner, which keeps the row's plain callbacks in
 * registers, is told), the stream fails with ECANCELED, and later emits
 * are refused. */
static deferred_value_t cancel_own_stream(deferred_value_t v, void *arg)
{
    ck_assert_int_eq(deferred_cancel(arg), 0);
    return v;
}

/* A stream whose rows are recorded (tag 1), go through fn (given the
 * stream itself) and are recorded again (tag 2); *end is its end, recorded
 * with end_tag. */
static deferred_t *stream_around(deferred_fn fn, int end_tag, deferred_t **end)
{
    deferred_t *m = deferred_multi_new();

    ck_assert_ptr_nonnull(m);
    ck_assert_int_eq(deferred_add_callback(m, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_add_callback(m, fn, m), 0);
    ck_assert_int_eq(deferred_add_callback(m, tu_record, TAG(2)), 0);
    *end = deferred_multi_when_finished(m);
    ck_assert_ptr_nonnull(*end);
    ck_assert_int_eq(deferred_add_both(*end, end_record, TAG(end_tag)), 0);
    return m;
}

START_TEST(test_multi_row_cancels_own_stream)
{
    deferred_t *m = deferred_multi_new(), *end;

    ck_assert_ptr_nonnull(m);
    ck_assert_int_eq(deferred_add_callback(m, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_add_callback(m, cancel_own_stream, m), 0);
    ck_assert_int_eq(deferred_add_callback(m, tu_record, TAG(2)), 0);
    ck_assert_int_eq(deferred_add_callback(m, tu_record, TAG(3)), 0);
    end = deferred_multi_when_finished(m);
    ck_assert_int_eq(deferred_add_both(end, end_record, TAG(4)), 0);
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(10)), 0);
    ck_assert_int_eq(tu_log.n, 2);
    ck_assert_int_eq(tu_log.e[0].tag, 1);
    ck_assert_int_eq(tu_log.e[1].tag, 4);
    ck_assert_int_eq(tu_log.e[1].kind, TU_FAILURE);
    ck_assert_int_eq(tu_log.e[1].code, ECANCELED);
    ck_assert_int_ne(deferred_multi_emit(m, deferred_value_int(11)), 0);
    ck_assert_int_eq(tu_log.n, 2);
    deferred_unref(end);
    deferred_unref(m);
}
END_TEST

/* The same from a row that was queued (emitted by the row before it, so
 * the runner's loop, not the emit, runs it). */
static deferred_value_t emit_then_cancel(deferred_value_t v, void *arg)
{
    if (deferred_value_get_int(v) == 10)
        ck_assert_int_eq(deferred_multi_emit(arg, deferred_value_int(11)), 0);
    else
        ck_assert_int_eq(deferred_cancel(arg), 0);
    return v;
}

START_TEST(test_multi_queued_row_cancels_own_stream)
{
    deferred_t *end, *m = stream_around(emit_then_cancel, 4, &end);

    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(10)), 0);
    /* Row 10 whole, row 11 up to its cancel, then the end. */
    ck_assert_int_eq(tu_log.n, 4);
    ck_assert_int_eq(tu_log.e[0].tag, 1);
    ck_assert_int_eq(tu_log.e[0].value, 10);
    ck_assert_int_eq(tu_log.e[1].tag, 2);
    ck_assert_int_eq(tu_log.e[2].tag, 1);
    ck_assert_int_eq(tu_log.e[2].value, 11);
    ck_assert_int_eq(tu_log.e[3].tag, 4);
    ck_assert_int_eq(tu_log.e[3].code, ECANCELED);
    deferred_unref(end);
    deferred_unref(m);
}
END_TEST

/* Pause queues rows and reports it; unpause runs them in order. */
START_TEST(test_multi_pause_queues)
{
    deferred_t *m = deferred_multi_new();
    int i;

    deferred_multi_set_flow(m, flow_hook, NULL);
    deferred_add_callback(m, tu_record, TAG(1));
    ck_assert_int_eq(deferred_pause(m), 0);
    ck_assert_int_eq(flow_paused_calls, 1);
    for (i = 0; i < 100; i++)
        ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(i)), 0);
    ck_assert_int_eq(tu_log.n, 0);
    ck_assert_uint_eq(deferred_multi_queued(m), 100);
    /* A finish waits for the queued rows. */
    ck_assert_int_eq(deferred_multi_finish(m, deferred_value_none()), 0);
    ck_assert(!deferred_has_fired(m));
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(1)), -EALREADY);
    ck_assert_int_eq(deferred_unpause(m), 0);
    ck_assert_int_eq(tu_log.n, 100);
    for (i = 0; i < 100; i++)
        ck_assert_int_eq(tu_log.e[i].value, i);
    ck_assert(deferred_has_fired(m));
    ck_assert_int_eq(deferred_unpause(m), -EINVAL);
    deferred_unref(m);
}
END_TEST

/* Rows emitted from inside a row's callback are queued, not nested. */
static deferred_t *reemit_target;
static deferred_value_t reemit(deferred_value_t v, void *arg)
{
    intptr_t x = deferred_value_get_int(v);

    (void)arg;
    if (x < 100000)
        deferred_multi_emit(reemit_target, deferred_value_int(x + 1));
    tu_depth++;
    return v;
}

static deferred_value_t count_rows(deferred_value_t v, void *arg)
{
    (*(long *)arg)++;
    return v;
}

START_TEST(test_multi_emit_from_callback_never_nests)
{
    long rows = 0;

    reemit_target = deferred_multi_new();
    deferred_add_callback(reemit_target, reemit, NULL);
    deferred_add_callback(reemit_target, count_rows, &rows);
    deferred_multi_emit(reemit_target, deferred_value_int(0));
    ck_assert_int_eq(rows, 100001);
    deferred_multi_finish(reemit_target, deferred_value_none());
    deferred_unref(reemit_target);
}
END_TEST

/* Cancel: the canceller once, the end fails ECANCELED, queued rows are
 * released; cancelling the end cancels the stream. */
START_TEST(test_multi_cancel)
{
    deferred_t *m, *end;

    cancels = 0;
    m = deferred_multi_new_cancellable(count_cancel, NULL, NULL);
    deferred_pause(m);
    deferred_multi_emit(m, tu_tracked(1));
    deferred_multi_emit(m, tu_tracked(2));
    end = deferred_multi_when_finished(m);
    deferred_add_errback(end, end_record, TAG(9));
    ck_assert_int_eq(deferred_cancel(end), 0);
    ck_assert_int_eq(cancels, 1);
    ck_assert_int_eq(tu_released, 2);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(tu_log.e[0].code, ECANCELED);
    ck_assert_int_eq(deferred_cancel(m), 0);
    ck_assert_int_eq(cancels, 1);
    deferred_unref(end);
    deferred_unref(m);
}
END_TEST

/* A row waiting on a deferred: cancel goes to that deferred, the row
 * fails with ECANCELED, which ends the stream. */
START_TEST(test_multi_cancel_waiting_row)
{
    deferred_t *m, *end;

    cancels = 0;
    m = deferred_multi_new_cancellable(count_cancel, NULL, NULL);
    deferred_add_callback(m, wait_on, TAG(1));
    end = deferred_multi_when_finished(m);
    deferred_add_errback(end, end_record, TAG(9));
    deferred_multi_emit(m, deferred_value_int(1));
    ck_assert_ptr_nonnull(held);
    deferred_cancel(m);
    ck_assert(deferred_has_fired(held));
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(tu_log.e[0].code, ECANCELED);
    ck_assert_int_eq(cancels, 1); /* the source was cancelled too */
    deferred_unref(held);
    deferred_unref(end);
    deferred_unref(m);
}
END_TEST

/* Chaining on a multi-fire deferred waits for its end. */
START_TEST(test_multi_chaining_waits_for_end)
{
    deferred_t *m = deferred_multi_new(), *outer = deferred_new();

    deferred_add_callback(outer, tu_return_deferred, m);
    deferred_add_callback(outer, tu_record, TAG(1));
    deferred_callback(outer, deferred_value_none());
    ck_assert_int_eq(tu_log.n, 0);
    deferred_multi_emit(m, deferred_value_int(1));
    ck_assert_int_eq(tu_log.n, 0);
    deferred_multi_finish(m, deferred_value_int(77));
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(tu_log.e[0].value, 77);
    deferred_unref(outer);
    deferred_unref(m);
}
END_TEST

/* Bad input. */
START_TEST(test_multi_bad_input)
{
    deferred_t *single = deferred_new(), *m = deferred_multi_new();

    ck_assert_int_eq(deferred_multi_emit(NULL, deferred_value_none()), -EINVAL);
    ck_assert_int_eq(deferred_multi_emit(single, tu_tracked(1)), -EINVAL);
    ck_assert_int_eq(deferred_multi_finish(single, tu_tracked(2)), -EINVAL);
    ck_assert_int_eq(tu_released, 2);
    ck_assert_ptr_null(deferred_multi_when_finished(single));
    ck_assert_int_eq(deferred_multi_set_flow(single, flow_hook, NULL), -EINVAL);
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_deferred(deferred_ref(single))), -EINVAL);
    ck_assert(!deferred_is_multi(single));
    ck_assert_uint_eq(deferred_multi_queued(single), 0);
    /* callback on a multi-fire deferred is its finish. */
    ck_assert_int_eq(deferred_callback(m, deferred_value_int(1)), 0);
    ck_assert_int_eq(deferred_callback(m, tu_tracked(3)), -EALREADY);
    ck_assert_int_eq(tu_released, 3);
    ck_assert(deferred_has_fired(m));
    ck_assert(deferred_value_is_none(deferred_result(m)));
    deferred_unref(single);
    deferred_unref(m);
}
END_TEST

/* Dropping a stream with rows in flight and queued releases them; its
 * _full callbacks are destroyed once. */
START_TEST(test_multi_free_releases)
{
    int destroyed = 0;
    deferred_t *m = deferred_multi_new();

    deferred_add_callback_full(m, wait_on_carg, tu_carg(1, &destroyed), tu_carg_destroy);
    deferred_multi_emit(m, tu_tracked(1));
    deferred_multi_emit(m, tu_tracked(2));
    deferred_multi_emit(m, tu_tracked(3));
    ck_assert_int_eq(destroyed, 0); /* kept for every row */
    deferred_unref(m);
    ck_assert_int_eq(destroyed, 1);
    ck_assert_int_eq(tu_released, 3);
    deferred_callback(held, deferred_value_none());
    deferred_unref(held);
}
END_TEST

/* No allocation per row once running. */
START_TEST(test_multi_no_allocation_per_row)
{
    deferred_t *m = deferred_multi_new();
    size_t live, total;
    int i;

    deferred_add_callback(m, tu_add_one, NULL);
    deferred_add_callback(m, tu_add_one, NULL);
    deferred_add_callback(m, tu_pass, NULL);
    deferred_multi_emit(m, deferred_value_int(0));
    live = tu_live();
    total = tu_total();
    for (i = 0; i < 100000; i++)
        deferred_multi_emit(m, deferred_value_int(i));
    ck_assert_uint_eq(tu_total(), total);
    ck_assert_uint_eq(tu_live(), live);
    deferred_multi_finish(m, deferred_value_none());
    deferred_unref(m);
}
END_TEST

/* ---- a row's callbacks acting on their own stream ----
 * The emit runs a row of plain callbacks with the entries and the value in
 * registers and retires it at once (deferred__run_row()); each of these
 * must make it hand over to the runner, or keep it off that way. */

/* Finishes the stream arg on the value 1, from inside its row. */
static deferred_value_t finish_own(deferred_value_t v, void *arg)
{
    if (deferred_value_get_int(v) == 1)
        ck_assert_int_eq(deferred_multi_finish(arg, deferred_value_int(77)), 0);
    return v;
}

/* The finish waits for the row: its later callbacks run, then the end. */
START_TEST(test_multi_row_finishes_own_stream)
{
    deferred_t *end, *m = stream_around(finish_own, 3, &end);

    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(0)), 0);
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(1)), 0);
    ck_assert_int_eq(tu_log.n, 5);
    ck_assert_int_eq(tu_log.e[3].tag, 2);
    ck_assert_int_eq(tu_log.e[3].value, 1);
    ck_assert_int_eq(tu_log.e[4].tag, 3);
    ck_assert_int_eq(tu_log.e[4].value, 77);
    ck_assert(deferred_has_fired(m));
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(2)), -EALREADY);
    deferred_unref(end);
    deferred_unref(m);
}
END_TEST

/* Pauses the stream arg on the value 1. */
static deferred_value_t pause_own(deferred_value_t v, void *arg)
{
    if (deferred_value_get_int(v) == 1)
        ck_assert_int_eq(deferred_pause(arg), 0);
    return v;
}

/* A pause from inside the row holds its later callbacks, and the rows
 * after it, until the unpause. */
START_TEST(test_multi_row_pauses_own_stream)
{
    deferred_t *m = deferred_multi_new();

    ck_assert_ptr_nonnull(m);
    ck_assert_int_eq(deferred_add_callback(m, pause_own, m), 0);
    ck_assert_int_eq(deferred_add_callback(m, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(0)), 0);
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(1)), 0);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert(deferred_is_paused(m));
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(2)), 0);
    ck_assert_uint_eq(deferred_multi_queued(m), 1);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(deferred_unpause(m), 0);
    ck_assert_int_eq(tu_log.n, 3);
    ck_assert_int_eq(tu_log.e[1].value, 1);
    ck_assert_int_eq(tu_log.e[2].value, 2);
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(3)), 0);
    ck_assert_int_eq(tu_log.n, 4);
    deferred_multi_finish(m, deferred_value_none());
    deferred_unref(m);
}
END_TEST

/* On the value 1, adds to the stream arg a callback recording tag 2 and an
 * errback recording tag 3 (which no value may reach). */
static deferred_value_t add_to_own(deferred_value_t v, void *arg)
{
    if (deferred_value_get_int(v) == 1) {
        ck_assert_int_eq(deferred_add_callback(arg, tu_record, TAG(2)), 0);
        ck_assert_int_eq(deferred_add_errback(arg, tu_record, TAG(3)), 0);
    }
    return v;
}

/* Entries added from inside the row run in that row, where the loop
 * stopped; the errback among them is skipped by every row after. */
START_TEST(test_multi_row_adds_to_own_stream)
{
    deferred_t *m = deferred_multi_new();

    ck_assert_ptr_nonnull(m);
    ck_assert_int_eq(deferred_add_callback(m, add_to_own, m), 0);
    ck_assert_int_eq(deferred_add_callback(m, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(0)), 0);
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(1)), 0);
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(2)), 0);
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(3)), 0);
    ck_assert_int_eq(tu_log.n, 7);
    ck_assert_int_eq(tu_log.e[0].tag, 1);
    ck_assert_int_eq(tu_log.e[1].tag, 1);
    ck_assert_int_eq(tu_log.e[1].value, 1);
    ck_assert_int_eq(tu_log.e[2].tag, 2);
    ck_assert_int_eq(tu_log.e[2].value, 1);
    ck_assert_int_eq(tu_log.e[3].tag, 1);
    ck_assert_int_eq(tu_log.e[4].tag, 2);
    ck_assert_int_eq(tu_log.e[4].value, 2);
    ck_assert_int_eq(tu_log.e[6].tag, 2);
    ck_assert_int_eq(tu_log_count(3), 0);
    deferred_multi_finish(m, deferred_value_none());
    deferred_unref(m);
}
END_TEST

/* Drops the reference arg points at, once. */
static deferred_value_t unref_own(deferred_value_t v, void *arg)
{
    deferred_t **d = arg;

    if (*d) {
        deferred_unref(*d);
        *d = NULL;
    }
    return v;
}

/* A callback drops the last reference to its stream: the row goes on to
 * its end, and the stream is freed after it (the teardown finds no leak). */
START_TEST(test_multi_row_unrefs_own_stream)
{
    deferred_t *m = deferred_multi_new(), *ref;

    ck_assert_ptr_nonnull(m);
    ref = m;
    ck_assert_int_eq(deferred_add_callback(m, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_add_callback(m, unref_own, &ref), 0);
    ck_assert_int_eq(deferred_add_callback(m, tu_record, TAG(2)), 0);
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(0)), 0);
    ck_assert_ptr_null(ref);
    ck_assert_int_eq(tu_log.n, 2);
    ck_assert_int_eq(tu_log.e[1].tag, 2);
}
END_TEST

/* A failure emitted as a row skips the callbacks and ends the stream. */
START_TEST(test_multi_emit_failure_row)
{
    deferred_t *m = deferred_multi_new(), *end;

    ck_assert_ptr_nonnull(m);
    ck_assert_int_eq(deferred_add_callback(m, tu_record, TAG(1)), 0);
    end = deferred_multi_when_finished(m);
    ck_assert_int_eq(deferred_add_both(end, end_record, TAG(2)), 0);
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(0)), 0);
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_failure(deferred_failure_new(
                                                 DEFERRED_DOMAIN_USER, 43, "bad row"))),
                     0);
    ck_assert_int_eq(tu_log.n, 2);
    ck_assert_int_eq(tu_log.e[0].tag, 1);
    ck_assert_int_eq(tu_log.e[1].tag, 2);
    ck_assert_int_eq(tu_log.e[1].kind, TU_FAILURE);
    ck_assert_int_eq(tu_log.e[1].code, 43);
    deferred_value_release(deferred_result_take(end)); /* handled here */
    deferred_unref(end);
    deferred_unref(m);
}
END_TEST

/* A chain of streams, each row's callback emitting into the next one: the
 * rows nest in C only NEST_MAX deep, the rest is done by the later queue
 * before the first emit returns, in bounded stack. */
#define NEST_STREAMS 20000
static deferred_t *nest_streams[NEST_STREAMS];
static char *stack_top, *stack_low;

static deferred_value_t emit_next(deferred_value_t v, void *arg)
{
    intptr_t i = ARGI(arg);
    char here;

    if (&here < stack_low)
        stack_low = &here;
    ck_assert_int_eq(deferred_multi_emit(nest_streams[i + 1], deferred_value_int(
                                                                 deferred_value_get_int(v) + 1)),
                     0);
    return v;
}

START_TEST(test_multi_row_nesting_bounded)
{
    char top;
    int i, round;

    for (i = 0; i < NEST_STREAMS; i++) {
        nest_streams[i] = deferred_multi_new();
        ck_assert_ptr_nonnull(nest_streams[i]);
        if (i + 1 < NEST_STREAMS)
            ck_assert_int_eq(deferred_add_callback(nest_streams[i], emit_next, TAG(i)), 0);
        else
            ck_assert_int_eq(deferred_add_callback(nest_streams[i], tu_record, TAG(1)), 0);
    }
    /* The first round finds each chain plain; the second takes the
     * emit's fast path all the way. */
    for (round = 0; round < 2; round++) {
        stack_top = stack_low = &top;
        ck_assert_int_eq(deferred_multi_emit(nest_streams[0], deferred_value_int(round)), 0);
        ck_assert_int_eq(tu_log.n, round + 1);
        ck_assert_int_eq(tu_log.e[round].value, round + NEST_STREAMS - 1);
        ck_assert_int_lt(stack_top - stack_low, 256 * 1024);
    }
    for (i = 0; i < NEST_STREAMS; i++)
        deferred_unref(nest_streams[i]);
}
END_TEST

/* The flow hook told to hold back, then taken away and set again before
 * the stream runs its next row: that row runs the runner's way, which
 * tells the hook at its end that the stream takes rows again. */
START_TEST(test_multi_row_tells_flow_hook)
{
    deferred_t *m = deferred_multi_new();

    ck_assert_ptr_nonnull(m);
    ck_assert_int_eq(deferred_add_callback(m, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_multi_set_flow(m, flow_hook, NULL), 0);
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(0)), 0);
    ck_assert_int_eq(deferred_pause(m), 0);
    ck_assert_int_eq(flow_paused_calls, 1);
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(1)), 0); /* queued */
    ck_assert_int_eq(deferred_multi_set_flow(m, NULL, NULL), 0);
    ck_assert_int_eq(deferred_unpause(m), 0); /* the runner runs it */
    ck_assert_int_eq(tu_log.n, 2);
    ck_assert_int_eq(flow_resumed_calls, 0);
    ck_assert_int_eq(deferred_multi_set_flow(m, flow_hook, NULL), 0);
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(2)), 0);
    ck_assert_int_eq(tu_log.n, 3);
    ck_assert_int_eq(flow_resumed_calls, 1);
    ck_assert(!flow_state);
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(3)), 0);
    ck_assert_int_eq(tu_log.n, 4);
    ck_assert_int_eq(flow_resumed_calls, 1);
    deferred_multi_finish(m, deferred_value_none());
    deferred_unref(m);
}
END_TEST

/* The flow hook, told the stream takes rows again, emits a row into it:
 * the row waits for the hook to return (the runner that told it runs it
 * next), it does not nest in the hook. */
static int hook_emits;
static void emitting_hook(deferred_t *d, bool paused, void *arg)
{
    (void)arg;
    flow_hook(d, paused, NULL);
    if (!paused && hook_emits-- > 0) {
        int before = tu_log.n;

        ck_assert_int_eq(deferred_multi_emit(d, deferred_value_int(5)), 0);
        ck_assert_int_eq(tu_log.n, before);
        ck_assert_uint_eq(deferred_multi_queued(d), 1);
    }
}

START_TEST(test_multi_flow_hook_emits)
{
    deferred_t *m = deferred_multi_new();

    ck_assert_ptr_nonnull(m);
    hook_emits = 1;
    ck_assert_int_eq(deferred_add_callback(m, wait_on, TAG(1)), 0);
    ck_assert_int_eq(deferred_add_callback(m, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_multi_set_flow(m, emitting_hook, NULL), 0);
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(0)), 0);
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(1)), 0);
    ck_assert_ptr_nonnull(held);
    ck_assert_int_eq(flow_paused_calls, 1);
    ck_assert_int_eq(deferred_callback(held, deferred_value_int(100)), 0);
    ck_assert_int_eq(flow_resumed_calls, 1);
    ck_assert_int_eq(tu_log.n, 3);
    ck_assert_int_eq(tu_log.e[1].value, 100);
    ck_assert_int_eq(tu_log.e[2].value, 5);
    ck_assert_uint_eq(deferred_multi_queued(m), 0);
    deferred_unref(held);
    deferred_multi_finish(m, deferred_value_none());
    deferred_unref(m);
}
END_TEST

/* Bad input to a stream that takes rows the fast way. */
START_TEST(test_multi_bad_input_running)
{
    deferred_t *single = deferred_new(), *m = deferred_multi_new();

    ck_assert_int_eq(deferred_add_callback(m, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(0)), 0);
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_deferred(deferred_ref(single))), -EINVAL);
    ck_assert_int_eq(deferred_multi_emit(single, tu_tracked(1)), -EINVAL);
    ck_assert_int_eq(tu_released, 1);
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(1)), 0);
    ck_assert_int_eq(tu_log.n, 2);
    deferred_unref(single);
    deferred_multi_finish(m, deferred_value_none());
    deferred_unref(m);
}
END_TEST

/* Out of memory: the queue cannot grow, the emit is -ENOMEM, nothing
 * leaks; creation fails cleanly at every allocation.  tu_oom_sweep()
 * fails each allocation in turn; every failure must surface. */
static void sc_multi_oom(struct tu_oom *r)
{
    deferred_t *m;
    int rc = 0, i, emitted = 0;

    TU_NEW(r, m, deferred_multi_new(), out);
    deferred_pause(m);
    for (i = 0; i < 40; i++) {
        deferred_value_t v = tu_tracked(i);

        if (deferred_value_is_failure(v))
            r->saw = true; /* the test's own allocation failed */
        rc = deferred_multi_emit(m, v);
        if (rc == -ENOMEM)
            r->saw = true;
        else
            ck_assert_int_eq(rc, 0);
        if (rc == 0)
            emitted++;
    }
    deferred_unref(m);
    r->ok = emitted == 40;
out:
    return;
}

START_TEST(test_multi_oom)
{
    tu_oom_sweep("multi_oom", sc_multi_oom, NULL, TU_OOM_STRICT);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("multi");
    TCase *tc = tcase_create("multi");

    tcase_add_checked_fixture(tc, setup, tu_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_M01_values_in_order);
    tcase_add_test(tc, test_M02_waiting_callback_holds_back);
    tcase_add_test(tc, test_M03_row_failure_ends_stream);
    tcase_add_test(tc, test_M04_errback_recovers_row);
    tcase_add_test(tc, test_multi_pause_queues);
    tcase_add_test(tc, test_multi_row_cancels_own_stream);
    tcase_add_test(tc, test_multi_queued_row_cancels_own_stream);
    tcase_add_test(tc, test_multi_emit_from_callback_never_nests);
    tcase_add_test(tc, test_multi_cancel);
    tcase_add_test(tc, test_multi_cancel_waiting_row);
    tcase_add_test(tc, test_multi_chaining_waits_for_end);
    tcase_add_test(tc, test_multi_bad_input);
    tcase_add_test(tc, test_multi_free_releases);
    tcase_add_test(tc, test_multi_no_allocation_per_row);
    tcase_add_test(tc, test_multi_row_finishes_own_stream);
    tcase_add_test(tc, test_multi_row_pauses_own_stream);
    tcase_add_test(tc, test_multi_row_adds_to_own_stream);
    tcase_add_test(tc, test_multi_row_unrefs_own_stream);
    tcase_add_test(tc, test_multi_emit_failure_row);
    tcase_add_test(tc, test_multi_row_nesting_bounded);
    tcase_add_test(tc, test_multi_row_tells_flow_hook);
    tcase_add_test(tc, test_multi_flow_hook_emits);
    tcase_add_test(tc, test_multi_bad_input_running);
    tcase_add_test(tc, test_multi_oom);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
