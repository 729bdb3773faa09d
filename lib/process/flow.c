/*
 * flow.c: how items move through a process: the delivery of an item (the
 * general emit; the per-item fast path is deferred__emit() in
 * process-private.h), the frames a failure gets on its way back up, and
 * flow control (pause and resume).
 *
 * The design decision to know: both emits end in the one delivery step,
 * deferred__deliver(); only the checks before it differ.  The fast emit
 * tests one flag that the state's transitions keep (process.c), the
 * general one checks everything itself and also reaches subordinates and
 * autopausing stages.  Whatever a handle changed, the step leaves through
 * deferred__emit_unwind() unless the fast flag is still on, which means
 * the stream still flows and there is nothing to unwind.
 */
#include <stdio.h>
#include <string.h>

#include "core/deferred-private.h"
#include "process-private.h"

/* A stage's description of its item, before one that does not fit is
 * asked for again at its length. */
#define DESCRIBE_SMALL 256
/* "item N emitted" and the like. */
#define WHERE_SIZE 64

/* ---- failure frames ---------------------------------------------------- */

/* Push st's frame, handling item, in front of the failure's frames: as the
 * failure travels up towards the producer, the first frame ends up the
 * input's and the story reads from the consumer back. */
static void push_frame(deferred_process_t *p, deferred_stage_t *st, deferred_value_t item)
{
    char small[DESCRIBE_SMALL], *desc = small, *big = NULL;
    char where[WHERE_SIZE];
    int n = 0;

    small[0] = '\0';
    if (st->ops->describe) {
        n = st->ops->describe(st, item, small, sizeof(small));
        /* A longer description (the whole SQL of a query) is not cut. */
        if (n >= (int)sizeof(small) && (big = deferred__malloc((size_t)n + 1))) {
            big[0] = '\0';
            if (st->ops->describe(st, item, big, (size_t)n + 1) >= 0)
                desc = big;
        }
        if (n < 0)
            small[0] = '\0';
    }
    if ((st->producer && st->items == 0) || (st->names_items && desc[0]))
        where[0] = '\0'; /* nothing emitted yet, or the stage names them */
    else if (st->producer)
        snprintf(where, sizeof(where), "item %llu emitted",
                 (unsigned long long)st->items);
    else
        snprintf(where, sizeof(where), "item %llu", (unsigned long long)st->items);
    if (!where[0] && !desc[0])
        snprintf(where, sizeof(where), "before its first item");
    deferred__failure_push_context(p->failure, deferred_stage_name(st), "%s%s%s",
                                   where, where[0] && desc[0] ? ": " : "", desc);
    deferred__free(big);
}

void deferred__add_frames(deferred_process_t *p, deferred_stage_t *st,
                          deferred_value_t item, uint32_t depth, bool through)
{
    if (!p->failure || p->framed <= depth)
        return;
    p->framed = depth;
    push_frame(p, st, item);
    while (through && st->index > 0) {
        st = p->stages[st->index - 1];
        push_frame(p, st, deferred_value_none());
    }
}

void deferred__fail(deferred_stage_t *st, deferred_failure_t *f, deferred_value_t item)
{
    deferred_process_t *p = st->p;

    if (deferred__set_failure(p, f))
        deferred__add_frames(p, st, item, p->depth, false);
}

/* ---- delivery ---------------------------------------------------------- */

/* May st send downstream now?  Producers stop at a cancel or failure;
 * while finishing, the stage whose finish runs may still emit, and so may
 * the stages after it (not finished yet: what it emits goes through them,
 * a batch flushing, say); those before it are done. */
bool deferred__may_emit(const deferred_stage_t *st)
{
    const deferred_process_t *p = st->p;

    if (!p || !st->down || p->failure)
        return false;
    switch (p->phase) {
    case DEFERRED__OPEN:
        return !(st->producer && st->stopped != DEFERRED__LIVE);
    case DEFERRED__FINISHING:
        return !st->producer && st->index >= p->finishing;
    default:
        return false;
    }
}

/* The general emit: a stream that is ending, a stopped producer, a next
 * stage with subordinates or autopause, a misuse. */
int deferred__emit_slow(deferred_stage_t *self, deferred_value_t tag,
                        deferred_value_t item)
{
    deferred_process_t *p;
    deferred_stage_t *to;

    if (!self || !self->p || !self->down) {
        deferred_value_release(item);
        return -EINVAL;
    }
    p = self->p;
    if (!deferred__may_emit(self)) {
        deferred_value_release(item);
        return -ECANCELED;
    }
    deferred__enter(p);
    self->items += self->producer;
    /* The item goes to the subordinate the next stage delegates to. */
    to = DEFERRED_LIKELY(!self->down->routes) ? self->down : self->down->routes->sub;
    to->items++;
    if (DEFERRED_UNLIKELY(to->flags & DEFERRED_STAGE_AUTOPAUSE)) {
        to->held++;
        deferred__pause_producers(p, to);
    }
    return deferred__deliver(p, self, to, tag, item);
}

