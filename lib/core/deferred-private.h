/*
 * deferred-private.h: what the library's files share and users never see.
 *
 * Every name here is internal (deferred__*) and hidden by
 * -fvisibility=hidden: only functions marked DEFERRED_EXPORT leave the
 * shared library.
 */
#ifndef DEFERRED_PRIVATE_H
#define DEFERRED_PRIVATE_H

/* The core layer's headers only: the layers above include their own, so
 * nothing here sees what is built on it. */
#include "deferred/common.h"
#include "deferred/value.h"
#include "deferred/failure.h"
#include "deferred/core.h"
#include "deferred/multi.h"

#if defined(__GNUC__)
#define DEFERRED_LIKELY(x) __builtin_expect(!!(x), 1)
#define DEFERRED_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define DEFERRED_HIDDEN __attribute__((visibility("hidden")))
#define DEFERRED_NOINLINE __attribute__((noinline))
#define DEFERRED_ALWAYS_INLINE __attribute__((always_inline))
#else
#define DEFERRED_NOINLINE
#define DEFERRED_ALWAYS_INLINE
#define DEFERRED_LIKELY(x) (x)
#define DEFERRED_UNLIKELY(x) (x)
#define DEFERRED_HIDDEN
#endif

/* Ask for d's block (both cache lines of its header and inline entries)
 * to be fetched for writing, for a loop over many deferreds that will
 * touch d a few steps later.  A hint only: any pointer value is safe. */
static inline void deferred__prefetch_deferred(const deferred_t *d)
{
#if defined(__GNUC__)
    __builtin_prefetch(d, 1, 3);
    __builtin_prefetch((const char *)d + 64, 1, 3);
#else
    (void)d;
#endif
}

/* The allocator (alloc.c). */
DEFERRED_HIDDEN void *deferred__malloc(size_t size);
DEFERRED_HIDDEN void *deferred__realloc(void *ptr, size_t size);
DEFERRED_HIDDEN void deferred__free(void *ptr);
DEFERRED_HIDDEN char *deferred__strdup(const char *s);
/* A new string formatted through the allocator; NULL on allocation failure. */
DEFERRED_HIDDEN char *deferred__vasprintf(const char *fmt, va_list ap);

/* Blocks of the sizes every deferred uses, through a per-thread cache
 * (alloc.c): class 0 a deferred with no canceller, 1 and 2 the first two
 * heap blocks of a chain, 3 a deferred with extra bytes (a coroutine and
 * its frame) up to DEFERRED__BLOCK_EXTRA_SIZE bytes in all (core-private.h
 * gives the sizes and the inline fast paths).  A block of class c is
 * freed with deferred__block_free(p, c). */
#define DEFERRED__BLOCK_CLASSES 4
#define DEFERRED__BLOCK_EXTRA_SIZE 512

/* The release functions that mark failure and deferred values (value.c):
 * public (value.h), for inline code of the headers. */
#define deferred__release_failure deferred_value_failure_release
#define deferred__release_deferred deferred_value_deferred_release

/* Release v, inline: integers and borrowed values need no call. */
static inline void deferred__release(deferred_value_t v)
{
    if (v.release && v.release != deferred_value_int_release)
        v.release(v.ptr);
}

/* The static ENOMEM failure every constructor falls back to (failure.c). */
DEFERRED_HIDDEN extern deferred_failure_t deferred__failure_enomem;

/* Add a context frame in front of the others: the process adds frames as
 * a failure travels up from the stage that failed towards the producer,
 * so the first frame stays the one nearest the input (failure.c). */
DEFERRED_HIDDEN int deferred__failure_push_context(deferred_failure_t *f,
                                                   const char *stage,
                                                   const char *item_fmt, ...)
    DEFERRED_PRINTF(3, 4);

/* What a deferred holds references on besides its chain, for the cycle
 * check of deferred_chain_to() (core.c): a combinator's result deferred
 * names its inputs.  fn(arg, visit, ctx) calls visit(input, ctx) for each
 * input it still holds a reference on.  Set once, on a deferred made with
 * a canceller destroy function (so that its rare part exists); returns
 * -EINVAL otherwise.  fn must not run callbacks or change references. */
typedef void (*deferred__visit_fn)(deferred_t *input, void *ctx);
typedef void (*deferred__inputs_fn)(void *arg, deferred__visit_fn visit,
                                    void *ctx);
DEFERRED_HIDDEN int deferred__set_inputs(deferred_t *d, deferred__inputs_fn fn,
                                         void *arg);

/* Make the empty array a hold n empty values (n at most its capacity) and
 * return them, for a combinator that fills them by index (gather.c);
 * NULL when a is not empty or n exceeds its capacity (value.c). */
DEFERRED_HIDDEN deferred_value_t *deferred__array_fill(deferred_array_t *a, size_t n);

/* A pair's argument that is told, through its first member, when the pair
 * is done with it: after the pair ran, or when its deferred is freed with
 * the pair unrun.  No allocation, so an owner can always learn that a pair
 * of its own is gone (the fan-in engine counts its pairs this way). */
struct deferred__owned {
    void (*dispose)(struct deferred__owned *self);
};
/* Append fn as both halves with an owned argument (core.c).  Returns 0,
 * -EINVAL or -ENOMEM (arg->dispose is then not called). */
DEFERRED_HIDDEN int deferred__add_both_owned(deferred_t *d, deferred_fn fn,
                                             struct deferred__owned *arg);

/* An owned argument whose pair holds holds (a reference, dropped by its
 * dispose) until the core is done with it: a coroutine's await holds the
 * coroutine's deferred.  The cycle check follows it, so a pair that would
 * make a deferred hold itself through others can be refused. */
struct deferred__holding {
    struct deferred__owned own; /* first member */
    deferred_t *holds;
};
/* Append fn as both halves with a holding argument (runner.c).  Returns 0,
 * -EINVAL (NULL d, fn, arg or arg->holds) or -ENOMEM (dispose is then not
 * called). */
DEFERRED_HIDDEN int deferred__add_both_holding(deferred_t *d, deferred_fn fn,
                                               struct deferred__holding *arg);

/* A deferred made as deferred_new_at() makes it, with extra bytes of the
 * caller's after it in the same allocation, at deferred__extra(d) (aligned
 * for any type, freed with d): the async layer keeps a coroutine's frame
 * in its deferred, so a call costs one allocation (core.c; deferred__extra()
 * is in core-private.h). */
DEFERRED_HIDDEN deferred_t *deferred__new_extra(size_t extra, const char *file, int line,
                                                deferred_canceller_fn canceller, void *arg,
                                                deferred_destroy_fn destroy);

/* When d (single-shot) has its result (deferred_has_result()), move it to
 * *v, drop a reference on d and return true; else false, nothing done.
 * One call for the async layer's await of a deferred that has fired
 * (core.c). */
DEFERRED_HIDDEN bool deferred__take_result(deferred_t *d, deferred_value_t *v);

/* Report through the hook (core.c). */
DEFERRED_HIDDEN void deferred__report(deferred_report_t kind,
                                      const deferred_failure_t *f);

#endif /* DEFERRED_PRIVATE_H */
