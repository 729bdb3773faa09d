/*
 * fuzz/fuzz-util.h: what the fuzz harnesses share.
 *
 * A reader over the input bytes, the counting allocator given to the
 * library, tracked values (tokens) that must be released exactly once,
 * tracked arguments whose destroy function must be called exactly once,
 * and the end-of-input check.  A broken invariant prints one line naming
 * it and calls abort(), which libFuzzer and the regression driver report
 * as a crash.
 */
#ifndef FUZZ_UTIL_H
#define FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "deferred.h"
#include "deferred/combinators.h"

/* The entry point of every harness (libFuzzer's), also called by
 * fuzz/regress-main.c. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- the input ---------------------------------------------------------- */

typedef struct fz_reader {
    const uint8_t *p;
    size_t n;
} fz_reader_t;

/* The next byte, 0 once the input is exhausted. */
uint8_t fz_byte(fz_reader_t *r);
/* True while bytes remain. */
int fz_more(const fz_reader_t *r);

/* ---- tracing ----------------------------------------------------------- */

/* True when the environment variable FUZZ_TRACE is set (read once, by
 * fz_setup()): the harnesses then print each operation to stderr, which
 * is how a crashing input is turned into a C reproducer. */
extern int fz_tracing;
/* True when FUZZ_AVOID_PENDING is set: the harnesses then steer clear of
 * the crashes kept in fuzz/pending/ (each harness says how), so that a
 * campaign explores past them instead of finding them again. */
extern int fz_avoid_pending;
void fz_trace(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define FZ_TRACE(...) \
    do { \
        if (fz_tracing) \
            fz_trace(__VA_ARGS__); \
    } while (0)

/* ---- failing the run ---------------------------------------------------- */

/* Print "fuzz: invariant broken: <what>" and abort(). */
void fz_fail(const char *what) __attribute__((noreturn));

/* Tracing (FUZZ_TRACE): each call of the API that returns a status is
 * printed with it. */
#define TRI(call) \
    do { \
        int rc_ = (call); \
        FZ_TRACE("  %s -> %d", #call, rc_); \
    } while (0)

/* Put d (a reference, or NULL) in slots[i], dropping what was there. */
void fz_set_slot(deferred_t **slots, int i, deferred_t *d);

/* How many side effects (fires, cancels from inside callbacks) an input
 * may still make, set by each harness at its start; a harness asks
 * fz_side_effect_allowed() before each one, which spends one. */
extern int fz_side_budget;
int fz_side_effect_allowed(void);

#define FZ_CHECK(cond, what) \
    do { \
        if (!(cond)) \
            fz_fail(what); \
    } while (0)

/* ---- the counting allocator -------------------------------------------- */

/* Install the counting allocator and a silent report hook (once). */
void fz_setup(void);
/* Blocks the library holds now. */
long fz_live_blocks(void);
/* Make the n-th allocation from now (n >= 1) fail, once; 0 turns it off. */
void fz_fail_alloc_after(unsigned n);
/* Reports the library made through the report hook during this input. */
unsigned long fz_reports(void);

/* ---- tracked values ---------------------------------------------------- */

/* A new tracked value: a token that must be released exactly once. */
deferred_value_t fz_token(void);
/* True when v is a token made by fz_token() (and not yet released). */
int fz_is_live_token(deferred_value_t v);
/* Tokens made and released during this input. */
unsigned fz_tokens_made(void);

/* ---- tracked arguments ------------------------------------------------- */

/*
 * An argument given to the library with a destroy function (or without
 * one, when destroy_expected is 0): fz_destroy() must be called on it
 * exactly once when destroy_expected, never otherwise.  The harness keeps
 * its own data behind it (size bytes, zeroed).  Nothing is freed until
 * the end of the input, so a use after destroy is detected, not undefined.
 */
void *fz_arg_new(size_t size, int destroy_expected);
/* The destroy function to give the library. */
void fz_destroy(void *arg);
/* True once fz_destroy() was called on arg. */
int fz_arg_destroyed(const void *arg);

/* ---- the end of an input ----------------------------------------------- */

/* Call at the start of each input: clears the registries and counters. */
void fz_begin(void);
/* Call after every reference was dropped: checks that every token was
 * released once, every expected destroy called once, and that the
 * allocator holds no block; then frees the registries. */
void fz_end(void);

#endif /* FUZZ_UTIL_H */
