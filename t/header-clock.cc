// t/header-clock.cc: <deferred/clock.h> compiles alone as C++.
#include "header-clock.c"
