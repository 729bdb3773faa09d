/*
 * deferred/core.h: deferred_t, a Twisted-style deferred result.
 *
 * A deferred holds a chain of callback/errback pairs and, once fired, a
 * result that runs down the chain: each pair sees the result, exactly one
 * of its halves runs (the callback on a value, the errback on a failure),
 * and what that half returns becomes the next result.  A half that returns
 * a failure switches to the error path; an errback that returns a plain
 * value switches back.  A half that returns a deferred makes the chain
 * wait for it (chaining) and continue with its result.
 *
 * Running never nests: a callback added while the chain runs is appended
 * and runs in the same pass, after the current one returns; chains of any
 * depth (a million deferreds each waiting on the next) run, cancel and free
 * in constant stack.  A callback that fires, unpauses or cancels another
 * deferred runs that one's chain nested, as Twisted does, up to 32 levels
 * of such nesting on a thread; deeper than that, the work is queued and
 * done, in order, as soon as the runner at the limit has run its own
 * chain (before the call that started that runner returns), so chains of
 * chain_to() links, locks handed from waiter to waiter and gathers of
 * gathers of any depth also run in bounded stack.
 *
 * Ownership: deferred_new() returns a deferred with one reference, the
 * caller's.  Each reference is dropped with deferred_unref().  A deferred
 * never owns itself; an outer deferred waiting on an inner one holds a
 * reference on it, never the reverse.  Dropping a reference from inside a
 * callback is safe: the chain keeps the deferred alive until it returns.
 *
 * Threads: a deferred belongs to one thread at a time; nothing here locks.
 * (The libev layer offers deferreds that any thread may fire.)
 *
 * Callbacks run synchronously: any function below that fires, unpauses or
 * adds to a fired deferred may run callbacks before it returns, as noted.
 */
#ifndef DEFERRED_CORE_H
#define DEFERRED_CORE_H

#include "failure.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The first fields of every deferred, in this order.  They are public only
 * so that the inline fast paths of these headers can tell in a few loads
 * whether a deferred has its result, and take it (the await of
 * deferred/async.h), or append an entry to a pending deferred's chain
 * (deferred_add_callback() and its kin below, when the entry fits in the
 * chain's block, or run a callback added to a fired idle deferred at
 * once).  They are the library's own: a program must not
 * read or write them, and their meaning may change with the library's
 * soname.  A deferred has its result, ready to take, when its flags hold
 * DEFERRED__F_CALLED but neither DEFERRED__F_RUNNING nor
 * DEFERRED__F_MULTI nor DEFERRED__F_WAITING (it waits on the deferred
 * chained_to) nor DEFERRED__F_DYING (being freed: its result is being
 * released) nor a pause count (DEFERRED__F_PAUSES), and its chain has run
 * to its end (pos == n).
 */
struct deferred_ext;
#define DEFERRED__HEAD_FIELDS                                                \
    deferred_value_t result;     /* while waiting, its entry's place there */ \
    deferred_t *chained_to;      /* the deferred it waits on */              \
    struct deferred__link *links; /* cap entries, their kinds before them */ \
    deferred_t *next;            /* runner stack, later queue, free list */  \
    struct deferred_ext *ext;    /* the rarely needed parts */               \
    uint32_t refs;               /* references; 0 while it is freed */       \
    uint32_t flags;              /* F_* of lib/core/core-private.h; above   \
                                    bit 16, the user's pause count */        \
    uint32_t pos;                /* the next entry to run */                 \
    uint32_t n;                  /* entries in use */                        \
    uint32_t cap;                /* entries that fit in links */
/* A chain entry: its kind (DEFERRED__LINK_*) is the byte i + 1 bytes
 * before entry i (the kinds run backwards from the entries). */
