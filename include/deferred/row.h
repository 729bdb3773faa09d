/*
 * deferred/row.h: one row of a query result, the item that the SQLite and
 * PostgreSQL producers emit; and typed query parameters.
 *
 * A row is a value (deferred_value_row()): column access by index and by
 * name, typed getters, column count and names, and it is released like
 * any other value, through deferred_value_release().  Both database
 * layers emit the same row type, so a consumer reads a SQLite row and a
 * PostgreSQL row with the same calls (and a merge of the two sees one
 * kind of item).
 *
 * Memory.  A row is one allocation: its columns and the bytes of its text
 * and blob columns, copied out of the statement or PGresult, so a row
 * stays valid after the producer stepped on (keep it as long as you like
 * by moving it out of handle).  The column names live in a shape, shared
 * by every row of one query and refcounted.  Each shape keeps one spare
 * row: a row released while its shape is alive goes back to that spare
 * slot and the producer fills it again for the next row.  So a consumer
 * that does not keep rows costs no allocation per row in the steady
 * state, and one that keeps them pays one allocation per kept row.
 *
 * Threads: a row and its shape belong to the thread of the producer that
 * made them (releasing a row touches the shared shape).  To hand a row to
 * another thread, make a standalone copy with deferred_row_copy() on the
 * loop thread.
 *
 * Column types follow SQLite's five storage classes.  A PostgreSQL column
 * is an INTEGER for int2, int4, int8 and oid, a DOUBLE for float4 and
 * float8, a BLOB for bytea, and TEXT for every other type (as the server
 * renders it, e.g. numeric "12.50", bool "t").
 *
 * Getters take a column index from 0 and never fail: out of range, or of
 * another type, they return the neutral value documented for each.
 * The _named variants look the column up by name first (the first column
 * with that exact name).
 */
#ifndef DEFERRED_ROW_H
#define DEFERRED_ROW_H

#include "value.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct deferred_row deferred_row_t;
typedef struct deferred_row_shape deferred_row_shape_t;

typedef enum deferred_row_type {
    DEFERRED_ROW_NULL = 0,
    DEFERRED_ROW_INTEGER,
    DEFERRED_ROW_DOUBLE,
    DEFERRED_ROW_TEXT,
    DEFERRED_ROW_BLOB
} deferred_row_type_t;

/* ---- reading a row ------------------------------------------------------ */

/* The row held by v (borrowed: v still owns it), or NULL when v is not a
 * row value. */
DEFERRED_EXPORT deferred_row_t *deferred_value_get_row(deferred_value_t v);

/* A value owning row (released with deferred_row_free()).  NULL row gives
 * an ENOMEM failure value (the value convention: a NULL row is a failed
 * allocation). */
DEFERRED_EXPORT deferred_value_t deferred_value_row(deferred_row_t *row);

/* The number of columns (0 for NULL). */
DEFERRED_EXPORT size_t deferred_row_columns(const deferred_row_t *row);

/* Column i's name (borrowed, lives as long as the row); NULL out of range. */
DEFERRED_EXPORT const char *deferred_row_name(const deferred_row_t *row, size_t i);

/* The index of the first column called name, or -1. */
DEFERRED_EXPORT long deferred_row_find(const deferred_row_t *row, const char *name);

/* Column i's type; DEFERRED_ROW_NULL out of range. */
DEFERRED_EXPORT deferred_row_type_t deferred_row_type(const deferred_row_t *row, size_t i);

/* True when column i is NULL (or out of range). */
DEFERRED_EXPORT bool deferred_row_is_null(const deferred_row_t *row, size_t i);

/* Column i as an integer: an INTEGER as is, a DOUBLE truncated, a TEXT
 * parsed as a decimal (0 when it is not one); 0 for NULL, BLOB, out of
 * range. */
DEFERRED_EXPORT int64_t deferred_row_int(const deferred_row_t *row, size_t i);

/* Column i as a double: a DOUBLE as is, an INTEGER converted, a TEXT
 * parsed (0.0 when it is not a number); 0.0 otherwise. */
DEFERRED_EXPORT double deferred_row_double(const deferred_row_t *row, size_t i);

