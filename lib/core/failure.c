/*
 * failure.c: refcounted failures, their context frames and their story.
 *
 * A failure is made once and then only read, except that context frames
 * are added as it crosses the stages of a process.  Its message lives in
 * the same allocation as the failure itself; each frame is one allocation
 * holding its stage and item strings, and the failure keeps its frames in
 * a double-ended array (frames are appended by deferred_failure_add_context
 * and put in front by the process), so either end grows in amortised
 * constant time and frame i is found in constant time.
 *
 * The design decisions to know:
 *  - Constructors never return NULL.  When memory runs out they return
 *    deferred__failure_enomem, a static failure whose refcount is never
 *    touched, so "out of memory" can always be reported down a chain
 *    without allocating.
 *  - Nothing walks the graph of causes and group members by recursion.
 *    Freeing threads the failures whose last reference went through their
 *    dead_next field (a worklist that needs no allocation), so a million
 *    nested causes, groups or first-errors free in constant stack.  The
 *    story walks cause chains in loops and group nesting with a fixed-size
 *    array of STORY_MAX_DEPTH levels; deeper members are named with a
 *    truncation note.
 *  - Every size is checked before it is computed: a size that would wrap
 *    is an allocation failure.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "deferred-private.h"

/* The site of a failure made without one: deferred_failure_file() gives
 * "?", and the story names no site. */
static const char no_site[] = "?";

#define FAILURE_IMMORTAL UINT32_MAX

/* How many levels of nested groups the story shows (see put_story). */
#define STORY_MAX_DEPTH 32
/* How much of its cause's message a first-error's message quotes. */
#define FIRST_ERROR_QUOTE 200
#define STORY_STR_(x) #x
#define STORY_STR(x) STORY_STR_(x)

struct frame {
    const char *item; /* NULL, or points into stage's storage after it */
    char stage[];
};

struct deferred_failure {
    uint32_t refs;
    int code;
    deferred_domain_t domain;
    int line;
    const char *file;
    const char *message;
    size_t message_len;
    deferred_failure_t *cause;
    /* The frames, first added (nearest the input) first: frames[first ..
     * first + nframes - 1] of an array of frames_cap slots. */
    struct frame **frames;
    size_t first, nframes, frames_cap;
    long index;                  /* first-error input, or -1 */
    size_t group_n;              /* failure group: number of inputs */
    deferred_failure_t **group;  /* failure group: the inputs' failures */
    deferred_failure_t *dead_next; /* the free worklist (unref) */
    char text[];                 /* the message, when allocated here */
};

deferred_failure_t deferred__failure_enomem = {
    .refs = FAILURE_IMMORTAL,
    .code = ENOMEM,
    .domain = DEFERRED_DOMAIN_LIBRARY,
    .line = 0,
    .file = "(static)",
    .message = "out of memory",
    .message_len = sizeof("out of memory") - 1,
    .index = -1,
};

const char *deferred_domain_name(deferred_domain_t domain)
{
    switch (domain) {
    case DEFERRED_DOMAIN_ANY:
        return "any";
    case DEFERRED_DOMAIN_LIBRARY:
        return "library";
    case DEFERRED_DOMAIN_SYSTEM:
        return "system";
    case DEFERRED_DOMAIN_SQLITE:
        return "sqlite";
    case DEFERRED_DOMAIN_POSTGRES:
        return "postgres";
    case DEFERRED_DOMAIN_USER:
        return "user";
    }
    return "unknown";
}

/* The message a failure gets when it is made without a format. */
static const char *default_message(deferred_domain_t domain, int code,
                                   char *buf, size_t size)
{
    if (domain == DEFERRED_DOMAIN_LIBRARY)
        return deferred_strerror(code);
    if (domain == DEFERRED_DOMAIN_SYSTEM)
        snprintf(buf, size, "%s", strerror(code));
    else
        snprintf(buf, size, "%s error %d", deferred_domain_name(domain), code);
    return buf;
}

/* Make a failure with room for a message of len bytes and its NUL, which
 * the caller writes into f->text.  Takes cause; the static ENOMEM failure
 * when it cannot allocate (or len is past any possible size). */
