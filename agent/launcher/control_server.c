/*
 * The daemon's half of the control socket (control.h): a libuv UNIX socket listener that counts
 * attached users, answers status from the pipeline's counters, flushes, and asks the daemon to
 * stop when told to or when its last user has been gone for the configured grace.
 *
 * Everything runs on the loop thread. Each connection answers one request at a time: while a
 * flush waits for the queues to empty, later frames on that connection stay buffered, which
 * keeps replies in request order without a queue of pending replies.
 */
#include "launcher/control.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include "core/log.h"
#include "core/timeutil.h"
#include "dlotel.h"
#include "pipeline/pipeline.h"

#define COMPONENT "control"

/* How often a pending flush looks at the queues, and re-seals partial batches. */
#define FLUSH_POLL_MS 20

/* Connections at once; past it new ones are closed at accept. Each attached host process holds
 * one, so this is also the most users a daemon serves. */
#define MAX_CONNS 4096

struct control_conn {
    uv_pipe_t pipe;
    uv_timer_t flush_timer;
    struct control_server *s;
    struct control_conn *prev, *next;
    struct buf in;
    int64_t pid; /* The attach request's pid; 0 before. */
    uint64_t flush_deadline_ns;
    uint64_t flush_started_ns;
    int open_handles; /* Freed when the last close callback runs. */
    bool attached;
    bool busy; /* A reply is pending (flush). */
    bool closing;
};

struct control_server {
    uv_loop_t *loop;
    uv_pipe_t listener;
    uv_timer_t unused_timer;
    char dir[CONTROL_PATH_MAX];
    char sock_path[CONTROL_PATH_MAX];
    int lock_fd;
    uint64_t config_hash;
    int64_t exit_when_unused_ms;
    struct pipeline *pipeline;
    int grpc_port, http_port, api_port;
    char *config_summary;
    control_stop_fn on_stop;
    void *userdata;

    struct control_conn *conns; /* Open connections; closing ones are unlinked at once. */
    size_t n_conns;
    size_t live_conns; /* Connections whose memory is not yet freed (close callbacks pending). */
    size_t users;
    uint64_t started_ns;
    int open_handles; /* listener + timer; the struct is freed when both have closed. */
    bool stop_requested;
    bool freeing;
};

/* One read buffer for the whole loop: read callbacks copy out of it at once. */
static char read_scratch[16384];

static void server_maybe_release(struct control_server *s);
static void conn_process(struct control_conn *c);

static void request_stop(struct control_server *s, const char *reason)
{
    if (s->stop_requested || s->freeing) {
        return;
    }
    s->stop_requested = true;
    log_info(COMPONENT, "stopping: %s", reason);
    if (s->on_stop != NULL) {
        s->on_stop(s->userdata, reason);
    }
}

/* ---- exit when unused ----------------------------------------------------------------------- */

static void unused_timer_cb(uv_timer_t *t)
{
    struct control_server *s = t->data;
    if (s->users == 0) {
        char reason[128];
        snprintf(reason, sizeof(reason), "no process has been attached for %" PRId64 " ms",
                 s->exit_when_unused_ms);
        request_stop(s, reason);
    }
}

static void users_changed(struct control_server *s)
{
    if (s->exit_when_unused_ms < 0 || s->freeing) {
        return;
    }
    if (s->users > 0) {
        uv_timer_stop(&s->unused_timer);
    } else {
        uv_timer_start(&s->unused_timer, unused_timer_cb, (uint64_t)s->exit_when_unused_ms, 0);
    }
}

/* ---- writing replies ------------------------------------------------------------------------ */

struct write_req {
    uv_write_t req;
    struct control_conn *c;
    uint8_t *data;
};

static void write_done(uv_write_t *req, int status)
{
    struct write_req *w = (struct write_req *)req;
    (void)status; /* A client that went away is noticed by the read side. */
    free(w->data);
    free(w);
}

