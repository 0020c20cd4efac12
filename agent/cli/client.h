/*
 * The client commands of `dlotel` (DESIGN.md section 7): traces, logs, metrics, query, services,
 * stats, flush and smoke-test. They talk to a dlotel sink's query API (`dlotel serve`, or a
 * daemon with the sink on) over HTTP, the contract of docs/api (notes/api_contract.md), and print
 * tables for people or, with --json, the server's JSON unchanged for scripts.
 *
 * One file per concern:
 *   client_args.c   argv -> struct client_args; the base URL and token resolution
 *   client_http.c   one libcurl easy handle: requests, answers, exit codes for failures
 *   client_table.c  text tables sized to the terminal, cell formatting
 *   client_cmd.c    the read commands (traces, logs, metrics, query, services, stats, flush)
 *   client_smoke.c  smoke-test: OTLP in, every query path out
 */
#ifndef DLOTEL_CLI_CLIENT_H
#define DLOTEL_CLI_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "core/buf.h"

/* Exit codes beyond those of cli.h (0 ok, 1 failure, 2 usage), documented in docs/cli.md. */
#define EXIT_CONNECT 3 /* The API could not be reached at all (refused, unresolvable, timeout). */
#define EXIT_AUTH    4 /* The API refused the caller: 401 or 403. */

/* Where the API is when nothing says otherwise: `dlotel serve` on its default port. */
#define CLIENT_DEFAULT_URL "http://localhost:7800"
/* Appended to a URL that has no path (DATALAYER_RUN_URL is a platform base). */
#define CLIENT_API_PREFIX "/api/otel/v1"

#define CLIENT_MAX_PARAMS 16
/* The longest base URL accepted; a longer one is a usage error, not a truncation. */
#define CLIENT_URL_MAX 2048
/* The largest answer read from the server; the API caps rows at 10000, so this is generous. */
#define CLIENT_BODY_MAX (256u << 20)

enum client_cmd {
    CLIENT_TRACES,
    CLIENT_LOGS,
    CLIENT_METRICS,
    CLIENT_QUERY,
    CLIENT_SERVICES,
    CLIENT_STATS,
    CLIENT_FLUSH,
    CLIENT_SMOKE,
};

/*
 * One client command line. Strings point into argv (or are static); nothing to free. Unset
 * strings are NULL, unset numbers 0 with their has_ flag false.
 */
struct client_args {
    enum client_cmd cmd;
    const char *url;      /* --url */
    const char *token;    /* --token (else $DATALAYER_API_KEY); never printed */
    bool json;            /* --json */
    uint64_t timeout_ns;  /* --timeout: per request; smoke-test: the whole run. 0: default. */
    const char *service;  /* --service */
    const char *name;     /* --name (traces: root span name) */
    const char *status;   /* --status UNSET|OK|ERROR */
    const char *severity; /* --severity */
    const char *trace_id; /* --trace-id */
    const char *text;     /* --query (logs: substring of the body) */
    const char *start;    /* --start, as given (RFC 3339 or epoch) */
    const char *end;      /* --end */
    uint64_t since_ns;    /* --since DURATION: start = now - since */
    bool has_since;
    uint64_t min_duration_ns; /* --min-duration */
    bool has_min_duration;
    unsigned limit;                        /* --limit 1..10000; 0: the server's default */
    const char *step;                      /* --step (metrics NAME) */
    const char *agg;                       /* --agg avg|sum|min|max|count */
    const char *arg;                       /* the positional: traces ID, metrics NAME, query SQL */
    const char *params[CLIENT_MAX_PARAMS]; /* query --param VALUE, in order ($1, $2...) */
    size_t n_params;
};

/* The command's name as typed ("traces"), for messages. */
const char *client_cmd_name(enum client_cmd cmd);

/*
 * Parses |argv| (after the command name) for |cmd|. Flags are "--flag value" or "--flag=value".
 * Returns 0; 1 when --help was printed to stdout; EXIT_USAGE after a one-line usage error on
 * stderr.
 */
int client_parse_args(struct client_args *a, enum client_cmd cmd, int argc, char **argv);

/* Prints the usage of the client commands to |f| (a section of `dlotel help`). */
void client_print_help(FILE *f);

/*
 * The API's base URL: |flag| (--url), else |otel_url| ($DATALAYER_OTEL_URL), else |run_url|
 * ($DATALAYER_RUN_URL), else CLIENT_DEFAULT_URL; empty strings count as unset. "http://" is
 * assumed when no scheme is given; a URL with no path (or just "/") gets CLIENT_API_PREFIX;
 * trailing slashes are dropped. Writes the result (NUL terminated) to |out| of |outlen| bytes.
 * Returns 0, or -1 with a reason in |*why| (not http/https, a query or fragment, too long).
 */
int client_url_resolve(const char *flag, const char *otel_url, const char *run_url, char *out,
                       size_t outlen, const char **why);

/*
 * Appends "key=value" to the query string |q|, percent-encoding both (RFC 3986 unreserved
 * characters stay), with a '&' before it when |q| is not empty. Returns 0 or a buf error.
 */
int client_query_add(struct buf *q, const char *key, const char *value);

/* ---- HTTP (client_http.c) ------------------------------------------------------------------ */

struct client_http;

struct client_response {
    long status;     /* HTTP status; 0 before an answer */
    struct buf body; /* The answer's bytes, at most CLIENT_BODY_MAX */
};

