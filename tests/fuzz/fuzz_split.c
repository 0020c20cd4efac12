/*
 * The splitter over random requests and limits. The first byte picks the signal, the next two
 * the limit; the rest is the request. For a request that otlp_scan() accepts, a split must
 * keep every item (the pieces' scanned item counts add up to the whole's), every piece must
 * scan valid, and a piece over the limit must hold a single thing that cannot be cut. Other
 * input must simply not crash or read out of bounds.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "dlotel.h"
#include "otlp/otlp.h"
#include "pipeline/split.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_split: %s failed (line %d)\n", #cond, __LINE__);                 \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3) {
        return 0;
    }
    enum otlp_signal sig = (enum otlp_signal)(data[0] % OTLP_SIGNAL_COUNT);
    size_t limit = (size_t)data[1] | (size_t)data[2] << 8;
    const uint8_t *req = data + 3;
    size_t len = size - 3;

    struct otlp_counts whole;
    bool valid = otlp_scan(sig, req, len, &whole, NULL) == 0;

    /* The bound the pipeline uses: twice the request plus one limit. */
    struct split_out out;
    split_out_init(&out, 2 * len + limit + 64);
    int rc = split_request(sig, req, len, limit, &out);
    if (valid) {
        /* TOO_LARGE: headers repeated in so many pieces that the output passes its bound. */
        CHECK(rc == 0 || rc == DLOTEL_ERR_TOO_LARGE);
    }
    if (valid && rc == 0) {
        uint64_t items = 0;
        size_t oversized = 0;
        for (size_t i = 0; i < out.n; i++) {
            const struct split_piece *pc = &out.pieces[i];
            struct otlp_counts c;
            CHECK(pc->offset + pc->len <= out.data.len);
            CHECK(otlp_scan(sig, out.data.data + pc->offset, pc->len, &c, NULL) == 0);
            CHECK(c.items == pc->items);
            if (pc->len > limit) {
                oversized++;
                CHECK(c.items <= 1);
                CHECK(c.resources == 1);
                CHECK(c.scopes <= 1);
            }
            items += c.items;
        }
        CHECK(oversized == out.oversized);
        CHECK(items == whole.items);
    }
    split_out_cleanup(&out);
    return 0;
}
