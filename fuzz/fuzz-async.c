/*
 * fuzz/fuzz-async.c: a libFuzzer harness for async functions
 * (deferred/async.h): stackless coroutines over deferreds, multi-fire
 * deferreds and processes.
 *
 * The input is a program of byte-coded operations over a table of NSLOTS
 * deferreds (each slot holds one reference, the harness's), as in
 * fuzz-core.c.  OP_CORO makes a coroutine whose frame holds a small
 * program read from the bytes: a sequence of steps (await a slot's
 * deferred, with DEFERRED_AWAIT(), DEFERRED_AWAIT_BORROWED() or
 * DEFERRED_AWAIT_TRY(), a failure handled or passed on; an async-for over a slot's multi-fire deferred,
 * with an await in its block and a break; return a token or a failure;
 * fire or cancel a slot from inside the body) and a cleanup (release the
 * token the frame holds, and maybe await a slot or replace the outcome).
 * The coroutine is then started into a slot, or discarded unstarted.
 * OP_CONSUMER makes a process of an array or multi-fire producer and a
 * coroutine consumer (deferred_async_consumer()) running such a program
 * over deferred_async_input().  The other operations drive the slots:
 * fire, errback, cancel, pause, unpause, ref, unref, emit and finish
 * rows, allocation failures.  Every value is a tracked token; at the end
 * every reference is dropped (coroutines that wait on a freed deferred are
 * dropped) and fz_end() checks that every value was released once and
 * every block freed.
 *
 * The bodies keep async.h's rules: no declaration with an initializer in
 * the body's own block, one await per line, no await inside a switch of
 * the body's (the steps are an if-chain).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz-util.h"
#include "deferred/async.h"

#define NSLOTS 6
#define NSTEPS 6
#define SIDE_BUDGET 48
#define MAX_OPS 256

#define MAX_MULTIS 32

static deferred_t *slot[NSLOTS];
/* Every multi-fire deferred made (a reference of the harness's): at the
 * end each is unpaused and finished, so that the streams iterating them
 * end (a process keeps itself until its finish; one whose source nobody
 * can reach would never end, by process.h's contract). */
static deferred_t *multis[MAX_MULTIS];
static int nmultis;
/* The deferreds of the coroutines and processes made (not references),
 * with the serial number of their coroutine: a coroutine awaits only
 * those of older ones, so that no two coroutines await each other (a
 * cycle each holds the other in, never freed; awaiting itself is the same,
 * and the await of a deferred that waits on you is a deadlock). */
static struct {
    const deferred_t *d;
    int serial;
} made[MAX_OPS + 1];
static int nmade, serial;

static void made_set(const deferred_t *d, int ser)
{
    int i;

    for (i = 0; i < nmade; i++)
        if (made[i].d == d) {
            made[i].serial = ser;
            return;
        }
    if (nmade < MAX_OPS + 1) {
        made[nmade].d = d;
        made[nmade++].serial = ser;
    }
}

static int made_serial(const deferred_t *d)
{
    int i;

    for (i = 0; i < nmade; i++)
        if (made[i].d == d)
            return made[i].serial;
    return 0;
}

/* The steps of a coroutine's program. */
enum step_kind {
    ST_AWAIT,     /* await slot x; the value is released; flag: borrowed
                     (DEFERRED_AWAIT_BORROWED(), the slot's own deferred
                     when the body may await it) */
    ST_TRY,       /* await slot x with TRY: a failure is handled, or (flag)
                     returned */
    ST_FOR,       /* async-for over slot x's multi-fire rows (the input of a
                     consumer coroutine); flag: await slot y in the block;
                     break after k items (k = 0: never) */
    ST_RETURN,    /* return a token */
    ST_FAIL,      /* fail */
    ST_FIRE,      /* fire slot x with a token (side effect) */
    ST_CANCEL,    /* cancel slot x (side effect) */
    ST_NKINDS
};

struct step {
    uint8_t kind;
    uint8_t x;
    uint8_t y;
    uint8_t k;
    uint8_t flag;
};

/* What the cleanups do besides releasing the held token. */
enum fin_kind {
    FIN_NOTHING,
    FIN_AWAIT_TRY, /* await slot x with TRY, release what it gives */
    FIN_AWAIT,     /* await slot x (a failure replaces the outcome) */
    FIN_RETURN,    /* replace the outcome with a token */
    FIN_NKINDS
};

