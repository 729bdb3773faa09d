/*
 * deferred/loop.h: libdeferred on any event loop.
 *
 * Everything above the core that needs a loop (time, timeouts, fd
 * readiness, the line producer, the thread pool, deferreds that other
 * threads fire, the SQLite and PostgreSQL layers) talks to one small
 * interface, deferred_loop_t.  An adapter implements it for one event
 * loop library; the user's loop is borrowed, never owned:
 *
 *   libdeferred-ev    libev (deferred/ev.h, pkg-config deferred-ev)
 *   libdeferred-uv    libuv (deferred/uv.h, pkg-config deferred-uv)
 *   libdeferred-glib  GLib's GMainContext (deferred/glib.h, deferred-glib)
 *   the clock         a loop with a virtual clock for tests, in libdeferred
 *                     itself (deferred/clock.h)
 *
 * An adapter is a table of functions (deferred_loop_ops_t) and a pointer
 * to its own state; deferred_loop_new() makes the deferred_loop_t that
 * the rest of the library takes.  Writing one for another loop is a few
 * hundred lines (lib/uv/uv.c is the model).
 *
 * Threads: a deferred_loop_t belongs to the thread that runs its loop
 * (the loop thread).  Every function here is called on that thread,
 * except deferred_remote_callback(), _errback(), _drop() and
 * deferred_loop_post(), which any thread may call, and the pool's job
 * functions, which run on its workers.  Callbacks of every deferred made
 * here run on the loop thread, from the loop (never before the function
 * that made them returns, unless its comment says otherwise).
 *
 * Errors follow deferred/common.h: a constructor returns NULL with errno
 * (EINVAL for bad arguments: a NULL loop, a negative, infinite or NaN
 * delay, fd < 0; EBADF for an fd that is not open; ENOMEM), an action a
 * negative errno.
 */
#ifndef DEFERRED_LOOP_H
#define DEFERRED_LOOP_H

#include "process.h"
#include "dump.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct deferred_loop deferred_loop_t;

/* ---- the adapter interface --------------------------------------------- */

/* Readiness bits of fd watchers (deferred_loop_ops_t.io_set and the io
 * callback). */
#define DEFERRED_LOOP_READ 1
#define DEFERRED_LOOP_WRITE 2

/* The version of deferred_loop_ops_t this header describes. */
#define DEFERRED_LOOP_OPS_VERSION 1

typedef void (*deferred_loop_fn)(void *arg);
typedef void (*deferred_loop_io_fn)(void *arg, int revents);

/*
 * What an adapter provides.  impl is the adapter's state, given to
 * deferred_loop_new(); the handles (timers, fd watchers, wakeups) are the
 * adapter's own objects, made by its *_new functions (NULL on failure,
 * with errno saying why: ENOMEM, or the loop's own refusal, such as
 * libuv's EEXIST for an fd it already watches elsewhere; errno left 0 is
 * taken as ENOMEM.  Allocate with deferred_malloc() so that the library's
 * allocator and its failure tests see every allocation) and given back to
 * its *_free functions, which may be called from inside the handle's own
 * callback; after *_free the callback never runs again (an adapter whose
 * loop frees handles asynchronously, such as libuv's uv_close(), defers
 * the memory, not the silence).
 *
 * Every function is called on the loop thread, except wakeup_send.
 * Callbacks run on the loop thread, from the loop, never from inside an
 * adapter function.
 *
 * Keeping the loop alive: for loops that stop when nothing is left to do
 * (libev's ev_run(), libuv's uv_run()), a running timer and an fd watcher
 * with events keep the loop running; a wakeup does so only while it is
 * held (wakeup_hold).  GLib's loop runs until it is quit, so its adapter
 * ignores this.
 */
