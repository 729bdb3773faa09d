/*
 * test-async.c: async functions (deferred/async.h) against the A
 * scenarios of docs/scenarios.md (test_A01_... to test_A14_...).
 *
 * Every test runs inside the checked fixture of testutil.c, whose teardown
 * asserts that no block allocated through the library's allocator is
 * alive: each test also proves that nothing leaks, frames included.
 */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <deferred/async.h>
#include <deferred/dump.h>

static deferred_failure_t *user_failure(int code)
{
    return deferred_failure_new(DEFERRED_DOMAIN_USER, code, "user failure %d", code);
}

static intptr_t result_int(deferred_t *d)
{
    deferred_value_t v = deferred_result(d);

    ck_assert(deferred_has_result(d));
    ck_assert(!deferred_value_is_failure(v));
    return deferred_value_get_int(v);
}

/* d's failure, taken (so it is handled); the caller unrefs it. */
static deferred_failure_t *take_failure(deferred_t *d)
{
    deferred_value_t v;

    ck_assert(deferred_has_result(d));
    v = deferred_result_take(d);
    ck_assert(deferred_value_is_failure(v));
    return deferred_value_take_failure(v);
}

/* The line of the await in the context frame "async NAME". */
static int frame_line(const deferred_failure_t *f, const char *name, const char *what)
{
    size_t i, n = deferred_failure_context_size(f);
    char stage[128], prefix[64];

    snprintf(stage, sizeof(stage), "async %s", name);
    snprintf(prefix, sizeof(prefix), "%s at test-async.c:", what);
    for (i = 0; i < n; i++) {
        const char *item = deferred_failure_context_item(f, i);

        if (strcmp(deferred_failure_context_stage(f, i), stage) == 0 && item &&
            strncmp(item, prefix, strlen(prefix)) == 0)
            return atoi(item + strlen(prefix));
    }
    return -1;
}

/* ---- a coroutine summing what it awaits ------------------------------- */

#define SEQ_MAX 8

struct seq_frame {
    deferred_async_t co;
    deferred_t *in[SEQ_MAX]; /* awaited in order (references, taken) */
    int n, k;
    intptr_t sum;
    int *cleanups;
    int catch_at;     /* await number whose failure is handled (-1: none) */
    int caught;
    int *dropped;     /* set in the cleanups: deferred_async_dropped() */
    deferred_value_t v;
};

static int seq_await_line;
static int seq_try_line;

/* Input k, moved out of the frame: the await takes it. */
static deferred_t *seq_take(struct seq_frame *f)
{
    deferred_t *d = f->in[f->k];

    f->in[f->k] = NULL;
    return d;
}

static int seq_body(void *frame)
{
    struct seq_frame *f = frame;

    DEFERRED_ASYNC_BEGIN(f);
    for (f->k = 0; f->k < f->n; f->k++) {
        if (f->k == f->catch_at) {
            seq_try_line = __LINE__ + 1;
            DEFERRED_AWAIT_TRY(f, seq_take(f), f->v);
            if (deferred_value_is_failure(f->v)) {
                f->caught = deferred_failure_code(deferred_value_get_failure(f->v));
                deferred_value_release(f->v);
                continue;
            }
        } else {
            seq_await_line = __LINE__ + 1;
            DEFERRED_AWAIT(f, seq_take(f), f->v);
        }
        f->sum += deferred_value_get_int(f->v);
        deferred_value_release(f->v);
    }
    DEFERRED_ASYNC_RETURN(f, deferred_value_int(f->sum));
    DEFERRED_ASYNC_FINALLY(f);
    /* Inputs never awaited (the coroutine left early) are released. */
    for (f->k = 0; f->k < f->n; f->k++)
        deferred_unref(f->in[f->k]);
    if (f->cleanups)
        (*f->cleanups)++;
    if (f->dropped)
        *f->dropped = deferred_async_dropped(&f->co);
    DEFERRED_ASYNC_END(f);
}

static struct seq_frame *seq_new(int *cleanups)
{
    struct seq_frame *f = DEFERRED_ASYNC_NEW(struct seq_frame, seq_body, "seq");

    ck_assert_ptr_nonnull(f);
    f->cleanups = cleanups;
    f->catch_at = -1;
    return f;
}

/* ---- A01: await, resume, return; one allocation ------------------------ */

/* ---- awaits of deferreds someone else holds too ------------------------ */

/* An await of a deferred that has its result and that another holder
 * keeps takes the value at once, without a call into the core; every
 * state in which it has no result (paused, waiting on another, its chain
 * running) and a failure must still go the general way.  The frame
 * awaits in (a reference of its own), then, in its cleanups, fin (the
 * same) when set. */
struct held_frame {
    deferred_async_t co;
    deferred_t *in, *fin;
    int try_;
    int borrow;      /* the awaits borrow in and fin (no deferred_ref()) */
    int resumed;     /* the await of in gave something */
    intptr_t got;    /* its integer, or -code of its failure */
    intptr_t fin_got; /* the same for fin (0: not awaited) */
    deferred_value_t v;
};

static intptr_t held_fin_last;
static int held_resumes; /* awaits of in that went on (the frame may be gone) */

static intptr_t held_code(deferred_value_t v)
{
    intptr_t r;

    if (!deferred_value_is_failure(v))
        return deferred_value_get_int(v);
    r = -(intptr_t)deferred_failure_code(deferred_value_get_failure(v));
    deferred_value_release(v);
    return r;
}

static int held_body(void *frame)
{
    struct held_frame *f = frame;

    DEFERRED_ASYNC_BEGIN(f);
    if (f->try_ && f->borrow)
        DEFERRED_AWAIT_TRY_BORROWED(f, f->in, f->v);
    else if (f->try_)
        DEFERRED_AWAIT_TRY(f, deferred_ref(f->in), f->v);
    else if (f->borrow)
        DEFERRED_AWAIT_BORROWED(f, f->in, f->v);
    else
        DEFERRED_AWAIT(f, deferred_ref(f->in), f->v);
    f->resumed = 1;
    held_resumes++;
    f->got = held_code(f->v);
    DEFERRED_ASYNC_RETURN(f, deferred_value_int(f->got + 100));
    DEFERRED_ASYNC_FINALLY(f);
    if (f->fin && f->borrow) {
        DEFERRED_AWAIT_TRY_BORROWED(f, f->fin, f->v);
        f->fin_got = held_code(f->v);
        held_fin_last = f->fin_got;
    } else if (f->fin) {
        DEFERRED_AWAIT_TRY(f, deferred_ref(f->fin), f->v);
        f->fin_got = held_code(f->v);
        held_fin_last = f->fin_got; /* the frame may be gone when it is read */
    }
    DEFERRED_ASYNC_END(f);
}

/* Whether held_start() makes its coroutine borrow: the held tests run
 * with both kinds of await. */
static int held_borrow;

static deferred_t *held_start(struct held_frame **fp, deferred_t *in, int try_)
{
    struct held_frame *f = DEFERRED_ASYNC_NEW(struct held_frame, held_body, "held");

    ck_assert_ptr_nonnull(f);
    f->in = in;
    f->try_ = try_;
    f->borrow = held_borrow;
    *fp = f;
    return deferred_async_start(f);
}

START_TEST(test_A01_await_held_fired_value_and_failure)
{
    /* Both kinds of await: taking (0) and borrowing (1). */
    for (held_borrow = 0; held_borrow < 2; held_borrow++) {
        deferred_t *x = deferred_succeed(deferred_value_int(7)), *d;
        deferred_failure_t *fl;
        struct held_frame *f;
        int line;

        /* A value: taken at once, x keeps the empty value. */
        d = held_start(&f, x, 0);
        ck_assert_int_eq(result_int(d), 107);
        ck_assert(deferred_has_result(x));
        ck_assert(!deferred_value_is_int(deferred_result(x)));
        deferred_unref(d);
        deferred_unref(x);
        /* A failure with try: the body gets it to handle. */
        x = deferred_fail(user_failure(4));
        d = held_start(&f, x, 1);
        ck_assert_int_eq(result_int(d), 96);
        deferred_unref(d);
        deferred_unref(x);
        /* A failure without try: the coroutine ends with it, and the await's
         * frame names the coroutine. */
        x = deferred_fail(user_failure(5));
        d = held_start(&f, x, 0);
        fl = take_failure(d);
        ck_assert_int_eq(deferred_failure_code(fl), 5);
        line = frame_line(fl, "held", "await");
        ck_assert_int_gt(line, 0);
        deferred_failure_unref(fl);
        deferred_unref(d);
        deferred_unref(x);
        ck_assert_int_eq(tu_reports.unhandled, 0);
    }
    held_borrow = 0;
}
END_TEST

START_TEST(test_A01_await_held_paused_waits_for_unpause)
{
    /* Both kinds of await: taking (0) and borrowing (1). */
    for (held_borrow = 0; held_borrow < 2; held_borrow++) {
        deferred_t *x = deferred_succeed(deferred_value_int(3)), *d;
        struct held_frame *f;

        ck_assert_int_eq(deferred_pause(x), 0);
        d = held_start(&f, x, 0);
        ck_assert_int_eq(f->resumed, 0);
        ck_assert(!deferred_has_result(d));
        ck_assert_int_eq(deferred_unpause(x), 0);
        ck_assert_int_eq(result_int(d), 103);
        deferred_unref(d);
        deferred_unref(x);
    }
    held_borrow = 0;
}
END_TEST

START_TEST(test_A01_await_held_waiting_deferred)
{
    /* Both kinds of await: taking (0) and borrowing (1). */
    for (held_borrow = 0; held_borrow < 2; held_borrow++) {
        deferred_t *inner = deferred_new(), *x = deferred_new(), *d;
        struct held_frame *f;

        /* x has fired, but its callback returned inner: it waits on it. */
        ck_assert_int_eq(deferred_add_callback(x, tu_return_deferred, inner), 0);
        ck_assert_int_eq(deferred_callback(x, deferred_value_int(1)), 0);
        ck_assert(deferred_has_fired(x));
        d = held_start(&f, x, 0);
        ck_assert_int_eq(f->resumed, 0);
        ck_assert_int_eq(deferred_callback(inner, deferred_value_int(8)), 0);
        ck_assert_int_eq(result_int(d), 108);
        deferred_unref(d);
        deferred_unref(x);
        deferred_unref(inner);
    }
    held_borrow = 0;
}
END_TEST

/* A coroutine started by x's own callback awaits x: x's chain is running
 * (its value is with the runner, not in x), so the coroutine waits until
 * the chain has run and gets what it ended with. */
static deferred_t *held_from_cb_d;
static struct held_frame *held_from_cb_f;

static deferred_value_t start_awaiting_self(deferred_value_t v, void *arg)
{
    held_from_cb_d = held_start(&held_from_cb_f, arg, 0);
    ck_assert_int_eq(held_from_cb_f->resumed, 0);
    return v;
}

