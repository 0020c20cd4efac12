/*
 * Typed values: parsing text into sizes, durations, booleans, integers, enums, lists and maps,
 * formatting them back, and the problem list. Everything here treats its input as untrusted:
 * the fuzzer feeds it through YAML.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "config/config_int.h"
#include "dlotel.h"

/* ---- problems ------------------------------------------------------------------------------ */

void config_errors_init(struct config_errors *e)
{
    memset(e, 0, sizeof(*e));
}

void config_errors_cleanup(struct config_errors *e)
{
    for (size_t i = 0; i < e->n; i++) {
        free(e->items[i].where);
        free(e->items[i].path);
        free(e->items[i].message);
    }
    free(e->items);
    memset(e, 0, sizeof(*e));
}

void config_diag_add(struct config_errors *e, bool warning, const char *where, const char *path,
                     const char *fmt, ...)
{
    if (warning) {
        e->n_warnings++;
    } else {
        e->n_errors++;
    }
    if (e->n >= CONFIG_MAX_DIAGS) {
        e->dropped++;
        return;
    }
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* The list grows one at a time; it is capped at CONFIG_MAX_DIAGS so this stays cheap. */
    struct config_diag *items = realloc(e->items, (e->n + 1) * sizeof(*items));
    if (items == NULL) {
        e->dropped++;
        return;
    }
    e->items = items;
    struct config_diag *d = &items[e->n];
    d->warning = warning;
    d->where = strdup(where != NULL ? where : "");
    d->path = strdup(path != NULL ? path : "");
    d->message = strdup(msg);
    if (d->where == NULL || d->path == NULL || d->message == NULL) {
        free(d->where);
        free(d->path);
        free(d->message);
        e->dropped++;
        return;
    }
    e->n++;
}

int config_errors_format(const struct config_errors *e, struct buf *out, bool warnings)
{
    int rv = 0;
    for (size_t i = 0; i < e->n && rv == 0; i++) {
        const struct config_diag *d = &e->items[i];
        if (d->warning && !warnings) {
            continue;
        }
        rv = buf_printf(out, "%s: ", d->warning ? "warning" : "error");
        if (rv == 0 && d->where[0] != 0) {
            rv = buf_printf(out, "%s: ", d->where);
        }
        if (rv == 0 && d->path[0] != 0) {
            rv = buf_printf(out, "%s: ", d->path);
        }
        if (rv == 0) {
            rv = buf_printf(out, "%s\n", d->message);
        }
    }
    if (rv == 0 && e->dropped > 0) {
        rv = buf_printf(out, "error: %zu more problems not shown\n", e->dropped);
    }
    return rv;
}

/* ---- did you mean -------------------------------------------------------------------------- */

#define DYM_MAX 64

/* Optimal string alignment distance (Damerau-Levenshtein with adjacent transpositions). */
static size_t edit_distance(const char *a, size_t la, const char *b, size_t lb)
{
    size_t d[DYM_MAX + 1][DYM_MAX + 1];
    for (size_t i = 0; i <= la; i++) {
        d[i][0] = i;
    }
    for (size_t j = 0; j <= lb; j++) {
        d[0][j] = j;
    }
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best) {
                best = d[i][j - 1] + 1;
            }
            if (d[i - 1][j - 1] + cost < best) {
                best = d[i - 1][j - 1] + cost;
            }
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < best) {
                best = d[i - 2][j - 2] + 1;
            }
            d[i][j] = best;
        }
    }
    return d[la][lb];
}

const char *config_did_you_mean(const char *word, size_t len, const char *const *cands, size_t n)
{
    if (len == 0 || len > DYM_MAX) {
        return NULL;
    }
    size_t limit = len / 3;
    if (limit < 1) {
        limit = 1;
    }
    if (limit > 3) {
        limit = 3;
    }
    const char *best = NULL;
    size_t best_d = limit + 1;
    for (size_t i = 0; i < n; i++) {
        size_t lc = strlen(cands[i]);
        if (lc > DYM_MAX) {
            continue;
        }
        size_t dist = edit_distance(word, len, cands[i], lc);
        if (dist < best_d) {
            best_d = dist;
            best = cands[i];
        }
    }
    return best;
}

/* ---- strings, lists, maps ------------------------------------------------------------------ */

