/*
 * Fuzzes what the processor room parses from configuration: the JSON processor list of each
 * signal (kinds, options, patterns and regular expressions), then runs any chain that compiles
 * over a small trace request, and the pattern syntax on its own.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/buf.h"
#include "otlp/otlp.h"
#include "processor/pattern.h"
#include "processor/processor.h"

static const char REQUEST[] =
    "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":"
    "{\"stringValue\":\"shop\"}}]},\"scopeSpans\":[{\"spans\":[{\"traceId\":"
    "\"0af7651916cd43dd8448eb211c80319c\",\"spanId\":\"00f067aa0ba902b7\",\"name\":\"GET "
    "/healthz\","
    "\"kind\":2,\"attributes\":[{\"key\":\"http.route\",\"value\":{\"stringValue\":\"/healthz\"}},"
    "{\"key\":\"password\",\"value\":{\"stringValue\":\"hunter2\"}}],\"events\":[{\"name\":\"e\","
    "\"attributes\":[{\"key\":\"k\",\"value\":{\"intValue\":\"1\"}}]}]}]}]}]}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 64 * 1024) {
        return 0;
    }
    char *text = malloc(size + 1);
    if (text == NULL) {
        return 0;
    }
    memcpy(text, data, size);
    text[size] = 0;

    struct pattern p;
    char why[256];
    if (pattern_compile(&p, text, strlen(text), why, sizeof(why)) == 0) {
        pattern_match(&p, text, strlen(text));
        pattern_cleanup(&p);
    }

    struct arena a;
    arena_init(&a, 1u << 20);
    struct buf pb, out;
    buf_init(&pb, 1u << 20);
    buf_init(&out, 1u << 22);
    int rc = otlp_json_to_pb(OTLP_TRACES, REQUEST, sizeof(REQUEST) - 1, &a, &pb, why, sizeof(why));
    for (int s = 0; s < OTLP_SIGNAL_COUNT && rc == 0; s++) {
        struct processor_chain *c = NULL;
        if (processor_chain_new(&c, (enum otlp_signal)s, text, "processors_x", why, sizeof(why)) !=
            0) {
            continue;
        }
        if (s == OTLP_TRACES) {
            struct otlp_counts n;
            buf_reset(&out);
            if (processor_chain_run(c, pb.data, pb.len, &out, &n) == 0 &&
                otlp_scan(OTLP_TRACES, out.data, out.len, &n, NULL) != 0) {
                abort(); /* The chain wrote a request the scanner refuses. */
            }
        }
        processor_chain_free(c);
    }
    buf_cleanup(&pb);
    buf_cleanup(&out);
    arena_cleanup(&a);
    free(text);
    return 0;
}
