/*
 * ev-dump.c: what deferred_dump() shows of the libev binding, and the
 * dump on a signal (deferred/ev.h).
 *
 * A loop's binding is made in debug mode when the first item of that loop
 * is tracked on a thread (or when a dump signal is set up): a holder of
 * the dump registry with a list of items (timers, timeouts, fd waits,
 * remote handles, pool jobs), each embedded in the struct it describes.
 * The bindings of a thread are a short list found by loop; a binding is
 * freed once it tracks nothing and has no signal watcher.  Everything here
 * runs on the loop thread.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "ev-private.h"

struct deferred__ev_binding {
    struct ev_loop *loop;
    deferred_dump_holder_t holder;
    deferred__ev_item_t *first, *last;
    size_t items;
    struct deferred__ev_binding *next;
    ev_signal sig;
    bool sig_on;
    deferred_dump_format_t format;
    deferred_dump_sink_fn sink;
    void *sink_arg;
};

static __thread struct deferred__ev_binding *bindings;

static void describe_binding(deferred_dump_t *w, void *arg)
{
    struct deferred__ev_binding *b = arg;
    deferred__ev_item_t *it;
    char name[32];

    snprintf(name, sizeof(name), "%p", (void *)b->loop);
    deferred_dump_node(w, "loop", name);
    deferred_dump_int(w, "items", (long long)b->items);
    if (b->sig_on)
        deferred_dump_int(w, "dump_signal", b->sig.signum);
    deferred_dump_enter(w);
    for (it = b->first; it; it = it->next)
        it->describe(w, it);
    deferred_dump_leave(w);
}

static struct deferred__ev_binding *find_binding(struct ev_loop *loop, bool make)
{
    struct deferred__ev_binding *b;

    for (b = bindings; b; b = b->next)
        if (b->loop == loop)
            return b;
    if (!make)
        return NULL;
    b = deferred_malloc(sizeof(*b));
    if (!b)
        return NULL;
    memset(b, 0, sizeof(*b));
    b->loop = loop;
    deferred_dump_holder_add(&b->holder, describe_binding, b);
    b->next = bindings;
    bindings = b;
    return b;
}

/* Free b once it holds nothing. */
static void maybe_free(struct deferred__ev_binding *b)
{
    struct deferred__ev_binding **pp;

    if (b->first || b->sig_on)
        return;
    for (pp = &bindings; *pp; pp = &(*pp)->next)
        if (*pp == b) {
            *pp = b->next;
            break;
        }
    deferred_dump_holder_remove(&b->holder);
    deferred_free(b);
}

void deferred__ev_track_on(struct ev_loop *loop, deferred__ev_item_t *it,
                           void (*describe)(deferred_dump_t *w, deferred__ev_item_t *it))
{
    struct deferred__ev_binding *b;

    it->b = NULL;
    it->prev = it->next = NULL;
    it->describe = describe;
    b = find_binding(loop, true);
    if (!b)
        return;
    it->b = b;
    it->prev = b->last;
    if (b->last)
        b->last->next = it;
    else
        b->first = it;
    b->last = it;
    b->items++;
}

void deferred__ev_untrack_on(deferred__ev_item_t *it)
{
    struct deferred__ev_binding *b = it->b;

    if (!b)
        return;
    if (it->prev)
        it->prev->next = it->next;
    else
        b->first = it->next;
    if (it->next)
        it->next->prev = it->prev;
    else
        b->last = it->prev;
    b->items--;
    it->b = NULL;
    it->prev = it->next = NULL;
    maybe_free(b);
}

/* ---- the dump on a signal -------------------------------------------------- */

static int stderr_sink(const char *text, size_t len, void *arg)
{
    (void)arg;
    return fwrite(text, 1, len, stderr) == len ? 0 : -EIO;
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct deferred__ev_binding *b = w->data;

    (void)loop;
    (void)revents;
    deferred_dump_to(b->format, b->sink, b->sink_arg, NULL);
    if (b->sink == stderr_sink)
        fflush(stderr);
}

int deferred_ev_dump_on_signal(struct ev_loop *loop, int signum, deferred_dump_format_t format,
                               deferred_dump_sink_fn sink, void *arg)
{
    struct deferred__ev_binding *b;

    if (!loop || signum < 0 || signum >= NSIG ||
        (format != DEFERRED_DUMP_TEXT && format != DEFERRED_DUMP_JSON))
        return -EINVAL;
    if (signum == 0)
        signum = SIGUSR1;
    b = find_binding(loop, true);
    if (!b)
        return -ENOMEM;
    if (b->sig_on) {
        ev_ref(loop);
        ev_signal_stop(loop, &b->sig);
        b->sig_on = false;
    }
    b->format = format;
    b->sink = sink ? sink : stderr_sink;
    b->sink_arg = sink ? arg : NULL;
    ev_signal_init(&b->sig, on_signal, signum);
    b->sig.data = b;
    ev_signal_start(loop, &b->sig);
    /* The watcher alone does not keep ev_run() going. */
    ev_unref(loop);
    b->sig_on = true;
    return 0;
}

void deferred_ev_dump_on_signal_stop(struct ev_loop *loop)
{
    struct deferred__ev_binding *b = loop ? find_binding(loop, false) : NULL;

    if (!b || !b->sig_on)
        return;
    ev_ref(loop);
    ev_signal_stop(loop, &b->sig);
    b->sig_on = false;
    maybe_free(b);
}