START_TEST(test_A01_await_held_running_deferred)
{
    /* Both kinds of await: taking (0) and borrowing (1). */
    for (held_borrow = 0; held_borrow < 2; held_borrow++) {
        deferred_t *x = deferred_new();

        ck_assert_int_eq(deferred_add_callback(x, start_awaiting_self, x), 0);
        ck_assert_int_eq(deferred_add_callback(x, tu_add_one, NULL), 0);
        ck_assert_int_eq(deferred_callback(x, deferred_value_int(10)), 0);
        ck_assert_int_eq(result_int(held_from_cb_d), 111);
        deferred_unref(held_from_cb_d);
        deferred_unref(x);
        /* The same from x's last callback: every entry of x is reached, yet
         * its value is still the runner's. */
        x = deferred_new();
        ck_assert_int_eq(deferred_add_callback(x, start_awaiting_self, x), 0);
        ck_assert_int_eq(deferred_callback(x, deferred_value_int(20)), 0);
        ck_assert_int_eq(result_int(held_from_cb_d), 120);
        deferred_unref(held_from_cb_d);
        deferred_unref(x);
    }
    held_borrow = 0;
}
END_TEST

/* Fired more than 32 runners deep, a deferred's chain is queued, not
 * run (the core's nesting bound): it has fired but its chain has not run,
 * so a coroutine awaiting it then must wait for the chain's value, not
 * take the value it was fired with.  deep_step(k) runs in the chain of
 * level k and fires level k + 1; each level fires a deferred x with 1
 * whose chain adds one, and starts a coroutine awaiting x (taking or
 * borrowing it) that returns what it got plus 100. */
#define DEEP_LEVELS 48
static deferred_t *deep_level[DEEP_LEVELS + 1];
static deferred_t *deep_x[DEEP_LEVELS], *deep_co[DEEP_LEVELS];

static deferred_value_t deep_step(deferred_value_t v, void *arg)
{
    int k = (int)(intptr_t)arg;
    struct held_frame *f;

    deep_x[k] = deferred_new();
    ck_assert_int_eq(deferred_add_callback(deep_x[k], tu_add_one, NULL), 0);
    ck_assert_int_eq(deferred_callback(deep_x[k], deferred_value_int(1)), 0);
    deep_co[k] = held_start(&f, deep_x[k], 0);
    ck_assert_int_eq(deferred_callback(deep_level[k + 1], deferred_value_int(k + 1)), 0);
    return v;
}

START_TEST(test_A01_await_of_a_queued_chain_waits)
{
    for (held_borrow = 0; held_borrow < 2; held_borrow++) {
        for (int k = 0; k <= DEEP_LEVELS; k++) {
            deep_level[k] = deferred_new();
            if (k < DEEP_LEVELS)
                ck_assert_int_eq(
                    deferred_add_callback(deep_level[k], deep_step, (void *)(intptr_t)k), 0);
        }
        ck_assert_int_eq(deferred_callback(deep_level[0], deferred_value_int(0)), 0);
        for (int k = 0; k < DEEP_LEVELS; k++) {
            ck_assert_msg(result_int(deep_co[k]) == 102, "level %d got %ld", k,
                          (long)result_int(deep_co[k]));
            deferred_unref(deep_co[k]);
            deferred_unref(deep_x[k]);
        }
        for (int k = 0; k <= DEEP_LEVELS; k++)
            deferred_unref(deep_level[k]);
    }
    held_borrow = 0;
}
END_TEST

/* The value of a pending await goes straight to out when the awaited
 * deferred fires, when out is in the frame.  Not when it is a local of
 * the body's call (allowed: used before the next await): that call has
 * returned, and the resume sets the local of the next one. */
struct local_out_frame {
    deferred_async_t co;
    deferred_t *in[2];
    intptr_t got;
};

static int local_out_body(void *frame)
{
    struct local_out_frame *f = frame;
    deferred_value_t v; /* a local, not in the frame */
    int k;

    DEFERRED_ASYNC_BEGIN(f);
    DEFERRED_AWAIT_BORROWED(f, f->in[0], v);
    f->got = deferred_value_get_int(v);
    DEFERRED_AWAIT_BORROWED(f, f->in[1], v);
    k = (int)deferred_value_get_int(v);
    f->got = f->got * 10 + k;
    DEFERRED_ASYNC_RETURN(f, deferred_value_int(f->got));
    DEFERRED_ASYNC_END(f);
}

/* A body written with the functions the macros call: the resume after a
 * pending await must give the value wherever it was put. */
struct by_hand_frame {
    deferred_async_t co;
    deferred_t *in;
    deferred_value_t v;
};

static int by_hand_body(void *frame)
{
    struct by_hand_frame *f = frame;
    int rc;

    if (f->co.line < 0)
        return DEFERRED_ASYNC_DONE_; /* called again at its end */
    if (f->co.line == 0) {
        rc = deferred_async_await(&f->co, f->in, &f->v, DEFERRED_ASYNC_BORROW_, __FILE__, 7);
        if (rc == DEFERRED_ASYNC_SUSPEND_)
            return rc;
    } else {
        ck_assert_int_eq(f->co.line, 7);
        rc = deferred_async_resume(&f->co, &f->v, DEFERRED_ASYNC_BORROW_, __FILE__, 7);
    }
    ck_assert_int_eq(rc, DEFERRED_ASYNC_DONE_);
    deferred_async_return(&f->co, deferred_value_int(deferred_value_get_int(f->v) + 1));
    return DEFERRED_ASYNC_AGAIN_;
}

START_TEST(test_A01_pending_await_into_a_local_or_by_hand)
{
    struct local_out_frame *f = DEFERRED_ASYNC_NEW(struct local_out_frame, local_out_body, "local");
    struct by_hand_frame *h = DEFERRED_ASYNC_NEW(struct by_hand_frame, by_hand_body, "hand");
    deferred_t *d, *e;

    ck_assert_ptr_nonnull(f);
    ck_assert_ptr_nonnull(h);
    f->in[0] = deferred_new();
    f->in[1] = deferred_new();
    d = deferred_async_start(f);
    /* Between the fires, another call's frame takes the stack where the
     * body's local was. */
    ck_assert_int_eq(deferred_callback(f->in[0], deferred_value_int(4)), 0);
    ck_assert(!deferred_has_fired(d));
    ck_assert_int_eq(deferred_callback(f->in[1], deferred_value_int(2)), 0);
    ck_assert_int_eq(result_int(d), 42);
    h->in = deferred_new();
    e = deferred_async_start(h);
    ck_assert(!deferred_has_fired(e));
    ck_assert_int_eq(deferred_callback(h->in, deferred_value_int(8)), 0);
    ck_assert_int_eq(result_int(e), 9);
    deferred_unref(h->in);
    deferred_unref(f->in[0]);
    deferred_unref(f->in[1]);
    deferred_unref(d);
    deferred_unref(e);
}
END_TEST

/* A dropped coroutine's cleanups: an await of a held, fired deferred
 * fails with ECANCELED at once, as every await does there. */
START_TEST(test_A07_dropped_cleanup_await_of_held_fired)
{
    /* Both kinds of await: taking (0) and borrowing (1). */
    for (held_borrow = 0; held_borrow < 2; held_borrow++) {
        deferred_t *p = deferred_new(), *fin = deferred_succeed(deferred_value_int(9)), *d;
        struct held_frame *f;

        held_fin_last = 0;
        held_resumes = 0;
        d = held_start(&f, p, 0);
        f->fin = fin;
        deferred_unref(d);
        deferred_unref(p); /* freed unfired: the coroutine is dropped */
        ck_assert_int_eq(held_resumes, 0); /* the body unwound, it did not go on */
        ck_assert_int_eq(held_fin_last, -ECANCELED);
        ck_assert_int_eq(result_int(fin), 9); /* fin kept its value */
        deferred_unref(fin);
        ck_assert_int_eq(tu_reports.total, 0);
    }
    held_borrow = 0;
}
END_TEST

/* A borrowed await takes no reference and drops none: of a fired
 * deferred that only the caller holds (the await takes its value, and the
 * caller's reference stays: the fast path must not count the await's),
 * of a failed one (with and without try), and of a pending one (the
 * coroutine waits on it and resumes; the caller's reference stays).  The
 * caller's last unref frees each (the fixture sees a leak otherwise). */
START_TEST(test_A01_await_borrowed_keeps_the_reference)
{
    deferred_t *x, *d;
    deferred_failure_t *fl;
    struct held_frame *f;

    held_borrow = 1;
    x = deferred_succeed(deferred_value_int(7));
    d = held_start(&f, x, 0);
    ck_assert_int_eq(result_int(d), 107);
    ck_assert(deferred_has_result(x));
    ck_assert(deferred_value_is_none(deferred_result(x)));
    deferred_unref(d);
    deferred_unref(x);

    x = deferred_fail(user_failure(4));
    d = held_start(&f, x, 1);
    ck_assert_int_eq(result_int(d), 96);
    ck_assert(deferred_value_is_none(deferred_result(x)));
    deferred_unref(d);
    deferred_unref(x);

    x = deferred_fail(user_failure(5));
    d = held_start(&f, x, 0);
    fl = take_failure(d);
    ck_assert_int_eq(deferred_failure_code(fl), 5);
    deferred_failure_unref(fl);
    deferred_unref(d);
    deferred_unref(x);

    x = deferred_new();
    d = held_start(&f, x, 0);
    ck_assert_int_eq(f->resumed, 0);
    ck_assert(!deferred_has_result(d));
    ck_assert_int_eq(deferred_callback(x, deferred_value_int(8)), 0);
    ck_assert_int_eq(result_int(d), 108);
    ck_assert(deferred_value_is_none(deferred_result(x)));
    deferred_unref(d);
    deferred_unref(x);
    held_borrow = 0;
    ck_assert_int_eq(tu_reports.total, 0);
}
END_TEST

/* A coroutine that borrows in: optionally cancelled by its own body
 * before the await (the cancel then reaches what it awaits next); it
 * returns what the await gave, failure or not. */
struct brw_frame {
    deferred_async_t co;
    deferred_t *in;
    int cancel_first;
    deferred_value_t v;
};

static int brw_body(void *frame)
{
    struct brw_frame *f = frame;

    DEFERRED_ASYNC_BEGIN(f);
    if (f->cancel_first)
        ck_assert_int_eq(deferred_cancel(deferred_async_self(&f->co)), 0);
    DEFERRED_AWAIT_TRY_BORROWED(f, f->in, f->v);
    DEFERRED_ASYNC_RETURN(f, f->v);
    DEFERRED_ASYNC_END(f);
}

