/*
 * test-core-report.c: the deferred core, reports and the API around the
 * chain: double fire (P15), unhandled failures (P21), the constructors,
 * result accessors, NULL arguments, library codes, the version, the
 * allocator, the default report hook and the debug sites.
 *
 * The tests named test_Pnn_... show the P scenarios of docs/scenarios.md;
 * the core's tests are split over t/test-core-chain.c,
 * t/test-core-pause-chaining.c, t/test-core-cancel.c and
 * t/test-core-report.c.  Every test runs inside the checked fixture of
 * testutil.c, whose teardown asserts that no block allocated through the
 * library's allocator is alive: each test also proves that nothing leaks.
 */
#include "core-util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A fire: kind 0 callback with a tracked value, 1 errback. */
static int fire_tracked(deferred_t *d, int kind, int x)
{
    if (kind == 0)
        return deferred_callback(d, tu_tracked(x));
    return deferred_errback(d, user_failure(x));
}

START_TEST(test_P15_double_fire)
{
    int first, second;

    for (first = 0; first < 2; first++) {
        for (second = 0; second < 2; second++) {
            deferred_t *d = deferred_new();
            size_t live;
            ck_assert_ptr_nonnull(d);
            tu_log_reset();
            tu_released = 0;
            ck_assert_int_eq(deferred_add_both(d, tu_record, TAG(1)), 0);
            ck_assert_int_eq(fire_tracked(d, first, 10), 0);
            live = tu_live();
            ck_assert_int_eq(fire_tracked(d, second, 20), -EALREADY);
            /* the second value was released, the first result stands */
            ck_assert_uint_eq(tu_live(), live);
            ck_assert_int_eq(tu_released, second == 0 ? 1 : 0);
            ck_assert_int_eq(tu_log.n, 1);
            if (first == 0) {
                deferred_value_t v = deferred_result(d);
                ck_assert(tu_is_tracked(v));
                ck_assert_int_eq(tu_tracked_get(v), 10);
            } else {
                ck_assert_int_eq(deferred_failure_code(deferred_value_get_failure(
                                     deferred_result(d))), 10);
                take_failure_code(d, 10);
            }
            deferred_unref(d);
            ck_assert_uint_eq(tu_live(), 0);
            /* debug mode is off: no report */
            ck_assert_int_eq(tu_reports.already_fired, 0);
            ck_assert_int_eq(tu_reports.total, 0);
        }
    }
}
END_TEST

START_TEST(test_P15_double_fire_debug_sites)
{
    int kind;

    deferred_set_debug(true);
    ck_assert(deferred_get_debug());
    for (kind = 0; kind < 4; kind++) {
        int line_new, line_fire, line_second, rc;
        deferred_t *d;

        memset(&tu_reports, 0, sizeof tu_reports);
        line_new = __LINE__; d = deferred_new();
        ck_assert_ptr_nonnull(d);
        if (kind < 2) {
            line_fire = __LINE__; rc = deferred_callback(d, deferred_value_int(1));
        } else {
            line_fire = __LINE__; rc = deferred_errback(d, user_failure(1));
        }
        ck_assert_int_eq(rc, 0);
        if (kind % 2 == 0) {
            line_second = __LINE__; rc = deferred_callback(d, tu_tracked(2));
        } else {
            line_second = __LINE__; rc = deferred_errback(d, user_failure(2));
        }
        ck_assert_int_eq(rc, -EALREADY);
        ck_assert_int_eq(tu_reports.already_fired, 1);
        ck_assert_int_eq(tu_reports.total, 1);
        ck_assert_int_eq(tu_reports.last_kind, DEFERRED_REPORT_ALREADY_FIRED);
        ck_assert_msg(strstr(tu_reports.last_message, "test-core-report.c") != NULL,
                      "message lacks the file name: %s", tu_reports.last_message);
        ck_assert_msg(tu_contains_number(tu_reports.last_message, line_new),
                      "message lacks creation line %d: %s", line_new,
                      tu_reports.last_message);
        ck_assert_msg(tu_contains_number(tu_reports.last_message, line_fire),
                      "message lacks first fire line %d: %s", line_fire,
                      tu_reports.last_message);
        ck_assert_msg(tu_contains_number(tu_reports.last_message, line_second),
                      "message lacks second fire line %d: %s", line_second,
                      tu_reports.last_message);
        if (kind >= 2)
            take_failure_code(d, 1);
        else
            ck_assert_int_eq(result_int(d), 1);
        deferred_unref(d);
        ck_assert_uint_eq(tu_live(), 0);
    }
    deferred_set_debug(false);
    ck_assert(!deferred_get_debug());
}
END_TEST

