/*
 * test-lifetime.c: lifetime and depth of deferreds.
 *
 * Scenarios (also listed in docs/scenarios.md):
 *   L01  a deferred dying on the free list is not fired again through a
 *        weak pointer (a combinator's, or a continue entry's): no double
 *        free; a dying deferred, plain or a stream, releases a value, a
 *        row or an end given to it;
 *   L02  work nested deeper than the runner's limit (a chain of chain_to()
 *        links, lock and semaphore hand-offs, gathers of gathers, their
 *        cancels and frees) completes for 1,000,000 elements on a 256 KiB
 *        stack;
 *   L03  freeing 1,000,000 deferreds that all wait on one inner, newest
 *        first, is linear (the continue entry is found where it was
 *        recorded);
 *   L04  cycles: chain_to() that would make a deferred hold itself is
 *        -EDEADLK, a callback returning a deferred that waits on its own
 *        (or a gather that still holds it) is an EDEADLK failure;
 *        nothing leaks;
 *   L05  chain_to() into a target that has already fired puts an EALREADY
 *        failure on the chain (seen by an errback, reported if unhandled);
 *   L06  lock, semaphore and queue waiters: a waiting run dropped with its
 *        lock leaks nothing and destroys its argument once; a waiter fired
 *        by its caller leaves the queue (no token handed to it after);
 *   L07  a combinator freed before its inputs lets them go without
 *        allocating: nothing to fail, nothing leaked.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <deferred/combinators.h>
#include <deferred/multi.h>

#include "testutil.h"

#define BIG 1000000

/* ---- L01 --------------------------------------------------------------- */

/* The reproducer: the gather's output dies while the merge's inputs are
 * being freed, and is fired again through the merge's weak pointer. */
START_TEST(test_L01_gather_merge_double_free)
{
    deferred_t *x = deferred_new(), *g = deferred_gather(&x, 1, 0);
    deferred_t *in[2];
    deferred_t *s;

    ck_assert_ptr_nonnull(g);
    in[0] = g;
    in[1] = x;
    s = deferred_merge(in, 2);
    ck_assert_ptr_nonnull(s);
    deferred_callback(x, deferred_value_int(1));
    deferred_unref(g);
    deferred_unref(x);
    deferred_unref(s);
}
END_TEST

/* The same with the inputs dropped in every order. */
START_TEST(test_L01_gather_merge_every_order)
{
    static const int order[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2},
                                    {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    int k;

    for (k = 0; k < 6; k++) {
        deferred_t *d[3], *in[2];
        int j;

        d[0] = deferred_new();
        d[1] = deferred_gather(&d[0], 1, 0);
        in[0] = d[1];
        in[1] = d[0];
        d[2] = deferred_merge(in, 2);
        ck_assert_ptr_nonnull(d[2]);
        deferred_callback(d[0], deferred_value_int(k));
        for (j = 0; j < 3; j++)
            deferred_unref(d[order[k][j]]);
        ck_assert_uint_eq(tu_live(), 0);
    }
}
END_TEST

/* An outer that waits on inner dies on the free list; inner is fired
 * while it waits there, from a destroy function run by the same cascade.
 * The continue entry pointing at the outer must be dead. */
struct dying_ctx {
    deferred_t *outer;
    deferred_t *inner;
};

static void destroy_drop_then_fire(void *arg)
{
    struct dying_ctx *c = arg;

    deferred_unref(c->outer); /* queued: another free is under way */
    deferred_callback(c->inner, tu_tracked(7));
}

START_TEST(test_L01_continue_to_dying_outer)
{
    struct dying_ctx c;
    deferred_t *first;

    c.inner = deferred_new();
    c.outer = deferred_new();
    deferred_add_callback(c.outer, tu_return_deferred, c.inner);
    deferred_callback(c.outer, deferred_value_int(0));
    ck_assert(deferred_is_paused(c.outer)); /* waits on inner */
    first = deferred_new_cancellable(NULL, &c, destroy_drop_then_fire);
    deferred_unref(first);
    /* inner kept its result: the outer was gone. */
    ck_assert(tu_is_tracked(deferred_result(c.inner)));
    deferred_unref(c.inner);
    ck_assert_int_eq(tu_released, 1);
}
END_TEST

/* A combinator's output dies on the free list while its input fires. */
struct dying_gather {
    deferred_t *x;
    deferred_t *g;
};

static void destroy_drop_gather_then_fire(void *arg)
{
    struct dying_gather *c = arg;

    deferred_unref(c->g);
    deferred_callback(c->x, tu_tracked(1));
}

START_TEST(test_L01_combinator_output_dying)
{
    struct dying_gather c;
    deferred_t *first;

    c.x = deferred_new();
    c.g = deferred_gather(&c.x, 1, 0);
    first = deferred_new_cancellable(NULL, &c, destroy_drop_gather_then_fire);
    deferred_unref(first);
    deferred_unref(c.x);
    ck_assert_int_eq(tu_released, 1);
}
END_TEST

/* Referencing, firing, cancelling a dying deferred does nothing. */
static void destroy_poke(void *arg)
{
    deferred_t *d = arg;

    deferred_unref(d); /* now dying, queued */
    ck_assert_ptr_eq(deferred_ref(d), d);
    deferred_unref(d);
    ck_assert_int_eq(deferred_callback(d, tu_tracked(3)), 0);
    ck_assert_int_eq(deferred_cancel(d), 0);
    ck_assert_int_eq(deferred_pause(d), 0);
    ck_assert_int_eq(deferred_unpause(d), 0);
}

START_TEST(test_L01_dying_is_inert)
{
    int calls = 0;
    deferred_t *d = deferred_new_cancellable(tu_canceller_count, &calls, NULL);
    deferred_t *first;

    deferred_add_callback(d, tu_record, TAG(1));
    first = deferred_new_cancellable(NULL, d, destroy_poke);
    deferred_unref(first);
    ck_assert_int_eq(calls, 0);
    ck_assert_int_eq(tu_log.n, 0);
    ck_assert_int_eq(tu_released, 1);
}
END_TEST

/* The same for a plain deferred (no canceller, no extension: the fire's
 * common path), fired by the destroy function of one of its own entries,
 * which its free runs after releasing its result: the value given is
 * released, not stored in the freed block, and the callback never runs. */
static void destroy_fire_owner(void *arg)
{
    deferred_t **d = arg;

    ck_assert_int_eq(deferred_callback(*d, tu_tracked(7)), 0);
}

START_TEST(test_L01_dying_plain_is_inert)
{
    deferred_t *d = deferred_new();

    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_add_callback_full(d, tu_record, &d, destroy_fire_owner), 0);
    deferred_unref(d);
    ck_assert_int_eq(tu_log.n, 0);
    ck_assert_int_eq(tu_released, 1);
    ck_assert_uint_eq(tu_live(), 0);
}
END_TEST

