// t/header-row.cc: <deferred/row.h> compiles alone as C++.
#include "header-row.c"
