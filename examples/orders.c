/*
 * orders.c: the flagship example.  An orders report streamed from an
 * embedded SQLite database, with a second query per order, nested groups,
 * a merge of two queries into one consumer, and flow control.
 *
 *   examples/orders                      the five-order report, checked
 *   examples/orders --orders 100000      100,000 generated orders (about
 *                                        200,000 lines), progress on stderr
 *   examples/orders --orders N --quiet   only the totals and the summary
 *   examples/orders --window K           K line queries in flight (4)
 *   examples/orders --loop uv            the same on libuv (or glib, or
 *                                        the virtual-clock loop "clock")
 *
 * It makes its own database (orders.db in a temporary directory, removed
 * at the end), then runs two processes on one event loop (libev unless
 * --loop says otherwise: everything goes through deferred/loop.h):
 *
 *  1. The report.
 *       SQLite "orders" query  (a producer of rows, stepped by the loop)
 *       -> "fetch window"      (per order, a second query whose rows are
 *                               collected; up to K of them in flight at
 *                               once.  Each order goes on, in the order of
 *                               the orders whatever order their queries end
 *                               in, as a tagged group: start(order), its
 *                               lines, end(order).  When K orders wait in
 *                               the window it pauses the orders query, and
 *                               resumes it when one went on: real
 *                               backpressure, counted in the summary)
 *       -> "report"            (its start(order) hands back a subordinate
 *                               consumer for that order's lines; what the
 *                               subordinate's finish returns, the order's
 *                               total, comes back to the report)
 *  2. A merge: two queries (the orders of 2024, the lines of three or more
 *     items) are two producers feeding one consumer, which is told which
 *     producer sent each row.
 *
 * Then a summary: rows streamed, queries issued, queries in flight at
 * most, pauses applied, time and rows per second.
 *
 * It checks its own result against plain SQL (counts and sums) and exits
 * 0 only when the report is right, so "make check" runs it (and
 * examples/orders-scale.sh runs it with --orders 2000).
 * examples/orders-pg.c builds this same file against PostgreSQL
 * (ORDERS_PG).
 */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "example-loop.h"

#ifdef ORDERS_PG
#include <deferred/pg.h>
#define PROG "orders-pg"
#else
#include <deferred/sqlite.h>
#define PROG "orders"
#endif

/* ---- the event loop: --loop ev (the default), uv, glib or clock ---------- */

/* Everything below runs on dloop, the loop layer's adapter of whichever
 * loop was chosen (deferred/loop.h); examples/example-loop.h makes, runs
 * and frees the loop itself. */
static deferred_loop_t *dloop;
static const char *loop_kind = "ev";

/* ---- options and counters -------------------------------------------------- */

static struct options {
    long orders;   /* --orders N: generate N orders (0: the five-order fixture) */
    int quiet;     /* --quiet: no per-order report lines */
    long window;   /* --window K: line queries in flight at most */
    long show;     /* orders (and merged rows per query) printed in full */
} opt = {0, 0, 4, 0};

/* What the summary says. */
static struct stats {
    long order_rows;  /* rows of the orders query */
    long line_rows;   /* rows of the line queries */
    long merge_rows;  /* rows of the two merged queries */
    long queries;     /* queries issued */
    long line_queries;
    size_t max_running; /* line queries in flight at most */
    size_t max_in_flight; /* queries in flight at most, the orders stream's too */
    long pauses;      /* pauses the fetch window applied to the orders query */
    double t_start, t_progress;
    int progress_step;
} stats;

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- the database (the only part that differs between the backends) ------ */

static const char schema[] =
    "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, placed TEXT);"
    "CREATE TABLE lines (order_id INTEGER, line_no INTEGER, item TEXT,"
    "                    qty INTEGER, price_cents INTEGER);";

static const char fixture[] =
    "INSERT INTO orders VALUES (1, 'Ada', '2024-11-02'), (2, 'Brian', '2024-12-15'),"
    " (3, 'Chen', '2025-01-09'), (4, 'Dana', '2025-02-20'), (5, 'Emil', '2025-03-03');"
    "INSERT INTO lines VALUES (1, 1, 'widget', 3, 250), (1, 2, 'gadget', 1, 1999),"
    " (2, 1, 'gizmo', 2, 500), (3, 1, 'widget', 10, 240), (3, 2, 'doohickey', 1, 50),"
    " (3, 3, 'gadget', 2, 1899), (5, 1, 'thingamajig', 4, 725);";

