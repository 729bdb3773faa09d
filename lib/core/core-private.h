/*
 * core-private.h: the deferred's structure, shared by the files of the
 * core (core.c: life and state; runner.c: the chain and its runner;
 * chain-to.c: chain_to() and the cycle check; multi.c: multi-fire), and
 * what each calls of the others.  Users see deferred_t as opaque.
 */
#ifndef DEFERRED_CORE_PRIVATE_H
#define DEFERRED_CORE_PRIVATE_H

#include <string.h>

#include "deferred-private.h"
#include "ring.h"
#include "dump-private.h"

#if defined(__GNUC__)
#define THREAD_LOCAL __thread __attribute__((tls_model("initial-exec")))
#else
#define THREAD_LOCAL _Thread_local
#endif

/* Chain entries kept inside the deferred's block: three keep a pending
 * deferred with its callbacks (a link of a chain of waits with two and the
 * continue entry of the deferred that waits on it; a combinator's input
 * with its entry and a waiter's) in 120 bytes, one malloc size class. */
#ifndef DEFERRED_INLINE_LINKS
#define DEFERRED_INLINE_LINKS 3
#endif

/* What a chain entry does.  A pair added with both halves takes two
 * consecutive entries, PAIR_CB then PAIR_EB: the runner picks one and
 * steps over both. */
enum link_kind {
    LINK_CB = DEFERRED__LINK_CB,     /* runs on a value, skipped on a failure */
    LINK_EB = DEFERRED__LINK_EB,     /* runs on a failure, skipped on a value */
    LINK_BOTH = DEFERRED__LINK_BOTH, /* runs on either */
    LINK_PAIR_CB,
    LINK_PAIR_EB,
    LINK_DEAD, /* a continue entry whose outer deferred is gone */
    LINK_KIND = 0x1f,
    LINK_HOLDS = 0x20, /* flag, with LINK_OWNED: a struct deferred__holding,
                          whose pair holds a deferred (the cycle check's) */
    LINK_OWNED = 0x40, /* flag: the argument is a struct deferred__owned */
    LINK_FULL = 0x80 /* flag: the argument is a struct full_arg to destroy */
};

/* Flags of a deferred.  F_CALLED, F_RUNNING, F_MULTI, F_LATER_RUN,
 * F_WAITING, F_DYING and F_KINDS are public, for the inline fast paths of
 * the headers (deferred/core.h). */
enum {
    F_CALLED = DEFERRED__F_CALLED, /* fired: result is set (or moved on) */
    F_RUNNING = DEFERRED__F_RUNNING, /* on a runner's stack */
    F_CANCELLED = 1u << 2, /* cancel began: the canceller has run */
    F_SUPPRESS = 1u << 3,  /* swallow one later fire (cancel, no canceller) */
    F_MULTI = DEFERRED__F_MULTI, /* multi-fire: entries are kept, one run per row */
    F_ROW = 1u << 5,       /* multi-fire: a row is in flight in the chain */
    F_LATER_RUN = DEFERRED__F_LATER_RUN, /* queued to run once the nesting unwinds */
    F_LATER_CANCEL = 1u << 7, /* queued to be cancelled likewise */
    F_VISIT = 1u << 8,     /* seen by the cycle check under way */
    F_HELD = 1u << 9,      /* once a chain_to() target, a combinator's
                              input, what a coroutine awaits or what
                              another deferred waited on: chaining on it
                              checks for a cycle, and its chain may hold
                              continue entries (a waiter's) */
    F_TAIL = 1u << 10,     /* made with a canceller or a destroy function:
                              a struct canceller_tail follows the block */
    F_BLOCK = 1u << 11,    /* its block is of the cache's class
                              BLOCK_DEFERRED (no tail, no extra bytes) */
    F_STIR = 1u << 12,     /* its entries, pause count or wait changed by
                              a call on it: the runner's loop of plain
                              callbacks (run_plain()) reloads them; also,
                              multi-fire, a row queued, the finish asked
                              or the stream ended (deferred__run_row()).
                              On a single-shot deferred it is set only
                              while a run of it is under way (stir())
                              and cleared when that run ends, so the
                              inline run of deferred/core.h, which
                              begins on an idle deferred, finds it clear
                              and tells a call on d from its callback by
                              the change of the flags word */
    F_BLOCKX = 1u << 13,   /* made with extra bytes in a block of the
                              cache's class BLOCK_EXTRA */
    F_WAITING = DEFERRED__F_WAITING, /* it waits on another: chained_to is
                                        set (one flags test for the hot paths) */
    F_DYING = DEFERRED__F_DYING, /* its last reference went (unref_last()):
                                   its result is neither shown, taken nor
                                   run on while it is released */
    F_KINDS = DEFERRED__F_KINDS /* the chain's kind bytes are kept: an entry
                                   other than a plain callback was added since
                                   the chain was last empty (kind_of()) */
};

