/*
 * test-process.c: deferred_process (scenarios S01 to S09, defined in
 * docs/scenarios.md), the built-in stages, the Reactive Streams rules that
 * apply, bad input, constant stack and no allocation per item.
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <stdio.h>

#include "testutil.h"

/* ---- a producer the tests drive ---- */

struct src {
    int resumes, pauses, cancels;
    int n, next;          /* synchronous: emits next .. n-1 */
    bool sync;
    deferred_stage_t *self;
};

static void src_resume(deferred_stage_t *self, deferred_stage_t *by)
{
    struct src *s = deferred_stage_data(self);

    (void)by;
    s->resumes++;
    if (!s->sync)
        return;
    while (s->next < s->n && !deferred_stage_is_paused(self))
        if (deferred_stage_emit(self, deferred_value_int(s->next++)) < 0)
            return;
    if (s->next == s->n)
        deferred_stage_finish(self, deferred_value_none());
}

static void src_pause(deferred_stage_t *self, deferred_stage_t *by)
{
    struct src *s = deferred_stage_data(self);

    (void)by;
    s->pauses++;
}

static void src_cancel(deferred_stage_t *self, deferred_stage_t *by)
{
    struct src *s = deferred_stage_data(self);

    (void)by;
    s->cancels++;
}

static int src_describe(deferred_stage_t *self, deferred_value_t item, char *buf,
                        size_t size)
{
    struct src *s = deferred_stage_data(self);

    (void)item;
    return snprintf(buf, size, "source row %d", s->next - 1);
}

static const deferred_stage_ops_t src_ops = {
    .name = "test source",
    .resume = src_resume,
    .pause = src_pause,
    .cancel = src_cancel,
    .describe = src_describe,
};

static deferred_stage_t *src_stage(struct src *s, int n, bool sync)
{
    memset(s, 0, sizeof(*s));
    s->n = n;
    s->sync = sync;
    s->self = deferred_stage_new(&src_ops, s, 0);
    return s->self;
}

/* ---- a consumer that records ---- */

#define SINK_MAX 4096
struct sink {
    int starts, finishes, handled;
    intptr_t items[SINK_MAX];
    deferred_stage_t *from[SINK_MAX];
    int pause_at;       /* pause inside handle at this count (0: never) */
    int resume_inside;  /* autopause: resume from inside handle */
    bool finish_failed;
    int finish_code;
    char story[2048];
    deferred_stage_t *self;
};

static deferred_failure_t *sink_start(deferred_stage_t *self, deferred_stage_t *from,
                                      deferred_value_t tag, deferred_stage_t **sub)
{
    struct sink *k = deferred_stage_data(self);

    (void)from;
    (void)tag;
    (void)sub;
    k->starts++;
    return NULL;
}

static deferred_failure_t *sink_handle(deferred_stage_t *self, deferred_stage_t *from,
                                       deferred_value_t tag, deferred_value_t *item)
{
    struct sink *k = deferred_stage_data(self);

    (void)tag;
    if (k->handled < SINK_MAX) {
        k->items[k->handled] = deferred_value_get_int(*item);
        k->from[k->handled] = from;
    }
    k->handled++;
    if (k->pause_at && k->handled == k->pause_at)
        ck_assert_int_eq(deferred_stage_pause(self), 0);
    if (k->resume_inside)
        deferred_stage_resume(self);
    return NULL;
}

static deferred_value_t sink_finish(deferred_stage_t *self, deferred_stage_t *from,
                                    deferred_value_t tag, deferred_value_t outcome)
{
    struct sink *k = deferred_stage_data(self);
    deferred_failure_t *f = deferred_value_get_failure(outcome);

    (void)from;
    (void)tag;
    k->finishes++;
    k->finish_failed = f != NULL;
    if (f) {
        k->finish_code = deferred_failure_code(f);
        deferred_failure_story(f, k->story, sizeof(k->story));
        return outcome;
    }
    deferred_value_release(outcome);
    return deferred_value_int(k->handled);
}

static const deferred_stage_ops_t sink_ops = {
    .name = "test sink",
    .start = sink_start,
    .handle = sink_handle,
    .finish = sink_finish,
};

static deferred_stage_t *sink_stage(struct sink *k, unsigned flags)
{
    memset(k, 0, sizeof(*k));
    k->self = deferred_stage_new(&sink_ops, k, flags);
    return k->self;
}

/* ---- callbacks for the built-in stages ---- */

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

static deferred_value_t *ints(int from, int n)
{
    deferred_value_t *v = malloc((size_t)(n ? n : 1) * sizeof(*v));
    int i;

    for (i = 0; i < n; i++)
        v[i] = deferred_value_int(from + i);
    return v;
}

static deferred_stage_t *array_of(int from, int n)
{
    deferred_value_t *v = ints(from, n);
    deferred_stage_t *st = deferred_stage_array(v, (size_t)n);

    free(v);
    return st;
}

/* The result of a finished process deferred, taken. */
static deferred_value_t take(deferred_t *d)
{
    ck_assert(deferred_has_result(d));
    return deferred_result_take(d);
}

/* ---- S01 ---- */

START_TEST(test_S01_array_map_filter_collect)
{
    deferred_process_t *p = deferred_process_new(0);
    struct sink k;
    deferred_t *d;
    deferred_value_t r;
    deferred_array_t *a;
    int i, expect = 0;

    ck_assert_int_eq(deferred_process_add(p, array_of(0, 100)), 0);
    ck_assert_int_eq(deferred_process_add(p, deferred_stage_map("x2", times_two, NULL)), 0);
    ck_assert_int_eq(deferred_process_add(p, deferred_stage_filter("not3", not_div3, NULL)), 0);
    ck_assert_int_eq(deferred_process_add(p, deferred_stage_collect()), 0);
    d = deferred_process_run(p);
    ck_assert(deferred_process_is_finished(p));
    r = take(d);
    a = deferred_value_get_array(r);
    ck_assert_ptr_nonnull(a);
    for (i = 0; i < 100; i++) {
        if ((2 * i) % 3 == 0)
            continue;
        ck_assert_int_eq(deferred_value_get_int(deferred_array_get(a, (size_t)expect)), 2 * i);
        expect++;
    }
    ck_assert_uint_eq(deferred_array_size(a), (size_t)expect);
    deferred_value_release(r);
    deferred_unref(d);
    deferred_process_unref(p);

    /* The same with the recording sink: start and finish once each. */
    p = deferred_process_new(0);
    deferred_process_add(p, array_of(0, 30));
    deferred_process_add(p, deferred_stage_map(NULL, times_two, NULL));
    deferred_process_add(p, deferred_stage_filter(NULL, not_div3, NULL));
    deferred_process_add(p, sink_stage(&k, 0));
    d = deferred_process_run(p);
    ck_assert_int_eq(k.starts, 1);
    ck_assert_int_eq(k.finishes, 1);
    ck_assert_int_eq(k.handled, 20);
    ck_assert_int_eq(k.items[0], 2);
    ck_assert_int_eq(k.items[19], 58);
    r = take(d);
    ck_assert_int_eq(deferred_value_get_int(r), 20);
    deferred_unref(d);
    deferred_process_unref(p);
}
END_TEST

