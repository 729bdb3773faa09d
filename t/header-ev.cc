// t/header-ev.cc: <deferred/ev.h> compiles alone as C++.
#include "header-ev.c"
