/*
 * The libuv half of the HTTP server: listeners, accepted sockets, reads, writes and timers. The
 * protocols live in http_conn.c; this file only moves bytes and decides when to close.
 *
 * Memory: a connection (struct server_conn) owns two handles, the socket and its timer, and is
 * freed when both close callbacks ran. The server is freed when its last handle (listener or
 * connection) is gone after http_server_free(), never from inside a callback of its own.
 */
#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "core/log.h"
#include "dlotel.h"
#include "net/http.h"
#include "net/http_conn.h"

/*
 * One read buffer for the whole server: the loop runs one read callback at a time and the
 * protocol layer copies what it keeps, so connections need no buffer of their own while idle.
 */
#define READ_BUF_SIZE  (256 << 10)
#define LISTEN_BACKLOG 511
/* How long a closing connection drains what the client still sends (see finish()). */
#define LINGER_MS 2000
/* A write buffer larger than this is given back after use instead of kept for the next one. */
#define WBUF_KEEP (1 << 20)
#define MAX_ADDRS 8
/* Request body memory kept for reuse per server (see struct http_buf_pool). */
#define BODY_POOL_BYTES ((size_t)16 << 20)

struct listener {
    uv_tcp_t tcp;
    struct http_server *srv;
    struct listener *next;
};

struct server_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t wreq;
    uv_shutdown_t sreq;
    struct http_server *srv;
    struct http_conn *conn;
    struct server_conn *prev;
    struct server_conn *next;
    struct buf wbuf;    /* The bytes of the write in flight. */
    uint64_t idle_due;  /* uv_now() when the idle timeout ends; 0 while it does not run. */
    uint64_t timer_due; /* When the timer fires, while timer_armed. */
    int open_handles;
    bool writing;
    bool reading;
    bool timer_armed;
    bool goodbye; /* The idle timeout ended it: the timer is the last-chance close. */
    bool eof;
    bool shutting; /* Half-closed and draining before the close. */
    bool closing;  /* uv_close() called. */
};

struct http_server {
    uv_loop_t *loop;
    struct http_conn_config cfg;
    char name[64];
    uint32_t idle_ms;
    uint32_t max_conns;
    uint16_t port;
    struct listener *listeners;
    struct server_conn *conns;
    uint32_t n_conns;
    size_t n_handles; /* Listeners, connections and refused sockets not yet closed. */
    bool freeing;
    bool cap_logged;
    uint64_t accept_warned_ms; /* Accept failures (EMFILE) are logged once a second at most. */
    uint8_t *rbuf;
    struct http_buf_pool pool;
};

static uint64_t server_clock(void *loop)
{
    return uv_now(loop);
}

static void server_destroy(struct http_server *srv)
{
    http_buf_pool_cleanup(&srv->pool);
    free(srv->rbuf);
    free(srv);
}

static void server_handle_done(struct http_server *srv)
{
    srv->n_handles--;
    if (srv->freeing && srv->n_handles == 0) {
        server_destroy(srv);
    }
}

/* -------------------------------------------------------------------------------------------- */
/* Connections */

static void conn_update(struct http_conn *c);

static void on_conn_close(uv_handle_t *h)
{
    struct server_conn *sc = h->data;
    if (--sc->open_handles > 0) {
        return;
    }
    struct http_server *srv = sc->srv;
    if (sc->prev != NULL) {
        sc->prev->next = sc->next;
    } else {
        srv->conns = sc->next;
    }
    if (sc->next != NULL) {
        sc->next->prev = sc->prev;
    }
    http_conn_free(sc->conn);
    buf_cleanup(&sc->wbuf);
    free(sc);
    srv->n_conns--;
    if (srv->n_conns < srv->max_conns) {
        srv->cap_logged = false;
    }
    server_handle_done(srv);
}

/*
 * Closes the socket now. Streams a handler still holds become orphans at once, so that a later
 * http_respond() never touches this connection.
 */
