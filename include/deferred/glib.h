/*
 * deferred/glib.h: libdeferred on GLib's main loop (libdeferred-glib,
 * pkg-config "deferred-glib").
 *
 * deferred_glib_loop_new() makes a deferred_loop_t (deferred/loop.h) whose
 * timers, fd watchers and cross-thread wakeups are GSources attached to a
 * GMainContext; everything deferred/loop.h offers on a loop (time,
 * timeouts, fd readiness, line producers, the thread pool, remote
 * handles, the database layers) then runs on that context.
 *
 * The context is borrowed: the user owns it and runs it (g_main_loop_run()
 * on a GMainLoop of that context, or g_main_context_iteration() in a loop
 * of one's own), always on one thread, the loop thread.  Every library
 * call on the loop, and on what was made on it, is made on that thread
 * (deferred/loop.h names the few functions that other threads may call),
 * and every callback runs there, from the context's dispatch.
 *
 * A GLib main loop never stops by itself: unlike ev_run() and uv_run(), it
 * does not return when nothing is left to do.  deferred_loop_alive(loop)
 * (deferred/loop.h) says how many running timers, fd watchers with events
 * and held wakeups the library has on the loop; a program that runs the
 * context only for libdeferred quits it (g_main_loop_quit()) when that
 * reaches 0, or iterates while it is above 0:
 *
 *     while (deferred_loop_alive(loop) > 0)
 *         g_main_context_iteration(context, TRUE);
 *
 * The sources.  One source per loop carries all its timers (a heap
 * ordered by deadline, then by start order: timers that are due in the
 * same iteration fire in the order of their deadlines, as under libev and
 * libuv), its deadlines on g_get_monotonic_time() in microseconds (a
 * delay is rounded up to the next microsecond, never down; the poll waits
 * for the first deadline rounded up to the millisecond); one source per
 * fd watcher
 * (g_source_add_unix_fd(), level-triggered: G_IO_HUP and G_IO_ERR are
 * reported as readiness for the watched events, so that the read or write
 * that follows sees the end of file or the error); one source per wakeup
 * (an atomic flag and g_main_context_wakeup()).  All have priority
 * G_PRIORITY_DEFAULT.  The loop's time (deferred_loop_now()) is
 * g_get_monotonic_time() in seconds, read afresh at each call (not the
 * iteration's cached g_source_get_time()), and delays count from it.
 * GLib does not dispatch a source again from a main loop nested inside
 * its own dispatch: a callback that runs a nested loop on the same
 * context (a modal dialog, say) holds up the loop's timers, or that fd
 * watcher or wakeup, until it returns.
 *
 * Memory: the loop's state and every handle are allocated with
 * deferred_malloc() (deferred_set_allocator(), deferred/common.h), so
 * their failures are reported as ENOMEM.  The GSources themselves, and
 * the records GLib keeps for them, are allocated by GLib (g_malloc(),
 * which aborts rather than fail): the library's allocator does not see
 * them.
 *
 * This header does not include <glib.h>: it only names struct
 * _GMainContext, the structure that GLib's GMainContext type names, so
 * that a GMainContext * is accepted as it is in C and in C++.
 */
#ifndef DEFERRED_GLIB_H
#define DEFERRED_GLIB_H

#include "loop.h"

#ifdef __cplusplus
extern "C" {
#endif

struct _GMainContext;

/*
 * A new loop (one reference, the caller's) on the GMainContext context
 * (NULL: GLib's global default context, g_main_context_default()).  The
 * library takes a reference on the context (g_main_context_ref()) and
 * attaches its timers' source to it; both go when the loop's last
 * reference does (deferred_loop_unref()), after everything made on the
 * loop was freed.  The caller keeps its own reference on the context and
 * runs it; it may drop that reference while the loop lives.  Nothing
 * runs before this returns.  Any thread may call it, but the loop then
 * belongs to the thread that iterates context.
 * NULL with errno ENOMEM on allocation failure (nothing is left attached
 * to the context).
 */
DEFERRED_EXPORT deferred_loop_t *deferred_glib_loop_new(struct _GMainContext *context);

#ifdef __cplusplus
}
#endif

#endif /* DEFERRED_GLIB_H */
