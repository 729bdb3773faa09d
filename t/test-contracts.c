/*
 * test-contracts.c: the contracts at the edges of deferred_process, its
 * built-in stages and rows (issue 12): nothing emitted around a group is
 * dropped, a deferred a stage receives is owned until it fires, pauses
 * made before the stages exist count, misuse is a clear error (unknown
 * flags, a group end without a start, a deferred where a value belongs),
 * and every size a row is given is checked before it is used.
 */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* ---- a producer running a script of events ---- */

enum ev_kind {
    EV_EMIT, EV_START, EV_END, EV_END_FAIL, EV_END_DEFERRED, EV_FINISH, EV_FINISH_FAIL,
    EV_FINISH_DEFERRED
};

struct script {
    deferred_stage_t *self;
    const int (*ev)[2]; /* {kind, integer} */
    size_t n;
    int rc[16];         /* what each call returned */
    deferred_t *outcome; /* EV_FINISH_DEFERRED: the deferred handed over */
};

static void script_resume(deferred_stage_t *self, deferred_stage_t *by)
{
    struct script *s = deferred_stage_data(self);
    size_t i;

    (void)by;
    for (i = 0; i < s->n; i++) {
        deferred_value_t x = deferred_value_int(s->ev[i][1]);
        int rc = 0;

        switch (s->ev[i][0]) {
        case EV_EMIT:
            rc = deferred_stage_emit(self, x);
            break;
        case EV_START:
            rc = deferred_stage_start(self, x);
            break;
        case EV_END:
            rc = deferred_stage_end(self, x, deferred_value_none());
            break;
        case EV_END_FAIL:
            rc = deferred_stage_end(self, x,
                                    deferred_value_failure(deferred_failure_new(
                                        DEFERRED_DOMAIN_USER, 1, "group failed")));
            break;
        case EV_END_DEFERRED:
            rc = deferred_stage_end(self, x, deferred_value_deferred(deferred_new()));
            break;
        case EV_FINISH:
            rc = deferred_stage_finish(self, deferred_value_none());
            break;
        case EV_FINISH_FAIL:
            rc = deferred_stage_finish(self, deferred_value_failure(deferred_failure_new(
                                                 DEFERRED_DOMAIN_USER, 7, "source broke")));
            break;
        case EV_FINISH_DEFERRED:
            s->outcome = deferred_new();
            rc = deferred_stage_finish(self, deferred_value_deferred(s->outcome));
            break;
        }
        if (i < 16)
            s->rc[i] = rc;
    }
}

static const deferred_stage_ops_t script_ops = {
    .name = "script",
    .resume = script_resume,
};

static deferred_stage_t *script_stage(struct script *s, const int (*ev)[2], size_t n)
{
    memset(s, 0, sizeof(*s));
    s->ev = ev;
    s->n = n;
    s->self = deferred_stage_new(&script_ops, s, 0);
    return s->self;
}

/* Run producer into consumer (and an optional processor between). */
static deferred_t *run3(deferred_stage_t *producer, deferred_stage_t *middle,
                        deferred_stage_t *consumer)
{
    deferred_process_t *p = deferred_process_new(0);
    deferred_t *d;

    ck_assert_int_eq(deferred_process_add(p, producer), 0);
    if (middle)
        ck_assert_int_eq(deferred_process_add(p, middle), 0);
    ck_assert_int_eq(deferred_process_add(p, consumer), 0);
    d = deferred_process_run(p);
    deferred_process_unref(p);
    return d;
}

static deferred_value_t sum(deferred_value_t acc, deferred_value_t item, void *arg)
{
    intptr_t x = deferred_value_get_int(acc) + deferred_value_get_int(item);

    (void)arg;
    deferred_value_release(acc);
    deferred_value_release(item); /* taken (a batch's array, say) */
    return deferred_value_int(x);
}

/* emit 1, start(9), emit 2, end(9), emit 3, finish */
static const int around_group[][2] = {
    {EV_EMIT, 1}, {EV_START, 9}, {EV_EMIT, 2}, {EV_END, 9}, {EV_EMIT, 3}, {EV_FINISH, 0},
};
#define NEV(a) (sizeof(a) / sizeof((a)[0]))

START_TEST(test_collect_keeps_items_around_groups)
{
    struct script s;
    deferred_t *d;
    deferred_value_t r;
    deferred_array_t *a;

    d = run3(script_stage(&s, around_group, NEV(around_group)), NULL,
             deferred_stage_collect());
    ck_assert(deferred_has_fired(d));
    r = deferred_result_take(d);
    a = deferred_value_get_array(r);
    ck_assert_ptr_nonnull(a);
    ck_assert_uint_eq(deferred_array_size(a), 3);
    ck_assert_int_eq(deferred_value_get_int(deferred_array_get(a, 0)), 1);
    ck_assert_int_eq(deferred_value_get_int(deferred_array_get(a, 1)), 2);
    ck_assert_int_eq(deferred_value_get_int(deferred_array_get(a, 2)), 3);
    deferred_value_release(r);
    deferred_unref(d);
}
END_TEST

