/*
 * sqlite-private.h: what the two halves of libdeferred-sqlite share: the
 * query (struct sq), its batches (struct sqb) and the worker thread of a
 * connection (struct sqw).
 *
 * sqlite.c is the loop thread's half: the stage, the emission of rows,
 * pause, resume, cancel, the conveniences and the close.  sqlite-worker.c
 * is the worker's half: the registry of workers (one per sqlite3 handle),
 * the thread, and what a job does (prepare, bind, step, copy the rows
 * into the batch's buffer).
 *
 * Ownership, the rule that makes it work:
 *  - A batch belongs to one side at a time.  It goes to the worker when
 *    the loop thread queues it (under the worker's lock) and comes back
 *    through the loop's mailbox (deferred_loop_post()); the side that holds it
 *    alone reads and writes it.
 *  - The statement (stmt, prepared, row_pending, names_sent, step) is the
 *    worker's while one of the query's batches is with it.  The loop
 *    thread touches it only while holding the worker's lock with the
 *    worker idle (current NULL): the worker takes that lock before it
 *    starts any job, and only the loop thread queues jobs.
 *  - The worker never allocates through deferred_malloc() (the library's
 *    allocator belongs to the loop thread): every block it writes was
 *    allocated on the loop thread, and a row that does not fit its batch
 *    is left on the statement (row_pending) until the loop thread gave
 *    the batch more room.
 *  - The query itself is freed on the loop thread, once its stage is gone
 *    and no batch of it is with the worker.
 */
#ifndef DEFERRED_SQLITE_PRIVATE_H
#define DEFERRED_SQLITE_PRIVATE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "deferred/sqlite.h"
#include "loop/loop-pump.h"

#if defined(__GNUC__)
#define SQ_HIDDEN __attribute__((visibility("hidden")))
#else
#define SQ_HIDDEN
#endif

/* Room for a message SQLite or the worker formatted (longer ones are cut). */
#define SQ_MSG_MAX 512

/* A batch's buffer starts at this size and may grow to SQ_BUF_MAX by
 * doubling; a single row larger than that gets a buffer of its size. */
#define SQ_BUF_START 16384u
#define SQ_BUF_MAX (1024u * 1024u)

/* How a batch ended the statement (final batches), or SQ_MORE. */
enum sq_end {
    SQ_MORE,      /* rows remain */
    SQ_DONE,      /* SQLITE_DONE: the statement ran to its end */
    SQ_SQLFAIL,   /* an SQLite error: code, msg */
    SQ_LIBFAIL,   /* a library error (EINVAL): code, msg */
    SQ_CANCELLED, /* finalized because the query was cancelled */
    SQ_SPENT      /* the statement had ended before this batch (the one
                     before it was final): nothing in it */
};

struct sq;

/* One batch of rows, stepped by the worker into buf, emitted on the loop
 * thread.  Two per query: one being emitted, one being stepped. */
struct sqb {
    deferred_loop_msg_t msg; /* first: the mailbox's message */
    struct sq *q;
    struct sqb *job_next;   /* the worker's queue */
    struct sqb *ready_next; /* the query's ready list (loop thread) */
    unsigned char *buf;     /* names (has_names), then rows, encoded */
    size_t cap;             /* buf's size */
    size_t len;             /* bytes written */
    size_t pos;             /* bytes read by the loop thread */
    size_t need;            /* the next item needs a buffer this large */
    unsigned limit;         /* rows to step at most (the query's batch) */
    unsigned nrows;         /* rows in buf */
    unsigned emitted;       /* rows emitted from it */
    int ncols;              /* the statement's columns (has_names) */
    bool has_names;         /* buf starts with the column names */
    bool empty;             /* the SQL held no statement */
    bool final;             /* the statement is finalized */
    bool queued;            /* in the worker's queue (under its lock) */
    bool step_error;        /* SQ_SQLFAIL of a step, not of the preparation */
    int state;              /* loop thread: free, with the worker, ready */
    size_t grow_to;         /* loop thread: the size to give buf next */
    enum sq_end end;
    int code;               /* SQ_SQLFAIL: extended code; SQ_LIBFAIL: errno */
    int64_t changes, rowid; /* SQ_DONE of an exec */
    char text[SQ_MSG_MAX];  /* SQ_SQLFAIL, SQ_LIBFAIL: the message */
};

