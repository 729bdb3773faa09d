/*
 * ev-private.h: what the files of libdeferred-ev share and users never
 * see: the adapter's state for one struct ev_loop (ev.c), which the dump
 * on a signal (ev-signal.c) keeps its watcher in.
 *
 * Every name here is internal and hidden: only the functions marked
 * DEFERRED_EXPORT leave libdeferred-ev.
 */
#ifndef DEFERRED_EV_PRIVATE_H
#define DEFERRED_EV_PRIVATE_H

#include <pthread.h>
#include <stddef.h>

#include <ev.h>

#include "deferred.h"
#include "deferred/ev.h"

struct deferred__ev_adapter {
    struct ev_loop *loop;
    deferred_loop_t *dl;                /* borrowed: dl owns this */
    struct deferred__ev_adapter *next;  /* the registry's list */
    /* The dump on a signal (ev-signal.c); while on, it holds a reference
     * on dl. */
    ev_signal sig;
    bool sig_on;
    deferred_dump_format_t format;
    deferred_dump_sink_fn sink;
    void *sink_arg;
};

#endif /* DEFERRED_EV_PRIVATE_H */