static void close_now(struct server_conn *sc)
{
    if (sc->closing) {
        return;
    }
    sc->closing = true;
    http_conn_shutdown(sc->conn);
    uv_close((uv_handle_t *)&sc->tcp, on_conn_close);
    uv_close((uv_handle_t *)&sc->timer, on_conn_close);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)suggested;
    struct server_conn *sc = h->data;
    *b = uv_buf_init((char *)sc->srv->rbuf, READ_BUF_SIZE);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b)
{
    struct server_conn *sc = stream->data;
    if (sc->closing) {
        return;
    }
    if (nread > 0) {
        if (sc->shutting) {
            return; /* Draining: the response went out; the rest is dropped. */
        }
        http_conn_feed(sc->conn, (const uint8_t *)b->base, (size_t)nread);
        return;
    }
    if (nread == 0) {
        return;
    }
    if (nread == UV_EOF && !sc->shutting) {
        sc->eof = true;
        uv_read_stop(stream);
        sc->reading = false;
        http_conn_eof(sc->conn);
        return;
    }
    if (nread != UV_EOF && nread != UV_ECONNRESET) {
        log_debug(sc->srv->name, "read failed: %s", uv_strerror((int)nread));
    }
    close_now(sc);
}

static void on_timer(uv_timer_t *t)
{
    struct server_conn *sc = t->data;
    sc->timer_armed = false;
    if (sc->shutting || sc->closing) {
        close_now(sc); /* The drain after the last response is over. */
        return;
    }
    struct http_conn *c = sc->conn;
    uint64_t now = uv_now(sc->srv->loop);
    if (!sc->goodbye && !http_conn_finished(c)) {
        if (http_conn_request_due(c) <= now) {
            /* Answers 408 (or resets the late HTTP/2 streams); conn_update() follows. */
            http_conn_request_timeout(c, now);
            return;
        }
        if (sc->idle_due == 0 || sc->idle_due > now) {
            conn_update(c); /* Nothing is due any more: set the timer for what is. */
            return;
        }
        log_debug(sc->srv->name, "closing a connection idle for %u ms", sc->srv->idle_ms);
    }
    /* A safety net in case the goodbye is never written: the peer may not read at all. */
    sc->goodbye = true;
    uv_timer_start(&sc->timer, on_timer, LINGER_MS, 0);
    sc->timer_armed = true;
    if (!http_conn_idle(c)) {
        close_now(sc);
    }
}

/* Runs the timer for |due| (uv_now() time; UINT64_MAX: nothing due). */
static void timer_set(struct server_conn *sc, uint64_t due, uint64_t now)
{
    if (due == UINT64_MAX) {
        if (sc->timer_armed) {
            uv_timer_stop(&sc->timer);
            sc->timer_armed = false;
        }
        return;
    }
    if (sc->timer_armed && sc->timer_due == due) {
        return;
    }
    uv_timer_start(&sc->timer, on_timer, due > now ? due - now : 0, 0);
    sc->timer_armed = true;
    sc->timer_due = due;
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct server_conn *sc = req->data;
    if (status < 0 && !sc->closing) {
        close_now(sc);
    }
}

/*
 * The protocol is done. When the client may still be sending (an error or a too-large body
 * interrupted its request) closing at once would make the kernel answer its data with a reset,
 * which can destroy our response before the client read it. So half-close, drain for a moment,
 * then close.
 */
static void finish(struct server_conn *sc)
{
    if (!sc->conn->linger || sc->eof) {
        close_now(sc);
        return;
    }
    sc->shutting = true;
    sc->sreq.data = sc;
    if (uv_shutdown(&sc->sreq, (uv_stream_t *)&sc->tcp, on_shutdown) != 0) {
        close_now(sc);
        return;
    }
    if (!sc->reading) {
        if (uv_read_start((uv_stream_t *)&sc->tcp, on_alloc, on_read) != 0) {
            close_now(sc);
            return;
        }
        sc->reading = true;
    }
    uint32_t ms = sc->srv->idle_ms < LINGER_MS ? sc->srv->idle_ms : LINGER_MS;
    uv_timer_start(&sc->timer, on_timer, ms, 0);
}

static void on_write(uv_write_t *req, int status)
{
    struct server_conn *sc = req->data;
    sc->writing = false;
    sc->conn->io_pending = 0;
    if (sc->wbuf.cap > WBUF_KEEP) {
        buf_cleanup(&sc->wbuf);
    } else {
        buf_reset(&sc->wbuf);
    }
    if (sc->closing) {
        return;
    }
    if (status < 0) {
        if (status != UV_EPIPE && status != UV_ECONNRESET) {
            log_debug(sc->srv->name, "write failed: %s", uv_strerror(status));
        }
        close_now(sc);
        return;
    }
    http_conn_written(sc->conn);
    /* http_conn_written() calls conn_update() itself. */
}

