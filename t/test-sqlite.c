/*
 * test-sqlite.c: SQLite query producers (scenarios D01, D02, D06, D07, defined in
 * docs/scenarios.md), the row value, one-row queries, bound parameters,
 * busy and locked databases, wrong parameter counts, and every allocation
 * failing in turn.
 *
 * Every test runs on a real database file in a temporary directory, made
 * once for the suite (100,000 rows in table t), on a real libev loop.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>
#include <deferred/ev.h>
#include <deferred/sqlite.h>
#include <deferred/clock.h>

#include "testutil.h"

#define NROWS 100000

static char dir[256];
static char path[300];
static struct ev_loop *loop;
static deferred_loop_t *dloop; /* its adapter (deferred/loop.h) */
static sqlite3 *db;

/* ---- the database ------------------------------------------------------- */

static void exec_ok(sqlite3 *h, const char *sql)
{
    char *err = NULL;

    if (sqlite3_exec(h, sql, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "test-sqlite: %s: %s\n", sql, err ? err : "?");
        sqlite3_free(err);
        abort();
    }
}

static void make_database(void)
{
    sqlite3 *h;

    snprintf(dir, sizeof(dir), "%s/test-sqlite.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(dir))
        abort();
    snprintf(path, sizeof(path), "%s/t.db", dir);
    if (sqlite3_open(path, &h) != SQLITE_OK)
        abort();
    exec_ok(h, "CREATE TABLE t (i INTEGER PRIMARY KEY, s TEXT, d REAL, b BLOB);"
               "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c"
               " WHERE x < 100000)"
               " INSERT INTO t SELECT x, 'row ' || x, x * 0.5,"
               " CASE WHEN x % 10 = 0 THEN NULL ELSE x'00ff' END FROM c;");
    sqlite3_close(h);
}

static void remove_database(void)
{
    char name[400];

    unlink(path);
    snprintf(name, sizeof(name), "%s-journal", path);
    unlink(name);
    rmdir(dir);
}

static void setup(void)
{
    tu_setup();
    loop = ev_loop_new(EVFLAG_AUTO);
    dloop = deferred_ev_loop_new(loop);
    ck_assert_ptr_nonnull(dloop);
    ck_assert_ptr_nonnull(loop);
    ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
}

static void teardown(void)
{
    /* Every statement was finalized. */
    ck_assert_ptr_null(sqlite3_next_stmt(db, NULL));
    ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
    deferred_loop_unref(dloop);
    dloop = NULL;
    ev_loop_destroy(loop);
    tu_teardown();
}

/* ---- a consumer that checks rows ----------------------------------------- */

struct check {
    deferred_stage_t *self;
    long rows;
    int64_t last;
    bool in_order;
    bool text_ok;
    long pause_at;   /* pause itself after this many rows (0: never) */
    long cancel_at;  /* cancel after this many rows (0: never) */
    bool keep;       /* keep every 1000th row */
    deferred_array_t *kept;
    long finishes;
};

static deferred_failure_t *check_handle(deferred_stage_t *self, deferred_stage_t *from,
                                        deferred_value_t tag, deferred_value_t *item)
{
    struct check *c = deferred_stage_data(self);
    deferred_row_t *row = deferred_value_get_row(*item);
    int64_t i;
    char want[32];

    (void)from;
    (void)tag;
    ck_assert_ptr_nonnull(row);
    i = deferred_row_int(row, 0);
    if (i != c->last + 1)
        c->in_order = false;
    snprintf(want, sizeof(want), "row %lld", (long long)i);
    if (!deferred_row_text(row, 1) || strcmp(deferred_row_text(row, 1), want) != 0)
        c->text_ok = false;
    c->last = i;
    c->rows++;
    if (c->keep && c->rows % 1000 == 0) {
        deferred_array_append(c->kept, *item);
        *item = deferred_value_none();
    }
    if (c->pause_at && c->rows == c->pause_at)
        deferred_stage_pause(self);
    if (c->cancel_at && c->rows == c->cancel_at)
        deferred_stage_cancel(self);
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
    c->text_ok = true;
    c->self = deferred_stage_new(&check_ops, c, 0);
    return c->self;
}

/* Run query -> checker; returns the process's deferred. */
static deferred_t *run_query(struct check *c, const char *sql,
                             const deferred_param_t *params, size_t n,
                             deferred_process_t **pp)
{
    deferred_process_t *p = deferred_process_new(0);
    deferred_stage_t *q = deferred_sqlite_query(dloop, db, sql, params, n);
    deferred_t *d;

    ck_assert_ptr_nonnull(q);
    ck_assert_int_eq(deferred_process_add(p, q), 0);
    ck_assert_int_eq(deferred_process_add(p, check_stage(c)), 0);
    d = deferred_process_run(p);
    if (pp)
        *pp = p;
    else
        deferred_process_unref(p);
    return d;
}

/* The failure d ended with (borrowed), or NULL. */
static deferred_failure_t *failure_of(deferred_t *d)
{
    return deferred_value_get_failure(deferred_result(d));
}

static int loop_iterations;
static void count_iteration(struct ev_loop *l, ev_prepare *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
    loop_iterations++;
}

/* The last references to the process and its result go from the
 * result's own callback, which runs inside the query's batch of steps (the
 * statement's end is stepped there): the query stage is destroyed from
 * inside its pump, which keeps its memory until the batch returns (ASan
 * and valgrind see a use after free otherwise). */
struct dropped {
    deferred_process_t *p;
    deferred_t *done;
    size_t rows;
    bool ran;
};

static deferred_value_t drop_all(deferred_value_t v, void *arg)
{
    struct dropped *x = arg;
    deferred_array_t *a = deferred_value_get_array(v);

    x->ran = true;
    x->rows = a ? deferred_array_size(a) : 0;
    deferred_process_unref(x->p);
    deferred_unref(x->done); /* the runner's reference is the last */
    return v;
}

START_TEST(test_freed_from_inside_its_batch)
{
    struct dropped x = {0};

    x.p = deferred_process_new(0);
    ck_assert_ptr_nonnull(x.p);
    ck_assert_int_eq(deferred_process_add(x.p, deferred_sqlite_query(dloop, db,
                         "SELECT i FROM t WHERE i <= 3", NULL, 0)), 0);
    ck_assert_int_eq(deferred_process_add(x.p, deferred_stage_collect()), 0);
    x.done = deferred_process_run(x.p);
    ck_assert_int_eq(deferred_add_callback(x.done, drop_all, &x), 0);
    ev_run(loop, 0);
    ck_assert(x.ran);
    ck_assert_uint_eq(x.rows, 3);
}
END_TEST

/* ---- D01 ----------------------------------------------------------------- */

START_TEST(test_D01_every_row_in_order)
{
    struct check c;
    deferred_t *d;
    ev_prepare prep;
    size_t allocs_before;

    ev_prepare_init(&prep, count_iteration);
    ev_prepare_start(loop, &prep);
    ev_unref(loop); /* the counter alone does not keep the loop running */
    loop_iterations = 0;
    d = run_query(&c, "SELECT i, s, d, b FROM t WHERE i > ? ORDER BY i",
                  DEFERRED_PARAMS_ARGS(deferred_param_int(0)), NULL);
    /* Nothing is emitted before the loop runs. */
    ck_assert_int_eq(c.rows, 0);
    ck_assert(!deferred_has_fired(d));
    allocs_before = tu_total();
    ev_run(loop, 0);
    ck_assert(deferred_has_fired(d));
    ck_assert_ptr_null(failure_of(d));
    ck_assert_int_eq(c.rows, NROWS);
    ck_assert_int_eq(c.last, NROWS);
    ck_assert(c.in_order);
    ck_assert(c.text_ok);
    ck_assert_int_eq(c.finishes, 1);
    /* A bounded batch per loop iteration: the loop turned many times. */
    ck_assert_int_ge(loop_iterations, NROWS / DEFERRED_SQLITE_BATCH);
    /* Rows are recycled: a handful of allocations for 100,000 rows. */
    ck_assert_uint_lt(tu_total() - allocs_before, 64);
    ev_ref(loop);
    ev_prepare_stop(loop, &prep);
    deferred_unref(d);
}
END_TEST

START_TEST(test_D01_rows_by_name_and_type)
{
    struct check c;
    deferred_t *d;
    size_t i;

    d = run_query(&c, "SELECT i, s, d, b FROM t WHERE i <= 30 ORDER BY i", NULL, 0, NULL);
    c.keep = false;
    ev_run(loop, 0);
    ck_assert_int_eq(c.rows, 30);
    deferred_unref(d);

    /* Keep rows: they stay valid after the query ended. */
    d = run_query(&c, "SELECT i, s, d, b FROM t ORDER BY i", NULL, 0, NULL);
    c.keep = true;
    c.kept = deferred_array_new(0);
    ev_run(loop, 0);
    ck_assert_uint_eq(deferred_array_size(c.kept), NROWS / 1000);
    for (i = 0; i < deferred_array_size(c.kept); i++) {
        deferred_row_t *row = deferred_value_get_row(deferred_array_get(c.kept, i));
        int64_t want = (int64_t)(i + 1) * 1000;
        size_t len = 0;

        ck_assert_uint_eq(deferred_row_columns(row), 4);
        ck_assert_str_eq(deferred_row_name(row, 2), "d");
        ck_assert_int_eq(deferred_row_find(row, "s"), 1);
        ck_assert_int_eq(deferred_row_find(row, "nope"), -1);
        ck_assert_int_eq(deferred_row_int_named(row, "i"), want);
        ck_assert(deferred_row_type(row, 0) == DEFERRED_ROW_INTEGER);
        ck_assert(deferred_row_type(row, 1) == DEFERRED_ROW_TEXT);
        ck_assert(deferred_row_type(row, 2) == DEFERRED_ROW_DOUBLE);
        ck_assert(deferred_row_double_named(row, "d") == (double)want * 0.5);
        /* Every 10th b is NULL: so is every 1000th. */
        ck_assert(deferred_row_is_null_named(row, "b"));
        ck_assert_ptr_null(deferred_row_blob(row, 3, &len));
        ck_assert_uint_eq(len, 0);
        ck_assert(deferred_row_is_null(row, 99));
        ck_assert_int_eq(deferred_row_int(row, 99), 0);
        ck_assert_ptr_null(deferred_row_text(row, 0));
    }
    {
        /* A standalone copy carries its names. */
        deferred_row_t *copy =
            deferred_row_copy(deferred_value_get_row(deferred_array_get(c.kept, 0)));

        ck_assert_ptr_nonnull(copy);
        ck_assert_str_eq(deferred_row_text_named(copy, "s"), "row 1000");
        ck_assert_str_eq(deferred_row_name(copy, 3), "b");
        deferred_row_free(copy);
    }
    deferred_array_free(c.kept);
    deferred_unref(d);
}
END_TEST

START_TEST(test_D01_parameters_bound)
{
    static const unsigned char blob[] = {0, 1, 2, 0xff};
    deferred_t *d;
    deferred_row_t *row;
    size_t len = 0;
    const unsigned char *b;

    d = deferred_sqlite_query_one_p(
        dloop, db, "SELECT ? AS a, ? AS b, ? AS c, ? AS d, ? AS e",
        DEFERRED_PARAMS(deferred_param_int(-42), deferred_param_double(2.5),
                        deferred_param_text("it's \"quoted\"; DROP TABLE t"),
                        deferred_param_blob(blob, sizeof(blob)), deferred_param_null()));
    ck_assert(!deferred_has_fired(d)); /* never before it returns */
    ev_run(loop, 0);
    ck_assert(deferred_has_fired(d));
    row = deferred_value_get_row(deferred_result(d));
    ck_assert_ptr_nonnull(row);
    ck_assert_int_eq(deferred_row_int(row, 0), -42);
    ck_assert(deferred_row_double_named(row, "b") == 2.5);
    ck_assert_str_eq(deferred_row_text(row, 2), "it's \"quoted\"; DROP TABLE t");
    b = deferred_row_blob_named(row, "d", &len);
    ck_assert_uint_eq(len, 4);
    ck_assert_mem_eq(b, blob, 4);
    ck_assert(deferred_row_type(row, 3) == DEFERRED_ROW_BLOB);
    ck_assert(deferred_row_is_null(row, 4));
    deferred_unref(d);

    /* No row: the empty value. */
    d = deferred_sqlite_query_one_p(dloop, db, "SELECT i FROM t WHERE i = ?",
                                    DEFERRED_PARAMS(deferred_param_int(-1)));
    ev_run(loop, 0);
    ck_assert(deferred_has_fired(d));
    ck_assert(deferred_value_is_none(deferred_result(d)));
    deferred_unref(d);

    /* Many rows: the first; the rest is not read. */
    d = deferred_sqlite_query_one(dloop, db, "SELECT i FROM t ORDER BY i DESC", NULL, 0);
    ev_run(loop, 0);
    ck_assert_int_eq(deferred_row_int(deferred_value_get_row(deferred_result(d)), 0),
                     NROWS);
    deferred_unref(d);
}
END_TEST

/* DEFERRED_PARAMS is one expression (deferred/row.h): kept in a variable
 * and passed, chosen by a conditional, given to both forms. */
static deferred_params_t no_params(void)
{
    deferred_params_t none = {NULL, 0};

    return none; /* a value: nothing of this frame is pointed to */
}

START_TEST(test_D01_params_as_one_value)
{
    deferred_params_t ps = DEFERRED_PARAMS(deferred_param_int(5), deferred_param_text("five"));
    deferred_t *d;
    deferred_row_t *row;
    int big = 1;

    ck_assert_uint_eq(ps.n, 2);
    d = deferred_sqlite_query_one_p(dloop, db, "SELECT ? + 1 AS n, ? AS s", ps);
    ev_run(loop, 0);
    row = deferred_value_get_row(deferred_result(d));
    ck_assert_ptr_nonnull(row);
    ck_assert_int_eq(deferred_row_int_named(row, "n"), 6);
    ck_assert_str_eq(deferred_row_text_named(row, "s"), "five");
    deferred_unref(d);

    /* Where only an expression may stand. */
    d = deferred_sqlite_query_one_p(dloop, db, "SELECT ?",
                                    big ? DEFERRED_PARAMS(deferred_param_int(100))
                                        : DEFERRED_PARAMS(deferred_param_int(1)));
    ev_run(loop, 0);
    ck_assert_int_eq(deferred_row_int(deferred_value_get_row(deferred_result(d)), 0), 100);
    deferred_unref(d);

    /* The (params, n) form, from the same value and from the _ARGS form. */
    d = deferred_sqlite_query_one(dloop, db, "SELECT ? * 2", ps.items, 1);
    ev_run(loop, 0);
    ck_assert_int_eq(deferred_row_int(deferred_value_get_row(deferred_result(d)), 0), 10);
    deferred_unref(d);
    d = deferred_sqlite_query_one(dloop, db, "SELECT ? - ?",
                                  DEFERRED_PARAMS_ARGS(deferred_param_int(9),
                                                       deferred_param_int(2)));
    ev_run(loop, 0);
    ck_assert_int_eq(deferred_row_int(deferred_value_get_row(deferred_result(d)), 0), 7);
    deferred_unref(d);

    /* No parameters as a value: {NULL, 0}. */
    d = deferred_sqlite_query_one_p(dloop, db, "SELECT 3", no_params());
    ev_run(loop, 0);
    ck_assert_int_eq(deferred_row_int(deferred_value_get_row(deferred_result(d)), 0), 3);
    deferred_unref(d);

    /* Bad arguments through the _p forms: NULL with errno EINVAL. */
    errno = 0;
    ck_assert_ptr_null(deferred_sqlite_query_p(NULL, db, "SELECT ?", ps));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_ptr_null(deferred_sqlite_query_one_p(dloop, db, "SELECT ?",
                                                   ((deferred_params_t){NULL, 1})));
    ck_assert_int_eq(errno, EINVAL);
}
END_TEST

/* Pause stops stepping: a timer looks while the consumer holds a pause. */
struct pause_look {
    struct check *c;
    long seen;
    int looks;
    ev_timer timer;
};

static void pause_look_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    struct pause_look *pl = w->data;

    (void)l;
    (void)revents;
    if (pl->c->rows < pl->c->pause_at)
        return; /* not there yet (a slow machine, valgrind) */
    if (pl->looks++ == 0) {
        pl->seen = pl->c->rows;
        ck_assert(deferred_stage_is_paused(pl->c->self));
        return; /* look again after another interval */
    }
    /* Nothing moved while paused. */
    ck_assert_int_eq(pl->c->rows, pl->seen);
    ev_timer_stop(l, w);
    deferred_stage_resume(pl->c->self);
}

