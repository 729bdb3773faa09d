/*
 * core.c: deferred_t, its chain and the runner that drives it.
 *
 * A deferred is one allocation: a small header, the result, and room for
 * DEFERRED_INLINE_LINKS chain entries, so the common chain (a deferred, a
 * handful of callbacks, a fire) costs one malloc.  Longer chains move their
 * entries to a heap block that grows geometrically.
 *
 * The design decision to know is in run(): the chain runner never
 * recurses.  When a callback returns a deferred R that has not got a result
 * yet, the outer deferred records that it waits on R (holding a reference
 * on R) and appends a "continue" entry to R's chain that points back at the
 * outer (without a reference, so nothing owns itself).  When R's runner
 * reaches that entry it moves its result to the outer and pushes the outer
 * on an explicit stack threaded through the deferreds themselves, then
 * carries on with the outer in the same loop: a million deferreds, each
 * waiting on the next, complete in constant stack.  Freeing is iterative
 * for the same reason: the last deferred_unref() queues deferreds on a
 * per-thread list and frees them in a loop, whatever releases they
 * trigger.
 *
 * Two rules keep weak pointers and nesting safe.
 *
 * A deferred whose count reached zero is dying: it may wait on free_list
 * while other frees run, and until its canceller's destroy function has run
 * a combinator (or an inner deferred's continue entry) may still point at
 * it.  A dying deferred is inert: firing it releases the value, cancelling,
 * running or referencing it does nothing, and a continue entry that reaches
 * it is dead.  So nothing can bring its count back from zero and queue it
 * a second time.
 *
 * Callbacks that fire, cancel or unpause other deferreds start runners of
 * their own, nested in C.  Past NEST_MAX nested runners on a thread, the
 * work is queued instead (the "later" queue) and the runner at depth
 * NEST_MAX does it as soon as it has run its own stack (a check per
 * runner, none per callback).  So
 * a chain of chain_to() links, a lock handed from waiter to waiter, or a
 * gather of a gather of a million levels run in bounded stack, and only a
 * callback that many levels deep sees its fire take effect after its own
 * deferred's chain has run rather than at once.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deferred-private.h"
#include "core-private.h"

#ifndef DEFERRED_DEBUG_DEFAULT
#define DEFERRED_DEBUG_DEFAULT 0
#endif

#if defined(__GNUC__)
#define THREAD_LOCAL __thread __attribute__((tls_model("initial-exec")))
#else
#define THREAD_LOCAL _Thread_local
#endif

/* A callback argument with destroy functions (the _full calls). */
struct full_arg {
    deferred_fn cb;
    void *cb_arg;
    deferred_destroy_fn cb_destroy;
    deferred_fn eb;
    void *eb_arg;
    deferred_destroy_fn eb_destroy;
};

static bool debug_on = DEFERRED_DEBUG_DEFAULT;
static deferred_report_fn report_hook;
static void *report_arg;

/* Deferreds whose last reference went while another was being freed. */
static THREAD_LOCAL deferred_t *free_list;
static THREAD_LOCAL bool freeing;

/* Runners and cancels nested on this thread, and the work queued past
 * NEST_MAX of them (see the file comment). */
#ifndef DEFERRED_NEST_MAX
#define DEFERRED_NEST_MAX 32
#endif
#define NEST_MAX DEFERRED_NEST_MAX
static THREAD_LOCAL unsigned nest;
static THREAD_LOCAL deferred_t *later_head, *later_tail;

#if defined(__GNUC__)
__attribute__((constructor)) static void read_environment(void)
{
    const char *s = getenv("DEFERRED_DEBUG");

    if (s && *s && strcmp(s, "0") != 0)
        debug_on = true;
}
#endif

/* ---- reporting --------------------------------------------------------- */

void deferred_set_report_hook(deferred_report_fn hook, void *arg)
{
    report_hook = hook;
    report_arg = hook ? arg : NULL;
}

/* Report f about d (NULL when no deferred is concerned): with d's sites
 * when debug mode recorded them. */
static void report_about(deferred_report_t kind, const deferred_failure_t *f,
                         const deferred_t *d)
{
    char buf[1024], line[1200], sites[512], *p;
    const char *q;
    deferred_report_info_t info;
    const struct deferred_ext *x = d ? d->ext : NULL;

    info.kind = kind;
    info.failure = f;
    info.new_file = x ? x->new_file : NULL;
    info.new_line = info.new_file ? x->new_line : 0;
    info.fire_file = x && x->new_file ? x->fire_file : NULL;
    info.fire_line = info.fire_file ? x->fire_line : 0;
    if (report_hook) {
        report_hook(&info, report_arg);
        return;
    }
    sites[0] = '\0';
    if (info.new_file && kind == DEFERRED_REPORT_UNHANDLED) {
        if (info.fire_file)
            snprintf(sites, sizeof(sites), " (deferred created at %s:%d, fired at %s:%d)",
                     info.new_file, info.new_line, info.fire_file, info.fire_line);
        else
            snprintf(sites, sizeof(sites), " (deferred created at %s:%d)",
                     info.new_file, info.new_line);
    }
    deferred_failure_story(f, buf, sizeof(buf));
    /* One line: each newline and the indentation after it become " | ". */
    for (p = line, q = buf; *q && p < line + sizeof(line) - 4; q++) {
        if (*q != '\n') {
            *p++ = *q;
            continue;
        }
        while (q[1] == ' ')
            q++;
        memcpy(p, " | ", 3);
        p += 3;
    }
    *p = '\0';
    fprintf(stderr, "deferred: %s: %s%s\n",
            kind == DEFERRED_REPORT_UNHANDLED ? "unhandled failure" : "misuse",
            line, sites);
}

