/*
 * deferred/dump.h: what is pending, for "my program hangs: what is it
 * waiting for?".
 *
 * In debug mode (deferred_set_debug(), or DEFERRED_DEBUG in the
 * environment) every deferred made from then on is listed in a registry
 * of the thread that made it, through links in the rare part that debug
 * mode allocates anyway for the creation site: no allocation of its own.
 * deferred_dump() writes what the calling thread's registry holds as a
 * tree of who waits on whom, like pstree: first each holder (a process, a
 * libev loop binding, a database connection, ...) with what it holds,
 * then every other deferred that nothing waits on, each followed, one
 * level deeper, by what it waits on (the deferred its chain is chained
 * to, a combinator's inputs) down to the innermost, with its creation
 * site and state.  A deferred reached twice is written once; the second
 * time the line names the first by its number.  With debug mode off
 * nothing is registered and a dump lists nothing made meanwhile.
 *
 * Two forms, the same tree: DEFERRED_DUMP_TEXT, an indented line per node
 * ("kind name key=value ...", two spaces a level), and DEFERRED_DUMP_JSON,
 * one JSON object per line (RFC 8259, strings escaped, bytes that are not
 * UTF-8 replaced by U+FFFD) with "type", "line" (its number, from 1),
 * "parent" (the line it is under, or null), "depth" and the node's fields.
 * The first line of both is a summary (type "dump").
 *
 * The walk is iterative (its stack is allocated, through the allocator):
 * any depth of waiting needs constant C stack, and a dump's work is linear
 * in the deferreds and holders listed.  Beyond 32 levels the text form
 * stops indenting and writes the depth in brackets instead, so the text
 * stays linear in size too.
 *
 * Threads: each thread has its own registry; a deferred stays in the
 * registry of the thread that made it (it may be freed on another, which
 * takes the registry's lock).  A dump reads the deferreds of the calling
 * thread: call it where they are not in use by another thread.  The lock
 * is held while the dump runs: the sink and the describe functions must
 * not make or free deferreds.
 */
#ifndef DEFERRED_DUMP_H
#define DEFERRED_DUMP_H

#include <stdio.h>

#include "deferred/common.h"
#include "deferred/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum deferred_dump_format {
    DEFERRED_DUMP_TEXT = 0, /* indented lines, for a person */
    DEFERRED_DUMP_JSON = 1  /* one JSON object per line */
} deferred_dump_format_t;

/* A dump under way, handed to describe functions (opaque). */
typedef struct deferred_dump deferred_dump_t;

/* Where a dump's output goes: called with each line (len bytes, ending
 * with a newline, not NUL-terminated; borrowed for the call).  Returns 0
 * to go on, or a negative errno that stops the dump and is returned by
 * it. */
typedef int (*deferred_dump_sink_fn)(const char *text, size_t len, void *arg);

/* A describe function: writes what arg is through the functions below. */
typedef void (*deferred_dump_fn)(deferred_dump_t *dump, void *arg);

/* What a dump wrote and the work it did (steps: one per node written,
 * per edge followed and per registry entry looked at; for a test that the
 * work is linear). */
typedef struct deferred_dump_stats {
    size_t deferreds; /* deferred lines written */
    size_t holders;   /* holders described */
    size_t lines;     /* lines written in all */
    size_t steps;
} deferred_dump_stats_t;

/*
 * Dump the calling thread's registry in format to sink (called with each
 * line, see deferred_dump_sink_fn).  stats, when not NULL, is filled in
 * (also after an error, with what was done).  Returns 0; -EINVAL for a
 * NULL sink or an unknown format (nothing written); -ENOMEM when memory
 * for the walk or a line ran out (the output stops there, at a line's
 * end); or the sink's negative errno.  No callback runs.
 */
DEFERRED_EXPORT int deferred_dump_to(deferred_dump_format_t format, deferred_dump_sink_fn sink,
                                     void *arg, deferred_dump_stats_t *stats);

/*
 * deferred_dump_to() into a FILE (out: NULL means stderr).  Returns 0,
 * -EINVAL, -ENOMEM, or -EIO when a write failed.
 */
DEFERRED_EXPORT int deferred_dump(FILE *out, deferred_dump_format_t format);

/*
 * deferred_dump_to() into a new NUL-terminated string, allocated through
 * the allocator (deferred_set_allocator()): the caller frees it with the
 * allocator's free.  NULL with errno EINVAL (unknown format) or ENOMEM
 * (nothing is left allocated).
 */
