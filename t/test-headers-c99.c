/*
 * t/test-headers-c99.c: the public headers compile as C99 with -pedantic
 * -Werror (libevdev's test-compile-pedantic).  See t/headers-main.h.
 */
#include "headers-main.h"

int main(void)
{
    return headers_main("C99");
}
