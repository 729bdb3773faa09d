/*
 * failure.c: refcounted failures, their context frames and their story.
 *
 * A failure is made once and then only read, except that context frames
 * are appended as it crosses the stages of a process.  Its message lives in
 * the same allocation as the failure itself; each frame is one allocation
 * holding its stage and item strings.
 *
 * The design decision to know: constructors never return NULL.  When
 * memory runs out they return deferred__failure_enomem, a static failure
 * whose refcount is never touched, so "out of memory" can always be
 * reported down a chain without allocating.  Freeing walks cause chains in
 * a loop, so a failure wrapped a million times frees in constant stack.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "deferred-private.h"

#define FAILURE_IMMORTAL UINT32_MAX

struct frame {
    struct frame *next;
    const char *item; /* NULL, or points into text after stage */
    char stage[];
};

struct deferred_failure {
    uint32_t refs;
    int code;
    deferred_domain_t domain;
    int line;
    const char *file;
    const char *message;
    deferred_failure_t *cause;
    struct frame *frames, *frames_tail;
    size_t nframes;
    long index;                  /* first-error input, or -1 */
    size_t group_n;              /* failure group: number of inputs */
    deferred_failure_t **group;  /* failure group: the inputs' failures */
    char text[];                 /* the message, when allocated here */
};

