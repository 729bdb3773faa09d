/*
 * async-private.h: what the two files of the async layer share (async.c:
 * the driver, awaits, cancel, making and starting; async-stream.c:
 * iterating streams and coroutines as process stages).
 */
#ifndef DEFERRED_ASYNC_PRIVATE_H
#define DEFERRED_ASYNC_PRIVATE_H

#include "core/deferred-private.h"
#include "deferred/process.h"
#include "deferred/async.h"

#if defined(__GNUC__)
#define THREAD_LOCAL __thread __attribute__((tls_model("initial-exec")))
#else
#define THREAD_LOCAL _Thread_local
#endif

#define NEST_MAX 32

enum {
    A_STARTED = 1u << 0,
    A_RUNNING = 1u << 1,   /* the body is on the stack */
    A_DONE = 1u << 2,      /* ended: the outcome went to the deferred */
    A_DROPPED = 1u << 3,   /* what it awaited was freed unfired */
    A_QUEUED = 1u << 4,    /* on the run queue */
    A_WAIT_PAIR = 1u << 5, /* waits on st->awaited through its pair */
    A_WAIT_ITER = 1u << 6, /* waits for an item of st->waiting */
    A_CANCEL = 1u << 7,    /* cancelled while running: cancel the next wait */
    A_CONSUMER = 1u << 8   /* a process's consumer, started by its start */
};

struct deferred__async_link;

struct deferred__async {
    struct deferred__holding owned; /* the await pair's argument (holds self):
                                       first member */
    struct deferred__holding hold;  /* holds self until a cancel's target ran */
    deferred_async_fn body;
    void *frame;
    const char *name;
    deferred_t *self;      /* the coroutine's deferred, this block's owner */
    deferred_t *target;    /* what the end fires: self, or after a cancel the
                              deferred self waits on (borrowed) */
    deferred_t *awaited;   /* borrowed, valid while A_WAIT_PAIR */
    deferred_value_t got;  /* what the last await gave, but a value given
                              straight to out (co->resumed_) */
    deferred_value_t *out; /* while waiting on a pair: the await's out when
                              it is in the frame (else NULL), */
    int how;               /* and its how */
    size_t frame_size;
    deferred_value_t outcome;
    struct deferred__async *next_run;
    struct deferred__async_link *iters;   /* open iterators */
    struct deferred__async_link *waiting; /* the iterator waited on */
    deferred_async_iter_t input;          /* a consumer's input */
    deferred_stage_t *stage;              /* a stage coroutine's stage */
    unsigned flags;
    bool ran; /* the pair ran: its dispose comes next */
};

/* A stream a coroutine iterates: the data of the consumer stage that
 * receives its items, shared by that stage and the iterator (refs). */
struct deferred__async_link {
    unsigned refs;
    struct deferred__async *st; /* NULL once detached from the coroutine */
    deferred_stage_t *stage;    /* NULL once the stage is destroyed */
    deferred_async_iter_t *it;
    struct deferred__async_link *next; /* st's open iterators */
    deferred_t *self; /* the coroutine's deferred (a reference): a consumer's
                         until the stream's end hands it to the process, an
                         iterator's while attached */
    deferred_value_t item;
    deferred_value_t outcome;
    bool has, ended, held, waiting, consumer;
};


#define STATE_SIZE ((sizeof(struct deferred__async) + 15) & ~(size_t)15)

/* async.c: the coroutine ended: its outcome goes to its deferred. */
DEFERRED_HIDDEN void deferred__async_finish(struct deferred__async *st);
/* async.c: make the body unwind to its cleanups at its next step. */
DEFERRED_HIDDEN void deferred__async_unwind(deferred_async_t *co);
/* async.c: the state of a frame made and not started, or NULL. */
DEFERRED_HIDDEN struct deferred__async *deferred__async_unstarted(void *frame);
/* async.c: run the body until it waits or ends (queued when nested). */
DEFERRED_HIDDEN void deferred__async_drive(struct deferred__async *st);
/* async.c: the context frame naming the coroutine and the await's line. */
DEFERRED_HIDDEN void deferred__async_add_frame(struct deferred__async *st, deferred_failure_t *f,
                                              const char *what, const char *file, int line);
/* async-stream.c: drop a reference on an iterator's link. */
DEFERRED_HIDDEN void deferred__async_link_unref(struct deferred__async_link *l);
/* async-stream.c: detach an iterator's link from its coroutine. */
DEFERRED_HIDDEN void deferred__async_iter_detach(struct deferred__async_link *l);

#endif /* DEFERRED_ASYNC_PRIVATE_H */