struct frame {
    deferred_async_t co;
    int n;
    struct step st[NSTEPS];
    int fin, finx;
    int pc;
    int count;
    int consumer;
    int has_held;
    int serial;
    deferred_value_t held;
    deferred_t *lent; /* a borrowed await's deferred (the slot's reference) */
    deferred_value_t v;
    deferred_value_t item;
    deferred_async_iter_t it;
    deferred_async_iter_t *in;
};

static deferred_failure_t *new_failure(uint8_t b)
{
    static const int codes[] = {EIO, ECANCELED, ENOMEM, ETIMEDOUT, EINVAL, EPERM};

    return deferred_failure_new(DEFERRED_DOMAIN_USER, codes[b % 6], b & 0x80 ? NULL : "fuzz failure %u", b);
}

static void set_slot(int i, deferred_t *d)
{
    fz_set_slot(slot, i, d);
}

/* What a body awaits for slot x: a new reference to its deferred; a
 * deferred fired with a token when the slot is empty or holds the
 * deferred of the coroutine itself or of a younger one (see made[]), and
 * with FUZZ_AVOID_PENDING in a consumer coroutine (which was then never
 * to be dropped: regressions/async/
 * leak-dropped-consumer-coroutine-keeps-process, fixed; the avoidance is
 * kept so that an old campaign's setting still means what it meant). */
static deferred_t *await_target(struct frame *f, int x)
{
    deferred_t *d = slot[x % NSLOTS];

    FZ_TRACE("  coroutine %p awaits slot[%d] = %p", (void *)f, x % NSLOTS, (void *)d);
    if (d && made_serial(d) < f->serial && !(f->consumer && fz_avoid_pending))
        return deferred_ref(d);
    return deferred_succeed(fz_token());
}

/* What a body awaits borrowed for slot x: the slot's deferred itself,
 * when await_target() would give a reference to it; else NULL (the body
 * then takes what await_target() gives). */
static deferred_t *borrow_target(struct frame *f, int x)
{
    deferred_t *d = slot[x % NSLOTS];

    if (d && made_serial(d) < f->serial && !(f->consumer && fz_avoid_pending)) {
        FZ_TRACE("  coroutine %p borrows slot[%d] = %p", (void *)f, x % NSLOTS, (void *)d);
        return d;
    }
    return NULL;
}

static void release_value(deferred_value_t v)
{
    FZ_CHECK(!deferred_value_is_deferred(v), "an await gave a deferred");
    deferred_value_release(v);
}

/* With FUZZ_AVOID_PENDING no allocation fails in a cancel
 * (regressions/async/uaf-second-cancel-oom-rearmed-target, fixed). */
static void avoid_oom_in_cancel(void)
{
    if (fz_avoid_pending)
        fz_fail_alloc_after(0);
}

static void body_side_effect(const struct step *s)
{
    deferred_t *d = slot[s->x % NSLOTS];

    if (!d || !fz_side_effect_allowed())
        return;
    /* (regressions/async/uaf-cancel-during-finish-frees-rearm-target, fixed.) */
    if (s->kind == ST_CANCEL && fz_avoid_pending && made_serial(d))
        return;
    d = deferred_ref(d);
    if (s->kind == ST_FIRE) {
        TRI(deferred_callback(d, fz_token()));
    } else {
        avoid_oom_in_cancel();
        TRI(deferred_cancel(d));
    }
    deferred_unref(d);
}

/* Open the async-for of step s: 1 when the FOR is to run. */
static int open_for(struct frame *f, const struct step *s)
{
    deferred_t *d;
    int rc;

    if (f->consumer) {
        f->in = deferred_async_input(&f->co);
        FZ_CHECK(f->in != NULL, "a consumer coroutine has no input");
        return 1;
    }
    f->in = &f->it;
    d = slot[s->x % NSLOTS];
    if (!d)
        return 0;
    d = deferred_ref(d);
    rc = deferred_async_iter_open_multi(&f->co, &f->it, d);
    FZ_TRACE("  iter_open_multi(%p) -> %d", (void *)d, rc);
    deferred_unref(d);
    return rc == 0 || rc == -ENOMEM;
}

