/*
 * libdlotel: the public API of include/dlotel.h. It runs inside someone else's process (a Python
 * interpreter with threads, a gunicorn worker), so it never forks that process: the daemon is
 * started with posix_spawn() of the `dlotel` binary, which forks once itself (--daemonize) so
 * that the long-lived daemon is not the host's child. Nothing here aborts, installs signal
 * handlers or changes process-wide state beyond what is documented.
 *
 * Start-up, in order (docs/embedding.md has the picture):
 *  1. build the effective configuration in-process (config_build: defaults < YAML < environment
 *     < key/value settings), so every problem is reported to the caller before any process runs;
 *  2. take the start lock (flock on <runtime>/dlotel.start.lock): launchers queue here, so that
 *     of sixteen processes starting at once exactly one spawns and fifteen attach;
 *  3. connect to <runtime>/dlotel.sock and attach with the configuration's hash; or, when nothing
 *     listens and no daemon holds <runtime>/dlotel.lock, write the configuration (secrets
 *     included) to a 0600 file and spawn `dlotel agent --config FILE --daemonize ...`, whose
 *     environment carries no DATALAYER_* variable; it binds its ports, then reports "ready" (or
 *     its error) on a pipe; then attach;
 *  4. release the start lock.
 */
#include "dlotel.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "config/config.h"
#include "core/buf.h"
#include "core/timeutil.h"
#include "launcher/control.h"

extern char **environ;

#define DEFAULT_START_TIMEOUT_NS (15ull * 1000000000ull)
#define MAX_START_TIMEOUT_NS     (600ull * 1000000000ull)
/* Replies to attach, detach and status come at once; this only catches a wedged daemon. */
#define CALL_TIMEOUT_MS 10000
/* How much of the daemon's log a start-up failure quotes. */
#define LOG_TAIL_BYTES 2048

/* ---- last error and log --------------------------------------------------------------------- */

static _Thread_local char last_error[4096];

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static dlotel_log_callback log_cb;
static void *log_ud;

const char *dlotel_last_error(void)
{
    return last_error;
}

void dlotel_free(void *p)
{
    free(p);
}

void dlotel_set_log_callback(dlotel_log_callback cb, void *user_data)
{
    pthread_mutex_lock(&log_mu);
    log_cb = cb;
    log_ud = user_data;
    pthread_mutex_unlock(&log_mu);
}

static void lg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void lg(int level, const char *fmt, ...)
{
    pthread_mutex_lock(&log_mu);
    dlotel_log_callback cb = log_cb;
    void *ud = log_ud;
    pthread_mutex_unlock(&log_mu);
    if (cb == NULL) {
        return;
    }
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    cb(level, line, ud);
}

static int fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Sets the thread's detail string and returns |code|, so a failure is one statement. */
static int fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof(last_error), fmt, ap);
    va_end(ap);
    return code;
}

static void err_clear(void)
{
    last_error[0] = '\0';
}

/* ---- configuration -------------------------------------------------------------------------- */

struct setting {
    char *key;
    char *value;
};

struct dlotel_config {
    char **envp; /* NULL-terminated copy; never NULL (empty for dlotel_config_new()). */
    struct setting *settings;
    size_t n_settings;
    size_t cap_settings;
    /* The launcher's own keys; NULL / negative when not set by dlotel_config_set(). */
    char *runtime_dir;
    char *daemon_path;
    int64_t start_timeout_ns;    /* -1: unset */
    int64_t exit_when_unused_ns; /* -1: off; -2: unset */
};

/* Environment variables of the launcher's keys; config_build() never sees them. */
static const char *const launcher_env[] = {
    "DATALAYER_OTEL_AGENT_RUNTIME_DIR",
    "DATALAYER_OTEL_AGENT_DAEMON_PATH",
    "DATALAYER_OTEL_AGENT_START_TIMEOUT",
    "DATALAYER_OTEL_AGENT_EXIT_WHEN_UNUSED",
};
#define N_LAUNCHER_ENV (sizeof(launcher_env) / sizeof(launcher_env[0]))

static void free_strv(char **v)
{
    if (v == NULL) {
        return;
    }
    for (char **p = v; *p != NULL; p++) {
        free(*p);
    }
    free(v);
}

static int config_alloc(dlotel_config **out, char **env)
{
    dlotel_config *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    c->start_timeout_ns = -1;
    c->exit_when_unused_ns = -2;
    size_t n = 0;
    while (env != NULL && env[n] != NULL) {
        n++;
    }
    c->envp = calloc(n + 1, sizeof(char *));
    if (c->envp == NULL) {
        goto fail_struct;
    }
    for (size_t i = 0; i < n; i++) {
        c->envp[i] = strdup(env[i]);
        if (c->envp[i] == NULL) {
            goto fail_env;
        }
    }
    *out = c;
    return 0;

fail_env:
    free_strv(c->envp);
fail_struct:
    free(c);
    return DLOTEL_ERR_NOMEM;
}

int dlotel_config_new_from_env(dlotel_config **out)
{
    err_clear();
    if (out == NULL) {
        return fail(DLOTEL_ERR_INVALID_ARG, "out is NULL");
    }
    return config_alloc(out, environ);
}

int dlotel_config_new(dlotel_config **out)
{
    err_clear();
    if (out == NULL) {
        return fail(DLOTEL_ERR_INVALID_ARG, "out is NULL");
    }
    return config_alloc(out, NULL);
}

void dlotel_config_free(dlotel_config *c)
{
    if (c == NULL) {
        return;
    }
    free_strv(c->envp);
    for (size_t i = 0; i < c->n_settings; i++) {
        free(c->settings[i].key);
        free(c->settings[i].value);
    }
    free(c->settings);
    free(c->runtime_dir);
    free(c->daemon_path);
    free(c);
}

/* "off", "false", "never" and "" turn exit-when-unused off; otherwise a duration. */
static int parse_exit_when_unused(const char *v, int64_t *out)
{
    if (v[0] == '\0' || strcmp(v, "off") == 0 || strcmp(v, "false") == 0 ||
        strcmp(v, "never") == 0) {
        *out = -1;
        return 0;
    }
    uint64_t ns;
    if (config_parse_duration(v, false, &ns) != 0 || ns > 24ull * 3600 * 1000000000ull) {
        return DLOTEL_ERR_CONFIG;
    }
    *out = (int64_t)ns;
    return 0;
}

static int parse_start_timeout(const char *v, int64_t *out)
{
    uint64_t ns;
    if (config_parse_duration(v, false, &ns) != 0 || ns < 1000000ull || ns > MAX_START_TIMEOUT_NS) {
        return DLOTEL_ERR_CONFIG;
    }
    *out = (int64_t)ns;
    return 0;
}

