/*
 * fanin.c: the fan-in engine of gather, list, race and merge (see
 * fanin-private.h for what it does and what the modes supply).
 *
 * The design decision to know is how the block stays alive without a
 * cycle.  out never owns the block's inputs through a reference cycle:
 * the block is freed when out is gone and no pair of it can still run.
 * Each input's pair has its slot as an owned argument: the core tells the
 * slot when the pair is done, after it ran or when its input is freed
 * with it unrun, and that drops the pair's reference on the block.  So
 * once out is settled, the engine lets go of the inputs still pending by
 * dropping its references on them: nothing to append, nothing to
 * allocate, nothing that can fail.
 */
#include <errno.h>
#include <stdalign.h>
#include <stddef.h>
#include <string.h>

#include "deferred/dump.h"
#include "fanin-private.h"
#include "deferred/multi.h"

char deferred__fanin_detached;

/* How many inputs ahead the build and the pair prefetch. */
#define FANIN_PREFETCH 8

/* ---- the block's life -------------------------------------------------- */

struct fanin *deferred__fanin_new(size_t n, size_t mode_size,
                                  const struct fanin_ops *ops, bool ordered)
{
    const size_t align = alignof(max_align_t);
    struct fanin *f;
    size_t head;

    if (n > (SIZE_MAX - sizeof(*f) - align) / sizeof(struct fanin_slot))
        goto out_enomem;
    head = sizeof(*f) + n * sizeof(struct fanin_slot);
    head = (head + align - 1) / align * align;
    if (mode_size > SIZE_MAX - head)
        goto out_enomem;
    f = deferred__malloc(head + mode_size);
    if (!f)
        goto out_enomem;
    memset(f, 0, sizeof(*f));
    memset((char *)f + head, 0, mode_size);
    f->refs = 1;
    f->n = n;
    f->busy = 1;
    f->building = true;
    f->ordered = ordered;
    f->ops = ops;
    f->mode = (char *)f + head;
    return f;

out_enomem:
    errno = ENOMEM;
    return NULL;
}

void deferred__fanin_unref(struct fanin *f)
{
    if (--f->refs == 0)
        deferred__free(f);
}

/* A slot's pair is done (it ran, or its input was freed with it unrun):
 * its reference on the block goes. */
static void slot_dispose(struct deferred__owned *own)
{
    struct fanin_slot *s = (struct fanin_slot *)(void *)own;

    if (s->input == FANIN_DETACHED)
        s->input = NULL; /* dropped unrun after the engine let it go */
    deferred__fanin_unref(s->owner);
}

/* Let go of every input still pending (see the file comment).  Dropping a
 * reference may free an input and so dispose of its pair: the block's own
 * reference keeps it meanwhile. */
static void detach_inputs(struct fanin *f)
{
    size_t i;

    if (!f->pending)
        return; /* every result arrived: nothing to let go, no pass */
    f->refs++;
    for (i = 0; i < f->inited && f->pending; i++) {
        struct fanin_slot *s = &f->slots[i];
        deferred_t *in = s->input;

        if (!FANIN_HELD(s))
            continue;
        s->input = FANIN_DETACHED;
        f->pending--;
        if (f->ops->over)
            f->ops->over(f, i);
        deferred_unref(in);
    }
    deferred__fanin_unref(f);
}

/* Once out is settled and no loop walks the slots, detach (once). */
static void try_detach(struct fanin *f)
{
    if (f->done && !f->busy && !f->detached) {
        f->detached = true;
        detach_inputs(f);
    }
}

void deferred__fanin_out_freed(void *arg)
{
    struct fanin *f = arg;

    f->out = NULL;
    if (!f->done) {
        f->done = true;
        if (f->ops->drop && !f->aborted)
            f->ops->drop(f);
    }
    try_detach(f);
    deferred__fanin_unref(f);
}

/* What out holds references on, for deferred_chain_to()'s cycle check. */
static void visit_inputs(void *arg, deferred__visit_fn visit, void *ctx)
{
    struct fanin *f = arg;
    size_t i;

    for (i = 0; i < f->inited; i++)
        if (FANIN_HELD(&f->slots[i]))
            visit(f->slots[i].input, ctx);
    if (f->ops->visit)
        f->ops->visit(f, visit, ctx);
}

/* out's line in a dump: which combinator, of how many inputs, how many
 * still pending. */
static void dump_note(deferred_dump_t *dump, void *arg)
{
    struct fanin *f = arg;

    deferred_dump_str(dump, "combinator", f->ops->name(f));
    deferred_dump_int(dump, "inputs", (long long)f->n);
    deferred_dump_int(dump, "pending", (long long)f->pending);
}

void deferred__fanin_set_out(struct fanin *f, deferred_t *out)
{
    f->out = out;
    deferred__set_inputs(out, visit_inputs, f);
    deferred_dump_note(out, dump_note, f);
}

/* ---- cancelling -------------------------------------------------------- */

void deferred__fanin_cancel_inputs(struct fanin *f)
{
    if (f->building) {
        f->cancel_wanted = true; /* once every pair is in place */
        return;
    }
    f->refs++;
    f->busy++;
    /* The cursor is shared by every loop, so a loop started from inside
     * another (a race won during out's cancel, a canceller firing another
     * input) goes on where the first one was: each slot is seen once. */
    while (f->cancel_next < f->inited) {
        struct fanin_slot *s = &f->slots[f->cancel_next++];

        if (FANIN_HELD(s)) {
            deferred_t *in = deferred_ref(s->input);

            deferred_cancel(in);
            deferred_unref(in);
        }
    }
    f->busy--;
    try_detach(f);
    deferred__fanin_unref(f);
}

