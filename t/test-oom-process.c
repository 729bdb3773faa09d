/*
 * test-oom-process.c: the failing-allocator test of processes and
 * multi-fire deferreds, the twin of t/test-oom.c (the core) for those
 * layers.
 *
 * Each scenario builds and runs a whole process (S01, S06, S08 of
 * docs/scenarios.md, and the built-in stages between them) or drives a
 * multi-fire stream (M01, M04), checking every return: a constructor's
 * NULL (errno ENOMEM), an action's -ENOMEM, an ENOMEM failure as the
 * result, in a record log or in a report.  tu_oom_sweep() (t/testutil.c)
 * fails the 1st, 2nd, ... Nth allocation until a run injects nothing and
 * asserts for each N: no crash, nothing alive afterwards, and the run
 * ended cleanly: with ENOMEM, or with its normal result when a documented
 * fallback absorbed the failure (a failure kept without its message or
 * its context frame).
 */
#include "testutil.h"

#include <stdio.h>
#include <string.h>

#include <deferred/process.h>

/* ---- helpers ---- */

/* Make a stage; NULL notes ENOMEM and bails out through label; else add
 * it (taken, also on error) and bail out on -ENOMEM. */
#define ADD(r, p, expr, label)                                               \
    do {                                                                     \
        deferred_stage_t *st_;                                               \
        int rc_;                                                             \
        TU_NEW(r, st_, (expr), label);                                       \
        rc_ = deferred_process_add((p), st_);                                \
        if (rc_ == -ENOMEM) {                                                \
            (r)->saw = true;                                                 \
            goto label;                                                      \
        }                                                                    \
        ck_assert_int_eq(rc_, 0);                                            \
    } while (0)

static deferred_value_t times_two(deferred_value_t v, void *arg)
{
    (void)arg;
    return deferred_value_int(deferred_value_get_int(v) * 2);
}

static deferred_value_t plus_one(deferred_value_t v, void *arg)
{
    (void)arg;
    return deferred_value_int(deferred_value_get_int(v) + 1);
}

static bool not_div3(deferred_value_t v, void *arg)
{
    (void)arg;
    return deferred_value_get_int(v) % 3 != 0;
}

static deferred_value_t sum(deferred_value_t acc, deferred_value_t v, void *arg)
{
    (void)arg;
    return deferred_value_int(deferred_value_get_int(acc) + deferred_value_get_int(v));
}

/* An array producer of the integers from .. from + n - 1. */
static deferred_stage_t *array_of(int from, int n)
{
    deferred_value_t v[64];
    int i;

    ck_assert_int_le(n, 64);
    for (i = 0; i < n; i++)
        v[i] = deferred_value_int(from + i);
    return deferred_stage_array(v, (size_t)n);
}

/* Run p; the result taken (noted), or an ENOMEM failure when the run
 * could not start. */
static deferred_value_t run(struct tu_oom *r, deferred_process_t *p)
{
    deferred_t *d;
    deferred_value_t v;

    errno = 0;
    d = deferred_process_run(p);
    if (!d) {
        ck_assert_int_eq(errno, ENOMEM);
        r->saw = true;
        return deferred_value_failure(NULL);
    }
    ck_assert(deferred_has_result(d));
    v = tu_oom_note(r, deferred_result_take(d));
    deferred_unref(d);
    return v;
}

static intptr_t array_int(deferred_array_t *a, size_t i)
{
    return deferred_value_get_int(deferred_array_get(a, i));
}

/* ---- S01 and the built-in stages ---- */

/* array -> map -> filter -> batch -> collect: 30 items doubled, those not
 * divisible by 3 kept (20), in batches of 8. */
static void sc_pipeline(struct tu_oom *r)
{
    deferred_process_t *p;
    deferred_value_t v;
    deferred_array_t *a;

    TU_NEW(r, p, deferred_process_new(0), out);
    ADD(r, p, array_of(0, 30), out);
    ADD(r, p, deferred_stage_map("x2", times_two, NULL), out);
    ADD(r, p, deferred_stage_filter("not3", not_div3, NULL), out);
    ADD(r, p, deferred_stage_batch(8), out);
    ADD(r, p, deferred_stage_collect(), out);
    v = run(r, p);
    a = deferred_value_get_array(v);
    r->ok = a && deferred_array_size(a) == 3 &&
            deferred_array_size(deferred_value_get_array(deferred_array_get(a, 0))) == 8 &&
            deferred_array_size(deferred_value_get_array(deferred_array_get(a, 2))) == 4 &&
            array_int(deferred_value_get_array(deferred_array_get(a, 0)), 0) == 2 &&
            array_int(deferred_value_get_array(deferred_array_get(a, 2)), 3) == 58;
    deferred_value_release(v);
out:
    deferred_process_unref(p);
}

