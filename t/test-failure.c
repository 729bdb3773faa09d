/*
 * test-failure.c: failures (deferred/failure.h) and values
 * (deferred/value.h): construction, domains, wrapping and matching,
 * composite failures, context frames, the rendered story with its
 * snprintf semantics, the static ENOMEM failure, the value helpers, and
 * NULL arguments.  Teardown asserts that nothing allocated is alive.
 */
#include "testutil.h"

#include <dirent.h>
#include <sys/stat.h>
#include <limits.h>
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

/* Failing each allocation of a failure's construction in turn
 * (tu_oom_sweep(), every failure surfacing): always either the full
 * failure or the static ENOMEM one, and no leak. */
static void sc_failure_each_allocation(struct tu_oom *r)
{
    deferred_failure_t *f;
    int rc;

    f = deferred_failure_wrap(deferred_failure_new(DEFERRED_DOMAIN_USER, 1, "in %s", "x"),
                              DEFERRED_DOMAIN_USER, 2, "out %d", 2);
    rc = deferred_failure_add_context(f, "stage", "item %d", 3);
    if (!tu_failure_injected()) {
        ck_assert_int_eq(rc, 0);
        ck_assert_int_eq(deferred_failure_code(f), 2);
        ck_assert_str_eq(deferred_failure_message(f), "out 2");
        ck_assert_str_eq(deferred_failure_message(deferred_failure_cause(f)), "in x");
        r->ok = true;
    } else {
        ck_assert(rc == -ENOMEM || deferred_failure_code(f) == ENOMEM ||
                  deferred_failure_find(f, DEFERRED_DOMAIN_ANY, ENOMEM) != NULL);
        r->saw = true;
    }
    deferred_failure_unref(f);
}

