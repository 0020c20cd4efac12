/*
 * Bytes a WebSocket client sends after the handshake, into the server side: a real struct
 * http_conn (no socket) takes a valid upgrade request, hands it to api_stream_accept(), and the
 * input follows as the client's frames. The first byte steers the harness:
 *
 *   bits 0-4  feed the frames in pieces of 1..32 bytes
 *   bit 5     the request carries no valid token (the stream closes with 1008)
 *   bit 6     the client is an admin (else user "u1")
 *   bit 7     end with EOF from the peer before freeing
 *
 * Output is taken as written at once. A committed request of two spans (user "u1") is published
 * after the handshake and after every fourth piece, so that outgoing messages (fragmented by
 * wslay) interleave with whatever the client sends: pings, closes, subscribes that filter them.
 * Crashes, leaks and sanitizer reports are the findings.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "api/api_stream.h"
#include "net/http_conn.h"

static struct {
    struct api_stream *st;
    const struct api_principal *who;
} fz;

/* ExportTraceServiceRequest: resource {service.name=svc, datalayer.user_uid=u1}, two spans. */
static const uint8_t traces_pb[] = {
    0x0a, 0x9f, 0x01, 0x0a, 0x33, 0x0a, 0x15, 0x0a, 0x0c, 0x73, 0x65, 0x72, 0x76, 0x69, 0x63,
    0x65, 0x2e, 0x6e, 0x61, 0x6d, 0x65, 0x12, 0x05, 0x0a, 0x03, 0x73, 0x76, 0x63, 0x0a, 0x1a,
    0x0a, 0x12, 0x64, 0x61, 0x74, 0x61, 0x6c, 0x61, 0x79, 0x65, 0x72, 0x2e, 0x75, 0x73, 0x65,
    0x72, 0x5f, 0x75, 0x69, 0x64, 0x12, 0x04, 0x0a, 0x02, 0x75, 0x31, 0x12, 0x68, 0x12, 0x32,
    0x0a, 0x10, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d,
    0x0e, 0x0f, 0x10, 0x12, 0x08, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x2a, 0x02,
    0x6f, 0x70, 0x39, 0x00, 0x00, 0xfa, 0xed, 0x51, 0x72, 0x86, 0x18, 0x41, 0x40, 0x4b, 0x46,
    0xee, 0x51, 0x72, 0x86, 0x18, 0x12, 0x32, 0x0a, 0x10, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06,
    0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x12, 0x08, 0x01, 0x02, 0x03,
    0x04, 0x05, 0x06, 0x07, 0x08, 0x2a, 0x02, 0x6f, 0x70, 0x39, 0x00, 0x00, 0xfa, 0xed, 0x51,
    0x72, 0x86, 0x18, 0x41, 0x40, 0x4b, 0x46, 0xee, 0x51, 0x72, 0x86, 0x18,
};

static void handler(void *userdata, struct http_stream *s, const struct http_request *req)
{
    (void)userdata;
    api_stream_accept(fz.st, s, req, fz.who);
}

static void drain(struct http_conn *c)
{
    for (int i = 0; i < 1000 && c->out.len > 0; i++) {
        buf_reset(&c->out);
        c->io_pending = 0;
        http_conn_written(c);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char req[] = "GET /api/otel/v1/ws?token=t HTTP/1.1\r\n"
                              "Host: localhost\r\n"
                              "Upgrade: websocket\r\n"
                              "Connection: Upgrade\r\n"
                              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                              "Sec-WebSocket-Version: 13\r\n\r\n";
    if (size < 1) {
        return 0;
    }
    uint8_t ctl = data[0];
    data++;
    size--;
    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0) {
        return 0;
    }
    struct api_principal who;
    memset(&who, 0, sizeof(who));
    who.admin = (ctl & 0x40) != 0;
    if (!who.admin) {
        memcpy(who.user_uid, "u1", 3);
    }
    fz.who = (ctl & 0x20) ? NULL : &who;
    struct api_stream_options o = {.client_queue_max_bytes = 64 << 10};
    if (api_stream_new(&fz.st, &loop, &o) != 0) {
        uv_loop_close(&loop);
        return 0;
    }
    struct http_conn_config cfg = {
        .name = "fuzz",
        .http1 = true,
        .max_body = 4096,
        .max_header_bytes = 4096,
        .max_headers = 32,
        .handler = handler,
    };
    struct http_conn *c;
    if (http_conn_new(&c, &cfg, NULL, NULL) == 0) {
        http_conn_feed(c, (const uint8_t *)req, sizeof(req) - 1);
        drain(c);
        api_stream_publish(fz.st, 0, traces_pb, sizeof(traces_pb), NULL);
        drain(c);
        size_t piece = (size_t)(ctl & 0x1f) + 1;
        size_t k = 0;
        for (size_t off = 0; off < size && !http_conn_finished(c); off += piece) {
            size_t n = size - off < piece ? size - off : piece;
            http_conn_feed(c, data + off, n);
            drain(c);
            if (++k % 4 == 0) {
                api_stream_publish(fz.st, 0, traces_pb, sizeof(traces_pb), NULL);
                drain(c);
            }
        }
        if (ctl & 0x80) {
            http_conn_eof(c);
            drain(c);
        }
        http_conn_free(c);
    }
    api_stream_free(fz.st);
    fz.st = NULL;
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return 0;
}
