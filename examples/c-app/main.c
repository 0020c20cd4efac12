/*
 * A C program that embeds dlotel: it starts the agent daemon (or attaches to the one already
 * running for this user), sends one span to it as OTLP/JSON over HTTP, as an OpenTelemetry SDK
 * would, flushes, prints the daemon's status and detaches.
 *
 * Build against an installed libdlotel:
 *
 *     cc -o c-app main.c $(pkg-config --cflags --libs libdlotel)
 *
 * Run with an upstream (or DATALAYER_RUN_URL + DATALAYER_API_KEY, or DATALAYER_OTEL_AGENT_SINK):
 *
 *     DATALAYER_OTLP_URL=https://collector.example.com ./c-app
 *
 * Options: --stop-daemon stops the daemon at the end instead of only detaching.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <dlotel.h>

/* Posts |body| to 127.0.0.1:|port|/v1/traces and returns the HTTP status, or -1. */
static int post_traces(int port, const char *body)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        return -1;
    }
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n",
                     strlen(body));
    if (write(fd, head, (size_t)n) != n || write(fd, body, strlen(body)) != (ssize_t)strlen(body)) {
        close(fd);
        return -1;
    }
    char resp[512];
    ssize_t got = read(fd, resp, sizeof(resp) - 1);
    close(fd);
    if (got < 12) {
        return -1;
    }
    resp[got] = '\0';
    /* "HTTP/1.1 200 OK": the status is the second word. */
    return (int)strtol(resp + 9, NULL, 10);
}

int main(int argc, char **argv)
{
    int stop_flags = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--stop-daemon") == 0) {
            stop_flags = DLOTEL_STOP_DAEMON;
        } else {
            fprintf(stderr, "usage: %s [--stop-daemon]\n", argv[0]);
            return 2;
        }
    }

    dlotel_config *cfg;
    if (dlotel_config_new_from_env(&cfg) != 0) {
        fprintf(stderr, "c-app: out of memory\n");
        return 1;
    }
    dlotel_agent *agent;
    int rv = dlotel_agent_start(&agent, cfg);
    dlotel_config_free(cfg);
    if (rv == DLOTEL_ERR_DISABLED) {
        printf("dlotel is disabled; running without it\n");
        return 0;
    }
    if (rv != 0) {
        fprintf(stderr, "c-app: cannot start dlotel (%s):\n%s\n", dlotel_strerror(rv),
                dlotel_last_error());
        return 1;
    }
    int http_port = dlotel_agent_port(agent, DLOTEL_PORT_HTTP);
    printf("dlotel %s daemon pid %d (%s), OTLP/HTTP on port %d\n", dlotel_version(),
           dlotel_agent_daemon_pid(agent), dlotel_agent_spawned(agent) ? "started" : "attached",
           http_port);

    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    unsigned long long t0 =
        (unsigned long long)now.tv_sec * 1000000000ull + (unsigned long long)now.tv_nsec;
    char body[1024];
    snprintf(body, sizeof(body),
             "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\","
             "\"value\":{\"stringValue\":\"dlotel-example-c\"}}]},\"scopeSpans\":[{\"scope\":"
             "{\"name\":\"c-app\"},\"spans\":[{\"traceId\":\"5b8efff798038103d269b633813fc60c\","
             "\"spanId\":\"eee19b7ec3c1b174\",\"name\":\"hello-from-c\",\"kind\":1,"
             "\"startTimeUnixNano\":\"%llu\",\"endTimeUnixNano\":\"%llu\"}]}]}]}",
             t0, t0 + 1000000ull);
    int status = post_traces(http_port, body);
    printf("POST /v1/traces: HTTP %d\n", status);

    rv = dlotel_agent_flush(agent, 10000);
    if (rv != 0) {
        fprintf(stderr, "c-app: flush: %s: %s\n", dlotel_strerror(rv), dlotel_last_error());
    }
    char *json;
    if (dlotel_agent_status(agent, &json) == 0) {
        printf("status: %s\n", json);
        dlotel_free(json);
    }
    int stop_rv = dlotel_agent_stop(agent, (unsigned)stop_flags);
    if (stop_rv != 0) {
        fprintf(stderr, "c-app: stop: %s: %s\n", dlotel_strerror(stop_rv), dlotel_last_error());
    }
    dlotel_agent_free(agent);
    return status == 200 && rv == 0 && stop_rv == 0 ? 0 : 1;
}
