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
 * blocks of each size per thread at hand, which the inline paths of
 * core-private.h pop and push; when that list is full, the slow path moves
 * it whole to the thread's reserve (a list of such bundles, up to
 * reserve_limit bytes), and when it is empty takes one back, so that a
 * burst of blocks freed together (a gather of 100,000 inputs) serves the
 * next burst without malloc, whose own free lists such a burst leaves to be
 * consolidated and split again at several times the cost.  The reserve
 * decays: every RESERVE_EPOCH bundle moves, half of what it held all
 * through the epoch is freed.  And it holds no more than the thread drew
 * past its list (from the reserve or from malloc) in the epoch or the
 * last, plus RESERVE_SLACK bundles: a thread that frees what others made
 * keeps little.  When a thread exits, its bundles go to the depot, shared
 * by all threads, from which a thread with an empty cache takes a bundle
 * before it calls malloc (see "the depot" below), and the rest of its
 * cache is freed (the main thread's, and the depot, when the program
 * exits).  The cache is not used at all
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
#include <stddef.h>
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

/* Give back a list of blocks of class c linked through their link words
 * (to libc: the cache is only filled with the default allocator). */
static void free_list(void *p, unsigned c)
{
    while (p) {
        /* The link word is not poisoned. */
        void *next = *(void **)((char *)p + deferred__class_link[c]);

#ifdef DEFERRED__BLOCK_ASAN
        ASAN_UNPOISON_MEMORY_REGION(p, deferred__class_size[c]);
#endif
        free(p);
        p = next;
    }
}

/* ---- the reserve: bundles of blocks behind the cache ------------------- */

/* The most bytes each thread's reserve holds (deferred_set_block_cache_limit()). */
#ifndef DEFERRED_RESERVE_LIMIT
#define DEFERRED_RESERVE_LIMIT ((size_t)256 << 20)
#endif
static size_t reserve_limit = DEFERRED_RESERVE_LIMIT;

/* Bundle moves (in or out of a reserve) between two decays. */
#define RESERVE_EPOCH 65536

/* The bundles of a class a reserve may hold past the thread's own demand
 * (so that a thread that frees more than it makes, such as one that
 * drops what another thread made, keeps little). */
#define RESERVE_SLACK 16

/* The word after a block's link word: a bundle's first block links the
 * next bundle there.  Every class's block has room for both words. */
static void **bundle_link(void *p, unsigned c)
{
    /* Checked by the compiler: each class has room for both words. */
    typedef char room[(offsetof(deferred_t, next) + 2 * sizeof(void *) <= sizeof(deferred_t) &&
                       KINDS_PAD(SPILL1_LINKS) + offsetof(struct deferred__link, arg) +
                               2 * sizeof(void *) <= SPILL_SIZE(SPILL1_LINKS) &&
                       KINDS_PAD(SPILL2_LINKS) + offsetof(struct deferred__link, arg) +
                               2 * sizeof(void *) <= SPILL_SIZE(SPILL2_LINKS))
                          ? 1 : -1];

    (void)sizeof(room);
    return (void **)((char *)p + deferred__class_link[c] + sizeof(void *));
}

static size_t bundle_bytes(unsigned c)
{
    return (size_t)BLOCK_CACHE_MAX * deferred__class_size[c];
}

/* The bytes of all the reserve's bundles, of every class. */
static size_t reserve_bytes(const struct deferred__block_cache *bc)
{
    size_t bytes = 0;
    unsigned c;

    for (c = 0; c < DEFERRED__BLOCK_CLASSES; c++)
        bytes += bc->nbundles[c] * bundle_bytes(c);
    return bytes;
}

/* The cache's full list of class c becomes a bundle of the reserve, and
 * the list starts empty. */
static void bundle_put(struct deferred__block_cache *bc, unsigned c)
{
    void *h = bc->head[c];
    void **w = bundle_link(h, c);

#ifdef DEFERRED__BLOCK_ASAN
    ASAN_UNPOISON_MEMORY_REGION(w, sizeof(void *));
#endif
    *w = bc->bundles[c];
    bc->bundles[c] = h;
    bc->nbundles[c]++;
    bc->head[c] = NULL;
    bc->n[c] = 0;
}

/* The reserve's last bundle of class c, taken off it: its first block. */
static void *bundle_pop(struct deferred__block_cache *bc, unsigned c)
{
    void *h = bc->bundles[c];
    void **w = bundle_link(h, c);

    bc->bundles[c] = *w;
#ifdef DEFERRED__BLOCK_ASAN
    ASAN_POISON_MEMORY_REGION(w, sizeof(void *));
#endif
    bc->nbundles[c]--;
    if (bc->nbundles[c] < bc->low[c])
        bc->low[c] = bc->nbundles[c];
    return h;
}

