/*
 * Output from the tables: `config --print` (YAML that loads back to the same configuration),
 * the hash the launcher compares, and docs/configuration.md.
 */
#include <stdio.h>
#include <string.h>

#include "config/config_int.h"
#include "dlotel.h"

#define COMMENT_COLUMN 44

static const char *const source_names[] = {"default", "file", "env", "flag", "api"};

struct printer {
    struct buf *out;
    bool mask;
    bool comments;
    int rv;
};

static void put(struct printer *p, const char *s, size_t n)
{
    if (p->rv == 0) {
        p->rv = buf_append(p->out, s, n);
    }
}

static void puts_(struct printer *p, const char *s)
{
    put(p, s, strlen(s));
}

static void indent(struct printer *p, int n)
{
    for (int i = 0; i < n && p->rv == 0; i++) {
        p->rv = buf_putc(p->out, ' ');
    }
}

/* Ends a line, with "# comment" aligned when comments are on. |line_start| is its offset. */
static void end_line(struct printer *p, size_t line_start, const char *comment)
{
    if (p->comments && comment != NULL && p->rv == 0) {
        size_t col = p->out->len - line_start;
        indent(p, col < COMMENT_COLUMN ? (int)(COMMENT_COLUMN - col) : 1);
        puts_(p, "# ");
        puts_(p, comment);
    }
    puts_(p, "\n");
}

static void quoted(struct printer *p, const char *s)
{
    if (p->rv == 0) {
        p->rv = config_format_yaml_string(p->out, s);
    }
}

/* Sorted indexes of a map's keys, so that output does not depend on insertion order. */
static void map_order(const struct config_map *m, size_t *idx)
{
    for (size_t i = 0; i < m->n; i++) {
        size_t j = i;
        while (j > 0 && strcmp(m->items[idx[j - 1]].key, m->items[i].key) > 0) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = i;
    }
}

static void value(struct printer *p, const struct config_option *opt, const void *base)
{
    const char *field = (const char *)base + opt->offset;
    switch (opt->kind) {
    case CONFIG_KIND_STRING:
    case CONFIG_KIND_PATH:
    case CONFIG_KIND_SECRET: {
        const char *s = *(char *const *)(const void *)field;
        if (s == NULL) {
            puts_(p, "~");
        } else if (opt->kind == CONFIG_KIND_SECRET && p->mask) {
            puts_(p, "\"***\"");
        } else {
            quoted(p, s);
        }
        break;
    }
    case CONFIG_KIND_BOOL:
        puts_(p, *(const bool *)(const void *)field ? "true" : "false");
        break;
    case CONFIG_KIND_INT:
        if (p->rv == 0) {
            p->rv = buf_printf(p->out, "%lld", (long long)*(const int64_t *)(const void *)field);
        }
        break;
    case CONFIG_KIND_SIZE:
        if (p->rv == 0) {
            p->rv = config_format_size(p->out, *(const uint64_t *)(const void *)field);
        }
        break;
    case CONFIG_KIND_DURATION:
        if (p->rv == 0) {
            p->rv = config_format_duration(p->out, *(const uint64_t *)(const void *)field);
        }
        break;
    case CONFIG_KIND_ENUM: {
        int v = *(const int *)(const void *)field;
        puts_(p, v >= 0 ? opt->choices[v] : "~");
        break;
    }
    case CONFIG_KIND_LIST: {
        const struct config_list *l = (const struct config_list *)(const void *)field;
        puts_(p, "[");
        for (size_t i = 0; i < l->n; i++) {
            if (i > 0) {
                puts_(p, ", ");
            }
            quoted(p, l->items[i]);
        }
        puts_(p, "]");
        break;
    }
    case CONFIG_KIND_MAP: {
        const struct config_map *m = (const struct config_map *)(const void *)field;
        size_t idx[CONFIG_MAX_ITEMS];
        map_order(m, idx);
        puts_(p, "{");
        for (size_t i = 0; i < m->n; i++) {
            const struct config_kv *kv = &m->items[idx[i]];
            if (i > 0) {
                puts_(p, ", ");
            }
            quoted(p, kv->key);
            puts_(p, ": ");
            if (p->mask && (opt->flags & CONFIG_OPT_SENSITIVE_MAP) &&
                config_header_sensitive(kv->key)) {
                puts_(p, "\"***\"");
            } else {
                quoted(p, kv->value);
            }
        }
        puts_(p, "}");
        break;
    }
    case CONFIG_KIND_EXPORTERS:
        break;
    case CONFIG_KIND_PROCESSORS: {
        /* Canonical JSON is a YAML flow sequence; '$' is doubled so ${env:} stays literal. */
        const char *s = *(char *const *)(const void *)field;
        if (s == NULL) {
            puts_(p, "~");
            break;
        }
        for (const char *d; (d = strchr(s, '$')) != NULL; s = d + 1) {
            put(p, s, (size_t)(d - s + 1));
            puts_(p, "$");
        }
        puts_(p, s);
        break;
    }
    }
}

