/*
 * test-sweep.c: the bad-input sweep.  Every exported function of
 * libdeferred (and of libdeferred-ev, -sqlite, -pg and -glib when they are
 * built) is called with NULL pointers, out-of-range integers and sizes
 * (0, SIZE_MAX, negative, INT_MIN) and in legal but wrong states (fire
 * twice, unpause at zero, add a stage after the run, finish twice, release
 * an unheld lock, ...), and each answer is checked against the header's
 * comment: -EINVAL and friends, NULL with errno, a failed deferred with a
 * code, or a neutral no-op.  The fixture (tu_setup/tu_teardown) proves
 * that nothing leaks.
 *
 * sweep_table below names, for every exported function, the cases that
 * cover it; the suite is built from it.  The case "table_matches_exports"
 * reads the symbols the built shared libraries export (nm -D
 * --defined-only, as t/check-exports.sh does; the build directory comes
 * from $top_builddir, else SWEEP_BUILDDIR) and fails for an exported
 * function without an entry, and for an entry that names no exported
 * function: a new function without bad-input cases fails "make check".
 *
 * Answers the headers do not document are asserted as the library gives
 * them today and marked "UNDOCUMENTED" (the lead decides what they should
 * be).
 */
#include <check.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include <deferred/combinators.h>
#include <deferred/loop.h>
#include <deferred/clock.h>

#ifdef SWEEP_HAVE_LIBEV
#include <ev.h>
#include <deferred/ev.h>
#endif
#ifdef SWEEP_HAVE_SQLITE
#include <deferred/sqlite.h>
#endif
#ifdef SWEEP_HAVE_PQ
#include <deferred/pg.h>
#endif
#ifdef SWEEP_HAVE_UV
#include <uv.h>
#include <deferred/uv.h>
#endif
#ifdef SWEEP_HAVE_GLIB
#include <glib.h>
#include <deferred/glib.h>
#endif

#ifndef SWEEP_BUILDDIR
#define SWEEP_BUILDDIR "."
#endif

/* ---- helpers ---- */

static int destroyed;

static void count_destroy(void *arg)
{
    (void)arg;
    destroyed++;
}

/* What a constructor that must fail gave: it must be NULL (never an
 * already-failed deferred, deferred/common.h); the value is its errno.
 * NULL_ERRNO(call) clears errno first, so a stale one cannot pass. */
static int null_errno_of(const void *p)
{
    int e = errno;

    ck_assert_ptr_null(p);
    return e;
}
#define NULL_ERRNO(call) (errno = 0, null_errno_of(call))

/* A failed deferred's failure code, the deferred dropped (its failure
 * taken, so it is not reported as unhandled).  -1 when d is not failed. */
static int failed_code(deferred_t *d)
{
    deferred_value_t v;
    int code = -1;

    ck_assert_ptr_nonnull(d);
    ck_assert(deferred_has_result(d));
    v = deferred_result_take(d);
    if (deferred_value_is_failure(v))
        code = deferred_failure_code(deferred_value_get_failure(v));
    deferred_value_release(v);
    deferred_unref(d);
    return code;
}

static deferred_failure_t *user_failure(int code)
{
    return deferred_failure_new(DEFERRED_DOMAIN_USER, code, "sweep %d", code);
}

static deferred_value_t noop_cb(deferred_value_t v, void *arg)
{
    (void)arg;
    return v;
}

/* A producer that emits nothing by itself: the test drives it. */
static void idle_resume(deferred_stage_t *self, deferred_stage_t *by)
{
    (void)self;
    (void)by;
}

static const deferred_stage_ops_t idle_producer_ops = {
    .name = "idle producer", .resume = idle_resume, .destroy = count_destroy,
};
static const deferred_stage_ops_t no_role_ops = {
    .name = "no role", .destroy = count_destroy,
};

static deferred_stage_t *idle_producer(void)
{
    deferred_stage_t *st = deferred_stage_new(&idle_producer_ops, NULL, 0);

    ck_assert_ptr_nonnull(st);
    return st;
}

/* ---- common.h ---- */

START_TEST(s_version)
{
    ck_assert_str_eq(deferred_version(), DEFERRED_VERSION_STRING);
    ck_assert_uint_eq(deferred_version_number(), DEFERRED_VERSION_NUMBER);
}
END_TEST

START_TEST(s_strerror_codes)
{
    static const int codes[] = {0, INT_MIN, INT_MAX, -INT_MAX, 1, -1, 4711, -4711,
                                EINVAL, -EINVAL, DEFERRED_EGROUP, -DEFERRED_EFIRSTERROR,
                                DEFERRED_EGROUP + 1};
    size_t i;

    for (i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        ck_assert_ptr_nonnull(deferred_strerror(codes[i]));
        ck_assert_ptr_nonnull(deferred_err_name(codes[i]));
    }
    ck_assert_str_eq(deferred_err_name(0), "EUNKNOWN");
    ck_assert_str_eq(deferred_err_name(INT_MIN), "EUNKNOWN");
    ck_assert_str_eq(deferred_strerror(0), "unknown error");
    ck_assert_str_eq(deferred_strerror(INT_MIN), "unknown error");
    ck_assert_str_eq(deferred_err_name(-EINVAL), "EINVAL");
    ck_assert_str_eq(deferred_err_name(DEFERRED_EGROUP), "DEFERRED_EGROUP");
}
END_TEST

START_TEST(s_allocator)
{
    void *p;

    ck_assert_int_eq(deferred_set_allocator(malloc, NULL, NULL), -EINVAL);
    ck_assert_int_eq(deferred_set_allocator(NULL, realloc, NULL), -EINVAL);
    ck_assert_int_eq(deferred_set_allocator(NULL, NULL, free), -EINVAL);
    ck_assert_int_eq(deferred_set_allocator(malloc, realloc, NULL), -EINVAL);
    /* The counting allocator is still the one in place. */
    p = deferred_malloc(8);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(tu_live(), 1);
    deferred_free(p);
    ck_assert_uint_eq(tu_live(), 0);
    /* Allocation failure is NULL, never an abort.  (deferred_malloc() passes
     * any size on: SIZE_MAX itself would reach the system malloc, which
     * ASan aborts on and valgrind reports as a fishy argument.) */
    tu_fail_at(1);
    ck_assert_ptr_null(deferred_malloc(0));
    tu_fail_at(0);
    deferred_free(NULL);
    /* Restoring the defaults and putting the counter back. */
    ck_assert_int_eq(deferred_set_allocator(NULL, NULL, NULL), 0);
    tu_install_allocator();
}
END_TEST

/* The block cache's knobs take any value: no limit (SIZE_MAX), none (0);
 * trimming an empty cache, twice, does nothing; with a replaced allocator
 * (the counting one here) the cache is off and holds nothing, whatever
 * was freed. */
START_TEST(s_block_cache)
{
    size_t old = deferred_set_block_cache_limit(SIZE_MAX);
    deferred_t *d;

    ck_assert_uint_eq(deferred_set_block_cache_limit(0), SIZE_MAX);
    ck_assert_uint_eq(deferred_set_block_cache_limit(old), 0);
    deferred_block_cache_trim();
    deferred_block_cache_trim();
    d = deferred_new();
    ck_assert_ptr_nonnull(d);
    deferred_unref(d);
    ck_assert_uint_eq(deferred_block_cache_size(), 0);
    ck_assert_uint_eq(tu_live(), 0);
}
END_TEST

/* ---- value.h ---- */

START_TEST(s_value_kinds)
{
    deferred_value_t v;

    deferred_value_release(deferred_value_none());
    deferred_value_release(deferred_value_int(INTPTR_MIN));
    deferred_value_int_release(NULL); /* does nothing */
    deferred_value_failure_release(NULL); /* a NULL failure: nothing */
    ck_assert(deferred_value_failure(NULL).release == deferred_value_failure_release);
    ck_assert(deferred_value_int(0).release != deferred_value_failure_release);
    deferred_value_deferred_release(NULL); /* a NULL deferred: nothing */
    ck_assert(deferred_value_int(0).release != deferred_value_deferred_release);
    ck_assert(deferred_value_failure(NULL).release != deferred_value_deferred_release);
    ck_assert(deferred_value_is_int(deferred_value_int(0)));
    ck_assert(!deferred_value_is_none(deferred_value_int(0)));

    ck_assert(!deferred_value_is_failure(deferred_value_none()));
    ck_assert(!deferred_value_is_failure(deferred_value_int(-1)));
    ck_assert_ptr_null(deferred_value_get_failure(deferred_value_none()));
    ck_assert_ptr_null(deferred_value_take_failure(deferred_value_int(3)));
    ck_assert(!deferred_value_is_deferred(deferred_value_none()));
    ck_assert(!deferred_value_is_deferred(deferred_value_int(3)));

    /* A NULL failure is taken as ENOMEM whatever errno says; a NULL
     * deferred (a constructor's NULL) carries errno's code, ENOMEM for 0. */
    errno = EINVAL;
    v = deferred_value_failure(NULL);
    ck_assert(deferred_value_is_failure(v));
    ck_assert_int_eq(deferred_failure_code(deferred_value_get_failure(v)), ENOMEM);
    deferred_value_release(v);
    errno = 0;
    v = deferred_value_deferred(NULL);
    ck_assert(deferred_value_is_failure(v));
    ck_assert_int_eq(deferred_failure_code(deferred_value_get_failure(v)), ENOMEM);
    deferred_value_release(v);
    errno = EINVAL;
    v = deferred_value_deferred(NULL);
    ck_assert(deferred_value_is_failure(v));
    ck_assert(deferred_failure_is(deferred_value_get_failure(v), DEFERRED_DOMAIN_LIBRARY,
                                  EINVAL));
    deferred_value_release(v);
    errno = ESHUTDOWN;
    v = deferred_value_deferred(NULL);
    ck_assert_int_eq(deferred_failure_code(deferred_value_get_failure(v)), ESHUTDOWN);
    deferred_value_release(v);

    /* strdup(NULL) is an EINVAL failure value. */
    v = deferred_value_strdup(NULL);
    ck_assert(deferred_value_is_failure(v));
    ck_assert_int_eq(deferred_failure_code(deferred_value_get_failure(v)), EINVAL);
    deferred_value_release(v);
    v = deferred_value_strdup("");
    ck_assert(!deferred_value_is_failure(v));
    deferred_value_release(v);
}
END_TEST

START_TEST(s_array)
{
    deferred_array_t *a;
    deferred_value_t v;

    deferred_array_free(NULL);
    ck_assert_uint_eq(deferred_array_size(NULL), 0);
    ck_assert_int_eq(deferred_array_append(NULL, tu_tracked(1)), -EINVAL);
    ck_assert_int_eq(tu_released, 1);
    ck_assert(deferred_value_is_none(deferred_array_get(NULL, 0)));
    ck_assert(deferred_value_is_none(deferred_array_take(NULL, 0)));

    ck_assert_ptr_null(deferred_array_new(SIZE_MAX));
    a = deferred_array_new(0);
    ck_assert_ptr_nonnull(a);
    ck_assert_uint_eq(deferred_array_size(a), 0);
    ck_assert(deferred_value_is_none(deferred_array_get(a, 0)));
    ck_assert(deferred_value_is_none(deferred_array_take(a, SIZE_MAX)));
    ck_assert_int_eq(deferred_array_append(a, tu_tracked(2)), 0);
    ck_assert(deferred_value_is_none(deferred_array_get(a, 1)));
    ck_assert(deferred_value_is_none(deferred_array_get(a, SIZE_MAX)));
    ck_assert(deferred_value_is_none(deferred_array_take(a, 1)));
    v = deferred_array_take(a, 0);
    ck_assert(tu_is_tracked(v));
    /* Taken twice: the slot holds the empty value. */
    ck_assert(deferred_value_is_none(deferred_array_take(a, 0)));
    deferred_value_release(v);
    ck_assert_int_eq(tu_released, 2);

    v = deferred_value_array(NULL);
    ck_assert(deferred_value_is_failure(v));
    ck_assert_int_eq(deferred_failure_code(deferred_value_get_failure(v)), ENOMEM);
    ck_assert_ptr_null(deferred_value_get_array(v));
    deferred_value_release(v);
    ck_assert_ptr_null(deferred_value_get_array(deferred_value_none()));
    ck_assert_ptr_null(deferred_value_get_array(deferred_value_int(7)));
    v = deferred_value_array(a);
    ck_assert_ptr_eq(deferred_value_get_array(v), a);
    deferred_value_release(v);
}
END_TEST

/* ---- failure.h ---- */

START_TEST(s_failure_domain_name)
{
    ck_assert_str_eq(deferred_domain_name(DEFERRED_DOMAIN_LIBRARY), "library");
    ck_assert_str_eq(deferred_domain_name(DEFERRED_DOMAIN_USER), "user");
    /* UNDOCUMENTED: a domain outside the enum (the header names only the
     * five real domains).  Today: a non-NULL string. */
    ck_assert_ptr_nonnull(deferred_domain_name((deferred_domain_t)99));
    ck_assert_ptr_nonnull(deferred_domain_name((deferred_domain_t)-1));
}
END_TEST

static deferred_failure_t *newv(deferred_domain_t dom, int code, const char *fmt, ...)
{
    deferred_failure_t *f;
    va_list ap;

    va_start(ap, fmt);
    f = deferred_failure_newv_at("sweep.c", 1, dom, code, fmt, ap);
    va_end(ap);
    return f;
}

START_TEST(s_failure_new)
{
    deferred_failure_t *f;

    /* fmt NULL: the message is the code's text. */
    f = deferred_failure_new_at(__FILE__, INT_MIN, DEFERRED_DOMAIN_LIBRARY, EINVAL, NULL);
    ck_assert_ptr_nonnull(f);
    ck_assert_str_eq(deferred_failure_message(f), deferred_strerror(EINVAL));
    ck_assert_int_eq(deferred_failure_line(f), INT_MIN);
    deferred_failure_unref(f);
    f = deferred_failure_new_at(__FILE__, 0, DEFERRED_DOMAIN_SYSTEM, INT_MIN, NULL);
    ck_assert_ptr_nonnull(f);
    ck_assert_ptr_nonnull(deferred_failure_message(f));
    deferred_failure_unref(f);
    f = deferred_failure_new_at(__FILE__, -1, DEFERRED_DOMAIN_USER, 0, NULL);
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(deferred_failure_code(f), 0);
    deferred_failure_unref(f);
    f = newv(DEFERRED_DOMAIN_USER, INT_MAX, NULL);
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(deferred_failure_code(f), INT_MAX);
    deferred_failure_unref(f);
    f = newv(DEFERRED_DOMAIN_USER, -5, "%s", "x");
    ck_assert_str_eq(deferred_failure_message(f), "x");
    deferred_failure_unref(f);

    /* wrap with no cause. */
    f = deferred_failure_wrap_at(__FILE__, 1, NULL, DEFERRED_DOMAIN_USER, 3, NULL);
    ck_assert_ptr_nonnull(f);
    ck_assert_ptr_null(deferred_failure_cause(f));
    deferred_failure_unref(f);
}
END_TEST

START_TEST(s_failure_composites)
{
    deferred_failure_t *f, *members[3];

    /* first_error: NULL cause is the static ENOMEM; a huge index. */
    f = deferred_failure_first_error(SIZE_MAX, NULL);
    ck_assert_int_eq(deferred_failure_code(f), DEFERRED_EFIRSTERROR);
    ck_assert_int_eq(deferred_failure_index(f), LONG_MAX);
    ck_assert_int_eq(deferred_failure_code(deferred_failure_cause(f)), ENOMEM);
    deferred_failure_unref(f);
    f = deferred_failure_first_error(0, user_failure(1));
    ck_assert_int_eq(deferred_failure_index(f), 0);
    ck_assert_uint_eq(deferred_failure_group_size(f), 0);
    deferred_failure_unref(f);

    /* group: NULL array (n ignored), NULL entries, an impossible n. */
    f = deferred_failure_group(NULL, SIZE_MAX);
    ck_assert_int_eq(deferred_failure_code(f), DEFERRED_EGROUP);
    ck_assert_uint_eq(deferred_failure_group_size(f), 0);
    ck_assert_ptr_null(deferred_failure_group_get(f, 0));
    deferred_failure_unref(f);
    members[0] = NULL;
    members[1] = user_failure(2);
    members[2] = NULL;
    f = deferred_failure_group(members, 3);
    ck_assert_uint_eq(deferred_failure_group_size(f), 3);
    ck_assert_ptr_null(deferred_failure_group_get(f, 0));
    ck_assert_ptr_nonnull(deferred_failure_group_get(f, 1));
    ck_assert_ptr_null(deferred_failure_group_get(f, 3));
    ck_assert_ptr_null(deferred_failure_group_get(f, SIZE_MAX));
    ck_assert_int_eq(deferred_failure_index(f), -1);
    deferred_failure_unref(f);
    f = deferred_failure_group(members, SIZE_MAX); /* the array is not read */
    ck_assert_int_eq(deferred_failure_code(f), ENOMEM);
    deferred_failure_unref(f);
    f = deferred_failure_group(members, SIZE_MAX / sizeof(members[0]) + 1);
    ck_assert_int_eq(deferred_failure_code(f), ENOMEM);
    deferred_failure_unref(f);

    /* The static ENOMEM failure: refcounting leaves it alone. */
    f = deferred_failure_first_error(1, NULL);
    {
        deferred_failure_t *st = deferred_failure_cause(f);
        int i;

        for (i = 0; i < 3; i++)
            ck_assert_ptr_eq(deferred_failure_ref(st), st);
        for (i = 0; i < 6; i++)
            deferred_failure_unref(st);
        ck_assert_int_eq(deferred_failure_code(st), ENOMEM);
    }
    deferred_failure_unref(f);

    /* A domain outside the enum, with no format: a message and a story
     * all the same (UNDOCUMENTED which). */
    f = deferred_failure_new_at(NULL, 0, (deferred_domain_t)99, 5, NULL);
    ck_assert_ptr_nonnull(deferred_failure_message(f));
    ck_assert_int_gt(deferred_failure_story(f, NULL, 0), 0);
    ck_assert(deferred_failure_is(f, DEFERRED_DOMAIN_ANY, 5));
    deferred_failure_unref(f);
}
END_TEST

START_TEST(s_failure_null)
{
    const char *file;

    ck_assert_ptr_null(deferred_failure_ref(NULL));
    deferred_failure_unref(NULL);
    ck_assert_int_eq(deferred_failure_code(NULL), 0);
    ck_assert_int_eq(deferred_failure_domain(NULL), DEFERRED_DOMAIN_ANY);
    ck_assert_str_eq(deferred_failure_message(NULL), "");
    ck_assert_ptr_null(deferred_failure_cause(NULL));
    file = deferred_failure_file(NULL);
    ck_assert(file == NULL || file[0] == '\0');
    ck_assert_int_eq(deferred_failure_line(NULL), 0);
    /* "-1 for any other failure"; the accessor rule says 0 for NULL.
     * UNDOCUMENTED which one NULL gets: today -1. */
    ck_assert_int_eq(deferred_failure_index(NULL), -1);
    ck_assert_uint_eq(deferred_failure_group_size(NULL), 0);
    ck_assert_ptr_null(deferred_failure_group_get(NULL, 0));
    ck_assert(!deferred_failure_is(NULL, DEFERRED_DOMAIN_ANY, 0));
    ck_assert_ptr_null(deferred_failure_find(NULL, DEFERRED_DOMAIN_ANY, 0));
    ck_assert_uint_eq(deferred_failure_context_size(NULL), 0);
    ck_assert_ptr_null(deferred_failure_context_stage(NULL, 0));
    ck_assert_ptr_null(deferred_failure_context_item(NULL, 0));
    ck_assert_ptr_null(deferred_failure_story_alloc(NULL));
}
END_TEST

