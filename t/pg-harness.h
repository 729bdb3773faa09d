/*
 * pg-harness.h: a throwaway PostgreSQL server for the tests and the
 * benchmark.
 *
 * pgh_start() finds the server binaries in /usr/lib/postgresql/<N>/bin
 * (the newest; or in $PG_BINDIR), makes a temporary directory under /tmp,
 * runs initdb into it and starts postgres listening only on a Unix socket
 * in that directory (listen_addresses=''), as an unprivileged user: when
 * run as root, through "runuser -u postgres" (or "nobody" when there is
 * no postgres user), with the directory given to that user.  It never
 * touches a system cluster.  pgh_stop() stops the server and removes the
 * directory.
 */
#ifndef PG_HARNESS_H
#define PG_HARNESS_H

#include <stdbool.h>

struct pgh {
    char bindir[256];
    char dir[128];       /* the temporary directory: data/, the socket, log */
    char conninfo[512];  /* for PQconnectStart() */
    char user[32];       /* who runs the server ("" when not root) */
    bool running;
};

/* 0 when the server runs; 77 when the binaries are absent (a message
 * says so); -1 on any other error (a message and the server's log are
 * printed). */
int pgh_start(struct pgh *h);

/* Stop the server (fast: connections are terminated).  remove: also delete
 * the directory.  Returns 0 or -1. */
int pgh_stop(struct pgh *h, bool remove);

/* Stop it at once (immediate mode), as a crash would, keeping the
 * directory; for the tests of a server that dies mid-query. */
int pgh_kill(struct pgh *h);

#endif /* PG_HARNESS_H */