static deferred_failure_t *failure_alloc(const char *file, int line,
                                         deferred_domain_t domain, int code,
                                         size_t len, deferred_failure_t *cause)
{
    deferred_failure_t *f = NULL;

    if (len < SIZE_MAX - sizeof(*f))
        f = deferred__malloc(sizeof(*f) + len + 1);
    if (!f) {
        deferred_failure_unref(cause);
        return &deferred__failure_enomem;
    }
    f->text[len] = '\0';
    f->refs = 1;
    f->code = code;
    f->domain = domain;
    f->line = line;
    f->file = file ? file : no_site;
    f->message = f->text;
    f->message_len = len;
    f->cause = cause;
    f->frames = NULL;
    f->first = f->nframes = f->frames_cap = 0;
    f->index = -1;
    f->group_n = 0;
    f->group = NULL;
    f->dead_next = NULL;
    return f;
}

/* Make a failure whose message is msg (copied).  Takes cause. */
static deferred_failure_t *failure_make(const char *file, int line,
                                        deferred_domain_t domain, int code,
                                        const char *msg,
                                        deferred_failure_t *cause)
{
    size_t len = strlen(msg);
    deferred_failure_t *f = failure_alloc(file, line, domain, code, len, cause);

    if (f != &deferred__failure_enomem)
        memcpy(f->text, msg, len);
    return f;
}

static deferred_failure_t *failure_vmake(const char *file, int line,
                                         deferred_domain_t domain, int code,
                                         deferred_failure_t *cause,
                                         const char *fmt, va_list ap)
{
    char small[64];
    char *msg;
    deferred_failure_t *f;

    if (!fmt)
        return failure_make(file, line, domain, code,
                            default_message(domain, code, small, sizeof(small)),
                            cause);
    msg = deferred__vasprintf(fmt, ap);
    if (!msg) {
        deferred_failure_unref(cause);
        return &deferred__failure_enomem;
    }
    f = failure_make(file, line, domain, code, msg, cause);
    deferred__free(msg);
    return f;
}

deferred_failure_t *deferred_failure_newv_at(const char *file, int line,
                                             deferred_domain_t domain, int code,
                                             const char *fmt, va_list ap)
{
    return failure_vmake(file, line, domain, code, NULL, fmt, ap);
}

deferred_failure_t *deferred_failure_new_at(const char *file, int line,
                                            deferred_domain_t domain, int code,
                                            const char *fmt, ...)
{
    va_list ap;
    deferred_failure_t *f;

    va_start(ap, fmt);
    f = failure_vmake(file, line, domain, code, NULL, fmt, ap);
    va_end(ap);
    return f;
}

deferred_failure_t *deferred_failure_wrap_at(const char *file, int line,
                                             deferred_failure_t *cause,
                                             deferred_domain_t domain, int code,
                                             const char *fmt, ...)
{
    va_list ap;
    deferred_failure_t *f;

    va_start(ap, fmt);
    f = failure_vmake(file, line, domain, code, cause, fmt, ap);
    va_end(ap);
    return f;
}

deferred_failure_t *deferred_failure_first_error(size_t index,
                                                 deferred_failure_t *cause)
{
    char head[64];
    size_t head_len, quote, len;
    bool cut;
    deferred_failure_t *f;

    if (!cause)
        cause = &deferred__failure_enomem;
    /* "input <index> failed: <quote>", quoting at most FIRST_ERROR_QUOTE
     * bytes of the cause's message (cut at a UTF-8 character boundary, then
     * "..."): first-errors of first-errors would otherwise each copy the
     * whole nested message, quadratic in the depth. */
    head_len = (size_t)snprintf(head, sizeof(head), "input %zu failed: ", index);
    quote = cause->message_len;
    cut = quote > FIRST_ERROR_QUOTE;
    if (cut) {
        quote = FIRST_ERROR_QUOTE;
        while (quote > 0 && ((unsigned char)cause->message[quote] & 0xC0) == 0x80)
            quote--;
    }
    len = head_len + quote + (cut ? 3 : 0);
    /* cause is not taken until f exists: on failure it is released here */
    /* No site: the library's own file would tell its reader nothing (the
     * combinator's or the caller's frames say where). */
    f = failure_alloc(NULL, 0, DEFERRED_DOMAIN_LIBRARY, DEFERRED_EFIRSTERROR, len, NULL);
    if (f == &deferred__failure_enomem) {
        deferred_failure_unref(cause);
        return f;
    }
    memcpy(f->text, head, head_len);
    memcpy(f->text + head_len, cause->message, quote);
    if (cut)
        memcpy(f->text + head_len + quote, "...", 3);
    f->cause = cause;
    f->index = index > (size_t)LONG_MAX ? LONG_MAX : (long)index;
    return f;
}

