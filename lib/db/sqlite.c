/*
 * sqlite.c: SQLite query results as producers of rows, on libev
 * (libdeferred-sqlite).
 *
 * A query stage prepares and binds its statement when it is made, and
 * steps it from a pump (lib/ev/ev-pump.h) in its once-per-loop-iteration
 * mode once its process resumes it: one batch of at most `batch`
 * sqlite3_step() calls per loop iteration, from an ev_check (after the
 * loop polled, so other watchers get their turn between batches), with an
 * ev_idle that keeps the loop from blocking in its poll while rows
 * remain.  Pause unschedules the pump; resume schedules it; resume itself
 * never steps, so the producer never emits before its resume returns.
 *
 * The design decision to know: everything that can end the statement (the
 * end of the result, an error, a cancel from inside a consumer's handle)
 * may happen in the middle of the batch loop, through the emit call.  So
 * the loop re-reads the statement pointer after each emit; cancel (and
 * destroy) finalizes at once unless a sqlite3_step() is on the stack
 * (in_step: then it interrupts the step and the loop finalizes when the
 * step returns: SQLite's own re-entrancy, which the pump cannot see); and
 * the batch runs under the pump's guard, so a destroy from inside it
 * leaves the stage's memory to the pump, which frees it once the batch
 * has returned.
 *
 * Written against the public interfaces of process.h and row.h only, as
 * any user's producer would be, plus the header-only pump of lib/ev/
 * (it needs libev only, which this library links, not libdeferred-ev);
 * allocation goes through deferred_malloc().
 */
#include <stdio.h>
#include <string.h>

#include <ev.h>

#include "deferred/sqlite.h"
#include "ev/ev-pump.h"

/* Room for the messages formatted here (SQLite's own are not copied). */
#define SQ_MSG_MAX 160

struct sq {
    sqlite3 *db;
    sqlite3_stmt *stmt;      /* NULL once finalized */
    char *sql;
    const char *file;        /* the user's call that made the query */
    int line;
    deferred_stage_t *self;
    deferred_row_shape_t *shape;
    deferred_failure_t *failure; /* a preparation error, for the first run */
    int ncols;
    /* Per column, for one row: the type and the bytes of text and blobs. */
    void *colmem;            /* one block: vals, ptrs, then types, lens */
    sqlite3_value **vals;
    const void **ptrs;
    int *types;
    int *lens;
    unsigned batch;
    uint64_t row;            /* rows emitted */
    bool empty;              /* the SQL has no statement: no row */
    bool ended;              /* told its stage how it ended */
    bool step_failed;        /* the step to row + 1 failed */
    bool in_step;            /* sqlite3_step() is on the stack */
    bool cancelled;
    bool exec;               /* deferred_sqlite_exec(): rows are skipped and
                              * the end value is a row of the counts */
    deferred_row_shape_t *exec_shape; /* changes, last_insert_rowid */
    deferred__ev_pump_t pump; /* runs sq_run(); owns q's free */
};

/* ---- failures ------------------------------------------------------------ */

/* A failure of domain SQLite with code and message.  The query is named
 * once, by the producer's frame (sq_describe()), which the process adds
 * as the failure leaves the stage; the site is the user's call that made
 * the query. */
static deferred_failure_t *sq_failure(struct sq *q, int code, const char *msg)
{
    return deferred_failure_new_at(q->file, q->line, DEFERRED_DOMAIN_SQLITE, code, "%s",
                                   msg ? msg : sqlite3_errstr(code));
}

static deferred_failure_t *sq_db_failure(struct sq *q)
{
    return sq_failure(q, sqlite3_extended_errcode(q->db), sqlite3_errmsg(q->db));
}

/* ---- the statement's end --------------------------------------------------- */

static void sq_finalize(struct sq *q)
{
    deferred__ev_pump_unschedule(&q->pump);
    if (q->stmt) {
        sqlite3_finalize(q->stmt);
        q->stmt = NULL;
    }
}

