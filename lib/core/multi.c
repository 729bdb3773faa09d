/*
 * multi.c: multi-fire deferreds, one value per row (deferred/multi.h).
 *
 * The design decision to know: a multi-fire deferred reuses the core's
 * chain runner rather than having one of its own.  A row is loaded as the
 * deferred's result with the runner's position at 0; the runner takes it
 * through the kept entries (a multi-fire chain does not consume them), and
 * when it stops at the end of the chain it calls deferred__multi_step(),
 * which retires the row and loads the next queued one in the same loop.
 * So rows emitted from inside callbacks, or released when a chained
 * deferred fires, never nest, and backpressure is the runner's own notion
 * of waiting.
 */
#include <string.h>

#include "deferred-private.h"
#include "core-private.h"

void deferred__multi_free(struct multi *m)
{
    deferred__ring_clear(&m->queue);
    deferred_value_release(m->final);
    /* The end may outlive the stream: it must not cancel a freed one. */
    canceller_of(m->end)->fn = NULL;
    deferred_unref(m->end);
    deferred__free(m);
}

static void end_cancel(deferred_t *end, void *arg)
{
    (void)end;
    deferred_cancel(arg);
}

deferred_t *deferred_multi_new_at(const char *file, int line,
                                  deferred_canceller_fn canceller, void *arg,
                                  deferred_destroy_fn destroy)
{
    deferred_t *d = deferred_new_at(file, line, canceller, arg, destroy);
    struct multi *m;

    if (!d)
        return NULL;
    if (!d->ext) {
        d->ext = deferred__malloc(sizeof(*d->ext));
        if (!d->ext)
            goto out_unref;
        memset(d->ext, 0, sizeof(*d->ext));
    }
    m = deferred__malloc(sizeof(*m));
    if (!m)
        goto out_unref;
    memset(m, 0, sizeof(*m));
    m->plain = UINT32_MAX;
    m->end = deferred_new_at(file, line, end_cancel, d, NULL);
    if (!m->end) {
        deferred__free(m);
        goto out_unref;
    }
    d->ext->multi = m;
    d->flags |= F_MULTI;
    return d;

out_unref:
    deferred_unref(d);
    errno = ENOMEM;
    return NULL;
}

bool deferred_is_multi(const deferred_t *d)
{
    return d && (d->flags & F_MULTI);
}

static struct multi *multi_of(const deferred_t *d)
{
    return d && (d->flags & F_MULTI) ? d->ext->multi : NULL;
}

/* Every entry of d is a plain callback (LINK_CB). */
static bool plain_chain(const deferred_t *d)
{
    uint32_t i;

    if (!(d->flags & F_KINDS))
        return true; /* no kinds kept: all are */
    for (i = 0; i < d->n; i++)
        if (*kind_at(d, i) != LINK_CB)
            return false;
    return true;
}

/* Tell the flow hook about a change between "takes rows" and "holds them
 * back".  Returns true when the hook ran (it may have changed anything). */
static bool flow_tell(deferred_t *d)
{
    struct multi *m = d->ext->multi;
    bool blocked = any_pause(d) || d->chained_to;
    bool paused;

    if (m->ended || !m->flow)
        return false;
    if (!m->flow_paused && blocked)
        paused = true;
    else if (m->flow_paused && !blocked && m->queue.len == 0)
        paused = false;
    else
        return false;
    m->flow_paused = paused;
    /* Held back, rows take the slow way; taking them again (nothing
     * queued, not ending: see deferred__multi_step()), the fast one if
     * the chain is plain.  What the hook does next sets it again. */
    m->plain = !paused && plain_chain(d) ? d->n : UINT32_MAX;
    d->refs++;
    m->flow(d, paused, m->flow_arg);
    deferred_unref(d);
    return true;
}

void deferred__flow_update(deferred_t *d)
{
    flow_tell(d);
}

/* End the stream now with v (taken): queued rows and a row in flight are
 * released, the end deferred fires. */
