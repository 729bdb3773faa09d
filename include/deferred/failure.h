/*
 * deferred/failure.h: what travels down the error path.
 *
 * A deferred_failure_t is refcounted and immutable once made, except that
 * context frames may be added to it as it crosses the stages of a process.
 * It holds:
 *  - a code, errno-style and positive (ECANCELED, ETIMEDOUT, ENOMEM, ...,
 *    or one of the library's own codes such as DEFERRED_EFIRSTERROR);
 *  - a domain saying whose code it is (the library, the system, SQLite,
 *    PostgreSQL or the user);
 *  - a formatted message;
 *  - an optional cause (the failure it wraps);
 *  - the site where it was made (file and line, captured by the macros);
 *  - context frames: each names a stage and the item it was handling, so
 *    the offending input of a pipeline can be found (a pipeline's
 *    error context);
 *  - for composite failures, an input index (first-error) or the failures
 *    of every input (failure group).
 *
 * deferred_failure_story() renders all of it as one string: the message,
 * its causes, and the frames from the consumer back to the producer and
 * the input that started it.
 *
 * Allocation failure: a constructor never returns NULL.  When it cannot
 * allocate, it returns the library's static ENOMEM failure (code ENOMEM,
 * domain library), which refcounting leaves alone and to which no context
 * can be added.  Whatever it was asked to take (a cause, group members) is
 * released.
 */
#ifndef DEFERRED_FAILURE_H
#define DEFERRED_FAILURE_H

#include <stdarg.h>
#include "value.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum deferred_domain {
    DEFERRED_DOMAIN_ANY = 0, /* only for matching: any domain */
    DEFERRED_DOMAIN_LIBRARY, /* libdeferred's own codes and errno values */
    DEFERRED_DOMAIN_SYSTEM,  /* an errno from a system call */
    DEFERRED_DOMAIN_SQLITE,  /* an SQLite result code */
    DEFERRED_DOMAIN_POSTGRES, /* a PostgreSQL error */
    DEFERRED_DOMAIN_USER      /* the application's own codes */
} deferred_domain_t;

/* The domain's name ("library", "system", "sqlite", "postgres", "user"). */
DEFERRED_EXPORT const char *deferred_domain_name(deferred_domain_t domain);

/*
 * Make a failure with one reference, recording the caller's file and line.
 * fmt may be NULL: the message is then the code's text (the library table
 * for the library domain, strerror() for the system domain, the code's
 * number otherwise).  Never returns NULL (see the header comment on
 * allocation failure).  deferred_failure_new_at() with a NULL file makes a
 * failure with no site: deferred_failure_file() gives "?", and the story
 * names no site (the library does so for failures made on behalf of no
 * particular call of the user's).
 */
#define deferred_failure_new(domain, code, ...) \
    deferred_failure_new_at(__FILE__, __LINE__, (domain), (code), __VA_ARGS__)
DEFERRED_EXPORT deferred_failure_t *
deferred_failure_new_at(const char *file, int line, deferred_domain_t domain,
                        int code, const char *fmt, ...) DEFERRED_PRINTF(5, 6);
DEFERRED_EXPORT deferred_failure_t *
deferred_failure_newv_at(const char *file, int line, deferred_domain_t domain,
                         int code, const char *fmt, va_list ap)
    DEFERRED_PRINTF(5, 0);

/*
 * Make a failure that wraps cause (taken; NULL means no cause).  Same rules
 * as deferred_failure_new().
 */
#define deferred_failure_wrap(cause, domain, code, ...) \
    deferred_failure_wrap_at(__FILE__, __LINE__, (cause), (domain), (code), \
                             __VA_ARGS__)
DEFERRED_EXPORT deferred_failure_t *
deferred_failure_wrap_at(const char *file, int line, deferred_failure_t *cause,
                         deferred_domain_t domain, int code, const char *fmt,
                         ...) DEFERRED_PRINTF(6, 7);

/*
 * A first-error failure (code DEFERRED_EFIRSTERROR, library domain): input
 * number index of a combinator failed with cause (taken; NULL stands for
 * the static ENOMEM failure).  Its message names the index and quotes the
 * cause's message, at most its first 200 bytes (cut at a UTF-8 character
 * boundary, then "..."), so first-errors nested to any depth keep messages
 * of bounded size.  deferred_failure_index() gives index, or LONG_MAX for
 * an index above LONG_MAX.
 */
DEFERRED_EXPORT deferred_failure_t *
deferred_failure_first_error(size_t index, deferred_failure_t *cause);

/*
 * A failure group (code DEFERRED_EGROUP, library domain) holding the
 * failures of n inputs, by index.  Takes each of failures[0..n-1] (a NULL
 * entry stands for an input without a failure); the array itself stays the
 * caller's.  NULL failures means no inputs (n is ignored).  An n so large
 * that n pointers cannot fit in memory (no such array can exist) gives the
 * static ENOMEM failure without reading the array.
 */
DEFERRED_EXPORT deferred_failure_t *
deferred_failure_group(deferred_failure_t *const *failures, size_t n);

/* Add a reference; returns f.  NULL gives NULL.  A failure referenced
 * 2^32 - 1 times at once is never freed (rather than freed too early). */
