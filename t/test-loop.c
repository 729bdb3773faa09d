/*
 * t/test-loop.c: the loop layer (deferred/loop.h) on every loop.  Each
 * test runs once per harness of t/loop-harness.h (libev, and libuv, GLib
 * and the clock when built): the E scenarios (time, timeouts, fd
 * readiness, the pool, cross-thread firing, the line producer) through
 * the deferred_loop_* functions, and the LO scenarios of the interface
 * itself (watchers, the count of what keeps a loop alive, the mailbox,
 * the dump).  Scenario ids are defined in docs/scenarios.md.
 *
 * Threads and the counting allocator (as in t/test-ev.c): the library's
 * allocations stay on the loop thread; other threads only fire remotes
 * and post messages, which never allocate.
 */
#include "testutil.h"
#include "loop-harness.h"

#include <deferred/loop.h>
#include <deferred/combinators.h>
#ifdef TL_HAVE_SQLITE
#include <deferred/sqlite.h>
#endif
#ifdef TL_HAVE_PQ
#include <deferred/pg.h>
#include "pg-harness.h"
#endif

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const tl_harness_t *H;
static void *HS;
static deferred_loop_t *L;
static pthread_t loop_thread;

static void begin(int i)
{
    H = tl_harnesses[i];
    L = H->make(&HS);
    ck_assert_msg(L != NULL, "%s: no loop", H->name);
    loop_thread = pthread_self();
}

static void end(void)
{
    H->destroy(L, HS);
    L = NULL;
}

static void run(void)
{
    H->run(L, HS);
    ck_assert_msg(deferred_loop_alive(L) == 0, "%s: %zu left alive", H->name,
                  deferred_loop_alive(L));
}

static int result_code(deferred_t *d)
{
    return deferred_failure_code(deferred_value_get_failure(deferred_result(d)));
}

/* ---- E01, E02: time and timeouts ----------------------------------------- */

static int order[8];
static int n_order;

static deferred_value_t note_order(deferred_value_t v, void *arg)
{
    ck_assert(pthread_equal(pthread_self(), loop_thread));
    order[n_order++] = (int)(intptr_t)arg;
    return v;
}

/* E01: laters fire in the order of their delays, after their delay on the
 * loop's clock, never before the call returns; the loop then has nothing
 * left. */
START_TEST(test_E01_later_in_order_on_every_loop)
{
    deferred_t *d[3];
    double start;
    int k;

    begin(_i);
    n_order = 0;
    start = deferred_loop_now(L);
    d[0] = deferred_loop_later(L, 0.03);
    d[1] = deferred_loop_later(L, 0.0);
    d[2] = deferred_loop_later(L, 0.01);
    for (k = 0; k < 3; k++) {
        ck_assert_ptr_nonnull(d[k]);
        ck_assert(!deferred_has_fired(d[k]));
        ck_assert_int_eq(deferred_add_callback(d[k], note_order, (void *)(intptr_t)k), 0);
    }
    ck_assert_int_eq(n_order, 0); /* not inside the calls */
    ck_assert_uint_eq(deferred_loop_alive(L), 3);
    run();
    ck_assert_int_eq(n_order, 3);
    ck_assert_int_eq(order[0], 1);
    ck_assert_int_eq(order[1], 2);
    ck_assert_int_eq(order[2], 0);
    ck_assert(deferred_loop_now(L) - start >= 0.03 - 1e-3);
    for (k = 0; k < 3; k++)
        deferred_unref(d[k]);
    end();
}
END_TEST

/* E01: a cancelled later stops its timer at once: nothing is left. */
START_TEST(test_E01_later_cancelled_on_every_loop)
{
    deferred_t *d;

    begin(_i);
    d = deferred_loop_later(L, 1000.0);
    ck_assert_ptr_nonnull(d);
    ck_assert_uint_eq(deferred_loop_alive(L), 1);
    ck_assert_int_eq(deferred_cancel(d), 0);
    ck_assert_int_eq(result_code(d), ECANCELED);
    ck_assert_uint_eq(deferred_loop_alive(L), 0);
    run();
    deferred_unref(d);
    /* Freed unfired: the same. */
    d = deferred_loop_later(L, 1000.0);
    ck_assert_ptr_nonnull(d);
    deferred_unref(d);
    ck_assert_uint_eq(deferred_loop_alive(L), 0);
    run();
    end();
}
END_TEST

/* E02: a timeout that expires gives ETIMEDOUT caused by the ECANCELED;
 * a result first stops the timer. */
START_TEST(test_E02_timeout_on_every_loop)
{
    deferred_t *t, *b, *w;
    deferred_failure_t *f;

    begin(_i);
    t = deferred_new();
    ck_assert_int_eq(deferred_loop_add_timeout(t, L, 0.01), 0);
    b = deferred_new();
    ck_assert_int_eq(deferred_loop_add_timeout(b, L, 1000.0), 0);
    w = deferred_loop_later(L, 0.0);
    ck_assert_int_eq(deferred_chain_to(w, b), 0);
    run();
    f = deferred_value_get_failure(deferred_result(t));
    ck_assert_int_eq(deferred_failure_code(f), ETIMEDOUT);
    ck_assert_int_eq(deferred_failure_code(deferred_failure_cause(f)), ECANCELED);
    ck_assert(deferred_value_is_none(deferred_result(b)));
    deferred_unref(t);
    deferred_unref(b);
    deferred_unref(w);
    end();
}
END_TEST

/* ---- E02: timeouts on combinators and processes ------------------------------ */

/* The final failure of d after its timeout fired: ETIMEDOUT, and the
 * failure the cancel left as its cause (checked by the caller). */
static const deferred_failure_t *timed_out_cause(deferred_t *d)
{
    const deferred_failure_t *f;

    ck_assert(deferred_has_result(d));
    f = deferred_value_get_failure(deferred_result(d));
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(deferred_failure_code(f), ETIMEDOUT);
    ck_assert_int_eq(deferred_failure_domain(f), DEFERRED_DOMAIN_LIBRARY);
    ck_assert_ptr_nonnull(deferred_failure_cause(f));
    return deferred_failure_cause(f);
}

