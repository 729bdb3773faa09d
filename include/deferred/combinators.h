/*
 * deferred/combinators.h: several deferreds folded into one, and the
 * deferred synchronisation primitives.
 *
 *  - deferred_gather(): every input's value, in input order, or the first
 *    failure (Twisted's gatherResults).
 *  - deferred_list(): every input's outcome, value or failure, in input
 *    order; optionally the first success or the first failure (Twisted's
 *    DeferredList).
 *  - deferred_race(): the first success, the others cancelled; a failure
 *    group when every input fails (Twisted's race).
 *  - deferred_merge(): single-shot and multi-fire deferreds merged into
 *    one multi-fire deferred that emits each result as it arrives, with
 *    backpressure (Twisted has no equivalent).
 *  - deferred_lock_t, deferred_semaphore_t, deferred_queue_t: FIFO waiters
 *    served by deferreds (Twisted's DeferredLock, DeferredSemaphore and
 *    DeferredQueue).
 *
 * Ownership of the inputs of gather, list and race.  The input array is
 * borrowed (it may be freed once the call returns) and so are the
 * deferreds in it: the combinator adds a reference of its own to each
 * input and appends one callback/errback pair to its chain.  It drops its
 * reference on an input when that input's result reaches the pair, or when
 * the combinator's deferred has fired or is freed (nobody can cancel
 * through it any more).  An input may appear more than once.  A
 * multi-fire input (multi.h) takes part through its end (deferred_multi_when_finished()):
 * its outcome is the stream's final value or failure, as when a callback
 * returns a multi-fire deferred.
 *
 * What each input's own chain sees after the pair (values and failures
 * move):
 *  - a value is taken by the combinator, and the input's chain continues
 *    with the empty value, as an inner deferred's chain does after
 *    chaining.  A value the combinator drops (a race loser, a failed
 *    gather's other results, anything arriving after the combinator has
 *    fired or been freed) is released exactly once;
 *  - a failure moves the same way by default: the combinator takes it
 *    (into its first-error, its array or its group, or drops it once it
 *    has fired) and the input's chain continues with the empty value, so
 *    a failure the combinator reports is not reported a second time as
 *    unhandled on the input (Twisted's consumeErrors=True; the old flag
 *    DEFERRED_CONSUME_ERRORS asks for it explicitly).  With
 *    DEFERRED_KEEP_ERRORS (gather and list) a failure is shared instead, as
 *    in Twisted by default: the combinator holds a reference and the
 *    input's chain keeps the failure, which is reported as unhandled if
 *    nothing handles it there.  deferred_race() and deferred_merge() always
 *    move: their inputs' chains continue with the empty value whatever
 *    their outcome.
 *
 * Firing.  The pairs run when the inputs fire, so the combinator's deferred
 * may fire before its constructor returns (when inputs had fired before it
 * was built, or when there are none); callbacks added to it afterwards run
 * at once, as on any fired deferred.  Inputs fired before the call are
 * seen in input order, as in Twisted: their pairs are appended once every
 * other pair is in place, first to last, so an input listed twice is seen
 * at its first index first (its later entries see what its chain went on
 * with, the empty value by default).  An input that fired but is paused,
 * or whose chain is running, is seen when its chain reaches the pair.
 *
 * Cancelling the combinator's deferred before it fires cancels each input
 * whose result it has not seen yet exactly once, in input order, also when
 * a canceller fires another input or cancels the combinator again (the
 * loop goes on where it was); the combinator
 * then fires as the results of those cancels dictate (gather: a first-error
 * wrapping ECANCELED; list: every outcome, the cancelled ones ECANCELED;
 * race: a failure group).  Once it has fired, cancelling it does nothing
 * to the inputs.  With deferred_ev_add_timeout() (ev.h) on the combinator's
 * deferred, the failure a timed-out cancel leaves becomes ETIMEDOUT, its
 * cause the first-error or group above.
 *
 * Bad input and allocation failure.  The constructors return NULL and set
 * errno: EINVAL when inputs is NULL while n > 0, when an entry of inputs
 * is NULL, or when flags holds a bit the function does not know; ENOMEM
 * when an allocation fails.  When they return NULL the inputs are as they
 * were: no result of theirs was taken, no callback of theirs ran because
 * of the call, and what the call left in their chains (at most a pair that
 * passes every result through unchanged) holds nothing alive.
 */
#ifndef DEFERRED_COMBINATORS_H
#define DEFERRED_COMBINATORS_H

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- results ----------------------------------------------------------- */

