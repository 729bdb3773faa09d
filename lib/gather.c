/*
 * gather.c: gather, list and race, the combinators that fold several
 * deferreds into one.
 *
 * The three share one engine, a "combo": one block holding a slot per
 * input, the weak pointer to the combinator's own deferred (R), and what
 * has been collected.  Each input gets one plain callback/errback pair
 * whose argument is its slot, so an input costs no allocation of its own:
 * the slot holds a reference on the input (so cancelling R can reach it)
 * until the input's result arrives.
 *
 * The design decision to know is how the combo stays alive without a
 * cycle.  R does not own the combo's inputs through a reference cycle:
 * the combo is freed when R is gone and no pair of it can still run.  A
 * pair can only be dropped unrun when its input is freed, and an input
 * cannot be freed while its slot holds a reference; so once R has fired or
 * been freed, the combo lets go of the inputs still pending ("detaches"
 * them) by appending to each a pass-through sentinel whose destroy
 * function tells the combo that the pair before it has run or never will.
 * That allocation is paid only on the rare path (a fail-fast gather, a
 * race's uncooperative losers, R dropped early), never when every input
 * fires.
 *
 * Building is atomic: every input is paused while the pairs are appended,
 * so an input that had fired already runs its pair only once all are in
 * place (in input order), and an append that fails leaves pass-through
 * pairs only.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "deferred-private.h"
#include "deferred/combinators.h"

enum mode { MODE_GATHER, MODE_LIST, MODE_RACE };

struct combo;

/* One input.  input is a reference held on it (on its end, for a
 * multi-fire input) while its result has not arrived, NULL once it has (or
 * when the pair was never appended), or DETACHED once the reference was
 * let go with the pair still pending.  v is the outcome collected for it
 * (gather, list) until the array is delivered; while building, it may
 * instead be a held mark (see held_mark()). */
struct slot {
    struct combo *owner;
    deferred_t *input;
    deferred_value_t v;
};

struct combo {
    size_t refs;      /* one per pair or sentinel that may run, one for R, temps */
    size_t n;
    size_t remaining; /* gather, list: outcomes still to come */
    size_t failed;    /* race: failures seen */
    size_t cancel_next; /* next slot the cancel loops look at */
    size_t inited;    /* slots initialised so far (all, once built) */
    size_t pending;   /* slots whose input is a reference still held */
    unsigned flags;
    unsigned busy;    /* loops over the slots under way: no detaching */
    enum mode mode;
    bool done;        /* R fired or is gone: later results are dropped */
    bool aborted;     /* building failed: every pair passes through */
    bool detached;
    deferred_t *result;                  /* R, weak: NULL once freed */
    deferred_array_t *array;             /* gather, list: until fired */
    deferred_indexed_t *indexed;         /* race, list on success */
    deferred_failure_t **failures;       /* race: inside this block */
    struct slot slots[];
};

static char detached_marker;
#define DETACHED ((deferred_t *)(void *)&detached_marker)

/* While building, an input that had fired already is paused so that its
 * pair runs only once every pair is in place; its slot's v then holds the
 * input with this release function (a no-op), the mark to unpause it. */
static void held_mark(void *ptr)
{
    (void)ptr;
}

/* ---- result values ----------------------------------------------------- */

static void indexed_release(void *ptr)
{
    deferred_indexed_t *x = ptr;

    deferred_value_release(x->value);
    deferred__free(x);
}

deferred_indexed_t *deferred_value_get_indexed(deferred_value_t v)
{
    return v.release == indexed_release ? v.ptr : NULL;
}

/* The collected outcomes moved into the array made at build time, in
 * input order (the array has room for all: no append can fail), as the
 * value R fires with. */
static deferred_value_t take_array(struct combo *c)
{
    deferred_array_t *a = c->array;
    struct slot *s = c->slots, *e = s + c->n;

    c->array = NULL;
    for (; s < e; s++) {
        deferred_array_append(a, s->v);
        s->v = deferred_value_none();
    }
    return deferred_value_array(a);
}

/* ---- the combo's life -------------------------------------------------- */

static void drop_collected(struct combo *c);

