/*
 * The debug exporter: writes what arrives to the log, as one summary line per request or as the
 * whole request in OTLP/JSON. For people trying the agent out and for tests; it never fails a
 * request for reasons of its own except when the request does not decode.
 */
#include <stdlib.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/log.h"
#include "dlotel.h"
#include "exporter/exporter.h"
#include "exporter/exporter_internal.h"

struct debug_exporter {
    struct exporter base; /* First, so that a struct exporter * converts back. */
    enum debug_verbosity verbosity;
    struct arena arena; /* The decoded request; reset after each one. */
    struct buf json;    /* The request as JSON; emptied after each one. */
};

static const char *item_name(enum otlp_signal s)
{
    switch (s) {
    case OTLP_TRACES:
        return "spans";
    case OTLP_METRICS:
        return "data points";
    case OTLP_LOGS:
        return "log records";
    }
    return "items";
}

static int debug_export(struct exporter *e, enum otlp_signal s, const uint8_t *pb, size_t len,
                        const struct otlp_counts *counts)
{
    struct debug_exporter *d = (struct debug_exporter *)e;
    log_info("debug", "%s: %u resources, %u scopes, %llu %s, %zu bytes", otlp_signal_name(s),
             counts->resources, counts->scopes, (unsigned long long)counts->items, item_name(s),
             len);
    if (d->verbosity != DEBUG_DETAILED || log_level_current < LOG_LEVEL_INFO) {
        return 0;
    }
    int rc = otlp_pb_to_json(s, pb, len, &d->arena, &d->json);
    if (rc == 0) {
        log_info("debug", "%s: %.*s", otlp_signal_name(s), (int)d->json.len,
                 (const char *)d->json.data);
    } else {
        log_warn("debug", "%s: cannot encode the request as JSON: %s", otlp_signal_name(s),
                 dlotel_strerror(rc));
    }
    arena_reset(&d->arena);
    exporter_buf_recycle(&d->json);
    return rc;
}

static void debug_flush(struct exporter *e)
{
    (void)e;
}

static void debug_destroy(struct exporter *e)
{
    struct debug_exporter *d = (struct debug_exporter *)e;
    arena_cleanup(&d->arena);
    buf_cleanup(&d->json);
    free(d);
}

static const struct exporter_ops debug_ops = {
    .kind = "debug",
    .export = debug_export,
    .flush = debug_flush,
    .destroy = debug_destroy,
};

int exporter_debug_new(struct exporter **out, enum debug_verbosity v)
{
    struct debug_exporter *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    d->base.ops = &debug_ops;
    d->base.refs = 0;
    d->verbosity = v;
    arena_init(&d->arena, EXPORTER_ARENA_MAX);
    buf_init(&d->json, EXPORTER_JSON_MAX);
    *out = &d->base;
    return 0;
}
