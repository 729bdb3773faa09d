// t/header-combinators.cc: <deferred/combinators.h> compiles alone as C++.
#include "header-combinators.c"
