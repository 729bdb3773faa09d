/*
 * test-process-fused.c: fused runs of built-in stages (scenarios S10 to
 * S14, docs/scenarios.md).  Adjacent built-in maps and filters, and a
 * reduce after them, run as one loop per item; everything the separate
 * stages guarantee must hold.  Most tests are differential: the same
 * pipeline is built once of the built-in stages (fused) and once of
 * user-written stages that do the same (never fused: a user's stage breaks
 * a run), each fed by the array producer (whose loop runs the fused run
 * inline) and by a user producer (whose emits call the run's handle); the
 * outcome, every frame of a failure, every stage's item count, the cancels
 * and the pauses must be the same.  The rest checks the fallbacks against
 * values worked out by hand: a map's pending deferred, a result behind
 * one, the dump, allocation failures.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define MAX_STEPS 8
#define NOWHERE (-1000000L)

/* ---- a pipeline's description ---- */

/*
 * One stage of a pipeline: 'm' map (x * mul + add), 'f' filter (keeps x
 * with x % mod != 0), 'r' reduce (sum), 'c' collect, 'u' a user's
 * pass-through processor, 'x' a user's processor failing on fail_on,
 * 't' a user's consumer that records the tags and items it gets.  The
 * hooks act when the stage's function gets the input value they name.
 */
struct step {
    char kind;
    const char *name;
    long mul, add, mod;
    long fail_on;   /* fail (map, reduce on this item, 'x') */
    long cancel_on; /* deferred_process_cancel() from inside the function */
    long pause_on;  /* deferred_stage_pause() of this stage from inside it */
    long defer_on;  /* map: return a pending deferred (kept in pend[]) */
    long emit_on;   /* emit 5000 from this stage, from inside its function */
    long ready_on;  /* map: return an already fired deferred */
    int index;      /* in the spec */
    deferred_stage_t *stage;
    deferred_process_t *p;
    char log[2048]; /* 't': what it got */
};

/* Deferreds a map returned pending, to fire by hand. */
static deferred_t *pend[16];
static int npend;

static void reset_step(struct step *s, char kind, const char *name)
{
    memset(s, 0, sizeof(*s));
    s->kind = kind;
    s->name = name;
    s->mul = 1;
    s->mod = 1;
    s->fail_on = s->cancel_on = s->pause_on = s->defer_on = s->ready_on = NOWHERE;
    s->emit_on = NOWHERE;
}

static void hooks(struct step *s, long x)
{
    if (x == s->cancel_on)
        deferred_process_cancel(s->p);
    if (x == s->pause_on)
        ck_assert_int_eq(deferred_stage_pause(s->stage), 0);
    if (x == s->emit_on)
        deferred_stage_emit(s->stage, deferred_value_int(5000));
}

static deferred_value_t step_map(deferred_value_t v, void *arg)
{
    struct step *s = arg;
    long x = (long)deferred_value_get_int(v);
    deferred_value_t r = deferred_value_int((intptr_t)(x * s->mul + s->add));

    hooks(s, x);
    if (x == s->fail_on)
        return deferred_value_failure(deferred_failure_new(
            DEFERRED_DOMAIN_USER, 100 + s->index, "%s failed on %ld", s->name, x));
    if (x == s->defer_on) {
        deferred_t *d = deferred_new();

        if (!d)
            return deferred_value_failure(NULL);
        ck_assert_int_lt(npend, 16);
        pend[npend++] = deferred_ref(d);
        return deferred_value_deferred(d);
    }
    if (x == s->ready_on) {
        deferred_t *d = deferred_new();

        if (!d)
            return deferred_value_failure(NULL);
        deferred_callback(d, r);
        return deferred_value_deferred(d);
    }
    return r;
}

static bool step_keep(deferred_value_t v, void *arg)
{
    struct step *s = arg;
    long x = (long)deferred_value_get_int(v);

    hooks(s, x);
    return x % s->mod != 0;
}

static deferred_value_t step_fold(deferred_value_t acc, deferred_value_t v, void *arg)
{
    struct step *s = arg;
    long x = (long)deferred_value_get_int(v);

    hooks(s, x);
    if (x == s->fail_on)
        return deferred_value_failure(deferred_failure_new(
            DEFERRED_DOMAIN_USER, 100 + s->index, "%s failed on %ld", s->name, x));
    return deferred_value_int(deferred_value_get_int(acc) + (intptr_t)x);
}

/* ---- user-written stages: the same, never fused ---- */

struct twin {
    deferred_stage_ops_t ops;
    struct step *s;
    deferred_value_t acc;
};

static deferred_failure_t *twin_map(deferred_stage_t *self, deferred_stage_t *from,
                                    deferred_value_t tag, deferred_value_t *item)
{
    struct twin *t = deferred_stage_data(self);
    deferred_value_t v = *item, r;

    (void)from;
    *item = deferred_value_none();
    r = step_map(v, t->s);
    if (deferred_value_is_failure(r))
        return deferred_value_take_failure(r);
    ck_assert(!deferred_value_is_deferred(r)); /* not asked of a twin */
    deferred_stage_emit_tagged(self, tag, r);
    return NULL;
}

