/*
 * The live stream (api_stream.h): WebSocket clients over connections taken over from the API's
 * HTTP server (http_upgrade()), framed by wslay's event API over our own buffers.
 *
 * Data path: the sink exporter's tap calls api_stream_publish() on the loop thread once a
 * request is committed. When some client wants the signal, the request is decoded and rendered
 * once (api_rows.c); then one message is built per distinct view (admin, or one user, times the
 * service filter) and shared, reference-counted, by every client with that view.
 *
 * Backpressure: each client has a queue of whole messages bounded in bytes
 * (client_queue_max_bytes). A message reaches wslay only when wslay has nothing else queued,
 * and wslay's output reaches the socket only while less than NET_HIGH_WATER bytes wait there, so
 * a client that does not read holds at most its queue, one message in wslay and NET_HIGH_WATER.
 * The message in wslay does not count against the queue, and a message bigger than the whole
 * queue is still taken when nothing else waits: one committed request is one message, and a
 * client that keeps up must get a large request too (messages are shared by every client, so
 * this costs a reference, not a copy). A message that does not fit behind what already waits
 * is dropped (whole) and counted; a client that has
 * dropped FAR_BEHIND_DROPS messages in a row without its queue draining is closed with 1013
 * (Try Again Later: the server is fine, this client cannot keep up; it may reconnect and
 * re-query the REST API for what it missed).
 *
 * Close codes: 1008 missing or bad token, 1009 a client message over API_STREAM_MAX_CLIENT_MSG
 * bytes (wslay), 1003 a message that is not a valid subscribe (or binary), 1013 too slow,
 * 1001 server shutdown, 1000 in answer to the client's close.
 */
#include "api/api_stream.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <wslay/wslay.h>

#include "api/api_rows.h"
#include "api/api_ws.h"
#include "core/log.h"
#include "dlotel.h"
#include "otlp/otlp.h"

#define DEFAULT_QUEUE_BYTES ((size_t)4 << 20)
#define DEFAULT_PING_MS     20000u
#define DEFAULT_MAX_CLIENTS 256u
/* Clients only ever send the subscribe message: anything longer is refused with 1009. */
#define API_STREAM_MAX_CLIENT_MSG 4096
/* Output handed to the server that is not yet written: past this wslay waits (on_drained). */
#define NET_HIGH_WATER ((size_t)256 << 10)
/* Messages dropped in a row (the queue never drained meanwhile) before the client is closed. */
#define FAR_BEHIND_DROPS 8
/* Control frames queued in wslay (pongs for a ping flood) past which we stop reading. */
#define MAX_QUEUED_CONTROL 32
/* How long a close handshake may take before the connection is just closed. */
#define CLOSE_WAIT_MS 2000
/* Rendered rows of one request at most (a request passed the ingest limits already). */
#define ROWS_MAX_BYTES ((size_t)256 << 20)
#define SERVICE_MAX    256

#define SIG_ALL 7u

struct ws_msg {
    size_t refs;
    size_t len;
    uint8_t data[];
};

struct qnode {
    struct qnode *next;
    struct ws_msg *m;
};

struct client {
    struct api_stream *st;
    struct client *prev;
    struct client *next;
    struct http_stream *s; /* NULL once the server closed the connection. */
    wslay_event_context_ptr ctx;

    struct api_principal who;
    bool authed;
    unsigned signals; /* Bit per SINK_SIGNAL_*. */
    bool has_service;
    char service[SERVICE_MAX];

    struct qnode *qhead;
    struct qnode *qtail;
    size_t queued_bytes; /* Of the messages in the queue (not cur). */
    struct ws_msg *cur;  /* The message wslay is reading (a fragmented message). */
    size_t cur_off;
    uint32_t drops_in_row;
    uint64_t dropped;

    /* wslay's output during one pump, handed to the server in one piece (one write). */
    struct buf obuf;
    const uint8_t *in; /* Input during on_data. */
    size_t in_len;