START_TEST(test_P21_unhandled_reported_once)
{
    deferred_t *d = deferred_new();
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_add_callback(d, tu_fail_with, TAG(7)), 0);
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(1)), 0);
    ck_assert_ptr_eq(deferred_ref(d), d);
    deferred_unref(d);
    ck_assert_int_eq(tu_reports.total, 0);
    deferred_unref(d);
    ck_assert_int_eq(tu_reports.total, 1);
    ck_assert_int_eq(tu_reports.unhandled, 1);
    ck_assert_int_eq(tu_reports.last_kind, DEFERRED_REPORT_UNHANDLED);
    ck_assert_int_eq(tu_reports.last_code, 7);
    ck_assert_str_eq(tu_reports.last_message, "fail_with 7");
    ck_assert_msg(strstr(tu_reports.last_story, "fail_with 7") != NULL,
                  "story: %s", tu_reports.last_story);
    ck_assert_msg(strstr(tu_reports.last_story, "testutil.c") != NULL,
                  "story lacks the site: %s", tu_reports.last_story);
}
END_TEST

START_TEST(test_P21_handled_not_reported)
{
    deferred_t *a = deferred_new(), *b = deferred_new(), *c = deferred_new();
    deferred_t *outer = deferred_new(), *inner = deferred_new();
    deferred_t *outer2 = deferred_new(), *inner2 = deferred_new();
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(inner2);

    /* an errback handled it */
    ck_assert_int_eq(deferred_errback(a, user_failure(1)), 0);
    ck_assert_int_eq(deferred_add_errback(a, tu_recover, TAG(0)), 0);
    deferred_unref(a);

    /* taken with result_take */
    ck_assert_int_eq(deferred_errback(b, user_failure(2)), 0);
    take_failure_code(b, 2);
    deferred_unref(b);

    /* errback added after the fire, passing to a callback that is skipped
     * and then an errback that recovers */
    ck_assert_int_eq(deferred_errback(c, user_failure(3)), 0);
    ck_assert_int_eq(deferred_add_callback(c, tu_add_one, NULL), 0);
    ck_assert_int_eq(deferred_add_errback(c, tu_record, TAG(1)), 0);
    ck_assert_int_eq(deferred_add_errback(c, tu_recover, TAG(0)), 0);
    deferred_unref(c);

    /* moved to a chained deferred, synchronously */
    ck_assert_int_eq(deferred_errback(inner, user_failure(4)), 0);
    ck_assert_int_eq(deferred_add_callback(outer, tu_return_deferred, inner), 0);
    ck_assert_int_eq(deferred_add_errback(outer, tu_record, TAG(2)), 0);
    ck_assert_int_eq(deferred_add_errback(outer, tu_recover, TAG(0)), 0);
    ck_assert_int_eq(deferred_callback(outer, deferred_value_int(0)), 0);
    ck_assert(deferred_value_is_none(deferred_result(inner)));
    deferred_unref(inner);
    deferred_unref(outer);

    /* moved to a chained deferred, asynchronously */
    ck_assert_int_eq(deferred_add_callback(outer2, tu_return_deferred, inner2), 0);
    ck_assert_int_eq(deferred_add_errback(outer2, tu_record, TAG(3)), 0);
    ck_assert_int_eq(deferred_add_errback(outer2, tu_recover, TAG(0)), 0);
    ck_assert_int_eq(deferred_callback(outer2, deferred_value_int(0)), 0);
    ck_assert_int_eq(deferred_errback(inner2, user_failure(5)), 0);
    ck_assert(deferred_value_is_none(deferred_result(inner2)));
    deferred_unref(inner2);
    deferred_unref(outer2);

    ck_assert_int_eq(tu_log.n, 3);
    ck_assert_int_eq(tu_log.e[0].code, 3);
    ck_assert_int_eq(tu_log.e[1].code, 4);
    ck_assert_int_eq(tu_log.e[2].code, 5);
    ck_assert_int_eq(tu_reports.total, 0);
}
END_TEST

