/*
 * The receiver room: gRPC framing at its limits, grpc-message encoding, the two status mappings,
 * and the OTLP/HTTP receiver in-process on a real socket, exporting through the real file
 * exporter, driven by a plain HTTP/1.1 client written here against the RFC.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <nghttp2/nghttp2.h>
#include <uv.h>

#include "core/buf.h"
#include "core/compress.h"
#include "core/log.h"
#include "dlotel.h"
#include "exporter/exporter.h"
#include "otlp/otlp.h"
#include "otlp/otlp_pb.h"
#include "pipeline/pipeline.h"
#include "receiver/grpc.h"
#include "receiver/receiver.h"

static uint8_t *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    struct buf b;
    buf_init(&b, (size_t)1 << 30);
    uint8_t chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (buf_append(&b, chunk, n) != 0) {
            break;
        }
    }
    fclose(f);
    if (buf_terminate(&b) != 0) {
        buf_cleanup(&b);
        return NULL;
    }
    *len = b.len;
    return b.data != NULL ? b.data : calloc(1, 1);
}

static uint8_t *read_payload(const char *name, size_t *len)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", DLOTEL_PAYLOADS_DIR, name);
    uint8_t *data = read_all(path, len);
    if (data == NULL) {
        fail_msg("cannot read %s", path);
    }
    return data;
}

static FILE *log_capture;

/*
 * Waits up to two seconds for |needle| to appear in the log: the receiver logs an answer right
 * after sending it, so the client can see the answer first.
 */
static bool log_contains(const char *needle)
{
    for (int tries = 0; tries < 200; tries++) {
        fflush(log_capture);
        long size = ftell(log_capture);
        char *text = calloc(1, (size_t)size + 1);
        if (text == NULL) {
            return false;
        }
        int fd = fileno(log_capture);
        ssize_t n = pread(fd, text, (size_t)size, 0);
        bool found = n > 0 && strstr(text, needle) != NULL;
        free(text);
        if (found) {
            return true;
        }
        usleep(10000);
    }
    return false;
}

/* ---- gRPC framing ---------------------------------------------------------------------------- */

/* A frame around |len| bytes of |fill|, with the given flag. Caller frees. */
static uint8_t *make_frame(uint8_t flag, const uint8_t *msg, size_t len, size_t *out_len)
{
    uint8_t *f = malloc(GRPC_PREFIX_LEN + len + 1);
    assert_non_null(f);
    grpc_frame_prefix(f, flag != 0, (uint32_t)len);
    f[0] = flag;
    if (len > 0) {
        memcpy(f + GRPC_PREFIX_LEN, msg, len);
    }
    *out_len = GRPC_PREFIX_LEN + len;
    return f;
}

static int parse(const uint8_t *body, size_t len, enum codec codec, struct buf *scratch,
                 const uint8_t **msg, size_t *msg_len)
{
    const char *why = NULL;
    int rc = grpc_frame_parse(body, len, codec, scratch, msg, msg_len, &why);
    if (rc != 0) {
        /* Every failure explains itself to the client. */
        assert_non_null(why);
        assert_true(strlen(why) > 0);
    }
    return rc;
}

static void test_frame_size_limit(void **state)
{
    (void)state;
    uint8_t *big = calloc(1, GRPC_MAX_MESSAGE + 1);
    assert_non_null(big);
    big[GRPC_MAX_MESSAGE - 1] = 0x5a;
    struct buf scratch;
    buf_init(&scratch, GRPC_MAX_MESSAGE);
    const uint8_t *msg = NULL;
    size_t msg_len = 0;

    /* Exactly 4 MiB: accepted, in place (no copy). */
    size_t flen;
    uint8_t *frame = make_frame(0, big, GRPC_MAX_MESSAGE, &flen);
    assert_int_equal(parse(frame, flen, CODEC_NONE, &scratch, &msg, &msg_len), 0);
    assert_ptr_equal(msg, frame + GRPC_PREFIX_LEN);
    assert_int_equal(msg_len, GRPC_MAX_MESSAGE);
    assert_int_equal(msg[GRPC_MAX_MESSAGE - 1], 0x5a);
    assert_null(scratch.data);
    free(frame);

    /* 4 MiB + 1: too large, whether the bytes follow or not. */
    frame = make_frame(0, big, GRPC_MAX_MESSAGE + 1, &flen);
    assert_int_equal(parse(frame, flen, CODEC_NONE, &scratch, &msg, &msg_len),
                     DLOTEL_ERR_TOO_LARGE);
    assert_int_equal(parse(frame, GRPC_PREFIX_LEN, CODEC_NONE, &scratch, &msg, &msg_len),
                     DLOTEL_ERR_TOO_LARGE);
    free(frame);

    /* The largest length the prefix can declare. */
    uint8_t huge[GRPC_PREFIX_LEN] = {0, 0xff, 0xff, 0xff, 0xff};
    assert_int_equal(parse(huge, sizeof(huge), CODEC_NONE, &scratch, &msg, &msg_len),
                     DLOTEL_ERR_TOO_LARGE);
    free(big);
    buf_cleanup(&scratch);
}

