/*
 * Query-string, time, duration and cursor parsing for the REST API (api_params.h). No libc
 * parser that accepts more than we mean (strtol's leading spaces and signs, strptime's locale)
 * touches untrusted text here: each format is walked by hand with explicit bounds.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_params.h"
#include "core/hex.h"
#include "dlotel.h"

#define NS_PER_S 1000000000LL

/* 2262-04-11T23:47:16Z: the last second of int64 nanoseconds (up to .854775807 of it). */
#define MAX_EPOCH_S 9223372036LL

/* Percent-decodes [s, s + n) into a new string; '+' becomes a space. NULL on a bad escape. */
static char *decode(const char *s, size_t n, size_t max, int *err)
{
    if (n > max * 3) {
        *err = DLOTEL_ERR_BAD_INPUT;
        return NULL;
    }
    char *out = malloc(n + 1);
    if (out == NULL) {
        *err = DLOTEL_ERR_NOMEM;
        return NULL;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            /* Two hex digits must follow; %00 would cut the C string short. */
            if (n - i < 3) {
                free(out);
                *err = DLOTEL_ERR_BAD_INPUT;
                return NULL;
            }
            int h = hex_digit_value((unsigned char)s[i + 1]);
            int l = hex_digit_value((unsigned char)s[i + 2]);
            if (h < 0 || l < 0 || (h == 0 && l == 0)) {
                free(out);
                *err = DLOTEL_ERR_BAD_INPUT;
                return NULL;
            }
            c = (char)(h * 16 + l);
            i += 2;
        }
        out[o++] = c;
    }
    out[o] = '\0';
    if (o > max) {
        free(out);
        *err = DLOTEL_ERR_BAD_INPUT;
        return NULL;
    }
    return out;
}

static void set_why(char *why, size_t len, const char *name, size_t n)
{
    if (why == NULL || len == 0) {
        return;
    }
    /* Only printable ASCII of the raw name goes into a message. */
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < len && o < 64; i++) {
        unsigned char c = (unsigned char)name[i];
        why[o++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    why[o] = '\0';
}

int api_params_parse(const char *target, char *path, size_t path_len, struct api_params *out,
                     char *why, size_t why_len)
{
    out->n = 0;
    if (why != NULL && why_len > 0) {
        why[0] = '\0';
    }
    size_t plen = strcspn(target, "?#");
    if (plen + 1 > path_len) {
        set_why(why, why_len, "path", 4);
        return DLOTEL_ERR_BAD_INPUT;
    }
    memcpy(path, target, plen);
    path[plen] = '\0';
    if (target[plen] != '?') {
        return 0;
    }
    const char *q = target + plen + 1;
    size_t qlen = strcspn(q, "#");
    size_t i = 0;
    int err = 0;
    while (i < qlen) {
        size_t n = 0;
        while (i + n < qlen && q[i + n] != '&') {
            n++;
        }
        if (n > 0) {
            const char *pair = q + i;
            size_t eq = 0;
            while (eq < n && pair[eq] != '=') {
                eq++;
            }
            if (out->n == API_PARAMS_MAX) {
                set_why(why, why_len, pair, eq);
                api_params_cleanup(out);
                return DLOTEL_ERR_BAD_INPUT;
            }
            char *name = decode(pair, eq, API_PARAM_NAME_MAX, &err);
            if (name == NULL) {
                set_why(why, why_len, pair, eq);
                api_params_cleanup(out);
                return err;
            }
            const char *v = eq < n ? pair + eq + 1 : "";
            size_t vlen = eq < n ? n - eq - 1 : 0;
            char *value = decode(v, vlen, API_PARAM_VALUE_MAX, &err);
            if (value == NULL) {
                set_why(why, why_len, pair, eq);
                free(name);
                api_params_cleanup(out);
                return err;
            }
            out->items[out->n].name = name;
            out->items[out->n].value = value;
            out->n++;
        }
        i += n + 1;
    }
    return 0;
}

void api_params_cleanup(struct api_params *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->items[i].name);
        free(p->items[i].value);
    }
    p->n = 0;
}

