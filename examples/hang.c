/*
 * examples/hang.c: a program that hangs on purpose, and the dump that
 * says why (the README's "When it hangs").
 *
 * A process reads order ids; its "lookup" stage gathers, for each order,
 * the price (known at once) and the stock, which asks a stock service and
 * waits on the service's reply.  The bug: nothing ever fires that reply.
 * So the gather never fires, the map holds the producer paused, and the
 * process never ends.  In debug mode deferred_dump() shows the process,
 * its stages, and under the stage the chain of waits down to the reply,
 * with the line that made it.
 *
 * The program prints the dump, checks that it names the reply's creation
 * site as the innermost wait, then fires the replies itself so that it
 * ends cleanly; "make check" runs it, and t/check-readme.sh compares its
 * output with the README.  It uses only the public header <deferred.h>
 * and <deferred/combinators.h>.
 */
#include <deferred.h>
#include <deferred/combinators.h>

#include <stdio.h>
#include <string.h>

static int problems;

#define EXPECT(cond)                                                          \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "hang: %s:%d: unexpected: %s\n", __FILE__,        \
                    __LINE__, #cond);                                         \
            problems++;                                                       \
        }                                                                     \
    } while (0)

static deferred_t *reply;   /* the stock service's reply: nobody fires it */
static int reply_line;

/* The stock check asks the service and waits for its reply. */
static deferred_value_t ask_stock(deferred_value_t order, void *arg)
{
    (void)arg;
    deferred_value_release(order);
    reply_line = __LINE__ + 1;
    reply = deferred_new();
    return deferred_value_deferred(deferred_ref(reply));
}

/* The lookup of one order: its price and its stock, together. */
static deferred_value_t lookup(deferred_value_t order, void *arg)
{
    deferred_t *in[2], *both;

    (void)arg;
    in[0] = deferred_succeed(deferred_value_int(100 + deferred_value_get_int(order)));
    in[1] = deferred_new();
    if (!in[0] || !in[1] || deferred_add_callback(in[1], ask_stock, NULL) < 0) {
        deferred_unref(in[0]);
        deferred_unref(in[1]);
        return deferred_value_failure(NULL);
    }
    deferred_callback(in[1], order);
    both = deferred_gather(in, 2, 0);
    deferred_unref(in[0]);
    deferred_unref(in[1]);
    return deferred_value_deferred(both);
}

int main(void)
{
    deferred_value_t orders[3];
    deferred_process_t *p;
    deferred_t *done;
    char *dump, want[256];
    const char *line;
    int i;

    deferred_set_debug(true);
    for (i = 0; i < 3; i++)
        orders[i] = deferred_value_int(i + 1);
    p = deferred_process_new(0);
    EXPECT(p != NULL);
    if (!p)
        return 1;
    EXPECT(deferred_process_add(p, deferred_stage_array(orders, 3)) == 0);
    EXPECT(deferred_process_add(p, deferred_stage_map("lookup", lookup, NULL)) == 0);
    EXPECT(deferred_process_add(p, deferred_stage_collect()) == 0);
    done = deferred_process_run(p);
    EXPECT(done != NULL);
    deferred_process_unref(p);

    /* Here a real program would hang: what is it waiting for? */
    EXPECT(!deferred_has_fired(done));
    dump = deferred_dump_string(DEFERRED_DUMP_TEXT);
    EXPECT(dump != NULL);
    if (dump) {
        fputs(dump, stdout);
        snprintf(want, sizeof(want), "%s:%d state=unfired", __FILE__, reply_line);
        line = strstr(dump, want);
        EXPECT(line != NULL);
        EXPECT(line && strstr(line, "innermost\n") == strchr(line, '\n') - 9);
        deferred_free(dump);
    }

    /* The fix, played by hand: answer each order's stock check. */
    for (i = 0; i < 3 && reply; i++) {
        deferred_t *r = reply;

        reply = NULL;
        deferred_callback(r, deferred_value_int(1));
        deferred_unref(r);
    }
    EXPECT(done && deferred_has_fired(done));
    EXPECT(deferred_dump_count() == 1); /* done itself */
    deferred_unref(done);
    EXPECT(deferred_dump_count() == 0);
    return problems ? 1 : 0;
}
