/*
 * merge.c: several deferreds, single-shot or multi-fire, merged into one
 * multi-fire deferred (the "stream") that emits each result as it arrives.
 *
 * State: one block holding a slot per input and a weak pointer to the
 * stream.  Each single-shot input gets one _full pair (its destroy drops a
 * reference on the block); each multi-fire input gets one per-row pair and
 * one pair on its end deferred.  A slot holds a reference on its input
 * (and on the input's end) until the input has ended, so that cancelling
 * the stream can reach it; no reference goes from an input to the stream,
 * so there is no cycle.  The block is freed when the stream is gone and
 * every pair has run or been dropped.
 *
 * Backpressure: the stream's flow hook is the merge's.  When the stream
 * holds rows back (paused, or a row waits on a deferred) every input that
 * has not ended is paused with deferred_pause(), so its rows queue inside
 * it and its own flow hook tells its source to stop; when the stream takes
 * rows again the inputs are unpaused in input order.  The inputs' own flow
 * hooks are left alone: they belong to their sources.
 *
 * The stream is made paused (the caller unpauses it once its chain is in
 * place), so its inputs start held and no row, not even one of an input
 * that fired before the call, reaches an empty chain.
 */
#include <errno.h>
#include <string.h>

#include "deferred-private.h"
#include "deferred/combinators.h"
#include "deferred/multi.h"

struct merge;

struct mslot {
    struct merge *owner;
    deferred_t *input; /* a reference until the input ended; then NULL */
    deferred_t *end;   /* multi-fire input: a reference on its end */
    bool held;         /* paused by the merge (input, and end) */
    bool done;         /* ended, or let go: later results are dropped */
};

struct merge {
    size_t refs;    /* the stream's, one per pair that may run, temps */
    size_t n;
    size_t inited;  /* slots set up so far */
    size_t left;    /* inputs that have not ended */
    deferred_t *out; /* the stream, weak: NULL once freed */
    bool holding;   /* the stream holds rows back: inputs are held */
    bool done;      /* the stream is over or gone: results are dropped */
    bool aborted;   /* building failed: every pair passes through */
    struct mslot slots[];
};

static void merge_unref(struct merge *m)
{
    if (--m->refs == 0)
        deferred__free(m);
}

static void pair_destroy(void *arg)
{
    struct mslot *s = arg;

    merge_unref(s->owner);
}

/* Let the inputs of s go on: resume them if held (input first, so its
 * queued rows go before its end). */
static void slot_unhold(struct mslot *s)
{
    deferred_t *in = s->input, *end = s->end;

    if (!s->held)
        return;
    s->held = false;
    deferred_ref(in);
    deferred_ref(end);
    deferred_unpause(in);
    if (end)
        deferred_unpause(end);
    deferred_unref(in);
    deferred_unref(end);
}

/* s is over (ended, or the merge let it go): resume it, drop the
 * references on it. */
static void slot_release(struct mslot *s)
{
    deferred_t *in, *end;

    if (s->done)
        return;
    s->done = true;
    slot_unhold(s);
    in = s->input;
    end = s->end;
    s->input = s->end = NULL;
    deferred_unref(end);
    deferred_unref(in);
}

/* Stop: results arriving from now on are released.  With cancel, every
 * input that has not ended is cancelled (once, in input order); then all
 * are let go. */
static void merge_stop(struct merge *m, bool cancel)
{
    size_t i;

    m->done = true;
    m->refs++;
    for (i = 0; i < m->inited; i++) {
        struct mslot *s = &m->slots[i];

        if (s->done)
            continue;
        if (cancel) {
            deferred_t *in = deferred_ref(s->input);

            deferred_cancel(in);
            deferred_unref(in);
        }
        slot_release(s);
    }
    merge_unref(m);
}

/* The stream could not take a row (out of memory): it ends failed with
 * ENOMEM after the rows it holds, and the inputs are cancelled. */
static void merge_fail_enomem(struct merge *m)
{
    deferred_t *out = deferred_ref(m->out);

    merge_stop(m, true);
    if (out)
        deferred_finish(out, deferred_value_failure(deferred_failure_new(
                                 DEFERRED_DOMAIN_LIBRARY, ENOMEM,
                                 "out of memory while merging a row")));
    deferred_unref(out);
}

/* Emit v (taken) from input i as the stream's next row. */
static void deliver(struct merge *m, size_t i, deferred_value_t v)
{
    deferred_failure_t *f;

    if (m->done || !m->out) {
        deferred_value_release(v);
        return;
    }
    f = deferred_value_get_failure(v);
    if (f)
        deferred_failure_add_context(f, "merge", "input %zu", i);
    if (deferred_emit(m->out, v) == -ENOMEM)
        merge_fail_enomem(m);
}

/* Input s ended. */
static void slot_ended(struct merge *m, struct mslot *s)
{
    if (s->done)
        return;
    slot_release(s);
    if (--m->left == 0 && !m->done && m->out) {
        m->done = true;
        deferred_finish(m->out, deferred_value_none());
    }
}