static void combo_unref(struct combo *c)
{
    if (--c->refs)
        return;
    drop_collected(c);
    deferred__free(c);
}

/* Drop what was collected for a result that will never be delivered.
 * Slot values can be alive only while the array is (take_array() empties
 * them), so a delivered gather costs no pass here. */
static void drop_collected(struct combo *c)
{
    size_t i;

    if (c->array) {
        deferred_array_free(c->array);
        c->array = NULL;
        for (i = 0; i < c->inited; i++) {
            if (c->slots[i].v.release == held_mark)
                continue; /* the building loop still needs it */
            deferred_value_release(c->slots[i].v);
            c->slots[i].v = deferred_value_none();
        }
    }
    if (c->indexed) {
        indexed_release(c->indexed);
        c->indexed = NULL;
    }
    if (c->failures) {
        for (i = 0; i < c->n; i++) {
            deferred_failure_unref(c->failures[i]);
            c->failures[i] = NULL;
        }
    }
}

/* The sentinel appended after a detached input's pair: passes everything
 * through; its destroy runs once the pair has run or been dropped. */
static deferred_value_t sentinel_fn(deferred_value_t v, void *arg)
{
    (void)arg;
    return v;
}

static void sentinel_destroy(void *arg)
{
    struct slot *s = arg;
    struct combo *c = s->owner;

    if (s->input == DETACHED) {
        /* The input went away with the pair unrun: drop the pair's ref. */
        s->input = NULL;
        c->refs--;
    }
    combo_unref(c);
}

/* Let go of every input still pending (see the file comment).  An input
 * whose sentinel cannot be appended keeps its reference: its pair still
 * runs when it fires, and frees the combo then. */
static void detach_inputs(struct combo *c)
{
    size_t i;

    if (!c->pending)
        return; /* every result arrived: nothing to let go, no pass */
    c->refs++;
    for (i = 0; i < c->inited && c->pending; i++) {
        struct slot *s = &c->slots[i];
        deferred_t *in = s->input;

        if (!in || in == DETACHED)
            continue;
        c->refs++; /* the sentinel's */
        if (deferred_add_both_full(in, sentinel_fn, s, sentinel_destroy) < 0)
            continue;
        if (s->input == in) {
            s->input = DETACHED;
            c->pending--;
            deferred_unref(in);
        }
    }
    combo_unref(c);
}

/* Once R is settled and no loop walks the slots, detach (once). */
static void settle(struct combo *c)
{
    if (c->done && !c->busy && !c->detached) {
        c->detached = true;
        detach_inputs(c);
    }
}

/* Fire R with v (taken), or release v if R is gone. */
static void finish(struct combo *c, deferred_value_t v)
{
    c->done = true;
    if (c->result)
        deferred_callback(c->result, v);
    else
        deferred_value_release(v);
}

/* Cancel every input whose result has not arrived, each at most once: the
 * cursor is shared by every loop, so a loop started from inside another
 * (a race won during R's cancel) goes on where the first one was. */
static void cancel_inputs(struct combo *c)
{
    c->refs++;
    c->busy++;
    while (c->cancel_next < c->inited) {
        struct slot *s = &c->slots[c->cancel_next++];

        if (s->input && s->input != DETACHED)
            deferred_cancel(s->input);
    }
    c->busy--;
    settle(c);
    combo_unref(c);
}

/* R's canceller. */
static void on_cancel(deferred_t *d, void *arg)
{
    (void)d;
    cancel_inputs(arg);
}

/* R's canceller destroy: R is being freed. */
static void on_result_freed(void *arg)
{
    struct combo *c = arg;

    c->result = NULL;
    if (!c->done) {
        c->done = true;
        drop_collected(c);
    }
    settle(c);
    combo_unref(c);
}

/* ---- outcomes ---------------------------------------------------------- */

/* Input i of a gather or list delivered v (taken); returns what the
 * input's chain continues with. */