static void test_frame_malformed(void **state)
{
    (void)state;
    struct buf scratch;
    buf_init(&scratch, GRPC_MAX_MESSAGE);
    const uint8_t *msg = NULL;
    size_t msg_len = 0;
    static const uint8_t hello[] = "hello";
    size_t flen;
    uint8_t *frame = make_frame(0, hello, 5, &flen);

    /* Truncated prefix: every length from 0 to 4. */
    for (size_t n = 0; n < GRPC_PREFIX_LEN; n++) {
        assert_int_equal(parse(frame, n, CODEC_NONE, &scratch, &msg, &msg_len),
                         DLOTEL_ERR_BAD_INPUT);
    }
    /* Truncated message. */
    assert_int_equal(parse(frame, flen - 1, CODEC_NONE, &scratch, &msg, &msg_len),
                     DLOTEL_ERR_BAD_INPUT);
    /* Trailing bytes: one byte, or a second message (unary calls carry exactly one). */
    uint8_t two[2 * (GRPC_PREFIX_LEN + 5)];
    memcpy(two, frame, flen);
    memcpy(two + flen, frame, flen);
    assert_int_equal(parse(two, flen + 1, CODEC_NONE, &scratch, &msg, &msg_len),
                     DLOTEL_ERR_BAD_INPUT);
    assert_int_equal(parse(two, sizeof(two), CODEC_NONE, &scratch, &msg, &msg_len),
                     DLOTEL_ERR_BAD_INPUT);
    /* A flag that is neither 0 nor 1. */
    frame[0] = 2;
    assert_int_equal(parse(frame, flen, CODEC_GZIP, &scratch, &msg, &msg_len),
                     DLOTEL_ERR_BAD_INPUT);
    /* The compressed flag with no encoding (identity): INTERNAL, as the gRPC spec says. */
    frame[0] = 1;
    assert_int_equal(parse(frame, flen, CODEC_NONE, &scratch, &msg, &msg_len),
                     DLOTEL_ERR_BAD_INPUT);
    assert_int_equal(grpc_status_from_error(DLOTEL_ERR_BAD_INPUT, true), GRPC_STATUS_INTERNAL);
    /* The compressed flag over bytes that are not gzip. */
    assert_int_equal(parse(frame, flen, CODEC_GZIP, &scratch, &msg, &msg_len),
                     DLOTEL_ERR_BAD_INPUT);
    buf_reset(&scratch);
    assert_int_equal(parse(frame, flen, CODEC_ZSTD, &scratch, &msg, &msg_len),
                     DLOTEL_ERR_BAD_INPUT);
    buf_reset(&scratch);

    /* Flag 0 under grpc-encoding gzip: the sender chose not to compress this one. */
    frame[0] = 0;
    assert_int_equal(parse(frame, flen, CODEC_GZIP, &scratch, &msg, &msg_len), 0);
    assert_int_equal(msg_len, 5);
    assert_memory_equal(msg, "hello", 5);

    /* An empty message is a valid (empty) request. */
    uint8_t empty[GRPC_PREFIX_LEN] = {0};
    assert_int_equal(parse(empty, sizeof(empty), CODEC_NONE, &scratch, &msg, &msg_len), 0);
    assert_int_equal(msg_len, 0);
    free(frame);
    buf_cleanup(&scratch);
}

static void check_compressed(enum codec codec)
{
    size_t len;
    uint8_t *pb = read_payload("traces_512.pb", &len);
    struct buf z;
    buf_init(&z, (size_t)64 << 20);
    assert_int_equal(codec_compress(codec, pb, len, 0, &z), 0);
    assert_true(z.len < len);

    size_t flen;
    uint8_t *frame = make_frame(1, z.data, z.len, &flen);
    struct buf scratch;
    buf_init(&scratch, GRPC_MAX_MESSAGE);
    const uint8_t *msg = NULL;
    size_t msg_len = 0;
    assert_int_equal(parse(frame, flen, codec, &scratch, &msg, &msg_len), 0);
    assert_ptr_equal(msg, scratch.data);
    assert_int_equal(msg_len, len);
    assert_memory_equal(msg, pb, len);
    struct otlp_counts c;
    assert_int_equal(otlp_scan(OTLP_TRACES, msg, msg_len, &c, NULL), 0);
    assert_int_equal(c.items, 512);

    /* Truncated compressed message (the frame length says so too). */
    buf_reset(&scratch);
    uint8_t *cut = make_frame(1, z.data, z.len - 3, &flen);
    assert_int_equal(parse(cut, flen, codec, &scratch, &msg, &msg_len), DLOTEL_ERR_BAD_INPUT);
    free(cut);

    /* A bomb: exactly 4 MiB decompressed is fine, one byte more stops at the limit. */
    for (size_t extra = 0; extra <= 1; extra++) {
        uint8_t *zeros = calloc(1, GRPC_MAX_MESSAGE + extra);
        assert_non_null(zeros);
        buf_reset(&z);
        assert_int_equal(codec_compress(codec, zeros, GRPC_MAX_MESSAGE + extra, 0, &z), 0);
        free(zeros);
        assert_true(z.len < 64 * 1024);
        uint8_t *bomb = make_frame(1, z.data, z.len, &flen);
        buf_reset(&scratch);
        int rc = parse(bomb, flen, codec, &scratch, &msg, &msg_len);
        if (extra == 0) {
            assert_int_equal(rc, 0);
            assert_int_equal(msg_len, GRPC_MAX_MESSAGE);
        } else {
            assert_int_equal(rc, DLOTEL_ERR_TOO_LARGE);
            assert_true(scratch.len <= GRPC_MAX_MESSAGE);
            assert_int_equal(grpc_status_from_error(rc, true), GRPC_STATUS_RESOURCE_EXHAUSTED);
        }
        free(bomb);
    }

    free(frame);
    free(pb);
    buf_cleanup(&z);
    buf_cleanup(&scratch);
}

static void test_frame_gzip(void **state)
{
    (void)state;
    check_compressed(CODEC_GZIP);
}

static void test_frame_zstd(void **state)
{
    (void)state;
    check_compressed(CODEC_ZSTD);
}

static void test_frame_build(void **state)
{
    (void)state;
    struct buf out;
    buf_init(&out, 1024);
    /* The empty Export*ServiceResponse: five zero bytes. */
    assert_int_equal(grpc_frame_build(&out, NULL, 0), 0);
    assert_int_equal(out.len, GRPC_PREFIX_LEN);
    assert_memory_equal(out.data, "\0\0\0\0\0", 5);

    buf_reset(&out);
    uint8_t msg[300];
    memset(msg, 0xab, sizeof(msg));
    assert_int_equal(grpc_frame_build(&out, msg, sizeof(msg)), 0);
    static const uint8_t prefix[] = {0, 0, 0, 0x01, 0x2c};
    assert_memory_equal(out.data, prefix, sizeof(prefix));

    /* What we build, we parse back. */
    struct buf scratch;
    buf_init(&scratch, GRPC_MAX_MESSAGE);
    const uint8_t *back;
    size_t back_len;
    assert_int_equal(parse(out.data, out.len, CODEC_NONE, &scratch, &back, &back_len), 0);
    assert_int_equal(back_len, sizeof(msg));
    assert_memory_equal(back, msg, sizeof(msg));

    /* The output buffer's own limit holds. */
    struct buf small;
    buf_init(&small, 10);
    assert_int_equal(grpc_frame_build(&small, msg, sizeof(msg)), DLOTEL_ERR_TOO_LARGE);
    assert_int_equal(small.len, 0);
    assert_int_equal(grpc_frame_build(&small, msg, GRPC_MAX_MESSAGE + 1), DLOTEL_ERR_TOO_LARGE);

    uint8_t p[GRPC_PREFIX_LEN];
    grpc_frame_prefix(p, true, 0x01020304);
    static const uint8_t want[] = {1, 1, 2, 3, 4};
    assert_memory_equal(p, want, sizeof(want));
    buf_cleanup(&out);
    buf_cleanup(&scratch);
}

