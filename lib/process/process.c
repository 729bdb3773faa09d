/*
 * process.c: deferred_process, the engine that moves items from producers
 * through processors to a consumer: its lifecycle and its state.  The
 * delivery of items, failure frames and flow control are in flow.c, tags
 * and subordinate consumers in groups.c.
 *
 * Events are plain function calls down the stages: a producer's emit calls
 * the next stage's handle, which may emit to the one after it, and so on,
 * so one item costs one indirect call per stage and no allocation (and a
 * run of adjacent built-in maps, filters and a reduce, one loop: see
 * fuse_stages()).  Flow control, cancel and failure go back up the same
 * way.
 *
 * The design decision to know: everything that ends the stream is settled
 * only when the outermost stage call returns.  The process counts how deep
 * its stage calls are nested (depth, deferred__enter() and
 * deferred__leave()); a cancel or a failure only records what happened
 * (the phase goes from OPEN to ENDING), the calls on the stack unwind (each
 * delivery adding its context frame to a failure as it passes), and
 * settle() then cancels the producers and delivers finish downstream,
 * exactly once.  So no stage is ever told "finish" while it is still
 * inside its own handle, and nothing is delivered after a cancel.  The
 * same discipline keeps producers from nesting: a resume that arrives
 * while the producer is inside its resume operation only lets its loop go
 * on.
 *
 * The state (process-private.h) changes only in the transition functions
 * below, each of which refreshes the fast flags it can change.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/deferred-private.h"
#include "process-private.h"

/* The stage array's first size; it doubles from there. */
#define STAGES_FIRST_CAP 4

deferred_failure_t *deferred__process_failure(const deferred_process_t *p, int code,
                                              const char *fmt, ...)
{
    deferred_failure_t *f;
    va_list ap;

    va_start(ap, fmt);
    f = deferred_failure_newv_at(p ? p->file : NULL, p ? p->line : 0,
                                 DEFERRED_DOMAIN_LIBRARY, code, fmt, ap);
    va_end(ap);
    return f;
}

deferred_failure_t *deferred_stage_failure(const deferred_stage_t *st, deferred_domain_t domain,
                                           int code, const char *fmt, ...)
{
    const deferred_process_t *p = st ? st->p : NULL;
    deferred_failure_t *f;
    va_list ap;

    va_start(ap, fmt);
    f = deferred_failure_newv_at(p ? p->file : NULL, p ? p->line : 0, domain, code, fmt, ap);
    va_end(ap);
    return f;
}

deferred_t *(deferred_process_run)(deferred_process_t *p)
{
    return deferred_process_run_at(NULL, 0, p);
}

/* ---- the state and its transitions ------------------------------------- */

static void refresh_stage(deferred_stage_t *st)
{
    const deferred_stage_t *to = st->down;

    st->fast = st->p->phase == DEFERRED__OPEN && to && !to->routes &&
               !(to->flags & DEFERRED_STAGE_AUTOPAUSE) && st->stopped == DEFERRED__LIVE;
    st->hop = st->fast && st->fused >= 2;
}

void deferred__refresh_fast(deferred_process_t *p)
{
    size_t i;

    for (i = 0; i < p->n; i++)
        refresh_stage(p->stages[i]);
}

/* Every phase change: the fast flags follow OPEN. */
static void set_phase(deferred_process_t *p, enum deferred__phase phase)
{
    bool was_open = p->phase == DEFERRED__OPEN;

    p->phase = (uint8_t)phase;
    if (was_open != (phase == DEFERRED__OPEN))
        deferred__refresh_fast(p);
}

/* BUILDING -> OPEN: the run starts (straight to ENDING when the stream
 * ended before it ran: a stage's cancel, a producer finishing with a
 * failure). */
static void open_stream(deferred_process_t *p)
{
    set_phase(p, p->cancelling || p->failure ? DEFERRED__ENDING : DEFERRED__OPEN);
}

bool deferred__set_failure(deferred_process_t *p, deferred_failure_t *f)
{
    if (p->failure || p->phase == DEFERRED__FINISHED) {
        deferred_failure_unref(f); /* the first failure tells the story */
        return false;
    }
    p->failure = f;
    p->framed = UINT32_MAX; /* no frame yet */
    if (p->phase == DEFERRED__OPEN)
        set_phase(p, DEFERRED__ENDING);
    return true;
}

