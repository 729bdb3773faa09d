/*
 * stages.c: the built-in stages of deferred_process.
 *
 * Producers: an array, a multi-fire deferred.  Processors: map (which may
 * wait on a deferred per item), filter, batch.  Consumers: collect,
 * reduce, and one feeding a multi-fire deferred.  Each is written only
 * against the public stage interface of process.h, as a user's stage
 * would be.
 *
 * The design decision to know: a stage that hands a callback to a
 * deferred (from_multi, map, to_multi) may be freed before that deferred
 * lets go of the callback, so such stages keep their state in a small
 * refcounted block: the stage holds one reference, each callback another,
 * and a freed stage only detaches itself from the block.
 */
#include <stdio.h>
#include <string.h>

#include "core/deferred-private.h"
#include "process-private.h"

/* State shared between a stage and the callbacks it handed out. */
struct shared {
    uint32_t refs;
    deferred_stage_t *self; /* NULL once the stage is gone */
};

static void shared_unref(void *arg)
{
    struct shared *sh = arg;

    if (--sh->refs == 0)
        deferred__free(sh);
}

/* A built-in consumer: the process refuses a stage added after it. */
static deferred_stage_t *consumer_stage(deferred_stage_t *st)
{
    if (st)
        st->consumer = true;
    return st;
}

/* ---- array producer ----------------------------------------------------- */

struct array_producer {
    deferred_value_t *items;
    size_t n;
    size_t next;
};

static void array_resume(deferred_stage_t *self, deferred_stage_t *by)
{
    struct array_producer *ap = STAGE_DATA(self);

    (void)by;
    while (ap->next < ap->n && !deferred__producer_blocked(self)) {
        deferred_value_t v = ap->items[ap->next];

        ap->items[ap->next++] = deferred_value_none();
        if (deferred__emit(self, deferred_value_none(), v) < 0)
            return;
    }
    if (ap->next == ap->n)
        deferred_stage_finish(self, deferred_value_none());
}

static int array_describe(deferred_stage_t *self, deferred_value_t item,
                          char *buf, size_t size)
{
    struct array_producer *ap = STAGE_DATA(self);

    (void)item;
    return snprintf(buf, size, "element %zu of %zu", ap->next ? ap->next - 1 : 0,
                    ap->n);
}

static void array_destroy(void *data)
{
    struct array_producer *ap = data;
    size_t i;

    for (i = ap->next; i < ap->n; i++)
        deferred_value_release(ap->items[i]);
    deferred__free(ap->items);
    deferred__free(ap);
}

static const deferred_stage_ops_t array_ops = {
    .name = "array",
    .resume = array_resume,
    .describe = array_describe,
    .destroy = array_destroy,
};

deferred_stage_t *deferred_stage_array(const deferred_value_t *items, size_t n)
{
    struct array_producer *ap;
    size_t i;

    if (!items && n) {
        errno = EINVAL;
        return NULL; /* nothing to release */
    }
    if (n > SIZE_MAX / sizeof(*ap->items))
        goto out_release;
    ap = deferred__malloc(sizeof(*ap));
    if (!ap)
        goto out_release;
    ap->items = deferred__malloc((n ? n : 1) * sizeof(*ap->items));
    if (!ap->items) {
        deferred__free(ap);
        goto out_release;
    }
    if (n)
        memcpy(ap->items, items, n * sizeof(*items));
    ap->n = n;
    ap->next = 0;
    return deferred_stage_new(&array_ops, ap, 0);

out_release:
    for (i = 0; i < n; i++)
        deferred_value_release(items[i]);
    errno = ENOMEM;
    return NULL;
}

/* ---- producer from a multi-fire deferred --------------------------------- */

struct from_multi {
    struct shared *sh;
    deferred_t *multi;
    deferred_value_t end;  /* the end's outcome, if it came before we ran */
    bool ended;
    bool started;
    bool paused;           /* we hold a pause on multi */
};

static struct from_multi *from_multi_of(struct shared *sh)
{
    return sh->self ? deferred_stage_data(sh->self) : NULL;
}

