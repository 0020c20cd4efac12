/*
 * Text forms of OTLP values for the sink's columns: JSON for events, links, exemplars and
 * non-string log bodies; plain text for the values of the attribute maps; hex for ids. Part of
 * dlotel_sink_values (sink_values.h): no DuckDB here, the live stream renders with it too.
 *
 * Strings from a decoded request are valid UTF-8 (otlp_scan checks every string field), so JSON
 * escaping only needs the characters JSON forbids raw: the quote, the backslash and controls.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dlotel.h"
#include "otlp/otlp.h"
#include "sink/sink_values.h"

static const char hexdigits[] = "0123456789abcdef";

int sink_json_str(struct buf *b, const char *s, size_t n)
{
    /* One JSON string writer for the whole agent: the otlp room's, which the file exporter uses. */
    return otlp_json_put_string(b, s, n);
}

int sink_double_text(struct buf *b, double d)
{
    if (isnan(d)) {
        return buf_append(b, "NaN", 3);
    }
    if (isinf(d)) {
        return d > 0 ? buf_append(b, "Infinity", 8) : buf_append(b, "-Infinity", 9);
    }
    /* The shortest of 15, 16 or 17 significant digits that reads back as the same double. */
    char tmp[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof(tmp), "%.*g", prec, d);
        if (prec == 17 || strtod(tmp, NULL) == d) {
            break;
        }
    }
    return buf_append(b, tmp, strlen(tmp));
}

int sink_json_double(struct buf *b, double d)
{
    if (!isfinite(d)) {
        return buf_append(b, "null", 4);
    }
    return sink_double_text(b, d);
}

static int base64(struct buf *b, const uint8_t *p, size_t n)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    int rc = buf_reserve(b, (n + 2) / 3 * 4);
    for (size_t i = 0; rc == 0 && i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        size_t left = n - i;
        if (left > 1) {
            v |= (uint32_t)p[i + 1] << 8;
        }
        if (left > 2) {
            v |= p[i + 2];
        }
        char out[4] = {tbl[(v >> 18) & 63], tbl[(v >> 12) & 63],
                       left > 1 ? tbl[(v >> 6) & 63] : '=', left > 2 ? tbl[v & 63] : '='};
        rc = buf_append(b, out, 4);
    }
    return rc;
}

int sink_hex(struct buf *b, const uint8_t *p, size_t n)
{
    int rc = buf_reserve(b, n * 2);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char two[2] = {hexdigits[p[i] >> 4], hexdigits[p[i] & 15]};
        rc = buf_append(b, two, 2);
    }
    return rc;
}

void sink_hex_id(char *out, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hexdigits[p[i] >> 4];
        out[2 * i + 1] = hexdigits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

/*
 * Whether kv[i]'s key already appeared in kv[0..i-1]. Attribute lists are short (tens), so the
 * quadratic scan is cheaper than hashing; a hostile request with thousands of keys is bounded
 * by the request size limit and pays for itself.
 */
static bool seen_before(sink_keyvalue *const *kv, size_t i)
{
    const char *k = kv[i]->key;
    for (size_t j = 0; j < i; j++) {
        if (kv[j] != NULL && kv[j]->key != NULL && strcmp(kv[j]->key, k) == 0) {
            return true;
        }
    }
    return false;
}

int sink_json_attributes(struct buf *b, sink_keyvalue *const *kv, size_t n, sink_double_fn dbl)
{
    int rc = buf_putc(b, '{');
    bool first = true;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (kv[i] == NULL || kv[i]->key == NULL || (n <= 256 && seen_before(kv, i))) {
            continue;
        }
        if (!first) {
            rc = buf_putc(b, ',');
        }
        first = false;
        if (rc == 0) {
            rc = sink_json_str(b, kv[i]->key, strlen(kv[i]->key));
        }
        if (rc == 0) {
            rc = buf_putc(b, ':');
        }
        if (rc == 0) {
            rc = sink_json_anyvalue(b, kv[i]->value, dbl);
        }
    }
    return rc == 0 ? buf_putc(b, '}') : rc;
}

