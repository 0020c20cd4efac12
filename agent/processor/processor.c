/*
 * The processor chain: compiling it from its JSON configuration, and running it over a decoded
 * request, one full pass per processor in the configured order.
 *
 * Items are dropped by compacting the arrays protobuf-c unpacked into the chain's slab; scopes and
 * resources left empty are removed at the end so the re-encoded request holds no empty shells.
 */
#include "processor/processor.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <jansson.h>

#include "dlotel.h"
#include "processor/processor_int.h"

typedef Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest treq_t;
typedef Opentelemetry__Proto__Collector__Logs__V1__ExportLogsServiceRequest lreq_t;
typedef Opentelemetry__Proto__Collector__Metrics__V1__ExportMetricsServiceRequest mreq_t;
typedef Opentelemetry__Proto__Trace__V1__Span span_t;
typedef Opentelemetry__Proto__Logs__V1__LogRecord log_t;
typedef Opentelemetry__Proto__Metrics__V1__Metric metric_t;
typedef Opentelemetry__Proto__Resource__V1__Resource res_t;

/* Health checks, the agent's own kind of endpoints, API docs and favicon (Wegent's defaults). */
static const char DEFAULT_EXCLUDE_URLS[] =
    "/health,/health/*,/healthz,/healthz/*,/ready,/readyz,/live,/livez,/ping,/metrics,"
    "/docs,/docs/*,/openapi.json,/redoc,/swagger*,/favicon.ico";

/* The attributes a span's URL is read from; http.target may carry a query, which is cut. */
static const char *const URL_KEYS[] = {"http.route", "url.path", "http.target"};

/* ---- configuration ------------------------------------------------------------------------- */

struct pctx {
    const char *path;
    size_t idx;
    char *why;
    size_t why_len;
};

static int fail(struct pctx *x, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct pctx *x, const char *key, const char *fmt, ...)
{
    int n = snprintf(x->why, x->why_len, "%s[%zu]%s%s: ", x->path, x->idx, key ? "." : "",
                     key ? key : "");
    if (n >= 0 && (size_t)n < x->why_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(x->why + n, x->why_len - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return DLOTEL_ERR_CONFIG;
}

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 40 || lb > 40) {
        return 99;
    }
    size_t row[41];
    for (size_t j = 0; j <= lb; j++) {
        row[j] = j;
    }
    for (size_t i = 1; i <= la; i++) {
        size_t prev = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cur = row[j];
            size_t best = prev + (a[i - 1] != b[j - 1]);
            best = row[j] + 1 < best ? row[j] + 1 : best;
            best = row[j - 1] + 1 < best ? row[j - 1] + 1 : best;
            row[j] = best;
            prev = cur;
        }
    }
    return row[lb];
}

/* The candidate closest to |word| when it is close enough to be a typo, else NULL. */
static const char *did_you_mean(const char *word, const char *const *cands)
{
    const char *best = NULL;
    size_t bd = 99, lim = strlen(word) / 3;
    lim = lim < 1 ? 1 : lim > 3 ? 3 : lim;
    for (size_t i = 0; cands[i] != NULL; i++) {
        size_t d = edit_distance(word, cands[i]);
        if (d < bd) {
            bd = d;
            best = cands[i];
        }
    }
    return bd <= lim ? best : NULL;
}

static int check_keys(struct pctx *x, json_t *obj, const char *const *allowed, const char *what)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        bool ok = false;
        for (size_t i = 0; allowed[i] != NULL && !ok; i++) {
            ok = strcmp(key, allowed[i]) == 0;
        }
        if (!ok) {
            const char *dym = did_you_mean(key, allowed);
            if (dym != NULL) {
                return fail(x, key, "unknown key for %s (did you mean '%s'?)", what, dym);
            }
            return fail(x, key, "unknown key for %s", what);
        }
    }
    return 0;
}

/* A string option: JSON strings, and numbers or booleans as their text. NULL when absent. */
static int get_text(struct pctx *x, json_t *obj, const char *key, const char **out, char *tmp,
                    size_t tmp_len)
{
    json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (v == NULL || json_is_null(v)) {
        return 0;
    }
    if (json_is_string(v)) {
        *out = json_string_value(v);
    } else if (json_is_integer(v)) {
        snprintf(tmp, tmp_len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        *out = tmp;
    } else if (json_is_real(v)) {
        snprintf(tmp, tmp_len, "%.17g", json_real_value(v));
        *out = tmp;
    } else if (json_is_boolean(v)) {
        *out = json_is_true(v) ? "true" : "false";
    } else {
        return fail(x, key, "expected a single value");
    }
    return 0;
}

static int get_number(struct pctx *x, json_t *obj, const char *key, bool *present, double *out)
{
    char tmp[64];
    const char *s;
    int rc = get_text(x, obj, key, &s, tmp, sizeof(tmp));
    *present = s != NULL;
    if (rc != 0 || s == NULL) {
        return rc;
    }
    char *end;
    errno = 0;
    double d = strtod(s, &end);
    if (*s == 0 || *end != 0 || errno != 0 || !isfinite(d)) {
        return fail(x, key, "'%.80s' is not a number", s);
    }
    *out = d;
    return 0;
}

static int get_count(struct pctx *x, json_t *obj, const char *key, size_t min, size_t max,
                     bool *present, size_t *out)
{
    double d = 0;
    int rc = get_number(x, obj, key, present, &d);
    if (rc != 0 || !*present) {
        return rc;
    }
    if (d != floor(d) || d < (double)min || d > (double)max) {
        return fail(x, key, "'%g' is not a whole number from %zu to %zu", d, min, max);
    }
    *out = (size_t)d;
    return 0;
}

static int get_bool(struct pctx *x, json_t *obj, const char *key, bool def, bool *out)
{
    char tmp[64];
    const char *s;
    int rc = get_text(x, obj, key, &s, tmp, sizeof(tmp));
    *out = def;
    if (rc != 0 || s == NULL) {
        return rc;
    }
    if (strcasecmp(s, "true") == 0 || strcmp(s, "1") == 0 || strcasecmp(s, "yes") == 0) {
        *out = true;
    } else if (strcasecmp(s, "false") == 0 || strcmp(s, "0") == 0 || strcasecmp(s, "no") == 0) {
        *out = false;
    } else {
        return fail(x, key, "'%.80s' is not a boolean (use true or false)", s);
    }
    return 0;
}

/*
 * A pattern list: a JSON array of strings or one comma-separated string (the shape Wegent's
 * environment variables use). *present tells an empty value (which clears defaults) from none.
 */
static int get_patterns(struct pctx *x, json_t *obj, const char *key, struct pattern_list *l,
                        bool *present)
{
    json_t *v = json_object_get(obj, key);
    char why[256];
    *present = v != NULL && !json_is_null(v);
    if (!*present) {
        return 0;
    }
    int rc = 0;
    if (json_is_string(v)) {
        rc = pattern_list_add_csv(l, json_string_value(v), why, sizeof(why));
    } else if (json_is_array(v)) {
        size_t i;
        json_t *it;
        json_array_foreach(v, i, it)
        {
            if (!json_is_string(it)) {
                return fail(x, key, "list items must be strings");
            }
            rc = pattern_list_add(l, json_string_value(it), json_string_length(it), why,
                                  sizeof(why));
            if (rc != 0) {
                break;
            }
        }
    } else {
        return fail(x, key, "expected a list of patterns or a comma-separated string");
    }
    if (rc == DLOTEL_ERR_CONFIG) {
        return fail(x, key, "%s", why);
    }
    return rc;
}

static int one_pattern(struct pctx *x, json_t *obj, const char *key, struct pattern **out)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL || json_is_null(v)) {
        return 0;
    }
    if (!json_is_string(v)) {
        return fail(x, key, "expected a pattern (a string)");
    }
    struct pattern *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    char why[256];
    int rc = pattern_compile(p, json_string_value(v), json_string_length(v), why, sizeof(why));
    if (rc != 0) {
        free(p);
        return rc == DLOTEL_ERR_CONFIG ? fail(x, key, "%s", why) : rc;
    }
    *out = p;
    return 0;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d != NULL) {
        memcpy(d, s, n);
    }
    return d;
}