const char *api_params_get(const struct api_params *p, const char *name)
{
    for (size_t i = 0; i < p->n; i++) {
        if (strcmp(p->items[i].name, name) == 0) {
            return p->items[i].value;
        }
    }
    return NULL;
}

/* ---- numbers ------------------------------------------------------------------------------- */

int api_parse_uint(const char *s, uint64_t max, uint64_t *out)
{
    if (s == NULL || *s == '\0' || strlen(s) > 20) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    uint64_t v = 0;
    for (const char *p = s; *p != '\0'; p++) {
        if (*p < '0' || *p > '9') {
            return DLOTEL_ERR_BAD_INPUT;
        }
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (max - d) / 10) {
            return DLOTEL_ERR_BAD_INPUT;
        }
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* Checks |s| is [-]digits[.digits][e[+-]digits] before strtod sees it. */
static bool plain_number(const char *s, bool allow_sign, bool allow_exp)
{
    const char *p = s;
    if (allow_sign && (*p == '-' || *p == '+')) {
        p++;
    }
    size_t digits = 0;
    while (*p >= '0' && *p <= '9') {
        p++;
        digits++;
    }
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9') {
            p++;
            digits++;
        }
    }
    if (digits == 0) {
        return false;
    }
    if (allow_exp && (*p == 'e' || *p == 'E')) {
        p++;
        if (*p == '-' || *p == '+') {
            p++;
        }
        if (*p < '0' || *p > '9') {
            return false;
        }
        while (*p >= '0' && *p <= '9') {
            p++;
        }
    }
    return *p == '\0';
}

int api_parse_double(const char *s, double *out)
{
    if (s == NULL || strlen(s) > 64 || !plain_number(s, true, true)) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    errno = 0;
    char *end = NULL;
    double v = strtod(s, &end);
    if (end == NULL || *end != '\0' || !isfinite(v) || errno == ERANGE) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    *out = v;
    return 0;
}

/* ---- time ---------------------------------------------------------------------------------- */

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t yy = (int64_t)yoe + era * 400;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = yy + (*m <= 2);
}

/* Reads exactly |n| digits. */
static bool digits(const char **p, int n, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9') {
            return false;
        }
        v = v * 10 + (unsigned)(c - '0');
    }
    *p += n;
    *out = v;
    return true;
}

static bool leap(unsigned y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int parse_rfc3339(const char *s, int64_t *ns)
{
    static const unsigned mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    const char *p = s;
    unsigned y, mo, d, h = 0, mi = 0, sec = 0;
    if (!digits(&p, 4, &y) || *p++ != '-' || !digits(&p, 2, &mo) || *p++ != '-' ||
        !digits(&p, 2, &d)) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 ||
        d > mdays[mo - 1] + (mo == 2 && leap(y) ? 1u : 0u)) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    int64_t frac = 0;
    int64_t offset_s = 0;
    if (*p != '\0') {
        if (*p != 'T' && *p != 't' && *p != ' ') {
            return DLOTEL_ERR_BAD_INPUT;
        }
        p++;
        if (!digits(&p, 2, &h) || *p++ != ':' || !digits(&p, 2, &mi) || *p++ != ':' ||
            !digits(&p, 2, &sec)) {
            return DLOTEL_ERR_BAD_INPUT;
        }
        /* 60 is a leap second: counted as the next second's start, as most systems do. */
        if (h > 23 || mi > 59 || sec > 60) {
            return DLOTEL_ERR_BAD_INPUT;
        }
        if (*p == '.') {
            p++;
            int n = 0;
            int64_t scale = 100000000;
            while (*p >= '0' && *p <= '9') {
                if (n < 9) {
                    frac += (*p - '0') * scale;
                    scale /= 10;
                }
                n++;
                p++;
                if (n > 18) {
                    return DLOTEL_ERR_BAD_INPUT;
                }
            }
            if (n == 0) {
                return DLOTEL_ERR_BAD_INPUT;
            }
        }
        if (*p == 'Z' || *p == 'z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            int sign = *p == '-' ? -1 : 1;
            p++;
            unsigned oh, om;
            if (!digits(&p, 2, &oh) || *p++ != ':' || !digits(&p, 2, &om) || oh > 23 || om > 59) {
                return DLOTEL_ERR_BAD_INPUT;
            }
            offset_s = sign * (int64_t)(oh * 3600 + om * 60);
        } else {
            return DLOTEL_ERR_BAD_INPUT;
        }
        if (*p != '\0') {
            return DLOTEL_ERR_BAD_INPUT;
        }
    }
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset_s;
    /* Every time whose nanoseconds fit in int64, the same range as an epoch number. */
    if (secs < 0 || secs > MAX_EPOCH_S || (secs == MAX_EPOCH_S && frac > INT64_MAX % NS_PER_S)) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    *ns = secs * NS_PER_S + frac;
    return 0;
}

