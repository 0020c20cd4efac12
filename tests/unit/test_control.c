/*
 * The control socket (agent/launcher/control.h): the codec, the runtime directory checks, the
 * daemon lock, and both halves talking over a real UNIX socket. The server runs on a libuv loop
 * in the test's main thread with a real pipeline (a file exporter, or an otlp_http exporter
 * whose upstream refuses connections); the blocking client half runs in a second thread, as it
 * does inside a host process.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include "core/log.h"
#include "core/timeutil.h"
#include "dlotel.h"
#include "exporter/exporter.h"
#include "launcher/control.h"
#include "otlp/otlp.h"
#include "pipeline/pipeline.h"

/* ---- helpers -------------------------------------------------------------------------------- */

static void make_tmpdir(char *out, size_t len)
{
    snprintf(out, len, "/tmp/dlotel-test-control-XXXXXX");
    assert_non_null(mkdtemp(out));
}

static void rm_rf(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static json_t *reply_json(const struct control_reply *r)
{
    return (json_t *)r->json;
}

static void frame_of(struct buf *b, const char *json)
{
    buf_init(b, 1 << 20);
    assert_int_equal(control_frame_append(b, json, strlen(json)), 0);
}

/* ---- codec ---------------------------------------------------------------------------------- */

static void test_frame_codec(void **state)
{
    (void)state;
    struct buf b;
    frame_of(&b, "{\"op\":\"status\"}");
    const uint8_t *p;
    size_t n, used;
    /* Byte by byte: incomplete until the last byte arrives. */
    for (size_t i = 0; i < b.len; i++) {
        assert_int_equal(control_frame_next(b.data, i, 100, &p, &n, &used), 0);
    }
    assert_int_equal(control_frame_next(b.data, b.len, 100, &p, &n, &used), 1);
    assert_int_equal(n, 15);
    assert_int_equal(used, 19);
    assert_memory_equal(p, "{\"op\":\"status\"}", 15);
    /* A frame larger than the limit is refused from its header alone. */
    assert_int_equal(control_frame_next(b.data, 4, 14, &p, &n, &used), DLOTEL_ERR_TOO_LARGE);
    uint8_t huge[4] = {0xff, 0xff, 0xff, 0xff};
    assert_int_equal(control_frame_next(huge, 4, CONTROL_MAX_REPLY, &p, &n, &used),
                     DLOTEL_ERR_TOO_LARGE);
    uint8_t empty[4] = {0, 0, 0, 0};
    assert_int_equal(control_frame_next(empty, 4, 100, &p, &n, &used), DLOTEL_ERR_BAD_INPUT);
    buf_cleanup(&b);
}

static void test_request_parse(void **state)
{
    (void)state;
    struct control_request r;
    char why[256];
    const char *attach = "{\"op\":\"attach\",\"pid\":42,\"config_hash\":\"00112233445566ff\","
                         "\"version\":\"0.1.0\",\"future\":[1,2]}";
    assert_int_equal(
        control_request_parse((const uint8_t *)attach, strlen(attach), &r, why, sizeof(why)), 0);
    assert_int_equal(r.op, CONTROL_OP_ATTACH);
    assert_int_equal(r.pid, 42);
    assert_true(r.config_hash == 0x00112233445566ffull);
    assert_string_equal(r.version, "0.1.0");

    const char *flush = "{\"op\":\"flush\",\"timeout_ms\":2500}";
    assert_int_equal(
        control_request_parse((const uint8_t *)flush, strlen(flush), &r, why, sizeof(why)), 0);
    assert_int_equal(r.op, CONTROL_OP_FLUSH);
    assert_int_equal(r.timeout_ms, 2500);

    static const struct {
        const char *json;
        const char *why;
    } bad[] = {
        {"", "not JSON"},
        {"[1]", "not a JSON object"},
        {"{\"op\":1}", "\"op\" must be a string"},
        {"{\"op\":\"reboot\"}", "unknown op"},
        {"{\"op\":\"attach\",\"config_hash\":\"00112233445566ff\"}", "\"pid\""},
        {"{\"op\":\"attach\",\"pid\":-1,\"config_hash\":\"00112233445566ff\"}", "\"pid\""},
        {"{\"op\":\"attach\",\"pid\":1,\"config_hash\":\"0011\"}", "\"config_hash\""},
        {"{\"op\":\"attach\",\"pid\":1,\"config_hash\":\"00112233445566zz\"}", "\"config_hash\""},
        {"{\"op\":\"attach\",\"pid\":1,\"config_hash\":\"00112233445566ff\",\"version\":7}",
         "\"version\""},
        {"{\"op\":\"flush\"}", "\"timeout_ms\""},
        {"{\"op\":\"flush\",\"timeout_ms\":3600001}", "\"timeout_ms\""},
        {"{\"op\":\"status\",\"op\":\"stop\"}", "not JSON"}, /* duplicate keys */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(&r, 0x5a, sizeof(r));
        struct control_request before = r;
        int rv = control_request_parse((const uint8_t *)bad[i].json, strlen(bad[i].json), &r, why,
                                       sizeof(why));
        if (rv != DLOTEL_ERR_BAD_INPUT || strstr(why, bad[i].why) == NULL) {
            fail_msg("%s: got %d \"%s\", wanted \"%s\"", bad[i].json, rv, why, bad[i].why);
        }
        /* *out untouched on failure. */
        assert_memory_equal(&r, &before, sizeof(r));
    }
}

static void test_request_roundtrip(void **state)
{
    (void)state;
    struct control_request in = {.op = CONTROL_OP_ATTACH, .pid = 1234, .config_hash = ~0ull};
    snprintf(in.version, sizeof(in.version), "9.9.9");
    struct buf b;
    buf_init(&b, 4096);
    assert_int_equal(control_request_append(&b, &in), 0);
    const uint8_t *p;
    size_t n, used;
    assert_int_equal(control_frame_next(b.data, b.len, CONTROL_MAX_REQUEST, &p, &n, &used), 1);
    struct control_request out;
    char why[128];
    assert_int_equal(control_request_parse(p, n, &out, why, sizeof(why)), 0);
    assert_int_equal(out.op, CONTROL_OP_ATTACH);
    assert_int_equal(out.pid, 1234);
    assert_true(out.config_hash == ~0ull);
    assert_string_equal(out.version, "9.9.9");
    buf_cleanup(&b);

    struct control_request bad = {.op = (enum control_op)77};
    buf_init(&b, 4096);
    assert_int_equal(control_request_append(&b, &bad), DLOTEL_ERR_INVALID_ARG);
    buf_cleanup(&b);
}

static void test_reply_parse(void **state)
{
    (void)state;
    struct control_reply r;
    const char *ok = "{\"ok\":true,\"users\":3}";
    assert_int_equal(control_reply_parse((const uint8_t *)ok, strlen(ok), &r), 0);
    assert_true(r.ok);
    assert_int_equal(json_integer_value(json_object_get(reply_json(&r), "users")), 3);
    control_reply_cleanup(&r);
    control_reply_cleanup(&r); /* Twice is harmless. */

    const char *no = "{\"ok\":false,\"code\":-15,\"error\":\"different configuration\"}";
    assert_int_equal(control_reply_parse((const uint8_t *)no, strlen(no), &r), 0);
    assert_false(r.ok);
    assert_int_equal(r.code, DLOTEL_ERR_CONFIG_MISMATCH);
    assert_string_equal(r.error, "different configuration");
    control_reply_cleanup(&r);

    /* A failure without a usable code is an internal error, never a success. */
    const char *odd = "{\"ok\":false,\"code\":5}";
    assert_int_equal(control_reply_parse((const uint8_t *)odd, strlen(odd), &r), 0);
    assert_int_equal(r.code, DLOTEL_ERR_INTERNAL);
    assert_string_equal(r.error, "(no message)");
    control_reply_cleanup(&r);

    const char *bad[] = {"{}", "{\"ok\":1}", "[true]", "{\"ok\":true"};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(control_reply_parse((const uint8_t *)bad[i], strlen(bad[i]), &r),
                         DLOTEL_ERR_BAD_INPUT);
    }
}

