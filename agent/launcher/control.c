/*
 * The control protocol's codec, the runtime directory, the daemon lock and the blocking client
 * half (see control.h). Nothing here uses libuv, so libdlotel, which runs inside someone else's
 * process, links it without an event loop.
 */
#include "launcher/control.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>

#include "core/timeutil.h"
#include "dlotel.h"

static void why_set(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void why_set(char *why, size_t whylen, const char *fmt, ...)
{
    if (why == NULL || whylen == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
}

/* ---- codec ---------------------------------------------------------------------------------- */

int control_frame_next(const uint8_t *data, size_t len, size_t max, const uint8_t **payload,
                       size_t *payload_len, size_t *consumed)
{
    if (len < 4) {
        return 0;
    }
    uint32_t n = (uint32_t)data[0] << 24 | (uint32_t)data[1] << 16 | (uint32_t)data[2] << 8 |
                 (uint32_t)data[3];
    if (n > max) {
        return DLOTEL_ERR_TOO_LARGE;
    }
    if (n == 0) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    if (len - 4 < n) {
        return 0;
    }
    *payload = data + 4;
    *payload_len = n;
    *consumed = 4 + (size_t)n;
    return 1;
}

int control_frame_append(struct buf *out, const char *json, size_t len)
{
    if (len == 0 || len > UINT32_MAX) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    uint8_t hdr[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                      (uint8_t)len};
    int rv = buf_reserve(out, 4 + len);
    if (rv != 0) {
        return rv;
    }
    buf_append(out, hdr, 4);
    buf_append(out, json, len);
    return 0;
}

static const char *const op_names[] = {
    [CONTROL_OP_ATTACH] = "attach", [CONTROL_OP_DETACH] = "detach", [CONTROL_OP_STATUS] = "status",
    [CONTROL_OP_FLUSH] = "flush",   [CONTROL_OP_STOP] = "stop",
};
#define N_OPS (sizeof(op_names) / sizeof(op_names[0]))

/* The longest flush a client may ask for: an hour is already far past any sane shutdown. */
#define FLUSH_MAX_MS 3600000

void control_hash_format(uint64_t h, char out[17])
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--) {
        out[i] = hex[h & 0xf];
        h >>= 4;
    }
    out[16] = '\0';
}

int control_hash_parse(const char *s, uint64_t *out)
{
    uint64_t h = 0;
    size_t i = 0;
    for (; s[i] != '\0'; i++) {
        if (i == 16) {
            return DLOTEL_ERR_BAD_INPUT;
        }
        char c = s[i];
        unsigned v;
        if (c >= '0' && c <= '9') {
            v = (unsigned)(c - '0');
        } else if (c >= 'a' && c <= 'f') {
            v = (unsigned)(c - 'a' + 10);
        } else if (c >= 'A' && c <= 'F') {
            v = (unsigned)(c - 'A' + 10);
        } else {
            return DLOTEL_ERR_BAD_INPUT;
        }
        h = h << 4 | v;
    }
    if (i != 16) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    *out = h;
    return 0;
}

