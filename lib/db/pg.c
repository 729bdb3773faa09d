/*
 * pg.c: PostgreSQL connections and query results as producers of rows, on
 * libev (libdeferred-pg).
 *
 * A connection (deferred_pg_t) owns the PGconn, one ev_io watcher on its
 * socket and a FIFO of queries.  The head of the FIFO is the query on the
 * wire: it is sent with PQsendQueryParams() in single-row mode as soon as
 * the one before it ended, and its rows are read from the socket while
 * its process wants them.  The watcher's events are recomputed from the
 * state after every step (pg_update_io()): read while the head is draining
 * or is started and not paused, write while libpq has output to flush.
 * Not reading is the backpressure: libpq stops pulling from the socket,
 * the kernel buffers fill, the server blocks in its send.
 *
 * The design decision to know: a query (struct pgq) is shared between its
 * stage and its connection, each holding a reference, because either may
 * go first.  A stage freed while its query is on the wire (a cancelled or
 * abandoned process) leaves the query to the connection, which sends the
 * cancel request and drains the rest of the result in the background
 * before it sends the next query; and a connection closed or lost while
 * queries wait leaves each query with its failure, delivered to its stage
 * from the query's own idle watcher.  Everything a stage is told (rows,
 * the end, failures) goes through pg_process() or that idle watcher,
 * never through resume, so the producer never emits before its resume
 * returns.  Callbacks into the process may close or drop the connection:
 * each entry point holds a reference on the connection (and the query)
 * while it works.
 *
 * Written against the public interfaces of process.h and row.h only;
 * allocation goes through deferred_malloc().
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>

#include "deferred/pg.h"

/* Type OIDs (server/catalog/pg_type_d.h, stable across versions). */
#define OID_BYTEA 17
#define OID_INT8 20
#define OID_INT2 21
#define OID_INT4 23
#define OID_OID 26
#define OID_FLOAT4 700
#define OID_FLOAT8 701

struct pgq;

struct pgconnect {
    deferred_pg_t *c; /* NULL once handed out or abandoned */
    deferred_t *d;    /* borrowed: this block lives as long as d */
    const char *file; /* the user's call that connects */
    int line;
};

struct deferred_pg {
    uint32_t refs;
    struct ev_loop *loop;
    PGconn *conn;            /* NULL once closed or lost */
    ev_io io;
    int io_fd;
    int io_events;
    struct pgq *head, *tail; /* the queue; head is on the wire when sent */
    struct pgconnect *connecting;
    char where[160];         /* "host:port/dbname", for messages */
};

struct pgq {
    uint32_t refs;           /* the stage's and the queue's */
    deferred_pg_t *c;        /* a reference */
    struct pgq *next;
    deferred_stage_t *self;  /* NULL once the stage is gone */
    char *sql;
    const char *file;        /* the user's call that made the query */
    int line;
    int nparams;
    const char **values;
    int *lengths;
    int *formats;
    deferred_row_shape_t *shape;
    int ncols;
    deferred_row_type_t *types;
    deferred_failure_t *failure; /* to deliver at the end */
    uint64_t row;
    bool queued;
    bool sent;
    bool started;            /* resumed at least once */
    bool paused;
    bool draining;           /* results are read and dropped */
    bool ended;              /* told its stage how it ended */
    bool failed;             /* ... with a failure of its own */
    ev_idle kick;
};

static void pg_update_io(deferred_pg_t *c);
static void pg_pump(deferred_pg_t *c);
static void pg_process(deferred_pg_t *c);

/* ---- failures ------------------------------------------------------------- */

int deferred_pg_sqlstate(const char *s)
{
    int code = 0, i;

    if (!s || strlen(s) != 5)
        return 0;
    for (i = 0; i < 5; i++) {
        char ch = s[i];

        if (!((ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'Z')))
            return 0;
        code |= ((ch - '0') & 0x3f) << (6 * i);
    }
    return (1 << 30) | code;
}

/* PostgreSQL's condition names of the SQLSTATEs a program meets most
 * (PostgreSQL manual, appendix A), for messages. */