static void check_encode(const char *in, size_t len, const char *want)
{
    struct buf out;
    buf_init(&out, 1024);
    assert_int_equal(grpc_message_encode(&out, in, len), 0);
    assert_int_equal(out.len, strlen(want));
    /* NUL-terminated, ready to be a header value. */
    assert_string_equal((const char *)out.data, want);
    buf_cleanup(&out);
}

static void test_message_encode(void **state)
{
    (void)state;
    check_encode("invalid request at byte 12: bad tag", 35, "invalid request at byte 12: bad tag");
    check_encode("100%", 4, "100%25");
    check_encode("a\nb\r", 4, "a%0Ab%0D");
    check_encode("caf\xc3\xa9", 5, "caf%C3%A9");
    check_encode(" ~\x7f\x1f", 4, " ~%7F%1F");
    check_encode("\0x", 2, "%00x");
    check_encode("", 0, "");

    struct buf tiny;
    buf_init(&tiny, 4);
    assert_int_equal(grpc_message_encode(&tiny, "%%%", 3), DLOTEL_ERR_TOO_LARGE);
    buf_cleanup(&tiny);
}

static void test_status_mapping(void **state)
{
    (void)state;
    assert_int_equal(grpc_status_from_error(0, false), GRPC_STATUS_OK);
    assert_int_equal(grpc_status_from_error(DLOTEL_ERR_BAD_INPUT, false),
                     GRPC_STATUS_INVALID_ARGUMENT);
    assert_int_equal(grpc_status_from_error(DLOTEL_ERR_BAD_INPUT, true), GRPC_STATUS_INTERNAL);
    assert_int_equal(grpc_status_from_error(DLOTEL_ERR_TOO_LARGE, false),
                     GRPC_STATUS_RESOURCE_EXHAUSTED);
    assert_int_equal(grpc_status_from_error(DLOTEL_ERR_TOO_LARGE, true),
                     GRPC_STATUS_RESOURCE_EXHAUSTED);
    assert_int_equal(grpc_status_from_error(DLOTEL_ERR_FULL, false),
                     GRPC_STATUS_RESOURCE_EXHAUSTED);
    assert_int_equal(grpc_status_from_error(DLOTEL_ERR_UNSUPPORTED, false),
                     GRPC_STATUS_UNIMPLEMENTED);
    assert_int_equal(grpc_status_from_error(DLOTEL_ERR_NOT_FOUND, false), GRPC_STATUS_NOT_FOUND);
    /* Trouble on our side is UNAVAILABLE: the code OTLP clients retry. */
    assert_int_equal(grpc_status_from_error(DLOTEL_ERR_IO, false), GRPC_STATUS_UNAVAILABLE);
    assert_int_equal(grpc_status_from_error(DLOTEL_ERR_NOMEM, false), GRPC_STATUS_UNAVAILABLE);
    assert_int_equal(grpc_status_from_error(DLOTEL_ERR_CLOSED, false), GRPC_STATUS_UNAVAILABLE);
    assert_int_equal(grpc_status_from_error(DLOTEL_ERR_TIMEOUT, false), GRPC_STATUS_UNAVAILABLE);
    assert_int_equal(grpc_status_from_error(DLOTEL_ERR_INTERNAL, false), GRPC_STATUS_INTERNAL);
    assert_int_equal(grpc_status_from_error(-999, false), GRPC_STATUS_INTERNAL);

    assert_int_equal(receiver_http_status(0), 200);
    assert_int_equal(receiver_http_status(DLOTEL_ERR_BAD_INPUT), 400);
    assert_int_equal(receiver_http_status(DLOTEL_ERR_NOT_FOUND), 404);
    assert_int_equal(receiver_http_status(DLOTEL_ERR_TOO_LARGE), 413);
    assert_int_equal(receiver_http_status(DLOTEL_ERR_UNSUPPORTED), 415);
    assert_int_equal(receiver_http_status(DLOTEL_ERR_FULL), 429);
    assert_int_equal(receiver_http_status(DLOTEL_ERR_IO), 503);
    assert_int_equal(receiver_http_status(DLOTEL_ERR_NOMEM), 503);
    assert_int_equal(receiver_http_status(DLOTEL_ERR_INTERNAL), 500);
    assert_int_equal(receiver_http_status(-999), 500);
    assert_true(receiver_http_status_retryable(429));
    assert_true(receiver_http_status_retryable(503));
    assert_false(receiver_http_status_retryable(400));
    assert_false(receiver_http_status_retryable(413));
}

/* ---- the OTLP/HTTP receiver in-process --------------------------------------------------------
 */

struct server {
    uv_loop_t loop;
    uv_async_t stop;
    pthread_t thread;
    struct pipeline *pipeline;
    struct receiver *receiver;
    uint16_t port;
    char dir[64];
    char file[128];
};

static void on_stop(uv_async_t *h)
{
    struct server *s = h->data;
    receiver_free(s->receiver);
    s->receiver = NULL;
    uv_close((uv_handle_t *)&s->stop, NULL);
}

static void *loop_thread(void *arg)
{
    struct server *s = arg;
    uv_run(&s->loop, UV_RUN_DEFAULT);
    return NULL;
}

/*
 * Starts a receiver on 127.0.0.1, port 0, whose pipeline exports every signal to a file: a fresh
 * one in a temporary directory, or |path| (such as /dev/full, to make the exporter fail).
 */