/* ---- S02 ---- */

START_TEST(test_S02_consumer_pauses_in_handle)
{
    deferred_process_t *p = deferred_process_new(0);
    struct src s;
    struct sink k;
    deferred_t *d;
    int i;

    deferred_process_add(p, src_stage(&s, 50, true));
    deferred_process_add(p, sink_stage(&k, 0));
    k.pause_at = 10;
    d = deferred_process_run(p);
    ck_assert_int_eq(k.handled, 10);
    ck_assert_int_eq(s.next, 10);
    ck_assert_int_eq(s.pauses, 1);
    ck_assert(deferred_stage_is_paused(s.self));
    ck_assert(deferred_process_is_paused(p));
    ck_assert(!deferred_has_fired(d));
    ck_assert_int_eq(deferred_stage_resume(k.self), 0);
    ck_assert_int_eq(k.handled, 50);
    for (i = 0; i < 50; i++)
        ck_assert_int_eq(k.items[i], i);
    ck_assert_int_eq(k.finishes, 1);
    ck_assert(deferred_has_fired(d));
    ck_assert_int_eq(deferred_stage_resume(k.self), -EINVAL);
    deferred_unref(d);
    deferred_process_unref(p);
}
END_TEST

/* ---- S03 ---- */

START_TEST(test_S03_two_pausers)
{
    deferred_process_t *p = deferred_process_new(0);
    struct src s;
    struct sink k;
    deferred_t *d;

    deferred_process_add(p, src_stage(&s, 40, true));
    deferred_process_add(p, sink_stage(&k, 0));
    k.pause_at = 5;
    d = deferred_process_run(p);
    ck_assert_int_eq(k.handled, 5);
    /* A second pauser: the process itself. */
    ck_assert_int_eq(deferred_process_pause(p), 0);
    ck_assert_int_eq(s.pauses, 1); /* told once, when it left zero */
    ck_assert_int_eq(deferred_stage_resume(k.self), 0);
    ck_assert_int_eq(k.handled, 5);
    ck_assert(deferred_process_is_paused(p));
    ck_assert_int_eq(deferred_process_resume(p), 0);
    ck_assert_int_eq(k.handled, 40);
    ck_assert_int_eq(deferred_process_resume(p), -EINVAL);
    deferred_unref(d);
    deferred_process_unref(p);
}
END_TEST

/* ---- S04 ---- */

START_TEST(test_S04_built_paused)
{
    deferred_process_t *p = deferred_process_new(DEFERRED_PROCESS_PAUSED);
    struct src s;
    struct sink k;
    deferred_t *d;

    deferred_process_add(p, src_stage(&s, 10, true));
    deferred_process_add(p, sink_stage(&k, 0));
    d = deferred_process_run(p);
    ck_assert_int_eq(k.starts, 1);
    ck_assert_int_eq(s.resumes, 0);
    ck_assert_int_eq(k.handled, 0);
    ck_assert(deferred_process_is_paused(p));
    ck_assert_int_eq(deferred_process_resume(p), 0);
    ck_assert_int_eq(s.resumes, 1);
    ck_assert_int_eq(k.handled, 10);
    ck_assert(deferred_has_fired(d));
    deferred_unref(d);
    deferred_process_unref(p);
}
END_TEST

/* ---- S05 ---- */

START_TEST(test_S05_autopause_one_item_per_resume)
{
    deferred_process_t *p = deferred_process_new(0);
    struct src s;
    struct sink k;
    deferred_t *d;
    int i;

    deferred_process_add(p, src_stage(&s, 5, true));
    deferred_process_add(p, sink_stage(&k, DEFERRED_STAGE_AUTOPAUSE));
    d = deferred_process_run(p);
    ck_assert_int_eq(k.handled, 1);
    for (i = 2; i <= 5; i++) {
        ck_assert_int_eq(deferred_stage_resume(k.self), 0);
        ck_assert_int_eq(k.handled, i);
    }
    ck_assert_int_eq(k.items[4], 4);
    ck_assert(deferred_has_fired(d));
    deferred_unref(d);
    deferred_process_unref(p);
}
END_TEST

/* ---- S06 ---- */

static deferred_failure_t *check_handle(deferred_stage_t *self, deferred_stage_t *from,
                                        deferred_value_t tag, deferred_value_t *item)
{
    (void)from;
    if (deferred_value_get_int(*item) == 42)
        return deferred_failure_new(DEFERRED_DOMAIN_USER, 7, "cannot handle %ld",
                                    (long)deferred_value_get_int(*item));
    deferred_stage_emit_tagged(self, tag, *item);
    *item = deferred_value_none();
    return NULL;
}

static int check_describe(deferred_stage_t *self, deferred_value_t item, char *buf,
                          size_t size)
{
    (void)self;
    return snprintf(buf, size, "value %ld", (long)deferred_value_get_int(item));
}

static const deferred_stage_ops_t check_ops = {
    .name = "checker",
    .handle = check_handle,
    .describe = check_describe,
};