void deferred__report(deferred_report_t kind, const deferred_failure_t *f)
{
    report_about(kind, f, NULL);
}

void deferred_set_debug(bool on)
{
    debug_on = on;
}

bool deferred_get_debug(void)
{
    return debug_on;
}

/* ---- special entries --------------------------------------------------- */

/* The entry an outer deferred leaves in the chain of the deferred it waits
 * on.  Never called: the runner recognizes it by address. */
static deferred_value_t continue_fn(deferred_value_t v, void *arg)
{
    (void)arg;
    return v;
}

static deferred_value_t full_cb(deferred_value_t v, void *arg)
{
    struct full_arg *fa = arg;

    return fa->cb(v, fa->cb_arg);
}

static deferred_value_t full_eb(deferred_value_t v, void *arg)
{
    struct full_arg *fa = arg;

    return fa->eb(v, fa->eb_arg);
}

static void full_arg_destroy(struct full_arg *fa)
{
    if (fa->cb_destroy)
        fa->cb_destroy(fa->cb_arg);
    if (fa->eb_destroy && !(fa->eb_destroy == fa->cb_destroy && fa->eb_arg == fa->cb_arg))
        fa->eb_destroy(fa->eb_arg);
    deferred__free(fa);
}

/* Called once per pair when it ran, was skipped or is dropped: destroys the
 * arguments of a _full pair.  Plain entries own nothing. */
static inline void link_dispose(uint8_t kind, struct link l)
{
    if (DEFERRED_UNLIKELY(kind & LINK_FULL))
        full_arg_destroy(l.arg);
    else if (DEFERRED_UNLIKELY(kind & LINK_OWNED))
        ((struct deferred__owned *)l.arg)->dispose(l.arg);
}

/* ---- construction and destruction ------------------------------------- */

deferred_t *deferred_new_at(const char *file, int line,
                            deferred_canceller_fn canceller, void *arg,
                            deferred_destroy_fn destroy)
{
    deferred_t *d = deferred__malloc(sizeof(*d));

    if (!d)
        goto out_destroy;
    d->refs = 1;
    d->paused = 0;
    d->flags = 0;
    d->pos = 0;
    d->n = 0;
    d->cap = DEFERRED_INLINE_LINKS;
    d->waiters = 0;
    d->wait_idx = 0;
    d->result.ptr = NULL;
    d->result.release = NULL;
    d->chained_to = NULL;
    d->next = NULL;
    d->links = d->inline_links;
    d->kinds = d->inline_kinds;
    d->canceller = canceller;
    d->canceller_arg = arg;
    d->ext = NULL;
    if (DEFERRED_UNLIKELY(debug_on || destroy)) {
        d->ext = deferred__malloc(sizeof(*d->ext));
        if (!d->ext)
            goto out_free_deferred;
        d->ext->canceller_destroy = destroy;
        d->ext->new_file = debug_on ? file : NULL;
        d->ext->new_line = line;
        d->ext->fire_file = NULL;
        d->ext->fire_line = 0;
        d->ext->multi = NULL;
        d->ext->inputs = NULL;
        d->ext->inputs_arg = NULL;
    }
    return d;

out_free_deferred:
    deferred__free(d);
out_destroy:
    if (destroy)
        destroy(arg);
    errno = ENOMEM;
    return NULL;
}

int deferred__set_inputs(deferred_t *d, deferred__inputs_fn fn, void *arg)
{
    if (!d || !d->ext)
        return -EINVAL;
    d->ext->inputs = fn;
    d->ext->inputs_arg = arg;
    return 0;
}

deferred_t *deferred_ref(deferred_t *d)
{
    if (d && d->refs) /* a dying deferred stays dying */
        d->refs++;
    return d;
}

static inline bool is_continue(const deferred_t *inner, uint32_t i,
                               const deferred_t *outer)
{
    return inner->kinds[i] == LINK_BOTH && inner->links[i].fn == continue_fn &&
           inner->links[i].arg == outer;
}

/* Stop d waiting on the deferred it is chained to: turn d's continue entry
 * in that deferred's chain into a dead one (found where d recorded it, so
 * freeing many waiters of one deferred is linear), and drop d's
 * reference. */
static void unchain(deferred_t *d)
{
    deferred_t *inner = d->chained_to;
    uint32_t i = d->wait_idx;

    d->chained_to = NULL;
    if (!(i >= inner->pos && i < inner->n && is_continue(inner, i, d)))
        for (i = inner->pos; i < inner->n && !is_continue(inner, i, d); i++)
            ;
    if (i < inner->n) {
        inner->kinds[i] = LINK_DEAD;
        inner->waiters--;
    }
    deferred_unref(inner);
}

/* Free d, whose last reference is gone.  Everything it releases that frees
 * further deferreds only queues them on free_list. */