/* Built after the data, for the per-order queries. */
static const char index_sql[] = "CREATE INDEX lines_by_order ON lines (order_id, line_no);";

/* --orders N: order i has (i * 7) % 5 lines (none for one order in five);
 * the names, items, quantities, prices and dates follow from i. */
#define GEN_CUSTOMER                                                                  \
    "CASE i %% 8 WHEN 0 THEN 'Ada' WHEN 1 THEN 'Brian' WHEN 2 THEN 'Chen'"            \
    " WHEN 3 THEN 'Dana' WHEN 4 THEN 'Emil' WHEN 5 THEN 'Fatima' WHEN 6 THEN 'Goran'" \
    " ELSE 'Hana' END"
#define GEN_LINE                                                                      \
    "id, j, CASE (id + j) %% 5 WHEN 0 THEN 'widget' WHEN 1 THEN 'gadget'"             \
    " WHEN 2 THEN 'gizmo' WHEN 3 THEN 'doohickey' ELSE 'thingamajig' END,"            \
    " (id * 13 + j * 7) %% 10 + 1, (id * 37 + j * 101) %% 4950 + 50"

#ifdef ORDERS_PG
static const char gen_sql[] =
    "INSERT INTO orders SELECT i, " GEN_CUSTOMER ","
    " to_char(date '2024-01-01' + (i * 7 %% 730), 'YYYY-MM-DD')"
    " FROM generate_series(1, %ld) AS i;"
    "INSERT INTO lines SELECT " GEN_LINE
    " FROM orders, generate_series(1, 4) AS j WHERE j <= id * 7 %% 5;";

/* Connections: the orders stream holds the first until it ends, so the
 * per-order queries go to a second one, in pipeline mode: the queries the
 * window keeps in flight are on the wire together, not one round trip
 * after another (each is still its own stream, its results in order). */
static deferred_pg_t *pg_stream, *pg_lookup;

static deferred_stage_t *query(const char *sql, const deferred_param_t *params, size_t n,
                               int which)
{
    stats.queries++;
    return deferred_pg_query(which ? pg_lookup : pg_stream, sql, params, n);
}

static deferred_t *query_one(const char *sql)
{
    stats.queries++;
    return deferred_pg_query_one(pg_lookup, sql, NULL, 0);
}
#else
static const char gen_sql[] =
    "BEGIN;"
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %ld)"
    " INSERT INTO orders SELECT i, " GEN_CUSTOMER ","
    " date('2024-01-01', '+' || (i * 7 %% 730) || ' days') FROM n;"
    "WITH RECURSIVE k(j) AS (SELECT 1 UNION ALL SELECT j + 1 FROM k WHERE j < 4)"
    " INSERT INTO lines SELECT " GEN_LINE " FROM orders JOIN k ON j <= id * 7 %% 5;"
    "COMMIT;";

static sqlite3 *db;

static deferred_stage_t *query(const char *sql, const deferred_param_t *params, size_t n,
                               int which)
{
    (void)which;
    stats.queries++;
    return deferred_sqlite_query(dloop, db, sql, params, n);
}

static deferred_t *query_one(const char *sql)
{
    stats.queries++;
    return deferred_sqlite_query_one(dloop, db, sql, NULL, 0);
}
#endif

/* The SQL that fills the database: the fixture, or N generated orders;
 * then the index.  Allocated (free() it). */
static char *data_sql(void)
{
    size_t size = sizeof(gen_sql) + sizeof(fixture) + sizeof(index_sql) + 32;
    char *sql = malloc(size);
    int n;

    if (!sql)
        return NULL;
    if (opt.orders)
        n = snprintf(sql, size, gen_sql, opt.orders);
    else
        n = snprintf(sql, size, "%s", fixture);
    snprintf(sql + n, size - n, "%s", index_sql);
    return sql;
}

/* ---- step 1: fetch each order's lines, K at once ----------------------------- */