START_TEST(test_reduce_and_first_around_groups)
{
    struct script s;
    deferred_t *d;
    static const int group_first[][2] = {
        {EV_START, 9}, {EV_END, 9}, {EV_EMIT, 7}, {EV_FINISH, 0},
    };

    d = run3(script_stage(&s, around_group, NEV(around_group)), NULL,
             deferred_stage_reduce(sum, deferred_value_int(0), NULL));
    ck_assert(deferred_has_fired(d));
    ck_assert_int_eq(deferred_value_get_int(deferred_result(d)), 6);
    deferred_unref(d);

    /* Through a processor too: its group ends are not the stream's. */
    d = run3(script_stage(&s, around_group, NEV(around_group)),
             deferred_stage_map(NULL, tu_pass, NULL),
             deferred_stage_reduce(sum, deferred_value_int(100), NULL));
    ck_assert_int_eq(deferred_value_get_int(deferred_result(d)), 106);
    deferred_unref(d);

    d = run3(script_stage(&s, group_first, NEV(group_first)), NULL, deferred_stage_first());
    ck_assert(deferred_has_fired(d));
    ck_assert_int_eq(deferred_value_get_int(deferred_result(d)), 7);
    deferred_unref(d);
}
END_TEST

/* A batch flushes what came before a group when it opens, and a group
 * that ends with a failure keeps its items. */
START_TEST(test_batch_around_groups)
{
    struct script s;
    deferred_t *d;
    deferred_value_t r;
    deferred_array_t *a;
    static const int ev[][2] = {
        {EV_EMIT, 1}, {EV_START, 9}, {EV_EMIT, 2}, {EV_END_FAIL, 9}, {EV_EMIT, 3},
        {EV_FINISH, 0},
    };

    d = run3(script_stage(&s, ev, NEV(ev)), deferred_stage_batch(10),
             deferred_stage_collect());
    r = deferred_result_take(d);
    a = deferred_value_get_array(r);
    ck_assert_ptr_nonnull(a);
    /* [1] before the group, [2] in it, [3] after it. */
    ck_assert_uint_eq(deferred_array_size(a), 3);
    ck_assert_uint_eq(deferred_array_size(deferred_value_get_array(deferred_array_get(a, 0))), 1);
    ck_assert_int_eq(deferred_value_get_int(deferred_array_get(
                         deferred_value_get_array(deferred_array_get(a, 1)), 0)),
                     2);
    deferred_value_release(r);
    deferred_unref(d);
}
END_TEST

/* A consumer failing on the second batch: the batch's frame names the
 * items in it. */
static deferred_failure_t *fail_on_second(deferred_stage_t *self, deferred_stage_t *from,
                                          deferred_value_t tag, deferred_value_t *item)
{
    (void)from;
    (void)tag;
    (void)item;
    if (deferred_stage_items(self) == 2)
        return deferred_failure_new(DEFERRED_DOMAIN_USER, 5, "bad batch");
    return NULL;
}

static const deferred_stage_ops_t fail_second_ops = {
    .name = "picky",
    .handle = fail_on_second,
};

START_TEST(test_batch_failure_names_its_items)
{
    deferred_value_t items[10];
    deferred_t *d;
    char story[2048];
    int i;

    for (i = 0; i < 10; i++)
        items[i] = deferred_value_int(i);
    d = run3(deferred_stage_array(items, 10), deferred_stage_batch(4),
             deferred_stage_new(&fail_second_ops, NULL, 0));
    ck_assert(deferred_value_is_failure(deferred_result(d)));
    deferred_failure_story(deferred_value_get_failure(deferred_result(d)), story,
                           sizeof(story));
    ck_assert_msg(strstr(story, "batch of items 5 to 8") != NULL, "%s", story);
    deferred_unref(d);
}
END_TEST

/* A consumer failing on the second batch with a first-error naming its
 * element 1: the batch's frame names item 6, the offending one, and not
 * the count of items it was handed (8). */
static deferred_failure_t *fail_on_element(deferred_stage_t *self, deferred_stage_t *from,
                                           deferred_value_t tag, deferred_value_t *item)
{
    (void)from;
    (void)tag;
    (void)item;
    if (deferred_stage_items(self) == 2)
        return deferred_failure_first_error(
            1, deferred_failure_new(DEFERRED_DOMAIN_USER, 5, "bad value"));
    return NULL;
}

static const deferred_stage_ops_t fail_element_ops = {
    .name = "picky",
    .handle = fail_on_element,
};

START_TEST(test_batch_failure_names_the_offending_item)
{
    deferred_value_t items[10];
    deferred_t *d;
    char story[2048];
    int i;

    for (i = 0; i < 10; i++)
        items[i] = deferred_value_int(i);
    d = run3(deferred_stage_array(items, 10), deferred_stage_batch(4),
             deferred_stage_new(&fail_element_ops, NULL, 0));
    ck_assert(deferred_value_is_failure(deferred_result(d)));
    deferred_failure_story(deferred_value_get_failure(deferred_result(d)), story,
                           sizeof(story));
    ck_assert_msg(strstr(story, "in batch: item 6, element 1 of the batch of items 5 to 8") != NULL,
                  "%s", story);
    ck_assert_msg(strstr(story, "item 8:") == NULL, "%s", story);
    /* the library's first-error names no site of the library's */
    ck_assert_msg(strstr(story, "lib/") == NULL, "%s", story);
    deferred_unref(d);
}
END_TEST

