/*
 * The YAML file: libyaml loads the whole document into a node tree (yaml_parser_load), a
 * bounded pre-pass refuses documents that are too deep or expand too far through aliases, and
 * a walk matches each key against the option tables. No event state machine: the tables are
 * the schema.
 *
 * Aliases make the tree a graph (libyaml shares the anchored node, it does not copy it), and a
 * node can even contain an alias to itself. The pre-pass counts nodes as the walk would visit
 * them, aliases expanded, with a depth limit, so "billion laughs" documents and cycles are
 * refused after at most CONFIG_MAX_NODES steps, before anything is applied.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <yaml.h>

#include "config/config_int.h"
#include "dlotel.h"

struct ywalk {
    struct config *cfg;
    yaml_document_t *doc;
    const char *name;
    struct config_errors *errs;
    int rv; /* DLOTEL_ERR_NOMEM, once it happens; everything stops. */
};

static void where_of(const struct ywalk *w, const yaml_node_t *n, char *buf, size_t len)
{
    snprintf(buf, len, "%s:%zu:%zu", w->name, n->start_mark.line + 1, n->start_mark.column + 1);
}

static bool is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) {
        return false;
    }
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL"};
    for (size_t i = 0; i < sizeof(nulls) / sizeof(nulls[0]); i++) {
        if (n->data.scalar.length == strlen(nulls[i]) &&
            memcmp(n->data.scalar.value, nulls[i], n->data.scalar.length) == 0) {
            return true;
        }
    }
    return false;
}

static bool is_merge_key(const yaml_node_t *k)
{
    return k->type == YAML_SCALAR_NODE && k->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
           k->data.scalar.length == 2 && memcmp(k->data.scalar.value, "<<", 2) == 0;
}

/* ---- the pre-pass -------------------------------------------------------------------------- */

/* Returns NULL when the tree is within limits, else why not (and |*bad| is where). */
static const char *check_shape(yaml_document_t *doc, yaml_node_t *n, int depth, size_t *budget,
                               yaml_node_t **bad)
{
    *bad = n;
    if (n == NULL) {
        return "broken node reference";
    }
    if (*budget == 0) {
        return "the document has too many nodes once aliases are expanded (at most 10000)";
    }
    (*budget)--;
    if (depth > CONFIG_MAX_DEPTH) {
        return "nested too deep (at most 16 levels)";
    }
    if (n->type == YAML_SEQUENCE_NODE) {
        for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
             it++) {
            const char *why =
                check_shape(doc, yaml_document_get_node(doc, *it), depth + 1, budget, bad);
            if (why != NULL) {
                return why;
            }
        }
    } else if (n->type == YAML_MAPPING_NODE) {
        if (n->data.mapping.pairs.top - n->data.mapping.pairs.start > CONFIG_MAX_MAPPING_KEYS) {
            return "a mapping has more than 256 keys";
        }
        for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top;
             p++) {
            const char *why =
                check_shape(doc, yaml_document_get_node(doc, p->key), depth + 1, budget, bad);
            if (why == NULL) {
                why =
                    check_shape(doc, yaml_document_get_node(doc, p->value), depth + 1, budget, bad);
            }
            if (why != NULL) {
                return why;
            }
        }
    }
    return NULL;
}

/* ---- ${env:NAME} --------------------------------------------------------------------------- */

/*
 * Expands ${env:NAME} in a scalar from the config's environment; "$$" is a literal '$'. The
 * result is NUL-terminated in |out|. Returns 0, DLOTEL_ERR_CONFIG with |why|, or NOMEM.
 */
