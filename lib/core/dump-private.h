/*
 * dump-private.h: what the core keeps for deferred_dump() (dump.c) in a
 * deferred's rare part, and the two hooks core.c calls.  Only debug mode
 * registers a deferred; the fields stay zero otherwise.
 */
#ifndef DEFERRED_DUMP_PRIVATE_H
#define DEFERRED_DUMP_PRIVATE_H

#include "deferred-private.h"
#include "deferred/dump.h"

struct deferred__registry;

struct deferred__dbg {
    deferred_t *prev, *next;         /* the registry's list of live deferreds */
    struct deferred__registry *reg;  /* NULL: not registered */
    deferred_dump_fn note;           /* deferred_dump_note() */
    void *note_arg;
    uint32_t epoch;                  /* the dump that wrote it */
    uint32_t parent_epoch;           /* the dump that found it held */
    size_t line;                     /* its line number in that dump */
};

/* Add d (its rare part made, its dbg zeroed) to the calling thread's
 * registry; nothing happens if the registry cannot be made. */
DEFERRED_HIDDEN void deferred__dump_register(deferred_t *d);
/* Take d out of the registry it is in (any thread may). */
DEFERRED_HIDDEN void deferred__dump_unregister(deferred_t *d);

#endif /* DEFERRED_DUMP_PRIVATE_H */
