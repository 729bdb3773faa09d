/*
 * testutil.h: what every Check program of libdeferred shares.
 *
 * A counting allocator (installed with deferred_set_allocator()) that knows
 * how many blocks are alive and can fail the Nth allocation from now, so
 * every test can prove that nothing leaks and the out-of-memory test can
 * fail each allocation of a scenario in turn.  A record log: callbacks that
 * append what they see (a value, a failure code, the failure object) to one
 * global list the test reads.  Small callbacks (add_one, fail_with,
 * return_deferred, recover, ...), counted destroy functions and released
 * values, a report hook that captures what the library reports, and the
 * checked fixture (tu_setup/tu_teardown) that resets all of it, so the
 * tests also pass with CK_FORK=no (as valgrind runs them).  And the one
 * out-of-memory sweep (tu_oom_sweep) that every layer's fault-injection
 * tests run their scenarios through.
 */
#ifndef TESTUTIL_H
#define TESTUTIL_H

#include <check.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <deferred.h>

/* ---- the counting, failing allocator ---- */

void tu_install_allocator(void);
/* Blocks alive now, and allocations made (malloc and realloc(NULL)) since
 * the last tu_reset_counts(). */
size_t tu_live(void);
size_t tu_total(void);
void tu_reset_counts(void);
/* Fail only the nth allocation attempt (malloc or realloc) from now;
 * n == 0 disables injection. */
void tu_fail_at(unsigned long n);
/* Fail the nth allocation attempt from now and every one after it. */
void tu_fail_from(unsigned long n);
/* Whether an allocation was failed since the last tu_fail_at/_from. */
bool tu_failure_injected(void);
/* Allocation attempts seen since the last tu_fail_at/_from. */
unsigned long tu_attempts(void);

/* ---- the report hook ---- */

#define TU_TEXT 4096
struct tu_reports {
    int unhandled;          /* DEFERRED_REPORT_UNHANDLED reports */
    int already_fired;      /* DEFERRED_REPORT_ALREADY_FIRED reports */
    int total;
    int last_kind;
    int last_code;
    bool saw_enomem;        /* some reported failure had code ENOMEM */
    const char *last_new_file;  /* the reported deferred's sites (debug) */
    int last_new_line;
    const char *last_fire_file;
    int last_fire_line;
    char last_message[TU_TEXT];
    char last_story[TU_TEXT];
};
extern struct tu_reports tu_reports;
void tu_report_hook(const deferred_report_info_t *report, void *arg);

/* ---- the record log ---- */

enum tu_kind { TU_NONE = 1, TU_VALUE, TU_FAILURE, TU_DEFERRED };

struct tu_entry {
    int tag;                          /* the callback's tag */
    int kind;                         /* enum tu_kind */
    intptr_t value;                   /* TU_VALUE: the integer seen */
    int code;                         /* TU_FAILURE: its code */
    const deferred_failure_t *failure; /* TU_FAILURE: the object itself */
    int depth;                        /* tu_depth when it ran */
};

#define TU_MAX_LOG 256
struct tu_log {
    int n;                            /* entries recorded (may exceed max) */
    struct tu_entry e[TU_MAX_LOG];
};
extern struct tu_log tu_log;
/* Incremented by callbacks that do nested work, recorded by tu_record. */
extern int tu_depth;

#define TAG(n) ((void *)(intptr_t)(n))
#define ARGI(a) ((intptr_t)(a))

void tu_log_reset(void);
/* True when an entry of the log is an ENOMEM failure. */
bool tu_log_has_enomem(void);
/* Number of entries with this tag. */
int tu_log_count(int tag);

/* Appends what it sees to tu_log with tag ARGI(arg); returns v unchanged.
 * Tracked values (tu_tracked) are recorded by their integer. */
deferred_value_t tu_record(deferred_value_t v, void *arg);

/* ---- callbacks ---- */

/* x + 1 on an integer (or tracked) value; returns an integer value. */
deferred_value_t tu_add_one(deferred_value_t v, void *arg);
/* Releases v; returns a new USER failure with code ARGI(arg) and message
 * "fail_with <code>".  tu_last_failure is set to it; tu_fail_calls counts. */
deferred_value_t tu_fail_with(deferred_value_t v, void *arg);
extern const deferred_failure_t *tu_last_failure;
extern int tu_fail_calls;
/* Releases v; returns the deferred arg with a new reference (chaining). */
deferred_value_t tu_return_deferred(deferred_value_t v, void *arg);
/* Releases v; returns the integer ARGI(arg). */
deferred_value_t tu_return_int(deferred_value_t v, void *arg);
/* Errback: releases the failure, returns the integer ARGI(arg). */
deferred_value_t tu_recover(deferred_value_t v, void *arg);
/* Returns v unchanged. */
deferred_value_t tu_pass(deferred_value_t v, void *arg);

/* Destroy function: increments *(int *)arg. */
void tu_count_destroy(void *arg);

/* A counted argument allocated through deferred_malloc: its destroy
 * increments *counter and frees it. */
struct tu_carg {
    int tag;
    int *counter;
};
struct tu_carg *tu_carg(int tag, int *counter);
void tu_carg_destroy(void *arg);
/* Records like tu_record, with the tag of a struct tu_carg argument. */
deferred_value_t tu_record_carg(deferred_value_t v, void *arg);