/* The statement ended (outcome taken: the empty value or a failure). */
static void sq_end(struct sq *q, deferred_value_t outcome)
{
    sq_finalize(q);
    q->ended = true;
    deferred_stage_finish(q->self, outcome);
}

/* The value the statement ends with: none, or for an exec a row of
 * sqlite3_changes64() and sqlite3_last_insert_rowid() read as the step
 * returned SQLITE_DONE (a failure of the library's ENOMEM when that row
 * cannot be made). */
static deferred_value_t sq_done_value(struct sq *q)
{
    deferred_row_t *row;

    if (!q->exec)
        return deferred_value_none();
    row = deferred_row_alloc(q->exec_shape, 0);
    if (!row)
        return deferred_value_failure(deferred_failure_new_at(
            q->file, q->line, DEFERRED_DOMAIN_LIBRARY, ENOMEM,
            "out of memory making the counts of an exec"));
#if SQLITE_VERSION_NUMBER >= 3037000
    deferred_row_set_int(row, 0, (int64_t)sqlite3_changes64(q->db));
#else
    deferred_row_set_int(row, 0, (int64_t)sqlite3_changes(q->db));
#endif
    deferred_row_set_int(row, 1, (int64_t)sqlite3_last_insert_rowid(q->db));
    return deferred_value_row(row);
}

/* ---- rows ------------------------------------------------------------------- */

/* The current result row of q's statement as a row; NULL on allocation
 * failure. */
static deferred_row_t *sq_make_row(struct sq *q)
{
    sqlite3_stmt *st = q->stmt;
    deferred_row_t *row;
    size_t bytes = 0;
    int i;

    /* One sqlite3_column_value() per column: each sqlite3_column_*() call
     * takes the connection's mutex, the sqlite3_value_*() calls on the
     * value it returns do not. */
    for (i = 0; i < q->ncols; i++) {
        sqlite3_value *v = sqlite3_column_value(st, i);
        int t = sqlite3_value_type(v);

        q->vals[i] = v;
        q->types[i] = t;
        if (t == SQLITE_TEXT || t == SQLITE_BLOB) {
            q->ptrs[i] = t == SQLITE_TEXT ? (const void *)sqlite3_value_text(v)
                                          : sqlite3_value_blob(v);
            q->lens[i] = sqlite3_value_bytes(v);
            /* A NULL pointer is an out-of-memory in SQLite (or an empty
             * blob); the sum of the lengths must not wrap. */
            if ((!q->ptrs[i] && q->lens[i]) || q->lens[i] < 0 ||
                (size_t)q->lens[i] >= SIZE_MAX - bytes)
                return NULL;
            bytes += (size_t)q->lens[i] + 1;
        }
    }
    row = deferred_row_alloc(q->shape, bytes);
    if (!row)
        return NULL;
    for (i = 0; i < q->ncols; i++) {
        switch (q->types[i]) {
        case SQLITE_INTEGER:
            deferred_row_set_int(row, (size_t)i, sqlite3_value_int64(q->vals[i]));
            break;
        case SQLITE_FLOAT:
            deferred_row_set_double(row, (size_t)i, sqlite3_value_double(q->vals[i]));
            break;
        case SQLITE_TEXT:
            deferred_row_set_text(row, (size_t)i, q->ptrs[i], (size_t)q->lens[i]);
            break;
        case SQLITE_BLOB:
            deferred_row_set_blob(row, (size_t)i, q->ptrs[i], (size_t)q->lens[i]);
            break;
        default:
            break;
        }
    }
    return row;
}

/* One batch of steps.  Run by the pump (from the loop, never from
 * resume), under its guard. */