static int start_server(void **state, bool grpc, const char *path)
{
    struct server *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return -1;
    }
    snprintf(s->dir, sizeof(s->dir), "/tmp/dlotel-test-receiver-XXXXXX");
    if (mkdtemp(s->dir) == NULL) {
        return -1;
    }
    snprintf(s->file, sizeof(s->file), "%s/out.jsonl", s->dir);
    struct exporter *e = NULL;
    if (uv_loop_init(&s->loop) != 0 || pipeline_new(&s->pipeline) != 0 ||
        exporter_file_new(&e, path != NULL ? path : s->file) != 0) {
        return -1;
    }
    for (int sig = 0; sig < OTLP_SIGNAL_COUNT; sig++) {
        if (pipeline_add_exporter(s->pipeline, (enum otlp_signal)sig, e) != 0) {
            return -1;
        }
    }
    int rc = grpc ? receiver_otlp_grpc_new(&s->receiver, &s->loop, "127.0.0.1", 0, s->pipeline)
                  : receiver_otlp_http_new(&s->receiver, &s->loop, "127.0.0.1", 0, s->pipeline);
    if (rc != 0) {
        return -1;
    }
    s->port = receiver_port(s->receiver);
    if (s->port == 0 || uv_async_init(&s->loop, &s->stop, on_stop) != 0) {
        return -1;
    }
    s->stop.data = s;
    if (pthread_create(&s->thread, NULL, loop_thread, s) != 0) {
        return -1;
    }
    *state = s;
    return 0;
}

static int setup_server(void **state)
{
    return start_server(state, false, NULL);
}

static int setup_grpc_server(void **state)
{
    return start_server(state, true, NULL);
}

/* The exporter writes to /dev/full: every export fails with an I/O error. */
static int setup_failing_http(void **state)
{
    return start_server(state, false, "/dev/full");
}

static int setup_failing_grpc(void **state)
{
    return start_server(state, true, "/dev/full");
}

static int teardown_server(void **state)
{
    struct server *s = *state;
    uv_async_send(&s->stop);
    pthread_join(s->thread, NULL);
    int rc = uv_loop_close(&s->loop);
    pipeline_free(s->pipeline);
    unlink(s->file);
    rmdir(s->dir);
    free(s);
    return rc == 0 ? 0 : -1;
}

struct response {
    int status;
    char head[8192]; /* Status line and headers, NUL-terminated. */
    uint8_t *body;
    size_t body_len;
};

/* The value of header |name| in |r|, copied into |out|; false when absent. */
static bool response_header(const struct response *r, const char *name, char *out, size_t outlen)
{
    size_t n = strlen(name);
    for (const char *p = strstr(r->head, "\r\n"); p != NULL; p = strstr(p + 2, "\r\n")) {
        const char *h = p + 2;
        if (strncasecmp(h, name, n) == 0 && h[n] == ':') {
            h += n + 1;
            while (*h == ' ') {
                h++;
            }
            size_t len = strcspn(h, "\r");
            if (len >= outlen) {
                len = outlen - 1;
            }
            memcpy(out, h, len);
            out[len] = '\0';
            return true;
        }
    }
    return false;
}

static void send_all(int fd, const void *p, size_t len)
{
    const uint8_t *b = p;
    while (len > 0) {
        ssize_t n = send(fd, b, len, MSG_NOSIGNAL);
        if (n <= 0) {
            return; /* The server may close early (413); the response tells. */
        }
        b += n;
        len -= (size_t)n;
    }
}

/*
 * One HTTP/1.1 exchange on a new connection: |method| |target| with the extra header lines in
 * |headers| (each ending in \r\n) and |body|. Fills |r|; the caller frees r->body.
 */
static void http_exchange(uint16_t port, const char *method, const char *target,
                          const char *headers, const void *body, size_t body_len,
                          struct response *r)
{
    memset(r, 0, sizeof(*r));
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = 20};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);

    char head[2048];
    int n = snprintf(head, sizeof(head),
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n%sContent-Length: %zu\r\n\r\n",
                     method, target, (unsigned)port, headers, body_len);
    assert_true(n > 0 && (size_t)n < sizeof(head));
    send_all(fd, head, (size_t)n);
    if (body_len > 0) {
        send_all(fd, body, body_len);
    }

    /* Read the head, then exactly Content-Length bytes of body. */
    struct buf in;
    buf_init(&in, (size_t)8 << 20);
    char *end = NULL;
    uint8_t chunk[16384];
    while (end == NULL) {
        ssize_t got = recv(fd, chunk, sizeof(chunk), 0);
        if (got <= 0) {
            break;
        }
        assert_int_equal(buf_append(&in, chunk, (size_t)got), 0);
        assert_int_equal(buf_terminate(&in), 0);
        end = strstr((char *)in.data, "\r\n\r\n");
    }
    if (end == NULL) {
        close(fd);
        buf_cleanup(&in);
        fail_msg("no response head from %s %s", method, target);
    }
    size_t head_len = (size_t)(end - (char *)in.data) + 2;
    assert_true(head_len < sizeof(r->head));
    memcpy(r->head, in.data, head_len);
    r->head[head_len] = '\0';
    assert_int_equal(sscanf(r->head, "HTTP/1.1 %d", &r->status), 1);

    char cl[32];
    assert_true(response_header(r, "content-length", cl, sizeof(cl)));
    size_t want = (size_t)strtoul(cl, NULL, 10);
    size_t have = in.len - (head_len + 2);
    while (have < want) {
        ssize_t got = recv(fd, chunk, sizeof(chunk), 0);
        if (got <= 0) {
            break;
        }
        assert_int_equal(buf_append(&in, chunk, (size_t)got), 0);
        have += (size_t)got;
    }
    close(fd);
    assert_int_equal(have, want);
    r->body = malloc(want + 1);
    assert_non_null(r->body);
    memcpy(r->body, in.data + head_len + 2, want);
    r->body[want] = 0;
    r->body_len = want;
    buf_cleanup(&in);
}

/* Checks |r| carries a google.rpc.Status (protobuf or JSON) with |code| and a message. */
static void check_status_body(const struct response *r, bool json, int code)
{
    char ct[128];
    assert_true(response_header(r, "content-type", ct, sizeof(ct)));
    if (json) {
        assert_string_equal(ct, "application/json");
        json_error_t jerr;
        json_t *root = json_loadb((const char *)r->body, r->body_len, 0, &jerr);
        assert_non_null(root);
        assert_int_equal(json_integer_value(json_object_get(root, "code")), code);
        const char *m = json_string_value(json_object_get(root, "message"));
        assert_non_null(m);
        assert_true(strlen(m) > 0);
        json_decref(root);
    } else {
        assert_string_equal(ct, "application/x-protobuf");
        Google__Rpc__Status *st = google__rpc__status__unpack(NULL, r->body_len, r->body);
        assert_non_null(st);
        assert_int_equal(st->code, code);
        assert_non_null(st->message);
        assert_true(strlen(st->message) > 0);
        google__rpc__status__free_unpacked(st, NULL);
    }
}