START_TEST(test_D01_pause_stops_stepping)
{
    struct check c;
    struct pause_look pl;
    deferred_t *d;

    d = run_query(&c, "SELECT i, s FROM t ORDER BY i", NULL, 0, NULL);
    c.pause_at = 1000;
    memset(&pl, 0, sizeof(pl));
    pl.c = &c;
    ev_timer_init(&pl.timer, pause_look_cb, 0.02, 0.02);
    pl.timer.data = &pl;
    ev_timer_start(loop, &pl.timer);
    ev_run(loop, 0);
    ck_assert_int_eq(pl.looks, 2);
    ck_assert_int_eq(pl.seen, 1000); /* it stopped at once, mid-batch */
    ck_assert_int_eq(c.rows, NROWS);
    ck_assert(c.in_order);
    ck_assert_ptr_null(failure_of(d));
    deferred_unref(d);
}
END_TEST

START_TEST(test_D01_cancel_finalizes)
{
    struct check c;
    deferred_t *d;
    deferred_failure_t *f;

    d = run_query(&c, "SELECT i, s FROM t ORDER BY i", NULL, 0, NULL);
    c.cancel_at = 10;
    ev_run(loop, 0);
    ck_assert_int_eq(c.rows, 10);
    f = failure_of(d);
    ck_assert(deferred_failure_is(f, DEFERRED_DOMAIN_LIBRARY, ECANCELED));
    /* The statement is finalized now, not when the process is freed. */
    ck_assert_ptr_null(sqlite3_next_stmt(db, NULL));
    deferred_unref(d);
}
END_TEST

