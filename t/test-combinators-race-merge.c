/*
 * test-combinators-race-merge.c: race and merge.
 *
 * The scenarios C05 and C07 (defined in docs/scenarios.md), then the cases
 * of Twisted's test_defer.py for race, in spirit, the merge of deferreds
 * and multi-fire streams into one stream, and the out-of-memory sweeps of
 * a race and a merge.
 *
 * The allocator, the report hook and the sweep are testutil's; every
 * test's teardown (combinators-util.c) asserts that no block is alive and
 * that nothing was reported unless the test said it expected it.
 */
#include "combinators-util.h"

/* ---- C: acceptance ----------------------------------------------------- */

START_TEST(test_C05_race)
{
    deferred_t *in[3], *r;
    int cancels[3] = {0, 0, 0}, i;
    deferred_value_t v;
    deferred_indexed_t *x;
    deferred_failure_t *f;

    for (i = 0; i < 3; i++)
        in[i] = deferred_new_cancellable(tu_canceller_count, &cancels[i], NULL);
    r = deferred_race(in, 3);
    deferred_callback(in[1], tu_tracked(11));
    ck_assert_int_eq(cancels[0], 1);
    ck_assert_int_eq(cancels[1], 0);
    ck_assert_int_eq(cancels[2], 1);
    v = take_and_drop(r);
    x = deferred_value_get_indexed(v);
    ck_assert_uint_eq(x->index, 1);
    ck_assert_int_eq(num(x->value), 11);
    deferred_value_release(v);
    ck_assert_int_eq(tu_released, 1);
    /* The losers' ECANCELED failures were consumed: nothing reported, and
     * their chains go on empty. */
    deferred_add_both(in[0], record, NULL);
    ck_assert(seen.none[0]);
    for (i = 0; i < 3; i++)
        deferred_unref(in[i]);

    /* All failing: a failure group in index order. */
    for (i = 0; i < 3; i++)
        in[i] = deferred_new();
    r = deferred_race(in, 3);
    deferred_errback(in[2], user_failure(3));
    deferred_errback(in[0], user_failure(1));
    ck_assert(!deferred_has_fired(r));
    deferred_errback(in[1], user_failure(2));
    f = deferred_value_get_failure(deferred_result(r));
    ck_assert(deferred_failure_is(f, DEFERRED_DOMAIN_LIBRARY, DEFERRED_EGROUP));
    ck_assert_uint_eq(deferred_failure_group_size(f), 3);
    for (i = 0; i < 3; i++)
        ck_assert_int_eq(deferred_failure_code(deferred_failure_group_get(f, i)), i + 1);
    deferred_value_release(take_and_drop(r));
    for (i = 0; i < 3; i++)
        deferred_unref(in[i]);
}
END_TEST

/* ---- race, Twisted's cases --------------------------------------------- */

/* A loser that ignores the cancel and succeeds later: its value is
 * released, not reported; the winner is not cancelled. */
START_TEST(test_race_late_loser)
{
    deferred_t *in[3], *r;
    int cancels[3] = {0, 0, 0};
    deferred_value_t v;

    in[0] = deferred_new_cancellable(succeed_canceller, &cancels[0], NULL);
    in[1] = deferred_new_cancellable(tu_canceller_count, &cancels[1], NULL);
    in[2] = deferred_new_cancellable(tu_canceller_count, &cancels[2], NULL);
    /* in[2] fired but paused: the cancel cannot reach it. */
    deferred_pause(in[2]);
    deferred_callback(in[2], tu_tracked(22));
    r = deferred_race(in, 3);
    deferred_callback(in[1], tu_tracked(11));
    ck_assert_int_eq(cancels[0], 1);
    ck_assert_int_eq(cancels[1], 0);
    ck_assert_int_eq(cancels[2], 0); /* it had fired */
    ck_assert_int_eq(tu_released, 1);   /* the canceller's 99 */
    deferred_unpause(in[2]);
    ck_assert_int_eq(tu_released, 2);   /* the late 22 */
    v = take_and_drop(r);
    ck_assert_uint_eq(deferred_value_get_indexed(v)->index, 1);
    deferred_value_release(v);
    ck_assert_int_eq(tu_released, 3);
    deferred_unref(in[0]);
    deferred_unref(in[1]);
    deferred_unref(in[2]);
}
END_TEST

