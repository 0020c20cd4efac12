/*
 * `dlotel status` and `dlotel stop`: the command line's view of the daemon that libdlotel
 * started for this user, over its control socket (control.h). The cli room dispatches to these.
 *
 * Exit codes, as for every dlotel command: 0 success, 1 runtime failure (no daemon runs, it did
 * not stop in time), 2 usage error.
 */
#include "launcher/control_cmd.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "config/config.h"
#include "core/timeutil.h"
#include "dlotel.h"
#include "launcher/control.h"

#define EXIT_RUNTIME 1
#define EXIT_USAGE   2

struct cmd_args {
    const char *runtime_dir;
    bool json;
    uint64_t timeout_ns;
};

/* Returns 0, EXIT_USAGE, or -1 after printing --help. */
static int parse(const char *cmd, int argc, char **argv, struct cmd_args *a)
{
    memset(a, 0, sizeof(*a));
    a->timeout_ns = 30ull * 1000000000ull;
    bool is_status = strcmp(cmd, "status") == 0;
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (is_status && strcmp(arg, "--json") == 0) {
            a->json = true;
        } else if (strcmp(arg, "--runtime-dir") == 0 && i + 1 < argc) {
            a->runtime_dir = argv[++i];
        } else if (strncmp(arg, "--runtime-dir=", 14) == 0) {
            a->runtime_dir = arg + 14;
        } else if (!is_status && strcmp(arg, "--timeout") == 0 && i + 1 < argc) {
            if (config_parse_duration(argv[++i], false, &a->timeout_ns) != 0) {
                fprintf(stderr, "dlotel: --timeout needs a duration (\"30s\"), got '%s'\n",
                        argv[i]);
                return EXIT_USAGE;
            }
        } else if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            printf("usage: dlotel %s [--runtime-dir DIR]%s\n", cmd,
                   is_status ? " [--json]" : " [--timeout DURATION]");
            return -1;
        } else {
            fprintf(stderr, "dlotel: unknown option '%s' for 'dlotel %s' (see dlotel help)\n", arg,
                    cmd);
            return EXIT_USAGE;
        }
    }
    return 0;
}

/* Connects to the daemon of the runtime directory. Returns 0 and |*fd|, or an exit code. */
static int connect_daemon(const struct cmd_args *a, char *dir, size_t dirlen, int *fd)
{
    char why[512];
    int rv = control_runtime_dir(dir, dirlen, a->runtime_dir, NULL, false, why, sizeof(why));
    if (rv == DLOTEL_ERR_NOT_FOUND) {
        fprintf(stderr, "dlotel: no dlotel daemon runs for this user (%s)\n", why);
        return EXIT_RUNTIME;
    }
    if (rv != 0) {
        fprintf(stderr, "dlotel: %s\n", why);
        return EXIT_RUNTIME;
    }
    char sock[CONTROL_PATH_MAX];
    control_path(sock, sizeof(sock), dir, CONTROL_SOCKET_NAME);
    rv = control_client_connect(sock, fd);
    if (rv != 0) {
        fprintf(stderr, "dlotel: no dlotel daemon answers on %s%s\n", sock,
                rv == DLOTEL_ERR_NOT_FOUND ? "" : " (cannot connect)");
        return EXIT_RUNTIME;
    }
    return 0;
}

static int64_t jint(json_t *o, const char *key)
{
    return json_integer_value(json_object_get(o, key));
}

