/*
 * The configuration object: defaults, config_set() (the funnel every source goes through),
 * the environment, exporters, and the one-call config_build(). Resolution and validation are
 * in config_check.c, YAML in config_yaml.c, printing and docs in config_print.c.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_int.h"
#include "dlotel.h"

extern char **environ;

_Static_assert(sizeof(enum config_exporter_type) == sizeof(int), "enum fields must be int-sized");
_Static_assert(sizeof(enum config_compression) == sizeof(int), "enum fields must be int-sized");
_Static_assert(sizeof(enum config_fsync) == sizeof(int), "enum fields must be int-sized");
_Static_assert(sizeof(enum config_verbosity) == sizeof(int), "enum fields must be int-sized");
_Static_assert(sizeof(enum config_overload) == sizeof(int), "enum fields must be int-sized");
_Static_assert(sizeof(enum config_jwt_algorithm) == sizeof(int), "enum fields must be int-sized");
_Static_assert(sizeof(enum config_log_format) == sizeof(int), "enum fields must be int-sized");
_Static_assert(sizeof(enum log_level) == sizeof(int), "enum fields must be int-sized");

int config_option_find(const struct config_option *table, size_t n, const char *path,
                       size_t path_len)
{
    for (size_t i = 0; i < n; i++) {
        if (strlen(table[i].path) == path_len && memcmp(table[i].path, path, path_len) == 0) {
            return (int)i;
        }
    }
    return -1;
}

const char *config_getenv(char **envp, const char *name)
{
    char **env = envp != NULL ? envp : environ;
    size_t nl = strlen(name);
    for (char **e = env; e != NULL && *e != NULL; e++) {
        if (strncmp(*e, name, nl) == 0 && (*e)[nl] == '=') {
            return *e + nl + 1;
        }
    }
    return NULL;
}

bool config_name_valid(const char *s, size_t len)
{
    if (len == 0 || len > CONFIG_MAX_NAME || s[0] < 'a' || s[0] > 'z') {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) {
            return false;
        }
    }
    return true;
}

void config_env_suffix(const char *path, char *out, size_t out_len)
{
    size_t i = 0;
    for (; path[i] != 0 && i + 1 < out_len; i++) {
        char c = path[i];
        out[i] = c == '.' ? '_' : (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
    }
    out[i] = 0;
}

/* ---- defaults ------------------------------------------------------------------------------ */

/* Sets every field of |table| in |base| to its default. Returns 0 or DLOTEL_ERR_INTERNAL. */
static int apply_defaults(void *base, const struct config_option *table, size_t n, uint8_t *source,
                          uint8_t *via)
{
    for (size_t i = 0; i < n; i++) {
        const struct config_option *opt = &table[i];
        source[i] = CONFIG_SOURCE_DEFAULT;
        via[i] = CONFIG_VIA_NONE;
        if (opt->kind == CONFIG_KIND_ENUM && opt->def == NULL) {
            *(int *)(void *)((char *)base + opt->offset) = -1;
            continue;
        }
        if (opt->def == NULL || opt->kind == CONFIG_KIND_EXPORTERS) {
            continue;
        }
        struct config_value v = {0};
        char why[256];
        int rv = config_value_parse(opt, opt->def, strlen(opt->def), &v, why, sizeof(why));
        if (rv != 0) {
            config_value_cleanup(&v);
            return rv == DLOTEL_ERR_NOMEM ? rv : DLOTEL_ERR_INTERNAL;
        }
        config_value_commit(base, opt, &v, CONFIG_SOURCE_DEFAULT, CONFIG_VIA_NONE, &source[i],
                            &via[i]);
    }
    return 0;
}

static void exporter_cleanup(struct config_exporter *e)
{
    for (size_t i = 0; i < config_exporter_table_len; i++) {
        config_field_cleanup(e, &config_exporter_table[i]);
    }
    free(e->name);
    e->name = NULL;
}

