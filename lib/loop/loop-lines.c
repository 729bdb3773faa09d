/*
 * loop-lines.c: a process producer that reads lines from an fd on any
 * loop (deferred_loop_lines(), deferred/loop.h).
 *
 * The stage owns one fixed buffer (max_line + 1 bytes, at least 4 KiB),
 * an fd watcher and a pump (loop-pump.h).  Its pump body, run only from the io watcher's callback
 * or by the pump (so never inside the resume that starts it), emits every complete line in
 * the buffer while the process is not paused, then reads once more, at
 * most what fits.  Pausing stops the io watcher and unschedules the pump,
 * so while the consumer is slow nothing is read: the kernel's pipe or
 * socket buffer fills and holds the writer back, and memory stays
 * bounded.  Resuming starts the io watcher and, when lines are already
 * buffered, schedules the pump to emit them from the loop.
 *
 * The one thing to know: an emit or a finish may end the stream and make
 * the process free its stages from inside the call (the process's result
 * fires and its callbacks may drop the last reference).  The pump body
 * always runs under the pump's guard, so destroy then only stops the
 * watchers and the pump frees the memory on its way out; the body checks
 * deferred__pump_released() after each emit and finish.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "loop-private.h"
#include "loop-pump.h"

#define LINES_DEFAULT_MAX 65536u /* max_line when the caller gives 0 */
#define LINES_MIN_BUFFER 4096u   /* one read's worth however short the lines */
/* The largest max_line: the buffer's size (max_line + 1 plus the struct)
 * stays far from wrapping. */
#define LINES_MAX_LINE_LIMIT (SIZE_MAX / 2 - sizeof(struct lines))

struct lines {
    int fd;
    struct deferred_loop_io io;
    deferred__pump_t pump; /* runs lines_pump_body(); owns l's free */
    deferred_stage_t *self;
    size_t max_line;
    size_t cap;    /* size of buf */
    size_t start;  /* first unconsumed byte */
    size_t len;    /* unconsumed bytes from start */
    uint64_t line_no; /* lines emitted */
    bool eof;
    bool done;     /* finished or cancelled: nothing more to do */
    char buf[];
};

static void lines_stop(struct lines *l)
{
    deferred_loop_io_set(&l->io, 0);
    deferred__pump_unschedule(&l->pump);
}

/* Finish the producer with outcome; true when l was destroyed meanwhile
 * (freed once the pump unwinds). */
static bool lines_finish(struct lines *l, deferred_value_t outcome)
{
    l->done = true;
    lines_stop(l);
    deferred_stage_finish(l->self, outcome);
    return deferred__pump_released(&l->pump);
}

static bool lines_too_long(struct lines *l)
{
    return lines_finish(l, deferred_value_failure(deferred_stage_failure(
        l->self, DEFERRED_DOMAIN_LIBRARY, EMSGSIZE,
        "line %llu of fd %d is longer than %zu bytes",
        (unsigned long long)l->line_no + 1, l->fd, l->max_line)));
}

/* Emit the n bytes at the start of the buffer as a line, consuming skip
 * bytes; true when l was destroyed meanwhile or the stream ended. */
static bool lines_emit(struct lines *l, size_t n, size_t skip)
{
    deferred_value_t v;
    char *line = l->buf + l->start;

    line[n] = '\0';
    v = deferred_value_strdup(line);
    l->start += skip;
    l->len -= skip;
    if (deferred_value_is_failure(v)) {
        lines_finish(l, v); /* out of memory: the stream fails */
        return true;
    }
    l->line_no++;
    if (deferred_stage_emit(l->self, v) < 0) {
        l->done = true;
        lines_stop(l);
        return true;
    }
    return deferred__pump_released(&l->pump);
}

/*
 * Emit what the buffer holds and read at most once; stop when paused,
 * when the fd has nothing more for now, or at the end.  Runs under the
 * pump's guard: after it returns, l may be released (the pump frees it).
 */
static void lines_pump_body(void *data)
{
    struct lines *l = data;
    bool did_read = false;
    ssize_t n;

    while (!l->done) {
        char *nl;

        if (deferred_stage_is_paused(l->self)) {
            lines_stop(l);
            return;
        }
        nl = l->len ? memchr(l->buf + l->start, '\n', l->len) : NULL;
        if (nl) {
            size_t n_line = (size_t)(nl - (l->buf + l->start));

            if (n_line > l->max_line) {
                lines_too_long(l);
                return;
            }
            if (lines_emit(l, n_line, n_line + 1))
                return;
            continue;
        }
        if (l->len > l->max_line) {
            lines_too_long(l);
            return;
        }
        if (l->eof) {
            if (l->len > 0) {
                if (l->start + l->len == l->cap) {
                    /* Room for the NUL. */
                    memmove(l->buf, l->buf + l->start, l->len);
                    l->start = 0;
                }
                if (lines_emit(l, l->len, l->len))
                    return;
                continue;
            }
            lines_finish(l, deferred_value_none());
            return;
        }
        if (did_read) {
            /* Wait for the loop: the io watcher fires again if more is
             * there (one read per wake-up, so a fast writer cannot starve
             * the loop). */
            deferred__pump_unschedule(&l->pump);
            return;
        }
        if (l->start > 0) {
            memmove(l->buf, l->buf + l->start, l->len);
            l->start = 0;
        }
        n = read(l->fd, l->buf + l->len, l->cap - l->len);
        did_read = true;
        if (n > 0) {
            l->len += (size_t)n;
        } else if (n == 0) {
            l->eof = true;
        } else if (errno == EINTR) {
            did_read = false;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            deferred__pump_unschedule(&l->pump);
            return;
        } else {
            int e = errno;

            lines_finish(l, deferred_value_failure(deferred_stage_failure(
                l->self, DEFERRED_DOMAIN_SYSTEM, e, "reading line %llu of fd %d: %s",
                (unsigned long long)l->line_no + 1, l->fd, strerror(e))));
            return;
        }
    }
}

