/*
 * The OTLP/JSON codec: one generic walker over protobuf-c's message descriptors in each
 * direction, plus the rules the OTLP specification adds to the proto3 JSON mapping.
 *
 * The descriptors give every field's proto name, number, label, type, and the offsets of its
 * member and quantifier (n_ count, oneof case) in the C struct, so neither direction needs code
 * per message. The OTLP-specific rules are few: trace and span ids are hex rather than base64
 * (ids_hex below), and enums are written as integers.
 *
 * Decoding reads the text with jansson, builds the protobuf-c message in the caller's arena and
 * packs it with protobuf-c. Encoding unpacks with protobuf-c into the arena (after otlp_scan(),
 * which bounds nesting and guarantees UTF-8) and writes the JSON text straight into the output
 * buffer, without a jansson tree in between.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/hex.h"
#include "dlotel.h"
#include "otlp/otlp_int.h"
#include "otlp/otlp_pb.h"

/*
 * jansson 2.14 does not always report a failed allocation: its lexer ignores a failed append to
 * the string it is reading, so a key or a value comes out cut short and the parse "succeeds"
 * (tests/unit/test_alloc_fail.c: "resourceMetrics" read as "resourceMetric", the request then
 * decoded as empty and acknowledged). So jansson allocates through these functions, which note a
 * failure for the parse running on this thread; a parse during which one failed is NOMEM. They
 * are plain malloc and free otherwise, so installing them for the whole process changes nothing
 * for other users of jansson.
 */
static _Thread_local bool json_alloc_failed;
static pthread_once_t json_alloc_once = PTHREAD_ONCE_INIT;

static void *json_alloc(size_t n)
{
    void *p = malloc(n);
    if (p == NULL) {
        json_alloc_failed = true;
    }
    return p;
}

static void json_alloc_free(void *p)
{
    free(p);
}

static void json_alloc_install(void)
{
    json_set_alloc_funcs(json_alloc, json_alloc_free);
}

/* Long enough for every OTLP field name in lowerCamelCase. */
#define JSON_NAME_MAX 64

/*
 * Writes the lowerCamelCase JSON name of a proto field name, as protoc derives json_name:
 * underscores are dropped and the character after one is upper-cased.
 */
static void json_name(const char *name, char *out, size_t cap)
{
    size_t n = 0;
    bool upper = false;
    for (; *name != '\0' && n + 1 < cap; name++) {
        if (*name == '_') {
            upper = true;
            continue;
        }
        char c = *name;
        if (upper && c >= 'a' && c <= 'z') {
            c = (char)(c - 'a' + 'A');
        }
        upper = false;
        out[n++] = c;
    }
    out[n] = '\0';
}

/* True when |key| is the field's proto name or its lowerCamelCase JSON name. */
static bool key_matches(const char *name, const char *key)
{
    const char *k = key;
    bool upper = false;
    bool same = true; /* Still equal to the proto name itself? */
    const char *p = name;
    for (; *p != '\0'; p++) {
        if (*p == '_') {
            upper = true;
            continue;
        }
        char c = *p;
        if (upper && c >= 'a' && c <= 'z') {
            c = (char)(c - 'a' + 'A');
        }
        upper = false;
        if (*k != c) {
            same = false;
            break;
        }
        k++;
    }
    if (same && *k == '\0') {
        return true;
    }
    return strcmp(name, key) == 0;
}

/* OTLP writes these bytes fields as hex; every other bytes field is base64 (proto3 JSON). */
static bool ids_hex(const ProtobufCFieldDescriptor *f)
{
    if (f->type != PROTOBUF_C_TYPE_BYTES) {
        return false;
    }
    return strcmp(f->name, "trace_id") == 0 || strcmp(f->name, "span_id") == 0 ||
           strcmp(f->name, "parent_span_id") == 0;
}

/* The number of bytes an id field must hold when not empty. */
static size_t id_size(const ProtobufCFieldDescriptor *f)
{
    return strcmp(f->name, "trace_id") == 0 ? 16 : 8;
}

static size_t element_size(ProtobufCType type)
{
    switch (type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_ENUM:
        return 4;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return 8;
    case PROTOBUF_C_TYPE_FLOAT:
        return sizeof(float);
    case PROTOBUF_C_TYPE_DOUBLE:
        return sizeof(double);
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(ProtobufCMessage *);
    }
    return 0;
}