    bool closing;    /* Our close frame is queued: nothing else goes out. */
    bool force;      /* Ignore NET_HIGH_WATER (shutting down). */
    int busy;        /* Inside a call that must not see the client freed. */
    bool finish_due; /* Finish once no longer busy. */
    uint64_t closing_since;
    uint64_t last_seen;
    uint64_t last_ping;
};

struct api_stream {
    uv_loop_t *loop;
    uv_timer_t tick;
    bool tick_running;
    size_t queue_max;
    uint32_t ping_ms;
    uint32_t max_clients;
    struct client *clients;
    size_t n_clients;
    uint64_t dropped;
    struct api_rows rows;
};

static const char *const signal_names[3] = {"traces", "metrics", "logs"};

/* ---- messages ------------------------------------------------------------------------------ */

static void msg_unref(struct ws_msg *m)
{
    if (m != NULL && --m->refs == 0) {
        free(m);
    }
}

/* ---- clients ------------------------------------------------------------------------------- */

/* Drops the queued messages; the one wslay is reading (cur) goes on until wslay is done. */
static void queue_clear(struct client *c)
{
    while (c->qhead != NULL) {
        struct qnode *n = c->qhead;
        c->qhead = n->next;
        c->queued_bytes -= n->m->len;
        msg_unref(n->m);
        free(n);
    }
    c->qtail = NULL;
}

static void client_free(struct client *c)
{
    struct api_stream *st = c->st;
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        st->clients = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    st->n_clients--;
    queue_clear(c);
    msg_unref(c->cur);
    buf_cleanup(&c->obuf);
    if (c->ctx != NULL) {
        wslay_event_context_free(c->ctx);
    }
    free(c);
}

/*
 * Ends the client: the server closes the connection once what was handed to it is written (and
 * after a short drain), and no callback comes for it any more.
 */
static void client_finish(struct client *c)
{
    if (c->busy > 0) {
        c->finish_due = true;
        return;
    }
    if (c->s != NULL) {
        http_upgraded_close(c->s);
        c->s = NULL;
    }
    client_free(c);
}

/* Queues our close frame; the queue of messages is dropped. */
static void client_close(struct client *c, uint16_t code, const char *reason)
{
    if (c->closing) {
        return;
    }
    c->closing = true;
    c->closing_since = uv_now(c->st->loop);
    queue_clear(c);
    int rv = wslay_event_queue_close(c->ctx, code, (const uint8_t *)reason, strlen(reason));
    if (rv != 0) {
        /* wslay is already closing (the peer's close came first): that is fine. */
        log_debug("api", "stream: close %u not queued: %d", code, rv);
    }
}

static ssize_t read_msg(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                        const union wslay_event_msg_source *source, int *eof, void *user_data);

/*
 * Moves what can move: the next queued message into wslay, wslay's frames to the server. Returns
 * false when the client is gone (freed) or will be once the current call unwinds.
 */
static bool client_pump(struct client *c)
{
    if (c->s == NULL) {
        client_finish(c);
        return false;
    }
    c->busy++;
    bool fatal = false;
    for (;;) {
        if (!c->force && http_upgraded_queued(c->s) + c->obuf.len >= NET_HIGH_WATER) {
            break;
        }
        if (c->cur == NULL && c->qhead != NULL && !c->closing &&
            wslay_event_get_queued_msg_count(c->ctx) == 0) {
            struct qnode *n = c->qhead;
            c->qhead = n->next;
            if (c->qhead == NULL) {
                c->qtail = NULL;
            }
            c->cur = n->m;
            c->cur_off = 0;
            c->queued_bytes -= n->m->len;
            free(n);
            struct wslay_event_fragmented_msg fm = {
                .opcode = WSLAY_TEXT_FRAME,
                .source = {.data = c},
                .read_callback = read_msg,
            };
            if (wslay_event_queue_fragmented_msg(c->ctx, &fm) != 0) {
                msg_unref(c->cur);
                c->cur = NULL;
            }
        }
        if (!wslay_event_want_write(c->ctx)) {
            break;
        }
        if (wslay_event_send(c->ctx) != 0) {
            fatal = true;
            break;
        }
        if (wslay_event_want_write(c->ctx) &&
            (c->force || http_upgraded_queued(c->s) + c->obuf.len < NET_HIGH_WATER)) {
            /* wslay stopped without being blocked: nothing more it can do now. */
            break;
        }
    }
    if (!fatal && c->obuf.len > 0) {
        fatal = http_upgraded_send(c->s, c->obuf.data, c->obuf.len) != 0;
        buf_reset(&c->obuf);
    }
    c->busy--;
    if (fatal || c->finish_due) {
        client_finish(c);
        return false;
    }
    if (!wslay_event_want_read(c->ctx) && !wslay_event_want_write(c->ctx)) {
        /* Both closes went through (or wslay gave up): done. */
        client_finish(c);
        return false;
    }
    /* A peer that floods pings but does not read the pongs gets no more of our attention. */
    http_upgraded_set_reading(c->s,
                              wslay_event_want_read(c->ctx) &&
                                  wslay_event_get_queued_msg_count(c->ctx) < MAX_QUEUED_CONTROL);
    return true;
}

