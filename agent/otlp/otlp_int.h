/*
 * Internal to the otlp room: helpers shared by its source files.
 */
#ifndef DLOTEL_OTLP_INT_H
#define DLOTEL_OTLP_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

/*
 * Returns true when |s| is well-formed UTF-8 (no overlong forms, no surrogates, nothing above
 * U+10FFFF), the rule protobuf and JSON both apply to strings. ASCII runs go 8 bytes at a time.
 */
bool otlp_utf8_valid(const uint8_t *s, size_t n);

/*
 * Returns the length (2 to 4) of the well-formed multi-byte UTF-8 sequence at |s|, or 0 when
 * the bytes there are not one. |left| is the number of bytes available.
 */
size_t otlp_utf8_seq(const uint8_t *s, size_t left);

/*
 * Appends |n| bytes of |s| as a quoted JSON string: quotes, backslashes and control characters
 * escaped, and every byte that is not part of well-formed UTF-8 replaced by U+FFFD, so the
 * output is valid JSON whatever the input. Returns 0 or a buf error.
 */
int otlp_json_put_string(struct buf *b, const char *s, size_t n);

#endif