/*
 * gather and list fire with a deferred_array_t value (value.h), the type
 * the process's collect and batch stages deliver too: element i is input
 * i's outcome, in input order whatever the firing order.  Read it with
 * deferred_value_get_array(), deferred_array_size(), deferred_array_get()
 * (borrowed) and deferred_array_take() (moved out, the empty value left in
 * its place); releasing the value releases every element still in it.
 * For a list an element may be a failure value (test it with
 * deferred_value_is_failure()); it holds a reference of its own.
 */

/*
 * The value a race, or a list with DEFERRED_FIRE_ON_SUCCESS, fires with:
 * which input won and its value.  It travels as a plain value whose release
 * function releases value and frees the struct.  The fields may be read and
 * the value moved out (leave deferred_value_none() in its place).  It is
 * not an array: one outcome and the index of the input that gave it,
 * which an array of n outcomes could only say by a scan.
 */
typedef struct deferred_indexed {
    size_t index;
    deferred_value_t value;
} deferred_indexed_t;

/* The indexed result held by v (borrowed: v still owns it), or NULL when v
 * is not one. */
DEFERRED_EXPORT deferred_indexed_t *deferred_value_get_indexed(deferred_value_t v);

/* ---- gather, list, race ------------------------------------------------ */

/* Flags of gather and list. */
#define DEFERRED_CONSUME_ERRORS 0x1u  /* the default: failures move (kept for
                                       * compatibility; not with KEEP_ERRORS) */
#define DEFERRED_FIRE_ON_SUCCESS 0x2u /* list: fire with the first success */
#define DEFERRED_FIRE_ON_FAILURE 0x4u /* list: fail with the first failure */
#define DEFERRED_KEEP_ERRORS 0x8u     /* Twisted's way: an input's chain keeps
                                       * its failure (shared) after the pair */

/*
 * Gather: a new deferred (one reference, the caller's) that fires with a
 * deferred_array_t value holding every input's value in input order
 * (deferred_array_size() == n), once all have succeeded, whatever order
 * they fire in.  The callbacks of the returned deferred may run before
 * this returns (when every input had fired, or one had failed).
 *
 * Fail-fast: the first input to fail (in firing order; in input order for
 * inputs that had failed before the call) makes it fail at once with
 * deferred_failure_first_error(index, that failure) (code
 * DEFERRED_EFIRSTERROR; deferred_failure_index() gives the index and
 * deferred_failure_cause() the input's failure).  The values gathered so
 * far, and any that arrive later, are released.  Inputs still pending are
 * not cancelled (as in Twisted).
 *
 * flags: 0 (failures move into the gather: the failure it reports is
 * reported nowhere else), DEFERRED_CONSUME_ERRORS (the same, explicitly) or
 * DEFERRED_KEEP_ERRORS (each failed input keeps its failure too, as in
 * Twisted); see the header comment.  Both at once is EINVAL.
 *
 * No inputs (n == 0, inputs may then be NULL): it fires at once with an
 * empty array value (size 0).
 *
 * Cost: a constant number of allocations for the whole call (the state
 * with one slot per input, the array, and the deferred itself), none per
 * input when every input fires; each input's result costs O(1) (one
 * plain callback/errback pair per input, no scan), and the array is
 * filled in one pass when the last one arrives.  An input still pending
 * when the gather is settled without it (it failed fast, or its deferred
 * was freed first) is let go at once: its entry stays in its chain
 * without holding it, and the gather's state goes when the last such
 * entry is done (run, or dropped with its input).  Letting go allocates
 * nothing and cannot fail.
 */
DEFERRED_EXPORT deferred_t *deferred_gather(deferred_t *const *inputs, size_t n,
                                            unsigned flags);

/*
 * List: a new deferred that fires with a deferred_array_t value whose
 * element i is input i's outcome, whatever order they fire in: a plain
 * value, or a failure value (a reference of its own, so the array can be
 * freed and the input kept or the reverse).  Without flags it never fails.
 *
 * flags, any combination of:
 *  - DEFERRED_FIRE_ON_SUCCESS: the first input to succeed makes it fire at
 *    once with an indexed value (deferred_value_get_indexed(): the input's
 *    index and value).  Later values are released.  If every input fails,
 *    it still fires, with the array holding every failure (as Twisted's
 *    fireOnOneCallback does);
 *  - DEFERRED_FIRE_ON_FAILURE: the first input to fail makes it fail at
 *    once with deferred_failure_first_error(index, that failure), as
 *    deferred_gather() does;
 *  - DEFERRED_KEEP_ERRORS: each failed input's chain keeps its failure
 *    after the pair (shared with the array or the first-error), as in
 *    Twisted; without it the failure moves into the list (the default,
 *    also asked by DEFERRED_CONSUME_ERRORS; not both).  See the header
 *    comment.
 *
 * The callbacks of the returned deferred may run before this returns.
 *
 * No inputs: it fires at once with an empty array value, whatever the
 * flags (Twisted's DeferredList never fires when empty with
 * fireOnOneCallback; that wart is fixed).
 */
