/*
 * ev.c: the libev adapter (deferred_ev_loop_new(), deferred/ev.h) and the
 * deferred_ev_* functions, which run the loop layer (deferred/loop.h) on
 * the adapter of their struct ev_loop *.
 *
 * Each struct ev_loop has at most one adapter, found through a registry
 * (loops run on different threads, so the registry has its own lock) and
 * shared by reference: the deferred_loop_t lives while a user's
 * reference or an object made on it does, and its release takes it out
 * of the registry.  A deferred_ev_* call takes a reference for the time
 * of the call (deferred_ev_remote_new(), made per firing, borrows the
 * thread's last adapter instead when it is still valid); what it makes
 * holds its own.
 *
 * The handles are libev watchers inside small blocks that point back to
 * their callback (as hiredis' adapters/libev.h does).  The wakeup is an
 * ev_async, started for its whole life but ev_unref'ed, so that it keeps
 * ev_run() going only while held.
 */
#include <stdlib.h>
#include <string.h>

#include "ev-private.h"

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct deferred__ev_adapter *registry;

/* The adapter a thread found last, so that the deferred_ev_* functions,
 * which find their loop's adapter on every call (a remote per firing),
 * skip the registry's lock: valid while no adapter was released since
 * (generation, bumped under the lock by every release, is unchanged). */
static unsigned long generation;
#if defined(__GNUC__)
#define EV_THREAD_LOCAL __thread __attribute__((tls_model("initial-exec")))
#else
#define EV_THREAD_LOCAL _Thread_local
#endif
static EV_THREAD_LOCAL struct {
    struct ev_loop *loop;
    struct deferred__ev_adapter *a;
    unsigned long generation;
} last;

/* ---- the adapter's handles --------------------------------------------- */

struct ev_timer_h {
    ev_timer w;
    struct ev_loop *loop;
    deferred_loop_fn cb;
    void *arg;
};

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct ev_timer_h *t = w->data;

    (void)loop;
    (void)revents;
    t->cb(t->arg);
}

static double a_now(void *impl)
{
    return ev_now(((struct deferred__ev_adapter *)impl)->loop);
}

static void *a_timer_new(void *impl, deferred_loop_fn cb, void *arg)
{
    struct ev_timer_h *t = deferred_malloc(sizeof *t);

    if (!t)
        return NULL;
    t->loop = ((struct deferred__ev_adapter *)impl)->loop;
    t->cb = cb;
    t->arg = arg;
    ev_timer_init(&t->w, timer_cb, 0.0, 0.0);
    t->w.data = t;
    return t;
}

static void a_timer_start(void *h, double seconds)
{
    struct ev_timer_h *t = h;

    ev_timer_stop(t->loop, &t->w);
    /* A delay counts from now, not from the loop's cached time, which may
     * be stale when the loop has been busy; a kick (0) needs no clock. */
    if (seconds > 0.0)
        ev_now_update(t->loop);
    ev_timer_set(&t->w, seconds, 0.0);
    ev_timer_start(t->loop, &t->w);
}

static void a_timer_stop(void *h)
{
    struct ev_timer_h *t = h;

    ev_timer_stop(t->loop, &t->w);
}

static void a_timer_free(void *h)
{
    struct ev_timer_h *t = h;

    ev_timer_stop(t->loop, &t->w);
    deferred_free(t);
}

struct ev_io_h {
    ev_io w;
    struct ev_loop *loop;
    int fd;
    deferred_loop_io_fn cb;
    void *arg;
};

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct ev_io_h *io = w->data;
    int r = 0;

    (void)loop;
    if (revents & EV_READ)
        r |= DEFERRED_LOOP_READ;
    if (revents & EV_WRITE)
        r |= DEFERRED_LOOP_WRITE;
    io->cb(io->arg, r);
}

static void *a_io_new(void *impl, int fd, deferred_loop_io_fn cb, void *arg)
{
    struct ev_io_h *io = deferred_malloc(sizeof *io);

    if (!io)
        return NULL;
    io->loop = ((struct deferred__ev_adapter *)impl)->loop;
    io->fd = fd;
    io->cb = cb;
    io->arg = arg;
    ev_io_init(&io->w, io_cb, fd, EV_READ);
    io->w.data = io;
    return io;
}

static void a_io_set(void *h, int events)
{
    struct ev_io_h *io = h;
    int e = 0;

    ev_io_stop(io->loop, &io->w);
    if (events & DEFERRED_LOOP_READ)
        e |= EV_READ;
    if (events & DEFERRED_LOOP_WRITE)
        e |= EV_WRITE;
    if (!e)
        return;
    ev_io_set(&io->w, io->fd, e);
    ev_io_start(io->loop, &io->w);
}

static void a_io_free(void *h)
{
    struct ev_io_h *io = h;

    ev_io_stop(io->loop, &io->w);
    deferred_free(io);
}

struct ev_wake_h {
    ev_async w;
    struct ev_loop *loop;
    deferred_loop_fn cb;
    void *arg;
    bool held;
};

