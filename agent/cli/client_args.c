/*
 * The command lines of the client commands, and where they find the API: one table of flags says
 * which command takes which, so that a flag a command ignores is an error, not a silent no-op.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "config/config.h"
#include "dlotel.h"

#define ALL_CMDS 0xffu
#define BIT(c)   (1u << (c))
#define READS    (ALL_CMDS & ~BIT(CLIENT_SMOKE))

enum opt_id {
    OPT_URL,
    OPT_TOKEN,
    OPT_JSON,
    OPT_TIMEOUT,
    OPT_SERVICE,
    OPT_NAME,
    OPT_STATUS,
    OPT_SEVERITY,
    OPT_TRACE_ID,
    OPT_QUERY,
    OPT_START,
    OPT_END,
    OPT_SINCE,
    OPT_MIN_DURATION,
    OPT_LIMIT,
    OPT_STEP,
    OPT_AGG,
    OPT_PARAM,
};

struct opt {
    const char *flag;
    enum opt_id id;
    bool takes_value;
    unsigned cmds; /* BIT(enum client_cmd) of the commands that accept it */
};

static const struct opt opts[] = {
    {"--url", OPT_URL, true, ALL_CMDS},
    {"--token", OPT_TOKEN, true, ALL_CMDS},
    {"--json", OPT_JSON, false, READS},
    {"--timeout", OPT_TIMEOUT, true, ALL_CMDS},
    {"--service", OPT_SERVICE, true, BIT(CLIENT_TRACES) | BIT(CLIENT_LOGS) | BIT(CLIENT_METRICS)},
    {"--name", OPT_NAME, true, BIT(CLIENT_TRACES)},
    {"--status", OPT_STATUS, true, BIT(CLIENT_TRACES)},
    {"--severity", OPT_SEVERITY, true, BIT(CLIENT_LOGS)},
    {"--trace-id", OPT_TRACE_ID, true, BIT(CLIENT_LOGS)},
    {"--query", OPT_QUERY, true, BIT(CLIENT_LOGS)},
    {"--start", OPT_START, true, BIT(CLIENT_TRACES) | BIT(CLIENT_LOGS) | BIT(CLIENT_METRICS)},
    {"--end", OPT_END, true, BIT(CLIENT_TRACES) | BIT(CLIENT_LOGS) | BIT(CLIENT_METRICS)},
    {"--since", OPT_SINCE, true, BIT(CLIENT_TRACES) | BIT(CLIENT_LOGS) | BIT(CLIENT_METRICS)},
    {"--min-duration", OPT_MIN_DURATION, true, BIT(CLIENT_TRACES)},
    {"--limit", OPT_LIMIT, true, BIT(CLIENT_TRACES) | BIT(CLIENT_LOGS) | BIT(CLIENT_METRICS)},
    {"--step", OPT_STEP, true, BIT(CLIENT_METRICS)},
    {"--agg", OPT_AGG, true, BIT(CLIENT_METRICS)},
    {"--param", OPT_PARAM, true, BIT(CLIENT_QUERY)},
};

static const char *const cmd_names[] = {
    [CLIENT_TRACES] = "traces", [CLIENT_LOGS] = "logs",         [CLIENT_METRICS] = "metrics",
    [CLIENT_QUERY] = "query",   [CLIENT_SERVICES] = "services", [CLIENT_STATS] = "stats",
    [CLIENT_FLUSH] = "flush",   [CLIENT_SMOKE] = "smoke-test",
};

const char *client_cmd_name(enum client_cmd cmd)
{
    return (size_t)cmd < sizeof(cmd_names) / sizeof(cmd_names[0]) ? cmd_names[cmd] : "?";
}

