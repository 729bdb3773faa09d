/*
 * fuzz/fuzz-process.c: a libFuzzer harness for processes (process.h).
 *
 * The first bytes of the input build a process: one to three producers
 * (an array, a multi-fire deferred the harness drives, or a user producer
 * driven by the bytes), up to four processors (map, filter, batch, or a
 * user processor that pauses, resumes, cancels and fails from inside its
 * handle) and a consumer (collect, reduce, first, the consumer feeding a
 * multi-fire deferred, or a user consumer whose start hands back
 * subordinate consumers for tagged groups).  The process is run, then the
 * remaining bytes are events: emits, groups and finishes of the user
 * producers, rows of the multi-fire producers, pauses, resumes and cancels
 * of the process and of its stages, outcomes of the deferreds that map
 * stages and multi-fire rows wait on.  At the end the process is
 * cancelled (a running process keeps itself until its finish is
 * delivered), every reference dropped, and fz_end() checks that every
 * value was released once, every stage's data destroyed once and every
 * block freed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz-util.h"

#define MAX_PRODUCERS 3
#define MAX_PROCESSORS 4
#define NPEND 8
#define MAX_OPS 512
#define SIDE_BUDGET 256

static deferred_process_t *proc;
static deferred_t *result;           /* the run's deferred */
static deferred_t *pend[NPEND];      /* deferreds stages wait on */
static deferred_t *multi_in[MAX_PRODUCERS]; /* multi-fire producers' deferreds */
static deferred_t *multi_out;        /* what a to_multi consumer feeds */

/* A user stage (producer, processor, consumer or subordinate). */
struct ustage {
    deferred_stage_t *st;  /* the stage (for top-level ones; NULL for a
                              subordinate, which the library frees) */
    int role;              /* 0 producer, 1 processor, 2 consumer, 3 subordinate */
    uint8_t mode;          /* what handle does, from the input */
    uint8_t param;
    int script;            /* producer: items left to emit when resumed */
    int depth;             /* producer: groups opened */
    int finished;          /* producer: finish called */
    int cancelled;         /* producer: its cancel ran */
    int in_resume;
    int own_pauses;        /* pauses this stage asked upstream */
    unsigned items;
    int finishes;          /* consumer side: finish calls with the empty tag */
};

static struct ustage *producers[MAX_PRODUCERS];
static struct ustage *stages[MAX_PROCESSORS + 1]; /* user processors and consumer */
static int nstages;

static deferred_failure_t *new_failure(uint8_t b)
{
    static const int codes[] = {EIO, ECANCELED, ENOMEM, ETIMEDOUT, EINVAL};

    return deferred_failure_new(DEFERRED_DOMAIN_USER, codes[b % 5], "fuzz failure %u", b);
}

/* A tag is borrowed: an integer, or a token still alive. */
static void check_tag(deferred_value_t tag)
{
    FZ_CHECK(tag.release == NULL || deferred_value_is_int(tag) || fz_is_live_token(tag),
             "a stage was given a tag that was released");
}

/* An item is a token, an integer, the empty value or an array. */
static void check_item(deferred_value_t v)
{
    FZ_CHECK(!deferred_value_is_deferred(v), "a stage was given a deferred as an item");
    FZ_CHECK(v.release == NULL || deferred_value_is_int(v) || fz_is_live_token(v) ||
                 deferred_value_get_array(v) ||
                 deferred_value_is_failure(v),
             "a stage was given an item that is no live value");
}

static void set_pend(int i, deferred_t *d)
{
    deferred_t *old = pend[i];

    pend[i] = d;
    deferred_unref(old);
}

/* A new unfired deferred, also kept in a pend slot so that later bytes
 * fire, fail or cancel it. */
static deferred_t *pending(int i)
{
    deferred_t *d = deferred_new();

    if (d)
        set_pend(i % NPEND, deferred_ref(d));
    return d;
}

/* ---- user stages --------------------------------------------------------- */

static void user_destroy(void *data)
{
    fz_destroy(data);
}

static int user_describe(deferred_stage_t *self, deferred_value_t item, char *buf, size_t size)
{
    (void)self;
    return snprintf(buf, size, "fuzz item %p", item.ptr);
}

