/*
 * pipeline-error.c: a processor fails on one row, and the failure's story
 * names the stage, the row and where that row came from (the error
 * context of a producer/consumer pipeline: which input caused it).
 *
 * Rows of readings go through a parser, a unit conversion and an average.
 * The conversion refuses a negative reading.  The process's deferred fails
 * with that failure, the producer is cancelled, and the story printed
 * below reads from the consumer back to the input that started it.
 *
 * Exits 0 when the failure is the expected one and its story tells it all.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <deferred.h>

static const char *readings[] = {"21.5", "22.0", "-273.9", "23.1"};

static deferred_value_t parse(deferred_value_t v, void *arg)
{
    double x = strtod(v.ptr, NULL);

    (void)arg;
    deferred_value_release(v);
    return deferred_value_int((intptr_t)(x * 10));
}

static deferred_value_t to_kelvin(deferred_value_t v, void *arg)
{
    intptr_t tenths = deferred_value_get_int(v);

    (void)arg;
    if (tenths < -2731)
        return deferred_value_failure(deferred_failure_new(
            DEFERRED_DOMAIN_USER, ERANGE, "%ld.%ld degrees is below absolute zero",
            (long)(tenths / 10), (long)(-tenths % 10)));
    return deferred_value_int(tenths + 2731);
}

static deferred_value_t add(deferred_value_t acc, deferred_value_t v, void *arg)
{
    (void)arg;
    return deferred_value_int(deferred_value_get_int(acc) + deferred_value_get_int(v));
}

int main(void)
{
    deferred_value_t rows[4];
    deferred_process_t *p = deferred_process_new(0);
    deferred_t *d;
    deferred_value_t result;
    deferred_failure_t *f;
    char *story;
    size_t i;
    int ok;

    for (i = 0; i < 4; i++)
        rows[i] = deferred_value_make((void *)readings[i], NULL);
    deferred_process_add(p, deferred_stage_array(rows, 4));
    deferred_process_add(p, deferred_stage_map("parse", parse, NULL));
    deferred_process_add(p, deferred_stage_map("to kelvin", to_kelvin, NULL));
    deferred_process_add(p, deferred_stage_reduce(add, deferred_value_int(0), NULL));
    d = deferred_process_run(p);
    result = deferred_result_take(d);
    f = deferred_value_get_failure(result);
    story = deferred_failure_story_alloc(f);
    printf("the pipeline failed:\n%s\n", story ? story : "(no story)");
    ok = f && deferred_failure_code(f) == ERANGE && story &&
         strstr(story, "to kelvin") && strstr(story, "item 3") &&
         strstr(story, "element 2 of 4") && strstr(story, "below absolute zero");
    deferred_free(story);
    deferred_value_release(result);
    deferred_unref(d);
    deferred_process_unref(p);
    return ok ? 0 : 1;
}
