/*
 * deferred/pg.h: PostgreSQL connections and query results as producers
 * of rows, on any loop of deferred/loop.h (libdeferred-pg, pkg-config
 * module deferred-pg).
 *
 * Connecting is non-blocking (PQconnectStart/PQconnectPoll driven by the
 * loop's fd watcher) and gives a deferred connection.  A query
 * (PQsendQueryParams, parameters bound, never pasted) is a producer stage
 * for deferred_process (see process.h) that emits one deferred_row_t
 * value (see row.h) per result row in single-row mode
 * (PQsetSingleRowMode): rows stream as they arrive.
 *
 *  - Pause stops reading the socket (the read watcher stops), so the
 *    kernel buffers fill and backpressure reaches the server; resume
 *    reads again.  Rows libpq already buffered are emitted after resume,
 *    from a loop watcher, never inside resume.
 *  - Cancel sends a cancel request (PQcancel(), which blocks briefly while
 *    it connects to the server) and drains the rest of the result in the
 *    background; the connection is then free for the next query.
 *  - Several queries on one connection run one after the other, in the
 *    order they were made.  A stream holds its connection until it ends:
 *    a per-row query made on the same connection as the stream it serves
 *    waits behind it, so give such queries a second connection.
 *  - Pipeline mode (deferred_pg_set_pipeline(); off by default) sends a
 *    query at once, while the earlier ones still run, instead of one round
 *    trip after another; see there for what changes.
 *  - Failures have domain DEFERRED_DOMAIN_POSTGRES.  A server error's code
 *    is deferred_pg_sqlstate() of its SQLSTATE; the message is the
 *    server's (with its detail and hint), then the SQLSTATE and its
 *    condition name: "division by zero (22012 division_by_zero)".  A lost
 *    connection is ECONNRESET; when the server said why (a shutdown's
 *    57P01), the server's error is its cause and its message is shown.  A
 *    query on a closed connection is ENOTCONN.  A connect the server
 *    refuses itself (a missing database, 3D000) has the server's SQLSTATE
 *    as its code; one that reaches no server is ECONNREFUSED; a malformed
 *    conninfo is EINVAL (library domain, libpq's message).  The query is
 *    named once, by the producer's frame (stage "postgres query"): the SQL,
 *    or "row N of <sql>" once rows came, N being the row the result failed
 *    at (a server error after rows 1 to 3 names row 4) or, for a failure
 *    downstream, the last row emitted.  Failures record the file and line
 *    of the call that made the query or the connection.
 *  - Parameters are sent as text (integers and doubles formatted exactly),
 *    blobs in binary.  A wrong parameter count is the server's error; a
 *    text or blob with NULL data and a non-zero length, one longer than
 *    libpq takes (INT_MAX - 1), or an unknown type is an EINVAL failure
 *    (library domain) naming the parameter.
 *
 * A connection belongs to the thread of its loop.
 */
#ifndef DEFERRED_PG_H
#define DEFERRED_PG_H

#include <libpq-fe.h>

#include "loop.h"
#include "row.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct deferred_pg deferred_pg_t;

/*
 * Connect to the server conninfo names (a libpq connection string or
 * URI) without blocking, on loop (borrowed; it must outlive the
 * connection).  Returns a new reference to a deferred that fires with a
 * connection value (deferred_value_get_pg(); the value owns one reference,
 * released with deferred_pg_unref()), or fails: ECONNREFUSED (domain
 * postgres, libpq's message) when no server answers, the server's SQLSTATE
 * code when it refuses (deferred_pg_sqlstate("3D000") for a missing
 * database).  Cancelling it (or dropping its last reference) abandons the
 * attempt.  NULL with errno EINVAL for NULL arguments or a malformed
 * conninfo (found before it returns: PQconninfoParse();
 * deferred_pg_conninfo_check() gives libpq's reason), ENOMEM on
 * allocation failure (deferred/common.h).  As with libpq's
 * own PQconnectStart(), a host name is resolved before it returns
 * (blocking); give hostaddr= or a socket directory to avoid that.
 *
 * deferred_pg_connect(), deferred_pg_query() and deferred_pg_query_one()
 * are macros recording the caller's file and line in the failures they
 * make; the functions of the same names (in parentheses, or through a
 * pointer) record none.
 */
