/*
 * groups.c: tags and subordinate consumers.  deferred_stage_start() and
 * deferred_stage_end() open and close a group down the stages; a
 * consumer's start may hand back a subordinate that gets the group's
 * events in its place (a route), and whose finish is handed to the parent
 * as an item when the group ends.
 *
 * Routes are part of the process's state: a stage whose next stage has
 * one takes the general emit, so pushing and popping one are transitions
 * that refresh the fast flags.
 */
#include <string.h>

#include "core/deferred-private.h"
#include "process-private.h"

static deferred_stage_t *target_of(deferred_stage_t *st)
{
    return st->routes ? st->routes->sub : st;
}

/* to delegates the group now opening to sub, in route r (both taken). */
static void route_push(deferred_stage_t *to, deferred_stage_t *sub, struct route *r)
{
    sub->p = to->p;
    sub->index = to->index;
    r->sub = sub;
    r->depth = 0;
    r->up = to->routes;
    to->routes = r;
    deferred__refresh_fast(to->p);
}

void deferred__route_pop(deferred_stage_t *st)
{
    struct route *r = st->routes;
    deferred_stage_t *sub = r->sub;

    st->routes = r->up;
    /* Only an OPEN stream has fast flags to refresh; and not while the
     * process is being freed (FINISHED, or never run): its stages go one
     * by one. */
    if (st->p && st->p->phase == DEFERRED__OPEN)
        deferred__refresh_fast(st->p);
    /* Pauses the subordinate still holds on the producers go with it. */
    if (sub->held && sub->p && sub->p->phase != DEFERRED__FINISHED) {
        while (sub->held) {
            sub->held--;
            deferred__resume_producers(sub->p, sub);
        }
    }
    sub->p = NULL;
    deferred_stage_free(sub);
    deferred__free(r);
}

/* A group opens at stage to. */
static void deliver_start(deferred_stage_t *to, deferred_stage_t *from,
                          deferred_value_t tag)
{
    deferred_process_t *p = to->p;

    while (to && !p->failure) {
        deferred_stage_t *t = target_of(to), *sub = NULL;
        deferred_failure_t *f = NULL;
        bool consumer = to->down == NULL;

        if (t->ops->start)
            f = t->ops->start(t, from, tag, &sub);
        if (f) {
            deferred_stage_free(sub);
            deferred__fail(t, f, tag);
            return;
        }
        if (sub) {
            struct route *r;

            if (!consumer) {
                deferred_stage_free(sub);
                deferred__fail(t, deferred__process_failure(
                                      p, EINVAL, "only the consumer may hand back a "
                                      "subordinate consumer"), tag);
                return;
            }
            r = deferred__malloc(sizeof(*r));
            if (!r || !sub->ops->handle) {
                deferred__free(r);
                deferred_stage_free(sub);
                deferred__fail(t, r ? deferred__process_failure(
                                          p, EINVAL, "a subordinate must be a consumer")
                                    : deferred__process_failure(p, ENOMEM, NULL),
                               tag);
                return;
            }
            route_push(to, sub, r);
            if (sub->ops->start) {
                deferred_stage_t *ignored = NULL;

                f = sub->ops->start(sub, from, tag, &ignored);
                deferred_stage_free(ignored);
                if (f) {
                    deferred__fail(sub, f, tag);
                    return;
                }
            }
            return;
        }
        if (to->routes)
            to->routes->depth++;
        if (consumer)
            return;
        from = to;
        to = to->down;
    }
}

/* t's finish for the end of a group.  Only the stream's end may wait on
 * a deferred: one returned here is a mistake, reported as a failure
 * (the deferred is let go). */
static deferred_value_t group_finish(deferred_stage_t *t, deferred_stage_t *from,
                                     deferred_value_t tag, deferred_value_t outcome)
{
    deferred_value_t out = t->ops->finish(t, from, tag, outcome);

    if (DEFERRED_UNLIKELY(deferred_value_is_deferred(out))) {
        deferred_value_release(out);
        out = deferred_value_failure(deferred__process_failure(
            t->p, EINVAL,
            "%s returned a deferred from the finish of a group (only the "
            "stream's end may wait)", deferred_stage_name(t)));
        if (!t->p->failure)
            deferred__fail(t, deferred_failure_ref(deferred_value_get_failure(out)), tag);
    }
    return out;
}

