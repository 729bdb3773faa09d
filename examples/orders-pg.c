/*
 * orders-pg.c: the flagship example (examples/orders.c) against
 * PostgreSQL: the same report, per-order queries and merge, on two
 * connections to a server you name:
 *
 *   build/examples/orders-pg "host=/var/run/postgresql dbname=mydb"
 *   DEFERRED_PG_CONNINFO="postgresql://me@localhost/mydb" build/examples/orders-pg
 *
 * It makes the schema deferred_orders, runs the report and drops the
 * schema.  Without a connection string it skips (exit 77), which is what
 * "make check" sees unless DEFERRED_PG_CONNINFO is set.
 */
#define ORDERS_PG 1
#include "orders.c"
