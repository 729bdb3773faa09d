/*
 * sqlite.c: SQLite query results as producers of rows, on any loop
 * (libdeferred-sqlite): the loop thread's half.
 *
 * A query's statement runs on the worker thread of its connection
 * (sqlite-worker.c): the worker prepares it, steps a batch of rows into a
 * buffer and posts the buffer to the loop's mailbox (deferred_loop_post(),
 * compiled into this library too); on the loop thread the batch's rows
 * are made into deferred_row_t values (from the shape's spare row: no
 * allocation per row when the consumer releases them) and emitted.  Two
 * batches per query, both with the worker once the first came back with
 * more rows to come: while the loop thread emits one, the worker steps
 * the other, and a batch is queued to the worker again as soon as its
 * rows were emitted (not while the stage is paused), so at most two
 * batches of rows are stepped ahead of the consumer, and a worker faster than the loop thread's emission
 * goes from one batch to the next without waiting to be woken (a batch
 * queued only once the other came back cost the worker two cross-thread
 * wake-ups per batch: on a virtual machine about 150 us, 0.6 us a row at
 * 256 rows a batch, where a row costs SQLite about 0.3 us).
 *
 * The design decisions to know:
 *  - Everything that can end the stream (its end, an error, a cancel or a
 *    destroy from inside a consumer's handle) may happen in the middle of
 *    the emission, through the emit call: the emission re-reads the
 *    query's state after each emit, and runs under the pump's guard
 *    (lib/loop/loop-pump.h), so a destroy from inside it leaves the query's
 *    memory to the pump, which lets go of it once the emission returned.
 *  - Cancel, destroy and errors "halt" the query: the ready batches are
 *    dropped and the statement is finalized at once when the worker is
 *    idle (under its lock), interrupted (sqlite3_interrupt()) when the
 *    worker is stepping it, or handed to the worker to finalize when it is
 *    busy with another statement.  The query's memory stays until the
 *    worker has given its batch back; the stage ends at once.
 *  - Resume only queues work or schedules the pump (its once mode, an
 *    a zero-delay timer), so the producer never emits before its resume returns.
 *
 * Written against the public interfaces of process.h and row.h, as any
 * user's producer would be, plus the header-only pump and the mailbox of
 * lib/ev/; allocation goes through deferred_malloc(), on the loop thread
 * only.
 */
#include <stdio.h>
#include <string.h>


#include "sqlite-private.h"

enum { B_FREE, B_WORKER, B_READY };

/* ---- failures ------------------------------------------------------------ */

/* A failure of the query's site.  The query is named once, by the
 * producer's frame (sq_describe()), which the process adds as the failure
 * leaves the stage. */
static deferred_failure_t *sq_failure(struct sq *q, deferred_domain_t domain, int code,
                                      const char *msg)
{
    return deferred_failure_new_at(q->file, q->line, domain, code, "%s",
                                   msg ? msg : sqlite3_errstr(code));
}

static deferred_failure_t *sq_enomem(struct sq *q, const char *what)
{
    return sq_failure(q, DEFERRED_DOMAIN_LIBRARY, ENOMEM, what);
}

/* ---- the worker's side of a query ----------------------------------------------- */

static void sq_run(void *data);

/* Give b to the worker: one message more for the loop to wait for. */
static void sq_queue(struct sq *q, struct sqb *b)
{
    b->state = B_WORKER;
    b->limit = q->batch;
    q->at_worker++;
    (void)deferred_loop_expect(q->dl); /* never fails on a loop */
    deferred__sqw_queue(q->w, b);
}

/* Make sure the statement gets finalized: now when the worker is idle,
 * by interrupting it when the worker is stepping it, else by the worker
 * (a batch of q already with it, or a job handed to it). */
