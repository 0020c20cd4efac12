/*
 * Bytes after a valid HTTP/2 client preface into an h2c connection (nghttp2 server session,
 * header limits, stream lifetimes, trailers). The first byte steers the harness
 * (agent/net/http_conn_fuzz.c); the rest are frames, starting with the client's SETTINGS.
 */
#include <stdint.h>

#include "net/http_conn_fuzz.h"

static const uint8_t preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    http_conn_fuzz_run(data, size, preface, sizeof(preface) - 1, true, true);
    return 0;
}
