/*
 * process-private.h: the process's state and the stage structure, shared
 * by the process engine (process.c: lifecycle and state; flow.c: delivery,
 * failure frames and flow control; groups.c: tags and subordinates) and
 * the built-in stages (sources.c, transforms.c, sinks.c), so that their
 * per-item paths read a stage's data without a function call.  Users see
 * deferred_stage_t as opaque.
 *
 * The state, once: a process is in one phase (enum deferred__phase); a
 * producer is live, cancelled or finished (enum deferred__stopped).  Each
 * change is one transition function in process.c (or groups.c for the
 * routes), and those are the only writers.  What the per-item path reads,
 * a stage's fast flag, is derived from that state by deferred__refresh_fast()
 * and refreshed by the transitions that can change it, nowhere else.
 */
#ifndef DEFERRED_PROCESS_PRIVATE_H
#define DEFERRED_PROCESS_PRIVATE_H

#include "core/deferred-private.h"
#include "deferred/process.h"
#include "deferred/dump.h"

/*
 * The life of a process.  Always forward, one step at a time except that
 * a stream may go from OPEN straight to FINISHING (its producers all
 * finished) and a run that was cancelled before it started goes from
 * BUILDING to ENDING.  Why a stream ends (p->failure, p->cancelling) is
 * kept beside the phase: a failure may still come while the stages finish.
 */
enum deferred__phase {
    DEFERRED__BUILDING,  /* stages are added; not run yet */
    DEFERRED__OPEN,      /* running: items flow */
    DEFERRED__ENDING,    /* a cancel or a failure is recorded: the stage
                            calls on the stack unwind, then settle() */
    DEFERRED__FINISHING, /* the stages' finishes run, in order */
    DEFERRED__FINISHED   /* the process's deferred fired */
};

/* A producer's own state (other stages stay LIVE). */
enum deferred__stopped {
    DEFERRED__LIVE,      /* may emit when not paused */
    DEFERRED__CANCELLED, /* its cancel ran */
    DEFERRED__DONE       /* it finished */
};

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
    bool names_items;     /* its describe names the items itself (a batch,
                             whose count of items handed is not the one at
                             fault): a frame shows no "item N" before it */
    bool fast;            /* derived (deferred__refresh_fast()): its emits
                             may take the per-item fast path */
    bool in_resume;
    bool resume_again;
    uint8_t stopped;      /* enum deferred__stopped */
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
    deferred_failure_t *failure; /* the stream fails with it (taken into the
                                    outcome as the stages finish) */
    deferred_t *finish_wait;  /* what a suspended finish waits on */
    deferred_value_t outcome; /* the producers' end value */
    const char *file;        /* the user's deferred_process_run() call */
    int line;
    uint8_t phase;           /* enum deferred__phase */
    bool cancelling;         /* a cancel was asked for (before or during the
                                run): the stream ends with ECANCELED */
    bool aborted;            /* the stream ends by a cancel or a failure:
                                what a finish waits on is cancelled */
    deferred_dump_holder_t dump; /* listed while it runs (debug mode) */
};

/* A producer should not emit: paused, cancelled, finished, or the stream
 * no longer flows.  deferred_stage_is_paused() for a producer. */
static inline bool deferred__producer_blocked(const deferred_stage_t *st)
{
    return st->paused || st->stopped != DEFERRED__LIVE ||
           st->p->phase != DEFERRED__OPEN;
}

/* ---- shared by the engine's files -------------------------------------- */

/* Recompute every stage's fast flag from the state: the stream is OPEN,
 * the stage has a next stage without subordinates or autopause, and (a
 * producer) it is LIVE.  Only the transitions call it. */
DEFERRED_HIDDEN void deferred__refresh_fast(deferred_process_t *p);

/* The transition that records the stream's failure f (taken): false, and
 * f released, when the stream already fails or has finished.  The caller
 * adds the failure's first frame (deferred__add_frames()). */
DEFERRED_HIDDEN bool deferred__set_failure(deferred_process_t *p, deferred_failure_t *f);

/* The one place frames go on the failure in flight: st's, handling item
 * in a call at depth, unless the failure has frames down to that depth
 * already; through: also every stage before st back to the producers (a
 * failure that no call on the stack will carry up).  flow.c. */
DEFERRED_HIDDEN void deferred__add_frames(deferred_process_t *p, deferred_stage_t *st,
                                          deferred_value_t item, uint32_t depth,
                                          bool through);

/* st failed with f (taken) while holding item: the stream fails, unless
 * it already does.  flow.c. */
DEFERRED_HIDDEN void deferred__fail(deferred_stage_t *st, deferred_failure_t *f,
                                    deferred_value_t item);

/* May st send downstream now (flow.c)? */
DEFERRED_HIDDEN bool deferred__may_emit(const deferred_stage_t *st);

/* A failure the process makes itself (library domain), recorded at the
 * user's deferred_process_run() call.  process.c. */
DEFERRED_HIDDEN deferred_failure_t *deferred__process_failure(const deferred_process_t *p,
                                                              int code, const char *fmt,
                                                              ...) DEFERRED_PRINTF(3, 4);