int sink_json_anyvalue(struct buf *b, const sink_anyvalue *v, sink_double_fn dbl)
{
    if (v == NULL) {
        return buf_append(b, "null", 4);
    }
    switch (v->value_case) {
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE:
        return sink_json_str(b, v->string_value, strlen(v->string_value));
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE:
        return v->bool_value ? buf_append(b, "true", 4) : buf_append(b, "false", 5);
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE:
        return buf_printf(b, "%" PRId64, v->int_value);
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_DOUBLE_VALUE:
        return dbl(b, v->double_value);
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BYTES_VALUE: {
        int rc = buf_putc(b, '"');
        if (rc == 0) {
            rc = base64(b, v->bytes_value.data, v->bytes_value.len);
        }
        return rc == 0 ? buf_putc(b, '"') : rc;
    }
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_ARRAY_VALUE: {
        /* Nesting is bounded by OTLP_MAX_DEPTH: otlp_scan refused anything deeper. */
        const Opentelemetry__Proto__Common__V1__ArrayValue *a = v->array_value;
        int rc = buf_putc(b, '[');
        for (size_t i = 0; rc == 0 && a != NULL && i < a->n_values; i++) {
            if (i > 0) {
                rc = buf_putc(b, ',');
            }
            if (rc == 0) {
                rc = sink_json_anyvalue(b, a->values[i], dbl);
            }
        }
        return rc == 0 ? buf_putc(b, ']') : rc;
    }
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_KVLIST_VALUE: {
        const Opentelemetry__Proto__Common__V1__KeyValueList *l = v->kvlist_value;
        if (l == NULL) {
            return buf_append(b, "{}", 2);
        }
        return sink_json_attributes(b, l->values, l->n_values, dbl);
    }
    default:
        return buf_append(b, "null", 4);
    }
}

int sink_value_text(struct buf *b, const sink_anyvalue *v, sink_double_fn dbl)
{
    if (v == NULL) {
        return 1;
    }
    switch (v->value_case) {
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE:
        return buf_append(b, v->string_value, strlen(v->string_value));
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE:
        return v->bool_value ? buf_append(b, "true", 4) : buf_append(b, "false", 5);
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE:
        return buf_printf(b, "%" PRId64, v->int_value);
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_DOUBLE_VALUE:
        return sink_double_text(b, v->double_value);
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BYTES_VALUE:
        return base64(b, v->bytes_value.data, v->bytes_value.len);
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_ARRAY_VALUE:
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_KVLIST_VALUE:
        return sink_json_anyvalue(b, v, dbl);
    default:
        return 1;
    }
}

/* An id inside a JSON column: null when empty, else hex (whatever its length). */
static int id_json(struct buf *b, const ProtobufCBinaryData *id)
{
    if (id->len == 0) {
        return buf_append(b, "null", 4);
    }
    int rc = buf_putc(b, '"');
    if (rc == 0) {
        rc = sink_hex(b, id->data, id->len);
    }
    return rc == 0 ? buf_putc(b, '"') : rc;
}

int sink_json_events(struct buf *b, const sink_span *sp, sink_double_fn dbl)
{
    int rc = buf_putc(b, '[');
    for (size_t i = 0; rc == 0 && i < sp->n_events; i++) {
        const Opentelemetry__Proto__Trace__V1__Span__Event *ev = sp->events[i];
        if (ev == NULL) {
            continue;
        }
        rc = buf_printf(b, "%s{\"name\":", i > 0 ? "," : "");
        if (rc == 0) {
            rc = sink_json_str(b, ev->name, strlen(ev->name));
        }
        if (rc == 0) {
            rc = buf_printf(b, ",\"time_unix_nano\":%" PRId64 ",\"attributes\":",
                            sink_clamp_u64(ev->time_unix_nano));
        }
        if (rc == 0) {
            rc = sink_json_attributes(b, ev->attributes, ev->n_attributes, dbl);
        }
        if (rc == 0) {
            rc = buf_printf(b, ",\"dropped_attributes_count\":%" PRIu32 "}",
                            ev->dropped_attributes_count);
        }
    }
    return rc == 0 ? buf_putc(b, ']') : rc;
}