static int expand(const struct config *cfg, const char *s, size_t len, struct buf *out, char *why,
                  size_t why_len)
{
    int rv = 0;
    size_t i = 0;
    while (i < len && rv == 0) {
        if (s[i] != '$' || i + 1 >= len) {
            rv = buf_putc(out, (uint8_t)s[i++]);
            continue;
        }
        if (s[i + 1] == '$') {
            rv = buf_putc(out, '$');
            i += 2;
            continue;
        }
        if (s[i + 1] != '{') {
            rv = buf_putc(out, (uint8_t)s[i++]);
            continue;
        }
        const char *close = memchr(s + i, '}', len - i);
        size_t start = i + 2;
        if (close == NULL || len - start < 4 || memcmp(s + start, "env:", 4) != 0) {
            snprintf(why, why_len, "'${' must start ${env:NAME} (write $$ for a literal $)");
            return DLOTEL_ERR_CONFIG;
        }
        const char *name = s + start + 4;
        size_t nlen = (size_t)(close - name);
        bool ok = nlen > 0 && nlen <= 128;
        for (size_t k = 0; ok && k < nlen; k++) {
            char c = name[k];
            ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 c == '_';
        }
        if (!ok) {
            snprintf(why, why_len, "bad variable name in '${env:%.*s}'",
                     (int)(nlen > 64 ? 64 : nlen), name);
            return DLOTEL_ERR_CONFIG;
        }
        char var[130];
        memcpy(var, name, nlen);
        var[nlen] = 0;
        const char *val = config_getenv(cfg->envp_, var);
        if (val == NULL) {
            snprintf(why, why_len, "environment variable %s is not set", var);
            return DLOTEL_ERR_CONFIG;
        }
        rv = buf_append(out, val, strlen(val));
        i = (size_t)(close - s) + 1;
    }
    if (rv == 0) {
        rv = buf_terminate(out);
    }
    if (rv == DLOTEL_ERR_TOO_LARGE) {
        snprintf(why, why_len, "value is longer than %d bytes", CONFIG_MAX_STRING);
        return DLOTEL_ERR_CONFIG;
    }
    return rv;
}

/*
 * Gives the text of scalar |n| after ${env:} expansion in |out| (NUL-terminated, out->len
 * bytes). Reports problems at |path|. Returns 0, DLOTEL_ERR_CONFIG or DLOTEL_ERR_NOMEM.
 */
static int scalar_text(struct ywalk *w, yaml_node_t *n, const char *path, struct buf *out)
{
    char why[256];
    char where[300];
    buf_init(out, CONFIG_MAX_STRING + 1);
    int rv = expand(w->cfg, (const char *)n->data.scalar.value, n->data.scalar.length, out, why,
                    sizeof(why));
    if (rv == DLOTEL_ERR_CONFIG) {
        where_of(w, n, where, sizeof(where));
        config_diag_add(w->errs, false, where, path, "%s", why);
    }
    if (rv == 0 && out->data == NULL) {
        rv = buf_terminate(out);
    }
    if (rv != 0) {
        buf_cleanup(out);
    }
    return rv;
}

/* ---- walking ------------------------------------------------------------------------------- */

typedef void (*pair_fn)(struct ywalk *w, yaml_node_t *key, const char *k, size_t klen,
                        yaml_node_t *val, void *ctx);

static const char *kind_word(const yaml_node_t *n)
{
    return n->type == YAML_MAPPING_NODE    ? "a mapping"
           : n->type == YAML_SEQUENCE_NODE ? "a list"
                                           : "a value";
}

/*
 * Calls |fn| for each key of mapping |map|: first the keys merged in with "<<" (later merge
 * sources first, so that the earlier ones win, as YAML's merge key says), then the mapping's
 * own keys, which win over merged ones. Duplicate own keys are refused.
 */
