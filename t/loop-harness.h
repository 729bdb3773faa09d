/*
 * t/loop-harness.h: one test source, every loop.  A harness makes a
 * deferred_loop_t of one adapter over a loop it owns, runs it and frees
 * it; t/test-loop.c runs each of its scenarios once per harness listed in
 * tl_harnesses (t/loop-harness.c: libev always when configured, libuv,
 * GLib and the clock when built).
 */
#ifndef LOOP_HARNESS_H
#define LOOP_HARNESS_H

#include <stddef.h>

#include <deferred/loop.h>

typedef struct tl_harness {
    const char *name;
    /* A fresh loop of this kind, with one reference; *state is the
     * harness's.  NULL with errno ENOMEM (and nothing left) when the
     * library's allocations fail. */
    deferred_loop_t *(*make)(void **state);
    /* Run the loop until the library has nothing left on it
     * (deferred_loop_alive(l) == 0, or the loop's own run returned). */
    void (*run)(deferred_loop_t *l, void *state);
    /* One non-blocking iteration. */
    void (*run_nowait)(deferred_loop_t *l, void *state);
    /* Drop the loop's reference and free the underlying loop (run what its
     * library needs to finish closing handles first). */
    void (*destroy)(deferred_loop_t *l, void *state);
} tl_harness_t;

extern const tl_harness_t tl_harness_ev;
extern const tl_harness_t tl_harness_uv;
extern const tl_harness_t tl_harness_glib;
extern const tl_harness_t tl_harness_clock;

/* The harnesses built into this test program, and how many. */
extern const tl_harness_t *const tl_harnesses[];
extern const size_t tl_n_harnesses;

#endif /* LOOP_HARNESS_H */
