/*
 * deferred/process.h: producers, processors and consumers stacked on a
 * deferred (a "deferred process").
 *
 * A process is built like a chain: stages are added in order, producers
 * first, any number of processors, one consumer last.  Running it returns
 * a deferred that fires with what the consumer's finish returns, or with
 * the failure that ended the stream.  Cancelling that deferred cancels the
 * producers.
 *
 * The stages' interfaces:
 *   producer   resume, pause, cancel          (each told which consumer asks)
 *   consumer   start(tag), handle(tag, item), finish(tag, outcome)
 *                                             (each told which producer sends)
 *   processor  both
 * and the functions a stage calls to act on its neighbours:
 *   downstream  deferred_stage_emit(), deferred_stage_start(),
 *               deferred_stage_end(), deferred_stage_finish()
 *   upstream    deferred_stage_pause(), deferred_stage_resume(),
 *               deferred_stage_cancel(), deferred_stage_is_paused()
 *
 * Rules the library keeps (Reactive Streams 1.6, 1.7, 3.5 to 3.7):
 *  - Pauses are counted per producer: two pausers need two resumes.  A
 *    producer's resume never nests: a resume asked for while the producer
 *    is inside its own resume only lets its loop go on, so a producer that
 *    emits synchronously runs in constant stack whatever the item count.
 *  - Cancel goes upstream once (each producer's cancel runs at most once);
 *    finish goes downstream exactly once; nothing is delivered after
 *    either.  A stage may pause, resume or cancel from inside handle; the
 *    finish that follows a cancel or a failure is delivered when the stage
 *    calls on the stack have returned, never inside them.
 *  - A failure in any stage (a handle that returns one, a producer that
 *    finishes with one) cancels the producers and reaches every stage's
 *    finish on its way to the consumer's.  On its way back to the producer
 *    it gets a context frame from every stage it crossed, naming the stage
 *    and the item (its number and, where the stage can, a description), and
 *    last the producer's description of where that item came from: the
 *    story of the failure finds the offending input.
 *  - Items are values: handle borrows the item through a pointer and may
 *    take it (move it out, leaving deferred_value_none()); what it leaves is
 *    released by the library.  Nothing is allocated per item.
 *  - Tags: start(tag) ... end(tag) nest to make hierarchical streams (an
 *    order, then its lines).  A consumer's start may hand back a
 *    subordinate consumer, which receives that group's events until the
 *    matching end; what its finish returns is handed to the parent's
 *    handle as an item, with the group's tag.
 *  - Many producers to one consumer: stages added before the first
 *    processor or consumer are all producers feeding the next stage (a
 *    merge).  Every event says which producer sent it; pausing pauses them
 *    all; one producer's finish removes only it, and finish goes downstream
 *    once, after the last (or at once with the first failure).
 *
 * Threads: a process belongs to one thread, like the deferreds in it.
 */
#ifndef DEFERRED_PROCESS_H
#define DEFERRED_PROCESS_H

#include "multi.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct deferred_process deferred_process_t;
typedef struct deferred_stage deferred_stage_t;

/*
 * What a stage does.  A stage with handle is a consumer; a stage with
 * resume is a producer; a processor has both.  Every operation may be NULL
 * except those that make the role.  self's data is deferred_stage_data().
 */