/* array -> map -> reduce: the sum of 2 * (1 .. 10). */
static void sc_reduce(struct tu_oom *r)
{
    deferred_process_t *p;
    deferred_value_t v;

    TU_NEW(r, p, deferred_process_new(0), out);
    ADD(r, p, array_of(1, 10), out);
    ADD(r, p, deferred_stage_map(NULL, times_two, NULL), out);
    ADD(r, p, deferred_stage_reduce(sum, deferred_value_int(0), NULL), out);
    v = run(r, p);
    r->ok = !deferred_value_is_failure(v) && deferred_value_get_int(v) == 110;
    deferred_value_release(v);
out:
    deferred_process_unref(p);
}

/* ---- S06: a failing stage ---- */

static deferred_value_t fail_on_7(deferred_value_t v, void *arg)
{
    (void)arg;
    if (deferred_value_get_int(v) == 7)
        return deferred_value_failure(deferred_failure_new(DEFERRED_DOMAIN_USER, 42,
                                                           "item %d refused", 7));
    return v;
}

/* array -> map (fails on item 7) -> collect: the process fails with the
 * stage's failure, whose story names the stage (a context frame lost to
 * out of memory is a documented fallback, so the story is checked on the
 * run that injected nothing). */
static void sc_failing_stage(struct tu_oom *r)
{
    deferred_process_t *p;
    deferred_value_t v;
    deferred_failure_t *f;
    char story[1024];

    TU_NEW(r, p, deferred_process_new(0), out);
    ADD(r, p, array_of(0, 20), out);
    ADD(r, p, deferred_stage_map("refuse 7", fail_on_7, NULL), out);
    ADD(r, p, deferred_stage_collect(), out);
    v = run(r, p);
    f = deferred_value_get_failure(v);
    story[0] = '\0';
    if (f)
        deferred_failure_story(f, story, sizeof story);
    r->ok = f && deferred_failure_find(f, DEFERRED_DOMAIN_USER, 42) &&
            (tu_failure_injected() || strstr(story, "refuse 7") != NULL);
    deferred_value_release(v);
out:
    deferred_process_unref(p);
}

/* ---- S08: tags and groups ---- */

/* A producer that, resumed, sends two groups (tags 100 and 200) of
 * three and two lines, then finishes; it goes on where it stopped when
 * paused, and stops at the first refused event. */
struct grouped {
    int step;
    bool stopped;
};

static struct grouped grouped;

static int grouped_step(deferred_stage_t *self, int step)
{
    static const int plan[][2] = {
        {'s', 100}, {'e', 11}, {'e', 12}, {'e', 13}, {'x', 100},
        {'s', 200}, {'e', 21}, {'e', 22}, {'x', 200}, {'f', 0},
    };
    deferred_value_t tag = deferred_value_int(step < 5 ? 100 : 200);

    switch (plan[step][0]) {
    case 's': return deferred_stage_start(self, tag);
    case 'e': return deferred_stage_emit_tagged(self, tag, deferred_value_int(plan[step][1]));
    case 'x': return deferred_stage_end(self, tag, deferred_value_none());
    default: return deferred_stage_finish(self, deferred_value_none());
    }
}

static void grouped_resume(deferred_stage_t *self, deferred_stage_t *by)
{
    struct grouped *g = deferred_stage_data(self);

    (void)by;
    while (!g->stopped && g->step < 10 && !deferred_stage_is_paused(self))
        if (grouped_step(self, g->step++) < 0)
            g->stopped = true;
}

static void grouped_cancel(deferred_stage_t *self, deferred_stage_t *by)
{
    struct grouped *g = deferred_stage_data(self);

    (void)by;
    g->stopped = true;
}

static const deferred_stage_ops_t grouped_ops = {
    .name = "grouped source",
    .resume = grouped_resume,
    .cancel = grouped_cancel,
};