static int replace_str(char **slot, const char *v)
{
    char *copy = NULL;
    if (v[0] != '\0') {
        copy = strdup(v);
        if (copy == NULL) {
            return DLOTEL_ERR_NOMEM;
        }
    }
    free(*slot);
    *slot = copy;
    return 0;
}

static int launcher_key_set(dlotel_config *c, const char *key, const char *value)
{
    const char *k = key + strlen("launcher.");
    if (strcmp(k, "runtime_dir") == 0) {
        if (value[0] != '\0' && value[0] != '/') {
            return fail(DLOTEL_ERR_CONFIG, "%s: must be an absolute path, got \"%s\"", key, value);
        }
        return replace_str(&c->runtime_dir, value);
    }
    if (strcmp(k, "daemon_path") == 0) {
        return replace_str(&c->daemon_path, value);
    }
    if (strcmp(k, "start_timeout") == 0) {
        if (parse_start_timeout(value, &c->start_timeout_ns) != 0) {
            return fail(DLOTEL_ERR_CONFIG,
                        "%s: expected a duration from 1ms to 10m (\"15s\"), got \"%s\"", key,
                        value);
        }
        return 0;
    }
    if (strcmp(k, "exit_when_unused") == 0) {
        if (parse_exit_when_unused(value, &c->exit_when_unused_ns) != 0) {
            return fail(DLOTEL_ERR_CONFIG,
                        "%s: expected \"off\" or a duration up to 24h (\"30s\"), got \"%s\"", key,
                        value);
        }
        return 0;
    }
    return fail(DLOTEL_ERR_CONFIG,
                "%s: unknown key (the launcher's keys are launcher.runtime_dir, "
                "launcher.daemon_path, launcher.start_timeout and launcher.exit_when_unused)",
                key);
}

/* Copies the diagnostics of |errs| into the thread's detail string. */
static int fail_config(int code, const struct config_errors *errs, const char *prefix)
{
    struct buf b;
    buf_init(&b, sizeof(last_error) - 1);
    if (prefix != NULL) {
        buf_printf(&b, "%s", prefix);
    }
    config_errors_format(errs, &b, false);
    /* The formatter ends every line with a newline; the last one is noise in an exception. */
    while (b.len > 0 && b.data[b.len - 1] == '\n') {
        b.len--;
    }
    if (b.len == 0) {
        buf_printf(&b, "invalid configuration");
    }
    memcpy(last_error, b.data, b.len);
    last_error[b.len] = '\0';
    buf_cleanup(&b);
    return code;
}

int dlotel_config_set(dlotel_config *c, const char *key, const char *value)
{
    err_clear();
    if (c == NULL || key == NULL || value == NULL) {
        return fail(DLOTEL_ERR_INVALID_ARG, "dlotel_config_set: NULL argument");
    }
    if (strncmp(key, "launcher.", 9) == 0) {
        return launcher_key_set(c, key, value);
    }
    /* Checked now against a scratch configuration, so that the caller hears about a typo at
     * the line that made it; the real build happens at start. */
    struct config *probe;
    int rv = config_new(&probe);
    if (rv != 0) {
        return fail(rv, "cannot check %s: %s", key, dlotel_strerror(rv));
    }
    struct config_errors errs;
    config_errors_init(&errs);
    rv = config_set(probe, key, value, CONFIG_SOURCE_API, &errs);
    config_free(probe);
    if (rv != 0) {
        rv = fail_config(rv == DLOTEL_ERR_NOMEM ? rv : DLOTEL_ERR_CONFIG, &errs, NULL);
        config_errors_cleanup(&errs);
        return rv;
    }
    config_errors_cleanup(&errs);

    for (size_t i = 0; i < c->n_settings; i++) {
        if (strcmp(c->settings[i].key, key) == 0) {
            char *v = strdup(value);
            if (v == NULL) {
                return DLOTEL_ERR_NOMEM;
            }
            free(c->settings[i].value);
            c->settings[i].value = v;
            return 0;
        }
    }
    if (c->n_settings == c->cap_settings) {
        size_t cap = c->cap_settings == 0 ? 8 : c->cap_settings * 2;
        struct setting *s = realloc(c->settings, cap * sizeof(*s));
        if (s == NULL) {
            return DLOTEL_ERR_NOMEM;
        }
        c->settings = s;
        c->cap_settings = cap;
    }
    char *k = strdup(key);
    char *v = strdup(value);
    if (k == NULL || v == NULL) {
        free(k);
        free(v);
        return DLOTEL_ERR_NOMEM;
    }
    c->settings[c->n_settings].key = k;
    c->settings[c->n_settings].value = v;
    c->n_settings++;
    return 0;
}

static const char *env_lookup(char **envp, const char *name)
{
    size_t n = strlen(name);
    for (char **e = envp; *e != NULL; e++) {
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=') {
            return *e + n + 1;
        }
    }
    return NULL;
}

/* ---- the start context ---------------------------------------------------------------------- */

struct launch {
    const dlotel_config *c;
    char **envp; /* c->envp without the launcher's variables; the array only is owned. */
    const char *runtime_override;
    const char *daemon_path;
    uint64_t start_timeout_ns;
    int64_t exit_when_unused_ns;
    uint64_t deadline_ns;
    char dir[CONTROL_PATH_MAX];
    char sock[CONTROL_PATH_MAX];
    struct config *cfg;
    uint64_t hash;
};

