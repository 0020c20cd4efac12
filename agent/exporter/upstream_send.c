/*
 * The request machinery shared by otlp_http and otlp_grpc. See upstream_send.h.
 *
 * A send() goes through three steps, all but the second on the loop thread:
 *
 *   1. send(): validate, allocate the request, and either start the transfer at once (no
 *      compression) or queue the compression on libuv's thread pool. A 4 MiB batch takes tens
 *      of milliseconds to gzip; on the loop that would stall every receiver.
 *   2. the thread pool compresses |pb| into the request's own buffer (|pb| is the caller's and
 *      stays valid and unchanged until |done|).
 *   3. back on the loop, the transfer runs on the loop's shared multi handle; when curl is done
 *      the protocol's |finish| classifies the attempt and |done| gets the result.
 *
 * The body is served to curl through a read callback over (prefix, body), so neither the gRPC
 * prefix nor an uncompressed batch is ever copied; a seek callback lets curl rewind when it
 * retries a request on a fresh connection (a reused connection that the server had just closed).
 */
#include "exporter/upstream_send.h"

#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "dlotel.h"
#include "exporter/upstream.h"

#define DEFAULT_TIMEOUT_MS 10000L

struct upstream {
    struct exporter base; /* First, so that a struct exporter * converts back. */
    const struct upstream_proto *proto;
    uv_loop_t *loop;
    struct curl_uv *cu;
    char *logname; /* "otlp_http/<name>" */
    char *where;   /* scheme://host:port of the endpoint, without credentials: for logs. */
    char *urls[OTLP_SIGNAL_COUNT];
    struct curl_slist *headers; /* Shared by every transfer: curl only reads it. */
    enum codec codec;
    long timeout_ms;
    char *ca_file;
    char *cert_file;
    char *key_file;
    bool insecure;
    bool tls;                  /* An https:// endpoint. */
    bool h2c_fresh;            /* One connection per call: see h2c_reuse_broken(). */
    struct upstream_req *reqs; /* In flight. */
    bool closing;
};

static const char *const SIGNAL_NAMES[OTLP_SIGNAL_COUNT] = {"traces", "metrics", "logs"};

/* -------------------------------------------------------------------------------------------- */
/* Lifetime */

static void free_upstream(struct upstream *u)
{
    for (int i = 0; i < OTLP_SIGNAL_COUNT; i++) {
        free(u->urls[i]);
    }
    curl_slist_free_all(u->headers);
    curl_uv_release(u->cu);
    free(u->logname);
    free(u->where);
    free(u->ca_file);
    free(u->cert_file);
    free(u->key_file);
    free(u);
}

/* After destroy(), the last request to come back from the thread pool frees the exporter. */
static void maybe_free(struct upstream *u)
{
    if (u->closing && u->reqs == NULL) {
        free_upstream(u);
    }
}

static void req_unlink(struct upstream_req *q)
{
    struct upstream *u = q->u;
    if (q->prev != NULL) {
        q->prev->next = q->next;
    } else {
        u->reqs = q->next;
    }
    if (q->next != NULL) {
        q->next->prev = q->prev;
    }
    q->prev = q->next = NULL;
}

/* Stops the transfer if running and frees the request; |done| is not called (see complete()). */
static void req_free(struct upstream_req *q)
{
    if (q->xfer.easy != NULL) {
        curl_uv_cancel(&q->xfer);
        curl_easy_cleanup(q->xfer.easy);
        q->xfer.easy = NULL;
    }
    req_unlink(q);
    buf_cleanup(&q->zbody);
    buf_cleanup(&q->resp);
    buf_cleanup(&q->grpc_message);
    buf_cleanup(&q->grpc_details);
    free(q);
}

