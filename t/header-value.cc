// t/header-value.cc: <deferred/value.h> compiles alone as C++.
#include "header-value.c"
