/*
 * ring.h: a growable ring of values, first in first out: the rows a
 * multi-fire deferred holds back (multi.c) and the values a queue keeps
 * (combinators/sync.c).
 *
 * Zeroed, it is an empty ring that owns nothing.  It doubles when full,
 * keeping the order; the values in it are its own until popped.
 */
#ifndef DEFERRED_RING_H
#define DEFERRED_RING_H

#include "deferred-private.h"

struct deferred__ring {
    deferred_value_t *items;
    size_t cap, head, len;
};

/* Make room for one more value: 0, or -ENOMEM (the ring is unchanged, and
 * so is its size computation: it never wraps). */
DEFERRED_HIDDEN int deferred__ring_grow(struct deferred__ring *r);

/* Release every value and free the ring's block; it is empty again. */
DEFERRED_HIDDEN void deferred__ring_clear(struct deferred__ring *r);

/* Append v (taken on success): 0, or -ENOMEM with v still the caller's. */
static inline int deferred__ring_push(struct deferred__ring *r, deferred_value_t v)
{
    if (r->len == r->cap && deferred__ring_grow(r) < 0)
        return -ENOMEM;
    r->items[(r->head + r->len) % r->cap] = v;
    r->len++;
    return 0;
}

/* Take the first value out; the ring must not be empty. */
static inline deferred_value_t deferred__ring_pop(struct deferred__ring *r)
{
    deferred_value_t v = r->items[r->head];

    r->head = (r->head + 1) % r->cap;
    r->len--;
    return v;
}

#endif /* DEFERRED_RING_H */
