/*
 * Response parsers and the outcome classification for the upstream exporters. See upstream.h.
 *
 * The protobuf parsers walk the wire format by hand rather than through protobuf-c: the three
 * messages involved are tiny, the walk allocates nothing, and it tolerates what protobuf
 * requires (unknown fields, fields in any order, repeated scalars where the last one wins).
 */
#include "exporter/upstream.h"

#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

#include "core/hex.h"
#include "dlotel.h"

/* -------------------------------------------------------------------------------------------- */
/* Classification */

const char *upstream_grpc_code_name(int code)
{
    static const char *const names[] = {
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    };
    if (code < 0 || code >= (int)(sizeof(names) / sizeof(names[0]))) {
        return "UNKNOWN_CODE";
    }
    return names[code];
}

int upstream_grpc_from_http(int http_status)
{
    switch (http_status) {
    case 400:
        return UPSTREAM_GRPC_INTERNAL;
    case 401:
        return UPSTREAM_GRPC_UNAUTHENTICATED;
    case 403:
        return UPSTREAM_GRPC_PERMISSION_DENIED;
    case 404:
        return UPSTREAM_GRPC_UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
        return UPSTREAM_GRPC_UNAVAILABLE;
    default:
        return UPSTREAM_GRPC_UNKNOWN;
    }
}

/*
 * Transport errors that only a person can fix on our side: the agent's own files or settings.
 * Everything else a transfer can fail with may heal by itself (see upstream.h on why a server
 * certificate that does not verify is retried).
 */
static bool curl_permanent(int code)
{
    switch (code) {
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_FAILED_INIT:
    case CURLE_URL_MALFORMAT:
    case CURLE_NOT_BUILT_IN:
    case CURLE_BAD_FUNCTION_ARGUMENT:
    case CURLE_UNKNOWN_OPTION:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_LOGIN_DENIED:
        return true;
    default:
        return false;
    }
}

static bool grpc_retryable(int code, bool retry_info)
{
    switch (code) {
    case UPSTREAM_GRPC_CANCELLED:
    case UPSTREAM_GRPC_DEADLINE_EXCEEDED:
    case UPSTREAM_GRPC_ABORTED:
    case UPSTREAM_GRPC_OUT_OF_RANGE:
    case UPSTREAM_GRPC_UNAVAILABLE:
    case UPSTREAM_GRPC_DATA_LOSS:
        return true;
    case UPSTREAM_GRPC_RESOURCE_EXHAUSTED:
        /* Without RetryInfo the server is saying "this will never fit", e.g. a message limit. */
        return retry_info;
    default:
        return false;
    }
}

enum export_outcome upstream_classify(const struct upstream_reply *r)
{
    if (r->curl_code != CURLE_OK) {
        return curl_permanent(r->curl_code) ? EXPORT_PERMANENT : EXPORT_RETRY;
    }
    if (!r->grpc) {
        int st = r->http_status;
        if (st >= 200 && st <= 299) {
            return EXPORT_OK;
        }
        if (st == 429 || st == 502 || st == 503 || st == 504) {
            return EXPORT_RETRY;
        }
        return EXPORT_PERMANENT;
    }
    int code;
    if (r->http_status != 200) {
        /* gRPC clients map the HTTP status and ignore any grpc-status beside it (grpc-go does). */
        code = upstream_grpc_from_http(r->http_status);
    } else if (r->grpc_status < 0) {
        return EXPORT_PERMANENT;
    } else {
        code = r->grpc_status;
    }
    if (code == UPSTREAM_GRPC_OK) {
        return EXPORT_OK;
    }
    return grpc_retryable(code, r->retry_info) ? EXPORT_RETRY : EXPORT_PERMANENT;
}