/* Column i's text (borrowed, NUL-terminated, lives as long as the row)
 * for a TEXT or BLOB column (a blob gets a terminating NUL too); NULL for
 * NULL, INTEGER, DOUBLE and out of range. */
DEFERRED_EXPORT const char *deferred_row_text(const deferred_row_t *row, size_t i);

/* Column i's bytes (borrowed) for TEXT and BLOB, with their number in
 * *len (len may be NULL); NULL and 0 otherwise. */
DEFERRED_EXPORT const void *deferred_row_blob(const deferred_row_t *row, size_t i,
                                              size_t *len);

/* The same getters by column name. */
DEFERRED_EXPORT bool deferred_row_is_null_named(const deferred_row_t *row,
                                                const char *name);
DEFERRED_EXPORT int64_t deferred_row_int_named(const deferred_row_t *row,
                                               const char *name);
DEFERRED_EXPORT double deferred_row_double_named(const deferred_row_t *row,
                                                 const char *name);
DEFERRED_EXPORT const char *deferred_row_text_named(const deferred_row_t *row,
                                                    const char *name);
DEFERRED_EXPORT const void *deferred_row_blob_named(const deferred_row_t *row,
                                                    const char *name, size_t *len);

/* A standalone copy of row (one allocation, names included, no shared
 * shape): it may be moved to another thread.  NULL with errno ENOMEM on
 * allocation failure, EINVAL for a NULL row. */
DEFERRED_EXPORT deferred_row_t *deferred_row_copy(const deferred_row_t *row);

/* Free row (or return it to its shape's spare slot).  NULL is a no-op. */
DEFERRED_EXPORT void deferred_row_free(deferred_row_t *row);

/* ---- making rows (for producers) ----------------------------------------- */

/*
 * A shape: the column names of a query's rows (copied), with one
 * reference.  Each row made from it holds a reference.  NULL with errno
 * ENOMEM on allocation failure, EINVAL when ncols is above UINT32_MAX or
 * names is NULL with ncols > 0; names[i] may be NULL (taken as "").
 */
DEFERRED_EXPORT deferred_row_shape_t *deferred_row_shape_new(size_t ncols,
                                                             const char *const *names);
DEFERRED_EXPORT void deferred_row_shape_unref(deferred_row_shape_t *shape);

/*
 * A new row of shape, every column NULL, with room for bytes bytes of
 * text and blob data (each text or blob needs its length + 1).  Reuses the
 * shape's spare row when it is large enough.  NULL with errno EINVAL for
 * a NULL shape, ENOMEM on allocation failure or for bytes above
 * PTRDIFF_MAX / 2 (no block that large can be made).
 */
DEFERRED_EXPORT deferred_row_t *deferred_row_alloc(deferred_row_shape_t *shape,
                                                   size_t bytes);

/* Set column i.  Text and blob bytes (len of them, at s or p, borrowed)
 * are copied into the row's room, with a NUL after them.
 * Return 0, -EINVAL (NULL row, i out of range, NULL data with a non-zero
 * len, len above PTRDIFF_MAX / 2), -ENOSPC (not enough room left: the
 * column stays as it was). */
DEFERRED_EXPORT int deferred_row_set_int(deferred_row_t *row, size_t i, int64_t x);
DEFERRED_EXPORT int deferred_row_set_double(deferred_row_t *row, size_t i, double x);
DEFERRED_EXPORT int deferred_row_set_text(deferred_row_t *row, size_t i,
                                          const char *s, size_t len);
DEFERRED_EXPORT int deferred_row_set_blob(deferred_row_t *row, size_t i,
                                          const void *p, size_t len);

/* ---- query parameters ---------------------------------------------------- */

/*
 * A typed query parameter, bound (never pasted into the SQL).  The
 * database layers copy what they need when the query is made, so the
 * pointed-to text and blobs need only live through that call.
 */
typedef struct deferred_param {
    deferred_row_type_t type;
    union {
        int64_t i;
        double d;
        struct {
            const void *p;
            size_t len;
        } s;
    } u;
} deferred_param_t;

static inline deferred_param_t deferred_param_null(void)
{
    deferred_param_t p;
    p.type = DEFERRED_ROW_NULL;
    p.u.i = 0;
    return p;
}

