/*
 * Query-string and value parsing for the REST API: everything a URL can carry is untrusted text,
 * so each parser here has a bound and answers "bad" rather than guessing.
 */
#ifndef DLOTEL_API_PARAMS_H
#define DLOTEL_API_PARAMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Query parameters kept per request, and the longest decoded name and value. */
#define API_PARAMS_MAX      64
#define API_PARAM_NAME_MAX  128
#define API_PARAM_VALUE_MAX 4096

/* The default and the largest `limit` (docs/api.md). */
#define API_LIMIT_DEFAULT 100
#define API_LIMIT_MAX     10000

struct api_param {
    char *name;  /* Percent-decoded, NUL-terminated; owned by the api_params. */
    char *value; /* Percent-decoded ('+' is a space), NUL-terminated; "" when absent. */
};

struct api_params {
    struct api_param items[API_PARAMS_MAX];
    size_t n;
};

/*
 * Splits the request target |target| (path and query string) into its path, copied into |path|
 * (size |path_len|, percent-decoding not applied: routes are plain ASCII), and its parameters,
 * percent-decoded into |out|. A NUL byte decoded from %00 is refused.
 *
 * Returns 0; DLOTEL_ERR_BAD_INPUT (bad escape, %00, too many parameters, a name or value too
 * long, a path too long), with the offending parameter's name in |why| when known;
 * DLOTEL_ERR_NOMEM. On failure |out| holds nothing to free.
 */
int api_params_parse(const char *target, char *path, size_t path_len, struct api_params *out,
                     char *why, size_t why_len);

/* Frees the copies of |p|. */
void api_params_cleanup(struct api_params *p);

/* The value of the first parameter named |name|, or NULL. */
const char *api_params_get(const struct api_params *p, const char *name);

/*
 * A time: RFC 3339 ("2026-11-21T10:00:00Z", "2026-11-21T10:00:00.5+02:00", lowercase t and z and
 * a space instead of T accepted) or a decimal epoch number whose magnitude says its unit:
 * below 1e11 seconds, below 1e14 milliseconds, below 1e17 microseconds, else nanoseconds.
 * Fractions of seconds in an epoch number ("1767225600.25") are accepted. Returns 0 with
 * nanoseconds since 1970 in |*ns|, or DLOTEL_ERR_BAD_INPUT (also before 1970 or past 2262).
 */
int api_parse_time(const char *s, int64_t *ns);

/*
 * A duration: a decimal number of seconds ("60"), or a number with a unit: ns, us, ms, s, m, h,
 * d ("500ms", "1.5h"). Returns 0 with nanoseconds in |*ns| (> 0), or DLOTEL_ERR_BAD_INPUT.
 */
int api_parse_duration(const char *s, int64_t *ns);

/* A non-negative decimal integer no larger than |max|. Returns 0 or DLOTEL_ERR_BAD_INPUT. */
int api_parse_uint(const char *s, uint64_t max, uint64_t *out);

/* A finite decimal number (strtod syntax, no hex, no inf/nan). Returns 0 or BAD_INPUT. */
int api_parse_double(const char *s, double *out);

/*
 * Formats |ns| since 1970 as RFC 3339 UTC with nanoseconds trimmed to the digits needed
 * ("2026-01-01T00:00:00.074Z"). |out| needs 36 bytes.
 */
void api_format_time(int64_t ns, char *out, size_t len);

/*
 * Cursors: the sort key of the last row of a page, as opaque base64url text. A key is a signed
 * 64-bit number (a time) and a text id of lowercase hex or decimal digits, at most 64 bytes.
 * api_cursor_encode writes at most API_CURSOR_MAX bytes with the NUL.
 */
#define API_CURSOR_MAX 160
void api_cursor_encode(int64_t t, const char *id, char *out, size_t len);

/* Returns 0 with the key, or DLOTEL_ERR_BAD_INPUT. |id| needs 65 bytes. */
int api_cursor_decode(const char *s, int64_t *t, char *id, size_t id_len);

/* True when |s| is 1 to |max| lowercase or uppercase hex digits. */
bool api_is_hex(const char *s, size_t max);

#endif
