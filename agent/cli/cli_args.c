/*
 * The command line of `dlotel agent` and `dlotel config`: every flag of the configuration table
 * (config_flags()), --set KEY=VALUE for any key, --config FILE, and a few conveniences that
 * older scripts and the integration tests use (--exporter debug|file, --file-path,
 * --debug-verbosity), all turned into struct config_setting pairs for config_build(). The
 * configuration room validates the values, so that a bad value reads the same whether it came
 * from a flag, the environment or the file.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "core/buf.h"
#include "dlotel.h"

void cli_usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("dlotel: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs(" (see dlotel help)\n", stderr);
    va_end(ap);
}

/* Grows |*v| (elements of |size| bytes) to hold |need|. Returns 0 or -1. */
static int grow(void **v, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap) {
        return 0;
    }
    size_t n = *cap == 0 ? 16 : *cap * 2;
    while (n < need) {
        n *= 2;
    }
    void *p = realloc(*v, n * size);
    if (p == NULL) {
        return -1;
    }
    *v = p;
    *cap = n;
    return 0;
}

static char *own(struct cli_args *a, const char *s, size_t len)
{
    if (grow((void **)&a->owned, &a->cap_owned, a->n_owned + 1, sizeof(char *)) != 0) {
        return NULL;
    }
    char *d = strndup(s, len);
    if (d != NULL) {
        a->owned[a->n_owned++] = d;
    }
    return d;
}

static int add_setting(struct cli_args *a, const char *key, const char *value)
{
    if (grow((void **)&a->settings, &a->cap_settings, a->n_settings + 1,
             sizeof(struct config_setting)) != 0) {
        return -1;
    }
    a->settings[a->n_settings++] = (struct config_setting){key, value};
    return 0;
}

int cli_args_add_setting(struct cli_args *a, const char *key, const char *value)
{
    return add_setting(a, key, value) == 0 ? 0 : EXIT_RUNTIME;
}

static void add_warning(struct cli_args *a, const char *msg)
{
    if (a->n_warnings < sizeof(a->warnings) / sizeof(a->warnings[0])) {
        a->warnings[a->n_warnings] = strdup(msg);
        if (a->warnings[a->n_warnings] != NULL) {
            a->n_warnings++;
        }
    }
}

void cli_args_cleanup(struct cli_args *a)
{
    for (size_t i = 0; i < a->n_owned; i++) {
        free(a->owned[i]);
    }
    for (size_t i = 0; i < a->n_warnings; i++) {
        free(a->warnings[i]);
    }
    free(a->owned);
    free(a->settings);
    memset(a, 0, sizeof(*a));
}

/* ---- help ------------------------------------------------------------------------------------ */

void cli_print_help(FILE *f)
{
    fprintf(f,
            "usage: dlotel <command> [options]\n\n"
            "commands:\n"
            "  agent           run the agent in the foreground: receive OTLP, queue it, forward\n"
            "                  it upstream (SIGUSR1 flushes, SIGTERM/SIGINT drain and stop)\n"
            "  config --print  print the effective configuration, secrets masked\n"
            "  config --check  validate the configuration; print every problem (exit 0 or 2)\n"
            "  status          the daemon started by libdlotel (dlotel.start()): ports,\n"
            "                  attached processes, queues (--json for scripts)\n"
            "  stop            stop that daemon; it drains its queues first\n"
            "  serve           run the stand-alone sink and its query API\n"
            "  version         print the version\n"
            "  help            print this help\n\n"
            "options of agent and config:\n"
            "  %-34s %s\n"
            "  %-34s %s\n"
            "  %-34s %s\n"
            "  %-34s %s\n"
            "  %-34s %s\n"
            "  %-34s %s\n"
            "  %-34s %s\n"
            "  %-34s %s\n",
            "--config FILE", "YAML configuration (else $DATALAYER_OTEL_CONFIG)", "--set KEY=VALUE",
            "set any key, e.g. --set exporters.up.compression=zstd", "--ready-file PATH",
            "agent: once listening, write {pid, grpc_port, http_port, admin_port}",
            "--exporter debug|file", "add a debug or file exporter (repeatable)",
            "--file-path PATH", "the file exporter's output (exporters.file.path)",
            "--debug-verbosity summary|detailed", "the debug exporter's output",
            "--runtime-dir DIR", "agent: accept processes on DIR/dlotel.sock (libdlotel)",
            "--exit-when-unused DURATION|off",
            "agent, with --runtime-dir: drain and exit once no process is attached");
    size_t n;
    const struct config_flag_info *flags = config_flags(&n);
    for (size_t i = 0; i < n; i++) {
        char left[64];
        if (flags[i].is_bool) {
            snprintf(left, sizeof(left), "%s[=true|false]", flags[i].flag);
        } else {
            snprintf(left, sizeof(left), "%s %s", flags[i].flag, flags[i].value);
        }
        fprintf(f, "  %-34s %s\n", left, flags[i].doc);
    }
    fprintf(f, "\nEvery key, its environment variable and its default: docs/configuration.md.\n"
               "Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error.\n");
}

