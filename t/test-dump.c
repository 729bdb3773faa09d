/*
 * t/test-dump.c: deferred_dump() and the debug-mode registry
 * (deferred/dump.h), scenarios DU01-DU08 of docs/scenarios.md.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <deferred/combinators.h>

#include "testutil.h"

/* ---- helpers -------------------------------------------------------------- */

/* Return the deferred in arg: the chain waits on it. */
static deferred_value_t wait_on(deferred_value_t v, void *arg)
{
    deferred_value_release(v);
    return deferred_value_deferred(deferred_ref(arg));
}

/* The line of s (a dump) that contains needle, from its start; NULL. */
static const char *line_with(const char *s, const char *needle)
{
    const char *p = strstr(s, needle);

    if (!p)
        return NULL;
    while (p > s && p[-1] != '\n')
        p--;
    return p;
}

static size_t indent_of(const char *line)
{
    size_t n = 0;

    while (line[n] == ' ')
        n++;
    return n;
}

/* In a JSON line, the integer after "key": (-1 if absent or null). */
static long json_int(const char *line, const char *key)
{
    char pat[64];
    const char *p, *end = strchr(line, '\n');

    snprintf(pat, sizeof(pat), "\"%s\":", key);
    p = strstr(line, pat);
    if (!p || (end && p > end))
        return -1;
    p += strlen(pat);
    if (*p < '0' || *p > '9')
        return -1;
    return strtol(p, NULL, 10);
}

/* In a JSON line, whether "key":"value" is there (value unescaped ASCII). */
static bool json_has(const char *line, const char *key, const char *value)
{
    char pat[600];
    const char *p, *end = strchr(line, '\n');

    snprintf(pat, sizeof(pat), "\"%s\":\"%s\"", key, value);
    p = strstr(line, pat);
    return p && (!end || p < end);
}

/* The JSON line numbered n ("line":n). */
static const char *json_line(const char *s, long n)
{
    char pat[48];
    const char *p;

    snprintf(pat, sizeof(pat), ",\"line\":%ld,", n);
    p = strstr(s, pat);
    return p ? line_with(s, pat) : NULL;
}

/* ---- DU01: the program that hangs ----------------------------------------- */

struct hang {
    deferred_t *inner; /* never fired (until the test lets it go) */
    int outer_line, inner_line;
};

/* The map's function: a gather of a fired deferred and of one that waits
 * on inner, which nothing fires. */
static deferred_value_t lookup(deferred_value_t v, void *arg)
{
    struct hang *h = arg;
    deferred_t *in[2], *g;

    deferred_value_release(v);
    h->inner_line = __LINE__ + 1;
    h->inner = deferred_new();
    h->outer_line = __LINE__ + 1;
    in[0] = deferred_new();
    in[1] = deferred_succeed(deferred_value_int(7));
    ck_assert_ptr_nonnull(h->inner);
    ck_assert_ptr_nonnull(in[0]);
    ck_assert_int_eq(deferred_add_callback(in[0], wait_on, h->inner), 0);
    ck_assert_int_eq(deferred_callback(in[0], deferred_value_none()), 0);
    ck_assert(deferred_is_waiting(in[0]));
    g = deferred_gather(in, 2, 0);
    ck_assert_ptr_nonnull(g);
    deferred_unref(in[0]);
    deferred_unref(in[1]);
    return deferred_value_deferred(g);
}

static deferred_t *hang_start(struct hang *h, deferred_value_t *items, int *run_line)
{
    deferred_process_t *p = deferred_process_new(0);
    deferred_t *done;

    ck_assert_ptr_nonnull(p);
    items[0] = deferred_value_int(1);
    ck_assert_int_eq(deferred_process_add(p, deferred_stage_array(items, 1)), 0);
    ck_assert_int_eq(deferred_process_add(p, deferred_stage_map("lookup", lookup, h)), 0);
    ck_assert_int_eq(deferred_process_add(p, deferred_stage_collect()), 0);
    *run_line = __LINE__ + 1;
    done = deferred_process_run(p);
    ck_assert_ptr_nonnull(done);
    deferred_process_unref(p);
    ck_assert_ptr_nonnull(h->inner);
    ck_assert(!deferred_has_fired(done));
    return done;
}