int deferred__emit_unwind(deferred_stage_t *self, deferred_stage_t *to,
                          deferred_value_t item, deferred_failure_t *f)
{
    deferred_process_t *p = self->p;
    int rc;

    if (f)
        deferred__fail(to, f, item);
    else /* a failure from further down passes through to */
        deferred__add_frames(p, to, item, p->depth, false);
    deferred_value_release(item);
    rc = p->failure || p->cancelling ? -ECANCELED : 0;
    if (rc < 0 && self->producer)
        deferred__add_frames(p, self, deferred_value_none(), 0, false);
    deferred__leave(p);
    return rc;
}

/* The per-item path is deferred__emit() in process-private.h, inlined
 * into the built-in stages; this is its exported form, what a user's
 * stage calls (one call more per item). */
int deferred_stage_emit_tagged(deferred_stage_t *self, deferred_value_t tag,
                               deferred_value_t item)
{
    return deferred__emit(self, tag, item);
}

int deferred_stage_emit(deferred_stage_t *self, deferred_value_t item)
{
    return deferred_stage_emit_tagged(self, deferred_value_none(), item);
}

/* ---- flow control ------------------------------------------------------ */

/* Run a producer's resume operation, never nested: a resume asked for
 * while it runs only lets its loop go on, or runs it again afterwards. */
void deferred__call_resume(deferred_stage_t *st, deferred_stage_t *by)
{
    if (st->in_resume) {
        st->resume_again = true;
        return;
    }
    st->in_resume = true;
    do {
        st->resume_again = false;
        st->ops->resume(st, by);
    } while (st->resume_again && !deferred__producer_blocked(st));
    st->in_resume = false;
}

void deferred__pause_producers(deferred_process_t *p, deferred_stage_t *by)
{
    size_t i;

    /* Before the process runs, pauses are only counted (p->held and each
     * stage's held): deferred_process_run() hands their sum to every producer, so that a
     * producer added after a pause is paused too. */
    if (p->phase == DEFERRED__BUILDING)
        return;
    for (i = 0; i < p->nproducers; i++) {
        deferred_stage_t *pr = p->stages[i];

        if (pr->paused++ == 0 && pr->ops->pause && pr->stopped == DEFERRED__LIVE)
            pr->ops->pause(pr, by);
    }
}

void deferred__resume_producers(deferred_process_t *p, deferred_stage_t *by)
{
    size_t i;

    if (p->phase == DEFERRED__BUILDING)
        return;
    for (i = 0; i < p->nproducers; i++) {
        deferred_stage_t *pr = p->stages[i];

        if (pr->paused && --pr->paused == 0 && !deferred__producer_blocked(pr))
            deferred__call_resume(pr, by);
    }
}

int deferred_stage_pause(deferred_stage_t *self)
{
    deferred_process_t *p;

    if (!self || !self->p || self->producer || self->held == UINT32_MAX)
        return -EINVAL;
    p = self->p;
    deferred__enter(p);
    self->held++;
    deferred__pause_producers(p, self);
    deferred__leave(p);
    return 0;
}

int deferred_stage_resume(deferred_stage_t *self)
{
    deferred_process_t *p;

    if (!self || !self->p || self->producer || self->held == 0)
        return -EINVAL;
    p = self->p;
    deferred__enter(p);
    self->held--;
    deferred__resume_producers(p, self);
    deferred__leave(p);
    return 0;
}

bool deferred_stage_is_paused(const deferred_stage_t *self)
{
    size_t i;

    if (!self || !self->p)
        return false;
    if (self->producer)
        return deferred__producer_blocked(self);
    if (self->p->phase == DEFERRED__BUILDING)
        return deferred_process_is_paused(self->p); /* pauses not applied yet */
    for (i = 0; i < self->p->nproducers; i++)
        if (self->p->stages[i]->paused)
            return true;
    return false;
}

int deferred_process_pause(deferred_process_t *p)
{
    if (!p || p->held == UINT32_MAX)
        return -EINVAL;
    p->held++;
    /* Before the run only the count changes (see deferred__pause_producers()). */
    if (p->phase != DEFERRED__BUILDING) {
        deferred__enter(p);
        deferred__pause_producers(p, NULL);
        deferred__leave(p);
    }
    return 0;
}

int deferred_process_resume(deferred_process_t *p)
{
    if (!p || p->held == 0)
        return -EINVAL;
    p->held--;
    if (p->phase != DEFERRED__BUILDING) {
        deferred__enter(p);
        deferred__resume_producers(p, NULL);
        deferred__leave(p);
    }
    return 0;
}

bool deferred_process_is_paused(const deferred_process_t *p)
{
    size_t i;

    if (!p)
        return false;
    if (p->phase == DEFERRED__BUILDING) {
        /* Not applied to the producers yet (see deferred_process_run()). */
        if (p->held || (p->flags & DEFERRED_PROCESS_PAUSED))
            return true;
        for (i = p->nproducers; i < p->n; i++)
            if (p->stages[i]->held)
                return true;
        return false;
    }
    for (i = 0; i < p->nproducers; i++)
        if (p->stages[i]->paused)
            return true;
    return false;
}