static deferred_failure_t *twin_filter(deferred_stage_t *self, deferred_stage_t *from,
                                       deferred_value_t tag, deferred_value_t *item)
{
    struct twin *t = deferred_stage_data(self);

    (void)from;
    if (step_keep(*item, t->s)) {
        deferred_value_t v = *item;

        *item = deferred_value_none();
        deferred_stage_emit_tagged(self, tag, v);
    }
    return NULL;
}

static deferred_failure_t *twin_reduce(deferred_stage_t *self, deferred_stage_t *from,
                                       deferred_value_t tag, deferred_value_t *item)
{
    struct twin *t = deferred_stage_data(self);
    deferred_value_t acc;

    (void)from;
    (void)tag;
    acc = step_fold(t->acc, *item, t->s);
    *item = deferred_value_none();
    t->acc = deferred_value_none();
    if (deferred_value_is_failure(acc))
        return deferred_value_take_failure(acc);
    t->acc = acc;
    return NULL;
}

static deferred_value_t twin_reduce_finish(deferred_stage_t *self, deferred_stage_t *from,
                                           deferred_value_t tag, deferred_value_t outcome)
{
    struct twin *t = deferred_stage_data(self);
    deferred_value_t acc = t->acc;

    (void)from;
    (void)tag;
    if (deferred_value_is_failure(outcome))
        return outcome;
    deferred_value_release(outcome);
    t->acc = deferred_value_none();
    return acc;
}

/* 'u' and 'x' (built by both sides: a user's stage either way). */
static deferred_failure_t *user_handle(deferred_stage_t *self, deferred_stage_t *from,
                                       deferred_value_t tag, deferred_value_t *item)
{
    struct twin *t = deferred_stage_data(self);
    long x = (long)deferred_value_get_int(*item);

    (void)from;
    hooks(t->s, x);
    if (t->s->kind == 'x' && x == t->s->fail_on)
        return deferred_failure_new(DEFERRED_DOMAIN_USER, 100 + t->s->index,
                                    "%s failed on %ld", t->s->name, x);
    deferred_stage_emit_tagged(self, tag, *item);
    *item = deferred_value_none();
    return NULL;
}

static int user_describe(deferred_stage_t *self, deferred_value_t item, char *buf,
                         size_t size)
{
    (void)self;
    if (deferred_value_is_none(item))
        return snprintf(buf, size, "no value");
    return snprintf(buf, size, "value %ld", (long)deferred_value_get_int(item));
}

/* 't': a consumer writing "tag:item " for each item. */
static deferred_failure_t *tags_handle(deferred_stage_t *self, deferred_stage_t *from,
                                       deferred_value_t tag, deferred_value_t *item)
{
    struct twin *t = deferred_stage_data(self);
    size_t len = strlen(t->s->log);

    (void)from;
    snprintf(t->s->log + len, sizeof(t->s->log) - len, "%ld:%ld ",
             deferred_value_is_int(tag) ? (long)deferred_value_get_int(tag) : -1L,
             (long)deferred_value_get_int(*item));
    return NULL;
}

/* 'g': a consumer handing each group to a subordinate reduce, whose sum
 * it gets as an item with the group's tag ("tag:sum "). */
static struct step group_sum;

static deferred_failure_t *groups_start(deferred_stage_t *self, deferred_stage_t *from,
                                        deferred_value_t tag, deferred_stage_t **sub)
{
    (void)self;
    (void)from;
    if (!deferred_value_is_none(tag)) {
        reset_step(&group_sum, 'r', "group sum");
        *sub = deferred_stage_reduce(step_fold, deferred_value_int(0), &group_sum);
    }
    return NULL;
}

static void twin_destroy(void *data)
{
    struct twin *t = data;

    deferred_value_release(t->acc);
    free(t);
}

static deferred_stage_t *twin_stage(struct step *s)
{
    struct twin *t = calloc(1, sizeof(*t));

    ck_assert_ptr_nonnull(t);
    t->s = s;
    t->acc = deferred_value_int(0);
    t->ops.name = s->name;
    t->ops.destroy = twin_destroy;
    switch (s->kind) {
    case 'm':
        t->ops.handle = twin_map;
        break;
    case 'f':
        t->ops.handle = twin_filter;
        break;
    case 'r':
        t->ops.handle = twin_reduce;
        t->ops.finish = twin_reduce_finish;
        break;
    case 't':
        t->ops.handle = tags_handle;
        break;
    case 'g':
        t->ops.start = groups_start;
        t->ops.handle = tags_handle;
        break;
    default:
        t->ops.handle = user_handle;
        t->ops.describe = user_describe;
        break;
    }
    return deferred_stage_new(&t->ops, t, 0);
}

/* ---- producers ---- */

/* A user's synchronous producer of 0 .. n-1, tagged with x / 4 when
 * tagged; it ignores its pauses when told to (the library delivers what a
 * producer emits while paused). */
