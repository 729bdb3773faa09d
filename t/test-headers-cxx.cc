// t/test-headers-cxx.cc: the public headers compile as C++11 with
// -pedantic -Werror, and their functions link from C++ (extern "C").
// See t/headers-main.h.
#include "headers-main.h"

int main()
{
    return headers_main("C++");
}
