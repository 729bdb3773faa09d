/*
 * gather.c: gather, list and race, the combinators that fold several
 * deferreds into one, as modes of the fan-in engine (fanin.c).
 *
 * The engine owns the block, the references on the inputs, the building,
 * the cancel loop and the letting go; this file says what an outcome does
 * in each mode.  The mode's part of the block:
 *  - gather and list: the array out fires with, made at build time with
 *    one empty value per input; each outcome is stored at its index as it
 *    arrives, so the last one fires out with the array as it is;
 *  - race: one failure per input (the group, if every input fails);
 *  - race, and a list with DEFERRED_FIRE_ON_SUCCESS: the indexed value,
 *    allocated at build time so that a win cannot fail.
 */
#include <errno.h>
#include <string.h>

#include "fanin-private.h"
#include "deferred/combinators.h"

enum mode { MODE_GATHER, MODE_LIST, MODE_RACE };

struct combo {
    enum mode mode;
    unsigned flags;
    size_t remaining;              /* gather, list: outcomes still to come */
    size_t failed;                 /* race: failures seen */
    deferred_array_t *array;       /* gather, list: until fired */
    deferred_indexed_t *indexed;   /* race, list on success: until fired */
    deferred_value_t *values;      /* gather, list: the array's elements */
    deferred_failure_t **failures; /* race: one per input */
};

#define COMBO(f) ((struct combo *)(f)->mode)

/* ---- result values ----------------------------------------------------- */

static void indexed_release(void *ptr)
{
    deferred_indexed_t *x = ptr;

    deferred_value_release(x->value);
    deferred__free(x);
}

deferred_indexed_t *deferred_value_get_indexed(deferred_value_t v)
{
    return v.release == indexed_release ? v.ptr : NULL;
}

/* The array of outcomes, every element in place, as the value out fires
 * with. */
static deferred_value_t take_array(struct fanin *f)
{
    struct combo *c = COMBO(f);
    deferred_array_t *a = c->array;

    c->array = NULL;
    c->values = NULL;
    return deferred_value_array(a);
}

/* Drop what was collected for a result that will never be delivered. */
static void drop_collected(struct fanin *f)
{
    struct combo *c = COMBO(f);
    size_t i;

    if (c->array) {
        deferred_array_free(c->array); /* and the outcomes in it */
        c->array = NULL;
        c->values = NULL;
    }
    if (c->indexed) {
        indexed_release(c->indexed);
        c->indexed = NULL;
    }
    if (c->failures) {
        for (i = 0; i < f->n; i++) {
            deferred_failure_unref(c->failures[i]);
            c->failures[i] = NULL;
        }
    }
}

/* Fire out with v (taken), or release v if out is gone. */
static void finish(struct fanin *f, deferred_value_t v)
{
    drop_collected(f);
    f->done = true;
    if (f->out)
        deferred_callback(f->out, v);
    else
        deferred_value_release(v);
}

/* ---- outcomes ---------------------------------------------------------- */

/* Input i of a gather or list delivered v (taken); returns what the
 * input's chain continues with. */
static deferred_value_t deliver_list(struct fanin *f, size_t i, deferred_value_t v)
{
    struct combo *c = COMBO(f);
    deferred_failure_t *fl;
    deferred_value_t keep = deferred_value_none();

    if (!deferred_value_is_failure(v)) {
        if (f->done) {
            deferred_value_release(v);
        } else if (c->flags & DEFERRED_FIRE_ON_SUCCESS) {
            c->indexed->index = i;
            c->indexed->value = v;
            v = deferred_value_make(c->indexed, indexed_release);
            c->indexed = NULL;
            finish(f, v);
        } else {
            c->values[i] = v;
            if (--c->remaining == 0)
                finish(f, take_array(f));
        }
        return keep;
    }

    if (c->flags & DEFERRED_KEEP_ERRORS) {
        fl = deferred_failure_ref(deferred_value_get_failure(v));
        keep = v;
    } else {
        fl = deferred_value_take_failure(v);
    }
    if (f->done) {
        deferred_failure_unref(fl);
    } else if (c->flags & DEFERRED_FIRE_ON_FAILURE) {
        finish(f, deferred_value_failure(deferred_failure_first_error(i, fl)));
    } else {
        c->values[i] = deferred_value_failure(fl);
        if (--c->remaining == 0)
            finish(f, take_array(f));
    }
    return keep;
}

/* Input i of a race delivered v (taken).  The chain continues empty. */
static void deliver_race(struct fanin *f, size_t i, deferred_value_t v)
{
    struct combo *c = COMBO(f);
    deferred_failure_t *fl;

    if (f->done) {
        deferred_value_release(v);
        return;
    }
    if (!deferred_value_is_failure(v)) {
        deferred_indexed_t *x = c->indexed;

        c->indexed = NULL;
        x->index = i;
        x->value = v;
        f->done = true;
        drop_collected(f);
        /* The losers first (after the build, if building), then out. */
        deferred__fanin_cancel_inputs(f);
        finish(f, deferred_value_make(x, indexed_release));
        return;
    }
    c->failures[i] = deferred_value_take_failure(v);
    if (++c->failed == f->n) {
        fl = deferred_failure_group(c->failures, f->n);
        memset(c->failures, 0, f->n * sizeof(*c->failures));
        finish(f, deferred_value_failure(fl));
    }
}