int config_new(struct config **out)
{
    struct config *cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    int rv = apply_defaults(cfg, config_table, config_table_len, cfg->source_, cfg->via_);
    if (rv != 0) {
        goto fail_defaults;
    }
    *out = cfg;
    return 0;

fail_defaults:
    config_free(cfg);
    return rv;
}

void config_free(struct config *cfg)
{
    if (cfg == NULL) {
        return;
    }
    for (size_t i = 0; i < config_table_len; i++) {
        config_field_cleanup(cfg, &config_table[i]);
    }
    for (size_t i = 0; i < cfg->n_exporters; i++) {
        exporter_cleanup(&cfg->exporters[i]);
    }
    free(cfg->exporters);
    free(cfg);
}

/* ---- exporters ----------------------------------------------------------------------------- */

struct config_exporter *config_exporter_get(struct config *cfg, const char *name, size_t len,
                                            bool create, const char *where,
                                            struct config_errors *errs, int *rv)
{
    *rv = 0;
    for (size_t i = 0; i < cfg->n_exporters; i++) {
        if (strlen(cfg->exporters[i].name) == len &&
            memcmp(cfg->exporters[i].name, name, len) == 0) {
            return &cfg->exporters[i];
        }
    }
    if (!create) {
        return NULL;
    }
    char shown[CONFIG_MAX_NAME + 8];
    snprintf(shown, sizeof(shown), "%.*s", (int)(len > CONFIG_MAX_NAME ? CONFIG_MAX_NAME : len),
             name);
    char path[CONFIG_MAX_NAME + 32];
    snprintf(path, sizeof(path), "exporters.%s", shown);
    if (!config_name_valid(name, len)) {
        config_diag_add(errs, false, where, path,
                        "exporter names are 1 to %d lowercase letters, digits, '_' and '-', "
                        "starting with a letter",
                        CONFIG_MAX_NAME);
        *rv = DLOTEL_ERR_CONFIG;
        return NULL;
    }
    if (cfg->n_exporters >= CONFIG_MAX_EXPORTERS) {
        config_diag_add(errs, false, where, path, "too many exporters (at most %d)",
                        CONFIG_MAX_EXPORTERS);
        *rv = DLOTEL_ERR_CONFIG;
        return NULL;
    }
    struct config_exporter *arr = realloc(cfg->exporters, (cfg->n_exporters + 1) * sizeof(*arr));
    if (arr == NULL) {
        *rv = DLOTEL_ERR_NOMEM;
        return NULL;
    }
    cfg->exporters = arr;
    struct config_exporter *e = &arr[cfg->n_exporters];
    memset(e, 0, sizeof(*e));
    e->name = strndup(name, len);
    if (e->name == NULL) {
        *rv = DLOTEL_ERR_NOMEM;
        return NULL;
    }
    int drv =
        apply_defaults(e, config_exporter_table, config_exporter_table_len, e->source_, e->via_);
    if (drv != 0) {
        exporter_cleanup(e);
        *rv = drv;
        return NULL;
    }
    cfg->n_exporters++;
    return e;
}

const struct config_exporter *config_exporter_find(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_exporters; i++) {
        if (strcmp(cfg->exporters[i].name, name) == 0) {
            return &cfg->exporters[i];
        }
    }
    return NULL;
}

static bool list_has(const struct config_list *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++) {
        if (strcmp(l->items[i], s) == 0) {
            return true;
        }
    }
    return false;
}

unsigned config_exporter_signals(const struct config *cfg, const struct config_exporter *e)
{
    unsigned s = 0;
    if (list_has(&cfg->exporters_traces, e->name)) {
        s |= CONFIG_SIGNAL_TRACES;
    }
    if (list_has(&cfg->exporters_metrics, e->name)) {
        s |= CONFIG_SIGNAL_METRICS;
    }
    if (list_has(&cfg->exporters_logs, e->name)) {
        s |= CONFIG_SIGNAL_LOGS;
    }
    return s;
}

/* ---- setting one key ----------------------------------------------------------------------- */