/* The state of a multi-fire deferred.  Queued rows wait in a ring. */
struct multi {
    deferred_t *end;           /* the end deferred (a reference) */
    struct deferred__ring queue; /* rows waiting for their turn */
    uint64_t rows;             /* rows accepted */
    uint32_t plain;            /* the entry count when every entry was seen
                                  a plain callback, the stream neither ended
                                  nor held back by its flow hook; UINT32_MAX
                                  when not (multi.c: the emit's fast path) */
    deferred_value_t final;    /* the end value, once finish was called */
    uint64_t row;              /* number of the row in flight or last run */
    bool closing;              /* finish called: end when the queue drains */
    bool ended;
    bool flow_paused;          /* what the flow hook was last told */
    deferred_flow_fn flow;
    void *flow_arg;
};

/* A deferred made with a canceller (or a destroy function for its
 * argument) has this right after its block, in the same allocation: the
 * common deferred, made without, does not pay for it. */
struct canceller_tail {
    deferred_canceller_fn fn; /* NULL once disabled */
    void *arg;
};

/* The rarely needed parts, allocated only when used. */
struct deferred_ext {
    deferred_destroy_fn canceller_destroy;
    const char *new_file;
    const char *fire_file;
    int new_line;
    int fire_line;
    struct multi *multi;
    deferred__inputs_fn inputs; /* what a combinator's result holds */
    void *inputs_arg;
    struct deferred__dbg dbg; /* deferred_dump()'s (dump.c) */
};

struct deferred {
    /* result, chained_to (a reference), links (cap entries, their kinds
     * before them: kind_at()), next, ext, refs, flags (with the pause
     * count: paused_of()), pos, n and cap, as deferred/core.h lists them
     * for its inline fast paths (struct deferred__head). */
    DEFERRED__HEAD_FIELDS
    /* Inline, as in a heap block: the kinds, backwards, right before the
     * entries (the last DEFERRED_INLINE_LINKS bytes), then the entries. */
    uint8_t inline_kinds[4];
    struct deferred__link inline_links[DEFERRED_INLINE_LINKS];
};

/* The pause count, in the top 15 bits of the flags (DEFERRED__F_PAUSES). */
#define PAUSE_SHIFT 17
#define PAUSE_ONE (1u << PAUSE_SHIFT)
#define PAUSE_MAX 0x7fffu
static inline uint32_t paused_of(const deferred_t *d)
{
    return d->flags >> PAUSE_SHIFT;
}

/* Tell a run of d under way (F_RUNNING: run_plain()'s loop, the inline
 * run of deferred/core.h) or a multi-fire deferred's row runner that a
 * call changed d's entries or pause count.  With no run under way there
 * is nobody to tell, and the flag stays clear (see F_STIR). */
static inline void stir(deferred_t *d)
{
    if (d->flags & (F_RUNNING | F_MULTI))
        d->flags |= F_STIR;
}

/* Whether d is paused at all: one test of the word. */
static inline bool any_pause(const deferred_t *d)
{
    return (d->flags & DEFERRED__F_PAUSES) != 0;
}

