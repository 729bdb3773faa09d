/* pg-harness.h: a throwaway PostgreSQL server for tests (being written). */
#ifndef PG_HARNESS_H
#define PG_HARNESS_H
int pgh_placeholder(void);
#endif
