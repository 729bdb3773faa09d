/*
 * deferred/sqlite.h: SQLite query results as producers of rows
 * (libdeferred-sqlite, pkg-config module deferred-sqlite).
 *
 * A query is a producer stage for deferred_process (see process.h): it
 * emits one deferred_row_t value (see row.h) per result row and finishes
 * at the end of the result.  Its statement runs on the worker thread of
 * its connection (one thread per sqlite3 handle, started by the first
 * query made on the handle and stopped once the last one is freed), so a
 * slow sqlite3_step() (an aggregate, a sort, a busy wait) never blocks the
 * loop.  The worker prepares the statement and steps it a batch of rows at
 * a time; the batches reach the loop you give (any adapter of
 * deferred/loop.h: libev's deferred_ev_loop_new(), libuv's, GLib's or the
 * clock) through its mailbox (deferred_loop_post()) and
 * their rows are emitted on the loop thread, at most one batch per loop
 * iteration; the producer never emits before its resume returns.
 *
 *  - Parameters are bound (sqlite3_bind_*), never pasted into the SQL.
 *    They are copied when the query is made.
 *  - Pause stops the worker after its current batch; resume goes on.  At
 *    most two batches of rows (2 x the batch, DEFERRED_SQLITE_BATCH
 *    unless set) are stepped ahead of the consumer: one being emitted, one
 *    being stepped (a batch goes back to the worker as soon as its rows
 *    were emitted, so a worker faster than the consumer never waits for
 *    the loop thread).
 *  - Cancel fails the stream with ECANCELED at once and stops the
 *    statement: finalized there and then when the worker is idle,
 *    interrupted (sqlite3_interrupt()) when the worker is inside its step,
 *    finalized by the worker when it is busy with another statement.
 *    sqlite3_interrupt() acts on the whole connection: another query that
 *    is mid-result on the same handle may fail with SQLITE_INTERRUPT too.
 *    The query's memory is freed once the worker gave it back: after a
 *    cancel or a free, run the loop (it keeps running until the worker is
 *    done: deferred_loop_alive()) before destroying it.
 *  - Errors (bad SQL, a wrong number of parameters, SQLITE_BUSY,
 *    SQLITE_LOCKED, any failing step) fail the stream with a failure of
 *    domain DEFERRED_DOMAIN_SQLITE whose code is SQLite's extended result
 *    code and whose message is sqlite3_errmsg()'s; its context names the
 *    query once (stage "sqlite query", item: the SQL, or "row N of <sql>"
 *    once rows were stepped).  A wrong parameter count is SQLITE_RANGE.
 *    The producer describes its current item as "row N of <sql>": the
 *    last row it emitted, or the row a failing step was reaching (a step
 *    that fails after rows 1 and 2 names row 3).
 *  - Busy databases: the library does not retry.  A busy timeout set with
 *    sqlite3_busy_timeout() applies; SQLite waits on the worker, the loop
 *    goes on.  Without one, a busy or locked database fails at once.
 *
 * deferred_sqlite_query_one(), deferred_sqlite_query_all() and
 * deferred_sqlite_exec() run such a query in a process of their own and
 * give a plain deferred: its first row, every row as an array, or the
 * change count and last insert rowid of a statement run for its effect.
 * deferred_sqlite_close() closes a handle once the library is done with
 * it.
 *
 * Threads.  SQLite must be thread-safe (sqlite3_threadsafe() not 0: a
 * query is ENOTSUP otherwise).  The connection is borrowed: it must stay
 * open until every stage made on it was freed and its worker is done
 * (deferred_sqlite_close() waits for that; sqlite3_close() right after
 * the last stage's free can find a statement still being finalized and
 * return SQLITE_BUSY).  While queries are alive on a handle, do not use
 * the handle from the loop thread or another one, except through this
 * library: the worker uses it.  SQL functions (sqlite3_create_function())
 * run on the worker thread and must not call into libdeferred.  Use a
 * handle's queries from one loop, on its thread.
 */
#ifndef DEFERRED_SQLITE_H
#define DEFERRED_SQLITE_H

#include <sqlite3.h>

#include "loop.h"
#include "row.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Rows a query steps per batch unless told otherwise. */
#define DEFERRED_SQLITE_BATCH 256

/*
 * A producer stage emitting the rows of sql run on db with params[0..n-1]
 * bound to its parameters in order.  The statement is prepared by the
 * worker when the process first resumes the stage (nothing runs for a
 * stage that never runs); a preparation or binding error is not returned
 * but becomes the stream's failure.  SQL that is only a comment or white
 * space has no row (and takes no parameter); SQL with more than one
 * statement is an EINVAL failure (library domain).  A text or blob parameter
 * with NULL data and a non-zero length, or of an unknown type, is an
 * EINVAL failure (library domain) naming the parameter.  loop and db are
 * borrowed; sql and params are copied.  Add the stage to a process (which
 * takes it) or free it with deferred_stage_free().  NULL with errno
 * EINVAL when loop, db or sql is NULL, or params is NULL with n > 0;
 * ENOTSUP when SQLite is built single-threaded; EAGAIN when the worker
 * thread of db cannot be started; ENOMEM on allocation failure
 * (deferred/common.h).
 *
 * A macro: the failures the query makes record the file and line of this
 * call (deferred_failure_file()).  The function of the same name (taken
 * with its name in parentheses, or through a pointer) records none.
 */
