/*
 * pg-private.h: what the files of libdeferred-pg share (lib/db/pg.c says
 * which file owns what).  Nothing here leaves the library: the functions
 * are hidden, the structs are opaque to users (deferred_pg_t is declared
 * in deferred/pg.h only).
 */
#ifndef DEFERRED_PG_PRIVATE_H
#define DEFERRED_PG_PRIVATE_H

#include "deferred/pg.h"
#include "loop/loop-pump.h"

#if defined(__GNUC__)
#define PG_HIDDEN __attribute__((visibility("hidden")))
#else
#define PG_HIDDEN
#endif

struct pgq;

/* libpq before 14 has no pipeline mode: deferred_pg_set_pipeline() says
 * -EPROTO, and what the pipeline code names is never reached. */
#ifndef LIBPQ_HAS_PIPELINING
#define PG_NO_PIPELINING 1
#define PGRES_PIPELINE_SYNC ((ExecStatusType)10)
#define PGRES_PIPELINE_ABORTED ((ExecStatusType)11)
static inline int PQpipelineSync(PGconn *conn)
{
    (void)conn;
    return 0;
}
static inline int PQsendFlushRequest(PGconn *conn)
{
    (void)conn;
    return 0;
}
#endif

/* A connection being made: the deferred's cancel argument, so it outlives
 * the connection when the connecting fails or is cancelled. */
struct pgconnect {
    deferred_pg_t *c; /* NULL once handed out or abandoned */
    deferred_t *d;    /* borrowed: this block lives as long as d */
    const char *file; /* the user's call that connects */
    int line;
    int events;       /* what PQconnectPoll() waits for: DEFERRED_LOOP_READ or _WRITE */
};

struct deferred_pg {
    uint32_t refs;           /* the user's, each query's, each entry's */
    deferred_loop_t *loop;   /* a reference */
    PGconn *conn;            /* NULL once closed or lost */
    deferred_loop_io_t *io;  /* made, set and freed by pg_update_io() only */
    int io_fd;               /* what io is set to; io_events 0: stopped */
    int io_events;
    struct pgq *head, *tail; /* the queue, in the order made; the sent ones first */
    struct pgq *unsent;      /* the first query of the queue not sent, or NULL */
    unsigned nsent;          /* queries on the wire (SENT, DRAINING) */
    struct pgconnect *connecting;
    /* Pipeline mode (deferred_pg_set_pipeline()): queries are sent while
     * earlier ones run, up to PG_PIPELINE_MAX on the wire.  Off, a query
     * is sent once the one before it ended. */
    bool pipeline;
    unsigned batch;          /* deferred_pg_batch_begin() not yet ended */
    bool batch_queued;       /* a query was queued since the batch began */
    unsigned sync_due;       /* sync results to read before the head's results */
    char abort_by[480];      /* what failed in the current batch ("" if nothing) */
    char where[160];         /* "host:port/dbname", for messages */
};

/* Queries on the wire at most in pipeline mode: bounds what libpq and the
 * server buffer for queries nobody reads yet; the rest wait queued. */
#define PG_PIPELINE_MAX 512

/* Where a query is.  Only pg-query.c's transitions change it:
 *
 *   HELD   --pgq_enqueue()--> QUEUED --pgq_send()--> SENT
 *   QUEUED, SENT --pgq_dequeue()--> HELD    (to be ended or failed)
 *   SENT   --pgq_abandon()--> DRAINING --pgq_dequeue()--> ENDED
 *   HELD, QUEUED --pgq_abandon()--> ENDED
 *   HELD   --pgq_end()--> ENDED or FAILED
 *
 * HELD is off the queue and not ended: just made, or with a failure that
 * waits for its stage to start.  DRAINING counts as ended: its stage is
 * told nothing more, but for one cancelled by deferred_pg_cancel_all(),
 * which keeps its failure until the kick told the stage (q->told; one
 * whose stage had not started is HELD with it once drained).  The queue
 * is the sent queries (SENT, DRAINING; in pipeline mode several, else the
 * head alone) then the unsent ones (QUEUED) from c->unsent on; results
 * are read for the head only.  The predicates below compare: keep the
 * order. */
enum pgq_state {
    PGQ_HELD,
    PGQ_QUEUED,   /* on the queue, not sent */
    PGQ_SENT,     /* on the wire: its results are read for it at the head */
    PGQ_DRAINING, /* abandoned on the wire: its results are read and dropped */
    PGQ_ENDED,    /* its stage was told how it ended, or it was abandoned */
    PGQ_FAILED,   /* its stage was told a failure of its own */
};

/* What the stage asked for, set by its resume and pause (pg-stage.c)
 * apart from where the query is: a query waiting in the queue is resumed
 * and paused too.  UNSTARTED and PAUSED differ: a failure is delivered to
 * a paused stage at once, to an unstarted one at its first resume.  A
 * pause before the first resume leaves it UNSTARTED. */
enum pgq_demand {
    PGQ_UNSTARTED,
    PGQ_RUNNING,
    PGQ_PAUSED,
};