START_TEST(test_S06_failure_names_stage_item_and_source)
{
    deferred_process_t *p = deferred_process_new(0);
    struct src s;
    struct sink k;
    deferred_t *d;
    deferred_value_t r;
    deferred_failure_t *f;

    deferred_process_add(p, src_stage(&s, 100, true));
    deferred_process_add(p, deferred_stage_map("add nothing", tu_pass, NULL));
    deferred_process_add(p, deferred_stage_new(&check_ops, NULL, 0));
    deferred_process_add(p, sink_stage(&k, 0));
    d = deferred_process_run(p);
    ck_assert_int_eq(s.cancels, 1);
    ck_assert_int_eq(k.handled, 42); /* 0 .. 41 */
    ck_assert_int_eq(k.finishes, 1);
    ck_assert(k.finish_failed);
    ck_assert_int_eq(k.finish_code, 7);
    /* The story names the processor, the item and its source. */
    ck_assert_ptr_nonnull(strstr(k.story, "cannot handle 42"));
    ck_assert_ptr_nonnull(strstr(k.story, "checker"));
    ck_assert_ptr_nonnull(strstr(k.story, "value 42"));
    ck_assert_ptr_nonnull(strstr(k.story, "item 43"));
    ck_assert_ptr_nonnull(strstr(k.story, "test source"));
    ck_assert_ptr_nonnull(strstr(k.story, "source row 42"));
    ck_assert_ptr_nonnull(strstr(k.story, "add nothing"));
    /* From the consumer back to the producer: the checker comes first. */
    ck_assert(strstr(k.story, "checker") < strstr(k.story, "test source"));
    r = take(d);
    f = deferred_value_get_failure(r);
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(deferred_failure_context_size(f), 3);
    ck_assert_str_eq(deferred_failure_context_stage(f, 0), "test source");
    ck_assert_str_eq(deferred_failure_context_stage(f, 2), "checker");
    /* Nothing after the failure: the source's later emits are refused. */
    ck_assert_int_eq(deferred_stage_emit(s.self, deferred_value_int(1)), -ECANCELED);
    ck_assert_int_eq(k.handled, 42);
    deferred_value_release(r);
    deferred_unref(d);
    deferred_process_unref(p);
}
END_TEST

/* ---- S07 ---- */

START_TEST(test_S07_cancel_process_deferred)
{
    deferred_process_t *p = deferred_process_new(0);
    struct src s;
    struct sink k;
    deferred_t *d;
    deferred_value_t r;

    deferred_process_add(p, src_stage(&s, 0, false));
    deferred_process_add(p, deferred_stage_map(NULL, plus_one, NULL));
    deferred_process_add(p, sink_stage(&k, 0));
    d = deferred_process_run(p);
    ck_assert_int_eq(s.resumes, 1);
    ck_assert_int_eq(deferred_stage_emit(s.self, deferred_value_int(1)), 0);
    ck_assert_int_eq(k.handled, 1);
    ck_assert_int_eq(deferred_cancel(d), 0);
    ck_assert_int_eq(s.cancels, 1);
    ck_assert_int_eq(k.finishes, 1);
    ck_assert_int_eq(k.finish_code, ECANCELED);
    ck_assert_int_eq(deferred_stage_emit(s.self, tu_tracked(2)), -ECANCELED);
    ck_assert_int_eq(tu_released, 1);
    ck_assert_int_eq(deferred_stage_finish(s.self, deferred_value_none()), -EALREADY);
    ck_assert_int_eq(deferred_process_cancel(p), 0);
    ck_assert_int_eq(deferred_cancel(d), 0);
    ck_assert_int_eq(s.cancels, 1);
    ck_assert_int_eq(k.handled, 1);
    ck_assert_int_eq(k.finishes, 1);
    r = take(d);
    ck_assert(deferred_failure_is(deferred_value_get_failure(r), DEFERRED_DOMAIN_LIBRARY,
                                  ECANCELED));
    deferred_value_release(r);
    deferred_unref(d);
    deferred_process_unref(p);
}
END_TEST

/* ---- S08 ---- */

struct orders {
    int orders;
    intptr_t tags[8];
    size_t lines[8];
    intptr_t first_line[8];
};

static deferred_failure_t *orders_start(deferred_stage_t *self, deferred_stage_t *from,
                                        deferred_value_t tag, deferred_stage_t **sub)
{
    (void)self;
    (void)from;
    if (!deferred_value_is_none(tag))
        *sub = deferred_stage_collect(); /* one per order */
    return NULL;
}

static deferred_failure_t *orders_handle(deferred_stage_t *self, deferred_stage_t *from,
                                         deferred_value_t tag, deferred_value_t *item)
{
    struct orders *o = deferred_stage_data(self);
    deferred_array_t *a = deferred_value_get_array(*item);

    (void)from;
    ck_assert_ptr_nonnull(a); /* only order results reach the parent */
    o->tags[o->orders] = deferred_value_get_int(tag);
    o->lines[o->orders] = deferred_array_size(a);
    o->first_line[o->orders] = deferred_value_get_int(deferred_array_get(a, 0));
    o->orders++;
    return NULL;
}

static const deferred_stage_ops_t orders_ops = {
    .name = "orders",
    .start = orders_start,
    .handle = orders_handle,
};

START_TEST(test_S08_nested_tags_subordinate_consumers)
{
    deferred_process_t *p = deferred_process_new(0);
    struct src s;
    struct orders o;
    deferred_t *d;
    int order, line;

    memset(&o, 0, sizeof(o));
    deferred_process_add(p, src_stage(&s, 0, false));
    deferred_process_add(p, deferred_stage_map(NULL, plus_one, NULL));
    deferred_process_add(p, deferred_stage_new(&orders_ops, &o, 0));
    d = deferred_process_run(p);
    for (order = 1; order <= 2; order++) {
        deferred_value_t tag = deferred_value_int(100 * order);

        ck_assert_int_eq(deferred_stage_start(s.self, tag), 0);
        for (line = 0; line < 3; line++)
            ck_assert_int_eq(deferred_stage_emit_tagged(
                                 s.self, tag, deferred_value_int(10 * order + line)),
                             0);
        ck_assert_int_eq(deferred_stage_end(s.self, tag, deferred_value_none()), 0);
    }
    deferred_stage_finish(s.self, deferred_value_none());
    ck_assert(deferred_has_fired(d));
    ck_assert_int_eq(o.orders, 2);
    ck_assert_int_eq(o.tags[0], 100);
    ck_assert_int_eq(o.tags[1], 200);
    ck_assert_uint_eq(o.lines[0], 3);
    ck_assert_uint_eq(o.lines[1], 3);
    ck_assert_int_eq(o.first_line[0], 11);
    ck_assert_int_eq(o.first_line[1], 21);
    deferred_unref(d);
    deferred_process_unref(p);
}
END_TEST

/* ---- S09 ---- */

