/*
 * dump.c: the registry of live deferreds that debug mode keeps, its
 * holders, and deferred_dump() (deferred/dump.h).
 *
 * The registry: each thread has one, in thread-local storage (so it costs
 * no allocation): a list of the deferreds made there in debug mode,
 * linked through their rare part (struct deferred__dbg), and a list of
 * holders.  A deferred may be freed on another thread than the one that
 * made it, so the lists are changed under one lock, taken only in debug
 * mode (or for a deferred made then).  When a thread ends, its registry
 * lets go of its members (they stay alive, unlisted).
 *
 * The dump: four passes over the calling thread's registry, each linear:
 *  1. mark every deferred that another one holds (the deferred a chain
 *     waits on, a combinator's inputs): those are not roots;
 *  2. the holders, in the order they were added, each writing what it
 *     holds;
 *  3. the roots not written yet, each as a tree;
 *  4. what is left (held only by deferreds outside the registry).
 * A tree is walked with an explicit stack; each deferred carries the
 * number of the dump that wrote it and of its line, so it is written once
 * and a second sight names the first.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deferred-private.h"
#include "core-private.h"
#include "deferred/dump.h"

/* The text form indents this many levels at most. */
#define MAX_INDENT 32

struct deferred__registry {
    deferred_t *first, *last;
    deferred_dump_holder_t *holders, *holders_last;
    size_t count;
    size_t nholders;
    bool keyed; /* the thread-exit hook knows this thread */
};

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static pthread_key_t reg_key;
static bool key_ok;
static THREAD_LOCAL struct deferred__registry registry;
static uint32_t dump_epoch; /* under reg_lock */

/* ---- the registry -------------------------------------------------------- */

/* The thread ends: its members and holders are let go, unlisted. */
static void registry_exit(void *arg)
{
    struct deferred__registry *r = arg;
    deferred_t *d, *next;
    deferred_dump_holder_t *h, *hn;

    pthread_mutex_lock(&reg_lock);
    for (d = r->first; d; d = next) {
        next = d->ext->dbg.next;
        d->ext->dbg.prev = d->ext->dbg.next = NULL;
        d->ext->dbg.reg = NULL;
    }
    for (h = r->holders; h; h = hn) {
        hn = h->next_;
        h->prev_ = h->next_ = NULL;
        h->registry_ = NULL;
    }
    memset(r, 0, sizeof(*r));
    pthread_mutex_unlock(&reg_lock);
}

static void make_key(void)
{
    key_ok = pthread_key_create(&reg_key, registry_exit) == 0;
}

/* The calling thread's registry, known to the thread-exit hook; NULL if
 * the hook cannot be set (then nothing is registered). */
static struct deferred__registry *my_registry(void)
{
    struct deferred__registry *r = &registry;

    if (DEFERRED_LIKELY(r->keyed))
        return r;
    pthread_once(&key_once, make_key);
    if (!key_ok || pthread_setspecific(reg_key, r) != 0)
        return NULL;
    r->keyed = true;
    return r;
}

void deferred__dump_register(deferred_t *d)
{
    struct deferred__registry *r = my_registry();
    struct deferred__dbg *x = &d->ext->dbg;

    if (!r)
        return;
    pthread_mutex_lock(&reg_lock);
    x->reg = r;
    x->prev = r->last;
    x->next = NULL;
    if (r->last)
        r->last->ext->dbg.next = d;
    else
        r->first = d;
    r->last = d;
    r->count++;
    pthread_mutex_unlock(&reg_lock);
}

void deferred__dump_unregister(deferred_t *d)
{
    struct deferred__dbg *x = &d->ext->dbg;
    struct deferred__registry *r;

    pthread_mutex_lock(&reg_lock);
    r = x->reg;
    if (r) {
        if (x->prev)
            x->prev->ext->dbg.next = x->next;
        else
            r->first = x->next;
        if (x->next)
            x->next->ext->dbg.prev = x->prev;
        else
            r->last = x->prev;
        r->count--;
    }
    x->reg = NULL;
    x->prev = x->next = NULL;
    pthread_mutex_unlock(&reg_lock);
}

