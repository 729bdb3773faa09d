/*
 * loop-pool.c: a fixed pool of worker threads that runs blocking functions
 * and fires each job's deferred on the loop thread (deferred/loop.h).
 *
 * A job is allocated on the loop thread when it is queued and is also the
 * message that carries its result back through the loop's mailbox
 * (loop.c), so a worker never allocates and never touches a
 * deferred: it takes a job from the queue, runs it, stores the result in
 * it and posts it.
 * Everything about deferreds (firing, cancelling, destroying the job's
 * argument, freeing the job) happens on the loop thread, in the job's
 * delivery.
 *
 * The design decision to know: a job is delivered exactly once, whatever
 * happens to it.  Under the pool's lock it is QUEUED, then RUNNING (a
 * worker took it) or DROPPED (cancelled before a worker took it, or
 * cancelled by the shutdown); a RUNNING job is posted by its worker, a
 * DROPPED one by whoever dropped it.  Its delivery fires the deferred
 * unless it was fired meanwhile (a cancel), and then releases the result.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "loop-private.h"

#define POOL_MAX_THREADS 1024u

enum job_state { JOB_QUEUED, JOB_RUNNING, JOB_DROPPED };

struct job {
    deferred_loop_msg_t msg; /* first: the job is its own message */
    struct job *prev, *next; /* the pool's queue, under its lock */
    deferred_pool_t *pool;
    deferred_t *d; /* a reference, dropped at delivery */
    deferred_job_fn fn;
    void *arg;
    deferred_destroy_fn destroy;
    deferred_value_t result;
    int state; /* enum job_state, under the pool's lock */
    deferred__loop_item_t dbg;
};

struct deferred_pool {
    deferred_loop_t *loop; /* a reference: the jobs come back through its mailbox */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct job *head, *tail; /* queued jobs, under lock */
    bool stopping;           /* under lock: workers leave once the queue is empty */
    bool shut;               /* loop thread: shutdown began */
    unsigned nthreads;
    pthread_t *threads;
};

static void queue_unlink(deferred_pool_t *pool, struct job *j)
{
    if (j->prev)
        j->prev->next = j->next;
    else
        pool->head = j->next;
    if (j->next)
        j->next->prev = j->prev;
    else
        pool->tail = j->prev;
    j->prev = j->next = NULL;
}