static int start_write(struct server_conn *sc)
{
    struct http_conn *c = sc->conn;
    /* Swap buffers: the protocol keeps appending to the other one while this one is written. */
    struct buf t = sc->wbuf;
    sc->wbuf = c->out;
    c->out = t;
    uv_buf_t b = uv_buf_init((char *)sc->wbuf.data, (unsigned int)sc->wbuf.len);
    sc->wreq.data = sc;
    int rv = uv_write(&sc->wreq, (uv_stream_t *)&sc->tcp, &b, 1, on_write);
    if (rv != 0) {
        return rv;
    }
    sc->writing = true;
    c->io_pending = sc->wbuf.len;
    return 0;
}

/* Called by the protocol layer after every change; decides writes, reads, timer and close. */
static void conn_update(struct http_conn *c)
{
    struct server_conn *sc = c->io;
    if (sc->closing || sc->shutting) {
        return;
    }
    if (!sc->writing && c->out.len > 0 && start_write(sc) != 0) {
        close_now(sc);
        return;
    }
    if (http_conn_finished(c)) {
        if (c->closed) {
            close_now(sc);
        } else if (!sc->writing && c->out.len == 0) {
            finish(sc);
        } else if (c->proto == HTTP_CONN_RAW && !sc->timer_armed) {
            /* An upgraded connection closed by its owner while its peer does not read: the
               last bytes get the drain time, then the socket closes regardless. */
            uv_timer_start(&sc->timer, on_timer, LINGER_MS, 0);
            sc->timer_armed = true;
        }
        return;
    }
    bool want = http_conn_wants_read(c) && !sc->eof;
    if (want && !sc->reading) {
        if (uv_read_start((uv_stream_t *)&sc->tcp, on_alloc, on_read) != 0) {
            close_now(sc);
            return;
        }
        sc->reading = true;
    } else if (!want && sc->reading) {
        uv_read_stop((uv_stream_t *)&sc->tcp);
        sc->reading = false;
    }
    if (sc->goodbye) {
        return; /* The last-chance timer runs. */
    }
    /*
     * Two deadlines share the timer. The idle one runs while the client owes us something. It
     * is not pushed back by header bytes, so a request trickled in byte by byte (slowloris)
     * still times out; body bytes and HTTP/2 frames do push it back, so that a large upload on a
     * slow link is not cut while it moves. The request deadline bounds that: a request must be
     * complete within request_timeout of its first byte, however steadily it trickles (a body
     * at a byte every few seconds held a connection for ever).
     */
    uint64_t now = uv_now(sc->srv->loop);
    if (http_conn_busy(c)) {
        sc->idle_due = 0;
    } else if (sc->idle_due == 0 || c->progress) {
        /* An upgraded connection that its owner closed gets only the drain time to flush:
           its peer may never read again (a WebSocket client that fell behind). */
        uint32_t ms = sc->srv->idle_ms;
        if (c->proto == HTTP_CONN_RAW && ms > LINGER_MS) {
            ms = LINGER_MS;
        }
        sc->idle_due = now + ms;
    }
    c->progress = false;
    uint64_t due = sc->idle_due != 0 ? sc->idle_due : UINT64_MAX;
    uint64_t request_due = http_conn_request_due(c);
    timer_set(sc, request_due < due ? request_due : due, now);
}

