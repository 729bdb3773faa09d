/*
 * test-failure.c: failures (deferred/failure.h) and values
 * (deferred/value.h): construction, domains, wrapping and matching,
 * composite failures, context frames, the rendered story with its
 * snprintf semantics, the static ENOMEM failure, the value helpers, and
 * NULL arguments.  Teardown asserts that nothing allocated is alive.
 */
#include "testutil.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool has(const char *hay, const char *needle)
{
    return hay && strstr(hay, needle) != NULL;
}

START_TEST(test_failure_new_with_format)
{
    int line = __LINE__; deferred_failure_t *f = deferred_failure_new(DEFERRED_DOMAIN_USER, 42, "bad %d of %s", 7, "x");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(deferred_failure_code(f), 42);
    ck_assert_int_eq(deferred_failure_domain(f), DEFERRED_DOMAIN_USER);
    ck_assert_str_eq(deferred_failure_message(f), "bad 7 of x");
    ck_assert_ptr_null(deferred_failure_cause(f));
    ck_assert_str_eq(deferred_failure_file(f), __FILE__);
    ck_assert_int_eq(deferred_failure_line(f), line);
    ck_assert_int_eq(deferred_failure_index(f), -1);
    ck_assert_uint_eq(deferred_failure_group_size(f), 0);
    ck_assert_ptr_null(deferred_failure_group_get(f, 0));
    ck_assert_uint_eq(deferred_failure_context_size(f), 0);
    ck_assert_ptr_null(deferred_failure_context_stage(f, 0));
    ck_assert_ptr_null(deferred_failure_context_item(f, 0));
    ck_assert_uint_gt(tu_live(), 0);
    deferred_failure_unref(f);
}
END_TEST

START_TEST(test_failure_message_defaults)
{
    deferred_failure_t *lib = deferred_failure_new(DEFERRED_DOMAIN_LIBRARY, ECANCELED, NULL);
    deferred_failure_t *lib2 = deferred_failure_new(DEFERRED_DOMAIN_LIBRARY,
                                                    DEFERRED_EFIRSTERROR, NULL);
    deferred_failure_t *sys = deferred_failure_new(DEFERRED_DOMAIN_SYSTEM, EIO, NULL);
    deferred_failure_t *usr = deferred_failure_new(DEFERRED_DOMAIN_USER, 4711, NULL);
    deferred_failure_t *sq = deferred_failure_new(DEFERRED_DOMAIN_SQLITE, 19, NULL);
    char buf[256];

    ck_assert_str_eq(deferred_failure_message(lib), deferred_strerror(ECANCELED));
    ck_assert_str_eq(deferred_failure_message(lib2),
                     deferred_strerror(DEFERRED_EFIRSTERROR));
    ck_assert(tu_contains_number(deferred_failure_message(usr), 4711));
    ck_assert(tu_contains_number(deferred_failure_message(sq), 19));
    ck_assert_int_eq(deferred_failure_domain(sys), DEFERRED_DOMAIN_SYSTEM);
    ck_assert_int_eq(deferred_failure_domain(sq), DEFERRED_DOMAIN_SQLITE);
    snprintf(buf, sizeof buf, "%s", deferred_failure_message(sys));
    deferred_failure_unref(lib);
    deferred_failure_unref(lib2);
    deferred_failure_unref(sys);
    deferred_failure_unref(usr);
    deferred_failure_unref(sq);
    /* the system domain's default message is strerror()'s text */
    ck_assert_str_eq(buf, strerror(EIO));
}
END_TEST

static deferred_failure_t *newv_helper(int line, int code, const char *fmt, ...)
{
    deferred_failure_t *f;
    va_list ap;

    va_start(ap, fmt);
    f = deferred_failure_newv_at("somewhere.c", line, DEFERRED_DOMAIN_POSTGRES,
                                 code, fmt, ap);
    va_end(ap);
    return f;
}

START_TEST(test_failure_newv_at)
{
    deferred_failure_t *f = newv_helper(12, 3, "pg %s %d", "said", 5);
    ck_assert_str_eq(deferred_failure_message(f), "pg said 5");
    ck_assert_str_eq(deferred_failure_file(f), "somewhere.c");
    ck_assert_int_eq(deferred_failure_line(f), 12);
    ck_assert_int_eq(deferred_failure_domain(f), DEFERRED_DOMAIN_POSTGRES);
    ck_assert_int_eq(deferred_failure_code(f), 3);
    deferred_failure_unref(f);
}
END_TEST

