/*
 * transforms.c: the built-in processors of deferred_process: map (which
 * may wait on a deferred per item), filter, batch.  The
 * built-in stages use the stage interface of process.h as a user's stage
 * would, with two private shortcuts that a user's stage does not have:
 * they call the per-item path inline (deferred__emit(), where a user's
 * stage calls deferred_stage_emit(), one call more per item) and read
 * their data and a producer's state from the stage directly
 * (STAGE_DATA(), deferred__producer_blocked()).  The fused runs' handle
 * and the stage code their loop falls back to follow the filter.
 */
#include <stdio.h>
#include <string.h>

#include "core/deferred-private.h"
#include "process-private.h"

/* A map's queue of waiting results, when it first needs one; it doubles
 * from there. */
#define MAP_QUEUE_FIRST_CAP 4
/* The room a batch starts with; a larger batch grows as it fills. */
#define BATCH_FIRST_CAP 64

/* ---- map ------------------------------------------------------------------ */

static deferred_value_t map_resolved(deferred_value_t v, void *arg);

/* Nothing is queued any more: let the end of the stream go on. */
static void map_drained(struct deferred__map *m)
{
    if (m->drain) {
        deferred_t *drain = m->drain;
        deferred_value_t v = m->final;

        m->drain = NULL;
        m->final = deferred_value_none();
        deferred_callback(drain, v);
        deferred_unref(drain);
    }
}

/* Send the queued results that are ready, in order; start waiting on the
 * first deferred among them. */
static void map_pump(deferred_stage_t *self, struct deferred__map *m)
{
    if (m->pumping)
        return;
    m->pumping = true;
again:
    while (m->len && !m->waiting) {
        deferred_value_t v = m->queue[m->head];

        if (deferred_value_is_deferred(v)) {
            deferred_t *d = v.ptr;

            m->waiting = true;
            m->sh->refs++;
            /* The queue keeps its reference on d until d fired. */
            if (deferred_add_both_full(d, map_resolved, m->sh, deferred__shared_unref) < 0) {
                m->waiting = false;
                m->queue[m->head] = deferred_value_failure(deferred_stage_failure(
                    self, DEFERRED_DOMAIN_LIBRARY, ENOMEM,
                    "out of memory waiting on a map's deferred"));
                deferred_unref(d);
            }
            continue;
        }
        m->queue[m->head] = deferred_value_none();
        m->head = (m->head + 1) % m->cap;
        m->len--;
        if (deferred_value_is_failure(v))
            deferred_stage_fail(self, deferred_value_take_failure(v));
        else
            deferred__emit(self, deferred_value_none(), v);
    }
    if (!m->len && m->holding) {
        /* The producers go on: what they send meanwhile is queued by
         * map_handle() (the pump is ours) and sent here. */
        m->holding = false;
        deferred_stage_resume(self);
        goto again;
    }
    if (!m->len)
        map_drained(m);
    m->pumping = false;
}

static deferred_value_t map_resolved(deferred_value_t v, void *arg)
{
    struct deferred__shared *sh = arg;
    deferred_stage_t *self = sh->self;
    deferred_process_t *p;
    struct deferred__map *m;
    deferred_value_t d;

    if (!self) {
        deferred_value_release(v);
        return deferred_value_none();
    }
    m = STAGE_DATA(self);
    if (!m->waiting) {
        /* Abandoned (map_abandon()): nothing waits for it any more. */
        deferred_value_release(v);
        return deferred_value_none();
    }
    /* The head is the deferred that fired: its result takes its place
     * (our reference on it goes; the deferred is held while it runs us). */
    d = m->queue[m->head];
    m->queue[m->head] = deferred_value_is_deferred(v) ? deferred_value_failure(NULL) : v;
    m->waiting = false;
    deferred_value_release(d);
    /* The pump may end the stream (the drain fires, or a failure cancels
     * it): the process, and with it the map, must outlive the pump. */
    p = deferred_process_ref(self->p);
    map_pump(self, m);
    deferred_process_unref(p);
    return deferred_value_none();
}

/* Queue r (taken); 0 or -ENOMEM (r released). */
static int map_push(struct deferred__map *m, deferred_value_t r)
{
    if (m->len == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : MAP_QUEUE_FIRST_CAP, i;
        deferred_value_t *q = NULL;

        if (cap <= SIZE_MAX / 2 / sizeof(*q))
            q = deferred__malloc(cap * sizeof(*q));
        if (!q) {
            deferred_value_release(r);
            return -ENOMEM;
        }
        for (i = 0; i < m->len; i++)
            q[i] = m->queue[(m->head + i) % m->cap];
        deferred__free(m->queue);
        m->queue = q;
        m->head = 0;
        m->cap = cap;
    }
    m->queue[(m->head + m->len) % m->cap] = r;
    m->len++;
    return 0;
}