/* E02 on every loop: the timeout of a gather, a list, a race and a race of
 * gathers is ETIMEDOUT caused by what the cancel left (issue 11's
 * "timeouts tell the truth"); a failure that is not the cancel's passes
 * unchanged.  On the clock no time passes for real. */
START_TEST(test_E02_combinator_timeouts_on_every_loop)
{
    deferred_t *in[2], *g;
    const deferred_failure_t *c;
    int which;

    begin(_i);
    for (which = 0; which < 3; which++) {
        in[0] = deferred_new();
        in[1] = deferred_new();
        if (which == 0)
            g = deferred_gather(in, 2, 0);
        else if (which == 1)
            g = deferred_list(in, 2, DEFERRED_FIRE_ON_FAILURE);
        else
            g = deferred_race(in, 2);
        ck_assert_ptr_nonnull(g);
        ck_assert_int_eq(deferred_loop_add_timeout(g, L, 0.001), 0);
        run();
        c = timed_out_cause(g);
        if (which < 2) {
            /* Never a bare first-error of ECANCELED: it is the cause. */
            ck_assert_int_eq(deferred_failure_code(c), DEFERRED_EFIRSTERROR);
            ck_assert_int_eq(deferred_failure_index(c), 0);
            ck_assert_int_eq(deferred_failure_code(deferred_failure_cause(c)), ECANCELED);
        } else {
            ck_assert_int_eq(deferred_failure_code(c), DEFERRED_EGROUP);
            ck_assert_uint_eq(deferred_failure_group_size(c), 2);
            ck_assert_int_eq(deferred_failure_code(deferred_failure_group_get(c, 1)),
                             ECANCELED);
        }
        deferred_value_release(deferred_result_take(g));
        deferred_unref(g);
        deferred_unref(in[0]);
        deferred_unref(in[1]);
    }

    /* A race of gathers: the ECANCELED is found inside the group's
     * members' causes. */
    {
        deferred_t *a = deferred_new(), *b = deferred_new(), *ga, *gb, *r, *rin[2];

        ga = deferred_gather(&a, 1, 0);
        gb = deferred_gather(&b, 1, 0);
        rin[0] = ga;
        rin[1] = gb;
        r = deferred_race(rin, 2);
        ck_assert_int_eq(deferred_loop_add_timeout(r, L, 0.001), 0);
        run();
        c = timed_out_cause(r);
        ck_assert_int_eq(deferred_failure_code(c), DEFERRED_EGROUP);
        deferred_value_release(deferred_result_take(r));
        deferred_unref(r);
        deferred_unref(ga);
        deferred_unref(gb);
        deferred_unref(a);
        deferred_unref(b);
    }

    /* A failure that is not the cancel's passes unchanged, timer or not. */
    {
        deferred_t *x = deferred_new(), *l;

        l = deferred_list(&x, 1, DEFERRED_FIRE_ON_FAILURE);
        ck_assert_int_eq(deferred_loop_add_timeout(l, L, 10.0), 0);
        deferred_errback(x, deferred_failure_new(DEFERRED_DOMAIN_USER, 4, NULL));
        run();
        ck_assert_int_eq(result_code(l), DEFERRED_EFIRSTERROR);
        deferred_value_release(deferred_result_take(l));
        deferred_unref(l);
        deferred_unref(x);
    }
    end();
}
END_TEST

/* A map stage waiting on a gather when the process's timeout fires. */
static deferred_value_t map_wait_gather(deferred_value_t v, void *arg)
{
    deferred_t *pending = arg, *g;

    deferred_value_release(v);
    g = deferred_gather(&pending, 1, 0);
    ck_assert_ptr_nonnull(g);
    return deferred_value_deferred(g);
}

/* E02 on every loop: a process's timeout, its source open or finished
 * with an item in flight in a map. */
START_TEST(test_E02_process_timeouts_on_every_loop)
{
    deferred_t *src, *pending, *done;
    deferred_process_t *p;
    const deferred_failure_t *c;
    int finished;

    begin(_i);
    /* The source still open, or finished with the map's item in flight
     * (the process then waits in the map's finish). */
    for (finished = 0; finished < 2; finished++) {
        src = deferred_multi_new();
        pending = deferred_new();
        p = deferred_process_new(0);
        ck_assert_int_eq(deferred_process_add(p, deferred_stage_from_multi(src)), 0);
        ck_assert_int_eq(deferred_process_add(
                             p, deferred_stage_map("wait", map_wait_gather, pending)), 0);
        ck_assert_int_eq(deferred_process_add(p, deferred_stage_collect()), 0);
        done = deferred_process_run(p);
        ck_assert_ptr_nonnull(done);
        ck_assert_int_eq(deferred_multi_emit(src, deferred_value_int(1)), 0);
        if (finished)
            deferred_multi_finish(src, deferred_value_none());
        ck_assert_int_eq(deferred_loop_add_timeout(done, L, 0.001), 0);
        run();
        c = timed_out_cause(done);
        ck_assert_ptr_nonnull(deferred_failure_find(c, DEFERRED_DOMAIN_ANY, ECANCELED));
        deferred_value_release(deferred_result_take(done));
        deferred_unref(done);
        deferred_process_unref(p);
        deferred_unref(pending);
        deferred_unref(src);
    }
    end();
}
END_TEST


/* E03 on every loop: an errback added before the timeout sees the
 * ECANCELED, one added after it the ETIMEDOUT. */
