/*
 * orders-async.c: the flagship's report (examples/orders.c) with its
 * per-order logic written as a coroutine (deferred/async.h).
 *
 * The same five-order database (the fixture of examples/orders.c), and the
 * same report, printed by one function that reads like the synchronous
 * program it replaces:
 *
 *     for each order of the orders query:       (async-for: a SQLite producer)
 *         print the order
 *         lines = await the order's line query  (a second query, collected)
 *         print each line, the order's total
 *     print the grand total
 *
 * While the coroutine awaits an order's lines, the orders query is held
 * (its producer is paused until the loop asks for the next order): the
 * flow control examples/orders.c's "fetch window" stage does by hand, with
 * one line query in flight instead of K.  examples/orders-async.sh checks
 * that the report is examples/orders's, line for line.
 *
 *   examples/orders-async        the report; exit 0 when its grand total is
 *                                the one SQL gives
 *   examples/orders-async --loop L   the same on another loop (uv, glib,
 *                                clock: examples/example-loop.h)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <deferred.h>
#include <deferred/sqlite.h>

#include "example-loop.h"

#define PROG "orders-async"

static deferred_loop_t *dloop; /* the loop everything runs on */
static sqlite3 *db;

/* The data of examples/orders.c's fixture. */
static const char schema[] =
    "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, placed TEXT);"
    "CREATE TABLE lines (order_id INTEGER, line_no INTEGER, item TEXT,"
    "                    qty INTEGER, price_cents INTEGER);";

static const char fixture[] =
    "INSERT INTO orders VALUES (1, 'Ada', '2024-11-02'), (2, 'Brian', '2024-12-15'),"
    " (3, 'Chen', '2025-01-09'), (4, 'Dana', '2025-02-20'), (5, 'Emil', '2025-03-03');"
    "INSERT INTO lines VALUES (1, 1, 'widget', 3, 250), (1, 2, 'gadget', 1, 1999),"
    " (2, 1, 'gizmo', 2, 500), (3, 1, 'widget', 10, 240), (3, 2, 'doohickey', 1, 50),"
    " (3, 3, 'gadget', 2, 1899), (5, 1, 'thingamajig', 4, 725);"
    "CREATE INDEX lines_by_order ON lines (order_id, line_no);";

static void print_cents(const char *label, long long cents)
{
    printf("%s%lld.%02lld\n", label, cents / 100, cents % 100);
}

/* An order's lines: a second query, collected into an array of rows. */
static deferred_t *fetch_lines(const deferred_row_t *order)
{
    deferred_process_t *p = deferred_process_new(0);
    deferred_t *d;

    if (!p)
        return NULL;
    deferred_process_add(p, deferred_sqlite_query(
                                dloop, db,
                                "SELECT line_no, item, qty, price_cents FROM lines"
                                " WHERE order_id = $1 ORDER BY line_no",
                                DEFERRED_PARAMS_ARGS(deferred_param_int(
                                    deferred_row_int_named(order, "id")))));
    deferred_process_add(p, deferred_stage_collect());
    d = deferred_process_run(p);
    deferred_process_unref(p);
    return d;
}

/* ---- the report, a coroutine ------------------------------------------- */

struct report_frame {
    deferred_async_t co;         /* first, named co */
    deferred_async_iter_t orders; /* the orders query */
    deferred_value_t order;      /* the order in hand (a row) */
    deferred_value_t lines;      /* its lines (an array of rows) */
    size_t i;
    long n_orders, n_lines;
    long long total, grand;
};

