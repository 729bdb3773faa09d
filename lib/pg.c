/*
 * pg.c: PostgreSQL query results as producers of rows (being written).
 */
#include "deferred/pg.h"

DEFERRED_EXPORT int deferred_pg_placeholder(void);
int deferred_pg_placeholder(void)
{
    return 0;
}