/* The second query: a deferred of the order's lines, collected. */
static deferred_t *fetch_lines(deferred_row_t *order)
{
    deferred_process_t *p = deferred_process_new(0);
    deferred_t *d;

    if (!p)
        return NULL;
    deferred_process_add(p, query("SELECT line_no, item, qty, price_cents FROM lines"
                                  " WHERE order_id = $1 ORDER BY line_no",
                                  DEFERRED_PARAMS_ARGS(deferred_param_int(
                                      deferred_row_int_named(order, "id"))),
                                  1));
    deferred_process_add(p, deferred_stage_collect());
    d = deferred_process_run(p);
    deferred_process_unref(p);
    stats.line_queries++;
    return d;
}

/*
 * The window: the orders it holds, oldest first.  Each is queued (no
 * slot was free: the orders query sent it while paused), running (its
 * line query in flight) or done (its lines, or its failure, are in).  The
 * done ones at the head go downstream (send_order()), so the report sees
 * the orders in order whatever order their queries end in.
 */
enum { JOB_QUEUED, JOB_RUNNING, JOB_DONE };

struct window;

struct job {
    int refs;               /* the window's, and the line query callback's */
    struct window *w;       /* NULL once the window let it go */
    int state;
    deferred_value_t order; /* the order row */
    deferred_value_t lines; /* once done: the array of lines, or a failure */
    deferred_t *d;          /* while running: the line query */
};

struct window {
    deferred_stage_t *self;
    struct job **ring;
    size_t head, len, cap;
    size_t size;            /* K */
    size_t running;
    bool holding;           /* we hold a pause on the orders query */
    bool pumping, repump, in_handle, failed;
    bool stream_done;       /* the orders query ended */
    deferred_failure_t *fail; /* a failure met inside handle: handle returns it */
    deferred_t *drain;      /* the end of the stream waits on this */
    deferred_value_t final; /* ... to pass this on */
};

static void job_unref(void *arg)
{
    struct job *j = arg;

    if (--j->refs == 0) {
        deferred_value_release(j->order);
        deferred_value_release(j->lines);
        deferred_free(j);
    }
}

static void window_pump(struct window *w);

/* A line query ended (v: the lines, or its failure). */
static deferred_value_t job_done(deferred_value_t v, void *arg)
{
    struct job *j = arg;
    struct window *w = j->w;

    if (!w) { /* abandoned: nobody wants it */
        deferred_value_release(v);
        return deferred_value_none();
    }
    j->lines = v;
    j->state = JOB_DONE;
    deferred_unref(j->d);
    j->d = NULL;
    w->running--;
    window_pump(w);
    return deferred_value_none();
}

static void job_start(struct window *w, struct job *j)
{
    deferred_t *d = fetch_lines(deferred_value_get_row(j->order));

    if (!d) {
        j->lines = deferred_value_failure(NULL);
        j->state = JOB_DONE;
        return;
    }
    j->d = d;
    j->state = JOB_RUNNING;
    if (++w->running > stats.max_running)
        stats.max_running = w->running;
    if (w->running + !w->stream_done > stats.max_in_flight)
        stats.max_in_flight = w->running + !w->stream_done;
    j->refs++;
    /* job_done may run inside this call, if the query ended already. */
    if (deferred_add_both_full(d, job_done, j, job_unref) < 0 && j->state == JOB_RUNNING) {
        deferred_cancel(d);
        deferred_unref(d);
        j->d = NULL;
        j->lines = deferred_value_failure(NULL);
        j->state = JOB_DONE;
        w->running--;
    }
}

/* An order goes on as a tagged group: start(order), its lines, end(order).
 * The order row is the group's tag (borrowed for each call; the job keeps
 * it); the lines are moved out of their array.  0, or -ECANCELED when the
 * stream no longer flows. */
static int send_order(deferred_stage_t *self, deferred_value_t order, deferred_value_t lines)
{
    deferred_array_t *a = deferred_value_get_array(lines);
    size_t i;

    if (deferred_stage_start(self, order) < 0)
        return -ECANCELED;
    for (i = 0; i < deferred_array_size(a); i++)
        if (deferred_stage_emit_tagged(self, order, deferred_array_take(a, i)) < 0)
            return -ECANCELED;
    return deferred_stage_end(self, order, deferred_value_none()) < 0 ? -ECANCELED : 0;
}

/* Start what a free slot allows, send on the done ones at the head, and
 * let the orders query go on when the window has room. */
