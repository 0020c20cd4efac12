/*
 * config_finalize(): resolution (paths, the default exporters, defaults that depend on an
 * exporter's type, routing) and then validation of the whole configuration. Every problem is
 * reported, each with its key, so that one run of `dlotel config --print` shows them all.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "config/config_int.h"
#include "dlotel.h"

/* ---- addresses ----------------------------------------------------------------------------- */

struct hostport {
    char host[256]; /* Without brackets for IPv6. */
    unsigned port;
};

static bool host_valid(const char *h, size_t len, bool bracketed)
{
    if (len == 0 || len >= sizeof(((struct hostport *)0)->host)) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        char c = h[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '-' || c == '_' || (bracketed && (c == ':' || c == '%'));
        if (!ok) {
            return false;
        }
    }
    return true;
}

/* Parses "host" or "[v6]" at |s| (|len| bytes) into |hp->host|. */
static bool parse_host(const char *s, size_t len, struct hostport *hp, size_t *used)
{
    if (len > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (close == NULL || !host_valid(s + 1, (size_t)(close - s - 1), true)) {
            return false;
        }
        size_t hl = (size_t)(close - s - 1);
        memcpy(hp->host, s + 1, hl);
        hp->host[hl] = 0;
        *used = hl + 2;
        return true;
    }
    size_t hl = 0;
    while (hl < len && s[hl] != ':' && s[hl] != '/' && s[hl] != '?' && s[hl] != '#') {
        hl++;
    }
    if (!host_valid(s, hl, false)) {
        return false;
    }
    memcpy(hp->host, s, hl);
    hp->host[hl] = 0;
    *used = hl;
    return true;
}

static bool parse_port(const char *s, size_t len, unsigned *port)
{
    if (len == 0 || len > 5) {
        return false;
    }
    unsigned v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > 65535) {
        return false;
    }
    *port = v;
    return true;
}

/* "host:port" or "[v6]:port". */
static bool parse_hostport(const char *s, struct hostport *hp)
{
    size_t len = strlen(s);
    size_t used;
    if (!parse_host(s, len, hp, &used) || used >= len || s[used] != ':') {
        return false;
    }
    return parse_port(s + used + 1, len - used - 1, &hp->port);
}

struct url {
    bool https;
    struct hostport hp;
    const char *path; /* "" or starting with '/'. */
};

/* Returns NULL when |s| is an http(s) URL without credentials, query or fragment. */
static const char *parse_url(const char *s, struct url *u)
{
    const char *p;
    if (strncasecmp(s, "http://", 7) == 0) {
        u->https = false;
        p = s + 7;
    } else if (strncasecmp(s, "https://", 8) == 0) {
        u->https = true;
        p = s + 8;
    } else {
        return "is not an http:// or https:// URL";
    }
    size_t alen = strcspn(p, "/?#");
    if (memchr(p, '@', alen) != NULL) {
        return "has credentials in it; put them in headers instead";
    }
    size_t used;
    if (!parse_host(p, alen, &u->hp, &used)) {
        return "has no valid host";
    }
    u->hp.port = u->https ? 443 : 80;
    if (used < alen) {
        if (p[used] != ':' || !parse_port(p + used + 1, alen - used - 1, &u->hp.port) ||
            u->hp.port == 0) {
            return "has a bad port";
        }
    }
    u->path = p + alen;
    if (strpbrk(u->path, "?# ") != NULL) {
        return "may not have a query, a fragment or spaces";
    }
    return NULL;
}

static bool host_loopback(const char *h)
{
    return strcasecmp(h, "localhost") == 0 || strcasecmp(h, "ip6-localhost") == 0 ||
           strcmp(h, "::1") == 0 || strncmp(h, "127.", 4) == 0;
}

static bool host_wildcard(const char *h)
{
    return strcmp(h, "0.0.0.0") == 0 || strcmp(h, "::") == 0;
}