/* A tracked value: an integer in a block from deferred_malloc, whose
 * release frees it and increments tu_released.  Falls back to an ENOMEM
 * failure value when the allocation fails. */
extern int tu_released;
deferred_value_t tu_tracked(intptr_t x);
bool tu_is_tracked(deferred_value_t v);
intptr_t tu_tracked_get(deferred_value_t v);

/* Cancellers: count into *(int *)arg; the second also fires d with 99. */
void tu_canceller_count(deferred_t *d, void *arg);
void tu_canceller_fire(deferred_t *d, void *arg);

/* ---- the out-of-memory sweep ---- */

/* One run of a scenario.  The scenario checks every return and notes in
 * saw when ENOMEM surfaced (an action's -ENOMEM, a constructor's NULL, an
 * ENOMEM failure as a result), sets ok when its normal result was correct,
 * and cleans up on every path. */
struct tu_oom {
    bool saw;       /* ENOMEM observed */
    bool ok;        /* the normal result was correct */
    void *arg;      /* tu_oom_sweep's arg */
};
typedef void (*tu_oom_fn)(struct tu_oom *r);

/* Flags of tu_oom_sweep. */
enum {
    /* After failing the Nth allocation alone, sweep again failing the
     * Nth and every one after it. */
    TU_OOM_STICKY = 1u << 0,
    /* Every run with a failure injected must surface ENOMEM (by default
     * it must surface ENOMEM or give the normal result: a failure a
     * documented fallback absorbs). */
    TU_OOM_STRICT = 1u << 1,
    /* At least half the runs with a failure injected surface ENOMEM; the
     * others are not checked run by run (a few failed allocations are
     * absorbed by documented fallbacks). */
    TU_OOM_HALF = 1u << 2,
    /* Nothing may be reported but, under injection, an unhandled ENOMEM
     * or ECANCELED failure (an inner cancelled because it could not be
     * guarded). */
    TU_OOM_QUIET = 1u << 3,
};

/* Run fn without injection (it must give its normal result, without
 * ENOMEM), then with the 1st, 2nd, ... Nth allocation failing until a run
 * injects no failure.  Before each run the record log, the reports and
 * tu_released are reset; after it the log and the reports are searched
 * for ENOMEM.  For each N: no crash, no block alive afterwards, the run
 * ended cleanly (see the flags); the run that injected nothing gave the
 * normal result.  Prints the count and returns the number of allocation
 * points (the N that failed an allocation in the first pass). */
unsigned long tu_oom_sweep(const char *name, tu_oom_fn fn, void *arg,
                           unsigned flags);

/* The N of the run tu_oom_sweep() is making (0: the run without
 * injection), for the scenarios' messages. */
unsigned long tu_oom_current(void);

/* An action's return: 0, or -ENOMEM (noted).  Anything else fails. */
#define TU_ACT(r, expr)                                                      \
    do {                                                                     \
        int rc_ = (expr);                                                    \
        if (rc_ == -ENOMEM)                                                  \
            (r)->saw = true;                                                 \
        else                                                                 \
            ck_assert_msg(rc_ == 0, "%s returned %d", #expr, rc_);           \
    } while (0)

/* A constructor's result, or note ENOMEM (errno must say so) and bail out
 * through label. */
#define TU_NEW(r, var, expr, label)                                          \
    do {                                                                     \
        errno = 0;                                                           \
        (var) = (expr);                                                      \
        if (!(var)) {                                                        \
            ck_assert_msg(errno == ENOMEM, "%s: NULL with errno %d", #expr,  \
                          errno);                                            \
            (r)->saw = true;                                                 \
            goto label;                                                      \
        }                                                                    \
    } while (0)

/* Whether f, or a failure it wraps or groups, is ENOMEM. */
bool tu_failure_has_enomem(const deferred_failure_t *f);
/* Note in r whether v is a failure holding ENOMEM; returns v. */
deferred_value_t tu_oom_note(struct tu_oom *r, deferred_value_t v);
/* Take d's result and release it; note an ENOMEM failure.  Returns the
 * integer (tracked or plain), or -1000 - code for a failure. */
intptr_t tu_oom_take(struct tu_oom *r, deferred_t *d);
/* tu_tracked(x), noting ENOMEM when it could not be made. */
deferred_value_t tu_oom_tracked(struct tu_oom *r, intptr_t x);
/* A new USER failure, noting ENOMEM when only the static one was made. */
deferred_failure_t *tu_oom_ufail(struct tu_oom *r, int code);

/* ---- strings ---- */

/* True when s contains the decimal n, not as part of a longer number. */
bool tu_contains_number(const char *s, long n);

/* ---- depth ---- */

/* The stack every "no recursion that grows with input" test runs on. */
#define TU_SMALL_STACK (256 * 1024)
/* Run fn(arg) on a new thread with a TU_SMALL_STACK stack and wait for
 * it: a recursion that grows with input overflows it and crashes the
 * test.  Fails the test if the thread cannot be made. */
void tu_run_small_stack(void (*fn)(void *), void *arg);

/* ---- the fixture ---- */

void tu_setup(void);
void tu_teardown(void);

/* Run the suite with CK_NORMAL; returns the exit status for main(). */
int tu_run_suite(Suite *s);

#endif /* TESTUTIL_H */