struct deferred__link {
    deferred_fn fn;
    void *arg;
};
struct deferred__head {
    DEFERRED__HEAD_FIELDS
};
#define DEFERRED__F_CALLED 0x01u  /* fired */
#define DEFERRED__F_RUNNING 0x02u /* its chain runs */
#define DEFERRED__F_MULTI 0x10u   /* multi-fire */
#define DEFERRED__F_LATER_RUN 0x40u /* queued to run once nested runners unwind */
#define DEFERRED__F_WAITING 0x4000u /* it waits on another (chained_to is set) */
#define DEFERRED__F_DYING 0x8000u   /* its last reference went: being freed */
#define DEFERRED__F_KINDS 0x10000u  /* an entry other than a plain callback is in
                                       the chain: the kind bytes are kept (without
                                       it every entry is a plain callback, the
                                       bytes unwritten) */
#define DEFERRED__F_PAUSES 0xfffe0000u /* the pause count, in the flags' top bits */
/* What keeps a fired deferred from having its result ready (see above). */
#define DEFERRED__F_NOT_READY                                                 \
    (DEFERRED__F_RUNNING | DEFERRED__F_MULTI | DEFERRED__F_WAITING | DEFERRED__F_DYING | \
     DEFERRED__F_PAUSES)
/* The kinds of the entries a callback, an errback and a both add. */
#define DEFERRED__LINK_CB 1u
#define DEFERRED__LINK_EB 2u
#define DEFERRED__LINK_BOTH 3u

#if defined(__GNUC__)
#define DEFERRED__LIKELY(x) __builtin_expect(!!(x), 1)
#else
#define DEFERRED__LIKELY(x) (x)
#endif

/* Whether the deferred of head h has its result, ready to take (see
 * above): the one test of the library and of the headers' inline code. */
static inline int deferred__head_ready(const struct deferred__head *h)
{
    return (h->flags & (DEFERRED__F_CALLED | DEFERRED__F_NOT_READY)) == DEFERRED__F_CALLED &&
           h->pos == h->n;
}

/*
 * A canceller runs when an unfired deferred is cancelled (at most once). It
 * may fire d; if it does not, d then fails with ECANCELED.  d is borrowed.
 */
typedef void (*deferred_canceller_fn)(deferred_t *d, void *arg);

/*
 * Make an unfired deferred, with one reference.  NULL on allocation
 * failure.  In debug mode the caller's file and line are recorded.
 */
#define deferred_new() deferred_new_at(__FILE__, __LINE__, NULL, NULL, NULL)

/*
 * Make an unfired deferred with a canceller.  arg is given to the
 * canceller; destroy (may be NULL) is called on arg exactly once, when the
 * deferred is freed, whether or not the canceller ran.  On allocation
 * failure it returns NULL with errno ENOMEM and has called destroy(arg)
 * already.
 */
#define deferred_new_cancellable(canceller, arg, destroy) \
    deferred_new_at(__FILE__, __LINE__, (canceller), (arg), (destroy))

DEFERRED_EXPORT deferred_t *deferred_new_at(const char *file, int line,
                                            deferred_canceller_fn canceller,
                                            void *arg, deferred_destroy_fn destroy);

/* A deferred already fired with v (taken) / failed with f (taken): Twisted's
 * succeed() and fail().  NULL with errno ENOMEM on allocation failure, and
 * deferred_succeed() of a deferred value (a deferred cannot be a result)
 * is NULL with errno EINVAL; v or f is released on both.
 * deferred_fail(NULL) is a deferred failed with ENOMEM (the value
 * convention: a NULL failure means "out of memory"). */
DEFERRED_EXPORT deferred_t *deferred_succeed(deferred_value_t v);
DEFERRED_EXPORT deferred_t *deferred_fail(deferred_failure_t *f);

/* Add a reference; returns d.  NULL gives NULL. */
DEFERRED_EXPORT deferred_t *deferred_ref(deferred_t *d);

/*
 * Drop a reference.  The last one frees d: its result is released (if it
 * is a failure, the report hook is told it was never handled), callbacks
 * that never ran have their arguments destroyed, and a deferred d was
 * waiting on loses d's reference.  Freeing a long chain never recurses.
 * NULL is a no-op.  No callback of d runs (argument destroy functions and
 * the release functions of values may).
 */
DEFERRED_EXPORT void deferred_unref(deferred_t *d);