static void hang_finish(struct hang *h, deferred_t *done)
{
    deferred_callback(h->inner, deferred_value_int(5));
    deferred_unref(h->inner);
    ck_assert(deferred_has_fired(done));
    deferred_unref(done);
}

START_TEST(test_DU01_hang_text)
{
    struct hang h = { NULL, 0, 0 };
    deferred_value_t items[1];
    int run_line;
    deferred_t *done;
    char *s, want[600];
    const char *proc, *stage, *gather, *outer, *inner;

    deferred_set_debug(true);
    done = hang_start(&h, items, &run_line);
    s = deferred_dump_string(DEFERRED_DUMP_TEXT);
    ck_assert_ptr_nonnull(s);

    snprintf(want, sizeof(want), "process %s:%d phase=", __FILE__, run_line);
    proc = line_with(s, want);
    ck_assert_msg(proc != NULL, "no process line in:\n%s", s);
    stage = line_with(s, "stage lookup index=1 kind=processor");
    ck_assert_msg(stage != NULL, "no stage line in:\n%s", s);
    ck_assert_ptr_nonnull(strstr(stage, "in_flight=1"));
    gather = line_with(s, "combinator=gather inputs=2 pending=1");
    ck_assert_msg(gather != NULL, "no gather line in:\n%s", s);
    snprintf(want, sizeof(want), "input: deferred %s:%d state=waiting", __FILE__, h.outer_line);
    outer = line_with(s, want);
    ck_assert_msg(outer != NULL, "no outer line in:\n%s", s);
    snprintf(want, sizeof(want), "waits on: deferred %s:%d state=unfired", __FILE__,
             h.inner_line);
    inner = line_with(s, want);
    ck_assert_msg(inner != NULL, "no inner line in:\n%s", s);
    ck_assert_ptr_nonnull(strstr(inner, "innermost\n"));
    /* The path, in order, each a level deeper. */
    ck_assert(proc < stage && stage < gather && gather < outer && outer < inner);
    ck_assert_uint_eq(indent_of(proc), 0);
    ck_assert_uint_eq(indent_of(stage), 2);
    ck_assert_uint_eq(indent_of(gather), 4);
    ck_assert_ptr_nonnull(strstr(gather, "waits on: deferred"));
    ck_assert_uint_eq(indent_of(outer), 6);
    ck_assert_uint_eq(indent_of(inner), 8);
    /* Only one line is the innermost. */
    ck_assert_ptr_eq(strstr(s, " innermost"), strstr(inner, " innermost"));
    deferred_free(s);
    hang_finish(&h, done);
    ck_assert_uint_eq(deferred_dump_count(), 0);
}
END_TEST