/* The failure goes into the outcome (while the stages finish). */
static deferred_value_t take_failure(deferred_process_t *p)
{
    deferred_failure_t *f = p->failure;

    p->failure = NULL;
    return deferred_value_failure(f);
}

/* A cancel is asked for: OPEN -> ENDING (before the run, the run starts
 * ENDING; while finishing, the finish goes on, aborted). */
static void set_cancelling(deferred_process_t *p)
{
    p->cancelling = true;
    if (p->phase == DEFERRED__OPEN)
        set_phase(p, DEFERRED__ENDING);
}

/* A producer stops for good: LIVE -> CANCELLED or DONE. */
static void stop_producer(deferred_stage_t *st, enum deferred__stopped how)
{
    st->stopped = (uint8_t)how;
    refresh_stage(st);
}

/* OPEN or ENDING -> FINISHING: settle() starts the stages' finishes. */
static void begin_finish(deferred_process_t *p)
{
    set_phase(p, DEFERRED__FINISHING);
}

/* FINISHING -> FINISHED: the last stage finished. */
static void end_finish(deferred_process_t *p)
{
    set_phase(p, DEFERRED__FINISHED);
}

/* ---- stages ------------------------------------------------------------ */

deferred_stage_t *deferred_stage_new(const deferred_stage_ops_t *ops, void *data,
                                     unsigned flags)
{
    deferred_stage_t *st;

    int e = EINVAL;

    if (!ops || (!ops->handle && !ops->resume) || (flags & ~DEFERRED_STAGE_AUTOPAUSE))
        goto out_destroy;
    st = deferred__malloc(sizeof(*st));
    if (!st) {
        e = ENOMEM;
        goto out_destroy;
    }
    memset(st, 0, sizeof(*st));
    st->ops = ops;
    st->data = data;
    st->flags = flags;
    st->handle = ops->handle;
    return st;

out_destroy:
    if (ops && ops->destroy)
        ops->destroy(data);
    errno = e;
    return NULL;
}

void *deferred_stage_data(const deferred_stage_t *st)
{
    return st ? st->data : NULL;
}

const char *deferred_stage_name(const deferred_stage_t *st)
{
    return st && st->ops->name ? st->ops->name : "stage";
}

uint64_t deferred_stage_items(const deferred_stage_t *st)
{
    return st ? st->items : 0;
}

void deferred_stage_free(deferred_stage_t *st)
{
    if (!st)
        return;
    while (st->routes)
        deferred__route_pop(st);
    if (st->ops->destroy)
        st->ops->destroy(st->data);
    deferred__free(st);
}

/*
 * The fused runs (process-private.h), found once when the process starts:
 * each map or filter counts the stages of the run from it on, a reduce
 * ends one, anything else breaks it.  A stage from which two or more are
 * fused takes its items through the run's loop, so an item that enters a
 * run in its middle (a map's queue sending a result on) is fused for the
 * rest of it too.  Whatever changes later (a pause, a cancel, a route)
 * shows in the fast flags, which the loop checks at every hop.
 */
static void fuse_stages(deferred_process_t *p)
{
    uint32_t next = 0; /* the fused count of the stage after i */
    size_t i;

    for (i = p->n; i-- > p->nproducers;) {
        deferred_stage_t *st = p->stages[i];

        switch (st->kind) {
        case DEFERRED__KIND_MAP:
        case DEFERRED__KIND_FILTER:
            st->fused = next + 1;
            break;
        case DEFERRED__KIND_REDUCE:
            st->fused = 1;
            break;
        default:
            st->fused = 0;
            break;
        }
        next = st->fused;
        st->handle = st->fused >= 2 ? deferred__fused_handle : st->ops->handle;
    }
}

/* ---- the process ------------------------------------------------------- */

deferred_process_t *deferred_process_new(unsigned flags)
{
    deferred_process_t *p;

    if (flags & ~DEFERRED_PROCESS_PAUSED) {
        errno = EINVAL;
        return NULL;
    }
    p = deferred__malloc(sizeof(*p));
    if (!p)
        return NULL; /* errno ENOMEM */
    memset(p, 0, sizeof(*p));
    p->refs = 1;
    p->flags = flags;
    p->phase = DEFERRED__BUILDING;
    return p;
}

deferred_process_t *deferred_process_ref(deferred_process_t *p)
{
    if (p)
        p->refs++;
    return p;
}