typedef struct deferred_loop_ops {
    int version;      /* DEFERRED_LOOP_OPS_VERSION */
    const char *name; /* "ev", "uv", "glib", "clock": for dumps and errors */

    /* The loop's current time in seconds (monotonic; its origin is the
     * adapter's).  The delays below count from it. */
    double (*now)(void *impl);

    /* A one-shot timer, not running.  start: cb(arg) once, seconds (>= 0,
     * finite) from now (the adapter refreshes a cached time first, so a
     * busy loop does not shorten the delay); 0 means on the next loop
     * iteration.  Starting a running timer restarts it.  stop: a no-op
     * when not running. */
    void *(*timer_new)(void *impl, deferred_loop_fn cb, void *arg);
    void (*timer_start)(void *timer, double seconds);
    void (*timer_stop)(void *timer);
    void (*timer_free)(void *timer);

    /* A watcher of fd (open, >= 0; the fd stays the caller's), watching
     * nothing.  set: watch events (DEFERRED_LOOP_READ | _WRITE; 0 stops),
     * level-triggered: cb(arg, revents) from each loop iteration while fd
     * is ready for one of them. */
    void *(*io_new)(void *impl, int fd, deferred_loop_io_fn cb, void *arg);
    void (*io_set)(void *io, int events);
    void (*io_free)(void *io);

    /* A cross-thread wakeup: wakeup_send, from any thread and without
     * allocating, makes cb(arg) run on the loop thread soon after (sends
     * before the callback starts may coalesce into one call).  hold true
     * keeps the loop running until hold false (calls do not nest). */
    void *(*wakeup_new)(void *impl, deferred_loop_fn cb, void *arg);
    void (*wakeup_send)(void *wakeup);
    void (*wakeup_hold)(void *wakeup, bool hold);
    void (*wakeup_free)(void *wakeup);

    /* The deferred_loop_t is being freed (NULL: nothing to do); every
     * handle was freed before. */
    void (*release)(void *impl);

    /* Optional (may be NULL): add the adapter's own fields to the loop's
     * line in a dump (deferred_dump_str(), _int() of deferred/dump.h). */
    void (*describe)(void *impl, deferred_dump_t *w);
} deferred_loop_ops_t;

/*
 * A loop of adapter ops over impl, with one reference (the caller's).
 * ops is borrowed and must outlive the loop (a static table); impl is
 * the adapter's and released through ops->release when the last
 * reference goes.  Every object made on the loop (a timer, a remote, a
 * pool, a query, a connection) holds a reference until it is done, so
 * the caller may drop its own at any time.
 * NULL with errno EINVAL (NULL ops, a version other than
 * DEFERRED_LOOP_OPS_VERSION, a NULL function other than release) or
 * ENOMEM (then ops->release is not called).
 */
DEFERRED_EXPORT deferred_loop_t *deferred_loop_new(const deferred_loop_ops_t *ops,
                                                   void *impl);

/* A new reference on loop (returned; NULL for NULL). */
DEFERRED_EXPORT deferred_loop_t *deferred_loop_ref(deferred_loop_t *loop);

/* Drop a reference; the last one calls ops->release(impl) and frees the
 * loop.  NULL is a no-op. */
DEFERRED_EXPORT void deferred_loop_unref(deferred_loop_t *loop);

/* The adapter's name ("ev", "uv", ...) and state, and the loop's time
 * (ops->now).  NULL, NULL and 0 for NULL. */
DEFERRED_EXPORT const char *deferred_loop_name(const deferred_loop_t *loop);
DEFERRED_EXPORT void *deferred_loop_impl(const deferred_loop_t *loop);
DEFERRED_EXPORT double deferred_loop_now(const deferred_loop_t *loop);

/*
 * What the library has running on loop: its running timers, its fd
 * watchers with events and a held wakeup (messages still expected by
 * remotes, pool jobs and queries).  0 means the library's work on the loop
 * is done: a GLib user can quit the main loop then.  0 for NULL.
 */
DEFERRED_EXPORT size_t deferred_loop_alive(const deferred_loop_t *loop);

/* ---- watchers: the interface as the library's layers use it ------------- */

/*
 * Timers and fd watchers over the adapter's, for layers built on the
 * loop (the SQLite and PostgreSQL layers use them; so may a user's own
 * producer).  Each holds a reference on its loop until freed.  Callbacks
 * run from the loop, never from inside these functions.  *_free may be
 * called from inside the watcher's own callback; the callback never runs
 * after it.  NULL is a no-op for stop, set and free.
 */
typedef struct deferred_loop_timer deferred_loop_timer_t;
typedef struct deferred_loop_io deferred_loop_io_t;

/* A timer calling cb(arg) once per start.  NULL with errno EINVAL (NULL
 * loop or cb) or ENOMEM. */
DEFERRED_EXPORT deferred_loop_timer_t *deferred_loop_timer_new(deferred_loop_t *loop,
                                                               deferred_loop_fn cb,
                                                               void *arg);
/* Start (or restart) t: cb runs once, seconds from now (0: on the next
 * iteration).  0 or -EINVAL (NULL t, seconds negative, infinite or
 * NaN). */
