/*
 * The `dlotel` command: argv in, calls into the rooms. For now: `dlotel agent` (the receiving
 * daemon, in the foreground), `dlotel version` and `dlotel help`.
 *
 * Exit codes scripts can trust: 0 success (and a clean stop on SIGTERM/SIGINT), 1 a runtime
 * failure (a port is taken, a file cannot be opened), 2 a usage error (unknown flag, bad value).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <uv.h>

#include "core/log.h"
#include "dlotel.h"
#include "exporter/exporter.h"
#include "pipeline/pipeline.h"
#include "receiver/receiver.h"

#define EXIT_RUNTIME 1
#define EXIT_USAGE   2

#define HOST_MAX 256

struct endpoint {
    char host[HOST_MAX];
    uint16_t port;
};

/*
 * Everything `dlotel agent` can be told. The YAML config (a later issue) fills the same struct,
 * so only agent_parse_args() below is replaced when it comes.
 */
struct agent_options {
    const char *grpc_endpoint;
    const char *http_endpoint;
    bool exporter_debug;
    bool exporter_file;
    bool exporters_given; /* An --exporter flag replaces the default (debug). */
    const char *file_path;
    enum debug_verbosity verbosity;
    const char *ready_file;
    enum log_level log_level;
};

static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("dlotel: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs(" (see dlotel --help)\n", stderr);
    va_end(ap);
}

/*
 * Parses HOST:PORT, [IPv6]:PORT, each with an optional http:// in front and a / behind, as the
 * OpenTelemetry Collector's endpoint settings read. Port 0 asks for a free port. Returns 0, or -1
 * with a reason in |why|.
 */