START_TEST(test_end_of_unopened_group_fails)
{
    struct script s;
    deferred_t *d;
    deferred_failure_t *f;
    static const int ev[][2] = {{EV_EMIT, 1}, {EV_END, 4}, {EV_FINISH, 0}};

    d = run3(script_stage(&s, ev, NEV(ev)), NULL, deferred_stage_collect());
    ck_assert(deferred_has_fired(d));
    ck_assert_int_eq(s.rc[1], -EINVAL);
    f = deferred_value_get_failure(deferred_result(d));
    ck_assert(deferred_failure_is(f, DEFERRED_DOMAIN_LIBRARY, EINVAL));
    ck_assert_ptr_nonnull(strstr(deferred_failure_message(f), "never opened"));
    deferred_unref(d);
}
END_TEST

/* A stream that fails inside a group: the consumers end with the
 * failure, not with what they had. */
START_TEST(test_failure_inside_group_reaches_consumer)
{
    struct script s;
    deferred_t *d;
    static const int ev[][2] = {{EV_EMIT, 1}, {EV_START, 9}, {EV_EMIT, 2}, {EV_FINISH_FAIL, 0}};

    d = run3(script_stage(&s, ev, NEV(ev)), NULL, deferred_stage_collect());
    ck_assert(deferred_failure_is(deferred_value_get_failure(deferred_result(d)),
                                  DEFERRED_DOMAIN_USER, 7));
    deferred_unref(d);
    d = run3(script_stage(&s, ev, NEV(ev)), deferred_stage_batch(5),
             deferred_stage_reduce(sum, deferred_value_int(0), NULL));
    ck_assert(deferred_failure_is(deferred_value_get_failure(deferred_result(d)),
                                  DEFERRED_DOMAIN_USER, 7));
    deferred_unref(d);
    d = run3(script_stage(&s, ev + 1, NEV(ev) - 1), NULL, deferred_stage_first());
    /* first took item 2 and cancelled: its item is the result. */
    ck_assert_int_eq(deferred_value_get_int(deferred_result(d)), 2);
    deferred_unref(d);
}
END_TEST

/* A group's outcome that is a deferred, a group with the stream's tag. */
START_TEST(test_group_misuse)
{
    struct script s;
    deferred_t *d;
    deferred_failure_t *f;
    static const int ev[][2] = {{EV_START, 9}, {EV_END_DEFERRED, 9}, {EV_FINISH, 0}};
    deferred_process_t *p;

    d = run3(script_stage(&s, ev, NEV(ev)), NULL, deferred_stage_collect());
    ck_assert_int_eq(s.rc[1], -EINVAL);
    f = deferred_value_get_failure(deferred_result(d));
    ck_assert(deferred_failure_is(f, DEFERRED_DOMAIN_LIBRARY, EINVAL));
    ck_assert_ptr_nonnull(strstr(deferred_failure_message(f), "deferred"));
    deferred_unref(d);

    p = deferred_process_new(DEFERRED_PROCESS_PAUSED);
    deferred_process_add(p, script_stage(&s, ev, 0));
    deferred_process_add(p, deferred_stage_collect());
    d = deferred_process_run(p);
    ck_assert_int_eq(deferred_stage_start(s.self, deferred_value_none()), -EINVAL);
    /* Not counted: its end is a group never opened. */
    ck_assert_int_eq(deferred_stage_end(s.self, deferred_value_none(), deferred_value_none()),
                     -EINVAL);
    ck_assert(deferred_has_fired(d));
    deferred_unref(d);
    deferred_process_unref(p);
}
END_TEST

START_TEST(test_deferred_producer_outcome_fails)
{
    struct script s;
    deferred_t *d;
    deferred_failure_t *f;
    static const int ev[][2] = {{EV_EMIT, 1}, {EV_FINISH_DEFERRED, 0}};

    d = run3(script_stage(&s, ev, NEV(ev)), NULL, deferred_stage_collect());
    ck_assert(deferred_has_fired(d));
    ck_assert_int_eq(s.rc[1], -EINVAL);
    f = deferred_value_get_failure(deferred_result(d));
    ck_assert(deferred_failure_is(f, DEFERRED_DOMAIN_LIBRARY, EINVAL));
    ck_assert_ptr_nonnull(strstr(deferred_failure_message(f), "deferred"));
    deferred_unref(d);
}
END_TEST

static int destroyed;
static void count_destroy(void *data)
{
    (void)data;
    destroyed++;
}

static const deferred_stage_ops_t plain_consumer_ops = {
    .name = "plain",
    .handle = fail_on_second,
    .destroy = count_destroy,
};

START_TEST(test_unknown_flags)
{
    destroyed = 0;
    ck_assert_ptr_null(deferred_stage_new(&plain_consumer_ops, NULL, 0x100));
    ck_assert_int_eq(destroyed, 1); /* the data goes, as documented */
    errno = 0;
    ck_assert_ptr_null(deferred_process_new(0x80));
    ck_assert_int_eq(errno, EINVAL);
    /* The known flags still work. */
    deferred_stage_free(deferred_stage_new(&plain_consumer_ops, NULL,
                                           DEFERRED_STAGE_AUTOPAUSE));
    deferred_process_unref(deferred_process_new(DEFERRED_PROCESS_PAUSED));
}
END_TEST

/* ---- the constructor rule (deferred/common.h) ---- */

/* errno after a constructor that must fail: NULL, and errno as given
 * (cleared first, so a stale errno cannot pass). */
