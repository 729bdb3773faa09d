/*
 * pg-stage.c: a query as a producer stage of a process.  Owns the
 * stage's operations (resume and pause set what the stage asks for,
 * cancel and destroy abandon the query), the kick's callback, and making
 * a query (deferred_pg_query(), deferred_pg_query_one()).  Everything the
 * stage is told goes through pg_process() or the kick, never through
 * resume, so the producer never emits before its resume returns.
 */
#include <string.h>

#include "pg-private.h"

/* The extended protocol counts a query's parameters in 16 bits. */
#define PG_MAX_PARAMS 65535

/* The kick's run (pg-private.h), from the loop: deliver rows libpq
 * already holds after a resume, or the failure of a query that is off the
 * queue. */
void pgq_kick_run(void *owner)
{
    struct pgq *q = owner;
    deferred_pg_t *c = q->c;

    pg_enter(c);
    pgq_enter(q);
    if (!pgq_is_queued(q))
        pgq_end(q);
    else if (q->state == PGQ_DRAINING)
        pgq_tell(q);
    else if (c->head == q)
        pg_process(c);
    pgq_leave(q);
    pg_leave(c);
}

static void pgq_resume(deferred_stage_t *self, deferred_stage_t *by)
{
    struct pgq *q = deferred_stage_data(self);

    (void)by;
    q->demand = PGQ_RUNNING;
    pg_kick(q);
    pg_update_io(q->c);
}

static void pgq_pause(deferred_stage_t *self, deferred_stage_t *by)
{
    struct pgq *q = deferred_stage_data(self);

    (void)by;
    if (q->demand == PGQ_RUNNING)
        q->demand = PGQ_PAUSED;
    pg_kick_stop(q);
    pg_update_io(q->c);
}

static void pgq_cancel(deferred_stage_t *self, deferred_stage_t *by)
{
    struct pgq *q = deferred_stage_data(self);
    deferred_pg_t *c = q->c;

    (void)by;
    pg_enter(c);
    pgq_enter(q);
    pgq_abandon(q);
    pg_pump(c); /* it may have left the wire free */
    pgq_leave(q);
    pg_leave(c);
}

static int pgq_describe_item(deferred_stage_t *self, deferred_value_t item, char *buf,
                             size_t size)
{
    struct pgq *q = deferred_stage_data(self);

    (void)item;
    /* No row before the first; the row the result failed at (after the
     * rows emitted); else the last one emitted. */
    if (q->row == 0)
        return snprintf(buf, size, "%s", q->sql);
    return snprintf(buf, size, "row %llu of %s",
                    (unsigned long long)(q->row + (q->state == PGQ_FAILED ? 1 : 0)), q->sql);
}

/* The stage is gone: the query stays with the connection while it is on
 * the wire. */
static void pgq_destroy(void *data)
{
    struct pgq *q = data;
    deferred_pg_t *c = q->c;

    pg_enter(c);
    q->self = NULL;
    pgq_abandon(q);
    deferred__pump_release(&q->pump); /* the stage's reference, now or after the kick */
    pg_pump(c);
    pg_leave(c);
}

static const deferred_stage_ops_t pgq_ops = {
    .name = "postgres query",
    .resume = pgq_resume,
    .pause = pgq_pause,
    .cancel = pgq_cancel,
    .describe = pgq_describe_item,
    .destroy = pgq_destroy,
};

deferred_stage_t *deferred_pg_query_at(const char *file, int line, deferred_pg_t *c,
                                       const char *sql, const deferred_param_t *params,
                                       size_t n)
{
    deferred_stage_t *st;
    struct pgq *q;
    char bad[160];
    size_t bytes;

    if (!c || !sql || (!params && n) || n > PG_MAX_PARAMS) {
        errno = EINVAL;
        return NULL;
    }
    bytes = pg_params_size(sql, params, n, bad, sizeof(bad));
    if (bytes == SIZE_MAX) {
        errno = ENOMEM;
        return NULL;
    }
    if (bad[0])
        q = pgq_new(c, sql, NULL, 0, strlen(sql) + 1);
    else
        q = pgq_new(c, sql, params, n, bytes);
    if (!q) {
        errno = ENOMEM;
        return NULL;
    }
    q->file = file;
    q->line = line;
    st = deferred_stage_new(&pgq_ops, q, 0); /* destroys q on failure */
    if (!st)
        return NULL;
    q->self = st;
    /* A query that cannot run stays HELD with its failure, told at its
     * stage's first resume. */
    if (bad[0]) {
        q->failure = deferred_failure_new_at(file, line, DEFERRED_DOMAIN_LIBRARY, EINVAL,
                                             "%s", bad);
        return st;
    }
    if (!c->conn || c->connecting) {
        q->failure = pgq_failure(q, ENOTCONN, "query against a closed connection to %s",
                                 c->where);
        return st;
    }
    pgq_enqueue(q);
    pg_pump(c);
    return st;
}

/* ---- one row or none ---------------------------------------------------------------------- */

deferred_t *deferred_pg_query_one_at(const char *file, int line, deferred_pg_t *c,
                                     const char *sql, const deferred_param_t *params,
                                     size_t n)
{
    deferred_stage_t *st = deferred_pg_query_at(file, line, c, sql, params, n);

    /* The stage's errno (EINVAL, ENOMEM) stands. */
    return st ? deferred_process_first_at(file, line, st) : NULL;
}

/* The functions behind the macros, for callers without them: their
 * failures name no site of the caller's. */
deferred_stage_t *(deferred_pg_query)(deferred_pg_t *c, const char *sql,
                                      const deferred_param_t *params, size_t n)
{
    return deferred_pg_query_at(NULL, 0, c, sql, params, n);
}

deferred_t *(deferred_pg_query_one)(deferred_pg_t *c, const char *sql,
                                    const deferred_param_t *params, size_t n)
{
    return deferred_pg_query_one_at(NULL, 0, c, sql, params, n);
}
