/*
 * process-private.h: the stage structure, shared by the process engine and
 * the built-in stages so that their per-item paths read a stage's data
 * without a function call.  Users see deferred_stage_t as opaque.
 */
#ifndef DEFERRED_PROCESS_PRIVATE_H
#define DEFERRED_PROCESS_PRIVATE_H

#include "deferred-private.h"

/* A group of a consumer's stream handed to a subordinate consumer. */
struct route {
    struct route *up;
    deferred_stage_t *sub;
    uint32_t depth; /* groups opened inside it that it did not delegate */
};

struct deferred_stage {
    const deferred_stage_ops_t *ops;
    void *data;
    deferred_process_t *p;
    deferred_stage_t *down; /* the stage this one emits to */
    uint32_t index;         /* position in the process, from 0 */
    unsigned flags;
    uint32_t paused;        /* producer: pause count */
    uint32_t held;          /* pauses this stage holds on the producers */
    uint64_t items;         /* handed (consumer) or emitted (producer) */
    bool producer;
    bool in_resume;
    bool resume_again;
    bool cancelled;
    bool finished;
    struct route *routes; /* consumer: delegated groups, innermost first */
};

struct deferred_process {
    uint32_t refs;
    unsigned flags;
    deferred_stage_t **stages;
    size_t n, cap;
    size_t nproducers;
    size_t producers_done;
    deferred_t *done;
    uint32_t depth;          /* stage calls on the stack */
    uint32_t level;          /* deliveries on the stack */
    uint32_t framed;         /* the level down to which the failure has frames */
    uint32_t held;           /* the process's own pauses */
    size_t finishing;        /* while finishing: index of the stage at it */
    deferred_failure_t *failure;
    deferred_t *finish_wait;  /* what a suspended finish waits on */
    deferred_value_t outcome; /* the producers' end value */
    bool open;               /* items may flow: running, no end under way */
    bool running;
    bool cancelling;
    bool finished;
    bool in_finish;
};

/* A producer should not emit: paused, cancelled, finished, or the stream
 * no longer flows.  deferred_stage_is_paused() for a producer. */
static inline bool deferred__producer_blocked(const deferred_stage_t *st)
{
    return st->paused || st->cancelled || st->finished || !st->p->open;
}

/* deferred_stage_data() for the library's own stages. */
#define STAGE_DATA(st) ((st)->data)

#endif /* DEFERRED_PROCESS_PRIVATE_H */
