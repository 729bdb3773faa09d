#include <stdio.h>
#include <stdlib.h>
#include "deferred.h"
static long live;
static void *m(size_t n) { live++; return malloc(n); }
static void *r(void *p, size_t n) { if (!p) live++; return realloc(p, n); }
static void f(void *p) { if (p) live--; free(p); }
static deferred_t *s;
static deferred_value_t wait_on_stream(deferred_value_t v, void *a)
{
    (void)a;
    deferred_value_release(v);
    return deferred_value_deferred(deferred_ref(s)); /* wait for the stream's end: e itself */
}
int main(void)
{
    deferred_t *e;

    deferred_set_allocator(m, r, f);
    s = deferred_new_multi();
    deferred_emit(s, deferred_value_failure(deferred_failure_new(DEFERRED_DOMAIN_USER, EIO, "row")));
    e = deferred_end(s);                 /* failed: the row's failure ended the stream */
    deferred_add_errback(e, wait_on_stream, NULL);
    deferred_unref(s);
    deferred_unref(e);
    printf("blocks alive: %ld (expected 0)\n", live);
    return live != 0;
}