/* ---- parsing --------------------------------------------------------------------------------- */

/* The value of "--name=value" or of "--name value"; NULL (after a usage error) when missing. */
static const char *take_value(const char *arg, const char *eq, int *i, int argc, char **argv,
                              const char *what)
{
    if (eq != NULL) {
        return eq + 1;
    }
    if (*i + 1 < argc) {
        return argv[++*i];
    }
    size_t name_len = strlen(arg);
    cli_usage_error("%.*s needs a value: %s", (int)name_len, arg, what);
    return NULL;
}

static bool is(const char *arg, size_t len, const char *name)
{
    return strlen(name) == len && strncmp(arg, name, len) == 0;
}

int cli_parse_args(struct cli_args *a, enum cli_command cmd, int argc, char **argv)
{
    memset(a, 0, sizeof(*a));
    a->ready_fd = -1;
    a->exit_when_unused_ns = -1;
    const char *cmd_name = cmd == CLI_AGENT ? "dlotel agent" : "dlotel config";
    bool want_debug = false, want_file = false;
    const char *file_path = NULL, *verbosity = NULL;
    /* The conveniences go first, so that an explicit --set of the same key wins. */
    struct config_setting *later = NULL;
    size_t n_later = 0, cap_later = 0;
    int rc = EXIT_USAGE;

    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            cli_print_help(stdout);
            rc = 1;
            goto out;
        }
        if (strncmp(arg, "--", 2) != 0) {
            cli_usage_error("unexpected argument '%s' for '%s'", arg, cmd_name);
            goto out;
        }
        const char *eq = strchr(arg, '=');
        size_t name_len = eq != NULL ? (size_t)(eq - arg) : strlen(arg);
        const char *v;
        if (is(arg, name_len, "--config")) {
            if ((v = take_value(arg, eq, &i, argc, argv, "FILE")) == NULL) {
                goto out;
            }
            a->config_file = v;
        } else if (is(arg, name_len, "--set")) {
            if ((v = take_value(arg, eq, &i, argc, argv, "KEY=VALUE")) == NULL) {
                goto out;
            }
            const char *veq = strchr(v, '=');
            if (veq == NULL || veq == v) {
                cli_usage_error("--set needs KEY=VALUE, got '%s'", v);
                goto out;
            }
            char *key = own(a, v, (size_t)(veq - v));
            if (key == NULL) {
                goto nomem;
            }
            if (grow((void **)&later, &cap_later, n_later + 1, sizeof(*later)) != 0) {
                goto nomem;
            }
            later[n_later++] = (struct config_setting){key, veq + 1};
        } else if (cmd == CLI_AGENT && is(arg, name_len, "--ready-file")) {
            if ((v = take_value(arg, eq, &i, argc, argv, "PATH")) == NULL) {
                goto out;
            }
            if (v[0] == '\0') {
                cli_usage_error("--ready-file needs a path");
                goto out;
            }
            a->ready_file = v;
        } else if (cmd == CLI_AGENT && is(arg, name_len, "--runtime-dir")) {
            if ((v = take_value(arg, eq, &i, argc, argv, "DIR")) == NULL) {
                goto out;
            }
            if (v[0] != '/') {
                cli_usage_error("--runtime-dir needs an absolute path");
                goto out;
            }
            a->runtime_dir = v;
        } else if (cmd == CLI_AGENT && is(arg, name_len, "--ready-fd")) {
            if ((v = take_value(arg, eq, &i, argc, argv, "N")) == NULL) {
                goto out;
            }
            char *end;
            long fd = strtol(v, &end, 10);
            if (end == v || *end != '\0' || fd < 3 || fd > 1024) {
                cli_usage_error("--ready-fd needs a descriptor number from 3 to 1024, got '%s'", v);
                goto out;
            }
            a->ready_fd = (int)fd;
        } else if (cmd == CLI_AGENT && is(arg, name_len, "--daemonize") && eq == NULL) {
            a->daemonize = true;
        } else if (cmd == CLI_AGENT && is(arg, name_len, "--exit-when-unused")) {
            if ((v = take_value(arg, eq, &i, argc, argv, "DURATION|off")) == NULL) {
                goto out;
            }
            uint64_t ns;
            if (strcmp(v, "off") == 0) {
                a->exit_when_unused_ns = -1;
            } else if (config_parse_duration(v, false, &ns) == 0 && ns <= INT64_MAX) {
                a->exit_when_unused_ns = (int64_t)ns;
            } else {
                cli_usage_error("--exit-when-unused needs a duration (\"30s\") or off, got '%s'",
                                v);
                goto out;
            }
        } else if (cmd == CLI_CONFIG && is(arg, name_len, "--print") && eq == NULL) {
            a->print = true;
        } else if (cmd == CLI_CONFIG && is(arg, name_len, "--check") && eq == NULL) {
            a->check = true;
        } else if (is(arg, name_len, "--exporter")) {
            if ((v = take_value(arg, eq, &i, argc, argv, "debug|file")) == NULL) {
                goto out;
            }
            if (strcmp(v, "debug") == 0) {
                want_debug = true;
            } else if (strcmp(v, "file") == 0) {
                want_file = true;
            } else {
                cli_usage_error("invalid value '%s' for --exporter: expected debug or file (other "
                                "exporters: --set exporters.NAME.type=otlp_http ...)",
                                v);
                goto out;
            }
        } else if (is(arg, name_len, "--file-path")) {
            if ((v = take_value(arg, eq, &i, argc, argv, "PATH")) == NULL) {
                goto out;
            }
            file_path = v;
        } else if (is(arg, name_len, "--debug-verbosity")) {
            if ((v = take_value(arg, eq, &i, argc, argv, "summary|detailed")) == NULL) {
                goto out;
            }
            verbosity = v;
        } else {
            const struct config_flag_info *fl = config_flag_find(arg);
            if (fl == NULL) {
                cli_usage_error("unknown option '%.*s' for '%s'", (int)name_len, arg, cmd_name);
                goto out;
            }
            if (fl->is_bool && eq == NULL) {
                v = "true";
            } else if ((v = take_value(arg, eq, &i, argc, argv, fl->value)) == NULL) {
                goto out;
            }
            if (grow((void **)&later, &cap_later, n_later + 1, sizeof(*later)) != 0) {
                goto nomem;
            }
            later[n_later++] = (struct config_setting){fl->flag, v};
        }
    }

    if (want_debug) {
        if (add_setting(a, "exporters.debug.type", "debug") != 0 ||
            (verbosity != NULL && add_setting(a, "exporters.debug.verbosity", verbosity) != 0)) {
            goto nomem;
        }
    } else if (verbosity != NULL) {
        add_warning(a, "--debug-verbosity is ignored without --exporter debug");
    }
    if (want_file) {
        if (file_path == NULL) {
            cli_usage_error("--exporter file needs --file-path PATH");
            goto out;
        }
        if (file_path[0] == '\0') {
            cli_usage_error("--file-path needs a path");
            goto out;
        }
        if (add_setting(a, "exporters.file.type", "file") != 0 ||
            add_setting(a, "exporters.file.path", file_path) != 0) {
            goto nomem;
        }
    } else if (file_path != NULL) {
        add_warning(a, "--file-path is ignored without --exporter file");
    }
    for (size_t k = 0; k < n_later; k++) {
        if (add_setting(a, later[k].key, later[k].value) != 0) {
            goto nomem;
        }
    }
    if (cmd == CLI_CONFIG && !a->print && !a->check) {
        cli_usage_error("'dlotel config' needs --print or --check");
        goto out;
    }
    rc = 0;
    goto out;