static const struct condition {
    char state[6];
    const char *name;
} conditions[] = {
    {"00000", "successful_completion"},
    {"01000", "warning"},
    {"02000", "no_data"},
    {"08000", "connection_exception"},
    {"08001", "sqlclient_unable_to_establish_sqlconnection"},
    {"08003", "connection_does_not_exist"},
    {"08004", "sqlserver_rejected_establishment_of_sqlconnection"},
    {"08006", "connection_failure"},
    {"08007", "transaction_resolution_unknown"},
    {"08P01", "protocol_violation"},
    {"0A000", "feature_not_supported"},
    {"0B000", "invalid_transaction_initiation"},
    {"0L000", "invalid_grantor"},
    {"0P000", "invalid_role_specification"},
    {"20000", "case_not_found"},
    {"21000", "cardinality_violation"},
    {"22000", "data_exception"},
    {"22001", "string_data_right_truncation"},
    {"22003", "numeric_value_out_of_range"},
    {"22004", "null_value_not_allowed"},
    {"22007", "invalid_datetime_format"},
    {"22008", "datetime_field_overflow"},
    {"22012", "division_by_zero"},
    {"22021", "character_not_in_repertoire"},
    {"22023", "invalid_parameter_value"},
    {"22025", "invalid_escape_sequence"},
    {"22026", "string_data_length_mismatch"},
    {"2201B", "invalid_regular_expression"},
    {"22P02", "invalid_text_representation"},
    {"22P05", "untranslatable_character"},
    {"23000", "integrity_constraint_violation"},
    {"23001", "restrict_violation"},
    {"23502", "not_null_violation"},
    {"23503", "foreign_key_violation"},
    {"23505", "unique_violation"},
    {"23514", "check_violation"},
    {"23P01", "exclusion_violation"},
    {"24000", "invalid_cursor_state"},
    {"25000", "invalid_transaction_state"},
    {"25001", "active_sql_transaction"},
    {"25006", "read_only_sql_transaction"},
    {"25P01", "no_active_sql_transaction"},
    {"25P02", "in_failed_sql_transaction"},
    {"26000", "invalid_sql_statement_name"},
    {"27000", "triggered_data_change_violation"},
    {"28000", "invalid_authorization_specification"},
    {"28P01", "invalid_password"},
    {"2D000", "invalid_transaction_termination"},
    {"34000", "invalid_cursor_name"},
    {"38000", "external_routine_exception"},
    {"39000", "external_routine_invocation_exception"},
    {"3B000", "savepoint_exception"},
    {"3D000", "invalid_catalog_name"},
    {"3F000", "invalid_schema_name"},
    {"40000", "transaction_rollback"},
    {"40001", "serialization_failure"},
    {"40002", "transaction_integrity_constraint_violation"},
    {"40003", "statement_completion_unknown"},
    {"40P01", "deadlock_detected"},
    {"42000", "syntax_error_or_access_rule_violation"},
    {"42501", "insufficient_privilege"},
    {"42601", "syntax_error"},
    {"42602", "invalid_name"},
    {"42611", "invalid_column_definition"},
    {"42622", "name_too_long"},
    {"42701", "duplicate_column"},
    {"42702", "ambiguous_column"},
    {"42703", "undefined_column"},
    {"42704", "undefined_object"},
    {"42710", "duplicate_object"},
    {"42723", "duplicate_function"},
    {"42725", "ambiguous_function"},
    {"42803", "grouping_error"},
    {"42804", "datatype_mismatch"},
    {"42809", "wrong_object_type"},
    {"42830", "invalid_foreign_key"},
    {"42846", "cannot_coerce"},
    {"42883", "undefined_function"},
    {"42939", "reserved_name"},
    {"42P01", "undefined_table"},
    {"42P02", "undefined_parameter"},
    {"42P03", "duplicate_cursor"},
    {"42P04", "duplicate_database"},
    {"42P06", "duplicate_schema"},
    {"42P07", "duplicate_table"},
    {"42P08", "ambiguous_parameter"},
    {"42P09", "ambiguous_alias"},
    {"42P10", "invalid_column_reference"},
    {"42P18", "indeterminate_datatype"},
    {"44000", "with_check_option_violation"},
    {"53000", "insufficient_resources"},
    {"53100", "disk_full"},
    {"53200", "out_of_memory"},
    {"53300", "too_many_connections"},
    {"54000", "program_limit_exceeded"},
    {"54001", "statement_too_complex"},
    {"54011", "too_many_columns"},
    {"54023", "too_many_arguments"},
    {"55000", "object_not_in_prerequisite_state"},
    {"55006", "object_in_use"},
    {"55P03", "lock_not_available"},
    {"57000", "operator_intervention"},
    {"57014", "query_canceled"},
    {"57P01", "admin_shutdown"},
    {"57P02", "crash_shutdown"},
    {"57P03", "cannot_connect_now"},
    {"57P04", "database_dropped"},
    {"57P05", "idle_session_timeout"},
    {"58000", "system_error"},
    {"58030", "io_error"},
    {"72000", "snapshot_too_old"},
    {"F0000", "config_file_error"},
    {"HV000", "fdw_error"},
    {"P0001", "raise_exception"},
    {"P0002", "no_data_found"},
    {"P0003", "too_many_rows"},
    {"XX000", "internal_error"},
    {"XX001", "data_corrupted"},
    {"XX002", "index_corrupted"},
};