static void each_pair(struct ywalk *w, yaml_node_t *map, const char *path, pair_fn fn, void *ctx)
{
    char where[300];
    yaml_node_pair_t *start = map->data.mapping.pairs.start;
    yaml_node_pair_t *top = map->data.mapping.pairs.top;
    for (yaml_node_pair_t *p = start; p < top && w->rv == 0; p++) {
        yaml_node_t *k = yaml_document_get_node(w->doc, p->key);
        if (!is_merge_key(k)) {
            continue;
        }
        yaml_node_t *v = yaml_document_get_node(w->doc, p->value);
        if (v->type == YAML_MAPPING_NODE) {
            each_pair(w, v, path, fn, ctx);
        } else if (v->type == YAML_SEQUENCE_NODE) {
            for (yaml_node_item_t *it = v->data.sequence.items.top;
                 it > v->data.sequence.items.start && w->rv == 0; it--) {
                yaml_node_t *m = yaml_document_get_node(w->doc, it[-1]);
                if (m->type != YAML_MAPPING_NODE) {
                    where_of(w, m, where, sizeof(where));
                    config_diag_add(w->errs, false, where, path, "'<<' merges mappings, not %s",
                                    kind_word(m));
                    continue;
                }
                each_pair(w, m, path, fn, ctx);
            }
        } else {
            where_of(w, v, where, sizeof(where));
            config_diag_add(w->errs, false, where, path, "'<<' merges mappings, not %s",
                            kind_word(v));
        }
    }
    for (yaml_node_pair_t *p = start; p < top && w->rv == 0; p++) {
        yaml_node_t *k = yaml_document_get_node(w->doc, p->key);
        if (is_merge_key(k)) {
            continue;
        }
        if (k->type != YAML_SCALAR_NODE) {
            where_of(w, k, where, sizeof(where));
            config_diag_add(w->errs, false, where, path, "keys must be plain strings, not %s",
                            kind_word(k));
            continue;
        }
        const char *ks = (const char *)k->data.scalar.value;
        size_t kl = k->data.scalar.length;
        char why[128];
        if (config_check_string(ks, kl, why, sizeof(why)) != 0 || kl > 128) {
            where_of(w, k, where, sizeof(where));
            config_diag_add(w->errs, false, where, path, "unusable key (%s)",
                            kl > 128 ? "longer than 128 bytes" : why);
            continue;
        }
        bool dup = false;
        for (yaml_node_pair_t *q = start; q < p && !dup; q++) {
            yaml_node_t *k2 = yaml_document_get_node(w->doc, q->key);
            dup = k2->type == YAML_SCALAR_NODE && k2->data.scalar.length == kl &&
                  memcmp(k2->data.scalar.value, ks, kl) == 0;
        }
        if (dup) {
            where_of(w, k, where, sizeof(where));
            config_diag_add(w->errs, false, where, path, "duplicate key '%.*s'", (int)kl, ks);
            continue;
        }
        fn(w, k, ks, kl, yaml_document_get_node(w->doc, p->value), ctx);
    }
}

/* What a mapping of table keys is being walked for. */
struct table_ctx {
    const struct config_option *table;
    size_t n;
    void *base;
    uint8_t *source;
    uint8_t *via;
    char rel[128];  /* Prefix inside the table: "", "retry.". */
    char path[256]; /* Prefix of full paths for messages: "", "exporters.up.". */
};

static void walk_table(struct ywalk *w, yaml_node_t *map, struct table_ctx *t);

/* Commits a parsed value, or reports why it is not one. */
static void commit(struct table_ctx *t, int idx, struct config_value *v)
{
    config_value_commit(t->base, &t->table[idx], v, CONFIG_SOURCE_FILE, CONFIG_VIA_NONE,
                        &t->source[idx], &t->via[idx]);
}

struct map_ctx {
    struct config_value *v;
    const char *path;
    bool failed;
};