static int parse_epoch(const char *s, int64_t *ns)
{
    if (!plain_number(s, false, false) || strlen(s) > 40) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    const char *dot = strchr(s, '.');
    size_t ilen = dot != NULL ? (size_t)(dot - s) : strlen(s);
    if (ilen == 0 || ilen > 19) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    uint64_t whole = 0;
    for (size_t i = 0; i < ilen; i++) {
        whole = whole * 10 + (uint64_t)(s[i] - '0');
    }
    /* The unit from the magnitude: seconds, ms, us, ns. */
    uint64_t mult;
    if (whole < 100000000000ull) {
        mult = 1000000000ull;
    } else if (whole < 100000000000000ull) {
        mult = 1000000ull;
    } else if (whole < 100000000000000000ull) {
        mult = 1000ull;
    } else {
        mult = 1;
    }
    if (whole > (uint64_t)INT64_MAX / mult) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    uint64_t v = whole * mult;
    if (dot != NULL) {
        /* The fraction, in the unit's nanoseconds, nine digits at most. */
        uint64_t scale = mult / 10;
        for (const char *p = dot + 1; *p != '\0' && scale > 0; p++) {
            v += (uint64_t)(*p - '0') * scale;
            scale /= 10;
        }
        if (v > (uint64_t)INT64_MAX) {
            return DLOTEL_ERR_BAD_INPUT;
        }
    }
    *ns = (int64_t)v;
    return 0;
}

int api_parse_time(const char *s, int64_t *ns)
{
    if (s == NULL || *s == '\0' || strlen(s) > 64) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    /* "2026-..." has a '-' at index 4; an epoch number never has one. */
    if (strlen(s) >= 10 && s[4] == '-') {
        return parse_rfc3339(s, ns);
    }
    return parse_epoch(s, ns);
}

int api_parse_duration(const char *s, int64_t *ns)
{
    if (s == NULL || *s == '\0' || strlen(s) > 32) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    size_t n = strlen(s);
    size_t num = 0;
    while (num < n && ((s[num] >= '0' && s[num] <= '9') || s[num] == '.')) {
        num++;
    }
    if (num == 0 || num > 24) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    char text[32];
    memcpy(text, s, num);
    text[num] = '\0';
    if (!plain_number(text, false, false)) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    const char *unit = s + num;
    double mult;
    if (*unit == '\0' || strcmp(unit, "s") == 0) {
        mult = 1e9;
    } else if (strcmp(unit, "ns") == 0) {
        mult = 1;
    } else if (strcmp(unit, "us") == 0) {
        mult = 1e3;
    } else if (strcmp(unit, "ms") == 0) {
        mult = 1e6;
    } else if (strcmp(unit, "m") == 0) {
        mult = 60e9;
    } else if (strcmp(unit, "h") == 0) {
        mult = 3600e9;
    } else if (strcmp(unit, "d") == 0) {
        mult = 86400e9;
    } else {
        return DLOTEL_ERR_BAD_INPUT;
    }
    double v = strtod(text, NULL) * mult;
    /* Below 1 ns or past ~292 years is no step anyone means. */
    if (!(v >= 1.0) || v >= 9.2e18) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    *ns = (int64_t)v;
    return 0;
}

