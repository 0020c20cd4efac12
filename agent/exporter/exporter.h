/*
 * An exporter is a table of callbacks plus its own state. One file per exporter kind.
 */
#ifndef DLOTEL_EXPORTER_H
#define DLOTEL_EXPORTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/compress.h"
#include "otlp/otlp.h"

struct exporter;

/* What became of one upstream export attempt. The pipeline's retry logic acts on it. */
enum export_outcome {
    /* Delivered: any 2xx, or grpc-status 0. Some items may have been rejected (rejected_items). */
    EXPORT_OK = 0,
    /* Transient: HTTP 429/502/503/504, the retryable gRPC codes (RESOURCE_EXHAUSTED only with
     * RetryInfo), timeouts, refused or reset connections, DNS failures. Try again later. */
    EXPORT_RETRY = 1,
    /* Will never succeed as sent: HTTP 400/413 and other 4xx/5xx, other gRPC codes. Dropped and
     * counted. */
    EXPORT_PERMANENT = 2,
};

struct export_result {
    enum export_outcome outcome;
    uint64_t retry_after_ns; /* From Retry-After or RetryInfo; 0 when the server gave none. */
    uint64_t rejected_items; /* partial_success.rejected_*; counted, never retried. */
    int http_status;         /* 0 when no HTTP response arrived. */
    int grpc_status;         /* -1 when not gRPC or no status arrived. */
    char message[256];       /* What the server or the transport said, for logs and status. */
};

/* Called once per send(), on the loop thread, never from inside send() itself. */
typedef void (*export_done_fn)(void *userdata, const struct export_result *r);

struct exporter_ops {
    const char *kind; /* "debug", "file", ... */
    /*
     * Takes one validated request for signal |s|; |pb| is borrowed for the call. Returns 0 or a
     * dlotel_error.
     */
    int (*export)(struct exporter *e, enum otlp_signal s, const uint8_t *pb, size_t len,
                  const struct otlp_counts *counts);
    /*
     * Upstream exporters (otlp_http, otlp_grpc) set |send| instead of |export|: the pipeline
     * queues and batches for them, then sends one batch at a time through here. |pb| is one
     * encoded Export*ServiceRequest of |items| items, owned by the caller and valid until |done|
     * runs. Returns 0 (|done| will be called exactly once, also when the exporter is destroyed
     * with the send in flight: then from destroy or after it, with EXPORT_RETRY) or a
     * dlotel_error (it will not).
     */
    int (*send)(struct exporter *e, enum otlp_signal s, const uint8_t *pb, size_t len,
                uint64_t items, export_done_fn done, void *userdata);
    /*
     * Exporters that store (sink) set |export_async| besides |export|: the request is copied
     * and |done| is called later, on the loop thread, once it is durable (outcome EXPORT_OK),
     * refused for good (EXPORT_PERMANENT: it does not decode) or not stored for now
     * (EXPORT_RETRY: the store failed or its queue is full), with a message. A pipeline that
     * awaits |done| before answering the client gives the client a 200 only for durable data.
     * Returns 0 (|done| will be called, never from inside this call) or a dlotel_error (it
     * will not). |counts| may be NULL.
     */
    int (*export_async)(struct exporter *e, enum otlp_signal s, const uint8_t *pb, size_t len,
                        const struct otlp_counts *counts, export_done_fn done, void *userdata);
    void (*flush)(struct exporter *e);
    void (*destroy)(struct exporter *e); /* Frees the exporter's own state and |e|. */
};

struct exporter {
    const struct exporter_ops *ops;
    int refs; /* Owned by the pipeline; one per signal it is attached to. */
};

enum debug_verbosity {
    DEBUG_SUMMARY = 0,  /* One line per request: signal, resources, items, bytes. */
    DEBUG_DETAILED = 1, /* The whole request as OTLP/JSON. */
};

/* The debug exporter: writes to the log. Returns 0 or DLOTEL_ERR_NOMEM. */
int exporter_debug_new(struct exporter **out, enum debug_verbosity v);

