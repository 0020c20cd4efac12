/*
 * libcurl multi on libuv. See curl_uv.h.
 *
 * The shape is the one curl documents for event-driven programs (docs/examples/multi-uv.c):
 * curl tells us per socket what to wait for, we tell it with curl_multi_socket_action() what
 * happened, and it tells us one deadline at a time. Two details matter beyond the example:
 *
 * - Finished transfers are handed to their owners outside of any curl callback, so an owner may
 *   start the next transfer, cancel another one, or drop the last reference from |done|. A
 *   reference held across the dispatch keeps the multi alive until it returns.
 * - Poll handles are tracked in a list, so that the last release closes any that curl did not
 *   tell us to remove while it shut its connections down.
 */
#include "exporter/curl_uv.h"

#include <stdbool.h>
#include <stdlib.h>

#include "core/log.h"
#include "dlotel.h"

struct sock_ctx {
    uv_poll_t poll;
    curl_socket_t fd;
    struct curl_uv *cu;
    struct sock_ctx *prev, *next;
};

struct curl_uv {
    uv_loop_t *loop;
    CURLM *multi;
    CURLSH *share; /* TLS sessions, so that a new connection resumes instead of a full handshake. */
    uv_timer_t timer;
    int refs;
    struct sock_ctx *socks;
    struct curl_uv *next; /* In the registry. */
};

/* The multi handles of all loops, so that exporters on one loop find theirs. */
static uv_once_t registry_once = UV_ONCE_INIT;
static uv_mutex_t registry_mu;
static struct curl_uv *registry;
static bool curl_ok;

static void registry_init(void)
{
    if (uv_mutex_init(&registry_mu) != 0) {
        abort(); /* Cannot happen on Linux; nothing could run without it. */
    }
    /*
     * Once per process and never undone: curl_global_cleanup() while another library in the
     * host process still uses curl would pull OpenSSL out from under it.
     */
    curl_ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
}

static void check_done(struct curl_uv *cu);

static void on_sock_close(uv_handle_t *h)
{
    free(h->data);
}

static void sock_unlink(struct curl_uv *cu, struct sock_ctx *c)
{
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        cu->socks = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    c->prev = c->next = NULL;
}

static void sock_close(struct curl_uv *cu, struct sock_ctx *c)
{
    sock_unlink(cu, c);
    uv_poll_stop(&c->poll);
    uv_close((uv_handle_t *)&c->poll, on_sock_close);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct sock_ctx *c = h->data;
    struct curl_uv *cu = c->cu;
    int flags = 0;
    if (status < 0) {
        flags |= CURL_CSELECT_ERR;
    }
    if (events & UV_READABLE) {
        flags |= CURL_CSELECT_IN;
    }
    if (events & UV_WRITABLE) {
        flags |= CURL_CSELECT_OUT;
    }
    int running;
    /* May close |c| through on_socket(CURL_POLL_REMOVE); |c| is freed only later, by libuv. */
    curl_multi_socket_action(cu->multi, c->fd, flags, &running);
    check_done(cu);
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy;
    struct curl_uv *cu = userp;
    struct sock_ctx *c = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (c != NULL) {
            sock_close(cu, c);
            curl_multi_assign(cu->multi, fd, NULL);
        }
        return 0;
    }
    if (c == NULL) {
        c = calloc(1, sizeof(*c));
        if (c == NULL) {
            return -1;
        }
        if (uv_poll_init_socket(cu->loop, &c->poll, fd) != 0) {
            free(c);
            return -1;
        }
        c->fd = fd;
        c->cu = cu;
        c->poll.data = c;
        c->next = cu->socks;
        if (cu->socks != NULL) {
            cu->socks->prev = c;
        }
        cu->socks = c;
        curl_multi_assign(cu->multi, fd, c);
    }
    int events = 0;
    if (what & CURL_POLL_IN) {
        events |= UV_READABLE;
    }
    if (what & CURL_POLL_OUT) {
        events |= UV_WRITABLE;
    }
    if (uv_poll_start(&c->poll, events, on_poll) != 0) {
        return -1;
    }
    return 0;
}