static void sq_run(void *data)
{
    struct sq *q = data;
    unsigned n;

    if (q->failure) {
        deferred_failure_t *f = q->failure;

        q->failure = NULL;
        sq_end(q, deferred_value_failure(f));
        return;
    }
    if (q->empty && !q->ended) {
        /* Only a comment or white space: no row. */
        sq_end(q, sq_done_value(q));
        return;
    }
    for (n = 0; n < q->batch; n++) {
        deferred_row_t *row;
        int rc;

        if (!q->stmt || deferred_stage_is_paused(q->self))
            return;
        q->in_step = true;
        rc = sqlite3_step(q->stmt);
        q->in_step = false;
        if (q->cancelled) {
            /* Cancelled while stepping: the step was interrupted. */
            sq_finalize(q);
            return;
        }
        if (rc == SQLITE_ROW && q->exec) {
            continue; /* an exec's rows (RETURNING) are stepped, not made */
        } else if (rc == SQLITE_ROW) {
            row = sq_make_row(q);
            if (!row) {
                q->step_failed = true;
                /* The library's ENOMEM, as every layer reports running
                 * out of its allocator's memory. */
                sq_end(q, deferred_value_failure(deferred_failure_new_at(
                              q->file, q->line, DEFERRED_DOMAIN_LIBRARY, ENOMEM,
                              "out of memory making a row")));
                return;
            }
            q->row++;
            if (deferred_stage_emit(q->self, deferred_value_row(row)) < 0)
                return;
        } else if (rc == SQLITE_DONE) {
            sq_end(q, sq_done_value(q));
            return;
        } else {
            q->step_failed = true;
            sq_end(q, deferred_value_failure(sq_db_failure(q)));
            return;
        }
    }
}

/* ---- the stage --------------------------------------------------------------- */

static void sq_resume(deferred_stage_t *self, deferred_stage_t *by)
{
    struct sq *q = deferred_stage_data(self);

    (void)by;
    if (!q->cancelled && !q->ended && (q->stmt || q->failure || q->empty))
        deferred__ev_pump_schedule(&q->pump);
}

static void sq_pause(deferred_stage_t *self, deferred_stage_t *by)
{
    struct sq *q = deferred_stage_data(self);

    (void)by;
    deferred__ev_pump_unschedule(&q->pump);
}

/* No more steps: finalize now, or interrupt the step on the stack (the
 * batch loop finalizes when it returns). */
static void sq_stop(struct sq *q)
{
    q->cancelled = true;
    deferred__ev_pump_unschedule(&q->pump);
    if (q->in_step)
        sqlite3_interrupt(q->db);
    else
        sq_finalize(q);
}

static void sq_cancel(deferred_stage_t *self, deferred_stage_t *by)
{
    (void)by;
    sq_stop(deferred_stage_data(self));
}

static int sq_describe(deferred_stage_t *self, deferred_value_t item, char *buf,
                       size_t size)
{
    struct sq *q = deferred_stage_data(self);

    (void)item;
    /* The row at fault: none before the first step, the one a failed
     * step was reaching, else the last one emitted. */
    if (q->row == 0 && !q->step_failed)
        return snprintf(buf, size, "%s", q->sql);
    return snprintf(buf, size, "row %llu of %s",
                    (unsigned long long)(q->row + (q->step_failed ? 1 : 0)), q->sql);
}

/* The pump's release: the last of q (its statement is finalized). */
static void sq_free(void *data)
{
    struct sq *q = data;

    sq_finalize(q);
    deferred_failure_unref(q->failure);
    deferred_row_shape_unref(q->shape);
    deferred_row_shape_unref(q->exec_shape);
    deferred_free(q->colmem);
    deferred_free(q);
}

static void sq_destroy(void *data)
{
    struct sq *q = data;

    sq_stop(q);
    deferred__ev_pump_release(&q->pump); /* sq_free() now or after the batch */
}

static const deferred_stage_ops_t sq_ops = {
    .name = "sqlite query",
    .resume = sq_resume,
    .pause = sq_pause,
    .cancel = sq_cancel,
    .describe = sq_describe,
    .destroy = sq_destroy,
};