DEFERRED_EXPORT char *deferred_dump_string(deferred_dump_format_t format);

/* The number of deferreds in the calling thread's registry (live ones
 * made in debug mode on this thread, and not yet freed). */
DEFERRED_EXPORT size_t deferred_dump_count(void);

/* ---- for describe functions --------------------------------------------- */

/*
 * Start a node (one line) at the current level: kind is what it is
 * ("process", "stage", "timer"), name (may be NULL) which one.  Both are
 * copied.  The node's fields follow with deferred_dump_str() and
 * deferred_dump_int(); the line is written when the next node starts.
 * Inside a note (deferred_dump_note()) it does nothing.
 */
DEFERRED_EXPORT void deferred_dump_node(deferred_dump_t *dump, const char *kind,
                                        const char *name);

/* Add a field to the current node: key (a plain word) with a string value
 * (NULL: the field is left out) or an integer.  Copied. */
DEFERRED_EXPORT void deferred_dump_str(deferred_dump_t *dump, const char *key,
                                       const char *value);
DEFERRED_EXPORT void deferred_dump_int(deferred_dump_t *dump, const char *key,
                                       long long value);

/* Nodes started from now on are under the last node started (one level
 * deeper), until the matching deferred_dump_leave().  Inside a note they do
 * nothing; a leave without an enter does nothing. */
DEFERRED_EXPORT void deferred_dump_enter(deferred_dump_t *dump);
DEFERRED_EXPORT void deferred_dump_leave(deferred_dump_t *dump);

/*
 * Write d under the last node started, one level deeper: a line for d
 * (role, e.g. "waits on", names how it is held; may be NULL), then what d
 * waits on, level by level, to the innermost.  d need not be registered
 * (it is written without a site).  A NULL d does nothing.  Inside a note
 * it makes d a child of the note's deferred (deferred_dump_note()).
 */
DEFERRED_EXPORT void deferred_dump_deferred(deferred_dump_t *dump, const char *role,
                                            deferred_t *d);

/* ---- holders ------------------------------------------------------------- */

/*
 * A holder: something that holds deferreds and has a state of its own (a
 * process, a loop binding, a connection).  Its describe function is
 * called by each dump of the thread that added it, before the deferreds
 * nothing waits on: it starts a node for itself and writes what it holds.
 * The structure is the holder's (embed it): no allocation.  The fields
 * ending in _ are the registry's.
 */
typedef struct deferred_dump_holder {
    deferred_dump_fn describe;
    void *arg;
    struct deferred_dump_holder *prev_, *next_;
    void *registry_;
} deferred_dump_holder_t;

/*
 * Add h to the calling thread's registry, with describe(dump, arg).  In
 * debug mode only: with debug mode off, or when the thread's registry
 * cannot be allocated, h is left out (and deferred_dump_holder_remove()
 * does nothing).  Returns 0, or -EINVAL for a NULL h or describe.  h must
 * stay where it is until removed.
 */
DEFERRED_EXPORT int deferred_dump_holder_add(deferred_dump_holder_t *h, deferred_dump_fn describe,
                                             void *arg);

/* Take h out of its registry (any thread may); nothing when it was left
 * out or already removed (h may be zeroed and never added). */
DEFERRED_EXPORT void deferred_dump_holder_remove(deferred_dump_holder_t *h);

/*
 * Give d a note: describe(dump, arg) is called when a dump writes d's
 * line, to add fields to it (which combinator or coroutine it is) with
 * deferred_dump_str() and deferred_dump_int(), and to name what d waits on
 * besides its chain and its inputs (what a coroutine awaits) with
 * deferred_dump_deferred(), which there makes it a child of d (written
 * after d's line, one level deeper).  It may be called more than once a
 * dump, and must do nothing else.  describe NULL
 * removes the note.  arg is borrowed: it must stay valid while d lives or
 * until the note is removed.  Kept in d's rare part, which debug mode
 * always makes: returns 0 (also for a d made without one: nothing is
 * kept), -EINVAL for a NULL d.
 */
DEFERRED_EXPORT int deferred_dump_note(deferred_t *d, deferred_dump_fn describe, void *arg);

#ifdef __cplusplus
}
#endif

#endif /* DEFERRED_DUMP_H */
