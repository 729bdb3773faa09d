/*
 * errors.c: the one table of the codes the library produces.
 *
 * Names and messages both come from DEFERRED_CODE_MAP, so a code can never
 * have a name without a message (libuv's uv_strerror/uv_err_name do the
 * same with UV_ERRNO_MAP).  Codes are looked up by absolute value, so an
 * action's negative return and a failure's positive code give one answer.
 *
 * Every E-code that appears in lib/ must be in the map: t/test-failure.c
 * scans the sources and fails when one is missing.  A code outside the
 * map falls back to the system's name and description (glibc's
 * strerrorname_np() and strerrordesc_np(), which return static strings),
 * else to "E<number>" and strerror_r() in a per-thread buffer, so a valid
 * errno (1 to ERRNO_MAX) is never rendered as "EUNKNOWN".
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* strerrorname_np, strerrordesc_np (glibc >= 2.32) */
#endif

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "deferred-private.h"

#if defined(__GLIBC__) && defined(__GLIBC_MINOR__) && \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
#define HAVE_STRERRORNAME_NP 1
#endif

#if defined(__GNUC__)
#define THREAD_LOCAL __thread
#else
#define THREAD_LOCAL _Thread_local
#endif

/* The messages are the library's own words (lowercase, unlike the C
 * library's), which is also how the test tells them from the fallback. */
#define DEFERRED_CODE_MAP(X)                                                   \
    X(ECANCELED, "operation cancelled")                                        \
    X(ETIMEDOUT, "operation timed out")                                        \
    X(EALREADY, "deferred already fired")                                      \
    X(ENOMEM, "out of memory")                                                 \
    X(EINVAL, "invalid argument")                                              \
    X(EDEADLK, "a callback returned its own deferred")                         \
    X(EAGAIN, "resource temporarily unavailable")                              \
    X(EBUSY, "resource busy")                                                  \
    X(EPIPE, "the other end is gone")                                          \
    X(ECONNREFUSED, "connection refused")                                      \
    X(ECONNRESET, "connection lost")                                           \
    X(EIO, "input/output error")                                               \
    X(ENOENT, "no such entry")                                                 \
    X(EOVERFLOW, "too many items")                                             \
    X(ENOSPC, "no space left")                                                 \
    X(EPERM, "operation not permitted")                                        \
    X(EMSGSIZE, "message too long")                                            \
    X(ESHUTDOWN, "already shut down")                                          \
    X(ENOTCONN, "not connected")                                               \
    X(EBADF, "not an open file descriptor")                                    \
    X(EPROTO, "protocol error")                                                \
    X(ENOTSUP, "not supported")                                                \
    X(EINTR, "interrupted")                                                    \
    X(DEFERRED_EFIRSTERROR, "an input failed")                                 \
    X(DEFERRED_EGROUP, "every input failed")
/* EWOULDBLOCK, which lib/ev/ev-lines.c tests for, is EAGAIN on every system
 * the library supports; where it is not, it gets its own entry. */
#if defined(EWOULDBLOCK) && EWOULDBLOCK != EAGAIN
#define DEFERRED_CODE_MAP_EXTRA(X) X(EWOULDBLOCK, "operation would block")
#else
#define DEFERRED_CODE_MAP_EXTRA(X)
#endif

/* The largest errno value a system uses (Linux reserves 1 to 4095 for
 * them): codes above it outside the table are nobody's errno. */
#define ERRNO_MAX 4095

/* |code|, or 0 for a code without a positive counterpart (INT_MIN) and
 * for 0 itself: neither is an error code. */
static int code_abs(int code)
{
    if (code == INT_MIN)
        return 0;
    return code < 0 ? -code : code;
}

static const char *table_message(int code)
{
    switch (code) {
#define X(name, msg) \
    case name:       \
        return msg;
        DEFERRED_CODE_MAP(X)
        DEFERRED_CODE_MAP_EXTRA(X)
#undef X
    default:
        return NULL;
    }
}

static const char *table_name(int code)
{
    switch (code) {
#define X(name, msg) \
    case name:       \
        return #name;
        DEFERRED_CODE_MAP(X)
        DEFERRED_CODE_MAP_EXTRA(X)
#undef X
    default:
        return NULL;
    }
}

const char *deferred_strerror(int code)
{
    const char *s;
    int c = code_abs(code);

    if (c == 0)
        return "unknown error";
    s = table_message(c);
    if (s)
        return s;
    if (c > ERRNO_MAX)
        return "unknown error";
#ifdef HAVE_STRERRORNAME_NP
    s = strerrordesc_np(c);
    return s ? s : "unknown error";
#else
    {
        static THREAD_LOCAL char buf[128];

#if defined(__GLIBC__)
        /* glibc before 2.32, where _GNU_SOURCE gives the GNU strerror_r */
        s = strerror_r(c, buf, sizeof(buf));
        return s ? s : "unknown error";
#else
        if (strerror_r(c, buf, sizeof(buf)) != 0 || !buf[0])
            return "unknown error";
        return buf;
#endif
    }
#endif
}

const char *deferred_err_name(int code)
{
    static THREAD_LOCAL char buf[8]; /* "E" and at most 4 digits */
    const char *s;
    int c = code_abs(code);

    if (c == 0)
        return "EUNKNOWN";
    s = table_name(c);
    if (s)
        return s;
    if (c > ERRNO_MAX)
        return "EUNKNOWN";
#ifdef HAVE_STRERRORNAME_NP
    s = strerrorname_np(c);
    if (s)
        return s;
#endif
    snprintf(buf, sizeof(buf), "E%d", c);
    return buf;
}