/* Someone waiting for a handle's worker to be gone (a close): run(self)
 * once the last query on the handle was freed, on that query's (the loop)
 * thread. */
struct sqw_waiter {
    struct sqw_waiter *next;
    void (*run)(struct sqw_waiter *self);
};

/* The worker of one sqlite3 handle. */
struct sqw {
    sqlite3 *db;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct sqb *head, *tail;  /* jobs, under lock */
    struct sq *current;       /* the job's query, under lock */
    bool stop;                /* under lock: exit once the queue is empty */
    unsigned long refs;       /* under the registry's lock */
    struct sqw_waiter *waiters; /* under the registry's lock */
    struct sqw *next;         /* the registry */
};

struct sq {
    /* Fixed when made (read by both threads). */
    sqlite3 *db;
    struct sqw *w;
    deferred_loop_t *dl; /* a reference: the batches come back through its mailbox */
    char *sql;
    deferred_param_t *params; /* copies, text and blobs included */
    size_t nparams;
    bool exec;
    const char *file;         /* the user's call that made the query */
    int line;
    int cancel;               /* atomic: stop at the next step */

    /* The worker's (see the ownership rule above). */
    sqlite3_stmt *stmt;
    bool prepared;
    int wcols;                /* the statement's columns */
    bool names_sent;
    bool row_pending;         /* the statement is on a row not yet copied */

    /* The loop thread's. */
    deferred_stage_t *self;
    deferred_row_shape_t *shape;
    deferred_row_shape_t *exec_shape;
    deferred_failure_t *failure; /* a parameter error, for the first run */
    int ncols;
    unsigned batch;
    uint64_t row;             /* rows emitted */
    struct sqb b[2];
    struct sqb *ready, *ready_tail; /* batches back, to emit in order */
    unsigned at_worker;       /* batches with the worker (0 to 2) */
    bool streaming;           /* a batch came back with more to come: both
                                 batches may be with the worker */
    bool final;               /* the statement is finalized */
    bool ended;               /* told its stage how it ended */
    bool step_failed;         /* the step to row + 1 failed */
    bool halted;              /* no more steps (cancel, destroy, error) */
    bool stage_gone;          /* the stage was destroyed */
    deferred__pump_t pump; /* runs sq_run(); releases the stage's part */
};

/* The worker of db with a new reference, made (thread started) when db has
 * none; NULL with errno ENOMEM or EAGAIN.  Loop thread. */
SQ_HIDDEN struct sqw *deferred__sqw_get(sqlite3 *db);
/* Drop a reference; the last one stops and joins the thread (which is
 * idle then) and frees w. */
SQ_HIDDEN void deferred__sqw_put(struct sqw *w);
/* Whether db has a worker now (a query alive on it).  Any thread. */
SQ_HIDDEN bool deferred__sqw_exists(sqlite3 *db);
/* Run w->run(w) once db has no worker: now (false returned) when it has
 * none, else when its last query is freed (true: w is registered).  Loop
 * thread. */
SQ_HIDDEN bool deferred__sqw_wait(sqlite3 *db, struct sqw_waiter *w);
/* Take w off the handle's list if it is there.  Loop thread. */
SQ_HIDDEN void deferred__sqw_unwait(sqlite3 *db, struct sqw_waiter *w);
/* Queue b for its query (under the worker's lock). */
SQ_HIDDEN void deferred__sqw_queue(struct sqw *w, struct sqb *b);
/* Finalize q's statement now (loop thread, under w->lock, worker idle). */
SQ_HIDDEN void deferred__sq_finalize_locked(struct sq *q);

#endif /* DEFERRED_SQLITE_PRIVATE_H */