/* Bind params[0..n-1]; 0 or an SQLite code (q->failure set). */
static int sq_bind(struct sq *q, const deferred_param_t *params, size_t n)
{
    int want = sqlite3_bind_parameter_count(q->stmt);
    size_t i;

    for (i = 0; i < n; i++) {
        const deferred_param_t *p = &params[i];

        if ((p->type == DEFERRED_ROW_TEXT || p->type == DEFERRED_ROW_BLOB) && !p->u.s.p &&
            p->u.s.len) {
            q->failure = deferred_failure_new_at(
                q->file, q->line, DEFERRED_DOMAIN_LIBRARY, EINVAL,
                "parameter %zu: NULL %s with length %zu", i + 1,
                p->type == DEFERRED_ROW_TEXT ? "text" : "blob", p->u.s.len);
            return SQLITE_MISUSE;
        }
        if ((unsigned)p->type > (unsigned)DEFERRED_ROW_BLOB) {
            q->failure = deferred_failure_new_at(q->file, q->line, DEFERRED_DOMAIN_LIBRARY,
                                                 EINVAL, "parameter %zu: unknown type %d",
                                                 i + 1, (int)p->type);
            return SQLITE_MISUSE;
        }
    }
    if ((size_t)want != n) {
        char msg[SQ_MSG_MAX];

        snprintf(msg, sizeof(msg), "the query takes %d parameter%s, %zu given", want,
                 want == 1 ? "" : "s", n);
        q->failure = sq_failure(q, SQLITE_RANGE, msg);
        return SQLITE_RANGE;
    }
    for (i = 0; i < n; i++) {
        const deferred_param_t *p = &params[i];
        int col = (int)i + 1, rc;

        switch (p->type) {
        case DEFERRED_ROW_NULL:
            rc = sqlite3_bind_null(q->stmt, col);
            break;
        case DEFERRED_ROW_INTEGER:
            rc = sqlite3_bind_int64(q->stmt, col, p->u.i);
            break;
        case DEFERRED_ROW_DOUBLE:
            rc = sqlite3_bind_double(q->stmt, col, p->u.d);
            break;
        case DEFERRED_ROW_TEXT:
            rc = sqlite3_bind_text64(q->stmt, col, p->u.s.p ? p->u.s.p : "",
                                     p->u.s.len, SQLITE_TRANSIENT, SQLITE_UTF8);
            break;
        case DEFERRED_ROW_BLOB:
            rc = sqlite3_bind_blob64(q->stmt, col, p->u.s.p ? p->u.s.p : "",
                                     p->u.s.len, SQLITE_TRANSIENT);
            break;
        default:
            rc = SQLITE_MISUSE;
            break;
        }
        if (rc != SQLITE_OK) {
            char msg[SQ_MSG_MAX];

            snprintf(msg, sizeof(msg), "binding parameter %zu: %s", i + 1,
                     sqlite3_errstr(rc));
            q->failure = sq_failure(q, rc, msg);
            return rc;
        }
    }
    return SQLITE_OK;
}

/* Prepare q's statement and its per-column arrays; on an SQLite error
 * q->failure is set and 0 returned; -ENOMEM on allocation failure. */