static deferred_t *brw_start(deferred_t *in, int cancel_first)
{
    struct brw_frame *f = DEFERRED_ASYNC_NEW(struct brw_frame, brw_body, "brw");

    ck_assert_ptr_nonnull(f);
    f->in = in;
    f->cancel_first = cancel_first;
    return deferred_async_start(f);
}

/* Borrowed awaits of what needs the general way: a multi-fire deferred
 * (awaited until its stream finishes; the caller's reference stays), NULL
 * (an EINVAL failure), a pending deferred the coroutine's deferred is
 * cancelled over, and one awaited after a cancel that came while the body
 * ran (the await passes it on).  The borrowed deferred is the caller's
 * throughout. */
START_TEST(test_A14_await_borrowed_multi_null_and_cancel)
{
    deferred_t *m = deferred_multi_new(), *x, *d;
    deferred_failure_t *fl;

    d = brw_start(m, 0);
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(1)), 0);
    ck_assert(!deferred_has_result(d));
    ck_assert_int_eq(deferred_multi_finish(m, deferred_value_int(3)), 0);
    ck_assert_int_eq(result_int(d), 3);
    deferred_unref(d);
    deferred_unref(m);

    d = brw_start(NULL, 0);
    fl = take_failure(d);
    ck_assert(deferred_failure_is(fl, DEFERRED_DOMAIN_LIBRARY, EINVAL));
    deferred_failure_unref(fl);
    deferred_unref(d);

    x = deferred_new();
    d = brw_start(x, 0);
    ck_assert(!deferred_has_result(d));
    ck_assert_int_eq(deferred_cancel(d), 0);
    fl = take_failure(d);
    ck_assert(deferred_failure_is(fl, DEFERRED_DOMAIN_LIBRARY, ECANCELED));
    deferred_failure_unref(fl);
    ck_assert(deferred_has_fired(x));
    deferred_unref(d);
    deferred_unref(x);

    x = deferred_new();
    d = brw_start(x, 1);
    fl = take_failure(d);
    ck_assert(deferred_failure_is(fl, DEFERRED_DOMAIN_LIBRARY, ECANCELED));
    deferred_failure_unref(fl);
    ck_assert(deferred_has_fired(x));
    deferred_unref(d);
    deferred_unref(x);
    ck_assert_int_eq(tu_reports.total, 0);
}
END_TEST

/* The common end fires the coroutine's deferred without a runner; it must
 * still do what a fire does: run callbacks added to it (see
 * test_A01_callbacks_on_the_result), keep a paused one's result until it
 * is unpaused, and, in debug mode, record the fire site that a second
 * fire reports. */
START_TEST(test_A01_end_fires_as_a_fire_does)
{
    struct seq_frame *f;
    deferred_t *p, *d;

    f = seq_new(NULL);
    p = deferred_new();
    f->in[0] = deferred_ref(p);
    f->n = 1;
    d = deferred_async_start(f);
    ck_assert_int_eq(deferred_pause(d), 0);
    ck_assert_int_eq(deferred_callback(p, deferred_value_int(4)), 0);
    ck_assert(deferred_has_fired(d));
    ck_assert(!deferred_has_result(d));
    ck_assert_int_eq(deferred_add_callback(d, tu_add_one, NULL), 0);
    ck_assert_int_eq(deferred_unpause(d), 0);
    ck_assert_int_eq(result_int(d), 5);
    deferred_unref(d);
    deferred_unref(p);

    deferred_set_debug(true);
    f = seq_new(NULL);
    f->in[0] = deferred_succeed(deferred_value_int(6));
    f->n = 1;
    d = deferred_async_start(f);
    deferred_set_debug(false);
    ck_assert_int_eq(result_int(d), 6);
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(7)), -EALREADY);
    ck_assert_int_eq(tu_reports.already_fired, 1);
    ck_assert_ptr_nonnull(tu_reports.last_fire_file);
    ck_assert_msg(strstr(tu_reports.last_fire_file, "async.c") != NULL, "fired at %s",
                  tu_reports.last_fire_file);
    deferred_unref(d);
}
END_TEST

START_TEST(test_A01_await_pending_and_fired)
{
    int cleanups = 0;
    deferred_t *p = deferred_new(), *q = deferred_succeed(deferred_value_int(5)), *d;
    struct seq_frame *f;
    size_t before;

    ck_assert_ptr_nonnull(p);
    ck_assert_ptr_nonnull(q);
    before = tu_total();
    f = seq_new(&cleanups);
    ck_assert_uint_eq(tu_total() - before, 1); /* the frame and its deferred */
    f->in[0] = q;
    f->in[1] = deferred_ref(p);
    f->n = 2;
    before = tu_total();
    d = deferred_async_start(f);
    ck_assert_ptr_nonnull(d);
    ck_assert_uint_eq(tu_total() - before, 0); /* no allocation per await */
    ck_assert(!deferred_has_result(d));
    ck_assert_int_eq(cleanups, 0);
    ck_assert_ptr_null(deferred_async_start(f)); /* once */
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(deferred_callback(p, deferred_value_int(37)), 0);
    ck_assert_int_eq(result_int(d), 42);
    ck_assert_int_eq(cleanups, 1);
    /* The awaited deferred keeps the empty value (Twisted leaves None). */
    ck_assert(deferred_value_is_none(deferred_result(p)));
    deferred_unref(p);
    deferred_unref(d);
}
END_TEST

START_TEST(test_A01_finishes_before_start_returns)
{
    int cleanups = 0;
    struct seq_frame *f = seq_new(&cleanups);
    deferred_t *d;

    f->in[0] = deferred_succeed(deferred_value_int(1));
    f->in[1] = deferred_succeed(deferred_value_int(2));
    f->n = 2;
    d = deferred_async_start(f);
    ck_assert_int_eq(result_int(d), 3);
    ck_assert_int_eq(cleanups, 1);
    deferred_unref(d);
}
END_TEST

START_TEST(test_A01_callbacks_on_the_result)
{
    struct seq_frame *f = seq_new(NULL);
    deferred_t *p = deferred_new(), *d;

    f->in[0] = deferred_ref(p);
    f->n = 1;
    d = deferred_async_start(f);
    ck_assert_int_eq(deferred_add_callback(d, tu_add_one, NULL), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(1)), 0);
    deferred_callback(p, deferred_value_int(9));
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(tu_log.e[0].value, 10);
    deferred_unref(p);
    deferred_unref(d);
}
END_TEST

/* ---- A02: an unhandled failure ends it, with a frame -------------------- */

START_TEST(test_A02_unhandled_failure_has_frame)
{
    int cleanups = 0;
    struct seq_frame *f = seq_new(&cleanups);
    deferred_t *p = deferred_new(), *d;
    deferred_failure_t *fl;

    f->in[0] = deferred_succeed(deferred_value_int(1));
    f->in[1] = deferred_ref(p);
    f->in[2] = deferred_succeed(deferred_value_int(100)); /* never awaited */
    f->n = 3;
    d = deferred_async_start(f);
    deferred_errback(p, user_failure(7));
    fl = take_failure(d);
    ck_assert_int_eq(deferred_failure_code(fl), 7);
    ck_assert_int_eq(frame_line(fl, "seq", "await"), seq_await_line);
    ck_assert_int_eq(cleanups, 1);
    deferred_failure_unref(fl);
    deferred_unref(p);
    deferred_unref(d);
    ck_assert_int_eq(tu_reports.total, 0);
}
END_TEST

START_TEST(test_A02_story_names_the_coroutine)
{
    struct seq_frame *f = seq_new(NULL);
    deferred_t *d;
    deferred_failure_t *fl;
    char story[1024];

    f->in[0] = deferred_fail(user_failure(3));
    f->n = 1;
    d = deferred_async_start(f);
    fl = take_failure(d);
    deferred_failure_story(fl, story, sizeof(story));
    ck_assert_ptr_nonnull(strstr(story, "in async seq: await at test-async.c:"));
    deferred_failure_unref(fl);
    deferred_unref(d);
}
END_TEST

/* ---- A03: a handled failure -------------------------------------------- */

START_TEST(test_A03_await_try_handles)
{
    int cleanups = 0;
    struct seq_frame *f = seq_new(&cleanups);
    deferred_t *p = deferred_new(), *d;

    f->in[0] = deferred_ref(p);
    f->in[1] = deferred_succeed(deferred_value_int(4));
    f->n = 2;
    f->catch_at = 0;
    d = deferred_async_start(f);
    deferred_errback(p, user_failure(11));
    ck_assert_int_eq(f->caught, 11);
    ck_assert_int_eq(result_int(d), 4);
    ck_assert_int_eq(cleanups, 1);
    deferred_unref(p);
    deferred_unref(d);
    ck_assert_int_eq(tu_reports.total, 0);
}
END_TEST

/* ---- A04: returns, failures, cleanups ----------------------------------- */

struct ret_frame {
    deferred_async_t co;
    int mode;
    int *log;
    int nlog;
    deferred_t *p;
    deferred_value_t v;
};

static int ret_body(void *frame)
{
    struct ret_frame *f = frame;

    DEFERRED_ASYNC_BEGIN(f);
    f->log[f->nlog++] = 1;
    if (f->mode == 1 || f->mode == 5)
        DEFERRED_ASYNC_FAIL(f, user_failure(21));
    if (f->mode == 2)
        DEFERRED_ASYNC_RETURN(f, deferred_value_deferred(deferred_new()));
    if (f->mode == 3) {
        /* Fall off into the cleanups: the empty value. */
    } else {
        DEFERRED_ASYNC_RETURN(f, deferred_value_int(5));
    }
    DEFERRED_ASYNC_FINALLY(f);
    f->log[f->nlog++] = 2;
    if (f->p) {
        /* Cleanups may await. */
        DEFERRED_AWAIT_TRY(f, f->p, f->v);
        f->p = NULL;
        f->log[f->nlog++] = 3;
        if (f->mode == 4 || f->mode == 5) {
            /* A return inside the cleanups replaces the outcome (mode 5:
             * a failure, released). */
            deferred_value_release(f->v);
            DEFERRED_ASYNC_RETURN(f, deferred_value_int(77));
        }
        deferred_value_release(f->v);
    }
    DEFERRED_ASYNC_END(f);
}

static deferred_t *ret_run(int mode, int *log, deferred_t *p)
{
    struct ret_frame *f = DEFERRED_ASYNC_NEW(struct ret_frame, ret_body, "ret");

    ck_assert_ptr_nonnull(f);
    f->mode = mode;
    f->log = log;
    f->p = p;
    return deferred_async_start(f);
}