/* wslay reads the current message from here, a frame's worth at a time. */
static ssize_t read_msg(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                        const union wslay_event_msg_source *source, int *eof, void *user_data)
{
    (void)ctx;
    (void)user_data;
    struct client *c = source->data;
    struct ws_msg *m = c->cur;
    if (m == NULL) {
        *eof = 1;
        return 0;
    }
    size_t n = m->len - c->cur_off;
    if (n > len) {
        n = len;
    }
    memcpy(buf, m->data + c->cur_off, n);
    c->cur_off += n;
    if (c->cur_off == m->len) {
        *eof = 1;
        c->drops_in_row = 0;
        msg_unref(m);
        c->cur = NULL;
    }
    return (ssize_t)n;
}

static ssize_t ws_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                       void *user_data)
{
    (void)flags;
    struct client *c = user_data;
    if (c->in_len == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = c->in_len < len ? c->in_len : len;
    memcpy(buf, c->in, n);
    c->in += n;
    c->in_len -= n;
    return (ssize_t)n;
}

static ssize_t ws_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user_data)
{
    (void)flags;
    struct client *c = user_data;
    if (c->s == NULL) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    if (!c->force && http_upgraded_queued(c->s) + c->obuf.len >= NET_HIGH_WATER) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    if (buf_append(&c->obuf, data, len) != 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t)len;
}

/* {"signals":["traces",...],"service_name":"..."}: narrows what the client gets. */
static void on_subscribe(struct client *c, const uint8_t *msg, size_t len)
{
    json_error_t err;
    json_t *root = json_loadb((const char *)msg, len, JSON_REJECT_DUPLICATES, &err);
    if (root == NULL || !json_is_object(root)) {
        json_decref(root);
        client_close(c, 1003, "expected a JSON object {\"signals\":[...],\"service_name\":...}");
        return;
    }
    unsigned signals = c->signals;
    bool has_service = c->has_service;
    char service[SERVICE_MAX];
    memcpy(service, c->service, sizeof(service));
    const char *bad = NULL;
    json_t *sig = json_object_get(root, "signals");
    if (sig != NULL) {
        if (!json_is_array(sig)) {
            bad = "\"signals\" must be an array of \"traces\", \"logs\", \"metrics\"";
        } else {
            signals = 0;
            size_t i;
            json_t *v;
            json_array_foreach(sig, i, v)
            {
                const char *name = json_string_value(v);
                unsigned bit = 0;
                for (unsigned k = 0; name != NULL && k < 3; k++) {
                    if (strcmp(name, signal_names[k]) == 0) {
                        bit = 1u << k;
                    }
                }
                if (bit == 0) {
                    bad = "\"signals\" must be an array of \"traces\", \"logs\", \"metrics\"";
                    break;
                }
                signals |= bit;
            }
        }
    }
    json_t *svc = json_object_get(root, "service_name");
    if (bad == NULL && svc != NULL) {
        if (json_is_null(svc)) {
            has_service = false;
        } else if (json_is_string(svc) && json_string_length(svc) > 0 &&
                   json_string_length(svc) < SERVICE_MAX &&
                   strlen(json_string_value(svc)) == json_string_length(svc)) {
            has_service = true;
            memcpy(service, json_string_value(svc), json_string_length(svc) + 1);
        } else {
            bad = "\"service_name\" must be a non-empty string (at most 255 bytes) or null";
        }
    }
    json_decref(root);
    if (bad != NULL) {
        client_close(c, 1003, bad);
        return;
    }
    c->signals = signals;
    c->has_service = has_service;
    memcpy(c->service, service, sizeof(service));
}