static int body(void *frame)
{
    struct frame *f = frame;

    DEFERRED_ASYNC_BEGIN(f);
    FZ_TRACE("  coroutine %p begins", (void *)f);
    for (f->pc = 0; f->pc < f->n; f->pc++) {
        if (f->st[f->pc].kind == ST_AWAIT) {
            f->lent = f->st[f->pc].flag ? borrow_target(f, f->st[f->pc].x) : NULL;
            if (f->lent) {
                DEFERRED_AWAIT_BORROWED(f, f->lent, f->v);
            } else {
                DEFERRED_AWAIT(f, await_target(f, f->st[f->pc].x), f->v);
            }
            FZ_TRACE("  coroutine %p: await at step %d gave a value", (void *)f, f->pc);
            release_value(f->v);
        } else if (f->st[f->pc].kind == ST_TRY) {
            DEFERRED_AWAIT_TRY(f, await_target(f, f->st[f->pc].x), f->v);
            FZ_TRACE("  coroutine %p: try at step %d gave a %s", (void *)f, f->pc,
                     deferred_value_is_failure(f->v) ? "failure" : "value");
            if (deferred_value_is_failure(f->v) && f->st[f->pc].flag)
                DEFERRED_ASYNC_RETURN(f, f->v);
            release_value(f->v);
        } else if (f->st[f->pc].kind == ST_FOR) {
            if (!open_for(f, &f->st[f->pc]))
                continue;
            f->count = 0;
            DEFERRED_ASYNC_FOR(f, f->in, f->item) {
                FZ_TRACE("  coroutine %p: async-for item %d", (void *)f, f->count);
                release_value(f->item);
                f->count++;
                if (f->st[f->pc].flag) {
                    DEFERRED_AWAIT_TRY(f, await_target(f, f->st[f->pc].y), f->v);
                    release_value(f->v);
                }
                if (f->st[f->pc].k && f->count >= f->st[f->pc].k)
                    break;
            }
            FZ_TRACE("  coroutine %p: async-for done after %d items", (void *)f, f->count);
        } else if (f->st[f->pc].kind == ST_RETURN) {
            DEFERRED_ASYNC_RETURN(f, fz_token());
        } else if (f->st[f->pc].kind == ST_FAIL) {
            DEFERRED_ASYNC_FAIL(f, new_failure(f->st[f->pc].x));
        } else {
            body_side_effect(&f->st[f->pc]);
        }
    }
    DEFERRED_ASYNC_RETURN(f, fz_token());
    DEFERRED_ASYNC_FINALLY(f);
    FZ_TRACE("  coroutine %p: cleanups (%s)", (void *)f,
             deferred_async_dropped(&f->co) ? "dropped" : "not dropped");
    if (f->has_held) {
        f->has_held = 0;
        release_value(f->held);
    }
    if (f->fin == FIN_AWAIT_TRY) {
        DEFERRED_AWAIT_TRY(f, await_target(f, f->finx), f->v);
        release_value(f->v);
    } else if (f->fin == FIN_AWAIT) {
        DEFERRED_AWAIT(f, await_target(f, f->finx), f->v);
        release_value(f->v);
    } else if (f->fin == FIN_RETURN) {
        DEFERRED_ASYNC_RETURN(f, fz_token());
    }
    DEFERRED_ASYNC_END(f);
}

/* A frame with a program read from r: a header byte (steps, cleanup),
 * then three bytes a step.  NULL when the allocation failed. */
static struct frame *frame_new(fz_reader_t *r, int consumer)
{
    uint8_t h = fz_byte(r);
    uint8_t fx = fz_byte(r);
    struct frame *f = DEFERRED_ASYNC_NEW(struct frame, body, "fuzz");
    int i;