static void sq_settle(struct sq *q)
{
    struct sqw *w = q->w;
    int i;

    if (q->final)
        return;
    pthread_mutex_lock(&w->lock);
    if (w->current == q) {
        /* Inside sqlite3_step() (or about to be): the step returns
         * SQLITE_INTERRUPT, the worker sees q->cancel and finalizes. */
        sqlite3_interrupt(q->db);
        pthread_mutex_unlock(&w->lock);
        return;
    }
    if (w->current == NULL) {
        /* Idle: the worker cannot start a job while we hold its lock. */
        for (i = 0; i < 2; i++) {
            struct sqb *b = &q->b[i], **pp;

            if (!b->queued)
                continue;
            for (pp = &w->head; *pp; pp = &(*pp)->job_next)
                if (*pp == b) {
                    *pp = b->job_next;
                    break;
                }
            w->tail = NULL;
            for (pp = &w->head; *pp; pp = &(*pp)->job_next)
                w->tail = *pp;
            b->queued = false;
            b->state = B_FREE;
            q->at_worker--;
            deferred_loop_done(q->dl);
        }
        deferred__sq_finalize_locked(q);
        q->final = true;
        pthread_mutex_unlock(&w->lock);
        return;
    }
    /* Busy with another statement. */
    for (i = 0; i < 2; i++)
        if (q->b[i].queued) {
            pthread_mutex_unlock(&w->lock);
            return; /* the worker finalizes when it comes to it */
        }
    pthread_mutex_unlock(&w->lock);
    if (q->at_worker)
        return; /* on its way back: its delivery settles again */
    q->b[0].state = B_FREE;
    sq_queue(q, &q->b[0]);
}

/* No more steps: the ready rows are dropped and the statement finalized
 * (sq_settle()).  The stage is told nothing here. */
static void sq_halt(struct sq *q)
{
    struct sqb *b;

    if (q->halted)
        return;
    q->halted = true;
    __atomic_store_n(&q->cancel, 1, __ATOMIC_RELEASE);
    deferred__pump_unschedule(&q->pump);
    for (b = q->ready; b; b = b->ready_next)
        b->state = B_FREE;
    q->ready = q->ready_tail = NULL;
    sq_settle(q);
}

/* A buffer of size bytes for b (its old one dropped: a free batch's
 * bytes are all read).  0 or -ENOMEM (b unchanged). */
static int sq_give_room(struct sqb *b, size_t size)
{
    unsigned char *buf = deferred_malloc(size);

    if (!buf)
        return -ENOMEM;
    deferred_free(b->buf);
    b->buf = buf;
    b->cap = size;
    return 0;
}

/* Queue a batch when the stream wants rows and a batch is free.
 * Returns 0, or -ENOMEM when the statement needs a larger buffer than
 * could be had (q->failure is then set for the pump). */
static int sq_request_one(struct sq *q)
{
    struct sqb *b = NULL;
    int i;

    /* One batch to start with (an exec steps to its end in one job; most
     * queries fit one batch), both once one came back with more rows to
     * come. */
    if (q->halted || q->ended || q->final || q->at_worker >= (q->streaming ? 2u : 1u) ||
        q->failure || deferred_stage_is_paused(q->self))
        return 0;
    for (i = 0; i < 2 && !b; i++)
        if (q->b[i].state == B_FREE)
            b = &q->b[i];
    if (!b)
        return 0;
    if (!q->exec && (!b->buf || b->grow_to > b->cap)) {
        size_t want = b->grow_to > b->cap ? b->grow_to : SQ_BUF_START;

        if (sq_give_room(b, want) < 0) {
            /* Only a row or names larger than every buffer need room:
             * a short batch can go on in the buffer it has. */
            if (b->buf && b->need == 0) {
                b->grow_to = 0;
            } else if (b != &q->b[0] && q->b[0].buf) {
                return 0; /* the first batch goes on alone */
            } else {
                q->failure = sq_enomem(q, "out of memory making room for a row");
                sq_halt(q);
                return -ENOMEM;
            }
        }
    }
    b->grow_to = 0;
    b->need = 0;
    sq_queue(q, b);
    return 0;
}

/* The same for every free batch the stream can take. */
static int sq_request(struct sq *q)
{
    unsigned before;
    int rc;

    do {
        before = q->at_worker;
        rc = sq_request_one(q);
    } while (rc == 0 && q->at_worker > before);
    return rc;
}