static int launch_options(struct launch *L)
{
    const dlotel_config *c = L->c;
    size_t n = 0;
    while (c->envp[n] != NULL) {
        n++;
    }
    L->envp = calloc(n + 1, sizeof(char *));
    if (L->envp == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        bool ours = false;
        for (size_t j = 0; j < N_LAUNCHER_ENV; j++) {
            size_t len = strlen(launcher_env[j]);
            if (strncmp(c->envp[i], launcher_env[j], len) == 0 && c->envp[i][len] == '=') {
                ours = true;
            }
        }
        if (!ours) {
            L->envp[k++] = c->envp[i];
        }
    }
    L->runtime_override = c->runtime_dir;
    if (L->runtime_override == NULL) {
        L->runtime_override = env_lookup(c->envp, "DATALAYER_OTEL_AGENT_RUNTIME_DIR");
    }
    L->daemon_path = c->daemon_path;
    if (L->daemon_path == NULL) {
        const char *v = env_lookup(c->envp, "DATALAYER_OTEL_AGENT_DAEMON_PATH");
        L->daemon_path = v != NULL && v[0] != '\0' ? v : NULL;
    }
    L->start_timeout_ns = DEFAULT_START_TIMEOUT_NS;
    if (c->start_timeout_ns >= 0) {
        L->start_timeout_ns = (uint64_t)c->start_timeout_ns;
    } else {
        const char *v = env_lookup(c->envp, "DATALAYER_OTEL_AGENT_START_TIMEOUT");
        int64_t t;
        if (v != NULL && v[0] != '\0') {
            if (parse_start_timeout(v, &t) != 0) {
                return fail(DLOTEL_ERR_CONFIG,
                            "env DATALAYER_OTEL_AGENT_START_TIMEOUT: expected a duration from 1ms "
                            "to 10m (\"15s\"), got \"%s\"",
                            v);
            }
            L->start_timeout_ns = (uint64_t)t;
        }
    }
    L->exit_when_unused_ns = -1;
    if (c->exit_when_unused_ns != -2) {
        L->exit_when_unused_ns = c->exit_when_unused_ns;
    } else {
        const char *v = env_lookup(c->envp, "DATALAYER_OTEL_AGENT_EXIT_WHEN_UNUSED");
        if (v != NULL && parse_exit_when_unused(v, &L->exit_when_unused_ns) != 0) {
            return fail(DLOTEL_ERR_CONFIG,
                        "env DATALAYER_OTEL_AGENT_EXIT_WHEN_UNUSED: expected \"off\" or a duration "
                        "up to 24h (\"30s\"), got \"%s\"",
                        v);
        }
    }
    return 0;
}

/* Whether the only problem is that nothing receives telemetry (CONFIG_NO_DESTINATION_MESSAGE). */
static bool no_destination_only(const struct config_errors *errs)
{
    if (errs->n_errors != 1) {
        return false;
    }
    for (size_t i = 0; i < errs->n; i++) {
        const struct config_diag *d = &errs->items[i];
        if (!d->warning) {
            return strcmp(d->path, "exporters") == 0 &&
                   strncmp(d->message, CONFIG_NO_DESTINATION_MESSAGE,
                           strlen(CONFIG_NO_DESTINATION_MESSAGE)) == 0;
        }
    }
    return false;
}

/*
 * Builds the effective configuration; |log_file| (may be NULL) is added as log.file. With
 * nothing configured to receive telemetry, the sink is turned on (the embedded default).
 */