struct usrc {
    int n, next, cancels;
    bool tagged, ignore_pause;
};

/* The user producer opens a group (tag x / 4 + 1) before each fourth item
 * and closes it after the last of the four. */
static bool grouped;

static void usrc_resume(deferred_stage_t *self, deferred_stage_t *by)
{
    struct usrc *u = deferred_stage_data(self);

    (void)by;
    while (u->next < u->n && (u->ignore_pause || !deferred_stage_is_paused(self))) {
        int x = u->next++;
        deferred_value_t tag = u->tagged ? deferred_value_int(x / 4) : deferred_value_none();

        if (grouped) {
            tag = deferred_value_int(x / 4 + 1);
            if (x % 4 == 0 && deferred_stage_start(self, tag) < 0)
                return;
        }
        if (deferred_stage_emit_tagged(self, tag, deferred_value_int(x)) < 0)
            return;
        if (grouped && (x % 4 == 3 || x == u->n - 1) &&
            deferred_stage_end(self, tag, deferred_value_none()) < 0)
            return;
    }
    if (u->next == u->n)
        deferred_stage_finish(self, deferred_value_none());
}

static void usrc_cancel(deferred_stage_t *self, deferred_stage_t *by)
{
    struct usrc *u = deferred_stage_data(self);

    (void)by;
    u->cancels++;
}

static int usrc_describe(deferred_stage_t *self, deferred_value_t item, char *buf,
                         size_t size)
{
    struct usrc *u = deferred_stage_data(self);

    (void)item;
    return snprintf(buf, size, "row %d", u->next - 1);
}

static const deferred_stage_ops_t usrc_ops = {
    .name = "rows",
    .resume = usrc_resume,
    .cancel = usrc_cancel,
    .describe = usrc_describe,
};

static deferred_stage_t *array_of(int n)
{
    deferred_value_t *v = malloc((size_t)(n ? n : 1) * sizeof(*v));
    deferred_stage_t *st;
    int i;

    ck_assert_ptr_nonnull(v);
    for (i = 0; i < n; i++)
        v[i] = deferred_value_int(i);
    st = deferred_stage_array(v, (size_t)n);
    free(v);
    return st;
}

/* ---- building, running, comparing ---- */

struct run {
    deferred_process_t *p;
    deferred_t *d;
    deferred_stage_t *producer;
    struct usrc usrc;
    struct step steps[MAX_STEPS];
    int nsteps;
};

struct outcome {
    bool finished, failed;
    int code;
    char value[512];          /* a value's rendering */
    char message[256];
    size_t nctx;
    char ctx[MAX_STEPS + 2][256]; /* "stage | item" */
    uint64_t items[MAX_STEPS + 1];
    int cancels;
    char log[2048];
};

/* Build steps (copied from spec) into r: built-in stages (fused) unless
 * twin; fed by the array producer (user false) or the user producer. */
static void build(struct run *r, const struct step *spec, int nsteps, bool twin, bool user,
                  int n)
{
    int i;

    memset(r, 0, sizeof(*r));
    r->p = deferred_process_new(0);
    ck_assert_ptr_nonnull(r->p);
    r->nsteps = nsteps;
    if (user) {
        r->usrc.n = n;
        r->producer = deferred_stage_new(&usrc_ops, &r->usrc, 0);
    } else {
        r->producer = array_of(n);
    }
    ck_assert_ptr_nonnull(r->producer);
    ck_assert_int_eq(deferred_process_add(r->p, r->producer), 0);
    for (i = 0; i < nsteps; i++) {
        struct step *s = &r->steps[i];
        deferred_stage_t *st;

        *s = spec[i];
        s->index = i;
        s->p = r->p;
        if (s->kind == 'c') {
            st = deferred_stage_collect(); /* never in a run */
        } else if (twin || strchr("uxtg", s->kind)) {
            st = twin_stage(s);
        } else if (s->kind == 'm') {
            st = deferred_stage_map(s->name, step_map, s);
        } else if (s->kind == 'f') {
            st = deferred_stage_filter(s->name, step_keep, s);
        } else {
            ck_assert_int_eq(s->kind, 'r');
            st = deferred_stage_reduce(step_fold, deferred_value_int(0), s);
        }
        ck_assert_ptr_nonnull(st);
        s->stage = st;
        ck_assert_int_eq(deferred_process_add(r->p, st), 0);
    }
}

static void render(char *buf, size_t size, deferred_value_t v)
{
    if (deferred_value_is_int(v)) {
        snprintf(buf, size, "int %ld", (long)deferred_value_get_int(v));
    } else if (deferred_value_get_array(v)) {
        deferred_array_t *a = deferred_value_get_array(v);
        size_t i, len;

        snprintf(buf, size, "array");
        for (i = 0; i < deferred_array_size(a); i++) {
            len = strlen(buf);
            snprintf(buf + len, size - len, " %ld",
                     (long)deferred_value_get_int(deferred_array_get(a, i)));
        }
    } else {
        snprintf(buf, size, "other");
    }
}

