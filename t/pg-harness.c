/*
 * pg-harness.c: a throwaway PostgreSQL server (see pg-harness.h).
 *
 * The commands run through /bin/sh; every path is made by this file, so
 * none needs quoting beyond single quotes.
 */
#include <dirent.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pg-harness.h"

/* The newest /usr/lib/postgresql/<N>/bin holding initdb, pg_ctl, postgres. */
static bool find_bindir(char *buf, size_t size)
{
    const char *env = getenv("PG_BINDIR");
    DIR *d;
    struct dirent *e;
    int best = -1;

    if (env && *env) {
        snprintf(buf, size, "%s", env);
        return true;
    }
    d = opendir("/usr/lib/postgresql");
    if (!d)
        return false;
    while ((e = readdir(d))) {
        char path[512];
        int v = atoi(e->d_name);

        if (v <= best)
            continue;
        snprintf(path, sizeof(path), "/usr/lib/postgresql/%s/bin/initdb", e->d_name);
        if (access(path, X_OK) != 0)
            continue;
        snprintf(path, sizeof(path), "/usr/lib/postgresql/%s/bin/postgres", e->d_name);
        if (access(path, X_OK) != 0)
            continue;
        best = v;
        /* The version directory's name is a number: short, never cut. */
        if ((size_t)snprintf(buf, size, "/usr/lib/postgresql/%.32s/bin", e->d_name) >= size)
            best = -1;
    }
    closedir(d);
    return best >= 0;
}

/* Run a command as the server's user; 0 when it succeeded. */
static int run_as(const struct pgh *h, const char *cmd)
{
    char line[2048];

    if (h->user[0])
        snprintf(line, sizeof(line), "runuser -u %s -- sh -c \"%s\"", h->user, cmd);
    else
        snprintf(line, sizeof(line), "sh -c \"%s\"", cmd);
    return system(line) == 0 ? 0 : -1;
}

static void show_log(const struct pgh *h)
{
    char cmd[300];

    snprintf(cmd, sizeof(cmd), "cat '%s/log' >&2 2>/dev/null", h->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "pg-harness: no server log\n");
}

int pgh_start(struct pgh *h)
{
    char cmd[1024];

    memset(h, 0, sizeof(*h));
    if (!find_bindir(h->bindir, sizeof(h->bindir))) {
        fprintf(stderr, "pg-harness: SKIP: no PostgreSQL server binaries (initdb, postgres) "
                        "in /usr/lib/postgresql/*/bin (Debian: apt-get install postgresql-15)\n");
        return 77;
    }
    if (geteuid() == 0) {
        struct passwd *pw = getpwnam("postgres");

        snprintf(h->user, sizeof(h->user), "%s", pw ? "postgres" : "nobody");
        pw = getpwnam(h->user);
        if (!pw) {
            fprintf(stderr, "pg-harness: running as root and no unprivileged user to run "
                            "the server as\n");
            return -1;
        }
    }
    snprintf(h->dir, sizeof(h->dir), "/tmp/pgh.XXXXXX");
    if (!mkdtemp(h->dir)) {
        perror("pg-harness: mkdtemp");
        return -1;
    }
    if (h->user[0]) {
        struct passwd *pw = getpwnam(h->user);

        if (chown(h->dir, pw->pw_uid, pw->pw_gid) != 0) {
            perror("pg-harness: chown");
            rmdir(h->dir);
            return -1;
        }
    }
    chmod(h->dir, 0700);
    snprintf(cmd, sizeof(cmd),
             "'%s/initdb' -D '%s/data' -U postgres -A trust -E UTF8 --no-sync "
             "> '%s/log' 2>&1",
             h->bindir, h->dir, h->dir);
    if (run_as(h, cmd) != 0) {
        fprintf(stderr, "pg-harness: initdb failed\n");
        show_log(h);
        pgh_stop(h, true);
        return -1;
    }
    snprintf(cmd, sizeof(cmd),
             "'%s/pg_ctl' -D '%s/data' -l '%s/log' -w -t 60 "
             "-o \\\"-c listen_addresses='' -k %s -p 5432 -c fsync=off "
             "-c full_page_writes=off -c synchronous_commit=off\\\" start "
             ">> '%s/log' 2>&1",
             h->bindir, h->dir, h->dir, h->dir, h->dir);
    if (run_as(h, cmd) != 0) {
        fprintf(stderr, "pg-harness: the server did not start\n");
        show_log(h);
        pgh_stop(h, true);
        return -1;
    }
    h->running = true;
    snprintf(h->conninfo, sizeof(h->conninfo),
             "host=%s port=5432 user=postgres dbname=postgres", h->dir);
    return 0;
}

static int pg_ctl_stop(struct pgh *h, const char *mode)
{
    char cmd[1024];
    int rc;

    if (!h->running)
        return 0;
    snprintf(cmd, sizeof(cmd), "'%s/pg_ctl' -D '%s/data' -m %s -w -t 60 stop >> '%s/log' 2>&1",
             h->bindir, h->dir, mode, h->dir);
    rc = run_as(h, cmd);
    h->running = false;
    return rc;
}

int pgh_kill(struct pgh *h)
{
    return pg_ctl_stop(h, "immediate");
}

int pgh_stop(struct pgh *h, bool remove)
{
    int rc = pg_ctl_stop(h, "fast");

    if (remove && h->dir[0]) {
        char cmd[300];

        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", h->dir);
        if (system(cmd) != 0)
            rc = -1;
        h->dir[0] = '\0';
    }
    return rc;
}