const char *upstream_curl_category(int code)
{
    switch (code) {
    case CURLE_OK:
        return "no error";
    case CURLE_OPERATION_TIMEDOUT:
        return "timeout";
    case CURLE_COULDNT_CONNECT:
        return "could not connect";
    case CURLE_COULDNT_RESOLVE_HOST:
        return "DNS resolution failed";
    case CURLE_COULDNT_RESOLVE_PROXY:
        return "DNS resolution of the proxy failed";
    case CURLE_GOT_NOTHING:
        return "empty reply";
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
        return "connection lost";
    case CURLE_PARTIAL_FILE:
        return "response cut short";
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return "HTTP/2 error";
    case CURLE_SSL_CONNECT_ERROR:
        return "TLS handshake failed";
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
        return "server certificate not trusted";
    case CURLE_SSL_CACERT_BADFILE:
        return "CA file unusable";
    case CURLE_SSL_CERTPROBLEM:
        return "client certificate or key unusable";
    case CURLE_SSL_CRL_BADFILE:
        return "CRL file unusable";
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
        return "TLS setup failed";
    case CURLE_URL_MALFORMAT:
        return "malformed URL";
    case CURLE_UNSUPPORTED_PROTOCOL:
        return "unsupported protocol";
    case CURLE_PROXY:
        return "proxy error";
    case CURLE_WEIRD_SERVER_REPLY:
        return "unexpected reply";
    default:
        return "transport error";
    }
}

bool upstream_curl_is_tls_problem(int code)
{
    switch (code) {
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
        return true;
    default:
        return false;
    }
}

/* -------------------------------------------------------------------------------------------- */
/* Retry-After and HTTP dates */

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar (H. Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int days_in_month(int64_t y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)) {
        return 29;
    }
    return days[m - 1];
}

/* A cursor over the date text; every reader fails cleanly at the end. */
struct scan {
    const char *p;
    const char *end;
};

static bool scan_lit(struct scan *s, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0) {
        return false;
    }
    s->p += n;
    return true;
}

/* Exactly |n| digits. */
static bool scan_num(struct scan *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s->p >= s->end || !is_digit(*s->p)) {
            return false;
        }
        v = v * 10 + (*s->p - '0');
        s->p++;
    }
    *out = v;
    return true;
}

/* One of |names| (case-sensitive, as HTTP-date is); sets its index. */
static bool scan_name(struct scan *s, const char *const *names, int n, int *out)
{
    for (int i = 0; i < n; i++) {
        if (scan_lit(s, names[i])) {
            *out = i;
            return true;
        }
    }
    return false;
}