static deferred_value_t deliver_list(struct combo *c, size_t i, deferred_value_t v)
{
    deferred_failure_t *f;
    deferred_value_t keep;

    if (!deferred_value_is_failure(v)) {
        if (c->done) {
            deferred_value_release(v);
        } else if (c->flags & DEFERRED_FIRE_ON_SUCCESS) {
            c->indexed->index = i;
            c->indexed->value = v;
            v = deferred_value_make(c->indexed, indexed_release);
            c->indexed = NULL;
            drop_collected(c);
            finish(c, v);
        } else {
            c->slots[i].v = v;
            if (--c->remaining == 0) {
                v = take_array(c);
                drop_collected(c);
                finish(c, v);
            }
        }
        return deferred_value_none();
    }

    if (c->flags & DEFERRED_CONSUME_ERRORS) {
        f = deferred_value_take_failure(v);
        keep = deferred_value_none();
    } else {
        f = deferred_failure_ref(deferred_value_get_failure(v));
        keep = v;
    }
    if (c->done) {
        deferred_failure_unref(f);
    } else if (c->flags & DEFERRED_FIRE_ON_FAILURE) {
        drop_collected(c);
        finish(c, deferred_value_failure(deferred_failure_first_error(i, f)));
    } else {
        c->slots[i].v = deferred_value_failure(f);
        if (--c->remaining == 0) {
            v = take_array(c);
            drop_collected(c);
            finish(c, v);
        }
    }
    return keep;
}

/* Input i of a race delivered v (taken).  The chain continues empty. */
static void deliver_race(struct combo *c, size_t i, deferred_value_t v)
{
    deferred_failure_t *f;

    if (c->done) {
        deferred_value_release(v);
        return;
    }
    if (!deferred_value_is_failure(v)) {
        deferred_indexed_t *x = c->indexed;

        c->indexed = NULL;
        x->index = i;
        x->value = v;
        c->done = true;
        drop_collected(c);
        cancel_inputs(c);
        finish(c, deferred_value_make(x, indexed_release));
        return;
    }
    f = deferred_value_take_failure(v);
    c->failures[i] = f;
    if (++c->failed == c->n) {
        f = deferred_failure_group(c->failures, c->n);
        memset(c->failures, 0, c->n * sizeof(*c->failures));
        drop_collected(c);
        finish(c, deferred_value_failure(f));
    }
}

/* The pair every input gets (both halves): its slot's result arrived. */
static deferred_value_t on_outcome(deferred_value_t v, void *arg)
{
    struct slot *s = arg;
    struct combo *c = s->owner;
    deferred_t *held = s->input;
    size_t i = (size_t)(s - c->slots);

    s->input = NULL;
    if (held != DETACHED)
        c->pending--;
    if (c->aborted) {
        /* pass through */
    } else if (c->mode == MODE_RACE) {
        deliver_race(c, i, v);
        v = deferred_value_none();
    } else {
        v = deliver_list(c, i, v);
    }
    if (held != DETACHED)
        deferred_unref(held); /* the input's runner holds its own */
    settle(c);
    combo_unref(c); /* the pair's reference */
    return v;
}

/* ---- building ---------------------------------------------------------- */

/* Unpause, in input order, the inputs held while building (slots first to
 * last, when first <= last). */
static void resume_held(struct combo *c, size_t first, size_t last)
{
    size_t i;

    for (i = first; i <= last && i < c->inited; i++) {
        struct slot *s = &c->slots[i];

        if (s->v.release == held_mark) {
            deferred_t *in = s->v.ptr;

            s->v = deferred_value_none();
            deferred_unpause(in);
        }
    }
}