/* Sends |reply| (consumed) as one frame. The connection stays usable on failure. */
static void conn_send(struct control_conn *c, json_t *reply)
{
    char *text = json_dumps(reply, JSON_COMPACT);
    json_decref(reply);
    if (text == NULL || c->closing) {
        free(text);
        return;
    }
    struct buf b;
    buf_init(&b, CONTROL_MAX_REPLY + 4);
    int rv = control_frame_append(&b, text, strlen(text));
    free(text);
    if (rv != 0) {
        log_warn(COMPONENT, "reply too large or out of memory (%s)", dlotel_strerror(rv));
        buf_cleanup(&b);
        return;
    }
    struct write_req *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        buf_cleanup(&b);
        return;
    }
    size_t len;
    w->c = c;
    w->data = buf_take(&b, &len);
    uv_buf_t ub = uv_buf_init((char *)w->data, (unsigned)len);
    if (uv_write(&w->req, (uv_stream_t *)&c->pipe, &ub, 1, write_done) != 0) {
        free(w->data);
        free(w);
    }
}

static void conn_send_error(struct control_conn *c, int code, const char *msg)
{
    json_t *j = json_object();
    if (j == NULL) {
        return;
    }
    json_object_set_new(j, "ok", json_false());
    json_object_set_new(j, "code", json_integer(code));
    json_t *m = json_string(msg);
    json_object_set_new(j, "error", m != NULL ? m : json_string("(message not UTF-8)"));
    conn_send(c, j);
}

/* ---- connections ---------------------------------------------------------------------------- */

static void conn_handle_closed(uv_handle_t *h)
{
    struct control_conn *c = h->data;
    if (--c->open_handles > 0) {
        return;
    }
    struct control_server *s = c->s;
    buf_cleanup(&c->in);
    free(c);
    s->live_conns--;
    if (s->freeing) {
        server_maybe_release(s);
    }
}

static void conn_close(struct control_conn *c, const char *why)
{
    if (c->closing) {
        return;
    }
    struct control_server *s = c->s;
    c->closing = true;
    if (c->attached) {
        c->attached = false;
        s->users--;
        log_info(COMPONENT, "process %" PRId64 " detached (%s); %zu attached", c->pid, why,
                 s->users);
        users_changed(s);
    }
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        s->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    s->n_conns--;
    uv_timer_stop(&c->flush_timer);
    uv_close((uv_handle_t *)&c->flush_timer, conn_handle_closed);
    uv_close((uv_handle_t *)&c->pipe, conn_handle_closed);
}

/* ---- status --------------------------------------------------------------------------------- */