START_TEST(test_S09_two_producers_one_consumer)
{
    deferred_process_t *p = deferred_process_new(0);
    struct src a, b;
    struct sink k;
    deferred_t *d;

    ck_assert_int_eq(deferred_process_add(p, src_stage(&a, 0, false)), 0);
    ck_assert_int_eq(deferred_process_add(p, src_stage(&b, 0, false)), 0);
    ck_assert_int_eq(deferred_process_add(p, sink_stage(&k, 0)), 0);
    d = deferred_process_run(p);
    deferred_stage_emit(a.self, deferred_value_int(1));
    deferred_stage_emit(b.self, deferred_value_int(2));
    deferred_stage_emit(a.self, deferred_value_int(3));
    ck_assert_int_eq(k.handled, 3);
    ck_assert_ptr_eq(k.from[0], a.self);
    ck_assert_ptr_eq(k.from[1], b.self);
    ck_assert_ptr_eq(k.from[2], a.self);
    /* Pausing the consumer pauses both. */
    deferred_stage_pause(k.self);
    ck_assert_int_eq(a.pauses, 1);
    ck_assert_int_eq(b.pauses, 1);
    ck_assert(deferred_stage_is_paused(a.self));
    ck_assert(deferred_stage_is_paused(b.self));
    deferred_stage_resume(k.self);
    ck_assert(!deferred_stage_is_paused(a.self));
    ck_assert_int_eq(a.resumes, 2);
    ck_assert_int_eq(b.resumes, 2);
    /* One ending does not end the other. */
    ck_assert_int_eq(deferred_stage_finish(a.self, deferred_value_none()), 0);
    ck_assert_int_eq(k.finishes, 0);
    ck_assert_int_eq(deferred_stage_emit(b.self, deferred_value_int(4)), 0);
    ck_assert_int_eq(k.handled, 4);
    ck_assert_int_eq(deferred_stage_emit(a.self, deferred_value_int(5)), -ECANCELED);
    ck_assert_int_eq(deferred_stage_finish(b.self, deferred_value_none()), 0);
    ck_assert_int_eq(k.finishes, 1);
    ck_assert(deferred_has_fired(d));
    ck_assert_int_eq(a.cancels + b.cancels, 0);
    deferred_unref(d);
    deferred_process_unref(p);
}
END_TEST

/* ---- built-in stages ---- */

START_TEST(test_process_reduce_and_batch)
{
    deferred_process_t *p = deferred_process_new(0);
    deferred_t *d;
    deferred_value_t r;
    deferred_array_t *a;

    deferred_process_add(p, array_of(1, 10));
    deferred_process_add(p, deferred_stage_reduce(sum, deferred_value_int(0), NULL));
    d = deferred_process_run(p);
    r = take(d);
    ck_assert_int_eq(deferred_value_get_int(r), 55);
    deferred_unref(d);
    deferred_process_unref(p);

    p = deferred_process_new(0);
    deferred_process_add(p, array_of(0, 10));
    deferred_process_add(p, deferred_stage_batch(4));
    deferred_process_add(p, deferred_stage_collect());
    d = deferred_process_run(p);
    r = take(d);
    a = deferred_value_get_array(r);
    ck_assert_uint_eq(deferred_array_size(a), 3);
    ck_assert_uint_eq(deferred_array_size(deferred_value_get_array(deferred_array_get(a, 0))), 4);
    ck_assert_uint_eq(deferred_array_size(deferred_value_get_array(deferred_array_get(a, 2))), 2);
    ck_assert_int_eq(deferred_value_get_int(deferred_array_get(
                         deferred_value_get_array(deferred_array_get(a, 2)), 1)),
                     9);
    deferred_value_release(r);
    deferred_unref(d);
    deferred_process_unref(p);
    ck_assert_ptr_null(deferred_stage_batch(0));
}
END_TEST

/* A map whose function returns a deferred: one item in flight, in order. */
static deferred_t *pending[8];
static int npending;

static deferred_value_t later(deferred_value_t v, void *arg)
{
    deferred_t *d = deferred_new();

    (void)arg;
    deferred_value_release(v);
    pending[npending++] = deferred_ref(d);
    return deferred_value_deferred(d);
}

START_TEST(test_process_map_waits_on_deferred)
{
    deferred_process_t *p = deferred_process_new(0);
    struct sink k;
    deferred_t *d;
    int i;

    npending = 0;
    deferred_process_add(p, array_of(0, 3));
    deferred_process_add(p, deferred_stage_map("fetch", later, NULL));
    deferred_process_add(p, sink_stage(&k, 0));
    d = deferred_process_run(p);
    for (i = 0; i < 3; i++) {
        ck_assert_int_eq(npending, i + 1); /* only one in flight */
        ck_assert_int_eq(k.handled, i);
        deferred_callback(pending[i], deferred_value_int(100 + i));
        ck_assert_int_eq(k.handled, i + 1);
        ck_assert_int_eq(k.items[i], 100 + i);
        deferred_unref(pending[i]);
    }
    ck_assert(deferred_has_fired(d));
    ck_assert_int_eq(k.finishes, 1);
    deferred_unref(d);
    deferred_process_unref(p);

    /* A failing deferred fails the stream, with frames back to the input. */
    npending = 0;
    p = deferred_process_new(0);
    deferred_process_add(p, array_of(0, 3));
    deferred_process_add(p, deferred_stage_map("fetch", later, NULL));
    deferred_process_add(p, sink_stage(&k, 0));
    d = deferred_process_run(p);
    deferred_errback(pending[0], deferred_failure_new(DEFERRED_DOMAIN_USER, 3, "no such row"));
    ck_assert(k.finish_failed);
    ck_assert_ptr_nonnull(strstr(k.story, "no such row"));
    ck_assert_ptr_nonnull(strstr(k.story, "fetch"));
    ck_assert_ptr_nonnull(strstr(k.story, "element 0 of 3"));
    deferred_unref(pending[0]);
    ck_assert(deferred_value_is_failure(deferred_result(d)));
    deferred_value_release(deferred_result_take(d));
    deferred_unref(d);
    deferred_process_unref(p);
}
END_TEST

/* A multi-fire deferred feeds a process, which feeds another one. */
START_TEST(test_process_from_and_to_multi)
{
    deferred_t *in = deferred_multi_new(), *out = deferred_multi_new(), *d, *end;
    deferred_process_t *p = deferred_process_new(0);
    int i;

    deferred_add_callback(out, tu_record, TAG(1));
    deferred_process_add(p, deferred_stage_from_multi(in));
    deferred_process_add(p, deferred_stage_map(NULL, plus_one, NULL));
    deferred_process_add(p, deferred_stage_to_multi(out));
    /* Rows emitted before the process runs wait. */
    deferred_multi_emit(in, deferred_value_int(0));
    d = deferred_process_run(p);
    ck_assert_int_eq(tu_log.n, 1);
    /* Backpressure: the output waits, so the input is paused. */
    deferred_pause(out);
    ck_assert(deferred_is_paused(in));
    for (i = 1; i < 5; i++)
        deferred_multi_emit(in, deferred_value_int(i));
    ck_assert_int_eq(tu_log.n, 1);
    deferred_unpause(out);
    ck_assert_int_eq(tu_log.n, 5);
    ck_assert_int_eq(tu_log.e[4].value, 5);
    end = deferred_multi_when_finished(out);
    deferred_multi_finish(in, deferred_value_none());
    ck_assert(deferred_has_fired(d));
    ck_assert(deferred_has_fired(end));
    deferred_unref(end);
    deferred_unref(d);
    deferred_process_unref(p);
    deferred_unref(in);
    deferred_unref(out);
}
END_TEST