START_TEST(test_DU01_hang_json)
{
    struct hang h = { NULL, 0, 0 };
    deferred_value_t items[1];
    int run_line;
    deferred_t *done;
    char *s, want[600];
    const char *inner, *outer, *gather, *stage, *proc, *p;

    deferred_set_debug(true);
    done = hang_start(&h, items, &run_line);
    s = deferred_dump_string(DEFERRED_DUMP_JSON);
    ck_assert_ptr_nonnull(s);
    /* Every line is one object. */
    for (p = s; *p; p = strchr(p, '\n') + 1) {
        ck_assert_int_eq(*p, '{');
        ck_assert_ptr_nonnull(strchr(p, '\n'));
        ck_assert_int_eq(strchr(p, '\n')[-1], '}');
    }
    ck_assert_ptr_eq(strstr(s, "{\"type\":\"dump\""), s);
    inner = line_with(s, "\"innermost\":true");
    ck_assert_msg(inner != NULL, "no innermost in:\n%s", s);
    snprintf(want, sizeof(want), "%s:%d", __FILE__, h.inner_line);
    ck_assert(json_has(inner, "name", want));
    ck_assert(json_has(inner, "state", "unfired"));
    ck_assert(json_has(inner, "role", "waits on"));
    /* Up the path by "parent". */
    outer = json_line(s, json_int(inner, "parent"));
    ck_assert_ptr_nonnull(outer);
    snprintf(want, sizeof(want), "%s:%d", __FILE__, h.outer_line);
    ck_assert(json_has(outer, "name", want));
    ck_assert(json_has(outer, "role", "input"));
    ck_assert(json_has(outer, "state", "waiting"));
    gather = json_line(s, json_int(outer, "parent"));
    ck_assert_ptr_nonnull(gather);
    ck_assert(json_has(gather, "combinator", "gather"));
    ck_assert_int_eq(json_int(gather, "pending"), 1);
    stage = json_line(s, json_int(gather, "parent"));
    ck_assert_ptr_nonnull(stage);
    ck_assert(json_has(stage, "type", "stage"));
    ck_assert(json_has(stage, "name", "lookup"));
    proc = json_line(s, json_int(stage, "parent"));
    ck_assert_ptr_nonnull(proc);
    ck_assert(json_has(proc, "type", "process"));
    snprintf(want, sizeof(want), "%s:%d", __FILE__, run_line);
    ck_assert(json_has(proc, "name", want));
    ck_assert_ptr_nonnull(strstr(proc, "\"parent\":null"));
    deferred_free(s);
    hang_finish(&h, done);
}
END_TEST

/* ---- DU02: 100,000 live deferreds, constant stack, linear work ----------- */

struct counting {
    size_t bytes;
};

static int count_sink(const char *text, size_t len, void *arg)
{
    struct counting *c = arg;

    (void)text;
    c->bytes += len;
    return 0;
}

struct big {
    size_t n;
    deferred_dump_stats_t stats;
    size_t bytes;
};

/* n deferreds: a chain of n/2 (each waits on the next), and n/2 inputs of
 * one gather, all pending. */
static void big_dump(void *arg)
{
    struct big *b = arg;
    size_t half = b->n / 2, i;
    deferred_t **d = malloc(b->n * sizeof(*d)), *g;
    struct counting c = { 0 };

    ck_assert_ptr_nonnull(d);
    deferred_set_debug(true);
    for (i = 0; i < b->n; i++) {
        d[i] = deferred_new();
        ck_assert_ptr_nonnull(d[i]);
    }
    for (i = half - 1; i > 0; i--) {
        ck_assert_int_eq(deferred_add_callback(d[i - 1], wait_on, d[i]), 0);
        ck_assert_int_eq(deferred_callback(d[i - 1], deferred_value_none()), 0);
    }
    g = deferred_gather(d + half, b->n - half, 0);
    ck_assert_ptr_nonnull(g);
    ck_assert_uint_eq(deferred_dump_count(), b->n + 1);
    ck_assert_int_eq(deferred_dump_to(DEFERRED_DUMP_TEXT, count_sink, &c, &b->stats), 0);
    b->bytes = c.bytes;
    ck_assert_uint_eq(b->stats.deferreds, b->n + 1);
    ck_assert_uint_eq(b->stats.lines, b->n + 2);
    deferred_set_debug(false);
    deferred_unref(g);
    for (i = 0; i < b->n; i++)
        deferred_cancel(d[i]);
    for (i = 0; i < b->n; i++)
        deferred_unref(d[i]);
    free(d);
    ck_assert_uint_eq(deferred_dump_count(), 0);
}