static void log_result(const struct upstream_req *q, const struct export_result *r, int curl_rc)
{
    const struct upstream *u = q->u;
    const char *sig = SIGNAL_NAMES[q->signal];
    if (curl_rc != CURLE_OK && upstream_curl_is_tls_problem(curl_rc)) {
        /* A certificate or key problem needs a person: say so on every attempt. */
        log_error(u->logname, "%s: TLS problem talking to %s: %s (%s)", sig, u->where, r->message,
                  r->outcome == EXPORT_RETRY ? "retryable: the server's certificate must be fixed"
                                             : "permanent: fix the TLS files of this exporter");
        return;
    }
    if (r->outcome == EXPORT_OK) {
        if (r->rejected_items > 0) {
            log_debug(u->logname,
                      "%s: sent %zu bytes, %llu items: partial success, %llu rejected: %s", sig,
                      q->len, (unsigned long long)q->items, (unsigned long long)r->rejected_items,
                      r->message);
        } else {
            log_debug(u->logname, "%s: sent %zu bytes, %llu items: ok", sig, q->len,
                      (unsigned long long)q->items);
        }
        return;
    }
    /* The pipeline logs what it does about it (retry, drop); this line says what happened. */
    log_debug(u->logname, "%s: %s (%s)", sig, r->message,
              r->outcome == EXPORT_RETRY ? "retryable" : "permanent");
}

/* Frees |q| and reports |r| to its owner; the owner may send again or destroy from |done|. */
static void complete(struct upstream_req *q, const struct export_result *r, int curl_rc)
{
    log_result(q, r, curl_rc);
    export_done_fn done = q->done;
    void *ud = q->userdata;
    struct export_result copy = *r;
    req_free(q);
    done(ud, &copy);
}

void upstream_set_message(struct export_result *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->message, sizeof(r->message), fmt, ap);
    va_end(ap);
}

static void result_init(struct export_result *r)
{
    memset(r, 0, sizeof(*r));
    r->outcome = EXPORT_RETRY;
    r->grpc_status = -1;
}

/* -------------------------------------------------------------------------------------------- */
/* curl callbacks */

static size_t on_read(char *dst, size_t size, size_t nitems, void *ud)
{
    struct upstream_req *q = ud;
    size_t want = size * nitems;
    size_t total = q->prefix_len + q->body_len;
    size_t copied = 0;
    while (copied < want && q->sent < total) {
        const uint8_t *src;
        size_t avail;
        if (q->sent < q->prefix_len) {
            src = q->prefix + q->sent;
            avail = q->prefix_len - q->sent;
        } else {
            src = q->body + (q->sent - q->prefix_len);
            avail = total - q->sent;
        }
        size_t n = avail < want - copied ? avail : want - copied;
        memcpy(dst + copied, src, n);
        copied += n;
        q->sent += n;
    }
    return copied;
}

static int on_seek(void *ud, curl_off_t offset, int origin)
{
    struct upstream_req *q = ud;
    if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > q->prefix_len + q->body_len) {
        return CURL_SEEKFUNC_FAIL;
    }
    q->sent = (size_t)offset;
    return CURL_SEEKFUNC_OK;
}

static size_t on_write(char *p, size_t size, size_t nmemb, void *ud)
{
    struct upstream_req *q = ud;
    size_t n = size * nmemb;
    size_t room = q->resp.max - q->resp.len;
    /*
     * Keep what fits and swallow the rest: refusing bytes would turn a 200 with a chatty body
     * into a transport error and a retry of data the server already took.
     */
    if (n > room) {
        q->resp_truncated = true;
    }
    if (room > 0 && buf_append(&q->resp, p, n < room ? n : room) != 0) {
        q->resp_truncated = true;
    }
    return n;
}

static void set_header(char *dst, size_t cap, const char *v, size_t len)
{
    if (len >= cap) {
        len = cap - 1;
    }
    memcpy(dst, v, len);
    dst[len] = 0;
}

static void set_header_buf(struct buf *b, const char *v, size_t len)
{
    buf_reset(b);
    if (len > b->max) {
        len = b->max; /* Cut: the parser will then fail, and the code stands without details. */
    }
    buf_append(b, v, len);
}

static void reset_headers(struct upstream_req *q)
{
    q->content_type[0] = 0;
    q->content_encoding[0] = 0;
    q->retry_after[0] = 0;
    q->grpc_status[0] = 0;
    q->grpc_encoding[0] = 0;
    buf_reset(&q->grpc_message);
    buf_reset(&q->grpc_details);
}

static bool name_is(const char *name, size_t len, const char *want)
{
    return strlen(want) == len && strncasecmp(name, want, len) == 0;
}