size_t deferred_dump_count(void)
{
    size_t n;

    pthread_mutex_lock(&reg_lock);
    n = registry.count;
    pthread_mutex_unlock(&reg_lock);
    return n;
}

int deferred_dump_holder_add(deferred_dump_holder_t *h, deferred_dump_fn describe, void *arg)
{
    struct deferred__registry *r;

    if (!h || !describe)
        return -EINVAL;
    h->describe = describe;
    h->arg = arg;
    h->prev_ = h->next_ = NULL;
    h->registry_ = NULL;
    if (!deferred_get_debug() || !(r = my_registry()))
        return 0;
    pthread_mutex_lock(&reg_lock);
    h->registry_ = r;
    h->prev_ = r->holders_last;
    if (r->holders_last)
        r->holders_last->next_ = h;
    else
        r->holders = h;
    r->holders_last = h;
    r->nholders++;
    pthread_mutex_unlock(&reg_lock);
    return 0;
}

void deferred_dump_holder_remove(deferred_dump_holder_t *h)
{
    struct deferred__registry *r;

    if (!h || !h->registry_)
        return;
    pthread_mutex_lock(&reg_lock);
    r = h->registry_;
    if (r) {
        if (h->prev_)
            h->prev_->next_ = h->next_;
        else
            r->holders = h->next_;
        if (h->next_)
            h->next_->prev_ = h->prev_;
        else
            r->holders_last = h->prev_;
        r->nholders--;
    }
    h->registry_ = NULL;
    h->prev_ = h->next_ = NULL;
    pthread_mutex_unlock(&reg_lock);
}

int deferred_dump_note(deferred_t *d, deferred_dump_fn describe, void *arg)
{
    if (!d)
        return -EINVAL;
    if (d->ext) {
        d->ext->dbg.note = describe;
        d->ext->dbg.note_arg = describe ? arg : NULL;
    }
    return 0;
}

/* ---- the writer ---------------------------------------------------------- */

/* A deferred to write: where it goes in the tree. */
struct item {
    deferred_t *d;
    const char *role;
    size_t depth;
    size_t parent; /* line number, 0 for none */
    bool child;    /* held by the deferred (or holder) before it */
};

struct deferred_dump {
    deferred_dump_format_t format;
    deferred_dump_sink_fn sink;
    void *sink_arg;
    int err;
    char *buf; /* the line being written */
    size_t len, cap;
    bool open;    /* a line is started and not yet written */
    bool in_note; /* only fields may be added */
    bool marking; /* pass 1: notes only name what they hold */
    size_t note_depth; /* in a note: the depth of its deferred's children */
    size_t line;  /* the last line number given */
    size_t *nest; /* deferred_dump_enter(): the line each level is under */
    size_t nest_len, nest_cap;
    size_t last;  /* the line of the last deferred_dump_node(): the parent
                     of what enter and deferred_dump_deferred() add */
    size_t last_depth;
    struct item *stack;
    size_t sp, scap;
    uint32_t epoch;
    deferred_dump_stats_t stats;
};

/* Make room for n more bytes in the line; false (err set) on failure. */
static bool reserve(deferred_dump_t *w, size_t n)
{
    char *p;
    size_t cap;

    if (w->err)
        return false;
    if (w->len + n <= w->cap)
        return true;
    cap = w->cap ? w->cap : 256;
    while (cap < w->len + n)
        cap *= 2;
    p = deferred__realloc(w->buf, cap);
    if (!p) {
        w->err = -ENOMEM;
        return false;
    }
    w->buf = p;
    w->cap = cap;
    return true;
}