deferred_failure_t *deferred_failure_group(deferred_failure_t *const *failures,
                                           size_t n)
{
    deferred_failure_t *f;
    size_t i, failed = 0;

    if (!failures)
        n = 0;
    /* More pointers than fit in memory: no such array can exist, so it is
     * not read (and nothing can be released). */
    if (n > SIZE_MAX / sizeof(*f->group))
        return &deferred__failure_enomem;
    for (i = 0; i < n; i++)
        failed += failures[i] != NULL;
    f = deferred_failure_new_at(NULL, 0, DEFERRED_DOMAIN_LIBRARY, /* no site, as above */
                                DEFERRED_EGROUP, "%zu of %zu inputs failed",
                                failed, n);
    if (f != &deferred__failure_enomem && n > 0) {
        f->group = deferred__malloc(n * sizeof(*f->group));
        if (!f->group) {
            deferred__free(f);
            f = &deferred__failure_enomem;
        }
    }
    if (f == &deferred__failure_enomem) {
        for (i = 0; i < n; i++)
            deferred_failure_unref(failures[i]);
        return f;
    }
    for (i = 0; i < n; i++)
        f->group[i] = failures[i];
    f->group_n = n;
    return f;
}

deferred_failure_t *deferred_failure_ref(deferred_failure_t *f)
{
    /* A count that reaches FAILURE_IMMORTAL makes the failure immortal:
     * leaked rather than freed while still referenced. */
    if (f && f->refs != FAILURE_IMMORTAL)
        f->refs++;
    return f;
}

/* Drop one reference of f; true when it was the last (f is to be freed). */
static bool failure_release(deferred_failure_t *f)
{
    return f && f->refs != FAILURE_IMMORTAL && --f->refs == 0;
}

static void frames_free(deferred_failure_t *f)
{
    size_t i;

    for (i = 0; i < f->nframes; i++)
        deferred__free(f->frames[f->first + i]);
    deferred__free(f->frames);
}

void deferred_failure_unref(deferred_failure_t *f)
{
    deferred_failure_t *dead;

    if (!failure_release(f))
        return;
    /* A worklist of failures whose last reference is gone, threaded
     * through dead_next: freeing one drops its cause's and members'
     * references and pushes those that die, so no nesting recurses and
     * nothing is allocated. */
    f->dead_next = NULL;
    dead = f;
    while (dead) {
        deferred_failure_t *g = dead;
        size_t i;

        dead = g->dead_next;
        if (failure_release(g->cause)) {
            g->cause->dead_next = dead;
            dead = g->cause;
        }
        for (i = 0; i < g->group_n; i++) {
            deferred_failure_t *m = g->group[i];

            if (failure_release(m)) {
                m->dead_next = dead;
                dead = m;
            }
        }
        frames_free(g);
        deferred__free(g->group);
        deferred__free(g);
    }
}

int deferred_failure_code(const deferred_failure_t *f)
{
    return f ? f->code : 0;
}

deferred_domain_t deferred_failure_domain(const deferred_failure_t *f)
{
    return f ? f->domain : DEFERRED_DOMAIN_ANY;
}

const char *deferred_failure_message(const deferred_failure_t *f)
{
    return f ? f->message : "";
}

deferred_failure_t *deferred_failure_cause(const deferred_failure_t *f)
{
    return f ? f->cause : NULL;
}

