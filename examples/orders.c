/*
 * orders.c: the flagship example.  An orders report streamed from an
 * embedded SQLite database, with a second query per order, nested groups,
 * and a merge of two queries into one consumer.
 *
 * It makes its own database (orders.db in a temporary directory, removed
 * at the end), then runs two processes on one libev loop:
 *
 *  1. The report.
 *       SQLite "orders" query  (a producer of rows, stepped by the loop)
 *       -> map "fetch lines"   (per order, a second query whose rows are
 *                               collected; the map returns that deferred,
 *                               so the chain waits for it and the orders
 *                               stay in order: one order in flight at once)
 *       -> "nest"              (turns each order and its lines into a
 *                               tagged group: start(order), the lines,
 *                               end(order))
 *       -> "report"            (its start(order) hands back a subordinate
 *                               consumer for that order's lines; what the
 *                               subordinate's finish returns, the order's
 *                               total, comes back to the report)
 *  2. A merge: two queries (the orders of 2024, the lines of three or more
 *     items) are two producers feeding one consumer, which is told which
 *     producer sent each row.
 *
 * It checks its own result against plain SQL sums and exits 0 only when
 * the report is right, so "make check" runs it.  examples/orders-pg.c
 * builds this same file against PostgreSQL (ORDERS_PG).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>

#ifdef ORDERS_PG
#include <deferred/pg.h>
#else
#include <deferred/sqlite.h>
#endif

static struct ev_loop *loop;

/* ---- the database (the only part that differs between the backends) ------ */

static const char schema[] =
    "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, placed TEXT);"
    "CREATE TABLE lines (order_id INTEGER, line_no INTEGER, item TEXT,"
    "                    qty INTEGER, price_cents INTEGER);"
    "INSERT INTO orders VALUES (1, 'Ada', '2024-11-02'), (2, 'Brian', '2024-12-15'),"
    " (3, 'Chen', '2025-01-09'), (4, 'Dana', '2025-02-20'), (5, 'Emil', '2025-03-03');"
    "INSERT INTO lines VALUES (1, 1, 'widget', 3, 250), (1, 2, 'gadget', 1, 1999),"
    " (2, 1, 'gizmo', 2, 500), (3, 1, 'widget', 10, 240), (3, 2, 'doohickey', 1, 50),"
    " (3, 3, 'gadget', 2, 1899), (5, 1, 'thingamajig', 4, 725);";

#ifdef ORDERS_PG
/* Two connections: the orders stream holds the first until it ends, so
 * the per-order queries go to the second. */
static deferred_pg_t *pg_stream, *pg_lookup;

static deferred_stage_t *query(const char *sql, const deferred_param_t *params, size_t n,
                               int which)
{
    return deferred_pg_query(which ? pg_lookup : pg_stream, sql, params, n);
}

static deferred_t *query_one(const char *sql)
{
    return deferred_pg_query_one(pg_lookup, sql, NULL, 0);
}
#else
static sqlite3 *db;

static deferred_stage_t *query(const char *sql, const deferred_param_t *params, size_t n,
                               int which)
{
    (void)which;
    return deferred_sqlite_query(loop, db, sql, params, n);
}

static deferred_t *query_one(const char *sql)
{
    return deferred_sqlite_query_one(loop, db, sql, NULL, 0);
}
#endif

/* ---- step 1: fetch each order's lines (a second query per row) ------------- */

/* An order and its lines, as one value. */
struct bundle {
    deferred_value_t order; /* a row */
    deferred_value_t lines; /* a deferred_array_t of rows */
};

static void bundle_free(void *ptr)
{
    struct bundle *b = ptr;

    deferred_value_release(b->order);
    deferred_value_release(b->lines);
    deferred_free(b);
}

/* The lines arrived: pair them with the order (held in *arg). */
static deferred_value_t attach_order(deferred_value_t lines, void *arg)
{
    deferred_value_t *order = arg;
    struct bundle *b;

    if (deferred_value_is_failure(lines))
        return lines;
    b = deferred_malloc(sizeof(*b));
    if (!b) {
        deferred_value_release(lines);
        return deferred_value_failure(NULL);
    }
    b->order = *order;
    b->lines = lines;
    *order = deferred_value_none();
    return deferred_value_make(b, bundle_free);
}