static void put(deferred_dump_t *w, const char *s, size_t n)
{
    if (reserve(w, n)) {
        memcpy(w->buf + w->len, s, n);
        w->len += n;
    }
}

static void puts_(deferred_dump_t *w, const char *s)
{
    put(w, s, strlen(s));
}

static void putf(deferred_dump_t *w, const char *fmt, ...) DEFERRED_PRINTF(2, 3);
static void putf(deferred_dump_t *w, const char *fmt, ...)
{
    char tmp[96];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0)
        put(w, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* The length of the valid UTF-8 sequence at s (n bytes left), 0 if none. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    size_t k, i;
    uint32_t c;

    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        k = 2, c = s[0] & 0x1f;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        k = 3, c = s[0] & 0x0f;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        k = 4, c = s[0] & 0x07;
    else
        return 0;
    if (n < k)
        return 0;
    for (i = 1; i < k; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3f);
    }
    if ((k == 3 && (c < 0x800 || (c >= 0xd800 && c <= 0xdfff))) ||
        (k == 4 && (c < 0x10000 || c > 0x10ffff)))
        return 0;
    return k;
}

/* A JSON string, quoted and escaped. */
static void put_json_string(deferred_dump_t *w, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s), k;

    put(w, "\"", 1);
    while (n) {
        if (*p == '"' || *p == '\\') {
            put(w, "\\", 1);
            put(w, (const char *)p, 1);
            k = 1;
        } else if (*p < 0x20) {
            if (*p == '\n')
                puts_(w, "\\n");
            else if (*p == '\t')
                puts_(w, "\\t");
            else if (*p == '\r')
                puts_(w, "\\r");
            else
                putf(w, "\\u%04x", *p);
            k = 1;
        } else if ((k = utf8_len(p, n)) != 0) {
            put(w, (const char *)p, k);
        } else {
            puts_(w, "\\ufffd");
            k = 1;
        }
        p += k;
        n -= k;
    }
    put(w, "\"", 1);
}

/* A string in the text form: bare when it is one plain word, else quoted
 * with C escapes. */
static void put_text_string(deferred_dump_t *w, const char *s)
{
    const unsigned char *p;
    bool bare = *s != '\0';
    size_t n, k;

    for (p = (const unsigned char *)s; *p && bare; p++)
        if (*p <= ' ' || *p == '"' || *p == '=' || *p == '\\' || *p >= 0x7f)
            bare = false;
    if (bare) {
        puts_(w, s);
        return;
    }
    put(w, "\"", 1);
    for (p = (const unsigned char *)s, n = strlen(s); n; p += k, n -= k) {
        k = 1;
        if (*p == '"' || *p == '\\') {
            put(w, "\\", 1);
            put(w, (const char *)p, 1);
        } else if (*p == '\n') {
            puts_(w, "\\n");
        } else if (*p == '\t') {
            puts_(w, "\\t");
        } else if (*p < 0x20 || *p == 0x7f || (k = utf8_len(p, n)) == 0) {
            putf(w, "\\x%02x", *p); /* a control or a byte not UTF-8 */
            k = 1;
        } else {
            put(w, (const char *)p, k); /* UTF-8 passes through */
        }
    }
    put(w, "\"", 1);
}

static void put_string(deferred_dump_t *w, const char *s)
{
    if (w->format == DEFERRED_DUMP_JSON)
        put_json_string(w, s);
    else
        put_text_string(w, s);
}

/* Write the line under way, if any, to the sink. */
static void flush_line(deferred_dump_t *w)
{
    int rc;

    if (!w->open || w->err)
        return;
    w->open = false;
    put(w, w->format == DEFERRED_DUMP_JSON ? "}\n" : "\n",
        w->format == DEFERRED_DUMP_JSON ? 2 : 1);
    if (w->err)
        return;
    rc = w->sink(w->buf, w->len, w->sink_arg);
    if (rc < 0)
        w->err = rc;
    w->len = 0;
    w->stats.lines++;
}

