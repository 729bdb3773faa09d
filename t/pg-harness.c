/* pg-harness.c: a throwaway PostgreSQL server for tests (being written). */
#include "pg-harness.h"
int pgh_placeholder(void)
{
    return 0;
}
