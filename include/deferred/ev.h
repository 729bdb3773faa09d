/*
 * deferred/ev.h: the libev binding of libdeferred (libdeferred-ev,
 * pkg-config "deferred-ev").
 *
 * Time (a deferred that fires later, a timeout on any deferred), fd
 * readiness, a line producer for processes, a thread pool whose results
 * fire on the loop thread, and deferreds that any thread may fire.
 *
 * The loop is borrowed: the user owns the struct ev_loop *, runs it and
 * destroys it.  Every watcher the library starts lives inside a library
 * object and is stopped when that object is done (fired, cancelled or
 * freed), so a loop with nothing left to do returns from ev_run().  The
 * loop must outlive everything made on it here; the pool and the remote
 * handles below keep it running while they have work in flight.
 *
 * Threads: every function here is called on the loop's thread (the thread
 * that runs ev_run() on it), except deferred_ev_remote_callback(),
 * deferred_ev_remote_errback() and deferred_ev_remote_drop(), which any
 * thread may call, and the pool's job functions, which run on the pool's
 * workers.  Callbacks of every deferred made here run on the loop thread.
 *
 * Bad arguments to a function that returns a deferred (NULL loop, a
 * negative, infinite or NaN delay, an invalid fd) give a deferred already
 * failed with EINVAL or EBADF and a message saying what was wrong; NULL is
 * returned only on allocation failure.
 *
 * This header does not include <ev.h>: it only names struct ev_loop.
 */
#ifndef DEFERRED_EV_H
#define DEFERRED_EV_H

#include "loop.h"

