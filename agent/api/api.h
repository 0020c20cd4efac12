/*
 * The query API (DESIGN.md section 6; docs/api.md): REST, SQL, OTLP/HTTP ingest and the live
 * WebSocket stream under /api/otel/v1 on its own listener, over the sink behind a sink exporter.
 *
 * Threads: the server lives on the daemon's loop thread. Everything that blocks (the sink's
 * query(), stats() and flush()) runs on the API's own small worker pool, never on the loop and
 * never on libuv's thread pool (the pipeline compresses there); answers come back to the loop
 * through a uv_async_t.
 */
#ifndef DLOTEL_API_H
#define DLOTEL_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

struct api_server;
struct exporter;

struct api_options {
    const char *host; /* "localhost" binds both loopback addresses. Required. */
    uint16_t port;    /* 0 picks a free port (api_server_port()). */
    /* Auth (api_auth.h). Both secrets NULL: auth off, every caller is admin. */
    const char *jwt_secret;
    const char *jwt_issuer;
    const char *jwt_algorithm; /* NULL: "HS256". */
    const char *iam_api_key;
    const char *cors_origin; /* Access-Control-Allow-Origin; NULL: "*". */
    /* Serve a non-loopback host with auth off. */
    bool allow_unauthenticated;
    /* POST /otlp/v1/ needs a token when auth is on. */
    bool ingest_auth;
    /* The sink exporter whose store is queried and into which /otlp/v1/ ingests. Borrowed:
     * it must outlive the server (free the server before the exporter). */
    struct exporter *sink;
    uint64_t max_body;         /* Request bodies, before and after decompression; 0: 20 MiB. */
    uint32_t workers;          /* Blocking-call threads; 0: 2. */
    uint64_t query_timeout_ms; /* Per query; 0: 30 s. */
};

/*
 * Starts the API on |loop|. Copies |o| (the secrets into the auth object only).
 *
 * Returns 0; DLOTEL_ERR_CONFIG (a non-loopback host with auth off and no
 * allow_unauthenticated; a bad jwt_algorithm), DLOTEL_ERR_INVALID_ARG (no sink store behind
 * o->sink, an unresolvable host), DLOTEL_ERR_ADDR_IN_USE, DLOTEL_ERR_IO, DLOTEL_ERR_NOMEM; with a
 * sentence in |detail| (may be NULL) that names the setting to change. |*out| untouched on
 * failure.
 */
int api_server_new(struct api_server **out, uv_loop_t *loop, const struct api_options *o,
                   char *detail, size_t detail_len);

/* The bound port. */
uint16_t api_server_port(const struct api_server *srv);

/*
 * Stops listening, closes every connection and WebSocket, waits for the queries running on the
 * worker threads (each is bounded by its timeout) and frees the server. Ingest requests still
 * waiting for the sink keep a little memory until the sink answers them, which destroying the
 * sink exporter does. Call it before the sink exporter is destroyed; keep running the loop
 * afterwards so that libuv can close the handles. NULL is a no-op.
 */
void api_server_free(struct api_server *srv);

#endif