const char *deferred_pg_condition_name(const char *sqlstate)
{
    size_t i;

    if (!deferred_pg_sqlstate(sqlstate))
        return NULL;
    for (i = 0; i < sizeof(conditions) / sizeof(conditions[0]); i++)
        if (memcmp(conditions[i].state, sqlstate, 5) == 0)
            return conditions[i].name;
    return NULL;
}

const char *deferred_pg_failure_sqlstate(const deferred_failure_t *f, char buf[6])
{
    for (; f; f = deferred_failure_cause(f)) {
        int code = deferred_failure_code(f), i;

        if (deferred_failure_domain(f) != DEFERRED_DOMAIN_POSTGRES || code < (1 << 30))
            continue;
        for (i = 0; i < 5; i++)
            buf[i] = (char)(((code >> (6 * i)) & 0x3f) + '0');
        buf[5] = '\0';
        if (deferred_pg_sqlstate(buf) == code)
            return buf;
    }
    return NULL;
}

/* "42601 syntax_error" (or the SQLSTATE alone, or its class's name) for
 * messages, in buf. */
static const char *state_text(const char *state, char *buf, size_t size)
{
    const char *name = deferred_pg_condition_name(state);
    char class_state[6];

    if (!name && deferred_pg_sqlstate(state)) {
        memcpy(class_state, state, 2);
        memcpy(class_state + 2, "000", 4);
        name = deferred_pg_condition_name(class_state);
        if (name) {
            snprintf(buf, size, "%s, class %s", state, name);
            return buf;
        }
    }
    snprintf(buf, size, "%s%s%s", state, name ? " " : "", name ? name : "");
    return buf;
}

/* Copy msg without its trailing newlines into buf. */
static const char *trimmed(const char *msg, char *buf, size_t size)
{
    size_t len;

    snprintf(buf, size, "%s", msg && *msg ? msg : "unknown error");
    len = strlen(buf);
    while (len && (buf[len - 1] == '\n' || buf[len - 1] == ' '))
        buf[--len] = '\0';
    return buf;
}

/* A failure of q's, recorded at the site of the user's call that made
 * the query.  The query itself is named once, by the producer's frame
 * (pgq_describe_item()), which the process adds as the failure leaves
 * the stage. */
static deferred_failure_t *pgq_failure(struct pgq *q, int code, const char *fmt, ...)
    DEFERRED_PRINTF(3, 4);
static deferred_failure_t *pgq_failure(struct pgq *q, int code, const char *fmt, ...)
{
    deferred_failure_t *f;
    va_list ap;

    va_start(ap, fmt);
    f = deferred_failure_newv_at(q->file, q->line, DEFERRED_DOMAIN_POSTGRES, code, fmt, ap);
    va_end(ap);
    return f;
}

/* The server's error in res as a failure: its primary message (and
 * detail and hint), its SQLSTATE and condition name; code: the
 * SQLSTATE's.  NULL when res carries no SQLSTATE. */
static deferred_failure_t *pg_server_failure(const char *file, int line, const PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *primary, *detail, *hint;
    char msg[1024], st[96];

    if (!deferred_pg_sqlstate(state))
        return NULL;
    primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
    hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);
    trimmed(primary ? primary : PQresultErrorMessage(res), msg, sizeof(msg));
    return deferred_failure_new_at(file, line, DEFERRED_DOMAIN_POSTGRES,
                                   deferred_pg_sqlstate(state), "%s%s%s%s%s (%s)", msg,
                                   detail ? "; " : "", detail ? detail : "",
                                   hint ? "; hint: " : "", hint ? hint : "",
                                   state_text(state, st, sizeof(st)));
}

