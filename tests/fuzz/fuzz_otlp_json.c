/*
 * Fuzzes otlp_json_to_pb(). The first byte picks the signal, the rest is the JSON text.
 *
 * Whatever the decoder accepts must scan (the protobuf it makes goes through otlp_scan()
 * downstream), must encode back to JSON, and that JSON must decode to the same protobuf bytes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/buf.h"
#include "otlp/otlp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    enum otlp_signal s = (enum otlp_signal)(data[0] % OTLP_SIGNAL_COUNT);
    struct arena arena;
    arena_init(&arena, 64u << 20);
    struct buf pb, json, pb2;
    buf_init(&pb, 16u << 20);
    buf_init(&json, 64u << 20);
    buf_init(&pb2, 16u << 20);
    char errbuf[256];

    int rc =
        otlp_json_to_pb(s, (const char *)data + 1, size - 1, &arena, &pb, errbuf, sizeof(errbuf));
    if (rc != 0) {
        if (memchr(errbuf, '\0', sizeof(errbuf)) == NULL || errbuf[0] == '\0') {
            fprintf(stderr, "rejection without a message\n");
            abort();
        }
        goto done;
    }
    struct otlp_counts counts;
    struct otlp_error err;
    if (otlp_scan(s, pb.data, pb.len, &counts, &err) != 0) {
        fprintf(stderr, "decoded JSON does not scan: %s at %zu\n", err.message, err.offset);
        abort();
    }
    arena_reset(&arena);
    if (otlp_pb_to_json(s, pb.data, pb.len, &arena, &json) != 0) {
        fprintf(stderr, "decoded JSON does not encode back\n");
        abort();
    }
    arena_reset(&arena);
    if (otlp_json_to_pb(s, (const char *)json.data, json.len, &arena, &pb2, errbuf,
                        sizeof(errbuf)) != 0) {
        fprintf(stderr, "re-encoded JSON does not decode: %s\n", errbuf);
        abort();
    }
    if (pb.len != pb2.len || (pb.len != 0 && memcmp(pb.data, pb2.data, pb.len) != 0)) {
        fprintf(stderr, "JSON round trip changed the protobuf\n");
        abort();
    }

done:
    buf_cleanup(&pb);
    buf_cleanup(&json);
    buf_cleanup(&pb2);
    arena_cleanup(&arena);
    return 0;
}
