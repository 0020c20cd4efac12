/*
 * The otlp_http exporter: OTLP/HTTP with binary protobuf (the specification's "http/protobuf"),
 * POST <endpoint>/v1/{traces,metrics,logs}. The request machinery is upstream_send.c; this file
 * says what the requests look like and reads the answers.
 *
 * Reading an answer: any 2xx is delivered; its body, when protobuf (or JSON), may carry
 * partial_success, which is counted. Anything else is classified by upstream_classify(), with
 * Retry-After honoured, and the server's explanation (a google.rpc.Status body, as the
 * specification asks servers to send, or plain text) goes into the message for the logs.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/compress.h"
#include "core/timeutil.h"
#include "dlotel.h"
#include "exporter/exporter.h"
#include "exporter/upstream.h"
#include "exporter/upstream_send.h"

static int http_url(const char *endpoint, enum otlp_signal s, struct buf *out)
{
    int rv = buf_printf(out, "%s/v1/%s", endpoint, otlp_signal_name(s));
    return rv != 0 ? rv : buf_terminate(out);
}

static struct curl_slist *http_headers(struct curl_slist *l, enum codec c, uint64_t timeout_ms)
{
    (void)timeout_ms;
    struct curl_slist *n = curl_slist_append(l, "Content-Type: application/x-protobuf");
    if (n != NULL && c != CODEC_NONE) {
        n = curl_slist_append(n, c == CODEC_GZIP ? "Content-Encoding: gzip"
                                                 : "Content-Encoding: zstd");
    }
    if (n == NULL) {
        curl_slist_free_all(l);
    }
    return n;
}

/* The media type of a Content-Type value, without parameters, compared case-insensitively. */
static bool media_is(const char *ct, const char *want)
{
    size_t n = strcspn(ct, ";");
    while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t')) {
        n--;
    }
    return strlen(want) == n && strncasecmp(ct, want, n) == 0;
}

static bool is_protobuf(const char *ct)
{
    return media_is(ct, "application/x-protobuf") || media_is(ct, "application/protobuf");
}

/*
 * The response body, decoded when the server compressed it anyway (we never ask it to). Points
 * into |q->resp| or |scratch|; NULL when the body cannot be used (cut short, undecodable).
 */
static const uint8_t *response_body(struct upstream_req *q, struct buf *scratch, size_t *len)
{
    if (q->resp_truncated) {
        return NULL;
    }
    enum codec c;
    if (q->content_encoding[0] == 0 ||
        codec_parse(q->content_encoding, strlen(q->content_encoding), &c) != 0) {
        *len = q->resp.len;
        return q->content_encoding[0] == 0 ? q->resp.data : NULL;
    }
    if (c == CODEC_NONE) {
        *len = q->resp.len;
        return q->resp.data;
    }
    if (codec_decompress(c, q->resp.data, q->resp.len, scratch) != 0) {
        return NULL;
    }
    *len = scratch->len;
    return scratch->data;
}

static void http_finish(struct upstream_req *q, CURLcode rc, struct export_result *r)
{
    long status = 0;
    curl_easy_getinfo(q->xfer.easy, CURLINFO_RESPONSE_CODE, &status);
    r->http_status = (int)status;
    struct upstream_reply rep = {
        .grpc = false, .curl_code = rc, .http_status = (int)status, .grpc_status = -1};
    r->outcome = upstream_classify(&rep);
    if (rc != CURLE_OK) {
        upstream_set_message(r, "%s: %s", upstream_curl_category(rc),
                             q->errbuf[0] != 0 ? q->errbuf : curl_easy_strerror(rc));
        return;
    }
    if (q->retry_after[0] != 0 &&
        upstream_retry_after_parse(q->retry_after, strlen(q->retry_after), time_now_unix_nano(),
                                   &r->retry_after_ns) != 0) {
        r->retry_after_ns = 0; /* A malformed Retry-After is as good as none: backoff decides. */
    }

    struct buf scratch;
    buf_init(&scratch, UPSTREAM_MAX_RESPONSE);
    size_t blen = 0;
    const uint8_t *body = response_body(q, &scratch, &blen);

    if (r->outcome == EXPORT_OK) {
        struct upstream_partial ps;
        int prv = 0;
        memset(&ps, 0, sizeof(ps));
        if (body != NULL && blen > 0 && is_protobuf(q->content_type)) {
            prv = upstream_partial_success_parse(body, blen, &ps);
        } else if (body != NULL && blen > 0 && media_is(q->content_type, "application/json")) {
            prv = upstream_partial_success_parse_json(q->signal, (const char *)body, blen, &ps);
        }
        if (prv != 0) {
            /* Delivered all the same: a response we cannot read does not undo a 2xx. */
            upstream_set_message(r, "HTTP %ld with an unreadable response body", status);
        } else if (ps.present && (ps.rejected > 0 || ps.message[0] != 0)) {
            r->rejected_items = ps.rejected;
            upstream_set_message(r, "%s", ps.message[0] != 0 ? ps.message : "partial success");
        }
        buf_cleanup(&scratch);
        return;
    }

    /* What the server said about the failure: a google.rpc.Status, or text. */
    char said[200];
    said[0] = 0;
    if (body != NULL && blen > 0) {
        struct upstream_rpc_status st;
        if (is_protobuf(q->content_type) && upstream_rpc_status_parse(body, blen, &st) == 0) {
            upstream_text_copy(said, sizeof(said), (const uint8_t *)st.message, strlen(st.message));
        } else if (media_is(q->content_type, "application/json") &&
                   upstream_rpc_status_parse_json((const char *)body, blen, &st) == 0) {
            upstream_text_copy(said, sizeof(said), (const uint8_t *)st.message, strlen(st.message));
        } else if (!is_protobuf(q->content_type)) {
            upstream_text_copy(said, sizeof(said), body, blen);
        }
    }
    if (status >= 300 && status <= 399) {
        upstream_set_message(
            r, "HTTP %ld: redirects are not followed; point the endpoint at the final URL", status);
    } else {
        upstream_set_message(r, "HTTP %ld%s%s", status, said[0] ? ": " : "", said);
    }
    buf_cleanup(&scratch);
}

static const struct upstream_proto proto_http = {
    .kind = "otlp_http",
    .grpc = false,
    .url = http_url,
    .headers = http_headers,
    .finish = http_finish,
};

int exporter_otlp_http_new(struct exporter **out, struct uv_loop_s *loop,
                           const struct otlp_exporter_options *o)
{
    return upstream_exporter_new(out, loop, o, &proto_http);
}
