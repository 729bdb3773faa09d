/*
 * ev-mailbox.c: the mailbox of a loop (ev-mailbox.h), through which
 * other threads hand work to the loop thread: the remote handles (ev.c)
 * and the thread pool's finished jobs (ev-pool.c).
 *
 * One mailbox per loop, found through a registry of every loop's mailbox
 * and shared by reference.  Posting links a message that its owner
 * allocated on the loop thread into a mutex-protected FIFO and wakes the
 * loop with ev_async_send(), so it never allocates; the ev_async callback
 * takes the whole FIFO at once and delivers each message on the loop
 * thread.  What runs once per message (post, expect, done, put) is
 * inline in ev-mailbox.h; here is the rest.
 */
#include <string.h>

#include "ev-mailbox.h"

/* The mailboxes of every loop in the process; loops run on different
 * threads, so the list has its own lock. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static deferred__ev_mailbox_t *registry;

static void mailbox_wake(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    deferred__ev_mailbox_drain(w->data);
}

deferred__ev_mailbox_t *deferred__ev_mailbox_get(struct ev_loop *loop)
{
    deferred__ev_mailbox_t *mb;

    pthread_mutex_lock(&registry_lock);
    for (mb = registry; mb; mb = mb->next_box)
        if (mb->loop == loop)
            break;
    pthread_mutex_unlock(&registry_lock);
    if (mb) {
        mb->refs++;
        return mb;
    }
    mb = deferred_malloc(sizeof *mb);
    if (!mb)
        return NULL;
    memset(mb, 0, sizeof *mb);
    if (pthread_mutex_init(&mb->lock, NULL) != 0) {
        deferred_free(mb);
        return NULL;
    }
    mb->loop = loop;
    mb->refs = 1;
    ev_async_init(&mb->async, mailbox_wake);
    mb->async.data = mb;
    ev_async_start(loop, &mb->async);
    ev_unref(loop); /* the watcher alone does not keep the loop running */
    pthread_mutex_lock(&registry_lock);
    mb->next_box = registry;
    registry = mb;
    pthread_mutex_unlock(&registry_lock);
    return mb;
}

void deferred__ev_mailbox_destroy(deferred__ev_mailbox_t *mb)
{
    deferred__ev_mailbox_t **pp;

    pthread_mutex_lock(&registry_lock);
    for (pp = &registry; *pp; pp = &(*pp)->next_box)
        if (*pp == mb) {
            *pp = mb->next_box;
            break;
        }
    pthread_mutex_unlock(&registry_lock);
    /* pending is 0 (each expected message holds a reference): undo the
     * ev_unref before stopping, as ev.pod asks. */
    ev_ref(mb->loop);
    ev_async_stop(mb->loop, &mb->async);
    pthread_mutex_destroy(&mb->lock);
    deferred_free(mb);
}

void deferred__ev_mailbox_drain(deferred__ev_mailbox_t *mb)
{
    deferred__ev_msg_t *m, *next;

    mb->refs++; /* a delivery may drop the last other reference */
    for (;;) {
        pthread_mutex_lock(&mb->lock);
        m = mb->head;
        mb->head = mb->tail = NULL;
        pthread_mutex_unlock(&mb->lock);
        if (!m)
            break;
        for (; m; m = next) {
            next = m->next;
            m->deliver(m); /* calls deferred__ev_mailbox_done() */
        }
    }
    deferred__ev_mailbox_put(mb);
}
