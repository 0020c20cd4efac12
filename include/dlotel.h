/*
 * dlotel: the Datalayer OpenTelemetry agent.
 *
 * This is the only public header. Every function returns an int from enum dlotel_error (0 on
 * success, a negative code on failure) unless it says otherwise; handles are opaque so that the
 * ABI stays stable and binds cleanly from Python's ctypes.
 *
 * A host application uses it to run one agent daemon per user and host, shared by every process
 * that asks for it (gunicorn workers, notebooks, scripts):
 *
 *     dlotel_config *cfg;
 *     dlotel_agent *agent;
 *     if (dlotel_config_new_from_env(&cfg) != 0) { ... }
 *     dlotel_config_set(cfg, "batch.timeout", "1s");            (optional overrides)
 *     int rv = dlotel_agent_start(&agent, cfg);                  (launch, or attach)
 *     dlotel_config_free(cfg);
 *     if (rv != 0) { fprintf(stderr, "%s\n", dlotel_last_error()); ... }
 *     ... the application's OpenTelemetry SDK exports to localhost:4317 / 4318 ...
 *     dlotel_agent_flush(agent, 5000);
 *     dlotel_agent_stop(agent, 0);                               (detach; others keep it)
 *     dlotel_agent_free(agent);
 *
 * The daemon is a separate process (posix_spawn of the `dlotel` binary, never a fork of the
 * host): it outlives the process that started it, and is found again through a control socket
 * in the per-user runtime directory. docs/embedding.md describes the protocol and the files.
 *
 * Thread safety: functions on one dlotel_agent may be called from several threads (calls on
 * one handle are serialized); a dlotel_config must not be changed while another thread uses it.
 * The detail string of dlotel_last_error() is per thread.
 */
#ifndef DLOTEL_H
#define DLOTEL_H

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && defined(DLOTEL_BUILDING_LIBRARY)
#define DLOTEL_EXTERN __attribute__((visibility("default")))
#else
#define DLOTEL_EXTERN
#endif

#define DLOTEL_VERSION "0.1.0"

/*
 * Error codes. Append-only: a code keeps its number forever, because scripts and bindings
 * compare against the numbers.
 */
enum dlotel_error {
    DLOTEL_OK = 0,
    /* Memory allocation failed. */
    DLOTEL_ERR_NOMEM = -1,
    /* A caller passed an argument the function does not accept. */
    DLOTEL_ERR_INVALID_ARG = -2,
    /* Input bytes are malformed (protobuf, JSON, HTTP, gRPC framing, compressed stream). */
    DLOTEL_ERR_BAD_INPUT = -3,
    /* Input passed a size limit (body, message, decompressed size, buffer maximum). */
    DLOTEL_ERR_TOO_LARGE = -4,
    /* The input asks for something not supported (content type, encoding, method). */
    DLOTEL_ERR_UNSUPPORTED = -5,
    /* A system call failed; the detail string names it. */
    DLOTEL_ERR_IO = -6,
    /* A listen address is taken by another program. */
    DLOTEL_ERR_ADDR_IN_USE = -7,
    /* A queue or buffer is full; the caller sheds or flushes first. */
    DLOTEL_ERR_FULL = -8,
    /* A named thing (path, service, file, key) does not exist. */
    DLOTEL_ERR_NOT_FOUND = -9,
    /* An operation did not finish within its time limit. */
    DLOTEL_ERR_TIMEOUT = -10,
    /* An invariant broke inside dlotel: a bug, please report it. */
    DLOTEL_ERR_INTERNAL = -11,
    /* The configuration is invalid; the detail string says which key and why. */
    DLOTEL_ERR_CONFIG = -12,
    /* The object was closed or is shutting down. */
    DLOTEL_ERR_CLOSED = -13,
    /* A shared module (the DuckDB sink) could not be loaded. */
    DLOTEL_ERR_MODULE = -14,
    /* A dlotel daemon already runs for this user with a different configuration. */
    DLOTEL_ERR_CONFIG_MISMATCH = -15,
    /* The agent is turned off by its configuration (enabled: false, OTEL_SDK_DISABLED=true). */
    DLOTEL_ERR_DISABLED = -16,
    /* The daemon could not be started or died before it was ready; the detail string quotes
     * its log. */
    DLOTEL_ERR_DAEMON = -17,
};

/*
 * Returns a static, human-readable string for |code|. Never NULL: an unknown code gives
 * "unknown error".
 */
DLOTEL_EXTERN const char *dlotel_strerror(int code);

/* Returns the library's version string, DLOTEL_VERSION at build time. Never NULL. */
DLOTEL_EXTERN const char *dlotel_version(void);

/*
 * Returns a human-readable detail of the last failure of a dlotel_* call in the calling thread:
 * the daemon's own message when it refused to start ("port 4318 (localhost:4318) is in use by
 * another program"), every configuration problem found, one per line. Never NULL; "" when the
 * thread's last call succeeded. The string is owned by the library and valid until the thread's
 * next dlotel_* call.
 */