static void test_hash(void **state)
{
    (void)state;
    char hex[17];
    control_hash_format(0x0123456789abcdefull, hex);
    assert_string_equal(hex, "0123456789abcdef");
    uint64_t h;
    assert_int_equal(control_hash_parse("0123456789ABCDEF", &h), 0);
    assert_true(h == 0x0123456789abcdefull);
    assert_int_equal(control_hash_parse("0123456789abcde", &h), DLOTEL_ERR_BAD_INPUT);
    assert_int_equal(control_hash_parse("0123456789abcdef0", &h), DLOTEL_ERR_BAD_INPUT);
    assert_int_equal(control_hash_parse("", &h), DLOTEL_ERR_BAD_INPUT);
    /* The launcher's additions change the hash: exit-when-unused off, 0 and 5 s all differ. */
    uint64_t off = control_hash_mix(42, -1);
    assert_true(off != control_hash_mix(42, 0));
    assert_true(control_hash_mix(42, 0) != control_hash_mix(42, 5000000000ll));
    assert_true(off == control_hash_mix(42, -7));
    assert_true(off != control_hash_mix(43, -1));
}

static void test_ready_roundtrip(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    struct control_ready r = {
        .ok = true, .pid = 777, .config_hash = 0xabcull, .grpc_port = 4317, .http_port = 4318};
    control_ready_write(p[1], &r); /* Closes p[1]. */
    char line[2048];
    ssize_t n = read(p[0], line, sizeof(line));
    assert_true(n > 0 && line[n - 1] == '\n');
    assert_int_equal(read(p[0], line + n, 1), 0); /* EOF: the writer closed. */
    close(p[0]);
    struct control_ready got;
    assert_int_equal(control_ready_parse(line, (size_t)n - 1, &got), 0);
    assert_true(got.ok);
    assert_int_equal(got.pid, 777);
    assert_true(got.config_hash == 0xabcull);
    assert_int_equal(got.grpc_port, 4317);
    assert_int_equal(got.http_port, 4318);

    assert_int_equal(pipe(p), 0);
    struct control_ready e = {.ok = false, .code = DLOTEL_ERR_ADDR_IN_USE};
    snprintf(e.error, sizeof(e.error), "port 4318 (localhost:4318) is in use by another program");
    control_ready_write(p[1], &e);
    n = read(p[0], line, sizeof(line));
    close(p[0]);
    assert_true(n > 0);
    assert_int_equal(control_ready_parse(line, (size_t)n - 1, &got), 0);
    assert_false(got.ok);
    assert_int_equal(got.code, DLOTEL_ERR_ADDR_IN_USE);
    assert_string_equal(got.error, "port 4318 (localhost:4318) is in use by another program");

    const char *bad = "{\"ok\":true,\"pid\":0,\"config_hash\":\"0000000000000abc\","
                      "\"grpc_port\":1,\"http_port\":2}";
    assert_int_equal(control_ready_parse(bad, strlen(bad), &got), DLOTEL_ERR_BAD_INPUT);
    bad = "{\"ok\":true,\"pid\":5,\"config_hash\":\"0000000000000abc\",\"grpc_port\":70000,"
          "\"http_port\":2}";
    assert_int_equal(control_ready_parse(bad, strlen(bad), &got), DLOTEL_ERR_BAD_INPUT);
}

