/*
 * deferred-bench.c: libdeferred's benchmark, every workload next to its
 * hand-written C floor in the same process.
 *
 * This file holds the table of workloads (bench/README.md states their
 * targets), the code of
 * each workload and of its floor, a counting allocator installed through
 * deferred_set_allocator(), the memory figures, and the launcher of the
 * peers (the same workloads on Node's Promise, Node's object-mode streams,
 * RxJS and Twisted's Deferred, run as child processes from bench/peers/).
 * Each workload and its floor run several times, interleaved (workload,
 * floor, workload, floor, ...), and the median nanoseconds per operation of
 * each are reported.  The figure that counts is the ratio: the median of
 * the per-run ratios (each workload run divided by the floor run right
 * after it), which a noisy machine disturbs less than a ratio of two
 * medians.  A workload verifies
 * every result it computes and the program exits 1 if one is wrong; it
 * never fails on a timing.
 *
 * The one design decision a reader must know: the floors are kept honest.
 * A floor does the least work a hand-written C program would need for the
 * same result, and no less: for chain10, one malloc of a struct holding
 * ten function pointers and the value, ten indirect calls through those
 * pointers, a read and a free.  The pointers are loaded from a volatile
 * table, so the compiler cannot know their targets and cannot inline or
 * remove the calls; the struct's address is passed through an empty asm
 * statement that clobbers memory, so the malloc/free pair and the stores
 * cannot be elided either.  The floor functions are also noinline.  Both
 * sides allocate through the same plain malloc: the timed runs use the
 * library's default allocator, and allocations are counted in a separate,
 * untimed run of each workload with the counting allocator installed, so
 * neither side pays for the counting.
 *
 * Adding a workload (gather, stream, multifire, cross-thread, sqlite, pg):
 * write its run function and its floor (both take the number of operations
 * and return 0, or -1 after printing what was wrong), and add one entry to
 * the workloads[] table below.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* malloc_usable_size() */
#endif

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#if defined(__GLIBC__)
#include <malloc.h>
#define BENCH_HAVE_USABLE_SIZE 1
#endif

#include "deferred.h"
#include "deferred/combinators.h"
#ifdef BENCH_EV
#include <ev.h>
#include "deferred/ev.h"
#endif

#if defined(__GNUC__)
#define BENCH_NOINLINE __attribute__((noinline))
/* An opaque use of p: the compiler must assume the asm reads and writes
 * any memory reachable from p, so it can neither drop the stores into *p
 * nor the allocation that made it. */
#define BENCH_ESCAPE(p) __asm__ __volatile__("" : : "r"(p) : "memory")
#else
#define BENCH_NOINLINE
#define BENCH_ESCAPE(p) ((void)(p))
#endif

/* ------------------------------------------------------------------ */
/* Options and small helpers                                           */
/* ------------------------------------------------------------------ */

static struct {
    bool quick;       /* small sizes, for a CI smoke test */
    bool tsv;         /* tab-separated lines instead of the table */
    bool peers;       /* run the peers (Node, Twisted) when installed */
    int runs;         /* timed runs of each workload and of its floor */
    const char *only; /* run only the workload of this name */
    const char *peers_dir;
    const char *argv0;
} opt = {false, false, true, 0, NULL, NULL, NULL};

/* The monotonic clock, in nanoseconds. */
static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* The median of n samples (sorts them in place). */
static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, compare_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

/* Report a wrong result and return -1, so a workload can end with
 * "return wrong(...)". */
static int wrong(const char *workload, const char *fmt, ...)
    DEFERRED_PRINTF(2, 3);
static int wrong(const char *workload, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "deferred-bench: %s: wrong result: ", workload);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return -1;
}

/* ------------------------------------------------------------------ */
/* The counting allocator                                              */
/* ------------------------------------------------------------------ */

/*
 * Counting wrappers around malloc, realloc and free.  They are installed
 * with deferred_set_allocator() only for the untimed counting runs and the
 * memory figures, and removed (the default allocator restored) between
 * them, when nothing the library allocated is alive.  Since they hand out
 * plain malloc blocks, a block allocated under one allocator and freed
 * under the other is harmless.
 *
 * An allocation is a call to malloc or to realloc (a realloc may move and
 * grow the block, so it counts as one).  While tracking is on, each block
 * is also remembered with its requested size, so the bytes still held at
 * the end of a window can be summed both as requested sizes and as
 * malloc_usable_size().
 */
static struct {
    uint64_t allocs; /* malloc and realloc calls */
    uint64_t frees;
    uint64_t bytes; /* requested bytes, summed over every allocation */
} counts;

#define TRACK_MAX 256

static struct {
    bool on;
    bool overflow;
    size_t n;
    struct {
        void *ptr;
        size_t size;
    } block[TRACK_MAX];
} track;

static void track_add(void *p, size_t size)
{
    if (!p)
        return;
    if (track.n == TRACK_MAX) {
        track.overflow = true;
        return;
    }
    track.block[track.n].ptr = p;
    track.block[track.n].size = size;
    track.n++;
}

/* Forget p if it is tracked; true when it was. */
static bool track_remove(void *p)
{
    for (size_t i = 0; i < track.n; i++) {
        if (track.block[i].ptr == p) {
            track.block[i] = track.block[--track.n];
            return true;
        }
    }
    return false;
}

static void *count_malloc(size_t size)
{
    void *p = malloc(size);

    counts.allocs++;
    counts.bytes += size;
    if (track.on)
        track_add(p, size);
    return p;
}

static void *count_realloc(void *ptr, size_t size)
{
    void *p = realloc(ptr, size);

    counts.allocs++;
    counts.bytes += size;
    if (track.on && p) {
        if (ptr && !track_remove(ptr))
            track.overflow = true; /* a block from before the window */
        track_add(p, size);
    }
    return p;
}

static void count_free(void *ptr)
{
    if (ptr) {
        counts.frees++;
        if (track.on)
            track_remove(ptr);
    }
    free(ptr);
}

static void use_counting_allocator(bool on)
{
    int rc = on ? deferred_set_allocator(count_malloc, count_realloc, count_free)
                : deferred_set_allocator(NULL, NULL, NULL);

    if (rc != 0)
        fprintf(stderr, "deferred-bench: deferred_set_allocator: %s\n",
                deferred_strerror(rc));
}

/* ------------------------------------------------------------------ */
/* chain10: create, 10 callbacks of x+1, fire, read, unref              */
/* ------------------------------------------------------------------ */

/* The callback of every chain workload: the integer value plus one. */
static deferred_value_t add_one(deferred_value_t v, void *arg)
{
    (void)arg;
    return deferred_value_int(deferred_value_get_int(v) + 1);
}

/* chain10's callbacks, loaded from a volatile table at each add as the
 * floor loads its steps: the library's calls stay indirect calls of an
 * unknown function, as the floor's do (an add to a fired deferred runs its
 * callback in the program's own code, where the compiler would otherwise
 * inline add_one). */
static deferred_fn volatile chain_steps[10] = {
    add_one, add_one, add_one, add_one, add_one,
    add_one, add_one, add_one, add_one, add_one,
};

/*
 * chain10 on libdeferred: the deferred is made unfired, the ten callbacks
 * are added while it is pending, then it is fired with 0 and the result
 * (10) is taken and checked.
 */
static int run_chain10(size_t ops)
{
    for (size_t i = 0; i < ops; i++) {
        deferred_t *d = deferred_new();
        deferred_value_t r;

        if (!d)
            return wrong("chain10", "deferred_new() gave NULL");
        for (int k = 0; k < 10; k++) {
            if (deferred_add_callback(d, chain_steps[k], NULL) != 0) {
                deferred_unref(d);
                return wrong("chain10", "deferred_add_callback() failed");
            }
        }
        deferred_callback(d, deferred_value_int(0));
        r = deferred_result_take(d);
        deferred_unref(d);
        if (deferred_value_get_int(r) != 10) {
            deferred_value_release(r);
            return wrong("chain10", "got %ld, expected 10",
                         (long)deferred_value_get_int(r));
        }
    }
    return 0;
}

/*
 * chain10-after: the same chain on a deferred that has already fired
 * (Twisted's succeed()), so each callback runs as it is added.
 */
static int run_chain10_after(size_t ops)
{
    for (size_t i = 0; i < ops; i++) {
        deferred_t *d = deferred_succeed(deferred_value_int(0));
        deferred_value_t r;

        if (!d)
            return wrong("chain10-after", "deferred_succeed() gave NULL");
        for (int k = 0; k < 10; k++) {
            if (deferred_add_callback(d, chain_steps[k], NULL) != 0) {
                deferred_unref(d);
                return wrong("chain10-after", "deferred_add_callback() failed");
            }
        }
        r = deferred_result_take(d);
        deferred_unref(d);
        if (deferred_value_get_int(r) != 10) {
            deferred_value_release(r);
            return wrong("chain10-after", "got %ld, expected 10",
                         (long)deferred_value_get_int(r));
        }
    }
    return 0;
}

/*
 * The floor of both chain10 workloads: what a C programmer would write for
 * "ten steps to run later on a value that arrives later".  One malloc of a
 * struct that holds the ten steps and the value, ten indirect calls, a
 * read and a free.  See the top of the file for why the compiler can
 * neither inline the calls nor drop the allocation.
 */
typedef intptr_t (*floor_step_fn)(intptr_t x);

struct floor_chain {
    floor_step_fn step[10];
    intptr_t value;
};

static BENCH_NOINLINE intptr_t floor_add_one(intptr_t x)
{
    return x + 1;
}

/* Volatile, so every read is a real load whose value the compiler cannot
 * assume: the calls through these pointers stay indirect. */
static floor_step_fn volatile floor_steps[10] = {
    floor_add_one, floor_add_one, floor_add_one, floor_add_one, floor_add_one,
    floor_add_one, floor_add_one, floor_add_one, floor_add_one, floor_add_one,
};

static int floor_chain10(size_t ops)
{
    for (size_t i = 0; i < ops; i++) {
        struct floor_chain *c = malloc(sizeof *c);
        intptr_t r;

        if (!c)
            return wrong("chain10 floor", "malloc failed");
        /* Add the ten steps while the value is pending. */
        for (int k = 0; k < 10; k++)
            c->step[k] = floor_steps[k];
        BENCH_ESCAPE(c);
        /* Fire: run the value through the steps. */
        c->value = 0;
        for (int k = 0; k < 10; k++)
            c->value = c->step[k](c->value);
        BENCH_ESCAPE(c);
        /* Read and free. */
        r = c->value;
        free(c);
        if (r != 10)
            return wrong("chain10 floor", "got %ld, expected 10", (long)r);
    }
    return 0;
}

/*
 * chain10-async: chain10 written as a coroutine (deferred/async.h).  The
 * driver makes a pending deferred and calls the coroutine, whose first
 * await is of it (a pending await: the coroutine suspends), then fires it
 * with 0, as chain10 fires its deferred.  The other 9 awaits are of a
 * deferred that has fired (one made before the timed loop, as a program
 * keeps a succeed(None) at hand): each takes its result and goes on
 * without suspending.  After each await the coroutine adds one through an
 * indirect call (the work of a chain10 callback).  The body borrows both
 * (DEFERRED_AWAIT_BORROWED(): it keeps them in its frame and takes no
 * reference, as Twisted's `yield d`).  It returns x, which the
 * driver takes and checks (10).  Two allocations per op: the driver's
 * deferred and the coroutine (its frame and its deferred, one block).
 * (Awaiting the driver's deferred again would be a pending await: the
 * coroutine runs inside that deferred's chain, and a deferred whose chain
 * runs has no result yet, in Twisted too.)
 */