DLOTEL_EXTERN const char *dlotel_last_error(void);

/* Frees memory the library handed out (dlotel_agent_status()'s JSON). NULL is a no-op. */
DLOTEL_EXTERN void dlotel_free(void *p);

/* Levels of the library's own log lines. */
enum dlotel_log_level {
    DLOTEL_LOG_ERROR = 0,
    DLOTEL_LOG_WARN = 1,
    DLOTEL_LOG_INFO = 2,
    DLOTEL_LOG_DEBUG = 3,
};

/*
 * Receives the library's log lines ("started the dlotel daemon, pid 1234, on ports 4317 and
 * 4318", "removed the stale control socket of a dead daemon"). |level| is an enum
 * dlotel_log_level; |message| is one line without a newline, valid only during the call. The
 * callback runs on the thread that made the dlotel_* call and must not call back into dlotel.
 */
typedef void (*dlotel_log_callback)(int level, const char *message, void *user_data);

/*
 * Sets the process-wide log callback; NULL (the default) discards the lines. The daemon's own
 * log is a file in the runtime directory (docs/embedding.md), not these lines.
 */
DLOTEL_EXTERN void dlotel_set_log_callback(dlotel_log_callback cb, void *user_data);

/* ---- configuration ------------------------------------------------------------------------- */

/* The settings a daemon is started with: an environment snapshot plus key/value overrides. */
typedef struct dlotel_config dlotel_config;

/*
 * Creates a configuration that reads a copy of the process environment, taken now: the
 * DATALAYER_* variables (docs/configuration.md), DATALAYER_OTEL_CONFIG naming a YAML file, and
 * OTEL_SDK_DISABLED. Later changes to the environment do not affect it. On success *out owns
 * the copy; free it with dlotel_config_free().
 *
 * Returns 0 or DLOTEL_ERR_NOMEM; *out is untouched on failure.
 */
DLOTEL_EXTERN int dlotel_config_new_from_env(dlotel_config **out);

/*
 * Creates a configuration that ignores the environment: built-in defaults plus what
 * dlotel_config_set() adds. Returns 0 or DLOTEL_ERR_NOMEM; *out is untouched on failure.
 */
DLOTEL_EXTERN int dlotel_config_new(dlotel_config **out);

/*
 * Sets one key, overriding the file and the environment (the typed config's rank). |key| is a
 * dotted path from docs/configuration.md ("batch.timeout", "exporters.up.endpoint",
 * "exporters.up.headers.Authorization") or one of the launcher's own keys:
 *
 *   launcher.runtime_dir       where the lock, socket, config and log live (default
 *                              $XDG_RUNTIME_DIR/dlotel, else /tmp/dlotel-<uid>);
 *                              env DATALAYER_OTEL_AGENT_RUNTIME_DIR
 *   launcher.daemon_path       the `dlotel` executable (default: next to this library, then
 *                              ../bin/dlotel, then PATH); env DATALAYER_OTEL_AGENT_DAEMON_PATH
 *   launcher.start_timeout     how long start waits for the daemon to listen (default 15s);
 *                              env DATALAYER_OTEL_AGENT_START_TIMEOUT
 *   launcher.exit_when_unused  "off" (default), or a duration: the daemon drains and exits once
 *                              no process has been attached for that long;
 *                              env DATALAYER_OTEL_AGENT_EXIT_WHEN_UNUSED
 *
 * |key| and |value| are copied. Setting a key again replaces its value. The value is checked
 * now against the key's type, and the whole configuration again by dlotel_agent_start().
 *
 * Returns 0, DLOTEL_ERR_CONFIG (unknown key or bad value; dlotel_last_error() says which, with
 * a "did you mean"), DLOTEL_ERR_INVALID_ARG (NULL arguments) or DLOTEL_ERR_NOMEM.
 */
DLOTEL_EXTERN int dlotel_config_set(dlotel_config *cfg, const char *key, const char *value);

/* Frees |cfg|. NULL is a no-op. An agent started from it does not need it any more. */
DLOTEL_EXTERN void dlotel_config_free(dlotel_config *cfg);

/* ---- the agent ----------------------------------------------------------------------------- */

/* One process's attachment to the daemon. */
typedef struct dlotel_agent dlotel_agent;