static int sq_prepare(struct sq *q, const deferred_param_t *params, size_t n)
{
    const char **names, *tail = NULL;
    sqlite3_stmt *more = NULL;
    int rc, i;

    rc = sqlite3_prepare_v2(q->db, q->sql, -1, &q->stmt, &tail);
    if (rc != SQLITE_OK) {
        q->failure = sq_db_failure(q);
        sqlite3_finalize(q->stmt);
        q->stmt = NULL;
        return 0;
    }
    /* One statement: a second one would be silently ignored.  What
     * follows the first may only be comments and white space. */
    if (q->stmt && tail && *tail &&
        (sqlite3_prepare_v2(q->db, tail, -1, &more, NULL) != SQLITE_OK || more)) {
        sqlite3_finalize(more);
        sqlite3_finalize(q->stmt);
        q->stmt = NULL;
        q->failure = deferred_failure_new_at(q->file, q->line, DEFERRED_DOMAIN_LIBRARY,
                                             EINVAL, "the SQL holds more than one "
                                             "statement (a query runs one)");
        return 0;
    }
    if (!q->stmt) {
        /* Only a comment or white space: an empty result (it takes no
         * parameter). */
        q->empty = true;
        if (n) {
            char msg[SQ_MSG_MAX];

            snprintf(msg, sizeof(msg), "the query has no statement and takes no "
                                       "parameter, %zu given", n);
            q->failure = sq_failure(q, SQLITE_RANGE, msg);
            return 0;
        }
        q->shape = deferred_row_shape_new(0, NULL);
        return q->shape ? 0 : -ENOMEM;
    }
    if (sq_bind(q, params, n) != SQLITE_OK) {
        sqlite3_finalize(q->stmt);
        q->stmt = NULL;
        return 0;
    }
    q->ncols = sqlite3_column_count(q->stmt);
    /* One block for the three per-column arrays. */
    q->colmem = deferred_malloc((size_t)(q->ncols ? q->ncols : 1) *
                                (2 * sizeof(void *) + 2 * sizeof(int)));
    names = deferred_malloc((size_t)(q->ncols ? q->ncols : 1) * sizeof(char *));
    if (!q->colmem || !names) {
        deferred_free(names);
        return -ENOMEM;
    }
    q->vals = q->colmem;
    q->ptrs = (const void **)(q->vals + q->ncols);
    q->types = (int *)(q->ptrs + q->ncols);
    q->lens = q->types + q->ncols;
    for (i = 0; i < q->ncols; i++)
        names[i] = sqlite3_column_name(q->stmt, i);
    q->shape = deferred_row_shape_new((size_t)q->ncols, names);
    deferred_free(names);
    return q->shape ? 0 : -ENOMEM;
}

static deferred_stage_t *sq_new(const char *file, int line, struct ev_loop *loop,
                                sqlite3 *db, const char *sql,
                                const deferred_param_t *params, size_t n, bool exec)
{
    static const char *const counts[] = {"changes", "last_insert_rowid"};
    deferred_stage_t *st;
    struct sq *q;
    size_t len;
    int rc;

    if (!loop || !db || !sql || (!params && n)) {
        errno = EINVAL;
        return NULL;
    }
    len = strlen(sql);
    if (len > SIZE_MAX - sizeof(*q) - 1) {
        errno = ENOMEM;
        return NULL;
    }
    q = deferred_malloc(sizeof(*q) + len + 1);
    if (!q)
        return NULL; /* errno ENOMEM */
    memset(q, 0, sizeof(*q));
    q->file = file;
    q->line = line;
    q->sql = (char *)(q + 1);
    memcpy(q->sql, sql, len + 1);
    q->db = db;
    q->batch = DEFERRED_SQLITE_BATCH;
    deferred__ev_pump_init(&q->pump, loop, DEFERRED__EV_PUMP_EVERY_ITERATION, sq_run,
                           sq_free, q);
    q->exec = exec;
    rc = 0;
    if (exec) {
        q->exec_shape = deferred_row_shape_new(2, counts);
        if (!q->exec_shape)
            rc = -ENOMEM;
    }
    if (rc == 0)
        rc = sq_prepare(q, params, n);
    if (rc < 0) {
        sq_free(q);
        errno = -rc;
        return NULL;
    }
    st = deferred_stage_new(&sq_ops, q, 0); /* destroys q on failure */
    if (st)
        q->self = st;
    return st;
}

