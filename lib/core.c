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
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deferred-private.h"

#ifndef DEFERRED_INLINE_LINKS
#define DEFERRED_INLINE_LINKS 10
#endif

#ifndef DEFERRED_DEBUG_DEFAULT
#define DEFERRED_DEBUG_DEFAULT 0
#endif

#if defined(__GNUC__)
#define THREAD_LOCAL __thread __attribute__((tls_model("initial-exec")))
#else
#define THREAD_LOCAL _Thread_local
#endif

/* What a chain entry does.  A pair added with both halves takes two
 * consecutive entries, PAIR_CB then PAIR_EB: the runner picks one and
 * steps over both. */
enum link_kind {
    LINK_CB = 1, /* runs on a value, skipped on a failure */
    LINK_EB,     /* runs on a failure, skipped on a value */
    LINK_BOTH,   /* runs on either */
    LINK_PAIR_CB,
    LINK_PAIR_EB,
    LINK_DEAD, /* a continue entry whose outer deferred is gone */
    LINK_KIND = 0x7f,
    LINK_FULL = 0x80 /* flag: the argument is a struct full_arg to destroy */
};

struct link {
    deferred_fn fn;
    void *arg;
};

/* Flags of a deferred. */
enum {
    F_CALLED = 1u << 0,    /* fired: result is set (or moved on) */
    F_RUNNING = 1u << 1,   /* on a runner's stack */
    F_CANCELLED = 1u << 2, /* cancel began: the canceller has run */
    F_SUPPRESS = 1u << 3,  /* swallow one later fire (cancel, no canceller) */
    F_MULTI = 1u << 4,     /* multi-fire: entries are kept, one run per row */
    F_ROW = 1u << 5        /* multi-fire: a row is in flight in the chain */
};

/* The state of a multi-fire deferred.  Queued rows wait in a ring. */
struct multi {
    deferred_t *end;           /* the end deferred (a reference) */
    deferred_value_t *queue;   /* ring of rows waiting for their turn */
    size_t qhead, qlen, qcap;
    uint64_t rows;             /* rows accepted */
    uint64_t row;              /* number of the row in flight or last run */
    deferred_value_t final;    /* the end value, once finish was called */
    bool closing;              /* finish called: end when the queue drains */
    bool ended;
    bool flow_paused;          /* what the flow hook was last told */
    deferred_flow_fn flow;
    void *flow_arg;
};

/* The rarely needed parts, allocated only when used. */
struct deferred_ext {
    deferred_destroy_fn canceller_destroy;
    const char *new_file;
    const char *fire_file;
    int new_line;
    int fire_line;
    struct multi *multi;
};

struct deferred {
    uint32_t refs;
    uint32_t paused; /* the user's pause count */
    uint32_t flags;
    uint32_t pos;    /* next entry to run */
    uint32_t n;      /* entries in use */
    uint32_t cap;    /* entries that fit in links */
    deferred_value_t result;
    deferred_t *chained_to; /* the deferred this one waits on (a reference) */
    deferred_t *next;       /* runner stack or free list */
    struct link *links;
    uint8_t *kinds;
    deferred_canceller_fn canceller;
    void *canceller_arg;
    struct deferred_ext *ext;
    /* The kinds first: with the header and the first entries they share a
     * cache line, so a short chain touches two lines, not three. */
    uint8_t inline_kinds[DEFERRED_INLINE_LINKS];
    struct link inline_links[DEFERRED_INLINE_LINKS];
};

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

void deferred__report(deferred_report_t kind, const deferred_failure_t *f)
{
    char buf[1024], line[1200], *p;
    const char *q;

    if (report_hook) {
        report_hook(kind, f, report_arg);
        return;
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
    fprintf(stderr, "deferred: %s: %s\n",
            kind == DEFERRED_REPORT_UNHANDLED ? "unhandled failure" : "misuse",
            line);
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
    }
    return d;

out_free_deferred:
    deferred__free(d);
out_destroy:
    if (destroy)
        destroy(arg);
    return NULL;
}