/* While d waits (chained_to), its result is empty: the place of its
 * continue entry in the chain of the deferred it waits on is kept there
 * (unchain() finds the entry at once, so freeing many waiters of one
 * deferred is linear). */
static inline void set_wait_idx(deferred_t *d, uint32_t i)
{
    d->result.ptr = (void *)(uintptr_t)i;
    d->result.release = NULL;
}

static inline uint32_t wait_idx_of(const deferred_t *d)
{
    return (uint32_t)(uintptr_t)d->result.ptr;
}

/* d waits on inner, whose last entry is d's continue entry: chained_to and
 * F_WAITING are set together (the flag is what the hot paths test), the
 * entry's place kept, inner marked as one that was waited on. */
static inline void wait_on(deferred_t *d, deferred_t *inner)
{
    d->chained_to = inner;
    d->flags |= F_WAITING;
    set_wait_idx(d, inner->n - 1);
    inner->flags |= F_HELD;
}

/* d waits no more: both cleared together. */
static inline void wait_end(deferred_t *d)
{
    d->chained_to = NULL;
    d->flags &= ~F_WAITING;
}

/* The bytes of kinds before a block's cap entries: cap, rounded up to keep
 * the entries aligned. */
#define KINDS_PAD(cap) (((size_t)(cap) + 7) & ~(size_t)7)

/* The kind of entry i is a byte, i + 1 bytes before the entries: the
 * runner finds it from the links pointer it loads anyway, with no pointer
 * or capacity of its own in the header.  The bytes are kept only while
 * the chain has had an entry of another kind than a plain callback since
 * it was last empty (F_KINDS): a chain of plain callbacks, the common one,
 * writes none when they are added nor reads any when they run. */
static inline uint8_t *kind_at(const deferred_t *d, uint32_t i)
{
    return (uint8_t *)d->links - 1 - (size_t)i;
}

/* The kind of entry i (i < n). */
static inline uint8_t kind_of(const deferred_t *d, uint32_t i)
{
    return (d->flags & F_KINDS) ? *kind_at(d, i) : (uint8_t)LINK_CB;
}

static const uint8_t kinds_cb[8] = {LINK_CB, LINK_CB, LINK_CB, LINK_CB,
                                    LINK_CB, LINK_CB, LINK_CB, LINK_CB};

/* The kinds of d's first m entries, all plain callbacks, written in one
 * store where they fit (the bytes past them too, as the next entries'
 * own kinds will be): the inline kinds are 4 bytes, a heap block's a
 * multiple of 8 (KINDS_PAD()).  False, nothing written, for a chain past
 * a heap block's first 8. */
static inline bool kinds_fill_word(deferred_t *d, uint32_t m)
{
    if (d->links == d->inline_links)
        memcpy(d->inline_kinds, kinds_cb, sizeof(d->inline_kinds));
    else if (m <= 8)
        memcpy((uint8_t *)d->links - 8, kinds_cb, 8);
    else
        return false;
    return true;
}

/* Keep d's kind bytes from now on: the entries so far (and up to entry
 * upto, for one about to be stored) are plain callbacks. */
static inline void kinds_keep(deferred_t *d, uint32_t upto)
{
    uint32_t m = upto > d->n ? upto : d->n;

    if (d->flags & F_KINDS)
        return;
    if (!kinds_fill_word(d, m))
        memset(kind_at(d, 0) + 1 - (size_t)m, LINK_CB, m);
    d->flags |= F_KINDS;
}

/* Entry i (i <= n) is of kind: its byte written when d keeps them, or
 * from now on when kind is not a plain callback. */
static inline void set_kind(deferred_t *d, uint32_t i, uint8_t kind)
{
    if (!(d->flags & F_KINDS)) {
        if (kind == LINK_CB)
            return;
        kinds_keep(d, i);
    }
    *kind_at(d, i) = kind;
}

/* The entries of a chain's first two heap blocks, and the three block
 * classes of the per-thread cache (alloc.c): a deferred without a
 * canceller, those two blocks.  The cache links a block through the word
 * at class_link (a deferred's next, an entry's arg). */