static void end_stream(deferred_t *d, deferred_value_t v)
{
    struct multi *m = d->ext->multi;
    deferred_t *end = m->end;

    m->ended = true;
    m->plain = UINT32_MAX;
    deferred__ring_clear(&m->queue);
    if (d->flags & F_ROW) {
        deferred_value_release(d->result);
        d->result = deferred_value_none();
        d->flags &= ~F_ROW;
        d->flags |= F_STIR; /* the row's runner stops (run_plain()) */
        d->pos = d->n;
    }
    /* Callers that end with the finish value moved it out already. */
    deferred_value_release(m->final);
    m->final = deferred_value_none();
    end->refs++;
    deferred__fire(end, v, NULL, 0);
    deferred_unref(end);
}

/* Run the source's cancel, once. */
static void cancel_source(deferred_t *d)
{
    if (d->flags & F_CANCELLED)
        return;
    d->flags |= F_CANCELLED;
    deferred__call_canceller(d);
}

/* A row's chain ended in failure f (taken) that nothing recovered: the
 * stream fails with it, naming the row, and the source is cancelled. */
static void fail_row(deferred_t *d, deferred_failure_t *f)
{
    struct multi *m = d->ext->multi;

    deferred_failure_add_context(f, "multi-fire deferred", "row %llu",
                                 (unsigned long long)m->row);
    m->ended = true; /* refuse what the source emits while it cancels */
    cancel_source(d);
    end_stream(d, deferred_value_failure(f));
}

bool deferred__multi_step(deferred_t *d)
{
    struct multi *m = d->ext->multi;

    if (any_pause(d) || d->chained_to)
        return false;
    if (d->flags & F_ROW) {
        deferred_value_t r = d->result;

        d->result = deferred_value_none();
        d->flags &= ~F_ROW;
        if (r.release == deferred__release_failure) {
            fail_row(d, r.ptr);
            return false;
        }
        deferred_value_release(r);
    }
    for (;;) {
        if (m->ended || any_pause(d) || d->chained_to)
            return false;
        if (m->queue.len) {
            d->result = deferred__ring_pop(&m->queue);
            m->row++;
            d->pos = 0;
            d->flags |= F_ROW;
            return true;
        }
        if (m->closing) {
            deferred_value_t v = m->final;

            m->final = deferred_value_none();
            end_stream(d, v);
            return false;
        }
        if (!flow_tell(d))
            return false;
    }
}

/* deferred_multi_emit() but for its common case: every check in order. */
static DEFERRED_NOINLINE int emit_slow(deferred_t *d, deferred_value_t v)
{
    struct multi *m;

    if (!d || !is_multi(d) || v.release == deferred__release_deferred) {
        deferred_value_release(v);
        return -EINVAL;
    }
    if (DEFERRED_UNLIKELY(!d->refs)) {
        /* Dying, reached through a weak pointer (a merge's output while
         * its inputs are let go) or from its canceller's destroy function
         * (its state may be gone): nobody can see a row. */
        deferred_value_release(v);
        return 0;
    }
    m = d->ext->multi;
    if (m->ended || m->closing) {
        deferred_value_release(v);
        return -EALREADY;
    }
    if (!(d->flags & (F_ROW | F_RUNNING | F_LATER_RUN | F_WAITING | DEFERRED__F_PAUSES)) &&
        m->queue.len == 0) {
        m->rows++;
        m->row = m->rows;
        if (!m->flow_paused && plain_chain(d)) {
            d->flags &= ~F_STIR; /* no runner of d is under way to be told */
            m->plain = d->n; /* the next rows take the fast path */
            return deferred__run_row(d, v);
        }
        /* The runner's way: entries of other kinds are its own, and a
         * flow hook told to hold back is told when this row is through
         * that the stream takes rows again. */
        d->result = v;
        d->pos = 0;
        d->flags |= F_ROW;
        deferred__run(d);
        return 0;
    }
    if (deferred__ring_push(&m->queue, v) < 0) {
        deferred_value_release(v);
        return -ENOMEM;
    }
    m->rows++;
    d->flags |= F_STIR; /* a row under way retires through the runner */
    return 0;
}

