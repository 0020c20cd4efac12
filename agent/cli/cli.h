/*
 * What the files of the `dlotel` command share: exit codes, the argument parser that turns argv
 * into config settings, host:port parsing, and the subcommands.
 */
#ifndef DLOTEL_CLI_H
#define DLOTEL_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "config/config.h"

/* Exit codes scripts can trust (docs/cli.md). */
#define EXIT_RUNTIME 1 /* A port is taken, a file cannot be opened, a forced stop. */
#define EXIT_USAGE   2 /* An unknown flag, a bad value, an invalid configuration. */

#define CLI_HOST_MAX 256

/* What a command line asks for, beyond the configuration settings. */
enum cli_command {
    CLI_AGENT,
    CLI_CONFIG,
};

/*
 * The parsed command line of `dlotel agent` or `dlotel config`. Strings point into argv or into
 * |owned|; free with cli_args_cleanup().
 */
struct cli_args {
    const char *config_file; /* --config FILE; NULL: $DATALAYER_OTEL_CONFIG or none. */
    const char *ready_file;  /* --ready-file PATH (agent). */
    /* Launched by libdlotel (agent/launcher): the control socket's directory, the descriptor the
     * "ready" line goes to (-1: none), fork into the background first, and the idle exit. */
    const char *runtime_dir;         /* --runtime-dir DIR */
    int ready_fd;                    /* --ready-fd N */
    bool daemonize;                  /* --daemonize */
    int64_t exit_when_unused_ns;     /* --exit-when-unused DURATION|off; -1: off */
    bool print;                      /* config --print */
    bool check;                      /* config --check */
    struct config_setting *settings; /* Table flags, --set pairs, conveniences; in argv order. */
    size_t n_settings;
    size_t cap_settings;
    char **owned; /* Strings made while parsing (keys and values split from "--set k=v"). */
    size_t n_owned;
    size_t cap_owned;
    /* Notes for the user that do not stop the command ("--file-path without --exporter file"). */
    char *warnings[8];
    size_t n_warnings;
};

/*
 * Parses |argv| (after the command name) for |cmd|. Accepts "--flag value" and "--flag=value";
 * a boolean table flag alone means true. Returns 0, 1 when --help was printed to stdout, or
 * EXIT_USAGE after printing a usage error to stderr. |a| must be cleaned up either way.
 */
int cli_parse_args(struct cli_args *a, enum cli_command cmd, int argc, char **argv);

void cli_args_cleanup(struct cli_args *a);

/*
 * Appends one setting after those from argv, so it wins over them (`dlotel serve` turns the sink
 * on this way). |key| and |value| are borrowed and must outlive |a|. Returns 0, or EXIT_RUNTIME
 * when memory runs out.
 */
int cli_args_add_setting(struct cli_args *a, const char *key, const char *value);

/*
 * Builds the finalized configuration from |a| (config_build with the process environment),
 * printing warnings to stderr, and errors too on failure. Returns 0 and sets |*out|, or
 * EXIT_USAGE.
 */
int cli_build_config(const struct cli_args *a, struct config **out);

/* Prints the usage of every command, and the table's flags, to |f|. */
void cli_print_help(FILE *f);

/* Prints "dlotel: <message> (see dlotel help)" to stderr. */
void cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

struct cli_endpoint {
    char host[CLI_HOST_MAX];
    uint16_t port;
};

/*
 * Parses HOST:PORT or [IPv6]:PORT, with an optional http:// in front and a / behind. Returns 0,
 * or -1 with a reason in |why|.
 */
int cli_endpoint_parse(const char *text, struct cli_endpoint *out, const char **why);

/* Writes HOST:PORT, bracketing an IPv6 literal, for messages. */
void cli_endpoint_format(char *out, size_t outlen, const char *host, uint16_t port);

/* mkdir -p |path|, mode 0700 for what it creates. Returns 0 or -1 with errno set. */
int cli_mkdir_p(const char *path);

/* `dlotel agent`: runs the agent in the foreground until SIGTERM or SIGINT. Returns the exit code.
 */
int cli_agent_main(const struct cli_args *a);

#endif