static json_t *status_json(struct control_server *s)
{
    json_t *j = json_object();
    if (j == NULL) {
        return NULL;
    }
    char hex[17];
    control_hash_format(s->config_hash, hex);
    json_object_set_new(j, "pid", json_integer(getpid()));
    json_object_set_new(j, "version", json_string(DLOTEL_VERSION));
    json_object_set_new(j, "config_hash", json_string(hex));
    json_object_set_new(j, "runtime_dir", json_string(s->dir));
    json_object_set_new(
        j, "uptime_ms",
        json_integer((json_int_t)((time_monotonic_nano() - s->started_ns) / 1000000u)));
    json_object_set_new(j, "grpc_port", json_integer(s->grpc_port));
    json_object_set_new(j, "http_port", json_integer(s->http_port));
    if (s->api_port > 0) {
        json_object_set_new(j, "api_port", json_integer(s->api_port));
    }
    json_object_set_new(j, "users", json_integer((json_int_t)s->users));
    json_object_set_new(j, "exit_when_unused_ms", json_integer(s->exit_when_unused_ms));
    json_t *clients = json_array();
    for (struct control_conn *c = s->conns; c != NULL && clients != NULL; c = c->next) {
        if (c->attached) {
            json_array_append_new(clients, json_integer(c->pid));
        }
    }
    json_object_set_new(j, "clients", clients != NULL ? clients : json_null());
    if (s->config_summary != NULL) {
        json_object_set_new(j, "config", json_string(s->config_summary));
    }

    /* Totals first, then the exporter x signal table they summarise. */
    struct pipeline_totals t;
    memset(&t, 0, sizeof(t));
    struct pipeline_stats *st = NULL;
    size_t n = 0;
    if (s->pipeline != NULL) {
        pipeline_get_totals(s->pipeline, &t);
        n = pipeline_get_stats(s->pipeline, NULL, 0);
        if (n > 0) {
            st = calloc(n, sizeof(*st));
            if (st != NULL) {
                n = pipeline_get_stats(s->pipeline, st, n);
            } else {
                n = 0;
            }
        }
    }
    uint64_t queue_items = 0, queue_bytes = 0, disk_bytes = 0, in_flight = 0, dropped = 0,
             rejected = 0, sent = 0, failed = 0, refused = t.refused_items;
    uint64_t last_err_ns = 0, last_ok_ns = 0;
    const struct pipeline_stats *last_err = NULL;
    bool any_upstream = false;
    json_t *exporters = json_array();
    for (size_t i = 0; i < n; i++) {
        const struct pipeline_stats *e = &st[i];
        queue_items += e->queue_items + e->disk_items;
        queue_bytes += e->queue_bytes;
        disk_bytes += e->disk_bytes;
        in_flight += e->in_flight_batches;
        dropped += e->dropped_items;
        rejected += e->rejected_items;
        sent += e->sent_items;
        failed += e->failed_items;
        if (e->queued) {
            any_upstream = true;
            if (e->last_success_unix_nano > last_ok_ns) {
                last_ok_ns = e->last_success_unix_nano;
            }
        }
        if (e->last_error[0] != '\0' && e->last_error_unix_nano >= last_err_ns) {
            last_err_ns = e->last_error_unix_nano;
            last_err = e;
        }
        json_t *x =
            json_pack("{s:s?, s:s?, s:s, s:b, s:b, s:s?}", "exporter", e->exporter, "kind", e->kind,
                      "signal", otlp_signal_name(e->signal), "queued", e->queued, "disk", e->disk,
                      "last_error", e->last_error[0] != '\0' ? e->last_error : NULL);
        const struct {
            const char *key;
            uint64_t value;
        } counters[] = {
            {"sent_items", e->sent_items},
            {"sent_batches", e->sent_batches},
            {"failed_items", e->failed_items},
            {"retried_batches", e->retried_batches},
            {"dropped_items", e->dropped_items},
            {"rejected_items", e->rejected_items},
            {"refused_items", e->refused_items},
            {"queue_items", e->queue_items + e->disk_items},
            {"queue_bytes", e->queue_bytes},
            {"disk_bytes", e->disk_bytes},
            {"in_flight_batches", e->in_flight_batches},
            {"last_success_unix_nano", e->last_success_unix_nano},
            {"last_error_unix_nano", e->last_error_unix_nano},
        };
        for (size_t k = 0; x != NULL && k < sizeof(counters) / sizeof(counters[0]); k++) {
            json_object_set_new(x, counters[k].key, json_integer((json_int_t)counters[k].value));
        }
        if (exporters != NULL && x != NULL) {
            json_array_append_new(exporters, x);
        } else {
            json_decref(x);
        }
    }
    json_object_set_new(j, "accepted_requests", json_integer((json_int_t)t.accepted_requests));
    json_object_set_new(j, "accepted_items", json_integer((json_int_t)t.accepted_items));
    json_object_set_new(j, "refused_items", json_integer((json_int_t)refused));
    json_object_set_new(j, "sent_items", json_integer((json_int_t)sent));
    json_object_set_new(j, "failed_items", json_integer((json_int_t)failed));
    json_object_set_new(j, "dropped_items", json_integer((json_int_t)dropped));
    json_object_set_new(j, "rejected_items", json_integer((json_int_t)rejected));
    json_object_set_new(j, "queue_items", json_integer((json_int_t)queue_items));
    json_object_set_new(j, "queue_bytes", json_integer((json_int_t)queue_bytes));
    json_object_set_new(j, "disk_bytes", json_integer((json_int_t)disk_bytes));
    json_object_set_new(j, "in_flight_batches", json_integer((json_int_t)in_flight));
    json_object_set_new(j, "memory_bytes", json_integer((json_int_t)t.memory_bytes));
    if (last_err != NULL) {
        json_object_set_new(j, "last_export_error",
                            json_pack("{s:s?, s:s, s:s, s:I}", "exporter", last_err->exporter,
                                      "signal", otlp_signal_name(last_err->signal), "message",
                                      last_err->last_error, "time_unix_nano",
                                      (json_int_t)last_err->last_error_unix_nano));
    } else {
        json_object_set_new(j, "last_export_error", json_null());
    }
    /* Reachable means the latest news from upstream is a success; unknown until there is any. */
    json_t *reachable = json_null();
    if (any_upstream && (last_ok_ns > 0 || last_err_ns > 0)) {
        reachable = json_boolean(last_ok_ns >= last_err_ns);
    }
    json_object_set_new(j, "upstream_reachable", reachable);
    json_object_set_new(j, "exporters", exporters != NULL ? exporters : json_null());
    free(st);
    return j;
}