/* A consumer giving each group a collect of its own (a subordinate); it
 * sees each group's array. */
struct orders {
    int orders, bad;
    intptr_t tags[4];
    size_t lines[4];
    intptr_t first[4];
};

static struct orders orders;

static deferred_failure_t *orders_start(deferred_stage_t *self, deferred_stage_t *from,
                                        deferred_value_t tag, deferred_stage_t **sub)
{
    (void)self;
    (void)from;
    if (deferred_value_is_none(tag))
        return NULL;
    *sub = deferred_stage_collect();
    if (!*sub)
        return deferred_failure_new(DEFERRED_DOMAIN_SYSTEM, ENOMEM, "no collect");
    return NULL;
}

static deferred_failure_t *orders_handle(deferred_stage_t *self, deferred_stage_t *from,
                                         deferred_value_t tag, deferred_value_t *item)
{
    struct orders *o = deferred_stage_data(self);
    deferred_array_t *a = deferred_value_get_array(*item);

    (void)from;
    if (!a || o->orders >= 4 || deferred_array_size(a) == 0) {
        o->bad++;
        return NULL;
    }
    o->tags[o->orders] = deferred_value_get_int(tag);
    o->lines[o->orders] = deferred_array_size(a);
    o->first[o->orders] = array_int(a, 0);
    o->orders++;
    return NULL;
}

static const deferred_stage_ops_t orders_ops = {
    .name = "orders",
    .start = orders_start,
    .handle = orders_handle,
};

/* grouped source -> map (+1) -> orders: each order's lines reach its own
 * collect, the parent gets each order's array. */
static void sc_groups(struct tu_oom *r)
{
    deferred_process_t *p;
    deferred_value_t v;

    memset(&grouped, 0, sizeof grouped);
    memset(&orders, 0, sizeof orders);
    TU_NEW(r, p, deferred_process_new(0), out);
    ADD(r, p, deferred_stage_new(&grouped_ops, &grouped, 0), out);
    ADD(r, p, deferred_stage_map(NULL, plus_one, NULL), out);
    ADD(r, p, deferred_stage_new(&orders_ops, &orders, 0), out);
    v = run(r, p);
    r->ok = !deferred_value_is_failure(v) && orders.bad == 0 && orders.orders == 2 &&
            orders.tags[0] == 100 && orders.tags[1] == 200 && orders.lines[0] == 3 &&
            orders.lines[1] == 2 && orders.first[0] == 12 && orders.first[1] == 22;
    deferred_value_release(v);
out:
    deferred_process_unref(p);
}

/* ---- M01, M04: multi-fire ---- */

/* An emit after an earlier act failed for lack of memory: with an entry
 * missing (the recovering errback), a row's failure may have ended the
 * stream, and a later emit is then told so. */