/* Collects the global paths, for "did you mean" on an unknown key. */
static const char *suggest_global(const char *path, size_t len)
{
    const char *cands[sizeof(((struct config *)0)->source_)];
    size_t n = 0;
    for (size_t i = 0; i < config_table_len; i++) {
        cands[n++] = config_table[i].path;
    }
    return config_did_you_mean(path, len, cands, n);
}

static const char *suggest_exporter_field(const char *field, size_t len)
{
    const char *cands[sizeof(((struct config_exporter *)0)->source_)];
    for (size_t i = 0; i < config_exporter_table_len; i++) {
        cands[i] = config_exporter_table[i].path;
    }
    return config_did_you_mean(field, len, cands, config_exporter_table_len);
}

/*
 * Parses |text| for the field |opt| of |base| and commits it at |src|. Problems are reported
 * against |path| and |where|. Returns 0, DLOTEL_ERR_CONFIG or DLOTEL_ERR_NOMEM.
 */
static int set_field(void *base, const struct config_option *opt, uint8_t *source, uint8_t *via,
                     const char *text, size_t len, enum config_source src, uint8_t via_idx,
                     const char *path, const char *where, struct config_errors *errs)
{
    struct config_value v = {0};
    char why[512];
    int rv = config_value_parse(opt, text, len, &v, why, sizeof(why));
    if (rv != 0) {
        config_value_cleanup(&v);
        if (rv == DLOTEL_ERR_CONFIG) {
            config_diag_add(errs, false, where, path, "%s", why);
        }
        return rv;
    }
    config_value_commit(base, opt, &v, src, via_idx, source, via);
    return 0;
}

/*
 * Sets one entry of the exporter map option |idx| ("exporters.up.headers.Authorization"), so
 * that a value may hold commas. The entry joins the map when |src| ranks at least as high as
 * the map's source, which then becomes |src|.
 */
static int set_map_entry(struct config_exporter *e, int idx, const char *key, const char *text,
                         size_t len, enum config_source src, const char *path, const char *where,
                         struct config_errors *errs)
{
    char why[256];
    if (config_check_string(key, strlen(key), why, sizeof(why)) != 0 ||
        config_check_string(text, len, why, sizeof(why)) != 0) {
        config_diag_add(errs, false, where, path, "%s", why);
        return DLOTEL_ERR_CONFIG;
    }
    if (config_source_rank(src) < config_source_rank((enum config_source)e->source_[idx])) {
        return 0;
    }
    struct config_map *m = &e->headers;
    for (size_t i = 0; i < m->n; i++) {
        if (strcmp(m->items[i].key, key) == 0) {
            char *v = strndup(text, len);
            if (v == NULL) {
                return DLOTEL_ERR_NOMEM;
            }
            free(m->items[i].value);
            m->items[i].value = v;
            e->source_[idx] = (uint8_t)src;
            return 0;
        }
    }
    int rv = config_map_put(m, key, strlen(key), text, len);
    if (rv == DLOTEL_ERR_TOO_LARGE) {
        config_diag_add(errs, false, where, path, "more than %d entries", CONFIG_MAX_ITEMS);
        return DLOTEL_ERR_CONFIG;
    }
    if (rv == 0) {
        e->source_[idx] = (uint8_t)src;
    }
    return rv;
}

/*
 * Sets |path| (a dotted path) to |text|. This is where flags, the Python typed config and the
 * environment meet; YAML comes through config_yaml.c, which shares set_field's parser.
 */