/* A dying stream is as inert: a row or an end given to it while it is
 * freed (here by its own canceller's destroy function, which runs after
 * the stream's result was released) is released, not stored. */
static void destroy_poke_multi(void *arg)
{
    deferred_t **d = arg;

    ck_assert_int_eq(deferred_multi_emit(*d, tu_tracked(4)), 0);
    ck_assert_int_eq(deferred_multi_finish(*d, tu_tracked(5)), 0);
}

START_TEST(test_L01_dying_stream_is_inert)
{
    deferred_t *d = NULL;

    d = deferred_multi_new_cancellable(NULL, &d, destroy_poke_multi);
    ck_assert_ptr_nonnull(d);
    deferred_add_callback(d, tu_record, TAG(1));
    deferred_unref(d);
    ck_assert_int_eq(tu_log.n, 0);
    ck_assert_int_eq(tu_released, 2);
}
END_TEST

/* The same through a merge (found by the fuzzer): freeing the merge's
 * output releases a lock run's token, the lock goes to an acquire that is
 * one of the merge's inputs, and its result reaches the dying output. */
static deferred_value_t return_arg_deferred(deferred_value_t v, void *arg)
{
    deferred_t **slot = arg;

    deferred_value_release(v);
    return deferred_value_deferred(deferred_ref(*slot));
}

static deferred_value_t return_tracked(deferred_value_t v, void *arg)
{
    deferred_value_release(v);
    return tu_tracked((intptr_t)arg);
}

START_TEST(test_L01_merge_output_dying_gets_row)
{
    deferred_lock_t *l = deferred_lock_new();
    deferred_t *merged = NULL, *held, *run, *acq, *in[2], *m;

    ck_assert_ptr_nonnull(l);
    held = deferred_lock_acquire(l);
    deferred_unref(held); /* the lock stays held */
    run = deferred_lock_run(l, return_arg_deferred, &merged, NULL);
    acq = deferred_lock_acquire(l);
    ck_assert_ptr_nonnull(run);
    ck_assert_ptr_nonnull(acq);
    deferred_unref(run); /* still served in turn */
    deferred_add_callback(acq, return_tracked, (void *)7);
    in[0] = acq;
    in[1] = acq;
    m = deferred_merge(in, 2);
    ck_assert_ptr_nonnull(m);
    ck_assert_int_eq(deferred_unpause(m), 0);
    deferred_unref(acq);
    merged = m;
    /* the run's fn returns the merge: the run waits on it */
    ck_assert_int_eq(deferred_lock_release(l), 0);
    deferred_unref(m); /* the run's token goes to acq, whose row is released */
    ck_assert_int_eq(tu_released, 1);
    deferred_lock_unref(l);
    ck_assert_uint_eq(tu_live(), 0);
}
END_TEST

/* ---- L02 --------------------------------------------------------------- */

struct big {
    deferred_t **d;
    int n;
    int ok;
    intptr_t seen;
    int count;
};

static struct big *big_new(int n)
{
    struct big *b = calloc(1, sizeof(*b));

    ck_assert_ptr_nonnull(b);
    b->d = calloc((size_t)n, sizeof(*b->d));
    ck_assert_ptr_nonnull(b->d);
    b->n = n;
    return b;
}

static void big_free(struct big *b)
{
    free(b->d);
    free(b);
}

static deferred_value_t count_value(deferred_value_t v, void *arg)
{
    struct big *b = arg;

    b->count++;
    b->seen = deferred_value_get_int(v);
    return v;
}