DEFERRED_EXPORT deferred_t *deferred_list(deferred_t *const *inputs, size_t n,
                                          unsigned flags);

/*
 * Race: a new deferred that fires with an indexed value (index and value)
 * of the first input to succeed.  At that moment every other input whose
 * result has not arrived is cancelled, exactly once, in input order; their
 * later results (values or failures, a canceller's value included) are
 * released and never reported.
 *
 * If every input fails, it fails with a deferred_failure_group() (code
 * DEFERRED_EGROUP) holding each input's failure at its index.
 *
 * The inputs' chains continue with the empty value after the race's pair,
 * whatever their outcome (Twisted's race consumes every result too): a
 * loser's failure, the ECANCELED of its cancel included, is never
 * reported as unhandled, and the late fire of a loser without a canceller
 * is swallowed (core.h).  When an input had succeeded before the call,
 * the race fires before this returns, and the others are cancelled once
 * every pair is in place.
 *
 * No inputs: it fails at once with an empty failure group (code
 * DEFERRED_EGROUP, size 0): "every input failed" holds vacuously, and no
 * input can ever succeed.
 */
DEFERRED_EXPORT deferred_t *deferred_race(deferred_t *const *inputs, size_t n);

/* ---- merge ------------------------------------------------------------- */

/*
 * Merge: a new multi-fire deferred (multi.h; one reference, the caller's),
 * the "stream", that emits every input's results as rows, in the order
 * they arrive, and ends after the last input has ended.
 *
 *  - A single-shot input gives one row: its result.  A multi-fire input
 *    gives each of its rows as it is emitted (the rows of several streams
 *    are interleaved as they come); its end gives no row when it ends with
 *    a value (that value is released), and one row when it ends failed.
 *  - Failures are rows.  An input's failure, or a failed row or failed
 *    end of a multi-fire input, is emitted as a failure row, with a
 *    context frame ("merge", "input <index>") added.  An errback in the
 *    stream's chain may recover it, row by row, and the stream goes on;
 *    one that no errback recovers ends the stream failed with it, as any
 *    multi-fire deferred does (multi.h), and the inputs that have not
 *    ended are cancelled.
 *  - The stream ends with the empty value once every input has ended and
 *    every row has gone through its chain.
 *  - It is returned PAUSED (pause count 1), so that no row reaches it
 *    before its chain is in place: add the per-row callbacks, then call
 *    deferred_unpause() once (rows may run before it returns).  Rows of
 *    inputs that fired before the call wait in their inputs until then
 *    (each is paused once, however often it is listed), and are emitted
 *    in input order, after any row that reached the paused stream
 *    meanwhile.
 *  - Backpressure, at O(1) per row whatever the number of inputs:
 *    whenever the stream holds rows back (it is paused, or a row's
 *    callback waits on a deferred), a row an input delivers is queued in
 *    the stream, and that input, if it is a multi-fire one that has not
 *    ended, is then paused with deferred_pause() (it queues its next rows
 *    and tells its own source, through its own flow hook, to stop).  The
 *    other inputs are left alone.  When the stream takes rows again, its
 *    queued rows go first, then the inputs it paused are unpaused, in the
 *    order they were paused, until it holds rows back again.  The stream's
 *    flow hook (deferred_multi_set_flow()) is the merge's: do not replace it.
 *    The inputs' flow hooks are left alone.
 *  - Cancelling the stream (deferred_cancel(), or cancelling its end)
 *    cancels every input that has not ended, once, in input order; their
 *    results are released and the stream ends with ECANCELED.  (As for
 *    any multi-fire deferred, while a row's callback waits on a deferred
 *    the cancel goes to that deferred instead.)
 *  - Dropping the stream's last reference before it ended lets the inputs
 *    go on, uncancelled; what they deliver later is released.  Keep the
 *    stream's reference while it runs: its end alone does not keep it.
 *
 * Inputs: the array and the deferreds are borrowed.  The merge holds a
 * reference on each input (and on a multi-fire input's end) until it has
 * ended or the stream is over.  It appends one pair to each single-shot
 * input, and to a multi-fire input one per-row pair and one pair on its
 * end; after them the input's chain continues with the empty value (the
 * merge takes every value and handles every failure, which is never
 * reported as unhandled on the input).  An input held back is paused
 * whole: the callbacks after the merge's pair wait too.  An input listed
 * twice is merged twice: the second pair sees what the first left, the
 * empty value (for one that fired before the call, right after the
 * first).
 *
 * No inputs (n == 0; inputs may then be NULL): a stream that has ended
 * already, with the empty value (still returned with a pause count of 1,
 * which deferred_unpause() may lift or not: nothing is left to run).
 *
 * Allocation: one block of state for the whole call and the stream; no
 * allocation per input (one entry in each input's chain; an input still
 * pending when the stream is over early is let go without allocating).
 * Rows cost nothing while the stream is idle; while it holds rows back,
 * one row per held input waits in the stream's queue and the rest in the
 * inputs.  A row the stream cannot queue (out of memory) ends the stream
 * with an ENOMEM failure after the rows it holds, and the inputs are
 * cancelled.
 *
 * NULL and errno: EINVAL (NULL inputs with n > 0, a NULL entry), ENOMEM;
 * the inputs are then as the header comment above says.
 */