nomem:
    fprintf(stderr, "dlotel: out of memory\n");
    rc = EXIT_RUNTIME;
out:
    free(later);
    return rc;
}

int cli_build_config(const struct cli_args *a, struct config **out)
{
    for (size_t i = 0; i < a->n_warnings; i++) {
        fprintf(stderr, "warning: %s\n", a->warnings[i]);
    }
    struct config_errors errs;
    config_errors_init(&errs);
    struct config *cfg = NULL;
    int rv = config_build(&cfg, a->config_file, NULL, a->settings, a->n_settings, &errs);
    struct buf text;
    buf_init(&text, 1 << 20);
    if (config_errors_format(&errs, &text, true) == 0 && text.len > 0) {
        fwrite(text.data, 1, text.len, stderr);
    }
    buf_cleanup(&text);
    if (rv != 0 && errs.n_errors == 0) {
        /* A failure the list does not hold (out of memory): say something all the same. */
        fprintf(stderr, "error: cannot build the configuration: %s\n", dlotel_strerror(rv));
    }
    size_t n_errors = errs.n_errors + errs.dropped;
    config_errors_cleanup(&errs);
    if (rv != 0) {
        fprintf(stderr, "dlotel: invalid configuration (%zu problem%s); nothing was started\n",
                n_errors, n_errors == 1 ? "" : "s");
        return EXIT_USAGE;
    }
    *out = cfg;
    return 0;
}

