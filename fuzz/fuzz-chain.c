/*
 * fuzz/fuzz-chain.c: a libFuzzer harness that runs the chain of one
 * deferred beside a model of its semantics (docs/semantics.md, sections
 * 4 to 6) and checks that they agree after every operation.
 *
 * fuzz-core.c checks lifetimes (every value released once, every block
 * freed); this one checks what runs: which half of which entry is called,
 * on which result, in which order, and what the deferred says of itself
 * afterwards (fired, paused, waiting, has its result, the result).  The
 * chain is built of every kind of entry (callback, errback, both, pairs
 * with NULL halves, the _full variants), added through the header's
 * inline code and through the functions, before and after the fire, from
 * outside and from inside its own callbacks; callbacks return values,
 * failures, recover, pause (and pause and unpause at once), return a
 * fired deferred or one that fires later.  Long chains go through every
 * layout of the entries (inline, heap blocks, compacted).
 *
 * The model is the documented semantics, written as plainly as possible:
 * a list of entries, a position, a result, a pause count, a wait.
 *
 * The input: operations, each an opcode byte and its argument bytes
 * (missing bytes read as zero).
 *   0 ADD kind h0 [h1] flags  kind & 3: callback, errback, both, pair (h1
 *                             its errback half); a half is an action byte
 *                             and an argument byte (action A_NONE: a NULL
 *                             half); flags bit 0 the _full variant, bit 1
 *                             the function rather than the header's
 *                             inline code
 *   1 FIRE x                  deferred_callback(d, x)
 *   2 ERRBACK x               deferred_errback(d, a failure of code x)
 *   3 PAUSE
 *   4 UNPAUSE
 *   5 FIRE_B x                fire (x even) or fail the deferred a callback
 *                             returned that had no result yet
 *   6 TAKE                    deferred_result_take(d)
 *   7 NEW x                   drop d, make a new one: pending (x % 3 ==
 *                             0), deferred_succeed(x) or deferred_fail()
 *   8 CANCEL                  deferred_cancel(d): an unfired d fails with
 *                             ECANCELED and swallows one later fire; a d
 *                             that waits passes the cancel to B
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz-util.h"

#define MAX_OPS 600
#define MAX_ENTRIES 4096 /* more than MAX_OPS outer adds plus nested ones */
#define MAX_TRACE 8192
#define NESTED_ADDS 64 /* adds from inside callbacks, per deferred */

/* ---- values ------------------------------------------------------------ */

enum { V_NONE, V_INT, V_FAIL };

/* A result as the model sees it: the empty value, an integer, or a
 * failure of a code (user's domain). */
struct mval {
    int type;
    long v;
};

static struct mval mv(int type, long v)
{
    struct mval m = {type, v};
    return m;
}

static int mval_eq(struct mval a, struct mval b)
{
    return a.type == b.type && (a.type == V_NONE || a.v == b.v);
}

/* What a library value is, as a model value; it must be one of the three. */
static struct mval mval_of(deferred_value_t v)
{
    deferred_failure_t *f;

    if (deferred_value_is_none(v))
        return mv(V_NONE, 0);
    if (deferred_value_is_int(v))
        return mv(V_INT, (long)deferred_value_get_int(v));
    f = deferred_value_get_failure(v);
    FZ_CHECK(f != NULL, "a result that is neither empty, an integer nor a failure");
    if (deferred_failure_domain(f) == DEFERRED_DOMAIN_LIBRARY &&
        deferred_failure_code(f) == ECANCELED)
        return mv(V_FAIL, -ECANCELED); /* a cancel's */
    FZ_CHECK(deferred_failure_domain(f) == DEFERRED_DOMAIN_SYSTEM,
             "a failure the harness did not make");
    return mv(V_FAIL, deferred_failure_code(f));
}

static deferred_value_t lib_value(struct mval m)
{
    if (m.type == V_INT)
        return deferred_value_int(m.v);
    if (m.type == V_FAIL)
        return deferred_value_failure(
            deferred_failure_new(DEFERRED_DOMAIN_SYSTEM, (int)m.v, "code %ld", m.v));
    return deferred_value_none();
}

/* ---- entries and actions ----------------------------------------------- */

enum { K_CB, K_EB, K_BOTH, K_PAIR };