/* d[0] -> d[1] -> ... by chain_to; firing d[0] reaches the last. */
static void chain_to_chain(void *arg)
{
    struct big *b = arg;
    int i;

    for (i = 0; i < b->n; i++)
        b->d[i] = deferred_new();
    for (i = 0; i + 1 < b->n; i++)
        if (deferred_chain_to(b->d[i], b->d[i + 1]) != 0)
            return;
    deferred_add_callback(b->d[b->n - 1], count_value, b);
    deferred_callback(b->d[0], deferred_value_int(42));
    b->ok = deferred_has_fired(b->d[b->n - 1]);
    for (i = 0; i < b->n; i++)
        deferred_unref(b->d[i]);
}

START_TEST(test_L02_chain_to_million)
{
    struct big *b = big_new(BIG);

    tu_run_small_stack(chain_to_chain, b);
    ck_assert_int_eq(b->ok, 1);
    ck_assert_int_eq(b->seen, 42);
    ck_assert_int_eq(b->count, 1);
    big_free(b);
}
END_TEST

/* Cancelling the head of a chain_to chain, then freeing it from the head:
 * the tail is held by the links only. */
static void chain_to_cancel_free(void *arg)
{
    struct big *b = arg;
    int i;

    for (i = 0; i < b->n; i++)
        b->d[i] = deferred_new();
    for (i = 0; i + 1 < b->n; i++)
        deferred_chain_to(b->d[i], b->d[i + 1]);
    deferred_add_errback(b->d[b->n - 1], tu_recover, TAG(5));
    deferred_add_callback(b->d[b->n - 1], count_value, b);
    for (i = b->n - 1; i >= 1; i--)
        deferred_unref(b->d[i]);
    deferred_cancel(b->d[0]);
    b->ok = 1;
    deferred_unref(b->d[0]);
}

START_TEST(test_L02_chain_to_million_cancel)
{
    struct big *b = big_new(BIG);

    tu_run_small_stack(chain_to_cancel_free, b);
    ck_assert_int_eq(b->ok, 1);
    ck_assert_int_eq(b->seen, 5); /* the cancel's failure, recovered */
    big_free(b);
}
END_TEST

/* A million lock_run() calls queued behind a held lock. */
static deferred_value_t count_under_lock(deferred_value_t v, void *arg)
{
    struct big *b = arg;

    deferred_value_release(v);
    b->count++;
    return deferred_value_int(b->count);
}

static void lock_million(void *arg)
{
    struct big *b = arg;
    deferred_lock_t *l = deferred_lock_new();
    deferred_t *held = deferred_lock_acquire(l);
    int i;

    for (i = 0; i < b->n; i++)
        b->d[i] = deferred_lock_run(l, count_under_lock, b, NULL);
    deferred_lock_release(l);
    b->ok = !deferred_lock_is_locked(l) && deferred_lock_waiting(l) == 0;
    b->seen = deferred_value_get_int(deferred_result(b->d[b->n - 1]));
    for (i = 0; i < b->n; i++)
        deferred_unref(b->d[i]);
    deferred_unref(held);
    deferred_lock_unref(l);
}

START_TEST(test_L02_lock_run_million)
{
    struct big *b = big_new(BIG);

    tu_run_small_stack(lock_million, b);
    ck_assert_int_eq(b->count, BIG);
    ck_assert_int_eq(b->seen, BIG);
    ck_assert_int_eq(b->ok, 1);
    big_free(b);
}
END_TEST

/* A million semaphore waiters whose callbacks release the token. */
struct sem_ctx {
    deferred_semaphore_t *s;
    int count;
};

static deferred_value_t release_token(deferred_value_t v, void *arg)
{
    struct sem_ctx *c = arg;

    deferred_value_release(v);
    c->count++;
    deferred_semaphore_release(c->s);
    return deferred_value_none();
}

static void semaphore_million(void *arg)
{
    struct big *b = arg;
    struct sem_ctx c;
    deferred_t *first;
    int i;

    c.s = deferred_semaphore_new(1);
    c.count = 0;
    first = deferred_semaphore_acquire(c.s);
    for (i = 0; i < b->n; i++) {
        b->d[i] = deferred_semaphore_acquire(c.s);
        deferred_add_callback(b->d[i], release_token, &c);
    }
    deferred_semaphore_release(c.s);
    b->count = c.count;
    b->ok = deferred_semaphore_tokens(c.s) == 1;
    for (i = 0; i < b->n; i++)
        deferred_unref(b->d[i]);
    deferred_unref(first);
    deferred_semaphore_unref(c.s);
}

START_TEST(test_L02_semaphore_million)
{
    struct big *b = big_new(BIG);

    tu_run_small_stack(semaphore_million, b);
    ck_assert_int_eq(b->count, BIG);
    ck_assert_int_eq(b->ok, 1);
    big_free(b);
}
END_TEST

/* A gather of a gather of ... of one deferred, a million levels: fire,
 * cancel, free. */
#define NESTED BIG

static void nested_build(struct big *b)
{
    int i;

    b->d[0] = deferred_new();
    for (i = 1; i < b->n; i++)
        b->d[i] = deferred_gather(&b->d[i - 1], 1, 0);
}

static void nested_fire(void *arg)
{
    struct big *b = arg;
    deferred_value_t v;
    int i, depth = 0;

    nested_build(b);
    deferred_callback(b->d[0], deferred_value_int(9));
    b->ok = deferred_has_fired(b->d[b->n - 1]);
    /* The result is an array of an array of ...: walk it, then free it. */
    v = deferred_result_take(b->d[b->n - 1]);
    {
        deferred_value_t w = v;

        while (deferred_value_get_array(w)) {
            w = deferred_array_get(deferred_value_get_array(w), 0);
            depth++;
        }
        b->seen = deferred_value_get_int(w);
    }
    b->count = depth;
    deferred_value_release(v);
    for (i = 0; i < b->n; i++)
        deferred_unref(b->d[i]);
}