void deferred_process_unref(deferred_process_t *p)
{
    size_t i;

    if (!p || --p->refs)
        return;
    for (i = 0; i < p->n; i++)
        deferred_stage_free(p->stages[i]);
    deferred__free(p->stages);
    deferred_dump_holder_remove(&p->dump);
    deferred_failure_unref(p->failure);
    deferred_value_release(p->outcome);
    deferred_unref(p->done);
    deferred__free(p);
}

int deferred_process_add(deferred_process_t *p, deferred_stage_t *st)
{
    bool producer;

    if (!p || !st)
        goto out_einval;
    if (p->phase != DEFERRED__BUILDING) {
        deferred_stage_free(st);
        return -EBUSY;
    }
    if (st->p)
        return -EINVAL; /* already in a process: not ours to free */
    producer = st->ops->resume && !st->ops->handle;
    /* Producers first; nothing after the consumer (a stage without
     * resume that is not a processor is only known as the consumer once
     * the process runs, so only order is checked here). */
    if (producer && p->n > p->nproducers)
        goto out_einval;
    if (p->n > p->nproducers && p->stages[p->n - 1]->consumer)
        goto out_einval; /* after a built-in consumer */
    if (!producer && !st->ops->handle)
        goto out_einval;
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : STAGES_FIRST_CAP;
        deferred_stage_t **stages = NULL;

        /* Stage indices are 32 bits; the array's size must not wrap. */
        if (cap <= UINT32_MAX && cap <= SIZE_MAX / sizeof(*stages))
            stages = deferred__realloc(p->stages, cap * sizeof(*stages));
        if (!stages) {
            deferred_stage_free(st);
            return -ENOMEM;
        }
        p->stages = stages;
        p->cap = cap;
    }
    st->p = p;
    st->producer = producer;
    st->index = (uint32_t)p->n;
    p->stages[p->n++] = st;
    if (producer)
        p->nproducers++;
    return 0;

out_einval:
    deferred_stage_free(st);
    return -EINVAL;
}

/* The process's lines in a dump: its phase and result deferred, then each
 * stage by name: a producer's pause count and state, the items handled,
 * what the stage says of itself, the pauses and groups it holds, and what
 * a map waits on; what a suspended finish waits on.  Its result deferred
 * is written where its waiters are, noted with the process. */
static void dump_process(deferred_dump_t *w, void *arg)
{
    static const char *const phases[] = { "building", "open", "ending", "finishing",
                                          "finished" };
    static const char *const stopped[] = { "live", "cancelled", "done" };
    deferred_process_t *p = arg;
    char site[512];
    size_t i;

    if (p->phase == DEFERRED__FINISHED)
        return;
    snprintf(site, sizeof(site), "%s:%d", p->file ? p->file : "?", p->line);
    deferred_dump_node(w, "process", site);
    deferred_dump_str(w, "phase", phases[p->phase]);
    deferred_dump_int(w, "stages", (long long)p->n);
    deferred_dump_int(w, "producers_done", (long long)p->producers_done);
    if (p->held)
        deferred_dump_int(w, "held", p->held);
    if (p->cancelling)
        deferred_dump_str(w, "cancelling", "yes");
    if (p->failure)
        deferred_dump_str(w, "failure", deferred_failure_message(p->failure));
    deferred_dump_enter(w);
    for (i = 0; i < p->n; i++) {
        deferred_stage_t *st = p->stages[i];
        struct route *r;
        long long subs = 0;

        deferred_dump_node(w, "stage", st->ops->name ? st->ops->name : "?");
        deferred_dump_int(w, "index", st->index);
        deferred_dump_str(w, "kind", st->producer ? "producer" : st->consumer ? "consumer"
                                                                             : "processor");
        if (st->producer) {
            deferred_dump_int(w, "paused", st->paused);
            deferred_dump_str(w, "producer", stopped[st->stopped]);
        }
        deferred_dump_int(w, "items", (long long)st->items);
        if (st->ops->describe) {
            /* What the stage says of itself with no item: a producer's
             * source (a query's SQL and row). */
            char what[512], *big;
            int n = st->ops->describe(st, deferred_value_none(), what, sizeof(what));

            if (n >= (int)sizeof(what) && (big = deferred__malloc((size_t)n + 1))) {
                if (st->ops->describe(st, deferred_value_none(), big, (size_t)n + 1) > 0)
                    deferred_dump_str(w, "at", big);
                deferred__free(big);
            } else if (n > 0) {
                deferred_dump_str(w, "at", what);
            }
        }
        if (st->held)
            deferred_dump_int(w, "holds", st->held);
        if (st->groups)
            deferred_dump_int(w, "open_groups", st->groups);
        for (r = st->routes; r; r = r->up)
            subs++;
        if (subs)
            deferred_dump_int(w, "subordinates", subs);
        deferred__map_dump(w, st);
    }
    if (p->finish_wait) {
        deferred_dump_node(w, "finish", p->finishing < p->n && p->stages[p->finishing]->ops->name
                                            ? p->stages[p->finishing]->ops->name
                                            : "?");
        deferred_dump_deferred(w, "waits on", p->finish_wait);
    }
    deferred_dump_leave(w);
}