static int parse_severity(const char *s, int *out)
{
    static const char *const names[] = {"TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"};
    for (int i = 0; i < 6; i++) {
        if (strcasecmp(s, names[i]) == 0) {
            *out = 1 + 4 * i;
            return 0;
        }
    }
    if (strcasecmp(s, "WARNING") == 0) {
        *out = 13;
        return 0;
    }
    char *end;
    long v = strtol(s, &end, 10);
    if (*s != 0 && *end == 0 && v >= 1 && v <= 24) {
        *out = (int)v;
        return 0;
    }
    return -1;
}

static const char *const FILTER_KEYS[] = {"kind", "include_urls", "exclude_urls", "drop", NULL};
static const char *const COND_KEYS[] = {"service", "name",           "attribute",
                                        "value",   "severity_below", NULL};

static int parse_filter(struct pctx *x, enum otlp_signal s, json_t *o, struct proc *p)
{
    int rc = check_keys(x, o, FILTER_KEYS, "a filter");
    if (rc != 0) {
        return rc;
    }
    bool has_inc, has_exc;
    if ((rc = get_patterns(x, o, "include_urls", &p->include, &has_inc)) != 0 ||
        (rc = get_patterns(x, o, "exclude_urls", &p->exclude, &has_exc)) != 0) {
        return rc;
    }
    if ((has_inc || has_exc) && s != OTLP_TRACES) {
        return fail(x, has_inc ? "include_urls" : "exclude_urls", "URL lists apply to traces only");
    }
    if (s == OTLP_TRACES) {
        p->urls = true;
        char why[256];
        if (!has_exc &&
            (rc = pattern_list_add_csv(&p->exclude, DEFAULT_EXCLUDE_URLS, why, sizeof(why))) != 0) {
            return rc;
        }
    }
    json_t *drop = json_object_get(o, "drop");
    if (drop == NULL || json_is_null(drop)) {
        return 0;
    }
    if (!json_is_array(drop)) {
        return fail(x, "drop", "expected a list of conditions");
    }
    if (json_array_size(drop) > PROCESSOR_MAX_CONDITIONS) {
        return fail(x, "drop", "more than %d conditions", PROCESSOR_MAX_CONDITIONS);
    }
    p->conds = calloc(json_array_size(drop) + 1, sizeof(*p->conds));
    if (p->conds == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    size_t i;
    json_t *c;
    json_array_foreach(drop, i, c)
    {
        char key[48];
        snprintf(key, sizeof(key), "drop[%zu]", i);
        if (!json_is_object(c) || json_object_size(c) == 0) {
            return fail(x, key, "expected a condition such as {name: \"^GET /internal\"}");
        }
        struct cond *k = &p->conds[p->nconds++];
        if ((rc = check_keys(x, c, COND_KEYS, "a drop condition")) != 0 ||
            (rc = one_pattern(x, c, "service", &k->service)) != 0 ||
            (rc = one_pattern(x, c, "name", &k->name)) != 0 ||
            (rc = one_pattern(x, c, "value", &k->attr_value)) != 0) {
            return rc;
        }
        json_t *a = json_object_get(c, "attribute");
        if (a != NULL) {
            if (!json_is_string(a) || json_string_length(a) == 0) {
                return fail(x, key, "attribute must be a key name");
            }
            if ((k->attr_key = xstrdup(json_string_value(a))) == NULL) {
                return DLOTEL_ERR_NOMEM;
            }
        }
        if ((k->attr_key == NULL) != (k->attr_value == NULL)) {
            return fail(x, key, "attribute and value go together");
        }
        char tmp[64];
        const char *sev;
        if ((rc = get_text(x, c, "severity_below", &sev, tmp, sizeof(tmp))) != 0) {
            return rc;
        }
        if (sev != NULL) {
            if (s != OTLP_LOGS) {
                return fail(x, key, "severity_below applies to logs only");
            }
            if (parse_severity(sev, &k->severity_below) != 0) {
                return fail(x, key,
                            "severity_below '%.40s' is not TRACE, DEBUG, INFO, WARN, ERROR, "
                            "FATAL or 1 to 24",
                            sev);
            }
        }
    }
    return 0;
}

static const char *const SAMPLE_KEYS[] = {"kind", "ratio", NULL};

static int parse_sample(struct pctx *x, enum otlp_signal s, json_t *o, struct proc *p)
{
    int rc = check_keys(x, o, SAMPLE_KEYS, "a sampler");
    if (rc != 0) {
        return rc;
    }
    if (s == OTLP_METRICS) {
        return fail(x, "kind", "sample applies to traces and logs (by trace id), not metrics");
    }
    bool present;
    double ratio = 0;
    if ((rc = get_number(x, o, "ratio", &present, &ratio)) != 0) {
        return rc;
    }
    if (!present) {
        return fail(x, "ratio",
                    "required: the share of traces kept, from 0 to 1 (like "
                    "OTEL_TRACES_SAMPLER_ARG)");
    }
    if (ratio < 0 || ratio > 1) {
        return fail(x, "ratio", "'%g' is not a number from 0 to 1", ratio);
    }
    p->threshold = processor_sample_threshold(ratio);
    return 0;
}

static const char *const TARGET_NAMES[] = {"resource", "span",      "event", "link",
                                           "log",      "datapoint", NULL};

static unsigned signal_targets(enum otlp_signal s)
{
    switch (s) {
    case OTLP_TRACES:
        return TARGET_RESOURCE | TARGET_SPAN | TARGET_EVENT | TARGET_LINK;
    case OTLP_LOGS:
        return TARGET_RESOURCE | TARGET_LOG;
    case OTLP_METRICS:
        return TARGET_RESOURCE | TARGET_DATAPOINT;
    }
    return 0;
}

static int get_targets(struct pctx *x, enum otlp_signal s, json_t *o, unsigned def, unsigned *out)
{
    json_t *v = json_object_get(o, "targets");
    *out = def;
    if (v == NULL || json_is_null(v)) {
        return 0;
    }
    json_t *list = v;
    json_t *split = NULL;
    if (json_is_string(v)) {
        /* "span,event" */
        split = json_array();
        const char *t = json_string_value(v);
        while (split != NULL) {
            size_t n = strcspn(t, ",");
            while (n > 0 && *t == ' ') {
                t++, n--;
            }
            json_array_append_new(split, json_stringn(t, n));
            if (t[n] == 0) {
                break;
            }
            t += n + 1;
        }
        list = split;
    }
    if (list == NULL || !json_is_array(list)) {
        json_decref(split);
        return list == NULL ? DLOTEL_ERR_NOMEM : fail(x, "targets", "expected a list");
    }
    unsigned bits = 0;
    size_t i;
    json_t *it;
    int rc = 0;
    json_array_foreach(list, i, it)
    {
        const char *name = json_string_value(it);
        int found = -1;
        for (int k = 0; name != NULL && TARGET_NAMES[k] != NULL; k++) {
            if (strcmp(name, TARGET_NAMES[k]) == 0) {
                found = k;
            }
        }
        if (found < 0 || ((1u << found) & signal_targets(s)) == 0) {
            rc = fail(x, "targets", "'%.40s' is not an attribute set of %s (use %s)",
                      name ? name : "?", otlp_signal_name(s),
                      s == OTLP_TRACES ? "resource, span, event, link"
                      : s == OTLP_LOGS ? "resource, log"
                                       : "resource, datapoint");
            break;
        }
        bits |= 1u << found;
    }
    json_decref(split);
    *out = bits;
    return rc;
}

static unsigned item_target(enum otlp_signal s)
{
    return s == OTLP_TRACES ? TARGET_SPAN : s == OTLP_LOGS ? TARGET_LOG : TARGET_DATAPOINT;
}

static const char *const ATTR_KEYS[] = {"kind",          "actions", "redact_keys",
                                        "redact_values", "targets", NULL};
static const char *const ACTION_KEYS[] = {"key", "action", "value", NULL};
static const char *const ACTION_NAMES[] = {"insert", "update", "upsert", "delete", "hash", NULL};

static int parse_attributes(struct pctx *x, enum otlp_signal s, json_t *o, struct proc *p)
{
    int rc = check_keys(x, o, ATTR_KEYS, "an attributes processor");
    bool present;
    if (rc != 0 || (rc = get_targets(x, s, o, item_target(s), &p->targets)) != 0 ||
        (rc = get_patterns(x, o, "redact_keys", &p->redact_keys, &present)) != 0 ||
        (rc = get_patterns(x, o, "redact_values", &p->redact_values, &present)) != 0) {
        return rc;
    }
    json_t *acts = json_object_get(o, "actions");
    if (acts == NULL || json_is_null(acts)) {
        if (p->redact_keys.n == 0 && p->redact_values.n == 0) {
            return fail(x, "actions", "required (or redact_keys / redact_values)");
        }
        return 0;
    }
    if (!json_is_array(acts) || json_array_size(acts) > PROCESSOR_MAX_ACTIONS) {
        return fail(x, "actions", "expected a list of at most %d actions", PROCESSOR_MAX_ACTIONS);
    }
    p->acts = calloc(json_array_size(acts) + 1, sizeof(*p->acts));
    if (p->acts == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    size_t i;
    json_t *a;
    json_array_foreach(acts, i, a)
    {
        char key[48];
        snprintf(key, sizeof(key), "actions[%zu]", i);
        if (!json_is_object(a)) {
            return fail(x, key, "expected {key: ..., action: ..., value: ...}");
        }
        if ((rc = check_keys(x, a, ACTION_KEYS, "an action")) != 0) {
            return rc;
        }
        struct action *act = &p->acts[p->nacts++];
        json_t *k = json_object_get(a, "key");
        json_t *op = json_object_get(a, "action");
        if (!json_is_string(k) || json_string_length(k) == 0 ||
            json_string_length(k) > PATTERN_MAX_LEN) {
            return fail(x, key, "key must be a non-empty string");
        }
        if ((act->key = xstrdup(json_string_value(k))) == NULL) {
            return DLOTEL_ERR_NOMEM;
        }
        int opi = -1;
        for (int n = 0; json_is_string(op) && ACTION_NAMES[n] != NULL; n++) {
            if (strcmp(json_string_value(op), ACTION_NAMES[n]) == 0) {
                opi = n;
            }
        }
        if (opi < 0) {
            const char *dym =
                json_is_string(op) ? did_you_mean(json_string_value(op), ACTION_NAMES) : NULL;
            return fail(x, key, "action must be insert, update, upsert, delete or hash%s%s%s",
                        dym ? " (did you mean '" : "", dym ? dym : "", dym ? "'?)" : "");
        }
        act->op = (enum act_op)opi;
        json_t *v = json_object_get(a, "value");
        bool needs = act->op == ACT_INSERT || act->op == ACT_UPDATE || act->op == ACT_UPSERT;
        if (needs != (v != NULL && !json_is_null(v))) {
            return fail(x, key, needs ? "value is required for %s" : "%s takes no value",
                        ACTION_NAMES[opi]);
        }
        act->value = (pav_t)OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__INIT;
        if (!needs) {
            continue;
        }
        if (json_is_string(v)) {
            if ((act->str = xstrdup(json_string_value(v))) == NULL) {
                return DLOTEL_ERR_NOMEM;
            }
            act->value.value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
            act->value.string_value = act->str;
        } else if (json_is_integer(v)) {
            act->value.value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE;
            act->value.int_value = json_integer_value(v);
        } else if (json_is_real(v)) {
            act->value.value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_DOUBLE_VALUE;
            act->value.double_value = json_real_value(v);
        } else if (json_is_boolean(v)) {
            act->value.value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE;
            act->value.bool_value = json_is_true(v);
        } else {
            return fail(x, key, "value must be a string, number or boolean");
        }
    }
    return 0;
}

static const char *const RESOURCE_KEYS[] = {
    "kind", "host_name", "container_id", "process", "service_instance_id", "user_uid", NULL};

/* Reads at most 64 KiB of a /proc file into |buf|. Returns the length, 0 on any failure. */
static size_t read_small(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return 0;
    }
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r <= 0) {
            break;
        }
        n += (size_t)r;
    }
    close(fd);
    buf[n] = 0;
    return n;
}

