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
    pg_kick_stop(q);
    deferred_failure_unref(q->failure);
    deferred_row_shape_unref(q->shape);
    deferred_free(q->types);
    deferred_free(q);
    deferred_pg_unref(c);
}

/* ---- the transitions ------------------------------------------------------ */

/* HELD -> QUEUED: at the queue's tail, which holds a reference. */
void pgq_enqueue(struct pgq *q)
{
    deferred_pg_t *c = q->c;

    q->refs++;
    q->state = PGQ_QUEUED;
    if (c->tail)
        c->tail->next = q;
    else
        c->head = q;
    c->tail = q;
}

/* QUEUED -> SENT, once libpq took q as the head. */
static void pgq_send(struct pgq *q)
{
    PQsetSingleRowMode(q->c->conn);
    q->state = PGQ_SENT;
}

/* Take q off the queue (it is the head, or not sent) into state to, and
 * drop the queue's reference. */
static void pgq_unlink(struct pgq *q, enum pgq_state to)
{
    deferred_pg_t *c = q->c;
    struct pgq **pp;

    for (pp = &c->head; *pp; pp = &(*pp)->next) {
        if (*pp == q) {
            *pp = q->next;
            break;
        }
    }
    c->tail = NULL;
    for (pp = &c->head; *pp; pp = &(*pp)->next)
        c->tail = *pp;
    q->next = NULL;
    q->state = to;
    pgq_unref(q);
}

/* QUEUED, SENT -> HELD (to be ended or failed); DRAINING -> ENDED. */
void pgq_dequeue(struct pgq *q)
{
    if (pgq_is_queued(q))
        pgq_unlink(q, q->state == PGQ_DRAINING ? PGQ_ENDED : PGQ_HELD);
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

/* Stop q for good: HELD and QUEUED -> ENDED (dropped), SENT -> DRAINING
 * (cancelled; the rest of its result is read in the background before
 * the next query is sent). */
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
    case PGQ_SENT: {
        PGcancel *cancel = PQgetCancel(c->conn);
        char err[256];

        q->state = PGQ_DRAINING;
        if (cancel) {
            PQcancel(cancel, err, sizeof(err)); /* blocks briefly */
            PQfreeCancel(cancel);
        }
        pg_update_io(c);
        break;
    }
    case PGQ_DRAINING:
        pg_update_io(c);
        break;
    case PGQ_ENDED:
    case PGQ_FAILED:
        break;
    }
}

/* ---- sending and reading ------------------------------------------------------ */

/* Send the head of the queue if nothing is on the wire. */
void pg_pump(deferred_pg_t *c)
{
    while (c->head && c->head->state == PGQ_QUEUED && c->conn) {
        struct pgq *q = c->head;

        if (!q->self) {
            pgq_dequeue(q); /* abandoned before it was sent */
            continue;
        }
        if (!PQsendQueryParams(c->conn, q->sql, q->nparams, NULL, q->values, q->lengths,
                               q->formats, 0)) {
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
    }
    pg_update_io(c);
}
