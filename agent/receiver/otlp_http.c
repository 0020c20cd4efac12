/*
 * The OTLP/HTTP receiver: POST /v1/{traces,metrics,logs} with a protobuf or JSON body, as the
 * OTLP specification's HTTP transport says.
 *
 * The order of the checks is the one a client can act on: the path (404) before the method (405)
 * before the content type and encoding (415) before the size (413) before the payload (400).
 * Every error answer carries a google.rpc.Status in the request's content type, so an SDK that
 * logs the message shows the user what was wrong.
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

#define CT_PROTOBUF "application/x-protobuf"
#define CT_JSON     "application/json"

/* Error messages are built in buffers of this size; longer ones are cut. */
#define MESSAGE_MAX 256

/* One request between its arrival and its answer, which the pipeline may give later. */
struct call {
    struct receiver *r;
    struct http_stream *stream;
    enum otlp_signal signal;
    bool json;
    uint64_t items;
    size_t bytes;
};

static const struct {
    const char *path;
    enum otlp_signal signal;
} routes[] = {
    {"/v1/traces", OTLP_TRACES},
    {"/v1/metrics", OTLP_METRICS},
    {"/v1/logs", OTLP_LOGS},
};

static bool find_route(const char *target, enum otlp_signal *out)
{
    /* The query string is not part of the route; OTLP clients do not send one, proxies might. */
    size_t len = strcspn(target, "?");
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        if (strlen(routes[i].path) == len && memcmp(routes[i].path, target, len) == 0) {
            *out = routes[i].signal;
            return true;
        }
    }
    return false;
}

/* Trims spaces and tabs around [*p, *p + *len). */
static void trim(const char **p, size_t *len)
{
    while (*len > 0 && (**p == ' ' || **p == '\t')) {
        (*p)++;
        (*len)--;
    }
    while (*len > 0 && ((*p)[*len - 1] == ' ' || (*p)[*len - 1] == '\t')) {
        (*len)--;
    }
}

/*
 * Reads a Content-Type: the media type before any parameter (";charset=utf-8"), without case.
 * Returns true for one of the two OTLP types and sets |*json|.
 */
static bool parse_content_type(const char *v, bool *json)
{
    if (v == NULL) {
        return false;
    }
    const char *p = v;
    size_t len = strcspn(v, ";");
    trim(&p, &len);
    if (len == strlen(CT_PROTOBUF) && strncasecmp(p, CT_PROTOBUF, len) == 0) {
        *json = false;
        return true;
    }
    if (len == strlen(CT_JSON) && strncasecmp(p, CT_JSON, len) == 0) {
        *json = true;
        return true;
    }
    return false;
}

/*
 * Answers with an error: |status| is the HTTP status, |err| the dlotel_error behind it (its gRPC
 * code goes into the google.rpc.Status body). Consumes |s|.
 */
static void answer_error(struct receiver *r, struct http_stream *s, const char *method,
                         const char *target, bool json, int status, int err, const char *message,
                         int sig, uint64_t items, uint64_t bytes)
{
    receiver_count(r, sig, err, items, bytes);
    /* |method| and |target| belong to the request, which http_respond() releases. */
    char m[16], t[96];
    receiver_sanitize(m, sizeof(m), method, 15);
    receiver_sanitize(t, sizeof(t), target, 80);
    struct http_header headers[3];
    size_t n = 0;
    headers[n++] = (struct http_header){"content-type", json ? CT_JSON : CT_PROTOBUF};
    if (status == 405) {
        headers[n++] = (struct http_header){"allow", "POST"};
    }
    char retry_after[24];
    if (receiver_http_status_retryable(status)) {
        /* The pipeline's hint (queue.retry_after) in whole seconds, as HTTP has it. */
        uint64_t ns = pipeline_retry_after_ns(r->pipeline);
        snprintf(retry_after, sizeof(retry_after), "%llu",
                 (unsigned long long)(ns / 1000000000 + (ns % 1000000000 != 0 || ns == 0)));
        headers[n++] = (struct http_header){"retry-after", retry_after};
    }
    struct buf body;
    buf_init(&body, 8 * MESSAGE_MAX);
    if (receiver_otlp_http_error_body(json, err, message, &body) != 0) {
        /* Only an allocation can fail here: answer without a body rather than not at all. */
        buf_reset(&body);
    }
    struct http_response resp = {
        .status = status,
        .headers = headers,
        .n_headers = n,
        .body = body.data,
        .body_len = body.len,
    };
    http_respond(s, &resp);
    buf_cleanup(&body);

    log_debug(r->name, "%s %s -> %d: %s", m, t, status, message);
    if (LOG_LEVEL_WARN <= log_level_current && receiver_warn_allowed(r)) {
        log_warn(r->name, "%s %s: answered %d: %s", m, t, status, message);
    }
}