/* Lines in the exporter's file; each must be a JSON object. Returns the parsed lines. */
static size_t file_lines(const struct server *s, json_t **out, size_t max)
{
    size_t len = 0;
    char *text = (char *)read_all(s->file, &len);
    assert_non_null(text);
    size_t n = 0;
    char *line = text;
    while (line < text + len) {
        char *nl = memchr(line, '\n', (size_t)(text + len - line));
        assert_non_null(nl); /* Whole lines only. */
        json_error_t jerr;
        json_t *root = json_loadb(line, (size_t)(nl - line), 0, &jerr);
        if (root == NULL) {
            fail_msg("line %zu is not JSON: %s", n + 1, jerr.text);
        }
        if (n < max) {
            out[n] = root;
        } else {
            json_decref(root);
        }
        n++;
        line = nl + 1;
    }
    free(text);
    return n;
}

static size_t count_spans(json_t *req)
{
    size_t total = 0;
    size_t i, j;
    json_t *rs, *ss;
    json_array_foreach(json_object_get(req, "resourceSpans"), i, rs)
    {
        json_array_foreach(json_object_get(rs, "scopeSpans"), j, ss)
        {
            total += json_array_size(json_object_get(ss, "spans"));
        }
    }
    return total;
}

#define PB_HEADERS "Content-Type: application/x-protobuf\r\n"

static void test_http_protobuf_and_garbage(void **state)
{
    struct server *s = *state;
    size_t len;
    uint8_t *pb = read_payload("traces_512.pb", &len);
    struct response r;

    http_exchange(s->port, "POST", "/v1/traces", PB_HEADERS, pb, len, &r);
    assert_int_equal(r.status, 200);
    char ct[64];
    assert_true(response_header(&r, "content-type", ct, sizeof(ct)));
    assert_string_equal(ct, "application/x-protobuf");
    assert_int_equal(r.body_len, 0); /* The empty ExportTraceServiceResponse. */
    free(r.body);

    json_t *lines[4] = {0};
    assert_int_equal(file_lines(s, lines, 4), 1);
    assert_int_equal(count_spans(lines[0]), 512);
    json_decref(lines[0]);

    /* Garbage: 400 with a google.rpc.Status, code 3 (INVALID_ARGUMENT); nothing exported. */
    static const char garbage[] = "this is not a protobuf message";
    http_exchange(s->port, "POST", "/v1/traces", PB_HEADERS, garbage, sizeof(garbage) - 1, &r);
    assert_int_equal(r.status, 400);
    check_status_body(&r, false, 3);
    free(r.body);
    assert_int_equal(file_lines(s, lines, 0), 1);
    /* The operator sees why, at warn level. */
    assert_true(log_contains("otlp_http: POST /v1/traces: answered 400: invalid protobuf request"));

    /* The next good request still works. */
    http_exchange(s->port, "POST", "/v1/traces", PB_HEADERS, pb, len, &r);
    assert_int_equal(r.status, 200);
    free(r.body);
    assert_int_equal(file_lines(s, lines, 0), 2);
    free(pb);
}

static void test_http_json(void **state)
{
    struct server *s = *state;
    size_t len;
    uint8_t *body = read_payload("traces_512.json", &len);
    struct response r;

    /* Media type without case, with a charset parameter. */
    http_exchange(s->port, "POST", "/v1/traces",
                  "Content-Type: Application/JSON; charset=utf-8\r\n", body, len, &r);
    assert_int_equal(r.status, 200);
    char ct[64];
    assert_true(response_header(&r, "content-type", ct, sizeof(ct)));
    assert_string_equal(ct, "application/json");
    assert_int_equal(r.body_len, 2);
    assert_memory_equal(r.body, "{}", 2);
    free(r.body);
    free(body);

    json_t *lines[2] = {0};
    assert_int_equal(file_lines(s, lines, 2), 1);
    assert_int_equal(count_spans(lines[0]), 512);
    json_decref(lines[0]);

    /* Bad JSON: 400, and the Status comes back as JSON. */
    static const char bad[] = "{\"resourceSpans\": [ {\"scopeSpans\": 7 } ]}";
    http_exchange(s->port, "POST", "/v1/traces", "Content-Type: application/json\r\n", bad,
                  sizeof(bad) - 1, &r);
    assert_int_equal(r.status, 400);
    check_status_body(&r, true, 3);
    free(r.body);
    http_exchange(s->port, "POST", "/v1/traces", "Content-Type: application/json\r\n", "{", 1, &r);
    assert_int_equal(r.status, 400);
    check_status_body(&r, true, 3);
    free(r.body);

    /* Logs as JSON, with a query string on the path. */
    body = read_payload("logs_512.json", &len);
    http_exchange(s->port, "POST", "/v1/logs?from=test", "Content-Type: application/json\r\n", body,
                  len, &r);
    assert_int_equal(r.status, 200);
    free(r.body);
    free(body);
    assert_int_equal(file_lines(s, lines, 0), 2);
}

static void test_http_compressed(void **state)
{
    struct server *s = *state;
    size_t len;
    uint8_t *pb = read_payload("metrics.pb", &len);
    struct response r;
    static const enum codec codecs[] = {CODEC_GZIP, CODEC_ZSTD};
    for (size_t i = 0; i < 2; i++) {
        struct buf z;
        buf_init(&z, (size_t)64 << 20);
        assert_int_equal(codec_compress(codecs[i], pb, len, 0, &z), 0);
        char headers[160];
        snprintf(headers, sizeof(headers), PB_HEADERS "Content-Encoding: %s\r\n",
                 codec_name(codecs[i]));
        http_exchange(s->port, "POST", "/v1/metrics", headers, z.data, z.len, &r);
        assert_int_equal(r.status, 200);
        free(r.body);

        /* A malformed compressed body: 400. */
        http_exchange(s->port, "POST", "/v1/metrics", headers, z.data, z.len / 2, &r);
        assert_int_equal(r.status, 400);
        check_status_body(&r, false, 3);
        free(r.body);

        /* A bomb: 21 MiB of zeros in a few KiB; stops at 20 MiB with 413. */
        size_t big = (size_t)21 << 20;
        uint8_t *zeros = calloc(1, big);
        assert_non_null(zeros);
        buf_reset(&z);
        assert_int_equal(codec_compress(codecs[i], zeros, big, 0, &z), 0);
        free(zeros);
        http_exchange(s->port, "POST", "/v1/metrics", headers, z.data, z.len, &r);
        assert_int_equal(r.status, 413);
        check_status_body(&r, false, 8);
        free(r.body);
        buf_cleanup(&z);
    }
    free(pb);
    json_t *lines[1];
    assert_int_equal(file_lines(s, lines, 0), 2);
}