/* The failure moved to a chained outer that does not handle it: reported
 * once, for the outer, never for the inner. */
START_TEST(test_unhandled_moved_reported_once_for_outer)
{
    deferred_t *outer = deferred_new(), *inner = deferred_new();
    ck_assert_ptr_nonnull(outer);
    ck_assert_ptr_nonnull(inner);
    ck_assert_int_eq(deferred_add_callback(outer, tu_return_deferred, inner), 0);
    ck_assert_int_eq(deferred_callback(outer, deferred_value_int(0)), 0);
    ck_assert_int_eq(deferred_errback(inner, user_failure(6)), 0);
    deferred_unref(inner);
    ck_assert_int_eq(tu_reports.total, 0);
    deferred_unref(outer);
    ck_assert_int_eq(tu_reports.unhandled, 1);
    ck_assert_int_eq(tu_reports.total, 1);
    ck_assert_int_eq(tu_reports.last_code, 6);
}
END_TEST

/* A failure moved with chain_to is the target's, not the source's. */
START_TEST(test_unhandled_chain_to_moves_failure)
{
    deferred_t *d = deferred_new(), *t = deferred_new();
    ck_assert_ptr_nonnull(d);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(deferred_chain_to(d, t), 0);
    ck_assert_int_eq(deferred_errback(d, user_failure(8)), 0);
    ck_assert(deferred_value_is_none(deferred_result(d)));
    deferred_unref(d);
    ck_assert_int_eq(tu_reports.total, 0);
    deferred_unref(t);
    ck_assert_int_eq(tu_reports.unhandled, 1);
    ck_assert_int_eq(tu_reports.last_code, 8);
}
END_TEST

/* deferred_fail() dropped unhandled: reported once; succeed(): never. */
START_TEST(test_unhandled_fail_constructor)
{
    deferred_t *d = deferred_fail(user_failure(12));
    ck_assert_ptr_nonnull(d);
    deferred_unref(d);
    ck_assert_int_eq(tu_reports.unhandled, 1);
    ck_assert_int_eq(tu_reports.last_code, 12);
    d = deferred_succeed(deferred_value_int(1));
    ck_assert_ptr_nonnull(d);
    deferred_unref(d);
    ck_assert_int_eq(tu_reports.total, 1);
}
END_TEST

START_TEST(test_succeed_fail_constructors)
{
    deferred_t *s = deferred_succeed(tu_tracked(4));
    deferred_t *f;
    ck_assert_ptr_nonnull(s);
    ck_assert(deferred_has_fired(s));
    ck_assert(deferred_has_result(s));
    ck_assert(tu_is_tracked(deferred_result(s)));
    ck_assert_int_eq(deferred_add_callback(s, tu_add_one, NULL), 0);
    ck_assert_int_eq(result_int(s), 5);
    ck_assert_int_eq(tu_released, 1);
    ck_assert_int_eq(deferred_callback(s, deferred_value_int(1)), -EALREADY);
    deferred_unref(s);

    f = deferred_fail(user_failure(3));
    ck_assert_ptr_nonnull(f);
    ck_assert(deferred_has_fired(f));
    ck_assert(deferred_has_result(f));
    ck_assert(deferred_value_is_failure(deferred_result(f)));
    ck_assert_int_eq(deferred_add_errback(f, tu_record, TAG(1)), 0);
    ck_assert_int_eq(tu_log.e[0].code, 3);
    ck_assert_int_eq(deferred_errback(f, user_failure(5)), -EALREADY);
    take_failure_code(f, 3);
    deferred_unref(f);

    /* allocation failure: NULL, the value or failure released */
    tu_released = 0;
    {
        deferred_value_t v = tu_tracked(9);
        deferred_failure_t *ff = user_failure(9);
        tu_fail_from(1);
        ck_assert_ptr_null(deferred_succeed(v));
        ck_assert_ptr_null(deferred_fail(ff));
        tu_fail_at(0);
        ck_assert_int_eq(tu_released, 1);
    }
    ck_assert_int_eq(tu_reports.total, 0);
}
END_TEST

