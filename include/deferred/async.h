/*
 * deferred/async.h: async functions, stackless coroutines in portable C99.
 *
 * An async function is one C function, the body, that the library calls
 * again each time what it awaits has its result.  It resumes where it
 * stopped: the body is a switch on a resume point kept in its frame, and
 * each await is a case label of it (Duff's device, as protothreads do it).
 * No assembly, no ucontext, no second stack: it builds as C99 -pedantic and
 * as C++11, with gcc and clang, at any optimization level and under the
 * sanitizers.
 *
 * The frame is a struct of the user's whose first member is a
 * deferred_async_t named co; every local that must live across an await
 * is a member of it.  deferred_async_new() allocates the frame (zeroed)
 * and the coroutine's deferred in one allocation; deferred_async_start()
 * runs the body up to its first await of a deferred that has no result
 * yet and returns the coroutine's deferred, which fires with what the body
 * returns, or fails with what it fails with.  Awaits allocate nothing.
 *
 *     struct add_frame {
 *         deferred_async_t co;   (first, named co)
 *         deferred_t *in;        (an argument, set before the start)
 *         intptr_t sum;          (a local that lives across awaits)
 *         deferred_value_t v;
 *     };
 *
 *     static int add_body(void *frame)
 *     {
 *         struct add_frame *f = frame;
 *
 *         DEFERRED_ASYNC_BEGIN(f);
 *         DEFERRED_AWAIT(f, f->in, f->v);        (a failure ends it here)
 *         f->sum = deferred_value_get_int(f->v) + 1;
 *         DEFERRED_ASYNC_RETURN(f, deferred_value_int(f->sum));
 *         DEFERRED_ASYNC_END(f);
 *     }
 *
 *     struct add_frame *f = DEFERRED_ASYNC_NEW(struct add_frame, add_body, "add");
 *     f->in = deferred_ref(some_deferred);
 *     d = deferred_async_start(f);              (a new reference)
 *
 * The rules of the body (the compiler enforces the first two in C++ and
 * warns in C; breaking the others is undefined):
 *  - Locals of the body do not survive an await: the body returns at each
 *    await and is called again.  Keep what lives across awaits in the
 *    frame.  A local may be used between two awaits (the value an await
 *    gives may be assigned to one and used before the next await).
 *  - No declaration with an initializer in the body's own block between
 *    DEFERRED_ASYNC_BEGIN() and DEFERRED_ASYNC_END(): the switch jumps over
 *    it.  Declare locals before DEFERRED_ASYNC_BEGIN(), or in an inner
 *    block ({ int n = 3; ... }) that holds no await.
 *  - No await inside a switch statement of the body's own (its case
 *    labels would join that switch), and at most one await per source
 *    line (each is a case label named by its line: two on one line do not
 *    compile).
 *  - The body is only called by the library; it returns through the
 *    macros (DEFERRED_ASYNC_RETURN(), DEFERRED_ASYNC_FAIL(),
 *    DEFERRED_ASYNC_END()), never with a return statement of its own.
 *
 * Borrowing.  DEFERRED_AWAIT() takes its deferred (a constructor's new
 * reference, typically); DEFERRED_AWAIT_BORROWED() and
 * DEFERRED_AWAIT_TRY_BORROWED() take nothing, as Twisted's `yield d`: for
 * a deferred the body keeps in its frame (an argument, one it awaits
 * again), with no deferred_ref() per await.
 *
 * Failures.  DEFERRED_AWAIT() gives the awaited deferred's value; when it
 * failed, the coroutine ends with that failure (its cleanups run) and the
 * failure gets a context frame naming the coroutine ("async NAME") and the
 * await ("await at FILE:LINE").  DEFERRED_AWAIT_TRY() gives the value or
 * the failure value for the body to test (deferred_value_is_failure()) and
 * handle: its try/catch.
 *
 * Cleanups.  The code after DEFERRED_ASYNC_FINALLY() runs on every exit:
 * after the body's end, a return, a failure, an unhandled cancel, and when
 * the coroutine is dropped.  It may await (a failure there replaces the
 * outcome and ends the coroutine, without running the cleanups twice).
 *
 * Cancel.  Cancelling the coroutine's deferred cancels the deferred the
 * body awaits (or the stream it iterates); the await then gets what that
 * cancel gave (ECANCELED, usually): unhandled, the coroutine unwinds
 * through its cleanups and its deferred fails with it; handled, the
 * coroutine goes on and its deferred fires with what it returns, and a
 * second cancel cancels what it awaits then (Twisted's inlineCallbacks).
 *
 * Lifetime.  A coroutine waiting on a deferred is held by that deferred
 * (the callback it added holds its deferred), as in Twisted: dropping the
 * coroutine's deferred does not stop it.  When the deferred it awaits is
 * freed without having fired, the coroutine can never resume: it is
 * dropped: its cleanups run at once (awaits there fail with ECANCELED at
 * once), what the iterators hold is released, its deferred never fires
 * and its frame is freed with its last reference.  A consumer coroutine
 * (deferred_async_consumer()) is the exception: its process's result
 * waits on its deferred, which then fails with ECANCELED so that the
 * process ends.
 *
 * Cycles.  Because the awaited deferred holds the coroutine, an await of
 * a pending deferred that already waits on the coroutine (its own
 * deferred; one a coroutine awaiting this one's deferred will fire; one
 * whose chain_to() link this one's deferred will fire) would make both
 * wait, and hold each other, forever.  Such an await fails at once with
 * EDEADLK ("async NAME awaited a deferred that waits on it"), as a
 * callback returning such a deferred does, and deferred_chain_to()
 * refuses the link that would close one (-EDEADLK).  The check follows
 * what the library holds; a deferred kept only in a frame is the frame's
 * (the library cannot see it).
 *
 * Nothing recurses: an await of a deferred that has its result goes on at
 * once inside the body (a loop of a million such awaits runs in constant
 * stack), and resumes and starts nested deeper than 32 are queued and run
 * as soon as the outer ones return (a chain of any number of coroutines,
 * each awaiting the next, runs in bounded stack).
 *
 * Async-for.  DEFERRED_ASYNC_FOR() runs its block once per item of a
 * stream: a producer stage (deferred/process.h), or a multi-fire
 * deferred's rows.  The stream is pulled one item at a time: while the
 * block runs or awaits, the producers stay paused, so backpressure reaches
 * the source.  A stream that fails ends the coroutine as an unhandled
 * await does (its frame names "async-for at FILE:LINE").  A coroutine can
 * also be a process's consumer or processor (deferred_async_consumer()):
 * it pulls the process's items with DEFERRED_ASYNC_FOR() over
 * deferred_async_input() and, as a processor, sends items on with
 * deferred_async_emit(); what it returns is the process's result (or the
 * outcome the stages after it finish with).
 *
 * Threads: a coroutine belongs to one thread, like its deferreds.
 */