static void nested_cancel(void *arg)
{
    struct big *b = arg;
    int i;

    nested_build(b);
    deferred_cancel(b->d[b->n - 1]);
    b->ok = deferred_has_fired(b->d[0]) && deferred_has_fired(b->d[b->n - 1]);
    for (i = 0; i < b->n; i++)
        deferred_unref(b->d[i]);
}

static void nested_free(void *arg)
{
    struct big *b = arg;
    int i;

    nested_build(b);
    /* outermost first, then the rest: each gather lets its input go */
    for (i = b->n - 1; i >= 0; i--)
        deferred_unref(b->d[i]);
    b->ok = 1;
}

START_TEST(test_L02_nested_gathers)
{
    struct big *b = big_new(NESTED);

    tu_run_small_stack(nested_fire, b);
    ck_assert_int_eq(b->ok, 1);
    ck_assert_int_eq(b->count, NESTED - 1);
    ck_assert_int_eq(b->seen, 9);
    big_free(b);
    b = big_new(NESTED);
    tu_run_small_stack(nested_cancel, b);
    ck_assert_int_eq(b->ok, 1);
    big_free(b);
    b = big_new(NESTED);
    tu_run_small_stack(nested_free, b);
    ck_assert_int_eq(b->ok, 1);
    big_free(b);
}
END_TEST

/* Past the runner's nesting limit every fire still happens once and in
 * order; near the top the nesting is exactly Twisted's (a fire from a
 * callback completes before that callback's deferred goes on). */
#define ORDER_N 200
static deferred_t *order_d[ORDER_N];
static int order_log[2 * ORDER_N], order_nlog;

static deferred_value_t order_first(deferred_value_t v, void *arg)
{
    int i = (int)ARGI(arg);

    order_log[order_nlog++] = i;
    if (i + 1 < ORDER_N)
        deferred_callback(order_d[i + 1], deferred_value_int(i + 1));
    return v;
}

static deferred_value_t order_second(deferred_value_t v, void *arg)
{
    order_log[order_nlog++] = -(int)ARGI(arg) - 1;
    return v;
}

static int order_pos(int entry)
{
    int k;

    for (k = 0; k < order_nlog; k++)
        if (order_log[k] == entry)
            return k;
    return -1;
}

START_TEST(test_L02_deep_nesting_keeps_order)
{
    int i, k;

    order_nlog = 0;
    for (i = 0; i < ORDER_N; i++) {
        order_d[i] = deferred_new();
        deferred_add_callback(order_d[i], order_first, TAG(i));
        deferred_add_callback(order_d[i], order_second, TAG(i));
    }
    deferred_callback(order_d[0], deferred_value_int(0));
    ck_assert_int_eq(order_nlog, 2 * ORDER_N);
    for (i = 0; i < ORDER_N; i++) {
        ck_assert_int_ge(order_pos(i), 0);
        ck_assert_int_lt(order_pos(i), order_pos(-i - 1));
        if (i + 1 < ORDER_N)
            ck_assert_int_lt(order_pos(i), order_pos(i + 1));
        ck_assert(deferred_has_result(order_d[i]));
    }
    /* the shallow levels nest: B_i after everything deeper */
    for (i = 0; i < 16; i++)
        for (k = i + 1; k < ORDER_N; k++)
            ck_assert_int_gt(order_pos(-i - 1), order_pos(-k - 1));
    /* past the limit (32 runners) they do not: a fire from a callback
     * that deep is queued, and takes effect once its deferred's chain has
     * run, B_i before A_i+1 */
    for (i = 40; i + 1 < ORDER_N; i++)
        ck_assert_int_lt(order_pos(-i - 1), order_pos(i + 1));
    for (i = 0; i < ORDER_N; i++)
        deferred_unref(order_d[i]);
}
END_TEST

/* The same nesting, a fire from each deferred's first (plain) callback,
 * a million levels deep on a small stack: the stack stays bounded. */
static deferred_value_t deep_fire_next(deferred_value_t v, void *arg)
{
    struct big *b = arg;

    b->count++;
    if (b->count < b->n)
        deferred_callback(b->d[b->count], deferred_value_int(b->count));
    return v;
}

static void deep_fires(void *arg)
{
    struct big *b = arg;
    int i;

    b->ok = 1;
    for (i = 0; i < b->n; i++) {
        b->d[i] = deferred_new();
        if (!b->d[i] || deferred_add_callback(b->d[i], deep_fire_next, b) != 0 ||
            deferred_add_callback(b->d[i], tu_add_one, NULL) != 0)
            b->ok = 0;
    }
    b->count = 0;
    deferred_callback(b->d[0], deferred_value_int(0));
    for (i = 0; i < b->n; i++) {
        if (!deferred_has_result(b->d[i]) ||
            deferred_value_get_int(deferred_result(b->d[i])) != i + 1)
            b->ok = 0;
        deferred_unref(b->d[i]);
    }
}

