/*
 * The WebSocket opening handshake (RFC 6455 section 4.2.1 and 4.2.2).
 */
#include "api/api_ws.h"

#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void base64(const unsigned char *p, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16;
        size_t left = n - i;
        if (left > 1) {
            v |= (unsigned)p[i + 1] << 8;
        }
        if (left > 2) {
            v |= p[i + 2];
        }
        out[o++] = b64[(v >> 18) & 63];
        out[o++] = b64[(v >> 12) & 63];
        out[o++] = left > 1 ? b64[(v >> 6) & 63] : '=';
        out[o++] = left > 2 ? b64[v & 63] : '=';
    }
    out[o] = '\0';
}

bool api_ws_header_has_token(const char *list, const char *token)
{
    if (list == NULL) {
        return false;
    }
    size_t tl = strlen(token);
    const char *p = list;
    while (*p != '\0') {
        while (*p == ' ' || *p == '\t' || *p == ',') {
            p++;
        }
        const char *start = p;
        while (*p != '\0' && *p != ',') {
            p++;
        }
        const char *end = p;
        while (end > start && (end[-1] == ' ' || end[-1] == '\t')) {
            end--;
        }
        if ((size_t)(end - start) == tl && strncasecmp(start, token, tl) == 0) {
            return true;
        }
    }
    return false;
}

/* A key is base64 of 16 bytes: 22 characters of the alphabet and "==". */
static bool key_valid(const char *k, size_t n)
{
    if (n != 24 || k[22] != '=' || k[23] != '=') {
        return false;
    }
    for (size_t i = 0; i < 22; i++) {
        if (strchr(b64, k[i]) == NULL || k[i] == '\0') {
            return false;
        }
    }
    /* The last character before the padding carries only 2 bits: its low 4 must be zero. */
    return ((strchr(b64, k[21]) - b64) & 15) == 0;
}

int api_ws_accept_key(const char *key, size_t len, char accept[API_WS_ACCEPT_LEN])
{
    char in[64 + sizeof(WS_GUID)];
    if (len > 64) {
        return -1;
    }
    memcpy(in, key, len);
    memcpy(in + len, WS_GUID, sizeof(WS_GUID) - 1);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(in, len + sizeof(WS_GUID) - 1, md, &mdlen, EVP_sha1(), NULL) != 1 ||
        mdlen != 20) {
        return -1;
    }
    base64(md, 20, accept);
    return 0;
}

int api_ws_check_handshake(const struct http_request *req, char accept[API_WS_ACCEPT_LEN],
                           const char **why)
{
    if (req->version != 11) {
        *why = req->version == 20
                   ? "WebSocket needs HTTP/1.1 (RFC 6455); this request came over HTTP/2"
                   : "WebSocket needs HTTP/1.1 (RFC 6455)";
        return 426;
    }
    if (strcmp(req->method, "GET") != 0) {
        *why = "the WebSocket handshake is a GET request";
        return 405;
    }
    if (!api_ws_header_has_token(http_request_header(req, "upgrade"), "websocket")) {
        *why = "this endpoint is a WebSocket: send Upgrade: websocket";
        return 426;
    }
    if (!api_ws_header_has_token(http_request_header(req, "connection"), "upgrade")) {
        *why = "the WebSocket handshake needs Connection: Upgrade";
        return 400;
    }
    const char *ver = http_request_header(req, "sec-websocket-version");
    if (ver == NULL || strcmp(ver, "13") != 0) {
        *why = "only WebSocket version 13 is supported";
        return 426;
    }
    const char *key = http_request_header(req, "sec-websocket-key");
    if (key == NULL) {
        *why = "Sec-WebSocket-Key is missing";
        return 400;
    }
    while (*key == ' ' || *key == '\t') {
        key++;
    }
    size_t n = strlen(key);
    while (n > 0 && (key[n - 1] == ' ' || key[n - 1] == '\t')) {
        n--;
    }
    if (!key_valid(key, n)) {
        *why = "Sec-WebSocket-Key is not base64 of 16 bytes";
        return 400;
    }
    if (api_ws_accept_key(key, n, accept) != 0) {
        *why = "cannot compute the handshake";
        return 500;
    }
    return 0;
}