static void ws_on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                      void *user_data)
{
    (void)ctx;
    struct client *c = user_data;
    c->last_seen = uv_now(c->st->loop);
    if (c->closing || !c->authed) {
        return; /* A client being closed (or without a token) gets nothing done for it. */
    }
    if (arg->opcode == WSLAY_TEXT_FRAME) {
        on_subscribe(c, arg->msg, arg->msg_length);
    } else if (arg->opcode == WSLAY_BINARY_FRAME) {
        client_close(c, 1003, "binary messages are not accepted");
    }
    /* Pings are answered by wslay; pongs and closes need nothing more here. */
}

static void on_data(void *userdata, const uint8_t *data, size_t len)
{
    struct client *c = userdata;
    c->in = data;
    c->in_len = len;
    c->busy++;
    int rv = wslay_event_recv(c->ctx);
    c->busy--;
    c->in = NULL;
    c->in_len = 0;
    if (rv != 0) {
        /*
         * A frame wslay's parser refuses (a control frame over 125 bytes or fragmented, a bad
         * length): wslay queued a close frame (without a code, it has none for these) and stopped
         * reading. Send it rather than just dropping the connection, then end.
         */
        if (!c->closing) {
            c->closing = true;
            c->closing_since = uv_now(c->st->loop);
            queue_clear(c);
        }
        c->force = true;
        if (client_pump(c)) {
            client_finish(c);
        }
        return;
    }
    (void)client_pump(c);
}

static void on_drained(void *userdata)
{
    (void)client_pump(userdata);
}

static void on_close(void *userdata)
{
    struct client *c = userdata;
    c->s = NULL; /* The server frees it after this returns. */
    client_finish(c);
}

static const struct http_upgrade_handler upgrade_handler = {
    .on_data = on_data,
    .on_drained = on_drained,
    .on_close = on_close,
};

static const struct wslay_event_callbacks ws_callbacks = {
    .recv_callback = ws_recv,
    .send_callback = ws_send,
    .on_msg_recv_callback = ws_on_msg,
};

/* ---- the timer: pings and close deadlines ---------------------------------------------------- */

static void on_tick(uv_timer_t *t)
{
    struct api_stream *st = t->data;
    uint64_t now = uv_now(st->loop);
    struct client *next;
    for (struct client *c = st->clients; c != NULL; c = next) {
        next = c->next;
        if (c->closing) {
            if (now - c->closing_since >= CLOSE_WAIT_MS) {
                client_finish(c);
            }
            continue;
        }
        if (now - c->last_seen >= 3 * (uint64_t)st->ping_ms) {
            /* Three pings without a word back: the peer is gone. */
            log_debug("api", "stream: closing a client silent for %llu ms",
                      (unsigned long long)(now - c->last_seen));
            client_finish(c);
            continue;
        }
        if (now - c->last_ping >= st->ping_ms) {
            c->last_ping = now;
            struct wslay_event_msg ping = {.opcode = WSLAY_PING, .msg = NULL, .msg_length = 0};
            (void)wslay_event_queue_msg(c->ctx, &ping);
            (void)client_pump(c);
        }
    }
}

/* ---- public -------------------------------------------------------------------------------- */