int config_check_string(const char *s, size_t len, char *why, size_t why_len)
{
    if (len > CONFIG_MAX_STRING) {
        snprintf(why, why_len, "value is longer than %d bytes", CONFIG_MAX_STRING);
        return -1;
    }
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        unsigned c = p[i];
        if (c < 0x20 || c == 0x7f) {
            /* Control characters end up in HTTP headers, file names and log lines: refuse. */
            snprintf(why, why_len, "control character 0x%02x in value", c);
            return -1;
        }
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        unsigned cp;
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07;
        } else {
            goto bad;
        }
        if (len - i <= n) {
            goto bad;
        }
        for (size_t k = 1; k <= n; k++) {
            if ((p[i + k] & 0xc0) != 0x80) {
                goto bad;
            }
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        /* Overlong forms, surrogates and code points past U+10FFFF. */
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff)) {
            goto bad;
        }
        i += n + 1;
    }
    return 0;

bad:
    snprintf(why, why_len, "value is not valid UTF-8");
    return -1;
}

static char *dup_n(const char *s, size_t len)
{
    char *p = malloc(len + 1);
    if (p != NULL) {
        memcpy(p, s, len);
        p[len] = 0;
    }
    return p;
}

int config_list_push(struct config_list *l, const char *s, size_t len)
{
    if (l->n >= CONFIG_MAX_ITEMS) {
        return DLOTEL_ERR_TOO_LARGE;
    }
    char **items = realloc(l->items, (l->n + 1) * sizeof(*items));
    if (items == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    l->items = items;
    items[l->n] = dup_n(s, len);
    if (items[l->n] == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    l->n++;
    return 0;
}

void config_list_clear(struct config_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->items[i]);
    }
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

int config_map_put(struct config_map *m, const char *key, size_t klen, const char *val, size_t vlen)
{
    for (size_t i = 0; i < m->n; i++) {
        if (strlen(m->items[i].key) == klen && memcmp(m->items[i].key, key, klen) == 0) {
            return 1;
        }
    }
    if (m->n >= CONFIG_MAX_ITEMS) {
        return DLOTEL_ERR_TOO_LARGE;
    }
    struct config_kv *items = realloc(m->items, (m->n + 1) * sizeof(*items));
    if (items == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    m->items = items;
    char *k = dup_n(key, klen);
    char *v = dup_n(val, vlen);
    if (k == NULL || v == NULL) {
        free(k);
        free(v);
        return DLOTEL_ERR_NOMEM;
    }
    items[m->n].key = k;
    items[m->n].value = v;
    m->n++;
    return 0;
}

void config_map_clear(struct config_map *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->items[i].key);
        free(m->items[i].value);
    }
    free(m->items);
    m->items = NULL;
    m->n = 0;
}

void config_value_cleanup(struct config_value *v)
{
    free(v->s);
    config_list_clear(&v->list);
    config_map_clear(&v->map);
    memset(v, 0, sizeof(*v));
}

bool config_header_sensitive(const char *key)
{
    static const char *const words[] = {"auth", "token", "secret", "key", "password", "cookie"};
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        size_t wl = strlen(words[i]);
        for (const char *p = key; *p != 0; p++) {
            if (strncasecmp(p, words[i], wl) == 0) {
                return true;
            }
        }
    }
    return false;
}

/* ---- numbers ------------------------------------------------------------------------------- */

/*
 * Reads "digits[.digits]" at *s. The integer part goes to |ip| (DLOTEL_ERR_TOO_LARGE past
 * 2^64-1), the fraction to |fp| with |fd| digits (at most 6, so that fp * unit cannot
 * overflow for units up to an hour or a TiB).
 */
static int read_number(const char **s, uint64_t *ip, uint64_t *fp, unsigned *fd)
{
    const char *p = *s;
    uint64_t v = 0;
    bool digits = false;
    bool overflow = false;
    while (*p >= '0' && *p <= '9') {
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, *p - '0', &v)) {
            overflow = true;
        }
        digits = true;
        p++;
    }
    uint64_t f = 0;
    unsigned n = 0;
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9') {
            return DLOTEL_ERR_BAD_INPUT;
        }
        while (*p >= '0' && *p <= '9') {
            if (n == 6) {
                return DLOTEL_ERR_BAD_INPUT;
            }
            f = f * 10 + (uint64_t)(*p - '0');
            n++;
            digits = true;
            p++;
        }
    }
    if (!digits) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    *s = p;
    *ip = v;
    *fp = f;
    *fd = n;
    return overflow ? DLOTEL_ERR_TOO_LARGE : 0;
}