/* ---- flush ---------------------------------------------------------------------------------- */

/* Items waiting in queues plus batches in flight: zero means everything was delivered. */
static uint64_t pending_work(struct control_server *s, char *last_error, size_t len)
{
    if (s->pipeline == NULL) {
        return 0;
    }
    size_t n = pipeline_get_stats(s->pipeline, NULL, 0);
    struct pipeline_stats *st = n > 0 ? calloc(n, sizeof(*st)) : NULL;
    if (st == NULL) {
        return 0;
    }
    n = pipeline_get_stats(s->pipeline, st, n);
    uint64_t pending = 0, err_ns = 0;
    for (size_t i = 0; i < n; i++) {
        pending += st[i].queue_items + st[i].disk_items + st[i].in_flight_batches;
        if (last_error != NULL && st[i].last_error[0] != '\0' &&
            st[i].last_error_unix_nano >= err_ns) {
            err_ns = st[i].last_error_unix_nano;
            snprintf(last_error, len, "%s: %s", st[i].exporter, st[i].last_error);
        }
    }
    free(st);
    return pending;
}

static void flush_finish(struct control_conn *c, bool done, uint64_t pending, const char *err)
{
    c->busy = false;
    uv_timer_stop(&c->flush_timer);
    if (done) {
        json_t *j = json_pack("{s:b}", "ok", 1);
        if (j != NULL) {
            conn_send(c, j);
        }
    } else {
        char msg[CONTROL_ERROR_MAX];
        snprintf(msg, sizeof(msg),
                 "flush timed out after %" PRIu64 " ms: %" PRIu64
                 " items or batches still queued or in flight%s%s",
                 (time_monotonic_nano() - c->flush_started_ns) / 1000000u, pending,
                 err != NULL && err[0] != '\0' ? "; last export error: " : "",
                 err != NULL ? err : "");
        conn_send_error(c, DLOTEL_ERR_TIMEOUT, msg);
    }
    conn_process(c);
}

static void flush_tick(uv_timer_t *t)
{
    struct control_conn *c = t->data;
    struct control_server *s = c->s;
    char err[512] = "";
    uint64_t pending = pending_work(s, err, sizeof(err));
    if (pending == 0) {
        flush_finish(c, true, 0, NULL);
        return;
    }
    if (time_monotonic_nano() >= c->flush_deadline_ns) {
        flush_finish(c, false, pending, err);
        return;
    }
    /* A batch formed after the first seal (the queue had more than max_in_flight allowed)
     * would otherwise wait for batch.timeout. */
    pipeline_flush(s->pipeline);
}

static void handle_flush(struct control_conn *c, int64_t timeout_ms)
{
    struct control_server *s = c->s;
    if (s->pipeline == NULL || pending_work(s, NULL, 0) == 0) {
        if (s->pipeline != NULL) {
            pipeline_flush(s->pipeline);
        }
        if (s->pipeline == NULL || pending_work(s, NULL, 0) == 0) {
            json_t *j = json_pack("{s:b}", "ok", 1);
            if (j != NULL) {
                conn_send(c, j);
            }
            return;
        }
    } else {
        pipeline_flush(s->pipeline);
    }
    c->busy = true;
    c->flush_started_ns = time_monotonic_nano();
    c->flush_deadline_ns = c->flush_started_ns + (uint64_t)timeout_ms * 1000000u;
    uv_timer_start(&c->flush_timer, flush_tick, FLUSH_POLL_MS, FLUSH_POLL_MS);
}