START_TEST(test_L02_deep_nested_fires_small_stack)
{
    struct big *b = big_new(BIG);

    tu_run_small_stack(deep_fires, b);
    ck_assert_int_eq(b->ok, 1);
    ck_assert_int_eq(b->count, BIG);
    big_free(b);
}
END_TEST

/* ---- L03 --------------------------------------------------------------- */

static void many_waiters_free(void *arg)
{
    struct big *b = arg;
    deferred_t *inner = deferred_new();
    int i;

    for (i = 0; i < b->n; i++) {
        b->d[i] = deferred_new();
        deferred_add_callback(b->d[i], tu_return_deferred, inner);
        deferred_callback(b->d[i], deferred_value_int(i));
    }
    deferred_unref(inner); /* the waiters hold it */
    for (i = b->n - 1; i >= 0; i--)
        deferred_unref(b->d[i]);
    b->ok = 1;
}

START_TEST(test_L03_many_waiters_newest_first)
{
    struct big *b = big_new(BIG);

    tu_run_small_stack(many_waiters_free, b);
    ck_assert_int_eq(b->ok, 1);
    big_free(b);
}
END_TEST

/* Waiters freed while the inner's chain was compacted keep finding their
 * entries: free some, add entries (compaction), free the rest, fire. */
START_TEST(test_L03_waiters_after_compaction)
{
    enum { N = 40 };
    deferred_t *inner = deferred_new(), *w[N];
    int i;

    deferred_add_callback(inner, tu_record, TAG(1));
    for (i = 0; i < N; i++) {
        w[i] = deferred_new();
        deferred_add_callback(w[i], tu_return_deferred, inner);
        deferred_callback(w[i], deferred_value_int(i));
        deferred_add_callback(w[i], tu_record, TAG(100 + i));
    }
    for (i = 0; i < N; i += 2)
        deferred_unref(w[i]);
    deferred_callback(inner, deferred_value_int(5));
    /* the first odd waiter took the value, the others got none */
    ck_assert_int_eq(tu_log_count(1), 1);
    ck_assert_int_eq(tu_log_count(101), 1);
    for (i = 1; i < N; i += 2)
        deferred_unref(w[i]);
    deferred_unref(inner);
}
END_TEST

/* ---- L04 --------------------------------------------------------------- */

START_TEST(test_L04_chain_to_waiting_target)
{
    deferred_t *a = deferred_new(), *b = deferred_new(), *c = deferred_new();

    /* b waits on c, c waits on a: chain_to(a, b) would make a hold b. */
    deferred_add_callback(c, tu_return_deferred, a);
    deferred_callback(c, deferred_value_int(0));
    deferred_add_callback(b, tu_return_deferred, c);
    deferred_callback(b, deferred_value_int(0));
    ck_assert_int_eq(deferred_chain_to(a, b), -EDEADLK);
    ck_assert_int_eq(deferred_chain_to(a, c), -EDEADLK);
    deferred_unref(b);
    deferred_unref(c);
    deferred_unref(a);
}
END_TEST

START_TEST(test_L04_chain_to_both_ways)
{
    deferred_t *a = deferred_new(), *b = deferred_new(), *c = deferred_new();

    ck_assert_int_eq(deferred_chain_to(a, b), 0);
    ck_assert_int_eq(deferred_chain_to(b, c), 0);
    ck_assert_int_eq(deferred_chain_to(b, a), -EDEADLK);
    ck_assert_int_eq(deferred_chain_to(c, a), -EDEADLK);
    ck_assert_int_eq(deferred_chain_to(a, a), -EINVAL);
    deferred_unref(a);
    deferred_unref(b);
    deferred_unref(c);
}
END_TEST

START_TEST(test_L04_chain_to_into_own_combinator)
{
    deferred_t *x = deferred_new(), *y = deferred_new(), *in[2], *g, *s;

    in[0] = x;
    in[1] = y;
    g = deferred_gather(in, 2, 0);
    ck_assert_int_eq(deferred_chain_to(x, g), -EDEADLK);
    ck_assert_int_eq(deferred_chain_to(y, g), -EDEADLK);
    s = deferred_merge(in, 2);
    ck_assert_int_eq(deferred_chain_to(x, s), -EDEADLK);
    deferred_unref(s);
    deferred_unref(g);
    deferred_unref(x);
    deferred_unref(y);
}
END_TEST

/* a waits on b; then b's callback returns a: an EDEADLK failure, which
 * reaches a too.  Nothing hangs, nothing leaks. */
START_TEST(test_L04_callback_cycle)
{
    deferred_t *a = deferred_new(), *b = deferred_new();

    deferred_add_callback(b, tu_return_deferred, a);
    deferred_add_errback(b, tu_record, TAG(2));
    deferred_add_callback(a, tu_return_deferred, b);
    deferred_add_errback(a, tu_record, TAG(1));
    deferred_callback(a, deferred_value_int(0));
    ck_assert(deferred_is_paused(a)); /* a waits on b */
    deferred_callback(b, deferred_value_int(0));
    ck_assert_int_eq(tu_log_count(2), 1);
    ck_assert_int_eq(tu_log.e[0].code, EDEADLK);
    /* b's chain went on with the failure and handed it to a */
    ck_assert_int_eq(tu_log_count(1), 1);
    ck_assert_int_eq(tu_log.e[1].code, EDEADLK);
    deferred_value_release(deferred_result_take(a));
    deferred_unref(a);
    deferred_unref(b);
}
END_TEST