START_TEST(test_failure_each_allocation)
{
    tu_oom_sweep("failure", sc_failure_each_allocation, NULL, TU_OOM_STRICT);
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

#define DEEP 1000000

/* ---- depth: nothing recurses along causes or groups ---- */

/* The shapes of nesting, each built DEEP levels deep over a USER failure
 * with code 1 (the bottom). */
enum shape { SHAPE_CAUSE, SHAPE_GROUP, SHAPE_FIRST_ERROR, SHAPE_MIXTURE, SHAPE_N };

static deferred_failure_t *build_deep(enum shape shape, long n)
{
    deferred_failure_t *f = deferred_failure_new(DEFERRED_DOMAIN_USER, 1, "bottom");
    long i;

    for (i = 0; i < n; i++) {
        enum shape s = shape == SHAPE_MIXTURE ? (enum shape)(i % 3) : shape;

        if (s == SHAPE_CAUSE) {
            f = deferred_failure_wrap(f, DEFERRED_DOMAIN_USER, 2, NULL);
        } else if (s == SHAPE_GROUP) {
            /* the nested one as input 1 of 2, beside a fresh leaf */
            deferred_failure_t *m[2];
            m[0] = shape == SHAPE_MIXTURE ? NULL
                                          : deferred_failure_new(DEFERRED_DOMAIN_USER, 3, "leaf");
            m[1] = f;
            f = deferred_failure_group(m, 2);
        } else {
            f = deferred_failure_first_error((size_t)i, f);
        }
    }
    return f;
}

struct deep_run {
    enum shape shape;
    long n;
    bool made;       /* the outermost failure is not the ENOMEM one */
    bool found;      /* find() reached the bottom (cause-only shapes) */
    size_t msg_len;  /* the outermost message's length */
    int story_rc;    /* deferred_failure_story(f, NULL, 0) */
    size_t story_len;
    size_t caused_by, inputs, notes;
    bool bottom_named;
    bool render;     /* render the story too */
};

/* Occurrences of needle in s, in one pass (no strstr() loop: a checking
 * strstr() measures the whole haystack on every call). */
static size_t count_of(const char *s, const char *needle)
{
    size_t n = 0, len = strlen(needle);

    for (; *s; s++)
        if (*s == needle[0] && strncmp(s, needle, len) == 0) {
            n++;
            s += len - 1;
        }
    return n;
}

static void deep_run(void *arg)
{
    struct deep_run *r = arg;
    deferred_failure_t *f = build_deep(r->shape, r->n);

    r->made = deferred_failure_code(f) != ENOMEM;
    r->msg_len = strlen(deferred_failure_message(f));
    r->found = deferred_failure_find(f, DEFERRED_DOMAIN_USER, 1) != NULL;
    if (r->render) {
        char *s;

        r->story_rc = deferred_failure_story(f, NULL, 0);
        s = deferred_failure_story_alloc(f);
        if (s) {
            r->story_len = strlen(s);
            r->caused_by = count_of(s, "caused by: ");
            r->inputs = count_of(s, "input 1: "); /* the nested member */
            r->notes = count_of(s, "are not shown");
            r->bottom_named = strstr(s, "user error 1: bottom") != NULL;
            deferred_free(s);
        }
    }
    deferred_failure_unref(f);
}

/* Make a million levels of a shape, search it, render its story and free
 * it (the outermost unref frees them all) on a 256 KiB stack. */
static struct deep_run run_deep(enum shape shape)
{
    struct deep_run r;

    memset(&r, 0, sizeof r);
    r.shape = shape;
    r.n = DEEP;
    r.render = true;
    tu_run_small_stack(deep_run, &r);
    ck_assert_msg(r.made, "shape %d: out of memory", (int)shape);
    ck_assert_uint_eq(tu_live(), 0);
    ck_assert_int_gt(r.story_rc, 0);
    ck_assert_uint_eq(r.story_len, (size_t)r.story_rc);
    return r;
}

/* A cause chain: searched to the bottom, rendered whole. */
START_TEST(test_deep_cause_chain)
{
    struct deep_run r = run_deep(SHAPE_CAUSE);

    ck_assert(r.found);
    ck_assert_uint_eq(r.caused_by, DEEP);
    ck_assert(r.bottom_named);
    ck_assert_uint_eq(r.notes, 0);
}
END_TEST

/* First-errors of first-errors: the same, and each message stays short
 * (each copied the whole nested message before: quadratic). */
START_TEST(test_deep_first_errors)
{
    struct deep_run r = run_deep(SHAPE_FIRST_ERROR);

    ck_assert(r.found);
    ck_assert_uint_le(r.msg_len, 200 + 64);
    ck_assert_uint_eq(r.caused_by, DEEP);
    ck_assert(r.bottom_named);
    ck_assert_uint_eq(r.notes, 0);
}
END_TEST

/* Groups in groups (freeing them recursed and overflowed at about 8,000
 * levels): the story shows 32 levels, then a truncation note. */
START_TEST(test_deep_groups)
{
    struct deep_run r = run_deep(SHAPE_GROUP);

    ck_assert_uint_eq(r.notes, 1);
    ck_assert_uint_eq(r.inputs, 32); /* one nested group per level */
    ck_assert_uint_lt(r.story_len, 64 * 1024);
    ck_assert(!r.bottom_named);
}
END_TEST

/* Groups, first-errors and wraps in turn. */
START_TEST(test_deep_mixture)
{
    struct deep_run r = run_deep(SHAPE_MIXTURE);

    ck_assert_uint_eq(r.notes, 1);
    ck_assert_uint_eq(r.inputs, 32);
    ck_assert_uint_lt(r.story_len, 64 * 1024);
}
END_TEST

/* Nested members render with their causes and frames, one level deeper
 * each; a cause that is a group renders its members. */
START_TEST(test_story_nested_members)
{
    deferred_failure_t *leaf, *inner, *outer, *fe, *m[2];
    char *s;
    const char *p;

    leaf = deferred_failure_wrap(deferred_failure_new(DEFERRED_DOMAIN_USER, 8, "root"),
                                 DEFERRED_DOMAIN_USER, 7, "leaf");
    ck_assert_int_eq(deferred_failure_add_context(leaf, "leafstage", "leafitem"), 0);
    m[0] = leaf;
    inner = deferred_failure_group(m, 1);
    m[0] = NULL;
    m[1] = inner;
    outer = deferred_failure_group(m, 2);
    s = deferred_failure_story_alloc(outer);
    ck_assert_ptr_nonnull(s);
    p = s;
#define NEXT_LINE(text)                                                        \
    do {                                                                       \
        p = strstr(p, text);                                                   \
        ck_assert_msg(p != NULL, "story lacks %s in order:\n%s", text, s);     \
    } while (0)
    NEXT_LINE("library DEFERRED_EGROUP: 1 of 2 inputs failed");
    NEXT_LINE("\n  input 1: library DEFERRED_EGROUP: 1 of 1 inputs failed");
    NEXT_LINE("\n    input 0: user error 7: leaf");
    NEXT_LINE("\n      caused by: user error 8: root");
    NEXT_LINE("\n    context, from the consumer back to the producer:");
    NEXT_LINE("\n      in leafstage: leafitem");
    ck_assert_ptr_null(strstr(s, "input 0: library"));
    deferred_free(s);

    /* a first-error whose cause is the group: the members follow it */
    fe = deferred_failure_first_error(4, outer);
    s = deferred_failure_story_alloc(fe);
    ck_assert_ptr_nonnull(s);
    p = s;
    NEXT_LINE("library DEFERRED_EFIRSTERROR: input 4 failed: 1 of 2 inputs failed");
    NEXT_LINE("\n  caused by: library DEFERRED_EGROUP: 1 of 2 inputs failed");
    NEXT_LINE("\n  input 1: library DEFERRED_EGROUP");
    NEXT_LINE("\n    input 0: user error 7: leaf");
    NEXT_LINE("\n      in leafstage: leafitem");
#undef NEXT_LINE
    deferred_free(s);
    deferred_failure_unref(fe);
}
END_TEST

/* A group of many members renders each on its line, in index order, and
 * frees without recursion. */
START_TEST(test_story_wide_group)
{
    enum { WIDE = 100000 };
    deferred_failure_t **m = malloc(WIDE * sizeof(*m));
    deferred_failure_t *g;
    char *s, want[64];
    const char *p;
    size_t i;

    ck_assert_ptr_nonnull(m);
    for (i = 0; i < WIDE; i++)
        m[i] = i % 2 ? deferred_failure_new(DEFERRED_DOMAIN_USER, (int)i, "m%zu", i) : NULL;
    g = deferred_failure_group(m, WIDE);
    free(m);
    ck_assert_uint_eq(deferred_failure_group_size(g), WIDE);
    s = deferred_failure_story_alloc(g);
    ck_assert_ptr_nonnull(s);
    ck_assert_uint_eq(count_of(s, "\n  input "), WIDE / 2);
    /* line by line: the members in index order */
    for (p = strchr(s, '\n'), i = 1; i < WIDE; i += 2) {
        int len = snprintf(want, sizeof want, "\n  input %zu: user error %zu: m%zu (",
                           i, i, i);

        ck_assert_msg(p && strncmp(p, want, (size_t)len) == 0,
                      "member %zu missing or out of order", i);
        p = strchr(p + 1, '\n');
    }
    ck_assert_ptr_null(p);
    deferred_free(s);
    deferred_failure_unref(g);
}
END_TEST

/* ---- many frames: linear rendering ---- */

#define MANY_FRAMES 100000

/* 100,000 frames render completely, from the last added back to the
 * first, in one allocation; frame i is read in constant time.  (Rendering
 * looked each frame up from the start of a list: 6.9 s at 100,000.) */
START_TEST(test_story_many_frames)
{
    deferred_failure_t *f = deferred_failure_new(DEFERRED_DOMAIN_USER, 1, "many");
    char *s, want[64];
    const char *p;
    size_t i, total;
    int n;

    for (i = 0; i < MANY_FRAMES; i++)
        ck_assert_int_eq(deferred_failure_add_context(f, i % 2 ? "odd" : "even",
                                                      "item %zu", i), 0);
    ck_assert_uint_eq(deferred_failure_context_size(f), MANY_FRAMES);
    for (i = 0; i < MANY_FRAMES; i++) {
        snprintf(want, sizeof want, "item %zu", i);
        ck_assert_str_eq(deferred_failure_context_item(f, i), want);
        ck_assert_str_eq(deferred_failure_context_stage(f, i), i % 2 ? "odd" : "even");
    }
    n = deferred_failure_story(f, NULL, 0);
    ck_assert_int_gt(n, 0);
    total = tu_total();
    s = deferred_failure_story_alloc(f);
    ck_assert_ptr_nonnull(s);
    ck_assert_uint_eq(tu_total(), total + 1);
    ck_assert_uint_eq(strlen(s), (size_t)n);
    /* the last frame added (nearest the consumer) comes first, then every
     * other one line by line, down to the first */
    p = strstr(s, "\ncontext, from the consumer back to the producer:");
    ck_assert_ptr_nonnull(p);
    p = strchr(p + 1, '\n');
    for (i = MANY_FRAMES; i-- > 0;) {
        int len = snprintf(want, sizeof want, "\n  in %s: item %zu", i % 2 ? "odd" : "even", i);

        ck_assert_msg(p && strncmp(p, want, (size_t)len) == 0 &&
                          (p[len] == '\n' || p[len] == '\0'),
                      "frame %zu: %.40s", i, p ? p : "(end)");
        p += len;
    }
    ck_assert_int_eq(*p, '\0');
    ck_assert(has(s, "in odd: item 99999"));
    ck_assert(has(s, "in even: item 0"));
    deferred_free(s);
    deferred_failure_unref(f);
}
END_TEST

/* ---- the code table ---- */

/* Every errno name POSIX defines, with its value on this system. */
static const struct { const char *name; int code; } errno_names[] = {
#define E(x) {#x, x},
    E(E2BIG) E(EACCES) E(EADDRINUSE) E(EADDRNOTAVAIL) E(EAFNOSUPPORT) E(EAGAIN)
    E(EALREADY) E(EBADF) E(EBADMSG) E(EBUSY) E(ECANCELED) E(ECHILD)
    E(ECONNABORTED) E(ECONNREFUSED) E(ECONNRESET) E(EDEADLK) E(EDESTADDRREQ)
    E(EDOM) E(EDQUOT) E(EEXIST) E(EFAULT) E(EFBIG) E(EHOSTUNREACH) E(EIDRM)
    E(EILSEQ) E(EINPROGRESS) E(EINTR) E(EINVAL) E(EIO) E(EISCONN) E(EISDIR)
    E(ELOOP) E(EMFILE) E(EMLINK) E(EMSGSIZE) E(EMULTIHOP) E(ENAMETOOLONG)
    E(ENETDOWN) E(ENETRESET) E(ENETUNREACH) E(ENFILE) E(ENOBUFS) E(ENODEV)
    E(ENOENT) E(ENOEXEC) E(ENOLCK) E(ENOLINK) E(ENOMEM) E(ENOMSG)
    E(ENOPROTOOPT) E(ENOSPC) E(ENOSYS) E(ENOTCONN) E(ENOTDIR) E(ENOTEMPTY)
    E(ENOTRECOVERABLE) E(ENOTSOCK) E(ENOTSUP) E(ENOTTY) E(ENXIO) E(EOPNOTSUPP)
    E(EOVERFLOW) E(EOWNERDEAD) E(EPERM) E(EPIPE) E(EPROTO)
    E(EPROTONOSUPPORT) E(EPROTOTYPE) E(ERANGE) E(EROFS) E(ESPIPE) E(ESRCH)
    E(ESTALE) E(ETIMEDOUT) E(ETXTBSY) E(EWOULDBLOCK) E(EXDEV)
#ifdef ESHUTDOWN
    E(ESHUTDOWN)
#endif
#undef E
};

static bool errno_value(const char *name, int *code)
{
    size_t i;

    for (i = 0; i < sizeof errno_names / sizeof errno_names[0]; i++)
        if (strcmp(errno_names[i].name, name) == 0) {
            *code = errno_names[i].code;
            return true;
        }
    return false;
}

/* The source tree: $srcdir (set by make check's test driver), else the
 * directory this file was compiled from (when run by hand or valgrind
 * from the build directory). */
static bool source_dir(char *dir, size_t size)
{
    const char *env = getenv("srcdir");
    char probe[8192];
    FILE *fp;

    if (env && *env) {
        snprintf(dir, size, "%s", env);
    } else {
        const char *slash = strrchr(__FILE__, '/');
        size_t n = slash ? (size_t)(slash - __FILE__) : 0;

        /* __FILE__ is <srcdir>/t/test-failure.c */
        snprintf(dir, size, "%.*s/..", (int)n, n ? __FILE__ : ".");
    }
    snprintf(probe, sizeof probe, "%s/lib/core/errors.c", dir);
    fp = fopen(probe, "r");
    if (!fp)
        return false;
    fclose(fp);
    return true;
}

/* Collect the E-codes used in the code (not the comments or strings) of
 * a source file: identifiers E[A-Z0-9]+. */
#define MAX_CODES 128
struct codes {
    size_t n;
    char name[MAX_CODES][32];
};

static void codes_add(struct codes *c, const char *name, size_t len)
{
    size_t i;

    if (len >= sizeof c->name[0])
        return;
    for (i = 0; i < c->n; i++)
        if (strlen(c->name[i]) == len && strncmp(c->name[i], name, len) == 0)
            return;
    ck_assert_uint_lt(c->n, MAX_CODES);
    memcpy(c->name[c->n], name, len);
    c->name[c->n][len] = '\0';
    c->n++;
}

static bool ident_char(int ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch >= '0' && ch <= '9') || ch == '_';
}