static void lines_io_cb(void *arg, int revents)
{
    struct lines *l = arg;

    (void)revents;
    deferred__pump_run(&l->pump);
}

/* The pump's release: the last of l. */
static void lines_free(void *data)
{
    struct lines *l = data;

    deferred__io_fini(&l->io);
    deferred_free(l);
}

/* Producer operations. */
static void lines_resume(deferred_stage_t *self, deferred_stage_t *by)
{
    struct lines *l = deferred_stage_data(self);

    (void)by;
    l->self = self;
    if (l->done)
        return;
    deferred_loop_io_set(&l->io, DEFERRED_LOOP_READ);
    if (l->len > 0 || l->eof)
        deferred__pump_schedule(&l->pump);
}

static void lines_pause(deferred_stage_t *self, deferred_stage_t *by)
{
    struct lines *l = deferred_stage_data(self);

    (void)by;
    lines_stop(l);
}

static void lines_cancel(deferred_stage_t *self, deferred_stage_t *by)
{
    struct lines *l = deferred_stage_data(self);

    (void)by;
    l->done = true;
    lines_stop(l);
}

static int lines_describe(deferred_stage_t *self, deferred_value_t item,
                          char *buf, size_t size)
{
    struct lines *l = deferred_stage_data(self);

    (void)item;
    return snprintf(buf, size, "line %llu of fd %d",
                    (unsigned long long)l->line_no, l->fd);
}

static void lines_destroy(void *data)
{
    struct lines *l = data;

    deferred_loop_io_set(&l->io, 0);
    deferred__pump_release(&l->pump); /* frees l now or after the pump */
}

static const deferred_stage_ops_t lines_ops = {
    .name = "lines",
    .resume = lines_resume,
    .pause = lines_pause,
    .cancel = lines_cancel,
    .describe = lines_describe,
    .destroy = lines_destroy,
};

deferred_stage_t *deferred_loop_lines(deferred_loop_t *loop, int fd, size_t max_line)
{
    struct lines *l;
    deferred_stage_t *st;
    size_t cap;
    int flags, rc;

    if (!loop || fd < 0) {
        errno = EINVAL;
        return NULL;
    }
    flags = fcntl(fd, F_GETFL);
    if (flags == -1)
        return NULL; /* errno EBADF */
    if (max_line == 0)
        max_line = LINES_DEFAULT_MAX;
    if (max_line > LINES_MAX_LINE_LIMIT) {
        errno = EINVAL;
        return NULL;
    }
    cap = max_line + 1 < LINES_MIN_BUFFER ? LINES_MIN_BUFFER : max_line + 1;
    l = deferred_malloc(sizeof *l + cap);
    if (!l) {
        errno = ENOMEM;
        return NULL;
    }
    memset(l, 0, sizeof *l);
    if (!(flags & O_NONBLOCK) && fcntl(fd, F_SETFL, flags | O_NONBLOCK) == -1) {
        deferred_free(l);
        return NULL;
    }
    l->fd = fd;
    l->max_line = max_line;
    l->cap = cap;
    rc = deferred__io_init(&l->io, loop, fd, lines_io_cb, l);
    if (rc < 0) {
        deferred_free(l);
        errno = -rc;
        return NULL;
    }
    if (deferred__pump_init(&l->pump, loop, lines_pump_body, lines_free, l) < 0) {
        deferred__io_fini(&l->io);
        deferred_free(l);
        errno = ENOMEM;
        return NULL;
    }
    st = deferred_stage_new(&lines_ops, l, 0);
    if (!st) {
        errno = ENOMEM;
        return NULL; /* l freed by lines_destroy */
    }
    l->self = st;
    return st;
}

static struct lines *lines_of(const deferred_stage_t *st)
{
    if (!st || deferred_stage_name(st) != lines_ops.name)
        return NULL;
    return deferred_stage_data(st);
}

size_t deferred_loop_lines_buffered(const deferred_stage_t *st)
{
    struct lines *l = lines_of(st);

    return l ? l->len : 0;
}

size_t deferred_loop_lines_capacity(const deferred_stage_t *st)
{
    struct lines *l = lines_of(st);

    return l ? l->cap : 0;
}

bool deferred_loop_lines_is_reading(const deferred_stage_t *st)
{
    struct lines *l = lines_of(st);

    return l ? l->io.events != 0 : false;
}

uint64_t deferred_loop_lines_count(const deferred_stage_t *st)
{
    struct lines *l = lines_of(st);

    return l ? l->line_no : 0;
}