static int report_body(void *frame)
{
    struct report_frame *f = frame;
    const deferred_row_t *o, *line;
    deferred_array_t *a;
    long long qty, price;

    DEFERRED_ASYNC_BEGIN(f);
    printf("Orders report\n=============\n");
    deferred_async_iter_open(&f->co, &f->orders,
                             deferred_sqlite_query(dloop, db,
                                                   "SELECT id, customer, placed FROM orders"
                                                   " ORDER BY id",
                                                   NULL, 0));
    DEFERRED_ASYNC_FOR(f, &f->orders, f->order) {
        o = deferred_value_get_row(f->order);
        printf("Order #%lld  %-6s placed %s\n", (long long)deferred_row_int_named(o, "id"),
               deferred_row_text_named(o, "customer"), deferred_row_text_named(o, "placed"));
        /* The orders query waits while this does. */
        DEFERRED_AWAIT(f, fetch_lines(o), f->lines);
        a = deferred_value_get_array(f->lines);
        f->total = 0;
        for (f->i = 0; f->i < deferred_array_size(a); f->i++) {
            line = deferred_value_get_row(deferred_array_get(a, f->i));
            qty = deferred_row_int_named(line, "qty");
            price = deferred_row_int_named(line, "price_cents");
            printf("    %lld. %-12s %3lld x %4lld.%02lld = %6lld.%02lld\n",
                   (long long)deferred_row_int_named(line, "line_no"),
                   deferred_row_text_named(line, "item"), qty, price / 100, price % 100,
                   qty * price / 100, qty * price % 100);
            f->total += qty * price;
            f->n_lines++;
        }
        if (deferred_array_size(a) == 0)
            printf("    (no lines)\n");
        print_cents("    order total            ", f->total);
        f->grand += f->total;
        f->n_orders++;
        deferred_value_release(f->lines);
        f->lines = deferred_value_none();
        deferred_value_release(f->order);
        f->order = deferred_value_none();
    }
    printf("-------------\n%ld orders, %ld lines\n", f->n_orders, f->n_lines);
    print_cents("Grand total                ", f->grand);
    DEFERRED_ASYNC_RETURN(f, deferred_value_int((intptr_t)f->grand));
    DEFERRED_ASYNC_FINALLY(f);
    /* Whatever exit: what the frame still holds goes. */
    deferred_value_release(f->order);
    f->order = deferred_value_none();
    deferred_value_release(f->lines);
    f->lines = deferred_value_none();
    DEFERRED_ASYNC_END(f);
}

/* Run the loop until d has fired; 1 when it fired with a value. */
static int wait_ok(deferred_t *d, const char *what)
{
    while (d && !deferred_has_result(d) && example_loop_once())
        ;
    if (!d || !deferred_has_result(d)) {
        fprintf(stderr, "%s: %s never finished\n", PROG, what);
        return 0;
    }
    if (deferred_value_is_failure(deferred_result(d))) {
        char *story = deferred_failure_story_alloc(deferred_value_get_failure(deferred_result(d)));

        fprintf(stderr, "%s: %s failed: %s\n", PROG, what, story ? story : "?");
        deferred_free(story);
        deferred_value_release(deferred_result_take(d)); /* handled: told */
        return 0;
    }
    return 1;
}

int main(int argc, char **argv)
{
    char dir[] = "/tmp/orders-async.XXXXXX", path[64];
    char *err = NULL;
    struct report_frame *f;
    deferred_t *d, *check;
    long long grand = -1, sql_total = -2;
    const char *kind = "ev";
    int ok;

    if (argc == 3 && strcmp(argv[1], "--loop") == 0 && example_loop_known(argv[2])) {
        kind = argv[2];
    } else if (argc != 1) {
        fprintf(stderr, "usage: " PROG " [--loop L]   (L: %s)\n", example_loop_kinds);
        return 2;
    }
    if (!mkdtemp(dir)) {
        perror(PROG ": mkdtemp");
        return 1;
    }
    snprintf(path, sizeof(path), "%s/orders.db", dir);
    if (sqlite3_open(path, &db) != SQLITE_OK ||
        sqlite3_exec(db, schema, NULL, NULL, &err) != SQLITE_OK ||
        sqlite3_exec(db, fixture, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, PROG ": %s: %s\n", path, err ? err : db ? sqlite3_errmsg(db) : "?");
        sqlite3_free(err);
        sqlite3_close(db);
        unlink(path);
        rmdir(dir);
        return 1;
    }
    printf("(database %s)\n\n", path);
    if (!(dloop = example_loop_open(kind, PROG))) {
        sqlite3_close(db);
        unlink(path);
        rmdir(dir);
        return 1;
    }

    f = DEFERRED_ASYNC_NEW(struct report_frame, report_body, "report");
    d = f ? deferred_async_start(f) : NULL;
    ok = wait_ok(d, "the report");
    if (ok)
        grand = (long long)deferred_value_get_int(deferred_result(d));
    deferred_unref(d);

    /* The grand total, checked against plain SQL. */
    check = deferred_sqlite_query_one(dloop, db, "SELECT sum(qty * price_cents) FROM lines",
                                      NULL, 0);
    if (wait_ok(check, "the check"))
        sql_total = deferred_row_int(deferred_value_get_row(deferred_result(check)), 0);
    deferred_unref(check);
    example_loop_close(); /* nothing is left: every query finished */
    sqlite3_close(db);
    unlink(path);
    rmdir(dir);
    ok = ok && grand == sql_total;
    printf(ok ? "\n" PROG ": the report is right\n" : "\n" PROG ": FAILED\n");
    return ok ? 0 : 1;
}
