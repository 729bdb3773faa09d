/*
 * fuzz/fuzz-loop.c: the loop layer (deferred/loop.h) on the virtual clock
 * (deferred/clock.h), driven by the bytes.
 *
 * Each input makes one clock and runs a byte code over it:
 *
 *  - timers (deferred_loop_timer_*): new, start with a delay in whole
 *    milliseconds, stop, free, each with an action its callback takes
 *    when it fires (restart itself, start, stop or free another timer,
 *    free itself, fire or cancel a deferred, try to advance the clock
 *    from inside, which must be refused);
 *  - deferreds in slots: deferred_loop_later(), plain deferreds, and
 *    probes (a plain deferred given deferred_loop_add_timeout() or
 *    _full() with a hook); callback, cancel, drop;
 *  - the mailbox: a message expected and posted on the loop thread;
 *  - the clock: advance, pump, run_once, run; extra loop references;
 *    allocation failures.
 *
 * What it checks, besides ASan/UBSan and the end-of-input accounting of
 * fuzz-util.c (every block freed, the clock included, once every
 * watcher is gone):
 *
 *  - a timer fires only while the model says it runs, never early, and
 *    inside advance() exactly at its due time; the time never goes
 *    backwards; after advance() no timer is due;
 *  - is_active() and remaining() agree with the model;
 *  - a later() fires with the empty value, not before its time;
 *  - a probe's outcome is the user's value if the user fired it first,
 *    ECANCELED if the user cancelled it first, and otherwise (the timer
 *    fired) ETIMEDOUT, or the hook's value for _full() with a hook, the
 *    hook seeing ECANCELED and being called only then;
 *  - every message posted is delivered once, after the post returned.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz-util.h"
#include "deferred/loop.h"
#include "deferred/clock.h"

#define NTIMERS 6
#define NSLOTS 6
#define NMSGS 4
#define MAX_OPS 400
#define SIDE_BUDGET 200
#define EPS 1e-6

enum {
    OP_TIMER_NEW, OP_TIMER_START, OP_TIMER_STOP, OP_TIMER_FREE, OP_LATER,
    OP_NEW, OP_PROBE, OP_PROBE_HOOK, OP_CALLBACK, OP_CANCEL, OP_DROP,
    OP_ADVANCE, OP_PUMP, OP_RUN_ONCE, OP_RUN, OP_POST, OP_REF, OP_FAIL_ALLOC,
    OP_COUNT
};

enum {
    TA_NONE, TA_RESTART, TA_START_OTHER, TA_STOP_OTHER, TA_FREE_OTHER,
    TA_FREE_SELF, TA_FIRE_SLOT, TA_CANCEL_SLOT, TA_ADVANCE, TA_COUNT
};

struct timer {
    deferred_loop_timer_t *t;
    int running;
    double due;
    int action;
    int x;
    unsigned long seq; /* start order */
};

/* What a slot is given to hold, for the checks of its outcome. */
enum { K_PLAIN, K_LATER, K_PROBE };

struct probe {
    double due;       /* when the timeout falls due */
    int hook;         /* made with _full() and a hook */
    int user;         /* 0, or what the user did first: 1 fired, 2 cancelled */
    int hook_called;
    int outcome_seen;
};

struct later {
    double due;
    int user; /* fired or cancelled by the user before its time */
};

struct slot {
    deferred_t *d;
    struct later *later;    /* K_LATER (an fz_arg) */
    struct probe *probe;    /* K_PROBE (an fz_arg, never freed early) */
};

struct msg {
    deferred_loop_msg_t m;
    int posted, delivered;
};

static deferred_loop_t *clock_;
static deferred_loop_t *extra_refs[4];
static int nextra;
static struct timer timers[NTIMERS];
static struct slot slots[NSLOTS];
static struct msg msgs[NMSGS];
static int in_advance;
static double last_fire_time;
/* The last timer fired inside advance(): ties in due time fire in start
 * order.  last_adv_time < 0 after run_once() or run(), whose callbacks see
 * the round's time, not their due time. */
static double last_adv_time;
static unsigned long last_adv_seq, start_serial;

static double now(void)
{
    return deferred_clock_now(clock_);
}