/* Cancelling a race cancels every input once; it fails with the group of
 * their ECANCELED failures. */
START_TEST(test_race_cancel)
{
    deferred_t *in[2], *r;
    int cancels[2] = {0, 0};
    deferred_failure_t *f;

    in[0] = deferred_new_cancellable(tu_canceller_count, &cancels[0], NULL);
    in[1] = deferred_new_cancellable(tu_canceller_count, &cancels[1], NULL);
    r = deferred_race(in, 2);
    deferred_cancel(r);
    ck_assert_int_eq(cancels[0], 1);
    ck_assert_int_eq(cancels[1], 1);
    f = deferred_value_get_failure(deferred_result(r));
    ck_assert(deferred_failure_is(f, DEFERRED_DOMAIN_LIBRARY, DEFERRED_EGROUP));
    ck_assert_int_eq(deferred_failure_code(deferred_failure_group_get(f, 1)), ECANCELED);
    deferred_value_release(take_and_drop(r));
    deferred_unref(in[0]);
    deferred_unref(in[1]);

    /* A race cancelled whose first input's canceller succeeds: that input
     * wins, the other is cancelled exactly once. */
    cancels[0] = cancels[1] = 0;
    in[0] = deferred_new_cancellable(succeed_canceller, &cancels[0], NULL);
    in[1] = deferred_new_cancellable(tu_canceller_count, &cancels[1], NULL);
    r = deferred_race(in, 2);
    deferred_cancel(r);
    ck_assert_int_eq(cancels[0], 1);
    ck_assert_int_eq(cancels[1], 1);
    ck_assert_uint_eq(deferred_value_get_indexed(deferred_result(r))->index, 0);
    deferred_value_release(take_and_drop(r));
    deferred_unref(in[0]);
    deferred_unref(in[1]);
}
END_TEST

/* An input that had succeeded before the race was built wins at once. */
START_TEST(test_race_already_fired)
{
    deferred_t *in[2], *r;
    int cancels = 0;

    in[0] = deferred_new_cancellable(tu_canceller_count, &cancels, NULL);
    in[1] = deferred_succeed(deferred_value_int(5));
    r = deferred_race(in, 2);
    ck_assert(deferred_has_result(r));
    ck_assert_int_eq(cancels, 1);
    ck_assert_uint_eq(deferred_value_get_indexed(deferred_result(r))->index, 1);
    ck_assert_int_eq(deferred_value_get_indexed(deferred_result(r))->value.ptr == (void *)5, 1);
    deferred_unref(r);
    deferred_unref(in[0]);
    deferred_unref(in[1]);
}
END_TEST

/* ---- merge ------------------------------------------------------------- */

/* The stream's end, recorded when it fires. */
static struct {
    int fired;
    bool failure;
    int code;
    bool none;
} end_seen;

static deferred_value_t record_end(deferred_value_t v, void *arg)
{
    (void)arg;
    end_seen.fired++;
    end_seen.failure = deferred_value_is_failure(v);
    end_seen.code = deferred_failure_code(deferred_value_get_failure(v));
    end_seen.none = deferred_value_is_none(v);
    deferred_value_release(v);
    return deferred_value_none();
}

/* Watch the end of stream s (the reference on the end is dropped: the
 * stream keeps it). */
static void watch_end(deferred_t *s)
{
    deferred_t *end = deferred_multi_when_finished(s);

    ck_assert_ptr_nonnull(end);
    ck_assert_int_eq(deferred_add_both(end, record_end, NULL), 0);
    deferred_unref(end);
}

/* A source's flow hook: records the last state it was told and how many
 * times it was told to stop. */
struct source {
    bool paused;
    int pauses, resumes;
};

static void source_flow(deferred_t *d, bool paused, void *arg)
{
    struct source *src = arg;

    (void)d;
    src->paused = paused;
    if (paused)
        src->pauses++;
    else
        src->resumes++;
}

/* A per-row callback that waits on *arg (a deferred) for the row 100. */
static deferred_value_t wait_on_100(deferred_value_t v, void *arg)
{
    if (num(v) == 100) {
        deferred_value_release(v);
        return deferred_value_deferred(deferred_ref(arg));
    }
    return v;
}