static void free_deferred(deferred_t *d)
{
    uint32_t i;

    if (DEFERRED_UNLIKELY(d->result.release == deferred__release_failure))
        report_about(DEFERRED_REPORT_UNHANDLED, d->result.ptr, d);
    deferred_value_release(d->result);
    /* A multi-fire chain keeps all its entries; a single-shot one only
     * those not reached yet. */
    for (i = (d->flags & F_MULTI) ? 0 : d->pos; i < d->n; i++)
        link_dispose(d->kinds[i], d->links[i]);
    if (d->chained_to)
        unchain(d);
    if (d->links != d->inline_links)
        deferred__free(d->links);
    if (d->ext) {
        if (d->ext->multi)
            deferred__multi_free(d->ext->multi);
        if (d->ext->canceller_destroy)
            d->ext->canceller_destroy(d->canceller_arg);
        deferred__free(d->ext);
    }
    deferred__free(d);
}

void deferred_unref(deferred_t *d)
{
    if (!d || !d->refs || --d->refs)
        return;
    if (freeing) {
        d->next = free_list;
        free_list = d;
        return;
    }
    freeing = true;
    free_deferred(d);
    while ((d = free_list)) {
        free_list = d->next;
        free_deferred(d);
    }
    freeing = false;
}

/* ---- the chain --------------------------------------------------------- */

/* Make room for need more entries: compact consumed ones away first, then
 * grow into a heap block (entries, then their kinds). */
static int reserve(deferred_t *d, uint32_t need)
{
    uint32_t live = d->n - d->pos, cap;
    struct link *links;
    uint8_t *kinds;

    if (d->n + need <= d->cap)
        return 0;
    /* Safe while d runs: the runner holds no index across a callback. */
    if (d->pos > 0 && live + need <= d->cap && !(d->flags & F_MULTI)) {
        uint32_t i;

        memmove(d->links, d->links + d->pos, live * sizeof(*d->links));
        memmove(d->kinds, d->kinds + d->pos, live);
        /* The outers waiting here find their continue entries moved. */
        for (i = 0; d->waiters && i < live; i++)
            if (d->kinds[i] == LINK_BOTH && d->links[i].fn == continue_fn)
                ((deferred_t *)d->links[i].arg)->wait_idx -= d->pos;
        d->pos = 0;
        d->n = live;
        return 0;
    }
    cap = d->cap;
    while (cap < d->n + need) {
        if (cap > UINT32_MAX / 2 / (sizeof(struct link) + 1))
            return -ENOMEM;
        cap *= 2;
    }
    links = deferred__malloc((size_t)cap * (sizeof(*links) + 1));
    if (!links)
        return -ENOMEM;
    kinds = (uint8_t *)(links + cap);
    memcpy(links, d->links, d->n * sizeof(*links));
    memcpy(kinds, d->kinds, d->n);
    if (d->links != d->inline_links)
        deferred__free(d->links);
    d->links = links;
    d->kinds = kinds;
    d->cap = cap;
    return 0;
}

static void run(deferred_t *d);

/* Drop a reference the runner took: the common case, not the last one,
 * without a call. */
static inline void unref_inline(deferred_t *d)
{
    if (DEFERRED_LIKELY(d->refs > 1))
        d->refs--;
    else
        deferred_unref(d);
}

static inline bool idle_with_result(const deferred_t *d)
{
    return (d->flags & F_CALLED) && !d->paused && !d->chained_to;
}

/* Append entries and, when d can run, run them.  kind1 may carry
 * LINK_FULL; the second half of a pair never does (the first disposes). */
/* Entries of a single-shot chain are used once; a multi-fire chain keeps
 * its entries for the next row. */
static inline void consumed(const deferred_t *d, uint8_t kind, struct link l)
{
    if (DEFERRED_UNLIKELY(kind & (LINK_FULL | LINK_OWNED)) && !(d->flags & F_MULTI))
        link_dispose(kind, l);
}

static bool chain_on(deferred_t *cur, deferred_t *inner);

/* ---- nesting ----------------------------------------------------------- */

static void run_stack(deferred_t *d);
static void cancel_now(deferred_t *d, const char *file, int line);

/* Queue d for what (F_LATER_RUN, F_LATER_CANCEL), holding a reference. */
static void later(deferred_t *d, uint32_t what)
{
    if (!(d->flags & (F_LATER_RUN | F_LATER_CANCEL))) {
        d->refs++;
        d->next = NULL;
        if (later_tail)
            later_tail->next = d;
        else
            later_head = d;
        later_tail = d;
    }
    d->flags |= what;
}

/* Do the queued work, in order, one level deeper than the runner at
 * NEST_MAX that calls it: what that work queues in turn is done by this
 * same loop. */
static DEFERRED_NOINLINE void drain(void)
{
    deferred_t *d;

    while ((d = later_head)) {
        uint32_t what = d->flags & (F_LATER_RUN | F_LATER_CANCEL);

        later_head = d->next;
        if (!later_head)
            later_tail = NULL;
        d->next = NULL;
        d->flags &= ~(F_LATER_RUN | F_LATER_CANCEL);
        nest++;
        if (what & F_LATER_CANCEL)
            cancel_now(d, NULL, 0);
        if ((what & F_LATER_RUN) && !(d->flags & F_RUNNING))
            run_stack(d);
        nest--;
        deferred_unref(d);
    }
}

/* Leave a frame entered with nest++: nothing queued may outlive it, so
 * the frame at NEST_MAX does what was queued meanwhile. */