/* Number of leading dotted segments |a| and |b| share. */
static size_t common_segments(const char *a, const char *b)
{
    size_t n = 0;
    for (;;) {
        size_t la = strcspn(a, "."), lb = strcspn(b, ".");
        if (a[la] == 0 || b[lb] == 0 || la != lb || memcmp(a, b, la) != 0) {
            return n;
        }
        n++;
        a += la + 1;
        b += lb + 1;
    }
}

static void print_exporters(struct printer *p, const struct config *cfg, int ind);

/*
 * Prints the keys of |table| in |base| as nested YAML at |ind| spaces. |etype| >= 0 prints only
 * the keys that apply to that exporter type.
 */
static void print_table(struct printer *p, const struct config *cfg,
                        const struct config_option *table, size_t n, const void *base,
                        const uint8_t *source, const uint8_t *via, int ind, int etype)
{
    const char *prev = "";
    for (size_t i = 0; i < n && p->rv == 0; i++) {
        const struct config_option *opt = &table[i];
        if (etype >= 0 && opt->types != 0 && (opt->types & (1u << etype)) == 0) {
            continue;
        }
        size_t common = common_segments(prev, opt->path);
        /* Open the mappings this key adds beyond the previous key's. */
        const char *seg = opt->path;
        size_t depth = 0;
        for (;;) {
            size_t sl = strcspn(seg, ".");
            if (seg[sl] == 0) {
                break;
            }
            if (depth >= common) {
                indent(p, ind + 2 * (int)depth);
                put(p, seg, sl);
                puts_(p, ":\n");
            }
            depth++;
            seg += sl + 1;
        }
        prev = opt->path;
        if (opt->kind == CONFIG_KIND_EXPORTERS) {
            print_exporters(p, cfg, ind);
            continue;
        }
        size_t start = p->out->len;
        indent(p, ind + 2 * (int)depth);
        puts_(p, seg);
        puts_(p, ": ");
        value(p, opt, base);
        char comment[128];
        uint8_t s = source[i];
        snprintf(comment, sizeof(comment), "%s", s < 5 ? source_names[s] : "?");
        if (s == CONFIG_SOURCE_ENV && table == config_table) {
            const char *name = via[i] < 3                      ? opt->env[via[i]]
                               : via[i] == CONFIG_VIA_ENV_TRUE ? opt->env_true
                                                               : NULL;
            if (name != NULL) {
                snprintf(comment, sizeof(comment), "env %s", name);
            }
        }
        end_line(p, start, comment);
    }
}

static void print_exporters(struct printer *p, const struct config *cfg, int ind)
{
    indent(p, ind);
    if (cfg->n_exporters == 0) {
        puts_(p, "exporters: {}\n");
        return;
    }
    puts_(p, "exporters:\n");
    for (size_t i = 0; i < cfg->n_exporters && p->rv == 0; i++) {
        const struct config_exporter *e = &cfg->exporters[i];
        size_t start = p->out->len;
        indent(p, ind + 2);
        puts_(p, e->name);
        puts_(p, ":");
        end_line(p, start, e->origin_);
        print_table(p, cfg, config_exporter_table, config_exporter_table_len, e, e->source_,
                    e->via_, ind + 4, e->type);
    }
}

