/*
 * t/header-row.c: <deferred/row.h> compiles alone, included first and by
 * itself in its translation unit (part of the header compile tests, built
 * as C99 -pedantic and, through t/header-row.cc, as C++11 -pedantic
 * -Werror).  DEFERRED_PARAMS is used as an expression in both: kept in a
 * variable, passed to a function, inside a conditional expression, and
 * DEFERRED_PARAMS_ARGS as the two-argument form.
 */
#include <deferred/row.h>
#include "header-alone.h"

/* A function of the shape of the query functions' _p forms. */
static int params_ok(deferred_params_t ps, size_t n, int64_t first)
{
    return ps.n == n && ps.items != NULL && ps.items[0].type == DEFERRED_ROW_INTEGER &&
           ps.items[0].u.i == first;
}

/* One of the shape of the (params, nparams) forms. */
static int args_ok(const deferred_param_t *params, size_t n, size_t want)
{
    return params != NULL && n == want && params[n - 1].type == DEFERRED_ROW_NULL;
}

int deferred_test_header_row(void)
{
    DEFERRED_TEST_HEADER_ROW_TYPE p = deferred_param_int(7);
    int ok = p.type == DEFERRED_ROW_INTEGER && p.u.i == 7 &&
             deferred_param_null().type == DEFERRED_ROW_NULL;
#ifdef __cplusplus
    /* C++: auto keeps the holder (and its array) alive. */
    auto held = DEFERRED_PARAMS(deferred_param_int(1), deferred_param_double(2.5));
    deferred_params_t ps = held;
#else
    /* C: the compound literal lives until the end of the block. */
    deferred_params_t ps = DEFERRED_PARAMS(deferred_param_int(1), deferred_param_double(2.5));
#endif

    ok = ok && params_ok(ps, 2, 1) && ps.items[1].type == DEFERRED_ROW_DOUBLE &&
         ps.items[1].u.d == 2.5;
    /* Passed straight, as one argument. */
    ok = ok && params_ok(DEFERRED_PARAMS(deferred_param_int(3)), 1, 3);
    ok = ok && params_ok(DEFERRED_PARAMS(p, deferred_param_null(), deferred_param_int(9)), 3, 7);
    /* Where only an expression may stand. */
    ok = ok && params_ok(ok ? DEFERRED_PARAMS(deferred_param_int(4))
                            : DEFERRED_PARAMS(deferred_param_int(5)),
                         1, 4);
    ok = ok && args_ok(DEFERRED_PARAMS_ARGS(deferred_param_int(1), deferred_param_null()), 2);
    return ok;
}