/* The result deferred's line: the process it is the result of (p lives as
 * long as it: its canceller holds a reference). */
static void dump_result_note(deferred_dump_t *w, void *arg)
{
    deferred_process_t *p = arg;
    char site[512];

    snprintf(site, sizeof(site), "%s:%d", p->file ? p->file : "?", p->line);
    deferred_dump_str(w, "result_of", site);
}

static void process_cancel_cb(deferred_t *d, void *arg)
{
    (void)d;
    deferred_process_cancel(arg);
}

static void process_unref_cb(void *arg)
{
    deferred_process_unref(arg);
}

deferred_t *deferred_process_run_at(const char *file, int line, deferred_process_t *p)
{
    deferred_t *d;
    uint64_t pauses;
    size_t i;

    /* Misuse found now is NULL with EINVAL (deferred/common.h), not an
     * already-failed deferred. */
    if (!p || p->phase != DEFERRED__BUILDING || p->nproducers == 0 ||
        p->n == p->nproducers) {
        errno = EINVAL;
        return NULL;
    }
    /* What the process fails with on its own (a cancel, a misuse, no
     * memory) names this call: the user's code, not the library's. */
    p->file = file;
    p->line = line;
    d = deferred_new_cancellable(process_cancel_cb, deferred_process_ref(p),
                                 process_unref_cb);
    if (!d) {
        errno = ENOMEM;
        return NULL;
    }
    for (i = 0; i < p->n; i++)
        p->stages[i]->down = i + 1 < p->n ? p->stages[i + 1] : NULL;
    /* Producers all feed the first stage after them. */
    for (i = 0; i < p->nproducers; i++)
        p->stages[i]->down = p->stages[p->nproducers];
    fuse_stages(p);
    if (p->flags & DEFERRED_PROCESS_PAUSED)
        p->held++;
    /* The pauses counted before the run (the process's own and its
     * stages') now apply to every producer. */
    pauses = p->held;
    for (i = p->nproducers; i < p->n; i++)
        pauses += p->stages[i]->held;
    for (i = 0; i < p->nproducers; i++)
        p->stages[i]->paused = (uint32_t)(pauses > UINT32_MAX ? UINT32_MAX : pauses);
    p->done = d;
    deferred_dump_holder_add(&p->dump, dump_process, p);
    deferred_dump_note(d, dump_result_note, p);
    open_stream(p);
    p->refs++; /* held until finish is delivered */
    deferred__enter(p);
    for (i = p->nproducers; i < p->n && !p->failure; i++) {
        deferred_stage_t *st = p->stages[i], *sub = NULL;
        deferred_failure_t *f;

        if (!st->ops->start)
            continue;
        f = st->ops->start(st, p->stages[0], deferred_value_none(), &sub);
        deferred_stage_free(sub); /* the whole stream has no parent */
        if (f) {
            /* The failure's own last frame, appended (not one of those it
             * gets on its way up, deferred__add_frames(): no stage call
             * carries it, and none is delivered before it is taken). */
            deferred_failure_add_context(f, deferred_stage_name(st), "starting");
            deferred__set_failure(p, f);
        }
    }
    for (i = 0; i < p->nproducers; i++)
        if (!deferred__producer_blocked(p->stages[i]))
            deferred__call_resume(p->stages[i], NULL);
    deferred_ref(d);
    deferred__leave(p);
    return d;
}

/* ---- finish ------------------------------------------------------------ */

