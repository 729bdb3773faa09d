/*
 * fanin-private.h: the fan-in engine (lib/combinators/fanin.c) that gather, list and
 * race (lib/combinators/gather.c) and merge (lib/combinators/merge.c) share.
 *
 * A fan-in is one block: a header, one slot per input and the mode's own
 * part (what gather collects, what merge holds), all in one allocation.
 * The engine owns everything about the block's life that the modes have
 * in common:
 *
 *  - the weak pointer to the combinator's own deferred, "out", cleared by
 *    the out's canceller destroy function (deferred__fanin_out_freed());
 *  - a reference on each input (on its end, for a multi-fire input) until
 *    that input's result reaches the engine's pair, so that cancelling out
 *    can reach it;
 *  - building: each input gets one plain callback/errback pair whose
 *    argument is its slot, so an input costs no allocation of its own.
 *    In an ordered block (gather, list, race) an input whose result is
 *    already there has its pair appended only once every other pair is in
 *    place, in input order, so an allocation failure leaves no result
 *    taken, and inputs fired before the call are seen in input order,
 *    even one listed twice (no pause: pausing an input listed twice and
 *    resuming it once released nothing).  Otherwise (merge) the mode's
 *    hold hook pauses such an input before its pair goes in;
 *  - the cancel loop: every input whose result has not arrived is
 *    cancelled at most once, in input order, through a cursor that a loop
 *    started from inside another shares;
 *  - letting go ("detaching"): once out is settled (fired, ended or gone),
 *    the engine drops its references on the inputs still pending.  Each
 *    pair has its slot as an owned argument (deferred__add_both_owned()),
 *    so the core tells the engine when the pair ran or was dropped with
 *    its input: letting go allocates nothing and cannot fail;
 *  - what chain_to's cycle check sees (deferred__set_inputs()).
 *
 * The block is freed when out is gone and every pair of it is done (ran or
 * dropped).  Nothing here recurses along the inputs.
 */
#ifndef DEFERRED_FANIN_PRIVATE_H
#define DEFERRED_FANIN_PRIVATE_H

#include "core/deferred-private.h"

struct fanin;

/* One input.  owner is NULL only while building, for an input whose
 * result was already there and whose pair waits for the second pass.
 * input is a reference on the deferred whose result ends the slot (the
 * input, or a multi-fire input's end) until the engine's pair has seen it;
 * NULL then; FANIN_DETACHED once the reference was let go with the pair
 * still pending. */
struct fanin_slot {
    struct deferred__owned own; /* the pair's argument: told when it is done */
    struct fanin *owner;
    deferred_t *input;
};

extern char deferred__fanin_detached;
#define FANIN_DETACHED ((deferred_t *)(void *)&deferred__fanin_detached)

/* Whether a slot's input is a reference still held. */
#define FANIN_HELD(s) ((s)->input && (s)->input != FANIN_DETACHED)

struct fanin_ops {
    /* Slot i's result v (taken) reached the engine's pair while the block
     * was not aborted; returns what the input's own chain continues with.
     * Called after the slot stopped holding its input (f->pending counts
     * it no more), before the engine drops that reference. */
    deferred_value_t (*outcome)(struct fanin *f, size_t i, deferred_value_t v);
    /* Optional: release what was collected for an out that will never
     * get it (out gone before it settled). */
    void (*drop)(struct fanin *f);
    /* Optional, while building, for a block that is not ordered: w (what
     * slot i waits on) has its result already; hold it (pause it) before
     * the engine's pair is appended, which would run it at once.  Returns
     * 0, or a negative errno to abort the build. */
    int (*hold)(struct fanin *f, size_t i, deferred_t *w);
    /* Optional, while building: set up input i (the caller's deferred in,
     * whose slot waits on w) after the engine's pair was appended to w.
     * Returns 0, or a negative errno to abort the build (the slot then
     * stays pending, its pair passing through, and is let go as the
     * others are). */
    int (*attach)(struct fanin *f, size_t i, deferred_t *in, deferred_t *w);
    /* Optional: slot i is over, its reference let go (its pair ran, or it
     * was detached).  Called before the engine drops the reference. */
    void (*over)(struct fanin *f, size_t i);
    /* Optional: the build failed; undo what attach did that is not undone
     * by over (called before the slots are let go). */
    void (*abort)(struct fanin *f);
    /* The combinator's name for deferred_dump() ("gather", "merge"). */
    const char *(*name)(const struct fanin *f);
    /* Optional: visit the references the mode holds besides the slots'. */
    void (*visit)(struct fanin *f, deferred__visit_fn visit, void *ctx);
};

struct fanin {
    size_t refs;        /* out's, one per pair not yet done, temps */
    size_t n;
    size_t inited;      /* slots set up so far (all, once built) */
    size_t pending;     /* slots whose input is a reference held */
    size_t cancel_next; /* next slot the cancel loops look at */
    unsigned busy;      /* building, or a loop over the slots: no detaching */
    bool building;
    bool cancel_wanted; /* a cancel asked for while building */
    bool ordered;       /* inputs with a result wait for the second pass */
    bool done;          /* out settled or gone: later results are dropped */
    bool aborted;       /* building failed: every pair passes through */
    bool detached;
    deferred_t *out;    /* weak: NULL once freed */
    const struct fanin_ops *ops;
    void *mode;         /* the mode's part, inside this block */
    struct fanin_slot slots[];
};

/* A block for n inputs with mode_size bytes for the mode (suitably
 * aligned, zeroed), one reference (the builder's), busy building.  NULL
 * with errno ENOMEM.  ordered: see the file comment (gather, list, race);
 * merge holds fired inputs itself instead. */
DEFERRED_HIDDEN struct fanin *deferred__fanin_new(size_t n, size_t mode_size,
                                                  const struct fanin_ops *ops,
                                                  bool ordered);
DEFERRED_HIDDEN void deferred__fanin_unref(struct fanin *f);

/* out's canceller destroy function (give it f with a reference taken for
 * out): out is being freed. */
DEFERRED_HIDDEN void deferred__fanin_out_freed(void *arg);
/* Record out (made with deferred__fanin_out_freed as its canceller
 * destroy), name the inputs for the cycle check, and note out for
 * deferred_dump() (the ops' name). */
DEFERRED_HIDDEN void deferred__fanin_set_out(struct fanin *f, deferred_t *out);

/* Append the pairs (see the file comment).  Returns 0, or a negative
 * errno (-ENOMEM, -EINVAL) after aborting: every pair in place passes
 * through, no result was taken, the inputs are let go.  Either way the
 * build is over: call deferred__fanin_built() next. */
DEFERRED_HIDDEN int deferred__fanin_attach(struct fanin *f, deferred_t *const *inputs);
/* End of building: runs a cancel asked for meanwhile, lets go of the
 * inputs if out is settled, drops the builder's reference. */
DEFERRED_HIDDEN void deferred__fanin_built(struct fanin *f);

/* Cancel every input whose result has not arrived, each at most once, in
 * input order (deferred while building).  Callbacks run.
 *
 * A mode marks out settled by setting f->done (results from then on are
 * its to drop); the engine lets go of the inputs still pending once the
 * pair, loop or build under way returns. */
DEFERRED_HIDDEN void deferred__fanin_cancel_inputs(struct fanin *f);

#endif /* DEFERRED_FANIN_PRIVATE_H */
