/*
 * fuzz/regress-main.c: the fuzz harnesses as ordinary tests.
 *
 * Linked with one harness (fuzz-core.c or fuzz-process.c) and with
 * lib/libdeferred.la, without libFuzzer, it calls the harness's
 * LLVMFuzzerTestOneInput() on every file it is given, or, without
 * arguments, on every file of fuzz/regressions/<harness>/ (the inputs
 * that once crashed it) and fuzz/corpus/<harness>/ (the seed corpus).
 * A directory argument means every file in it.  The harness aborts on a
 * broken invariant; a run that returns has passed.
 *
 * The source directory is $srcdir (set by "make check"), else the
 * FUZZ_TOP_SRCDIR the driver was built with.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz-util.h"

#ifndef FUZZ_HARNESS
#error "FUZZ_HARNESS (the harness's name: core, process) must be defined"
#endif
#ifndef FUZZ_TOP_SRCDIR
#define FUZZ_TOP_SRCDIR "."
#endif

static unsigned long files_run;

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    size_t len = 0, cap = 0, got;

    if (!f) {
        perror(path);
        return -1;
    }
    for (;;) {
        if (len == cap) {
            unsigned char *more;

            cap = cap ? 2 * cap : 4096;
            more = realloc(buf, cap);
            if (!more) {
                fclose(f);
                free(buf);
                fprintf(stderr, "%s: out of memory\n", path);
                return -1;
            }
            buf = more;
        }
        got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    fclose(f);
    printf("run %s (%zu bytes)\n", path, len);
    fflush(stdout);
    (void)LLVMFuzzerTestOneInput(buf, len);
    free(buf);
    files_run++;
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Run every regular file of dir, in name order.  A missing directory is
 * no error when optional. */
static int run_dir(const char *dir, int optional)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **names = NULL;
    size_t n = 0, cap = 0, i;
    int status = 0;

    if (!d) {
        if (optional)
            return 0;
        perror(dir);
        return -1;
    }
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || strcmp(e->d_name, "README") == 0)
            continue;
        if (n == cap) {
            char **more;

            cap = cap ? 2 * cap : 64;
            more = realloc(names, cap * sizeof *names);
            if (!more)
                break;
            names = more;
        }
        names[n] = malloc(strlen(dir) + strlen(e->d_name) + 2);
        if (!names[n])
            break;
        sprintf(names[n], "%s/%s", dir, e->d_name);
        n++;
    }
    closedir(d);
    qsort(names, n, sizeof *names, by_name);
    for (i = 0; i < n; i++) {
        struct stat st;

        if (stat(names[i], &st) == 0 && S_ISREG(st.st_mode) && run_file(names[i]) != 0)
            status = -1;
        free(names[i]);
    }
    free(names);
    return status;
}

static int run_path(const char *path)
{
    struct stat st;

    if (stat(path, &st) != 0) {
        perror(path);
        return -1;
    }
    return S_ISDIR(st.st_mode) ? run_dir(path, 0) : run_file(path);
}

int main(int argc, char **argv)
{
    int status = 0, i;

    if (argc > 1) {
        for (i = 1; i < argc; i++)
            if (run_path(argv[i]) != 0)
                status = 1;
    } else {
        const char *top = getenv("srcdir");
        char path[4096];

        if (!top || !*top)
            top = FUZZ_TOP_SRCDIR;
        snprintf(path, sizeof path, "%s/fuzz/regressions/%s", top, FUZZ_HARNESS);
        if (run_dir(path, 1) != 0)
            status = 1;
        snprintf(path, sizeof path, "%s/fuzz/corpus/%s", top, FUZZ_HARNESS);
        if (run_dir(path, 0) != 0)
            status = 1;
        if (files_run == 0) {
            fprintf(stderr, "regress-%s: no input found under %s/fuzz\n", FUZZ_HARNESS, top);
            status = 1;
        }
    }
    printf("regress-%s: %lu inputs run, %s\n", FUZZ_HARNESS, files_run,
           status ? "FAILED" : "every invariant held");
    return status;
}
