/*
 * value.c: the by-value result type and its helpers.
 *
 * The design decision to know: a value's release function doubles as its
 * type tag.  A failure value is released by deferred__release_failure and a
 * deferred value by deferred__release_deferred, so telling the three kinds
 * of value apart is one pointer comparison, and the value stays 16 bytes.
 */
#include <string.h>

#include "deferred-private.h"

void deferred__release_failure(void *ptr)
{
    deferred_failure_unref(ptr);
}

void deferred__release_deferred(void *ptr)
{
    deferred_unref(ptr);
}

void deferred_value_release(deferred_value_t v)
{
    if (v.release)
        v.release(v.ptr);
}

deferred_value_t deferred_value_failure(deferred_failure_t *f)
{
    deferred_value_t v;

    v.ptr = f ? f : &deferred__failure_enomem;
    v.release = deferred__release_failure;
    return v;
}

bool deferred_value_is_failure(deferred_value_t v)
{
    return v.release == deferred__release_failure;
}

deferred_failure_t *deferred_value_get_failure(deferred_value_t v)
{
    return v.release == deferred__release_failure ? v.ptr : NULL;
}

deferred_failure_t *deferred_value_take_failure(deferred_value_t v)
{
    return deferred_value_get_failure(v);
}

deferred_value_t deferred_value_deferred(deferred_t *d)
{
    deferred_value_t v;

    if (!d)
        return deferred_value_failure(NULL);
    v.ptr = d;
    v.release = deferred__release_deferred;
    return v;
}

bool deferred_value_is_deferred(deferred_value_t v)
{
    return v.release == deferred__release_deferred;
}

deferred_value_t deferred_value_strdup(const char *s)
{
    char *copy;

    if (!s)
        return deferred_value_failure(deferred_failure_new(
            DEFERRED_DOMAIN_LIBRARY, EINVAL, "deferred_value_strdup: NULL string"));
    copy = deferred__strdup(s);
    if (!copy)
        return deferred_value_failure(NULL);
    return deferred_value_make(copy, deferred_free);
}
