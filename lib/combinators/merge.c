/*
 * merge.c: several deferreds, single-shot or multi-fire, merged into one
 * multi-fire deferred (the "stream") that emits each result as it
 * arrives: a mode of the fan-in engine (fanin.c).
 *
 * The engine owns the block, the reference on each input's end (on the
 * input itself when single-shot) and its pair there, the cancel loop and
 * the letting go.  This file adds, for a multi-fire input, a reference on
 * the input and one plain per-row pair on it; the block outlives every
 * row that pair can see, because rows stop when the input ends, and the
 * input's end (which the input keeps alive) holds the engine's pair or its
 * sentinel until then.  No allocation per input.
 *
 * The design decision to know is backpressure at O(1) per row.  The
 * stream's flow hook only records whether the stream holds rows back.  A
 * row that arrives while it does is emitted all the same (the stream
 * queues it), and then the input that delivered it, if it is a multi-fire
 * one, is paused ("held") and put on a list: its next rows queue inside it
 * and its own flow hook tells its source to stop.  When the stream takes
 * rows again, the held inputs are unpaused in the order they were held,
 * until the stream holds again.  So an event costs the same whatever the
 * number of inputs: only an input that delivers while the stream is held
 * is ever paused, once per such row.
 *
 * The stream is made paused (the caller unpauses it once its chain is in
 * place): inputs whose result was already there are held while building,
 * in input order, and resumed in that order by the caller's unpause.
 */
#include <errno.h>
#include <string.h>

#include "fanin-private.h"
#include "deferred/combinators.h"
#include "deferred/multi.h"

#define NONE SIZE_MAX

struct mslot {
    /* The per-row pair's argument: the core tells it when the pair is
     * done (the input freed), which drops the pair's reference on the
     * block, so a row can never reach a freed block. */
    struct deferred__owned row_own;
    struct fanin *f;
    deferred_t *stream; /* a multi-fire input: a reference until the slot is over */
    deferred_t *held;   /* what the merge paused (the slot holds it), or NULL */
    size_t next;        /* the held list */
    bool listed;
};

struct mstate {
    bool holding;       /* the stream holds rows back */
    size_t left;        /* inputs that have not ended */
    size_t head, tail;  /* the held list, in the order held */
    struct mslot ms[];
};

#define MSTATE(f) ((struct mstate *)(f)->mode)

/* ---- holding ----------------------------------------------------------- */

/* Pause d (what slot i waits on, or its stream) and list the slot.  The
 * slot records d before the pause: pausing a stream runs its source's
 * flow hook, which may end it, and the slot's end (its unhold, then its
 * references dropped) must find d recorded, or it would stay recorded,
 * unreferenced, after the slot is over. */
static int hold(struct fanin *f, size_t i, deferred_t *d)
{
    struct mstate *m = MSTATE(f);
    struct mslot *s = &m->ms[i];

    if (s->held)
        return 0;
    s->held = d;
    if (deferred_pause(d) < 0) {
        s->held = NULL;
        return -EINVAL;
    }
    if (!s->held)
        return 0; /* over during the pause: resumed and let go already */
    if (!s->listed) {
        s->listed = true;
        s->next = NONE;
        if (m->tail == NONE)
            m->head = i;
        else
            m->ms[m->tail].next = i;
        m->tail = i;
    }
    return 0;
}

/* Unpause what slot i holds, if anything.  Rows may run. */
static void unhold(struct fanin *f, size_t i)
{
    struct mslot *s = &MSTATE(f)->ms[i];
    deferred_t *d = s->held;

    if (!d)
        return;
    s->held = NULL;
    deferred_ref(d);
    deferred_unpause(d);
    deferred_unref(d);
}

/* Unpause the held inputs in the order held, until the stream holds rows
 * back again (a row that blocked it), or all of them when it is over. */
static void release_held(struct fanin *f, bool all)
{
    struct mstate *m = MSTATE(f);

    f->refs++;
    while ((all || !m->holding) && m->head != NONE) {
        size_t i = m->head;

        m->head = m->ms[i].next;
        if (m->head == NONE)
            m->tail = NONE;
        m->ms[i].listed = false;
        unhold(f, i);
    }
    deferred__fanin_unref(f);
}

/* The stream's flow hook: O(1) unless it resumes, and then O(held). */
static void merge_flow(deferred_t *out, bool paused, void *arg)
{
    struct fanin *f = arg;

    (void)out;
    MSTATE(f)->holding = paused;
    if (!paused)
        release_held(f, false);
}

/* ---- rows -------------------------------------------------------------- */

/* Stop: results arriving from now on are released; every input that has
 * not ended is cancelled (once, in input order), then the held ones are
 * resumed and all are let go. */
static void merge_stop(struct fanin *f)
{
    f->done = true;
    f->refs++;
    deferred__fanin_cancel_inputs(f);
    release_held(f, true);
    deferred__fanin_unref(f);
}

/* The stream could not take a row (out of memory): it ends failed with
 * ENOMEM after the rows it holds, and the inputs are cancelled. */
static void merge_fail_enomem(struct fanin *f)
{
    f->refs++;
    merge_stop(f);
    /* The weak pointer, read again: the cancels may have freed the
     * stream (no reference is taken on it: it may be dying). */
    if (f->out)
        deferred_multi_finish(f->out, deferred_value_failure(deferred_failure_new(
                                    DEFERRED_DOMAIN_LIBRARY, ENOMEM,
                                    "out of memory while merging a row")));
    deferred__fanin_unref(f);
}

/* Emit v (taken) from input i as the stream's next row. */
static void deliver(struct fanin *f, size_t i, deferred_value_t v)
{
    deferred_failure_t *fl;

    if (f->done || !f->out) {
        deferred_value_release(v);
        return;
    }
    fl = deferred_value_get_failure(v);
    if (fl)
        deferred_failure_add_context(fl, "merge", "input %zu", i);
    if (deferred_multi_emit(f->out, v) == -ENOMEM)
        merge_fail_enomem(f);
}

