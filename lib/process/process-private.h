/*
 * process-private.h: the stage structure, shared by the process engine and
 * the built-in stages so that their per-item paths read a stage's data
 * without a function call.  Users see deferred_stage_t as opaque.
 */
#ifndef DEFERRED_PROCESS_PRIVATE_H
#define DEFERRED_PROCESS_PRIVATE_H

#include "core/deferred-private.h"
#include "deferred/process.h"

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
    uint32_t groups;        /* groups it opened downstream and not closed */
    uint64_t items;         /* handed (consumer) or emitted (producer) */
    bool producer;
    bool consumer;        /* a built-in consumer: nothing may follow it */
    bool fast;            /* emits may take the per-item fast path */
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
    uint32_t framed;         /* the depth down to which the failure has frames:
                                a handle runs at the depth of its call */
    uint32_t held;           /* the process's own pauses */
    size_t finishing;        /* while finishing: index of the stage at it */
    deferred_failure_t *failure;
    deferred_t *finish_wait;  /* what a suspended finish waits on */
    deferred_value_t outcome; /* the producers' end value */
    const char *file;        /* the user's deferred_process_run() call */
    int line;
    bool open;               /* items may flow: running, no end under way */
    bool running;
    bool cancelling;
    bool aborted;            /* the stream ends by a cancel or a failure:
                                what a finish waits on is cancelled */
    bool finished;
    bool in_finish;
};

/* A producer should not emit: paused, cancelled, finished, or the stream
 * no longer flows.  deferred_stage_is_paused() for a producer. */
static inline bool deferred__producer_blocked(const deferred_stage_t *st)
{
    return st->paused || st->cancelled || st->finished || !st->p->open;
}

/* Recompute every stage's fast flag: it has a next stage without
 * subordinates or autopause, and (a producer) is neither cancelled nor
 * finished.  Called whenever one of those changes (process.c). */
DEFERRED_HIDDEN void deferred__refresh_fast(deferred_process_t *p);

/* leave() of the outermost call: settle, drop its reference (process.c). */
DEFERRED_HIDDEN DEFERRED_NOINLINE void deferred__settle_unref(deferred_process_t *p);

/* The slow halves of deferred__emit() (process.c). */
DEFERRED_HIDDEN DEFERRED_NOINLINE int deferred__emit_slow(deferred_stage_t *self,
                                                          deferred_value_t tag,
                                                          deferred_value_t item);
DEFERRED_HIDDEN DEFERRED_NOINLINE int deferred__emit_unwind(deferred_process_t *p,
                                                            deferred_stage_t *self,
                                                            deferred_stage_t *to,
                                                            deferred_value_t item,
                                                            deferred_failure_t *f);

/*
 * deferred_stage_emit_tagged(), the per-item path.  When the stream flows,
 * and the next stage is a plain one, an item costs the checks below and one
 * indirect call; everything else (a stream that is ending, subordinates,
 * autopause, a failure) takes the slow halves.
 */
static inline DEFERRED_ALWAYS_INLINE int deferred__emit(deferred_stage_t *self, deferred_value_t tag,
                                 deferred_value_t item)
{
    deferred_process_t *p;
    deferred_stage_t *to;
    deferred_failure_t *f;

    if (DEFERRED_UNLIKELY(!self || !self->fast || !(p = self->p)->open))
        return deferred__emit_slow(self, tag, item);
    to = self->down;
    if (p->depth++ == 0)
        p->refs++; /* the outermost call holds the process (see leave()) */
    self->items += self->producer;
    to->items++;
    f = to->ops->handle(to, self, tag, &item);
    if (DEFERRED_UNLIKELY(f != NULL || !p->open))
        return deferred__emit_unwind(p, self, to, item, f);
    deferred__release(item);
    if (DEFERRED_UNLIKELY(--p->depth == 0))
        deferred__settle_unref(p);
    return 0;
}

/* deferred_stage_data() for the library's own stages. */
#define STAGE_DATA(st) ((st)->data)

#endif /* DEFERRED_PROCESS_PRIVATE_H */