#define SPILL1_LINKS 6
#define SPILL2_LINKS 12
#define SPILL_SIZE(cap) (KINDS_PAD(cap) + (size_t)(cap) * sizeof(struct deferred__link))
#define DEFERRED__BLOCK_SIZES \
    { sizeof(deferred_t), SPILL_SIZE(SPILL1_LINKS), SPILL_SIZE(SPILL2_LINKS), \
      DEFERRED__BLOCK_EXTRA_SIZE }
#define DEFERRED__BLOCK_LINKS \
    { offsetof(deferred_t, next), KINDS_PAD(SPILL1_LINKS) + offsetof(struct deferred__link, arg), \
      KINDS_PAD(SPILL2_LINKS) + offsetof(struct deferred__link, arg), offsetof(deferred_t, next) }
enum { BLOCK_DEFERRED, BLOCK_SPILL1, BLOCK_SPILL2, BLOCK_EXTRA };

/* ---- the per-thread block cache (alloc.c), its fast paths inline ------- */

#if defined(__SANITIZE_ADDRESS__)
#define DEFERRED__BLOCK_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DEFERRED__BLOCK_ASAN 1
#endif
#endif
#ifdef DEFERRED__BLOCK_ASAN
#include <sanitizer/asan_interface.h>
#endif

#ifndef BLOCK_CACHE_MAX
#define BLOCK_CACHE_MAX 64
#endif

/* A thread's cache: for each class, a list of up to BLOCK_CACHE_MAX
 * blocks that the inline paths below pop and push; behind it the reserve,
 * a list of bundles (a full list of BLOCK_CACHE_MAX blocks, moved in and
 * out whole by the slow paths in alloc.c), so that a burst of many
 * deferreds freed together is served again without malloc. */
struct deferred__block_cache {
    void *head[DEFERRED__BLOCK_CLASSES];
    unsigned n[DEFERRED__BLOCK_CLASSES];
    bool keyed; /* its thread-exit destructor is registered */
    void *bundles[DEFERRED__BLOCK_CLASSES]; /* the reserve's bundles, linked */
    size_t nbundles[DEFERRED__BLOCK_CLASSES];
    size_t low[DEFERRED__BLOCK_CLASSES]; /* fewest bundles this epoch */
    /* Blocks the thread took past its list (from the reserve or malloc)
     * this epoch and the last: what its reserve may hold. */
    size_t demand[DEFERRED__BLOCK_CLASSES], demand_last[DEFERRED__BLOCK_CLASSES];
    unsigned moves;                      /* bundle moves this epoch */
};
DEFERRED_HIDDEN extern THREAD_LOCAL struct deferred__block_cache deferred__cache;
DEFERRED_HIDDEN extern bool deferred__cache_on;
DEFERRED_HIDDEN void *deferred__block_alloc_slow(unsigned c);
DEFERRED_HIDDEN void deferred__block_free_slow(void *p, unsigned c);

static const size_t deferred__class_size[DEFERRED__BLOCK_CLASSES] = DEFERRED__BLOCK_SIZES;
static const size_t deferred__class_link[DEFERRED__BLOCK_CLASSES] = DEFERRED__BLOCK_LINKS;

/* A block of class c from the cache, or NULL when it has none (no call:
 * for fast paths that must stay leaf functions).  A cached block is
 * poisoned for AddressSanitizer but for its link word. */
static DEFERRED_ALWAYS_INLINE inline void *deferred__block_pop(unsigned c)
{
    void *p = deferred__cache.head[c];

    if (DEFERRED_LIKELY(p != NULL) && DEFERRED_LIKELY(deferred__cache_on)) {
        deferred__cache.head[c] = *(void **)((char *)p + deferred__class_link[c]);
        deferred__cache.n[c]--;
#ifdef DEFERRED__BLOCK_ASAN
        ASAN_UNPOISON_MEMORY_REGION(p, deferred__class_size[c]);
#endif
        return p;
    }
    return NULL;
}

