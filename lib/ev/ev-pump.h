/*
 * ev-pump.h: the one idiom of the loop-driven producers (the line
 * producer, lib/ev/ev-lines.c; the SQLite and PostgreSQL queries,
 * lib/db/): a pump runs a producer's work from the loop, never from the
 * call that asked for it, and keeps the producer's memory alive while
 * that work is on the stack.
 *
 * Header only, every function static inline, on purpose: libdeferred-sqlite
 * and libdeferred-pg link libev and libdeferred but not libdeferred-ev
 * (docs/design.md), so a helper compiled into libdeferred-ev would have to
 * be exported, as public API.  Included, it needs <ev.h> only and leaves no
 * symbol in any library.  Loop thread only, like every watcher.
 *
 * What it guarantees.
 *
 *   1. Never finishing before returning (ev.pod, "avoiding finishing
 *      before returning"): deferred__ev_pump_schedule() only starts
 *      watchers.  run is called from a libev callback of the pump's own
 *      watchers, so a producer's resume that schedules its pump returns
 *      before any item is emitted.  Two ways to be run:
 *
 *      DEFERRED__EV_PUMP_ONCE: one run per schedule, from an ev_idle that
 *      stops itself before calling run (an idle "kick": it runs once
 *      nothing else of its priority is pending; ev-lines.c, pg.c).
 *      Scheduling again while scheduled is one run.
 *
 *      DEFERRED__EV_PUMP_EVERY_ITERATION: one run per loop iteration,
 *      from an ev_check (after the loop polled, so the other watchers get
 *      their turn between runs), until unscheduled; a no-op ev_idle is
 *      started beside it only so that the loop does not block in its poll
 *      while there is work (sqlite.c's batches of steps).
 *
 *   2. The re-entrancy guard (hiredis' REDIS_IN_CALLBACK, which defers
 *      redisAsyncFree() until the callback returns): an emit or a finish
 *      made by run may end the stream, and the process may then destroy
 *      the producer from inside that call.  While the pump is "entered"
 *      (during run, or between deferred__ev_pump_enter() and _leave() that
 *      the owner puts around its other entry points), the owner's destroy
 *      calls deferred__ev_pump_release(), which only marks the pump
 *      released; the outermost leave then calls release(owner).  Outside,
 *      release(owner) runs at once.  Entries nest (a counter).
 *
 * Who owns what.  The pump is embedded in its owner (the producer's
 * state); release frees the owner, pump included (or drops the owner's
 * reference, for a shared owner such as pg.c's query), and is called once.
 * After deferred__ev_pump_release() has been asked for, run is never
 * called again and the watchers are stopped.  Inside an entered section,
 * once deferred__ev_pump_released() is true, the owner's memory is still
 * valid but the stage it served is gone: the caller touches nothing of the
 * stage and unwinds; the free happens on the way out.
 *
 * When callbacks run.  run(owner): from the pump's watchers (through
 * ev_run()), or from deferred__ev_pump_run() called by one of the owner's
 * own watcher callbacks (ev-lines.c's ev_io).  Never from schedule,
 * unschedule or release.  release(owner): from release (not entered) or
 * from the outermost leave, and so possibly from inside run's caller.
 */
#ifndef DEFERRED_EV_PUMP_H
#define DEFERRED_EV_PUMP_H

#include <stdbool.h>
#include <stddef.h>

#include <ev.h>

enum deferred__ev_pump_mode {
    DEFERRED__EV_PUMP_ONCE,
    DEFERRED__EV_PUMP_EVERY_ITERATION
};

typedef void deferred__ev_pump_fn(void *owner);

typedef struct deferred__ev_pump {
    struct ev_loop *loop;
    ev_idle idle;     /* ONCE: the kick; EVERY_ITERATION: keeps the loop awake */
    ev_check check;   /* EVERY_ITERATION only: runs */
    deferred__ev_pump_fn *run;
    deferred__ev_pump_fn *release;
    void *owner;
    unsigned depth;   /* entered sections on the stack */
    bool every_iteration;
    bool released;    /* release asked for: nothing more runs */
} deferred__ev_pump_t;

