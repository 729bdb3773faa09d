/*
 * t/harness-uv.c: the libuv loop for the parametrised loop tests
 * (t/loop-harness.h).  Its state is the uv_loop_t, in a block of its own
 * (plain malloc: it is the test's, not the library's, so the counting
 * allocator does not see it).  destroy() drops the reference, lets the
 * adapter's closes finish (deferred_uv_loop_close()) and fails the test
 * when a handle is left open on the loop.  run_nowait() is
 * uv_run(UV_RUN_NOWAIT), which makes no iteration at all when nothing
 * keeps the uv loop alive (libev's EVRUN_NOWAIT makes one anyway): a send
 * to an unheld wakeup is then not delivered by it.
 */
#include <check.h>
#include <errno.h>
#include <stdlib.h>

#include <uv.h>
#include <deferred/uv.h>

#include "loop-harness.h"

static deferred_loop_t *uv_make(void **state)
{
    uv_loop_t *loop = malloc(sizeof *loop);
    deferred_loop_t *l;
    int rc;

    *state = NULL;
    if (!loop) {
        errno = ENOMEM;
        return NULL;
    }
    rc = uv_loop_init(loop);
    if (rc < 0) {
        free(loop);
        errno = -rc;
        return NULL;
    }
    l = deferred_uv_loop_new(loop);
    if (!l) {
        int e = errno;

        ck_assert_int_eq(uv_loop_close(loop), 0);
        free(loop);
        errno = e;
        return NULL;
    }
    *state = loop;
    return l;
}

static void uv_run_all(deferred_loop_t *l, void *state)
{
    (void)l;
    uv_run(state, UV_RUN_DEFAULT);
}

static void uv_run_nowait(deferred_loop_t *l, void *state)
{
    (void)l;
    uv_run(state, UV_RUN_NOWAIT);
}

static void uv_destroy(deferred_loop_t *l, void *state)
{
    uv_loop_t *loop = state;
    int rc;

    deferred_loop_unref(l);
    rc = deferred_uv_loop_close(loop);
    ck_assert_msg(rc == 0, "uv_loop_close: %s (a handle is still open)",
                  uv_strerror(rc));
    free(loop);
}

const tl_harness_t tl_harness_uv = {
    "uv",
    uv_make,
    uv_run_all,
    uv_run_nowait,
    uv_destroy,
};
