/*
 * nested-orders.c: a hierarchical stream with a subordinate consumer per
 * group (tags and nested start/finish).
 *
 * A producer emits orders as groups: start(order), its lines, end(order).
 * The report consumer's start hands back a subordinate consumer for each
 * order, which sums that order's lines; its result (the order's total)
 * comes back to the report as one item tagged with the order.  A
 * processor between them converts quantities to amounts and sees every
 * event pass.
 *
 * Exits 0 when the report is what it must be.
 */
#include <stdio.h>
#include <stdlib.h>

#include <deferred.h>

struct line {
    int order;
    int qty;
    int price;
};

static const struct line lines[] = {
    {1001, 2, 350}, {1001, 1, 1200}, {1001, 5, 80},
    {1002, 1, 4500},
    {1003, 3, 199}, {1003, 3, 201},
};
#define NLINES (sizeof(lines) / sizeof(lines[0]))

/* ---- the producer: groups of lines, one group per order ---- */

struct orders_src {
    size_t next;
};

static void orders_resume(deferred_stage_t *self, deferred_stage_t *by)
{
    struct orders_src *s = deferred_stage_data(self);

    (void)by;
    while (s->next < NLINES && !deferred_stage_is_paused(self)) {
        const struct line *l = &lines[s->next];
        deferred_value_t tag = deferred_value_int(l->order);

        if (s->next == 0 || lines[s->next - 1].order != l->order)
            if (deferred_stage_start(self, tag) < 0)
                return;
        s->next++;
        if (deferred_stage_emit_tagged(self, tag, deferred_value_make((void *)l, NULL)) < 0)
            return;
        if (s->next == NLINES || lines[s->next].order != l->order)
            if (deferred_stage_end(self, tag, deferred_value_none()) < 0)
                return;
    }
    if (s->next == NLINES)
        deferred_stage_finish(self, deferred_value_none());
}

static int orders_describe(deferred_stage_t *self, deferred_value_t item, char *buf,
                           size_t size)
{
    struct orders_src *s = deferred_stage_data(self);

    (void)item;
    return snprintf(buf, size, "line %zu of the orders table", s->next);
}

static const deferred_stage_ops_t orders_ops = {
    .name = "orders table",
    .resume = orders_resume,
    .describe = orders_describe,
};

/* ---- the processor: a line becomes its amount ---- */

static deferred_value_t amount(deferred_value_t v, void *arg)
{
    const struct line *l = v.ptr;

    (void)arg;
    return deferred_value_int((intptr_t)l->qty * l->price);
}

/* ---- the subordinate consumer: one order's total ---- */

struct order_total {
    intptr_t sum;
    int lines;
};

static deferred_failure_t *total_handle(deferred_stage_t *self, deferred_stage_t *from,
                                        deferred_value_t tag, deferred_value_t *item)
{
    struct order_total *t = deferred_stage_data(self);

    (void)from;
    (void)tag;
    t->sum += deferred_value_get_int(*item);
    t->lines++;
    return NULL;
}

static deferred_value_t total_finish(deferred_stage_t *self, deferred_stage_t *from,
                                     deferred_value_t tag, deferred_value_t outcome)
{
    struct order_total *t = deferred_stage_data(self);

    (void)from;
    printf("  order %ld: %d line%s, total %ld.%02ld\n", (long)deferred_value_get_int(tag),
           t->lines, t->lines == 1 ? "" : "s", (long)(t->sum / 100), (long)(t->sum % 100));
    if (deferred_value_is_failure(outcome))
        return outcome;
    return deferred_value_int(t->sum);
}

static void total_free(void *data)
{
    free(data);
}

static const deferred_stage_ops_t total_ops = {
    .name = "order total",
    .handle = total_handle,
    .finish = total_finish,
    .destroy = total_free,
};

/* ---- the report: a subordinate per order, then the grand total ---- */

struct report {
    int orders;
    intptr_t grand;
};

static deferred_failure_t *report_start(deferred_stage_t *self, deferred_stage_t *from,
                                        deferred_value_t tag, deferred_stage_t **sub)
{
    struct order_total *t;

    (void)self;
    (void)from;
    if (deferred_value_is_none(tag)) {
        printf("orders report\n");
        return NULL;
    }
    t = calloc(1, sizeof(*t));
    *sub = t ? deferred_stage_new(&total_ops, t, 0) : NULL;
    if (!*sub)
        return deferred_failure_new(DEFERRED_DOMAIN_LIBRARY, ENOMEM, NULL);
    return NULL;
}

static deferred_failure_t *report_handle(deferred_stage_t *self, deferred_stage_t *from,
                                         deferred_value_t tag, deferred_value_t *item)
{
    struct report *r = deferred_stage_data(self);

    (void)from;
    (void)tag;
    r->orders++;
    r->grand += deferred_value_get_int(*item);
    return NULL;
}

static deferred_value_t report_finish(deferred_stage_t *self, deferred_stage_t *from,
                                      deferred_value_t tag, deferred_value_t outcome)
{
    struct report *r = deferred_stage_data(self);

    (void)from;
    (void)tag;
    if (deferred_value_is_failure(outcome))
        return outcome;
    printf("%d orders, grand total %ld.%02ld\n", r->orders, (long)(r->grand / 100),
           (long)(r->grand % 100));
    return deferred_value_int(r->grand);
}

static const deferred_stage_ops_t report_ops = {
    .name = "report",
    .start = report_start,
    .handle = report_handle,
    .finish = report_finish,
};

int main(void)
{
    struct orders_src src = {0};
    struct report report = {0, 0};
    deferred_process_t *p = deferred_process_new(0);
    deferred_t *d;
    deferred_value_t result;
    int ok;

    if (!p)
        return 1;
    if (deferred_process_add(p, deferred_stage_new(&orders_ops, &src, 0)) < 0 ||
        deferred_process_add(p, deferred_stage_map("amount", amount, NULL)) < 0 ||
        deferred_process_add(p, deferred_stage_new(&report_ops, &report, 0)) < 0) {
        deferred_process_unref(p);
        return 1;
    }
    d = deferred_process_run(p);
    result = deferred_result_take(d);
    /* 700 + 1200 + 400 = 2300; 4500; 597 + 603 = 1200: 8000. */
    ok = !deferred_value_is_failure(result) && deferred_value_get_int(result) == 8000 &&
         report.orders == 3;
    deferred_value_release(result);
    deferred_unref(d);
    deferred_process_unref(p);
    return ok ? 0 : 1;
}