DEFERRED_EXPORT int deferred_loop_timer_start(deferred_loop_timer_t *t, double seconds);
DEFERRED_EXPORT void deferred_loop_timer_stop(deferred_loop_timer_t *t);
/* Whether t is running (false for NULL), and the seconds left before it
 * falls due (0 when it is not running or already due). */
DEFERRED_EXPORT bool deferred_loop_timer_is_active(const deferred_loop_timer_t *t);
DEFERRED_EXPORT double deferred_loop_timer_remaining(const deferred_loop_timer_t *t);
DEFERRED_EXPORT void deferred_loop_timer_free(deferred_loop_timer_t *t);

/* A watcher of fd (borrowed: never closed here), watching nothing.  NULL
 * with errno EINVAL (NULL loop or cb, fd < 0), EBADF (fd not open),
 * ENOMEM, or the adapter's refusal (libuv: EEXIST when fd is already
 * watched on that loop outside the library). */
DEFERRED_EXPORT deferred_loop_io_t *deferred_loop_io_new(deferred_loop_t *loop, int fd,
                                                         deferred_loop_io_fn cb,
                                                         void *arg);
/* Watch events (DEFERRED_LOOP_READ | DEFERRED_LOOP_WRITE; 0 stops):
 * cb(arg, revents) from each loop iteration while fd is ready for one of
 * them (level-triggered).  0 or -EINVAL (NULL io, other bits). */
DEFERRED_EXPORT int deferred_loop_io_set(deferred_loop_io_t *io, int events);
/* What io watches now, and its fd (0 and -1 for NULL). */
DEFERRED_EXPORT int deferred_loop_io_events(const deferred_loop_io_t *io);
DEFERRED_EXPORT int deferred_loop_io_fd(const deferred_loop_io_t *io);
DEFERRED_EXPORT void deferred_loop_io_free(deferred_loop_io_t *io);

/* ---- the mailbox: work handed to the loop thread ------------------------ */

/*
 * A message for the loop thread, allocated by its owner (so posting never
 * allocates): deliver(m) runs on the loop thread and disposes of it.
 */
typedef struct deferred_loop_msg {
    struct deferred_loop_msg *next; /* the mailbox's */
    void (*deliver)(struct deferred_loop_msg *m);
} deferred_loop_msg_t;

/*
 * Loop thread: one more message is coming.  Until the matching
 * deferred_loop_done() the loop is kept running (its wakeup held) and
 * alive (a reference).  Never fails on a loop (its wakeup is made with
 * it): 0, or -EINVAL for NULL.
 */
DEFERRED_EXPORT int deferred_loop_expect(deferred_loop_t *loop);

/* Loop thread: an expected message was delivered (or given up).  May
 * free the loop (its last reference). */
DEFERRED_EXPORT void deferred_loop_done(deferred_loop_t *loop);

/*
 * Any thread: queue m and wake the loop thread, which calls m->deliver(m)
 * soon after (never inside this call, even on the loop thread).  Messages
 * are delivered in the order they were posted.  Only while a message is
 * expected (the loop cannot be freed meanwhile).  Never allocates.
 * 0, or -EINVAL (NULL loop, m or m->deliver).
 */
DEFERRED_EXPORT int deferred_loop_post(deferred_loop_t *loop, deferred_loop_msg_t *m);

/* ---- time -------------------------------------------------------------- */

/*
 * A new deferred (one reference) that fires with the empty value once
 * seconds have passed on loop (0: on the next loop iteration, never
 * before this returns).  Cancelling it stops the timer (so the loop has
 * nothing left to wait for on its account) and it fails with ECANCELED;
 * dropping the last reference before it fired also stops the timer.
 * NULL with errno EINVAL (NULL loop, seconds negative, infinite or NaN)
 * or ENOMEM.
 */
DEFERRED_EXPORT deferred_t *deferred_loop_later(deferred_loop_t *loop, double seconds);

/*
 * What a timeout turns a timed-out outcome into (Twisted's
 * onTimeoutCancel): run on the loop thread, in d's chain, only when the
 * timer fired; takes outcome (what d's chain held after the cancel) and
 * returns the new outcome.  seconds is the timeout.
 */
typedef deferred_value_t (*deferred_loop_timeout_fn)(deferred_value_t outcome,
                                                     double seconds, void *arg);

