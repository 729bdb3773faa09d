/*
 * row.c: the row value that the database producers emit, and query
 * parameters.
 *
 * A row is one block: the header, the column slots, then the text and
 * blob bytes.  It depends on no database, which is why it lives in the
 * core library: libdeferred-sqlite and libdeferred-pg both make rows
 * through the public builder (deferred_row_alloc() and the setters), and
 * a program linking both sees one row type.
 *
 * The design decision to know: rows are recycled through their shape.
 * The shape (the column names of one query, refcounted: the producer
 * holds one reference, each live row another) keeps one spare row.
 * Releasing a row whose shape has no spare parks the row there instead of
 * freeing it, and the producer's next deferred_row_alloc() takes it back.
 * A consumer that lets the library release each row after handle thus
 * makes the producer allocate nothing per row, while a consumer that
 * keeps rows simply keeps them: a kept row is never reused.  The parked
 * row gives its shape reference back, so the spare never keeps its own
 * shape alive.
 */
#include <stdlib.h>
#include <string.h>

#include "core/deferred-private.h"
#include "deferred/row.h"

struct deferred_row_shape {
    uint32_t refs;
    uint32_t ncols;
    deferred_row_t *spare; /* a free row, holding no reference */
    char **names;          /* ncols pointers into the same block */
};

struct column {
    deferred_row_type_t type;
    size_t len;           /* TEXT and BLOB: bytes, without the NUL */
    union {
        int64_t i;
        double d;
        size_t off;       /* TEXT and BLOB: offset into the data */
    } u;
};

struct deferred_row {
    deferred_row_shape_t *shape; /* NULL for a standalone copy */
    char **names;                /* the shape's, or the copy's own */
    size_t ncols;
    size_t room;                 /* bytes of data the block has */
    size_t used;
    char *data;
    struct column cols[];
};

/* ---- shapes ----------------------------------------------------------------- */

deferred_row_shape_t *deferred_row_shape_new(size_t ncols, const char *const *names)
{
    deferred_row_shape_t *sh;
    size_t i, bytes = 0;
    char *p;

    if (ncols > UINT32_MAX || (ncols && !names)) {
        errno = EINVAL;
        return NULL;
    }
    if (ncols > (SIZE_MAX - sizeof(*sh)) / sizeof(char *))
        goto out_enomem;
    for (i = 0; i < ncols; i++) {
        size_t len = names[i] ? strlen(names[i]) : 0;

        if (len >= SIZE_MAX - bytes)
            goto out_enomem;
        bytes += len + 1;
    }
    if (bytes > SIZE_MAX - sizeof(*sh) - ncols * sizeof(char *))
        goto out_enomem;
    sh = deferred__malloc(sizeof(*sh) + ncols * sizeof(char *) + bytes);
    if (!sh)
        return NULL;
    sh->refs = 1;
    sh->ncols = (uint32_t)ncols;
    sh->spare = NULL;
    sh->names = (char **)(sh + 1);
    p = (char *)(sh->names + ncols);
    for (i = 0; i < ncols; i++) {
        size_t len = names[i] ? strlen(names[i]) : 0;

        sh->names[i] = p;
        if (len)
            memcpy(p, names[i], len);
        p[len] = '\0';
        p += len + 1;
    }
    return sh;

out_enomem:
    errno = ENOMEM;
    return NULL;
}

void deferred_row_shape_unref(deferred_row_shape_t *shape)
{
    if (!shape || --shape->refs > 0)
        return;
    deferred__free(shape->spare);
    deferred__free(shape);
}

/* ---- making rows ------------------------------------------------------------- */

static size_t row_header(size_t ncols)
{
    return sizeof(deferred_row_t) + ncols * sizeof(struct column);
}

/* The largest data a row may have: its block (header, columns, data and
 * the room's growth) must not wrap, nor exceed what an object may be. */
#define ROW_MAX_BYTES ((size_t)PTRDIFF_MAX / 2)
/* The least data room of a row's block (a few short columns). */
#define ROW_MIN_ROOM 64

