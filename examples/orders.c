/* orders.c: the flagship orders report on SQLite (being written). */
#include <stdio.h>
int main(void)
{
    printf("orders: not written yet\n");
    return 0;
}