/* What a map does with r (taken), what its function returned for an item
 * with tag: a plain result goes on at once, a failure fails the stage
 * (returned), anything that has to wait is queued. */
static deferred_failure_t *map_take(deferred_stage_t *self, struct deferred__map *m,
                                    deferred_value_t tag, deferred_value_t r)
{
    if (DEFERRED_LIKELY(m->len == 0)) {
        if (DEFERRED_LIKELY(r.release != deferred__release_deferred)) {
            if (r.release == deferred__release_failure)
                return deferred_value_take_failure(r);
            deferred__emit(self, tag, r);
            return NULL;
        }
    } else if (deferred_value_is_failure(r) && !m->waiting) {
        return deferred_value_take_failure(r);
    }
    /* A deferred, or a result behind one: it waits its turn (a failure
     * in the queue fails the stream when its turn comes). */
    if (map_push(m, r) < 0)
        return deferred_stage_failure(self, DEFERRED_DOMAIN_LIBRARY, ENOMEM,
                                      "out of memory queueing a map's result");
    if (!m->holding) {
        /* One item in flight: the producers wait for it. */
        m->holding = true;
        deferred_stage_pause(self);
    }
    map_pump(self, m);
    return NULL;
}

static deferred_failure_t *map_handle(deferred_stage_t *self, deferred_stage_t *from,
                                      deferred_value_t tag, deferred_value_t *item)
{
    struct deferred__map *m = STAGE_DATA(self);
    deferred_value_t v = *item;

    (void)from;
    *item = deferred_value_none();
    return map_take(self, m, tag, m->fn(v, m->arg));
}

/* Drop the queued results: a deferred among them is cancelled (its
 * callback finds nothing waiting) and let go. */
static void map_abandon(struct deferred__map *m)
{
    deferred_value_t *q = m->queue;
    size_t head = m->head, len = m->len, cap = m->cap, i;

    m->queue = NULL;
    m->head = m->len = m->cap = 0;
    m->waiting = false;
    for (i = 0; i < len; i++) {
        deferred_value_t v = q[(head + i) % cap];

        if (deferred_value_is_deferred(v))
            deferred_cancel(v.ptr);
        deferred_value_release(v);
    }
    deferred__free(q);
}

/* The end of the stream waiting on the queue was cancelled: the queue
 * goes (the deferreds in it are cancelled); the drain then fails with
 * ECANCELED. */
static void map_drain_cancel(deferred_t *d, void *arg)
{
    struct deferred__shared *sh = arg;
    struct deferred__map *m;

    (void)d;
    if (!sh->self)
        return;
    m = STAGE_DATA(sh->self);
    map_abandon(m);
    /* The drain is fired by the cancel: nothing may fire it again (a
     * pump this cancel interrupted finds no drain). */
    deferred_value_release(m->final);
    m->final = deferred_value_none();
    deferred_unref(m->drain);
    m->drain = NULL;
    if (m->holding) {
        m->holding = false;
        deferred_stage_resume(sh->self);
    }
}

/* The drain's line in a dump: which map, and what the head of its queue
 * waits on (the drain fires after it).  sh lives as long as the drain. */
static void drain_note(deferred_dump_t *w, void *arg)
{
    struct deferred__shared *sh = arg;
    struct deferred__map *m;

    if (!sh->self)
        return;
    m = STAGE_DATA(sh->self);
    deferred_dump_str(w, "drains", m->ops.name);
    deferred_dump_int(w, "queued", (long long)m->len);
    if (m->waiting && deferred_value_is_deferred(m->queue[m->head]))
        deferred_dump_deferred(w, "after", m->queue[m->head].ptr);
}

/* At the end of the stream, wait for the results still queued; when the
 * stream failed or was cancelled, nobody wants them: they are dropped. */
