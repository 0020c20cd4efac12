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
                   struct http_listen_options *o, size_t inflated_max, size_t converted_max)
{
    struct receiver *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    r->name = name;
    r->loop = loop;
    r->pipeline = p;
    buf_init(&r->inflated, inflated_max);
    buf_init(&r->converted, converted_max);
    arena_init(&r->arena, RECEIVER_ARENA_MAX);
    o->name = name;
    o->userdata = r;
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
    return http_server_port(r->server);
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

void receiver_free(struct receiver *r)
{
    if (r == NULL) {
        return;
    }
    http_server_free(r->server);
    buf_cleanup(&r->inflated);
    buf_cleanup(&r->converted);
    arena_cleanup(&r->arena);
    free(r);
}
