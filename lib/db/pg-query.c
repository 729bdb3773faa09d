/*
 * pg-query.c: the connection's queue of queries and where each query is
 * (enum pgq_state, pg-private.h).  Owns every change of q->state, a
 * query's references, and the sending of the head (pg_pump()); reading
 * its results is pg-result.c's.
 */
#include <string.h>

#include "pg-private.h"

void pgq_unref(struct pgq *q)
{
    deferred_pg_t *c;

    if (--q->refs > 0)
        return;
    c = q->c;
    deferred_loop_timer_free(q->pump.kick); /* NULL once released */
    deferred_failure_unref(q->failure);
    deferred_row_shape_unref(q->shape);
    deferred_free(q->types);
    deferred_free(q);
    deferred_pg_unref(c);
}

/* ---- the transitions ------------------------------------------------------ */

/* HELD -> QUEUED: at the queue's tail, which holds a reference.  In
 * pipeline mode a query outside a batch has a sync after it, so that a
 * failure aborts nothing but itself. */
void pgq_enqueue(struct pgq *q)
{
    deferred_pg_t *c = q->c;

    q->refs++;
    q->state = PGQ_QUEUED;
    q->next = NULL;
    q->prev = c->tail;
    if (c->tail)
        c->tail->next = q;
    else
        c->head = q;
    c->tail = q;
    if (!c->unsent)
        c->unsent = q;
    q->syncs = 0;
    if (c->pipeline) {
        if (c->batch)
            c->batch_queued = true;
        else
            q->syncs = 1;
    }
}

/* QUEUED -> SENT, once libpq took q.  Single-row mode is set for the
 * query whose results libpq reads next (pgq_arm()): q, when nothing is
 * before it. */
static void pgq_send(struct pgq *q)
{
    deferred_pg_t *c = q->c;

    q->state = PGQ_SENT;
    c->unsent = q->next;
    c->nsent++;
    if (c->head == q && !c->sync_due)
        q->single = PQsetSingleRowMode(c->conn) == 1;
}

/* Take q off the queue (it is the head, or not sent) into state to, and
 * drop the queue's reference. */
static void pgq_unlink(struct pgq *q, enum pgq_state to)
{
    deferred_pg_t *c = q->c;

    if (pgq_is_sent(q))
        c->nsent--;
    if (c->unsent == q)
        c->unsent = q->next;
    if (q->prev)
        q->prev->next = q->next;
    else
        c->head = q->next;
    if (q->next)
        q->next->prev = q->prev;
    else
        c->tail = q->prev;
    q->next = q->prev = NULL;
    q->state = to;
    pgq_unref(q);
}

/* QUEUED, SENT -> HELD (to be ended or failed); DRAINING -> ENDED, or
 * HELD when its stage still waits for the failure cancel all gave it. */
void pgq_dequeue(struct pgq *q)
{
    if (!pgq_is_queued(q))
        return;
    if (q->state == PGQ_DRAINING && !(q->failure && q->self && !q->told)) {
        pgq_unlink(q, PGQ_ENDED);
        return;
    }
    pgq_unlink(q, PGQ_HELD);
}

/* HELD -> ENDED or FAILED: tell q's stage how it ended, with q->failure
 * or the empty value; not before the stage started. */
void pgq_end(struct pgq *q)
{
    deferred_failure_t *f = q->failure;

    if (pgq_is_ended(q) || !q->self || q->demand == PGQ_UNSTARTED)
        return;
    q->state = f ? PGQ_FAILED : PGQ_ENDED;
    q->failure = NULL;
    pg_kick_stop(q);
    deferred_stage_finish(q->self, f ? deferred_value_failure(f) : deferred_value_none());
}

/* A DRAINING query cancelled by deferred_pg_cancel_all(): tell its
 * started stage its failure while the connection drains the rest. */
void pgq_tell(struct pgq *q)
{
    deferred_failure_t *f = q->failure;

    if (q->state != PGQ_DRAINING || q->told || !f || !q->self ||
        q->demand == PGQ_UNSTARTED)
        return;
    q->told = true;
    q->failure = NULL;
    pg_kick_stop(q);
    deferred_stage_finish(q->self, deferred_value_failure(f));
}

/* q cannot run: keep f (taken) for its stage, which the kick tells once
 * it has started (the caller takes q off the queue). */
void pgq_fail(struct pgq *q, deferred_failure_t *f)
{
    if (!q->failure)
        q->failure = f;
    else
        deferred_failure_unref(f);
    if (q->self && q->demand != PGQ_UNSTARTED && !pgq_is_ended(q))
        pg_kick(q);
}

/* The head q, DRAINING and alone on the wire: read and drop what libpq
 * already holds of its results (no socket read, no callback).  When its
 * end was among them, q leaves the queue (ENDED), with the syncs after it
 * read too when libpq holds them (else counted as due); true then. */