const char *deferred_failure_file(const deferred_failure_t *f)
{
    return f ? f->file : NULL;
}

int deferred_failure_line(const deferred_failure_t *f)
{
    return f ? f->line : 0;
}

long deferred_failure_index(const deferred_failure_t *f)
{
    return f ? f->index : -1;
}

size_t deferred_failure_group_size(const deferred_failure_t *f)
{
    return f ? f->group_n : 0;
}

deferred_failure_t *deferred_failure_group_get(const deferred_failure_t *f,
                                               size_t i)
{
    return f && i < f->group_n ? f->group[i] : NULL;
}

bool deferred_failure_is(const deferred_failure_t *f, deferred_domain_t domain,
                         int code)
{
    return f && f->code == code &&
           (domain == DEFERRED_DOMAIN_ANY || f->domain == domain);
}

deferred_failure_t *deferred_failure_find(const deferred_failure_t *f,
                                          deferred_domain_t domain, int code)
{
    for (; f; f = f->cause)
        if (deferred_failure_is(f, domain, code))
            return (deferred_failure_t *)f;
    return NULL;
}

/* Make a frame for stage and the formatted item; NULL when out of memory. */
static struct frame *DEFERRED_PRINTF(2, 0) frame_vmake(const char *stage,
                                                      const char *item_fmt, va_list ap)
{
    char *item = NULL;
    size_t stage_len, item_len = 0;
    struct frame *fr = NULL;

    if (item_fmt) {
        item = deferred__vasprintf(item_fmt, ap);
        if (!item)
            return NULL;
        item_len = strlen(item) + 1;
    }
    stage_len = strlen(stage) + 1;
    if (stage_len < SIZE_MAX - sizeof(*fr) &&
        item_len <= SIZE_MAX - sizeof(*fr) - stage_len)
        fr = deferred__malloc(sizeof(*fr) + stage_len + item_len);
    if (!fr) {
        deferred__free(item);
        return NULL;
    }
    memcpy(fr->stage, stage, stage_len);
    fr->item = NULL;
    if (item) {
        memcpy(fr->stage + stage_len, item, item_len);
        fr->item = fr->stage + stage_len;
        deferred__free(item);
    }
    return fr;
}

/* Make room for one more frame at the front (front true) or the back of
 * f's array.  When the whole array is less than half full the frames are
 * moved to its middle; otherwise it doubles, the frames in the middle of
 * the new one.  Either way both ends then have room for a quarter of the
 * array, so adding n frames at either end costs O(n).  0 or -ENOMEM (f
 * unchanged). */
static int frames_make_room(deferred_failure_t *f, bool front)
{
    size_t n = f->nframes, cap = f->frames_cap, first;
    struct frame **frames;

    if (front ? f->first > 0 : f->first + n < cap)
        return 0;
    if (n < cap / 2) {
        first = (cap - n) / 2;
        memmove(f->frames + first, f->frames + f->first, n * sizeof(*frames));
        f->first = first;
        return 0;
    }
    if (cap > SIZE_MAX / 2 / sizeof(*frames))
        return -ENOMEM;
    cap = cap ? cap * 2 : 8;
    frames = deferred__malloc(cap * sizeof(*frames));
    if (!frames)
        return -ENOMEM;
    first = (cap - n) / 2;
    if (n)
        memcpy(frames + first, f->frames + f->first, n * sizeof(*frames));
    deferred__free(f->frames);
    f->frames = frames;
    f->frames_cap = cap;
    f->first = first;
    return 0;
}

/* Add a frame to f, after the others (front false) or before them. */
static int DEFERRED_PRINTF(4, 0) frame_add(deferred_failure_t *f, bool front,
                                           const char *stage, const char *item_fmt,
                                           va_list ap)
{
    struct frame *fr;

    if (!f || !stage)
        return -EINVAL;
    if (f == &deferred__failure_enomem)
        return -ENOMEM;
    if (f->nframes == SIZE_MAX || frames_make_room(f, front) < 0)
        return -ENOMEM;
    fr = frame_vmake(stage, item_fmt, ap);
    if (!fr)
        return -ENOMEM;
    if (front)
        f->frames[--f->first] = fr;
    else
        f->frames[f->first + f->nframes] = fr;
    f->nframes++;
    return 0;
}