#ifdef __cplusplus
extern "C" {
#endif

struct ev_loop;

/* ---- the adapter -------------------------------------------------------- */

/*
 * The loop layer's adapter for loop (deferred/loop.h), with a new
 * reference (drop it with deferred_loop_unref()): the same deferred_loop_t
 * for the same struct ev_loop * while any reference on it or object made
 * on it lives.  Everything of deferred/loop.h, and the SQLite and
 * PostgreSQL layers, run on libev through it; each deferred_ev_* function
 * below is its deferred_loop_* twin on this adapter.
 * Timers are ev_timers (a 0 delay fires on the next loop iteration), fd
 * watchers ev_io, the wakeup one ev_async that keeps ev_run() going only
 * while messages are expected.  deferred_loop_now() is ev_now().
 * NULL with errno EINVAL (NULL loop) or ENOMEM.  Loop thread.
 */
DEFERRED_EXPORT deferred_loop_t *deferred_ev_loop_new(struct ev_loop *loop);

/* The struct ev_loop * of an adapter made by deferred_ev_loop_new()
 * (borrowed), NULL for NULL or a loop of another adapter. */
DEFERRED_EXPORT struct ev_loop *deferred_ev_loop_of(const deferred_loop_t *loop);

/* ---- time -------------------------------------------------------------- */

/*
 * A new deferred (one reference) that fires with the empty value once
 * seconds have passed on loop (an ev_timer; 0 fires on the next loop
 * iteration, never before this returns).  Cancelling it stops the timer,
 * so the loop has nothing left to wait for on its account, and it fails
 * with ECANCELED.  Dropping the last reference before it fired also stops
 * the timer.
 * NULL with errno EINVAL for bad input (NULL loop, seconds negative,
 * infinite or NaN) or ENOMEM on allocation failure (deferred/common.h);
 * in a callback, return deferred_value_deferred(deferred_ev_later(...))
 * turns that NULL into a failure of errno's code.
 */
DEFERRED_EXPORT deferred_t *deferred_ev_later(struct ev_loop *loop, double seconds);

/*
 * What a timeout turns a timed-out outcome into (Twisted's
 * onTimeoutCancel).  It runs on the loop thread, in d's chain, only when
 * the timer fired; it takes outcome (what d's chain held after the cancel:
 * usually an ECANCELED failure, but a canceller may have fired d with
 * anything) and returns the new outcome.  seconds is the timeout.
 */
typedef deferred_loop_timeout_fn deferred_ev_timeout_fn;

/*
 * Give d a timeout on loop (Twisted's Deferred.addTimeout).  If d has no
 * result after seconds, d is cancelled; then, at this point of its chain,
 * a failure that the cancel left becomes an ETIMEDOUT failure (library
 * domain, its message naming the timeout, its cause that failure): an
 * ECANCELED failure, or one with an ECANCELED among its causes or its
 * group members, such as the first-error wrapping ECANCELED of a
 * cancelled gather, the failure group of a cancelled race or a process's
 * failure.  (A deferred_list() without flags fires with its outcomes, not
 * a failure: they pass unchanged, the cancelled ones ECANCELED.)  Anything
 * else passes unchanged; in particular an ECANCELED from a cancel that was
 * not the timer's stays ECANCELED.  Callbacks added to d before this call
 * see the ECANCELED; those added after see the ETIMEDOUT.  When the
 * result reaches this point of d's chain first, the timer is stopped at
 * once: the loop does not wait for it.
 * d is borrowed (the timer does not keep it alive: freeing d stops the
 * timer).  Must be a single-shot deferred (for a multi-fire one, use its
 * deferred_multi_when_finished()).  If d already has a result, the timer is stopped before
 * this returns.
 * Returns 0, -EINVAL (NULL d or loop, a multi-fire d, seconds negative,
 * infinite or NaN), -ENOMEM (d unchanged, no timer).
 */
DEFERRED_EXPORT int deferred_ev_add_timeout(deferred_t *d, struct ev_loop *loop,
                                            double seconds);

/*
 * The same with a hook: when the timer fired, on_timeout (instead of the
 * ECANCELED-to-ETIMEDOUT conversion) turns the outcome into the result.
 * on_timeout NULL is deferred_ev_add_timeout().  destroy (may be NULL) is
 * called on arg exactly once: when d is freed or its result went past this
 * point of the chain, or on error before this returns.
 */
DEFERRED_EXPORT int deferred_ev_add_timeout_full(deferred_t *d, struct ev_loop *loop,
                                                 double seconds,
                                                 deferred_ev_timeout_fn on_timeout,
                                                 void *arg,
                                                 deferred_destroy_fn destroy);

/* ---- fd readiness ------------------------------------------------------ */

/*
 * A new deferred (one reference) that fires with the integer value fd
 * (deferred_value_get_int()) once fd is readable (writable) on loop: one
 * ev_io watcher, stopped when it fires, when the deferred is cancelled
 * (it then fails with ECANCELED) or freed.  The fd stays the caller's.
 * NULL with errno EINVAL for a NULL loop or fd < 0, EBADF for an fd that
 * is not open, ENOMEM on allocation failure.
 */
DEFERRED_EXPORT deferred_t *deferred_ev_readable(struct ev_loop *loop, int fd);
DEFERRED_EXPORT deferred_t *deferred_ev_writable(struct ev_loop *loop, int fd);

/*
 * A producer stage for processes that reads fd on loop and emits each
 * line as a string value (deferred_value_strdup(): a NUL-terminated copy
 * without its '\n', released with deferred_free()).  A last line without
 * a '\n' is emitted at end of file; end of file then finishes the
 * producer with the empty value.
 *  - fd is made non-blocking (O_NONBLOCK) and stays the caller's: the
 *    stage never closes it.  The process must be run on loop's thread.
 *  - Flow control: pausing stops the read watcher, so a slow consumer
 *    never makes memory grow: the stage's buffer has a fixed size
 *    (deferred_ev_lines_capacity()) and the writer is held back by the
 *    pipe or socket.  Resume starts it again; cancel stops it for good.
 *  - Nothing is emitted before the resume that starts it returns: reading
 *    always happens from the loop (lines already buffered when it is
 *    resumed are emitted from an ev_idle watcher).
 *  - A read error fails the stream with a system-domain failure of its
 *    errno; a line longer than max_line bytes (not counting the '\n')
 *    fails it with EMSGSIZE (library domain), its message naming the line
 *    number, the fd and max_line.
 *  - It describes its item as "line N of fd F" in failure contexts.
 * max_line 0 means 65536.  NULL with errno ENOMEM on allocation
 * failure, EINVAL for NULL loop or fd < 0, EBADF for an fd that is not
 * open.
 */
DEFERRED_EXPORT deferred_stage_t *deferred_ev_lines(struct ev_loop *loop, int fd,
                                                    size_t max_line);

/* For a stage made by deferred_ev_lines() (borrowed): the bytes it holds
 * now, the fixed size of its buffer (they never exceed it), whether its
 * read watcher is running, and the number of lines emitted so far.  0 or
 * false for NULL or any other stage. */
DEFERRED_EXPORT size_t deferred_ev_lines_buffered(const deferred_stage_t *st);
DEFERRED_EXPORT size_t deferred_ev_lines_capacity(const deferred_stage_t *st);
DEFERRED_EXPORT bool deferred_ev_lines_is_reading(const deferred_stage_t *st);
DEFERRED_EXPORT uint64_t deferred_ev_lines_count(const deferred_stage_t *st);

/* ---- cross-thread firing ------------------------------------------------ */

/*
 * A remote handle binds a single-shot deferred d to loop, so that any
 * thread may fire it: the firing thread hands the value over, and the loop
 * thread fires d with it, so d's callbacks run on the loop thread.
 *
 * All remotes and pools of one loop share one mailbox: one ev_async and a
 * mutex-protected queue.  A remote is allocated whole when it is made, so
 * firing it never allocates and cannot fail.
 *
 * Ownership: deferred_ev_remote_new() (on the loop thread) takes a
 * reference on d and returns the handle, which belongs to the firing side
 * until exactly one of deferred_ev_remote_callback(), _errback() or
 * _drop() is called on it, from any thread; that call consumes the handle
 * (it must not be used again).  The loop thread frees it after
 * delivering.  Until then the loop keeps running (ev_run() does not
 * return for lack of watchers), and the loop must not be destroyed.
 *
 * If d was fired or cancelled on the loop thread meanwhile, the delivered
 * value is released instead (never delivered twice).  Values cross threads
 * as they are: a value's ownership moves to the loop thread with it.
 */
typedef struct deferred_remote deferred_ev_remote_t;

/* A remote handle for d (a reference is taken) on loop.  NULL on
 * allocation failure (errno ENOMEM), or NULL loop or d or a multi-fire d
 * (errno EINVAL: a remote fires its deferred once). */
DEFERRED_EXPORT deferred_ev_remote_t *deferred_ev_remote_new(struct ev_loop *loop,
                                                             deferred_t *d);

/*
 * From any thread: fire r's deferred with v (taken) / fail it with f
 * (taken; NULL f is taken as an EINVAL failure) on the loop thread, soon
 * after (never before this returns when called on the loop thread).
 * Consumes r.  Returns 0, or -EINVAL for NULL r (v or f released), or
 * -EINVAL when v is a deferred: r is consumed all the same, its deferred
 * then fails with EINVAL (so it still fires), and v is released on the
 * loop thread.
 */
DEFERRED_EXPORT int deferred_ev_remote_callback(deferred_ev_remote_t *r,
                                                deferred_value_t v);
DEFERRED_EXPORT int deferred_ev_remote_errback(deferred_ev_remote_t *r,
                                               deferred_failure_t *f);

/* From any thread: give up on r without firing; the loop thread then
 * cancels r's deferred (deferred_cancel()).  Consumes r.  NULL is a
 * no-op. */
DEFERRED_EXPORT void deferred_ev_remote_drop(deferred_ev_remote_t *r);

/* ---- the thread pool --------------------------------------------------- */

typedef struct deferred_pool deferred_ev_pool_t;

/*
 * A job: runs on a worker thread with its arg and returns its result (a
 * plain value or deferred_value_failure(): it may not return a deferred).
 * It must not touch deferreds or processes; if it makes values or
 * failures through the library, the allocator set with
 * deferred_set_allocator() must be thread-safe (the default one is).
 */
typedef deferred_job_fn deferred_ev_job_fn;

/*
 * A pool of nthreads worker threads bound to loop.  NULL with errno
 * EINVAL (NULL loop, nthreads 0 or above 1024), ENOMEM, or the error of
 * pthread_create() (then no thread is left running).
 */
DEFERRED_EXPORT deferred_ev_pool_t *deferred_ev_pool_new(struct ev_loop *loop,
                                                         unsigned nthreads);

/*
 * Queue fn(arg) on the pool; returns a new deferred (one reference) that
 * fires on the loop thread with fn's result, in the loop iteration after
 * the job finished.  destroy (may be NULL) is called on arg exactly once,
 * on the loop thread, after fn ran or when the job is dropped unrun.
 * Cancelling the deferred before a worker took the job means the job never
 * runs; either way the deferred fails with ECANCELED at once (the result of
 * a job already running is released when it arrives).  Jobs start in
 * order, as workers come free.  Pending jobs keep ev_run() from returning.
 * NULL with errno ESHUTDOWN when the pool was shut down, EINVAL for a
 * NULL pool or fn, ENOMEM on allocation failure (destroy(arg) called in
 * every case).
 */
DEFERRED_EXPORT deferred_t *deferred_ev_pool_run(deferred_ev_pool_t *pool,
                                                 deferred_ev_job_fn fn, void *arg,
                                                 deferred_destroy_fn destroy);

/*
 * Shut the pool down: it takes no more jobs; jobs not yet started are
 * cancelled (cancel_pending true: their deferreds fail with ECANCELED) or
 * run to the end (false); the call blocks until the running jobs returned
 * and the threads are joined, then delivers every finished job's result:
 * callbacks may run before it returns.  Idempotent.  Returns 0 or -EINVAL
 * (NULL pool).  Call it on the loop thread, not from a job.
 */
DEFERRED_EXPORT int deferred_ev_pool_shutdown(deferred_ev_pool_t *pool,
                                              bool cancel_pending);

/* Shut the pool down, cancelling pending jobs (if not done already), and
 * free it.  NULL is a no-op. */
DEFERRED_EXPORT void deferred_ev_pool_free(deferred_ev_pool_t *pool);

/* The number of worker threads (0 once shut down or for NULL). */
DEFERRED_EXPORT unsigned deferred_ev_pool_threads(const deferred_ev_pool_t *pool);

/*
 * Dump what is pending when signal signum arrives (0: SIGUSR1), on the
 * loop thread: an ev_signal watcher on loop runs deferred_dump_to(format,
 * sink, arg) (deferred/dump.h) from the loop, never from the signal
 * handler, so the dump sees the loop thread's registry in a consistent
 * state.  sink NULL writes to stderr.  The watcher does not keep ev_run()
 * going.  A second call for the same loop replaces the first.  libev
 * delivers a signal to one loop at a time.  Returns 0, -EINVAL (NULL loop,
 * a signal number out of range, an unknown format) or -ENOMEM.  Loop
 * thread.  The loop's lines in a dump (debug mode): its timers, timeouts,
 * fd waits, remote handles not yet delivered and pool jobs (queued,
 * running) with the deferreds they fire.
 */
DEFERRED_EXPORT int deferred_ev_dump_on_signal(struct ev_loop *loop, int signum,
                                               deferred_dump_format_t format,
                                               deferred_dump_sink_fn sink, void *arg);

/* Stop the dump on a signal of loop (nothing if none was set up).  Loop
 * thread. */
DEFERRED_EXPORT void deferred_ev_dump_on_signal_stop(struct ev_loop *loop);

#ifdef __cplusplus
}
#endif

#endif /* DEFERRED_EV_H */