/*
 * Give d a timeout on loop (Twisted's Deferred.addTimeout).  If d has no
 * result after seconds, d is cancelled; then, at this point of its chain,
 * a failure that the cancel left becomes an ETIMEDOUT failure (library
 * domain, its message naming the timeout, its cause that failure): an
 * ECANCELED failure, or one with an ECANCELED among its causes or its
 * group members (the first-error of a cancelled gather, the failure
 * group of a cancelled race, a process's failure).  A deferred_list()
 * without flags fires with its outcomes: they pass unchanged.  Anything
 * else passes unchanged; an ECANCELED from a cancel that was not the
 * timer's stays ECANCELED.  Callbacks added to d before this call see the
 * ECANCELED, those added after the ETIMEDOUT.  When the result reaches
 * this point of d's chain first, the timer is stopped at once.
 * d is borrowed (freeing d stops the timer) and must be single-shot (for
 * a multi-fire one, use its deferred_multi_when_finished()).  If d
 * already has a result, the timer is stopped before this returns.
 * Returns 0, -EINVAL (NULL d or loop, a multi-fire d, bad seconds) or
 * -ENOMEM (d unchanged).
 */
DEFERRED_EXPORT int deferred_loop_add_timeout(deferred_t *d, deferred_loop_t *loop,
                                              double seconds);

/*
 * The same with a hook: when the timer fired, on_timeout (instead of the
 * ECANCELED-to-ETIMEDOUT conversion) turns the outcome into the result.
 * on_timeout NULL is deferred_loop_add_timeout().  destroy (may be NULL)
 * is called on arg exactly once: when d is freed or its result went past
 * this point of the chain, or on error before this returns.
 */
DEFERRED_EXPORT int deferred_loop_add_timeout_full(deferred_t *d, deferred_loop_t *loop,
                                                   double seconds,
                                                   deferred_loop_timeout_fn on_timeout,
                                                   void *arg,
                                                   deferred_destroy_fn destroy);

/* ---- fd readiness ------------------------------------------------------ */

/*
 * A new deferred (one reference) that fires with the integer value fd
 * (deferred_value_get_int()) once fd is readable (writable) on loop; the
 * watcher is stopped when it fires, when the deferred is cancelled (it
 * then fails with ECANCELED) or freed.  The fd stays the caller's.  NULL
 * with errno EINVAL (NULL loop, fd < 0), EBADF (fd not open), ENOMEM or
 * the adapter's refusal (deferred_loop_io_new()).
 */
DEFERRED_EXPORT deferred_t *deferred_loop_readable(deferred_loop_t *loop, int fd);
DEFERRED_EXPORT deferred_t *deferred_loop_writable(deferred_loop_t *loop, int fd);

/*
 * A producer stage for processes that reads fd on loop and emits each
 * line as a string value (deferred_value_strdup(): a NUL-terminated copy
 * without its '\n').  A last line without a '\n' is emitted at end of
 * file; end of file then finishes the producer with the empty value.
 *  - fd is made non-blocking (O_NONBLOCK) and stays the caller's.
 *  - Flow control: pausing stops reading, so a slow consumer never makes
 *    memory grow: the stage's buffer has a fixed size
 *    (deferred_loop_lines_capacity()) and the writer is held back by the
 *    pipe or socket.  Resume starts it again; cancel stops it for good.
 *  - Nothing is emitted before the resume that starts it returns.
 *  - A read error fails the stream with a system-domain failure of its
 *    errno; a line longer than max_line bytes fails it with EMSGSIZE
 *    (library domain), its message naming the line number, fd and
 *    max_line.  It describes its item as "line N of fd F".
 * max_line 0 means 65536.  NULL with errno ENOMEM, EINVAL (NULL loop, fd
 * < 0) or EBADF (fd not open).
 */
DEFERRED_EXPORT deferred_stage_t *deferred_loop_lines(deferred_loop_t *loop, int fd,
                                                      size_t max_line);

/* For a stage made by deferred_loop_lines() (borrowed): the bytes it
 * holds now, the fixed size of its buffer, whether it is reading, and the
 * lines emitted so far.  0 or false for NULL or any other stage. */
DEFERRED_EXPORT size_t deferred_loop_lines_buffered(const deferred_stage_t *st);
DEFERRED_EXPORT size_t deferred_loop_lines_capacity(const deferred_stage_t *st);
DEFERRED_EXPORT bool deferred_loop_lines_is_reading(const deferred_stage_t *st);
DEFERRED_EXPORT uint64_t deferred_loop_lines_count(const deferred_stage_t *st);

/* ---- cross-thread firing ------------------------------------------------ */

