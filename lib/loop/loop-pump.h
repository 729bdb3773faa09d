/*
 * loop-pump.h: the one idiom of the loop-driven producers (the line
 * producer, lib/loop/loop-lines.c; the SQLite and PostgreSQL queries,
 * lib/db/): a pump runs a producer's work from the loop, never from the
 * call that asked for it, and keeps the producer's memory alive while
 * that work is on the stack.
 *
 * Header only, every function static inline, over the exported timer of
 * deferred/loop.h: libdeferred-sqlite and libdeferred-pg include it too,
 * and it leaves no symbol in any library.  Loop thread only.
 *
 * What it guarantees.
 *
 *   1. Never finishing before returning: deferred__pump_schedule() only
 *      starts a zero-delay timer (the "kick"), so run is called from the
 *      loop, and a producer's resume that schedules its pump returns
 *      before any item is emitted.  One run per schedule; scheduling again
 *      while scheduled is one run.
 *
 *   2. The re-entrancy guard (hiredis' REDIS_IN_CALLBACK, which defers
 *      redisAsyncFree() until the callback returns): an emit or a finish
 *      made by run may end the stream, and the process may then destroy
 *      the producer from inside that call.  While the pump is "entered"
 *      (during run, or between deferred__pump_enter() and _leave() that
 *      the owner puts around its other entry points), the owner's destroy
 *      calls deferred__pump_release(), which only marks the pump
 *      released; the outermost leave then calls release(owner).  Outside,
 *      release(owner) runs at once.  Entries nest (a counter).
 *
 * Who owns what.  The pump is embedded in its owner (the producer's
 * state); release frees the owner, pump included (or drops the owner's
 * reference, for a shared owner such as pg.c's query), and is called once.
 * After deferred__pump_release() has been asked for, run is never called
 * again and the kick is freed.  Inside an entered section, once
 * deferred__pump_released() is true, the owner's memory is still valid but
 * the stage it served is gone: the caller touches nothing of the stage and
 * unwinds; the free happens on the way out.
 *
 * When callbacks run.  run(owner): from the kick (through the loop), or
 * from deferred__pump_run() called by one of the owner's own watcher
 * callbacks (loop-lines.c's fd watcher).  Never from schedule, unschedule
 * or release.  release(owner): from release (not entered) or from the
 * outermost leave, and so possibly from inside run's caller.
 */
#ifndef DEFERRED_LOOP_PUMP_H
#define DEFERRED_LOOP_PUMP_H

#include <stdbool.h>
#include <stddef.h>

#include "deferred/loop.h"

typedef void deferred__pump_fn(void *owner);

typedef struct deferred__pump {
    deferred_loop_timer_t *kick; /* NULL once released */
    deferred__pump_fn *run;
    deferred__pump_fn *release;
    void *owner;
    unsigned depth; /* entered sections on the stack */
    bool released;  /* release asked for: nothing more runs */
} deferred__pump_t;

/* Enter the guard: release(owner) waits for the matching leave. */
static inline void deferred__pump_enter(deferred__pump_t *p)
{
    p->depth++;
}

/* Leave the guard.  True when the pump was released meanwhile: the caller
 * touches nothing more of the owner (the outermost leave has just freed
 * it) and returns. */
static inline bool deferred__pump_leave(deferred__pump_t *p)
{
    if (--p->depth > 0 || !p->released)
        return p->released;
    p->release(p->owner);
    return true;
}

/* True once release was asked for (inside an entered section: the stage
 * is gone, unwind). */
static inline bool deferred__pump_released(const deferred__pump_t *p)
{
    return p->released;
}

/* run(owner) now, under the guard: for the owner's own watcher callbacks.
 * True when the owner was released (and freed) meanwhile. */
static inline bool deferred__pump_run(deferred__pump_t *p)
{
    deferred__pump_enter(p);
    p->run(p->owner);
    return deferred__pump_leave(p);
}

static inline void deferred__pump_kick_cb(void *arg)
{
    deferred__pump_run((deferred__pump_t *)arg);
}

/* A pump of owner on loop, not scheduled: 0, or -ENOMEM (nothing to
 * undo: release is never called). */
static inline int deferred__pump_init(deferred__pump_t *p, deferred_loop_t *loop,
                                      deferred__pump_fn *run, deferred__pump_fn *release,
                                      void *owner)
{
    p->run = run;
    p->release = release;
    p->owner = owner;
    p->depth = 0;
    p->released = false;
    p->kick = deferred_loop_timer_new(loop, deferred__pump_kick_cb, p);
    return p->kick ? 0 : -ENOMEM;
}

/* True while a run is scheduled. */
static inline bool deferred__pump_is_scheduled(const deferred__pump_t *p)
{
    return deferred_loop_timer_is_active(p->kick);
}

/* Have the loop run the pump once; never runs it here.  A released pump
 * stays unscheduled. */
static inline void deferred__pump_schedule(deferred__pump_t *p)
{
    if (p->released || deferred__pump_is_scheduled(p))
        return;
    deferred_loop_timer_start(p->kick, 0.0);
}

/* No run until scheduled again (pause, cancel, the end, or nothing to do
 * until the owner's own watcher fires). */
static inline void deferred__pump_unschedule(deferred__pump_t *p)
{
    deferred_loop_timer_stop(p->kick);
}

/* The owner's destroy: no run ever again, then release(owner) now, or at
 * the outermost leave when entered. */
static inline void deferred__pump_release(deferred__pump_t *p)
{
    deferred_loop_timer_free(p->kick);
    p->kick = NULL;
    p->released = true;
    if (p->depth == 0)
        p->release(p->owner);
}

#endif /* DEFERRED_LOOP_PUMP_H */
