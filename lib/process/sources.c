/*
 * sources.c: the built-in producers of deferred_process: an array, a
 * multi-fire deferred.  The
 * built-in stages use the stage interface of process.h as a user's stage
 * would, with two private shortcuts that a user's stage does not have:
 * they call the per-item path inline (deferred__emit(), where a user's
 * stage calls deferred_stage_emit(), one call more per item) and read
 * their data and a producer's state from the stage directly
 * (STAGE_DATA(), deferred__producer_blocked()).
 *
 * The design decision to know: a stage that hands a callback to a
 * deferred (from_multi here, map in transforms.c, to_multi in sinks.c) may
 * be freed before that deferred lets go of the callback, so such stages
 * keep their state in a small refcounted block (struct deferred__shared):
 * the stage holds one reference, each callback another, and a freed stage
 * only detaches itself from the block.
 */
#include <stdio.h>
#include <string.h>

#include "core/deferred-private.h"
#include "process-private.h"

void deferred__shared_unref(void *arg)
{
    struct deferred__shared *sh = arg;

    if (--sh->refs == 0)
        deferred__free(sh);
}

/* ---- array producer ----------------------------------------------------- */

struct array_producer {
    deferred_value_t *items;
    size_t n;
    size_t next;
};

/*
 * The array's loop when the next stage heads a fused run: the run's loop
 * in place of each emit's call to its handle, and one stage call around
 * all the items (each emit would enter and leave one; between two items
 * nothing is left to settle while the stream flows).  It goes on while
 * self's fast flag is on (the stream flows, the producer is live, as
 * deferred__producer_blocked() checks, and the emit would be the fast
 * one) and it is not paused.  An item after which the fast flag is off
 * ends as the emit's would, through deferred__emit_unwind(): -ECANCELED
 * when the stream ends.  0 otherwise: array_resume() goes on with the
 * general loop.
 */
static DEFERRED_NOINLINE int array_fused(deferred_stage_t *self, struct array_producer *ap)
{
    deferred_process_t *p = self->p;
    deferred_stage_t *to = self->down, *st;
    size_t i = ap->next, n = ap->n;

    deferred__enter(p);
    while (i < n) {
        /* Taken: the array owns only the items from next on. */
        deferred_value_t v = ap->items[i];

        ap->next = ++i;
        self->items++;
        to->items++;
        st = deferred__fused_run(to, deferred_value_none(), v);
        if (DEFERRED_UNLIKELY(!self->fast)) {
            if (p->failure)
                deferred__fused_frames(to, st);
            return deferred__emit_unwind(self, to, deferred_value_none(), NULL);
        }
        if (DEFERRED_UNLIKELY(self->paused))
            break;
    }
    deferred__leave(p);
    return 0;
}

static void array_resume(deferred_stage_t *self, deferred_stage_t *by)
{
    struct array_producer *ap = STAGE_DATA(self);

    (void)by;
    if (self->fast && !self->paused && self->down->handle == deferred__fused_handle &&
        array_fused(self, ap) < 0)
        return;
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
    struct deferred__shared *sh;
    deferred_t *multi;
    deferred_value_t end;  /* the end's outcome, if it came before we ran */
    bool ended;
    bool started;
    bool paused;           /* we hold a pause on multi */
};

static struct from_multi *from_multi_of(struct deferred__shared *sh)
{
    return sh->self ? deferred_stage_data(sh->self) : NULL;
}

static deferred_value_t from_multi_row(deferred_value_t v, void *arg)
{
    struct deferred__shared *sh = arg;

    if (sh->self)
        deferred__emit(sh->self, deferred_value_none(), v);
    else
        deferred_value_release(v);
    return deferred_value_none();
}

static deferred_value_t from_multi_end(deferred_value_t v, void *arg)
{
    struct deferred__shared *sh = arg;
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
    deferred__shared_unref(fm->sh);
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
    struct deferred__shared *sh;
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
    rc = deferred_add_callback_full(multi, from_multi_row, sh, deferred__shared_unref);
    if (rc == 0) {
        end = deferred_multi_when_finished(multi);
        sh->refs++;
        rc = deferred_add_both_full(end, from_multi_end, sh, deferred__shared_unref);
        deferred_unref(end);
    }
    if (rc < 0) {
        deferred_stage_free(st);
        errno = -rc;
        return NULL;
    }
    return st;
}