static void scan_codes(const char *path, struct codes *c)
{
    FILE *fp = fopen(path, "r");
    char *text;
    long size;
    size_t i, n;

    ck_assert_msg(fp != NULL, "cannot read %s", path);
    ck_assert_int_eq(fseek(fp, 0, SEEK_END), 0);
    size = ftell(fp);
    ck_assert_int_ge(size, 0);
    rewind(fp);
    text = malloc((size_t)size + 1);
    ck_assert_ptr_nonnull(text);
    n = fread(text, 1, (size_t)size, fp);
    text[n] = '\0';
    fclose(fp);
    for (i = 0; i < n;) {
        char ch = text[i];

        if (ch == '/' && text[i + 1] == '*') {
            const char *end = strstr(text + i + 2, "*/");
            i = end ? (size_t)(end - text) + 2 : n;
        } else if (ch == '/' && text[i + 1] == '/') {
            while (i < n && text[i] != '\n')
                i++;
        } else if (ch == '"' || ch == '\'') {
            for (i++; i < n && text[i] != ch; i++)
                if (text[i] == '\\')
                    i++;
            i++;
        } else if (ident_char((unsigned char)ch)) {
            size_t start = i, j;
            bool code = ch == 'E';

            while (i < n && ident_char((unsigned char)text[i]))
                i++;
            for (j = start + 1; j < i; j++)
                if (!((text[j] >= 'A' && text[j] <= 'Z') || (text[j] >= '0' && text[j] <= '9')))
                    code = false;
            if (code && i - start >= 3)
                codes_add(c, text + start, i - start);
        } else {
            i++;
        }
    }
    free(text);
}

