/*
 * The machinery otlp_http and otlp_grpc share: one exporter object holding the options, one
 * request per send() that compresses the body on the thread pool, runs one curl transfer on the
 * loop's shared multi handle (curl_uv.h), captures the response within limits, and hands the
 * finished attempt to the protocol's |finish| to classify. Internal to this room.
 */
#ifndef DLOTEL_EXPORTER_UPSTREAM_SEND_H
#define DLOTEL_EXPORTER_UPSTREAM_SEND_H

#include <stdbool.h>
#include <stdint.h>

#include <curl/curl.h>
#include <uv.h>

#include "core/buf.h"
#include "core/compress.h"
#include "exporter/curl_uv.h"
#include "exporter/exporter.h"

/* The response body kept for parsing; the rest is read and thrown away. */
#define UPSTREAM_MAX_RESPONSE (64u * 1024u)
/* grpc-message (before decoding) and grpc-status-details-bin (base64) kept. */
#define UPSTREAM_MAX_GRPC_MESSAGE (4u * 1024u)
#define UPSTREAM_MAX_GRPC_DETAILS (16u * 1024u)

struct upstream_req;

/* What differs between otlp_http and otlp_grpc. */
struct upstream_proto {
    const char *kind; /* "otlp_http", "otlp_grpc": ops->kind and the log component prefix. */
    bool grpc;        /* Length-prefixed body, HTTP/2 only, CONNECT through proxies. */
    /* Appends the full URL for signal |s| to |out| (NUL-terminated). Returns 0 or a buf error. */
    int (*url)(const char *endpoint, enum otlp_signal s, struct buf *out);
    /*
     * Adds the protocol's fixed request headers (content type, encodings, timeouts) to |l|.
     * Returns the new list, or NULL when out of memory (|l| is then freed).
     */
    struct curl_slist *(*headers)(struct curl_slist *l, enum codec c, uint64_t timeout_ms);
    /* Fills |r| (pre-set to a clean RETRY) from the finished transfer. Loop thread. */
    void (*finish)(struct upstream_req *q, CURLcode rc, struct export_result *r);
};

struct upstream;

/*
 * One send(): lives from send() until its |done| has been called, which happens exactly once:
 * with the attempt's result, or with EXPORT_RETRY "exporter closed" when the exporter is
 * destroyed first (at once for a transfer, after the thread pool returns for a compression).
 */
struct upstream_req {
    struct upstream *u;
    struct upstream_req *prev, *next; /* The exporter's requests in flight. */
    enum otlp_signal signal;
    const uint8_t *pb; /* Borrowed from the caller until |done|. */
    size_t len;
    uint64_t items;
    export_done_fn done;
    void *userdata;

    /* The body on the wire: |prefix| (gRPC's 5 bytes, or none), then |body|. */
    uv_work_t work;
    bool in_work; /* Compression is queued or running on the thread pool. */
    int work_rv;
    struct buf zbody; /* The compressed message, when there is compression. */
    uint8_t prefix[5];
    size_t prefix_len;
    const uint8_t *body;
    size_t body_len;
    size_t sent; /* Read position over prefix + body (curl may rewind). */

    struct curl_uv_xfer xfer;
    char errbuf[CURL_ERROR_SIZE];

    /* The response, as far as the limits let it in. Header values are NUL-terminated. */
    struct buf resp;
    bool resp_truncated;
    char content_type[128];
    char content_encoding[32];
    char retry_after[64];
    char grpc_status[16]; /* Empty: none arrived. */
    char grpc_encoding[32];
    struct buf grpc_message;
    struct buf grpc_details;
};

/*
 * Shared constructor: validates and copies |o|, builds the URLs and the header list, takes the
 * loop's multi handle. Returns as exporter_otlp_http_new().
 */
int upstream_exporter_new(struct exporter **out, uv_loop_t *loop,
                          const struct otlp_exporter_options *o,
                          const struct upstream_proto *proto);

/* Formats |r->message|, cut to fit: a long server message is still worth its first part. */
void upstream_set_message(struct export_result *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
