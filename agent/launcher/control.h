/*
 * The control socket: how host processes (through libdlotel) and the `dlotel` command talk to the
 * one daemon of a user on a host (DESIGN.md section 1).
 *
 * Everything lives in the per-user runtime directory (control_runtime_dir()):
 *
 *     dlotel.lock        locked by the daemon for its whole life (an open file description
 *                        lock, F_OFD_SETLK, so a launcher can test it without taking it);
 *                        holds the daemon's pid as text.
 *     dlotel.start.lock  flock()ed by a launcher around "connect or spawn", so that sixteen
 *                        processes starting at once make one daemon.
 *     dlotel.sock        the control socket, a UNIX stream socket, mode 0600.
 *     dlotel.yaml        the effective configuration the daemon was started with, mode 0600
 *                        (it holds secrets, which never travel in argv or the environment).
 *     dlotel.log         the daemon's log, rotated to dlotel.log.1 at log.max_size.
 *
 * The protocol is a sequence of frames in both directions: a 4-byte big-endian length, then
 * that many bytes of one JSON object. A client sends a request and reads exactly one reply
 * before it sends the next. Requests:
 *
 *     {"op":"attach","pid":N,"config_hash":"<16 hex>","version":"0.1.0"}
 *         -> {"ok":true,"pid":<daemon>,"users":N,"config_hash":"..","version":"..",
 *             "grpc_port":N,"http_port":N}
 *         or {"ok":false,"code":DLOTEL_ERR_CONFIG_MISMATCH,"error":"..."}
 *     {"op":"detach"}                 -> {"ok":true,"users":N}
 *     {"op":"status"}                 -> {"ok":true,"status":{...}}
 *     {"op":"flush","timeout_ms":N}   -> {"ok":true} once every queue is empty and nothing is in
 *                                        flight, or {"ok":false,"code":DLOTEL_ERR_TIMEOUT,...}
 *     {"op":"stop"}                   -> {"ok":true}, then the daemon drains and exits
 *
 * An attached connection counts as one user until it detaches or closes, so a host process
 * that dies (even by SIGKILL) stops counting the moment the kernel closes its socket. A
 * failed reply is always {"ok":false,"code":<enum dlotel_error>,"error":"<message>"}.
 *
 * This header has three parts: the protocol codec (no I/O, fuzzed), the blocking client half
 * used by libdlotel and the CLI, and the libuv server half the daemon runs (control_server.c).
 */
#ifndef DLOTEL_LAUNCHER_CONTROL_H
#define DLOTEL_LAUNCHER_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/buf.h"

#define CONTROL_SOCKET_NAME     "dlotel.sock"
#define CONTROL_LOCK_NAME       "dlotel.lock"
#define CONTROL_START_LOCK_NAME "dlotel.start.lock"
#define CONTROL_CONFIG_NAME     "dlotel.yaml"
#define CONTROL_LOG_NAME        "dlotel.log"

/* A request is small; a status reply lists every exporter x signal, so it may be larger. */
#define CONTROL_MAX_REQUEST (64u * 1024u)
#define CONTROL_MAX_REPLY   (1024u * 1024u)

/* sockaddr_un.sun_path is 108 bytes on Linux, NUL included. */
#define CONTROL_PATH_MAX 108

/* Bytes of an error message carried in a reply (longer ones are cut). */
#define CONTROL_ERROR_MAX 1024

enum control_op {
    CONTROL_OP_ATTACH = 0,
    CONTROL_OP_DETACH = 1,
    CONTROL_OP_STATUS = 2,
    CONTROL_OP_FLUSH = 3,
    CONTROL_OP_STOP = 4,
};

/* A parsed request. Fields not used by |op| are zero. */
struct control_request {
    enum control_op op;
    int64_t pid;          /* attach: the client's process id (> 0). */
    uint64_t config_hash; /* attach */
    char version[32];     /* attach: the client's DLOTEL_VERSION; "" when not sent. */
    int64_t timeout_ms;   /* flush: 0 to 3600000. */
};

/* A parsed reply: the status and message of a failure, the whole object either way. */
struct control_reply {
    bool ok;
    int code;                      /* 0, or a negative enum dlotel_error when !ok. */
    char error[CONTROL_ERROR_MAX]; /* "" when ok. */
    void *json;                    /* The whole reply, a json_t * owned by this struct. */
};

/* ---- codec ---------------------------------------------------------------------------------- */

/*
 * Looks for one whole frame at the start of |data|. Returns 1 and sets |*payload|, |*payload_len|
 * (pointing into |data|) and |*consumed| (header + payload) when a frame is complete; 0 when more
 * bytes are needed; DLOTEL_ERR_TOO_LARGE when the header announces more than |max| bytes (the
 * peer is broken or hostile: drop the connection); DLOTEL_ERR_BAD_INPUT for an empty frame.
 */