START_TEST(test_DU02_hundred_thousand_linear_small_stack)
{
    struct big small = { 1000, { 0 }, 0 }, large = { 100000, { 0 }, 0 };
    double per_small, per_large;

    tu_run_small_stack(big_dump, &small);
    tu_run_small_stack(big_dump, &large);
    per_small = (double)small.stats.steps / (double)small.n;
    per_large = (double)large.stats.steps / (double)large.n;
    ck_assert_msg(per_large <= per_small * 1.1 + 0.5, "steps per deferred: %g for 1000, %g for 100000",
                  per_small, per_large);
    ck_assert_msg((double)large.bytes / (double)large.n <=
                      (double)small.bytes / (double)small.n * 1.5,
                  "bytes: %zu for 1000, %zu for 100000", small.bytes, large.bytes);
}
END_TEST

/* ---- DU03: debug mode off registers nothing --------------------------------- */

START_TEST(test_DU03_off_registers_nothing)
{
    deferred_t *a, *b, *in[1], *g;
    char *s;
    size_t before;

    deferred_set_debug(false);
    before = tu_total();
    a = deferred_new();
    ck_assert_ptr_nonnull(a);
    ck_assert_uint_eq(tu_total() - before, 1); /* the deferred alone */
    b = deferred_new_cancellable(NULL, NULL, NULL);
    ck_assert_uint_eq(tu_total() - before, 2);
    in[0] = a;
    g = deferred_gather(in, 1, 0);
    ck_assert_ptr_nonnull(g);
    ck_assert_uint_eq(deferred_dump_count(), 0);
    s = deferred_dump_string(DEFERRED_DUMP_JSON);
    ck_assert_ptr_nonnull(s);
    ck_assert_str_eq(s, "{\"type\":\"dump\",\"line\":1,\"parent\":null,\"depth\":0,"
                        "\"deferreds\":0,\"holders\":0,\"debug\":0}\n");
    deferred_free(s);
    /* Debug on: the rare part (one more block) holds the links. */
    deferred_set_debug(true);
    deferred_unref(b);
    before = tu_total();
    b = deferred_new();
    ck_assert_uint_eq(tu_total() - before, 2);
    ck_assert_uint_eq(deferred_dump_count(), 1);
    deferred_unref(b);
    ck_assert_uint_eq(deferred_dump_count(), 0);
    deferred_unref(g);
    deferred_unref(a);
}
END_TEST

/* ---- DU04: the string form under allocation failure ------------------------- */

static void oom_dump(struct tu_oom *r)
{
    deferred_t *a, *b;
    char *s;

    deferred_set_debug(true);
    a = deferred_new();
    b = deferred_new();
    if (!a || !b) {
        r->saw = true;
        goto out;
    }
    if (deferred_add_callback(a, wait_on, b) < 0) {
        r->saw = true;
        goto out;
    }
    deferred_callback(a, deferred_value_none());
    if (!deferred_is_waiting(a)) {
        r->saw = true; /* the wait could not be set up: a failed */
        goto out;
    }
    s = deferred_dump_string(r->arg ? DEFERRED_DUMP_JSON : DEFERRED_DUMP_TEXT);
    if (!s) {
        ck_assert_int_eq(errno, ENOMEM);
        r->saw = true;
        goto out;
    }
    r->ok = strstr(s, "innermost") != NULL && strstr(s, "state=waiting") != NULL
            ? true
            : strstr(s, "\"state\":\"waiting\"") != NULL;
    deferred_free(s);
out:
    if (b)
        deferred_callback(b, deferred_value_none());
    deferred_unref(a);
    deferred_unref(b);
    deferred_set_debug(false);
}

START_TEST(test_DU04_string_oom_sweep)
{
    tu_oom_sweep("dump text", oom_dump, NULL, 0);
    tu_oom_sweep("dump json", oom_dump, (void *)1, 0);
}
END_TEST

/* ---- DU05: holders, notes, escaping ------------------------------------------ */

struct custom {
    deferred_t *held;
};