static int set_path(struct config *cfg, const char *path, const char *text, size_t len,
                    enum config_source src, uint8_t via_idx, const char *where,
                    struct config_errors *errs)
{
    size_t plen = strlen(path);
    int idx = config_option_find(config_table, config_table_len, path, plen);
    if (idx >= 0) {
        return set_field(cfg, &config_table[idx], &cfg->source_[idx], &cfg->via_[idx], text, len,
                         src, via_idx, path, where, errs);
    }
    if (strncmp(path, "exporters.", 10) == 0) {
        const char *name = path + 10;
        const char *dot = strchr(name, '.');
        if (dot == NULL) {
            config_diag_add(errs, false, where, path, "set a field of the exporter, e.g. %s.type",
                            path);
            return DLOTEL_ERR_CONFIG;
        }
        const char *field = dot + 1;
        int fi = config_option_find(config_exporter_table, config_exporter_table_len, field,
                                    strlen(field));
        if (fi < 0 && strncmp(field, "headers.", 8) == 0 && field[8] != 0) {
            int rv;
            struct config_exporter *e =
                config_exporter_get(cfg, name, (size_t)(dot - name), true, where, errs, &rv);
            if (e == NULL) {
                return rv;
            }
            return set_map_entry(
                e,
                config_option_find(config_exporter_table, config_exporter_table_len, "headers", 7),
                field + 8, text, len, src, path, where, errs);
        }
        if (fi < 0) {
            const char *dym = suggest_exporter_field(field, strlen(field));
            if (dym != NULL) {
                config_diag_add(errs, false, where, path, "unknown key (did you mean '%s'?)", dym);
            } else {
                config_diag_add(errs, false, where, path, "unknown key");
            }
            return DLOTEL_ERR_CONFIG;
        }
        int rv;
        struct config_exporter *e =
            config_exporter_get(cfg, name, (size_t)(dot - name), true, where, errs, &rv);
        if (e == NULL) {
            return rv;
        }
        return set_field(e, &config_exporter_table[fi], &e->source_[fi], &e->via_[fi], text, len,
                         src, via_idx, path, where, errs);
    }
    const char *dym = suggest_global(path, plen);
    if (dym != NULL) {
        config_diag_add(errs, false, where, path, "unknown key (did you mean '%s'?)", dym);
    } else {
        config_diag_add(errs, false, where, path, "unknown key");
    }
    return DLOTEL_ERR_CONFIG;
}

int config_set(struct config *cfg, const char *key, const char *value, enum config_source src,
               struct config_errors *errs)
{
    if (cfg->finalized_ || key == NULL || value == NULL) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    char where[128] = "";
    const char *path = key;
    if (key[0] == '-') {
        const struct config_flag_info *f = config_flag_find(key);
        if (f == NULL) {
            config_diag_add(errs, false, "", key, "unknown flag");
            return DLOTEL_ERR_CONFIG;
        }
        snprintf(where, sizeof(where), "flag %s", f->flag);
        path = f->path;
    }
    return set_path(cfg, path, value, strlen(value), src, CONFIG_VIA_NONE, where, errs);
}