/* ---- bad input ---- */

START_TEST(test_process_bad_input)
{
    deferred_process_t *p = deferred_process_new(0);
    deferred_t *d;
    struct sink k;

    ck_assert_int_eq(deferred_process_add(NULL, deferred_stage_collect()), -EINVAL);
    ck_assert_int_eq(deferred_process_add(p, NULL), -EINVAL);
    /* No producer: NULL with errno EINVAL (deferred/common.h), never an
     * already-failed deferred. */
    errno = 0;
    ck_assert_ptr_null(deferred_process_run(p));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_ptr_null(deferred_process_run(NULL));
    ck_assert_int_eq(errno, EINVAL);
    /* No consumer. */
    ck_assert_int_eq(deferred_process_add(p, array_of(0, 3)), 0);
    errno = 0;
    ck_assert_ptr_null(deferred_process_run(p));
    ck_assert_int_eq(errno, EINVAL);
    /* A producer after a processor. */
    ck_assert_int_eq(deferred_process_add(p, deferred_stage_map(NULL, plus_one, NULL)), 0);
    ck_assert_int_eq(deferred_process_add(p, array_of(0, 3)), -EINVAL);
    ck_assert_int_eq(deferred_process_add(p, sink_stage(&k, 0)), 0);
    d = deferred_process_run(p);
    ck_assert_int_eq(k.handled, 3);
    deferred_unref(d);
    /* Adding or running after it ran. */
    ck_assert_int_eq(deferred_process_add(p, deferred_stage_collect()), -EBUSY);
    errno = 0;
    ck_assert_ptr_null(deferred_process_run(p));
    ck_assert_int_eq(errno, EINVAL);
    deferred_process_unref(p);
    /* Stage calls on a stage outside a process. */
    {
        deferred_stage_t *st = deferred_stage_collect();

        ck_assert_int_eq(deferred_stage_emit(st, tu_tracked(1)), -EINVAL);
        ck_assert_int_eq(tu_released, 1);
        ck_assert_int_eq(deferred_stage_pause(st), -EINVAL);
        ck_assert_int_eq(deferred_stage_finish(st, deferred_value_none()), -EINVAL);
        deferred_stage_free(st);
    }
    ck_assert_ptr_null(deferred_stage_new(NULL, NULL, 0));
    ck_assert_ptr_null(deferred_stage_map(NULL, NULL, NULL));
    ck_assert_ptr_null(deferred_stage_from_multi(NULL));
    ck_assert_int_eq(deferred_process_pause(NULL), -EINVAL);
    ck_assert_int_eq(deferred_process_cancel(NULL), -EINVAL);
}
END_TEST

/* ---- constant stack, no allocation per item ---- */

#define MANY 1000000

static void *many_items(void *arg)
{
    deferred_process_t *p = deferred_process_new(0);
    struct src s;
    deferred_t *d;
    deferred_value_t r;
    long *out = arg;

    deferred_process_add(p, src_stage(&s, MANY, true));
    deferred_process_add(p, deferred_stage_map(NULL, plus_one, NULL));
    /* Pull one item at a time, asking for the next from inside handle:
     * the recursion trap of synchronous producers. */
    {
        static struct sink k;

        deferred_process_add(p, sink_stage(&k, DEFERRED_STAGE_AUTOPAUSE));
        k.resume_inside = 1;
        d = deferred_process_run(p);
        out[0] = k.handled;
    }
    r = deferred_result_take(d);
    out[1] = deferred_value_get_int(r);
    out[2] = s.resumes;
    deferred_unref(d);
    deferred_process_unref(p);
    return NULL;
}

START_TEST(test_process_million_items_small_stack)
{
    pthread_attr_t attr;
    pthread_t t;
    long out[3] = {0, 0, 0};

    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    ck_assert_int_eq(pthread_create(&t, &attr, many_items, out), 0);
    pthread_join(t, NULL);
    pthread_attr_destroy(&attr);
    ck_assert_int_eq(out[0], MANY);
    ck_assert_int_eq(out[1], MANY);
    ck_assert_int_eq(out[2], 1); /* resume never nested nor repeated */
}
END_TEST

static size_t total_at_10, total_at_end;

static deferred_value_t count_allocs(deferred_value_t acc, deferred_value_t v, void *arg)
{
    (void)arg;
    if (deferred_value_get_int(acc) == 10)
        total_at_10 = tu_total();
    total_at_end = tu_total();
    return deferred_value_int(deferred_value_get_int(acc) + 1 + 0 * deferred_value_get_int(v));
}

START_TEST(test_process_no_allocation_per_item)
{
    deferred_process_t *p = deferred_process_new(0);
    deferred_t *d;

    deferred_process_add(p, array_of(0, 100000));
    deferred_process_add(p, deferred_stage_map(NULL, times_two, NULL));
    deferred_process_add(p, deferred_stage_filter(NULL, not_div3, NULL));
    deferred_process_add(p, deferred_stage_map(NULL, plus_one, NULL));
    deferred_process_add(p, deferred_stage_reduce(count_allocs, deferred_value_int(0), NULL));
    d = deferred_process_run(p);
    ck_assert(deferred_has_fired(d));
    ck_assert_uint_gt(total_at_end, 0);
    ck_assert_uint_eq(total_at_end, total_at_10);
    deferred_unref(d);
    deferred_process_unref(p);
}
END_TEST

/* ---- Reactive Streams: nothing after the terminal signal ---- */

static deferred_failure_t *cancel_at_3(deferred_stage_t *self, deferred_stage_t *from,
                                       deferred_value_t tag, deferred_value_t *item)
{
    struct sink *k = deferred_stage_data(self);

    (void)from;
    (void)tag;
    k->items[k->handled++] = deferred_value_get_int(*item);
    if (k->handled == 3) {
        ck_assert_int_eq(deferred_stage_cancel(self), 0);
        ck_assert_int_eq(deferred_stage_cancel(self), 0);
        ck_assert_int_eq(k->finishes, 0); /* not inside handle */
    }
    return NULL;
}