static void wake_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    struct ev_wake_h *k = w->data;

    (void)loop;
    (void)revents;
    k->cb(k->arg);
}

static void *a_wakeup_new(void *impl, deferred_loop_fn cb, void *arg)
{
    struct ev_wake_h *k = deferred_malloc(sizeof *k);

    if (!k)
        return NULL;
    k->loop = ((struct deferred__ev_adapter *)impl)->loop;
    k->cb = cb;
    k->arg = arg;
    k->held = false;
    ev_async_init(&k->w, wake_cb);
    k->w.data = k;
    ev_async_start(k->loop, &k->w);
    ev_unref(k->loop); /* the watcher alone does not keep the loop running */
    return k;
}

static void a_wakeup_send(void *h)
{
    struct ev_wake_h *k = h;

    ev_async_send(k->loop, &k->w);
}

static void a_wakeup_hold(void *h, bool hold)
{
    struct ev_wake_h *k = h;

    if (hold == k->held)
        return;
    k->held = hold;
    if (hold)
        ev_ref(k->loop);
    else
        ev_unref(k->loop);
}

static void a_wakeup_free(void *h)
{
    struct ev_wake_h *k = h;

    /* Undo the ev_unref before stopping, as ev.pod asks. */
    if (!k->held)
        ev_ref(k->loop);
    ev_async_stop(k->loop, &k->w);
    deferred_free(k);
}

static void a_release(void *impl)
{
    struct deferred__ev_adapter *a = impl, **pp;

    pthread_mutex_lock(&registry_lock);
    __atomic_store_n(&generation, generation + 1, __ATOMIC_RELEASE);
    for (pp = &registry; *pp; pp = &(*pp)->next)
        if (*pp == a) {
            *pp = a->next;
            break;
        }
    pthread_mutex_unlock(&registry_lock);
    deferred_free(a);
}

static void a_describe(void *impl, deferred_dump_t *w)
{
    struct deferred__ev_adapter *a = impl;

    if (a->sig_on)
        deferred_dump_int(w, "dump_signal", a->sig.signum);
}

static const deferred_loop_ops_t ev_ops = {
    .version = DEFERRED_LOOP_OPS_VERSION,
    .name = "ev",
    .now = a_now,
    .timer_new = a_timer_new,
    .timer_start = a_timer_start,
    .timer_stop = a_timer_stop,
    .timer_free = a_timer_free,
    .io_new = a_io_new,
    .io_set = a_io_set,
    .io_free = a_io_free,
    .wakeup_new = a_wakeup_new,
    .wakeup_send = a_wakeup_send,
    .wakeup_hold = a_wakeup_hold,
    .wakeup_free = a_wakeup_free,
    .release = a_release,
    .describe = a_describe,
};

/* ---- the registry -------------------------------------------------------- */

deferred_loop_t *deferred_ev_loop_new(struct ev_loop *loop)
{
    struct deferred__ev_adapter *a;
    deferred_loop_t *dl = NULL;

    if (!loop) {
        errno = EINVAL;
        return NULL;
    }
    if (last.loop == loop &&
        last.generation == __atomic_load_n(&generation, __ATOMIC_ACQUIRE))
        return deferred_loop_ref(last.a->dl);
    pthread_mutex_lock(&registry_lock);
    for (a = registry; a; a = a->next)
        if (a->loop == loop) {
            dl = deferred_loop_ref(a->dl);
            last.loop = loop;
            last.a = a;
            last.generation = generation;
            break;
        }
    pthread_mutex_unlock(&registry_lock);
    if (dl)
        return dl;
    a = deferred_malloc(sizeof *a);
    if (!a) {
        errno = ENOMEM;
        return NULL;
    }
    memset(a, 0, sizeof *a);
    a->loop = loop;
    dl = deferred_loop_new(&ev_ops, a);
    if (!dl) {
        deferred_free(a);
        errno = ENOMEM;
        return NULL;
    }
    a->dl = dl;
    pthread_mutex_lock(&registry_lock);
    a->next = registry;
    registry = a;
    last.loop = loop;
    last.a = a;
    last.generation = generation;
    pthread_mutex_unlock(&registry_lock);
    return dl;
}

struct ev_loop *deferred_ev_loop_of(const deferred_loop_t *dl)
{
    if (!dl || deferred_loop_name(dl) != ev_ops.name)
        return NULL;
    return ((struct deferred__ev_adapter *)deferred_loop_impl(dl))->loop;
}

/* ---- deferred_ev_*: the loop layer on the loop's adapter ---------------- */

/* The adapter of loop with a reference for the call, or NULL: NULL when
 * loop is NULL (the loop layer's own check then answers EINVAL), or out
 * of memory (*oom). */
static deferred_loop_t *acquire(struct ev_loop *loop, bool *oom)
{
    deferred_loop_t *dl;

    *oom = false;
    if (!loop)
        return NULL;
    dl = deferred_ev_loop_new(loop);
    if (!dl)
        *oom = true;
    return dl;
}