int config_set_kv(struct config *cfg, const char *key_eq_value, enum config_source src,
                  struct config_errors *errs)
{
    const char *eq = strchr(key_eq_value, '=');
    if (eq == NULL) {
        config_diag_add(errs, false, "", key_eq_value, "expected key=value");
        return DLOTEL_ERR_CONFIG;
    }
    char *key = strndup(key_eq_value, (size_t)(eq - key_eq_value));
    if (key == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    int rv = config_set(cfg, key, eq + 1, src, errs);
    free(key);
    return rv;
}

/* ---- environment --------------------------------------------------------------------------- */

static bool env_known(const char *name, size_t len)
{
    for (size_t i = 0; i < config_table_len; i++) {
        const struct config_option *opt = &config_table[i];
        for (size_t k = 0; k < 3 && opt->env[k] != NULL; k++) {
            if (strlen(opt->env[k]) == len && memcmp(opt->env[k], name, len) == 0) {
                return true;
            }
        }
        if (opt->env_true != NULL && strlen(opt->env_true) == len &&
            memcmp(opt->env_true, name, len) == 0) {
            return true;
        }
    }
    return false;
}

static void warn_unknown_env(const char *name, size_t len, struct config_errors *errs)
{
    const char *cands[2 * sizeof(((struct config *)0)->source_)];
    size_t n = 0;
    for (size_t i = 0; i < config_table_len; i++) {
        const struct config_option *opt = &config_table[i];
        for (size_t k = 0; k < 3 && opt->env[k] != NULL; k++) {
            if (strncmp(opt->env[k], CONFIG_AGENT_ENV_PREFIX, strlen(CONFIG_AGENT_ENV_PREFIX)) ==
                    0 &&
                n < sizeof(cands) / sizeof(cands[0])) {
                cands[n++] = opt->env[k];
            }
        }
        if (opt->env_true != NULL && n < sizeof(cands) / sizeof(cands[0])) {
            cands[n++] = opt->env_true;
        }
    }
    char where[160];
    snprintf(where, sizeof(where), "env %.*s", (int)(len > 120 ? 120 : len), name);
    const char *dym = config_did_you_mean(name, len, cands, n);
    if (dym != NULL) {
        config_diag_add(errs, true, where, "", "unknown variable, ignored (did you mean %s?)", dym);
    } else {
        config_diag_add(errs, true, where, "", "unknown variable, ignored");
    }
}

/*
 * DATALAYER_OTEL_AGENT_EXPORTER_<NAME>_<KEY>: the key is the longest exporter key whose
 * upper-cased form ends the variable name, the rest is the exporter's name, lower-cased.
 */
static int load_exporter_env(struct config *cfg, const char *entry, struct config_errors *errs)
{
    const char *eq = strchr(entry, '=');
    if (eq == NULL || eq[1] == 0) {
        return 0;
    }
    const char *rest = entry + strlen(CONFIG_EXPORTER_ENV_PREFIX);
    size_t rlen = (size_t)(eq - rest);
    char where[200];
    snprintf(where, sizeof(where), "env %.*s", (int)(eq - entry > 150 ? 150 : eq - entry), entry);
    int best = -1;
    size_t best_len = 0;
    for (size_t i = 0; i < config_exporter_table_len; i++) {
        char suf[64];
        config_env_suffix(config_exporter_table[i].path, suf, sizeof(suf));
        size_t sl = strlen(suf);
        if (rlen > sl + 1 && rest[rlen - sl - 1] == '_' && memcmp(rest + rlen - sl, suf, sl) == 0 &&
            sl > best_len) {
            best = (int)i;
            best_len = sl;
        }
    }
    if (best < 0) {
        config_diag_add(errs, true, where, "",
                        "unknown exporter variable, ignored (expected "
                        "DATALAYER_OTEL_AGENT_EXPORTER_<NAME>_<KEY>, e.g. ..._UP_ENDPOINT)");
        return 0;
    }
    size_t nlen = rlen - best_len - 1;
    char name[CONFIG_MAX_NAME + 1];
    if (nlen > CONFIG_MAX_NAME) {
        config_diag_add(errs, true, where, "", "ignored: exporter name longer than %d bytes",
                        CONFIG_MAX_NAME);
        return 0;
    }
    for (size_t i = 0; i < nlen; i++) {
        char c = rest[i];
        name[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    name[nlen] = 0;
    if (!config_name_valid(name, nlen)) {
        config_diag_add(errs, true, where, "",
                        "ignored: '%s' is not an exporter name (lowercase letters, digits, '_' "
                        "and '-', starting with a letter)",
                        name);
        return 0;
    }
    char path[CONFIG_MAX_NAME + 80];
    snprintf(path, sizeof(path), "exporters.%s.%s", name, config_exporter_table[best].path);
    return set_path(cfg, path, eq + 1, strlen(eq + 1), CONFIG_SOURCE_ENV, CONFIG_VIA_NONE, where,
                    errs);
}

int config_load_env(struct config *cfg, char **envp, struct config_errors *errs)
{
    if (cfg->finalized_) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    cfg->envp_ = envp;
    size_t before = errs->n_errors;
    int rv = 0;
    for (size_t i = 0; i < config_table_len && rv != DLOTEL_ERR_NOMEM; i++) {
        const struct config_option *opt = &config_table[i];
        const char *used = NULL;
        const char *used_val = NULL;
        for (size_t k = 0; k < 3 && opt->env[k] != NULL; k++) {
            const char *val = config_getenv(envp, opt->env[k]);
            if (val == NULL || val[0] == 0) {
                continue;
            }
            char where[128];
            snprintf(where, sizeof(where), "env %s", opt->env[k]);
            if (used == NULL) {
                used = opt->env[k];
                used_val = val;
                int r = set_field(cfg, opt, &cfg->source_[i], &cfg->via_[i], val, strlen(val),
                                  CONFIG_SOURCE_ENV, (uint8_t)k, opt->path, where, errs);
                if (r == DLOTEL_ERR_NOMEM) {
                    rv = r;
                }
            } else if (strcmp(val, used_val) != 0) {
                config_diag_add(errs, true, where, opt->path, "ignored: %s is set and wins", used);
            }
        }
        if (used == NULL && opt->env_true != NULL) {
            const char *val = config_getenv(envp, opt->env_true);
            if (val == NULL || val[0] == 0) {
                continue;
            }
            char where[128];
            snprintf(where, sizeof(where), "env %s", opt->env_true);
            static const struct config_option as_bool = {.path = "", .kind = CONFIG_KIND_BOOL};
            struct config_value v = {0};
            char why[256];
            int r = config_value_parse(&as_bool, val, strlen(val), &v, why, sizeof(why));
            bool on = v.b;
            config_value_cleanup(&v);
            if (r == DLOTEL_ERR_CONFIG) {
                config_diag_add(errs, false, where, opt->path, "%s", why);
            } else if (r != 0) {
                rv = r;
            } else if (on) {
                r = set_field(cfg, opt, &cfg->source_[i], &cfg->via_[i], opt->env_true_value,
                              strlen(opt->env_true_value), CONFIG_SOURCE_ENV, CONFIG_VIA_ENV_TRUE,
                              opt->path, where, errs);
                if (r == DLOTEL_ERR_NOMEM) {
                    rv = r;
                }
            }
        }
    }
    char **env = envp != NULL ? envp : environ;
    size_t plen = strlen(CONFIG_AGENT_ENV_PREFIX);
    size_t elen = strlen(CONFIG_EXPORTER_ENV_PREFIX);
    for (char **e = env; e != NULL && *e != NULL && rv != DLOTEL_ERR_NOMEM; e++) {
        if (strncmp(*e, CONFIG_AGENT_ENV_PREFIX, plen) != 0) {
            continue;
        }
        const char *eq = strchr(*e, '=');
        if (eq == NULL) {
            continue;
        }
        size_t nlen = (size_t)(eq - *e);
        if (env_known(*e, nlen)) {
            continue;
        }
        if (strncmp(*e, CONFIG_EXPORTER_ENV_PREFIX, elen) == 0) {
            int r = load_exporter_env(cfg, *e, errs);
            if (r == DLOTEL_ERR_NOMEM) {
                rv = r;
            }
            continue;
        }
        warn_unknown_env(*e, nlen, errs);
    }
    if (rv != 0) {
        return rv;
    }
    return errs->n_errors > before ? DLOTEL_ERR_CONFIG : 0;
}

/* ---- flags --------------------------------------------------------------------------------- */

static struct config_flag_info flag_infos[sizeof(((struct config *)0)->source_)];
static char flag_hints[sizeof(((struct config *)0)->source_)][96];
static size_t n_flag_infos;
static pthread_once_t flags_once = PTHREAD_ONCE_INIT;

static void flags_init(void)
{
    for (size_t i = 0; i < config_table_len; i++) {
        const struct config_option *opt = &config_table[i];
        if (opt->flag == NULL) {
            continue;
        }
        struct config_flag_info *f = &flag_infos[n_flag_infos];
        char *hint = flag_hints[n_flag_infos];
        n_flag_infos++;
        f->flag = opt->flag;
        f->path = opt->path;
        f->doc = opt->doc;
        f->is_bool = opt->kind == CONFIG_KIND_BOOL;
        f->value = hint;
        const char *h = "TEXT";
        switch (opt->kind) {
        case CONFIG_KIND_STRING:
            h = (opt->flags & CONFIG_OPT_ENDPOINT) ? "HOST:PORT"
                : (opt->flags & CONFIG_OPT_URL)    ? "URL"
                                                   : "TEXT";
            break;
        case CONFIG_KIND_PATH:
            h = "PATH";
            break;
        case CONFIG_KIND_BOOL:
            h = "true|false";
            break;
        case CONFIG_KIND_INT:
            h = "N";
            break;
        case CONFIG_KIND_SIZE:
            h = "SIZE";
            break;
        case CONFIG_KIND_DURATION:
            h = "DURATION";
            break;
        case CONFIG_KIND_LIST:
            h = "NAME,...";
            break;
        case CONFIG_KIND_MAP:
            h = "K=V,...";
            break;
        case CONFIG_KIND_PROCESSORS:
            h = "JSON";
            break;
        case CONFIG_KIND_ENUM: {
            size_t used = 0;
            hint[0] = 0;
            for (size_t k = 0; opt->choices[k] != NULL; k++) {
                int w = snprintf(hint + used, sizeof(flag_hints[0]) - used, "%s%s",
                                 k > 0 ? "|" : "", opt->choices[k]);
                if (w < 0 || (size_t)w >= sizeof(flag_hints[0]) - used) {
                    break;
                }
                used += (size_t)w;
            }
            continue;
        }
        default:
            break;
        }
        snprintf(hint, sizeof(flag_hints[0]), "%s", h);
    }
}

const struct config_flag_info *config_flags(size_t *n)
{
    pthread_once(&flags_once, flags_init);
    *n = n_flag_infos;
    return flag_infos;
}

const struct config_flag_info *config_flag_find(const char *flag)
{
    size_t n;
    const struct config_flag_info *fs = config_flags(&n);
    const char *name = flag;
    while (*name == '-') {
        name++;
    }
    size_t len = strcspn(name, "=");
    for (size_t i = 0; i < n; i++) {
        const char *fn = fs[i].flag + 2;
        if (strlen(fn) == len && memcmp(fn, name, len) == 0) {
            return &fs[i];
        }
    }
    return NULL;
}

/* ---- the one call path --------------------------------------------------------------------- */

int config_build(struct config **out, const char *file, char **envp,
                 const struct config_setting *flags, size_t n_flags, struct config_errors *errs)
{
    struct config *cfg;
    int rv = config_new(&cfg);
    if (rv != 0) {
        return rv;
    }
    size_t before = errs->n_errors;
    int hard = 0; /* The first error that is not just "invalid configuration". */
    /* The environment first: it is remembered for ${env:NAME} in the file. Precedence does not
     * depend on the order of the calls. */
    rv = config_load_env(cfg, envp, errs);
    if (rv == DLOTEL_ERR_NOMEM) {
        hard = rv;
        goto done;
    }
    const char *path = file;
    if (path == NULL) {
        path = config_getenv(envp, "DATALAYER_OTEL_CONFIG");
        if (path != NULL && path[0] == 0) {
            path = NULL;
        }
    }
    if (path != NULL) {
        rv = config_load_yaml_file(cfg, path, errs);
        if (rv != 0 && rv != DLOTEL_ERR_CONFIG) {
            hard = rv;
            if (rv == DLOTEL_ERR_NOMEM) {
                goto done;
            }
        }
    }
    for (size_t i = 0; i < n_flags; i++) {
        rv = config_set(cfg, flags[i].key, flags[i].value, CONFIG_SOURCE_FLAG, errs);
        if (rv == DLOTEL_ERR_NOMEM) {
            hard = rv;
            goto done;
        }
    }
    /* Finalize even after errors, so that one run reports every problem. */
    rv = config_finalize(cfg, errs);
    if (rv == DLOTEL_ERR_NOMEM) {
        hard = rv;
    }

done:
    if (hard != 0 || errs->n_errors > before) {
        config_free(cfg);
        return hard != 0 ? hard : DLOTEL_ERR_CONFIG;
    }
    *out = cfg;
    return 0;
}
