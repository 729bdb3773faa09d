/*
 * pg-failure.c: failures from what libpq and the server say.  Owns the
 * SQLSTATE encoding of failure codes (deferred_pg_sqlstate() and back),
 * the table of condition names, and the failures of a query (from a
 * result or the connection) and of connecting (a verbose message's
 * SQLSTATE).  Nothing here touches the queue or the socket.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "pg-private.h"

/* A SQLSTATE's five characters, 6 bits each ('0'-based), under a tag bit
 * that keeps every SQLSTATE code apart from the errno values. */
#define SQLSTATE_TAG (1 << 30)
#define SQLSTATE_CHAR_BITS 6
#define SQLSTATE_CHAR_MASK 0x3f
#define SQLSTATE_LEN 5

int deferred_pg_sqlstate(const char *s)
{
    int code = 0, i;

    if (!s || strlen(s) != SQLSTATE_LEN)
        return 0;
    for (i = 0; i < SQLSTATE_LEN; i++) {
        char ch = s[i];

        if (!((ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'Z')))
            return 0;
        code |= ((ch - '0') & SQLSTATE_CHAR_MASK) << (SQLSTATE_CHAR_BITS * i);
    }
    return SQLSTATE_TAG | code;
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
        if (memcmp(conditions[i].state, sqlstate, SQLSTATE_LEN) == 0)
            return conditions[i].name;
    return NULL;
}

const char *deferred_pg_failure_sqlstate(const deferred_failure_t *f, char buf[6])
{
    for (; f; f = deferred_failure_cause(f)) {
        int code = deferred_failure_code(f), i;

        if (deferred_failure_domain(f) != DEFERRED_DOMAIN_POSTGRES || code < SQLSTATE_TAG)
            continue;
        for (i = 0; i < SQLSTATE_LEN; i++)
            buf[i] = (char)(((code >> (SQLSTATE_CHAR_BITS * i)) & SQLSTATE_CHAR_MASK) + '0');
        buf[SQLSTATE_LEN] = '\0';
        if (deferred_pg_sqlstate(buf) == code)
            return buf;
    }
    return NULL;
}

/* "42601 syntax_error" (or the SQLSTATE alone, or its class's name) for
 * messages, in buf. */
const char *pg_state_text(const char *state, char *buf, size_t size)
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

/* Copy msg without its trailing newlines and spaces into buf. */
const char *pg_trimmed(const char *msg, char *buf, size_t size)
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
deferred_failure_t *pgq_failure(struct pgq *q, int code, const char *fmt, ...)
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
    pg_trimmed(primary ? primary : PQresultErrorMessage(res), msg, sizeof(msg));
    return deferred_failure_new_at(file, line, DEFERRED_DOMAIN_POSTGRES,
                                   deferred_pg_sqlstate(state), "%s%s%s%s%s (%s)", msg,
                                   detail ? "; " : "", detail ? detail : "",
                                   hint ? "; hint: " : "", hint ? hint : "",
                                   pg_state_text(state, st, sizeof(st)));
}

/* A failure from a result (or, with res NULL, from the connection).  A
 * lost connection is ECONNRESET; when the server said why (a shutdown's
 * 57P01), its error is the cause. */
deferred_failure_t *pg_result_failure(struct pgq *q, const PGresult *res)
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
    pg_trimmed(res ? PQresultErrorMessage(res) : c->conn ? PQerrorMessage(c->conn) : NULL,
            msg, sizeof(msg));
    if (lost)
        return pgq_failure(q, ECONNRESET, "connection to %s lost: %s", c->where, msg);
    return pgq_failure(q, EPROTO, "%s", msg);
}

/* A verbose server error ("FATAL:  3D000: database ... does not exist")
 * names its SQLSTATE after the severity: copy it into state.  Cut the
 * verbose LOCATION line from msg. */
bool pg_message_state(char *msg, char state[6])
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
        memcpy(state, at, SQLSTATE_LEN);
        state[SQLSTATE_LEN] = '\0';
        if (strlen(at) > SQLSTATE_LEN + 1 && at[SQLSTATE_LEN] == ':' &&
            deferred_pg_sqlstate(state)) {
            /* "FATAL:  3D000: text" reads "FATAL:  text" after this. */
            const char *text = at + SQLSTATE_LEN + 2;

            memmove((char *)at, text, strlen(text) + 1);
            return true;
        }
    }
    return false;
}