/* Start a line at depth, under parent (0: none). */
static void start_line(deferred_dump_t *w, size_t depth, size_t parent, const char *role,
                       const char *kind, const char *name)
{
    size_t i;

    flush_line(w);
    if (w->err)
        return;
    w->line++;
    w->open = true;
    w->stats.steps++;
    if (w->format == DEFERRED_DUMP_JSON) {
        puts_(w, "{\"type\":");
        put_json_string(w, kind);
        putf(w, ",\"line\":%zu,\"parent\":", w->line);
        if (parent)
            putf(w, "%zu", parent);
        else
            puts_(w, "null");
        putf(w, ",\"depth\":%zu", depth);
        if (role) {
            puts_(w, ",\"role\":");
            put_json_string(w, role);
        }
        if (name) {
            puts_(w, ",\"name\":");
            put_json_string(w, name);
        }
        return;
    }
    for (i = 0; i < depth && i < MAX_INDENT; i++)
        put(w, "  ", 2);
    if (depth > MAX_INDENT)
        putf(w, "[%zu] ", depth);
    if (role) {
        puts_(w, role);
        put(w, ": ", 2);
    }
    puts_(w, kind);
    if (name) {
        put(w, " ", 1);
        put_string(w, name);
    }
}

static void field_key(deferred_dump_t *w, const char *key)
{
    if (w->format == DEFERRED_DUMP_JSON) {
        put(w, ",", 1);
        put_json_string(w, key);
        put(w, ":", 1);
    } else {
        put(w, " ", 1);
        puts_(w, key);
        put(w, "=", 1);
    }
}

/* A flag: a word in the text form, true in JSON. */
static void field_flag(deferred_dump_t *w, const char *key)
{
    if (!w->open || w->err)
        return;
    if (w->format == DEFERRED_DUMP_JSON) {
        field_key(w, key);
        puts_(w, "true");
    } else {
        put(w, " ", 1);
        puts_(w, key);
    }
}

void deferred_dump_str(deferred_dump_t *w, const char *key, const char *value)
{
    if (!w || !key || !value || !w->open || w->err)
        return;
    field_key(w, key);
    put_string(w, value);
}

void deferred_dump_int(deferred_dump_t *w, const char *key, long long value)
{
    if (!w || !key || !w->open || w->err)
        return;
    field_key(w, key);
    putf(w, "%lld", value);
}

static size_t cur_parent(const deferred_dump_t *w)
{
    return w->nest_len ? w->nest[w->nest_len - 1] : 0;
}

void deferred_dump_node(deferred_dump_t *w, const char *kind, const char *name)
{
    if (!w || !kind || w->in_note)
        return;
    start_line(w, w->nest_len, cur_parent(w), NULL, kind, name);
    w->last = w->line;
    w->last_depth = w->nest_len;
}

void deferred_dump_enter(deferred_dump_t *w)
{
    size_t *p, cap;

    if (!w || w->in_note || w->err)
        return;
    if (w->nest_len == w->nest_cap) {
        cap = w->nest_cap ? 2 * w->nest_cap : 8;
        p = deferred__realloc(w->nest, cap * sizeof(*p));
        if (!p) {
            w->err = -ENOMEM;
            return;
        }
        w->nest = p;
        w->nest_cap = cap;
    }
    w->nest[w->nest_len++] = w->last;
}

void deferred_dump_leave(deferred_dump_t *w)
{
    if (w && !w->in_note && w->nest_len)
        w->nest_len--;
}

/* ---- a deferred's line ---------------------------------------------------- */

