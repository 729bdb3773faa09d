/*
 * test-oom.c: the failing-allocator test of the core (Jansson's
 * test_chaos, SQLite's out-of-memory testing); the other layers have their
 * own twins (t/test-oom-process.c, t/test-oom-ev.c, t/test-oom-sqlite.c,
 * and the combinators' sweeps in t/test-combinators-sync.c and
 * t/test-combinators-race-merge.c).
 *
 * Each scenario is a whole P scenario (the ids are defined in
 * docs/scenarios.md) written to check every return: an
 * action's -ENOMEM, a constructor's NULL, an ENOMEM failure as a result,
 * in a record log or in a report.  It cleans up on the way out and says
 * whether it saw ENOMEM.  tu_oom_sweep() (t/testutil.c) runs it with the
 * 1st, 2nd, ... Nth allocation failing (once, and then from N on) until a
 * run injects no failure, and asserts for each N: no crash, nothing alive
 * afterwards, and ENOMEM surfaced whenever a failure was injected
 * (TU_OOM_STRICT); on the last run the scenario's normal result is
 * correct.
 */
#include "testutil.h"

#include <stdio.h>
#include <string.h>

/* ---- scenarios ---- */

/* P01-P04: pairs, errbacks, both. */
static void sc_chain(struct tu_oom *r)
{
    deferred_t *d;

    TU_NEW(r, d, deferred_new(), out);
    TU_ACT(r, deferred_add_callback(d, tu_add_one, NULL));                /* 2 */
    TU_ACT(r, deferred_add_callbacks(d, tu_fail_with, TAG(5), tu_record, TAG(9)));
    TU_ACT(r, deferred_add_callback(d, tu_record, TAG(1)));               /* skip */
    TU_ACT(r, deferred_add_errback(d, tu_record, TAG(2)));                /* 5 */
    TU_ACT(r, deferred_add_errback(d, tu_recover, TAG(10)));
    TU_ACT(r, deferred_add_both(d, tu_record, TAG(3)));                   /* 10 */
    TU_ACT(r, deferred_add_callback(d, tu_add_one, NULL));
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(1)), 0);
    r->ok = tu_oom_take(r, d) == 11 && tu_log.n == 2 && tu_log.e[0].tag == 2 &&
            tu_log.e[0].code == 5 && tu_log.e[1].tag == 3 &&
            tu_log.e[1].value == 10;
    deferred_unref(d);
out:
    return;
}

/* P09: chaining onto an unfired inner. */
static void sc_chain_async(struct tu_oom *r)
{
    deferred_t *outer = NULL, *inner = NULL;

    TU_NEW(r, outer, deferred_new(), out);
    TU_NEW(r, inner, deferred_new(), out);
    TU_ACT(r, deferred_add_callback(outer, tu_return_deferred, inner));
    TU_ACT(r, deferred_add_callback(outer, tu_add_one, NULL));
    TU_ACT(r, deferred_add_errback(outer, tu_record, TAG(1)));
    ck_assert_int_eq(deferred_callback(outer, deferred_value_int(1)), 0);
    ck_assert_int_eq(deferred_callback(inner, deferred_value_int(41)), 0);
    r->ok = tu_oom_take(r, outer) == 42 && tu_log.n == 0;
out:
    deferred_unref(outer);
    deferred_unref(inner);
}

/* P09 again, with inners already holding 0..12 callbacks, so attaching
 * the outer's continuation has to grow the inner's chain. */
static void sc_chain_async_grow(struct tu_oom *r)
{
    int k, i, good = 0;

    for (k = 0; k <= 12; k++) {
        deferred_t *outer = NULL, *inner = NULL;

        TU_NEW(r, outer, deferred_new(), next);
        TU_NEW(r, inner, deferred_new(), next);
        for (i = 0; i < k; i++)
            TU_ACT(r, deferred_add_callback(inner, tu_pass, NULL));
        TU_ACT(r, deferred_add_callback(outer, tu_return_deferred, inner));
        TU_ACT(r, deferred_add_errback(outer, tu_record, TAG(1)));
        ck_assert_int_eq(deferred_callback(outer, deferred_value_int(1)), 0);
        ck_assert_int_eq(deferred_callback(inner, deferred_value_int(k)), 0);
        if (tu_oom_take(r, outer) == k)
            good++;
    next:
        deferred_unref(outer);
        deferred_unref(inner);
    }
    r->ok = good == 13 && tu_log.n == 0;
}

