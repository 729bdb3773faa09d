/*
 * test-pg.c: PostgreSQL connections and query producers (scenarios D03,
 * D04, D05, defined in docs/scenarios.md), on a throwaway server that the
 * test starts itself (pg-harness.c): single-row streaming with
 * backpressure, a server that dies mid-stream, a SQLite query and a
 * PostgreSQL query merged into one consumer, queued queries, cancel, and
 * bad input (a closed connection, bad SQL, wrong parameter counts, a
 * refused connection).
 *
 * Skips (77) only when the server binaries are absent.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>
#include <deferred/ev.h>
#include <deferred/pg.h>
#ifdef TEST_WITH_SQLITE
#include <deferred/sqlite.h>
#endif

#include "pg-harness.h"
#include "testutil.h"

static struct pgh server;
static struct ev_loop *loop;
static deferred_loop_t *dloop; /* its adapter (deferred/loop.h) */
static deferred_pg_t *conn;

/* ---- helpers -------------------------------------------------------------- */

/* Run the loop until d fired (or nothing is left to wait for). */
static void wait_for(deferred_t *d)
{
    while (!deferred_has_fired(d))
        if (!ev_run(loop, EVRUN_ONCE))
            break;
}

static deferred_pg_t *connect_to(const char *conninfo)
{
    deferred_t *d = deferred_pg_connect(dloop, conninfo);
    deferred_value_t v;
    deferred_pg_t *c;

    ck_assert_ptr_nonnull(d);
    wait_for(d);
    ck_assert(deferred_has_fired(d));
    v = deferred_result_take(d);
    c = deferred_value_get_pg(v);
    if (!c) {
        char *story = deferred_failure_story_alloc(deferred_value_get_failure(v));

        ck_abort_msg("could not connect: %s", story ? story : "?");
    }
    deferred_unref(d);
    return c; /* the value's reference is ours now */
}

static void setup(void)
{
    tu_setup();
    loop = ev_loop_new(EVFLAG_AUTO);
    dloop = deferred_ev_loop_new(loop);
    ck_assert_ptr_nonnull(dloop);
    conn = connect_to(server.conninfo);
    ck_assert(deferred_pg_is_open(conn));
}

static void teardown(void)
{
    deferred_pg_unref(conn);
    conn = NULL;
    /* The connections and queries left no watcher behind. */
    ck_assert_int_eq(ev_run(loop, EVRUN_NOWAIT), 0);
    deferred_loop_unref(dloop);
    dloop = NULL;
    ev_loop_destroy(loop);
    tu_teardown();
}

static deferred_failure_t *failure_of(deferred_t *d)
{
    return deferred_value_get_failure(deferred_result(d));
}

static bool context_has(const deferred_failure_t *f, const char *stage, const char *item)
{
    size_t i;

    for (i = 0; i < deferred_failure_context_size(f); i++) {
        const char *st = deferred_failure_context_stage(f, i);
        const char *it = deferred_failure_context_item(f, i);

        if (st && strcmp(st, stage) == 0 && it && strstr(it, item))
            return true;
    }
    return false;
}

/* ---- a consumer that checks rows: column 0 counts 1, 2, 3, ... per source --- */

#define MAXSRC 2
struct check {
    deferred_stage_t *self;
    deferred_stage_t *src[MAXSRC];
    long rows[MAXSRC];
    int64_t last[MAXSRC];
    bool in_order;
    long pause_every;          /* pause after every N rows (0: never) */
    double pause_for;          /* ... for this long */
    long cancel_at;
    void (*at_row)(struct check *c, long n); /* called after each row */
    long finishes;
    size_t max_live;           /* blocks alive, sampled */
    long pauses;
    ev_timer timer;
};

static int src_index(struct check *c, deferred_stage_t *from)
{
    int i;

    for (i = 0; i < MAXSRC; i++) {
        if (c->src[i] == from)
            return i;
        if (!c->src[i]) {
            c->src[i] = from;
            return i;
        }
    }
    ck_abort_msg("too many sources");
    return 0;
}

static void check_resume_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    struct check *c = w->data;

    (void)l;
    (void)revents;
    deferred_stage_resume(c->self);
}

static deferred_failure_t *check_handle(deferred_stage_t *self, deferred_stage_t *from,
                                        deferred_value_t tag, deferred_value_t *item)
{
    struct check *c = deferred_stage_data(self);
    deferred_row_t *row = deferred_value_get_row(*item);
    int s = src_index(c, from);
    int64_t i;
    long total;

    (void)tag;
    ck_assert_ptr_nonnull(row);
    i = deferred_row_int(row, 0);
    if (i != c->last[s] + 1)
        c->in_order = false;
    c->last[s] = i;
    c->rows[s]++;
    total = c->rows[0] + c->rows[1];
    if (total % 10000 == 0 && tu_live() > c->max_live)
        c->max_live = tu_live();
    if (c->pause_every && total % c->pause_every == 0) {
        c->pauses++;
        deferred_stage_pause(self);
        ev_timer_set(&c->timer, c->pause_for, 0.);
        ev_timer_start(loop, &c->timer);
    }
    if (c->cancel_at && total == c->cancel_at)
        deferred_stage_cancel(self);
    if (c->at_row)
        c->at_row(c, total);
    return NULL;
}