#define deferred_pg_connect(...) deferred_pg_connect_at(__FILE__, __LINE__, __VA_ARGS__)

/*
 * Check conninfo as deferred_pg_connect() does before it connects (libpq's
 * PQconninfoParse()), without connecting: 0 when it is well formed;
 * -EINVAL when conninfo is NULL or malformed, with libpq's reason (for
 * example 'missing "=" after "port" in connection info string') written
 * to buf, cut to size bytes with its terminating NUL, when buf is not NULL
 * and size > 0; -ENOMEM when libpq ran out of memory.  Runs no callback.
 */
DEFERRED_EXPORT int deferred_pg_conninfo_check(const char *conninfo, char *buf, size_t size);
DEFERRED_EXPORT deferred_t *deferred_pg_connect_at(const char *file, int line,
                                                   deferred_loop_t *loop,
                                                   const char *conninfo);
DEFERRED_EXPORT deferred_t *(deferred_pg_connect)(deferred_loop_t *loop, const char *conninfo);

/* The connection held by v (borrowed), or NULL when v is not one. */
DEFERRED_EXPORT deferred_pg_t *deferred_value_get_pg(deferred_value_t v);

/* References.  The last unref closes the connection (queries hold a
 * reference until they end).  unref(NULL) is a no-op. */
DEFERRED_EXPORT deferred_pg_t *deferred_pg_ref(deferred_pg_t *c);
DEFERRED_EXPORT void deferred_pg_unref(deferred_pg_t *c);

/* Close now: the running query and the queued ones fail with ENOTCONN,
 * later queries too.  Idempotent; NULL is a no-op. */
DEFERRED_EXPORT void deferred_pg_close(deferred_pg_t *c);

/* True while the connection is usable (not closed, not lost). */
DEFERRED_EXPORT bool deferred_pg_is_open(const deferred_pg_t *c);

/* The libpq connection (borrowed; NULL once closed).  Do not run queries
 * on it yourself while the library's queries run. */
DEFERRED_EXPORT PGconn *deferred_pg_conn(const deferred_pg_t *c);

/*
 * A producer stage emitting the rows of sql with params[0..n-1] for $1..$n.
 * It queues the query on c now (it is sent when the queries before it
 * ended, or at once in pipeline mode: deferred_pg_set_pipeline()) and
 * takes a reference on c.  sql and params are copied.  Errors
 * (a closed connection among them) become the stream's failure when the
 * process runs.  Add the stage to a process or free it with
 * deferred_stage_free() (a sent query is then cancelled).  A text or
 * blob parameter with NULL data and a non-zero length, like an SQL error,
 * is an error of the query: the stream's failure (EINVAL, library domain,
 * naming the parameter).  NULL with errno EINVAL for NULL c or sql, NULL
 * params with n > 0, or n above 65535 (the protocol's limit); ENOMEM on
 * allocation failure.
 */
#define deferred_pg_query(...) deferred_pg_query_at(__FILE__, __LINE__, __VA_ARGS__)
DEFERRED_EXPORT deferred_stage_t *deferred_pg_query_at(const char *file, int line,
                                                       deferred_pg_t *c, const char *sql,
                                                       const deferred_param_t *params,
                                                       size_t n);
DEFERRED_EXPORT deferred_stage_t *(deferred_pg_query)(deferred_pg_t *c, const char *sql,
                                                      const deferred_param_t *params,
                                                      size_t n);

