/*
 * combinators-util.c: the recorder, small callbacks and fixture of the
 * combinator tests (see combinators-util.h).
 */
#include "combinators-util.h"

int expected_unhandled;
struct seen seen;

intptr_t num(deferred_value_t v)
{
    if (tu_is_tracked(v))
        return tu_tracked_get(v);
    return deferred_value_get_int(v);
}

deferred_failure_t *user_failure(int code)
{
    return deferred_failure_new(DEFERRED_DOMAIN_USER, code, "user %d", code);
}

deferred_value_t record(deferred_value_t v, void *arg)
{
    int i = seen.n++;

    (void)arg;
    ck_assert_int_lt(i, MAX_SEEN);
    seen.failure[i] = deferred_value_is_failure(v);
    seen.code[i] = deferred_failure_code(deferred_value_get_failure(v));
    seen.none[i] = deferred_value_is_none(v);
    seen.value[i] = seen.failure[i] ? 0 : num(v);
    return v;
}

deferred_value_t pass(deferred_value_t v, void *arg)
{
    (void)arg;
    return v;
}

deferred_value_t record_drop(deferred_value_t v, void *arg)
{
    deferred_value_release(record(v, arg));
    return deferred_value_none();
}

void succeed_canceller(deferred_t *d, void *arg)
{
    (*(int *)arg)++;
    deferred_callback(d, tu_tracked(99));
}

deferred_value_t take_and_drop(deferred_t *d)
{
    deferred_value_t v = deferred_result_take(d);

    deferred_unref(d);
    return v;
}

void cb_setup(void)
{
    tu_setup();
    expected_unhandled = 0;
    memset(&seen, 0, sizeof(seen));
}

void cb_teardown(void)
{
    tu_teardown();
    ck_assert_int_eq(tu_reports.unhandled, expected_unhandled);
    ck_assert_int_eq(tu_reports.total - tu_reports.unhandled, 0);
}

/* ---- out of memory ---- */

/* Out of memory anywhere in a gather (arg NULL) or a race (arg non-NULL):
 * ENOMEM surfaces, nothing leaks.  Shared by test_oom_gather
 * (t/test-combinators-gather.c) and test_oom_race
 * (t/test-combinators-race-merge.c). */
void cb_oom_gather_race(struct tu_oom *r)
{
    bool race = r->arg != NULL;
    deferred_t *in[3] = {NULL, NULL, NULL}, *g;
    deferred_value_t v;
    int i;

    for (i = 0; i < 3; i++)
        if (!(in[i] = deferred_new()))
            r->saw = true;
    if (r->saw)
        goto out;
    /* in[1]'s chain is full (the inline entries), so the combinator's
     * pair needs an allocation there: the abort path is exercised. */
    for (i = 0; i < 10; i++)
        deferred_add_both(in[1], pass, NULL);
    deferred_callback(in[0], tu_oom_tracked(r, 0));
    g = race ? deferred_race(in, 3) : deferred_gather(in, 3, DEFERRED_CONSUME_ERRORS);
    if (!g) {
        ck_assert_int_eq(errno, ENOMEM);
        r->saw = true;
        /* the input keeps its value: nothing was taken */
        v = deferred_result_take(in[0]);
        if (deferred_value_is_failure(v))
            r->saw = true;
        deferred_value_release(v);
        goto out;
    }
    deferred_errback(in[1], user_failure(1));
    deferred_callback(in[2], tu_oom_tracked(r, 2));
    v = deferred_result_take(g);
    /* the normal result: the race won by in[0]; the gather failed by
     * in[1]'s failure */
    r->ok = race ? !deferred_value_is_failure(v)
                 : deferred_failure_find(deferred_value_get_failure(v),
                                         DEFERRED_DOMAIN_USER, 1) != NULL;
    tu_oom_note(r, v);
    deferred_value_release(v);
    deferred_unref(g);
out:
    for (i = 0; i < 3; i++)
        deferred_unref(in[i]);
}