struct chain10_frame {
    deferred_async_t co;
    deferred_t *in;    /* borrowed: the driver's */
    deferred_t *fired; /* borrowed: a deferred that has fired */
    int k;
    intptr_t x;
    deferred_value_t v;
};

static floor_step_fn volatile async_steps[1];

static int chain10_body(void *frame)
{
    struct chain10_frame *f = frame;

    DEFERRED_ASYNC_BEGIN(f);
    for (f->k = 0; f->k < 10; f->k++) {
        DEFERRED_AWAIT_BORROWED(f, f->k == 0 ? f->in : f->fired, f->v);
        f->x = async_steps[0](f->x + deferred_value_get_int(f->v));
    }
    DEFERRED_ASYNC_RETURN(f, deferred_value_int(f->x));
    DEFERRED_ASYNC_END(f);
}

static int run_chain10_async(size_t ops)
{
    deferred_t *fired = deferred_succeed(deferred_value_int(0));

    if (!fired)
        return wrong("chain10-async", "out of memory");
    async_steps[0] = floor_steps[0];
    for (size_t i = 0; i < ops; i++) {
        deferred_t *p = deferred_new(), *d;
        struct chain10_frame *f = DEFERRED_ASYNC_NEW(struct chain10_frame, chain10_body,
                                                     "chain10");
        deferred_value_t r;

        if (!p || !f) {
            deferred_unref(p);
            deferred_async_discard(f);
            deferred_unref(fired);
            return wrong("chain10-async", "out of memory");
        }
        f->in = p;
        f->fired = fired;
        d = deferred_async_start(f);
        deferred_callback(p, deferred_value_int(0));
        r = deferred_result_take(d);
        deferred_unref(d);
        deferred_unref(p);
        if (deferred_value_get_int(r) != 10) {
            deferred_value_release(r);
            deferred_unref(fired);
            return wrong("chain10-async", "got %ld, expected 10",
                         (long)deferred_value_get_int(r));
        }
    }
    deferred_unref(fired);
    return 0;
}

/* ------------------------------------------------------------------ */
/* multifire: 1,000,000 rows through 3 callbacks                        */
/* ------------------------------------------------------------------ */

/* The three per-row callbacks: add one, double, add to the sum at arg. */
static deferred_value_t row_double(deferred_value_t v, void *arg)
{
    (void)arg;
    return deferred_value_int(deferred_value_get_int(v) * 2);
}

static deferred_value_t row_sum(deferred_value_t v, void *arg)
{
    *(int64_t *)arg += deferred_value_get_int(v);
    return v;
}

/* The sum of 2 * (i + 1) over rows i = 0 .. rows - 1. */
static int64_t multifire_expected(size_t rows)
{
    return (int64_t)rows * ((int64_t)rows + 1);
}

/*
 * multifire on libdeferred: one multi-fire deferred with three callbacks
 * (x + 1, x * 2, sum += x), rows 0 .. ops - 1 emitted one by one, then
 * finished; the end deferred must have fired and the sum must be right.
 * The one deferred, its end and its three callbacks are made in every
 * run, so their cost is spread over the rows.
 */
static int run_multifire(size_t ops)
{
    int64_t sum = 0;
    deferred_t *d = deferred_multi_new();
    deferred_t *end;
    int rc = -1;

    if (!d)
        return wrong("multifire", "deferred_multi_new() gave NULL");
    end = deferred_multi_when_finished(d);
    if (!end || deferred_add_callback(d, add_one, NULL) != 0 ||
        deferred_add_callback(d, row_double, NULL) != 0 ||
        deferred_add_callback(d, row_sum, &sum) != 0) {
        wrong("multifire", "could not set up the multi-fire deferred");
        goto out_unref;
    }
    for (size_t i = 0; i < ops; i++) {
        if (deferred_multi_emit(d, deferred_value_int((intptr_t)i)) != 0) {
            wrong("multifire", "deferred_multi_emit() failed on row %zu", i);
            goto out_unref;
        }
    }
    if (deferred_multi_finish(d, deferred_value_int(0)) != 0 ||
        !deferred_has_result(end)) {
        wrong("multifire", "the stream did not end");
        goto out_unref;
    }
    if (sum != multifire_expected(ops)) {
        wrong("multifire", "sum %lld, expected %lld", (long long)sum,
              (long long)multifire_expected(ops));
        goto out_unref;
    }
    rc = 0;
out_unref:
    deferred_unref(end);
    deferred_unref(d);
    return rc;
}

/*
 * The floor of multifire: the loop a C programmer would write to push rows
 * through three steps chosen at run time.  The steps and their arguments
 * are set up once per run in a malloc'd struct (as the deferred and its
 * callbacks are), then each row makes three indirect calls.  As for
 * chain10, the pointers come from a volatile table and the struct escapes
 * through an opaque asm, so the calls stay real indirect calls.
 */
typedef intptr_t (*floor_row_fn)(intptr_t x, void *arg);

struct floor_rows {
    floor_row_fn step[3];
    void *arg[3];
};

static BENCH_NOINLINE intptr_t floor_row_add_one(intptr_t x, void *arg)
{
    (void)arg;
    return x + 1;
}

static BENCH_NOINLINE intptr_t floor_row_double(intptr_t x, void *arg)
{
    (void)arg;
    return x * 2;
}

static BENCH_NOINLINE intptr_t floor_row_sum(intptr_t x, void *arg)
{
    *(int64_t *)arg += x;
    return x;
}

static floor_row_fn volatile floor_row_steps[3] = {
    floor_row_add_one, floor_row_double, floor_row_sum,
};

static int floor_multifire(size_t ops)
{
    struct floor_rows *f = malloc(sizeof *f);
    int64_t sum = 0;

    if (!f)
        return wrong("multifire floor", "malloc failed");
    for (int k = 0; k < 3; k++) {
        f->step[k] = floor_row_steps[k];
        f->arg[k] = k == 2 ? (void *)&sum : NULL;
    }
    BENCH_ESCAPE(f);
    for (size_t i = 0; i < ops; i++) {
        intptr_t v = (intptr_t)i;

        for (int k = 0; k < 3; k++)
            v = f->step[k](v, f->arg[k]);
    }
    BENCH_ESCAPE(f);
    free(f);
    if (sum != multifire_expected(ops))
        return wrong("multifire floor", "sum %lld, expected %lld",
                     (long long)sum, (long long)multifire_expected(ops));
    return 0;
}

/* ------------------------------------------------------------------ */
/* stream: 1,000,000 rows through a deferred_process                   */
/* ------------------------------------------------------------------ */

/*
 * The input of both sides, made once outside the timed region and kept
 * for the life of the program: rows 0 .. n - 1 as deferred values (for
 * deferred_stage_array(), which copies them) and as a plain int array (for
 * the floor).  It grows when a run asks for more rows.
 */
static struct {
    deferred_value_t *values;
    int *ints;
    size_t n;
} stream_in;

static int stream_input(size_t n)
{
    if (n > stream_in.n) {
        deferred_value_t *v = realloc(stream_in.values, n * sizeof *v);
        int *ints;

        if (!v)
            return -1;
        stream_in.values = v;
        ints = realloc(stream_in.ints, n * sizeof *ints);
        if (!ints)
            return -1;
        stream_in.ints = ints;
        for (size_t i = stream_in.n; i < n; i++) {
            stream_in.values[i] = deferred_value_int((intptr_t)i);
            stream_in.ints[i] = (int)i;
        }
        stream_in.n = n;
    }
    return 0;
}

/* The sum of 2x + 1 over the rows x = 0 .. n - 1 with 2x % 3 != 0, that is
 * x % 3 != 0: all rows give n^2, the m = ceil(n / 3) multiples of 3 give
 * 3m(m - 1) + m. */
static int64_t stream_expected(size_t rows)
{
    int64_t n = (int64_t)rows, m = (n + 2) / 3;

    return n * n - 3 * m * (m - 1) - m;
}

/* The stages' functions: map x * 2 (row_double above), filter x % 3 != 0,
 * map x + 1 (add_one above), and the fold acc + x. */
static bool stream_keep(deferred_value_t v, void *arg)
{
    (void)arg;
    return deferred_value_get_int(v) % 3 != 0;
}

static deferred_value_t stream_add(deferred_value_t acc, deferred_value_t v,
                                   void *arg)
{
    (void)arg;
    return deferred_value_int(deferred_value_get_int(acc) + deferred_value_get_int(v));
}

/*
 * stream on libdeferred: build the process (array producer of rows
 * 0 .. ops - 1, map x * 2, filter x % 3 != 0, map x + 1, reduce with +),
 * run it, take and check its result, free it.  All of it is timed,
 * building included: deferred_stage_array() copies the input array (one
 * allocation of ops values) and the stages allocate their state, a fixed
 * cost spread over the rows.  The rows themselves allocate nothing.
 */
static int run_stream(size_t ops)
{
    deferred_process_t *p;
    deferred_t *d;
    deferred_value_t r;
    int rc = -1;

    if (stream_input(ops) != 0)
        return wrong("stream", "cannot allocate the input of %zu rows", ops);
    p = deferred_process_new(0);
    if (!p)
        return wrong("stream", "deferred_process_new() gave NULL");
    if (deferred_process_add(p, deferred_stage_array(stream_in.values, ops)) != 0 ||
        deferred_process_add(p, deferred_stage_map("x*2", row_double, NULL)) != 0 ||
        deferred_process_add(p, deferred_stage_filter("x%3!=0", stream_keep,
                                                      NULL)) != 0 ||
        deferred_process_add(p, deferred_stage_map("x+1", add_one, NULL)) != 0 ||
        deferred_process_add(p, deferred_stage_reduce(stream_add,
                                                      deferred_value_int(0),
                                                      NULL)) != 0) {
        wrong("stream", "could not build the process");
        goto out_process;
    }
    d = deferred_process_run(p);
    if (!d) {
        wrong("stream", "deferred_process_run() gave NULL");
        goto out_process;
    }
    if (!deferred_has_result(d)) {
        wrong("stream", "the process did not finish");
        goto out_deferred;
    }
    r = deferred_result_take(d);
    if (!deferred_value_is_int(r) || deferred_value_get_int(r) != stream_expected(ops)) {
        wrong("stream", "sum %lld, expected %lld",
              (long long)deferred_value_get_int(r), (long long)stream_expected(ops));
        deferred_value_release(r);
        goto out_deferred;
    }
    rc = 0;
out_deferred:
    deferred_unref(d);
out_process:
    deferred_process_unref(p);
    return rc;
}

/*
 * The floor of stream: the loop a C programmer would write over an int
 * array, the four operations chosen at run time and called through
 * function pointers (map, filter, map, fold), set up once per run in a
 * malloc'd struct that escapes; as for the other floors the pointers come
 * from a volatile table and the functions are noinline, so the four calls
 * per row stay indirect calls.  It reads the input in place (no copy).
 */