static double ms(int k)
{
    return k / 1000.0;
}

/* ---- slots ------------------------------------------------------------- */

static void drop_slot(int i)
{
    deferred_t *d = slots[i].d;

    slots[i].d = NULL;
    slots[i].probe = NULL;
    slots[i].later = NULL;
    if (d)
        deferred_unref(d);
}

/* Put d (a reference) in slot i, with fn(arg) as both halves of its
 * chain first (none for NULL); d is dropped when that cannot be added. */
static void put_slot(int i, deferred_t *d, int kind, deferred_fn fn, void *arg)
{
    if (fn && deferred_add_both(d, fn, arg) < 0) {
        deferred_unref(d);
        return;
    }
    drop_slot(i);
    slots[i].d = d;
    if (kind == K_LATER)
        slots[i].later = arg;
    else if (kind == K_PROBE)
        slots[i].probe = arg;
}

static void user_fire(int i, int cancel)
{
    struct slot *s = &slots[i];

    if (!s->d)
        return;
    if (s->probe && !s->probe->user && !deferred_has_result(s->d) &&
        !s->probe->outcome_seen)
        s->probe->user = cancel ? 2 : 1;
    if (s->later && !deferred_has_result(s->d))
        s->later->user = 1;
    if (cancel) {
        FZ_TRACE("cancel slot %d", i);
        deferred_cancel(s->d);
    } else {
        deferred_value_t v = fz_token();
        int rc = deferred_callback(s->d, v);

        FZ_TRACE("callback slot %d -> %d", i, rc);
        if (rc < 0 && s->probe && s->probe->user == 1 && !s->probe->outcome_seen)
            s->probe->user = 0; /* refused (v is released): it did not count */
    }
}

/* ---- timers ------------------------------------------------------------ */

static void check_timer_model(int i)
{
    struct timer *tm = &timers[i];

    if (!tm->t)
        return;
    FZ_CHECK(deferred_loop_timer_is_active(tm->t) == (tm->running != 0),
             "timer is_active() disagrees with the model");
    if (tm->running) {
        double left = tm->due - now();
        double rem = deferred_loop_timer_remaining(tm->t);

        if (left < 0)
            left = 0;
        FZ_CHECK(fabs(rem - left) < EPS, "timer remaining() is off");
    } else {
        FZ_CHECK(deferred_loop_timer_remaining(tm->t) == 0.0,
                 "a stopped timer has time remaining");
    }
}

static void timer_start(int i, int k)
{
    struct timer *tm = &timers[i];
    int rc;

    if (!tm->t)
        return;
    rc = deferred_loop_timer_start(tm->t, ms(k));
    FZ_TRACE("timer %d start %d ms -> %d", i, k, rc);
    FZ_CHECK(rc == 0, "deferred_loop_timer_start() failed on a good delay");
    tm->running = 1;
    tm->due = now() + ms(k);
    tm->seq = ++start_serial;
}

static void timer_free(int i)
{
    struct timer *tm = &timers[i];

    if (!tm->t)
        return;
    FZ_TRACE("timer %d free", i);
    deferred_loop_timer_free(tm->t);
    tm->t = NULL;
    tm->running = 0;
}