static const uint64_t pow10_table[] = {1, 10, 100, 1000, 10000, 100000, 1000000};

/* ip.fp (fd digits) * unit, exactly. Returns DLOTEL_ERR_BAD_INPUT when not whole. */
static int scale(uint64_t ip, uint64_t fp, unsigned fd, uint64_t unit, uint64_t *out)
{
    uint64_t whole;
    if (__builtin_mul_overflow(ip, unit, &whole)) {
        return DLOTEL_ERR_TOO_LARGE;
    }
    uint64_t frac = fp * unit; /* fp < 10^6 and unit <= 2^42: no overflow. */
    if (frac % pow10_table[fd] != 0) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    if (__builtin_add_overflow(whole, frac / pow10_table[fd], out)) {
        return DLOTEL_ERR_TOO_LARGE;
    }
    return 0;
}

int config_parse_size(const char *s, uint64_t *out)
{
    static const struct {
        const char *name;
        uint64_t mult;
    } units[] = {
        {"", 1},
        {"b", 1},
        {"k", 1000ULL},
        {"kb", 1000ULL},
        {"ki", 1ULL << 10},
        {"kib", 1ULL << 10},
        {"m", 1000000ULL},
        {"mb", 1000000ULL},
        {"mi", 1ULL << 20},
        {"mib", 1ULL << 20},
        {"g", 1000000000ULL},
        {"gb", 1000000000ULL},
        {"gi", 1ULL << 30},
        {"gib", 1ULL << 30},
        {"t", 1000000000000ULL},
        {"tb", 1000000000000ULL},
        {"ti", 1ULL << 40},
        {"tib", 1ULL << 40},
    };
    const char *p = s;
    uint64_t ip, fp;
    unsigned fd;
    int rv = read_number(&p, &ip, &fp, &fd);
    if (rv == DLOTEL_ERR_BAD_INPUT) {
        return rv;
    }
    bool overflow = rv == DLOTEL_ERR_TOO_LARGE;
    if (*p == ' ') {
        p++;
    }
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcasecmp(p, units[i].name) == 0) {
            if (overflow) {
                return DLOTEL_ERR_TOO_LARGE;
            }
            return scale(ip, fp, fd, units[i].mult, out);
        }
    }
    return DLOTEL_ERR_BAD_INPUT;
}

int config_parse_duration(const char *s, bool bare_ms, uint64_t *out_ns)
{
    static const struct {
        const char *name;
        uint64_t mult;
    } units[] = {
        /* Longest names first so that "ms" is not read as "m" followed by "s". */
        {"ns", 1ULL},       {"us", 1000ULL},      {"\xc2\xb5s", 1000ULL}, /* µs */
        {"ms", 1000000ULL}, {"s", 1000000000ULL}, {"m", 60000000000ULL},  {"h", 3600000000000ULL},
    };
    if (strcmp(s, "0") == 0) {
        *out_ns = 0;
        return 0;
    }
    const char *p = s;
    uint64_t total = 0;
    bool overflow = false;
    bool first = true;
    do {
        uint64_t ip, fp;
        unsigned fd;
        int rv = read_number(&p, &ip, &fp, &fd);
        if (rv == DLOTEL_ERR_BAD_INPUT) {
            return rv;
        }
        if (rv == DLOTEL_ERR_TOO_LARGE) {
            overflow = true;
        }
        if (*p == 0 && first) {
            /* A lone bare number: milliseconds where the option says so, else ambiguous. */
            if (!bare_ms) {
                return DLOTEL_ERR_BAD_INPUT;
            }
            uint64_t v;
            rv = overflow ? DLOTEL_ERR_TOO_LARGE : scale(ip, fp, fd, 1000000ULL, &v);
            if (rv == 0) {
                *out_ns = v;
            }
            return rv;
        }
        size_t best = 0;
        uint64_t mult = 0;
        for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
            size_t ul = strlen(units[i].name);
            if (ul > best && strncmp(p, units[i].name, ul) == 0) {
                best = ul;
                mult = units[i].mult;
            }
        }
        if (best == 0) {
            return DLOTEL_ERR_BAD_INPUT;
        }
        p += best;
        first = false;
        if (overflow) {
            continue;
        }
        uint64_t part = 0;
        rv = scale(ip, fp, fd, mult, &part);
        if (rv == DLOTEL_ERR_TOO_LARGE || __builtin_add_overflow(total, part, &total)) {
            overflow = true;
        } else if (rv != 0) {
            return rv;
        }
    } while (*p != 0);
    if (overflow) {
        return DLOTEL_ERR_TOO_LARGE;
    }
    *out_ns = total;
    return 0;
}