START_TEST(test_C07_merge_three_deferreds)
{
    deferred_t *in[3], *m;
    int i;

    memset(&end_seen, 0, sizeof(end_seen));
    for (i = 0; i < 3; i++)
        in[i] = deferred_new();
    m = deferred_merge(in, 3);
    ck_assert_ptr_nonnull(m);
    ck_assert(deferred_is_multi(m));
    ck_assert(deferred_is_paused(m)); /* returned paused */
    ck_assert_int_eq(deferred_add_callback(m, record_drop, NULL), 0);
    watch_end(m);
    ck_assert_int_eq(deferred_unpause(m), 0);
    ck_assert(!deferred_is_paused(m));

    /* Results come out in arrival order, whatever the input order. */
    deferred_callback(in[2], tu_tracked(12));
    ck_assert_int_eq(seen.n, 1);
    ck_assert_int_eq(seen.value[0], 12);
    deferred_callback(in[0], tu_tracked(10));
    ck_assert_int_eq(seen.n, 2);
    ck_assert_int_eq(seen.value[1], 10);
    ck_assert_int_eq(end_seen.fired, 0);
    ck_assert(!deferred_has_fired(m));
    deferred_callback(in[1], tu_tracked(11));
    ck_assert_int_eq(seen.n, 3);
    ck_assert_int_eq(seen.value[2], 11);
    /* It ends after the last, once, with the empty value. */
    ck_assert_int_eq(end_seen.fired, 1);
    ck_assert(!end_seen.failure);
    ck_assert(end_seen.none);
    ck_assert(deferred_has_fired(m));
    ck_assert_int_eq(tu_released, 3); /* each row released by record_drop */
    /* The values moved: the inputs' chains go on with the empty value. */
    deferred_add_callback(in[0], record, NULL);
    ck_assert(seen.none[3]);
    deferred_unref(m);
    for (i = 0; i < 3; i++)
        deferred_unref(in[i]);
}
END_TEST

/* Inputs that fired before the call wait in their inputs until the
 * stream is unpaused, then come out in input order. */
START_TEST(test_merge_already_fired)
{
    deferred_t *in[3], *m;
    int i;

    memset(&end_seen, 0, sizeof(end_seen));
    for (i = 0; i < 3; i++)
        in[i] = deferred_new();
    deferred_callback(in[2], tu_tracked(2));
    deferred_callback(in[0], tu_tracked(0));
    m = deferred_merge(in, 3);
    ck_assert_ptr_nonnull(m);
    deferred_add_callback(m, record_drop, NULL);
    watch_end(m);
    ck_assert_int_eq(seen.n, 0);
    ck_assert(deferred_is_paused(in[0])); /* held: the stream is paused */
    deferred_unpause(m);
    ck_assert_int_eq(seen.n, 2);
    ck_assert_int_eq(seen.value[0], 0);
    ck_assert_int_eq(seen.value[1], 2);
    ck_assert(!deferred_is_paused(in[0]));
    ck_assert_int_eq(end_seen.fired, 0);
    deferred_callback(in[1], tu_tracked(1));
    ck_assert_int_eq(seen.n, 3);
    ck_assert_int_eq(end_seen.fired, 1);
    deferred_unref(m);
    for (i = 0; i < 3; i++)
        deferred_unref(in[i]);
}
END_TEST

/* Two multi-fire inputs and a single-shot one, interleaved; the stream
 * holds rows back (a waiting row, then a pause): an input that delivers a
 * row meanwhile is held (paused: the multi-fire ones queue their next rows
 * and tell their sources to stop); the others are left alone. */
