/*
 * testutil.c: the counting allocator, record log, small callbacks, report
 * hook and checked fixture shared by the Check programs (see testutil.h).
 *
 * The one thing to know: all state here is global and reset by tu_setup(),
 * because with CK_FORK=no every test of a program runs in one process.
 */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ctype.h>
#include <pthread.h>

/* ---- the counting, failing allocator ---- */

static size_t live_blocks;
static size_t total_allocs;
static unsigned long attempts;
static unsigned long fail_n;
static bool fail_sticky;
static bool injected;

static bool should_fail(void)
{
    attempts++;
    if (fail_n == 0)
        return false;
    if (attempts == fail_n || (fail_sticky && attempts > fail_n)) {
        injected = true;
        return true;
    }
    return false;
}

static void *tu_malloc(size_t size)
{
    void *p;

    if (should_fail())
        return NULL;
    p = malloc(size ? size : 1);
    if (p) {
        live_blocks++;
        total_allocs++;
    }
    return p;
}

static void *tu_realloc(void *ptr, size_t size)
{
    void *p;

    if (should_fail())
        return NULL;
    p = realloc(ptr, size ? size : 1);
    if (p && !ptr) {
        live_blocks++;
        total_allocs++;
    }
    return p;
}

static void tu_free(void *ptr)
{
    if (!ptr)
        return;
    live_blocks--;
    free(ptr);
}

void tu_install_allocator(void)
{
    int rc = deferred_set_allocator(tu_malloc, tu_realloc, tu_free);
    ck_assert_int_eq(rc, 0);
}

size_t tu_live(void) { return live_blocks; }
size_t tu_total(void) { return total_allocs; }

void tu_reset_counts(void)
{
    live_blocks = 0;
    total_allocs = 0;
    attempts = 0;
    fail_n = 0;
    fail_sticky = false;
    injected = false;
}

void tu_fail_at(unsigned long n)
{
    attempts = 0;
    fail_n = n;
    fail_sticky = false;
    injected = false;
}

void tu_fail_from(unsigned long n)
{
    tu_fail_at(n);
    fail_sticky = n != 0;
}

bool tu_failure_injected(void) { return injected; }
unsigned long tu_attempts(void) { return attempts; }

/* ---- the report hook ---- */

struct tu_reports tu_reports;

void tu_report_hook(const deferred_report_info_t *report, void *arg)
{
    deferred_report_t kind = report->kind;
    const deferred_failure_t *f = report->failure;

    (void)arg;
    tu_reports.total++;
    if (kind == DEFERRED_REPORT_UNHANDLED)
        tu_reports.unhandled++;
    else if (kind == DEFERRED_REPORT_ALREADY_FIRED)
        tu_reports.already_fired++;
    tu_reports.last_kind = (int)kind;
    tu_reports.last_new_file = report->new_file;
    tu_reports.last_new_line = report->new_line;
    tu_reports.last_fire_file = report->fire_file;
    tu_reports.last_fire_line = report->fire_line;
    tu_reports.last_code = deferred_failure_code(f);
    if (tu_reports.last_code == ENOMEM)
        tu_reports.saw_enomem = true;
    snprintf(tu_reports.last_message, sizeof tu_reports.last_message, "%s",
             f ? deferred_failure_message(f) : "(null)");
    tu_reports.last_story[0] = '\0';
    if (f)
        deferred_failure_story(f, tu_reports.last_story,
                               sizeof tu_reports.last_story);
}

/* ---- the record log ---- */

struct tu_log tu_log;
int tu_depth;
int tu_released;
const deferred_failure_t *tu_last_failure;
int tu_fail_calls;

void tu_log_reset(void)
{
    memset(&tu_log, 0, sizeof tu_log);
    tu_depth = 0;
}

bool tu_log_has_enomem(void)
{
    int i;

    for (i = 0; i < tu_log.n && i < TU_MAX_LOG; i++)
        if (tu_log.e[i].kind == TU_FAILURE && tu_log.e[i].code == ENOMEM)
            return true;
    return false;
}

