/*
 * loop-private.h: what the library's loop layer (lib/loop/) shares and
 * users never see: the loop object's fields, the watchers the layer
 * embeds in its own structs, the mailbox and the dump items.
 *
 * Every watcher goes through this layer (never through the adapter's
 * table directly), so that the loop counts what keeps it alive
 * (deferred_loop_alive()) and a watcher knows whether it is running and
 * when it falls due, whatever the adapter.
 */
#ifndef DEFERRED_LOOP_PRIVATE_H
#define DEFERRED_LOOP_PRIVATE_H

#include <pthread.h>
#include <stddef.h>

#include "deferred.h"
#include "deferred/loop.h"

#if defined(__GNUC__)
#define DEFERRED_LOOP_HIDDEN __attribute__((visibility("hidden")))
#else
#define DEFERRED_LOOP_HIDDEN
#endif

/* A dump item of a loop (debug mode): embedded in the struct it
 * describes, linked into its loop's list while tracked. */
typedef struct deferred__loop_item {
    struct deferred__loop_item *prev, *next;
    deferred_loop_t *loop; /* NULL: not tracked */
    void (*describe)(deferred_dump_t *w, struct deferred__loop_item *it);
} deferred__loop_item_t;

struct deferred_loop {
    const deferred_loop_ops_t *ops;
    void *impl;
    unsigned long refs;
    size_t alive; /* running timers, fd watchers with events, held wakeup */

    /* The mailbox (deferred_loop_expect(), _post(), _done()): the wakeup
     * is made with the loop; pending counts the messages still expected,
     * and holds the wakeup while above zero.  inbox is a lock-free stack
     * (newest first) that posters push onto and the drain takes whole
     * (atomics only).  posting counts the posters that may still touch
     * the loop after their push (the one that found inbox empty wakes the
     * loop after pushing): the loop is not freed while it is above zero. */
    void *wake;
    deferred_loop_msg_t *inbox;
    unsigned long posting;
    unsigned long pending;

    /* The remote handles' slab (loop-time.c): the chunk handles are cut
     * from, or NULL; loop thread only. */
    struct deferred__remote_chunk *rchunk;

    /* The dump (debug mode): the tracked items and the registry holder,
     * added with the first item. */
    deferred__loop_item_t *first, *last;
    size_t items;
    bool holder_on;
    deferred_dump_holder_t holder;
};

/* ---- watchers ------------------------------------------------------------ */

struct deferred_loop_timer {
    deferred_loop_t *loop; /* a reference */
    void *h;               /* the adapter's */
    deferred_loop_fn cb;
    void *arg;
    double due;            /* loop time it falls due, while active */
    bool active;
};

struct deferred_loop_io {
    deferred_loop_t *loop; /* a reference */
    void *h;
    deferred_loop_io_fn cb;
    void *arg;
    int fd;
    int events;
};

/* Set up a watcher embedded in a library struct (a loop reference, the
 * adapter's handle), undone by its fini (deferred_loop_timer_free() and
 * _io_free() are for the allocated ones only): 0 or a negative errno
 * (then nothing to undo). */
DEFERRED_LOOP_HIDDEN int deferred__timer_init(struct deferred_loop_timer *t,
                                              deferred_loop_t *loop,
                                              deferred_loop_fn cb, void *arg);
DEFERRED_LOOP_HIDDEN void deferred__timer_fini(struct deferred_loop_timer *t);
DEFERRED_LOOP_HIDDEN int deferred__io_init(struct deferred_loop_io *io,
                                           deferred_loop_t *loop, int fd,
                                           deferred_loop_io_fn cb, void *arg);
DEFERRED_LOOP_HIDDEN void deferred__io_fini(struct deferred_loop_io *io);

/* Loop thread: deliver every message queued in loop's mailbox now (the
 * wakeup's callback; the pool's shutdown calls it too). */
DEFERRED_LOOP_HIDDEN void deferred__loop_drain(deferred_loop_t *loop);

/* deferred_loop_expect(), _done() and _post() on a valid loop and
 * message, without the checks, inline for the remotes' hot path. */
static inline void deferred__loop_expect(deferred_loop_t *l)
{
    l->refs++;
    if (l->pending++ == 0) {
        l->alive++;
        l->ops->wakeup_hold(l->wake, true);
    }
}

static inline void deferred__loop_done(deferred_loop_t *l)
{
    if (--l->pending == 0) {
        l->alive--;
        l->ops->wakeup_hold(l->wake, false);
    }
    if (l->refs > 1)
        l->refs--;
    else
        deferred_loop_unref(l); /* the last: frees l */
}

/*
 * Push m onto the mailbox's stack; the post that makes it non-empty wakes
 * the loop (the drain takes the stack whole), after its push: by then the
 * loop thread may have delivered m and dropped the loop, so that poster
 * counts itself in posting first, which keeps the loop from being freed
 * (deferred_loop_unref() waits) until it is done.  A poster that finds
 * the stack non-empty touches nothing after its push.
 */
static inline void deferred__loop_post(deferred_loop_t *l, deferred_loop_msg_t *m)
{
    deferred_loop_msg_t *old = __atomic_load_n(&l->inbox, __ATOMIC_RELAXED);
    bool counted = false;

    for (;;) {
        if (!old && !counted) {
            __atomic_fetch_add(&l->posting, 1, __ATOMIC_RELAXED);
            counted = true;
        }
        m->next = old;
        if (__atomic_compare_exchange_n(&l->inbox, &old, m, true, __ATOMIC_RELEASE,
                                        __ATOMIC_RELAXED))
            break;
    }
    if (!old)
        l->ops->wakeup_send(l->wake);
    if (counted)
        __atomic_fetch_sub(&l->posting, 1, __ATOMIC_RELEASE);
}

/* A delay is valid when it is finite and not negative. */
DEFERRED_LOOP_HIDDEN bool deferred__bad_delay(double seconds);

/* ---- the dump -------------------------------------------------------------- */

/* Track it in loop's list when debug mode is on (else it->loop is NULL).
 * Inline, so that with debug mode off an item costs a store and a test. */
DEFERRED_LOOP_HIDDEN void deferred__loop_track_on(deferred_loop_t *loop,
                                                  deferred__loop_item_t *it,
                                                  void (*describe)(deferred_dump_t *w,
                                                                   deferred__loop_item_t *it));
static inline void deferred__loop_track(deferred_loop_t *loop, deferred__loop_item_t *it,
                                        void (*describe)(deferred_dump_t *w,
                                                         deferred__loop_item_t *it))
{
    it->loop = NULL;
    if (deferred_get_debug())
        deferred__loop_track_on(loop, it, describe);
}

DEFERRED_LOOP_HIDDEN void deferred__loop_untrack_on(deferred__loop_item_t *it);
static inline void deferred__loop_untrack(deferred__loop_item_t *it)
{
    if (it->loop)
        deferred__loop_untrack_on(it);
}

/* The struct that contains item it as its member m. */
#define DEFERRED_LOOP_ITEM_OF(it, type, m) \
    ((type *)(void *)((char *)(it) - offsetof(type, m)))

#endif /* DEFERRED_LOOP_PRIVATE_H */