#define deferred_sqlite_query(...) \
    deferred_sqlite_query_at(__FILE__, __LINE__, __VA_ARGS__)
DEFERRED_EXPORT deferred_stage_t *deferred_sqlite_query_at(const char *file, int line,
                                                           deferred_loop_t *loop,
                                                           sqlite3 *db, const char *sql,
                                                           const deferred_param_t *params,
                                                           size_t n);
DEFERRED_EXPORT deferred_stage_t *(deferred_sqlite_query)(deferred_loop_t *loop, sqlite3 *db,
                                                          const char *sql,
                                                          const deferred_param_t *params,
                                                          size_t n);

/*
 * deferred_sqlite_query() with its parameters as one deferred_params_t
 * (DEFERRED_PARAMS(...), in C or C++):
 *   deferred_sqlite_query_p(loop, db, "SELECT ?",
 *                           DEFERRED_PARAMS(deferred_param_int(7)));
 * Same answers as deferred_sqlite_query() (params.items and params.n are
 * its params and n).  A macro recording the caller's file and line, over
 * the inline function deferred_sqlite_query_p_at().
 */
#define deferred_sqlite_query_p(loop, db, sql, params) \
    deferred_sqlite_query_p_at(__FILE__, __LINE__, (loop), (db), (sql), (params))
static inline deferred_stage_t *deferred_sqlite_query_p_at(const char *file, int line,
                                                           deferred_loop_t *loop,
                                                           sqlite3 *db, const char *sql,
                                                           deferred_params_t params)
{
    return deferred_sqlite_query_at(file, line, loop, db, sql, params.items, params.n);
}

/*
 * Set how many rows st (a deferred_sqlite_query() stage) steps per batch
 * (at least 1): the worker steps at most that many before it hands them
 * to the loop thread, and at most two batches are stepped ahead of the
 * consumer.  It applies to the batches asked for after the call.  Returns
 * 0 or -EINVAL.
 */
DEFERRED_EXPORT int deferred_sqlite_set_batch(deferred_stage_t *st, unsigned rows);

/*
 * Run a query for one row or none, as a plain deferred (a new reference):
 * it fires with the first row (a deferred_value_row() value; the rest of
 * the result is not read) or with the empty value when there is no row,
 * or fails as a query stream would.  Cancelling it cancels the query.  It
 * never fires before this returns.  NULL with errno as
 * deferred_sqlite_query() gives it (EINVAL for bad arguments, ENOMEM).
 */
#define deferred_sqlite_query_one(...) \
    deferred_sqlite_query_one_at(__FILE__, __LINE__, __VA_ARGS__)
DEFERRED_EXPORT deferred_t *deferred_sqlite_query_one_at(const char *file, int line,
                                                         deferred_loop_t *loop, sqlite3 *db,
                                                         const char *sql,
                                                         const deferred_param_t *params,
                                                         size_t n);
DEFERRED_EXPORT deferred_t *(deferred_sqlite_query_one)(deferred_loop_t *loop, sqlite3 *db,
                                                        const char *sql,
                                                        const deferred_param_t *params,
                                                        size_t n);

/*
 * deferred_sqlite_query_one() with its parameters as one
 * deferred_params_t (DEFERRED_PARAMS(...)); same answers.  A macro over
 * the inline function deferred_sqlite_query_one_p_at().
 */
#define deferred_sqlite_query_one_p(loop, db, sql, params) \
    deferred_sqlite_query_one_p_at(__FILE__, __LINE__, (loop), (db), (sql), (params))
static inline deferred_t *deferred_sqlite_query_one_p_at(const char *file, int line,
                                                         deferred_loop_t *loop, sqlite3 *db,
                                                         const char *sql,
                                                         deferred_params_t params)
{
    return deferred_sqlite_query_one_at(file, line, loop, db, sql, params.items, params.n);
}

/*
 * Run a query for every row, as a plain deferred (a new reference): it
 * fires with a deferred_array_t value (deferred_value_get_array()) of
 * the rows in order (deferred_value_row() values; an empty array when
 * there is none), or fails as a query stream would.  It holds every row
 * in memory: for a large result, run deferred_sqlite_query() in a
 * process.  Cancelling it cancels the query.  It never fires before this
 * returns.  NULL with errno as deferred_sqlite_query() gives it (EINVAL
 * for bad arguments, ENOMEM).  A macro recording the caller's file and
 * line; the function of the same name records none.
 */
#define deferred_sqlite_query_all(...) \
    deferred_sqlite_query_all_at(__FILE__, __LINE__, __VA_ARGS__)
