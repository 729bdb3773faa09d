/* t/loop-harness.h */
#include <deferred/loop.h>
typedef struct tl_harness {
    const char *name;
    /* A fresh loop of this kind, with one reference; *state is the harness's. */
    deferred_loop_t *(*make)(void **state);
    /* Run the loop until the library has nothing left on it
     * (deferred_loop_alive(l) == 0, or the loop's own run returned). */
    void (*run)(deferred_loop_t *l, void *state);
    /* One non-blocking iteration. */
    void (*run_nowait)(deferred_loop_t *l, void *state);
    /* Drop the loop's reference and free the underlying loop (run what its
     * library needs to finish closing handles first). */
    void (*destroy)(deferred_loop_t *l, void *state);
} tl_harness_t;