/* ---- runtime directory and lock ------------------------------------------------------------- */

static void test_runtime_dir(void **state)
{
    (void)state;
    char tmp[64];
    make_tmpdir(tmp, sizeof(tmp));
    char want[256], got[CONTROL_PATH_MAX], why[512];

    /* Missing, not created. */
    snprintf(want, sizeof(want), "%s/a/b", tmp);
    assert_int_equal(control_runtime_dir(got, sizeof(got), want, NULL, false, why, sizeof(why)),
                     DLOTEL_ERR_NOT_FOUND);
    /* Created, 0700, with its parents; a trailing slash is dropped. */
    snprintf(want, sizeof(want), "%s/a/b/", tmp);
    assert_int_equal(control_runtime_dir(got, sizeof(got), want, NULL, true, why, sizeof(why)), 0);
    snprintf(want, sizeof(want), "%s/a/b", tmp);
    assert_string_equal(got, want);
    struct stat st;
    assert_int_equal(stat(got, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);

    /* From XDG_RUNTIME_DIR. */
    char xdg[300];
    snprintf(xdg, sizeof(xdg), "XDG_RUNTIME_DIR=%s", tmp);
    char *envp[] = {xdg, NULL};
    assert_int_equal(control_runtime_dir(got, sizeof(got), NULL, envp, true, why, sizeof(why)), 0);
    snprintf(want, sizeof(want), "%s/dlotel", tmp);
    assert_string_equal(got, want);

    /* Without it, /tmp/dlotel-<uid>. */
    char *noenv[] = {NULL};
    assert_int_equal(control_runtime_dir(got, sizeof(got), NULL, noenv, false, why, sizeof(why)) ==
                             DLOTEL_ERR_NOT_FOUND ||
                         strncmp(got, "/tmp/dlotel-", 12) == 0,
                     1);

    /* Open to others: refused, and the message says the mode. */
    snprintf(want, sizeof(want), "%s/open", tmp);
    assert_int_equal(mkdir(want, 0700), 0);
    assert_int_equal(chmod(want, 0755), 0);
    assert_int_equal(control_runtime_dir(got, sizeof(got), want, NULL, true, why, sizeof(why)),
                     DLOTEL_ERR_IO);
    assert_non_null(strstr(why, "0755"));

    /* A symbolic link: refused (in /tmp another user could plant one). */
    char link[256];
    snprintf(link, sizeof(link), "%s/link", tmp);
    snprintf(want, sizeof(want), "%s/a/b", tmp);
    assert_int_equal(symlink(want, link), 0);
    assert_int_equal(control_runtime_dir(got, sizeof(got), link, NULL, true, why, sizeof(why)),
                     DLOTEL_ERR_IO);
    assert_non_null(strstr(why, "not a directory"));

    /* Someone else's: refused (as root, make one for nobody). */
    if (geteuid() == 0) {
        snprintf(want, sizeof(want), "%s/foreign", tmp);
        assert_int_equal(mkdir(want, 0700), 0);
        assert_int_equal(chown(want, 65534, 65534), 0);
        assert_int_equal(control_runtime_dir(got, sizeof(got), want, NULL, true, why, sizeof(why)),
                         DLOTEL_ERR_IO);
        assert_non_null(strstr(why, "belongs to uid 65534"));
    }

    /* Too long for a socket path inside it. */
    char longdir[200];
    memset(longdir, 'x', sizeof(longdir) - 1);
    longdir[0] = '/';
    longdir[sizeof(longdir) - 1] = '\0';
    assert_int_equal(control_runtime_dir(got, sizeof(got), longdir, NULL, true, why, sizeof(why)),
                     DLOTEL_ERR_TOO_LARGE);
    assert_non_null(strstr(why, "DATALAYER_OTEL_AGENT_RUNTIME_DIR"));
    rm_rf(tmp);
}

static void test_lock(void **state)
{
    (void)state;
    char dir[64];
    make_tmpdir(dir, sizeof(dir));
    char why[256];
    pid_t pid = 99;
    assert_int_equal(control_lock_probe(dir, &pid), 0); /* No file yet. */
    assert_int_equal(pid, 0);
    int fd;
    assert_int_equal(control_lock_acquire(dir, &fd, why, sizeof(why)), 0);
    assert_int_equal(control_lock_probe(dir, &pid), 1);
    assert_int_equal(pid, getpid());

    /* Another process cannot take it, and hears who holds it. */
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        int fd2;
        char w[256];
        int rv = control_lock_acquire(dir, &fd2, w, sizeof(w));
        char want[64];
        snprintf(want, sizeof(want), "(pid %ld)", (long)getppid());
        _exit(rv == DLOTEL_ERR_ADDR_IN_USE && strstr(w, want) != NULL ? 0 : 1);
    }
    int st;
    assert_int_equal(waitpid(child, &st, 0), child);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);

    /* Closing the descriptor frees it: a killed daemon leaves no lock behind. */
    close(fd);
    assert_int_equal(control_lock_probe(dir, &pid), 0);
    assert_int_equal(control_lock_acquire(dir, &fd, why, sizeof(why)), 0);
    close(fd);
    rm_rf(dir);
}