/*
 * deferred_pg_query() with its parameters as one deferred_params_t
 * (DEFERRED_PARAMS(...), in C or C++):
 *   deferred_pg_query_p(c, "SELECT $1::int",
 *                       DEFERRED_PARAMS(deferred_param_int(7)));
 * Same answers as deferred_pg_query() (params.items and params.n are its
 * params and n).  A macro recording the caller's file and line, over the
 * inline function deferred_pg_query_p_at().
 */
#define deferred_pg_query_p(c, sql, params) \
    deferred_pg_query_p_at(__FILE__, __LINE__, (c), (sql), (params))
static inline deferred_stage_t *deferred_pg_query_p_at(const char *file, int line,
                                                       deferred_pg_t *c, const char *sql,
                                                       deferred_params_t params)
{
    return deferred_pg_query_at(file, line, c, sql, params.items, params.n);
}

/*
 * One row or none, as a plain deferred (a new reference): the first row
 * (the rest of the result is drained), the empty value when there is no
 * row, or the failure.  Never fires before it returns.  NULL with errno
 * as deferred_pg_query() gives it (EINVAL for bad arguments, ENOMEM).
 */
#define deferred_pg_query_one(...) deferred_pg_query_one_at(__FILE__, __LINE__, __VA_ARGS__)
DEFERRED_EXPORT deferred_t *deferred_pg_query_one_at(const char *file, int line,
                                                     deferred_pg_t *c, const char *sql,
                                                     const deferred_param_t *params,
                                                     size_t n);
DEFERRED_EXPORT deferred_t *(deferred_pg_query_one)(deferred_pg_t *c, const char *sql,
                                                    const deferred_param_t *params,
                                                    size_t n);

/*
 * deferred_pg_query_one() with its parameters as one deferred_params_t
 * (DEFERRED_PARAMS(...)); same answers.  A macro over the inline function
 * deferred_pg_query_one_p_at().
 */
#define deferred_pg_query_one_p(c, sql, params) \
    deferred_pg_query_one_p_at(__FILE__, __LINE__, (c), (sql), (params))
static inline deferred_t *deferred_pg_query_one_p_at(const char *file, int line,
                                                     deferred_pg_t *c, const char *sql,
                                                     deferred_params_t params)
{
    return deferred_pg_query_one_at(file, line, c, sql, params.items, params.n);
}

/*
 * Pipeline mode (libpq's PQenterPipelineMode()), on or off for c; off
 * when connected.  Off, a query is sent once the one before it ended (one
 * round trip per query).  On, each query is sent as soon as it is made,
 * while the earlier ones still run, up to 512 queries on the wire (later
 * ones wait queued).  What stays: each query is its own producer, in
 * single-row mode, its results delivered in the order the queries were
 * made; and, outside a batch (deferred_pg_batch_begin()), each query is
 * followed by a sync point, so each runs in its own implicit transaction
 * as when off, and a failing query fails only itself.  What changes:
 *  - Backpressure: results are read in order, so pausing the stream of
 *    the query being read stops reading the socket for every query
 *    behind it too (they wait, their results stay in the kernel's buffers
 *    and the server's); pausing a later one stops reading once its turn
 *    comes.  Memory stays bounded by the 512 queries on the wire.  (libpq
 *    itself reads the socket when a send of queries would block.)
 *  - Cancelling one query (its process, or freeing its stage) sends the
 *    server a cancel request only when no later query is on the wire (the
 *    server may be running a later one already, which the request would
 *    hit); otherwise the rest of its result is read and dropped.
 *  - A query the server cancelled or that failed inside a batch aborts the
 *    queries after it up to the batch's end (libpq's
 *    PGRES_PIPELINE_ABORTED): each fails with ECANCELED (domain
 *    postgres) and a message naming the query that failed, "not run: an
 *    earlier query of its pipeline batch failed ("SELECT 1/0": division
 *    by zero (22012 division_by_zero))".  Queries after the batch run.
 * Switching is allowed only while no query of c is queued or running.
 * Returns 0 (also when c is already so), -EINVAL for NULL c, -ENOTCONN
 * for a closed (or lost) connection, -EBUSY while queries are queued or
 * running or a batch is open, -ENOTSUP when the library was built with a
 * libpq older than 14 (no pipeline mode).  Runs no callback.
 */