static int build_config(struct launch *L, const char *log_file, struct config **out)
{
    const dlotel_config *c = L->c;
    /* Room for log.file and the sink fallback besides the caller's settings. */
    struct config_setting *flags = calloc(c->n_settings + 2, sizeof(*flags));
    if (flags == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    size_t n = 0;
    if (log_file != NULL) {
        flags[n].key = "log.file";
        flags[n].value = log_file;
        n++;
    }
    for (size_t i = 0; i < c->n_settings; i++) {
        flags[n].key = c->settings[i].key;
        flags[n].value = c->settings[i].value;
        n++;
    }
    struct config_errors errs;
    config_errors_init(&errs);
    int rv = config_build(out, NULL, L->envp, flags, n, &errs);
    if (rv == DLOTEL_ERR_CONFIG && no_destination_only(&errs)) {
        /*
         * The embedded default: an app that calls start() with nothing configured gets the
         * local sink rather than an error, so its telemetry lands somewhere it can query. The
         * forwarding `dlotel agent` still refuses to start and says what to set.
         */
        flags[n].key = "sink.enabled";
        flags[n].value = "true";
        config_errors_cleanup(&errs);
        config_errors_init(&errs);
        rv = config_build(out, NULL, L->envp, flags, n + 1, &errs);
        if (rv == 0 && log_file == NULL) {
            lg(DLOTEL_LOG_INFO,
               "no upstream is configured: storing telemetry locally in the sink (%s); set "
               "DATALAYER_RUN_URL and DATALAYER_API_KEY, or DATALAYER_OTLP_URL, to forward",
               (*out)->sink.data_dir);
        }
    }
    free(flags);
    if (log_file == NULL && errs.n_warnings > 0) {
        for (size_t i = 0; i < errs.n; i++) {
            const struct config_diag *d = &errs.items[i];
            if (d->warning) {
                lg(DLOTEL_LOG_WARN, "configuration: %s%s%s%s%s", d->where,
                   d->where[0] != '\0' ? ": " : "", d->path, d->path[0] != '\0' ? ": " : "",
                   d->message);
            }
        }
    }
    if (rv != 0) {
        rv = fail_config(rv == DLOTEL_ERR_NOMEM ? rv : DLOTEL_ERR_CONFIG, &errs, NULL);
    }
    config_errors_cleanup(&errs);
    return rv;
}

/*
 * Whether the configuration turns the agent off, read without finalizing it: a disabled agent
 * (OTEL_SDK_DISABLED=true) must not fail start-up over problems in keys it will never use.
 */
static bool disabled(struct launch *L)
{
    const dlotel_config *c = L->c;
    struct config *cfg;
    if (config_new(&cfg) != 0) {
        return false;
    }
    struct config_errors errs;
    config_errors_init(&errs);
    const char *file = env_lookup(L->envp, "DATALAYER_OTEL_CONFIG");
    if (file != NULL && file[0] != '\0') {
        config_load_yaml_file(cfg, file, &errs);
    }
    config_load_env(cfg, L->envp, &errs);
    for (size_t i = 0; i < c->n_settings; i++) {
        config_set(cfg, c->settings[i].key, c->settings[i].value, CONFIG_SOURCE_API, &errs);
    }
    bool off = !cfg->enabled;
    config_free(cfg);
    config_errors_cleanup(&errs);
    return off;
}

/* ---- the agent handle ----------------------------------------------------------------------- */

struct dlotel_agent {
    pthread_mutex_t mu;
    int fd; /* The attached control connection; -1 once stopped. */
    pid_t owner;
    int daemon_pid;
    int grpc_port;
    int http_port;
    bool spawned;
    uint64_t shutdown_timeout_ms;
    char dir[CONTROL_PATH_MAX];
};

static int ms_until(uint64_t deadline_ns)
{
    uint64_t now = time_monotonic_nano();
    if (now >= deadline_ns) {
        return 0;
    }
    uint64_t ms = (deadline_ns - now) / 1000000u + 1;
    return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---- reaping a daemon that ended up as our child --------------------------------------------- */

/*
 * When the host is PID 1 of a container (or a child subreaper), the daemon, orphaned by its
 * intermediate parent, is re-parented to the host, which would leave it a zombie when it exits:
 * a Python app never calls wait() for children it does not know. One detached thread per such
 * daemon waits for exactly that pid, and nothing else.
 */
#define MAX_REAPED 16
static pthread_mutex_t reap_mu = PTHREAD_MUTEX_INITIALIZER;
static pid_t reaping[MAX_REAPED];

static void *reaper_main(void *arg)
{
    pid_t pid = (pid_t)(intptr_t)arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    pthread_mutex_lock(&reap_mu);
    for (int i = 0; i < MAX_REAPED; i++) {
        if (reaping[i] == pid) {
            reaping[i] = 0;
        }
    }
    pthread_mutex_unlock(&reap_mu);
    return NULL;
}

/* Returns the parent pid of |pid| from /proc, or 0. */
static pid_t parent_of(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        return 0;
    }
    char text[512];
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    /* "pid (comm) state ppid ...": comm may hold spaces and parentheses; the last ')' ends it. */
    char *p = strrchr(text, ')');
    if (p == NULL) {
        return 0;
    }
    char state;
    long ppid;
    if (sscanf(p + 1, " %c %ld", &state, &ppid) != 2) {
        return 0;
    }
    return (pid_t)ppid;
}

static void reap_if_ours(pid_t daemon)
{
    if (daemon <= 0 || parent_of(daemon) != getpid()) {
        return;
    }
    pthread_mutex_lock(&reap_mu);
    int slot = -1;
    for (int i = 0; i < MAX_REAPED; i++) {
        if (reaping[i] == daemon) {
            pthread_mutex_unlock(&reap_mu);
            return;
        }
        if (reaping[i] == 0 && slot < 0) {
            slot = i;
        }
    }
    if (slot < 0) {
        pthread_mutex_unlock(&reap_mu);
        return;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    pthread_t t;
    if (pthread_create(&t, &attr, reaper_main, (void *)(intptr_t)daemon) == 0) {
        reaping[slot] = daemon;
        lg(DLOTEL_LOG_DEBUG,
           "the dlotel daemon (pid %ld) is this process's child; a thread will "
           "reap it when it exits",
           (long)daemon);
    }
    pthread_attr_destroy(&attr);
    pthread_mutex_unlock(&reap_mu);
}

/* ---- attach --------------------------------------------------------------------------------- */

/* Returns the integer |key| of |obj|, or |def|. */
static int64_t jint(void *obj, const char *key, int64_t def)
{
    json_t *v = json_object_get((json_t *)obj, key);
    return json_is_integer(v) ? json_integer_value(v) : def;
}

/*
 * Connects to the control socket and attaches. Returns 0 and fills |a|; DLOTEL_ERR_NOT_FOUND
 * when nothing listens; DLOTEL_ERR_CLOSED when the daemon is going away (it refused as
 * "stopping", or closed the connection); or the daemon's refusal (config mismatch) with the
 * detail string set.
 */
static int try_attach(struct launch *L, struct dlotel_agent *a)
{
    int fd;
    int rv = control_client_connect(L->sock, &fd);
    if (rv != 0) {
        return rv == DLOTEL_ERR_NOT_FOUND
                   ? rv
                   : fail(rv, "cannot connect to %s: %s", L->sock, strerror(errno));
    }
    struct control_request req;
    memset(&req, 0, sizeof(req));
    req.op = CONTROL_OP_ATTACH;
    req.pid = getpid();
    req.config_hash = L->hash;
    snprintf(req.version, sizeof(req.version), "%s", DLOTEL_VERSION);
    struct control_reply rep;
    int left = ms_until(L->deadline_ns);
    rv = control_client_call(fd, &req, left < CALL_TIMEOUT_MS ? CALL_TIMEOUT_MS : left, &rep);
    if (rv != 0) {
        close(fd);
        if (rv == DLOTEL_ERR_CLOSED) {
            return rv;
        }
        return fail(rv, "the dlotel daemon at %s did not answer the attach request: %s", L->sock,
                    dlotel_strerror(rv));
    }
    if (!rep.ok) {
        close(fd);
        rv = rep.code;
        if (rv != DLOTEL_ERR_CLOSED) {
            fail(rv, "%s", rep.error);
        }
        control_reply_cleanup(&rep);
        return rv;
    }
    a->fd = fd;
    a->daemon_pid = (int)jint(rep.json, "pid", 0);
    a->grpc_port = (int)jint(rep.json, "grpc_port", 0);
    a->http_port = (int)jint(rep.json, "http_port", 0);
    int64_t users = jint(rep.json, "users", 0);
    control_reply_cleanup(&rep);
    lg(DLOTEL_LOG_INFO,
       "attached to the dlotel daemon (pid %d) in %s; processes attached: %" PRId64, a->daemon_pid,
       L->dir, users);
    return 0;
}

/* ---- spawn ---------------------------------------------------------------------------------- */

static bool executable(const char *path)
{
    struct stat st;
    return access(path, X_OK) == 0 && stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Builds <dir>/<name> in |out| and tells whether it is an executable file. */
static bool candidate(char *out, size_t outlen, const char *dir, size_t dirlen, const char *name)
{
    int n = snprintf(out, outlen, "%.*s/%s", (int)dirlen, dir, name);
    return n > 0 && (size_t)n < outlen && executable(out);
}

/* Finds the daemon binary. Returns 0 with the path in |out|, or DLOTEL_ERR_NOT_FOUND. */
static int find_daemon(struct launch *L, char *out, size_t outlen)
{
    if (L->daemon_path != NULL) {
        if (!executable(L->daemon_path)) {
            return fail(DLOTEL_ERR_NOT_FOUND,
                        "launcher.daemon_path %s is not an executable file: %s", L->daemon_path,
                        strerror(errno));
        }
        if (snprintf(out, outlen, "%s", L->daemon_path) >= (int)outlen) {
            return fail(DLOTEL_ERR_TOO_LARGE, "launcher.daemon_path is too long");
        }
        return 0;
    }
    /* Next to this library (the Python package keeps both in one folder), then ../bin (a build
     * tree, or an install prefix), then PATH. */
    struct buf tried;
    buf_init(&tried, 1024);
    Dl_info info;
    char lib[PATH_MAX];
    if (dladdr((void *)&dlotel_agent_start, &info) != 0 && info.dli_fname != NULL &&
        realpath(info.dli_fname, lib) != NULL) {
        char *slash = strrchr(lib, '/');
        const char *rel[] = {"dlotel", "../bin/dlotel"};
        for (size_t i = 0; slash != NULL && i < 2; i++) {
            if (candidate(out, outlen, lib, (size_t)(slash - lib), rel[i])) {
                buf_cleanup(&tried);
                return 0;
            }
            buf_printf(&tried, "%.*s/%s, ", (int)(slash - lib), lib, rel[i]);
        }
    }
    const char *p = getenv("PATH");
    while (p != NULL && *p != '\0') {
        const char *end = strchr(p, ':');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        if (len > 0 && candidate(out, outlen, p, len, "dlotel")) {
            buf_cleanup(&tried);
            return 0;
        }
        p = end != NULL ? end + 1 : NULL;
    }
    buf_terminate(&tried);
    int rv = fail(DLOTEL_ERR_NOT_FOUND,
                  "cannot find the dlotel executable (looked at %sand in PATH); set "
                  "launcher.daemon_path or DATALAYER_OTEL_AGENT_DAEMON_PATH",
                  tried.data != NULL ? (const char *)tried.data : "");
    buf_cleanup(&tried);
    return rv;
}

/* Writes the effective configuration, secrets included, to <dir>/dlotel.yaml, mode 0600. */
static int write_config_file(struct launch *L, char *path, size_t pathlen)
{
    char tmp[CONTROL_PATH_MAX + 8];
    if (control_path(path, pathlen, L->dir, CONTROL_CONFIG_NAME) != 0 ||
        snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
        return fail(DLOTEL_ERR_TOO_LARGE, "runtime directory path too long");
    }
    struct buf b;
    buf_init(&b, 4u * 1024u * 1024u);
    int rv = config_print(L->cfg, &b, false);
    if (rv != 0) {
        buf_cleanup(&b);
        return fail(rv, "cannot print the configuration: %s", dlotel_strerror(rv));
    }
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        buf_cleanup(&b);
        return fail(DLOTEL_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
    }
    size_t off = 0;
    while (off < b.len) {
        ssize_t w = write(fd, b.data + off, b.len - off);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            buf_cleanup(&b);
            return fail(DLOTEL_ERR_IO, "cannot write %s: %s", tmp, strerror(e));
        }
        off += (size_t)w;
    }
    buf_cleanup(&b);
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return fail(DLOTEL_ERR_IO, "cannot write %s: %s", path, strerror(e));
    }
    return 0;
}

/* A sanitizer runtime preloaded into the host (to load an instrumented libdlotel into an
 * uninstrumented interpreter) must not follow into the daemon, which carries its own. */
static bool sanitizer_preload(const char *var)
{
    return strncmp(var, "LD_PRELOAD=", 11) == 0 &&
           (strstr(var, "libclang_rt.") != NULL || strstr(var, "libasan") != NULL ||
            strstr(var, "libubsan") != NULL || strstr(var, "libtsan") != NULL);
}

/* The environment of the daemon: ours, without a DATALAYER_* variable (the file says it all,
 * secrets included, and an environment is readable in /proc by the same user and by root). */
static char **daemon_env(void)
{
    size_t n = 0;
    while (environ[n] != NULL) {
        n++;
    }
    char **env = calloc(n + 1, sizeof(char *));
    if (env == NULL) {
        return NULL;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (strncmp(environ[i], "DATALAYER_", 10) == 0 ||
            strncmp(environ[i], "OTEL_SDK_DISABLED=", 18) == 0 || sanitizer_preload(environ[i])) {
            continue;
        }
        env[k++] = environ[i];
    }
    return env;
}

/* Up to LOG_TAIL_BYTES of what the daemon logged since |from|, whole lines, or "". */
static void log_tail(const char *dir, off_t from, char *out, size_t outlen)
{
    out[0] = '\0';
    char path[CONTROL_PATH_MAX];
    if (control_path(path, sizeof(path), dir, CONTROL_LOG_NAME) != 0) {
        return;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size <= from) {
        close(fd);
        return;
    }
    off_t start = st.st_size - from > LOG_TAIL_BYTES ? st.st_size - LOG_TAIL_BYTES : from;
    char text[LOG_TAIL_BYTES + 1];
    ssize_t n = pread(fd, text, LOG_TAIL_BYTES, start);
    close(fd);
    if (n <= 0) {
        return;
    }
    text[n] = '\0';
    char *p = text;
    if (start > from) {
        char *nl = strchr(p, '\n');
        p = nl != NULL ? nl + 1 : p;
    }
    size_t len = strlen(p);
    while (len > 0 && (p[len - 1] == '\n' || p[len - 1] == '\r')) {
        p[--len] = '\0';
    }
    snprintf(out, outlen, "%s", p);
}

/*
 * Reads the ready line from |rd| until the deadline, reaping the intermediate process |child| on
 * the way. Returns 0 with |r| filled (ok or not), DLOTEL_ERR_CLOSED when the pipe closed without
 * a line (the daemon died), or DLOTEL_ERR_TIMEOUT.
 */
static int wait_ready(struct launch *L, int rd, pid_t child, bool *child_reaped, int *child_status,
                      struct control_ready *r)
{
    char line[CONTROL_ERROR_MAX + 512];
    size_t len = 0;
    for (;;) {
        if (!*child_reaped) {
            pid_t w = waitpid(child, child_status, WNOHANG);
            if (w == child || (w < 0 && errno == ECHILD)) {
                *child_reaped = true;
            }
        }
        int left = ms_until(L->deadline_ns);
        if (left == 0) {
            return DLOTEL_ERR_TIMEOUT;
        }
        struct pollfd p = {.fd = rd, .events = POLLIN};
        /* Short slices while the intermediate process may still need reaping. */
        int rv = poll(&p, 1, *child_reaped ? left : (left < 20 ? left : 20));
        if (rv < 0 && errno != EINTR) {
            return DLOTEL_ERR_CLOSED;
        }
        if (rv <= 0) {
            continue;
        }
        ssize_t n = read(rd, line + len, sizeof(line) - 1 - len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return DLOTEL_ERR_CLOSED;
        }
        len += (size_t)n;
        char *nl = memchr(line, '\n', len);
        if (nl != NULL) {
            if (control_ready_parse(line, (size_t)(nl - line), r) != 0) {
                return DLOTEL_ERR_CLOSED;
            }
            return 0;
        }
        if (len == sizeof(line) - 1) {
            return DLOTEL_ERR_CLOSED;
        }
    }
}

static int spawn_daemon(struct launch *L)
{
    char daemon[PATH_MAX];
    int rv = find_daemon(L, daemon, sizeof(daemon));
    if (rv != 0) {
        return rv;
    }
    char cfg_path[CONTROL_PATH_MAX];
    rv = write_config_file(L, cfg_path, sizeof(cfg_path));
    if (rv != 0) {
        return rv;
    }
    char log_path[CONTROL_PATH_MAX];
    if (control_path(log_path, sizeof(log_path), L->dir, CONTROL_LOG_NAME) != 0) {
        return fail(DLOTEL_ERR_TOO_LARGE, "runtime directory path too long");
    }
    int logfd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (logfd < 0) {
        return fail(DLOTEL_ERR_IO, "cannot open %s: %s", log_path, strerror(errno));
    }
    struct stat st;
    off_t log_from = fstat(logfd, &st) == 0 ? st.st_size : 0;
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0) {
        close(logfd);
        return fail(DLOTEL_ERR_IO, "pipe: %s", strerror(errno));
    }
    /* Keep both descriptors clear of 0-3, the numbers the child's file actions assign: a dup2()
     * onto itself would leave close-on-exec set. */
    int hi_log = fcntl(logfd, F_DUPFD_CLOEXEC, 10);
    int hi_wr = fcntl(pfd[1], F_DUPFD_CLOEXEC, 10);
    close(logfd);
    close(pfd[1]);
    int rd = pfd[0];
    if (hi_log < 0 || hi_wr < 0) {
        if (hi_log >= 0) {
            close(hi_log);
        }
        if (hi_wr >= 0) {
            close(hi_wr);
        }
        close(rd);
        return fail(DLOTEL_ERR_IO, "fcntl: %s", strerror(errno));
    }

    char exit_arg[32] = "";
    if (L->exit_when_unused_ns >= 0) {
        snprintf(exit_arg, sizeof(exit_arg), "%" PRId64 "ms", L->exit_when_unused_ns / 1000000);
    }
    char *argv[] = {daemon,          "agent",
                    "--config",      cfg_path,
                    "--runtime-dir", L->dir,
                    "--ready-fd",    "3",
                    "--daemonize",   exit_arg[0] != '\0' ? "--exit-when-unused" : NULL,
                    exit_arg,        NULL};

    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, hi_log, 2);
    posix_spawn_file_actions_adddup2(&fa, hi_wr, 3);
    /* Nothing else of the host's leaks into the daemon: not its listening sockets, not its
     * files, whatever their close-on-exec flag says. */
    posix_spawn_file_actions_addclosefrom_np(&fa, 4);
    posix_spawn_file_actions_addchdir_np(&fa, "/");
    /* Its own session: the terminal's SIGINT and the host's process group signals stay with the
     * host. Default dispositions and an empty mask, whatever the host had set. */
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr,
                             POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    char **env = daemon_env();
    pid_t child = -1;
    int spawn_rv = env != NULL ? posix_spawn(&child, daemon, &fa, &attr, argv, env) : ENOMEM;
    free(env);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    close(hi_log);
    close(hi_wr);
    if (spawn_rv != 0) {
        close(rd);
        return fail(DLOTEL_ERR_DAEMON, "cannot run %s: %s", daemon, strerror(spawn_rv));
    }
    lg(DLOTEL_LOG_INFO, "starting the dlotel daemon: %s agent --config %s --runtime-dir %s", daemon,
       cfg_path, L->dir);

    bool reaped = false;
    int status = 0;
    struct control_ready r;
    rv = wait_ready(L, rd, child, &reaped, &status, &r);
    close(rd);
    if (!reaped) {
        /* The intermediate forks and exits at once; give it a moment, then leave it to a
         * thread rather than to chance. */
        for (int i = 0; i < 100 && !reaped; i++) {
            pid_t w = waitpid(child, &status, WNOHANG);
            if (w == child || (w < 0 && errno == ECHILD)) {
                reaped = true;
            } else {
                sleep_ms(10);
            }
        }
        if (!reaped) {
            reap_if_ours(child);
        }
    }
    char tail[LOG_TAIL_BYTES + 1];
    if (rv == DLOTEL_ERR_TIMEOUT) {
        pid_t pid = 0;
        if (control_lock_probe(L->dir, &pid) == 1 && pid > 0) {
            kill(pid, SIGKILL);
        }
        log_tail(L->dir, log_from, tail, sizeof(tail));
        return fail(DLOTEL_ERR_TIMEOUT,
                    "the dlotel daemon did not report ready within %" PRIu64 " ms (it was "
                    "killed); its log %s says:\n%s",
                    L->start_timeout_ns / 1000000u, log_path, tail[0] ? tail : "(nothing)");
    }
    if (rv != 0) {
        log_tail(L->dir, log_from, tail, sizeof(tail));
        char how[64] = "";
        if (reaped && WIFEXITED(status) && WEXITSTATUS(status) != 0) {
            snprintf(how, sizeof(how), " (exit status %d)", WEXITSTATUS(status));
        } else if (reaped && WIFSIGNALED(status)) {
            snprintf(how, sizeof(how), " (killed by signal %d)", WTERMSIG(status));
        }
        return fail(DLOTEL_ERR_DAEMON,
                    "the dlotel daemon exited before it was ready%s; its log %s "
                    "says:\n%s",
                    how, log_path, tail[0] ? tail : "(nothing)");
    }
    if (!r.ok) {
        /* When the host is PID 1 the daemon that gave up is (or is about to be) our child. */
        reap_if_ours((pid_t)r.pid);
        return fail(r.code, "%s", r.error);
    }
    if (r.config_hash != L->hash) {
        /* The file we wrote did not load back to the same configuration: a bug in
         * config_print(), or a binary of another version. Attaching would fail as a mismatch
         * with ourselves, so say what it really is. */
        char mine[17], theirs[17];
        control_hash_format(L->hash, mine);
        control_hash_format(r.config_hash, theirs);
        kill((pid_t)r.pid, SIGTERM);
        return fail(DLOTEL_ERR_INTERNAL,
                    "the dlotel daemon %s loaded %s as configuration %s, not %s: is it the same "
                    "version as this library (%s)?",
                    daemon, cfg_path, theirs, mine, DLOTEL_VERSION);
    }
    lg(DLOTEL_LOG_INFO,
       "started the dlotel daemon (pid %" PRId64 "), OTLP gRPC on port %d and "
       "HTTP on port %d",
       r.pid, r.grpc_port, r.http_port);
    return 0;
}