typedef struct deferred_stage_ops {
    /* The stage's name, used in failure context ("filter", "orders query"). */
    const char *name;

    /* Producer side. */
    /* Start or go on producing; called when the process starts (unless it
     * starts paused) and whenever the pause count drops to zero.  A
     * synchronous producer emits while !deferred_stage_is_paused(self). */
    void (*resume)(deferred_stage_t *self, deferred_stage_t *by);
    /* Told when the pause count leaves zero (an asynchronous producer stops
     * its source here).  by is the consumer that asked, NULL for the
     * process itself. */
    void (*pause)(deferred_stage_t *self, deferred_stage_t *by);
    /* Stop for good; runs at most once.  Nothing this stage emits after it
     * is delivered. */
    void (*cancel)(deferred_stage_t *self, deferred_stage_t *by);

    /* Consumer side.  from is the producer the event comes from. */
    /* A group opens (tag is the empty value for the whole stream).  Return
     * NULL, or a failure (taken by the library) to fail the stream.  *sub
     * may be set to a new subordinate consumer stage (the library takes it)
     * that gets this group's events in its place. */
    deferred_failure_t *(*start)(deferred_stage_t *self, deferred_stage_t *from,
                                 deferred_value_t tag, deferred_stage_t **sub);
    /* An item (borrowed through the pointer; move it out to keep it).
     * Return NULL, or a failure to fail the stream. */
    deferred_failure_t *(*handle)(deferred_stage_t *self, deferred_stage_t *from,
                                  deferred_value_t tag, deferred_value_t *item);
    /* A group closes, or (empty tag) the stream ends.  outcome (taken) is
     * the end value or the failure.  Returns what goes on downstream: for a
     * processor the outcome for the next stage, for the consumer the
     * process's result, for a subordinate the item handed to its parent.
     * At the end of the stream (empty tag) a finish may instead return a
     * deferred, when work is still in flight: the process owns it until it
     * fires, the stages after it are finished then, with its result, and
     * the stage may emit until then.  A deferred returned for a group's
     * end is released and fails the stream (EINVAL).  finish runs for
     * every group's end as well as the stream's: a consumer counting its
     * starts knows which end is its last.  NULL finish passes outcome on
     * unchanged. */
    deferred_value_t (*finish)(deferred_stage_t *self, deferred_stage_t *from,
                               deferred_value_t tag, deferred_value_t outcome);

    /* Error context: write a description of item (borrowed; may be the
     * empty value when the stage no longer holds it) into buf, snprintf
     * style.  A producer describes where its current item came from. */
    int (*describe)(deferred_stage_t *self, deferred_value_t item, char *buf,
                    size_t size);

    /* Free the stage's data; called once when the process is freed (or
     * the subordinate is done). */
    void (*destroy)(void *data);
} deferred_stage_ops_t;

/* Stage flags. */
#define DEFERRED_STAGE_AUTOPAUSE 0x1u /* pull: its producers pause after
                                         each item it gets; it resumes them
                                         to ask for the next one */

/*
 * Make a stage running ops on data.  ops is borrowed and must outlive the
 * stage (a static table); data is owned by the stage (ops->destroy frees
 * it).  NULL with errno ENOMEM on allocation failure, or EINVAL when ops
 * is NULL or has neither handle nor resume, or when flags has a bit other
 * than DEFERRED_STAGE_AUTOPAUSE (data destroyed in every case).
 */
DEFERRED_EXPORT deferred_stage_t *deferred_stage_new(const deferred_stage_ops_t *ops,
                                                     void *data, unsigned flags);

/* The stage's data and name (borrowed). */
DEFERRED_EXPORT void *deferred_stage_data(const deferred_stage_t *st);
DEFERRED_EXPORT const char *deferred_stage_name(const deferred_stage_t *st);

/* Free a stage that was never added to a process.  NULL is a no-op. */
DEFERRED_EXPORT void deferred_stage_free(deferred_stage_t *st);

/* ---- building and running ---------------------------------------------- */

#define DEFERRED_PROCESS_PAUSED 0x1u /* start paused: nothing flows until
                                        deferred_process_resume() */

/* A new, empty process with one reference.  NULL with errno ENOMEM on
 * allocation failure, or EINVAL when flags has a bit other than
 * DEFERRED_PROCESS_PAUSED. */
DEFERRED_EXPORT deferred_process_t *deferred_process_new(unsigned flags);

/* Add a reference to p; returns p (NULL gives NULL). */
DEFERRED_EXPORT deferred_process_t *deferred_process_ref(deferred_process_t *p);
/* Drop a reference.  A running process keeps itself until its finish has
 * been delivered; the last reference then frees the stages.  NULL: no-op. */
