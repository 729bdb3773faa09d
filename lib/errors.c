/*
 * errors.c: the one table of the codes the library produces.
 *
 * Names and messages both come from DEFERRED_CODE_MAP, so a code can never
 * have a name without a message (libuv's uv_strerror/uv_err_name do the
 * same with UV_ERRNO_MAP).  Codes are looked up by absolute value, so an
 * action's negative return and a failure's positive code give one answer.
 */
#include "deferred-private.h"

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
    X(DEFERRED_EFIRSTERROR, "an input failed")                                 \
    X(DEFERRED_EGROUP, "every input failed")

const char *deferred_strerror(int code)
{
    if (code < 0)
        code = -code;
    switch (code) {
#define X(name, msg) \
    case name:       \
        return msg;
        DEFERRED_CODE_MAP(X)
#undef X
    default:
        return "unknown error";
    }
}

const char *deferred_err_name(int code)
{
    if (code < 0)
        code = -code;
    switch (code) {
#define X(name, msg) \
    case name:       \
        return #name;
        DEFERRED_CODE_MAP(X)
#undef X
    default:
        return "EUNKNOWN";
    }
}