static void produce(struct ustage *u)
{
    /* A synchronous producer: emit while not paused.  A resume asked for
     * from inside only lets this loop go on (the library's rule). */
    while (u->script > 0 && !u->cancelled && !u->finished && !deferred_stage_is_paused(u->st)) {
        u->script--;
        if (deferred_stage_emit(u->st, u->script & 1 ? fz_token()
                                                      : deferred_value_int(u->script)) != 0)
            break;
    }
    if (u->script == 0 && (u->param & 1) && !u->finished && !u->cancelled) {
        u->finished = 1;
        (void)deferred_stage_finish(u->st, deferred_value_none());
    }
}

static void uprod_resume(deferred_stage_t *self, deferred_stage_t *by)
{
    struct ustage *u = deferred_stage_data(self);

    (void)by;
    FZ_CHECK(!fz_arg_destroyed(u), "a producer was resumed after it was destroyed");
    FZ_CHECK(!u->cancelled, "a producer was resumed after its cancel");
    FZ_CHECK(!u->in_resume, "a producer's resume nested");
    u->in_resume = 1;
    produce(u);
    u->in_resume = 0;
}

static void uprod_pause(deferred_stage_t *self, deferred_stage_t *by)
{
    struct ustage *u = deferred_stage_data(self);

    (void)by;
    FZ_CHECK(!fz_arg_destroyed(u), "a producer was paused after it was destroyed");
}

static void uprod_cancel(deferred_stage_t *self, deferred_stage_t *by)
{
    struct ustage *u = deferred_stage_data(self);

    (void)by;
    FZ_CHECK(!fz_arg_destroyed(u), "a producer was cancelled after it was destroyed");
    FZ_CHECK(!u->cancelled, "a producer's cancel ran twice");
    u->cancelled = 1;
}

static const deferred_stage_ops_t uprod_ops = {
    .name = "fuzz producer",
    .resume = uprod_resume,
    .pause = uprod_pause,
    .cancel = uprod_cancel,
    .describe = user_describe,
    .destroy = user_destroy,
};

static struct ustage *ustage_new(int role, uint8_t mode, uint8_t param)
{
    struct ustage *u = fz_arg_new(sizeof *u, 1);

    u->role = role;
    u->mode = mode;
    u->param = param;
    return u;
}

static const deferred_stage_ops_t usub_ops;

/* What a processor, consumer or subordinate does with an item. */
static deferred_failure_t *user_handle(deferred_stage_t *self, deferred_stage_t *from,
                                       deferred_value_t tag, deferred_value_t *item)
{
    struct ustage *u = deferred_stage_data(self);
    int action;

    (void)from;
    FZ_CHECK(!fz_arg_destroyed(u), "a stage's handle ran after it was destroyed");
    FZ_CHECK(item != NULL, "a handle was given no item");
    check_tag(tag);
    check_item(*item);
    u->items++;
    action = (u->mode + u->items * (u->param | 1)) % 10;
    if (!fz_side_effect_allowed())
        action = 0;
    switch (action) {
    case 0:
    default:
        break;
    case 1: /* take the item and release it */
        deferred_value_release(*item);
        *item = deferred_value_none();
        break;
    case 2: /* pause upstream */
        if (deferred_stage_pause(self) == 0)
            u->own_pauses++;
        break;
    case 3: /* resume upstream */
        if (u->own_pauses > 0 && deferred_stage_resume(self) == 0)
            u->own_pauses--;
        break;
    case 4:
        (void)deferred_stage_cancel(self);
        break;
    case 5:
        return new_failure((uint8_t)u->items);
    case 6: /* pause and resume at once */
        if (deferred_stage_pause(self) == 0)
            (void)deferred_stage_resume(self);
        break;
    case 7: /* fail the stream from outside handle's return */
        (void)deferred_stage_fail(self, new_failure(u->param));
        break;
    }
    if (u->role == 1 && !deferred_value_is_none(*item)) {
        /* A processor passes the item on (moved). */
        deferred_value_t v = *item;

        *item = deferred_value_none();
        (void)deferred_stage_emit_tagged(self, tag, v);
    }
    (void)deferred_stage_is_paused(self);
    (void)deferred_stage_items(self);
    return NULL;
}

