/*
 * test-pg-pipeline.c: PostgreSQL pipeline mode (issue 19; scenarios D20
 * to D25 in docs/scenarios.md) on a throwaway server the test starts
 * itself (pg-harness.c): queries in flight together, their results in
 * order, a failing query in the middle (alone, and inside a batch, where
 * it aborts the rest of the batch), cancel of one query and of all, a
 * paused query that stops the socket being read, the server killed
 * mid-pipeline, and every allocation failed in turn.
 *
 * Skips (77) only when the server binaries are absent.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* RTLD_NEXT */
#endif
#include <check.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>
#include <deferred/ev.h>
#include <deferred/pg.h>

#include "pg-harness.h"
#include "testutil.h"

static struct pgh server;
static struct ev_loop *loop;
static deferred_loop_t *dloop; /* its adapter (deferred/loop.h) */
static deferred_pg_t *conn;

/* ---- helpers -------------------------------------------------------------- */

/* Cancel requests the library sends, counted: this definition of libpq's
 * PQcancel() comes first in the lookup, and forwards to libpq's. */
static int cancel_requests;

__attribute__((visibility("default"))) int PQcancel(PGcancel *cancel, char *errbuf,
                                                 int errbufsize)
{
    int (*real)(PGcancel *, char *, int);

    cancel_requests++;
    *(void **)&real = dlsym(RTLD_NEXT, "PQcancel");
    return real ? real(cancel, errbuf, errbufsize) : 0;
}

static void wait_for(deferred_t *d)
{
    while (!deferred_has_fired(d))
        if (!ev_run(loop, EVRUN_ONCE))
            break;
}

/* A connection, or NULL with *failure set (when failure is not NULL). */
static deferred_pg_t *try_connect(const char *conninfo, deferred_failure_t **failure)
{
    deferred_t *d = deferred_pg_connect(dloop, conninfo);
    deferred_value_t v;
    deferred_pg_t *c;

    if (!d)
        return NULL;
    wait_for(d);
    v = deferred_result_take(d);
    c = deferred_value_get_pg(v);
    if (!c && failure)
        *failure = deferred_failure_ref(deferred_value_get_failure(v));
    if (!c)
        deferred_value_release(v);
    deferred_unref(d);
    return c;
}

static deferred_pg_t *connect_to(const char *conninfo)
{
    deferred_failure_t *f = NULL;
    deferred_pg_t *c = try_connect(conninfo, &f);

    if (!c) {
        char *story = f ? deferred_failure_story_alloc(f) : NULL;

        ck_abort_msg("could not connect: %s", story ? story : "?");
    }
    return c;
}

static void setup(void)
{
    tu_setup();
    loop = ev_loop_new(EVFLAG_AUTO);
    dloop = deferred_ev_loop_new(loop);
    ck_assert_ptr_nonnull(dloop);
    conn = connect_to(server.conninfo);
    ck_assert_int_eq(deferred_pg_set_pipeline(conn, true), 0);
    ck_assert(deferred_pg_is_pipelined(conn));
}

static void teardown(void)
{
    deferred_pg_unref(conn);
    conn = NULL;
    ck_assert_int_eq(ev_run(loop, EVRUN_NOWAIT), 0); /* no watcher left */
    deferred_loop_unref(dloop);
    dloop = NULL;
    ev_loop_destroy(loop);
    tu_teardown();
}

static deferred_failure_t *failure_of(deferred_t *d)
{
    return deferred_value_get_failure(deferred_result(d));
}

static char *story_of(deferred_t *d)
{
    static char buf[2048];
    char *s = failure_of(d) ? deferred_failure_story_alloc(failure_of(d)) : NULL;

    snprintf(buf, sizeof(buf), "%s", s ? s : "(no failure)");
    deferred_free(s);
    return buf;
}

/* ---- a consumer recording column 0 of each row -------------------------------- */

/* The order queries finished in, over all of a test's collectors. */
static int finish_log[64], nfinished;