#define EXPECT_NULL_ERRNO(call, code) do {                                   \
        errno = 0;                                                           \
        ck_assert_ptr_null(call);                                            \
        ck_assert_int_eq(errno, (code));                                     \
    } while (0)

static deferred_value_t return_failed_run(deferred_value_t v, void *arg)
{
    (void)arg;
    deferred_value_release(v);
    /* A process without stages cannot run: NULL with EINVAL, which
     * deferred_value_deferred() turns into an EINVAL failure. */
    {
        deferred_process_t *p = deferred_process_new(0);
        deferred_value_t r = deferred_value_deferred(deferred_process_run(p));

        deferred_process_unref(p);
        return r;
    }
}

static deferred_value_t return_null_when_finished(deferred_value_t v, void *arg)
{
    (void)arg;
    deferred_value_release(v);
    return deferred_value_deferred(deferred_multi_when_finished(NULL));
}

START_TEST(test_constructors_null_with_errno)
{
    deferred_value_t v;
    deferred_t *d;
    deferred_fn cbs[2] = {return_failed_run, return_null_when_finished};
    size_t i;

    /* Bad arguments: NULL with EINVAL, never an already-failed deferred;
     * what they take is released. */
    tu_released = 0;
    EXPECT_NULL_ERRNO(deferred_succeed(deferred_value_deferred(deferred_new())), EINVAL);
    destroyed = 0;
    EXPECT_NULL_ERRNO(deferred_stage_new(&plain_consumer_ops, NULL, 0x100), EINVAL);
    ck_assert_int_eq(destroyed, 1);
    EXPECT_NULL_ERRNO(deferred_stage_new(NULL, NULL, 0), EINVAL);
    EXPECT_NULL_ERRNO(deferred_process_run(NULL), EINVAL);
    EXPECT_NULL_ERRNO((deferred_process_run)(NULL), EINVAL);
    EXPECT_NULL_ERRNO(deferred_process_first(NULL), EINVAL);
    EXPECT_NULL_ERRNO(deferred_stage_map(NULL, NULL, NULL), EINVAL);
    EXPECT_NULL_ERRNO(deferred_stage_filter(NULL, NULL, NULL), EINVAL);
    EXPECT_NULL_ERRNO(deferred_stage_batch(0), EINVAL);
    EXPECT_NULL_ERRNO(deferred_stage_reduce(NULL, tu_tracked(1), NULL), EINVAL);
    EXPECT_NULL_ERRNO(deferred_stage_from_multi(NULL), EINVAL);
    EXPECT_NULL_ERRNO(deferred_stage_to_multi(NULL), EINVAL);
    EXPECT_NULL_ERRNO(deferred_multi_when_finished(NULL), EINVAL);
    EXPECT_NULL_ERRNO(deferred_row_copy(NULL), EINVAL);
    EXPECT_NULL_ERRNO(deferred_row_alloc(NULL, 0), EINVAL);
    EXPECT_NULL_ERRNO(deferred_row_shape_new(1, NULL), EINVAL);
    ck_assert_int_eq(tu_released, 1); /* reduce's init */

    /* A process without a producer or consumer, and one run twice. */
    {
        deferred_process_t *p = deferred_process_new(0);

        EXPECT_NULL_ERRNO(deferred_process_run(p), EINVAL);
        ck_assert_int_eq(deferred_process_add(p, deferred_stage_array(NULL, 0)), 0);
        EXPECT_NULL_ERRNO(deferred_process_run(p), EINVAL);
        ck_assert_int_eq(deferred_process_add(p, deferred_stage_collect()), 0);
        d = deferred_process_run(p);
        ck_assert_ptr_nonnull(d);
        EXPECT_NULL_ERRNO(deferred_process_run(p), EINVAL);
        deferred_unref(d);
        deferred_process_unref(p);
    }

    /* deferred_fail(NULL) keeps the value convention: ENOMEM. */
    errno = EINVAL;
    d = deferred_fail(NULL);
    ck_assert_ptr_nonnull(d);
    v = deferred_result_take(d);
    ck_assert_int_eq(deferred_failure_code(deferred_value_get_failure(v)), ENOMEM);
    deferred_value_release(v);
    deferred_unref(d);

    /* A callback returning deferred_value_deferred() of such a NULL fails
     * the chain with errno's code: EINVAL, not ENOMEM. */
    for (i = 0; i < 2; i++) {
        deferred_failure_t *f;

        d = deferred_new();
        ck_assert_int_eq(deferred_add_callback(d, cbs[i], NULL), 0);
        ck_assert_int_eq(deferred_callback(d, deferred_value_none()), 0);
        ck_assert(deferred_has_result(d));
        v = deferred_result_take(d);
        f = deferred_value_get_failure(v);
        ck_assert_ptr_nonnull(f);
        ck_assert(deferred_failure_is(f, DEFERRED_DOMAIN_LIBRARY, EINVAL));
        deferred_value_release(v);
        deferred_unref(d);
    }
}
END_TEST

