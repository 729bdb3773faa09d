/*
 * pg.c: PostgreSQL connections and query results as producers of rows, on
 * any loop of deferred/loop.h (libdeferred-pg).  This file: the connection
 * handle (its references, closing it) and connecting.
 *
 * A connection (deferred_pg_t) owns the PGconn, one fd watcher of its loop on its
 * socket and a FIFO of queries.  The head of the FIFO is the query whose
 * results are read: it is sent with PQsendQueryParams() in single-row
 * mode as soon as the one before it ended (or, in pipeline mode, as soon
 * as it is made, while those before it are still on the wire), and its
 * rows are read from the socket while its process wants them.  The watcher follows the connection's state:
 * pg_update_io() derives what it waits for after every step and is the
 * only place that starts or stops it.
 *
 * The design decision to know: a query (struct pgq) is shared between its
 * stage and its connection, each holding a reference, because either may
 * go first.  A stage freed while its query is on the wire (a cancelled or
 * abandoned process) leaves the query to the connection, which sends the
 * cancel request and drains the rest of the result in the background
 * before it sends the next query; and a connection closed or lost while
 * queries wait leaves each query with its failure, delivered to its stage
 * by the query's kick.  Everything a stage is told (rows, the end,
 * failures) goes through pg_process() or the kick, never through resume,
 * so the producer never emits before its resume returns.  Callbacks into
 * the process may close or drop the connection: each entry point holds a
 * reference on the connection (and the query) while it works.  The kick
 * and that guard are in one place, pg-private.h.
 *
 * The files, by what they own:
 *   pg-private.h  the structs, the query's states, the kick and the guard
 *   pg.c          the handle and connecting; pipeline mode, batches,
 *                 cancel all
 *   pg-io.c       the socket: the watcher, reading and flushing, shutting
 *   pg-query.c    the queue and every change of a query's state; the
 *                 sending of the head
 *   pg-result.c   reading the head's results: rows decoded and emitted
 *                 (the per-row path), the query ended
 *   pg-stage.c    a query as a process stage; making queries
 *   pg-params.c   a query's block: its SQL and parameters for libpq
 *   pg-failure.c  SQLSTATEs and failures from results and messages
 *
 * Written against the public interfaces of process.h and row.h only;
 * allocation goes through deferred_malloc().
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "pg-private.h"

/* ---- the handle ------------------------------------------------------------ */

static deferred_pg_t *pg_alloc(deferred_loop_t *loop)
{
    deferred_pg_t *c = deferred_malloc(sizeof(*c));

    if (!c)
        return NULL;
    memset(c, 0, sizeof(*c));
    c->refs = 1;
    c->loop = loop; /* the caller's reference, taken */
    c->io_fd = -1;
    return c;
}

deferred_pg_t *deferred_pg_ref(deferred_pg_t *c)
{
    if (c)
        c->refs++;
    return c;
}

void deferred_pg_unref(deferred_pg_t *c)
{
    if (!c || --c->refs > 0)
        return;
    /* Every query holds a reference, and so does connecting while it
     * lasts: none is left. */
    pg_finish(c); /* frees the watcher */
    deferred_loop_unref(c->loop);
    deferred_free(c);
}

void deferred_pg_close(deferred_pg_t *c)
{
    char msg[256];

    if (!c || !c->conn || c->connecting)
        return;
    pg_enter(c);
    snprintf(msg, sizeof(msg), "the connection to %s was closed", c->where);
    pg_shut(c, ENOTCONN, msg);
    pg_leave(c);
}

bool deferred_pg_is_open(const deferred_pg_t *c)
{
    return c && c->conn && !c->connecting && PQstatus(c->conn) == CONNECTION_OK;
}

PGconn *deferred_pg_conn(const deferred_pg_t *c)
{
    return c ? c->conn : NULL;
}

static void pg_value_release(void *ptr)
{
    deferred_pg_unref(ptr);
}

deferred_pg_t *deferred_value_get_pg(deferred_value_t v)
{
    return v.release == pg_value_release ? v.ptr : NULL;
}

/* ---- connecting ---------------------------------------------------------------- */

static void pg_describe_server(deferred_pg_t *c)
{
    const char *host = PQhost(c->conn), *port = PQport(c->conn), *db = PQdb(c->conn);

    snprintf(c->where, sizeof(c->where), "%s%s%s/%s", host ? host : "?",
             port && *port ? ":" : "", port ? port : "", db ? db : "?");
}

/* Stop connecting and free c (the deferred stays). */
static void pg_connect_abandon(struct pgconnect *op)
{
    deferred_pg_t *c = op->c;

    if (!c)
        return;
    op->c = NULL;
    c->connecting = NULL;
    pg_update_io(c);
    deferred_pg_unref(c);
}