/* The mailbox's delivery of b, on the loop thread. */
static void sq_deliver(deferred_loop_msg_t *m)
{
    struct sqb *b = (struct sqb *)m;
    struct sq *q = b->q;

    q->at_worker--;
    if (b->final)
        q->final = true;
    else
        q->streaming = true;
    if (q->halted || b->end == SQ_SPENT) {
        /* Rows no one will take, or none: a spent batch came after the
         * final one, which ends the stream when its turn comes. */
        b->state = B_FREE;
        deferred_loop_done(q->dl);
        sq_settle(q);
        if (q->stage_gone && !q->at_worker)
            q->pump.release(q); /* sq_free() */
        return;
    }
    b->state = B_READY;
    b->ready_next = NULL;
    if (q->ready_tail)
        q->ready_tail->ready_next = b;
    else
        q->ready = b;
    q->ready_tail = b;
    deferred_loop_done(q->dl);
    /* Emitted from the pump's kick, not from here: the drain takes
     * every batch posted meanwhile, and the loop gets its turn (its other
     * watchers, its poll) between two batches. */
    if (!deferred_stage_is_paused(q->self)) {
        /* The worker steps the next batch while this one is emitted. */
        sq_request(q);
        deferred__pump_schedule(&q->pump);
    }
}

/* ---- rows -------------------------------------------------------------------- */

/* The shape from the column names at the start of b. */
static int sq_make_shape(struct sq *q, struct sqb *b)
{
    const char **names = NULL;
    const char *p = (const char *)b->buf;
    int i;

    if (b->ncols) {
        names = deferred_malloc((size_t)b->ncols * sizeof(char *));
        if (!names)
            return -ENOMEM;
    }
    for (i = 0; i < b->ncols; i++) {
        names[i] = p;
        p += strlen(p) + 1;
    }
    q->shape = deferred_row_shape_new((size_t)b->ncols, names);
    deferred_free(names);
    if (!q->shape)
        return -ENOMEM;
    q->ncols = b->ncols;
    b->pos = (size_t)((const unsigned char *)p - b->buf);
    return 0;
}

/* The next row of b as a row; NULL on allocation failure. */
static deferred_row_t *sq_take_row(struct sq *q, struct sqb *b)
{
    const unsigned char *p = b->buf + b->pos;
    deferred_row_t *row;
    size_t bytes;
    int i;

    memcpy(&bytes, p, sizeof(bytes));
    p += sizeof(bytes);
    row = deferred_row_alloc(q->shape, bytes);
    if (!row)
        return NULL;
    for (i = 0; i < q->ncols; i++) {
        unsigned char t = *p++;

        switch (t) {
        case SQLITE_INTEGER: {
            int64_t x;

            memcpy(&x, p, sizeof(x));
            p += sizeof(x);
            deferred_row_set_int(row, (size_t)i, x);
            break;
        }
        case SQLITE_FLOAT: {
            double x;

            memcpy(&x, p, sizeof(x));
            p += sizeof(x);
            deferred_row_set_double(row, (size_t)i, x);
            break;
        }
        case SQLITE_TEXT:
        case SQLITE_BLOB: {
            size_t n;

            memcpy(&n, p, sizeof(n));
            p += sizeof(n);
            if (t == SQLITE_TEXT)
                deferred_row_set_text(row, (size_t)i, (const char *)p, n);
            else
                deferred_row_set_blob(row, (size_t)i, p, n);
            p += n;
            break;
        }
        default:
            break;
        }
    }
    b->pos = (size_t)(p - b->buf);
    return row;
}

/* ---- the stream's end -------------------------------------------------------- */

/* The stream ended (outcome taken: the empty value or a failure). */
static void sq_end(struct sq *q, deferred_value_t outcome)
{
    sq_halt(q);
    q->ended = true;
    deferred_stage_finish(q->self, outcome);
}