#define ACT_EMIT(r, expr)                                                    \
    do {                                                                     \
        int rc_ = (expr);                                                    \
        if (rc_ == -ENOMEM || ((r)->saw && rc_ == -EALREADY))                \
            (r)->saw = true;                                                 \
        else                                                                 \
            ck_assert_msg(rc_ == 0, "%s returned %d", #expr, rc_);           \
    } while (0)

/* Rows 1, 2, a failure 5, 3 through add_one, a recording errback, a
 * recovering errback and a recording both; then the finish. */
static void sc_multi(struct tu_oom *r)
{
    deferred_t *m = NULL, *end = NULL;
    intptr_t x;

    TU_NEW(r, m, deferred_multi_new(), out);
    TU_NEW(r, end, deferred_multi_when_finished(m), out);
    TU_ACT(r, deferred_add_callback(m, tu_add_one, NULL));
    TU_ACT(r, deferred_add_errback(m, tu_record, TAG(2)));
    TU_ACT(r, deferred_add_errback(m, tu_recover, TAG(0)));
    TU_ACT(r, deferred_add_both(m, tu_record, TAG(1)));
    ACT_EMIT(r, deferred_multi_emit(m, deferred_value_int(1)));
    ACT_EMIT(r, deferred_multi_emit(m, tu_oom_tracked(r, 2)));
    ACT_EMIT(r, deferred_multi_emit(m, deferred_value_failure(tu_oom_ufail(r, 5))));
    ACT_EMIT(r, deferred_multi_emit(m, deferred_value_int(3)));
    if (r->saw && deferred_has_fired(m))
        goto out; /* ended by a row's failure: nothing more to check */
    ck_assert_int_eq(deferred_multi_finish(m, deferred_value_int(9)), 0);
    ck_assert(deferred_has_result(end));
    x = tu_oom_take(r, end);
    r->ok = x == 9 && tu_log.n == 5 && tu_log.e[0].value == 2 && tu_log.e[1].value == 3 &&
            tu_log.e[2].tag == 2 && tu_log.e[2].code == 5 && tu_log.e[3].value == 0 &&
            tu_log.e[4].value == 4 && tu_released == 1;
out:
    deferred_unref(end);
    deferred_unref(m);
}

/* A multi-fire deferred through a process (from_multi -> map -> collect),
 * and a process into one (array -> to_multi). */
static void sc_multi_process(struct tu_oom *r)
{
    deferred_t *m = NULL, *m2 = NULL, *end2 = NULL;
    deferred_process_t *p = NULL, *q = NULL;
    deferred_value_t v;
    deferred_array_t *a;
    bool ok1, ok2;
    int i;

    TU_NEW(r, m, deferred_multi_new(), out);
    TU_NEW(r, p, deferred_process_new(0), out);
    ADD(r, p, deferred_stage_from_multi(m), out);
    ADD(r, p, deferred_stage_map(NULL, times_two, NULL), out);
    ADD(r, p, deferred_stage_collect(), out);
    {
        deferred_t *d;

        errno = 0;
        TU_NEW(r, d, deferred_process_run(p), out);
        for (i = 1; i <= 4; i++) {
            int rc = deferred_multi_emit(m, deferred_value_int(i));

            if (rc == -ENOMEM)
                r->saw = true;
            else if (rc == -EALREADY)
                /* the stream was ended: the process failed already */
                ck_assert(deferred_has_result(d));
            else
                ck_assert_int_eq(rc, 0);
        }
        deferred_multi_finish(m, deferred_value_none());
        ck_assert(deferred_has_result(d));
        v = tu_oom_note(r, deferred_result_take(d));
        deferred_unref(d);
    }
    a = deferred_value_get_array(v);
    ok1 = a && deferred_array_size(a) == 4 && array_int(a, 0) == 2 && array_int(a, 3) == 8;
    deferred_value_release(v);

    TU_NEW(r, m2, deferred_multi_new(), out);
    TU_NEW(r, end2, deferred_multi_when_finished(m2), out);
    TU_ACT(r, deferred_add_both(m2, tu_record, TAG(3)));
    TU_NEW(r, q, deferred_process_new(0), out);
    ADD(r, q, array_of(5, 3), out);
    ADD(r, q, deferred_stage_to_multi(m2), out);
    v = run(r, q);
    ok2 = !deferred_value_is_failure(v) && deferred_has_result(end2) &&
          tu_oom_take(r, end2) == 0 && tu_log_count(3) == 3 && tu_log.e[0].value == 5 &&
          tu_log.e[2].value == 7;
    deferred_value_release(v);
    r->ok = ok1 && ok2;
out:
    deferred_process_unref(p);
    deferred_process_unref(q);
    deferred_unref(end2);
    deferred_unref(m2);
    deferred_unref(m);
}

#define SCENARIO(name, flags)                                                \
    START_TEST(test_oom_##name)                                              \
    {                                                                        \
        tu_oom_sweep(#name, sc_##name, NULL, (flags));                       \
    }                                                                        \
    END_TEST

SCENARIO(pipeline, TU_OOM_STICKY)
SCENARIO(reduce, TU_OOM_STICKY)
SCENARIO(failing_stage, TU_OOM_STICKY)
SCENARIO(groups, TU_OOM_STICKY)
SCENARIO(multi, TU_OOM_STICKY)
SCENARIO(multi_process, TU_OOM_STICKY)

static Suite *oom_process_suite(void)
{
    Suite *s = suite_create("oom-process");
    TCase *tc = tcase_create("oom-process");

    tcase_add_checked_fixture(tc, tu_setup, tu_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_oom_pipeline);
    tcase_add_test(tc, test_oom_reduce);
    tcase_add_test(tc, test_oom_failing_stage);
    tcase_add_test(tc, test_oom_groups);
    tcase_add_test(tc, test_oom_multi);
    tcase_add_test(tc, test_oom_multi_process);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(oom_process_suite());
}