static void map_pair(struct ywalk *w, yaml_node_t *key, const char *k, size_t klen,
                     yaml_node_t *val, void *ctx)
{
    struct map_ctx *m = ctx;
    char where[300];
    char sub[400];
    snprintf(sub, sizeof(sub), "%s.%.*s", m->path, (int)klen, k);
    if (val->type != YAML_SCALAR_NODE) {
        where_of(w, val, where, sizeof(where));
        config_diag_add(w->errs, false, where, sub, "expected a value, not %s", kind_word(val));
        m->failed = true;
        return;
    }
    struct buf text;
    int rv = scalar_text(w, val, sub, &text);
    if (rv != 0) {
        m->failed = true;
        w->rv = rv == DLOTEL_ERR_NOMEM ? rv : w->rv;
        return;
    }
    char why[128];
    if (config_check_string((const char *)text.data, text.len, why, sizeof(why)) != 0) {
        where_of(w, val, where, sizeof(where));
        config_diag_add(w->errs, false, where, sub, "%s", why);
        m->failed = true;
        buf_cleanup(&text);
        return;
    }
    rv = config_map_put(&m->v->map, k, klen, (const char *)text.data, text.len);
    if (rv == 1) {
        /* Merged in earlier ("<<"); the mapping's own key comes later and wins. */
        for (size_t i = 0; i < m->v->map.n; i++) {
            struct config_kv *kv = &m->v->map.items[i];
            if (strlen(kv->key) == klen && memcmp(kv->key, k, klen) == 0) {
                char *nv = strndup((const char *)text.data, text.len);
                if (nv == NULL) {
                    rv = DLOTEL_ERR_NOMEM;
                    break;
                }
                free(kv->value);
                kv->value = nv;
                rv = 0;
            }
        }
    }
    buf_cleanup(&text);
    if (rv == DLOTEL_ERR_TOO_LARGE) {
        where_of(w, key, where, sizeof(where));
        config_diag_add(w->errs, false, where, m->path, "more than %d entries", CONFIG_MAX_ITEMS);
        m->failed = true;
    } else if (rv == DLOTEL_ERR_NOMEM) {
        w->rv = rv;
        m->failed = true;
    }
}

/* ---- processors: a YAML subtree kept as JSON ----------------------------------------------- */

static json_t *yaml_to_json(struct ywalk *w, yaml_node_t *n, const char *path);

struct jmap_ctx {
    json_t *obj;
    const char *path;
    bool failed;
};

static void jmap_pair(struct ywalk *w, yaml_node_t *key, const char *k, size_t klen,
                      yaml_node_t *val, void *ctx)
{
    (void)key;
    struct jmap_ctx *m = ctx;
    json_t *v = yaml_to_json(w, val, m->path);
    char *ks = v != NULL ? strndup(k, klen) : NULL;
    if (v == NULL || ks == NULL || json_object_set_new(m->obj, ks, v) != 0) {
        m->failed = true;
        if (ks == NULL) {
            json_decref(v);
        }
    }
    free(ks);
}

/*
 * A plain scalar keeps the type YAML gives it (integer, float, boolean, null) so that `ratio:
 * 0.25` and `value: 42` reach the processors as numbers; quoted scalars are strings. ${env:NAME}
 * is expanded as in every other string. Depth is bounded by check_shape() already.
 */
static json_t *yaml_to_json(struct ywalk *w, yaml_node_t *n, const char *path)
{
    if (n->type == YAML_SEQUENCE_NODE) {
        json_t *a = json_array();
        for (yaml_node_item_t *it = n->data.sequence.items.start;
             a != NULL && it < n->data.sequence.items.top; it++) {
            json_t *v = yaml_to_json(w, yaml_document_get_node(w->doc, *it), path);
            if (v == NULL || json_array_append_new(a, v) != 0) {
                json_decref(a);
                a = NULL;
            }
        }
        return a;
    }
    if (n->type == YAML_MAPPING_NODE) {
        struct jmap_ctx m = {json_object(), path, false};
        if (m.obj != NULL) {
            each_pair(w, n, path, jmap_pair, &m);
        }
        if (m.failed || w->rv != 0) {
            json_decref(m.obj);
            return NULL;
        }
        return m.obj;
    }
    if (is_null(n)) {
        return json_null();
    }
    struct buf text;
    if (scalar_text(w, n, path, &text) != 0) {
        return NULL;
    }
    const char *s = (const char *)text.data;
    json_t *v = NULL;
    if (n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && text.len > 0) {
        char *end;
        errno = 0;
        long long i = strtoll(s, &end, 10);
        if (*end == 0 && errno == 0) {
            v = json_integer(i);
        } else {
            double d = strtod(s, &end);
            if (*end == 0 && errno == 0 && strspn(s, "+-0123456789.eE") == text.len) {
                v = json_real(d);
            } else if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0) {
                v = json_true();
            } else if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0) {
                v = json_false();
            }
        }
    }
    if (v == NULL) {
        v = json_stringn(s, text.len);
    }
    buf_cleanup(&text);
    return v;
}

