/*
 * fuzz/fuzz-util.c: the shared part of the fuzz harnesses (fuzz-util.h).
 *
 * The registries use the C library's malloc, never the library's
 * allocator, so that the block count the end check reads is the
 * library's alone.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz-util.h"

uint8_t fz_byte(fz_reader_t *r)
{
    uint8_t b;

    if (r->n == 0)
        return 0;
    b = *r->p++;
    r->n--;
    return b;
}

int fz_more(const fz_reader_t *r)
{
    return r->n > 0;
}

int fz_tracing;
int fz_avoid_pending;

void fz_trace(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fputs("trace: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void fz_fail(const char *what)
{
    const char *only = getenv("FUZZ_ONLY");

    /* FUZZ_ONLY=TEXT (for -minimize_crash): any other broken invariant
     * ends the run as if nothing happened, so that minimizing keeps to
     * one bug. */
    if (only && !strstr(what, only)) {
        fflush(stderr);
        _exit(0);
    }
    fprintf(stderr, "fuzz: invariant broken: %s\n", what);
    fflush(stderr);
    abort();
}

/* ---- the counting allocator -------------------------------------------- */

static long live_blocks;
static unsigned fail_countdown;
static unsigned long reports;

static void *count_malloc(size_t size)
{
    void *p;

    if (fail_countdown && --fail_countdown == 0)
        return NULL;
    p = malloc(size);
    if (p)
        live_blocks++;
    return p;
}

static void *count_realloc(void *ptr, size_t size)
{
    void *p;

    if (fail_countdown && --fail_countdown == 0)
        return NULL;
    p = realloc(ptr, size);
    if (p && !ptr)
        live_blocks++;
    return p;
}

static void count_free(void *ptr)
{
    if (ptr) {
        live_blocks--;
        FZ_CHECK(live_blocks >= 0, "the library freed more blocks than it allocated");
    }
    free(ptr);
}

static void quiet_report(const deferred_report_info_t *r, void *arg)
{
    deferred_report_t kind = r->kind;
    const deferred_failure_t *f = r->failure;

    (void)kind;
    (void)arg;
    FZ_CHECK(f != NULL, "the report hook was given a NULL failure");
    /* Read it: the failure must be alive while the hook runs. */
    (void)deferred_failure_code(f);
    (void)deferred_failure_message(f);
    reports++;
}

void fz_setup(void)
{
    static int done;

    if (done)
        return;
    done = 1;
    fz_tracing = getenv("FUZZ_TRACE") != NULL;
    fz_avoid_pending = getenv("FUZZ_AVOID_PENDING") != NULL;
    deferred_set_debug(false);
    if (deferred_set_allocator(count_malloc, count_realloc, count_free) != 0)
        fz_fail("deferred_set_allocator refused the counting allocator");
    deferred_set_report_hook(quiet_report, NULL);
}

long fz_live_blocks(void)
{
    return live_blocks;
}

void fz_fail_alloc_after(unsigned n)
{
    fail_countdown = n;
}

unsigned long fz_reports(void)
{
    return reports;
}

/* ---- registries --------------------------------------------------------- */

#define TOKEN_MAGIC 0x70c3e11u
#define ARG_MAGIC 0xa49a4915u

struct token {
    uint32_t magic;
    uint32_t released;
};

struct arg {
    uint32_t magic;
    uint32_t destroyed;
    int destroy_expected;
    int pad;
    /* the harness's data follows, aligned */
    max_align_t data[];
};

struct registry {
    void **items;
    size_t n, cap;
};

static struct registry tokens, args;

static void registry_add(struct registry *r, void *p)
{
    if (r->n == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 64;
        void **items = realloc(r->items, cap * sizeof *items);

        if (!items)
            fz_fail("the harness ran out of memory");
        r->items = items;
        r->cap = cap;
    }
    r->items[r->n++] = p;
}

