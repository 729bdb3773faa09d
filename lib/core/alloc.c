/*
 * alloc.c: the replaceable allocator and the library's version.
 *
 * Every byte the library allocates goes through the three function
 * pointers kept here, so a program (or a test) can count, pool or fail
 * allocations.  The design decision to know: the pointers are plain
 * globals, read without locks on every allocation; replacing them is only
 * allowed while nothing allocated by the library is alive, which is what
 * makes the unlocked read safe.
 *
 * The second decision: with the default allocator, the blocks of the few
 * sizes every deferred uses (the deferred itself, the first heap blocks of
 * a longer chain) are kept on a small per-thread cache when freed and
 * handed out again, which costs a few instructions where malloc and free
 * cost about a hundred (bench/).  The cache holds at most BLOCK_CACHE_MAX
 * blocks of each size per thread, is emptied when the thread exits (and
 * for the main thread when the program exits), and is not used at all
 * with a replaced allocator, so that a program counting or failing
 * allocations sees every one.  A cached block is poisoned for
 * AddressSanitizer, as freed memory would be, except the one word that
 * links it in the cache.  Under valgrind the cache is off, so that every
 * block is malloc's and valgrind sees each use after free, unless
 * DEFERRED_BLOCK_CACHE is set in the environment (bench/icount.sh counts
 * instructions with it); DEFERRED_NO_BLOCK_CACHE turns it off anywhere.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>

#include <pthread.h>

#include "deferred-private.h"
#include "core-private.h"

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define BLOCK_VALGRIND 1
#endif
#endif

static deferred_malloc_fn alloc_malloc = malloc;
static deferred_realloc_fn alloc_realloc = realloc;
static deferred_free_fn alloc_free = free;
/* ---- the per-thread block cache (see the file comment) ---------------- */

/* The cache is used: the default allocator, and not under valgrind. */
bool deferred__cache_on = true;
static bool cache_disabled; /* under valgrind, or by the environment */
/* Each thread's cache; its blocks' sizes and link words are
 * deferred__class_size and deferred__class_link (core-private.h). */
THREAD_LOCAL struct deferred__block_cache deferred__cache;

static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static bool cache_key_ok;

/* Free every block of the calling thread's cache (to libc: the cache is
 * only filled with the default allocator). */
static void cache_flush(struct deferred__block_cache *bc)
{
    unsigned c;

    for (c = 0; c < DEFERRED__BLOCK_CLASSES; c++) {
        void *p;

        while ((p = bc->head[c])) {
            /* The link word is not poisoned. */
            bc->head[c] = *(void **)((char *)p + deferred__class_link[c]);
#ifdef DEFERRED__BLOCK_ASAN
            ASAN_UNPOISON_MEMORY_REGION(p, deferred__class_size[c]);
#endif
            free(p);
        }
        bc->n[c] = 0;
    }
}

static void cache_thread_exit(void *arg)
{
    struct deferred__block_cache *bc = arg;

    cache_flush(bc);
    /* A block freed later in the thread's exit registers again (glibc
     * runs the destructors again for that). */
    bc->keyed = false;
}

static void cache_key_make(void)
{
    cache_key_ok = pthread_key_create(&cache_key, cache_thread_exit) == 0;
}

/* The main thread's cache, at exit (pthread keys' destructors do not run
 * for it). */
__attribute__((destructor)) static void cache_program_exit(void)
{
    cache_flush(&deferred__cache);
}

__attribute__((constructor)) static void cache_program_start(void)
{
#ifdef BLOCK_VALGRIND
    if (RUNNING_ON_VALGRIND && !getenv("DEFERRED_BLOCK_CACHE"))
        cache_disabled = true;
#endif
    if (getenv("DEFERRED_NO_BLOCK_CACHE"))
        cache_disabled = true;
    deferred__cache_on = !cache_disabled;
}

void *deferred__block_alloc_slow(unsigned c)
{
    return deferred__malloc(deferred__class_size[c]);
}

void deferred__block_free_slow(void *p, unsigned c)
{
    struct deferred__block_cache *bc = &deferred__cache;

    if (deferred__cache_on && bc->n[c] < BLOCK_CACHE_MAX && !bc->keyed) {
        /* First use on this thread: its exit must empty the cache. */
        pthread_once(&cache_once, cache_key_make);
        if (cache_key_ok && pthread_setspecific(cache_key, bc) == 0) {
            bc->keyed = true;
            deferred__block_free(p, c);
            return;
        }
    }
    deferred__free(p);
}

int deferred_set_allocator(deferred_malloc_fn malloc_fn,
                           deferred_realloc_fn realloc_fn,
                           deferred_free_fn free_fn)
{
    /* The cache's blocks are libc's: give them back before the allocator
     * changes, so a counting allocator set next sees a quiet heap. */
    cache_flush(&deferred__cache);
    if (!malloc_fn && !realloc_fn && !free_fn) {
        deferred__cache_on = !cache_disabled;
        alloc_malloc = malloc;
        alloc_realloc = realloc;
        alloc_free = free;
        return 0;
    }
    if (!malloc_fn || !realloc_fn || !free_fn)
        return -EINVAL;
    deferred__cache_on = false;
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