static void order_holder_free(void *arg)
{
    deferred_value_t *order = arg;

    deferred_value_release(*order);
    deferred_free(order);
}

/* map: order row -> deferred of (order, lines).  Returning a deferred
 * makes the map wait for it before the next order. */
static deferred_value_t fetch_lines(deferred_value_t order, void *arg)
{
    deferred_row_t *row = deferred_value_get_row(order);
    deferred_process_t *p;
    deferred_value_t *holder;
    deferred_t *d;

    (void)arg;
    p = deferred_process_new(0);
    holder = deferred_malloc(sizeof(*holder));
    if (!p || !holder) {
        deferred_process_unref(p);
        deferred_free(holder);
        deferred_value_release(order);
        return deferred_value_failure(NULL);
    }
    *holder = order;
    deferred_process_add(p, query("SELECT line_no, item, qty, price_cents FROM lines"
                                  " WHERE order_id = $1 ORDER BY line_no",
                                  DEFERRED_PARAMS(deferred_param_int(
                                      deferred_row_int_named(row, "id"))),
                                  1));
    deferred_process_add(p, deferred_stage_collect());
    d = deferred_process_run(p);
    deferred_process_unref(p);
    if (!d) {
        order_holder_free(holder);
        return deferred_value_failure(NULL);
    }
    if (deferred_add_both_full(d, attach_order, holder, order_holder_free) < 0) {
        deferred_unref(d);
        return deferred_value_failure(NULL);
    }
    return deferred_value_deferred(d);
}

/* ---- step 2: nest each order's lines in a tagged group ----------------------- */

static deferred_failure_t *nest_handle(deferred_stage_t *self, deferred_stage_t *from,
                                       deferred_value_t tag, deferred_value_t *item)
{
    struct bundle *b = item->ptr;
    deferred_array_t *lines = deferred_value_get_array(b->lines);
    size_t i;

    (void)from;
    (void)tag;
    /* The order row is the group's tag (borrowed for each call; the
     * bundle, which the library releases after handle, keeps it). */
    if (deferred_stage_start(self, b->order) < 0)
        return NULL;
    for (i = 0; i < deferred_array_size(lines); i++)
        if (deferred_stage_emit_tagged(self, b->order, deferred_array_take(lines, i)) < 0)
            return NULL;
    deferred_stage_end(self, b->order, deferred_value_none());
    return NULL;
}

static const deferred_stage_ops_t nest_ops = {
    .name = "nest",
    .handle = nest_handle,
};

/* ---- step 3: the report, with a subordinate consumer per order ------------------ */

static void print_cents(const char *label, long long cents)
{
    printf("%s%lld.%02lld\n", label, cents / 100, cents % 100);
}

/* The subordinate: one order's lines. */
struct order_sum {
    long long total;
    long lines;
    long *all_lines;
};

static deferred_failure_t *lines_handle(deferred_stage_t *self, deferred_stage_t *from,
                                        deferred_value_t tag, deferred_value_t *item)
{
    struct order_sum *os = deferred_stage_data(self);
    deferred_row_t *line = deferred_value_get_row(*item);
    long long qty = deferred_row_int_named(line, "qty");
    long long price = deferred_row_int_named(line, "price_cents");

    (void)from;
    (void)tag;
    printf("    %lld. %-12s %3lld x %4lld.%02lld = %6lld.%02lld\n",
           (long long)deferred_row_int_named(line, "line_no"),
           deferred_row_text_named(line, "item"), qty, price / 100, price % 100,
           qty * price / 100, qty * price % 100);
    os->total += qty * price;
    os->lines++;
    (*os->all_lines)++;
    return NULL;
}