static bool push(deferred_dump_t *w, deferred_t *d, const char *role, size_t depth,
                 size_t parent)
{
    struct item *p;
    size_t cap;

    if (w->err)
        return false;
    if (w->sp == w->scap) {
        cap = w->scap ? 2 * w->scap : 64;
        p = deferred__realloc(w->stack, cap * sizeof(*p));
        if (!p) {
            w->err = -ENOMEM;
            return false;
        }
        w->stack = p;
        w->scap = cap;
    }
    w->stack[w->sp].d = d;
    w->stack[w->sp].role = role;
    w->stack[w->sp].depth = depth;
    w->stack[w->sp].parent = parent;
    w->stack[w->sp].child = true;
    w->sp++;
    return true;
}

struct visit_ctx {
    deferred_dump_t *w;
    size_t depth, parent;
};

static void push_input(deferred_t *in, void *arg)
{
    struct visit_ctx *c = arg;

    c->w->stats.steps++;
    if (in && in->refs)
        push(c->w, in, "input", c->depth, c->parent);
}

/* The pending entries of d's chain (not the continue entries of the
 * deferreds that wait on d, nor dead ones). */
static uint32_t pending_callbacks(const deferred_t *d)
{
    uint32_t i, n = 0;

    for (i = first_live(d); i < d->n; i++) {
        uint8_t k = kind_of(d, i) & LINK_KIND;

        if (k == LINK_DEAD || k == LINK_PAIR_EB)
            continue;
        if (k == LINK_BOTH && d->links[i].fn == deferred__continue_fn)
            continue;
        n++;
    }
    return n;
}

/* The continue entries of the deferreds waiting on d. */
static uint32_t waiting_on(const deferred_t *d)
{
    uint32_t i, n = 0;

    for (i = d->pos; (d->flags & F_HELD) && i < d->n; i++)
        if (kind_of(d, i) == LINK_BOTH && d->links[i].fn == deferred__continue_fn)
            n++;
    return n;
}

static void site_string(char *buf, size_t size, const char *file, int line)
{
    if (file)
        snprintf(buf, size, "%s:%d", file, line);
    else
        snprintf(buf, size, "?");
}

/* The fields of d's line: its state and what it holds. */
static void deferred_fields(deferred_dump_t *w, deferred_t *d)
{
    const struct deferred_ext *x = d->ext;
    struct multi *m = x ? x->multi : NULL;
    char site[512];
    const char *state;

    if (d->chained_to)
        state = "waiting";
    else if (m)
        state = m->ended ? "ended" : "multi-fire";
    else if (d->flags & F_CALLED)
        state = "fired";
    else
        state = "unfired";
    deferred_dump_str(w, "state", state);
    if (paused_of(d))
        deferred_dump_int(w, "paused", paused_of(d));
    if (d->flags & F_CANCELLED)
        field_flag(w, "cancelled");
    if ((d->flags & F_CALLED) && !m && !d->chained_to) {
        deferred_value_t v = d->result;

        if (deferred_value_is_failure(v)) {
            const deferred_failure_t *f = v.ptr;

            deferred_dump_str(w, "failure", deferred_failure_message(f));
            deferred_dump_int(w, "code", deferred_failure_code(f));
        } else if (v.release == deferred_value_int_release) {
            deferred_dump_int(w, "value", (long long)(intptr_t)v.ptr);
        } else if (!v.ptr && !v.release) {
            deferred_dump_str(w, "value", "none");
        } else {
            deferred_dump_str(w, "value", "pointer");
        }
    }
    if (m) {
        deferred_dump_int(w, "rows", (long long)m->rows);
        deferred_dump_int(w, "queued", (long long)m->queue.len);
        if (d->flags & F_ROW)
            deferred_dump_int(w, "row", (long long)m->row);
        if (m->closing && !m->ended)
            field_flag(w, "finishing");
    }
    deferred_dump_int(w, "callbacks", pending_callbacks(d));
    if (waiting_on(d))
        deferred_dump_int(w, "waiters", waiting_on(d));
    if (x && x->new_file && x->fire_file) {
        site_string(site, sizeof(site), x->fire_file, x->fire_line);
        deferred_dump_str(w, "fired_at", site);
    }
    if (x && x->dbg.note) {
        w->in_note = true;
        x->dbg.note(w, x->dbg.note_arg);
        w->in_note = false;
    }
}

