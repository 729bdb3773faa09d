#include <stdio.h>
#include <stdlib.h>
#include "deferred.h"
static deferred_t *d0, *d1;
static deferred_value_t ret_d1(deferred_value_t v, void *a) { (void)a; deferred_value_release(v); return deferred_value_deferred(deferred_ref(d1)); }
static deferred_value_t ret_d0(deferred_value_t v, void *a) { (void)a; deferred_value_release(v); return deferred_value_deferred(deferred_ref(d0)); }
static long live;
static void *m(size_t n) { live++; return malloc(n); }
static void *r(void *p, size_t n) { if (!p) live++; return realloc(p, n); }
static void f(void *p) { if (p) live--; free(p); }
int main(void)
{
    deferred_set_allocator(m, r, f);
    d0 = deferred_new();
    d1 = deferred_new();
    deferred_add_callback(d0, ret_d1, NULL);
    deferred_add_callback(d1, ret_d0, NULL);
    deferred_callback(d0, deferred_value_of_int(1));   /* d0 waits on d1 */
    deferred_callback(d1, deferred_value_of_int(2));   /* d1's callback returns d0, which waits on d1 */
    printf("d1 result is failure %d (code %d), d0 paused %d\n", deferred_value_is_failure(deferred_result(d1)),
           deferred_failure_code(deferred_value_get_failure(deferred_result(d1))), deferred_is_paused(d0));
    deferred_unref(d0);
    deferred_unref(d1);
    printf("blocks alive after dropping both: %ld (expected 0)\n", live);
    return 0;
}