/* Whether connecting to |dst| reaches something listening on |listen|. */
static bool same_address(const struct hostport *dst, const struct hostport *listen)
{
    if (listen->port == 0 || dst->port != listen->port) {
        return false; /* Port 0 picks a free port: it can be no configured port. */
    }
    if (strcasecmp(dst->host, listen->host) == 0) {
        return true;
    }
    if (host_loopback(dst->host) && host_loopback(listen->host)) {
        return true;
    }
    if (host_wildcard(listen->host)) {
        if (host_loopback(dst->host) || host_wildcard(dst->host)) {
            return true;
        }
        char self[256];
        if (gethostname(self, sizeof(self)) == 0) {
            self[sizeof(self) - 1] = 0;
            return strcasecmp(dst->host, self) == 0;
        }
    }
    return false;
}

/* ---- helpers ------------------------------------------------------------------------------- */

static const char *type_name(int t)
{
    static const char *const names[] = {"otlp_http", "otlp_grpc", "debug", "file", "sink"};
    return t >= 0 && t < 5 ? names[t] : "unset";
}

static int global_index(const char *path)
{
    return config_option_find(config_table, config_table_len, path, strlen(path));
}

static int exporter_index(const char *path)
{
    return config_option_find(config_exporter_table, config_exporter_table_len, path, strlen(path));
}

