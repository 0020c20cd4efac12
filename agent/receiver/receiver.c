/*
 * What both receivers share: start-up, buffers kept across requests, rate-limited warnings.
 */
#include <stdlib.h>

#include "core/log.h"
#include "dlotel.h"
#include "receiver/receiver_internal.h"

/* Per-request buffers larger than this are freed after the request instead of kept. */
#define RECEIVER_KEEP_BYTES ((size_t)4 * 1024 * 1024)

/*
 * The JSON-to-protobuf arena holds the decoded message: several times the protobuf size for
 * attribute-heavy requests. Real 20 MiB requests fit; hostile ones stop here.
 */
#define RECEIVER_ARENA_MAX ((size_t)256 * 1024 * 1024)

int receiver_start(struct receiver **out, const char *name, uv_loop_t *loop, struct pipeline *p,
                   struct http_listen_options *o, size_t inflated_max, size_t converted_max,
                   uint64_t max_request)
{
    struct receiver *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    r->name = name;
    r->loop = loop;
    r->pipeline = p;
    r->max_request = max_request;
    r->stats.name = name;
    buf_init(&r->inflated, inflated_max);
    buf_init(&r->converted, converted_max);
    arena_init(&r->arena, RECEIVER_ARENA_MAX);
    o->name = name;
    o->userdata = r;
    /* Every connection is a descriptor; a soft limit of 1024 would cap max_connections. */
    uint64_t fd_limit = http_raise_fd_limit();
    uint32_t max_conns = o->max_connections != 0 ? o->max_connections : 4096;
    if (fd_limit < (uint64_t)max_conns + 64) {
        log_warn(name,
                 "max_connections %u is above the open file limit %llu: connections past it "
                 "are dropped when accepted",
                 max_conns, (unsigned long long)fd_limit);
    }
    int rc = http_server_new(&r->server, loop, o);
    if (rc != 0) {
        free(r);
        return rc;
    }
    *out = r;
    return 0;
}

uint16_t receiver_port(const struct receiver *r)
{
    return r->server != NULL ? http_server_port(r->server) : 0;
}

const char *receiver_name(const struct receiver *r)
{
    return r->name;
}

static void recycle(struct buf *b)
{
    if (b->cap > RECEIVER_KEEP_BYTES) {
        buf_cleanup(b);
    } else {
        buf_reset(b);
    }
}

void receiver_recycle(struct receiver *r)
{
    recycle(&r->inflated);
    recycle(&r->converted);
    arena_reset(&r->arena);
}

bool receiver_warn_allowed(struct receiver *r)
{
    uint64_t now = uv_now(r->loop);
    if (now - r->warn_window_ms >= 1000) {
        if (r->warn_dropped > 0) {
            log_warn(r->name, "%u more bad requests were not logged", r->warn_dropped);
        }
        r->warn_window_ms = now;
        r->warn_count = 0;
        r->warn_dropped = 0;
    }
    if (r->warn_count >= RECEIVER_WARN_PER_SECOND) {
        r->warn_dropped++;
        return false;
    }
    r->warn_count++;
    return true;
}

void receiver_sanitize(char *out, size_t outlen, const char *s, size_t max)
{
    size_t j = 0;
    if (outlen == 0) {
        return;
    }
    for (size_t i = 0; s != NULL && s[i] != '\0' && i < max && j + 1 < outlen; i++) {
        unsigned char c = (unsigned char)s[i];
        out[j++] = c >= 0x20 && c < 0x7f && c != '"' && c != '\\' ? (char)c : '?';
    }
    out[j] = '\0';
}

static const char *const outcome_names[RECEIVER_OUTCOME_COUNT] = {
    "accepted", "invalid", "too_large", "unsupported", "full", "unavailable", "failed",
};

const char *receiver_outcome_name(enum receiver_outcome o)
{
    return (unsigned)o < RECEIVER_OUTCOME_COUNT ? outcome_names[o] : "failed";
}

enum receiver_outcome receiver_outcome_from_error(int err)
{
    /* The same classes as receiver_http_status() and grpc_status_from_error(). */
    switch (err) {
    case DLOTEL_OK:
        return RECEIVER_ACCEPTED;
    case DLOTEL_ERR_BAD_INPUT:
        return RECEIVER_REFUSED_INVALID;
    case DLOTEL_ERR_TOO_LARGE:
        return RECEIVER_REFUSED_TOO_LARGE;
    case DLOTEL_ERR_UNSUPPORTED:
    case DLOTEL_ERR_NOT_FOUND:
        return RECEIVER_REFUSED_UNSUPPORTED;
    case DLOTEL_ERR_FULL:
        return RECEIVER_REFUSED_FULL;
    case DLOTEL_ERR_NOMEM:
    case DLOTEL_ERR_IO:
    case DLOTEL_ERR_CLOSED:
    case DLOTEL_ERR_TIMEOUT:
        return RECEIVER_REFUSED_UNAVAILABLE;
    default:
        return RECEIVER_REFUSED_FAILED;
    }
}

void receiver_count(struct receiver *r, int sig, int err, uint64_t items, uint64_t bytes)
{
    if (sig < 0 || sig > RECEIVER_SIGNAL_UNKNOWN) {
        sig = RECEIVER_SIGNAL_UNKNOWN;
    }
    enum receiver_outcome o = receiver_outcome_from_error(err);
    r->stats.requests[sig][o]++;
    r->stats.items[sig][o] += items;
    r->stats.bytes[sig][o] += bytes;
}

void receiver_get_stats(const struct receiver *r, struct receiver_stats *out)
{
    *out = r->stats;
    out->port = r->closing ? 0 : receiver_port(r);
}

static void receiver_release(struct receiver *r)
{
    buf_cleanup(&r->inflated);
    buf_cleanup(&r->converted);
    arena_cleanup(&r->arena);
}

void receiver_call_begin(struct receiver *r)
{
    r->stats.in_flight++;
}

void receiver_call_end(struct receiver *r)
{
    r->stats.in_flight--;
    if (r->closing && r->stats.in_flight == 0) {
        free(r);
    }
}

void receiver_free(struct receiver *r)
{
    if (r == NULL) {
        return;
    }
    http_server_free(r->server);
    r->server = NULL;
    receiver_release(r);
    if (r->stats.in_flight > 0) {
        /*
         * The pipeline still holds calls (waiting for a group fdatasync) whose answers read the
         * receiver: keep it until the last one is answered (receiver_call_end()).
         */
        r->closing = true;
        return;
    }
    free(r);
}