/*
 * A client of the API at |base| (from client_url_resolve). |token| (may be NULL) is sent as
 * "Authorization: Bearer <token>" and kept only in libcurl's header list. |timeout_ms| bounds
 * each request. Returns 0, DLOTEL_ERR_NOMEM or DLOTEL_ERR_INTERNAL (libcurl would not start);
 * *out is untouched on failure.
 */
int client_http_new(struct client_http **out, const char *base, const char *token,
                    uint64_t timeout_ms);

void client_http_free(struct client_http *h);

/* With |quiet|, transport failures print nothing (the caller reports them). */
void client_http_set_quiet(struct client_http *h, bool quiet);

/* The base URL the client talks to. */
const char *client_http_base(const struct client_http *h);

/*
 * Sends |method| |base||path|[?|query|] with |body| (|len| bytes, |ctype|; NULL for none) and
 * reads the answer into |r| (initialised here; clean it with client_response_cleanup()).
 *
 * Returns 0 when the server answered, whatever the status; EXIT_CONNECT when no connection could
 * be made; EXIT_RUNTIME for any other transport failure (the answer was cut, passed
 * CLIENT_BODY_MAX, timed out). Failures print one line to stderr naming the URL.
 */
int client_http_request(struct client_http *h, const char *method, const char *path,
                        const char *query, const void *body, size_t len, const char *ctype,
                        struct client_response *r);

void client_response_cleanup(struct client_response *r);

/*
 * Turns a non-2xx answer into an exit code, printing one line to stderr: the server's
 * {"error": ...} sentence when there is one. 401/403 give EXIT_AUTH, anything else EXIT_RUNTIME.
 * Returns 0 for a 2xx answer (and prints nothing).
 */
int client_response_check(const struct client_http *h, const char *path,
                          const struct client_response *r);

/*
 * Parses a 2xx answer as a JSON object. Returns it (the caller owns a reference), or NULL after
 * printing why to stderr.
 */
json_t *client_response_json(const struct client_response *r);

/*
 * GET or POST |path| and check the answer: the shared path of every read command. With |json|,
 * the body is printed to stdout unchanged (also for an error answer, so that a script sees the
 * server's words) and |*out| is NULL; otherwise |*out| is the parsed object on success. Returns
 * 0 or an exit code.
 */
int client_call(struct client_http *h, const char *method, const char *path, const char *query,
                const char *body, bool json, json_t **out);

/* ---- tables and cells (client_table.c) ---------------------------------------------------- */

#define TABLE_RIGHT 1u /* Right-aligned (numbers). */
#define TABLE_FLEX  2u /* Shrinks (cut with "...") when the table is wider than the terminal. */

struct table {
    size_t ncols;
    const char *const *headers;
    const unsigned *flags; /* One per column, or NULL. */
    char **cells;          /* nrows * ncols, owned, control characters already replaced */
    size_t nrows;
    size_t cap;
};

/* Starts an empty table; |headers| and |flags| are borrowed. Allocates nothing. */
void table_init(struct table *t, size_t ncols, const char *const *headers, const unsigned *flags);

/*
 * Appends a row of t->ncols cells (NULL cells print empty). Copies them, replacing control
 * characters (ESC, newlines) so that telemetry cannot move the cursor of the terminal. Returns 0
 * or DLOTEL_ERR_NOMEM.
 */
int table_add_row(struct table *t, const char *const *cells);

/*
 * Renders |t|: a header line, then one line per row, columns separated by two spaces. With
 * |width| > 0 and a table wider than that, TABLE_FLEX columns are cut to fit (never below their
 * header or 8 characters). Widths count UTF-8 characters. Returns 0 or a buf error.
 */
int table_render(const struct table *t, size_t width, struct buf *out);

void table_cleanup(struct table *t);

/* The terminal's width: stdout's when it is a terminal, else $COLUMNS, else 0 (no limit). */
size_t client_term_width(void);

/*
 * The text of a JSON value for a cell: strings as they are, integers in decimal, reals with up to
 * 15 significant digits, true/false, null as "", arrays and objects as compact JSON. Returns a
 * malloc'd string or NULL when memory runs out.
 */
char *client_json_text(const json_t *v);

/* Human sizes: "0 B", "999 B", "1.5 KiB", "12.0 MiB". */
void client_fmt_bytes(char *out, size_t outlen, uint64_t bytes);

/* Durations given in milliseconds: "0.42ms", "12.50ms", "1.23s", "2.5m". */
void client_fmt_ms(char *out, size_t outlen, double ms);

/* A number out of a JSON value that may be an integer, a real or a numeric string; 0 otherwise. */
double client_json_number(const json_t *v);

/* Writes |b| to stdout, then a newline unless it ends with one. Returns 0 or EXIT_RUNTIME. */
int client_write_stdout(const struct buf *b);

/* ---- commands (client_cmd.c, client_smoke.c) ---------------------------------------------- */

/*
 * Runs client command |cmd| with |argv| (after the command name): parses, resolves the URL and
 * token from the flags and the environment, calls the API, prints. Returns the exit code.
 */
int client_main(enum client_cmd cmd, int argc, char **argv);

/* The body of each command, once the arguments are parsed and the client is made. */
int client_cmd_run(const struct client_args *a, struct client_http *h);
int client_smoke_run(const struct client_args *a, struct client_http *h);

#endif