static const deferred_stage_ops_t canceller_ops = {
    .name = "take 3",
    .handle = cancel_at_3,
    .finish = sink_finish,
};

START_TEST(test_process_cancel_from_handle)
{
    deferred_process_t *p = deferred_process_new(0);
    struct src s;
    static struct sink k;
    deferred_t *d;

    memset(&k, 0, sizeof(k));
    deferred_process_add(p, src_stage(&s, 10, true));
    deferred_process_add(p, deferred_stage_new(&canceller_ops, &k, 0));
    d = deferred_process_run(p);
    ck_assert_int_eq(k.handled, 3);
    ck_assert_int_eq(s.cancels, 1);
    ck_assert_int_eq(k.finishes, 1);
    ck_assert_int_eq(k.finish_code, ECANCELED);
    ck_assert_int_eq(s.next, 3);
    deferred_value_release(deferred_result_take(d));
    deferred_unref(d);
    deferred_process_unref(p);
}
END_TEST

/* A producer that fails at its end: finish gets the failure, once. */
START_TEST(test_process_producer_fails)
{
    deferred_process_t *p = deferred_process_new(0);
    struct src s;
    struct sink k;
    deferred_t *d;

    deferred_process_add(p, src_stage(&s, 0, false));
    deferred_process_add(p, sink_stage(&k, 0));
    d = deferred_process_run(p);
    deferred_stage_emit(s.self, deferred_value_int(1));
    ck_assert_int_eq(deferred_stage_finish(s.self, deferred_value_failure(deferred_failure_new(
                                                       DEFERRED_DOMAIN_SYSTEM, EIO, NULL))),
                     0);
    ck_assert_int_eq(k.finishes, 1);
    ck_assert_int_eq(k.finish_code, EIO);
    ck_assert_ptr_nonnull(strstr(k.story, "test source"));
    ck_assert_int_eq(deferred_stage_finish(s.self, deferred_value_none()), -EALREADY);
    deferred_value_release(deferred_result_take(d));
    deferred_unref(d);
    deferred_process_unref(p);
}
END_TEST

/* ---- out of memory ---- */

/* array -> map -> batch -> collect with each allocation failing in turn
 * (tu_oom_sweep(), every failure must surface): a stage that could not
 * be made is added as NULL (-EINVAL), and the process then fails with
 * EINVAL; either counts as the failure surfacing. */
static void sc_process_oom(struct tu_oom *r)
{
    deferred_process_t *p;
    deferred_t *d;
    deferred_value_t v;

    p = deferred_process_new(0);
    if (!p) {
        r->saw = true;
        return;
    }
    if (deferred_process_add(p, array_of(0, 50)) < 0)
        r->saw = true;
    if (deferred_process_add(p, deferred_stage_map(NULL, times_two, NULL)) < 0)
        r->saw = true;
    if (deferred_process_add(p, deferred_stage_batch(8)) < 0)
        r->saw = true;
    if (deferred_process_add(p, deferred_stage_collect()) < 0)
        r->saw = true;
    d = deferred_process_run(p);
    if (!d) {
        deferred_process_unref(p);
        r->saw = true;
        return;
    }
    v = deferred_result_take(d);
    if (deferred_value_is_failure(v)) {
        /* a failure result must be one of those two, whatever came before */
        r->saw = deferred_failure_find(deferred_value_get_failure(v), DEFERRED_DOMAIN_ANY,
                                       ENOMEM) ||
                 deferred_failure_is(deferred_value_get_failure(v), DEFERRED_DOMAIN_LIBRARY,
                                     EINVAL);
    } else {
        r->ok = deferred_array_size(deferred_value_get_array(v)) == 7;
    }
    deferred_value_release(v);
    deferred_unref(d);
    deferred_process_unref(p);
}

START_TEST(test_process_oom)
{
    tu_oom_sweep("process_oom", sc_process_oom, NULL, TU_OOM_STRICT);
}
END_TEST

/* deferred_process_first: the first item, the producer cancelled after it. */
START_TEST(test_process_first)
{
    struct src s;
    deferred_t *d;
    deferred_value_t r;

    d = deferred_process_first(src_stage(&s, 10, true));
    ck_assert_ptr_nonnull(d);
    r = take(d);
    ck_assert_int_eq(deferred_value_get_int(r), 0);
    ck_assert_int_eq(s.cancels, 1);
    ck_assert_int_eq(s.next, 1); /* nothing after the first */
    deferred_unref(d);

    d = deferred_process_first(array_of(5, 0));
    r = take(d);
    ck_assert(deferred_value_is_none(r)); /* no item: the empty value */
    deferred_unref(d);

    d = deferred_process_first(array_of(7, 3));
    ck_assert_int_eq(deferred_value_get_int(take(d)), 7);
    deferred_unref(d);
    ck_assert_ptr_null(deferred_process_first(NULL));
}
END_TEST

/* ---- what a cancelled or failed stream waits on ---- */

/*
 * A processor that passes items on; its finish (chosen by its data)
 * passes the outcome, replaces it by a tracked value, or returns a new
 * deferred it keeps in ends[] (work still in flight at the end).
 */
enum { END_PASS, END_VALUE, END_WAIT };
static deferred_t *ends[4];
static int nends;

static deferred_failure_t *relay_handle(deferred_stage_t *self, deferred_stage_t *from,
                                        deferred_value_t tag, deferred_value_t *item)
{
    deferred_value_t v = *item;

    (void)from;
    *item = deferred_value_none();
    deferred_stage_emit_tagged(self, tag, v);
    return NULL;
}

static deferred_value_t relay_finish(deferred_stage_t *self, deferred_stage_t *from,
                                     deferred_value_t tag, deferred_value_t outcome)
{
    int *mode = deferred_stage_data(self);
    deferred_t *d;

    (void)from;
    (void)tag;
    if (*mode == END_PASS)
        return outcome;
    deferred_value_release(outcome);
    if (*mode == END_VALUE)
        return tu_tracked(42);
    d = deferred_new();
    ends[nends++] = deferred_ref(d);
    return deferred_value_deferred(d);
}

static const deferred_stage_ops_t relay_ops = {
    .name = "relay",
    .handle = relay_handle,
    .finish = relay_finish,
};

/* A map function: the first item waits on a deferred of pending[] (the
 * map owns the reference it returns), the others are already known. */