START_TEST(test_A04_return_and_fail)
{
    int log[8];
    deferred_t *d;
    deferred_failure_t *fl;

    d = ret_run(0, log, NULL);
    ck_assert_int_eq(result_int(d), 5);
    ck_assert_int_eq(log[0], 1);
    ck_assert_int_eq(log[1], 2);
    deferred_unref(d);

    d = ret_run(1, log, NULL);
    fl = take_failure(d);
    ck_assert_int_eq(deferred_failure_code(fl), 21);
    ck_assert_int_eq(log[1], 2);
    deferred_failure_unref(fl);
    deferred_unref(d);

    d = ret_run(2, log, NULL); /* a deferred is no result */
    fl = take_failure(d);
    ck_assert(deferred_failure_is(fl, DEFERRED_DOMAIN_LIBRARY, EINVAL));
    deferred_failure_unref(fl);
    deferred_unref(d);

    d = ret_run(3, log, NULL);
    ck_assert(deferred_has_result(d));
    ck_assert(deferred_value_is_none(deferred_result(d)));
    deferred_unref(d);
}
END_TEST

START_TEST(test_A04_cleanups_await)
{
    int log[8] = {0};
    deferred_t *p = deferred_new(), *d;

    d = ret_run(4, log, deferred_ref(p));
    ck_assert(!deferred_has_result(d));
    ck_assert_int_eq(log[1], 2);
    ck_assert_int_eq(log[2], 0);
    deferred_callback(p, deferred_value_int(1));
    ck_assert_int_eq(log[2], 3);
    ck_assert_int_eq(result_int(d), 77);
    deferred_unref(p);
    deferred_unref(d);

    /* The outcome replaced is a failure: released, never reported. */
    memset(log, 0, sizeof(log));
    p = deferred_new();
    d = ret_run(5, log, deferred_ref(p));
    ck_assert(!deferred_has_result(d));
    deferred_callback(p, deferred_value_int(1));
    ck_assert_int_eq(result_int(d), 77);
    deferred_unref(p);
    deferred_unref(d);
    ck_assert_int_eq(tu_reports.total, 0);
}
END_TEST

/* ---- A05: cancel captured (Twisted's test_inlineCallbacksCancelCaptured) */

static int canceller_calls[2];

static void count_canceller(deferred_t *d, void *arg)
{
    (void)d;
    canceller_calls[ARGI(arg)]++;
}

START_TEST(test_A05_cancel_captured)
{
    int cleanups = 0;
    struct seq_frame *f = seq_new(&cleanups);
    deferred_t *d1 = deferred_new_cancellable(count_canceller, TAG(0), NULL);
    deferred_t *d2 = deferred_new_cancellable(count_canceller, TAG(1), NULL);
    deferred_t *d;
    deferred_failure_t *fl;

    canceller_calls[0] = canceller_calls[1] = 0;
    f->in[0] = deferred_ref(d1);
    f->in[1] = deferred_ref(d2);
    f->n = 2;
    f->catch_at = 0; /* try: yield d1 except: pass */
    d = deferred_async_start(f);
    ck_assert(!deferred_has_result(d));
    ck_assert_int_eq(canceller_calls[0], 0);
    ck_assert_int_eq(canceller_calls[1], 0);

    ck_assert_int_eq(deferred_cancel(d), 0);
    ck_assert_int_eq(canceller_calls[0], 1);
    ck_assert_int_eq(canceller_calls[1], 0);
    ck_assert_int_eq(f->caught, ECANCELED);
    ck_assert(!deferred_has_result(d)); /* now waiting on d2 */
    ck_assert_int_eq(cleanups, 0);

    ck_assert_int_eq(deferred_cancel(d), 0);
    ck_assert_int_eq(canceller_calls[1], 1);
    fl = take_failure(d);
    ck_assert(deferred_failure_is(fl, DEFERRED_DOMAIN_LIBRARY, ECANCELED));
    ck_assert_int_eq(frame_line(fl, "seq", "await"), seq_await_line);
    ck_assert_int_eq(cleanups, 1);
    deferred_failure_unref(fl);
    deferred_unref(d1);
    deferred_unref(d2);
    deferred_unref(d);
    ck_assert_int_eq(tu_reports.total, 0);
}
END_TEST

/* A captured cancel fires the coroutine's deferred waiting on a fresh
 * deferred, as a chain waits on what a callback returned: the deferred
 * reports that it waits, the wait is counted on the fresh one (a dump
 * shows it), debug mode records the cancel as its fire site, and the
 * coroutine's end reaches it through that wait; freed while it waits,
 * the wait is let go. */
START_TEST(test_A05_captured_cancel_waits_as_a_chain_does)
{
    deferred_t *p0 = deferred_new(), *p1 = deferred_new(), *d;
    struct seq_frame *f;
    char *text;

    deferred_set_debug(true);
    f = seq_new(NULL);
    f->in[0] = deferred_ref(p0);
    f->in[1] = deferred_ref(p1);
    f->n = 2;
    f->catch_at = 0;
    d = deferred_async_start(f);
    ck_assert_int_eq(deferred_cancel(d), 0);
    ck_assert_int_eq(f->caught, ECANCELED);
    ck_assert(deferred_is_waiting(d));
    ck_assert_ptr_nonnull(deferred_waits_on(d));
    text = deferred_dump_string(DEFERRED_DUMP_TEXT);
    ck_assert_ptr_nonnull(text);
    ck_assert_msg(strstr(text, "waiters=1") != NULL, "no wait counted: %s", text);
    deferred_free(text);
    deferred_set_debug(false);
    /* It has fired (at the cancel): a fire of the user's is a second. */
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(9)), -EALREADY);
    ck_assert_int_eq(tu_reports.already_fired, 1);
    ck_assert_ptr_nonnull(tu_reports.last_fire_file);
    ck_assert_msg(strstr(tu_reports.last_fire_file, "async.c") != NULL, "fired at %s",
                  tu_reports.last_fire_file);
    ck_assert_int_eq(deferred_callback(p1, deferred_value_int(5)), 0);
    ck_assert(!deferred_is_waiting(d));
    ck_assert_int_eq(result_int(d), 5);
    deferred_unref(d);
    deferred_unref(p1);
    deferred_unref(p0);
    ck_assert_int_eq(tu_live(), 0);

    /* Dropped while its deferred waits: everything is freed. */
    p0 = deferred_new();
    p1 = deferred_new();
    f = seq_new(NULL);
    f->in[0] = deferred_ref(p0);
    f->in[1] = deferred_ref(p1);
    f->n = 2;
    f->catch_at = 0;
    d = deferred_async_start(f);
    ck_assert_int_eq(deferred_cancel(d), 0);
    ck_assert(deferred_is_waiting(d));
    deferred_unref(p1); /* freed unfired: the coroutine is dropped */
    ck_assert(!deferred_has_result(d));
    deferred_unref(d);
    deferred_unref(p0);
}
END_TEST

/* A captured cancel: the coroutine's value still reaches the callbacks
 * added to its deferred before the cancel. */
START_TEST(test_A05_cancel_captured_value)
{
    struct seq_frame *f = seq_new(NULL);
    deferred_t *d1 = deferred_new(), *d2 = deferred_new(), *d;

    f->in[0] = deferred_ref(d1);
    f->in[1] = deferred_ref(d2);
    f->n = 2;
    f->catch_at = 0;
    d = deferred_async_start(f);
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(1)), 0);
    deferred_cancel(d);
    ck_assert_int_eq(tu_log.n, 0);
    deferred_callback(d2, deferred_value_int(8));
    ck_assert_int_eq(tu_log.n, 1);
    ck_assert_int_eq(tu_log.e[0].value, 8);
    ck_assert_int_eq(result_int(d), 8);
    deferred_unref(d1);
    deferred_unref(d2);
    deferred_unref(d);
}
END_TEST

/* ---- A06: cancel at every await point ---------------------------------- */

START_TEST(test_A06_cancel_at_every_await)
{
    int at, k;

    for (at = 0; at < 4; at++) {
        int cleanups = 0;
        struct seq_frame *f = seq_new(&cleanups);
        deferred_t *in[4], *d;
        deferred_failure_t *fl;

        for (k = 0; k < 4; k++) {
            in[k] = deferred_new();
            f->in[k] = deferred_ref(in[k]);
        }
        f->n = 4;
        d = deferred_async_start(f);
        for (k = 0; k < at; k++)
            deferred_callback(in[k], deferred_value_int(k));
        ck_assert(!deferred_has_result(d));
        ck_assert_int_eq(cleanups, 0);
        deferred_cancel(d);
        fl = take_failure(d);
        ck_assert(deferred_failure_is(fl, DEFERRED_DOMAIN_LIBRARY, ECANCELED));
        ck_assert_int_eq(frame_line(fl, "seq", "await"), seq_await_line);
        ck_assert_int_eq(cleanups, 1);
        ck_assert(deferred_has_fired(in[at]));
        for (k = at + 1; k < 4; k++)
            ck_assert(!deferred_has_fired(in[k])); /* released, never awaited */
        deferred_failure_unref(fl);
        for (k = 0; k < 4; k++)
            deferred_unref(in[k]);
        deferred_unref(d);
    }
    ck_assert_int_eq(tu_reports.total, 0);
}
END_TEST

START_TEST(test_A06_cancel_after_end_does_nothing)
{
    struct seq_frame *f = seq_new(NULL);
    deferred_t *d;

    f->in[0] = deferred_succeed(deferred_value_int(2));
    f->n = 1;
    d = deferred_async_start(f);
    deferred_cancel(d);
    ck_assert_int_eq(result_int(d), 2);
    deferred_unref(d);
}
END_TEST

/* ---- A07: dropped ------------------------------------------------------- */

START_TEST(test_A07_dropped_when_awaited_freed)
{
    int cleanups = 0, dropped = -1;
    struct seq_frame *f = seq_new(&cleanups);
    deferred_t *p = deferred_new(), *d;

    f->in[0] = deferred_ref(p);
    f->in[1] = deferred_succeed(deferred_value_int(1)); /* held by the frame */
    f->n = 2;
    f->dropped = &dropped;
    d = deferred_async_start(f);
    /* Dropping the coroutine's deferred does not stop it... */
    deferred_unref(d);
    ck_assert_int_eq(cleanups, 0);
    ck_assert_uint_gt(tu_live(), 0);
    /* ...the awaited deferred freed unfired does: cleanups run, the frame
     * goes, what it held is released (the teardown checks no block is
     * left). */
    deferred_unref(p);
    ck_assert_int_eq(cleanups, 1);
    ck_assert_int_eq(dropped, 1);
    ck_assert_int_eq(tu_reports.total, 0);
}
END_TEST

START_TEST(test_A07_dropped_result_held_never_fires)
{
    int cleanups = 0;
    struct seq_frame *f = seq_new(&cleanups);
    deferred_t *p = deferred_new(), *d;

    f->in[0] = p; /* the coroutine's is the only reference */
    f->n = 1;
    d = deferred_async_start(f);
    /* p was freed by the await itself: nobody could fire it. */
    ck_assert_int_eq(cleanups, 1);
    ck_assert(!deferred_has_fired(d));
    deferred_unref(d);
}
END_TEST