/* A group closes at stage to with outcome (taken). */
static void deliver_end(deferred_stage_t *to, deferred_stage_t *from,
                        deferred_value_t tag, deferred_value_t outcome)
{
    deferred_process_t *p = to->p;

    while (to) {
        deferred_stage_t *t = target_of(to);
        bool consumer = to->down == NULL;
        deferred_value_t out = outcome;

        if (to->routes && to->routes->depth == 0) {
            /* The delegated group ends: the subordinate's result goes to
             * the parent (or the next subordinate out) as an item. */
            deferred_stage_t *parent;
            deferred_failure_t *f;

            if (t->ops->finish)
                out = group_finish(t, from, tag, outcome);
            deferred__route_pop(to);
            if (deferred_value_is_failure(out)) {
                if (!p->failure)
                    deferred__fail(to, deferred_value_take_failure(out), tag);
                else
                    deferred_value_release(out);
                return;
            }
            parent = target_of(to);
            parent->items++;
            f = parent->ops->handle(parent, from, tag, &out);
            if (f)
                deferred__fail(parent, f, out);
            deferred_value_release(out);
            return;
        }
        if (to->routes)
            to->routes->depth--;
        if (t->ops->finish)
            out = group_finish(t, from, tag, outcome);
        if (consumer || p->failure) {
            deferred_value_release(out);
            return;
        }
        outcome = out;
        from = to;
        to = to->down;
    }
    deferred_value_release(outcome);
}

int deferred_stage_start(deferred_stage_t *self, deferred_value_t tag)
{
    deferred_process_t *p;

    /* The empty tag stands for the whole stream: no group has it. */
    if (!self || !self->p || !self->down || self->groups == UINT32_MAX ||
        deferred_value_is_none(tag))
        return -EINVAL;
    /* Counted even when it is not delivered, so that its end matches. */
    self->groups++;
    if (!deferred__may_emit(self))
        return -ECANCELED;
    p = self->p;
    deferred__enter(p);
    deliver_start(self->down, self, tag);
    deferred__leave(p);
    return p->failure || p->cancelling ? -ECANCELED : 0;
}

int deferred_stage_end(deferred_stage_t *self, deferred_value_t tag,
                       deferred_value_t outcome)
{
    deferred_process_t *p;
    int rc;

    if (!self || !self->p || !self->down) {
        deferred_value_release(outcome);
        return -EINVAL;
    }
    if (self->groups == 0) {
        /* Consumers would close a group of someone else's: the stream's
         * structure is broken, so the stream fails. */
        deferred_value_release(outcome);
        if (deferred__may_emit(self))
            deferred_stage_fail(self, deferred__process_failure(
                                          self->p, EINVAL,
                                          "deferred_stage_end: %s ended a group it "
                                          "never opened",
                                          deferred_stage_name(self)));
        return -EINVAL;
    }
    self->groups--;
    if (!deferred__may_emit(self)) {
        deferred_value_release(outcome);
        return -ECANCELED;
    }
    p = self->p;
    deferred__enter(p);
    if (DEFERRED_UNLIKELY(deferred_value_is_deferred(outcome))) {
        /* A group ends when its outcome is known: one still in flight is
         * a mistake.  The group still ends (the consumers' counts stay
         * right), with the failure the stream now fails with. */
        deferred_failure_t *f = deferred__process_failure(
            p, EINVAL, "deferred_stage_end: %s ended a group with a deferred (an "
            "outcome is a value or a failure)", deferred_stage_name(self));

        deferred_value_release(outcome);
        outcome = deferred_value_failure(deferred_failure_ref(f));
        if (deferred__set_failure(p, f))
            deferred__add_frames(p, self, deferred_value_none(), 0, false);
        deliver_end(self->down, self, tag, outcome);
        deferred__leave(p);
        return -EINVAL;
    }
    deliver_end(self->down, self, tag, outcome);
    rc = p->failure || p->cancelling ? -ECANCELED : 0;
    deferred__leave(p);
    return rc;
}