enum action {
    A_INC,   /* an integer: the input plus one; 1000 + code on a failure,
                1 on the empty value */
    A_FAIL,  /* a failure of code x % 20 + 1 */
    A_PASS,  /* the input */
    A_ADD,   /* add an entry (made from x) to its own deferred, pass */
    A_PAUSE, /* pause its own deferred, pass */
    A_BLINK, /* pause and unpause its own deferred at once, the input + 1 */
    A_FIRED, /* a deferred that has fired: with the input + 10 (10 on the
                empty value), or failed with code + 50 */
    A_WAIT,  /* the deferred B, made now, without a result (when none is
                outstanding; else as A_INC) */
    A_NACTIONS,
    A_NONE = A_NACTIONS /* a NULL half */
};

struct half {
    uint8_t act, x;
};

/* An entry: its kind and its halves (h[0] the callback or the both, h[1]
 * a pair's errback). */
struct entry {
    int kind;
    struct half h[2];
};

/* The argument of a library half. */
struct step {
    int id;   /* the entry's number */
    int half; /* 0 or 1 */
    struct half h;
};

/* The entry a callback of action A_ADD and argument x adds: all of it
 * comes from x, the same way for the library and the model. */
static struct entry nested_entry(uint8_t x, int *full, int *function_form)
{
    struct entry e;

    e.kind = x & 3;
    e.h[0].act = (uint8_t)((x >> 2) % A_NACTIONS);
    e.h[0].x = (uint8_t)(x * 7 + 3);
    e.h[1].act = (uint8_t)((x >> 5) % (A_NACTIONS + 1));
    e.h[1].x = (uint8_t)(x * 13 + 1);
    *full = (x >> 3) & 1;
    *function_form = (x >> 4) & 1;
    return e;
}

/* Which half runs on a result (failed or not): 0, 1, or -1 for none. */
static int pick(const struct entry *e, int failed)
{
    switch (e->kind) {
    case K_CB:
        return failed ? -1 : 0;
    case K_EB:
        return failed ? 0 : -1;
    case K_BOTH:
        return 0;
    default:
        return failed ? 1 : 0;
    }
}

/* Whether an entry has a function at all (else it is refused). */
static int has_fn(struct entry e)
{
    return e.h[0].act != A_NONE || (e.kind == K_PAIR && e.h[1].act != A_NONE);
}

/* ---- the traces ----------------------------------------------------------- */

/* A call: entry id, half, the result it was given. */
struct call {
    int id, half;
    struct mval in;
};

struct trace {
    struct call c[MAX_TRACE];
    int n;
};

static struct trace lib_trace, model_trace;

static void trace_add(struct trace *t, int id, int half, struct mval in)
{
    FZ_CHECK(t->n < MAX_TRACE, "more calls than the harness records");
    t->c[t->n].id = id;
    t->c[t->n].half = half;
    t->c[t->n].in = in;
    t->n++;
}

/* ---- the model ------------------------------------------------------------ */

static struct model {
    struct entry e[MAX_ENTRIES];
    int id[MAX_ENTRIES];
    int n, pos;
    int fired, running, waiting, b_pending;
    int suppress; /* cancelled unfired: one later fire is swallowed */
    unsigned paused;
    struct mval r;
    int adds_left, next_id;
} m;

static void model_run(void);

static void model_append(struct entry e)
{
    FZ_CHECK(m.n < MAX_ENTRIES, "the model's chain is full");
    m.e[m.n] = e;
    m.id[m.n] = m.next_id++;
    m.n++;
}

static struct mval model_act(struct half h, struct mval in)
{
    int full, fn;

    switch (h.act) {
    case A_INC:
    inc:
        return mv(V_INT, in.type == V_INT ? in.v + 1 : in.type == V_FAIL ? 1000 + in.v : 1);
    case A_FAIL:
        return mv(V_FAIL, h.x % 20 + 1);
    case A_PASS:
        return in;
    case A_ADD:
        if (m.adds_left > 0) {
            struct entry e = nested_entry(h.x, &full, &fn);

            m.adds_left--;
            if (has_fn(e)) /* else refused, as the library refuses it */
                model_append(e);
        }
        return in;
    case A_PAUSE:
        m.paused++;
        return in;
    case A_BLINK:
        goto inc;
    case A_FIRED:
        if (in.type == V_FAIL)
            return mv(V_FAIL, in.v + 50);
        return mv(V_INT, in.type == V_INT ? in.v + 10 : 10);
    case A_WAIT:
        if (m.b_pending)
            goto inc;
        m.b_pending = 1;
        m.waiting = 1;
        return mv(V_NONE, 0);
    default:
        fz_fail("the model ran a NULL half");
    }
}