static int first_waits_calls;

static deferred_value_t first_waits(deferred_value_t v, void *arg)
{
    (void)arg;
    if (first_waits_calls++ == 0)
        return later(v, NULL);
    return deferred_value_deferred(deferred_succeed(v));
}

/*
 * fuzz/regressions/process/leak-stage-fail-while-map-waits-and-finish-waits:
 * producer -> A (its finish waits) -> B (its finish replaces the outcome
 * by a value) -> map (waiting on an item) -> collect.  A stage fails while
 * the map waits: the finish of A is cancelled (nobody wants it), the value
 * B makes does not make the map wait for its queue (the map's deferred is
 * cancelled), and the result fires once.
 */
START_TEST(test_process_fail_while_map_and_finish_wait)
{
    static int mode_a = END_WAIT, mode_b = END_VALUE;
    deferred_process_t *p = deferred_process_new(0);
    deferred_stage_t *a;
    struct src s;
    deferred_t *d;
    deferred_value_t r;

    npending = nends = first_waits_calls = 0;
    deferred_process_add(p, src_stage(&s, 2, true));
    deferred_process_add(p, a = deferred_stage_new(&relay_ops, &mode_a, 0));
    deferred_process_add(p, deferred_stage_new(&relay_ops, &mode_b, 0));
    deferred_process_add(p, deferred_stage_map("fetch", first_waits, NULL));
    deferred_process_add(p, deferred_stage_collect());
    d = deferred_process_run(p);
    ck_assert_int_eq(npending, 1); /* the map waits on the first item */
    ck_assert(!deferred_has_fired(d));
    ck_assert_int_eq(deferred_stage_fail(a, deferred_failure_new(DEFERRED_DOMAIN_USER, EIO,
                                                                 "async failure")),
                     0);
    /* A's finish waited: it was cancelled, and so was the map's item. */
    ck_assert_int_eq(nends, 1);
    ck_assert(deferred_has_fired(ends[0]));
    ck_assert(deferred_has_fired(pending[0]));
    ck_assert_int_eq(s.cancels, 1);
    ck_assert(deferred_has_fired(d));
    r = take(d);
    ck_assert(deferred_value_is_failure(r));
    ck_assert_int_eq(deferred_failure_code(deferred_value_get_failure(r)), ECANCELED);
    deferred_value_release(r);
    ck_assert_int_eq(tu_released, 1); /* B's value */
    /* What the repro does after: nothing left to cancel. */
    ck_assert_int_eq(deferred_process_cancel(p), 0);
    deferred_cancel(ends[0]);
    deferred_unref(d);
    deferred_process_unref(p);
    deferred_unref(ends[0]);
    deferred_unref(pending[0]);
}
END_TEST

/* The same, as the fuzzer found it too: a paused process, three
 * processors (two with autopause; the first's finish waits, the third's
 * replaces the outcome), the first fails after a resume; then the process
 * is cancelled and everything dropped, the deferreds unfired. */
START_TEST(test_process_fail_with_autopause_and_finish_waits)
{
    static int mode_a = END_WAIT, mode_b = END_PASS, mode_c = END_VALUE;
    deferred_process_t *p = deferred_process_new(DEFERRED_PROCESS_PAUSED);
    deferred_stage_t *a;
    struct src s;
    struct sink k;
    deferred_t *d;

    npending = nends = first_waits_calls = 0;
    deferred_process_add(p, src_stage(&s, 2, true));
    deferred_process_add(p, a = deferred_stage_new(&relay_ops, &mode_a,
                                                   DEFERRED_STAGE_AUTOPAUSE));
    deferred_process_add(p, deferred_stage_new(&relay_ops, &mode_b,
                                               DEFERRED_STAGE_AUTOPAUSE));
    deferred_process_add(p, deferred_stage_new(&relay_ops, &mode_c, 0));
    deferred_process_add(p, deferred_stage_map(NULL, first_waits, NULL));
    deferred_process_add(p, sink_stage(&k, 0));
    d = deferred_process_run(p);
    ck_assert_int_eq(deferred_process_resume(p), 0);
    ck_assert_int_eq(npending, 1);
    deferred_stage_fail(a, deferred_failure_new(DEFERRED_DOMAIN_USER, EIO, "fails"));
    ck_assert_int_eq(k.finishes, 1);
    ck_assert(k.finish_failed);
    ck_assert_int_eq(k.finish_code, ECANCELED);
    ck_assert(deferred_has_fired(pending[0]));
    ck_assert(deferred_has_fired(d));
    deferred_process_cancel(p);
    ck_assert_int_eq(k.finishes, 1); /* exactly once */
    deferred_value_release(take(d));
    deferred_unref(d);
    deferred_process_unref(p);
    deferred_unref(ends[0]);
    deferred_unref(pending[0]);
}
END_TEST

/* A stage fails while the map's finish waits for its queue: the queue's
 * deferreds are cancelled and the result is the stage's failure. */
START_TEST(test_process_fail_while_map_drains)
{
    deferred_process_t *p = deferred_process_new(0);
    deferred_stage_t *m;
    struct src s;
    deferred_t *d;
    deferred_value_t r;

    npending = first_waits_calls = 0;
    deferred_process_add(p, src_stage(&s, 0, false));
    deferred_process_add(p, m = deferred_stage_map("fetch", first_waits, NULL));
    deferred_process_add(p, deferred_stage_collect());
    d = deferred_process_run(p);
    /* Two items queue in the map (the producer does not look at its
     * pause), then the stream ends: the map's finish waits. */
    ck_assert_int_eq(deferred_stage_emit(s.self, tu_tracked(0)), 0);
    ck_assert_int_eq(deferred_stage_emit(s.self, tu_tracked(1)), 0);
    ck_assert_int_eq(deferred_stage_finish(s.self, deferred_value_none()), 0);
    ck_assert_int_eq(npending, 1);
    ck_assert(!deferred_has_fired(d));
    deferred_stage_fail(m, deferred_failure_new(DEFERRED_DOMAIN_USER, EIO, "gone"));
    ck_assert(deferred_has_fired(pending[0]));
    r = take(d);
    ck_assert(deferred_value_is_failure(r));
    ck_assert_int_eq(deferred_failure_code(deferred_value_get_failure(r)), EIO);
    deferred_value_release(r);
    ck_assert_int_eq(tu_released, 2); /* the items, dropped with the queue */
    deferred_unref(d);
    deferred_process_unref(p);
    deferred_unref(pending[0]);
}
END_TEST

