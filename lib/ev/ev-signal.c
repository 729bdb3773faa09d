/*
 * ev-signal.c: the dump on a signal (deferred_ev_dump_on_signal(),
 * deferred/ev.h).  An ev_signal watcher in the loop's adapter runs
 * deferred_dump_to() from the loop, never from the signal handler.  While
 * it is on, it holds a reference on the loop's adapter, so a second call
 * finds the same watcher.  What a dump shows of the loop itself (its
 * timers, timeouts, fd waits, remotes and pool jobs) is the loop layer's
 * (lib/loop/loop.c).
 */
#include <signal.h>
#include <stdio.h>

#include "ev-private.h"

static int stderr_sink(const char *text, size_t len, void *arg)
{
    (void)arg;
    return fwrite(text, 1, len, stderr) == len ? 0 : -EIO;
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct deferred__ev_adapter *a = w->data;

    (void)loop;
    (void)revents;
    deferred_dump_to(a->format, a->sink, a->sink_arg, NULL);
    if (a->sink == stderr_sink)
        fflush(stderr);
}

/* Stop a's watcher and drop its reference (which may free a). */
static void signal_off(struct deferred__ev_adapter *a)
{
    ev_ref(a->loop);
    ev_signal_stop(a->loop, &a->sig);
    a->sig_on = false;
    deferred_loop_unref(a->dl);
}

int deferred_ev_dump_on_signal(struct ev_loop *loop, int signum, deferred_dump_format_t format,
                               deferred_dump_sink_fn sink, void *arg)
{
    struct deferred__ev_adapter *a;
    deferred_loop_t *dl;

    if (!loop || signum < 0 || signum >= NSIG ||
        (format != DEFERRED_DUMP_TEXT && format != DEFERRED_DUMP_JSON))
        return -EINVAL;
    if (signum == 0)
        signum = SIGUSR1;
    dl = deferred_ev_loop_new(loop); /* the watcher's reference */
    if (!dl)
        return -ENOMEM;
    a = deferred_loop_impl(dl);
    if (a->sig_on)
        signal_off(a); /* not the last reference: dl is held */
    a->format = format;
    a->sink = sink ? sink : stderr_sink;
    a->sink_arg = sink ? arg : NULL;
    ev_signal_init(&a->sig, on_signal, signum);
    a->sig.data = a;
    ev_signal_start(loop, &a->sig);
    /* The watcher alone does not keep ev_run() going. */
    ev_unref(loop);
    a->sig_on = true;
    return 0;
}

void deferred_ev_dump_on_signal_stop(struct ev_loop *loop)
{
    deferred_loop_t *dl;
    struct deferred__ev_adapter *a;

    if (!loop)
        return;
    dl = deferred_ev_loop_new(loop);
    if (!dl)
        return;
    a = deferred_loop_impl(dl);
    if (a->sig_on)
        signal_off(a);
    deferred_loop_unref(dl);
}
