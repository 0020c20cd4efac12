/*
 * Fuzz target: bytes from a control socket peer -> frames -> requests, replies, ready lines.
 * The daemon reads requests from any process of its user, and libdlotel reads replies and ready
 * lines from whatever listens on the socket, so all three parsers see untrusted bytes. A request
 * that parses must encode and parse back to the same request.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "launcher/control.h"

static void check_payload(const uint8_t *p, size_t n)
{
    struct control_request r;
    char why[256];
    if (control_request_parse(p, n, &r, why, sizeof(why)) == 0) {
        struct buf b;
        buf_init(&b, CONTROL_MAX_REQUEST + 4);
        if (control_request_append(&b, &r) != 0) {
            abort();
        }
        const uint8_t *q;
        size_t qn, used;
        if (control_frame_next(b.data, b.len, CONTROL_MAX_REQUEST, &q, &qn, &used) != 1 ||
            used != b.len) {
            abort();
        }
        struct control_request again;
        if (control_request_parse(q, qn, &again, why, sizeof(why)) != 0 || again.op != r.op ||
            again.pid != r.pid || again.config_hash != r.config_hash ||
            again.timeout_ms != r.timeout_ms || strcmp(again.version, r.version) != 0) {
            abort();
        }
        buf_cleanup(&b);
    } else if (why[0] == '\0') {
        abort(); /* A refusal always says why. */
    }
    struct control_reply rep;
    if (control_reply_parse(p, n, &rep) == 0) {
        if (!rep.ok && (rep.code >= 0 || rep.error[0] == '\0')) {
            abort(); /* A failed reply is never mistaken for success, and has a message. */
        }
        control_reply_cleanup(&rep);
    }
    struct control_ready ready;
    if (control_ready_parse((const char *)p, n, &ready) == 0 && !ready.ok && ready.code >= 0) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The stream as a server reads it: frames one after another, until one is incomplete or
     * broken. */
    size_t off = 0;
    while (off < size) {
        const uint8_t *p;
        size_t n, used;
        int rv = control_frame_next(data + off, size - off, CONTROL_MAX_REQUEST, &p, &n, &used);
        if (rv != 1) {
            break;
        }
        if (used != n + 4 || n == 0 || n > CONTROL_MAX_REQUEST) {
            abort();
        }
        check_payload(p, n);
        off += used;
    }
    /* And the whole input as one payload, for the JSON parsers alone. */
    check_payload(data, size);
    return 0;
}
