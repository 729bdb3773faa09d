/*
 * runner.c: a deferred's chain (the entries callbacks add), the runner
 * that drives it, firing, pausing and cancelling.
 *
 * The design decision to know is in run(): the chain runner never
 * recurses.  When a callback returns a deferred R that has not got a result
 * yet, the outer deferred records that it waits on R (holding a reference
 * on R) and appends a "continue" entry to R's chain that points back at the
 * outer (without a reference, so nothing owns itself).  When R's runner
 * reaches that entry it moves its result to the outer and pushes the outer
 * on an explicit stack threaded through the deferreds themselves, then
 * carries on with the outer in the same loop: a million deferreds, each
 * waiting on the next, complete in constant stack.
 *
 * Which function of an entry runs on a result is decided in one place,
 * entry_pick(), for the runner and for the one step a callback added to an
 * idle fired deferred takes at once (run_one()).
 *
 * Callbacks that fire, cancel or unpause other deferreds start runners of
 * their own, nested in C.  Past NEST_MAX nested runners on a thread, the
 * work is queued instead (the "later" queue) and the runner at depth
 * NEST_MAX does it as soon as it has run its own stack (a check per
 * runner, none per callback).  So a chain of chain_to() links, a lock
 * handed from waiter to waiter, or a gather of a gather of a million
 * levels run in bounded stack, and only a callback that many levels deep
 * sees its fire take effect after its own deferred's chain has run rather
 * than at once.
 */
#include <string.h>

#include "deferred-private.h"
#include "core-private.h"

/* Runners and cancels nested on this thread, and the work queued past
 * NEST_MAX of them (see the file comment). */
#ifndef DEFERRED_NEST_MAX
#define DEFERRED_NEST_MAX 32
#endif
#define NEST_MAX DEFERRED_NEST_MAX
static THREAD_LOCAL unsigned nest;
static THREAD_LOCAL deferred_t *later_head, *later_tail;

/* ---- special entries --------------------------------------------------- */

/* The entry an outer deferred leaves in the chain of the deferred it waits
 * on.  Never called: the runner recognizes it by address. */
deferred_value_t deferred__continue_fn(deferred_value_t v, void *arg)
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

/* ---- the chain --------------------------------------------------------- */

/* Move d's entries to a new heap block of cap entries (at least d->n),
 * the old block freed.  The first two sizes copy their whole old block, a
 * constant size the compiler moves inline. */
static DEFERRED_ALWAYS_INLINE inline int spill_to(deferred_t *d, uint32_t cap)
{
    uint8_t *base = (uint8_t *)d->links; /* the kinds run backwards from here */
    struct deferred__link *links = deferred__spill_alloc(cap);
    bool kinds = d->flags & F_KINDS; /* else there are no kinds to copy */

    if (!links)
        return -ENOMEM;
    if (d->cap == DEFERRED_INLINE_LINKS) {
        memcpy(links, d->links, DEFERRED_INLINE_LINKS * sizeof(*links));
        if (kinds)
            memcpy((uint8_t *)links - DEFERRED_INLINE_LINKS, base - DEFERRED_INLINE_LINKS,
                   DEFERRED_INLINE_LINKS);
    } else if (d->cap == SPILL1_LINKS) {
        memcpy(links, d->links, SPILL1_LINKS * sizeof(*links));
        if (kinds)
            memcpy((uint8_t *)links - SPILL1_LINKS, base - SPILL1_LINKS, SPILL1_LINKS);
    } else {
        memcpy(links, d->links, d->n * sizeof(*links));
        if (kinds)
            memcpy((uint8_t *)links - d->n, base - d->n, d->n);
    }
    if (d->links != d->inline_links)
        deferred__spill_free(d->links, d->cap);
    d->links = links;
    d->cap = cap;
    return 0;
}

/* Make room for need more entries: compact consumed ones away first, then
 * grow into a heap block: from the inline entries to one of first entries
 * (one of the cache's two sizes), then the other size, then doubling. */
