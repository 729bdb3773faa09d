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

#endif /* DEFERRED_EV_PRIVATE_H */