int control_frame_next(const uint8_t *data, size_t len, size_t max, const uint8_t **payload,
                       size_t *payload_len, size_t *consumed);

/* Appends a frame holding |len| bytes of |json|. Returns 0 or a buf_append() error. */
int control_frame_append(struct buf *out, const char *json, size_t len);

/*
 * Parses a request payload (one JSON object). Unknown keys are ignored so that a newer client
 * can talk to an older daemon; missing or mistyped required keys are errors. Returns 0 or
 * DLOTEL_ERR_BAD_INPUT with a reason in |why| (|whylen| bytes, NUL-terminated). |*out| is
 * untouched on failure.
 */
int control_request_parse(const uint8_t *payload, size_t len, struct control_request *out,
                          char *why, size_t whylen);

/* Appends |r| as a whole frame. Returns 0, DLOTEL_ERR_INVALID_ARG or a buffer error. */
int control_request_append(struct buf *out, const struct control_request *r);

/*
 * Parses a reply payload into |out|, which the caller releases with control_reply_cleanup().
 * A reply must be an object with a boolean "ok"; when it is false, "code" (a negative integer)
 * and "error" (a string) are read, and a missing code becomes DLOTEL_ERR_INTERNAL. Returns 0
 * or DLOTEL_ERR_BAD_INPUT / DLOTEL_ERR_NOMEM; on failure |out| holds nothing to release.
 */
int control_reply_parse(const uint8_t *payload, size_t len, struct control_reply *out);

void control_reply_cleanup(struct control_reply *r);

/* Formats |h| as 16 lowercase hex digits into |out| (17 bytes). */
void control_hash_format(uint64_t h, char out[17]);

/* Parses exactly 16 hex digits. Returns 0 or DLOTEL_ERR_BAD_INPUT. */
int control_hash_parse(const char *s, uint64_t *out);

/*
 * Mixes what the launcher adds to a configuration into |config_hash| (from config_hash()): the
 * daemon's exit-when-unused grace (|exit_when_unused_ns|, negative: off) and the dlotel
 * version, so that two processes that would run different daemons never share one.
 */
uint64_t control_hash_mix(uint64_t config_hash, int64_t exit_when_unused_ns);

/* ---- the runtime directory ------------------------------------------------------------------ */

/*
 * Finds the per-user runtime directory into |out| (|outlen| bytes): |override| when not NULL or
 * empty, else $XDG_RUNTIME_DIR/dlotel, else /tmp/dlotel-<uid>, reading variables from |envp|
 * (NULL: the process environment). With |create| the directory is made (mode 0700) when missing.
 * Either way an existing directory must be owned by the caller and closed to group and others,
 * because the control socket in it accepts commands and the config file holds secrets.
 *
 * Returns 0, DLOTEL_ERR_TOO_LARGE (the path would leave no room for the socket name inside
 * CONTROL_PATH_MAX), DLOTEL_ERR_NOT_FOUND (missing and !create), or DLOTEL_ERR_IO with a reason
 * in |why| (not a directory, wrong owner or mode, mkdir failed).
 */
int control_runtime_dir(char *out, size_t outlen, const char *override, char **envp, bool create,
                        char *why, size_t whylen);

/* Joins |dir| and |name| into |out|. Returns 0 or DLOTEL_ERR_TOO_LARGE. */
int control_path(char *out, size_t outlen, const char *dir, const char *name);

/* ---- the daemon lock ------------------------------------------------------------------------ */

/*
 * Takes the daemon lock, <dir>/dlotel.lock, without waiting, and writes the caller's pid into
 * it. The lock lasts while |*fd_out| stays open (the kernel drops it when the process dies,
 * however it dies). Returns 0; DLOTEL_ERR_ADDR_IN_USE when another process holds it (|why|
 * names its pid); DLOTEL_ERR_IO when the file cannot be opened.
 */
int control_lock_acquire(const char *dir, int *fd_out, char *why, size_t whylen);

/*
 * Tells whether a daemon holds <dir>/dlotel.lock, without taking it (F_OFD_GETLK): returns 1
 * (held; |*pid| gets the pid written in the file, or 0 when none is readable), 0 (free: no
 * daemon is alive, or none ever was) or DLOTEL_ERR_IO.
 */
int control_lock_probe(const char *dir, pid_t *pid);

/* ---- the blocking client half ---------------------------------------------------------------- */

/*
 * Connects to the control socket at |path|. Returns 0 and a connected, close-on-exec socket in
 * |*fd_out|; DLOTEL_ERR_NOT_FOUND when nothing listens there (no file, or a stale file: ENOENT,
 * ECONNREFUSED); DLOTEL_ERR_TOO_LARGE for a path past CONTROL_PATH_MAX; DLOTEL_ERR_IO otherwise.
 */
int control_client_connect(const char *path, int *fd_out);