/* A failure from a result (or, with res NULL, from the connection).  A
 * lost connection is ECONNRESET; when the server said why (a shutdown's
 * 57P01), its error is the cause. */
static deferred_failure_t *pg_result_failure(struct pgq *q, const PGresult *res)
{
    deferred_pg_t *c = q->c;
    deferred_failure_t *server = pg_server_failure(q->file, q->line, res);
    char msg[1024];
    const char *severity = res ? PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED) : NULL;
    bool lost = !c->conn || PQstatus(c->conn) == CONNECTION_BAD;

    /* A FATAL or PANIC error ends the session: the connection goes. */
    if (severity && (strcmp(severity, "FATAL") == 0 || strcmp(severity, "PANIC") == 0))
        lost = true;
    if (lost && server)
        return deferred_failure_wrap_at(q->file, q->line, server, DEFERRED_DOMAIN_POSTGRES,
                                        ECONNRESET, "connection to %s lost (the server's "
                                        "error follows)", c->where);
    if (server)
        return server;
    trimmed(res ? PQresultErrorMessage(res) : c->conn ? PQerrorMessage(c->conn) : NULL,
            msg, sizeof(msg));
    if (lost)
        return pgq_failure(q, ECONNRESET, "connection to %s lost: %s", c->where, msg);
    return pgq_failure(q, EPROTO, "%s", msg);
}

/* ---- queries: references and the queue ---------------------------------------- */

static void pgq_unref(struct pgq *q)
{
    deferred_pg_t *c;

    if (--q->refs > 0)
        return;
    c = q->c;
    ev_idle_stop(c->loop, &q->kick);
    deferred_failure_unref(q->failure);
    deferred_row_shape_unref(q->shape);
    deferred_free(q->types);
    deferred_free(q);
    deferred_pg_unref(c);
}

/* Take q off the queue (it is the head, or not sent). */
static void pgq_dequeue(struct pgq *q)
{
    deferred_pg_t *c = q->c;
    struct pgq **pp;

    if (!q->queued)
        return;
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
    q->queued = false;
    q->sent = false;
    pgq_unref(q);
}

/* Tell q's stage how it ended: with q->failure, or the empty value. */
static void pgq_end(struct pgq *q)
{
    deferred_failure_t *f = q->failure;

    if (q->ended || !q->self || !q->started)
        return;
    q->ended = true;
    q->failure = NULL;
    q->failed = f != NULL;
    ev_idle_stop(q->c->loop, &q->kick);
    deferred_stage_finish(q->self, f ? deferred_value_failure(f) : deferred_value_none());
}

/* q cannot run: keep f (taken) for its stage, off the queue. */
static void pgq_fail(struct pgq *q, deferred_failure_t *f)
{
    if (!q->failure)
        q->failure = f;
    else
        deferred_failure_unref(f);
    if (q->self && q->started && !q->ended)
        ev_idle_start(q->c->loop, &q->kick);
}

/* ---- the connection's socket ----------------------------------------------------- */

static void pg_io_cb(struct ev_loop *loop, ev_io *w, int revents);

static void pg_update_io(deferred_pg_t *c)
{
    struct pgq *q = c->head;
    int events = 0, fd;

    if (c->conn && !c->connecting) {
        if (q && q->sent &&
            (q->draining || (q->started && !q->paused && q->self)))
            events |= EV_READ;
        if (q && q->sent && PQisnonblocking(c->conn) && PQflush(c->conn) == 1)
            events |= EV_WRITE;
    }
    fd = c->conn ? PQsocket(c->conn) : -1;
    if (events == c->io_events && fd == c->io_fd)
        return;
    if (c->io_events)
        ev_io_stop(c->loop, &c->io);
    c->io_events = events;
    c->io_fd = fd;
    if (events && fd >= 0) {
        ev_io_set(&c->io, fd, events);
        ev_io_start(c->loop, &c->io);
    } else {
        c->io_events = 0;
    }
}

/* The connection is gone (closed or lost): every query fails with f's
 * code and message (f taken); the head keeps the failure it has. */
static void pg_shut(deferred_pg_t *c, int code, const char *msg)
{
    if (c->io_events)
        ev_io_stop(c->loop, &c->io);
    c->io_events = 0;
    c->io_fd = -1;
    if (c->conn) {
        PQfinish(c->conn);
        c->conn = NULL;
    }
    while (c->head) {
        struct pgq *q = c->head;

        q->refs++;
        pgq_fail(q, pgq_failure(q, code, "%s", msg));
        pgq_dequeue(q);
        pgq_unref(q);
    }
}