DEFERRED_EXPORT deferred_t *deferred_merge(deferred_t *const *inputs, size_t n);

/* ---- lock and semaphore ----------------------------------------------- */

/*
 * A semaphore holds up to `limit` tokens.  Acquiring returns a deferred
 * that fires when a token is the caller's: at once when one is free,
 * otherwise when it is released to this waiter.  Waiters are served first
 * in, first out.  A lock is a semaphore of one token that knows whether it
 * is held.
 *
 * Both are refcounted: the constructor's reference is the caller's; a run
 * in progress (deferred_semaphore_run()) holds one of its own.  Waiting
 * acquires do not: when the last reference goes, every acquire still
 * waiting fails with ECANCELED (the semaphore that would serve it is gone)
 * and the semaphore is freed.  Tokens held at that moment are simply
 * forgotten.
 *
 * The semaphore holds a reference on each acquire that waits (as Twisted's
 * waiting list does), so a waiter is withdrawn by cancelling it: it leaves
 * the queue, nothing is acquired for it, and it fails with ECANCELED.
 * Dropping one's reference on a waiting plain acquire does not withdraw
 * it: it is still served in turn, and the token it then holds is never
 * given back (a waiting deferred_semaphore_run() is safe to drop: its fn
 * runs and the token is released after it).
 */
typedef struct deferred_semaphore deferred_semaphore_t;
typedef struct deferred_lock deferred_lock_t;

/* A semaphore of `tokens` free tokens (also its limit).  NULL with errno
 * EINVAL for zero tokens, or ENOMEM. */
DEFERRED_EXPORT deferred_semaphore_t *deferred_semaphore_new(size_t tokens);
/* Add a reference; returns s.  NULL gives NULL. */
DEFERRED_EXPORT deferred_semaphore_t *deferred_semaphore_ref(deferred_semaphore_t *s);
/* Drop a reference; the last fails the waiting acquires with ECANCELED
 * (their callbacks run before it returns) and frees s.  A run holding a
 * token does not keep s alive: when it ends, its release does nothing.
 * NULL: no-op. */
DEFERRED_EXPORT void deferred_semaphore_unref(deferred_semaphore_t *s);

/*
 * Acquire a token: a new deferred that fires with a borrowed value holding
 * s (deferred_value_make(s, NULL)) once the token is the caller's, who
 * must later call deferred_semaphore_release().  It fires before this
 * returns when a token is free.  NULL with errno EINVAL (NULL s) or ENOMEM
 * (nothing acquired).
 */
DEFERRED_EXPORT deferred_t *deferred_semaphore_acquire(deferred_semaphore_t *s);

/*
 * Give a token back.  If acquires are waiting, the token goes straight to
 * the first of them, which fires before this returns.  Returns 0, -EINVAL
 * (NULL s, or s losing its last reference), -EPERM when every token is
 * already free (a release without an acquire).
 */
DEFERRED_EXPORT int deferred_semaphore_release(deferred_semaphore_t *s);

/* Free tokens now, the limit given at creation, and the number of
 * acquires waiting.  0 for NULL s. */
DEFERRED_EXPORT size_t deferred_semaphore_tokens(const deferred_semaphore_t *s);
DEFERRED_EXPORT size_t deferred_semaphore_limit(const deferred_semaphore_t *s);
DEFERRED_EXPORT size_t deferred_semaphore_waiting(const deferred_semaphore_t *s);

