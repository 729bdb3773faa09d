/* A user producer -> processor A (passes items; its finish returns a
 * deferred P2) -> processor B (passes items; its finish replaces the
 * outcome by a new value V) -> map (first item: waits on a deferred P1,
 * which it owns) -> collect.  deferred_stage_fail(A, f) while the map
 * waits, then cancel the process, cancel P2 and drop everything: V is
 * never released (and the process with it). */
#include <stdio.h>
#include <stdlib.h>
#include "deferred.h"
static int made, released;
static void rel(void *p) { (void)p; released++; }
static deferred_value_t val(void) { made++; return deferred_value_make(&made, rel); }
static deferred_t *P2;
static int left = 2;

static void prod_resume(deferred_stage_t *self, deferred_stage_t *by)
{
    (void)by;
    while (left > 0 && !deferred_stage_is_paused(self)) {
        left--;
        if (deferred_stage_emit(self, val()) != 0)
            break;
    }
}
static void prod_cancel(deferred_stage_t *self, deferred_stage_t *by) { (void)self; (void)by; }
static const deferred_stage_ops_t prod_ops = { .name = "producer", .resume = prod_resume, .cancel = prod_cancel };

static deferred_failure_t *pass(deferred_stage_t *self, deferred_stage_t *from,
                                deferred_value_t tag, deferred_value_t *item)
{
    deferred_value_t v = *item;
    (void)from;
    *item = deferred_value_none();
    deferred_stage_emit_tagged(self, tag, v);
    return NULL;
}
static deferred_value_t finish_a(deferred_stage_t *self, deferred_stage_t *from,
                                 deferred_value_t tag, deferred_value_t outcome)
{
    (void)self; (void)from; (void)tag;
    deferred_value_release(outcome);
    P2 = deferred_new();
    return deferred_value_deferred(deferred_ref(P2));  /* work still in flight */
}
static deferred_value_t finish_b(deferred_stage_t *self, deferred_stage_t *from,
                                 deferred_value_t tag, deferred_value_t outcome)
{
    (void)self; (void)from; (void)tag;
    deferred_value_release(outcome);
    return val();                                       /* V */
}
static const deferred_stage_ops_t a_ops = { .name = "A", .handle = pass, .finish = finish_a };
static const deferred_stage_ops_t b_ops = { .name = "B", .handle = pass, .finish = finish_b };

static deferred_value_t map_fn(deferred_value_t v, void *a)
{
    static unsigned calls;
    (void)a;
    if (++calls == 1) {
        deferred_value_release(v);
        return deferred_value_deferred(deferred_new());   /* P1: the map owns it */
    }
    return deferred_value_deferred(deferred_succeed(v));
}

int main(void)
{
    deferred_process_t *p = deferred_process_new(0);
    deferred_stage_t *a;
    deferred_t *d;

    deferred_process_add(p, deferred_stage_new(&prod_ops, NULL, 0));
    deferred_process_add(p, a = deferred_stage_new(&a_ops, NULL, 0));
    deferred_process_add(p, deferred_stage_new(&b_ops, NULL, 0));
    deferred_process_add(p, deferred_stage_map(NULL, map_fn, NULL));
    deferred_process_add(p, deferred_stage_collect());
    d = deferred_process_run(p);          /* item 1 reaches the map, which waits on P1 */
    deferred_stage_fail(a, deferred_failure_new(DEFERRED_DOMAIN_USER, EIO, "async failure"));
    deferred_process_cancel(p);
    if (P2)
        deferred_cancel(P2);
    printf("result fired %d\n", deferred_has_fired(d));
    deferred_unref(d);
    deferred_process_unref(p);
    deferred_unref(P2);
    printf("values made %d, released %d (expected equal)\n", made, released);
    return made != released;
}