START_TEST(test_domain_names)
{
    ck_assert_str_eq(deferred_domain_name(DEFERRED_DOMAIN_LIBRARY), "library");
    ck_assert_str_eq(deferred_domain_name(DEFERRED_DOMAIN_SYSTEM), "system");
    ck_assert_str_eq(deferred_domain_name(DEFERRED_DOMAIN_SQLITE), "sqlite");
    ck_assert_str_eq(deferred_domain_name(DEFERRED_DOMAIN_POSTGRES), "postgres");
    ck_assert_str_eq(deferred_domain_name(DEFERRED_DOMAIN_USER), "user");
    ck_assert_ptr_nonnull(deferred_domain_name(DEFERRED_DOMAIN_ANY));
    ck_assert_ptr_nonnull(deferred_domain_name((deferred_domain_t)99));
}
END_TEST

START_TEST(test_failure_refcount)
{
    deferred_failure_t *f = deferred_failure_new(DEFERRED_DOMAIN_USER, 1, "x");
    ck_assert_ptr_eq(deferred_failure_ref(f), f);
    deferred_failure_unref(f);
    ck_assert_int_eq(deferred_failure_code(f), 1);
    ck_assert_uint_gt(tu_live(), 0);
    deferred_failure_unref(f);
    ck_assert_uint_eq(tu_live(), 0);
    ck_assert_ptr_null(deferred_failure_ref(NULL));
    deferred_failure_unref(NULL);
}
END_TEST

START_TEST(test_wrap_cause_find_is)
{
    deferred_failure_t *inner = deferred_failure_new(DEFERRED_DOMAIN_SYSTEM, EIO, "read failed");
    deferred_failure_t *mid = deferred_failure_wrap(inner, DEFERRED_DOMAIN_USER, 2, "mid %d", 2);
    int line = __LINE__; deferred_failure_t *top = deferred_failure_wrap(mid, DEFERRED_DOMAIN_LIBRARY, ETIMEDOUT, NULL);

    ck_assert_ptr_eq(deferred_failure_cause(top), mid);
    ck_assert_ptr_eq(deferred_failure_cause(mid), inner);
    ck_assert_ptr_null(deferred_failure_cause(inner));
    ck_assert_int_eq(deferred_failure_line(top), line);
    ck_assert_str_eq(deferred_failure_file(top), __FILE__);
    ck_assert_str_eq(deferred_failure_message(mid), "mid 2");
    ck_assert_str_eq(deferred_failure_message(top), deferred_strerror(ETIMEDOUT));

    ck_assert(deferred_failure_is(top, DEFERRED_DOMAIN_LIBRARY, ETIMEDOUT));
    ck_assert(deferred_failure_is(top, DEFERRED_DOMAIN_ANY, ETIMEDOUT));
    ck_assert(!deferred_failure_is(top, DEFERRED_DOMAIN_SYSTEM, ETIMEDOUT));
    ck_assert(!deferred_failure_is(top, DEFERRED_DOMAIN_ANY, EIO)); /* f itself only */
    ck_assert(!deferred_failure_is(NULL, DEFERRED_DOMAIN_ANY, 0));

    ck_assert_ptr_eq(deferred_failure_find(top, DEFERRED_DOMAIN_SYSTEM, EIO), inner);
    ck_assert_ptr_eq(deferred_failure_find(top, DEFERRED_DOMAIN_ANY, EIO), inner);
    ck_assert_ptr_eq(deferred_failure_find(top, DEFERRED_DOMAIN_USER, 2), mid);
    ck_assert_ptr_eq(deferred_failure_find(top, DEFERRED_DOMAIN_ANY, ETIMEDOUT), top);
    ck_assert_ptr_null(deferred_failure_find(top, DEFERRED_DOMAIN_USER, EIO));
    ck_assert_ptr_null(deferred_failure_find(top, DEFERRED_DOMAIN_ANY, 12345));
    ck_assert_ptr_null(deferred_failure_find(mid, DEFERRED_DOMAIN_ANY, ETIMEDOUT));
    ck_assert_ptr_null(deferred_failure_find(NULL, DEFERRED_DOMAIN_ANY, EIO));

    /* wrap took the causes: dropping top frees all three */
    deferred_failure_unref(top);
    ck_assert_uint_eq(tu_live(), 0);

    /* a NULL cause means no cause */
    top = deferred_failure_wrap(NULL, DEFERRED_DOMAIN_USER, 1, "alone");
    ck_assert_ptr_null(deferred_failure_cause(top));
    deferred_failure_unref(top);
}
END_TEST