DEFERRED_EXPORT int deferred_pg_set_pipeline(deferred_pg_t *c, bool on);

/* True when c is in pipeline mode; false for NULL. */
DEFERRED_EXPORT bool deferred_pg_is_pipelined(const deferred_pg_t *c);

/* How many of c's queries are on the wire: sent, their results not all
 * read yet (a cancelled one being drained counts).  Off pipeline mode 0 or
 * 1; on, up to 512.  0 for NULL. */
DEFERRED_EXPORT unsigned deferred_pg_in_flight(const deferred_pg_t *c);

/*
 * A batch, in pipeline mode: the queries made on c between
 * deferred_pg_batch_begin() and deferred_pg_batch_end() share one sync
 * point, after the last: they run in one implicit transaction (the server
 * commits them together at the sync, or none when one fails), and a
 * failing one aborts those after it in the batch (see
 * deferred_pg_set_pipeline()).  Their results still stream as they come
 * (the library asks the server to flush after each query).  Batches nest
 * (counted: the outermost end is the sync point).  A batch left open
 * keeps its transaction open.  begin returns 0, -EINVAL for NULL c or a
 * connection not in pipeline mode, -ENOTCONN for a closed one,
 * -EOVERFLOW past UINT_MAX levels.  end returns 0, -EINVAL for NULL c or
 * no open batch, -ECONNRESET when the sync could not be sent (the
 * connection is lost: its queries fail with that).  Neither runs a
 * callback.
 */
DEFERRED_EXPORT int deferred_pg_batch_begin(deferred_pg_t *c);
DEFERRED_EXPORT int deferred_pg_batch_end(deferred_pg_t *c);

/*
 * Cancel every query of c, queued or running, in either mode: each one's
 * stream fails with ECANCELED (library domain, "cancelled with every
 * query on the connection to ..."), told by the loop, never before this
 * returns (a query whose process has not run yet is told when it runs).
 * When queries were on the wire, a cancel request goes to the server
 * (PQcancel(), which blocks briefly), and in pipeline mode one more as
 * each of them comes to be read while no query made later is on the
 * wire (a request stops only what the server runs at that moment); their
 * remaining results are read and dropped.  That is best effort: a
 * request that reaches the server between two queries is ignored by it,
 * and that query then runs to its end (a long pg_sleep() holds the
 * connection that long), its result dropped.  The connection stays open
 * for later queries.  Returns the
 * number of queries cancelled, or -EINVAL for NULL c.
 */
DEFERRED_EXPORT int deferred_pg_cancel_all(deferred_pg_t *c);

/* The failure code of a five-character SQLSTATE ("42601"), for
 * deferred_failure_is(f, DEFERRED_DOMAIN_POSTGRES, code); 0 for a NULL or
 * malformed one.  Codes are positive and above 0x10000, apart from the
 * errno values the layer uses. */
DEFERRED_EXPORT int deferred_pg_sqlstate(const char *sqlstate);

/* PostgreSQL's condition name of a five-character SQLSTATE
 * ("division_by_zero" for "22012"; a static string), or NULL when it is
 * malformed or not among the common ones the library knows. */
DEFERRED_EXPORT const char *deferred_pg_condition_name(const char *sqlstate);

/*
 * The SQLSTATE of a PostgreSQL failure: of f or, first found, of one of
 * its causes (a lost connection's cause is what the server said), written
 * into buf as five characters and a NUL.  Returns buf, or NULL when no
 * failure of the chain has a code made by deferred_pg_sqlstate().
 */
DEFERRED_EXPORT const char *deferred_pg_failure_sqlstate(const deferred_failure_t *f,
                                                         char buf[6]);

#ifdef __cplusplus
}
#endif

#endif /* DEFERRED_PG_H */