static int endpoint_parse(const char *text, struct endpoint *out, const char **why)
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
    if (host_len >= HOST_MAX) {
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

/* Writes HOST:PORT, bracketing an IPv6 literal, for messages. */
static void endpoint_format(char *out, size_t outlen, const char *host, uint16_t port)
{
    bool v6 = strchr(host, ':') != NULL;
    snprintf(out, outlen, "%s%s%s:%u", v6 ? "[" : "", host, v6 ? "]" : "", (unsigned)port);
}

/* ---- argument table ---------------------------------------------------------------------- */

static int set_grpc(struct agent_options *o, const char *v)
{
    o->grpc_endpoint = v;
    return 0;
}

static int set_http(struct agent_options *o, const char *v)
{
    o->http_endpoint = v;
    return 0;
}

static int set_exporter(struct agent_options *o, const char *v)
{
    if (!o->exporters_given) {
        o->exporters_given = true;
        o->exporter_debug = false;
        o->exporter_file = false;
    }
    if (strcmp(v, "debug") == 0) {
        o->exporter_debug = true;
    } else if (strcmp(v, "file") == 0) {
        o->exporter_file = true;
    } else {
        return -1;
    }
    return 0;
}

static int set_file_path(struct agent_options *o, const char *v)
{
    if (v[0] == '\0') {
        return -1;
    }
    o->file_path = v;
    return 0;
}

static int set_verbosity(struct agent_options *o, const char *v)
{
    if (strcmp(v, "summary") == 0) {
        o->verbosity = DEBUG_SUMMARY;
    } else if (strcmp(v, "detailed") == 0) {
        o->verbosity = DEBUG_DETAILED;
    } else {
        return -1;
    }
    return 0;
}

static int set_ready_file(struct agent_options *o, const char *v)
{
    if (v[0] == '\0') {
        return -1;
    }
    o->ready_file = v;
    return 0;
}

static int set_log_level(struct agent_options *o, const char *v)
{
    return log_level_parse(v, &o->log_level) == 0 ? 0 : -1;
}

static const struct agent_flag {
    const char *name;
    const char *value; /* What the value looks like, for --help and errors. */
    const char *help;
    int (*set)(struct agent_options *o, const char *value);
} agent_flags[] = {
    {"--grpc-endpoint", "HOST:PORT", "OTLP/gRPC listen address (default localhost:4317)", set_grpc},
    {"--http-endpoint", "HOST:PORT", "OTLP/HTTP listen address (default localhost:4318)", set_http},
    {"--exporter", "debug|file", "where requests go; repeat for several (default debug)",
     set_exporter},
    {"--file-path", "PATH", "the file exporter's output: one OTLP/JSON line per request",
     set_file_path},
    {"--debug-verbosity", "summary|detailed", "the debug exporter's output (default summary)",
     set_verbosity},
    {"--ready-file", "PATH", "once listening, write {\"pid\",\"grpc_port\",\"http_port\"} here",
     set_ready_file},
    {"--log-level", "error|warn|info|debug", "most verbose level logged (default info)",
     set_log_level},
};
#define N_AGENT_FLAGS (sizeof(agent_flags) / sizeof(agent_flags[0]))

static void print_help(FILE *f)
{
    fprintf(f, "usage: dlotel <command> [options]\n\n"
               "commands:\n"
               "  agent     run the agent in the foreground: receive OTLP, export it\n"
               "  version   print the version\n"
               "  help      print this help\n\n"
               "dlotel agent options:\n");
    for (size_t i = 0; i < N_AGENT_FLAGS; i++) {
        char left[64];
        snprintf(left, sizeof(left), "%s %s", agent_flags[i].name, agent_flags[i].value);
        fprintf(f, "  %-40s %s\n", left, agent_flags[i].help);
    }
    fprintf(f, "\nenvironment:\n"
               "  DATALAYER_OTEL_AGENT_GRPC_ENDPOINT    like --grpc-endpoint (the flag wins)\n"
               "  DATALAYER_OTEL_AGENT_HTTP_ENDPOINT    like --http-endpoint (the flag wins)\n");
}

/*
 * Fills |o| from the environment and argv (after "agent"), flags winning over the environment.
 * Accepts "--flag value" and "--flag=value". Returns 0, 1 when help was printed, or -1 after
 * printing a usage error.
 */
static int agent_parse_args(struct agent_options *o, int argc, char **argv)
{
    *o = (struct agent_options){
        .grpc_endpoint = "localhost:4317",
        .http_endpoint = "localhost:4318",
        .exporter_debug = true,
        .verbosity = DEBUG_SUMMARY,
        .log_level = LOG_LEVEL_INFO,
    };
    const char *env = getenv("DATALAYER_OTEL_AGENT_GRPC_ENDPOINT");
    if (env != NULL && env[0] != '\0') {
        o->grpc_endpoint = env;
    }
    env = getenv("DATALAYER_OTEL_AGENT_HTTP_ENDPOINT");
    if (env != NULL && env[0] != '\0') {
        o->http_endpoint = env;
    }

    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            print_help(stdout);
            return 1;
        }
        const char *eq = strchr(arg, '=');
        size_t name_len = eq != NULL ? (size_t)(eq - arg) : strlen(arg);
        const struct agent_flag *flag = NULL;
        for (size_t k = 0; k < N_AGENT_FLAGS; k++) {
            if (strlen(agent_flags[k].name) == name_len &&
                strncmp(agent_flags[k].name, arg, name_len) == 0) {
                flag = &agent_flags[k];
                break;
            }
        }
        if (flag == NULL) {
            usage_error("unknown %s '%s' for 'dlotel agent'", arg[0] == '-' ? "option" : "argument",
                        arg);
            return -1;
        }
        const char *value;
        if (eq != NULL) {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            usage_error("%s needs a value: %s", flag->name, flag->value);
            return -1;
        }
        if (flag->set(o, value) != 0) {
            usage_error("invalid value '%s' for %s: expected %s", value, flag->name, flag->value);
            return -1;
        }
    }
    if (o->exporter_file && o->file_path == NULL) {
        usage_error("--exporter file needs --file-path PATH");
        return -1;
    }
    return 0;
}

/* ---- the agent ----------------------------------------------------------------------------- */