static void pg_lost(deferred_pg_t *c)
{
    char msg[512], text[800];

    trimmed(c->conn ? PQerrorMessage(c->conn) : NULL, msg, sizeof(msg));
    snprintf(text, sizeof(text), "connection to %s lost: %s", c->where, msg);
    pg_shut(c, ECONNRESET, text);
}

/* Send the head of the queue if nothing is on the wire. */
static void pg_pump(deferred_pg_t *c)
{
    while (c->head && !c->head->sent && c->conn) {
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
            q->refs++;
            pgq_fail(q, pg_result_failure(q, NULL));
            pgq_dequeue(q);
            pgq_unref(q);
            continue;
        }
        PQsetSingleRowMode(c->conn);
        q->sent = true;
    }
    pg_update_io(c);
}

/* ---- rows ---------------------------------------------------------------------------- */

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
                /* Hex bytea: decode into a scratch area at the row's end. */
                unsigned char buf[256], *out = buf, *heap = NULL;
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

/* ---- reading results --------------------------------------------------------------------- */

/* May the head's results be read now? */
static bool pg_wants(const deferred_pg_t *c)
{
    const struct pgq *q = c->head;

    return q && q->sent && c->conn &&
           (q->draining ||
            (q->self && q->started && !q->paused && !deferred_stage_is_paused(q->self)));
}

/* Read what libpq has (without touching the socket): emit rows, end the
 * query at its last result, send the next one. */
static void pg_process(deferred_pg_t *c)
{
    while (pg_wants(c)) {
        struct pgq *q = c->head;
        PGresult *res;

        if (PQisBusy(c->conn))
            break; /* wait for the socket */
        res = PQgetResult(c->conn);
        if (!res) {
            /* The query is over. */
            q->refs++;
            pgq_dequeue(q);
            if (PQstatus(c->conn) == CONNECTION_BAD && !q->failure)
                q->failure = pg_result_failure(q, NULL);
            if (q->draining) {
                deferred_failure_unref(q->failure);
                q->failure = NULL;
                q->ended = true;
            }
            pgq_end(q);
            pgq_unref(q);
            if (c->conn && PQstatus(c->conn) == CONNECTION_BAD) {
                pg_lost(c);
                return;
            }
            pg_pump(c);
            continue;
        }
        switch (PQresultStatus(res)) {
        case PGRES_SINGLE_TUPLE:
            if (!q->draining && !q->failure) {
                deferred_row_t *row = pgq_make_row(q, res);

                PQclear(res);
                if (!row) {
                    q->failure = deferred_failure_new_at(q->file, q->line,
                                                         DEFERRED_DOMAIN_LIBRARY, ENOMEM,
                                                         "out of memory making a row");
                    continue;
                }
                q->row++;
                q->refs++;
                deferred_stage_emit(q->self, deferred_value_row(row));
                pgq_unref(q);
                continue;
            }
            break;
        case PGRES_TUPLES_OK:
        case PGRES_COMMAND_OK:
        case PGRES_EMPTY_QUERY:
            break;
        default:
            if (!q->failure && !q->draining)
                q->failure = pg_result_failure(q, res);
            break;
        }
        PQclear(res);
    }
    pg_update_io(c);
}

static void pg_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    deferred_pg_t *c = w->data;

    (void)loop;
    deferred_pg_ref(c);
    if ((revents & EV_WRITE) && c->conn && PQflush(c->conn) < 0) {
        pg_lost(c);
        goto out;
    }
    if ((revents & EV_READ) && c->conn && !PQconsumeInput(c->conn)) {
        /* The head fails with what the server said last, when it said why
         * it closed (a shutdown's 57P01, parsed from what libpq read before
         * the end), else with libpq's message; pg_lost() fails the rest. */
        struct pgq *q = c->head;

        if (q && q->sent && !q->failure && !q->draining) {
            PGresult *res, *said = NULL;
            int n;

            for (n = 0; n < 100000 && (res = PQgetResult(c->conn)) != NULL; n++) {
                if (PQresultErrorField(res, PG_DIAG_SQLSTATE)) {
                    PQclear(said);
                    said = res;
                } else {
                    PQclear(res);
                }
            }
            q->failure = pg_result_failure(q, said);
            PQclear(said);
        }
        pg_lost(c);
        goto out;
    }
    pg_process(c);
