/*
 * fuzz/fuzz-core.c: a libFuzzer harness for deferreds, multi-fire
 * deferreds, the combinators and the synchronisation primitives.
 *
 * The input is a program of byte-coded operations over a table of
 * NSLOTS deferreds (each slot holds one reference, the harness's).  Each
 * operation reads an opcode byte and its argument bytes; missing bytes
 * read as zero.  Callbacks, cancellers, flow hooks and semaphore runs are
 * given arguments made by fz_arg_new() that say what they do when they
 * run: return a value, a failure, a deferred of the table or their own
 * deferred, or act on another slot (fire, cancel, unref, pause, unpause,
 * add a callback) before passing their value on.  Every value is a
 * tracked token.  At the end every reference is dropped and fz_end()
 * checks that every value was released once, every destroy function
 * called once and every block freed.
 *
 * The harness keeps to the API's contracts: it holds a reference of its
 * own on a deferred for the length of each call it makes on it, so that a
 * callback dropping the table's reference cannot free it under the call.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz-util.h"

#define NSLOTS 8
/* Callbacks that act on other slots may trigger each other: each input
 * gets this many such actions, after which they pass their value on. */
#define SIDE_BUDGET 64
#define MAX_OPS 512

static deferred_t *slot[NSLOTS];
static deferred_semaphore_t *sem;
static deferred_lock_t *lock;
static deferred_queue_t *queue;

/* What a callback (or a semaphore run's fn) does. */
enum cb_action {
    CB_PASS,          /* return v */
    CB_TOKEN,         /* release v, return a new token */
    CB_INT,           /* release v, return an integer */
    CB_FAIL,          /* release v, return a new failure */
    CB_SLOT,          /* release v, return the deferred of slot x (chaining) */
    CB_SELF,          /* release v, return its own deferred */
    CB_SUCCEED,       /* release v, return deferred_succeed(token) */
    CB_FAILED,        /* release v, return deferred_fail(failure) */
    CB_NEW_IN_SLOT,   /* release v, return a new deferred, also put in slot x */
    CB_FIRE_SLOT,     /* fire slot x with a token, return v */
    CB_ERRBACK_SLOT,  /* errback slot x, return v */
    CB_CANCEL_SLOT,   /* cancel slot x, return v */
    CB_UNREF_SLOT,    /* drop slot x's reference, return v */
    CB_ADD_TO_SLOT,   /* add a CB_TOKEN callback to slot x, return v */
    CB_PAUSE_SLOT,    /* pause slot x, return v */
    CB_UNPAUSE_SLOT,  /* unpause slot x, return v */
    CB_TAKE_SLOT,     /* take slot x's result and release it, return v */
    CB_RECOVER,       /* a failure becomes a token; a value passes */
    CB_NACTIONS
};

struct cb {
    int action;
    int x;               /* the slot it acts on */
    deferred_t *self;    /* the deferred it was added to (borrowed) */
    int single;          /* added to a single-shot deferred: runs at most once */
    int runs;
    int full;            /* given with a destroy function */
};

/* What a canceller does. */
enum cancel_action {
    CN_NOTHING,
    CN_FIRE_SELF,
    CN_ERRBACK_SELF,
    CN_CANCEL_SLOT,
    CN_FIRE_SLOT,
    CN_UNREF_SLOT,
    CN_NACTIONS
};

struct canceller {
    int action;
    int x;
    int runs;
};

/* What a flow hook does. */
struct flow {
    int action; /* 0 nothing, 1 emit a token when resumed, 2 cancel when paused,
                   3 pause slot x when paused */
    int x;
};

static deferred_failure_t *new_failure(uint8_t b)
{
    static const int codes[] = {EIO, ECANCELED, ENOMEM, ETIMEDOUT, EINVAL, EPERM};

    return deferred_failure_new(DEFERRED_DOMAIN_USER, codes[b % 6], b & 0x80 ? NULL : "fuzz failure %u", b);
}