static int print(const struct config *cfg, struct buf *out, bool mask, bool comments)
{
    struct printer p = {.out = out, .mask = mask, .comments = comments};
    if (comments) {
        puts_(&p, mask ? "# dlotel effective configuration (secrets masked)\n"
                       : "# dlotel effective configuration (secrets shown: keep this private)\n");
    }
    print_table(&p, cfg, config_table, config_table_len, cfg, cfg->source_, cfg->via_, 0, -1);
    return p.rv;
}

int config_print(const struct config *cfg, struct buf *out, bool mask_secrets)
{
    return print(cfg, out, mask_secrets, true);
}

uint64_t config_hash(const struct config *cfg)
{
    /* The canonical YAML without comments is the effective configuration, so hash that. */
    struct buf b;
    buf_init(&b, 64u * 1024u * 1024u);
    uint64_t h = 0xcbf29ce484222325ULL;
    if (print(cfg, &b, false, false) == 0) {
        for (size_t i = 0; i < b.len; i++) {
            h ^= b.data[i];
            h *= 0x100000001b3ULL;
        }
    } else {
        h = 0; /* Out of memory: a hash no real configuration has. */
    }
    if (b.data != NULL) {
        memset(b.data, 0, b.len); /* It held the secrets. */
    }
    buf_cleanup(&b);
    return h;
}

/* ---- docs/configuration.md ----------------------------------------------------------------- */

/* Appends |s| for a Markdown table cell: pipes escaped. */
static void cell(struct printer *p, const char *s)
{
    for (; *s != 0 && p->rv == 0; s++) {
        if (*s == '|') {
            puts_(p, "\\|");
        } else {
            p->rv = buf_putc(p->out, (uint8_t)*s);
        }
    }
}

static void md_type(struct printer *p, const struct config_option *opt)
{
    static const char *const names[] = {
        [CONFIG_KIND_STRING] = "string",
        [CONFIG_KIND_SECRET] = "secret",
        [CONFIG_KIND_PATH] = "path",
        [CONFIG_KIND_BOOL] = "bool",
        [CONFIG_KIND_INT] = "integer",
        [CONFIG_KIND_SIZE] = "size",
        [CONFIG_KIND_DURATION] = "duration",
        [CONFIG_KIND_ENUM] = "one of",
        [CONFIG_KIND_LIST] = "list of names",
        [CONFIG_KIND_MAP] = "map",
        [CONFIG_KIND_EXPORTERS] = "map of exporters",
        [CONFIG_KIND_PROCESSORS] = "list of processors",
    };
    if (opt->kind == CONFIG_KIND_STRING && (opt->flags & CONFIG_OPT_ENDPOINT)) {
        puts_(p, "host:port");
    } else if (opt->kind == CONFIG_KIND_STRING && (opt->flags & CONFIG_OPT_URL)) {
        puts_(p, "URL");
    } else {
        puts_(p, names[opt->kind]);
    }
    if (opt->kind == CONFIG_KIND_ENUM) {
        for (size_t i = 0; opt->choices[i] != NULL; i++) {
            puts_(p, i > 0 ? ", `" : " `");
            puts_(p, opt->choices[i]);
            puts_(p, "`");
        }
    }
    if (opt->min < opt->max && p->rv == 0) {
        puts_(p, ", ");
        if (opt->kind == CONFIG_KIND_SIZE) {
            p->rv = config_format_size(p->out, (uint64_t)opt->min);
        } else if (opt->kind == CONFIG_KIND_DURATION) {
            p->rv = config_format_duration(p->out, (uint64_t)opt->min);
        } else {
            p->rv = buf_printf(p->out, "%lld", (long long)opt->min);
        }
        puts_(p, (opt->flags & CONFIG_OPT_MAX_EXCLUSIVE) ? " to less than " : " to ");
        if (p->rv != 0) {
            return;
        }
        if (opt->kind == CONFIG_KIND_SIZE) {
            p->rv = config_format_size(p->out, (uint64_t)opt->max);
        } else if (opt->kind == CONFIG_KIND_DURATION) {
            p->rv = config_format_duration(p->out, (uint64_t)opt->max);
        } else {
            p->rv = buf_printf(p->out, "%lld", (long long)opt->max);
        }
    }
}