static deferred_value_t check_finish(deferred_stage_t *self, deferred_stage_t *from,
                                     deferred_value_t tag, deferred_value_t outcome)
{
    struct check *c = deferred_stage_data(self);

    (void)from;
    (void)tag;
    c->finishes++;
    return outcome;
}

static const deferred_stage_ops_t check_ops = {
    .name = "checker",
    .handle = check_handle,
    .finish = check_finish,
};

static deferred_stage_t *check_stage(struct check *c)
{
    memset(c, 0, sizeof(*c));
    c->in_order = true;
    ev_timer_init(&c->timer, check_resume_cb, 0., 0.);
    c->timer.data = c;
    c->self = deferred_stage_new(&check_ops, c, 0);
    return c->self;
}

static deferred_t *run_query(struct check *c, deferred_pg_t *on, const char *sql,
                             const deferred_param_t *params, size_t n)
{
    deferred_process_t *p = deferred_process_new(0);
    deferred_stage_t *q = deferred_pg_query(on, sql, params, n);
    deferred_t *d;

    ck_assert_ptr_nonnull(q);
    ck_assert_int_eq(deferred_process_add(p, q), 0);
    ck_assert_int_eq(deferred_process_add(p, check_stage(c)), 0);
    d = deferred_process_run(p);
    deferred_process_unref(p);
    return d;
}

/* ---- streaming ------------------------------------------------------------------ */

START_TEST(test_rows_types_and_parameters)
{
    static const unsigned char blob[] = {0, 1, 0xfe, 0xff};
    deferred_t *d;
    deferred_row_t *row;
    size_t len = 0;
    const unsigned char *b;

    d = deferred_pg_query_one_p(
        conn,
        "SELECT $1::int8 AS i, $2::float8 AS f, $3::text AS t, $4::bytea AS b,"
        " $5::text AS n, 12.50::numeric AS num, true AS yes, $3 = 'it''s' AS eq",
        DEFERRED_PARAMS(deferred_param_int(-42), deferred_param_double(0.1),
                        deferred_param_text("it's"), deferred_param_blob(blob, 4),
                        deferred_param_null()));
    ck_assert(!deferred_has_fired(d));
    wait_for(d);
    row = deferred_value_get_row(deferred_result(d));
    ck_assert_msg(row != NULL, "no row");
    ck_assert_uint_eq(deferred_row_columns(row), 8);
    ck_assert_int_eq(deferred_row_int_named(row, "i"), -42);
    ck_assert(deferred_row_type(row, 0) == DEFERRED_ROW_INTEGER);
    ck_assert(deferred_row_double_named(row, "f") == 0.1);
    ck_assert_str_eq(deferred_row_text_named(row, "t"), "it's");
    b = deferred_row_blob_named(row, "b", &len);
    ck_assert(deferred_row_type(row, 3) == DEFERRED_ROW_BLOB);
    ck_assert_uint_eq(len, 4);
    ck_assert_mem_eq(b, blob, 4);
    ck_assert(deferred_row_is_null_named(row, "n"));
    ck_assert_str_eq(deferred_row_text_named(row, "num"), "12.50");
    ck_assert_str_eq(deferred_row_text_named(row, "yes"), "t");
    ck_assert_str_eq(deferred_row_text_named(row, "eq"), "t");
    deferred_unref(d);

    d = deferred_pg_query_one(conn, "SELECT 1 WHERE false", NULL, 0);
    wait_for(d);
    ck_assert(deferred_has_fired(d));
    ck_assert(deferred_value_is_none(deferred_result(d)));
    deferred_unref(d);
}
END_TEST

START_TEST(test_stream_in_order)
{
    struct check c;
    deferred_t *d;

    d = run_query(&c, conn, "SELECT g, 'row ' || g FROM generate_series(1, $1) g",
                  DEFERRED_PARAMS_ARGS(deferred_param_int(20000)));
    ck_assert_int_eq(c.rows[0], 0); /* never before run returns */
    wait_for(d);
    ck_assert_ptr_null(failure_of(d));
    ck_assert_int_eq(c.rows[0], 20000);
    ck_assert(c.in_order);
    ck_assert_int_eq(c.finishes, 1);
    deferred_unref(d);
}
END_TEST

/* Several queries on one connection run in the order they were made. */
static int done_order[3], ndone;
static deferred_value_t record_done(deferred_value_t v, void *arg)
{
    done_order[ndone++] = (int)(intptr_t)arg;
    return v;
}