struct coll {
    int id;
    deferred_stage_t *self;
    long rows;
    int64_t first, last;
    bool in_order;           /* column 0 counts up by one */
    long pause_at;           /* pause after this row (0: never) */
    long cancel_at;          /* cancel after this row (0: never) */
    void (*at_row)(struct coll *c); /* after each row */
    bool paused;
    long finishes;
};

static deferred_failure_t *coll_handle(deferred_stage_t *self, deferred_stage_t *from,
                                       deferred_value_t tag, deferred_value_t *item)
{
    struct coll *c = deferred_stage_data(self);
    deferred_row_t *row = deferred_value_get_row(*item);
    int64_t i;

    (void)from;
    (void)tag;
    ck_assert_ptr_nonnull(row);
    i = deferred_row_int(row, 0);
    if (c->rows == 0)
        c->first = i;
    else if (i != c->last + 1)
        c->in_order = false;
    c->last = i;
    c->rows++;
    if (c->pause_at && c->rows == c->pause_at) {
        c->paused = true;
        deferred_stage_pause(self);
    }
    if (c->cancel_at && c->rows == c->cancel_at)
        deferred_stage_cancel(self);
    if (c->at_row)
        c->at_row(c);
    return NULL;
}

static deferred_value_t coll_finish(deferred_stage_t *self, deferred_stage_t *from,
                                    deferred_value_t tag, deferred_value_t outcome)
{
    struct coll *c = deferred_stage_data(self);

    (void)from;
    (void)tag;
    c->finishes++;
    if (nfinished < 64)
        finish_log[nfinished++] = c->id;
    return outcome;
}

static const deferred_stage_ops_t coll_ops = {
    .name = "collector",
    .handle = coll_handle,
    .finish = coll_finish,
};

static void coll_resume(struct coll *c)
{
    ck_assert(c->paused);
    c->paused = false;
    ck_assert_int_eq(deferred_stage_resume(c->self), 0);
}

/* Make a query on `on` and a process of it into collector c (id id); the
 * process runs now.  The process's deferred. */
static deferred_t *run_query_p(struct coll *c, int id, deferred_pg_t *on, const char *sql,
                               const deferred_param_t *params, size_t n)
{
    deferred_process_t *p = deferred_process_new(0);
    deferred_stage_t *q = deferred_pg_query(on, sql, params, n);
    deferred_t *d;

    memset(c, 0, sizeof(*c));
    c->id = id;
    c->in_order = true;
    ck_assert_ptr_nonnull(p);
    ck_assert_ptr_nonnull(q);
    c->self = deferred_stage_new(&coll_ops, c, 0);
    ck_assert_int_eq(deferred_process_add(p, q), 0);
    ck_assert_int_eq(deferred_process_add(p, c->self), 0);
    d = deferred_process_run(p);
    deferred_process_unref(p);
    ck_assert_ptr_nonnull(d);
    return d;
}

#define run_query(c, id, sql) run_query_p((c), (id), conn, (sql), NULL, 0)

/* ---- D20: in flight together, results in order ------------------------------ */

START_TEST(test_D20_in_flight_together_results_in_order)
{
    enum { N = 40 };
    struct coll c[N];
    deferred_t *d[N];
    char sql[128];
    int i;

    nfinished = 0;
    for (i = 0; i < N; i++) {
        /* Sizes vary: a long one early must not let a short one behind
         * it finish first. */
        snprintf(sql, sizeof(sql), "SELECT g FROM generate_series(%d, %d) g", i * 10000,
                 i * 10000 + (i % 7 == 0 ? 20000 : i % 5));
        d[i] = run_query(&c[i], i, sql);
    }
    /* Every query is on the wire before any result came. */
    ck_assert_uint_eq(deferred_pg_in_flight(conn), N);
    wait_for(d[N - 1]);
    ck_assert_int_eq(nfinished, N);
    for (i = 0; i < N; i++) {
        long want = (i % 7 == 0 ? 20000 : i % 5) + 1;

        ck_assert_msg(failure_of(d[i]) == NULL, "query %d: %s", i, story_of(d[i]));
        ck_assert_int_eq(finish_log[i], i);
        ck_assert_int_eq(c[i].rows, want);
        ck_assert_int_eq(c[i].first, i * 10000);
        ck_assert(c[i].in_order);
        ck_assert_int_eq(c[i].finishes, 1);
        deferred_unref(d[i]);
    }
    ck_assert_uint_eq(deferred_pg_in_flight(conn), 0);
}
END_TEST