START_TEST(test_result_accessors)
{
    deferred_t *d = deferred_new();
    deferred_value_t v;
    ck_assert_ptr_nonnull(d);
    ck_assert(!deferred_has_fired(d));
    ck_assert(!deferred_has_result(d));
    ck_assert(!deferred_is_paused(d));
    ck_assert(deferred_value_is_none(deferred_result(d)));
    ck_assert(deferred_value_is_none(deferred_result_take(d)));
    ck_assert(deferred_value_is_none(deferred_result_take(NULL)));
    ck_assert_int_eq(deferred_callback(d, tu_tracked(3)), 0);
    ck_assert(deferred_has_fired(d));
    ck_assert(deferred_has_result(d));
    v = deferred_result(d);
    ck_assert(tu_is_tracked(v));
    ck_assert_int_eq(tu_tracked_get(v), 3);
    /* borrowed: still there */
    ck_assert(tu_is_tracked(deferred_result(d)));
    v = deferred_result_take(d);
    ck_assert(tu_is_tracked(v));
    ck_assert(deferred_value_is_none(deferred_result(d)));
    ck_assert(deferred_has_result(d));
    ck_assert_int_eq(tu_released, 0);
    deferred_value_release(v);
    ck_assert_int_eq(tu_released, 1);
    /* a callback added after the take sees the empty value */
    ck_assert_int_eq(deferred_add_callback(d, tu_record, TAG(1)), 0);
    ck_assert_int_eq(tu_log.e[0].kind, TU_NONE);
    /* pending callback while paused: no result */
    ck_assert_int_eq(deferred_pause(d), 0);
    ck_assert_int_eq(deferred_add_callback(d, tu_return_int, TAG(8)), 0);
    ck_assert(!deferred_has_result(d));
    ck_assert(deferred_has_fired(d));
    ck_assert_int_eq(deferred_unpause(d), 0);
    ck_assert(deferred_has_result(d));
    ck_assert_int_eq(result_int(d), 8);
    deferred_unref(d);
}
END_TEST

START_TEST(test_final_value_released_on_free)
{
    deferred_t *d = deferred_new();
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_callback(d, tu_tracked(1)), 0);
    ck_assert_int_eq(tu_released, 0);
    deferred_unref(d);
    ck_assert_int_eq(tu_released, 1);
}
END_TEST

static void drop_value(void *p)
{
    (void)p;
    tu_released++;
}

START_TEST(test_null_arguments)
{
    size_t live;
    deferred_t *d = deferred_new();
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_add_callbacks(NULL, tu_pass, NULL, tu_pass, NULL), -EINVAL);
    ck_assert_int_eq(deferred_add_callback(NULL, tu_pass, NULL), -EINVAL);
    ck_assert_int_eq(deferred_add_errback(NULL, tu_pass, NULL), -EINVAL);
    ck_assert_int_eq(deferred_add_both(NULL, tu_pass, NULL), -EINVAL);
    ck_assert_int_eq(deferred_add_callback(d, NULL, NULL), -EINVAL);
    ck_assert_int_eq(deferred_add_errback(d, NULL, NULL), -EINVAL);
    ck_assert_int_eq(deferred_add_both(d, NULL, NULL), -EINVAL);
    ck_assert_int_eq(deferred_pause(NULL), -EINVAL);
    ck_assert_int_eq(deferred_unpause(NULL), -EINVAL);
    ck_assert_int_eq(deferred_cancel(NULL), -EINVAL);
    ck_assert_ptr_null(deferred_ref(NULL));
    deferred_unref(NULL);
    /* values given to failing calls are released */
    ck_assert_int_eq(deferred_callback(NULL, tu_tracked(1)), -EINVAL);
    ck_assert_int_eq(tu_released, 1);
    ck_assert_int_eq(deferred_callback(NULL, deferred_value_make(d, drop_value)),
                     -EINVAL);
    ck_assert_int_eq(tu_released, 2);
    live = tu_live();
    ck_assert_int_eq(deferred_errback(NULL, user_failure(1)), -EINVAL);
    ck_assert_uint_eq(tu_live(), live); /* the failure was released */
    ck_assert_int_eq(deferred_errback(d, NULL), -EINVAL);
    ck_assert(!deferred_has_fired(d));
    /* d still works */
    ck_assert_int_eq(deferred_callback(d, deferred_value_int(1)), 0);
    ck_assert_int_eq(result_int(d), 1);
    deferred_unref(d);
}
END_TEST