START_TEST(test_queries_queued_in_order)
{
    struct check c[3];
    deferred_t *d[3];
    int i;

    ndone = 0;
    d[0] = run_query(&c[0], conn, "SELECT g FROM generate_series(1, 30000) g", NULL, 0);
    d[1] = run_query(&c[1], conn, "SELECT g FROM generate_series(1, 10) g", NULL, 0);
    d[2] = run_query(&c[2], conn, "SELECT 1", NULL, 0);
    for (i = 0; i < 3; i++)
        deferred_add_both(d[i], record_done, (void *)(intptr_t)i);
    wait_for(d[2]);
    ck_assert_int_eq(ndone, 3);
    for (i = 0; i < 3; i++) {
        ck_assert_int_eq(done_order[i], i);
        ck_assert(c[i].in_order);
        deferred_unref(d[i]);
    }
    ck_assert_int_eq(c[0].rows[0], 30000);
    ck_assert_int_eq(c[1].rows[0], 10);
    ck_assert_int_eq(c[2].rows[0], 1);
}
END_TEST

START_TEST(test_cancel_sends_cancel_and_drains)
{
    struct check c, c2;
    deferred_t *d, *d2;

    d = run_query(&c, conn, "SELECT g FROM generate_series(1, 50000000) g", NULL, 0);
    c.cancel_at = 10;
    d2 = run_query(&c2, conn, "SELECT g FROM generate_series(1, 5) g", NULL, 0);
    wait_for(d);
    ck_assert(deferred_failure_is(failure_of(d), DEFERRED_DOMAIN_LIBRARY, ECANCELED));
    ck_assert_int_eq(c.rows[0], 10);
    /* The connection drained the cancelled query and runs the next. */
    wait_for(d2);
    ck_assert_ptr_null(failure_of(d2));
    ck_assert_int_eq(c2.rows[0], 5);
    ck_assert(deferred_pg_is_open(conn));
    deferred_unref(d);
    deferred_unref(d2);
}
END_TEST

/* ---- D03 --------------------------------------------------------------------- */

/* While the stream is paused, the server's backend waits to write to us. */
static deferred_pg_t *watcher_conn;
static char wait_event[64];
static int looked;

static deferred_value_t got_wait_event(deferred_value_t v, void *arg)
{
    deferred_row_t *row = deferred_value_get_row(v);
    struct check *c = arg;

    snprintf(wait_event, sizeof(wait_event), "%s",
             row && deferred_row_text(row, 0) ? deferred_row_text(row, 0) : "(none)");
    looked++;
    deferred_stage_resume(c->self);
    deferred_value_release(v);
    return deferred_value_none();
}

static void look_at_server(struct check *c, long n)
{
    deferred_t *d;

    if (n != 500000)
        return;
    /* Hold the stream paused while we look, long enough for the kernel
     * buffers to fill. */
    deferred_stage_pause(c->self);
    usleep(300000);
    d = deferred_pg_query_one(watcher_conn,
                              "SELECT wait_event FROM pg_stat_activity"
                              " WHERE query LIKE 'SELECT g, repeat%'",
                              NULL, 0);
    deferred_add_both(d, got_wait_event, c);
    deferred_unref(d);
}

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = 0;

    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

/* The process's RSS says something about our memory, except under
 * AddressSanitizer and valgrind, which hold freed blocks back (libpq frees
 * a result per row). */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#endif
static bool rss_meaningful(void)
{
#ifdef UNDER_ASAN
    return false;
#else
    const char *preload = getenv("LD_PRELOAD");

    return !(preload && strstr(preload, "vgpreload"));
#endif
}

static long rss_at_start, rss_max;
static void sample_rss(struct check *c, long n)
{
    long kb;

    look_at_server(c, n);
    if (n % 50000)
        return;
    kb = rss_kb();
    if (n == 50000)
        rss_at_start = kb;
    if (kb > rss_max)
        rss_max = kb;
}

START_TEST(test_D03_million_rows_slow_consumer_bounded_memory)
{
    struct check c;
    deferred_t *d;
    long rows = getenv("TEST_PG_ROWS") ? atol(getenv("TEST_PG_ROWS")) : 1000000;

    if (rows < 600000)
        rows = 600000;
    watcher_conn = connect_to(server.conninfo);
    looked = 0;
    rss_at_start = rss_max = 0;
    /* 1,000,000 rows of 100 bytes: 100 MB if nothing held the server. */
    d = run_query(&c, conn, "SELECT g, repeat('x', 100) FROM generate_series(1, $1) g",
                  DEFERRED_PARAMS_ARGS(deferred_param_int(rows)));
    c.pause_every = 100000;
    c.pause_for = 0.02;
    c.at_row = sample_rss;
    wait_for(d);
    ck_assert_ptr_null(failure_of(d));
    ck_assert_int_eq(c.rows[0], rows);
    ck_assert(c.in_order);
    ck_assert_int_ge(c.pauses, 5);
    /* Backpressure reached the server: while we did not read, its backend
     * waited to write to the socket. */
    ck_assert_int_eq(looked, 1);
    ck_assert_str_eq(wait_event, "ClientWrite");
    /* Memory stayed bounded: a few blocks alive in the library whatever
     * the row count, and the process did not grow with the result. */
    ck_assert_uint_lt(c.max_live, 64);
    if (rss_meaningful())
        ck_assert_int_lt(rss_max - rss_at_start, 16 * 1024);
    deferred_unref(d);
    deferred_pg_unref(watcher_conn);
    watcher_conn = NULL;
}
END_TEST

/* ---- D04 ---------------------------------------------------------------------- */