static deferred_value_t from_multi_row(deferred_value_t v, void *arg)
{
    struct shared *sh = arg;

    if (sh->self)
        deferred__emit(sh->self, deferred_value_none(), v);
    else
        deferred_value_release(v);
    return deferred_value_none();
}

static deferred_value_t from_multi_end(deferred_value_t v, void *arg)
{
    struct shared *sh = arg;
    struct from_multi *fm = from_multi_of(sh);

    if (!fm) {
        deferred_value_release(v);
    } else if (!fm->started) {
        fm->end = v;
        fm->ended = true;
    } else {
        fm->ended = true;
        deferred_stage_finish(sh->self, v);
    }
    return deferred_value_none();
}

static void from_multi_resume(deferred_stage_t *self, deferred_stage_t *by)
{
    struct from_multi *fm = STAGE_DATA(self);

    (void)by;
    if (!fm->started) {
        fm->started = true;
        if (fm->ended) {
            deferred_value_t v = fm->end;

            fm->end = deferred_value_none();
            deferred_stage_finish(self, v);
            return;
        }
    }
    if (fm->paused) {
        fm->paused = false;
        deferred_unpause(fm->multi);
    }
}

static void from_multi_pause(deferred_stage_t *self, deferred_stage_t *by)
{
    struct from_multi *fm = STAGE_DATA(self);

    (void)by;
    if (!fm->paused && fm->started) {
        fm->paused = true;
        deferred_pause(fm->multi);
    }
}

static void from_multi_cancel(deferred_stage_t *self, deferred_stage_t *by)
{
    struct from_multi *fm = STAGE_DATA(self);

    (void)by;
    deferred_cancel(fm->multi);
}

static int from_multi_describe(deferred_stage_t *self, deferred_value_t item,
                               char *buf, size_t size)
{
    (void)item;
    return snprintf(buf, size, "row %llu of a multi-fire deferred",
                    (unsigned long long)deferred_stage_items(self));
}

static void from_multi_destroy(void *data)
{
    struct from_multi *fm = data;

    fm->sh->self = NULL;
    shared_unref(fm->sh);
    if (fm->paused)
        deferred_unpause(fm->multi);
    deferred_value_release(fm->end);
    deferred_unref(fm->multi);
    deferred__free(fm);
}

static const deferred_stage_ops_t from_multi_ops = {
    .name = "multi-fire producer",
    .resume = from_multi_resume,
    .pause = from_multi_pause,
    .cancel = from_multi_cancel,
    .describe = from_multi_describe,
    .destroy = from_multi_destroy,
};

deferred_stage_t *deferred_stage_from_multi(deferred_t *multi)
{
    struct from_multi *fm;
    struct shared *sh;
    deferred_stage_t *st;
    deferred_t *end;
    int rc;

    if (!deferred_is_multi(multi)) {
        errno = EINVAL;
        return NULL;
    }
    fm = deferred__malloc(sizeof(*fm));
    sh = deferred__malloc(sizeof(*sh));
    if (!fm || !sh) {
        deferred__free(fm);
        deferred__free(sh);
        errno = ENOMEM;
        return NULL;
    }
    memset(fm, 0, sizeof(*fm));
    sh->refs = 1;
    sh->self = NULL;
    fm->sh = sh;
    fm->multi = deferred_ref(multi);
    /* Rows wait in the multi-fire deferred until the process runs. */
    fm->paused = true;
    deferred_pause(multi);
    st = deferred_stage_new(&from_multi_ops, fm, 0);
    if (!st)
        return NULL;
    sh->self = st;
    sh->refs++;
    rc = deferred_add_callback_full(multi, from_multi_row, sh, shared_unref);
    if (rc == 0) {
        end = deferred_multi_when_finished(multi);
        sh->refs++;
        rc = deferred_add_both_full(end, from_multi_end, sh, shared_unref);
        deferred_unref(end);
    }
    if (rc < 0) {
        deferred_stage_free(st);
        errno = -rc;
        return NULL;
    }
    return st;
}

/* ---- map ------------------------------------------------------------------ */

/*
 * What fn returned for each item, in order, until it can go downstream: a
 * plain result goes at once unless results are queued before it; a
 * deferred result (the map owns a reference until it fired) holds the
 * producers paused and the results behind it queued.  The queue is only
 * allocated when a result has to wait.
 */