/* Off (the default), one query is on the wire at a time; switching needs
 * an idle connection. */
START_TEST(test_D20_serial_mode_stays_available)
{
    deferred_pg_t *c2 = connect_to(server.conninfo);
    struct coll c[3];
    deferred_t *d[3];
    int i;

    ck_assert(!deferred_pg_is_pipelined(c2));
    d[0] = run_query_p(&c[0], 0, c2, "SELECT g FROM generate_series(1, 100) g", NULL, 0);
    d[1] = run_query_p(&c[1], 1, c2, "SELECT 1", NULL, 0);
    d[2] = run_query_p(&c[2], 2, c2, "SELECT 2", NULL, 0);
    ck_assert_uint_eq(deferred_pg_in_flight(c2), 1);
    ck_assert_int_eq(deferred_pg_set_pipeline(c2, true), -EBUSY);
    for (i = 0; i < 3; i++) {
        wait_for(d[i]);
        ck_assert_ptr_null(failure_of(d[i]));
        deferred_unref(d[i]);
    }
    ck_assert_int_eq(c[0].rows, 100);
    /* Now idle: on, then off again. */
    ck_assert_int_eq(deferred_pg_set_pipeline(c2, true), 0);
    ck_assert_int_eq(PQpipelineStatus(deferred_pg_conn(c2)), PQ_PIPELINE_ON);
    ck_assert_int_eq(deferred_pg_set_pipeline(c2, false), 0);
    ck_assert_int_eq(PQpipelineStatus(deferred_pg_conn(c2)), PQ_PIPELINE_OFF);
    ck_assert_int_eq(deferred_pg_batch_begin(c2), -EINVAL); /* not pipelined */
    ck_assert_int_eq(deferred_pg_batch_end(c2), -EINVAL);
    ck_assert_int_eq(deferred_pg_set_pipeline(NULL, true), -EINVAL);
    ck_assert_int_eq(deferred_pg_cancel_all(NULL), -EINVAL);
    deferred_pg_close(c2);
    ck_assert_int_eq(deferred_pg_set_pipeline(c2, true), -ENOTCONN);
    deferred_pg_unref(c2);
}
END_TEST

/* ---- D21: a failing query in the middle ------------------------------------- */

START_TEST(test_D21_failing_query_fails_only_itself)
{
    struct coll c[3];
    deferred_t *d[3];
    char state[6];
    int i;

    d[0] = run_query(&c[0], 0, "SELECT g FROM generate_series(1, 1000) g");
    d[1] = run_query(&c[1], 1, "SELECT 1/0");
    d[2] = run_query(&c[2], 2, "SELECT g FROM generate_series(5, 7) g");
    wait_for(d[2]);
    ck_assert_ptr_null(failure_of(d[0]));
    ck_assert_int_eq(c[0].rows, 1000);
    ck_assert(deferred_failure_is(failure_of(d[1]), DEFERRED_DOMAIN_POSTGRES,
                                  deferred_pg_sqlstate("22012")));
    ck_assert_str_eq(deferred_pg_failure_sqlstate(failure_of(d[1]), state), "22012");
    ck_assert_msg(failure_of(d[2]) == NULL, "%s", story_of(d[2]));
    ck_assert_int_eq(c[2].rows, 3);
    for (i = 0; i < 3; i++)
        deferred_unref(d[i]);
}
END_TEST

/* In a batch: the failure aborts the queries after it up to the batch's
 * end, each naming the one that failed; the batch's writes are rolled
 * back together; the queries after the batch run. */
