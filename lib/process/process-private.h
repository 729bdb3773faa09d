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
 * a stage's fast flag (and its hop flag, for the fused runs below), is
 * derived from that state by deferred__refresh_fast() and refreshed by the
 * transitions that can change it, nowhere else.
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

/* The built-in stages a fused run is made of (deferred_stage_t.kind). */
enum deferred__kind {
    DEFERRED__KIND_OTHER, /* any other stage: never in a fused run */
    DEFERRED__KIND_MAP,
    DEFERRED__KIND_FILTER,
    DEFERRED__KIND_REDUCE /* only as the last of a run */
};

/* What a stage runs for an item delivered to it: ops->handle, or
 * deferred__fused_handle() at the head of a fused run. */
typedef deferred_failure_t *(*deferred__handle_fn)(deferred_stage_t *self,
                                                    deferred_stage_t *from,
                                                    deferred_value_t tag,
                                                    deferred_value_t *item);

struct deferred_stage {
    const deferred_stage_ops_t *ops;
    void *data;
    deferred_process_t *p;
    deferred_stage_t *down; /* the stage this one emits to */
    deferred__handle_fn handle; /* what the delivery step calls (set by
                                   deferred_stage_new(), and by the run for
                                   the head of a fused run) */
    uint32_t fused;         /* the stages of the fused run from this one on,
                               it included (0: in none; see fuse_stages()
                               in process.c) */
    uint8_t kind;           /* enum deferred__kind */
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
    bool hop;             /* derived with it: fast, and its next stage is
                             in its fused run (deferred__fused_run()) */
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