/*
 * Sends |req| on |fd| and reads its reply within |timeout_ms| (negative: no limit) into |out|
 * (release with control_reply_cleanup()). Returns 0 when a reply was read, whatever its "ok";
 * DLOTEL_ERR_CLOSED when the daemon closed the connection (it is gone or stopping);
 * DLOTEL_ERR_TIMEOUT; DLOTEL_ERR_BAD_INPUT / DLOTEL_ERR_TOO_LARGE for a broken reply;
 * DLOTEL_ERR_IO. After any error the connection is in an unknown state: close it.
 */
int control_client_call(int fd, const struct control_request *req, int timeout_ms,
                        struct control_reply *out);

/*
 * Waits until the peer closes |fd| (reads and discards anything else). Returns 0, or
 * DLOTEL_ERR_TIMEOUT after |timeout_ms|.
 */
int control_client_wait_closed(int fd, int timeout_ms);

/* ---- readiness, from the daemon to the launcher that spawned it -------------------------------
 */

/*
 * What a daemon started with --ready-fd writes on that descriptor, one JSON line, then closes
 * it: {"ok":true,"pid":N,"config_hash":"..","grpc_port":N,"http_port":N} once its ports listen
 * and the control socket accepts, or {"ok":false,"code":N,"error":"...","pid":N} when it cannot
 * start (the pid lets a launcher that is PID 1 reap the daemon that gives up).
 */
struct control_ready {
    bool ok;
    int code;
    char error[CONTROL_ERROR_MAX];
    int64_t pid;
    uint64_t config_hash;
    int grpc_port;
    int http_port;
};

/*
 * Writes |r| as one line on |fd| (blocking, retrying EINTR) and closes |fd|. Errors are ignored:
 * the launcher reads EOF as "the daemon died" and falls back to the log.
 */
void control_ready_write(int fd, const struct control_ready *r);

/* Parses one ready line. Returns 0 or DLOTEL_ERR_BAD_INPUT. |*out| is untouched on failure. */
int control_ready_parse(const char *line, size_t len, struct control_ready *out);

/* ---- the server half (control_server.c; links libuv and the pipeline) ------------------------ */

struct control_server;
struct pipeline;
struct uv_loop_s;

/*
 * Called on the loop thread, at most once, when the daemon should drain and exit: |reason| is for
 * the log. It must not free the server from inside the call (the reply to a stop request is still
 * being written): start the drain, and free the server when it ends.
 */
typedef void (*control_stop_fn)(void *userdata, const char *reason);

struct control_server_options {
    const char *dir;      /* The runtime directory; the socket is <dir>/dlotel.sock. Copied. */
    int lock_fd;          /* From control_lock_acquire(); the server owns and closes it. */
    uint64_t config_hash; /* control_hash_mix(config_hash(cfg), exit_when_unused_ns). */
    /* Exit once no user has been attached for this long; negative: never. The first user gets
     * at least CONTROL_FIRST_ATTACH_GRACE_MS from the start. */
    int64_t exit_when_unused_ms;
    struct pipeline *pipeline; /* For status and flush; may be NULL. Borrowed. */
    int grpc_port;             /* Reported to clients; 0 when not listening. */
    int http_port;
    int api_port;               /* The query API's port (sink mode); 0 when there is none. */
    const char *config_summary; /* Optional; copied into status ("exporters": ...). */
    control_stop_fn on_stop;
    void *userdata;
};

#define CONTROL_FIRST_ATTACH_GRACE_MS 10000

/*
 * Listens on <dir>/dlotel.sock (a stale file is replaced: the caller holds the daemon lock, so no
 * live daemon owns it) with mode 0600, on |loop| (borrowed). Returns 0; DLOTEL_ERR_TOO_LARGE
 * (path); DLOTEL_ERR_IO (bind, listen, chmod; |why| says which); DLOTEL_ERR_NOMEM. On failure
 * *out is untouched and the lock fd is NOT closed (the caller still owns it).
 */
int control_server_new(struct control_server **out, struct uv_loop_s *loop,
                       const struct control_server_options *o, char *why, size_t whylen);

/*
 * Detaches the calling process from whoever started it, for `dlotel agent --daemonize`: setsid()
 * (no controlling terminal, no terminal signals; fails harmlessly when already a session
 * leader), then fork(): the parent exits 0 at once, so that the launcher reaps it and the child,
 * the daemon, is re-parented to init (or the nearest subreaper) instead of staying the host's
 * child, which would leave a zombie behind when it exits. Call it before any thread exists.
 * Returns 0 in the child, or -1 with errno set when fork() fails (in the parent).
 */
int control_daemonize(void);

/* Attached users now. */
size_t control_server_users(const struct control_server *s);

/*
 * Closes the listener and every connection, removes the socket file, and closes the lock fd last
 * (so a launcher that finds the lock free also finds no socket). Run the loop once more before
 * uv_loop_close() for the close callbacks; they free the memory. NULL is a no-op.
 */
void control_server_free(struct control_server *s);

#endif
