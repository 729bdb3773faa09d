/*
 * deferred/value.h: what moves through a chain.
 *
 * A deferred_value_t is a pointer and the function that releases it, passed
 * by value (16 bytes, returned in registers).  A NULL release means the
 * value is borrowed: the library never frees it.  Integers travel in the
 * pointer with a release function of their own that does nothing, so the
 * integer 0 is not the empty value (Twisted tells 0 from None).
 *
 * Ownership moves with the value.  Firing a deferred hands the value to the
 * deferred; a callback receives ownership of its argument and returns
 * ownership of its result; whoever drops a value calls
 * deferred_value_release() on it, exactly once.
 *
 * Three kinds of value travel the same way, told apart by their release
 * function, so no tag is needed:
 *  - a plain value (anything else);
 *  - a failure, made by deferred_value_failure(): a callback that returns
 *    one switches the chain to the error path, and an errback receives its
 *    failure this way;
 *  - a deferred, made by deferred_value_deferred(): a callback that returns
 *    one makes its chain wait for that deferred (chaining).
 */
#ifndef DEFERRED_VALUE_H
#define DEFERRED_VALUE_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct deferred_value {
    void *ptr;
    void (*release)(void *ptr);
} deferred_value_t;

typedef struct deferred deferred_t;
typedef struct deferred_failure deferred_failure_t;

/*
 * The one signature of callbacks and errbacks.  It receives ownership of v
 * and returns ownership of its result: a plain value, a failure
 * (deferred_value_failure()) or a deferred to wait on
 * (deferred_value_deferred()).  An errback receives a failure value; its
 * failure is deferred_value_get_failure(v).  arg is the user data given
 * when the callback was added.
 */
typedef deferred_value_t (*deferred_fn)(deferred_value_t v, void *arg);

/* Destroys a callback's (or canceller's) argument. */
typedef void (*deferred_destroy_fn)(void *arg);

/* The empty value: no pointer, nothing to release. */
static inline deferred_value_t deferred_value_none(void)
{
    deferred_value_t v = {NULL, NULL};
    return v;
}

/* A value owning ptr, which release frees (release may be NULL: borrowed). */
static inline deferred_value_t deferred_value_make(void *ptr,
                                                   void (*release)(void *))
{
    deferred_value_t v;
    v.ptr = ptr;
    v.release = release;
    return v;
}

/* The release function of integer values: it does nothing.  Only its
 * address matters: it tells an integer from other values. */
DEFERRED_EXPORT void deferred_value_int_release(void *ptr);

/* An integer carried in the pointer: no allocation, nothing to release.
 * Never the empty value, 0 included.  deferred_value_get_int() of
 * deferred_value_int(x) is x for every intptr_t x. */
static inline deferred_value_t deferred_value_int(intptr_t x)
{
    deferred_value_t v;
    v.ptr = (void *)x;
    v.release = deferred_value_int_release;
    return v;
}

/* The integer v carries.  For a value that is no integer, its pointer as
 * an integer (0 for the empty value). */
static inline intptr_t deferred_value_get_int(deferred_value_t v)
{
    return (intptr_t)v.ptr;
}

/* True when v is an integer made by deferred_value_int(). */
static inline bool deferred_value_is_int(deferred_value_t v)
{
    return v.release == deferred_value_int_release;
}

/* True when v is the empty value (both fields NULL). */
static inline bool deferred_value_is_none(deferred_value_t v)
{
    return v.ptr == NULL && v.release == NULL;
}

/*
 * Release v: call its release function on its pointer, if it has one.
 * Releasing a failure value drops its reference; releasing a deferred value
 * drops the reference it holds.  Safe on the empty value.
 */
DEFERRED_EXPORT void deferred_value_release(deferred_value_t v);

/*
 * A value holding a failure.  Takes the reference f (NULL is taken as an
 * ENOMEM failure, so a failed constructor can be passed straight in).
 * This is the value convention: a NULL failure means "out of memory",
 * whatever errno says (failure constructors never return NULL).
 */
DEFERRED_EXPORT deferred_value_t deferred_value_failure(deferred_failure_t *f);