static void test_http_errors(void **state)
{
    struct server *s = *state;
    static const uint8_t empty_request[] = {0};
    struct response r;
    char v[128];

    /* Unknown path: 404, protobuf Status unless the request was JSON. */
    http_exchange(s->port, "POST", "/v1/trace", PB_HEADERS, empty_request, 0, &r);
    assert_int_equal(r.status, 404);
    check_status_body(&r, false, 5);
    free(r.body);
    http_exchange(s->port, "POST", "/v2/logs", "Content-Type: application/json\r\n", "{}", 2, &r);
    assert_int_equal(r.status, 404);
    check_status_body(&r, true, 5);
    free(r.body);

    /* Wrong method: 405 with Allow. */
    http_exchange(s->port, "GET", "/v1/traces", "", NULL, 0, &r);
    assert_int_equal(r.status, 405);
    assert_true(response_header(&r, "allow", v, sizeof(v)));
    assert_string_equal(v, "POST");
    check_status_body(&r, false, 12);
    free(r.body);
    http_exchange(s->port, "PUT", "/v1/metrics", PB_HEADERS, "", 0, &r);
    assert_int_equal(r.status, 405);
    free(r.body);

    /* Wrong content type or encoding: 415. */
    http_exchange(s->port, "POST", "/v1/logs", "Content-Type: text/plain\r\n", "x", 1, &r);
    assert_int_equal(r.status, 415);
    check_status_body(&r, false, 12);
    free(r.body);
    http_exchange(s->port, "POST", "/v1/logs", "", "x", 1, &r);
    assert_int_equal(r.status, 415);
    free(r.body);
    http_exchange(s->port, "POST", "/v1/logs", "Content-Type: application/x-protobufx\r\n", "", 0,
                  &r);
    assert_int_equal(r.status, 415);
    free(r.body);
    http_exchange(s->port, "POST", "/v1/logs", PB_HEADERS "Content-Encoding: br\r\n", "x", 1, &r);
    assert_int_equal(r.status, 415);
    free(r.body);

    /* identity is no encoding; an empty protobuf request is valid and has nothing in it. */
    http_exchange(s->port, "POST", "/v1/logs", PB_HEADERS "Content-Encoding: identity\r\n", "", 0,
                  &r);
    assert_int_equal(r.status, 200);
    free(r.body);
}

static void test_http_too_large(void **state)
{
    struct server *s = *state;
    size_t big = RECEIVER_HTTP_MAX_BODY + 1;
    uint8_t *body = calloc(1, big);
    assert_non_null(body);
    struct response r;
    http_exchange(s->port, "POST", "/v1/traces", PB_HEADERS, body, big, &r);
    assert_int_equal(r.status, 413);
    check_status_body(&r, false, 8);
    free(r.body);
    free(body);
}

/* ---- the OTLP/gRPC receiver in-process, driven by an nghttp2 client ----------------------------
 */

#define TRACE_EXPORT "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

struct h2_call {
    int fd;
    const uint8_t *body;
    size_t body_len;
    size_t sent;
    int32_t stream_id;
    bool closed;
    uint32_t close_error;
    int header_frames;  /* HEADERS frames received on the stream. */
    bool trailers_only; /* The first HEADERS frame ended the stream. */
    int status;         /* :status */
    int grpc_status;    /* From headers or trailers; -1 when absent. */
    char grpc_message[512];
    char content_type[64];
    char accept_encoding[64];
    struct buf data;
};

static ssize_t h2_send(nghttp2_session *session, const uint8_t *data, size_t length, int flags,
                       void *user_data)
{
    (void)session;
    (void)flags;
    struct h2_call *c = user_data;
    size_t done = 0;
    while (done < length) {
        ssize_t n = send(c->fd, data + done, length - done, MSG_NOSIGNAL);
        if (n <= 0) {
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        done += (size_t)n;
    }
    return (ssize_t)length;
}

static ssize_t h2_read_body(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                            size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                            void *user_data)
{
    (void)session;
    (void)stream_id;
    (void)source;
    struct h2_call *c = user_data;
    size_t n = c->body_len - c->sent;
    if (n > length) {
        n = length;
    }
    if (n > 0) {
        memcpy(buf, c->body + c->sent, n);
    }
    c->sent += n;
    if (c->sent == c->body_len) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    }
    return (ssize_t)n;
}

/* Copies a header value, cut to fit, as a C string. */
static void copy_value(char *dst, size_t dstlen, const uint8_t *v, size_t n)
{
    if (n > dstlen - 1) {
        n = dstlen - 1;
    }
    memcpy(dst, v, n);
    dst[n] = '\0';
}

/* A small decimal header value ("200", "14"); -2 when it is not one. */
static int parse_small_int(const uint8_t *v, size_t n)
{
    int x = 0;
    if (n == 0 || n > 6) {
        return -2;
    }
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9') {
            return -2;
        }
        x = x * 10 + (v[i] - '0');
    }
    return x;
}

static int h2_on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                        size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                        void *user_data)
{
    (void)session;
    (void)flags;
    struct h2_call *c = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->hd.stream_id != c->stream_id) {
        return 0;
    }