/* Tracing (FUZZ_TRACE): each call of the API that returns a status is
 * printed with it. */
/* A reference of the harness's own for the length of a call. */
static deferred_t *hold(int i)
{
    FZ_TRACE("  d = slot[%d] = %p", i, (void *)slot[i]);
    return deferred_ref(slot[i]);
}

static void set_slot(int i, deferred_t *d)
{
    fz_set_slot(slot, i, d);
}

static deferred_fn cb_fn_for(int n);
static struct cb *cb_new(int action, int x, deferred_t *self, int full);

static void add_token_callback(deferred_t *d)
{
    struct cb *c = cb_new(CB_TOKEN, 0, d, 1);

    TRI(deferred_add_callback_full(d, cb_fn_for(0), c, fz_destroy));
}

/* Act on slot x from inside a callback or a canceller. */
static void act_on_slot(int action, int x)
{
    deferred_t *d;

    if (!slot[x] || !fz_side_effect_allowed())
        return;
    d = hold(x);
    switch (action) {
    case CB_FIRE_SLOT:
        TRI(deferred_callback(d, fz_token()));
        break;
    case CB_ERRBACK_SLOT:
        TRI(deferred_errback(d, new_failure((uint8_t)x)));
        break;
    case CB_CANCEL_SLOT:
        TRI(deferred_cancel(d));
        break;
    case CB_UNREF_SLOT:
        if (slot[x] == d)
            set_slot(x, NULL);
        break;
    case CB_ADD_TO_SLOT:
        add_token_callback(d);
        break;
    case CB_PAUSE_SLOT:
        TRI(deferred_pause(d));
        break;
    case CB_UNPAUSE_SLOT:
        TRI(deferred_unpause(d));
        break;
    case CB_TAKE_SLOT:
        deferred_value_release(deferred_result_take(d));
        break;
    }
    deferred_unref(d);
}

static deferred_value_t run_cb(struct cb *c, deferred_value_t v)
{
    FZ_CHECK(!c->full || !fz_arg_destroyed(c), "a callback ran after its argument was destroyed");
    c->runs++;
    FZ_TRACE("  callback %p of %p runs: action %d, slot %d, %s", (void *)c, (void *)c->self,
             c->action, c->x, deferred_value_is_failure(v) ? "failure" : "value");
    FZ_CHECK(!c->single || c->runs == 1, "a callback of a single-shot deferred ran twice");
    FZ_CHECK(!deferred_value_is_deferred(v), "a callback was given a deferred as its value");
    switch (c->action) {
    case CB_PASS:
        return v;
    case CB_TOKEN:
        deferred_value_release(v);
        return fz_token();
    case CB_INT:
        deferred_value_release(v);
        return deferred_value_int(c->x + 1);
    case CB_FAIL:
        deferred_value_release(v);
        return deferred_value_failure(new_failure((uint8_t)c->x));
    case CB_SLOT:
        deferred_value_release(v);
        /* (pending/core/chain-cycle-leak: waiting on a deferred that
         * waits makes cycles the library does not see.) */
        if (slot[c->x] && !(fz_avoid_pending && deferred_is_paused(slot[c->x])))
            return deferred_value_deferred(deferred_ref(slot[c->x]));
        return fz_token();
    case CB_SELF:
        deferred_value_release(v);
        if (c->self && !fz_avoid_pending)
            return deferred_value_deferred(deferred_ref(c->self));
        return fz_token();
    case CB_SUCCEED:
        deferred_value_release(v);
        return deferred_value_deferred(deferred_succeed(fz_token()));
    case CB_FAILED:
        deferred_value_release(v);
        return deferred_value_deferred(deferred_fail(new_failure((uint8_t)c->x)));
    case CB_NEW_IN_SLOT: {
        deferred_t *d;

        deferred_value_release(v);
        d = deferred_new();
        if (!d)
            return deferred_value_failure(NULL);
        set_slot(c->x, deferred_ref(d));
        return deferred_value_deferred(d);
    }
    case CB_RECOVER:
        if (deferred_value_is_failure(v)) {
            deferred_value_release(v);
            return fz_token();
        }
        return v;
    default:
        act_on_slot(c->action, c->x);
        return v;
    }
}