uint64_t control_hash_mix(uint64_t config_hash, int64_t exit_when_unused_ns)
{
    /* FNV-1a over the launcher's additions, seeded with the config's own hash. */
    char text[128];
    int n = snprintf(text, sizeof(text), "version=%s;exit_when_unused=%" PRId64, DLOTEL_VERSION,
                     exit_when_unused_ns < 0 ? (int64_t)-1 : exit_when_unused_ns);
    uint64_t h = config_hash ^ 0xcbf29ce484222325ull;
    for (int i = 0; i < n && i < (int)sizeof(text); i++) {
        h ^= (uint8_t)text[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* Loads one JSON object from |p|; NULL when it is not one. */
static json_t *load_object(const uint8_t *p, size_t len, char *why, size_t whylen)
{
    json_error_t jerr;
    json_t *j = json_loadb((const char *)p, len, JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL) {
        why_set(why, whylen, "not JSON: %s", jerr.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        why_set(why, whylen, "not a JSON object");
        return NULL;
    }
    return j;
}

int control_request_parse(const uint8_t *payload, size_t len, struct control_request *out,
                          char *why, size_t whylen)
{
    json_t *j = load_object(payload, len, why, whylen);
    if (j == NULL) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    struct control_request r;
    memset(&r, 0, sizeof(r));
    const char *op = json_string_value(json_object_get(j, "op"));
    if (op == NULL) {
        why_set(why, whylen, "\"op\" must be a string");
        goto fail;
    }
    size_t i = 0;
    for (; i < N_OPS; i++) {
        if (strcmp(op, op_names[i]) == 0) {
            break;
        }
    }
    if (i == N_OPS) {
        why_set(why, whylen, "unknown op \"%.40s\"", op);
        goto fail;
    }
    r.op = (enum control_op)i;
    if (r.op == CONTROL_OP_ATTACH) {
        json_t *pid = json_object_get(j, "pid");
        if (!json_is_integer(pid) || json_integer_value(pid) <= 0 ||
            json_integer_value(pid) > INT32_MAX) {
            why_set(why, whylen, "attach: \"pid\" must be a positive integer");
            goto fail;
        }
        r.pid = json_integer_value(pid);
        const char *h = json_string_value(json_object_get(j, "config_hash"));
        if (h == NULL || control_hash_parse(h, &r.config_hash) != 0) {
            why_set(why, whylen, "attach: \"config_hash\" must be 16 hex digits");
            goto fail;
        }
        json_t *v = json_object_get(j, "version");
        if (v != NULL) {
            const char *vs = json_string_value(v);
            if (vs == NULL || strlen(vs) >= sizeof(r.version)) {
                why_set(why, whylen, "attach: \"version\" must be a short string");
                goto fail;
            }
            memcpy(r.version, vs, strlen(vs) + 1);
        }
    } else if (r.op == CONTROL_OP_FLUSH) {
        json_t *t = json_object_get(j, "timeout_ms");
        if (!json_is_integer(t) || json_integer_value(t) < 0 ||
            json_integer_value(t) > FLUSH_MAX_MS) {
            why_set(why, whylen, "flush: \"timeout_ms\" must be an integer from 0 to %d",
                    FLUSH_MAX_MS);
            goto fail;
        }
        r.timeout_ms = json_integer_value(t);
    }
    json_decref(j);
    *out = r;
    return 0;

fail:
    json_decref(j);
    return DLOTEL_ERR_BAD_INPUT;
}

int control_request_append(struct buf *out, const struct control_request *r)
{
    if ((unsigned)r->op >= N_OPS) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    json_t *j = json_object();
    if (j == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    int rv = DLOTEL_ERR_NOMEM;
    if (json_object_set_new(j, "op", json_string(op_names[r->op])) != 0) {
        goto out;
    }
    if (r->op == CONTROL_OP_ATTACH) {
        char hex[17];
        control_hash_format(r->config_hash, hex);
        if (json_object_set_new(j, "pid", json_integer(r->pid)) != 0 ||
            json_object_set_new(j, "config_hash", json_string(hex)) != 0 ||
            json_object_set_new(j, "version", json_string(r->version)) != 0) {
            goto out;
        }
    } else if (r->op == CONTROL_OP_FLUSH) {
        if (json_object_set_new(j, "timeout_ms", json_integer(r->timeout_ms)) != 0) {
            goto out;
        }
    }
    char *text = json_dumps(j, JSON_COMPACT);
    if (text == NULL) {
        goto out;
    }
    rv = control_frame_append(out, text, strlen(text));
    free(text);
out:
    json_decref(j);
    return rv;
}

int control_reply_parse(const uint8_t *payload, size_t len, struct control_reply *out)
{
    json_t *j = load_object(payload, len, NULL, 0);
    if (j == NULL) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    json_t *ok = json_object_get(j, "ok");
    if (!json_is_boolean(ok)) {
        json_decref(j);
        return DLOTEL_ERR_BAD_INPUT;
    }
    memset(out, 0, sizeof(*out));
    out->ok = json_is_true(ok);
    if (!out->ok) {
        json_t *code = json_object_get(j, "code");
        out->code = DLOTEL_ERR_INTERNAL;
        if (json_is_integer(code) && json_integer_value(code) < 0 &&
            json_integer_value(code) > -10000) {
            out->code = (int)json_integer_value(code);
        }
        const char *msg = json_string_value(json_object_get(j, "error"));
        snprintf(out->error, sizeof(out->error), "%s", msg != NULL ? msg : "(no message)");
    }
    out->json = j;
    return 0;
}

void control_reply_cleanup(struct control_reply *r)
{
    if (r->json != NULL) {
        json_decref((json_t *)r->json);
        r->json = NULL;
    }
}

/* ---- the runtime directory ------------------------------------------------------------------ */

static const char *env_get(char **envp, const char *name)
{
    if (envp == NULL) {
        return getenv(name);
    }
    size_t n = strlen(name);
    for (char **e = envp; *e != NULL; e++) {
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=') {
            return *e + n + 1;
        }
    }
    return NULL;
}

int control_path(char *out, size_t outlen, const char *dir, const char *name)
{
    int n = snprintf(out, outlen, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= outlen) {
        return DLOTEL_ERR_TOO_LARGE;
    }
    return 0;
}

/* mkdir -p with mode 0700 for what it creates. */
static int mkdir_p(const char *path)
{
    char tmp[4096];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof(tmp)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(tmp, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
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

int control_runtime_dir(char *out, size_t outlen, const char *override, char **envp, bool create,
                        char *why, size_t whylen)
{
    char dir[4096];
    int n;
    bool shared_tmp = false;
    const char *xdg = env_get(envp, "XDG_RUNTIME_DIR");
    if (override != NULL && override[0] != '\0') {
        n = snprintf(dir, sizeof(dir), "%s", override);
    } else if (xdg != NULL && xdg[0] == '/') {
        n = snprintf(dir, sizeof(dir), "%s/dlotel", xdg);
    } else {
        /* /tmp is shared by every user: the folder is named for the uid and checked below, so
         * another user cannot prepare it for us. */
        n = snprintf(dir, sizeof(dir), "/tmp/dlotel-%u", (unsigned)geteuid());
        shared_tmp = true;
    }
    if (n < 0 || (size_t)n >= sizeof(dir)) {
        why_set(why, whylen, "runtime directory path too long");
        return DLOTEL_ERR_TOO_LARGE;
    }
    while (n > 1 && dir[n - 1] == '/') {
        dir[--n] = '\0';
    }
    /* The longest name inside must fit in a sockaddr_un. */
    if ((size_t)n + 1 + sizeof(CONTROL_START_LOCK_NAME) > CONTROL_PATH_MAX ||
        (size_t)n + 1 > outlen) {
        why_set(why, whylen,
                "runtime directory %s is too long for a UNIX socket path (at most %d bytes); set "
                "DATALAYER_OTEL_AGENT_RUNTIME_DIR to a shorter one",
                dir, (int)(CONTROL_PATH_MAX - 1 - sizeof(CONTROL_START_LOCK_NAME)));
        return DLOTEL_ERR_TOO_LARGE;
    }
    struct stat st;
    if (lstat(dir, &st) != 0) {
        if (errno != ENOENT) {
            why_set(why, whylen, "cannot stat runtime directory %s: %s", dir, strerror(errno));
            return DLOTEL_ERR_IO;
        }
        if (!create) {
            why_set(why, whylen, "%s does not exist", dir);
            return DLOTEL_ERR_NOT_FOUND;
        }
        int rv = shared_tmp ? mkdir(dir, 0700) : mkdir_p(dir);
        if (rv != 0 && errno != EEXIST) {
            why_set(why, whylen, "cannot create runtime directory %s: %s", dir, strerror(errno));
            return DLOTEL_ERR_IO;
        }
        if (lstat(dir, &st) != 0) {
            why_set(why, whylen, "cannot stat runtime directory %s: %s", dir, strerror(errno));
            return DLOTEL_ERR_IO;
        }
    }
    if (!S_ISDIR(st.st_mode)) {
        why_set(why, whylen, "runtime directory %s is not a directory (a symbolic link?)", dir);
        return DLOTEL_ERR_IO;
    }
    if (st.st_uid != geteuid()) {
        why_set(why, whylen, "runtime directory %s belongs to uid %u, not to this user (%u)", dir,
                (unsigned)st.st_uid, (unsigned)geteuid());
        return DLOTEL_ERR_IO;
    }
    if ((st.st_mode & 077) != 0) {
        why_set(why, whylen,
                "runtime directory %s is open to other users (mode %04o); it must be "
                "0700",
                dir, (unsigned)(st.st_mode & 0777));
        return DLOTEL_ERR_IO;
    }
    memcpy(out, dir, (size_t)n + 1);
    return 0;
}

/* ---- the daemon lock ------------------------------------------------------------------------ */

static pid_t read_pid(int fd)
{
    char text[32];
    ssize_t n = pread(fd, text, sizeof(text) - 1, 0);
    if (n <= 0) {
        return 0;
    }
    text[n] = '\0';
    char *end;
    long v = strtol(text, &end, 10);
    if (end == text || v <= 0 || v > INT32_MAX) {
        return 0;
    }
    return (pid_t)v;
}

int control_lock_acquire(const char *dir, int *fd_out, char *why, size_t whylen)
{
    char path[CONTROL_PATH_MAX];
    if (control_path(path, sizeof(path), dir, CONTROL_LOCK_NAME) != 0) {
        why_set(why, whylen, "lock path too long");
        return DLOTEL_ERR_TOO_LARGE;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        why_set(why, whylen, "cannot open %s: %s", path, strerror(errno));
        return DLOTEL_ERR_IO;
    }
    /* An open file description lock: it belongs to this descriptor, not to the process, so it
     * survives nothing but the descriptor, and F_OFD_GETLK lets launchers test it. */
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    if (fcntl(fd, F_OFD_SETLK, &fl) != 0) {
        int e = errno;
        if (e == EAGAIN || e == EACCES) {
            pid_t other = read_pid(fd);
            close(fd);
            why_set(why, whylen, "another dlotel daemon (pid %ld) already runs for %s", (long)other,
                    dir);
            return DLOTEL_ERR_ADDR_IN_USE;
        }
        close(fd);
        why_set(why, whylen, "cannot lock %s: %s", path, strerror(e));
        return DLOTEL_ERR_IO;
    }
    char text[32];
    int n = snprintf(text, sizeof(text), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, text, (size_t)n, 0) != n) {
        why_set(why, whylen, "cannot write %s: %s", path, strerror(errno));
        close(fd);
        return DLOTEL_ERR_IO;
    }
    *fd_out = fd;
    return 0;
}

int control_lock_probe(const char *dir, pid_t *pid)
{
    char path[CONTROL_PATH_MAX];
    if (control_path(path, sizeof(path), dir, CONTROL_LOCK_NAME) != 0) {
        return DLOTEL_ERR_TOO_LARGE;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT) {
            *pid = 0;
            return 0;
        }
        return DLOTEL_ERR_IO;
    }
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    if (fcntl(fd, F_OFD_GETLK, &fl) != 0) {
        close(fd);
        return DLOTEL_ERR_IO;
    }
    int held = fl.l_type != F_UNLCK;
    *pid = held ? read_pid(fd) : 0;
    close(fd);
    return held;
}

/* ---- the blocking client half ---------------------------------------------------------------- */

int control_client_connect(const char *path, int *fd_out)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    size_t len = strlen(path);
    if (len >= sizeof(sa.sun_path)) {
        return DLOTEL_ERR_TOO_LARGE;
    }
    memcpy(sa.sun_path, path, len + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return DLOTEL_ERR_IO;
    }
    int rv;
    do {
        rv = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    } while (rv != 0 && errno == EINTR);
    if (rv != 0) {
        int e = errno;
        close(fd);
        return e == ENOENT || e == ECONNREFUSED ? DLOTEL_ERR_NOT_FOUND : DLOTEL_ERR_IO;
    }
    *fd_out = fd;
    return 0;
}

/* Milliseconds left before |deadline_ns| (monotonic), at least 0; -1 for no deadline. */
static int ms_left(uint64_t deadline_ns)
{
    if (deadline_ns == 0) {
        return -1;
    }
    uint64_t now = time_monotonic_nano();
    if (now >= deadline_ns) {
        return 0;
    }
    uint64_t ms = (deadline_ns - now + 999999) / 1000000;
    return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

/* Waits for |events| on |fd|. Returns 0, DLOTEL_ERR_TIMEOUT or DLOTEL_ERR_IO. */
static int wait_fd(int fd, short events, uint64_t deadline_ns)
{
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events};
        int rv = poll(&p, 1, ms_left(deadline_ns));
        if (rv > 0) {
            return 0;
        }
        if (rv == 0) {
            return DLOTEL_ERR_TIMEOUT;
        }
        if (errno != EINTR) {
            return DLOTEL_ERR_IO;
        }
    }
}

static int send_all(int fd, const uint8_t *p, size_t n, uint64_t deadline_ns)
{
    while (n > 0) {
        /* MSG_NOSIGNAL: a daemon that died must not kill the host with SIGPIPE. */
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int rv = wait_fd(fd, POLLOUT, deadline_ns);
            if (rv != 0) {
                return rv;
            }
            continue;
        }
        return w < 0 && (errno == EPIPE || errno == ECONNRESET) ? DLOTEL_ERR_CLOSED : DLOTEL_ERR_IO;
    }
    return 0;
}

/* Reads exactly |n| bytes. */
static int recv_all(int fd, uint8_t *p, size_t n, uint64_t deadline_ns)
{
    while (n > 0) {
        ssize_t r = recv(fd, p, n, MSG_DONTWAIT);
        if (r > 0) {
            p += r;
            n -= (size_t)r;
            continue;
        }
        if (r == 0) {
            return DLOTEL_ERR_CLOSED;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int rv = wait_fd(fd, POLLIN, deadline_ns);
            if (rv != 0) {
                return rv;
            }
            continue;
        }
        return errno == ECONNRESET ? DLOTEL_ERR_CLOSED : DLOTEL_ERR_IO;
    }
    return 0;
}

int control_client_call(int fd, const struct control_request *req, int timeout_ms,
                        struct control_reply *out)
{
    uint64_t deadline = 0;
    if (timeout_ms >= 0) {
        deadline = time_monotonic_nano() + (uint64_t)timeout_ms * 1000000u;
        if (deadline == 0) {
            deadline = 1;
        }
    }
    struct buf b;
    buf_init(&b, CONTROL_MAX_REQUEST + 4);
    int rv = control_request_append(&b, req);
    if (rv != 0) {
        buf_cleanup(&b);
        return rv;
    }
    rv = send_all(fd, b.data, b.len, deadline);
    buf_cleanup(&b);
    if (rv != 0) {
        return rv;
    }
    uint8_t hdr[4];
    rv = recv_all(fd, hdr, 4, deadline);
    if (rv != 0) {
        return rv;
    }
    const uint8_t *payload;
    size_t plen, consumed;
    rv = control_frame_next(hdr, 4, CONTROL_MAX_REPLY, &payload, &plen, &consumed);
    if (rv < 0) {
        return rv;
    }
    size_t n = (size_t)hdr[0] << 24 | (size_t)hdr[1] << 16 | (size_t)hdr[2] << 8 | hdr[3];
    uint8_t *body = malloc(n);
    if (body == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    rv = recv_all(fd, body, n, deadline);
    if (rv == 0) {
        rv = control_reply_parse(body, n, out);
    }
    free(body);
    return rv;
}

int control_client_wait_closed(int fd, int timeout_ms)
{
    uint64_t deadline =
        time_monotonic_nano() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms) * 1000000u;
    for (;;) {
        uint8_t junk[256];
        ssize_t r = recv(fd, junk, sizeof(junk), MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)) {
            return 0;
        }
        if (r > 0 || errno == EINTR) {
            continue;
        }
        int rv = wait_fd(fd, POLLIN, deadline);
        if (rv == DLOTEL_ERR_TIMEOUT) {
            return rv;
        }
        if (rv != 0) {
            return 0;
        }
    }
}