/*
 * The file exporter: appends each request as one line of OTLP/JSON to |path| (created 0600 if
 * missing), flushed after each line so that a reader sees whole lines. Returns 0, DLOTEL_ERR_IO
 * (cannot open) or DLOTEL_ERR_NOMEM.
 */
int exporter_file_new(struct exporter **out, const char *path);

/*
 * The upstream exporters (otlp_http, otlp_grpc): OTLP to a collector over libcurl's multi
 * interface on the caller's libuv loop. They set ops->send (the pipeline batches and retries for
 * them; ops->export is NULL). Each send() is one attempt, classified into a struct
 * export_result by the OTLP specification's rules (exporter/upstream.h, upstream_classify()).
 */

struct uv_loop_s; /* uv_loop_t, without making every includer include uv.h. */

/* One request header (gRPC metadata for otlp_grpc, sent lowercase). */
struct otlp_exporter_header {
    const char *name;
    const char *value; /* Never logged: it is often a credential (Authorization: Bearer ...). */
};

/* Everything an upstream exporter needs; the constructors copy it all. */
struct otlp_exporter_options {
    const char *name; /* The exporter's name in the configuration, for logs; NULL: "default". */
    /*
     * http:// or https://. otlp_http: a base URL, "/v1/traces", "/v1/metrics" or "/v1/logs" is
     * appended (a trailing slash is dropped first). otlp_grpc: scheme, host and port; the
     * service path "/opentelemetry.proto.collector.<signal>.v1.<Service>/Export" is appended.
     */
    const char *endpoint;
    const struct otlp_exporter_header *headers; /* Names must be tokens, values one line. */
    size_t n_headers;
    enum codec compression;      /* CODEC_GZIP, CODEC_ZSTD or CODEC_NONE. */
    uint64_t request_timeout_ns; /* One attempt, connect to last byte; 0 means 10 s. */
    const char *ca_file;         /* PEM bundle that replaces the system CAs; NULL: system. */
    const char *cert_file;       /* Client certificate (PEM) for mutual TLS; NULL: none. */
    const char *key_file;        /* Its private key (PEM); NULL: none. */
    bool insecure_skip_verify;   /* Accept any server certificate and host name. */
};

/*
 * Creates an otlp_http exporter on |loop|: POST <endpoint>/v1/<signal> with
 * application/x-protobuf, Content-Encoding per |o->compression| (compressed on libuv's thread
 * pool, off the loop), HTTP/2 when a TLS server offers it through ALPN and HTTP/1.1 otherwise,
 * connections shared by every exporter on the loop, proxies from http_proxy / https_proxy /
 * no_proxy as libcurl reads them. All of send()'s work and its |done| run on |loop|'s thread.
 *
 * Every send() that returned 0 is answered exactly once. destroy() answers the sends still in
 * flight with EXPORT_RETRY "exporter closed": a transfer at once, from inside destroy(); a send
 * whose body is still being compressed on the thread pool later, from the loop, when the pool has
 * finished with |pb| (so |pb| must stay valid until then, as for any send). The exporter's memory
 * still in use by the thread pool or libuv handles goes once the loop has run again.
 *
 * Returns 0; DLOTEL_ERR_INVALID_ARG (no or non-http(s) endpoint, a header name that is not a
 * token or a value with CR, LF or NUL, an unknown compression); DLOTEL_ERR_NOMEM;
 * DLOTEL_ERR_INTERNAL (libcurl could not be initialised). |*out| is untouched on failure.
 */
int exporter_otlp_http_new(struct exporter **out, struct uv_loop_s *loop,
                           const struct otlp_exporter_options *o);

/*
 * Creates an otlp_grpc exporter on |loop|: unary calls to the OTLP collector services over
 * HTTP/2 (prior knowledge for http://, ALPN h2 for https://), one length-prefixed message per
 * call, grpc-encoding per |o->compression|, grpc-timeout from |o->request_timeout_ns|, headers as
 * metadata. Otherwise as exporter_otlp_http_new(), with the same return codes.
 */