static void on_refused_close(uv_handle_t *h)
{
    struct http_server *srv = h->data;
    free(h);
    server_handle_done(srv);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct listener *l = server->data;
    struct http_server *srv = l->srv;
    if (status < 0) {
        /* Out of descriptors (EMFILE), libuv accepts and drops the waiting connections itself;
           say so, but not for every one of them. */
        uint64_t now = uv_now(srv->loop);
        if (srv->accept_warned_ms == 0 || now - srv->accept_warned_ms >= 1000) {
            srv->accept_warned_ms = now;
            log_warn(srv->name, "accept failed: %s", uv_strerror(status));
        }
        return;
    }
    if (srv->n_conns >= srv->max_conns) {
        /* Accept and close at once: leaving it queued would stall the listener. */
        uv_tcp_t *t = malloc(sizeof(*t));
        if (t == NULL || uv_tcp_init(srv->loop, t) != 0) {
            free(t);
            return;
        }
        t->data = srv;
        srv->n_handles++;
        (void)uv_accept(server, (uv_stream_t *)t);
        uv_close((uv_handle_t *)t, on_refused_close);
        if (!srv->cap_logged) {
            log_warn(srv->name, "%u connections open, the maximum: refusing new ones",
                     srv->max_conns);
            srv->cap_logged = true;
        }
        return;
    }

    struct server_conn *sc = calloc(1, sizeof(*sc));
    if (sc == NULL) {
        log_error(srv->name, "out of memory accepting a connection");
        return;
    }
    sc->srv = srv;
    if (uv_tcp_init(srv->loop, &sc->tcp) != 0) {
        free(sc);
        return;
    }
    uv_timer_init(srv->loop, &sc->timer);
    sc->tcp.data = sc;
    sc->timer.data = sc;
    sc->open_handles = 2;
    sc->next = srv->conns;
    if (srv->conns != NULL) {
        srv->conns->prev = sc;
    }
    srv->conns = sc;
    srv->n_conns++;
    srv->n_handles++;

    int rv = http_conn_new(&sc->conn, &srv->cfg, conn_update, sc);
    if (rv != 0) {
        /* The socket must still be accepted, then closed; conn is NULL and free is a no-op. */
        (void)uv_accept(server, (uv_stream_t *)&sc->tcp);
        sc->closing = true;
        uv_close((uv_handle_t *)&sc->tcp, on_conn_close);
        uv_close((uv_handle_t *)&sc->timer, on_conn_close);
        return;
    }
    buf_init(&sc->wbuf, sc->conn->out.max);
    rv = uv_accept(server, (uv_stream_t *)&sc->tcp);
    if (rv != 0) {
        log_debug(srv->name, "accept failed: %s", uv_strerror(rv));
        close_now(sc);
        return;
    }
    /* Responses are written whole; Nagle would only delay them. */
    uv_tcp_nodelay(&sc->tcp, 1);
    conn_update(sc->conn);
}

/* -------------------------------------------------------------------------------------------- */
/* Listeners */

static void on_listener_close(uv_handle_t *h)
{
    struct listener *l = h->data;
    struct http_server *srv = l->srv;
    free(l);
    server_handle_done(srv);
}

static void close_listeners(struct http_server *srv)
{
    struct listener *l = srv->listeners;
    srv->listeners = NULL;
    while (l != NULL) {
        struct listener *next = l->next;
        uv_close((uv_handle_t *)&l->tcp, on_listener_close);
        l = next;
    }
}

/*
 * Returns 0 or a libuv error. |*added| is set to the listener once its handle exists (it is then
 * linked into srv->listeners and must be closed, whatever the result).
 */
static int listener_add(struct http_server *srv, const struct sockaddr *sa, unsigned int flags,
                        struct listener **added)
{
    *added = NULL;
    struct listener *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        return UV_ENOMEM;
    }
    l->srv = srv;
    int rv = uv_tcp_init_ex(srv->loop, &l->tcp, sa->sa_family);
    if (rv != 0) {
        free(l); /* libuv unlinks a handle whose socket could not be created. */
        return rv;
    }
    l->tcp.data = l;
    l->next = srv->listeners;
    srv->listeners = l;
    srv->n_handles++;
    *added = l;
    rv = uv_tcp_bind(&l->tcp, sa, flags);
    if (rv == 0) {
        /* libuv reports EADDRINUSE from bind() only here. */
        rv = uv_listen((uv_stream_t *)&l->tcp, LISTEN_BACKLOG, on_connection);
    }
    return rv;
}

static uint16_t sockaddr_port(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET6) {
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    }
    return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

static void sockaddr_set_port(struct sockaddr_storage *ss, uint16_t port)
{
    if (ss->ss_family == AF_INET6) {
        ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
    } else {
        ((struct sockaddr_in *)ss)->sin_port = htons(port);
    }
}