#ifndef DEFERRED_ASYNC_H
#define DEFERRED_ASYNC_H

#include "process.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The body of an async function.  frame is the frame deferred_async_new()
 * made.  It returns one of the macros' codes, never a value of its own. */
typedef int (*deferred_async_fn)(void *frame);

/*
 * The header of a frame: its first member, named co.  line is the resume
 * point and finally_ tells the cleanups are running; state_ is the
 * library's.  The body never touches them itself: the macros do.
 */
typedef struct deferred_async {
    int line;
    int finally_;
    int status_;
    unsigned char dropped_; /* dropped (deferred_async_dropped()) */
    unsigned char resumed_; /* the awaited deferred's value is in out */
    struct deferred__async *state_;
} deferred_async_t;

/* An iterator for DEFERRED_ASYNC_FOR(), kept in the frame (zeroed with
 * it).  done_ is the macros'. */
typedef struct deferred_async_iter {
    struct deferred__async_link *link_;
    int done_;
} deferred_async_iter_t;

/* ---- calling an async function ----------------------------------------- */

/*
 * Make a coroutine of body: one allocation holding its deferred and a
 * frame of frame_size bytes, zeroed, with the header set (the frame must
 * begin with a deferred_async_t named co).  Fill the frame's arguments,
 * then start it with deferred_async_start(), or drop it unstarted with
 * deferred_async_discard().  name (borrowed: a string literal, say) names
 * the coroutine in failure contexts; NULL is "async function".  Returns
 * the frame, or NULL with errno EINVAL (NULL body, frame_size smaller than
 * deferred_async_t) or ENOMEM.  Nothing runs before it returns.
 */