/* ---- D07: off the loop thread --------------------------------------------- */

/* A statement whose one step takes several seconds: a recursive CTE
 * aggregate over 2,000,000,000 values (about a minute at full speed), with
 * an SQL function that counts the values reached (it runs on the worker
 * thread, so the count is atomic). */
#define LONG_STEP_SQL                                                             \
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c"            \
    " WHERE x < 2000000000) SELECT sum(tick(x)) FROM c"

static long ticks;
static void tick_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    __atomic_add_fetch(&ticks, 1, __ATOMIC_RELAXED);
    sqlite3_result_value(ctx, argv[0]);
}

static long ticks_now(void)
{
    return __atomic_load_n(&ticks, __ATOMIC_RELAXED);
}

static void add_tick(void)
{
    __atomic_store_n(&ticks, 0, __ATOMIC_RELAXED);
    ck_assert_int_eq(sqlite3_create_function(db, "tick", 1, SQLITE_UTF8, NULL, tick_fn,
                                             NULL, NULL),
                     SQLITE_OK);
}

/* A timer's look at a long query. */
struct look {
    ev_timer timer;
    ev_tstamp start, fired;
    deferred_t *d;             /* the query's result */
    deferred_process_t *p;     /* its process, when the look frees it */
    long ticks;                /* the count as the timer fired */
    bool done_before;          /* the query had ended as the timer fired */
    bool cancel;               /* cancel the query */
    bool drop;                 /* drop every reference to the query */
    bool cancelled_at_once;    /* it failed with ECANCELED within the call */
    ev_tstamp cancelled;
};

static void look_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    struct look *lk = w->data;

    (void)revents;
    lk->fired = ev_time();
    lk->ticks = ticks_now();
    lk->done_before = deferred_has_fired(lk->d);
    ev_timer_stop(l, w);
    if (lk->cancel) {
        lk->cancelled = ev_time();
        deferred_cancel(lk->d);
        lk->cancelled_at_once = deferred_failure_is(failure_of(lk->d),
                                                    DEFERRED_DOMAIN_LIBRARY, ECANCELED);
    }
    if (lk->drop) {
        deferred_process_unref(lk->p);
        deferred_unref(lk->d);
        lk->p = NULL;
        lk->d = NULL;
    }
}

static void look_start(struct look *lk, ev_tstamp after)
{
    ev_timer_init(&lk->timer, look_cb, after, 0.);
    lk->timer.data = lk;
    ev_now_update(loop);
    lk->start = ev_time();
    ev_timer_start(loop, &lk->timer);
}

/* The case: a 0.2 s timer fires on time (within 50 ms, the bound
 * the issue asks for) while the query's one step runs on the worker; the
 * timer then cancels the query. */
START_TEST(test_D07_long_step_leaves_loop_free)
{
    struct look lk = {0};

    add_tick();
    lk.d = deferred_sqlite_query_one(dloop, db, LONG_STEP_SQL, NULL, 0);
    ck_assert_ptr_nonnull(lk.d);
    lk.cancel = true;
    look_start(&lk, 0.2);
    ev_run(loop, 0);
    ck_assert(lk.fired > 0);
    /* Under valgrind (t/valgrind.sh sets TU_UNDER_VALGRIND), which runs
     * one thread at a time and can leave the worker's step running for
     * seconds before the loop thread gets its turn, no bound holds: the
     * checks below (the timer fired while the step ran) still do. */
    if (!getenv("TU_UNDER_VALGRIND"))
        ck_assert_msg(lk.fired - lk.start < 0.2 + 0.05, "the timer fired %.3f s late",
                      lk.fired - lk.start - 0.2);
    ck_assert(!lk.done_before);
    ck_assert_int_gt(lk.ticks, 0); /* it was inside its step */
    ck_assert(lk.cancelled_at_once);
    ck_assert_ptr_null(sqlite3_next_stmt(db, NULL));
    deferred_unref(lk.d);
}
END_TEST

/* Cancel inside a long step (it keeps what the old loop-thread test
 * proved: the step on the stack is interrupted and the statement
 * finalized).  The query fails with ECANCELED within the cancel call; the
 * worker is back (sqlite3_interrupt()) long before the step would have
 * ended (ev_run() returns once it gave the statement back). */
START_TEST(test_D01_cancel_interrupts_step)
{
    struct look lk = {0};
    ev_tstamp back;
    long after;

    add_tick();
    lk.d = deferred_sqlite_query_one(dloop, db, LONG_STEP_SQL, NULL, 0);
    ck_assert_ptr_nonnull(lk.d);
    lk.cancel = true;
    look_start(&lk, 0.1);
    ev_run(loop, 0);
    back = ev_time();
    ck_assert(lk.cancelled_at_once);
    ck_assert_int_gt(lk.ticks, 0);
    /* Generous: the step alone would take tens of seconds. */
    ck_assert_msg(back - lk.cancelled < 2.0, "the worker took %.3f s to stop",
                  back - lk.cancelled);
    ck_assert_ptr_null(sqlite3_next_stmt(db, NULL));
    after = ticks_now();
    usleep(20000);
    ck_assert_int_eq(ticks_now(), after); /* it does not step any more */
    deferred_unref(lk.d);
}
END_TEST

/* A process cancelled and every reference to it dropped while its
 * query's step runs (a running process holds itself until it finished, so
 * the cancel is what lets it go): the stage is freed while the worker is
 * still inside the step; nothing leaks (the teardown counts the blocks),
 * the worker finalizes the statement and its batch comes back to a query
 * whose stage is gone. */
START_TEST(test_D07_freed_while_stepping)
{
    struct look lk = {0};
    deferred_process_t *p;
    struct check c;

    add_tick();
    lk.d = run_query(&c, LONG_STEP_SQL, NULL, 0, &p);
    lk.p = p;
    lk.cancel = true;
    lk.drop = true;
    look_start(&lk, 0.05);
    ev_run(loop, 0);
    ck_assert_int_gt(lk.ticks, 0);
    ck_assert_ptr_null(lk.d);
    ck_assert_ptr_null(sqlite3_next_stmt(db, NULL));
}
END_TEST

/* A slow consumer that pauses after each row, resumed by a timer: the
 * worker never steps more than two batches ahead of the rows emitted. */
struct slow {
    struct check c;
    ev_timer timer;
    long ahead_max;
    long rows_max;
};

static deferred_failure_t *slow_handle(deferred_stage_t *self, deferred_stage_t *from,
                                       deferred_value_t tag, deferred_value_t *item)
{
    struct slow *sl = deferred_stage_data(self);
    long ahead;

    (void)from;
    (void)tag;
    (void)item;
    sl->c.rows++;
    ahead = ticks_now() - sl->c.rows;
    if (ahead > sl->ahead_max)
        sl->ahead_max = ahead;
    if (sl->c.rows < sl->rows_max) {
        deferred_stage_pause(self);
        ev_timer_start(loop, &sl->timer);
    }
    return NULL;
}