/* ---- start ---------------------------------------------------------------------------------- */

/* Takes the start lock within the deadline. Returns the locked fd, or a negative code. */
static int start_lock(struct launch *L)
{
    char path[CONTROL_PATH_MAX];
    if (control_path(path, sizeof(path), L->dir, CONTROL_START_LOCK_NAME) != 0) {
        return fail(DLOTEL_ERR_TOO_LARGE, "runtime directory path too long");
    }
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        return fail(DLOTEL_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    }
    for (int delay = 1;; delay = delay < 20 ? delay * 2 : 20) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
            return fd;
        }
        if (errno != EWOULDBLOCK && errno != EINTR) {
            int e = errno;
            close(fd);
            return fail(DLOTEL_ERR_IO, "cannot lock %s: %s", path, strerror(e));
        }
        if (ms_until(L->deadline_ns) == 0) {
            close(fd);
            return fail(DLOTEL_ERR_TIMEOUT,
                        "another process held %s for longer than the start timeout", path);
        }
        sleep_ms(delay);
    }
}

/* Connects to a running daemon, or starts one, under the start lock. */
static int connect_or_spawn(struct launch *L, struct dlotel_agent *a)
{
    bool spawned = false;
    for (;;) {
        int rv = try_attach(L, a);
        if (rv == 0) {
            a->spawned = spawned;
            return 0;
        }
        if (rv != DLOTEL_ERR_NOT_FOUND && rv != DLOTEL_ERR_CLOSED) {
            return rv;
        }
        if (spawned) {
            return fail(DLOTEL_ERR_DAEMON,
                        "the dlotel daemon reported ready but does not answer on %s", L->sock);
        }
        pid_t holder = 0;
        int held = control_lock_probe(L->dir, &holder);
        if (held < 0) {
            return fail(DLOTEL_ERR_IO, "cannot read the daemon lock in %s", L->dir);
        }
        if (held == 1) {
            /* A daemon is alive but not answering: it is stopping (draining its queues), or
             * wedged. Wait for it to go away or to answer. */
            if (ms_until(L->deadline_ns) == 0) {
                return fail(DLOTEL_ERR_TIMEOUT,
                            "a dlotel daemon (pid %ld) holds %s/%s but does not accept "
                            "processes on %s (it may be stopping); try again, or stop it",
                            (long)holder, L->dir, CONTROL_LOCK_NAME, L->sock);
            }
            sleep_ms(20);
            continue;
        }
        /* No daemon: a socket file here belongs to one that died (killed, crashed). */
        if (unlink(L->sock) == 0) {
            lg(DLOTEL_LOG_WARN,
               "removed the control socket %s left by a dlotel daemon that is "
               "gone",
               L->sock);
        }
        rv = spawn_daemon(L);
        if (rv != 0) {
            return rv;
        }
        spawned = true;
    }
}