void client_print_help(FILE *f)
{
    fprintf(
        f,
        "client commands (talk to a sink's query API; `dlotel serve` runs one):\n"
        "  traces [ID]         recent traces, newest first; with ID, its spans as a tree\n"
        "                      --service S --name N --status UNSET|OK|ERROR\n"
        "                      --min-duration 250ms --since 15m | --start T --end T --limit N\n"
        "  logs                recent log records: --service --severity --trace-id --query TEXT\n"
        "                      --since --start --end --limit\n"
        "  metrics [NAME]      metric names; with NAME its points (--service --since --limit),\n"
        "                      or a series with --step 60s --agg avg|sum|min|max|count\n"
        "  query SQL           SQL over spans, logs, metrics (--param V binds $1, $2...)\n"
        "  services            service names seen in any signal\n"
        "  stats               rows, files and bytes per table\n"
        "  flush               write the hot rows to Parquet now\n"
        "  smoke-test          send a trace, a log and a metric over OTLP and check that\n"
        "                      every query path returns them (--timeout 30s)\n"
        "options of every client command:\n"
        "  --url URL           the API (else $DATALAYER_OTEL_URL, $DATALAYER_RUN_URL,\n"
        "                      %s; a URL with no path gets %s)\n"
        "  --token TOKEN       bearer token; prefer $DATALAYER_API_KEY (argv is public)\n"
        "  --json              print the server's JSON unchanged (for scripts)\n"
        "  --timeout DURATION  per request (default 30s); smoke-test: the whole run\n"
        "Exit codes of client commands: 0 ok, 1 failure (or a check failed), 2 usage, 3\n"
        "cannot connect, 4 authentication refused (401/403).\n",
        CLIENT_DEFAULT_URL, CLIENT_API_PREFIX);
}

static const struct opt *find_opt(const char *arg, size_t len)
{
    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
        if (strlen(opts[i].flag) == len && strncmp(opts[i].flag, arg, len) == 0) {
            return &opts[i];
        }
    }
    return NULL;
}

static int parse_duration_arg(const char *flag, const char *v, bool bare_ms, uint64_t *out)
{
    /* Whole days ("7d") too: the config's durations stop at hours, a --since often does not. */
    size_t n = strlen(v);
    if (n >= 2 && n <= 6 && v[n - 1] == 'd' && strspn(v, "0123456789") == n - 1) {
        uint64_t days = 0;
        for (size_t i = 0; i + 1 < n; i++) {
            days = days * 10 + (uint64_t)(v[i] - '0');
        }
        *out = days * 86400ull * 1000000000ull;
        return 0;
    }
    if (config_parse_duration(v, bare_ms, out) != 0) {
        cli_usage_error("%s: '%s' is not a duration (e.g. 250ms, 15m, 2h, 7d)", flag, v);
        return EXIT_USAGE;
    }
    return 0;
}