deferred_t *deferred_ref(deferred_t *d)
{
    if (d)
        d->refs++;
    return d;
}

static void multi_free(struct multi *m);

/* Stop d waiting on the deferred it is chained to: turn d's continue entry
 * in that deferred's chain into a dead one, and drop d's reference. */
static void unchain(deferred_t *d)
{
    deferred_t *inner = d->chained_to;
    uint32_t i;

    d->chained_to = NULL;
    for (i = inner->pos; i < inner->n; i++) {
        if (inner->links[i].fn == continue_fn && inner->links[i].arg == d) {
            inner->kinds[i] = LINK_DEAD;
            break;
        }
    }
    deferred_unref(inner);
}

/* Free d, whose last reference is gone.  Everything it releases that frees
 * further deferreds only queues them on free_list. */
static void free_deferred(deferred_t *d)
{
    uint32_t i;

    if (DEFERRED_UNLIKELY(d->result.release == deferred__release_failure))
        deferred__report(DEFERRED_REPORT_UNHANDLED, d->result.ptr);
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
            multi_free(d->ext->multi);
        if (d->ext->canceller_destroy)
            d->ext->canceller_destroy(d->canceller_arg);
        deferred__free(d->ext);
    }
    deferred__free(d);
}

void deferred_unref(deferred_t *d)
{
    if (!d || --d->refs)
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
        memmove(d->links, d->links + d->pos, live * sizeof(*d->links));
        memmove(d->kinds, d->kinds + d->pos, live);
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
    if (DEFERRED_UNLIKELY(kind & LINK_FULL) && !(d->flags & F_MULTI))
        full_arg_destroy(l.arg);
}

static bool chain_on(deferred_t *cur, deferred_t *inner);

/*
 * A pair added to a deferred that has its result, is idle and has nothing
 * pending runs at once: this is that one step of the runner, without
 * storing the pair.  Entries the callback adds on the way, or a deferred it
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
        !(d->flags & (F_RUNNING | F_MULTI))) {
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

int deferred_chain_to(deferred_t *d, deferred_t *target)
{
    if (!d || !target || d == target)
        return -EINVAL;
    return deferred_add_both_full(d, chain_to_fn, deferred_ref(target),
                                  unref_destroy);
}

/*
 * A callback of cur returned the deferred inner (a reference).  Either
 * take inner's result now, or make cur wait on it.  Returns true when cur
 * now waits.
 */
static bool chain_on(deferred_t *cur, deferred_t *inner)
{
    if (DEFERRED_UNLIKELY(inner == cur)) {
        deferred_unref(inner);
        cur->result = deferred_value_failure(deferred_failure_new(
            DEFERRED_DOMAIN_LIBRARY, EDEADLK,
            "a callback returned the deferred it was called from"));
        return false;
    }
    if (DEFERRED_UNLIKELY(inner->flags & F_MULTI)) {
        /* Waiting on a stream means waiting for its end. */
        deferred_t *end = deferred_ref(inner->ext->multi->end);

        deferred_unref(inner);
        inner = end;
    }
    if (idle_with_result(inner) && !(inner->flags & F_RUNNING)) {
        /* inner's chain has run to its end: its result moves to cur and
         * inner keeps the empty value. */
        cur->result = inner->result;
        inner->result = deferred_value_none();
        deferred_unref(inner);
        return false;
    }
    if (append(inner, continue_fn, cur, LINK_BOTH, NULL, NULL) < 0) {
        deferred_unref(inner);
        cur->result = deferred_value_failure(deferred_failure_new(
            DEFERRED_DOMAIN_LIBRARY, ENOMEM,
            "out of memory while chaining deferreds"));
        return false;
    }
    cur->chained_to = inner;
    return true;
}