static void slow_resume(struct ev_loop *l, ev_timer *w, int revents)
{
    struct slow *sl = w->data;

    (void)revents;
    ev_timer_stop(l, w);
    deferred_stage_resume(sl->c.self);
}

static const deferred_stage_ops_t slow_ops = {
    .name = "slow consumer",
    .handle = slow_handle,
};

START_TEST(test_D07_pause_bounds_rows_ahead)
{
    struct slow sl;
    deferred_process_t *p = deferred_process_new(0);
    deferred_stage_t *q;
    deferred_t *d;

    memset(&sl, 0, sizeof(sl));
    add_tick();
    q = deferred_sqlite_query(dloop, db, "SELECT i, s FROM t WHERE tick(i) ORDER BY i",
                              NULL, 0);
    ck_assert_ptr_nonnull(q);
    ck_assert_int_eq(deferred_sqlite_set_batch(q, 16), 0);
    sl.rows_max = 300;
    ev_timer_init(&sl.timer, slow_resume, 0.0005, 0.);
    sl.timer.data = &sl;
    sl.c.self = deferred_stage_new(&slow_ops, &sl, 0);
    ck_assert_ptr_nonnull(sl.c.self);
    ck_assert_int_eq(deferred_process_add(p, q), 0);
    ck_assert_int_eq(deferred_process_add(p, sl.c.self), 0);
    d = deferred_process_run(p);
    ev_run(loop, 0);
    /* The 300th row did not pause: every row came, the bound held. */
    ck_assert_int_eq(sl.c.rows, NROWS);
    ck_assert_int_le(sl.ahead_max, 2 * 16);
    ck_assert_ptr_null(failure_of(d));
    deferred_process_unref(p);
    deferred_unref(d);
}
END_TEST

/* The worker goes on to the next batch while the loop thread is busy: a
 * batch whose rows were all emitted goes back to the worker at once, not
 * when the loop thread next takes the other batch from its mailbox (which
 * cost the worker two cross-thread wake-ups a batch: a third of its time
 * at the default batch size on a virtual machine).  On a clock the rounds
 * are the test's: batches of 16; the worker steps rows 1-16 (batch A),
 * then waits at row 17 (a gate in the SQL) until the consumer has row 16;
 * the consumer, at row 16, opens the gate and waits until the worker has
 * stepped all of batch B (rows 17-32) and posted it, which the clock does
 * not deliver in this round.  Then, with the loop not running at all, the
 * worker steps rows 33-48 into batch A. */
static long gate_row;
static int gate_open;

/* Wait (10 s at most) until *what is at least want. */
static bool wait_for(long *what, long want)
{
    int i;

    for (i = 0; i < 10000 && __atomic_load_n(what, __ATOMIC_ACQUIRE) < want; i++)
        usleep(1000);
    return __atomic_load_n(what, __ATOMIC_ACQUIRE) >= want;
}

static void gate_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    int i;

    (void)argc;
    if (sqlite3_value_int64(argv[0]) == gate_row)
        for (i = 0; i < 10000 && !__atomic_load_n(&gate_open, __ATOMIC_ACQUIRE); i++)
            usleep(1000);
    __atomic_add_fetch(&ticks, 1, __ATOMIC_RELEASE);
    sqlite3_result_int(ctx, 1);
}

struct ahead {
    long rows;
    bool b_stepped; /* all of batch B was stepped as row 16 came */
};

static deferred_failure_t *ahead_handle(deferred_stage_t *self, deferred_stage_t *from,
                                        deferred_value_t tag, deferred_value_t *item)
{
    struct ahead *a = deferred_stage_data(self);

    (void)from;
    (void)tag;
    (void)item;
    if (++a->rows == 16) {
        __atomic_store_n(&gate_open, 1, __ATOMIC_RELEASE);
        a->b_stepped = wait_for(&ticks, 32);
    }
    return NULL;
}

static const deferred_stage_ops_t ahead_ops = {
    .name = "consumer that waits at row 16",
    .handle = ahead_handle,
};

START_TEST(test_D07_worker_goes_on_while_rows_are_emitted)
{
    deferred_loop_t *clock = deferred_clock_new();
    deferred_process_t *p = deferred_process_new(0);
    deferred_stage_t *q, *c;
    struct ahead a = {0};
    deferred_t *d;
    int rounds = 0;

    ck_assert_ptr_nonnull(clock);
    __atomic_store_n(&ticks, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&gate_open, 0, __ATOMIC_RELAXED);
    gate_row = 17;
    ck_assert_int_eq(sqlite3_create_function(db, "gate", 1, SQLITE_UTF8, NULL, gate_fn,
                                             NULL, NULL),
                     SQLITE_OK);
    q = deferred_sqlite_query(clock, db, "SELECT i FROM t WHERE gate(i) ORDER BY i", NULL,
                              0);
    ck_assert_ptr_nonnull(q);
    ck_assert_int_eq(deferred_sqlite_set_batch(q, 16), 0);
    c = deferred_stage_new(&ahead_ops, &a, 0);
    ck_assert_ptr_nonnull(c);
    ck_assert_int_eq(deferred_process_add(p, q), 0);
    ck_assert_int_eq(deferred_process_add(p, c), 0);
    d = deferred_process_run(p);
    ck_assert_ptr_nonnull(d);
    while (a.rows < 16 && rounds++ < 1000)
        ck_assert_int_ge(deferred_clock_run_once(clock, true), 0);
    ck_assert_int_eq(a.rows, 16); /* batch A's rows, in one round */
    ck_assert(a.b_stepped);
    /* No round since: only the worker can move the count on. */
    ck_assert(wait_for(&ticks, 48));
    ck_assert_int_eq(a.rows, 16);
    ck_assert_int_eq(deferred_clock_run(clock), 0);
    ck_assert_int_eq(a.rows, NROWS);
    ck_assert_ptr_null(failure_of(d));
    deferred_process_unref(p);
    deferred_unref(d);
    deferred_loop_unref(clock);
}
END_TEST

/* A locked database with a busy timeout: SQLite waits on the worker, the
 * loop goes on (its timer fires while the query waits); the lock is let
 * go from that timer and the query then succeeds.  Without the release,
 * the wait ends in SQLITE_BUSY, with the loop free meanwhile too. */
struct unlock {
    ev_timer timer;
    sqlite3 *other;
    deferred_t *d;
    bool fired;
    bool d_fired;
    bool release;
};

static void unlock_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    struct unlock *u = w->data;

    (void)revents;
    ev_timer_stop(l, w);
    u->fired = true;
    u->d_fired = deferred_has_fired(u->d);
    if (u->release)
        exec_ok(u->other, "ROLLBACK");
}

START_TEST(test_D07_busy_wait_off_the_loop)
{
    struct unlock u = {0};
    deferred_failure_t *f;
    deferred_row_t *row;
    int round;

    ck_assert_int_eq(sqlite3_open(path, &u.other), SQLITE_OK);
    for (round = 0; round < 2; round++) {
        exec_ok(u.other, "BEGIN EXCLUSIVE");
        ck_assert_int_eq(sqlite3_busy_timeout(db, round == 0 ? 10000 : 400), SQLITE_OK);
        u.release = round == 0;
        u.fired = u.d_fired = false;
        u.d = deferred_sqlite_query_one(dloop, db, "SELECT count(*) FROM t", NULL, 0);
        ck_assert_ptr_nonnull(u.d);
        ev_timer_init(&u.timer, unlock_cb, 0.1, 0.);
        u.timer.data = &u;
        ev_timer_start(loop, &u.timer);
        ev_run(loop, 0);
        ck_assert(u.fired);
        ck_assert(!u.d_fired); /* the query was still waiting */
        if (round == 0) {
            ck_assert_ptr_null(failure_of(u.d));
            row = deferred_value_get_row(deferred_result(u.d));
            ck_assert_ptr_nonnull(row);
            ck_assert_int_eq(deferred_row_int(row, 0), NROWS);
        } else {
            f = failure_of(u.d);
            ck_assert(deferred_failure_is(f, DEFERRED_DOMAIN_SQLITE, SQLITE_BUSY));
            exec_ok(u.other, "ROLLBACK");
        }
        deferred_unref(u.d);
    }
    ck_assert_int_eq(sqlite3_busy_timeout(db, 0), SQLITE_OK);
    sqlite3_close(u.other);
}
END_TEST

/* Rows and names larger than a batch's first buffer (16 KiB): a row that
 * does not fit waits on the statement for a larger buffer, a full batch
 * makes the next one larger; every byte arrives, in order. */
