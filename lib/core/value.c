/*
 * value.c: the by-value result type and its helpers.
 *
 * The design decision to know: a value's release function doubles as its
 * type tag.  A failure value is released by deferred__release_failure and a
 * deferred value by deferred__release_deferred, so telling the three kinds
 * of value apart is one pointer comparison, and the value stays 16 bytes.
 */
#include <string.h>

#include "deferred-private.h"

void deferred__release_failure(void *ptr)
{
    deferred_failure_unref(ptr);
}

void deferred__release_deferred(void *ptr)
{
    deferred_unref(ptr);
}

void deferred_value_int_release(void *ptr)
{
    (void)ptr;
}

void deferred_value_release(deferred_value_t v)
{
    if (v.release && v.release != deferred_value_int_release)
        v.release(v.ptr);
}

deferred_value_t deferred_value_failure(deferred_failure_t *f)
{
    deferred_value_t v;

    v.ptr = f ? f : &deferred__failure_enomem;
    v.release = deferred__release_failure;
    return v;
}

bool deferred_value_is_failure(deferred_value_t v)
{
    return v.release == deferred__release_failure;
}

deferred_failure_t *deferred_value_get_failure(deferred_value_t v)
{
    return v.release == deferred__release_failure ? v.ptr : NULL;
}

deferred_failure_t *deferred_value_take_failure(deferred_value_t v)
{
    return deferred_value_get_failure(v);
}

deferred_value_t deferred_value_deferred(deferred_t *d)
{
    deferred_value_t v;

    if (!d) {
        /* A constructor's NULL: the failure carries its errno (read
         * first, before anything here can change it). */
        int code = errno;

        if (code == 0 || code == ENOMEM)
            return deferred_value_failure(NULL);
        return deferred_value_failure(deferred_failure_new(
            DEFERRED_DOMAIN_LIBRARY, code, "a constructor failed: %s",
            deferred_strerror(code)));
    }
    v.ptr = d;
    v.release = deferred__release_deferred;
    return v;
}

bool deferred_value_is_deferred(deferred_value_t v)
{
    return v.release == deferred__release_deferred;
}

deferred_value_t deferred_value_strdup(const char *s)
{
    char *copy;

    if (!s)
        return deferred_value_failure(deferred_failure_new(
            DEFERRED_DOMAIN_LIBRARY, EINVAL, "deferred_value_strdup: NULL string"));
    copy = deferred__strdup(s);
    if (!copy)
        return deferred_value_failure(NULL);
    return deferred_value_make(copy, deferred_free);
}

struct deferred_array {
    size_t n;
    size_t cap;
    deferred_value_t *items;
    struct deferred_array *next; /* on the thread's list of arrays to free */
};

#if defined(__GNUC__)
#define THREAD_LOCAL __thread __attribute__((tls_model("initial-exec")))
#else
#define THREAD_LOCAL _Thread_local
#endif

/* Arrays whose release came while another array was being freed: freed
 * by that loop, so an array of an array of ... (a gather of gathers) is
 * freed in constant stack. */
static THREAD_LOCAL struct deferred_array *free_arrays;
static THREAD_LOCAL bool freeing_arrays;

deferred_array_t *deferred_array_new(size_t capacity)
{
    deferred_array_t *a = deferred__malloc(sizeof(*a));

    if (!a)
        return NULL;
    a->n = 0;
    a->cap = capacity;
    a->items = NULL;
    a->next = NULL;
    if (capacity > SIZE_MAX / sizeof(*a->items))
        goto out_free_array;
    if (capacity) {
        a->items = deferred__malloc(capacity * sizeof(*a->items));
        if (!a->items)
            goto out_free_array;
    }
    return a;

out_free_array:
    deferred__free(a);
    errno = ENOMEM; /* also for a capacity no array can have */
    return NULL;
}

void deferred_array_free(deferred_array_t *a)
{
    size_t i;

    if (!a)
        return;
    if (freeing_arrays) {
        a->next = free_arrays;
        free_arrays = a;
        return;
    }
    freeing_arrays = true;
    for (; a; a = free_arrays) {
        free_arrays = a->next;
        for (i = 0; i < a->n; i++)
            deferred_value_release(a->items[i]);
        deferred__free(a->items);
        deferred__free(a);
    }
    freeing_arrays = false;
}

static void array_release(void *ptr)
{
    deferred_array_free(ptr);
}

deferred_value_t *deferred__array_fill(deferred_array_t *a, size_t n)
{
    size_t i;

    if (a->n != 0 || n > a->cap)
        return NULL;
    for (i = 0; i < n; i++)
        a->items[i] = deferred_value_none();
    a->n = n;
    return a->items;
}

int deferred_array_append(deferred_array_t *a, deferred_value_t v)
{
    if (!a) {
        deferred_value_release(v);
        return -EINVAL;
    }
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 8;
        deferred_value_t *items;

        if (cap > SIZE_MAX / sizeof(*items) ||
            !(items = deferred__realloc(a->items, cap * sizeof(*items)))) {
            deferred_value_release(v);
            return -ENOMEM;
        }
        a->items = items;
        a->cap = cap;
    }
    a->items[a->n++] = v;
    return 0;
}

size_t deferred_array_size(const deferred_array_t *a)
{
    return a ? a->n : 0;
}

deferred_value_t deferred_array_get(const deferred_array_t *a, size_t i)
{
    return a && i < a->n ? a->items[i] : deferred_value_none();
}

deferred_value_t deferred_array_take(deferred_array_t *a, size_t i)
{
    deferred_value_t v = deferred_array_get(a, i);

    if (a && i < a->n)
        a->items[i] = deferred_value_none();
    return v;
}

deferred_value_t deferred_value_array(deferred_array_t *a)
{
    if (!a)
        return deferred_value_failure(NULL);
    return deferred_value_make(a, array_release);
}

deferred_array_t *deferred_value_get_array(deferred_value_t v)
{
    return v.release == array_release ? v.ptr : NULL;
}