START_TEST(test_library_codes)
{
    ck_assert_str_eq(deferred_err_name(ECANCELED), "ECANCELED");
    ck_assert_str_eq(deferred_err_name(-ECANCELED), "ECANCELED");
    ck_assert_str_eq(deferred_err_name(ENOMEM), "ENOMEM");
    ck_assert_str_eq(deferred_err_name(-EALREADY), "EALREADY");
    ck_assert_str_eq(deferred_err_name(ETIMEDOUT), "ETIMEDOUT");
    ck_assert_str_eq(deferred_err_name(EDEADLK), "EDEADLK");
    ck_assert_str_eq(deferred_err_name(EINVAL), "EINVAL");
    ck_assert_ptr_nonnull(strstr(deferred_err_name(DEFERRED_EFIRSTERROR), "EFIRSTERROR"));
    ck_assert_ptr_nonnull(strstr(deferred_err_name(-DEFERRED_EFIRSTERROR), "EFIRSTERROR"));
    ck_assert_ptr_nonnull(strstr(deferred_err_name(DEFERRED_EGROUP), "EGROUP"));
    ck_assert_str_eq(deferred_err_name(987654), "EUNKNOWN");
    ck_assert_str_eq(deferred_err_name(-987654), "EUNKNOWN");

    ck_assert_ptr_nonnull(deferred_strerror(ECANCELED));
    ck_assert_uint_gt(strlen(deferred_strerror(ECANCELED)), 0);
    ck_assert_str_eq(deferred_strerror(ECANCELED), deferred_strerror(-ECANCELED));
    ck_assert_uint_gt(strlen(deferred_strerror(DEFERRED_EFIRSTERROR)), 0);
    ck_assert_str_eq(deferred_strerror(DEFERRED_EFIRSTERROR),
                     deferred_strerror(-DEFERRED_EFIRSTERROR));
    ck_assert_msg(strncmp(deferred_strerror(DEFERRED_EFIRSTERROR), "Unknown", 7) != 0,
                  "EFIRSTERROR has no message of its own: %s",
                  deferred_strerror(DEFERRED_EFIRSTERROR));
    ck_assert_str_ne(deferred_strerror(DEFERRED_EFIRSTERROR),
                     deferred_strerror(DEFERRED_EGROUP));
    /* A code outside the table gets a static text of its own. */
    ck_assert_str_eq(deferred_strerror(987654), "unknown error");
    ck_assert_str_eq(deferred_err_name(987654), "EUNKNOWN");
    ck_assert_ptr_nonnull(deferred_strerror(-987654));
    ck_assert_uint_gt(strlen(deferred_strerror(-987654)), 0);
    ck_assert_str_eq(deferred_version(), DEFERRED_VERSION_STRING);
}
END_TEST

/* The numeric version, at compile time and at run time. */
#if !DEFERRED_CHECK_VERSION(0, 1, 0) || DEFERRED_CHECK_VERSION(99, 0, 0)
#error "DEFERRED_CHECK_VERSION is wrong"
#endif
START_TEST(test_version_number)
{
    char s[32];

    ck_assert_uint_eq(deferred_version_number(), DEFERRED_VERSION_NUMBER);
    snprintf(s, sizeof s, "%lu.%lu.%lu", deferred_version_number() >> 16,
             (deferred_version_number() >> 8) & 0xff,
             deferred_version_number() & 0xff);
    ck_assert_str_eq(s, deferred_version());
    ck_assert(DEFERRED_CHECK_VERSION(DEFERRED_VERSION_MAJOR, DEFERRED_VERSION_MINOR,
                                     DEFERRED_VERSION_PATCH));
    ck_assert(!DEFERRED_CHECK_VERSION(DEFERRED_VERSION_MAJOR, DEFERRED_VERSION_MINOR,
                                      DEFERRED_VERSION_PATCH + 1));
}
END_TEST