static int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return DLOTEL_ERR_BAD_INPUT;
}

static int parse_int(const char *s, int64_t *out)
{
    const char *p = s;
    bool neg = false;
    if (*p == '-' || *p == '+') {
        neg = *p == '-';
        p++;
    }
    if (*p < '0' || *p > '9') {
        return DLOTEL_ERR_BAD_INPUT;
    }
    uint64_t v = 0;
    bool overflow = false;
    while (*p >= '0' && *p <= '9') {
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, *p - '0', &v)) {
            overflow = true;
        }
        p++;
    }
    if (*p != 0) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    if (overflow || v > (uint64_t)INT64_MAX + (neg ? 1 : 0)) {
        return DLOTEL_ERR_TOO_LARGE;
    }
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

/* ---- formatting ---------------------------------------------------------------------------- */

int config_format_size(struct buf *out, uint64_t v)
{
    static const struct {
        const char *name;
        uint64_t mult;
    } units[] = {
        {"TiB", 1ULL << 40},      {"GiB", 1ULL << 30},   {"MiB", 1ULL << 20}, {"KiB", 1ULL << 10},
        {"TB", 1000000000000ULL}, {"GB", 1000000000ULL}, {"MB", 1000000ULL},  {"KB", 1000ULL},
    };
    if (v != 0) {
        for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
            if (v % units[i].mult == 0) {
                return buf_printf(out, "%llu%s", (unsigned long long)(v / units[i].mult),
                                  units[i].name);
            }
        }
    }
    return buf_printf(out, "%llu", (unsigned long long)v);
}

int config_format_duration(struct buf *out, uint64_t ns)
{
    static const struct {
        const char *name;
        uint64_t mult;
    } units[] = {
        {"h", 3600000000000ULL}, {"m", 60000000000ULL}, {"s", 1000000000ULL},
        {"ms", 1000000ULL},      {"us", 1000ULL},
    };
    if (ns == 0) {
        return buf_printf(out, "0s");
    }
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (ns % units[i].mult == 0) {
            return buf_printf(out, "%llu%s", (unsigned long long)(ns / units[i].mult),
                              units[i].name);
        }
    }
    return buf_printf(out, "%lluns", (unsigned long long)ns);
}

int config_format_yaml_string(struct buf *out, const char *s)
{
    /*
     * Always double-quoted, so that no value is read back as another type ("true", "~", "1").
     * Values were checked for control characters and UTF-8 when set; only '"' and '\' need
     * YAML escaping, and '$' is doubled so that ${env:...} is not expanded on reload.
     */
    int rv = buf_putc(out, '"');
    for (const char *p = s; *p != 0 && rv == 0; p++) {
        if (*p == '"' || *p == '\\') {
            rv = buf_putc(out, '\\');
        } else if (*p == '$') {
            rv = buf_putc(out, '$');
        }
        if (rv == 0) {
            rv = buf_putc(out, (uint8_t)*p);
        }
    }
    if (rv == 0) {
        rv = buf_putc(out, '"');
    }
    return rv;
}

/* ---- parsing one value --------------------------------------------------------------------- */

static void describe_choices(const struct config_option *opt, char *dst, size_t len)
{
    size_t used = 0;
    dst[0] = 0;
    for (size_t i = 0; opt->choices[i] != NULL; i++) {
        int w = snprintf(dst + used, len - used, "%s%s", i > 0 ? ", " : "", opt->choices[i]);
        if (w < 0 || (size_t)w >= len - used) {
            return;
        }
        used += (size_t)w;
    }
}