static void window_pump(struct window *w)
{
    size_t i;

    if (w->pumping) {
        w->repump = true;
        return;
    }
    w->pumping = true;
    do {
        w->repump = false;
        for (i = 0; i < w->len && w->running < w->size && !w->failed; i++) {
            struct job *j = w->ring[(w->head + i) % w->cap];

            if (j->state == JOB_QUEUED)
                job_start(w, j);
        }
        while (w->len && !w->failed && w->ring[w->head]->state == JOB_DONE) {
            struct job *j = w->ring[w->head];

            w->ring[w->head] = NULL;
            w->head = (w->head + 1) % w->cap;
            w->len--;
            if (deferred_value_is_failure(j->lines)) {
                deferred_failure_t *f = deferred_value_take_failure(j->lines);

                j->lines = deferred_value_none();
                w->failed = true;
                if (w->in_handle)
                    w->fail = f;
                else
                    deferred_stage_fail(w->self, f);
            } else if (send_order(w->self, j->order, j->lines) < 0) {
                w->failed = true;
            }
            job_unref(j);
        }
        if (w->holding && w->len < w->size) {
            w->holding = false;
            deferred_stage_resume(w->self);
        }
    } while (w->repump);
    w->pumping = false;
    if (!w->len && w->drain) {
        deferred_t *drain = w->drain;
        deferred_value_t v = w->final;

        w->drain = NULL;
        w->final = deferred_value_none();
        deferred_callback(drain, v);
        deferred_unref(drain);
    }
}

static deferred_failure_t *window_handle(deferred_stage_t *self, deferred_stage_t *from,
                                         deferred_value_t tag, deferred_value_t *item)
{
    struct window *w = deferred_stage_data(self);
    struct job *j;
    deferred_failure_t *f;

    (void)from;
    (void)tag;
    w->self = self;
    stats.order_rows++;
    if (w->len == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 8, i;
        struct job **ring = deferred_malloc(cap * sizeof(*ring));

        if (!ring)
            return deferred_failure_new(DEFERRED_DOMAIN_LIBRARY, ENOMEM, NULL);
        for (i = 0; i < w->len; i++)
            ring[i] = w->ring[(w->head + i) % w->cap];
        deferred_free(w->ring);
        w->ring = ring;
        w->head = 0;
        w->cap = cap;
    }
    j = deferred_malloc(sizeof(*j));
    if (!j)
        return deferred_failure_new(DEFERRED_DOMAIN_LIBRARY, ENOMEM, NULL);
    j->refs = 1;
    j->w = w;
    j->state = JOB_QUEUED;
    j->order = *item; /* moved out of the stream */
    *item = deferred_value_none();
    j->lines = deferred_value_none();
    j->d = NULL;
    w->ring[(w->head + w->len++) % w->cap] = j;
    if (!w->holding && w->len >= w->size) {
        /* The window is full: the orders query waits. */
        w->holding = true;
        stats.pauses++;
        deferred_stage_pause(self);
    }
    w->in_handle = true;
    window_pump(w);
    w->in_handle = false;
    f = w->fail;
    w->fail = NULL;
    return f;
}

/* Let every order go: a running query is cancelled (its callback finds
 * nothing waiting). */
static void window_abandon(struct window *w)
{
    while (w->len) {
        struct job *j = w->ring[w->head];

        w->head = (w->head + 1) % w->cap;
        w->len--;
        j->w = NULL;
        if (j->d) {
            deferred_cancel(j->d);
            deferred_unref(j->d);
            j->d = NULL;
        }
        job_unref(j);
    }
    w->running = 0;
}

/* At the end of the stream, wait for the orders still in the window;
 * when the stream failed or was cancelled, they are dropped. */
static deferred_value_t window_finish(deferred_stage_t *self, deferred_stage_t *from,
                                      deferred_value_t tag, deferred_value_t outcome)
{
    struct window *w = deferred_stage_data(self);

    (void)from;
    if (!deferred_value_is_none(tag))
        return outcome;
    w->stream_done = true;
    if (deferred_value_is_failure(outcome)) {
        window_abandon(w);
        if (w->holding) {
            w->holding = false;
            deferred_stage_resume(self);
        }
        return outcome;
    }
    if (!w->len || w->drain)
        return outcome;
    w->drain = deferred_new();
    if (!w->drain) {
        deferred_value_release(outcome);
        return deferred_value_failure(NULL);
    }
    w->final = outcome;
    return deferred_value_deferred(deferred_ref(w->drain));
}