/* ---- requests ------------------------------------------------------------------------------- */

static void handle_attach(struct control_conn *c, const struct control_request *r)
{
    struct control_server *s = c->s;
    if (r->config_hash != s->config_hash) {
        char mine[17], theirs[17], msg[CONTROL_ERROR_MAX];
        control_hash_format(s->config_hash, mine);
        control_hash_format(r->config_hash, theirs);
        snprintf(msg, sizeof(msg),
                 "a dlotel daemon (pid %ld, version %s) already runs in %s with a different "
                 "configuration (its hash %s, this process's %s%s%s); give every process the same "
                 "settings, or stop the running daemon first (`dlotel stop`)",
                 (long)getpid(), DLOTEL_VERSION, s->dir, mine, theirs,
                 r->version[0] != '\0' ? ", version " : "", r->version);
        log_warn(COMPONENT, "refused process %" PRId64 ": configuration hash %s, mine %s", r->pid,
                 theirs, mine);
        conn_send_error(c, DLOTEL_ERR_CONFIG_MISMATCH, msg);
        return;
    }
    if (s->stop_requested) {
        conn_send_error(c, DLOTEL_ERR_CLOSED,
                        "the dlotel daemon is stopping; start again in a moment");
        return;
    }
    c->pid = r->pid;
    if (!c->attached) {
        c->attached = true;
        s->users++;
        log_info(COMPONENT, "process %" PRId64 " attached; %zu attached", c->pid, s->users);
        users_changed(s);
    }
    char hex[17];
    control_hash_format(s->config_hash, hex);
    json_t *j = json_pack("{s:b, s:i, s:I, s:s, s:s, s:i, s:i}", "ok", 1, "pid", (int)getpid(),
                          "users", (json_int_t)s->users, "config_hash", hex, "version",
                          DLOTEL_VERSION, "grpc_port", s->grpc_port, "http_port", s->http_port);
    if (j != NULL) {
        conn_send(c, j);
    }
}

static void handle_request(struct control_conn *c, const uint8_t *p, size_t n)
{
    struct control_server *s = c->s;
    struct control_request r;
    char why[256];
    if (control_request_parse(p, n, &r, why, sizeof(why)) != 0) {
        char msg[400];
        snprintf(msg, sizeof(msg), "bad request: %s", why);
        conn_send_error(c, DLOTEL_ERR_BAD_INPUT, msg);
        return;
    }
    switch (r.op) {
    case CONTROL_OP_ATTACH:
        handle_attach(c, &r);
        break;
    case CONTROL_OP_DETACH: {
        if (c->attached) {
            c->attached = false;
            s->users--;
            log_info(COMPONENT, "process %" PRId64 " detached; %zu attached", c->pid, s->users);
            users_changed(s);
        }
        json_t *j = json_pack("{s:b, s:I}", "ok", 1, "users", (json_int_t)s->users);
        if (j != NULL) {
            conn_send(c, j);
        }
        break;
    }
    case CONTROL_OP_STATUS: {
        json_t *st = status_json(s);
        json_t *j = st != NULL ? json_pack("{s:b, s:o}", "ok", 1, "status", st) : NULL;
        if (j != NULL) {
            conn_send(c, j);
        } else {
            conn_send_error(c, DLOTEL_ERR_NOMEM, "out of memory");
        }
        break;
    }
    case CONTROL_OP_FLUSH:
        handle_flush(c, r.timeout_ms);
        break;
    case CONTROL_OP_STOP: {
        json_t *j = json_pack("{s:b}", "ok", 1);
        if (j != NULL) {
            conn_send(c, j);
        }
        char reason[96];
        snprintf(reason, sizeof(reason), "stop requested over the control socket%s",
                 c->pid > 0 ? " by an attached process" : "");
        request_stop(s, reason);
        break;
    }
    }
}