static void token_release(void *ptr)
{
    struct token *t = ptr;

    FZ_CHECK(t != NULL, "a token was released with a NULL pointer");
    FZ_CHECK(t->magic == TOKEN_MAGIC, "a release function got something that is not a token");
    FZ_CHECK(t->released == 0, "a value was released twice");
    t->released = 1;
}

deferred_value_t fz_token(void)
{
    struct token *t = malloc(sizeof *t);

    if (!t)
        fz_fail("the harness ran out of memory");
    t->magic = TOKEN_MAGIC;
    t->released = 0;
    registry_add(&tokens, t);
    return deferred_value_make(t, token_release);
}

int fz_is_live_token(deferred_value_t v)
{
    const struct token *t = v.ptr;

    return v.release == token_release && t && t->magic == TOKEN_MAGIC && !t->released;
}

unsigned fz_tokens_made(void)
{
    return (unsigned)tokens.n;
}

void *fz_arg_new(size_t size, int destroy_expected)
{
    struct arg *a = calloc(1, sizeof *a + size);

    if (!a)
        fz_fail("the harness ran out of memory");
    a->magic = ARG_MAGIC;
    a->destroy_expected = destroy_expected;
    registry_add(&args, a);
    return a->data;
}

static struct arg *arg_of(const void *data)
{
    struct arg *a = (struct arg *)((char *)(uintptr_t)data - offsetof(struct arg, data));

    FZ_CHECK(a->magic == ARG_MAGIC, "a destroy function got something that is not an argument");
    return a;
}

void fz_destroy(void *data)
{
    struct arg *a;

    FZ_CHECK(data != NULL, "a destroy function was called on NULL");
    a = arg_of(data);
    FZ_CHECK(a->destroy_expected, "a destroy function was called on an argument given without one");
    FZ_CHECK(a->destroyed == 0, "a destroy function was called twice");
    a->destroyed = 1;
}

int fz_arg_destroyed(const void *data)
{
    return arg_of(data)->destroyed != 0;
}

void fz_begin(void)
{
    fz_setup();
    FZ_CHECK(live_blocks == 0, "blocks were alive before the input started");
    fail_countdown = 0;
    reports = 0;
    tokens.n = 0;
    args.n = 0;
}

void fz_end(void)
{
    size_t i;

    fail_countdown = 0;
    for (i = 0; i < tokens.n; i++) {
        struct token *t = tokens.items[i];

        if (t->released != 1) {
            fprintf(stderr, "fuzz: token %zu (in order of creation, from 0) was never released\n", i);
            fz_fail("a value was never released (leak)");
        }
    }
    for (i = 0; i < args.n; i++) {
        struct arg *a = args.items[i];

        if (a->destroy_expected && a->destroyed != 1) {
            fprintf(stderr, "fuzz: argument %zu (in order of creation, from 0) was never destroyed\n", i);
            fz_fail("a destroy function was never called (leak)");
        }
        if (!a->destroy_expected)
            FZ_CHECK(a->destroyed == 0, "an argument without a destroy function was destroyed");
    }
    if (live_blocks != 0) {
        fprintf(stderr, "fuzz: %ld blocks of the library are still alive\n", live_blocks);
        fz_fail("the allocator count is not back to zero (leak)");
    }
    for (i = 0; i < tokens.n; i++)
        free(tokens.items[i]);
    for (i = 0; i < args.n; i++)
        free(args.items[i]);
    tokens.n = 0;
    args.n = 0;
}

void fz_set_slot(deferred_t **slots, int i, deferred_t *d)
{
    deferred_t *old = slots[i];

    FZ_TRACE("  slot[%d] = %p (drops %p)", i, (void *)d, (void *)old);
    slots[i] = d;
    deferred_unref(old);
}

int fz_side_budget;

int fz_side_effect_allowed(void)
{
    if (fz_side_budget <= 0)
        return 0;
    fz_side_budget--;
    return 1;
}
