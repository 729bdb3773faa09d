// t/header-uv.cc: <deferred/uv.h> compiles alone as C++.
#include "header-uv.c"