/* Applies node |val| to option |idx| of |t|. */
static void apply_value(struct ywalk *w, struct table_ctx *t, int idx, yaml_node_t *val,
                        const char *path)
{
    const struct config_option *opt = &t->table[idx];
    char where[300];
    where_of(w, val, where, sizeof(where));
    struct config_value v = {0};
    if (opt->kind == CONFIG_KIND_PROCESSORS && val->type != YAML_SCALAR_NODE) {
        json_t *root = yaml_to_json(w, val, path);
        if (root == NULL) {
            if (w->rv == 0 && w->errs->n_errors == 0) {
                w->rv = DLOTEL_ERR_NOMEM;
            }
            return;
        }
        char why[256];
        int rv = config_processors_canon(root, &v, why, sizeof(why));
        json_decref(root);
        if (rv == DLOTEL_ERR_CONFIG) {
            config_diag_add(w->errs, false, where, path, "%s", why);
            return;
        }
        if (rv != 0) {
            w->rv = rv;
            return;
        }
        commit(t, idx, &v);
        return;
    }
    if (opt->kind == CONFIG_KIND_LIST && val->type == YAML_SEQUENCE_NODE) {
        for (yaml_node_item_t *it = val->data.sequence.items.start;
             it < val->data.sequence.items.top; it++) {
            yaml_node_t *item = yaml_document_get_node(w->doc, *it);
            if (item->type != YAML_SCALAR_NODE || is_null(item)) {
                where_of(w, item, where, sizeof(where));
                config_diag_add(w->errs, false, where, path, "list items must be names, not %s",
                                is_null(item) ? "null" : kind_word(item));
                goto fail;
            }
            struct buf text;
            int rv = scalar_text(w, item, path, &text);
            if (rv != 0) {
                w->rv = rv == DLOTEL_ERR_NOMEM ? rv : w->rv;
                goto fail;
            }
            char why[128];
            rv = config_check_string((const char *)text.data, text.len, why, sizeof(why));
            if (rv != 0) {
                config_diag_add(w->errs, false, where, path, "%s", why);
                buf_cleanup(&text);
                goto fail;
            }
            rv = config_list_push(&v.list, (const char *)text.data, text.len);
            buf_cleanup(&text);
            if (rv == DLOTEL_ERR_TOO_LARGE) {
                config_diag_add(w->errs, false, where, path, "more than %d items",
                                CONFIG_MAX_ITEMS);
                goto fail;
            }
            if (rv != 0) {
                w->rv = rv;
                goto fail;
            }
        }
        commit(t, idx, &v);
        return;
    }
    if (opt->kind == CONFIG_KIND_MAP && val->type == YAML_MAPPING_NODE) {
        struct map_ctx m = {.v = &v, .path = path};
        each_pair(w, val, path, map_pair, &m);
        if (m.failed) {
            goto fail;
        }
        commit(t, idx, &v);
        return;
    }
    if (val->type != YAML_SCALAR_NODE) {
        config_diag_add(w->errs, false, where, path, "expected %s, not %s",
                        opt->kind == CONFIG_KIND_LIST  ? "a list, e.g. [a, b]"
                        : opt->kind == CONFIG_KIND_MAP ? "a mapping of names to values"
                                                       : "a single value",
                        kind_word(val));
        return;
    }
    if (is_null(val)) {
        switch (opt->kind) {
        case CONFIG_KIND_STRING:
        case CONFIG_KIND_SECRET:
        case CONFIG_KIND_PATH:
        case CONFIG_KIND_LIST:
        case CONFIG_KIND_MAP:
        case CONFIG_KIND_PROCESSORS:
            /* Null unsets a string and empties a list or map. */
            commit(t, idx, &v);
            return;
        default:
            config_diag_add(w->errs, false, where, path, "needs a value");
            return;
        }
    }
    if (opt->kind == CONFIG_KIND_LIST || opt->kind == CONFIG_KIND_MAP) {
        config_diag_add(w->errs, false, where, path, "expected %s, not a single value",
                        opt->kind == CONFIG_KIND_LIST ? "a list, e.g. [a, b]"
                                                      : "a mapping of names to values");
        return;
    }
    struct buf text;
    int rv = scalar_text(w, val, path, &text);
    if (rv != 0) {
        w->rv = rv == DLOTEL_ERR_NOMEM ? rv : w->rv;
        return;
    }
    char why[512];
    rv = config_value_parse(opt, (const char *)text.data, text.len, &v, why, sizeof(why));
    buf_cleanup(&text);
    if (rv == DLOTEL_ERR_CONFIG) {
        config_diag_add(w->errs, false, where, path, "%s", why);
        goto fail;
    }
    if (rv != 0) {
        w->rv = rv;
        goto fail;
    }
    commit(t, idx, &v);
    return;

fail:
    config_value_cleanup(&v);
}