/* ---- server and client ---------------------------------------------------------------------- */

struct fixture {
    uv_loop_t loop;
    uv_async_t done_async;
    char dir[64];
    char sock[CONTROL_PATH_MAX];
    char out_path[128];
    struct pipeline *pipeline;
    struct control_server *server;
    int stops;
    char stop_reason[256];
    void (*scenario)(struct fixture *f);
    volatile bool finished;
    int refuser; /* A bound, never listening socket: the upstream that refuses. */
};

static void on_stop(void *ud, const char *reason)
{
    struct fixture *f = ud;
    f->stops++;
    snprintf(f->stop_reason, sizeof(f->stop_reason), "%s", reason);
}

static void done_cb(uv_async_t *a)
{
    uv_stop(a->loop);
}

static void *client_thread(void *arg)
{
    struct fixture *f = arg;
    f->scenario(f);
    f->finished = true;
    uv_async_send(&f->done_async);
    return NULL;
}

static void fixture_init(struct fixture *f, int64_t exit_when_unused_ms, bool upstream)
{
    memset(f, 0, sizeof(*f));
    f->refuser = -1;
    make_tmpdir(f->dir, sizeof(f->dir));
    assert_int_equal(control_path(f->sock, sizeof(f->sock), f->dir, CONTROL_SOCKET_NAME), 0);
    snprintf(f->out_path, sizeof(f->out_path), "%s/out.jsonl", f->dir);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(uv_async_init(&f->loop, &f->done_async, done_cb), 0);
    assert_int_equal(pipeline_new_on_loop(&f->pipeline, &f->loop, NULL), 0);
    struct exporter *e;
    if (upstream) {
        /* A port bound but not listening refuses connections, and stays ours while the socket
         * is open: every send fails and is retried much later, so the queue never empties
         * within the test. */
        f->refuser = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t slen = sizeof(sin);
        assert_int_equal(bind(f->refuser, (struct sockaddr *)&sin, sizeof(sin)), 0);
        assert_int_equal(getsockname(f->refuser, (struct sockaddr *)&sin, &slen), 0);
        char endpoint[64];
        snprintf(endpoint, sizeof(endpoint), "http://127.0.0.1:%u", (unsigned)ntohs(sin.sin_port));
        struct otlp_exporter_options o = {
            .name = "up", .endpoint = endpoint, .compression = CODEC_NONE};
        assert_int_equal(exporter_otlp_http_new(&e, &f->loop, &o), 0);
        struct pipeline_exporter_options po;
        pipeline_exporter_options_init(&po);
        po.name = "up";
        po.retry.initial_interval_ns = 60ull * 1000000000ull;
        po.retry.max_interval_ns = 60ull * 1000000000ull;
        assert_int_equal(pipeline_add_exporter_opts(f->pipeline, OTLP_TRACES, e, &po), 0);
    } else {
        assert_int_equal(exporter_file_new(&e, f->out_path), 0);
        assert_int_equal(pipeline_add_exporter(f->pipeline, OTLP_TRACES, e), 0);
    }
    int lock_fd;
    char why[256];
    assert_int_equal(control_lock_acquire(f->dir, &lock_fd, why, sizeof(why)), 0);
    struct control_server_options so = {
        .dir = f->dir,
        .lock_fd = lock_fd,
        .config_hash = 0x1111222233334444ull,
        .exit_when_unused_ms = exit_when_unused_ms,
        .pipeline = f->pipeline,
        .grpc_port = 14317,
        .http_port = 14318,
        .on_stop = on_stop,
        .userdata = f,
    };
    int rv = control_server_new(&f->server, &f->loop, &so, why, sizeof(why));
    if (rv != 0) {
        fail_msg("control_server_new: %d %s", rv, why);
    }
}