/*
 * curl calls this once per header line, for the headers of every response in the exchange
 * (interim 1xx ones too, and a proxy's CONNECT answer) and, on HTTP/2, for the trailers after
 * the body. A status line starts a new response, so what came before it is forgotten.
 */
static size_t on_header(char *p, size_t size, size_t nitems, void *ud)
{
    struct upstream_req *q = ud;
    size_t n = size * nitems;
    size_t len = n;
    while (len > 0 && (p[len - 1] == '\r' || p[len - 1] == '\n')) {
        len--;
    }
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        reset_headers(q);
        return n;
    }
    const char *colon = memchr(p, ':', len);
    if (colon == NULL) {
        return n;
    }
    size_t nl = (size_t)(colon - p);
    const char *v = colon + 1;
    size_t vl = len - nl - 1;
    while (vl > 0 && (v[0] == ' ' || v[0] == '\t')) {
        v++;
        vl--;
    }
    while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t')) {
        vl--;
    }
    if (name_is(p, nl, "content-type")) {
        set_header(q->content_type, sizeof(q->content_type), v, vl);
    } else if (name_is(p, nl, "content-encoding")) {
        set_header(q->content_encoding, sizeof(q->content_encoding), v, vl);
    } else if (name_is(p, nl, "retry-after")) {
        set_header(q->retry_after, sizeof(q->retry_after), v, vl);
    } else if (q->u->proto->grpc) {
        if (name_is(p, nl, "grpc-status")) {
            set_header(q->grpc_status, sizeof(q->grpc_status), v, vl);
        } else if (name_is(p, nl, "grpc-message")) {
            set_header_buf(&q->grpc_message, v, vl);
        } else if (name_is(p, nl, "grpc-status-details-bin")) {
            set_header_buf(&q->grpc_details, v, vl);
        } else if (name_is(p, nl, "grpc-encoding")) {
            set_header(q->grpc_encoding, sizeof(q->grpc_encoding), v, vl);
        }
    }
    return n;
}

/* -------------------------------------------------------------------------------------------- */
/* The transfer */

static void on_xfer_done(struct curl_uv_xfer *x, CURLcode rc)
{
    struct upstream_req *q =
        (struct upstream_req *)(void *)((char *)x - offsetof(struct upstream_req, xfer));
    struct export_result r;
    result_init(&r);
    q->u->proto->finish(q, rc, &r);
    complete(q, &r, rc);
}