int deferred_failure_add_context(deferred_failure_t *f, const char *stage,
                                 const char *item_fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, item_fmt);
    rc = frame_add(f, false, stage, item_fmt, ap);
    va_end(ap);
    return rc;
}

int deferred__failure_push_context(deferred_failure_t *f, const char *stage,
                                   const char *item_fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, item_fmt);
    rc = frame_add(f, true, stage, item_fmt, ap);
    va_end(ap);
    return rc;
}

size_t deferred_failure_context_size(const deferred_failure_t *f)
{
    return f ? f->nframes : 0;
}

static const struct frame *frame_at(const deferred_failure_t *f, size_t i)
{
    return f && i < f->nframes ? f->frames[f->first + i] : NULL;
}

const char *deferred_failure_context_stage(const deferred_failure_t *f, size_t i)
{
    const struct frame *fr = frame_at(f, i);

    return fr ? fr->stage : NULL;
}

const char *deferred_failure_context_item(const deferred_failure_t *f, size_t i)
{
    const struct frame *fr = frame_at(f, i);

    return fr ? fr->item : NULL;
}

/* ---- the story ---------------------------------------------------------- */

/* A bounded writer with snprintf's contract: len counts every byte the
 * whole story needs, buf receives what fits of it (room bytes, leaving one
 * for the NUL).  Once len passes STORY_MAX_LEN the story cannot be
 * returned anyway, so the walk stops early (full): this bounds the work
 * on a graph that shares one failure many times. */
#define STORY_MAX_LEN ((size_t)INT_MAX)

struct writer {
    char *buf;
    size_t room;
    size_t len;
};

static bool story_full(const struct writer *w)
{
    return w->len > STORY_MAX_LEN;
}

static void put_mem(struct writer *w, const char *s, size_t n)
{
    if (w->len < w->room)
        memcpy(w->buf + w->len, s, n < w->room - w->len ? n : w->room - w->len);
    /* len stays below STORY_MAX_LEN + 1 + n: no wrap on any platform
     * where a string of n bytes exists */
    w->len = n > SIZE_MAX - w->len ? SIZE_MAX : w->len + n;
}

static void put_str(struct writer *w, const char *s)
{
    put_mem(w, s, strlen(s));
}

static void put_long(struct writer *w, long long x)
{
    char num[32];
    int n = snprintf(num, sizeof(num), "%lld", x);

    put_mem(w, num, (size_t)n);
}

static void put_size(struct writer *w, size_t x)
{
    char num[32];
    int n = snprintf(num, sizeof(num), "%zu", x);

    put_mem(w, num, (size_t)n);
}

/* A new line indented by 2 * level spaces; level is at most
 * STORY_MAX_DEPTH + 1 (a truncation note under the deepest member). */
#define STORY_SPACES 80
typedef char story_indent_fits[2 * (STORY_MAX_DEPTH + 1) <= STORY_SPACES ? 1 : -1];

static void put_line(struct writer *w, size_t level)
{
    static const char line[] = "\n                                        "
                               "                                        ";

    put_mem(w, line, 1 + 2 * level);
}

/* "<domain> <NAME>: <message> (at <file>:<line>)" */
static void put_head(struct writer *w, const deferred_failure_t *f)
{
    put_str(w, deferred_domain_name(f->domain));
    /* Only the library's and the system's codes are errno names. */
    if (f->domain == DEFERRED_DOMAIN_LIBRARY || f->domain == DEFERRED_DOMAIN_SYSTEM) {
        put_mem(w, " ", 1);
        put_str(w, deferred_err_name(f->code));
    } else {
        put_mem(w, " error ", 7);
        put_long(w, f->code);
    }
    put_mem(w, ": ", 2);
    put_mem(w, f->message, f->message_len);
    if (f->file == no_site)
        return; /* made on behalf of no particular call: no site to name */
    put_mem(w, " (at ", 5);
    put_str(w, f->file);
    put_mem(w, ":", 1);
    put_long(w, f->line);
    put_mem(w, ")", 1);
}