static void scan_dir(const char *dir, struct codes *c)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[8192];

    ck_assert_msg(d != NULL, "cannot list %s", dir);
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        struct stat st;

        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
            scan_dir(path, c); /* lib/ has a folder per layer */
            continue;
        }
        if (len < 3 || e->d_name[len - 2] != '.' ||
            (e->d_name[len - 1] != 'c' && e->d_name[len - 1] != 'h'))
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        scan_codes(path, c);
    }
    closedir(d);
}

/* True when name came from the library's table, not the fallback: the
 * table's messages are the library's own words, never strerror()'s. */
static bool in_table(int code)
{
    const char *name = deferred_err_name(code);

    return strcmp(name, "EUNKNOWN") != 0 &&
           !(name[0] == 'E' && name[1] >= '0' && name[1] <= '9') &&
           strcmp(deferred_strerror(code), "unknown error") != 0 &&
           strcmp(deferred_strerror(code), strerror(code)) != 0;
}

/* Every E-code in the library's sources has a name and a message of its
 * own in the table (EMSGSIZE, ESHUTDOWN, ENOTCONN, EBADF and EPROTO read
 * "EUNKNOWN" before). */
START_TEST(test_codes_of_the_sources)
{
    static struct codes c;
    char dir[4096], sub[8192];
    size_t i;

    c.n = 0;
    ck_assert_msg(source_dir(dir, sizeof dir),
                  "cannot find the sources (set srcdir to the source tree)");
    snprintf(sub, sizeof sub, "%s/lib", dir);
    scan_dir(sub, &c);
    snprintf(sub, sizeof sub, "%s/include/deferred", dir);
    scan_dir(sub, &c);
    /* the scan works: it sees codes the library is known to produce */
    ck_assert_uint_ge(c.n, 20);
    for (i = 0; i < c.n; i++) {
        int code, back;

        ck_assert_msg(errno_value(c.name[i], &code),
                      "%s is used in lib/ but is no errno name this test knows: "
                      "add it to errno_names[]", c.name[i]);
        ck_assert_msg(in_table(code), "%s (%d) is not in the table: %s, %s",
                      c.name[i], code, deferred_err_name(code), deferred_strerror(code));
        ck_assert_msg(in_table(-code), "-%s", c.name[i]);
        /* its name is the code's (EWOULDBLOCK reads as EAGAIN where equal) */
        ck_assert(errno_value(deferred_err_name(code), &back));
        ck_assert_int_eq(back, code);
    }
    {
        const char *need[] = {"EMSGSIZE", "ESHUTDOWN", "ENOTCONN", "EBADF", "EPROTO"};
        size_t k, j;

        for (k = 0; k < sizeof need / sizeof need[0]; k++) {
            for (j = 0; j < c.n && strcmp(c.name[j], need[k]) != 0; j++)
                ;
            ck_assert_msg(j < c.n || strcmp(need[k], "EBADF") == 0,
                          "the scan missed %s", need[k]);
        }
    }
}
END_TEST

