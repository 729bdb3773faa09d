/*
 * deferred/multi.h: multi-fire deferreds, one value per row.
 *
 * A multi-fire deferred is a deferred_t whose chain runs once per emitted
 * value (a deferred that returns many times, one callback run per row).  Its
 * callbacks are kept, not consumed: each value runs through the whole
 * chain, in emit order, one value at a time.  A callback that waits
 * (returns a deferred) holds back the values behind it; while it waits, or
 * while the deferred is paused, emitted values are queued and the deferred
 * reports itself paused through its flow hook, so that its source stops
 * emitting (backpressure).
 *
 * The stream ends once: with deferred_multi_finish() (a final value or a
 * failure, after every queued value went through), with a row's failure
 * that no errback recovered (the stream ends failed at once, the failure
 * gets a context frame naming the row, and the source is cancelled through
 * the canceller), or with deferred_cancel().  Nothing is accepted after
 * the end.  The end is an ordinary single-shot deferred, deferred_multi_when_finished().
 *
 * The core functions apply to a multi-fire deferred with these meanings:
 * deferred_callback() and deferred_errback() are deferred_multi_finish();
 * add_callbacks and friends append to the per-row chain (a value in flight
 * runs the new entries too); pause/unpause stop and resume the rows;
 * deferred_cancel() cancels what a waiting row waits on, or else runs the
 * canceller once and ends the stream with ECANCELED (queued values are
 * released); deferred_has_fired() is true once it ended; deferred_result()
 * is the empty value.  A callback that returns a multi-fire deferred makes
 * its chain wait for that stream's end.
 */
#ifndef DEFERRED_MULTI_H
#define DEFERRED_MULTI_H

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Make a multi-fire deferred, with one reference.  The canceller (may be
 * NULL) is the source's cancel: it runs at most once, when the stream is
 * cancelled or fails.  destroy (may be NULL) is called on arg when the
 * deferred is freed.  NULL with errno ENOMEM on allocation failure
 * (destroy(arg) called).
 */
#define deferred_multi_new() \
    deferred_multi_new_at(__FILE__, __LINE__, NULL, NULL, NULL)
#define deferred_multi_new_cancellable(canceller, arg, destroy) \
    deferred_multi_new_at(__FILE__, __LINE__, (canceller), (arg), (destroy))
DEFERRED_EXPORT deferred_t *deferred_multi_new_at(const char *file, int line,
                                                  deferred_canceller_fn canceller,
                                                  void *arg,
                                                  deferred_destroy_fn destroy);

/* True when d is a multi-fire deferred. */
DEFERRED_EXPORT bool deferred_is_multi(const deferred_t *d);

/*
 * Emit v (taken) as the next row.  If d is idle the row runs through the
 * chain before this returns; if an earlier row is in flight, waiting, or d
 * is paused, v is queued behind it (check deferred_is_paused() or use the
 * flow hook to stop emitting).  Returns 0; -EINVAL (d NULL or not
 * multi-fire, or v holds a deferred); -EALREADY (the stream ended or a
 * finish is pending); -ENOMEM (the queue could not grow).  v is released
 * on every error.
 */
DEFERRED_EXPORT int deferred_multi_emit(deferred_t *d, deferred_value_t v);

/*
 * End the stream with v (taken: a plain value or a failure value) once
 * every queued row went through; the end deferred then fires with v.
 * Returns 0, -EINVAL (d NULL or not multi-fire, v holds a deferred),
 * -EALREADY (already ended or finishing; v released).  Callbacks of the
 * end deferred may run before it returns.
 */
DEFERRED_EXPORT int deferred_multi_finish(deferred_t *d, deferred_value_t v);

/*
 * The end of d's stream, an ordinary single-shot deferred (a new
 * reference): it fires with the final value, or fails with the failure
 * that ended the stream.  Cancelling it cancels the stream.  If d is freed
 * before its stream ended, the end stays unfired.  NULL with errno EINVAL
 * when d is NULL or not multi-fire.
 */
DEFERRED_EXPORT deferred_t *deferred_multi_when_finished(deferred_t *d);

/*
 * Backpressure.  fn is called with paused = true when d stops taking rows
 * without queueing them (a row waits on a deferred, or d was paused), and
 * with paused = false when it takes them again (the queue drained and
 * nothing holds it).  Only transitions are reported.  fn may emit, pause,
 * resume or cancel.  Returns 0 or -EINVAL (d NULL or not multi-fire).
 */
typedef void (*deferred_flow_fn)(deferred_t *d, bool paused, void *arg);
DEFERRED_EXPORT int deferred_multi_set_flow(deferred_t *d, deferred_flow_fn fn,
                                      void *arg);

/* The number of emitted values waiting for their turn (0 for NULL or a
 * single-shot deferred). */
DEFERRED_EXPORT size_t deferred_multi_queued(const deferred_t *d);

/* The number of rows emitted and accepted so far (rows are numbered from
 * 1 in failure contexts). */
DEFERRED_EXPORT uint64_t deferred_multi_rows(const deferred_t *d);

#ifdef __cplusplus
}
#endif

#endif /* DEFERRED_MULTI_H */