/* The group ends: its result, the order's total, goes to the report. */
static deferred_value_t lines_finish(deferred_stage_t *self, deferred_stage_t *from,
                                     deferred_value_t tag, deferred_value_t outcome)
{
    struct order_sum *os = deferred_stage_data(self);

    (void)from;
    (void)tag;
    if (deferred_value_is_failure(outcome))
        return outcome;
    deferred_value_release(outcome);
    if (os->lines == 0)
        printf("    (no lines)\n");
    return deferred_value_of_int((intptr_t)os->total);
}

static void lines_destroy(void *data)
{
    deferred_free(data);
}

static const deferred_stage_ops_t lines_ops = {
    .name = "order lines",
    .handle = lines_handle,
    .finish = lines_finish,
    .destroy = lines_destroy,
};

struct report {
    long orders;
    long lines;
    long long grand;
    int64_t last_id;
    int in_order;
};

static deferred_failure_t *report_start(deferred_stage_t *self, deferred_stage_t *from,
                                        deferred_value_t tag, deferred_stage_t **sub)
{
    struct report *r = deferred_stage_data(self);
    deferred_row_t *order = deferred_value_get_row(tag);
    struct order_sum *os;

    (void)from;
    if (!order) {
        printf("Orders report\n=============\n");
        return NULL;
    }
    printf("Order #%lld  %-6s placed %s\n", (long long)deferred_row_int_named(order, "id"),
           deferred_row_text_named(order, "customer"),
           deferred_row_text_named(order, "placed"));
    os = deferred_malloc(sizeof(*os));
    if (!os)
        return deferred_failure_new(DEFERRED_DOMAIN_LIBRARY, ENOMEM, NULL);
    os->total = 0;
    os->lines = 0;
    os->all_lines = &r->lines;
    *sub = deferred_stage_new(&lines_ops, os, 0);
    return *sub ? NULL : deferred_failure_new(DEFERRED_DOMAIN_LIBRARY, ENOMEM, NULL);
}

/* An order's total, with the order as its tag. */
static deferred_failure_t *report_handle(deferred_stage_t *self, deferred_stage_t *from,
                                         deferred_value_t tag, deferred_value_t *item)
{
    struct report *r = deferred_stage_data(self);
    int64_t id = deferred_row_int_named(deferred_value_get_row(tag), "id");
    long long total = (long long)deferred_value_int(*item);

    (void)from;
    print_cents("    order total            ", total);
    if (id <= r->last_id)
        r->in_order = 0;
    r->last_id = id;
    r->orders++;
    r->grand += total;
    return NULL;
}

static deferred_value_t report_finish(deferred_stage_t *self, deferred_stage_t *from,
                                      deferred_value_t tag, deferred_value_t outcome)
{
    struct report *r = deferred_stage_data(self);

    (void)from;
    (void)tag;
    if (deferred_value_is_failure(outcome))
        return outcome;
    deferred_value_release(outcome);
    printf("-------------\n%ld orders, %ld lines\n", r->orders, r->lines);
    print_cents("Grand total                ", r->grand);
    return deferred_value_of_int((intptr_t)r->grand);
}

static const deferred_stage_ops_t report_ops = {
    .name = "report",
    .start = report_start,
    .handle = report_handle,
    .finish = report_finish,
};

/* ---- the merge: two producers, one consumer ------------------------------------ */

struct feed {
    deferred_stage_t *recent, *bulk;
    long from_recent, from_bulk;
};

static deferred_failure_t *feed_handle(deferred_stage_t *self, deferred_stage_t *from,
                                       deferred_value_t tag, deferred_value_t *item)
{
    struct feed *f = deferred_stage_data(self);
    deferred_row_t *row = deferred_value_get_row(*item);

    (void)tag;
    if (from == f->recent) {
        f->from_recent++;
        printf("  [orders of 2024] order #%lld by %s\n",
               (long long)deferred_row_int(row, 0), deferred_row_text(row, 1));
    } else if (from == f->bulk) {
        f->from_bulk++;
        printf("  [bulk lines]     %lld x %s in order #%lld\n",
               (long long)deferred_row_int(row, 2), deferred_row_text(row, 1),
               (long long)deferred_row_int(row, 0));
    }
    return NULL;
}

