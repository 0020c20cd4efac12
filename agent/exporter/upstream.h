/*
 * What the upstream exporters (otlp_http, otlp_grpc) read back from a server, and the one
 * function that turns an attempt's result into an export_outcome (DESIGN.md section 4).
 *
 * Everything here is pure: no sockets, no curl handles, no loop. Every parser takes untrusted
 * bytes from the network, never reads past |len|, never allocates past a caller's struct buf
 * limit, and is fuzzed by tests/fuzz/fuzz_upstream_response.c.
 */
#ifndef DLOTEL_EXPORTER_UPSTREAM_H
#define DLOTEL_EXPORTER_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "exporter/exporter.h"
#include "otlp/otlp.h"

/*
 * The longest wait a server can ask for with Retry-After or RetryInfo. A buggy or hostile server
 * saying "come back in ten years" would otherwise stall the sender for good; an hour is longer
 * than any real throttling window.
 */
#define UPSTREAM_RETRY_AFTER_MAX_NS ((uint64_t)3600 * 1000000000u)

/* gRPC status codes (the numbers of google.rpc.Code), as the exporters read them. */
enum upstream_grpc_code {
    UPSTREAM_GRPC_OK = 0,
    UPSTREAM_GRPC_CANCELLED = 1,
    UPSTREAM_GRPC_UNKNOWN = 2,
    UPSTREAM_GRPC_INVALID_ARGUMENT = 3,
    UPSTREAM_GRPC_DEADLINE_EXCEEDED = 4,
    UPSTREAM_GRPC_NOT_FOUND = 5,
    UPSTREAM_GRPC_ALREADY_EXISTS = 6,
    UPSTREAM_GRPC_PERMISSION_DENIED = 7,
    UPSTREAM_GRPC_RESOURCE_EXHAUSTED = 8,
    UPSTREAM_GRPC_FAILED_PRECONDITION = 9,
    UPSTREAM_GRPC_ABORTED = 10,
    UPSTREAM_GRPC_OUT_OF_RANGE = 11,
    UPSTREAM_GRPC_UNIMPLEMENTED = 12,
    UPSTREAM_GRPC_INTERNAL = 13,
    UPSTREAM_GRPC_UNAVAILABLE = 14,
    UPSTREAM_GRPC_DATA_LOSS = 15,
    UPSTREAM_GRPC_UNAUTHENTICATED = 16,
};

/* "UNAVAILABLE", ...; "UNKNOWN_CODE" for a number outside 0..16. Never NULL. */
const char *upstream_grpc_code_name(int code);

/*
 * gRPC's HTTP-to-gRPC status mapping (doc/http-grpc-status-mapping.md), used when a gRPC call
 * gets an HTTP status other than 200: 400 INTERNAL, 401 UNAUTHENTICATED, 403 PERMISSION_DENIED,
 * 404 UNIMPLEMENTED, 429/502/503/504 UNAVAILABLE, anything else UNKNOWN.
 */
int upstream_grpc_from_http(int http_status);

/* Everything the classification looks at, for one attempt. */
struct upstream_reply {
    bool grpc;       /* otlp_grpc rather than otlp_http. */
    int curl_code;   /* A CURLcode; 0 (CURLE_OK) when a whole response arrived. */
    int http_status; /* 0 when no response arrived. */
    int grpc_status; /* From grpc-status; -1 when none arrived. */
    bool retry_info; /* grpc-status-details-bin carried a google.rpc.RetryInfo. */
};

/*
 * The one place where a transport error, an HTTP status or a gRPC status becomes an outcome
 * (STYLE.md "Errors"). The OTLP specification's rules, exactly:
 *
 *   transport (curl_code != 0): RETRY for everything that can heal by itself - refused or reset
 *     connections, DNS failures, timeouts, send/receive errors, HTTP/2 stream errors, TLS
 *     handshake failures and a server certificate that does not verify (see below); PERMANENT
 *     for problems with our own side that only a person can fix - a CA, client certificate or
 *     key file that is missing or unreadable, a malformed URL, an unsupported protocol.
 *   otlp_http: any 2xx OK; 429, 502, 503, 504 RETRY; every other status PERMANENT (400 and 413
 *     explicitly, and 3xx: redirects are not followed).
 *   otlp_grpc: an HTTP status other than 200 is first mapped with upstream_grpc_from_http();
 *     a 200 without grpc-status is PERMANENT (the server is not speaking gRPC); then code 0 OK;
 *     CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, UNAVAILABLE, DATA_LOSS RETRY;
 *     RESOURCE_EXHAUSTED RETRY only with RetryInfo; everything else PERMANENT.
 *
 * Why a certificate that fails verification is RETRY: the exporters sit in front of a disk
 * queue. PERMANENT would drop every batch until someone fixes the certificate; RETRY keeps the
 * data queued (bounded by the disk cap) and delivers it as soon as the server's certificate is
 * renewed, without restarting the agent. The OpenTelemetry Collector's exporters behave the
 * same. The exporters log such failures at error level on every attempt, so nobody misses them.
 */
enum export_outcome upstream_classify(const struct upstream_reply *r);

/* A short human phrase for a curl error: "timeout", "connection refused", ... Never NULL. */
const char *upstream_curl_category(int curl_code);

/*
 * True for the transport errors that a person must fix on our side or the server's (TLS
 * certificate and key problems); the exporters log these loudly.
 */
