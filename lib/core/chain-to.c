/*
 * chain-to.c: deferred_chain_to() and the cycle check that keeps a
 * deferred from holding itself.
 *
 * A deferred holds what it waits on, a combinator's result holds its
 * inputs, a stream holds its end, a coroutine's await pair holds the
 * coroutine, and a chain_to() entry will fire its target.  A link that closes a loop of these would make a deadlock (each
 * waits for the other) and a leak (nothing frees either), so chain_to()
 * refuses it, the runner turns a callback's returned deferred that
 * closes one into an EDEADLK failure, and so does a coroutine's await
 * (async.c).  The walk is iterative and linear in
 * what it visits; it runs only where a cycle is possible at all (see
 * chain_on() in runner.c).
 */
#include <string.h>

#include "deferred-private.h"
#include "core-private.h"

static deferred_value_t chain_to_fn(deferred_value_t v, void *arg)
{
    deferred_t *target = arg;

    if (deferred_has_fired(target) && !(target->flags & F_SUPPRESS)) {
        /* Twisted raises AlreadyCalledError into the chain: so do we. */
        deferred_value_release(v);
        return deferred_value_failure(deferred_failure_new_at(
            NULL, 0, DEFERRED_DOMAIN_LIBRARY, EALREADY,
            "deferred_chain_to: the target deferred had already fired"));
    }
    if (deferred_value_is_failure(v))
        deferred_errback(target, deferred_value_take_failure(v));
    else
        deferred_callback(target, v);
    return deferred_value_none();
}

static void unref_destroy(void *arg)
{
    deferred_unref(arg);
}

/* ---- the cycle check --------------------------------------------------- */

/* A walk over what deferreds hold: visited ones are flagged F_VISIT and
 * listed in seen, which is also the queue of the walk. */
struct walk {
    deferred_t **seen;
    size_t n, cap;
    deferred_t *want;
    deferred_t *first[32];
    bool found, nomem;
};

static void walk_visit(deferred_t *d, void *ctx)
{
    struct walk *w = ctx;

    if (!d || (d->flags & F_VISIT) || w->found || w->nomem)
        return;
    if (d == w->want) {
        w->found = true;
        return;
    }
    if (w->n == w->cap) {
        size_t cap = w->cap * 2;
        deferred_t **seen;

        if (cap > SIZE_MAX / sizeof(*seen)) {
            w->nomem = true;
            return;
        }
        seen = deferred__malloc(cap * sizeof(*seen));
        if (!seen) {
            w->nomem = true;
            return;
        }
        memcpy(seen, w->seen, w->n * sizeof(*seen));
        if (w->seen != w->first)
            deferred__free(w->seen);
        w->seen = seen;
        w->cap = cap;
    }
    d->flags |= F_VISIT;
    w->seen[w->n++] = d;
}

/*
 * Whether from holds want, directly or through others: what a deferred
 * waits on, a combinator's inputs, a stream's end, what its holding pairs
 * hold (a coroutine awaiting it) and, with targets, the deferreds its
 * pending chain_to() entries will fire.  1 when it does, 0
 * when not, -ENOMEM.  Iterative, linear in what it visits.
 */
int deferred__holds(deferred_t *from, deferred_t *want, bool targets)
{
    struct walk w;
    size_t k;

    w.seen = w.first;
    w.n = 0;
    w.cap = sizeof(w.first) / sizeof(w.first[0]);
    w.want = want;
    w.found = w.nomem = false;
    walk_visit(from, &w);
    for (k = 0; k < w.n && !w.found && !w.nomem; k++) {
        deferred_t *d = w.seen[k];
        struct deferred_ext *x = d->ext;
        uint32_t i;

        walk_visit(d->chained_to, &w);
        if (x && x->multi)
            walk_visit(x->multi->end, &w);
        if (x && x->inputs)
            x->inputs(x->inputs_arg, walk_visit, &w);
        for (i = first_live(d); i < d->n; i++) {
            uint8_t kind = kind_of(d, i);
            struct full_arg *fa = d->links[i].arg;

            if (kind & LINK_HOLDS)
                walk_visit(((struct deferred__holding *)d->links[i].arg)->holds, &w);
            else if (targets && (kind & LINK_FULL) && fa->cb == chain_to_fn)
                walk_visit(fa->cb_arg, &w);
        }
    }
    for (k = 0; k < w.n; k++)
        w.seen[k]->flags &= ~F_VISIT;
    if (w.seen != w.first)
        deferred__free(w.seen);
    return w.found ? 1 : w.nomem ? -ENOMEM : 0;
}

int deferred_chain_to(deferred_t *d, deferred_t *target)
{
    int rc;

    if (!d || !target || d == target || !d->refs || !target->refs)
        return -EINVAL;
    /* d will hold target: refuse a cycle that nothing could free. */
    rc = deferred__holds(target, d, true);
    if (rc != 0)
        return rc > 0 ? -EDEADLK : rc;
    rc = deferred_add_both_full(d, chain_to_fn, deferred_ref(target), unref_destroy);
    if (rc == 0)
        target->flags |= F_HELD;
    return rc;
}