START_TEST(test_pause_before_stages)
{
    deferred_process_t *p = deferred_process_new(0);
    deferred_value_t items[3] = {deferred_value_int(1), deferred_value_int(2),
                                 deferred_value_int(3)};
    deferred_stage_t *consumer;
    deferred_t *d;

    ck_assert_int_eq(deferred_process_pause(p), 0);
    ck_assert(deferred_process_is_paused(p));
    ck_assert_int_eq(deferred_process_add(p, deferred_stage_array(items, 3)), 0);
    ck_assert_int_eq(deferred_process_add(p, deferred_stage_collect()), 0);
    ck_assert_int_eq(deferred_process_resume(p), 0);
    ck_assert(!deferred_process_is_paused(p));
    ck_assert_int_eq(deferred_process_resume(p), -EINVAL);
    d = deferred_process_run(p);
    ck_assert(deferred_has_fired(d));
    ck_assert_uint_eq(deferred_array_size(deferred_value_get_array(deferred_result(d))), 3);
    deferred_unref(d);
    deferred_process_unref(p);

    /* A pause made before the run holds the producers added after it. */
    p = deferred_process_new(0);
    items[0] = deferred_value_int(1);
    ck_assert_int_eq(deferred_process_pause(p), 0);
    ck_assert_int_eq(deferred_process_add(p, deferred_stage_array(items, 1)), 0);
    ck_assert_int_eq(deferred_process_add(p, deferred_stage_collect()), 0);
    d = deferred_process_run(p);
    ck_assert(!deferred_has_fired(d));
    ck_assert(deferred_process_is_paused(p));
    ck_assert_int_eq(deferred_process_resume(p), 0);
    ck_assert(deferred_has_fired(d));
    deferred_unref(d);
    deferred_process_unref(p);

    /* A consumer's pause before the run: counted, and held from the run. */
    p = deferred_process_new(0);
    items[0] = deferred_value_int(1);
    ck_assert_int_eq(deferred_process_add(p, deferred_stage_array(items, 1)), 0);
    consumer = deferred_stage_collect();
    ck_assert_int_eq(deferred_process_add(p, consumer), 0);
    ck_assert_int_eq(deferred_stage_pause(consumer), 0);
    ck_assert(deferred_stage_is_paused(consumer));
    ck_assert(deferred_process_is_paused(p));
    d = deferred_process_run(p);
    ck_assert(!deferred_has_fired(d));
    ck_assert_int_eq(deferred_stage_resume(consumer), 0);
    ck_assert(deferred_has_fired(d));
    ck_assert_int_eq(deferred_stage_resume(consumer), -EINVAL);
    deferred_unref(d);
    deferred_process_unref(p);
}
END_TEST

/* ---- deferreds a stage receives are owned until they fire ---- */

/* A map function returning a deferred the test does not hold: only its
 * destroy count tells whether it is still alive. */
static deferred_t *waiting[4];
static int nwaiting, cancels_seen;

static void note_cancel(deferred_t *d, void *arg)
{
    (void)d;
    (void)arg;
    cancels_seen++;
}

static deferred_value_t unowned_later(deferred_value_t v, void *arg)
{
    deferred_t *d = deferred_new_cancellable(note_cancel, NULL, count_destroy);

    (void)arg;
    if (deferred_value_get_int(v) == 1 && nwaiting < 4) {
        waiting[nwaiting++] = d; /* borrowed */
        return deferred_value_deferred(d);
    }
    deferred_unref(d);
    return v;
}

START_TEST(test_map_holds_its_deferred)
{
    deferred_value_t items[3] = {deferred_value_int(0), deferred_value_int(1),
                                 deferred_value_int(2)};
    deferred_t *d;
    deferred_array_t *a;

    destroyed = 0;
    nwaiting = 0;
    d = run3(deferred_stage_array(items, 3), deferred_stage_map("later", unowned_later, NULL),
             deferred_stage_collect());
    ck_assert(!deferred_has_fired(d));
    ck_assert_int_eq(nwaiting, 1);
    /* Item 0's deferred was made and dropped; item 1's is alive (and
     * item 2 waits behind it). */
    ck_assert_int_eq(destroyed, 1);
    deferred_callback(waiting[0], deferred_value_int(10));
    ck_assert(deferred_has_fired(d));
    ck_assert_int_eq(destroyed, 3); /* let go once it fired */
    a = deferred_value_get_array(deferred_result(d));
    ck_assert_uint_eq(deferred_array_size(a), 3);
    ck_assert_int_eq(deferred_value_get_int(deferred_array_get(a, 1)), 10);
    deferred_unref(d);

    /* Cancelling the process while the map waits: the deferred is
     * cancelled and let go; the process ends with ECANCELED. */
    destroyed = cancels_seen = 0;
    nwaiting = 0;
    items[0] = deferred_value_int(0);
    items[1] = deferred_value_int(1);
    items[2] = deferred_value_int(2);
    d = run3(deferred_stage_array(items, 3), deferred_stage_map("later", unowned_later, NULL),
             deferred_stage_collect());
    ck_assert_int_eq(deferred_cancel(d), 0);
    ck_assert(deferred_has_fired(d));
    ck_assert(deferred_value_is_failure(deferred_result(d)));
    deferred_unref(d);
    ck_assert_int_eq(cancels_seen, 1);
}
END_TEST

/* A processor whose finish replaces the outcome (the ECANCELED of a
 * cancel, here) by a value of its own. */