START_TEST(test_D07_large_rows_and_names)
{
    static char sql[40000], name[20001];
    deferred_t *d;
    deferred_array_t *a;
    deferred_row_t *row;
    size_t k;

    d = deferred_sqlite_query_all(dloop, db,
                                  "SELECT i, printf('%.*c', 50000 + i, 'x') AS big"
                                  " FROM t WHERE i <= 40 ORDER BY i", NULL, 0);
    ck_assert_ptr_nonnull(d);
    ev_run(loop, 0);
    ck_assert_ptr_null(failure_of(d));
    a = deferred_value_get_array(deferred_result(d));
    ck_assert_ptr_nonnull(a);
    ck_assert_uint_eq(deferred_array_size(a), 40);
    for (k = 0; k < 40; k++) {
        const char *big;

        row = deferred_value_get_row(deferred_array_get(a, k));
        ck_assert_int_eq(deferred_row_int(row, 0), (int64_t)k + 1);
        big = deferred_row_text(row, 1);
        ck_assert_ptr_nonnull(big);
        ck_assert_uint_eq(strlen(big), 50000 + k + 1);
        ck_assert(big[0] == 'x' && big[50000 + k] == 'x');
    }
    deferred_unref(d);

    /* A column name of 20,000 bytes. */
    memset(name, 'n', sizeof(name) - 1);
    snprintf(sql, sizeof(sql), "SELECT 7 AS \"%s\"", name);
    d = deferred_sqlite_query_one(dloop, db, sql, NULL, 0);
    ev_run(loop, 0);
    row = deferred_value_get_row(deferred_result(d));
    ck_assert_ptr_nonnull(row);
    ck_assert_int_eq(deferred_row_int(row, 0), 7);
    ck_assert_str_eq(deferred_row_name(row, 0), name);
    deferred_unref(d);
}
END_TEST

/* The close: it waits until the handle's last query is freed and its
 * statement finalized (here a long step, cancelled later), then closes;
 * with nothing on the handle it fires on the next loop iteration, never
 * before it returns; a statement of the caller's keeps the handle open
 * (SQLITE_BUSY); a cancelled close leaves the handle open. */
static void cancel_later(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)revents;
    ev_timer_stop(l, w);
    deferred_cancel(w->data);
}

START_TEST(test_D07_close_waits_for_the_worker)
{
    sqlite3 *h;
    sqlite3_stmt *mine;
    deferred_t *q, *c, *c2;
    ev_timer t;

    /* A long step on h, then its close. */
    ck_assert_int_eq(sqlite3_open(path, &h), SQLITE_OK);
    ck_assert_int_eq(sqlite3_create_function(h, "tick", 1, SQLITE_UTF8, NULL, tick_fn,
                                             NULL, NULL),
                     SQLITE_OK);
    q = deferred_sqlite_query_one(dloop, h, LONG_STEP_SQL, NULL, 0);
    ck_assert_ptr_nonnull(q);
    c = deferred_sqlite_close(dloop, h);
    ck_assert_ptr_nonnull(c);
    ev_timer_init(&t, cancel_later, 0.1, 0.);
    t.data = q;
    ev_timer_start(loop, &t);
    ck_assert(!deferred_has_fired(c));
    while (!deferred_has_fired(q)) /* until the timer cancelled it */
        ev_run(loop, EVRUN_ONCE);
    ck_assert(!deferred_has_fired(c)); /* the worker is not back yet */
    deferred_unref(q); /* the last of the query once it failed */
    ev_run(loop, 0);
    ck_assert(deferred_has_fired(c));
    ck_assert_ptr_null(failure_of(c)); /* h is closed */
    deferred_unref(c);

    /* Nothing on the handle; a statement of the caller's; a cancel. */
    ck_assert_int_eq(sqlite3_open(path, &h), SQLITE_OK);
    ck_assert_int_eq(sqlite3_prepare_v2(h, "SELECT 1", -1, &mine, NULL), SQLITE_OK);
    c = deferred_sqlite_close(dloop, h);
    ck_assert(!deferred_has_fired(c));
    ev_run(loop, 0);
    ck_assert(deferred_failure_is(failure_of(c), DEFERRED_DOMAIN_SQLITE, SQLITE_BUSY));
    deferred_unref(c);
    sqlite3_finalize(mine);
    c = deferred_sqlite_close(dloop, h);
    deferred_cancel(c);
    ck_assert(deferred_failure_is(failure_of(c), DEFERRED_DOMAIN_LIBRARY, ECANCELED));
    ev_run(loop, 0);
    deferred_unref(c);
    c = deferred_sqlite_close(dloop, h);
    c2 = deferred_sqlite_query_one(dloop, h, "SELECT 1", NULL, 0); /* waited for too */
    ev_run(loop, 0);
    ck_assert_ptr_null(failure_of(c2));
    ck_assert(!deferred_has_fired(c));
    deferred_unref(c2);
    ev_run(loop, 0);
    ck_assert_ptr_null(failure_of(c));
    deferred_unref(c);
    ck_assert_ptr_null(deferred_sqlite_close(NULL, db));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_ptr_null(deferred_sqlite_close(dloop, NULL));
}
END_TEST

/* ---- D02 and other failures ------------------------------------------------ */

/* f's story contains s. */
static bool story_has(const deferred_failure_t *f, const char *s)
{
    char *story = deferred_failure_story_alloc(f);
    bool yes = story && strstr(story, s);

    deferred_free(story);
    return yes;
}

/* The context names the query. */
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

START_TEST(test_D02_bad_sql)
{
    struct check c;
    deferred_t *d;
    deferred_failure_t *f;
    static const char sql[] = "SELEC i FROM t";

    d = run_query(&c, sql, NULL, 0, NULL);
    ck_assert(!deferred_has_fired(d));
    ev_run(loop, 0);
    f = failure_of(d);
    ck_assert_ptr_nonnull(f);
    ck_assert(deferred_failure_is(f, DEFERRED_DOMAIN_SQLITE, SQLITE_ERROR));
    ck_assert_ptr_nonnull(strstr(deferred_failure_message(f), "syntax error"));
    ck_assert(context_has(f, "sqlite query", sql));
    ck_assert(story_has(f, sql));
    ck_assert(story_has(f, "sqlite"));
    ck_assert_int_eq(c.rows, 0);
    ck_assert_int_eq(c.finishes, 1);
    deferred_unref(d);

    d = run_query(&c, "SELECT x FROM nowhere", NULL, 0, NULL);
    ev_run(loop, 0);
    f = failure_of(d);
    ck_assert(deferred_failure_is(f, DEFERRED_DOMAIN_SQLITE, SQLITE_ERROR));
    ck_assert_ptr_nonnull(strstr(deferred_failure_message(f), "no such table: nowhere"));
    ck_assert(context_has(f, "sqlite query", "SELECT x FROM nowhere"));
    deferred_unref(d);
}
END_TEST

START_TEST(test_D02_error_mid_stream_names_row)
{
    struct check c;
    deferred_t *d;
    deferred_failure_t *f;

    /* abs() of the smallest integer overflows at row 3. */
    d = run_query(&c,
                  "SELECT i, s FROM t WHERE i <= 5 AND"
                  " abs(CASE WHEN i = 3 THEN -9223372036854775807 - 1 ELSE i END) > 0"
                  " ORDER BY i",
                  NULL, 0, NULL);
    ev_run(loop, 0);
    f = failure_of(d);
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(deferred_failure_domain(f), DEFERRED_DOMAIN_SQLITE);
    ck_assert_ptr_nonnull(strstr(deferred_failure_message(f), "integer overflow"));
    ck_assert_int_eq(c.rows, 2);
    /* The producer's frame names the row whose step failed: row 3 (two
     * were emitted before it). */
    ck_assert(story_has(f, "row 3 of SELECT i, s FROM t"));
    ck_assert(!story_has(f, "row 2 of"));
    deferred_unref(d);
}
END_TEST