static bool multi_step(deferred_t *d);
static void flow_update(deferred_t *d);

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
    deferred_t *stack;

    if (d->flags & F_RUNNING)
        return; /* the runner that has it will see the new work */
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
                    if (l.fn == continue_fn)
                        outer = l.arg;
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
                        flow_update(cur);
                    break;
                }
            } else {
                cur->result = r;
            }
        }

        if (outer && !(outer->flags & F_RUNNING)) {
            outer->refs++;
            outer->flags |= F_RUNNING;
            outer->next = stack;
            stack = outer;
            continue;
        }
        if (outer)
            continue; /* already on the stack below: resume it there */
        if (DEFERRED_UNLIKELY(cur->flags & F_MULTI)) {
            if (multi_step(cur))
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
    deferred__report(DEFERRED_REPORT_ALREADY_FIRED, f);
    deferred_failure_unref(f);
}

static int fire(deferred_t *d, deferred_value_t v, const char *file, int line)
{
    if (DEFERRED_UNLIKELY(d->flags & F_MULTI))
        return deferred_finish(d, v);
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
        return NULL;
    }
    d = deferred_new();
    if (!d) {
        deferred_value_release(v);
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
        flow_update(d);
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

static int multi_cancel(deferred_t *d);

int deferred_cancel_at(deferred_t *d, const char *file, int line)
{
    if (!d)
        return -EINVAL;
    if (DEFERRED_UNLIKELY(d->flags & F_MULTI))
        return multi_cancel(d);
    /* A fired deferred that waits passes the cancel to what it waits on,
     * down to the innermost: a loop, not a recursion. */
    while ((d->flags & F_CALLED) && d->chained_to)
        d = d->chained_to;
    if (d->flags & (F_CALLED | F_CANCELLED))
        return 0;
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

/* ---- multi-fire -------------------------------------------------------- *
 *
 * A multi-fire deferred reuses the runner: a row is loaded as the result
 * with pos at 0, the runner takes it through the kept entries, and when it
 * stops at the end of the chain multi_step() retires the row and loads the
 * next queued one in the same loop.  So rows emitted from inside
 * callbacks, or released by a chained deferred firing, never nest.
 */

static void multi_free(struct multi *m)
{
    size_t i;

    for (i = 0; i < m->qlen; i++)
        deferred_value_release(m->queue[(m->qhead + i) % m->qcap]);
    deferred__free(m->queue);
    deferred_value_release(m->final);
    /* The end may outlive the stream: it must not cancel a freed one. */
    m->end->canceller = NULL;
    deferred_unref(m->end);
    deferred__free(m);
}

static void end_cancel(deferred_t *end, void *arg)
{
    (void)end;
    deferred_cancel(arg);
}

deferred_t *deferred_new_multi_at(const char *file, int line,
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

/* Tell the flow hook about a change between "takes rows" and "holds them
 * back".  Returns true when the hook ran (it may have changed anything). */
static bool flow_tell(deferred_t *d)
{
    struct multi *m = d->ext->multi;
    bool blocked = d->paused || d->chained_to;
    bool paused;

    if (m->ended || !m->flow)
        return false;
    if (!m->flow_paused && blocked)
        paused = true;
    else if (m->flow_paused && !blocked && m->qlen == 0)
        paused = false;
    else
        return false;
    m->flow_paused = paused;
    d->refs++;
    m->flow(d, paused, m->flow_arg);
    deferred_unref(d);
    return true;
}

static void flow_update(deferred_t *d)
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
    while (m->qlen) {
        deferred_value_release(m->queue[m->qhead]);
        m->qhead = (m->qhead + 1) % m->qcap;
        m->qlen--;
    }
    if (d->flags & F_ROW) {
        deferred_value_release(d->result);
        d->result = deferred_value_none();
        d->flags &= ~F_ROW;
        d->pos = d->n;
    }
    /* Callers that end with the finish value moved it out already. */
    deferred_value_release(m->final);
    m->final = deferred_value_none();
    end->refs++;
    fire(end, v, __FILE__, __LINE__);
    deferred_unref(end);
}

/* Run the source's cancel, once. */
static void cancel_source(deferred_t *d)
{
    if (d->flags & F_CANCELLED)
        return;
    d->flags |= F_CANCELLED;
    if (d->canceller)
        d->canceller(d, d->canceller_arg);
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

static bool multi_step(deferred_t *d)
{
    struct multi *m = d->ext->multi;

    if (d->paused || d->chained_to)
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
        if (m->ended || d->paused || d->chained_to)
            return false;
        if (m->qlen) {
            d->result = m->queue[m->qhead];
            m->qhead = (m->qhead + 1) % m->qcap;
            m->qlen--;
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

static int enqueue(struct multi *m, deferred_value_t v)
{
    if (m->qlen == m->qcap) {
        size_t cap = m->qcap ? m->qcap * 2 : 16, i;
        deferred_value_t *q = deferred__malloc(cap * sizeof(*q));

        if (!q)
            return -ENOMEM;
        for (i = 0; i < m->qlen; i++)
            q[i] = m->queue[(m->qhead + i) % m->qcap];
        deferred__free(m->queue);
        m->queue = q;
        m->qcap = cap;
        m->qhead = 0;
    }
    m->queue[(m->qhead + m->qlen) % m->qcap] = v;
    m->qlen++;
    return 0;
}

int deferred_emit(deferred_t *d, deferred_value_t v)
{
    struct multi *m = multi_of(d);

    if (!m || v.release == deferred__release_deferred) {
        deferred_value_release(v);
        return -EINVAL;
    }
    if (m->ended || m->closing) {
        deferred_value_release(v);
        return -EALREADY;
    }
    if (!(d->flags & (F_ROW | F_RUNNING)) && m->qlen == 0 && !d->paused &&
        !d->chained_to) {
        m->rows++;
        m->row = m->rows;
        d->result = v;
        d->pos = 0;
        d->flags |= F_ROW;
        run(d);
        return 0;
    }
    if (enqueue(m, v) < 0) {
        deferred_value_release(v);
        return -ENOMEM;
    }
    m->rows++;
    return 0;
}

int deferred_finish(deferred_t *d, deferred_value_t v)
{
    struct multi *m = multi_of(d);

    if (!m || v.release == deferred__release_deferred) {
        deferred_value_release(v);
        return -EINVAL;
    }
    if (m->ended || m->closing) {
        deferred_value_release(v);
        return -EALREADY;
    }
    m->closing = true;
    if (!(d->flags & (F_ROW | F_RUNNING)) && m->qlen == 0)
        end_stream(d, v);
    else
        m->final = v; /* the runner ends the stream when the rows are done */
    return 0;
}

static int multi_cancel(deferred_t *d)
{
    struct multi *m = d->ext->multi;

    if (m->ended)
        return 0;
    if (d->chained_to)
        return deferred_cancel(d->chained_to); /* the row's wait, not the stream */
    if (d->flags & F_CANCELLED)
        return 0;
    d->refs++;
    cancel_source(d);
    if (!m->ended) {
        deferred_value_t v = m->final;

        m->final = deferred_value_none();
        if (!m->closing)
            v = deferred_value_failure(deferred_failure_new(
                DEFERRED_DOMAIN_LIBRARY, ECANCELED, "stream cancelled"));
        end_stream(d, v);
    }
    deferred_unref(d);
    return 0;
}

deferred_t *deferred_end(deferred_t *d)
{
    struct multi *m = multi_of(d);

    return m ? deferred_ref(m->end) : NULL;
}

int deferred_set_flow(deferred_t *d, deferred_flow_fn fn, void *arg)
{
    struct multi *m = multi_of(d);

    if (!m)
        return -EINVAL;
    m->flow = fn;
    m->flow_arg = arg;
    return 0;
}

size_t deferred_queued(const deferred_t *d)
{
    struct multi *m = multi_of(d);

    return m ? m->qlen : 0;
}

uint64_t deferred_rows(const deferred_t *d)
{
    struct multi *m = multi_of(d);

    return m ? m->rows : 0;
}