START_TEST(test_A07_discard_unstarted)
{
    struct seq_frame *f = seq_new(NULL);

    deferred_async_discard(f);
    deferred_async_discard(NULL);
}
END_TEST

/* ---- A08: constant stack ------------------------------------------------ */

struct loop_frame {
    deferred_async_t co;
    long i, n;
    deferred_value_t v;
};

static int loop_body(void *frame)
{
    struct loop_frame *f = frame;

    DEFERRED_ASYNC_BEGIN(f);
    for (f->i = 0; f->i < f->n; f->i++)
        DEFERRED_AWAIT(f, deferred_succeed(deferred_value_int(1)), f->v);
    DEFERRED_ASYNC_RETURN(f, deferred_value_int(f->i));
    DEFERRED_ASYNC_END(f);
}

static void million_awaits(void *arg)
{
    struct loop_frame *f = DEFERRED_ASYNC_NEW(struct loop_frame, loop_body, "loop");
    deferred_t *d;

    (void)arg;
    ck_assert_ptr_nonnull(f);
    f->n = 1000000;
    d = deferred_async_start(f);
    ck_assert_int_eq(result_int(d), 1000000);
    deferred_unref(d);
}

START_TEST(test_A08_million_fired_awaits_constant_stack)
{
    tu_run_small_stack(million_awaits, NULL);
}
END_TEST

/* Each coroutine starts the next and awaits it; the last awaits p. */
struct nest_frame {
    deferred_async_t co;
    long left;
    deferred_t *p;
    deferred_value_t v;
};

static int nest_body(void *frame);

static deferred_t *nest_start(long left, deferred_t *p)
{
    struct nest_frame *f = DEFERRED_ASYNC_NEW(struct nest_frame, nest_body, "nest");

    if (!f)
        return NULL;
    f->left = left;
    f->p = p;
    return deferred_async_start(f);
}

static int nest_body(void *frame)
{
    struct nest_frame *f = frame;

    DEFERRED_ASYNC_BEGIN(f);
    if (f->left == 0)
        DEFERRED_AWAIT(f, f->p, f->v);
    else
        DEFERRED_AWAIT(f, nest_start(f->left - 1, f->p), f->v);
    DEFERRED_ASYNC_RETURN(f, deferred_value_int(deferred_value_get_int(f->v) + 1));
    DEFERRED_ASYNC_END(f);
}

static void chain_100k(void *arg)
{
    deferred_t *p = deferred_new(), *d;

    (void)arg;
    d = nest_start(100000 - 1, deferred_ref(p));
    ck_assert_ptr_nonnull(d);
    ck_assert(!deferred_has_result(d));
    deferred_callback(p, deferred_value_int(0));
    ck_assert_int_eq(result_int(d), 100000);
    deferred_unref(p);
    deferred_unref(d);
}

START_TEST(test_A08_chain_of_100k_coroutines)
{
    tu_run_small_stack(chain_100k, NULL);
}
END_TEST

static void chain_100k_cancel(void *arg)
{
    deferred_t *p = deferred_new(), *d;
    deferred_failure_t *fl;

    d = nest_start(ARGI(arg) - 1, deferred_ref(p));
    deferred_cancel(d);
    ck_assert_msg(deferred_has_result(d), "chain of %ld: no result (fired %d, waiting %d)",
                  (long)ARGI(arg), deferred_has_fired(d), deferred_is_waiting(d));
    fl = take_failure(d);
    ck_assert(deferred_failure_is(fl, DEFERRED_DOMAIN_LIBRARY, ECANCELED));
    /* A frame from each coroutine it crossed. */
    ck_assert_uint_eq(deferred_failure_context_size(fl), (size_t)ARGI(arg));
    deferred_failure_unref(fl);
    deferred_unref(p);
    deferred_unref(d);
}

START_TEST(test_A08_chain_of_100k_cancel_and_drop)
{
    tu_run_small_stack(chain_100k_cancel, TAG(1));
    tu_run_small_stack(chain_100k_cancel, TAG(2));
    tu_run_small_stack(chain_100k_cancel, TAG(3));
    tu_run_small_stack(chain_100k_cancel, TAG(40));
    tu_run_small_stack(chain_100k_cancel, TAG(100000));
}
END_TEST

/* ---- A09: async-for over a multi-fire deferred --------------------------- */

struct rows_frame {
    deferred_async_t co;
    deferred_async_iter_t it;
    deferred_t *rows;    /* taken at open */
    deferred_t *gate;    /* awaited per row when set (the test fires them) */
    deferred_t **gates;
    int ngates;
    intptr_t seen[16];
    int n;
    int *cleanups;
    int stop_after;
    deferred_value_t item, v;
};

static int rows_for_line;

static int rows_body(void *frame)
{
    struct rows_frame *f = frame;

    DEFERRED_ASYNC_BEGIN(f);
    deferred_async_iter_open_multi(&f->co, &f->it, f->rows);
    rows_for_line = __LINE__ + 1;
    DEFERRED_ASYNC_FOR(f, &f->it, f->item) {
        f->seen[f->n++] = deferred_value_get_int(f->item);
        deferred_value_release(f->item);
        if (f->n <= f->ngates) {
            /* While this awaits, the stream is held. */
            DEFERRED_AWAIT(f, deferred_ref(f->gates[f->n - 1]), f->v);
            deferred_value_release(f->v);
        }
        if (f->n == f->stop_after)
            break;
    }
    DEFERRED_ASYNC_RETURN(f, deferred_value_int(f->n));
    DEFERRED_ASYNC_FINALLY(f);
    if (f->cleanups)
        (*f->cleanups)++;
    DEFERRED_ASYNC_END(f);
}

static int flow_events[2];

static void flow_count(deferred_t *d, bool paused, void *arg)
{
    (void)d;
    (void)arg;
    flow_events[paused ? 1 : 0]++;
}

START_TEST(test_A09_async_for_multi_backpressure)
{
    int cleanups = 0;
    deferred_t *m = deferred_multi_new(), *gates[2], *d;
    struct rows_frame *f = DEFERRED_ASYNC_NEW(struct rows_frame, rows_body, "rows");
    int i;

    flow_events[0] = flow_events[1] = 0;
    gates[0] = deferred_new();
    gates[1] = deferred_new();
    ck_assert_int_eq(deferred_multi_set_flow(m, flow_count, NULL), 0);
    f->rows = m;
    f->gates = gates;
    f->ngates = 2;
    f->cleanups = &cleanups;
    d = deferred_async_start(f);
    ck_assert(!deferred_has_result(d));
    for (i = 1; i <= 4; i++)
        ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(i * 10)), 0);
    /* The first row awaits gate 0: the stream is held, the others queue. */
    ck_assert_int_eq(f->n, 1);
    ck_assert(deferred_is_paused(m));
    ck_assert_int_ge(flow_events[1], 1);
    ck_assert_uint_ge(deferred_multi_queued(m), 2);
    deferred_callback(gates[0], deferred_value_none());
    ck_assert_int_eq(f->n, 2);
    deferred_callback(gates[1], deferred_value_none());
    ck_assert_int_eq(f->n, 4);
    ck_assert(!deferred_has_result(d));
    ck_assert_int_eq(deferred_multi_finish(m, deferred_value_none()), 0);
    ck_assert_int_eq(result_int(d), 4);
    for (i = 0; i < 4; i++)
        ck_assert_int_eq(f->seen[i], (i + 1) * 10);
    ck_assert_int_eq(cleanups, 1);
    deferred_unref(gates[0]);
    deferred_unref(gates[1]);
    deferred_unref(m);
    deferred_unref(d);
}
END_TEST

/* A cancel while the block awaits (the stream held): the await fails,
 * the coroutine unwinds, and its end cancels the stream. */
START_TEST(test_A09_cancel_while_block_awaits)
{
    int cleanups = 0, cancels = 0;
    deferred_t *m = deferred_multi_new_cancellable(tu_canceller_count, &cancels, NULL);
    deferred_t *gate = deferred_new(), *d;
    struct rows_frame *f = DEFERRED_ASYNC_NEW(struct rows_frame, rows_body, "rows");
    deferred_failure_t *fl;

    f->rows = m;
    f->gates = &gate;
    f->ngates = 1;
    f->cleanups = &cleanups;
    d = deferred_async_start(f);
    deferred_multi_emit(m, deferred_value_int(1));
    deferred_multi_emit(m, deferred_value_int(2));
    ck_assert(deferred_is_paused(m));
    deferred_cancel(d);
    fl = take_failure(d);
    ck_assert(deferred_failure_is(fl, DEFERRED_DOMAIN_LIBRARY, ECANCELED));
    ck_assert_int_gt(frame_line(fl, "rows", "await"), 0);
    ck_assert_int_eq(f->n, 1);
    ck_assert_int_eq(cleanups, 1);
    ck_assert_int_eq(cancels, 1);
    deferred_failure_unref(fl);
    deferred_unref(gate);
    deferred_unref(m);
    deferred_unref(d);
}
END_TEST

START_TEST(test_A09_async_for_stream_failure)
{
    int cleanups = 0;
    deferred_t *m = deferred_multi_new(), *d;
    struct rows_frame *f = DEFERRED_ASYNC_NEW(struct rows_frame, rows_body, "rows");
    deferred_failure_t *fl;

    f->rows = m;
    f->cleanups = &cleanups;
    d = deferred_async_start(f);
    deferred_multi_emit(m, deferred_value_int(1));
    deferred_multi_finish(m, deferred_value_failure(user_failure(5)));
    fl = take_failure(d);
    ck_assert(deferred_failure_find(fl, DEFERRED_DOMAIN_USER, 5) != NULL);
    ck_assert_int_eq(frame_line(fl, "rows", "async-for"), rows_for_line);
    ck_assert_int_eq(cleanups, 1);
    deferred_failure_unref(fl);
    deferred_unref(m);
    deferred_unref(d);
}
END_TEST

START_TEST(test_A09_async_for_break_cancels_stream)
{
    int cancels = 0;
    deferred_t *m = deferred_multi_new_cancellable(tu_canceller_count, &cancels, NULL), *d;
    struct rows_frame *f = DEFERRED_ASYNC_NEW(struct rows_frame, rows_body, "rows");

    f->rows = m;
    f->stop_after = 2;
    d = deferred_async_start(f);
    deferred_multi_emit(m, deferred_value_int(1));
    deferred_multi_emit(m, deferred_value_int(2));
    ck_assert_int_eq(result_int(d), 2);
    ck_assert_int_eq(cancels, 1);
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(3)), -EALREADY);
    deferred_unref(m);
    deferred_unref(d);
}
END_TEST