DEFERRED_EXPORT void *deferred_async_new(deferred_async_fn body, size_t frame_size,
                                         const char *name);

/* deferred_async_new() for a frame of type type, as a type * (a cast C++
 * needs). */
#define DEFERRED_ASYNC_NEW(type, body, name) \
    ((type *)deferred_async_new((body), sizeof(type), (name)))

/*
 * Start the coroutine of frame (made by deferred_async_new(), started at
 * most once): its body runs before this returns, up to its first await of
 * a deferred without a result, or to its end; then the frame belongs to
 * the coroutine.  Returns the coroutine's deferred (a new reference; it
 * may have its result already), or NULL with errno EINVAL for NULL or a
 * frame already started.  Started from inside another coroutine deeper
 * than 32 levels, the body runs as soon as the outer levels return (the
 * deferred returned is then pending, as for any await).
 */
DEFERRED_EXPORT deferred_t *deferred_async_start(void *frame);

/* Free a frame that was never started (its body never runs; what the
 * frame's members hold is the caller's to release first).  NULL, or a
 * frame already started, is a no-op. */
DEFERRED_EXPORT void deferred_async_discard(void *frame);

/* The coroutine's deferred (borrowed: valid while the coroutine runs or
 * its deferred is held), or NULL for NULL.  For a body that hands it to
 * something it starts. */
DEFERRED_EXPORT deferred_t *deferred_async_self(const deferred_async_t *co);

/* The coroutine's name, as given to deferred_async_new(); "" for NULL. */
DEFERRED_EXPORT const char *deferred_async_name(const deferred_async_t *co);

/* True while the coroutine unwinds because it was dropped (what it awaited
 * was freed unfired): its cleanups can tell a drop from an ordinary exit.
 * False for NULL. */
DEFERRED_EXPORT bool deferred_async_dropped(const deferred_async_t *co);

/* ---- the body's macros -------------------------------------------------- */

/* What a body returns (through the macros only). */
#define DEFERRED_ASYNC_DONE_ 0    /* it ended */
#define DEFERRED_ASYNC_SUSPEND_ 1 /* it waits; called again on the result */
#define DEFERRED_ASYNC_AGAIN_ 2   /* call it again now (cleanups next) */

/* Where the resume points of the cleanups are: the code after
 * DEFERRED_ASYNC_FINALLY(), and the end. */
#define DEFERRED_ASYNC_LINE_FINALLY_ (-1)
#define DEFERRED_ASYNC_LINE_END_ (-2)