START_TEST(s_failure_context_story)
{
    deferred_failure_t *f = user_failure(7), *enomem;
    char buf[8];
    int len;
    char *s;

    ck_assert(!deferred_failure_is(f, DEFERRED_DOMAIN_USER, 8));
    ck_assert_ptr_null(deferred_failure_find(f, DEFERRED_DOMAIN_SQLITE, 7));
    ck_assert_int_eq(deferred_failure_add_context(NULL, "stage", NULL), -EINVAL);
    ck_assert_int_eq(deferred_failure_add_context(f, NULL, "item"), -EINVAL);
    ck_assert_uint_eq(deferred_failure_context_size(f), 0);
    ck_assert_int_eq(deferred_failure_add_context(f, "stage", NULL), 0);
    ck_assert_uint_eq(deferred_failure_context_size(f), 1);
    ck_assert_ptr_null(deferred_failure_context_item(f, 0));
    ck_assert_ptr_null(deferred_failure_context_stage(f, 1));
    ck_assert_ptr_null(deferred_failure_context_stage(f, SIZE_MAX));
    ck_assert_ptr_null(deferred_failure_context_item(f, SIZE_MAX));

    ck_assert_int_eq(deferred_failure_story(NULL, buf, sizeof buf), -EINVAL);
    ck_assert_int_eq(deferred_failure_story(f, NULL, 5), -EINVAL);
    len = deferred_failure_story(f, NULL, 0);
    ck_assert_int_gt(len, 0);
    memset(buf, 'x', sizeof buf);
    ck_assert_int_eq(deferred_failure_story(f, buf, 1), len);
    ck_assert_int_eq(buf[0], '\0');
    ck_assert_int_eq(deferred_failure_story(f, buf, sizeof buf), len);
    ck_assert_int_eq(buf[sizeof buf - 1], '\0');
    s = deferred_failure_story_alloc(f);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq((int)strlen(s), len);
    deferred_free(s);
    deferred_failure_unref(f);

    /* The static ENOMEM failure takes no context; its refcount is left
     * alone.  UNDOCUMENTED: the code add_context returns for it (it is
     * not NULL, and not an allocation failure): today an error < 0. */
    enomem = deferred_failure_first_error(0, NULL);
    deferred_failure_unref(enomem);
    {
        deferred_value_t v = deferred_value_failure(NULL);
        deferred_failure_t *st = deferred_value_get_failure(v);

        ck_assert_int_lt(deferred_failure_add_context(st, "stage", NULL), 0);
        ck_assert_uint_eq(deferred_failure_context_size(st), 0);
        deferred_value_release(v);
    }
}
END_TEST

/* ---- core.h ---- */

START_TEST(s_core_construct)
{
    deferred_t *d;

    /* No file (debug off and on), any line. */
    d = deferred_new_at(NULL, INT_MIN, NULL, NULL, count_destroy);
    ck_assert_ptr_nonnull(d);
    deferred_unref(d);
    ck_assert_int_eq(destroyed, 1);
    deferred_set_debug(true);
    ck_assert(deferred_get_debug());
    /* A deferred made with no file (deferred_new_at(NULL, ...)) in debug
     * mode reports its double fire too, as the header says debug mode
     * does for every one (its creation site reads "?"). */
    d = deferred_new_at(NULL, -1, NULL, NULL, NULL);
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_callback_at(d, deferred_value_none(), NULL, 0), 0);
    ck_assert_int_eq(deferred_callback_at(d, tu_tracked(1), NULL, INT_MIN), -EALREADY);
    ck_assert_int_eq(tu_reports.already_fired, 1);
    ck_assert_int_eq(tu_released, 1);
    deferred_unref(d);
    /* With a creation site, the fire sites may be NULL and INT_MIN. */
    d = deferred_new_at(__FILE__, INT_MAX, NULL, NULL, NULL);
    ck_assert_int_eq(deferred_callback_at(d, deferred_value_none(), NULL, INT_MIN), 0);
    ck_assert_int_eq(deferred_callback_at(d, tu_tracked(1), NULL, INT_MIN), -EALREADY);
    ck_assert_int_eq(tu_reports.already_fired, 2);
    ck_assert_int_eq(tu_released, 2);
    deferred_unref(d);
    deferred_set_debug(false);
    ck_assert(!deferred_get_debug());

    ck_assert_ptr_null(deferred_ref(NULL));
    deferred_unref(NULL);

    d = deferred_succeed(deferred_value_none());
    ck_assert_ptr_nonnull(d);
    ck_assert(deferred_has_result(d));
    deferred_unref(d);
    /* UNDOCUMENTED: deferred_fail(NULL) (errback's NULL f is -EINVAL; fail
     * says nothing).  Today: a deferred failed with ENOMEM, as
     * deferred_value_failure(NULL). */
    d = deferred_fail(NULL);
    if (d != NULL)
        ck_assert_int_eq(failed_code(d), ENOMEM);
    /* deferred_succeed() of a deferred value (callback of one is
     * -EINVAL): NULL with errno EINVAL, the value released. */
    ck_assert_int_eq(NULL_ERRNO(deferred_succeed(deferred_value_deferred(deferred_new()))),
                     EINVAL);
}
END_TEST

START_TEST(s_core_add)
{
    deferred_t *d = deferred_new();

    ck_assert_int_eq(deferred_add_callbacks(NULL, noop_cb, NULL, noop_cb, NULL), -EINVAL);
    ck_assert_int_eq(deferred_add_callbacks(d, NULL, NULL, NULL, NULL), -EINVAL);
    ck_assert_int_eq(deferred_add_callback(NULL, noop_cb, NULL), -EINVAL);
    ck_assert_int_eq(deferred_add_callback(d, NULL, NULL), -EINVAL);
    ck_assert_int_eq(deferred_add_errback(NULL, noop_cb, NULL), -EINVAL);
    ck_assert_int_eq(deferred_add_errback(d, NULL, NULL), -EINVAL);
    ck_assert_int_eq(deferred_add_both(NULL, noop_cb, NULL), -EINVAL);
    ck_assert_int_eq(deferred_add_both(d, NULL, NULL), -EINVAL);
    /* The inline run's end with no deferred: the value is released (a
     * leak under valgrind otherwise), nothing else happens. */
    deferred_ran_at_once(NULL, deferred_value_strdup("released"));

    /* _full: the destroy functions run on error. */
    ck_assert_int_eq(deferred_add_callbacks_full(NULL, noop_cb, NULL, count_destroy,
                                                 noop_cb, NULL, count_destroy), -EINVAL);
    ck_assert_int_eq(destroyed, 1); /* one argument, one destroy: once */
    ck_assert_int_eq(deferred_add_callbacks_full(NULL, noop_cb, TAG(1), count_destroy,
                                                 noop_cb, TAG(2), count_destroy), -EINVAL);
    ck_assert_int_eq(destroyed, 3);
    ck_assert_int_eq(deferred_add_callbacks_full(d, NULL, TAG(1), count_destroy,
                                                 NULL, TAG(2), count_destroy), -EINVAL);
    ck_assert_int_eq(destroyed, 5);
    ck_assert_int_eq(deferred_add_callback_full(NULL, noop_cb, NULL, count_destroy), -EINVAL);
    ck_assert_int_eq(deferred_add_callback_full(d, NULL, NULL, count_destroy), -EINVAL);
    ck_assert_int_eq(deferred_add_errback_full(NULL, noop_cb, NULL, count_destroy), -EINVAL);
    ck_assert_int_eq(deferred_add_errback_full(d, NULL, NULL, count_destroy), -EINVAL);
    ck_assert_int_eq(deferred_add_both_full(NULL, noop_cb, NULL, count_destroy), -EINVAL);
    ck_assert_int_eq(deferred_add_both_full(d, NULL, NULL, count_destroy), -EINVAL);
    ck_assert_int_eq(destroyed, 11);
    /* NULL destroy with NULL d. */
    ck_assert_int_eq(deferred_add_both_full(NULL, noop_cb, NULL, NULL), -EINVAL);

    /* chain_to: NULL either side, itself. */
    ck_assert_int_eq(deferred_chain_to(NULL, d), -EINVAL);
    ck_assert_int_eq(deferred_chain_to(d, NULL), -EINVAL);
    ck_assert_int_eq(deferred_chain_to(d, d), -EINVAL);
    ck_assert_int_eq(deferred_chain_to(NULL, NULL), -EINVAL);
    deferred_unref(d);
}
END_TEST

START_TEST(s_core_fire)
{
    deferred_t *d = deferred_new(), *inner;
    deferred_failure_t *f;

    /* NULL d: the value or failure is released. */
    ck_assert_int_eq(deferred_callback(NULL, tu_tracked(1)), -EINVAL);
    ck_assert_int_eq(tu_released, 1);
    f = user_failure(1);
    ck_assert_int_eq(deferred_errback(NULL, f), -EINVAL);
    ck_assert_int_eq(deferred_errback(d, NULL), -EINVAL);
    ck_assert(!deferred_has_fired(d));
    /* A deferred is not a result. */
    inner = deferred_new();
    ck_assert_int_eq(deferred_callback(d, deferred_value_deferred(inner)), -EINVAL);
    ck_assert(!deferred_has_fired(d));
    /* Fire twice, errback after callback. */
    ck_assert_int_eq(deferred_callback(d, tu_tracked(2)), 0);
    ck_assert_int_eq(deferred_callback(d, tu_tracked(3)), -EALREADY);
    ck_assert_int_eq(tu_released, 2);
    ck_assert_int_eq(deferred_errback(d, user_failure(2)), -EALREADY);
    ck_assert_int_eq(deferred_errback(d, NULL), -EINVAL);
    ck_assert(tu_is_tracked(deferred_result(d)));
    ck_assert_int_eq(tu_tracked_get(deferred_result(d)), 2);
    deferred_unref(d);
    ck_assert_int_eq(tu_released, 3);

    /* Cancel without canceller, then fire: one fire swallowed, the next
     * -EALREADY. */
    d = deferred_new();
    ck_assert_int_eq(deferred_cancel(d), 0);
    ck_assert_int_eq(deferred_cancel(d), 0);
    ck_assert_int_eq(deferred_callback(d, tu_tracked(4)), 0);
    ck_assert_int_eq(deferred_callback(d, tu_tracked(5)), -EALREADY);
    ck_assert_int_eq(tu_released, 5);
    ck_assert_int_eq(failed_code(d), ECANCELED);
    ck_assert_int_eq(tu_reports.unhandled, 0);
}
END_TEST

START_TEST(s_core_pause_cancel)
{
    deferred_t *d = deferred_new();
    deferred_value_t v;

    ck_assert_int_eq(deferred_pause(NULL), -EINVAL);
    ck_assert_int_eq(deferred_unpause(NULL), -EINVAL);
    ck_assert_int_eq(deferred_unpause(d), -EINVAL); /* at zero */
    ck_assert(!deferred_is_paused(NULL));
    ck_assert_int_eq(deferred_pause(d), 0);
    ck_assert(deferred_is_paused(d));
    ck_assert_uint_eq(deferred_pause_count(d), 1);
    ck_assert(!deferred_is_waiting(d));
    ck_assert_ptr_null(deferred_waits_on(d));
    ck_assert_int_eq(deferred_unpause(d), 0);
    ck_assert_int_eq(deferred_unpause(d), -EINVAL);
    ck_assert_uint_eq(deferred_pause_count(NULL), 0);
    ck_assert(!deferred_is_waiting(NULL));
    ck_assert_ptr_null(deferred_waits_on(NULL));
    /* maybe: NULL fn is EINVAL, the value released */
    errno = 0;
    ck_assert_ptr_null(deferred_maybe(NULL, deferred_value_none(), NULL));
    ck_assert_int_eq(errno, EINVAL);

    ck_assert_int_eq(deferred_cancel(NULL), -EINVAL);
    ck_assert_int_eq((deferred_cancel)(NULL), -EINVAL);
    ck_assert_int_eq(deferred_cancel_at(NULL, NULL, INT_MIN), -EINVAL);

    ck_assert(!deferred_has_fired(NULL));
    ck_assert(!deferred_has_result(NULL));
    ck_assert(deferred_value_is_none(deferred_result(NULL)));
    ck_assert(deferred_value_is_none(deferred_result_take(NULL)));
    ck_assert(deferred_value_is_none(deferred_result(d)));
    ck_assert(deferred_value_is_none(deferred_result_take(d)));
    ck_assert(!deferred_has_result(d));

    /* A fired deferred: cancel does nothing; take twice. */
    ck_assert_int_eq(deferred_callback(d, tu_tracked(1)), 0);
    ck_assert_int_eq(deferred_cancel_at(d, NULL, 0), 0);
    ck_assert_int_eq((deferred_cancel)(d), 0);
    v = deferred_result_take(d);
    ck_assert(tu_is_tracked(v));
    ck_assert(deferred_value_is_none(deferred_result_take(d)));
    deferred_value_release(v);
    deferred_unref(d);

    /* The report hook: NULL restores the default, then ours again. */
    deferred_set_report_hook(NULL, NULL);
    deferred_set_report_hook(NULL, TAG(1));
    deferred_set_report_hook(tu_report_hook, NULL);
}
END_TEST

START_TEST(s_core_canceller)
{
    int calls = 0;
    deferred_t *d;

    /* A canceller that does not fire: ECANCELED; it runs once however
     * often d is cancelled; a later fire is -EALREADY (not swallowed). */
    d = deferred_new_cancellable(tu_canceller_count, &calls, NULL);
    ck_assert_int_eq(deferred_cancel(d), 0);
    ck_assert_int_eq(deferred_cancel(d), 0);
    ck_assert_int_eq(calls, 1);
    ck_assert_int_eq(deferred_callback(d, tu_tracked(1)), -EALREADY);
    ck_assert_int_eq(tu_released, 1);
    ck_assert_int_eq(failed_code(d), ECANCELED);

    /* A canceller that fires d with 99. */
    d = deferred_new_cancellable(tu_canceller_fire, &calls, count_destroy);
    ck_assert_int_eq(deferred_cancel(d), 0);
    ck_assert_int_eq(calls, 2);
    ck_assert_int_eq((int)(intptr_t)deferred_result(d).ptr, 99);
    ck_assert_int_eq(deferred_errback(d, user_failure(1)), -EALREADY);
    deferred_unref(d);
    ck_assert_int_eq(destroyed, 1);

    /* Allocation failure: NULL, destroy already called. */
    tu_fail_from(1);
    d = deferred_new_cancellable(tu_canceller_count, &calls, count_destroy);
    tu_fail_at(0);
    ck_assert_ptr_null(d);
    ck_assert_int_eq(destroyed, 2);
    ck_assert_int_eq(calls, 2);
}
END_TEST

/* ---- multi.h ---- */

START_TEST(s_multi)
{
    deferred_t *m, *single = deferred_new(), *end;

    m = deferred_multi_new_at(NULL, INT_MIN, NULL, NULL, count_destroy);
    ck_assert_ptr_nonnull(m);
    ck_assert(deferred_is_multi(m));
    ck_assert(!deferred_is_multi(NULL));
    ck_assert(!deferred_is_multi(single));

    ck_assert_int_eq(deferred_multi_emit(NULL, tu_tracked(1)), -EINVAL);
    ck_assert_int_eq(deferred_multi_emit(single, tu_tracked(2)), -EINVAL);
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_deferred(deferred_new())), -EINVAL);
    ck_assert_int_eq(deferred_multi_finish(NULL, tu_tracked(3)), -EINVAL);
    ck_assert_int_eq(deferred_multi_finish(single, tu_tracked(4)), -EINVAL);
    ck_assert_int_eq(deferred_multi_finish(m, deferred_value_deferred(deferred_new())), -EINVAL);
    ck_assert_int_eq(tu_released, 4);
    ck_assert(!deferred_has_fired(single));
    ck_assert(!deferred_has_fired(m));

    ck_assert_int_eq(NULL_ERRNO(deferred_multi_when_finished(NULL)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO(deferred_multi_when_finished(single)), EINVAL);
    ck_assert_int_eq(deferred_multi_set_flow(NULL, NULL, NULL), -EINVAL);
    ck_assert_int_eq(deferred_multi_set_flow(single, NULL, NULL), -EINVAL);
    ck_assert_int_eq(deferred_multi_set_flow(m, NULL, NULL), 0);
    ck_assert_uint_eq(deferred_multi_queued(NULL), 0);
    ck_assert_uint_eq(deferred_multi_queued(single), 0);
    /* UNDOCUMENTED: deferred_multi_rows() of NULL or a single-shot deferred.
     * Today 0, as deferred_multi_queued(). */
    ck_assert_uint_eq(deferred_multi_rows(NULL), 0);
    ck_assert_uint_eq(deferred_multi_rows(single), 0);
    ck_assert_uint_eq(deferred_multi_rows(m), 0);

    /* Finish twice, emit after the finish. */
    end = deferred_multi_when_finished(m);
    ck_assert_ptr_nonnull(end);
    ck_assert_int_eq(deferred_multi_emit(m, tu_tracked(5)), 0);
    ck_assert_uint_eq(deferred_multi_rows(m), 1);
    ck_assert_int_eq(deferred_multi_finish(m, tu_tracked(6)), 0);
    ck_assert_int_eq(deferred_multi_finish(m, tu_tracked(7)), -EALREADY);
    ck_assert_int_eq(deferred_multi_emit(m, tu_tracked(8)), -EALREADY);
    ck_assert_int_eq(deferred_callback(m, tu_tracked(9)), -EALREADY);
    ck_assert_int_eq(deferred_unpause(m), -EINVAL);
    ck_assert_int_eq(deferred_cancel(m), 0);
    ck_assert(deferred_has_fired(m));
    ck_assert(deferred_value_is_none(deferred_result(m)));
    ck_assert(tu_is_tracked(deferred_result(end)));
    deferred_unref(end);
    deferred_unref(m);
    deferred_unref(single);
    ck_assert_int_eq(tu_released, 9);
    ck_assert_int_eq(destroyed, 1);
}
END_TEST

/* ---- process.h ---- */

START_TEST(s_stage_new)
{
    deferred_stage_t *st;

    ck_assert_int_eq(NULL_ERRNO(deferred_stage_new(&no_role_ops, TAG(1), 0)), EINVAL);
    ck_assert_int_eq(destroyed, 1);
    ck_assert_int_eq(NULL_ERRNO(deferred_stage_new(&idle_producer_ops, TAG(1), 0x2u)), EINVAL);
    ck_assert_int_eq(destroyed, 2);
    ck_assert_int_eq(NULL_ERRNO(deferred_stage_new(&idle_producer_ops, TAG(1), UINT_MAX)), EINVAL);
    ck_assert_int_eq(destroyed, 3);
    /* UNDOCUMENTED: NULL ops.  Today NULL, as for ops without a role. */
    ck_assert_int_eq(NULL_ERRNO(deferred_stage_new(NULL, NULL, 0)), EINVAL);
    st = deferred_stage_new(&idle_producer_ops, TAG(9), DEFERRED_STAGE_AUTOPAUSE);
    ck_assert_ptr_nonnull(st);
    ck_assert_ptr_eq(deferred_stage_data(st), TAG(9));
    ck_assert_str_eq(deferred_stage_name(st), "idle producer");
    ck_assert_uint_eq(deferred_stage_items(st), 0);
    deferred_stage_free(st);
    ck_assert_int_eq(destroyed, 4);
    deferred_stage_free(NULL);
    /* UNDOCUMENTED: the stage accessors on NULL.  Today: NULL, NULL, 0
     * and false (the neutral answers). */
    ck_assert_ptr_null(deferred_stage_data(NULL));
    /* UNDOCUMENTED: the name of NULL (and of a stage whose ops have no
     * name) is "stage". */
    ck_assert_str_eq(deferred_stage_name(NULL), "stage");
    ck_assert_uint_eq(deferred_stage_items(NULL), 0);
    ck_assert(!deferred_stage_is_paused(NULL));
}
END_TEST

