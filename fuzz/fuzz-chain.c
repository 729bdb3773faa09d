/*
 * fuzz/fuzz-chain.c: a libFuzzer harness that runs the chains of three
 * deferreds beside a model of their documented semantics
 * (docs/semantics.md, sections 4 to 7 and 10) and checks that they agree
 * after every operation.
 *
 * fuzz-core.c checks lifetimes (every value released once, every block
 * freed); this one checks what runs: which half of which entry of which
 * deferred is called, on which result, in which order, what the calls a
 * callback makes return, and what each deferred says of itself afterwards
 * (fired, pause count, waiting and on what, has its result, the result).
 * The chains are built of every kind of entry (callback, errback, both,
 * pairs with NULL halves, the _full variants), added through the header's
 * inline code and through the functions, before and after the fire, from
 * outside and from inside their own callbacks.  Callbacks return values
 * and failures, recover, pause (or pause and unpause at once), return a
 * fired deferred, or another slot's deferred (so a deferred waits on
 * another, which may be pending, paused, running or waiting in turn), and
 * fire or unpause another slot from inside (runners nested in C).  Long
 * chains go through every layout of the entries (inline, heap blocks,
 * compacted).
 *
 * The model is the documented semantics, written as plainly as possible:
 * per deferred a list of entries, a position, a result, a pause count and
 * what it waits on; a deferred that waits has a continue entry at the end
 * of the chain of the one it waits on.  When a chain reaches a continue
 * entry, the outer deferred takes the result and runs first, then the
 * inner one goes on with the empty value (Twisted's order).  A chain_to()
 * entry fires its target with the result there (the target's chain runs
 * at once, nested), and the chain goes on with the empty value, or with an
 * EALREADY failure when the target had fired.  A deferred only ever waits
 * on or is chained to a slot of a higher number, so there is no cycle.
 *
 * The input: operations, each an opcode byte and its argument bytes
 * (missing bytes read as zero); s is a slot, the low bits of its byte.
 *   0 ADD s kind h0 [h1] flags  kind & 3: callback, errback, both, pair (h1
 *                               its errback half); a half is an action byte
 *                               and an argument byte (action A_NONE: a NULL
 *                               half); flags bit 0 the _full variant, bit 1
 *                               the function rather than the header's
 *                               inline code, bit 2 the library's next
 *                               allocation fails (when no callback can run
 *                               in the add: s unfired, paused or waiting):
 *                               -ENOMEM adds nothing and destroys the
 *                               arguments of a _full add
 *   1 FIRE s x                  deferred_callback(slot s, x)
 *   2 ERRBACK s x               deferred_errback(slot s, a failure of code x)
 *   3 PAUSE s
 *   4 UNPAUSE s
 *   5 TAKE s                    deferred_result_take(slot s)
 *   6 NEW s x                   drop slot s (unless another waits on it),
 *                               make a new one: pending (x % 3 == 0),
 *                               deferred_succeed(x) or deferred_fail()
 *   7 CANCEL s                  deferred_cancel(slot s)
 *   8 CHAIN_TO s t              deferred_chain_to(slot s, slot t): t == s is
 *                               refused; only a higher t is chained (so that
 *                               nothing holds itself), a lower one skipped
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz-util.h"

#define NSLOTS 3
#define MAX_OPS 600
#define MAX_ENTRIES 4096 /* more than MAX_OPS outer adds plus nested ones */
#define MAX_TRACE 8192
#define NESTED_ADDS 64 /* adds from inside callbacks, per input */
#define SIDE_EFFECTS 48 /* fires and unpauses from inside callbacks, per input */

/* ---- values ------------------------------------------------------------ */

enum { V_NONE, V_INT, V_FAIL };

/* A result as the model sees it: the empty value, an integer, or a
 * failure of a code (the system domain; -ECANCELED for a cancel's,
 * -EALREADY for a chain_to() whose target had fired). */
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
        (deferred_failure_code(f) == ECANCELED || deferred_failure_code(f) == EALREADY))
        return mv(V_FAIL, -deferred_failure_code(f)); /* a cancel's, a chain_to()'s */
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

