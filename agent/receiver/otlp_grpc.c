/*
 * The OTLP/gRPC receiver: the unary Export methods of the trace, metrics and logs services over
 * HTTP/2 cleartext, answered the way the gRPC HTTP/2 protocol document says.
 *
 * Errors go out as "Trailers-Only" responses (one HEADERS frame with :status 200, grpc-status and
 * grpc-message, ending the stream); only a request that is not gRPC at all gets an HTTP error
 * status (415, 405), so that a plain HTTP client does not take it for success.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/compress.h"
#include "core/log.h"
#include "dlotel.h"
#include "otlp/otlp.h"
#include "pipeline/pipeline.h"
#include "receiver/grpc.h"
#include "receiver/receiver.h"
#include "receiver/receiver_internal.h"

#define CT_GRPC "application/grpc"

/* Error messages are built in buffers of this size; longer ones are cut. */
#define MESSAGE_MAX 256

/*
 * The largest body buffered: one 4 MiB message, its prefix, and a margin, so that a message a
 * little over the limit is still read whole and answered RESOURCE_EXHAUSTED by the framing
 * check, the answer a gRPC client expects, rather than cut off by the transport.
 */
#define GRPC_MAX_BODY (GRPC_MAX_MESSAGE + GRPC_PREFIX_LEN + 64 * 1024)

static const struct {
    const char *path;
    enum otlp_signal signal;
} methods[] = {
    {"/opentelemetry.proto.collector.trace.v1.TraceService/Export", OTLP_TRACES},
    {"/opentelemetry.proto.collector.metrics.v1.MetricsService/Export", OTLP_METRICS},
    {"/opentelemetry.proto.collector.logs.v1.LogsService/Export", OTLP_LOGS},
};

/* One call between its arrival and its answer, which the pipeline may give later. */
struct call {
    struct receiver *r;
    struct http_stream *stream;
    enum otlp_signal signal;
    uint64_t items;
    size_t bytes;
};

static bool find_method(const char *path, enum otlp_signal *out)
{
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        if (strcmp(methods[i].path, path) == 0) {
            *out = methods[i].signal;
            return true;
        }
    }
    return false;
}

/* "application/grpc", optionally followed by "+proto" (or another codec name) or parameters. */
static bool is_grpc_content_type(const char *v)
{
    size_t n = strlen(CT_GRPC);
    if (v == NULL || strncasecmp(v, CT_GRPC, n) != 0) {
        return false;
    }
    return v[n] == '\0' || v[n] == '+' || v[n] == ';';
}

static const char *method_name(enum otlp_signal s)
{
    return methods[s].path;
}