/* f's frames from the consumer back to the producer (the last frame added
 * was added nearest the consumer), under a heading at level. */
static void put_frames(struct writer *w, const deferred_failure_t *f, size_t level)
{
    size_t i;

    if (!f->nframes)
        return;
    put_line(w, level);
    put_str(w, "context, from the consumer back to the producer:");
    for (i = f->nframes; i-- > 0 && !story_full(w);) {
        const struct frame *fr = f->frames[f->first + i];

        put_line(w, level + 1);
        put_mem(w, "in ", 3);
        put_str(w, fr->stage);
        if (fr->item) {
            put_mem(w, ": ", 2);
            put_str(w, fr->item);
        }
    }
}

/*
 * A chain is a failure and its causes; a chain at level L renders its
 * head, then for each failure of it in turn its group members (each a
 * chain at level L + 1, "input <i>: ...") and its cause ("caused by: ..."
 * at level L + 1), and last the frames of each of its failures.  Cause
 * chains are followed in a loop however long they are; nested groups
 * take one slot of levels[] each, and a member that would need more than
 * STORY_MAX_DEPTH levels is rendered as its head and a truncation note.
 */
struct story_level {
    const deferred_failure_t *head; /* the chain's first failure */
    const deferred_failure_t *at;   /* the failure of it being rendered */
    size_t next;                    /* at's next group member */
};

static void put_story(struct writer *w, const deferred_failure_t *f)
{
    struct story_level levels[STORY_MAX_DEPTH];
    size_t depth = 0;

    put_head(w, f);
    levels[0].head = levels[0].at = f;
    levels[0].next = 0;
    while (!story_full(w)) {
        struct story_level *l = &levels[depth];
        const deferred_failure_t *m;

        if (l->next < l->at->group_n) {
            size_t i = l->next++;

            m = l->at->group[i];
            if (!m)
                continue;
            put_line(w, depth + 1);
            put_mem(w, "input ", 6);
            put_size(w, i);
            put_mem(w, ": ", 2);
            put_head(w, m);
            if (depth + 1 == STORY_MAX_DEPTH) {
                if (m->cause || m->group_n || m->nframes) {
                    put_line(w, depth + 2);
                    put_str(w, "(its causes, inputs and context are not shown: "
                               "failures nested more than " STORY_STR(STORY_MAX_DEPTH)
                               " groups deep)");
                }
                continue;
            }
            depth++;
            levels[depth].head = levels[depth].at = m;
            levels[depth].next = 0;
            continue;
        }
        if (l->at->cause) {
            l->at = l->at->cause;
            l->next = 0;
            put_line(w, depth + 1);
            put_mem(w, "caused by: ", 11);
            put_head(w, l->at);
            continue;
        }
        for (m = l->head; m && !story_full(w); m = m->cause)
            put_frames(w, m, depth);
        if (depth == 0)
            break;
        depth--;
    }
}

/* Render f's story into buf (room bytes for text, then the NUL); the
 * story's full length, or more than STORY_MAX_LEN if it is longer. */
static size_t story_render(const deferred_failure_t *f, char *buf, size_t size)
{
    struct writer w;

    w.buf = buf;
    w.room = size ? size - 1 : 0;
    w.len = 0;
    put_story(&w, f);
    if (size)
        buf[w.len < w.room ? w.len : w.room] = '\0';
    return w.len;
}

int deferred_failure_story(const deferred_failure_t *f, char *buf, size_t size)
{
    size_t len;

    if (!f || (!buf && size))
        return -EINVAL;
    len = story_render(f, buf, size);
    return len > STORY_MAX_LEN ? -EOVERFLOW : (int)len;
}

char *deferred_failure_story_alloc(const deferred_failure_t *f)
{
    size_t len;
    char *buf;

    if (!f)
        return NULL;
    len = story_render(f, NULL, 0);
    if (len > STORY_MAX_LEN)
        return NULL;
    buf = deferred__malloc(len + 1);
    if (buf)
        story_render(f, buf, len + 1);
    return buf;
}