int processor_container_id_from(const char *text, size_t len, char out[65])
{
    static const char *const runtimes[] = {"docker", "containerd", "crio",      "cri-o",
                                           "libpod", "kubepods",   "containers"};
    int found = 0;
    const char *end = text + len;
    for (const char *line = text; line < end;) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        const char *le = nl != NULL ? nl : end;
        bool runtime = false;
        for (size_t i = 0; i < sizeof(runtimes) / sizeof(runtimes[0]) && !runtime; i++) {
            size_t rl = strlen(runtimes[i]);
            for (const char *p = line; p + rl <= le && !runtime; p++) {
                runtime = memcmp(p, runtimes[i], rl) == 0;
            }
        }
        for (const char *p = line; runtime && p < le;) {
            const char *q = p;
            while (q < le && ((*q >= '0' && *q <= '9') || (*q >= 'a' && *q <= 'f'))) {
                q++;
            }
            if (q - p == 64) {
                memcpy(out, p, 64);
                out[64] = 0;
                found = 1;
            }
            p = q < le ? q + 1 : q;
        }
        line = le + 1;
    }
    return found;
}

static int parse_resource(struct pctx *x, json_t *o, struct proc *p)
{
    int rc = check_keys(x, o, RESOURCE_KEYS, "a resource processor");
    bool host, cont, proc;
    if (rc != 0 || (rc = get_bool(x, o, "host_name", true, &host)) != 0 ||
        (rc = get_bool(x, o, "container_id", true, &cont)) != 0 ||
        (rc = get_bool(x, o, "process", false, &proc)) != 0 ||
        (rc = get_bool(x, o, "service_instance_id", true, &p->service_instance_id)) != 0) {
        return rc;
    }
    p->targets = TARGET_RESOURCE;
    char tmp[64];
    const char *uid;
    if ((rc = get_text(x, o, "user_uid", &uid, tmp, sizeof(tmp))) != 0) {
        return rc;
    }
    if (uid != NULL && (strlen(uid) == 0 || strlen(uid) > 256)) {
        return fail(x, "user_uid", "must be 1 to 256 bytes");
    }
    if (uid != NULL && (p->user_uid = xstrdup(uid)) == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    char buf[256];
    if (host && gethostname(buf, sizeof(buf) - 1) == 0) {
        buf[sizeof(buf) - 1] = 0;
        if ((p->host_name = xstrdup(buf)) == NULL) {
            return DLOTEL_ERR_NOMEM;
        }
    }
    if (cont) {
        char *text = malloc(64 * 1024);
        char id[65];
        if (text == NULL) {
            return DLOTEL_ERR_NOMEM;
        }
        size_t n = read_small("/proc/self/cgroup", text, 64 * 1024);
        int got = processor_container_id_from(text, n, id);
        if (!got) {
            n = read_small("/proc/self/mountinfo", text, 64 * 1024);
            got = processor_container_id_from(text, n, id);
        }
        free(text);
        if (got && (p->container_id = xstrdup(id)) == NULL) {
            return DLOTEL_ERR_NOMEM;
        }
    }
    if (proc) {
        snprintf(buf, sizeof(buf), "%ld", (long)getpid());
        if ((p->pid = xstrdup(buf)) == NULL) {
            return DLOTEL_ERR_NOMEM;
        }
        ssize_t r = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
        if (r > 0) {
            buf[r] = 0;
            const char *base = strrchr(buf, '/');
            if ((p->exe = xstrdup(base != NULL ? base + 1 : buf)) == NULL) {
                return DLOTEL_ERR_NOMEM;
            }
        }
    }
    return 0;
}

static const char *const LIMITS_KEYS[] = {"kind", "max_value_length", "max_attributes", "targets",
                                          NULL};

static int parse_limits(struct pctx *x, enum otlp_signal s, json_t *o, struct proc *p)
{
    int rc = check_keys(x, o, LIMITS_KEYS, "a limits processor");
    bool has_len = false;
    if (rc != 0 ||
        (rc = get_targets(x, s, o, signal_targets(s) & ~TARGET_RESOURCE, &p->targets)) != 0 ||
        (rc = get_count(x, o, "max_value_length", 1, 1024 * 1024, &has_len,
                        &p->max_value_length)) != 0 ||
        (rc = get_count(x, o, "max_attributes", 0, 100000, &p->has_max_attributes,
                        &p->max_attributes)) != 0) {
        return rc;
    }
    if (!has_len && !p->has_max_attributes) {
        return fail(x, NULL, "limits needs max_value_length or max_attributes");
    }
    return 0;
}

static const char *const KINDS[] = {"filter", "sample", "attributes", "resource", "limits", NULL};

static void proc_cleanup(struct proc *p)
{
    for (size_t i = 0; i < p->nconds; i++) {
        struct pattern *ps[3] = {p->conds[i].service, p->conds[i].name, p->conds[i].attr_value};
        for (int k = 0; k < 3; k++) {
            if (ps[k] != NULL) {
                pattern_cleanup(ps[k]);
                free(ps[k]);
            }
        }
        free(p->conds[i].attr_key);
    }
    free(p->conds);
    for (size_t i = 0; i < p->nacts; i++) {
        free(p->acts[i].key);
        free(p->acts[i].str);
    }
    free(p->acts);
    pattern_list_cleanup(&p->include);
    pattern_list_cleanup(&p->exclude);
    pattern_list_cleanup(&p->redact_keys);
    pattern_list_cleanup(&p->redact_values);
    free(p->host_name);
    free(p->container_id);
    free(p->user_uid);
    free(p->pid);
    free(p->exe);
}

void processor_chain_free(struct processor_chain *c)
{
    if (c == NULL) {
        return;
    }
    for (size_t i = 0; i < c->n; i++) {
        proc_cleanup(&c->procs[i]);
    }
    slab_cleanup(&c->slab);
    if (c->locks) {
        pthread_mutex_destroy(&c->run_lock);
        pthread_mutex_destroy(&c->stats_lock);
    }
    free(c);
}

int processor_chain_new(struct processor_chain **out, enum otlp_signal s, const char *json,
                        const char *path, char *why, size_t why_len)
{
    if ((unsigned)s >= OTLP_SIGNAL_COUNT || json == NULL || path == NULL) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    json_error_t jerr;
    json_t *root = json_loads(json, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        snprintf(why, why_len, "%s: not valid JSON: %s", path, jerr.text);
        return DLOTEL_ERR_CONFIG;
    }
    int rc = DLOTEL_ERR_CONFIG;
    struct processor_chain *c = NULL;
    if (!json_is_array(root)) {
        snprintf(why, why_len, "%s: expected a list of processors", path);
        goto fail;
    }
    if (json_array_size(root) > PROCESSOR_MAX_CHAIN) {
        snprintf(why, why_len, "%s: more than %d processors", path, PROCESSOR_MAX_CHAIN);
        goto fail;
    }
    if ((c = calloc(1, sizeof(*c))) == NULL) {
        rc = DLOTEL_ERR_NOMEM;
        goto fail;
    }
    c->signal = s;
    slab_init(&c->slab, PROCESSOR_ARENA_MAX);
    if (pthread_mutex_init(&c->run_lock, NULL) != 0) {
        rc = DLOTEL_ERR_NOMEM;
        goto fail;
    }
    if (pthread_mutex_init(&c->stats_lock, NULL) != 0) {
        pthread_mutex_destroy(&c->run_lock);
        rc = DLOTEL_ERR_NOMEM;
        goto fail;
    }
    c->locks = true;
    size_t i;
    json_t *o;
    json_array_foreach(root, i, o)
    {
        struct pctx x = {path, i, why, why_len};
        if (!json_is_object(o)) {
            rc = fail(&x, NULL, "expected a processor, e.g. {kind: filter}");
            goto fail;
        }
        json_t *k = json_object_get(o, "kind");
        const char *kind = json_string_value(k);
        int ki = -1;
        for (int n = 0; kind != NULL && KINDS[n] != NULL; n++) {
            if (strcmp(kind, KINDS[n]) == 0) {
                ki = n;
            }
        }
        if (ki < 0) {
            const char *dym = kind != NULL ? did_you_mean(kind, KINDS) : NULL;
            rc = fail(&x, "kind",
                      "%s%.40s%s is not a processor kind (use filter, sample, attributes, "
                      "resource or limits)%s%s%s",
                      kind ? "'" : "", kind ? kind : "missing: it", kind ? "'" : "",
                      dym ? "; did you mean '" : "", dym ? dym : "", dym ? "'?" : "");
            goto fail;
        }
        struct proc *p = &c->procs[c->n++];
        p->kind = (enum proc_kind)ki;
        switch (p->kind) {
        case PROC_FILTER:
            rc = parse_filter(&x, s, o, p);
            break;
        case PROC_SAMPLE:
            rc = parse_sample(&x, s, o, p);
            break;
        case PROC_ATTRIBUTES:
            rc = parse_attributes(&x, s, o, p);
            break;
        case PROC_RESOURCE:
            rc = parse_resource(&x, o, p);
            break;
        case PROC_LIMITS:
            rc = parse_limits(&x, s, o, p);
            break;
        }
        if (rc != 0) {
            goto fail;
        }
    }
    json_decref(root);
    *out = c;
    return 0;

fail:
    processor_chain_free(c);
    json_decref(root);
    return rc;
}

enum otlp_signal processor_chain_signal(const struct processor_chain *c)
{
    return c->signal;
}

void processor_chain_get_stats(const struct processor_chain *c, struct processor_stats *out)
{
    /* The lock is not part of the value: locking it does not change what the chain is. */
    pthread_mutex_t *lock = (pthread_mutex_t *)&c->stats_lock;
    pthread_mutex_lock(lock);
    *out = c->published;
    pthread_mutex_unlock(lock);
}

/* ---- sampling ------------------------------------------------------------------------------ */

uint64_t processor_sample_threshold(double ratio)
{
    const double two56 = 72057594037927936.0; /* 2^56 */
    if (!(ratio > 0)) {
        return (uint64_t)1 << 56; /* Above every R: nothing is kept. */
    }
    if (ratio >= 1) {
        return 0;
    }
    return (uint64_t)llround((1.0 - ratio) * two56);
}

int processor_sample_keep(const uint8_t *trace_id, size_t len, uint64_t threshold)
{
    if (len != 16) {
        return 1; /* No trace id (a log outside any trace): nothing to agree on; kept. */
    }
    uint64_t r = 0;
    for (int i = 9; i < 16; i++) {
        r = (r << 8) | trace_id[i];
    }
    return r >= threshold;
}

/* ---- running ------------------------------------------------------------------------------- */

static const char *kv_text(const pkv_t *kv, char *tmp, size_t tmp_len)
{
    if (kv == NULL || kv->value == NULL) {
        return NULL;
    }
    switch (kv->value->value_case) {
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE:
        return kv->value->string_value;
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE:
        snprintf(tmp, tmp_len, "%" PRId64, kv->value->int_value);
        return tmp;
    case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE:
        return kv->value->bool_value ? "true" : "false";
    default:
        return NULL;
    }
}

static const char *service_of(res_t *r)
{
    if (r == NULL) {
        return "";
    }
    struct kvset s = {&r->attributes, &r->n_attributes, NULL};
    char tmp[8];
    const char *v = kv_text(kv_find(&s, "service.name"), tmp, sizeof(tmp));
    return v != NULL && v != tmp ? v : "";
}

static bool cond_match(const struct cond *k, const char *service, const char *name,
                       const struct kvset *attrs, int severity)
{
    if (k->service != NULL && !pattern_match(k->service, service, strlen(service))) {
        return false;
    }
    if (k->name != NULL && !pattern_match(k->name, name, strlen(name))) {
        return false;
    }
    if (k->attr_key != NULL) {
        char tmp[32];
        const char *v = kv_text(kv_find(attrs, k->attr_key), tmp, sizeof(tmp));
        if (v == NULL || !pattern_match(k->attr_value, v, strlen(v))) {
            return false;
        }
    }
    if (k->severity_below != 0 && !(severity > 0 && severity < k->severity_below)) {
        return false;
    }
    return true;
}

static bool conds_match(const struct proc *p, const char *service, const char *name,
                        const struct kvset *attrs, int severity)
{
    for (size_t i = 0; i < p->nconds; i++) {
        if (cond_match(&p->conds[i], service, name, attrs, severity)) {
            return true;
        }
    }
    return false;
}

/*
 * The URL rules judge the spans where a request enters a service: roots (no parent) and SERVER
 * spans. Returns 0 when the span is not judged or has no URL attribute, else 1 with *matched
 * saying whether a URL matched |l|.
 */
static int url_match(const struct pattern_list *l, span_t *sp, bool *matched)
{
    if (sp->parent_span_id.len != 0 &&
        sp->kind != OPENTELEMETRY__PROTO__TRACE__V1__SPAN__SPAN_KIND__SPAN_KIND_SERVER) {
        return 0;
    }
    struct kvset s = {&sp->attributes, &sp->n_attributes, NULL};
    int seen = 0;
    *matched = false;
    for (size_t i = 0; i < sizeof(URL_KEYS) / sizeof(URL_KEYS[0]) && !*matched; i++) {
        pkv_t *kv = kv_find(&s, URL_KEYS[i]);
        if (kv == NULL || kv->value == NULL ||
            kv->value->value_case !=
                OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE) {
            continue;
        }
        const char *u = kv->value->string_value;
        size_t len = strcspn(u, "?#");
        char stackbuf[512];
        char *heap = NULL;
        const char *path = u;
        if (u[len] != 0) {
            /* The query is not part of the path; regexec needs a NUL where it ends. */
            char *b = len < sizeof(stackbuf) ? stackbuf : (heap = malloc(len + 1));
            if (b == NULL) {
                continue;
            }
            memcpy(b, u, len);
            b[len] = 0;
            path = b;
        }
        seen = 1;
        *matched = pattern_list_match(l, path, len);
        free(heap);
    }
    return seen;
}

static int cmp_id(const void *a, const void *b)
{
    return memcmp(a, b, 16);
}

/* Sorted trace ids. */
struct idset {
    uint8_t *v;
    size_t n;
};

static bool id_in(const struct idset *ids, const ProtobufCBinaryData *id);

/*
 * The traces a URL rule drops, whole, in this request. Without an include list: the traces of
 * which a judged span matches exclude_urls. With one: the traces that have judged spans, none
 * of which matches include_urls (a trace entering through /api/cart keeps the spans of the
 * services it calls). Traces with no judged span carrying a URL are never dropped here.
 */
static int collect_url_traces(struct processor_chain *c, const struct proc *p, treq_t *req,
                              struct idset *drop)
{
    size_t total = 0;
    for (size_t r = 0; r < req->n_resource_spans; r++) {
        for (size_t q = 0; q < req->resource_spans[r]->n_scope_spans; q++) {
            total += req->resource_spans[r]->scope_spans[q]->n_spans;
        }
    }
    struct idset inc = {0};
    drop->n = 0;
    drop->v = total > 0 ? slab_alloc(&c->slab, total * 16) : NULL;
    inc.v = total > 0 ? slab_alloc(&c->slab, total * 16) : NULL;
    if (total > 0 && (drop->v == NULL || inc.v == NULL)) {
        return DLOTEL_ERR_TOO_LARGE;
    }
    bool include = p->include.n > 0;
    const struct pattern_list *l = include ? &p->include : &p->exclude;
    for (size_t r = 0; r < req->n_resource_spans; r++) {
        for (size_t q = 0; q < req->resource_spans[r]->n_scope_spans; q++) {
            Opentelemetry__Proto__Trace__V1__ScopeSpans *ss =
                req->resource_spans[r]->scope_spans[q];
            for (size_t i = 0; i < ss->n_spans; i++) {
                span_t *sp = ss->spans[i];
                bool m;
                if (sp->trace_id.len != 16 || !url_match(l, sp, &m)) {
                    continue;
                }
                if (!include && m) {
                    memcpy(drop->v + 16 * drop->n++, sp->trace_id.data, 16);
                } else if (include) {
                    /* Judged: a candidate for dropping unless some judged span matched. */
                    memcpy(drop->v + 16 * drop->n++, sp->trace_id.data, 16);
                    if (m) {
                        memcpy(inc.v + 16 * inc.n++, sp->trace_id.data, 16);
                    }
                }
            }
        }
    }
    qsort(drop->v, drop->n, 16, cmp_id);
    if (include && inc.n > 0) {
        qsort(inc.v, inc.n, 16, cmp_id);
        size_t k = 0;
        for (size_t i = 0; i < drop->n; i++) {
            ProtobufCBinaryData id = {16, drop->v + 16 * i};
            if (!id_in(&inc, &id)) {
                memmove(drop->v + 16 * k++, drop->v + 16 * i, 16);
            }
        }
        drop->n = k;
    }
    return 0;
}

static bool id_in(const struct idset *ids, const ProtobufCBinaryData *id)
{
    return id->len == 16 && ids->n > 0 && bsearch(id->data, ids->v, ids->n, 16, cmp_id) != NULL;
}

/* The resource of a ResourceX, made when absent (to add attributes to). NULL: no memory. */
static res_t *resource_of(struct slab *a, res_t **slot)
{
    if (*slot == NULL) {
        res_t *r = slab_alloc(a, sizeof(*r));
        if (r != NULL) {
            *r = (res_t)OPENTELEMETRY__PROTO__RESOURCE__V1__RESOURCE__INIT;
        }
        *slot = r;
    }
    return *slot;
}

static int apply_set(struct processor_chain *c, const struct proc *p, const struct kvset *s)
{
    switch (p->kind) {
    case PROC_ATTRIBUTES:
        return apply_attributes(c, p, s);
    case PROC_LIMITS:
        return apply_limits(c, p, s);
    case PROC_RESOURCE:
        return apply_resource(c, p, s);
    default:
        return 0;
    }
}

static int apply_resource_set(struct processor_chain *c, const struct proc *p, res_t **slot)
{
    if ((p->targets & TARGET_RESOURCE) == 0) {
        return 0;
    }
    res_t *r = resource_of(&c->slab, slot);
    if (r == NULL) {
        return DLOTEL_ERR_TOO_LARGE;
    }
    struct kvset s = {&r->attributes, &r->n_attributes, &r->dropped_attributes_count};
    return apply_set(c, p, &s);
}

static int run_traces(struct processor_chain *c, const struct proc *p, treq_t *req)
{
    struct idset ids = {0};
    int rc;
    if (p->kind == PROC_FILTER && p->urls && (rc = collect_url_traces(c, p, req, &ids)) != 0) {
        return rc;
    }
    for (size_t r = 0; r < req->n_resource_spans; r++) {
        Opentelemetry__Proto__Trace__V1__ResourceSpans *rs = req->resource_spans[r];
        if ((rc = apply_resource_set(c, p, &rs->resource)) != 0) {
            return rc;
        }
        const char *service = service_of(rs->resource);
        for (size_t q = 0; q < rs->n_scope_spans; q++) {
            Opentelemetry__Proto__Trace__V1__ScopeSpans *ss = rs->scope_spans[q];
            size_t kept = 0;
            for (size_t i = 0; i < ss->n_spans; i++) {
                span_t *sp = ss->spans[i];
                struct kvset as = {&sp->attributes, &sp->n_attributes,
                                   &sp->dropped_attributes_count};
                if (p->kind == PROC_FILTER &&
                    (id_in(&ids, &sp->trace_id) || conds_match(p, service, sp->name, &as, 0))) {
                    c->stats.filtered_items++;
                    continue;
                }
                if (p->kind == PROC_SAMPLE &&
                    !processor_sample_keep(sp->trace_id.data, sp->trace_id.len, p->threshold)) {
                    c->stats.sampled_out_items++;
                    continue;
                }
                if ((p->targets & TARGET_SPAN) && (rc = apply_set(c, p, &as)) != 0) {
                    return rc;
                }
                for (size_t e = 0; (p->targets & TARGET_EVENT) && e < sp->n_events; e++) {
                    Opentelemetry__Proto__Trace__V1__Span__Event *ev = sp->events[e];
                    struct kvset es = {&ev->attributes, &ev->n_attributes,
                                       &ev->dropped_attributes_count};
                    if ((rc = apply_set(c, p, &es)) != 0) {
                        return rc;
                    }
                }
                for (size_t l = 0; (p->targets & TARGET_LINK) && l < sp->n_links; l++) {
                    Opentelemetry__Proto__Trace__V1__Span__Link *lk = sp->links[l];
                    struct kvset ls = {&lk->attributes, &lk->n_attributes,
                                       &lk->dropped_attributes_count};
                    if ((rc = apply_set(c, p, &ls)) != 0) {
                        return rc;
                    }
                }
                ss->spans[kept++] = sp;
            }
            ss->n_spans = kept;
        }
    }
    return 0;
}

static int run_logs(struct processor_chain *c, const struct proc *p, lreq_t *req)
{
    int rc;
    for (size_t r = 0; r < req->n_resource_logs; r++) {
        Opentelemetry__Proto__Logs__V1__ResourceLogs *rl = req->resource_logs[r];
        if ((rc = apply_resource_set(c, p, &rl->resource)) != 0) {
            return rc;
        }
        const char *service = service_of(rl->resource);
        for (size_t q = 0; q < rl->n_scope_logs; q++) {
            Opentelemetry__Proto__Logs__V1__ScopeLogs *sl = rl->scope_logs[q];
            size_t kept = 0;
            for (size_t i = 0; i < sl->n_log_records; i++) {
                log_t *lr = sl->log_records[i];
                struct kvset as = {&lr->attributes, &lr->n_attributes,
                                   &lr->dropped_attributes_count};
                if (p->kind == PROC_FILTER) {
                    const char *body =
                        lr->body != NULL &&
                                lr->body->value_case ==
                                    OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE
                            ? lr->body->string_value
                            : "";
                    if (conds_match(p, service, body, &as, (int)lr->severity_number)) {
                        c->stats.filtered_items++;
                        continue;
                    }
                }
                if (p->kind == PROC_SAMPLE &&
                    !processor_sample_keep(lr->trace_id.data, lr->trace_id.len, p->threshold)) {
                    c->stats.sampled_out_items++;
                    continue;
                }
                if ((p->targets & TARGET_LOG) && (rc = apply_set(c, p, &as)) != 0) {
                    return rc;
                }
                sl->log_records[kept++] = lr;
            }
            sl->n_log_records = kept;
        }
    }
    return 0;
}

/* The data points of a metric, whatever its type, as an array of pointers and its count. */
static void **points_of(metric_t *m, size_t **n)
{
    switch (m->data_case) {
    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_GAUGE:
        *n = &m->gauge->n_data_points;
        return (void **)m->gauge->data_points;
    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_SUM:
        *n = &m->sum->n_data_points;
        return (void **)m->sum->data_points;
    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_HISTOGRAM:
        *n = &m->histogram->n_data_points;
        return (void **)m->histogram->data_points;
    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_EXPONENTIAL_HISTOGRAM:
        *n = &m->exponential_histogram->n_data_points;
        return (void **)m->exponential_histogram->data_points;
    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_SUMMARY:
        *n = &m->summary->n_data_points;
        return (void **)m->summary->data_points;
    default:
        *n = NULL;
        return NULL;
    }
}

static struct kvset point_attrs(metric_t *m, void *pt)
{
    struct kvset s = {0};
    switch (m->data_case) {
    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_GAUGE:
    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_SUM: {
        Opentelemetry__Proto__Metrics__V1__NumberDataPoint *d = pt;
        s = (struct kvset){&d->attributes, &d->n_attributes, NULL};
        break;
    }
    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_HISTOGRAM: {
        Opentelemetry__Proto__Metrics__V1__HistogramDataPoint *d = pt;
        s = (struct kvset){&d->attributes, &d->n_attributes, NULL};
        break;
    }
    case OPENTELEMETRY__PROTO__METRICS__V1__METRIC__DATA_EXPONENTIAL_HISTOGRAM: {
        Opentelemetry__Proto__Metrics__V1__ExponentialHistogramDataPoint *d = pt;
        s = (struct kvset){&d->attributes, &d->n_attributes, NULL};
        break;
    }
    default: {
        Opentelemetry__Proto__Metrics__V1__SummaryDataPoint *d = pt;
        s = (struct kvset){&d->attributes, &d->n_attributes, NULL};
        break;
    }
    }
    return s;
}

static int run_metrics(struct processor_chain *c, const struct proc *p, mreq_t *req)
{
    int rc;
    for (size_t r = 0; r < req->n_resource_metrics; r++) {
        Opentelemetry__Proto__Metrics__V1__ResourceMetrics *rm = req->resource_metrics[r];
        if ((rc = apply_resource_set(c, p, &rm->resource)) != 0) {
            return rc;
        }
        const char *service = service_of(rm->resource);
        for (size_t q = 0; q < rm->n_scope_metrics; q++) {
            Opentelemetry__Proto__Metrics__V1__ScopeMetrics *sm = rm->scope_metrics[q];
            for (size_t k = 0; k < sm->n_metrics; k++) {
                metric_t *m = sm->metrics[k];
                size_t *n;
                void **pts = points_of(m, &n);
                size_t kept = 0;
                for (size_t i = 0; pts != NULL && i < *n; i++) {
                    struct kvset as = point_attrs(m, pts[i]);
                    if (p->kind == PROC_FILTER && conds_match(p, service, m->name, &as, 0)) {
                        c->stats.filtered_items++;
                        continue;
                    }
                    if ((p->targets & TARGET_DATAPOINT) && (rc = apply_set(c, p, &as)) != 0) {
                        return rc;
                    }
                    pts[kept++] = pts[i];
                }
                if (pts != NULL) {
                    *n = kept;
                }
            }
        }
    }
    return 0;
}

/*
 * Removes the scopes and resources left without items, and counts what is left. A metric
 * without data points goes too (one that arrived so is kept: nothing was dropped from it).
 */
static void prune_count(const struct processor_chain *c, ProtobufCMessage *msg,
                        struct otlp_counts *cnt)
{
    *cnt = (struct otlp_counts){0};
    switch (c->signal) {
    case OTLP_TRACES: {
        treq_t *req = (treq_t *)msg;
        size_t nr = 0;
        for (size_t r = 0; r < req->n_resource_spans; r++) {
            Opentelemetry__Proto__Trace__V1__ResourceSpans *rs = req->resource_spans[r];
            size_t nq = 0;
            for (size_t q = 0; q < rs->n_scope_spans; q++) {
                if (rs->scope_spans[q]->n_spans > 0) {
                    cnt->items += rs->scope_spans[q]->n_spans;
                    rs->scope_spans[nq++] = rs->scope_spans[q];
                }
            }
            rs->n_scope_spans = nq;
            if (nq > 0) {
                cnt->scopes += (uint32_t)nq;
                req->resource_spans[nr++] = rs;
            }
        }
        req->n_resource_spans = nr;
        cnt->resources = (uint32_t)nr;
        break;
    }
    case OTLP_LOGS: {
        lreq_t *req = (lreq_t *)msg;
        size_t nr = 0;
        for (size_t r = 0; r < req->n_resource_logs; r++) {
            Opentelemetry__Proto__Logs__V1__ResourceLogs *rl = req->resource_logs[r];
            size_t nq = 0;
            for (size_t q = 0; q < rl->n_scope_logs; q++) {
                if (rl->scope_logs[q]->n_log_records > 0) {
                    cnt->items += rl->scope_logs[q]->n_log_records;
                    rl->scope_logs[nq++] = rl->scope_logs[q];
                }
            }
            rl->n_scope_logs = nq;
            if (nq > 0) {
                cnt->scopes += (uint32_t)nq;
                req->resource_logs[nr++] = rl;
            }
        }
        req->n_resource_logs = nr;
        cnt->resources = (uint32_t)nr;
        break;
    }
    case OTLP_METRICS: {
        mreq_t *req = (mreq_t *)msg;
        size_t nr = 0;
        for (size_t r = 0; r < req->n_resource_metrics; r++) {
            Opentelemetry__Proto__Metrics__V1__ResourceMetrics *rm = req->resource_metrics[r];
            size_t nq = 0;
            for (size_t q = 0; q < rm->n_scope_metrics; q++) {
                Opentelemetry__Proto__Metrics__V1__ScopeMetrics *sm = rm->scope_metrics[q];
                size_t nk = 0;
                for (size_t k = 0; k < sm->n_metrics; k++) {
                    size_t *n;
                    void **pts = points_of(sm->metrics[k], &n);
                    if (pts == NULL || *n > 0) {
                        cnt->items += pts != NULL ? *n : 0;
                        sm->metrics[nk++] = sm->metrics[k];
                    }
                }
                sm->n_metrics = nk;
                if (nk > 0) {
                    rm->scope_metrics[nq++] = sm;
                }
            }
            rm->n_scope_metrics = nq;
            if (nq > 0) {
                cnt->scopes += (uint32_t)nq;
                req->resource_metrics[nr++] = rm;
            }
        }
        req->n_resource_metrics = nr;
        cnt->resources = (uint32_t)nr;
        break;
    }
    }
}

/* ---- the slab ---------------------------------------------------------------------------- */

struct slab_chunk {
    struct slab_chunk *next;
    size_t pad; /* Keeps data 16-byte aligned. */
};

void slab_init(struct slab *s, size_t max)
{
    *s = (struct slab){.max = max};
}

void *slab_alloc(struct slab *s, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (n == 0) {
        n = 16;
    }
    if (s->cap - s->used >= n) {
        void *p = s->base + s->used;
        s->used += n;
        return p;
    }
    if (n > s->max || s->cap + s->over_bytes > s->max - n) {
        return NULL;
    }
    struct slab_chunk *ch = malloc(sizeof(*ch) + n);
    if (ch == NULL) {
        return NULL;
    }
    ch->next = s->over;
    s->over = ch;
    s->over_bytes += n;
    return ch + 1;
}

void slab_reset(struct slab *s)
{
    size_t need = s->used + s->over_bytes;
    while (s->over != NULL) {
        struct slab_chunk *next = s->over->next;
        free(s->over);
        s->over = next;
    }
    if (need > s->cap && s->cap < SLAB_KEEP_MAX) {
        size_t cap = need + need / 4;
        cap = cap > SLAB_KEEP_MAX ? SLAB_KEEP_MAX : cap;
        unsigned char *b = malloc(cap);
        if (b != NULL) {
            free(s->base);
            s->base = b;
            s->cap = cap;
        }
    }
    s->used = 0;
    s->over_bytes = 0;
}

void slab_cleanup(struct slab *s)
{
    while (s->over != NULL) {
        struct slab_chunk *next = s->over->next;
        free(s->over);
        s->over = next;
    }
    free(s->base);
    *s = (struct slab){.max = s->max};
}

static void *pb_alloc(void *data, size_t size)
{
    return slab_alloc(data, size);
}

static void pb_free(void *data, void *ptr)
{
    (void)data;
    (void)ptr; /* Freed with the slab. */
}

static int run_chain(struct processor_chain *c, const uint8_t *pb, size_t len, struct buf *out,
                     struct otlp_counts *counts)
{
    slab_reset(&c->slab);
    c->stats.requests++;
    /*
     * The scan comes first, as otlp_unpack() does it: protobuf-c recurses without a limit of
     * its own and never sees bytes the scanner refused.
     */
    struct otlp_counts scanned;
    int rc = otlp_scan(c->signal, pb, len, &scanned, NULL);
    if (rc != 0) {
        c->stats.failed_requests++;
        return rc;
    }
    ProtobufCAllocator alloc = {pb_alloc, pb_free, &c->slab};
    ProtobufCMessage *msg =
        protobuf_c_message_unpack(otlp_request_descriptor(c->signal), &alloc, len, pb);
    if (msg == NULL) {
        c->stats.failed_requests++;
        return DLOTEL_ERR_TOO_LARGE; /* The scanner accepted it: only memory can refuse. */
    }
    struct otlp_counts in;
    prune_count(c, msg, &in);
    c->stats.items_in += in.items;
    for (size_t i = 0; i < c->n && rc == 0; i++) {
        switch (c->signal) {
        case OTLP_TRACES:
            rc = run_traces(c, &c->procs[i], (treq_t *)msg);
            break;
        case OTLP_LOGS:
            rc = run_logs(c, &c->procs[i], (lreq_t *)msg);
            break;
        case OTLP_METRICS:
            rc = run_metrics(c, &c->procs[i], (mreq_t *)msg);
            break;
        }
    }
    if (rc != 0) {
        c->stats.failed_requests++;
        return rc;
    }
    prune_count(c, msg, counts);
    size_t size = protobuf_c_message_get_packed_size(msg);
    if ((rc = buf_reserve(out, size)) != 0) {
        c->stats.failed_requests++;
        return rc;
    }
    protobuf_c_message_pack(msg, out->data + out->len);
    out->len += size;
    c->stats.items_out += counts->items;
    return 0;
}

/*
 * The pipeline calls this on a thread of libuv's pool while the loop may read the counters
 * (the admin endpoint's /metrics): the run works on |stats| under |run_lock|, and publishes a
 * copy under |stats_lock| when it ends, so a reader never waits for a whole run.
 */
int processor_chain_run(struct processor_chain *c, const uint8_t *pb, size_t len, struct buf *out,
                        struct otlp_counts *counts)
{
    pthread_mutex_lock(&c->run_lock);
    int rc = run_chain(c, pb, len, out, counts);
    pthread_mutex_lock(&c->stats_lock);
    c->published = c->stats;
    pthread_mutex_unlock(&c->stats_lock);
    pthread_mutex_unlock(&c->run_lock);
    return rc;
}
