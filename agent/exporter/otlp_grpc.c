/*
 * The otlp_grpc exporter: unary Export calls to the OTLP collector services over HTTP/2
 * (gRPC's PROTOCOL-HTTP2.md). The request machinery is upstream_send.c; this file says what a
 * call looks like and reads its outcome.
 *
 * Reading an outcome: an HTTP status other than 200 is mapped as gRPC clients map it; otherwise
 * grpc-status comes from the trailers after the response message, or from the headers of a
 * trailers-only response (libcurl hands both to the header callback). grpc-message is
 * percent-decoded; grpc-status-details-bin may carry a google.rpc.RetryInfo, which makes
 * RESOURCE_EXHAUSTED retryable and gives the wait. On OK the response message (possibly
 * compressed, per the response's grpc-encoding) may carry partial_success.
 */
#include <stdio.h>
#include <string.h>

#include "core/compress.h"
#include "dlotel.h"
#include "exporter/exporter.h"
#include "exporter/upstream.h"
#include "exporter/upstream_send.h"

static int grpc_url(const char *endpoint, enum otlp_signal s, struct buf *out)
{
    static const char *const paths[OTLP_SIGNAL_COUNT] = {
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    };
    int rv = buf_printf(out, "%s%s", endpoint, paths[s]);
    return rv != 0 ? rv : buf_terminate(out);
}

static struct curl_slist *grpc_headers(struct curl_slist *l, enum codec c, uint64_t timeout_ms)
{
    char timeout[48];
    /* grpc-timeout takes at most 8 digits: milliseconds while they fit, then seconds. */
    if (timeout_ms < 100000000u) {
        snprintf(timeout, sizeof(timeout), "grpc-timeout: %llum", (unsigned long long)timeout_ms);
    } else {
        uint64_t secs = timeout_ms / 1000u;
        snprintf(timeout, sizeof(timeout), "grpc-timeout: %lluS",
                 (unsigned long long)(secs > 99999999u ? 99999999u : secs));
    }
    const char *fixed[] = {
        "content-type: application/grpc",
        /* Required by gRPC: it tells proxies that trailers (grpc-status) must get through. */
        "te: trailers",
        "grpc-accept-encoding: identity,gzip,zstd",
        /* Drop curl's default Accept header: it means nothing to a gRPC server. */
        "Accept:",
        timeout,
        c == CODEC_GZIP   ? "grpc-encoding: gzip"
        : c == CODEC_ZSTD ? "grpc-encoding: zstd"
                          : NULL,
    };
    struct curl_slist *n = l;
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        if (fixed[i] == NULL) {
            continue;
        }
        struct curl_slist *m = curl_slist_append(n, fixed[i]);
        if (m == NULL) {
            curl_slist_free_all(n);
            return NULL;
        }
        n = m;
    }
    return n;
}

/* grpc-status is 1*DIGIT; anything else is treated as UNKNOWN, as gRPC clients do. */
static int parse_grpc_status(const char *v)
{
    if (v[0] == 0) {
        return -1;
    }
    int code = 0;
    for (const char *c = v; *c != 0; c++) {
        if (*c < '0' || *c > '9' || code > 1000) {
            return UPSTREAM_GRPC_UNKNOWN;
        }
        code = code * 10 + (*c - '0');
    }
    return code;
}

/*
 * partial_success from the response message: one length-prefixed message, decompressed per the
 * response's grpc-encoding when its flag says so. Returns 0 (|ps| filled, possibly not present)
 * or DLOTEL_ERR_BAD_INPUT.
 */
static int parse_response(struct upstream_req *q, struct upstream_partial *ps)
{
    memset(ps, 0, sizeof(*ps));
    if (q->resp_truncated) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    const uint8_t *p = q->resp.data;
    size_t len = q->resp.len;
    if (len == 0) {
        return 0; /* No message at all: nothing to report. */
    }
    if (len < 5) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    uint32_t n = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
    if (p[0] > 1 || n != len - 5) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    if (p[0] == 0) {
        return upstream_partial_success_parse(p + 5, n, ps);
    }
    enum codec c;
    if (codec_parse(q->grpc_encoding, strlen(q->grpc_encoding), &c) != 0 || c == CODEC_NONE) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    struct buf plain;
    buf_init(&plain, UPSTREAM_MAX_RESPONSE);
    int rv = codec_decompress(c, p + 5, n, &plain);
    if (rv == 0) {
        rv = upstream_partial_success_parse(plain.data, plain.len, ps);
    }
    buf_cleanup(&plain);
    return rv != 0 ? DLOTEL_ERR_BAD_INPUT : 0;
}

