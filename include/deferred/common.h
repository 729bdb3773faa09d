/*
 * deferred/common.h: what every layer of libdeferred shares.
 *
 * The export macro, the library's version, the replaceable allocator, the
 * table of library error codes with their names and messages, and the
 * hook through which the library reports what nobody handled.
 *
 * Conventions used by every header of the library:
 *  - An action returns int: 0 on success or a negative errno
 *    (-EINVAL, -ENOMEM, -EALREADY, ...).  A predicate returns bool.
 *  - How a constructor reports failure (one rule for every header):
 *    a function that makes an object (a deferred, a stage, a process, a
 *    semaphore, a row, ...; a failure aside) returns NULL when it cannot,
 *    with errno set: EINVAL for bad arguments, ENOMEM when out of memory,
 *    or another errno its header names.  It never returns an
 *    already-failed deferred for an error detected before it returns, and
 *    the arguments it takes ownership of are released (their destroy
 *    functions called) on every error path.  deferred_value_deferred(NULL)
 *    turns a NULL made that way into a failure value carrying errno's code
 *    (so "return deferred_value_deferred(deferred_ev_later(loop, 1));" in a
 *    callback stays correct).  Failures found after the call returns (a
 *    query's SQL error, a lost connection, a timer cancelled) still arrive
 *    as the deferred's failure.  Exceptions: the failure constructors
 *    (deferred/failure.h) never return NULL but the static ENOMEM failure;
 *    and in the value convention a NULL failure means "out of memory"
 *    (deferred_value_failure(NULL), deferred_fail(NULL) give ENOMEM).
 *  - "Takes" (steals) means the function owns the argument from then on,
 *    also when it fails: on failure it releases what it took.
 *    "Borrowed" means the caller keeps ownership; "new reference" means the
 *    caller must drop it.
 *  - Nothing in the library is thread-safe unless its comment says so: a
 *    deferred and everything reachable from it belong to one thread at a
 *    time (the libev layer is how work crosses threads).
 */
#ifndef DEFERRED_COMMON_H
#define DEFERRED_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>

#if defined(_WIN32)
#define DEFERRED_EXPORT
#elif defined(__GNUC__) && __GNUC__ >= 4
#define DEFERRED_EXPORT __attribute__((visibility("default")))
#else
#define DEFERRED_EXPORT
#endif

#if defined(__GNUC__)
#define DEFERRED_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define DEFERRED_PRINTF(fmt, args)
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define DEFERRED_VERSION_MAJOR 0
#define DEFERRED_VERSION_MINOR 1
#define DEFERRED_VERSION_PATCH 0
#define DEFERRED_VERSION_STRING "0.1.0"

/* The version as one number, 0xMMmmpp (major, minor, patch, a byte each),
 * for comparisons in the preprocessor: 0.1.0 is 0x000100. */
#define DEFERRED_VERSION_NUMBER                                              \
    ((DEFERRED_VERSION_MAJOR << 16) | (DEFERRED_VERSION_MINOR << 8) |        \
     DEFERRED_VERSION_PATCH)

/* True when the headers are at least version major.minor.patch:
 * #if DEFERRED_CHECK_VERSION(0, 2, 0) ... #endif */
#define DEFERRED_CHECK_VERSION(major, minor, patch)                          \
    (DEFERRED_VERSION_NUMBER >= (((major) << 16) | ((minor) << 8) | (patch)))

/* The version of the library actually linked, as "MAJOR.MINOR.PATCH". */
DEFERRED_EXPORT const char *deferred_version(void);

/* The version of the library actually linked, as DEFERRED_VERSION_NUMBER
 * reads for its headers: a program built against newer headers than the
 * library it runs with can tell. */
DEFERRED_EXPORT unsigned long deferred_version_number(void);

/*
 * Codes of the library's own failures, beyond the errno values it also uses
 * (ECANCELED, ETIMEDOUT, EALREADY, ENOMEM, EINVAL, EDEADLK, ...).  They are
 * positive, like errno values, and chosen far above any errno.
 */
#define DEFERRED_EFIRSTERROR 16384 /* an input of a combinator failed */
#define DEFERRED_EGROUP 16385      /* every input of a combinator failed */

/*
 * deferred_strerror() and deferred_err_name() come from one table of the
 * codes the library produces, like libuv's uv_strerror() and
 * uv_err_name(): every code the library itself produces has a name (such
 * as "ECANCELED" or "DEFERRED_EFIRSTERROR") and a message in it.  The code
 * may be given positive (as in a failure) or negative (as returned by an
 * action).  An errno value outside the table (1 to 4095) falls back to
 * the system: its errno name and description where the C library has them
 * (glibc 2.32 and later), else "E<number>" (for example "E4000") and
 * strerror_r()'s text, or "unknown error" when there is none.  Any other
 * code (0, INT_MIN, above 4095 and not the library's) is no errno:
 * "EUNKNOWN" and "unknown error".  Never NULL, and
 * thread-safe: the strings are static, except a fallback "E<number>" name
 * or strerror_r() text, which lives in a per-thread buffer that the same
 * thread's next fallback call overwrites.
 */