static const deferred_stage_ops_t feed_ops = {
    .name = "feed",
    .handle = feed_handle,
};

/* ---- running it ------------------------------------------------------------------- */

/* Run the loop until d fired; its result (borrowed), or NULL with the
 * failure's story printed. */
static int wait_ok(deferred_t *d, const char *what)
{
    while (!deferred_has_fired(d) && ev_run(loop, EVRUN_ONCE))
        ;
    if (!deferred_has_fired(d)) {
        fprintf(stderr, "orders: %s never finished\n", what);
        return 0;
    }
    if (deferred_value_is_failure(deferred_result(d))) {
        char *story = deferred_failure_story_alloc(deferred_value_get_failure(deferred_result(d)));

        fprintf(stderr, "orders: %s failed: %s\n", what, story ? story : "?");
        deferred_free(story);
        return 0;
    }
    return 1;
}

static int run_examples(void)
{
    deferred_process_t *p;
    deferred_t *d, *check;
    struct report r = {0, 0, 0, 0, 1};
    struct feed f = {NULL, NULL, 0, 0};
    long long grand;
    int ok = 1;

    /* 1. The report. */
    p = deferred_process_new(0);
    deferred_process_add(p, query("SELECT id, customer, placed FROM orders ORDER BY id",
                                  NULL, 0, 0));
    deferred_process_add(p, deferred_stage_map("fetch lines", fetch_lines, NULL));
    deferred_process_add(p, deferred_stage_new(&nest_ops, NULL, 0));
    deferred_process_add(p, deferred_stage_new(&report_ops, &r, 0));
    d = deferred_process_run(p);
    deferred_process_unref(p);
    if (!wait_ok(d, "the report")) {
        deferred_unref(d);
        return 0;
    }
    grand = (long long)deferred_value_int(deferred_result(d));
    deferred_unref(d);

    /* Check it against plain SQL. */
    check = query_one("SELECT count(*), sum(qty * price_cents) FROM lines");
    if (!wait_ok(check, "the check")) {
        deferred_unref(check);
        return 0;
    }
    {
        deferred_row_t *row = deferred_value_get_row(deferred_result(check));

        if (r.orders != 5 || !r.in_order || r.lines != deferred_row_int(row, 0) ||
            grand != deferred_row_int(row, 1) || grand != r.grand) {
            fprintf(stderr, "orders: WRONG REPORT: %ld orders, %ld lines, total %lld "
                            "(SQL says %lld lines, total %lld)\n",
                    r.orders, r.lines, grand, (long long)deferred_row_int(row, 0),
                    (long long)deferred_row_int(row, 1));
            ok = 0;
        }
    }
    deferred_unref(check);

    /* 2. The merge. */
    printf("\nOne feed from two queries\n=========================\n");
    p = deferred_process_new(0);
    f.recent = query("SELECT id, customer FROM orders WHERE placed < '2025-01-01' ORDER BY id",
                     NULL, 0, 0);
    f.bulk = query("SELECT order_id, item, qty FROM lines WHERE qty >= $1"
                   " ORDER BY order_id, line_no",
                   DEFERRED_PARAMS(deferred_param_int(3)), 1);
    deferred_process_add(p, f.recent);
    deferred_process_add(p, f.bulk);
    deferred_process_add(p, deferred_stage_new(&feed_ops, &f, 0));
    d = deferred_process_run(p);
    deferred_process_unref(p);
    if (!wait_ok(d, "the feed"))
        ok = 0;
    deferred_unref(d);
    printf("%ld rows from the orders query, %ld from the lines query\n", f.from_recent,
           f.from_bulk);
    if (f.from_recent != 2 || f.from_bulk != 3) {
        fprintf(stderr, "orders: WRONG FEED\n");
        ok = 0;
    }
    return ok;
}

#ifdef ORDERS_PG
/* The schema lives in its own PostgreSQL schema, made and dropped here
 * with plain blocking libpq calls (setting up is not the point). */
