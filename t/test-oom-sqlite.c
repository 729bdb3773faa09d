/*
 * test-oom-sqlite.c: the failing-allocator test of the SQLite layer, the
 * twin of t/test-oom.c (the core) for it.
 *
 * A real database file in a temporary directory (made once for the
 * suite: 40 rows in table t) and a real libev loop.  The scenarios: a
 * query with a bound parameter through a process (D01 of
 * docs/scenarios.md: query -> map -> batch -> collect, stepping a few
 * rows per loop iteration), a one-row query, bad SQL (D02) and rows larger
 * than a batch's first buffer (D07).
 * tu_oom_sweep() (t/testutil.c) fails the 1st, 2nd, ... Nth allocation
 * made through the library's allocator (SQLite's own allocations are not
 * its) until a run injects nothing and asserts for each N: no crash, no
 * hang, nothing alive afterwards, every statement finalized, and the run
 * ended cleanly (ENOMEM, or the normal result).  A row that cannot be
 * allocated ends the stream with the library's ENOMEM too (it was
 * SQLite's SQLITE_NOMEM before).
 */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>
#include <deferred/ev.h>
#include <deferred/sqlite.h>

static char dir[256];
static char path[300];
static struct ev_loop *loop;
static deferred_loop_t *dloop; /* its adapter (deferred/loop.h) */
static sqlite3 *db;

/* ---- the database ---- */