static struct pgh *dying;
static void stop_server(struct check *c, long n)
{
    (void)c;
    if (n == 1000)
        pgh_stop(dying, false); /* fast: the backend is terminated */
}

START_TEST(test_D04_server_stopped_mid_stream)
{
    struct pgh own;
    struct check c;
    deferred_pg_t *c2;
    deferred_t *d, *d2;
    deferred_failure_t *f;
    char *story;
    int rc = pgh_start(&own);

    ck_assert_int_eq(rc, 0);
    c2 = connect_to(own.conninfo);
    dying = &own;
    d = run_query(&c, c2, "SELECT g, repeat('x', 100) FROM generate_series(1, 10000000) g",
                  NULL, 0);
    c.at_row = stop_server;
    /* A query queued behind it fails too. */
    d2 = deferred_pg_query_one(c2, "SELECT 1", NULL, 0);
    wait_for(d);
    wait_for(d2);
    f = failure_of(d);
    ck_assert_ptr_nonnull(f);
    story = deferred_failure_story_alloc(f);
    ck_assert_msg(deferred_failure_is(f, DEFERRED_DOMAIN_POSTGRES, ECONNRESET),
                  "not a connection error: %s", story);
    ck_assert_ptr_nonnull(strstr(deferred_failure_message(f), "lost"));
    ck_assert(context_has(f, "postgres query", "generate_series(1, 10000000)"));
    deferred_free(story);
    ck_assert_int_ge(c.rows[0], 1000);
    ck_assert_int_lt(c.rows[0], 10000000);
    ck_assert(!deferred_pg_is_open(c2));
    ck_assert(deferred_failure_is(failure_of(d2), DEFERRED_DOMAIN_POSTGRES, ECONNRESET));
    /* Later queries fail at once, as on a closed connection. */
    deferred_unref(d2);
    d2 = deferred_pg_query_one(c2, "SELECT 1", NULL, 0);
    wait_for(d2);
    ck_assert(deferred_failure_is(failure_of(d2), DEFERRED_DOMAIN_POSTGRES, ENOTCONN));
    deferred_unref(d2);
    deferred_unref(d);
    deferred_pg_unref(c2);
    pgh_stop(&own, true);
}
END_TEST

/* ---- D05 ------------------------------------------------------------------------- */