static inline void leave(void)
{
    if (DEFERRED_UNLIKELY(nest == NEST_MAX) && later_head)
        drain();
    nest--;
}

/*
 * A pair added to a deferred that has its result, is idle and has nothing
 * pending runs at once: this is that one step of the runner, without
 * storing the pair.  It is no runner frame of its own (it runs one callback
 * inside its caller's frame), so it does not count in nest.  Entries the callback adds on the way, or a deferred it
 * returns, go to the runner afterwards, as they would have.
 */
static void run_one(deferred_t *d, deferred_fn fn1, void *arg1, uint8_t kind1,
                    deferred_fn fn2, void *arg2)
{
    uint8_t kind = kind1 & LINK_KIND;
    bool failed = d->result.release == deferred__release_failure;
    struct link l;
    deferred_value_t r;

    l.fn = fn1;
    l.arg = arg1;
    if ((kind == LINK_CB && failed) || (kind == LINK_EB && !failed)) {
        consumed(d, kind1, l);
        return;
    }
    if (kind == LINK_PAIR_CB && failed) {
        l.fn = fn2;
        l.arg = arg2;
    }
    d->refs++;
    d->flags |= F_RUNNING;
    r = d->result;
    d->result = deferred_value_none();
    r = l.fn(r, l.arg);
    consumed(d, kind1, l);
    if (DEFERRED_UNLIKELY(r.release == deferred__release_deferred))
        chain_on(d, r.ptr);
    else
        d->result = r;
    d->flags &= ~F_RUNNING;
    if (d->pos < d->n && idle_with_result(d))
        run(d);
    unref_inline(d);
}

static int append_slow(deferred_t *d, deferred_fn fn1, void *arg1, uint8_t kind1,
                       deferred_fn fn2, void *arg2)
{
    uint32_t need = (kind1 & LINK_KIND) == LINK_PAIR_CB ? 2 : 1;

    if (idle_with_result(d) && d->pos == d->n && fn1 != continue_fn &&
        !(d->flags & (F_RUNNING | F_MULTI | F_LATER_RUN)) && d->refs) {
        run_one(d, fn1, arg1, kind1, fn2, arg2);
        return 0;
    }
    if (DEFERRED_UNLIKELY(d->n + need > d->cap) && reserve(d, need) < 0)
        return -ENOMEM;
    d->links[d->n].fn = fn1;
    d->links[d->n].arg = arg1;
    d->kinds[d->n] = kind1;
    if (need == 2) {
        d->links[d->n + 1].fn = fn2;
        d->links[d->n + 1].arg = arg2;
        d->kinds[d->n + 1] = LINK_PAIR_EB;
    }
    d->n += need;
    if (DEFERRED_UNLIKELY(d->flags & F_MULTI) && !(d->flags & F_ROW))
        d->pos = d->n; /* nothing in flight: the new entries wait for a row */
    if (idle_with_result(d))
        run(d);
    return 0;
}

/* The common case inline: one entry, room for it, nothing to run. */
static inline int append(deferred_t *d, deferred_fn fn1, void *arg1, uint8_t kind1,
                         deferred_fn fn2, void *arg2)
{
    uint32_t n = d->n;

    if (DEFERRED_LIKELY(kind1 != LINK_PAIR_CB && n < d->cap &&
                        !(d->flags & (F_CALLED | F_MULTI)))) {
        d->links[n].fn = fn1;
        d->links[n].arg = arg1;
        d->kinds[n] = kind1;
        d->n = n + 1;
        return 0;
    }
    return append_slow(d, fn1, arg1, kind1, fn2, arg2);
}

int deferred_add_callbacks(deferred_t *d, deferred_fn cb, void *cb_arg,
                           deferred_fn eb, void *eb_arg)
{
    if (DEFERRED_UNLIKELY(!d || (!cb && !eb)))
        return -EINVAL;
    if (!eb)
        return append(d, cb, cb_arg, LINK_CB, NULL, NULL);
    if (!cb)
        return append(d, eb, eb_arg, LINK_EB, NULL, NULL);
    if (cb == eb && cb_arg == eb_arg)
        return append(d, cb, cb_arg, LINK_BOTH, NULL, NULL);
    return append(d, cb, cb_arg, LINK_PAIR_CB, eb, eb_arg);
}

int deferred_add_callback(deferred_t *d, deferred_fn cb, void *arg)
{
    if (DEFERRED_UNLIKELY(!d || !cb))
        return -EINVAL;
    return append(d, cb, arg, LINK_CB, NULL, NULL);
}

int deferred_add_errback(deferred_t *d, deferred_fn eb, void *arg)
{
    if (DEFERRED_UNLIKELY(!d || !eb))
        return -EINVAL;
    return append(d, eb, arg, LINK_EB, NULL, NULL);
}

int deferred__add_both_owned(deferred_t *d, deferred_fn fn,
                             struct deferred__owned *arg)
{
    if (DEFERRED_UNLIKELY(!d || !fn || !arg))
        return -EINVAL;
    d->flags |= F_HELD; /* a combinator's input */
    return append(d, fn, arg, LINK_BOTH | LINK_OWNED, NULL, NULL);
}

int deferred_add_both(deferred_t *d, deferred_fn fn, void *arg)
{
    if (DEFERRED_UNLIKELY(!d || !fn))
        return -EINVAL;
    return append(d, fn, arg, LINK_BOTH, NULL, NULL);
}