START_TEST(test_A09_cancel_while_waiting_for_a_row)
{
    int cleanups = 0, cancels = 0;
    deferred_t *m = deferred_multi_new_cancellable(tu_canceller_count, &cancels, NULL), *d;
    struct rows_frame *f = DEFERRED_ASYNC_NEW(struct rows_frame, rows_body, "rows");
    deferred_failure_t *fl;

    f->rows = m;
    f->cleanups = &cleanups;
    d = deferred_async_start(f);
    deferred_multi_emit(m, deferred_value_int(1));
    deferred_cancel(d);
    fl = take_failure(d);
    ck_assert(deferred_failure_find(fl, DEFERRED_DOMAIN_LIBRARY, ECANCELED) != NULL);
    ck_assert_int_eq(cancels, 1);
    ck_assert_int_eq(cleanups, 1);
    deferred_failure_unref(fl);
    deferred_unref(m);
    deferred_unref(d);
}
END_TEST

/* ---- A10: async-for over a process's producer ---------------------------- */

struct sum_frame {
    deferred_async_t co;
    deferred_async_iter_t it;
    deferred_stage_t *producer;
    deferred_async_iter_t *src;
    intptr_t sum;
    deferred_value_t item;
};

static int sum_body(void *frame)
{
    struct sum_frame *f = frame;

    DEFERRED_ASYNC_BEGIN(f);
    /* A consumer's input, or a stream of its own. */
    f->src = deferred_async_input(&f->co);
    if (!f->src) {
        deferred_async_iter_open(&f->co, &f->it, f->producer);
        f->src = &f->it;
    }
    DEFERRED_ASYNC_FOR(f, f->src, f->item) {
        f->sum += deferred_value_get_int(f->item);
        deferred_value_release(f->item);
    }
    DEFERRED_ASYNC_RETURN(f, deferred_value_int(f->sum));
    DEFERRED_ASYNC_END(f);
}

static deferred_stage_t *int_array(int n)
{
    deferred_value_t items[16];
    int i;

    for (i = 0; i < n; i++)
        items[i] = deferred_value_int(i + 1);
    return deferred_stage_array(items, (size_t)n);
}

START_TEST(test_A10_async_for_producer_stage)
{
    struct sum_frame *f = DEFERRED_ASYNC_NEW(struct sum_frame, sum_body, "sum");
    deferred_t *d;

    f->producer = int_array(10);
    d = deferred_async_start(f);
    ck_assert_int_eq(result_int(d), 55);
    deferred_unref(d);
}
END_TEST

/* ---- A11: a coroutine as a process's consumer ---------------------------- */

START_TEST(test_A11_consumer_coroutine)
{
    struct sum_frame *f = DEFERRED_ASYNC_NEW(struct sum_frame, sum_body, "sum");
    deferred_process_t *p = deferred_process_new(0);
    deferred_stage_t *c = deferred_async_consumer(f);
    deferred_t *d;

    ck_assert_ptr_nonnull(c);
    ck_assert_ptr_null(deferred_async_start(f)); /* the process starts it */
    ck_assert_int_eq(deferred_process_add(p, int_array(6)), 0);
    ck_assert_int_eq(deferred_process_add(p, c), 0);
    d = deferred_process_run(p);
    ck_assert_int_eq(result_int(d), 21);
    deferred_unref(d);
    deferred_process_unref(p);
}
END_TEST

START_TEST(test_A11_consumer_never_run)
{
    struct sum_frame *f = DEFERRED_ASYNC_NEW(struct sum_frame, sum_body, "sum");
    deferred_stage_t *c = deferred_async_consumer(f);

    ck_assert_ptr_nonnull(c);
    deferred_stage_free(c);
}
END_TEST

/* ---- A15: a coroutine as a processor ------------------------------------- */

struct double_frame {
    deferred_async_t co;
    deferred_value_t item;
    long n;
};

static int double_body(void *frame)
{
    struct double_frame *f = frame;

    DEFERRED_ASYNC_BEGIN(f);
    DEFERRED_ASYNC_FOR(f, deferred_async_input(&f->co), f->item) {
        f->n++;
        if (deferred_async_emit(&f->co, deferred_value_int(2 * deferred_value_get_int(f->item))) < 0)
            break;
    }
    DEFERRED_ASYNC_RETURN(f, deferred_value_int(f->n));
    DEFERRED_ASYNC_END(f);
}

START_TEST(test_A15_processor_coroutine)
{
    struct double_frame *f = DEFERRED_ASYNC_NEW(struct double_frame, double_body, "double");
    deferred_process_t *p = deferred_process_new(0);
    deferred_t *d;
    deferred_array_t *a;
    size_t i;

    ck_assert_int_eq(deferred_async_emit(&f->co, tu_tracked(1)), -EINVAL); /* no stage */
    ck_assert_int_eq(tu_released, 1);
    ck_assert_int_eq(deferred_process_add(p, int_array(5)), 0);
    ck_assert_int_eq(deferred_process_add(p, deferred_async_consumer(f)), 0);
    ck_assert_int_eq(deferred_process_add(p, deferred_stage_collect()), 0);
    d = deferred_process_run(p);
    ck_assert(deferred_has_result(d));
    a = deferred_value_get_array(deferred_result(d));
    ck_assert_ptr_nonnull(a);
    ck_assert_uint_eq(deferred_array_size(a), 5);
    for (i = 0; i < 5; i++)
        ck_assert_int_eq(deferred_value_get_int(deferred_array_get(a, i)), 2 * (long)(i + 1));
    deferred_unref(d);
    deferred_process_unref(p);
    ck_assert_int_eq(deferred_async_emit(NULL, tu_tracked(2)), -EINVAL);
    ck_assert_int_eq(tu_released, 2);
}
END_TEST

/* ---- A12: the failing allocator at every allocation ---------------------- */

static void oom_scenarios(void)
{
    int cleanups = 0;
    deferred_t *p = deferred_new(), *d1, *d2;
    struct seq_frame *f;
    struct brw_frame *b;
    struct rows_frame *r;
    struct sum_frame *s;
    deferred_t *m, *gate;

    /* A plain coroutine, a cancel, async-for over a multi and a stage. */
    f = DEFERRED_ASYNC_NEW(struct seq_frame, seq_body, "seq");
    if (f) {
        f->catch_at = 0;
        f->cleanups = &cleanups;
        f->in[0] = p ? deferred_ref(p) : NULL;
        f->in[1] = deferred_new();
        f->n = 2;
        d1 = deferred_async_start(f);
        deferred_cancel(d1);
        deferred_cancel(d1);
        deferred_value_release(deferred_result_take(d1));
        deferred_unref(d1);
    }
    deferred_unref(p);

    /* A borrowed await of a pending deferred, cancelled twice (each
     * captured cancel makes a deferred), then fired. */
    p = deferred_new();
    b = DEFERRED_ASYNC_NEW(struct brw_frame, brw_body, "brw");
    if (p && b) {
        b->in = p;
        d1 = deferred_async_start(b);
        deferred_cancel(d1);
        deferred_cancel(d1);
        deferred_callback(p, deferred_value_int(1));
        deferred_value_release(deferred_result_take(d1));
        deferred_unref(d1);
    } else {
        deferred_async_discard(b);
    }
    deferred_unref(p);

    m = deferred_multi_new();
    gate = deferred_new();
    r = DEFERRED_ASYNC_NEW(struct rows_frame, rows_body, "rows");
    if (r && m) {
        r->rows = m;
        r->gates = &gate;
        r->ngates = gate ? 1 : 0;
        d2 = deferred_async_start(r);
        deferred_multi_emit(m, deferred_value_int(1));
        deferred_multi_emit(m, deferred_value_int(2));
        deferred_callback(gate, deferred_value_none());
        deferred_multi_finish(m, deferred_value_none());
        deferred_value_release(deferred_result_take(d2));
        deferred_unref(d2);
    } else {
        deferred_async_discard(r);
    }
    deferred_unref(gate);
    deferred_unref(m);

    s = DEFERRED_ASYNC_NEW(struct sum_frame, sum_body, "sum");
    if (s) {
        deferred_stage_t *c = deferred_async_consumer(s);
        deferred_process_t *pr = deferred_process_new(0);

        if (c && pr && deferred_process_add(pr, int_array(3)) == 0 &&
            deferred_process_add(pr, c) == 0) {
            c = NULL;
            d1 = deferred_process_run(pr);
            deferred_value_release(deferred_result_take(d1));
            deferred_unref(d1);
        }
        deferred_stage_free(c);
        deferred_process_unref(pr);
    }

    {
        struct double_frame *df = DEFERRED_ASYNC_NEW(struct double_frame, double_body, "double");
        deferred_process_t *pr = deferred_process_new(0);
        deferred_stage_t *c = df ? deferred_async_consumer(df) : NULL;

        if (c && pr && deferred_process_add(pr, int_array(3)) == 0 &&
            deferred_process_add(pr, c) == 0) {
            c = NULL;
            if (deferred_process_add(pr, deferred_stage_collect()) == 0) {
                d1 = deferred_process_run(pr);
                deferred_value_release(deferred_result_take(d1));
                deferred_unref(d1);
            }
        } else if (!c) {
            deferred_async_discard(df); /* no-op when the stage took it */
        }
        deferred_stage_free(c);
        deferred_process_unref(pr);
    }
}

/* With the default allocator, a coroutine whose frame is small lives in a
 * block of the per-thread cache of the core (a malloc'd block, reused);
 * a big frame is malloc'd for itself.  Both work alike, round after
 * round (AddressSanitizer sees the cached block's bytes past the frame as
 * poisoned, and every block is freed). */
struct big_frame {
    deferred_async_t co;
    deferred_t *in;
    char pad[2000];
    deferred_value_t v;
};

static int big_body(void *frame)
{
    struct big_frame *f = frame;

    DEFERRED_ASYNC_BEGIN(f);
    DEFERRED_AWAIT(f, deferred_ref(f->in), f->v);
    memset(f->pad, 0x5a, sizeof(f->pad));
    DEFERRED_ASYNC_RETURN(f, deferred_value_int(deferred_value_get_int(f->v) + f->pad[1999]));
    DEFERRED_ASYNC_END(f);
}

START_TEST(test_A12_coroutine_blocks_default_allocator)
{
    int round;

    ck_assert_int_eq(deferred_set_allocator(NULL, NULL, NULL), 0);
    for (round = 0; round < 300; round++) {
        deferred_t *p = deferred_new(), *fired = deferred_succeed(deferred_value_int(round));
        struct held_frame *f;
        struct big_frame *b = DEFERRED_ASYNC_NEW(struct big_frame, big_body, "big");
        deferred_t *d, *e;

        ck_assert_ptr_nonnull(p);
        ck_assert_ptr_nonnull(b);
        d = held_start(&f, p, 0);
        b->in = fired;
        e = deferred_async_start(b);
        ck_assert_int_eq(result_int(e), round + 0x5a);
        ck_assert_int_eq(deferred_callback(p, deferred_value_int(round)), 0);
        ck_assert_int_eq(result_int(d), round + 100);
        deferred_unref(e);
        deferred_unref(d);
        deferred_unref(p);
        deferred_unref(fired);
    }
    tu_install_allocator();
}
END_TEST

