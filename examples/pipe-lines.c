/*
 * examples/pipe-lines.c: lines from a pipe through a process, with a
 * timeout on the whole.
 *
 * A writer thread writes "item N" lines into a pipe and closes it (it
 * could as well be a child process).  On the loop thread a process reads
 * them with the line producer of the loop layer, maps each line to the
 * length of its text, and sums the lengths with a reduce consumer.  The
 * process's deferred gets a 5 s timeout: if the writer stalled, it would
 * fail with ETIMEDOUT and the producer's watcher would be stopped.
 *
 * Build: cc pipe-lines.c $(pkg-config --cflags --libs deferred-ev) -lev
 * Run:   ./pipe-lines [--loop L] [LINES]   (exit status 0 when the sum is
 *        right; L: ev, the default, or uv, glib, clock as built: the loop
 *        is made by examples/example-loop.h, the rest is deferred/loop.h)
 */
#include <deferred.h>

#include "example-loop.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct writer {
    int fd;
    long lines;
};

/* The writer: plain blocking writes; the pipe holds it back whenever the
 * process is paused. */
static void *write_lines(void *arg)
{
    struct writer *w = arg;
    char buf[64];
    long i;

    for (i = 0; i < w->lines; i++) {
        int n = snprintf(buf, sizeof buf, "item %ld\n", i);

        if (write(w->fd, buf, (size_t)n) != n)
            break;
    }
    close(w->fd);
    return NULL;
}

/* map: a line (a string value, taken) to its length, an integer value. */
static deferred_value_t line_length(deferred_value_t line, void *arg)
{
    intptr_t len = (intptr_t)strlen(line.ptr);

    (void)arg;
    deferred_value_release(line);
    return deferred_value_int(len);
}

/* reduce: acc + length. */
static deferred_value_t add(deferred_value_t acc, deferred_value_t item, void *arg)
{
    (void)arg;
    return deferred_value_int(deferred_value_get_int(acc) + deferred_value_get_int(item));
}

/* The process's outcome, on the loop thread. */
static deferred_value_t report(deferred_value_t v, void *arg)
{
    long *sum = arg;
    deferred_failure_t *f = deferred_value_get_failure(v);

    if (f) {
        char story[512];

        deferred_failure_story(f, story, sizeof story);
        fprintf(stderr, "pipe-lines: failed: %s\n", story);
        *sum = -1;
    } else {
        *sum = (long)deferred_value_get_int(v);
    }
    deferred_value_release(v);
    return deferred_value_none();
}

int main(int argc, char **argv)
{
    const char *kind = "ev";
    deferred_loop_t *loop;
    long lines, expected = 0, sum = -2, i;
    struct writer w;
    pthread_t writer;
    deferred_process_t *p;
    deferred_t *done;
    int fds[2];

    if (argc >= 3 && strcmp(argv[1], "--loop") == 0) {
        kind = argv[2];
        argc -= 2;
        argv += 2;
        if (!example_loop_known(kind)) {
            fprintf(stderr, "pipe-lines: --loop takes one of: %s\n", example_loop_kinds);
            return 2;
        }
    }
    lines = argc > 1 ? atol(argv[1]) : 10000;
    if (!(loop = example_loop_open(kind, "pipe-lines")))
        return 1;
    if (pipe(fds) != 0) {
        perror("pipe-lines");
        return 1;
    }
    for (i = 0; i < lines; i++)
        expected += snprintf(NULL, 0, "item %ld", i);

    p = deferred_process_new(0);
    if (!p ||
        deferred_process_add(p, deferred_loop_lines(loop, fds[0], 1024)) != 0 ||
        deferred_process_add(p, deferred_stage_map("length", line_length, NULL)) != 0 ||
        deferred_process_add(p, deferred_stage_reduce(add, deferred_value_int(0),
                                                      NULL)) != 0) {
        fprintf(stderr, "pipe-lines: cannot build the process\n");
        return 1;
    }
    w.fd = fds[1];
    w.lines = lines;
    if (pthread_create(&writer, NULL, write_lines, &w) != 0) {
        fprintf(stderr, "pipe-lines: cannot start the writer\n");
        return 1;
    }

    done = deferred_process_run(p);
    if (!done || deferred_loop_add_timeout(done, loop, 5.0) != 0 ||
        deferred_add_both(done, report, &sum) != 0) {
        fprintf(stderr, "pipe-lines: out of memory\n");
        return 1;
    }
    /* Runs until the process finished (or timed out): nothing is left
     * for the loop to wait for. */
    while (!deferred_has_fired(done) && example_loop_once())
        ;
    pthread_join(writer, NULL);

    printf("pipe-lines: %ld lines, total length %ld (expected %ld)\n", lines, sum,
           expected);
    deferred_unref(done);
    deferred_process_unref(p);
    close(fds[0]);
    example_loop_close();
    return sum == expected ? 0 : 1;
}