static const char *const MONTHS[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
static const char *const WDAYS[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
/* Longest first would not matter: each long name starts with a distinct short one. */
static const char *const WDAYS_LONG[] = {"Monday", "Tuesday",  "Wednesday", "Thursday",
                                         "Friday", "Saturday", "Sunday"};

/* "HH:MM:SS" */
static bool scan_time(struct scan *s, int *h, int *mi, int *sec)
{
    return scan_num(s, 2, h) && scan_lit(s, ":") && scan_num(s, 2, mi) && scan_lit(s, ":") &&
           scan_num(s, 2, sec);
}

static int finish_date(int64_t year, int mon, int day, int h, int mi, int sec, int64_t *out)
{
    /* Second 60 is a leap second; it is the next minute's first second for our purposes. */
    if (mon < 1 || mon > 12 || day < 1 || day > days_in_month(year, mon) || h > 23 || mi > 59 ||
        sec > 60) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    *out = days_from_civil(year, mon, day) * 86400 + h * 3600 + mi * 60 + sec;
    return 0;
}

int upstream_http_date_parse(const char *v, size_t len, int64_t *out_unix_s)
{
    struct scan s = {v, v + len};
    int wd, day, mon, year, h, mi, sec;

    /* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" */
    if (scan_name(&s, WDAYS, 7, &wd) && scan_lit(&s, ", ")) {
        if (!scan_num(&s, 2, &day) || !scan_lit(&s, " ") || !scan_name(&s, MONTHS, 12, &mon) ||
            !scan_lit(&s, " ") || !scan_num(&s, 4, &year) || !scan_lit(&s, " ") ||
            !scan_time(&s, &h, &mi, &sec) || !scan_lit(&s, " GMT") || s.p != s.end) {
            return DLOTEL_ERR_BAD_INPUT;
        }
        return finish_date(year, mon + 1, day, h, mi, sec, out_unix_s);
    }

    /* RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT" */
    s.p = v;
    if (scan_name(&s, WDAYS_LONG, 7, &wd) && scan_lit(&s, ", ")) {
        if (!scan_num(&s, 2, &day) || !scan_lit(&s, "-") || !scan_name(&s, MONTHS, 12, &mon) ||
            !scan_lit(&s, "-") || !scan_num(&s, 2, &year) || !scan_lit(&s, " ") ||
            !scan_time(&s, &h, &mi, &sec) || !scan_lit(&s, " GMT") || s.p != s.end) {
            return DLOTEL_ERR_BAD_INPUT;
        }
        /*
         * RFC 9110: a two-digit year that looks more than 50 years in the future is in the past
         * century. Against today's years that makes 00-69 this century and 70-99 the last.
         */
        year += year < 70 ? 2000 : 1900;
        return finish_date(year, mon + 1, day, h, mi, sec, out_unix_s);
    }

    /* asctime: "Sun Nov  6 08:49:37 1994" (the day padded with a space) */
    s.p = v;
    if (scan_name(&s, WDAYS, 7, &wd) && scan_lit(&s, " ")) {
        if (!scan_name(&s, MONTHS, 12, &mon) || !scan_lit(&s, " ")) {
            return DLOTEL_ERR_BAD_INPUT;
        }
        if (s.p < s.end && *s.p == ' ') {
            s.p++;
            if (!scan_num(&s, 1, &day)) {
                return DLOTEL_ERR_BAD_INPUT;
            }
        } else if (!scan_num(&s, 2, &day)) {
            return DLOTEL_ERR_BAD_INPUT;
        }
        if (!scan_lit(&s, " ") || !scan_time(&s, &h, &mi, &sec) || !scan_lit(&s, " ") ||
            !scan_num(&s, 4, &year) || s.p != s.end) {
            return DLOTEL_ERR_BAD_INPUT;
        }
        return finish_date(year, mon + 1, day, h, mi, sec, out_unix_s);
    }
    return DLOTEL_ERR_BAD_INPUT;
}

int upstream_retry_after_parse(const char *v, size_t len, uint64_t now_unix_ns, uint64_t *out_ns)
{
    const uint64_t max_s = UPSTREAM_RETRY_AFTER_MAX_NS / 1000000000u;
    while (len > 0 && is_ows(v[0])) {
        v++;
        len--;
    }
    while (len > 0 && is_ows(v[len - 1])) {
        len--;
    }
    if (len == 0) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    if (is_digit(v[0])) {
        uint64_t secs = 0;
        for (size_t i = 0; i < len; i++) {
            if (!is_digit(v[i])) {
                return DLOTEL_ERR_BAD_INPUT;
            }
            /* Saturate instead of overflowing: any huge number means "the maximum". */
            if (secs <= max_s) {
                secs = secs * 10 + (uint64_t)(v[i] - '0');
            }
        }
        *out_ns = (secs > max_s ? max_s : secs) * 1000000000u;
        return 0;
    }
    int64_t when;
    if (upstream_http_date_parse(v, len, &when) != 0) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    int64_t now_s = (int64_t)(now_unix_ns / 1000000000u);
    uint64_t wait = 0;
    if (when > now_s) {
        uint64_t d = (uint64_t)(when - now_s);
        wait = (d > max_s ? max_s : d) * 1000000000u;
        /* The date has whole seconds; do not count the part of this second already gone. */
        uint64_t frac = now_unix_ns % 1000000000u;
        if (d <= max_s) {
            wait -= frac;
        }
    }
    *out_ns = wait;
    return 0;
}

/* -------------------------------------------------------------------------------------------- */
/* grpc-message and base64 */

int upstream_grpc_message_decode(const char *v, size_t len, struct buf *out)
{
    for (size_t i = 0; i < len; i++) {
        uint8_t c = (uint8_t)v[i];
        if (c == '%' && i + 2 < len) {
            int hi = hex_digit_value(v[i + 1]);
            int lo = hex_digit_value(v[i + 2]);
            if (hi >= 0 && lo >= 0) {
                c = (uint8_t)(hi << 4 | lo);
                i += 2;
            }
        }
        int rv = buf_putc(out, c);
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '+') {
        return 62;
    }
    if (c == '/') {
        return 63;
    }
    return -1;
}

int upstream_base64_decode(const char *v, size_t len, struct buf *out)
{
    /* Padding, when present, must make the length a multiple of four and sit only at the end. */
    size_t pad = 0;
    while (len > 0 && v[len - 1] == '=' && pad < 2) {
        len--;
        pad++;
    }
    if (pad > 0 && (len + pad) % 4 != 0) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    if (len % 4 == 1) {
        return DLOTEL_ERR_BAD_INPUT; /* Six bits cannot make a byte. */
    }
    int rv = buf_reserve(out, len / 4 * 3 + 2);
    if (rv != 0) {
        return rv;
    }
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int x = b64_value(v[i]);
        if (x < 0) {
            return DLOTEL_ERR_BAD_INPUT;
        }
        acc = (acc << 6) | (uint32_t)x;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out->data[out->len++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    /* The bits left over are padding and must be zero (RFC 4648 section 3.5, canonical form). */
    if (acc != 0) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    return 0;
}

/* -------------------------------------------------------------------------------------------- */
/* Protobuf */

struct pb {
    const uint8_t *p;
    const uint8_t *end;
};

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };

/* An empty body may come as (NULL, 0); NULL + 0 is undefined behaviour in C. */
static struct pb pb_reader(const uint8_t *p, size_t len)
{
    struct pb r = {p, p == NULL ? p : p + len};
    return r;
}

static int pb_varint(struct pb *r, uint64_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end) {
            return DLOTEL_ERR_BAD_INPUT;
        }
        uint8_t b = *r->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            *out = v;
            return 0;
        }
    }
    return DLOTEL_ERR_BAD_INPUT; /* More than ten bytes. */
}