/* A block of class c: the cache's last freed one, else malloc's. */
static DEFERRED_ALWAYS_INLINE inline void *deferred__block_alloc(unsigned c)
{
    void *p = deferred__block_pop(c);

    return p ? p : deferred__block_alloc_slow(c);
}

/* deferred__block_push() below when the caller has seen the cache open (keyed
 * and on) with room for p. */
static DEFERRED_ALWAYS_INLINE inline void deferred__block_push_room(void *p, unsigned c)
{
    size_t at = deferred__class_link[c];

    *(void **)((char *)p + at) = deferred__cache.head[c];
#ifdef DEFERRED__BLOCK_ASAN
    ASAN_POISON_MEMORY_REGION(p, at);
    ASAN_POISON_MEMORY_REGION((char *)p + at + sizeof(void *),
                              deferred__class_size[c] - at - sizeof(void *));
#endif
    deferred__cache.head[c] = p;
    deferred__cache.n[c]++;
}

/* Put p, a block of class c, on the cache when it has room (no call);
 * false when it has none and p is still the caller's. */
static DEFERRED_ALWAYS_INLINE inline bool deferred__block_push(void *p, unsigned c)
{
    if (DEFERRED_LIKELY(deferred__cache.keyed) && DEFERRED_LIKELY(deferred__cache_on) &&
        DEFERRED_LIKELY(deferred__cache.n[c] < BLOCK_CACHE_MAX)) {
        deferred__block_push_room(p, c);
        return true;
    }
    return false;
}

static DEFERRED_ALWAYS_INLINE inline void deferred__block_free(void *p, unsigned c)
{
    if (!deferred__block_push(p, c))
        deferred__block_free_slow(p, c);
}

/* A chain's heap block of cap entries, made and freed through the cache
 * for the first two sizes. */
static inline struct deferred__link *deferred__spill_alloc(uint32_t cap)
{
    char *b;

    if (cap == SPILL1_LINKS)
        b = deferred__block_alloc(BLOCK_SPILL1);
    else if (cap == SPILL2_LINKS)
        b = deferred__block_alloc(BLOCK_SPILL2);
    else
        b = deferred__malloc(SPILL_SIZE(cap));
    return b ? (struct deferred__link *)(b + KINDS_PAD(cap)) : NULL;
}

static inline void deferred__spill_free(struct deferred__link *links, uint32_t cap)
{
    char *b = (char *)links - KINDS_PAD(cap);

    if (cap == SPILL1_LINKS)
        deferred__block_free(b, BLOCK_SPILL1);
    else if (cap == SPILL2_LINKS)
        deferred__block_free(b, BLOCK_SPILL2);
    else
        deferred__free(b);
}

/* The canceller of a deferred made with one (F_TAIL). */
static inline struct canceller_tail *canceller_of(deferred_t *d)
{
    return (struct canceller_tail *)(d + 1);
}

/* The block of a deferred: the deferred, then its canceller when it has
 * one, then deferred__new_extra()'s bytes, aligned for any type a frame
 * may hold (deferred__extra()). */
#define TAIL_END (sizeof(deferred_t) + sizeof(struct canceller_tail))
#define EXTRA_AT(tail) ((((tail) ? TAIL_END : sizeof(deferred_t)) + 15) & ~(size_t)15)

static inline void *deferred__extra(deferred_t *d)
{
    return (char *)d + EXTRA_AT(d->flags & F_TAIL);
}

/* Call d's canceller if it has one (not disabled); whether it did. */
static inline bool deferred__call_canceller(deferred_t *d)
{
    if (!(d->flags & F_TAIL) || !canceller_of(d)->fn)
        return false;
    canceller_of(d)->fn(d, canceller_of(d)->arg);
    return true;
}


/* A callback argument with destroy functions (the _full calls): both
 * halves of a _full pair point at the same one. */
struct full_arg {
    deferred_fn cb;
    void *cb_arg;
    deferred_destroy_fn cb_destroy;
    deferred_fn eb;
    void *eb_arg;
    deferred_destroy_fn eb_destroy;
};

/* ---- moving words just stored ------------------------------------------ */

