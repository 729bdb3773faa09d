/*
 * sinks.c: the built-in consumers of deferred_process: collect, reduce,
 * first, and one feeding a multi-fire deferred; and
 * deferred_process_first(), a process that runs for one item.  The
 * built-in stages use the stage interface of process.h as a user's stage
 * would, with two private shortcuts that a user's stage does not have:
 * they call the per-item path inline (deferred__emit(), where a user's
 * stage calls deferred_stage_emit(), one call more per item) and read
 * their data and a producer's state from the stage directly
 * (STAGE_DATA(), deferred__producer_blocked()).  The consumers here also
 * mark themselves as such (consumer_stage()), which a user's consumer
 * cannot: only their process refuses a stage added after them.
 */
#include <stdio.h>
#include <string.h>

#include "core/deferred-private.h"
#include "process-private.h"

/* The room collect starts with; it grows as it fills. */
#define COLLECT_FIRST_CAP 16

/* A built-in consumer: the process refuses a stage added after it. */
static deferred_stage_t *consumer_stage(deferred_stage_t *st)
{
    if (st)
        st->consumer = true;
    return st;
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
    if (!c->items && !(c->items = deferred_array_new(COLLECT_FIRST_CAP)))
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

static deferred_failure_t *reduce_start(deferred_stage_t *self, deferred_stage_t *from,
                                        deferred_value_t tag, deferred_stage_t **sub)
{
    struct deferred__reduce *r = STAGE_DATA(self);

    (void)from;
    (void)tag;
    (void)sub;
    return depth_start(self, &r->depth);
}

static deferred_failure_t *reduce_handle(deferred_stage_t *self, deferred_stage_t *from,
                                         deferred_value_t tag, deferred_value_t *item)
{
    deferred_value_t v = *item;

    (void)from;
    (void)tag;
    *item = deferred_value_none();
    return deferred__reduce_step(self, v);
}

static deferred_value_t reduce_finish(deferred_stage_t *self, deferred_stage_t *from,
                                      deferred_value_t tag, deferred_value_t outcome)
{
    struct deferred__reduce *r = STAGE_DATA(self);
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
    struct deferred__reduce *r = data;

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
    struct deferred__reduce *r;
    deferred_stage_t *st;

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
    st = consumer_stage(deferred_stage_new(&reduce_ops, r, 0));
    if (st)
        st->kind = DEFERRED__KIND_REDUCE; /* may end a fused run */
    return st;
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
