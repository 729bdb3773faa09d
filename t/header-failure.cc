// t/header-failure.cc: <deferred/failure.h> compiles alone as C++.
#include "header-failure.c"