static void on_timer(void *arg)
{
    struct timer *tm = arg;
    int i = (int)(tm - timers);
    double t = now();

    FZ_TRACE("timer %d fires at %.9f (due %.9f), action %d", i, t, tm->due,
             tm->action);
    FZ_CHECK(tm->t != NULL, "a freed timer fired");
    FZ_CHECK(tm->running, "a timer fired that was not running");
    FZ_CHECK(t >= tm->due - EPS, "a timer fired early");
    if (in_advance) {
        FZ_CHECK(fabs(t - tm->due) < EPS,
                 "inside advance() a timer did not see its own due time");
        if (t == last_adv_time)
            FZ_CHECK(tm->seq > last_adv_seq,
                     "timers due together did not fire in start order");
        last_adv_time = t;
        last_adv_seq = tm->seq;
    }
    FZ_CHECK(t >= last_fire_time - EPS, "the time went backwards");
    last_fire_time = t;
    tm->running = 0;
    FZ_CHECK(!deferred_loop_timer_is_active(tm->t),
             "a timer is still active in its own callback");
    if (!fz_side_effect_allowed())
        return;
    switch (tm->action) {
    case TA_RESTART:
        timer_start(i, tm->x % 8);
        break;
    case TA_START_OTHER:
        timer_start(tm->x % NTIMERS, tm->x / NTIMERS % 16);
        break;
    case TA_STOP_OTHER: {
        struct timer *o = &timers[tm->x % NTIMERS];

        if (o->t) {
            deferred_loop_timer_stop(o->t);
            o->running = 0;
        }
        break;
    }
    case TA_FREE_OTHER:
        timer_free(tm->x % NTIMERS);
        break;
    case TA_FREE_SELF:
        timer_free(i);
        break;
    case TA_FIRE_SLOT:
        user_fire(tm->x % NSLOTS, 0);
        break;
    case TA_CANCEL_SLOT:
        user_fire(tm->x % NSLOTS, 1);
        break;
    case TA_ADVANCE: {
        double d = 0.001;

        FZ_CHECK(deferred_clock_advance(clock_, 0.001) == -EBUSY,
                 "advance() from a callback was not refused");
        FZ_CHECK(deferred_clock_run_once(clock_, false) == -EBUSY,
                 "run_once() from a callback was not refused");
        FZ_CHECK(deferred_clock_pump(clock_, &d, 1) == -EBUSY,
                 "pump() from a callback was not refused");
        FZ_CHECK(deferred_clock_run(clock_) == -EBUSY,
                 "run() from a callback was not refused");
        break;
    }
    default:
        break;
    }
}

/* ---- deferreds' outcomes ---------------------------------------------- */

static deferred_value_t on_later(deferred_value_t v, void *arg)
{
    struct later *l = arg;

    if (!l->user) {
        FZ_CHECK(!deferred_value_is_failure(v), "later() failed on its own");
        FZ_CHECK(deferred_value_is_none(v), "later() fired with a value");
        FZ_CHECK(now() >= l->due - EPS, "later() fired early");
    }
    return v;
}

static deferred_value_t on_probe(deferred_value_t v, void *arg)
{
    struct probe *p = arg;
    const deferred_failure_t *f = deferred_value_get_failure(v);

    FZ_TRACE("probe %p outcome: %s %d (user %d, hook %d/%d)", (void *)p,
             f ? "failure" : "value", f ? deferred_failure_code(f) : 0, p->user,
             p->hook, p->hook_called);
    p->outcome_seen = 1;
    if (f && deferred_failure_code(f) == ENOMEM) {
        /* an allocation failed: the cancel's failure, the conversion's, or
         * the hook's; checked by the accounting at the end */
    } else if (p->user == 1) {
        FZ_CHECK(fz_is_live_token(v), "a probe fired by the user lost its value");
        FZ_CHECK(!p->hook_called, "a timeout hook ran on a fired probe");
    } else if (p->user == 2) {
        FZ_CHECK(f && deferred_failure_code(f) == ECANCELED,
                 "a probe the user cancelled did not fail with ECANCELED");
        FZ_CHECK(!p->hook_called, "a timeout hook ran on a cancelled probe");
    } else {
        FZ_CHECK(now() >= p->due - EPS, "a timeout fired early");
        if (p->hook) {
            FZ_CHECK(p->hook_called, "a probe timed out without its hook");
            FZ_CHECK(fz_is_live_token(v), "a timeout hook's value was lost");
        } else {
            FZ_CHECK(f && deferred_failure_code(f) == ETIMEDOUT,
                     "a timed-out probe did not fail with ETIMEDOUT");
        }
    }
    return v;
}

static deferred_value_t on_timeout_hook(deferred_value_t outcome, double seconds,
                                        void *arg)
{
    struct probe *p = arg;
    const deferred_failure_t *f = deferred_value_get_failure(outcome);

    (void)seconds;
    FZ_CHECK(!p->user, "a timeout hook ran after the user acted");
    /* ENOMEM: the cancel's failure could not be allocated. */
    FZ_CHECK(f && (deferred_failure_code(f) == ECANCELED ||
                   deferred_failure_code(f) == ENOMEM),
             "a timeout hook did not see the cancel's ECANCELED");
    p->hook_called = 1;
    deferred_value_release(outcome);
    return fz_token();
}