/* The status for people: what runs, who uses it, how the data is doing. */
static void print_status(json_t *st)
{
    int64_t up_s = jint(st, "uptime_ms") / 1000;
    printf("dlotel %s daemon, pid %" PRId64 ", up %" PRId64 "h%02" PRId64 "m%02" PRId64 "s\n",
           json_string_value(json_object_get(st, "version")), jint(st, "pid"), up_s / 3600,
           up_s / 60 % 60, up_s % 60);
    printf("runtime directory:  %s\n", json_string_value(json_object_get(st, "runtime_dir")));
    printf("listening:          otlp_grpc port %" PRId64 ", otlp_http port %" PRId64 "\n",
           jint(st, "grpc_port"), jint(st, "http_port"));
    if (jint(st, "api_port") > 0) {
        printf("query API:          http://localhost:%" PRId64 "/api/otel/v1\n",
               jint(st, "api_port"));
    }
    printf("processes attached: %" PRId64, jint(st, "users"));
    json_t *clients = json_object_get(st, "clients");
    size_t i;
    json_t *v;
    json_array_foreach(clients, i, v)
    {
        printf("%s%" PRId64, i == 0 ? " (pids " : ", ", (int64_t)json_integer_value(v));
    }
    printf("%s\n", json_array_size(clients) > 0 ? ")" : "");
    int64_t exit_ms = jint(st, "exit_when_unused_ms");
    if (exit_ms >= 0) {
        printf("exits when unused:  after %" PRId64 " ms\n", exit_ms);
    }
    printf("items:              %" PRId64 " accepted, %" PRId64 " sent, %" PRId64
           " queued, %" PRId64 " dropped, %" PRId64 " refused\n",
           jint(st, "accepted_items"), jint(st, "sent_items"), jint(st, "queue_items"),
           jint(st, "dropped_items"), jint(st, "refused_items"));
    json_t *reach = json_object_get(st, "upstream_reachable");
    printf("upstream:           %s\n", json_is_true(reach)    ? "reachable"
                                       : json_is_false(reach) ? "unreachable"
                                                              : "no export yet");
    json_t *le = json_object_get(st, "last_export_error");
    if (json_is_object(le)) {
        printf("last export error:  %s/%s: %s\n",
               json_string_value(json_object_get(le, "exporter")),
               json_string_value(json_object_get(le, "signal")),
               json_string_value(json_object_get(le, "message")));
    }
}

int control_cmd_status(int argc, char **argv)
{
    struct cmd_args a;
    int rc = parse("status", argc, argv, &a);
    if (rc != 0) {
        return rc < 0 ? 0 : rc;
    }
    char dir[CONTROL_PATH_MAX];
    int fd;
    rc = connect_daemon(&a, dir, sizeof(dir), &fd);
    if (rc != 0) {
        return rc;
    }
    struct control_request req = {.op = CONTROL_OP_STATUS};
    struct control_reply rep;
    int rv = control_client_call(fd, &req, 10000, &rep);
    close(fd);
    if (rv != 0) {
        fprintf(stderr, "dlotel: the daemon did not answer: %s\n", dlotel_strerror(rv));
        return EXIT_RUNTIME;
    }
    if (!rep.ok) {
        fprintf(stderr, "dlotel: %s\n", rep.error);
        control_reply_cleanup(&rep);
        return EXIT_RUNTIME;
    }
    json_t *st = json_object_get((json_t *)rep.json, "status");
    if (a.json) {
        json_dumpf(st, stdout, JSON_INDENT(2));
        putchar('\n');
    } else {
        print_status(st);
    }
    control_reply_cleanup(&rep);
    return fflush(stdout) == 0 ? 0 : EXIT_RUNTIME;
}

int control_cmd_stop(int argc, char **argv)
{
    struct cmd_args a;
    int rc = parse("stop", argc, argv, &a);
    if (rc != 0) {
        return rc < 0 ? 0 : rc;
    }
    char dir[CONTROL_PATH_MAX];
    int fd;
    rc = connect_daemon(&a, dir, sizeof(dir), &fd);
    if (rc != 0) {
        return rc;
    }
    uint64_t deadline = time_monotonic_nano() + a.timeout_ns;
    struct control_request req = {.op = CONTROL_OP_STOP};
    struct control_reply rep;
    int rv = control_client_call(fd, &req, 10000, &rep);
    if (rv != 0 || !rep.ok) {
        fprintf(stderr, "dlotel: the daemon refused to stop: %s\n",
                rv != 0 ? dlotel_strerror(rv) : rep.error);
        if (rv == 0) {
            control_reply_cleanup(&rep);
        }
        close(fd);
        return EXIT_RUNTIME;
    }
    control_reply_cleanup(&rep);
    /* The daemon drains, then closes every connection, then exits, releasing its lock. */
    uint64_t now = time_monotonic_nano();
    control_client_wait_closed(fd, now < deadline ? (int)((deadline - now) / 1000000u) : 0);
    close(fd);
    for (;;) {
        pid_t pid;
        if (control_lock_probe(dir, &pid) <= 0) {
            printf("dlotel: stopped\n");
            return 0;
        }
        if (time_monotonic_nano() >= deadline) {
            fprintf(stderr, "dlotel: the daemon (pid %ld) is still running after the timeout\n",
                    (long)pid);
            return EXIT_RUNTIME;
        }
        struct timespec ts = {0, 20000000};
        nanosleep(&ts, NULL);
    }
}