typedef intptr_t (*floor_map_fn)(intptr_t x, void *arg);
typedef bool (*floor_keep_fn)(intptr_t x, void *arg);
typedef intptr_t (*floor_fold_fn)(intptr_t acc, intptr_t x, void *arg);

struct floor_pipeline {
    floor_map_fn map1;
    floor_keep_fn keep;
    floor_map_fn map2;
    floor_fold_fn fold;
    void *arg[4];
};

static BENCH_NOINLINE bool floor_keep_not3(intptr_t x, void *arg)
{
    (void)arg;
    return x % 3 != 0;
}

static BENCH_NOINLINE intptr_t floor_fold_add(intptr_t acc, intptr_t x, void *arg)
{
    (void)arg;
    return acc + x;
}

static floor_map_fn volatile floor_stream_maps[2] = {floor_row_double,
                                                     floor_row_add_one};
static floor_keep_fn volatile floor_stream_keep = floor_keep_not3;
static floor_fold_fn volatile floor_stream_fold = floor_fold_add;

static int floor_stream(size_t ops)
{
    struct floor_pipeline *f;
    const int *in;
    intptr_t acc = 0;

    if (stream_input(ops) != 0)
        return wrong("stream floor", "cannot allocate the input");
    in = stream_in.ints;
    f = malloc(sizeof *f);
    if (!f)
        return wrong("stream floor", "malloc failed");
    f->map1 = floor_stream_maps[0];
    f->keep = floor_stream_keep;
    f->map2 = floor_stream_maps[1];
    f->fold = floor_stream_fold;
    for (int k = 0; k < 4; k++)
        f->arg[k] = NULL;
    BENCH_ESCAPE(f);
    for (size_t i = 0; i < ops; i++) {
        intptr_t v = f->map1(in[i], f->arg[0]);

        if (!f->keep(v, f->arg[1]))
            continue;
        v = f->map2(v, f->arg[2]);
        acc = f->fold(acc, v, f->arg[3]);
    }
    BENCH_ESCAPE(f);
    free(f);
    if (acc != stream_expected(ops))
        return wrong("stream floor", "sum %lld, expected %lld", (long long)acc,
                     (long long)stream_expected(ops));
    return 0;
}

/* ------------------------------------------------------------------ */
/* gather: n pending deferreds gathered, each fired, the array summed  */
/* ------------------------------------------------------------------ */

/*
 * One operation is one element.  A run makes ops / n gathers of n inputs
 * each (n is capped at ops, for --quick): n pending deferreds, gathered,
 * each fired with its index, the gathered array read and summed, then
 * everything unref'd.  The input pointer array is allocated once per run
 * on both sides.
 */
static int run_gather(size_t ops, size_t n, const char *name)
{
    deferred_t **in;
    size_t rounds;

    if (n > ops)
        n = ops;
    rounds = ops / n;
    in = malloc(n * sizeof *in);
    if (!in)
        return wrong(name, "malloc failed");
    for (size_t round = 0; round < rounds; round++) {
        deferred_t *g;
        deferred_value_t v;
        deferred_array_t *a;
        intptr_t sum = 0;
        size_t size;

        for (size_t i = 0; i < n; i++) {
            in[i] = deferred_new();
            if (!in[i]) {
                while (i-- > 0)
                    deferred_unref(in[i]);
                free(in);
                return wrong(name, "deferred_new() gave NULL");
            }
        }
        g = deferred_gather(in, n, 0);
        if (!g) {
            for (size_t i = 0; i < n; i++)
                deferred_unref(in[i]);
            free(in);
            return wrong(name, "deferred_gather() gave NULL");
        }
        for (size_t i = 0; i < n; i++)
            deferred_callback(in[i], deferred_value_int((intptr_t)i));
        v = deferred_result_take(g);
        a = deferred_value_get_array(v);
        size = deferred_array_size(a);
        for (size_t i = 0; i < size; i++)
            sum += deferred_value_get_int(deferred_array_get(a, i));
        deferred_value_release(v);
        deferred_unref(g);
        for (size_t i = 0; i < n; i++)
            deferred_unref(in[i]);
        if (size != n || sum != (intptr_t)(n * (n - 1) / 2)) {
            free(in);
            return wrong(name, "got %zu values summing to %ld, expected %zu "
                         "summing to %ld", size, (long)sum, n,
                         (long)(n * (n - 1) / 2));
        }
    }
    free(in);
    return 0;
}

/*
 * The floor: what a C programmer would write for "n results that arrive
 * later, collected in order, then summed".  A pending result needs
 * storage, so each is a malloc'd slot holding its value, the callback to
 * run when it arrives (loaded from a volatile table: an indirect call the
 * compiler cannot inline) and where to deliver; the collector is one array
 * and a countdown.  Firing a slot is the indirect call, which stores into
 * the collector and counts down; then the sum, then every block freed.
 */
struct floor_gather;
struct floor_pending;
typedef void (*floor_fire_fn)(struct floor_pending *p, intptr_t v);

struct floor_pending {
    intptr_t value;
    floor_fire_fn fire;
    struct floor_gather *owner;
    size_t index;
};

struct floor_gather {
    intptr_t *collector;
    size_t remaining;
};

static BENCH_NOINLINE void floor_gather_store(struct floor_pending *p, intptr_t v)
{
    p->value = v;
    p->owner->collector[p->index] = v;
    p->owner->remaining--;
}

static floor_fire_fn volatile floor_gather_fire = floor_gather_store;

static int floor_gather(size_t ops, size_t n, const char *name)
{
    struct floor_pending **in;
    size_t rounds;

    if (n > ops)
        n = ops;
    rounds = ops / n;
    in = malloc(n * sizeof *in);
    if (!in)
        return wrong(name, "malloc failed");
    for (size_t round = 0; round < rounds; round++) {
        struct floor_gather g;
        intptr_t sum = 0;

        g.collector = malloc(n * sizeof *g.collector);
        g.remaining = n;
        if (!g.collector) {
            free(in);
            return wrong(name, "malloc failed");
        }
        for (size_t i = 0; i < n; i++) {
            in[i] = malloc(sizeof *in[i]);
            if (!in[i]) {
                while (i-- > 0)
                    free(in[i]);
                free(g.collector);
                free(in);
                return wrong(name, "malloc failed");
            }
            in[i]->value = 0;
            in[i]->fire = floor_gather_fire;
            in[i]->owner = &g;
            in[i]->index = i;
            BENCH_ESCAPE(in[i]);
        }
        for (size_t i = 0; i < n; i++)
            in[i]->fire(in[i], (intptr_t)i);
        BENCH_ESCAPE(g.collector);
        for (size_t i = 0; i < n; i++)
            sum += g.collector[i];
        for (size_t i = 0; i < n; i++)
            free(in[i]);
        free(g.collector);
        if (g.remaining != 0 || sum != (intptr_t)(n * (n - 1) / 2)) {
            free(in);
            return wrong(name, "floor summed %ld, expected %ld", (long)sum,
                         (long)(n * (n - 1) / 2));
        }
    }
    free(in);
    return 0;
}

static int run_gather_10k(size_t ops) { return run_gather(ops, 10000, "gather-10k"); }
static int run_gather_100k(size_t ops) { return run_gather(ops, 100000, "gather-100k"); }
static int run_gather_1m(size_t ops) { return run_gather(ops, 1000000, "gather-1m"); }
static int floor_gather_10k(size_t ops) { return floor_gather(ops, 10000, "gather-10k floor"); }
static int floor_gather_100k(size_t ops) { return floor_gather(ops, 100000, "gather-100k floor"); }
static int floor_gather_1m(size_t ops) { return floor_gather(ops, 1000000, "gather-1m floor"); }

/* ------------------------------------------------------------------ */
/* merge: rows of K multi-fire inputs merged into one stream            */
/* ------------------------------------------------------------------ */

/*
 * One operation is one row.  K multi-fire inputs (made, merged, ended and
 * freed in every run, so their cost is spread over the rows) emit rows
 * 0 .. ops - 1 round robin (row r from input r % K).  The stream's chain
 * sums the rows, synchronously (merge-K) or through an asynchronous step
 * (merge-async-K): a callback that returns a pending deferred for each
 * row, which the driver fires right after the emit.  While that deferred
 * is pending the stream holds rows back, so the merge applies its
 * backpressure once per row.  The sum is checked.
 */
static deferred_t *merge_gate;

static deferred_value_t merge_async_step(deferred_value_t v, void *arg)
{
    (void)arg;
    deferred_value_release(v); /* the driver fires the gate with the row */
    merge_gate = deferred_new();
    if (!merge_gate)
        return deferred_value_failure(NULL);
    return deferred_value_deferred(deferred_ref(merge_gate));
}

static int run_merge(size_t ops, size_t k, bool async, const char *name)
{
    deferred_t **in, *m, *end = NULL;
    int64_t sum = 0;
    int rc = -1;
    size_t i;

    if (k > ops)
        k = ops ? ops : 1;
    in = malloc(k * sizeof *in);
    if (!in)
        return wrong(name, "malloc failed");
    for (i = 0; i < k; i++) {
        in[i] = deferred_multi_new();
        if (!in[i]) {
            while (i-- > 0)
                deferred_unref(in[i]);
            free(in);
            return wrong(name, "deferred_multi_new() gave NULL");
        }
    }
    m = deferred_merge(in, k);
    if (!m) {
        wrong(name, "deferred_merge() gave NULL");
        goto out_inputs;
    }
    end = deferred_multi_when_finished(m);
    if ((async && deferred_add_callback(m, merge_async_step, NULL) != 0) ||
        deferred_add_callback(m, row_sum, &sum) != 0 || deferred_unpause(m) != 0) {
        wrong(name, "could not set up the stream");
        goto out_unref;
    }
    for (size_t r = 0; r < ops; r++) {
        if (deferred_multi_emit(in[r % k], deferred_value_int((intptr_t)r)) != 0) {
            wrong(name, "deferred_multi_emit() failed on row %zu", r);
            goto out_unref;
        }
        if (async) {
            deferred_t *g = merge_gate;

            merge_gate = NULL;
            if (!g) {
                wrong(name, "row %zu did not reach the asynchronous step", r);
                goto out_unref;
            }
            deferred_callback(g, deferred_value_int((intptr_t)r));
            deferred_unref(g);
        }
    }
    for (i = 0; i < k; i++)
        deferred_multi_finish(in[i], deferred_value_none());
    if (!deferred_has_result(end) ||
        sum != (int64_t)ops * ((int64_t)ops - 1) / 2) {
        wrong(name, "sum %lld, expected %lld (ended: %d)", (long long)sum,
              (long long)ops * ((long long)ops - 1) / 2, (int)deferred_has_result(end));
        goto out_unref;
    }
    rc = 0;
out_unref:
    deferred_unref(end);
    deferred_unref(m);
out_inputs:
    for (i = 0; i < k; i++)
        deferred_unref(in[i]);
    free(in);
    return rc;
}

/*
 * The floor: K sources, each a malloc'd struct holding the consumer's
 * function pointer (from a volatile table) and where it sums; a row is
 * one indirect call.  With the asynchronous step, a row also makes a
 * pending completion (a malloc'd struct with its callback), which the
 * driver completes (an indirect call) and frees.
 */
struct floor_msource;
typedef void (*floor_mrow_fn)(struct floor_msource *s, intptr_t v);

struct floor_msource {
    floor_mrow_fn row;
    int64_t *sum;
};

