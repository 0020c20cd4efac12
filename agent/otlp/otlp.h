/*
 * OTLP: the schema, item counting and the JSON codec.
 *
 * Inside the agent a request always travels as encoded protobuf bytes (an Export*ServiceRequest):
 * JSON is decoded to protobuf at the receiver, and encoded back to JSON only by exporters that
 * write JSON. The generated protobuf-c types live in the headers that protobuf-c-compiler makes
 * from agent/otlp/proto/ (see otlp_pb.h).
 */
#ifndef DLOTEL_OTLP_H
#define DLOTEL_OTLP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/buf.h"

enum otlp_signal {
    OTLP_TRACES = 0,
    OTLP_METRICS = 1,
    OTLP_LOGS = 2,
};
#define OTLP_SIGNAL_COUNT 3

/* "traces", "metrics", "logs". */
const char *otlp_signal_name(enum otlp_signal s);

/* Parses "traces", "metrics" or "logs". Returns 0 or DLOTEL_ERR_NOT_FOUND. */
int otlp_signal_parse(const char *name, size_t len, enum otlp_signal *out);

/* What the scanner found in a request. */
struct otlp_counts {
    uint32_t resources; /* ResourceSpans / ResourceMetrics / ResourceLogs */
    uint32_t scopes;    /* ScopeSpans / ScopeMetrics / ScopeLogs */
    uint64_t items;     /* spans, metric data points, or log records */
};

/* Where and why a request was rejected; |message| is a static string. */
struct otlp_error {
    size_t offset;
    const char *message;
};

/*
 * Walks an encoded Export{Trace,Metrics,Logs}ServiceRequest without allocating: checks every tag,
 * wire type, length and nesting against the OTLP schema (unknown fields of a valid wire type are
 * skipped, as protobuf requires), checks that string fields are valid UTF-8, that trace ids are 16
 * bytes and span ids 8 (or empty), and counts items.
 *
 * Returns 0 and fills |counts|, or DLOTEL_ERR_BAD_INPUT and fills |err| (when not NULL).
 */
int otlp_scan(enum otlp_signal s, const uint8_t *data, size_t len, struct otlp_counts *counts,
              struct otlp_error *err);

/*
 * Decodes an OTLP/JSON request (the specification's JSON mapping: lowerCamelCase or proto field
 * names, hex trace and span ids, enums as integers or names, 64-bit integers as strings or
 * numbers, unknown fields ignored) and appends the equivalent protobuf encoding to |out|.
 * |arena| holds the intermediate message and is reset by the caller afterwards; its limit also
 * bounds the JSON tree built while parsing (estimated from the text before parsing starts).
 *
 * Returns 0; DLOTEL_ERR_BAD_INPUT with a message in |errbuf| (at most |errlen| bytes, NUL
 * terminated) for invalid JSON or a value of the wrong type; DLOTEL_ERR_TOO_LARGE when |out| or
 * |arena| reaches its limit; DLOTEL_ERR_NOMEM.
 */
int otlp_json_to_pb(enum otlp_signal s, const char *json, size_t len, struct arena *arena,
                    struct buf *out, char *errbuf, size_t errlen);

/*
 * Encodes a protobuf request as OTLP/JSON (lowerCamelCase, hex ids, enums as integers, 64-bit
 * integers as strings, default values omitted) and appends it to |out| on one line with no
 * trailing newline. |arena| holds the decoded message.
 *
 * Returns 0, DLOTEL_ERR_BAD_INPUT when |pb| does not decode, DLOTEL_ERR_TOO_LARGE, or
 * DLOTEL_ERR_NOMEM.
 */
int otlp_pb_to_json(enum otlp_signal s, const uint8_t *pb, size_t len, struct arena *arena,
                    struct buf *out);

/*
 * Encodes an Export*ServiceResponse. With |rejected| == 0 and |message| NULL this is the empty
 * response (zero bytes as protobuf, "{}" as JSON); otherwise partial_success carries them.
 * Returns 0 or a buf error.
 */
int otlp_response_encode(enum otlp_signal s, uint64_t rejected, const char *message, bool json,
                         struct buf *out);

/*
 * Encodes a google.rpc.Status {code, message} as protobuf or JSON ({"code":3,"message":"..."}).
 * Returns 0 or a buf error.
 */
int otlp_status_encode(int32_t code, const char *message, bool json, struct buf *out);

/*
 * Appends |n| bytes of |s| as a quoted JSON string: quotes, backslashes and control characters
 * escaped, and every byte that is not part of well-formed UTF-8 replaced by U+FFFD, so the
 * output is valid JSON whatever the input. Returns 0 or a buf error.
 */
int otlp_json_put_string(struct buf *b, const char *s, size_t n);

/* Appends |v| as a protobuf varint (1 to 10 bytes). Returns 0 or a buf error. */
int otlp_put_varint(struct buf *b, uint64_t v);

/* The bytes otlp_put_varint() writes for |v|. */
size_t otlp_varint_size(uint64_t v);

#endif