static int reserve(deferred_t *d, uint32_t need, uint32_t first)
{
    uint32_t live = d->n - d->pos, cap;
    uint8_t *base = (uint8_t *)d->links; /* the kinds run backwards from here */

    if (d->n + need <= d->cap)
        return 0;
    /* Safe while d runs: the runner holds no index across a callback. */
    if (d->pos > 0 && live + need <= d->cap && !is_multi(d)) {
        uint32_t i;

        memmove(d->links, d->links + d->pos, live * sizeof(*d->links));
        /* Kinds pos..n-1 lie at base-n .. base-pos-1; they move to
         * base-live .. base-1. */
        if (d->flags & F_KINDS)
            memmove(base - live, base - d->n, live);
        d->pos = 0;
        d->n = live;
        /* The outers waiting here find their continue entries moved. */
        for (i = 0; (d->flags & F_HELD) && i < live; i++)
            if (kind_of(d, i) == LINK_BOTH && d->links[i].fn == deferred__continue_fn)
                set_wait_idx(d->links[i].arg, i);
        return 0;
    }
    cap = d->cap < first ? first : d->cap < SPILL2_LINKS ? SPILL2_LINKS : d->cap;
    while (cap < d->n + need) {
        if (cap > UINT32_MAX / 2 / (sizeof(struct deferred__link) + 1))
            return -ENOMEM;
        cap = cap < SPILL2_LINKS ? SPILL2_LINKS : cap * 2;
    }
    return spill_to(d, cap);
}

static void run(deferred_t *d);

/* Drop a reference the runner took: the common case, not the last one,
 * without a call. */
static inline void unref_inline(deferred_t *d)
{
    if (DEFERRED_UNLIKELY(--d->refs == 0)) {
        d->refs = 1; /* the last: deferred_unref() drops it */
        deferred_unref(d);
    }
}

/* An entry of d was reached (run or skipped): used once in a single-shot
 * chain, kept for the next row in a multi-fire one.  pair is the entry
 * (with its second half when it is a pair); kind is its first half's. */
static inline void consumed(const deferred_t *d, uint8_t kind, const struct deferred__link *pair)
{
    if (DEFERRED_UNLIKELY(kind & (LINK_FULL | LINK_OWNED)) && !is_multi(d))
        link_dispose(kind, *pair);
}

/*
 * The runner's step, in one place: which function of the entry pair (kind
 * its first half's kind, pair[1] its second half when a pair) runs on a
 * result that failed or not.  NULL: none, the entry is skipped.  *width is
 * how many entries it spans.  A continue entry is a LINK_BOTH like any
 * other here: the caller tells it by its function.
 */
static DEFERRED_ALWAYS_INLINE inline const struct deferred__link *
entry_pick(uint8_t kind, bool failed, const struct deferred__link *pair, uint32_t *width)
{
    *width = 1;
    switch (kind & LINK_KIND) {
    case LINK_CB:
        return failed ? NULL : pair;
    case LINK_EB:
        return failed ? pair : NULL;
    case LINK_PAIR_CB:
        *width = 2;
        return failed ? pair + 1 : pair;
    case LINK_BOTH:
        return pair;
    default: /* LINK_DEAD, or the second half of a pair */
        return NULL;
    }
}

static bool chain_on(deferred_t *cur, deferred_t *inner);

/* run_plain()'s loop over the plain callbacks from entry *i on, below n;
 * keep: the chain keeps its kinds, and the loop stops at the first entry
 * of another kind.  True when a call on d flagged it F_STIR (*i is where
 * to go on, after loading the chain again); false when it stopped. */
static DEFERRED_ALWAYS_INLINE inline bool plain_loop(deferred_t *d, uint32_t *ip, uint32_t n,
                                                     bool keep, deferred_value_t *rp)
{
    const struct deferred__link *links = d->links;
    const uint8_t *kinds = (const uint8_t *)links - 1; /* kind_at(d, 0) */
    deferred_value_t r = *rp;
    uint32_t i = *ip;

    for (;;) {
        if (i >= n || (keep && kinds[-(ptrdiff_t)i] != LINK_CB))
            break;
        d->pos = i + 1;
        if (DEFERRED_LIKELY(r.release != deferred__release_failure)) {
            r = links[i].fn(r, links[i].arg);
            if (DEFERRED_UNLIKELY(r.release == deferred__release_deferred))
                break;
            if (DEFERRED_UNLIKELY(d->flags & F_STIR)) {
                *ip = d->pos; /* an entry added may have compacted the chain */
                *rp = r;
                return true;
            }
        }
        i++;
    }
    *rp = r;
    return false;
}

/*
 * The runner's common case: d's plain callbacks (LINK_CB) from entry i on,
 * in a row, while nothing stops the chain, the value r in registers
 * between them (d->result stays empty meanwhile, as it is while any
 * callback runs: nobody sees the difference).  A failure skips them.
 * Returns the value where it stopped: at an entry of another kind, at the
 * end (d->pos == d->n), when d was paused or made to wait, or with the
 * deferred a callback returned (d->pos past that callback).
 *
 * The entries, their count, the pause count and the wait are loaded once
 * and kept in registers across the callbacks: only a call on d itself
 * changes them (an entry added, a pause, the stream ended), and each such
 * call flags d F_STIR, which the loop tests after each callback to load
 * them again.
 */