int dlotel_agent_start(dlotel_agent **out, const dlotel_config *c)
{
    err_clear();
    if (out == NULL || c == NULL) {
        return fail(DLOTEL_ERR_INVALID_ARG, "dlotel_agent_start: NULL argument");
    }
    struct launch L;
    memset(&L, 0, sizeof(L));
    L.c = c;
    int rv = launch_options(&L);
    if (rv != 0) {
        goto out_env;
    }
    L.deadline_ns = time_monotonic_nano() + L.start_timeout_ns;

    if (disabled(&L)) {
        rv = fail(DLOTEL_ERR_DISABLED, "dlotel is disabled by its configuration (enabled: false, "
                                       "or OTEL_SDK_DISABLED=true); no daemon was started");
        goto out_env;
    }
    rv = build_config(&L, NULL, &L.cfg);
    if (rv != 0) {
        goto out_env;
    }
    char why[512];
    rv = control_runtime_dir(L.dir, sizeof(L.dir), L.runtime_override, L.envp, true, why,
                             sizeof(why));
    if (rv != 0) {
        rv = fail(rv, "%s", why);
        goto out_cfg;
    }
    if (control_path(L.sock, sizeof(L.sock), L.dir, CONTROL_SOCKET_NAME) != 0) {
        rv = fail(DLOTEL_ERR_TOO_LARGE, "runtime directory path too long");
        goto out_cfg;
    }
    if (L.cfg->log.file == NULL) {
        /* The daemon has no terminal: its log goes to the runtime directory, rotated at
         * log.max_size. Every launcher adds the same path, so the hash stays comparable. */
        char log_path[CONTROL_PATH_MAX];
        control_path(log_path, sizeof(log_path), L.dir, CONTROL_LOG_NAME);
        struct config *with_log;
        rv = build_config(&L, log_path, &with_log);
        if (rv != 0) {
            goto out_cfg;
        }
        config_free(L.cfg);
        L.cfg = with_log;
    }
    L.hash = control_hash_mix(config_hash(L.cfg), L.exit_when_unused_ns);

    struct dlotel_agent *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        rv = DLOTEL_ERR_NOMEM;
        goto out_cfg;
    }
    a->fd = -1;
    a->owner = getpid();
    a->shutdown_timeout_ms = L.cfg->shutdown_timeout_ns / 1000000u;
    memcpy(a->dir, L.dir, sizeof(a->dir));

    int lock_fd = start_lock(&L);
    if (lock_fd < 0) {
        rv = lock_fd;
        goto out_agent;
    }
    rv = connect_or_spawn(&L, a);
    close(lock_fd);
    if (rv != 0) {
        goto out_agent;
    }
    reap_if_ours((pid_t)a->daemon_pid);
    pthread_mutex_init(&a->mu, NULL);
    *out = a;
    config_free(L.cfg);
    free(L.envp);
    return 0;