/* What r shows now (its result taken if it finished). */
static void observe(struct run *r, struct outcome *o)
{
    int i;

    memset(o, 0, sizeof(*o));
    o->items[0] = deferred_stage_items(r->producer);
    for (i = 0; i < r->nsteps; i++) {
        o->items[i + 1] = deferred_stage_items(r->steps[i].stage);
        if (r->steps[i].kind == 't' || r->steps[i].kind == 'g')
            strcpy(o->log, r->steps[i].log);
    }
    o->cancels = r->usrc.cancels;
    o->finished = deferred_has_result(r->d);
    if (o->finished) {
        deferred_value_t v = deferred_result_take(r->d);

        if (deferred_value_is_failure(v)) {
            deferred_failure_t *f = deferred_value_get_failure(v);
            size_t k;

            o->failed = true;
            o->code = deferred_failure_code(f);
            snprintf(o->message, sizeof(o->message), "%s", deferred_failure_message(f));
            o->nctx = deferred_failure_context_size(f);
            ck_assert_uint_le(o->nctx, MAX_STEPS + 2);
            for (k = 0; k < o->nctx; k++) {
                const char *item = deferred_failure_context_item(f, k);

                snprintf(o->ctx[k], sizeof(o->ctx[k]), "%s | %s",
                         deferred_failure_context_stage(f, k), item ? item : "(none)");
            }
        } else {
            render(o->value, sizeof(o->value), v);
        }
        deferred_value_release(v);
    }
}

static void finish_run(struct run *r)
{
    deferred_unref(r->d);
    deferred_process_unref(r->p);
}

static void same(const struct outcome *a, const struct outcome *b, const char *what)
{
    size_t k;
    int i;

    ck_assert_msg(a->finished == b->finished, "%s: finished %d / %d", what, a->finished,
                  b->finished);
    ck_assert_msg(a->failed == b->failed, "%s: failed %d / %d", what, a->failed, b->failed);
    ck_assert_int_eq(a->code, b->code);
    ck_assert_str_eq(a->value, b->value);
    ck_assert_str_eq(a->message, b->message);
    ck_assert_msg(a->nctx == b->nctx, "%s: %zu frames / %zu", what, a->nctx, b->nctx);
    for (k = 0; k < a->nctx; k++)
        ck_assert_msg(strcmp(a->ctx[k], b->ctx[k]) == 0, "%s: frame %zu: '%s' / '%s'", what,
                      k, a->ctx[k], b->ctx[k]);
    for (i = 0; i <= MAX_STEPS; i++)
        ck_assert_msg(a->items[i] == b->items[i], "%s: stage %d: %llu items / %llu", what, i,
                      (unsigned long long)a->items[i], (unsigned long long)b->items[i]);
    ck_assert_int_eq(a->cancels, b->cancels);
    ck_assert_str_eq(a->log, b->log);
}

/* Run spec fused and as twins, with both producers (tagged: the user's
 * producer tags its items), and check they agree.  out: the fused run's
 * outcome with the array producer (or, with the tagged user producer
 * only, that one's). */
static void compare(const struct step *spec, int nsteps, int n, bool tagged,
                    struct outcome *out)
{
    int user;

    for (user = tagged ? 1 : 0; user < 2; user++) {
        struct run fused, twin;
        struct outcome a, b;
        char what[64];

        snprintf(what, sizeof(what), "%s producer", user ? "user" : "array");
        build(&fused, spec, nsteps, false, user, n);
        fused.usrc.tagged = tagged;
        fused.d = deferred_process_run(fused.p);
        ck_assert_ptr_nonnull(fused.d);
        observe(&fused, &a);
        build(&twin, spec, nsteps, true, user, n);
        twin.usrc.tagged = tagged;
        twin.d = deferred_process_run(twin.p);
        ck_assert_ptr_nonnull(twin.d);
        observe(&twin, &b);
        same(&a, &b, what);
        if (out && (user == 0 || tagged))
            *out = a;
        finish_run(&fused);
        finish_run(&twin);
    }
}

/* The bench's pipeline: map x*2, filter x%3!=0, map x+1, reduce. */
static int stream_spec(struct step *s)
{
    reset_step(&s[0], 'm', "x*2");
    s[0].mul = 2;
    reset_step(&s[1], 'f', "x%3!=0");
    s[1].mod = 3;
    reset_step(&s[2], 'm', "x+1");
    s[2].add = 1;
    reset_step(&s[3], 'r', "reduce");
    return 4;
}

/* The sum the stream pipeline gives over 0 .. n-1, by hand. */
static long stream_sum(int n)
{
    long sum = 0;
    int x;

    for (x = 0; x < n; x++)
        if ((2 * x) % 3 != 0)
            sum += 2 * x + 1;
    return sum;
}

/* ---- S10: a fused run does what the stages did ---- */

