/*
 * loop-private.h: what the library's loop layer (lib/loop/) shares and
 * users never see: the loop object's fields.
 */
#ifndef DEFERRED_LOOP_PRIVATE_H
#define DEFERRED_LOOP_PRIVATE_H

#include "deferred.h"
#include "deferred/loop.h"

struct deferred_loop {
    const deferred_loop_ops_t *ops;
    void *impl;
    unsigned long refs;
};

#endif /* DEFERRED_LOOP_PRIVATE_H */