START_TEST(test_D21_failure_aborts_rest_of_batch)
{
    struct coll c[6];
    deferred_t *d[6], *one;
    const char *msg;
    int i;

    one = deferred_pg_query_one(conn, "CREATE TEMP TABLE t (x int)", NULL, 0);
    wait_for(one);
    ck_assert_ptr_null(failure_of(one));
    deferred_unref(one);

    ck_assert_int_eq(deferred_pg_batch_begin(conn), 0);
    d[0] = run_query(&c[0], 0, "INSERT INTO t VALUES (1)");
    d[1] = run_query(&c[1], 1, "SELECT g FROM generate_series(1, 50) g");
    d[2] = run_query(&c[2], 2, "SELECT 1/0");
    d[3] = run_query(&c[3], 3, "INSERT INTO t VALUES (2)");
    d[4] = run_query(&c[4], 4, "SELECT 4");
    ck_assert_int_eq(deferred_pg_batch_end(conn), 0);
    d[5] = run_query(&c[5], 5, "SELECT count(*)::int + 100 FROM t");
    wait_for(d[5]);
    ck_assert_ptr_null(failure_of(d[0]));
    ck_assert_ptr_null(failure_of(d[1]));
    ck_assert_int_eq(c[1].rows, 50); /* streamed before the failure */
    ck_assert(deferred_failure_is(failure_of(d[2]), DEFERRED_DOMAIN_POSTGRES,
                                  deferred_pg_sqlstate("22012")));
    for (i = 3; i <= 4; i++) {
        ck_assert_msg(deferred_failure_is(failure_of(d[i]), DEFERRED_DOMAIN_POSTGRES,
                                          ECANCELED),
                      "query %d: %s", i, story_of(d[i]));
        msg = deferred_failure_message(failure_of(d[i]));
        ck_assert_msg(strstr(msg, "SELECT 1/0") && strstr(msg, "division by zero") &&
                          strstr(msg, "not run"),
                      "%s", msg);
        ck_assert_int_eq(c[i].rows, 0);
    }
    /* The batch was one transaction: the insert before the failure is
     * gone with it. */
    ck_assert_msg(failure_of(d[5]) == NULL, "%s", story_of(d[5]));
    ck_assert_int_eq(c[5].rows, 1);
    ck_assert_int_eq(c[5].last, 100);
    for (i = 0; i < 6; i++)
        deferred_unref(d[i]);
    /* A batch ended after its queries all finished still gets its sync. */
    ck_assert_int_eq(deferred_pg_batch_begin(conn), 0);
    d[0] = run_query(&c[0], 0, "INSERT INTO t VALUES (3)");
    wait_for(d[0]);
    ck_assert_ptr_null(failure_of(d[0]));
    ck_assert_int_eq(deferred_pg_batch_end(conn), 0);
    deferred_unref(d[0]);
    d[0] = run_query(&c[0], 0, "SELECT x FROM t");
    wait_for(d[0]);
    ck_assert_msg(failure_of(d[0]) == NULL, "%s", story_of(d[0]));
    ck_assert_int_eq(c[0].rows, 1);
    ck_assert_int_eq(c[0].last, 3);
    deferred_unref(d[0]);
    ck_assert_int_eq(deferred_pg_batch_end(conn), -EINVAL); /* none open */
}
END_TEST

/* ---- D22: cancel of one query, and of all -------------------------------------- */

