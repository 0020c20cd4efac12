/*
 * The WebSocket opening handshake of RFC 6455 section 4.2, server side: checks the client's
 * request and computes Sec-WebSocket-Accept. The framing itself is wslay's (api_stream.c).
 */
#ifndef DLOTEL_API_WS_H
#define DLOTEL_API_WS_H

#include <stdbool.h>
#include <stddef.h>

#include "net/http.h"

/* Sec-WebSocket-Accept is base64 of a SHA-1: 28 characters and the NUL. */
#define API_WS_ACCEPT_LEN 29

/*
 * Checks |req| as a WebSocket upgrade. Returns 0 and writes the Sec-WebSocket-Accept value to
 * |accept|; or the HTTP status to answer instead: 426 (HTTP/2, no "Upgrade: websocket" such as
 * a plain GET, or a Sec-WebSocket-Version other than 13: the answer then carries
 * "Upgrade: websocket" and "Sec-WebSocket-Version: 13"), 405 (not GET), 400 (Connection without
 * "upgrade", Sec-WebSocket-Key missing or malformed), 500 (SHA-1 unavailable). |why| (static
 * text) says which.
 */
int api_ws_check_handshake(const struct http_request *req, char accept[API_WS_ACCEPT_LEN],
                           const char **why);

/* Whether the comma-separated header value |list| contains |token| (case-insensitive). */
bool api_ws_header_has_token(const char *list, const char *token);

/* Sec-WebSocket-Accept for |key| (as sent, spaces trimmed). Returns 0 or -1. */
int api_ws_accept_key(const char *key, size_t len, char accept[API_WS_ACCEPT_LEN]);

#endif