DEFERRED_EXPORT deferred_failure_t *deferred_failure_ref(deferred_failure_t *f);

/* Drop a reference; the last one frees f and drops its cause, frames and
 * members.  NULL is a no-op.  Never recurses and never allocates: cause
 * chains, nested groups and first-errors of any depth (a million and more)
 * are freed in constant stack. */
DEFERRED_EXPORT void deferred_failure_unref(deferred_failure_t *f);

/* Accessors.  All borrow f and return borrowed data that lives as long as
 * f.  On NULL f: 0, DEFERRED_DOMAIN_ANY, "" or NULL. */
DEFERRED_EXPORT int deferred_failure_code(const deferred_failure_t *f);
DEFERRED_EXPORT deferred_domain_t deferred_failure_domain(const deferred_failure_t *f);
DEFERRED_EXPORT const char *deferred_failure_message(const deferred_failure_t *f);
DEFERRED_EXPORT deferred_failure_t *deferred_failure_cause(const deferred_failure_t *f);
DEFERRED_EXPORT const char *deferred_failure_file(const deferred_failure_t *f);
DEFERRED_EXPORT int deferred_failure_line(const deferred_failure_t *f);

/* The input index of a first-error failure; -1 for any other failure. */
DEFERRED_EXPORT long deferred_failure_index(const deferred_failure_t *f);

/* The number of inputs of a failure group (0 for any other failure), and
 * the failure of input i (borrowed; NULL when that input did not fail or i
 * is out of range). */
DEFERRED_EXPORT size_t deferred_failure_group_size(const deferred_failure_t *f);
DEFERRED_EXPORT deferred_failure_t *
deferred_failure_group_get(const deferred_failure_t *f, size_t i);

/*
 * Matching (Twisted's check/trap).  deferred_failure_is() is true when f
 * itself has this domain and code; DEFERRED_DOMAIN_ANY matches any domain.
 * deferred_failure_find() looks at f, then its cause, then the cause's
 * cause, and returns the first match (borrowed) or NULL; it follows the
 * chain in a loop, whatever its length, and does not look into the
 * members of failure groups (deferred_failure_group_get() reaches them).
 */
DEFERRED_EXPORT bool deferred_failure_is(const deferred_failure_t *f,
                                         deferred_domain_t domain, int code);
DEFERRED_EXPORT deferred_failure_t *
deferred_failure_find(const deferred_failure_t *f, deferred_domain_t domain,
                      int code);

/*
 * Add a context frame: stage names who saw the failure pass (a process
 * stage, a query, a row number), item_fmt describes the item it was
 * handling (NULL for none).  Frames are kept in the order added: the first
 * is nearest the input, the last nearest the consumer.  Returns 0, -EINVAL
 * for NULL f or stage, -ENOMEM when it cannot allocate (f is unchanged and
 * still valid).
 */
DEFERRED_EXPORT int deferred_failure_add_context(deferred_failure_t *f,
                                                 const char *stage,
                                                 const char *item_fmt, ...)
    DEFERRED_PRINTF(3, 4);

/* The number of context frames, and frame i's stage and item (borrowed;
 * frame 0 was added first), in constant time.  NULL for NULL f or i out of
 * range; an item may be NULL. */
DEFERRED_EXPORT size_t deferred_failure_context_size(const deferred_failure_t *f);
DEFERRED_EXPORT const char *deferred_failure_context_stage(const deferred_failure_t *f,
                                                           size_t i);
DEFERRED_EXPORT const char *deferred_failure_context_item(const deferred_failure_t *f,
                                                          size_t i);

/*
 * Render the whole story of f into buf, snprintf-style: at most size bytes
 * are written, always NUL-terminated when size > 0, and the return value is
 * the length of the full story (so a larger buffer can be tried).  The
 * story is: "<domain> <NAME>: <message> (at <file>:<line>)" (user, SQLite
 * and PostgreSQL codes read "<domain> error <code>"), then on indented
 * lines each group member ("input <i>: ", rendered the same way, one level
 * deeper) and each cause ("caused by: "), then the context frames of f and
 * of each of its causes from the consumer back to the producer, one per
 * line.  Time and stack are linear in the story's length and constant in
 * the depth of nesting: cause chains (first-errors included) of any length
 * are rendered whole; groups nested inside groups are rendered 32 levels
 * deep, and a member deeper than that is rendered as its first line and a
 * note that its causes, inputs and context are not shown.
 * Returns -EINVAL for NULL f, or for NULL buf with a nonzero size;
 * -EOVERFLOW when the story is longer than INT_MAX bytes (buf then holds
 * its beginning, NUL-terminated).  Allocates nothing.
 */
DEFERRED_EXPORT int deferred_failure_story(const deferred_failure_t *f,
                                           char *buf, size_t size);

/* The story in a new string to free with deferred_free(); NULL when f is
 * NULL, when the story is longer than INT_MAX bytes, or on allocation
 * failure.  One allocation. */
DEFERRED_EXPORT char *deferred_failure_story_alloc(const deferred_failure_t *f);

#ifdef __cplusplus
}
#endif

#endif /* DEFERRED_FAILURE_H */