int deferred_add_callbacks_full(deferred_t *d, deferred_fn cb, void *cb_arg,
                                deferred_destroy_fn cb_destroy, deferred_fn eb,
                                void *eb_arg, deferred_destroy_fn eb_destroy)
{
    struct full_arg *fa;
    int rc;

    if (!cb_destroy && !eb_destroy)
        return deferred_add_callbacks(d, cb, cb_arg, eb, eb_arg);
    if (!d || (!cb && !eb)) {
        rc = -EINVAL;
        goto out_destroy;
    }
    fa = deferred__malloc(sizeof(*fa));
    if (!fa) {
        rc = -ENOMEM;
        goto out_destroy;
    }
    fa->cb = cb;
    fa->cb_arg = cb_arg;
    fa->cb_destroy = cb_destroy;
    fa->eb = eb;
    fa->eb_arg = eb_arg;
    fa->eb_destroy = eb_destroy;
    if (!eb)
        rc = append_slow(d, full_cb, fa, LINK_CB | LINK_FULL, NULL, NULL);
    else if (!cb)
        rc = append_slow(d, full_eb, fa, LINK_EB | LINK_FULL, NULL, NULL);
    else if (cb == eb && cb_arg == eb_arg)
        rc = append_slow(d, full_cb, fa, LINK_BOTH | LINK_FULL, NULL, NULL);
    else
        rc = append_slow(d, full_cb, fa, LINK_PAIR_CB | LINK_FULL, full_eb, fa);
    if (rc < 0)
        full_arg_destroy(fa);
    return rc;

out_destroy:
    if (cb_destroy)
        cb_destroy(cb_arg);
    if (eb_destroy && !(eb_destroy == cb_destroy && eb_arg == cb_arg))
        eb_destroy(eb_arg);
    return rc;
}

int deferred_add_callback_full(deferred_t *d, deferred_fn cb, void *arg,
                               deferred_destroy_fn destroy)
{
    if (!cb) {
        if (destroy)
            destroy(arg);
        return -EINVAL;
    }
    return deferred_add_callbacks_full(d, cb, arg, destroy, NULL, NULL, NULL);
}

int deferred_add_errback_full(deferred_t *d, deferred_fn eb, void *arg,
                              deferred_destroy_fn destroy)
{
    if (!eb) {
        if (destroy)
            destroy(arg);
        return -EINVAL;
    }
    return deferred_add_callbacks_full(d, NULL, NULL, NULL, eb, arg, destroy);
}

int deferred_add_both_full(deferred_t *d, deferred_fn fn, void *arg,
                           deferred_destroy_fn destroy)
{
    if (!fn) {
        if (destroy)
            destroy(arg);
        return -EINVAL;
    }
    return deferred_add_callbacks_full(d, fn, arg, destroy, fn, arg, destroy);
}

static deferred_value_t chain_to_fn(deferred_value_t v, void *arg)
{
    deferred_t *target = arg;

    if (deferred_has_fired(target) && !(target->flags & F_SUPPRESS)) {
        /* Twisted raises AlreadyCalledError into the chain: so do we. */
        deferred_value_release(v);
        return deferred_value_failure(deferred_failure_new_at(
            NULL, 0, DEFERRED_DOMAIN_LIBRARY, EALREADY,
            "deferred_chain_to: the target deferred had already fired"));
    }
    if (deferred_value_is_failure(v))
        deferred_errback(target, deferred_value_take_failure(v));
    else
        deferred_callback(target, v);
    return deferred_value_none();
}

static void unref_destroy(void *arg)
{
    deferred_unref(arg);
}

/* ---- the cycle check --------------------------------------------------- */

/* A walk over what deferreds hold: visited ones are flagged F_VISIT and
 * listed in seen, which is also the queue of the walk. */
struct walk {
    deferred_t **seen;
    size_t n, cap;
    deferred_t *want;
    deferred_t *first[32];
    bool found, nomem;
};

static void walk_visit(deferred_t *d, void *ctx)
{
    struct walk *w = ctx;

    if (!d || (d->flags & F_VISIT) || w->found || w->nomem)
        return;
    if (d == w->want) {
        w->found = true;
        return;
    }
    if (w->n == w->cap) {
        size_t cap = w->cap * 2;
        deferred_t **seen;

        if (cap > SIZE_MAX / sizeof(*seen)) {
            w->nomem = true;
            return;
        }
        seen = deferred__malloc(cap * sizeof(*seen));
        if (!seen) {
            w->nomem = true;
            return;
        }
        memcpy(seen, w->seen, w->n * sizeof(*seen));
        if (w->seen != w->first)
            deferred__free(w->seen);
        w->seen = seen;
        w->cap = cap;
    }
    d->flags |= F_VISIT;
    w->seen[w->n++] = d;
}

/*
 * Whether from holds want, directly or through others: what a deferred
 * waits on, a combinator's inputs, a stream's end and, with targets, the
 * deferreds its pending chain_to() entries will fire.  1 when it does, 0
 * when not, -ENOMEM.  Iterative, linear in what it visits.
 */