START_TEST(test_E03_errback_before_sees_ecanceled_on_every_loop)
{
    deferred_t *d;

    begin(_i);
    d = deferred_new();

    ck_assert_int_eq(deferred_add_errback(d, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_loop_add_timeout(d, L, 0.01), 0);
    ck_assert_int_eq(deferred_add_errback(d, tu_record, TAG(2)), 0);
    run();
    ck_assert_int_eq(tu_log.n, 2);
    ck_assert_int_eq(tu_log.e[0].tag, 1);
    ck_assert_int_eq(tu_log.e[0].code, ECANCELED);
    ck_assert_int_eq(tu_log.e[1].tag, 2);
    ck_assert_int_eq(tu_log.e[1].code, ETIMEDOUT);
    ck_assert_int_eq(result_code(d), ETIMEDOUT);
    deferred_value_release(deferred_result_take(d));
    deferred_unref(d);
    end();
}
END_TEST

/* ---- E05: readiness ------------------------------------------------------- */

/* readable and writable fire with their fd; a cancel stops the watcher. */
START_TEST(test_E05_readable_writable_on_every_loop)
{
    deferred_t *r, *w, *never;
    int fds[2];

    begin(_i);
    ck_assert_int_eq(pipe(fds), 0);
    never = deferred_loop_readable(L, fds[0]);
    ck_assert_ptr_nonnull(never);
    ck_assert_int_eq(deferred_cancel(never), 0);
    ck_assert_uint_eq(deferred_loop_alive(L), 0);
    w = deferred_loop_writable(L, fds[1]);
    r = deferred_loop_readable(L, fds[0]);
    ck_assert_ptr_nonnull(w);
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(write(fds[1], "x", 1), 1);
    run();
    ck_assert_int_eq(deferred_value_get_int(deferred_result(w)), fds[1]);
    ck_assert_int_eq(deferred_value_get_int(deferred_result(r)), fds[0]);
    deferred_unref(r);
    deferred_unref(w);
    deferred_unref(never);
    close(fds[0]);
    close(fds[1]);
    end();
}
END_TEST

/* ---- E04, E05: the pool and remotes ---------------------------------------- */

static deferred_value_t square(void *arg)
{
    intptr_t x = (intptr_t)arg;

    return deferred_value_int(x * x);
}

static deferred_value_t on_loop_thread(deferred_value_t v, void *arg)
{
    (void)arg;
    ck_assert(pthread_equal(pthread_self(), loop_thread));
    return v;
}

/* E04: jobs on a pool of 3 deliver on the loop thread, each result. */
START_TEST(test_E04_pool_on_every_loop)
{
    enum { N = 200 };
    deferred_pool_t *pool;
    deferred_t *d[N];
    long sum = 0, want = 0;
    int k;

    begin(_i);
    pool = deferred_loop_pool_new(L, 3);
    ck_assert_ptr_nonnull(pool);
    ck_assert_uint_eq(deferred_pool_threads(pool), 3);
    for (k = 0; k < N; k++) {
        d[k] = deferred_pool_run(pool, square, (void *)(intptr_t)k, NULL);
        ck_assert_ptr_nonnull(d[k]);
        want += (long)k * k;
    }
    run();
    for (k = 0; k < N; k++) {
        ck_assert(deferred_has_result(d[k]));
        sum += (long)deferred_value_get_int(deferred_result(d[k]));
        deferred_unref(d[k]);
    }
    ck_assert_int_eq(sum, want);
    deferred_pool_free(pool);
    end();
}
END_TEST

struct fire_from {
    deferred_remote_t *r[64];
    int n;
};

static void *fire_thread(void *p)
{
    struct fire_from *ff = p;
    int k;

    for (k = 0; k < ff->n; k++)
        ck_assert_int_eq(deferred_remote_callback(ff->r[k], deferred_value_int(k)), 0);
    return NULL;
}

/* E05: remotes fired from another thread run their callbacks on the loop
 * thread; the loop keeps running until each is delivered. */
START_TEST(test_E05_remote_on_every_loop)
{
    struct fire_from ff;
    deferred_t *d[64];
    pthread_t th;
    int k;

    begin(_i);
    ff.n = 64;
    for (k = 0; k < ff.n; k++) {
        d[k] = deferred_new();
        ck_assert_int_eq(deferred_add_callback(d[k], on_loop_thread, NULL), 0);
        ff.r[k] = deferred_loop_remote_new(L, d[k]);
        ck_assert_ptr_nonnull(ff.r[k]);
    }
    ck_assert_uint_eq(deferred_loop_alive(L), 1); /* the held wakeup */
    ck_assert_int_eq(pthread_create(&th, NULL, fire_thread, &ff), 0);
    run(); /* returns only once every remote was delivered */
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    for (k = 0; k < ff.n; k++) {
        ck_assert_int_eq(deferred_value_get_int(deferred_result(d[k])), k);
        deferred_unref(d[k]);
    }
    end();
}
END_TEST

/* ---- E06: the line producer ------------------------------------------------- */

/* Lines written to a pipe come out of a process in order, the last one
 * without its newline; the stage's buffer has its fixed size. */
START_TEST(test_E06_lines_on_every_loop)
{
    static const char text[] = "alpha\nbeta\ngamma";
    deferred_stage_t *st;
    deferred_process_t *p;
    deferred_t *all;
    deferred_array_t *a;
    int fds[2];

    begin(_i);
    ck_assert_int_eq(pipe(fds), 0);
    ck_assert_int_eq(write(fds[1], text, sizeof text - 1), (ssize_t)(sizeof text - 1));
    close(fds[1]);
    st = deferred_loop_lines(L, fds[0], 0);
    ck_assert_ptr_nonnull(st);
    ck_assert_uint_gt(deferred_loop_lines_capacity(st), 0);
    p = deferred_process_new(0);
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(deferred_process_add(p, st), 0);
    ck_assert_int_eq(deferred_process_add(p, deferred_stage_collect()), 0);
    all = deferred_process_run(p);
    ck_assert_ptr_nonnull(all);
    ck_assert(!deferred_has_fired(all)); /* nothing before the run returns */
    run();
    ck_assert(deferred_has_result(all));
    a = deferred_value_get_array(deferred_result(all));
    ck_assert_ptr_nonnull(a);
    ck_assert_uint_eq(deferred_array_size(a), 3);
    ck_assert_str_eq((const char *)deferred_array_get(a, 0).ptr, "alpha");
    ck_assert_str_eq((const char *)deferred_array_get(a, 1).ptr, "beta");
    ck_assert_str_eq((const char *)deferred_array_get(a, 2).ptr, "gamma");
    deferred_unref(all);
    deferred_process_unref(p);
    close(fds[0]);
    end();
}
END_TEST


/* ---- D: the databases on every loop ----------------------------------------- */

/* Every 100th row waits for a later(0) on the loop: the stream is paused
 * (the producer stops: the SQLite worker after its batch, PostgreSQL's
 * socket watcher) and resumed from the loop.  One row waits at a time
 * (the map holds the stream meanwhile), kept in held_row. */
static deferred_value_t held_row;

static deferred_value_t give_back_row(deferred_value_t v, void *arg)
{
    deferred_value_t row = held_row;

    (void)arg;
    deferred_value_release(v);
    held_row = deferred_value_none();
    return row;
}

static deferred_value_t wait_now_and_then(deferred_value_t row, void *arg)
{
    long *seen = arg;
    deferred_t *d;

    if (++*seen % 100 != 0)
        return row;
    ck_assert(deferred_value_is_none(held_row));
    d = deferred_loop_later(L, 0.0);
    ck_assert_ptr_nonnull(d);
    held_row = row;
    ck_assert_int_eq(deferred_add_callback(d, give_back_row, NULL), 0);
    return deferred_value_deferred(d);
}

static deferred_value_t sum_first_column(deferred_value_t acc, deferred_value_t item, void *arg)
{
    long *n = arg;
    int64_t x = deferred_row_int(deferred_value_get_row(item), 0);

    (*n)++;
    deferred_value_release(item);
    return deferred_value_int(deferred_value_get_int(acc) + x);
}

/* A process: producer -> map(wait now and then) -> reduce(sum); its
 * result after the run, with the rows counted. */
static deferred_t *sum_rows(deferred_stage_t *producer, long *rows, long *seen)
{
    deferred_process_t *p = deferred_process_new(0);
    deferred_t *d;

    ck_assert_ptr_nonnull(producer);
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(deferred_process_add(p, producer), 0);
    ck_assert_int_eq(deferred_process_add(p, deferred_stage_map("wait", wait_now_and_then,
                                                                seen)), 0);
    ck_assert_int_eq(deferred_process_add(p, deferred_stage_reduce(sum_first_column,
                                                                   deferred_value_int(0),
                                                                   rows)), 0);
    d = deferred_process_run(p);
    ck_assert_ptr_nonnull(d);
    ck_assert(!deferred_has_fired(d));
    run();
    deferred_process_unref(p);
    return d;
}


#ifdef TL_HAVE_SQLITE
/* D01, D02, D06 on every loop: a 10,000-row query through a process that
 * pauses the stream every 100 rows; bad SQL; an exec's change count; the
 * close waiting for the worker. */
START_TEST(test_D01_sqlite_on_every_loop)
{
    char dir[] = "/tmp/test-loop.XXXXXX", path[64];
    sqlite3 *db;
    deferred_t *d;
    deferred_failure_t *f;
    long rows = 0, seen = 0;

    begin(_i);
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/t.db", dir);
    ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
    ck_assert_int_eq(sqlite3_exec(db, "CREATE TABLE t (i INTEGER);"
                                  "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
                                  "SELECT x + 1 FROM c WHERE x < 10000) "
                                  "INSERT INTO t SELECT x FROM c", NULL, NULL, NULL),
                     SQLITE_OK);
    d = sum_rows(deferred_sqlite_query(L, db, "SELECT i FROM t ORDER BY i", NULL, 0), &rows,
                 &seen);
    ck_assert_msg(deferred_has_result(d), "%s", H->name);
    ck_assert_int_eq(rows, 10000);
    ck_assert_int_eq(deferred_value_get_int(deferred_result(d)), 10000L * 10001 / 2);
    deferred_unref(d);

    d = deferred_sqlite_query_one(L, db, "SELEC nothing", NULL, 0);
    ck_assert_ptr_nonnull(d);
    run();
    f = deferred_value_get_failure(deferred_result(d));
    ck_assert_int_eq(deferred_failure_domain(f), DEFERRED_DOMAIN_SQLITE);
    deferred_value_release(deferred_result_take(d));
    deferred_unref(d);

    d = deferred_sqlite_exec(L, db, "UPDATE t SET i = -i WHERE i <= 10", NULL, 0);
    ck_assert_ptr_nonnull(d);
    run();
    ck_assert_int_eq(deferred_row_int_named(deferred_value_get_row(deferred_result(d)),
                                            "changes"), 10);
    deferred_unref(d);

    d = deferred_sqlite_close(L, db);
    ck_assert_ptr_nonnull(d);
    run();
    ck_assert(deferred_value_is_none(deferred_result(d)));
    deferred_unref(d);
    unlink(path);
    rmdir(dir);
    end();
}
END_TEST
#endif

#ifdef TL_HAVE_PQ
static struct pgh server;
static int server_rc = -1; /* pgh_start()'s answer */

/* D03 on every loop: connecting, then 5,000 rows in single-row mode
 * through a process that pauses the stream (and so the socket's read
 * watcher) every 100 rows. */
START_TEST(test_D03_postgres_on_every_loop)
{
    deferred_t *d;
    deferred_value_t v;
    deferred_pg_t *c;
    long rows = 0, seen = 0;

    if (server_rc != 0) {
        printf("postgres: no server (%d), D03 on every loop not run\n", server_rc);
        return;
    }
    begin(_i);
    d = deferred_pg_connect(L, server.conninfo);
    ck_assert_ptr_nonnull(d);
    run();
    v = deferred_result_take(d);
    c = deferred_value_get_pg(v); /* the value's reference is c's */
    ck_assert_msg(c != NULL, "%s: no connection", H->name);
    deferred_unref(d);
    d = sum_rows(deferred_pg_query(c, "SELECT g FROM generate_series(1, 5000) g", NULL, 0),
                 &rows, &seen);
    ck_assert_msg(deferred_has_result(d), "%s", H->name);
    ck_assert_int_eq(rows, 5000);
    ck_assert_int_eq(deferred_value_get_int(deferred_result(d)), 5000L * 5001 / 2);
    deferred_unref(d);
    deferred_pg_unref(c);
    run();
    end();
}
END_TEST
#endif

/* ---- LO: the interface ------------------------------------------------------- */

static int timer_hits;
static deferred_loop_timer_t *self_freeing;

static void hit(void *arg)
{
    (void)arg;
    timer_hits++;
}

static void free_self(void *arg)
{
    (void)arg;
    timer_hits += 10;
    deferred_loop_timer_free(self_freeing);
    self_freeing = NULL;
}

/* LO01: a timer fires once per start; a restart moves it; a stopped one
 * never fires; one freed from its own callback is gone; alive counts the
 * running ones. */
START_TEST(test_LO01_timers)
{
    deferred_loop_timer_t *a, *b;

    begin(_i);
    timer_hits = 0;
    a = deferred_loop_timer_new(L, hit, NULL);
    b = deferred_loop_timer_new(L, hit, NULL);
    self_freeing = deferred_loop_timer_new(L, free_self, NULL);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_nonnull(self_freeing);
    ck_assert_int_eq(deferred_loop_timer_start(a, 1000.0), 0);
    ck_assert(deferred_loop_timer_is_active(a));
    ck_assert(deferred_loop_timer_remaining(a) > 900.0);
    ck_assert_int_eq(deferred_loop_timer_start(a, 0.0), 0); /* restarted */
    ck_assert_uint_eq(deferred_loop_alive(L), 1);
    ck_assert_int_eq(deferred_loop_timer_start(b, 0.0), 0);
    deferred_loop_timer_stop(b);
    ck_assert(!deferred_loop_timer_is_active(b));
    ck_assert_int_eq(deferred_loop_timer_start(self_freeing, 0.001), 0);
    ck_assert_int_eq(timer_hits, 0);
    run();
    ck_assert_int_eq(timer_hits, 11);
    ck_assert_ptr_null(self_freeing);
    ck_assert(!deferred_loop_timer_is_active(a));
    ck_assert(deferred_loop_timer_remaining(a) == 0.0);
    deferred_loop_timer_free(a);
    deferred_loop_timer_free(b);
    end();
}
END_TEST

static int io_seen;
static deferred_loop_io_t *io_w;

static void on_io(void *arg, int revents)
{
    char c;

    (void)arg;
    ck_assert(revents & DEFERRED_LOOP_READ);
    ck_assert_int_eq(read(deferred_loop_io_fd(io_w), &c, 1), 1);
    if (++io_seen == 3)
        deferred_loop_io_set(io_w, 0);
}

/* LO02: an fd watcher is level-triggered (three bytes, three calls) and
 * set(0) stops it. */
START_TEST(test_LO02_io_level_triggered)
{
    int fds[2];

    begin(_i);
    io_seen = 0;
    ck_assert_int_eq(pipe(fds), 0);
    ck_assert_int_eq(write(fds[1], "abc", 3), 3);
    io_w = deferred_loop_io_new(L, fds[0], on_io, NULL);
    ck_assert_ptr_nonnull(io_w);
    ck_assert_int_eq(deferred_loop_io_set(io_w, DEFERRED_LOOP_READ), 0);
    ck_assert_int_eq(deferred_loop_io_events(io_w), DEFERRED_LOOP_READ);
    ck_assert_uint_eq(deferred_loop_alive(L), 1);
    run();
    ck_assert_int_eq(io_seen, 3);
    ck_assert_int_eq(deferred_loop_io_events(io_w), 0);
    deferred_loop_io_free(io_w);
    close(fds[0]);
    close(fds[1]);
    end();
}
END_TEST

struct msg {
    deferred_loop_msg_t m; /* first */
    int id;
};

static int delivered[16];
static int n_delivered;

static void deliver(deferred_loop_msg_t *m)
{
    ck_assert(pthread_equal(pthread_self(), loop_thread));
    delivered[n_delivered++] = ((struct msg *)m)->id;
    deferred_loop_done(L);
}

static struct msg msgs[16];

static void *post_thread(void *p)
{
    int k;

    (void)p;
    for (k = 8; k < 16; k++)
        ck_assert_int_eq(deferred_loop_post(L, &msgs[k].m), 0);
    return NULL;
}

/* LO03: messages are delivered on the loop thread in the order posted,
 * never inside the post; expect keeps the loop running until done. */
START_TEST(test_LO03_mailbox_order)
{
    pthread_t th;
    int k;

    begin(_i);
    n_delivered = 0;
    for (k = 0; k < 16; k++) {
        msgs[k].m.deliver = deliver;
        msgs[k].id = k;
        ck_assert_int_eq(deferred_loop_expect(L), 0);
    }
    for (k = 0; k < 8; k++)
        ck_assert_int_eq(deferred_loop_post(L, &msgs[k].m), 0);
    ck_assert_int_eq(n_delivered, 0);
    ck_assert_int_eq(pthread_create(&th, NULL, post_thread, NULL), 0);
    run();
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(n_delivered, 16);
    for (k = 0; k < 16; k++)
        ck_assert_int_eq(delivered[k], k);
    end();
}
END_TEST

/* LO04: in debug mode a dump names the loop by its adapter and lists its
 * timer with the deferred it fires. */
START_TEST(test_LO04_dump_names_adapter)
{
    char *text = NULL, want[64];
    deferred_t *d;

    begin(_i);
    deferred_set_debug(true);
    d = deferred_loop_later(L, 1000.0);
    ck_assert_ptr_nonnull(d);
    text = deferred_dump_string(DEFERRED_DUMP_TEXT);
    ck_assert_ptr_nonnull(text);
    snprintf(want, sizeof want, "loop %s ", deferred_loop_name(L));
    ck_assert_msg(text && strstr(text, want), "%s", text ? text : "(none)");
    ck_assert_msg(strstr(text, "timer later"), "%s", text);
    deferred_free(text);
    deferred_unref(d);
    deferred_set_debug(false);
    run();
    end();
}
END_TEST

/* LO05: the references: an object made on a loop keeps it, so the user
 * may drop the loop first. */

START_TEST(test_LO05_objects_hold_the_loop)
{
    deferred_loop_t *extra;
    deferred_t *d;

    begin(_i);
    extra = deferred_loop_ref(L);
    ck_assert_ptr_eq(extra, L);
    d = deferred_loop_later(L, 0.0);
    ck_assert_ptr_nonnull(d);
    deferred_loop_unref(extra);
    run();
    ck_assert(deferred_has_result(d));
    deferred_unref(d);
    end();
}
END_TEST

/* ---- the failing allocator --------------------------------------------------- */

static void sc_everything(struct tu_oom *r)
{
    deferred_t *a = NULL, *t = NULL, *rd = NULL, *j = NULL, *rm = NULL;
    deferred_pool_t *pool = NULL;
    deferred_remote_t *rem = NULL;
    deferred_loop_timer_t *tm = NULL;
    int fds[2];
    intptr_t av = 0, tv = 0, rv = -1, jv = 0, mv = 0;

    /* The loop too is made in the run: its adapter's allocations are
     * swept with the rest. */
    TU_NEW(r, L, H->make(&HS), out_loop);
    ck_assert_uint_eq(deferred_loop_alive(L), 0);
    ck_assert_int_eq(pipe(fds), 0);
    ck_assert_int_eq(write(fds[1], "x", 1), 1);
    TU_NEW(r, a, deferred_loop_later(L, 0.0), out);
    TU_ACT(r, deferred_add_callback(a, tu_return_int, (void *)(intptr_t)7));
    TU_NEW(r, t, deferred_new(), out);
    TU_ACT(r, deferred_loop_add_timeout(t, L, 0.0));
    TU_NEW(r, rd, deferred_loop_readable(L, fds[0]), out);
    TU_NEW(r, tm, deferred_loop_timer_new(L, hit, NULL), out);
    ck_assert_int_eq(deferred_loop_timer_start(tm, 0.0), 0);
    TU_NEW(r, pool, deferred_loop_pool_new(L, 1), out);
    TU_NEW(r, j, deferred_pool_run(pool, square, (void *)(intptr_t)3, NULL), out);
    TU_NEW(r, rm, deferred_new(), out);
    TU_NEW(r, rem, deferred_loop_remote_new(L, rm), out);
    ck_assert_int_eq(deferred_remote_callback(rem, deferred_value_int(4)), 0);
    rem = NULL;
    H->run(L, HS);
    av = tu_oom_take(r, a);
    tv = tu_oom_take(r, t);
    rv = deferred_value_get_int(deferred_result(rd));
    jv = tu_oom_take(r, j);
    mv = tu_oom_take(r, rm);
    r->ok = av == 7 && tv == -1000 - ETIMEDOUT && rv == fds[0] && jv == 9 && mv == 4;
out:
    if (rem)
        deferred_remote_drop(rem);
    deferred_loop_timer_free(tm);
    deferred_unref(a);
    deferred_unref(t);
    deferred_unref(rd);
    deferred_unref(j);
    deferred_unref(rm);
    H->run(L, HS);
    deferred_pool_free(pool);
    ck_assert_uint_eq(deferred_loop_alive(L), 0);
    close(fds[0]);
    close(fds[1]);
    end();
out_loop:
    return;
}

/* LO06 */
START_TEST(test_oom_on_every_loop)
{
    H = tl_harnesses[_i];
    loop_thread = pthread_self();
    tu_oom_sweep(H->name, sc_everything, NULL, 0);
}
END_TEST

/* ---- LO07 to LO10: the remotes' slab and the lock-free mailbox ------------ */

/* More remotes than a few of the slab's chunks hold (lib/loop/loop-time.c
 * cuts 128 per chunk), so that chunks fill, are freed with their last
 * handle while another is current, and the current one starts over. */
enum { SLAB_N = 300 };

static struct slab_run {
    deferred_t *d1[SLAB_N], *d2[SLAB_N];
    deferred_remote_t *r1[SLAB_N], *r2[SLAB_N];
    int second_made;
} slab;

static void *slab_thread(void *p)
{
    int k;

    (void)p;
    for (k = 0; k < 200; k++)
        ck_assert_int_eq(deferred_remote_callback(slab.r1[k], deferred_value_int(k)), 0);
    return NULL;
}

/* On the loop thread, once the thread's 200 firings were delivered (in
 * order: this is the last of them): 300 more remotes while 100 of the
 * first are still live, then every one left fired from here, the two
 * sets interleaved, one dropped. */
static deferred_value_t slab_second(deferred_value_t v, void *arg)
{
    int k;

    (void)arg;
    ck_assert(pthread_equal(pthread_self(), loop_thread));
    for (k = 0; k < 199; k++)
        ck_assert(deferred_has_result(slab.d1[k]));
    for (k = 0; k < SLAB_N; k++) {
        slab.d2[k] = deferred_new();
        ck_assert_ptr_nonnull(slab.d2[k]);
        slab.r2[k] = deferred_loop_remote_new(L, slab.d2[k]);
        ck_assert_ptr_nonnull(slab.r2[k]);
    }
    slab.second_made = 1;
    for (k = 0; k < SLAB_N; k += 2)
        ck_assert_int_eq(deferred_remote_callback(slab.r2[k], deferred_value_int(1000 + k)), 0);
    for (k = 200; k < SLAB_N; k++)
        ck_assert_int_eq(deferred_remote_callback(slab.r1[k], deferred_value_int(k)), 0);
    for (k = 1; k < SLAB_N; k += 2) {
        if (k == 7)
            deferred_remote_drop(slab.r2[k]);
        else
            ck_assert_int_eq(deferred_remote_callback(slab.r2[k], deferred_value_int(1000 + k)),
                             0);
    }
    return v;
}

/* LO07: remotes cut from the slab's chunks, freed in an order that frees
 * full chunks while another is current and starts the current one over,
 * each deliver their own value (or the drop's cancel) exactly once; a
 * second round on the same loop reuses it; nothing is left allocated. */
START_TEST(test_LO07_remote_slab)
{
    pthread_t th;
    int k, round;

    begin(_i);
    memset(&slab, 0, sizeof slab);
    for (k = 0; k < SLAB_N; k++) {
        slab.d1[k] = deferred_new();
        ck_assert_ptr_nonnull(slab.d1[k]);
        if (k == 199)
            ck_assert_int_eq(deferred_add_callback(slab.d1[k], slab_second, NULL), 0);
        slab.r1[k] = deferred_loop_remote_new(L, slab.d1[k]);
        ck_assert_ptr_nonnull(slab.r1[k]);
    }
    ck_assert_int_eq(pthread_create(&th, NULL, slab_thread, NULL), 0);
    run(); /* until all 600 were delivered */
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(slab.second_made, 1);
    for (k = 0; k < SLAB_N; k++) {
        ck_assert_int_eq(deferred_value_get_int(deferred_result(slab.d1[k])), k);
        if (k == 7)
            ck_assert_int_eq(result_code(slab.d2[k]), ECANCELED);
        else
            ck_assert_int_eq(deferred_value_get_int(deferred_result(slab.d2[k])), 1000 + k);
        deferred_unref(slab.d1[k]);
        deferred_unref(slab.d2[k]);
    }
    /* Rounds of one remote at a time: the current chunk starts over each
     * time its only handle is delivered. */
    for (round = 0; round < 3 * 128; round++) {
        deferred_t *d = deferred_new();
        deferred_remote_t *r = deferred_loop_remote_new(L, d);

        ck_assert_ptr_nonnull(r);
        ck_assert_int_eq(deferred_remote_callback(r, deferred_value_int(round)), 0);
        ck_assert(!deferred_has_result(d)); /* never inside the call */
        run();
        ck_assert_int_eq(deferred_value_get_int(deferred_result(d)), round);
        deferred_unref(d);
    }
    end();
}
END_TEST

/* Several threads firing remotes and posting messages at once, while the
 * loop thread drains: each thread's deliveries come in its own order. */
enum { MP_THREADS = 4, MP_EACH = 400 };

static struct mp_run {
    deferred_remote_t *r[MP_THREADS][MP_EACH];
    deferred_t *d[MP_THREADS][MP_EACH];
    struct msg m[MP_EACH];
    int next[MP_THREADS + 1]; /* the next sequence number expected */
} mp;

static deferred_value_t mp_check(deferred_value_t v, void *arg)
{
    intptr_t x = deferred_value_get_int(v);
    int t = (int)(x / MP_EACH), seq = (int)(x % MP_EACH);

    (void)arg;
    ck_assert(pthread_equal(pthread_self(), loop_thread));
    ck_assert_int_eq(seq, mp.next[t]);
    mp.next[t]++;
    return v;
}

static void mp_deliver(deferred_loop_msg_t *m)
{
    ck_assert(pthread_equal(pthread_self(), loop_thread));
    ck_assert_int_eq(((struct msg *)m)->id, mp.next[MP_THREADS]);
    mp.next[MP_THREADS]++;
    deferred_loop_done(L);
}

static void *mp_fire(void *p)
{
    int t = (int)(intptr_t)p, k;

    for (k = 0; k < MP_EACH; k++) {
        ck_assert_int_eq(
            deferred_remote_callback(mp.r[t][k], deferred_value_int(t * MP_EACH + k)), 0);
        if (k % 64 == 0)
            sched_yield(); /* let the loop thread drain in between */
    }
    return NULL;
}

static void *mp_post(void *p)
{
    int k;

    (void)p;
    for (k = 0; k < MP_EACH; k++)
        ck_assert_int_eq(deferred_loop_post(L, &mp.m[k].m), 0);
    return NULL;
}

/* LO08: four threads firing 400 remotes each and a fifth posting 400
 * messages, all at once, while the loop thread drains batch after batch:
 * every delivery on the loop thread, each thread's in the order it
 * posted them, none lost or repeated. */
START_TEST(test_LO08_mailbox_many_posters)
{
    pthread_t th[MP_THREADS + 1];
    int t, k;

    begin(_i);
    memset(&mp, 0, sizeof mp);
    for (t = 0; t < MP_THREADS; t++)
        for (k = 0; k < MP_EACH; k++) {
            mp.d[t][k] = deferred_new();
            ck_assert_int_eq(deferred_add_callback(mp.d[t][k], mp_check, NULL), 0);
            mp.r[t][k] = deferred_loop_remote_new(L, mp.d[t][k]);
            ck_assert_ptr_nonnull(mp.r[t][k]);
        }
    for (k = 0; k < MP_EACH; k++) {
        mp.m[k].m.deliver = mp_deliver;
        mp.m[k].id = k;
        ck_assert_int_eq(deferred_loop_expect(L), 0);
    }
    for (t = 0; t < MP_THREADS; t++)
        ck_assert_int_eq(pthread_create(&th[t], NULL, mp_fire, (void *)(intptr_t)t), 0);
    ck_assert_int_eq(pthread_create(&th[MP_THREADS], NULL, mp_post, NULL), 0);
    run();
    for (t = 0; t <= MP_THREADS; t++)
        ck_assert_int_eq(pthread_join(th[t], NULL), 0);
    for (t = 0; t <= MP_THREADS; t++)
        ck_assert_int_eq(mp.next[t], MP_EACH);
    for (t = 0; t < MP_THREADS; t++)
        for (k = 0; k < MP_EACH; k++) {
            ck_assert_int_eq(deferred_value_get_int(deferred_result(mp.d[t][k])),
                             t * MP_EACH + k);
            deferred_unref(mp.d[t][k]);
        }
    end();
}
END_TEST

static void *fire_one(void *p)
{
    ck_assert_int_eq(deferred_remote_callback(p, deferred_value_int(5)), 0);
    return NULL;
}

/* LO09: a loop freed as soon as its last remote is delivered, while the
 * thread that fired it may still be waking the loop: the loop waits for
 * that poster (the sanitizers and valgrind see any use after free). */
START_TEST(test_LO09_loop_freed_after_last_delivery)
{
    int round;

    for (round = 0; round < 100; round++) {
        deferred_t *d;
        deferred_remote_t *r;
        pthread_t th;

        begin(_i);
        d = deferred_new();
        r = deferred_loop_remote_new(L, d);
        ck_assert_ptr_nonnull(r);
        ck_assert_int_eq(pthread_create(&th, NULL, fire_one, r), 0);
        run();
        ck_assert_int_eq(deferred_value_get_int(deferred_result(d)), 5);
        deferred_unref(d);
        end(); /* the poster may not have returned yet */
        ck_assert_int_eq(pthread_join(th, NULL), 0);
    }
}
END_TEST

/* LO10: 130 remotes (a second chunk of the slab is needed) fired from
 * another thread, every allocation failing in turn: the refill's failure
 * is remote_new's ENOMEM, and the handles made before it still deliver. */
enum { OOM_REMOTES = 130 };

static struct {
    deferred_remote_t *r[OOM_REMOTES];
    int n;
} oomr;

static void *oom_fire(void *p)
{
    int k;

    (void)p;
    for (k = 0; k < oomr.n; k++)
        ck_assert_int_eq(deferred_remote_callback(oomr.r[k], deferred_value_int(k)), 0);
    return NULL;
}

static void sc_slab_refill(struct tu_oom *r)
{
    deferred_t *d[OOM_REMOTES];
    pthread_t th;
    int k, made = 0;
    bool all = true;

    L = H->make(&HS);
    if (!L) {
        ck_assert_int_eq(errno, ENOMEM);
        r->saw = true;
        return;
    }
    oomr.n = 0;
    for (k = 0; k < OOM_REMOTES; k++) {
        errno = 0;
        d[k] = deferred_new();
        if (!d[k]) {
            r->saw = true;
            all = false;
            break;
        }
        made++;
        oomr.r[k] = deferred_loop_remote_new(L, d[k]);
        if (!oomr.r[k]) {
            ck_assert_int_eq(errno, ENOMEM);
            r->saw = true;
            all = false;
            break;
        }
        oomr.n++;
    }
    ck_assert_int_eq(pthread_create(&th, NULL, oom_fire, NULL), 0);
    H->run(L, HS);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_uint_eq(deferred_loop_alive(L), 0);
    for (k = 0; k < oomr.n; k++)
        ck_assert_int_eq(deferred_value_get_int(deferred_result(d[k])), k);
    for (k = 0; k < made; k++)
        deferred_unref(d[k]);
    r->ok = all;
    end();
}

START_TEST(test_LO10_oom_slab_refill)
{
    H = tl_harnesses[_i];
    loop_thread = pthread_self();
    tu_oom_sweep(H->name, sc_slab_refill, NULL, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("loop");
    TCase *tc = tcase_create("loop");
    int n = (int)tl_n_harnesses, rc;

    tcase_add_checked_fixture(tc, tu_setup, tu_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_E01_later_in_order_on_every_loop, 0, n);
    tcase_add_loop_test(tc, test_E01_later_cancelled_on_every_loop, 0, n);
    tcase_add_loop_test(tc, test_E02_timeout_on_every_loop, 0, n);
    tcase_add_loop_test(tc, test_E02_combinator_timeouts_on_every_loop, 0, n);
    tcase_add_loop_test(tc, test_E02_process_timeouts_on_every_loop, 0, n);
    tcase_add_loop_test(tc, test_E03_errback_before_sees_ecanceled_on_every_loop, 0, n);
    tcase_add_loop_test(tc, test_E05_readable_writable_on_every_loop, 0, n);
    tcase_add_loop_test(tc, test_E04_pool_on_every_loop, 0, n);
    tcase_add_loop_test(tc, test_E05_remote_on_every_loop, 0, n);
    tcase_add_loop_test(tc, test_E06_lines_on_every_loop, 0, n);
    tcase_add_loop_test(tc, test_LO01_timers, 0, n);
    tcase_add_loop_test(tc, test_LO02_io_level_triggered, 0, n);
    tcase_add_loop_test(tc, test_LO03_mailbox_order, 0, n);
    tcase_add_loop_test(tc, test_LO04_dump_names_adapter, 0, n);
    tcase_add_loop_test(tc, test_LO05_objects_hold_the_loop, 0, n);
    tcase_add_loop_test(tc, test_oom_on_every_loop, 0, n);
    tcase_add_loop_test(tc, test_LO07_remote_slab, 0, n);
    tcase_add_loop_test(tc, test_LO08_mailbox_many_posters, 0, n);
    tcase_add_loop_test(tc, test_LO09_loop_freed_after_last_delivery, 0, n);
    tcase_add_loop_test(tc, test_LO10_oom_slab_refill, 0, n);
#ifdef TL_HAVE_SQLITE
    tcase_add_loop_test(tc, test_D01_sqlite_on_every_loop, 0, n);
#endif
#ifdef TL_HAVE_PQ
    tcase_add_loop_test(tc, test_D03_postgres_on_every_loop, 0, n);
    server_rc = pgh_start(&server);
#endif
    suite_add_tcase(s, tc);
    rc = tu_run_suite(s);
#ifdef TL_HAVE_PQ
    if (server_rc == 0)
        pgh_stop(&server, true);
#endif
    return rc;
}