/* ---- endpoints ------------------------------------------------------------------------------- */

int cli_endpoint_parse(const char *text, struct cli_endpoint *out, const char **why)
{
    const char *s = text;
    size_t len = strlen(s);
    if (len >= 7 && strncasecmp(s, "http://", 7) == 0) {
        s += 7;
        len -= 7;
    } else if (strstr(s, "://") != NULL) {
        *why = "only http:// endpoints are supported";
        return -1;
    }
    if (len > 0 && s[len - 1] == '/') {
        len--;
    }
    const char *host;
    size_t host_len;
    const char *port;
    if (len > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (close == NULL || close + 1 >= s + len || close[1] != ':') {
            *why = "expected [IPv6]:PORT";
            return -1;
        }
        host = s + 1;
        host_len = (size_t)(close - host);
        port = close + 2;
    } else {
        const char *colon = NULL;
        for (size_t i = 0; i < len; i++) {
            if (s[i] == ':') {
                if (colon != NULL) {
                    *why = "write an IPv6 address in brackets: [::1]:PORT";
                    return -1;
                }
                colon = s + i;
            }
        }
        if (colon == NULL) {
            *why = "expected HOST:PORT";
            return -1;
        }
        host = s;
        host_len = (size_t)(colon - s);
        port = colon + 1;
    }
    size_t port_len = (size_t)(s + len - port);
    if (host_len == 0) {
        *why = "missing host (use 0.0.0.0 or [::] for every address)";
        return -1;
    }
    if (host_len >= CLI_HOST_MAX) {
        *why = "host name too long";
        return -1;
    }
    if (port_len == 0 || port_len > 5) {
        *why = "expected a port number from 0 to 65535";
        return -1;
    }
    unsigned long p = 0;
    for (size_t i = 0; i < port_len; i++) {
        if (port[i] < '0' || port[i] > '9') {
            *why = "expected a port number from 0 to 65535";
            return -1;
        }
        p = p * 10 + (unsigned long)(port[i] - '0');
    }
    if (p > 65535) {
        *why = "expected a port number from 0 to 65535";
        return -1;
    }
    memcpy(out->host, host, host_len);
    out->host[host_len] = '\0';
    out->port = (uint16_t)p;
    return 0;
}

void cli_endpoint_format(char *out, size_t outlen, const char *host, uint16_t port)
{
    bool v6 = strchr(host, ':') != NULL;
    snprintf(out, outlen, "%s%s%s:%u", v6 ? "[" : "", host, v6 ? "]" : "", (unsigned)port);
}

int cli_mkdir_p(const char *path)
{
    char tmp[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(tmp)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(tmp, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (tmp[i] == '/' || tmp[i] == '\0') {
            char c = tmp[i];
            tmp[i] = '\0';
            if (mkdir(tmp, 0700) != 0 && errno != EEXIST) {
                return -1;
            }
            tmp[i] = c;
        }
    }
    return 0;
}
