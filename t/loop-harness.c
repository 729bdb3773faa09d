/*
 * t/loop-harness.c: the list of harnesses built into a test program
 * (t/loop-harness.h); each TL_HAVE_* comes from Makefile.am.
 */
#include "loop-harness.h"

const tl_harness_t *const tl_harnesses[] = {
#ifdef TL_HAVE_EV
    &tl_harness_ev,
#endif
#ifdef TL_HAVE_UV
    &tl_harness_uv,
#endif
#ifdef TL_HAVE_GLIB
    &tl_harness_glib,
#endif
#ifdef TL_HAVE_CLOCK
    &tl_harness_clock,
#endif
    NULL
};

const size_t tl_n_harnesses = sizeof tl_harnesses / sizeof tl_harnesses[0] - 1;