START_TEST(test_S10_fused_runs_agree)
{
    struct step s[MAX_STEPS];
    struct outcome o;
    char want[64];
    int n;

    n = stream_spec(s);
    compare(s, n, 50, false, &o);
    snprintf(want, sizeof(want), "int %ld", stream_sum(50));
    ck_assert_str_eq(o.value, want);
    ck_assert_uint_eq(o.items[0], 50);
    ck_assert_uint_eq(o.items[1], 50);
    ck_assert_uint_eq(o.items[2], 50);
    ck_assert_uint_eq(o.items[3], 33); /* 2x % 3 != 0 for x % 3 != 0 */
    ck_assert_uint_eq(o.items[4], 33);

    /* Filter first; two filters; a run ending in collect (not fused). */
    reset_step(&s[0], 'f', "odd");
    s[0].mod = 2;
    reset_step(&s[1], 'f', "not 5k");
    s[1].mod = 5;
    reset_step(&s[2], 'm', "x*3");
    s[2].mul = 3;
    reset_step(&s[3], 'm', "x-1");
    s[3].add = -1;
    reset_step(&s[4], 'c', "collect");
    compare(s, 5, 20, false, &o);
    ck_assert_str_eq(o.value, "array 2 8 20 26 32 38 50 56");

    /* A user's stage in the middle breaks the run into two. */
    reset_step(&s[0], 'm', "x+10");
    s[0].add = 10;
    reset_step(&s[1], 'f', "odd");
    s[1].mod = 2;
    reset_step(&s[2], 'u', "user");
    reset_step(&s[3], 'm', "x*2");
    s[3].mul = 2;
    reset_step(&s[4], 'f', "not 3k");
    s[4].mod = 3;
    reset_step(&s[5], 'r', "reduce");
    compare(s, 6, 30, false, &o);
    ck_assert_uint_eq(o.items[3], 15);

    /* A map straight into a reduce, and a run of one (map, collect). */
    reset_step(&s[0], 'm', "x");
    reset_step(&s[1], 'r', "reduce");
    compare(s, 2, 10, false, &o);
    ck_assert_str_eq(o.value, "int 45");
    reset_step(&s[0], 'm', "x+1");
    s[0].add = 1;
    reset_step(&s[1], 'c', "collect");
    compare(s, 2, 3, false, &o);
    ck_assert_str_eq(o.value, "array 1 2 3");
}
END_TEST

/* Tags go through a fused run with their items. */
START_TEST(test_S10_fused_run_keeps_tags)
{
    struct step s[MAX_STEPS];
    struct outcome o;

    stream_spec(s); /* its reduce replaced: */
    reset_step(&s[3], 't', "tags");
    compare(s, 4, 8, true, &o);
    ck_assert_str_eq(o.log, "0:3 0:5 1:9 1:11 1:15 ");
}
END_TEST

/* Groups through a fused run into a consumer that hands each to a
 * subordinate (its route turns the run's last emit into the general
 * one). */
START_TEST(test_S10_groups_through_a_fused_run)
{
    struct step s[MAX_STEPS];
    struct outcome o;

    stream_spec(s); /* its reduce replaced: */
    reset_step(&s[3], 'g', "orders");
    grouped = true;
    compare(s, 4, 10, true, &o);
    grouped = false;
    /* 3 5 | 9 11 15 | 17 (18, twice 9, is a 3k) */
    ck_assert_str_eq(o.log, "1:8 2:35 3:17 ");
    ck_assert(o.finished);
    ck_assert(!o.failed);
}
END_TEST

/* ---- S11: a failure anywhere in a run has the frames it had unfused ---- */

START_TEST(test_S11_failure_in_each_position)
{
    struct step s[MAX_STEPS];
    struct outcome o;
    int n, pos;

    /* The first map, the second, the reduce: each fails on its own
     * input 14 (x = 7 for the first, which the others see as 14 and 15). */
    for (pos = 0; pos < 4; pos++) {
        n = stream_spec(s);
        if (pos == 1)
            continue; /* a filter does not fail */
        s[pos].fail_on = pos == 0 ? 7 : pos == 2 ? 14 : 15;
        compare(s, n, 30, false, &o);
        ck_assert(o.failed);
        ck_assert_int_eq(o.code, 100 + pos);
        /* array, then each stage down to the one that failed. */
        ck_assert_uint_eq(o.nctx, (size_t)pos + 2);
        ck_assert_str_eq(o.ctx[0], "array | item 8 emitted: element 7 of 30");
        ck_assert_str_eq(o.ctx[1], "x*2 | item 8");
        if (pos >= 2) {
            ck_assert_str_eq(o.ctx[2], "x%3!=0 | item 8");
            ck_assert_str_eq(o.ctx[3], "x+1 | item 5"); /* x = 1, 2, 4, 5, 7 */
        }
        if (pos == 3)
            ck_assert_str_eq(o.ctx[4], "reduce | item 5");
        /* Nothing after it: the stages saw item 8 last. */
        ck_assert_uint_eq(o.items[0], 8);
    }

    /* A user's stage failing after a run: its frame, then the run's. */
    reset_step(&s[0], 'm', "x*2");
    s[0].mul = 2;
    reset_step(&s[1], 'f', "not 3k");
    s[1].mod = 3;
    reset_step(&s[2], 'x', "checker");
    s[2].fail_on = 10;
    reset_step(&s[3], 'r', "reduce");
    compare(s, 4, 30, false, &o);
    ck_assert(o.failed);
    ck_assert_uint_eq(o.nctx, 4);
    ck_assert_str_eq(o.ctx[3], "checker | item 4: value 10");

    /* A failure in the second of two runs split by a user's stage. */
    reset_step(&s[0], 'm', "x+1");
    s[0].add = 1;
    reset_step(&s[1], 'f', "odd");
    s[1].mod = 2;
    reset_step(&s[2], 'u', "user");
    reset_step(&s[3], 'm', "x*5");
    s[3].mul = 5;
    s[3].fail_on = 9;
    reset_step(&s[4], 'f', "all");
    s[4].mod = 1000;
    reset_step(&s[5], 'r', "reduce");
    compare(s, 6, 30, false, &o);
    ck_assert(o.failed);
    ck_assert_uint_eq(o.nctx, 5);
    ck_assert_str_eq(o.ctx[4], "x*5 | item 5");
}
END_TEST