/* Where PQconnectPoll() (or PQconnectStart()) left c: wait for the
 * socket, or hand c out, or fail the deferred. */
static void pg_connect_step(deferred_pg_t *c, PostgresPollingStatusType st)
{
    struct pgconnect *op = c->connecting;

    switch (st) {
    case PGRES_POLLING_READING:
        op->events = DEFERRED_LOOP_READ;
        break;
    case PGRES_POLLING_WRITING:
        op->events = DEFERRED_LOOP_WRITE;
        break;
    case PGRES_POLLING_OK: {
        deferred_t *d = op->d;

        op->c = NULL;
        c->connecting = NULL;
        pg_update_io(c); /* open with no query: stopped */
        PQsetnonblocking(c->conn, 1);
        PQsetErrorVerbosity(c->conn, PQERRORS_DEFAULT);
        pg_describe_server(c);
        deferred_callback(d, deferred_value_make(c, pg_value_release));
        return;
    }
    default: {
        deferred_t *d = op->d;
        char msg[512], state[6], stext[96];
        deferred_failure_t *f;
        int code = ECONNREFUSED;

        pg_trimmed(c->conn ? PQerrorMessage(c->conn) : "out of memory", msg, sizeof(msg));
        /* The server refused us itself (no such database, bad password,
         * too many connections): its SQLSTATE is the code. */
        if (pg_message_state(msg, state)) {
            code = deferred_pg_sqlstate(state);
            f = deferred_failure_new_at(op->file, op->line, DEFERRED_DOMAIN_POSTGRES, code,
                                        "could not connect to %s: %s (%s)", c->where, msg,
                                        pg_state_text(state, stext, sizeof(stext)));
        } else {
            f = deferred_failure_new_at(op->file, op->line, DEFERRED_DOMAIN_POSTGRES, code,
                                        "could not connect to %s: %s", c->where, msg);
        }
        deferred_failure_add_context(f, "postgres connect", "%s", c->where);
        pg_connect_abandon(op);
        deferred_errback(d, f);
        return;
    }
    }
    pg_update_io(c);
}

void pg_connect_cb(deferred_pg_t *c, int revents)
{
    (void)revents;
    pg_connect_step(c, PQconnectPoll(c->conn));
}

static void pg_connect_cancel(deferred_t *d, void *arg)
{
    (void)d;
    pg_connect_abandon(arg);
}

static void pg_connect_destroy(void *arg)
{
    struct pgconnect *op = arg;

    pg_connect_abandon(op);
    deferred_free(op);
}

int deferred_pg_conninfo_check(const char *conninfo, char *buf, size_t size)
{
    PQconninfoOption *opts;
    char *err = NULL;
    size_t n;

    if (buf && size > 0)
        buf[0] = '\0';
    if (!conninfo) {
        if (buf && size > 0)
            snprintf(buf, size, "no connection info string");
        return -EINVAL;
    }
    opts = PQconninfoParse(conninfo, &err);
    if (opts) {
        PQconninfoFree(opts);
        return 0;
    }
    if (!err)
        return -ENOMEM; /* libpq says so by giving no message */
    if (buf && size > 0) {
        snprintf(buf, size, "%s", err);
        n = strlen(buf); /* libpq ends its messages with a newline */
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
            buf[--n] = '\0';
    }
    PQfreemem(err);
    return -EINVAL;
}

deferred_t *deferred_pg_connect_at(const char *file, int line, deferred_loop_t *loop,
                                   const char *conninfo)
{
    struct pgconnect *op;
    deferred_pg_t *c;
    deferred_t *d;
    int rc;

    if (!loop || !conninfo) {
        errno = EINVAL;
        return NULL;
    }
    /* A malformed conninfo is the caller's mistake, not a refusal: found
     * now, it is NULL with EINVAL (deferred/common.h), and
     * deferred_pg_conninfo_check() gives libpq's reason. */
    rc = deferred_pg_conninfo_check(conninfo, NULL, 0);
    if (rc < 0) {
        errno = -rc;
        return NULL;
    }
    op = deferred_malloc(sizeof(*op));
    if (!op)
        return NULL; /* errno ENOMEM */
    op->c = NULL;
    op->file = file;
    op->line = line;
    op->events = 0;
    d = deferred_new_cancellable(pg_connect_cancel, op, pg_connect_destroy);
    if (!d)
        return NULL; /* op freed by pg_connect_destroy; errno ENOMEM */
    op->d = d;
    c = pg_alloc(deferred_loop_ref(loop));
    if (!c) {
        deferred_loop_unref(loop);
        deferred_unref(d); /* unfired: frees op */
        errno = ENOMEM;
        return NULL;
    }
    c->conn = PQconnectStart(conninfo);
    if (c->conn) {
        /* Verbose errors carry the server's SQLSTATE (pg_message_state()). */
        PQsetErrorVerbosity(c->conn, PQERRORS_VERBOSE);
        pg_describe_server(c);
    }
    else
        snprintf(c->where, sizeof(c->where), "the server");
    op->c = c;
    c->connecting = op;
    if (!c->conn || PQstatus(c->conn) == CONNECTION_BAD) {
        pg_connect_step(c, PGRES_POLLING_FAILED);
        return d;
    }
    /* PQconnectStart() behaves as if PQconnectPoll() had said WRITING. */
    pg_connect_step(c, PGRES_POLLING_WRITING);
    return d;
}