/*
 * The common case without a frame: a row into a stream with no row in
 * flight, not running nor queued to run, not stirred nor paused (one test
 * of the flags, which hold the pause count), not waiting,
 * whose chain is of plain callbacks and which is neither ended nor held
 * back (m->plain, for the entries it has now) runs at once
 * (deferred__run_row()).  Such a stream has nothing queued and is not
 * closing: its runner, stopping without being blocked, ran the queued
 * rows and ended a closing stream.  Anything else is emit_slow()'s,
 * which also finds when m->plain holds again.
 */
int deferred_multi_emit(deferred_t *d, deferred_value_t v)
{
    if (DEFERRED_LIKELY(d != NULL) &&
        DEFERRED_LIKELY((d->flags & (F_MULTI | F_ROW | F_RUNNING | F_LATER_RUN | F_STIR |
                                     F_WAITING | F_DYING | DEFERRED__F_PAUSES)) == F_MULTI) &&
        DEFERRED_LIKELY(v.release != deferred__row_deferred)) {
        struct multi *m = d->ext->multi;

        if (DEFERRED_LIKELY(m->plain == d->n)) {
            m->rows++;
            m->row = m->rows;
            return deferred__run_row(d, v);
        }
    }
    return emit_slow(d, v);
}

int deferred_multi_finish(deferred_t *d, deferred_value_t v)
{
    struct multi *m;

    if (!d || !is_multi(d) || v.release == deferred__release_deferred) {
        deferred_value_release(v);
        return -EINVAL;
    }
    if (DEFERRED_UNLIKELY(!d->refs)) {
        deferred_value_release(v); /* dying: as deferred_multi_emit() */
        return 0;
    }
    m = d->ext->multi;
    if (m->ended || m->closing) {
        deferred_value_release(v);
        return -EALREADY;
    }
    m->closing = true;
    if (!(d->flags & (F_ROW | F_RUNNING)) && m->queue.len == 0)
        end_stream(d, v);
    else {
        m->final = v; /* the runner ends the stream when the rows are done */
        d->flags |= F_STIR; /* as a row queued (deferred_multi_emit()) */
    }
    return 0;
}

int deferred__multi_cancel(deferred_t *d, const char *file, int line)
{
    struct multi *m = d->ext->multi;

    if (m->ended)
        return 0;
    if (d->chained_to)
        return deferred_cancel_at(d->chained_to, file, line); /* the row's wait, not the stream */
    if (d->flags & F_CANCELLED)
        return 0;
    d->refs++;
    cancel_source(d);
    if (!m->ended) {
        deferred_value_t v = m->final;

        m->final = deferred_value_none();
        if (!m->closing)
            v = deferred_value_failure(deferred_failure_new_at(
                file, line, DEFERRED_DOMAIN_LIBRARY, ECANCELED, "stream cancelled"));
        end_stream(d, v);
    }
    deferred_unref(d);
    return 0;
}

deferred_t *deferred_multi_when_finished(deferred_t *d)
{
    struct multi *m = multi_of(d);

    if (!m) {
        errno = EINVAL;
        return NULL;
    }
    return deferred_ref(m->end);
}

int deferred_multi_set_flow(deferred_t *d, deferred_flow_fn fn, void *arg)
{
    struct multi *m = multi_of(d);

    if (!m)
        return -EINVAL;
    m->flow = fn;
    m->flow_arg = arg;
    return 0;
}

size_t deferred_multi_queued(const deferred_t *d)
{
    struct multi *m = multi_of(d);

    return m ? m->queue.len : 0;
}

uint64_t deferred_multi_rows(const deferred_t *d)
{
    struct multi *m = multi_of(d);

    return m ? m->rows : 0;
}
