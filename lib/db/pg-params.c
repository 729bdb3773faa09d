/*
 * pg-params.c: a query's block.  Owns the checking of a query's
 * parameters and their encoding for PQsendQueryParams() (as text, blobs
 * binary), copied with the SQL into one allocation after the struct pgq.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "pg-private.h"

/* PQsendQueryParams()'s paramFormats. */
#define PG_FORMAT_TEXT 0
#define PG_FORMAT_BINARY 1

/* Bytes a formatted integer or double parameter may take, its NUL
 * included ("%lld" needs 21, "%.17g" 25). */
#define PG_NUMBER_MAX 32

/* Check params[0..n-1] (the caller refused NULL with n > 0): a text or
 * blob with NULL data and a non-zero length, one longer than libpq takes,
 * or a parameter of an unknown type is described in msg and 0 returned.
 * Else the bytes that sql and the copies need (SIZE_MAX when the sizes
 * would wrap), msg empty. */
size_t pg_params_size(const char *sql, const deferred_param_t *params, size_t n,
                      char *msg, size_t size)
{
    size_t i, bytes = strlen(sql) + 1;

    msg[0] = '\0';
    for (i = 0; i < n; i++) {
        const deferred_param_t *pa = &params[i];
        size_t len = PG_NUMBER_MAX;

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

/* A query on c (a reference), HELD and UNSTARTED (both 0), with sql and
 * the parameters (as text, blobs binary) copied into one block after it;
 * bytes is what pg_params_size() said.  A query whose parameters are bad
 * is made with none (n 0): it only carries its failure. */
struct pgq *pgq_new(deferred_pg_t *c, const char *sql, const deferred_param_t *params,
                    size_t n, size_t bytes)
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

        q->formats[i] = PG_FORMAT_TEXT;
        q->lengths[i] = 0;
        switch (pa->type) {
        case DEFERRED_ROW_NULL:
            q->values[i] = NULL;
            continue;
        case DEFERRED_ROW_INTEGER:
            len = snprintf(p, PG_NUMBER_MAX, "%lld", (long long)pa->u.i);
            break;
        case DEFERRED_ROW_DOUBLE:
            len = snprintf(p, PG_NUMBER_MAX, "%.17g", pa->u.d);
            break;
        case DEFERRED_ROW_BLOB:
            q->formats[i] = PG_FORMAT_BINARY;
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
    if (pg_kick_init(q) < 0) {
        deferred_pg_unref(c);
        deferred_free(q);
        return NULL;
    }
    return q;
}