struct pgq {
    uint32_t refs;           /* the stage's, the queue's, each entry's */
    deferred_pg_t *c;        /* a reference */
    struct pgq *next, *prev;
    deferred_stage_t *self;  /* NULL once the stage is gone */
    char *sql;
    const char *file;        /* the user's call that made the query */
    int line;
    int nparams;
    const char **values;
    int *lengths;
    int *formats;
    deferred_row_shape_t *shape;
    int ncols;
    deferred_row_type_t *types;
    deferred_failure_t *failure; /* to deliver at the end */
    uint64_t row;            /* rows emitted */
    unsigned syncs;          /* pipeline syncs that follow it on the wire */
    bool single;             /* single-row mode set for it */
    bool told;               /* DRAINING with its stage told (cancel all) */
    bool doomed;             /* on the wire when cancel all ran */
    enum pgq_state state;
    enum pgq_demand demand;
    deferred__pump_t pump; /* the kick: see pg_kick() */
};

static inline bool pgq_is_queued(const struct pgq *q)
{
    return q->state >= PGQ_QUEUED && q->state <= PGQ_DRAINING;
}

static inline bool pgq_is_sent(const struct pgq *q)
{
    return q->state == PGQ_SENT || q->state == PGQ_DRAINING;
}

static inline bool pgq_is_ended(const struct pgq *q)
{
    return q->state >= PGQ_DRAINING;
}

/* ---- the kick and the re-entrancy guard ---------------------------------------
 *
 * The kick is the loop layer's pump (lib/loop/loop-pump.h): "avoid
 * finishing before returning".  A query tells its stage
 * nothing from inside resume: it schedules its pump, whose run
 * (pgq_kick_run(), pg-stage.c) delivers what libpq already holds or the
 * failure that waits.  The stage's destroy releases the stage's
 * reference on the query through the pump, so a destroy from inside the
 * kick's run drops it only once the run has returned.  The guard beyond
 * that: every entry (the socket's callback, the kick, the stage's cancel
 * and destroy, deferred_pg_close()) holds a reference on the connection,
 * and a reference on the query across anything that may drop its last one
 * (an emit, taking it off the queue), because a callback into the process
 * may close or drop either; a query is shared by its stage and its
 * connection, so the pump's release drops a reference, not the memory. */

PG_HIDDEN void pgq_kick_run(void *owner);
PG_HIDDEN void pgq_unref(struct pgq *q);

/* The pump's release: the stage's reference on q goes. */
static inline void pgq_pump_release(void *owner)
{
    pgq_unref(owner);
}

/* 0 or -ENOMEM. */
static inline int pg_kick_init(struct pgq *q)
{
    return deferred__pump_init(&q->pump, q->c->loop, pgq_kick_run, pgq_pump_release, q);
}

static inline void pg_kick(struct pgq *q)
{
    deferred__pump_schedule(&q->pump);
}

static inline void pg_kick_stop(struct pgq *q)
{
    deferred__pump_unschedule(&q->pump);
}

static inline void pg_enter(deferred_pg_t *c)
{
    deferred_pg_ref(c);
}

static inline void pg_leave(deferred_pg_t *c)
{
    deferred_pg_unref(c);
}

/* Held across a call out; pgq_leave() may free q. */
static inline void pgq_enter(struct pgq *q)
{
    q->refs++;
}

static inline void pgq_leave(struct pgq *q)
{
    pgq_unref(q);
}

/* ---- pg-failure.c: failures from libpq's results and messages ---------------- */

PG_HIDDEN const char *pg_state_text(const char *state, char *buf, size_t size);
PG_HIDDEN const char *pg_trimmed(const char *msg, char *buf, size_t size);
PG_HIDDEN deferred_failure_t *pgq_failure(struct pgq *q, int code, const char *fmt, ...)
    DEFERRED_PRINTF(3, 4);
PG_HIDDEN deferred_failure_t *pg_result_failure(struct pgq *q, const PGresult *res);
PG_HIDDEN bool pg_message_state(char *msg, char state[6]);

/* ---- pg-io.c: the socket and its watcher ------------------------------------- */

PG_HIDDEN void pg_update_io(deferred_pg_t *c);
PG_HIDDEN void pg_finish(deferred_pg_t *c);
PG_HIDDEN void pg_shut(deferred_pg_t *c, int code, const char *msg);
PG_HIDDEN void pg_lost(deferred_pg_t *c);
PG_HIDDEN void pg_io_cb(deferred_pg_t *c, int revents);
PG_HIDDEN void pg_connect_cb(deferred_pg_t *c, int revents); /* pg.c */

/* ---- pg-query.c: the queue and each query's state ----------------------------- */

PG_HIDDEN void pgq_enqueue(struct pgq *q);
PG_HIDDEN void pgq_dequeue(struct pgq *q);
PG_HIDDEN void pgq_end(struct pgq *q);
PG_HIDDEN void pgq_fail(struct pgq *q, deferred_failure_t *f);
PG_HIDDEN void pgq_abandon(struct pgq *q);
PG_HIDDEN void pgq_tell(struct pgq *q);
PG_HIDDEN void pg_pump(deferred_pg_t *c);
PG_HIDDEN int pg_send_sync(deferred_pg_t *c);
PG_HIDDEN void pg_cancel_request(deferred_pg_t *c);
PG_HIDDEN void pg_cancel_doomed(deferred_pg_t *c);

/* ---- pg-result.c: reading the head's results, rows decoded --------------------- */

PG_HIDDEN void pg_process(deferred_pg_t *c);

/* ---- pg-params.c: a query's block, its parameters encoded for libpq ------------ */

PG_HIDDEN size_t pg_params_size(const char *sql, const deferred_param_t *params, size_t n,
                                char *msg, size_t size);
PG_HIDDEN struct pgq *pgq_new(deferred_pg_t *c, const char *sql,
                              const deferred_param_t *params, size_t n, size_t bytes);

#endif
