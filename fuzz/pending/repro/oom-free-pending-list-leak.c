#include <stdio.h>
#include <stdlib.h>
#include "deferred.h"
#include "deferred/combinators.h"
static long live; static int countdown;
static void *m(size_t n) { if (countdown && --countdown == 0) return NULL; live++; return malloc(n); }
static void *r(void *p, size_t n) { if (countdown && --countdown == 0) return NULL; if (!p) live++; return realloc(p, n); }
static void f(void *p) { if (p) live--; free(p); }
int main(int argc, char **argv)
{
    int twice = argc > 1, multi = argc > 2;
    deferred_t *s, *in[2], *l;
    deferred_set_allocator(m, r, f);
    s = multi ? deferred_multi_new() : deferred_new();
    in[0] = in[1] = s;
    l = deferred_list(in, twice ? 2 : 1, 0);
    countdown = 1;                 /* the next allocation fails: it is made by the unref below */
    deferred_unref(l);             /* the list is unfired, its input still pending */
    printf("after unref of the list: allocation failed %s\n", countdown == 0 ? "yes" : "no (none made)");
    countdown = 0;
    deferred_unref(s);
    printf("blocks alive: %ld (expected 0)\n", live);
    return live != 0;
}
