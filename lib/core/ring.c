/*
 * ring.c: the growable ring of values (ring.h).
 */
#include <errno.h>
#include <stdint.h>

#include "ring.h"

#define RING_FIRST_CAP 16

int deferred__ring_grow(struct deferred__ring *r)
{
    size_t cap, i;
    deferred_value_t *items;

    if (r->cap == 0)
        cap = RING_FIRST_CAP;
    else if (r->cap > SIZE_MAX / 2 / sizeof(*items))
        return -ENOMEM;
    else
        cap = r->cap * 2;
    items = deferred__malloc(cap * sizeof(*items));
    if (!items)
        return -ENOMEM;
    for (i = 0; i < r->len; i++)
        items[i] = r->items[(r->head + i) % r->cap];
    deferred__free(r->items);
    r->items = items;
    r->cap = cap;
    r->head = 0;
    return 0;
}

void deferred__ring_clear(struct deferred__ring *r)
{
    while (r->len)
        deferred_value_release(deferred__ring_pop(r));
    deferred__free(r->items);
    r->items = NULL;
    r->cap = r->head = 0;
}