static void model_run(void)
{
    if (m.running || !m.fired)
        return;
    m.running = 1;
    while (m.pos < m.n && !m.paused && !m.waiting) {
        const struct entry *e = &m.e[m.pos];
        int id = m.id[m.pos];
        int half = pick(e, m.r.type == V_FAIL);

        m.pos++;
        if (half < 0 || e->h[half].act == A_NONE)
            continue; /* skipped, or a NULL half: the result passes */
        trace_add(&model_trace, id, half, m.r);
        m.r = model_act(e->h[half], m.r);
    }
    m.running = 0;
}

static int model_has_result(void)
{
    return m.fired && !m.paused && !m.waiting && m.pos == m.n;
}

/* ---- the library side ------------------------------------------------------ */

static deferred_t *d; /* the deferred under test (the harness's reference) */
static deferred_t *b; /* what A_WAIT returned, until FIRE_B (a reference) */
static int lib_adds_left, lib_next_id;

static deferred_value_t lib_half(deferred_value_t v, void *arg);

/* Add entry e to d as the library's user would; 0 or the error. */
static int lib_add(struct entry e, int full, int function_form, int id)
{
    deferred_fn fn[2];
    struct step *s[2];
    int k, rc;

    for (k = 0; k < 2; k++) {
        fn[k] = NULL;
        s[k] = NULL;
        if ((k == 1 && e.kind != K_PAIR) || e.h[k].act == A_NONE)
            continue;
        s[k] = fz_arg_new(sizeof *s[k], full);
        s[k]->id = id;
        s[k]->half = k;
        s[k]->h = e.h[k];
        fn[k] = lib_half;
    }
    if (!fn[0] && !fn[1]) {
        /* Both halves NULL: refused, and the model adds nothing either
         * (the caller does not append it). */
        rc = e.kind == K_PAIR ? deferred_add_callbacks(d, NULL, NULL, NULL, NULL)
                              : deferred_add_callback(d, NULL, NULL);
        FZ_CHECK(rc == -EINVAL, "an entry without a function was not refused");
        return rc;
    }
    if (e.kind == K_PAIR) {
        if (full)
            return deferred_add_callbacks_full(d, fn[0], s[0], s[0] ? fz_destroy : NULL, fn[1],
                                               s[1], s[1] ? fz_destroy : NULL);
        return deferred_add_callbacks(d, fn[0], s[0], fn[1], s[1]);
    }
    if (full) {
        switch (e.kind) {
        case K_CB:
            return deferred_add_callback_full(d, fn[0], s[0], fz_destroy);
        case K_EB:
            return deferred_add_errback_full(d, fn[0], s[0], fz_destroy);
        default:
            return deferred_add_both_full(d, fn[0], s[0], fz_destroy);
        }
    }
    if (function_form) {
        switch (e.kind) {
        case K_CB:
            return (deferred_add_callback)(d, fn[0], s[0]);
        case K_EB:
            return (deferred_add_errback)(d, fn[0], s[0]);
        default:
            return (deferred_add_both)(d, fn[0], s[0]);
        }
    }
    switch (e.kind) {
    case K_CB:
        return deferred_add_callback(d, fn[0], s[0]);
    case K_EB:
        return deferred_add_errback(d, fn[0], s[0]);
    default:
        return deferred_add_both(d, fn[0], s[0]);
    }
}

static deferred_value_t lib_half(deferred_value_t v, void *arg)
{
    struct step *s = arg;
    struct mval in = mval_of(v);
    int full, fn, rc, id;

    FZ_CHECK(!fz_arg_destroyed(s), "a half ran after its argument was destroyed");
    trace_add(&lib_trace, s->id, s->half, in);
    FZ_TRACE("  call entry %d half %d on (%d, %ld)", s->id, s->half, in.type, in.v);
    switch (s->h.act) {
    case A_INC:
    inc:
        deferred_value_release(v);
        return deferred_value_int(in.type == V_INT ? in.v + 1
                                  : in.type == V_FAIL ? 1000 + in.v : 1);
    case A_FAIL:
        deferred_value_release(v);
        return lib_value(mv(V_FAIL, s->h.x % 20 + 1));
    case A_PASS:
        return v;
    case A_ADD:
        if (lib_adds_left > 0) {
            struct entry e = nested_entry(s->h.x, &full, &fn);

            lib_adds_left--;
            /* The number first: the entry may run before the add returns. */
            id = has_fn(e) ? lib_next_id++ : -1;
            rc = lib_add(e, full, fn, id);
            FZ_CHECK(has_fn(e) ? rc == 0 : rc == -EINVAL,
                     "an add from inside a callback failed");
        }
        return v;
    case A_PAUSE:
        FZ_CHECK(deferred_pause(d) == 0, "a pause from inside a callback failed");
        return v;
    case A_BLINK:
        FZ_CHECK(deferred_pause(d) == 0 && deferred_unpause(d) == 0,
                 "a pause and unpause from inside a callback failed");
        goto inc;
    case A_FIRED:
        deferred_value_release(v);
        if (in.type == V_FAIL)
            return deferred_value_deferred(deferred_fail(
                deferred_failure_new(DEFERRED_DOMAIN_SYSTEM, (int)in.v + 50, "fired")));
        return deferred_value_deferred(
            deferred_succeed(deferred_value_int(in.type == V_INT ? in.v + 10 : 10)));
    case A_WAIT:
        if (b)
            goto inc;
        deferred_value_release(v);
        b = deferred_new();
        FZ_CHECK(b != NULL, "deferred_new() failed");
        return deferred_value_deferred(deferred_ref(b));
    default:
        fz_fail("the library ran a NULL half");
    }
}