/* True when v holds a failure. */
DEFERRED_EXPORT bool deferred_value_is_failure(deferred_value_t v);

/* The release function of a failure value: v holds a failure exactly when
 * v.release is it.  Public so that inline code (the await of
 * deferred/async.h) can tell a failure without a call; release a value
 * with deferred_value_release(), never by calling this. */
DEFERRED_EXPORT void deferred_value_failure_release(void *ptr);

/* The failure held by v (borrowed: v still owns it), or NULL when v is not
 * a failure. */
DEFERRED_EXPORT deferred_failure_t *deferred_value_get_failure(deferred_value_t v);

/* The failure held by v, with v's reference moved to the caller; NULL (and
 * v untouched) when v is not a failure. */
DEFERRED_EXPORT deferred_failure_t *deferred_value_take_failure(deferred_value_t v);

/*
 * A value holding a deferred.  Takes the reference d.  Returned from a
 * callback, it makes the chain wait for d.  NULL d is the NULL of a
 * constructor that failed (deferred/common.h): it gives a failure value
 * (library domain) carrying errno's code, so
 *   return deferred_value_deferred(deferred_ev_later(loop, 1));
 * in a callback fails the chain with EINVAL for a bad argument and ENOMEM
 * when out of memory; errno 0 (or ENOMEM) gives the static ENOMEM failure.
 * Read errno right away: call it straight on the constructor's result.
 */
DEFERRED_EXPORT deferred_value_t deferred_value_deferred(deferred_t *d);

/* True when v holds a deferred. */
DEFERRED_EXPORT bool deferred_value_is_deferred(deferred_value_t v);

/* The release function of a deferred value: v holds a deferred exactly
 * when v.release is it.  Public, as deferred_value_failure_release() is,
 * so that inline code (deferred_add_callback() of deferred/core.h) can
 * tell a deferred without a call; release a value with
 * deferred_value_release(), never by calling this. */
DEFERRED_EXPORT void deferred_value_deferred_release(void *ptr);

/* A copy of s, made through the library's allocator, as a value released
 * with deferred_free().  On allocation failure it returns an ENOMEM failure
 * value, and for NULL s an EINVAL failure value, so the result can be
 * returned from a callback as it is. */
DEFERRED_EXPORT deferred_value_t deferred_value_strdup(const char *s);

/*
 * Arrays of values: what gather, collect and batch deliver.  An array owns
 * its elements; freeing it releases each of them.  As a value it is
 * released with deferred_array_free().
 */
typedef struct deferred_array deferred_array_t;

/* A new empty array with room for capacity elements (it grows as needed).
 * NULL with errno ENOMEM on allocation failure (a capacity too large for
 * memory included). */
DEFERRED_EXPORT deferred_array_t *deferred_array_new(size_t capacity);

/* Free a and release every element it still holds.  NULL is a no-op. */
DEFERRED_EXPORT void deferred_array_free(deferred_array_t *a);

/* Append v (taken).  Returns 0, -EINVAL (NULL a; v released), -ENOMEM (v
 * released, a unchanged). */
DEFERRED_EXPORT int deferred_array_append(deferred_array_t *a, deferred_value_t v);

/* The number of elements (0 for NULL). */
DEFERRED_EXPORT size_t deferred_array_size(const deferred_array_t *a);

/* Element i, borrowed (the array keeps it); the empty value when i is out
 * of range. */
DEFERRED_EXPORT deferred_value_t deferred_array_get(const deferred_array_t *a, size_t i);

/* Element i moved out to the caller; the array keeps the empty value in
 * its place.  The empty value when i is out of range. */
DEFERRED_EXPORT deferred_value_t deferred_array_take(deferred_array_t *a, size_t i);

/* A value owning a (released with deferred_array_free()).  NULL a gives an
 * ENOMEM failure value, so a failed deferred_array_new() can be passed in. */
DEFERRED_EXPORT deferred_value_t deferred_value_array(deferred_array_t *a);

/* The array held by v (borrowed), or NULL when v is not an array value. */
DEFERRED_EXPORT deferred_array_t *deferred_value_get_array(deferred_value_t v);

#ifdef __cplusplus
}
#endif

#endif /* DEFERRED_VALUE_H */