struct name_in_thread {
    const char *name;
    char copy[16];
};

static void *name_thread(void *arg)
{
    struct name_in_thread *t = arg;

    t->name = deferred_err_name(4001);
    snprintf(t->copy, sizeof t->copy, "%s", t->name);
    return NULL;
}

START_TEST(test_code_names)
{
    struct name_in_thread t;
    pthread_t th;
    const char *mine;
    deferred_failure_t *f;
    char story[256];

    ck_assert_str_eq(deferred_err_name(EMSGSIZE), "EMSGSIZE");
    ck_assert_str_eq(deferred_err_name(-ESHUTDOWN), "ESHUTDOWN");
    ck_assert_str_eq(deferred_err_name(ENOTCONN), "ENOTCONN");
    ck_assert_str_eq(deferred_err_name(EBADF), "EBADF");
    ck_assert_str_eq(deferred_err_name(-EPROTO), "EPROTO");
    ck_assert_str_eq(deferred_err_name(DEFERRED_EFIRSTERROR), "DEFERRED_EFIRSTERROR");
    ck_assert_str_eq(deferred_strerror(-EMSGSIZE), deferred_strerror(EMSGSIZE));
    ck_assert_str_ne(deferred_strerror(EPROTO), "unknown error");
    /* INT_MIN has no positive counterpart (negating it was undefined) */
    ck_assert_str_eq(deferred_err_name(INT_MIN), "EUNKNOWN");
    ck_assert_str_eq(deferred_strerror(INT_MIN), "unknown error");
    ck_assert_str_eq(deferred_err_name(0), "EUNKNOWN");
    ck_assert_str_eq(deferred_strerror(0), "unknown error");
    ck_assert_str_eq(deferred_err_name(-INT_MAX), "EUNKNOWN"); /* no errno */
    ck_assert_str_eq(deferred_strerror(INT_MAX), "unknown error");
    /* outside the table: the system's name and text, never EUNKNOWN */
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
    ck_assert_str_eq(deferred_err_name(EXDEV), "EXDEV");
    ck_assert_str_eq(deferred_err_name(-ENOTTY), "ENOTTY");
    ck_assert_str_eq(deferred_strerror(EXDEV), strerror(EXDEV));
#else
    ck_assert_str_ne(deferred_err_name(EXDEV), "EUNKNOWN");
#endif
    ck_assert_str_ne(deferred_strerror(EXDEV), "unknown error");
    f = deferred_failure_new(DEFERRED_DOMAIN_SYSTEM, EXDEV, NULL);
    ck_assert_int_gt(deferred_failure_story(f, story, sizeof story), 0);
    ck_assert_msg(!has(story, "EUNKNOWN"), "story: %s", story);
    deferred_failure_unref(f);
    /* no name anywhere: E<number>, in a buffer of this thread's own */
    mine = deferred_err_name(4000);
    ck_assert_str_eq(mine, "E4000");
    ck_assert_str_eq(deferred_err_name(-4000), "E4000");
    ck_assert_str_ne(deferred_strerror(4000), "");
    ck_assert_int_eq(pthread_create(&th, NULL, name_thread, &t), 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_str_eq(t.copy, "E4001");
    ck_assert_str_eq(mine, "E4000");
}
END_TEST

/* ---- sizes and bad input ---- */

/* A story longer than INT_MAX bytes cannot be returned as an int: the
 * snprintf form says -EOVERFLOW (keeping what fits), the allocated one
 * NULL without trying to allocate.  (It claimed INT32_MAX bytes before.)
 * One 16 MiB message shared by 130 inputs of a group is such a story. */
START_TEST(test_story_overflow)
{
    enum { BIG = 16 * 1024 * 1024, COPIES = 130 };
    char *big = malloc(BIG + 1);
    deferred_failure_t *one, *m[COPIES], *g;
    char buf[64];
    size_t i, total;

    ck_assert_ptr_nonnull(big);
    memset(big, 'b', BIG);
    big[BIG] = '\0';
    one = deferred_failure_new(DEFERRED_DOMAIN_USER, 1, "%s", big);
    free(big);
    ck_assert_int_eq(deferred_failure_code(one), 1);
    for (i = 0; i < COPIES; i++)
        m[i] = deferred_failure_ref(one);
    deferred_failure_unref(one);
    g = deferred_failure_group(m, COPIES);
    ck_assert_int_eq(deferred_failure_story(g, NULL, 0), -EOVERFLOW);
    memset(buf, 'Z', sizeof buf);
    ck_assert_int_eq(deferred_failure_story(g, buf, sizeof buf), -EOVERFLOW);
    ck_assert_int_eq(buf[sizeof buf - 1], '\0');
    ck_assert_uint_eq(strlen(buf), sizeof buf - 1);
    ck_assert(strncmp(buf, "library DEFERRED_EGROUP: 130 of 130", 35) == 0);
    total = tu_total();
    ck_assert_ptr_null(deferred_failure_story_alloc(g));
    ck_assert_uint_eq(tu_total(), total);
    deferred_failure_unref(g);
}
END_TEST

/* A first-error quotes at most 200 bytes of its cause's message, cut at
 * a character boundary; its index saturates at LONG_MAX. */
START_TEST(test_first_error_message_bounded)
{
    char msg[1001];
    deferred_failure_t *f;
    const char *m;
    size_t len;

    memset(msg, 'x', 1000);
    msg[1000] = '\0';
    f = deferred_failure_first_error(7, deferred_failure_new(DEFERRED_DOMAIN_USER, 1, "%s", msg));
    m = deferred_failure_message(f);
    len = strlen(m);
    ck_assert_uint_eq(len, strlen("input 7 failed: ") + 200 + 3);
    ck_assert(strncmp(m, "input 7 failed: xxx", 19) == 0);
    ck_assert_str_eq(m + len - 4, "x...");
    ck_assert_uint_eq(strlen(deferred_failure_message(deferred_failure_cause(f))), 1000);
    deferred_failure_unref(f);

    /* a two-byte character across the 200th byte is left out whole */
    memset(msg, 'y', 199);
    memcpy(msg + 199, "\xc3\xa9tail", 7);
    f = deferred_failure_first_error(1, deferred_failure_new(DEFERRED_DOMAIN_USER, 1, "%s", msg));
    m = deferred_failure_message(f);
    len = strlen(m);
    ck_assert_uint_eq(len, strlen("input 1 failed: ") + 199 + 3);
    ck_assert_str_eq(m + len - 4, "y...");
    deferred_failure_unref(f);

    /* exactly 200 bytes: whole, no dots */
    memset(msg, 'z', 200);
    msg[200] = '\0';
    f = deferred_failure_first_error(2, deferred_failure_new(DEFERRED_DOMAIN_USER, 1, "%s", msg));
    ck_assert_uint_eq(strlen(deferred_failure_message(f)), strlen("input 2 failed: ") + 200);
    deferred_failure_unref(f);

    f = deferred_failure_first_error((size_t)-1, deferred_failure_new(DEFERRED_DOMAIN_USER, 1, "c"));
    ck_assert_int_eq(deferred_failure_index(f), LONG_MAX);
    ck_assert(has(deferred_failure_message(f), "failed: c"));
    deferred_failure_unref(f);

    /* a NULL cause stands for the static ENOMEM failure */
    f = deferred_failure_first_error(2, NULL);
    ck_assert_int_eq(deferred_failure_code(f), DEFERRED_EFIRSTERROR);
    ck_assert_int_eq(deferred_failure_code(deferred_failure_cause(f)), ENOMEM);
    ck_assert_str_eq(deferred_failure_message(f), "input 2 failed: out of memory");
    deferred_failure_unref(f);
}
END_TEST

/* Bad arguments get the documented answer, never a crash. */
START_TEST(test_failure_bad_input)
{
    deferred_failure_t *f, *g, *m[1];
    char buf[8];

    /* a count of pointers no array can hold: not read, nothing taken */
    m[0] = deferred_failure_new(DEFERRED_DOMAIN_USER, 1, "kept");
    g = deferred_failure_group(m, SIZE_MAX / sizeof(m[0]) + 1);
    ck_assert_int_eq(deferred_failure_code(g), ENOMEM);
    deferred_failure_unref(g);
    g = deferred_failure_group(m, SIZE_MAX);
    ck_assert_int_eq(deferred_failure_code(g), ENOMEM);
    ck_assert_str_eq(deferred_failure_message(m[0]), "kept");
    deferred_failure_unref(m[0]);

    /* NULL failures: an empty group */
    g = deferred_failure_group(NULL, 5);
    ck_assert_int_eq(deferred_failure_code(g), DEFERRED_EGROUP);
    ck_assert_uint_eq(deferred_failure_group_size(g), 0);
    ck_assert_ptr_null(deferred_failure_group_get(g, 0));
    deferred_failure_unref(g);

    /* NULL file */
    f = deferred_failure_new_at(NULL, 3, DEFERRED_DOMAIN_USER, 1, "x");
    ck_assert_str_eq(deferred_failure_file(f), "?");
    ck_assert_ptr_null(deferred_failure_file(NULL));
    ck_assert_int_eq(deferred_failure_index(NULL), -1);

    /* frames out of range, NULL stage, NULL buffers */
    ck_assert_ptr_null(deferred_failure_context_stage(f, SIZE_MAX));
    ck_assert_ptr_null(deferred_failure_context_item(f, SIZE_MAX));
    ck_assert_int_eq(deferred_failure_add_context(f, NULL, NULL), -EINVAL);
    ck_assert_int_eq(deferred_failure_add_context(NULL, NULL, NULL), -EINVAL);
    ck_assert_int_eq(deferred_failure_story(f, NULL, 1), -EINVAL);
    ck_assert_int_eq(deferred_failure_story(f, NULL, SIZE_MAX), -EINVAL);
    ck_assert_int_eq(deferred_failure_story(NULL, NULL, 0), -EINVAL);
    ck_assert_int_gt(deferred_failure_story(f, NULL, 0), 0);
    ck_assert_int_gt(deferred_failure_story(f, buf, sizeof buf), 0);
    ck_assert_uint_eq(strlen(buf), sizeof buf - 1);
    ck_assert(!deferred_failure_is(f, (deferred_domain_t)99, 1));
    ck_assert(deferred_failure_is(f, DEFERRED_DOMAIN_ANY, 1));
    deferred_failure_unref(f);

    /* the static ENOMEM failure renders and takes no frames */
    f = deferred_failure_first_error(0, NULL);
    ck_assert_int_eq(deferred_failure_add_context(deferred_failure_cause(f), "s", NULL),
                     -ENOMEM);
    deferred_failure_unref(f);
}
END_TEST

/* Frames added while the frames array grows, each allocation failed in
 * turn: the failure keeps exactly the frames added so far. */
START_TEST(test_frames_growth_oom)
{
    deferred_failure_t *f = deferred_failure_new(DEFERRED_DOMAIN_USER, 1, "f");
    size_t added = 0, i;
    unsigned long k;
    char want[32];

    for (k = 1; added < 40; k = k % 3 + 1) {
        int rc;

        tu_fail_at(k);
        rc = deferred_failure_add_context(f, "s", "%zu", added);
        tu_fail_at(0);
        if (rc == 0)
            added++;
        else
            ck_assert_int_eq(rc, -ENOMEM);
        ck_assert_uint_eq(deferred_failure_context_size(f), added);
    }
    for (i = 0; i < added; i++) {
        snprintf(want, sizeof want, "%zu", i);
        ck_assert_str_eq(deferred_failure_context_item(f, i), want);
    }
    deferred_failure_unref(f);
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
        deferred_value_t v = deferred_value_int(xs[i]);
        ck_assert(deferred_value_get_int(v) == xs[i]);
        ck_assert(deferred_value_is_int(v));
        ck_assert(!deferred_value_is_none(v));
        ck_assert(!deferred_value_is_failure(v));
        ck_assert(!deferred_value_is_deferred(v));
        ck_assert_ptr_null(deferred_value_get_failure(v));
        deferred_value_release(v);
    }
    ck_assert(deferred_value_is_none(deferred_value_none()));
    /* Integers are not "none": 0 is told apart from the empty value. */
    ck_assert(!deferred_value_is_none(deferred_value_int(0)));
    ck_assert(!deferred_value_is_int(deferred_value_none()));
    ck_assert(!deferred_value_is_int(deferred_value_make(NULL, plain_release)));
    ck_assert(!deferred_value_is_none(deferred_value_int(1)));
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

    errno = 0; /* a NULL deferred carries errno's code: 0 gives ENOMEM */
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
    tcase_add_test(tf, test_deep_first_errors);
    tcase_add_test(tf, test_deep_groups);
    tcase_add_test(tf, test_deep_mixture);
    tcase_add_test(tf, test_story_nested_members);
    tcase_add_test(tf, test_story_wide_group);
    tcase_add_test(tf, test_story_many_frames);
    tcase_add_test(tf, test_codes_of_the_sources);
    tcase_add_test(tf, test_code_names);
    tcase_add_test(tf, test_story_overflow);
    tcase_add_test(tf, test_first_error_message_bounded);
    tcase_add_test(tf, test_failure_bad_input);
    tcase_add_test(tf, test_frames_growth_oom);

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