static deferred_failure_t *user_start(deferred_stage_t *self, deferred_stage_t *from,
                                      deferred_value_t tag, deferred_stage_t **sub)
{
    struct ustage *u = deferred_stage_data(self);

    (void)from;
    FZ_CHECK(!fz_arg_destroyed(u), "a stage's start ran after it was destroyed");
    check_tag(tag);
    FZ_CHECK(sub != NULL, "start was given no place for a subordinate");
    if (deferred_value_is_none(tag))
        return NULL;
    if ((u->role == 2 || u->role == 3) && (u->param & 2)) {
        /* A subordinate consumer for this group. */
        struct ustage *s = ustage_new(3, (uint8_t)(u->mode + 1), (uint8_t)(u->param >> 1));

        *sub = deferred_stage_new(&usub_ops, s, 0);
    }
    if ((u->param & 0x60) == 0x60 && fz_side_effect_allowed())
        return new_failure(u->param);
    return NULL;
}

static deferred_value_t user_finish(deferred_stage_t *self, deferred_stage_t *from,
                                    deferred_value_t tag, deferred_value_t outcome)
{
    struct ustage *u = deferred_stage_data(self);

    (void)from;
    FZ_CHECK(!fz_arg_destroyed(u), "a stage's finish ran after it was destroyed");
    check_tag(tag);
    check_item(outcome);
    if (deferred_value_is_none(tag)) {
        u->finishes++;
        FZ_CHECK(u->finishes == 1, "a stage's finish of the stream ran twice");
    }
    if (u->role == 3 || (u->param & 4)) {
        /* A subordinate hands a value to its parent; a consumer may
         * replace the outcome. */
        if (!deferred_value_is_failure(outcome) || (u->param & 8)) {
            deferred_value_release(outcome);
            return fz_token();
        }
    }
    if (deferred_value_is_none(tag) && (u->param & 0x10) && fz_side_effect_allowed()) {
        /* Work still in flight at the end of the stream. */
        deferred_t *d = pending(u->param >> 5);

        deferred_value_release(outcome);
        return deferred_value_deferred(d);
    }
    return outcome;
}

static const deferred_stage_ops_t uproc_ops = {
    .name = "fuzz processor",
    .resume = NULL, /* set below: a processor has both sides */
    .start = user_start,
    .handle = user_handle,
    .finish = user_finish,
    .describe = user_describe,
    .destroy = user_destroy,
};

static void uproc_resume(deferred_stage_t *self, deferred_stage_t *by)
{
    (void)self;
    (void)by;
}

static const deferred_stage_ops_t uproc2_ops = {
    .name = "fuzz processor",
    .resume = uproc_resume,
    .start = user_start,
    .handle = user_handle,
    .finish = user_finish,
    .describe = user_describe,
    .destroy = user_destroy,
};

static const deferred_stage_ops_t ucons_ops = {
    .name = "fuzz consumer",
    .start = user_start,
    .handle = user_handle,
    .finish = user_finish,
    .describe = user_describe,
    .destroy = user_destroy,
};

static const deferred_stage_ops_t usub_ops = {
    .name = "fuzz subordinate",
    .start = user_start,
    .handle = user_handle,
    .finish = user_finish,
    .describe = user_describe,
    .destroy = user_destroy,
};

/* ---- built-in stages' functions ------------------------------------------ */

struct fn_arg {
    uint8_t mode;
    unsigned calls;
};

static deferred_value_t map_fn(deferred_value_t v, void *arg)
{
    struct fn_arg *a = arg;
    int action;

    check_item(v);
    a->calls++;
    action = (a->mode + a->calls) % 6;
    if (!fz_side_effect_allowed())
        action = 0;
    switch (action) {
    case 0:
    default:
        return v;
    case 1:
        deferred_value_release(v);
        return fz_token();
    case 2:
        deferred_value_release(v);
        return deferred_value_failure(new_failure(a->mode));
    case 3: {
        deferred_t *d = pending(a->calls);

        deferred_value_release(v);
        return deferred_value_deferred(d);
    }
    case 4:
        return deferred_value_deferred(deferred_succeed(v));
    case 5:
        deferred_value_release(v);
        return deferred_value_deferred(deferred_fail(new_failure(a->mode)));
    }
}

