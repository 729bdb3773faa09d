/*
 * t/headers-main.h: the body of the header compile tests, shared by
 * t/test-headers-c99.c (C99 -pedantic -Werror) and t/test-headers-cxx.cc
 * (C++11 -pedantic -Werror).  It includes the umbrella header after every
 * header was included alone in its own translation unit (t/header-*.c),
 * uses the inline helpers and the macros, and makes a few calls so that
 * the program also links.  Compiling is the test; at run time it returns 0
 * when the few calls behave.
 */
#include <deferred.h> /* alone: the combinators come with it */
#include <stdio.h>
#include "header-alone.h"

static deferred_value_t add_one(deferred_value_t v, void *arg)
{
    (void)arg;
    return deferred_value_int(deferred_value_get_int(v) + 1);
}

static int headers_main(const char *lang)
{
    deferred_value_t none = deferred_value_none();
    deferred_value_t three = deferred_value_int(3);
    deferred_value_t made = deferred_value_make(&none, NULL);
    deferred_failure_t *f;
    deferred_t *d;
    int failures = 0;

    if (!deferred_test_header_common() || !deferred_test_header_value() ||
        !deferred_test_header_failure() || !deferred_test_header_core() ||
        !deferred_test_header_multi() || !deferred_test_header_process() ||
        !deferred_test_header_combinators() || !deferred_test_header_ev() ||
        !deferred_test_header_row() || !deferred_test_header_async() ||
        !deferred_test_header_dump() || !deferred_test_header_loop() ||
        !deferred_test_header_clock() ||
        !deferred_test_header_uv() ||
        !deferred_test_header_glib())
        failures++;
    if (!deferred_value_is_none(none) || deferred_value_is_none(three) ||
        deferred_value_get_int(three) != 3 || made.ptr != (void *)&none)
        failures++;
    deferred_value_release(made);

    f = deferred_failure_new(DEFERRED_DOMAIN_USER, 7, "header test %s", lang);
    if (deferred_failure_code(f) != 7 ||
        !deferred_failure_is(f, DEFERRED_DOMAIN_ANY, 7))
        failures++;
    deferred_failure_unref(f);

    d = deferred_new();
    if (d == NULL ||
        deferred_add_callback(d, add_one, NULL) != 0 ||
        deferred_callback(d, three) != 0 ||
        deferred_value_get_int(deferred_result(d)) != 4)
        failures++;
    deferred_unref(d);

    /* The umbrella header declares the combinators. */
    d = deferred_succeed(deferred_value_int(5));
    {
        deferred_t *in[1];
        deferred_t *g;

        in[0] = d;
        g = deferred_gather(in, 1, 0);
        if (g == NULL || !deferred_has_result(g) ||
            deferred_array_size(deferred_value_get_array(deferred_result(g))) != 1)
            failures++;
        deferred_unref(g);
    }
    deferred_unref(d);

    printf("headers (%s, library %s): %s\n", lang, deferred_version(),
           failures == 0 ? "ok" : "FAILED");
    return failures == 0 ? 0 : 1;
}