/* ---- readiness ------------------------------------------------------------------------------ */

void control_ready_write(int fd, const struct control_ready *r)
{
    json_t *j = json_object();
    if (j == NULL) {
        close(fd);
        return;
    }
    json_object_set_new(j, "ok", json_boolean(r->ok));
    if (r->ok) {
        char hex[17];
        control_hash_format(r->config_hash, hex);
        json_object_set_new(j, "pid", json_integer(r->pid));
        json_object_set_new(j, "config_hash", json_string(hex));
        json_object_set_new(j, "grpc_port", json_integer(r->grpc_port));
        json_object_set_new(j, "http_port", json_integer(r->http_port));
    } else {
        if (r->pid > 0) {
            json_object_set_new(j, "pid", json_integer(r->pid));
        }
        json_object_set_new(j, "code", json_integer(r->code < 0 ? r->code : DLOTEL_ERR_INTERNAL));
        /* A message that is not UTF-8 (a path) would make json_string() fail: say so instead. */
        json_t *msg = json_string(r->error);
        json_object_set_new(j, "error", msg != NULL ? msg : json_string("(message not UTF-8)"));
    }
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (text != NULL) {
        size_t n = strlen(text);
        text[n] = '\n';
        const char *p = text;
        size_t left = n + 1;
        while (left > 0) {
            ssize_t w = write(fd, p, left);
            if (w < 0 && errno == EINTR) {
                continue;
            }
            if (w <= 0) {
                break;
            }
            p += w;
            left -= (size_t)w;
        }
        free(text);
    }
    close(fd);
}