struct map {
    struct shared *sh;
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

static deferred_value_t map_resolved(deferred_value_t v, void *arg);

/* Nothing is queued any more: let the end of the stream go on. */
static void map_drained(struct map *m)
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
static void map_pump(deferred_stage_t *self, struct map *m)
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
            if (deferred_add_both_full(d, map_resolved, m->sh, shared_unref) < 0) {
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
    struct shared *sh = arg;
    deferred_stage_t *self = sh->self;
    deferred_process_t *p;
    struct map *m;
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
static int map_push(struct map *m, deferred_value_t r)
{
    if (m->len == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 4, i;
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

static deferred_failure_t *map_handle(deferred_stage_t *self, deferred_stage_t *from,
                                      deferred_value_t tag, deferred_value_t *item)
{
    struct map *m = STAGE_DATA(self);
    deferred_value_t v = *item, r;

    (void)from;
    *item = deferred_value_none();
    r = m->fn(v, m->arg);
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

/* Drop the queued results: a deferred among them is cancelled (its
 * callback finds nothing waiting) and let go. */
static void map_abandon(struct map *m)
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
    struct shared *sh = arg;
    struct map *m;

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

/* At the end of the stream, wait for the results still queued; when the
 * stream failed or was cancelled, nobody wants them: they are dropped. */
static deferred_value_t map_finish(deferred_stage_t *self, deferred_stage_t *from,
                                   deferred_value_t tag, deferred_value_t outcome)
{
    struct map *m = STAGE_DATA(self);

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
    m->drain = deferred_new_cancellable(map_drain_cancel, m->sh, shared_unref);
    if (!m->drain) {
        deferred_value_release(outcome);
        return deferred_value_failure(NULL);
    }
    m->final = outcome;
    return deferred_value_deferred(deferred_ref(m->drain));
}

static void map_destroy(void *data)
{
    struct map *m = data;

    m->sh->self = NULL;
    map_abandon(m);
    deferred_value_release(m->final);
    deferred_unref(m->drain);
    shared_unref(m->sh);
    deferred__free(m);
}

deferred_stage_t *deferred_stage_map(const char *name, deferred_fn fn, void *arg)
{
    struct map *m;
    struct shared *sh;
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
    if (st)
        sh->self = st;
    return st;
}

/* ---- filter ---------------------------------------------------------------- */

struct filter {
    deferred_pred_fn keep;
    void *arg;
    deferred_stage_ops_t ops;
};

static deferred_failure_t *filter_handle(deferred_stage_t *self,
                                         deferred_stage_t *from,
                                         deferred_value_t tag,
                                         deferred_value_t *item)
{
    struct filter *fl = STAGE_DATA(self);

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
    struct filter *fl;

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
    return deferred_stage_new(&fl->ops, fl, 0);
}

/* ---- batch ------------------------------------------------------------------ */

struct batch {
    size_t n;
    deferred_array_t *cur;
    deferred_value_t tag; /* the current items' tag, when it is a plain one */
    uint64_t first;       /* the number of the current batch's first item */
    uint64_t sent_first;  /* ... and of the batch last sent, and its last */
    uint64_t sent_last;
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
 * filled) by the numbers of the items in it. */
static int batch_describe(deferred_stage_t *self, deferred_value_t item, char *buf,
                          size_t size)
{
    struct batch *b = STAGE_DATA(self);

    (void)item;
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
        if (!(b->cur = deferred_array_new(b->n < 64 ? b->n : 64)))
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
    return deferred_stage_new(&batch_ops, b, 0);
}

/* ---- collect ------------------------------------------------------------------ */

/*
 * The consumers below (collect, reduce, first) count the groups they are
 * in: their start runs for the whole stream (or, as a subordinate, for
 * their own group) and for every group inside it, and their finish for
 * every end.  Only the end of the outermost is theirs: a group's end
 * inside the stream is not the end of the stream.
 */
static deferred_failure_t *depth_start(deferred_stage_t *self, uint32_t *depth)
{
    if (*depth == UINT32_MAX)
        return deferred_stage_failure(self, DEFERRED_DOMAIN_LIBRARY, EOVERFLOW,
                                      "groups nested too deep");
    ++*depth;
    return NULL;
}

/* Count the end of a group: true when it is the end of the outermost. */
static bool depth_end(uint32_t *depth, deferred_value_t tag)
{
    /* The stream's end (the empty tag) is the last whatever the count:
     * groups a failure left open are not closed one by one. */
    return *depth == 0 || --*depth == 0 || deferred_value_is_none(tag);
}

struct collect {
    deferred_array_t *items;
    uint32_t depth;
};

static deferred_failure_t *collect_start(deferred_stage_t *self, deferred_stage_t *from,
                                         deferred_value_t tag, deferred_stage_t **sub)
{
    struct collect *c = STAGE_DATA(self);

    (void)from;
    (void)tag;
    (void)sub;
    return depth_start(self, &c->depth);
}

static deferred_failure_t *collect_handle(deferred_stage_t *self, deferred_stage_t *from,
                                          deferred_value_t tag, deferred_value_t *item)
{
    struct collect *c = STAGE_DATA(self);

    (void)from;
    (void)tag;
    if (!c->items && !(c->items = deferred_array_new(16)))
        return deferred_stage_failure(self, DEFERRED_DOMAIN_LIBRARY, ENOMEM, NULL);
    if (deferred_array_append(c->items, *item) < 0) {
        *item = deferred_value_none();
        return deferred_stage_failure(self, DEFERRED_DOMAIN_LIBRARY, ENOMEM, NULL);
    }
    *item = deferred_value_none();
    return NULL;
}

static deferred_value_t collect_finish(deferred_stage_t *self, deferred_stage_t *from,
                                       deferred_value_t tag, deferred_value_t outcome)
{
    struct collect *c = STAGE_DATA(self);
    deferred_array_t *a;

    (void)from;
    (void)tag;
    if (!depth_end(&c->depth, tag)) {
        deferred_value_release(outcome);
        return deferred_value_none();
    }
    if (deferred_value_is_failure(outcome))
        return outcome;
    deferred_value_release(outcome);
    a = c->items ? c->items : deferred_array_new(0);
    c->items = NULL;
    return deferred_value_array(a);
}

static void collect_destroy(void *data)
{
    struct collect *c = data;

    deferred_array_free(c->items);
    deferred__free(c);
}

static const deferred_stage_ops_t collect_ops = {
    .name = "collect",
    .start = collect_start,
    .handle = collect_handle,
    .finish = collect_finish,
    .destroy = collect_destroy,
};

deferred_stage_t *deferred_stage_collect(void)
{
    struct collect *c = deferred__malloc(sizeof(*c));

    if (!c)
        return NULL;
    c->items = NULL;
    c->depth = 0;
    return consumer_stage(deferred_stage_new(&collect_ops, c, 0));
}

/* ---- reduce -------------------------------------------------------------------- */

struct reduce {
    deferred_fold_fn fn;
    void *arg;
    deferred_value_t acc;
    uint32_t depth;
};

static deferred_failure_t *reduce_start(deferred_stage_t *self, deferred_stage_t *from,
                                        deferred_value_t tag, deferred_stage_t **sub)
{
    struct reduce *r = STAGE_DATA(self);

    (void)from;
    (void)tag;
    (void)sub;
    return depth_start(self, &r->depth);
}

static deferred_failure_t *reduce_handle(deferred_stage_t *self, deferred_stage_t *from,
                                         deferred_value_t tag, deferred_value_t *item)
{
    struct reduce *r = STAGE_DATA(self);
    deferred_value_t acc;

    (void)from;
    (void)tag;
    acc = r->fn(r->acc, *item, r->arg);
    *item = deferred_value_none();
    r->acc = deferred_value_none();
    if (DEFERRED_UNLIKELY(acc.release != NULL && acc.release != deferred_value_int_release)) {
        if (deferred_value_is_failure(acc))
            return deferred_value_take_failure(acc);
        if (deferred_value_is_deferred(acc)) {
            deferred_value_release(acc);
            return deferred_stage_failure(self, DEFERRED_DOMAIN_LIBRARY, EINVAL,
                                        "a reduce function returned a deferred");
        }
    }
    r->acc = acc;
    return NULL;
}

static deferred_value_t reduce_finish(deferred_stage_t *self, deferred_stage_t *from,
                                      deferred_value_t tag, deferred_value_t outcome)
{
    struct reduce *r = STAGE_DATA(self);
    deferred_value_t acc = r->acc;

    (void)from;
    (void)tag;
    if (!depth_end(&r->depth, tag)) {
        deferred_value_release(outcome);
        return deferred_value_none();
    }
    if (deferred_value_is_failure(outcome))
        return outcome;
    deferred_value_release(outcome);
    r->acc = deferred_value_none();
    return acc;
}

static void reduce_destroy(void *data)
{
    struct reduce *r = data;

    deferred_value_release(r->acc);
    deferred__free(r);
}

static const deferred_stage_ops_t reduce_ops = {
    .name = "reduce",
    .start = reduce_start,
    .handle = reduce_handle,
    .finish = reduce_finish,
    .destroy = reduce_destroy,
};

deferred_stage_t *deferred_stage_reduce(deferred_fold_fn fn, deferred_value_t init,
                                        void *arg)
{
    struct reduce *r;

    if (!fn || deferred_value_is_deferred(init)) {
        deferred_value_release(init);
        errno = EINVAL;
        return NULL;
    }
    r = deferred__malloc(sizeof(*r));
    if (!r) {
        deferred_value_release(init);
        errno = ENOMEM;
        return NULL;
    }
    r->fn = fn;
    r->arg = arg;
    r->acc = init;
    r->depth = 0;
    return consumer_stage(deferred_stage_new(&reduce_ops, r, 0));
}

/* ---- consumer feeding a multi-fire deferred ------------------------------------- */

struct to_multi {
    deferred_t *multi;
    bool holding; /* we hold a pause on our producers for the multi */
};

static void to_multi_flow(deferred_t *multi, bool paused, void *arg)
{
    deferred_stage_t *self = arg;
    struct to_multi *tm = STAGE_DATA(self);

    (void)multi;
    if (paused && !tm->holding) {
        tm->holding = true;
        deferred_stage_pause(self);
    } else if (!paused && tm->holding) {
        tm->holding = false;
        deferred_stage_resume(self);
    }
}

static deferred_failure_t *to_multi_start(deferred_stage_t *self, deferred_stage_t *from,
                                          deferred_value_t tag, deferred_stage_t **sub)
{
    struct to_multi *tm = STAGE_DATA(self);

    (void)from;
    (void)sub;
    if (deferred_value_is_none(tag))
        deferred_multi_set_flow(tm->multi, to_multi_flow, self);
    return NULL;
}

static deferred_failure_t *to_multi_handle(deferred_stage_t *self, deferred_stage_t *from,
                                           deferred_value_t tag, deferred_value_t *item)
{
    struct to_multi *tm = STAGE_DATA(self);
    deferred_value_t v = *item;
    int rc;

    (void)from;
    (void)tag;
    *item = deferred_value_none();
    rc = deferred_multi_emit(tm->multi, v);
    if (rc == -EALREADY)
        deferred_stage_cancel(self); /* the multi-fire deferred ended */
    else if (rc < 0)
        return deferred_stage_failure(self, DEFERRED_DOMAIN_LIBRARY, -rc,
                                    "could not emit into the multi-fire deferred");
    return NULL;
}

static deferred_value_t to_multi_finish(deferred_stage_t *self, deferred_stage_t *from,
                                        deferred_value_t tag, deferred_value_t outcome)
{
    struct to_multi *tm = STAGE_DATA(self);
    deferred_failure_t *f = deferred_value_get_failure(outcome);

    (void)from;
    (void)tag;
    deferred_multi_set_flow(tm->multi, NULL, NULL);
    deferred_failure_ref(f);
    deferred_multi_finish(tm->multi, outcome);
    return f ? deferred_value_failure(f) : deferred_value_none();
}

static void to_multi_destroy(void *data)
{
    struct to_multi *tm = data;

    deferred_multi_set_flow(tm->multi, NULL, NULL);
    deferred_unref(tm->multi);
    deferred__free(tm);
}

static const deferred_stage_ops_t to_multi_ops = {
    .name = "multi-fire consumer",
    .start = to_multi_start,
    .handle = to_multi_handle,
    .finish = to_multi_finish,
    .destroy = to_multi_destroy,
};

deferred_stage_t *deferred_stage_to_multi(deferred_t *multi)
{
    struct to_multi *tm;

    if (!deferred_is_multi(multi)) {
        errno = EINVAL;
        return NULL;
    }
    tm = deferred__malloc(sizeof(*tm));
    if (!tm)
        return NULL;
    tm->multi = deferred_ref(multi);
    tm->holding = false;
    return consumer_stage(deferred_stage_new(&to_multi_ops, tm, 0));
}

/* ---- the first item, and a process that runs for it -------------------------------- */

/* Keeps the first item and cancels the stream: a query for one row. */
struct first {
    deferred_value_t item;
    uint32_t depth;
    bool have;
};

static deferred_failure_t *first_start(deferred_stage_t *self, deferred_stage_t *from,
                                       deferred_value_t tag, deferred_stage_t **sub)
{
    struct first *fr = STAGE_DATA(self);

    (void)from;
    (void)tag;
    (void)sub;
    return depth_start(self, &fr->depth);
}

static deferred_failure_t *first_handle(deferred_stage_t *self, deferred_stage_t *from,
                                        deferred_value_t tag, deferred_value_t *item)
{
    struct first *fr = STAGE_DATA(self);

    (void)from;
    (void)tag;
    if (!fr->have) {
        fr->have = true;
        fr->item = *item;
        *item = deferred_value_none();
        deferred_stage_cancel(self);
    }
    return NULL;
}

static deferred_value_t first_finish(deferred_stage_t *self, deferred_stage_t *from,
                                     deferred_value_t tag, deferred_value_t outcome)
{
    struct first *fr = STAGE_DATA(self);
    deferred_value_t item = fr->item;

    (void)from;
    (void)tag;
    if (!depth_end(&fr->depth, tag)) {
        deferred_value_release(outcome);
        return deferred_value_none();
    }
    if (!fr->have)
        return outcome;
    /* The cancel that followed the item is ours, not a failure. */
    deferred_value_release(outcome);
    fr->item = deferred_value_none();
    return item;
}

static void first_destroy(void *data)
{
    struct first *fr = data;

    deferred_value_release(fr->item);
    deferred__free(fr);
}

static const deferred_stage_ops_t first_ops = {
    .name = "first",
    .start = first_start,
    .handle = first_handle,
    .finish = first_finish,
    .destroy = first_destroy,
};

deferred_stage_t *deferred_stage_first(void)
{
    struct first *fr = deferred__malloc(sizeof(*fr));

    if (!fr)
        return NULL;
    fr->item = deferred_value_none();
    fr->depth = 0;
    fr->have = false;
    return consumer_stage(deferred_stage_new(&first_ops, fr, 0));
}

deferred_t *deferred_process_first_at(const char *file, int line, deferred_stage_t *producer)
{
    deferred_process_t *p;
    deferred_t *d;

    deferred_stage_t *first;
    int rc;

    if (!producer) {
        errno = EINVAL;
        return NULL;
    }
    p = deferred_process_new(0);
    if (!p) {
        deferred_stage_free(producer);
        errno = ENOMEM;
        return NULL;
    }
    /* deferred_process_add() takes its stage, also when it fails. */
    rc = deferred_process_add(p, producer);
    if (rc == 0) {
        first = deferred_stage_first();
        rc = first ? deferred_process_add(p, first) : -ENOMEM;
    }
    if (rc < 0) {
        deferred_process_unref(p);
        errno = -rc;
        return NULL;
    }
    d = deferred_process_run_at(file, line, p);
    deferred_process_unref(p);
    return d;
}

deferred_t *(deferred_process_first)(deferred_stage_t *producer)
{
    return deferred_process_first_at(NULL, 0, producer);
}