static int setup_pg(const char *conninfo, int drop)
{
    PGconn *c = PQconnectdb(conninfo);
    char sql[2048];
    PGresult *res;
    int ok;

    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "orders-pg: %s", PQerrorMessage(c));
        PQfinish(c);
        return 0;
    }
    if (drop)
        snprintf(sql, sizeof(sql), "SET client_min_messages = warning;"
                                   "DROP SCHEMA IF EXISTS deferred_orders CASCADE");
    else
        snprintf(sql, sizeof(sql),
                 "SET client_min_messages = warning;"
                 "DROP SCHEMA IF EXISTS deferred_orders CASCADE;"
                 "CREATE SCHEMA deferred_orders; SET search_path = deferred_orders; %s",
                 schema);
    res = PQexec(c, sql);
    ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok)
        fprintf(stderr, "orders-pg: %s", PQerrorMessage(c));
    PQclear(res);
    PQfinish(c);
    return ok;
}

static deferred_pg_t *connect_pg(const char *conninfo)
{
    deferred_t *d = deferred_pg_connect(loop, conninfo);
    deferred_pg_t *c = NULL;

    if (d && wait_ok(d, "connecting")) {
        deferred_value_t v = deferred_result_take(d);

        c = deferred_value_get_pg(v); /* we own v's reference now */
    }
    deferred_unref(d);
    return c;
}

int main(int argc, char **argv)
{
    const char *conninfo = argc > 1 ? argv[1] : getenv("DEFERRED_PG_CONNINFO");
    char info[1024];
    int ok;

    if (!conninfo || !*conninfo) {
        printf("orders-pg: SKIP: give a connection string as the argument or in "
               "DEFERRED_PG_CONNINFO\n");
        return 77;
    }
    if (!setup_pg(conninfo, 0))
        return 1;
    loop = ev_default_loop(0);
    /* Both connections look in the example's schema first. */
    snprintf(info, sizeof(info), "%s options='-c search_path=deferred_orders'", conninfo);
    if (strstr(conninfo, "://"))
        snprintf(info, sizeof(info), "%s", conninfo);
    pg_stream = connect_pg(info);
    pg_lookup = connect_pg(info);
    ok = pg_stream && pg_lookup;
    if (ok && strstr(conninfo, "://")) {
        /* A URI cannot take the options above: set the path per session. */
        deferred_t *a = deferred_pg_query_one(pg_stream, "SET search_path = deferred_orders",
                                              NULL, 0);
        deferred_t *b = deferred_pg_query_one(pg_lookup, "SET search_path = deferred_orders",
                                              NULL, 0);

        ok = wait_ok(a, "SET") && wait_ok(b, "SET");
        deferred_unref(a);
        deferred_unref(b);
    }
    if (ok)
        ok = run_examples();
    deferred_pg_unref(pg_stream);
    deferred_pg_unref(pg_lookup);
    ev_run(loop, 0);
    setup_pg(conninfo, 1);
    ev_loop_destroy(loop);
    printf(ok ? "\norders-pg: the report is right\n" : "\norders-pg: FAILED\n");
    return ok ? 0 : 1;
}
#else
int main(void)
{
    char dir[] = "/tmp/orders.XXXXXX", path[64];
    char *err = NULL;
    int ok;

    if (!mkdtemp(dir)) {
        perror("orders: mkdtemp");
        return 1;
    }
    snprintf(path, sizeof(path), "%s/orders.db", dir);
    if (sqlite3_open(path, &db) != SQLITE_OK ||
        sqlite3_exec(db, schema, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "orders: %s: %s\n", path, err ? err : sqlite3_errmsg(db));
        sqlite3_free(err);
        sqlite3_close(db);
        return 1;
    }
    printf("(database %s)\n\n", path);
    loop = ev_default_loop(0);
    ok = run_examples();
    ev_run(loop, 0); /* nothing is left: every query finished */
    sqlite3_close(db);
    unlink(path);
    rmdir(dir);
    ev_loop_destroy(loop);
    printf(ok ? "\norders: the report is right\n" : "\norders: FAILED\n");
    return ok ? 0 : 1;
}
#endif
