/*
 * alloc.c: the replaceable allocator and the library's version.
 *
 * Every byte the library allocates goes through the three function
 * pointers kept here, so a program (or a test) can count, pool or fail
 * allocations.  The design decision to know: the pointers are plain
 * globals, read without locks on every allocation; replacing them is only
 * allowed while nothing allocated by the library is alive, which is what
 * makes the unlocked read safe.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>

#include "deferred-private.h"

static deferred_malloc_fn alloc_malloc = malloc;
static deferred_realloc_fn alloc_realloc = realloc;
static deferred_free_fn alloc_free = free;

int deferred_set_allocator(deferred_malloc_fn malloc_fn,
                           deferred_realloc_fn realloc_fn,
                           deferred_free_fn free_fn)
{
    if (!malloc_fn && !realloc_fn && !free_fn) {
        alloc_malloc = malloc;
        alloc_realloc = realloc;
        alloc_free = free;
        return 0;
    }
    if (!malloc_fn || !realloc_fn || !free_fn)
        return -EINVAL;
    alloc_malloc = malloc_fn;
    alloc_realloc = realloc_fn;
    alloc_free = free_fn;
    return 0;
}

/* A failed allocation leaves errno at ENOMEM, whatever the replaceable
 * allocator did with it, so that every constructor returning NULL for
 * want of memory reports ENOMEM (deferred/common.h). */
void *deferred__malloc(size_t size)
{
    void *p = alloc_malloc(size ? size : 1);

    if (!p)
        errno = ENOMEM;
    return p;
}

void *deferred__realloc(void *ptr, size_t size)
{
    void *p = alloc_realloc(ptr, size ? size : 1);

    if (!p)
        errno = ENOMEM;
    return p;
}

void deferred__free(void *ptr)
{
    if (ptr)
        alloc_free(ptr);
}

void *deferred_malloc(size_t size)
{
    return deferred__malloc(size);
}

void deferred_free(void *ptr)
{
    deferred__free(ptr);
}

char *deferred__strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *copy = deferred__malloc(n);

    if (copy)
        memcpy(copy, s, n);
    return copy;
}

char *deferred__vasprintf(const char *fmt, va_list ap)
{
    va_list again;
    int n;
    char *buf;

    va_copy(again, ap);
    n = vsnprintf(NULL, 0, fmt, again);
    va_end(again);
    if (n < 0)
        return NULL;
    buf = deferred__malloc((size_t)n + 1);
    if (buf)
        vsnprintf(buf, (size_t)n + 1, fmt, ap);
    return buf;
}

const char *deferred_version(void)
{
    return DEFERRED_VERSION_STRING;
}

unsigned long deferred_version_number(void)
{
    return DEFERRED_VERSION_NUMBER;
}