out:
    deferred_pg_unref(c);
}

/* A query's idle watcher: deliver rows libpq already holds after a resume,
 * or the failure of a query that never reached the wire. */
static void pgq_kick_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    struct pgq *q = w->data;
    deferred_pg_t *c = q->c;

    (void)revents;
    ev_idle_stop(loop, w);
    deferred_pg_ref(c);
    q->refs++;
    if (!q->queued)
        pgq_end(q);
    else if (c->head == q)
        pg_process(c);
    pgq_unref(q);
    deferred_pg_unref(c);
}

/* ---- the stage ------------------------------------------------------------------------------ */

static void pgq_resume(deferred_stage_t *self, deferred_stage_t *by)
{
    struct pgq *q = deferred_stage_data(self);

    (void)by;
    q->started = true;
    q->paused = false;
    ev_idle_start(q->c->loop, &q->kick);
    pg_update_io(q->c);
}

static void pgq_pause(deferred_stage_t *self, deferred_stage_t *by)
{
    struct pgq *q = deferred_stage_data(self);

    (void)by;
    q->paused = true;
    ev_idle_stop(q->c->loop, &q->kick);
    pg_update_io(q->c);
}

/* Stop q for good: drop it if it waits, cancel and drain it if it is on
 * the wire. */
static void pgq_abandon(struct pgq *q)
{
    deferred_pg_t *c = q->c;

    q->ended = true;
    ev_idle_stop(c->loop, &q->kick);
    if (!q->queued)
        return;
    if (!q->sent) {
        pgq_dequeue(q);
        return;
    }
    if (!q->draining) {
        PGcancel *cancel = PQgetCancel(c->conn);
        char err[256];

        q->draining = true;
        if (cancel) {
            PQcancel(cancel, err, sizeof(err)); /* blocks briefly */
            PQfreeCancel(cancel);
        }
    }
    pg_update_io(c);
}

static void pgq_cancel(deferred_stage_t *self, deferred_stage_t *by)
{
    struct pgq *q = deferred_stage_data(self);
    deferred_pg_t *c = q->c;

    (void)by;
    deferred_pg_ref(c);
    pgq_abandon(q);
    deferred_pg_unref(c);
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
                    (unsigned long long)(q->row + (q->failed ? 1 : 0)), q->sql);
}

static void pgq_destroy(void *data)
{
    struct pgq *q = data;
    deferred_pg_t *c = q->c;

    deferred_pg_ref(c);
    q->self = NULL;
    pgq_abandon(q);
    pgq_unref(q);
    pg_pump(c);
    deferred_pg_unref(c);
}

static const deferred_stage_ops_t pgq_ops = {
    .name = "postgres query",
    .resume = pgq_resume,
    .pause = pgq_pause,
    .cancel = pgq_cancel,
    .describe = pgq_describe_item,
    .destroy = pgq_destroy,
};

/* Check params[0..n-1]: NULL with n > 0 is the caller's error (NULL
 * returned), a text or blob with NULL data and a non-zero length or of an
 * unknown type is written into msg.  Returns the bytes the copies need,
 * or 0 with msg set (or SIZE_MAX when the sizes would wrap). */
static size_t pg_params_size(const char *sql, const deferred_param_t *params, size_t n,
                             char *msg, size_t size)
{
    size_t i, bytes = strlen(sql) + 1;

    msg[0] = '\0';
    for (i = 0; i < n; i++) {
        const deferred_param_t *pa = &params[i];
        size_t len = 32;

        switch (pa->type) {
        case DEFERRED_ROW_NULL:
        case DEFERRED_ROW_INTEGER:
        case DEFERRED_ROW_DOUBLE:
            break;
        case DEFERRED_ROW_TEXT:
        case DEFERRED_ROW_BLOB:
            len = pa->u.s.len;
            if (!pa->u.s.p && len) {
                snprintf(msg, size, "parameter %zu: NULL %s with length %zu", i + 1,
                         pa->type == DEFERRED_ROW_TEXT ? "text" : "blob", len);
                return 0;
            }
            /* libpq takes lengths as int. */
            if (len > INT_MAX - 1) {
                snprintf(msg, size, "parameter %zu: length %zu is more than libpq "
                         "takes", i + 1, len);
                return 0;
            }
            break;
        default:
            snprintf(msg, size, "parameter %zu: unknown type %d", i + 1, (int)pa->type);
            return 0;
        }
        if (len + 1 > SIZE_MAX - bytes)
            return SIZE_MAX;
        bytes += len + 1;
    }
    return bytes;
}