#ifdef TEST_WITH_SQLITE
START_TEST(test_D05_sqlite_and_postgres_merged)
{
    char dir[] = "/tmp/test-pg-sqlite.XXXXXX", path[64];
    sqlite3 *db;
    struct check c;
    deferred_process_t *p;
    deferred_stage_t *sq, *pq;
    deferred_t *d;

    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/m.db", dir);
    ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
    ck_assert_int_eq(sqlite3_exec(db,
                                  "CREATE TABLE t (i INTEGER, s TEXT);"
                                  "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL"
                                  " SELECT x + 1 FROM c WHERE x < 5000)"
                                  " INSERT INTO t SELECT x, 'sqlite' FROM c;",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    p = deferred_process_new(0);
    sq = deferred_sqlite_query(dloop, db, "SELECT i, s FROM t ORDER BY i", NULL, 0);
    pq = deferred_pg_query_p(conn, "SELECT g, 'postgres' FROM generate_series(1, $1) g",
                             DEFERRED_PARAMS(deferred_param_int(7000)));
    ck_assert_int_eq(deferred_process_add(p, sq), 0);
    ck_assert_int_eq(deferred_process_add(p, pq), 0);
    ck_assert_int_eq(deferred_process_add(p, check_stage(&c)), 0);
    c.src[0] = sq;
    c.src[1] = pq;
    c.pause_every = 1000; /* pausing the consumer pauses both */
    c.pause_for = 0.001;
    d = deferred_process_run(p);
    wait_for(d);
    ck_assert_ptr_null(failure_of(d));
    ck_assert_int_eq(c.rows[0], 5000);
    ck_assert_int_eq(c.rows[1], 7000);
    ck_assert_int_eq(c.last[0], 5000);
    ck_assert_int_eq(c.last[1], 7000);
    ck_assert(c.in_order);
    ck_assert_int_eq(c.finishes, 1);
    deferred_unref(d);
    deferred_process_unref(p);
    sqlite3_close(db);
    unlink(path);
    rmdir(dir);
}
END_TEST
#endif

/* ---- bad input ---------------------------------------------------------------------- */

START_TEST(test_bad_sql)
{
    struct check c;
    deferred_t *d;
    deferred_failure_t *f;
    static const char sql[] = "SELEC g FROM generate_series(1, 3) g";

    d = run_query(&c, conn, sql, NULL, 0);
    wait_for(d);
    f = failure_of(d);
    ck_assert(deferred_failure_is(f, DEFERRED_DOMAIN_POSTGRES, deferred_pg_sqlstate("42601")));
    ck_assert_ptr_nonnull(strstr(deferred_failure_message(f), "syntax error"));
    ck_assert_ptr_nonnull(strstr(deferred_failure_message(f), "42601"));
    ck_assert(context_has(f, "postgres query", sql));
    ck_assert_int_eq(c.finishes, 1);
    deferred_unref(d);

    /* An error after some rows: division by zero at row 4. */
    d = run_query(&c, conn, "SELECT g, 1 / (4 - g) FROM generate_series(1, 10) g", NULL, 0);
    wait_for(d);
    f = failure_of(d);
    ck_assert(deferred_failure_is(f, DEFERRED_DOMAIN_POSTGRES, deferred_pg_sqlstate("22012")));
    ck_assert_int_eq(c.rows[0], 3);
    deferred_unref(d);

    /* The connection is still good. */
    d = deferred_pg_query_one(conn, "SELECT 1", NULL, 0);
    wait_for(d);
    ck_assert_int_eq(deferred_row_int(deferred_value_get_row(deferred_result(d)), 0), 1);
    deferred_unref(d);
    ck_assert_int_eq(deferred_pg_sqlstate(NULL), 0);
    ck_assert_int_eq(deferred_pg_sqlstate("4260"), 0);
}
END_TEST

START_TEST(test_wrong_parameter_counts)
{
    deferred_t *d;
    deferred_failure_t *f;

    d = deferred_pg_query_one_p(conn, "SELECT $1::int + $2::int",
                                DEFERRED_PARAMS(deferred_param_int(1)));
    wait_for(d);
    f = failure_of(d);
    ck_assert_int_eq(deferred_failure_domain(f), DEFERRED_DOMAIN_POSTGRES);
    ck_assert_ptr_nonnull(strstr(deferred_failure_message(f), "requires 2"));
    ck_assert(context_has(f, "postgres query", "SELECT $1::int + $2::int"));
    deferred_unref(d);

    d = deferred_pg_query_one_p(conn, "SELECT 1",
                                DEFERRED_PARAMS(deferred_param_int(1), deferred_param_int(2)));
    wait_for(d);
    ck_assert_int_eq(deferred_failure_domain(failure_of(d)), DEFERRED_DOMAIN_POSTGRES);
    deferred_unref(d);
    ck_assert_ptr_null(deferred_pg_query(NULL, "SELECT 1", NULL, 0));
    ck_assert_ptr_null(deferred_pg_query(conn, NULL, NULL, 0));
    ck_assert_ptr_null(deferred_pg_query(conn, "SELECT $1", NULL, 1));
    ck_assert_ptr_null(deferred_pg_connect(NULL, "x"));
}
END_TEST

/* The last references to a process and its result go from the result's
 * own callback, which runs inside the query's kick (a query on a closed
 * connection is told its failure there): the stage is destroyed from
 * inside the kick's run, whose pump drops the stage's reference on the
 * query only once the run has returned (ASan and valgrind see a use after
 * free otherwise). */
struct dropped {
    deferred_process_t *p;
    deferred_t *done;
    bool ran, failed;
};

static deferred_value_t drop_all(deferred_value_t v, void *arg)
{
    struct dropped *x = arg;

    x->ran = true;
    x->failed = deferred_failure_is(deferred_value_get_failure(v), DEFERRED_DOMAIN_POSTGRES,
                                    ENOTCONN);
    deferred_process_unref(x->p);
    deferred_unref(x->done); /* the runner's reference is the last */
    deferred_value_release(v); /* the failure, handled */
    return deferred_value_none();
}

START_TEST(test_freed_from_inside_its_kick)
{
    struct dropped x = {0};
    int i;

    deferred_pg_close(conn);
    x.p = deferred_process_new(0);
    ck_assert_ptr_nonnull(x.p);
    ck_assert_int_eq(deferred_process_add(x.p, deferred_pg_query(conn, "SELECT 1", NULL, 0)), 0);
    ck_assert_int_eq(deferred_process_add(x.p, deferred_stage_collect()), 0);
    x.done = deferred_process_run(x.p);
    ck_assert_int_eq(deferred_add_both(x.done, drop_all, &x), 0);
    for (i = 0; i < 100 && !x.ran; i++)
        ev_run(loop, EVRUN_ONCE);
    ck_assert(x.ran);
    ck_assert(x.failed);
}
END_TEST

START_TEST(test_closed_connection)
{
    struct check c;
    deferred_t *d, *queued;
    deferred_failure_t *f;

    /* A query running when the connection is closed, and one queued. */
    d = run_query(&c, conn, "SELECT g FROM generate_series(1, 1000000) g", NULL, 0);
    queued = deferred_pg_query_one(conn, "SELECT 2", NULL, 0);
    ev_run(loop, EVRUN_ONCE);
    deferred_pg_close(conn);
    ck_assert(!deferred_pg_is_open(conn));
    ck_assert_ptr_null(deferred_pg_conn(conn));
    wait_for(d);
    wait_for(queued);
    ck_assert(deferred_failure_is(failure_of(d), DEFERRED_DOMAIN_POSTGRES, ENOTCONN));
    f = failure_of(queued);
    ck_assert(deferred_failure_is(f, DEFERRED_DOMAIN_POSTGRES, ENOTCONN));
    ck_assert(context_has(f, "postgres query", "SELECT 2"));
    deferred_unref(d);
    deferred_unref(queued);

    /* A query made after the close. */
    d = deferred_pg_query_one(conn, "SELECT 3", NULL, 0);
    ck_assert(!deferred_has_fired(d));
    wait_for(d);
    f = failure_of(d);
    ck_assert(deferred_failure_is(f, DEFERRED_DOMAIN_POSTGRES, ENOTCONN));
    ck_assert_ptr_nonnull(strstr(deferred_failure_message(f), "closed connection"));
    ck_assert(context_has(f, "postgres query", "SELECT 3"));
    deferred_unref(d);
    deferred_pg_close(conn); /* idempotent */
}
END_TEST

START_TEST(test_refused_connection)
{
    char dir[] = "/tmp/test-pg-none.XXXXXX", info[128];
    deferred_t *d;
    deferred_failure_t *f;

    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(info, sizeof(info), "host=%s port=5432 user=postgres connect_timeout=5", dir);
    d = deferred_pg_connect(dloop, info);
    wait_for(d);
    f = failure_of(d);
    ck_assert(deferred_failure_is(f, DEFERRED_DOMAIN_POSTGRES, ECONNREFUSED));
    ck_assert_ptr_nonnull(strstr(deferred_failure_message(f), "could not connect"));
    deferred_unref(d);
    rmdir(dir);

    /* A bad connection string: the caller's mistake, found before the
     * call returns: NULL with errno EINVAL (deferred/common.h). */
    errno = 0;
    ck_assert_ptr_null(deferred_pg_connect(dloop, "this is not a conninfo"));
    ck_assert_int_eq(errno, EINVAL);

    /* Cancelling a connect abandons it. */
    d = deferred_pg_connect(dloop, server.conninfo);
    deferred_cancel(d);
    ck_assert(deferred_failure_is(failure_of(d), DEFERRED_DOMAIN_LIBRARY, ECANCELED));
    deferred_unref(d);
    /* Dropping one as well. */
    d = deferred_pg_connect(dloop, server.conninfo);
    deferred_unref(d);
}
END_TEST

/* A process dropped while its query streams: the stage goes, the
 * connection cancels and drains on its own. */
START_TEST(test_abandoned_stream)
{
    deferred_process_t *p = deferred_process_new(0);
    struct check c;
    deferred_t *d;

    deferred_process_add(p, deferred_pg_query(conn, "SELECT g FROM generate_series(1, 50000000) g",
                                              NULL, 0));
    deferred_process_add(p, check_stage(&c));
    c.cancel_at = 3;
    d = deferred_process_run(p);
    deferred_process_unref(p);
    wait_for(d);
    deferred_unref(d);
    d = deferred_pg_query_one(conn, "SELECT 42", NULL, 0);
    wait_for(d);
    ck_assert_int_eq(deferred_row_int(deferred_value_get_row(deferred_result(d)), 0), 42);
    deferred_unref(d);
}
END_TEST

/* Every allocation of a query's life failing in turn: each run ends (with
 * its rows or an ENOMEM failure), nothing leaks, the connection goes on. */
START_TEST(test_failing_allocator)
{
    size_t base = tu_live();
    unsigned long n;
    int ok = 0, enomem = 0;

    for (n = 1; n < 200; n++) {
        deferred_t *d;

        tu_fail_at(n);
        d = deferred_pg_query_one_p(conn, "SELECT g, 'x' || g FROM generate_series(1, $1) g",
                                    DEFERRED_PARAMS(deferred_param_int(3)));
        if (!d) {
            enomem++;
        } else {
            wait_for(d);
            ck_assert(deferred_has_fired(d));
            if (failure_of(d)) {
                ck_assert(deferred_failure_find(failure_of(d), DEFERRED_DOMAIN_ANY, ENOMEM));
                enomem++;
            } else {
                ck_assert_int_eq(
                    deferred_row_int(deferred_value_get_row(deferred_result(d)), 0), 1);
                ok++;
            }
            deferred_unref(d);
        }
        /* Let a cancelled query drain. */
        while (tu_live() != base && ev_run(loop, EVRUN_ONCE))
            ;
        if (tu_live() != base)
            fprintf(stderr, "test_failing_allocator: %zu blocks left at allocation %lu\n",
                    tu_live() - base, n);
        ck_assert_uint_eq(tu_live(), base);
        if (!tu_failure_injected())
            break;
    }
    tu_fail_at(0);
    ck_assert_int_gt(enomem, 3);
    ck_assert_int_ge(ok, 1);
}
END_TEST

/* ---- contracts at the edges (issue 12) ------------------------------------------- */

static int occurrences(const char *hay, const char *needle)
{
    int n = 0;

    while ((hay = strstr(hay, needle)) != NULL) {
        n++;
        hay += strlen(needle);
    }
    return n;
}

START_TEST(test_bad_parameters_are_einval)
{
    deferred_t *d;
    deferred_failure_t *f;
    deferred_param_t bad;

    /* {NULL, 5}: no copy from NULL. */
    d = deferred_pg_query_one_p(conn, "SELECT $1::text",
                                DEFERRED_PARAMS(deferred_param_blob(NULL, 5)));
    ck_assert_ptr_nonnull(d);
    wait_for(d);
    f = failure_of(d);
    ck_assert(deferred_failure_is(f, DEFERRED_DOMAIN_LIBRARY, EINVAL));
    ck_assert_ptr_nonnull(strstr(deferred_failure_message(f), "parameter 1"));
    deferred_unref(d);

    /* A text of length (size_t)-1: the size sum would wrap. */
    bad.type = DEFERRED_ROW_TEXT;
    bad.u.s.p = "abc";
    bad.u.s.len = (size_t)-1;
    d = deferred_pg_query_one_p(conn, "SELECT $1::int, $2::text",
                                DEFERRED_PARAMS(deferred_param_int(1), bad));
    if (d) {
        wait_for(d);
        f = failure_of(d);
        ck_assert(deferred_failure_is(f, DEFERRED_DOMAIN_LIBRARY, EINVAL));
        ck_assert_ptr_nonnull(strstr(deferred_failure_message(f), "parameter 2"));
        deferred_unref(d);
    }
    bad.u.s.len = (size_t)-1 / 2;
    d = deferred_pg_query_one(conn, "SELECT $1::text", &bad, 1);
    ck_assert_ptr_nonnull(d);
    wait_for(d);
    ck_assert(deferred_failure_is(failure_of(d), DEFERRED_DOMAIN_LIBRARY, EINVAL));
    deferred_unref(d);

    /* SQL without a statement: no row. */
    d = deferred_pg_query_one(conn, "-- nothing", NULL, 0);
    wait_for(d);
    ck_assert(deferred_has_fired(d));
    ck_assert(deferred_value_is_none(deferred_result(d)));
    deferred_unref(d);

    /* The connection is still good. */
    d = deferred_pg_query_one_p(conn, "SELECT length($1::bytea)",
                                DEFERRED_PARAMS(deferred_param_blob(NULL, 0)));
    wait_for(d);
    ck_assert_int_eq(deferred_row_int(deferred_value_get_row(deferred_result(d)), 0), 0);
    deferred_unref(d);
}
END_TEST

START_TEST(test_failures_explain_themselves)
{
    struct check c;
    deferred_t *d;
    deferred_failure_t *f;
    char state[6], *story;
    int line;

    /* The SQLSTATE as its five characters and its condition name. */
    line = __LINE__ + 1;
    d = run_query(&c, conn, "SELECT g, 1 / (4 - g) FROM generate_series(1, 10) g", NULL, 0);
    wait_for(d);
    f = failure_of(d);
    ck_assert_ptr_nonnull(f);
    story = deferred_failure_story_alloc(f);
    ck_assert_msg(strstr(deferred_failure_message(f), "22012 division_by_zero") != NULL,
                  "%s", story);
    ck_assert_str_eq(deferred_pg_failure_sqlstate(f, state), "22012");
    /* The failing row is named by its number (rows 1 to 3 came), the SQL
     * once. */
    ck_assert_msg(strstr(story, "row 4 of SELECT g") != NULL, "%s", story);
    ck_assert_msg(occurrences(story, "generate_series(1, 10)") == 1, "%s", story);
    /* The site is the call that made the query (run_query() here). */
    ck_assert_msg(strstr(deferred_failure_file(f), "test-pg.c") != NULL, "%s",
                  deferred_failure_file(f));
    ck_assert_int_gt(deferred_failure_line(f), 0);
    deferred_free(story);
    deferred_unref(d);
    (void)line;

    /* Bad SQL: no row is named. */
    d = deferred_pg_query_one(conn, "SELEC 1", NULL, 0);
    line = __LINE__ - 1;
    wait_for(d);
    f = failure_of(d);
    story = deferred_failure_story_alloc(f);
    ck_assert_msg(!strstr(story, "row 0") && occurrences(story, "SELEC 1") == 1, "%s", story);
    ck_assert_msg(strstr(deferred_failure_message(f), "42601 syntax_error") != NULL, "%s",
                  story);
    ck_assert_int_eq(deferred_failure_line(f), line);
    deferred_free(story);
    deferred_unref(d);

    ck_assert_str_eq(deferred_pg_condition_name("57P01"), "admin_shutdown");
    ck_assert_ptr_null(deferred_pg_condition_name("5"));
    ck_assert_ptr_null(deferred_pg_failure_sqlstate(NULL, state));
}
END_TEST

START_TEST(test_connect_failures_say_why)
{
    char info[600];
    deferred_t *d;
    deferred_failure_t *f;
    char *story;

    /* A missing database: the server's own code, not ECONNREFUSED. */
    snprintf(info, sizeof(info), "%s dbname=no_such_db", server.conninfo);
    d = deferred_pg_connect(dloop, info);
    wait_for(d);
    f = failure_of(d);
    ck_assert_ptr_nonnull(f);
    story = deferred_failure_story_alloc(f);
    ck_assert_msg(deferred_failure_is(f, DEFERRED_DOMAIN_POSTGRES, deferred_pg_sqlstate("3D000")),
                  "%s", story);
    ck_assert_msg(strstr(deferred_failure_message(f), "no_such_db") != NULL, "%s", story);
    ck_assert_msg(strstr(deferred_failure_message(f), "3D000 invalid_catalog_name") != NULL,
                  "%s", story);
    ck_assert_msg(!strstr(story, "LOCATION"), "%s", story);
    deferred_free(story);
    deferred_unref(d);

    /* A malformed one: NULL with errno EINVAL, before it returns, and
     * libpq's reason from deferred_pg_conninfo_check(). */
    errno = 0;
    ck_assert_ptr_null(deferred_pg_connect(dloop, "host=/tmp port"));
    ck_assert_int_eq(errno, EINVAL);
    {
        char why[200], small[8];

        ck_assert_int_eq(deferred_pg_conninfo_check("host=/tmp port", why, sizeof why), -EINVAL);
        ck_assert_msg(strstr(why, "port") && strstr(why, "connection info"), "%s", why);
        ck_assert(why[strlen(why) - 1] != '\n');
        ck_assert_int_eq(deferred_pg_conninfo_check("host=/tmp port", small, sizeof small),
                         -EINVAL);
        ck_assert_uint_eq(strlen(small), sizeof small - 1);
        ck_assert_int_eq(deferred_pg_conninfo_check("host=/tmp port", NULL, 0), -EINVAL);
        ck_assert_int_eq(deferred_pg_conninfo_check(server.conninfo, why, sizeof why), 0);
        ck_assert_str_eq(why, "");
        ck_assert_int_eq(deferred_pg_conninfo_check("postgresql://x:y@/db?bad=1", why,
                                                    sizeof why), -EINVAL);
        ck_assert_msg(strstr(why, "bad"), "%s", why);
    }
}
END_TEST

static void stop_fast_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)revents;
    pgh_stop(w->data, false); /* fast: the server says why it goes */
}