/* A shared cause stays alive while another holder has it. */
START_TEST(test_wrap_shared_cause)
{
    deferred_failure_t *cause = deferred_failure_new(DEFERRED_DOMAIN_USER, 1, "cause");
    deferred_failure_t *a = deferred_failure_wrap(deferred_failure_ref(cause),
                                                  DEFERRED_DOMAIN_USER, 2, "a");
    deferred_failure_t *b = deferred_failure_wrap(cause, DEFERRED_DOMAIN_USER, 3, "b");
    deferred_failure_unref(a);
    ck_assert_str_eq(deferred_failure_message(deferred_failure_cause(b)), "cause");
    deferred_failure_unref(b);
}
END_TEST

START_TEST(test_first_error)
{
    deferred_failure_t *cause = deferred_failure_new(DEFERRED_DOMAIN_USER, 5, "input broke");
    deferred_failure_t *f = deferred_failure_first_error(3, cause);
    char story[1024];

    ck_assert_int_eq(deferred_failure_code(f), DEFERRED_EFIRSTERROR);
    ck_assert_int_eq(deferred_failure_domain(f), DEFERRED_DOMAIN_LIBRARY);
    ck_assert_int_eq(deferred_failure_index(f), 3);
    ck_assert_ptr_eq(deferred_failure_cause(f), cause);
    ck_assert(tu_contains_number(deferred_failure_message(f), 3));
    ck_assert_msg(has(deferred_failure_message(f), "input broke"),
                  "message: %s", deferred_failure_message(f));
    ck_assert(deferred_failure_is(f, DEFERRED_DOMAIN_LIBRARY, DEFERRED_EFIRSTERROR));
    ck_assert_ptr_eq(deferred_failure_find(f, DEFERRED_DOMAIN_USER, 5), cause);
    ck_assert_int_gt(deferred_failure_story(f, story, sizeof story), 0);
    ck_assert(has(story, "input broke"));
    ck_assert_int_eq(deferred_failure_index(cause), -1);
    deferred_failure_unref(f);
}
END_TEST

START_TEST(test_group)
{
    deferred_failure_t *members[3];
    deferred_failure_t *g;
    char story[2048];

    members[0] = deferred_failure_new(DEFERRED_DOMAIN_USER, 10, "member zero");
    members[1] = NULL;
    members[2] = deferred_failure_new(DEFERRED_DOMAIN_SYSTEM, EIO, "member two");
    g = deferred_failure_group(members, 3);
    ck_assert_int_eq(deferred_failure_code(g), DEFERRED_EGROUP);
    ck_assert_int_eq(deferred_failure_domain(g), DEFERRED_DOMAIN_LIBRARY);
    ck_assert_uint_eq(deferred_failure_group_size(g), 3);
    ck_assert_ptr_eq(deferred_failure_group_get(g, 0), members[0]);
    ck_assert_ptr_null(deferred_failure_group_get(g, 1));
    ck_assert_ptr_eq(deferred_failure_group_get(g, 2), members[2]);
    ck_assert_ptr_null(deferred_failure_group_get(g, 3));
    ck_assert_ptr_null(deferred_failure_group_get(g, (size_t)-1));
    ck_assert_int_eq(deferred_failure_index(g), -1);
    ck_assert_int_gt(deferred_failure_story(g, story, sizeof story), 0);
    ck_assert_msg(has(story, "member zero") && has(story, "member two"),
                  "story: %s", story);
    ck_assert_msg(strstr(story, "member zero") < strstr(story, "member two"),
                  "members out of index order: %s", story);
    /* members on their own lines */
    ck_assert_ptr_nonnull(strchr(story, '\n'));
    deferred_failure_unref(g);
    ck_assert_uint_eq(tu_live(), 0);
}
END_TEST