/*
 * Append a callback/errback pair.  Either half may be NULL: the result
 * then passes through that half unchanged.  Exactly one half runs.
 * cb_arg and eb_arg are given to their half.  If d has fired and is not
 * paused or waiting, the chain runs before this returns (in the running
 * pass, if called from inside a callback of d).
 * Returns 0, -EINVAL when d is NULL or both halves are NULL, -ENOMEM.
 */
DEFERRED_EXPORT int deferred_add_callbacks(deferred_t *d, deferred_fn cb,
                                           void *cb_arg, deferred_fn eb,
                                           void *eb_arg);
DEFERRED_EXPORT int deferred_add_callback(deferred_t *d, deferred_fn cb, void *arg);
DEFERRED_EXPORT int deferred_add_errback(deferred_t *d, deferred_fn eb, void *arg);
/* fn is both halves with one argument: it sees values and failures. */
DEFERRED_EXPORT int deferred_add_both(deferred_t *d, deferred_fn fn, void *arg);

/*
 * The end of a callback's run that deferred_add_callback()'s inline code
 * (below) began on a fired idle deferred d, when more is to do than to
 * store r: r (the callback's result, taken) becomes d's result, or d waits
 * on the deferred r holds; d stops running; entries the callback added
 * run; the run's reference on d is dropped (which may free d).  For the
 * inline code of this header only: a program never calls it.  A NULL d
 * releases r and does nothing else.
 */
DEFERRED_EXPORT void deferred_ran_at_once(deferred_t *d, deferred_value_t r);

/*
 * A callback (kind DEFERRED__LINK_CB, _EB or _BOTH) added to a fired
 * single-shot deferred that is idle (not running, not queued to run, not
 * paused, not being freed, waiting on nothing, its chain run to its end)
 * runs at once, as
 * the library's function would run it: skipped when its kind does not
 * take the result (the result stays), else called on the result, d
 * holding a reference and flagged running meanwhile (so entries added to
 * d from the callback wait their turn).  When the callback returns a
 * deferred or made any call on d that changed its flags word (an entry
 * added, a pause, a wait), deferred_ran_at_once() finishes the run.
 * Returns 1 when done, 0 when d is not in that state (nothing done: the
 * function does it).
 */
static inline int deferred__run_inline(struct deferred__head *h, deferred_fn fn, void *arg,
                                       unsigned kind, uint32_t flags)
{
    deferred_value_t r;

    /* Ready (deferred__head_ready()), and not queued to run. */
    if ((flags & (DEFERRED__F_CALLED | DEFERRED__F_NOT_READY | DEFERRED__F_LATER_RUN)) !=
            DEFERRED__F_CALLED ||
        h->pos != h->n)
        return 0;
    r = h->result;
    if (kind != DEFERRED__LINK_BOTH &&
        (r.release == deferred_value_failure_release) != (kind == DEFERRED__LINK_EB))
        return 1; /* skipped, as the runner skips it */
    h->refs++;
    h->flags = flags | DEFERRED__F_RUNNING;
    h->result.ptr = NULL;
    h->result.release = NULL;
    r = fn(r, arg);
    /* Any call on d from the callback (an entry added, a pause, a wait)
     * changes its flags word: the library finishes the run then. */
    if (r.release == deferred_value_deferred_release ||
        h->flags != (flags | DEFERRED__F_RUNNING)) {
        deferred_ran_at_once((deferred_t *)(void *)h, r);
        return 1;
    }
    h->result = r;
    h->flags = flags;
    if (!DEFERRED__LIKELY(--h->refs != 0)) {
        h->refs = 1;
        deferred_unref((deferred_t *)(void *)h); /* the callback let it go */
    }
    return 1;
}

/*
 * The three calls above are macros over the inline functions below: an
 * entry added to a pending single-shot deferred whose chain has room is
 * stored in a few instructions, and one added to a fired idle deferred
 * runs (deferred__run_inline()), without a call into the library; every
 * other case calls the function (which the parenthesized name,
 * (deferred_add_callback), and a pointer to it also reach).  The
 * arguments are evaluated once.
 */
