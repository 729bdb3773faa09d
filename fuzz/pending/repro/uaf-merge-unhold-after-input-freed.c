#include <stdio.h>
#include "deferred.h"
#include "deferred/combinators.h"
/* The multi-fire input's flow hook cancels it when it is told to pause. */
static void flow(deferred_t *d, bool paused, void *arg)
{
    (void)arg;
    if (paused)
        deferred_cancel(d);
}
int main(void)
{
    deferred_t *m = deferred_new_multi(), *f, *s, *in[3];

    deferred_set_flow(m, flow, NULL);
    f = deferred_fail(deferred_failure_new(DEFERRED_DOMAIN_USER, EIO, "failed input"));
    in[0] = m; in[1] = f; in[2] = m;
    s = deferred_merge(in, 3);      /* returned paused, left paused */
    deferred_unref(f);
    deferred_emit(m, deferred_value_failure(deferred_failure_new(DEFERRED_DOMAIN_USER, EIO, "row")));
    deferred_unref(m);              /* frees m */
    deferred_unref(s);              /* heap-use-after-free: merge.c unhold() refs the freed m */
    puts("no crash");
    return 0;
}