static inline deferred_param_t deferred_param_int(int64_t x)
{
    deferred_param_t p;
    p.type = DEFERRED_ROW_INTEGER;
    p.u.i = x;
    return p;
}

static inline deferred_param_t deferred_param_double(double x)
{
    deferred_param_t p;
    p.type = DEFERRED_ROW_DOUBLE;
    p.u.d = x;
    return p;
}

/* A NUL-terminated text (NULL s gives a NULL parameter). */
DEFERRED_EXPORT deferred_param_t deferred_param_text(const char *s);

static inline deferred_param_t deferred_param_blob(const void *ptr, size_t len)
{
    deferred_param_t p;
    p.type = DEFERRED_ROW_BLOB;
    p.u.s.p = ptr;
    p.u.s.len = len;
    return p;
}

/*
 * A list of query parameters as one value: items[0..n-1] (borrowed).
 * The query functions take it in their _p forms
 * (deferred_sqlite_query_p(), deferred_pg_query_p(), ...), and a
 * (params, nparams) pair as params.items, params.n in the others.
 */
typedef struct deferred_params {
    const deferred_param_t *items;
    size_t n;
} deferred_params_t;

/*
 * DEFERRED_PARAMS(a, b, ...) is one expression, usable wherever an
 * expression is, in C and in C++:
 *   deferred_sqlite_query_p(loop, db, "SELECT ... WHERE id = ? AND k = ?",
 *                           DEFERRED_PARAMS(deferred_param_int(7),
 *                                           deferred_param_text(key)));
 * In C it is a deferred_params_t made by a compound literal; its array
 * lives until the end of the enclosing block, so it may be kept in a
 * variable:  deferred_params_t ps = DEFERRED_PARAMS(...);
 * In C++ (C++11 and later: no compound literals there) it is a holder,
 * made by deferred_params_make(), that owns a copy of the parameters and
 * converts to deferred_params_t pointing into itself: pass it straight
 * to a function (it lives until the end of the full expression) or keep
 * it with auto (auto ps = DEFERRED_PARAMS(...); then pass ps).  Do not
 * keep the converted deferred_params_t of a temporary holder past the
 * statement that made it.  Each argument must be a deferred_param_t.
 *
 * DEFERRED_PARAMS_ARGS(a, b, ...) expands to the two arguments
 * "items, n" for the (params, nparams) forms of the query functions,
 * evaluating each parameter once, in C and in C++:
 *   deferred_sqlite_query(loop, db, "SELECT ?",
 *                         DEFERRED_PARAMS_ARGS(deferred_param_int(7)));
 */
#ifndef __cplusplus
#define DEFERRED_PARAMS(...)                                                  \
    ((deferred_params_t){(const deferred_param_t[]){__VA_ARGS__},             \
                         sizeof((const deferred_param_t[]){__VA_ARGS__}) /    \
                             sizeof(deferred_param_t)})
#define DEFERRED_PARAMS_ARGS(...)                                             \
    ((const deferred_param_t[]){__VA_ARGS__}),                                \
    (sizeof((const deferred_param_t[]){__VA_ARGS__}) / sizeof(deferred_param_t))
#endif

#ifdef __cplusplus
}

/* C++: the holder behind DEFERRED_PARAMS (see above). */
extern "C++" {
template <size_t N> struct deferred_params_holder {
    deferred_param_t items[N > 0 ? N : 1];
    static const size_t count = N;
    const deferred_param_t *data() const { return items; }
    operator deferred_params_t() const
    {
        deferred_params_t ps;
        ps.items = items;
        ps.n = N;
        return ps;
    }
};

template <typename... T>
inline deferred_params_holder<sizeof...(T)> deferred_params_make(const T &...params)
{
    deferred_params_holder<sizeof...(T)> h = {{params...}};
    return h;
}
}

#define DEFERRED_PARAMS(...) (deferred_params_make(__VA_ARGS__))
#define DEFERRED_PARAMS_ARGS(...)                                             \
    deferred_params_make(__VA_ARGS__).data(),                                \
    decltype(deferred_params_make(__VA_ARGS__))::count
#endif

#endif /* DEFERRED_ROW_H */