struct floor_mpending {
    floor_mrow_fn done;
    struct floor_msource *src;
    intptr_t v;
};

static BENCH_NOINLINE void floor_merge_row(struct floor_msource *s, intptr_t v)
{
    *s->sum += v;
}

static floor_mrow_fn volatile floor_merge_rows = floor_merge_row;

static int floor_merge(size_t ops, size_t k, bool async, const char *name)
{
    struct floor_msource **src;
    int64_t sum = 0;
    size_t i;

    if (k > ops)
        k = ops ? ops : 1;
    src = malloc(k * sizeof *src);
    if (!src)
        return wrong(name, "malloc failed");
    for (i = 0; i < k; i++) {
        src[i] = malloc(sizeof *src[i]);
        if (!src[i]) {
            while (i-- > 0)
                free(src[i]);
            free(src);
            return wrong(name, "malloc failed");
        }
        src[i]->row = floor_merge_rows;
        src[i]->sum = &sum;
        BENCH_ESCAPE(src[i]);
    }
    for (size_t r = 0; r < ops; r++) {
        struct floor_msource *s = src[r % k];

        if (async) {
            struct floor_mpending *p = malloc(sizeof *p);

            if (!p)
                return wrong(name, "malloc failed");
            p->done = floor_merge_rows;
            p->src = s;
            p->v = (intptr_t)r;
            BENCH_ESCAPE(p);
            p->done(p->src, p->v);
            free(p);
        } else {
            s->row(s, (intptr_t)r);
        }
    }
    for (i = 0; i < k; i++)
        free(src[i]);
    free(src);
    if (sum != (int64_t)ops * ((int64_t)ops - 1) / 2)
        return wrong(name, "floor summed %lld", (long long)sum);
    return 0;
}

static int run_merge_2(size_t ops) { return run_merge(ops, 2, false, "merge-2"); }
static int run_merge_10k(size_t ops) { return run_merge(ops, 10000, false, "merge-10k"); }
static int run_merge_async_2(size_t ops) { return run_merge(ops, 2, true, "merge-async-2"); }
static int run_merge_async_100(size_t ops) { return run_merge(ops, 100, true, "merge-async-100"); }
static int run_merge_async_10k(size_t ops) { return run_merge(ops, 10000, true, "merge-async-10k"); }
static int floor_merge_2(size_t ops) { return floor_merge(ops, 2, false, "merge-2 floor"); }
static int floor_merge_10k(size_t ops) { return floor_merge(ops, 10000, false, "merge-10k floor"); }
static int floor_merge_async_2(size_t ops) { return floor_merge(ops, 2, true, "merge-async-2 floor"); }
static int floor_merge_async_100(size_t ops) { return floor_merge(ops, 100, true, "merge-async-100 floor"); }
static int floor_merge_async_10k(size_t ops) { return floor_merge(ops, 10000, true, "merge-async-10k floor"); }

/* ------------------------------------------------------------------ */
/* chain-deep: 1,000,000 chained deferreds                             */
/* ------------------------------------------------------------------ */

/* The callback of link i: wait for link i+1 (arg), giving the chain a new
 * reference on it. */
static deferred_value_t return_next(deferred_value_t v, void *arg)
{
    deferred_value_release(v);
    return deferred_value_deferred(deferred_ref((deferred_t *)arg));
}

struct deep_job {
    size_t n;
    int rc;
};

/*
 * Build n deferreds, link i's callback returning link i+1 and then adding
 * one, and fire them from the outermost in: each outer one fires, gets the
 * next (still unfired) back from its callback and waits on it.  Then the
 * innermost fires with 0, and its result must travel out through the
 * n - 1 waits, gaining one at each: the outermost ends with n - 1.  Then
 * every deferred is unreffed.  A library that recursed along the chain
 * would overflow the small stack this runs on.
 */
static void *chain_deep_thread(void *p)
{
    struct deep_job *job = p;
    size_t n = job->n;
    deferred_t **d = malloc(n * sizeof *d);
    deferred_value_t r;
    size_t made = 0;

    job->rc = -1;
    if (!d) {
        wrong("chain-deep", "cannot allocate the array of %zu links", n);
        return NULL;
    }
    for (made = 0; made < n; made++) {
        d[made] = deferred_new();
        if (!d[made]) {
            wrong("chain-deep", "deferred_new() gave NULL");
            goto out_unref;
        }
    }
    for (size_t i = 0; i + 1 < n; i++) {
        if (deferred_add_callback(d[i], return_next, d[i + 1]) != 0 ||
            deferred_add_callback(d[i], add_one, NULL) != 0) {
            wrong("chain-deep", "deferred_add_callback() failed");
            goto out_unref;
        }
    }
    for (size_t i = 0; i + 1 < n; i++) {
        if (deferred_callback(d[i], deferred_value_int(0)) != 0) {
            wrong("chain-deep", "deferred_callback() failed on link %zu", i);
            goto out_unref;
        }
    }
    deferred_callback(d[n - 1], deferred_value_int(0));
    r = deferred_result_take(d[0]);
    if (deferred_value_get_int(r) != (intptr_t)(n - 1)) {
        wrong("chain-deep", "got %ld, expected %zu",
              (long)deferred_value_get_int(r), n - 1);
        deferred_value_release(r);
        goto out_unref;
    }
    job->rc = 0;
out_unref:
    for (size_t i = 0; i < made; i++)
        deferred_unref(d[i]);
    free(d);
    return NULL;
}

/* The stack chain-deep runs on: far less than a recursion over its links
 * would need, even at a few bytes per link. */
#define DEEP_STACK_BYTES (512u * 1024u)

static int run_chain_deep(size_t links)
{
    struct deep_job job = {links < 2 ? 2 : links, -1};
    pthread_attr_t attr;
    pthread_t thread;
    int rc;

    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, DEEP_STACK_BYTES);
    rc = pthread_create(&thread, &attr, chain_deep_thread, &job);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        /* No thread: run on the main stack rather than not at all. */
        chain_deep_thread(&job);
        return job.rc;
    }
    pthread_join(thread, NULL);
    return job.rc;
}

#ifdef BENCH_EV
/* ------------------------------------------------------------------ */
/* cross-thread: deferreds fired from another thread, run on the loop  */
/* ------------------------------------------------------------------ */

/*
 * One producer thread fires n remote handles (deferred/ev.h), each bound
 * to a deferred with one callback (sum += x) made on the loop thread; the
 * loop thread runs ev_run() until every deferred was delivered.  Making
 * the deferreds and handles, the firing and the delivery are all timed.
 */
struct ct_run {
    size_t n;
    deferred_ev_remote_t **remotes;
};

static int64_t ct_sum;

static deferred_value_t ct_add(deferred_value_t v, void *arg)
{
    (void)arg;
    ct_sum += deferred_value_get_int(v);
    return v;
}

static void *ct_fire(void *arg)
{
    struct ct_run *r = arg;
    size_t i;

    for (i = 0; i < r->n; i++)
        deferred_ev_remote_callback(r->remotes[i], deferred_value_int((intptr_t)i));
    return NULL;
}

static int run_cross_thread(size_t n)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct ct_run r;
    pthread_t t;
    size_t i;

    r.n = n;
    r.remotes = malloc(n * sizeof *r.remotes);
    if (!loop || !r.remotes)
        return wrong("cross-thread", "out of memory");
    ct_sum = 0;
    for (i = 0; i < n; i++) {
        deferred_t *d = deferred_new();

        if (!d || deferred_add_callback(d, ct_add, NULL) != 0 ||
            !(r.remotes[i] = deferred_ev_remote_new(loop, d)))
            return wrong("cross-thread", "out of memory");
        deferred_unref(d); /* the handle holds it until delivery */
    }
    if (pthread_create(&t, NULL, ct_fire, &r) != 0)
        return wrong("cross-thread", "pthread_create failed");
    ev_run(loop, 0); /* returns once every handle was delivered */
    pthread_join(t, NULL);
    free(r.remotes);
    ev_loop_destroy(loop);
    if (ct_sum != (int64_t)n * ((int64_t)n - 1) / 2)
        return wrong("cross-thread", "sum %lld", (long long)ct_sum);
    return 0;
}

/*
 * The floor: what a C programmer would write by hand: n nodes (an
 * integer and a next pointer) malloc'ed on the loop thread, a producer
 * thread pushing each onto a mutex-protected queue and waking the loop
 * with ev_async_send() when the queue was empty, and the ev_async callback
 * on the loop thread taking the whole queue and calling an indirect
 * function on each node, then freeing it.
 */
struct ct_node {
    struct ct_node *next;
    intptr_t x;
};

struct ct_floor {
    pthread_mutex_t lock;
    struct ct_node *head, *tail;
    ev_async async;
    struct ev_loop *loop;
    struct ct_node **nodes;
    size_t n, done;
};

static BENCH_NOINLINE void ct_floor_add(intptr_t x, void *arg)
{
    *(int64_t *)arg += x;
}

static void (*volatile ct_floor_fn)(intptr_t, void *) = ct_floor_add;

static void *ct_floor_fire(void *arg)
{
    struct ct_floor *f = arg;
    size_t i;

    for (i = 0; i < f->n; i++) {
        struct ct_node *m = f->nodes[i];
        bool was_empty;

        m->next = NULL;
        pthread_mutex_lock(&f->lock);
        was_empty = f->head == NULL;
        if (was_empty)
            f->head = m;
        else
            f->tail->next = m;
        f->tail = m;
        if (was_empty)
            ev_async_send(f->loop, &f->async);
        pthread_mutex_unlock(&f->lock);
    }
    return NULL;
}

static void ct_floor_drain(struct ev_loop *loop, ev_async *w, int revents)
{
    struct ct_floor *f = w->data;
    void (*fn)(intptr_t, void *) = ct_floor_fn;
    struct ct_node *m, *next;

    (void)revents;
    pthread_mutex_lock(&f->lock);
    m = f->head;
    f->head = f->tail = NULL;
    pthread_mutex_unlock(&f->lock);
    for (; m; m = next) {
        next = m->next;
        fn(m->x, &ct_sum);
        free(m);
        f->done++;
    }
    if (f->done == f->n)
        ev_async_stop(loop, w);
}

static int floor_cross_thread(size_t n)
{
    struct ct_floor f;
    pthread_t t;
    size_t i;

    memset(&f, 0, sizeof f);
    pthread_mutex_init(&f.lock, NULL);
    f.loop = ev_loop_new(EVFLAG_AUTO);
    f.n = n;
    f.nodes = malloc(n * sizeof *f.nodes);
    if (!f.loop || !f.nodes)
        return wrong("cross-thread floor", "out of memory");
    ct_sum = 0;
    for (i = 0; i < n; i++) {
        f.nodes[i] = malloc(sizeof *f.nodes[i]);
        if (!f.nodes[i])
            return wrong("cross-thread floor", "out of memory");
        f.nodes[i]->x = (intptr_t)i;
        BENCH_ESCAPE(f.nodes[i]);
    }
    ev_async_init(&f.async, ct_floor_drain);
    f.async.data = &f;
    ev_async_start(f.loop, &f.async);
    if (pthread_create(&t, NULL, ct_floor_fire, &f) != 0)
        return wrong("cross-thread floor", "pthread_create failed");
    ev_run(f.loop, 0);
    pthread_join(t, NULL);
    free(f.nodes);
    ev_loop_destroy(f.loop);
    pthread_mutex_destroy(&f.lock);
    if (ct_sum != (int64_t)n * ((int64_t)n - 1) / 2)
        return wrong("cross-thread floor", "sum %lld", (long long)ct_sum);
    return 0;
}
#endif /* BENCH_EV */

