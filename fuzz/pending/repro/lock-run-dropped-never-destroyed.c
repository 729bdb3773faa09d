#include <stdio.h>
#include "deferred.h"
#include "deferred/combinators.h"
static int destroyed, ran;
static void destroy(void *a) { (void)a; destroyed++; }
static deferred_value_t fn(deferred_value_t v, void *a) { (void)a; ran++; return v; }
int main(void)
{
    deferred_lock_t *l = deferred_lock_new();
    deferred_t *held = deferred_lock_acquire(l);      /* fires at once: the lock is held */
    deferred_t *run = deferred_lock_run(l, fn, NULL, destroy); /* waits for the lock */
    deferred_unref(run);                 /* "a waiting run is safe to drop" */
    deferred_unref(held);
    deferred_lock_unref(l);              /* last reference: waiting acquires fail with ECANCELED */
    printf("fn ran %d, destroy called %d time(s) (expected 1)\n", ran, destroyed);
    return 0;
}
