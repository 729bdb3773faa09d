/*
 * deferred/clock.h: a loop with a virtual clock, for tests (Twisted's
 * twisted.internet.task.Clock).
 *
 * A clock is a deferred_loop_t (deferred/loop.h) whose time starts at 0
 * and moves only when the test says so: deferred_clock_advance() moves it
 * forward and fires, in order, every timer that falls due on the way, so
 * a test of a timeout, a retry or a back-off runs in no real time and
 * always the same way.  Everything made on a loop (timers, timeouts, fd
 * readiness, the pool's delivery, remote handles) works on a clock as on
 * any other adapter; the clock is part of libdeferred itself, with no
 * dependency.
 *
 * Time.  The clock counts whole nanoseconds from 0 (a delay is rounded to
 * the nearest nanosecond; time saturates after about 292 years), so ten
 * advances of 0.1 s reach a timer of 1 s exactly.  deferred_loop_now()
 * (and deferred_clock_now()) give that count in seconds.
 *
 * Order.  Timers fire in order of their due time (the time they were
 * started plus their delay); timers due at the same time fire in the
 * order they were started (restarting a timer counts as starting it
 * again).  A callback sees the loop's time equal to its own timer's due
 * time.  A timer started with 0 delay is due now: it never runs inside
 * the start, and runs in the next round of deferred_clock_run() or
 * _run_once(), or later in the same deferred_clock_advance().
 *
 * Real events.  fd watchers are polled with poll(2) and wakeups arrive
 * through a pipe, as on any loop: deferred_clock_run() and
 * deferred_clock_run_once() deliver them; deferred_clock_advance()
 * delivers wakeups (not fd readiness) between timers.  A wakeup may be
 * sent from any thread (deferred_loop_post(), the pool, a remote handle).
 *
 * Which calls run callbacks: deferred_clock_advance(), _pump(), _run()
 * and _run_once() run the callbacks of the loop's handles (and through
 * them, deferreds' callbacks) before they return; nothing else here does,
 * and a callback may call none of those four on the same clock (-EBUSY).
 *
 * Threads: a clock belongs to the thread that made it, which alone calls
 * the functions here; only the wakeups' send may come from other threads.
 *
 * Errors: each function taking a clock gives -EINVAL (or its neutral
 * answer, said below) for NULL or a loop that is not a clock (made by
 * another adapter).
 */
#ifndef DEFERRED_CLOCK_H
#define DEFERRED_CLOCK_H

#include <stdbool.h>
#include <stddef.h>

#include "deferred/loop.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * A new clock: a loop (its name "clock") whose time is 0, with one
 * reference (the caller's; deferred_loop_unref() frees it once every
 * object made on it is done).  NULL with errno ENOMEM, or the errno of
 * pipe(2) (EMFILE, ENFILE) when its wakeup pipe cannot be made.
 */
DEFERRED_EXPORT deferred_loop_t *deferred_clock_new(void);

/*
 * Move the clock's time forward by seconds (>= 0, finite), firing each
 * timer that falls due on the way, in order of due time (ties in the
 * order they were started), each seeing the loop's time equal to its due
 * time; then the time is the old time plus seconds.  A timer that a
 * callback starts and that falls due within the same stretch fires in
 * this call too (a timer restarted with 0 delay each time it fires would
 * keep it from returning, as it keeps a real loop busy).  Wakeups that
 * were sent are delivered before the first timer, between timers and at
 * the end; fd watchers are not polled (deferred_clock_run_once() does).
 * advance(0) runs what is due now.  Callbacks run before it returns.
 * Returns 0; -EINVAL for NULL, a loop that is not a clock, or seconds
 * negative, infinite or NaN (nothing runs); -EBUSY when called from a
 * callback of this clock.
 */
DEFERRED_EXPORT int deferred_clock_advance(deferred_loop_t *clock, double seconds);

/*
 * deferred_clock_advance() by each of the n steps in turn (Twisted's
 * pump()).  Returns 0; -EINVAL for NULL, a loop that is not a clock,
 * steps NULL with n > 0 or any step negative, infinite or NaN (checked
 * before any runs: then nothing runs); -EBUSY from a callback of this
 * clock.
 */
DEFERRED_EXPORT int deferred_clock_pump(deferred_loop_t *clock, const double *steps,
                                        size_t n);

/*
 * One round of the loop, and the wait before it when block is true.
 *
 * A round runs, in this order: the wakeups that were sent; the fd
 * watchers whose fd is ready (one poll(2) with no timeout; READ for
 * readable, hangup or error, WRITE for writable, hangup or error, each
 * only if watched; an fd closed while watched counts as ready for what it
 * watches, every round, until its watcher stops); the timers that were due when the round began (0
 * delay included; those that its own callbacks start wait for the next
 * round).
 *
 * When block is true and nothing was run, it waits as
 * deferred_clock_run() does, then runs one round: if a wakeup is held
 * or an fd is watched, it blocks in poll(2), in real time, until an fd
 * is ready or a wakeup is sent (external events come before virtual
 * time passes); otherwise it moves the time to the next timer's due
 * time.  With nothing keeping the loop alive it does not wait.
 *
 * Callbacks run before it returns.  Returns the number of callbacks run
 * (0 when nothing was due); -EINVAL for NULL or a loop that is not a
 * clock; -EBUSY from a callback of this clock.
 */
DEFERRED_EXPORT int deferred_clock_run_once(deferred_loop_t *clock, bool block);

/*
 * Run the loop until nothing keeps it alive: no running timer, no fd
 * watcher with events, no held wakeup.  It repeats
 * deferred_clock_run_once(clock, true): each round runs what is due
 * (sent wakeups, ready fds, due timers); when nothing is runnable it
 * blocks in poll(2) for real fd or wakeup activity if a wakeup is held
 * or an fd is watched (so a job on the pool finishes, or a pipe is
 * written, before virtual time passes: a watched fd that never becomes
 * ready keeps it waiting even if timers are running: use
 * deferred_clock_advance() there), and otherwise jumps the time to the
 * next timer's due time.  Callbacks run before it returns.
 * Returns 0; -EINVAL for NULL or a loop that is not a clock; -EBUSY from
 * a callback of this clock.
 */
DEFERRED_EXPORT int deferred_clock_run(deferred_loop_t *clock);

/* The clock's time in seconds (deferred_loop_now() gives the same); -1.0
 * for NULL or a loop that is not a clock. */
DEFERRED_EXPORT double deferred_clock_now(const deferred_loop_t *clock);

/* How many of the clock's timers are running (started, not yet fired or
 * stopped); 0 for NULL or a loop that is not a clock. */
DEFERRED_EXPORT size_t deferred_clock_timers(const deferred_loop_t *clock);

/*
 * The due time (in seconds, on the clock's time) of the timer that fires
 * next, in *due.  Returns 0; -ENOENT when no timer is running (*due is
 * left alone); -EINVAL for NULL, a loop that is not a clock, or due
 * NULL.
 */
DEFERRED_EXPORT int deferred_clock_next(const deferred_loop_t *clock, double *due);

/* Whether the loop is a clock (made by deferred_clock_new()); false for
 * NULL. */
DEFERRED_EXPORT bool deferred_clock_is_clock(const deferred_loop_t *loop);

#ifdef __cplusplus
}
#endif

#endif /* DEFERRED_CLOCK_H */