static int pb_varint(struct buf *b, uint64_t v)
{
    uint8_t tmp[10];
    size_t n = 0;
    while (v >= 0x80) {
        tmp[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    tmp[n++] = (uint8_t)v;
    return buf_append(b, tmp, n);
}

static int pb_bytes(struct buf *b, unsigned field, const void *p, size_t n)
{
    int rc = pb_varint(b, (uint64_t)field << 3 | 2);
    if (rc == 0) {
        rc = pb_varint(b, n);
    }
    return rc == 0 ? buf_append(b, p, n) : rc;
}

/*
 * Encodes, by hand, the google.rpc.Status that tells a client when to retry:
 *
 *   Status { code = 1; message = 2; details = 3 (repeated Any) }
 *   Any { type_url = 1: "type.googleapis.com/google.rpc.RetryInfo"; value = 2 }
 *   RetryInfo { retry_delay = 1 (google.protobuf.Duration) }
 *   Duration { seconds = 1 (int64); nanos = 2 (int32) }
 *
 * then base64s it (unpadded, as the gRPC spec says to emit "-bin" values) into |out|, NUL
 * terminated, for the grpc-status-details-bin trailer. OTLP clients retry RESOURCE_EXHAUSTED
 * only when this RetryInfo comes with it. Returns 0 or a buf error.
 */
static int retry_info_status_encode(int32_t code, const char *message, uint64_t delay_ns,
                                    struct buf *out)
{
    static const char type_url[] = "type.googleapis.com/google.rpc.RetryInfo";
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    struct buf duration, retry, any, status;
    buf_init(&duration, 32);
    buf_init(&retry, 64);
    buf_init(&any, 128);
    buf_init(&status, 2 * MESSAGE_MAX);
    uint64_t seconds = delay_ns / 1000000000, nanos = delay_ns % 1000000000;
    size_t mlen = strlen(message);
    int rc = 0;
    if (rc == 0 && seconds != 0 && (rc = pb_varint(&duration, 1 << 3)) == 0) {
        rc = pb_varint(&duration, seconds);
    }
    if (rc == 0 && nanos != 0 && (rc = pb_varint(&duration, 2 << 3)) == 0) {
        rc = pb_varint(&duration, nanos);
    }
    if (rc == 0) {
        rc = pb_bytes(&retry, 1, duration.data, duration.len);
    }
    if (rc == 0) {
        rc = pb_bytes(&any, 1, type_url, sizeof(type_url) - 1);
    }
    if (rc == 0) {
        rc = pb_bytes(&any, 2, retry.data, retry.len);
    }
    if (rc == 0 && (rc = pb_varint(&status, 1 << 3)) == 0) {
        rc = pb_varint(&status, (uint64_t)(uint32_t)code);
    }
    if (rc == 0) {
        rc = pb_bytes(&status, 2, message, mlen < MESSAGE_MAX ? mlen : MESSAGE_MAX);
    }
    if (rc == 0) {
        rc = pb_bytes(&status, 3, any.data, any.len);
    }
    const uint8_t *p = status.data;
    size_t n = status.len;
    for (size_t i = 0; rc == 0 && i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n) {
            v |= (uint32_t)p[i + 1] << 8;
        }
        if (i + 2 < n) {
            v |= p[i + 2];
        }
        char q[4] = {b64[v >> 18], b64[(v >> 12) & 63], b64[(v >> 6) & 63], b64[v & 63]};
        rc = buf_append(out, q, i + 2 < n ? 4 : i + 1 < n ? 3 : 2);
    }
    if (rc == 0) {
        rc = buf_terminate(out);
    }
    buf_cleanup(&duration);
    buf_cleanup(&retry);
    buf_cleanup(&any);
    buf_cleanup(&status);
    return rc;
}

static void answer_status_ex(struct receiver *r, struct http_stream *s, const char *path,
                             int http_status, enum grpc_status code, const char *message,
                             uint64_t retry_after_ns);

/*
 * Answers with a non-OK gRPC status as a Trailers-Only response, or with an HTTP error status
 * when |http_status| is not 200, and counts the refusal: |err| is the dlotel_error behind it (its
 * class is the counter's reason), |sig| the signal or RECEIVER_SIGNAL_UNKNOWN. Consumes |s|.
 */
static void answer_status(struct receiver *r, struct http_stream *s, const char *path,
                          int http_status, enum grpc_status code, const char *message, int err,
                          int sig, uint64_t bytes)
{
    receiver_count(r, sig, err, 0, bytes);
    answer_status_ex(r, s, path, http_status, code, message, 0);
}

/* As answer_status(), with a RetryInfo of |retry_after_ns| when it is not 0. */
static void answer_status_ex(struct receiver *r, struct http_stream *s, const char *path,
                             int http_status, enum grpc_status code, const char *message,
                             uint64_t retry_after_ns)
{
    /* |path| belongs to the request, which http_respond() releases. */
    char p[96];
    receiver_sanitize(p, sizeof(p), path, 80);
    char code_text[12];
    snprintf(code_text, sizeof(code_text), "%d", (int)code);
    struct buf encoded;
    buf_init(&encoded, 3 * MESSAGE_MAX + 1);
    const char *grpc_message = "";
    if (grpc_message_encode(&encoded, message, strlen(message)) == 0) {
        grpc_message = (const char *)encoded.data;
    }
    struct buf details;
    buf_init(&details, 4 * MESSAGE_MAX);
    struct http_header headers[6];
    size_t n = 0;
    headers[n++] = (struct http_header){"content-type", CT_GRPC};
    headers[n++] = (struct http_header){"grpc-status", code_text};
    headers[n++] = (struct http_header){"grpc-message", grpc_message};
    headers[n++] = (struct http_header){"grpc-accept-encoding", GRPC_ACCEPT_ENCODING};
    if (http_status == 405) {
        headers[n++] = (struct http_header){"allow", "POST"};
    }
    if (retry_after_ns != 0 &&
        retry_info_status_encode((int32_t)code, message, retry_after_ns, &details) == 0) {
        headers[n++] = (struct http_header){"grpc-status-details-bin", (const char *)details.data};
    }
    struct http_response resp = {
        .status = http_status,
        .headers = headers,
        .n_headers = n,
    };
    http_respond(s, &resp);
    buf_cleanup(&encoded);
    buf_cleanup(&details);

    log_debug(r->name, "%s -> %d grpc-status %d: %s", p, http_status, (int)code, message);
    if (LOG_LEVEL_WARN <= log_level_current && receiver_warn_allowed(r)) {
        log_warn(r->name, "%s: answered grpc-status %d: %s", p, (int)code, message);
    }
}

static void on_done(void *userdata, int status, const char *detail)
{
    struct call *c = userdata;
    if (status != 0) {
        char message[MESSAGE_MAX];
        snprintf(message, sizeof(message), "request not exported: %s",
                 detail != NULL ? detail : dlotel_strerror(status));
        /* Shed load (a full queue): RESOURCE_EXHAUSTED with the RetryInfo clients wait for. */
        uint64_t retry_after =
            status == DLOTEL_ERR_FULL ? pipeline_retry_after_ns(c->r->pipeline) : 0;
        receiver_count(c->r, (int)c->signal, status, c->items, c->bytes);
        answer_status_ex(c->r, c->stream, method_name(c->signal), 200,
                         grpc_status_from_error(status, false), message, retry_after);
        receiver_call_end(c->r);
        free(c);
        return;
    }
    /* The empty Export*ServiceResponse is zero bytes: the message is its prefix alone. */
    uint8_t message[GRPC_PREFIX_LEN];
    grpc_frame_prefix(message, false, 0);
    static const struct http_header headers[] = {
        {"content-type", CT_GRPC},
        {"grpc-accept-encoding", GRPC_ACCEPT_ENCODING},
    };
    static const struct http_header trailers[] = {{"grpc-status", "0"}};
    struct http_response resp = {
        .status = 200,
        .headers = headers,
        .n_headers = 2,
        .body = message,
        .body_len = sizeof(message),
        .trailers = trailers,
        .n_trailers = 1,
    };
    http_respond(c->stream, &resp);
    log_debug(c->r->name, "%s -> grpc-status 0 (%llu items, %zu bytes)", method_name(c->signal),
              (unsigned long long)c->items, c->bytes);
    receiver_count(c->r, (int)c->signal, 0, c->items, c->bytes);
    receiver_call_end(c->r);
    free(c);
}

static void on_request(void *userdata, struct http_stream *s, const struct http_request *req)
{
    struct receiver *r = userdata;
    const char *path = req->path;
    char message[MESSAGE_MAX];
    char shown[80];

    if (strcmp(req->method, "POST") != 0) {
        receiver_sanitize(shown, sizeof(shown), req->method, 16);
        snprintf(message, sizeof(message), "method %s not allowed: gRPC uses POST", shown);
        answer_status(r, s, path, 405, GRPC_STATUS_UNIMPLEMENTED, message, DLOTEL_ERR_UNSUPPORTED,
                      RECEIVER_SIGNAL_UNKNOWN, req->body.len);
        return;
    }
    const char *ctype = http_request_header(req, "content-type");
    if (!is_grpc_content_type(ctype)) {
        receiver_sanitize(shown, sizeof(shown), ctype != NULL ? ctype : "(none)", 48);
        snprintf(message, sizeof(message), "invalid gRPC content-type %s", shown);
        answer_status(r, s, path, 415, GRPC_STATUS_INTERNAL, message, DLOTEL_ERR_UNSUPPORTED,
                      RECEIVER_SIGNAL_UNKNOWN, req->body.len);
        return;
    }
    enum otlp_signal sig;
    if (!find_method(path, &sig)) {
        receiver_sanitize(shown, sizeof(shown), path, 72);
        snprintf(message, sizeof(message), "unknown method %s", shown);
        answer_status(r, s, path, 200, GRPC_STATUS_UNIMPLEMENTED, message, DLOTEL_ERR_UNSUPPORTED,
                      RECEIVER_SIGNAL_UNKNOWN, req->body.len);
        return;
    }
    enum codec codec = CODEC_NONE;
    const char *genc = http_request_header(req, "grpc-encoding");
    if (genc != NULL && codec_parse(genc, strlen(genc), &codec) != 0) {
        receiver_sanitize(shown, sizeof(shown), genc, 48);
        snprintf(message, sizeof(message),
                 "grpc-encoding %s not supported: use " GRPC_ACCEPT_ENCODING, shown);
        answer_status(r, s, path, 200, GRPC_STATUS_UNIMPLEMENTED, message, DLOTEL_ERR_UNSUPPORTED,
                      (int)sig, req->body.len);
        return;
    }
    if (req->body_too_large) {
        snprintf(message, sizeof(message), "message larger than %llu bytes",
                 (unsigned long long)r->max_request);
        answer_status(r, s, path, 200, GRPC_STATUS_RESOURCE_EXHAUSTED, message,
                      DLOTEL_ERR_TOO_LARGE, (int)sig, 0);
        return;
    }

    const uint8_t *data = req->body.data != NULL ? req->body.data : (const uint8_t *)"";
    const uint8_t *msg;
    size_t msg_len;
    const char *why = NULL;
    int rc = grpc_frame_parse_max(data, req->body.len, codec, r->max_request, &r->inflated, &msg,
                                  &msg_len, &why);
    if (rc != 0) {
        if (rc == DLOTEL_ERR_TOO_LARGE) {
            /* The limit is configurable: name the real one, not the framing layer's default. */
            snprintf(message, sizeof(message), "%smessage larger than %llu bytes",
                     strncmp(why, "decompressed", 12) == 0 ? "decompressed " : "",
                     (unsigned long long)r->max_request);
            why = message;
        }
        answer_status(r, s, path, 200, grpc_status_from_error(rc, true), why, rc, (int)sig,
                      req->body.len);
        receiver_recycle(r);
        return;
    }

    struct otlp_counts counts = {0};
    struct otlp_error oerr = {0, NULL};
    rc = otlp_scan(sig, msg, msg_len, &counts, &oerr);
    if (rc != 0) {
        snprintf(message, sizeof(message), "invalid request at byte %zu: %s", oerr.offset,
                 oerr.message != NULL ? oerr.message : "malformed");
        answer_status(r, s, path, 200, grpc_status_from_error(rc, false), message, rc, (int)sig,
                      req->body.len);
        receiver_recycle(r);
        return;
    }

    struct call *c = malloc(sizeof(*c));
    if (c == NULL) {
        answer_status(r, s, path, 200, GRPC_STATUS_UNAVAILABLE, "out of memory", DLOTEL_ERR_NOMEM,
                      (int)sig, req->body.len);
        receiver_recycle(r);
        return;
    }
    *c = (struct call){
        .r = r, .stream = s, .signal = sig, .items = counts.items, .bytes = req->body.len};
    /* |req| (and |msg|, when it points into the body) may be gone after this call. */
    receiver_call_begin(r);
    pipeline_submit(r->pipeline, sig, msg, msg_len, &counts, on_done, c);
    receiver_recycle(r);
}

int receiver_otlp_grpc_new_opts(struct receiver **out, uv_loop_t *loop, const char *host,
                                uint16_t port, struct pipeline *p,
                                const struct receiver_options *ro)
{
    uint64_t max =
        ro != NULL && ro->max_request_bytes != 0 ? ro->max_request_bytes : GRPC_MAX_MESSAGE;
    /* A message's length prefix is 32 bits. */
    if (max > UINT32_MAX) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    struct http_listen_options o = {
        .host = host,
        .port = port,
        .http1 = false,
        .http2 = true,
        .max_body = (size_t)(max + GRPC_MAX_BODY - GRPC_MAX_MESSAGE),
        .max_connections = ro != NULL ? ro->max_connections : 0,
        .request_timeout_ms = ro != NULL ? ro->request_timeout_ms : 0,
        .handler = on_request,
    };
    /* Nothing is converted on this path: a gRPC message is protobuf already. */
    return receiver_start(out, "otlp_grpc", loop, p, &o, (size_t)max, 0, max);
}

int receiver_otlp_grpc_new(struct receiver **out, uv_loop_t *loop, const char *host, uint16_t port,
                           struct pipeline *p)
{
    return receiver_otlp_grpc_new_opts(out, loop, host, port, p, NULL);
}
