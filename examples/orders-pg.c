/*
 * orders-pg.c: the flagship example (examples/orders.c) against
 * PostgreSQL: the same report, per-order queries, merge, options and
 * summary, on two connections to a server you name (one for the orders
 * stream, one in pipeline mode for the per-order queries, which the window
 * keeps in flight together on it):
 *
 *   build/examples/orders-pg "host=/var/run/postgresql dbname=mydb"
 *   DEFERRED_PG_CONNINFO="postgresql://me@localhost/mydb" build/examples/orders-pg
 *   build/examples/orders-pg --orders 100000 --quiet "$conninfo"
 *
 * "make" builds it; t/pg-harness.sh starts a throwaway server for it
 * (eval "$(t/pg-harness.sh start)", then "$conninfo").  It makes the
 * schema deferred_orders (the five orders of the fixture, or --orders N
 * generated ones), runs the report and drops the schema.  Without a
 * connection string it skips (exit 77), which is what "make check" sees
 * unless DEFERRED_PG_CONNINFO is set.
 */
#define ORDERS_PG 1
#include "orders.c"