static deferred_value_t combo_outcome(struct fanin *f, size_t i, deferred_value_t v)
{
    if (COMBO(f)->mode == MODE_RACE) {
        deliver_race(f, i, v);
        return deferred_value_none();
    }
    return deliver_list(f, i, v);
}

static const char *combo_name(const struct fanin *f)
{
    static const char *const names[] = { "gather", "list", "race" };

    return names[COMBO(f)->mode];
}

static const struct fanin_ops combo_ops = {
    .outcome = combo_outcome,
    .drop = drop_collected,
    .name = combo_name,
};

/* out's canceller. */
static void on_cancel(deferred_t *d, void *arg)
{
    (void)d;
    deferred__fanin_cancel_inputs(arg);
}

/* ---- building ---------------------------------------------------------- */

static deferred_t *combine(enum mode mode, deferred_t *const *inputs, size_t n,
                           unsigned flags)
{
    const size_t align = sizeof(deferred_value_t);
    struct fanin *f;
    struct combo *c;
    deferred_t *r;
    size_t i, head, per;
    int rc;

    if ((n > 0 && !inputs) ||
        (flags & ~(DEFERRED_CONSUME_ERRORS | DEFERRED_KEEP_ERRORS |
                   DEFERRED_FIRE_ON_SUCCESS | DEFERRED_FIRE_ON_FAILURE)) ||
        ((flags & DEFERRED_CONSUME_ERRORS) && (flags & DEFERRED_KEEP_ERRORS)))
        goto out_einval;
    for (i = 0; i < n; i++)
        if (!inputs[i])
            goto out_einval;

    if (n == 0) {
        if (mode == MODE_RACE) {
            r = deferred_fail(deferred_failure_group(NULL, 0));
        } else {
            deferred_array_t *empty = deferred_array_new(0);

            r = empty ? deferred_succeed(deferred_value_array(empty)) : NULL;
        }
        if (!r)
            errno = ENOMEM;
        return r;
    }

    head = (sizeof(*c) + align - 1) / align * align;
    per = mode == MODE_RACE ? sizeof(deferred_failure_t *) : 0;
    if (per && n > (SIZE_MAX - head) / per)
        goto out_enomem;
    f = deferred__fanin_new(n, head + n * per, &combo_ops, true);
    if (!f)
        return NULL;
    c = COMBO(f);
    c->mode = mode;
    c->flags = flags;
    c->remaining = n;
    if (mode == MODE_RACE) {
        c->failures = (deferred_failure_t **)(void *)((char *)c + head);
    } else {
        c->array = deferred_array_new(n);
        if (!c->array)
            goto out_free;
        c->values = deferred__array_fill(c->array, n);
    }
    if (mode == MODE_RACE || (flags & DEFERRED_FIRE_ON_SUCCESS)) {
        c->indexed = deferred__malloc(sizeof(*c->indexed));
        if (!c->indexed)
            goto out_free;
        c->indexed->index = 0;
        c->indexed->value = deferred_value_none();
    }

    f->refs++; /* out's */
    r = deferred_new_cancellable(on_cancel, f, deferred__fanin_out_freed);
    if (!r)
        goto out_free; /* the destroy function dropped out's reference */
    deferred__fanin_set_out(f, r);

    rc = deferred__fanin_attach(f, inputs);
    deferred__fanin_built(f);
    if (rc < 0) {
        deferred_unref(r);
        errno = -rc;
        return NULL;
    }
    return r;

out_free:
    f->done = true;
    drop_collected(f);
    f->building = false;
    f->busy--;
    deferred__fanin_unref(f);
out_enomem:
    errno = ENOMEM;
    return NULL;
out_einval:
    errno = EINVAL;
    return NULL;
}

deferred_t *deferred_gather(deferred_t *const *inputs, size_t n, unsigned flags)
{
    if (flags & ~(DEFERRED_CONSUME_ERRORS | DEFERRED_KEEP_ERRORS)) {
        errno = EINVAL;
        return NULL;
    }
    return combine(MODE_GATHER, inputs, n, flags | DEFERRED_FIRE_ON_FAILURE);
}

deferred_t *deferred_list(deferred_t *const *inputs, size_t n, unsigned flags)
{
    return combine(MODE_LIST, inputs, n, flags);
}

deferred_t *deferred_race(deferred_t *const *inputs, size_t n)
{
    return combine(MODE_RACE, inputs, n, 0);
}