static void on_done(void *userdata, int status, const char *detail)
{
    struct call *c = userdata;
    const char *target = c->signal == OTLP_TRACES    ? "/v1/traces"
                         : c->signal == OTLP_METRICS ? "/v1/metrics"
                                                     : "/v1/logs";
    if (status != 0) {
        char message[MESSAGE_MAX];
        snprintf(message, sizeof(message), "request not exported: %s",
                 detail != NULL ? detail : dlotel_strerror(status));
        answer_error(c->r, c->stream, "POST", target, c->json, receiver_http_status(status), status,
                     message, (int)c->signal, c->items, c->bytes);
        receiver_call_end(c->r);
        free(c);
        return;
    }
    struct buf body;
    buf_init(&body, 64);
    /* The empty Export*ServiceResponse: no bytes as protobuf, "{}" as JSON. */
    int rc = otlp_response_encode(c->signal, 0, NULL, c->json, &body);
    struct http_header headers[] = {{"content-type", c->json ? CT_JSON : CT_PROTOBUF}};
    struct http_response resp = {
        .status = 200,
        .headers = headers,
        .n_headers = 1,
        .body = body.data,
        .body_len = rc == 0 ? body.len : 0,
    };
    http_respond(c->stream, &resp);
    buf_cleanup(&body);
    log_debug(c->r->name, "POST %s -> 200 (%s, %llu items, %zu bytes)", target,
              c->json ? "json" : "protobuf", (unsigned long long)c->items, c->bytes);
    receiver_count(c->r, (int)c->signal, 0, c->items, c->bytes);
    receiver_call_end(c->r);
    free(c);
}

int receiver_otlp_http_decode(const struct http_request *req, enum otlp_signal sig,
                              uint64_t max_request, struct buf *inflated, struct buf *converted,
                              struct arena *arena, struct receiver_http_body *out)
{
    char *message = out->message;
    size_t mlen = sizeof(out->message);
    char shown[64];

    out->pb = NULL;
    out->len = 0;
    out->counts = (struct otlp_counts){0};
    out->status = 0;
    out->message[0] = '\0';
    /* Known before anything else, so that every error answer can use the request's type. */
    out->json = false;
    const char *ctype = http_request_header(req, "content-type");
    bool json = false;
    bool ctype_ok = parse_content_type(ctype, &json);
    out->json = json;

    if (!ctype_ok) {
        receiver_sanitize(shown, sizeof(shown), ctype != NULL ? ctype : "(none)", 48);
        snprintf(message, mlen, "unsupported content-type %s: use " CT_PROTOBUF " or " CT_JSON,
                 shown);
        out->status = 415;
        return DLOTEL_ERR_UNSUPPORTED;
    }
    enum codec codec = CODEC_NONE;
    const char *cenc = http_request_header(req, "content-encoding");
    if (cenc != NULL) {
        const char *p = cenc;
        size_t len = strlen(cenc);
        trim(&p, &len);
        if (codec_parse(p, len, &codec) != 0) {
            receiver_sanitize(shown, sizeof(shown), cenc, 48);
            snprintf(message, mlen, "unsupported content-encoding %s: use gzip, zstd or identity",
                     shown);
            out->status = 415;
            return DLOTEL_ERR_UNSUPPORTED;
        }
    }
    if (req->body_too_large) {
        snprintf(message, mlen, "request body larger than %llu bytes",
                 (unsigned long long)max_request);
        out->status = 413;
        return DLOTEL_ERR_TOO_LARGE;
    }

    /* The body as sent; replaced by the decompressed one, then by protobuf made from JSON. */
    const uint8_t *data = req->body.data != NULL ? req->body.data : (const uint8_t *)"";
    size_t len = req->body.len;
    int rc;

    if (codec != CODEC_NONE) {
        rc = codec_decompress(codec, data, len, inflated);
        if (rc != 0) {
            if (rc == DLOTEL_ERR_TOO_LARGE) {
                snprintf(message, mlen,
                         "request body larger than %llu bytes after %s decompression",
                         (unsigned long long)max_request, codec_name(codec));
            } else if (rc == DLOTEL_ERR_BAD_INPUT) {
                snprintf(message, mlen, "malformed %s body", codec_name(codec));
            } else {
                snprintf(message, mlen, "cannot decompress the body: %s", dlotel_strerror(rc));
            }
            out->status = receiver_http_status(rc);
            return rc;
        }
        data = inflated->data != NULL ? inflated->data : (const uint8_t *)"";
        len = inflated->len;
    }