START_TEST(test_set_allocator_partial_einval)
{
    deferred_failure_t *f;
    ck_assert_int_eq(deferred_set_allocator(malloc, NULL, free), -EINVAL);
    ck_assert_int_eq(deferred_set_allocator(NULL, realloc, NULL), -EINVAL);
    /* the counting allocator is still the one in use */
    f = user_failure(1);
    ck_assert_uint_gt(tu_live(), 0);
    deferred_failure_unref(f);
    ck_assert_uint_eq(tu_live(), 0);
}
END_TEST

/* Capture what is written to stderr between stderr_begin() and
 * stderr_end(), which returns it NUL-terminated in out (its length). */
struct stderr_capture {
    int fds[2];

    int saved;
};

static void stderr_begin(struct stderr_capture *c)
{
    ck_assert_int_eq(pipe(c->fds), 0);
    fflush(stderr);
    c->saved = dup(2);
    dup2(c->fds[1], 2);
}

static ssize_t stderr_end(struct stderr_capture *c, char *out, size_t size)
{
    ssize_t n;

    fflush(stderr);
    dup2(c->saved, 2);
    close(c->saved);
    close(c->fds[1]);
    n = read(c->fds[0], out, size - 1);
    close(c->fds[0]);
    ck_assert_int_gt(n, 0);
    out[n] = '\0';
    return n;
}

/* The default report hook writes one line to stderr, the whole story on it. */
START_TEST(test_default_hook_one_line)
{
    struct stderr_capture cap;
    char out[2048];
    ssize_t n;
    deferred_t *d = deferred_new();
    deferred_failure_t *f = deferred_failure_new(DEFERRED_DOMAIN_USER, 3, "bad row");

    deferred_failure_add_context(f, "stage one", "item %d", 4);
    stderr_begin(&cap);
    deferred_set_report_hook(NULL, NULL);
    deferred_errback(d, deferred_failure_wrap(f, DEFERRED_DOMAIN_LIBRARY, EIO, "outer"));
    deferred_unref(d);
    n = stderr_end(&cap, out, sizeof out);
    ck_assert_ptr_nonnull(strstr(out, "unhandled failure"));
    ck_assert_ptr_nonnull(strstr(out, "outer"));
    ck_assert_ptr_nonnull(strstr(out, "bad row"));
    ck_assert_ptr_nonnull(strstr(out, "in stage one: item 4"));
    ck_assert_ptr_eq(strchr(out, '\n'), out + n - 1); /* one line */
}
END_TEST

/* Debug mode: the unhandled-failure report names the deferred's creation
 * and fire sites, through the hook and in the default hook's line. */
START_TEST(test_debug_report_sites)
{
    struct stderr_capture cap;
    int made, fired;
    char out[2048], want[64];
    deferred_t *d;

    deferred_set_debug(true);
    made = __LINE__ + 1;
    d = deferred_new();
    fired = __LINE__ + 1;
    deferred_errback(d, deferred_failure_new(DEFERRED_DOMAIN_USER, 3, "lost"));
    deferred_unref(d);
    ck_assert_int_eq(tu_reports.unhandled, 1);
    ck_assert_ptr_nonnull(tu_reports.last_new_file);
    ck_assert_ptr_nonnull(strstr(tu_reports.last_new_file, "test-core-report.c"));
    ck_assert_int_eq(tu_reports.last_new_line, made);
    ck_assert_ptr_nonnull(strstr(tu_reports.last_fire_file, "test-core-report.c"));
    ck_assert_int_eq(tu_reports.last_fire_line, fired);

    /* the default hook says it too */
    stderr_begin(&cap);
    deferred_set_report_hook(NULL, NULL);
    made = __LINE__ + 1;
    d = deferred_new();
    fired = __LINE__ + 1;
    deferred_errback(d, deferred_failure_new(DEFERRED_DOMAIN_USER, 3, "lost"));
    deferred_unref(d);
    stderr_end(&cap, out, sizeof out);
    snprintf(want, sizeof want, "test-core-report.c:%d, fired at", made);
    ck_assert_ptr_nonnull(strstr(out, want));
    snprintf(want, sizeof want, "test-core-report.c:%d)", fired);
    ck_assert_ptr_nonnull(strstr(out, want));

    /* without debug mode there are no sites */
    deferred_set_report_hook(tu_report_hook, NULL);
    deferred_set_debug(false);
    d = deferred_fail(deferred_failure_new(DEFERRED_DOMAIN_USER, 3, "lost"));
    deferred_unref(d);
    ck_assert_int_eq(tu_reports.unhandled, 2);
    ck_assert_ptr_null(tu_reports.last_new_file);
    ck_assert_ptr_null(tu_reports.last_fire_file);
}
END_TEST