/* The per-row pair of a multi-fire input (both halves). */
static deferred_value_t on_row(deferred_value_t v, void *arg)
{
    struct mslot *ms = arg;
    struct fanin *f = ms->f;
    struct mstate *m = MSTATE(f);
    size_t i = (size_t)(ms - m->ms);
    struct fanin_slot *s = &f->slots[i];

    if (DEFERRED_UNLIKELY(f->aborted))
        return v;
    if (DEFERRED_UNLIKELY(f->done || !FANIN_HELD(s))) {
        deferred_value_release(v);
        return deferred_value_none();
    }
    f->refs++;
    deliver(f, i, v);
    /* The stream holds rows back (it did, or this row made it): this
     * input's next rows wait in it. */
    if (DEFERRED_UNLIKELY(m->holding) && !f->done && FANIN_HELD(s))
        hold(f, i, m->ms[i].stream);
    if (--f->refs == 0)
        deferred__free(f);
    return deferred_value_none();
}

/* What ends slot i reached the engine's pair: a single-shot input's
 * result (a row), or a multi-fire input's end (a row only when failed). */
static deferred_value_t merge_outcome(struct fanin *f, size_t i, deferred_value_t v)
{
    struct mstate *m = MSTATE(f);

    if (!m->ms[i].stream || deferred_value_is_failure(v))
        deliver(f, i, v);
    else
        deferred_value_release(v);
    if (--m->left == 0 && !f->done && f->out) {
        f->done = true;
        deferred_multi_finish(f->out, deferred_value_none());
    }
    return deferred_value_none();
}

/* ---- the engine's hooks ------------------------------------------------ */

static int merge_hold(struct fanin *f, size_t i, deferred_t *w)
{
    return hold(f, i, w);
}

/* The per-row pair is done: its input was freed. */
static void row_dispose(struct deferred__owned *own)
{
    struct mslot *ms = (struct mslot *)(void *)own;

    deferred__fanin_unref(ms->f);
}

/* A multi-fire input: a reference on it and the per-row pair. */
static int merge_attach(struct fanin *f, size_t i, deferred_t *in, deferred_t *w)
{
    struct mslot *s = &MSTATE(f)->ms[i];
    int rc;

    (void)w;
    if (!deferred_is_multi(in))
        return 0;
    s->stream = deferred_ref(in);
    s->row_own.dispose = row_dispose;
    s->f = f;
    f->refs++; /* the per-row pair's */
    rc = deferred__add_both_owned(in, on_row, &s->row_own);
    if (rc < 0)
        f->refs--;
    return rc;
}

static void merge_over(struct fanin *f, size_t i)
{
    struct mslot *s = &MSTATE(f)->ms[i];
    deferred_t *stream = s->stream;

    unhold(f, i);
    s->stream = NULL;
    deferred_unref(stream);
}

/* The build failed, or the stream is gone: resume what is held. */
static void merge_release_all(struct fanin *f)
{
    release_held(f, true);
}

static void merge_visit(struct fanin *f, deferred__visit_fn visit, void *ctx)
{
    struct mstate *m = MSTATE(f);
    size_t i;

    for (i = 0; i < f->inited; i++)
        if (m->ms[i].stream)
            visit(m->ms[i].stream, ctx);
}

static const char *merge_name(const struct fanin *f)
{
    (void)f;
    return "merge";
}

static const struct fanin_ops merge_ops = {
    .outcome = merge_outcome,
    .name = merge_name,
    .hold = merge_hold,
    .attach = merge_attach,
    .over = merge_over,
    .drop = merge_release_all,
    .abort = merge_release_all,
    .visit = merge_visit,
};

/* The stream's canceller (also run when a row's failure ends it): the
 * inputs that have not ended are cancelled, their results released. */
static void merge_cancel(deferred_t *out, void *arg)
{
    (void)out;
    merge_stop(arg);
}

deferred_t *deferred_merge(deferred_t *const *inputs, size_t n)
{
    struct fanin *f;
    struct mstate *m;
    deferred_t *out;
    size_t i;
    int rc;

    if (n > 0 && !inputs) {
        errno = EINVAL;
        return NULL;
    }
    for (i = 0; i < n; i++) {
        if (!inputs[i]) {
            errno = EINVAL;
            return NULL;
        }
    }
    if (n > (SIZE_MAX - sizeof(*m)) / sizeof(m->ms[0])) {
        errno = ENOMEM;
        return NULL;
    }
    f = deferred__fanin_new(n, sizeof(*m) + n * sizeof(m->ms[0]), &merge_ops, false);
    if (!f)
        return NULL;
    m = MSTATE(f);
    m->left = n;
    m->head = m->tail = NONE;
    f->refs++; /* the stream's */
    out = deferred_multi_new_cancellable(merge_cancel, f, deferred__fanin_out_freed);
    if (!out) {
        /* The destroy function dropped the stream's reference. */
        f->building = false;
        f->busy--;
        deferred__fanin_unref(f);
        errno = ENOMEM;
        return NULL;
    }
    deferred__fanin_set_out(f, out);
    deferred_multi_set_flow(out, merge_flow, f);
    deferred_pause(out); /* the caller's to lift; the hook records it */

    rc = deferred__fanin_attach(f, inputs);
    if (rc == 0 && n == 0) {
        f->done = true;
        deferred_multi_finish(out, deferred_value_none());
    }
    deferred__fanin_built(f);
    if (rc < 0) {
        deferred_unref(out);
        errno = -rc;
        return NULL;
    }
    return out;
}