/* Copy sql and the parameters (as text, blobs binary) into one block
 * after the query; bytes is what pg_params_size() said.  With bad set the
 * parameters are not copied: the query only carries the failure. */
static struct pgq *pgq_new(deferred_pg_t *c, const char *sql,
                           const deferred_param_t *params, size_t n, size_t bytes)
{
    size_t i, head = sizeof(struct pgq) + n * (sizeof(char *) + 2 * sizeof(int));
    struct pgq *q;
    char *p;

    if (bytes > SIZE_MAX - head)
        return NULL;
    q = deferred_malloc(head + bytes);
    if (!q)
        return NULL;
    memset(q, 0, sizeof(*q));
    q->values = (const char **)(q + 1);
    q->lengths = (int *)(q->values + n);
    q->formats = q->lengths + n;
    p = (char *)(q->formats + n);
    q->nparams = (int)n;
    for (i = 0; i < n; i++) {
        const deferred_param_t *pa = &params[i];
        int len;

        q->formats[i] = 0;
        q->lengths[i] = 0;
        switch (pa->type) {
        case DEFERRED_ROW_NULL:
            q->values[i] = NULL;
            continue;
        case DEFERRED_ROW_INTEGER:
            len = snprintf(p, 32, "%lld", (long long)pa->u.i);
            break;
        case DEFERRED_ROW_DOUBLE:
            len = snprintf(p, 32, "%.17g", pa->u.d);
            break;
        case DEFERRED_ROW_BLOB:
            q->formats[i] = 1;
            /* fall through */
        default:
            len = (int)pa->u.s.len; /* checked by pg_params_size() */
            if (len)
                memcpy(p, pa->u.s.p, (size_t)len);
            p[len] = '\0';
            break;
        }
        q->values[i] = p;
        q->lengths[i] = len;
        p += len + 1;
    }
    q->sql = p;
    memcpy(q->sql, sql, strlen(sql) + 1);
    q->refs = 1;
    q->c = deferred_pg_ref(c);
    ev_idle_init(&q->kick, pgq_kick_cb);
    q->kick.data = q;
    return q;
}