static void window_destroy(void *data)
{
    struct window *w = data;

    window_abandon(w);
    deferred_free(w->ring);
    deferred_failure_unref(w->fail);
    deferred_value_release(w->final);
    deferred_unref(w->drain);
    deferred_free(w);
}

static const deferred_stage_ops_t window_ops = {
    .name = "fetch window",
    .handle = window_handle,
    .finish = window_finish,
    .destroy = window_destroy,
};

static deferred_stage_t *fetch_window(size_t size)
{
    struct window *w = deferred_malloc(sizeof(*w));

    if (!w)
        return NULL;
    memset(w, 0, sizeof(*w));
    w->size = size;
    w->final = deferred_value_none();
    return deferred_stage_new(&window_ops, w, 0);
}

/* ---- step 2: the report, with a subordinate consumer per order ------------------ */

static void print_cents(const char *label, long long cents)
{
    printf("%s%lld.%02lld\n", label, cents / 100, cents % 100);
}

/* The subordinate: one order's lines. */
struct order_sum {
    long long total;
    long lines;
    long *all_lines;
    bool print;
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
    if (os->print)
        printf("    %lld. %-12s %3lld x %4lld.%02lld = %6lld.%02lld\n",
               (long long)deferred_row_int_named(line, "line_no"),
               deferred_row_text_named(line, "item"), qty, price / 100, price % 100,
               qty * price / 100, qty * price % 100);
    os->total += qty * price;
    os->lines++;
    (*os->all_lines)++;
    stats.line_rows++;
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
    if (os->lines == 0 && os->print)
        printf("    (no lines)\n");
    return deferred_value_int((intptr_t)os->total);
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
    long started; /* orders whose group opened */
    long orders;  /* orders whose total came back */
    long lines;
    long long grand;
    int64_t last_id;
    int in_order;
};

/* Progress on stderr, at every tenth of the orders and at least every
 * second, for a generated run. */