/* ---- Decoding: OTLP/JSON to protobuf ------------------------------------------------------ */

/* Decoding state. Messages, strings and arrays are allocated straight from the arena: protobuf-c
 * only packs them, and never frees what it did not allocate. */
struct jdec {
    struct arena *arena;
    char *errbuf;
    size_t errlen;
};

static void set_error(char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_error(char *errbuf, size_t errlen, const char *fmt, ...)
{
    if (errbuf == NULL || errlen == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
}

/* Reports a bad value in field |f| of message |desc|, naming both, and returns BAD_INPUT. */
static int field_error(struct jdec *d, const ProtobufCMessageDescriptor *desc,
                       const ProtobufCFieldDescriptor *f, const char *what)
{
    char name[JSON_NAME_MAX];
    json_name(f->name, name, sizeof(name));
    set_error(d->errbuf, d->errlen, "%s.%s: %s", desc->short_name, name, what);
    return DLOTEL_ERR_BAD_INPUT;
}

static void *dec_alloc(struct jdec *d, size_t n)
{
    return arena_alloc(d->arena, n);
}

static int too_large(struct jdec *d)
{
    set_error(d->errbuf, d->errlen, "request too large to decode (arena limit of %zu bytes)",
              d->arena->max);
    return DLOTEL_ERR_TOO_LARGE;
}

/*
 * Reads an integer given as a JSON integer, an integral JSON real, or a decimal string (the
 * OTLP/JSON form of 64-bit integers). Returns NULL, or why the value is not an integer.
 */
static const char *read_integer(const json_t *v, bool *neg, uint64_t *mag)
{
    if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        *neg = x < 0;
        *mag = x < 0 ? (uint64_t)(-(x + 1)) + 1 : (uint64_t)x;
        return NULL;
    }
    if (json_is_real(v)) {
        double x = json_real_value(v);
        if (!isfinite(x) || x != trunc(x)) {
            return "expected an integer";
        }
        if (fabs(x) >= 18446744073709551616.0) {
            return "integer out of range";
        }
        *neg = x < 0;
        *mag = (uint64_t)fabs(x);
        return NULL;
    }
    if (!json_is_string(v)) {
        return "expected an integer or a decimal string";
    }
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    size_t i = 0;
    *neg = false;
    if (n > 0 && s[0] == '-') {
        *neg = true;
        i = 1;
    }
    if (i == n) {
        return "expected a decimal integer string";
    }
    uint64_t r = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return "expected a decimal integer string";
        }
        unsigned digit = (unsigned)(s[i] - '0');
        if (r > (UINT64_MAX - digit) / 10) {
            return "integer out of range";
        }
        r = r * 10 + digit;
    }
    *mag = r;
    return NULL;
}

static const char *read_signed(const json_t *v, int64_t min, int64_t max, int64_t *out)
{
    bool neg;
    uint64_t mag;
    const char *why = read_integer(v, &neg, &mag);
    if (why != NULL) {
        return why;
    }
    if (neg) {
        /* -(min) as an unsigned magnitude, without overflowing for INT64_MIN. */
        if (mag > (uint64_t)(-(min + 1)) + 1) {
            return "integer out of range";
        }
        *out = mag == 0 ? 0 : -(int64_t)(mag - 1) - 1;
    } else {
        if (mag > (uint64_t)max) {
            return "integer out of range";
        }
        *out = (int64_t)mag;
    }
    return NULL;
}

static const char *read_unsigned(const json_t *v, uint64_t max, uint64_t *out)
{
    bool neg;
    uint64_t mag;
    const char *why = read_integer(v, &neg, &mag);
    if (why != NULL) {
        return why;
    }
    if ((neg && mag != 0) || mag > max) {
        return "integer out of range";
    }
    *out = mag;
    return NULL;
}

/* True when s[0..n) is a JSON number (so strtod sees nothing it would read differently). */
static bool is_json_number(const char *s, size_t n)
{
    size_t i = 0;
    if (i < n && s[i] == '-') {
        i++;
    }
    if (i == n || s[i] < '0' || s[i] > '9') {
        return false;
    }
    if (s[i] == '0') {
        i++;
    } else {
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            i++;
        }
    }
    if (i < n && s[i] == '.') {
        i++;
        if (i == n || s[i] < '0' || s[i] > '9') {
            return false;
        }
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            i++;
        }
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) {
            i++;
        }
        if (i == n || s[i] < '0' || s[i] > '9') {
            return false;
        }
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            i++;
        }
    }
    return i == n;
}

