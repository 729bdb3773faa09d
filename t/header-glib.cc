// t/header-glib.cc: <deferred/glib.h> compiles alone as C++.
#include "header-glib.c"