/* Resolves |host| into at most MAX_ADDRS addresses. Returns the count, or a dlotel error. */
static int resolve(const char *host, uint16_t port, struct sockaddr_storage *addrs, bool *optional)
{
    memset(addrs, 0, MAX_ADDRS * sizeof(*addrs));
    memset(optional, 0, MAX_ADDRS * sizeof(*optional));
    if (host == NULL || host[0] == '\0' || strcmp(host, "localhost") == 0) {
        uv_ip4_addr("127.0.0.1", port, (struct sockaddr_in *)&addrs[0]);
        uv_ip6_addr("::1", port, (struct sockaddr_in6 *)&addrs[1]);
        optional[1] = true; /* Hosts without IPv6 still get 127.0.0.1. */
        return 2;
    }
    char bare[128];
    size_t n = strlen(host);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']' && n - 2 < sizeof(bare)) {
        memcpy(bare, host + 1, n - 2);
        bare[n - 2] = '\0';
        host = bare;
    }
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&addrs[0]) == 0 ||
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addrs[0]) == 0) {
        return 1;
    }
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_ADDRCONFIG};
    struct addrinfo *res;
    if (getaddrinfo(host, NULL, &hints, &res) != 0) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    int count = 0;
    for (struct addrinfo *ai = res; ai != NULL && count < MAX_ADDRS; ai = ai->ai_next) {
        if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
            ai->ai_addrlen > sizeof(addrs[0])) {
            continue;
        }
        struct sockaddr_storage ss;
        memset(&ss, 0, sizeof(ss));
        memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
        sockaddr_set_port(&ss, port);
        bool dup = false;
        for (int i = 0; i < count; i++) {
            if (memcmp(&addrs[i], &ss, sizeof(ss)) == 0) {
                dup = true;
            }
        }
        if (!dup) {
            addrs[count++] = ss;
        }
    }
    freeaddrinfo(res);
    return count > 0 ? count : DLOTEL_ERR_INVALID_ARG;
}

static int map_uv_error(int rv)
{
    switch (rv) {
    case UV_EADDRINUSE:
        return DLOTEL_ERR_ADDR_IN_USE;
    case UV_ENOMEM:
        return DLOTEL_ERR_NOMEM;
    default:
        return DLOTEL_ERR_IO;
    }
}

/* Binds every address on one port. Returns 0 or a libuv error; |*failed| names the address. */
static int bind_all(struct http_server *srv, struct sockaddr_storage *addrs, const bool *optional,
                    int n, uint16_t port, int *failed)
{
    bool any_v4 = false;
    for (int i = 0; i < n; i++) {
        any_v4 = any_v4 || addrs[i].ss_family == AF_INET;
    }
    srv->port = port;
    for (int i = 0; i < n; i++) {
        sockaddr_set_port(&addrs[i], srv->port);
        /* With an IPv4 address beside it, "::" must not also claim IPv4 (EADDRINUSE). */
        unsigned int flags = addrs[i].ss_family == AF_INET6 && any_v4 ? UV_TCP_IPV6ONLY : 0;
        struct listener *l;
        int rv = listener_add(srv, (const struct sockaddr *)&addrs[i], flags, &l);
        if (rv != 0 && optional[i] && (rv == UV_EADDRNOTAVAIL || rv == UV_EAFNOSUPPORT)) {
            /* No IPv6 loopback on this host: 127.0.0.1 alone is fine. */
            if (l != NULL) {
                srv->listeners = l->next;
                uv_close((uv_handle_t *)&l->tcp, on_listener_close);
            }
            continue;
        }
        if (rv != 0) {
            *failed = i;
            return rv;
        }
        if (srv->port == 0) {
            struct sockaddr_storage ss;
            int len = sizeof(ss);
            rv = uv_tcp_getsockname(&srv->listeners->tcp, (struct sockaddr *)&ss, &len);
            if (rv != 0) {
                *failed = i;
                return rv;
            }
            srv->port = sockaddr_port(&ss);
        }
    }
    return 0;
}

