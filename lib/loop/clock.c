/*
 * clock.c: the clock (deferred/clock.h), a loop adapter whose time is a
 * count of nanoseconds that only deferred_clock_advance() and the run
 * functions move.
 *
 * The decision a reader must know: nothing here allocates once a handle
 * exists.  The timer heap always has room for every timer alive (it grows
 * in timer_new), the poll set for every fd watcher plus the wakeup pipe
 * (it grows in io_new), so timer_start, io_set and the rounds cannot fail
 * (their ops return nothing), and wakeup_send is an atomic exchange and
 * at most one write(2) of one byte.
 *
 * Timers are a binary min-heap of pointers ordered by (due, seq), seq
 * counting starts, so ties fire in start order; each timer knows its
 * slot, so stop and restart are O(log n).  A timer is taken off the heap
 * before its callback runs, and the callback's caller never touches it
 * again, so a callback may free its own timer or any other.  fd watchers
 * are a list; a round copies the watched ones into the poll set and each
 * watcher knows its entry there, which io_free clears, so a callback may
 * free a watcher whose entry comes later in the same round.  Wakeups are
 * a list scanned with a cursor that wakeup_free moves past the one freed.
 * The clock's identity is the address of its name (clock_name), which no
 * other adapter's table can share: loop.h gives the name, not the table.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "deferred/clock.h"
#include "deferred/dump.h"

#define NO_SLOT SIZE_MAX

struct clock;

struct clock_timer {
    struct clock *c;
    deferred_loop_fn cb;
    void *arg;
    int64_t due;  /* nanoseconds on the clock */
    uint64_t seq; /* the clock's start counter when it was started */
    size_t slot;  /* its index in the heap, NO_SLOT when not running */
};

struct clock_io {
    struct clock *c;
    int fd;
    int events; /* DEFERRED_LOOP_READ | _WRITE */
    deferred_loop_io_fn cb;
    void *arg;
    struct clock_io *prev, *next;
    size_t pslot; /* its entry in the round's poll set, or NO_SLOT */
};

struct clock_wakeup {
    struct clock *c;
    deferred_loop_fn cb;
    void *arg;
    atomic_int pending; /* sent, not yet delivered */
    bool held;
    struct clock_wakeup *prev, *next;
};

struct clock {
    int64_t now;
    uint64_t seq;
    struct clock_timer **heap;
    size_t nheap;   /* running timers */
    size_t heapcap; /* >= ntimers */
    size_t ntimers; /* timers alive */
    struct clock_io *ios;
    size_t nios;     /* watchers alive */
    size_t nwatched; /* watchers with events */
    struct pollfd *pfds;
    struct clock_io **pios; /* the watcher of each pfds entry, or NULL */
    size_t npoll;           /* entries of the round under way */
    size_t pollcap;         /* >= nios + 1 */
    struct clock_wakeup *wakeups;
    struct clock_wakeup *cursor; /* the next wakeup a delivery visits */
    size_t nheld;
    atomic_int signalled; /* a wakeup was sent since the last delivery */
    int rfd, wfd;         /* the wakeup pipe, both ends non-blocking */
    bool busy;            /* inside advance, run or run_once */
};

static const char clock_name[] = "clock";

/* ---- time ---- */

static int64_t to_ns(double seconds)
{
    if (!(seconds > 0))
        return 0; /* 0, and (defensively) negative or NaN */
    if (seconds >= 9.2e9)
        return INT64_MAX;
    return (int64_t)(seconds * 1e9 + 0.5);
}

static int64_t add_sat(int64_t a, int64_t b)
{
    return b > INT64_MAX - a ? INT64_MAX : a + b;
}

static double ns_seconds(int64_t ns)
{
    return (double)ns / 1e9;
}

static bool bad_seconds(double seconds)
{
    return !(seconds >= 0) || isinf(seconds);
}

/* ---- the heap ---- */

