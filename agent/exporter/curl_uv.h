/*
 * libcurl's multi interface driven by a libuv loop: curl says which sockets to watch
 * (CURLMOPT_SOCKETFUNCTION -> uv_poll_t) and when to wake it (CURLMOPT_TIMERFUNCTION ->
 * uv_timer_t); the loop calls curl_multi_socket_action() back; finished transfers are read with
 * curl_multi_info_read() and handed to their owners.
 *
 * There is one multi handle per loop, shared by every exporter on it, because curl's connection
 * cache (and HTTP/2 multiplexing) lives in the multi handle: two exporters to the same collector,
 * or the three signals of one exporter, then share connections.
 *
 * Everything here runs on the loop's thread, except curl_uv_acquire()/curl_uv_release(), which
 * may be called from any thread for different loops.
 */
#ifndef DLOTEL_EXPORTER_CURL_UV_H
#define DLOTEL_EXPORTER_CURL_UV_H

#include <curl/curl.h>
#include <uv.h>

struct curl_uv;
struct curl_uv_xfer;

/* Called once when a transfer ends, from a loop callback (never from inside curl_uv_add()). */
typedef void (*curl_uv_done_fn)(struct curl_uv_xfer *x, CURLcode result);

/*
 * One transfer, embedded in its owner's request. The owner sets |easy| and |done| and keeps the
 * struct alive until |done| runs or curl_uv_cancel() returns. curl_uv sets the easy handle's
 * CURLOPT_PRIVATE (owners must not) and CURLOPT_SHARE (the loop's TLS session cache); the owner
 * must curl_easy_cleanup() its handle before it releases its reference to the multi.
 */
struct curl_uv_xfer {
    CURL *easy;
    curl_uv_done_fn done;
    /* Internal: the multi the transfer is on, NULL when not running. */
    struct curl_uv *cu_;
};

/*
 * Returns the shared multi handle of |loop| with a new reference, creating it (and initialising
 * libcurl once per process) if needed. Returns 0, DLOTEL_ERR_NOMEM, or DLOTEL_ERR_INTERNAL when
 * libcurl cannot be initialised. |*out| is untouched on failure.
 */
int curl_uv_acquire(struct curl_uv **out, uv_loop_t *loop);

/*
 * Drops a reference. The last one closes the connections and the handles; the memory goes once
 * libuv has closed them, so the loop must run afterwards (as it must for any handle). Transfers
 * still running at that point are a bug in the owner. NULL is a no-op.
 */
void curl_uv_release(struct curl_uv *cu);

/*
 * Starts |x|. Returns 0 (|x->done| will be called) or DLOTEL_ERR_INTERNAL (curl refused the
 * handle; it will not).
 */
int curl_uv_add(struct curl_uv *cu, struct curl_uv_xfer *x);

/* Stops a running transfer without calling its |done|. A transfer not running is left alone. */
void curl_uv_cancel(struct curl_uv_xfer *x);

#endif
