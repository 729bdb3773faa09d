#include <stdio.h>
#include "deferred.h"
#include "deferred/combinators.h"
int main(void)
{
    deferred_t *r0, *m1, *r2, *m3, *in[3];

    r0 = deferred_race(NULL, 0);            /* fails at once: empty failure group */
    in[0] = in[1] = r0;
    m1 = deferred_merge(in, 2);             /* returned paused; left paused */
    in[0] = m1; in[1] = r0;
    r2 = deferred_race(in, 2);
    deferred_unref(r0);
    in[0] = m1; in[1] = r2; in[2] = m1;
    m3 = deferred_merge(in, 3);             /* paused too */
    deferred_unref(r2);
    deferred_unref(m1);
    deferred_unref(m3);                     /* heap-use-after-free in deferred_unref */
    puts("no crash");
    return 0;
}