int control_ready_parse(const char *line, size_t len, struct control_ready *out)
{
    json_t *j = load_object((const uint8_t *)line, len, NULL, 0);
    if (j == NULL) {
        return DLOTEL_ERR_BAD_INPUT;
    }
    struct control_ready r;
    memset(&r, 0, sizeof(r));
    json_t *ok = json_object_get(j, "ok");
    if (!json_is_boolean(ok)) {
        goto fail;
    }
    r.ok = json_is_true(ok);
    if (r.ok) {
        json_t *pid = json_object_get(j, "pid");
        json_t *gp = json_object_get(j, "grpc_port");
        json_t *hp = json_object_get(j, "http_port");
        const char *h = json_string_value(json_object_get(j, "config_hash"));
        if (!json_is_integer(pid) || json_integer_value(pid) <= 0 ||
            json_integer_value(pid) > INT32_MAX || !json_is_integer(gp) || !json_is_integer(hp) ||
            json_integer_value(gp) < 0 || json_integer_value(gp) > 65535 ||
            json_integer_value(hp) < 0 || json_integer_value(hp) > 65535 || h == NULL ||
            control_hash_parse(h, &r.config_hash) != 0) {
            goto fail;
        }
        r.pid = json_integer_value(pid);
        r.grpc_port = (int)json_integer_value(gp);
        r.http_port = (int)json_integer_value(hp);
    } else {
        json_t *code = json_object_get(j, "code");
        r.code = DLOTEL_ERR_INTERNAL;
        if (json_is_integer(code) && json_integer_value(code) < 0 &&
            json_integer_value(code) > -10000) {
            r.code = (int)json_integer_value(code);
        }
        const char *msg = json_string_value(json_object_get(j, "error"));
        snprintf(r.error, sizeof(r.error), "%s", msg != NULL ? msg : "(no message)");
        json_t *pid = json_object_get(j, "pid");
        if (json_is_integer(pid) && json_integer_value(pid) > 0 &&
            json_integer_value(pid) <= INT32_MAX) {
            r.pid = json_integer_value(pid);
        }
    }
    json_decref(j);
    *out = r;
    return 0;

fail:
    json_decref(j);
    return DLOTEL_ERR_BAD_INPUT;
}