DEFERRED_EXPORT const char *deferred_strerror(int code);
DEFERRED_EXPORT const char *deferred_err_name(int code);

/*
 * The allocator.  Every allocation the library makes goes through these
 * three functions, so a program can count, pool or fail them.  Call
 * deferred_set_allocator() before the library allocates anything (or when
 * nothing it allocated is still alive): memory is always released through
 * the free function current at release time.  Passing NULL for all three
 * restores malloc, realloc and free.  Returns 0, or -EINVAL when only some
 * are NULL.  Not thread-safe: set it once at start-up.
 *
 * Every allocation failure surfaces to the caller as -ENOMEM, a NULL
 * constructor result with errno ENOMEM (whatever the allocator left in
 * errno) or an ENOMEM failure; the library never aborts.
 *
 * With the default allocator (only), each thread keeps the freed blocks
 * of the few sizes every deferred uses (a deferred without a canceller,
 * the first two heap blocks of a longer chain, a small coroutine) and
 * hands them out again instead of calling malloc: up to 64 of each size at
 * hand, and behind them a reserve of bundles of 64, so that the blocks of
 * a burst (a gather of 100,000 deferreds, freed together) serve the next
 * burst without malloc.  The reserve holds at most 256 MiB per thread
 * (deferred_set_block_cache_limit()), and no more blocks than the thread
 * itself took past its 64 at hand lately (plus 16 bundles), so that a
 * thread that frees what other threads made keeps little; and it shrinks
 * by itself when the thread stops drawing on it: after each 65,536 moves
 * of a bundle in or out, half of the bundles that stayed in it all that
 * time go back to free().  When a thread exits, its reserve's bundles
 * (and its 64 at hand when it has all 64) go to a depot shared by all
 * threads, which holds at most the same limit in all, and the rest go
 * back to free(); a thread whose cache of a size is empty takes a bundle
 * from the depot before it calls malloc, so that threads that come and go
 * reuse each other's blocks.  All the blocks the calling thread's cache
 * holds, and every block of the depot, go back to free() when
 * deferred_block_cache_trim() or deferred_set_allocator() is called, and
 * at the program's exit.  The cache is off while another allocator is
 * set, so a counting or failing
 * allocator sees every allocation; off under valgrind unless
 * DEFERRED_BLOCK_CACHE is set in the environment (valgrind then sees each
 * use after free); and off with DEFERRED_NO_BLOCK_CACHE set.
 */
typedef void *(*deferred_malloc_fn)(size_t size);
typedef void *(*deferred_realloc_fn)(void *ptr, size_t size);
typedef void (*deferred_free_fn)(void *ptr);

DEFERRED_EXPORT int deferred_set_allocator(deferred_malloc_fn malloc_fn,
                                           deferred_realloc_fn realloc_fn,
                                           deferred_free_fn free_fn);

/*
 * The per-thread block cache (see deferred_set_allocator()).
 *
 * deferred_set_block_cache_limit() sets the most bytes of blocks each
 * thread's reserve may hold (the 64 blocks of each size at hand are not
 * counted), for every thread, and the most the depot holds, and returns
 * the limit it replaces (256 MiB at start).  0 keeps no reserve and no
 * depot: a block freed when 64 of its size are at hand goes to free().
 * A reserve already past a lower limit keeps its bundles until the thread
 * uses them, trims or exits (a depot past it, until they are taken or
 * trimmed).  Thread-safe; it never fails.
 *
 * deferred_block_cache_trim() gives every block the calling thread's
 * cache holds (at hand and in the reserve) and every block of the depot
 * (what exited threads left) back to free(), for a program that knows a
 * burst is over.  Other threads' caches are untouched.
 *
 * deferred_block_cache_size() is the bytes of the blocks the calling
 * thread's cache holds now, at hand and in the reserve: 0 while the cache
 * is off.  Neither function runs a callback.
 */
DEFERRED_EXPORT size_t deferred_set_block_cache_limit(size_t bytes);
DEFERRED_EXPORT void deferred_block_cache_trim(void);
DEFERRED_EXPORT size_t deferred_block_cache_size(void);

/* Allocate and free through the current allocator (for strings the library
 * returns, such as deferred_failure_story_alloc()). deferred_free(NULL) is
 * a no-op. */
DEFERRED_EXPORT void *deferred_malloc(size_t size);
DEFERRED_EXPORT void deferred_free(void *ptr);

#ifdef __cplusplus
}
#endif

#endif /* DEFERRED_COMMON_H */