bool upstream_curl_is_tls_problem(int curl_code);

/*
 * Parses a Retry-After value (RFC 9110 10.2.3): delta-seconds, or an HTTP-date in any of the
 * three formats recipients must accept (IMF-fixdate, RFC 850, asctime), surrounded by optional
 * white space. |now_unix_ns| is the current wall-clock time, for dates.
 *
 * Returns 0 and sets |*out_ns| to the wait, clamped to [0, UPSTREAM_RETRY_AFTER_MAX_NS] (a date
 * in the past gives 0), or DLOTEL_ERR_BAD_INPUT (then |*out_ns| is untouched).
 */
int upstream_retry_after_parse(const char *v, size_t len, uint64_t now_unix_ns, uint64_t *out_ns);

/*
 * Parses an HTTP-date (any of the three formats) into seconds since the Unix epoch. Returns 0 or
 * DLOTEL_ERR_BAD_INPUT (wrong shape, a field out of range, a day the month does not have).
 */
int upstream_http_date_parse(const char *v, size_t len, int64_t *out_unix_s);

/*
 * Percent-decodes a grpc-message value and appends the bytes to |out|. As the gRPC spec asks, a
 * malformed escape is never an error: a '%' not followed by two hex digits is kept as it is.
 * Returns 0 or a buf error (the output is then cut at out->max).
 */
int upstream_grpc_message_decode(const char *v, size_t len, struct buf *out);

/*
 * Decodes standard base64 (RFC 4648 section 4), with or without '=' padding, as gRPC sends
 * binary ("-bin") header values. Appends to |out|. Returns 0, DLOTEL_ERR_BAD_INPUT (a character
 * outside the alphabet, misplaced padding, an impossible length, non-zero trailing bits), or a
 * buf error.
 */
int upstream_base64_decode(const char *v, size_t len, struct buf *out);

/* A google.rpc.Status as the exporters use it. */
struct upstream_rpc_status {
    int32_t code;
    char message[256];       /* Sanitised (see upstream_text_copy()), possibly cut short. */
    bool has_retry_info;     /* A details entry of type google.rpc.RetryInfo was found. */
    uint64_t retry_delay_ns; /* Its retry_delay, clamped to UPSTREAM_RETRY_AFTER_MAX_NS. */
};

/*
 * Parses an encoded google.rpc.Status { int32 code = 1; string message = 2;
 * repeated google.protobuf.Any details = 3; } and looks through the details for a
 * google.rpc.RetryInfo { google.protobuf.Duration retry_delay = 1; } (type URL ending in
 * "/google.rpc.RetryInfo"). Unknown fields are skipped as protobuf requires. A negative delay
 * counts as zero. Returns 0 or DLOTEL_ERR_BAD_INPUT.
 */
int upstream_rpc_status_parse(const uint8_t *p, size_t len, struct upstream_rpc_status *out);

/*
 * Parses a google.rpc.Status in its JSON form ({"code": 3, "message": "..."}, as OTLP/HTTP
 * servers answer JSON requests). Details are not looked at. Returns 0 or DLOTEL_ERR_BAD_INPUT.
 */
int upstream_rpc_status_parse_json(const char *p, size_t len, struct upstream_rpc_status *out);

/*
 * Parses a grpc-status-details-bin header value: base64, then a google.rpc.Status. |scratch|
 * (caller-initialised; its max bounds the decoded size) holds the decoded bytes and is emptied
 * first. Returns 0, DLOTEL_ERR_BAD_INPUT, or a buf error.
 */
int upstream_grpc_details_parse(const char *v, size_t len, struct buf *scratch,
                                struct upstream_rpc_status *out);

/* The partial_success of an Export*ServiceResponse. */
struct upstream_partial {
    bool present;      /* The response had a partial_success field. */
    uint64_t rejected; /* rejected_spans / rejected_data_points / rejected_log_records. */
    char message[256]; /* error_message, sanitised. */
};

/*
 * Parses an encoded Export{Trace,Metrics,Logs}ServiceResponse { partial_success = 1 {
 * int64 rejected_* = 1; string error_message = 2; } } (the layout is the same for the three
 * signals). An empty message is a full success. A negative count counts as zero; repeated
 * fields follow protobuf's last-one-wins rule. Returns 0 or DLOTEL_ERR_BAD_INPUT; |*out| is
 * always initialised.
 */
int upstream_partial_success_parse(const uint8_t *p, size_t len, struct upstream_partial *out);

/*
 * The same for an OTLP/JSON response: {"partialSuccess": {"rejectedSpans": "5",
 * "errorMessage": "..."}} with the count for |s| as a string or a number (proto field names are
 * accepted too). Returns 0 or DLOTEL_ERR_BAD_INPUT; |*out| is always initialised.
 */
int upstream_partial_success_parse_json(enum otlp_signal s, const char *p, size_t len,
                                        struct upstream_partial *out);

/*
 * Copies untrusted text for logs and status pages into |dst| (|cap| >= 1 bytes, always
 * NUL-terminated): control characters become spaces, invalid UTF-8 becomes '?', and a cut never
 * splits a character. Returns the number of bytes written, NUL excluded.
 */
size_t upstream_text_copy(char *dst, size_t cap, const uint8_t *src, size_t len);

#endif