/* P10: chaining onto a fired inner, and a tracked value. */
static void sc_chain_sync(struct tu_oom *r)
{
    deferred_t *outer = NULL, *inner = NULL;

    TU_NEW(r, outer, deferred_new(), out);
    TU_NEW(r, inner, deferred_new(), out);
    ck_assert_int_eq(deferred_callback(inner, tu_oom_tracked(r, 41)), 0);
    TU_ACT(r, deferred_add_callback(outer, tu_return_deferred, inner));
    TU_ACT(r, deferred_add_callback(outer, tu_add_one, NULL));
    ck_assert_int_eq(deferred_callback(outer, deferred_value_int(1)), 0);
    TU_ACT(r, deferred_add_callback(inner, tu_record, TAG(1)));
    r->ok = tu_oom_take(r, outer) == 42 && tu_log.n == 1 && tu_log.e[0].kind == TU_NONE;
out:
    deferred_unref(outer);
    deferred_unref(inner);
}

/* P11: chaining onto a paused inner. */
static void sc_chain_paused(struct tu_oom *r)
{
    deferred_t *outer = NULL, *inner = NULL;

    TU_NEW(r, outer, deferred_new(), out);
    TU_NEW(r, inner, deferred_new(), out);
    ck_assert_int_eq(deferred_callback(inner, deferred_value_int(7)), 0);
    ck_assert_int_eq(deferred_pause(inner), 0);
    TU_ACT(r, deferred_add_callback(outer, tu_return_deferred, inner));
    TU_ACT(r, deferred_add_both(outer, tu_record, TAG(1)));
    ck_assert_int_eq(deferred_callback(outer, deferred_value_int(1)), 0);
    ck_assert_int_eq(deferred_unpause(inner), 0);
    r->ok = tu_oom_take(r, outer) == 7 && tu_log.n == 1 && tu_log.e[0].value == 7;
out:
    deferred_unref(outer);
    deferred_unref(inner);
}

/* P12: three levels. */
static void sc_three_levels(struct tu_oom *r)
{
    deferred_t *a = NULL, *b = NULL, *c = NULL;

    TU_NEW(r, a, deferred_new(), out);
    TU_NEW(r, b, deferred_new(), out);
    TU_NEW(r, c, deferred_new(), out);
    TU_ACT(r, deferred_add_callback(b, tu_return_deferred, a));
    TU_ACT(r, deferred_add_callback(c, tu_return_deferred, b));
    TU_ACT(r, deferred_add_both(c, tu_record, TAG(3)));
    ck_assert_int_eq(deferred_callback(b, deferred_value_int(0)), 0);
    ck_assert_int_eq(deferred_callback(c, deferred_value_int(0)), 0);
    ck_assert_int_eq(deferred_callback(a, deferred_value_int(33)), 0);
    r->ok = tu_oom_take(r, c) == 33 && tu_log.n == 1 && tu_log.e[0].value == 33;
out:
    deferred_unref(a);
    deferred_unref(b);
    deferred_unref(c);
}

/* P14: returning itself. */
static void sc_edeadlk(struct tu_oom *r)
{
    deferred_t *d;

    TU_NEW(r, d, deferred_new(), out);
    TU_ACT(r, deferred_add_callback(d, tu_return_deferred, d));
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(1)), 0);
    r->ok = tu_oom_take(r, d) == -1000 - EDEADLK;
    deferred_unref(d);
out:
    return;
}

/* P16: cancel without a canceller. */
static void sc_cancel_plain(struct tu_oom *r)
{
    deferred_t *d;

    TU_NEW(r, d, deferred_new(), out);
    TU_ACT(r, deferred_add_errback(d, tu_record, TAG(1)));
    ck_assert_int_eq(deferred_cancel(d), 0);
    ck_assert_int_eq(deferred_callback(d, tu_oom_tracked(r, 5)), 0);
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(6)), -EALREADY);
    r->ok = tu_oom_take(r, d) == -1000 - ECANCELED && tu_log.n == 1 &&
            tu_log.e[0].code == ECANCELED;
    deferred_unref(d);