enum { K_CB, K_EB, K_BOTH, K_PAIR,
       K_CONT,    /* the model's continue entry of a deferred that waits */
       K_CHAIN_TO /* the model's chain_to() entry */ };

enum action {
    A_INC,     /* an integer: the input plus one; 1000 + code on a failure,
                  1 on the empty value */
    A_FAIL,    /* a failure of code x % 20 + 1 */
    A_PASS,    /* the input */
    A_ADD,     /* add an entry (made from x) to its own deferred, pass */
    A_PAUSE,   /* pause its own deferred, pass */
    A_BLINK,   /* pause and unpause its own deferred at once, the input + 1 */
    A_FIRED,   /* a deferred that has fired: with the input + 10 (10 on the
                  empty value), or failed with code + 50 */
    A_WAIT,    /* the deferred of a higher slot (its own + 1 + x % 2, or
                  the last); the last slot's: as A_INC */
    A_FIRE,    /* fire slot x % NSLOTS (a failure when x & 4) with x, pass */
    A_UNPAUSE, /* unpause slot x % NSLOTS, pass */
    A_NACTIONS,
    A_NONE = A_NACTIONS /* a NULL half */
};

struct half {
    uint8_t act, x;
};

/* An entry: its kind and its halves (h[0] the callback or the both, h[1]
 * a pair's errback); a continue entry has the outer slot, and is dead once
 * that outer was dropped; a chain_to() entry has the target's slot there. */
struct entry {
    int kind;
    struct half h[2];
    int outer, dead;
};

/* The argument of a library half. */
struct step {
    int slot, gen; /* the deferred it was added to: slot and generation */
    int id;        /* the entry's number in that deferred */
    int half;      /* 0 or 1 */
    struct half h;
};

/* The entry a callback of action A_ADD and argument x adds: all of it
 * comes from x, the same way for the library and the model. */
static struct entry nested_entry(uint8_t x, int *full, int *function_form)
{
    struct entry e;

    memset(&e, 0, sizeof e);
    e.kind = x & 3;
    e.h[0].act = (uint8_t)((x >> 2) % A_NACTIONS);
    e.h[0].x = (uint8_t)(x * 7 + 3);
    e.h[1].act = (uint8_t)((x >> 5) % (A_NACTIONS + 1));
    e.h[1].x = (uint8_t)(x * 13 + 1);
    *full = (x >> 3) & 1;
    *function_form = (x >> 4) & 1;
    return e;
}

/* The slot a callback of slot s and argument x waits on, or -1. */
static int wait_target(int s, uint8_t x)
{
    int j = s + 1 + (x & 1);

    if (s == NSLOTS - 1)
        return -1;
    return j < NSLOTS ? j : NSLOTS - 1;
}

