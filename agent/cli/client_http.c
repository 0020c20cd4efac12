/*
 * The client commands' HTTP: one libcurl easy handle, reused for every request of a command (the
 * smoke test makes dozens), so the connection is kept alive. A command line tool waits for its
 * answer anyway; the multi interface would buy nothing here.
 *
 * The token lives only in the curl_slist of headers; it is never in a message, and libcurl's
 * verbose mode is never turned on.
 */
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "dlotel.h"

struct client_http {
    CURL *curl;
    struct curl_slist *headers; /* Authorization, if any; Accept. */
    char *base;
    uint64_t timeout_ms;
    bool quiet;     /* No transport error lines (the smoke test's polls report their own). */
    struct buf url; /* Scratch for base + path + query. */
};

void client_http_set_quiet(struct client_http *h, bool quiet)
{
    h->quiet = quiet;
}

int client_http_new(struct client_http **out, const char *base, const char *token,
                    uint64_t timeout_ms)
{
    struct client_http *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        return DLOTEL_ERR_NOMEM;
    }
    int rc = DLOTEL_ERR_NOMEM;
    h->base = strdup(base);
    if (h->base == NULL) {
        goto fail;
    }
    buf_init(&h->url, CLIENT_URL_MAX * 4);
    struct curl_slist *l = curl_slist_append(NULL, "Accept: application/json");
    if (l == NULL) {
        goto fail;
    }
    h->headers = l;
    if (token != NULL && token[0] != '\0') {
        struct buf auth;
        buf_init(&auth, 64 * 1024);
        if (buf_printf(&auth, "Authorization: Bearer %s", token) != 0 ||
            buf_terminate(&auth) != 0) {
            buf_cleanup(&auth);
            goto fail;
        }
        l = curl_slist_append(h->headers, (const char *)auth.data);
        /* The copy in |auth| goes now; libcurl holds its own. */
        memset(auth.data, 0, auth.len);
        buf_cleanup(&auth);
        if (l == NULL) {
            goto fail;
        }
        h->headers = l;
    }
    h->curl = curl_easy_init();
    if (h->curl == NULL) {
        rc = DLOTEL_ERR_INTERNAL;
        goto fail;
    }
    h->timeout_ms = timeout_ms;
    *out = h;
    return 0;

fail:
    curl_slist_free_all(h->headers);
    buf_cleanup(&h->url);
    free(h->base);
    free(h);
    return rc;
}

void client_http_free(struct client_http *h)
{
    if (h == NULL) {
        return;
    }
    curl_easy_cleanup(h->curl);
    curl_slist_free_all(h->headers);
    buf_cleanup(&h->url);
    free(h->base);
    free(h);
}

const char *client_http_base(const struct client_http *h)
{
    return h->base;
}

struct sink_ctx {
    struct buf *body;
    bool too_large;
};

static size_t on_data(char *p, size_t size, size_t nmemb, void *userdata)
{
    struct sink_ctx *s = userdata;
    size_t n = size * nmemb;
    if (buf_append(s->body, p, n) != 0) {
        s->too_large = s->body->len + n > s->body->max;
        return 0; /* libcurl stops with CURLE_WRITE_ERROR */
    }
    return n;
}

void client_response_cleanup(struct client_response *r)
{
    buf_cleanup(&r->body);
    r->status = 0;
}

int client_http_request(struct client_http *h, const char *method, const char *path,
                        const char *query, const void *body, size_t len, const char *ctype,
                        struct client_response *r)
{
    r->status = 0;
    buf_init(&r->body, CLIENT_BODY_MAX);
    buf_reset(&h->url);
    int rc = buf_printf(&h->url, "%s%s%s%s", h->base, path, query != NULL && query[0] ? "?" : "",
                        query != NULL ? query : "");
    if (rc == 0) {
        rc = buf_terminate(&h->url);
    }
    if (rc != 0) {
        fprintf(stderr, "dlotel: the request URL is too long\n");
        return EXIT_RUNTIME;
    }
    const char *url = (const char *)h->url.data;

    struct curl_slist *hdrs = h->headers;
    struct curl_slist *extra = NULL;
    char ct[128];
    if (ctype != NULL) {
        snprintf(ct, sizeof(ct), "Content-Type: %s", ctype);
        /* A private copy of the list, so the shared one stays as made. */
        for (struct curl_slist *p = h->headers; p != NULL; p = p->next) {
            struct curl_slist *n = curl_slist_append(extra, p->data);
            if (n == NULL) {
                curl_slist_free_all(extra);
                return EXIT_RUNTIME;
            }
            extra = n;
        }
        struct curl_slist *n = curl_slist_append(extra, ct);
        if (n == NULL) {
            curl_slist_free_all(extra);
            return EXIT_RUNTIME;
        }
        hdrs = extra = n;
    }