out:
    return;
}

/* P17, P18, P20: cancellers, and cancel of a wait going inward. */
static void sc_cancel_canceller(struct tu_oom *r)
{
    int oc = 0, ic = 0, fc = 0;
    deferred_t *outer = NULL, *inner = NULL, *f = NULL;

    TU_NEW(r, outer, deferred_new_cancellable(tu_canceller_count, &oc, NULL), out);
    TU_NEW(r, inner, deferred_new_cancellable(tu_canceller_count, &ic, NULL), out);
    TU_NEW(r, f, deferred_new_cancellable(tu_canceller_fire, &fc, NULL), out);
    TU_ACT(r, deferred_add_callback(outer, tu_return_deferred, inner));
    TU_ACT(r, deferred_add_errback(outer, tu_record, TAG(1)));
    ck_assert_int_eq(deferred_callback(outer, deferred_value_int(0)), 0);
    ck_assert_int_eq(deferred_cancel(outer), 0);
    ck_assert_int_eq(deferred_cancel(outer), 0);
    ck_assert_int_eq(deferred_cancel(f), 0);
    ck_assert_int_eq(oc, 0);
    ck_assert_int_eq(fc, 1);
    r->ok = ic == 1 && tu_oom_take(r, outer) == -1000 - ECANCELED && tu_oom_take(r, f) == 99 &&
            tu_log.n == 1 && tu_log.e[0].code == ECANCELED;
out:
    deferred_unref(outer);
    deferred_unref(inner);
    deferred_unref(f);
}

/* P23: destroy functions in every path, including failed adds. */
static int destroyed[8];

static void sc_full(struct tu_oom *r)
{
    deferred_t *d, *e;
    int i;

    memset(destroyed, 0, sizeof destroyed);
    TU_NEW(r, d, deferred_new(), out);
    TU_ACT(r, deferred_add_callback_full(d, tu_add_one, &destroyed[0], tu_count_destroy));
    TU_ACT(r, deferred_add_errback_full(d, tu_recover, &destroyed[1], tu_count_destroy));
    TU_ACT(r, deferred_add_callbacks_full(d, tu_record, TAG(1), NULL, tu_record, TAG(2), NULL));
    TU_ACT(r, deferred_add_callbacks_full(d, tu_pass, &destroyed[2], tu_count_destroy,
                                       tu_pass, &destroyed[2], tu_count_destroy));
    TU_ACT(r, deferred_add_both_full(d, tu_pass, &destroyed[3], tu_count_destroy));
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(1)), 0);
    r->ok = tu_oom_take(r, d) == 2;
    deferred_unref(d);

    e = deferred_new();
    if (!e) {
        r->saw = true;
        destroyed[4] = destroyed[5] = 1; /* never handed to the library */
    } else {
        TU_ACT(r, deferred_add_callback_full(e, tu_pass, &destroyed[4], tu_count_destroy));
        TU_ACT(r, deferred_add_both_full(e, tu_pass, &destroyed[5], tu_count_destroy));
        deferred_unref(e); /* dropped unfired */
    }
    e = deferred_new_cancellable(tu_canceller_count, &destroyed[7], NULL);
    if (!e)
        r->saw = true;
    deferred_unref(e);
    e = deferred_new_cancellable(tu_canceller_count, &destroyed[6], tu_count_destroy);
    if (!e)
        r->saw = true;
    deferred_unref(e);
    for (i = 0; i < 7; i++)
        ck_assert_msg(destroyed[i] == 1, "destroy %d ran %d times", i, destroyed[i]);
    return;
out:
    memset(destroyed, 0, sizeof destroyed);
}

