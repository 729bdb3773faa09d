/* Two producers (an empty array, a synchronous user producer of 2 items)
 * -> a user processor (AUTOPAUSE; on its first item it pauses and
 * resumes upstream; passes items on; its finish replaces the outcome by a
 * new value) -> map (first item: waits on a deferred P) -> map -> map ->
 * collect.  Cancel the process, drop everything: a value leaks. */
#include <stdio.h>
#include <stdlib.h>
#include "deferred.h"
static int made, released;
static void rel(void *p) { (void)p; released++; }
static deferred_value_t val(void) { made++; return deferred_value_make(&made, rel); }
static deferred_t *P;
static int left = 2;

static void prod_resume(deferred_stage_t *self, deferred_stage_t *by)
{
    (void)by;
    while (left > 0 && !deferred_stage_is_paused(self)) {
        left--;
        if (deferred_stage_emit(self, left & 1 ? val() : deferred_value_of_int(left)) != 0)
            break;
    }
}
static void prod_cancel(deferred_stage_t *self, deferred_stage_t *by) { (void)self; (void)by; }
static const deferred_stage_ops_t prod_ops = { .name = "producer", .resume = prod_resume, .cancel = prod_cancel };

static unsigned items;
static deferred_failure_t *proc_handle(deferred_stage_t *self, deferred_stage_t *from,
                                       deferred_value_t tag, deferred_value_t *item)
{
    deferred_value_t v = *item;
    (void)from;
    if (++items == 1 && deferred_stage_pause(self) == 0)
        deferred_stage_resume(self);
    *item = deferred_value_none();
    deferred_stage_emit_tagged(self, tag, v);
    return NULL;
}
static deferred_value_t proc_finish(deferred_stage_t *self, deferred_stage_t *from,
                                    deferred_value_t tag, deferred_value_t outcome)
{
    (void)self; (void)from; (void)tag;
    deferred_value_release(outcome);
    return val();
}
static void proc_resume(deferred_stage_t *self, deferred_stage_t *by) { (void)self; (void)by; }
static const deferred_stage_ops_t proc_ops = { .name = "processor", .resume = proc_resume,
                                               .handle = proc_handle, .finish = proc_finish };

static unsigned calls1, calls2, calls3;
static deferred_value_t map1(deferred_value_t v, void *a)
{
    (void)a;
    if (++calls1 == 1) {
        deferred_value_release(v);
        P = deferred_new();
        return deferred_value_deferred(deferred_ref(P));
    }
    return deferred_value_deferred(deferred_succeed(v));
}
static deferred_value_t map23(deferred_value_t v, void *a)
{
    unsigned *calls = a;
    deferred_value_release(v);
    if (++*calls == 1)
        return val();
    return deferred_value_failure(deferred_failure_new(DEFERRED_DOMAIN_USER, EIO, "map fails"));
}

int main(void)
{
    deferred_process_t *p = deferred_process_new(0);
    deferred_t *d;

    deferred_process_add(p, deferred_stage_array(NULL, 0));
    deferred_process_add(p, deferred_stage_new(&prod_ops, NULL, 0));
    deferred_process_add(p, deferred_stage_new(&proc_ops, NULL, DEFERRED_STAGE_AUTOPAUSE));
    deferred_process_add(p, deferred_stage_map(NULL, map1, NULL));
    deferred_process_add(p, deferred_stage_map(NULL, map23, &calls2));
    deferred_process_add(p, deferred_stage_map(NULL, map23, &calls3));
    deferred_process_add(p, deferred_stage_collect());
    d = deferred_process_run(p);
    deferred_process_cancel(p);
    printf("after cancel: result fired %d, P fired %d\n", deferred_has_fired(d), P ? deferred_has_fired(P) : -1);
    deferred_unref(d);
    deferred_process_unref(p);
    deferred_unref(P);
    printf("values made %d, released %d (expected equal)\n", made, released);
    return made != released;
}
