// t/header-dump.cc: <deferred/dump.h> compiles alone as C++.
#include "header-dump.c"