/* Describes a bound of |opt| in the option's own units, for messages. */
static void describe_bound(const struct config_option *opt, int64_t v, char *dst, size_t len)
{
    struct buf b;
    buf_init(&b, len - 1);
    int rv;
    if (opt->kind == CONFIG_KIND_SIZE) {
        rv = config_format_size(&b, (uint64_t)v);
    } else if (opt->kind == CONFIG_KIND_DURATION) {
        rv = config_format_duration(&b, (uint64_t)v);
    } else {
        rv = buf_printf(&b, "%lld", (long long)v);
    }
    if (rv == 0 && buf_terminate(&b) == 0) {
        snprintf(dst, len, "%s", (char *)b.data);
    } else {
        snprintf(dst, len, "?");
    }
    buf_cleanup(&b);
}

static int check_bounds(const struct config_option *opt, const char *text, uint64_t u,
                        bool negative, char *why, size_t why_len)
{
    if (opt->min >= opt->max) {
        return 0;
    }
    bool excl = (opt->flags & CONFIG_OPT_MAX_EXCLUSIVE) != 0;
    if (!negative && u >= (uint64_t)opt->min &&
        (excl ? u < (uint64_t)opt->max : u <= (uint64_t)opt->max)) {
        return 0;
    }
    if (negative && opt->min < 0 && (int64_t)u >= opt->min) {
        return 0;
    }
    char lo[32], hi[32];
    describe_bound(opt, opt->min, lo, sizeof(lo));
    describe_bound(opt, opt->max, hi, sizeof(hi));
    snprintf(why, why_len, "'%.80s' is out of range (%s to %s%s)", text, lo,
             excl ? "less than " : "", hi);
    return DLOTEL_ERR_CONFIG;
}

/* Splits "a, b,c" on commas, trimming spaces, into |l|. */
static int parse_list(const char *text, size_t len, struct config_list *l, char *why,
                      size_t why_len)
{
    size_t i = 0;
    if (len == 0) {
        return 0;
    }
    while (i <= len) {
        size_t start = i;
        while (i < len && text[i] != ',') {
            i++;
        }
        size_t a = start, b = i;
        while (a < b && text[a] == ' ') {
            a++;
        }
        while (b > a && text[b - 1] == ' ') {
            b--;
        }
        if (a == b) {
            snprintf(why, why_len, "empty item in list '%.*s'", (int)(len > 80 ? 80 : len), text);
            return DLOTEL_ERR_CONFIG;
        }
        int rv = config_list_push(l, text + a, b - a);
        if (rv == DLOTEL_ERR_TOO_LARGE) {
            snprintf(why, why_len, "more than %d items", CONFIG_MAX_ITEMS);
            return DLOTEL_ERR_CONFIG;
        }
        if (rv != 0) {
            return rv;
        }
        i++;
    }
    return 0;
}

/* Splits "k1=v1,k2=v2" into |m|; keys are trimmed, values trimmed too. */
static int parse_map(const char *text, size_t len, struct config_map *m, char *why, size_t why_len)
{
    struct config_list parts = {0};
    int rv = parse_list(text, len, &parts, why, why_len);
    for (size_t i = 0; rv == 0 && i < parts.n; i++) {
        const char *item = parts.items[i];
        const char *eq = strchr(item, '=');
        if (eq == NULL || eq == item) {
            snprintf(why, why_len, "'%.80s' is not key=value", item);
            rv = DLOTEL_ERR_CONFIG;
            break;
        }
        size_t kl = (size_t)(eq - item);
        while (kl > 0 && item[kl - 1] == ' ') {
            kl--;
        }
        const char *v = eq + 1;
        while (*v == ' ') {
            v++;
        }
        rv = config_map_put(m, item, kl, v, strlen(v));
        if (rv == 1) {
            snprintf(why, why_len, "key '%.*s' given twice", (int)kl, item);
            rv = DLOTEL_ERR_CONFIG;
        } else if (rv == DLOTEL_ERR_TOO_LARGE) {
            snprintf(why, why_len, "more than %d entries", CONFIG_MAX_ITEMS);
            rv = DLOTEL_ERR_CONFIG;
        }
    }
    config_list_clear(&parts);
    return rv;
}