START_TEST(test_context_frames)
{
    deferred_failure_t *f = deferred_failure_new(DEFERRED_DOMAIN_USER, 1, "boom");
    ck_assert_int_eq(deferred_failure_add_context(f, "producer", "row %d", 42), 0);
    ck_assert_int_eq(deferred_failure_add_context(f, "map", NULL), 0);
    ck_assert_int_eq(deferred_failure_add_context(f, "consumer", "item %s", "x"), 0);
    ck_assert_uint_eq(deferred_failure_context_size(f), 3);
    ck_assert_str_eq(deferred_failure_context_stage(f, 0), "producer");
    ck_assert_str_eq(deferred_failure_context_item(f, 0), "row 42");
    ck_assert_str_eq(deferred_failure_context_stage(f, 1), "map");
    ck_assert_ptr_null(deferred_failure_context_item(f, 1));
    ck_assert_str_eq(deferred_failure_context_stage(f, 2), "consumer");
    ck_assert_str_eq(deferred_failure_context_item(f, 2), "item x");
    ck_assert_ptr_null(deferred_failure_context_stage(f, 3));
    ck_assert_ptr_null(deferred_failure_context_item(f, 3));
    ck_assert_int_eq(deferred_failure_add_context(NULL, "s", NULL), -EINVAL);
    ck_assert_int_eq(deferred_failure_add_context(f, NULL, "x"), -EINVAL);
    ck_assert_uint_eq(deferred_failure_context_size(f), 3);
    /* many frames */
    {
        int i;
        for (i = 0; i < 100; i++)
            ck_assert_int_eq(deferred_failure_add_context(f, "s", "%d", i), 0);
        ck_assert_uint_eq(deferred_failure_context_size(f), 103);
        ck_assert_str_eq(deferred_failure_context_item(f, 102), "99");
    }
    deferred_failure_unref(f);
}
END_TEST

START_TEST(test_story_contents)
{
    deferred_failure_t *cause = deferred_failure_new(DEFERRED_DOMAIN_SYSTEM, EIO, "disk on fire");
    int line = __LINE__; deferred_failure_t *f = deferred_failure_wrap(cause, DEFERRED_DOMAIN_LIBRARY, ECANCELED, "stopped: %s", "why");
    char story[4096], site[512];
    int n;
    const char *p_cons, *p_map, *p_prod;

    ck_assert_int_eq(deferred_failure_add_context(f, "stage-prod-A", "row %d", 7), 0);
    ck_assert_int_eq(deferred_failure_add_context(f, "stage-map-B", "item %d", 8), 0);
    ck_assert_int_eq(deferred_failure_add_context(f, "stage-cons-C", NULL), 0);
    n = deferred_failure_story(f, story, sizeof story);
    ck_assert_int_gt(n, 0);
    ck_assert_int_eq(n, (int)strlen(story));
    ck_assert_msg(strncmp(story, "library ECANCELED: stopped: why", 31) == 0,
                  "story head: %s", story);
    snprintf(site, sizeof site, "(at %s:%d)", __FILE__, line);
    ck_assert_msg(has(story, site), "story lacks %s: %s", site, story);
    ck_assert_msg(has(story, "disk on fire"), "story lacks the cause: %s", story);
    ck_assert_msg(has(story, "EIO"), "story lacks the cause's name: %s", story);
    ck_assert(strstr(story, "disk on fire") > strstr(story, "stopped: why"));
    p_prod = strstr(story, "stage-prod-A");
    p_map = strstr(story, "stage-map-B");
    p_cons = strstr(story, "stage-cons-C");
    ck_assert_msg(p_prod && p_map && p_cons, "story lacks frames: %s", story);
    /* from the consumer back to the producer: last added first */
    ck_assert_msg(p_cons < p_map && p_map < p_prod, "frame order: %s", story);
    ck_assert(has(story, "row 7"));
    ck_assert(has(story, "item 8"));
    ck_assert_ptr_nonnull(strchr(story, '\n'));
    deferred_failure_unref(f);
}
END_TEST

START_TEST(test_story_snprintf)
{
    deferred_failure_t *f = deferred_failure_new(DEFERRED_DOMAIN_USER, 3, "a message long enough");
    char full[1024], small[8], one[1];
    int n, r;

    ck_assert_int_eq(deferred_failure_add_context(f, "stage", "item"), 0);
    n = deferred_failure_story(f, NULL, 0);
    ck_assert_int_gt(n, 10);
    ck_assert_int_eq(deferred_failure_story(f, full, sizeof full), n);
    ck_assert_uint_eq(strlen(full), (size_t)n);

    memset(small, 'Z', sizeof small);
    r = deferred_failure_story(f, small, sizeof small);
    ck_assert_int_eq(r, n);
    ck_assert_int_eq(small[7], '\0');
    ck_assert_int_eq(strncmp(small, full, 7), 0);

    /* exactly n bytes: one short, truncated; n + 1: whole */
    {
        char *b = malloc((size_t)n + 1);
        ck_assert_ptr_nonnull(b);
        ck_assert_int_eq(deferred_failure_story(f, b, (size_t)n), n);
        ck_assert_uint_eq(strlen(b), (size_t)n - 1);
        ck_assert_int_eq(deferred_failure_story(f, b, (size_t)n + 1), n);
        ck_assert_str_eq(b, full);
        free(b);
    }

    one[0] = 'Z';
    ck_assert_int_eq(deferred_failure_story(f, one, 1), n);
    ck_assert_int_eq(one[0], '\0');
    one[0] = 'Z';
    ck_assert_int_eq(deferred_failure_story(f, one, 0), n);
    ck_assert_int_eq(one[0], 'Z');

    ck_assert_int_eq(deferred_failure_story(NULL, full, sizeof full), -EINVAL);
    ck_assert_int_eq(deferred_failure_story(f, NULL, 10), -EINVAL);
    deferred_failure_unref(f);
}
END_TEST