/* first() takes an item the map's drain delivers and cancels the stream:
 * what the map still waits on is cancelled, the result is that item. */
static deferred_value_t all_wait(deferred_value_t v, void *arg)
{
    return later(v, arg);
}

START_TEST(test_process_first_cancels_map_drain)
{
    deferred_process_t *p = deferred_process_new(0);
    struct src s;
    deferred_t *d;

    npending = 0;
    deferred_process_add(p, src_stage(&s, 0, false));
    deferred_process_add(p, deferred_stage_map("fetch", all_wait, NULL));
    deferred_process_add(p, deferred_stage_first());
    d = deferred_process_run(p);
    /* Both items queue in the map (the producer does not look at its
     * pause), then the stream ends: the map's finish waits. */
    ck_assert_int_eq(deferred_stage_emit(s.self, deferred_value_int(0)), 0);
    ck_assert_int_eq(deferred_stage_emit(s.self, deferred_value_int(1)), 0);
    ck_assert_int_eq(deferred_stage_finish(s.self, deferred_value_none()), 0);
    ck_assert_int_eq(npending, 2);
    ck_assert(!deferred_has_fired(d));
    deferred_callback(pending[0], deferred_value_int(7));
    /* first() cancelled the stream: the second is not waited for. */
    ck_assert(deferred_has_fired(pending[1]));
    ck_assert_int_eq(deferred_value_get_int(take(d)), 7);
    deferred_callback(pending[1], tu_tracked(8)); /* too late: released */
    ck_assert_int_eq(tu_released, 1);
    deferred_unref(d);
    deferred_process_unref(p);
    deferred_unref(pending[0]);
    deferred_unref(pending[1]);
}
END_TEST

/* The shape fuzz/pending described for the second input: a paused
 * process, three processors (two with autopause) into to_multi, whose
 * row callback waits on a deferred the test later drops unfired; one
 * emit, a cancel, everything dropped: the process does not wait on the
 * row (the multi-fire deferred's consumer owns that wait) and nothing
 * leaks. */
static deferred_value_t row_waits(deferred_value_t v, void *arg)
{
    deferred_t *d = deferred_new();

    (void)arg;
    deferred_value_release(v);
    ends[nends++] = deferred_ref(d);
    return deferred_value_deferred(d);
}

static deferred_value_t row_drop(deferred_value_t v, void *arg)
{
    (void)arg;
    deferred_value_release(v);
    return deferred_value_none();
}

START_TEST(test_process_cancel_to_multi_row_waits)
{
    static int mode = END_PASS;
    deferred_process_t *p = deferred_process_new(DEFERRED_PROCESS_PAUSED);
    deferred_t *m = deferred_multi_new(), *d;
    struct src s;

    nends = 0;
    deferred_add_callback(m, row_waits, NULL);
    deferred_add_both(m, row_drop, NULL);
    deferred_process_add(p, src_stage(&s, 0, false));
    deferred_process_add(p, deferred_stage_new(&relay_ops, &mode, DEFERRED_STAGE_AUTOPAUSE));
    deferred_process_add(p, deferred_stage_new(&relay_ops, &mode, DEFERRED_STAGE_AUTOPAUSE));
    deferred_process_add(p, deferred_stage_new(&relay_ops, &mode, 0));
    deferred_process_add(p, deferred_stage_to_multi(m));
    d = deferred_process_run(p);
    ck_assert_int_eq(deferred_stage_emit(s.self, tu_tracked(1)), 0);
    ck_assert_int_eq(nends, 1); /* the row waits */
    ck_assert_int_eq(deferred_process_cancel(p), 0);
    ck_assert(deferred_has_fired(d));
    ck_assert_int_eq(s.cancels, 1);
    deferred_value_release(take(d));
    deferred_unref(d);
    deferred_process_unref(p);
    deferred_unref(m);
    deferred_unref(ends[0]);
    ck_assert_int_eq(tu_released, 1);
}
END_TEST

/* The user drops the process and its result while the map waits; the
 * deferred then fires: the pump ends the stream, which frees the process
 * and the map under it (a use after free that ASan and valgrind see). */
START_TEST(test_process_map_fires_after_everything_dropped)
{
    deferred_process_t *p = deferred_process_new(0);
    deferred_t *d;

    npending = 0;
    deferred_process_add(p, array_of(0, 1));
    deferred_process_add(p, deferred_stage_map("fetch", later, NULL));
    deferred_process_add(p, deferred_stage_collect());
    d = deferred_process_run(p);
    deferred_unref(d);
    deferred_process_unref(p);
    ck_assert_int_eq(npending, 1);
    ck_assert_int_eq(deferred_callback(pending[0], tu_tracked(5)), 0);
    deferred_unref(pending[0]);
    ck_assert_int_eq(tu_released, 1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("process");
    TCase *tc = tcase_create("process");

    tcase_add_checked_fixture(tc, tu_setup, tu_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_S01_array_map_filter_collect);
    tcase_add_test(tc, test_S02_consumer_pauses_in_handle);
    tcase_add_test(tc, test_S03_two_pausers);
    tcase_add_test(tc, test_S04_built_paused);
    tcase_add_test(tc, test_S05_autopause_one_item_per_resume);
    tcase_add_test(tc, test_S06_failure_names_stage_item_and_source);
    tcase_add_test(tc, test_S07_cancel_process_deferred);
    tcase_add_test(tc, test_S08_nested_tags_subordinate_consumers);
    tcase_add_test(tc, test_S09_two_producers_one_consumer);
    tcase_add_test(tc, test_process_reduce_and_batch);
    tcase_add_test(tc, test_process_map_waits_on_deferred);
    tcase_add_test(tc, test_process_from_and_to_multi);
    tcase_add_test(tc, test_process_bad_input);
    tcase_add_test(tc, test_process_million_items_small_stack);
    tcase_add_test(tc, test_process_no_allocation_per_item);
    tcase_add_test(tc, test_process_cancel_from_handle);
    tcase_add_test(tc, test_process_producer_fails);
    tcase_add_test(tc, test_process_oom);
    tcase_add_test(tc, test_process_first);
    tcase_add_test(tc, test_process_fail_while_map_and_finish_wait);
    tcase_add_test(tc, test_process_fail_with_autopause_and_finish_waits);
    tcase_add_test(tc, test_process_fail_while_map_drains);
    tcase_add_test(tc, test_process_first_cancels_map_drain);
    tcase_add_test(tc, test_process_cancel_to_multi_row_waits);
    tcase_add_test(tc, test_process_map_fires_after_everything_dropped);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