static int holds(deferred_t *from, deferred_t *want, bool targets)
{
    struct walk w;
    size_t k;

    w.seen = w.first;
    w.n = 0;
    w.cap = sizeof(w.first) / sizeof(w.first[0]);
    w.want = want;
    w.found = w.nomem = false;
    walk_visit(from, &w);
    for (k = 0; k < w.n && !w.found && !w.nomem; k++) {
        deferred_t *d = w.seen[k];
        struct deferred_ext *x = d->ext;
        uint32_t i;

        walk_visit(d->chained_to, &w);
        if (x && x->multi)
            walk_visit(x->multi->end, &w);
        if (x && x->inputs)
            x->inputs(x->inputs_arg, walk_visit, &w);
        if (!targets)
            continue;
        for (i = (d->flags & F_MULTI) ? 0 : d->pos; i < d->n; i++) {
            struct full_arg *fa = d->links[i].arg;

            if ((d->kinds[i] & LINK_FULL) && fa->cb == chain_to_fn)
                walk_visit(fa->cb_arg, &w);
        }
    }
    for (k = 0; k < w.n; k++)
        w.seen[k]->flags &= ~F_VISIT;
    if (w.seen != w.first)
        deferred__free(w.seen);
    return w.found ? 1 : w.nomem ? -ENOMEM : 0;
}

int deferred_chain_to(deferred_t *d, deferred_t *target)
{
    int rc;

    if (!d || !target || d == target || !d->refs || !target->refs)
        return -EINVAL;
    /* d will hold target: refuse a cycle that nothing could free. */
    rc = holds(target, d, true);
    if (rc != 0)
        return rc > 0 ? -EDEADLK : rc;
    rc = deferred_add_both_full(d, chain_to_fn, deferred_ref(target), unref_destroy);
    if (rc == 0)
        target->flags |= F_HELD;
    return rc;
}

/*
 * A callback of cur returned the deferred inner (a reference).  Either
 * take inner's result now, or make cur wait on it.  Returns true when cur
 * now waits.
 */
static bool chain_on(deferred_t *cur, deferred_t *inner)
{
    int rc;

    if (DEFERRED_UNLIKELY(inner->flags & F_MULTI)) {
        /* Waiting on a stream means waiting for its end. */
        deferred_t *end = deferred_ref(inner->ext->multi->end);

        deferred_unref(inner);
        inner = end;
    }
    if (DEFERRED_UNLIKELY(inner == cur)) {
        deferred_unref(inner);
        cur->result = deferred_value_failure(deferred_failure_new_at(
            NULL, 0, DEFERRED_DOMAIN_LIBRARY, EDEADLK,
            "a callback returned the deferred it was called from (or its stream)"));
        return false;
    }
    /* cur would wait on inner, holding it: a cycle (a deadlock, or a leak
     * of both) when inner holds cur, which needs something to hold cur
     * (a waiter, a chain_to() link, a combinator), or inner to be a
     * combinator's. */
    if (DEFERRED_UNLIKELY(cur->waiters || (cur->flags & F_HELD) ||
                          (inner->ext && inner->ext->inputs)) &&
        (rc = holds(inner, cur, true)) != 0) {
        deferred_unref(inner);
        cur->result = deferred_value_failure(deferred_failure_new_at(
            NULL, 0, DEFERRED_DOMAIN_LIBRARY, rc > 0 ? EDEADLK : ENOMEM,
            rc > 0 ? "a callback returned a deferred that holds the one it was called from (a cycle)"
                   : "out of memory while chaining deferreds"));
        return false;
    }
    if (idle_with_result(inner) && !(inner->flags & (F_RUNNING | F_LATER_RUN))) {
        /* inner's chain has run to its end: its result moves to cur and
         * inner keeps the empty value. */
        cur->result = inner->result;
        inner->result = deferred_value_none();
        deferred_unref(inner);
        return false;
    }
    if (append(inner, continue_fn, cur, LINK_BOTH, NULL, NULL) < 0) {
        deferred_unref(inner);
        cur->result = deferred_value_failure(deferred_failure_new_at(
            NULL, 0, DEFERRED_DOMAIN_LIBRARY, ENOMEM,
            "out of memory while chaining deferreds"));
        return false;
    }
    cur->chained_to = inner;
    cur->wait_idx = inner->n - 1;
    inner->waiters++;
    return true;
}



/*
 * The chain runner.
 *
 * It never recurses, and this is why.  Each deferred being run sits on an
 * explicit stack (threaded through its next field, with a reference held
 * by the runner), flagged F_RUNNING.  The top one runs its entries in
 * order while it is neither paused nor waiting.  A callback that returns a
 * deferred without a result makes the top one wait: it leaves the stack,
 * and a continue entry in the inner deferred's chain will bring it back.
 * When the top one reaches a continue entry, its result moves to the outer
 * deferred, which is pushed and run next; when the outer is done, the
 * runner returns to the inner one's remaining entries.  So the stack of C
 * frames stays one deep however long the chain of waits is.
 *
 * Re-entrancy: a callback may add entries to a deferred on the stack (they
 * are appended and run in this same pass), fire or unpause other deferreds
 * (they get runners of their own, nested once per user call, never per
 * chain length), or drop the last reference to a running deferred (the
 * runner's reference keeps it alive until it leaves the stack).
 */
static void run(deferred_t *d)
{
    if (d->flags & (F_RUNNING | F_LATER_RUN) || !d->refs)
        return; /* the runner that has it will see the new work; or dying */
    if (DEFERRED_UNLIKELY(nest >= NEST_MAX)) {
        later(d, F_LATER_RUN);
        return;
    }
    nest++;
    run_stack(d);
    leave();
}

