/*
 * sqlite-worker.c: the worker thread of a connection (libdeferred-sqlite).
 *
 * One worker per sqlite3 handle, found through a registry keyed by the
 * handle and shared by reference by every query alive on it; the first
 * query made on a handle starts the thread, freeing the last one stops
 * and joins it (it is idle by then).  The worker takes batches off a FIFO
 * queue (so a connection's statements are worked on in the order they
 * asked) and for each one runs a job for its query: prepare and bind on
 * the first, copy the column names, then step up to the batch's limit of
 * rows, each copied into the batch's buffer; an exec steps to the end.
 * Then it posts the batch to the query's loop through its mailbox.
 *
 * Never allocating here is the rule (sqlite-private.h): a row that does
 * not fit the room left ends the batch early, stays on the statement
 * (row_pending), and starts the next batch; one that does not fit an
 * empty buffer asks for a larger one (need), which the loop thread
 * allocates before it queues the batch again.
 *
 * The encoding of a row in a buffer: a size_t, the bytes its text and
 * blob columns need in a deferred_row_t (each length + 1), then per
 * column one byte of SQLite type followed by an int64_t (INTEGER), a
 * double (FLOAT) or a size_t length and that many bytes (TEXT, BLOB),
 * nothing for NULL.  Unaligned: read and written with memcpy().
 */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "sqlite-private.h"

/* ---- the registry ---------------------------------------------------------- */

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sqw *registry;

static void *sqw_main(void *arg);

struct sqw *deferred__sqw_get(sqlite3 *db)
{
    sigset_t all, old;
    struct sqw *w;
    int rc;

    pthread_mutex_lock(&registry_lock);
    for (w = registry; w; w = w->next)
        if (w->db == db)
            break;
    if (w) {
        w->refs++;
        pthread_mutex_unlock(&registry_lock);
        return w;
    }
    w = deferred_malloc(sizeof(*w));
    if (!w) {
        pthread_mutex_unlock(&registry_lock);
        errno = ENOMEM;
        return NULL;
    }
    memset(w, 0, sizeof(*w));
    w->db = db;
    w->refs = 1;
    if (pthread_mutex_init(&w->lock, NULL) != 0) {
        deferred_free(w);
        pthread_mutex_unlock(&registry_lock);
        errno = ENOMEM;
        return NULL;
    }
    if (pthread_cond_init(&w->cond, NULL) != 0) {
        pthread_mutex_destroy(&w->lock);
        deferred_free(w);
        pthread_mutex_unlock(&registry_lock);
        errno = ENOMEM;
        return NULL;
    }
    /* The worker takes no signal: they stay with the loop's thread. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&w->thread, NULL, sqw_main, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        pthread_cond_destroy(&w->cond);
        pthread_mutex_destroy(&w->lock);
        deferred_free(w);
        pthread_mutex_unlock(&registry_lock);
        errno = rc == EAGAIN ? EAGAIN : ENOMEM;
        return NULL;
    }
    w->next = registry;
    registry = w;
    pthread_mutex_unlock(&registry_lock);
    return w;
}

void deferred__sqw_put(struct sqw *w)
{
    struct sqw_waiter *waiters, *next;
    struct sqw **pp;

    pthread_mutex_lock(&registry_lock);
    if (--w->refs > 0) {
        pthread_mutex_unlock(&registry_lock);
        return;
    }
    for (pp = &registry; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    waiters = w->waiters;
    pthread_mutex_unlock(&registry_lock);
    /* No query is left, so no job: the worker waits on its condition and
     * the join returns at once. */
    pthread_mutex_lock(&w->lock);
    w->stop = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    deferred_free(w);
    for (; waiters; waiters = next) {
        next = waiters->next;
        waiters->next = NULL;
        waiters->run(waiters);
    }
}

bool deferred__sqw_wait(sqlite3 *db, struct sqw_waiter *wt)
{
    struct sqw *w;

    pthread_mutex_lock(&registry_lock);
    for (w = registry; w; w = w->next)
        if (w->db == db)
            break;
    if (w) {
        wt->next = w->waiters;
        w->waiters = wt;
    }
    pthread_mutex_unlock(&registry_lock);
    return w != NULL;
}