/* Reads a tag; field numbers 0 and wire types 3, 4 (groups), 6, 7 are refused. */
static int pb_tag(struct pb *r, uint32_t *field, int *wt)
{
    uint64_t t;
    if (pb_varint(r, &t) != 0 || (t >> 3) == 0 || (t >> 3) > 0x1fffffff) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    *field = (uint32_t)(t >> 3);
    *wt = (int)(t & 7);
    if (*wt != WT_VARINT && *wt != WT_I64 && *wt != WT_LEN && *wt != WT_I32) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    return 0;
}

static int pb_bytes(struct pb *r, struct pb *sub)
{
    uint64_t n;
    if (pb_varint(r, &n) != 0 || n > (uint64_t)(r->end - r->p)) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    sub->p = r->p;
    sub->end = r->p + n;
    r->p += n;
    return 0;
}

static int pb_skip(struct pb *r, int wt)
{
    uint64_t v;
    struct pb sub;
    switch (wt) {
    case WT_VARINT:
        return pb_varint(r, &v);
    case WT_I64:
    case WT_I32: {
        size_t n = wt == WT_I64 ? 8 : 4;
        if ((size_t)(r->end - r->p) < n) {
            return DLOTEL_ERR_BAD_INPUT;
        }
        r->p += n;
        return 0;
    }
    case WT_LEN:
        return pb_bytes(r, &sub);
    default:
        return DLOTEL_ERR_BAD_INPUT;
    }
}