START_TEST(test_story_alloc)
{
    deferred_failure_t *f = deferred_failure_wrap(
        deferred_failure_new(DEFERRED_DOMAIN_USER, 1, "inner"),
        DEFERRED_DOMAIN_USER, 2, "outer");
    char buf[1024];
    char *s;
    size_t live;

    ck_assert_int_eq(deferred_failure_add_context(f, "stage", "x"), 0);
    ck_assert_int_gt(deferred_failure_story(f, buf, sizeof buf), 0);
    live = tu_live();
    s = deferred_failure_story_alloc(f);
    ck_assert_ptr_nonnull(s);
    ck_assert_uint_eq(tu_live(), live + 1); /* through the allocator */
    ck_assert_str_eq(s, buf);
    deferred_free(s);
    ck_assert_ptr_null(deferred_failure_story_alloc(NULL));
    /* allocation failure: NULL */
    tu_fail_from(1);
    ck_assert_ptr_null(deferred_failure_story_alloc(f));
    ck_assert(tu_failure_injected());
    tu_fail_at(0);
    deferred_free(NULL);
    deferred_failure_unref(f);
}
END_TEST

/* Long stories (longer than any internal first guess) render whole. */
START_TEST(test_story_long)
{
    deferred_failure_t *f = deferred_failure_new(DEFERRED_DOMAIN_USER, 1, "m");
    char *s;
    int i, n;

    for (i = 0; i < 500; i++)
        ck_assert_int_eq(deferred_failure_add_context(f, "stage-with-a-long-name",
                                                      "item number %d", i), 0);
    n = deferred_failure_story(f, NULL, 0);
    s = deferred_failure_story_alloc(f);
    ck_assert_ptr_nonnull(s);
    ck_assert_uint_eq(strlen(s), (size_t)n);
    ck_assert(has(s, "item number 0"));
    ck_assert(has(s, "item number 499"));
    /* consumer (last added) first */
    ck_assert(strstr(s, "item number 499") < strstr(s, "item number 0"));
    deferred_free(s);
    deferred_failure_unref(f);
}
END_TEST

START_TEST(test_static_enomem_failure)
{
    deferred_failure_t *f, *g, *h, *members[2];
    char story[512];
    int n;

    tu_fail_from(1);
    f = deferred_failure_new(DEFERRED_DOMAIN_USER, 1, "never made %d", 1);
    ck_assert(tu_failure_injected());
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(deferred_failure_code(f), ENOMEM);
    ck_assert_int_eq(deferred_failure_domain(f), DEFERRED_DOMAIN_LIBRARY);
    ck_assert(deferred_failure_is(f, DEFERRED_DOMAIN_LIBRARY, ENOMEM));
    ck_assert_int_eq(deferred_failure_add_context(f, "stage", "item"), -ENOMEM);
    ck_assert_uint_eq(deferred_failure_context_size(f), 0);
    ck_assert_ptr_eq(deferred_failure_ref(f), f);
    deferred_failure_unref(f);
    deferred_failure_unref(f);
    deferred_failure_unref(f);
    ck_assert_int_eq(deferred_failure_code(f), ENOMEM);
    n = deferred_failure_story(f, story, sizeof story);
    ck_assert_int_gt(n, 0);
    ck_assert_msg(has(story, "ENOMEM"), "story: %s", story);
    ck_assert_uint_eq(tu_live(), 0);
    tu_fail_at(0);

    /* adding context to it with memory available is still -ENOMEM */
    ck_assert_int_eq(deferred_failure_add_context(f, "stage", NULL), -ENOMEM);

    /* wrap, first_error and group release what they took */
    g = deferred_failure_new(DEFERRED_DOMAIN_USER, 2, "cause");
    h = deferred_failure_new(DEFERRED_DOMAIN_USER, 3, "cause 2");
    members[0] = deferred_failure_new(DEFERRED_DOMAIN_USER, 4, "m0");
    members[1] = deferred_failure_new(DEFERRED_DOMAIN_USER, 5, "m1");
    tu_fail_from(1);
    f = deferred_failure_wrap(g, DEFERRED_DOMAIN_USER, 9, "w");
    ck_assert_int_eq(deferred_failure_code(f), ENOMEM);
    deferred_failure_unref(f);
    f = deferred_failure_first_error(1, h);
    ck_assert_int_eq(deferred_failure_code(f), ENOMEM);
    deferred_failure_unref(f);
    f = deferred_failure_group(members, 2);
    ck_assert_int_eq(deferred_failure_code(f), ENOMEM);
    deferred_failure_unref(f);
    tu_fail_at(0);
    ck_assert_uint_eq(tu_live(), 0);

    /* add_context on a normal failure that cannot allocate: f unchanged */
    f = deferred_failure_new(DEFERRED_DOMAIN_USER, 6, "ok");
    ck_assert_int_eq(deferred_failure_add_context(f, "first", NULL), 0);
    tu_fail_from(1);
    ck_assert_int_eq(deferred_failure_add_context(f, "second", "item %d", 2), -ENOMEM);
    tu_fail_at(0);
    ck_assert_uint_eq(deferred_failure_context_size(f), 1);
    ck_assert_str_eq(deferred_failure_context_stage(f, 0), "first");
    ck_assert_int_eq(deferred_failure_add_context(f, "third", NULL), 0);
    ck_assert_uint_eq(deferred_failure_context_size(f), 2);
    deferred_failure_unref(f);
}
END_TEST