static void fixture_run(struct fixture *f, void (*scenario)(struct fixture *f))
{
    f->scenario = scenario;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, client_thread, f), 0);
    while (!f->finished) {
        uv_run(&f->loop, UV_RUN_DEFAULT);
    }
    pthread_join(t, NULL);
}

static void fixture_cleanup(struct fixture *f)
{
    struct stat st;
    control_server_free(f->server);
    /* The socket file goes with the server; the lock goes too (checked by the probe). */
    assert_int_equal(stat(f->sock, &st), -1);
    pid_t pid;
    assert_int_equal(control_lock_probe(f->dir, &pid), 0);
    pipeline_free(f->pipeline);
    uv_close((uv_handle_t *)&f->done_async, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    if (f->refuser >= 0) {
        close(f->refuser);
    }
    rm_rf(f->dir);
}

/* Client helpers, for the client thread. */

static int connect_sock(struct fixture *f)
{
    int fd = -1;
    assert_int_equal(control_client_connect(f->sock, &fd), 0);
    return fd;
}

static int do_attach(int fd, int64_t pid, uint64_t hash, struct control_reply *r)
{
    struct control_request q = {.op = CONTROL_OP_ATTACH, .pid = pid, .config_hash = hash};
    snprintf(q.version, sizeof(q.version), "%s", DLOTEL_VERSION);
    return control_client_call(fd, &q, 5000, r);
}

static json_t *get_status(int fd, struct control_reply *r)
{
    struct control_request q = {.op = CONTROL_OP_STATUS};
    assert_int_equal(control_client_call(fd, &q, 5000, r), 0);
    assert_true(r->ok);
    json_t *st = json_object_get(reply_json(r), "status");
    assert_true(json_is_object(st));
    return st;
}

static int64_t status_int(int fd, const char *key)
{
    struct control_reply r;
    json_t *st = get_status(fd, &r);
    int64_t v = json_integer_value(json_object_get(st, key));
    control_reply_cleanup(&r);
    return v;
}

/* Polls status until |key| equals |want| (the server sees a closed socket asynchronously). */
static void wait_status_int(int fd, const char *key, int64_t want)
{
    uint64_t deadline = time_monotonic_nano() + 5000000000ull;
    int64_t v;
    while ((v = status_int(fd, key)) != want) {
        if (time_monotonic_nano() > deadline) {
            fail_msg("status %s = %lld, wanted %lld", key, (long long)v, (long long)want);
        }
        usleep(5000);
    }
}

static void scenario_users(struct fixture *f)
{
    struct control_reply r;
    int a = connect_sock(f);
    assert_int_equal(do_attach(a, 1001, 0x1111222233334444ull, &r), 0);
    assert_true(r.ok);
    assert_int_equal(json_integer_value(json_object_get(reply_json(&r), "users")), 1);
    assert_int_equal(json_integer_value(json_object_get(reply_json(&r), "pid")), getpid());
    assert_int_equal(json_integer_value(json_object_get(reply_json(&r), "http_port")), 14318);
    assert_int_equal(json_integer_value(json_object_get(reply_json(&r), "grpc_port")), 14317);
    assert_string_equal(json_string_value(json_object_get(reply_json(&r), "config_hash")),
                        "1111222233334444");
    control_reply_cleanup(&r);

    int b = connect_sock(f);
    assert_int_equal(do_attach(b, 1002, 0x1111222233334444ull, &r), 0);
    assert_true(r.ok);
    assert_int_equal(json_integer_value(json_object_get(reply_json(&r), "users")), 2);
    control_reply_cleanup(&r);
    /* Attaching twice on one connection counts once. */
    assert_int_equal(do_attach(b, 1002, 0x1111222233334444ull, &r), 0);
    assert_int_equal(json_integer_value(json_object_get(reply_json(&r), "users")), 2);
    control_reply_cleanup(&r);

    /* A different configuration is refused, with a message that says what to do. */
    int c = connect_sock(f);
    assert_int_equal(do_attach(c, 1003, 0x9999ull, &r), 0);
    assert_false(r.ok);
    assert_int_equal(r.code, DLOTEL_ERR_CONFIG_MISMATCH);
    assert_non_null(strstr(r.error, "different configuration"));
    assert_non_null(strstr(r.error, "0000000000009999"));
    assert_non_null(strstr(r.error, "dlotel stop"));
    control_reply_cleanup(&r);

    /* Status: two users, their pids, the daemon's figures. */
    json_t *st = get_status(c, &r);
    assert_int_equal(json_integer_value(json_object_get(st, "users")), 2);
    json_t *clients = json_object_get(st, "clients");
    assert_int_equal(json_array_size(clients), 2);
    int64_t p0 = json_integer_value(json_array_get(clients, 0));
    int64_t p1 = json_integer_value(json_array_get(clients, 1));
    assert_true((p0 == 1001 && p1 == 1002) || (p0 == 1002 && p1 == 1001));
    assert_int_equal(json_integer_value(json_object_get(st, "pid")), getpid());
    assert_string_equal(json_string_value(json_object_get(st, "version")), DLOTEL_VERSION);
    assert_string_equal(json_string_value(json_object_get(st, "runtime_dir")), f->dir);
    assert_int_equal(json_integer_value(json_object_get(st, "queue_items")), 0);
    assert_true(json_is_null(json_object_get(st, "last_export_error")));
    /* A file exporter is not upstream: reachability is unknown. */
    assert_true(json_is_null(json_object_get(st, "upstream_reachable")));
    assert_int_equal(json_array_size(json_object_get(st, "exporters")), 1);
    control_reply_cleanup(&r);

    /* A process that goes away (its socket closes) stops counting. */
    close(a);
    wait_status_int(c, "users", 1);
    /* Detach counts down; the connection stays usable. */
    struct control_request q = {.op = CONTROL_OP_DETACH};
    assert_int_equal(control_client_call(b, &q, 5000, &r), 0);
    assert_true(r.ok);
    assert_int_equal(json_integer_value(json_object_get(reply_json(&r), "users")), 0);
    control_reply_cleanup(&r);
    assert_int_equal(status_int(b, "users"), 0);

    /* Flush with nothing queued answers at once. */
    q = (struct control_request){.op = CONTROL_OP_FLUSH, .timeout_ms = 1000};
    assert_int_equal(control_client_call(b, &q, 5000, &r), 0);
    assert_true(r.ok);
    control_reply_cleanup(&r);

    /* A malformed request gets an error and the connection stays. */
    struct buf bad;
    frame_of(&bad, "{\"op\":\"attach\"}");
    assert_int_equal(write(b, bad.data, bad.len), (ssize_t)bad.len);
    buf_cleanup(&bad);
    uint8_t hdr[4];
    assert_int_equal(recv(b, hdr, 4, MSG_WAITALL), 4);
    size_t n = (size_t)hdr[2] << 8 | hdr[3];
    char body[1024];
    assert_true(n < sizeof(body));
    assert_int_equal(recv(b, body, n, MSG_WAITALL), (ssize_t)n);
    body[n] = '\0';
    assert_non_null(strstr(body, "\"ok\":false"));
    assert_non_null(strstr(body, "bad request"));
    assert_int_equal(status_int(b, "users"), 0);

    /* A frame past the request limit closes the connection. */
    uint8_t big[4] = {0x00, 0x10, 0x00, 0x01};
    assert_int_equal(write(c, big, 4), 4);
    assert_int_equal(control_client_wait_closed(c, 5000), 0);
    close(c);

    /* Stop: answered, then the daemon is asked to stop, once. */
    q = (struct control_request){.op = CONTROL_OP_STOP};
    assert_int_equal(control_client_call(b, &q, 5000, &r), 0);
    assert_true(r.ok);
    control_reply_cleanup(&r);
    close(b);
}

static void test_server_users(void **state)
{
    (void)state;
    struct fixture f;
    fixture_init(&f, -1, false);
    fixture_run(&f, scenario_users);
    assert_int_equal(f.stops, 1);
    assert_non_null(strstr(f.stop_reason, "stop requested"));
    assert_int_equal(control_server_users(f.server), 0);
    fixture_cleanup(&f);
}

static void scenario_exit_when_unused(struct fixture *f)
{
    struct control_reply r;
    int a = connect_sock(f);
    assert_int_equal(do_attach(a, 2001, 0x1111222233334444ull, &r), 0);
    assert_true(r.ok);
    control_reply_cleanup(&r);
    /* With a user attached, no stop however long we wait past the grace. */
    usleep(300000);
    assert_int_equal(status_int(a, "users"), 1);
    close(a);
    /* The last user is gone: the daemon stops after the grace (100 ms). */
    uint64_t deadline = time_monotonic_nano() + 5000000000ull;
    while (__atomic_load_n(&f->stops, __ATOMIC_SEQ_CST) == 0) {
        assert_true(time_monotonic_nano() < deadline);
        usleep(10000);
    }
}

static void test_server_exit_when_unused(void **state)
{
    (void)state;
    struct fixture f;
    fixture_init(&f, 100, false);
    uint64_t t0 = time_monotonic_nano();
    fixture_run(&f, scenario_exit_when_unused);
    assert_int_equal(f.stops, 1);
    assert_non_null(strstr(f.stop_reason, "no process has been attached for 100 ms"));
    assert_true(time_monotonic_nano() - t0 < 5000000000ull);
    fixture_cleanup(&f);
}

static void scenario_flush_timeout(struct fixture *f)
{
    struct control_reply r;
    int a = connect_sock(f);
    /* Wait for the first failed send, so the status has something to say. */
    uint64_t deadline = time_monotonic_nano() + 10000000000ull;
    for (;;) {
        json_t *st = get_status(a, &r);
        bool seen = !json_is_null(json_object_get(st, "last_export_error"));
        if (seen) {
            assert_int_equal(json_integer_value(json_object_get(st, "accepted_items")), 512);
            assert_true(json_integer_value(json_object_get(st, "queue_items")) +
                            json_integer_value(json_object_get(st, "in_flight_batches")) >
                        0);
            assert_true(json_is_false(json_object_get(st, "upstream_reachable")));
            json_t *le = json_object_get(st, "last_export_error");
            assert_string_equal(json_string_value(json_object_get(le, "exporter")), "up");
            assert_string_equal(json_string_value(json_object_get(le, "signal")), "traces");
            assert_true(strlen(json_string_value(json_object_get(le, "message"))) > 0);
            control_reply_cleanup(&r);
            break;
        }
        control_reply_cleanup(&r);
        assert_true(time_monotonic_nano() < deadline);
        usleep(20000);
    }
    struct control_request q = {.op = CONTROL_OP_FLUSH, .timeout_ms = 300};
    uint64_t t0 = time_monotonic_nano();
    assert_int_equal(control_client_call(a, &q, 5000, &r), 0);
    uint64_t took_ms = (time_monotonic_nano() - t0) / 1000000u;
    assert_false(r.ok);
    assert_int_equal(r.code, DLOTEL_ERR_TIMEOUT);
    assert_non_null(strstr(r.error, "still queued or in flight"));
    assert_non_null(strstr(r.error, "last export error: up:"));
    assert_true(took_ms >= 250 && took_ms < 3000);
    control_reply_cleanup(&r);
    /* The next request on the same connection is answered in order. */
    assert_true(status_int(a, "accepted_items") == 512);
    close(a);
}

static void submitted(void *ud, int status, const char *detail)
{
    (void)detail;
    *(int *)ud = status;
}

static void test_server_flush_timeout(void **state)
{
    (void)state;
    struct fixture f;
    fixture_init(&f, -1, true);
    /* One real request from the OpenTelemetry JS SDK (512 spans). */
    char path[512];
    snprintf(path, sizeof(path), "%s/traces_512.pb", DLOTEL_PAYLOADS_DIR);
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    static uint8_t pb[1 << 20];
    size_t len = fread(pb, 1, sizeof(pb), fp);
    fclose(fp);
    struct otlp_counts counts;
    struct otlp_error oerr;
    assert_int_equal(otlp_scan(OTLP_TRACES, pb, len, &counts, &oerr), 0);
    assert_int_equal(counts.items, 512);
    int status = 1;
    pipeline_submit(f.pipeline, OTLP_TRACES, pb, len, &counts, submitted, &status);
    while (status == 1) {
        uv_run(&f.loop, UV_RUN_ONCE);
    }
    assert_int_equal(status, 0);
    fixture_run(&f, scenario_flush_timeout);
    assert_int_equal(f.stops, 0);
    fixture_cleanup(&f);
}

static void scenario_flush_file(struct fixture *f)
{
    struct control_reply r;
    int a = connect_sock(f);
    struct control_request q = {.op = CONTROL_OP_FLUSH, .timeout_ms = 2000};
    assert_int_equal(control_client_call(a, &q, 5000, &r), 0);
    assert_true(r.ok);
    control_reply_cleanup(&r);
    assert_int_equal(status_int(a, "sent_items"), 512);
    close(a);
}

static void test_server_flush_file(void **state)
{
    (void)state;
    struct fixture f;
    fixture_init(&f, -1, false);
    char path[512];
    snprintf(path, sizeof(path), "%s/traces_512.pb", DLOTEL_PAYLOADS_DIR);
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    static uint8_t pb[1 << 20];
    size_t len = fread(pb, 1, sizeof(pb), fp);
    fclose(fp);
    struct otlp_counts counts;
    struct otlp_error oerr;
    assert_int_equal(otlp_scan(OTLP_TRACES, pb, len, &counts, &oerr), 0);
    int status = 1;
    pipeline_submit(f.pipeline, OTLP_TRACES, pb, len, &counts, submitted, &status);
    while (status == 1) {
        uv_run(&f.loop, UV_RUN_ONCE);
    }
    fixture_run(&f, scenario_flush_file);
    struct stat st;
    assert_int_equal(stat(f.out_path, &st), 0);
    assert_true(st.st_size > 1000);
    fixture_cleanup(&f);
}

/* A socket file left by a dead daemon is replaced, and the new one is 0600. */
static void test_server_stale_socket(void **state)
{
    (void)state;
    char dir[64];
    make_tmpdir(dir, sizeof(dir));
    char sock[CONTROL_PATH_MAX];
    control_path(sock, sizeof(sock), dir, CONTROL_SOCKET_NAME);
    /* A real, dead socket: bound, then its owner closed it. */
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, sock, strlen(sock) + 1);
    assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(s);
    int fd;
    assert_int_equal(control_client_connect(sock, &fd), DLOTEL_ERR_NOT_FOUND);

    uv_loop_t loop;
    uv_loop_init(&loop);
    int lock_fd;
    char why[256];
    assert_int_equal(control_lock_acquire(dir, &lock_fd, why, sizeof(why)), 0);
    struct control_server_options so = {.dir = dir, .lock_fd = lock_fd, .exit_when_unused_ms = -1};
    struct control_server *srv;
    assert_int_equal(control_server_new(&srv, &loop, &so, why, sizeof(why)), 0);
    struct stat st;
    assert_int_equal(stat(sock, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(control_client_connect(sock, &fd), 0);
    close(fd);
    control_server_free(srv);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    rm_rf(dir);
}

int main(void)
{
    log_set_level(getenv("DLOTEL_TEST_DEBUG") != NULL ? LOG_LEVEL_DEBUG : LOG_LEVEL_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_codec),
        cmocka_unit_test(test_request_parse),
        cmocka_unit_test(test_request_roundtrip),
        cmocka_unit_test(test_reply_parse),
        cmocka_unit_test(test_hash),
        cmocka_unit_test(test_ready_roundtrip),
        cmocka_unit_test(test_runtime_dir),
        cmocka_unit_test(test_lock),
        cmocka_unit_test(test_server_users),
        cmocka_unit_test(test_server_exit_when_unused),
        cmocka_unit_test(test_server_flush_file),
        cmocka_unit_test(test_server_flush_timeout),
        cmocka_unit_test(test_server_stale_socket),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