START_TEST(test_wrong_parameter_counts)
{
    struct check c;
    deferred_t *d;
    deferred_failure_t *f;
    static const char sql[] = "SELECT i FROM t WHERE i BETWEEN ? AND ?";

    d = run_query(&c, sql, DEFERRED_PARAMS_ARGS(deferred_param_int(1)), NULL);
    ev_run(loop, 0);
    f = failure_of(d);
    ck_assert(deferred_failure_is(f, DEFERRED_DOMAIN_SQLITE, SQLITE_RANGE));
    ck_assert_ptr_nonnull(strstr(deferred_failure_message(f), "takes 2 parameters, 1 given"));
    ck_assert(context_has(f, "sqlite query", sql));
    deferred_unref(d);

    d = run_query(&c, "SELECT 1",
                  DEFERRED_PARAMS_ARGS(deferred_param_int(1), deferred_param_int(2)), NULL);
    ev_run(loop, 0);
    ck_assert(deferred_failure_is(failure_of(d), DEFERRED_DOMAIN_SQLITE, SQLITE_RANGE));
    deferred_unref(d);

    /* Bad arguments: no stage. */
    ck_assert_ptr_null(deferred_sqlite_query(NULL, db, "SELECT 1", NULL, 0));
    ck_assert_ptr_null(deferred_sqlite_query(dloop, NULL, "SELECT 1", NULL, 0));
    ck_assert_ptr_null(deferred_sqlite_query(dloop, db, NULL, NULL, 0));
    ck_assert_ptr_null(deferred_sqlite_query(dloop, db, "SELECT ?", NULL, 1));
    ck_assert_int_eq(deferred_sqlite_set_batch(NULL, 10), -EINVAL);
}
END_TEST

START_TEST(test_busy_and_locked)
{
    sqlite3 *other;
    deferred_t *d;
    deferred_failure_t *f;
    struct check c;
    deferred_process_t *p;

    /* Busy: another connection holds an exclusive lock (no busy timeout). */
    ck_assert_int_eq(sqlite3_open(path, &other), SQLITE_OK);
    exec_ok(other, "BEGIN EXCLUSIVE");
    d = deferred_sqlite_query_one(dloop, db, "SELECT count(*) FROM t", NULL, 0);
    ev_run(loop, 0);
    f = failure_of(d);
    ck_assert(deferred_failure_is(f, DEFERRED_DOMAIN_SQLITE, SQLITE_BUSY));
    ck_assert_ptr_nonnull(strstr(deferred_failure_message(f), "locked"));
    ck_assert(context_has(f, "sqlite query", "SELECT count(*) FROM t"));
    deferred_unref(d);
    exec_ok(other, "ROLLBACK");
    sqlite3_close(other);

    /* Locked: dropping a table that a paused stream on the same
     * connection still reads. */
    d = run_query(&c, "SELECT i, s FROM t ORDER BY i", NULL, 0, &p);
    c.pause_at = 1;
    /* The first batch comes from the worker through the mailbox: the
     * loop turns until it was delivered and its first row paused the
     * stream. */
    while (c.rows == 0)
        ev_run(loop, EVRUN_ONCE);
    ev_run(loop, EVRUN_NOWAIT);
    ck_assert_int_eq(c.rows, 1);
    {
        deferred_t *drop = deferred_sqlite_query_one(dloop, db, "DROP TABLE t", NULL, 0);

        ev_run(loop, 0);
        f = failure_of(drop);
        ck_assert(deferred_failure_is(f, DEFERRED_DOMAIN_SQLITE, SQLITE_LOCKED));
        ck_assert(context_has(f, "sqlite query", "DROP TABLE t"));
        deferred_unref(drop);
    }
    deferred_process_cancel(p);
    ck_assert(deferred_has_fired(d));
    deferred_process_unref(p);
    deferred_unref(d);
}
END_TEST

/* Cancelling a query that has not run yet, and freeing an unrun stage. */
START_TEST(test_cancel_before_run_and_free)
{
    deferred_stage_t *st = deferred_sqlite_query(dloop, db, "SELECT 1", NULL, 0);
    deferred_t *d;

    ck_assert_ptr_nonnull(st);
    ck_assert_int_eq(deferred_sqlite_set_batch(st, 1), 0);
    deferred_stage_free(st);
    d = deferred_sqlite_query_one(dloop, db, "SELECT i FROM t", NULL, 0);
    deferred_cancel(d);
    ck_assert(deferred_failure_is(failure_of(d), DEFERRED_DOMAIN_LIBRARY, ECANCELED));
    ev_run(loop, 0);
    deferred_unref(d);
}
END_TEST

/* ---- out of memory ------------------------------------------------------------ */

/* A query of 600 rows into the checker with each allocation failing in
 * turn (tu_oom_sweep()): each run ends with the library's ENOMEM (a
 * row that could not be made too) or with every row in order; more than 3 runs end out of memory.  The whole layer's sweeps
 * are in t/test-oom-sqlite.c. */
static int failing_allocator_enomem;

static void sc_failing_allocator(struct tu_oom *r)
{
    struct check c;
    deferred_process_t *p;
    deferred_stage_t *q, *k;
    deferred_t *d;

    p = deferred_process_new(0);
    q = deferred_sqlite_query_p(dloop, db, "SELECT i, s, d FROM t WHERE i <= ?",
                                DEFERRED_PARAMS(deferred_param_int(600)));
    k = check_stage(&c);
    if (!p || !q || !k) {
        deferred_stage_free(q);
        deferred_stage_free(k);
        deferred_process_unref(p);
        r->saw = true;
        goto out;
    }
    if (deferred_process_add(p, q) < 0) {
        deferred_stage_free(k);
        k = NULL;
    }
    if (!k || deferred_process_add(p, k) < 0) {
        deferred_process_unref(p);
        r->saw = true;
        goto out;
    }
    d = deferred_process_run(p);
    deferred_process_unref(p);
    if (!d) {
        ev_run(loop, 0);
        r->saw = true;
        goto out;
    }
    ev_run(loop, 0);
    ck_assert(deferred_has_fired(d));
    if (failure_of(d)) {
        ck_assert(deferred_failure_find(failure_of(d), DEFERRED_DOMAIN_LIBRARY, ENOMEM));
        r->saw = true;
    } else {
        ck_assert_int_eq(c.rows, 600);
        ck_assert(c.in_order);
        r->ok = true;
    }
    deferred_unref(d);
out:
    if (r->saw)
        failing_allocator_enomem++;
}

START_TEST(test_failing_allocator)
{
    failing_allocator_enomem = 0;
    tu_oom_sweep("sqlite query", sc_failing_allocator, NULL, 0);
    ck_assert_int_gt(failing_allocator_enomem, 3);
}
END_TEST

/* ---- D06: the conveniences --------------------------------------------------- */

/* Every row into one array, in order; an empty result is an empty array;
 * bad SQL fails it as a stream. */
START_TEST(test_D06_query_all_collects_rows)
{
    deferred_t *d;
    deferred_array_t *a;
    size_t i;

    d = deferred_sqlite_query_all_p(dloop, db, "SELECT i, s FROM t WHERE i <= ? ORDER BY i",
                                    DEFERRED_PARAMS(deferred_param_int(500)));
    ck_assert_ptr_nonnull(d);
    ck_assert(!deferred_has_fired(d)); /* never before it returns */
    ev_run(loop, 0);
    ck_assert(deferred_has_result(d));
    a = deferred_value_get_array(deferred_result(d));
    ck_assert_ptr_nonnull(a);
    ck_assert_uint_eq(deferred_array_size(a), 500);
    for (i = 0; i < 500; i++) {
        deferred_row_t *row = deferred_value_get_row(deferred_array_get(a, i));

        ck_assert_ptr_nonnull(row);
        ck_assert_int_eq(deferred_row_int(row, 0), (int64_t)i + 1);
    }
    ck_assert_str_eq(deferred_row_text(deferred_value_get_row(deferred_array_get(a, 41)), 1),
                     "row 42");
    deferred_unref(d);

    d = deferred_sqlite_query_all(dloop, db, "SELECT i FROM t WHERE i < 0", NULL, 0);
    ev_run(loop, 0);
    a = deferred_value_get_array(deferred_result(d));
    ck_assert_ptr_nonnull(a);
    ck_assert_uint_eq(deferred_array_size(a), 0);
    deferred_unref(d);

    d = (deferred_sqlite_query_all)(dloop, db, "SELEC nothing", NULL, 0);
    ev_run(loop, 0);
    ck_assert(deferred_failure_is(failure_of(d), DEFERRED_DOMAIN_SQLITE, SQLITE_ERROR));
    deferred_unref(d);
}
END_TEST

static int64_t exec_count(deferred_t *d, const char *col)
{
    deferred_row_t *row;

    ck_assert(deferred_has_result(d));
    ck_assert_ptr_null(failure_of(d));
    row = deferred_value_get_row(deferred_result(d));
    ck_assert_ptr_nonnull(row);
    return deferred_row_int_named(row, col);
}