struct agent {
    uv_loop_t loop;
    uv_signal_t sigterm;
    uv_signal_t sigint;
    struct pipeline *pipeline;
    struct receiver *grpc;
    struct receiver *http;
    bool stopping;
};

/* Stops accepting; the loop then ends once libuv has closed every handle. */
static void agent_stop(struct agent *a)
{
    if (a->stopping) {
        return;
    }
    a->stopping = true;
    receiver_free(a->grpc);
    a->grpc = NULL;
    receiver_free(a->http);
    a->http = NULL;
    uv_close((uv_handle_t *)&a->sigterm, NULL);
    uv_close((uv_handle_t *)&a->sigint, NULL);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct agent *a = h->data;
    log_info("agent", "%s received: stopping", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    agent_stop(a);
}

/*
 * Writes the ready file atomically: a reader that sees PATH sees all of it. Returns 0 or -1 with
 * errno set.
 */
static int write_ready_file(const char *path, uint16_t grpc_port, uint16_t http_port)
{
    char tmp[4096];
    int w = snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    if (w < 0 || (size_t)w >= sizeof(tmp)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    char json[128];
    int n = snprintf(json, sizeof(json), "{\"pid\":%ld,\"grpc_port\":%u,\"http_port\":%u}\n",
                     (long)getpid(), (unsigned)grpc_port, (unsigned)http_port);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return -1;
    }
    ssize_t done = write(fd, json, (size_t)n);
    int saved = errno;
    if (close(fd) != 0 && done == n) {
        saved = errno;
        done = -1;
    }
    if (done != n) {
        unlink(tmp);
        errno = done < 0 ? saved : ENOSPC;
        return -1;
    }
    if (rename(tmp, path) != 0) {
        saved = errno;
        unlink(tmp);
        errno = saved;
        return -1;
    }
    return 0;
}

/* Attaches |e| to every signal; on failure the pipeline still frees what it took. */
static int attach_everywhere(struct pipeline *p, struct exporter *e)
{
    for (int s = 0; s < OTLP_SIGNAL_COUNT; s++) {
        int rc = pipeline_add_exporter(p, (enum otlp_signal)s, e);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

typedef int (*receiver_new_fn)(struct receiver **out, uv_loop_t *loop, const char *host,
                               uint16_t port, struct pipeline *p);

/* Starts one receiver, or says on stderr which address could not be bound and why. */
static int start_receiver(struct agent *a, struct receiver **out, receiver_new_fn fn,
                          const char *name, const struct endpoint *ep)
{
    int rc = fn(out, &a->loop, ep->host, ep->port, a->pipeline);
    if (rc != 0) {
        char where[HOST_MAX + 16];
        endpoint_format(where, sizeof(where), ep->host, ep->port);
        const char *why =
            rc == DLOTEL_ERR_INVALID_ARG ? "cannot resolve the host" : dlotel_strerror(rc);
        fprintf(stderr, "dlotel: cannot listen on %s (%s): %s\n", where, name, why);
    }
    return rc;
}

/* Closes whatever handles are still open (only after a failed start) so the loop can close. */
static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) {
        uv_close(h, NULL);
    }
}

static int cmd_agent(int argc, char **argv)
{
    struct agent_options o;
    int prc = agent_parse_args(&o, argc, argv);
    if (prc != 0) {
        return prc > 0 ? 0 : EXIT_USAGE;
    }
    log_set_level(o.log_level);

    struct endpoint grpc_ep, http_ep;
    const char *why = NULL;
    if (endpoint_parse(o.grpc_endpoint, &grpc_ep, &why) != 0) {
        usage_error("invalid gRPC endpoint '%s': %s", o.grpc_endpoint, why);
        return EXIT_USAGE;
    }
    if (endpoint_parse(o.http_endpoint, &http_ep, &why) != 0) {
        usage_error("invalid HTTP endpoint '%s': %s", o.http_endpoint, why);
        return EXIT_USAGE;
    }
    if (o.file_path != NULL && !o.exporter_file) {
        log_warn("agent", "--file-path is ignored without --exporter file");
    }

    /* A client that goes away mid-response must not kill the agent. */
    signal(SIGPIPE, SIG_IGN);

    int exit_code = EXIT_RUNTIME;
    struct agent a;
    memset(&a, 0, sizeof(a));
    if (uv_loop_init(&a.loop) != 0) {
        fprintf(stderr, "dlotel: cannot start the event loop\n");
        return EXIT_RUNTIME;
    }
    if (pipeline_new(&a.pipeline) != 0) {
        fprintf(stderr, "dlotel: out of memory\n");
        goto out_loop;
    }
    if (o.exporter_debug) {
        struct exporter *e;
        if (exporter_debug_new(&e, o.verbosity) != 0 || attach_everywhere(a.pipeline, e) != 0) {
            fprintf(stderr, "dlotel: out of memory\n");
            goto out_pipeline;
        }
    }
    if (o.exporter_file) {
        struct exporter *e;
        int rc = exporter_file_new(&e, o.file_path);
        if (rc != 0) {
            fprintf(stderr, "dlotel: cannot open %s for the file exporter: %s\n", o.file_path,
                    rc == DLOTEL_ERR_IO ? strerror(errno) : dlotel_strerror(rc));
            goto out_pipeline;
        }
        if (attach_everywhere(a.pipeline, e) != 0) {
            fprintf(stderr, "dlotel: out of memory\n");
            goto out_pipeline;
        }
    }

    if (start_receiver(&a, &a.grpc, receiver_otlp_grpc_new, "otlp_grpc", &grpc_ep) != 0) {
        goto out_receivers;
    }
    if (start_receiver(&a, &a.http, receiver_otlp_http_new, "otlp_http", &http_ep) != 0) {
        goto out_receivers;
    }
    uint16_t grpc_port = receiver_port(a.grpc);
    uint16_t http_port = receiver_port(a.http);

    uv_signal_init(&a.loop, &a.sigterm);
    uv_signal_init(&a.loop, &a.sigint);
    a.sigterm.data = &a;
    a.sigint.data = &a;
    uv_signal_start(&a.sigterm, on_signal, SIGTERM);
    uv_signal_start(&a.sigint, on_signal, SIGINT);

    char gw[HOST_MAX + 16], hw[HOST_MAX + 16];
    endpoint_format(gw, sizeof(gw), grpc_ep.host, grpc_port);
    endpoint_format(hw, sizeof(hw), http_ep.host, http_port);
    log_info("agent", "dlotel %s listening: otlp_grpc on %s, otlp_http on %s; exporters:%s%s",
             DLOTEL_VERSION, gw, hw, o.exporter_debug ? " debug" : "",
             o.exporter_file ? " file" : "");

    if (o.ready_file != NULL && write_ready_file(o.ready_file, grpc_port, http_port) != 0) {
        fprintf(stderr, "dlotel: cannot write the ready file %s: %s\n", o.ready_file,
                strerror(errno));
        agent_stop(&a);
        uv_run(&a.loop, UV_RUN_DEFAULT);
        goto out_pipeline;
    }

    uv_run(&a.loop, UV_RUN_DEFAULT);
    pipeline_flush(a.pipeline);
    log_info("agent", "stopped");
    exit_code = 0;
    goto out_pipeline;

out_receivers:
    receiver_free(a.grpc);
    receiver_free(a.http);
    uv_walk(&a.loop, close_walk, NULL);
    uv_run(&a.loop, UV_RUN_DEFAULT);
out_pipeline:
    pipeline_free(a.pipeline);
out_loop:
    if (uv_loop_close(&a.loop) != 0) {
        uv_walk(&a.loop, close_walk, NULL);
        uv_run(&a.loop, UV_RUN_DEFAULT);
        uv_loop_close(&a.loop);
    }
    return exit_code;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        print_help(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "agent") == 0) {
        return cmd_agent(argc - 2, argv + 2);
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("dlotel %s\n", DLOTEL_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        print_help(stdout);
        return 0;
    }
    usage_error("unknown command '%s'", cmd);
    return EXIT_USAGE;
}
