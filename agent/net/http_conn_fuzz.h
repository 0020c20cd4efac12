/* The fuzz harness for struct http_conn (http_conn_fuzz.c); only the fuzz targets link it. */
#ifndef DLOTEL_NET_HTTP_CONN_FUZZ_H
#define DLOTEL_NET_HTTP_CONN_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/http_conn.h"

/*
 * Feeds |prefix| (may be empty) and then |data| after its first, steering byte into a new
 * connection with the given protocols enabled, answering every request, then frees it.
 */
void http_conn_fuzz_run(const uint8_t *data, size_t size, const uint8_t *prefix, size_t prefix_len,
                        bool http1, bool http2);

#endif