static void exporter_pair(struct ywalk *w, yaml_node_t *key, const char *k, size_t klen,
                          yaml_node_t *val, void *ctx)
{
    (void)ctx;
    char where[300];
    where_of(w, key, where, sizeof(where));
    int rv;
    struct config_exporter *e = config_exporter_get(w->cfg, k, klen, true, where, w->errs, &rv);
    if (e == NULL) {
        w->rv = rv == DLOTEL_ERR_NOMEM ? rv : w->rv;
        return;
    }
    struct table_ctx t = {.table = config_exporter_table,
                          .n = config_exporter_table_len,
                          .base = e,
                          .source = e->source_,
                          .via = e->via_};
    snprintf(t.path, sizeof(t.path), "exporters.%s", e->name);
    if (is_null(val)) {
        return; /* "debug:" alone declares the exporter; finalize asks for its type. */
    }
    if (val->type != YAML_MAPPING_NODE) {
        where_of(w, val, where, sizeof(where));
        config_diag_add(w->errs, false, where, t.path,
                        "an exporter is a mapping of its keys (type, endpoint...), not %s",
                        kind_word(val));
        return;
    }
    snprintf(t.path, sizeof(t.path), "exporters.%s.", e->name);
    walk_table(w, val, &t);
}

static void table_pair(struct ywalk *w, yaml_node_t *key, const char *k, size_t klen,
                       yaml_node_t *val, void *ctx)
{
    struct table_ctx *t = ctx;
    if (t->table == config_table && t->rel[0] == 0 && klen > 2 && memcmp(k, "x-", 2) == 0) {
        return; /* Top-level "x-" keys hold YAML anchors for reuse, as in Compose files. */
    }
    char rel[256];
    char path[512];
    snprintf(rel, sizeof(rel), "%s%.*s", t->rel, (int)klen, k);
    snprintf(path, sizeof(path), "%s%s", t->path, rel);
    size_t rl = strlen(rel);
    int idx = config_option_find(t->table, t->n, rel, rl);
    if (idx >= 0) {
        if (t->table[idx].kind == CONFIG_KIND_EXPORTERS) {
            if (is_null(val)) {
                return;
            }
            if (val->type != YAML_MAPPING_NODE) {
                char where[300];
                where_of(w, val, where, sizeof(where));
                config_diag_add(w->errs, false, where, path,
                                "expected a mapping of exporter names, not %s", kind_word(val));
                return;
            }
            each_pair(w, val, path, exporter_pair, NULL);
            return;
        }
        apply_value(w, t, idx, val, path);
        return;
    }
    /* A prefix of some keys ("retry" of "retry.enabled"): descend. */
    bool prefix = false;
    for (size_t i = 0; i < t->n && !prefix; i++) {
        prefix = strncmp(t->table[i].path, rel, rl) == 0 && t->table[i].path[rl] == '.';
    }
    if (prefix && rl + 2 < sizeof(t->rel)) {
        if (is_null(val)) {
            return;
        }
        if (val->type != YAML_MAPPING_NODE) {
            char where[300];
            where_of(w, val, where, sizeof(where));
            config_diag_add(w->errs, false, where, path, "expected a mapping, not %s",
                            kind_word(val));
            return;
        }
        struct table_ctx sub = *t;
        /* rl + 2 < sizeof(sub.rel) was checked above: the key, its dot and the NUL fit. */
        memcpy(sub.rel, rel, rl);
        sub.rel[rl] = '.';
        sub.rel[rl + 1] = '\0';
        walk_table(w, val, &sub);
        return;
    }
    /* Unknown: suggest the closest key at this level. */
    char segs[64][64];
    const char *cands[64];
    size_t n = 0;
    size_t pl = strlen(t->rel);
    for (size_t i = 0; i < t->n && n < 64; i++) {
        const char *p = t->table[i].path;
        if (strncmp(p, t->rel, pl) != 0) {
            continue;
        }
        size_t sl = strcspn(p + pl, ".");
        if (sl >= sizeof(segs[0])) {
            continue;
        }
        memcpy(segs[n], p + pl, sl);
        segs[n][sl] = 0;
        bool seen = false;
        for (size_t j = 0; j < n && !seen; j++) {
            seen = strcmp(segs[j], segs[n]) == 0;
        }
        if (!seen) {
            cands[n] = segs[n];
            n++;
        }
    }
    char where[300];
    where_of(w, key, where, sizeof(where));
    const char *dym = config_did_you_mean(k, klen, cands, n);
    if (dym != NULL) {
        config_diag_add(w->errs, false, where, path, "unknown key (did you mean '%s'?)", dym);
    } else {
        config_diag_add(w->errs, false, where, path, "unknown key");
    }
}