DEFERRED_EXPORT void deferred_process_unref(deferred_process_t *p);

/*
 * Add the next stage (taken, also on error: it is freed).  Producers come
 * first; then processors; a consumer last.
 * Returns 0, or -EINVAL (NULL, a producer after a processor or consumer,
 * a stage after a built-in consumer (collect, reduce, first, to_multi: a
 * stage of the user's is known as the consumer by being last), a
 * subordinate-only stage, a stage already in a process (not freed: it is
 * that process's)), -EBUSY (the process already runs), -ENOMEM.
 */
DEFERRED_EXPORT int deferred_process_add(deferred_process_t *p, deferred_stage_t *st);

/*
 * Run the process: every processor and the consumer get start(empty tag),
 * then the producers resume (unless the process was made paused).  Items
 * may flow, and the process may even finish, before this returns.
 * Returns a new reference to the process's deferred, which fires with the
 * consumer's finish result or fails with what ended the stream.  NULL
 * with errno EINVAL for a NULL process, a process without a producer or
 * without a consumer, or one run already (deferred/common.h: never an
 * already-failed deferred); ENOMEM on allocation failure.  p is borrowed
 * and keeps its stages on error.
 *
 * A macro: the failures the process makes itself (a cancel, a misuse, no
 * memory; see deferred_stage_failure()) record the file and line of this
 * call.  The function of the same name (in parentheses, or through a
 * pointer) records none.
 */
#define deferred_process_run(p) deferred_process_run_at(__FILE__, __LINE__, (p))
DEFERRED_EXPORT deferred_t *deferred_process_run_at(const char *file, int line,
                                                    deferred_process_t *p);
DEFERRED_EXPORT deferred_t *(deferred_process_run)(deferred_process_t *p);

/* Pause and resume the whole process (counted with the stages' pauses),
 * cancel it (the producers' cancels run once; the consumer's finish gets
 * ECANCELED).  Pauses made before the run (of the process, or of a stage
 * already added) are counted and hold every producer from the run on,
 * those added after the pause too.  Return 0, -EINVAL (NULL, resume
 * without pause, or a pause count at UINT32_MAX). */
DEFERRED_EXPORT int deferred_process_pause(deferred_process_t *p);
DEFERRED_EXPORT int deferred_process_resume(deferred_process_t *p);
DEFERRED_EXPORT int deferred_process_cancel(deferred_process_t *p);

/* True while any producer is paused. */
DEFERRED_EXPORT bool deferred_process_is_paused(const deferred_process_t *p);

/* True once the consumer's finish has run. */
DEFERRED_EXPORT bool deferred_process_is_finished(const deferred_process_t *p);

/* ---- what stages call ------------------------------------------------- */

/*
 * Send item (taken) downstream from self, within the current group (tag is
 * borrowed for the call; the empty value outside groups).  Returns 0, or
 * -ECANCELED when the stream was cancelled or failed (item released: stop
 * emitting), -EINVAL (NULL, or self has no consumer).
 */
DEFERRED_EXPORT int deferred_stage_emit(deferred_stage_t *self, deferred_value_t item);
DEFERRED_EXPORT int deferred_stage_emit_tagged(deferred_stage_t *self,
                                               deferred_value_t tag,
                                               deferred_value_t item);

/* Open and close a group downstream (tag borrowed for the call; outcome
 * taken: a value or a failure).  Same returns as deferred_stage_emit().
 * The empty tag stands for the whole stream: a start with it is -EINVAL.
 * Groups nest and are counted per stage: closing a group self did not
 * open is -EINVAL and fails the stream with EINVAL (the consumers would
 * close someone else's group); so does an outcome that is a deferred (the
 * group still ends, with that failure).  A start is counted even when it
 * returns -ECANCELED. */