/* ---- comparing -------------------------------------------------------------- */

static void compare(const char *op)
{
    int i;
    struct mval r = mval_of(deferred_result(d));

    if (lib_trace.n != model_trace.n)
        fprintf(stderr, "fuzz-chain: after %s: %d calls, the model %d\n", op, lib_trace.n,
                model_trace.n);
    for (i = 0; i < lib_trace.n && i < model_trace.n; i++) {
        const struct call *a = &lib_trace.c[i], *e = &model_trace.c[i];

        if (a->id != e->id || a->half != e->half || !mval_eq(a->in, e->in)) {
            fprintf(stderr,
                    "fuzz-chain: after %s: call %d: entry %d half %d on (%d, %ld); the model: "
                    "entry %d half %d on (%d, %ld)\n",
                    op, i, a->id, a->half, a->in.type, a->in.v, e->id, e->half, e->in.type,
                    e->in.v);
            fz_fail("a call differs from the model's");
        }
    }
    FZ_CHECK(lib_trace.n == model_trace.n, "the number of calls differs from the model's");
    lib_trace.n = model_trace.n = 0;
    if (deferred_has_fired(d) != !!m.fired || deferred_pause_count(d) != m.paused ||
        deferred_is_waiting(d) != !!m.waiting || deferred_has_result(d) != !!model_has_result())
        fprintf(stderr,
                "fuzz-chain: after %s: fired %d paused %u waiting %d has_result %d; the model: "
                "fired %d paused %u waiting %d has_result %d (entry %d of %d)\n",
                op, deferred_has_fired(d), deferred_pause_count(d), deferred_is_waiting(d),
                deferred_has_result(d), m.fired, m.paused, m.waiting, model_has_result(), m.pos,
                m.n);
    FZ_CHECK(deferred_has_fired(d) == !!m.fired, "has_fired differs from the model");
    FZ_CHECK(deferred_pause_count(d) == m.paused, "the pause count differs from the model");
    FZ_CHECK(deferred_is_waiting(d) == !!m.waiting, "is_waiting differs from the model");
    FZ_CHECK(deferred_has_result(d) == !!model_has_result(), "has_result differs from the model");
    if (!mval_eq(r, m.r)) {
        fprintf(stderr, "fuzz-chain: after %s: result (%d, %ld), the model (%d, %ld)\n", op,
                r.type, r.v, m.r.type, m.r.v);
        fz_fail("the result differs from the model's");
    }
}

/* ---- the operations ---------------------------------------------------------- */

static void reset(int how, uint8_t x)
{
    if (d)
        deferred_unref(d);
    d = NULL;
    if (b)
        deferred_unref(b); /* nothing waits on it any more */
    b = NULL;
    memset(&m, 0, sizeof m);
    m.adds_left = lib_adds_left = NESTED_ADDS;
    lib_next_id = 0;
    switch (how) {
    case 0:
        d = deferred_new();
        break;
    case 1:
        d = deferred_succeed(deferred_value_int(x));
        m.fired = 1;
        m.r = mv(V_INT, x);
        break;
    default:
        d = deferred_fail(deferred_failure_new(DEFERRED_DOMAIN_SYSTEM, x % 20 + 1, "failed"));
        m.fired = 1;
        m.r = mv(V_FAIL, x % 20 + 1);
        break;
    }
    FZ_CHECK(d != NULL, "making the deferred failed");
}

static struct half read_half(fz_reader_t *in)
{
    struct half h;

    h.act = (uint8_t)(fz_byte(in) % (A_NACTIONS + 1));
    h.x = fz_byte(in);
    return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_reader_t in = {data, size};
    int ops = 0;

