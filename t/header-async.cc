// t/header-async.cc: <deferred/async.h> and its macros compile alone as C++.
#include "header-async.c"
