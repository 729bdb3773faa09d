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
 *                     itself (deferred_clock_new() below)
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
 * adapter's own objects, made by its *_new functions (NULL on allocation
 * failure: allocate with deferred_malloc() so that the library's
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

#ifdef __cplusplus
}
#endif

#endif /* DEFERRED_LOOP_H */