deferred_failure_t deferred__failure_enomem = {
    FAILURE_IMMORTAL, ENOMEM, DEFERRED_DOMAIN_LIBRARY, 0, "(static)",
    "out of memory", NULL, NULL, NULL, 0, -1, 0, NULL,
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

/* Make a failure whose message is msg (copied).  Takes cause. */
static deferred_failure_t *failure_make(const char *file, int line,
                                        deferred_domain_t domain, int code,
                                        const char *msg,
                                        deferred_failure_t *cause)
{
    size_t n = strlen(msg) + 1;
    deferred_failure_t *f = deferred__malloc(sizeof(*f) + n);

    if (!f) {
        deferred_failure_unref(cause);
        return &deferred__failure_enomem;
    }
    memcpy(f->text, msg, n);
    f->refs = 1;
    f->code = code;
    f->domain = domain;
    f->line = line;
    f->file = file ? file : "?";
    f->message = f->text;
    f->cause = cause;
    f->frames = f->frames_tail = NULL;
    f->nframes = 0;
    f->index = -1;
    f->group_n = 0;
    f->group = NULL;
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
    deferred_failure_t *f;

    if (!cause)
        cause = &deferred__failure_enomem;
    f = deferred_failure_new_at(__FILE__, __LINE__, DEFERRED_DOMAIN_LIBRARY,
                                DEFERRED_EFIRSTERROR, "input %zu failed: %s",
                                index, cause->message);
    if (f == &deferred__failure_enomem) {
        deferred_failure_unref(cause);
        return f;
    }
    f->cause = cause;
    f->index = (long)index;
    return f;
}

deferred_failure_t *deferred_failure_group(deferred_failure_t *const *failures,
                                           size_t n)
{
    deferred_failure_t *f;
    size_t i, failed = 0;

    if (!failures)
        n = 0;
    for (i = 0; i < n; i++)
        failed += failures[i] != NULL;
    f = deferred_failure_new_at(__FILE__, __LINE__, DEFERRED_DOMAIN_LIBRARY,
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
    if (f && f->refs != FAILURE_IMMORTAL)
        f->refs++;
    return f;
}

void deferred_failure_unref(deferred_failure_t *f)
{
    /* Walk the cause chain in a loop: each freed failure hands its cause's
     * reference to the next turn instead of recursing. */
    while (f && f->refs != FAILURE_IMMORTAL && --f->refs == 0) {
        deferred_failure_t *cause = f->cause;
        struct frame *fr = f->frames;
        size_t i;

        while (fr) {
            struct frame *next = fr->next;
            deferred__free(fr);
            fr = next;
        }
        for (i = 0; i < f->group_n; i++)
            deferred_failure_unref(f->group[i]);
        deferred__free(f->group);
        deferred__free(f);
        f = cause;
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
    struct frame *fr;

    if (item_fmt) {
        item = deferred__vasprintf(item_fmt, ap);
        if (!item)
            return NULL;
        item_len = strlen(item) + 1;
    }
    stage_len = strlen(stage) + 1;
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
    fr->next = NULL;
    return fr;
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
    fr = frame_vmake(stage, item_fmt, ap);
    if (!fr)
        return -ENOMEM;
    if (front) {
        fr->next = f->frames;
        f->frames = fr;
        if (!f->frames_tail)
            f->frames_tail = fr;
    } else {
        if (f->frames_tail)
            f->frames_tail->next = fr;
        else
            f->frames = fr;
        f->frames_tail = fr;
    }
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
    const struct frame *fr = f ? f->frames : NULL;

    while (fr && i--)
        fr = fr->next;
    return fr;
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

/* A bounded writer with snprintf's contract: len counts every byte the
 * whole story needs, buf receives what fits. */
struct writer {
    char *buf;
    size_t size;
    size_t len;
};

static void DEFERRED_PRINTF(2, 3) put(struct writer *w, const char *fmt, ...)
{
    va_list ap;
    int n;
    char *at = NULL;
    size_t room = 0;

    if (w->len < w->size) {
        at = w->buf + w->len;
        room = w->size - w->len;
    }
    va_start(ap, fmt);
    n = vsnprintf(at, room, fmt, ap);
    va_end(ap);
    if (n > 0)
        w->len += (size_t)n;
}

static void put_head(struct writer *w, const deferred_failure_t *f)
{
    /* Only the library's and the system's codes are errno names. */
    if (f->domain == DEFERRED_DOMAIN_LIBRARY || f->domain == DEFERRED_DOMAIN_SYSTEM)
        put(w, "%s %s: %s (at %s:%d)", deferred_domain_name(f->domain),
            deferred_err_name(f->code), f->message, f->file, f->line);
    else
        put(w, "%s error %d: %s (at %s:%d)", deferred_domain_name(f->domain),
            f->code, f->message, f->file, f->line);
}

/* Frames are rendered from the consumer back to the producer: the last
 * frame added was added nearest the consumer. */
static void put_frames(struct writer *w, const deferred_failure_t *f,
                       const char *indent)
{
    size_t i;

    if (!f->nframes)
        return;
    put(w, "\n%scontext, from the consumer back to the producer:", indent);
    for (i = f->nframes; i-- > 0;) {
        const struct frame *fr = frame_at(f, i);

        if (fr->item)
            put(w, "\n%s  in %s: %s", indent, fr->stage, fr->item);
        else
            put(w, "\n%s  in %s", indent, fr->stage);
    }
}

static void put_story(struct writer *w, const deferred_failure_t *f,
                      const char *indent)
{
    const deferred_failure_t *c;
    size_t i;

    put_head(w, f);
    for (i = 0; i < f->group_n; i++) {
        if (!f->group[i])
            continue;
        put(w, "\n%s  input %zu: ", indent, i);
        put_head(w, f->group[i]);
        for (c = f->group[i]->cause; c; c = c->cause) {
            put(w, "\n%s    caused by: ", indent);
            put_head(w, c);
        }
    }
    for (c = f->cause; c; c = c->cause) {
        put(w, "\n%s  caused by: ", indent);
        put_head(w, c);
    }
    put_frames(w, f, indent);
    for (c = f->cause; c; c = c->cause)
        put_frames(w, c, indent);
}

int deferred_failure_story(const deferred_failure_t *f, char *buf, size_t size)
{
    struct writer w;

    if (!f || (!buf && size))
        return -EINVAL;
    w.buf = buf;
    w.size = size;
    w.len = 0;
    if (size)
        buf[0] = '\0';
    put_story(&w, f, "");
    return w.len > INT32_MAX ? INT32_MAX : (int)w.len;
}

char *deferred_failure_story_alloc(const deferred_failure_t *f)
{
    int n;
    char *buf;

    if (!f)
        return NULL;
    n = deferred_failure_story(f, NULL, 0);
    buf = deferred__malloc((size_t)n + 1);
    if (buf)
        deferred_failure_story(f, buf, (size_t)n + 1);
    return buf;
}