/* Several functions, so that the library sees distinct callbacks. */
static deferred_value_t cb_a(deferred_value_t v, void *arg) { return run_cb(arg, v); }
static deferred_value_t cb_b(deferred_value_t v, void *arg) { return run_cb(arg, v); }
static deferred_value_t cb_c(deferred_value_t v, void *arg) { return run_cb(arg, v); }

static deferred_fn cb_fn_for(int n)
{
    static const deferred_fn fns[] = {cb_a, cb_b, cb_c};

    return fns[n % 3];
}

static struct cb *cb_new(int action, int x, deferred_t *self, int full)
{
    struct cb *c = fz_arg_new(sizeof *c, full);

    c->action = action % CB_NACTIONS;
    c->x = x % NSLOTS;
    c->self = self;
    c->single = self && !deferred_is_multi(self);
    c->full = full;
    FZ_TRACE("  callback arg %p: action %d, slot %d, full %d", (void *)c, c->action, c->x, full);
    return c;
}

/* ---- cancellers and flow hooks ------------------------------------------ */

static void canceller(deferred_t *d, void *arg)
{
    struct canceller *c = arg;

    FZ_CHECK(!fz_arg_destroyed(c), "a canceller ran after its argument was destroyed");
    c->runs++;
    FZ_TRACE("  canceller of %p runs: action %d, slot %d", (void *)d, c->action, c->x);
    FZ_CHECK(c->runs == 1, "a canceller ran twice");
    switch (c->action) {
    case CN_FIRE_SELF:
        TRI(deferred_callback(d, fz_token()));
        break;
    case CN_ERRBACK_SELF:
        TRI(deferred_errback(d, new_failure((uint8_t)c->x)));
        break;
    case CN_CANCEL_SLOT:
        act_on_slot(CB_CANCEL_SLOT, c->x);
        break;
    case CN_FIRE_SLOT:
        act_on_slot(CB_FIRE_SLOT, c->x);
        break;
    case CN_UNREF_SLOT:
        act_on_slot(CB_UNREF_SLOT, c->x);
        break;
    default:
        break;
    }
}

static void flow_hook(deferred_t *d, bool paused, void *arg)
{
    struct flow *f = arg;

    if (!fz_side_effect_allowed())
        return;
    switch (f->action) {
    case 1:
        if (!paused)
            TRI(deferred_multi_emit(d, fz_token()));
        break;
    case 2:
        /* (pending/core/uaf-merge-unhold-after-input-freed.) */
        if (paused && !fz_avoid_pending)
            TRI(deferred_cancel(d));
        break;
    case 3:
        if (paused)
            act_on_slot(CB_PAUSE_SLOT, f->x);
        break;
    }
}

/* ---- operations --------------------------------------------------------- */

enum op {
    OP_NEW,
    OP_NEW_CANCELLABLE,
    OP_NEW_MULTI,
    OP_SUCCEED,
    OP_ADD,
    OP_ADD_FULL,
    OP_CHAIN_TO,
    OP_CALLBACK,
    OP_ERRBACK,
    OP_PAUSE,
    OP_UNPAUSE,
    OP_CANCEL,
    OP_REF,
    OP_UNREF,
    OP_COMBINE,
    OP_SEM,
    OP_LOCK,
    OP_QUEUE,
    OP_EMIT,
    OP_FINISH,
    OP_END,
    OP_RESULT,
    OP_TAKE,
    OP_FAIL_ALLOC,
    OP_ADD2,
    OP_FIRE2,
    OP_NOPS
};