START_TEST(test_D22_cancel_one_mid_pipeline)
{
    struct coll c[4];
    deferred_t *d[4];
    int i;

    /* The head, cancelled mid-stream while queries behind it are on the
     * wire: no cancel request (it might hit one of them); drained. */
    d[0] = run_query(&c[0], 0, "SELECT g FROM generate_series(1, 200000) g");
    c[0].cancel_at = 10;
    d[1] = run_query(&c[1], 1, "SELECT g FROM generate_series(1, 5) g");
    /* A query behind the head, cancelled before its turn. */
    d[2] = run_query(&c[2], 2, "SELECT g FROM generate_series(1, 100000) g");
    d[3] = run_query(&c[3], 3, "SELECT g FROM generate_series(1, 3) g");
    ck_assert_int_eq(deferred_cancel(d[2]), 0);
    cancel_requests = 0;
    wait_for(d[3]);
    for (i = 0; i < 3; i++)
        wait_for(d[i]);
    ck_assert(deferred_failure_is(failure_of(d[0]), DEFERRED_DOMAIN_LIBRARY, ECANCELED));
    ck_assert_int_eq(c[0].rows, 10);
    ck_assert_msg(failure_of(d[1]) == NULL, "%s", story_of(d[1]));
    ck_assert_int_eq(c[1].rows, 5);
    ck_assert(deferred_failure_is(failure_of(d[2]), DEFERRED_DOMAIN_LIBRARY, ECANCELED));
    ck_assert_int_eq(c[2].rows, 0);
    ck_assert_msg(failure_of(d[3]) == NULL, "%s", story_of(d[3]));
    ck_assert_int_eq(c[3].rows, 3);
    ck_assert_int_eq(cancel_requests, 0); /* it could have hit the others */
    for (i = 0; i < 4; i++)
        deferred_unref(d[i]);
    /* Drained, the connection goes on. */
    while (deferred_pg_in_flight(conn) && ev_run(loop, EVRUN_ONCE))
        ;
    ck_assert_uint_eq(deferred_pg_in_flight(conn), 0);
    d[0] = deferred_pg_query_one(conn, "SELECT 42", NULL, 0);
    wait_for(d[0]);
    ck_assert_int_eq(deferred_row_int(deferred_value_get_row(deferred_result(d[0])), 0), 42);
    deferred_unref(d[0]);
}
END_TEST

/* The last query on the wire, cancelled: a cancel request stops the
 * server (a result of 50 million rows is not drained to its end). */
START_TEST(test_D22_cancel_last_sends_cancel_request)
{
    struct coll c[2];
    deferred_t *d[2];

    d[0] = run_query(&c[0], 0, "SELECT 1");
    d[1] = run_query(&c[1], 1, "SELECT g FROM generate_series(1, 50000000) g");
    c[1].cancel_at = 20;
    cancel_requests = 0;
    wait_for(d[1]);
    ck_assert_int_eq(cancel_requests, 1);
    ck_assert_ptr_null(failure_of(d[0]));
    ck_assert(deferred_failure_is(failure_of(d[1]), DEFERRED_DOMAIN_LIBRARY, ECANCELED));
    ck_assert_int_eq(c[1].rows, 20);
    deferred_unref(d[0]);
    deferred_unref(d[1]);
    d[0] = deferred_pg_query_one(conn, "SELECT 43", NULL, 0);
    wait_for(d[0]);
    ck_assert_msg(failure_of(d[0]) == NULL, "%s", story_of(d[0]));
    ck_assert_int_eq(deferred_row_int(deferred_value_get_row(deferred_result(d[0])), 0), 43);
    deferred_unref(d[0]);
}
END_TEST

/* A query cancelled once libpq holds its whole result (query_one() of a
 * one-row query cancels after its row) needs no cancel request, with
 * pipelining off or on: one round trip per query, not two connections. */
START_TEST(test_D22_query_one_sends_no_cancel_request)
{
    deferred_pg_t *c2 = connect_to(server.conninfo);
    deferred_pg_t *on[2] = {c2, conn};
    int i, k;

    for (k = 0; k < 2; k++) {
        cancel_requests = 0;
        for (i = 0; i < 20; i++) {
            deferred_t *d = deferred_pg_query_one_p(on[k], "SELECT $1::int + 1",
                                                    DEFERRED_PARAMS(deferred_param_int(i)));

            wait_for(d);
            ck_assert_msg(failure_of(d) == NULL, "%s", story_of(d));
            ck_assert_int_eq(deferred_row_int(deferred_value_get_row(deferred_result(d)), 0),
                             i + 1);
            deferred_unref(d);
        }
        ck_assert_int_eq(cancel_requests, 0);
        ck_assert_uint_eq(deferred_pg_in_flight(on[k]), 0);
    }
    deferred_pg_unref(c2);
}
END_TEST

static int cancelled_all = -1;
static void cancel_all_at_5(struct coll *c)
{
    if (c->rows == 5)
        cancelled_all = deferred_pg_cancel_all(conn);
}