int deferred_stage_finish(deferred_stage_t *self, deferred_value_t outcome)
{
    deferred_process_t *p;
    int rc = 0;

    if (!self || !self->p || !self->producer) {
        deferred_value_release(outcome);
        return -EINVAL;
    }
    p = self->p;
    if (self->stopped != DEFERRED__LIVE || p->phase == DEFERRED__FINISHED) {
        deferred_value_release(outcome);
        return -EALREADY;
    }
    deferred__enter(p);
    stop_producer(self, DEFERRED__DONE);
    p->producers_done++;
    if (DEFERRED_UNLIKELY(deferred_value_is_deferred(outcome))) {
        /* A producer finishes when its work is done: an outcome still in
         * flight is a mistake, and the stream fails rather than hang. */
        deferred_value_release(outcome);
        outcome = deferred_value_failure(deferred__process_failure(
            p, EINVAL,
            "deferred_stage_finish: %s finished with a deferred (a producer's "
            "outcome is a value or a failure)", deferred_stage_name(self)));
        rc = -EINVAL;
    }
    if (deferred_value_is_failure(outcome)) {
        if (deferred__set_failure(p, deferred_value_take_failure(outcome)))
            deferred__add_frames(p, self, deferred_value_none(), 0, false);
    } else {
        deferred_value_release(p->outcome);
        p->outcome = outcome;
    }
    deferred__leave(p);
    return rc;
}

int deferred_stage_fail(deferred_stage_t *self, deferred_failure_t *f)
{
    deferred_process_t *p;

    if (!self || !self->p || !f) {
        deferred_failure_unref(f);
        return -EINVAL;
    }
    p = self->p;
    if (p->failure || p->phase == DEFERRED__FINISHED || p->phase == DEFERRED__BUILDING) {
        deferred_failure_unref(f);
        return -EALREADY;
    }
    deferred__enter(p);
    deferred__set_failure(p, f);
    /* Nothing is on the stack to add frames as it unwinds: add them all,
     * from self back to the producers. */
    deferred__add_frames(p, self, deferred_value_none(), 0, !self->producer);
    deferred__leave(p);
    return 0;
}

static void cancel_producers(deferred_process_t *p, deferred_stage_t *by)
{
    size_t i;

    for (i = 0; i < p->nproducers; i++) {
        deferred_stage_t *pr = p->stages[i];

        if (pr->stopped != DEFERRED__LIVE)
            continue;
        stop_producer(pr, DEFERRED__CANCELLED);
        if (pr->ops->cancel)
            pr->ops->cancel(pr, by);
    }
}

static void finish_from(deferred_process_t *p, size_t i, deferred_value_t outcome);

/* A stage's finish returned a deferred: the finish goes on from the next
 * stage with its result. */
static deferred_value_t finish_resumed(deferred_value_t v, void *arg)
{
    deferred_process_t *p = arg;
    deferred_t *wait = p->finish_wait;

    /* Our reference on it goes (it holds itself while it runs us). */
    p->finish_wait = NULL;
    deferred_unref(wait);
    finish_from(p, p->finishing + 1, v);
    return deferred_value_none();
}

static void process_unref_destroy(void *arg)
{
    deferred_process_unref(arg);
}

/*
 * Finish the stages from index i on with outcome (taken), in order, inside
 * a stage call (what a finish emits is delivered, not settled).  A stage
 * whose finish returns a deferred (work still in flight, such as an
 * asynchronous map) suspends the sequence until that deferred fires; the
 * stage may still emit meanwhile.  At the end the process's deferred fires
 * with the consumer's result.
 */
