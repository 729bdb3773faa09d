/*
 * deferred.h: the umbrella header of libdeferred.
 *
 * Includes every layer that needs nothing beyond libc: values and failures,
 * the deferred core, multi-fire deferreds, processes, the row value
 * that the database producers emit, async functions (coroutines) and the
 * dump of what is pending (debug mode).  Each layer's header can also be
 * included alone.
 * Optional parts (the libev binding, the database producers) have headers of
 * their own and are not included here.
 */
#ifndef DEFERRED_H
#define DEFERRED_H

#include "deferred/common.h"
#include "deferred/value.h"
#include "deferred/failure.h"
#include "deferred/core.h"
#include "deferred/multi.h"
#include "deferred/process.h"
#include "deferred/row.h"
#include "deferred/async.h"
#include "deferred/dump.h"
#include "deferred/loop.h"
#include "deferred/clock.h"

#endif /* DEFERRED_H */
