#include <stdio.h>
#include "deferred.h"
#include "deferred/combinators.h"
static int destroyed;
static void destroy(void *a) { (void)a; destroyed++; }
static deferred_value_t fn(deferred_value_t v, void *a) { (void)a; return v; }
int main(void)
{
    deferred_lock_t *l = deferred_lock_new();
    deferred_t *held = deferred_lock_acquire(l);               /* fires: the lock is held */
    deferred_t *run = deferred_lock_run(l, fn, NULL, destroy);  /* waits for the lock */
    deferred_callback(run, deferred_value_of_int(1));           /* the caller fires it while it waits */
    deferred_lock_release(l);                                   /* heap-use-after-free (sync.c) */
    deferred_unref(run);
    deferred_unref(held);
    deferred_lock_unref(l);
    printf("no crash; destroy called %d time(s)\n", destroyed);
    return 0;
}
