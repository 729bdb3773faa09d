/*
 * core.c: a deferred's life: made, referenced, freed; its result and
 * state read; the report hook and debug mode.  The chain and its runner
 * are in runner.c, chain_to() and the cycle check in chain-to.c.
 *
 * A deferred is one 120-byte block: a small header, the result, and room
 * for DEFERRED_INLINE_LINKS (three) chain entries, so a pending deferred with
 * up to three callbacks costs one malloc; with a canceller, a tail of 16 bytes
 * follows it in the same block.  Longer chains move their entries to a
 * heap block that grows (runner.c).  With the default allocator the blocks
 * of these sizes come from a per-thread cache (alloc.c).
 *
 * Freeing is iterative: the last deferred_unref() frees, and every
 * deferred whose count reaches zero meanwhile (through the releases and
 * destroy functions that free runs) is queued on a per-thread list and
 * freed by the same loop, whatever they trigger.
 *
 * The rule that keeps weak pointers safe: a deferred whose count reached
 * zero is dying.  It may wait on free_list while other frees run, and
 * until its canceller's destroy function has run a combinator (or an inner
 * deferred's continue entry) may still point at it.  A dying deferred is
 * inert: firing it (or, multi-fire, emitting or finishing) releases the
 * value, cancelling, running or referencing it does nothing, and a
 * continue entry that reaches it is dead.  So nothing can bring its count
 * back from zero and queue it a second time.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deferred-private.h"
#include "core-private.h"

#ifndef DEFERRED_DEBUG_DEFAULT
#define DEFERRED_DEBUG_DEFAULT 0
#endif

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

/* Report f about d (NULL when no deferred is concerned): with d's sites
 * when debug mode recorded them. */
void deferred__report_about(deferred_report_t kind, const deferred_failure_t *f,
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
    deferred__report_about(kind, f, NULL);
}

void deferred_set_debug(bool on)
{
    debug_on = on;
}

bool deferred_get_debug(void)
{
    return debug_on;
}

/* Destroy the arguments of a _full pair and the block that holds them. */
void deferred__full_arg_destroy(struct full_arg *fa)
{
    if (fa->cb_destroy)
        fa->cb_destroy(fa->cb_arg);
    if (fa->eb_destroy && !(fa->eb_destroy == fa->cb_destroy && fa->eb_arg == fa->cb_arg))
        fa->eb_destroy(fa->eb_arg);
    deferred__free(fa);
}

/* ---- construction and destruction ------------------------------------- */


/* The inline entries' kinds come right before the inline entries, as in a
 * heap block (kind_at()), and the deferred stays in 120 bytes. */
/* The head of a deferred is what deferred/core.h says it is (struct
 * deferred__head, for the headers' inline fast paths). */
typedef char head_as_published
    [offsetof(deferred_t, chained_to) == offsetof(struct deferred__head, chained_to) &&
             offsetof(deferred_t, result) == offsetof(struct deferred__head, result) &&
             offsetof(deferred_t, links) == offsetof(struct deferred__head, links) &&
             offsetof(deferred_t, refs) == offsetof(struct deferred__head, refs) &&
             offsetof(deferred_t, flags) == offsetof(struct deferred__head, flags) &&
             offsetof(deferred_t, pos) == offsetof(struct deferred__head, pos) &&
             offsetof(deferred_t, n) == offsetof(struct deferred__head, n) &&
             offsetof(deferred_t, cap) == offsetof(struct deferred__head, cap)
         ? 1 : -1];

typedef char inline_kinds_before_links
    [offsetof(deferred_t, inline_links) ==
                     offsetof(deferred_t, inline_kinds) + sizeof(((deferred_t *)0)->inline_kinds) &&
             sizeof(((deferred_t *)0)->inline_kinds) >= DEFERRED_INLINE_LINKS &&
             sizeof(deferred_t) <= 120
         ? 1 : -1];