/* Keep x in a register.  A value or an entry is stored word by word (from
 * the two registers a call returns it in); loaded soon after as one wider
 * word (the compiler likes to merge the two loads of a copy), the load
 * cannot take its bytes from the two stores still in flight and waits
 * until they reach the cache: a stall of a dozen cycles or more.  Loads
 * kept apart this way take each word from its store. */
#if defined(__GNUC__)
#define DEFERRED__IN_REG(x) __asm__("" : "+r"(x))
#else
#define DEFERRED__IN_REG(x) ((void)0)
#endif

/* *from, moved out word by word; *from keeps the empty value. */
static inline deferred_value_t value_take(deferred_value_t *from)
{
    deferred_value_t v;
    void *ptr = from->ptr;
    void (*release)(void *) = from->release;

    DEFERRED__IN_REG(ptr);
    DEFERRED__IN_REG(release);
    from->ptr = NULL;
    from->release = NULL;
    v.ptr = ptr;
    v.release = release;
    return v;
}

/* n entries, and their kinds (the bytes before them) when kinds says they
 * are kept, copied a word and a byte at a time (entries added just before,
 * a few at most). */
static inline void copy_recent_links(struct deferred__link *to, const struct deferred__link *from,
                                     uint32_t n, bool kinds)
{
    uint32_t i;

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 4
#endif
    for (i = 0; i < n; i++) {
        deferred_fn fn = from[i].fn;
        void *arg = from[i].arg;

        DEFERRED__IN_REG(fn);
        DEFERRED__IN_REG(arg);
        to[i].fn = fn;
        to[i].arg = arg;
    }
    if (kinds)
        memcpy((uint8_t *)to - n, (const uint8_t *)from - n, n);
}

/* ---- named states ------------------------------------------------------ */

/* Multi-fire: its chain is kept and run once per row, it fires by rows
 * and ends by its end deferred (multi.c). */
static inline bool is_multi(const deferred_t *d)
{
    return (d->flags & F_MULTI) != 0;
}

/* The first entry that is still d's: a multi-fire chain keeps all its
 * entries for the next row; a single-shot one only those not reached. */
static inline uint32_t first_live(const deferred_t *d)
{
    return is_multi(d) ? 0 : d->pos;
}

/* Has its result (single-shot) and nothing stops its chain running. */
static inline bool idle_with_result(const deferred_t *d)
{
    return (d->flags & (F_CALLED | F_WAITING | DEFERRED__F_PAUSES)) == F_CALLED;
}

/* chain-to.c: whether from holds want, directly or through others (what a
 * deferred waits on, a combinator's inputs, a stream's end, the deferreds
 * its holding pairs hold and, with targets, its chain_to() targets): 1,
 * 0, or -ENOMEM. */
DEFERRED_HIDDEN int deferred__holds(deferred_t *from, deferred_t *want, bool targets);

/* Whether d holds no other deferred, as deferred__holds() would find by
 * a walk: it waits on none, has no extension (a stream's end, a
 * combinator's inputs), no chain_to() entry (a full entry) and no pair
 * that holds a deferred (a coroutine's await) left.  The walk's first
 * step, without its setup: a link of a chain of waits (each link waited on
 * by the one before, so checked for a cycle) usually waits on a deferred
 * that holds nothing. */
static inline bool holds_nothing(const deferred_t *d)
{
    uint32_t i;

    if (d->chained_to || d->ext)
        return false;
    for (i = first_live(d); i < d->n; i++)
        if (kind_of(d, i) & (LINK_FULL | LINK_HOLDS))
            return false;
    return true;
}

/* Whether a pair on d that holds holder (a coroutine's await: holder is
 * the coroutine's deferred) would close a cycle of holds, which nothing
 * could free: d is holder, or holder holds d.  1, 0, or -ENOMEM. */
static inline int deferred__hold_would_cycle(deferred_t *d, deferred_t *holder)
{
    if (d == holder)
        return 1;
    if (holds_nothing(holder))
        return 0;
    return deferred__holds(holder, d, true);
}