#define IS(lit) (namelen == sizeof(lit) - 1 && memcmp(name, lit, namelen) == 0)
    if (IS(":status")) {
        c->status = parse_small_int(value, valuelen);
    } else if (IS("grpc-status")) {
        c->grpc_status = parse_small_int(value, valuelen);
    } else if (IS("grpc-message")) {
        copy_value(c->grpc_message, sizeof(c->grpc_message), value, valuelen);
    } else if (IS("content-type")) {
        copy_value(c->content_type, sizeof(c->content_type), value, valuelen);
    } else if (IS("grpc-accept-encoding")) {
        copy_value(c->accept_encoding, sizeof(c->accept_encoding), value, valuelen);
    }
#undef IS
    return 0;
}

static int h2_on_frame(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    (void)session;
    struct h2_call *c = user_data;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->hd.stream_id == c->stream_id) {
        c->header_frames++;
        if (c->header_frames == 1 && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
            c->trailers_only = true;
        }
    }
    return 0;
}

static int h2_on_data(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                      const uint8_t *data, size_t len, void *user_data)
{
    (void)session;
    (void)flags;
    struct h2_call *c = user_data;
    if (stream_id == c->stream_id) {
        buf_append(&c->data, data, len);
    }
    return 0;
}

static int h2_on_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                       void *user_data)
{
    (void)session;
    struct h2_call *c = user_data;
    if (stream_id == c->stream_id) {
        c->closed = true;
        c->close_error = error_code;
    }
    return 0;
}

/*
 * One HTTP/2 (prior knowledge) POST of |body| to |path| with |content_type| and, when not NULL,
 * grpc-encoding |encoding|. Fills |c|; the caller cleans c->data up.
 */
static void grpc_call(uint16_t port, const char *path, const char *content_type,
                      const char *encoding, const uint8_t *body, size_t body_len, struct h2_call *c)
{
    memset(c, 0, sizeof(*c));
    c->grpc_status = -1;
    c->body = body;
    c->body_len = body_len;
    buf_init(&c->data, (size_t)8 << 20);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(c->fd >= 0);
    struct timeval tv = {.tv_sec = 20};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);

    nghttp2_session_callbacks *cbs;
    assert_int_equal(nghttp2_session_callbacks_new(&cbs), 0);
    nghttp2_session_callbacks_set_send_callback(cbs, h2_send);
    nghttp2_session_callbacks_set_on_header_callback(cbs, h2_on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, h2_on_frame);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, h2_on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, h2_on_close);
    nghttp2_session *session;
    assert_int_equal(nghttp2_session_client_new(&session, cbs, c), 0);
    nghttp2_session_callbacks_del(cbs);
    assert_int_equal(nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, NULL, 0), 0);

    char authority[32];
    snprintf(authority, sizeof(authority), "127.0.0.1:%u", (unsigned)port);
#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE}
    nghttp2_nv nva[] = {
        NV(":method", "POST"),
        NV(":scheme", "http"),
        NV(":authority", authority),
        NV(":path", path),
        NV("content-type", content_type),
        NV("te", "trailers"),
        NV("grpc-encoding", encoding != NULL ? encoding : "identity"),
    };
#undef NV
    nghttp2_data_provider prd = {.source.ptr = NULL, .read_callback = h2_read_body};
    c->stream_id =
        nghttp2_submit_request(session, NULL, nva, sizeof(nva) / sizeof(nva[0]), &prd, NULL);
    assert_true(c->stream_id > 0);

    uint8_t in[65536];
    while (!c->closed) {
        assert_int_equal(nghttp2_session_send(session), 0);
        if (c->closed) {
            break;
        }
        ssize_t n = recv(c->fd, in, sizeof(in), 0);
        if (n <= 0) {
            break;
        }
        assert_true(nghttp2_session_mem_recv(session, in, (size_t)n) >= 0);
    }
    nghttp2_session_del(session);
    close(c->fd);
    assert_true(c->closed);
}

static uint8_t *frame_payload(const char *name, size_t *flen, size_t *pblen)
{
    uint8_t *pb = read_payload(name, pblen);
    size_t dummy;
    uint8_t *f = make_frame(0, pb, *pblen, flen != NULL ? flen : &dummy);
    free(pb);
    return f;
}

static void test_grpc_export(void **state)
{
    struct server *s = *state;
    size_t flen, pblen;
    uint8_t *frame = frame_payload("traces_512.pb", &flen, &pblen);
    struct h2_call c;

    grpc_call(s->port, TRACE_EXPORT, "application/grpc", NULL, frame, flen, &c);
    assert_int_equal(c.close_error, 0);
    assert_int_equal(c.status, 200);
    assert_string_equal(c.content_type, "application/grpc");
    assert_string_equal(c.accept_encoding, GRPC_ACCEPT_ENCODING);
    /* Headers, one message (the empty ExportTraceServiceResponse), trailers with status 0. */
    assert_false(c.trailers_only);
    assert_int_equal(c.header_frames, 2);
    assert_int_equal(c.data.len, GRPC_PREFIX_LEN);
    assert_memory_equal(c.data.data, "\0\0\0\0\0", 5);
    assert_int_equal(c.grpc_status, 0);
    buf_cleanup(&c.data);

    json_t *lines[2] = {0};
    assert_int_equal(file_lines(s, lines, 2), 1);
    assert_int_equal(count_spans(lines[0]), 512);
    json_decref(lines[0]);

    /* Compressed, both codecs, with a +proto content type. */
    size_t len;
    uint8_t *pb = read_payload("logs_512.pb", &len);
    static const enum codec codecs[] = {CODEC_GZIP, CODEC_ZSTD};
    for (size_t i = 0; i < 2; i++) {
        struct buf z;
        buf_init(&z, (size_t)8 << 20);
        assert_int_equal(codec_compress(codecs[i], pb, len, 0, &z), 0);
        size_t zlen;
        uint8_t *zf = make_frame(1, z.data, z.len, &zlen);
        grpc_call(s->port, "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
                  "application/grpc+proto", codec_name(codecs[i]), zf, zlen, &c);
        assert_int_equal(c.grpc_status, 0);
        buf_cleanup(&c.data);
        free(zf);
        buf_cleanup(&z);
    }
    free(pb);
    assert_int_equal(file_lines(s, lines, 0), 3);
    free(frame);
}