int tu_log_count(int tag)
{
    int i, c = 0;

    for (i = 0; i < tu_log.n && i < TU_MAX_LOG; i++)
        if (tu_log.e[i].tag == tag)
            c++;
    return c;
}

static void tu_log_add(deferred_value_t v, int tag)
{
    struct tu_entry *e;

    if (tu_log.n >= TU_MAX_LOG) {
        tu_log.n++;
        return;
    }
    e = &tu_log.e[tu_log.n++];
    e->tag = tag;
    e->depth = tu_depth;
    if (deferred_value_is_failure(v)) {
        e->kind = TU_FAILURE;
        e->failure = deferred_value_get_failure(v);
        e->code = deferred_failure_code(e->failure);
    } else if (deferred_value_is_deferred(v)) {
        e->kind = TU_DEFERRED;
    } else if (deferred_value_is_none(v)) {
        e->kind = TU_NONE;
        e->value = 0;
    } else if (tu_is_tracked(v)) {
        e->kind = TU_VALUE;
        e->value = tu_tracked_get(v);
    } else {
        e->kind = TU_VALUE;
        e->value = deferred_value_get_int(v);
    }
}

deferred_value_t tu_record(deferred_value_t v, void *arg)
{
    tu_log_add(v, (int)ARGI(arg));
    return v;
}

/* ---- callbacks ---- */

deferred_value_t tu_add_one(deferred_value_t v, void *arg)
{
    intptr_t x;

    (void)arg;
    x = tu_is_tracked(v) ? tu_tracked_get(v) : deferred_value_get_int(v);
    deferred_value_release(v);
    return deferred_value_int(x + 1);
}

deferred_value_t tu_fail_with(deferred_value_t v, void *arg)
{
    int code = (int)ARGI(arg);
    deferred_failure_t *f;

    deferred_value_release(v);
    tu_fail_calls++;
    f = deferred_failure_new(DEFERRED_DOMAIN_USER, code, "fail_with %d", code);
    tu_last_failure = f;
    return deferred_value_failure(f);
}

deferred_value_t tu_return_deferred(deferred_value_t v, void *arg)
{
    deferred_value_release(v);
    return deferred_value_deferred(deferred_ref((deferred_t *)arg));
}

deferred_value_t tu_return_int(deferred_value_t v, void *arg)
{
    deferred_value_release(v);
    return deferred_value_int(ARGI(arg));
}

deferred_value_t tu_recover(deferred_value_t v, void *arg)
{
    deferred_value_release(v);
    return deferred_value_int(ARGI(arg));
}

deferred_value_t tu_pass(deferred_value_t v, void *arg)
{
    (void)arg;
    return v;
}

void tu_count_destroy(void *arg)
{
    (*(int *)arg)++;
}

struct tu_carg *tu_carg(int tag, int *counter)
{
    struct tu_carg *a = deferred_malloc(sizeof *a);

    ck_assert_ptr_nonnull(a);
    a->tag = tag;
    a->counter = counter;
    return a;
}

void tu_carg_destroy(void *arg)
{
    struct tu_carg *a = arg;

    (*a->counter)++;
    deferred_free(a);
}

deferred_value_t tu_record_carg(deferred_value_t v, void *arg)
{
    struct tu_carg *a = arg;

    tu_log_add(v, a->tag);
    return v;
}

/* Tracked values: a block holding the integer. */
static void tu_tracked_release(void *p)
{
    tu_released++;
    deferred_free(p);
}

deferred_value_t tu_tracked(intptr_t x)
{
    intptr_t *p = deferred_malloc(sizeof *p);

    if (!p)
        return deferred_value_failure(NULL);
    *p = x;
    return deferred_value_make(p, tu_tracked_release);
}

bool tu_is_tracked(deferred_value_t v)
{
    return v.release == tu_tracked_release && v.ptr != NULL;
}

intptr_t tu_tracked_get(deferred_value_t v)
{
    return *(intptr_t *)v.ptr;
}

void tu_canceller_count(deferred_t *d, void *arg)
{
    (void)d;
    (*(int *)arg)++;
}