/* A stage's function emitting on its own stage (a nested emit, from the
 * middle of a run) that fails further down: the frames of every stage it
 * went through, as unfused. */
START_TEST(test_S11_failure_of_a_nested_emit)
{
    struct step s[MAX_STEPS];
    struct outcome o;
    int pos;

    /* From the head of the run, a map in it, a filter in it. */
    for (pos = 0; pos < 3; pos++) {
        reset_step(&s[0], 'm', "x*2");
        s[0].mul = 2;
        reset_step(&s[1], 'm', "x+1");
        s[1].add = 1;
        reset_step(&s[2], 'f', "all");
        s[2].mod = 100000;
        reset_step(&s[3], 'x', "checker");
        s[3].fail_on = pos == 0 ? 5001 : 5000;
        reset_step(&s[4], 'r', "reduce");
        s[pos].emit_on = pos == 0 ? 3 : pos == 1 ? 6 : 7;
        compare(s, 5, 10, false, &o);
        ck_assert(o.failed);
        ck_assert_uint_eq(o.nctx, 5);
        ck_assert_str_eq(o.ctx[0], "array | item 4 emitted: element 3 of 10");
        ck_assert_str_eq(o.ctx[4], pos == 0 ? "checker | item 4: value 5001"
                                            : "checker | item 4: value 5000");
    }
    ck_assert_str_eq(o.ctx[1], "x*2 | item 4");
    ck_assert_str_eq(o.ctx[2], "x+1 | item 4");
    ck_assert_str_eq(o.ctx[3], "all | item 4");
}
END_TEST

/* ---- S12: a map's deferred holds the stream ---- */

/* A fused map returning a pending deferred: the run stops at it, the
 * producer is paused, the dump shows what the map waits on; the results
 * behind it wait their turn (the user producer here ignores its pause, so
 * they reach the map while it waits), and all go on in order once it
 * fires. */
START_TEST(test_S12_pending_deferred_in_a_fused_run)
{
    struct step spec[MAX_STEPS];
    int user;

    for (user = 0; user < 2; user++) {
        struct run r;
        struct outcome o;
        char *dump;

        npend = 0;
        reset_step(&spec[0], 'm', "x*2");
        spec[0].mul = 2;
        reset_step(&spec[1], 'm', "lookup");
        spec[1].add = 100;
        spec[1].defer_on = 6;
        reset_step(&spec[2], 'f', "not 3k");
        spec[2].mod = 3;
        reset_step(&spec[3], 'm', "x+1");
        spec[3].add = 1;
        reset_step(&spec[4], 'c', "collect");
        deferred_set_debug(true);
        build(&r, spec, 5, false, user, 8);
        r.usrc.ignore_pause = true;
        r.d = deferred_process_run(r.p);
        ck_assert_ptr_nonnull(r.d);
        ck_assert(!deferred_has_result(r.d));
        ck_assert_int_eq(npend, 1);
        ck_assert(deferred_stage_is_paused(r.producer));
        dump = deferred_dump_string(DEFERRED_DUMP_TEXT);
        ck_assert_ptr_nonnull(dump);
        ck_assert_msg(strstr(dump, "stage lookup index=2 kind=processor") != NULL, "%s", dump);
        ck_assert_msg(strstr(dump, "waits on: deferred") != NULL, "%s", dump);
        deferred_free(dump);
        observe(&r, &o);
        if (user) {
            /* Items 4 .. 7 came while it waited: queued behind it. */
            ck_assert_uint_eq(o.items[0], 8);
            ck_assert_uint_eq(o.items[2], 8);
        } else {
            /* The array stopped after item 3. */
            ck_assert_uint_eq(o.items[0], 4);
            ck_assert_uint_eq(o.items[2], 4);
        }
        ck_assert_uint_eq(o.items[3], 3); /* 100 102 104 */
        ck_assert_uint_eq(o.items[4], 2); /* 102 is 3k */
        ck_assert_int_eq(deferred_callback(pend[0], deferred_value_int(1000)), 0);
        deferred_unref(pend[0]);
        deferred_set_debug(false);
        observe(&r, &o);
        ck_assert(o.finished);
        /* 100 102 104 | 1000 | 108 110 112 114, without the 3k, +1. */
        ck_assert_str_eq(o.value, "array 101 105 1001 111 113");
        ck_assert_uint_eq(o.items[3], 8);
        ck_assert_uint_eq(o.items[4], 5);
        ck_assert_uint_eq(o.items[5], 5);
        finish_run(&r);
    }
}
END_TEST