static void make_probe(int i, int k, int hook)
{
    deferred_t *d = deferred_new();
    struct probe *p;
    int rc;

    if (!d)
        return;
    p = fz_arg_new(sizeof *p, hook);
    p->due = now() + ms(k);
    p->hook = hook;
    if (hook)
        rc = deferred_loop_add_timeout_full(d, clock_, ms(k), on_timeout_hook, p,
                                            fz_destroy);
    else
        rc = deferred_loop_add_timeout(d, clock_, ms(k));
    FZ_TRACE("probe %p in slot %d, %d ms, hook %d -> %d", (void *)p, i, k, hook, rc);
    FZ_CHECK(rc == 0 || rc == -ENOMEM, "add_timeout() failed on good arguments");
    if (rc < 0) {
        deferred_unref(d);
        return;
    }
    put_slot(i, d, K_PROBE, on_probe, p);
}

/* ---- the mailbox ------------------------------------------------------- */

static void on_msg(deferred_loop_msg_t *m)
{
    struct msg *g = (struct msg *)(void *)m;

    FZ_TRACE("message %d delivered", (int)(g - msgs));
    FZ_CHECK(g->posted && !g->delivered, "a message delivered twice or unposted");
    g->delivered = 1;
    g->posted = 0;
    deferred_loop_done(clock_);
}

static void post(int i)
{
    struct msg *g = &msgs[i];

    if (g->posted)
        return;
    FZ_CHECK(deferred_loop_expect(clock_) == 0, "deferred_loop_expect() failed");
    g->m.deliver = on_msg;
    g->posted = 1;
    g->delivered = 0;
    FZ_CHECK(deferred_loop_post(clock_, &g->m) == 0, "deferred_loop_post() failed");
    FZ_CHECK(!g->delivered, "a message was delivered inside post()");
}

/* ---- the clock --------------------------------------------------------- */

static void check_after_advance(void)
{
    double due;

    if (deferred_clock_next(clock_, &due) == 0)
        FZ_CHECK(due > now(), "a timer is due after advance() returned");
    for (int i = 0; i < NTIMERS; i++) {
        if (timers[i].t && timers[i].running)
            FZ_CHECK(timers[i].due > now() - EPS,
                     "the model has a timer left behind by advance()");
        check_timer_model(i);
    }
}