static const char *read_double(const json_t *v, double *out)
{
    if (json_is_number(v)) {
        *out = json_number_value(v);
        return NULL;
    }
    if (!json_is_string(v)) {
        return "expected a number";
    }
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (strcmp(s, "NaN") == 0) {
        *out = NAN;
    } else if (strcmp(s, "Infinity") == 0) {
        *out = INFINITY;
    } else if (strcmp(s, "-Infinity") == 0) {
        *out = -INFINITY;
    } else if (n < 64 && is_json_number(s, n)) {
        *out = strtod(s, NULL);
    } else {
        return "expected a number, \"NaN\", \"Infinity\" or \"-Infinity\"";
    }
    return NULL;
}

static int base64_value(char c)
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
    /* Both the standard and the URL-safe alphabets, as proto3 JSON parsers accept. */
    if (c == '+' || c == '-') {
        return 62;
    }
    if (c == '/' || c == '_') {
        return 63;
    }
    return -1;
}

static int decode_bytes(struct jdec *d, const ProtobufCMessageDescriptor *desc,
                        const ProtobufCFieldDescriptor *f, const json_t *v,
                        ProtobufCBinaryData *out)
{
    if (!json_is_string(v)) {
        return field_error(d, desc, f, "expected a string");
    }
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n == 0) {
        out->len = 0;
        out->data = NULL;
        return 0;
    }
    if (ids_hex(f)) {
        size_t want = id_size(f);
        if (n != want * 2) {
            return field_error(d, desc, f,
                               want == 16 ? "expected 32 hex digits" : "expected 16 hex digits");
        }
        uint8_t *p = dec_alloc(d, want);
        if (p == NULL) {
            return too_large(d);
        }
        for (size_t i = 0; i < want; i++) {
            int hi = hex_digit_value(s[2 * i]);
            int lo = hex_digit_value(s[2 * i + 1]);
            if (hi < 0 || lo < 0) {
                return field_error(d, desc, f, "not a hex string");
            }
            p[i] = (uint8_t)(hi << 4 | lo);
        }
        out->len = want;
        out->data = p;
        return 0;
    }
    /* Base64, padding optional. */
    while (n > 0 && s[n - 1] == '=') {
        n--;
    }
    if (n % 4 == 1 || json_string_length(v) - n > 2) {
        return field_error(d, desc, f, "not base64");
    }
    uint8_t *p = dec_alloc(d, n / 4 * 3 + 3);
    if (p == NULL) {
        return too_large(d);
    }
    size_t len = 0;
    uint32_t acc = 0;
    unsigned bits = 0;
    for (size_t i = 0; i < n; i++) {
        int x = base64_value(s[i]);
        if (x < 0) {
            return field_error(d, desc, f, "not base64");
        }
        acc = acc << 6 | (uint32_t)x;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            p[len++] = (uint8_t)(acc >> bits);
        }
    }
    out->len = len;
    out->data = p;
    return 0;
}

static int decode_message(struct jdec *d, const ProtobufCMessageDescriptor *desc, const json_t *obj,
                          unsigned depth, ProtobufCMessage **out);