static void on_timeout(uv_timer_t *t)
{
    struct curl_uv *cu = t->data;
    int running;
    curl_multi_socket_action(cu->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(cu);
}

static int on_timer(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    struct curl_uv *cu = userp;
    if (timeout_ms < 0) {
        uv_timer_stop(&cu->timer);
        return 0;
    }
    /* 0 means "as soon as possible": a zero timer runs on the next loop iteration. */
    return uv_timer_start(&cu->timer, on_timeout, (uint64_t)timeout_ms, 0) == 0 ? 0 : -1;
}

static void check_done(struct curl_uv *cu)
{
    /* An owner may release its reference from |done|: hold one until the dispatch ends. */
    uv_mutex_lock(&registry_mu);
    cu->refs++;
    uv_mutex_unlock(&registry_mu);
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(cu->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE) {
            continue;
        }
        /* |msg| dies with curl_multi_remove_handle(): copy what we need first. */
        CURL *easy = msg->easy_handle;
        CURLcode rc = msg->data.result;
        struct curl_uv_xfer *x = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
        curl_multi_remove_handle(cu->multi, easy);
        if (x != NULL) {
            x->cu_ = NULL;
            x->done(x, rc);
        }
    }
    curl_uv_release(cu);
}

static void on_timer_close(uv_handle_t *h)
{
    free(h->data);
}

int curl_uv_acquire(struct curl_uv **out, uv_loop_t *loop)
{
    uv_once(&registry_once, registry_init);
    if (!curl_ok) {
        log_error("otlp", "libcurl could not be initialised");
        return DLOTEL_ERR_INTERNAL;
    }
    int rv = 0;
    uv_mutex_lock(&registry_mu);
    struct curl_uv *cu;
    for (cu = registry; cu != NULL; cu = cu->next) {
        if (cu->loop == loop) {
            cu->refs++;
            *out = cu;
            goto out;
        }
    }
    cu = calloc(1, sizeof(*cu));
    if (cu == NULL) {
        rv = DLOTEL_ERR_NOMEM;
        goto out;
    }
    cu->multi = curl_multi_init();
    if (cu->multi == NULL) {
        free(cu);
        rv = DLOTEL_ERR_NOMEM;
        goto out;
    }
    /* One loop, one thread: the share needs no lock callbacks. */
    cu->share = curl_share_init();
    if (cu->share == NULL) {
        curl_multi_cleanup(cu->multi);
        free(cu);
        rv = DLOTEL_ERR_NOMEM;
        goto out;
    }
    curl_share_setopt(cu->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    if (uv_timer_init(loop, &cu->timer) != 0) {
        curl_share_cleanup(cu->share);
        curl_multi_cleanup(cu->multi);
        free(cu);
        rv = DLOTEL_ERR_INTERNAL;
        goto out;
    }
    cu->loop = loop;
    cu->refs = 1;
    cu->timer.data = cu;
    curl_multi_setopt(cu->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(cu->multi, CURLMOPT_SOCKETDATA, cu);
    curl_multi_setopt(cu->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(cu->multi, CURLMOPT_TIMERDATA, cu);
    /* HTTP/2 multiplexing is curl's default; say so, since connection reuse depends on it. */
    curl_multi_setopt(cu->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    cu->next = registry;
    registry = cu;
    *out = cu;
out:
    uv_mutex_unlock(&registry_mu);
    return rv;
}

void curl_uv_release(struct curl_uv *cu)
{
    if (cu == NULL) {
        return;
    }
    uv_mutex_lock(&registry_mu);
    bool last = --cu->refs == 0;
    if (last) {
        for (struct curl_uv **pp = &registry; *pp != NULL; pp = &(*pp)->next) {
            if (*pp == cu) {
                *pp = cu->next;
                break;
            }
        }
    }
    uv_mutex_unlock(&registry_mu);
    if (!last) {
        return;
    }
    /* Closing the cached connections calls on_socket(CURL_POLL_REMOVE) for their sockets. */
    curl_multi_cleanup(cu->multi);
    cu->multi = NULL;
    curl_share_cleanup(cu->share);
    cu->share = NULL;
    while (cu->socks != NULL) {
        sock_close(cu, cu->socks);
    }
    uv_timer_stop(&cu->timer);
    uv_close((uv_handle_t *)&cu->timer, on_timer_close);
}

int curl_uv_add(struct curl_uv *cu, struct curl_uv_xfer *x)
{
    curl_easy_setopt(x->easy, CURLOPT_PRIVATE, (void *)x);
    curl_easy_setopt(x->easy, CURLOPT_SHARE, cu->share);
    x->cu_ = cu;
    CURLMcode mc = curl_multi_add_handle(cu->multi, x->easy);
    if (mc != CURLM_OK) {
        x->cu_ = NULL;
        log_error("otlp", "curl_multi_add_handle: %s", curl_multi_strerror(mc));
        return DLOTEL_ERR_INTERNAL;
    }
    return 0;
}

void curl_uv_cancel(struct curl_uv_xfer *x)
{
    if (x->cu_ == NULL) {
        return;
    }
    curl_multi_remove_handle(x->cu_->multi, x->easy);
    x->cu_ = NULL;
}