/* One more bundle move; at the end of an epoch, give back half of the
 * bundles of each class that stayed in the reserve through the whole
 * epoch (the fewest it held): a burst's blocks serve the next burst, and
 * a reserve the thread has stopped drawing on shrinks by halves. */
static void reserve_tick(struct deferred__block_cache *bc)
{
    unsigned c;

    if (++bc->moves < RESERVE_EPOCH)
        return;
    bc->moves = 0;
    for (c = 0; c < DEFERRED__BLOCK_CLASSES; c++) {
        size_t release = bc->low[c] / 2;

        while (release-- > 0)
            free_list(bundle_pop(bc, c), c);
        bc->low[c] = bc->nbundles[c];
        bc->demand_last[c] = bc->demand[c];
        bc->demand[c] = 0;
    }
}

/* Whether the reserve may take one more bundle of class c: within the
 * limit, and within what the thread itself drew of that class this epoch
 * or the last (a burst's blocks serve the thread's next burst; a thread
 * that only frees has no burst to serve) plus RESERVE_SLACK bundles. */
static bool reserve_room(const struct deferred__block_cache *bc, unsigned c)
{
    size_t demand = bc->demand[c] > bc->demand_last[c] ? bc->demand[c] : bc->demand_last[c];

    return reserve_bytes(bc) + bundle_bytes(c) <= __atomic_load_n(&reserve_limit, __ATOMIC_RELAXED) &&
           (bc->nbundles[c] + 1) * BLOCK_CACHE_MAX <= demand + RESERVE_SLACK * BLOCK_CACHE_MAX;
}

/* Free every block of the calling thread's cache and reserve. */
static void cache_flush(struct deferred__block_cache *bc)
{
    unsigned c;

    for (c = 0; c < DEFERRED__BLOCK_CLASSES; c++) {
        free_list(bc->head[c], c);
        bc->head[c] = NULL;
        bc->n[c] = 0;
        while (bc->bundles[c])
            free_list(bundle_pop(bc, c), c);
        bc->low[c] = 0;
        bc->demand[c] = bc->demand_last[c] = 0;
    }
    bc->moves = 0;
}

/* ---- the depot: the bundles exited threads left ------------------------ */

/* A thread that exits leaves its reserve's bundles (and its list, when
 * full) here, up to the reserve's limit in all, rather than to free(); a
 * thread whose list and reserve are empty takes a bundle from here before
 * it calls malloc().  So a program that runs its bursts on threads that
 * come and go (a thread per job) reuses the blocks of the last one: a
 * fresh thread otherwise mallocs every block anew, from memory the
 * allocator gave back to the system when the last thread freed its blocks
 * (a first touch costs a page fault per 4 KiB), and every exit frees them
 * all again (bench/: chain-deep, a million deferreds made and freed on a
 * fresh thread per run).  Counts are written under the lock and read
 * without it as a hint: a thread with nothing here takes no lock. */
static pthread_mutex_t depot_lock = PTHREAD_MUTEX_INITIALIZER;
static void *depot[DEFERRED__BLOCK_CLASSES];
static size_t depot_n[DEFERRED__BLOCK_CLASSES];

static size_t depot_bytes_locked(void)
{
    size_t bytes = 0;
    unsigned c;

    for (c = 0; c < DEFERRED__BLOCK_CLASSES; c++)
        bytes += depot_n[c] * bundle_bytes(c);
    return bytes;
}

/* Move bc's bundles of every class to the depot while it has room (its
 * link words stay as they are: a bundle links the next one in both). */
static void depot_take_from(struct deferred__block_cache *bc)
{
    size_t limit = __atomic_load_n(&reserve_limit, __ATOMIC_RELAXED), bytes;
    unsigned c;

    pthread_mutex_lock(&depot_lock);
    bytes = depot_bytes_locked();
    for (c = 0; c < DEFERRED__BLOCK_CLASSES; c++) {
        if (bc->n[c] == BLOCK_CACHE_MAX && bytes + bundle_bytes(c) <= limit)
            bundle_put(bc, c); /* a full list is a bundle too */
        while (bc->bundles[c] && bytes + bundle_bytes(c) <= limit) {
            void *h = bc->bundles[c];
            void **w = bundle_link(h, c);

            bc->bundles[c] = *w;
            bc->nbundles[c]--;
            *w = depot[c];
            depot[c] = h;
            __atomic_store_n(&depot_n[c], depot_n[c] + 1, __ATOMIC_RELAXED);
            bytes += bundle_bytes(c);
        }
    }
    pthread_mutex_unlock(&depot_lock);
}

/* A bundle of class c from the depot (its first block, the bundle's link
 * poisoned again as bundle_pop() leaves it), or NULL. */
