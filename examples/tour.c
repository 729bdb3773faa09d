/* examples/tour.c: the API tour of the README, built and run by
 * "make check" so that it never goes stale.  Keep the two in step. */
#include <deferred.h>
#include <stdio.h>

/* Callbacks and errbacks share one signature: they take ownership of the
 * value and return ownership of the next result. */
static deferred_value_t add_one(deferred_value_t v, void *arg)
{
    (void)arg;
    return deferred_value_int(deferred_value_get_int(v) + 1);
}

static deferred_value_t fail_if_big(deferred_value_t v, void *arg)
{
    (void)arg;
    if (deferred_value_get_int(v) > 10)
        return deferred_value_failure(deferred_failure_new(
            DEFERRED_DOMAIN_USER, ERANGE, "%ld is too big",
            (long)deferred_value_get_int(v)));
    return v;
}

static deferred_value_t use_default(deferred_value_t v, void *arg)
{
    char *story = deferred_failure_story_alloc(deferred_value_get_failure(v));

    printf("recovering from: %s\n", story ? story : "(no memory)");
    deferred_free(story);
    deferred_value_release(v); /* we own the failure: drop it */
    return deferred_value_int((intptr_t)arg);
}

/* The same chain as a coroutine (deferred/async.h): the locals that live
 * across an await are in its frame, whose first member is co. */
struct chain_frame {
    deferred_async_t co;
    deferred_t *in; /* what it awaits first (taken) */
    deferred_value_t v;
};

static int chain_body(void *frame)
{
    struct chain_frame *f = frame;

    DEFERRED_ASYNC_BEGIN(f);
    DEFERRED_AWAIT(f, f->in, f->v); /* resumes when in fires */
    f->v = fail_if_big(add_one(f->v, NULL), NULL);
    /* A failure is a value the body tests: its try/catch. */
    DEFERRED_AWAIT_TRY(f, deferred_succeed(f->v), f->v);
    if (deferred_value_is_failure(f->v))
        f->v = use_default(f->v, (void *)(intptr_t)10);
    DEFERRED_ASYNC_RETURN(f, add_one(f->v, NULL));
    DEFERRED_ASYNC_END(f);
}

int main(void)
{
    deferred_t *d = deferred_new(), *in = deferred_new(), *co;
    struct chain_frame *f = DEFERRED_ASYNC_NEW(struct chain_frame, chain_body, "chain");
    intptr_t result, co_result;

    if (d == NULL || in == NULL || f == NULL)
        return 1;
    deferred_add_callback(d, add_one, NULL);
    deferred_add_callback(d, fail_if_big, NULL);
    deferred_add_errback(d, use_default, (void *)(intptr_t)10);
    deferred_add_callback(d, add_one, NULL);

    deferred_callback(d, deferred_value_int(41)); /* the chain runs now */

    result = deferred_value_get_int(deferred_result(d));
    printf("result: %ld\n", (long)result); /* 41+1 is too big: 10, then 11 */
    deferred_unref(d);

    f->in = deferred_ref(in);
    co = deferred_async_start(f); /* runs up to its first await */
    deferred_callback(in, deferred_value_int(41)); /* the coroutine goes on */
    co_result = deferred_value_get_int(deferred_result(co));
    printf("coroutine: %ld\n", (long)co_result); /* 11 too */
    deferred_unref(co);
    deferred_unref(in);
    return result == 11 && co_result == 11 ? 0 : 1;
}