    f = to->handle(to, self, tag, &item);
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

/* ---- fused runs -------------------------------------------------------- */

/*
 * A fused run: adjacent built-in maps and filters, and a reduce after
 * them, that the process found when it started (process.c).  The head's
 * handle, deferred__fused_handle() (transforms.c), takes an item through
 * each stage's function in one loop, where the stages unfused would each
 * emit to the next.  Each hop checks what that emit would: the stage's
 * fast flag; anything the loop does not do itself (a map's deferred or
 * failure, a map with results queued, a stage whose fast flag is off, the
 * end of the run) is handed to the stage's own code at the depth its call
 * would have had, so failures get the same frames and flow control the
 * same effect.
 */
DEFERRED_HIDDEN deferred_failure_t *deferred__fused_handle(deferred_stage_t *self,
                                                           deferred_stage_t *from,
                                                           deferred_value_t tag,
                                                           deferred_value_t *item);

/* A stage st of the fused run headed by head runs its own code (deeper
 * than head's depth by its place in the run, and one more past the head:
 * see transforms.c): a map's rest after its function with r (taken), st's
 * emit of v (taken), st failing with f (taken). */
DEFERRED_HIDDEN DEFERRED_NOINLINE void deferred__fused_map_take(deferred_stage_t *head,
                                                                deferred_stage_t *st,
                                                                deferred_value_t tag,
                                                                deferred_value_t r);
DEFERRED_HIDDEN DEFERRED_NOINLINE void deferred__fused_emit(deferred_stage_t *head,
                                                            deferred_stage_t *st,
                                                            deferred_value_t tag,
                                                            deferred_value_t v);
DEFERRED_HIDDEN DEFERRED_NOINLINE void deferred__fused_fail(deferred_stage_t *head,
                                                            deferred_stage_t *st,
                                                            deferred_failure_t *f);
/* The stream fails, the item having got as far as st in the run headed by
 * head: the frames the delivery steps from st back to head would have
 * added (transforms.c). */
DEFERRED_HIDDEN DEFERRED_NOINLINE void deferred__fused_frames(deferred_stage_t *head,
                                                              deferred_stage_t *st);

/*
 * What fn returned for each item, in order, until it can go downstream: a
 * plain result goes at once unless results are queued before it; a
 * deferred result (the map owns a reference until it fired) holds the
 * producers paused and the results behind it queued.  The queue is only
 * allocated when a result has to wait.
 */
struct deferred__map {
    struct deferred__shared *sh;
    deferred_fn fn;
    void *arg;
    deferred_value_t *queue;  /* a ring of results */
    size_t head, len, cap;
    bool waiting;             /* the head is a deferred we wait on */
    bool holding;             /* we hold a pause on the producers */
    bool pumping;
    deferred_t *drain;        /* the end of the stream waits on this */
    deferred_value_t final;   /* ... to pass this on */
    deferred_stage_ops_t ops; /* a copy, to carry the name */
};


/* A filter stage's data. */
struct deferred__filter {
    deferred_pred_fn keep;
    void *arg;
    deferred_stage_ops_t ops;
};

/* A reduce stage's data (sinks.c). */
struct deferred__reduce {
    deferred_fold_fn fn;
    void *arg;
    deferred_value_t acc;
    uint32_t depth;
};

/* A reduce stage st takes item (taken): the fold's step.  NULL, or the
 * failure the stage fails with (its function's, or EINVAL when it returned
 * a deferred). */
static inline DEFERRED_ALWAYS_INLINE deferred_failure_t *
deferred__reduce_step(deferred_stage_t *st, deferred_value_t item)
{
    struct deferred__reduce *r = STAGE_DATA(st);
    deferred_value_t acc;

    acc = r->fn(r->acc, item, r->arg);
    if (DEFERRED_LIKELY(acc.release == NULL || acc.release == deferred_value_int_release)) {
        r->acc = acc;
        return NULL;
    }
    r->acc = deferred_value_none(); /* the function took it */
    if (deferred_value_is_failure(acc))
        return deferred_value_take_failure(acc);
    if (deferred_value_is_deferred(acc)) {
        deferred_value_release(acc);
        return deferred_stage_failure(st, DEFERRED_DOMAIN_LIBRARY, EINVAL,
                                      "a reduce function returned a deferred");
    }
    r->acc = acc;
    return NULL;
}

/*
 * The fused run's loop: v (taken), with tag, goes through the run from
 * head, inside head's call (in its handle's place: head counted, the depth
 * head's).  Each stage's function runs here; the hop to the next stage of
 * the run is taken when the stage's hop flag (its fast flag, and its next
 * stage in the run) is on, as its emit would take its fast path; the rest
 * goes to the stage's own code (deferred__fused_map_take() and the like).
 * Returns the stage the item got to (for the frames of a failure).
 */
static inline DEFERRED_ALWAYS_INLINE deferred_stage_t *
deferred__fused_run(deferred_stage_t *head, deferred_value_t tag, deferred_value_t v)
{
    deferred_stage_t *st = head;
    deferred_failure_t *f;

    for (;;) {
        if (st->kind == DEFERRED__KIND_MAP) {
            struct deferred__map *m = STAGE_DATA(st);

            v = m->fn(v, m->arg);
            /* An integer, the common result, is told by one test. */
            if (DEFERRED_UNLIKELY((v.release != deferred_value_int_release &&
                                   (v.release == deferred__release_deferred ||
                                    v.release == deferred__release_failure)) ||
                                  m->len != 0)) {
                deferred__fused_map_take(head, st, tag, v);
                return st;
            }
        } else if (st->kind == DEFERRED__KIND_FILTER) {
            struct deferred__filter *fl = STAGE_DATA(st);

            if (!fl->keep(v, fl->arg)) {
                deferred__release(v);
                return st;
            }
        } else {
            /* A reduce, the last of its run. */
            f = deferred__reduce_step(st, v);
            if (DEFERRED_UNLIKELY(f != NULL))
                deferred__fused_fail(head, st, f);
            return st;
        }
        if (DEFERRED_UNLIKELY(!st->hop)) {
            /* The end of the run, or st's emit would not be the fast one. */
            deferred__fused_emit(head, st, tag, v);
            return st;
        }
        st = st->down;
        st->items++;
    }
}

#endif /* DEFERRED_PROCESS_PRIVATE_H */