/* v (taken) is a row of input s: emitted, unless s is done.  With ended,
 * s has no more rows.  Returns what the input's own chain goes on with. */
static deferred_value_t slot_row(struct mslot *s, deferred_value_t v, bool ended)
{
    struct merge *m = s->owner;

    if (m->aborted)
        return v;
    m->refs++;
    if (s->done)
        deferred_value_release(v);
    else
        deliver(m, (size_t)(s - m->slots), v);
    if (ended)
        slot_ended(m, s);
    merge_unref(m);
    return deferred_value_none();
}

/* The pair of a single-shot input (both halves). */
static deferred_value_t on_single(deferred_value_t v, void *arg)
{
    return slot_row(arg, v, true);
}

/* The per-row pair of a multi-fire input (both halves). */
static deferred_value_t on_row(deferred_value_t v, void *arg)
{
    return slot_row(arg, v, false);
}

/* The pair on a multi-fire input's end (both halves): a failed end is
 * emitted as a row; a final value is not a row, and is released. */
static deferred_value_t on_end(deferred_value_t v, void *arg)
{
    struct mslot *s = arg;
    struct merge *m = s->owner;

    if (m->aborted)
        return v;
    m->refs++;
    if (!s->done && deferred_value_is_failure(v))
        deliver(m, (size_t)(s - m->slots), v);
    else
        deferred_value_release(v);
    slot_ended(m, s);
    merge_unref(m);
    return deferred_value_none();
}

/* The stream's flow hook: hold or resume every input that has not ended.
 * Either loop stops when a nested call (from an input's flow hook, or a
 * row that made the stream block again) turned the state over; that call
 * has taken care of the slots. */
static void merge_flow(deferred_t *out, bool paused, void *arg)
{
    struct merge *m = arg;
    size_t i;

    (void)out;
    m->refs++;
    m->holding = paused;
    for (i = 0; i < m->inited && m->holding == paused; i++) {
        struct mslot *s = &m->slots[i];

        if (s->done)
            continue;
        if (!paused) {
            slot_unhold(s);
        } else if (!s->held) {
            s->held = true;
            /* The end first: pausing a stream runs its source's flow
             * hook, which may end it; its end then waits too. */
            if (s->end)
                deferred_pause(s->end);
            deferred_pause(s->input);
        }
    }
    merge_unref(m);
}

/* The stream's canceller (also run when a row's failure ends it). */
static void merge_cancel(deferred_t *out, void *arg)
{
    (void)out;
    merge_stop(arg, true);
}

/* The stream is being freed. */
static void merge_out_freed(void *arg)
{
    struct merge *m = arg;

    m->out = NULL;
    merge_stop(m, false);
    merge_unref(m);
}

deferred_t *deferred_merge(deferred_t *const *inputs, size_t n)
{
    struct merge *m;
    deferred_t *out;
    size_t i;

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
    if (n > (SIZE_MAX - sizeof(*m)) / sizeof(m->slots[0]))
        goto out_enomem;
    m = deferred__malloc(sizeof(*m) + n * sizeof(m->slots[0]));
    if (!m)
        goto out_enomem;
    memset(m, 0, sizeof(*m));
    m->refs = 2; /* ours while building, and the stream's */
    m->n = n;
    m->left = n;
    out = deferred_new_multi_cancellable(merge_cancel, m, merge_out_freed);
    if (!out) {
        merge_unref(m); /* merge_out_freed dropped the stream's */
        goto out_enomem;
    }
    m->out = out;
    deferred_set_flow(out, merge_flow, m);
    deferred_pause(out); /* the caller's to lift; the hook holds the inputs */

    for (i = 0; i < n; i++) {
        struct mslot *s = &m->slots[i];
        deferred_t *in = inputs[i];

        s->owner = m;
        s->input = deferred_ref(in);
        s->end = deferred_is_multi(in) ? deferred_end(in) : NULL;
        s->held = false;
        s->done = false;
        m->inited = i + 1;
        if (m->holding) {
            s->held = true;
            if (s->end)
                deferred_pause(s->end);
            deferred_pause(in);
        }
        m->refs++;
        if (deferred_add_both_full(in, s->end ? on_row : on_single, s,
                                   pair_destroy) < 0)
            goto out_abort;
        if (s->end) {
            m->refs++;
            if (deferred_add_both_full(s->end, on_end, s, pair_destroy) < 0)
                goto out_abort;
        }
    }
    if (n == 0)
        deferred_finish(out, deferred_value_none());
    merge_unref(m);
    return out;

out_abort:
    /* The pairs in place pass everything through; let the inputs go. */
    m->aborted = true;
    merge_stop(m, false);
    deferred_unref(out);
    merge_unref(m);
out_enomem:
    errno = ENOMEM;
    return NULL;
}