/* d0's callback returns d1, which chain_to() fires d0: each would hold the
 * other (a leak if d1 never fires): EDEADLK, nothing leaks. */
START_TEST(test_L04_callback_returns_its_chain_to_source)
{
    deferred_t *d0 = deferred_new(), *d1 = deferred_new();

    ck_assert_int_eq(deferred_chain_to(d1, d0), 0);
    deferred_add_callback(d0, tu_return_deferred, d1);
    deferred_add_errback(d0, tu_record, TAG(1));
    deferred_callback(d0, tu_tracked(1));
    ck_assert_int_eq(tu_log_count(1), 1);
    ck_assert_int_eq(tu_log.e[0].code, EDEADLK);
    ck_assert(!deferred_is_waiting(d0));
    deferred_value_release(deferred_result_take(d0));
    deferred_unref(d0);
    deferred_unref(d1);
    ck_assert_int_eq(tu_released, 1);
}
END_TEST

/* a's callback, ahead of the gather's entry in a's chain, returns the
 * gather of a and b: the gather holds a, an input it has not seen end, so
 * a waiting on it would be a cycle.  EDEADLK: a does not wait, and its
 * failure goes on down a's chain to the gather, which fails with it. */
static deferred_t *l04_gather;

static deferred_value_t l04_return_gather(deferred_value_t v, void *arg)
{
    (void)arg;
    deferred_value_release(v);
    return deferred_value_deferred(deferred_ref(l04_gather));
}

START_TEST(test_L04_callback_returns_gather_of_itself)
{
    deferred_t *in[2];
    deferred_value_t r;

    in[0] = deferred_new();
    in[1] = deferred_new();
    deferred_add_callback(in[0], l04_return_gather, NULL);
    l04_gather = deferred_gather(in, 2, 0);
    ck_assert_ptr_nonnull(l04_gather);
    deferred_callback(in[0], tu_tracked(1));
    ck_assert(!deferred_is_waiting(in[0]));
    ck_assert(deferred_has_fired(l04_gather));
    r = deferred_result_take(l04_gather);
    ck_assert(deferred_value_is_failure(r));
    ck_assert_ptr_nonnull(deferred_failure_find(deferred_value_get_failure(r),
                                                DEFERRED_DOMAIN_LIBRARY, EDEADLK));
    deferred_value_release(r);
    deferred_unref(l04_gather);
    deferred_unref(in[0]);
    deferred_unref(in[1]);
    ck_assert_int_eq(tu_released, 1);
}
END_TEST

/* An errback of a stream's end waits on the stream, which is waiting for
 * that end: EDEADLK, nothing leaks. */
static deferred_t *l04_stream;

static deferred_value_t l04_wait_on_stream(deferred_value_t v, void *arg)
{
    (void)arg;
    deferred_value_release(v);
    return deferred_value_deferred(deferred_ref(l04_stream));
}

START_TEST(test_L04_end_waits_on_its_stream)
{
    deferred_t *e;

    l04_stream = deferred_multi_new();
    deferred_multi_emit(l04_stream, deferred_value_failure(
                                  deferred_failure_new(DEFERRED_DOMAIN_USER, EIO, "row")));
    e = deferred_multi_when_finished(l04_stream);
    ck_assert(deferred_has_fired(e));
    deferred_add_errback(e, l04_wait_on_stream, NULL);
    deferred_add_errback(e, tu_record, TAG(1));
    ck_assert_int_eq(tu_log_count(1), 1);
    ck_assert_int_eq(tu_log.e[0].code, EDEADLK);
    deferred_value_release(deferred_result_take(e));
    deferred_unref(l04_stream);
    deferred_unref(e);
}
END_TEST

/* The cycle check runs out of memory on a wide graph: -ENOMEM, nothing
 * added, nothing leaks. */
START_TEST(test_L04_cycle_check_nomem)
{
    enum { N = 100 };
    deferred_t *d[N], *g, *t = deferred_new();
    int i;

    for (i = 0; i < N; i++)
        d[i] = deferred_new();
    g = deferred_gather(d, N, 0);
    /* the walk from t needs no allocation; adding the link does */
    tu_fail_from(1);
    i = deferred_chain_to(g, t);
    tu_fail_at(0);
    ck_assert_int_eq(i, -ENOMEM);
    deferred_unref(t);
    t = deferred_new();
    ck_assert_int_eq(deferred_chain_to(t, g), 0);
    /* g holds 100 inputs: walking from g needs more than the first 32 */
    tu_fail_from(1);
    i = deferred_chain_to(d[0], g);
    tu_fail_at(0);
    ck_assert(i == -ENOMEM || i == -EDEADLK);
    for (i = 0; i < N; i++)
        deferred_callback(d[i], deferred_value_int(i));
    deferred_value_release(deferred_result_take(t));
    deferred_unref(g);
    deferred_unref(t);
    for (i = 0; i < N; i++)
        deferred_unref(d[i]);
}
END_TEST

/* ---- L05 --------------------------------------------------------------- */

