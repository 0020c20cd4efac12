/*
 * The agent's admin endpoint (admin.endpoint, loopback by default): its own health and counters.
 *
 *   GET /metrics   Prometheus text exposition format 0.0.4
 *   GET /healthz   JSON: {"status": "ok"|"degraded", "version", "uptime_s", "receivers", ...}
 *
 * Other paths get 404, other methods on these paths 405. The server is agent/net's HTTP server
 * (HTTP/1.1 and h2c on one port); the numbers come from a snapshot the agent fills on each
 * request, so nothing here holds a pointer into the pipeline or the receivers.
 */
#ifndef DLOTEL_CLI_ADMIN_H
#define DLOTEL_CLI_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "core/buf.h"
#include "pipeline/pipeline.h"
#include "processor/processor.h"
#include "receiver/receiver.h"

#define ADMIN_MAX_RECEIVERS 4

/* Everything one response reports. */
struct admin_snapshot {
    const char *version;
    const char *state; /* "running", "draining" */
    uint64_t uptime_s;
    uint64_t start_unix;
    uint64_t rss_bytes; /* 0: unknown. */
    struct receiver_stats receivers[ADMIN_MAX_RECEIVERS];
    size_t n_receivers;
    struct pipeline_stats *exporters; /* One per exporter x signal; owned by the snapshot. */
    size_t n_exporters;
    struct pipeline_totals totals;
    /* Per signal: the processor chain's counters, when a chain is configured. */
    bool has_processors[OTLP_SIGNAL_COUNT];
    struct processor_stats processors[OTLP_SIGNAL_COUNT];
};

/*
 * Fills |s| (zeroed by the caller; exporters allocated with malloc, freed by
 * admin_snapshot_cleanup()). Returns 0 or DLOTEL_ERR_NOMEM.
 */
typedef int (*admin_collect_fn)(void *userdata, struct admin_snapshot *s);

void admin_snapshot_cleanup(struct admin_snapshot *s);

/*
 * Appends the Prometheus text exposition of |s| to |out|: HELP and TYPE lines per family,
 * label values escaped (backslash, double quote, newline). Returns 0 or a buf error.
 */
int admin_render_metrics(const struct admin_snapshot *s, struct buf *out);

/*
 * Appends the /healthz JSON of |s| to |out| and sets |*degraded| when an exporter's last attempt
 * failed. Returns 0, DLOTEL_ERR_NOMEM or a buf error.
 */
int admin_render_health(const struct admin_snapshot *s, struct buf *out, bool *degraded);

/* Reads the resident set size of this process from /proc/self/statm; 0 when unknown. */
uint64_t admin_rss_bytes(void);

struct admin;

/*
 * Starts the admin server on |host|:|port| (0: a free port). |collect| is called on the loop
 * thread for each request. Returns 0, or as http_server_new(). *out is untouched on failure.
 */
int admin_new(struct admin **out, uv_loop_t *loop, const char *host, uint16_t port,
              admin_collect_fn collect, void *userdata);

uint16_t admin_port(const struct admin *a);

/* Stops the server; libuv closes its handles on the next turns of the loop. NULL is a no-op. */
void admin_free(struct admin *a);

#endif