START_TEST(s_process_build)
{
    deferred_process_t *p;
    deferred_stage_t *st;
    deferred_t *d;

    errno = 0;
    ck_assert_ptr_null(deferred_process_new(0x2u));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_ptr_null(deferred_process_new(UINT_MAX));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_ptr_null(deferred_process_ref(NULL));
    deferred_process_unref(NULL);
    ck_assert(!deferred_process_is_paused(NULL));
    ck_assert(!deferred_process_is_finished(NULL));
    ck_assert_int_eq(deferred_process_pause(NULL), -EINVAL);
    ck_assert_int_eq(deferred_process_resume(NULL), -EINVAL);
    ck_assert_int_eq(deferred_process_cancel(NULL), -EINVAL);

    p = deferred_process_new(0);
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(deferred_process_resume(p), -EINVAL); /* no pause */
    ck_assert_int_eq(deferred_process_add(NULL, idle_producer()), -EINVAL);
    ck_assert_int_eq(destroyed, 1); /* taken, also on error */
    ck_assert_int_eq(deferred_process_add(p, NULL), -EINVAL);
    /* Run without stages: NULL with errno EINVAL. */
    ck_assert_int_eq(NULL_ERRNO(deferred_process_run(p)), EINVAL);
    /* Run twice, add after the run. */
    ck_assert_int_eq(NULL_ERRNO(deferred_process_run(p)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO((deferred_process_run)(p)), EINVAL);
    /* UNDOCUMENTED: a run that failed for want of stages leaves the
     * process buildable (add returns 0, not -EBUSY). */
    deferred_process_unref(p);

    /* Order: producer after consumer, stage after consumer. */
    p = deferred_process_new(DEFERRED_PROCESS_PAUSED);
    ck_assert_int_eq(deferred_process_add(p, idle_producer()), 0);
    ck_assert_int_eq(deferred_process_add(p, deferred_stage_collect()), 0);
    ck_assert_int_eq(deferred_process_add(p, idle_producer()), -EINVAL);
    /* Nothing after a built-in consumer. */
    ck_assert_int_eq(deferred_process_add(p, deferred_stage_collect()), -EINVAL);
    ck_assert_int_eq(deferred_process_add(p, deferred_stage_batch(2)), -EINVAL);
    ck_assert(deferred_process_is_paused(p)); /* made paused */
    d = deferred_process_run(p);
    ck_assert_ptr_nonnull(d);
    /* Add after the run, run twice. */
    ck_assert_int_eq(deferred_process_add(p, deferred_stage_batch(2)), -EBUSY);
    ck_assert_int_eq(deferred_process_add(p, idle_producer()), -EBUSY);
    ck_assert_int_eq(destroyed, 3);
    ck_assert_int_eq(NULL_ERRNO(deferred_process_run(p)), EINVAL);
    ck_assert(deferred_process_is_paused(p));
    ck_assert_int_eq(deferred_process_resume(p), 0);
    ck_assert_int_eq(deferred_process_resume(p), -EINVAL);
    ck_assert_int_eq(deferred_process_cancel(p), 0);
    ck_assert_int_eq(deferred_process_cancel(p), 0);
    ck_assert(deferred_process_is_finished(p));
    ck_assert_int_eq(failed_code(d), ECANCELED);
    ck_assert_int_eq(deferred_process_resume(p), -EINVAL);
    deferred_process_unref(p);
    ck_assert_int_eq(destroyed, 4);

    /* The same stage added twice: -EINVAL, and it is left to the process
     * that has it (UNDOCUMENTED: "taken, also on error: it is freed" does
     * not hold here, rightly: it is not the caller's any more). */
    p = deferred_process_new(0);
    st = idle_producer();
    ck_assert_int_eq(deferred_process_add(p, st), 0);
    ck_assert_int_eq(deferred_process_add(p, st), -EINVAL);
    ck_assert_int_eq(destroyed, 4);
    deferred_process_unref(p);
    ck_assert_int_eq(destroyed, 5);

    /* Run with no consumer. */
    p = deferred_process_new(0);
    ck_assert_int_eq(deferred_process_add(p, idle_producer()), 0);
    ck_assert_int_eq(NULL_ERRNO(deferred_process_run_at(NULL, INT_MIN, p)), EINVAL);
    deferred_process_unref(p);
    /* Running NULL: NULL with errno EINVAL, as for a process without
     * stages. */
    ck_assert_int_eq(NULL_ERRNO(deferred_process_run(NULL)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO((deferred_process_run)(NULL)), EINVAL);
}
END_TEST

START_TEST(s_stage_calls)
{
    deferred_process_t *p = deferred_process_new(0);
    deferred_stage_t *prod = idle_producer(), *cons = deferred_stage_collect();
    deferred_failure_t *f;
    deferred_t *d;

    /* NULL self. */
    ck_assert_int_eq(deferred_stage_emit(NULL, tu_tracked(1)), -EINVAL);
    ck_assert_int_eq(deferred_stage_emit_tagged(NULL, deferred_value_none(), tu_tracked(2)),
                     -EINVAL);
    ck_assert_int_eq(deferred_stage_start(NULL, deferred_value_int(1)), -EINVAL);
    ck_assert_int_eq(deferred_stage_end(NULL, deferred_value_int(1), tu_tracked(3)),
                     -EINVAL);
    ck_assert_int_eq(deferred_stage_finish(NULL, tu_tracked(4)), -EINVAL);
    ck_assert_int_eq(tu_released, 4);
    ck_assert_int_eq(deferred_stage_fail(NULL, user_failure(1)), -EINVAL);
    ck_assert_int_eq(deferred_stage_pause(NULL), -EINVAL);
    ck_assert_int_eq(deferred_stage_resume(NULL), -EINVAL);
    ck_assert_int_eq(deferred_stage_cancel(NULL), -EINVAL);
    /* A stage in no process has no consumer. */
    ck_assert_int_eq(deferred_stage_emit(prod, tu_tracked(5)), -EINVAL);
    ck_assert_int_eq(tu_released, 5);
    /* The failure made for a stage: never NULL. */
    f = deferred_stage_failure(prod, DEFERRED_DOMAIN_LIBRARY, EIO, NULL);
    ck_assert_int_eq(deferred_failure_code(f), EIO);
    deferred_failure_unref(f);
    /* UNDOCUMENTED: NULL stage (the comment says never NULL). */
    f = deferred_stage_failure(NULL, DEFERRED_DOMAIN_USER, INT_MIN, "%d", 1);
    ck_assert_ptr_nonnull(f);
    deferred_failure_unref(f);

    ck_assert_int_eq(deferred_process_add(p, prod), 0);
    ck_assert_int_eq(deferred_process_add(p, cons), 0);
    d = deferred_process_run(p);
    ck_assert_ptr_nonnull(d);
    /* Wrong calls on a running process. */
    ck_assert_int_eq(deferred_stage_start(prod, deferred_value_none()), -EINVAL);
    ck_assert_int_eq(deferred_stage_resume(cons), -EINVAL); /* no pause of its own */
    ck_assert_int_eq(deferred_stage_emit(cons, tu_tracked(6)), -EINVAL); /* consumer */
    ck_assert_int_eq(deferred_stage_finish(cons, tu_tracked(7)), -EINVAL); /* not a producer */
    ck_assert_int_eq(tu_released, 7);
    ck_assert_int_eq(deferred_stage_emit(prod, tu_tracked(8)), 0);
    ck_assert_uint_eq(deferred_stage_items(cons), 1);
    ck_assert_int_eq(deferred_stage_pause(cons), 0);
    ck_assert(deferred_stage_is_paused(prod));
    ck_assert(deferred_stage_is_paused(cons));
    ck_assert_int_eq(deferred_stage_resume(cons), 0);
    ck_assert_int_eq(deferred_stage_resume(cons), -EINVAL);
    /* Finish twice, emit and fail after the end. */
    ck_assert_int_eq(deferred_stage_finish(prod, deferred_value_none()), 0);
    ck_assert_int_eq(deferred_stage_finish(prod, tu_tracked(9)), -EALREADY);
    ck_assert_int_eq(deferred_stage_emit(prod, tu_tracked(10)), -ECANCELED);
    ck_assert_int_eq(deferred_stage_fail(prod, user_failure(2)), -EALREADY);
    ck_assert_int_eq(deferred_stage_fail(cons, user_failure(3)), -EALREADY);
    ck_assert(deferred_stage_is_paused(prod));
    ck_assert_int_eq(deferred_stage_cancel(cons), 0);
    ck_assert_int_eq(deferred_stage_cancel(cons), 0);
    ck_assert(deferred_process_is_finished(p));
    ck_assert(deferred_has_result(d));
    ck_assert_uint_eq(deferred_array_size(deferred_value_get_array(deferred_result(d))), 1);
    deferred_unref(d);
    deferred_process_unref(p);
    ck_assert_int_eq(tu_released, 10);
}
END_TEST

START_TEST(s_stage_groups_and_fail)
{
    deferred_process_t *p = deferred_process_new(0);
    deferred_stage_t *prod = idle_producer();
    deferred_t *d;

    ck_assert_int_eq(deferred_process_add(p, prod), 0);
    ck_assert_int_eq(deferred_process_add(p, deferred_stage_collect()), 0);
    d = deferred_process_run(p);
    /* Closing a group it did not open: -EINVAL, the stream fails. */
    ck_assert_int_eq(deferred_stage_end(prod, deferred_value_int(1), tu_tracked(1)),
                     -EINVAL);
    ck_assert_int_eq(tu_released, 1);
    ck_assert_int_eq(deferred_stage_emit_tagged(prod, deferred_value_none(), tu_tracked(2)),
                     -ECANCELED);
    ck_assert_int_eq(deferred_stage_finish(prod, tu_tracked(3)), -EALREADY);
    ck_assert_int_eq(tu_released, 3);
    ck_assert_int_eq(failed_code(d), EINVAL);
    deferred_process_unref(p);

    /* stage_fail, then a deferred outcome for finish. */
    p = deferred_process_new(0);
    prod = idle_producer();
    ck_assert_int_eq(deferred_process_add(p, prod), 0);
    ck_assert_int_eq(deferred_process_add(p, deferred_stage_first()), 0);
    d = deferred_process_run(p);
    ck_assert_int_eq(deferred_stage_finish(prod, deferred_value_deferred(deferred_new())),
                     -EINVAL);
    ck_assert_int_eq(failed_code(d), EINVAL);
    ck_assert_int_eq(deferred_stage_finish(prod, deferred_value_none()), -EALREADY);
    deferred_process_unref(p);
}
END_TEST

static bool keep_all(deferred_value_t item, void *arg)
{
    (void)item;
    (void)arg;
    return true;
}

static deferred_value_t fold_keep(deferred_value_t acc, deferred_value_t item, void *arg)
{
    (void)arg;
    deferred_value_release(acc);
    return item;
}

START_TEST(s_builtin_stages)
{
    deferred_stage_t *st;
    deferred_t *d, *single;
    deferred_value_t items[2];

    ck_assert_int_eq(NULL_ERRNO(deferred_stage_batch(0)), EINVAL);
    st = deferred_stage_batch(SIZE_MAX);
    ck_assert_ptr_nonnull(st);
    deferred_stage_free(st);

    /* A producer of no item: the first is the empty value. */
    st = deferred_stage_array(NULL, 0);
    ck_assert_ptr_nonnull(st);
    d = deferred_process_first(st);
    ck_assert_ptr_nonnull(d);
    ck_assert(deferred_has_result(d));
    ck_assert(deferred_value_is_none(deferred_result(d)));
    deferred_unref(d);
    items[0] = tu_tracked(1);
    items[1] = tu_tracked(2);
    d = (deferred_process_first)(deferred_stage_array(items, 2));
    ck_assert_int_eq(tu_tracked_get(deferred_result(d)), 1);
    deferred_unref(d);
    ck_assert_int_eq(tu_released, 2);

    ck_assert_int_eq(NULL_ERRNO(deferred_process_first(NULL)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO((deferred_process_first)(NULL)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO(deferred_process_first_at(NULL, INT_MIN, NULL)), EINVAL);
    /* A consumer given as the producer: NULL with EINVAL (the process
     * cannot be run), the stage freed. */
    ck_assert_int_eq(NULL_ERRNO(deferred_process_first(deferred_stage_collect())), EINVAL);

    st = deferred_stage_map(NULL, noop_cb, NULL);
    ck_assert_str_eq(deferred_stage_name(st), "map");
    deferred_stage_free(st);
    st = deferred_stage_filter(NULL, keep_all, NULL);
    ck_assert_str_eq(deferred_stage_name(st), "filter");
    deferred_stage_free(st);
    st = deferred_stage_reduce(fold_keep, tu_tracked(3), NULL);
    ck_assert_ptr_nonnull(st);
    deferred_stage_free(st);
    ck_assert_int_eq(tu_released, 3); /* init released with the stage */
    deferred_stage_free(deferred_stage_collect());
    deferred_stage_free(deferred_stage_first());

    /* UNDOCUMENTED: NULL function, NULL multi, a single-shot "multi".
     * Today: NULL (no stage; reduce's init released). */
    ck_assert_int_eq(NULL_ERRNO(deferred_stage_map("m", NULL, NULL)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO(deferred_stage_filter("f", NULL, NULL)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO(deferred_stage_reduce(NULL, tu_tracked(4), NULL)), EINVAL);
    ck_assert_int_eq(tu_released, 4);
    ck_assert_int_eq(NULL_ERRNO(deferred_stage_reduce(fold_keep, deferred_value_deferred(deferred_new()),
                                             NULL)), EINVAL);
    /* NULL items with a count: NULL, errno EINVAL, nothing read. */
    errno = 0;
    ck_assert_ptr_null(deferred_stage_array(NULL, 3));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(NULL_ERRNO(deferred_stage_from_multi(NULL)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO(deferred_stage_to_multi(NULL)), EINVAL);
    single = deferred_new();
    ck_assert_int_eq(NULL_ERRNO(deferred_stage_from_multi(single)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO(deferred_stage_to_multi(single)), EINVAL);
    deferred_unref(single);
}
END_TEST

/* ---- combinators.h ---- */

START_TEST(s_fanin)
{
    deferred_t *ins[2] = {NULL, NULL}, *d;
    deferred_value_t v;

    ck_assert_ptr_null(deferred_value_get_indexed(deferred_value_none()));
    ck_assert_ptr_null(deferred_value_get_indexed(deferred_value_int(1)));

    ins[0] = deferred_new();
#define EXPECT_EINVAL(call) do { errno = 0; ck_assert_ptr_null(call); \
        ck_assert_int_eq(errno, EINVAL); } while (0)
    EXPECT_EINVAL(deferred_gather(NULL, 1, 0));
    EXPECT_EINVAL(deferred_gather(NULL, SIZE_MAX, 0));
    EXPECT_EINVAL(deferred_gather(ins, 2, 0));
    EXPECT_EINVAL(deferred_gather(ins, 1, 0x10u));
    EXPECT_EINVAL(deferred_gather(ins, 1, UINT_MAX));
    EXPECT_EINVAL(deferred_gather(ins, 1, DEFERRED_CONSUME_ERRORS | DEFERRED_KEEP_ERRORS));
    EXPECT_EINVAL(deferred_gather(ins, 1, DEFERRED_FIRE_ON_SUCCESS));
    EXPECT_EINVAL(deferred_list(NULL, 1, 0));
    EXPECT_EINVAL(deferred_list(ins, 2, 0));
    EXPECT_EINVAL(deferred_list(ins, 1, 0x10u));
    EXPECT_EINVAL(deferred_list(ins, 1, DEFERRED_CONSUME_ERRORS | DEFERRED_KEEP_ERRORS));
    EXPECT_EINVAL(deferred_race(NULL, 1));
    EXPECT_EINVAL(deferred_race(ins, 2));
    EXPECT_EINVAL(deferred_merge(NULL, 1));
    EXPECT_EINVAL(deferred_merge(ins, 2));
    /* The input is as it was: unfired, nothing in its chain alive. */
    ck_assert(!deferred_has_fired(ins[0]));
    deferred_unref(ins[0]);

    /* No inputs. */
    d = deferred_gather(NULL, 0, 0);
    ck_assert_uint_eq(deferred_array_size(deferred_value_get_array(deferred_result(d))), 0);
    ck_assert_ptr_nonnull(deferred_value_get_array(deferred_result(d)));
    deferred_unref(d);
    d = deferred_list(NULL, 0, DEFERRED_FIRE_ON_SUCCESS | DEFERRED_FIRE_ON_FAILURE);
    ck_assert_ptr_nonnull(deferred_value_get_array(deferred_result(d)));
    deferred_unref(d);
    d = deferred_race(NULL, 0);
    ck_assert(deferred_has_result(d));
    v = deferred_result_take(d);
    ck_assert_int_eq(deferred_failure_code(deferred_value_get_failure(v)), DEFERRED_EGROUP);
    ck_assert_uint_eq(deferred_failure_group_size(deferred_value_get_failure(v)), 0);
    deferred_value_release(v);
    deferred_unref(d);
    d = deferred_merge(NULL, 0);
    ck_assert_ptr_nonnull(d);
    ck_assert(deferred_is_multi(d));
    ck_assert(deferred_is_paused(d));
    ck_assert_int_eq(deferred_unpause(d), 0);
    ck_assert_int_eq(deferred_unpause(d), -EINVAL);
    ck_assert(deferred_has_fired(d));
    deferred_unref(d);
}
END_TEST

static deferred_value_t run_fn(deferred_value_t v, void *arg)
{
    (void)arg;
    return v;
}

START_TEST(s_semaphore)
{
    deferred_semaphore_t *s;
    deferred_t *d;

    EXPECT_EINVAL(deferred_semaphore_new(0));
    ck_assert_ptr_null(deferred_semaphore_ref(NULL));
    deferred_semaphore_unref(NULL);
    EXPECT_EINVAL(deferred_semaphore_acquire(NULL));
    ck_assert_int_eq(deferred_semaphore_release(NULL), -EINVAL);
    ck_assert_uint_eq(deferred_semaphore_tokens(NULL), 0);
    ck_assert_uint_eq(deferred_semaphore_limit(NULL), 0);
    ck_assert_uint_eq(deferred_semaphore_waiting(NULL), 0);
    EXPECT_EINVAL(deferred_semaphore_run(NULL, run_fn, NULL, count_destroy));
    ck_assert_int_eq(destroyed, 1);

    s = deferred_semaphore_new(SIZE_MAX);
    ck_assert_ptr_nonnull(s);
    ck_assert_uint_eq(deferred_semaphore_limit(s), SIZE_MAX);
    ck_assert_int_eq(deferred_semaphore_release(s), -EPERM); /* nothing held */
    ck_assert_uint_eq(deferred_semaphore_tokens(s), SIZE_MAX);
    deferred_semaphore_unref(s);

    s = deferred_semaphore_new(1);
    EXPECT_EINVAL(deferred_semaphore_run(s, NULL, NULL, count_destroy));
    ck_assert_int_eq(destroyed, 2);
    d = deferred_semaphore_acquire(s);
    ck_assert(deferred_has_result(d));
    ck_assert_uint_eq(deferred_semaphore_tokens(s), 0);
    deferred_unref(d);
    ck_assert_int_eq(deferred_semaphore_release(s), 0);
    ck_assert_int_eq(deferred_semaphore_release(s), -EPERM); /* twice */
    ck_assert_uint_eq(deferred_semaphore_tokens(s), 1);
    deferred_semaphore_unref(s);
}
END_TEST

START_TEST(s_lock)
{
    deferred_lock_t *l;
    deferred_t *d, *w;

    ck_assert_ptr_null(deferred_lock_ref(NULL));
    deferred_lock_unref(NULL);
    EXPECT_EINVAL(deferred_lock_acquire(NULL));
    ck_assert_int_eq(deferred_lock_release(NULL), -EINVAL);
    ck_assert(!deferred_lock_is_locked(NULL));
    ck_assert_uint_eq(deferred_lock_waiting(NULL), 0);
    EXPECT_EINVAL(deferred_lock_run(NULL, run_fn, NULL, count_destroy));
    ck_assert_int_eq(destroyed, 1);

    l = deferred_lock_new();
    ck_assert_ptr_nonnull(l);
    ck_assert_int_eq(deferred_lock_release(l), -EPERM); /* unheld */
    EXPECT_EINVAL(deferred_lock_run(l, NULL, NULL, count_destroy));
    ck_assert_int_eq(destroyed, 2);
    d = deferred_lock_acquire(l);
    w = deferred_lock_acquire(l);
    ck_assert(deferred_lock_is_locked(l));
    ck_assert_uint_eq(deferred_lock_waiting(l), 1);
    /* Withdraw the waiter, cancel the holder's fired acquire (nothing). */
    ck_assert_int_eq(deferred_cancel(w), 0);
    ck_assert_int_eq(deferred_cancel(w), 0);
    ck_assert_uint_eq(deferred_lock_waiting(l), 0);
    ck_assert_int_eq(failed_code(w), ECANCELED);
    ck_assert_int_eq(deferred_cancel(d), 0);
    ck_assert(deferred_lock_is_locked(l));
    deferred_unref(d);
    ck_assert_int_eq(deferred_lock_release(l), 0);
    ck_assert_int_eq(deferred_lock_release(l), -EPERM);
    ck_assert_ptr_eq(deferred_lock_ref(l), l);
    deferred_lock_unref(l);
    deferred_lock_unref(l);
}
END_TEST

START_TEST(s_queue)
{
    deferred_queue_t *q;
    deferred_t *out = (deferred_t *)&out;

    ck_assert_ptr_null(deferred_queue_ref(NULL));
    deferred_queue_unref(NULL);
    ck_assert_int_eq(deferred_queue_put(NULL, tu_tracked(1)), -EINVAL);
    ck_assert_int_eq(tu_released, 1);
    ck_assert_int_eq(deferred_queue_get(NULL, &out), -EINVAL);
    ck_assert_ptr_null(out);
    ck_assert_int_eq(deferred_queue_get(NULL, NULL), -EINVAL);
    ck_assert_uint_eq(deferred_queue_pending(NULL), 0);
    ck_assert_uint_eq(deferred_queue_waiting(NULL), 0);

    q = deferred_queue_new(0, 0);
    ck_assert_ptr_nonnull(q);
    ck_assert_int_eq(deferred_queue_get(q, NULL), -EINVAL);
    ck_assert_int_eq(deferred_queue_put(q, tu_tracked(2)), -ENOSPC);
    ck_assert_int_eq(deferred_queue_put(q, deferred_value_deferred(deferred_new())), -EINVAL);
    ck_assert_int_eq(tu_released, 2);
    out = (deferred_t *)&out;
    ck_assert_int_eq(deferred_queue_get(q, &out), -EBUSY);
    ck_assert_ptr_null(out);
    ck_assert_ptr_eq(deferred_queue_ref(q), q);
    deferred_queue_unref(q);
    deferred_queue_unref(q);

    q = deferred_queue_new(DEFERRED_QUEUE_UNLIMITED, DEFERRED_QUEUE_UNLIMITED);
    ck_assert_int_eq(deferred_queue_put(q, deferred_value_failure(user_failure(1))), 0);
    ck_assert_int_eq(deferred_queue_put(q, tu_tracked(3)), 0);
    ck_assert_uint_eq(deferred_queue_pending(q), 2);
    ck_assert_int_eq(deferred_queue_get(q, &out), 0);
    ck_assert_int_eq(failed_code(out), 1);
    deferred_queue_unref(q); /* the kept value is released */
    ck_assert_int_eq(tu_released, 3);
}
END_TEST

/* ---- more wrong states ---- */

START_TEST(s_chain_states)
{
    deferred_t *a = deferred_new(), *b = deferred_new(), *t, *m, *end;

    /* A cycle of chain_to: UNDOCUMENTED (the header lists only -EINVAL
     * for NULL or target == d, and -ENOMEM).  Today -EDEADLK for the link
     * that would close the cycle. */
    ck_assert_int_eq(deferred_chain_to(a, b), 0);
    ck_assert_int_eq(deferred_chain_to(b, a), -EDEADLK);
    ck_assert_int_eq(deferred_callback(a, tu_tracked(1)), 0);
    ck_assert(tu_is_tracked(deferred_result(b)));
    deferred_unref(a);
    deferred_unref(b);
    ck_assert_int_eq(tu_released, 1);

    /* chain_to a target that has fired: the value is released.
     * UNDOCUMENTED (core.h says d's chain continues with an empty value):
     * d's chain continues with an EALREADY failure, as Twisted raises
     * AlreadyCalledError into it. */
    a = deferred_new();
    t = deferred_succeed(deferred_value_none());
    ck_assert_int_eq(deferred_chain_to(a, t), 0);
    ck_assert_int_eq(deferred_callback(a, tu_tracked(2)), 0);
    ck_assert_int_eq(tu_released, 2);
    ck_assert_int_eq(failed_code(a), EALREADY);
    deferred_unref(t);

    /* Take the result of a deferred waiting on another: the empty value. */
    a = deferred_new();
    b = deferred_new();
    ck_assert_int_eq(deferred_add_callback(a, tu_return_deferred, b), 0);
    ck_assert_int_eq(deferred_callback(a, tu_tracked(3)), 0);
    ck_assert(deferred_is_paused(a));
    ck_assert(!deferred_has_result(a));
    ck_assert(deferred_value_is_none(deferred_result_take(a)));
    ck_assert_int_eq(deferred_unpause(a), -EINVAL); /* waiting is not a pause */
    ck_assert_int_eq(deferred_callback(b, tu_tracked(4)), 0);
    ck_assert(deferred_has_result(a));
    ck_assert_int_eq(tu_tracked_get(deferred_result(a)), 4);
    deferred_unref(a);
    deferred_unref(b);
    ck_assert_int_eq(tu_released, 4);

    /* A multi-fire deferred: errback is finish; a failed row with no
     * errback ends the stream; nothing is accepted after. */
    m = deferred_multi_new();
    end = deferred_multi_when_finished(m);
    ck_assert_int_eq(deferred_callback(m, deferred_value_deferred(deferred_new())), -EINVAL);
    ck_assert_int_eq(deferred_multi_emit(m, deferred_value_failure(user_failure(5))), 0);
    ck_assert(deferred_has_fired(m));
    ck_assert_int_eq(deferred_multi_emit(m, tu_tracked(5)), -EALREADY);
    ck_assert_int_eq(deferred_errback(m, user_failure(6)), -EALREADY);
    ck_assert_int_eq(deferred_multi_finish(m, tu_tracked(6)), -EALREADY);
    ck_assert_int_eq(deferred_add_callback(m, noop_cb, NULL), 0);
    ck_assert_int_eq(tu_released, 6);
    ck_assert_int_eq(failed_code(end), 5);
    deferred_unref(m);

    /* Producers of an ended stream, consumers into one. */
    m = deferred_multi_new();
    ck_assert_int_eq(deferred_multi_finish(m, tu_tracked(7)), 0);
    {
        deferred_stage_t *st = deferred_stage_from_multi(m);
        deferred_t *d;

        ck_assert_ptr_nonnull(st);
        d = deferred_process_first(st);
        ck_assert_ptr_nonnull(d);
        ck_assert(deferred_has_result(d));
        deferred_unref(d);
    }
    {
        deferred_process_t *p = deferred_process_new(0);
        deferred_value_t items[1];
        deferred_t *d;

        items[0] = tu_tracked(8);
        ck_assert_int_eq(deferred_process_add(p, deferred_stage_array(items, 1)), 0);
        ck_assert_int_eq(deferred_process_add(p, deferred_stage_to_multi(m)), 0);
        d = deferred_process_run(p);
        ck_assert_ptr_nonnull(d);
        ck_assert(deferred_has_result(d));
        /* UNDOCUMENTED: feeding a stream that has ended.  Today the
         * process fails with ECANCELED, the item released. */
        ck_assert_int_eq(failed_code(d), ECANCELED);
        deferred_process_unref(p);
    }
    deferred_unref(m);
    ck_assert_int_eq(tu_released, 8);
    ck_assert_int_eq(tu_reports.unhandled, 0);
}
END_TEST

START_TEST(s_stage_outside_process)
{
    deferred_stage_t *prod = idle_producer(), *cons = deferred_stage_collect();
    deferred_failure_t *f;

    /* A stage never added to a process: no neighbours, no stream.
     * UNDOCUMENTED which code each call gives; today as asserted. */
    ck_assert_int_eq(deferred_stage_emit(prod, tu_tracked(1)), -EINVAL);
    ck_assert_int_eq(deferred_stage_emit_tagged(prod, deferred_value_int(1), tu_tracked(2)),
                     -EINVAL);
    ck_assert_int_eq(deferred_stage_start(prod, deferred_value_int(1)), -EINVAL);
    ck_assert_int_eq(deferred_stage_end(prod, deferred_value_int(1), tu_tracked(3)),
                     -EINVAL);
    ck_assert_int_lt(deferred_stage_finish(prod, tu_tracked(4)), 0);
    ck_assert_int_lt(deferred_stage_fail(prod, user_failure(1)), 0);
    ck_assert_int_lt(deferred_stage_fail(cons, user_failure(2)), 0);
    ck_assert_int_eq(tu_released, 4);
    ck_assert_int_eq(deferred_stage_pause(cons), -EINVAL);
    ck_assert_int_eq(deferred_stage_resume(cons), -EINVAL);
    ck_assert_int_lt(deferred_stage_cancel(cons), 1);
    ck_assert_int_eq(deferred_stage_pause(prod), -EINVAL);
    ck_assert_int_eq(deferred_stage_resume(prod), -EINVAL);
    ck_assert_int_lt(deferred_stage_cancel(prod), 1);
    (void)deferred_stage_is_paused(prod);
    (void)deferred_stage_is_paused(cons);
    ck_assert_uint_eq(deferred_stage_items(cons), 0);
    f = deferred_stage_failure(cons, DEFERRED_DOMAIN_SYSTEM, EIO, "%s", "x");
    ck_assert_str_eq(deferred_failure_message(f), "x");
    deferred_failure_unref(f);
    deferred_stage_free(prod);
    deferred_stage_free(cons);
    ck_assert_int_eq(destroyed, 1);
}
END_TEST

START_TEST(s_process_after_finish)
{
    deferred_process_t *p = deferred_process_new(0);
    deferred_stage_t *prod = idle_producer(), *cons = deferred_stage_collect();
    deferred_t *d;

    ck_assert_int_eq(deferred_process_pause(p), 0); /* before the run */
    ck_assert_int_eq(deferred_process_add(p, prod), 0);
    ck_assert_int_eq(deferred_process_add(p, cons), 0);
    d = deferred_process_run(p);
    ck_assert(deferred_process_is_paused(p));
    ck_assert(deferred_stage_is_paused(prod));
    /* A producer resuming its own producers: it has none of its own
     * pauses (UNDOCUMENTED for a producer; today -EINVAL). */
    ck_assert_int_eq(deferred_stage_resume(prod), -EINVAL);
    ck_assert_int_eq(deferred_stage_finish(prod, tu_tracked(1)), 0);
    ck_assert(deferred_process_is_finished(p));
    ck_assert(deferred_has_result(d));
    /* After the finish: resume lifts the pause made before the run;
     * another is -EINVAL; cancel does nothing. */
    ck_assert_int_eq(deferred_process_resume(p), 0);
    ck_assert_int_eq(deferred_process_resume(p), -EINVAL);
    ck_assert_int_eq(deferred_process_cancel(p), 0);
    ck_assert_int_eq(deferred_stage_cancel(cons), 0);
    ck_assert_int_eq(deferred_stage_pause(cons), 0);
    ck_assert_int_eq(deferred_stage_resume(cons), 0);
    ck_assert_int_eq(deferred_stage_emit(prod, tu_tracked(2)), -ECANCELED);
    ck_assert_int_eq(deferred_stage_start(prod, deferred_value_int(1)), -ECANCELED);
    ck_assert_int_eq(deferred_stage_fail(prod, user_failure(1)), -EALREADY);
    ck_assert(deferred_has_result(d));
    ck_assert(!deferred_value_is_failure(deferred_result(d)));
    deferred_unref(d);
    deferred_process_unref(p);
    ck_assert_int_eq(tu_released, 2);
}
END_TEST

/* ---- owners gone: cancel or fire what the others let go of ---- */

START_TEST(s_owner_gone)
{
    deferred_semaphore_t *sem = deferred_semaphore_new(1);
    deferred_queue_t *q = deferred_queue_new(1, 1);
    deferred_lock_t *l = deferred_lock_new();
    deferred_process_t *p = deferred_process_new(0);
    deferred_t *a, *w, *g, *m, *end, *in, *comb, *run;

    /* The semaphore goes while an acquire waits: ECANCELED; cancelling
     * it afterwards does nothing. */
    a = deferred_semaphore_acquire(sem);
    w = deferred_semaphore_acquire(sem);
    ck_assert(!deferred_has_fired(w));
    deferred_semaphore_unref(sem);
    ck_assert_int_eq(deferred_cancel(w), 0);
    ck_assert_int_eq(failed_code(w), ECANCELED);
    deferred_unref(a);

    /* The queue goes while a get waits. */
    ck_assert_int_eq(deferred_queue_get(q, &g), 0);
    deferred_queue_unref(q);
    ck_assert_int_eq(deferred_cancel(g), 0);
    ck_assert_int_eq(failed_code(g), ECANCELED);

    /* A waiting lock_run cancelled: fn never runs, destroy once. */
    a = deferred_lock_acquire(l);
    run = deferred_lock_run(l, run_fn, NULL, count_destroy);
    ck_assert_uint_eq(deferred_lock_waiting(l), 1);
    ck_assert_int_eq(deferred_cancel(run), 0);
    ck_assert_int_eq(deferred_cancel(run), 0);
    ck_assert_uint_eq(deferred_lock_waiting(l), 0);
    ck_assert_int_eq(failed_code(run), ECANCELED);
    ck_assert_int_eq(destroyed, 1);
    deferred_unref(a);
    ck_assert_int_eq(deferred_lock_release(l), 0);
    deferred_lock_unref(l);

    /* A running process whose reference was dropped: its deferred
     * cancels it. */
    ck_assert_int_eq(deferred_process_add(p, idle_producer()), 0);
    ck_assert_int_eq(deferred_process_add(p, deferred_stage_collect()), 0);
    run = deferred_process_run(p);
    deferred_process_unref(p);
    ck_assert_int_eq(deferred_cancel(run), 0);
    ck_assert_int_eq(deferred_cancel(run), 0);
    ck_assert_int_eq(failed_code(run), ECANCELED);
    ck_assert_int_eq(destroyed, 2);

    /* A multi-fire deferred freed before its end: the end stays unfired;
     * cancelling it then is an ordinary cancel. */
    m = deferred_multi_new();
    end = deferred_multi_when_finished(m);
    deferred_unref(m);
    ck_assert(!deferred_has_fired(end));
    ck_assert_int_eq(deferred_cancel(end), 0);
    ck_assert_int_eq(failed_code(end), ECANCELED);

    /* Combinators dropped before their inputs fire: the late results are
     * released (gather, list, race, merge). */
    in = deferred_new();
    comb = deferred_gather(&in, 1, 0);
    deferred_unref(comb);
    comb = deferred_list(&in, 1, DEFERRED_KEEP_ERRORS);
    deferred_unref(comb);
    comb = deferred_race(&in, 1);
    deferred_unref(comb);
    comb = deferred_merge(&in, 1);
    ck_assert_int_eq(deferred_unpause(comb), 0);
    deferred_unref(comb);
    ck_assert_int_eq(deferred_callback(in, tu_tracked(1)), 0);
    ck_assert_int_eq(tu_released, 1);
    ck_assert_int_eq(deferred_cancel(in), 0);
    deferred_unref(in);

    /* A cancelled combinator: cancel again, fire the (cancelled) input. */
    in = deferred_new();
    comb = deferred_gather(&in, 1, 0);
    ck_assert_int_eq(deferred_cancel(comb), 0);
    ck_assert_int_eq(deferred_cancel(comb), 0);
    ck_assert_int_eq(deferred_callback(in, tu_tracked(2)), 0); /* swallowed */
    ck_assert_int_eq(deferred_callback(in, tu_tracked(3)), -EALREADY);
    ck_assert_int_eq(tu_released, 3);
    ck_assert_int_eq(failed_code(comb), DEFERRED_EFIRSTERROR);
    deferred_unref(in);
    ck_assert_int_eq(tu_reports.unhandled, 0);
}
END_TEST

/* ---- row.h ---- */

START_TEST(s_row_null)
{
    size_t len = 99;
    deferred_value_t v;
    deferred_param_t prm;

    ck_assert_ptr_null(deferred_value_get_row(deferred_value_none()));
    ck_assert_ptr_null(deferred_value_get_row(deferred_value_int(5)));
    v = deferred_value_row(NULL);
    ck_assert_int_eq(deferred_failure_code(deferred_value_get_failure(v)), ENOMEM);
    deferred_value_release(v);

    ck_assert_uint_eq(deferred_row_columns(NULL), 0);
    ck_assert_ptr_null(deferred_row_name(NULL, 0));
    ck_assert_int_eq(deferred_row_find(NULL, "a"), -1);
    ck_assert_int_eq(deferred_row_type(NULL, 0), DEFERRED_ROW_NULL);
    ck_assert(deferred_row_is_null(NULL, 0));
    ck_assert_int_eq(deferred_row_int(NULL, 0), 0);
    ck_assert(deferred_row_double(NULL, 0) == 0.0);
    ck_assert_ptr_null(deferred_row_text(NULL, 0));
    ck_assert_ptr_null(deferred_row_blob(NULL, 0, &len));
    ck_assert_uint_eq(len, 0);
    ck_assert_ptr_null(deferred_row_blob(NULL, 0, NULL));
    ck_assert(deferred_row_is_null_named(NULL, "a"));
    ck_assert_int_eq(deferred_row_int_named(NULL, NULL), 0);
    ck_assert(deferred_row_double_named(NULL, NULL) == 0.0);
    ck_assert_ptr_null(deferred_row_text_named(NULL, NULL));
    len = 99;
    ck_assert_ptr_null(deferred_row_blob_named(NULL, NULL, &len));
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(NULL_ERRNO(deferred_row_copy(NULL)), EINVAL);
    deferred_row_free(NULL);
    ck_assert_int_eq(NULL_ERRNO(deferred_row_alloc(NULL, 0)), EINVAL);
    ck_assert_int_eq(deferred_row_set_int(NULL, 0, INT64_MIN), -EINVAL);
    ck_assert_int_eq(deferred_row_set_double(NULL, 0, NAN), -EINVAL);
    ck_assert_int_eq(deferred_row_set_text(NULL, 0, "a", 1), -EINVAL);
    ck_assert_int_eq(deferred_row_set_blob(NULL, 0, "a", 1), -EINVAL);
    /* UNDOCUMENTED: shape_unref(NULL) (every other unref says no-op). */
    deferred_row_shape_unref(NULL);

    prm = deferred_param_text(NULL);
    ck_assert_int_eq(prm.type, DEFERRED_ROW_NULL);
    prm = deferred_param_text("");
    ck_assert_int_eq(prm.type, DEFERRED_ROW_TEXT);
}
END_TEST

START_TEST(s_row_range)
{
    static const char *const names[] = {"a", NULL};
    deferred_row_shape_t *shape;
    deferred_row_t *row, *copy;
    size_t len = 99;
    deferred_value_t v;

    ck_assert_int_eq(NULL_ERRNO(deferred_row_shape_new(SIZE_MAX, names)), EINVAL);
    shape = deferred_row_shape_new(2, names);
    ck_assert_ptr_nonnull(shape);
    ck_assert_int_eq(NULL_ERRNO(deferred_row_alloc(shape, SIZE_MAX)), ENOMEM);
    ck_assert_int_eq(NULL_ERRNO(deferred_row_alloc(shape, (size_t)PTRDIFF_MAX)), ENOMEM);
    row = deferred_row_alloc(shape, 4);
    ck_assert_ptr_nonnull(row);
    ck_assert_uint_eq(deferred_row_columns(row), 2);
    ck_assert_str_eq(deferred_row_name(row, 1), ""); /* NULL name is "" */
    ck_assert_ptr_null(deferred_row_name(row, 2));
    ck_assert_ptr_null(deferred_row_name(row, SIZE_MAX));
    ck_assert_int_eq(deferred_row_find(row, "nope"), -1);
    ck_assert_int_eq(deferred_row_find(row, NULL), -1);
    ck_assert_int_eq(deferred_row_find(row, "a"), 0);

    ck_assert_int_eq(deferred_row_set_int(row, 2, 1), -EINVAL);
    ck_assert_int_eq(deferred_row_set_double(row, SIZE_MAX, 1.0), -EINVAL);
    ck_assert_int_eq(deferred_row_set_text(row, 0, NULL, 1), -EINVAL);
    ck_assert_int_eq(deferred_row_set_blob(row, 0, NULL, SIZE_MAX), -EINVAL);
    ck_assert_int_eq(deferred_row_set_text(row, 0, "abc", SIZE_MAX), -EINVAL);
    ck_assert_int_eq(deferred_row_set_text(row, 0, "abc", (size_t)PTRDIFF_MAX / 2 + 1),
                     -EINVAL);
    /* The room is at least what was asked (rounded up to 64 today). */
    {
        static char big[4096];

        ck_assert_int_eq(deferred_row_set_text(row, 0, big, sizeof big), -ENOSPC);
    }
    ck_assert(deferred_row_is_null(row, 0)); /* stays as it was */
    ck_assert_int_eq(deferred_row_set_text(row, 0, NULL, 0), 0);
    ck_assert_int_eq(deferred_row_set_blob(row, 1, "ab", 2), 0);

    ck_assert_int_eq(deferred_row_set_int(row, 1, INT64_MIN), 0);

    ck_assert_int_eq(deferred_row_type(row, SIZE_MAX), DEFERRED_ROW_NULL);
    ck_assert(deferred_row_is_null(row, 2));
    ck_assert_int_eq(deferred_row_int(row, SIZE_MAX), 0);
    ck_assert(deferred_row_double(row, 2) == 0.0);
    ck_assert_ptr_null(deferred_row_text(row, 2));
    ck_assert_ptr_null(deferred_row_text(row, 1)); /* an INTEGER */
    ck_assert_ptr_null(deferred_row_blob(row, 2, &len));
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(deferred_row_int(row, 0), 0); /* "" is not a decimal */
    ck_assert(deferred_row_is_null_named(row, "nope"));
    ck_assert_int_eq(deferred_row_int_named(row, NULL), 0);
    ck_assert(deferred_row_double_named(row, "nope") == 0.0);
    ck_assert_ptr_null(deferred_row_text_named(row, "nope"));
    ck_assert_ptr_null(deferred_row_blob_named(row, "nope", NULL));
    ck_assert_ptr_nonnull(deferred_row_text_named(row, "a"));

    copy = deferred_row_copy(row);
    ck_assert_ptr_nonnull(copy);
    ck_assert_int_eq(deferred_row_int(copy, 1), INT64_MIN);
    v = deferred_value_row(copy);
    ck_assert_ptr_eq(deferred_value_get_row(v), copy);
    deferred_value_release(v);
    deferred_row_free(row);
    deferred_row_shape_unref(shape);

    /* UNDOCUMENTED: NULL names with columns, more than UINT32_MAX
     * columns.  Today: NULL (as for an allocation failure). */
    ck_assert_int_eq(NULL_ERRNO(deferred_row_shape_new(3, NULL)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO(deferred_row_shape_new((size_t)UINT32_MAX + 1, names)), EINVAL);

    /* No columns. */
    shape = deferred_row_shape_new(0, NULL);
    ck_assert_ptr_nonnull(shape);
    row = deferred_row_alloc(shape, 0);
    ck_assert_ptr_nonnull(row);
    ck_assert_int_eq(deferred_row_set_int(row, 0, 1), -EINVAL);
    ck_assert_ptr_null(deferred_row_name(row, 0));
    deferred_row_free(row);
    deferred_row_shape_unref(shape);
}
END_TEST

/* ---- loop.h ---- */

static void sweep_loop_cb(void *arg)
{
    (void)arg;
}

static void sweep_loop_io_cb(void *arg, int revents)
{
    (void)arg;
    (void)revents;
}

static void sweep_deliver(deferred_loop_msg_t *m)
{
    (void)m;
}

static deferred_value_t sweep_job(void *arg)
{
    (void)arg;
    return deferred_value_none();
}

/* Every function of deferred/loop.h with NULL where it takes an object. */
START_TEST(s_loop_null)
{
    deferred_loop_ops_t ops;
    deferred_loop_msg_t m = { NULL, sweep_deliver };
    deferred_t *d = deferred_new();

    EXPECT_EINVAL(deferred_loop_new(NULL, NULL));
    memset(&ops, 0, sizeof ops);
    ops.version = DEFERRED_LOOP_OPS_VERSION;
    EXPECT_EINVAL(deferred_loop_new(&ops, NULL)); /* no functions */
    ops.version = DEFERRED_LOOP_OPS_VERSION + 1;
    EXPECT_EINVAL(deferred_loop_new(&ops, NULL));
    ck_assert_ptr_null(deferred_loop_ref(NULL));
    deferred_loop_unref(NULL);
    ck_assert_ptr_null(deferred_loop_name(NULL));
    ck_assert_ptr_null(deferred_loop_impl(NULL));
    ck_assert(deferred_loop_now(NULL) == 0.0);
    ck_assert_uint_eq(deferred_loop_alive(NULL), 0);
    EXPECT_EINVAL(deferred_loop_timer_new(NULL, sweep_loop_cb, NULL));
    ck_assert_int_eq(deferred_loop_timer_start(NULL, 1.0), -EINVAL);
    deferred_loop_timer_stop(NULL);
    ck_assert(!deferred_loop_timer_is_active(NULL));
    ck_assert(deferred_loop_timer_remaining(NULL) == 0.0);
    deferred_loop_timer_free(NULL);
    EXPECT_EINVAL(deferred_loop_io_new(NULL, 0, sweep_loop_io_cb, NULL));
    ck_assert_int_eq(deferred_loop_io_set(NULL, DEFERRED_LOOP_READ), -EINVAL);
    ck_assert_int_eq(deferred_loop_io_events(NULL), 0);
    ck_assert_int_eq(deferred_loop_io_fd(NULL), -1);
    deferred_loop_io_free(NULL);
    ck_assert_int_eq(deferred_loop_expect(NULL), -EINVAL);
    deferred_loop_done(NULL);
    ck_assert_int_eq(deferred_loop_post(NULL, &m), -EINVAL);
    EXPECT_EINVAL(deferred_loop_later(NULL, 1.0));
    ck_assert_int_eq(deferred_loop_add_timeout(d, NULL, 1.0), -EINVAL);
    ck_assert_int_eq(deferred_loop_add_timeout_full(NULL, NULL, 1.0, NULL, NULL, NULL),
                     -EINVAL);
    EXPECT_EINVAL(deferred_loop_readable(NULL, 0));
    EXPECT_EINVAL(deferred_loop_writable(NULL, 0));
    EXPECT_EINVAL(deferred_loop_lines(NULL, 0, 0));
    ck_assert_uint_eq(deferred_loop_lines_buffered(NULL), 0);
    ck_assert_uint_eq(deferred_loop_lines_capacity(NULL), 0);
    ck_assert(!deferred_loop_lines_is_reading(NULL));
    ck_assert_uint_eq(deferred_loop_lines_count(NULL), 0);
    EXPECT_EINVAL(deferred_loop_remote_new(NULL, d));
    ck_assert_int_eq(deferred_remote_callback(NULL, tu_tracked(1)), -EINVAL);
    ck_assert_int_eq(tu_released, 1);
    ck_assert_int_eq(deferred_remote_errback(NULL, NULL), -EINVAL);
    deferred_remote_drop(NULL);
    EXPECT_EINVAL(deferred_loop_pool_new(NULL, 1));
    EXPECT_EINVAL(deferred_pool_run(NULL, sweep_job, NULL, NULL));
    ck_assert_int_eq(deferred_pool_shutdown(NULL, true), -EINVAL);
    deferred_pool_free(NULL);
    ck_assert_uint_eq(deferred_pool_threads(NULL), 0);
    deferred_unref(d);
}
END_TEST

/* Bad values with a real loop (the libev adapter's). */
START_TEST(s_loop_values)
{
#ifdef SWEEP_HAVE_LIBEV
    struct ev_loop *ev = ev_loop_new(EVFLAG_AUTO);
    deferred_loop_t *loop = deferred_ev_loop_new(ev);
    deferred_loop_timer_t *t;
    deferred_loop_io_t *io;
    deferred_loop_msg_t m = { NULL, NULL };
    deferred_t *d = deferred_new();
    int fds[2];

    ck_assert_ptr_nonnull(loop);
    ck_assert_str_eq(deferred_loop_name(loop), "ev");
    ck_assert_ptr_eq(deferred_ev_loop_of(loop), ev);
    ck_assert_ptr_null(deferred_ev_loop_of(NULL));
    EXPECT_EINVAL(deferred_ev_loop_new(NULL));
    EXPECT_EINVAL(deferred_loop_timer_new(loop, NULL, NULL));
    t = deferred_loop_timer_new(loop, sweep_loop_cb, NULL);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(deferred_loop_timer_start(t, -1.0), -EINVAL);
    ck_assert_int_eq(deferred_loop_timer_start(t, NAN), -EINVAL);
    ck_assert_int_eq(deferred_loop_timer_start(t, INFINITY), -EINVAL);
    ck_assert(!deferred_loop_timer_is_active(t));
    ck_assert_uint_eq(deferred_loop_alive(loop), 0);
    deferred_loop_timer_free(t);
    EXPECT_EINVAL(deferred_loop_io_new(loop, -1, sweep_loop_io_cb, NULL));
    EXPECT_EINVAL(deferred_loop_io_new(loop, 0, NULL, NULL));
    ck_assert_int_eq(NULL_ERRNO(deferred_loop_io_new(loop, INT_MAX, sweep_loop_io_cb, NULL)),
                     EBADF);
    ck_assert_int_eq(pipe(fds), 0);
    io = deferred_loop_io_new(loop, fds[0], sweep_loop_io_cb, NULL);
    ck_assert_ptr_nonnull(io);
    ck_assert_int_eq(deferred_loop_io_set(io, 4), -EINVAL);
    ck_assert_int_eq(deferred_loop_io_set(io, -1), -EINVAL);
    ck_assert_int_eq(deferred_loop_io_events(io), 0);
    ck_assert_int_eq(deferred_loop_io_fd(io), fds[0]);
    deferred_loop_io_free(io);
    /* A post needs a message with a delivery, on a loop that expects. */
    ck_assert_int_eq(deferred_loop_post(loop, NULL), -EINVAL);
    ck_assert_int_eq(deferred_loop_post(loop, &m), -EINVAL);
    m.deliver = sweep_deliver;
    EXPECT_EINVAL(deferred_loop_later(loop, -1.0));
    EXPECT_EINVAL(deferred_loop_later(loop, NAN));
    ck_assert_int_eq(deferred_loop_add_timeout(d, loop, INFINITY), -EINVAL);
    ck_assert_int_eq(NULL_ERRNO(deferred_loop_readable(loop, INT_MAX)), EBADF);
    EXPECT_EINVAL(deferred_loop_writable(loop, -1));
    EXPECT_EINVAL(deferred_loop_lines(loop, -1, 0));
    EXPECT_EINVAL(deferred_loop_lines(loop, fds[0], SIZE_MAX));
    EXPECT_EINVAL(deferred_loop_remote_new(loop, NULL));
    EXPECT_EINVAL(deferred_loop_pool_new(loop, 0));
    EXPECT_EINVAL(deferred_loop_pool_new(loop, 1025));
    close(fds[0]);
    close(fds[1]);
    deferred_unref(d);
    deferred_loop_unref(loop);
    ev_loop_destroy(ev);
#endif
}
END_TEST

/* ---- ev.h ---- */

#ifdef SWEEP_HAVE_LIBEV
static deferred_value_t job_fn(void *arg)
{
    return deferred_value_int((intptr_t)arg);
}

static deferred_value_t on_timeout(deferred_value_t outcome, double seconds, void *arg)
{
    (void)seconds;
    (void)arg;
    return outcome;
}

START_TEST(s_ev_time_fd)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    deferred_t *d, *m;

    ck_assert_int_eq(NULL_ERRNO(deferred_ev_later(NULL, 1.0)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO(deferred_ev_later(loop, -1.0)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO(deferred_ev_later(loop, NAN)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO(deferred_ev_later(loop, INFINITY)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO(deferred_ev_later(loop, -INFINITY)), EINVAL);

    d = deferred_new();
    m = deferred_multi_new();
    ck_assert_int_eq(deferred_ev_add_timeout(NULL, loop, 1.0), -EINVAL);
    ck_assert_int_eq(deferred_ev_add_timeout(d, NULL, 1.0), -EINVAL);
    ck_assert_int_eq(deferred_ev_add_timeout(m, loop, 1.0), -EINVAL);
    ck_assert_int_eq(deferred_ev_add_timeout(d, loop, -0.5), -EINVAL);
    ck_assert_int_eq(deferred_ev_add_timeout(d, loop, NAN), -EINVAL);
    ck_assert_int_eq(deferred_ev_add_timeout(d, loop, INFINITY), -EINVAL);
    ck_assert_int_eq(deferred_ev_add_timeout_full(NULL, loop, 1.0, on_timeout, NULL,
                                                  count_destroy), -EINVAL);
    ck_assert_int_eq(deferred_ev_add_timeout_full(d, loop, NAN, on_timeout, NULL,
                                                  count_destroy), -EINVAL);
    ck_assert_int_eq(deferred_ev_add_timeout_full(m, loop, 1.0, NULL, NULL,
                                                  count_destroy), -EINVAL);
    ck_assert_int_eq(destroyed, 3);
    /* On a deferred that has its result: the timer stops at once. */
    ck_assert_int_eq(deferred_callback(d, deferred_value_none()), 0);
    ck_assert_int_eq(deferred_ev_add_timeout(d, loop, 0.0), 0);
    ck_assert_int_eq(deferred_ev_add_timeout_full(d, loop, 1e9, on_timeout, NULL,
                                                  count_destroy), 0);
    ev_run(loop, 0); /* nothing to wait for */
    deferred_unref(d);
    ck_assert_int_eq(destroyed, 4);
    deferred_unref(m);

    /* Huge but valid delays: a timer that is cancelled. */
    d = deferred_ev_later(loop, DBL_MAX);
    ck_assert_ptr_nonnull(d);
    ck_assert(!deferred_has_fired(d));
    ck_assert_int_eq(deferred_cancel(d), 0);
    ck_assert_int_eq(deferred_cancel(d), 0);
    ck_assert_int_eq(failed_code(d), ECANCELED);
    d = deferred_new();
    ck_assert_int_eq(deferred_ev_add_timeout(d, loop, DBL_MAX), 0);
    deferred_unref(d); /* freeing d stops the timer */
    d = deferred_ev_later(loop, 0.0);
    ck_assert(!deferred_has_fired(d)); /* never before it returns */
    deferred_unref(d);
    ev_run(loop, 0);

    ck_assert_int_eq(NULL_ERRNO(deferred_ev_readable(NULL, 0)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO(deferred_ev_readable(loop, -1)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO(deferred_ev_readable(loop, INT_MIN)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO(deferred_ev_readable(loop, INT_MAX)), EBADF);
    ck_assert_int_eq(NULL_ERRNO(deferred_ev_writable(NULL, 1)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO(deferred_ev_writable(loop, -1)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO(deferred_ev_writable(loop, INT_MAX)), EBADF);
    ev_loop_destroy(loop);
}
END_TEST

START_TEST(s_ev_lines)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    deferred_stage_t *st, *other = deferred_stage_collect();
    int fds[2];

    EXPECT_EINVAL(deferred_ev_lines(NULL, 0, 0));
    EXPECT_EINVAL(deferred_ev_lines(loop, -1, 0));
    EXPECT_EINVAL(deferred_ev_lines(loop, INT_MIN, SIZE_MAX));
    errno = 0;
    ck_assert_ptr_null(deferred_ev_lines(loop, INT_MAX, 0));
    ck_assert_int_eq(errno, EBADF);
    ck_assert_uint_eq(deferred_ev_lines_buffered(NULL), 0);
    ck_assert_uint_eq(deferred_ev_lines_capacity(NULL), 0);
    ck_assert(!deferred_ev_lines_is_reading(NULL));
    ck_assert_uint_eq(deferred_ev_lines_count(NULL), 0);
    ck_assert_uint_eq(deferred_ev_lines_buffered(other), 0);
    ck_assert_uint_eq(deferred_ev_lines_capacity(other), 0);
    ck_assert(!deferred_ev_lines_is_reading(other));
    ck_assert_uint_eq(deferred_ev_lines_count(other), 0);
    deferred_stage_free(other);

    ck_assert_int_eq(pipe(fds), 0);
    st = deferred_ev_lines(loop, fds[0], 0);
    ck_assert_ptr_nonnull(st);
    ck_assert_uint_gt(deferred_ev_lines_capacity(st), 0);
    ck_assert(!deferred_ev_lines_is_reading(st));
    ck_assert_uint_eq(deferred_ev_lines_buffered(st), 0);
    ck_assert_uint_eq(deferred_ev_lines_count(st), 0);
    deferred_stage_free(st);
    /* The largest max_line: never a buffer of SIZE_MAX bytes asked of
     * malloc.  UNDOCUMENTED: today NULL with errno EINVAL (the header
     * names EINVAL only for NULL loop or fd < 0). */
    errno = 0;
    ck_assert_ptr_null(deferred_ev_lines(loop, fds[0], SIZE_MAX));
    ck_assert_int_eq(errno, EINVAL);
    st = deferred_ev_lines(loop, fds[0], 1);
    ck_assert_ptr_nonnull(st);
    deferred_stage_free(st);
    close(fds[0]);
    close(fds[1]);
    ev_loop_destroy(loop);
}
END_TEST

START_TEST(s_ev_remote)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    deferred_t *d = deferred_new(), *m = deferred_multi_new();
    deferred_ev_remote_t *r;

    EXPECT_EINVAL(deferred_ev_remote_new(NULL, d));
    EXPECT_EINVAL(deferred_ev_remote_new(loop, NULL));
    EXPECT_EINVAL(deferred_ev_remote_new(loop, m));
    ck_assert_int_eq(deferred_ev_remote_callback(NULL, tu_tracked(1)), -EINVAL);
    ck_assert_int_eq(tu_released, 1);
    ck_assert_int_eq(deferred_ev_remote_errback(NULL, user_failure(1)), -EINVAL);
    ck_assert_int_eq(deferred_ev_remote_errback(NULL, NULL), -EINVAL);
    deferred_ev_remote_drop(NULL);

    /* A deferred is not a value: r consumed, d fails with EINVAL. */
    r = deferred_ev_remote_new(loop, d);
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(deferred_ev_remote_callback(r, deferred_value_deferred(deferred_new())),
                     -EINVAL);
    ev_run(loop, 0);
    ck_assert_int_eq(failed_code(d), EINVAL);

    /* NULL failure is taken as EINVAL. */
    d = deferred_new();
    r = deferred_ev_remote_new(loop, d);
    ck_assert_int_eq(deferred_ev_remote_errback(r, NULL), 0);
    ev_run(loop, 0);
    ck_assert_int_eq(failed_code(d), EINVAL);

    /* Fired on the loop thread meanwhile: the remote value is released. */
    d = deferred_new();
    r = deferred_ev_remote_new(loop, d);
    ck_assert_int_eq(deferred_callback(d, tu_tracked(2)), 0);
    ck_assert_int_eq(deferred_ev_remote_callback(r, tu_tracked(3)), 0);
    ev_run(loop, 0);
    ck_assert_int_eq(tu_tracked_get(deferred_result(d)), 2);
    deferred_unref(d);
    ck_assert_int_eq(tu_released, 3);

    /* Drop: the deferred is cancelled. */
    d = deferred_new();
    r = deferred_ev_remote_new(loop, d);
    deferred_ev_remote_drop(r);
    ev_run(loop, 0);
    ck_assert_int_eq(failed_code(d), ECANCELED);
    deferred_unref(m);
    ev_loop_destroy(loop);
}
END_TEST

START_TEST(s_ev_pool)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    deferred_ev_pool_t *pool;
    deferred_t *d;

    EXPECT_EINVAL(deferred_ev_pool_new(NULL, 1));
    EXPECT_EINVAL(deferred_ev_pool_new(loop, 0));
    EXPECT_EINVAL(deferred_ev_pool_new(loop, 1025));
    EXPECT_EINVAL(deferred_ev_pool_new(loop, UINT_MAX));
    ck_assert_int_eq(NULL_ERRNO(deferred_ev_pool_run(NULL, job_fn, NULL, count_destroy)),
                     EINVAL);
    ck_assert_int_eq(destroyed, 1);
    ck_assert_int_eq(deferred_ev_pool_shutdown(NULL, true), -EINVAL);
    deferred_ev_pool_free(NULL);
    ck_assert_uint_eq(deferred_ev_pool_threads(NULL), 0);

    pool = deferred_ev_pool_new(loop, 1);
    ck_assert_ptr_nonnull(pool);
    ck_assert_uint_eq(deferred_ev_pool_threads(pool), 1);
    ck_assert_int_eq(NULL_ERRNO(deferred_ev_pool_run(pool, NULL, NULL, count_destroy)),
                     EINVAL);
    ck_assert_int_eq(destroyed, 2);
    d = deferred_ev_pool_run(pool, job_fn, TAG(5), count_destroy);
    ck_assert_int_eq(deferred_cancel(d), 0); /* fails at once, ECANCELED */
    ck_assert_int_eq(deferred_cancel(d), 0);
    ck_assert_int_eq(failed_code(d), ECANCELED);
    d = deferred_ev_pool_run(pool, job_fn, TAG(5), count_destroy);
    ck_assert_int_eq(deferred_ev_pool_shutdown(pool, false), 0);
    ck_assert_int_eq(deferred_ev_pool_shutdown(pool, true), 0); /* idempotent */
    ck_assert_uint_eq(deferred_ev_pool_threads(pool), 0);
    ev_run(loop, 0);
    ck_assert(deferred_has_result(d));
    ck_assert_int_eq((int)(intptr_t)deferred_result(d).ptr, 5);
    deferred_unref(d);
    ck_assert_int_eq(NULL_ERRNO(deferred_ev_pool_run(pool, job_fn, NULL, count_destroy)),
                     ESHUTDOWN);
    ck_assert_int_eq(destroyed, 5);
    deferred_ev_pool_free(pool);

    /* Freed with a job in flight or pending: its deferred fails with
     * ECANCELED or has the job's result; destroy runs once. */
    pool = deferred_ev_pool_new(loop, 1);
    d = deferred_ev_pool_run(pool, job_fn, TAG(6), count_destroy);
    deferred_ev_pool_free(pool);
    ev_run(loop, 0);
    ck_assert(deferred_has_result(d));
    {
        deferred_value_t v = deferred_result_take(d);

        deferred_value_release(v);
    }
    deferred_unref(d);
    ck_assert_int_eq(destroyed, 6);
    ev_loop_destroy(loop);
}
END_TEST
START_TEST(s_ev_dump)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);

    ck_assert_ptr_nonnull(loop);
    ck_assert_int_eq(deferred_ev_dump_on_signal(NULL, 0, DEFERRED_DUMP_TEXT, NULL, NULL), -EINVAL);
    ck_assert_int_eq(deferred_ev_dump_on_signal(loop, -1, DEFERRED_DUMP_TEXT, NULL, NULL), -EINVAL);
    ck_assert_int_eq(deferred_ev_dump_on_signal(loop, INT_MAX, DEFERRED_DUMP_TEXT, NULL, NULL),
                     -EINVAL);
    ck_assert_int_eq(deferred_ev_dump_on_signal(loop, 0, (deferred_dump_format_t)5, NULL, NULL),
                     -EINVAL);
    deferred_ev_dump_on_signal_stop(NULL);
    deferred_ev_dump_on_signal_stop(loop); /* none set up */
    ck_assert_int_eq(deferred_ev_dump_on_signal(loop, 0, DEFERRED_DUMP_TEXT, NULL, NULL), 0);
    ck_assert_int_eq(deferred_ev_dump_on_signal(loop, 0, DEFERRED_DUMP_JSON, NULL, NULL), 0);
    deferred_ev_dump_on_signal_stop(loop);
    ev_loop_destroy(loop);
}
END_TEST

#endif /* SWEEP_HAVE_LIBEV */

/* ---- uv.h ---- */

#ifdef SWEEP_HAVE_UV
START_TEST(s_uv)
{
    uv_loop_t uv;
    uv_timer_t t;
    deferred_loop_t *l;

    ck_assert_int_eq(NULL_ERRNO(deferred_uv_loop_new(NULL)), EINVAL);
    ck_assert_int_eq(deferred_uv_loop_close(NULL), -EINVAL);
    ck_assert_int_eq(uv_loop_init(&uv), 0);
    l = deferred_uv_loop_new(&uv);
    ck_assert_ptr_nonnull(l);
    deferred_loop_unref(l);
    /* wrong state: a handle open on the loop (the user's): busy; once it
     * is closing, the close finishes and the loop closes */
    ck_assert_int_eq(uv_timer_init(&uv, &t), 0);
    ck_assert_int_eq(deferred_uv_loop_close(&uv), UV_EBUSY);
    uv_close((uv_handle_t *)&t, NULL);
    ck_assert_int_eq(deferred_uv_loop_close(&uv), 0);
}
END_TEST
#endif

/* ---- glib.h ---- */

#ifdef SWEEP_HAVE_GLIB
/* deferred_glib_loop_new has no bad input: NULL is the global default
 * context.  The loop it makes is whole, and its last unref leaves nothing
 * (the fixture counts). */
START_TEST(s_glib_loop_new)
{
    deferred_loop_t *l = deferred_glib_loop_new(NULL);

    ck_assert_ptr_nonnull(l);
    ck_assert_str_eq(deferred_loop_name(l), "glib");
    ck_assert_ptr_nonnull(deferred_loop_impl(l));
    deferred_loop_unref(l);
    g_main_context_iteration(NULL, FALSE);
}
END_TEST
#endif /* SWEEP_HAVE_GLIB */

/* ---- sqlite.h ---- */

#ifdef SWEEP_HAVE_SQLITE
START_TEST(s_sqlite)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    deferred_loop_t *dl = deferred_ev_loop_new(loop);
    sqlite3 *db;
    deferred_stage_t *st, *other = deferred_stage_collect();
    deferred_t *d;

    ck_assert_int_eq(sqlite3_open(":memory:", &db), SQLITE_OK);
    ck_assert_int_eq(NULL_ERRNO(deferred_sqlite_query_at(NULL, 0, NULL, db, "SELECT 1", NULL, 0)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO(deferred_sqlite_query(dl, NULL, "SELECT 1", NULL, 0)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO(deferred_sqlite_query(dl, db, NULL, NULL, 0)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO(deferred_sqlite_query(dl, db, "SELECT ?", NULL, 1)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO(deferred_sqlite_query(dl, db, "SELECT ?", NULL, SIZE_MAX)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO((deferred_sqlite_query)(NULL, NULL, NULL, NULL, 0)), EINVAL);
    ck_assert_int_eq(deferred_sqlite_set_batch(NULL, 1), -EINVAL);
    ck_assert_int_eq(deferred_sqlite_set_batch(other, 1), -EINVAL);
    deferred_stage_free(other);
    st = deferred_sqlite_query(dl, db, "SELECT 1", NULL, 0);
    ck_assert_ptr_nonnull(st);
    ck_assert_int_eq(deferred_sqlite_set_batch(st, 0), -EINVAL);
    ck_assert_int_eq(deferred_sqlite_set_batch(st, UINT_MAX), 0);
    deferred_stage_free(st);

    /* UNDOCUMENTED: query_one's bad arguments ("NULL on allocation
     * failure" only).  Today: NULL, as the stage constructor. */
    ck_assert_int_eq(NULL_ERRNO(deferred_sqlite_query_one_at(NULL, 0, NULL, db, "SELECT 1", NULL, 0)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO(deferred_sqlite_query_one(dl, NULL, "SELECT 1", NULL, 0)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO(deferred_sqlite_query_one(dl, db, NULL, NULL, 0)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO((deferred_sqlite_query_one)(dl, db, "SELECT ?", NULL, 1)), EINVAL);
    /* A bad parameter is the stream's failure, when it runs. */
    {
        deferred_param_t bad = deferred_param_blob(NULL, 3);

        d = deferred_sqlite_query_one(dl, db, "SELECT ?", &bad, 1);
        ck_assert_ptr_nonnull(d);
        ev_run(loop, 0);
        ck_assert_int_eq(failed_code(d), EINVAL);
    }
    /* More than one statement: EINVAL; a wrong parameter count:
     * SQLITE_RANGE; an unknown parameter type: EINVAL. */
    d = deferred_sqlite_query_one(dl, db, "SELECT 1; SELECT 2", NULL, 0);
    ev_run(loop, 0);
    ck_assert_int_eq(failed_code(d), EINVAL);
    d = deferred_sqlite_query_one_p(dl, db, "SELECT ?", DEFERRED_PARAMS(deferred_param_int(1),
                                                                       deferred_param_int(2)));
    ev_run(loop, 0);
    ck_assert_int_eq(failed_code(d) & 0xff, SQLITE_RANGE);
    {
        deferred_param_t odd = deferred_param_int(1);

        odd.type = (deferred_row_type_t)99;
        d = deferred_sqlite_query_one(dl, db, "SELECT ?", &odd, 1);
        ev_run(loop, 0);
        ck_assert_int_eq(failed_code(d), EINVAL);
    }
    /* query_all and exec: bad arguments as the stage constructor. */
    ck_assert_int_eq(NULL_ERRNO(deferred_sqlite_query_all_at(NULL, 0, NULL, db, "SELECT 1", NULL, 0)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO(deferred_sqlite_query_all(dl, NULL, "SELECT 1", NULL, 0)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO(deferred_sqlite_query_all(dl, db, NULL, NULL, 0)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO((deferred_sqlite_query_all)(dl, db, "SELECT ?", NULL, 1)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO(deferred_sqlite_exec_at(NULL, 0, NULL, db, "SELECT 1", NULL, 0)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO(deferred_sqlite_exec(dl, NULL, "SELECT 1", NULL, 0)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO(deferred_sqlite_exec(dl, db, NULL, NULL, 0)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO((deferred_sqlite_exec)(dl, db, "SELECT ?", NULL, SIZE_MAX)), EINVAL);
    d = deferred_sqlite_exec(dl, db, "SELECT 1; SELECT 2", NULL, 0);
    ev_run(loop, 0);
    ck_assert_int_eq(failed_code(d), EINVAL);
    d = deferred_sqlite_query_all_p(dl, db, "SELECT ?", DEFERRED_PARAMS(deferred_param_int(1),
                                                                       deferred_param_int(2)));
    ev_run(loop, 0);
    ck_assert_int_eq(failed_code(d) & 0xff, SQLITE_RANGE);
    /* Only a comment: no row. */
    d = deferred_sqlite_query_one(dl, db, "-- nothing", NULL, 0);
    ev_run(loop, 0);
    ck_assert(deferred_has_result(d));
    ck_assert(deferred_value_is_none(deferred_result(d)));
    deferred_unref(d);
    ck_assert_int_eq(NULL_ERRNO(deferred_sqlite_close_at(NULL, 0, NULL, db)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO((deferred_sqlite_close)(dl, NULL)), EINVAL);
    d = deferred_sqlite_close(dl, db);
    ck_assert(!deferred_has_fired(d));
    ev_run(loop, 0);
    ck_assert(deferred_has_result(d));
    ck_assert(deferred_value_is_none(deferred_result(d)));
    deferred_unref(d);
    deferred_loop_unref(dl);
    ev_loop_destroy(loop);
}
END_TEST
#endif

/* ---- pg.h ---- */

#ifdef SWEEP_HAVE_PQ
START_TEST(s_pg)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    deferred_loop_t *dl = deferred_ev_loop_new(loop);
    char buf[6] = "xxxxx";
    deferred_failure_t *f;

    ck_assert_int_eq(NULL_ERRNO(deferred_pg_connect_at(NULL, 0, NULL, "host=/nonexistent")), EINVAL);
    ck_assert_int_eq(NULL_ERRNO(deferred_pg_connect(dl, NULL)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO((deferred_pg_connect)(NULL, NULL)), EINVAL);
    ck_assert_int_eq(deferred_pg_conninfo_check(NULL, NULL, 0), -EINVAL);
    ck_assert_int_eq(deferred_pg_conninfo_check(NULL, buf, sizeof buf), -EINVAL);
    ck_assert_int_eq(deferred_pg_conninfo_check("=", buf, 0), -EINVAL);
    ck_assert_int_eq(deferred_pg_conninfo_check("", NULL, 0), 0);
    ck_assert_ptr_null(deferred_value_get_pg(deferred_value_none()));
    ck_assert_ptr_null(deferred_value_get_pg(deferred_value_int(1)));
    deferred_pg_unref(NULL);
    deferred_pg_close(NULL);
    ck_assert_int_eq(deferred_pg_set_pipeline(NULL, true), -EINVAL);
    ck_assert(!deferred_pg_is_pipelined(NULL));
    ck_assert_uint_eq(deferred_pg_in_flight(NULL), 0);
    ck_assert_int_eq(deferred_pg_batch_begin(NULL), -EINVAL);
    ck_assert_int_eq(deferred_pg_batch_end(NULL), -EINVAL);
    ck_assert_int_eq(deferred_pg_cancel_all(NULL), -EINVAL);
    /* UNDOCUMENTED: ref, is_open and conn of NULL.  Today: NULL, false
     * and NULL. */
    ck_assert_ptr_null(deferred_pg_ref(NULL));
    ck_assert(!deferred_pg_is_open(NULL));
    ck_assert_ptr_null(deferred_pg_conn(NULL));
    ck_assert_int_eq(NULL_ERRNO(deferred_pg_query_at(NULL, 0, NULL, "SELECT 1", NULL, 0)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO((deferred_pg_query)(NULL, "SELECT 1", NULL, 0)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO(deferred_pg_query(NULL, NULL, NULL, SIZE_MAX)), EINVAL);
    /* query_one's NULL connection: NULL with EINVAL, as for query. */
    ck_assert_int_eq(NULL_ERRNO(deferred_pg_query_one_at(NULL, 0, NULL, "SELECT 1", NULL, 0)), EINVAL);
    ck_assert_int_eq(NULL_ERRNO((deferred_pg_query_one)(NULL, "SELECT 1", NULL, 0)), EINVAL);

    ck_assert_int_eq(deferred_pg_sqlstate(NULL), 0);
    ck_assert_int_eq(deferred_pg_sqlstate(""), 0);
    ck_assert_int_eq(deferred_pg_sqlstate("4260"), 0);
    ck_assert_int_eq(deferred_pg_sqlstate("426011"), 0);
    ck_assert_int_eq(deferred_pg_sqlstate("42!01"), 0);
    ck_assert_int_gt(deferred_pg_sqlstate("42601"), 0x10000);
    ck_assert_ptr_null(deferred_pg_condition_name(NULL));
    ck_assert_ptr_null(deferred_pg_condition_name("zz"));
    ck_assert_ptr_null(deferred_pg_condition_name("ZZZZZ"));
    ck_assert_str_eq(deferred_pg_condition_name("22012"), "division_by_zero");
    ck_assert_ptr_null(deferred_pg_failure_sqlstate(NULL, buf));
    f = user_failure(deferred_pg_sqlstate("42601"));
    ck_assert_ptr_null(deferred_pg_failure_sqlstate(f, buf)); /* not postgres */
    deferred_failure_unref(f);
    f = deferred_failure_new(DEFERRED_DOMAIN_POSTGRES, deferred_pg_sqlstate("22012"), NULL);
    ck_assert_str_eq(deferred_pg_failure_sqlstate(f, buf), "22012");
    deferred_failure_unref(f);
    f = deferred_failure_new(DEFERRED_DOMAIN_POSTGRES, ECONNRESET, NULL);
    ck_assert_ptr_null(deferred_pg_failure_sqlstate(f, buf));
    deferred_failure_unref(f);
    /* A malformed conninfo, found before it returns: NULL with EINVAL. */
    ck_assert_int_eq(NULL_ERRNO(deferred_pg_connect(dl, "this is = not a conninfo '")),
                     EINVAL);
    deferred_loop_unref(dl);
    ev_loop_destroy(loop);
}
END_TEST
#endif

/* ---- async.h ---- */

struct sweep_frame {
    deferred_async_t co;
    deferred_value_t v;
};

static int sweep_body(void *frame)
{
    struct sweep_frame *f = frame;

    DEFERRED_ASYNC_BEGIN(f);
    DEFERRED_AWAIT(f, deferred_new(), f->v); /* freed unfired: dropped */
    DEFERRED_ASYNC_END(f);
}

START_TEST(s_async_construct)
{
    struct sweep_frame *f;
    deferred_t *d;

    ck_assert_int_eq(NULL_ERRNO(deferred_async_new(NULL, sizeof(*f), "x")), EINVAL);
    ck_assert_int_eq(NULL_ERRNO(deferred_async_new(sweep_body, 0, "x")), EINVAL);
    ck_assert_int_eq(NULL_ERRNO(deferred_async_new(sweep_body, SIZE_MAX, NULL)), ENOMEM);
    ck_assert_int_eq(NULL_ERRNO(deferred_async_start(NULL)), EINVAL);
    deferred_async_discard(NULL);
    ck_assert_ptr_null(deferred_async_self(NULL));
    ck_assert_str_eq(deferred_async_name(NULL), "");
    ck_assert(!deferred_async_dropped(NULL));
    tu_fail_at(1);
    ck_assert_int_eq(NULL_ERRNO(deferred_async_new(sweep_body, sizeof(*f), "x")), ENOMEM);
    tu_fail_at(0);

    f = DEFERRED_ASYNC_NEW(struct sweep_frame, sweep_body, NULL);
    ck_assert_ptr_nonnull(f);
    ck_assert_str_eq(deferred_async_name(&f->co), "async function");
    d = deferred_async_start(f);
    ck_assert_ptr_nonnull(d);
    /* Wrong state: started twice, discarded after the start. */
    ck_assert_int_eq(NULL_ERRNO(deferred_async_start(f)), EINVAL);
    deferred_async_discard(f);
    ck_assert_int_eq(NULL_ERRNO(deferred_async_consumer(f)), EINVAL);
    ck_assert(!deferred_has_fired(d)); /* dropped: it never fires */
    deferred_unref(d);
}
END_TEST

START_TEST(s_async_steps)
{
    deferred_value_t v;

    struct sweep_frame *f;

    ck_assert_int_eq(deferred_async_await(NULL, NULL, &v, 0, NULL, 0), -EINVAL);
    ck_assert_int_eq(deferred_async_await(NULL, deferred_new(), &v, INT_MIN, NULL, INT_MIN),
                     -EINVAL);
    ck_assert_int_eq(deferred_async_resume(NULL, &v, 0, NULL, 0), -EINVAL);
    f = DEFERRED_ASYNC_NEW(struct sweep_frame, sweep_body, "sweep");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(deferred_async_await(&f->co, deferred_new(), NULL, 0, NULL, 0), -EINVAL);
    ck_assert_int_eq(deferred_async_resume(&f->co, NULL, 1, NULL, 0), -EINVAL);
    deferred_async_discard(f);
    ck_assert_int_eq(deferred_async_return(NULL, tu_tracked(1)), -EINVAL);
    ck_assert_int_eq(tu_released, 1);
}
END_TEST

START_TEST(s_async_streams)
{
    deferred_async_iter_t it;
    deferred_value_t v;
    deferred_t *m = deferred_multi_new(), *d = deferred_new();
    struct sweep_frame *f;

    memset(&it, 0, sizeof(it));
    ck_assert_int_eq(deferred_async_iter_open(NULL, &it, idle_producer()), -EINVAL);
    ck_assert_int_eq(deferred_async_iter_open(NULL, NULL, NULL), -EINVAL);
    ck_assert_int_eq(deferred_async_iter_open_multi(NULL, &it, m), -EINVAL);
    ck_assert_int_eq(deferred_async_next(NULL, &it, &v, NULL, 0), -EINVAL);
    deferred_async_iter_close(NULL);
    deferred_async_iter_close(&it);
    ck_assert_int_eq(NULL_ERRNO(deferred_async_consumer(NULL)), EINVAL);
    ck_assert_ptr_null(deferred_async_input(NULL));
    ck_assert_int_eq(deferred_async_emit(NULL, tu_tracked(1)), -EINVAL);
    ck_assert_int_eq(tu_released, 1);

    f = DEFERRED_ASYNC_NEW(struct sweep_frame, sweep_body, "sweep");
    ck_assert_int_eq(deferred_async_emit(&f->co, tu_tracked(2)), -EINVAL); /* no stage */
    ck_assert_int_eq(tu_released, 2);
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(deferred_async_iter_open(&f->co, NULL, idle_producer()), -EINVAL);
    ck_assert_int_eq(deferred_async_iter_open(&f->co, &it, NULL), -EINVAL);
    /* Not multi-fire, or NULL. */
    ck_assert_int_eq(deferred_async_iter_open_multi(&f->co, &it, d), -EINVAL);
    ck_assert_int_eq(deferred_async_iter_open_multi(&f->co, &it, NULL), -EINVAL);
    ck_assert_int_eq(deferred_async_next(&f->co, NULL, &v, NULL, 0), -EINVAL);
    ck_assert_int_eq(deferred_async_next(&f->co, &it, NULL, NULL, 0), -EINVAL);
    /* A never-opened iterator has no items. */
    ck_assert_int_eq(deferred_async_next(&f->co, &it, &v, NULL, 0), 0);
    ck_assert_int_eq(it.done_, 1);
    /* Not a consumer. */
    ck_assert_ptr_null(deferred_async_input(&f->co));
    deferred_async_discard(f);
    ck_assert_int_eq(destroyed, 2); /* the idle producers, freed */
    deferred_unref(m);
    deferred_unref(d);
}
END_TEST

/* ---- dump.h ---- */

static int sweep_sink(const char *text, size_t len, void *arg)
{
    (void)text;
    (void)len;
    (void)arg;
    return 0;
}

static void sweep_describe(deferred_dump_t *w, void *arg)
{
    (void)arg;
    /* Bad input inside a dump: NULL keys and values are left out. */
    deferred_dump_node(w, NULL, "x");
    deferred_dump_node(w, "k", NULL);
    deferred_dump_str(w, NULL, "v");
    deferred_dump_str(w, "k", NULL);
    deferred_dump_int(w, NULL, 1);
    deferred_dump_int(w, "k", LLONG_MIN);
    deferred_dump_leave(w); /* without an enter */
    deferred_dump_deferred(w, NULL, NULL);
}

START_TEST(s_dump)
{
    deferred_dump_holder_t h;
    deferred_dump_stats_t st;
    deferred_t *d;
    char *s;

    ck_assert_int_eq(deferred_dump_to(DEFERRED_DUMP_TEXT, NULL, NULL, NULL), -EINVAL);
    ck_assert_int_eq(deferred_dump_to((deferred_dump_format_t)-1, sweep_sink, NULL, &st),
                     -EINVAL);
    ck_assert_uint_eq(st.lines, 0);
    ck_assert_int_eq(deferred_dump(NULL, (deferred_dump_format_t)2), -EINVAL);
    ck_assert_int_eq(NULL_ERRNO(deferred_dump_string((deferred_dump_format_t)2)), EINVAL);
    ck_assert_uint_eq(deferred_dump_count(), 0);
    /* A NULL dump: nothing. */
    deferred_dump_node(NULL, "k", "n");
    deferred_dump_str(NULL, "k", "v");
    deferred_dump_int(NULL, "k", 1);
    deferred_dump_enter(NULL);
    deferred_dump_leave(NULL);
    deferred_dump_deferred(NULL, "r", NULL);
    ck_assert_int_eq(deferred_dump_holder_add(NULL, sweep_describe, NULL), -EINVAL);
    ck_assert_int_eq(deferred_dump_holder_add(&h, NULL, NULL), -EINVAL);
    deferred_dump_holder_remove(NULL);
    ck_assert_int_eq(deferred_dump_note(NULL, NULL, NULL), -EINVAL);
    d = deferred_new(); /* debug off: no rare part, the note is not kept */
    ck_assert_int_eq(deferred_dump_note(d, sweep_describe, NULL), 0);
    deferred_unref(d);
    deferred_set_debug(true);
    ck_assert_int_eq(deferred_dump_holder_add(&h, sweep_describe, NULL), 0);
    ck_assert_int_eq(deferred_dump_to(DEFERRED_DUMP_JSON, sweep_sink, NULL, &st), 0);
    ck_assert_uint_eq(st.holders, 1);
    deferred_dump_holder_remove(&h);
    deferred_dump_holder_remove(&h);
    deferred_set_debug(false);
    s = deferred_dump_string(DEFERRED_DUMP_TEXT);
    ck_assert_ptr_nonnull(s);
    deferred_free(s);
}
END_TEST

/* ---- the clock (deferred/clock.h) ---- */

START_TEST(s_clock)
{
    static const double bad_steps[] = {1.0, -1.0};
    deferred_loop_t *l = deferred_clock_new();
    double due = 7.0;

    ck_assert_ptr_nonnull(l);
    ck_assert(deferred_clock_is_clock(l));
    ck_assert(!deferred_clock_is_clock(NULL));
    /* NULL: -EINVAL or the neutral answer */
    ck_assert_int_eq(deferred_clock_advance(NULL, 1.0), -EINVAL);
    ck_assert_int_eq(deferred_clock_pump(NULL, bad_steps, 1), -EINVAL);
    ck_assert_int_eq(deferred_clock_run(NULL), -EINVAL);
    ck_assert_int_eq(deferred_clock_run_once(NULL, true), -EINVAL);
    ck_assert_int_eq(deferred_clock_next(NULL, &due), -EINVAL);
    ck_assert_double_eq(deferred_clock_now(NULL), -1.0);
    ck_assert_uint_eq(deferred_clock_timers(NULL), 0);
    /* bad seconds and steps, NULL out-pointer, nothing running */
    ck_assert_int_eq(deferred_clock_advance(l, -1.0), -EINVAL);
    ck_assert_int_eq(deferred_clock_advance(l, NAN), -EINVAL);
    ck_assert_int_eq(deferred_clock_advance(l, INFINITY), -EINVAL);
    ck_assert_int_eq(deferred_clock_advance(l, -DBL_MAX), -EINVAL);
    ck_assert_int_eq(deferred_clock_pump(l, bad_steps, 2), -EINVAL);
    ck_assert_int_eq(deferred_clock_pump(l, NULL, SIZE_MAX), -EINVAL);
    ck_assert_int_eq(deferred_clock_next(l, NULL), -EINVAL);
    ck_assert_int_eq(deferred_clock_next(l, &due), -ENOENT);
    ck_assert_double_eq(due, 7.0);
    ck_assert_double_eq(deferred_clock_now(l), 0.0);
    /* legal: nothing to run */
    ck_assert_int_eq(deferred_clock_pump(l, NULL, 0), 0);
    ck_assert_int_eq(deferred_clock_advance(l, DBL_MAX), 0);
    ck_assert_int_eq(deferred_clock_run(l), 0);
    ck_assert_int_eq(deferred_clock_run_once(l, true), 0);
    ck_assert_uint_eq(deferred_clock_timers(l), 0);
    deferred_loop_unref(l);
}
END_TEST

/* ---- the table: every exported function and the cases covering it ---- */

typedef void (*sweep_fn_t)(void);

struct sweep_entry {
    const char *lib;     /* "" core, "ev", "sqlite", "pg", "glib" */
    const char *name;
    sweep_fn_t fn;       /* the symbol: the entry does not compile without it */
    const TTest *const *cases[6]; /* the START_TEST pointers' addresses */
};

#define C(t) &t
#define E(lib, fn, ...) {lib, #fn, (sweep_fn_t)(fn), {__VA_ARGS__}}
#define CORE(fn, ...) E("", fn, __VA_ARGS__)

static const struct sweep_entry sweep_table[] = {
    /* common.h */
    CORE(deferred_version, C(s_version)),
    CORE(deferred_version_number, C(s_version)),
    CORE(deferred_strerror, C(s_strerror_codes)),
    CORE(deferred_err_name, C(s_strerror_codes)),
    CORE(deferred_set_allocator, C(s_allocator)),
    CORE(deferred_malloc, C(s_allocator)),
    CORE(deferred_free, C(s_allocator), C(s_failure_context_story)),
    CORE(deferred_set_block_cache_limit, C(s_block_cache)),
    CORE(deferred_block_cache_trim, C(s_block_cache)),
    CORE(deferred_block_cache_size, C(s_block_cache)),
    /* value.h */
    CORE(deferred_value_release, C(s_value_kinds)),
    CORE(deferred_value_int_release, C(s_value_kinds)),
    CORE(deferred_value_failure_release, C(s_value_kinds)),
    CORE(deferred_value_deferred_release, C(s_value_kinds)),
    CORE(deferred_value_failure, C(s_value_kinds)),
    CORE(deferred_value_is_failure, C(s_value_kinds)),
    CORE(deferred_value_get_failure, C(s_value_kinds)),
    CORE(deferred_value_take_failure, C(s_value_kinds)),
    CORE(deferred_value_deferred, C(s_value_kinds)),
    CORE(deferred_value_is_deferred, C(s_value_kinds)),
    CORE(deferred_value_strdup, C(s_value_kinds)),
    CORE(deferred_array_new, C(s_array)),
    CORE(deferred_array_free, C(s_array)),
    CORE(deferred_array_append, C(s_array)),
    CORE(deferred_array_size, C(s_array)),
    CORE(deferred_array_get, C(s_array)),
    CORE(deferred_array_take, C(s_array)),
    CORE(deferred_value_array, C(s_array)),
    CORE(deferred_value_get_array, C(s_array), C(s_fanin)),
    /* failure.h */
    CORE(deferred_domain_name, C(s_failure_domain_name)),
    CORE(deferred_failure_new_at, C(s_failure_new)),
    CORE(deferred_failure_newv_at, C(s_failure_new)),
    CORE(deferred_failure_wrap_at, C(s_failure_new)),
    CORE(deferred_failure_first_error, C(s_failure_composites)),
    CORE(deferred_failure_group, C(s_failure_composites)),
    CORE(deferred_failure_ref, C(s_failure_null)),
    CORE(deferred_failure_unref, C(s_failure_null)),
    CORE(deferred_failure_code, C(s_failure_null)),
    CORE(deferred_failure_domain, C(s_failure_null)),
    CORE(deferred_failure_message, C(s_failure_null), C(s_failure_new)),
    CORE(deferred_failure_cause, C(s_failure_null), C(s_failure_new)),
    CORE(deferred_failure_file, C(s_failure_null)),
    CORE(deferred_failure_line, C(s_failure_null), C(s_failure_new)),
    CORE(deferred_failure_index, C(s_failure_null), C(s_failure_composites)),
    CORE(deferred_failure_group_size, C(s_failure_null), C(s_failure_composites)),
    CORE(deferred_failure_group_get, C(s_failure_null), C(s_failure_composites)),
    CORE(deferred_failure_is, C(s_failure_null), C(s_failure_context_story)),
    CORE(deferred_failure_find, C(s_failure_null), C(s_failure_context_story)),
    CORE(deferred_failure_add_context, C(s_failure_context_story)),
    CORE(deferred_failure_context_size, C(s_failure_null), C(s_failure_context_story)),
    CORE(deferred_failure_context_stage, C(s_failure_null), C(s_failure_context_story)),
    CORE(deferred_failure_context_item, C(s_failure_null), C(s_failure_context_story)),
    CORE(deferred_failure_story, C(s_failure_context_story)),
    CORE(deferred_failure_story_alloc, C(s_failure_null), C(s_failure_context_story)),
    /* async.h */
    CORE(deferred_async_new, C(s_async_construct)),
    CORE(deferred_async_start, C(s_async_construct)),
    CORE(deferred_async_discard, C(s_async_construct)),
    CORE(deferred_async_self, C(s_async_construct)),
    CORE(deferred_async_name, C(s_async_construct)),
    /* dump.h */
    CORE(deferred_dump_to, C(s_dump)),
    CORE(deferred_dump, C(s_dump)),
    CORE(deferred_dump_string, C(s_dump)),
    CORE(deferred_dump_count, C(s_dump)),
    CORE(deferred_dump_node, C(s_dump)),
    CORE(deferred_dump_str, C(s_dump)),
    CORE(deferred_dump_int, C(s_dump)),
    CORE(deferred_dump_enter, C(s_dump)),
    CORE(deferred_dump_leave, C(s_dump)),
    CORE(deferred_dump_deferred, C(s_dump)),
    CORE(deferred_dump_holder_add, C(s_dump)),
    CORE(deferred_dump_holder_remove, C(s_dump)),
    CORE(deferred_dump_note, C(s_dump)),
    /* clock.h */
    CORE(deferred_clock_new, C(s_clock)),
    CORE(deferred_clock_advance, C(s_clock)),
    CORE(deferred_clock_pump, C(s_clock)),
    CORE(deferred_clock_run_once, C(s_clock)),
    CORE(deferred_clock_run, C(s_clock)),
    CORE(deferred_clock_now, C(s_clock)),
    CORE(deferred_clock_timers, C(s_clock)),
    CORE(deferred_clock_next, C(s_clock)),
    CORE(deferred_clock_is_clock, C(s_clock)),
    CORE(deferred_async_dropped, C(s_async_construct)),
    CORE(deferred_async_await, C(s_async_steps)),
    CORE(deferred_async_resume, C(s_async_steps)),
    CORE(deferred_async_return, C(s_async_steps)),
    CORE(deferred_async_iter_open, C(s_async_streams)),
    CORE(deferred_async_iter_open_multi, C(s_async_streams)),
    CORE(deferred_async_iter_close, C(s_async_streams)),
    CORE(deferred_async_next, C(s_async_streams)),
    CORE(deferred_async_consumer, C(s_async_streams), C(s_async_construct)),
    CORE(deferred_async_input, C(s_async_streams)),
    CORE(deferred_async_emit, C(s_async_streams)),
    /* core.h */
    CORE(deferred_new_at, C(s_core_construct), C(s_core_canceller)),
    CORE(deferred_succeed, C(s_core_construct)),
    CORE(deferred_fail, C(s_core_construct)),
    CORE(deferred_ref, C(s_core_construct)),
    CORE(deferred_unref, C(s_core_construct)),
    CORE(deferred_add_callbacks, C(s_core_add)),
    CORE(deferred_add_callback, C(s_core_add)),
    CORE(deferred_add_errback, C(s_core_add)),
    CORE(deferred_add_both, C(s_core_add)),
    CORE(deferred_ran_at_once, C(s_core_add)),
    CORE(deferred_add_callbacks_full, C(s_core_add)),
    CORE(deferred_add_callback_full, C(s_core_add)),
    CORE(deferred_add_errback_full, C(s_core_add)),
    CORE(deferred_add_both_full, C(s_core_add)),
    CORE(deferred_chain_to, C(s_core_add), C(s_chain_states)),
    CORE(deferred_callback_at, C(s_core_fire), C(s_core_construct)),
    CORE(deferred_errback_at, C(s_core_fire), C(s_chain_states)),
    CORE(deferred_pause, C(s_core_pause_cancel)),
    CORE(deferred_unpause, C(s_core_pause_cancel), C(s_multi), C(s_fanin)),
    CORE(deferred_is_paused, C(s_core_pause_cancel)),
    CORE(deferred_pause_count, C(s_core_pause_cancel)),
    CORE(deferred_is_waiting, C(s_core_pause_cancel)),
    CORE(deferred_waits_on, C(s_core_pause_cancel)),
    CORE(deferred_maybe, C(s_core_pause_cancel)),
    CORE(deferred_cancel, C(s_core_pause_cancel), C(s_core_canceller)),
    CORE(deferred_cancel_at, C(s_core_pause_cancel), C(s_core_fire), C(s_owner_gone)),
    CORE(deferred_has_fired, C(s_core_pause_cancel)),
    CORE(deferred_has_result, C(s_core_pause_cancel)),
    CORE(deferred_result, C(s_core_pause_cancel)),
    CORE(deferred_result_take, C(s_core_pause_cancel), C(s_chain_states)),
    CORE(deferred_set_report_hook, C(s_core_pause_cancel)),
    CORE(deferred_set_debug, C(s_core_construct)),
    CORE(deferred_get_debug, C(s_core_construct)),
    /* multi.h */
    CORE(deferred_multi_new_at, C(s_multi)),
    CORE(deferred_is_multi, C(s_multi)),
    CORE(deferred_multi_emit, C(s_multi), C(s_chain_states)),
    CORE(deferred_multi_finish, C(s_multi)),
    CORE(deferred_multi_when_finished, C(s_multi), C(s_owner_gone)),
    CORE(deferred_multi_set_flow, C(s_multi)),
    CORE(deferred_multi_queued, C(s_multi)),
    CORE(deferred_multi_rows, C(s_multi)),
    /* process.h */
    CORE(deferred_stage_new, C(s_stage_new)),
    CORE(deferred_stage_data, C(s_stage_new)),
    CORE(deferred_stage_name, C(s_stage_new)),
    CORE(deferred_stage_free, C(s_stage_new)),
    CORE(deferred_process_new, C(s_process_build)),
    CORE(deferred_process_ref, C(s_process_build)),
    CORE(deferred_process_unref, C(s_process_build), C(s_owner_gone)),
    CORE(deferred_process_add, C(s_process_build)),
    CORE(deferred_process_run_at, C(s_process_build)),
    CORE(deferred_process_run, C(s_process_build)),
    CORE(deferred_process_pause, C(s_process_build), C(s_process_after_finish)),
    CORE(deferred_process_resume, C(s_process_build), C(s_process_after_finish)),
    CORE(deferred_process_cancel, C(s_process_build), C(s_process_after_finish)),
    CORE(deferred_process_is_paused, C(s_process_build)),
    CORE(deferred_process_is_finished, C(s_process_build)),
    CORE(deferred_stage_emit, C(s_stage_calls)),
    CORE(deferred_stage_emit_tagged, C(s_stage_calls), C(s_stage_groups_and_fail)),
    CORE(deferred_stage_start, C(s_stage_calls)),
    CORE(deferred_stage_end, C(s_stage_calls), C(s_stage_groups_and_fail)),
    CORE(deferred_stage_finish, C(s_stage_calls), C(s_stage_groups_and_fail), C(s_process_after_finish)),
    CORE(deferred_stage_fail, C(s_stage_calls), C(s_stage_outside_process)),
    CORE(deferred_stage_pause, C(s_stage_calls), C(s_stage_outside_process)),
    CORE(deferred_stage_resume, C(s_stage_calls), C(s_stage_outside_process)),
    CORE(deferred_stage_cancel, C(s_stage_calls), C(s_stage_outside_process)),
    CORE(deferred_stage_is_paused, C(s_stage_calls), C(s_stage_new)),
    CORE(deferred_stage_failure, C(s_stage_calls)),
    CORE(deferred_stage_items, C(s_stage_calls), C(s_stage_new)),
    CORE(deferred_stage_array, C(s_builtin_stages)),
    CORE(deferred_stage_from_multi, C(s_builtin_stages), C(s_chain_states)),
    CORE(deferred_stage_map, C(s_builtin_stages)),
    CORE(deferred_stage_filter, C(s_builtin_stages)),
    CORE(deferred_stage_batch, C(s_builtin_stages), C(s_process_build)),
    CORE(deferred_stage_collect, C(s_builtin_stages), C(s_process_build)),
    CORE(deferred_stage_reduce, C(s_builtin_stages)),
    CORE(deferred_stage_first, C(s_builtin_stages), C(s_stage_groups_and_fail)),
    CORE(deferred_process_first_at, C(s_builtin_stages)),
    CORE(deferred_process_first, C(s_builtin_stages)),
    CORE(deferred_stage_to_multi, C(s_builtin_stages), C(s_chain_states)),
    /* combinators.h */
    CORE(deferred_value_get_indexed, C(s_fanin)),
    CORE(deferred_gather, C(s_fanin), C(s_owner_gone)),
    CORE(deferred_list, C(s_fanin), C(s_owner_gone)),
    CORE(deferred_race, C(s_fanin), C(s_owner_gone)),
    CORE(deferred_merge, C(s_fanin), C(s_owner_gone)),
    CORE(deferred_semaphore_new, C(s_semaphore)),
    CORE(deferred_semaphore_ref, C(s_semaphore)),
    CORE(deferred_semaphore_unref, C(s_semaphore), C(s_owner_gone)),
    CORE(deferred_semaphore_acquire, C(s_semaphore)),
    CORE(deferred_semaphore_release, C(s_semaphore)),
    CORE(deferred_semaphore_tokens, C(s_semaphore)),
    CORE(deferred_semaphore_limit, C(s_semaphore)),
    CORE(deferred_semaphore_waiting, C(s_semaphore)),
    CORE(deferred_semaphore_run, C(s_semaphore)),
    CORE(deferred_lock_new, C(s_lock)),
    CORE(deferred_lock_ref, C(s_lock)),
    CORE(deferred_lock_unref, C(s_lock)),
    CORE(deferred_lock_acquire, C(s_lock)),
    CORE(deferred_lock_release, C(s_lock)),
    CORE(deferred_lock_is_locked, C(s_lock)),
    CORE(deferred_lock_waiting, C(s_lock)),
    CORE(deferred_lock_run, C(s_lock), C(s_owner_gone)),
    CORE(deferred_queue_new, C(s_queue)),
    CORE(deferred_queue_ref, C(s_queue)),
    CORE(deferred_queue_unref, C(s_queue), C(s_owner_gone)),
    CORE(deferred_queue_put, C(s_queue)),
    CORE(deferred_queue_get, C(s_queue)),
    CORE(deferred_queue_pending, C(s_queue)),
    CORE(deferred_queue_waiting, C(s_queue)),
    /* row.h */
    CORE(deferred_value_get_row, C(s_row_null), C(s_row_range)),
    CORE(deferred_value_row, C(s_row_null), C(s_row_range)),
    CORE(deferred_row_columns, C(s_row_null), C(s_row_range)),
    CORE(deferred_row_name, C(s_row_null), C(s_row_range)),
    CORE(deferred_row_find, C(s_row_null), C(s_row_range)),
    CORE(deferred_row_type, C(s_row_null), C(s_row_range)),
    CORE(deferred_row_is_null, C(s_row_null), C(s_row_range)),
    CORE(deferred_row_int, C(s_row_null), C(s_row_range)),
    CORE(deferred_row_double, C(s_row_null), C(s_row_range)),
    CORE(deferred_row_text, C(s_row_null), C(s_row_range)),
    CORE(deferred_row_blob, C(s_row_null), C(s_row_range)),
    CORE(deferred_row_is_null_named, C(s_row_null), C(s_row_range)),
    CORE(deferred_row_int_named, C(s_row_null), C(s_row_range)),
    CORE(deferred_row_double_named, C(s_row_null), C(s_row_range)),
    CORE(deferred_row_text_named, C(s_row_null), C(s_row_range)),
    CORE(deferred_row_blob_named, C(s_row_null), C(s_row_range)),
    CORE(deferred_row_copy, C(s_row_null), C(s_row_range)),
    CORE(deferred_row_free, C(s_row_null), C(s_row_range)),
    CORE(deferred_row_shape_new, C(s_row_range)),
    CORE(deferred_row_shape_unref, C(s_row_null), C(s_row_range)),
    CORE(deferred_row_alloc, C(s_row_null), C(s_row_range)),
    CORE(deferred_row_set_int, C(s_row_null), C(s_row_range)),
    CORE(deferred_row_set_double, C(s_row_null), C(s_row_range)),
    CORE(deferred_row_set_text, C(s_row_null), C(s_row_range)),
    CORE(deferred_row_set_blob, C(s_row_null), C(s_row_range)),
    CORE(deferred_param_text, C(s_row_null)),
    /* loop.h */
    CORE(deferred_loop_new, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_loop_ref, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_loop_unref, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_loop_name, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_loop_impl, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_loop_now, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_loop_alive, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_loop_timer_new, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_loop_timer_start, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_loop_timer_stop, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_loop_timer_is_active, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_loop_timer_remaining, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_loop_timer_free, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_loop_io_new, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_loop_io_set, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_loop_io_events, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_loop_io_fd, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_loop_io_free, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_loop_expect, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_loop_done, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_loop_post, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_loop_later, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_loop_add_timeout, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_loop_add_timeout_full, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_loop_readable, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_loop_writable, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_loop_lines, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_loop_lines_buffered, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_loop_lines_capacity, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_loop_lines_is_reading, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_loop_lines_count, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_loop_remote_new, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_remote_callback, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_remote_errback, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_remote_drop, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_loop_pool_new, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_pool_run, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_pool_shutdown, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_pool_free, C(s_loop_null), C(s_loop_values)),
    CORE(deferred_pool_threads, C(s_loop_null), C(s_loop_values)),
#ifdef SWEEP_HAVE_LIBEV
    E("ev", deferred_ev_loop_new, C(s_loop_values)),
    E("ev", deferred_ev_loop_of, C(s_loop_values)),
    E("ev", deferred_ev_later, C(s_ev_time_fd)),
    E("ev", deferred_ev_add_timeout, C(s_ev_time_fd)),
    E("ev", deferred_ev_add_timeout_full, C(s_ev_time_fd)),
    E("ev", deferred_ev_readable, C(s_ev_time_fd)),
    E("ev", deferred_ev_writable, C(s_ev_time_fd)),
    E("ev", deferred_ev_lines, C(s_ev_lines)),
    E("ev", deferred_ev_lines_buffered, C(s_ev_lines)),
    E("ev", deferred_ev_lines_capacity, C(s_ev_lines)),
    E("ev", deferred_ev_lines_is_reading, C(s_ev_lines)),
    E("ev", deferred_ev_lines_count, C(s_ev_lines)),
    E("ev", deferred_ev_remote_new, C(s_ev_remote)),
    E("ev", deferred_ev_remote_callback, C(s_ev_remote)),
    E("ev", deferred_ev_remote_errback, C(s_ev_remote)),
    E("ev", deferred_ev_remote_drop, C(s_ev_remote)),
    E("ev", deferred_ev_pool_new, C(s_ev_pool)),
    E("ev", deferred_ev_pool_run, C(s_ev_pool)),
    E("ev", deferred_ev_pool_shutdown, C(s_ev_pool)),
    E("ev", deferred_ev_pool_free, C(s_ev_pool)),
    E("ev", deferred_ev_pool_threads, C(s_ev_pool)),
    E("ev", deferred_ev_dump_on_signal, C(s_ev_dump)),
    E("ev", deferred_ev_dump_on_signal_stop, C(s_ev_dump)),
#endif
#ifdef SWEEP_HAVE_UV
    E("uv", deferred_uv_loop_new, C(s_uv)),
    E("uv", deferred_uv_loop_close, C(s_uv)),
#endif
#ifdef SWEEP_HAVE_SQLITE
    E("sqlite", deferred_sqlite_query_at, C(s_sqlite)),
    E("sqlite", deferred_sqlite_query, C(s_sqlite)),
    E("sqlite", deferred_sqlite_set_batch, C(s_sqlite)),
    E("sqlite", deferred_sqlite_query_one_at, C(s_sqlite)),
    E("sqlite", deferred_sqlite_query_one, C(s_sqlite)),
    E("sqlite", deferred_sqlite_query_all_at, C(s_sqlite)),
    E("sqlite", deferred_sqlite_query_all, C(s_sqlite)),
    E("sqlite", deferred_sqlite_exec_at, C(s_sqlite)),
    E("sqlite", deferred_sqlite_exec, C(s_sqlite)),
    E("sqlite", deferred_sqlite_close_at, C(s_sqlite)),
    E("sqlite", deferred_sqlite_close, C(s_sqlite)),
#endif
#ifdef SWEEP_HAVE_PQ
    E("pg", deferred_pg_connect_at, C(s_pg)),
    E("pg", deferred_pg_connect, C(s_pg)),
    E("pg", deferred_value_get_pg, C(s_pg)),
    E("pg", deferred_pg_ref, C(s_pg)),
    E("pg", deferred_pg_unref, C(s_pg)),
    E("pg", deferred_pg_close, C(s_pg)),
    E("pg", deferred_pg_is_open, C(s_pg)),
    E("pg", deferred_pg_conn, C(s_pg)),
    E("pg", deferred_pg_query_at, C(s_pg)),
    E("pg", deferred_pg_query, C(s_pg)),
    E("pg", deferred_pg_query_one_at, C(s_pg)),
    E("pg", deferred_pg_query_one, C(s_pg)),
    E("pg", deferred_pg_sqlstate, C(s_pg)),
    E("pg", deferred_pg_conninfo_check, C(s_pg)),
    E("pg", deferred_pg_condition_name, C(s_pg)),
    E("pg", deferred_pg_failure_sqlstate, C(s_pg)),
    E("pg", deferred_pg_set_pipeline, C(s_pg)),
    E("pg", deferred_pg_is_pipelined, C(s_pg)),
    E("pg", deferred_pg_in_flight, C(s_pg)),
    E("pg", deferred_pg_batch_begin, C(s_pg)),
    E("pg", deferred_pg_batch_end, C(s_pg)),
    E("pg", deferred_pg_cancel_all, C(s_pg)),
#endif
#ifdef SWEEP_HAVE_GLIB
    /* glib.h */
    E("glib", deferred_glib_loop_new, C(s_glib_loop_new)),
#endif
};
#define SWEEP_N (sizeof sweep_table / sizeof sweep_table[0])

/* ---- the table against the exported symbols ---- */

static const struct sweep_entry *sweep_find(const char *lib, const char *name)
{
    size_t i;

    for (i = 0; i < SWEEP_N; i++)
        if (strcmp(sweep_table[i].lib, lib) == 0 && strcmp(sweep_table[i].name, name) == 0)
            return &sweep_table[i];
    return NULL;
}

/* Checks one library; returns the number of problems, or -1 when the
 * shared library was not built. */
static int sweep_check_lib(const char *builddir, const char *nm, const char *lib)
{
    char path[4096], cmd[8192], line[512];
    char seen[SWEEP_N];
    int problems = 0;
    size_t i;
    FILE *fp;

    snprintf(path, sizeof path, "%s/lib/.libs/libdeferred%s%s.so", builddir,
             *lib ? "-" : "", lib);
    if (access(path, R_OK) != 0)
        return -1;
    /* NM may carry options ("nm -B"), as in t/check-exports.sh. */
    snprintf(cmd, sizeof cmd, "%s -D --defined-only '%s'", nm, path);
    fp = popen(cmd, "r");
    ck_assert_msg(fp != NULL, "cannot run %s", cmd);
    memset(seen, 0, sizeof seen);
    while (fgets(line, sizeof line, fp)) {
        char addr[64], type[8], name[256], *at;
        const struct sweep_entry *e;

        if (sscanf(line, "%63s %7s %255s", addr, type, name) != 3)
            continue;
        if (type[0] < 'A' || type[0] > 'Z' || type[1] != '\0')
            continue;
        if ((at = strchr(name, '@')) != NULL)
            *at = '\0';
        if (strncmp(name, "deferred_", 9) != 0)
            continue;
        e = sweep_find(lib, name);
        if (e == NULL) {
            fprintf(stderr, "sweep: %s exports %s, which has no entry in sweep_table "
                    "(add bad-input cases for it to t/test-sweep.c)\n", path, name);
            problems++;
        } else {
            seen[e - sweep_table] = 1;
        }
    }
    ck_assert_int_eq(pclose(fp), 0);
    for (i = 0; i < SWEEP_N; i++) {
        if (strcmp(sweep_table[i].lib, lib) == 0 && !seen[i]) {
            fprintf(stderr, "sweep: sweep_table names %s, which %s does not export\n",
                    sweep_table[i].name, path);
            problems++;
        }
    }
    return problems;
}

START_TEST(table_matches_exports)
{
    static const char *const libs[] = {
        "",
#ifdef SWEEP_HAVE_LIBEV
        "ev",
#endif
#ifdef SWEEP_HAVE_UV
        "uv",
#endif
#ifdef SWEEP_HAVE_SQLITE
        "sqlite",
#endif
#ifdef SWEEP_HAVE_PQ
        "pg",
#endif
#ifdef SWEEP_HAVE_GLIB
        "glib",
#endif
    };
    const char *builddir = getenv("top_builddir");
    const char *nm = getenv("NM");
    int problems = 0, checked = 0;
    size_t i, j;

    if (builddir == NULL || *builddir == '\0')
        builddir = SWEEP_BUILDDIR;
    if (nm == NULL || *nm == '\0')
        nm = "nm";
    /* Every entry names at least one case. */
    for (i = 0; i < SWEEP_N; i++)
        ck_assert_msg(sweep_table[i].cases[0] != NULL, "%s has no case", sweep_table[i].name);
    for (i = 0; i < SWEEP_N; i++)
        for (j = i + 1; j < SWEEP_N; j++)
            ck_assert_msg(strcmp(sweep_table[i].name, sweep_table[j].name) != 0,
                          "%s is in the table twice", sweep_table[i].name);
    for (i = 0; i < sizeof libs / sizeof libs[0]; i++) {
        int n = sweep_check_lib(builddir, nm, libs[i]);

        if (n < 0) {
            fprintf(stderr, "sweep: no shared libdeferred%s%s in %s/lib/.libs: not checked\n",
                    *libs[i] ? "-" : "", libs[i], builddir);
            continue;
        }
        checked++;
        problems += n;
    }
    ck_assert_msg(problems == 0, "%d mismatches between sweep_table and the exports",
                  problems);
    (void)checked;
}
END_TEST

/* ---- the suite, built from the table ---- */

static void sweep_setup(void)
{
    tu_setup();
    destroyed = 0;
}

static void add_cases(TCase *tc, const char *lib)
{
    const TTest *added[SWEEP_N * 6];
    size_t nadded = 0, i, j, k;

    for (i = 0; i < SWEEP_N; i++) {
        if (strcmp(sweep_table[i].lib, lib) != 0)
            continue;
        for (j = 0; j < 6 && sweep_table[i].cases[j]; j++) {
            const TTest *t = *sweep_table[i].cases[j];

            for (k = 0; k < nadded && added[k] != t; k++)
                ;
            if (k == nadded) {
                added[nadded++] = t;
                _tcase_add_test(tc, t, 0, 0, 0, 1);
            }
        }
    }
}

int main(void)
{
    Suite *s = suite_create("sweep");
    TCase *tc;

    tc = tcase_create("core");
    tcase_add_checked_fixture(tc, sweep_setup, tu_teardown);
    add_cases(tc, "");
    tcase_add_test(tc, table_matches_exports);
    suite_add_tcase(s, tc);
#ifdef SWEEP_HAVE_LIBEV
    tc = tcase_create("ev");
    tcase_add_checked_fixture(tc, sweep_setup, tu_teardown);
    add_cases(tc, "ev");
    suite_add_tcase(s, tc);
#endif
#ifdef SWEEP_HAVE_UV
    tc = tcase_create("uv");
    tcase_add_checked_fixture(tc, sweep_setup, tu_teardown);
    add_cases(tc, "uv");
    suite_add_tcase(s, tc);
#endif
#ifdef SWEEP_HAVE_SQLITE
    tc = tcase_create("sqlite");
    tcase_add_checked_fixture(tc, sweep_setup, tu_teardown);
    add_cases(tc, "sqlite");
    suite_add_tcase(s, tc);
#endif
#ifdef SWEEP_HAVE_PQ
    tc = tcase_create("pg");
    tcase_add_checked_fixture(tc, sweep_setup, tu_teardown);
    add_cases(tc, "pg");
    suite_add_tcase(s, tc);
#endif
#ifdef SWEEP_HAVE_GLIB
    tc = tcase_create("glib");
    tcase_add_checked_fixture(tc, sweep_setup, tu_teardown);
    add_cases(tc, "glib");
    suite_add_tcase(s, tc);
#endif
    return tu_run_suite(s);
}