START_TEST(test_merge_interleaved_backpressure)
{
    deferred_t *in[3], *m, *gate;
    struct source src[2];
    int i;

    memset(&end_seen, 0, sizeof(end_seen));
    memset(src, 0, sizeof(src));
    in[0] = deferred_multi_new();
    in[1] = deferred_multi_new();
    in[2] = deferred_new();
    deferred_multi_set_flow(in[0], source_flow, &src[0]);
    deferred_multi_set_flow(in[1], source_flow, &src[1]);
    gate = deferred_new();
    m = deferred_merge(in, 3);
    ck_assert_ptr_nonnull(m);
    /* Nothing delivered yet: nothing held, though the stream is paused. */
    ck_assert(!src[0].paused && !src[1].paused);
    deferred_add_callback(m, wait_on_100, gate);
    deferred_add_callback(m, record_drop, NULL);
    watch_end(m);
    deferred_unpause(m);
    ck_assert(!src[0].paused && !src[1].paused);

    /* Interleaved as emitted. */
    deferred_multi_emit(in[0], tu_tracked(1));
    deferred_multi_emit(in[1], tu_tracked(2));
    deferred_multi_emit(in[0], tu_tracked(3));
    ck_assert_int_eq(seen.n, 3);
    ck_assert_int_eq(seen.value[0], 1);
    ck_assert_int_eq(seen.value[1], 2);
    ck_assert_int_eq(seen.value[2], 3);
    ck_assert_int_eq(src[0].pauses + src[1].pauses, 0);

    /* Row 100 waits on gate: the stream blocks; the input that gave it is
     * held, the others are not touched. */
    deferred_multi_emit(in[1], tu_tracked(100));
    ck_assert_int_eq(seen.n, 3);
    ck_assert(deferred_is_paused(m));
    ck_assert(src[1].paused && !src[0].paused);
    ck_assert(deferred_is_paused(in[1]) && !deferred_is_paused(in[0]));
    /* What the inputs give meanwhile: in[0]'s first row goes to the
     * stream's queue and holds in[0], whose next row waits inside it; the
     * single-shot input's one row is queued in the stream. */
    ck_assert_int_eq(deferred_multi_emit(in[0], tu_tracked(4)), 0);
    ck_assert(src[0].paused);
    ck_assert_int_eq(deferred_multi_emit(in[0], tu_tracked(5)), 0);
    ck_assert_int_eq(deferred_multi_emit(in[1], tu_tracked(55)), 0);
    deferred_callback(in[2], tu_tracked(6));
    ck_assert_uint_eq(deferred_multi_queued(in[0]), 1);
    ck_assert_uint_eq(deferred_multi_queued(in[1]), 1);
    ck_assert_uint_eq(deferred_multi_queued(m), 2);
    ck_assert_int_eq(seen.n, 3);

    /* The gate opens: the waiting row goes on, then the rows the stream
     * queued, then the held inputs in the order they were held; the
     * sources are told to go on. */
    deferred_callback(gate, deferred_value_int(100));
    ck_assert_int_eq(seen.n, 8);
    ck_assert_int_eq(seen.value[3], 100);
    ck_assert_int_eq(seen.value[4], 4);
    ck_assert_int_eq(seen.value[5], 6);
    ck_assert_int_eq(seen.value[6], 55);
    ck_assert_int_eq(seen.value[7], 5);
    ck_assert(!src[0].paused && !src[1].paused);
    ck_assert(!deferred_is_paused(in[0]) && !deferred_is_paused(in[1]));

    /* deferred_pause() on the stream: an input that delivers is held;
     * pauses count. */
    deferred_pause(m);
    deferred_pause(m);
    ck_assert(!src[0].paused && !src[1].paused);
    deferred_multi_emit(in[1], tu_tracked(7));
    ck_assert(src[1].paused && !src[0].paused);
    ck_assert_int_eq(seen.n, 8);
    deferred_unpause(m);
    ck_assert(src[1].paused);
    deferred_unpause(m);
    ck_assert_int_eq(seen.n, 9);
    ck_assert_int_eq(seen.value[8], 7);
    ck_assert(!src[0].paused && !src[1].paused);

    /* The end of one input does not end the stream; the last one does. A
     * final value of an input is not a row. */
    deferred_multi_finish(in[0], tu_tracked(1000));
    ck_assert_int_eq(end_seen.fired, 0);
    ck_assert_int_eq(seen.n, 9);
    deferred_multi_emit(in[1], tu_tracked(8));
    ck_assert_int_eq(seen.n, 10);
    deferred_multi_finish(in[1], deferred_value_none());
    ck_assert_int_eq(end_seen.fired, 1);
    ck_assert(!end_seen.failure);
    deferred_unref(m);
    deferred_unref(gate);
    for (i = 0; i < 3; i++)
        deferred_unref(in[i]);
}
END_TEST

/* Cancelling the stream cancels the inputs that have not ended, once;
 * it ends with ECANCELED; later results are released. */