/* Already fired deferreds from a fused map: the same results as plain
 * values, the result after them entering the run at its next stage. */
START_TEST(test_S12_fired_deferreds_in_a_fused_run)
{
    struct step s[MAX_STEPS];
    int user;

    for (user = 0; user < 2; user++) {
        struct run r;
        struct outcome o;
        char want[64];
        int k;

        for (k = 0; k < 30; k += 7) {
            stream_spec(s);
            s[2].ready_on = k * 2; /* the second map's input 2x */
            build(&r, s, 4, false, user, 30);
            r.d = deferred_process_run(r.p);
            observe(&r, &o);
            snprintf(want, sizeof(want), "int %ld", stream_sum(30));
            ck_assert_str_eq(o.value, want);
            ck_assert_uint_eq(o.items[4], 20);
            finish_run(&r);
        }
    }
}
END_TEST

/* A failure a map returns while a deferred before it waits is queued and
 * fails the stream in its turn: after the results before it. */
START_TEST(test_S12_failure_behind_a_pending_deferred)
{
    struct step spec[MAX_STEPS];
    struct run r;
    struct outcome o;

    npend = 0;
    reset_step(&spec[0], 'm', "x*2");
    spec[0].mul = 2;
    reset_step(&spec[1], 'm', "lookup");
    spec[1].defer_on = 2;
    spec[1].fail_on = 8;
    reset_step(&spec[2], 'f', "all");
    spec[2].mod = 100000;
    reset_step(&spec[3], 'r', "reduce");
    build(&r, spec, 4, false, true, 10);
    r.usrc.ignore_pause = true;
    r.d = deferred_process_run(r.p);
    ck_assert(!deferred_has_result(r.d));
    ck_assert_int_eq(npend, 1);
    ck_assert_int_eq(deferred_callback(pend[0], deferred_value_int(1000)), 0);
    deferred_unref(pend[0]);
    observe(&r, &o);
    ck_assert(o.failed);
    ck_assert_int_eq(o.code, 101);
    ck_assert_str_eq(o.message, "lookup failed on 8");
    /* 0 (dropped by the filter), then 1000, 4, 6 reach the reduce before
     * the failure in its turn; the rest is dropped. */
    ck_assert_uint_eq(o.items[3], 4);
    ck_assert_uint_eq(o.items[4], 3);
    ck_assert_uint_eq(o.cancels, 0); /* it had finished */
    finish_run(&r);
}
END_TEST

/* ---- S13: pause and cancel from inside a fused run ---- */

START_TEST(test_S13_pause_in_the_middle_of_a_run)
{
    struct step spec[MAX_STEPS];
    int user, pos;

    for (pos = 0; pos < 3; pos++) {
        for (user = 0; user < 2; user++) {
            struct run fused, twin;
            struct outcome a, b;
            int n = stream_spec(spec);

            spec[pos].pause_on = pos == 0 ? 5 : 10;
            build(&fused, spec, n, false, user, 30);
            build(&twin, spec, n, true, user, 30);
            fused.d = deferred_process_run(fused.p);
            twin.d = deferred_process_run(twin.p);
            observe(&fused, &a);
            observe(&twin, &b);
            same(&a, &b, "paused");
            ck_assert(!a.finished);
            ck_assert_uint_eq(a.items[0], 6); /* the item that paused it was the last */
            ck_assert(deferred_stage_is_paused(fused.producer));
            /* The process's own resume is refused (it holds no pause);
             * the stage's lets it go on. */
            ck_assert_int_eq(deferred_process_resume(fused.p), -EINVAL);
            ck_assert_int_eq(deferred_stage_resume(fused.steps[pos].stage), 0);
            ck_assert_int_eq(deferred_stage_resume(twin.steps[pos].stage), 0);
            observe(&fused, &a);
            observe(&twin, &b);
            same(&a, &b, "resumed");
            ck_assert(a.finished);
            ck_assert_uint_eq(a.items[0], 30);
            finish_run(&fused);
            finish_run(&twin);
        }
    }
}
END_TEST