/* Replaces the string |*field| with a copy of |a| followed by |b| (may be NULL). */
static int set_string(char **field, const char *a, const char *b)
{
    size_t la = strlen(a), lb = b != NULL ? strlen(b) : 0;
    char *s = malloc(la + lb + 1);
    if (s == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    memcpy(s, a, la);
    if (lb > 0) {
        memcpy(s + la, b, lb);
    }
    s[la + lb] = 0;
    free(*field);
    *field = s;
    return 0;
}

/* Expands ~/ and makes |*field| absolute. Returns 0, DLOTEL_ERR_CONFIG or DLOTEL_ERR_NOMEM. */
static int expand_path(const struct config *cfg, char **field, const char *path,
                       struct config_errors *errs)
{
    const char *v = *field;
    if (v == NULL) {
        return 0;
    }
    char *res = NULL;
    if (v[0] == '~') {
        if (v[1] != 0 && v[1] != '/') {
            config_diag_add(errs, false, "", path, "only ~/ is expanded, not '%.80s'", v);
            return DLOTEL_ERR_CONFIG;
        }
        const char *home = config_getenv(cfg->envp_, "HOME");
        if (home == NULL || home[0] != '/') {
            config_diag_add(errs, false, "", path,
                            "cannot expand '~': HOME is not set to an absolute path");
            return DLOTEL_ERR_CONFIG;
        }
        if (set_string(&res, home, v + 1) != 0) {
            return DLOTEL_ERR_NOMEM;
        }
    } else if (v[0] != '/') {
        /* The daemon may run from another directory: pin relative paths to ours. */
        char cwd[4096];
        if (getcwd(cwd, sizeof(cwd)) == NULL) {
            config_diag_add(errs, false, "", path, "cannot make '%.80s' absolute: %s", v,
                            strerror(errno));
            return DLOTEL_ERR_CONFIG;
        }
        size_t cl = strlen(cwd);
        if (cl + 1 < sizeof(cwd)) {
            cwd[cl] = '/';
            cwd[cl + 1] = 0;
        }
        if (set_string(&res, cwd, v) != 0) {
            return DLOTEL_ERR_NOMEM;
        }
    } else {
        return 0;
    }
    /* "/a/b/" and "/a/b" are the same directory; keep one spelling so that hashes agree. */
    size_t rl = strlen(res);
    while (rl > 1 && res[rl - 1] == '/') {
        res[--rl] = 0;
    }
    if (rl > CONFIG_MAX_STRING) {
        free(res);
        config_diag_add(errs, false, "", path, "path is longer than %d bytes", CONFIG_MAX_STRING);
        return DLOTEL_ERR_CONFIG;
    }
    free(*field);
    *field = res;
    return 0;
}

static int expand_table_paths(const struct config *cfg, void *base,
                              const struct config_option *table, size_t n, const char *prefix,
                              struct config_errors *errs)
{
    for (size_t i = 0; i < n; i++) {
        if (table[i].kind != CONFIG_KIND_PATH) {
            continue;
        }
        char path[256];
        snprintf(path, sizeof(path), "%s%s", prefix, table[i].path);
        int rv = expand_path(cfg, (char **)(void *)((char *)base + table[i].offset), path, errs);
        if (rv == DLOTEL_ERR_NOMEM) {
            return rv;
        }
    }
    return 0;
}

/* $XDG_*_HOME/dlotel replaces a default directory when the variable is an absolute path. */
static int apply_xdg(struct config *cfg, const char *opt_path, const char *var)
{
    int idx = global_index(opt_path);
    if (cfg->source_[idx] != CONFIG_SOURCE_DEFAULT) {
        return 0;
    }
    const char *xdg = config_getenv(cfg->envp_, var);
    if (xdg == NULL || xdg[0] != '/') {
        return 0;
    }
    return set_string((char **)(void *)((char *)cfg + config_table[idx].offset), xdg, "/dlotel");
}

/* ---- the default exporters ----------------------------------------------------------------- */

static struct config_exporter *add_exporter(struct config *cfg, const char *name, int type,
                                            uint8_t src, const char *origin,
                                            struct config_errors *errs, int *rv)
{
    struct config_exporter *e = config_exporter_get(cfg, name, strlen(name), true, "", errs, rv);
    if (e == NULL) {
        return NULL;
    }
    e->type = (enum config_exporter_type)type;
    e->source_[exporter_index("type")] = src;
    e->origin_ = origin;
    return e;
}

static int synthesize(struct config *cfg, struct config_errors *errs)
{
    int rv = 0;
    bool have_sink = false;
    for (size_t i = 0; i < cfg->n_exporters; i++) {
        have_sink = have_sink || cfg->exporters[i].type == CONFIG_EXPORTER_SINK;
    }
    if (cfg->n_exporters == 0) {
        const char *base = NULL;
        const char *suffix = NULL;
        const char *origin = NULL;
        uint8_t src = CONFIG_SOURCE_DEFAULT;
        if (cfg->upstream.otlp_url != NULL) {
            base = cfg->upstream.otlp_url;
            origin = "made from upstream.otlp_url";
            src = cfg->source_[global_index("upstream.otlp_url")];
        } else if (cfg->upstream.run_url != NULL) {
            base = cfg->upstream.run_url;
            suffix = CONFIG_RUN_URL_OTLP_PATH;
            origin = "made from upstream.run_url + " CONFIG_RUN_URL_OTLP_PATH;
            src = cfg->source_[global_index("upstream.run_url")];
        }
        if (base != NULL) {
            struct config_exporter *e =
                add_exporter(cfg, "datalayer", CONFIG_EXPORTER_OTLP_HTTP, src, origin, errs, &rv);
            if (e == NULL) {
                return rv;
            }
            /* "https://x.io/" + "/api/..." must not give "//api". */
            size_t bl = strlen(base);
            while (bl > 0 && base[bl - 1] == '/') {
                bl--;
            }
            char *b = strndup(base, bl);
            if (b == NULL) {
                return DLOTEL_ERR_NOMEM;
            }
            rv = set_string(&e->endpoint, b, suffix);
            free(b);
            if (rv != 0) {
                return rv;
            }
            e->source_[exporter_index("endpoint")] = src;
            if (cfg->upstream.api_key != NULL) {
                size_t kl = strlen(cfg->upstream.api_key);
                char *hv = malloc(kl + 8);
                if (hv == NULL) {
                    return DLOTEL_ERR_NOMEM;
                }
                memcpy(hv, "Bearer ", 7);
                memcpy(hv + 7, cfg->upstream.api_key, kl + 1);
                rv = config_map_put(&e->headers, "Authorization", 13, hv, kl + 7);
                memset(hv, 0, kl + 7);
                free(hv);
                if (rv < 0) {
                    return rv;
                }
                e->source_[exporter_index("headers")] =
                    cfg->source_[global_index("upstream.api_key")];
            } else if (suffix != NULL) {
                config_diag_add(errs, true, "", "upstream.api_key",
                                "not set (DATALAYER_API_KEY): the Datalayer platform refuses "
                                "requests without it");
            }
        }
        if (cfg->sink.enabled) {
            if (add_exporter(cfg, "sink", CONFIG_EXPORTER_SINK,
                             cfg->source_[global_index("sink.enabled")], "made from sink.enabled",
                             errs, &rv) == NULL) {
                return rv;
            }
        }
        if (cfg->n_exporters == 0 && cfg->enabled) {
            config_diag_add(errs, false, "", "exporters",
                            CONFIG_NO_DESTINATION_MESSAGE
                            ": set DATALAYER_RUN_URL and "
                            "DATALAYER_API_KEY (the Datalayer platform), or DATALAYER_OTLP_URL "
                            "(any OTLP/HTTP endpoint), or DATALAYER_OTEL_AGENT_SINK=true (store "
                            "it locally), or configure exporters in the config file");
        }
        return 0;
    }
    if (cfg->sink.enabled && !have_sink) {
        if (config_exporter_find(cfg, "sink") != NULL) {
            config_diag_add(errs, false, "", "exporters.sink",
                            "sink.enabled needs an exporter of type sink, and the name 'sink' "
                            "is taken: add one under another name");
            return 0;
        }
        if (add_exporter(cfg, "sink", CONFIG_EXPORTER_SINK,
                         cfg->source_[global_index("sink.enabled")], "made from sink.enabled", errs,
                         &rv) == NULL) {
            return rv;
        }
    }
    return 0;
}

/* ---- validation ---------------------------------------------------------------------------- */

static bool header_name_valid(const char *s)
{
    if (*s == 0) {
        return false;
    }
    for (; *s != 0; s++) {
        char c = *s;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  strchr("!#$%&'*+-.^_`|~", c) != NULL;
        if (!ok) {
            return false;
        }
    }
    return true;
}

struct listen_addr {
    const char *path;
    struct hostport hp;
};

static void check_file_readable(const char *file, const char *path, struct config_errors *errs)
{
    if (file != NULL && access(file, R_OK) != 0) {
        config_diag_add(errs, false, "", path, "cannot read '%.200s': %s", file, strerror(errno));
    }
}

static void check_exporter(struct config *cfg, struct config_exporter *e,
                           const struct listen_addr *own, size_t n_own, struct config_errors *errs)
{
    char path[256];
#define EPATH(key) (snprintf(path, sizeof(path), "exporters.%s.%s", e->name, (key)), path)
    if (e->type == CONFIG_EXPORTER_UNSET) {
        config_diag_add(errs, false, "", EPATH("type"),
                        "required (otlp_http, otlp_grpc, debug, file or sink)");
        return;
    }
    unsigned bit = 1u << e->type;
    for (size_t i = 0; i < config_exporter_table_len; i++) {
        const struct config_option *opt = &config_exporter_table[i];
        if (opt->types == 0 || (opt->types & bit) != 0 || e->source_[i] == CONFIG_SOURCE_DEFAULT) {
            continue;
        }
        char types[96] = "";
        size_t used = 0;
        for (int t = 0; t < 5; t++) {
            if (opt->types & (1u << t)) {
                int wr = snprintf(types + used, sizeof(types) - used, "%s%s", used ? ", " : "",
                                  type_name(t));
                if (wr > 0 && (size_t)wr < sizeof(types) - used) {
                    used += (size_t)wr;
                }
            }
        }
        config_diag_add(errs, false, "", EPATH(opt->path),
                        "only used by type %s; this exporter is %s", types, type_name(e->type));
    }
    if (e->memory_queue_max_bytes > cfg->queue.memory_max_bytes) {
        config_diag_add(errs, false, "", EPATH("memory_queue_max_bytes"),
                        "larger than queue.memory_max_bytes, the memory all queues share");
    }
    switch (e->type) {
    case CONFIG_EXPORTER_OTLP_HTTP:
    case CONFIG_EXPORTER_OTLP_GRPC: {
        if (e->endpoint == NULL) {
            config_diag_add(errs, false, "", EPATH("endpoint"),
                            "required for type %s (e.g. https://collector.example:%s)",
                            type_name(e->type),
                            e->type == CONFIG_EXPORTER_OTLP_HTTP ? "4318" : "4317");
        } else {
            struct url u;
            const char *why = parse_url(e->endpoint, &u);
            if (why != NULL) {
                config_diag_add(errs, false, "", EPATH("endpoint"), "'%.200s' %s", e->endpoint,
                                why);
            } else {
                if (e->type == CONFIG_EXPORTER_OTLP_GRPC && u.path[0] != 0 &&
                    strcmp(u.path, "/") != 0) {
                    config_diag_add(errs, false, "", EPATH("endpoint"),
                                    "'%.200s': an otlp_grpc endpoint has no path", e->endpoint);
                }
                for (size_t i = 0; i < n_own; i++) {
                    if (same_address(&u.hp, &own[i].hp)) {
                        config_diag_add(errs, false, "", EPATH("endpoint"),
                                        "'%.200s' is the agent's own %s: it would send telemetry "
                                        "to itself",
                                        e->endpoint, own[i].path);
                        break;
                    }
                }
                /* A base URL: the exporter appends /v1/traces; drop a trailing slash. */
                size_t el = strlen(e->endpoint);
                while (el > 0 && e->endpoint[el - 1] == '/' && u.path[0] != 0) {
                    e->endpoint[--el] = 0;
                }
            }
        }
        for (size_t i = 0; i < e->headers.n; i++) {
            const char *k = e->headers.items[i].key;
            char hp[400];
            snprintf(hp, sizeof(hp), "exporters.%s.headers.%.100s", e->name, k);
            if (!header_name_valid(k)) {
                config_diag_add(errs, false, "", hp, "not a valid HTTP header name");
            } else if (strcasecmp(k, "content-type") == 0 ||
                       strcasecmp(k, "content-encoding") == 0 ||
                       strcasecmp(k, "content-length") == 0 ||
                       strcasecmp(k, "transfer-encoding") == 0 || strcasecmp(k, "host") == 0 ||
                       strcasecmp(k, "te") == 0 || strcasecmp(k, "connection") == 0) {
                config_diag_add(errs, false, "", hp, "set by the exporter itself");
            }
        }
        if (e->retry.initial_interval_ns > e->retry.max_interval_ns) {
            config_diag_add(errs, false, "", EPATH("retry.initial_interval"),
                            "longer than retry.max_interval");
        }
        if ((e->tls.cert_file == NULL) != (e->tls.key_file == NULL)) {
            config_diag_add(errs, false, "",
                            EPATH(e->tls.cert_file == NULL ? "tls.cert_file" : "tls.key_file"),
                            "tls.cert_file and tls.key_file go together");
        }
        check_file_readable(e->tls.ca_file, EPATH("tls.ca_file"), errs);
        check_file_readable(e->tls.cert_file, EPATH("tls.cert_file"), errs);
        check_file_readable(e->tls.key_file, EPATH("tls.key_file"), errs);
        break;
    }
    case CONFIG_EXPORTER_FILE:
        if (e->path == NULL) {
            config_diag_add(errs, false, "", EPATH("path"), "required for type file");
        }
        break;
    case CONFIG_EXPORTER_SINK:
        if (!cfg->sink.enabled) {
            config_diag_add(errs, false, "", EPATH("type"),
                            "a sink exporter needs sink.enabled: true");
        }
        break;
    default:
        break;
    }
#undef EPATH
}

static void check_routing(struct config *cfg, const char *key, const struct config_list *l,
                          struct config_errors *errs)
{
    for (size_t i = 0; i < l->n; i++) {
        const char *name = l->items[i];
        bool dup = false;
        for (size_t j = 0; j < i && !dup; j++) {
            dup = strcmp(l->items[j], name) == 0;
        }
        if (dup) {
            config_diag_add(errs, false, "", key, "'%.80s' is listed twice", name);
            continue;
        }
        if (config_exporter_find(cfg, name) != NULL) {
            continue;
        }
        const char *cands[CONFIG_MAX_EXPORTERS];
        for (size_t j = 0; j < cfg->n_exporters; j++) {
            cands[j] = cfg->exporters[j].name;
        }
        const char *dym = config_did_you_mean(name, strlen(name), cands, cfg->n_exporters);
        if (dym != NULL) {
            config_diag_add(errs, false, "", key, "no exporter named '%.80s' (did you mean '%s'?)",
                            name, dym);
        } else {
            config_diag_add(errs, false, "", key, "no exporter named '%.80s'", name);
        }
    }
}

static void check_global(struct config *cfg, struct listen_addr *own, size_t *n_own,
                         struct config_errors *errs)
{
    for (size_t i = 0; i < config_table_len; i++) {
        const struct config_option *opt = &config_table[i];
        const char *v = NULL;
        if (opt->kind == CONFIG_KIND_STRING || opt->kind == CONFIG_KIND_PATH ||
            opt->kind == CONFIG_KIND_SECRET) {
            v = *(char **)(void *)((char *)cfg + opt->offset);
        }
        if ((opt->flags & CONFIG_OPT_REQUIRED) && v == NULL) {
            config_diag_add(errs, false, "", opt->path, "needs a value");
            continue;
        }
        if (v == NULL) {
            continue;
        }
        if (opt->flags & CONFIG_OPT_ENDPOINT) {
            struct hostport hp;
            if (!parse_hostport(v, &hp)) {
                config_diag_add(errs, false, "", opt->path,
                                "'%.200s' is not host:port (e.g. localhost:4317, [::1]:4317)", v);
                continue;
            }
            for (size_t k = 0; k < *n_own; k++) {
                if (hp.port != 0 && hp.port == own[k].hp.port &&
                    (strcasecmp(hp.host, own[k].hp.host) == 0 || host_wildcard(hp.host) ||
                     host_wildcard(own[k].hp.host) ||
                     (host_loopback(hp.host) && host_loopback(own[k].hp.host)))) {
                    config_diag_add(errs, false, "", opt->path, "same address as %s", own[k].path);
                }
            }
            own[*n_own].path = opt->path;
            own[*n_own].hp = hp;
            (*n_own)++;
        }
        if (opt->flags & CONFIG_OPT_URL) {
            struct url u;
            const char *why = parse_url(v, &u);
            if (why != NULL) {
                config_diag_add(errs, false, "", opt->path, "'%.200s' %s", v, why);
            }
        }
    }
    if (cfg->batch.max_bytes > cfg->queue.memory_max_bytes) {
        config_diag_add(errs, false, "", "batch.max_bytes",
                        "larger than queue.memory_max_bytes: no batch could be queued");
    }
    if (cfg->sink.enabled && cfg->api.host != NULL) {
        struct hostport api = {.port = (unsigned)cfg->api.port};
        snprintf(api.host, sizeof(api.host), "%s", cfg->api.host);
        if (api.host[0] == '[') {
            size_t used;
            parse_host(cfg->api.host, strlen(cfg->api.host), &api, &used);
        }
        for (size_t k = 0; k < *n_own; k++) {
            if (api.port != 0 && api.port == own[k].hp.port &&
                (strcasecmp(api.host, own[k].hp.host) == 0 || host_wildcard(api.host) ||
                 host_wildcard(own[k].hp.host) ||
                 (host_loopback(api.host) && host_loopback(own[k].hp.host)))) {
                config_diag_add(errs, false, "", "api.port", "same address as %s", own[k].path);
            }
        }
        own[*n_own].path = "api.port";
        own[*n_own].hp = api;
        (*n_own)++;
        if (!host_loopback(api.host) && cfg->api.jwt_secret == NULL &&
            cfg->api.iam_api_key == NULL && !cfg->api.allow_unauthenticated) {
            config_diag_add(errs, false, "", "api.host",
                            "'%.200s' is reachable from other hosts and no secret is set: set "
                            "DATALAYER_JWT_SECRET or DATALAYER_IAM_API_KEY, bind localhost, or "
                            "set api.allow_unauthenticated: true",
                            cfg->api.host);
        }
    }
}

static int cmp_exporters(const void *a, const void *b)
{
    return strcmp(((const struct config_exporter *)a)->name,
                  ((const struct config_exporter *)b)->name);
}

int config_finalize(struct config *cfg, struct config_errors *errs)
{
    if (cfg->finalized_) {
        return 0;
    }
    size_t before = errs->n_errors;
    int rv = apply_xdg(cfg, "state_dir", "XDG_STATE_HOME");
    if (rv == 0) {
        rv = apply_xdg(cfg, "sink.data_dir", "XDG_DATA_HOME");
    }
    if (rv == 0) {
        rv = expand_table_paths(cfg, cfg, config_table, config_table_len, "", errs);
    }
    if (rv == 0) {
        rv = synthesize(cfg, errs);
    }
    if (rv != 0) {
        return rv;
    }
    int dq_path = exporter_index("disk_queue.path");
    for (size_t i = 0; i < cfg->n_exporters; i++) {
        struct config_exporter *e = &cfg->exporters[i];
        char prefix[128];
        snprintf(prefix, sizeof(prefix), "exporters.%s.", e->name);
        rv = expand_table_paths(cfg, e, config_exporter_table, config_exporter_table_len, prefix,
                                errs);
        if (rv != 0) {
            return rv;
        }
        bool otlp = e->type == CONFIG_EXPORTER_OTLP_HTTP || e->type == CONFIG_EXPORTER_OTLP_GRPC;
        if (!otlp) {
            e->disk_queue.enabled = false;
        } else if (e->disk_queue.enabled && e->disk_queue.path == NULL && cfg->state_dir != NULL) {
            char dir[256];
            snprintf(dir, sizeof(dir), "/queue/%s", e->name);
            if (set_string(&e->disk_queue.path, cfg->state_dir, dir) != 0) {
                return DLOTEL_ERR_NOMEM;
            }
            e->source_[dq_path] = CONFIG_SOURCE_DEFAULT;
        }
    }
    if (cfg->n_exporters > 1) {
        qsort(cfg->exporters, cfg->n_exporters, sizeof(cfg->exporters[0]), cmp_exporters);
    }
    struct config_list *lists[] = {&cfg->exporters_traces, &cfg->exporters_metrics,
                                   &cfg->exporters_logs};
    const char *list_keys[] = {"exporters_traces", "exporters_metrics", "exporters_logs"};
    for (size_t k = 0; k < 3; k++) {
        if (cfg->source_[global_index(list_keys[k])] != CONFIG_SOURCE_DEFAULT) {
            continue;
        }
        config_list_clear(lists[k]);
        for (size_t i = 0; i < cfg->n_exporters; i++) {
            const char *n = cfg->exporters[i].name;
            if (config_list_push(lists[k], n, strlen(n)) != 0) {
                return DLOTEL_ERR_NOMEM;
            }
        }
    }

    /* Validation: everything, every problem. */
    struct listen_addr own[8];
    size_t n_own = 0;
    check_global(cfg, own, &n_own, errs);
    for (size_t i = 0; i < cfg->n_exporters; i++) {
        check_exporter(cfg, &cfg->exporters[i], own, n_own, errs);
    }
    size_t n_sinks = 0;
    for (size_t i = 0; i < cfg->n_exporters; i++) {
        struct config_exporter *e = &cfg->exporters[i];
        if (e->type == CONFIG_EXPORTER_SINK && ++n_sinks == 2) {
            char p[128];
            snprintf(p, sizeof(p), "exporters.%s.type", e->name);
            config_diag_add(errs, false, "", p, "only one exporter may be of type sink");
        }
        for (size_t j = 0; j < i; j++) {
            struct config_exporter *o = &cfg->exporters[j];
            char p[128];
            if (e->type == CONFIG_EXPORTER_FILE && o->type == CONFIG_EXPORTER_FILE &&
                e->path != NULL && o->path != NULL && strcmp(e->path, o->path) == 0) {
                snprintf(p, sizeof(p), "exporters.%s.path", e->name);
                config_diag_add(errs, false, "", p, "same file as exporters.%s.path", o->name);
            }
            if (e->disk_queue.enabled && o->disk_queue.enabled && e->disk_queue.path != NULL &&
                o->disk_queue.path != NULL && strcmp(e->disk_queue.path, o->disk_queue.path) == 0) {
                snprintf(p, sizeof(p), "exporters.%s.disk_queue.path", e->name);
                config_diag_add(errs, false, "", p,
                                "same directory as exporters.%s.disk_queue.path", o->name);
            }
        }
    }
    for (size_t k = 0; k < 3; k++) {
        check_routing(cfg, list_keys[k], lists[k], errs);
    }
    for (size_t i = 0; i < cfg->n_exporters; i++) {
        if (config_exporter_signals(cfg, &cfg->exporters[i]) == 0) {
            char p[128];
            snprintf(p, sizeof(p), "exporters.%s", cfg->exporters[i].name);
            config_diag_add(errs, true, "", p,
                            "receives no signal (not in exporters_traces, exporters_metrics or "
                            "exporters_logs)");
        }
    }
    if (errs->n_errors > before) {
        return DLOTEL_ERR_CONFIG;
    }
    cfg->finalized_ = true;
    cfg->envp_ = NULL; /* Borrowed; not needed any more. */
    return 0;
}