void deferred__sqw_unwait(sqlite3 *db, struct sqw_waiter *wt)
{
    struct sqw_waiter **pp;
    struct sqw *w;

    pthread_mutex_lock(&registry_lock);
    for (w = registry; w; w = w->next)
        if (w->db == db)
            break;
    for (pp = w ? &w->waiters : NULL; pp && *pp; pp = &(*pp)->next)
        if (*pp == wt) {
            *pp = wt->next;
            break;
        }
    pthread_mutex_unlock(&registry_lock);
}

bool deferred__sqw_exists(sqlite3 *db)
{
    struct sqw *w;

    pthread_mutex_lock(&registry_lock);
    for (w = registry; w; w = w->next)
        if (w->db == db)
            break;
    pthread_mutex_unlock(&registry_lock);
    return w != NULL;
}

void deferred__sqw_queue(struct sqw *w, struct sqb *b)
{
    pthread_mutex_lock(&w->lock);
    b->job_next = NULL;
    b->queued = true;
    if (w->tail)
        w->tail->job_next = b;
    else
        w->head = b;
    w->tail = b;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

void deferred__sq_finalize_locked(struct sq *q)
{
    if (q->stmt) {
        sqlite3_finalize(q->stmt);
        q->stmt = NULL;
    }
}

/* ---- a job ------------------------------------------------------------------- */

static void job_end(struct sq *q, struct sqb *b, enum sq_end end)
{
    if (q->stmt) {
        sqlite3_finalize(q->stmt);
        q->stmt = NULL;
    }
    b->end = end;
    b->final = true;
}

static void job_fail(struct sq *q, struct sqb *b, enum sq_end end, int code,
                     const char *fmt, ...) DEFERRED_PRINTF(5, 6);
static void job_fail(struct sq *q, struct sqb *b, enum sq_end end, int code,
                     const char *fmt, ...)
{
    va_list ap;

    b->code = code;
    va_start(ap, fmt);
    vsnprintf(b->text, sizeof(b->text), fmt, ap);
    va_end(ap);
    job_end(q, b, end);
}

/* The connection's error, read on the worker as the call failed. */
static void job_db_fail(struct sq *q, struct sqb *b)
{
    job_fail(q, b, SQ_SQLFAIL, sqlite3_extended_errcode(q->db), "%s",
             sqlite3_errmsg(q->db));
}

/* Bind the query's copied parameters (SQLITE_STATIC: they live in q
 * until it is freed, after the statement).  False when the batch ended. */
static bool job_bind(struct sq *q, struct sqb *b)
{
    int want = sqlite3_bind_parameter_count(q->stmt);
    size_t i;

    if ((size_t)want != q->nparams) {
        job_fail(q, b, SQ_SQLFAIL, SQLITE_RANGE, "the query takes %d parameter%s, %zu given",
                 want, want == 1 ? "" : "s", q->nparams);
        return false;
    }
    for (i = 0; i < q->nparams; i++) {
        const deferred_param_t *p = &q->params[i];
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
            rc = sqlite3_bind_text64(q->stmt, col, p->u.s.p ? p->u.s.p : "", p->u.s.len,
                                     SQLITE_STATIC, SQLITE_UTF8);
            break;
        case DEFERRED_ROW_BLOB:
            rc = sqlite3_bind_blob64(q->stmt, col, p->u.s.p ? p->u.s.p : "", p->u.s.len,
                                     SQLITE_STATIC);
            break;
        default:
            rc = SQLITE_MISUSE;
            break;
        }
        if (rc != SQLITE_OK) {
            job_fail(q, b, SQ_SQLFAIL, rc, "binding parameter %zu: %s", i + 1,
                     sqlite3_errstr(rc));
            return false;
        }
    }
    return true;
}

/* Prepare and bind.  False when the batch ended (a failure, or SQL
 * without a statement). */