/* A coroutine done with goes back whole, without the general free, to
 * the cache's class of coroutine blocks (512 bytes: its deferred, state
 * and frame), and the next coroutine takes that block again. */
struct tiny_frame {
    deferred_async_t co;
};

static int tiny_body(void *frame)
{
    struct tiny_frame *f = frame;

    DEFERRED_ASYNC_BEGIN(f);
    DEFERRED_ASYNC_RETURN(f, deferred_value_int(7));
    DEFERRED_ASYNC_END(f);
}

START_TEST(test_A12_coroutine_block_back_to_its_class)
{
    struct tiny_frame *f;
    deferred_t *d;
    size_t held;

    ck_assert_int_eq(deferred_set_allocator(NULL, NULL, NULL), 0);
    deferred_block_cache_trim();
    f = DEFERRED_ASYNC_NEW(struct tiny_frame, tiny_body, "tiny");
    ck_assert_ptr_nonnull(f);
    d = deferred_async_start(f);
    ck_assert_int_eq(result_int(d), 7);
    deferred_unref(d);
    held = deferred_block_cache_size();
    if (held) {
        ck_assert_uint_eq(held, 512);
        f = DEFERRED_ASYNC_NEW(struct tiny_frame, tiny_body, "tiny");
        ck_assert_ptr_nonnull(f);
        ck_assert_uint_eq(deferred_block_cache_size(), 0);
        deferred_async_discard(f);
        ck_assert_uint_eq(deferred_block_cache_size(), 512);
        deferred_block_cache_trim();
    } else {
        fprintf(stderr, "test_A12_coroutine_block_back_to_its_class: block cache off, "
                        "the class not checked\n");
    }
    tu_install_allocator();
}
END_TEST

START_TEST(test_A12_failing_allocator_everywhere)
{
    unsigned long n;

    for (n = 1; n < 400; n++) {
        tu_fail_at(n);
        oom_scenarios();
        tu_fail_at(0);
        ck_assert_msg(tu_live() == 0, "leak with allocation %lu failed", n);
        if (!tu_failure_injected())
            break;
    }
    ck_assert_uint_lt(n, 400);
    /* Reports of unhandled ENOMEM failures are allowed: nothing else. */
    ck_assert_int_eq(tu_reports.already_fired, 0);
}
END_TEST

/* ---- A13: bad input -------------------------------------------------------- */

START_TEST(test_A13_bad_input)
{
    struct seq_frame *f;
    deferred_value_t v;
    deferred_async_iter_t it;

    errno = 0;
    ck_assert_ptr_null(deferred_async_new(NULL, sizeof(struct seq_frame), "x"));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_ptr_null(deferred_async_new(seq_body, sizeof(deferred_async_t) - 1, "x"));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_ptr_null(deferred_async_new(seq_body, SIZE_MAX, "x"));
    ck_assert_int_eq(errno, ENOMEM);
    errno = 0;
    ck_assert_ptr_null(deferred_async_start(NULL));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_ptr_null(deferred_async_consumer(NULL));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_ptr_null(deferred_async_self(NULL));
    ck_assert_str_eq(deferred_async_name(NULL), "");
    ck_assert(!deferred_async_dropped(NULL));
    ck_assert_ptr_null(deferred_async_input(NULL));
    ck_assert_int_eq(deferred_async_await(NULL, deferred_new(), &v, 0, "f", 1), -EINVAL);
    ck_assert_int_eq(deferred_async_resume(NULL, &v, 0, "f", 1), -EINVAL);
    ck_assert_int_eq(deferred_async_return(NULL, tu_tracked(1)), -EINVAL);
    ck_assert_int_eq(tu_released, 1);
    memset(&it, 0, sizeof(it));
    ck_assert_int_eq(deferred_async_iter_open(NULL, &it, int_array(1)), -EINVAL);
    ck_assert_int_eq(deferred_async_iter_open_multi(NULL, &it, NULL), -EINVAL);
    ck_assert_int_eq(deferred_async_next(NULL, &it, &v, "f", 1), -EINVAL);
    deferred_async_iter_close(NULL);
    deferred_async_iter_close(&it);

    f = seq_new(NULL);
    ck_assert_str_eq(deferred_async_name(&f->co), "seq");
    ck_assert_int_eq(deferred_async_await(&f->co, deferred_new(), NULL, 0, "f", 1), -EINVAL);
    ck_assert_int_eq(deferred_async_resume(&f->co, NULL, 0, "f", 1), -EINVAL);
    ck_assert_ptr_nonnull(deferred_async_self(&f->co));
    ck_assert_int_eq(deferred_async_iter_open(&f->co, NULL, int_array(1)), -EINVAL);
    ck_assert_int_eq(deferred_async_iter_open(&f->co, &it, NULL), -EINVAL);
    ck_assert_int_eq(deferred_async_iter_open_multi(&f->co, &it, f->in[0]), -EINVAL);
    ck_assert_ptr_null(deferred_async_input(&f->co));
    deferred_async_discard(f);
}
END_TEST

/* ---- A14: awaiting NULL, a multi-fire deferred ------------------------------ */

START_TEST(test_A14_await_null_and_multi)
{
    struct seq_frame *f = seq_new(NULL);
    deferred_t *m = deferred_multi_new(), *d;
    deferred_failure_t *fl;

    f->in[0] = deferred_ref(m); /* awaited until its stream finishes */
    f->in[1] = NULL;            /* a constructor's NULL: errno's failure */
    f->n = 2;
    f->catch_at = 1;
    d = deferred_async_start(f);
    deferred_multi_emit(m, deferred_value_int(1));
    ck_assert(!deferred_has_result(d));
    errno = EBADF;
    deferred_multi_finish(m, deferred_value_int(3));
    ck_assert_int_eq(f->caught, EBADF);
    ck_assert_int_eq(result_int(d), 3);
    deferred_unref(m);
    deferred_unref(d);

    f = seq_new(NULL);
    f->in[0] = NULL;
    f->n = 1;
    errno = EINVAL;
    d = deferred_async_start(f);
    fl = take_failure(d);
    ck_assert(deferred_failure_is(fl, DEFERRED_DOMAIN_LIBRARY, EINVAL));
    deferred_failure_unref(fl);
    deferred_unref(d);
}
END_TEST

/* ---- found by fuzz/fuzz-async ------------------------------------------ */

/* A07: a consumer coroutine dropped (what it awaited freed unfired) fails
 * its process's result with ECANCELED; before, the process waited on the
 * coroutine's deferred forever and kept itself alive (the fixture's
 * teardown sees the blocks). */
struct fz_consumer {
    deferred_async_t co;
    deferred_t *in;
    deferred_value_t v;
};

static int fz_consumer_body(void *frame)
{
    struct fz_consumer *f = frame;

    DEFERRED_ASYNC_BEGIN(f);
    DEFERRED_AWAIT(f, f->in, f->v); /* f->in never fires */
    deferred_value_release(f->v);
    DEFERRED_ASYNC_FOR(f, deferred_async_input(&f->co), f->v)
        deferred_value_release(f->v);
    DEFERRED_ASYNC_END(f);
}

START_TEST(test_A07_dropped_consumer_fails_its_process)
{
    deferred_t *x = deferred_new(), *d;
    deferred_process_t *p = deferred_process_new(0);
    struct fz_consumer *f = DEFERRED_ASYNC_NEW(struct fz_consumer, fz_consumer_body, "consumer");
    deferred_failure_t *fl;

    ck_assert_ptr_nonnull(f);
    f->in = deferred_ref(x);
    ck_assert_int_eq(deferred_process_add(p, deferred_stage_array(NULL, 0)), 0);
    ck_assert_int_eq(deferred_process_add(p, deferred_async_consumer(f)), 0);
    d = deferred_process_run(p);
    deferred_process_unref(p);
    ck_assert(!deferred_has_fired(d));
    deferred_unref(x); /* freed unfired: the coroutine is dropped */
    ck_assert(deferred_has_fired(d));
    fl = take_failure(d);
    ck_assert(deferred_failure_find(fl, DEFERRED_DOMAIN_LIBRARY, ECANCELED) != NULL);
    deferred_failure_unref(fl);
    deferred_unref(d);
}
END_TEST

/* A05: after a captured cancel (the coroutine's deferred waits on the
 * deferred the cancel made for it), the coroutine's end closes its
 * iterator, which resumes another coroutine that cancels the first one's
 * deferred again: the core cancels and frees the deferred it waits on,
 * and the end must not use it (ASan saw a use after free). */
static deferred_t *fz_x_deferred;

struct fz_x {
    deferred_async_t co;
    deferred_t *m;
    deferred_async_iter_t it;
    deferred_value_t v;
};

static int fz_x_body(void *frame)
{
    struct fz_x *f = frame;

    DEFERRED_ASYNC_BEGIN(f);
    ck_assert_int_eq(deferred_async_iter_open_multi(&f->co, &f->it, f->m), 0);
    DEFERRED_ASYNC_FOR(f, &f->it, f->v) {
        deferred_value_release(f->v);
        break;
    }
    deferred_cancel(deferred_async_self(&f->co));
    DEFERRED_ASYNC_RETURN(f, tu_tracked(5));
    DEFERRED_ASYNC_END(f);
}

struct fz_y {
    deferred_async_t co;
    deferred_t *m;
    deferred_value_t v;
};

static int fz_y_body(void *frame)
{
    struct fz_y *f = frame;

    DEFERRED_ASYNC_BEGIN(f);
    DEFERRED_AWAIT_TRY(f, deferred_ref(f->m), f->v);
    deferred_value_release(f->v);
    deferred_cancel(fz_x_deferred);
    DEFERRED_ASYNC_END(f);
}

START_TEST(test_A05_cancel_during_end_after_captured_cancel)
{
    deferred_t *m = deferred_multi_new(), *y;
    struct fz_x *xf = DEFERRED_ASYNC_NEW(struct fz_x, fz_x_body, "X");
    struct fz_y *yf = DEFERRED_ASYNC_NEW(struct fz_y, fz_y_body, "Y");

    ck_assert_ptr_nonnull(xf);
    ck_assert_ptr_nonnull(yf);
    xf->m = m;
    fz_x_deferred = deferred_async_start(xf);
    yf->m = m;
    y = deferred_async_start(yf);
    /* X breaks, cancels itself (captured: it goes on), ends; its end
     * cancels m, whose end resumes Y, which cancels X again */
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(1)), 0);
    ck_assert(deferred_has_fired(fz_x_deferred));
    ck_assert(deferred_has_fired(y));
    deferred_value_release(deferred_result_take(fz_x_deferred));
    deferred_value_release(deferred_result_take(y));
    ck_assert_int_eq(tu_released, 1); /* X's return value, released once */
    deferred_unref(fz_x_deferred);
    deferred_unref(y);
    deferred_unref(m);
}
END_TEST