/* ---- the pair ---------------------------------------------------------- */

/* The pair every slot gets (both halves): its input's result arrived.
 * The per-input path of every fan-in: kept short. */
static deferred_value_t on_outcome(deferred_value_t v, void *arg)
{
    struct fanin_slot *s = arg;
    struct fanin *f = s->owner;
    deferred_t *held = s->input;
    size_t i = (size_t)(s - f->slots);

    s->input = NULL;
    /* Inputs often end in the order they were given (a queue, timers of
     * one delay, a batch fired in a loop): in a large fan-in, ask for the
     * input a few places on to be fetched while this one is finished. */
    if (i + FANIN_PREFETCH < f->inited && FANIN_HELD(s + FANIN_PREFETCH))
        deferred__prefetch_deferred(s[FANIN_PREFETCH].input);
    if (DEFERRED_LIKELY(held != FANIN_DETACHED))
        f->pending--;
    if (DEFERRED_LIKELY(!f->aborted))
        v = f->ops->outcome(f, i, v);
    if (DEFERRED_LIKELY(held != FANIN_DETACHED)) {
        if (f->ops->over)
            f->ops->over(f, i);
        deferred_unref(held); /* the input's runner holds its own */
    }
    if (DEFERRED_UNLIKELY(f->done))
        try_detach(f);
    return v; /* the pair's reference goes in slot_dispose(), just after */
}

/* ---- building ---------------------------------------------------------- */

/* The build failed: every pair in place passes through from now on, the
 * mode undoes its part, the slots whose pair waited for the second pass
 * are let go unattached; the others are detached once the build ends. */
static void abort_build(struct fanin *f)
{
    size_t i;

    f->aborted = true;
    f->done = true;
    if (f->ops->abort)
        f->ops->abort(f);
    if (f->ops->drop)
        f->ops->drop(f);
    for (i = 0; i < f->inited; i++) {
        struct fanin_slot *s = &f->slots[i];

        if (s->owner)
            continue;
        s->owner = f;
        if (FANIN_HELD(s)) {
            deferred_t *in = s->input;

            s->input = NULL;
            f->pending--;
            if (f->ops->over)
                f->ops->over(f, i);
            deferred_unref(in);
        }
    }
}

int deferred__fanin_attach(struct fanin *f, deferred_t *const *inputs)
{
    size_t i, first_late = SIZE_MAX;
    int rc;

    /*
     * First pass: each slot is set up and its pair appended.  Nothing
     * here runs user code: an input still unfired cannot run the pair,
     * and an input whose result is already there (it would run the pair
     * at once) waits for the second pass.  A multi-fire input is waited on
     * through its end, as chaining on one does.
     */
    for (i = 0; i < f->n; i++) {
        struct fanin_slot *s = &f->slots[i];
        deferred_t *in = inputs[i];
        deferred_t *w;

        /* A large fan-in is bound by the latency of fetching each input
         * (two cache lines: the header and the first entries); ask for
         * the one a few places ahead. */
        if (i + FANIN_PREFETCH < f->n)
            deferred__prefetch_deferred(inputs[i + FANIN_PREFETCH]);
        w = deferred_is_multi(in) ? deferred_multi_when_finished(in) : deferred_ref(in);

        s->own.dispose = slot_dispose;
        s->owner = f;
        s->input = w;
        f->inited = i + 1;
        f->pending++;
        if (deferred_has_result(w)) {
            if (f->ordered) {
                s->owner = NULL;
                if (first_late == SIZE_MAX)
                    first_late = i;
                continue;
            }
            if (f->ops->hold && (rc = f->ops->hold(f, i, w)) < 0)
                goto out_abort_slot;
        }
        f->refs++; /* the pair's */
        if ((rc = deferred__add_both_owned(w, on_outcome, &s->own)) < 0) {
            f->refs--;
            goto out_abort_slot;
        }
        if (f->ops->attach && (rc = f->ops->attach(f, i, in, w)) < 0) {
            abort_build(f);
            return rc;
        }
    }

    /*
     * Second pass, in input order: the inputs that had their result.  An
     * idle deferred with its result runs an added pair at once without
     * storing it, so these appends cannot fail; and since no user code
     * ran since the first pass (a race's cancel waits for the build to
     * end), each still has its result.
     */
    for (i = first_late; i < f->n; i++) {
        struct fanin_slot *s = &f->slots[i];

        if (s->owner)
            continue;
        s->owner = f;
        f->refs++;
        if (deferred__add_both_owned(s->input, on_outcome, &s->own) < 0) {
            /* Not reached (see above); if it were, the slot is let go and
             * the mode sees an allocation failure as its outcome. */
            deferred_t *in = s->input;

            f->refs--;
            s->input = NULL;
            f->pending--;
            if (!f->aborted)
                deferred_value_release(f->ops->outcome(
                    f, i, deferred_value_failure(deferred_failure_new(
                              DEFERRED_DOMAIN_LIBRARY, ENOMEM, NULL))));
            if (f->ops->over)
                f->ops->over(f, i);
            deferred_unref(in);
        }
    }
    return 0;

out_abort_slot: {
        struct fanin_slot *s = &f->slots[f->inited - 1];
        deferred_t *in = s->input;

        s->input = NULL;
        f->pending--;
        abort_build(f);
        if (f->ops->over)
            f->ops->over(f, f->inited - 1);
        deferred_unref(in);
    }
    return rc;
}

void deferred__fanin_built(struct fanin *f)
{
    f->building = false;
    f->busy--;
    if (f->cancel_wanted && !f->aborted) {
        f->cancel_wanted = false;
        deferred__fanin_cancel_inputs(f);
    }
    try_detach(f);
    deferred__fanin_unref(f);
}