/* Enter the guard: release(owner) waits for the matching leave. */
static inline void deferred__ev_pump_enter(deferred__ev_pump_t *p)
{
    p->depth++;
}

/* Leave the guard.  True when the pump was released meanwhile: the caller
 * touches nothing more of the owner (the outermost leave has just freed
 * it) and returns. */
static inline bool deferred__ev_pump_leave(deferred__ev_pump_t *p)
{
    if (--p->depth > 0 || !p->released)
        return p->released;
    p->release(p->owner);
    return true;
}

/* True once release was asked for (inside an entered section: the stage
 * is gone, unwind). */
static inline bool deferred__ev_pump_released(const deferred__ev_pump_t *p)
{
    return p->released;
}

/* run(owner) now, under the guard: for the owner's own watcher callbacks.
 * True when the owner was released (and freed) meanwhile. */
static inline bool deferred__ev_pump_run(deferred__ev_pump_t *p)
{
    deferred__ev_pump_enter(p);
    p->run(p->owner);
    return deferred__ev_pump_leave(p);
}

static inline void deferred__ev_pump_idle_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    deferred__ev_pump_t *p = w->data;

    (void)revents;
    if (p->every_iteration)
        return; /* only there to keep the loop from blocking */
    ev_idle_stop(loop, w);
    deferred__ev_pump_run(p);
}

static inline void deferred__ev_pump_check_cb(struct ev_loop *loop, ev_check *w,
                                              int revents)
{
    (void)loop;
    (void)revents;
    deferred__ev_pump_run(w->data);
}

/* A pump of owner on loop, not scheduled. */
static inline void deferred__ev_pump_init(deferred__ev_pump_t *p, struct ev_loop *loop,
                                          enum deferred__ev_pump_mode mode,
                                          deferred__ev_pump_fn *run,
                                          deferred__ev_pump_fn *release, void *owner)
{
    p->loop = loop;
    p->run = run;
    p->release = release;
    p->owner = owner;
    p->depth = 0;
    p->every_iteration = mode == DEFERRED__EV_PUMP_EVERY_ITERATION;
    p->released = false;
    ev_idle_init(&p->idle, deferred__ev_pump_idle_cb);
    p->idle.data = p;
    ev_check_init(&p->check, deferred__ev_pump_check_cb);
    p->check.data = p;
}

/* True while a run is scheduled (ONCE: until it starts; EVERY_ITERATION:
 * until unscheduled). */
static inline bool deferred__ev_pump_is_scheduled(const deferred__ev_pump_t *p)
{
    return ev_is_active(&p->idle);
}

/* Have the loop run the pump (see the modes); never runs it here.  A
 * released pump stays unscheduled. */
static inline void deferred__ev_pump_schedule(deferred__ev_pump_t *p)
{
    if (p->released || deferred__ev_pump_is_scheduled(p))
        return;
    if (p->every_iteration)
        ev_check_start(p->loop, &p->check);
    ev_idle_start(p->loop, &p->idle);
}

/* No run until scheduled again (pause, cancel, the end, or nothing to do
 * until the owner's own watcher fires). */
static inline void deferred__ev_pump_unschedule(deferred__ev_pump_t *p)
{
    if (!deferred__ev_pump_is_scheduled(p))
        return;
    if (p->every_iteration)
        ev_check_stop(p->loop, &p->check);
    ev_idle_stop(p->loop, &p->idle);
}

/* The owner's destroy: unschedule for good, then release(owner) now, or
 * at the outermost leave when entered. */
static inline void deferred__ev_pump_release(deferred__ev_pump_t *p)
{
    deferred__ev_pump_unschedule(p);
    p->released = true;
    if (p->depth == 0)
        p->release(p->owner);
}

#endif /* DEFERRED_EV_PUMP_H */