/* Failures: new, wrap, context, first error, group, story. */
static void sc_failure_story(struct tu_oom *r)
{
    deferred_failure_t *f, *g, *m[2];
    char *story;

    f = deferred_failure_new(DEFERRED_DOMAIN_SYSTEM, EIO, "disk %d", 3);
    f = deferred_failure_wrap(f, DEFERRED_DOMAIN_USER, 2, "reading %s", "x");
    TU_ACT(r, deferred_failure_add_context(f, "producer", "row %d", 7));
    TU_ACT(r, deferred_failure_add_context(f, "consumer", NULL));
    m[0] = deferred_failure_first_error(1, deferred_failure_ref(f));
    m[1] = NULL;
    g = deferred_failure_group(m, 2);
    story = deferred_failure_story_alloc(f);
    if (!story)
        r->saw = true;
    if (deferred_failure_find(f, DEFERRED_DOMAIN_ANY, ENOMEM) ||
        deferred_failure_find(g, DEFERRED_DOMAIN_ANY, ENOMEM) ||
        deferred_failure_find(deferred_failure_group_get(g, 0),
                              DEFERRED_DOMAIN_ANY, ENOMEM))
        r->saw = true;
    r->ok = story && strstr(story, "disk 3") && strstr(story, "reading x") &&
            strstr(story, "row 7") && deferred_failure_group_size(g) == 2 &&
            deferred_failure_index(deferred_failure_group_get(g, 0)) == 1 &&
            deferred_failure_context_size(f) == 2;
    deferred_free(story);
    deferred_failure_unref(g);
    deferred_failure_unref(f);
}

/* chain_to, value and failure. */
static void sc_chain_to(struct tu_oom *r)
{
    deferred_t *d = NULL, *t = NULL, *e = NULL, *te = NULL;

    TU_NEW(r, d, deferred_new(), out);
    TU_NEW(r, t, deferred_new(), out);
    TU_NEW(r, e, deferred_new(), out);
    TU_NEW(r, te, deferred_new(), out);
    TU_ACT(r, deferred_chain_to(d, t));
    TU_ACT(r, deferred_chain_to(e, te));
    TU_ACT(r, deferred_add_callback(t, tu_add_one, NULL));
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(4)), 0);
    ck_assert_int_eq(deferred_errback(e, deferred_failure_new(DEFERRED_DOMAIN_USER, 3, "e")), 0);
    {
        intptr_t tv = tu_oom_take(r, t), tev = tu_oom_take(r, te), dv = tu_oom_take(r, d), ev = tu_oom_take(r, e);
        r->ok = tv == 5 && tev == -1000 - 3 && dv == 0 && ev == 0;
    }
out:
    deferred_unref(d);
    deferred_unref(t);
    deferred_unref(e);
    deferred_unref(te);
}

/* succeed() and fail(). */
static void sc_succeed_fail(struct tu_oom *r)
{
    deferred_t *s, *f;
    deferred_value_t v = tu_oom_tracked(r, 4);
    intptr_t sv = 0, fv = 0;

    s = deferred_succeed(v);
    if (!s) {
        r->saw = true;
    } else {
        TU_ACT(r, deferred_add_callback(s, tu_add_one, NULL));
        sv = tu_oom_take(r, s);
        deferred_unref(s);
    }
    f = deferred_fail(deferred_failure_new(DEFERRED_DOMAIN_USER, 8, "f"));
    if (!f) {
        r->saw = true;
    } else {
        TU_ACT(r, deferred_add_errback(f, tu_record, TAG(1)));
        fv = tu_oom_take(r, f);
        deferred_unref(f);
    }
    r->ok = sv == 5 && fv == -1000 - 8 && tu_log.n == 1 && tu_log.e[0].code == 8;
}

/* P15 in debug mode: the double-fire report. */
static void sc_debug_double_fire(struct tu_oom *r)
{
    deferred_t *d;

    deferred_set_debug(true);
    TU_NEW(r, d, deferred_new(), out);
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(1)), 0);
    ck_assert_int_eq(deferred_callback(d, tu_oom_tracked(r, 2)), -EALREADY);
    ck_assert_int_eq(deferred_errback(d, tu_oom_ufail(r, 1)),
                     -EALREADY);
    r->ok = tu_oom_take(r, d) == 1 && tu_reports.already_fired == 2 &&
            strstr(tu_reports.last_message, "test-oom.c") != NULL;
    deferred_unref(d);
out:
    deferred_set_debug(false);
}

/* P21: an unhandled failure reported; a handled one not. */
static void sc_unhandled(struct tu_oom *r)
{
    deferred_t *d, *e;

    TU_NEW(r, d, deferred_new(), out);
    TU_ACT(r, deferred_add_callback(d, tu_fail_with, TAG(7)));
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(1)), 0);
    deferred_unref(d);
    e = deferred_new();
    if (!e) {
        r->saw = true;
    } else {
        ck_assert_int_eq(deferred_errback(e, tu_oom_ufail(r, 8)), 0);
        TU_ACT(r, deferred_add_errback(e, tu_recover, TAG(0)));
        deferred_unref(e);
    }
    r->ok = tu_reports.unhandled == 1 && tu_reports.last_code == 7;