static void describe_custom(deferred_dump_t *w, void *arg)
{
    struct custom *c = arg;

    deferred_dump_node(w, "custom", "a \"b\"\n\xff\xc3\xa9");
    deferred_dump_str(w, "sql", "SELECT 'x'\t\\");
    deferred_dump_int(w, "count", -3);
    deferred_dump_enter(w);
    deferred_dump_node(w, "part", "one");
    deferred_dump_deferred(w, "holds", c->held);
    deferred_dump_leave(w);
    deferred_dump_node(w, "tail", NULL);
}

static void describe_note(deferred_dump_t *w, void *arg)
{
    deferred_dump_str(w, "what", arg);
    deferred_dump_node(w, "ignored", NULL); /* nothing inside a note */
}

START_TEST(test_DU05_holder_note_escaping)
{
    deferred_dump_holder_t h;
    struct custom c;
    char *s;
    const char *l;

    deferred_set_debug(true);
    c.held = deferred_new();
    ck_assert_int_eq(deferred_dump_note(c.held, describe_note, "noted"), 0);
    ck_assert_int_eq(deferred_dump_holder_add(&h, describe_custom, &c), 0);
    ck_assert_int_eq(deferred_dump_holder_add(NULL, describe_custom, &c), -EINVAL);
    ck_assert_int_eq(deferred_dump_note(NULL, describe_note, NULL), -EINVAL);

    s = deferred_dump_string(DEFERRED_DUMP_JSON);
    ck_assert_ptr_nonnull(s);
    l = line_with(s, "\"type\":\"custom\"");
    ck_assert_msg(l != NULL, "%s", s);
    ck_assert_ptr_nonnull(strstr(l, "\"name\":\"a \\\"b\\\"\\n\\ufffd\xc3\xa9\""));
    ck_assert_ptr_nonnull(strstr(l, "\"sql\":\"SELECT 'x'\\t\\\\\""));
    ck_assert_ptr_nonnull(strstr(l, "\"count\":-3"));
    l = line_with(s, "\"type\":\"part\"");
    ck_assert_int_eq(json_int(l, "depth"), 1);
    l = line_with(s, "\"what\":\"noted\"");
    ck_assert_ptr_nonnull(l);
    ck_assert(json_has(l, "role", "holds"));
    ck_assert_int_eq(json_int(l, "depth"), 2);
    ck_assert_ptr_null(strstr(s, "ignored"));
    l = line_with(s, "\"type\":\"tail\"");
    ck_assert_int_eq(json_int(l, "depth"), 0);
    /* Written once: under the holder, not again as a root. */
    ck_assert_ptr_null(strstr(strstr(s, "noted") + 1, "noted"));
    deferred_free(s);

    s = deferred_dump_string(DEFERRED_DUMP_TEXT);
    ck_assert_ptr_nonnull(s);
    ck_assert_ptr_nonnull(strstr(s, "custom \"a \\\"b\\\"\\n\\xff\xc3\xa9\" sql=\"SELECT 'x'\\t\\\\\" count=-3\n"));
    ck_assert_ptr_nonnull(strstr(s, "\n  part one\n    holds: deferred "));
    ck_assert_ptr_nonnull(strstr(s, "\ntail\n"));
    deferred_free(s);

    deferred_dump_holder_remove(&h);
    deferred_dump_holder_remove(&h); /* twice: nothing */
    s = deferred_dump_string(DEFERRED_DUMP_TEXT);
    ck_assert_ptr_null(strstr(s, "custom"));
    ck_assert_ptr_nonnull(strstr(s, "what=noted"));
    deferred_free(s);
    deferred_unref(c.held);
}
END_TEST

/* ---- DU06: a deferred reached twice is written once ------------------------- */