static void md_row(struct printer *p, const struct config_option *opt, const char *key_prefix,
                   bool exporter)
{
    puts_(p, "| `");
    puts_(p, key_prefix);
    puts_(p, opt->path);
    puts_(p, "` | ");
    md_type(p, opt);
    puts_(p, " | ");
    if (opt->def_doc != NULL) {
        cell(p, opt->def_doc);
    } else if (opt->def != NULL) {
        puts_(p, "`");
        cell(p, opt->def);
        puts_(p, "`");
    } else if (opt->kind != CONFIG_KIND_EXPORTERS) {
        puts_(p, "unset");
    }
    puts_(p, " | ");
    if (exporter) {
        char suf[64];
        config_env_suffix(opt->path, suf, sizeof(suf));
        puts_(p, "`" CONFIG_EXPORTER_ENV_PREFIX "<NAME>_");
        puts_(p, suf);
        puts_(p, "`");
    }
    for (size_t k = 0; k < 3 && opt->env[k] != NULL; k++) {
        puts_(p, k == 0 ? "`" : ", alias `");
        puts_(p, opt->env[k]);
        puts_(p, "`");
    }
    if (opt->env_true != NULL) {
        puts_(p, opt->env[0] != NULL ? "; `" : "`");
        puts_(p, opt->env_true);
        puts_(p, "=true` means `");
        puts_(p, opt->env_true_value);
        puts_(p, "`");
    }
    puts_(p, " | ");
    if (opt->flag != NULL) {
        puts_(p, "`");
        puts_(p, opt->flag);
        puts_(p, "`");
    }
    puts_(p, " | ");
    cell(p, opt->doc);
    if (exporter && opt->types != 0) {
        puts_(p, " Applies to ");
        bool first = true;
        for (int t = 0; t < 5; t++) {
            if (opt->types & (1u << t)) {
                puts_(p, first ? "`" : ", `");
                puts_(p, config_exporter_table[0].choices[t]);
                puts_(p, "`");
                first = false;
            }
        }
        puts_(p, ".");
    }
    puts_(p, " |\n");
}