static void run_stack(deferred_t *d)
{
    deferred_t *stack;

    d->refs++;
    d->flags |= F_RUNNING;
    d->next = NULL;
    stack = d;

    while (stack) {
        deferred_t *cur = stack, *outer = NULL;

        for (;;) {
            uint32_t i = cur->pos;
            uint8_t kind;
            bool failed;
            struct link l;
            deferred_value_t r;

            if (i >= cur->n || cur->paused || cur->chained_to)
                break;
            kind = cur->kinds[i];
            failed = cur->result.release == deferred__release_failure;
            l = cur->links[i];
            cur->pos = i + 1;
            if (DEFERRED_LIKELY(kind == LINK_CB)) {
                if (failed)
                    continue; /* nothing to dispose: not a _full entry */
            } else {
                switch (kind & LINK_KIND) {
                case LINK_CB:
                    if (failed) {
                        consumed(cur, kind, l);
                        continue;
                    }
                    break;
                case LINK_EB:
                    if (!failed) {
                        consumed(cur, kind, l);
                        continue;
                    }
                    break;
                case LINK_PAIR_CB:
                    cur->pos = i + 2;
                    if (failed)
                        l = cur->links[i + 1];
                    break;
                case LINK_BOTH:
                    if (l.fn == continue_fn) {
                        cur->waiters--;
                        if (DEFERRED_UNLIKELY(!((deferred_t *)l.arg)->refs))
                            continue; /* a dying outer: a dead entry */
                        outer = l.arg;
                    }
                    break;
                default: /* LINK_DEAD, or the second half of a pair */
                    continue;
                }
            }
            if (outer) {
                /* Hand the result to the outer deferred waiting here, and
                 * drop its reference on cur (the runner still holds one). */
                outer->result = cur->result;
                cur->result = deferred_value_none();
                outer->chained_to = NULL;
                cur->refs--;
                break;
            }
            r = cur->result;
            cur->result = deferred_value_none();
            r = l.fn(r, l.arg);
            consumed(cur, kind, l);
            if (DEFERRED_UNLIKELY(r.release == deferred__release_deferred)) {
                if (chain_on(cur, r.ptr)) {
                    if (cur->flags & F_MULTI)
                        deferred__flow_update(cur);
                    break;
                }
            } else {
                cur->result = r;
            }
        }

        if (outer && (outer->flags & (F_LATER_RUN | F_LATER_CANCEL))) {
            /* On the later queue (its next is the queue's link): the queue
             * runs it. */
            outer->flags |= F_LATER_RUN;
            continue;
        }
        if (outer && !(outer->flags & F_RUNNING)) {
            outer->refs++;
            outer->flags |= F_RUNNING;
            outer->next = stack;
            stack = outer;
            continue;
        }
        if (outer)
            continue; /* on the stack below, or queued: it resumes there */
        if (DEFERRED_UNLIKELY(cur->flags & F_MULTI)) {
            if (deferred__multi_step(cur))
                continue; /* the next row is loaded: run it */
        } else if (cur->pos == cur->n) {
            cur->pos = cur->n = 0;
        }
        stack = cur->next;
        cur->flags &= ~F_RUNNING;
        unref_inline(cur);
    }
}

/* ---- firing ------------------------------------------------------------ */

static void report_already_fired(deferred_t *d, const char *file, int line)
{
    struct deferred_ext *x = d->ext;
    deferred_failure_t *f;

    if (!x || !x->new_file)
        return;
    f = deferred_failure_new_at(
        file, line, DEFERRED_DOMAIN_LIBRARY, EALREADY,
        "deferred created at %s:%d was already fired at %s:%d; fired again at %s:%d",
        x->new_file, x->new_line, x->fire_file ? x->fire_file : "?",
        x->fire_line, file ? file : "?", line);
    report_about(DEFERRED_REPORT_ALREADY_FIRED, f, d);
    deferred_failure_unref(f);
}

static int fire(deferred_t *d, deferred_value_t v, const char *file, int line)
{
    if (DEFERRED_UNLIKELY(!d->refs)) {
        /* Dying, reached through a weak pointer: nobody can see a result. */
        deferred_value_release(v);
        return 0;
    }
    if (DEFERRED_UNLIKELY(d->flags & F_MULTI))
        return deferred_multi_finish(d, v);
    if (DEFERRED_UNLIKELY(d->flags & F_CALLED)) {
        deferred_value_release(v);
        if (d->flags & F_SUPPRESS) {
            d->flags &= ~F_SUPPRESS;
            return 0;
        }
        report_already_fired(d, file, line);
        return -EALREADY;
    }
    d->flags |= F_CALLED;
    d->result = v;
    if (DEFERRED_UNLIKELY(d->ext != NULL) && d->ext->new_file) {
        d->ext->fire_file = file;
        d->ext->fire_line = line;
    }
    if (!d->paused)
        run(d);
    return 0;
}

int deferred_callback_at(deferred_t *d, deferred_value_t v, const char *file,
                         int line)
{
    if (DEFERRED_UNLIKELY(!d || v.release == deferred__release_deferred)) {
        deferred_value_release(v);
        return -EINVAL;
    }
    return fire(d, v, file, line);
}