static DEFERRED_ALWAYS_INLINE inline deferred_value_t run_plain(deferred_t *d, uint32_t i,
                                                                deferred_value_t r)
{
    for (;;) {
        uint32_t n = d->n;
        /* A fresh load, used for the store too: the loop tests F_STIR in
         * memory without keeping the word for these. */
        uint32_t flags = *(const volatile uint32_t *)&d->flags;

        if (flags & (F_WAITING | DEFERRED__F_PAUSES))
            return r;
        d->flags = flags & ~F_STIR;
        /* A chain of plain callbacks has no kinds to read; one that keeps
         * them may hold other entries, where the run stops. */
        if (DEFERRED_LIKELY(!(flags & F_KINDS))) {
            if (!plain_loop(d, &i, n, false, &r))
                return r;
        } else if (!plain_loop(d, &i, n, true, &r)) {
            return r;
        }
    }
}

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
    struct deferred__link pair[2];
    const struct deferred__link *l;
    uint32_t width;
    deferred_value_t r;

    pair[0].fn = fn1;
    pair[0].arg = arg1;
    if ((kind1 & LINK_KIND) == LINK_PAIR_CB) {
        pair[1].fn = fn2;
        pair[1].arg = arg2;
    }
    l = entry_pick(kind1, d->result.release == deferred__release_failure, pair, &width);
    if (!l) {
        consumed(d, kind1, pair);
        return;
    }
    d->refs++;
    d->flags |= F_RUNNING;
    r = value_take(&d->result);
    r = l->fn(r, l->arg);
    consumed(d, kind1, pair);
    if (DEFERRED_UNLIKELY(r.release == deferred__release_deferred))
        chain_on(d, r.ptr);
    else
        d->result = r;
    /* No runner of d is under way any more to be told of changes (the
     * add that came here flagged d F_STIR). */
    d->flags &= ~(F_RUNNING | F_STIR);
    if (d->pos < d->n && idle_with_result(d))
        run(d);
    unref_inline(d);
}

static int append_slow(deferred_t *d, deferred_fn fn1, void *arg1, uint8_t kind1,
                       deferred_fn fn2, void *arg2)
{
    uint32_t need = (kind1 & LINK_KIND) == LINK_PAIR_CB ? 2 : 1;

    if (idle_with_result(d) && d->pos == d->n && fn1 != deferred__continue_fn &&
        !is_multi(d) && !(d->flags & (F_RUNNING | F_LATER_RUN)) && d->refs) {
        run_one(d, fn1, arg1, kind1, fn2, arg2);
        return 0;
    }
    stir(d);
    if (DEFERRED_UNLIKELY(d->n + need > d->cap) && reserve(d, need, SPILL1_LINKS) < 0)
        return -ENOMEM;
    d->links[d->n].fn = fn1;
    d->links[d->n].arg = arg1;
    set_kind(d, d->n, kind1);
    if (need == 2) {
        d->links[d->n + 1].fn = fn2;
        d->links[d->n + 1].arg = arg2;
        set_kind(d, d->n + 1, LINK_PAIR_EB);
    }
    d->n += need;
    if (DEFERRED_UNLIKELY(is_multi(d)) && !(d->flags & F_ROW))
        d->pos = d->n; /* nothing in flight: the new entries wait for a row */
    if (idle_with_result(d))
        run(d);
    return 0;
}

/* One entry on a pending single-shot deferred whose block is full: grow
 * it and store.  A chain a user builds past the inline entries is likely
 * long, and goes straight to the cache's second size; a waiter's continue
 * entry (the usual third entry of a deferred another waits on) only to
 * the first. */
static DEFERRED_NOINLINE int grow_slow(deferred_t *d, deferred_fn fn, void *arg, uint8_t kind)
{
    uint32_t n;
    int rc;

    if (d->links == d->inline_links && d->pos == 0 && fn != deferred__continue_fn)
        rc = spill_to(d, SPILL2_LINKS);
    else
        rc = reserve(d, 1, fn == deferred__continue_fn ? SPILL1_LINKS : SPILL2_LINKS);
    if (rc < 0)
        return rc;
    n = d->n;
    d->links[n].fn = fn;
    d->links[n].arg = arg;
    set_kind(d, n, kind);
    d->n = n + 1;
    return 0;
}

/* grow_slow()'s usual case without a call (so without a frame): the
 * inline entries, full, move to a block of the cache's second size.  d is
 * pending (append()'s case), so it has run none of its entries: pos is 0. */