/* Decodes one value of field |f| into |dst| (the member, or one element of a repeated field). */
static int decode_value(struct jdec *d, const ProtobufCMessageDescriptor *desc,
                        const ProtobufCFieldDescriptor *f, const json_t *v, void *dst,
                        unsigned depth)
{
    const char *why = NULL;
    int64_t i64 = 0;
    uint64_t u64 = 0;
    double dbl = 0;

    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        if ((why = read_signed(v, INT32_MIN, INT32_MAX, &i64)) == NULL) {
            *(int32_t *)dst = (int32_t)i64;
        }
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        if ((why = read_unsigned(v, UINT32_MAX, &u64)) == NULL) {
            *(uint32_t *)dst = (uint32_t)u64;
        }
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        if ((why = read_signed(v, INT64_MIN, INT64_MAX, &i64)) == NULL) {
            *(int64_t *)dst = i64;
        }
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        if ((why = read_unsigned(v, UINT64_MAX, &u64)) == NULL) {
            *(uint64_t *)dst = u64;
        }
        break;
    case PROTOBUF_C_TYPE_FLOAT:
        if ((why = read_double(v, &dbl)) == NULL) {
            *(float *)dst = (float)dbl;
        }
        break;
    case PROTOBUF_C_TYPE_DOUBLE:
        if ((why = read_double(v, &dbl)) == NULL) {
            *(double *)dst = dbl;
        }
        break;
    case PROTOBUF_C_TYPE_BOOL:
        if (json_is_boolean(v)) {
            *(protobuf_c_boolean *)dst = json_is_true(v);
        } else {
            why = "expected true or false";
        }
        break;
    case PROTOBUF_C_TYPE_ENUM:
        if (json_is_string(v)) {
            /* The value's name, e.g. "SPAN_KIND_SERVER". */
            const ProtobufCEnumValue *ev =
                protobuf_c_enum_descriptor_get_value_by_name(f->descriptor, json_string_value(v));
            if (ev == NULL) {
                why = "unknown enum value name";
            } else {
                *(int32_t *)dst = ev->value;
            }
        } else if ((why = read_signed(v, INT32_MIN, INT32_MAX, &i64)) == NULL) {
            /* proto3 enums are open: numbers this schema does not name are kept. */
            *(int32_t *)dst = (int32_t)i64;
        }
        break;
    case PROTOBUF_C_TYPE_STRING: {
        if (!json_is_string(v)) {
            why = "expected a string";
            break;
        }
        size_t n = json_string_length(v);
        char *s = dec_alloc(d, n + 1);
        if (s == NULL) {
            return too_large(d);
        }
        memcpy(s, json_string_value(v), n);
        s[n] = '\0';
        *(char **)dst = s;
        break;
    }
    case PROTOBUF_C_TYPE_BYTES:
        return decode_bytes(d, desc, f, v, dst);
    case PROTOBUF_C_TYPE_MESSAGE:
        return decode_message(d, f->descriptor, v, depth + 1, dst);
    }
    if (why != NULL) {
        return field_error(d, desc, f, why);
    }
    return 0;
}

static int decode_field(struct jdec *d, const ProtobufCMessageDescriptor *desc,
                        ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f, const json_t *v,
                        unsigned depth)
{
    char *base = (char *)msg;
    void *member = base + f->offset;

    /* null stands for the default value, as if the key were absent. */
    if (json_is_null(v)) {
        return 0;
    }

    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        if (!json_is_array(v)) {
            return field_error(d, desc, f, "expected an array");
        }
        size_t n = json_array_size(v);
        size_t esize = element_size(f->type);
        void *elems = NULL;
        if (n > 0) {
            if (n > SIZE_MAX / esize) {
                return too_large(d);
            }
            elems = dec_alloc(d, n * esize);
            if (elems == NULL) {
                return too_large(d);
            }
        }
        for (size_t i = 0; i < n; i++) {
            const json_t *e = json_array_get(v, i);
            if (json_is_null(e)) {
                return field_error(d, desc, f, "null in an array");
            }
            int rc = decode_value(d, desc, f, e, (char *)elems + i * esize, depth);
            if (rc != 0) {
                return rc;
            }
        }
        *(size_t *)(base + f->quantifier_offset) = n;
        *(void **)member = elems;
        return 0;
    }

    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        uint32_t *which = (uint32_t *)(base + f->quantifier_offset);
        if (*which != 0 && *which != f->id) {
            return field_error(d, desc, f, "more than one member of a oneof is set");
        }
        int rc = decode_value(d, desc, f, v, member, depth);
        if (rc != 0) {
            return rc;
        }
        *which = f->id;
        return 0;
    }

    int rc = decode_value(d, desc, f, v, member, depth);
    if (rc != 0) {
        return rc;
    }
    /* proto2-style presence (none of the OTLP messages has it; kept for completeness). */
    if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_MESSAGE &&
        f->type != PROTOBUF_C_TYPE_STRING) {
        *(protobuf_c_boolean *)(base + f->quantifier_offset) = 1;
    }
    return 0;
}

