/*
 * deferred/pg.h: PostgreSQL (libpq) connections and query results as
 * producers of rows (libdeferred-pg).  Being written (issue 7).
 */
#ifndef DEFERRED_PG_H
#define DEFERRED_PG_H

#include <libpq-fe.h>

#include "process.h"
#include "row.h"

#endif /* DEFERRED_PG_H */