deferred_row_t *deferred_row_alloc(deferred_row_shape_t *shape, size_t bytes)
{
    deferred_row_t *row;
    size_t i;

    /* A shape's ncols is at most UINT32_MAX: its header cannot wrap. */
    if (!shape) {
        errno = EINVAL;
        return NULL;
    }
    if (bytes > ROW_MAX_BYTES) {
        errno = ENOMEM;
        return NULL;
    }
    row = shape->spare;
    if (row && row->room >= bytes) {
        shape->spare = NULL;
    } else {
        /* Round the room up so that rows of varying size settle on one
         * block that fits them all. */
        size_t room = bytes < ROW_MIN_ROOM ? ROW_MIN_ROOM : bytes + bytes / 2;

        if (shape->ncols > (SIZE_MAX - sizeof(deferred_row_t) - room) /
                               sizeof(struct column)) {
            errno = ENOMEM;
            return NULL;
        }
        row = deferred__malloc(row_header(shape->ncols) + room);
        if (!row)
            return NULL;
        row->room = room;
        row->ncols = shape->ncols;
        row->names = shape->names;
        row->data = (char *)row + row_header(shape->ncols);
    }
    row->shape = shape;
    shape->refs++;
    row->used = 0;
    for (i = 0; i < row->ncols; i++)
        row->cols[i].type = DEFERRED_ROW_NULL;
    return row;
}

int deferred_row_set_int(deferred_row_t *row, size_t i, int64_t x)
{
    if (!row || i >= row->ncols)
        return -EINVAL;
    row->cols[i].type = DEFERRED_ROW_INTEGER;
    row->cols[i].u.i = x;
    return 0;
}

int deferred_row_set_double(deferred_row_t *row, size_t i, double x)
{
    if (!row || i >= row->ncols)
        return -EINVAL;
    row->cols[i].type = DEFERRED_ROW_DOUBLE;
    row->cols[i].u.d = x;
    return 0;
}

static int set_bytes(deferred_row_t *row, size_t i, deferred_row_type_t type,
                     const void *p, size_t len)
{
    struct column *c;

    if (!row || i >= row->ncols || (!p && len) || len > ROW_MAX_BYTES)
        return -EINVAL;
    /* used <= room always; the bytes and their NUL must fit. */
    if (len >= row->room - row->used)
        return -ENOSPC;
    c = &row->cols[i];
    c->type = type;
    c->len = len;
    c->u.off = row->used;
    if (len)
        memcpy(row->data + row->used, p, len);
    row->data[row->used + len] = '\0';
    row->used += len + 1;
    return 0;
}

int deferred_row_set_text(deferred_row_t *row, size_t i, const char *s, size_t len)
{
    return set_bytes(row, i, DEFERRED_ROW_TEXT, s, len);
}

int deferred_row_set_blob(deferred_row_t *row, size_t i, const void *p, size_t len)
{
    return set_bytes(row, i, DEFERRED_ROW_BLOB, p, len);
}

void deferred_row_free(deferred_row_t *row)
{
    deferred_row_shape_t *shape;

    if (!row)
        return;
    shape = row->shape;
    if (!shape) {
        deferred__free(row);
        return;
    }
    /* Park it as the spare, unless this is the last reference (the
     * producer is gone: nobody would take it back). */
    if (!shape->spare && shape->refs > 1) {
        shape->spare = row;
        shape->refs--;
        return;
    }
    deferred__free(row);
    deferred_row_shape_unref(shape);
}

static void row_release(void *ptr)
{
    deferred_row_free(ptr);
}

deferred_value_t deferred_value_row(deferred_row_t *row)
{
    if (!row)
        return deferred_value_failure(NULL);
    return deferred_value_make(row, row_release);
}

deferred_row_t *deferred_value_get_row(deferred_value_t v)
{
    return v.release == row_release ? v.ptr : NULL;
}

deferred_row_t *deferred_row_copy(const deferred_row_t *row)
{
    deferred_row_t *copy;
    size_t i, names = 0, head;
    char *p;

    if (!row) {
        errno = EINVAL;
        return NULL;
    }
    for (i = 0; i < row->ncols; i++)
        names += strlen(row->names[i]) + 1;
    /* One block: header and columns, the name pointers (aligned: the
     * header's size is a multiple of a pointer's), the data, the names.
     * Each part exists already; their sum must not wrap either. */
    head = row_header(row->ncols);
    if (row->ncols > SIZE_MAX / sizeof(char *) ||
        names > SIZE_MAX - head - row->used ||
        row->ncols * sizeof(char *) > SIZE_MAX - head - row->used - names) {
        errno = ENOMEM;
        return NULL;
    }
    copy = deferred__malloc(head + row->ncols * sizeof(char *) + row->used + names);
    if (!copy)
        return NULL;
    memcpy(copy, row, head);
    copy->shape = NULL;
    copy->names = (char **)((char *)copy + head);
    copy->data = (char *)(copy->names + row->ncols);
    copy->room = row->used;
    if (row->used)
        memcpy(copy->data, row->data, row->used);
    p = copy->data + row->used;
    for (i = 0; i < row->ncols; i++) {
        size_t len = strlen(row->names[i]) + 1;

        memcpy(p, row->names[i], len);
        copy->names[i] = p;
        p += len;
    }
    return copy;
}