static deferred_value_t map_finish(deferred_stage_t *self, deferred_stage_t *from,
                                   deferred_value_t tag, deferred_value_t outcome)
{
    struct deferred__map *m = STAGE_DATA(self);

    (void)from;
    if (m->len && deferred_value_is_none(tag) && deferred_value_is_failure(outcome)) {
        map_abandon(m);
        if (m->holding) {
            m->holding = false;
            deferred_stage_resume(self);
        }
        return outcome;
    }
    if (!m->len || !deferred_value_is_none(tag) || m->drain)
        return outcome;
    m->sh->refs++;
    m->drain = deferred_new_cancellable(map_drain_cancel, m->sh, deferred__shared_unref);
    if (!m->drain) {
        deferred_value_release(outcome);
        return deferred_value_failure(NULL);
    }
    deferred_dump_note(m->drain, drain_note, m->sh);
    m->final = outcome;
    return deferred_value_deferred(deferred_ref(m->drain));
}

static void map_destroy(void *data)
{
    struct deferred__map *m = data;

    m->sh->self = NULL;
    map_abandon(m);
    deferred_value_release(m->final);
    deferred_unref(m->drain);
    deferred__shared_unref(m->sh);
    deferred__free(m);
}

deferred_stage_t *deferred_stage_map(const char *name, deferred_fn fn, void *arg)
{
    struct deferred__map *m;
    struct deferred__shared *sh;
    deferred_stage_t *st;

    if (!fn) {
        errno = EINVAL;
        return NULL;
    }
    m = deferred__malloc(sizeof(*m));
    if (!m)
        return NULL;
    memset(m, 0, sizeof(*m));
    m->sh = deferred__malloc(sizeof(*m->sh));
    if (!m->sh) {
        deferred__free(m);
        return NULL;
    }
    m->sh->refs = 1;
    m->sh->self = NULL;
    m->fn = fn;
    m->arg = arg;
    m->drain = NULL;
    m->final = deferred_value_none();
    m->ops.name = name ? name : "map";
    m->ops.handle = map_handle;
    m->ops.finish = map_finish;
    m->ops.destroy = map_destroy;
    sh = m->sh;
    st = deferred_stage_new(&m->ops, m, 0);
    if (st) {
        sh->self = st;
        st->kind = DEFERRED__KIND_MAP;
    }
    return st;
}

void deferred__map_dump(deferred_dump_t *w, const deferred_stage_t *st)
{
    const struct deferred__map *m;

    if (st->ops->handle != map_handle)
        return;
    m = STAGE_DATA(st);
    deferred_dump_int(w, "in_flight", (long long)m->len);
    if (m->waiting && deferred_value_is_deferred(m->queue[m->head]))
        deferred_dump_deferred(w, "waits on", m->queue[m->head].ptr);
}

/* ---- filter ---------------------------------------------------------------- */


static deferred_failure_t *filter_handle(deferred_stage_t *self,
                                         deferred_stage_t *from,
                                         deferred_value_t tag,
                                         deferred_value_t *item)
{
    struct deferred__filter *fl = STAGE_DATA(self);

    (void)from;
    if (fl->keep(*item, fl->arg)) {
        deferred_value_t v = *item;

        *item = deferred_value_none();
        deferred__emit(self, tag, v);
    }
    return NULL;
}

static void plain_free(void *data)
{
    deferred__free(data);
}

deferred_stage_t *deferred_stage_filter(const char *name, deferred_pred_fn keep,
                                        void *arg)
{
    struct deferred__filter *fl;
    deferred_stage_t *st;

    if (!keep) {
        errno = EINVAL;
        return NULL;
    }
    fl = deferred__malloc(sizeof(*fl));
    if (!fl)
        return NULL;
    fl->keep = keep;
    fl->arg = arg;
    memset(&fl->ops, 0, sizeof(fl->ops));
    fl->ops.name = name ? name : "filter";
    fl->ops.handle = filter_handle;
    fl->ops.destroy = plain_free;
    st = deferred_stage_new(&fl->ops, fl, 0);
    if (st)
        st->kind = DEFERRED__KIND_FILTER;
    return st;
}

/* ---- fused runs ------------------------------------------------------------ */

/*
 * The stage k places after the head of a fused run runs its own code
 * (process-private.h): at the depth its call would have had unfused, one
 * more than the stage before it, so that a failure gets the frames it
 * would get unfused.  Each of these calls its stage's code as the stage's
 * handle would have after the function (map_take(), deferred__emit()), or
 * fails it as its delivery step would (deferred__fail()).
 */