deferred_stage_t *deferred_pg_query_at(const char *file, int line, deferred_pg_t *c,
                                       const char *sql, const deferred_param_t *params,
                                       size_t n)
{
    deferred_stage_t *st;
    struct pgq *q;
    char bad[160];
    size_t bytes;

    if (!c || !sql || (!params && n) || n > 65535) {
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
    q->refs++;
    q->queued = true;
    if (c->tail)
        c->tail->next = q;
    else
        c->head = q;
    c->tail = q;
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

/* ---- connections ------------------------------------------------------------------------------ */

static deferred_pg_t *pg_alloc(struct ev_loop *loop)
{
    deferred_pg_t *c = deferred_malloc(sizeof(*c));

    if (!c)
        return NULL;
    memset(c, 0, sizeof(*c));
    c->refs = 1;
    c->loop = loop;
    c->io_fd = -1;
    ev_init(&c->io, pg_io_cb);
    c->io.data = c;
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
    /* Every query holds a reference: none is left. */
    if (c->io_events)
        ev_io_stop(c->loop, &c->io);
    if (c->conn)
        PQfinish(c->conn);
    deferred_free(c);
}

void deferred_pg_close(deferred_pg_t *c)
{
    char msg[256];

    if (!c || !c->conn || c->connecting)
        return;
    deferred_pg_ref(c);
    snprintf(msg, sizeof(msg), "the connection to %s was closed", c->where);
    pg_shut(c, ENOTCONN, msg);
    deferred_pg_unref(c);
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

/* A verbose server error ("FATAL:  3D000: database ... does not exist")
 * names its SQLSTATE after the severity: copy it into state.  Cut the
 * verbose LOCATION line from msg. */
static bool pg_message_state(char *msg, char state[6])
{
    static const char *const severities[] = {"FATAL:  ", "ERROR:  ", "PANIC:  "};
    char *loc = strstr(msg, "\nLOCATION:");
    size_t i;

    if (loc)
        *loc = '\0';
    for (i = 0; i < sizeof(severities) / sizeof(severities[0]); i++) {
        const char *at = strstr(msg, severities[i]);

        if (!at)
            continue;
        at += strlen(severities[i]);
        memcpy(state, at, 5);
        state[5] = '\0';
        if (strlen(at) > 6 && at[5] == ':' && deferred_pg_sqlstate(state)) {
            /* "FATAL:  3D000: text" reads "FATAL:  text" after this. */
            memmove((char *)at, at + 7, strlen(at + 7) + 1);
            return true;
        }
    }
    return false;
}

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
    if (c->io_events)
        ev_io_stop(c->loop, &c->io);
    c->io_events = 0;
    deferred_pg_unref(c);
}

static void pg_connect_step(deferred_pg_t *c, PostgresPollingStatusType st)
{
    struct pgconnect *op = c->connecting;
    int events = 0;

    switch (st) {
    case PGRES_POLLING_READING:
        events = EV_READ;
        break;
    case PGRES_POLLING_WRITING:
        events = EV_WRITE;
        break;
    case PGRES_POLLING_OK: {
        deferred_t *d = op->d;

        op->c = NULL;
        c->connecting = NULL;
        if (c->io_events)
            ev_io_stop(c->loop, &c->io);
        c->io_events = 0;
        c->io_fd = -1;
        PQsetnonblocking(c->conn, 1);
        PQsetErrorVerbosity(c->conn, PQERRORS_DEFAULT);
        pg_describe_server(c);
        ev_set_cb(&c->io, pg_io_cb);
        deferred_callback(d, deferred_value_make(c, pg_value_release));
        return;
    }
    default: {
        deferred_t *d = op->d;
        char msg[512], state[6], stext[96];
        deferred_failure_t *f;
        int code = ECONNREFUSED;

        trimmed(c->conn ? PQerrorMessage(c->conn) : "out of memory", msg, sizeof(msg));
        /* The server refused us itself (no such database, bad password,
         * too many connections): its SQLSTATE is the code. */
        if (pg_message_state(msg, state)) {
            code = deferred_pg_sqlstate(state);
            f = deferred_failure_new_at(op->file, op->line, DEFERRED_DOMAIN_POSTGRES, code,
                                        "could not connect to %s: %s (%s)", c->where, msg,
                                        state_text(state, stext, sizeof(stext)));
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
    if (c->io_events)
        ev_io_stop(c->loop, &c->io);
    c->io_fd = PQsocket(c->conn);
    c->io_events = events;
    ev_io_set(&c->io, c->io_fd, events);
    ev_io_start(c->loop, &c->io);
}

static void pg_connect_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    deferred_pg_t *c = w->data;

    (void)loop;
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

deferred_t *deferred_pg_connect_at(const char *file, int line, struct ev_loop *loop,
                                   const char *conninfo)
{
    struct pgconnect *op;
    PQconninfoOption *opts;
    deferred_pg_t *c;
    deferred_t *d;
    char *err = NULL;

    if (!loop || !conninfo) {
        errno = EINVAL;
        return NULL;
    }
    /* A malformed conninfo is the caller's mistake, not a refusal: found
     * now, it is NULL with EINVAL (deferred/common.h). */
    opts = PQconninfoParse(conninfo, &err);
    if (!opts) {
        int e = err ? EINVAL : ENOMEM;

        PQfreemem(err);
        errno = e;
        return NULL;
    }
    PQconninfoFree(opts);
    op = deferred_malloc(sizeof(*op));
    if (!op)
        return NULL; /* errno ENOMEM */
    op->c = NULL;
    op->file = file;
    op->line = line;
    d = deferred_new_cancellable(pg_connect_cancel, op, pg_connect_destroy);
    if (!d)
        return NULL; /* op freed by pg_connect_destroy; errno ENOMEM */
    op->d = d;
    c = pg_alloc(loop);
    if (!c) {
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
    ev_set_cb(&c->io, pg_connect_cb);
    if (!c->conn || PQstatus(c->conn) == CONNECTION_BAD) {
        pg_connect_step(c, PGRES_POLLING_FAILED);
        return d;
    }
    /* PQconnectStart() behaves as if PQconnectPoll() had said WRITING. */
    pg_connect_step(c, PGRES_POLLING_WRITING);
    return d;
}

deferred_t *(deferred_pg_connect)(struct ev_loop *loop, const char *conninfo)
{
    return deferred_pg_connect_at(NULL, 0, loop, conninfo);
}