void tu_canceller_fire(deferred_t *d, void *arg)
{
    (*(int *)arg)++;
    deferred_callback(d, deferred_value_int(99));
}

/* ---- the out-of-memory sweep ---- */

bool tu_failure_has_enomem(const deferred_failure_t *f)
{
    size_t i;

    if (!f)
        return false;
    if (deferred_failure_find(f, DEFERRED_DOMAIN_ANY, ENOMEM))
        return true;
    for (i = 0; i < deferred_failure_group_size(f); i++)
        if (tu_failure_has_enomem(deferred_failure_group_get(f, i)))
            return true;
    return false;
}

deferred_value_t tu_oom_note(struct tu_oom *r, deferred_value_t v)
{
    if (deferred_value_is_failure(v) &&
        tu_failure_has_enomem(deferred_value_get_failure(v)))
        r->saw = true;
    return v;
}

intptr_t tu_oom_take(struct tu_oom *r, deferred_t *d)
{
    deferred_value_t v = deferred_result_take(d);
    intptr_t x;

    if (deferred_value_is_failure(v)) {
        deferred_failure_t *f = deferred_value_get_failure(v);
        if (tu_failure_has_enomem(f))
            r->saw = true;
        x = -1000 - deferred_failure_code(f);
    } else if (tu_is_tracked(v)) {
        x = tu_tracked_get(v);
    } else {
        x = deferred_value_get_int(v);
    }
    deferred_value_release(v);
    return x;
}

deferred_value_t tu_oom_tracked(struct tu_oom *r, intptr_t x)
{
    deferred_value_t v = tu_tracked(x);

    if (deferred_value_is_failure(v))
        r->saw = true;
    return v;
}

deferred_failure_t *tu_oom_ufail(struct tu_oom *r, int code)
{
    deferred_failure_t *f = deferred_failure_new(DEFERRED_DOMAIN_USER, code,
                                                 "failure %d", code);

    if (deferred_failure_code(f) == ENOMEM)
        r->saw = true;
    return f;
}

static unsigned long tu_oom_n;

unsigned long tu_oom_current(void) { return tu_oom_n; }

static void tu_oom_run_once(tu_oom_fn fn, void *arg, struct tu_oom *r)
{
    errno = 0;
    memset(r, 0, sizeof *r);
    r->arg = arg;
    tu_log_reset();
    memset(&tu_reports, 0, sizeof tu_reports);
    tu_released = 0;
    fn(r);
    if (tu_log_has_enomem() || tu_reports.saw_enomem)
        r->saw = true;
}

/* TU_OOM_QUIET: only an unhandled ENOMEM or ECANCELED, under injection. */
static void tu_oom_check_reports(const char *name, unsigned long n,
                                 bool inj)
{
    ck_assert_msg(tu_reports.total == tu_reports.unhandled,
                  "%s: %d unexpected reports at N=%lu", name,
                  tu_reports.total - tu_reports.unhandled, n);
    if (tu_reports.unhandled) {
        ck_assert_msg(inj, "%s: unhandled failure %d reported without "
                      "injection", name, tu_reports.last_code);
        ck_assert_msg(tu_reports.last_code == ENOMEM ||
                      tu_reports.last_code == ECANCELED,
                      "%s: unhandled failure %d reported at N=%lu", name,
                      tu_reports.last_code, n);
    }
}