/* ------------------------------------------------------------------ */
/* Database rows: sqlite-rows and pg-rows                              */
/* ------------------------------------------------------------------ */

/*
 * Rows of a query through a process (the database producer, a reduce
 * consumer reading three columns of each row) against the raw client
 * loop reading the same columns of the same rows: sqlite3_step() with
 * sqlite3_column_*(), and libpq's single-row mode with PQgetvalue().
 * Both sides sum the integer column, the text's length and the double
 * column truncated, so both read every column.  A run function returns 1
 * (after printing a note) when its database cannot be had: the workload
 * is then skipped, not failed.
 */
#if defined(BENCH_SQLITE) || defined(BENCH_PG)
#include <ev.h>
#include "deferred/row.h"

static struct ev_loop *db_loop;
static deferred_loop_t *db_dloop; /* db_loop's adapter (deferred/loop.h) */

static deferred_value_t db_sum_row(deferred_value_t acc, deferred_value_t item, void *arg)
{
    deferred_row_t *row = deferred_value_get_row(item);
    size_t len = 0;
    int64_t sum = (int64_t)deferred_value_get_int(acc);

    (void)arg;
    deferred_row_blob(row, 1, &len);
    sum += deferred_row_int(row, 0) + (int64_t)len + (int64_t)deferred_row_double(row, 2);
    deferred_value_release(item);
    return deferred_value_int((intptr_t)sum);
}

/* Run a process of producer -> reduce(db_sum_row) to its end; the sum. */
static int db_run_process(deferred_stage_t *producer, const char *name, int64_t *sum)
{
    deferred_process_t *p = deferred_process_new(0);
    deferred_t *d;
    int rc = 0;

    if (!p || !producer || deferred_process_add(p, producer) < 0 ||
        deferred_process_add(p, deferred_stage_reduce(db_sum_row, deferred_value_int(0),
                                                      NULL)) < 0) {
        deferred_process_unref(p);
        return wrong(name, "could not build the process");
    }
    d = deferred_process_run(p);
    deferred_process_unref(p);
    while (d && !deferred_has_fired(d) && ev_run(db_loop, EVRUN_ONCE))
        ;
    if (!d || !deferred_has_fired(d) || deferred_value_is_failure(deferred_result(d))) {
        char *story = d ? deferred_failure_story_alloc(
                              deferred_value_get_failure(deferred_result(d)))
                        : NULL;

        rc = wrong(name, "the process failed: %s", story ? story : "?");
        deferred_free(story);
    } else {
        *sum = (int64_t)deferred_value_get_int(deferred_result(d));
    }
    deferred_unref(d);
    return rc;
}

/* sum(i) + sum(len('row ' || i)) + sum(trunc(i * 0.5)) for i in 1..n. */
static int64_t db_expected(size_t n)
{
    int64_t sum = 0;
    char buf[32];

    for (size_t i = 1; i <= n; i++)
        sum += (int64_t)i + snprintf(buf, sizeof buf, "row %zu", i) + (int64_t)(i / 2);
    return sum;
}
#endif

#ifdef BENCH_SQLITE
#include "deferred/sqlite.h"

static struct {
    sqlite3 *db;
    size_t rows;
    int64_t expected;
    char dir[64];
    char path[96];
} bsq;

static void sqlite_bench_cleanup(void)
{
    if (bsq.db) {
        sqlite3_close(bsq.db);
        unlink(bsq.path);
        rmdir(bsq.dir);
        bsq.db = NULL;
    }
}

/* A database file of n rows in a temporary directory, made once. */
static int sqlite_bench_open(size_t n)
{
    char sql[512];

    if (bsq.db && bsq.rows == n)
        return 0;
    sqlite_bench_cleanup();
    if (!db_loop && (!(db_loop = ev_loop_new(EVFLAG_AUTO)) ||
                     !(db_dloop = deferred_ev_loop_new(db_loop))))
        return wrong("sqlite-rows", "no libev loop");
    snprintf(bsq.dir, sizeof bsq.dir, "/tmp/deferred-bench.XXXXXX");
    if (!mkdtemp(bsq.dir))
        return wrong("sqlite-rows", "mkdtemp: %s", strerror(errno));
    snprintf(bsq.path, sizeof bsq.path, "%s/rows.db", bsq.dir);
    if (sqlite3_open(bsq.path, &bsq.db) != SQLITE_OK)
        return wrong("sqlite-rows", "%s: %s", bsq.path, sqlite3_errmsg(bsq.db));
    snprintf(sql, sizeof sql,
             "CREATE TABLE t (i INTEGER PRIMARY KEY, s TEXT, d REAL);"
             "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < %zu)"
             " INSERT INTO t SELECT x, 'row ' || x, x * 0.5 FROM c;",
             n);
    if (sqlite3_exec(bsq.db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return wrong("sqlite-rows", "%s", sqlite3_errmsg(bsq.db));
    bsq.rows = n;
    bsq.expected = db_expected(n);
    atexit(sqlite_bench_cleanup);
    return 0;
}

static int run_sqlite_rows(size_t ops)
{
    deferred_stage_t *q;
    int64_t sum = 0;

    if (sqlite_bench_open(ops) != 0)
        return -1;
    q = deferred_sqlite_query(db_dloop, bsq.db, "SELECT i, s, d FROM t", NULL, 0);
    deferred_sqlite_set_batch(q, 1024);
    if (db_run_process(q, "sqlite-rows", &sum) != 0)
        return -1;
    if (sum != bsq.expected)
        return wrong("sqlite-rows", "sum %lld, expected %lld", (long long)sum,
                     (long long)bsq.expected);
    return 0;
}

static int floor_sqlite_rows(size_t ops)
{
    sqlite3_stmt *st;
    int64_t sum = 0;
    int rc;

    if (sqlite_bench_open(ops) != 0)
        return -1;
    if (sqlite3_prepare_v2(bsq.db, "SELECT i, s, d FROM t", -1, &st, NULL) != SQLITE_OK)
        return wrong("sqlite-rows floor", "%s", sqlite3_errmsg(bsq.db));
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const unsigned char *text;

        sum += sqlite3_column_int64(st, 0);
        text = sqlite3_column_text(st, 1);
        BENCH_ESCAPE(text);
        sum += sqlite3_column_bytes(st, 1);
        sum += (int64_t)sqlite3_column_double(st, 2);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE || sum != bsq.expected)
        return wrong("sqlite-rows floor", "sum %lld, expected %lld", (long long)sum,
                     (long long)bsq.expected);
    return 0;
}
#endif /* BENCH_SQLITE */

#ifdef BENCH_PG
#include "deferred/pg.h"
#include "../t/pg-harness.h"

static struct {
    bool tried, ok;
    struct pgh server;
    deferred_pg_t *conn; /* the library's connection */
    deferred_pg_t *pipe; /* the library's, in pipeline mode */
    PGconn *raw;         /* the floor's, blocking */
    PGconn *rawpipe;     /* the pipeline floor's, blocking, in pipeline mode */
} bpg;

static void pg_bench_cleanup(void)
{
    deferred_pg_unref(bpg.conn);
    bpg.conn = NULL;
    deferred_pg_unref(bpg.pipe);
    bpg.pipe = NULL;
    if (bpg.rawpipe)
        PQfinish(bpg.rawpipe);
    bpg.rawpipe = NULL;
    if (db_loop)
        ev_run(db_loop, EVRUN_NOWAIT);
    if (bpg.raw)
        PQfinish(bpg.raw);
    bpg.raw = NULL;
    pgh_stop(&bpg.server, true);
}

/* A throwaway server (t/pg-harness.c) and two connections, made once;
 * 1 when no server can be had. */
static int pg_bench_open(void)
{
    deferred_t *d;

    if (bpg.tried)
        return bpg.ok ? 0 : 1;
    bpg.tried = true;
    if (!db_loop && (!(db_loop = ev_loop_new(EVFLAG_AUTO)) ||
                     !(db_dloop = deferred_ev_loop_new(db_loop))))
        return wrong("pg-rows", "no libev loop");
    if (pgh_start(&bpg.server) != 0) {
        printf("pg-rows: skipped: no PostgreSQL server could be started "
               "(see the message above)\n");
        return 1;
    }
    atexit(pg_bench_cleanup);
    bpg.raw = PQconnectdb(bpg.server.conninfo);
    if (PQstatus(bpg.raw) != CONNECTION_OK)
        return wrong("pg-rows", "connect: %s", PQerrorMessage(bpg.raw));
    d = deferred_pg_connect(db_dloop, bpg.server.conninfo);
    while (d && !deferred_has_fired(d) && ev_run(db_loop, EVRUN_ONCE))
        ;
    if (!d || !(bpg.conn = deferred_value_get_pg(deferred_result_take(d)))) {
        deferred_unref(d);
        return wrong("pg-rows", "deferred_pg_connect failed");
    }
    deferred_unref(d);
    d = deferred_pg_connect(db_dloop, bpg.server.conninfo);
    while (d && !deferred_has_fired(d) && ev_run(db_loop, EVRUN_ONCE))
        ;
    if (!d || !(bpg.pipe = deferred_value_get_pg(deferred_result_take(d))) ||
        deferred_pg_set_pipeline(bpg.pipe, true) != 0) {
        deferred_unref(d);
        return wrong("pg-pipeline", "deferred_pg_connect failed");
    }
    deferred_unref(d);
    bpg.rawpipe = PQconnectdb(bpg.server.conninfo);
    if (PQstatus(bpg.rawpipe) != CONNECTION_OK || PQenterPipelineMode(bpg.rawpipe) != 1)
        return wrong("pg-pipeline", "connect: %s", PQerrorMessage(bpg.rawpipe));
    bpg.ok = true;
    return 0;
}

static const char pg_rows_sql[] =
    "SELECT g, 'row ' || g, g * 0.5::float8 FROM generate_series(1, $1::int8) g";

static int run_pg_rows(size_t ops)
{
    int64_t sum = 0;
    int rc = pg_bench_open();

    if (rc != 0)
        return rc;
    if (db_run_process(deferred_pg_query_p(bpg.conn, pg_rows_sql,
                                           DEFERRED_PARAMS(deferred_param_int((int64_t)ops))),
                       "pg-rows", &sum) != 0)
        return -1;
    if (sum != db_expected(ops))
        return wrong("pg-rows", "sum %lld, expected %lld", (long long)sum,
                     (long long)db_expected(ops));
    return 0;
}

static int floor_pg_rows(size_t ops)
{
    char n[32];
    const char *values[1] = {n};
    PGresult *res;
    int64_t sum = 0;
    bool failed = false;

    if (pg_bench_open() != 0)
        return -1;
    snprintf(n, sizeof n, "%zu", ops);
    if (!PQsendQueryParams(bpg.raw, pg_rows_sql, 1, NULL, values, NULL, NULL, 0) ||
        !PQsetSingleRowMode(bpg.raw))
        return wrong("pg-rows floor", "%s", PQerrorMessage(bpg.raw));
    while ((res = PQgetResult(bpg.raw))) {
        if (PQresultStatus(res) == PGRES_SINGLE_TUPLE) {
            sum += strtoll(PQgetvalue(res, 0, 0), NULL, 10);
            sum += PQgetlength(res, 0, 1);
            sum += (int64_t)strtod(PQgetvalue(res, 0, 2), NULL);
        } else if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            failed = true;
        }
        PQclear(res);
    }
    if (failed || sum != db_expected(ops))
        return wrong("pg-rows floor", "sum %lld, expected %lld", (long long)sum,
                     (long long)db_expected(ops));
    return 0;
}