START_TEST(test_DU06_shared_input_written_once)
{
    deferred_t *x, *g1, *g2;
    char *s, want[64];
    const char *first, *second;

    deferred_set_debug(true);
    x = deferred_new();
    g1 = deferred_gather(&x, 1, 0);
    g2 = deferred_list(&x, 1, 0);
    ck_assert_ptr_nonnull(g1);
    ck_assert_ptr_nonnull(g2);
    s = deferred_dump_string(DEFERRED_DUMP_TEXT);
    ck_assert_ptr_nonnull(s);
    first = line_with(s, "innermost");
    ck_assert_msg(first != NULL, "%s", s);
    ck_assert_ptr_nonnull(strstr(s, "combinator=gather"));
    ck_assert_ptr_nonnull(strstr(s, "combinator=list"));
    second = line_with(s, " see=");
    ck_assert_msg(second != NULL, "%s", s);
    snprintf(want, sizeof(want), " see=%d\n", 3); /* summary, g1, x */
    ck_assert_ptr_nonnull(strstr(second, want));
    ck_assert_ptr_null(strstr(strchr(first, '\n'), "innermost"));
    deferred_free(s);
    deferred_unref(g1);
    deferred_unref(g2);
    deferred_callback(x, deferred_value_none());
    deferred_unref(x);
}
END_TEST

/* ---- DU07: states, the FILE and callback forms, errors ----------------------- */

static int stop_sink(const char *text, size_t len, void *arg)
{
    (void)text;
    (void)len;
    ++*(int *)arg;
    return -EPIPE;
}

START_TEST(test_DU07_states_and_forms)
{
    deferred_t *fired, *failed, *paused, *m;
    char *s;
    int calls = 0;
    FILE *f;

    deferred_set_debug(true);
    fired = deferred_succeed(deferred_value_int(42));
    failed = deferred_fail(deferred_failure_new(DEFERRED_DOMAIN_USER, 5, "boom"));
    paused = deferred_new();
    deferred_pause(paused);
    deferred_pause(paused);
    m = deferred_multi_new();
    ck_assert_ptr_nonnull(m);
    deferred_pause(m);
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(1)), 0);
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_int(2)), 0);
    s = deferred_dump_string(DEFERRED_DUMP_TEXT);
    ck_assert_ptr_nonnull(s);
    ck_assert_ptr_nonnull(strstr(s, "state=fired value=42 callbacks=0"));
    ck_assert_ptr_nonnull(strstr(s, "state=fired failure=boom code=5"));
    ck_assert_ptr_nonnull(strstr(s, "state=unfired paused=2 callbacks=0"));
    ck_assert_ptr_nonnull(strstr(s, "state=multi-fire paused=1 rows=2 queued=2"));
    deferred_free(s);

    ck_assert_int_eq(deferred_dump_to(DEFERRED_DUMP_TEXT, stop_sink, &calls, NULL), -EPIPE);
    ck_assert_int_eq(calls, 1);
    ck_assert_int_eq(deferred_dump_to(DEFERRED_DUMP_TEXT, NULL, NULL, NULL), -EINVAL);
    ck_assert_int_eq(deferred_dump_to((deferred_dump_format_t)7, stop_sink, &calls, NULL),
                     -EINVAL);
    errno = 0;
    ck_assert_ptr_null(deferred_dump_string((deferred_dump_format_t)7));
    ck_assert_int_eq(errno, EINVAL);
    f = tmpfile();
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(deferred_dump(f, DEFERRED_DUMP_JSON), 0);
    ck_assert(ftell(f) > 0);
    fclose(f);

    deferred_value_release(deferred_result_take(failed));
    deferred_unref(fired);
    deferred_unref(failed);
    deferred_unpause(paused);
    deferred_unpause(paused);
    deferred_unref(paused);
    deferred_cancel(m);
    deferred_unref(m);
}
END_TEST

/* ---- DU08: a coroutine names what it awaits ----------------------------------- */

struct co_frame {
    deferred_async_t co;
    deferred_t *in;
    deferred_value_t v;
};

static int co_body(void *frame)
{
    struct co_frame *f = frame;

    DEFERRED_ASYNC_BEGIN(f);
    DEFERRED_AWAIT(f, deferred_ref(f->in), f->v);
    deferred_value_release(f->v);
    DEFERRED_ASYNC_RETURN(f, deferred_value_none());
    DEFERRED_ASYNC_END(f);
}