/* The value a statement that ran to its end gives: none, or for an exec
 * a row of sqlite3_changes64() and sqlite3_last_insert_rowid() read as the
 * step returned SQLITE_DONE (a failure of the library's ENOMEM when that
 * row cannot be made). */
static deferred_value_t sq_done_value(struct sq *q, const struct sqb *b)
{
    deferred_row_t *row;

    if (!q->exec)
        return deferred_value_none();
    row = deferred_row_alloc(q->exec_shape, 0);
    if (!row)
        return deferred_value_failure(sq_enomem(q, "out of memory making the counts of "
                                                   "an exec"));
    deferred_row_set_int(row, 0, b->changes);
    deferred_row_set_int(row, 1, b->rowid);
    return deferred_value_row(row);
}

/* The end a final batch reports. */
static void sq_end_with(struct sq *q, const struct sqb *b)
{
    switch (b->end) {
    case SQ_DONE:
        sq_end(q, sq_done_value(q, b));
        break;
    case SQ_SQLFAIL:
        q->step_failed = b->step_error;
        sq_end(q, deferred_value_failure(sq_failure(q, DEFERRED_DOMAIN_SQLITE, b->code,
                                                    b->text)));
        break;
    case SQ_LIBFAIL:
        sq_end(q, deferred_value_failure(sq_failure(q, DEFERRED_DOMAIN_LIBRARY, b->code,
                                                    b->text)));
        break;
    default:
        sq_end(q, deferred_value_failure(sq_failure(q, DEFERRED_DOMAIN_LIBRARY, ECANCELED,
                                                    "the statement was interrupted")));
        break;
    }
}

/* Emit the ready rows, in order, until the stream pauses, ends or runs
 * out of them; then ask for more.  Run by the pump (from the loop, never
 * from resume), under its guard. */
static void sq_run(void *data)
{
    struct sq *q = data;
    struct sqb *b;

    if (q->ended)
        return;
    if (q->failure) {
        deferred_failure_t *f = q->failure;

        q->failure = NULL;
        sq_end(q, deferred_value_failure(f));
        return;
    }
    while ((b = q->ready) != NULL) {
        if (b->has_names && !q->shape && sq_make_shape(q, b) < 0) {
            sq_end(q, deferred_value_failure(sq_enomem(q, "out of memory making a row")));
            return;
        }
        while (b->emitted < b->nrows) {
            deferred_row_t *row;

            if (deferred_stage_is_paused(q->self))
                return;
            row = sq_take_row(q, b);
            if (!row) {
                q->step_failed = true;
                /* The library's ENOMEM, as every layer reports running
                 * out of its allocator's memory. */
                sq_end(q, deferred_value_failure(sq_enomem(q, "out of memory making a "
                                                              "row")));
                return;
            }
            b->emitted++;
            q->row++;
            if (deferred_stage_emit(q->self, deferred_value_row(row)) < 0 ||
                deferred__pump_released(&q->pump) || q->halted)
                return;
        }
        if (deferred_stage_is_paused(q->self))
            return;
        q->ready = b->ready_next;
        if (!q->ready)
            q->ready_tail = NULL;
        b->state = B_FREE;
        if (b->final) {
            sq_end_with(q, b);
            return;
        }
        if (b->need)
            b->grow_to = b->need;
        else if (b->nrows < b->limit && b->cap < SQ_BUF_MAX)
            b->grow_to = 2 * b->cap; /* it filled up: more room next time */
    }
    if (sq_request(q) < 0)
        deferred__pump_schedule(&q->pump); /* ends with q->failure */
}

/* ---- the stage --------------------------------------------------------------- */

static void sq_resume(deferred_stage_t *self, deferred_stage_t *by)
{
    struct sq *q = deferred_stage_data(self);

    (void)by;
    if (q->halted || q->ended)
        return;
    if (q->ready || q->failure)
        deferred__pump_schedule(&q->pump);
    else if (sq_request(q) < 0)
        deferred__pump_schedule(&q->pump);
}