/* Handles every whole frame buffered, unless a reply is pending. */
static void conn_process(struct control_conn *c)
{
    size_t off = 0;
    while (!c->busy && !c->closing) {
        const uint8_t *payload;
        size_t plen, used;
        int rv = control_frame_next(c->in.data + off, c->in.len - off, CONTROL_MAX_REQUEST,
                                    &payload, &plen, &used);
        if (rv == 0) {
            break;
        }
        if (rv < 0) {
            /* The framing is lost: nothing after this point can be trusted. */
            conn_send_error(c, rv,
                            rv == DLOTEL_ERR_TOO_LARGE ? "request frame too large"
                                                       : "empty request frame");
            conn_close(c, "bad frame");
            return;
        }
        handle_request(c, payload, plen);
        off += used;
    }
    if (off > 0 && !c->closing) {
        memmove(c->in.data, c->in.data + off, c->in.len - off);
        c->in.len -= off;
    }
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)h;
    (void)suggested;
    *b = uv_buf_init(read_scratch, sizeof(read_scratch));
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b)
{
    struct control_conn *c = stream->data;
    if (nread == 0) {
        return;
    }
    if (nread < 0) {
        conn_close(c, nread == UV_EOF ? "connection closed" : uv_strerror((int)nread));
        return;
    }
    if (buf_append(&c->in, b->base, (size_t)nread) != 0) {
        conn_send_error(c, DLOTEL_ERR_TOO_LARGE, "too many bytes buffered");
        conn_close(c, "too many bytes buffered");
        return;
    }
    conn_process(c);
}

static void on_connection(uv_stream_t *listener, int status)
{
    struct control_server *s = listener->data;
    if (status != 0 || s->freeing) {
        return;
    }
    struct control_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return;
    }
    c->s = s;
    buf_init(&c->in, CONTROL_MAX_REQUEST + 4);
    uv_pipe_init(s->loop, &c->pipe, 0);
    uv_timer_init(s->loop, &c->flush_timer);
    c->pipe.data = c;
    c->flush_timer.data = c;
    c->open_handles = 2;
    s->live_conns++;
    c->next = s->conns;
    if (s->conns != NULL) {
        s->conns->prev = c;
    }
    s->conns = c;
    s->n_conns++;
    if (uv_accept(listener, (uv_stream_t *)&c->pipe) != 0) {
        conn_close(c, "accept failed");
        return;
    }
    /* The socket's mode already keeps other users out; the peer's uid says so once more. */
    uv_os_fd_t fd;
    struct ucred cred;
    socklen_t clen = sizeof(cred);
    if (uv_fileno((uv_handle_t *)&c->pipe, &fd) == 0 &&
        getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0 && cred.uid != geteuid() &&
        cred.uid != 0) {
        log_warn(COMPONENT, "refused a connection from uid %u", (unsigned)cred.uid);
        conn_close(c, "foreign uid");
        return;
    }
    if (s->n_conns > MAX_CONNS) {
        conn_send_error(c, DLOTEL_ERR_FULL, "too many connections to the dlotel daemon");
        conn_close(c, "too many connections");
        return;
    }
    uv_read_start((uv_stream_t *)&c->pipe, alloc_cb, read_cb);
}

/* ---- lifetime ------------------------------------------------------------------------------- */

static void server_handle_closed(uv_handle_t *h);

/* Returns a listening, non-blocking UNIX socket bound at |path| with mode 0600, or -1. */
static int listen_socket(const char *path, char *why, size_t whylen)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(why, whylen, "cannot create a UNIX socket: %s", strerror(errno));
        return -1;
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        snprintf(why, whylen, "cannot bind %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (chmod(path, 0600) != 0 || listen(fd, 128) != 0) {
        snprintf(why, whylen, "cannot set up %s: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        return -1;
    }
    return fd;
}

