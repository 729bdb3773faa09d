// t/header-process.cc: <deferred/process.h> compiles alone as C++.
#include "header-process.c"