/* Give d's block back, to the cache when it is of its class. */
static inline void free_block(deferred_t *d)
{
    if (d->flags & F_BLOCK)
        deferred__block_free(d, BLOCK_DEFERRED);
    else if (d->flags & F_BLOCKX)
        deferred__block_free(d, BLOCK_EXTRA);
    else
        deferred__free(d);
}

/* A new deferred's header: one reference, pending, no entries. */
static DEFERRED_ALWAYS_INLINE inline void init_header(deferred_t *d, uint32_t flags)
{
    d->refs = 1;
    d->flags = flags;
    d->pos = 0;
    d->n = 0;
    d->cap = DEFERRED_INLINE_LINKS;
    d->result.ptr = NULL;
    d->result.release = NULL;
    d->chained_to = NULL;
    d->next = NULL;
    d->links = d->inline_links;
    d->ext = NULL;
}

/* The constructor, inline in both entries so that deferred_new_at()'s
 * constant extra of 0 costs nothing. */
static DEFERRED_ALWAYS_INLINE inline deferred_t *
new_deferred(size_t extra, const char *file, int line, deferred_canceller_fn canceller,
             void *arg, deferred_destroy_fn destroy)
{
    bool tail = canceller || destroy;
    uint32_t flags = tail ? F_TAIL : extra ? 0 : F_BLOCK;
    deferred_t *d;

    if (!extra && !tail) {
        d = deferred__block_alloc(BLOCK_DEFERRED);
    } else if (extra > SIZE_MAX - EXTRA_AT(1)) {
        d = NULL;
    } else if (extra && EXTRA_AT(tail) + extra <= DEFERRED__BLOCK_EXTRA_SIZE &&
               deferred__cache_on) {
        /* A coroutine with a small frame: a block of the cache's class,
         * what lies past the bytes asked for poisoned for AddressSanitizer
         * as it would be past a malloc'd block. */
        d = deferred__block_alloc(BLOCK_EXTRA);
        flags |= F_BLOCKX;
#ifdef DEFERRED__BLOCK_ASAN
        if (d)
            ASAN_POISON_MEMORY_REGION((char *)d + EXTRA_AT(tail) + extra,
                                      DEFERRED__BLOCK_EXTRA_SIZE - EXTRA_AT(tail) - extra);
#endif
    } else {
        d = deferred__malloc(extra ? EXTRA_AT(tail) + extra : TAIL_END);
    }
    if (!d)
        goto out_destroy;
    init_header(d, flags);
    if (tail) {
        canceller_of(d)->fn = canceller;
        canceller_of(d)->arg = arg;
    }
    if (DEFERRED_UNLIKELY(debug_on || destroy)) {
        d->ext = deferred__malloc(sizeof(*d->ext));
        if (!d->ext)
            goto out_free_deferred;
        d->ext->canceller_destroy = destroy;
        /* Debug mode records a site even when none is given: a
         * recorded creation file is what marks a deferred debug mode
         * watches (its double fire is reported). */
        d->ext->new_file = debug_on ? (file ? file : "?") : NULL;
        d->ext->new_line = line;
        d->ext->fire_file = NULL;
        d->ext->fire_line = 0;
        d->ext->multi = NULL;
        d->ext->inputs = NULL;
        d->ext->inputs_arg = NULL;
        memset(&d->ext->dbg, 0, sizeof(d->ext->dbg));
        if (debug_on)
            deferred__dump_register(d);
    }
    return d;

out_free_deferred:
    free_block(d);
out_destroy:
    if (destroy)
        destroy(arg);
    errno = ENOMEM;
    return NULL;
}

/* A plain deferred (no canceller, no extra bytes, no debug mode) with
 * flags, from the cache without a call: deferred_new_at()'s and
 * deferred_succeed()'s common case.  NULL with errno ENOMEM. */
static DEFERRED_ALWAYS_INLINE inline deferred_t *new_plain(uint32_t flags)
{
    deferred_t *d = deferred__block_alloc(BLOCK_DEFERRED);

    if (DEFERRED_UNLIKELY(!d)) {
        errno = ENOMEM;
        return NULL;
    }
    init_header(d, F_BLOCK | flags);
    return d;
}