static DEFERRED_NOINLINE int grow_append(deferred_t *d, deferred_fn fn, void *arg, uint8_t kind)
{
    char *b;
    struct deferred__link *links;
    bool kinds = d->flags & F_KINDS;

    /* The first entry of another kind after plain callbacks (the kinds
     * to write) is grow_slow()'s: this one calls nothing. */
    if (DEFERRED_LIKELY(d->links == d->inline_links && fn != deferred__continue_fn &&
                        (kind == LINK_CB || kinds)) &&
        DEFERRED_LIKELY((b = deferred__block_pop(BLOCK_SPILL2)) != NULL)) {
        links = (struct deferred__link *)(b + KINDS_PAD(SPILL2_LINKS));
        copy_recent_links(links, d->inline_links, DEFERRED_INLINE_LINKS, kinds);
        links[DEFERRED_INLINE_LINKS].fn = fn;
        links[DEFERRED_INLINE_LINKS].arg = arg;
        if (kinds)
            ((uint8_t *)links)[-1 - DEFERRED_INLINE_LINKS] = kind;
        d->links = links;
        d->cap = SPILL2_LINKS;
        d->n = DEFERRED_INLINE_LINKS + 1;
        return 0;
    }
    return grow_slow(d, fn, arg, kind);
}

/* append()'s entry of another kind than a plain callback after more
 * plain callbacks than kinds_fill_word() writes, on a pending deferred
 * with room: the chain keeps its kinds from now on. */
static DEFERRED_NOINLINE int store_keeping_kinds(deferred_t *d, deferred_fn fn, void *arg,
                                                 uint8_t kind)
{
    uint32_t n = d->n;

    kinds_keep(d, n);
    d->links[n].fn = fn;
    d->links[n].arg = arg;
    *kind_at(d, n) = kind;
    d->n = n + 1;
    return 0;
}

/*
 * A plain callback (or a both) added to a single-shot deferred that has
 * fired and is not running: the inline run of deferred/core.h (the
 * macros' own, deferred__run_inline()) in a small frame, when nothing
 * stops the chain; else append_slow().
 */
static DEFERRED_NOINLINE int call_now(deferred_t *d, deferred_fn fn, void *arg, uint8_t kind)
{
    if (deferred__run_inline((struct deferred__head *)(void *)d, fn, arg, kind,
                             *(const volatile uint32_t *)&d->flags))
        return 0;
    return append_slow(d, fn, arg, kind, NULL, NULL);
}

/* The end of the inline run (deferred__run_inline()) when more is to do
 * than to store the callback's result. */
void deferred_ran_at_once(deferred_t *d, deferred_value_t r)
{
    if (DEFERRED_UNLIKELY(!d)) {
        deferred__release(r); /* never from the inline code: bad input */
        return;
    }
    if (DEFERRED_UNLIKELY(r.release == deferred__release_deferred))
        chain_on(d, r.ptr);
    else
        d->result = r;
    /* No runner of d is under way to be told of changes (F_STIR): its
     * own run goes on here. */
    d->flags &= ~(F_RUNNING | F_STIR);
    if (DEFERRED_UNLIKELY(d->pos < d->n) && idle_with_result(d))
        run(d);
    unref_inline(d);
}

/* The common cases inline: one entry on a pending single-shot deferred,
 * nothing to run; or one to run at once. */