    if (!f) {
        FZ_TRACE("  deferred_async_new -> NULL");
        for (i = 0; i < 1 + (h & 7) % NSTEPS; i++) {
            (void)fz_byte(r);
            (void)fz_byte(r);
            (void)fz_byte(r);
        }
        return NULL;
    }
    f->n = 1 + (h & 7) % NSTEPS;
    f->fin = (h >> 3) % FIN_NKINDS;
    f->finx = fx % NSLOTS;
    f->consumer = consumer;
    f->serial = ++serial;
    for (i = 0; i < f->n; i++) {
        uint8_t a = fz_byte(r), b = fz_byte(r), c = fz_byte(r);

        f->st[i].kind = (a & 0x7f) % ST_NKINDS;
        f->st[i].flag = a >> 7;
        f->st[i].x = (b & 0xf) % NSLOTS;
        f->st[i].y = (b >> 4) % NSLOTS;
        f->st[i].k = c % 4;
    }
    /* A consumer's frame holds nothing: it is freed unstarted when the
     * process cannot be built. */
    if ((h & 0x80) && !consumer) {
        f->held = fz_token();
        f->has_held = 1;
    }
    FZ_TRACE("  coroutine %p: %d steps, cleanup %d on slot %d%s", (void *)f, f->n, f->fin, f->finx,
             f->has_held ? ", holds a token" : "");
    return f;
}

static void op_coro(fz_reader_t *r)
{
    uint8_t b = fz_byte(r);
    int s = (b & 0x7f) % NSLOTS;
    struct frame *f = frame_new(r, 0);
    deferred_t *d;

    if (!f)
        return;
    if (b & 0x80) {
        FZ_TRACE("  discard %p", (void *)f);
        if (f->has_held)
            deferred_value_release(f->held);
        deferred_async_discard(f);
        return;
    }
    d = deferred_async_start(f);
    FZ_TRACE("  deferred_async_start(%p) -> %p", (void *)f, (void *)d);
    FZ_CHECK(d != NULL, "deferred_async_start of a new frame failed");
    made_set(d, f->serial);
    set_slot(s, d);
}

static void op_consumer(fz_reader_t *r)
{
    uint8_t b = fz_byte(r);
    uint8_t pb = fz_byte(r);
    int s = (b & 0x3f) % NSLOTS;
    struct frame *f = frame_new(r, 1);
    deferred_stage_t *prod = NULL, *cons;
    deferred_process_t *p;
    deferred_t *d;
    int ser;

    if (!f)
        return;
    ser = f->serial;
    if (pb & 0x80) {
        deferred_t *m = slot[(pb & 0x7f) % NSLOTS];

        if (m) {
            prod = deferred_stage_from_multi(m);
            FZ_TRACE("  stage_from_multi(%p) -> %p", (void *)m, (void *)prod);
        }
    } else {
        deferred_value_t items[4];
        size_t i, n = (pb & 7) % 5;

        for (i = 0; i < n; i++)
            items[i] = (pb >> 3) & (1u << i) ? deferred_value_failure(new_failure((uint8_t)i)) : fz_token();
        prod = deferred_stage_array(items, n);
        FZ_TRACE("  stage_array(%zu) -> %p", n, (void *)prod);
    }
    cons = deferred_async_consumer(f); /* takes f, also on error */
    FZ_TRACE("  async_consumer(%p) -> %p", (void *)f, (void *)cons);
    p = deferred_process_new((b & 0x40) ? DEFERRED_PROCESS_PAUSED : 0);
    if (!p || !prod || !cons) {
        deferred_stage_free(prod);
        deferred_stage_free(cons);
        deferred_process_unref(p);
        return;
    }
    if (deferred_process_add(p, prod) != 0) {
        deferred_stage_free(cons);
        deferred_process_unref(p);
        return;
    }
    if (deferred_process_add(p, cons) != 0) {
        deferred_process_unref(p);
        return;
    }
    d = deferred_process_run(p);
    FZ_TRACE("  process_run(%p) -> %p", (void *)p, (void *)d);
    if (b & 0x40)
        TRI(deferred_process_resume(p));
    deferred_process_unref(p);
    if (d) {
        made_set(d, ser);
        set_slot(s, d);
    }
}

enum op {
    OP_NEW,
    OP_NEW_MULTI,
    OP_CORO,
    OP_CORO2,
    OP_FIRE,
    OP_ERRBACK,
    OP_CANCEL,
    OP_PAUSE,
    OP_UNPAUSE,
    OP_REF,
    OP_UNREF,
    OP_EMIT,
    OP_FINISH,
    OP_FAIL_ALLOC,
    OP_CONSUMER,
    OP_SUCCEED,
    OP_NOPS
};

static const char *const op_names[OP_NOPS] = {
    "new", "new_multi", "coro", "coro", "fire", "errback", "cancel", "pause",
    "unpause", "ref", "unref", "emit", "finish", "fail_alloc", "consumer", "succeed",
};