static void finish_from(deferred_process_t *p, size_t i, deferred_value_t outcome)
{
    deferred_t *done;

    deferred__enter(p);
    for (; i < p->n; i++) {
        deferred_stage_t *st = p->stages[i];

        if (p->failure) {
            /* What a finish flushed downstream failed. */
            deferred_value_release(outcome);
            outcome = take_failure(p);
        }
        /* Groups left open end with the stream. */
        while (st->routes) {
            deferred_stage_t *sub = st->routes->sub;

            if (sub->ops->finish)
                deferred_value_release(sub->ops->finish(
                    sub, p->stages[0], deferred_value_none(),
                    deferred_value_failure(deferred__process_failure(
                        p, ECANCELED,
                        "the stream ended inside this group"))));
            deferred__route_pop(st);
        }
        p->finishing = i;
        if (st->ops->finish)
            outcome = st->ops->finish(st, p->stages[0], deferred_value_none(), outcome);
        if (DEFERRED_UNLIKELY(deferred_value_is_deferred(outcome))) {
            deferred_t *wait = outcome.ptr;

            /* The process owns the reference the finish handed over until
             * the deferred fired (finish_resumed() lets it go). */
            p->finish_wait = wait;
            p->refs++;
            if (deferred_add_both_full(wait, finish_resumed, p, process_unref_destroy) == 0) {
                /* A cancelled or failed stream wants nothing a stage
                 * still waits on (even when a finish before it replaced
                 * the failure by a value): the cancel goes on to what it
                 * waits on, and the finish goes on with its ECANCELED.
                 * aborted is set first, so that the leave's settle has
                 * nothing to do; the process outlives the leave (the
                 * reference held until finish is delivered). */
                if (p->failure || p->cancelling)
                    p->aborted = true;
                deferred__leave(p);
                if (p->aborted && p->finish_wait == wait)
                    deferred_cancel_at(wait, p->file, p->line);
                return;
            }
            p->finish_wait = NULL;
            deferred_unref(wait);
            outcome = deferred_value_failure(
                deferred__process_failure(p, ENOMEM, NULL));
        }
    }
    if (p->failure) {
        deferred_value_release(outcome);
        outcome = take_failure(p);
    }
    end_finish(p);
    deferred__leave(p);
    /* The deferred holds the process (its canceller's argument); the
     * process lets go of the deferred once it fired, so neither keeps the
     * other alive. */
    done = p->done;
    p->done = NULL;
    deferred_callback(done, outcome);
    deferred_unref(done);
    deferred_process_unref(p); /* the reference held while running */
}

/* The stream was cancelled or failed while it finishes: cancel what the
 * finish waits on (it goes on with the ECANCELED), and every later wait
 * too (finish_from()). */
static int abort_waits(deferred_process_t *p)
{
    p->aborted = true;
    return p->finish_wait ? deferred_cancel_at(p->finish_wait, p->file, p->line) : 0;
}

/* The end of the stream, once the stage calls have unwound: cancel the
 * producers if it failed or was cancelled, then finish every stage after
 * them in order. */
static void settle(deferred_process_t *p)
{
    deferred_value_t outcome;

    if (p->phase == DEFERRED__BUILDING || p->phase == DEFERRED__FINISHED)
        return;
    if (p->phase == DEFERRED__FINISHING) {
        /* A failure or a cancel while a finish waits (a stage failed, a
         * consumer took what it wanted): what it waits on is no longer
         * wanted.  Once: later waits are cancelled by finish_from(). */
        if ((p->failure || p->cancelling) && !p->aborted)
            abort_waits(p);
        return;
    }
    if (p->phase == DEFERRED__OPEN && p->producers_done < p->nproducers)
        return;
    begin_finish(p);
    if (p->failure || p->cancelling) {
        /* Inside a stage call: what the producers' cancels do is settled
         * by the finish below (the leave's settle finds FINISHING,
         * aborted). */
        p->aborted = true;
        deferred__enter(p);
        cancel_producers(p, NULL);
        deferred__leave(p);
    }
    if (p->failure)
        outcome = take_failure(p);
    else if (p->cancelling)
        outcome = deferred_value_failure(deferred__process_failure(
            p, ECANCELED, "the process was cancelled"));
    else {
        outcome = p->outcome;
        p->outcome = deferred_value_none();
    }
    finish_from(p, p->nproducers, outcome);
}

void deferred__settle_unref(deferred_process_t *p)
{
    settle(p);
    deferred_process_unref(p);
}

/* ---- cancel ------------------------------------------------------------ */

int deferred_stage_cancel(deferred_stage_t *self)
{
    deferred_process_t *p;

    if (!self || !self->p)
        return -EINVAL;
    p = self->p;
    if (p->cancelling || p->phase == DEFERRED__FINISHED)
        return 0;
    deferred__enter(p);
    set_cancelling(p);
    cancel_producers(p, self->producer ? NULL : self);
    deferred__leave(p);
    return 0;
}

int deferred_process_cancel(deferred_process_t *p)
{
    if (!p)
        return -EINVAL;
    if (p->finish_wait)
        return abort_waits(p); /* and whatever a later finish waits on */
    if (p->phase == DEFERRED__BUILDING || p->cancelling || p->phase == DEFERRED__FINISHED)
        return 0;
    deferred__enter(p);
    set_cancelling(p);
    cancel_producers(p, NULL);
    deferred__leave(p);
    return 0;
}

bool deferred_process_is_finished(const deferred_process_t *p)
{
    return p && p->phase == DEFERRED__FINISHED;
}