static int decode_message(struct jdec *d, const ProtobufCMessageDescriptor *desc, const json_t *obj,
                          unsigned depth, ProtobufCMessage **out)
{
    if (!json_is_object(obj)) {
        set_error(d->errbuf, d->errlen, "%s: expected a JSON object", desc->short_name);
        return DLOTEL_ERR_BAD_INPUT;
    }
    /* The scanner's bound: the bytes we produce must pass otlp_scan() downstream. */
    if (depth > OTLP_MAX_DEPTH) {
        set_error(d->errbuf, d->errlen, "%s: messages nested more than %d deep", desc->short_name,
                  OTLP_MAX_DEPTH);
        return DLOTEL_ERR_BAD_INPUT;
    }
    ProtobufCMessage *msg = dec_alloc(d, desc->sizeof_message);
    if (msg == NULL) {
        return too_large(d);
    }
    protobuf_c_message_init(desc, msg);

    const char *key;
    json_t *v;
    /* json_object_foreach's iterator is not const-correct; nothing here modifies |obj|. */
    json_t *o = (json_t *)obj;
    json_object_foreach(o, key, v)
    {
        const ProtobufCFieldDescriptor *f = NULL;
        for (unsigned i = 0; i < desc->n_fields; i++) {
            if (key_matches(desc->fields[i].name, key)) {
                f = &desc->fields[i];
                break;
            }
        }
        if (f == NULL) {
            /* Unknown keys are ignored, as the OTLP/JSON rules require. */
            continue;
        }
        int rc = decode_field(d, desc, msg, f, v, depth);
        if (rc != 0) {
            return rc;
        }
    }
    *out = msg;
    return 0;
}

/*
 * An upper estimate of the memory jansson needs for the tree of |json|. jansson allocates
 * outside our arena, and a hostile request of small values (a long array of 0s) costs it 16
 * times its size, so the tree is charged to the arena's limit before it is built. Measured on
 * jansson 2.14: about 90 bytes per value in objects, 32 in flat arrays; every '{', '[', ',' and
 * ':' outside strings starts at most one value.
 */
static size_t json_tree_estimate(const char *json, size_t len)
{
    size_t values = 1;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char c = json[i];
        if (in_string) {
            if (c == '\\') {
                i++;
            } else if (c == '"') {
                in_string = false;
            }
            continue;
        }
        if (c == '"') {
            in_string = true;
        } else if (c == '{' || c == '[' || c == ',' || c == ':') {
            values++;
        }
    }
    return values > (SIZE_MAX - len) / 96 ? SIZE_MAX : values * 96 + len;
}

int otlp_json_to_pb(enum otlp_signal s, const char *json, size_t len, struct arena *arena,
                    struct buf *out, char *errbuf, size_t errlen)
{
    const ProtobufCMessageDescriptor *desc = otlp_request_descriptor(s);
    if (desc == NULL) {
        set_error(errbuf, errlen, "unknown signal");
        return DLOTEL_ERR_INVALID_ARG;
    }
    size_t tree = json_tree_estimate(json, len);
    if (tree > arena->max || arena->total > arena->max - tree) {
        set_error(errbuf, errlen,
                  "JSON request too large to decode (about %zu bytes of tree, limit %zu)", tree,
                  arena->max);
        return DLOTEL_ERR_TOO_LARGE;
    }
    json_error_t jerr;
    (void)pthread_once(&json_alloc_once, json_alloc_install);
    json_alloc_failed = false;
    /* Duplicate keys are allowed (the last wins); jansson rejects invalid UTF-8 and \u0000,
     * and bounds nesting itself. */
    json_t *root = json_loadb(json, len, 0, &jerr);
    if (json_alloc_failed || (root == NULL && json_error_code(&jerr) == json_error_out_of_memory)) {
        /* Our failure, not the client's: neither a bad request nor a (truncated) success. */
        json_decref(root);
        set_error(errbuf, errlen, "out of memory while parsing JSON");
        return DLOTEL_ERR_NOMEM;
    }
    if (root == NULL) {
        set_error(errbuf, errlen, "invalid JSON at line %d, column %d: %s", jerr.line, jerr.column,
                  jerr.text);
        return DLOTEL_ERR_BAD_INPUT;
    }

    struct jdec d = {.arena = arena, .errbuf = errbuf, .errlen = errlen};
    ProtobufCMessage *msg = NULL;
    int rc = decode_message(&d, desc, root, 0, &msg);
    json_decref(root);
    if (rc != 0) {
        return rc;
    }

    size_t size = protobuf_c_message_get_packed_size(msg);
    rc = buf_reserve(out, size);
    if (rc != 0) {
        set_error(errbuf, errlen, "encoded request of %zu bytes does not fit the buffer", size);
        return rc;
    }
    protobuf_c_message_pack(msg, out->data + out->len);
    out->len += size;
    return 0;
}

/* ---- Encoding: protobuf to OTLP/JSON ------------------------------------------------------ */

