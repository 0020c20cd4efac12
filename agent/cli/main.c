/*
 * The `dlotel` command: argv in, calls into the rooms.
 *
 *   dlotel agent   [options]            the forwarding daemon, in the foreground (agent_cmd.c)
 *   dlotel config  --print|--check [options]
 *   dlotel status | stop                the daemon libdlotel started (agent/launcher)
 *   dlotel serve                        the stand-alone sink (receivers + DuckDB store)
 *   dlotel traces [ID] | logs | metrics [NAME] | query SQL | services | stats | flush
 *   dlotel smoke-test                   clients of a sink's query API (client*.c)
 *   dlotel version | help
 *
 * Options are the same for agent and config (cli_args.c), so `dlotel config --print` with the
 * arguments of a failing `dlotel agent` shows exactly what that agent would run with.
 *
 * Exit codes scripts can trust: 0 success (and a clean stop on SIGTERM/SIGINT), 1 a runtime
 * failure (a port is taken, a file cannot be opened, a forced stop), 2 a usage or configuration
 * error (unknown flag, bad value, invalid configuration). The client commands add 3 (cannot
 * connect to the API) and 4 (the API refused the token), see client.h.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "core/buf.h"
#include "dlotel.h"
#include "launcher/control_cmd.h"

/* `dlotel config --print | --check`. */
static int cmd_config(int argc, char **argv)
{
    struct cli_args a;
    int rc = cli_parse_args(&a, CLI_CONFIG, argc, argv);
    if (rc != 0) {
        cli_args_cleanup(&a);
        return rc == 1 ? 0 : rc;
    }
    struct config *cfg = NULL;
    rc = cli_build_config(&a, &cfg);
    if (rc != 0) {
        cli_args_cleanup(&a);
        return rc;
    }
    if (a.print) {
        struct buf out;
        buf_init(&out, 16u << 20);
        /* Masked, always: this output ends up in bug reports and chat windows. */
        if (config_print(cfg, &out, true) != 0) {
            fprintf(stderr, "dlotel: cannot print the configuration: out of memory\n");
            rc = 1;
        } else if (fwrite(out.data, 1, out.len, stdout) != out.len || fflush(stdout) != 0) {
            rc = 1;
        }
        buf_cleanup(&out);
    }
    if (a.check && rc == 0) {
        /* Problems went to stderr already; a clean result says so on stderr too. */
        fprintf(stderr, "dlotel: configuration OK (%zu exporter%s)%s\n", cfg->n_exporters,
                cfg->n_exporters == 1 ? "" : "s", cfg->enabled ? "" : "; the agent is disabled");
    }
    config_free(cfg);
    cli_args_cleanup(&a);
    return rc;
}

static int cmd_agent(int argc, char **argv)
{
    struct cli_args a;
    int rc = cli_parse_args(&a, CLI_AGENT, argc, argv);
    if (rc == 0) {
        rc = cli_agent_main(&a);
    } else if (rc == 1) {
        rc = 0; /* --help */
    }
    cli_args_cleanup(&a);
    return rc;
}

/*
 * `dlotel serve`: the stand-alone sink. The same daemon as `dlotel agent`, with the sink on:
 * receivers plus the DuckDB store, and nothing else unless the configuration also names
 * upstream exporters. Every flag of `dlotel agent` works here too.
 */
static int cmd_serve(int argc, char **argv)
{
    struct cli_args a;
    int rc = cli_parse_args(&a, CLI_AGENT, argc, argv);
    if (rc == 0) {
        rc = cli_args_add_setting(&a, "sink.enabled", "true");
        if (rc == 0) {
            rc = cli_agent_main(&a);
        }
    } else if (rc == 1) {
        rc = 0; /* --help */
    }
    cli_args_cleanup(&a);
    return rc;
}

/* `dlotel help`: the agent's commands and options (cli_args.c), then the client commands. */
static void print_help(FILE *f)
{
    cli_print_help(f);
    fputc('\n', f);
    client_print_help(f);
}

static const struct {
    const char *name;
    enum client_cmd cmd;
} client_cmds[] = {
    {"traces", CLIENT_TRACES}, {"logs", CLIENT_LOGS},         {"metrics", CLIENT_METRICS},
    {"query", CLIENT_QUERY},   {"services", CLIENT_SERVICES}, {"stats", CLIENT_STATS},
    {"flush", CLIENT_FLUSH},   {"smoke-test", CLIENT_SMOKE},
};

int main(int argc, char **argv)
{
    if (argc < 2) {
        print_help(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    for (size_t i = 0; i < sizeof(client_cmds) / sizeof(client_cmds[0]); i++) {
        if (strcmp(cmd, client_cmds[i].name) == 0) {
            return client_main(client_cmds[i].cmd, argc - 2, argv + 2);
        }
    }
    if (strcmp(cmd, "agent") == 0) {
        return cmd_agent(argc - 2, argv + 2);
    }
    if (strcmp(cmd, "config") == 0) {
        return cmd_config(argc - 2, argv + 2);
    }
    if (strcmp(cmd, "status") == 0) {
        return control_cmd_status(argc - 2, argv + 2);
    }
    if (strcmp(cmd, "stop") == 0) {
        return control_cmd_stop(argc - 2, argv + 2);
    }
    if (strcmp(cmd, "serve") == 0) {
        return cmd_serve(argc - 2, argv + 2);
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("dlotel %s\n", DLOTEL_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        print_help(stdout);
        return 0;
    }
    cli_usage_error("unknown command '%s'", cmd);
    return EXIT_USAGE;
}