START_TEST(test_L05_chain_to_fired_target)
{
    deferred_t *d = deferred_new(), *target = deferred_new();

    deferred_callback(target, deferred_value_int(1));
    ck_assert_int_eq(deferred_chain_to(d, target), 0);
    deferred_add_errback(d, tu_record, TAG(1));
    deferred_callback(d, tu_tracked(2));
    ck_assert_int_eq(tu_released, 1); /* d's value was released */
    ck_assert_int_eq(tu_log_count(1), 1);
    ck_assert_int_eq(tu_log.e[0].code, EALREADY);
    ck_assert_int_eq(deferred_value_get_int(deferred_result(target)), 1);
    deferred_unref(d); /* its failure: unhandled */
    ck_assert_int_eq(tu_reports.unhandled, 1);
    ck_assert_int_eq(tu_reports.last_code, EALREADY);
    deferred_unref(target);
}
END_TEST

/* A target cancelled without a canceller swallows one fire: not an
 * error. */
START_TEST(test_L05_chain_to_cancelled_target)
{
    deferred_t *d = deferred_new(), *target = deferred_new();

    deferred_add_errback(target, tu_recover, TAG(0));
    deferred_cancel(target);
    ck_assert_int_eq(deferred_chain_to(d, target), 0);
    deferred_callback(d, deferred_value_int(3));
    ck_assert(deferred_value_is_none(deferred_result(d)));
    deferred_unref(d);
    deferred_unref(target);
    ck_assert_int_eq(tu_reports.unhandled, 0);
}
END_TEST

/* ---- L06 --------------------------------------------------------------- */

static int l06_destroyed, l06_ran;

static void l06_destroy(void *arg)
{
    (void)arg;
    l06_destroyed++;
}

static deferred_value_t l06_fn(deferred_value_t v, void *arg)
{
    (void)arg;
    l06_ran++;
    return v;
}

/* A lock_run() waiting for the lock is dropped, then the lock: the run
 * held no reference on the lock while it waited, so the lock goes, the
 * waiter fails with ECANCELED, destroy runs once, nothing leaks. */
START_TEST(test_L06_dropped_waiting_run)
{
    deferred_lock_t *l = deferred_lock_new();
    deferred_t *held = deferred_lock_acquire(l);
    deferred_t *run = deferred_lock_run(l, l06_fn, NULL, l06_destroy);

    l06_destroyed = l06_ran = 0;
    deferred_unref(run);
    deferred_unref(held);
    deferred_lock_unref(l);
    ck_assert_int_eq(l06_ran, 0);
    ck_assert_int_eq(l06_destroyed, 1);
}
END_TEST

/* The caller fires a waiting run's deferred itself: it leaves the queue,
 * so the next release does not hand the token to it. */
START_TEST(test_L06_waiter_fired_by_caller)
{
    deferred_lock_t *l = deferred_lock_new();
    deferred_t *held = deferred_lock_acquire(l), *next;
    deferred_t *run = deferred_lock_run(l, l06_fn, NULL, l06_destroy);

    l06_destroyed = l06_ran = 0;
    ck_assert_uint_eq(deferred_lock_waiting(l), 1);
    deferred_callback(run, deferred_value_int(1));
    ck_assert_uint_eq(deferred_lock_waiting(l), 0);
    ck_assert_int_eq(l06_ran, 0);
    ck_assert_int_eq(deferred_lock_release(l), 0);
    ck_assert(!deferred_lock_is_locked(l));
    next = deferred_lock_acquire(l);
    ck_assert(deferred_has_fired(next));
    deferred_unref(next);
    deferred_lock_release(l);
    deferred_unref(run);
    deferred_unref(held);
    deferred_lock_unref(l);
    ck_assert_int_eq(l06_destroyed, 1);
}
END_TEST

/* A run whose function waits on an acquire of its own lock: a deadlock,
 * but one that dropping everything frees (the run holds no strong
 * reference on the lock): the acquire fails with ECANCELED, destroy runs
 * once. */
static deferred_lock_t *l06_lock;
static deferred_t *l06_inner;

static deferred_value_t l06_wait_on_lock(deferred_value_t v, void *arg)
{
    (void)arg;
    deferred_value_release(v);
    l06_ran++;
    l06_inner = deferred_lock_acquire(l06_lock); /* waits: we hold it */
    return deferred_value_deferred(deferred_ref(l06_inner));
}

START_TEST(test_L06_run_waits_on_its_own_lock)
{
    deferred_t *run;

    l06_destroyed = l06_ran = 0;
    l06_lock = deferred_lock_new();
    run = deferred_lock_run(l06_lock, l06_wait_on_lock, NULL, l06_destroy);
    ck_assert_int_eq(l06_ran, 1);
    ck_assert(deferred_is_waiting(run));
    deferred_add_errback(run, tu_record, TAG(1));
    deferred_lock_unref(l06_lock); /* the waiting acquire fails */
    ck_assert_int_eq(tu_log_count(1), 1);
    ck_assert_int_eq(tu_log.e[0].code, ECANCELED);
    deferred_value_release(deferred_result_take(run));
    deferred_unref(run);
    deferred_unref(l06_inner);
    ck_assert_int_eq(l06_destroyed, 1);
}
END_TEST