#define SETOPT(opt, val)                                                                           \
    do {                                                                                           \
        if (curl_easy_setopt(easy, opt, val) != CURLE_OK) {                                        \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

/* Builds the easy handle for |q| and starts it. Returns 0 or a dlotel_error. */
static int start_transfer(struct upstream_req *q)
{
    struct upstream *u = q->u;
    CURL *easy = curl_easy_init();
    if (easy == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    SETOPT(CURLOPT_URL, u->urls[q->signal]);
    /* Only the two schemes an endpoint may have. */
    /* Best effort: libcurl before 7.85 does not know the option, and the endpoint is checked. */
    (void)curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    SETOPT(CURLOPT_NOSIGNAL, 1L);
    SETOPT(CURLOPT_ERRORBUFFER, q->errbuf);
    SETOPT(CURLOPT_USERAGENT, "dlotel/" DLOTEL_VERSION);
    SETOPT(CURLOPT_HTTPHEADER, u->headers);
    SETOPT(CURLOPT_POST, 1L);
    SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(q->prefix_len + q->body_len));
    SETOPT(CURLOPT_READFUNCTION, on_read);
    SETOPT(CURLOPT_READDATA, q);
    SETOPT(CURLOPT_SEEKFUNCTION, on_seek);
    SETOPT(CURLOPT_SEEKDATA, q);
    SETOPT(CURLOPT_WRITEFUNCTION, on_write);
    SETOPT(CURLOPT_WRITEDATA, q);
    SETOPT(CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(CURLOPT_HEADERDATA, q);
    SETOPT(CURLOPT_TIMEOUT_MS, u->timeout_ms);
    SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
    if (u->h2c_fresh) {
        SETOPT(CURLOPT_FRESH_CONNECT, 1L);
        SETOPT(CURLOPT_FORBID_REUSE, 1L);
    } else {
        /*
         * Wait for an HTTP/2 connection being set up rather than open a second one, so that
         * concurrent sends multiplex on one connection.
         */
        SETOPT(CURLOPT_PIPEWAIT, 1L);
    }
    SETOPT(CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
    if (u->proto->grpc) {
        /*
         * http://: h2c with prior knowledge. https://: h2 through ALPN, falling back to
         * HTTP/1.1 when the server does not offer it - then grpc_finish() says that the server
         * is no gRPC server, instead of prior knowledge forcing HTTP/2 frames onto an HTTP/1.1
         * server and failing as a broken connection (which would be retried forever).
         */
        SETOPT(CURLOPT_HTTP_VERSION,
               u->tls ? (long)CURL_HTTP_VERSION_2TLS : (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE);
        /* Through a proxy only a CONNECT tunnel can carry HTTP/2 to the server. */
        SETOPT(CURLOPT_HTTPPROXYTUNNEL, 1L);
    } else {
        SETOPT(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    }
    /*
     * Proxies: CURLOPT_PROXY stays unset on purpose, so libcurl reads http_proxy, https_proxy,
     * all_proxy and no_proxy from the environment for every transfer.
     */
    if (u->ca_file != NULL) {
        SETOPT(CURLOPT_CAINFO, u->ca_file);
    }
    if (u->cert_file != NULL) {
        SETOPT(CURLOPT_SSLCERT, u->cert_file);
    }
    if (u->key_file != NULL) {
        SETOPT(CURLOPT_SSLKEY, u->key_file);
    }
    if (u->insecure) {
        SETOPT(CURLOPT_SSL_VERIFYPEER, 0L);
        SETOPT(CURLOPT_SSL_VERIFYHOST, 0L);
    }
    q->xfer.easy = easy;
    q->xfer.done = on_xfer_done;
    if (curl_uv_add(u->cu, &q->xfer) != 0) {
        q->xfer.easy = NULL;
        curl_easy_cleanup(easy);
        return DLOTEL_ERR_INTERNAL;
    }
    return 0;

fail:
    curl_easy_cleanup(easy);
    return DLOTEL_ERR_INTERNAL;
}

#undef SETOPT

static void set_body(struct upstream_req *q, const uint8_t *body, size_t len, bool compressed)
{
    q->body = body;
    q->body_len = len;
    q->sent = 0;
    if (q->u->proto->grpc) {
        /* The gRPC message prefix: a compressed flag, then the length, big-endian. */
        q->prefix[0] = compressed ? 1 : 0;
        q->prefix[1] = (uint8_t)(len >> 24);
        q->prefix[2] = (uint8_t)(len >> 16);
        q->prefix[3] = (uint8_t)(len >> 8);
        q->prefix[4] = (uint8_t)len;
        q->prefix_len = 5;
    } else {
        q->prefix_len = 0;
    }
}

static void on_work(uv_work_t *w)
{
    struct upstream_req *q = w->data;
    /* Only |q|'s own buffer is written; |pb| and the codec are read-only while this runs. */
    q->work_rv = codec_compress(q->u->codec, q->pb, q->len, 0, &q->zbody);
}

static void on_work_done(uv_work_t *w, int status)
{
    struct upstream_req *q = w->data;
    struct upstream *u = q->u;
    q->in_work = false;
    struct export_result r;
    result_init(&r);
    if (u->closing || status == UV_ECANCELED) {
        /*
         * destroy() ran while the thread pool had |pb|: the send is answered only now that
         * nothing reads it any more, so that the owner may free it from |done|.
         */
        upstream_set_message(&r, "exporter closed");
        complete(q, &r, CURLE_OK);
        maybe_free(u);
        return;
    }
    if (q->work_rv != 0) {
        /* Out of memory may pass; a batch that cannot be compressed within limits never will. */
        r.outcome = q->work_rv == DLOTEL_ERR_NOMEM ? EXPORT_RETRY : EXPORT_PERMANENT;
        upstream_set_message(&r, "%s compression failed: %s", codec_name(u->codec),
                             dlotel_strerror(q->work_rv));
        complete(q, &r, CURLE_OK);
        return;
    }
    if (u->proto->grpc && q->zbody.len > UINT32_MAX) {
        r.outcome = EXPORT_PERMANENT;
        upstream_set_message(&r, "compressed message too large for gRPC");
        complete(q, &r, CURLE_OK);
        return;
    }
    set_body(q, q->zbody.data, q->zbody.len, true);
    int rv = start_transfer(q);
    if (rv != 0) {
        upstream_set_message(&r, "cannot start the transfer: %s", dlotel_strerror(rv));
        complete(q, &r, CURLE_OK);
    }
}

/* -------------------------------------------------------------------------------------------- */
/* Exporter ops */

static int up_send(struct exporter *e, enum otlp_signal s, const uint8_t *pb, size_t len,
                   uint64_t items, export_done_fn done, void *userdata)
{
    struct upstream *u = (struct upstream *)e;
    if (u->closing) {
        return DLOTEL_ERR_CLOSED;
    }
    if ((unsigned)s >= OTLP_SIGNAL_COUNT || done == NULL || (pb == NULL && len > 0)) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    if (u->proto->grpc && len > UINT32_MAX) {
        return DLOTEL_ERR_TOO_LARGE;
    }
    static const uint8_t empty[1];
    if (pb == NULL) {
        pb = empty; /* An empty request is valid protobuf; give the codecs a real pointer. */
    }
    struct upstream_req *q = calloc(1, sizeof(*q));
    if (q == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    q->u = u;
    q->signal = s;
    q->pb = pb;
    q->len = len;
    q->items = items;
    q->done = done;
    q->userdata = userdata;
    /*
     * Compressed output can exceed the input a little for incompressible data; the bound only
     * exists so that no buffer is unbounded.
     */
    buf_init(&q->zbody, len + len / 8 + 65536);
    buf_init(&q->resp, UPSTREAM_MAX_RESPONSE);
    buf_init(&q->grpc_message, UPSTREAM_MAX_GRPC_MESSAGE);
    buf_init(&q->grpc_details, UPSTREAM_MAX_GRPC_DETAILS);
    q->next = u->reqs;
    if (u->reqs != NULL) {
        u->reqs->prev = q;
    }
    u->reqs = q;

    int rv;
    if (u->codec == CODEC_NONE) {
        set_body(q, pb, len, false);
        rv = start_transfer(q);
    } else {
        q->work.data = q;
        q->in_work = true;
        rv = uv_queue_work(u->loop, &q->work, on_work, on_work_done) == 0 ? 0 : DLOTEL_ERR_INTERNAL;
        if (rv != 0) {
            q->in_work = false;
        }
    }
    if (rv != 0) {
        req_free(q);
        return rv;
    }
    return 0;
}

/*
 * Every accepted send is answered exactly once, also when the exporter goes away with it in
 * flight: its |done| gets EXPORT_RETRY "exporter closed" (the batch was not delivered, as far as
 * anyone knows), here for a transfer, and from on_work_done() for a send whose compression is
 * still on the thread pool, because the caller's |pb| may be freed only once nothing reads it.
 * up_send() refuses new sends from the moment |closing| is set, so a |done| that sends again
 * gets DLOTEL_ERR_CLOSED instead of a request that would outlive the exporter.
 */
static void up_destroy(struct exporter *e)
{
    struct upstream *u = (struct upstream *)e;
    u->closing = true;
    struct upstream_req *q = u->reqs;
    while (q != NULL) {
        /* |done| cannot add or free other requests (sends are refused), so |next| stays valid. */
        struct upstream_req *next = q->next;
        if (q->in_work) {
            /* Answered by on_work_done(), cancelled or not, once the pool lets go of it. */
            uv_cancel((uv_req_t *)&q->work);
        } else {
            struct export_result r;
            result_init(&r);
            upstream_set_message(&r, "exporter closed");
            complete(q, &r, CURLE_OK);
        }
        q = next;
    }
    maybe_free(u);
}

/* -------------------------------------------------------------------------------------------- */
/* Construction */

static bool token_char(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool header_ok(const struct otlp_exporter_header *h)
{
    if (h->name == NULL || h->name[0] == 0 || h->value == NULL) {
        return false;
    }
    for (const char *c = h->name; *c != 0; c++) {
        if (!token_char((unsigned char)*c)) {
            return false;
        }
    }
    /* CR or LF would let a value smuggle a header of its own into the request. */
    return strpbrk(h->value, "\r\n") == NULL;
}

/*
 * libcurl before 7.89.0 fails every request after the first on a reused cleartext HTTP/2
 * connection set up with prior knowledge ("Error in the HTTP2 framing layer", curl issue #10634,
 * fixed by curl PR #10643); Debian 12 ships 7.88.1. Over TLS (ALPN) reuse works. With such a
 * libcurl, an http:// gRPC endpoint gets a fresh connection per call, which costs a TCP
 * handshake per batch but delivers.
 */
static bool h2c_reuse_broken(void)
{
    const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    return v == NULL || v->version_num < 0x075900;
}

/*
 * scheme://host:port of |endpoint|, with any "user:password@" left out, for log lines: an
 * endpoint may carry credentials, and logs must never show them.
 */
static char *redact_endpoint(const char *endpoint)
{
    const char *auth = strstr(endpoint, "://");
    auth = auth != NULL ? auth + 3 : endpoint;
    size_t alen = strcspn(auth, "/?#");
    const char *at = NULL;
    for (const char *c = auth; c < auth + alen; c++) {
        if (*c == '@') {
            at = c;
        }
    }
    const char *host = at != NULL ? at + 1 : auth;
    struct buf b;
    buf_init(&b, 4096);
    if (buf_append(&b, endpoint, (size_t)(auth - endpoint)) != 0 ||
        buf_append(&b, host, (size_t)(auth + alen - host)) != 0 || buf_terminate(&b) != 0) {
        buf_cleanup(&b);
        return NULL;
    }
    return (char *)buf_take(&b, NULL);
}

static char *dup_or_null(const char *s, bool *failed)
{
    if (s == NULL) {
        return NULL;
    }
    char *d = strdup(s);
    if (d == NULL) {
        *failed = true;
    }
    return d;
}

/* Appends "name: value" (or "name;" for an empty value, curl's way of sending one). */
static struct curl_slist *add_user_header(struct curl_slist *l,
                                          const struct otlp_exporter_header *h, bool lowercase)
{
    struct buf line;
    buf_init(&line, 65536);
    int rv;
    if (h->value[0] == 0) {
        rv = buf_printf(&line, "%s;", h->name);
    } else {
        rv = buf_printf(&line, "%s: %s", h->name, h->value);
    }
    if (rv != 0 || buf_terminate(&line) != 0) {
        buf_cleanup(&line);
        curl_slist_free_all(l);
        return NULL;
    }
    if (lowercase) {
        /* gRPC metadata keys are lowercase (HTTP/2 requires it of every field name). */
        for (char *c = (char *)line.data; *c != ':' && *c != ';' && *c != 0; c++) {
            if (*c >= 'A' && *c <= 'Z') {
                *c = (char)(*c - 'A' + 'a');
            }
        }
    }
    struct curl_slist *n = curl_slist_append(l, (const char *)line.data);
    buf_cleanup(&line);
    if (n == NULL) {
        curl_slist_free_all(l);
    }
    return n;
}

int upstream_exporter_new(struct exporter **out, uv_loop_t *loop,
                          const struct otlp_exporter_options *o, const struct upstream_proto *proto)
{
    if (out == NULL || loop == NULL || o == NULL || o->endpoint == NULL ||
        (o->n_headers > 0 && o->headers == NULL)) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    if (strncasecmp(o->endpoint, "http://", 7) != 0 &&
        strncasecmp(o->endpoint, "https://", 8) != 0) {
        log_error(proto->kind, "%s: endpoint must start with http:// or https://",
                  o->name != NULL ? o->name : proto->kind);
        return DLOTEL_ERR_INVALID_ARG;
    }
    if (o->compression != CODEC_NONE && o->compression != CODEC_GZIP &&
        o->compression != CODEC_ZSTD) {
        return DLOTEL_ERR_INVALID_ARG;
    }
    for (size_t i = 0; i < o->n_headers; i++) {
        if (!header_ok(&o->headers[i])) {
            /* The name only: values are often credentials. */
            log_error(proto->kind, "%s: invalid header %.64s",
                      o->name != NULL ? o->name : proto->kind,
                      o->headers[i].name != NULL ? o->headers[i].name : "(null)");
            return DLOTEL_ERR_INVALID_ARG;
        }
    }

    struct upstream *u = calloc(1, sizeof(*u));
    if (u == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    static const struct exporter_ops ops_http = {
        .kind = "otlp_http", .export = NULL, .send = up_send, .flush = NULL, .destroy = up_destroy};
    static const struct exporter_ops ops_grpc = {
        .kind = "otlp_grpc", .export = NULL, .send = up_send, .flush = NULL, .destroy = up_destroy};
    u->base.ops = proto->grpc ? &ops_grpc : &ops_http;
    u->proto = proto;
    u->loop = loop;
    u->codec = o->compression;
    u->insecure = o->insecure_skip_verify;
    u->tls = strncasecmp(o->endpoint, "https://", 8) == 0;
    if (o->request_timeout_ns == 0) {
        u->timeout_ms = DEFAULT_TIMEOUT_MS;
    } else {
        uint64_t ms = o->request_timeout_ns / 1000000u;
        u->timeout_ms = ms == 0 ? 1 : ms > (uint64_t)LONG_MAX ? LONG_MAX : (long)ms;
    }

    int rv = DLOTEL_ERR_NOMEM;
    bool failed = false;
    u->ca_file = dup_or_null(o->ca_file, &failed);
    u->cert_file = dup_or_null(o->cert_file, &failed);
    u->key_file = dup_or_null(o->key_file, &failed);
    struct buf b;
    buf_init(&b, 4096);
    if (failed ||
        buf_printf(&b, "%s/%s", proto->kind, o->name != NULL ? o->name : "default") != 0 ||
        buf_terminate(&b) != 0) {
        goto fail;
    }
    u->logname = (char *)buf_take(&b, NULL);
    u->where = redact_endpoint(o->endpoint);
    if (u->where == NULL) {
        goto fail;
    }

    /* A base URL without its trailing slashes, so that appending a path never doubles one. */
    size_t el = strlen(o->endpoint);
    while (el > 0 && o->endpoint[el - 1] == '/') {
        el--;
    }
    char *base = strndup(o->endpoint, el);
    if (base == NULL) {
        goto fail;
    }
    for (int i = 0; i < OTLP_SIGNAL_COUNT; i++) {
        buf_init(&b, 8192);
        if (proto->url(base, (enum otlp_signal)i, &b) != 0) {
            buf_cleanup(&b);
            free(base);
            rv = DLOTEL_ERR_INVALID_ARG; /* Only an absurdly long endpoint gets here. */
            goto fail;
        }
        u->urls[i] = (char *)buf_take(&b, NULL);
    }
    free(base);

    uint64_t timeout_ms = (uint64_t)u->timeout_ms;
    u->headers = proto->headers(NULL, u->codec, timeout_ms);
    /* No "Expect: 100-continue": it costs a round trip (or a one-second stall) per batch. */
    struct curl_slist *l = u->headers != NULL ? curl_slist_append(u->headers, "Expect:") : NULL;
    if (l == NULL) {
        curl_slist_free_all(u->headers);
        u->headers = NULL;
        goto fail;
    }
    u->headers = l;
    for (size_t i = 0; i < o->n_headers; i++) {
        u->headers = add_user_header(u->headers, &o->headers[i], proto->grpc);
        if (u->headers == NULL) {
            goto fail;
        }
    }

    rv = curl_uv_acquire(&u->cu, loop);
    if (rv != 0) {
        goto fail;
    }
    if (proto->grpc && !u->tls && h2c_reuse_broken()) {
        const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
        u->h2c_fresh = true;
        log_info(u->logname,
                 "libcurl %s cannot reuse cleartext HTTP/2 connections (curl issue #10634): one "
                 "connection per call; use https:// or libcurl 7.89 or newer to share one",
                 v != NULL ? v->version : "?");
    }
    u->base.refs = 0;
    *out = &u->base;
    return 0;

fail:
    free_upstream(u);
    return rv;
}