static bool pgq_drain_buffered(struct pgq *q)
{
    deferred_pg_t *c = q->c;
    PGresult *res;
    unsigned syncs = q->syncs;

    for (;;) {
        if (PQisBusy(c->conn))
            return false;
        res = PQgetResult(c->conn);
        q->single = true;
        if (!res)
            break;
        PQclear(res);
    }
    while (syncs && !PQisBusy(c->conn) && (res = PQgetResult(c->conn)) != NULL) {
        bool sync = PQresultStatus(res) == PGRES_PIPELINE_SYNC;

        PQclear(res);
        if (!sync)
            break; /* out of step: left for pg_process() to find */
        syncs--;
        c->abort_by[0] = '\0';
    }
    c->sync_due += syncs;
    pgq_unlink(q, PGQ_ENDED);
    return true;
}

/* Stop q for good: HELD and QUEUED -> ENDED (dropped), SENT -> DRAINING
 * (the rest of its result is read and dropped).  A cancel request goes to
 * the server only when q is the one query on the wire: in a pipeline the
 * server may be running a later query already, which the request would
 * cancel instead. */
void pgq_abandon(struct pgq *q)
{
    deferred_pg_t *c = q->c;

    pg_kick_stop(q);
    switch (q->state) {
    case PGQ_HELD:
        q->state = PGQ_ENDED;
        break;
    case PGQ_QUEUED:
        pgq_unlink(q, PGQ_ENDED);
        break;
    case PGQ_SENT:
        q->state = PGQ_DRAINING;
        if (c->conn && c->head == q && c->nsent == 1 && !c->sync_due) {
            /* Alone on the wire: done when libpq holds its end already
             * (a one-row query_one()), else the server is asked to stop. */
            if (!pgq_drain_buffered(q))
                pg_cancel_request(c);
        }
        pg_update_io(c);
        break;
    case PGQ_DRAINING:
        pg_update_io(c);
        break;
    case PGQ_ENDED:
    case PGQ_FAILED:
        break;
    }
}

/* Ask the server to cancel what it runs now (PQcancel() blocks briefly
 * while it connects to the server). */
void pg_cancel_request(deferred_pg_t *c)
{
    PGcancel *cancel = PQgetCancel(c->conn);
    char err[256];

    if (cancel) {
        PQcancel(cancel, err, sizeof(err));
        PQfreeCancel(cancel);
    }
}

/* After cancel all, each query it found on the wire gets a cancel request
 * of its own when its results come next, while every query on the wire is
 * one of those (a later one the request could hit instead is not): one
 * request stops only what the server runs at that moment. */
void pg_cancel_doomed(deferred_pg_t *c)
{
    struct pgq *q = c->head, *last = c->unsent ? c->unsent->prev : c->tail;

    if (!c->conn || !q || !q->doomed || !last || !last->doomed || c->sync_due)
        return;
    q->doomed = false;
    pg_cancel_request(c);
}

/* ---- sending ------------------------------------------------------------------- */

/* A pipeline sync after everything sent (ends the batch: its implicit
 * transaction commits, or the rest of a failed batch is skipped).  0, or
 * -1 when libpq could not (the connection is bad, or no memory). */
int pg_send_sync(deferred_pg_t *c)
{
    return PQpipelineSync(c->conn) == 1 ? 0 : -1;
}

/* Send what may be sent: the first unsent query once nothing is on the
 * wire, or in pipeline mode every unsent query up to PG_PIPELINE_MAX on
 * the wire. */
void pg_pump(deferred_pg_t *c)
{
    while (c->unsent && c->conn &&
           (c->pipeline ? c->nsent < PG_PIPELINE_MAX : c->nsent == 0)) {
        struct pgq *q = c->unsent;
        unsigned i;
        int ok;

        if (!q->self) {
            pgq_dequeue(q); /* abandoned before it was sent */
            continue;
        }
        ok = PQsendQueryParams(c->conn, q->sql, q->nparams, NULL, q->values, q->lengths,
                               q->formats, 0);
        if (!ok) {
            if (PQstatus(c->conn) == CONNECTION_BAD) {
                pg_lost(c);
                return;
            }
            pgq_enter(q);
            pgq_fail(q, pg_result_failure(q, NULL));
            pgq_dequeue(q);
            pgq_leave(q);
            continue;
        }
        pgq_send(q);
        /* A batch's query asks the server to flush its results: without a
         * sync after it, they would wait for the batch's end. */
        for (i = 0; ok && i < q->syncs; i++)
            ok = pg_send_sync(c) == 0;
        if (ok && c->pipeline && !q->syncs)
            ok = PQsendFlushRequest(c->conn) == 1;
        if (!ok) {
            /* What libpq holds can no longer be told apart: the
             * connection is given up. */
            pg_lost(c);
            return;
        }
    }
    pg_update_io(c);
}