deferred_stage_t *deferred_sqlite_query_at(const char *file, int line, struct ev_loop *loop,
                                           sqlite3 *db, const char *sql,
                                           const deferred_param_t *params, size_t n)
{
    return sq_new(file, line, loop, db, sql, params, n, false);
}

int deferred_sqlite_set_batch(deferred_stage_t *st, unsigned rows)
{
    struct sq *q;

    if (!st || rows == 0 || deferred_stage_name(st) != sq_ops.name)
        return -EINVAL;
    q = deferred_stage_data(st);
    q->batch = rows;
    return 0;
}

/* ---- one row or none ------------------------------------------------------------ */

deferred_t *deferred_sqlite_query_one_at(const char *file, int line, struct ev_loop *loop,
                                         sqlite3 *db, const char *sql,
                                         const deferred_param_t *params, size_t n)
{
    deferred_stage_t *st = deferred_sqlite_query_at(file, line, loop, db, sql, params, n);

    /* The stage's errno (EINVAL, ENOMEM) stands. */
    return st ? deferred_process_first_at(file, line, st) : NULL;
}

/* ---- every row; an exec ---------------------------------------------------------- */

deferred_t *deferred_sqlite_query_all_at(const char *file, int line, struct ev_loop *loop,
                                         sqlite3 *db, const char *sql,
                                         const deferred_param_t *params, size_t n)
{
    deferred_stage_t *st = deferred_sqlite_query_at(file, line, loop, db, sql, params, n);
    deferred_stage_t *all;
    deferred_process_t *p;
    deferred_t *d;
    int rc;

    if (!st)
        return NULL; /* the stage's errno (EINVAL, ENOMEM) stands */
    p = deferred_process_new(0);
    if (!p) {
        deferred_stage_free(st);
        errno = ENOMEM;
        return NULL;
    }
    /* deferred_process_add() takes its stage, also when it fails. */
    rc = deferred_process_add(p, st);
    if (rc == 0) {
        all = deferred_stage_collect();
        rc = all ? deferred_process_add(p, all) : -ENOMEM;
    }
    if (rc < 0) {
        deferred_process_unref(p);
        errno = -rc;
        return NULL;
    }
    d = deferred_process_run_at(file, line, p);
    deferred_process_unref(p);
    return d;
}

deferred_t *deferred_sqlite_exec_at(const char *file, int line, struct ev_loop *loop,
                                    sqlite3 *db, const char *sql,
                                    const deferred_param_t *params, size_t n)
{
    deferred_stage_t *st = sq_new(file, line, loop, db, sql, params, n, true);

    /* It emits nothing: deferred_stage_first() gives its end value. */
    return st ? deferred_process_first_at(file, line, st) : NULL;
}

/* The functions behind the macros, for callers without them (bindings,
 * pointers to functions): their failures name no site of the caller's. */
deferred_stage_t *(deferred_sqlite_query)(struct ev_loop *loop, sqlite3 *db,
                                          const char *sql,
                                          const deferred_param_t *params, size_t n)
{
    return deferred_sqlite_query_at(NULL, 0, loop, db, sql, params, n);
}

deferred_t *(deferred_sqlite_query_one)(struct ev_loop *loop, sqlite3 *db, const char *sql,
                                        const deferred_param_t *params, size_t n)
{
    return deferred_sqlite_query_one_at(NULL, 0, loop, db, sql, params, n);
}

deferred_t *(deferred_sqlite_query_all)(struct ev_loop *loop, sqlite3 *db, const char *sql,
                                        const deferred_param_t *params, size_t n)
{
    return deferred_sqlite_query_all_at(NULL, 0, loop, db, sql, params, n);
}

deferred_t *(deferred_sqlite_exec)(struct ev_loop *loop, sqlite3 *db, const char *sql,
                                   const deferred_param_t *params, size_t n)
{
    return deferred_sqlite_exec_at(NULL, 0, loop, db, sql, params, n);
}