static bool filter_fn(deferred_value_t item, void *arg)
{
    struct fn_arg *a = arg;

    check_item(item);
    a->calls++;
    return ((a->mode >> (a->calls % 8)) & 1) != 0;
}

static deferred_value_t fold_fn(deferred_value_t acc, deferred_value_t item, void *arg)
{
    struct fn_arg *a = arg;

    check_item(acc);
    check_item(item);
    a->calls++;
    deferred_value_release(item);
    if (a->mode && a->calls == a->mode) {
        deferred_value_release(acc);
        return deferred_value_failure(new_failure(a->mode));
    }
    if (a->calls & 1) {
        deferred_value_release(acc);
        return fz_token();
    }
    return acc;
}

/* The per-row callback of the multi-fire deferred a to_multi consumer
 * feeds: it may wait (backpressure), fail the row, or release it. */
static deferred_value_t row_fn(deferred_value_t v, void *arg)
{
    struct fn_arg *a = arg;

    a->calls++;
    if (!fz_side_effect_allowed())
        return v;
    switch ((a->mode + a->calls) % 5) {
    case 1:
        deferred_value_release(v);
        return deferred_value_deferred(pending(a->calls));
    case 2:
        deferred_value_release(v);
        return deferred_value_failure(new_failure(a->mode));
    case 3:
        deferred_value_release(v);
        return deferred_value_none();
    default:
        return v;
    }
}

/* Release what reaches the end of a multi-fire deferred's row chain. */
static deferred_value_t drop_fn(deferred_value_t v, void *arg)
{
    (void)arg;
    deferred_value_release(v);
    return deferred_value_none();
}

/* ---- building ------------------------------------------------------------ */

static deferred_stage_t *new_producer(fz_reader_t *r, int i)
{
    uint8_t b = fz_byte(r), c = fz_byte(r);

    switch (b % 3) {
    case 0: {
        deferred_value_t items[8];
        size_t n = (b >> 2) % 8, k;

        for (k = 0; k < n; k++)
            items[k] = (c >> k) & 1 ? fz_token() : deferred_value_int((intptr_t)k);
        return deferred_stage_array(items, n);
    }
    case 1: {
        deferred_stage_t *st;

        multi_in[i] = deferred_multi_new();
        if (!multi_in[i])
            return NULL;
        st = deferred_stage_from_multi(multi_in[i]);
        return st;
    }
    default: {
        struct ustage *u = ustage_new(0, b, c);
        deferred_stage_t *st;

        u->script = (b >> 2) % 8;
        st = deferred_stage_new(&uprod_ops, u, 0);
        if (st) {
            u->st = st;
            producers[i] = u;
        }
        return st;
    }
    }
}

static deferred_stage_t *new_processor(fz_reader_t *r)
{
    uint8_t b = fz_byte(r), c = fz_byte(r);
    struct fn_arg *a;

    switch (b % 4) {
    case 0:
        a = fz_arg_new(sizeof *a, 0);
        a->mode = c;
        return deferred_stage_map(b & 0x80 ? "fuzz map" : NULL, map_fn, a);
    case 1:
        a = fz_arg_new(sizeof *a, 0);
        a->mode = c;
        return deferred_stage_filter(NULL, filter_fn, a);
    case 2:
        return deferred_stage_batch(c % 5); /* 0 gives NULL */
    default: {
        struct ustage *u = ustage_new(1, b >> 2, c);
        deferred_stage_t *st = deferred_stage_new(b & 0x40 ? &uproc2_ops : &uproc_ops, u,
                                                  b & 0x80 ? DEFERRED_STAGE_AUTOPAUSE : 0);

        if (st && nstages <= MAX_PROCESSORS) {
            u->st = st;
            stages[nstages++] = u;
        }
        return st;
    }
    }
}