unsigned long tu_oom_sweep(const char *name, tu_oom_fn fn, void *arg,
                           unsigned flags)
{
    unsigned long n, points = 0;
    int sticky;
    struct tu_oom r;
    /* Blocks made before the sweep (a fixture's loop, its adapter) are
     * not the runs': each run is counted from 0, and the count is given
     * back at the end, so the fixture's own check stays exact. */
    size_t live_before = live_blocks;

    /* the scenario without injection first: its normal result */
    tu_reset_counts();
    tu_oom_n = 0;
    tu_oom_run_once(fn, arg, &r);
    ck_assert_msg(!r.saw, "%s: ENOMEM without injection", name);
    ck_assert_msg(r.ok, "%s: wrong result without injection", name);
    ck_assert_msg(tu_live() == 0, "%s: %zu blocks alive without injection",
                  name, tu_live());
    if (flags & TU_OOM_QUIET)
        tu_oom_check_reports(name, 0, false);

    for (sticky = 0; sticky < ((flags & TU_OOM_STICKY) ? 2 : 1); sticky++) {
        unsigned long surfaced = 0;

        for (n = 1;; n++) {
            bool inj;

            tu_reset_counts();
            if (sticky)
                tu_fail_from(n);
            else
                tu_fail_at(n);
            tu_oom_n = n;
            tu_oom_run_once(fn, arg, &r);
            inj = tu_failure_injected();
            tu_fail_at(0);
            deferred_set_debug(false);
            ck_assert_msg(tu_live() == 0, "%s: %zu blocks alive after failing "
                          "allocation %lu%s", name, tu_live(), n,
                          sticky ? " onwards" : "");
            if (flags & TU_OOM_QUIET)
                tu_oom_check_reports(name, n, inj);
            if (!inj) {
                ck_assert_msg(r.ok && !r.saw, "%s: wrong final result at N=%lu",
                              name, n);
                break;
            }
            surfaced += r.saw;
            if (flags & TU_OOM_STRICT)
                ck_assert_msg(r.saw, "%s: allocation %lu%s failed but no "
                              "ENOMEM surfaced", name, n,
                              sticky ? " onwards" : "");
            else if (!(flags & TU_OOM_HALF))
                ck_assert_msg(r.saw || r.ok, "%s: allocation %lu%s failed: "
                              "neither ENOMEM nor the normal result", name, n,
                              sticky ? " onwards" : "");
            ck_assert_msg(n < 100000, "%s: runaway", name);
        }
        if (flags & TU_OOM_HALF)
            ck_assert_msg(surfaced * 2 >= n - 1, "%s: only %lu of %lu failed "
                          "allocations surfaced as ENOMEM", name, surfaced,
                          n - 1);
        if (!sticky)
            points = n - 1;
    }
    ck_assert_uint_gt(points, 0);
    live_blocks = live_before;
    printf("oom: %-28s %lu allocation points exercised\n", name, points);
    fflush(stdout);
    return points;
}

/* ---- strings ---- */

bool tu_contains_number(const char *s, long n)
{
    char num[32];
    size_t len;
    const char *p = s;

    snprintf(num, sizeof num, "%ld", n);
    len = strlen(num);
    while (s && (p = strstr(p, num)) != NULL) {
        bool before = p > s && isdigit((unsigned char)p[-1]);
        bool after = isdigit((unsigned char)p[len]);
        if (!before && !after)
            return true;
        p++;
    }
    return false;
}

/* ---- the fixture ---- */

void tu_setup(void)
{
    tu_reset_counts();
    tu_install_allocator();
    deferred_set_report_hook(tu_report_hook, NULL);
    deferred_set_debug(false);
    memset(&tu_reports, 0, sizeof tu_reports);
    tu_log_reset();
    tu_released = 0;
    tu_last_failure = NULL;
    tu_fail_calls = 0;
}

void tu_teardown(void)
{
    tu_fail_at(0);
    deferred_set_debug(false);
    ck_assert_uint_eq(tu_live(), 0);
}

int tu_run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

/* ---- depth ---- */

struct tu_small_call {
    void (*fn)(void *);
    void *arg;
};

static void *tu_small_thread(void *p)
{
    struct tu_small_call *call = p;

    call->fn(call->arg);
    return NULL;
}

void tu_run_small_stack(void (*fn)(void *), void *arg)
{
    struct tu_small_call call = {fn, arg};
    pthread_attr_t attr;
    pthread_t th;

    ck_assert_int_eq(pthread_attr_init(&attr), 0);
    ck_assert_int_eq(pthread_attr_setstacksize(&attr, TU_SMALL_STACK), 0);
    ck_assert_int_eq(pthread_create(&th, &attr, tu_small_thread, &call), 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    pthread_attr_destroy(&attr);
}
