/*
 * pg-result.c: reading the head's results.  Owns pg_process(), which
 * takes what libpq holds (without touching the socket): rows decoded
 * (column types from the type OIDs, hex bytea) and emitted, the query
 * ended at its last result, the next one sent.  The per-row path is all
 * here, in one file, so the compiler keeps it as one function.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg-private.h"

/* Type OIDs (server/catalog/pg_type_d.h, stable across versions). */
#define OID_BYTEA 17
#define OID_INT8 20
#define OID_INT2 21
#define OID_INT4 23
#define OID_OID 26
#define OID_FLOAT4 700
#define OID_FLOAT8 701

/* A hex bytea ("\x" then two digits a byte) up to this many bytes is
 * decoded on the stack, a longer one in a block of its own. */
#define PG_BYTEA_STACK 256

/* ---- rows ---------------------------------------------------------------- */

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* The shape and column types of q's result, from its first row. */
static int pgq_describe_result(struct pgq *q, const PGresult *res)
{
    const char **names;
    int i;

    q->ncols = PQnfields(res);
    names = deferred_malloc((size_t)(q->ncols ? q->ncols : 1) * sizeof(char *));
    q->types = deferred_malloc((size_t)(q->ncols ? q->ncols : 1) * sizeof(*q->types));
    if (!names || !q->types) {
        deferred_free(names);
        return -ENOMEM;
    }
    for (i = 0; i < q->ncols; i++) {
        names[i] = PQfname(res, i);
        switch (PQftype(res, i)) {
        case OID_INT2:
        case OID_INT4:
        case OID_INT8:
        case OID_OID:
            q->types[i] = DEFERRED_ROW_INTEGER;
            break;
        case OID_FLOAT4:
        case OID_FLOAT8:
            q->types[i] = DEFERRED_ROW_DOUBLE;
            break;
        case OID_BYTEA:
            q->types[i] = DEFERRED_ROW_BLOB;
            break;
        default:
            q->types[i] = DEFERRED_ROW_TEXT;
            break;
        }
    }
    q->shape = deferred_row_shape_new((size_t)q->ncols, names);
    deferred_free(names);
    return q->shape ? 0 : -ENOMEM;
}

/* The row in res (single-row mode: one), as q's columns' types say; the
 * shape and types are made at q's first row.  NULL when out of memory. */
static deferred_row_t *pgq_make_row(struct pgq *q, const PGresult *res)
{
    deferred_row_t *row;
    size_t bytes = 0;
    int i;

    if (!q->shape && pgq_describe_result(q, res) < 0)
        return NULL;
    for (i = 0; i < q->ncols; i++) {
        int len = PQgetlength(res, 0, i);

        /* The sum of the lengths must not wrap (a 32-bit size_t). */
        if (len < 0 || (size_t)len >= SIZE_MAX - bytes)
            return NULL;
        bytes += (size_t)len + 1;
    }
    row = deferred_row_alloc(q->shape, bytes);
    if (!row)
        return NULL;
    for (i = 0; i < q->ncols; i++) {
        const char *s;
        size_t len;

        if (PQgetisnull(res, 0, i))
            continue;
        s = PQgetvalue(res, 0, i);
        len = (size_t)PQgetlength(res, 0, i);
        switch (q->types[i]) {
        case DEFERRED_ROW_INTEGER:
            deferred_row_set_int(row, (size_t)i, strtoll(s, NULL, 10));
            break;
        case DEFERRED_ROW_DOUBLE:
            deferred_row_set_double(row, (size_t)i, strtod(s, NULL));
            break;
        case DEFERRED_ROW_BLOB:
            if (len >= 2 && s[0] == '\\' && s[1] == 'x') {
                /* Hex bytea: decode it (the row copies the bytes). */
                unsigned char buf[PG_BYTEA_STACK], *out = buf, *heap = NULL;
                size_t n = (len - 2) / 2, k;

                if (n > sizeof(buf) && !(out = heap = deferred_malloc(n))) {
                    deferred_row_free(row);
                    return NULL;
                }
                for (k = 0; k < n; k++) {
                    int hi = hexval(s[2 + 2 * k]), lo = hexval(s[3 + 2 * k]);

                    if (hi < 0 || lo < 0)
                        break; /* not hex after all: kept as the server sent it */
                    out[k] = (unsigned char)(hi << 4 | lo);
                }
                if (k == n)
                    deferred_row_set_blob(row, (size_t)i, out, n);
                else
                    deferred_row_set_blob(row, (size_t)i, s, len);
                deferred_free(heap);
            } else {
                deferred_row_set_blob(row, (size_t)i, s, len);
            }
            break;
        default:
            deferred_row_set_text(row, (size_t)i, s, len);
            break;
        }
    }
    return row;
}

/* ---- reading -------------------------------------------------------------- */

