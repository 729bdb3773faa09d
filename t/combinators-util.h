/*
 * combinators-util.h: what the combinator tests (t/test-combinators-*.c)
 * share besides t/testutil.h: a recorder of what a callback saw, a few
 * small callbacks, and their fixture.
 *
 * The allocator, the report hook and the out-of-memory sweep are
 * testutil's.  The fixture (cb_setup/cb_teardown) is testutil's, and its
 * teardown also asserts that nothing was reported unless the test said it
 * expected it (expected_unhandled unhandled failures, nothing else).
 */
#ifndef COMBINATORS_UTIL_H
#define COMBINATORS_UTIL_H

#include "testutil.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <deferred/combinators.h>

/* Unhandled failures the running test expects to be reported. */
extern int expected_unhandled;

/* The integer of a plain or tracked (tu_tracked) value. */
intptr_t num(deferred_value_t v);
/* A new USER failure with this code. */
deferred_failure_t *user_failure(int code);

/* What a callback saw, for the tests to read. */
#define MAX_SEEN 32
struct seen {
    int n;
    bool failure[MAX_SEEN];
    int code[MAX_SEEN];
    intptr_t value[MAX_SEEN];
    bool none[MAX_SEEN];
};
extern struct seen seen;

/* Records what it sees in seen and passes it on. */
deferred_value_t record(deferred_value_t v, void *arg);
/* Returns v unchanged. */
deferred_value_t pass(deferred_value_t v, void *arg);
/* Records, then handles (drops) whatever it saw. */
deferred_value_t record_drop(deferred_value_t v, void *arg);
/* A canceller that fires its deferred with a tracked 99 (a loser that
 * succeeds late), counting into *(int *)arg. */
void succeed_canceller(deferred_t *d, void *arg);
/* The result of d taken out, and d dropped. */
deferred_value_t take_and_drop(deferred_t *d);

/* The checked fixture of every combinator test. */
void cb_setup(void);
void cb_teardown(void);

/* The flags of the combinators' out-of-memory sweeps: a few failed
 * allocations are absorbed by documented fallbacks (a failure made
 * without its message, a detached input whose reference is kept
 * instead), so at least half surface as ENOMEM; only what out of memory
 * itself caused may go unhandled. */
#define CB_OOM_FLAGS (TU_OOM_HALF | TU_OOM_QUIET)

/* The out-of-memory scenario of a gather (r->arg NULL) or of a race
 * (r->arg non-NULL), for tu_oom_sweep() with CB_OOM_FLAGS. */
void cb_oom_gather_race(struct tu_oom *r);

#endif /* COMBINATORS_UTIL_H */