static deferred_t *combine(enum mode mode, deferred_t *const *inputs, size_t n,
                           unsigned flags)
{
    struct combo *c;
    deferred_t *r;
    size_t i, size, attached = 0, held_first = SIZE_MAX, held_last = 0;
    int err = ENOMEM;

    if ((n > 0 && !inputs) ||
        (flags & ~(DEFERRED_CONSUME_ERRORS | DEFERRED_FIRE_ON_SUCCESS |
                   DEFERRED_FIRE_ON_FAILURE)))
        goto out_einval;
    for (i = 0; i < n; i++)
        if (!inputs[i])
            goto out_einval;

    if (n == 0) {
        if (mode == MODE_RACE) {
            r = deferred_fail(deferred_failure_group(NULL, 0));
        } else {
            deferred_array_t *empty = deferred_array_new(0);

            r = empty ? deferred_succeed(deferred_value_array(empty)) : NULL;
        }
        if (!r)
            errno = ENOMEM;
        return r;
    }

    size = sizeof(struct slot) + (mode == MODE_RACE ? sizeof(deferred_failure_t *) : 0);
    if (n > (SIZE_MAX - sizeof(*c)) / size)
        goto out_errno;
    c = deferred__malloc(sizeof(*c) + n * size);
    if (!c)
        goto out_errno;
    memset(c, 0, sizeof(*c));
    c->refs = 1; /* ours, while building */
    c->n = n;
    c->remaining = n;
    c->flags = flags;
    c->mode = mode;
    c->busy = 1;
    if (mode == MODE_RACE) {
        c->failures = (deferred_failure_t **)(void *)(c->slots + n);
        memset(c->failures, 0, n * sizeof(*c->failures));
    } else {
        c->array = deferred_array_new(n);
        if (!c->array)
            goto out_free_combo;
    }
    if (mode == MODE_RACE || (flags & DEFERRED_FIRE_ON_SUCCESS)) {
        c->indexed = deferred__malloc(sizeof(*c->indexed));
        if (!c->indexed)
            goto out_free_combo;
        c->indexed->index = 0;
        c->indexed->value = deferred_value_none();
    }

    c->refs++; /* R's */
    r = deferred_new_cancellable(on_cancel, c, on_result_freed);
    if (!r)
        goto out_free_combo; /* on_result_freed dropped R's reference */
    c->result = r;

    /*
     * One pass: each slot is initialised and its pair appended.  An input
     * still unfired cannot run the pair now (nothing here runs user
     * code), so only inputs that had fired are paused first and resumed,
     * in input order, once every pair is in place.  A multi-fire input is
     * waited on through its end, as chaining on one does.
     */
    for (attached = 0; attached < n; attached++) {
        struct slot *s = &c->slots[attached];
        deferred_t *in = inputs[attached];

        s->owner = c;
        s->input = NULL;
        s->v = deferred_value_none();
        c->inited = attached + 1;
        in = deferred_is_multi(in) ? deferred_end(in) : deferred_ref(in);
        if (deferred_has_fired(in)) {
            if (deferred_pause(in) < 0) {
                deferred_unref(in);
                err = EINVAL;
                goto out_abort;
            }
            s->v = deferred_value_make(in, held_mark);
            if (held_first == SIZE_MAX)
                held_first = attached;
            held_last = attached;
        }
        c->refs++; /* the pair's */
        c->pending++;
        s->input = in;
        if (deferred_add_both(in, on_outcome, s) < 0) {
            s->input = NULL;
            c->pending--;
            c->refs--;
            if (s->v.release == held_mark) {
                s->v = deferred_value_none();
                deferred_unpause(in);
            }
            deferred_unref(in);
            goto out_abort;
        }
    }
    resume_held(c, held_first, held_last);
    c->busy--;
    settle(c);
    combo_unref(c);
    return r;

out_abort:
    /* The pairs in place pass everything through; let the inputs go on,
     * detach the pairs, and free R unfired. */
    c->aborted = true;
    c->done = true;
    resume_held(c, held_first, held_last);
    c->busy--;
    settle(c);
    deferred_unref(r);
    combo_unref(c);
    errno = err;
    return NULL;

out_free_combo:
    combo_unref(c);
out_errno:
    errno = err;
    return NULL;
out_einval:
    errno = EINVAL;
    return NULL;
}

deferred_t *deferred_gather(deferred_t *const *inputs, size_t n, unsigned flags)
{
    if (flags & ~DEFERRED_CONSUME_ERRORS) {
        errno = EINVAL;
        return NULL;
    }
    return combine(MODE_GATHER, inputs, n, flags | DEFERRED_FIRE_ON_FAILURE);
}

deferred_t *deferred_list(deferred_t *const *inputs, size_t n, unsigned flags)
{
    return combine(MODE_LIST, inputs, n, flags);
}

deferred_t *deferred_race(deferred_t *const *inputs, size_t n)
{
    return combine(MODE_RACE, inputs, n, 0);
}