/* Write the tree of root at depth under parent, without recursion.  held:
 * a holder waits on root (a leaf root is then the innermost wait). */
static void write_tree(deferred_dump_t *w, deferred_t *root, const char *role, size_t depth,
                       size_t parent, bool held)
{
    size_t base = w->sp;

    if (!push(w, root, role, depth, parent))
        return;
    w->stack[base].child = held;
    while (w->sp > base && !w->err) {
        struct item it = w->stack[--w->sp];
        deferred_t *d = it.d;
        struct deferred_ext *x = d->ext;
        char site[512];
        size_t first, line, lo, hi;
        bool leaf;

        w->stats.steps++;
        site_string(site, sizeof(site), x ? x->new_file : NULL, x ? x->new_line : 0);
        if (x && x->dbg.epoch == w->epoch) {
            /* Written already: name its line. */
            start_line(w, it.depth, it.parent, it.role, "deferred", site);
            deferred_dump_int(w, "see", (long long)x->dbg.line);
            continue;
        }
        line = w->line + 1; /* the line d gets */
        if (x) {
            x->dbg.epoch = w->epoch;
            x->dbg.line = line;
        }
        /* Its children: what its chain waits on, a combinator's inputs,
         * what its note names; pushed, then reversed so that they come
         * out in that order. */
        first = w->sp;
        if (d->chained_to)
            push(w, d->chained_to, "waits on", it.depth + 1, line);
        if (x && x->inputs) {
            struct visit_ctx c = { w, it.depth + 1, line };

            x->inputs(x->inputs_arg, push_input, &c);
        }
        start_line(w, it.depth, it.parent, it.role, "deferred", site);
        if (w->format == DEFERRED_DUMP_JSON)
            putf(w, ",\"addr\":\"%p\"", (void *)d);
        w->note_depth = it.depth + 1;
        deferred_fields(w, d);
        leaf = w->sp == first;
        if (leaf && it.child && !(d->flags & F_CALLED) && !(x && x->multi))
            field_flag(w, "innermost");
        for (lo = first, hi = w->sp; hi > lo + 1; lo++, hi--) {
            struct item t = w->stack[lo];

            w->stack[lo] = w->stack[hi - 1];
            w->stack[hi - 1] = t;
        }
        w->stats.deferreds++;
    }
    w->sp = base;
}

void deferred_dump_deferred(deferred_dump_t *w, const char *role, deferred_t *d)
{
    if (!w || !d || w->err || !d->refs)
        return;
    if (w->marking) {
        /* Pass 1: a note names what its deferred waits on. */
        w->stats.steps++;
        if (d->ext)
            d->ext->dbg.parent_epoch = w->epoch;
        return;
    }
    if (w->in_note) {
        /* A child of the deferred whose line is being written. */
        push(w, d, role, w->note_depth, w->line);
        return;
    }
    if (w->last)
        write_tree(w, d, role, w->last_depth + 1, w->last, true);
    else
        write_tree(w, d, role, w->nest_len, cur_parent(w), true);
}

/* ---- the dump -------------------------------------------------------------- */

static void mark_held(deferred_t *in, void *arg)
{
    deferred_dump_t *w = arg;

    w->stats.steps++;
    if (in && in->ext)
        in->ext->dbg.parent_epoch = w->epoch;
}