int control_server_new(struct control_server **out, struct uv_loop_s *loop,
                       const struct control_server_options *o, char *why, size_t whylen)
{
    struct control_server *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    int rv = DLOTEL_ERR_TOO_LARGE;
    if (strlen(o->dir) >= sizeof(s->dir) ||
        control_path(s->sock_path, sizeof(s->sock_path), o->dir, CONTROL_SOCKET_NAME) != 0) {
        snprintf(why, whylen, "runtime directory path too long for a UNIX socket");
        goto fail_struct;
    }
    memcpy(s->dir, o->dir, strlen(o->dir) + 1);
    if (o->config_summary != NULL) {
        s->config_summary = strdup(o->config_summary);
        if (s->config_summary == NULL) {
            rv = DLOTEL_ERR_NOMEM;
            goto fail_struct;
        }
    }
    s->loop = loop;
    s->lock_fd = o->lock_fd;
    s->config_hash = o->config_hash;
    s->exit_when_unused_ms = o->exit_when_unused_ms;
    s->pipeline = o->pipeline;
    s->grpc_port = o->grpc_port;
    s->http_port = o->http_port;
    s->api_port = o->api_port;
    s->on_stop = o->on_stop;
    s->userdata = o->userdata;
    s->started_ns = time_monotonic_nano();

    /* We hold the daemon lock, so a socket file here is a dead daemon's: replace it. */
    if (unlink(s->sock_path) != 0 && errno != ENOENT) {
        snprintf(why, whylen, "cannot remove the stale %s: %s", s->sock_path, strerror(errno));
        rv = DLOTEL_ERR_IO;
        goto fail_summary;
    }
    /* Bound and made 0600 by hand before libuv sees it, so that a failure leaves no handle to
     * close, and no client can connect before the mode is right (the directory is 0700 too). */
    int fd = listen_socket(s->sock_path, why, whylen);
    if (fd < 0) {
        rv = DLOTEL_ERR_IO;
        goto fail_summary;
    }
    uv_pipe_init(loop, &s->listener, 0);
    s->listener.data = s;
    rv = uv_pipe_open(&s->listener, fd);
    if (rv != 0) {
        close(fd);
    } else {
        rv = uv_listen((uv_stream_t *)&s->listener, 128, on_connection);
    }
    if (rv != 0) {
        /* Not expected once the socket listens; the handle must still close through the loop,
         * so the struct is released by the close callback. */
        snprintf(why, whylen, "cannot watch %s: %s", s->sock_path, uv_strerror(rv));
        unlink(s->sock_path);
        s->freeing = true;
        s->lock_fd = -1;
        s->open_handles = 1;
        uv_close((uv_handle_t *)&s->listener, server_handle_closed);
        return DLOTEL_ERR_IO;
    }
    uv_timer_init(loop, &s->unused_timer);
    s->unused_timer.data = s;
    s->open_handles = 2;
    if (s->exit_when_unused_ms >= 0) {
        uint64_t first = (uint64_t)s->exit_when_unused_ms;
        if (first < CONTROL_FIRST_ATTACH_GRACE_MS) {
            first = CONTROL_FIRST_ATTACH_GRACE_MS;
        }
        uv_timer_start(&s->unused_timer, unused_timer_cb, first, 0);
    }
    log_info(COMPONENT, "listening on %s", s->sock_path);
    *out = s;
    return 0;

fail_summary:
    free(s->config_summary);
fail_struct:
    free(s);
    return rv;
}

int control_daemonize(void)
{
    setsid();
    pid_t pid = fork();
    if (pid < 0) {
        return -1;
    }
    if (pid > 0) {
        _exit(0);
    }
    umask(077);
    return 0;
}

size_t control_server_users(const struct control_server *s)
{
    return s->users;
}

static void server_maybe_release(struct control_server *s)
{
    if (s->open_handles > 0 || s->live_conns > 0) {
        return;
    }
    free(s->config_summary);
    free(s);
}

static void server_handle_closed(uv_handle_t *h)
{
    struct control_server *s = h->data;
    s->open_handles--;
    server_maybe_release(s);
}

void control_server_free(struct control_server *s)
{
    if (s == NULL || s->freeing) {
        return;
    }
    s->freeing = true;
    /* Socket file first, lock last: whoever sees the lock free also sees no socket. */
    unlink(s->sock_path);
    while (s->conns != NULL) {
        conn_close(s->conns, "daemon stopping");
    }
    uv_timer_stop(&s->unused_timer);
    uv_close((uv_handle_t *)&s->unused_timer, server_handle_closed);
    uv_close((uv_handle_t *)&s->listener, server_handle_closed);
    if (s->lock_fd >= 0) {
        close(s->lock_fd);
        s->lock_fd = -1;
    }
}