/* An exec: DDL, an INSERT's rowid, an UPDATE's change count, RETURNING
 * rows dropped; a transaction as statements in order, each made from the
 * callback of the one before (here: after it fired); a rollback undoes;
 * a failing statement fails the exec. */
START_TEST(test_D06_exec_counts_and_transactions)
{
    deferred_t *d;

    d = deferred_sqlite_exec(dloop, db, "CREATE TEMP TABLE w (id INTEGER PRIMARY KEY, v TEXT)",
                             NULL, 0);
    ck_assert(!deferred_has_fired(d));
    ev_run(loop, 0);
    ck_assert_int_eq(exec_count(d, "changes"), 0);
    deferred_unref(d);

    d = deferred_sqlite_exec(dloop, db, "BEGIN", NULL, 0);
    ev_run(loop, 0);
    exec_count(d, "changes");
    deferred_unref(d);
    d = deferred_sqlite_exec_p(dloop, db, "INSERT INTO w (id, v) VALUES (?, ?)",
                               DEFERRED_PARAMS(deferred_param_int(41),
                                               deferred_param_text("a")));
    ev_run(loop, 0);
    ck_assert_int_eq(exec_count(d, "changes"), 1);
    ck_assert_int_eq(exec_count(d, "last_insert_rowid"), 41);
    deferred_unref(d);
    d = deferred_sqlite_exec(dloop, db, "INSERT INTO w (v) VALUES ('b'), ('c') RETURNING id",
                             NULL, 0);
    ev_run(loop, 0);
    ck_assert_int_eq(exec_count(d, "changes"), 2);
    ck_assert_int_eq(exec_count(d, "last_insert_rowid"), 43);
    deferred_unref(d);
    d = deferred_sqlite_exec(dloop, db, "COMMIT", NULL, 0);
    ev_run(loop, 0);
    exec_count(d, "changes");
    deferred_unref(d);

    d = (deferred_sqlite_exec)(dloop, db, "UPDATE w SET v = 'x' WHERE id >= 42", NULL, 0);
    ev_run(loop, 0);
    ck_assert_int_eq(exec_count(d, "changes"), 2);
    deferred_unref(d);

    d = deferred_sqlite_exec(dloop, db, "BEGIN", NULL, 0);
    ev_run(loop, 0);
    deferred_unref(d);
    d = deferred_sqlite_exec(dloop, db, "DELETE FROM w", NULL, 0);
    ev_run(loop, 0);
    ck_assert_int_eq(exec_count(d, "changes"), 3);
    deferred_unref(d);
    d = deferred_sqlite_exec(dloop, db, "ROLLBACK", NULL, 0);
    ev_run(loop, 0);
    deferred_unref(d);
    d = deferred_sqlite_query_all(dloop, db, "SELECT id FROM w", NULL, 0);
    ev_run(loop, 0);
    ck_assert_uint_eq(deferred_array_size(deferred_value_get_array(deferred_result(d))), 3);
    deferred_unref(d);

    /* A constraint violation fails the exec with SQLite's code. */
    d = deferred_sqlite_exec(dloop, db, "INSERT INTO w (id, v) VALUES (41, 'dup')", NULL, 0);
    ev_run(loop, 0);
    ck_assert(deferred_failure_is(failure_of(d), DEFERRED_DOMAIN_SQLITE,
                                  SQLITE_CONSTRAINT_PRIMARYKEY));
    deferred_unref(d);
    /* Only a comment: the counts, nothing run. */
    d = deferred_sqlite_exec(dloop, db, "-- nothing", NULL, 0);
    ev_run(loop, 0);
    exec_count(d, "changes");
    deferred_unref(d);
    /* Cancelled before it ran: ECANCELED, the statement finalized. */
    d = deferred_sqlite_exec(dloop, db, "DELETE FROM w", NULL, 0);
    deferred_cancel(d);
    ev_run(loop, 0);
    ck_assert(deferred_failure_is(failure_of(d), DEFERRED_DOMAIN_LIBRARY, ECANCELED));
    deferred_unref(d);
    d = deferred_sqlite_exec(dloop, db, "DROP TABLE w", NULL, 0);
    ev_run(loop, 0);
    exec_count(d, "changes");
    deferred_unref(d);
}
END_TEST

/* Every allocation failing in turn under query_all and exec: each fails
 * with ENOMEM or succeeds whole. */
static int conv_enomem;

static void sc_conveniences(struct tu_oom *r)
{
    deferred_t *d;

    d = deferred_sqlite_query_all_p(dloop, db, "SELECT i, s FROM t WHERE i <= ?",
                                    DEFERRED_PARAMS(deferred_param_int(40)));
    if (!d) {
        r->saw = true;
    } else {
        ev_run(loop, 0);
        ck_assert(deferred_has_fired(d));
        if (failure_of(d)) {
            ck_assert(deferred_failure_find(failure_of(d), DEFERRED_DOMAIN_LIBRARY, ENOMEM));
            r->saw = true;
        } else {
            ck_assert_uint_eq(deferred_array_size(deferred_value_get_array(deferred_result(d))),
                              40);
        }
        deferred_unref(d);
    }
    d = deferred_sqlite_exec(dloop, db, "SELECT 1", NULL, 0);
    if (!d) {
        r->saw = true;
    } else {
        ev_run(loop, 0);
        ck_assert(deferred_has_fired(d));
        if (failure_of(d)) {
            ck_assert(deferred_failure_find(failure_of(d), DEFERRED_DOMAIN_LIBRARY, ENOMEM));
            r->saw = true;
        } else {
            ck_assert_ptr_nonnull(deferred_value_get_row(deferred_result(d)));
        }
        deferred_unref(d);
    }
    if (r->saw)
        conv_enomem++;
    else
        r->ok = true;
}

START_TEST(test_D06_failing_allocator)
{
    conv_enomem = 0;
    tu_oom_sweep("sqlite conveniences", sc_conveniences, NULL, 0);
    ck_assert_int_gt(conv_enomem, 3);
}
END_TEST

/* ---- contracts at the edges (issue 12) ------------------------------------------ */

/* f's story, for messages (freed by the caller). */
static char *story_of(const deferred_failure_t *f)
{
    char *story = deferred_failure_story_alloc(f);

    ck_assert_ptr_nonnull(story);
    return story;
}

/* How many times needle occurs in hay. */
static int occurrences(const char *hay, const char *needle)
{
    int n = 0;

    while ((hay = strstr(hay, needle)) != NULL) {
        n++;
        hay += strlen(needle);
    }
    return n;
}

START_TEST(test_statement_without_sql_finishes)
{
    static const char *const blanks[] = {"-- nothing", "   ", "", "/* c */ \n -- x"};
    struct check c;
    deferred_t *d;
    size_t i;

    for (i = 0; i < sizeof(blanks) / sizeof(blanks[0]); i++) {
        d = deferred_sqlite_query_one(dloop, db, blanks[i], NULL, 0);
        ck_assert_ptr_nonnull(d);
        ev_run(loop, 0);
        ck_assert_msg(deferred_has_fired(d), "'%s' never finished", blanks[i]);
        ck_assert(deferred_value_is_none(deferred_result(d)));
        deferred_unref(d);

        d = run_query(&c, blanks[i], NULL, 0, NULL);
        ev_run(loop, 0);
        ck_assert(deferred_has_fired(d));
        ck_assert_ptr_null(failure_of(d));
        ck_assert_int_eq(c.rows, 0);
        ck_assert_int_eq(c.finishes, 1);
        deferred_unref(d);
    }
    /* Two statements: the second would be ignored; an error instead.  A
     * trailing comment or semicolon is fine. */
    d = deferred_sqlite_query_one(dloop, db, "SELECT 1; SELECT 2", NULL, 0);
    ev_run(loop, 0);
    ck_assert(deferred_failure_is(failure_of(d), DEFERRED_DOMAIN_LIBRARY, EINVAL));
    ck_assert_ptr_nonnull(strstr(deferred_failure_message(failure_of(d)), "more than one"));
    deferred_unref(d);
    d = deferred_sqlite_query_one(dloop, db, "SELECT 1; -- done\n", NULL, 0);
    ev_run(loop, 0);
    ck_assert_int_eq(deferred_row_int(deferred_value_get_row(deferred_result(d)), 0), 1);
    deferred_unref(d);
    ck_assert_ptr_null(sqlite3_next_stmt(db, NULL));

    /* Parameters given to no statement: an error, not silence. */
    d = deferred_sqlite_query_one_p(dloop, db, "-- nothing",
                                    DEFERRED_PARAMS(deferred_param_int(1)));
    ev_run(loop, 0);
    ck_assert(deferred_failure_is(failure_of(d), DEFERRED_DOMAIN_SQLITE, SQLITE_RANGE));
    deferred_unref(d);
}
END_TEST

