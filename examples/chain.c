/*
 * examples/chain.c: the flagship example of libdeferred's core.
 *
 * Four short scenes, each printed as it happens:
 *  1. chaining: a callback starts a "query" and returns its deferred; the
 *     outer chain waits until the query is answered, then goes on with
 *     its result;
 *  2. pause and unpause: a fired deferred whose callbacks wait for unpause;
 *  3. cancel: a cancellable deferred whose canceller gives up the work; an
 *     errback sees ECANCELED;
 *  4. recovery: a callback fails with a failure carrying context; an
 *     errback prints the failure's story and recovers, and the chain goes
 *     on on the success path.
 *
 * A report hook catches what the library reports (a failure nobody handled,
 * and in debug mode a second fire); none is expected but the second fire
 * of scene 3 in debug mode.
 *
 * Every step is checked: the program exits 0 only when everything happened
 * as expected, so "make check" running it is a real test.  It uses only the
 * public header <deferred.h>.
 */
#include <deferred.h>

#include <stdio.h>
#include <string.h>

static int problems;

#define EXPECT(cond)                                                     \
    do {                                                                 \
        if (!(cond)) {                                                   \
            fprintf(stderr, "chain: %s:%d: unexpected: %s\n", __FILE__,  \
                    __LINE__, #cond);                                    \
            problems++;                                                  \
        }                                                                \
    } while (0)

/* What the library reported through the hook. */
static int unhandled_reports;
static int already_fired_reports;

static void report(const deferred_report_info_t *r, void *arg)
{
    deferred_report_t kind = r->kind;
    const deferred_failure_t *f = r->failure;

    (void)arg;
    if (kind == DEFERRED_REPORT_UNHANDLED)
        unhandled_reports++;
    else if (kind == DEFERRED_REPORT_ALREADY_FIRED)
        already_fired_reports++;
    printf("  report hook: %s: %s\n",
           kind == DEFERRED_REPORT_UNHANDLED ? "unhandled failure" : "fired twice",
           deferred_failure_message(f));
}

/* What the callbacks record, so that main can check the order of events. */
struct trace {
    int steps;        /* callbacks run so far */
    intptr_t last;    /* the last value a recording callback saw */
    deferred_t *query; /* the pending "query" of scene 1 */
    int cancelled;    /* times the canceller of scene 3 ran */
    int recovered;    /* times the errback of scene 4 recovered */
};

/* Scene 1. */

/* Starts a query for the user id v and returns its deferred: the outer
 * chain waits for it.  The reference returned is taken by the chain. */
static deferred_value_t start_query(deferred_value_t v, void *arg)
{
    struct trace *t = arg;

    t->steps++;
    printf("  start_query: looking up user %ld; the chain now waits\n",
           (long)deferred_value_get_int(v));
    t->query = deferred_new();
    if (t->query == NULL)
        return deferred_value_failure(NULL); /* an ENOMEM failure */
    return deferred_value_deferred(deferred_ref(t->query));
}

/* Records the value it sees and passes it on plus one. */
static deferred_value_t record(deferred_value_t v, void *arg)
{
    struct trace *t = arg;

    t->steps++;
    t->last = deferred_value_get_int(v);
    printf("  record: got %ld\n", (long)t->last);
    return deferred_value_int(t->last + 1);
}

static void scene_chaining(void)
{
    struct trace t = {0, 0, NULL, 0, 0};
    deferred_t *outer = deferred_new();

    printf("1. chaining: a callback returns a deferred fired later\n");
    EXPECT(outer != NULL);
    if (outer == NULL)
        return;
    EXPECT(deferred_add_callback(outer, start_query, &t) == 0);
    EXPECT(deferred_add_callback(outer, record, &t) == 0);

    EXPECT(deferred_callback(outer, deferred_value_int(7)) == 0);
    EXPECT(t.steps == 1);                /* record has not run yet */
    EXPECT(deferred_is_paused(outer));   /* outer waits on the query */
    EXPECT(t.query != NULL);

    printf("  the query answers 41\n");
    if (t.query != NULL) {
        EXPECT(deferred_callback(t.query, deferred_value_int(41)) == 0);
        deferred_unref(t.query);
    }
    EXPECT(t.steps == 2 && t.last == 41);
    EXPECT(deferred_has_result(outer));
    EXPECT(deferred_value_get_int(deferred_result(outer)) == 42);
    printf("  final result: %ld\n", (long)deferred_value_get_int(deferred_result(outer)));
    deferred_unref(outer);
}

/* Scene 2. */

static void scene_pause(void)
{
    struct trace t = {0, 0, NULL, 0, 0};
    deferred_t *d = deferred_new();

    printf("2. pause and unpause\n");
    EXPECT(d != NULL);
    if (d == NULL)
        return;
    EXPECT(deferred_pause(d) == 0);
    EXPECT(deferred_callback(d, deferred_value_int(1)) == 0);
    EXPECT(deferred_add_callback(d, record, &t) == 0);
    EXPECT(deferred_add_callback(d, record, &t) == 0);
    printf("  fired while paused: %d callbacks ran\n", t.steps);
    EXPECT(t.steps == 0);
    EXPECT(deferred_unpause(d) == 0);
    printf("  after unpause: %d callbacks ran\n", t.steps);
    EXPECT(t.steps == 2 && t.last == 2);
    EXPECT(deferred_value_get_int(deferred_result(d)) == 3);
    /* A stray unpause is an error, not a silent underflow. */
    EXPECT(deferred_unpause(d) == -EINVAL);
    deferred_unref(d);
}

/* Scene 3. */

static void give_up(deferred_t *d, void *arg)
{
    struct trace *t = arg;

    (void)d;
    t->cancelled++;
    printf("  canceller: the slow query is abandoned\n");
}

/* An errback that expects ECANCELED and turns it into a default value. */
static deferred_value_t on_cancelled(deferred_value_t v, void *arg)
{
    struct trace *t = arg;
    deferred_failure_t *f = deferred_value_get_failure(v);

    t->steps++;
    printf("  errback: %s (%s)\n", deferred_failure_message(f),
           deferred_err_name(deferred_failure_code(f)));
    EXPECT(deferred_failure_is(f, DEFERRED_DOMAIN_ANY, ECANCELED));
    deferred_value_release(v);
    return deferred_value_int(-1);
}

static void scene_cancel(void)
{
    struct trace t = {0, 0, NULL, 0, 0};
    deferred_t *d = deferred_new_cancellable(give_up, &t, NULL);

    printf("3. cancel\n");
    EXPECT(d != NULL);
    if (d == NULL)
        return;
    EXPECT(deferred_add_callbacks(d, record, &t, on_cancelled, &t) == 0);
    EXPECT(deferred_cancel(d) == 0);
    EXPECT(deferred_cancel(d) == 0); /* idempotent */
    EXPECT(t.cancelled == 1);
    EXPECT(t.steps == 1);
    EXPECT(deferred_value_get_int(deferred_result(d)) == -1);
    /* The work finishing late is refused: the deferred has fired.  In
     * debug mode the report hook also hears of it, with both sites. */
    EXPECT(deferred_callback(d, deferred_value_int(5)) == -EALREADY);
    EXPECT(already_fired_reports == (deferred_get_debug() ? 1 : 0));
    deferred_unref(d);
}

/* Scene 4. */

/* A parsing step that fails on its input: the failure names the stage
 * and the item in a context frame. */
static deferred_value_t parse_row(deferred_value_t v, void *arg)
{
    deferred_failure_t *f;

    (void)arg;
    f = deferred_failure_new(DEFERRED_DOMAIN_USER, 22, "row %ld has no name",
                             (long)deferred_value_get_int(v));
    deferred_failure_add_context(f, "parse_row", "row %ld",
                                 (long)deferred_value_get_int(v));
    return deferred_value_failure(f);
}

/* Must be skipped: the chain is on the error path. */
static deferred_value_t must_not_run(deferred_value_t v, void *arg)
{
    (void)arg;
    fprintf(stderr, "chain: a callback ran on the error path\n");
    problems++;
    return v;
}

/* Prints the failure's story and recovers with 0. */
static deferred_value_t recover(deferred_value_t v, void *arg)
{
    struct trace *t = arg;
    deferred_failure_t *f = deferred_value_get_failure(v);
    char *story = deferred_failure_story_alloc(f);

    EXPECT(story != NULL);
    if (story != NULL) {
        printf("  errback: the failure's story:\n%s\n", story);
        EXPECT(strstr(story, "row 7 has no name") != NULL);
        EXPECT(strstr(story, "parse_row") != NULL);
        deferred_free(story);
    }
    EXPECT(deferred_failure_code(f) == 22);
    EXPECT(deferred_failure_domain(f) == DEFERRED_DOMAIN_USER);
    t->recovered++;
    deferred_value_release(v);
    printf("  errback: recovering with 0\n");
    return deferred_value_int(0);
}

static void scene_recover(void)
{
    struct trace t = {0, 0, NULL, 0, 0};
    deferred_t *d = deferred_new();

    printf("4. an errback that recovers\n");
    EXPECT(d != NULL);
    if (d == NULL)
        return;
    EXPECT(deferred_add_callback(d, parse_row, NULL) == 0);
    EXPECT(deferred_add_callback(d, must_not_run, NULL) == 0);
    EXPECT(deferred_add_errback(d, recover, &t) == 0);
    EXPECT(deferred_add_callback(d, record, &t) == 0);
    EXPECT(deferred_callback(d, deferred_value_int(7)) == 0);
    EXPECT(t.recovered == 1);
    EXPECT(t.steps == 1 && t.last == 0);
    EXPECT(!deferred_value_is_failure(deferred_result(d)));
    deferred_unref(d);
}

int main(void)
{
    printf("libdeferred %s: a chain with chaining, pause, cancel and recovery\n",
           deferred_version());
    deferred_set_report_hook(report, NULL);
    scene_chaining();
    scene_pause();
    scene_cancel();
    scene_recover();
    EXPECT(unhandled_reports == 0);
    deferred_set_report_hook(NULL, NULL);
    if (problems != 0) {
        printf("chain: %d unexpected outcomes\n", problems);
        return 1;
    }
    printf("chain: everything happened as expected\n");
    return 0;
}
