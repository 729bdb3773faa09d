// t/header-loop.cc: <deferred/loop.h> compiles alone as C++.
#include "header-loop.c"