/*
 * pg-pipeline and pg-serial: ops small queries (SELECT $1::int + 1, $1
 * the query's number), each a deferred_pg_query_one() made up front and
 * checked.  pg-pipeline runs them on a connection in pipeline mode (each
 * query its own sync point, the library's default there); its floor is a
 * raw blocking libpq pipeline loop doing the same (PQsendQueryParams,
 * PQpipelineSync per query, then every result read and checked).
 * pg-serial runs them one at a time (pipeline mode off); its floor is
 * the pipelined run, so its ratio is the speed-up pipelining gives.
 */
static const char pg_small_sql[] = "SELECT $1::int + 1";

static int pg_small_queries(deferred_pg_t *c, size_t ops, const char *name)
{
    deferred_t **d = malloc(ops * sizeof *d);
    size_t i;
    int rc = 0;

    if (!d)
        return wrong(name, "out of memory");
    for (i = 0; i < ops; i++)
        d[i] = deferred_pg_query_one_p(c, pg_small_sql,
                                       DEFERRED_PARAMS(deferred_param_int((int64_t)i)));
    for (i = 0; i < ops; i++)
        while (d[i] && !deferred_has_fired(d[i]) && ev_run(db_loop, EVRUN_ONCE))
            ;
    for (i = 0; i < ops; i++) {
        deferred_row_t *row = d[i] ? deferred_value_get_row(deferred_result(d[i])) : NULL;

        if (rc == 0 && (!row || deferred_row_int(row, 0) != (int64_t)i + 1))
            rc = wrong(name, "query %zu: no row %zu", i, i + 1);
        deferred_unref(d[i]);
    }
    free(d);
    return rc;
}

static int run_pg_pipeline(size_t ops)
{
    int rc = pg_bench_open();

    return rc != 0 ? rc : pg_small_queries(bpg.pipe, ops, "pg-pipeline");
}

static int run_pg_serial(size_t ops)
{
    int rc = pg_bench_open();

    return rc != 0 ? rc : pg_small_queries(bpg.conn, ops, "pg-serial");
}

static int floor_pg_pipeline(size_t ops)
{
    PGconn *c;
    PGresult *res;
    size_t i;
    bool failed = false;

    if (pg_bench_open() != 0)
        return -1;
    c = bpg.rawpipe;
    for (i = 0; i < ops; i++) {
        char n[32];
        const char *values[1] = {n};

        snprintf(n, sizeof n, "%zu", i);
        if (!PQsendQueryParams(c, pg_small_sql, 1, NULL, values, NULL, NULL, 0) ||
            !PQpipelineSync(c))
            return wrong("pg-pipeline floor", "%s", PQerrorMessage(c));
    }
    for (i = 0; i < ops; i++) {
        while ((res = PQgetResult(c))) {
            if (PQresultStatus(res) == PGRES_TUPLES_OK) {
                if (PQntuples(res) != 1 ||
                    strtoll(PQgetvalue(res, 0, 0), NULL, 10) != (long long)i + 1)
                    failed = true;
            } else {
                failed = true;
            }
            PQclear(res);
        }
        res = PQgetResult(c); /* the sync */
        if (!res || PQresultStatus(res) != PGRES_PIPELINE_SYNC)
            failed = true;
        PQclear(res);
    }
    if (failed)
        return wrong("pg-pipeline floor", "a wrong result");
    return 0;
}

static int floor_pg_serial(size_t ops)
{
    return run_pg_pipeline(ops);
}
#endif /* BENCH_PG */

/* ------------------------------------------------------------------ */
/* The table of workloads                                              */
/* ------------------------------------------------------------------ */

/* A workload or floor runs ops operations and returns 0, or -1 after
 * printing what was wrong with a result. */
typedef int (*bench_fn)(size_t ops);

typedef struct workload {
    const char *name;
    bench_fn run;
    bench_fn floor;      /* NULL: no floor, the ratio is "-" */
    double target_ratio; /* 0: no target */
    size_t ops;          /* operations per run */
    size_t quick_ops;    /* the same with --quick */
    int max_runs;        /* at most this many timed runs (0: --runs) */
    const char *unit;    /* what one operation is */
    const char *note;    /* printed under the table, or NULL */
} workload_t;

static const workload_t workloads[] = {
    {"chain10", run_chain10, floor_chain10, 1.5, 500000, 20000, 0, "op",
     "chain10: new, 10 x add_callback(x+1) while pending, fire 0, take result, "
     "unref; floor: malloc + 10 indirect calls + free"},
    {"chain10-after", run_chain10_after, floor_chain10, 2.0, 500000, 20000, 0, "op",
     "chain10-after: deferred_succeed(0), then 10 x add_callback(x+1) "
     "running at once; same floor as chain10"},
    {"chain10-async", run_chain10_async, floor_chain10, 3.0, 500000, 20000, 0, "op",
     "chain10-async: chain10 as a coroutine: new pending deferred, the coroutine "
     "awaits it (suspends), fire 0, then 9 awaits of it fired (no suspension), "
     "x+1 by an indirect call after each await, take result; target 1.5 x "
     "chain10's; same floor as chain10"},
    {"multifire", run_multifire, floor_multifire, 4.0, 1000000, 20000, 0, "row",
     "multifire: one multi-fire deferred, 3 callbacks (x+1, x*2, sum), rows "
     "emitted one by one, then finished; floor: a loop of 3 indirect calls "
     "per row"},
    {"stream", run_stream, floor_stream, 4.0, 1000000, 20000, 0, "row",
     "stream: deferred_process of array producer (copies the input), map x*2, "
     "filter x%3!=0, map x+1, reduce sum; building, running and freeing the "
     "process are all timed; floor: a loop over an int array of 4 indirect "
     "calls per row (map, filter, map, fold)"},
    {"gather-10k", run_gather_10k, floor_gather_10k, 2.5, 1000000, 20000, 0, "elem",
     "gather-N: N pending deferreds made, gathered, each fired with its "
     "index, the array read and summed, all unref'd (ops/N rounds); floor: N "
     "malloc'd slots, one indirect call each storing into a collector and "
     "counting down, the sum, the frees"},
    {"gather-100k", run_gather_100k, floor_gather_100k, 2.5, 1000000, 20000, 0,
     "elem", NULL},
    {"gather-1m", run_gather_1m, floor_gather_1m, 2.5, 2000000, 20000, 0, "elem",
     NULL},
    {"merge-2", run_merge_2, floor_merge_2, 0.0, 1000000, 20000, 0, "row",
     "merge-K: K multi-fire inputs merged, rows emitted round robin, the stream "
     "sums them; merge-async-K: the same with an asynchronous step per row (a "
     "callback returning a pending deferred, fired by the driver), so the stream "
     "holds rows back once per row; floor: K malloc'd sources, one indirect call "
     "per row (async: plus a malloc'd completion called and freed)"},
    {"merge-10k", run_merge_10k, floor_merge_10k, 0.0, 1000000, 20000, 0, "row", NULL},
    {"merge-async-2", run_merge_async_2, floor_merge_async_2, 0.0, 1000000, 20000, 0,
     "row", NULL},
    {"merge-async-100", run_merge_async_100, floor_merge_async_100, 0.0, 1000000, 20000,
     0, "row", NULL},
    {"merge-async-10k", run_merge_async_10k, floor_merge_async_10k, 0.0, 1000000, 20000,
     0, "row", NULL},
    {"chain-deep", run_chain_deep, NULL, 0.0, 1000000, 100000, 3, "link",
     "chain-deep: ns and allocations per link; each link's callback returns "
     "the next deferred, the innermost fires last; run on a 512 KiB stack"},
#ifdef BENCH_EV
    {"cross-thread", run_cross_thread, floor_cross_thread, 2.0, 1000000, 20000, 0, "op",
     "cross-thread: 1 producer thread fires deferred_ev_remote handles (made on "
     "the loop thread with one callback, sum += x) delivered on the loop thread "
     "through its mailbox (ev_async); floor: malloc'ed nodes through a "
     "mutex-protected queue + ev_async, an indirect call and a free per node"},
#endif
#ifdef BENCH_SQLITE
    {"sqlite-rows", run_sqlite_rows, floor_sqlite_rows, 1.3, 1000000, 20000, 0, "row",
     "sqlite-rows: a SQLite query (3 columns, a database file) through a process: "
     "deferred_sqlite_query -> reduce reading each row's 3 columns; floor: a raw "
     "sqlite3_step loop reading the same columns"},
#endif
#ifdef BENCH_PG
    {"pg-rows", run_pg_rows, floor_pg_rows, 1.3, 1000000, 20000, 0, "row",
     "pg-rows: generate_series rows (3 columns) from a throwaway PostgreSQL server over "
     "a Unix socket, single-row mode through a process (deferred_pg_query -> reduce); "
     "floor: a raw blocking libpq single-row loop reading the same columns"},
    {"pg-pipeline", run_pg_pipeline, floor_pg_pipeline, 1.3, 10000, 2000, 0, "query",
     "pg-pipeline: 10,000 small queries (SELECT $1::int + 1), each a "
     "deferred_pg_query_one() made up front, on a connection in pipeline mode (a sync "
     "after each); floor: a raw blocking libpq pipeline loop (PQsendQueryParams and "
     "PQpipelineSync per query, then the results read)"},
    {"pg-serial", run_pg_serial, floor_pg_serial, 0.0, 10000, 2000, 0, "query",
     "pg-serial: the same 10,000 queries one at a time (pipeline mode off); its "
     "\"floor\" is pg-pipeline's run, so the ratio is what pipelining saves "
     "(issue 19: at least 3x)"},
#endif
};

#define N_WORKLOADS (sizeof workloads / sizeof workloads[0])

/* What was measured for one workload. */
typedef struct result {
    bool ran;
    double ns;       /* median ns per op */
    double floor_ns; /* median ns per op of the floor, or NAN */
    double ratio;    /* median of the runs' workload/floor ratios, or NAN */
    double allocs;   /* allocations per op, from the counting run */
    size_t ops;
    int runs;
} result_t;

static result_t results[N_WORKLOADS];

/* Time one run of fn over ops operations, in ns per op; -1 on a wrong
 * result. */
static double time_run(bench_fn fn, size_t ops)
{
    uint64_t t0 = now_ns();

    if (fn(ops) != 0)
        return -1.0;
    return (double)(now_ns() - t0) / (double)ops;
}

/*
 * Measure one workload: a counting run (untimed, also the warm-up), a
 * warm-up of the floor, then the timed runs, workload and floor
 * interleaved so that both see the same machine state.  The ratio is taken
 * run by run (each workload run over the floor run after it) and its
 * median kept.  Returns 0 or -1 on a wrong result.
 */