static deferred_failure_t *pass_on(deferred_stage_t *self, deferred_stage_t *from,
                                   deferred_value_t tag, deferred_value_t *item)
{
    deferred_value_t v = *item;

    (void)from;
    *item = deferred_value_none();
    deferred_stage_emit_tagged(self, tag, v);
    return NULL;
}

static deferred_value_t forget_outcome(deferred_stage_t *self, deferred_stage_t *from,
                                       deferred_value_t tag, deferred_value_t outcome)
{
    (void)self;
    (void)from;
    (void)tag;
    deferred_value_release(outcome);
    return deferred_value_int(5);
}

static const deferred_stage_ops_t forgetful_ops = {
    .name = "forgetful",
    .resume = NULL,
    .handle = pass_on,
    .finish = forget_outcome,
};

START_TEST(test_cancel_reaches_what_map_waits_on)
{
    struct script s;
    deferred_process_t *p = deferred_process_new(0);
    deferred_t *d;
    static const int ev[][2] = {{EV_EMIT, 1}}; /* and never finishes */

    destroyed = cancels_seen = 0;
    nwaiting = 0;
    deferred_process_add(p, script_stage(&s, ev, NEV(ev)));
    deferred_process_add(p, deferred_stage_new(&forgetful_ops, NULL, 0));
    deferred_process_add(p, deferred_stage_map("later", unowned_later, NULL));
    deferred_process_add(p, deferred_stage_collect());
    d = deferred_process_run(p);
    ck_assert_int_eq(nwaiting, 1);
    ck_assert_int_eq(deferred_process_cancel(p), 0);
    /* The map's wait is cancelled with the stream: the process ends. */
    ck_assert(deferred_has_fired(d));
    ck_assert_int_eq(cancels_seen, 1);
    ck_assert(deferred_failure_is(deferred_value_get_failure(deferred_result(d)),
                                  DEFERRED_DOMAIN_LIBRARY, ECANCELED));
    deferred_unref(d);
    deferred_process_unref(p);
    ck_assert_int_eq(destroyed, 1);
}
END_TEST

/* A producer that ignores pauses: results stay in order even when one
 * waits on a deferred and the next is ready at once. */
static deferred_t *hold_first;
static deferred_value_t first_waits(deferred_value_t v, void *arg)
{
    (void)arg;
    if (deferred_value_get_int(v) == 0) {
        hold_first = deferred_new();
        return deferred_value_deferred(deferred_ref(hold_first));
    }
    return v;
}

START_TEST(test_map_keeps_order)
{
    struct script s;
    deferred_t *d;
    deferred_array_t *a;
    static const int ev[][2] = {{EV_EMIT, 0}, {EV_EMIT, 1}, {EV_EMIT, 2}, {EV_FINISH, 0}};

    d = run3(script_stage(&s, ev, NEV(ev)), deferred_stage_map(NULL, first_waits, NULL),
             deferred_stage_collect());
    ck_assert(!deferred_has_fired(d));
    deferred_callback(hold_first, deferred_value_int(50));
    deferred_unref(hold_first);
    ck_assert(deferred_has_fired(d));
    a = deferred_value_get_array(deferred_result(d));
    ck_assert_uint_eq(deferred_array_size(a), 3);
    ck_assert_int_eq(deferred_value_get_int(deferred_array_get(a, 0)), 50);
    ck_assert_int_eq(deferred_value_get_int(deferred_array_get(a, 1)), 1);
    ck_assert_int_eq(deferred_value_get_int(deferred_array_get(a, 2)), 2);
    deferred_unref(d);
}
END_TEST

/* A consumer whose finish hands over a deferred the test does not hold. */
static deferred_t *finish_wait;
static deferred_value_t waiting_finish(deferred_stage_t *self, deferred_stage_t *from,
                                       deferred_value_t tag, deferred_value_t outcome)
{
    (void)self;
    (void)from;
    if (deferred_value_is_failure(outcome))
        return outcome;
    deferred_value_release(outcome);
    if (!deferred_value_is_none(tag)) {
        /* A group's end may not wait. */
        return deferred_value_deferred(deferred_new_cancellable(NULL, NULL, count_destroy));
    }
    finish_wait = deferred_new_cancellable(NULL, NULL, count_destroy);
    return deferred_value_deferred(finish_wait);
}

static deferred_failure_t *take_all(deferred_stage_t *self, deferred_stage_t *from,
                                    deferred_value_t tag, deferred_value_t *item)
{
    (void)self;
    (void)from;
    (void)tag;
    (void)item;
    return NULL;
}

static const deferred_stage_ops_t waiting_ops = {
    .name = "waiting consumer",
    .handle = take_all,
    .finish = waiting_finish,
};