static bool job_prepare(struct sq *q, struct sqb *b)
{
    const char *tail = NULL;
    sqlite3_stmt *more = NULL;

    q->prepared = true;
    if (sqlite3_prepare_v2(q->db, q->sql, -1, &q->stmt, &tail) != SQLITE_OK) {
        job_db_fail(q, b);
        return false;
    }
    /* One statement: a second one would be silently ignored.  What
     * follows the first may only be comments and white space. */
    if (q->stmt && tail && *tail &&
        (sqlite3_prepare_v2(q->db, tail, -1, &more, NULL) != SQLITE_OK || more)) {
        sqlite3_finalize(more);
        job_fail(q, b, SQ_LIBFAIL, EINVAL,
                 "the SQL holds more than one statement (a query runs one)");
        return false;
    }
    if (!q->stmt) {
        /* Only a comment or white space: an empty result (it takes no
         * parameter). */
        if (q->nparams) {
            job_fail(q, b, SQ_SQLFAIL, SQLITE_RANGE,
                     "the query has no statement and takes no parameter, %zu given",
                     q->nparams);
            return false;
        }
        b->empty = true;
        b->changes = (int64_t)sqlite3_changes(q->db);
        b->rowid = (int64_t)sqlite3_last_insert_rowid(q->db);
        job_end(q, b, SQ_DONE);
        return false;
    }
    q->wcols = sqlite3_column_count(q->stmt);
    return job_bind(q, b);
}

/* Copy the column names into b (ncols NUL-terminated strings).  False
 * when they do not fit (b->need says the room they take). */
static bool job_names(struct sq *q, struct sqb *b)
{
    int n = sqlite3_column_count(q->stmt), i;
    size_t at = b->len;

    for (i = 0; i < n; i++) {
        const char *name = sqlite3_column_name(q->stmt, i);
        size_t len = name ? strlen(name) + 1 : 1;

        if (at + len <= b->cap) {
            if (name)
                memcpy(b->buf + at, name, len);
            else
                b->buf[at] = '\0';
        }
        at += len;
    }
    if (at > b->cap) {
        b->need = at;
        return false;
    }
    b->len = at;
    b->ncols = n;
    b->has_names = true;
    return true;
}

/* Append v's bytes at *at when they fit; *at grows either way. */
static inline void put(struct sqb *b, size_t *at, const void *v, size_t n)
{
    if (*at + n <= b->cap && *at + n >= *at)
        memcpy(b->buf + *at, v, n);
    *at += n;
}

/* Copy the statement's current row into b.  1 when it fit, 0 when it did
 * not (b->len unchanged; *size the room it takes), -1 when SQLite ran out
 * of memory reading a column. */
static int job_row(struct sq *q, struct sqb *b, int ncols, size_t *size)
{
    size_t at = b->len + sizeof(size_t), bytes = 0;
    int i;

    /* One sqlite3_column_value() per column: each sqlite3_column_*() call
     * takes the connection's mutex, the sqlite3_value_*() calls on the
     * value it returns do not. */
    for (i = 0; i < ncols; i++) {
        sqlite3_value *v = sqlite3_column_value(q->stmt, i);
        unsigned char t = (unsigned char)sqlite3_value_type(v);

        put(b, &at, &t, 1);
        switch (t) {
        case SQLITE_INTEGER: {
            int64_t x = sqlite3_value_int64(v);

            put(b, &at, &x, sizeof(x));
            break;
        }
        case SQLITE_FLOAT: {
            double x = sqlite3_value_double(v);

            put(b, &at, &x, sizeof(x));
            break;
        }
        case SQLITE_TEXT:
        case SQLITE_BLOB: {
            const void *p = t == SQLITE_TEXT ? (const void *)sqlite3_value_text(v)
                                             : sqlite3_value_blob(v);
            int len = sqlite3_value_bytes(v);
            size_t n = len > 0 ? (size_t)len : 0;

            /* A NULL pointer is an out-of-memory in SQLite (or an empty
             * blob). */
            if ((!p && len) || len < 0 || n >= SIZE_MAX / 4 - bytes)
                return -1;
            bytes += n + 1;
            put(b, &at, &n, sizeof(n));
            if (n)
                put(b, &at, p, n);
            break;
        }
        default:
            break;
        }
    }
    *size = at - b->len;
    if (at > b->cap)
        return 0;
    memcpy(b->buf + b->len, &bytes, sizeof(bytes));
    b->len = at;
    return 1;
}

