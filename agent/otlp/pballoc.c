#include "otlp/otlp_pb.h"

#include "dlotel.h"

static void *pb_arena_alloc(void *data, size_t size)
{
    struct otlp_pb_allocator *a = data;
    void *p = arena_alloc(a->arena, size);
    if (p == NULL) {
        a->failed = true;
    }
    return p;
}

/* Arena memory is freed all at once by arena_reset(). */
static void pb_arena_free(void *data, void *ptr)
{
    (void)data;
    (void)ptr;
}

void otlp_pb_allocator_init(struct otlp_pb_allocator *a, struct arena *arena)
{
    a->base.alloc = pb_arena_alloc;
    a->base.free = pb_arena_free;
    a->base.allocator_data = a;
    a->arena = arena;
    a->failed = false;
}

const ProtobufCMessageDescriptor *otlp_request_descriptor(enum otlp_signal s)
{
    switch (s) {
    case OTLP_TRACES:
        return &opentelemetry__proto__collector__trace__v1__export_trace_service_request__descriptor;
    case OTLP_METRICS:
        return &opentelemetry__proto__collector__metrics__v1__export_metrics_service_request__descriptor;
    case OTLP_LOGS:
        return &opentelemetry__proto__collector__logs__v1__export_logs_service_request__descriptor;
    }
    return NULL;
}

int otlp_unpack(enum otlp_signal s, const uint8_t *data, size_t len, struct arena *arena,
                ProtobufCMessage **out, struct otlp_error *err)
{
    const ProtobufCMessageDescriptor *desc = otlp_request_descriptor(s);
    if (desc == NULL) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    struct otlp_counts counts;
    int rc = otlp_scan(s, data, len, &counts, err);
    if (rc != 0) {
        return rc;
    }
    struct otlp_pb_allocator alloc;
    otlp_pb_allocator_init(&alloc, arena);
    ProtobufCMessage *msg = protobuf_c_message_unpack(desc, &alloc.base, len, data);
    if (msg == NULL) {
        if (alloc.failed) {
            return DLOTEL_ERR_TOO_LARGE;
        }
        /* The scanner accepted what protobuf-c refused: the fuzzer hunts for such inputs. */
        if (err != NULL) {
            err->offset = 0;
            err->message = "protobuf-c could not unpack the request";
        }
        return DLOTEL_ERR_BAD_INPUT;
    }
    *out = msg;
    return 0;
}