static void *depot_give(unsigned c)
{
    void *h;

    if (!__atomic_load_n(&depot_n[c], __ATOMIC_RELAXED))
        return NULL;
    pthread_mutex_lock(&depot_lock);
    h = depot[c];
    if (h) {
        void **w = bundle_link(h, c);

        depot[c] = *w;
        __atomic_store_n(&depot_n[c], depot_n[c] - 1, __ATOMIC_RELAXED);
#ifdef DEFERRED__BLOCK_ASAN
        ASAN_POISON_MEMORY_REGION(w, sizeof(void *));
#endif
    }
    pthread_mutex_unlock(&depot_lock);
    return h;
}

/* Give every bundle of the depot back to free(). */
static void depot_flush(void)
{
    void *all[DEFERRED__BLOCK_CLASSES];
    unsigned c;

    pthread_mutex_lock(&depot_lock);
    for (c = 0; c < DEFERRED__BLOCK_CLASSES; c++) {
        all[c] = depot[c];
        depot[c] = NULL;
        __atomic_store_n(&depot_n[c], 0, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&depot_lock);
    for (c = 0; c < DEFERRED__BLOCK_CLASSES; c++)
        while (all[c]) {
            void *h = all[c];

            all[c] = *bundle_link(h, c);
            free_list(h, c);
        }
}

/* A fork from another thread's depot call leaves the child a lock no one
 * will release: the lock is held across the fork instead. */
static void depot_fork_prepare(void)
{
    pthread_mutex_lock(&depot_lock);
}

static void depot_fork_done(void)
{
    pthread_mutex_unlock(&depot_lock);
}

static void cache_thread_exit(void *arg)
{
    struct deferred__block_cache *bc = arg;

    depot_take_from(bc);
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
    depot_flush();
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
    (void)pthread_atfork(depot_fork_prepare, depot_fork_done, depot_fork_done);
}

/* The thread's exit must empty its cache: register it on first use.
 * False when that cannot be done (the cache is then not used). */
static bool cache_keyed(struct deferred__block_cache *bc)
{
    if (bc->keyed)
        return true;
    pthread_once(&cache_once, cache_key_make);
    if (!cache_key_ok || pthread_setspecific(cache_key, bc) != 0)
        return false;
    bc->keyed = true;
    return true;
}

/* Bundle h (of class c) becomes the empty list at hand, drawn past it
 * (demand); one of its blocks is returned. */
static void *list_from_bundle(struct deferred__block_cache *bc, unsigned c, void *h)
{
    bc->head[c] = h;
    bc->n[c] = BLOCK_CACHE_MAX;
    bc->demand[c] += BLOCK_CACHE_MAX;
    return deferred__block_pop(c);
}

/* The cache's list of class c is empty: a bundle from the reserve, else
 * one from the depot, else malloc's block. */
void *deferred__block_alloc_slow(unsigned c)
{
    struct deferred__block_cache *bc = &deferred__cache;

    if (deferred__cache_on) {
        void *h;

        if (bc->bundles[c] && !bc->head[c]) {
            void *p = list_from_bundle(bc, c, bundle_pop(bc, c));

            reserve_tick(bc);
            return p;
        }
        if (!bc->head[c] && cache_keyed(bc) && (h = depot_give(c)) != NULL)
            return list_from_bundle(bc, c, h);
        bc->demand[c]++;
    }
    return deferred__malloc(deferred__class_size[c]);
}

/* The cache's list of class c is full (or the thread's cache not set up
 * yet): the full list moves to the reserve when the reserve has room,
 * else p goes to free(). */
void deferred__block_free_slow(void *p, unsigned c)
{
    struct deferred__block_cache *bc = &deferred__cache;

    if (deferred__cache_on) {
        if (!cache_keyed(bc)) {
            deferred__free(p);
            return;
        }
        if (bc->n[c] >= BLOCK_CACHE_MAX) {
            if (!reserve_room(bc, c)) {
                deferred__free(p);
                return;
            }
            bundle_put(bc, c);
            reserve_tick(bc);
        }
        deferred__block_push(p, c);
        return;
    }
    deferred__free(p);
}

size_t deferred_set_block_cache_limit(size_t bytes)
{
    return __atomic_exchange_n(&reserve_limit, bytes, __ATOMIC_RELAXED);
}

void deferred_block_cache_trim(void)
{
    cache_flush(&deferred__cache);
    depot_flush();
}

size_t deferred_block_cache_size(void)
{
    const struct deferred__block_cache *bc = &deferred__cache;
    size_t bytes = reserve_bytes(bc);
    unsigned c;

    for (c = 0; c < DEFERRED__BLOCK_CLASSES; c++)
        bytes += bc->n[c] * deferred__class_size[c];
    return bytes;
}

int deferred_set_allocator(deferred_malloc_fn malloc_fn,
                           deferred_realloc_fn realloc_fn,
                           deferred_free_fn free_fn)
{
    /* The cache's blocks are libc's: give them back before the allocator
     * changes, so a counting allocator set next sees a quiet heap. */
    cache_flush(&deferred__cache);
    depot_flush();
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