int http_server_new(struct http_server **out, uv_loop_t *loop, const struct http_listen_options *o)
{
    if (out == NULL || loop == NULL || o == NULL || o->handler == NULL ||
        (!o->http1 && !o->http2)) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    struct sockaddr_storage addrs[MAX_ADDRS];
    bool optional[MAX_ADDRS];
    int n = resolve(o->host, o->port, addrs, optional);
    if (n < 0) {
        log_error(o->name ? o->name : "http", "cannot resolve listen host \"%s\"",
                  o->host ? o->host : "");
        return n;
    }

    struct http_server *srv = calloc(1, sizeof(*srv));
    if (srv == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    srv->rbuf = malloc(READ_BUF_SIZE);
    if (srv->rbuf == NULL) {
        free(srv);
        return DLOTEL_ERR_NOMEM;
    }
    srv->loop = loop;
    snprintf(srv->name, sizeof(srv->name), "%s", o->name != NULL ? o->name : "http");
    srv->cfg.name = srv->name;
    srv->cfg.http1 = o->http1;
    srv->cfg.http2 = o->http2;
    srv->cfg.max_body = o->max_body;
    srv->cfg.max_header_bytes = o->max_header_bytes != 0 ? o->max_header_bytes : 64 << 10;
    srv->cfg.max_headers = o->max_headers != 0 ? o->max_headers : 100;
    srv->cfg.handler = o->handler;
    srv->cfg.userdata = o->userdata;
    srv->cfg.max_conn_body = o->max_conn_body_bytes;
    srv->cfg.request_timeout_ms = o->request_timeout_ms == 0            ? 60000
                                  : o->request_timeout_ms == UINT32_MAX ? 0
                                                                        : o->request_timeout_ms;
    srv->cfg.clock = server_clock;
    srv->cfg.clock_ctx = loop;
    srv->pool.max_bytes = BODY_POOL_BYTES;
    srv->cfg.pool = &srv->pool;
    srv->idle_ms = o->idle_timeout_ms != 0 ? o->idle_timeout_ms : 60000;
    srv->max_conns = o->max_connections != 0 ? o->max_connections : 4096;

    /*
     * Port 0 takes a free port on the first address and asks for the same one on the others;
     * another program can hold it there, so try a few ports before giving up.
     */
    int rv = 0;
    int failed = 0;
    for (int attempt = 0; attempt < 8; attempt++) {
        rv = bind_all(srv, addrs, optional, n, o->port, &failed);
        if (rv == 0 && srv->listeners != NULL) {
            break;
        }
        close_listeners(srv);
        if (rv == 0) {
            rv = UV_EADDRNOTAVAIL; /* Nothing could be bound at all. */
        }
        if (!(o->port == 0 && rv == UV_EADDRINUSE && failed > 0)) {
            break;
        }
    }
    if (rv != 0) {
        char ip[64] = "";
        if (addrs[failed].ss_family == AF_INET6) {
            uv_ip6_name((const struct sockaddr_in6 *)&addrs[failed], ip, sizeof(ip));
        } else {
            uv_ip4_name((const struct sockaddr_in *)&addrs[failed], ip, sizeof(ip));
        }
        log_error(srv->name, "cannot listen on %s port %u: %s", ip, (unsigned)srv->port,
                  uv_strerror(rv));
        srv->freeing = true;
        if (srv->n_handles == 0) {
            server_destroy(srv);
        }
        /* Otherwise the close callbacks free it when the loop runs next. */
        return map_uv_error(rv);
    }
    log_info(srv->name, "listening on %s port %u (%s%s%s)", o->host ? o->host : "localhost",
             (unsigned)srv->port, o->http1 ? "HTTP/1.1" : "", o->http1 && o->http2 ? ", " : "",
             o->http2 ? "HTTP/2" : "");
    *out = srv;
    return 0;
}

uint16_t http_server_port(const struct http_server *srv)
{
    return srv->port;
}

void http_server_free(struct http_server *srv)
{
    if (srv == NULL || srv->freeing) {
        return;
    }
    srv->freeing = true;
    close_listeners(srv);
    for (struct server_conn *sc = srv->conns; sc != NULL; sc = sc->next) {
        close_now(sc);
    }
    if (srv->n_handles == 0) {
        server_destroy(srv);
    }
}

uint64_t http_raise_fd_limit(void)
{
    static bool done;
    static uint64_t limit;
    if (done) {
        return limit;
    }
    done = true;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        return 0;
    }
    limit = rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur;
    if (rl.rlim_cur == rl.rlim_max) {
        log_debug("http", "open file limit %llu (the hard limit)", (unsigned long long)limit);
        return limit;
    }
    rlim_t old = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        log_warn("http", "cannot raise the open file limit from %llu: %s", (unsigned long long)old,
                 strerror(errno));
        return limit;
    }
    limit = rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur;
    log_info("http", "open file limit raised from %llu to %llu (the hard limit)",
             (unsigned long long)old, (unsigned long long)limit);
    return limit;
}