static int apply(struct client_args *a, const struct opt *o, const char *v)
{
    switch (o->id) {
    case OPT_URL:
        a->url = v;
        break;
    case OPT_TOKEN:
        a->token = v;
        break;
    case OPT_JSON:
        a->json = true;
        break;
    case OPT_TIMEOUT:
        if (parse_duration_arg(o->flag, v, false, &a->timeout_ns) != 0) {
            return EXIT_USAGE;
        }
        if (a->timeout_ns < 1000000u) {
            cli_usage_error("--timeout: '%s' is shorter than 1ms", v);
            return EXIT_USAGE;
        }
        break;
    case OPT_SERVICE:
        a->service = v;
        break;
    case OPT_NAME:
        a->name = v;
        break;
    case OPT_STATUS:
        if (strcasecmp(v, "UNSET") != 0 && strcasecmp(v, "OK") != 0 &&
            strcasecmp(v, "ERROR") != 0) {
            cli_usage_error("--status: '%s' is not one of UNSET, OK, ERROR", v);
            return EXIT_USAGE;
        }
        a->status = v;
        break;
    case OPT_SEVERITY:
        a->severity = v;
        break;
    case OPT_TRACE_ID:
        a->trace_id = v;
        break;
    case OPT_QUERY:
        a->text = v;
        break;
    case OPT_START:
        a->start = v;
        break;
    case OPT_END:
        a->end = v;
        break;
    case OPT_SINCE:
        if (parse_duration_arg(o->flag, v, false, &a->since_ns) != 0) {
            return EXIT_USAGE;
        }
        a->has_since = true;
        break;
    case OPT_MIN_DURATION:
        if (parse_duration_arg(o->flag, v, true, &a->min_duration_ns) != 0) {
            return EXIT_USAGE;
        }
        a->has_min_duration = true;
        break;
    case OPT_LIMIT: {
        char *end = NULL;
        errno = 0;
        unsigned long n = strtoul(v, &end, 10);
        if (v[0] < '0' || v[0] > '9' || *end != '\0' || errno != 0 || n < 1 || n > 10000) {
            cli_usage_error("--limit: '%s' is not a number from 1 to 10000", v);
            return EXIT_USAGE;
        }
        a->limit = (unsigned)n;
        break;
    }
    case OPT_STEP:
        a->step = v;
        break;
    case OPT_AGG:
        if (strcmp(v, "avg") != 0 && strcmp(v, "sum") != 0 && strcmp(v, "min") != 0 &&
            strcmp(v, "max") != 0 && strcmp(v, "count") != 0) {
            cli_usage_error("--agg: '%s' is not one of avg, sum, min, max, count", v);
            return EXIT_USAGE;
        }
        a->agg = v;
        break;
    case OPT_PARAM:
        if (a->n_params == CLIENT_MAX_PARAMS) {
            cli_usage_error("query: at most %d --param", CLIENT_MAX_PARAMS);
            return EXIT_USAGE;
        }
        a->params[a->n_params++] = v;
        break;
    }
    return 0;
}

int client_parse_args(struct client_args *a, enum client_cmd cmd, int argc, char **argv)
{
    memset(a, 0, sizeof(*a));
    a->cmd = cmd;
    const char *name = client_cmd_name(cmd);
    bool only_positional = false;
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (!only_positional && (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0)) {
            client_print_help(stdout);
            return 1;
        }
        if (!only_positional && strcmp(arg, "--") == 0) {
            only_positional = true;
            continue;
        }
        if (only_positional || strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
            bool takes = cmd == CLIENT_TRACES || cmd == CLIENT_METRICS || cmd == CLIENT_QUERY;
            if (!takes) {
                cli_usage_error("%s takes no argument, got '%s'", name, arg);
                return EXIT_USAGE;
            }
            if (a->arg != NULL) {
                cli_usage_error("%s takes one argument, got '%s' and '%s'%s", name, a->arg, arg,
                                cmd == CLIENT_QUERY ? " (quote the SQL)" : "");
                return EXIT_USAGE;
            }
            a->arg = arg;
            continue;
        }
        const char *eq = strchr(arg, '=');
        size_t len = eq != NULL ? (size_t)(eq - arg) : strlen(arg);
        const struct opt *o = find_opt(arg, len);
        if (o == NULL || (o->cmds & BIT(cmd)) == 0) {
            cli_usage_error("%s: unknown option '%.*s'", name, (int)len, arg);
            return EXIT_USAGE;
        }
        const char *v = NULL;
        if (o->takes_value) {
            if (eq != NULL) {
                v = eq + 1;
            } else if (i + 1 < argc) {
                v = argv[++i];
            } else {
                cli_usage_error("%s: %s needs a value", name, o->flag);
                return EXIT_USAGE;
            }
        } else if (eq != NULL) {
            cli_usage_error("%s: %s takes no value", name, o->flag);
            return EXIT_USAGE;
        }
        int rc = apply(a, o, v);
        if (rc != 0) {
            return rc;
        }
    }
    if (cmd == CLIENT_QUERY && (a->arg == NULL || a->arg[0] == '\0')) {
        cli_usage_error("query needs the SQL, e.g. dlotel query 'SELECT count(*) FROM spans'");
        return EXIT_USAGE;
    }
    if (a->has_since && a->start != NULL) {
        cli_usage_error("%s: --since and --start are two ways to say the same; give one", name);
        return EXIT_USAGE;
    }
    if ((a->step != NULL || a->agg != NULL) && a->arg == NULL) {
        cli_usage_error("metrics: --step and --agg need a metric NAME");
        return EXIT_USAGE;
    }
    if (cmd == CLIENT_TRACES && a->arg != NULL &&
        (a->service != NULL || a->name != NULL || a->status != NULL || a->has_min_duration ||
         a->has_since || a->start != NULL || a->end != NULL || a->limit != 0)) {
        cli_usage_error("traces ID shows one trace; the filters are for the list");
        return EXIT_USAGE;
    }
    return 0;
}