/* ---- reading rows --------------------------------------------------------------- */

size_t deferred_row_columns(const deferred_row_t *row)
{
    return row ? row->ncols : 0;
}

const char *deferred_row_name(const deferred_row_t *row, size_t i)
{
    return row && i < row->ncols ? row->names[i] : NULL;
}

long deferred_row_find(const deferred_row_t *row, const char *name)
{
    size_t i;

    if (!row || !name)
        return -1;
    for (i = 0; i < row->ncols; i++)
        if (strcmp(row->names[i], name) == 0)
            return (long)i;
    return -1;
}

static const struct column *col(const deferred_row_t *row, size_t i)
{
    return row && i < row->ncols ? &row->cols[i] : NULL;
}

deferred_row_type_t deferred_row_type(const deferred_row_t *row, size_t i)
{
    const struct column *c = col(row, i);

    return c ? c->type : DEFERRED_ROW_NULL;
}

bool deferred_row_is_null(const deferred_row_t *row, size_t i)
{
    return deferred_row_type(row, i) == DEFERRED_ROW_NULL;
}

int64_t deferred_row_int(const deferred_row_t *row, size_t i)
{
    const struct column *c = col(row, i);

    if (!c)
        return 0;
    switch (c->type) {
    case DEFERRED_ROW_INTEGER:
        return c->u.i;
    case DEFERRED_ROW_DOUBLE:
        return (int64_t)c->u.d;
    case DEFERRED_ROW_TEXT:
        return strtoll(row->data + c->u.off, NULL, 10);
    default:
        return 0;
    }
}

double deferred_row_double(const deferred_row_t *row, size_t i)
{
    const struct column *c = col(row, i);

    if (!c)
        return 0.0;
    switch (c->type) {
    case DEFERRED_ROW_INTEGER:
        return (double)c->u.i;
    case DEFERRED_ROW_DOUBLE:
        return c->u.d;
    case DEFERRED_ROW_TEXT:
        return strtod(row->data + c->u.off, NULL);
    default:
        return 0.0;
    }
}

const char *deferred_row_text(const deferred_row_t *row, size_t i)
{
    const struct column *c = col(row, i);

    if (!c || (c->type != DEFERRED_ROW_TEXT && c->type != DEFERRED_ROW_BLOB))
        return NULL;
    return row->data + c->u.off;
}

const void *deferred_row_blob(const deferred_row_t *row, size_t i, size_t *len)
{
    const struct column *c = col(row, i);

    if (!c || (c->type != DEFERRED_ROW_TEXT && c->type != DEFERRED_ROW_BLOB)) {
        if (len)
            *len = 0;
        return NULL;
    }
    if (len)
        *len = c->len;
    return row->data + c->u.off;
}

/* By name: an unknown name is an out-of-range index. */
static size_t index_of(const deferred_row_t *row, const char *name)
{
    long i = deferred_row_find(row, name);

    return i < 0 ? SIZE_MAX : (size_t)i;
}

bool deferred_row_is_null_named(const deferred_row_t *row, const char *name)
{
    return deferred_row_is_null(row, index_of(row, name));
}

int64_t deferred_row_int_named(const deferred_row_t *row, const char *name)
{
    return deferred_row_int(row, index_of(row, name));
}

double deferred_row_double_named(const deferred_row_t *row, const char *name)
{
    return deferred_row_double(row, index_of(row, name));
}

const char *deferred_row_text_named(const deferred_row_t *row, const char *name)
{
    return deferred_row_text(row, index_of(row, name));
}

const void *deferred_row_blob_named(const deferred_row_t *row, const char *name,
                                    size_t *len)
{
    return deferred_row_blob(row, index_of(row, name), len);
}

/* ---- parameters ------------------------------------------------------------------ */

deferred_param_t deferred_param_text(const char *s)
{
    deferred_param_t p;

    if (!s)
        return deferred_param_null();
    p.type = DEFERRED_ROW_TEXT;
    p.u.s.p = s;
    p.u.s.len = strlen(s);
    return p;
}