/* Add callbacks to d: kind picks the function of the API. */
static void op_add(fz_reader_t *r, int full)
{
    int s = fz_byte(r) % NSLOTS;
    uint8_t kind = fz_byte(r);
    uint8_t a1 = fz_byte(r), x1 = fz_byte(r);
    deferred_t *d;
    struct cb *c1, *c2;
    deferred_fn f1 = cb_fn_for(a1), f2 = cb_fn_for(x1);

    if (!slot[s])
        return;
    d = hold(s);
    c1 = cb_new(a1, x1, d, full);
    switch (kind % 5) {
    case 0:
        if (full)
            TRI(deferred_add_callback_full(d, f1, c1, fz_destroy));
        else
            TRI(deferred_add_callback(d, f1, c1));
        break;
    case 1:
        if (full)
            TRI(deferred_add_errback_full(d, f1, c1, fz_destroy));
        else
            TRI(deferred_add_errback(d, f1, c1));
        break;
    case 2:
        if (full)
            TRI(deferred_add_both_full(d, f1, c1, fz_destroy));
        else
            TRI(deferred_add_both(d, f1, c1));
        break;
    case 3: {
        uint8_t a2 = fz_byte(r), x2 = fz_byte(r);

        c2 = cb_new(a2, x2, d, full);
        if (full)
            TRI(deferred_add_callbacks_full(d, f1, c1, fz_destroy, f2, c2, fz_destroy));
        else
            TRI(deferred_add_callbacks(d, f1, c1, f2, c2));
        break;
    }
    case 4:
        /* One half NULL: the result passes through it. */
        if (full)
            (void)deferred_add_callbacks_full(d, kind & 8 ? f1 : NULL, c1,
                                              kind & 8 ? fz_destroy : NULL,
                                              kind & 8 ? NULL : f1, c1,
                                              kind & 8 ? NULL : fz_destroy);
        else
            (void)deferred_add_callbacks(d, kind & 8 ? f1 : NULL, c1,
                                         kind & 8 ? NULL : f1, c1);
        break;
    }
    deferred_unref(d);
}

static void op_new_cancellable(fz_reader_t *r)
{
    int s = fz_byte(r) % NSLOTS;
    uint8_t a = fz_byte(r), x = fz_byte(r);
    int multi = a & 0x80;
    struct canceller *c = fz_arg_new(sizeof *c, 1);
    deferred_t *d;

    c->action = (a & 0x7f) % CN_NACTIONS;
    c->x = x % NSLOTS;
    if (multi)
        d = deferred_multi_new_cancellable(canceller, c, fz_destroy);
    else
        d = deferred_new_cancellable(canceller, c, fz_destroy);
    set_slot(s, d);
}

/* The flags of gather and list the input may set (unknown bits are an
 * error the combinators must report, not something to fuzz). */
#ifdef DEFERRED_KEEP_ERRORS
#define GATHER_FLAGS (DEFERRED_CONSUME_ERRORS | DEFERRED_KEEP_ERRORS)
#else
#define GATHER_FLAGS DEFERRED_CONSUME_ERRORS
#endif
#define LIST_FLAGS (GATHER_FLAGS | DEFERRED_FIRE_ON_SUCCESS | DEFERRED_FIRE_ON_FAILURE)

static void op_combine(fz_reader_t *r)
{
    uint8_t kind = fz_byte(r), mask = fz_byte(r), flags = fz_byte(r);
    int dest = fz_byte(r) % NSLOTS;
    deferred_t *in[NSLOTS + 1];
    size_t n = 0;
    int i;
    deferred_t *out = NULL;

    for (i = 0; i < NSLOTS; i++)
        if ((mask & (1u << i)) && slot[i])
            in[n++] = slot[i];
    if ((flags & 0x10) && n > 0)
        in[n++] = in[0]; /* an input listed twice */
    FZ_TRACE("  %s of %zu inputs (%p %p %p ...), flags %#x -> slot[%d]",
             (const char *const[]){"gather", "list", "race", "merge"}[kind % 4], n,
             n > 0 ? (void *)in[0] : NULL, n > 1 ? (void *)in[1] : NULL,
             n > 2 ? (void *)in[2] : NULL, flags, dest);
    switch (kind % 4) {
    case 0:
        out = deferred_gather(in, n, flags & GATHER_FLAGS);
        break;
    case 1:
        out = deferred_list(in, n, flags & LIST_FLAGS);
        break;
    case 2:
        out = deferred_race(in, n);
        break;
    case 3:
        out = deferred_merge(in, n);
        if (out && (flags & 0x20))
            TRI(deferred_unpause(out));
        break;
    }
    if (out || !(flags & 0x40))
        set_slot(dest, out);
}