#define EV_WRAP_PTR(call)                                                    \
    do {                                                                     \
        bool oom_;                                                           \
        deferred_loop_t *dl = acquire(loop, &oom_);                          \
        void *r_;                                                            \
                                                                             \
        if (oom_) {                                                          \
            errno = ENOMEM;                                                  \
            return NULL;                                                     \
        }                                                                    \
        r_ = (call);                                                         \
        if (r_) {                                                            \
            deferred_loop_unref(dl); /* r_ holds its own */                  \
        } else if (dl) {                                                     \
            int e_ = errno;                                                  \
            deferred_loop_unref(dl);                                         \
            errno = e_;                                                      \
        }                                                                    \
        return r_;                                                           \
    } while (0)

deferred_t *deferred_ev_later(struct ev_loop *loop, double seconds)
{
    EV_WRAP_PTR(deferred_loop_later(dl, seconds));
}

deferred_t *deferred_ev_readable(struct ev_loop *loop, int fd)
{
    EV_WRAP_PTR(deferred_loop_readable(dl, fd));
}

deferred_t *deferred_ev_writable(struct ev_loop *loop, int fd)
{
    EV_WRAP_PTR(deferred_loop_writable(dl, fd));
}

deferred_stage_t *deferred_ev_lines(struct ev_loop *loop, int fd, size_t max_line)
{
    EV_WRAP_PTR(deferred_loop_lines(dl, fd, max_line));
}

static __attribute__((noinline)) deferred_ev_remote_t *remote_new_slow(struct ev_loop *loop,
                                                                       deferred_t *d)
{
    EV_WRAP_PTR(deferred_loop_remote_new(dl, d));
}

deferred_ev_remote_t *deferred_ev_remote_new(struct ev_loop *loop, deferred_t *d)
{
    /* The thread's last adapter, when still valid, is borrowed for the
     * call without a reference (the handle takes its own): a remote is
     * made per firing, so this is the hot path.  Only this thread
     * releases loop's adapter (its loop thread). */
    if (loop && last.loop == loop &&
        last.generation == __atomic_load_n(&generation, __ATOMIC_ACQUIRE))
        return deferred_loop_remote_new(last.a->dl, d);
    return remote_new_slow(loop, d);
}

deferred_ev_pool_t *deferred_ev_pool_new(struct ev_loop *loop, unsigned nthreads)
{
    EV_WRAP_PTR(deferred_loop_pool_new(dl, nthreads));
}

int deferred_ev_add_timeout_full(deferred_t *d, struct ev_loop *loop, double seconds,
                                 deferred_ev_timeout_fn on_timeout, void *arg,
                                 deferred_destroy_fn destroy)
{
    bool oom;
    deferred_loop_t *dl = acquire(loop, &oom);
    int rc;

    if (oom) {
        if (destroy)
            destroy(arg);
        return -ENOMEM;
    }
    rc = deferred_loop_add_timeout_full(d, dl, seconds, on_timeout, arg, destroy);
    deferred_loop_unref(dl);
    return rc;
}

int deferred_ev_add_timeout(deferred_t *d, struct ev_loop *loop, double seconds)
{
    return deferred_ev_add_timeout_full(d, loop, seconds, NULL, NULL, NULL);
}

size_t deferred_ev_lines_buffered(const deferred_stage_t *st)
{
    return deferred_loop_lines_buffered(st);
}

size_t deferred_ev_lines_capacity(const deferred_stage_t *st)
{
    return deferred_loop_lines_capacity(st);
}

bool deferred_ev_lines_is_reading(const deferred_stage_t *st)
{
    return deferred_loop_lines_is_reading(st);
}

uint64_t deferred_ev_lines_count(const deferred_stage_t *st)
{
    return deferred_loop_lines_count(st);
}

int deferred_ev_remote_callback(deferred_ev_remote_t *r, deferred_value_t v)
{
    return deferred_remote_callback(r, v);
}

int deferred_ev_remote_errback(deferred_ev_remote_t *r, deferred_failure_t *f)
{
    return deferred_remote_errback(r, f);
}

void deferred_ev_remote_drop(deferred_ev_remote_t *r)
{
    deferred_remote_drop(r);
}

deferred_t *deferred_ev_pool_run(deferred_ev_pool_t *pool, deferred_ev_job_fn fn, void *arg,
                                 deferred_destroy_fn destroy)
{
    return deferred_pool_run(pool, fn, arg, destroy);
}

int deferred_ev_pool_shutdown(deferred_ev_pool_t *pool, bool cancel_pending)
{
    return deferred_pool_shutdown(pool, cancel_pending);
}

void deferred_ev_pool_free(deferred_ev_pool_t *pool)
{
    deferred_pool_free(pool);
}

unsigned deferred_ev_pool_threads(const deferred_ev_pool_t *pool)
{
    return deferred_pool_threads(pool);
}