/* google.protobuf.Duration { int64 seconds = 1; int32 nanos = 2; } -> clamped nanoseconds. */
static int parse_duration(struct pb r, uint64_t *out)
{
    int64_t secs = 0;
    int64_t nanos = 0;
    while (r.p < r.end) {
        uint32_t f;
        int wt;
        uint64_t v;
        if (pb_tag(&r, &f, &wt) != 0) {
            return DLOTEL_ERR_BAD_INPUT;
        }
        if ((f == 1 || f == 2) && wt == WT_VARINT) {
            if (pb_varint(&r, &v) != 0) {
                return DLOTEL_ERR_BAD_INPUT;
            }
            if (f == 1) {
                secs = (int64_t)v;
            } else {
                nanos = (int32_t)(uint32_t)v; /* int32 on the wire: the low 32 bits count. */
            }
        } else if (f == 1 || f == 2) {
            return DLOTEL_ERR_BAD_INPUT;
        } else if (pb_skip(&r, wt) != 0) {
            return DLOTEL_ERR_BAD_INPUT;
        }
    }
    const uint64_t max_s = UPSTREAM_RETRY_AFTER_MAX_NS / 1000000000u;
    if (secs < 0 || (secs == 0 && nanos <= 0)) {
        *out = 0;
    } else if ((uint64_t)secs >= max_s) {
        *out = UPSTREAM_RETRY_AFTER_MAX_NS;
    } else {
        /* Duration's nanos lie in -999999999..999999999 with the sign of seconds; clamp. */
        if (nanos < 0) {
            nanos = 0;
        } else if (nanos > 999999999) {
            nanos = 999999999;
        }
        *out = (uint64_t)secs * 1000000000u + (uint64_t)nanos;
    }
    return 0;
}

static bool ends_with(const uint8_t *p, size_t n, const char *suffix)
{
    size_t sl = strlen(suffix);
    return n >= sl && memcmp(p + n - sl, suffix, sl) == 0;
}

/* google.protobuf.Any { string type_url = 1; bytes value = 2; }: RetryInfo or ignored. */
static int parse_any(struct pb r, struct upstream_rpc_status *out)
{
    struct pb type = {NULL, NULL};
    struct pb value = {NULL, NULL};
    while (r.p < r.end) {
        uint32_t f;
        int wt;
        if (pb_tag(&r, &f, &wt) != 0) {
            return DLOTEL_ERR_BAD_INPUT;
        }
        if (f == 1 || f == 2) {
            if (wt != WT_LEN || pb_bytes(&r, f == 1 ? &type : &value) != 0) {
                return DLOTEL_ERR_BAD_INPUT;
            }
        } else if (pb_skip(&r, wt) != 0) {
            return DLOTEL_ERR_BAD_INPUT;
        }
    }
    /* The type URL's last path segment names the type ("type.googleapis.com/google.rpc..."). */
    if (type.p == NULL ||
        !ends_with(type.p, (size_t)(type.end - type.p), "/google.rpc.RetryInfo")) {
        return 0;
    }
    /* RetryInfo { google.protobuf.Duration retry_delay = 1; }; an empty value is a zero delay. */
    uint64_t delay = 0;
    if (value.p != NULL) {
        struct pb ri = value;
        while (ri.p < ri.end) {
            uint32_t f;
            int wt;
            struct pb d;
            if (pb_tag(&ri, &f, &wt) != 0) {
                return DLOTEL_ERR_BAD_INPUT;
            }
            if (f == 1) {
                if (wt != WT_LEN || pb_bytes(&ri, &d) != 0 || parse_duration(d, &delay) != 0) {
                    return DLOTEL_ERR_BAD_INPUT;
                }
            } else if (pb_skip(&ri, wt) != 0) {
                return DLOTEL_ERR_BAD_INPUT;
            }
        }
    }
    out->has_retry_info = true;
    out->retry_delay_ns = delay;
    return 0;
}

int upstream_rpc_status_parse(const uint8_t *p, size_t len, struct upstream_rpc_status *out)
{
    struct upstream_rpc_status st;
    memset(&st, 0, sizeof(st));
    struct pb r = pb_reader(p, len);
    while (r.p < r.end) {
        uint32_t f;
        int wt;
        uint64_t v;
        struct pb sub;
        if (pb_tag(&r, &f, &wt) != 0) {
            return DLOTEL_ERR_BAD_INPUT;
        }
        switch (f) {
        case 1:
            if (wt != WT_VARINT || pb_varint(&r, &v) != 0) {
                return DLOTEL_ERR_BAD_INPUT;
            }
            st.code = (int32_t)(uint32_t)v;
            break;
        case 2:
            if (wt != WT_LEN || pb_bytes(&r, &sub) != 0) {
                return DLOTEL_ERR_BAD_INPUT;
            }
            upstream_text_copy(st.message, sizeof(st.message), sub.p, (size_t)(sub.end - sub.p));
            break;
        case 3:
            if (wt != WT_LEN || pb_bytes(&r, &sub) != 0 || parse_any(sub, &st) != 0) {
                return DLOTEL_ERR_BAD_INPUT;
            }
            break;
        default:
            if (pb_skip(&r, wt) != 0) {
                return DLOTEL_ERR_BAD_INPUT;
            }
        }
    }
    *out = st;
    return 0;
}