/* deferred_has_result() of a single-shot deferred, in a few loads: fired,
 * not multi-fire, its chain run to the end and not running, nothing
 * stopping it (deferred__take_result(), and the async layer's inline
 * await). */
static inline bool single_result_ready(const deferred_t *d)
{
    return deferred__head_ready((const struct deferred__head *)(const void *)d);
}

/* runner.c: the continue entry's function (recognized by address). */
DEFERRED_HIDDEN deferred_value_t deferred__continue_fn(deferred_value_t v, void *arg);

/* Entry i of inner is the continue entry of outer. */
static inline bool is_continue(const deferred_t *inner, uint32_t i, const deferred_t *outer)
{
    return kind_of(inner, i) == LINK_BOTH && inner->links[i].fn == deferred__continue_fn &&
           inner->links[i].arg == outer;
}

/* core.c: destroy a _full pair's arguments and its block. */
DEFERRED_HIDDEN void deferred__full_arg_destroy(struct full_arg *fa);

/* An entry is done with for good (it ran or was skipped in a single-shot
 * chain, or its deferred is freed): what its argument owns goes.  Plain
 * entries own nothing; only the first half of a pair carries the flags. */
static inline void link_dispose(uint8_t kind, struct deferred__link l)
{
    if (DEFERRED_UNLIKELY(kind & LINK_FULL))
        deferred__full_arg_destroy(l.arg);
    else if (DEFERRED_UNLIKELY(kind & LINK_OWNED))
        ((struct deferred__owned *)l.arg)->dispose(l.arg);
}

/* core.c: report f about d (NULL: no deferred concerned) through the
 * report hook, with d's sites when debug mode recorded them. */
DEFERRED_HIDDEN void deferred__report_about(deferred_report_t kind, const deferred_failure_t *f,
                                            const deferred_t *d);

/* runner.c: run d's chain if it can run; fire a single-shot deferred. */
DEFERRED_HIDDEN void deferred__run(deferred_t *d);
/* runner.c: run row r (taken) through the idle multi-fire deferred d,
 * whose row count multi.c has set, whose entries are all plain callbacks,
 * with nothing queued and the stream not ending nor held back: the
 * callbacks in a row with the value and the entries in registers, and the
 * row retired at once when it ends as a plain value with d not stirred
 * (F_STIR); else the runner takes over where it stopped.  Returns 0
 * (deferred_multi_emit()'s: a tail call). */
DEFERRED_HIDDEN int deferred__run_row(deferred_t *d, deferred_value_t r);
/* The release functions of failures and deferreds, never written: the
 * row's loop and the emit compare with them in memory, which keeps a
 * register (or an instruction) the address would take. */
DEFERRED_HIDDEN extern void (*deferred__row_failure)(void *);
DEFERRED_HIDDEN extern void (*deferred__row_deferred)(void *);
/* Fire d with v (taken), as deferred_callback_at() does (runner.c). */
DEFERRED_HIDDEN int deferred__fire(deferred_t *d, deferred_value_t v,
                                   const char *file, int line);
/* Fire the pending d waiting on next (taken), for a coroutine's captured
 * cancel (core.c). */
DEFERRED_HIDDEN int deferred__fire_waiting(deferred_t *d, deferred_t *next, const char *file,
                                           int line);

/* multi.c: what the core calls for a multi-fire deferred. */
/* Free the multi-fire state (when the deferred is freed). */
DEFERRED_HIDDEN void deferred__multi_free(struct multi *m);
/* After the runner stopped on d: retire a row that went through the whole
 * chain and load the next one; true when a row is ready to run. */
DEFERRED_HIDDEN bool deferred__multi_step(deferred_t *d);
/* Tell the flow hook when d starts or stops taking rows. */
DEFERRED_HIDDEN void deferred__flow_update(deferred_t *d);
/* deferred_cancel() of a multi-fire deferred. */
DEFERRED_HIDDEN int deferred__multi_cancel(deferred_t *d, const char *file,
                                           int line);

#endif /* DEFERRED_CORE_PRIVATE_H */