static deferred_stage_t *new_consumer(fz_reader_t *r)
{
    uint8_t b = fz_byte(r), c = fz_byte(r);
    struct fn_arg *a;

    switch (b % 5) {
    case 0:
        return deferred_stage_collect();
    case 1:
        a = fz_arg_new(sizeof *a, 0);
        a->mode = c % 8;
        return deferred_stage_reduce(fold_fn, c & 0x80 ? fz_token() : deferred_value_none(), a);
    case 2:
        return deferred_stage_first();
    case 3: {
        deferred_stage_t *st;

        multi_out = deferred_multi_new();
        if (!multi_out)
            return NULL;
        a = fz_arg_new(sizeof *a, 0);
        a->mode = c;
        (void)deferred_add_callback(multi_out, row_fn, a);
        (void)deferred_add_both(multi_out, drop_fn, NULL);
        st = deferred_stage_to_multi(multi_out);
        return st;
    }
    default: {
        struct ustage *u = ustage_new(2, b >> 3, c);
        deferred_stage_t *st = deferred_stage_new(&ucons_ops, u,
                                                  b & 0x80 ? DEFERRED_STAGE_AUTOPAUSE : 0);

        if (st && nstages <= MAX_PROCESSORS) {
            u->st = st;
            stages[nstages++] = u;
        }
        return st;
    }
    }
}

static void build(fz_reader_t *r)
{
    uint8_t h = fz_byte(r);
    int nprod = 1 + (h >> 1) % MAX_PRODUCERS;
    int nproc = (h >> 3) % (MAX_PROCESSORS + 1);
    int i;

    proc = deferred_process_new(h & 1 ? DEFERRED_PROCESS_PAUSED : 0);
    if (!proc)
        return;
    for (i = 0; i < nprod; i++)
        (void)deferred_process_add(proc, new_producer(r, i));
    for (i = 0; i < nproc; i++)
        (void)deferred_process_add(proc, new_processor(r));
    if (!(h & 0x80))
        (void)deferred_process_add(proc, new_consumer(r));
    result = deferred_process_run(proc);
}

/* ---- events ------------------------------------------------------------- */

static deferred_value_t tag_of(uint8_t b)
{
    return b & 1 ? fz_token() : deferred_value_int(1 + (b >> 1));
}

static void producer_op(uint8_t what, uint8_t arg)
{
    struct ustage *u = producers[arg % MAX_PRODUCERS];
    deferred_value_t tag;

    if (!u)
        return;
    switch (what % 6) {
    case 0:
        (void)deferred_stage_emit(u->st, arg & 0x80 ? fz_token() : deferred_value_int(arg));
        break;
    case 1:
        tag = tag_of(arg >> 2);
        (void)deferred_stage_emit_tagged(u->st, tag, fz_token());
        deferred_value_release(tag);
        break;
    case 2:
        tag = tag_of(arg >> 2);
        if (deferred_stage_start(u->st, tag) == 0)
            u->depth++;
        deferred_value_release(tag);
        break;
    case 3:
        if (u->depth > 0) {
            tag = tag_of(arg >> 2);
            u->depth--;
            (void)deferred_stage_end(u->st, tag, arg & 0x40 ? deferred_value_failure(new_failure(arg))
                                                             : fz_token());
            deferred_value_release(tag);
        }
        break;
    case 4:
        u->finished = 1;
        (void)deferred_stage_finish(u->st, arg & 0x40 ? deferred_value_failure(new_failure(arg))
                                                       : deferred_value_none());
        break;
    case 5:
        /* More items for the synchronous loop, which runs when resumed. */
        u->script += 1 + (arg >> 2) % 4;
        if (!u->in_resume && !deferred_stage_is_paused(u->st))
            produce(u);
        break;
    }
}

static void multi_op(deferred_t *m, uint8_t what)
{
    deferred_t *d;

    if (!m)
        return;
    d = deferred_ref(m);
    switch (what % 6) {
    case 0:
    case 1:
        (void)deferred_multi_emit(d, what & 0x80 ? deferred_value_int(what) : fz_token());
        break;
    case 2:
        (void)deferred_multi_finish(d, what & 0x40 ? deferred_value_failure(new_failure(what))
                                             : deferred_value_none());
        break;
    case 3:
        (void)deferred_cancel(d);
        break;
    case 4:
        (void)deferred_pause(d);
        break;
    case 5:
        (void)deferred_unpause(d);
        break;
    }
    deferred_unref(d);
}