/* Whether an entry has a function at all (else it is refused). */
static int has_fn(const struct entry *e)
{
    return e->h[0].act != A_NONE || (e->kind == K_PAIR && e->h[1].act != A_NONE);
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

/* ---- the traces ----------------------------------------------------------- */

/* A call (slot, entry id, half, the result it was given), or the status
 * of a call a callback made (id -1, half the status). */
struct call {
    int slot, id, half;
    struct mval in;
};

struct trace {
    struct call c[MAX_TRACE];
    int n;
};

static struct trace lib_trace, model_trace;

static void trace_add(struct trace *t, int slot, int id, int half, struct mval in)
{
    FZ_CHECK(t->n < MAX_TRACE, "more calls than the harness records");
    t->c[t->n].slot = slot;
    t->c[t->n].id = id;
    t->c[t->n].half = half;
    t->c[t->n].in = in;
    t->n++;
}

static void trace_status(struct trace *t, int slot, int rc)
{
    trace_add(t, slot, -1, rc, mv(V_NONE, 0));
}

/* ---- the model ------------------------------------------------------------ */

struct mdef {
    struct entry e[MAX_ENTRIES];
    int id[MAX_ENTRIES];
    int n, pos;
    int fired, running, cancelled, suppress;
    int waiting; /* the slot it waits on, or -1 */
    unsigned paused;
    struct mval r;
    int next_id;
};

static struct mdef m[NSLOTS];
static int m_adds_left, m_side_left;

static void model_run(int s);

static void model_append(int s, struct entry e)
{
    struct mdef *d = &m[s];

    FZ_CHECK(d->n < MAX_ENTRIES, "the model's chain is full");
    d->e[d->n] = e;
    d->id[d->n] = e.kind >= K_CONT ? -1 : d->next_id++;
    d->n++;
}

static int model_has_result(int s)
{
    return m[s].fired && !m[s].paused && m[s].waiting < 0 && m[s].pos == m[s].n &&
           !m[s].running;
}

/* A fire of slot s with v; its status. */
static int model_fire(int s, struct mval v)
{
    if (m[s].suppress) {
        m[s].suppress = 0; /* swallowed */
        return 0;
    }
    if (m[s].fired)
        return -EALREADY;
    m[s].fired = 1;
    m[s].r = v;
    model_run(s);
    return 0;
}

static int model_unpause(int s)
{
    if (!m[s].paused)
        return -EINVAL;
    if (--m[s].paused == 0)
        model_run(s);
    return 0;
}

/* What half h of an entry of slot s makes of in (m[s].waiting set when s
 * now waits). */
static struct mval model_act(int s, struct half h, struct mval in)
{
    int full, fn, j, slot;
    struct entry e;

    switch (h.act) {
    case A_INC:
    inc:
        return mv(V_INT, in.type == V_INT ? in.v + 1 : in.type == V_FAIL ? 1000 + in.v : 1);
    case A_FAIL:
        return mv(V_FAIL, h.x % 20 + 1);
    case A_PASS:
        return in;
    case A_ADD:
        if (m_adds_left > 0) {
            e = nested_entry(h.x, &full, &fn);
            m_adds_left--;
            if (has_fn(&e)) /* else refused, as the library refuses it */
                model_append(s, e);
        }
        return in;
    case A_PAUSE:
        m[s].paused++;
        return in;
    case A_BLINK:
        goto inc;
    case A_FIRED:
        if (in.type == V_FAIL)
            return mv(V_FAIL, in.v + 50);
        return mv(V_INT, in.type == V_INT ? in.v + 10 : 10);
    case A_WAIT:
        j = wait_target(s, h.x);
        if (j < 0)
            goto inc;
        if (model_has_result(j)) {
            /* Taken at once; j keeps the empty value. */
            struct mval r = m[j].r;

            m[j].r = mv(V_NONE, 0);
            return r;
        }
        memset(&e, 0, sizeof e);
        e.kind = K_CONT;
        e.outer = s;
        model_append(j, e);
        m[s].waiting = j;
        return mv(V_NONE, 0);
    case A_FIRE:
        if (m_side_left > 0) {
            m_side_left--;
            slot = h.x % NSLOTS;
            trace_status(&model_trace, slot,
                         model_fire(slot, (h.x & 4) ? mv(V_FAIL, h.x % 20 + 1) : mv(V_INT, h.x)));
        }
        return in;
    case A_UNPAUSE:
        if (m_side_left > 0) {
            m_side_left--;
            slot = h.x % NSLOTS;
            trace_status(&model_trace, slot, model_unpause(slot));
        }
        return in;
    default:
        fz_fail("the model ran a NULL half");
    }
}

static void model_run(int s)
{
    struct mdef *d = &m[s];

    if (d->running || !d->fired)
        return;
    d->running = 1;
    while (d->pos < d->n && !d->paused && d->waiting < 0) {
        const struct entry e = d->e[d->pos];
        int id = d->id[d->pos];
        int half;

        d->pos++;
        if (e.kind == K_CONT) {
            if (e.dead)
                continue; /* its outer was dropped */
            /* The outer takes the result and runs first. */
            m[e.outer].r = d->r;
            d->r = mv(V_NONE, 0);
            m[e.outer].waiting = -1;
            model_run(e.outer);
            continue;
        }
        if (e.kind == K_CHAIN_TO) {
            struct mval r = d->r;

            d->r = mv(V_NONE, 0);
            if (model_fire(e.outer, r) == -EALREADY)
                d->r = mv(V_FAIL, -EALREADY);
            continue;
        }
        half = pick(&e, d->r.type == V_FAIL);
        if (half < 0 || e.h[half].act == A_NONE)
            continue; /* skipped, or a NULL half: the result passes */
        trace_add(&model_trace, s, id, half, d->r);
        d->r = model_act(s, e.h[half], d->r);
    }
    d->running = 0;
}

/* A cancel of slot s: to the innermost of the waits; an unfired deferred
 * without a canceller fails with ECANCELED and swallows one later fire. */
static void model_cancel(int s)
{
    while (m[s].fired && m[s].waiting >= 0)
        s = m[s].waiting;
    if (m[s].fired || m[s].cancelled)
        return;
    m[s].cancelled = 1;
    m[s].suppress = 1;
    m[s].fired = 1;
    m[s].r = mv(V_FAIL, -ECANCELED);
    model_run(s);
}

/* ---- the library side ------------------------------------------------------ */

static deferred_t *slot[NSLOTS]; /* the harness's references */
static int gen[NSLOTS];
static int lib_next_id[NSLOTS];
static int lib_adds_left, lib_side_left;

static deferred_value_t lib_half(deferred_value_t v, void *arg);

/* Add entry e to slot s as the library's user would; 0 or the error. */
static int lib_add(int s, struct entry e, int full, int function_form, int id)
{
    deferred_t *d = slot[s];
    deferred_fn fn[2];
    struct step *st[2];
    int k;

    for (k = 0; k < 2; k++) {
        fn[k] = NULL;
        st[k] = NULL;
        if ((k == 1 && e.kind != K_PAIR) || e.h[k].act == A_NONE)
            continue;
        st[k] = fz_arg_new(sizeof *st[k], full);
        st[k]->slot = s;
        st[k]->gen = gen[s];
        st[k]->id = id;
        st[k]->half = k;
        st[k]->h = e.h[k];
        fn[k] = lib_half;
    }
    if (!fn[0] && !fn[1])
        return e.kind == K_PAIR ? deferred_add_callbacks(d, NULL, NULL, NULL, NULL)
                                : deferred_add_callback(d, NULL, NULL);
    if (e.kind == K_PAIR) {
        if (full)
            return deferred_add_callbacks_full(d, fn[0], st[0], st[0] ? fz_destroy : NULL,
                                               fn[1], st[1], st[1] ? fz_destroy : NULL);
        return deferred_add_callbacks(d, fn[0], st[0], fn[1], st[1]);
    }
    if (full) {
        switch (e.kind) {
        case K_CB:
            return deferred_add_callback_full(d, fn[0], st[0], fz_destroy);
        case K_EB:
            return deferred_add_errback_full(d, fn[0], st[0], fz_destroy);
        default:
            return deferred_add_both_full(d, fn[0], st[0], fz_destroy);
        }
    }
    if (function_form) {
        switch (e.kind) {
        case K_CB:
            return (deferred_add_callback)(d, fn[0], st[0]);
        case K_EB:
            return (deferred_add_errback)(d, fn[0], st[0]);
        default:
            return (deferred_add_both)(d, fn[0], st[0]);
        }
    }
    switch (e.kind) {
    case K_CB:
        return deferred_add_callback(d, fn[0], st[0]);
    case K_EB:
        return deferred_add_errback(d, fn[0], st[0]);
    default:
        return deferred_add_both(d, fn[0], st[0]);
    }
}

/* Add e to slot s, numbered first (it may run before the add returns:
 * the model numbers it as it is appended); checks the status. */
static void lib_add_checked(int s, struct entry e, int full, int function_form)
{
    int rc = lib_add(s, e, full, function_form, has_fn(&e) ? lib_next_id[s]++ : -1);

    if (has_fn(&e))
        FZ_CHECK(rc == 0, "an add failed");
    else
        FZ_CHECK(rc == -EINVAL, "an entry without a function was not refused");
}

static deferred_value_t lib_half(deferred_value_t v, void *arg)
{
    struct step *st = arg;
    struct mval in = mval_of(v);
    int full, fn, j, s = st->slot, target;
    deferred_t *d = slot[s];

    FZ_CHECK(!fz_arg_destroyed(st), "a half ran after its argument was destroyed");
    FZ_CHECK(st->gen == gen[s], "a half of a dropped deferred ran");
    trace_add(&lib_trace, s, st->id, st->half, in);
    FZ_TRACE("  call slot %d entry %d half %d on (%d, %ld)", s, st->id, st->half, in.type,
             in.v);
    switch (st->h.act) {
    case A_INC:
    inc:
        deferred_value_release(v);
        return deferred_value_int(in.type == V_INT ? in.v + 1
                                  : in.type == V_FAIL ? 1000 + in.v : 1);
    case A_FAIL:
        deferred_value_release(v);
        return lib_value(mv(V_FAIL, st->h.x % 20 + 1));
    case A_PASS:
        return v;
    case A_ADD:
        if (lib_adds_left > 0) {
            struct entry e = nested_entry(st->h.x, &full, &fn);

            lib_adds_left--;
            lib_add_checked(s, e, full, fn);
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
        j = wait_target(s, st->h.x);
        if (j < 0)
            goto inc;
        deferred_value_release(v);
        return deferred_value_deferred(deferred_ref(slot[j]));
    case A_FIRE:
        if (lib_side_left > 0) {
            lib_side_left--;
            target = st->h.x % NSLOTS;
            trace_status(&lib_trace, target,
                         (st->h.x & 4)
                             ? deferred_errback(slot[target],
                                                deferred_failure_new(DEFERRED_DOMAIN_SYSTEM,
                                                                     st->h.x % 20 + 1, "fire"))
                             : deferred_callback(slot[target], deferred_value_int(st->h.x)));
        }
        return v;
    case A_UNPAUSE:
        if (lib_side_left > 0) {
            lib_side_left--;
            target = st->h.x % NSLOTS;
            trace_status(&lib_trace, target, deferred_unpause(slot[target]));
        }
        return v;
    default:
        fz_fail("the library ran a NULL half");
    }
}

/* ---- comparing -------------------------------------------------------------- */

static void compare(const char *op)
{
    int i, s;

    for (i = 0; i < lib_trace.n && i < model_trace.n; i++) {
        const struct call *a = &lib_trace.c[i], *e = &model_trace.c[i];

        if (a->slot != e->slot || a->id != e->id || a->half != e->half ||
            !mval_eq(a->in, e->in)) {
            fprintf(stderr,
                    "fuzz-chain: after %s: call %d: slot %d entry %d half %d on (%d, %ld); the "
                    "model: slot %d entry %d half %d on (%d, %ld)\n",
                    op, i, a->slot, a->id, a->half, a->in.type, a->in.v, e->slot, e->id,
                    e->half, e->in.type, e->in.v);
            fz_fail("a call differs from the model's");
        }
    }
    if (lib_trace.n != model_trace.n) {
        fprintf(stderr, "fuzz-chain: after %s: %d calls, the model %d\n", op, lib_trace.n,
                model_trace.n);
        fz_fail("the number of calls differs from the model's");
    }
    lib_trace.n = model_trace.n = 0;
    for (s = 0; s < NSLOTS; s++) {
        deferred_t *d = slot[s];
        struct mval r = mval_of(deferred_result(d));

        /* For t/twisted-diff.py, which runs the same program on Twisted. */
        if (deferred_has_result(d))
            FZ_TRACE("  result slot %d (%d, %ld)", s, r.type, r.v);
        deferred_t *on = deferred_waits_on(d);
        int waits = -1;

        for (i = 0; i < NSLOTS; i++)
            if (on && on == slot[i])
                waits = i;
        if (deferred_has_fired(d) != !!m[s].fired || deferred_pause_count(d) != m[s].paused ||
            deferred_is_waiting(d) != (m[s].waiting >= 0) || waits != m[s].waiting ||
            deferred_has_result(d) != !!model_has_result(s) || !mval_eq(r, m[s].r)) {
            fprintf(stderr,
                    "fuzz-chain: after %s: slot %d: fired %d paused %u waits on %d has_result "
                    "%d result (%d, %ld); the model: fired %d paused %u waits on %d has_result "
                    "%d result (%d, %ld) (entry %d of %d)\n",
                    op, s, deferred_has_fired(d), deferred_pause_count(d), waits,
                    deferred_has_result(d), r.type, r.v, m[s].fired, m[s].paused,
                    m[s].waiting, model_has_result(s), m[s].r.type, m[s].r.v, m[s].pos,
                    m[s].n);
            fz_fail("a deferred's state differs from the model's");
        }
    }
}

/* ---- the operations ---------------------------------------------------------- */

/* Drop slot s and make a new one (how: 0 pending, 1 succeeded with x, 2
 * failed with x % 20 + 1).  The caller saw that nothing waits on s. */
static void reset(int s, int how, uint8_t x)
{
    deferred_t *d;
    int k, i;

    /* The continue entry of a dropped outer is skipped. */
    for (k = 0; k < NSLOTS; k++)
        for (i = m[k].pos; i < m[k].n; i++)
            if (m[k].e[i].kind == K_CONT && m[k].e[i].outer == s)
                m[k].e[i].dead = 1;
    memset(&m[s], 0, sizeof m[s]);
    m[s].waiting = -1;
    lib_next_id[s] = 0;
    gen[s]++;
    if (how == 0) {
        d = deferred_new();
    } else {
        m[s].fired = 1;
        m[s].r = how == 1 ? mv(V_INT, x) : mv(V_FAIL, x % 20 + 1);
        d = how == 1 ? deferred_succeed(lib_value(m[s].r))
                     : deferred_fail(deferred_value_take_failure(lib_value(m[s].r)));
    }
    FZ_CHECK(d != NULL, "making a deferred failed");
    fz_set_slot(slot, s, d);
}

static struct half read_half(fz_reader_t *in)
{
    struct half h;

    h.act = (uint8_t)(fz_byte(in) % (A_NACTIONS + 1));
    h.x = fz_byte(in);
    return h;
}

/* Whether another deferred holds slot s: waits on it, or has a chain_to()
 * entry for it still to run. */
static int held(int s)
{
    for (int k = 0; k < NSLOTS; k++) {
        if (m[k].waiting == s)
            return 1;
        for (int i = m[k].pos; i < m[k].n; i++)
            if (m[k].e[i].kind == K_CHAIN_TO && m[k].e[i].outer == s)
                return 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_reader_t in = {data, size};
    int ops = 0, s, rc;

    fz_setup();
    fz_begin();
    lib_trace.n = model_trace.n = 0;
    m_adds_left = lib_adds_left = NESTED_ADDS;
    m_side_left = lib_side_left = SIDE_EFFECTS;
    for (s = 0; s < NSLOTS; s++)
        reset(s, 0, 0); /* the slots are empty between inputs */
    while (fz_more(&in) && ops++ < MAX_OPS) {
        uint8_t op = fz_byte(&in) % 9;

        s = fz_byte(&in) % NSLOTS;
        switch (op) {
        case 0: {
            struct entry e;
            uint8_t flags;

            memset(&e, 0, sizeof e);
            e.kind = fz_byte(&in) & 3;
            e.h[0] = read_half(&in);
            e.h[1].act = A_NONE;
            if (e.kind == K_PAIR)
                e.h[1] = read_half(&in);
            flags = fz_byte(&in);
            FZ_TRACE("add slot %d kind %d (%d, %d) (%d, %d) flags %d", s, e.kind, e.h[0].act,
                     e.h[0].x, e.h[1].act, e.h[1].x, flags);
            if ((flags & 4) && has_fn(&e) &&
                (!m[s].fired || m[s].paused || m[s].waiting >= 0)) {
                /* Nothing runs in this add: the only allocation is its
                 * own (a block for the entries, unless the cache has one). */
                fz_fail_alloc_after(1);
                rc = lib_add(s, e, flags & 1, (flags >> 1) & 1, lib_next_id[s]);
                fz_fail_alloc_after(0);
                FZ_TRACE("  -> %d", rc);
                FZ_CHECK(rc == 0 || rc == -ENOMEM, "an add failed but for memory");
                if (rc == 0) {
                    lib_next_id[s]++;
                    model_append(s, e);
                }
                compare("add out of memory");
                break;
            }
            lib_add_checked(s, e, flags & 1, (flags >> 1) & 1);
            if (has_fn(&e)) {
                model_append(s, e);
                model_run(s);
            }
            compare("add");
            break;
        }
        case 1:
        case 2: {
            uint8_t x = fz_byte(&in);
            struct mval v = op == 1 ? mv(V_INT, x) : mv(V_FAIL, x % 20 + 1);

            FZ_TRACE("%s slot %d with %d", op == 1 ? "callback" : "errback", s, x);
            rc = op == 1 ? deferred_callback(slot[s], lib_value(v))
                         : deferred_errback(slot[s], deferred_value_take_failure(lib_value(v)));
            FZ_CHECK(rc == model_fire(s, v), "a fire's status differs from the model's");
            compare("fire");
            break;
        }
        case 3:
            FZ_TRACE("pause slot %d", s);
            FZ_CHECK(deferred_pause(slot[s]) == 0, "a pause failed");
            m[s].paused++;
            compare("pause");
            break;
        case 4:
            FZ_TRACE("unpause slot %d", s);
            rc = deferred_unpause(slot[s]);
            FZ_CHECK(rc == model_unpause(s), "an unpause's status differs from the model's");
            compare("unpause");
            break;
        case 5: {
            struct mval r;
            deferred_value_t v;

            FZ_TRACE("take slot %d", s);
            v = deferred_result_take(slot[s]);
            r = mval_of(v);
            deferred_value_release(v);
            if (!mval_eq(r, m[s].r))
                fz_fail("the result taken differs from the model's");
            m[s].r = mv(V_NONE, 0);
            compare("take");
            break;
        }
        case 6: {
            uint8_t x = fz_byte(&in);

            if (held(s))
                break;
            FZ_TRACE("new slot %d: %d", s, x);
            reset(s, x % 3, x);
            compare("new");
            break;
        }
        case 8: {
            int t = fz_byte(&in) % NSLOTS;
            struct entry e;

            FZ_TRACE("chain_to slot %d -> slot %d", s, t);
            if (t == s) {
                FZ_CHECK(deferred_chain_to(slot[s], slot[t]) == -EINVAL,
                         "a chain_to() of a deferred to itself was not refused");
                break;
            }
            if (t < s)
                break;
            FZ_CHECK(deferred_chain_to(slot[s], slot[t]) == 0, "a chain_to() failed");
            memset(&e, 0, sizeof e);
            e.kind = K_CHAIN_TO;
            e.outer = t;
            model_append(s, e);
            model_run(s);
            compare("chain_to");
            break;
        }
        default:
            FZ_TRACE("cancel slot %d", s);
            FZ_CHECK(deferred_cancel(slot[s]) == 0, "a cancel failed");
            model_cancel(s);
            compare("cancel");
            break;
        }
    }
    /* Outer deferreds first: what they wait on is released after. */
    for (s = 0; s < NSLOTS; s++)
        fz_set_slot(slot, s, NULL);
    fz_end();
    return 0;
}
