/*
 * Raw bytes into an HTTP/1.1 connection (llhttp strict, keep-alive, pipelining, limits). The
 * first byte steers the harness (agent/net/http_conn_fuzz.c). When its bit 4 is set the listener
 * also accepts HTTP/2, so protocol detection runs first.
 */
#include <stdint.h>

#include "net/http_conn_fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bool detect = size > 0 && (data[0] & 0x10) != 0;
    http_conn_fuzz_run(data, size, NULL, 0, true, detect);
    return 0;
}