/* The statement's end: SQLITE_DONE read with the counts of an exec. */
static void job_done(struct sq *q, struct sqb *b)
{
#if SQLITE_VERSION_NUMBER >= 3037000
    b->changes = (int64_t)sqlite3_changes64(q->db);
#else
    b->changes = (int64_t)sqlite3_changes(q->db);
#endif
    b->rowid = (int64_t)sqlite3_last_insert_rowid(q->db);
    job_end(q, b, SQ_DONE);
}

static bool job_cancelled(struct sq *q)
{
    return __atomic_load_n(&q->cancel, __ATOMIC_ACQUIRE) != 0;
}

/* One job: b filled for q (worker thread). */
static void job_work(struct sq *q, struct sqb *b);

/* The connection's mutex (serialized mode; NULL otherwise, a no-op) is
 * held for the whole job: each sqlite3_step() and sqlite3_column_value()
 * then takes it again recursively, which costs less than taking it
 * afresh (about a tenth of the worker's instructions per row).  Nothing
 * else waits for it: the loop thread touches the connection only while
 * the worker is idle, and sqlite3_interrupt() does not take it. */
static void job_run(struct sq *q, struct sqb *b)
{
    sqlite3_mutex *m = sqlite3_db_mutex(q->db);

    sqlite3_mutex_enter(m);
    job_work(q, b);
    sqlite3_mutex_leave(m);
}

static void job_work(struct sq *q, struct sqb *b)
{
    unsigned n = 0;
    int ncols;

    b->len = b->pos = b->need = 0;
    b->nrows = b->emitted = 0;
    b->has_names = b->empty = b->step_error = false;
    b->end = SQ_MORE;
    if (q->prepared && !q->stmt) {
        /* Queued behind the batch that ended the statement: the loop
         * thread drops it. */
        job_end(q, b, SQ_SPENT);
        return;
    }
    if (job_cancelled(q)) {
        job_end(q, b, SQ_CANCELLED);
        return;
    }
    if (!q->prepared && !job_prepare(q, b))
        return;
    if (!q->names_sent && !q->exec) {
        if (!job_names(q, b))
            return;
        q->names_sent = true;
    }
    ncols = q->wcols;
    while (q->exec || n < b->limit) {
        int rc = SQLITE_ROW, fit;
        size_t size;

        if (!q->row_pending) {
            rc = sqlite3_step(q->stmt);
            if (job_cancelled(q)) {
                /* Interrupted, or cancelled between two steps. */
                job_end(q, b, SQ_CANCELLED);
                return;
            }
        }
        if (rc == SQLITE_ROW && q->exec)
            continue; /* an exec's rows (RETURNING) are stepped, not copied */
        if (rc == SQLITE_DONE) {
            job_done(q, b);
            return;
        }
        if (rc != SQLITE_ROW) {
            b->step_error = true;
            job_db_fail(q, b);
            return;
        }
        fit = job_row(q, b, ncols, &size);
        if (fit < 0) {
            b->step_error = true;
            job_fail(q, b, SQ_SQLFAIL, SQLITE_NOMEM, "out of memory reading a column");
            return;
        }
        if (fit == 0) {
            /* The row waits on the statement for the next batch. */
            q->row_pending = true;
            if (b->nrows == 0 && !b->has_names)
                b->need = size;
            return;
        }
        q->row_pending = false;
        b->nrows++;
        n++;
    }
}

/* ---- the thread --------------------------------------------------------------- */

static void *sqw_main(void *arg)
{
    struct sqw *w = arg;

    pthread_mutex_lock(&w->lock);
    for (;;) {
        deferred_loop_t *dl;
        struct sqb *b;
        struct sq *q;

        while (!w->head && !w->stop)
            pthread_cond_wait(&w->cond, &w->lock);
        if (!w->head)
            break;
        b = w->head;
        w->head = b->job_next;
        if (!w->head)
            w->tail = NULL;
        b->queued = false;
        q = b->q;
        dl = q->dl;
        w->current = q;
        pthread_mutex_unlock(&w->lock);
        job_run(q, b);
        pthread_mutex_lock(&w->lock);
        w->current = NULL;
        pthread_mutex_unlock(&w->lock);
        /* From here the loop thread may free q and b. */
        deferred_loop_post(dl, &b->msg);
        pthread_mutex_lock(&w->lock);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}