void api_format_time(int64_t ns, char *out, size_t len)
{
    int64_t secs = ns / NS_PER_S;
    int64_t frac = ns % NS_PER_S;
    if (frac < 0) {
        frac += NS_PER_S;
        secs -= 1;
    }
    int64_t days = secs / 86400;
    int64_t rem = secs % 86400;
    if (rem < 0) {
        rem += 86400;
        days -= 1;
    }
    int64_t y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    char fr[16] = "";
    if (frac != 0) {
        /* Milliseconds, microseconds or nanoseconds: the shortest that is exact. */
        if (frac % 1000000 == 0) {
            snprintf(fr, sizeof(fr), ".%03lld", (long long)(frac / 1000000));
        } else if (frac % 1000 == 0) {
            snprintf(fr, sizeof(fr), ".%06lld", (long long)(frac / 1000));
        } else {
            snprintf(fr, sizeof(fr), ".%09lld", (long long)frac);
        }
    }
    snprintf(out, len, "%04lld-%02u-%02uT%02u:%02u:%02u%sZ", (long long)y, m, d,
             (unsigned)(rem / 3600), (unsigned)(rem % 3600 / 60), (unsigned)(rem % 60), fr);
}

/* ---- cursors ------------------------------------------------------------------------------- */

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static void b64_encode(const uint8_t *in, size_t n, char *out, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n) {
            v |= (uint32_t)in[i + 1] << 8;
        }
        if (i + 2 < n) {
            v |= in[i + 2];
        }
        size_t chars = n - i >= 3 ? 4 : n - i + 1;
        for (size_t k = 0; k < chars && o + 1 < len; k++) {
            out[o++] = b64url[(v >> (18 - 6 * k)) & 63];
        }
    }
    out[o] = '\0';
}

static int b64_value(char c)
{
    const char *p = strchr(b64url, c);
    return c != '\0' && p != NULL ? (int)(p - b64url) : -1;
}

/* Returns the decoded length, or -1. */
static long b64_decode(const char *s, uint8_t *out, size_t max)
{
    size_t n = strlen(s);
    if (n % 4 == 1) {
        return -1;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        uint32_t v = 0;
        size_t chars = n - i >= 4 ? 4 : n - i;
        for (size_t k = 0; k < 4; k++) {
            int x = 0;
            if (k < chars) {
                x = b64_value(s[i + k]);
                if (x < 0) {
                    return -1;
                }
            }
            v = v << 6 | (uint32_t)x;
        }
        size_t bytes = chars - 1;
        for (size_t k = 0; k < bytes; k++) {
            if (o >= max) {
                return -1;
            }
            out[o++] = (uint8_t)(v >> (16 - 8 * k));
        }
    }
    return (long)o;
}

void api_cursor_encode(int64_t t, const char *id, char *out, size_t len)
{
    char raw[96];
    int n = snprintf(raw, sizeof(raw), "%lld:%.64s", (long long)t, id);
    b64_encode((const uint8_t *)raw, n > 0 ? (size_t)n : 0, out, len);
}

bool api_is_hex(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (hex_digit_value((unsigned char)s[i]) < 0) {
            return false;
        }
    }
    return true;
}

int api_cursor_decode(const char *s, int64_t *t, char *id, size_t id_len)
{
    if (s == NULL || strlen(s) > API_CURSOR_MAX) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    uint8_t raw[128];
    long n = b64_decode(s, raw, sizeof(raw) - 1);
    if (n <= 0) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    raw[n] = '\0';
    if (memchr(raw, '\0', (size_t)n) != NULL) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    char *colon = strchr((char *)raw, ':');
    if (colon == NULL) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    *colon = '\0';
    const char *num = (const char *)raw;
    bool neg = *num == '-';
    uint64_t v;
    if (api_parse_uint(neg ? num + 1 : num, (uint64_t)INT64_MAX, &v) != 0) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    const char *rest = colon + 1;
    if (!api_is_hex(rest, 64) || strlen(rest) + 1 > id_len) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    *t = neg ? -(int64_t)v : (int64_t)v;
    memcpy(id, rest, strlen(rest) + 1);
    return 0;
}