DEFERRED_EXPORT deferred_t *deferred_sqlite_query_all_at(const char *file, int line,
                                                         deferred_loop_t *loop, sqlite3 *db,
                                                         const char *sql,
                                                         const deferred_param_t *params,
                                                         size_t n);
DEFERRED_EXPORT deferred_t *(deferred_sqlite_query_all)(deferred_loop_t *loop, sqlite3 *db,
                                                        const char *sql,
                                                        const deferred_param_t *params,
                                                        size_t n);

/*
 * Run one statement for its effect (INSERT, UPDATE, DELETE, DDL, BEGIN,
 * COMMIT...), as a plain deferred (a new reference): it fires, once the
 * statement is done, with a row (a deferred_value_row() value) of two
 * integer columns, "changes" (sqlite3_changes64() of db: the rows the
 * statement inserted, updated or deleted; for a statement that changes
 * none, what SQLite reports, see its documentation) and
 * "last_insert_rowid" (sqlite3_last_insert_rowid() of db), both read as
 * the statement ends.  Rows the statement returns (RETURNING) are stepped
 * and dropped.  SQL that is only a comment or white space gives the
 * counts without running anything.  It fails as a query stream would.
 * Statements on one connection run in the order they were made when
 * each is made after the one before has fired (a transaction: exec
 * "BEGIN", then the statements, then "COMMIT", each from the callback of
 * the one before).  Cancelling it cancels the statement.  It never fires
 * before this returns.  NULL with errno as deferred_sqlite_query() gives
 * it (EINVAL for bad arguments, ENOMEM).  A macro recording the caller's
 * file and line; the function of the same name records none.
 */
#define deferred_sqlite_exec(...) deferred_sqlite_exec_at(__FILE__, __LINE__, __VA_ARGS__)
DEFERRED_EXPORT deferred_t *deferred_sqlite_exec_at(const char *file, int line,
                                                    deferred_loop_t *loop, sqlite3 *db,
                                                    const char *sql,
                                                    const deferred_param_t *params,
                                                    size_t n);
DEFERRED_EXPORT deferred_t *(deferred_sqlite_exec)(deferred_loop_t *loop, sqlite3 *db,
                                                   const char *sql,
                                                   const deferred_param_t *params,
                                                   size_t n);

/*
 * Close db once the library is done with it, as a plain deferred (a new
 * reference): once every query stage made on db was freed and the worker
 * thread of db has finalized their statements and stopped (at once when
 * there is none), sqlite3_close(db) is called on the loop thread and the
 * deferred fires with the empty value; when sqlite3_close() refuses (a
 * statement or backup the caller made is still open: SQLITE_BUSY) it
 * fails with that code (domain DEFERRED_DOMAIN_SQLITE) and db stays open.
 * Queries made on db while it waits are waited for too.  Waiting keeps
 * no loop alive by itself (the stages do, while their statements run).
 * Cancelling it stops the wait and leaves db open (ECANCELED).  It never
 * fires before this returns.  Call it on the loop thread of db's queries.
 * NULL with errno EINVAL (NULL loop or db) or ENOMEM.  A macro recording
 * the caller's file and line; the function of the same name records none.
 */
#define deferred_sqlite_close(...) deferred_sqlite_close_at(__FILE__, __LINE__, __VA_ARGS__)
DEFERRED_EXPORT deferred_t *deferred_sqlite_close_at(const char *file, int line,
                                                     deferred_loop_t *loop, sqlite3 *db);
DEFERRED_EXPORT deferred_t *(deferred_sqlite_close)(deferred_loop_t *loop, sqlite3 *db);

/*
 * deferred_sqlite_query_all() and deferred_sqlite_exec() with their
 * parameters as one deferred_params_t (DEFERRED_PARAMS(...)); same
 * answers.  Macros over the inline functions ..._p_at().
 */
#define deferred_sqlite_query_all_p(loop, db, sql, params) \
    deferred_sqlite_query_all_p_at(__FILE__, __LINE__, (loop), (db), (sql), (params))
static inline deferred_t *deferred_sqlite_query_all_p_at(const char *file, int line,
                                                         deferred_loop_t *loop, sqlite3 *db,
                                                         const char *sql,
                                                         deferred_params_t params)
{
    return deferred_sqlite_query_all_at(file, line, loop, db, sql, params.items, params.n);
}
#define deferred_sqlite_exec_p(loop, db, sql, params) \
    deferred_sqlite_exec_p_at(__FILE__, __LINE__, (loop), (db), (sql), (params))
static inline deferred_t *deferred_sqlite_exec_p_at(const char *file, int line,
                                                    deferred_loop_t *loop, sqlite3 *db,
                                                    const char *sql, deferred_params_t params)
{
    return deferred_sqlite_exec_at(file, line, loop, db, sql, params.items, params.n);
}

#ifdef __cplusplus
}
#endif

#endif /* DEFERRED_SQLITE_H */