/* ---- where the API is --------------------------------------------------------------------- */

int client_url_resolve(const char *flag, const char *otel_url, const char *run_url, char *out,
                       size_t outlen, const char **why)
{
    const char *u = CLIENT_DEFAULT_URL;
    if (flag != NULL && flag[0] != '\0') {
        u = flag;
    } else if (otel_url != NULL && otel_url[0] != '\0') {
        u = otel_url;
    } else if (run_url != NULL && run_url[0] != '\0') {
        u = run_url;
    }
    const char *scheme = "";
    const char *sep = strstr(u, "://");
    if (sep == NULL) {
        scheme = "http://"; /* "localhost:7800" */
    } else if (!((sep - u == 4 && strncasecmp(u, "http", 4) == 0) ||
                 (sep - u == 5 && strncasecmp(u, "https", 5) == 0))) {
        *why = "the URL must be http:// or https://";
        return -1;
    }
    if (strpbrk(u, "?#") != NULL) {
        *why = "the URL must not have a query or fragment";
        return -1;
    }
    for (const char *p = u; *p != '\0'; p++) {
        if ((unsigned char)*p <= ' ' || *p == 0x7f) {
            *why = "the URL has a space or control character";
            return -1;
        }
    }
    const char *host = sep != NULL ? sep + 3 : u;
    if (*host == '\0' || *host == '/') {
        *why = "the URL has no host";
        return -1;
    }
    const char *path = strchr(host, '/');
    size_t n = strlen(u);
    /* Trailing slashes go; "http://h/" thereby has no path. */
    while (n > 0 && u[n - 1] == '/' && (path == NULL || u + n - 1 >= path)) {
        n--;
    }
    bool no_path = path == NULL || (size_t)(path - u) >= n;
    const char *suffix = no_path ? CLIENT_API_PREFIX : "";
    size_t need = strlen(scheme) + n + strlen(suffix) + 1;
    if (need > outlen || need > CLIENT_URL_MAX) {
        *why = "the URL is too long";
        return -1;
    }
    int w = snprintf(out, outlen, "%s%.*s%s", scheme, (int)n, u, suffix);
    if (w < 0 || (size_t)w >= outlen) {
        *why = "the URL is too long";
        return -1;
    }
    return 0;
}

static bool unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

static int put_escaped(struct buf *q, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    int rc = 0;
    for (const unsigned char *p = (const unsigned char *)s; rc == 0 && *p != '\0'; p++) {
        if (unreserved(*p)) {
            rc = buf_putc(q, *p);
        } else {
            char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            rc = buf_append(q, e, 3);
        }
    }
    return rc;
}

int client_query_add(struct buf *q, const char *key, const char *value)
{
    size_t mark = q->len;
    int rc = q->len > 0 ? buf_putc(q, '&') : 0;
    if (rc == 0) {
        rc = put_escaped(q, key);
    }
    if (rc == 0) {
        rc = buf_putc(q, '=');
    }
    if (rc == 0) {
        rc = put_escaped(q, value);
    }
    if (rc != 0) {
        q->len = mark;
    }
    return rc;
}