/* maybeDeferred: a value, a failure or a deferred comes back as a
 * deferred. */
START_TEST(test_maybe)
{
    deferred_t *d, *inner = deferred_new();

    d = deferred_maybe(tu_add_one, deferred_value_int(41), NULL);
    ck_assert(deferred_has_result(d));
    ck_assert_int_eq(deferred_value_get_int(deferred_result(d)), 42);
    deferred_unref(d);
    d = deferred_maybe(tu_fail_with, deferred_value_int(0), TAG(9));
    ck_assert(deferred_value_is_failure(deferred_result(d)));
    ck_assert_int_eq(deferred_failure_code(deferred_value_get_failure(deferred_result(d))), 9);
    deferred_value_release(deferred_result_take(d));
    deferred_unref(d);
    d = deferred_maybe(tu_return_deferred, deferred_value_none(), inner);
    ck_assert_ptr_eq(d, inner);
    deferred_unref(d);
    errno = 0;
    ck_assert_ptr_null(deferred_maybe(NULL, tu_tracked(1), NULL));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(tu_released, 1);
    {
        deferred_value_t v = tu_tracked(2);

        tu_fail_at(1);
        ck_assert_ptr_null(deferred_maybe(tu_pass, v, NULL));
    }
    ck_assert_int_eq(errno, ENOMEM);
    ck_assert_int_eq(tu_released, 2);
    deferred_unref(inner);
}
END_TEST

/* Integers are not "none": 0 travels as 0. */
START_TEST(test_int_zero_is_not_none)
{
    deferred_t *d = deferred_new();

    deferred_add_callback(d, tu_record, TAG(1));
    deferred_callback(d, deferred_value_int(0));
    ck_assert_int_eq(tu_log.e[0].kind, TU_VALUE);
    ck_assert(deferred_value_is_int(deferred_result(d)));
    ck_assert(!deferred_value_is_none(deferred_result(d)));
    ck_assert_int_eq(deferred_value_get_int(deferred_result(d)), 0);
    deferred_unref(d);
}
END_TEST

static Suite *core_suite(void)
{
    Suite *s = suite_create("core-report");
    TCase *tc = tcase_create("P");
    TCase *rn = tcase_create("runner");

    tcase_add_checked_fixture(tc, tu_setup, tu_teardown);
    tcase_add_checked_fixture(rn, tu_setup, tu_teardown);

    tcase_add_test(tc, test_P15_double_fire);
    tcase_add_test(tc, test_P15_double_fire_debug_sites);
    tcase_add_test(tc, test_P21_unhandled_reported_once);
    tcase_add_test(tc, test_P21_handled_not_reported);
    tcase_add_test(rn, test_unhandled_moved_reported_once_for_outer);
    tcase_add_test(rn, test_unhandled_chain_to_moves_failure);
    tcase_add_test(rn, test_unhandled_fail_constructor);
    tcase_add_test(rn, test_succeed_fail_constructors);
    tcase_add_test(rn, test_result_accessors);
    tcase_add_test(rn, test_final_value_released_on_free);
    tcase_add_test(rn, test_null_arguments);
    tcase_add_test(rn, test_library_codes);
    tcase_add_test(rn, test_default_hook_one_line);
    tcase_add_test(rn, test_version_number);
    tcase_add_test(rn, test_debug_report_sites);
    tcase_add_test(rn, test_maybe);
    tcase_add_test(rn, test_int_zero_is_not_none);
    tcase_add_test(rn, test_set_allocator_partial_einval);

    suite_add_tcase(s, tc);
    suite_add_tcase(s, rn);
    return s;
}

int main(void)
{
    return tu_run_suite(core_suite());
}
