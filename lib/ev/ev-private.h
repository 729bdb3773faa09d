/*
 * ev-private.h: what every file of libdeferred-ev shares and users never
 * see.  The per-loop mailbox through which other threads hand work to the
 * loop thread, used by the remote handles (ev.c) and the thread pool
 * (ev-pool.c), is ev-mailbox.h and ev-mailbox.c; the loop-driven
 * producers' pump, which the database libraries share too, is the
 * header-only ev-pump.h.
 *
 * Every name here is internal (deferred__ev_*) and hidden: only the
 * functions marked DEFERRED_EXPORT leave libdeferred-ev.
 */
#ifndef DEFERRED_EV_PRIVATE_H
#define DEFERRED_EV_PRIVATE_H

#include <stddef.h>

#include <ev.h>

#include "deferred.h"
#include "deferred/ev.h"

#if defined(__GNUC__)
#define DEFERRED_EV_HIDDEN __attribute__((visibility("hidden")))
#else
#define DEFERRED_EV_HIDDEN
#endif

/* A constructor's answer to an error found before it returns
 * (deferred/common.h): NULL with errno set to code.  The message is
 * formatted for nobody (kept so each call site says what it checks). */
DEFERRED_EV_HIDDEN deferred_t *deferred__ev_failed(int code, const char *fmt, ...)
    DEFERRED_PRINTF(2, 3);

/*
 * What deferred_dump() shows of a loop (ev-dump.c).  In debug mode each
 * timer, timeout, fd wait, remote handle and pool job is an item of its
 * loop's binding, which is a holder of the dump registry; each item
 * describes itself.  The item is embedded in the struct it describes and
 * changed on the loop thread only.
 */
struct deferred__ev_binding;
typedef struct deferred__ev_item {
    struct deferred__ev_item *prev, *next;
    struct deferred__ev_binding *b; /* NULL: not tracked */
    void (*describe)(deferred_dump_t *w, struct deferred__ev_item *it);
} deferred__ev_item_t;

/* Track it in loop's binding (made on first use) when debug mode is on;
 * else, or when the binding cannot be made, it->b is NULL.  Loop thread.
 * Inline, so that with debug mode off an item costs a store and a test. */
DEFERRED_EV_HIDDEN void deferred__ev_track_on(struct ev_loop *loop, deferred__ev_item_t *it,
                                              void (*describe)(deferred_dump_t *w,
                                                               deferred__ev_item_t *it));
static inline void deferred__ev_track(struct ev_loop *loop, deferred__ev_item_t *it,
                                      void (*describe)(deferred_dump_t *w,
                                                       deferred__ev_item_t *it))
{
    it->b = NULL;
    if (deferred_get_debug())
        deferred__ev_track_on(loop, it, describe);
}

/* Stop tracking it (nothing if it was not tracked).  Loop thread. */
DEFERRED_EV_HIDDEN void deferred__ev_untrack_on(deferred__ev_item_t *it);
static inline void deferred__ev_untrack(deferred__ev_item_t *it)
{
    if (it->b)
        deferred__ev_untrack_on(it);
}

/* The struct that contains item it as its member m. */
#define DEFERRED_EV_ITEM_OF(it, type, m) ((type *)(void *)((char *)(it) - offsetof(type, m)))

#endif /* DEFERRED_EV_PRIVATE_H */