static bool before(const struct clock_timer *a, const struct clock_timer *b)
{
    return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void heap_set(struct clock *c, size_t i, struct clock_timer *t)
{
    c->heap[i] = t;
    t->slot = i;
}

static void sift_up(struct clock *c, size_t i)
{
    struct clock_timer *t = c->heap[i];

    while (i > 0) {
        size_t parent = (i - 1) / 2;

        if (!before(t, c->heap[parent]))
            break;
        heap_set(c, i, c->heap[parent]);
        i = parent;
    }
    heap_set(c, i, t);
}

static void sift_down(struct clock *c, size_t i)
{
    struct clock_timer *t = c->heap[i];

    for (;;) {
        size_t child = 2 * i + 1;

        if (child >= c->nheap)
            break;
        if (child + 1 < c->nheap && before(c->heap[child + 1], c->heap[child]))
            child++;
        if (!before(c->heap[child], t))
            break;
        heap_set(c, i, c->heap[child]);
        i = child;
    }
    heap_set(c, i, t);
}

static void heap_remove(struct clock *c, struct clock_timer *t)
{
    size_t i = t->slot;
    struct clock_timer *last;

    t->slot = NO_SLOT;
    last = c->heap[--c->nheap];
    if (last == t)
        return;
    heap_set(c, i, last);
    if (i > 0 && before(last, c->heap[(i - 1) / 2]))
        sift_up(c, i);
    else
        sift_down(c, i);
}

/* Take the first timer off the heap, move the time to its due time and
 * run its callback; t is not touched after (the callback may free it). */
static void fire_first(struct clock *c)
{
    struct clock_timer *t = c->heap[0];

    heap_remove(c, t);
    if (t->due > c->now)
        c->now = t->due;
    t->cb(t->arg);
}

/* Room for n more elements of size each in *arr (capacity *cap, used
 * used): doubles it, at least to 16.  false on allocation failure (then
 * nothing changed). */
static bool grow(void **arr, size_t *cap, size_t used, size_t need, size_t size)
{
    size_t ncap;
    void *p;

    if (need <= *cap)
        return true;
    ncap = *cap < 8 ? 16 : *cap * 2;
    if (ncap < need)
        ncap = need;
    if (ncap > SIZE_MAX / size)
        return false;
    p = deferred_malloc(ncap * size);
    if (!p)
        return false;
    if (used)
        memcpy(p, *arr, used * size);
    deferred_free(*arr);
    *arr = p;
    *cap = ncap;
    return true;
}

/* ---- the adapter: time and timers ---- */

static double clock_now(void *impl)
{
    return ns_seconds(((struct clock *)impl)->now);
}

static void *clock_timer_new(void *impl, deferred_loop_fn cb, void *arg)
{
    struct clock *c = impl;
    struct clock_timer *t;
    void *heap = c->heap;

    if (!grow(&heap, &c->heapcap, c->nheap, c->ntimers + 1, sizeof *c->heap)) {
        errno = ENOMEM;
        return NULL;
    }
    c->heap = heap;
    t = deferred_malloc(sizeof *t);
    if (!t) {
        errno = ENOMEM;
        return NULL;
    }
    t->c = c;
    t->cb = cb;
    t->arg = arg;
    t->due = 0;
    t->seq = 0;
    t->slot = NO_SLOT;
    c->ntimers++;
    return t;
}

static void clock_timer_stop(void *timer)
{
    struct clock_timer *t = timer;

    if (t->slot != NO_SLOT)
        heap_remove(t->c, t);
}

static void clock_timer_start(void *timer, double seconds)
{
    struct clock_timer *t = timer;
    struct clock *c = t->c;

    clock_timer_stop(t);
    t->due = add_sat(c->now, to_ns(seconds));
    t->seq = c->seq++;
    /* Room is there: heapcap >= ntimers >= nheap + 1. */
    c->heap[c->nheap] = t;
    t->slot = c->nheap++;
    sift_up(c, t->slot);
}

static void clock_timer_free(void *timer)
{
    struct clock_timer *t = timer;

    if (!t)
        return;
    clock_timer_stop(t);
    t->c->ntimers--;
    deferred_free(t);
}

/* ---- fd watchers ---- */

static void *clock_io_new(void *impl, int fd, deferred_loop_io_fn cb, void *arg)
{
    struct clock *c = impl;
    struct clock_io *io;
    void *pfds = c->pfds, *pios = c->pios;
    size_t cap = c->pollcap;

    /* Both arrays have the same capacity; grow the second from the same
     * old capacity, and commit it only when both succeeded. */
    if (c->nios + 2 > c->pollcap) {
        size_t cap2 = c->pollcap;

        if (!grow(&pfds, &cap, c->npoll, c->nios + 2, sizeof *c->pfds)) {
            errno = ENOMEM;
            return NULL;
        }
        c->pfds = pfds; /* the larger array is kept even if the next fails */
        if (!grow(&pios, &cap2, c->npoll, cap, sizeof *c->pios)) {
            errno = ENOMEM;
            return NULL;
        }
        c->pios = pios;
        c->pollcap = cap;
    }
    io = deferred_malloc(sizeof *io);
    if (!io) {
        errno = ENOMEM;
        return NULL;
    }
    io->c = c;
    io->fd = fd;
    io->events = 0;
    io->cb = cb;
    io->arg = arg;
    io->pslot = NO_SLOT;
    io->prev = NULL;
    io->next = c->ios;
    if (c->ios)
        c->ios->prev = io;
    c->ios = io;
    c->nios++;
    return io;
}

static void clock_io_set(void *handle, int events)
{
    struct clock_io *io = handle;

    events &= DEFERRED_LOOP_READ | DEFERRED_LOOP_WRITE;
    if (io->events && !events)
        io->c->nwatched--;
    else if (!io->events && events)
        io->c->nwatched++;
    io->events = events;
}

static void clock_io_free(void *handle)
{
    struct clock_io *io = handle;
    struct clock *c;

    if (!io)
        return;
    c = io->c;
    clock_io_set(io, 0);
    if (io->pslot != NO_SLOT)
        c->pios[io->pslot] = NULL;
    if (io->prev)
        io->prev->next = io->next;
    else
        c->ios = io->next;
    if (io->next)
        io->next->prev = io->prev;
    c->nios--;
    deferred_free(io);
}

/* ---- wakeups ---- */

static void *clock_wakeup_new(void *impl, deferred_loop_fn cb, void *arg)
{
    struct clock *c = impl;
    struct clock_wakeup *w = deferred_malloc(sizeof *w);

    if (!w) {
        errno = ENOMEM;
        return NULL;
    }
    w->c = c;
    w->cb = cb;
    w->arg = arg;
    atomic_init(&w->pending, 0);
    w->held = false;
    w->prev = NULL;
    w->next = c->wakeups;
    if (c->wakeups)
        c->wakeups->prev = w;
    c->wakeups = w;
    return w;
}

/* Any thread: no allocation, no lock. */
static void clock_wakeup_send(void *wakeup)
{
    struct clock_wakeup *w = wakeup;
    struct clock *c = w->c;
    int saved = errno;
    ssize_t r;

    if (atomic_exchange(&w->pending, 1))
        return;
    if (atomic_exchange(&c->signalled, 1))
        return;
    /* A full pipe (EAGAIN) already wakes the loop. */
    do
        r = write(c->wfd, "w", 1);
    while (r < 0 && errno == EINTR);
    errno = saved;
}

static void clock_wakeup_hold(void *wakeup, bool hold)
{
    struct clock_wakeup *w = wakeup;

    if (w->held == hold)
        return;
    w->held = hold;
    if (hold)
        w->c->nheld++;
    else
        w->c->nheld--;
}

static void clock_wakeup_free(void *wakeup)
{
    struct clock_wakeup *w = wakeup;
    struct clock *c;

    if (!w)
        return;
    c = w->c;
    clock_wakeup_hold(w, false);
    if (c->cursor == w)
        c->cursor = w->next;
    if (w->prev)
        w->prev->next = w->next;
    else
        c->wakeups = w->next;
    if (w->next)
        w->next->prev = w->prev;
    deferred_free(w);
}

static void clock_release(void *impl)
{
    struct clock *c = impl;

    close(c->rfd);
    close(c->wfd);
    deferred_free(c->heap);
    deferred_free(c->pfds);
    deferred_free(c->pios);
    deferred_free(c);
}

/* The clock's fields on its loop's line of a dump (deferred/dump.h). */
static void clock_describe(void *impl, deferred_dump_t *w)
{
    struct clock *c = impl;

    deferred_dump_int(w, "now_ns", (long long)c->now);
    deferred_dump_int(w, "timers", (long long)c->nheap);
    deferred_dump_int(w, "fds", (long long)c->nwatched);
    deferred_dump_int(w, "held", (long long)c->nheld);
}

static const deferred_loop_ops_t clock_ops = {
    .version = DEFERRED_LOOP_OPS_VERSION,
    .name = clock_name,
    .now = clock_now,
    .timer_new = clock_timer_new,
    .timer_start = clock_timer_start,
    .timer_stop = clock_timer_stop,
    .timer_free = clock_timer_free,
    .io_new = clock_io_new,
    .io_set = clock_io_set,
    .io_free = clock_io_free,
    .wakeup_new = clock_wakeup_new,
    .wakeup_send = clock_wakeup_send,
    .wakeup_hold = clock_wakeup_hold,
    .wakeup_free = clock_wakeup_free,
    .release = clock_release,
    .describe = clock_describe,
};

/* ---- rounds ---- */

static void drain_pipe(struct clock *c)
{
    char buf[64];
    ssize_t r;

    do
        r = read(c->rfd, buf, sizeof buf);
    while (r > 0 || (r < 0 && errno == EINTR));
}

/* Run the callback of every wakeup that was sent; returns how many. */
static size_t deliver_wakeups(struct clock *c)
{
    struct clock_wakeup *w;
    size_t n = 0;

    if (!atomic_load(&c->signalled))
        return 0;
    atomic_store(&c->signalled, 0);
    drain_pipe(c);
    for (w = c->wakeups; w; w = c->cursor) {
        c->cursor = w->next;
        if (atomic_exchange(&w->pending, 0)) {
            w->cb(w->arg);
            n++;
        }
    }
    c->cursor = NULL;
    return n;
}

static short poll_events(int events)
{
    return (short)(((events & DEFERRED_LOOP_READ) ? POLLIN : 0) |
                   ((events & DEFERRED_LOOP_WRITE) ? POLLOUT : 0));
}

/* Fill the poll set from index first with the watched fds; returns its
 * size.  With mark, each watcher learns its entry. */
static size_t fill_poll_set(struct clock *c, size_t first, bool mark)
{
    struct clock_io *io;
    size_t k = first;

    for (io = c->ios; io; io = io->next) {
        if (!io->events)
            continue;
        c->pfds[k].fd = io->fd;
        c->pfds[k].events = poll_events(io->events);
        c->pfds[k].revents = 0;
        c->pios[k] = mark ? io : NULL;
        if (mark)
            io->pslot = k;
        k++;
    }
    return k;
}

/* One poll(2) without timeout of the watched fds, and the callback of
 * each ready one; returns how many ran. */
static size_t run_ready_fds(struct clock *c)
{
    size_t i, n = 0;
    int r;

    if (c->nwatched == 0)
        return 0;
    c->npoll = fill_poll_set(c, 0, true);
    do
        r = poll(c->pfds, (nfds_t)c->npoll, 0);
    while (r < 0 && errno == EINTR);
    /* The arrays may move (io_new) while callbacks run: index them
     * afresh each time. */
    for (i = 0; i < c->npoll; i++) {
        struct clock_io *io = c->pios[i];
        short re = c->pfds[i].revents;
        int rev = 0;

        if (!io)
            continue;
        c->pios[i] = NULL;
        io->pslot = NO_SLOT;
        if (r <= 0 || !re)
            continue;
        if ((io->events & DEFERRED_LOOP_READ) && (re & (POLLIN | POLLHUP | POLLERR | POLLNVAL)))
            rev |= DEFERRED_LOOP_READ;
        if ((io->events & DEFERRED_LOOP_WRITE) && (re & (POLLOUT | POLLHUP | POLLERR | POLLNVAL)))
            rev |= DEFERRED_LOOP_WRITE;
        if (rev) {
            io->cb(io->arg, rev);
            n++;
        }
    }
    c->npoll = 0;
    return n;
}

/* One round (see deferred_clock_run_once()); returns the callbacks run. */
static size_t run_round(struct clock *c)
{
    uint64_t mark = c->seq;
    size_t n = 0;

    n += deliver_wakeups(c);
    n += run_ready_fds(c);
    while (c->nheap > 0 && c->heap[0]->due <= c->now && c->heap[0]->seq < mark) {
        fire_first(c);
        n++;
    }
    return n;
}

/* Block until a watched fd is ready or a wakeup is sent. */
static void wait_external(struct clock *c)
{
    size_t k;
    int r;

    if (atomic_load(&c->signalled))
        return;
    c->pfds[0].fd = c->rfd;
    c->pfds[0].events = POLLIN;
    c->pfds[0].revents = 0;
    c->pios[0] = NULL;
    k = fill_poll_set(c, 1, false);
    do
        r = poll(c->pfds, (nfds_t)k, -1);
    while (r < 0 && errno == EINTR);
    /* A byte written after the last delivery drained the pipe would wake
     * every later wait: drain it here; the flag says what was sent. */
    if (r > 0 && c->pfds[0].revents)
        drain_pipe(c);
}

/* Nothing was runnable: wait for the outside or move time to the next
 * timer.  false when nothing keeps the loop alive. */
static bool wait_or_jump(struct clock *c)
{
    if (c->nheld > 0 || c->nwatched > 0) {
        wait_external(c);
        return true;
    }
    if (c->nheap > 0) {
        if (c->heap[0]->due > c->now)
            c->now = c->heap[0]->due;
        return true;
    }
    return false;
}

/* ---- the public functions ---- */

bool deferred_clock_is_clock(const deferred_loop_t *loop)
{
    return loop && deferred_loop_name(loop) == clock_name;
}

static struct clock *clock_of(const deferred_loop_t *loop)
{
    return deferred_clock_is_clock(loop) ? deferred_loop_impl(loop) : NULL;
}

deferred_loop_t *deferred_clock_new(void)
{
    struct clock *c = deferred_malloc(sizeof *c);
    deferred_loop_t *loop;
    int fds[2], e;

    if (!c) {
        errno = ENOMEM;
        return NULL;
    }
    memset(c, 0, sizeof *c);
    atomic_init(&c->signalled, 0);
    if (pipe(fds) != 0) {
        e = errno;
        deferred_free(c);
        errno = e;
        return NULL;
    }
    c->rfd = fds[0];
    c->wfd = fds[1];
    (void)fcntl(c->rfd, F_SETFL, fcntl(c->rfd, F_GETFL) | O_NONBLOCK);
    (void)fcntl(c->wfd, F_SETFL, fcntl(c->wfd, F_GETFL) | O_NONBLOCK);
    (void)fcntl(c->rfd, F_SETFD, FD_CLOEXEC);
    (void)fcntl(c->wfd, F_SETFD, FD_CLOEXEC);
    /* The poll set always has the pipe's entry. */
    c->pfds = deferred_malloc(sizeof *c->pfds);
    c->pios = deferred_malloc(sizeof *c->pios);
    if (!c->pfds || !c->pios)
        goto fail;
    c->pollcap = 1;
    loop = deferred_loop_new(&clock_ops, c);
    if (!loop)
        goto fail;
    return loop;

fail:
    deferred_free(c->pfds);
    deferred_free(c->pios);
    close(c->rfd);
    close(c->wfd);
    deferred_free(c);
    errno = ENOMEM;
    return NULL;
}

/* Validate, mark busy and hold a reference: a callback may drop the
 * caller's.  NULL with *rc set when the call must not go on. */
static struct clock *enter(deferred_loop_t *loop, int *rc)
{
    struct clock *c = clock_of(loop);

    if (!c) {
        *rc = -EINVAL;
        return NULL;
    }
    if (c->busy) {
        *rc = -EBUSY;
        return NULL;
    }
    c->busy = true;
    deferred_loop_ref(loop);
    *rc = 0;
    return c;
}

static void leave(deferred_loop_t *loop, struct clock *c)
{
    c->busy = false;
    deferred_loop_unref(loop);
}

static void advance(struct clock *c, double seconds)
{
    int64_t target = add_sat(c->now, to_ns(seconds));

    for (;;) {
        size_t n = deliver_wakeups(c);

        if (c->nheap > 0 && c->heap[0]->due <= target)
            fire_first(c);
        else if (n == 0)
            break;
    }
    if (target > c->now)
        c->now = target;
}

int deferred_clock_advance(deferred_loop_t *clock, double seconds)
{
    struct clock *c;
    int rc;

    if (clock_of(clock) && bad_seconds(seconds))
        return -EINVAL;
    if (!(c = enter(clock, &rc)))
        return rc;
    advance(c, seconds);
    leave(clock, c);
    return 0;
}

int deferred_clock_pump(deferred_loop_t *clock, const double *steps, size_t n)
{
    struct clock *c;
    size_t i;
    int rc;

    if (!clock_of(clock) || (n > 0 && !steps))
        return -EINVAL;
    for (i = 0; i < n; i++)
        if (bad_seconds(steps[i]))
            return -EINVAL;
    if (!(c = enter(clock, &rc)))
        return rc;
    for (i = 0; i < n; i++)
        advance(c, steps[i]);
    leave(clock, c);
    return 0;
}

int deferred_clock_run_once(deferred_loop_t *clock, bool block)
{
    struct clock *c;
    size_t n;
    int rc;

    if (!(c = enter(clock, &rc)))
        return rc;
    n = run_round(c);
    if (n == 0 && block && wait_or_jump(c))
        n = run_round(c);
    leave(clock, c);
    return n > INT_MAX ? INT_MAX : (int)n;
}

int deferred_clock_run(deferred_loop_t *clock)
{
    struct clock *c;
    int rc;

    if (!(c = enter(clock, &rc)))
        return rc;
    for (;;) {
        if (run_round(c) > 0)
            continue;
        if (!wait_or_jump(c))
            break;
    }
    leave(clock, c);
    return 0;
}

double deferred_clock_now(const deferred_loop_t *clock)
{
    struct clock *c = clock_of(clock);

    return c ? ns_seconds(c->now) : -1.0;
}

size_t deferred_clock_timers(const deferred_loop_t *clock)
{
    struct clock *c = clock_of(clock);

    return c ? c->nheap : 0;
}

int deferred_clock_next(const deferred_loop_t *clock, double *due)
{
    struct clock *c = clock_of(clock);

    if (!c || !due)
        return -EINVAL;
    if (c->nheap == 0)
        return -ENOENT;
    *due = ns_seconds(c->heap[0]->due);
    return 0;
}