static inline int append(deferred_t *d, deferred_fn fn1, void *arg1, uint8_t kind1,
                         deferred_fn fn2, void *arg2)
{
    uint32_t n = d->n, flags = d->flags;

    if (DEFERRED_LIKELY(kind1 != LINK_PAIR_CB && !(flags & (F_CALLED | F_MULTI)))) {
        if (DEFERRED_UNLIKELY(n == d->cap))
            return grow_append(d, fn1, arg1, kind1);
        if (kind1 != LINK_CB && !(flags & F_KINDS)) {
            /* The chain keeps its kinds from now on: the plain callbacks
             * before this entry (if any) write theirs, in one store
             * unless they are many (kinds_keep()'s memset, in a frame). */
            if (n != 0 && DEFERRED_UNLIKELY(!kinds_fill_word(d, n)))
                return store_keeping_kinds(d, fn1, arg1, kind1);
            flags |= F_KINDS;
            d->flags = flags;
        }
        d->links[n].fn = fn1;
        d->links[n].arg = arg1;
        if (flags & F_KINDS)
            *kind_at(d, n) = kind1;
        d->n = n + 1;
        return 0;
    }
    if ((flags & (F_CALLED | F_MULTI | F_RUNNING | F_LATER_RUN)) == F_CALLED &&
        (kind1 == LINK_CB || (kind1 == LINK_BOTH && fn1 != deferred__continue_fn)))
        return call_now(d, fn1, arg1, kind1);
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

int (deferred_add_callback)(deferred_t *d, deferred_fn cb, void *arg)
{
    if (DEFERRED_UNLIKELY(!d || !cb))
        return -EINVAL;
    return append(d, cb, arg, LINK_CB, NULL, NULL);
}

int (deferred_add_errback)(deferred_t *d, deferred_fn eb, void *arg)
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

int deferred__add_both_holding(deferred_t *d, deferred_fn fn, struct deferred__holding *arg)
{
    if (DEFERRED_UNLIKELY(!d || !fn || !arg || !arg->holds))
        return -EINVAL;
    d->flags |= F_HELD; /* what a coroutine awaits */
    return append(d, fn, &arg->own, LINK_BOTH | LINK_OWNED | LINK_HOLDS, NULL, NULL);
}

int (deferred_add_both)(deferred_t *d, deferred_fn fn, void *arg)
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
        deferred__full_arg_destroy(fa);
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

/*
 * A callback of cur returned the deferred inner (a reference).  Either
 * take inner's result now, or make cur wait on it.  Returns true when cur
 * now waits.
 */
static bool chain_on(deferred_t *cur, deferred_t *inner)
{
    int rc;

    if (DEFERRED_UNLIKELY(is_multi(inner))) {
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
    if (DEFERRED_UNLIKELY((cur->flags & F_HELD) ||
                          (inner->ext && inner->ext->inputs)) &&
        !holds_nothing(inner) && (rc = deferred__holds(inner, cur, true)) != 0) {
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
        cur->result = value_take(&inner->result);
        deferred_unref(inner);
        return false;
    }
    if (append(inner, deferred__continue_fn, cur, LINK_BOTH, NULL, NULL) < 0) {
        deferred_unref(inner);
        cur->result = deferred_value_failure(deferred_failure_new_at(
            NULL, 0, DEFERRED_DOMAIN_LIBRARY, ENOMEM,
            "out of memory while chaining deferreds"));
        return false;
    }
    wait_on(cur, inner);
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
            uint32_t i = cur->pos, width;
            uint8_t kind;
            bool failed;
            const struct deferred__link *l;
            struct deferred__link call;
            deferred_value_t r;
            uint32_t flags;

            if (i >= cur->n)
                break;
            flags = *(const volatile uint32_t *)&cur->flags;
            if (flags & (F_WAITING | DEFERRED__F_PAUSES))
                break;
            /* kind_of(), with the flags at hand */
            if (DEFERRED_LIKELY(!(flags & F_KINDS)) || (kind = *kind_at(cur, i)) == LINK_CB) {
                /* The common entries: plain callbacks, nothing to
                 * dispose, run in a row (run_plain()). */
                r = cur->result;
                cur->result = deferred_value_none();
                r = run_plain(cur, i, r);
                if (DEFERRED_UNLIKELY(r.release == deferred__release_deferred) &&
                    chain_on(cur, r.ptr)) {
                    if (is_multi(cur))
                        deferred__flow_update(cur);
                    break;
                }
                if (r.release != deferred__release_deferred)
                    cur->result = r;
                continue;
            }
            failed = cur->result.release == deferred__release_failure;
            {
                l = entry_pick(kind, failed, &cur->links[i], &width);
                cur->pos = i + width;
                if (!l) {
                    consumed(cur, kind, &cur->links[i]);
                    continue;
                }
                call = *l;
                if (DEFERRED_UNLIKELY(call.fn == deferred__continue_fn)) {
                    if (DEFERRED_UNLIKELY(!((deferred_t *)call.arg)->refs))
                        continue; /* a dying outer: a dead entry */
                    /* Hand the result to the outer deferred waiting here,
                     * and drop its reference on cur (the runner still
                     * holds one). */
                    outer = call.arg;
                    outer->result = value_take(&cur->result);
                    wait_end(outer);
                    cur->refs--;
                    break;
                }
            }
            r = cur->result;
            cur->result = deferred_value_none();
            r = call.fn(r, call.arg);
            /* What was called, not cur->links[i]: a callback that added
             * entries may have compacted the chain. */
            consumed(cur, kind, &call);
            if (DEFERRED_UNLIKELY(r.release == deferred__release_deferred)) {
                if (chain_on(cur, r.ptr)) {
                    if (is_multi(cur))
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
        if (DEFERRED_UNLIKELY(is_multi(cur))) {
            if (deferred__multi_step(cur))
                continue; /* the next row is loaded: run it */
        } else if (cur->pos == cur->n) {
            cur->pos = cur->n = 0;
            cur->flags &= ~F_KINDS; /* an empty chain is one of plain callbacks */
        }
        stack = cur->next;
        cur->flags &= ~(F_RUNNING | F_STIR); /* no runner of cur is left to tell */
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
    deferred__report_about(DEFERRED_REPORT_ALREADY_FIRED, f, d);
    deferred_failure_unref(f);
}

/* fire()'s cases past the common one: a dying deferred, a multi-fire
 * one, a second fire, a deferred with an extension (its fire site is
 * recorded). */
static DEFERRED_NOINLINE int fire_slow(deferred_t *d, deferred_value_t v, const char *file,
                                       int line)
{
    if (DEFERRED_UNLIKELY(!d->refs)) {
        /* Dying, reached through a weak pointer: nobody can see a result. */
        deferred_value_release(v);
        return 0;
    }
    if (DEFERRED_UNLIKELY(is_multi(d)))
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
    if (d->ext->new_file) {
        d->ext->fire_file = file;
        d->ext->fire_line = line;
    }
    if (!any_pause(d) && d->n)
        run(d);
    return 0;
}

/* fire()'s run of d, which it has just fired with v (taken), live and
 * single-shot, with entries to run: 0, so that fire() ends in a jump to
 * it.  d cannot be running or queued to run (F_RUNNING and F_LATER_RUN
 * are only ever set on a deferred that has fired), so run()'s first test
 * is left out.  This is the general case: run_stack(). */
static DEFERRED_NOINLINE int run_fired_stack(deferred_t *d, deferred_value_t v)
{
    d->result = v;
    if (DEFERRED_UNLIKELY(nest >= NEST_MAX)) {
        later(d, F_LATER_RUN);
        return 0;
    }
    nest++;
    run_stack(d);
    leave();
    return 0;
}

/* The end of the first run of a fired chain that run_fired() or
 * run_one_fired() began: v (what its entries gave, taken) becomes d's
 * result or d waits on the deferred v holds; d stops running (no runner
 * of d is left to be told of changes: F_STIR goes too); entries added
 * meanwhile run; the run's reference and frame go. */
static DEFERRED_ALWAYS_INLINE inline void fired_end(deferred_t *d, deferred_value_t v)
{
    if (DEFERRED_UNLIKELY(v.release == deferred__release_deferred))
        chain_on(d, v.ptr);
    else
        d->result = v;
    if (DEFERRED_LIKELY(d->pos == d->n)) {
        /* An empty chain is one of plain callbacks: no kinds kept. */
        d->flags &= ~(F_RUNNING | F_STIR | F_KINDS);
        d->pos = d->n = 0;
    } else {
        d->flags &= ~(F_RUNNING | F_STIR);
        if (idle_with_result(d))
            run_stack(d);
    }
    unref_inline(d);
    leave();
}

/* The same for a chain that starts with a plain callback: its plain
 * callbacks run at once with v in registers (run_plain()), as run_stack()
 * would run them, without the runner's stack; where they stop short of the
 * end (another kind of entry, a pause, a wait), run_stack() takes over. */
static DEFERRED_NOINLINE int run_fired(deferred_t *d, deferred_value_t v)
{
    if (DEFERRED_UNLIKELY(nest >= NEST_MAX))
        return run_fired_stack(d, v);
    nest++;
    d->refs++;
    d->flags |= F_RUNNING;
    fired_end(d, run_plain(d, 0, v));
    return 0;
}

/* fire()'s chain of plain callbacks (no kinds kept), not paused: fire()
 * flagged d running (F_STIR clear) and took the run's reference, so the
 * callbacks run at once, as run_plain() runs them, without its tests
 * first. */
static DEFERRED_NOINLINE int run_fired_plain(deferred_t *d, deferred_value_t v)
{
    uint32_t i = 0;

    if (DEFERRED_UNLIKELY(nest >= NEST_MAX)) {
        d->refs--;
        d->flags &= ~F_RUNNING;
        return run_fired_stack(d, v);
    }
    nest++;
    if (DEFERRED_UNLIKELY(plain_loop(d, &i, d->n, false, &v)))
        v = run_plain(d, i, v); /* a call on d from a callback: go on its way */
    fired_end(d, v);
    return 0;
}

/* The same for a chain of one entry that runs on either result with an
 * owned argument (a coroutine's await, a combinator's pair on its input;
 * never a continue entry, whose outer deferred run_stack() resumes
 * without recursing), not paused: called at once, its argument disposed
 * of as the runner disposes of it, without the runner's stack. */
static DEFERRED_NOINLINE int run_one_fired(deferred_t *d, deferred_value_t v)
{
    struct deferred__link call = d->links[0];
    uint8_t kind = *kind_at(d, 0); /* kept: fire_other() tested it */

    if (DEFERRED_UNLIKELY(nest >= NEST_MAX))
        return run_fired_stack(d, v);
    nest++;
    d->refs++;
    d->flags |= F_RUNNING;
    d->pos = 1;
    v = call.fn(v, call.arg);
    consumed(d, kind, &call);
    fired_end(d, v);
    return 0;
}

/* fire()'s chains that start with another kind of entry than a plain
 * callback: a lone owned both runs directly (run_one_fired(); an owned
 * both is never a continue entry, a plain both), the rest on the runner's
 * stack.  Out of line, so that fire() tests the flags with one test. */
static DEFERRED_NOINLINE int fire_other(deferred_t *d, deferred_value_t v)
{
    uint8_t kind = *kind_at(d, 0); /* kept: fire() came here for F_KINDS */

    if ((kind & LINK_OWNED) && (kind & LINK_KIND) == LINK_BOTH && d->n == 1 &&
        !(d->flags & DEFERRED__F_PAUSES))
        return run_one_fired(d, v);
    return run_fired_stack(d, v);
}

/* The common case in a frame of no registers: a live deferred without an
 * extension (so single-shot: a multi-fire one keeps its stream there),
 * fired the first time.  A chain with nothing in it (deferred_succeed()'s)
 * has nothing to run; a deferred that had not fired has run none of its
 * entries (pos is 0), so n alone tells, and its first entry's kind which
 * of the three runs above it takes.  A paused one is the runner's to leave
 * alone (run_plain() tests it first). */
static inline int fire(deferred_t *d, deferred_value_t v, const char *file, int line)
{
    uint32_t flags = d->flags, refs = d->refs;

    if (DEFERRED_UNLIKELY(!refs || (flags & F_CALLED) || d->ext))
        return fire_slow(d, v, file, line);
    if (!d->n) {
        d->flags = flags | F_CALLED;
        d->result = v;
        return 0;
    }
    if (DEFERRED_UNLIKELY(flags & (F_KINDS | DEFERRED__F_PAUSES))) {
        d->flags = flags | F_CALLED;
        /* Paused (run_plain() leaves it), or a plain callback first. */
        if (!(flags & F_KINDS) || *kind_at(d, 0) == LINK_CB)
            return run_fired(d, v);
        return fire_other(d, v);
    }
    /* run_fired_plain()'s flags and reference, in the stores of the
     * fire. */
    d->flags = (flags | F_CALLED | F_RUNNING) & ~F_STIR;
    d->refs = refs + 1;
    return run_fired_plain(d, v);
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

/* ---- pause and cancel -------------------------------------------------- */

int deferred_pause(deferred_t *d)
{
    if (!d || (d->flags & DEFERRED__F_PAUSES) == DEFERRED__F_PAUSES)
        return -EINVAL; /* PAUSE_MAX pauses already */
    d->flags += PAUSE_ONE;
    stir(d);
    if (DEFERRED_UNLIKELY(is_multi(d)))
        deferred__flow_update(d);
    return 0;
}

int deferred_unpause(deferred_t *d)
{
    if (!d || paused_of(d) == 0)
        return -EINVAL;
    d->flags -= PAUSE_ONE;
    if (paused_of(d) == 0 && (idle_with_result(d) || is_multi(d)))
        run(d);
    return 0;
}

/* The cancel itself, in a frame already counted in nest. */
static void cancel_now(deferred_t *d, const char *file, int line)
{
    if (!d->refs)
        return;
    if (DEFERRED_UNLIKELY(is_multi(d))) {
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
    if (!deferred__call_canceller(d))
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

/*
 * A row that run_row() could not finish in its loop: the runner goes on
 * from d->pos with the value the loop left in d->result (or the row waits
 * on the deferred its callback returned, and nothing runs now), in this
 * same frame; then the frame is left as run_row() would have.
 */
static DEFERRED_NOINLINE int row_hand_over(deferred_t *d)
{
    deferred_value_t r = d->result;

    d->flags &= ~F_RUNNING;
    if (r.release != deferred__release_deferred) {
        run_stack(d);
    } else {
        d->result = deferred_value_none();
        if (chain_on(d, r.ptr))
            deferred__flow_update(d);
        else
            run_stack(d);
    }
    unref_inline(d);
    leave();
    return 0;
}

/* run_row() at depth NEST_MAX - 1 or deeper: the runner's way from the
 * row's first entry, or the later queue's. */
static DEFERRED_NOINLINE int row_deep(deferred_t *d, deferred_value_t r)
{
    d->pos = 0;
    d->flags |= F_ROW;
    if (nest >= NEST_MAX) {
        d->result = r;
        later(d, F_LATER_RUN);
        return 0;
    }
    nest++;
    d->refs++;
    d->result = r;
    return row_hand_over(d);
}

/* Tells the compiler d->flags may have changed: the row's loop then tests
 * the flag in memory rather than keeping a copy of the word in a register
 * for its ways out. */
#if defined(__GNUC__)
#define ROW_FLAGS_REREAD() __asm__ __volatile__("" ::: "memory")
#else
#define ROW_FLAGS_REREAD() ((void)0)
#endif

void (*deferred__row_failure)(void *) = deferred__release_failure;
void (*deferred__row_deferred)(void *) = deferred__release_deferred;

/*
 * A row emitted into an idle multi-fire deferred: deferred_multi_emit()
 * checked that nothing is queued, running, paused or waiting, that the
 * stream is not ending nor its flow hook holding back, that every entry
 * is a plain callback (struct multi's plain) and d not stirred, and
 * counted the row.  The callbacks run in a row with the value in
 * registers, and the entries and their count in registers too: a call on
 * d during the row that may change what the row does next (an entry
 * added, a pause, the stream ended, a row queued, the finish asked) flags
 * d F_STIR, tested once per callback.  The row is retired at once when it
 * ends as a plain value with d unstirred: then nothing was queued or
 * asked, and deferred__multi_step() would find nothing to do.  Anything
 * else (a failure, a deferred returned, F_STIR) goes to row_hand_over()
 * where it stopped.
 *
 * The position is not stored per callback: an idle multi-fire chain's is
 * at its end (d->pos == d->n), where it stays while the row runs (nothing
 * reads it then but its runners), and the hand-over counts back from it
 * the entries the loop had left.
 *
 * Its nesting is a runner's, but for the frame at NEST_MAX - 1, which
 * would have to drain the later queue as it leaves: that one takes the
 * runner's way at once (row_deep()), which keeps leave() off the loop's
 * way out.
 */
int deferred__run_row(deferred_t *d, deferred_value_t r)
{
    const char *end; /* past the last entry: the loop counts at up to it */
    intptr_t at;
    void *ptr = r.ptr; /* r, in two scalars the loop keeps where the */
    void (*rel)(void *) = r.release; /* callbacks take and give them */

    if (DEFERRED_UNLIKELY(nest >= NEST_MAX - 1))
        return row_deep(d, r);
    nest++;
    d->refs++;
    d->flags |= F_ROW | F_RUNNING; /* F_STIR is clear: the emit saw to it */
    if (DEFERRED_UNLIKELY(rel == deferred__row_failure)) {
        d->pos = 0;
        d->result = r;
        return row_hand_over(d); /* its errbacks, if any, are the runner's */
    }
    end = (const char *)(d->links + d->n);
    for (at = -(intptr_t)(d->n * sizeof(struct deferred__link)); at != 0; at += sizeof(struct deferred__link)) {
        const struct deferred__link *l = (const struct deferred__link *)(end + at);
        deferred_value_t v;

        v.ptr = ptr;
        v.release = rel;
        v = l->fn(v, l->arg);
        ptr = v.ptr;
        rel = v.release;
        if (DEFERRED_UNLIKELY(rel == deferred__row_deferred || rel == deferred__row_failure ||
                              (d->flags & F_STIR))) {
            ROW_FLAGS_REREAD();
            if (d->flags & F_ROW) /* else the stream ended, its position set */
                d->pos += (uint32_t)(at / (intptr_t)sizeof(*l)) + 1;
            d->result = v;
            return row_hand_over(d);
        }
    }
    ROW_FLAGS_REREAD();
    d->flags &= ~(F_RUNNING | F_ROW);
    if (rel && rel != deferred_value_int_release)
        rel(ptr); /* deferred__release() */
    if (DEFERRED_UNLIKELY(--d->refs == 0)) {
        d->refs = 1;
        deferred_unref(d); /* a callback let it go: freed here */
    }
    nest--; /* leave(), but for the frame at NEST_MAX, which this is not */
    return 0;
}

void deferred__run(deferred_t *d)
{
    run(d);
}

int deferred__fire(deferred_t *d, deferred_value_t v, const char *file, int line)
{
    return fire(d, v, file, line);
}