START_TEST(test_merge_cancel)
{
    deferred_t *in[3], *m;
    int cancels[3] = {0, 0, 0}, i;

    memset(&end_seen, 0, sizeof(end_seen));
    in[0] = deferred_new_cancellable(tu_canceller_count, &cancels[0], NULL);
    in[1] = deferred_new_cancellable(tu_canceller_count, &cancels[1], NULL);
    in[2] = deferred_multi_new_cancellable(tu_canceller_count, &cancels[2], NULL);
    m = deferred_merge(in, 3);
    deferred_add_callback(m, record_drop, NULL);
    watch_end(m);
    deferred_unpause(m);
    deferred_callback(in[1], tu_tracked(1));
    ck_assert_int_eq(seen.n, 1);
    deferred_cancel(m);
    ck_assert_int_eq(cancels[0], 1);
    ck_assert_int_eq(cancels[1], 0); /* it had fired */
    ck_assert_int_eq(cancels[2], 1);
    ck_assert_int_eq(seen.n, 1); /* the inputs' ECANCELED are not rows */
    ck_assert_int_eq(end_seen.fired, 1);
    ck_assert(end_seen.failure);
    ck_assert_int_eq(end_seen.code, ECANCELED);
    deferred_cancel(m); /* idempotent */
    ck_assert_int_eq(cancels[0] + cancels[2], 2);
    /* The inputs' failures were taken by the merge: none is reported. */
    for (i = 0; i < 3; i++)
        deferred_unref(in[i]);
    deferred_unref(m);

    /* Cancelling while the stream is paused: the held inputs are let go. */
    memset(cancels, 0, sizeof(cancels));
    memset(&end_seen, 0, sizeof(end_seen));
    in[0] = deferred_new_cancellable(tu_canceller_count, &cancels[0], NULL);
    in[1] = deferred_new();
    deferred_callback(in[1], tu_tracked(5));
    tu_released = 0;
    m = deferred_merge(in, 2);
    watch_end(m);
    deferred_cancel(m);
    ck_assert_int_eq(cancels[0], 1);
    ck_assert_int_eq(end_seen.fired, 1);
    ck_assert_int_eq(end_seen.code, ECANCELED);
    ck_assert_int_eq(tu_released, 1); /* in[1]'s value, never a row */
    ck_assert(!deferred_is_paused(in[0]) && !deferred_is_paused(in[1]));
    deferred_unref(m);
    deferred_unref(in[0]);
    deferred_unref(in[1]);
}
END_TEST

static deferred_value_t recover_row(deferred_value_t v, void *arg)
{
    deferred_failure_t *f = deferred_value_get_failure(v);
    int *recovered = arg;

    (*recovered)++;
    ck_assert_ptr_nonnull(f);
    /* The failure names the input it came from. */
    ck_assert_uint_ge(deferred_failure_context_size(f), 1);
    ck_assert_str_eq(deferred_failure_context_stage(f, deferred_failure_context_size(f) - 1),
                     "merge");
    ck_assert_str_eq(deferred_failure_context_item(f, deferred_failure_context_size(f) - 1),
                     "input 1");
    deferred_value_release(v);
    return deferred_value_int(-1);
}

/* Failures are rows: an errback recovers them one by one; one that
 * nothing recovers ends the stream failed and cancels the others. */