/*
 * Starts the daemon, or attaches to the one already running for this user: builds the effective
 * configuration from |cfg| (borrowed for the call), then, under a lock in the runtime directory
 * so that many processes starting at once make one daemon, connects to the daemon's control
 * socket, or spawns a new daemon and waits until its ports listen. A daemon found running must
 * have been started with the same configuration. Blocks for at most launcher.start_timeout.
 *
 * On success *out is attached: the daemon counts this process as a user until
 * dlotel_agent_stop() or dlotel_agent_free(), or until the process exits. Free it with
 * dlotel_agent_free().
 *
 * Returns 0, or, with dlotel_last_error() saying more:
 *   DLOTEL_ERR_CONFIG           the configuration is invalid (every problem, one per line; with
 *                               no exporter, no upstream and no sink it names what to set);
 *   DLOTEL_ERR_DISABLED         enabled is false (OTEL_SDK_DISABLED=true): nothing was started;
 *   DLOTEL_ERR_CONFIG_MISMATCH  a daemon runs with a different configuration;
 *   DLOTEL_ERR_ADDR_IN_USE      a port the daemon needs is held by another program (named);
 *   DLOTEL_ERR_TIMEOUT          the daemon did not become ready in time;
 *   DLOTEL_ERR_DAEMON           the daemon could not be spawned or died while starting;
 *   DLOTEL_ERR_NOT_FOUND        the `dlotel` executable was not found;
 *   DLOTEL_ERR_IO               the runtime directory is unusable (wrong owner, mode);
 *   DLOTEL_ERR_INVALID_ARG, DLOTEL_ERR_NOMEM.
 * *out is untouched on failure.
 */
DLOTEL_EXTERN int dlotel_agent_start(dlotel_agent **out, const dlotel_config *cfg);

/*
 * Asks the daemon to send everything queued now and waits until every queue is empty and
 * nothing is in flight, for at most |timeout_ms| milliseconds (0 to 3600000). This covers what
 * the daemon has received; flush the application's OpenTelemetry SDK first.
 *
 * Returns 0, DLOTEL_ERR_TIMEOUT (the detail says how much is left and the last export error),
 * DLOTEL_ERR_CLOSED (stopped, or the daemon is gone), DLOTEL_ERR_INVALID_ARG or DLOTEL_ERR_IO.
 */
DLOTEL_EXTERN int dlotel_agent_flush(dlotel_agent *agent, int timeout_ms);

/*
 * Fetches the daemon's status as a JSON object: "pid", "version", "users" (attached processes),
 * "clients" (their pids), "grpc_port", "http_port", "queue_items" (waiting to be sent),
 * "dropped_items", "refused_items", "sent_items", "last_export_error" ({"exporter", "signal",
 * "message", "time_unix_nano"} or null), "upstream_reachable" (true, false, or null before any
 * export), and "exporters" (per exporter and signal counters). On success *json_out is a
 * NUL-terminated string the caller frees with dlotel_free().
 *
 * Returns 0, DLOTEL_ERR_CLOSED, DLOTEL_ERR_TIMEOUT, DLOTEL_ERR_INVALID_ARG, DLOTEL_ERR_IO or
 * DLOTEL_ERR_NOMEM; *json_out is untouched on failure.
 */
DLOTEL_EXTERN int dlotel_agent_status(dlotel_agent *agent, char **json_out);

/* Which listening port dlotel_agent_port() returns. */
enum dlotel_port {
    DLOTEL_PORT_GRPC = 0,
    DLOTEL_PORT_HTTP = 1,
};

/*
 * Returns the port the daemon's OTLP receiver |which| (enum dlotel_port) listens on, as the
 * daemon reported it when this process attached (useful with port 0 in the configuration), or
 * DLOTEL_ERR_INVALID_ARG.
 */
DLOTEL_EXTERN int dlotel_agent_port(const dlotel_agent *agent, int which);

/* Returns the daemon's process id, or DLOTEL_ERR_INVALID_ARG. */
DLOTEL_EXTERN int dlotel_agent_daemon_pid(const dlotel_agent *agent);

/* Returns 1 when this process spawned the daemon, 0 when it attached to a running one. */
DLOTEL_EXTERN int dlotel_agent_spawned(const dlotel_agent *agent);

/* Flags of dlotel_agent_stop(). */
enum dlotel_stop_flags {
    /*
     * Stop the daemon itself, whoever else is attached: it drains its queues for up to its
     * shutdown_timeout and exits. dlotel_agent_stop() waits until it has.
     */
    DLOTEL_STOP_DAEMON = 1,
};

/*
 * Detaches this process: the daemon keeps running for the other processes attached to it, and,
 * when launcher.exit_when_unused is set, drains and exits once none is left. With
 * DLOTEL_STOP_DAEMON, stops the daemon instead and waits (up to its shutdown_timeout plus a
 * margin) until it has exited. Afterwards the handle only answers DLOTEL_ERR_CLOSED; free it with
 * dlotel_agent_free(). Stopping a stopped handle returns 0.
 *
 * In a child process that inherited |agent| through fork(), this only drops the inherited
 * connection: the parent stays attached.
 *
 * Returns 0, DLOTEL_ERR_TIMEOUT (DLOTEL_STOP_DAEMON: the daemon did not exit in time),
 * DLOTEL_ERR_INVALID_ARG or DLOTEL_ERR_IO.
 */
DLOTEL_EXTERN int dlotel_agent_stop(dlotel_agent *agent, unsigned flags);

/* Detaches (as dlotel_agent_stop(agent, 0)) if still attached, then frees. NULL is a no-op. */
DLOTEL_EXTERN void dlotel_agent_free(dlotel_agent *agent);

#ifdef __cplusplus
}
#endif

#endif /* DLOTEL_H */