int api_stream_new(struct api_stream **out, uv_loop_t *loop, const struct api_stream_options *o)
{
    if (out == NULL || loop == NULL) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    struct api_stream *st = calloc(1, sizeof(*st));
    if (st == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    st->loop = loop;
    st->queue_max = o != NULL && o->client_queue_max_bytes != 0 ? o->client_queue_max_bytes
                                                                : DEFAULT_QUEUE_BYTES;
    st->ping_ms = o != NULL && o->ping_interval_ms != 0 ? o->ping_interval_ms : DEFAULT_PING_MS;
    st->max_clients = o != NULL && o->max_clients != 0 ? o->max_clients : DEFAULT_MAX_CLIENTS;
    api_rows_init(&st->rows, ROWS_MAX_BYTES);
    if (uv_timer_init(loop, &st->tick) != 0) {
        api_rows_cleanup(&st->rows);
        free(st);
        return DLOTEL_ERR_NOMEM;
    }
    st->tick.data = st;
    /* The stream never keeps the daemon's loop alive by itself. */
    uv_unref((uv_handle_t *)&st->tick);
    *out = st;
    return 0;
}

static void on_tick_closed(uv_handle_t *h)
{
    free(h->data);
}

void api_stream_free(struct api_stream *st)
{
    if (st == NULL) {
        return;
    }
    while (st->clients != NULL) {
        struct client *c = st->clients;
        c->busy = 0;
        if (c->s != NULL) {
            /* One attempt to say goodbye; the server writes it if the socket takes it. */
            client_close(c, 1001, "the server is shutting down");
            c->force = true;
            c->busy++;
            if (wslay_event_want_write(c->ctx)) {
                (void)wslay_event_send(c->ctx);
            }
            if (c->obuf.len > 0) {
                (void)http_upgraded_send(c->s, c->obuf.data, c->obuf.len);
            }
            c->busy--;
        }
        c->finish_due = false;
        client_finish(c);
    }
    api_rows_cleanup(&st->rows);
    uv_close((uv_handle_t *)&st->tick, on_tick_closed);
}

size_t api_stream_clients(const struct api_stream *st)
{
    return st != NULL ? st->n_clients : 0;
}

uint64_t api_stream_dropped(const struct api_stream *st)
{
    return st != NULL ? st->dropped : 0;
}

/* |upgrade_hdrs|: a 426, which names the protocol and its version (RFC 9110 15.5.22). */
static void respond_error(struct http_stream *s, int status, const char *why, bool upgrade_hdrs)
{
    struct buf b;
    buf_init(&b, 1024);
    int rc = buf_append(&b, "{\"success\":false,\"error\":", 25);
    if (rc == 0) {
        rc = otlp_json_put_string(&b, why, strlen(why));
    }
    if (rc == 0) {
        rc = buf_putc(&b, '}');
    }
    struct http_header hdrs[3] = {{"content-type", "application/json"},
                                  {"upgrade", "websocket"},
                                  {"sec-websocket-version", "13"}};
    struct http_response r = {
        .status = status,
        .headers = hdrs,
        .n_headers = upgrade_hdrs ? 3 : 1,
        .body = rc == 0 ? b.data : NULL,
        .body_len = rc == 0 ? b.len : 0,
    };
    (void)http_respond(s, &r);
    buf_cleanup(&b);
}

void api_stream_accept(struct api_stream *st, struct http_stream *s, const struct http_request *req,
                       const struct api_principal *who)
{
    char accept[API_WS_ACCEPT_LEN];
    const char *why = NULL;
    int status = api_ws_check_handshake(req, accept, &why);
    if (status != 0) {
        respond_error(s, status, why, status == 426);
        return;
    }
    if (st->n_clients >= st->max_clients) {
        respond_error(s, 503, "too many stream clients; try again later", false);
        return;
    }
    struct client *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        respond_error(s, 503, "out of memory", false);
        return;
    }
    if (wslay_event_context_server_init(&c->ctx, &ws_callbacks, c) != 0) {
        free(c);
        respond_error(s, 503, "out of memory", false);
        return;
    }
    wslay_event_config_set_max_recv_msg_length(c->ctx, API_STREAM_MAX_CLIENT_MSG);
    /* One pump hands over at most NET_HIGH_WATER, or one whole message when forced. */
    buf_init(&c->obuf, st->queue_max + NET_HIGH_WATER);
    c->st = st;
    c->s = s;
    c->signals = SIG_ALL;
    if (who != NULL) {
        c->who = *who;
        c->who.user_uid[sizeof(c->who.user_uid) - 1] = '\0';
        c->authed = true;
    }
    c->last_seen = c->last_ping = uv_now(st->loop);
    c->next = st->clients;
    if (st->clients != NULL) {
        st->clients->prev = c;
    }
    st->clients = c;
    st->n_clients++;

    struct http_header hdrs[2] = {{"upgrade", "websocket"}, {"sec-websocket-accept", accept}};
    struct http_response r = {.status = 101, .headers = hdrs, .n_headers = 2};
    /* Bytes right behind the request may reach on_data from inside http_upgrade(). */
    c->busy++;
    int rv = http_upgrade(s, &r, &upgrade_handler, c);
    c->busy--;
    if (rv != 0) {
        if (rv == DLOTEL_ERR_INVALID_ARG) {
            respond_error(s, 400, "cannot upgrade this connection", false);
        }
        c->s = NULL;
        c->finish_due = false;
        client_free(c);
        return;
    }
    if (c->finish_due) {
        client_finish(c);
        return;
    }
    if (!st->tick_running) {
        uint32_t every = st->ping_ms < 1000 ? st->ping_ms : 1000;
        uv_timer_start(&st->tick, on_tick, every, every);
        st->tick_running = true;
    }
    if (!c->authed) {
        client_close(c, 1008, "missing or bad token");
    }
    (void)client_pump(c);
}