START_TEST(test_D22_cancel_all)
{
    struct coll c[4];
    deferred_t *d[4];
    int i;

    cancelled_all = -1;
    d[0] = run_query(&c[0], 0, "SELECT g FROM generate_series(1, 50000000) g");
    c[0].at_row = cancel_all_at_5;
    /* Run by the server after the first was cancelled: it gets a cancel
     * request of its own when it comes to be read (best effort: see
     * deferred_pg_cancel_all()): when the request is lost, its million
     * rows are drained. */
    d[1] = run_query(&c[1], 1, "SELECT g FROM generate_series(1, 1000000) g");
    d[2] = run_query(&c[2], 2, "SELECT 2");
    /* Made but its process not run yet: told when it runs. */
    {
        deferred_stage_t *q = deferred_pg_query(conn, "SELECT 3", NULL, 0);
        deferred_process_t *p = deferred_process_new(0);

        memset(&c[3], 0, sizeof(c[3]));
        c[3].id = 3;
        c[3].self = deferred_stage_new(&coll_ops, &c[3], 0);
        ck_assert_int_eq(deferred_process_add(p, q), 0);
        ck_assert_int_eq(deferred_process_add(p, c[3].self), 0);
        wait_for(d[0]);
        ck_assert_int_eq(cancelled_all, 4);
        d[3] = deferred_process_run(p);
        deferred_process_unref(p);
    }
    for (i = 0; i < 4; i++) {
        wait_for(d[i]);
        ck_assert_msg(deferred_failure_is(failure_of(d[i]), DEFERRED_DOMAIN_LIBRARY,
                                          ECANCELED),
                      "query %d: %s", i, story_of(d[i]));
        ck_assert_msg(strstr(deferred_failure_message(failure_of(d[i])), "every query"),
                      "%s", story_of(d[i]));
        deferred_unref(d[i]);
    }
    ck_assert_int_eq(c[0].rows, 5);
    ck_assert_int_eq(c[1].rows, 0);
    ck_assert(deferred_pg_is_open(conn));
    d[0] = deferred_pg_query_one(conn, "SELECT 44", NULL, 0);
    wait_for(d[0]);
    ck_assert_msg(failure_of(d[0]) == NULL, "%s", story_of(d[0]));
    ck_assert_int_eq(deferred_row_int(deferred_value_get_row(deferred_result(d[0])), 0), 44);
    deferred_unref(d[0]);
}
END_TEST

/* ---- D23: a paused query stops reading the socket ------------------------------ */

static deferred_pg_t *watcher;
static struct coll *paused_one, *behind;
static char wait_event[64];
static long behind_rows_while_paused = -1;

static deferred_value_t got_wait_event(deferred_value_t v, void *arg)
{
    deferred_row_t *row = deferred_value_get_row(v);

    (void)arg;
    snprintf(wait_event, sizeof(wait_event), "%s",
             row && deferred_row_text(row, 0) ? deferred_row_text(row, 0) : "(none)");
    behind_rows_while_paused = behind->rows;
    coll_resume(paused_one);
    deferred_value_release(v);
    return deferred_value_none();
}

static void look_at_server(struct coll *c)
{
    deferred_t *d;

    if (c->rows != c->pause_at)
        return;
    /* Paused: the server's backend soon blocks writing to us.  Hold the
     * pause while we look (long enough for the kernel buffers to fill). */
    usleep(300000);
    d = deferred_pg_query_one(watcher,
                              "SELECT wait_event FROM pg_stat_activity"
                              " WHERE query LIKE 'SELECT g, repeat%'",
                              NULL, 0);
    deferred_add_both(d, got_wait_event, NULL);
    deferred_unref(d);
}