static inline int deferred__add_inline(deferred_t *d, deferred_fn fn, void *arg,
                                       unsigned kind)
{
    struct deferred__head *h = (struct deferred__head *)(void *)d;
    uint32_t n, flags;

    if (!h || !fn)
        return 0;
    flags = h->flags;
#if defined(__GNUC__)
    /* A whole-word load: the byte the compiler would test instead, read
     * right after the library stored the word (a callback just run on a
     * fired deferred), measured about 10% slower on chain10-after. */
    __asm__("" : "+r"(flags));
#endif
    /* A plain callback is stored inline on a chain of plain callbacks
     * only (it writes no kind byte); another kind on a chain that keeps
     * its kinds only (the library writes the bytes of the plain callbacks
     * before it when the first other kind comes). */
    /* (A pending chain that keeps its kinds, for a plain callback: the
     * inline run declines it too, and the function stores it.) */
    if (flags & (DEFERRED__F_CALLED | DEFERRED__F_MULTI |
                 (kind == DEFERRED__LINK_CB ? DEFERRED__F_KINDS : 0)))
        return deferred__run_inline(h, fn, arg, kind, flags);
    n = h->n;
    /* The first entry of an empty chain has no plain callbacks before it
     * to write the kinds of. */
    if (kind != DEFERRED__LINK_CB && !(flags & DEFERRED__F_KINDS)) {
        if (n != 0)
            return 0;
        h->flags = flags | DEFERRED__F_KINDS;
    }
    if (!DEFERRED__LIKELY(n != h->cap))
        return 0;
    h->links[n].fn = fn;
    h->links[n].arg = arg;
    if (kind != DEFERRED__LINK_CB)
        ((unsigned char *)h->links)[-1 - (long)n] = (unsigned char)kind;
    h->n = n + 1;
    return 1;
}

static inline int deferred__add_callback_inline(deferred_t *d, deferred_fn cb, void *arg)
{
    return deferred__add_inline(d, cb, arg, DEFERRED__LINK_CB) ? 0
                                                               : (deferred_add_callback)(d, cb, arg);
}

static inline int deferred__add_errback_inline(deferred_t *d, deferred_fn eb, void *arg)
{
    return deferred__add_inline(d, eb, arg, DEFERRED__LINK_EB) ? 0
                                                               : (deferred_add_errback)(d, eb, arg);
}

static inline int deferred__add_both_inline(deferred_t *d, deferred_fn fn, void *arg)
{
    return deferred__add_inline(d, fn, arg, DEFERRED__LINK_BOTH) ? 0
                                                                 : (deferred_add_both)(d, fn, arg);
}

#define deferred_add_callback(d, cb, arg) deferred__add_callback_inline((d), (cb), (arg))
#define deferred_add_errback(d, eb, arg) deferred__add_errback_inline((d), (eb), (arg))
#define deferred_add_both(d, fn, arg) deferred__add_both_inline((d), (fn), (arg))

/*
 * The same with destroy functions (GLib's _full convention): cb_destroy is
 * called on cb_arg and eb_destroy on eb_arg exactly once, after the half
 * ran, when the pair was skipped, or when d is freed with the pair never
 * reached.  When both halves share one argument and one destroy function,
 * it is called once.  On error (-EINVAL, -ENOMEM) the destroy functions
 * have been called before this returns and no half will ever run.
 */
DEFERRED_EXPORT int deferred_add_callbacks_full(deferred_t *d, deferred_fn cb,
                                                void *cb_arg,
                                                deferred_destroy_fn cb_destroy,
                                                deferred_fn eb, void *eb_arg,
                                                deferred_destroy_fn eb_destroy);
DEFERRED_EXPORT int deferred_add_callback_full(deferred_t *d, deferred_fn cb,
                                               void *arg,
                                               deferred_destroy_fn destroy);
DEFERRED_EXPORT int deferred_add_errback_full(deferred_t *d, deferred_fn eb,
                                              void *arg,
                                              deferred_destroy_fn destroy);