/*
 * Run fn under a token (Twisted's DeferredSemaphore.run): acquire, then
 * call fn(v, arg) with v the borrowed value holding s; fn may return a
 * value, a failure or a deferred.  The token is released once fn's
 * outcome is known (when a returned deferred fires, on success and on
 * failure alike) or when the returned deferred is freed first, and then
 * the outcome goes on down the returned deferred's chain.
 *
 * Returns a new deferred firing with fn's outcome.  fn runs before this
 * returns when a token is free.  destroy (may be NULL) is called on arg
 * exactly once, whether or not fn ran.  Cancelling the returned deferred
 * while it waits for a token removes it from the queue (it fails with
 * ECANCELED and fn never runs); while it waits for fn's deferred, cancels
 * that deferred.
 *
 * NULL with errno EINVAL (NULL s or fn) or ENOMEM; destroy(arg) has then
 * been called, fn has not run and no token is held.
 */
DEFERRED_EXPORT deferred_t *deferred_semaphore_run(deferred_semaphore_t *s,
                                                   deferred_fn fn, void *arg,
                                                   deferred_destroy_fn destroy);

/* A lock: as a semaphore of one token, where acquire fires with a borrowed
 * value holding the lock.  NULL with errno ENOMEM. */
DEFERRED_EXPORT deferred_lock_t *deferred_lock_new(void);
DEFERRED_EXPORT deferred_lock_t *deferred_lock_ref(deferred_lock_t *l);
DEFERRED_EXPORT void deferred_lock_unref(deferred_lock_t *l);
DEFERRED_EXPORT deferred_t *deferred_lock_acquire(deferred_lock_t *l);
/* Returns 0, -EINVAL (NULL l), -EPERM when the lock is not held. */
DEFERRED_EXPORT int deferred_lock_release(deferred_lock_t *l);
DEFERRED_EXPORT bool deferred_lock_is_locked(const deferred_lock_t *l);
DEFERRED_EXPORT size_t deferred_lock_waiting(const deferred_lock_t *l);
DEFERRED_EXPORT deferred_t *deferred_lock_run(deferred_lock_t *l, deferred_fn fn,
                                              void *arg, deferred_destroy_fn destroy);

/* ---- queue ------------------------------------------------------------- */

/*
 * A queue of values and of waiting gets (Twisted's DeferredQueue).  A put
 * hands its value to the first waiting get, or else keeps it; a get takes
 * the first kept value, or else waits.  Both sides are first in, first
 * out.
 *
 * size bounds the values kept and backlog the gets waiting;
 * DEFERRED_QUEUE_UNLIMITED for no bound.  A size of 0 keeps nothing (a put
 * succeeds only into a waiting get); a backlog of 0 lets no get wait.
 *
 * Refcounted like the semaphore: when the last reference goes, the values
 * kept are released and the gets still waiting fail with ECANCELED.  The
 * queue holds a reference on each waiting get: cancel a get to withdraw
 * it (dropping it does not: the value a put hands it is then released
 * with it).
 */
typedef struct deferred_queue deferred_queue_t;

#define DEFERRED_QUEUE_UNLIMITED SIZE_MAX

/* A new empty queue.  NULL with errno ENOMEM. */
DEFERRED_EXPORT deferred_queue_t *deferred_queue_new(size_t size, size_t backlog);
DEFERRED_EXPORT deferred_queue_t *deferred_queue_ref(deferred_queue_t *q);
/* Drop a reference; see above for the last one.  NULL: no-op. */
DEFERRED_EXPORT void deferred_queue_unref(deferred_queue_t *q);

/*
 * Put v (taken).  A failure value is allowed: the get that receives it
 * fails with it.  When a get waits, it fires with v before this returns.
 * Returns 0, or (v released):
 *  -EINVAL  NULL q, or v holds a deferred;
 *  -ENOSPC  overflow: size values are kept already and no get waits;
 *  -ENOMEM.
 */
DEFERRED_EXPORT int deferred_queue_put(deferred_queue_t *q, deferred_value_t v);

/*
 * Get: stores in *out a new deferred that fires with the first value kept
 * (before this returns) or, when none is kept, with the value of a later
 * put.  Cancelling a waiting get removes it from the queue.
 * Returns 0, or (*out set to NULL when out is not NULL):
 *  -EINVAL  NULL q or out;
 *  -EBUSY   underflow: backlog gets wait already and no value is kept;
 *  -ENOMEM.
 */
DEFERRED_EXPORT int deferred_queue_get(deferred_queue_t *q, deferred_t **out);

/* Values kept, and gets waiting.  0 for NULL q. */
DEFERRED_EXPORT size_t deferred_queue_pending(const deferred_queue_t *q);
DEFERRED_EXPORT size_t deferred_queue_waiting(const deferred_queue_t *q);

#ifdef __cplusplus
}
#endif

#endif /* DEFERRED_COMBINATORS_H */