START_TEST(test_finish_deferred_is_held)
{
    struct script s;
    deferred_t *d;
    deferred_failure_t *f;
    static const int ev[][2] = {{EV_EMIT, 1}, {EV_FINISH, 0}};
    static const int grouped[][2] = {{EV_START, 1}, {EV_END, 1}, {EV_FINISH, 0}};

    destroyed = 0;
    d = run3(script_stage(&s, ev, NEV(ev)), NULL, deferred_stage_new(&waiting_ops, NULL, 0));
    ck_assert(!deferred_has_fired(d));
    ck_assert_int_eq(destroyed, 0);
    deferred_callback(finish_wait, deferred_value_int(42));
    ck_assert(deferred_has_fired(d));
    ck_assert_int_eq(deferred_value_get_int(deferred_result(d)), 42);
    deferred_unref(d);
    ck_assert_int_eq(destroyed, 1);

    /* From a group's end: a clear failure. */
    destroyed = 0;
    d = run3(script_stage(&s, grouped, NEV(grouped)), NULL,
             deferred_stage_new(&waiting_ops, NULL, 0));
    /* The stream's end then waits as usual. */
    if (!deferred_has_fired(d))
        deferred_callback(finish_wait, deferred_value_none());
    ck_assert(deferred_has_fired(d));
    f = deferred_value_get_failure(deferred_result(d));
    ck_assert(deferred_failure_is(f, DEFERRED_DOMAIN_LIBRARY, EINVAL));
    ck_assert_ptr_nonnull(strstr(deferred_failure_message(f), "group"));
    deferred_unref(d);
}
END_TEST

/* ---- out of memory on the new paths ---- */

/* Odd items wait on a deferred that fired already (through the queue),
 * item 4 on one the test fires; the producer ignores pauses. */
static deferred_t *oom_wait;
static deferred_value_t oom_map(deferred_value_t v, void *arg)
{
    deferred_t *d;

    (void)arg;
    if (deferred_value_get_int(v) == 4) {
        d = deferred_new();
        if (!d)
            return deferred_value_failure(NULL);
        oom_wait = deferred_ref(d);
        return deferred_value_deferred(d);
    }
    if (deferred_value_get_int(v) % 2 == 0)
        return v;
    d = deferred_succeed(v);
    return d ? deferred_value_deferred(d) : deferred_value_failure(NULL);
}

/* The process below with each allocation failing in turn
 * (tu_oom_sweep()): each run ends with ENOMEM or with every item; more
 * than 5 runs end out of memory. */
static int oom_map_enomem;

static void sc_map_queue_and_batch(struct tu_oom *r)
{
    static const int ev[][2] = {
        {EV_EMIT, 1}, {EV_EMIT, 2}, {EV_START, 9}, {EV_EMIT, 3}, {EV_EMIT, 4}, {EV_EMIT, 5},
        {EV_END, 9}, {EV_EMIT, 6}, {EV_EMIT, 7}, {EV_FINISH, 0},
    };
    struct script s;
    deferred_process_t *p;
    deferred_stage_t *src, *map, *batch, *sink;
    deferred_t *d = NULL;
    bool built;

    oom_wait = NULL;
    p = deferred_process_new(0);
    src = script_stage(&s, ev, NEV(ev));
    map = deferred_stage_map(NULL, oom_map, NULL);
    batch = deferred_stage_batch(2);
    sink = deferred_stage_collect();
    built = p && src && map && batch && sink;
    if (!built) {
        deferred_stage_free(src);
        deferred_stage_free(map);
        deferred_stage_free(batch);
        deferred_stage_free(sink);
    } else {
        built = deferred_process_add(p, src) == 0;
        built = deferred_process_add(p, built ? map : (deferred_stage_free(map), NULL)) ==
                    0 && built;
        built = deferred_process_add(p, built ? batch : (deferred_stage_free(batch), NULL)) ==
                    0 && built;
        built = deferred_process_add(p, built ? sink : (deferred_stage_free(sink), NULL)) ==
                    0 && built;
    }
    if (built)
        d = deferred_process_run(p);
    deferred_process_unref(p);
    if (oom_wait) {
        deferred_callback(oom_wait, deferred_value_int(40));
        deferred_unref(oom_wait);
    }
    if (d) {
        deferred_value_t v;

        ck_assert(deferred_has_fired(d));
        v = deferred_result(d);
        if (deferred_value_is_failure(v)) {
            ck_assert_msg(deferred_failure_find(deferred_value_get_failure(v),
                                                DEFERRED_DOMAIN_ANY, ENOMEM) != NULL,
                          "not ENOMEM");
            r->saw = true;
        } else {
            deferred_array_t *a = deferred_value_get_array(v);
            size_t i, total = 0;

            ck_assert_ptr_nonnull(a);
            for (i = 0; i < deferred_array_size(a); i++)
                total += deferred_array_size(
                    deferred_value_get_array(deferred_array_get(a, i)));
            ck_assert_msg(total == 7, "%zu items at allocation %lu", total,
                          tu_oom_current()); /* nothing dropped */
            r->ok = true;
        }
        deferred_unref(d);
    } else {
        r->saw = true;
    }
    if (r->saw)
        oom_map_enomem++;
}

START_TEST(test_oom_map_queue_and_batch)
{
    oom_map_enomem = 0;
    tu_oom_sweep("map, queue and batch", sc_map_queue_and_batch, NULL, 0);
    ck_assert_int_gt(oom_map_enomem, 5);
}
END_TEST

/* ---- a failure's site is the user's call ---- */

