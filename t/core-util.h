/*
 * core-util.h: the small helpers the core's tests (t/test-core-*.c) share
 * besides t/testutil.h.
 */
#ifndef CORE_UTIL_H
#define CORE_UTIL_H

#include "testutil.h"

static inline intptr_t result_int(deferred_t *d)
{
    deferred_value_t v = deferred_result(d);
    ck_assert(!deferred_value_is_failure(v));
    return deferred_value_get_int(v);
}

/* Take d's failure result, check its code, drop it. */
static inline void take_failure_code(deferred_t *d, int code)
{
    deferred_value_t v = deferred_result_take(d);
    ck_assert(deferred_value_is_failure(v));
    ck_assert_int_eq(deferred_failure_code(deferred_value_get_failure(v)), code);
    deferred_value_release(v);
}

static inline const struct tu_entry *find_tag(int tag)
{
    int i;
    for (i = 0; i < tu_log.n && i < TU_MAX_LOG; i++)
        if (tu_log.e[i].tag == tag)
            return &tu_log.e[i];
    ck_abort_msg("no record with tag %d", tag);
    return NULL;
}

static inline deferred_failure_t *user_failure(int code)
{
    return deferred_failure_new(DEFERRED_DOMAIN_USER, code, "user failure %d",
                                code);
}

#endif /* CORE_UTIL_H */