/* Let go of st's innermost route, and of the subordinate in it
 * (groups.c). */
DEFERRED_HIDDEN void deferred__route_pop(deferred_stage_t *st);

/* Pauses on every producer (flow.c).  by: the stage that asks, or NULL. */
DEFERRED_HIDDEN void deferred__pause_producers(deferred_process_t *p, deferred_stage_t *by);
DEFERRED_HIDDEN void deferred__resume_producers(deferred_process_t *p, deferred_stage_t *by);

/* Run a producer's resume, never nested (flow.c). */
DEFERRED_HIDDEN void deferred__call_resume(deferred_stage_t *st, deferred_stage_t *by);

/* A map stage's part of its line in a dump: the results queued, and the
 * deferred it waits on, under it (transforms.c).  Nothing for another
 * stage. */
DEFERRED_HIDDEN void deferred__map_dump(deferred_dump_t *w, const deferred_stage_t *st);

/* ---- stage calls: depth ------------------------------------------------ */

/* deferred__leave() of the outermost call: settle, drop its reference
 * (process.c). */
DEFERRED_HIDDEN DEFERRED_NOINLINE void deferred__settle_unref(deferred_process_t *p);

/* Enter and leave a stage call: every stage call and every run of the
 * stages' finishes is inside one.  Leaving the outermost settles what the
 * calls left pending (process.c's settle()).  The outermost call holds a
 * reference across it (a settle may drop the process's own); inner calls
 * are covered by it. */
static inline DEFERRED_ALWAYS_INLINE void deferred__enter(deferred_process_t *p)
{
    if (p->depth++ == 0)
        p->refs++;
}

static inline DEFERRED_ALWAYS_INLINE void deferred__leave(deferred_process_t *p)
{
    if (DEFERRED_UNLIKELY(--p->depth == 0))
        deferred__settle_unref(p);
}

/* ---- the delivery step ------------------------------------------------- */

/* The general emit, when self's fast flag is off (flow.c). */
DEFERRED_HIDDEN DEFERRED_NOINLINE int deferred__emit_slow(deferred_stage_t *self,
                                                          deferred_value_t tag,
                                                          deferred_value_t item);

/* What follows a handle that failed (f), or after which self may no longer
 * take the fast path: frames for the failure, the item released, the call
 * left (flow.c). */
DEFERRED_HIDDEN DEFERRED_NOINLINE int deferred__emit_unwind(deferred_stage_t *self,
                                                            deferred_stage_t *to,
                                                            deferred_value_t item,
                                                            deferred_failure_t *f);

/*
 * The one delivery step: self, inside a stage call (deferred__enter()),
 * hands item to to, the stage or subordinate that gets it (both counted
 * by the caller).  Both emits
 * end in it: deferred__emit() inline, deferred__emit_slow() after its
 * checks.  When self's fast flag is still on after the handle (the stream
 * flows, nothing changed the way to self's next stage), the item costs
 * its release and the leave; anything else unwinds in flow.c.
 */
static inline DEFERRED_ALWAYS_INLINE int deferred__deliver(deferred_process_t *p,
                                                           deferred_stage_t *self,
                                                           deferred_stage_t *to,
                                                           deferred_value_t tag,
                                                           deferred_value_t item)
{
    deferred_failure_t *f;

    f = to->ops->handle(to, self, tag, &item);
    if (DEFERRED_UNLIKELY(f != NULL || !self->fast))
        return deferred__emit_unwind(self, to, item, f);
    deferred__release(item);
    deferred__leave(p);
    return 0;
}

/*
 * deferred_stage_emit_tagged(), the per-item path.  The fast flag sums up
 * everything the general emit checks (the stream is OPEN, a live producer
 * or a processor, a plain next stage), so an item costs that one test,
 * the step above and one indirect call.
 */
static inline DEFERRED_ALWAYS_INLINE int deferred__emit(deferred_stage_t *self,
                                                        deferred_value_t tag,
                                                        deferred_value_t item)
{
    deferred_process_t *p;

    if (DEFERRED_UNLIKELY(!self || !self->fast))
        return deferred__emit_slow(self, tag, item);
    p = self->p;
    deferred__enter(p);
    self->items += self->producer;
    self->down->items++;
    return deferred__deliver(p, self, self->down, tag, item);
}

/* ---- for the built-in stages ------------------------------------------- */

/* deferred_stage_data() for the library's own stages. */
#define STAGE_DATA(st) ((st)->data)

/* State shared between a stage and the callbacks it handed out (a stage
 * may be freed before the deferred it gave a callback lets go of it). */
struct deferred__shared {
    uint32_t refs;
    deferred_stage_t *self; /* NULL once the stage is gone */
};

/* Drop a reference on a struct deferred__shared (sources.c); a destroy
 * callback. */
DEFERRED_HIDDEN void deferred__shared_unref(void *arg);

#endif /* DEFERRED_PROCESS_PRIVATE_H */