static void make_database(void)
{
    sqlite3 *h;
    char *err = NULL;

    snprintf(dir, sizeof(dir), "%s/test-oom-sqlite.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(dir))
        abort();
    snprintf(path, sizeof(path), "%s/t.db", dir);
    if (sqlite3_open(path, &h) != SQLITE_OK)
        abort();
    if (sqlite3_exec(h, "CREATE TABLE t (i INTEGER PRIMARY KEY, s TEXT);"
                        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1"
                        " FROM c WHERE x < 40)"
                        " INSERT INTO t SELECT x, 'row ' || x FROM c;",
                     NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "test-oom-sqlite: %s\n", err ? err : "?");
        abort();
    }
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
    ck_assert_ptr_null(sqlite3_next_stmt(db, NULL));
    ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
    deferred_loop_unref(dloop);
    dloop = NULL;
    ev_loop_destroy(loop);
    tu_teardown();
}

/* After each run: the loop has nothing left, every statement was
 * finalized. */
static void settle(void)
{
    ev_run(loop, 0);
    ck_assert_ptr_null(sqlite3_next_stmt(db, NULL));
}

/* tu_oom_note(): only the library's ENOMEM counts as out of memory. */
static deferred_value_t note(struct tu_oom *r, deferred_value_t v)
{
    return tu_oom_note(r, v);
}

/* ---- D01: a query through a process ---- */

/* A row's i, doubled, and the row released; a row whose text is not
 * "row <i>" becomes -1. */
static deferred_value_t row_twice(deferred_value_t v, void *arg)
{
    deferred_row_t *row = deferred_value_get_row(v);
    char want[32];
    intptr_t i = -1;

    (void)arg;
    if (row) {
        i = (intptr_t)deferred_row_int(row, 0);
        snprintf(want, sizeof want, "row %ld", (long)i);
        if (!deferred_row_text(row, 1) || strcmp(deferred_row_text(row, 1), want) != 0)
            i = -1;
        else
            i *= 2;
    }
    deferred_value_release(v);
    return deferred_value_int(i);
}

static bool add(struct tu_oom *r, deferred_process_t *p, deferred_stage_t *st)
{
    int rc;

    if (!st) {
        ck_assert_int_eq(errno, ENOMEM);
        r->saw = true;
        return false;
    }
    rc = deferred_process_add(p, st);
    if (rc == -ENOMEM) {
        r->saw = true;
        return false;
    }
    ck_assert_int_eq(rc, 0);
    return true;
}

/* SELECT the rows i <= 30 (a bound parameter), 7 rows per loop
 * iteration -> map -> batch of 8 -> collect: 4 batches, in order. */
static void sc_query(struct tu_oom *r)
{
    deferred_process_t *p;
    deferred_stage_t *q;
    deferred_t *d = NULL;
    deferred_value_t v;
    deferred_array_t *a, *b;
    bool in_order = true;
    size_t i, j;
    intptr_t want = 2;

    TU_NEW(r, p, deferred_process_new(0), out);
    errno = 0;
    q = deferred_sqlite_query_p(dloop, db, "SELECT i, s FROM t WHERE i <= ? ORDER BY i",
                                DEFERRED_PARAMS(deferred_param_int(30)));
    if (q)
        ck_assert_int_eq(deferred_sqlite_set_batch(q, 7), 0);
    if (!add(r, p, q))
        goto out;
    errno = 0;
    if (!add(r, p, deferred_stage_map("row twice", row_twice, NULL)))
        goto out;
    errno = 0;
    if (!add(r, p, deferred_stage_batch(8)))
        goto out;
    errno = 0;
    if (!add(r, p, deferred_stage_collect()))
        goto out;
    TU_NEW(r, d, deferred_process_run(p), out);
    ev_run(loop, 0);
    ck_assert(deferred_has_result(d));
    v = note(r, deferred_result_take(d));
    a = deferred_value_get_array(v);
    for (i = 0; a && i < deferred_array_size(a); i++) {
        b = deferred_value_get_array(deferred_array_get(a, i));
        for (j = 0; b && j < deferred_array_size(b); j++, want += 2)
            if (deferred_value_get_int(deferred_array_get(b, j)) != want)
                in_order = false;
    }
    r->ok = a && deferred_array_size(a) == 4 && in_order && want == 62;
    deferred_value_release(v);
out:
    deferred_unref(d);
    deferred_process_unref(p);
    settle();
}

/* ---- a one-row query ---- */

static void sc_query_one(struct tu_oom *r)
{
    deferred_t *d, *none = NULL;
    deferred_value_t v;
    deferred_row_t *row;

    TU_NEW(r, d, deferred_sqlite_query_one_p(dloop, db, "SELECT s FROM t WHERE i = ?",
                                             DEFERRED_PARAMS(deferred_param_int(17))),
           out);
    TU_NEW(r, none, deferred_sqlite_query_one_p(dloop, db, "SELECT s FROM t WHERE i = ?",
                                                DEFERRED_PARAMS(deferred_param_int(99))),
           out);
    ev_run(loop, 0);
    ck_assert(deferred_has_result(d));
    ck_assert(deferred_has_result(none));
    v = note(r, deferred_result_take(d));
    row = deferred_value_get_row(v);
    r->ok = row && deferred_row_text(row, 0) && strcmp(deferred_row_text(row, 0), "row 17") == 0;
    deferred_value_release(v);
    v = note(r, deferred_result_take(none));
    r->ok = r->ok && deferred_value_is_none(v);
    deferred_value_release(v);
out:
    deferred_unref(d);
    deferred_unref(none);
    settle();
}

/* ---- D07: rows larger than a batch's buffer ---- */

/* Rows of 20,000 bytes and more, one batch of 3 rows at a time: the
 * buffers grow on the loop thread (a row waits on the statement until its
 * batch has the room), each growth failing in turn. */
static void sc_large_rows(struct tu_oom *r)
{
    deferred_process_t *p;
    deferred_stage_t *q;
    deferred_t *d = NULL;
    deferred_value_t v;
    deferred_array_t *a;
    size_t i;
    bool ok = true;

    TU_NEW(r, p, deferred_process_new(0), out);
    errno = 0;
    q = deferred_sqlite_query(dloop, db, "SELECT i, printf('%.*c', 20000 * i, 'x')"
                                        " FROM t WHERE i <= 6 ORDER BY i", NULL, 0);
    if (q)
        ck_assert_int_eq(deferred_sqlite_set_batch(q, 3), 0);
    if (!add(r, p, q))
        goto out;
    errno = 0;
    if (!add(r, p, deferred_stage_collect()))
        goto out;
    TU_NEW(r, d, deferred_process_run(p), out);
    ev_run(loop, 0);
    ck_assert(deferred_has_result(d));
    v = note(r, deferred_result_take(d));
    a = deferred_value_get_array(v);
    for (i = 0; a && i < deferred_array_size(a); i++) {
        deferred_row_t *row = deferred_value_get_row(deferred_array_get(a, i));
        const char *t = deferred_row_text(row, 1);

        if (deferred_row_int(row, 0) != (int64_t)i + 1 || !t ||
            strlen(t) != 20000 * (i + 1))
            ok = false;
    }
    r->ok = a && deferred_array_size(a) == 6 && ok;
    deferred_value_release(v);
out:
    deferred_unref(d);
    deferred_process_unref(p);
    settle();
}

/* ---- D02: bad SQL ---- */

/* The process fails with SQLite's error (its message and the query's
 * context are checked on the run that injected nothing: text lost to
 * out of memory is a documented fallback). */
static void sc_bad_sql(struct tu_oom *r)
{
    deferred_process_t *p;
    deferred_t *d = NULL;
    deferred_value_t v;
    deferred_failure_t *f;
    char story[2048];

    TU_NEW(r, p, deferred_process_new(0), out);
    errno = 0;
    if (!add(r, p, deferred_sqlite_query(dloop, db, "SELECT nope FROM t", NULL, 0)))
        goto out;
    errno = 0;
    if (!add(r, p, deferred_stage_collect()))
        goto out;
    TU_NEW(r, d, deferred_process_run(p), out);
    ev_run(loop, 0);
    ck_assert(deferred_has_result(d));
    v = note(r, deferred_result_take(d));
    f = deferred_value_get_failure(v);
    story[0] = '\0';
    if (f)
        deferred_failure_story(f, story, sizeof story);
    r->ok = f && deferred_failure_find(f, DEFERRED_DOMAIN_SQLITE, SQLITE_ERROR) &&
            (tu_failure_injected() || strstr(story, "nope") != NULL);
    deferred_value_release(v);
out:
    deferred_unref(d);
    deferred_process_unref(p);
    settle();
}

#define SCENARIO(name, flags)                                                \
    START_TEST(test_oom_##name)                                              \
    {                                                                        \
        tu_oom_sweep(#name, sc_##name, NULL, (flags));                       \
    }                                                                        \
    END_TEST

SCENARIO(query, TU_OOM_STICKY)
SCENARIO(query_one, TU_OOM_STICKY)
SCENARIO(bad_sql, TU_OOM_STICKY)
SCENARIO(large_rows, TU_OOM_STICKY)

static Suite *oom_sqlite_suite(void)
{
    Suite *s = suite_create("oom-sqlite");
    TCase *tc = tcase_create("oom-sqlite");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_oom_query);
    tcase_add_test(tc, test_oom_query_one);
    tcase_add_test(tc, test_oom_bad_sql);
    tcase_add_test(tc, test_oom_large_rows);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    int rc;

    make_database();
    rc = tu_run_suite(oom_sqlite_suite());
    remove_database();
    return rc;
}