    struct sink_ctx sc = {.body = &r->body};
    char errbuf[CURL_ERROR_SIZE] = "";
    CURL *c = h->curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &sc);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)h->timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(h->timeout_ms < 10000 ? h->timeout_ms : 10000));
    curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(c, CURLOPT_USERAGENT, "dlotel/" DLOTEL_VERSION);
    /* A redirect would carry the bearer token elsewhere; the API never redirects. */
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body != NULL ? body : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body != NULL ? len : 0));
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    }
    CURLcode cc = curl_easy_perform(c);
    curl_slist_free_all(extra);
    if (cc == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
        return 0;
    }
    const char *detail = errbuf[0] != '\0' ? errbuf : curl_easy_strerror(cc);
    /* A timeout before the connection was made counts as "cannot connect" too. */
    curl_off_t connected = 0;
    curl_easy_getinfo(c, CURLINFO_CONNECT_TIME_T, &connected);
    if (cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST ||
        cc == CURLE_COULDNT_RESOLVE_PROXY || (cc == CURLE_OPERATION_TIMEDOUT && connected == 0)) {
        if (h->quiet) {
            r->status = 0;
            return EXIT_CONNECT;
        }
        fprintf(stderr,
                "dlotel: cannot connect to %s: %s\n"
                "dlotel: is the API running there? Start one with `dlotel serve`, or point --url "
                "or DATALAYER_OTEL_URL at it\n",
                h->base, detail);
        r->status = 0;
        return EXIT_CONNECT;
    }
    if (h->quiet) {
        /* Nothing. */
    } else if (sc.too_large) {
        fprintf(stderr, "dlotel: %s %s: the answer is larger than %u MiB\n", method, url,
                CLIENT_BODY_MAX >> 20);
    } else {
        fprintf(stderr, "dlotel: %s %s: %s\n", method, url, detail);
    }
    r->status = 0;
    return EXIT_RUNTIME;
}

/*
 * Prints |s| on one line: runs of whitespace and control characters become one space. DuckDB's
 * messages span lines (the SQL and a caret), and a message may echo what a user typed.
 */
static void put_one_line(FILE *f, const char *s)
{
    bool space = false;
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p <= ' ' || *p == 0x7f) {
            space = true;
            continue;
        }
        if (space && p != (const unsigned char *)s) {
            fputc(' ', f);
        }
        space = false;
        fputc(*p, f);
    }
}

/* The server's {"error": "..."} sentence, or NULL. |*j| owns it. */
static const char *error_of(const struct client_response *r, json_t **j)
{
    *j = json_loadb((const char *)r->body.data, r->body.len, 0, NULL);
    const char *e = json_string_value(json_object_get(*j, "error"));
    if (e == NULL) {
        e = json_string_value(json_object_get(*j, "message"));
    }
    return e;
}

int client_response_check(const struct client_http *h, const char *path,
                          const struct client_response *r)
{
    if (r->status >= 200 && r->status < 300) {
        return 0;
    }
    json_t *j = NULL;
    const char *e = error_of(r, &j);
    int code = (r->status == 401 || r->status == 403) ? EXIT_AUTH : EXIT_RUNTIME;
    fputs("dlotel: ", stderr);
    if (code == EXIT_AUTH) {
        fprintf(stderr, "%s: %s",
                r->status == 401 ? "authentication refused (401): set DATALAYER_API_KEY or --token"
                                 : "forbidden (403)",
                path);
        if (e != NULL) {
            fputs(": ", stderr);
            put_one_line(stderr, e);
        }
    } else if (e != NULL) {
        put_one_line(stderr, e);
        fprintf(stderr, " (HTTP %ld)", r->status);
    } else {
        fprintf(stderr, "%s%s answered HTTP %ld", h->base, path, r->status);
    }
    fputc('\n', stderr);
    json_decref(j);
    return code;
}

json_t *client_response_json(const struct client_response *r)
{
    json_error_t err;
    json_t *j = json_loadb((const char *)r->body.data, r->body.len, 0, &err);
    if (j == NULL || !json_is_object(j)) {
        fprintf(stderr, "dlotel: the server's answer is not a JSON object (%s)\n",
                j == NULL ? err.text : "another JSON value");
        json_decref(j);
        return NULL;
    }
    return j;
}

int client_call(struct client_http *h, const char *method, const char *path, const char *query,
                const char *body, bool json, json_t **out)
{
    struct client_response r;
    *out = NULL;
    int rc = client_http_request(h, method, path, query, body, body != NULL ? strlen(body) : 0,
                                 body != NULL ? "application/json" : NULL, &r);
    if (rc != 0) {
        client_response_cleanup(&r);
        return rc;
    }
    if (json && r.body.len > 0) {
        rc = client_write_stdout(&r.body);
    }
    int check = client_response_check(h, path, &r);
    if (check != 0) {
        rc = check;
    } else if (rc == 0 && !json) {
        *out = client_response_json(&r);
        if (*out == NULL) {
            rc = EXIT_RUNTIME;
        }
    }
    client_response_cleanup(&r);
    return rc;
}