START_TEST(test_merge_failure)
{
    deferred_t *in[3], *m;
    int cancels[3] = {0, 0, 0}, recovered = 0, i;
    deferred_t *end;
    deferred_value_t v;

    memset(&end_seen, 0, sizeof(end_seen));
    in[0] = deferred_new();
    in[1] = deferred_new();
    in[2] = deferred_multi_new();
    m = deferred_merge(in, 3);
    deferred_add_errback(m, recover_row, &recovered);
    deferred_add_callback(m, record_drop, NULL);
    watch_end(m);
    deferred_unpause(m);
    deferred_errback(in[1], user_failure(5));
    ck_assert_int_eq(recovered, 1);
    ck_assert_int_eq(seen.n, 1);
    ck_assert_int_eq(seen.value[0], -1);
    deferred_callback(in[0], tu_tracked(0));
    deferred_multi_emit(in[2], tu_tracked(2));
    deferred_multi_finish(in[2], deferred_value_none());
    ck_assert_int_eq(seen.n, 3);
    ck_assert_int_eq(end_seen.fired, 1);
    ck_assert(!end_seen.failure);
    deferred_unref(m);
    for (i = 0; i < 3; i++)
        deferred_unref(in[i]);

    /* Unrecovered: the stream fails with it; the others are cancelled. */
    memset(&seen, 0, sizeof(seen));
    in[0] = deferred_new_cancellable(tu_canceller_count, &cancels[0], NULL);
    in[1] = deferred_new();
    in[2] = deferred_multi_new_cancellable(tu_canceller_count, &cancels[2], NULL);
    m = deferred_merge(in, 3);
    deferred_add_callback(m, record, NULL);
    end = deferred_multi_when_finished(m);
    deferred_unpause(m);
    deferred_multi_emit(in[2], tu_tracked(2));
    deferred_errback(in[1], user_failure(9));
    ck_assert_int_eq(seen.n, 1);
    ck_assert_int_eq(cancels[0], 1);
    ck_assert_int_eq(cancels[2], 1);
    v = deferred_result_take(end);
    ck_assert(deferred_failure_is(deferred_value_get_failure(v), DEFERRED_DOMAIN_USER, 9));
    deferred_value_release(v);
    ck_assert_int_eq(deferred_multi_emit(m, tu_tracked(3)), -EALREADY);
    deferred_unref(end);
    deferred_unref(m);
    for (i = 0; i < 3; i++)
        deferred_unref(in[i]);

    /* A multi-fire input that fails gives its failure as a row. */
    memset(&seen, 0, sizeof(seen));
    memset(&end_seen, 0, sizeof(end_seen));
    in[0] = deferred_multi_new();
    in[1] = deferred_multi_new();
    m = deferred_merge(in, 2);
    deferred_add_both(m, record_drop, NULL);
    watch_end(m);
    deferred_unpause(m);
    deferred_multi_finish(in[1], deferred_value_failure(user_failure(4)));
    ck_assert_int_eq(seen.n, 1);
    ck_assert(seen.failure[0]);
    ck_assert_int_eq(seen.code[0], 4);
    deferred_multi_finish(in[0], deferred_value_none());
    ck_assert_int_eq(end_seen.fired, 1);
    ck_assert(!end_seen.failure);
    deferred_unref(m);
    deferred_unref(in[0]);
    deferred_unref(in[1]);
}
END_TEST

/* No inputs: a stream that has ended already, with the empty value. */
START_TEST(test_merge_empty)
{
    deferred_t *m, *end;

    memset(&end_seen, 0, sizeof(end_seen));
    m = deferred_merge(NULL, 0);
    ck_assert_ptr_nonnull(m);
    ck_assert(deferred_is_multi(m));
    ck_assert(deferred_has_fired(m));
    end = deferred_multi_when_finished(m);
    ck_assert(deferred_has_result(end));
    ck_assert(deferred_value_is_none(deferred_result(end)));
    ck_assert_int_eq(deferred_multi_emit(m, tu_tracked(1)), -EALREADY);
    ck_assert_int_eq(deferred_unpause(m), 0);
    deferred_unref(end);
    deferred_unref(m);

    /* Bad input. */
    errno = 0;
    ck_assert_ptr_null(deferred_merge(NULL, 1));
    ck_assert_int_eq(errno, EINVAL);
    {
        deferred_t *in[2] = {deferred_new(), NULL};

        errno = 0;
        ck_assert_ptr_null(deferred_merge(in, 2));
        ck_assert_int_eq(errno, EINVAL);
        deferred_add_callback(in[0], record, NULL);
        deferred_callback(in[0], tu_tracked(1));
        ck_assert_int_eq(seen.value[0], 1); /* untouched */
        deferred_unref(in[0]);
    }
}
END_TEST

/* The stream dropped before it ended: the inputs go on, uncancelled; what
 * they deliver later is released; nothing leaks or is reported. */