/* Failing each allocation of a failure's construction in turn: always
 * either the full failure or the static ENOMEM one, and no leak. */
START_TEST(test_failure_each_allocation)
{
    unsigned long n;

    for (n = 1; n < 1000; n++) {
        deferred_failure_t *f;
        int rc;
        tu_fail_at(n);
        f = deferred_failure_wrap(deferred_failure_new(DEFERRED_DOMAIN_USER, 1, "in %s", "x"),
                                  DEFERRED_DOMAIN_USER, 2, "out %d", 2);
        rc = deferred_failure_add_context(f, "stage", "item %d", 3);
        if (!tu_failure_injected()) {
            ck_assert_int_eq(rc, 0);
            ck_assert_int_eq(deferred_failure_code(f), 2);
            ck_assert_str_eq(deferred_failure_message(f), "out 2");
            ck_assert_str_eq(deferred_failure_message(deferred_failure_cause(f)), "in x");
            deferred_failure_unref(f);
            break;
        }
        ck_assert(rc == -ENOMEM || deferred_failure_code(f) == ENOMEM ||
                  deferred_failure_find(f, DEFERRED_DOMAIN_ANY, ENOMEM) != NULL);
        deferred_failure_unref(f);
        tu_fail_at(0);
        ck_assert_uint_eq(tu_live(), 0);
    }
    ck_assert_uint_lt(n, 1000);
}
END_TEST

START_TEST(test_failure_null_accessors)
{
    char buf[4];
    ck_assert_int_eq(deferred_failure_code(NULL), 0);
    ck_assert_int_eq(deferred_failure_domain(NULL), DEFERRED_DOMAIN_ANY);
    ck_assert_str_eq(deferred_failure_message(NULL), "");
    ck_assert_ptr_null(deferred_failure_cause(NULL));
    ck_assert_int_eq(deferred_failure_line(NULL), 0);
    ck_assert_uint_eq(deferred_failure_group_size(NULL), 0);
    ck_assert_ptr_null(deferred_failure_group_get(NULL, 0));
    ck_assert_uint_eq(deferred_failure_context_size(NULL), 0);
    ck_assert_ptr_null(deferred_failure_context_stage(NULL, 0));
    ck_assert_ptr_null(deferred_failure_context_item(NULL, 0));
    ck_assert_ptr_null(deferred_failure_find(NULL, DEFERRED_DOMAIN_ANY, 1));
    ck_assert(!deferred_failure_is(NULL, DEFERRED_DOMAIN_ANY, 0));
    ck_assert_int_eq(deferred_failure_story(NULL, buf, sizeof buf), -EINVAL);
    ck_assert_ptr_null(deferred_failure_story_alloc(NULL));
}
END_TEST

/* A million-deep cause chain is freed (and searched) without recursion. */
#define DEEP 1000000
struct deep { int ok; int found; };

static void *deep_thread(void *arg)
{
    struct deep *r = arg;
    deferred_failure_t *f = deferred_failure_new(DEFERRED_DOMAIN_SYSTEM, EIO, "bottom");
    int i;

    for (i = 0; i < DEEP; i++)
        f = deferred_failure_wrap(f, DEFERRED_DOMAIN_USER, 1, NULL);
    r->ok = deferred_failure_code(f) == 1;
    r->found = deferred_failure_find(f, DEFERRED_DOMAIN_SYSTEM, EIO) != NULL;
    deferred_failure_unref(f);
    return NULL;
}