int sink_json_links(struct buf *b, const sink_span *sp, sink_double_fn dbl)
{
    int rc = buf_putc(b, '[');
    for (size_t i = 0; rc == 0 && i < sp->n_links; i++) {
        const Opentelemetry__Proto__Trace__V1__Span__Link *l = sp->links[i];
        if (l == NULL) {
            continue;
        }
        rc = buf_printf(b, "%s{\"trace_id\":", i > 0 ? "," : "");
        if (rc == 0) {
            rc = id_json(b, &l->trace_id);
        }
        if (rc == 0) {
            rc = buf_append(b, ",\"span_id\":", 11);
        }
        if (rc == 0) {
            rc = id_json(b, &l->span_id);
        }
        if (rc == 0) {
            rc = buf_append(b, ",\"trace_state\":", 15);
        }
        if (rc == 0) {
            rc = sink_json_str(b, l->trace_state, strlen(l->trace_state));
        }
        if (rc == 0) {
            rc = buf_append(b, ",\"attributes\":", 14);
        }
        if (rc == 0) {
            rc = sink_json_attributes(b, l->attributes, l->n_attributes, dbl);
        }
        if (rc == 0) {
            rc = buf_printf(b, ",\"dropped_attributes_count\":%" PRIu32 ",\"flags\":%" PRIu32 "}",
                            l->dropped_attributes_count, l->flags);
        }
    }
    return rc == 0 ? buf_putc(b, ']') : rc;
}

int sink_json_exemplars(struct buf *b, sink_exemplar *const *ex, size_t n, sink_double_fn dbl)
{
    int rc = buf_putc(b, '[');
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const sink_exemplar *x = ex[i];
        if (x == NULL) {
            continue;
        }
        rc = buf_printf(b, "%s{\"time_unix_nano\":%" PRId64 ",\"value\":", i > 0 ? "," : "",
                        sink_clamp_u64(x->time_unix_nano));
        if (rc == 0) {
            if (x->value_case == OPENTELEMETRY__PROTO__METRICS__V1__EXEMPLAR__VALUE_AS_INT) {
                rc = buf_printf(b, "%" PRId64, x->as_int);
            } else if (x->value_case ==
                       OPENTELEMETRY__PROTO__METRICS__V1__EXEMPLAR__VALUE_AS_DOUBLE) {
                rc = dbl(b, x->as_double);
            } else {
                rc = buf_append(b, "null", 4);
            }
        }
        if (rc == 0) {
            rc = buf_append(b, ",\"trace_id\":", 12);
        }
        if (rc == 0) {
            rc = id_json(b, &x->trace_id);
        }
        if (rc == 0) {
            rc = buf_append(b, ",\"span_id\":", 11);
        }
        if (rc == 0) {
            rc = id_json(b, &x->span_id);
        }
        if (rc == 0) {
            rc = buf_append(b, ",\"filtered_attributes\":", 23);
        }
        if (rc == 0) {
            rc = sink_json_attributes(b, x->filtered_attributes, x->n_filtered_attributes, dbl);
        }
        if (rc == 0) {
            rc = buf_putc(b, '}');
        }
    }
    return rc == 0 ? buf_putc(b, ']') : rc;
}

int sink_json_sanitize(struct buf *b, const char *s, size_t n)
{
    int rc = buf_reserve(b, n);
    size_t start = 0;
    bool in_str = false;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\') {
                i++; /* Skip the escaped character, whatever it is. */
            } else if (c == '"') {
                in_str = false;
            }
            continue;
        }
        if (c == '"') {
            in_str = true;
            continue;
        }
        size_t tok = 0;
        if (c == 'N' && n - i >= 3 && memcmp(s + i, "NaN", 3) == 0) {
            tok = 3;
        } else if (c == 'I' && n - i >= 8 && memcmp(s + i, "Infinity", 8) == 0) {
            tok = 8;
        } else if (c == '-' && n - i >= 9 && memcmp(s + i, "-Infinity", 9) == 0) {
            tok = 9;
        }
        if (tok == 0) {
            continue;
        }
        rc = buf_append(b, s + start, i - start);
        if (rc == 0) {
            rc = buf_append(b, "null", 4);
        }
        i += tok - 1;
        start = i + 1;
    }
    if (rc == 0 && n > start) {
        rc = buf_append(b, s + start, n - start);
    }
    return rc;
}