    fz_setup();
    fz_begin();
    lib_trace.n = model_trace.n = 0;
    reset(0, 0);
    while (fz_more(&in) && ops++ < MAX_OPS) {
        uint8_t op = fz_byte(&in) % 9;
        int rc, expect;

        switch (op) {
        case 0: {
            struct entry e;
            uint8_t flags;

            e.kind = fz_byte(&in) & 3;
            e.h[0] = read_half(&in);
            e.h[1].act = A_NONE;
            e.h[1].x = 0;
            if (e.kind == K_PAIR)
                e.h[1] = read_half(&in);
            flags = fz_byte(&in);
            FZ_TRACE("add kind %d (%d, %d) (%d, %d) flags %d", e.kind, e.h[0].act, e.h[0].x,
                     e.h[1].act, e.h[1].x, flags);
            /* The number first: the entry may run before the add returns
             * (the model's is given as it is appended). */
            rc = lib_add(e, flags & 1, (flags >> 1) & 1, has_fn(e) ? lib_next_id++ : -1);
            if (has_fn(e)) {
                FZ_CHECK(rc == 0, "an add failed");
                model_append(e);
                model_run();
            }
            compare("add");
            break;
        }
        case 1:
        case 2: {
            uint8_t x = fz_byte(&in);
            struct mval v = op == 1 ? mv(V_INT, x) : mv(V_FAIL, x % 20 + 1);

            FZ_TRACE("%s %d", op == 1 ? "callback" : "errback", x);
            rc = op == 1 ? deferred_callback(d, lib_value(v))
                         : deferred_errback(d, deferred_value_take_failure(lib_value(v)));
            expect = m.fired && !m.suppress ? -EALREADY : 0;
            FZ_CHECK(rc == expect, "a fire's status differs from the model's");
            if (m.suppress) {
                m.suppress = 0; /* swallowed */
            } else if (!m.fired) {
                m.fired = 1;
                m.r = v;
                model_run();
            }
            compare("fire");
            break;
        }
        case 3:
            FZ_TRACE("pause");
            FZ_CHECK(deferred_pause(d) == 0, "a pause failed");
            m.paused++;
            compare("pause");
            break;
        case 4:
            FZ_TRACE("unpause");
            rc = deferred_unpause(d);
            FZ_CHECK(rc == (m.paused ? 0 : -EINVAL), "an unpause's status differs from the model's");
            if (m.paused && --m.paused == 0)
                model_run();
            compare("unpause");
            break;
        case 5: {
            uint8_t x = fz_byte(&in);
            struct mval v = (x & 1) ? mv(V_FAIL, x % 20 + 1) : mv(V_INT, x);
            deferred_t *fired_b;

            FZ_TRACE("fire B with %d", x);
            FZ_CHECK(!b == !m.b_pending, "B differs from the model");
            if (!b)
                break;
            /* B is no longer outstanding once fired: a callback it runs
             * may make the next one. */
            fired_b = b;
            b = NULL;
            rc = (x & 1) ? deferred_errback(fired_b, deferred_value_take_failure(lib_value(v)))
                         : deferred_callback(fired_b, lib_value(v));
            FZ_CHECK(rc == 0, "firing B failed");
            deferred_unref(fired_b);
            m.b_pending = 0;
            if (m.waiting) {
                m.waiting = 0;
                m.r = v;
                model_run();
            }
            compare("fire B");
            break;
        }
        case 6: {
            struct mval r;
            deferred_value_t v;

            FZ_TRACE("take");
            v = deferred_result_take(d);
            r = mval_of(v);
            deferred_value_release(v);
            if (!mval_eq(r, m.r))
                fz_fail("the result taken differs from the model's");
            m.r = mv(V_NONE, 0);
            compare("take");
            break;
        }
        case 8:
            FZ_TRACE("cancel");
            FZ_CHECK(deferred_cancel(d) == 0, "a cancel failed");
            if (!m.fired) {
                m.fired = 1;
                m.suppress = 1;
                m.r = mv(V_FAIL, -ECANCELED);
                model_run();
            } else if (m.waiting) {
                /* B, which has no canceller, fails with ECANCELED: d goes
                 * on with that failure (B is outstanding until then). */
                m.waiting = 0;
                m.r = mv(V_FAIL, -ECANCELED);
                model_run();
                m.b_pending = 0;
                deferred_unref(b);
                b = NULL;
            }
            compare("cancel");
            break;
        default: {
            uint8_t x = fz_byte(&in);

            FZ_TRACE("new %d", x);
            reset(x % 3, x);
            compare("new");
            break;
        }
        }
    }
    deferred_unref(d);
    d = NULL;
    if (b)
        deferred_unref(b);
    b = NULL;
    fz_end();
    return 0;
}