/*
 * The depths.  The loop does not follow the item's depth (that would cost
 * a store per hop): a stage's function runs at head's depth d, so what it
 * calls (an emit of its own, say) runs one deeper, at d + 1, where
 * unfused it would run at d + k + 1 for the stage at place k.  The code a
 * stage at place k > 0 falls back to runs at d + k + 1, one deeper than
 * the place's own depth d + k, so that a failure's frames tell the two
 * apart; deferred__fused_frames() turns either into what unfused calls
 * would have left.  At head's place (0) both are at their unfused depth.
 */
static uint32_t fused_place(const deferred_stage_t *head, const deferred_stage_t *st)
{
    return st->index - head->index;
}

/* How much deeper than head's depth the code of st runs. */
static uint32_t fused_raise(const deferred_stage_t *head, const deferred_stage_t *st)
{
    uint32_t k = fused_place(head, st);

    return k ? k + 1 : 0;
}

void deferred__fused_map_take(deferred_stage_t *head, deferred_stage_t *st,
                              deferred_value_t tag, deferred_value_t r)
{
    deferred_process_t *p = st->p;
    uint32_t k = fused_raise(head, st);
    deferred_failure_t *f;

    p->depth += k;
    f = map_take(st, STAGE_DATA(st), tag, r);
    if (f)
        deferred__fail(st, f, deferred_value_none());
    p->depth -= k;
}

void deferred__fused_emit(deferred_stage_t *head, deferred_stage_t *st, deferred_value_t tag,
                          deferred_value_t v)
{
    deferred_process_t *p = st->p;
    uint32_t k = fused_raise(head, st);

    p->depth += k;
    deferred__emit(st, tag, v);
    p->depth -= k;
}

void deferred__fused_fail(deferred_stage_t *head, deferred_stage_t *st, deferred_failure_t *f)
{
    deferred_process_t *p = st->p;
    uint32_t k = fused_raise(head, st);

    p->depth += k;
    deferred__fail(st, f, deferred_value_none());
    p->depth -= k;
}

/*
 * The failure's frames reach down to depth p->framed (the depth of the
 * call that added the last).  Unfused, the item's stage at place j runs at
 * d + j, and each delivery step on the way back adds its stage's frame if
 * the frames do not reach its depth yet.  Here, with st past head: frames
 * down to d + 1 come from a call st's function made (unfused, at
 * d + k + 1); frames deeper come from st's own code, one deeper than
 * unfused (see above).  At head's place there is nothing to do.  Once
 * framed is what it would be unfused, the delivery steps from st back to
 * head's next stage add their frames as they would have, innermost first;
 * head's own is its caller's.
 */
void deferred__fused_frames(deferred_stage_t *head, deferred_stage_t *st)
{
    deferred_process_t *p = st->p;
    uint32_t d = p->depth, k = fused_place(head, st);

    if (k == 0 || !p->failure || p->framed <= d)
        return;
    if (p->framed == d + 1)
        p->framed = d + k + 1;
    else
        p->framed--;
    for (; k > 0; k--)
        deferred__add_frames(p, p->stages[head->index + k], deferred_value_none(), d + k,
                             false);
}

deferred_failure_t *deferred__fused_handle(deferred_stage_t *self, deferred_stage_t *from,
                                           deferred_value_t tag, deferred_value_t *item)
{
    deferred_value_t v = *item;
    deferred_stage_t *st;

    (void)from;
    *item = deferred_value_none();
    st = deferred__fused_run(self, tag, v);
    if (DEFERRED_UNLIKELY(self->p->failure != NULL))
        deferred__fused_frames(self, st);
    return NULL;
}

/* ---- batch ------------------------------------------------------------------ */

struct batch {
    size_t n;
    deferred_array_t *cur;
    deferred_value_t tag; /* the current items' tag, when it is a plain one */
    uint64_t first;       /* the number of the current batch's first item */
    uint64_t sent_first;  /* ... and of the batch last sent, and its last */
    uint64_t sent_last;
    long sent_bad;        /* the element of it a first-error failure named, or -1 */
    bool sent_failed;     /* the stream failed while the last one was sent */
};

static deferred_failure_t *batch_flush(deferred_stage_t *self, struct batch *b,
                                       deferred_value_t tag)
{
    deferred_array_t *a = b->cur;

    b->cur = NULL;
    if (a) {
        b->sent_first = b->first;
        b->sent_last = b->first + deferred_array_size(a) - 1;
        b->sent_failed = deferred__emit(self, tag, deferred_value_array(a)) < 0;
        /* A failure that names one element of the batch (a first-error,
         * as a gather over its items makes) names that item. */
        b->sent_bad = -1;
        if (b->sent_failed && self->p->failure) {
            long i = deferred_failure_index(self->p->failure);

            if (i >= 0 && (uint64_t)i <= b->sent_last - b->sent_first)
                b->sent_bad = i;
        }
    }
    return NULL;
}