DEFERRED_EXPORT int deferred_add_both_full(deferred_t *d, deferred_fn fn,
                                           void *arg, deferred_destroy_fn destroy);

/*
 * Make target follow d: d's result at this point of its chain fires target
 * (Twisted's chainDeferred); d's chain continues with an empty value.  If
 * target has fired by then, d's value is released and d's chain continues
 * with an EALREADY failure instead (Twisted's AlreadyCalledError), which an
 * errback can handle and which is reported if nothing does.
 * Borrows both; d holds a reference on target until then.
 * Returns 0, -EINVAL (NULL, or target == d), -EDEADLK when target already
 * holds d (waits on it, directly or through other waits, combinators or
 * chain_to() links), a cycle nothing could free; -ENOMEM.  Nothing is
 * added on error.  No callback runs before it returns unless d has fired.
 */
DEFERRED_EXPORT int deferred_chain_to(deferred_t *d, deferred_t *target);

/*
 * Fire d with the value v (taken).  A failure value fires the error path.
 * The chain runs before this returns, unless d is paused.
 * Returns:
 *  0          fired (or, once after a cancel without canceller, swallowed);
 *  -EALREADY  d had fired; v is released, d is unchanged.  In debug mode
 *             the report hook also gets a failure whose message names d's
 *             creation site, its first fire site and this one;
 *  -EINVAL    d is NULL, or v holds a deferred (a deferred is not a
 *             result); v is released.
 */
#define deferred_callback(d, v) deferred_callback_at((d), (v), __FILE__, __LINE__)
DEFERRED_EXPORT int deferred_callback_at(deferred_t *d, deferred_value_t v,
                                         const char *file, int line);

/* Fire d with the failure f (taken).  As deferred_callback(); NULL f is
 * -EINVAL (and d is not fired). */
#define deferred_errback(d, f) deferred_errback_at((d), (f), __FILE__, __LINE__)
DEFERRED_EXPORT int deferred_errback_at(deferred_t *d, deferred_failure_t *f,
                                        const char *file, int line);

/*
 * Pause: nothing in d's chain runs while the pause count is above zero.
 * Unpause lowers it; at zero a fired chain resumes before this returns.
 * Unpausing at zero is -EINVAL (a Twisted wart fixed: it was silently
 * allowed).  Waiting on a chained deferred is kept apart from this count,
 * so a stray unpause can never release a chain that still waits.
 * Pauses nest up to 32,767 deep; a pause past that is -EINVAL and changes
 * nothing.  Both return 0 or -EINVAL (NULL d, or the limits above).
 */
DEFERRED_EXPORT int deferred_pause(deferred_t *d);
DEFERRED_EXPORT int deferred_unpause(deferred_t *d);

/* True when d will not run now: paused (its pause count is above zero) or
 * waiting on a chained deferred.  False for NULL. */
DEFERRED_EXPORT bool deferred_is_paused(const deferred_t *d);

/* d's pause count (Twisted's paused): pauses not yet unpaused.  Waiting on
 * a chained deferred does not count.  0 for NULL. */
DEFERRED_EXPORT unsigned deferred_pause_count(const deferred_t *d);

/* True when d waits on a chained deferred: a callback of d returned a
 * deferred that had no result yet. */
DEFERRED_EXPORT bool deferred_is_waiting(const deferred_t *d);

/* The deferred d waits on (borrowed: valid while d waits), or NULL. */
DEFERRED_EXPORT deferred_t *deferred_waits_on(const deferred_t *d);

/*
 * Call fn(v, arg) now and make what it returns a deferred (Twisted's
 * maybeDeferred): a plain value gives a deferred fired with it, a failure
 * a deferred failed with it, a deferred that deferred itself.  v is taken
 * by fn, as by a callback.  fn runs before this returns.  NULL with errno
 * EINVAL (NULL fn; v is released) or ENOMEM (what fn returned is
 * released).
 */
DEFERRED_EXPORT deferred_t *deferred_maybe(deferred_fn fn, deferred_value_t v,
                                           void *arg);