START_TEST(test_shutdown_shows_server_message)
{
    struct pgh own;
    struct check c;
    deferred_pg_t *c2;
    deferred_t *d;
    deferred_failure_t *f;
    char state[6], *story;
    ev_timer stop;

    ck_assert_int_eq(pgh_start(&own), 0);
    c2 = connect_to(own.conninfo);
    /* The server goes while the query waits in it (whether the query
     * started or not, the backend says why it terminates). */
    d = run_query(&c, c2, "SELECT pg_sleep(60)", NULL, 0);
    ev_timer_init(&stop, stop_fast_cb, 0.2, 0.);
    stop.data = &own;
    ev_timer_start(loop, &stop);
    wait_for(d);
    ev_timer_stop(loop, &stop);
    f = failure_of(d);
    ck_assert_ptr_nonnull(f);
    story = deferred_failure_story_alloc(f);
    ck_assert_msg(deferred_failure_is(f, DEFERRED_DOMAIN_POSTGRES, ECONNRESET), "%s", story);
    ck_assert_msg(strstr(story, "terminating connection due to administrator command") != NULL,
                  "%s", story);
    ck_assert_msg(!strstr(story, "terminated abnormally"), "%s", story);
    ck_assert_msg(deferred_pg_failure_sqlstate(f, state) != NULL, "%s", story);
    ck_assert_str_eq(state, "57P01");
    deferred_free(story);
    deferred_unref(d);
    deferred_pg_unref(c2);
    pgh_stop(&own, true);
}
END_TEST