/* A06: a captured cancel, then a second cancel of the coroutine's deferred
 * from its body while the allocation that cancel needs fails: the deferred
 * it waited on fails with ECANCELED and is freed, and the end must not use
 * it (ASan saw a use after free). */
struct fz_self {
    deferred_async_t co;
    deferred_t *m;
    deferred_value_t v;
};

static int fz_self_body(void *frame)
{
    struct fz_self *f = frame;

    DEFERRED_ASYNC_BEGIN(f);
    DEFERRED_AWAIT_TRY(f, deferred_ref(f->m), f->v); /* the first cancel, handled */
    ck_assert(deferred_value_is_failure(f->v));
    deferred_value_release(f->v);
    tu_fail_at(1);
    deferred_cancel(deferred_async_self(&f->co)); /* the second, out of memory */
    tu_fail_at(0);
    DEFERRED_ASYNC_FINALLY(f);
    DEFERRED_ASYNC_RETURN(f, tu_tracked(6));
    DEFERRED_ASYNC_END(f);
}

START_TEST(test_A06_second_cancel_out_of_memory)
{
    deferred_t *m = deferred_multi_new(), *d;
    struct fz_self *f = DEFERRED_ASYNC_NEW(struct fz_self, fz_self_body, "self-cancel");
    deferred_failure_t *fl;

    ck_assert_ptr_nonnull(f);
    f->m = m;
    d = deferred_async_start(f);
    ck_assert_int_eq(deferred_cancel(d), 0);
    ck_assert(deferred_has_fired(d));
    fl = take_failure(d); /* the second cancel's ECANCELED; the return released */
    ck_assert_int_eq(deferred_failure_code(fl), ECANCELED);
    deferred_failure_unref(fl);
    ck_assert_int_eq(tu_released, 1);
    deferred_unref(d);
    deferred_unref(m);
}
END_TEST

/* ---- A16: an await that would close a cycle ------------------------------ */

/* The pair an await puts on a pending deferred holds the coroutine.  A
 * coroutine awaiting a deferred that waits on it (its own deferred, or
 * one that holds it through other coroutines' awaits or chain_to()
 * links) would hold itself: neither could fire or be freed.  The await
 * must fail with EDEADLK instead.  cyc awaits await_me (borrowed): with
 * try_, the failure's code comes back as -code; it returns what it got
 * plus one. */
struct cyc_frame {
    deferred_async_t co;
    deferred_t *await_me;
    int try_;
    deferred_value_t v;
};

static int cyc_body(void *frame)
{
    struct cyc_frame *f = frame;

    DEFERRED_ASYNC_BEGIN(f);
    if (f->try_)
        DEFERRED_AWAIT_TRY_BORROWED(f, f->await_me, f->v);
    else
        DEFERRED_AWAIT_BORROWED(f, f->await_me, f->v);
    DEFERRED_ASYNC_RETURN(f, deferred_value_int(held_code(f->v) + 1));
    DEFERRED_ASYNC_END(f);
}

static struct cyc_frame *cyc_new(int try_)
{
    struct cyc_frame *f = DEFERRED_ASYNC_NEW(struct cyc_frame, cyc_body, "cyc");

    ck_assert_ptr_nonnull(f);
    f->try_ = try_;
    return f;
}

START_TEST(test_A16_await_of_itself_refused)
{
    for (int try_ = 0; try_ <= 1; try_++) {
        struct cyc_frame *f = cyc_new(try_);
        deferred_t *d;

        f->await_me = deferred_async_self(&f->co);
        d = deferred_async_start(f);
        ck_assert_ptr_nonnull(d);
        ck_assert(deferred_has_result(d));
        if (try_) {
            deferred_value_t v = deferred_result_take(d);

            ck_assert_int_eq(deferred_value_get_int(v), -EDEADLK + 1);
        } else {
            deferred_failure_t *fl = take_failure(d);

            ck_assert_int_eq(deferred_failure_code(fl), EDEADLK);
            ck_assert_int_gt(frame_line(fl, "cyc", "await"), 0);
            deferred_failure_unref(fl);
        }
        deferred_unref(d);
    }
}
END_TEST

/* n coroutines: coroutine i (i >= 1) awaits coroutine i - 1's deferred,
 * pending (0 starts last), so each deferred holds the next one's; then 0
 * awaits n - 1's, which would close the loop.  40 makes the walk outgrow
 * its 32 places on the stack; fail_walk fails that allocation
 * (ENOMEM). */
static void cycle_of(int n, int fail_walk)
{
    struct cyc_frame *f[40];
    deferred_t *d[40];
    int code = fail_walk ? ENOMEM : EDEADLK;

    ck_assert_int_le(n, 40);
    for (int i = 0; i < n; i++)
        f[i] = cyc_new(1);
    for (int i = 1; i < n; i++) {
        f[i]->await_me = deferred_async_self(&f[i - 1]->co);
        d[i] = deferred_async_start(f[i]);
        ck_assert(!deferred_has_fired(d[i])); /* no cycle yet: it waits */
    }
    f[0]->await_me = d[n - 1];
    if (fail_walk)
        tu_fail_at(1);
    d[0] = deferred_async_start(f[0]);
    if (fail_walk) {
        ck_assert(tu_failure_injected());
        tu_fail_at(0);
    }
    /* 0 got the failure and returned -code + 1, each after it one more;
     * each await took what it awaited (the deferred keeps the empty
     * value), but for 0's, refused. */
    for (int i = 0; i < n; i++) {
        deferred_value_t v;

        ck_assert(deferred_has_result(d[i]));
        v = deferred_result_take(d[i]);
        if (i < n - 1)
            ck_assert(deferred_value_is_none(v));
        else
            ck_assert_int_eq(deferred_value_get_int(v), -code + n);
    }
    for (int i = 0; i < n; i++)
        deferred_unref(d[i]);
}

START_TEST(test_A16_await_cycle_through_coroutines_refused)
{
    cycle_of(2, 0);
    cycle_of(3, 0);
    cycle_of(40, 0);
    cycle_of(40, 1);
}
END_TEST

/* A chain_to() link from a coroutine's deferred to the deferred it awaits
 * would close a cycle too: refused, and the chain goes on as before. */
START_TEST(test_A16_chain_to_what_a_coroutine_awaits_refused)
{
    deferred_t *x = deferred_new(), *d;
    struct cyc_frame *f = cyc_new(0);
    deferred_value_t v;

    ck_assert_ptr_nonnull(x);
    f->await_me = x;
    d = deferred_async_start(f);
    ck_assert(!deferred_has_fired(d));
    ck_assert_int_eq(deferred_chain_to(d, x), -EDEADLK);
    ck_assert_int_eq(deferred_callback(x, deferred_value_int(41)), 0);
    v = deferred_result_take(d);
    ck_assert_int_eq(deferred_value_get_int(v), 42);
    deferred_unref(d);
    deferred_unref(x);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("async");
    TCase *tc = tcase_create("A");

    tcase_add_checked_fixture(tc, tu_setup, tu_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_A01_await_pending_and_fired);
    tcase_add_test(tc, test_A01_finishes_before_start_returns);
    tcase_add_test(tc, test_A01_callbacks_on_the_result);
    tcase_add_test(tc, test_A01_await_held_fired_value_and_failure);
    tcase_add_test(tc, test_A01_await_held_paused_waits_for_unpause);
    tcase_add_test(tc, test_A01_await_held_waiting_deferred);
    tcase_add_test(tc, test_A01_await_held_running_deferred);
    tcase_add_test(tc, test_A01_await_of_a_queued_chain_waits);
    tcase_add_test(tc, test_A01_pending_await_into_a_local_or_by_hand);
    tcase_add_test(tc, test_A07_dropped_cleanup_await_of_held_fired);
    tcase_add_test(tc, test_A01_await_borrowed_keeps_the_reference);
    tcase_add_test(tc, test_A14_await_borrowed_multi_null_and_cancel);
    tcase_add_test(tc, test_A01_end_fires_as_a_fire_does);
    tcase_add_test(tc, test_A02_unhandled_failure_has_frame);
    tcase_add_test(tc, test_A02_story_names_the_coroutine);
    tcase_add_test(tc, test_A03_await_try_handles);
    tcase_add_test(tc, test_A04_return_and_fail);
    tcase_add_test(tc, test_A04_cleanups_await);
    tcase_add_test(tc, test_A05_cancel_captured);
    tcase_add_test(tc, test_A05_captured_cancel_waits_as_a_chain_does);
    tcase_add_test(tc, test_A05_cancel_captured_value);
    tcase_add_test(tc, test_A06_cancel_at_every_await);
    tcase_add_test(tc, test_A06_cancel_after_end_does_nothing);
    tcase_add_test(tc, test_A07_dropped_when_awaited_freed);
    tcase_add_test(tc, test_A07_dropped_result_held_never_fires);
    tcase_add_test(tc, test_A07_discard_unstarted);
    tcase_add_test(tc, test_A08_million_fired_awaits_constant_stack);
    tcase_add_test(tc, test_A08_chain_of_100k_coroutines);
    tcase_add_test(tc, test_A08_chain_of_100k_cancel_and_drop);
    tcase_add_test(tc, test_A09_async_for_multi_backpressure);
    tcase_add_test(tc, test_A09_cancel_while_block_awaits);
    tcase_add_test(tc, test_A09_async_for_stream_failure);
    tcase_add_test(tc, test_A09_async_for_break_cancels_stream);
    tcase_add_test(tc, test_A09_cancel_while_waiting_for_a_row);
    tcase_add_test(tc, test_A10_async_for_producer_stage);
    tcase_add_test(tc, test_A11_consumer_coroutine);
    tcase_add_test(tc, test_A11_consumer_never_run);
    tcase_add_test(tc, test_A15_processor_coroutine);
    tcase_add_test(tc, test_A12_failing_allocator_everywhere);
    tcase_add_test(tc, test_A12_coroutine_blocks_default_allocator);
    tcase_add_test(tc, test_A12_coroutine_block_back_to_its_class);
    tcase_add_test(tc, test_A13_bad_input);
    tcase_add_test(tc, test_A14_await_null_and_multi);
    tcase_add_test(tc, test_A07_dropped_consumer_fails_its_process);
    tcase_add_test(tc, test_A05_cancel_during_end_after_captured_cancel);
    tcase_add_test(tc, test_A06_second_cancel_out_of_memory);
    tcase_add_test(tc, test_A16_await_of_itself_refused);
    tcase_add_test(tc, test_A16_await_cycle_through_coroutines_refused);
    tcase_add_test(tc, test_A16_chain_to_what_a_coroutine_awaits_refused);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