/* A group opens: the items before it are a batch of their own (sent with
 * their tag when it is a plain value, else the empty value). */
static deferred_failure_t *batch_start(deferred_stage_t *self, deferred_stage_t *from,
                                       deferred_value_t tag, deferred_stage_t **sub)
{
    struct batch *b = STAGE_DATA(self);

    (void)from;
    (void)tag;
    (void)sub;
    return batch_flush(self, b, b->tag);
}

/* Describe the batch being sent (or, between batches, the one being
 * filled) by the numbers of the items in it; the offending item when the
 * failure named one of its elements. */
static int batch_describe(deferred_stage_t *self, deferred_value_t item, char *buf,
                          size_t size)
{
    struct batch *b = STAGE_DATA(self);

    (void)item;
    if (b->sent_failed && b->sent_bad >= 0)
        return snprintf(buf, size, "item %llu, element %ld of the batch of items %llu to %llu",
                        (unsigned long long)(b->sent_first + (uint64_t)b->sent_bad),
                        b->sent_bad, (unsigned long long)b->sent_first,
                        (unsigned long long)b->sent_last);
    if (b->sent_failed)
        return snprintf(buf, size, "in the batch of items %llu to %llu",
                        (unsigned long long)b->sent_first,
                        (unsigned long long)b->sent_last);
    if (b->cur && deferred_array_size(b->cur))
        return snprintf(buf, size, "a batch from item %llu",
                        (unsigned long long)b->first);
    if (size)
        buf[0] = '\0';
    return 0;
}

static deferred_failure_t *batch_handle(deferred_stage_t *self, deferred_stage_t *from,
                                        deferred_value_t tag, deferred_value_t *item)
{
    struct batch *b = STAGE_DATA(self);

    (void)from;
    if (!b->cur) {
        /* Room for a few items; a large batch grows as it fills. */
        if (!(b->cur = deferred_array_new(b->n < BATCH_FIRST_CAP ? b->n : BATCH_FIRST_CAP)))
            return deferred_stage_failure(self, DEFERRED_DOMAIN_LIBRARY, ENOMEM, NULL);
        b->first = deferred_stage_items(self);
        b->tag = tag.release ? deferred_value_none() : tag;
    }
    if (deferred_array_append(b->cur, *item) < 0) {
        /* The item was released by the failed append. */
        *item = deferred_value_none();
        return deferred_stage_failure(self, DEFERRED_DOMAIN_LIBRARY, ENOMEM,
                                      "out of memory growing a batch");
    }
    *item = deferred_value_none();
    if (deferred_array_size(b->cur) == b->n)
        return batch_flush(self, b, tag);
    return NULL;
}

static deferred_value_t batch_finish(deferred_stage_t *self, deferred_stage_t *from,
                                     deferred_value_t tag, deferred_value_t outcome)
{
    struct batch *b = STAGE_DATA(self);

    (void)from;
    if (deferred_value_is_failure(outcome) && deferred_value_is_none(tag)) {
        /* The stream failed: nothing downstream wants the rest. */
        deferred_array_free(b->cur);
        b->cur = NULL;
    } else {
        /* A group's end (whatever its outcome) or the stream's. */
        batch_flush(self, b, tag);
    }
    return outcome;
}

static void batch_destroy(void *data)
{
    struct batch *b = data;

    deferred_array_free(b->cur);
    deferred__free(b);
}

static const deferred_stage_ops_t batch_ops = {
    .name = "batch",
    .start = batch_start,
    .handle = batch_handle,
    .describe = batch_describe,
    .finish = batch_finish,
    .destroy = batch_destroy,
};

deferred_stage_t *deferred_stage_batch(size_t n)
{
    struct batch *b;
    deferred_stage_t *st;

    if (n == 0) {
        errno = EINVAL;
        return NULL;
    }
    b = deferred__malloc(sizeof(*b));
    if (!b)
        return NULL;
    memset(b, 0, sizeof(*b));
    b->n = n;
    b->cur = NULL;
    b->tag = deferred_value_none();
    st = deferred_stage_new(&batch_ops, b, 0);
    if (st)
        st->names_items = true;
    return st;
}