static int measure(const workload_t *w, result_t *res)
{
    size_t ops = opt.quick ? w->quick_ops : w->ops;
    int runs = w->max_runs && w->max_runs < opt.runs ? w->max_runs : opt.runs;
    double *ns = calloc((size_t)runs, sizeof *ns);
    double *floor_ns = calloc((size_t)runs, sizeof *floor_ns);
    double *ratio = calloc((size_t)runs, sizeof *ratio);
    uint64_t before;
    int rc = -1;

    res->ops = ops;
    res->runs = runs;
    res->floor_ns = NAN;
    res->ratio = NAN;
    if (!ns || !floor_ns || !ratio) {
        fprintf(stderr, "deferred-bench: out of memory\n");
        goto out_free;
    }

    use_counting_allocator(true);
    before = counts.allocs;
    rc = w->run(ops);
    res->allocs = (double)(counts.allocs - before) / (double)ops;
    use_counting_allocator(false);
    if (rc == 1) {
        rc = 0; /* skipped (its database cannot be had); it said why */
        goto out_free;
    }
    if (rc != 0)
        goto out_free;
    if (w->floor && w->floor(ops) != 0) {
        rc = -1;
        goto out_free;
    }

    for (int i = 0; i < runs; i++) {
        ns[i] = time_run(w->run, ops);
        if (ns[i] < 0)
            goto out_fail;
        if (w->floor) {
            floor_ns[i] = time_run(w->floor, ops);
            if (floor_ns[i] < 0)
                goto out_fail;
            ratio[i] = ns[i] / floor_ns[i];
        }
    }
    res->ns = median(ns, runs);
    if (w->floor) {
        res->floor_ns = median(floor_ns, runs);
        res->ratio = median(ratio, runs);
    }
    res->ran = true;
    rc = 0;
    goto out_free;
out_fail:
    rc = -1;
out_free:
    free(ns);
    free(floor_ns);
    free(ratio);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Memory figures                                                      */
/* ------------------------------------------------------------------ */

typedef struct memory_figure {
    size_t requested; /* bytes asked of malloc, still held */
    size_t usable;    /* malloc_usable_size() of the same blocks, or 0 */
    size_t allocs;    /* allocations made */
    bool exact;       /* false when the tracking could not follow a block */
} memory_figure_t;

/* Sum the blocks tracked since track_begin(). */
static void track_begin(void)
{
    track.on = true;
    track.overflow = false;
    track.n = 0;
}

static memory_figure_t track_end(uint64_t allocs_before)
{
    memory_figure_t m = {0, 0, (size_t)(counts.allocs - allocs_before), true};

    for (size_t i = 0; i < track.n; i++) {
        m.requested += track.block[i].size;
#if defined(BENCH_HAVE_USABLE_SIZE)
        m.usable += malloc_usable_size(track.block[i].ptr);
#endif
    }
    m.exact = !track.overflow;
    track.on = false;
    return m;
}

/*
 * The bytes a pending deferred holds: allocated by deferred_new() alone,
 * and by deferred_new() plus one deferred_add_callback(), measured through
 * the allocator hook while the deferred is alive.  Returns 0 or -1.
 */
static int measure_pending(memory_figure_t *bare, memory_figure_t *one_cb)
{
    deferred_t *d;
    uint64_t before;
    int rc = 0;

    use_counting_allocator(true);

    before = counts.allocs;
    track_begin();
    d = deferred_new();
    *bare = track_end(before);
    deferred_unref(d);

    before = counts.allocs;
    track_begin();
    d = deferred_new();
    if (!d || deferred_add_callback(d, add_one, NULL) != 0)
        rc = -1;
    *one_cb = track_end(before);
    deferred_unref(d);

    use_counting_allocator(false);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Peers                                                               */
/* ------------------------------------------------------------------ */

/*
 * A peer is another runtime running the same workloads from a script in
 * bench/peers/.  The script prints one "name<TAB>ns_per_op" line per
 * workload on its standard output.
 */
#define PEER_MAX_FIGURES 8

typedef struct peer {
    const char *id;     /* "node", "twisted": used in the tsv lines */
    const char *label;  /* "Node Promise": used in the sentences */
    const char *script; /* file name in the peers directory */
    double goal;        /* our goal for the chain10 speed-up, or 0 */
    bool found;         /* the runtime is installed */
    bool ran;           /* the script ran and exited 0 */
    char why[256];      /* why it did not run */
    size_t n;
    struct {
        char name[32];
        double ns;
    } fig[PEER_MAX_FIGURES];
} peer_t;

static peer_t peers[] = {
    {"node", "Node Promise", "chain10.js", 8.0, false, false, "", 0, {{"", 0}}},
    {"node-streams", "Node object-mode streams", "stream_node.js", 0.0, false,
     false, "", 0, {{"", 0}}},
    {"rxjs", "RxJS", "stream_rxjs.js", 0.0, false, false, "", 0, {{"", 0}}},
    {"twisted", "Twisted Deferred", "twisted_bench.py", 200.0, false, false, "",
     0, {{"", 0}}},
};

#define N_PEERS (sizeof peers / sizeof peers[0])

static bool is_file(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Look for an executable called name along $PATH; the full path is left in
 * buf. */
static bool find_in_path(const char *name, char *buf, size_t size)
{
    const char *path = getenv("PATH");

    while (path && *path) {
        const char *end = strchr(path, ':');
        size_t len = end ? (size_t)(end - path) : strlen(path);
        int n = snprintf(buf, size, "%.*s/%s", (int)(len ? len : 1),
                         len ? path : ".", name);

        if (n > 0 && (size_t)n < size && access(buf, X_OK) == 0 && is_file(buf))
            return true;
        path = end ? end + 1 : NULL;
    }
    return false;
}

/* True when dir holds at least one of the peer scripts. */
static bool is_peers_dir(const char *dir)
{
    char path[PATH_MAX];

    for (size_t i = 0; i < N_PEERS; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, peers[i].script);
        if (is_file(path))
            return true;
    }
    return false;
}

/*
 * Where the peer scripts are: --peers-dir, else the directory compiled in
 * as BENCH_PEERS_DIR, else bench/peers under the current directory, else
 * next to the binary (its directory's peers/, or ../../bench/peers from
 * it, which covers libtool's .libs/), looked up from argv[0] and from
 * /proc/self/exe.  NULL when none holds a script.
 */
static const char *locate_peers_dir(void)
{
    static char buf[PATH_MAX];
    char base[PATH_MAX];
    const char *from[2];
    ssize_t len;

    if (opt.peers_dir)
        return opt.peers_dir;
#if defined(BENCH_PEERS_DIR)
    if (is_peers_dir(BENCH_PEERS_DIR))
        return BENCH_PEERS_DIR;
#endif
    if (is_peers_dir("bench/peers"))
        return "bench/peers";

    from[0] = opt.argv0;
    len = readlink("/proc/self/exe", base, sizeof base - 1);
    base[len > 0 ? len : 0] = '\0';
    from[1] = base;
    for (int i = 0; i < 2; i++) {
        const char *slash;
        int dirlen;

        if (!from[i] || !(slash = strrchr(from[i], '/')))
            continue;
        dirlen = (int)(slash - from[i]);
        snprintf(buf, sizeof buf, "%.*s/peers", dirlen, from[i]);
        if (is_peers_dir(buf))
            return buf;
        snprintf(buf, sizeof buf, "%.*s/../../bench/peers", dirlen, from[i]);
        if (is_peers_dir(buf))
            return buf;
        snprintf(buf, sizeof buf, "%.*s/../bench/peers", dirlen, from[i]);
        if (is_peers_dir(buf))
            return buf;
    }
    return NULL;
}

/*
 * Run argv, its standard output captured into out (NUL-terminated, cut at
 * size - 1) and its standard error passed through (or dropped when quiet).
 * Returns the exit status, or -1 when it could not run.
 */
static int run_capture(char *const argv[], char *out, size_t size, bool quiet)
{
    int fd[2];
    size_t used = 0;
    pid_t pid;
    int status;

    if (pipe(fd) != 0)
        return -1;
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid < 0) {
        close(fd[0]);
        close(fd[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(fd[1], STDOUT_FILENO);
        close(fd[0]);
        close(fd[1]);
        if (quiet && !freopen("/dev/null", "w", stderr))
            _exit(127);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(fd[1]);
    for (;;) {
        char sink[256];
        char *dst = used + 1 < size ? out + used : sink;
        size_t room = used + 1 < size ? size - 1 - used : sizeof sink;
        ssize_t n = read(fd[0], dst, room);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (dst != sink)
            used += (size_t)n;
    }
    out[used] = '\0';
    close(fd[0]);
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            return -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Parse the "name<TAB>ns" lines of a peer's output into p->fig. */
static void parse_peer_output(peer_t *p, char *text)
{
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        char *tab = strchr(line, '\t');
        char *end;
        double ns;

        if (!tab || p->n == PEER_MAX_FIGURES)
            continue;
        *tab = '\0';
        ns = strtod(tab + 1, &end);
        if (end == tab + 1 || !(ns > 0))
            continue;
        snprintf(p->fig[p->n].name, sizeof p->fig[p->n].name, "%s", line);
        p->fig[p->n].ns = ns;
        p->n++;
    }
}

/* Say why peer p did not run. */
static void peer_why(peer_t *p, const char *fmt, ...)
    DEFERRED_PRINTF(2, 3);
static void peer_why(peer_t *p, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(p->why, sizeof p->why, fmt, ap);
    va_end(ap);
}

/* Run one peer's script with the interpreter at interp. */
static void run_peer(peer_t *p, const char *interp, const char *dir)
{
    char script[PATH_MAX];
    char out[4096];
    char *argv[4];
    int argc = 0, rc, n;

    n = snprintf(script, sizeof script, "%s/%s", dir, p->script);
    if (n < 0 || (size_t)n >= sizeof script || !is_file(script)) {
        peer_why(p, "%s not found", script);
        return;
    }
    argv[argc++] = (char *)interp;
    argv[argc++] = script;
    if (opt.quick)
        argv[argc++] = (char *)"--quick";
    argv[argc] = NULL;
    rc = run_capture(argv, out, sizeof out, false);
    if (rc != 0) {
        peer_why(p, "%s %s exited with status %d", interp,
                 script, rc);
        return;
    }
    /* A script whose runtime lacks a package (RxJS) says so with one
     * "skip<TAB>reason" line. */
    if (strncmp(out, "skip\t", 5) == 0) {
        out[strcspn(out, "\n")] = '\0';
        peer_why(p, "%s", out + 5);
        return;
    }
    parse_peer_output(p, out);
    p->ran = p->n > 0;
    if (!p->ran)
        peer_why(p, "%s printed no figures", script);
}

/*
 * Run every installed peer.  The .js scripts (Promise, object-mode
 * streams, RxJS) run on "node" (or "nodejs") along $PATH;
 * Twisted is looked for in /usr/bin/python3 (Debian's python3-twisted),
 * then in the python3 along $PATH.
 */
static void run_peers(void)
{
    const char *dir = locate_peers_dir();
    char interp[PATH_MAX];

    for (size_t i = 0; i < N_PEERS; i++) {
        peer_t *p = &peers[i];

        if (!dir) {
            peer_why(p,
                     "peer scripts not found (use --peers-dir DIR)");
            continue;
        }
        if (strstr(p->script, ".js")) {
            p->found = find_in_path("node", interp, sizeof interp) ||
                       find_in_path("nodejs", interp, sizeof interp);
            if (!p->found)
                peer_why(p, "node not found on PATH");
        } else {
            char check[PATH_MAX + 32];
            char *argv[4] = {interp, (char *)"-c", (char *)"import twisted", NULL};

            snprintf(interp, sizeof interp, "/usr/bin/python3");
            p->found = is_file(interp) &&
                       run_capture(argv, check, sizeof check, true) == 0;
            if (!p->found && find_in_path("python3", interp, sizeof interp))
                p->found = run_capture(argv, check, sizeof check, true) == 0;
            if (!p->found)
                peer_why(p,
                         "no python3 with Twisted found (python3-twisted)");
        }
        if (p->found)
            run_peer(p, interp, dir);
    }
}

/* What one operation of a peer's workload is, for the labels. */
static const char *peer_unit(const char *name)
{
    if (strcmp(name, "gather") == 0)
        return "elem";
    if (strcmp(name, "stream") == 0 || strcmp(name, "multifire") == 0)
        return "row";
    return "op";
}

/* Our figure for a workload of the given name, or NAN.  The peers' gather
 * gathers 100,000 promises or Deferreds: it compares with gather-100k. */
static double our_ns(const char *name)
{
    if (strcmp(name, "gather") == 0)
        name = "gather-100k";
    for (size_t i = 0; i < N_WORKLOADS; i++)
        if (results[i].ran && strcmp(workloads[i].name, name) == 0)
            return results[i].ns;
    return NAN;
}

static void print_peers(void)
{
    bool any = false;

    printf("\nPeers (same machine, same run; speed-up = peer ns / our ns):\n");
    for (size_t i = 0; i < N_PEERS; i++) {
        const peer_t *p = &peers[i];

        if (!p->ran) {
            printf("  %-12s not run: %s\n", p->id, p->why);
            continue;
        }
        any = true;
        for (size_t k = 0; k < p->n; k++) {
            double ours = our_ns(p->fig[k].name);

            printf("  %-12s %-14s %10.1f ns/%-4s", p->id, p->fig[k].name,
                   p->fig[k].ns, peer_unit(p->fig[k].name));
            if (isnan(ours)) {
                printf("   (no libdeferred %s workload yet)\n", p->fig[k].name);
                continue;
            }
            printf("   ours %8.1f   %s: %.1fx %s than %s", ours,
                   p->fig[k].name,
                   p->fig[k].ns >= ours ? p->fig[k].ns / ours : ours / p->fig[k].ns,
                   p->fig[k].ns >= ours ? "faster" : "slower", p->label);
            if (p->goal > 0 && strcmp(p->fig[k].name, "chain10") == 0)
                printf(" (goal: %.0fx)", p->goal);
            putchar('\n');
        }
    }
    if (any && opt.quick)
        printf("  (--quick: the peers ran small sizes once, cold; their figures "
               "are a smoke test, not a measure)\n");
}

static void print_peers_tsv(void)
{
    for (size_t i = 0; i < N_PEERS; i++) {
        if (!peers[i].ran) {
            fprintf(stderr, "deferred-bench: peer %s not run: %s\n", peers[i].id,
                    peers[i].why);
            continue;
        }
        for (size_t k = 0; k < peers[i].n; k++)
            printf("peer:%s:%s\t%.1f\n", peers[i].id, peers[i].fig[k].name,
                   peers[i].fig[k].ns);
    }
}

/* ------------------------------------------------------------------ */
/* Output                                                              */
/* ------------------------------------------------------------------ */

/* Format x with the given precision, or "-" when it is not a number. */
static const char *fmt_num(char *buf, size_t size, double x, int prec,
                           const char *suffix)
{
    if (isnan(x) || x <= 0)
        snprintf(buf, size, "-");
    else
        snprintf(buf, size, "%.*f%s", prec, x, suffix);
    return buf;
}

static void print_table(void)
{
    char a[32], b[32], c[32];

    printf("%-15s %10s %12s %8s %8s %10s\n", "workload", "ns/op", "floor ns/op",
           "ratio", "target", "allocs/op");
    for (size_t i = 0; i < N_WORKLOADS; i++) {
        const workload_t *w = &workloads[i];
        const result_t *r = &results[i];

        if (!r->ran)
            continue;
        printf("%-15s %10.1f %12s %8s %8s %10.2f\n", w->name, r->ns,
               fmt_num(a, sizeof a, r->floor_ns, 1, ""),
               fmt_num(b, sizeof b, r->ratio, 2, "x"),
               fmt_num(c, sizeof c, w->target_ratio, 1, "x"), r->allocs);
    }
    printf("\n");
    for (size_t i = 0; i < N_WORKLOADS; i++) {
        if (results[i].ran && workloads[i].note)
            printf("  %s (%zu %ss per run, %d runs).\n", workloads[i].note,
                   results[i].ops, workloads[i].unit, results[i].runs);
    }
}

static void print_tsv(void)
{
    char a[32], b[32], c[32];

    for (size_t i = 0; i < N_WORKLOADS; i++) {
        const workload_t *w = &workloads[i];
        const result_t *r = &results[i];

        if (!r->ran)
            continue;
        printf("%s\t%.2f\t%s\t%s\t%s\t%.2f\n", w->name, r->ns,
               fmt_num(a, sizeof a, r->floor_ns, 2, ""),
               fmt_num(b, sizeof b, r->ratio, 3, ""),
               fmt_num(c, sizeof c, w->target_ratio, 2, ""), r->allocs);
    }
}

static void print_memory(const memory_figure_t *bare, const memory_figure_t *one_cb)
{
    printf("\nMemory (through the allocator hook):\n");
#if defined(BENCH_HAVE_USABLE_SIZE)
    printf("  pending deferred with one callback: %zu bytes requested "
           "(%zu bytes malloc_usable_size), %zu allocation%s%s\n",
           one_cb->requested, one_cb->usable, one_cb->allocs,
           one_cb->allocs == 1 ? "" : "s", one_cb->exact ? "" : " (inexact)");
    printf("  pending deferred, no callback:      %zu bytes requested "
           "(%zu bytes malloc_usable_size), %zu allocation%s\n",
           bare->requested, bare->usable, bare->allocs,
           bare->allocs == 1 ? "" : "s");
#else
    printf("  pending deferred with one callback: %zu bytes requested, "
           "%zu allocations\n", one_cb->requested, one_cb->allocs);
    printf("  pending deferred, no callback:      %zu bytes requested, "
           "%zu allocations\n", bare->requested, bare->allocs);
#endif
    for (size_t i = 0; i < N_WORKLOADS; i++) {
        if (results[i].ran && strcmp(workloads[i].name, "chain10") == 0)
            printf("  allocations per chain10: %.2f (the deferred and one heap "
                   "block for entries 4 to 12; a per-thread cache serves both "
                   "in the steady state)\n",
                   results[i].allocs);
    }
}

static void print_memory_tsv(const memory_figure_t *bare,
                             const memory_figure_t *one_cb)
{
    printf("mem:pending_deferred_1cb_bytes\t%zu\n", one_cb->requested);
#if defined(BENCH_HAVE_USABLE_SIZE)
    printf("mem:pending_deferred_1cb_usable_bytes\t%zu\n", one_cb->usable);
#endif
    printf("mem:pending_deferred_1cb_allocs\t%zu\n", one_cb->allocs);
    printf("mem:pending_deferred_bytes\t%zu\n", bare->requested);
}

/* ------------------------------------------------------------------ */
/* main                                                                */
/* ------------------------------------------------------------------ */

static void usage(FILE *to)
{
    fprintf(to,
            "usage: deferred-bench [--quick] [--tsv] [--runs N] [--only NAME]\n"
            "                      [--peers-dir DIR] [--no-peers]\n"
            "  --quick          small sizes and 3 runs (a smoke test)\n"
            "  --tsv            tab-separated lines: name, ns/op, floor ns/op,\n"
            "                   ratio, target ratio, allocs/op; then\n"
            "                   mem:<figure>\\t<value> and peer:<peer>:<name>\\t<ns>\n"
            "  --runs N         timed runs of each workload and floor (default 7)\n"
            "  --only NAME      run only this workload\n"
            "  --peers-dir DIR  where the peer scripts (bench/peers) are\n"
            "  --no-peers       do not run Node or Twisted\n"
            "Workloads:");
    for (size_t i = 0; i < N_WORKLOADS; i++)
        fprintf(to, " %s", workloads[i].name);
    fprintf(to, "\nExit status: 0, or 1 when a computed result is wrong.\n");
}

static int parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];

        if (strcmp(a, "--quick") == 0) {
            opt.quick = true;
        } else if (strcmp(a, "--tsv") == 0) {
            opt.tsv = true;
        } else if (strcmp(a, "--no-peers") == 0) {
            opt.peers = false;
        } else if (strcmp(a, "--runs") == 0 && i + 1 < argc) {
            opt.runs = atoi(argv[++i]);
            if (opt.runs < 1 || opt.runs > 1000) {
                fprintf(stderr, "deferred-bench: --runs wants 1 to 1000\n");
                return -1;
            }
        } else if (strcmp(a, "--only") == 0 && i + 1 < argc) {
            opt.only = argv[++i];
        } else if (strcmp(a, "--peers-dir") == 0 && i + 1 < argc) {
            opt.peers_dir = argv[++i];
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        } else {
            fprintf(stderr, "deferred-bench: unknown argument %s\n", a);
            usage(stderr);
            return -1;
        }
    }
    if (opt.runs == 0)
        opt.runs = opt.quick ? 3 : 7;
    return 0;
}

int main(int argc, char **argv)
{
    memory_figure_t bare, one_cb;
    bool ok = true;
    bool any = false;

    opt.argv0 = argv[0];
    if (parse_args(argc, argv) != 0)
        return 2;

    if (!opt.tsv) {
        printf("libdeferred %s benchmark%s: %d timed runs of each workload and "
               "its floor, interleaved;\nmedians reported, ratio = median of the "
               "per-run workload/floor ratios\n\n",
               deferred_version(), opt.quick ? " (--quick: small sizes)" : "",
               opt.runs);
        fflush(stdout);
    }

    if (measure_pending(&bare, &one_cb) != 0) {
        fprintf(stderr, "deferred-bench: could not make a pending deferred "
                        "with one callback\n");
        ok = false;
    }

    for (size_t i = 0; i < N_WORKLOADS; i++) {
        if (opt.only && strcmp(opt.only, workloads[i].name) != 0)
            continue;
        any = true;
        if (measure(&workloads[i], &results[i]) != 0)
            ok = false;
    }
    if (!any) {
        fprintf(stderr, "deferred-bench: no workload called %s\n", opt.only);
        return 2;
    }

    if (opt.peers)
        run_peers();

    if (opt.tsv) {
        print_tsv();
        print_memory_tsv(&bare, &one_cb);
        if (opt.peers)
            print_peers_tsv();
    } else {
        print_table();
        print_memory(&bare, &one_cb);
        if (opt.peers)
            print_peers();
        else
            printf("\nPeers: not run (--no-peers).\n");
    }

    if (!ok) {
        fprintf(stderr, "deferred-bench: a workload computed a wrong result\n");
        return 1;
    }
    return 0;
}