/*
 * Cancel d.
 *  - Unfired: its canceller runs (once, ever); if d is still unfired after
 *    it, d fails with ECANCELED.  Without a canceller, d fails with
 *    ECANCELED and exactly one later fire is swallowed (returns 0 and
 *    releases its value); with one, a later fire is -EALREADY.
 *  - Fired and waiting on a chained deferred: the cancel goes to the
 *    innermost deferred of the chain of waits (found without recursion).
 *  - Fired with a result: nothing.
 * Idempotent.  Callbacks (the canceller, then d's chain) may run before it
 * returns.  Returns 0 or -EINVAL (NULL d).
 */
DEFERRED_EXPORT int deferred_cancel(deferred_t *d);

/* deferred_cancel() recording the caller's site in debug mode (as the
 * first fire site, when the cancel fires d).  deferred_cancel() itself is
 * a real function too: (deferred_cancel)(d), or its address. */
DEFERRED_EXPORT int deferred_cancel_at(deferred_t *d, const char *file, int line);
#define deferred_cancel(d) deferred_cancel_at((d), __FILE__, __LINE__)

/* True once d was fired (by a callback, an errback or a cancel). */
DEFERRED_EXPORT bool deferred_has_fired(const deferred_t *d);

/* True when d has fired and its chain has run as far as it can: no pause,
 * no wait, no pending callback, no callback of it running.  Its result is
 * then final until a callback is added.  False while d is being freed
 * (reached from the release of its own result, say). */
DEFERRED_EXPORT bool deferred_has_result(const deferred_t *d);

/*
 * d's current result, borrowed (d keeps it): the empty value while d is
 * unfired or waiting.  Use deferred_value_get_failure() on it to see a
 * failure.  The empty value too while d is being freed (its result is
 * being released then).
 */
DEFERRED_EXPORT deferred_value_t deferred_result(const deferred_t *d);

/*
 * Take d's current result: it moves to the caller, d keeps the empty
 * value.  Taking a failure counts as handling it (it will not be reported
 * as unhandled).  The empty value while d is unfired, waiting, being
 * freed or NULL.
 */
DEFERRED_EXPORT deferred_value_t deferred_result_take(deferred_t *d);

/*
 * What the library reports through the report hook:
 *  DEFERRED_REPORT_UNHANDLED      a deferred was freed holding a failure
 *                                 that nothing handled;
 *  DEFERRED_REPORT_ALREADY_FIRED  (debug mode) a deferred was fired twice;
 *                                 the failure's message names the sites.
 * The hook gets a report, borrowed for the call: the failure, and in debug
 * mode the deferred's creation site and first fire site (Twisted's debug
 * info); without debug mode the sites are NULL and 0.  The default hook
 * writes one line to stderr, naming the sites when it has them.
 * deferred_set_report_hook(NULL, NULL) restores the default.  Global, not
 * thread-safe: set it at start-up.
 */
typedef enum deferred_report {
    DEFERRED_REPORT_UNHANDLED = 1,
    DEFERRED_REPORT_ALREADY_FIRED = 2
} deferred_report_t;

typedef struct deferred_report_info {
    deferred_report_t kind;
    const deferred_failure_t *failure;
    const char *new_file; /* where the deferred was made, or NULL */
    int new_line;
    const char *fire_file; /* where it was first fired, or NULL */
    int fire_line;
} deferred_report_info_t;

typedef void (*deferred_report_fn)(const deferred_report_info_t *report,
                                   void *arg);

DEFERRED_EXPORT void deferred_set_report_hook(deferred_report_fn hook, void *arg);

/*
 * Debug mode, a runtime switch (off by default, or on when the environment
 * variable DEFERRED_DEBUG is set to a nonzero value when the library is
 * loaded).  When on, deferreds made from then on record their creation
 * site and first fire site, and a double fire reports both.  When off the
 * sites passed by the macros are ignored: it costs nothing.
 */
DEFERRED_EXPORT void deferred_set_debug(bool on);
DEFERRED_EXPORT bool deferred_get_debug(void);

#ifdef __cplusplus
}
#endif

#endif /* DEFERRED_CORE_H */
