/*
 * core-private.h: the deferred's structure, shared by the core (core.c)
 * and multi-fire deferreds (multi.c), and what each calls of the other.
 * Users see deferred_t as opaque.
 */
#ifndef DEFERRED_CORE_PRIVATE_H
#define DEFERRED_CORE_PRIVATE_H

#include "deferred-private.h"

#ifndef DEFERRED_INLINE_LINKS
#define DEFERRED_INLINE_LINKS 10
#endif

/* What a chain entry does.  A pair added with both halves takes two
 * consecutive entries, PAIR_CB then PAIR_EB: the runner picks one and
 * steps over both. */
enum link_kind {
    LINK_CB = 1, /* runs on a value, skipped on a failure */
    LINK_EB,     /* runs on a failure, skipped on a value */
    LINK_BOTH,   /* runs on either */
    LINK_PAIR_CB,
    LINK_PAIR_EB,
    LINK_DEAD, /* a continue entry whose outer deferred is gone */
    LINK_KIND = 0x3f,
    LINK_OWNED = 0x40, /* flag: the argument is a struct deferred__owned */
    LINK_FULL = 0x80 /* flag: the argument is a struct full_arg to destroy */
};

struct link {
    deferred_fn fn;
    void *arg;
};

/* Flags of a deferred. */
enum {
    F_CALLED = 1u << 0,    /* fired: result is set (or moved on) */
    F_RUNNING = 1u << 1,   /* on a runner's stack */
    F_CANCELLED = 1u << 2, /* cancel began: the canceller has run */
    F_SUPPRESS = 1u << 3,  /* swallow one later fire (cancel, no canceller) */
    F_MULTI = 1u << 4,     /* multi-fire: entries are kept, one run per row */
    F_ROW = 1u << 5,       /* multi-fire: a row is in flight in the chain */
    F_LATER_RUN = 1u << 6, /* queued to run once the nesting unwinds */
    F_LATER_CANCEL = 1u << 7, /* queued to be cancelled likewise */
    F_VISIT = 1u << 8,     /* seen by the cycle check under way */
    F_HELD = 1u << 9       /* once a chain_to() target or a combinator's
                              input: chaining on it checks for a cycle */
};

/* The state of a multi-fire deferred.  Queued rows wait in a ring. */
struct multi {
    deferred_t *end;           /* the end deferred (a reference) */
    deferred_value_t *queue;   /* ring of rows waiting for their turn */
    size_t qhead, qlen, qcap;
    uint64_t rows;             /* rows accepted */
    uint64_t row;              /* number of the row in flight or last run */
    deferred_value_t final;    /* the end value, once finish was called */
    bool closing;              /* finish called: end when the queue drains */
    bool ended;
    bool flow_paused;          /* what the flow hook was last told */
    deferred_flow_fn flow;
    void *flow_arg;
};

/* The rarely needed parts, allocated only when used. */
struct deferred_ext {
    deferred_destroy_fn canceller_destroy;
    const char *new_file;
    const char *fire_file;
    int new_line;
    int fire_line;
    struct multi *multi;
    deferred__inputs_fn inputs; /* what a combinator's result holds */
    void *inputs_arg;
};

struct deferred {
    uint32_t refs;
    uint32_t paused; /* the user's pause count */
    uint32_t flags;
    uint32_t pos;    /* next entry to run */
    uint32_t n;      /* entries in use */
    uint32_t cap;    /* entries that fit in links */
    uint32_t waiters; /* continue entries of other deferreds in this chain */
    uint32_t wait_idx; /* while waiting: where its continue entry sits */
    deferred_value_t result;
    deferred_t *chained_to; /* the deferred this one waits on (a reference) */
    deferred_t *next;       /* runner stack, later queue or free list */
    struct link *links;
    uint8_t *kinds;
    deferred_canceller_fn canceller;
    void *canceller_arg;
    struct deferred_ext *ext;
    /* The kinds first: with the header and the first entries they share a
     * cache line, so a short chain touches two lines, not three. */
    uint8_t inline_kinds[DEFERRED_INLINE_LINKS];
    struct link inline_links[DEFERRED_INLINE_LINKS];
};

/* core.c: the chain runner and the fire of a single-shot deferred. */
DEFERRED_HIDDEN void deferred__run(deferred_t *d);
DEFERRED_HIDDEN int deferred__fire(deferred_t *d, deferred_value_t v,
                                   const char *file, int line);

/* multi.c: what the core calls for a multi-fire deferred. */
/* Free the multi-fire state (when the deferred is freed). */
DEFERRED_HIDDEN void deferred__multi_free(struct multi *m);
/* After the runner stopped on d: retire a row that went through the whole
 * chain and load the next one; true when a row is ready to run. */
DEFERRED_HIDDEN bool deferred__multi_step(deferred_t *d);
/* Tell the flow hook when d starts or stops taking rows. */
DEFERRED_HIDDEN void deferred__flow_update(deferred_t *d);
/* deferred_cancel() of a multi-fire deferred. */
DEFERRED_HIDDEN int deferred__multi_cancel(deferred_t *d, const char *file,
                                           int line);

#endif /* DEFERRED_CORE_PRIVATE_H */