int upstream_grpc_details_parse(const char *v, size_t len, struct buf *scratch,
                                struct upstream_rpc_status *out)
{
    buf_reset(scratch);
    int rv = upstream_base64_decode(v, len, scratch);
    if (rv != 0) {
        return rv;
    }
    return upstream_rpc_status_parse(scratch->data, scratch->len, out);
}

int upstream_partial_success_parse(const uint8_t *p, size_t len, struct upstream_partial *out)
{
    memset(out, 0, sizeof(*out));
    struct pb r = pb_reader(p, len);
    while (r.p < r.end) {
        uint32_t f;
        int wt;
        struct pb ps;
        if (pb_tag(&r, &f, &wt) != 0) {
            return DLOTEL_ERR_BAD_INPUT;
        }
        if (f != 1) {
            if (pb_skip(&r, wt) != 0) {
                return DLOTEL_ERR_BAD_INPUT;
            }
            continue;
        }
        /* A message field seen twice is merged: later scalars win, which is what we do. */
        if (wt != WT_LEN || pb_bytes(&r, &ps) != 0) {
            return DLOTEL_ERR_BAD_INPUT;
        }
        out->present = true;
        while (ps.p < ps.end) {
            uint64_t v;
            struct pb s;
            if (pb_tag(&ps, &f, &wt) != 0) {
                return DLOTEL_ERR_BAD_INPUT;
            }
            if (f == 1) {
                if (wt != WT_VARINT || pb_varint(&ps, &v) != 0) {
                    return DLOTEL_ERR_BAD_INPUT;
                }
                out->rejected = (int64_t)v < 0 ? 0 : v;
            } else if (f == 2) {
                if (wt != WT_LEN || pb_bytes(&ps, &s) != 0) {
                    return DLOTEL_ERR_BAD_INPUT;
                }
                upstream_text_copy(out->message, sizeof(out->message), s.p, (size_t)(s.end - s.p));
            } else if (pb_skip(&ps, wt) != 0) {
                return DLOTEL_ERR_BAD_INPUT;
            }
        }
    }
    return 0;
}

/* -------------------------------------------------------------------------------------------- */
/* JSON */

/* An int64 in OTLP/JSON: a decimal string or a number. Negative values count as zero. */
static int json_count(json_t *v, uint64_t *out)
{
    if (json_is_integer(v)) {
        json_int_t n = json_integer_value(v);
        *out = n < 0 ? 0 : (uint64_t)n;
        return 0;
    }
    if (!json_is_string(v)) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    bool neg = n > 0 && s[0] == '-';
    size_t i = neg ? 1 : 0;
    if (i == n) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    uint64_t x = 0;
    for (; i < n; i++) {
        if (!is_digit(s[i])) {
            return DLOTEL_ERR_BAD_INPUT;
        }
        uint64_t d = (uint64_t)(s[i] - '0');
        if (x > (UINT64_MAX - d) / 10) {
            return DLOTEL_ERR_BAD_INPUT;
        }
        x = x * 10 + d;
    }
    if (x > (uint64_t)INT64_MAX) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    *out = neg ? 0 : x;
    return 0;
}

static json_t *json_get2(json_t *obj, const char *camel, const char *snake)
{
    json_t *v = json_object_get(obj, camel);
    return v != NULL ? v : json_object_get(obj, snake);
}