/* ---- publishing ---------------------------------------------------------------------------- */

static bool client_wants(const struct client *c, int signal)
{
    return c->authed && !c->closing && c->s != NULL && (c->signals & (1u << signal)) != 0;
}

static bool row_visible(const struct api_rows *r, const struct api_row *row, const struct client *c)
{
    if (!c->who.admin) {
        const char *uid = api_rows_str(r, row->uid_off);
        /* A user without a uid sees nothing, as the REST API's scoped views. */
        if (c->who.user_uid[0] == '\0' || uid == NULL || strcmp(uid, c->who.user_uid) != 0) {
            return false;
        }
    }
    if (c->has_service) {
        const char *svc = api_rows_str(r, row->service_off);
        if (svc == NULL || strcmp(svc, c->service) != 0) {
            return false;
        }
    }
    return true;
}

/* Two clients see the same rows: one message serves both. */
static bool same_view(const struct client *a, const struct client *b)
{
    if (a->who.admin != b->who.admin || a->has_service != b->has_service) {
        return false;
    }
    if (!a->who.admin && strcmp(a->who.user_uid, b->who.user_uid) != 0) {
        return false;
    }
    return !a->has_service || strcmp(a->service, b->service) == 0;
}

/* The message of |c|'s view, or NULL when it sees no row (or memory ran out). */
static struct ws_msg *build_msg(struct api_stream *st, int signal, const struct client *c)
{
    const struct api_rows *r = &st->rows;
    size_t n = 0;
    size_t bytes = 0;
    for (size_t i = 0; i < r->n; i++) {
        if (row_visible(r, &r->rows[i], c)) {
            n++;
            bytes += r->rows[i].len + 1;
        }
    }
    if (n == 0) {
        return NULL;
    }
    char head[64];
    int hl = snprintf(head, sizeof(head), "{\"signal\":\"%s\",\"data\":[", signal_names[signal]);
    char tail[48];
    int tl = snprintf(tail, sizeof(tail), "],\"count\":%zu}", n);
    size_t len = (size_t)hl + bytes + (size_t)tl;
    struct ws_msg *m = malloc(sizeof(*m) + len);
    if (m == NULL) {
        return NULL;
    }
    m->refs = 1;
    size_t o = 0;
    memcpy(m->data, head, (size_t)hl);
    o += (size_t)hl;
    bool first = true;
    for (size_t i = 0; i < r->n; i++) {
        const struct api_row *row = &r->rows[i];
        if (!row_visible(r, row, c)) {
            continue;
        }
        if (!first) {
            m->data[o++] = ',';
        }
        first = false;
        memcpy(m->data + o, r->text.data + row->off, row->len);
        o += row->len;
    }
    memcpy(m->data + o, tail, (size_t)tl);
    o += (size_t)tl;
    m->len = o;
    return m;
}