START_TEST(test_deep_cause_chain)
{
    pthread_attr_t attr;
    pthread_t th;
    struct deep r = {0, 0};

    ck_assert_int_eq(pthread_attr_init(&attr), 0);
    ck_assert_int_eq(pthread_attr_setstacksize(&attr, 256 * 1024), 0);
    ck_assert_int_eq(pthread_create(&th, &attr, deep_thread, &r), 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    pthread_attr_destroy(&attr);
    ck_assert(r.ok);
    ck_assert(r.found);
    ck_assert_uint_eq(tu_live(), 0);
}
END_TEST

/* ---- values ---- */

static int plain_releases;
static void plain_release(void *p)
{
    (void)p;
    plain_releases++;
}

START_TEST(test_value_int_roundtrip)
{
    intptr_t xs[] = {0, 1, -1, 42, INTPTR_MAX, INTPTR_MIN};
    size_t i;

    for (i = 0; i < sizeof xs / sizeof xs[0]; i++) {
        deferred_value_t v = deferred_value_of_int(xs[i]);
        ck_assert(deferred_value_int(v) == xs[i]);
        ck_assert_ptr_null(v.release);
        ck_assert(!deferred_value_is_failure(v));
        ck_assert(!deferred_value_is_deferred(v));
        ck_assert_ptr_null(deferred_value_get_failure(v));
        deferred_value_release(v);
    }
    ck_assert(deferred_value_is_none(deferred_value_none()));
    ck_assert(deferred_value_is_none(deferred_value_of_int(0)));
    ck_assert(!deferred_value_is_none(deferred_value_of_int(1)));
    ck_assert(!deferred_value_is_none(deferred_value_make(NULL, plain_release)));
    deferred_value_release(deferred_value_none());
    ck_assert_uint_eq(tu_live(), 0);
}
END_TEST

START_TEST(test_value_make_release)
{
    int x = 5;
    deferred_value_t v = deferred_value_make(&x, plain_release);
    deferred_value_t b = deferred_value_make(&x, NULL);

    plain_releases = 0;
    ck_assert_ptr_eq(v.ptr, &x);
    ck_assert(!deferred_value_is_failure(v));
    ck_assert(!deferred_value_is_deferred(v));
    deferred_value_release(v);
    ck_assert_int_eq(plain_releases, 1);
    deferred_value_release(b); /* borrowed: nothing */
    ck_assert_int_eq(plain_releases, 1);
    ck_assert_int_eq(x, 5);
}
END_TEST

START_TEST(test_value_failure)
{
    deferred_failure_t *f = deferred_failure_new(DEFERRED_DOMAIN_USER, 8, "f");
    deferred_value_t v = deferred_value_failure(f);
    deferred_failure_t *t;

    ck_assert(deferred_value_is_failure(v));
    ck_assert(!deferred_value_is_deferred(v));
    ck_assert(!deferred_value_is_none(v));
    ck_assert_ptr_eq(deferred_value_get_failure(v), f);
    deferred_value_release(v);
    ck_assert_uint_eq(tu_live(), 0);

    f = deferred_failure_new(DEFERRED_DOMAIN_USER, 9, "g");
    v = deferred_value_failure(f);
    t = deferred_value_take_failure(v);
    ck_assert_ptr_eq(t, f);
    ck_assert_int_eq(deferred_failure_code(t), 9);
    deferred_failure_unref(t);
    ck_assert_uint_eq(tu_live(), 0);

    /* take on a non-failure: NULL and untouched */
    plain_releases = 0;
    v = deferred_value_make(&plain_releases, plain_release);
    ck_assert_ptr_null(deferred_value_take_failure(v));
    ck_assert_int_eq(plain_releases, 0);
    deferred_value_release(v);
    ck_assert_int_eq(plain_releases, 1);

    /* NULL is taken as ENOMEM */
    v = deferred_value_failure(NULL);
    ck_assert(deferred_value_is_failure(v));
    ck_assert_int_eq(deferred_failure_code(deferred_value_get_failure(v)), ENOMEM);
    deferred_value_release(v);
}
END_TEST

START_TEST(test_value_deferred)
{
    deferred_t *d = deferred_new();
    deferred_value_t v;

    ck_assert_ptr_nonnull(d);
    v = deferred_value_deferred(deferred_ref(d));
    ck_assert(deferred_value_is_deferred(v));
    ck_assert(!deferred_value_is_failure(v));
    ck_assert_ptr_null(deferred_value_get_failure(v));
    ck_assert_ptr_null(deferred_value_take_failure(v));
    deferred_unref(d);
    ck_assert_uint_gt(tu_live(), 0); /* the value still holds d */
    deferred_value_release(v);
    ck_assert_uint_eq(tu_live(), 0);

    v = deferred_value_deferred(NULL);
    ck_assert(deferred_value_is_failure(v));
    ck_assert(!deferred_value_is_deferred(v));
    ck_assert_int_eq(deferred_failure_code(deferred_value_get_failure(v)), ENOMEM);
    deferred_value_release(v);
}
END_TEST

START_TEST(test_value_strdup)
{
    deferred_value_t v = deferred_value_strdup("hello");

    ck_assert(!deferred_value_is_failure(v));
    ck_assert_str_eq((const char *)v.ptr, "hello");
    ck_assert_uint_eq(tu_live(), 1);
    deferred_value_release(v);
    ck_assert_uint_eq(tu_live(), 0);

    v = deferred_value_strdup("");
    ck_assert_str_eq((const char *)v.ptr, "");
    deferred_value_release(v);

    v = deferred_value_strdup(NULL);
    ck_assert(deferred_value_is_failure(v));
    ck_assert_int_eq(deferred_failure_code(deferred_value_get_failure(v)), EINVAL);
    deferred_value_release(v);

    tu_fail_from(1);
    v = deferred_value_strdup("hello");
    tu_fail_at(0);
    ck_assert(deferred_value_is_failure(v));
    ck_assert_int_eq(deferred_failure_code(deferred_value_get_failure(v)), ENOMEM);
    deferred_value_release(v);
    ck_assert_uint_eq(tu_live(), 0);
}
END_TEST

START_TEST(test_value_strdup_through_chain)
{
    deferred_t *d = deferred_new();
    deferred_value_t r;

    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(deferred_callback(d, deferred_value_strdup("row")), 0);
    r = deferred_result_take(d);
    ck_assert_str_eq((const char *)r.ptr, "row");
    deferred_value_release(r);
    deferred_unref(d);
}
END_TEST

START_TEST(test_malloc_free_through_allocator)
{
    void *p = deferred_malloc(100);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(tu_live(), 1);
    deferred_free(p);
    ck_assert_uint_eq(tu_live(), 0);
    tu_fail_at(1);
    ck_assert_ptr_null(deferred_malloc(10));
    ck_assert(tu_failure_injected());
    tu_fail_at(0);
}
END_TEST

static Suite *failure_suite(void)
{
    Suite *s = suite_create("failure");
    TCase *tf = tcase_create("failure");
    TCase *tv = tcase_create("value");

    tcase_add_checked_fixture(tf, tu_setup, tu_teardown);
    tcase_add_checked_fixture(tv, tu_setup, tu_teardown);
    tcase_set_timeout(tf, 120);

    tcase_add_test(tf, test_failure_new_with_format);
    tcase_add_test(tf, test_failure_message_defaults);
    tcase_add_test(tf, test_failure_newv_at);
    tcase_add_test(tf, test_domain_names);
    tcase_add_test(tf, test_failure_refcount);
    tcase_add_test(tf, test_wrap_cause_find_is);
    tcase_add_test(tf, test_wrap_shared_cause);
    tcase_add_test(tf, test_first_error);
    tcase_add_test(tf, test_group);
    tcase_add_test(tf, test_context_frames);
    tcase_add_test(tf, test_story_contents);
    tcase_add_test(tf, test_story_snprintf);
    tcase_add_test(tf, test_story_alloc);
    tcase_add_test(tf, test_story_long);
    tcase_add_test(tf, test_static_enomem_failure);
    tcase_add_test(tf, test_failure_each_allocation);
    tcase_add_test(tf, test_failure_null_accessors);
    tcase_add_test(tf, test_deep_cause_chain);

    tcase_add_test(tv, test_value_int_roundtrip);
    tcase_add_test(tv, test_value_make_release);
    tcase_add_test(tv, test_value_failure);
    tcase_add_test(tv, test_value_deferred);
    tcase_add_test(tv, test_value_strdup);
    tcase_add_test(tv, test_value_strdup_through_chain);
    tcase_add_test(tv, test_malloc_free_through_allocator);

    suite_add_tcase(s, tf);
    suite_add_tcase(s, tv);
    return s;
}

int main(void)
{
    return tu_run_suite(failure_suite());
}
