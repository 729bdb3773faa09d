/*
 * pg-io.c: the connection's socket.  Owns the loop's fd watcher, which only
 * pg_update_io() starts and stops, deriving what it waits for from the
 * connection's state; the socket's callback (flush, read, a lost
 * connection); and shutting the connection (closed or lost), which fails
 * every query still queued.
 */
#include <stdio.h>
#include <string.h>

#include "pg-private.h"

/* After a lost connection, how many results libpq may hand over at most
 * while the last thing the server said is looked for (a bound against a
 * libpq that would never say it is out of results). */
#define PG_LOST_RESULTS_MAX 100000

/* What the watcher waits for: while connecting, what PQconnectPoll()
 * asked for; open, reading while a sync's result is due or the head is
 * draining or is started and not paused, writing while queries are on the
 * wire and libpq has output to flush; closed, nothing.  Not reading is
 * the backpressure: libpq stops pulling from the socket, the kernel
 * buffers fill, the server blocks in its send.  In a pipeline the queries
 * behind a paused head wait with it. */
static int pg_io_wanted(const deferred_pg_t *c)
{
    const struct pgq *q = c->head;
    int events = 0;

    if (!c->conn)
        return 0;
    if (c->connecting)
        return c->connecting->events;
    if (c->sync_due ||
        (q && (q->state == PGQ_DRAINING ||
               (q->state == PGQ_SENT && q->demand == PGQ_RUNNING && q->self))))
        events |= DEFERRED_LOOP_READ;
    if (c->nsent && PQisnonblocking(c->conn) && PQflush(c->conn) == 1)
        events |= DEFERRED_LOOP_WRITE;
    return events;
}

/* The socket's watcher: connecting or running queries. */
static void pg_io_ready(void *arg, int revents)
{
    deferred_pg_t *c = arg;

    if (c->connecting)
        pg_connect_cb(c, revents);
    else
        pg_io_cb(c, revents);
}

/* The one place the watcher starts and stops: after every change of the
 * connection's state. */
void pg_update_io(deferred_pg_t *c)
{
    int events = pg_io_wanted(c), fd = c->conn ? PQsocket(c->conn) : -1;

    /* Each step of connecting re-arms, the same fd and events or not:
     * libpq may have closed its socket and opened the next one (another
     * host or address) under the same number, which a loop (libev, epoll) cannot see. */
    if (events == c->io_events && fd == c->io_fd && !c->connecting)
        return;
    deferred_loop_io_set(c->io, 0);
    if (c->io && (fd != c->io_fd || fd < 0)) {
        deferred_loop_io_free(c->io);
        c->io = NULL;
    }
    c->io_events = events;
    c->io_fd = fd;
    if (events && fd >= 0) {
        if (!c->io)
            c->io = deferred_loop_io_new(c->loop, fd, pg_io_ready, c);
        if (!c->io) {
            /* Without a watcher nothing would ever move: the connection
             * is given up (pg_shut() comes back here with no socket). */
            int e = errno;
            char msg[160];

            snprintf(msg, sizeof msg, "cannot watch the connection's socket: %s",
                     strerror(e));
            c->io_events = 0;
            pg_shut(c, e, msg);
            return;
        }
        deferred_loop_io_set(c->io, events);
    } else {
        c->io_events = 0;
    }
}

/* Close c's PGconn: the watcher stops before PQfinish() closes the
 * socket under it. */
void pg_finish(deferred_pg_t *c)
{
    PGconn *conn = c->conn;

    c->conn = NULL;
    pg_update_io(c);
    if (conn)
        PQfinish(conn);
}

/* The connection is gone (closed or lost): every query fails with code
 * and msg; one that has a failure already keeps it. */
void pg_shut(deferred_pg_t *c, int code, const char *msg)
{
    pg_finish(c);
    c->sync_due = 0;
    c->abort_by[0] = '\0';
    while (c->head) {
        struct pgq *q = c->head;

        pgq_enter(q);
        pgq_fail(q, pgq_failure(q, code, "%s", msg));
        pgq_dequeue(q);
        if (q->state == PGQ_HELD && q->self && q->demand != PGQ_UNSTARTED)
            pg_kick(q); /* a drained one cancel all failed: told now */
        pgq_leave(q);
    }
}

void pg_lost(deferred_pg_t *c)
{
    char msg[512], text[800];

    pg_trimmed(c->conn ? PQerrorMessage(c->conn) : NULL, msg, sizeof(msg));
    snprintf(text, sizeof(text), "connection to %s lost: %s", c->where, msg);
    pg_shut(c, ECONNRESET, text);
}

void pg_io_cb(deferred_pg_t *c, int revents)
{
    pg_enter(c);
    if ((revents & DEFERRED_LOOP_WRITE) && c->conn && PQflush(c->conn) < 0) {
        pg_lost(c);
        goto out;
    }
    if ((revents & DEFERRED_LOOP_READ) && c->conn && !PQconsumeInput(c->conn)) {
        /* The head fails with what the server said last, when it said why
         * it closed (a shutdown's 57P01, parsed from what libpq read before
         * the end), else with libpq's message; pg_lost() fails the rest. */
        struct pgq *q = c->head;

        if (q && q->state == PGQ_SENT && !q->failure) {
            PGresult *res, *said = NULL;
            int n;

            for (n = 0; n < PG_LOST_RESULTS_MAX && (res = PQgetResult(c->conn)) != NULL;
                 n++) {
                if (PQresultErrorField(res, PG_DIAG_SQLSTATE)) {
                    PQclear(said);
                    said = res;
                } else {
                    PQclear(res);
                }
            }
            q->failure = pg_result_failure(q, said);
            PQclear(said);
        }
        pg_lost(c);
        goto out;
    }
    pg_process(c);
out:
    pg_leave(c);
}