DEFERRED_EXPORT int deferred_stage_start(deferred_stage_t *self, deferred_value_t tag);
DEFERRED_EXPORT int deferred_stage_end(deferred_stage_t *self, deferred_value_t tag,
                                       deferred_value_t outcome);

/*
 * A producer is done, with outcome (taken: a value, or a failure that
 * fails the stream).  Once every producer is done, finish goes downstream.
 * Returns 0, -EALREADY (this producer finished or was cancelled before:
 * outcome released), -EINVAL (NULL, not a producer; or outcome is a
 * deferred: it is released and the producer finishes with an EINVAL
 * failure, so the stream fails rather than hang).
 */
DEFERRED_EXPORT int deferred_stage_finish(deferred_stage_t *self, deferred_value_t outcome);

/*
 * Fail the stream from stage self with f (taken), outside its handle: for
 * a stage whose work finishes later (an asynchronous map).  f gets a
 * context frame from self and from every stage upstream of it, with the
 * number of the item each is at.  Returns 0, -EINVAL (NULL; f released),
 * -EALREADY (the stream already ended or failed; f released).
 */
DEFERRED_EXPORT int deferred_stage_fail(deferred_stage_t *self, deferred_failure_t *f);

/*
 * Flow control, called by a consumer or processor on its producers (all
 * of them, through the processors in between).  Counted.  Resume with no
 * pause of its own outstanding is -EINVAL.  Cancel is idempotent.  Each
 * returns 0 or -EINVAL.  They may be called from inside handle.
 */
DEFERRED_EXPORT int deferred_stage_pause(deferred_stage_t *self);
DEFERRED_EXPORT int deferred_stage_resume(deferred_stage_t *self);
DEFERRED_EXPORT int deferred_stage_cancel(deferred_stage_t *self);

/* For a producer: true when it should not emit (paused, cancelled or
 * finished).  For a consumer: true when any of its producers is paused. */
DEFERRED_EXPORT bool deferred_stage_is_paused(const deferred_stage_t *self);

/*
 * A new failure (one reference; never NULL, as deferred_failure_new())
 * made on behalf of st's process: its site is the user's
 * deferred_process_run() call (none before the run), not the stage's own
 * source file.  For stages that fail for reasons of their own (no memory,
 * a read error, a misuse) rather than the user's callback's.
 */
DEFERRED_EXPORT deferred_failure_t *deferred_stage_failure(const deferred_stage_t *st,
                                                           deferred_domain_t domain,
                                                           int code, const char *fmt, ...)
    DEFERRED_PRINTF(4, 5);

/* The number of items the stage has been handed so far. */
DEFERRED_EXPORT uint64_t deferred_stage_items(const deferred_stage_t *st);

/* ---- built-in stages -------------------------------------------------- */

/* Each constructor below returns NULL with errno EINVAL for the bad
 * arguments its comment names, ENOMEM on allocation failure (what it
 * takes released), as deferred/common.h says. */

/* Producer of n values (the array is copied; the values are taken).
 * It describes an item as "element I of N".  NULL with errno ENOMEM on
 * allocation failure (the values released), or EINVAL for NULL items with
 * n > 0 (nothing read). */
DEFERRED_EXPORT deferred_stage_t *deferred_stage_array(const deferred_value_t *items,
                                                       size_t n);

/* Producer of the rows of a multi-fire deferred (a reference is taken on
 * it): each row is emitted, its end finishes the producer; pause and
 * resume pause the multi-fire deferred, cancel cancels it.  NULL with
 * errno EINVAL when multi is NULL or not multi-fire. */
DEFERRED_EXPORT deferred_stage_t *deferred_stage_from_multi(deferred_t *multi);

/*
 * Processor applying fn to each item (taken by fn, as a callback).  fn may
 * return a value (emitted), a failure (fails the stream), or a deferred
 * (the map owns it until it fires): the producers are paused until it
 * fires, then its value is emitted.  Results keep the items' order: one
 * that is ready while a deferred before it waits (a producer that emits
 * while paused) waits behind it.  Results that waited are emitted with the
 * empty tag.  The end of the stream waits for them; when the stream fails
 * or is cancelled, or the stage is freed, the deferreds still waited on
 * are cancelled and released.  name (borrowed: it must outlive the stage)
 * may be NULL ("map").  NULL with errno EINVAL for a NULL fn.
 */