static const char *const md_intro =
    "# Configuration\n"
    "\n"
    "<!-- Generated from agent/config/config_table.c by dlotel-config-doc; do not edit by hand.\n"
    "     Regenerate with: cmake --build build --target config-docs -->\n"
    "\n"
    "The agent reads its configuration from four places. Each key takes its value from the\n"
    "highest of them that sets it:\n"
    "\n"
    "1. built-in defaults (below);\n"
    "2. a YAML file: `--config FILE`, else the file named by `DATALAYER_OTEL_CONFIG`;\n"
    "3. the environment: the `DATALAYER_*` variables listed below (the first name of a key is\n"
    "   canonical, the others are aliases read only when it is unset; an empty variable counts\n"
    "   as unset);\n"
    "4. command-line flags, and the Python package's typed config (key=value pairs).\n"
    "\n"
    "`dlotel config --print` shows the effective configuration, each key with a comment saying\n"
    "where its value came from, secrets masked. Examples are in `config/`: `minimal.yaml`,\n"
    "`agent.yaml` (two exporters, per-signal routing) and `sink.yaml`.\n"
    "\n"
    "## Rules\n"
    "\n"
    "- **Strict.** An unknown key is an error that names its path and suggests the closest key\n"
    "  (`exporters.up.compresion: unknown key (did you mean 'compression'?)`). Every problem is\n"
    "  reported, not just the first, and everything is checked before anything starts. Unknown\n"
    "  `DATALAYER_OTEL_AGENT_*` variables are only warnings, because the environment is shared.\n"
    "- **Sizes** are bytes with an optional unit: `B`, `KB`/`K`, `MB`, `GB`, `TB` (powers of\n"
    "  1000) or `KiB`/`Ki`, `MiB`, `GiB`, `TiB` (powers of 1024), case-insensitive, e.g.\n"
    "  `4MiB`, `512KiB`, `1GB`, `65536`. A fraction is accepted when the result is a whole number\n"
    "  of bytes (`1.5MiB`, not `0.1KiB`).\n"
    "- **Durations** are a number and a unit, `ns`, `us`, `ms`, `s`, `m`, `h`, possibly several\n"
    "  (`1m30s`) or with a fraction (`1.5s`). A bare number is refused (is `200` seconds or\n"
    "  milliseconds?), except `0`.\n"
    "- **Booleans** are `true`/`false` (also `yes`/`no`, `on`/`off`, `1`/`0`).\n"
    "- **Lists and maps** are YAML sequences and mappings in the file; in the environment and\n"
    "  flags they are `a,b,c` and `k1=v1,k2=v2`. An empty value empties them.\n"
    "- **Paths** may start with `~/`; relative paths are made absolute against the current\n"
    "  directory of the process that loads the configuration.\n"
    "- **YAML**: one UTF-8 document of at most 256 KiB, nested at most 16 levels, at most 10000\n"
    "  nodes once aliases are expanded; anchors, aliases and `<<` merge keys work; duplicate keys\n"
    "  are refused. Top-level keys starting with `x-` are ignored: they hold anchors to reuse.\n"
    "  String values may use `${env:NAME}` (`$$` is a literal `$`), which keeps secrets out of\n"
    "  the file.\n"
    "- **Secrets** (`secret` below, and header values whose names contain auth, token, secret,\n"
    "  key, password or cookie) are printed as `***`. They have no flags: argv is visible to\n"
    "  every user of the machine.\n"
    "\n"
    "## The default upstream\n"
    "\n"
    "When no exporter is configured the agent makes one, named `datalayer`, of type `otlp_http`:\n"
    "its endpoint is `DATALAYER_OTLP_URL` when set, else `DATALAYER_OTEL_RUN_URL` (or\n"
    "`DATALAYER_RUN_URL`) + `/api/otel/v1/otlp`, and it sends\n"
    "`Authorization: Bearer $DATALAYER_API_KEY` when that is set. With\n"
    "`DATALAYER_OTEL_AGENT_SINK=true` it also makes an exporter `sink`. With neither, the agent\n"
    "refuses to start and says which\n"
    "variables to set. gRPC to an in-cluster collector is an exporter of type `otlp_grpc` in the\n"
    "file. The agent never reads `OTEL_EXPORTER_OTLP_ENDPOINT` (that variable points\n"
    "applications at the agent), and refuses an exporter whose endpoint is one of its own listen\n"
    "addresses (`localhost`, `127.0.0.1` and `::1` count as the same host).\n"
    "\n"
    "```yaml\n"
    "exporters:\n"
    "  datalayer:\n"
    "    type: otlp_http\n"
    "    endpoint: https://prod1.datalayer.run/api/otel/v1/otlp\n"
    "    headers:\n"
    "      Authorization: Bearer ${env:DATALAYER_API_KEY}\n"
    "  collector:\n"
    "    type: otlp_grpc\n"
    "    endpoint: http://otel-collector.observability:4317\n"
    "exporters_traces: [datalayer, collector]\n"
    "exporters_metrics: [datalayer]\n"
    "exporters_logs: [datalayer]\n"
    "```\n";

int config_markdown(struct buf *out)
{
    struct printer p = {.out = out};
    puts_(&p, md_intro);
    static const char *const header = "| Key | Type | Default | Environment | Flag | Description "
                                      "|\n|---|---|---|---|---|---|\n";
    for (int s = 0; s < CONFIG_SEC_COUNT && p.rv == 0; s++) {
        puts_(&p, "\n## ");
        puts_(&p, s == CONFIG_SEC_GENERAL || s == CONFIG_SEC_ROUTING ? "" : "`");
        puts_(&p, config_sections[s].title);
        puts_(&p, s == CONFIG_SEC_GENERAL || s == CONFIG_SEC_ROUTING ? "" : "`");
        puts_(&p, "\n\n");
        puts_(&p, config_sections[s].doc);
        puts_(&p, "\n\n");
        puts_(&p, header);
        if (s == CONFIG_SEC_EXPORTERS) {
            for (size_t i = 0; i < config_exporter_table_len; i++) {
                md_row(&p, &config_exporter_table[i], "exporters.<name>.", true);
            }
            continue;
        }
        for (size_t i = 0; i < config_table_len; i++) {
            if (config_table[i].section == (enum config_section)s) {
                md_row(&p, &config_table[i], "", false);
            }
        }
    }
    return p.rv;
}