int exporter_otlp_grpc_new(struct exporter **out, struct uv_loop_s *loop,
                           const struct otlp_exporter_options *o);

/*
 * The sink exporter (agent/exporter/sink.c): stores requests locally through the DuckDB sink
 * module (agent/sink/sink_module.h), which it loads with dlopen from |module_path| (NULL: the
 * loader's search, sink_loader_find()), so that a process without a sink never maps libduckdb.
 * |o| (fill it with sink_options_init() from sink/sink_module.h) is copied; o->log NULL sends the
 * module's log lines to this process's log as component "sink".
 *
 * Ops: export_async (the durable path: |done| on |loop| after the group commit), export (the
 * same, waiting on the calling thread for the commit, for pipelines that only call export), and
 * flush (asks the module to write the hot rows to Parquet soon, without blocking). Every
 * export_async that returned 0 is answered exactly once: destroy() stores everything queued,
 * answers what is still pending from inside destroy() with its real outcome, flushes to Parquet,
 * closes DuckDB and unloads the module. Memory in use by the libuv handle goes once |loop| has
 * run again.
 *
 * Returns 0; DLOTEL_ERR_MODULE (the module cannot be loaded), or open()'s codes
 * (DLOTEL_ERR_INVALID_ARG, DLOTEL_ERR_IO, ...), with a sentence in |detail| (size
 * |detail_len|, may be NULL); DLOTEL_ERR_NOMEM. |*out| is untouched on failure.
 */
struct sink_options;
struct sink;
struct sink_module_api;
int exporter_sink_new(struct exporter **out, struct uv_loop_s *loop, const struct sink_options *o,
                      const char *module_path, char *detail, size_t detail_len);

/*
 * The store behind a sink exporter, for the query API (query, stats, flush, maintain through
 * |*api|): valid until the exporter is destroyed. Returns NULL when |e| is not a sink exporter.
 */
struct sink *exporter_sink_store(struct exporter *e, const struct sink_module_api **api);

/*
 * Stores one request like export_async, with |user_uid| (when not NULL) as every row's user_uid
 * instead of the resource attribute datalayer.user_uid: for the query API's ingest, which knows
 * the caller. |signal| is SINK_SIGNAL_* (the same numbering as enum otlp_signal). |pb| and
 * |user_uid| are copied. |done| runs later on the loop thread, exactly once; EXPORT_OK means
 * durable. Returns 0, or without calling |done|: DLOTEL_ERR_INVALID_ARG (|e| not a sink
 * exporter, NULL |done|, bad signal), DLOTEL_ERR_FULL (the module's queue is full: shed),
 * DLOTEL_ERR_CLOSED, DLOTEL_ERR_NOMEM.
 */
int exporter_sink_append(struct exporter *e, int signal, const uint8_t *pb, size_t len,
                         const char *user_uid, export_done_fn done, void *userdata);

/*
 * Called on the loop thread for every request the sink committed through export_async or
 * exporter_sink_append (not the synchronous export op), just before that request's |done|.
 * |pb| and |user_uid| (the append's override, NULL when none) are borrowed for the call.
 */
typedef void (*exporter_sink_tap_fn)(void *userdata, int signal, const uint8_t *pb, size_t len,
                                     const char *user_uid);

/*
 * Asked on the loop thread when a request of |signal| is appended: true when the tap will want
 * it once committed. Only then are its bytes kept (a copy per request), so that ingest with no
 * one listening costs nothing extra.
 */
typedef bool (*exporter_sink_wants_fn)(void *userdata, int signal);

/*
 * Sets (|fn| NULL: clears) the tap of a sink exporter; a no-op when |e| is not one. Loop thread.
 * |wants| (NULL: every request) filters at append time; requests appended while no tap was set,
 * or that |wants| declined, are not tapped (their bytes were not kept). The tap also runs from
 * destroy() for requests finished then: clear it before freeing its |userdata|, or destroy the
 * exporter first.
 */
void exporter_sink_set_tap(struct exporter *e, exporter_sink_tap_fn fn,
                           exporter_sink_wants_fn wants, void *userdata);

#endif