DEFERRED_EXPORT deferred_stage_t *deferred_stage_map(const char *name, deferred_fn fn,
                                                     void *arg);

/* Processor passing the items for which keep(item, arg) is true (item
 * borrowed); the others are released.  name (borrowed: it must outlive
 * the stage) may be NULL ("filter").  NULL with errno EINVAL for a NULL
 * keep. */
typedef bool (*deferred_pred_fn)(deferred_value_t item, void *arg);
DEFERRED_EXPORT deferred_stage_t *deferred_stage_filter(const char *name,
                                                        deferred_pred_fn keep,
                                                        void *arg);

/* Processor grouping items into deferred_array_t values of n (the last
 * one may be shorter; it is flushed at the start and the end of each
 * group, whatever the group's outcome, and at the end of the stream).
 * When a stage after it fails on a batch, the batch's frame names the
 * items in it ("in the batch of items 5 to 8"), or the one at fault when
 * the failure is a first-error naming an element of the batch
 * (deferred_failure_first_error(), as a gather over its items makes:
 * "item 6, element 1 of the batch of items 5 to 8").  NULL with errno
 * EINVAL for n == 0. */
DEFERRED_EXPORT deferred_stage_t *deferred_stage_batch(size_t n);

/* Consumer collecting every item, those inside groups too; the process's
 * result is a deferred_array_t value of them, in order (or the failure).
 * As a subordinate, its result is its group's items. */
DEFERRED_EXPORT deferred_stage_t *deferred_stage_collect(void);

/* Consumer folding the items: acc = fn(acc, item) with fn taking both;
 * the process's result is the last acc.  fn returning a failure fails the
 * stream.  init is taken; NULL with errno EINVAL (init released) for a
 * NULL fn or an init holding a deferred. */
typedef deferred_value_t (*deferred_fold_fn)(deferred_value_t acc,
                                             deferred_value_t item, void *arg);
DEFERRED_EXPORT deferred_stage_t *deferred_stage_reduce(deferred_fold_fn fn,
                                                        deferred_value_t init,
                                                        void *arg);

/* Consumer keeping the first item and cancelling the stream after it; the
 * process's result is that item, or the producers' end value (the empty
 * value, usually) when there was none, or the failure. */
DEFERRED_EXPORT deferred_stage_t *deferred_stage_first(void);

/*
 * Run producer (taken) into deferred_stage_first(): the returned deferred
 * (a new reference) fires with the first item, or with the empty value
 * when the producer had none, or fails.  The producer is cancelled after
 * the first item.  NULL with errno EINVAL when producer is NULL or is no
 * producer (deferred_process_add()'s error), ENOMEM on allocation failure
 * (producer freed in both cases).  Items may flow before this returns.
 */
#define deferred_process_first(producer) \
    deferred_process_first_at(__FILE__, __LINE__, (producer))
DEFERRED_EXPORT deferred_t *deferred_process_first_at(const char *file, int line,
                                                      deferred_stage_t *producer);
DEFERRED_EXPORT deferred_t *(deferred_process_first)(deferred_stage_t *producer);

/* Consumer feeding a multi-fire deferred (a reference is taken): each item
 * is emitted into it, the stream's end finishes it, and its backpressure
 * (a waiting row, a pause) pauses the producers.  The process's result is
 * the empty value, or the failure.  NULL with errno EINVAL when multi is
 * NULL or not multi-fire. */
DEFERRED_EXPORT deferred_stage_t *deferred_stage_to_multi(deferred_t *multi);

#ifdef __cplusplus
}
#endif

#endif /* DEFERRED_PROCESS_H */