out_agent:
    free(a);
out_cfg:
    config_free(L.cfg);
out_env:
    free(L.envp);
    return rv;
}

/* ---- calls on an attached agent ------------------------------------------------------------- */

/* Checks that |a| can talk to the daemon. Called with a->mu held. */
static int usable(struct dlotel_agent *a)
{
    if (a->owner != getpid()) {
        return fail(DLOTEL_ERR_CLOSED, "this dlotel agent handle was inherited through fork(); "
                                       "call dlotel_agent_start() in this process");
    }
    if (a->fd < 0) {
        return fail(DLOTEL_ERR_CLOSED, "this dlotel agent handle is stopped");
    }
    return 0;
}

/* One request and its reply; failures set the detail string. Called with a->mu held. */
static int call(struct dlotel_agent *a, const struct control_request *req, int timeout_ms,
                struct control_reply *rep)
{
    int rv = control_client_call(a->fd, req, timeout_ms, rep);
    if (rv == DLOTEL_ERR_CLOSED) {
        /* The daemon died or was stopped: the handle is done; a new start() replaces it. */
        close(a->fd);
        a->fd = -1;
        return fail(rv,
                    "the dlotel daemon (pid %d) is gone (the control connection closed); "
                    "start the agent again",
                    a->daemon_pid);
    }
    if (rv != 0) {
        /* After a timeout the reply may still come, out of step with the next request. */
        close(a->fd);
        a->fd = -1;
        return fail(rv, "no answer from the dlotel daemon (pid %d): %s; the handle is closed",
                    a->daemon_pid, dlotel_strerror(rv));
    }
    if (!rep->ok) {
        rv = fail(rep->code, "%s", rep->error);
        control_reply_cleanup(rep);
        return rv;
    }
    return 0;
}