/*
 * A remote handle binds a single-shot deferred d to loop so that any
 * thread may fire it: the value is handed over, and the loop thread fires
 * d with it, so d's callbacks run on the loop thread.  A remote is
 * allocated whole when it is made: firing it never allocates and cannot
 * fail.  All remotes and pools of a loop share its mailbox.
 *
 * Ownership: deferred_loop_remote_new() (loop thread) takes a reference
 * on d and returns the handle, which belongs to the firing side until
 * exactly one of deferred_remote_callback(), _errback() or _drop() is
 * called on it, from any thread; that call consumes the handle.  The loop
 * thread frees it after delivering.  Until then the loop keeps running.
 * If d was fired or cancelled on the loop thread meanwhile, the delivered
 * value is released instead (never delivered twice).  A value's ownership
 * moves to the loop thread with it.
 */
typedef struct deferred_remote deferred_remote_t;

/* A remote handle for d (a reference is taken) on loop.  NULL with errno
 * ENOMEM, or EINVAL (NULL loop or d, a multi-fire d). */
DEFERRED_EXPORT deferred_remote_t *deferred_loop_remote_new(deferred_loop_t *loop,
                                                            deferred_t *d);

/*
 * Any thread: fire r's deferred with v (taken) / fail it with f (taken;
 * NULL f is taken as an EINVAL failure) on the loop thread, soon after
 * (never before this returns).  Consumes r.  Returns 0, or -EINVAL for
 * NULL r (v or f released), or -EINVAL when v is a deferred: r is
 * consumed all the same, its deferred fails with EINVAL, and v is
 * released on the loop thread.
 */
DEFERRED_EXPORT int deferred_remote_callback(deferred_remote_t *r, deferred_value_t v);
DEFERRED_EXPORT int deferred_remote_errback(deferred_remote_t *r, deferred_failure_t *f);

/* Any thread: give up on r without firing; the loop thread then cancels
 * r's deferred.  Consumes r.  NULL is a no-op. */
DEFERRED_EXPORT void deferred_remote_drop(deferred_remote_t *r);

/* ---- the thread pool --------------------------------------------------- */

typedef struct deferred_pool deferred_pool_t;

/*
 * A job: runs on a worker thread with its arg and returns its result (a
 * plain value or deferred_value_failure(), not a deferred).  It must not
 * touch deferreds or processes; if it makes values or failures, the
 * allocator set with deferred_set_allocator() must be thread-safe (the
 * default one is).
 */
typedef deferred_value_t (*deferred_job_fn)(void *arg);

/* A pool of nthreads worker threads bound to loop.  NULL with errno
 * EINVAL (NULL loop, nthreads 0 or above 1024), ENOMEM, or the error of
 * pthread_create() (then no thread is left running). */
DEFERRED_EXPORT deferred_pool_t *deferred_loop_pool_new(deferred_loop_t *loop,
                                                        unsigned nthreads);

/*
 * Queue fn(arg) on pool; returns a new deferred (one reference) that
 * fires on the loop thread with fn's result, in the loop iteration after
 * the job finished.  destroy (may be NULL) is called on arg exactly once,
 * on the loop thread, after fn ran or when the job is dropped unrun.
 * Cancelling the deferred before a worker took the job means it never
 * runs; either way the deferred fails with ECANCELED at once (the result
 * of a job already running is released when it arrives).  Jobs start in
 * order.  Pending jobs keep the loop running.  NULL with errno ESHUTDOWN
 * (pool shut down), EINVAL (NULL pool or fn) or ENOMEM (destroy(arg)
 * called in every case).
 */
DEFERRED_EXPORT deferred_t *deferred_pool_run(deferred_pool_t *pool, deferred_job_fn fn,
                                              void *arg, deferred_destroy_fn destroy);

/*
 * Shut pool down: it takes no more jobs; jobs not yet started are
 * cancelled (cancel_pending true: their deferreds fail with ECANCELED) or
 * run to the end (false); blocks until the running jobs returned and the
 * threads are joined, then delivers every finished job's result:
 * callbacks may run before it returns.  Idempotent.  0 or -EINVAL (NULL).
 * Loop thread, not from a job.
 */
DEFERRED_EXPORT int deferred_pool_shutdown(deferred_pool_t *pool, bool cancel_pending);

/* Shut pool down, cancelling pending jobs (if not done already), and free
 * it.  NULL is a no-op. */
DEFERRED_EXPORT void deferred_pool_free(deferred_pool_t *pool);

/* The number of worker threads (0 once shut down or for NULL). */
DEFERRED_EXPORT unsigned deferred_pool_threads(const deferred_pool_t *pool);

#ifdef __cplusplus
}
#endif

#endif /* DEFERRED_LOOP_H */