static void *worker_main(void *arg)
{
    deferred_pool_t *pool = arg;
    struct job *j;

    pthread_mutex_lock(&pool->lock);
    for (;;) {
        while (!pool->head && !pool->stopping)
            pthread_cond_wait(&pool->cond, &pool->lock);
        j = pool->head;
        if (!j)
            break; /* stopping, and nothing left to run */
        queue_unlink(pool, j);
        j->state = JOB_RUNNING;
        pthread_mutex_unlock(&pool->lock);
        j->result = j->fn(j->arg);
        deferred_loop_post(pool->loop, &j->msg);
        pthread_mutex_lock(&pool->lock);
    }
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

/* A job's line in a dump: queued, running or done (back, not yet
 * delivered), and its deferred. */
static void job_describe(deferred_dump_t *w, deferred__loop_item_t *it)
{
    static const char *const states[] = { "queued", "running", "dropped" };
    struct job *j = DEFERRED_LOOP_ITEM_OF(it, struct job, dbg);
    int state;

    pthread_mutex_lock(&j->pool->lock);
    state = j->state;
    pthread_mutex_unlock(&j->pool->lock);
    deferred_dump_node(w, "pool_job", states[state]);
    deferred_dump_deferred(w, "fires", j->d);
}

/* On the loop thread: the job came back (run or dropped). */
static void job_deliver(deferred_loop_msg_t *m)
{
    struct job *j = (struct job *)m;
    deferred_loop_t *loop = j->pool->loop;
    deferred_t *d = j->d;
    deferred_value_t v = j->result;

    if (deferred_value_is_deferred(v)) {
        deferred_value_release(v);
        v = deferred_value_failure(deferred_failure_new(
            DEFERRED_DOMAIN_LIBRARY, EINVAL,
            "deferred_pool_run: a job returned a deferred"));
    }
    if (j->state == JOB_DROPPED || deferred_has_fired(d))
        deferred_value_release(v); /* cancelled: d failed already */
    else
        deferred_callback(d, v);
    if (j->destroy)
        j->destroy(j->arg);
    deferred__loop_untrack(&j->dbg);
    deferred_free(j);
    deferred_unref(d);
    deferred_loop_done(loop);
}

/* The job's canceller, on the loop thread: a job no worker took yet is
 * taken off the queue and never runs; the core then fails d with
 * ECANCELED.  A running job cannot be stopped: its result is released
 * when it arrives. */
static void job_cancel(deferred_t *d, void *arg)
{
    struct job *j = arg;
    deferred_pool_t *pool = j->pool;
    bool dropped = false;

    (void)d;
    pthread_mutex_lock(&pool->lock);
    if (j->state == JOB_QUEUED) {
        queue_unlink(pool, j);
        j->state = JOB_DROPPED;
        dropped = true;
    }
    pthread_mutex_unlock(&pool->lock);
    if (dropped)
        deferred_loop_post(pool->loop, &j->msg);
}

/* Stop the workers (they finish the queue unless it was emptied) and join
 * them. */
static void pool_stop_threads(deferred_pool_t *pool, unsigned n)
{
    unsigned i;

    pthread_mutex_lock(&pool->lock);
    pool->stopping = true;
    pthread_cond_broadcast(&pool->cond);
    pthread_mutex_unlock(&pool->lock);
    for (i = 0; i < n; i++)
        pthread_join(pool->threads[i], NULL);
}

deferred_pool_t *deferred_loop_pool_new(deferred_loop_t *loop, unsigned nthreads)
{
    deferred_pool_t *pool;
    sigset_t all, old;
    unsigned i;
    int rc = 0;

    if (!loop || nthreads == 0 || nthreads > POOL_MAX_THREADS) {
        errno = EINVAL;
        return NULL;
    }
    pool = deferred_malloc(sizeof *pool);
    if (!pool)
        goto out_enomem;
    memset(pool, 0, sizeof *pool);
    pool->threads = deferred_malloc(nthreads * sizeof *pool->threads);
    if (!pool->threads)
        goto out_free_pool;
    pool->loop = deferred_loop_ref(loop);
    if (pthread_mutex_init(&pool->lock, NULL) != 0)
        goto out_put_mailbox;
    if (pthread_cond_init(&pool->cond, NULL) != 0) {
        pthread_mutex_destroy(&pool->lock);
        goto out_put_mailbox;
    }
    /* Workers take no signals: they inherit a full mask. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (i = 0; i < nthreads; i++) {
        rc = pthread_create(&pool->threads[i], NULL, worker_main, pool);
        if (rc != 0)
            break;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        pool_stop_threads(pool, i);
        pthread_cond_destroy(&pool->cond);
        pthread_mutex_destroy(&pool->lock);
        deferred_loop_unref(pool->loop);
        deferred_free(pool->threads);
        deferred_free(pool);
        errno = rc;
        return NULL;
    }
    pool->nthreads = nthreads;
    return pool;

out_put_mailbox:
    deferred_loop_unref(pool->loop);
    deferred_free(pool->threads);
out_free_pool:
    deferred_free(pool);
out_enomem:
    errno = ENOMEM;
    return NULL;
}

deferred_t *deferred_pool_run(deferred_pool_t *pool, deferred_job_fn fn, void *arg,
                              deferred_destroy_fn destroy)
{
    struct job *j;
    deferred_t *d;

    if (!pool || !fn || pool->shut) {
        if (destroy)
            destroy(arg); /* before errno is set, so it cannot change it */
        errno = (!pool || !fn) ? EINVAL : ESHUTDOWN;
        return NULL;
    }
    j = deferred_malloc(sizeof *j);
    if (!j)
        goto out_destroy;
    memset(j, 0, sizeof *j);
    j->msg.deliver = job_deliver;
    j->pool = pool;
    j->fn = fn;
    j->arg = arg;
    j->destroy = destroy;
    j->result = deferred_value_none();
    j->state = JOB_QUEUED;
    d = deferred_new_cancellable(job_cancel, j, NULL);
    if (!d) {
        deferred_free(j);
        goto out_destroy;
    }
    j->d = deferred_ref(d);
    deferred__loop_track(pool->loop, &j->dbg, job_describe);
    (void)deferred_loop_expect(pool->loop); /* never fails on a loop */
    pthread_mutex_lock(&pool->lock);
    j->prev = pool->tail;
    if (pool->tail)
        pool->tail->next = j;
    else
        pool->head = j;
    pool->tail = j;
    pthread_cond_signal(&pool->cond);
    pthread_mutex_unlock(&pool->lock);
    return d;

out_destroy:
    if (destroy)
        destroy(arg);
    errno = ENOMEM;
    return NULL;
}

int deferred_pool_shutdown(deferred_pool_t *pool, bool cancel_pending)
{
    struct job *dropped = NULL, *j, *next;

    if (!pool)
        return -EINVAL;
    if (pool->shut)
        return 0;
    pool->shut = true;
    if (cancel_pending) {
        pthread_mutex_lock(&pool->lock);
        dropped = pool->head;
        for (j = dropped; j; j = j->next)
            j->state = JOB_DROPPED;
        pool->head = pool->tail = NULL;
        pthread_mutex_unlock(&pool->lock);
    }
    pool_stop_threads(pool, pool->nthreads);
    pool->nthreads = 0;
    /* The dropped jobs' deferreds fail with ECANCELED (their canceller
     * sees them dropped and leaves them be), then they are disposed of
     * like any job that came back. */
    for (j = dropped; j; j = next) {
        next = j->next;
        deferred_cancel(j->d);
        job_deliver(&j->msg);
    }
    /* Every worker posted its last job before it was joined. */
    deferred__loop_drain(pool->loop);
    return 0;
}

void deferred_pool_free(deferred_pool_t *pool)
{
    if (!pool)
        return;
    deferred_pool_shutdown(pool, true);
    pthread_cond_destroy(&pool->cond);
    pthread_mutex_destroy(&pool->lock);
    deferred_loop_unref(pool->loop);
    deferred_free(pool->threads);
    deferred_free(pool);
}

unsigned deferred_pool_threads(const deferred_pool_t *pool)
{
    return pool ? pool->nthreads : 0;
}