START_TEST(test_process_failures_name_the_run)
{
    struct script s;
    deferred_process_t *p = deferred_process_new(0);
    deferred_failure_t *f;
    deferred_t *d;
    int line;
    static const int ev[][2] = {{EV_END, 4}, {EV_FINISH, 0}};

    /* A cancel: "the process was cancelled" is the process's own failure. */
    deferred_process_add(p, deferred_stage_array(NULL, 0));
    deferred_process_add(p, deferred_stage_collect());
    deferred_process_pause(p);
    line = __LINE__ + 1;
    d = deferred_process_run(p);
    ck_assert_int_eq(deferred_process_cancel(p), 0);
    f = deferred_value_get_failure(deferred_result(d));
    ck_assert(deferred_failure_is(f, DEFERRED_DOMAIN_LIBRARY, ECANCELED));
    ck_assert_msg(strstr(deferred_failure_file(f), "test-contracts.c") != NULL, "%s",
                  deferred_failure_file(f));
    ck_assert_int_eq(deferred_failure_line(f), line);
    deferred_unref(d);
    deferred_process_unref(p);

    /* A misuse found by the process, and a stage's own failure. */
    p = deferred_process_new(0);
    deferred_process_add(p, script_stage(&s, ev, NEV(ev)));
    deferred_process_add(p, deferred_stage_collect());
    line = __LINE__ + 1;
    d = deferred_process_run(p);
    f = deferred_value_get_failure(deferred_result(d));
    ck_assert(deferred_failure_is(f, DEFERRED_DOMAIN_LIBRARY, EINVAL));
    ck_assert_int_eq(deferred_failure_line(f), line);
    f = deferred_stage_failure(s.self, DEFERRED_DOMAIN_USER, 3, "mine");
    ck_assert_int_eq(deferred_failure_line(f), line);
    ck_assert_str_eq(deferred_failure_message(f), "mine");
    deferred_failure_unref(f);
    deferred_unref(d);
    deferred_process_unref(p);

    /* Without the macro: no site of the library's. */
    p = deferred_process_new(0);
    deferred_process_add(p, deferred_stage_array(NULL, 0));
    deferred_process_add(p, deferred_stage_collect());
    deferred_process_pause(p);
    d = (deferred_process_run)(p);
    deferred_process_cancel(p);
    f = deferred_value_get_failure(deferred_result(d));
    ck_assert_ptr_null(strstr(deferred_failure_file(f), "lib/"));
    deferred_unref(d);
    deferred_process_unref(p);
}
END_TEST

/* ---- rows ---- */

START_TEST(test_row_sizes_checked)
{
    static const char *const names[] = {"a", "b"};
    deferred_row_shape_t *sh = deferred_row_shape_new(2, names);
    deferred_row_t *row;
    char big[100];

    memset(big, 'x', sizeof(big));
    ck_assert_ptr_nonnull(sh);
    /* A size whose growth or header would wrap is refused. */
    ck_assert_ptr_null(deferred_row_alloc(sh, SIZE_MAX));
    ck_assert_ptr_null(deferred_row_alloc(sh, SIZE_MAX / 2 + 10));
    ck_assert_ptr_null(deferred_row_alloc(sh, SIZE_MAX - 100));
    row = deferred_row_alloc(sh, 10);
    ck_assert_ptr_nonnull(row);
    /* len + 1 would wrap: a bad length, not a copy of SIZE_MAX bytes. */
    ck_assert_int_eq(deferred_row_set_text(row, 0, "abc", (size_t)-1), -EINVAL);
    ck_assert_int_eq(deferred_row_set_blob(row, 1, "abc", (size_t)-1), -EINVAL);
    ck_assert_int_eq(deferred_row_set_blob(row, 1, NULL, 5), -EINVAL);
    ck_assert(deferred_row_is_null(row, 0));
    /* Too long for the room: ENOSPC; exactly the room fits. */
    ck_assert_int_eq(deferred_row_set_text(row, 0, big, 64), -ENOSPC);
    ck_assert_int_eq(deferred_row_set_text(row, 0, big, 63), 0);
    ck_assert_int_eq(deferred_row_set_text(row, 1, big, 0), -ENOSPC);
    ck_assert_uint_eq(strlen(deferred_row_text(row, 0)), 63);
    deferred_row_free(row);
    deferred_row_shape_unref(sh);
    ck_assert_ptr_null(deferred_row_shape_new(SIZE_MAX / 2, names));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("contracts");
    TCase *tc = tcase_create("contracts");

    tcase_add_checked_fixture(tc, tu_setup, tu_teardown);
    tcase_add_test(tc, test_collect_keeps_items_around_groups);
    tcase_add_test(tc, test_reduce_and_first_around_groups);
    tcase_add_test(tc, test_batch_around_groups);
    tcase_add_test(tc, test_batch_failure_names_its_items);
    tcase_add_test(tc, test_batch_failure_names_the_offending_item);
    tcase_add_test(tc, test_end_of_unopened_group_fails);
    tcase_add_test(tc, test_deferred_producer_outcome_fails);
    tcase_add_test(tc, test_failure_inside_group_reaches_consumer);
    tcase_add_test(tc, test_group_misuse);
    tcase_add_test(tc, test_unknown_flags);
    tcase_add_test(tc, test_constructors_null_with_errno);
    tcase_add_test(tc, test_pause_before_stages);
    tcase_add_test(tc, test_map_holds_its_deferred);
    tcase_add_test(tc, test_map_keeps_order);
    tcase_add_test(tc, test_cancel_reaches_what_map_waits_on);
    tcase_add_test(tc, test_finish_deferred_is_held);
    tcase_add_test(tc, test_oom_map_queue_and_batch);
    tcase_add_test(tc, test_process_failures_name_the_run);
    tcase_add_test(tc, test_row_sizes_checked);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