static void progress(long done)
{
    double t = now_s();
    int step = (int)(done * 10 / opt.orders);

    if (step <= stats.progress_step && t - stats.t_progress < 1.0)
        return;
    stats.progress_step = step;
    stats.t_progress = t;
    fprintf(stderr, "%s: %3ld%%  %ld of %ld orders, %ld rows streamed, %.1f s\n", PROG,
            done * 100 / opt.orders, done, opt.orders, stats.order_rows + stats.line_rows,
            t - stats.t_start);
}

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
    os = deferred_malloc(sizeof(*os));
    if (!os)
        return deferred_failure_new(DEFERRED_DOMAIN_LIBRARY, ENOMEM, NULL);
    os->print = r->started++ < opt.show;
    if (os->print)
        printf("Order #%lld  %-6s placed %s\n", (long long)deferred_row_int_named(order, "id"),
               deferred_row_text_named(order, "customer"),
               deferred_row_text_named(order, "placed"));
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
    long long total = (long long)deferred_value_get_int(*item);

    (void)from;
    if (r->orders < opt.show)
        print_cents("    order total            ", total);
    if (id <= r->last_id)
        r->in_order = 0;
    r->last_id = id;
    r->orders++;
    r->grand += total;
    if (opt.orders >= 1000)
        progress(r->orders);
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
    if (opt.show && r->orders > opt.show)
        printf("... and %ld more orders\n", r->orders - opt.show);
    printf("-------------\n%ld orders, %ld lines\n", r->orders, r->lines);
    print_cents("Grand total                ", r->grand);
    return deferred_value_int((intptr_t)r->grand);
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
    stats.merge_rows++;
    if (from == f->recent) {
        if (f->from_recent++ < opt.show)
            printf("  [orders of 2024] order #%lld by %s\n",
                   (long long)deferred_row_int(row, 0), deferred_row_text(row, 1));
    } else if (from == f->bulk) {
        if (f->from_bulk++ < opt.show)
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

/* Run the loop until d fired; 1 when it holds a value, else 0 with the
 * failure's story printed (and the failure taken from d). */
static int wait_ok(deferred_t *d, const char *what)
{
    while (d && !deferred_has_fired(d) && example_loop_once())
        ;
    if (!d || !deferred_has_fired(d)) {
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

/* A one-row query's two integers, checked against what the run counted. */
static int check_sql(const char *sql, long long *a, long long *b)
{
    deferred_t *d = query_one(sql);
    int ok = wait_ok(d, "the check");

    if (ok) {
        deferred_row_t *row = deferred_value_get_row(deferred_result(d));

        *a = deferred_row_int(row, 0);
        *b = deferred_row_int(row, 1);
    }
    deferred_unref(d);
    return ok;
}

static void summary(double t_gen, double t_run)
{
    long rows = stats.order_rows + stats.line_rows + stats.merge_rows;

    printf("\nSummary\n=======\n");
    printf("  rows streamed      %ld (%ld orders, %ld lines, %ld in the merge)\n", rows,
           stats.order_rows, stats.line_rows, stats.merge_rows);
    printf("  queries issued     %ld (1 of the orders, %ld of lines, 2 merged, 2 checks)\n",
           stats.queries, stats.line_queries);
    printf("  in flight at most  %zu queries (the orders stream and line queries: at most"
           " %zu at once, window %ld)\n",
           stats.max_in_flight, stats.max_running, opt.window);
    printf("  pauses applied     %ld (the window was full: the orders query waited)\n",
           stats.pauses);
    printf("  time               %.3f s streaming, %.0f rows/s (%.3f s making the data)\n",
           t_run, t_run > 0 ? rows / t_run : 0.0, t_gen);
}

static int run_examples(double t_gen)
{
    deferred_process_t *p;
    deferred_t *d;
    struct report r = {0, 0, 0, 0, 0, 1};
    struct feed f = {NULL, NULL, 0, 0};
    long long grand, sql_lines, sql_total, sql_recent, sql_bulk;
    long expect = opt.orders ? opt.orders : 5;
    double t_run;
    int ok = 1;

    stats.t_start = stats.t_progress = now_s();

    /* 1. The report. */
    p = deferred_process_new(0);
    deferred_process_add(p, query("SELECT id, customer, placed FROM orders ORDER BY id",
                                  NULL, 0, 0));
    deferred_process_add(p, fetch_window((size_t)opt.window));
    deferred_process_add(p, deferred_stage_new(&report_ops, &r, 0));
    d = deferred_process_run(p);
    deferred_process_unref(p);
    if (!wait_ok(d, "the report")) {
        deferred_unref(d);
        return 0;
    }
    grand = (long long)deferred_value_get_int(deferred_result(d));
    deferred_unref(d);

    /* 2. The merge. */
    printf("\nOne feed from two queries\n=========================\n");
    p = deferred_process_new(0);
    f.recent = query("SELECT id, customer FROM orders WHERE placed < '2025-01-01' ORDER BY id",
                     NULL, 0, 0);
    f.bulk = query("SELECT order_id, item, qty FROM lines WHERE qty >= $1"
                   " ORDER BY order_id, line_no",
                   DEFERRED_PARAMS_ARGS(deferred_param_int(3)), 1);
    deferred_process_add(p, f.recent);
    deferred_process_add(p, f.bulk);
    deferred_process_add(p, deferred_stage_new(&feed_ops, &f, 0));
    d = deferred_process_run(p);
    deferred_process_unref(p);
    if (!wait_ok(d, "the feed"))
        ok = 0;
    deferred_unref(d);
    if (opt.show && f.from_recent + f.from_bulk > 2 * opt.show)
        printf("  ...\n");
    printf("%ld rows from the orders query, %ld from the lines query\n", f.from_recent,
           f.from_bulk);
    t_run = now_s() - stats.t_start;

    /* Check both against plain SQL. */
    if (!check_sql("SELECT count(*), sum(qty * price_cents) FROM lines", &sql_lines,
                   &sql_total) ||
        !check_sql("SELECT (SELECT count(*) FROM orders WHERE placed < '2025-01-01'),"
                   " (SELECT count(*) FROM lines WHERE qty >= 3)",
                   &sql_recent, &sql_bulk))
        return 0;
    printf("\nSQL says: %lld lines, total %lld.%02lld; %lld orders of 2024, %lld bulk lines\n",
           sql_lines, sql_total / 100, sql_total % 100, sql_recent, sql_bulk);
    summary(t_gen, t_run);
    if (r.orders != expect || !r.in_order || r.lines != sql_lines || grand != sql_total ||
        grand != r.grand || stats.order_rows != expect) {
        fprintf(stderr, "%s: WRONG REPORT: %ld orders (in order: %s), %ld lines, total %lld\n",
                PROG, r.orders, r.in_order ? "yes" : "no", r.lines, grand);
        ok = 0;
    }
    if (f.from_recent != sql_recent || f.from_bulk != sql_bulk ||
        (!opt.orders && (f.from_recent != 2 || f.from_bulk != 3))) {
        fprintf(stderr, "%s: WRONG FEED\n", PROG);
        ok = 0;
    }
    return ok;
}

static void usage(FILE *to)
{
#ifdef ORDERS_PG
    fprintf(to, "usage: " PROG " [--orders N] [--quiet] [--window K] [CONNINFO]\n");
#else
    fprintf(to, "usage: " PROG " [--orders N] [--quiet] [--window K]\n");
#endif
    fprintf(to, "  --orders N   generate N orders (and about 2N lines) instead of the"
                " five of the fixture\n"
                "  --quiet      print no order, only the totals and the summary\n"
                "  --window K   line queries in flight at most (1 to 64; 4)\n"
                "  --loop L     the event loop to run on: %s (ev)\n", example_loop_kinds);
}

/* Parse the options; the index of the first operand, or -1 (exit status
 * in *status). */
static int parse_options(int argc, char **argv, int *status)
{
    static const struct option longopts[] = {
        {"orders", required_argument, NULL, 'n'},
        {"quiet", no_argument, NULL, 'q'},
        {"window", required_argument, NULL, 'w'},
        {"loop", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    char *end;

    while ((c = getopt_long(argc, argv, "n:qw:l:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'l':
            loop_kind = optarg;
            if (!example_loop_known(optarg)) {
                fprintf(stderr, "%s: --loop takes one of: %s\n", PROG, example_loop_kinds);
                *status = 2;
                return -1;
            }
            break;
        case 'n':
            opt.orders = strtol(optarg, &end, 10);
            if (*end || end == optarg || opt.orders < 1 || opt.orders > 100000000) {
                fprintf(stderr, "%s: --orders takes a number from 1 to 100000000\n", PROG);
                *status = 2;
                return -1;
            }
            break;
        case 'q':
            opt.quiet = 1;
            break;
        case 'w':
            opt.window = strtol(optarg, &end, 10);
            if (*end || end == optarg || opt.window < 1 || opt.window > 64) {
                fprintf(stderr, "%s: --window takes a number from 1 to 64\n", PROG);
                *status = 2;
                return -1;
            }
            break;
        case 'h':
            usage(stdout);
            *status = 0;
            return -1;
        default:
            usage(stderr);
            *status = 2;
            return -1;
        }
    }
    /* Every order in full when there are few; else the first three. */
    opt.show = opt.quiet ? 0 : (!opt.orders || opt.orders <= 10) ? 10 : 3;
    return optind;
}

#ifdef ORDERS_PG
/* The tables live in their own PostgreSQL schema, made, filled and
 * dropped here with plain blocking libpq calls (setting up is not the
 * point). */
static int setup_pg(const char *conninfo, int drop)
{
    PGconn *c = PQconnectdb(conninfo);
    char *data = drop ? NULL : data_sql();
    const char *pre = "SET client_min_messages = warning;"
                      "DROP SCHEMA IF EXISTS deferred_orders CASCADE;";
    size_t size = strlen(pre) + sizeof(schema) + (data ? strlen(data) : 0) + 128;
    char *sql = malloc(size);
    PGresult *res;
    int ok;

    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, PROG ": %s", PQerrorMessage(c));
        PQfinish(c);
        free(data);
        free(sql);
        return 0;
    }
    if (!sql || (!drop && !data)) {
        fprintf(stderr, PROG ": out of memory\n");
        ok = 0;
    } else {
        if (drop)
            snprintf(sql, size, "%s", pre);
        else
            snprintf(sql, size,
                     "%sCREATE SCHEMA deferred_orders; SET search_path = deferred_orders;"
                     "%s%sANALYZE;",
                     pre, schema, data);
        res = PQexec(c, sql);
        ok = PQresultStatus(res) == PGRES_COMMAND_OK;
        if (!ok)
            fprintf(stderr, PROG ": %s", PQerrorMessage(c));
        PQclear(res);
    }
    PQfinish(c);
    free(data);
    free(sql);
    return ok;
}

static deferred_pg_t *connect_pg(const char *conninfo)
{
    deferred_t *d = deferred_pg_connect(dloop, conninfo);
    deferred_pg_t *c = NULL;

    if (d && wait_ok(d, "connecting")) {
        deferred_value_t v = deferred_result_take(d);

        c = deferred_value_get_pg(v); /* we own v's reference now */
    }
    deferred_unref(d);
    return c;
}

/* A URI cannot take options=: set the search path per session. */
static int set_path(deferred_pg_t *c)
{
    deferred_t *d = deferred_pg_query_one(c, "SET search_path = deferred_orders", NULL, 0);
    int ok = wait_ok(d, "SET");

    deferred_unref(d);
    return ok;
}

int main(int argc, char **argv)
{
    const char *conninfo;
    char info[1024];
    double t_gen;
    int ok, arg, status = 0;

    if ((arg = parse_options(argc, argv, &status)) < 0)
        return status;
    conninfo = arg < argc ? argv[arg] : getenv("DEFERRED_PG_CONNINFO");
    if (!conninfo || !*conninfo) {
        printf(PROG ": SKIP: give a connection string as the argument or in "
                    "DEFERRED_PG_CONNINFO\n");
        return 77;
    }
    t_gen = now_s();
    if (!setup_pg(conninfo, 0))
        return 1;
    t_gen = now_s() - t_gen;
    printf("(schema deferred_orders: %ld orders%s)\n\n", opt.orders ? opt.orders : 5,
           opt.orders ? ", generated" : "");
    if (!(dloop = example_loop_open(loop_kind, PROG)))
        return 1;
    /* Every connection looks in the example's schema first. */
    snprintf(info, sizeof(info), "%s options='-c search_path=deferred_orders'", conninfo);
    if (strstr(conninfo, "://"))
        snprintf(info, sizeof(info), "%s", conninfo);
    pg_stream = connect_pg(info);
    ok = pg_stream != NULL;
    ok = (pg_lookup = connect_pg(info)) != NULL && ok;
    if (ok && strstr(conninfo, "://"))
        ok = set_path(pg_stream) && set_path(pg_lookup);
    if (ok && deferred_pg_set_pipeline(pg_lookup, true) != 0) {
        fprintf(stderr, PROG ": could not enter pipeline mode\n");
        ok = 0;
    }
    if (ok)
        ok = run_examples(t_gen);
    deferred_pg_unref(pg_stream);
    deferred_pg_unref(pg_lookup);
    example_loop_close();
    setup_pg(conninfo, 1);
    printf(ok ? "\n" PROG ": the report is right\n" : "\n" PROG ": FAILED\n");
    return ok ? 0 : 1;
}
#else
int main(int argc, char **argv)
{
    char dir[] = "/tmp/orders.XXXXXX", path[64];
    char *err = NULL, *data;
    double t_gen;
    int ok, arg, status = 0;

    if ((arg = parse_options(argc, argv, &status)) < 0)
        return status;
    if (arg < argc) {
        usage(stderr);
        return 2;
    }
    if (!mkdtemp(dir)) {
        perror(PROG ": mkdtemp");
        return 1;
    }
    snprintf(path, sizeof(path), "%s/orders.db", dir);
    t_gen = now_s();
    data = data_sql();
    if (!data || sqlite3_open(path, &db) != SQLITE_OK ||
        sqlite3_exec(db, schema, NULL, NULL, &err) != SQLITE_OK ||
        sqlite3_exec(db, data, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, PROG ": %s: %s\n", path,
                err ? err : db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_free(err);
        sqlite3_close(db);
        free(data);
        unlink(path);
        rmdir(dir);
        return 1;
    }
    free(data);
    t_gen = now_s() - t_gen;
    if (opt.orders)
        printf("(database %s: %ld orders, generated)\n\n", path, opt.orders);
    else
        printf("(database %s)\n\n", path);
    if (!(dloop = example_loop_open(loop_kind, PROG))) {
        sqlite3_close(db);
        unlink(path);
        rmdir(dir);
        return 1;
    }
    ok = run_examples(t_gen);
    example_loop_close(); /* nothing is left: every query finished */
    sqlite3_close(db);
    unlink(path);
    rmdir(dir);
    printf(ok ? "\n" PROG ": the report is right\n" : "\n" PROG ": FAILED\n");
    return ok ? 0 : 1;
}
#endif