static deferred_t *run_fn_deferred(fz_reader_t *r, int lock_it)
{
    uint8_t a = fz_byte(r);
    uint8_t x = fz_byte(r);
    struct cb *c;

    /* (pending/core/lock-run-dropped-never-destroyed: a waiting run that
     * was dropped never destroys its argument.) */
    if (fz_avoid_pending)
        return lock_it ? deferred_lock_acquire(lock) : deferred_semaphore_acquire(sem);
    c = cb_new(a, x, NULL, 1);

    if (lock_it)
        return deferred_lock_run(lock, cb_fn_for(c->action), c, fz_destroy);
    return deferred_semaphore_run(sem, cb_fn_for(c->action), c, fz_destroy);
}

static void op_sem(fz_reader_t *r)
{
    uint8_t what = fz_byte(r);
    int s = fz_byte(r) % NSLOTS;

    if (!sem) {
        sem = deferred_semaphore_new(1 + what % 3);
        if (!sem)
            return;
    }
    switch ((what >> 2) % 5) {
    case 0:
        set_slot(s, deferred_semaphore_acquire(sem));
        break;
    case 1:
        TRI(deferred_semaphore_release(sem));
        break;
    case 2:
        set_slot(s, run_fn_deferred(r, 0));
        break;
    case 3:
        deferred_semaphore_unref(sem);
        sem = NULL;
        break;
    case 4:
        (void)deferred_semaphore_tokens(sem);
        (void)deferred_semaphore_waiting(sem);
        FZ_CHECK(deferred_semaphore_tokens(sem) <= deferred_semaphore_limit(sem),
                 "a semaphore has more free tokens than its limit");
        break;
    }
}

static void op_lock(fz_reader_t *r)
{
    uint8_t what = fz_byte(r);
    int s = fz_byte(r) % NSLOTS;

    if (!lock) {
        lock = deferred_lock_new();
        if (!lock)
            return;
    }
    switch (what % 5) {
    case 0:
        set_slot(s, deferred_lock_acquire(lock));
        break;
    case 1:
        TRI(deferred_lock_release(lock));
        break;
    case 2:
        set_slot(s, run_fn_deferred(r, 1));
        break;
    case 3:
        deferred_lock_unref(lock);
        lock = NULL;
        break;
    case 4:
        (void)deferred_lock_is_locked(lock);
        (void)deferred_lock_waiting(lock);
        break;
    }
}

static void op_queue(fz_reader_t *r)
{
    uint8_t what = fz_byte(r);
    int s = fz_byte(r) % NSLOTS;

    if (!queue) {
        size_t size = what & 0x10 ? DEFERRED_QUEUE_UNLIMITED : (what >> 5) % 4;
        size_t backlog = what & 0x08 ? DEFERRED_QUEUE_UNLIMITED : (what >> 5) % 3;

        queue = deferred_queue_new(size, backlog);
        if (!queue)
            return;
    }
    switch (what % 5) {
    case 0:
        TRI(deferred_queue_put(queue, fz_token()));
        break;
    case 1:
        TRI(deferred_queue_put(queue, deferred_value_failure(new_failure(what))));
        break;
    case 2: {
        deferred_t *g = NULL;

        if (deferred_queue_get(queue, &g) == 0)
            FZ_CHECK(g != NULL, "deferred_queue_get returned 0 without a deferred");
        else
            FZ_CHECK(g == NULL, "deferred_queue_get failed but set a deferred");
        set_slot(s, g);
        break;
    }
    case 3:
        deferred_queue_unref(queue);
        queue = NULL;
        break;
    case 4:
        (void)deferred_queue_pending(queue);
        (void)deferred_queue_waiting(queue);
        break;
    }
}