static void one_op(fz_reader_t *r)
{
    uint8_t op = fz_byte(r) % OP_NOPS;
    uint8_t b;
    int s, t;
    deferred_t *d;

    if (fz_tracing) {
        char args[64] = "";
        size_t i, k = 0;

        for (i = 0; i < r->n && i < 8; i++)
            k += (size_t)snprintf(args + k, sizeof args - k, " %02x", r->p[i]);
        FZ_TRACE("op %s, next bytes%s; slots %p %p %p %p %p %p", op_names[op], args,
                 (void *)slot[0], (void *)slot[1], (void *)slot[2], (void *)slot[3],
                 (void *)slot[4], (void *)slot[5]);
    }

    switch (op) {
    case OP_NEW:
        set_slot(fz_byte(r) % NSLOTS, deferred_new());
        break;
    case OP_NEW_MULTI:
        s = fz_byte(r) % NSLOTS;
        if (nmultis == MAX_MULTIS)
            break;
        set_slot(s, deferred_multi_new());
        if (slot[s])
            multis[nmultis++] = deferred_ref(slot[s]);
        break;
    case OP_CORO:
    case OP_CORO2:
        op_coro(r);
        break;
    case OP_SUCCEED:
        b = fz_byte(r);
        set_slot((b & 0x7f) % NSLOTS, b & 0x80 ? deferred_fail(new_failure(b)) : deferred_succeed(fz_token()));
        break;
    case OP_FIRE:
    case OP_ERRBACK:
    case OP_CANCEL:
    case OP_PAUSE:
    case OP_UNPAUSE:
    case OP_EMIT:
    case OP_FINISH:
        b = fz_byte(r);
        s = (b & 0x7f) % NSLOTS;
        if (!slot[s])
            break;
        d = deferred_ref(slot[s]);
        if (op == OP_FIRE)
            TRI(deferred_callback(d, fz_token()));
        else if (op == OP_ERRBACK)
            TRI(deferred_errback(d, new_failure(b)));
        else if (op == OP_CANCEL) {
            avoid_oom_in_cancel();
            TRI(deferred_cancel(d));
        }
        else if (op == OP_PAUSE)
            TRI(deferred_pause(d));
        else if (op == OP_UNPAUSE)
            TRI(deferred_unpause(d));
        else if (op == OP_EMIT)
            TRI(deferred_multi_emit(d, b & 0x80 ? deferred_value_failure(new_failure(b)) : fz_token()));
        else
            TRI(deferred_multi_finish(d, b & 0x80 ? deferred_value_failure(new_failure(b)) : fz_token()));
        deferred_unref(d);
        break;
    case OP_REF:
        s = fz_byte(r) % NSLOTS;
        t = fz_byte(r) % NSLOTS;
        set_slot(t, deferred_ref(slot[s]));
        break;
    case OP_UNREF:
        set_slot(fz_byte(r) % NSLOTS, NULL);
        break;
    case OP_FAIL_ALLOC:
        fz_fail_alloc_after(1 + fz_byte(r) % 16);
        break;
    case OP_CONSUMER:
        op_consumer(r);
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_reader_t r = {data, size};
    int i, ops = 0;

    fz_begin();
    fz_side_budget = SIDE_BUDGET;
    nmade = 0;
    serial = 0;
    while (fz_more(&r) && ops++ < MAX_OPS)
        one_op(&r);
    fz_fail_alloc_after(0);

    for (i = 0; i < nmultis; i++) {
        int n = 0;

        FZ_TRACE("end: unpause and finish multi %p", (void *)multis[i]);
        while (n++ < 2 * MAX_OPS && deferred_unpause(multis[i]) == 0)
            ;
        TRI(deferred_multi_finish(multis[i], fz_token()));
    }
    for (i = 0; i < nmultis; i++) {
        deferred_unref(multis[i]);
        multis[i] = NULL;
    }
    nmultis = 0;
    for (i = 0; i < NSLOTS; i++)
        set_slot(i, NULL);
    /* Cleanups run by those drops may have filled slots again (they do
     * not, but a side effect might). */
    for (i = 0; i < NSLOTS; i++)
        set_slot(i, NULL);
    fz_end();
    return 0;
}