START_TEST(test_merge_dropped_early)
{
    deferred_t *in[3], *m;
    int cancels = 0, i;

    in[0] = deferred_new_cancellable(tu_canceller_count, &cancels, NULL);
    in[1] = deferred_multi_new();
    in[2] = deferred_new();
    m = deferred_merge(in, 3);
    deferred_add_callback(m, record_drop, NULL);
    deferred_unpause(m);
    deferred_pause(m); /* held when it goes */
    deferred_unref(m);
    ck_assert_int_eq(cancels, 0);
    ck_assert(!deferred_is_paused(in[0]) && !deferred_is_paused(in[1]));
    deferred_callback(in[0], tu_tracked(0));
    deferred_multi_emit(in[1], tu_tracked(1));
    deferred_multi_finish(in[1], tu_tracked(2));
    deferred_errback(in[2], user_failure(3));
    ck_assert_int_eq(seen.n, 0);
    ck_assert_int_eq(tu_released, 3);
    for (i = 0; i < 3; i++)
        deferred_unref(in[i]);
}
END_TEST

/* ---- out of memory ----------------------------------------------------- */

/* Out of memory anywhere in a merge: ENOMEM surfaces, nothing leaks. */
static void sc_merge(struct tu_oom *r)
{
    deferred_t *in[3] = {NULL, NULL, NULL}, *m = NULL, *end = NULL, *gate = NULL;
    deferred_value_t v;
    int i;

    memset(&seen, 0, sizeof(seen));
    in[0] = deferred_new();
    in[1] = deferred_multi_new();
    in[2] = deferred_new();
    gate = deferred_new();
    if (!in[0] || !in[1] || !in[2] || !gate) {
        r->saw = true;
        goto out;
    }
    /* in[2]'s chain is full, so the merge's pair needs an allocation. */
    for (i = 0; i < 10; i++)
        deferred_add_both(in[2], pass, NULL);
    deferred_callback(in[0], tu_oom_tracked(r, 0));
    m = deferred_merge(in, 3);
    if (!m) {
        ck_assert_int_eq(errno, ENOMEM);
        r->saw = true;
        v = deferred_result_take(in[0]); /* nothing was taken */
        ck_assert(!deferred_is_paused(in[0]));
        if (deferred_value_is_failure(v))
            r->saw = true;
        deferred_value_release(v);
        goto out;
    }
    if (deferred_add_callback(m, wait_on_100, gate) < 0 ||
        deferred_add_both(m, record_drop, NULL) < 0)
        r->saw = true;
    end = deferred_multi_when_finished(m);
    deferred_unpause(m);
    deferred_multi_emit(in[1], tu_oom_tracked(r, 100));
    deferred_multi_emit(in[1], tu_oom_tracked(r, 1));
    deferred_errback(in[2], user_failure(2));
    deferred_callback(gate, deferred_value_none());
    deferred_multi_finish(in[1], deferred_value_none());
    v = tu_oom_note(r, deferred_result_take(end));
    /* the normal result: the stream ended well after its four rows */
    r->ok = end && !deferred_value_is_failure(v) && seen.n == 4;
    deferred_value_release(v);
out:
    deferred_unref(end);
    deferred_unref(m);
    deferred_unref(gate);
    for (i = 0; i < 3; i++)
        deferred_unref(in[i]);
}

/* ---- main -------------------------------------------------------------- */

START_TEST(test_oom_race)
{
    tu_oom_sweep("oom_race", cb_oom_gather_race, "race", CB_OOM_FLAGS);
}
END_TEST

START_TEST(test_oom_merge)
{
    tu_oom_sweep("oom_merge", sc_merge, NULL, CB_OOM_FLAGS);
}
END_TEST

static Suite *combinators_suite(void)
{
    Suite *s = suite_create("combinators-race-merge");
    TCase *tc = tcase_create("combinators-race-merge");

    tcase_add_checked_fixture(tc, cb_setup, cb_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_C05_race);
    tcase_add_test(tc, test_race_late_loser);
    tcase_add_test(tc, test_race_cancel);
    tcase_add_test(tc, test_race_already_fired);
    tcase_add_test(tc, test_C07_merge_three_deferreds);
    tcase_add_test(tc, test_merge_already_fired);
    tcase_add_test(tc, test_merge_interleaved_backpressure);
    tcase_add_test(tc, test_merge_cancel);
    tcase_add_test(tc, test_merge_failure);
    tcase_add_test(tc, test_merge_empty);
    tcase_add_test(tc, test_merge_dropped_early);
    tcase_add_test(tc, test_oom_race);
    tcase_add_test(tc, test_oom_merge);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(combinators_suite());
}
