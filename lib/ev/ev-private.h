/*
 * ev-private.h: what the files of libdeferred-ev share and users never
 * see: the per-loop mailbox through which other threads hand work to the
 * loop thread (ev.c), used by the remote handles (ev.c) and the thread
 * pool (ev-pool.c).
 *
 * Every name here is internal (deferred__ev_*) and hidden: only the
 * functions marked DEFERRED_EXPORT leave libdeferred-ev.
 */
#ifndef DEFERRED_EV_PRIVATE_H
#define DEFERRED_EV_PRIVATE_H

#include <pthread.h>
#include <ev.h>

#include "deferred.h"
#include "deferred/ev.h"

#if defined(__GNUC__)
#define DEFERRED_EV_HIDDEN __attribute__((visibility("hidden")))
#else
#define DEFERRED_EV_HIDDEN
#endif

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
/* Drop a reference; the last one stops the ev_async and frees it. */
DEFERRED_EV_HIDDEN void deferred__ev_mailbox_put(deferred__ev_mailbox_t *mb);
/* The loop thread expects one more message: takes a reference and keeps
 * the loop running until deferred__ev_mailbox_done(). */
DEFERRED_EV_HIDDEN void deferred__ev_mailbox_expect(deferred__ev_mailbox_t *mb);
DEFERRED_EV_HIDDEN void deferred__ev_mailbox_done(deferred__ev_mailbox_t *mb);
/* Any thread: queue m and wake the loop.  Never allocates. */
DEFERRED_EV_HIDDEN void deferred__ev_mailbox_post(deferred__ev_mailbox_t *mb,
                                                  deferred__ev_msg_t *m);
/* Loop thread: deliver every queued message now. */
DEFERRED_EV_HIDDEN void deferred__ev_mailbox_drain(deferred__ev_mailbox_t *mb);

/* A constructor's answer to an error found before it returns
 * (deferred/common.h): NULL with errno set to code.  The message is
 * formatted for nobody (kept so each call site says what it checks). */
DEFERRED_EV_HIDDEN deferred_t *deferred__ev_failed(int code, const char *fmt, ...)
    DEFERRED_PRINTF(2, 3);

#endif /* DEFERRED_EV_PRIVATE_H */