int config_processors_canon(struct json_t *root, struct config_value *v, char *why, size_t why_len)
{
    if (!json_is_array(root)) {
        snprintf(why, why_len, "expected a list of processors, e.g. [{\"kind\": \"filter\"}]");
        return DLOTEL_ERR_CONFIG;
    }
    size_t i;
    json_t *it;
    json_array_foreach(root, i, it)
    {
        if (!json_is_object(it) || !json_is_string(json_object_get(it, "kind"))) {
            snprintf(why, why_len,
                     "item %zu: expected a processor with a kind, e.g. "
                     "{\"kind\": \"filter\"}",
                     i);
            return DLOTEL_ERR_CONFIG;
        }
    }
    if (json_array_size(root) == 0) {
        return 0;
    }
    char *s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
    if (s == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    if (strlen(s) > CONFIG_MAX_PROCESSORS) {
        free(s);
        snprintf(why, why_len, "longer than %u bytes as JSON", CONFIG_MAX_PROCESSORS);
        return DLOTEL_ERR_CONFIG;
    }
    v->s = s;
    return 0;
}

/* A processors list from text: JSON (the environment, flags, the Python typed config). */
static int parse_processors(const char *text, size_t len, struct config_value *v, char *why,
                            size_t why_len)
{
    if (len == 0) {
        return 0; /* Unsets. */
    }
    if (len > CONFIG_MAX_PROCESSORS) {
        snprintf(why, why_len, "longer than %u bytes", CONFIG_MAX_PROCESSORS);
        return DLOTEL_ERR_CONFIG;
    }
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        snprintf(why, why_len, "not a JSON list of processors (%s at column %d)", jerr.text,
                 jerr.column);
        return DLOTEL_ERR_CONFIG;
    }
    int rv = config_processors_canon(root, v, why, why_len);
    json_decref(root);
    return rv;
}