/* Open the body: the first statement after the locals' declarations. */
#define DEFERRED_ASYNC_BEGIN(f)                                              \
    switch ((f)->co.line) {                                                  \
    case 0:

/*
 * Await the deferred d (taken: a new reference, such as a constructor's;
 * NULL is a constructor's failure, as deferred_value_deferred(NULL) reads
 * errno).  out (an lvalue of type deferred_value_t) receives the value,
 * owned by the body.  A failure ends the coroutine (see the header
 * comment).  A multi-fire d is awaited until its stream finishes.
 */
#define DEFERRED_AWAIT(f, d, out) DEFERRED_ASYNC_AWAIT_(f, d, out, 0)

/* Await d as DEFERRED_AWAIT() does, but a failure is given to out as a
 * failure value (owned by the body: release it, or return it) for the body
 * to test and handle. */
#define DEFERRED_AWAIT_TRY(f, d, out) DEFERRED_ASYNC_AWAIT_(f, d, out, DEFERRED_ASYNC_TRY_)

/*
 * Await d as DEFERRED_AWAIT() does, but borrowed: d stays the caller's (no
 * reference is taken or dropped; d must be valid when the await begins),
 * as Twisted's `yield d` takes nothing.  For a deferred the body keeps
 * (a member of the frame, an argument), with no deferred_ref() per await.
 * When d has its result the await takes it (d keeps the empty value, as
 * after Twisted's yield).  When it has none, the coroutine waits on it as
 * for DEFERRED_AWAIT(): d's chain holds the coroutine, not the reverse,
 * so d freed unfired drops the coroutine.  A multi-fire d is awaited
 * until its stream finishes.  NULL is an EINVAL failure.  Callbacks of d
 * may run before the await goes on (a cancel of the coroutine that came
 * while it ran is passed to d).
 */
#define DEFERRED_AWAIT_BORROWED(f, d, out)                                   \
    DEFERRED_ASYNC_AWAIT_(f, d, out, DEFERRED_ASYNC_BORROW_)

/* DEFERRED_AWAIT_TRY() of a borrowed d (see DEFERRED_AWAIT_BORROWED()). */
#define DEFERRED_AWAIT_TRY_BORROWED(f, d, out)                               \
    DEFERRED_ASYNC_AWAIT_(f, d, out, DEFERRED_ASYNC_TRY_ | DEFERRED_ASYNC_BORROW_)

/* The how of deferred_async_await() and deferred_async_resume(): bits. */
#define DEFERRED_ASYNC_TRY_ 1    /* a failure goes to out */
#define DEFERRED_ASYNC_BORROW_ 2 /* d is borrowed, not taken */

#if defined(__GNUC__)
#define DEFERRED__ASYNC_LIKELY(x) __builtin_expect(!!(x), 1)
#else
#define DEFERRED__ASYNC_LIKELY(x) (x)
#endif

/* The await's common case, inline: d has its result (struct
 * deferred__head says how to tell), it is a value (or how has TRY) and d
 * is borrowed, or taken and held by someone else too; the coroutine was
 * not dropped.  Then the value moves to *out (d keeps the empty value, a
 * taken d loses the reference the await was given) and it returns 1;
 * else 0, nothing done (deferred_async_await() does the rest). */
static inline int deferred__async_ready(const deferred_async_t *co, deferred_t *d,
                                        deferred_value_t *out, int how)
{
    struct deferred__head *h = (struct deferred__head *)(void *)d;
    void (*release)(void *);

    if (!h || co->dropped_ || !deferred__head_ready(h))
        return 0;
    release = h->result.release;
    if (!(how & DEFERRED_ASYNC_TRY_) && release == deferred_value_failure_release)
        return 0;
    if (!(how & DEFERRED_ASYNC_BORROW_)) {
        if (h->refs < 2)
            return 0; /* the last reference: the call frees d */
        h->refs--;
    }
    /* Word by word: the result was stored so (a fire's two registers, an
     * earlier take's two zeros), and a wider load of what narrower stores
     * just wrote waits for them to reach the cache. */
    out->ptr = h->result.ptr;
    out->release = release;
    h->result.ptr = NULL;
    h->result.release = NULL;
    return 1;
}

/* Every await: no call when d has its result (deferred__async_ready()),
 * one call when it has not, one more on a resume.  The common outcome is
 * one test; the locals have no initializer, so the jump to the case label
 * skips nothing (C++ allows that jump too), and d is evaluated once. */
#define DEFERRED_ASYNC_AWAIT_(f, d, out, how)                                \
    do {                                                                     \
        int deferred_async_rc_;                                              \
        deferred_t *deferred_async_d_;                                       \
        deferred_async_d_ = (d);                                             \
        if (DEFERRED__ASYNC_LIKELY(deferred__async_ready(&(f)->co, deferred_async_d_, \
                                                         &(out), (how))))   \
            break;                                                           \
        deferred_async_rc_ = deferred_async_await(&(f)->co, deferred_async_d_, &(out), \
                                                  (how), __FILE__, __LINE__); \
        if (deferred_async_rc_ != DEFERRED_ASYNC_DONE_) {                    \
            if (deferred_async_rc_ == DEFERRED_ASYNC_SUSPEND_) {             \
                return DEFERRED_ASYNC_SUSPEND_;                              \
            case __LINE__:                                                   \
                if (DEFERRED__ASYNC_LIKELY((f)->co.resumed_)) {              \
                    (f)->co.resumed_ = 0;                                    \
                    break;                                                   \
                }                                                            \
                deferred_async_rc_ = deferred_async_resume(&(f)->co, &(out), (how), \
                                                           __FILE__, __LINE__); \
            }                                                                \
            if (deferred_async_rc_ == DEFERRED_ASYNC_AGAIN_)                 \
                return DEFERRED_ASYNC_AGAIN_;                                \
        }                                                                    \
    } while (0)

/* End the coroutine with v (taken: a value, or a failure value to fail
 * it; a deferred value is an EINVAL failure: await it instead).  The
 * cleanups run first.  Inside the cleanups, it replaces the outcome. */
#define DEFERRED_ASYNC_RETURN(f, v)                                          \
    do {                                                                     \
        deferred_async_return(&(f)->co, (v));                                \
        return DEFERRED_ASYNC_AGAIN_;                                        \
    } while (0)

/* End the coroutine with the failure failure (taken; NULL is ENOMEM). */
#define DEFERRED_ASYNC_FAIL(f, failure)                                      \
    DEFERRED_ASYNC_RETURN(f, deferred_value_failure(failure))

/* Start the cleanups: the code after it runs on every exit, once.  At most
 * one per body, after the body's code and before DEFERRED_ASYNC_END().
 * Reaching it by falling through ends the coroutine with the empty value
 * (or what a cancel or drop left). */
#define DEFERRED_ASYNC_FINALLY(f)                                            \
    goto deferred_async_finally_;                                            \
    case DEFERRED_ASYNC_LINE_FINALLY_:                                       \
    deferred_async_finally_:                                                 \
    (f)->co.finally_ = 1;

/* Close the body (its last statement).  Reaching it ends the coroutine:
 * with the empty value when nothing set another outcome. */
#define DEFERRED_ASYNC_END(f)                                                \
    goto deferred_async_end_;                                                \
    default:                                                                 \
    deferred_async_end_:;                                                    \
    }                                                                        \
    return DEFERRED_ASYNC_DONE_