/* May results be read now: a sync's, or the head's while it drains or
 * its stage wants rows? */
static bool pg_wants(const deferred_pg_t *c)
{
    const struct pgq *q = c->head;

    if (!c->conn)
        return false;
    if (c->sync_due)
        return true;
    return q && (q->state == PGQ_DRAINING ||
                 (q->state == PGQ_SENT && q->self && q->demand == PGQ_RUNNING &&
                  !deferred_stage_is_paused(q->self)));
}

/* A query of a batch that a failure before it aborted: the server ran
 * none of it.  Names the query that failed. */
static deferred_failure_t *pgq_aborted(struct pgq *q)
{
    deferred_pg_t *c = q->c;

    return pgq_failure(q, ECANCELED, "not run: %s",
                       c->abort_by[0] ? c->abort_by
                                      : "an earlier query of its pipeline batch failed");
}

/* The head q failed with f (a result's error): in a pipeline, the queries
 * after it up to the next sync are aborted; say which one failed. */
static void pg_note_abort(deferred_pg_t *c, const struct pgq *q, const deferred_failure_t *f)
{
    if (!c->pipeline || c->abort_by[0])
        return;
    if (q->state == PGQ_DRAINING)
        snprintf(c->abort_by, sizeof(c->abort_by),
                 "an earlier query of its pipeline batch was cancelled (\"%.160s\")", q->sql);
    else
        snprintf(c->abort_by, sizeof(c->abort_by),
                 "an earlier query of its pipeline batch failed (\"%.160s\": %.200s)", q->sql,
                 f ? deferred_failure_message(f) : "error");
}

/* Read what libpq has (without touching the socket): emit rows, end the
 * head at its last result, read the syncs between queries, send more. */
void pg_process(deferred_pg_t *c)
{
    while (pg_wants(c)) {
        struct pgq *q = c->head;
        PGresult *res;

        if (c->sync_due) {
            /* The sync after the query that ended: its batch is over. */
            if (PQisBusy(c->conn))
                break;
            res = PQgetResult(c->conn);
            if (!res || PQresultStatus(res) != PGRES_PIPELINE_SYNC) {
                /* libpq is out of step with us (or the connection
                 * broke): nothing it says can be placed any more. */
                PQclear(res);
                pg_lost(c);
                return;
            }
            PQclear(res);
            c->sync_due--;
            c->abort_by[0] = '\0';
            pg_cancel_doomed(c);
            continue;
        }
        if (!q->single && c->pipeline)
            q->single = PQsetSingleRowMode(c->conn) == 1;
        if (PQisBusy(c->conn))
            break; /* wait for the socket */
        res = PQgetResult(c->conn);
        q->single = true; /* its results began: too late to set */
        if (!res) {
            /* The query is over. */
            bool drained = q->state == PGQ_DRAINING;

            pgq_enter(q);
            c->sync_due += q->syncs;
            pgq_dequeue(q);
            if (PQstatus(c->conn) == CONNECTION_BAD && !q->failure)
                q->failure = pg_result_failure(q, NULL);
            if (drained && q->state == PGQ_ENDED) {
                /* Its stage is gone or cancelled: nobody to tell. */
                deferred_failure_unref(q->failure);
                q->failure = NULL;
            }
            pgq_end(q);
            pgq_leave(q);
            if (c->conn && PQstatus(c->conn) == CONNECTION_BAD) {
                pg_lost(c);
                return;
            }
            pg_pump(c);
            pg_cancel_doomed(c);
            continue;
        }
        switch (PQresultStatus(res)) {
        case PGRES_SINGLE_TUPLE:
            if (q->state != PGQ_DRAINING && !q->failure) {
                deferred_row_t *row = pgq_make_row(q, res);

                PQclear(res);
                if (!row) {
                    q->failure = deferred_failure_new_at(q->file, q->line,
                                                         DEFERRED_DOMAIN_LIBRARY, ENOMEM,
                                                         "out of memory making a row");
                    continue;
                }
                q->row++;
                pgq_enter(q);
                deferred_stage_emit(q->self, deferred_value_row(row));
                pgq_leave(q);
                continue;
            }
            break;
        case PGRES_TUPLES_OK:
        case PGRES_COMMAND_OK:
        case PGRES_EMPTY_QUERY:
            break;
        case PGRES_PIPELINE_ABORTED:
            if (!q->failure && q->state != PGQ_DRAINING)
                q->failure = pgq_aborted(q);
            break;
        case PGRES_PIPELINE_SYNC:
            /* A sync where a query's results were due. */
            PQclear(res);
            pg_lost(c);
            return;
        default:
            if (!q->failure && q->state != PGQ_DRAINING)
                q->failure = pg_result_failure(q, res);
            pg_note_abort(c, q, q->failure);
            break;
        }
        PQclear(res);
    }
    pg_update_io(c);
}
