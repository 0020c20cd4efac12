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

#endif