static Suite *pg_suite(void)
{
    Suite *s = suite_create("postgres");
    TCase *tc = tcase_create("postgres");
    TCase *tcc = tcase_create("contracts");

    tcase_add_checked_fixture(tcc, setup, teardown);
    tcase_set_timeout(tcc, 300);
    tcase_add_test(tcc, test_bad_parameters_are_einval);
    tcase_add_test(tcc, test_failures_explain_themselves);
    tcase_add_test(tcc, test_connect_failures_say_why);
    tcase_add_test(tcc, test_shutdown_shows_server_message);
    suite_add_tcase(s, tcc);

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_rows_types_and_parameters);
    tcase_add_test(tc, test_stream_in_order);
    tcase_add_test(tc, test_queries_queued_in_order);
    tcase_add_test(tc, test_cancel_sends_cancel_and_drains);
    tcase_add_test(tc, test_D03_million_rows_slow_consumer_bounded_memory);
    tcase_add_test(tc, test_D04_server_stopped_mid_stream);
#ifdef TEST_WITH_SQLITE
    tcase_add_test(tc, test_D05_sqlite_and_postgres_merged);
#endif
    tcase_add_test(tc, test_bad_sql);
    tcase_add_test(tc, test_wrong_parameter_counts);
    tcase_add_test(tc, test_closed_connection);
    tcase_add_test(tc, test_freed_from_inside_its_kick);
    tcase_add_test(tc, test_refused_connection);
    tcase_add_test(tc, test_abandoned_stream);
    tcase_add_test(tc, test_failing_allocator);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    int rc = pgh_start(&server), status;

    if (rc == 77)
        return 77;
    if (rc != 0) {
        fprintf(stderr, "test-pg: could not start a throwaway PostgreSQL server\n");
        return 1;
    }
    status = tu_run_suite(pg_suite());
    pgh_stop(&server, true);
    return status;
}