START_TEST(test_D23_pause_one_query)
{
    struct coll c[3];
    deferred_t *d[3];
    int i;

    watcher = connect_to(server.conninfo);
    wait_event[0] = '\0';
    behind_rows_while_paused = -1;
    d[0] = run_query(&c[0], 0, "SELECT g FROM generate_series(1, 10) g");
    d[1] = run_query(&c[1], 1,
                     "SELECT g, repeat('x', 200) FROM generate_series(1, 300000) g");
    c[1].pause_at = 1000;
    c[1].at_row = look_at_server;
    d[2] = run_query(&c[2], 2, "SELECT g FROM generate_series(1, 7) g");
    paused_one = &c[1];
    behind = &c[2];
    wait_for(d[2]);
    for (i = 0; i < 3; i++) {
        wait_for(d[i]);
        ck_assert_msg(failure_of(d[i]) == NULL, "query %d: %s", i, story_of(d[i]));
        deferred_unref(d[i]);
    }
    ck_assert_str_eq(wait_event, "ClientWrite");
    ck_assert_int_eq(behind_rows_while_paused, 0); /* it waited behind */
    ck_assert_int_eq(c[0].rows, 10);
    ck_assert_int_eq(c[1].rows, 300000);
    ck_assert(c[1].in_order);
    ck_assert_int_eq(c[2].rows, 7);
    deferred_pg_unref(watcher);
}
END_TEST

/* ---- D24: the server killed mid-pipeline ---------------------------------------- */

static struct pgh *dying;
static void kill_at_100(struct coll *c)
{
    if (c->rows == 100)
        pgh_kill(dying);
}

START_TEST(test_D24_server_killed_mid_pipeline)
{
    struct pgh own;
    deferred_pg_t *c2;
    struct coll c[4];
    deferred_t *d[4];
    size_t base;
    int i;

    ck_assert_int_eq(pgh_start(&own), 0);
    base = tu_live();
    c2 = connect_to(own.conninfo);
    ck_assert_int_eq(deferred_pg_set_pipeline(c2, true), 0);
    dying = &own;
    d[0] = run_query_p(&c[0], 0, c2, "SELECT g FROM generate_series(1, 5000000) g", NULL, 0);
    c[0].at_row = kill_at_100;
    d[1] = run_query_p(&c[1], 1, c2, "SELECT g FROM generate_series(1, 10) g", NULL, 0);
    ck_assert_int_eq(deferred_pg_batch_begin(c2), 0);
    d[2] = run_query_p(&c[2], 2, c2, "SELECT 2", NULL, 0);
    d[3] = run_query_p(&c[3], 3, c2, "SELECT 3", NULL, 0);
    for (i = 0; i < 4; i++) {
        wait_for(d[i]);
        ck_assert_msg(deferred_failure_is(failure_of(d[i]), DEFERRED_DOMAIN_POSTGRES,
                                          ECONNRESET),
                      "query %d: %s", i, story_of(d[i]));
        ck_assert_msg(strstr(deferred_failure_message(failure_of(d[i])), "lost"), "%s",
                      story_of(d[i]));
        deferred_unref(d[i]);
    }
    /* Rows libpq had read before the end are delivered first. */
    ck_assert_int_ge(c[0].rows, 100);
    ck_assert_int_lt(c[0].rows, 5000000);
    ck_assert_int_eq(c[1].rows, 0);
    ck_assert(!deferred_pg_is_open(c2));
    ck_assert_int_eq(deferred_pg_batch_end(c2), 0); /* nothing left to sync */
    ck_assert_uint_eq(deferred_pg_in_flight(c2), 0);
    deferred_pg_unref(c2);
    ck_assert_uint_eq(tu_live(), base); /* nothing leaked */
    pgh_stop(&own, true);
}
END_TEST

/* ---- D25: every allocation failed in turn ---------------------------------------- */