static void test_grpc_errors(void **state)
{
    struct server *s = *state;
    struct h2_call c;
    static const uint8_t empty[GRPC_PREFIX_LEN] = {0};

    /* Unknown method: UNIMPLEMENTED, as a Trailers-Only response. */
    grpc_call(s->port, "/opentelemetry.proto.collector.profiles.v1.ProfilesService/Export",
              "application/grpc", NULL, empty, sizeof(empty), &c);
    assert_int_equal(c.status, 200);
    assert_true(c.trailers_only);
    assert_int_equal(c.grpc_status, 12);
    assert_non_null(strstr(c.grpc_message, "unknown method"));
    buf_cleanup(&c.data);

    /* Not gRPC at all: HTTP 415, so that a plain HTTP client does not see success. */
    grpc_call(s->port, TRACE_EXPORT, "application/json", NULL, empty, sizeof(empty), &c);
    assert_int_equal(c.status, 415);
    buf_cleanup(&c.data);

    /* An encoding we do not have: UNIMPLEMENTED, and the ones we do have are advertised. */
    grpc_call(s->port, TRACE_EXPORT, "application/grpc", "snappy", empty, sizeof(empty), &c);
    assert_int_equal(c.grpc_status, 12);
    assert_string_equal(c.accept_encoding, GRPC_ACCEPT_ENCODING);
    buf_cleanup(&c.data);

    /* Garbage in a well-formed frame: INVALID_ARGUMENT naming where and why. */
    static const char junk[] = "this is not a protobuf message";
    size_t flen;
    uint8_t *f = make_frame(0, (const uint8_t *)junk, sizeof(junk) - 1, &flen);
    grpc_call(s->port, TRACE_EXPORT, "application/grpc", NULL, f, flen, &c);
    assert_int_equal(c.grpc_status, 3);
    assert_true(c.trailers_only);
    assert_non_null(strstr(c.grpc_message, "at byte"));
    buf_cleanup(&c.data);

    /* The compressed flag without an encoding: INTERNAL. */
    f[0] = 1;
    grpc_call(s->port, TRACE_EXPORT, "application/grpc", NULL, f, flen, &c);
    assert_int_equal(c.grpc_status, 13);
    buf_cleanup(&c.data);
    free(f);

    /* Truncated and trailing bytes: INTERNAL (a broken frame, not a bad payload). */
    grpc_call(s->port, TRACE_EXPORT, "application/grpc", NULL, empty, 3, &c);
    assert_int_equal(c.grpc_status, 13);
    buf_cleanup(&c.data);

    /* 4 MiB + 1: RESOURCE_EXHAUSTED, from the framing check and from the transport's cap. */
    uint8_t *zeros = calloc(1, (size_t)6 << 20);
    assert_non_null(zeros);
    f = make_frame(0, zeros, GRPC_MAX_MESSAGE + 1, &flen);
    grpc_call(s->port, TRACE_EXPORT, "application/grpc", NULL, f, flen, &c);
    assert_int_equal(c.grpc_status, 8);
    buf_cleanup(&c.data);
    free(f);
    f = make_frame(0, zeros, (size_t)6 << 20, &flen);
    grpc_call(s->port, TRACE_EXPORT, "application/grpc", NULL, f, flen, &c);
    assert_int_equal(c.grpc_status, 8);
    buf_cleanup(&c.data);
    free(f);
    free(zeros);

    /* Nothing reached the exporter, and a good call still works. */
    json_t *lines[1];
    assert_int_equal(file_lines(s, lines, 0), 0);
    grpc_call(s->port, TRACE_EXPORT, "application/grpc", NULL, empty, sizeof(empty), &c);
    assert_int_equal(c.grpc_status, 0);
    buf_cleanup(&c.data);
}

/* An exporter that cannot write: the client is told to retry (UNAVAILABLE, 503). */
static void test_grpc_exporter_failure(void **state)
{
    struct server *s = *state;
    size_t flen, pblen;
    uint8_t *frame = frame_payload("metrics.pb", &flen, &pblen);
    struct h2_call c;
    grpc_call(s->port, "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
              "application/grpc", NULL, frame, flen, &c);
    assert_int_equal(c.grpc_status, 14);
    assert_non_null(strstr(c.grpc_message, "file"));
    buf_cleanup(&c.data);
    free(frame);
}

static void test_http_exporter_failure(void **state)
{
    struct server *s = *state;
    size_t len;
    uint8_t *pb = read_payload("metrics.pb", &len);
    struct response r;
    http_exchange(s->port, "POST", "/v1/metrics", PB_HEADERS, pb, len, &r);
    assert_int_equal(r.status, 503);
    char v[32];
    assert_true(response_header(&r, "retry-after", v, sizeof(v)));
    assert_string_equal(v, "1");
    check_status_body(&r, false, 14);
    free(r.body);
    free(pb);
}

int main(void)
{
    /*
     * Everything is logged (to a temporary file), so that every logging path runs under the
     * sanitizers too, and tests can check what an operator would read.
     */
    log_capture = tmpfile();
    if (log_capture == NULL) {
        return 1;
    }
    log_set_file(log_capture);
    log_set_level(LOG_LEVEL_DEBUG);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_size_limit),
        cmocka_unit_test(test_frame_malformed),
        cmocka_unit_test(test_frame_gzip),
        cmocka_unit_test(test_frame_zstd),
        cmocka_unit_test(test_frame_build),
        cmocka_unit_test(test_message_encode),
        cmocka_unit_test(test_status_mapping),
        cmocka_unit_test_setup_teardown(test_http_protobuf_and_garbage, setup_server,
                                        teardown_server),
        cmocka_unit_test_setup_teardown(test_http_json, setup_server, teardown_server),
        cmocka_unit_test_setup_teardown(test_http_compressed, setup_server, teardown_server),
        cmocka_unit_test_setup_teardown(test_http_errors, setup_server, teardown_server),
        cmocka_unit_test_setup_teardown(test_http_too_large, setup_server, teardown_server),
        cmocka_unit_test_setup_teardown(test_http_exporter_failure, setup_failing_http,
                                        teardown_server),
        cmocka_unit_test_setup_teardown(test_grpc_export, setup_grpc_server, teardown_server),
        cmocka_unit_test_setup_teardown(test_grpc_errors, setup_grpc_server, teardown_server),
        cmocka_unit_test_setup_teardown(test_grpc_exporter_failure, setup_failing_grpc,
                                        teardown_server),
    };
    return cmocka_run_group_tests_name("receiver", tests, NULL, NULL);
}