static void walk_table(struct ywalk *w, yaml_node_t *map, struct table_ctx *t)
{
    char path[300];
    snprintf(path, sizeof(path), "%s%.*s", t->path,
             (int)(strlen(t->rel) > 0 ? strlen(t->rel) - 1 : 0), t->rel);
    size_t pl = strlen(path);
    if (pl > 0 && path[pl - 1] == '.') {
        path[pl - 1] = 0;
    }
    each_pair(w, map, path, table_pair, t);
}

/* ---- entry points -------------------------------------------------------------------------- */

static void parse_problem(const yaml_parser_t *p, const char *name, struct config_errors *errs)
{
    char where[300];
    if (p->error == YAML_READER_ERROR) {
        snprintf(where, sizeof(where), "%s: byte %zu", name, p->problem_offset);
        config_diag_add(errs, false, where, "", "not valid UTF-8 text (%s)",
                        p->problem != NULL ? p->problem : "unreadable");
        return;
    }
    if (p->error == YAML_MEMORY_ERROR) {
        config_diag_add(errs, false, name, "", "out of memory while parsing");
        return;
    }
    snprintf(where, sizeof(where), "%s:%zu:%zu", name, p->problem_mark.line + 1,
             p->problem_mark.column + 1);
    if (p->context != NULL) {
        config_diag_add(errs, false, where, "", "not valid YAML: %s %s",
                        p->problem != NULL ? p->problem : "error", p->context);
    } else {
        config_diag_add(errs, false, where, "", "not valid YAML: %s",
                        p->problem != NULL ? p->problem : "error");
    }
}