static void grpc_finish(struct upstream_req *q, CURLcode rc, struct export_result *r)
{
    long status = 0;
    long version = 0;
    curl_easy_getinfo(q->xfer.easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(q->xfer.easy, CURLINFO_HTTP_VERSION, &version);
    r->http_status = (int)status;
    if (rc != CURLE_OK) {
        struct upstream_reply rep = {.grpc = true, .curl_code = rc, .grpc_status = -1};
        r->outcome = upstream_classify(&rep);
        upstream_set_message(r, "%s: %s", upstream_curl_category(rc),
                             q->errbuf[0] != 0 ? q->errbuf : curl_easy_strerror(rc));
        return;
    }

    /* A server that answered over HTTP/1.x is no gRPC server, whatever its headers say. */
    int code = version == CURL_HTTP_VERSION_2_0 ? parse_grpc_status(q->grpc_status) : -1;
    struct upstream_rpc_status details;
    memset(&details, 0, sizeof(details));
    bool have_details = false;
    if (status == 200 && code > 0 && q->grpc_details.len > 0) {
        struct buf scratch;
        buf_init(&scratch, UPSTREAM_MAX_GRPC_DETAILS);
        have_details = upstream_grpc_details_parse((const char *)q->grpc_details.data,
                                                   q->grpc_details.len, &scratch, &details) == 0;
        buf_cleanup(&scratch);
    }
    struct upstream_reply rep = {
        .grpc = true,
        .curl_code = rc,
        .http_status = (int)status,
        .grpc_status = status == 200 ? code : -1,
        .retry_info = have_details && details.has_retry_info,
    };
    r->outcome = upstream_classify(&rep);
    r->grpc_status = rep.grpc_status;
    if (rep.retry_info) {
        r->retry_after_ns = details.retry_delay_ns;
    }

    if (status != 200) {
        int mapped = upstream_grpc_from_http((int)status);
        upstream_set_message(r, "HTTP %ld (gRPC %s)%s", status, upstream_grpc_code_name(mapped),
                             version == CURL_HTTP_VERSION_2_0
                                 ? ""
                                 : " over HTTP/1.x: is the endpoint a gRPC server?");
        return;
    }
    if (code < 0) {
        upstream_set_message(
            r, "%s",
            version == CURL_HTTP_VERSION_2_0
                ? "HTTP 200 without grpc-status: is the endpoint a gRPC server?"
                : "the server answered over HTTP/1.x: is the endpoint a gRPC server?");
        return;
    }
    if (code != UPSTREAM_GRPC_OK) {
        struct buf msg;
        buf_init(&msg, UPSTREAM_MAX_GRPC_MESSAGE);
        upstream_grpc_message_decode((const char *)q->grpc_message.data, q->grpc_message.len, &msg);
        char text[200];
        upstream_text_copy(text, sizeof(text), msg.data, msg.len);
        buf_cleanup(&msg);
        if (text[0] == 0 && have_details) {
            upstream_text_copy(text, sizeof(text), (const uint8_t *)details.message,
                               strlen(details.message));
        }
        upstream_set_message(r, "%s%s%s", upstream_grpc_code_name(code), text[0] != 0 ? ": " : "",
                             text);
        return;
    }
    struct upstream_partial ps;
    if (parse_response(q, &ps) != 0) {
        upstream_set_message(r, "OK with an unreadable response message");
    } else if (ps.present && (ps.rejected > 0 || ps.message[0] != 0)) {
        r->rejected_items = ps.rejected;
        upstream_set_message(r, "%s", ps.message[0] != 0 ? ps.message : "partial success");
    }
}

static const struct upstream_proto proto_grpc = {
    .kind = "otlp_grpc",
    .grpc = true,
    .url = grpc_url,
    .headers = grpc_headers,
    .finish = grpc_finish,
};

int exporter_otlp_grpc_new(struct exporter **out, struct uv_loop_s *loop,
                           const struct otlp_exporter_options *o)
{
    return upstream_exporter_new(out, loop, o, &proto_grpc);
}
