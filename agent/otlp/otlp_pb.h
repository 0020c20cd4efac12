/*
 * The generated protobuf-c types of the OTLP schema, and the few helpers every room that decodes
 * a request needs: an arena-backed ProtobufCAllocator and a depth-safe unpack.
 *
 * Include this one file rather than the generated *.pb-c.h headers. The generated code comes from
 * agent/otlp/proto/ (our own .proto files, written from the published OTLP field numbers).
 *
 * Note on HistogramDataPoint and ExponentialHistogramDataPoint sum/min/max: upstream declares
 * them proto3 `optional`, which protoc-c 1.4.1 cannot generate. Our .proto writes each as the
 * one-member oneof that `optional` stands for (identical on the wire and in OTLP/JSON), so
 * presence is tested with the case field, for example
 * dp->_sum_case == OPENTELEMETRY__PROTO__METRICS__V1__HISTOGRAM_DATA_POINT___SUM_SUM.
 */
#ifndef DLOTEL_OTLP_PB_H
#define DLOTEL_OTLP_PB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "google/rpc/status.pb-c.h"
#include "opentelemetry/proto/collector/logs/v1/logs_service.pb-c.h"
#include "opentelemetry/proto/collector/metrics/v1/metrics_service.pb-c.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.pb-c.h"
#include "opentelemetry/proto/common/v1/common.pb-c.h"
#include "opentelemetry/proto/logs/v1/logs.pb-c.h"
#include "opentelemetry/proto/metrics/v1/metrics.pb-c.h"
#include "opentelemetry/proto/resource/v1/resource.pb-c.h"
#include "opentelemetry/proto/trace/v1/trace.pb-c.h"

#include "core/arena.h"
#include "otlp/otlp.h"

/*
 * The deepest nesting of messages below the Export*ServiceRequest that otlp_scan() and
 * otlp_json_to_pb() accept. The deepest path with plain attribute values is 8 levels (request >
 * ResourceMetrics > ScopeMetrics > Metric > Histogram > HistogramDataPoint > Exemplar >
 * KeyValue > AnyValue); each array or map inside an attribute value adds two more. protobuf-c
 * unpacks recursively, so this bound is also what keeps its stack small on hostile input.
 */
#define OTLP_MAX_DEPTH 32

/*
 * A ProtobufCAllocator that takes its memory from an arena. free() is a no-op: the arena is
 * reset as a whole. |failed| is set when an allocation was refused, so that a failed unpack can
 * be told apart from malformed input.
 */
struct otlp_pb_allocator {
    ProtobufCAllocator base; /* Pass &a.base to protobuf-c. */
    struct arena *arena;
    bool failed;
};

/* Points |a| at |arena|. Allocates nothing. */
void otlp_pb_allocator_init(struct otlp_pb_allocator *a, struct arena *arena);

/* The descriptor of Export{Trace,Metrics,Logs}ServiceRequest, or NULL for an unknown signal. */
const ProtobufCMessageDescriptor *otlp_request_descriptor(enum otlp_signal s);

/*
 * Validates |data| with otlp_scan() and unpacks it into |arena|. The scan comes first because
 * protobuf-c recurses once per nesting level with no limit of its own; never hand untrusted
 * bytes to protobuf_c_message_unpack() directly.
 *
 * On success *out points at the request message (cast it to the signal's
 * Opentelemetry__Proto__Collector__*__V1__Export*ServiceRequest), which lives until the arena is
 * reset. Returns 0, DLOTEL_ERR_BAD_INPUT (with |err| filled when not NULL),
 * DLOTEL_ERR_TOO_LARGE when the arena reached its limit, or DLOTEL_ERR_INVALID_ARG. *out is
 * untouched on failure.
 */
int otlp_unpack(enum otlp_signal s, const uint8_t *data, size_t len, struct arena *arena,
                ProtobufCMessage **out, struct otlp_error *err);

#endif
