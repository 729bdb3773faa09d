/*
 * deferred/uv.h: libdeferred on a libuv loop (libdeferred-uv, pkg-config
 * "deferred-uv").
 *
 * deferred_uv_loop_new() wraps the user's uv_loop_t in a deferred_loop_t
 * (deferred/loop.h), which every part of the library that needs a loop
 * takes: timers, timeouts, fd readiness, the line producer, the thread
 * pool, remote handles, the database layers.
 *
 * The uv loop is borrowed: the user owns it, runs it (uv_run()) and
 * closes it (uv_loop_close()).  What the library puts on it:
 *   - a uv_timer_t per timer (a running one keeps uv_run() going);
 *   - one uv_poll_t per fd that library objects watch (the adapter shares
 *     it between the watchers of the same fd, since libuv allows only one
 *     poll handle per fd and loop), or a uv_idle_t for an fd that epoll
 *     refuses (below); it keeps uv_run() going while one of them watches
 *     events;
 *   - a uv_async_t per cross-thread wakeup (the loop's mailbox, through
 *     which the pool, remote handles and database layers deliver),
 *     unreferenced (uv_unref()) unless the library holds it because work
 *     is in flight, so an idle wakeup never keeps uv_run() going;
 *   - one uv_timer_t and one uv_prepare_t, made the first time a timer
 *     is started with a delay of 0, for all such timers: libuv would run a
 *     0 ms uv_timer_t started from a timer callback in the same pass, so
 *     the adapter queues them and runs the queue from its own 0 ms timer,
 *     at most once per iteration (the uv_prepare_t arms it again for the
 *     next one); both are active only while a 0 timer waits.
 * The handles belong to the adapter: the user must not close them (the
 * user's uv_walk() sees them; a "close everything" walk must skip them or
 * run only after the library is done).  An fd the library watches must
 * not be watched by the user's own uv_poll_t on the same loop, nor the
 * other way round (libuv refuses the second poll handle).
 *
 * Closing: libuv frees a handle only through uv_close(), whose callback
 * runs on a later loop iteration.  The adapter closes a handle as soon as
 * the library is done with it (its callback never runs again) and frees
 * its memory in that close callback; the adapter's own state goes when
 * the last reference on the deferred_loop_t is dropped and every handle's
 * close has finished.  So after the last library object is done and the
 * last deferred_loop_unref(), the uv loop must run once more (uv_run()
 * with UV_RUN_NOWAIT or UV_RUN_DEFAULT) before uv_loop_close() can return
 * 0; deferred_uv_loop_close() below does both.  A uv loop that is never
 * run again leaks those blocks.
 *
 * Time: deferred_loop_now() on this loop is uv_now() in seconds: the
 * loop's cached time, in whole milliseconds, refreshed by libuv at the
 * start of each iteration (and by the adapter before it starts a timer).
 * Timers count in milliseconds too: a delay is rounded up to the next
 * millisecond, so a timer never fires before deferred_loop_now() has
 * moved on by its delay.
 *
 * Fd readiness is level-triggered (uv_poll_t on epoll, kqueue, ...): the
 * watcher's callback runs on every iteration while the fd is ready.  An
 * error or hang-up on the fd (libuv's status < 0, UV_DISCONNECT, or a
 * POLLHUP) is reported as readiness for every event watched, so that the
 * read() or write() that follows sees the error or the end of file.
 * An fd that epoll refuses (a regular file, a directory) is always ready,
 * as poll() says of it (and as libev treats it): its watchers are called
 * on every iteration, from a uv_idle_t of its own.  libuv's
 * uv_poll_init() makes an fd non-blocking; the adapter puts the fd's
 * O_NONBLOCK flag back as it found it, so the fd stays the caller's in
 * every way.  Watching an fd that the user's own uv_poll_t watches on the
 * same uv loop fails (libuv allows one poll handle per fd and loop).
 *
 * Threads: as deferred/loop.h says.  The uv loop is run by one thread
 * (the loop thread); the library's functions on it are called there,
 * except the documented cross-thread ones, which reach the loop thread
 * through uv_async_send().
 *
 * This header does not include <uv.h>: it only names struct uv_loop_s,
 * which is what uv_loop_t stands for, so a uv_loop_t * is passed as is.
 * (<uv.h> itself needs POSIX declarations that a strict -std=c99 build
 * does not make; this header compiles in any C99 or C++ mode.)
 * pkg-config deferred-uv gives libuv's flags too.
 */
#ifndef DEFERRED_UV_H
#define DEFERRED_UV_H

#include "loop.h"

#ifdef __cplusplus
extern "C" {
#endif

struct uv_loop_s; /* uv_loop_t */

/*
 * A deferred_loop_t (deferred/loop.h) on loop, with one reference (the
 * caller's; deferred_loop_unref() drops it, and every library object
 * made on the loop holds its own until it is done).  loop is borrowed: it
 * must be initialised (uv_loop_init() or uv_default_loop()), run by one
 * thread, and outlive everything the library made on it, including the
 * closes described above (run it once more after the last reference
 * goes, then close it, or call deferred_uv_loop_close()).  One handle
 * goes on loop at once, the uv_async_t of the loop's mailbox
 * (deferred/loop.h), unreferenced; the others come with the library
 * objects that need them.
 * Several deferred_loop_t may wrap the same uv loop; each has its own
 * handles (so two of them cannot watch the same fd: the second fails, as
 * beside the user's own uv_poll_t).  No callback runs before this
 * returns.
 * NULL with errno EINVAL (loop NULL) or ENOMEM.
 */
DEFERRED_EXPORT deferred_loop_t *deferred_uv_loop_new(struct uv_loop_s *loop);

/*
 * Finish the closes and close loop: runs loop (uv_run(UV_RUN_NOWAIT))
 * while one of its handles is closing, then returns uv_loop_close(loop):
 * 0 when the loop is closed (its memory is the caller's to free), or
 * UV_EBUSY (-EBUSY) when a handle is still open: the caller's own, or the
 * library's when a deferred_loop_t on loop still has a reference or a
 * library object made on it is not done.  -EINVAL for NULL.  It runs the
 * loop, so callbacks of other active handles (the user's, the library's)
 * may run before it returns; call it from the loop thread, never from a
 * callback of loop.
 */
DEFERRED_EXPORT int deferred_uv_loop_close(struct uv_loop_s *loop);

#ifdef __cplusplus
}
#endif

#endif /* DEFERRED_UV_H */