static void sq_pause(deferred_stage_t *self, deferred_stage_t *by)
{
    struct sq *q = deferred_stage_data(self);

    (void)by;
    deferred__pump_unschedule(&q->pump);
}

static void sq_cancel(deferred_stage_t *self, deferred_stage_t *by)
{
    (void)by;
    sq_halt(deferred_stage_data(self));
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

/* The last of q: its stage is gone and no batch is with the worker (its
 * statement is finalized). */
static void sq_free(struct sq *q)
{
    deferred_failure_unref(q->failure);
    deferred_row_shape_unref(q->shape);
    deferred_row_shape_unref(q->exec_shape);
    deferred_free(q->b[0].buf);
    deferred_free(q->b[1].buf);
    if (q->w)
        deferred__sqw_put(q->w);
    deferred_loop_timer_free(q->pump.kick); /* NULL once released */
    q->pump.kick = NULL;
    deferred_loop_unref(q->dl);
    deferred_free(q);
}

/* The pump's release: the stage's part of q is gone. */
static void sq_release(void *data)
{
    struct sq *q = data;

    q->stage_gone = true;
    if (!q->at_worker)
        sq_free(q);
}

static void sq_destroy(void *data)
{
    struct sq *q = data;

    sq_halt(q);
    deferred__pump_release(&q->pump); /* sq_release() now or after the emission */
}

static const deferred_stage_ops_t sq_ops = {
    .name = "sqlite query",
    .resume = sq_resume,
    .pause = sq_pause,
    .cancel = sq_cancel,
    .describe = sq_describe,
    .destroy = sq_destroy,
};

/* Check params[0..n-1] and the room their copies take; q->failure is set
 * for a bad one. */
static size_t sq_params_size(struct sq *q, const deferred_param_t *params, size_t n)
{
    size_t i, bytes = n * sizeof(deferred_param_t);

    for (i = 0; i < n; i++) {
        const deferred_param_t *p = &params[i];

        if ((p->type == DEFERRED_ROW_TEXT || p->type == DEFERRED_ROW_BLOB) && !p->u.s.p &&
            p->u.s.len) {
            q->failure = deferred_failure_new_at(
                q->file, q->line, DEFERRED_DOMAIN_LIBRARY, EINVAL,
                "parameter %zu: NULL %s with length %zu", i + 1,
                p->type == DEFERRED_ROW_TEXT ? "text" : "blob", p->u.s.len);
            return 0;
        }
        if ((unsigned)p->type > (unsigned)DEFERRED_ROW_BLOB) {
            q->failure = deferred_failure_new_at(q->file, q->line, DEFERRED_DOMAIN_LIBRARY,
                                                 EINVAL, "parameter %zu: unknown type %d",
                                                 i + 1, (int)p->type);
            return 0;
        }
        if ((p->type == DEFERRED_ROW_TEXT || p->type == DEFERRED_ROW_BLOB)) {
            if (p->u.s.len > SIZE_MAX / 2 - bytes)
                return SIZE_MAX;
            bytes += p->u.s.len;
        }
    }
    return bytes;
}

static deferred_stage_t *sq_new(const char *file, int line, deferred_loop_t *loop,
                                sqlite3 *db, const char *sql,
                                const deferred_param_t *params, size_t n, bool exec)
{
    static const char *const counts[] = {"changes", "last_insert_rowid"};
    struct sq probe, *q;
    deferred_stage_t *st;
    size_t len, pbytes;
    char *at;

    if (!loop || !db || !sql || (!params && n)) {
        errno = EINVAL;
        return NULL;
    }
    if (!sqlite3_threadsafe()) {
        errno = ENOTSUP; /* a worker thread needs a thread-safe SQLite */
        return NULL;
    }
    len = strlen(sql);
    memset(&probe, 0, sizeof(probe));
    probe.file = file;
    probe.line = line;
    pbytes = sq_params_size(&probe, params, n);
    if (probe.failure)
        pbytes = 0; /* the stream fails with it; nothing to copy */
    if (pbytes == SIZE_MAX || len > SIZE_MAX / 2 - sizeof(*q) - pbytes) {
        deferred_failure_unref(probe.failure);
        errno = ENOMEM;
        return NULL;
    }
    q = deferred_malloc(sizeof(*q) + pbytes + len + 1 + sizeof(deferred_param_t));
    if (!q) {
        deferred_failure_unref(probe.failure);
        return NULL; /* errno ENOMEM */
    }
    memset(q, 0, sizeof(*q));
    q->file = file;
    q->line = line;
    q->failure = probe.failure;
    q->db = db;
    q->exec = exec;
    q->batch = DEFERRED_SQLITE_BATCH;
    q->b[0].q = q->b[1].q = q;
    q->b[0].msg.deliver = q->b[1].msg.deliver = sq_deliver;
    /* The copies: the parameters (aligned after q), their bytes, the SQL. */
    q->params = (deferred_param_t *)(q + 1);
    at = (char *)(q->params + (q->failure ? 0 : n));
    if (!q->failure) {
        size_t i;

        q->nparams = n;
        for (i = 0; i < n; i++) {
            q->params[i] = params[i];
            if ((params[i].type == DEFERRED_ROW_TEXT ||
                 params[i].type == DEFERRED_ROW_BLOB) && params[i].u.s.len) {
                memcpy(at, params[i].u.s.p, params[i].u.s.len);
                q->params[i].u.s.p = at;
                at += params[i].u.s.len;
            }
        }
    }
    q->sql = at;
    memcpy(q->sql, sql, len + 1);
    q->dl = deferred_loop_ref(loop);
    if (deferred__pump_init(&q->pump, q->dl, sq_run, sq_release, q) < 0)
        goto fail;
    if (exec) {
        q->exec_shape = deferred_row_shape_new(2, counts);
        if (!q->exec_shape)
            goto fail;
    } else {
        q->b[0].buf = deferred_malloc(SQ_BUF_START);
        if (!q->b[0].buf)
            goto fail;
        q->b[0].cap = SQ_BUF_START;
    }
    q->w = deferred__sqw_get(db);
    if (!q->w) {
        int e = errno;

        sq_free(q);
        errno = e;
        return NULL;
    }
    st = deferred_stage_new(&sq_ops, q, 0); /* destroys q on failure */
    if (st)
        q->self = st;
    return st;
fail:
    sq_free(q);
    errno = ENOMEM;
    return NULL;
}

deferred_stage_t *deferred_sqlite_query_at(const char *file, int line, deferred_loop_t *loop,
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

deferred_t *deferred_sqlite_query_one_at(const char *file, int line, deferred_loop_t *loop,
                                         sqlite3 *db, const char *sql,
                                         const deferred_param_t *params, size_t n)
{
    deferred_stage_t *st = deferred_sqlite_query_at(file, line, loop, db, sql, params, n);

    /* The stage's errno (EINVAL, ENOMEM) stands. */
    return st ? deferred_process_first_at(file, line, st) : NULL;
}

/* ---- every row; an exec ---------------------------------------------------------- */

deferred_t *deferred_sqlite_query_all_at(const char *file, int line, deferred_loop_t *loop,
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

deferred_t *deferred_sqlite_exec_at(const char *file, int line, deferred_loop_t *loop,
                                    sqlite3 *db, const char *sql,
                                    const deferred_param_t *params, size_t n)
{
    deferred_stage_t *st = sq_new(file, line, loop, db, sql, params, n, true);

    /* It emits nothing: deferred_stage_first() gives its end value. */
    return st ? deferred_process_first_at(file, line, st) : NULL;
}

/* The functions behind the macros, for callers without them (bindings,
 * pointers to functions): their failures name no site of the caller's. */
deferred_stage_t *(deferred_sqlite_query)(deferred_loop_t *loop, sqlite3 *db,
                                          const char *sql,
                                          const deferred_param_t *params, size_t n)
{
    return deferred_sqlite_query_at(NULL, 0, loop, db, sql, params, n);
}

deferred_t *(deferred_sqlite_query_one)(deferred_loop_t *loop, sqlite3 *db, const char *sql,
                                        const deferred_param_t *params, size_t n)
{
    return deferred_sqlite_query_one_at(NULL, 0, loop, db, sql, params, n);
}

deferred_t *(deferred_sqlite_query_all)(deferred_loop_t *loop, sqlite3 *db, const char *sql,
                                        const deferred_param_t *params, size_t n)
{
    return deferred_sqlite_query_all_at(NULL, 0, loop, db, sql, params, n);
}

deferred_t *(deferred_sqlite_exec)(deferred_loop_t *loop, sqlite3 *db, const char *sql,
                                   const deferred_param_t *params, size_t n)
{
    return deferred_sqlite_exec_at(NULL, 0, loop, db, sql, params, n);
}

/* ---- the close ---------------------------------------------------------------------- */

/* A close waiting for the handle's worker to be gone, then for a loop
 * iteration (a zero-delay timer: never from inside the free of the last query,
 * nor before deferred_sqlite_close() returns). */
struct sq_close {
    struct sqw_waiter wait; /* first */
    sqlite3 *db;
    deferred_t *d;          /* weak: freeing d detaches and frees this */
    deferred_loop_timer_t *idle; /* a zero-delay kick */
    bool waiting;           /* on the handle's list */
    const char *file;
    int line;
};

static void close_kick(struct sqw_waiter *w)
{
    struct sq_close *c = (struct sq_close *)w;

    c->waiting = false;
    deferred_loop_timer_start(c->idle, 0.0);
}

static void close_idle(void *arg)
{
    struct sq_close *c = arg;
    deferred_t *d = c->d;
    int rc;

    if (deferred__sqw_wait(c->db, &c->wait)) {
        c->waiting = true; /* a query was made meanwhile: wait for it too */
        return;
    }
    rc = sqlite3_close(c->db);
    /* d may be freed by its callbacks, and c with it. */
    if (rc == SQLITE_OK)
        deferred_callback(d, deferred_value_none());
    else
        deferred_errback(d, deferred_failure_new_at(c->file, c->line, DEFERRED_DOMAIN_SQLITE,
                                                    rc, "closing the connection: %s",
                                                    sqlite3_errmsg(c->db)));
}

static void close_detach(struct sq_close *c)
{
    if (c->waiting)
        deferred__sqw_unwait(c->db, &c->wait);
    c->waiting = false;
    deferred_loop_timer_stop(c->idle);
}

static void close_cancel(deferred_t *d, void *arg)
{
    (void)d;
    close_detach(arg); /* the core fails d with ECANCELED; db stays open */
}

static void close_destroy(void *arg)
{
    struct sq_close *c = arg;

    close_detach(c);
    deferred_loop_timer_free(c->idle);
    deferred_free(c);
}

deferred_t *deferred_sqlite_close_at(const char *file, int line, deferred_loop_t *loop,
                                     sqlite3 *db)
{
    struct sq_close *c;

    if (!loop || !db) {
        errno = EINVAL;
        return NULL;
    }
    c = deferred_malloc(sizeof(*c));
    if (!c)
        return NULL; /* errno ENOMEM */
    memset(c, 0, sizeof(*c));
    c->wait.run = close_kick;
    c->idle = deferred_loop_timer_new(loop, close_idle, c);
    if (!c->idle) {
        deferred_free(c);
        errno = ENOMEM;
        return NULL;
    }
    c->db = db;
    c->file = file;
    c->line = line;
    c->d = deferred_new_at(file, line, close_cancel, c, close_destroy);
    if (!c->d)
        return NULL; /* c destroyed; errno ENOMEM */
    if (deferred__sqw_wait(db, &c->wait))
        c->waiting = true;
    else
        deferred_loop_timer_start(c->idle, 0.0);
    return c->d;
}

deferred_t *(deferred_sqlite_close)(deferred_loop_t *loop, sqlite3 *db)
{
    return deferred_sqlite_close_at(NULL, 0, loop, db);
}