static void one_op(fz_reader_t *r)
{
    int op = fz_byte(r) % OP_COUNT;
    int a = fz_byte(r);
    int i = a % NTIMERS, s = a % NSLOTS;

    switch (op) {
    case OP_TIMER_NEW:
        if (!timers[i].t) {
            timers[i].t = deferred_loop_timer_new(clock_, on_timer, &timers[i]);
            timers[i].running = 0;
            timers[i].action = fz_byte(r) % TA_COUNT;
            timers[i].x = fz_byte(r);
            FZ_TRACE("timer %d new (action %d, x %d) -> %p", i, timers[i].action,
                     timers[i].x, (void *)timers[i].t);
            FZ_CHECK(timers[i].t || errno == ENOMEM, "timer_new failed without ENOMEM");
        }
        break;
    case OP_TIMER_START:
        timer_start(i, fz_byte(r) % 64);
        break;
    case OP_TIMER_STOP:
        if (timers[i].t) {
            FZ_TRACE("timer %d stop", i);
            deferred_loop_timer_stop(timers[i].t);
            timers[i].running = 0;
            check_timer_model(i);
        }
        break;
    case OP_TIMER_FREE:
        timer_free(i);
        break;
    case OP_LATER: {
        int k = fz_byte(r) % 64;
        deferred_t *d = deferred_loop_later(clock_, ms(k));
        struct later *l;

        FZ_TRACE("later %d ms in slot %d -> %p", k, s, (void *)d);
        if (!d) {
            FZ_CHECK(errno == ENOMEM, "later() failed without ENOMEM");
            break;
        }
        l = fz_arg_new(sizeof *l, 0);
        l->due = now() + ms(k);
        put_slot(s, d, K_LATER, on_later, l);
        break;
    }
    case OP_NEW: {
        deferred_t *d = deferred_new();

        FZ_TRACE("new in slot %d -> %p", s, (void *)d);
        if (d)
            put_slot(s, d, K_PLAIN, NULL, NULL);
        break;
    }
    case OP_PROBE:
        make_probe(s, fz_byte(r) % 64, 0);
        break;
    case OP_PROBE_HOOK:
        make_probe(s, fz_byte(r) % 64, 1);
        break;
    case OP_CALLBACK:
        user_fire(s, 0);
        break;
    case OP_CANCEL:
        user_fire(s, 1);
        break;
    case OP_DROP:
        FZ_TRACE("drop slot %d", s);
        drop_slot(s);
        break;
    case OP_ADVANCE: {
        int k = a % 80;

        FZ_TRACE("advance %d ms from %.9f", k, now());
        in_advance = 1;
        FZ_CHECK(deferred_clock_advance(clock_, ms(k)) == 0, "advance() failed");
        in_advance = 0;
        check_after_advance();
        break;
    }
    case OP_PUMP: {
        double steps[3] = {ms(a % 7), ms(fz_byte(r) % 30), ms(fz_byte(r) % 5)};

        FZ_TRACE("pump from %.9f", now());
        in_advance = 1;
        FZ_CHECK(deferred_clock_pump(clock_, steps, 1 + a % 3) == 0, "pump() failed");
        in_advance = 0;
        check_after_advance();
        break;
    }
    case OP_RUN_ONCE: {
        int rc = deferred_clock_run_once(clock_, false);

        last_adv_time = -1;
        FZ_TRACE("run_once -> %d", rc);
        FZ_CHECK(rc >= 0, "run_once() failed");
        break;
    }
    case OP_RUN: {
        FZ_TRACE("run from %.9f", now());
        FZ_CHECK(deferred_clock_run(clock_) == 0, "run() failed");
        last_adv_time = -1;
        FZ_CHECK(deferred_clock_timers(clock_) == 0, "run() returned with timers running");
        for (int j = 0; j < NTIMERS; j++)
            FZ_CHECK(!timers[j].running, "run() returned with a model timer running");
        for (int j = 0; j < NMSGS; j++)
            FZ_CHECK(!msgs[j].posted, "run() returned with a message undelivered");
        break;
    }
    case OP_POST:
        post(a % NMSGS);
        break;
    case OP_REF:
        if (a & 1) {
            if (nextra < 4)
                extra_refs[nextra++] = deferred_loop_ref(clock_);
        } else if (nextra > 0) {
            deferred_loop_unref(extra_refs[--nextra]);
        }
        break;
    case OP_FAIL_ALLOC:
        FZ_TRACE("fail allocation %d from now", 1 + a % 8);
        fz_fail_alloc_after(1 + a % 8);
        break;
    default:
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_reader_t r = {data, size};
    int ops = 0;

    fz_begin();
    fz_side_budget = SIDE_BUDGET;
    memset(timers, 0, sizeof timers);
    memset(slots, 0, sizeof slots);
    memset(msgs, 0, sizeof msgs);
    nextra = 0;
    in_advance = 0;
    last_fire_time = 0;
    last_adv_time = -1;
    last_adv_seq = start_serial = 0;
    clock_ = deferred_clock_new();
    FZ_CHECK(clock_ != NULL, "deferred_clock_new() failed");
    while (fz_more(&r) && ops++ < MAX_OPS)
        one_op(&r);
    fz_fail_alloc_after(0);

    /* Deliver what was posted, then let everything go. */
    FZ_CHECK(deferred_clock_advance(clock_, 0) == 0, "advance(0) failed at the end");
    for (int i = 0; i < NMSGS; i++)
        FZ_CHECK(!msgs[i].posted, "a message posted was never delivered");
    for (int i = 0; i < NSLOTS; i++)
        drop_slot(i);
    for (int i = 0; i < NTIMERS; i++)
        timer_free(i);
    while (nextra > 0)
        deferred_loop_unref(extra_refs[--nextra]);
    FZ_CHECK(deferred_loop_alive(clock_) == 0, "the clock is still alive at the end");
    deferred_loop_unref(clock_);
    clock_ = NULL;
    fz_end();
    return 0;
}