static const char *const op_names[OP_NOPS] = {
    "new", "new_cancellable", "new_multi", "succeed", "add", "add_full",
    "chain_to", "callback", "errback", "pause", "unpause", "cancel", "ref",
    "unref", "combine", "sem", "lock", "queue", "emit", "finish", "end",
    "result", "take", "fail_alloc", "add", "callback",
};

static void one_op(fz_reader_t *r)
{
    uint8_t op = fz_byte(r) % OP_NOPS;
    int s, t;
    deferred_t *d;

    if (fz_tracing) {
        char args[64] = "";
        size_t i, k = 0;

        for (i = 0; i < r->n && i < 8; i++)
            k += (size_t)snprintf(args + k, sizeof args - k, " %02x", r->p[i]);
        FZ_TRACE("op %s, next bytes%s; slots %p %p %p %p %p %p %p %p", op_names[op], args,
                 (void *)slot[0], (void *)slot[1], (void *)slot[2], (void *)slot[3],
                 (void *)slot[4], (void *)slot[5], (void *)slot[6], (void *)slot[7]);
    }

    switch (op) {
    case OP_NEW:
        s = fz_byte(r) % NSLOTS;
        set_slot(s, deferred_new());
        break;
    case OP_NEW_CANCELLABLE:
        op_new_cancellable(r);
        break;
    case OP_NEW_MULTI: {
        uint8_t b = fz_byte(r);

        s = b % NSLOTS;
        set_slot(s, deferred_multi_new());
        /* A flow hook only on a multi-fire deferred made here: a merge's
         * stream keeps its own. */
        if (slot[s] && (b >> 3) % 4) {
            struct flow *f = fz_arg_new(sizeof *f, 0);

            f->action = (b >> 3) % 4;
            f->x = (b >> 5) % NSLOTS;
            TRI(deferred_multi_set_flow(slot[s], flow_hook, f));
        }
        break;
    }
    case OP_SUCCEED: {
        uint8_t b = fz_byte(r);

        s = b % NSLOTS;
        if (b & 0x80)
            set_slot(s, deferred_fail(new_failure(b)));
        else
            set_slot(s, deferred_succeed(b & 0x40 ? deferred_value_int(b) : fz_token()));
        break;
    }
    case OP_ADD:
    case OP_ADD2:
        op_add(r, 0);
        break;
    case OP_ADD_FULL:
        op_add(r, 1);
        break;
    case OP_CHAIN_TO:
        s = fz_byte(r) % NSLOTS;
        t = fz_byte(r) % NSLOTS;
        /* (pending/core/leak-chain-to-race-of-itself.) */
        if (slot[s] && slot[t] && !fz_avoid_pending) {
            deferred_t *a = hold(s), *b = hold(t);

            TRI(deferred_chain_to(a, b));
            deferred_unref(a);
            deferred_unref(b);
        }
        break;
    case OP_CALLBACK:
    case OP_FIRE2: {
        uint8_t b = fz_byte(r);

        s = b % NSLOTS;
        if (!slot[s])
            break;
        d = hold(s);
        if (b & 0x80)
            TRI(deferred_callback(d, deferred_value_none()));
        else if (b & 0x40)
            TRI(deferred_callback(d, deferred_value_int(b)));
        else
            TRI(deferred_callback(d, fz_token()));
        deferred_unref(d);
        break;
    }
    case OP_ERRBACK: {
        uint8_t b = fz_byte(r);

        s = b % NSLOTS;
        if (!slot[s])
            break;
        d = hold(s);
        TRI(deferred_errback(d, new_failure(b)));
        deferred_unref(d);
        break;
    }
    case OP_PAUSE:
    case OP_UNPAUSE:
    case OP_CANCEL:
    case OP_TAKE:
        s = fz_byte(r) % NSLOTS;
        if (!slot[s])
            break;
        d = hold(s);
        if (op == OP_PAUSE)
            TRI(deferred_pause(d));
        else if (op == OP_UNPAUSE)
            TRI(deferred_unpause(d));
        else if (op == OP_CANCEL)
            TRI(deferred_cancel(d));
        else {
            deferred_value_t v = deferred_result_take(d);

            FZ_CHECK(!deferred_value_is_deferred(v), "a deferred's result is a deferred");
            deferred_value_release(v);
            (void)deferred_has_result(d);
            (void)deferred_is_paused(d);
            (void)deferred_has_fired(d);
        }
        deferred_unref(d);
        break;
    case OP_REF:
        s = fz_byte(r) % NSLOTS;
        t = fz_byte(r) % NSLOTS;
        set_slot(t, deferred_ref(slot[s]));
        break;
    case OP_UNREF:
        s = fz_byte(r) % NSLOTS;
        set_slot(s, NULL);
        break;
    case OP_COMBINE:
        op_combine(r);
        break;
    case OP_SEM:
        op_sem(r);
        break;
    case OP_LOCK:
        op_lock(r);
        break;
    case OP_QUEUE:
        op_queue(r);
        break;
    case OP_EMIT:
    case OP_FINISH: {
        uint8_t b = fz_byte(r);
        deferred_value_t v;

        s = b % NSLOTS;
        if (!slot[s])
            break;
        v = b & 0x80 ? deferred_value_failure(new_failure(b)) : fz_token();
        d = hold(s);
        if (op == OP_EMIT)
            TRI(deferred_multi_emit(d, v));
        else
            TRI(deferred_multi_finish(d, v));
        (void)deferred_multi_queued(d);
        (void)deferred_multi_rows(d);
        deferred_unref(d);
        break;
    }
    case OP_END:
        s = fz_byte(r) % NSLOTS;
        t = fz_byte(r) % NSLOTS;
        if (slot[s])
            set_slot(t, deferred_multi_when_finished(slot[s]));
        break;
    case OP_RESULT:
        s = fz_byte(r) % NSLOTS;
        if (slot[s]) {
            deferred_value_t v = deferred_result(slot[s]);

            FZ_CHECK(!deferred_value_is_deferred(v), "a deferred's result is a deferred");
            if (fz_is_live_token(v) || deferred_value_is_failure(v) || deferred_value_is_none(v) ||
                v.release == NULL || deferred_value_is_int(v) || deferred_value_get_array(v) ||
                deferred_value_get_indexed(v))
                break;
            fz_fail("a deferred's result is neither a token, a failure, an array nor an indexed value");
        }
        break;
    case OP_FAIL_ALLOC:
        /* (pending/core/oom-free-pending-list-leak.) */
        if (fz_avoid_pending)
            break;
        fz_fail_alloc_after(1 + fz_byte(r) % 16);
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_reader_t r = {data, size};
    int i, ops = 0;

    fz_begin();
    fz_side_budget = SIDE_BUDGET;
    while (fz_more(&r) && ops++ < MAX_OPS)
        one_op(&r);
    fz_fail_alloc_after(0);

    /* Drop every reference: the table's, then the primitives'. */
    for (i = 0; i < NSLOTS; i++)
        set_slot(i, NULL);
    deferred_semaphore_unref(sem);
    sem = NULL;
    deferred_lock_unref(lock);
    lock = NULL;
    deferred_queue_unref(queue);
    queue = NULL;
    /* Callbacks run by those drops may have filled slots again. */
    for (i = 0; i < NSLOTS; i++)
        set_slot(i, NULL);
    fz_end();
    return 0;
}