out:
    return;
}

/* P22 and many callbacks: adds from inside the chain; the array grows. */
static deferred_value_t adder(deferred_value_t v, void *arg)
{
    int rc = deferred_add_callback((deferred_t *)arg, tu_add_one, NULL);
    if (rc == -ENOMEM)
        return deferred_value_failure(deferred_failure_new(DEFERRED_DOMAIN_LIBRARY,
                                                           ENOMEM, NULL));
    ck_assert_int_eq(rc, 0);
    return v;
}

static void sc_reentrant(struct tu_oom *r)
{
    deferred_t *d;
    int i;

    TU_NEW(r, d, deferred_new(), out);
    for (i = 0; i < 20; i++)
        TU_ACT(r, deferred_add_callback(d, tu_add_one, NULL));
    TU_ACT(r, deferred_add_callback(d, adder, d));
    TU_ACT(r, deferred_add_callback(d, tu_record, TAG(1)));
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(0)), 0);
    r->ok = tu_oom_take(r, d) == 21 && tu_log.n == 1 && tu_log.e[0].value == 20;
    deferred_unref(d);
out:
    return;
}

/* P07: pause after fire, then unpause. */
static void sc_pause(struct tu_oom *r)
{
    deferred_t *d;

    TU_NEW(r, d, deferred_new(), out);
    ck_assert_int_eq(deferred_callback(d, deferred_value_strdup("abc")), 0);
    ck_assert_int_eq(deferred_pause(d), 0);
    TU_ACT(r, deferred_add_both(d, tu_record, TAG(1)));
    TU_ACT(r, deferred_add_callback(d, tu_return_int, TAG(3)));
    ck_assert_int_eq(deferred_unpause(d), 0);
    r->ok = tu_oom_take(r, d) == 3 && tu_log.n == 1 && tu_log.e[0].kind == TU_VALUE;
    deferred_unref(d);
out:
    return;
}

#define SCENARIO(name)                                                       \
    START_TEST(test_oom_##name)                                              \
    {                                                                        \
        tu_oom_sweep(#name, sc_##name, NULL, TU_OOM_STICKY | TU_OOM_STRICT); \
    }                                                                        \
    END_TEST

SCENARIO(chain)
SCENARIO(chain_async)
SCENARIO(chain_async_grow)
SCENARIO(chain_sync)
SCENARIO(chain_paused)
SCENARIO(three_levels)
SCENARIO(edeadlk)
SCENARIO(cancel_plain)
SCENARIO(cancel_canceller)
SCENARIO(full)
SCENARIO(failure_story)
SCENARIO(chain_to)
SCENARIO(succeed_fail)
SCENARIO(debug_double_fire)
SCENARIO(unhandled)
SCENARIO(reentrant)
SCENARIO(pause)

static Suite *oom_suite(void)
{
    Suite *s = suite_create("oom");
    TCase *tc = tcase_create("oom");

    tcase_add_checked_fixture(tc, tu_setup, tu_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_oom_chain);
    tcase_add_test(tc, test_oom_chain_async);
    tcase_add_test(tc, test_oom_chain_async_grow);
    tcase_add_test(tc, test_oom_chain_sync);
    tcase_add_test(tc, test_oom_chain_paused);
    tcase_add_test(tc, test_oom_three_levels);
    tcase_add_test(tc, test_oom_edeadlk);
    tcase_add_test(tc, test_oom_cancel_plain);
    tcase_add_test(tc, test_oom_cancel_canceller);
    tcase_add_test(tc, test_oom_full);
    tcase_add_test(tc, test_oom_failure_story);
    tcase_add_test(tc, test_oom_chain_to);
    tcase_add_test(tc, test_oom_succeed_fail);
    tcase_add_test(tc, test_oom_debug_double_fire);
    tcase_add_test(tc, test_oom_unhandled);
    tcase_add_test(tc, test_oom_reentrant);
    tcase_add_test(tc, test_oom_pause);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(oom_suite());
}
