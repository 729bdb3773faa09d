/* test-pg.c: PostgreSQL producers (D03-D05), being written: skips. */
#include <stdio.h>
int main(void)
{
    printf("test-pg: SKIP: not written yet\n");
    return 77;
}