/* The same for a queue's waiting get and a semaphore's acquire. */
START_TEST(test_L06_queue_and_semaphore_waiters_fired_by_caller)
{
    deferred_queue_t *q = deferred_queue_new(DEFERRED_QUEUE_UNLIMITED, DEFERRED_QUEUE_UNLIMITED);
    deferred_semaphore_t *s = deferred_semaphore_new(1);
    deferred_t *g = NULL, *a = deferred_semaphore_acquire(s), *b;

    ck_assert_int_eq(deferred_queue_get(q, &g), 0);
    ck_assert_uint_eq(deferred_queue_waiting(q), 1);
    deferred_callback(g, deferred_value_int(5));
    ck_assert_uint_eq(deferred_queue_waiting(q), 0);
    ck_assert_int_eq(deferred_queue_put(q, tu_tracked(6)), 0);
    ck_assert_uint_eq(deferred_queue_pending(q), 1);
    b = deferred_semaphore_acquire(s);
    deferred_callback(b, deferred_value_int(1));
    ck_assert_uint_eq(deferred_semaphore_waiting(s), 0);
    ck_assert_int_eq(deferred_semaphore_release(s), 0);
    ck_assert_uint_eq(deferred_semaphore_tokens(s), 1);
    deferred_unref(g);
    deferred_unref(a);
    deferred_unref(b);
    deferred_queue_unref(q);
    deferred_semaphore_unref(s);
    ck_assert_int_eq(tu_released, 1);
}
END_TEST

/* ---- L07 --------------------------------------------------------------- */

/* Freeing a combinator whose inputs are still pending lets them go
 * without allocating, so it cannot fail: with every allocation failing,
 * dropping the result and then the inputs leaks nothing. */
START_TEST(test_L07_combinator_freed_before_inputs)
{
    int mode;

    for (mode = 0; mode < 4; mode++) {
        deferred_t *in[3], *c;
        int i;

        in[0] = deferred_new();
        in[1] = deferred_new();
        in[2] = deferred_ref(in[0]); /* listed twice */
        c = mode == 0 ? deferred_gather(in, 3, 0) : mode == 1 ? deferred_list(in, 3, 0)
          : mode == 2 ? deferred_race(in, 3) : deferred_merge(in, 3);
        ck_assert_ptr_nonnull(c);
        {
            size_t before = tu_total();

            tu_fail_from(1);
            deferred_unref(c);
            tu_fail_at(0);
            ck_assert_uint_eq(tu_total(), before); /* nothing allocated */
            ck_assert(!tu_failure_injected());
        }
        /* the inputs go on alone */
        deferred_callback(in[1], tu_tracked(mode));
        for (i = 0; i < 3; i++)
            deferred_unref(in[i]);
        ck_assert_uint_eq(tu_live(), 0);
    }
    ck_assert_int_eq(tu_released, 4);
}
END_TEST

static Suite *lifetime_suite(void)
{
    Suite *s = suite_create("lifetime");
    TCase *tc = tcase_create("lifetime");
    TCase *big = tcase_create("big");

    tcase_add_checked_fixture(tc, tu_setup, tu_teardown);
    tcase_add_test(tc, test_L01_gather_merge_double_free);
    tcase_add_test(tc, test_L01_gather_merge_every_order);
    tcase_add_test(tc, test_L01_continue_to_dying_outer);
    tcase_add_test(tc, test_L01_combinator_output_dying);
    tcase_add_test(tc, test_L01_dying_is_inert);
    tcase_add_test(tc, test_L01_dying_plain_is_inert);
    tcase_add_test(tc, test_L01_dying_stream_is_inert);
    tcase_add_test(tc, test_L01_merge_output_dying_gets_row);
    tcase_add_test(tc, test_L02_deep_nesting_keeps_order);
    tcase_add_test(tc, test_L03_waiters_after_compaction);
    tcase_add_test(tc, test_L04_chain_to_waiting_target);
    tcase_add_test(tc, test_L04_chain_to_both_ways);
    tcase_add_test(tc, test_L04_chain_to_into_own_combinator);
    tcase_add_test(tc, test_L04_callback_cycle);
    tcase_add_test(tc, test_L04_end_waits_on_its_stream);
    tcase_add_test(tc, test_L04_callback_returns_its_chain_to_source);
    tcase_add_test(tc, test_L04_callback_returns_gather_of_itself);
    tcase_add_test(tc, test_L04_cycle_check_nomem);
    tcase_add_test(tc, test_L05_chain_to_fired_target);
    tcase_add_test(tc, test_L05_chain_to_cancelled_target);
    tcase_add_test(tc, test_L06_dropped_waiting_run);
    tcase_add_test(tc, test_L06_waiter_fired_by_caller);
    tcase_add_test(tc, test_L06_run_waits_on_its_own_lock);
    tcase_add_test(tc, test_L06_queue_and_semaphore_waiters_fired_by_caller);
    tcase_add_test(tc, test_L07_combinator_freed_before_inputs);
    suite_add_tcase(s, tc);

    tcase_add_checked_fixture(big, tu_setup, tu_teardown);
    tcase_set_timeout(big, 600);
    tcase_add_test(big, test_L02_chain_to_million);
    tcase_add_test(big, test_L02_chain_to_million_cancel);
    tcase_add_test(big, test_L02_lock_run_million);
    tcase_add_test(big, test_L02_semaphore_million);
    tcase_add_test(big, test_L02_nested_gathers);
    tcase_add_test(big, test_L02_deep_nested_fires_small_stack);
    tcase_add_test(big, test_L03_many_waiters_newest_first);
    suite_add_tcase(s, big);
    return s;
}

int main(void)
{
    return tu_run_suite(lifetime_suite());
}
