// t/header-multi.cc: <deferred/multi.h> compiles alone as C++.
#include "header-multi.c"