static void oom_pipeline(struct tu_oom *r)
{
    static const char *const sql[] = {
        "SELECT g, 'x' || g FROM generate_series(1, 3) g",
        "SELECT 1/0",
        "SELECT 7",
        "SELECT 8",
    };
    deferred_t *d[4] = {NULL, NULL, NULL, NULL};
    deferred_failure_t *cf = NULL;
    deferred_pg_t *c;
    bool good = true;
    int i, rc;

    /* The loop's adapter is made in the run too: swept with the rest. */
    errno = 0;
    dloop = deferred_ev_loop_new(loop);
    if (!dloop) {
        ck_assert_int_eq(errno, ENOMEM);
        r->saw = true;
        return;
    }
    c = try_connect(server.conninfo, &cf);
    if (!c) {
        deferred_loop_unref(dloop);
        dloop = NULL;
        if (cf) {
            ck_assert_msg(tu_failure_has_enomem(cf), "connect failed without ENOMEM");
            deferred_failure_unref(cf);
        } else {
            ck_assert_int_eq(errno, ENOMEM);
        }
        r->saw = true;
        return;
    }
    ck_assert_int_eq(deferred_pg_set_pipeline(c, true), 0);
    /* Query 0 alone; then a batch where 1 fails and aborts 2; 3 after it. */
    for (i = 0; i < 4; i++) {
        if (i == 1)
            ck_assert_int_eq(deferred_pg_batch_begin(c), 0);
        errno = 0;
        d[i] = deferred_pg_query_one(c, sql[i], NULL, 0);
        if (!d[i]) {
            ck_assert_int_eq(errno, ENOMEM);
            r->saw = true;
            good = false;
        }
        if (i == 2) {
            rc = deferred_pg_batch_end(c);
            ck_assert_int_eq(rc, 0);
        }
    }
    for (i = 0; i < 4; i++) {
        deferred_failure_t *f;

        if (!d[i])
            continue;
        wait_for(d[i]);
        ck_assert(deferred_has_fired(d[i]));
        f = failure_of(d[i]);
        if (f && tu_failure_has_enomem(f)) {
            r->saw = true;
            good = false;
        } else if (i == 0) {
            good = good && !f &&
                   deferred_row_int(deferred_value_get_row(deferred_result(d[i])), 0) == 1;
        } else if (i == 1) {
            good = good && deferred_failure_is(f, DEFERRED_DOMAIN_POSTGRES,
                                               deferred_pg_sqlstate("22012"));
        } else if (i == 2) {
            /* Aborted by query 1, or, when query 1 could not be made, run. */
            good = good && deferred_failure_is(f, DEFERRED_DOMAIN_POSTGRES, ECANCELED);
        } else {
            good = good && !f &&
                   deferred_row_int(deferred_value_get_row(deferred_result(d[i])), 0) == 8;
        }
        deferred_unref(d[i]);
    }
    r->ok = good;
    deferred_pg_unref(c);
    while (ev_run(loop, EVRUN_NOWAIT))
        ;
    deferred_loop_unref(dloop);
    dloop = NULL;
}

START_TEST(test_D25_every_allocation_failed)
{
    unsigned long points;

    deferred_pg_unref(conn); /* the sweep counts every block: none before */
    conn = NULL;
    deferred_loop_unref(dloop);
    dloop = NULL;
    points = tu_oom_sweep("pg pipeline", oom_pipeline, NULL, 0);
    ck_assert_uint_gt(points, 10);
}
END_TEST

static Suite *pipeline_suite(void)
{
    Suite *s = suite_create("postgres pipeline");
    TCase *tc = tcase_create("pipeline");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_D20_in_flight_together_results_in_order);
    tcase_add_test(tc, test_D20_serial_mode_stays_available);
    tcase_add_test(tc, test_D21_failing_query_fails_only_itself);
    tcase_add_test(tc, test_D21_failure_aborts_rest_of_batch);
    tcase_add_test(tc, test_D22_cancel_one_mid_pipeline);
    tcase_add_test(tc, test_D22_cancel_last_sends_cancel_request);
    tcase_add_test(tc, test_D22_query_one_sends_no_cancel_request);
    tcase_add_test(tc, test_D22_cancel_all);
    tcase_add_test(tc, test_D23_pause_one_query);
    tcase_add_test(tc, test_D24_server_killed_mid_pipeline);
    tcase_add_test(tc, test_D25_every_allocation_failed);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    int rc = pgh_start(&server), status;

    if (rc == 77)
        return 77;
    if (rc != 0) {
        fprintf(stderr, "test-pg-pipeline: could not start a throwaway PostgreSQL server\n");
        return 1;
    }
    status = tu_run_suite(pipeline_suite());
    pgh_stop(&server, true);
    return status;
}
