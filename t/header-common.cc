// t/header-common.cc: <deferred/common.h> compiles alone as C++.
#include "header-common.c"