/* Queues |m| for |c| or drops it. Returns false when the client is gone. */
static bool client_offer(struct client *c, struct ws_msg *m)
{
    struct api_stream *st = c->st;
    if (c->queued_bytes > 0 && c->queued_bytes + m->len > st->queue_max) {
        c->dropped++;
        st->dropped++;
        if (++c->drops_in_row >= FAR_BEHIND_DROPS) {
            log_info("api", "stream: closing a client that fell behind (%llu messages dropped)",
                     (unsigned long long)c->dropped);
            client_close(c, 1013, "too slow: messages were dropped");
            /* Its socket is full: the close frame goes out if the server can write it; the
               connection ends either way. */
            c->force = true;
            if (client_pump(c)) {
                client_finish(c);
            }
            return false;
        }
        return true;
    }
    struct qnode *n = malloc(sizeof(*n));
    if (n == NULL) {
        c->dropped++;
        st->dropped++;
        return true;
    }
    n->next = NULL;
    n->m = m;
    m->refs++;
    if (c->qtail != NULL) {
        c->qtail->next = n;
    } else {
        c->qhead = n;
    }
    c->qtail = n;
    c->queued_bytes += m->len;
    return client_pump(c);
}

bool api_stream_wants(const struct api_stream *st, int signal)
{
    if (st == NULL || signal < 0 || signal > 2) {
        return false;
    }
    for (const struct client *c = st->clients; c != NULL; c = c->next) {
        if (client_wants(c, signal)) {
            return true;
        }
    }
    return false;
}

void api_stream_publish(struct api_stream *st, int signal, const uint8_t *pb, size_t len,
                        const char *user_uid)
{
    if (st == NULL || st->clients == NULL || signal < 0 || signal > 2) {
        return;
    }
    if (!api_stream_wants(st, signal)) {
        return;
    }
    int rc = api_rows_build(&st->rows, signal, pb, len, user_uid);
    if (rc != 0) {
        log_warn("api", "stream: cannot render a committed %s request: %s", signal_names[signal],
                 dlotel_strerror(rc));
        return;
    }
    if (st->rows.n == 0) {
        return;
    }
    /* One message per distinct view, built the first time a client with that view comes. */
    struct view {
        struct client *key; /* A copy of the first client's filter: that client may go. */
        struct ws_msg *m;
    } *views = calloc(st->n_clients, sizeof(*views));
    if (views == NULL) {
        return;
    }
    size_t n_views = 0;
    struct client *next;
    for (struct client *c = st->clients; c != NULL; c = next) {
        next = c->next;
        if (!client_wants(c, signal)) {
            continue;
        }
        struct ws_msg *m = NULL;
        bool found = false;
        for (size_t i = 0; i < n_views && !found; i++) {
            if (same_view(views[i].key, c)) {
                m = views[i].m;
                found = true;
            }
        }
        if (!found) {
            m = build_msg(st, signal, c);
            struct client *key = malloc(sizeof(*key));
            if (key == NULL) {
                msg_unref(m);
                continue;
            }
            memcpy(key, c, sizeof(*key));
            views[n_views].key = key;
            views[n_views].m = m;
            n_views++;
        }
        if (m != NULL) {
            (void)client_offer(c, m);
        }
    }
    for (size_t i = 0; i < n_views; i++) {
        msg_unref(views[i].m);
        free(views[i].key);
    }
    free(views);
    buf_reset(&st->rows.text);
}