int upstream_partial_success_parse_json(enum otlp_signal s, const char *p, size_t len,
                                        struct upstream_partial *out)
{
    static const char *const camel[] = {"rejectedSpans", "rejectedDataPoints",
                                        "rejectedLogRecords"};
    static const char *const snake[] = {"rejected_spans", "rejected_data_points",
                                        "rejected_log_records"};
    memset(out, 0, sizeof(*out));
    if ((unsigned)s >= OTLP_SIGNAL_COUNT) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    json_error_t jerr;
    json_t *root = json_loadb(p, len, 0, &jerr);
    if (root == NULL) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    int rv = 0;
    if (!json_is_object(root)) {
        rv = DLOTEL_ERR_BAD_INPUT;
        goto out;
    }
    json_t *ps = json_get2(root, "partialSuccess", "partial_success");
    if (ps == NULL || json_is_null(ps)) {
        goto out;
    }
    if (!json_is_object(ps)) {
        rv = DLOTEL_ERR_BAD_INPUT;
        goto out;
    }
    out->present = true;
    json_t *n = json_get2(ps, camel[s], snake[s]);
    if (n != NULL && !json_is_null(n) && json_count(n, &out->rejected) != 0) {
        rv = DLOTEL_ERR_BAD_INPUT;
        goto out;
    }
    json_t *m = json_get2(ps, "errorMessage", "error_message");
    if (m != NULL && json_is_string(m)) {
        upstream_text_copy(out->message, sizeof(out->message),
                           (const uint8_t *)json_string_value(m), json_string_length(m));
    } else if (m != NULL && !json_is_null(m)) {
        rv = DLOTEL_ERR_BAD_INPUT;
    }
out:
    json_decref(root);
    if (rv != 0) {
        memset(out, 0, sizeof(*out));
    }
    return rv;
}

int upstream_rpc_status_parse_json(const char *p, size_t len, struct upstream_rpc_status *out)
{
    json_error_t jerr;
    json_t *root = json_loadb(p, len, 0, &jerr);
    if (root == NULL) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    int rv = DLOTEL_ERR_BAD_INPUT;
    if (json_is_object(root)) {
        struct upstream_rpc_status st;
        memset(&st, 0, sizeof(st));
        json_t *code = json_object_get(root, "code");
        json_t *msg = json_object_get(root, "message");
        if (code != NULL && json_is_integer(code)) {
            st.code = (int32_t)json_integer_value(code);
        }
        if (msg != NULL && json_is_string(msg)) {
            upstream_text_copy(st.message, sizeof(st.message),
                               (const uint8_t *)json_string_value(msg), json_string_length(msg));
        }
        if ((code == NULL || json_is_integer(code)) && (msg == NULL || json_is_string(msg))) {
            *out = st;
            rv = 0;
        }
    }
    json_decref(root);
    return rv;
}

/* -------------------------------------------------------------------------------------------- */
/* Text */

/* Length of the valid UTF-8 sequence at |p| (at most |n| bytes available), or 0 if invalid. */
static size_t utf8_seq(const uint8_t *p, size_t n)
{
    uint8_t c = p[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
        return 1;
    } else if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len) {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }
        cp = cp << 6 | (p[i] & 0x3f);
    }
    /* Overlong forms, UTF-16 surrogates and code points past U+10FFFF are not UTF-8. */
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff)) {
        return 0;
    }
    return len;
}

size_t upstream_text_copy(char *dst, size_t cap, const uint8_t *src, size_t len)
{
    size_t o = 0;
    size_t i = 0;
    if (cap == 0) {
        return 0;
    }
    while (i < len) {
        size_t n = utf8_seq(src + i, len - i);
        if (n == 0 || (n == 1 && (src[i] < 0x20 || src[i] == 0x7f))) {
            if (o + 1 >= cap) {
                break;
            }
            dst[o++] = n == 0 ? '?' : ' ';
            i += 1;
            continue;
        }
        if (o + n >= cap) {
            break; /* Never split a character. */
        }
        memcpy(dst + o, src + i, n);
        o += n;
        i += n;
    }
    dst[o] = 0;
    return o;
}
