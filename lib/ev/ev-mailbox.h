/*
 * ev-mailbox.h: the mailbox of a loop, through which other threads hand
 * work to the loop thread: the remote handles (ev.c) and the thread
 * pool's finished jobs (ev-pool.c).  The registry, the making, the freeing
 * and the drain are in ev-mailbox.c.
 *
 * Every name here is internal (deferred__ev_*) and hidden.
 */
#ifndef DEFERRED_EV_MAILBOX_H
#define DEFERRED_EV_MAILBOX_H

#include <pthread.h>

#include "ev-private.h"

/*
 * A message for the loop thread.  It is allocated by its owner (a remote
 * handle, a pool job) on the loop thread, so posting never allocates;
 * deliver runs on the loop thread and disposes of the message.
 */
typedef struct deferred__ev_msg {
    struct deferred__ev_msg *next;
    void (*deliver)(struct deferred__ev_msg *m);
} deferred__ev_msg_t;

/*
 * The mailbox of one loop: one ev_async and a mutex-protected FIFO of
 * messages.  There is at most one per loop, found through a registry.
 * refs and pending are touched on the loop thread only; the queue only
 * under lock.
 *
 * The ev_async is started for the mailbox's whole life but does not keep
 * the loop alive by itself (ev_unref): pending counts the messages the
 * loop thread still expects (remote handles not yet delivered, pool jobs
 * not yet finished) and while it is above zero the mailbox holds one
 * ev_ref on the loop, so ev_run() waits for them and returns once nothing
 * is left.
 */
typedef struct deferred__ev_mailbox {
    struct ev_loop *loop;
    ev_async async;
    pthread_mutex_t lock;
    deferred__ev_msg_t *head, *tail; /* under lock */
    unsigned long refs;              /* loop thread */
    unsigned long pending;           /* loop thread */
    struct deferred__ev_mailbox *next_box; /* the registry's list */
} deferred__ev_mailbox_t;

/* The mailbox of loop with a new reference (made when the loop has none);
 * NULL on allocation failure.  Loop thread. */
DEFERRED_EV_HIDDEN deferred__ev_mailbox_t *deferred__ev_mailbox_get(struct ev_loop *loop);
/* The last reference is gone: stop the ev_async and free mb. */
DEFERRED_EV_HIDDEN void deferred__ev_mailbox_destroy(deferred__ev_mailbox_t *mb);

/* The four below run once per message (each remote, each job) and are
 * inline: out of line in ev-mailbox.c they cost the cross-thread
 * benchmark 1.3% more instructions per firing (make bench-icount: 1420
 * against 1402). */

/* Drop a reference; the last one stops the ev_async and frees it. */
static inline void deferred__ev_mailbox_put(deferred__ev_mailbox_t *mb)
{
    if (--mb->refs == 0)
        deferred__ev_mailbox_destroy(mb);
}

/* The loop thread expects one more message: takes a reference and keeps
 * the loop running until deferred__ev_mailbox_done(). */
static inline void deferred__ev_mailbox_expect(deferred__ev_mailbox_t *mb)
{
    mb->refs++;
    if (mb->pending++ == 0)
        ev_ref(mb->loop);
}

static inline void deferred__ev_mailbox_done(deferred__ev_mailbox_t *mb)
{
    if (--mb->pending == 0)
        ev_unref(mb->loop);
    deferred__ev_mailbox_put(mb);
}

/* Any thread: queue m and wake the loop.  Never allocates. */
static inline void deferred__ev_mailbox_post(deferred__ev_mailbox_t *mb,
                                             deferred__ev_msg_t *m)
{
    bool was_empty;

    m->next = NULL;
    pthread_mutex_lock(&mb->lock);
    was_empty = mb->head == NULL;
    if (was_empty)
        mb->head = m;
    else
        mb->tail->next = m;
    mb->tail = m;
    /* Only the post that made the queue non-empty wakes the loop: the
     * drain takes the whole queue, so later posts ride on that wake-up.
     * It is sent under the lock: once the lock is released the loop
     * thread may deliver m and free the mailbox. */
    if (was_empty)
        ev_async_send(mb->loop, &mb->async);
    pthread_mutex_unlock(&mb->lock);
}

/* Loop thread: deliver every queued message now (the ev_async's callback;
 * the pool's shutdown calls it too). */
DEFERRED_EV_HIDDEN void deferred__ev_mailbox_drain(deferred__ev_mailbox_t *mb);

#endif /* DEFERRED_EV_MAILBOX_H */
