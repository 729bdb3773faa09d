/*
 * deferred.h: the umbrella header of libdeferred.
 *
 * Includes every layer that needs nothing beyond libc: values and failures,
 * the deferred core, multi-fire deferreds, the combinators (gather, list,
 * race, merge) and the lock, semaphore and queue, processes, the row value
 * that the database producers emit, async functions (coroutines), the
 * dump of what is pending (debug mode), the loop layer and the clock.
 * Each layer's header can also be included alone.
 * Optional parts (the libev, libuv and GLib adapters, the database
 * producers) have headers of their own and are not included here.
 */
#ifndef DEFERRED_H
#define DEFERRED_H

#include "deferred/common.h"
#include "deferred/value.h"
#include "deferred/failure.h"
#include "deferred/core.h"
#include "deferred/multi.h"
#include "deferred/combinators.h"
#include "deferred/process.h"
#include "deferred/row.h"
#include "deferred/async.h"
#include "deferred/dump.h"
#include "deferred/loop.h"
#include "deferred/clock.h"

#endif /* DEFERRED_H */