int deferred_errback_at(deferred_t *d, deferred_failure_t *f, const char *file,
                        int line)
{
    if (DEFERRED_UNLIKELY(!d || !f)) {
        deferred_failure_unref(f);
        return -EINVAL;
    }
    return fire(d, deferred_value_failure(f), file, line);
}

deferred_t *deferred_succeed(deferred_value_t v)
{
    deferred_t *d;

    if (v.release == deferred__release_deferred) {
        deferred_value_release(v);
        errno = EINVAL;
        return NULL;
    }
    d = deferred_new();
    if (!d) {
        deferred_value_release(v);
        errno = ENOMEM;
        return NULL;
    }
    fire(d, v, __FILE__, __LINE__);
    return d;
}

deferred_t *deferred_fail(deferred_failure_t *f)
{
    return deferred_succeed(deferred_value_failure(f));
}

/* ---- pause and cancel -------------------------------------------------- */

int deferred_pause(deferred_t *d)
{
    if (!d || d->paused == UINT32_MAX)
        return -EINVAL;
    d->paused++;
    if (DEFERRED_UNLIKELY(d->flags & F_MULTI))
        deferred__flow_update(d);
    return 0;
}

int deferred_unpause(deferred_t *d)
{
    if (!d || d->paused == 0)
        return -EINVAL;
    if (--d->paused == 0 && (idle_with_result(d) || (d->flags & F_MULTI)))
        run(d);
    return 0;
}

bool deferred_is_paused(const deferred_t *d)
{
    return d && (d->paused || d->chained_to);
}

unsigned deferred_pause_count(const deferred_t *d)
{
    return d ? d->paused : 0;
}

bool deferred_is_waiting(const deferred_t *d)
{
    return d && d->chained_to;
}

deferred_t *deferred_waits_on(const deferred_t *d)
{
    return d ? d->chained_to : NULL;
}

deferred_t *deferred_maybe(deferred_fn fn, deferred_value_t v, void *arg)
{
    deferred_t *d;

    if (!fn) {
        deferred_value_release(v);
        errno = EINVAL;
        return NULL;
    }
    v = fn(v, arg);
    if (v.release == deferred__release_deferred)
        return v.ptr; /* the reference it held */
    d = deferred_new();
    if (!d) {
        deferred_value_release(v);
        errno = ENOMEM;
        return NULL;
    }
    fire(d, v, NULL, 0);
    return d;
}

/* The cancel itself, in a frame already counted in nest. */
static void cancel_now(deferred_t *d, const char *file, int line)
{
    if (!d->refs)
        return;
    if (DEFERRED_UNLIKELY(d->flags & F_MULTI)) {
        deferred__multi_cancel(d, file, line);
        return;
    }
    /* A fired deferred that waits passes the cancel to what it waits on,
     * down to the innermost: a loop, not a recursion. */
    while ((d->flags & F_CALLED) && d->chained_to)
        d = d->chained_to;
    if (d->flags & (F_CALLED | F_CANCELLED))
        return;
    d->flags |= F_CANCELLED;
    d->refs++;
    if (d->canceller)
        d->canceller(d, d->canceller_arg);
    else
        d->flags |= F_SUPPRESS;
    if (!(d->flags & F_CALLED))
        fire(d, deferred_value_failure(deferred_failure_new_at(
                    file, line, DEFERRED_DOMAIN_LIBRARY, ECANCELED, "deferred cancelled")),
             file, line);
    deferred_unref(d);
}

int deferred_cancel_at(deferred_t *d, const char *file, int line)
{
    if (!d)
        return -EINVAL;
    if (!d->refs)
        return 0; /* dying: nothing left to cancel */
    if (DEFERRED_UNLIKELY(nest >= NEST_MAX) && !(d->flags & F_RUNNING)) {
        /* Too deep: cancel as soon as the callback that asked returns. */
        later(d, F_LATER_CANCEL);
        return 0;
    }
    nest++;
    cancel_now(d, file, line);
    leave();
    return 0;
}

int (deferred_cancel)(deferred_t *d)
{
    return deferred_cancel_at(d, __FILE__, __LINE__);
}

/* ---- results ----------------------------------------------------------- */

bool deferred_has_fired(const deferred_t *d)
{
    if (d && (d->flags & F_MULTI))
        return d->ext->multi->ended;
    return d && (d->flags & F_CALLED);
}

bool deferred_has_result(const deferred_t *d)
{
    return d && idle_with_result(d) && !(d->flags & F_RUNNING) && d->pos == d->n;
}

deferred_value_t deferred_result(const deferred_t *d)
{
    if (!d || !(d->flags & F_CALLED) || d->chained_to || (d->flags & F_MULTI))
        return deferred_value_none();
    return d->result;
}

deferred_value_t deferred_result_take(deferred_t *d)
{
    deferred_value_t v;

    if (!d || !(d->flags & F_CALLED) || d->chained_to || (d->flags & F_MULTI))
        return deferred_value_none();
    v = d->result;
    d->result = deferred_value_none();
    return v;
}

/* The runner and fire for multi.c, which drives rows through them. */
void deferred__run(deferred_t *d)
{
    run(d);
}

int deferred__fire(deferred_t *d, deferred_value_t v, const char *file, int line)
{
    return fire(d, v, file, line);
}