/*
 * Run the block that follows once per item of the stream it iterates
 * (opened with deferred_async_iter_open() or _open_multi(), or the input
 * of a consumer coroutine), with item (an lvalue of type deferred_value_t)
 * holding the item, owned by the block.  Waiting for an item is an await.
 * break and continue work as in a for loop (after a break the stream is
 * held until deferred_async_iter_close() or the coroutine's end cancels
 * it, or until a later DEFERRED_ASYNC_FOR() over it goes on).  When the
 * stream fails, the coroutine ends with that failure (as an unhandled
 * await).  The stream is held (its producers paused) from an item's
 * arrival until the block asks for the next one.  Not inside a switch of
 * the body's own; one per line.
 */
#define DEFERRED_ASYNC_FOR(f, it, item)                                      \
    for (;;)                                                                 \
        if (((f)->co.status_ = deferred_async_next(&(f)->co, (it), &(item),  \
                                                   __FILE__, __LINE__)) != 0) { \
            if ((f)->co.status_ < 0)                                         \
                return DEFERRED_ASYNC_AGAIN_;                                \
            return DEFERRED_ASYNC_SUSPEND_;                                  \
        case __LINE__:;                                                      \
        } else if ((it)->done_)                                              \
            break;                                                           \
        else

/* ---- what the macros call ----------------------------------------------- */

/*
 * Await d at resume point line of file; how is 0 or the bits
 * DEFERRED_ASYNC_TRY_ and DEFERRED_ASYNC_BORROW_.  d is taken, or with
 * DEFERRED_ASYNC_BORROW_ borrowed (never released; NULL is then an EINVAL
 * failure).  Returns DEFERRED_ASYNC_DONE_ (0) with *out set to d's value
 * (or, with DEFERRED_ASYNC_TRY_, to its failure value) when d had its
 * result (d NULL and taken: errno's failure, as
 * deferred_value_deferred(NULL)); DEFERRED_ASYNC_SUSPEND_ (1) when the
 * coroutine now waits on d (the body returns, and resumes at line with
 * deferred_async_resume()); DEFERRED_ASYNC_AGAIN_ (2) when d failed
 * without DEFERRED_ASYNC_TRY_: the failure, with a frame "async NAME",
 * "await at FILE:LINE", is the coroutine's outcome and the body is pointed
 * at its cleanups (or, inside them, at its end).  In a dropped coroutine d
 * is released (when taken) and the await fails with ECANCELED at once
 * (outside the cleanups, try or not, the body then unwinds).  -EINVAL for
 * NULL co or out (d released when taken).  Callbacks of d may run before
 * it returns.
 */
DEFERRED_EXPORT int deferred_async_await(deferred_async_t *co, deferred_t *d,
                                         deferred_value_t *out, int how,
                                         const char *file, int line);