START_TEST(test_DU08_coroutine_awaits)
{
    struct co_frame *f;
    deferred_t *d, *in;
    char *s, want[600];
    int in_line;
    const char *co, *aw;

    deferred_set_debug(true);
    in_line = __LINE__ + 1;
    in = deferred_new();
    f = deferred_async_new(co_body, sizeof(*f), "fetcher");
    ck_assert_ptr_nonnull(f);
    f->in = in;
    d = deferred_async_start(f);
    ck_assert_ptr_nonnull(d);
    s = deferred_dump_string(DEFERRED_DUMP_TEXT);
    ck_assert_ptr_nonnull(s);
    co = line_with(s, "coroutine=fetcher");
    ck_assert_msg(co != NULL, "%s", s);
    ck_assert_uint_eq(indent_of(co), 0);
    snprintf(want, sizeof(want), "awaits: deferred %s:%d state=unfired", __FILE__, in_line);
    aw = line_with(s, want);
    ck_assert_msg(aw != NULL, "%s", s);
    ck_assert(aw > co);
    ck_assert_uint_eq(indent_of(aw), 2);
    ck_assert_ptr_nonnull(strstr(aw, "innermost"));
    deferred_free(s);
    deferred_callback(in, deferred_value_none());
    deferred_unref(in);
    ck_assert(deferred_has_fired(d));
    deferred_unref(d);
}
END_TEST

/* ---- DU12: registries per thread ------------------------------------------ */

static void *make_one(void *arg)
{
    deferred_t **out = arg;

    *out = deferred_new();
    /* Listed here, on this thread, not on the main one. */
    ck_assert_uint_eq(deferred_dump_count(), 1);
    return NULL; /* the thread ends with it alive */
}

static void *free_one(void *arg)
{
    ck_assert_uint_eq(deferred_dump_count(), 0);
    deferred_unref(arg); /* made on the main thread, freed here */
    return NULL;
}

START_TEST(test_DU12_registry_per_thread)
{
    deferred_t *d = NULL, *mine;
    pthread_t th;
    char *s;

    deferred_set_debug(true);
    ck_assert_int_eq(pthread_create(&th, NULL, make_one, &d), 0);
    pthread_join(th, NULL);
    ck_assert_ptr_nonnull(d);
    ck_assert_uint_eq(deferred_dump_count(), 0); /* not ours */
    deferred_unref(d); /* its thread's registry let it go when it ended */

    mine = deferred_new();
    ck_assert_uint_eq(deferred_dump_count(), 1);
    ck_assert_int_eq(pthread_create(&th, NULL, free_one, mine), 0);
    pthread_join(th, NULL);
    ck_assert_uint_eq(deferred_dump_count(), 0);
    s = deferred_dump_string(DEFERRED_DUMP_TEXT);
    ck_assert_str_eq(s, "dump deferreds=0 holders=0 debug=1\n");
    deferred_free(s);
}
END_TEST

static Suite *dump_suite(void)
{
    Suite *s = suite_create("dump");
    TCase *tc = tcase_create("dump");

    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, tu_setup, tu_teardown);
    tcase_add_test(tc, test_DU01_hang_text);
    tcase_add_test(tc, test_DU01_hang_json);
    tcase_add_test(tc, test_DU02_hundred_thousand_linear_small_stack);
    tcase_add_test(tc, test_DU03_off_registers_nothing);
    tcase_add_test(tc, test_DU04_string_oom_sweep);
    tcase_add_test(tc, test_DU05_holder_note_escaping);
    tcase_add_test(tc, test_DU06_shared_input_written_once);
    tcase_add_test(tc, test_DU07_states_and_forms);
    tcase_add_test(tc, test_DU08_coroutine_awaits);
    tcase_add_test(tc, test_DU12_registry_per_thread);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(dump_suite());
}