START_TEST(test_bad_parameters_are_einval)
{
    deferred_t *d;
    deferred_failure_t *f;
    deferred_param_t bad;

    /* A blob {NULL, 5}: not 5 bytes read from somewhere. */
    d = deferred_sqlite_query_one_p(dloop, db, "SELECT length(?)",
                                    DEFERRED_PARAMS(deferred_param_blob(NULL, 5)));
    ev_run(loop, 0);
    f = failure_of(d);
    ck_assert(deferred_failure_is(f, DEFERRED_DOMAIN_LIBRARY, EINVAL));
    ck_assert_ptr_nonnull(strstr(deferred_failure_message(f), "parameter 1"));
    deferred_unref(d);

    bad.type = DEFERRED_ROW_TEXT;
    bad.u.s.p = NULL;
    bad.u.s.len = (size_t)-1;
    d = deferred_sqlite_query_one_p(dloop, db, "SELECT ?, ?",
                                    DEFERRED_PARAMS(deferred_param_int(1), bad));
    ev_run(loop, 0);
    f = failure_of(d);
    ck_assert(deferred_failure_is(f, DEFERRED_DOMAIN_LIBRARY, EINVAL));
    ck_assert_ptr_nonnull(strstr(deferred_failure_message(f), "parameter 2"));
    deferred_unref(d);

    /* A blob of length 0 with NULL data is an empty blob. */
    d = deferred_sqlite_query_one_p(dloop, db, "SELECT length(?)",
                                    DEFERRED_PARAMS(deferred_param_blob(NULL, 0)));
    ev_run(loop, 0);
    ck_assert_int_eq(deferred_row_int(deferred_value_get_row(deferred_result(d)), 0), 0);
    deferred_unref(d);
}
END_TEST

START_TEST(test_failure_context_reads_well)
{
    deferred_t *d;
    deferred_failure_t *f;
    char *story;
    char sql[600];
    int line;

    /* Bad SQL: the SQL once, no row named, the site is this file. */
    line = __LINE__ + 1;
    d = deferred_sqlite_query_one(dloop, db, "SELEC 1", NULL, 0);
    ev_run(loop, 0);
    f = failure_of(d);
    ck_assert_ptr_nonnull(f);
    story = story_of(f);
    ck_assert_msg(occurrences(story, "SELEC 1") == 1, "%s", story);
    ck_assert_msg(!strstr(story, "row 0"), "%s", story);
    ck_assert_msg(strstr(deferred_failure_file(f), "test-sqlite.c") != NULL, "%s",
                  deferred_failure_file(f));
    ck_assert_int_eq(deferred_failure_line(f), line);
    deferred_free(story);
    deferred_unref(d);

    /* A long statement is named whole. */
    snprintf(sql, sizeof(sql), "SELECT i FROM t WHERE i > 0 /*%0400d*/ AND nosuch = 1", 0);
    d = deferred_sqlite_query_one(dloop, db, sql, NULL, 0);
    ev_run(loop, 0);
    story = story_of(failure_of(d));
    ck_assert_msg(strstr(story, "AND nosuch = 1") != NULL, "%s", story);
    deferred_free(story);
    deferred_unref(d);
}
END_TEST

/* ---- DU11: an open query in a dump, with its SQL ------------------------- */

struct dump_wait {
    deferred_t *stuck; /* what the map waits on at row 3 */
    char *dump;        /* the dump made while it waits */
    long rows;
};

static deferred_value_t wait_at_row_3(deferred_value_t v, void *arg)
{
    struct dump_wait *w = arg;

    deferred_value_release(v);
    if (++w->rows != 3)
        return deferred_value_none();
    w->stuck = deferred_new();
    return deferred_value_deferred(deferred_ref(w->stuck));
}

static void dump_when_stuck(struct ev_loop *l, ev_timer *t, int revents)
{
    struct dump_wait *w = t->data;

    (void)revents;
    if (!w->stuck)
        return;
    ev_timer_stop(l, t);
    w->dump = deferred_dump_string(DEFERRED_DUMP_TEXT);
    deferred_callback(w->stuck, deferred_value_none());
    deferred_unref(w->stuck);
}

START_TEST(test_DU11_open_query_sql_in_dump)
{
    struct dump_wait w = { NULL, NULL, 0 };
    deferred_process_t *p;
    deferred_t *d;
    ev_timer t;

    deferred_set_debug(true);
    p = deferred_process_new(0);
    ck_assert_int_eq(deferred_process_add(p, deferred_sqlite_query(
                         dloop, db, "SELECT i FROM t WHERE s <> 'x' ORDER BY i", NULL, 0)), 0);
    ck_assert_int_eq(deferred_process_add(p, deferred_stage_map("wait", wait_at_row_3, &w)), 0);
    ck_assert_int_eq(deferred_process_add(p, deferred_stage_collect()), 0);
    d = deferred_process_run(p);
    ck_assert_ptr_nonnull(d);
    deferred_process_unref(p);
    ev_timer_init(&t, dump_when_stuck, 0.001, 0.01);
    t.data = &w;
    ev_timer_start(loop, &t);
    ev_run(loop, 0);
    ck_assert(deferred_has_fired(d));
    ck_assert_ptr_nonnull(w.dump);
    /* The query stage names its SQL (through its describe), the map what
     * it waits on. */
    ck_assert_msg(strstr(w.dump, "at=\"row ") != NULL, "%s", w.dump);
    ck_assert_ptr_nonnull(strstr(w.dump, " of SELECT i FROM t WHERE s <> 'x' ORDER BY i\""));
    ck_assert_ptr_nonnull(strstr(w.dump, "stage wait index=1"));
    ck_assert_ptr_nonnull(strstr(w.dump, "waits on: deferred "));
    ck_assert_msg(strstr(w.dump, "innermost") != NULL, "%s", w.dump);
    deferred_free(w.dump);
    deferred_unref(d);
}
END_TEST

static Suite *sqlite_suite(void)
{
    Suite *s = suite_create("sqlite");
    TCase *tc = tcase_create("sqlite");
    TCase *tcc = tcase_create("contracts");

    tcase_add_unchecked_fixture(tcc, make_database, remove_database);
    tcase_add_checked_fixture(tcc, setup, teardown);
    tcase_add_test(tcc, test_statement_without_sql_finishes);
    tcase_add_test(tcc, test_freed_from_inside_its_batch);
    tcase_add_test(tcc, test_bad_parameters_are_einval);
    tcase_add_test(tcc, test_failure_context_reads_well);
    suite_add_tcase(s, tcc);

    tcase_add_unchecked_fixture(tc, make_database, remove_database);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_D01_every_row_in_order);
    tcase_add_test(tc, test_D01_params_as_one_value);
    tcase_add_test(tc, test_D01_rows_by_name_and_type);
    tcase_add_test(tc, test_D01_parameters_bound);
    tcase_add_test(tc, test_D01_pause_stops_stepping);
    tcase_add_test(tc, test_D01_cancel_finalizes);
    tcase_add_test(tc, test_D01_cancel_interrupts_step);
    tcase_add_test(tc, test_D07_long_step_leaves_loop_free);
    tcase_add_test(tc, test_D07_freed_while_stepping);
    tcase_add_test(tc, test_D07_pause_bounds_rows_ahead);
    tcase_add_test(tc, test_D07_worker_goes_on_while_rows_are_emitted);
    tcase_add_test(tc, test_D07_busy_wait_off_the_loop);
    tcase_add_test(tc, test_D07_large_rows_and_names);
    tcase_add_test(tc, test_D07_close_waits_for_the_worker);
    tcase_add_test(tc, test_D02_bad_sql);
    tcase_add_test(tc, test_D02_error_mid_stream_names_row);
    tcase_add_test(tc, test_wrong_parameter_counts);
    tcase_add_test(tc, test_busy_and_locked);
    tcase_add_test(tc, test_cancel_before_run_and_free);
    tcase_add_test(tc, test_failing_allocator);
    tcase_add_test(tc, test_D06_query_all_collects_rows);
    tcase_add_test(tc, test_D06_exec_counts_and_transactions);
    tcase_add_test(tc, test_D06_failing_allocator);
    tcase_add_test(tc, test_DU11_open_query_sql_in_dump);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(sqlite_suite());
}