static DEFERRED_NOINLINE deferred_t *new_slow(const char *file, int line,
                                              deferred_canceller_fn canceller, void *arg,
                                              deferred_destroy_fn destroy)
{
    return new_deferred(0, file, line, canceller, arg, destroy);
}

deferred_t *deferred_new_at(const char *file, int line,
                            deferred_canceller_fn canceller, void *arg,
                            deferred_destroy_fn destroy)
{
    /* The common case without a call (so without a frame): no canceller,
     * no debug mode, a block on the cache. */
    if (DEFERRED_LIKELY(!canceller && !destroy && !debug_on))
        return new_plain(0);
    return new_slow(file, line, canceller, arg, destroy);
}

static DEFERRED_NOINLINE deferred_t *new_extra_slow(size_t extra, const char *file, int line,
                                                    deferred_canceller_fn canceller,
                                                    void *arg, deferred_destroy_fn destroy)
{
    return new_deferred(extra, file, line, canceller, arg, destroy);
}

deferred_t *deferred__new_extra(size_t extra, const char *file, int line,
                                deferred_canceller_fn canceller, void *arg,
                                deferred_destroy_fn destroy)
{
    deferred_t *d;

    /* The common case without a frame: a coroutine (a canceller, no
     * destroy function) whose frame fits a block the cache has, outside
     * debug mode: new_deferred()'s way for it, without its branches. */
    if (DEFERRED_LIKELY(canceller && !destroy && !debug_on &&
                        extra <= DEFERRED__BLOCK_EXTRA_SIZE - EXTRA_AT(1)) &&
        (d = deferred__block_pop(BLOCK_EXTRA)) != NULL) {
#ifdef DEFERRED__BLOCK_ASAN
        ASAN_POISON_MEMORY_REGION((char *)d + EXTRA_AT(1) + extra,
                                  DEFERRED__BLOCK_EXTRA_SIZE - EXTRA_AT(1) - extra);
#endif
        init_header(d, F_TAIL | F_BLOCKX);
        canceller_of(d)->fn = canceller;
        canceller_of(d)->arg = arg;
        return d;
    }
    return new_extra_slow(extra, file, line, canceller, arg, destroy);
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

/* Stop d waiting on the deferred it is chained to: turn d's continue entry
 * in that deferred's chain into a dead one (found where d recorded it, so
 * freeing many waiters of one deferred is linear), and drop d's
 * reference. */
static void unchain(deferred_t *d)
{
    deferred_t *inner = d->chained_to;
    uint32_t i = wait_idx_of(d);

    wait_end(d);
    d->result.ptr = NULL; /* the index's place, empty again */
    if (!(i >= inner->pos && i < inner->n && is_continue(inner, i, d)))
        for (i = inner->pos; i < inner->n && !is_continue(inner, i, d); i++)
            ;
    if (i < inner->n)
        set_kind(inner, i, LINK_DEAD);
    deferred_unref(inner);
}

/* Free d, whose last reference is gone.  Everything it releases that frees
 * further deferreds only queues them on free_list. */
static void free_deferred(deferred_t *d)
{
    uint32_t i;

    if (DEFERRED_UNLIKELY(d->result.release == deferred__release_failure))
        deferred__report_about(DEFERRED_REPORT_UNHANDLED, d->result.ptr, d);
    deferred__release(d->result);
    for (i = first_live(d); i < d->n; i++)
        link_dispose(kind_of(d, i), d->links[i]);
    if (d->chained_to)
        unchain(d);
    if (d->links != d->inline_links)
        deferred__spill_free(d->links, d->cap);
    if (d->ext) {
        if (d->ext->dbg.reg) /* dying: a dump skips it until then */
            deferred__dump_unregister(d);
        if (d->ext->multi) {
            deferred__multi_free(d->ext->multi);
            d->ext->multi = NULL; /* the canceller's destroy may look */
        }
        if (d->ext->canceller_destroy)
            d->ext->canceller_destroy(canceller_of(d)->arg);
        deferred__free(d->ext);
    }
    free_block(d);
}

/* The last reference of d went: free it, and what that frees in turn. */
static DEFERRED_NOINLINE void unref_last(deferred_t *d)
{
    d->flags |= F_DYING; /* user code runs before it is gone */
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

/* deferred_unref()'s fast path: d's block (of class c) and its entries'
 * block, if it has one of the cache's classes, onto the thread's cache,
 * which is open (keyed and on); false, nothing done, when it has not room
 * for both. */
static DEFERRED_ALWAYS_INLINE inline bool blocks_to_cache(deferred_t *d, unsigned c)
{
    const struct deferred__block_cache *bc = &deferred__cache;

    if (DEFERRED_UNLIKELY(bc->n[c] >= BLOCK_CACHE_MAX))
        return false;
    if (d->links != d->inline_links) {
        if (d->cap == SPILL2_LINKS && DEFERRED_LIKELY(bc->n[BLOCK_SPILL2] < BLOCK_CACHE_MAX))
            deferred__block_push_room((char *)d->links - KINDS_PAD(SPILL2_LINKS), BLOCK_SPILL2);
        else if (d->cap == SPILL1_LINKS && bc->n[BLOCK_SPILL1] < BLOCK_CACHE_MAX)
            deferred__block_push_room((char *)d->links - KINDS_PAD(SPILL1_LINKS), BLOCK_SPILL1);
        else
            return false;
    }
    deferred__block_push_room(d, c);
    return true;
}

/* deferred_unref()'s fast path when the cache has not room for d's
 * blocks (or is not open on this thread): each goes to the cache's slow
 * path (the reserve, or free()), the entries' first if it is of one of the
 * cache's classes; else unref_last() frees d. */
static DEFERRED_NOINLINE void blocks_free(deferred_t *d)
{
    if (d->links != d->inline_links) {
        if (d->cap == SPILL2_LINKS)
            deferred__block_free((char *)d->links - KINDS_PAD(SPILL2_LINKS), BLOCK_SPILL2);
        else if (d->cap == SPILL1_LINKS)
            deferred__block_free((char *)d->links - KINDS_PAD(SPILL1_LINKS), BLOCK_SPILL1);
        else {
            unref_last(d);
            return;
        }
    }
    free_block(d);
}

void deferred_unref(deferred_t *d)
{
    const struct deferred__block_cache *bc = &deferred__cache;

    if (!d || !d->refs || --d->refs)
        return;
    /* The common case without a frame: a deferred of one of the cache's
     * classes (a plain deferred, or a coroutine's block with its frame:
     * nothing in the frame needs freeing once the coroutine is over, and
     * its canceller has no destroy function without a rare part) whose
     * result needs no release (empty, or an integer), with no entry left,
     * no wait and no rare part, its entries inline or in one of a chain's
     * first two heap blocks, when the thread's cache has room for its
     * blocks: they go there.  It frees nothing else, so it may be taken
     * inside unref_last()'s loop too.  When the cache has not room, its
     * slow path takes them (blocks_free()); every other case is
     * unref_last()'s.  Both are tail calls. */
    if (DEFERRED_LIKELY((d->flags & (F_BLOCK | F_BLOCKX)) && !d->ext && !d->chained_to &&
                        d->pos == d->n &&
                        (!d->result.release || d->result.release == deferred_value_int_release))) {
        if (DEFERRED_LIKELY(bc->keyed && deferred__cache_on)) {
            if (DEFERRED_LIKELY(d->flags & F_BLOCK)) {
                if (DEFERRED_LIKELY(blocks_to_cache(d, BLOCK_DEFERRED)))
                    return;
            } else if (blocks_to_cache(d, BLOCK_EXTRA)) {
                return;
            }
        }
        blocks_free(d);
        return;
    }
    unref_last(d);
}

/* ---- state and results ------------------------------------------------ */

bool deferred_is_paused(const deferred_t *d)
{
    return d && (d->flags & (F_WAITING | DEFERRED__F_PAUSES));
}

unsigned deferred_pause_count(const deferred_t *d)
{
    return d ? paused_of(d) : 0;
}

bool deferred_is_waiting(const deferred_t *d)
{
    return d && d->chained_to;
}

deferred_t *deferred_waits_on(const deferred_t *d)
{
    return d ? d->chained_to : NULL;
}

bool deferred_has_fired(const deferred_t *d)
{
    if (d && is_multi(d))
        return d->ext->multi->ended;
    return d && (d->flags & F_CALLED);
}

bool deferred_has_result(const deferred_t *d)
{
    return d && single_result_ready(d);
}

/* Whether d's result field does not hold its result, to show or take: d
 * is NULL, unfired, multi-fire, waiting, or being freed (its result is
 * being released then). */
static inline bool result_hidden(const deferred_t *d)
{
    return !d || (d->flags & (F_CALLED | F_WAITING | F_DYING | F_MULTI)) != F_CALLED;
}

deferred_value_t deferred_result(const deferred_t *d)
{
    if (result_hidden(d))
        return deferred_value_none();
    return d->result;
}

bool deferred__take_result(deferred_t *d, deferred_value_t *v)
{
    if (!single_result_ready(d))
        return false;
    *v = value_take(&d->result);
    if (DEFERRED_LIKELY(d->refs > 1))
        d->refs--;
    else
        deferred_unref(d);
    return true;
}

deferred_value_t deferred_result_take(deferred_t *d)
{
    deferred_value_t v; /* through a local: gcc 12 otherwise zeroes the
                           empty value ahead of the test, 2 more a take */

    if (result_hidden(d))
        return deferred_value_none();
    v = value_take(&d->result);
    return v;
}

/* The runner and fire for multi.c, which drives rows through them. */
/* ---- made fired -------------------------------------------------------- */

deferred_t *deferred_succeed(deferred_value_t v)
{
    deferred_t *d;

    if (v.release == deferred__release_deferred) {
        deferred_value_release(v);
        errno = EINVAL;
        return NULL;
    }
    /* A fresh deferred has no entries to run and, outside debug mode, no
     * fire site to record: the result is stored as it is made. */
    if (DEFERRED_LIKELY(!debug_on)) {
        if ((d = new_plain(F_CALLED))) {
            d->result = v;
            return d;
        }
    } else if ((d = deferred_new())) {
        deferred__fire(d, v, __FILE__, __LINE__); /* its fire site recorded */
        return d;
    }
    deferred_value_release(v);
    errno = ENOMEM;
    return NULL;
}

deferred_t *deferred_fail(deferred_failure_t *f)
{
    return deferred_succeed(deferred_value_failure(f));
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
    deferred__fire(d, v, NULL, 0);
    return d;
}

/* ---- for the async layer ----------------------------------------------- */

/*
 * Fire the pending deferred d waiting on next (a reference, taken: d's
 * wait holds it), as if a first callback of d had returned next at once:
 * d's entries run when next has its result (its continue entry hands it
 * over), and a cancel of d goes to next.  A coroutine's captured cancel
 * (lib/async/async.c) keeps its deferred from failing with ECANCELED so,
 * without an entry of its own in every coroutine's chain.  The caller
 * knows d is single-shot and pending (so on no runner, and waiting on
 * nothing), and next fresh: pending, single-shot, holding nothing (no
 * cycle can form).  file and line are the fire site debug mode records.
 * 0, or -ENOMEM (next released; not reached while next
 * has room for its entry inline).
 */
int deferred__fire_waiting(deferred_t *d, deferred_t *next, const char *file, int line)
{
    if ((deferred_add_both)(next, deferred__continue_fn, d) < 0) {
        deferred_unref(next);
        return -ENOMEM;
    }
    if (DEFERRED_UNLIKELY(d->ext != NULL) && d->ext->new_file) {
        /* Debug mode: the fire site, as fire() records it. */
        d->ext->fire_file = file;
        d->ext->fire_line = line;
    }
    d->flags |= F_CALLED;
    wait_on(d, next);
    return 0;
}