struct jenc {
    struct buf *out;
};

static int put(struct jenc *e, const char *s, size_t n)
{
    return buf_append(e->out, s, n);
}

static int put_u64(struct jenc *e, uint64_t v, bool quoted)
{
    char tmp[24];
    size_t i = sizeof(tmp);
    if (quoted) {
        tmp[--i] = '"';
    }
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    if (quoted) {
        tmp[--i] = '"';
    }
    return put(e, tmp + i, sizeof(tmp) - i);
}

static int put_i64(struct jenc *e, int64_t v, bool quoted)
{
    if (v >= 0) {
        return put_u64(e, (uint64_t)v, quoted);
    }
    uint64_t mag = (uint64_t)(-(v + 1)) + 1;
    char tmp[24];
    size_t i = sizeof(tmp);
    if (quoted) {
        tmp[--i] = '"';
    }
    do {
        tmp[--i] = (char)('0' + mag % 10);
        mag /= 10;
    } while (mag != 0);
    tmp[--i] = '-';
    if (quoted) {
        tmp[--i] = '"';
    }
    return put(e, tmp + i, sizeof(tmp) - i);
}

static int put_double(struct jenc *e, double v)
{
    if (isnan(v)) {
        return put(e, "\"NaN\"", 5);
    }
    if (isinf(v)) {
        return v > 0 ? put(e, "\"Infinity\"", 10) : put(e, "\"-Infinity\"", 11);
    }
    if (v == 0) {
        /* "-0" would read back as the integer 0 and lose its sign. */
        return signbit(v) ? put(e, "-0.0", 4) : put(e, "0", 1);
    }
    /* The shortest of 15, 16 or 17 significant digits that reads back to the same double. */
    char tmp[40];
    int n = 0;
    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(tmp, sizeof(tmp), "%.*g", prec, v);
        if (prec == 17 || strtod(tmp, NULL) == v) {
            break;
        }
    }
    if (n <= 0 || (size_t)n >= sizeof(tmp)) {
        return DLOTEL_ERR_INTERNAL;
    }
    return put(e, tmp, (size_t)n);
}

static int put_hex(struct jenc *e, const uint8_t *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    int rc = buf_reserve(e->out, 2 * n + 2);
    if (rc != 0) {
        return rc;
    }
    uint8_t *w = e->out->data + e->out->len;
    *w++ = '"';
    for (size_t i = 0; i < n; i++) {
        *w++ = (uint8_t)digits[p[i] >> 4];
        *w++ = (uint8_t)digits[p[i] & 15];
    }
    *w++ = '"';
    e->out->len += 2 * n + 2;
    return 0;
}

static int put_base64(struct jenc *e, const uint8_t *p, size_t n)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t out_len = (n + 2) / 3 * 4 + 2;
    int rc = buf_reserve(e->out, out_len);
    if (rc != 0) {
        return rc;
    }
    uint8_t *w = e->out->data + e->out->len;
    *w++ = '"';
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t x = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *w++ = (uint8_t)alphabet[x >> 18];
        *w++ = (uint8_t)alphabet[(x >> 12) & 63];
        *w++ = (uint8_t)alphabet[(x >> 6) & 63];
        *w++ = (uint8_t)alphabet[x & 63];
    }
    if (n - i == 1) {
        uint32_t x = (uint32_t)p[i] << 16;
        *w++ = (uint8_t)alphabet[x >> 18];
        *w++ = (uint8_t)alphabet[(x >> 12) & 63];
        *w++ = '=';
        *w++ = '=';
    } else if (n - i == 2) {
        uint32_t x = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        *w++ = (uint8_t)alphabet[x >> 18];
        *w++ = (uint8_t)alphabet[(x >> 12) & 63];
        *w++ = (uint8_t)alphabet[(x >> 6) & 63];
        *w++ = '=';
    }
    *w++ = '"';
    e->out->len += out_len;
    return 0;
}

static int encode_message(struct jenc *e, const ProtobufCMessage *msg);