int config_value_parse(const struct config_option *opt, const char *text, size_t len,
                       struct config_value *v, char *why, size_t why_len)
{
    if (opt->kind == CONFIG_KIND_PROCESSORS) {
        return parse_processors(text, len, v, why, why_len);
    }
    if (config_check_string(text, len, why, why_len) != 0) {
        return DLOTEL_ERR_CONFIG;
    }
    /* The string has no NUL inside (checked above), so it can be handled as a C string. */
    char *s = dup_n(text, len);
    if (s == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    int rv = 0;
    switch (opt->kind) {
    case CONFIG_KIND_STRING:
    case CONFIG_KIND_SECRET:
    case CONFIG_KIND_PATH:
        if (len == 0) {
            free(s); /* An empty string unsets. */
        } else {
            v->s = s;
        }
        return 0;
    case CONFIG_KIND_BOOL:
        if (parse_bool(s, &v->b) != 0) {
            snprintf(why, why_len, "'%.80s' is not a boolean (use true or false)", s);
            rv = DLOTEL_ERR_CONFIG;
        }
        break;
    case CONFIG_KIND_INT: {
        int r = parse_int(s, &v->i);
        if (r == DLOTEL_ERR_TOO_LARGE) {
            snprintf(why, why_len, "'%.80s' is too large", s);
            rv = DLOTEL_ERR_CONFIG;
        } else if (r != 0) {
            snprintf(why, why_len, "'%.80s' is not an integer", s);
            rv = DLOTEL_ERR_CONFIG;
        } else {
            rv = check_bounds(opt, s, (uint64_t)v->i, v->i < 0, why, why_len);
        }
        break;
    }
    case CONFIG_KIND_SIZE: {
        int r = config_parse_size(s, &v->u);
        if (r == DLOTEL_ERR_TOO_LARGE) {
            snprintf(why, why_len, "'%.80s' is too large", s);
            rv = DLOTEL_ERR_CONFIG;
        } else if (r != 0) {
            snprintf(why, why_len,
                     "'%.80s' is not a size (use e.g. 4MiB, 512KiB, 1GB or a whole number of "
                     "bytes)",
                     s);
            rv = DLOTEL_ERR_CONFIG;
        } else {
            rv = check_bounds(opt, s, v->u, false, why, why_len);
        }
        break;
    }
    case CONFIG_KIND_DURATION: {
        int r = config_parse_duration(s, (opt->flags & CONFIG_OPT_BARE_MS) != 0, &v->u);
        if (r == DLOTEL_ERR_TOO_LARGE) {
            snprintf(why, why_len, "'%.80s' is too large", s);
            rv = DLOTEL_ERR_CONFIG;
        } else if (r != 0) {
            snprintf(why, why_len, "'%.80s' is not a duration (use e.g. 200ms)", s);
            rv = DLOTEL_ERR_CONFIG;
        } else {
            rv = check_bounds(opt, s, v->u, false, why, why_len);
        }
        break;
    }
    case CONFIG_KIND_ENUM: {
        rv = DLOTEL_ERR_CONFIG;
        for (int i = 0; opt->choices[i] != NULL; i++) {
            if (strcasecmp(s, opt->choices[i]) == 0) {
                v->e = i;
                rv = 0;
                break;
            }
        }
        if (rv != 0) {
            char list[256];
            describe_choices(opt, list, sizeof(list));
            snprintf(why, why_len, "'%.80s' is not one of %s", s, list);
        }
        break;
    }
    case CONFIG_KIND_LIST:
        rv = parse_list(s, len, &v->list, why, why_len);
        break;
    case CONFIG_KIND_MAP:
        rv = parse_map(s, len, &v->map, why, why_len);
        break;
    case CONFIG_KIND_EXPORTERS:
        snprintf(why, why_len, "set a field of an exporter, e.g. exporters.NAME.type");
        rv = DLOTEL_ERR_CONFIG;
        break;
    case CONFIG_KIND_PROCESSORS:
        break;
    }
    free(s);
    return rv;
}

/* ---- fields -------------------------------------------------------------------------------- */

void config_field_cleanup(void *base, const struct config_option *opt)
{
    char *field = (char *)base + opt->offset;
    switch (opt->kind) {
    case CONFIG_KIND_STRING:
    case CONFIG_KIND_SECRET:
    case CONFIG_KIND_PATH:
    case CONFIG_KIND_PROCESSORS: {
        char **sp = (char **)(void *)field;
        if (opt->kind == CONFIG_KIND_SECRET && *sp != NULL) {
            /* Do not leave secrets in freed memory. */
            volatile char *p = *sp;
            while (*p != 0) {
                *p++ = 0;
            }
        }
        free(*sp);
        *sp = NULL;
        break;
    }
    case CONFIG_KIND_LIST:
        config_list_clear((struct config_list *)(void *)field);
        break;
    case CONFIG_KIND_MAP:
        config_map_clear((struct config_map *)(void *)field);
        break;
    default:
        break;
    }
}

int config_source_rank(enum config_source s)
{
    return s == CONFIG_SOURCE_API ? CONFIG_SOURCE_FLAG : (int)s;
}

void config_value_commit(void *base, const struct config_option *opt, struct config_value *v,
                         enum config_source src, uint8_t via, uint8_t *source, uint8_t *vias)
{
    if (config_source_rank(src) < config_source_rank((enum config_source) * source)) {
        config_value_cleanup(v);
        return;
    }
    char *field = (char *)base + opt->offset;
    config_field_cleanup(base, opt);
    switch (opt->kind) {
    case CONFIG_KIND_STRING:
    case CONFIG_KIND_SECRET:
    case CONFIG_KIND_PATH:
    case CONFIG_KIND_PROCESSORS:
        *(char **)(void *)field = v->s;
        v->s = NULL;
        break;
    case CONFIG_KIND_BOOL:
        *(bool *)(void *)field = v->b;
        break;
    case CONFIG_KIND_INT:
        *(int64_t *)(void *)field = v->i;
        break;
    case CONFIG_KIND_SIZE:
    case CONFIG_KIND_DURATION:
        *(uint64_t *)(void *)field = v->u;
        break;
    case CONFIG_KIND_ENUM:
        /* Enum fields are int-sized C enums (checked in config.c). */
        *(int *)(void *)field = v->e;
        break;
    case CONFIG_KIND_LIST:
        *(struct config_list *)(void *)field = v->list;
        v->list.items = NULL;
        v->list.n = 0;
        break;
    case CONFIG_KIND_MAP:
        *(struct config_map *)(void *)field = v->map;
        v->map.items = NULL;
        v->map.n = 0;
        break;
    case CONFIG_KIND_EXPORTERS:
        break;
    }
    *source = (uint8_t)src;
    *vias = via;
    config_value_cleanup(v);
}