/* After an await resumed: what deferred_async_await() would have given
 * had d had its result then (0 with *out set, or 2), from what d gave;
 * how and out as for the await (a value given when d fired may already be
 * in *out: 0 then, *out untouched).  -EINVAL for NULL co or out. */
DEFERRED_EXPORT int deferred_async_resume(deferred_async_t *co, deferred_value_t *out,
                                          int how, const char *file, int line);

/* Make v (taken) the coroutine's outcome (a deferred value becomes an
 * EINVAL failure) and point the body at its cleanups, or, inside them, at
 * its end.  -EINVAL for NULL co (v released). */
DEFERRED_EXPORT int deferred_async_return(deferred_async_t *co, deferred_value_t v);

/* ---- streams ------------------------------------------------------------ */

/*
 * Open it (zeroed, or closed) on the items of producer (taken, also on
 * error): a process of producer and a consumer of the coroutine's that
 * pulls one item at a time.  Items may arrive before it returns.  Returns
 * 0; -EINVAL (NULL co, it or producer, it already open: producer freed);
 * -ENOMEM (the iterator is then done, its stream failed with ENOMEM, so a
 * DEFERRED_ASYNC_FOR() over it ends the coroutine with that failure).
 * The iterator is closed when its stream ends, by
 * deferred_async_iter_close(), and at the coroutine's end.
 */
DEFERRED_EXPORT int deferred_async_iter_open(deferred_async_t *co, deferred_async_iter_t *it,
                                             deferred_stage_t *producer);

/* deferred_async_iter_open() on the rows of the multi-fire deferred multi
 * (a reference is taken: deferred_stage_from_multi()).  -EINVAL also when
 * multi is not multi-fire. */
DEFERRED_EXPORT int deferred_async_iter_open_multi(deferred_async_t *co,
                                                   deferred_async_iter_t *it,
                                                   deferred_t *multi);

/* Stop iterating: a stream still running is cancelled, an item not taken
 * is released.  Idempotent; NULL, a zeroed iterator and a closed one are
 * no-ops. */
DEFERRED_EXPORT void deferred_async_iter_close(deferred_async_iter_t *it);

/*
 * The step of DEFERRED_ASYNC_FOR(): 0 with *item set to the next item, or
 * 0 with it->done_ set when the stream ended (its end value released);
 * 1 when the body must suspend (it resumes at line and asks again); -1
 * when the coroutine must unwind (the stream failed: its failure, with a
 * frame "async-for at FILE:LINE", is the outcome; or the coroutine is
 * dropped).  -EINVAL for a NULL argument.  Resumes the producers (their
 * items may arrive) before it returns.
 */
DEFERRED_EXPORT int deferred_async_next(deferred_async_t *co, deferred_async_iter_t *it,
                                        deferred_value_t *item, const char *file, int line);

/*
 * A stage (deferred/process.h) that is the coroutine of frame (made by
 * deferred_async_new(), not started; taken, also on error): it is started
 * when the process starts, reads the process's items with
 * DEFERRED_ASYNC_FOR() over deferred_async_input(), one item at a time
 * (pull: the producers are paused until it asks for the next).  Added
 * last it is the consumer, and what it returns is the process's result;
 * added before other stages it is a processor: it sends items on with
 * deferred_async_emit(), and what it returns is the outcome the stages
 * after it are finished with.  NULL with errno EINVAL (NULL, or a frame
 * already started) or ENOMEM.
 */
DEFERRED_EXPORT deferred_stage_t *deferred_async_consumer(void *frame);

/* Send item (taken) downstream from a stage coroutine (a processor): as
 * deferred_stage_emit() (0, or -ECANCELED when the stream was cancelled or
 * failed: stop emitting).  -EINVAL (item released) for NULL, a coroutine
 * that is no stage, or one that ended.  The stages downstream may run
 * before it returns; when they pause, the producers upstream pause and
 * the coroutine's next DEFERRED_ASYNC_FOR() step waits. */
DEFERRED_EXPORT int deferred_async_emit(deferred_async_t *co, deferred_value_t item);

/* The input of a consumer coroutine (for DEFERRED_ASYNC_FOR()), or NULL
 * for a coroutine that is no consumer, and for NULL. */
DEFERRED_EXPORT deferred_async_iter_t *deferred_async_input(deferred_async_t *co);

#ifdef __cplusplus
}
#endif

#endif /* DEFERRED_ASYNC_H */
