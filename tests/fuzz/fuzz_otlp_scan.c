/*
 * Fuzzes otlp_scan(). The first byte picks the signal, the rest is the request.
 *
 * Cross-check: whatever the scanner accepts must also unpack with protobuf-c (the scanner is
 * the gate in front of every protobuf-c unpack in the agent, so it must never be more lenient),
 * and the counts must match what the unpacked message holds.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/arena.h"
#include "otlp/otlp.h"
#include "otlp/otlp_pb.h"

static uint64_t count_items(enum otlp_signal s, const ProtobufCMessage *m, uint32_t *resources,
                            uint32_t *scopes)
{
    uint64_t items = 0;
    if (s == OTLP_TRACES) {
        const Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest *r =
            (const void *)m;
        *resources = (uint32_t)r->n_resource_spans;
        for (size_t i = 0; i < r->n_resource_spans; i++) {
            *scopes += (uint32_t)r->resource_spans[i]->n_scope_spans;
            for (size_t j = 0; j < r->resource_spans[i]->n_scope_spans; j++) {
                items += r->resource_spans[i]->scope_spans[j]->n_spans;
            }
        }
    } else if (s == OTLP_LOGS) {
        const Opentelemetry__Proto__Collector__Logs__V1__ExportLogsServiceRequest *r =
            (const void *)m;
        *resources = (uint32_t)r->n_resource_logs;
        for (size_t i = 0; i < r->n_resource_logs; i++) {
            *scopes += (uint32_t)r->resource_logs[i]->n_scope_logs;
            for (size_t j = 0; j < r->resource_logs[i]->n_scope_logs; j++) {
                items += r->resource_logs[i]->scope_logs[j]->n_log_records;
            }
        }
    } else {
        const Opentelemetry__Proto__Collector__Metrics__V1__ExportMetricsServiceRequest *r =
            (const void *)m;
        *resources = (uint32_t)r->n_resource_metrics;
        for (size_t i = 0; i < r->n_resource_metrics; i++) {
            const Opentelemetry__Proto__Metrics__V1__ResourceMetrics *rm = r->resource_metrics[i];
            *scopes += (uint32_t)rm->n_scope_metrics;
            for (size_t j = 0; j < rm->n_scope_metrics; j++) {
                for (size_t k = 0; k < rm->scope_metrics[j]->n_metrics; k++) {
                    const Opentelemetry__Proto__Metrics__V1__Metric *mt =
                        rm->scope_metrics[j]->metrics[k];
                    switch (mt->data_case) {
                    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_GAUGE:
                        items += mt->gauge->n_data_points;
                        break;
                    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_SUM:
                        items += mt->sum->n_data_points;
                        break;
                    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_HISTOGRAM:
                        items += mt->histogram->n_data_points;
                        break;
                    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_EXPONENTIAL_HISTOGRAM:
                        items += mt->exponential_histogram->n_data_points;
                        break;
                    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_SUMMARY:
                        items += mt->summary->n_data_points;
                        break;
                    default:
                        break;
                    }
                }
            }
        }
    }
    return items;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    enum otlp_signal s = (enum otlp_signal)(data[0] % OTLP_SIGNAL_COUNT);
    const uint8_t *pb = data + 1;
    size_t len = size - 1;

    struct otlp_counts counts = {0};
    struct otlp_error err = {0};
    if (otlp_scan(s, pb, len, &counts, &err) != 0) {
        if (err.message == NULL || err.offset > len) {
            fprintf(stderr, "rejection without a message or with a bad offset\n");
            abort();
        }
        return 0;
    }

    struct otlp_pb_allocator alloc;
    struct arena arena;
    arena_init(&arena, 256u << 20);
    otlp_pb_allocator_init(&alloc, &arena);
    ProtobufCMessage *m =
        protobuf_c_message_unpack(otlp_request_descriptor(s), &alloc.base, len, pb);
    if (m == NULL) {
        fprintf(stderr, "scanner accepted (%s) what protobuf-c rejects\n", otlp_signal_name(s));
        abort();
    }
    uint32_t resources = 0, scopes = 0;
    uint64_t items = count_items(s, m, &resources, &scopes);
    /* Merged duplicate singular message fields (a Metric with two `sum` fields) make
     * protobuf-c's view smaller than the scanner's: the scanner counts what is on the wire. */
    if (resources != counts.resources || scopes > counts.scopes || items > counts.items) {
        fprintf(stderr, "count mismatch: scan %u/%u/%llu, protobuf-c %u/%u/%llu\n",
                counts.resources, counts.scopes, (unsigned long long)counts.items, resources,
                scopes, (unsigned long long)items);
        abort();
    }
    arena_cleanup(&arena);
    return 0;
}