deferred_t *(deferred_pg_connect)(deferred_loop_t *loop, const char *conninfo)
{
    return deferred_pg_connect_at(NULL, 0, loop, conninfo);
}

/* ---- pipeline mode ------------------------------------------------------------- */

int deferred_pg_set_pipeline(deferred_pg_t *c, bool on)
{
    if (!c)
        return -EINVAL;
    if (!c->conn || c->connecting)
        return -ENOTCONN;
    if (c->pipeline == on)
        return 0;
#ifdef PG_NO_PIPELINING
    return -ENOTSUP; /* no pipeline mode in this libpq */
#else
    /* libpq switches only while nothing is on the wire. */
    if (c->head || c->sync_due || c->batch)
        return -EBUSY;
    if (on ? PQenterPipelineMode(c->conn) != 1 : PQexitPipelineMode(c->conn) != 1)
        return -EBUSY;
    c->pipeline = on;
    return 0;
#endif
}

bool deferred_pg_is_pipelined(const deferred_pg_t *c)
{
    return c && c->pipeline;
}

int deferred_pg_batch_begin(deferred_pg_t *c)
{
    if (!c || !c->pipeline)
        return -EINVAL;
    if (!c->conn)
        return -ENOTCONN;
    if (c->batch == UINT_MAX)
        return -EOVERFLOW;
    c->batch++;
    return 0;
}

int deferred_pg_batch_end(deferred_pg_t *c)
{
    int rc = 0;

    if (!c || !c->batch)
        return -EINVAL;
    if (--c->batch > 0 || !c->batch_queued)
        return 0;
    c->batch_queued = false;
    if (!c->conn)
        return 0; /* its queries failed with the connection */
    pg_enter(c);
    if (c->tail && c->tail->state == PGQ_QUEUED) {
        c->tail->syncs++; /* sent after it */
    } else if (pg_send_sync(c) < 0) {
        pg_lost(c);
        rc = -ECONNRESET;
    } else {
        /* Everything queued is on the wire: the sync follows it. */
        if (c->tail)
            c->tail->syncs++;
        else
            c->sync_due++;
        pg_update_io(c);
    }
    pg_leave(c);
    return rc;
}

int deferred_pg_cancel_all(deferred_pg_t *c)
{
    struct pgq *q, *next;
    bool wire = false;
    int n = 0;

    if (!c)
        return -EINVAL;
    pg_enter(c);
    for (q = c->head; q; q = next) {
        deferred_failure_t *f;

        next = q->next;
        if (pgq_is_sent(q))
            q->doomed = q != c->head; /* the head's request is sent below */
        if (pgq_is_ended(q) || !q->self)
            continue; /* draining already: nobody to tell */
        pgq_enter(q);
        f = deferred_failure_new_at(q->file, q->line, DEFERRED_DOMAIN_LIBRARY, ECANCELED,
                                    "cancelled with every query on the connection to %s",
                                    c->where);
        n++;
        if (q->state == PGQ_QUEUED) {
            pgq_fail(q, f);
            pgq_dequeue(q);
        } else {
            /* On the wire: its stage is told now, the rest of its result
             * is read and dropped. */
            deferred_failure_unref(q->failure);
            q->failure = f;
            q->told = false;
            q->state = PGQ_DRAINING;
            if (q->demand != PGQ_UNSTARTED)
                pg_kick(q);
            wire = true;
        }
        pgq_leave(q);
    }
    if (wire && c->conn)
        pg_cancel_request(c);
    if (c->conn)
        pg_update_io(c);
    pg_leave(c);
    return n;
}

unsigned deferred_pg_in_flight(const deferred_pg_t *c)
{
    return c ? c->nsent : 0;
}