START_TEST(test_S13_cancel_from_inside_a_run)
{
    struct step s[MAX_STEPS];
    struct outcome o;
    int pos, n;

    for (pos = 0; pos < 4; pos++) {
        n = stream_spec(s);
        s[pos].cancel_on = pos == 0 ? 4 : pos == 3 ? 9 : 8;
        compare(s, n, 30, false, &o);
        ck_assert(o.failed);
        ck_assert_int_eq(o.code, ECANCELED);
        ck_assert_uint_eq(o.items[0], 5);
        /* No frames: a cancel is no stage's failure. */
        ck_assert_uint_eq(o.nctx, 0);
    }
    /* Cancelled from the process's deferred while a fused map waits. */
    {
        struct run r;

        npend = 0;
        n = stream_spec(s);
        s[2].defer_on = 8;
        build(&r, s, n, false, false, 30);
        r.d = deferred_process_run(r.p);
        ck_assert_int_eq(npend, 1);
        ck_assert(!deferred_has_result(r.d));
        ck_assert_int_eq(deferred_cancel(r.d), 0);
        observe(&r, &o);
        ck_assert(o.failed);
        ck_assert_int_eq(o.code, ECANCELED);
        /* The map's deferred was cancelled with it. */
        ck_assert(deferred_has_result(pend[0]));
        deferred_unref(pend[0]);
        finish_run(&r);
    }
}
END_TEST

/* ---- S14: allocation failures in a fused run ---- */

/* array or user producer -> map (fired deferreds for a few items, each a
 * queue and a callback) -> filter -> map (a pending one, fired at the end)
 * -> reduce, with each allocation failing in turn: the sum, or ENOMEM. */
static void sc_fused_oom(struct tu_oom *r)
{
    struct step s[MAX_STEPS];
    deferred_process_t *p;
    deferred_stage_t *st;
    deferred_t *d;
    deferred_value_t v;
    bool user = r->arg != NULL;
    struct usrc u = { .n = 30 };
    int i;

    npend = 0;
    stream_spec(s);
    for (i = 0; i < 4; i++)
        s[i].index = i;
    s[0].ready_on = 5;
    s[2].defer_on = 20;
    p = deferred_process_new(0);
    if (!p) {
        r->saw = true;
        return;
    }
    st = user ? deferred_stage_new(&usrc_ops, &u, 0) : array_of(30);
    if (deferred_process_add(p, st) < 0)
        r->saw = true;
    if (deferred_process_add(p, deferred_stage_map(s[0].name, step_map, &s[0])) < 0)
        r->saw = true;
    if (deferred_process_add(p, deferred_stage_filter(s[1].name, step_keep, &s[1])) < 0)
        r->saw = true;
    if (deferred_process_add(p, deferred_stage_map(s[2].name, step_map, &s[2])) < 0)
        r->saw = true;
    if (deferred_process_add(p, deferred_stage_reduce(step_fold, deferred_value_int(0),
                                                      &s[3])) < 0)
        r->saw = true;
    for (i = 0; i < 4; i++)
        s[i].p = p;
    d = deferred_process_run(p);
    if (!d) {
        deferred_process_unref(p);
        r->saw = true;
        return;
    }
    for (i = 0; i < npend; i++) {
        deferred_callback(pend[i], deferred_value_int(21));
        deferred_unref(pend[i]);
    }
    ck_assert(deferred_has_result(d));
    v = deferred_result_take(d);
    if (deferred_value_is_failure(v))
        r->saw = deferred_failure_find(deferred_value_get_failure(v), DEFERRED_DOMAIN_ANY,
                                       ENOMEM) ||
                 deferred_failure_is(deferred_value_get_failure(v), DEFERRED_DOMAIN_LIBRARY,
                                     EINVAL);
    else
        r->ok = npend == 1 && deferred_value_get_int(v) == stream_sum(30);
    deferred_value_release(v);
    deferred_unref(d);
    deferred_process_unref(p);
}

START_TEST(test_S14_fused_run_oom)
{
    static int user = 1;

    tu_oom_sweep("fused_oom_array", sc_fused_oom, NULL, 0);
    tu_oom_sweep("fused_oom_user", sc_fused_oom, &user, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("process-fused");
    TCase *tc = tcase_create("fused");

    tcase_add_checked_fixture(tc, tu_setup, tu_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_S10_fused_runs_agree);
    tcase_add_test(tc, test_S10_fused_run_keeps_tags);
    tcase_add_test(tc, test_S10_groups_through_a_fused_run);
    tcase_add_test(tc, test_S11_failure_in_each_position);
    tcase_add_test(tc, test_S11_failure_of_a_nested_emit);
    tcase_add_test(tc, test_S12_pending_deferred_in_a_fused_run);
    tcase_add_test(tc, test_S12_fired_deferreds_in_a_fused_run);
    tcase_add_test(tc, test_S12_failure_behind_a_pending_deferred);
    tcase_add_test(tc, test_S13_pause_in_the_middle_of_a_run);
    tcase_add_test(tc, test_S13_cancel_from_inside_a_run);
    tcase_add_test(tc, test_S14_fused_run_oom);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
