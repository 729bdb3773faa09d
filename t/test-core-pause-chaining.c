/*
 * test-core-pause-chaining.c: the deferred core, pause and chaining:
 * pausing a fired or unfired deferred (P07, P08), a callback returning a
 * deferred (P09 to P12, P14), a million chained deferreds (P13),
 * returning failed, paused and waiting deferreds, chain_to() and the
 * pause count.
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
/* A deferred fired with 0 whose first callback returned inner, which it
 * waits on; its second records (tag 1) what it gets. */
static deferred_t *outer_waiting_on(deferred_t *inner)
{
    deferred_t *outer = deferred_new();

    ck_assert_ptr_nonnull(outer);
    ck_assert_ptr_nonnull(inner);
    ck_assert_int_eq(deferred_add_callback(outer, tu_return_deferred, inner), 0);
    ck_assert_int_eq(deferred_add_callback(outer, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_callback(outer, deferred_value_int(0)), 0);
    ck_assert(deferred_is_waiting(outer));
    return outer;
}

START_TEST(test_unpause_does_not_release_wait)
{
    deferred_t *inner = deferred_new(), *outer = outer_waiting_on(inner);

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

/*
 * The user's pause of an outer deferred that waits holds the outer only:
 * when the inner's chain reaches the outer's continue entry, the outer
 * takes the result (and stays paused) and the inner's chain goes on at
 * once, with the empty value.  (Twisted's runner returns there instead,
 * leaving the rest of the inner chain unrun until something else runs it;
 * docs/semantics.md, section 17.)
 */
START_TEST(test_paused_outer_does_not_stall_inner)
{
    deferred_t *inner = deferred_new(), *outer = outer_waiting_on(inner);

    ck_assert_int_eq(deferred_pause(outer), 0);
    /* After the outer attached: it runs on the empty value. */
    ck_assert_int_eq(deferred_add_both(inner, tu_record, TAG(2)), 0);
    ck_assert_int_eq(deferred_callback(inner, deferred_value_int(5)), 0);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(tu_log.e[0].tag, 2);
    ck_assert_int_eq(tu_log.e[0].kind, TU_NONE);
    ck_assert(deferred_has_result(inner));
    ck_assert(!deferred_is_waiting(outer));
    ck_assert_int_eq(deferred_pause_count(outer), 1);
    ck_assert_int_eq(deferred_unpause(outer), 0);
    ck_assert_int_eq(tu_log.n, 2);
    ck_assert_int_eq(tu_log.e[1].tag, 1);
    ck_assert_int_eq(tu_log.e[1].value, 5);
    deferred_unref(outer);
    deferred_unref(inner);
}
END_TEST

static deferred_t *mid_outer;

/* Fires mid_outer (whose callback returns this callback's own deferred,
 * which is in the middle of its run), then gives 7. */
static deferred_value_t fire_outer_then_7(deferred_value_t v, void *arg)
{
    (void)arg;
    deferred_value_release(v);
    ck_assert_int_eq(deferred_callback(mid_outer, deferred_value_int(0)), 0);
    ck_assert(deferred_is_waiting(mid_outer));
    return deferred_value_int(7);
}

/*
 * A deferred whose callback is running has no result yet: an outer whose
 * callback returns it waits, and gets its result once its chain reaches
 * the outer's continue entry, after the callbacks added before it (here 7
 * + 1).  (Twisted takes the value the running callback was given, 1, and
 * that value goes on in the inner's chain too; docs/semantics.md, section
 * 17.)
 */
START_TEST(test_wait_on_a_deferred_in_the_middle_of_its_run)
{
    deferred_t *inner = deferred_new();

    mid_outer = deferred_new();
    ck_assert_ptr_nonnull(inner);
    ck_assert_ptr_nonnull(mid_outer);
    ck_assert_int_eq(deferred_add_callback(inner, fire_outer_then_7, NULL), 0);
    ck_assert_int_eq(deferred_add_callback(inner, tu_add_one, NULL), 0);
    ck_assert_int_eq(deferred_add_callback(mid_outer, tu_return_deferred, inner), 0);
    ck_assert_int_eq(deferred_add_callback(mid_outer, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_callback(inner, deferred_value_int(1)), 0);
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(tu_log.e[0].tag, 1);
    ck_assert_int_eq(tu_log.e[0].value, 8);
    ck_assert(deferred_has_result(inner));
    ck_assert(deferred_value_is_none(deferred_result(inner)));
    deferred_unref(mid_outer);
    deferred_unref(inner);
}
END_TEST

/* Pauses nest up to 32,767 deep (the count shares a word with the flags):
 * one more is refused and changes nothing, and every one of them must be
 * unpaused before the chain runs; the fire, the flags and the chain are
 * untouched by the count's carries. */
START_TEST(test_pause_limit)
{
    deferred_t *d = deferred_new();
    unsigned i, bad = 0;

    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_add_callback(d, tu_add_one, NULL), 0);
    for (i = 0; i < 32767; i++)
        bad += deferred_pause(d) != 0;
    ck_assert_uint_eq(bad, 0);
    ck_assert_uint_eq(deferred_pause_count(d), 32767);
    ck_assert_int_eq(deferred_pause(d), -EINVAL);
    ck_assert_uint_eq(deferred_pause_count(d), 32767);
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(1)), 0);
    ck_assert(deferred_has_fired(d));
    ck_assert(!deferred_has_result(d));
    for (i = 0; i < 32766; i++)
        bad += deferred_unpause(d) != 0;
    ck_assert_uint_eq(bad, 0);
    ck_assert_uint_eq(deferred_pause_count(d), 1);
    ck_assert(!deferred_has_result(d)); /* the chain has not run */
    ck_assert_int_eq(deferred_unpause(d), 0);
    ck_assert(deferred_has_result(d));
    ck_assert_int_eq(result_int(d), 2);
    ck_assert_int_eq(deferred_unpause(d), -EINVAL);
    ck_assert_uint_eq(deferred_pause_count(d), 0);
    deferred_unref(d);
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

static Suite *core_suite(void)
{
    Suite *s = suite_create("core-pause-chaining");
    TCase *tc = tcase_create("P");
    TCase *big = tcase_create("P13");
    TCase *rn = tcase_create("runner");

    tcase_add_checked_fixture(tc, tu_setup, tu_teardown);
    tcase_add_checked_fixture(big, tu_setup, tu_teardown);
    tcase_add_checked_fixture(rn, tu_setup, tu_teardown);
    tcase_set_timeout(big, 300);

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
    tcase_add_test(rn, test_chaining_three_levels_outer_first);
    tcase_add_test(rn, test_return_failed_deferred);
    tcase_add_test(rn, test_return_paused_unfired);
    tcase_add_test(rn, test_return_waiting_deferred);
    tcase_add_test(rn, test_outer_freed_while_waiting);
    tcase_add_test(rn, test_chain_to);
    tcase_add_test(rn, test_chain_to_errors_and_unfired_drop);
    tcase_add_test(rn, test_pause_counting);
    tcase_add_test(rn, test_unpause_does_not_release_wait);
    tcase_add_test(rn, test_paused_outer_does_not_stall_inner);
    tcase_add_test(rn, test_wait_on_a_deferred_in_the_middle_of_its_run);
    tcase_add_test(rn, test_pause_count_and_waiting);
    tcase_add_test(rn, test_pause_limit);

    suite_add_tcase(s, tc);
    suite_add_tcase(s, big);
    suite_add_tcase(s, rn);
    return s;
}

int main(void)
{
    return tu_run_suite(core_suite());
}