static void run_dump(deferred_dump_t *w, struct deferred__registry *r)
{
    deferred_t *d;
    deferred_dump_holder_t *h;

    w->epoch = ++dump_epoch;
    if (w->epoch == 0) /* 0 is what a new deferred has */
        w->epoch = ++dump_epoch;
    start_line(w, 0, 0, NULL, "dump", NULL);
    deferred_dump_int(w, "deferreds", (long long)r->count);
    deferred_dump_int(w, "holders", (long long)r->nholders);
    deferred_dump_int(w, "debug", deferred_get_debug());
    flush_line(w);
    /* 1: what is held by another is not a root. */
    w->marking = true;
    for (d = r->first; d; d = d->ext->dbg.next) {
        w->stats.steps++;
        if (!d->refs)
            continue;
        if (d->chained_to)
            mark_held(d->chained_to, w);
        if (d->ext->inputs)
            d->ext->inputs(d->ext->inputs_arg, mark_held, w);
        if (d->ext->dbg.note) {
            w->in_note = true;
            d->ext->dbg.note(w, d->ext->dbg.note_arg);
            w->in_note = false;
        }
    }
    w->marking = false;
    /* 2: the holders. */
    for (h = r->holders; h && !w->err; h = h->next_) {
        w->nest_len = 0;
        w->last = 0;
        w->stats.holders++;
        h->describe(w, h->arg);
    }
    w->nest_len = 0;
    /* 3 and 4: the roots, then what only deferreds outside the registry
     * hold. */
    for (d = r->first; d && !w->err; d = d->ext->dbg.next) {
        w->stats.steps++;
        if (d->refs && d->ext->dbg.epoch != w->epoch && d->ext->dbg.parent_epoch != w->epoch)
            write_tree(w, d, NULL, 0, 0, false);
    }
    for (d = r->first; d && !w->err; d = d->ext->dbg.next) {
        w->stats.steps++;
        if (d->refs && d->ext->dbg.epoch != w->epoch)
            write_tree(w, d, NULL, 0, 0, false);
    }
    flush_line(w);
}

int deferred_dump_to(deferred_dump_format_t format, deferred_dump_sink_fn sink, void *arg,
                     deferred_dump_stats_t *stats)
{
    deferred_dump_t w;

    memset(&w, 0, sizeof(w));
    if (!sink || (format != DEFERRED_DUMP_TEXT && format != DEFERRED_DUMP_JSON)) {
        if (stats)
            *stats = w.stats;
        return -EINVAL;
    }
    w.format = format;
    w.sink = sink;
    w.sink_arg = arg;
    pthread_mutex_lock(&reg_lock);
    run_dump(&w, &registry);
    pthread_mutex_unlock(&reg_lock);
    deferred__free(w.buf);
    deferred__free(w.nest);
    deferred__free(w.stack);
    if (stats)
        *stats = w.stats;
    return w.err;
}

static int file_sink(const char *text, size_t len, void *arg)
{
    return fwrite(text, 1, len, arg) == len ? 0 : -EIO;
}

int deferred_dump(FILE *out, deferred_dump_format_t format)
{
    int rc;

    out = out ? out : stderr;
    rc = deferred_dump_to(format, file_sink, out, NULL);
    if (rc == 0 && fflush(out) != 0)
        rc = -EIO;
    return rc;
}

struct string_sink {
    char *buf;
    size_t len, cap;
};

static int string_sink(const char *text, size_t len, void *arg)
{
    struct string_sink *s = arg;
    size_t cap;
    char *p;

    if (s->len + len + 1 > s->cap) {
        cap = s->cap ? s->cap : 1024;
        while (cap < s->len + len + 1)
            cap *= 2;
        p = deferred__realloc(s->buf, cap);
        if (!p)
            return -ENOMEM;
        s->buf = p;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, text, len);
    s->len += len;
    s->buf[s->len] = '\0';
    return 0;
}

char *deferred_dump_string(deferred_dump_format_t format)
{
    struct string_sink s = { NULL, 0, 0 };
    int rc = deferred_dump_to(format, string_sink, &s, NULL);

    if (rc < 0) {
        deferred__free(s.buf);
        errno = -rc;
        return NULL;
    }
    return s.buf; /* never NULL: the summary line is always there */
}