int dlotel_agent_flush(dlotel_agent *a, int timeout_ms)
{
    err_clear();
    if (a == NULL || timeout_ms < 0 || timeout_ms > 3600000) {
        return fail(DLOTEL_ERR_INVALID_ARG, "dlotel_agent_flush: timeout_ms must be 0 to 3600000");
    }
    pthread_mutex_lock(&a->mu);
    int rv = usable(a);
    if (rv == 0) {
        struct control_request req = {.op = CONTROL_OP_FLUSH, .timeout_ms = timeout_ms};
        struct control_reply rep;
        /* The daemon answers at its own deadline; the margin covers a busy machine. */
        rv = call(a, &req, timeout_ms + CALL_TIMEOUT_MS, &rep);
        if (rv == 0) {
            control_reply_cleanup(&rep);
        }
    }
    pthread_mutex_unlock(&a->mu);
    return rv;
}

int dlotel_agent_status(dlotel_agent *a, char **json_out)
{
    err_clear();
    if (a == NULL || json_out == NULL) {
        return fail(DLOTEL_ERR_INVALID_ARG, "dlotel_agent_status: NULL argument");
    }
    pthread_mutex_lock(&a->mu);
    int rv = usable(a);
    if (rv == 0) {
        struct control_request req = {.op = CONTROL_OP_STATUS};
        struct control_reply rep;
        rv = call(a, &req, CALL_TIMEOUT_MS, &rep);
        if (rv == 0) {
            json_t *st = json_object_get((json_t *)rep.json, "status");
            char *text = json_is_object(st) ? json_dumps(st, JSON_COMPACT) : NULL;
            if (text == NULL) {
                rv = fail(DLOTEL_ERR_BAD_INPUT, "the daemon's status reply has no status object");
            } else {
                *json_out = text;
            }
            control_reply_cleanup(&rep);
        }
    }
    pthread_mutex_unlock(&a->mu);
    return rv;
}

int dlotel_agent_port(const dlotel_agent *a, int which)
{
    if (a == NULL) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    switch (which) {
    case DLOTEL_PORT_GRPC:
        return a->grpc_port;
    case DLOTEL_PORT_HTTP:
        return a->http_port;
    }
    return DLOTEL_ERR_INVALID_ARG;
}

int dlotel_agent_daemon_pid(const dlotel_agent *a)
{
    return a == NULL ? DLOTEL_ERR_INVALID_ARG : a->daemon_pid;
}

int dlotel_agent_spawned(const dlotel_agent *a)
{
    return a != NULL && a->spawned ? 1 : 0;
}

/* Waits for the daemon to release its lock, i.e. to exit. */
static int wait_daemon_gone(struct dlotel_agent *a, uint64_t deadline_ns)
{
    for (;;) {
        pid_t pid;
        int held = control_lock_probe(a->dir, &pid);
        if (held <= 0) {
            return 0;
        }
        if (ms_until(deadline_ns) == 0) {
            return fail(DLOTEL_ERR_TIMEOUT, "the dlotel daemon (pid %d) did not exit in time",
                        a->daemon_pid);
        }
        sleep_ms(10);
    }
}

int dlotel_agent_stop(dlotel_agent *a, unsigned flags)
{
    err_clear();
    if (a == NULL || (flags & ~(unsigned)DLOTEL_STOP_DAEMON) != 0) {
        return fail(DLOTEL_ERR_INVALID_ARG, "dlotel_agent_stop: bad argument");
    }
    if (a->owner != getpid()) {
        /* Inherited through fork(): the parent's attachment is the parent's, so only drop our
         * copy of its socket. The mutex is not touched: another parent thread may have held it
         * at the fork, and it would stay locked forever in this child. */
        if (a->fd >= 0) {
            close(a->fd);
            a->fd = -1;
        }
        return 0;
    }
    pthread_mutex_lock(&a->mu);
    int rv = 0;
    if (a->fd < 0) {
        goto out;
    }
    struct control_reply rep;
    if (flags & DLOTEL_STOP_DAEMON) {
        uint64_t deadline =
            time_monotonic_nano() + (a->shutdown_timeout_ms + (uint64_t)CALL_TIMEOUT_MS) * 1000000u;
        struct control_request req = {.op = CONTROL_OP_STOP};
        rv = control_client_call(a->fd, &req, CALL_TIMEOUT_MS, &rep);
        if (rv == 0) {
            bool ok = rep.ok;
            if (!ok) {
                rv = fail(rep.code, "%s", rep.error);
            }
            control_reply_cleanup(&rep);
            if (ok) {
                control_client_wait_closed(a->fd, ms_until(deadline));
            }
        } else if (rv == DLOTEL_ERR_CLOSED) {
            rv = 0; /* Already gone. */
        }
        close(a->fd);
        a->fd = -1;
        if (rv == 0) {
            rv = wait_daemon_gone(a, deadline);
        }
        if (rv == 0) {
            lg(DLOTEL_LOG_INFO, "stopped the dlotel daemon (pid %d)", a->daemon_pid);
        }
        goto out;
    }
    struct control_request req = {.op = CONTROL_OP_DETACH};
    if (control_client_call(a->fd, &req, CALL_TIMEOUT_MS, &rep) == 0) {
        lg(DLOTEL_LOG_INFO,
           "detached from the dlotel daemon (pid %d); processes still attached: %" PRId64,
           a->daemon_pid, jint(rep.json, "users", 0));
        control_reply_cleanup(&rep);
    }
    /* Whatever the answer: closing the connection detaches too. */
    close(a->fd);
    a->fd = -1;
out:
    pthread_mutex_unlock(&a->mu);
    return rv;
}

void dlotel_agent_free(dlotel_agent *a)
{
    if (a == NULL) {
        return;
    }
    if (a->fd >= 0) {
        /* Closing the connection is the detach; no round trip needed on the way out. (In a
         * forked child it only drops the inherited copy: the parent stays attached.) */
        close(a->fd);
    }
    if (a->owner == getpid()) {
        pthread_mutex_destroy(&a->mu);
    }
    free(a);
}