    if (json) {
        char why[160] = "";
        rc = otlp_json_to_pb(sig, (const char *)data, len, arena, converted, why, sizeof(why));
        if (rc != 0) {
            if (rc == DLOTEL_ERR_BAD_INPUT) {
                snprintf(message, mlen, "invalid OTLP/JSON request: %s", why);
            } else if (rc == DLOTEL_ERR_TOO_LARGE) {
                snprintf(message, mlen, "request too large once decoded");
            } else {
                snprintf(message, mlen, "cannot decode the request: %s", dlotel_strerror(rc));
            }
            out->status = receiver_http_status(rc);
            return rc;
        }
        data = converted->data != NULL ? converted->data : (const uint8_t *)"";
        len = converted->len;
    }

    struct otlp_error oerr = {0, NULL};
    rc = otlp_scan(sig, data, len, &out->counts, &oerr);
    if (rc != 0) {
        const char *why = oerr.message != NULL ? oerr.message : "malformed";
        if (json) {
            snprintf(message, mlen, "invalid OTLP/JSON request: %s", why);
        } else {
            snprintf(message, mlen, "invalid protobuf request at byte %zu: %s", oerr.offset, why);
        }
        out->status = 400;
        return DLOTEL_ERR_BAD_INPUT;
    }
    out->pb = data;
    out->len = len;
    return 0;
}

int receiver_otlp_http_error_body(bool json, int err, const char *message, struct buf *out)
{
    int32_t code = (int32_t)grpc_status_from_error(err, false);
    return otlp_status_encode(code, message, json, out);
}

static void on_request(void *userdata, struct http_stream *s, const struct http_request *req)
{
    struct receiver *r = userdata;
    const char *method = req->method;
    const char *target = req->path;
    char message[MESSAGE_MAX];
    char shown[64];

    /* Known before anything else, so that every error answer can use the request's type. */
    bool json = false;
    parse_content_type(http_request_header(req, "content-type"), &json);

    enum otlp_signal sig;
    if (!find_route(target, &sig)) {
        receiver_sanitize(shown, sizeof(shown), target, 48);
        snprintf(message, sizeof(message),
                 "unknown path %s: OTLP/HTTP serves /v1/traces, /v1/metrics and /v1/logs", shown);
        answer_error(r, s, method, target, json, 404, DLOTEL_ERR_NOT_FOUND, message,
                     RECEIVER_SIGNAL_UNKNOWN, 0, req->body.len);
        return;
    }
    if (strcmp(method, "POST") != 0) {
        receiver_sanitize(shown, sizeof(shown), method, 16);
        snprintf(message, sizeof(message), "method %s not allowed: use POST", shown);
        answer_error(r, s, method, target, json, 405, DLOTEL_ERR_UNSUPPORTED, message, (int)sig, 0,
                     req->body.len);
        return;
    }

    size_t wire_len = req->body_too_large ? 0 : req->body.len;
    struct receiver_http_body body;
    int rc = receiver_otlp_http_decode(req, sig, r->max_request, &r->inflated, &r->converted,
                                       &r->arena, &body);
    if (rc != 0) {
        answer_error(r, s, method, target, body.json, body.status, rc, body.message, (int)sig, 0,
                     wire_len);
        receiver_recycle(r);
        return;
    }

    struct call *c = malloc(sizeof(*c));
    if (c == NULL) {
        answer_error(r, s, method, target, json, 503, DLOTEL_ERR_NOMEM, "out of memory", (int)sig,
                     body.counts.items, wire_len);
        receiver_recycle(r);
        return;
    }
    *c = (struct call){.r = r,
                       .stream = s,
                       .signal = sig,
                       .json = json,
                       .items = body.counts.items,
                       .bytes = wire_len};
    /* |req| (and with it |data|, when it points into the body) may be gone after this call. */
    receiver_call_begin(r);
    pipeline_submit(r->pipeline, sig, body.pb, body.len, &body.counts, on_done, c);
    receiver_recycle(r);
}

int receiver_otlp_http_new_opts(struct receiver **out, uv_loop_t *loop, const char *host,
                                uint16_t port, struct pipeline *p,
                                const struct receiver_options *ro)
{
    uint64_t max =
        ro != NULL && ro->max_request_bytes != 0 ? ro->max_request_bytes : RECEIVER_HTTP_MAX_BODY;
    if (max > SIZE_MAX / 2) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    struct http_listen_options o = {
        .host = host,
        .port = port,
        .http1 = true,
        .http2 = true,
        .max_body = (size_t)max,
        .max_connections = ro != NULL ? ro->max_connections : 0,
        .request_timeout_ms = ro != NULL ? ro->request_timeout_ms : 0,
        .handler = on_request,
    };
    return receiver_start(out, "otlp_http", loop, p, &o, (size_t)max, (size_t)max, max);
}

int receiver_otlp_http_new(struct receiver **out, uv_loop_t *loop, const char *host, uint16_t port,
                           struct pipeline *p)
{
    return receiver_otlp_http_new_opts(out, loop, host, port, p, NULL);
}