static void one_op(fz_reader_t *r)
{
    uint8_t op = fz_byte(r), a = fz_byte(r);
    deferred_t *d;

    switch (op % 12) {
    case 0:
    case 1:
    case 2:
        producer_op(op / 12, a);
        break;
    case 3:
        multi_op(multi_in[a % MAX_PRODUCERS], a >> 2);
        break;
    case 4:
        multi_op(multi_out, a);
        break;
    case 5:
        if (a & 1)
            (void)deferred_process_pause(proc);
        else
            (void)deferred_process_resume(proc);
        (void)deferred_process_is_paused(proc);
        (void)deferred_process_is_finished(proc);
        break;
    case 6:
        if (fz_side_effect_allowed())
            (void)deferred_process_cancel(proc);
        break;
    case 7:
    case 8:
        d = pend[a % NPEND];
        if (!d)
            break;
        d = deferred_ref(d);
        switch ((a >> 3) % 4) {
        case 0:
        case 1:
            (void)deferred_callback(d, fz_token());
            break;
        case 2:
            (void)deferred_errback(d, new_failure(a));
            break;
        case 3:
            (void)deferred_cancel(d);
            break;
        }
        deferred_unref(d);
        break;
    case 9:
        if (result && fz_side_effect_allowed()) {
            d = deferred_ref(result);
            if (a & 1)
                (void)deferred_cancel(d);
            else
                deferred_value_release(deferred_result_take(d));
            deferred_unref(d);
        }
        break;
    case 10: {
        struct ustage *u;

        if (nstages == 0)
            break;
        u = stages[a % nstages];
        if (a & 0x80) {
            if (u->own_pauses > 0 && deferred_stage_resume(u->st) == 0)
                u->own_pauses--;
        } else if (a & 0x40) {
            if (deferred_stage_pause(u->st) == 0)
                u->own_pauses++;
        } else {
            (void)deferred_stage_fail(u->st, new_failure(a));
        }
        break;
    }
    case 11:
        fz_fail_alloc_after(1 + a % 32);
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_reader_t r = {data, size};
    int i, ops = 0;

    fz_begin();
    fz_side_budget = SIDE_BUDGET;
    proc = NULL;
    result = NULL;
    multi_out = NULL;
    nstages = 0;
    memset(producers, 0, sizeof producers);
    memset(multi_in, 0, sizeof multi_in);

    build(&r);
    while (proc && fz_more(&r) && ops++ < MAX_OPS)
        one_op(&r);
    fz_fail_alloc_after(0);

    /* A running process keeps itself until its finish is delivered:
     * cancel it, then drop every reference. */
    fz_side_budget = 0;
    if (proc)
        (void)deferred_process_cancel(proc);
    /* What a map stage, a finish or a row of the to_multi consumer's
     * deferred waits on: when the input's last byte is odd its owner
     * cancels it before dropping it, else it is only dropped.
     * (FUZZ_AVOID_PENDING: always cancelled, see
     * pending/process/leak-cancel-while-map-waits-after-autopause-processor.) */
    for (i = 0; i < NPEND && ((size > 0 && (data[size - 1] & 1)) || fz_avoid_pending); i++) {
        deferred_t *d = deferred_ref(pend[i]);

        if (d)
            (void)deferred_cancel(d);
        deferred_unref(d);
    }
    deferred_unref(result);
    result = NULL;
    deferred_process_unref(proc);
    proc = NULL;
    for (i = 0; i < MAX_PRODUCERS; i++) {
        deferred_unref(multi_in[i]);
        multi_in[i] = NULL;
        producers[i] = NULL;
    }
    deferred_unref(multi_out);
    multi_out = NULL;
    for (i = 0; i < NPEND; i++)
        set_pend(i, NULL);
    nstages = 0;
    fz_end();
    return 0;
}