static int encode_value(struct jenc *e, const ProtobufCFieldDescriptor *f, const void *v)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_ENUM:
        return put_i64(e, *(const int32_t *)v, false);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return put_u64(e, *(const uint32_t *)v, false);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        return put_i64(e, *(const int64_t *)v, true);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return put_u64(e, *(const uint64_t *)v, true);
    case PROTOBUF_C_TYPE_FLOAT:
        return put_double(e, *(const float *)v);
    case PROTOBUF_C_TYPE_DOUBLE:
        return put_double(e, *(const double *)v);
    case PROTOBUF_C_TYPE_BOOL:
        return *(const protobuf_c_boolean *)v ? put(e, "true", 4) : put(e, "false", 5);
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)v;
        return s == NULL ? put(e, "\"\"", 2) : otlp_json_put_string(e->out, s, strlen(s));
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = v;
        return ids_hex(f) ? put_hex(e, b->data, b->len) : put_base64(e, b->data, b->len);
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *m = *(ProtobufCMessage *const *)v;
        if (m == NULL) {
            return put(e, "{}", 2);
        }
        return encode_message(e, m);
    }
    }
    return DLOTEL_ERR_INTERNAL;
}

/* True when a field without presence holds its default and so is left out (as protobuf-c's
 * packer leaves it out). */
static bool is_default(const ProtobufCFieldDescriptor *f, const void *v)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_ENUM:
        return *(const uint32_t *)v == 0;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return *(const uint64_t *)v == 0;
    case PROTOBUF_C_TYPE_FLOAT:
        return *(const float *)v == 0;
    case PROTOBUF_C_TYPE_DOUBLE:
        return *(const double *)v == 0;
    case PROTOBUF_C_TYPE_BOOL:
        return *(const protobuf_c_boolean *)v == 0;
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)v;
        return s == NULL || s[0] == '\0';
    }
    case PROTOBUF_C_TYPE_BYTES:
        return ((const ProtobufCBinaryData *)v)->len == 0;
    case PROTOBUF_C_TYPE_MESSAGE:
        return *(ProtobufCMessage *const *)v == NULL;
    }
    return true;
}

static int put_key(struct jenc *e, const ProtobufCFieldDescriptor *f, bool *first)
{
    char name[JSON_NAME_MAX + 4];
    name[0] = '"';
    json_name(f->name, name + 1, JSON_NAME_MAX);
    size_t n = strlen(name);
    name[n++] = '"';
    name[n++] = ':';
    int rc = 0;
    if (!*first) {
        rc = buf_putc(e->out, ',');
    }
    *first = false;
    return rc != 0 ? rc : put(e, name, n);
}

static int encode_message(struct jenc *e, const ProtobufCMessage *msg)
{
    const ProtobufCMessageDescriptor *desc = msg->descriptor;
    const char *base = (const char *)msg;
    bool first = true;
    int rc = buf_putc(e->out, '{');
    for (unsigned i = 0; rc == 0 && i < desc->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &desc->fields[i];
        const void *member = base + f->offset;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            if (n == 0) {
                continue;
            }
            size_t esize = element_size(f->type);
            const char *elems = *(char *const *)member;
            rc = put_key(e, f, &first);
            if (rc == 0) {
                rc = buf_putc(e->out, '[');
            }
            for (size_t j = 0; rc == 0 && j < n; j++) {
                if (j > 0) {
                    rc = buf_putc(e->out, ',');
                }
                if (rc == 0) {
                    rc = encode_value(e, f, elems + j * esize);
                }
            }
            if (rc == 0) {
                rc = buf_putc(e->out, ']');
            }
            continue;
        }
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            /* A oneof member is written when it is the one set, even with a zero value. */
            if (*(const uint32_t *)(base + f->quantifier_offset) != f->id) {
                continue;
            }
        } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_MESSAGE &&
                   f->type != PROTOBUF_C_TYPE_STRING) {
            if (!*(const protobuf_c_boolean *)(base + f->quantifier_offset)) {
                continue;
            }
        } else if (is_default(f, member)) {
            continue;
        }
        rc = put_key(e, f, &first);
        if (rc == 0) {
            rc = encode_value(e, f, member);
        }
    }
    if (rc == 0) {
        rc = buf_putc(e->out, '}');
    }
    return rc;
}

int otlp_pb_to_json(enum otlp_signal s, const uint8_t *pb, size_t len, struct arena *arena,
                    struct buf *out)
{
    ProtobufCMessage *msg;
    int rc = otlp_unpack(s, pb, len, arena, &msg, NULL);
    if (rc != 0) {
        return rc;
    }
    size_t start = out->len;
    struct jenc e = {.out = out};
    rc = encode_message(&e, msg);
    if (rc != 0) {
        out->len = start;
    }
    return rc;
}
