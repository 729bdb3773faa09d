// t/header-core.cc: <deferred/core.h> compiles alone as C++.
#include "header-core.c"
