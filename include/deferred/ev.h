/*
 * deferred/ev.h: the libev adapter of libdeferred's loop layer
 * (libdeferred-ev, pkg-config "deferred-ev").
 *
 * deferred_ev_loop_new() gives the deferred_loop_t (deferred/loop.h) of
 * a struct ev_loop *, on which everything of the loop layer runs: time,
 * timeouts, fd readiness, the line producer, the thread pool, remote
 * handles, and the SQLite and PostgreSQL layers.  The deferred_ev_*
 * functions below take the struct ev_loop * itself: each is its
 * deferred_loop_* twin (same semantics, ownership, errors, threads) on
 * that loop's adapter, which it finds (or makes) for the call.
 *
 * The loop is borrowed: the user owns the struct ev_loop *, runs it and
 * destroys it.  Every watcher the library starts lives inside a library
 * object and is stopped when that object is done (fired, cancelled or
 * freed), so a loop with nothing left to do returns from ev_run().  The
 * loop must outlive everything made on it here; the pool and the remote
 * handles keep it running while they have work in flight.
 *
 * Threads: every function here is called on the loop's thread (the thread
 * that runs ev_run() on it), except deferred_ev_remote_callback(),
 * deferred_ev_remote_errback() and deferred_ev_remote_drop(), which any
 * thread may call, and the pool's job functions, which run on the pool's
 * workers.  Callbacks of every deferred made here run on the loop thread.
 *
 * Errors follow deferred/common.h: bad arguments (NULL loop, a negative,
 * infinite or NaN delay, an invalid fd) give NULL with errno EINVAL or
 * EBADF, and so does allocation failure (ENOMEM); an action returns a
 * negative errno.
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
 * on it lives.  Timers are ev_timers (a 0 delay fires on the next loop
 * iteration), fd watchers ev_io, the wakeup one ev_async that keeps
 * ev_run() going only while messages are expected; deferred_loop_now() is
 * ev_now().  NULL with errno EINVAL (NULL loop) or ENOMEM.  Loop thread.
 */
DEFERRED_EXPORT deferred_loop_t *deferred_ev_loop_new(struct ev_loop *loop);

/* The struct ev_loop * of an adapter made by deferred_ev_loop_new()
 * (borrowed), NULL for NULL or a loop of another adapter. */
DEFERRED_EXPORT struct ev_loop *deferred_ev_loop_of(const deferred_loop_t *loop);

/* ---- the loop layer on a struct ev_loop * -------------------------------- */

/* deferred_loop_later() on loop: a new deferred that fires with the
 * empty value after seconds (an ev_timer; 0: the next iteration, never
 * before this returns).  NULL with errno EINVAL (NULL loop, bad seconds)
 * or ENOMEM. */
DEFERRED_EXPORT deferred_t *deferred_ev_later(struct ev_loop *loop, double seconds);

/* A timeout's hook: deferred_loop_timeout_fn. */
typedef deferred_loop_timeout_fn deferred_ev_timeout_fn;

/* deferred_loop_add_timeout() and _full() on loop: d (borrowed) is
 * cancelled after seconds without a result, and the cancel's failure
 * becomes ETIMEDOUT (or what on_timeout makes of it).  0, -EINVAL or
 * -ENOMEM (destroy(arg) called on error). */
DEFERRED_EXPORT int deferred_ev_add_timeout(deferred_t *d, struct ev_loop *loop,
                                            double seconds);
DEFERRED_EXPORT int deferred_ev_add_timeout_full(deferred_t *d, struct ev_loop *loop,
                                                 double seconds,
                                                 deferred_ev_timeout_fn on_timeout,
                                                 void *arg,
                                                 deferred_destroy_fn destroy);

/* deferred_loop_readable() and _writable() on loop: a new deferred that
 * fires with the integer fd once fd is readable (writable).  NULL with
 * errno EINVAL (NULL loop, fd < 0), EBADF or ENOMEM. */
DEFERRED_EXPORT deferred_t *deferred_ev_readable(struct ev_loop *loop, int fd);
DEFERRED_EXPORT deferred_t *deferred_ev_writable(struct ev_loop *loop, int fd);

/* deferred_loop_lines() on loop: a producer stage emitting each line of fd
 * (made non-blocking, never closed), which stops reading while paused.
 * max_line 0 means 65536.  NULL with errno EINVAL, EBADF or ENOMEM. */
DEFERRED_EXPORT deferred_stage_t *deferred_ev_lines(struct ev_loop *loop, int fd,
                                                    size_t max_line);

/* deferred_loop_lines_buffered(), _capacity(), _is_reading(), _count(). */
DEFERRED_EXPORT size_t deferred_ev_lines_buffered(const deferred_stage_t *st);
DEFERRED_EXPORT size_t deferred_ev_lines_capacity(const deferred_stage_t *st);
DEFERRED_EXPORT bool deferred_ev_lines_is_reading(const deferred_stage_t *st);
DEFERRED_EXPORT uint64_t deferred_ev_lines_count(const deferred_stage_t *st);

/* A remote handle: deferred_remote_t (deferred/loop.h). */
typedef struct deferred_remote deferred_ev_remote_t;

/* deferred_loop_remote_new() on loop: a handle through which any thread
 * fires d (a reference is taken) on the loop thread.  NULL with errno
 * EINVAL (NULL loop or d, a multi-fire d) or ENOMEM. */
DEFERRED_EXPORT deferred_ev_remote_t *deferred_ev_remote_new(struct ev_loop *loop,
                                                             deferred_t *d);

/* deferred_remote_callback(), _errback() and _drop(): from any thread,
 * each consumes r.  0 or -EINVAL (see deferred_remote_callback()). */
DEFERRED_EXPORT int deferred_ev_remote_callback(deferred_ev_remote_t *r,
                                                deferred_value_t v);
DEFERRED_EXPORT int deferred_ev_remote_errback(deferred_ev_remote_t *r,
                                               deferred_failure_t *f);
DEFERRED_EXPORT void deferred_ev_remote_drop(deferred_ev_remote_t *r);

/* The thread pool: deferred_pool_t and deferred_job_fn (deferred/loop.h). */
typedef struct deferred_pool deferred_ev_pool_t;
typedef deferred_job_fn deferred_ev_job_fn;

/* deferred_loop_pool_new() on loop: nthreads workers whose jobs' results
 * fire on the loop thread.  NULL with errno EINVAL (NULL loop, nthreads 0
 * or above 1024), ENOMEM or pthread_create()'s error. */
DEFERRED_EXPORT deferred_ev_pool_t *deferred_ev_pool_new(struct ev_loop *loop,
                                                         unsigned nthreads);

/* deferred_pool_run(), _shutdown() (callbacks may run before it
 * returns), _free() and _threads(). */
DEFERRED_EXPORT deferred_t *deferred_ev_pool_run(deferred_ev_pool_t *pool,
                                                 deferred_ev_job_fn fn, void *arg,
                                                 deferred_destroy_fn destroy);
DEFERRED_EXPORT int deferred_ev_pool_shutdown(deferred_ev_pool_t *pool,
                                              bool cancel_pending);
DEFERRED_EXPORT void deferred_ev_pool_free(deferred_ev_pool_t *pool);
DEFERRED_EXPORT unsigned deferred_ev_pool_threads(const deferred_ev_pool_t *pool);

/* ---- the dump on a signal ------------------------------------------------ */

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