int config_load_yaml_string(struct config *cfg, const char *data, size_t len, const char *name,
                            struct config_errors *errs)
{
    if (cfg->finalized_) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    if (name == NULL) {
        name = "<config>";
    }
    if (len > CONFIG_MAX_FILE_BYTES) {
        config_diag_add(errs, false, name, "", "larger than %u bytes", CONFIG_MAX_FILE_BYTES);
        return DLOTEL_ERR_TOO_LARGE;
    }
    /*
     * libyaml's scanner re-checks every open flow level at each token, so time grows with the
     * square of the nesting: 100000 '[' take minutes. Count brackets first, naively (quotes
     * and comments included, which can only over-count), and refuse far beyond any real file.
     */
    size_t open_brackets = 0;
    for (size_t i = 0; i < len; i++) {
        if (data[i] == '[' || data[i] == '{') {
            if (++open_brackets > 4 * CONFIG_MAX_DEPTH) {
                config_diag_add(errs, false, name, "",
                                "nested too deep (more than %d '[' and '{' open at once)",
                                4 * CONFIG_MAX_DEPTH);
                return DLOTEL_ERR_CONFIG;
            }
        } else if ((data[i] == ']' || data[i] == '}') && open_brackets > 0) {
            open_brackets--;
        }
    }
    size_t before = errs->n_errors;
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) {
        return DLOTEL_ERR_NOMEM;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)data, len);
    /* UTF-8 only: libyaml would otherwise accept UTF-16 with a byte order mark. */
    yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING);
    yaml_document_t doc;
    int rv = 0;
    if (!yaml_parser_load(&parser, &doc)) {
        parse_problem(&parser, name, errs);
        rv = parser.error == YAML_MEMORY_ERROR ? DLOTEL_ERR_NOMEM : DLOTEL_ERR_CONFIG;
        goto fail_load;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root != NULL) {
        yaml_document_t next;
        if (!yaml_parser_load(&parser, &next)) {
            parse_problem(&parser, name, errs);
            rv = DLOTEL_ERR_CONFIG;
            goto fail_doc;
        }
        yaml_node_t *nroot = yaml_document_get_root_node(&next);
        if (nroot != NULL) {
            char where[300];
            snprintf(where, sizeof(where), "%s:%zu", name, nroot->start_mark.line + 1);
            config_diag_add(errs, false, where, "", "more than one YAML document");
            rv = DLOTEL_ERR_CONFIG;
        }
        yaml_document_delete(&next);
        if (rv != 0) {
            goto fail_doc;
        }
    }
    if (root == NULL || is_null(root)) {
        goto done; /* An empty file: the defaults stand. */
    }
    struct ywalk w = {.cfg = cfg, .doc = &doc, .name = name, .errs = errs};
    size_t budget = CONFIG_MAX_NODES;
    yaml_node_t *bad;
    const char *why = check_shape(&doc, root, 1, &budget, &bad);
    if (why != NULL) {
        char where[300];
        if (bad != NULL) {
            where_of(&w, bad, where, sizeof(where));
        } else {
            snprintf(where, sizeof(where), "%s", name);
        }
        config_diag_add(errs, false, where, "", "%s", why);
        rv = DLOTEL_ERR_CONFIG;
        goto fail_doc;
    }
    if (root->type != YAML_MAPPING_NODE) {
        char where[300];
        where_of(&w, root, where, sizeof(where));
        config_diag_add(errs, false, where, "", "the top level must be a mapping of keys, not %s",
                        kind_word(root));
        rv = DLOTEL_ERR_CONFIG;
        goto fail_doc;
    }
    struct table_ctx t = {.table = config_table,
                          .n = config_table_len,
                          .base = cfg,
                          .source = cfg->source_,
                          .via = cfg->via_};
    walk_table(&w, root, &t);
    rv = w.rv;

done:
fail_doc:
    yaml_document_delete(&doc);
fail_load:
    yaml_parser_delete(&parser);
    if (rv == 0 && errs->n_errors > before) {
        rv = DLOTEL_ERR_CONFIG;
    }
    return rv;
}

int config_load_yaml_file(struct config *cfg, const char *path, struct config_errors *errs)
{
    if (cfg->finalized_) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        config_diag_add(errs, false, path, "", "cannot open: %s", strerror(errno));
        return DLOTEL_ERR_IO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        config_diag_add(errs, false, path, "", "not a regular file");
        close(fd);
        return DLOTEL_ERR_IO;
    }
    /* One byte more than the limit tells "at the limit" from "past it". */
    size_t cap = CONFIG_MAX_FILE_BYTES + 1;
    char *data = malloc(cap);
    if (data == NULL) {
        close(fd);
        return DLOTEL_ERR_NOMEM;
    }
    size_t len = 0;
    while (len < cap) {
        ssize_t n = read(fd, data + len, cap - len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            config_diag_add(errs, false, path, "", "cannot read: %s", strerror(errno));
            free(data);
            close(fd);
            return DLOTEL_ERR_IO;
        }
        if (n == 0) {
            break;
        }
        len += (size_t)n;
    }
    close(fd);
    int rv = config_load_yaml_string(cfg, data, len, path, errs);
    free(data);
    return rv;
}
