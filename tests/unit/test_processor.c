/*
 * Unit tests for agent/processor: patterns, the chain's configuration errors, and each processor
 * kind on requests made from OTLP/JSON with the real codec and on the OpenTelemetry JS SDK's own
 * requests (DLOTEL_PAYLOADS_DIR).
 *
 * `test_processor --bench [N]` measures the decode path instead: items/s through an empty chain
 * and through one attributes processor, against the scanner alone (docs/processors.md).
 * `test_processor --bench-loop [N]` measures how long the pipeline's loop is blocked per request
 * with the chain run on the loop (as before) and on libuv's thread pool (as now).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <jansson.h>
#include <uv.h>

#include "config/config.h"
#include "core/arena.h"
#include "core/buf.h"
#include "dlotel.h"
#include "exporter/exporter.h"
#include "otlp/otlp.h"
#include "pipeline/pipeline.h"
#include "processor/pattern.h"
#include "processor/processor.h"

/* ---- helpers ------------------------------------------------------------------------------ */

static uint8_t *read_payload(const char *name, size_t *len)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", DLOTEL_PAYLOADS_DIR, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fail_msg("cannot open %s", path);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *d = malloc((size_t)n + 1);
    assert_non_null(d);
    assert_int_equal(fread(d, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return d;
}

static struct processor_chain *chain(enum otlp_signal s, const char *json)
{
    struct processor_chain *c = NULL;
    char why[512] = "";
    int rc = processor_chain_new(&c, s, json, "processors_x", why, sizeof(why));
    if (rc != 0) {
        fail_msg("chain %s: %s", json, why);
    }
    return c;
}

/* Expects a configuration error whose message contains |needle|. */
static void bad_chain(enum otlp_signal s, const char *json, const char *needle)
{
    struct processor_chain *c = (struct processor_chain *)(uintptr_t)0x1;
    char why[512] = "";
    int rc = processor_chain_new(&c, s, json, "processors_traces", why, sizeof(why));
    assert_int_equal(rc, DLOTEL_ERR_CONFIG);
    assert_ptr_equal(c, (struct processor_chain *)(uintptr_t)0x1);
    if (strstr(why, needle) == NULL) {
        fail_msg("error for %s is '%s', expected it to contain '%s'", json, why, needle);
    }
}

/* Runs |c| on the OTLP/JSON |in| and returns the result as parsed OTLP/JSON. */
static json_t *run_json(struct processor_chain *c, const char *in, struct otlp_counts *counts)
{
    enum otlp_signal s = processor_chain_signal(c);
    struct arena a;
    arena_init(&a, 64u << 20);
    struct buf pb, out, js;
    buf_init(&pb, 64u << 20);
    buf_init(&out, 64u << 20);
    buf_init(&js, 64u << 20);
    char err[256];
    assert_int_equal(otlp_json_to_pb(s, in, strlen(in), &a, &pb, err, sizeof(err)), 0);
    arena_reset(&a);
    assert_int_equal(processor_chain_run(c, pb.data, pb.len, &out, counts), 0);
    /* The output is a valid request whose counts match what the chain said. */
    struct otlp_counts check;
    assert_int_equal(otlp_scan(s, out.data, out.len, &check, NULL), 0);
    assert_int_equal(check.items, counts->items);
    assert_int_equal(otlp_pb_to_json(s, out.data, out.len, &a, &js), 0);
    assert_int_equal(buf_terminate(&js), 0);
    json_t *root = json_loads((const char *)js.data, 0, NULL);
    assert_non_null(root);
    buf_cleanup(&pb);
    buf_cleanup(&out);
    buf_cleanup(&js);
    arena_cleanup(&a);
    return root;
}

/* The string value of attribute |key| in the array |attrs|, or NULL. */
static const char *attr(json_t *attrs, const char *key)
{
    size_t i;
    json_t *kv;
    json_array_foreach(attrs, i, kv)
    {
        if (strcmp(json_string_value(json_object_get(kv, "key")), key) == 0) {
            json_t *v = json_object_get(kv, "value");
            json_t *sv = json_object_get(v, "stringValue");
            if (sv != NULL) {
                return json_string_value(sv);
            }
            json_t *iv = json_object_get(v, "intValue");
            return iv != NULL ? json_string_value(iv) : "<other>";
        }
    }
    return NULL;
}

static json_t *span_at(json_t *root, size_t r, size_t q, size_t i)
{
    json_t *rs = json_array_get(json_object_get(root, "resourceSpans"), r);
    json_t *ss = json_array_get(json_object_get(rs, "scopeSpans"), q);
    return json_array_get(json_object_get(ss, "spans"), i);
}

#define TID_A "0af7651916cd43dd8448eb211c80319c"
#define TID_B "4bf92f3577b34da6a3ce929d0e0e4736"

/* Two traces: A is a /healthz request with a DB child span; B is an API call. */
static const char TWO_TRACES[] =
    "{\"resourceSpans\":[{\"resource\":{\"attributes\":["
    "{\"key\":\"service.name\",\"value\":{\"stringValue\":\"shop\"}}]},"
    "\"scopeSpans\":[{\"scope\":{\"name\":\"t\"},\"spans\":["
    "{\"traceId\":\"" TID_A "\",\"spanId\":\"00f067aa0ba902b7\",\"name\":\"GET /healthz\","
    "\"attributes\":[{\"key\":\"http.route\",\"value\":{\"stringValue\":\"/healthz\"}}]},"
    "{\"traceId\":\"" TID_A "\",\"spanId\":\"00f067aa0ba902b8\",\"parentSpanId\":"
    "\"00f067aa0ba902b7\",\"name\":\"SELECT 1\",\"attributes\":[]},"
    "{\"traceId\":\"" TID_B "\",\"spanId\":\"00f067aa0ba902b9\",\"name\":\"GET /api/orders\","
    "\"attributes\":[{\"key\":\"url.path\",\"value\":{\"stringValue\":\"/api/orders?x=1\"}},"
    "{\"key\":\"password\",\"value\":{\"stringValue\":\"hunter2\"}},"
    "{\"key\":\"card\",\"value\":{\"stringValue\":\"4111 1111 1111 1111\"}}],"
    "\"events\":[{\"name\":\"e\",\"attributes\":[{\"key\":\"password\",\"value\":"
    "{\"stringValue\":\"x\"}}]}]}"
    "]}]}]}";

/* ---- patterns ----------------------------------------------------------------------------- */

static void test_patterns(void **state)
{
    (void)state;
    struct pattern p;
    char why[256];
    assert_int_equal(pattern_compile(&p, "/health", 7, why, sizeof(why)), 0);
    assert_int_equal(p.kind, PATTERN_EXACT);
    assert_true(pattern_match(&p, "/health", 7));
    assert_false(pattern_match(&p, "/healthz", 8));
    pattern_cleanup(&p);

    assert_int_equal(pattern_compile(&p, "/api/*", 6, why, sizeof(why)), 0);
    assert_int_equal(p.kind, PATTERN_PREFIX);
    assert_true(pattern_match(&p, "/api/x", 6));
    assert_true(pattern_match(&p, "/api/", 5));
    assert_false(pattern_match(&p, "/apix", 5));
    pattern_cleanup(&p);

    assert_int_equal(pattern_compile(&p, "^/api/v[0-9]+/.*", 16, why, sizeof(why)), 0);
    assert_int_equal(p.kind, PATTERN_REGEX);
    assert_true(pattern_match(&p, "/api/v2/users", 13));
    assert_false(pattern_match(&p, "/api/vx/users", 13));
    pattern_cleanup(&p);

    /* "re:" searches anywhere. */
    assert_int_equal(pattern_compile(&p, "re:[0-9]{4} ?[0-9]{4}", 21, why, sizeof(why)), 0);
    assert_true(pattern_match(&p, "card 4111 1111 end", 18));
    pattern_cleanup(&p);

    assert_int_equal(pattern_compile(&p, "^(", 2, why, sizeof(why)), DLOTEL_ERR_CONFIG);
    assert_non_null(strstr(why, "bad regular expression"));
    assert_int_equal(pattern_compile(&p, "", 0, why, sizeof(why)), DLOTEL_ERR_CONFIG);

    /* The length limit, at its boundary. */
    char big[PATTERN_MAX_LEN + 2];
    memset(big, 'a', sizeof(big));
    assert_int_equal(pattern_compile(&p, big, PATTERN_MAX_LEN, why, sizeof(why)), 0);
    assert_true(pattern_match(&p, big, PATTERN_MAX_LEN));
    pattern_cleanup(&p);
    assert_int_equal(pattern_compile(&p, big, PATTERN_MAX_LEN + 1, why, sizeof(why)),
                     DLOTEL_ERR_CONFIG);

    /* Lists: comma-separated, blanks skipped, at most PATTERN_MAX_LIST. */
    struct pattern_list l = {0};
    assert_int_equal(pattern_list_add_csv(&l, " /a , ,/b*", why, sizeof(why)), 0);
    assert_int_equal(l.n, 2);
    assert_true(pattern_list_match(&l, "/bc", 3));
    assert_false(pattern_list_match(&l, "/c", 2));
    pattern_list_cleanup(&l);
    char csv[PATTERN_MAX_LIST * 4 + 8] = "";
    for (size_t i = 0, used = 0; i < PATTERN_MAX_LIST; i++) {
        used += (size_t)snprintf(csv + used, sizeof(csv) - used, "/x,");
    }
    assert_int_equal(pattern_list_add_csv(&l, csv, why, sizeof(why)), 0);
    assert_int_equal(l.n, PATTERN_MAX_LIST);
    assert_int_equal(pattern_list_add_csv(&l, "/y", why, sizeof(why)), DLOTEL_ERR_CONFIG);
    assert_int_equal(l.n, PATTERN_MAX_LIST);
    pattern_list_cleanup(&l);
}

/* ---- configuration ------------------------------------------------------------------------- */

static void test_config_errors(void **state)
{
    (void)state;
    bad_chain(OTLP_TRACES, "[{\"kind\":\"filtr\"}]",
              "processors_traces[0].kind: 'filtr' is not a processor kind");
    bad_chain(OTLP_TRACES, "[{\"kind\":\"filtr\"}]", "did you mean 'filter'");
    bad_chain(OTLP_TRACES, "[{\"ratio\":0.5}]", "processors_traces[0].kind: missing");
    bad_chain(OTLP_TRACES, "[{\"kind\":\"filter\"},{\"kind\":\"filter\",\"exclude_urls\":\"^(\"}]",
              "processors_traces[1].exclude_urls: bad regular expression '^('");
    bad_chain(OTLP_TRACES, "[{\"kind\":\"sample\",\"ratio\":1.5}]",
              "processors_traces[0].ratio: '1.5' is not a number from 0 to 1");
    bad_chain(OTLP_TRACES, "[{\"kind\":\"sample\",\"ratio\":\"half\"}]",
              "processors_traces[0].ratio: 'half' is not a number");
    bad_chain(OTLP_TRACES, "[{\"kind\":\"sample\"}]", "processors_traces[0].ratio: required");
    bad_chain(OTLP_METRICS, "[{\"kind\":\"sample\",\"ratio\":0.5}]", "not metrics");
    bad_chain(OTLP_TRACES, "[{\"kind\":\"sample\",\"rato\":0.5}]",
              "processors_traces[0].rato: unknown key for a sampler (did you mean 'ratio'?)");
    bad_chain(OTLP_TRACES,
              "[{\"kind\":\"attributes\",\"actions\":[{\"key\":\"a\",\"action\":\"upsrt\","
              "\"value\":\"1\"}]}]",
              "actions[0]: action must be insert, update, upsert, delete or hash (did you mean "
              "'upsert'?)");
    bad_chain(OTLP_TRACES,
              "[{\"kind\":\"attributes\",\"actions\":[{\"key\":\"a\",\"action\":\"insert\"}]}]",
              "value is required for insert");
    bad_chain(OTLP_TRACES,
              "[{\"kind\":\"attributes\",\"targets\":[\"log\"],\"redact_keys\":\"x\"}]",
              "'log' is not an attribute set of traces");
    bad_chain(OTLP_LOGS, "[{\"kind\":\"filter\",\"include_urls\":\"/a\"}]", "traces only");
    bad_chain(OTLP_TRACES, "[{\"kind\":\"limits\",\"max_value_length\":0}]",
              "processors_traces[0].max_value_length: '0' is not a whole number from 1");
    bad_chain(OTLP_TRACES, "[{\"kind\":\"limits\"}]", "needs max_value_length or max_attributes");
    bad_chain(OTLP_LOGS, "[{\"kind\":\"filter\",\"drop\":[{\"severity_below\":\"LOUD\"}]}]",
              "severity_below 'LOUD'");
    bad_chain(OTLP_TRACES, "{\"kind\":\"filter\"}", "processors_traces: expected a list");
    bad_chain(OTLP_TRACES, "[{\"kind\":", "processors_traces: not valid JSON");
    /* The chain length limit, at its boundary. */
    char json[PROCESSOR_MAX_CHAIN * 24 + 64];
    size_t used = (size_t)snprintf(json, sizeof(json), "[");
    for (int i = 0; i < PROCESSOR_MAX_CHAIN; i++) {
        used += (size_t)snprintf(json + used, sizeof(json) - used, "%s{\"kind\":\"filter\"}",
                                 i > 0 ? "," : "");
    }
    snprintf(json + used, sizeof(json) - used, "]");
    struct processor_chain *c = chain(OTLP_TRACES, json);
    processor_chain_free(c);
    snprintf(json + used, sizeof(json) - used, ",{\"kind\":\"filter\"}]");
    bad_chain(OTLP_TRACES, json, "more than 16 processors");
}

/* The YAML shape, the JSON shape of the environment, printing and reloading. */
static void test_config_yaml(void **state)
{
    (void)state;
    static const char yaml[] = "processors_traces:\n"
                               "  - kind: filter\n"
                               "    exclude_urls: \"/health,/api/internal/*\"\n"
                               "  - kind: sample\n"
                               "    ratio: 0.25\n"
                               "  - kind: attributes\n"
                               "    actions:\n"
                               "      - {key: team, action: upsert, value: 42}\n"
                               "      - {key: note, action: insert, value: \"42\"}\n"
                               "      - {key: cost, action: insert, value: '$$5'}\n"
                               "processors_logs: [{kind: limits, max_value_length: 100}]\n";
    struct config *cfg;
    struct config_errors errs;
    config_errors_init(&errs);
    assert_int_equal(config_new(&cfg), 0);
    assert_int_equal(config_load_yaml_string(cfg, yaml, sizeof(yaml) - 1, "t.yaml", &errs), 0);
    assert_non_null(cfg->processors_traces);
    assert_string_equal(cfg->processors_traces,
                        "[{\"kind\":\"filter\",\"exclude_urls\":\"/health,/api/internal/*\"},"
                        "{\"kind\":\"sample\",\"ratio\":0.25},{\"kind\":\"attributes\","
                        "\"actions\":[{\"key\":\"team\",\"action\":\"upsert\",\"value\":42},"
                        "{\"key\":\"note\",\"action\":\"insert\",\"value\":\"42\"},"
                        "{\"key\":\"cost\",\"action\":\"insert\",\"value\":\"$5\"}]}]");
    assert_null(cfg->processors_metrics);
    struct processor_chain *c = chain(OTLP_TRACES, cfg->processors_traces);
    processor_chain_free(c);
    c = chain(OTLP_LOGS, cfg->processors_logs);
    processor_chain_free(c);

    /* The environment's JSON wins over the file. */
    assert_int_equal(config_set(cfg, "processors_metrics",
                                "[{\"kind\":\"resource\",\"user_uid\":\"u1\"}]", CONFIG_SOURCE_ENV,
                                &errs),
                     0);
    assert_string_equal(cfg->processors_metrics, "[{\"kind\":\"resource\",\"user_uid\":\"u1\"}]");

    /* Printed and loaded again: the same configuration. */
    struct buf out;
    buf_init(&out, 1u << 20);
    assert_int_equal(config_print(cfg, &out, false), 0);
    buf_terminate(&out);
    struct config *again;
    assert_int_equal(config_new(&again), 0);
    assert_int_equal(
        config_load_yaml_string(again, (const char *)out.data, out.len, "printed", &errs), 0);
    assert_string_equal(again->processors_traces, cfg->processors_traces);
    assert_string_equal(again->processors_metrics, cfg->processors_metrics);
    assert_string_equal(again->processors_logs, cfg->processors_logs);
    buf_cleanup(&out);
    config_free(again);

    /* Shape errors name the key. */
    assert_int_equal(
        config_set(cfg, "processors_logs", "{\"kind\":\"x\"}", CONFIG_SOURCE_ENV, &errs),
        DLOTEL_ERR_CONFIG);
    assert_int_equal(
        config_set(cfg, "processors_logs", "[{\"ratio\":1}]", CONFIG_SOURCE_ENV, &errs),
        DLOTEL_ERR_CONFIG);
    assert_int_equal(config_set(cfg, "processors_logz", "[]", CONFIG_SOURCE_ENV, &errs),
                     DLOTEL_ERR_CONFIG);
    struct buf text;
    buf_init(&text, 1u << 20);
    config_errors_format(&errs, &text, true);
    buf_terminate(&text);
    assert_non_null(
        strstr((const char *)text.data, "processors_logs: expected a list of processors"));
    assert_non_null(
        strstr((const char *)text.data, "processors_logs: item 0: expected a processor"));
    assert_non_null(strstr((const char *)text.data, "did you mean 'processors_logs'"));
    buf_cleanup(&text);
    config_free(cfg);
    config_errors_cleanup(&errs);
}

/* ---- filter -------------------------------------------------------------------------------- */

static void test_filter_urls(void **state)
{
    (void)state;
    /* The default exclude list drops the /healthz trace, its DB child span included. */
    struct processor_chain *c = chain(OTLP_TRACES, "[{\"kind\":\"filter\"}]");
    struct otlp_counts n;
    json_t *root = run_json(c, TWO_TRACES, &n);
    assert_int_equal(n.items, 1);
    assert_string_equal(json_string_value(json_object_get(span_at(root, 0, 0, 0), "name")),
                        "GET /api/orders");
    json_decref(root);
    struct processor_stats st;
    processor_chain_get_stats(c, &st);
    assert_int_equal(st.filtered_items, 2);
    assert_int_equal(st.items_in, 3);
    assert_int_equal(st.items_out, 1);
    processor_chain_free(c);

    /* An empty exclude list clears the defaults. */
    c = chain(OTLP_TRACES, "[{\"kind\":\"filter\",\"exclude_urls\":\"\"}]");
    root = run_json(c, TWO_TRACES, &n);
    assert_int_equal(n.items, 3);
    json_decref(root);
    processor_chain_free(c);

    /* An include list wins over the exclude list; the query is not part of the path. */
    c = chain(
        OTLP_TRACES,
        "[{\"kind\":\"filter\",\"include_urls\":\"/healthz\",\"exclude_urls\":\"/healthz\"}]");
    root = run_json(c, TWO_TRACES, &n);
    assert_int_equal(n.items, 2);
    json_decref(root);
    processor_chain_free(c);
    c = chain(OTLP_TRACES, "[{\"kind\":\"filter\",\"include_urls\":[\"^/api/.*$\"]}]");
    root = run_json(c, TWO_TRACES, &n);
    assert_int_equal(n.items, 1);
    json_decref(root);
    processor_chain_free(c);

    /* Every item dropped: an empty request with zero items. */
    c = chain(OTLP_TRACES, "[{\"kind\":\"filter\",\"exclude_urls\":\"/healthz,/api/*\"}]");
    root = run_json(c, TWO_TRACES, &n);
    assert_int_equal(n.items, 0);
    assert_int_equal(n.resources, 0);
    json_decref(root);
    processor_chain_free(c);
}

static void test_filter_conditions(void **state)
{
    (void)state;
    struct processor_chain *c =
        chain(OTLP_TRACES,
              "[{\"kind\":\"filter\",\"exclude_urls\":\"\",\"drop\":[{\"name\":\"SELECT*\"},"
              "{\"service\":\"other\"},{\"attribute\":\"password\",\"value\":\"hunter2\"}]}]");
    struct otlp_counts n;
    json_t *root = run_json(c, TWO_TRACES, &n);
    assert_int_equal(n.items, 1);
    assert_string_equal(json_string_value(json_object_get(span_at(root, 0, 0, 0), "name")),
                        "GET /healthz");
    json_decref(root);
    processor_chain_free(c);

    /* Logs by severity and by body. */
    static const char logs[] =
        "{\"resourceLogs\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":"
        "{\"stringValue\":\"api\"}}]},\"scopeLogs\":[{\"logRecords\":["
        "{\"severityNumber\":5,\"body\":{\"stringValue\":\"debug stuff\"}},"
        "{\"severityNumber\":9,\"body\":{\"stringValue\":\"GET /healthz 200\"}},"
        "{\"severityNumber\":17,\"body\":{\"stringValue\":\"boom\"}}]}]}]}";
    c = chain(OTLP_LOGS, "[{\"kind\":\"filter\",\"drop\":[{\"severity_below\":\"INFO\"},"
                         "{\"name\":\"re:/healthz\"}]}]");
    root = run_json(c, logs, &n);
    assert_int_equal(n.items, 1);
    json_decref(root);
    processor_chain_free(c);
}

/* ---- sampling ------------------------------------------------------------------------------ */

static void test_sample_decision(void **state)
{
    (void)state;
    assert_int_equal(processor_sample_threshold(1.0), 0);
    assert_int_equal(processor_sample_threshold(0.0), (uint64_t)1 << 56);
    assert_int_equal(processor_sample_threshold(0.5), (uint64_t)1 << 55);
    uint8_t id[16] = {0};
    /* R is the last 7 bytes: 0x80000000000000 is exactly T at 0.5: kept (R >= T). */
    id[9] = 0x80;
    assert_true(processor_sample_keep(id, 16, processor_sample_threshold(0.5)));
    id[9] = 0x7f;
    memset(id + 10, 0xff, 6);
    assert_false(processor_sample_keep(id, 16, processor_sample_threshold(0.5)));
    /* The high bytes do not matter: only the random lower 56 bits do. */
    memset(id, 0xff, 9);
    assert_false(processor_sample_keep(id, 16, processor_sample_threshold(0.5)));
    assert_true(processor_sample_keep(id, 0, processor_sample_threshold(0.0)));
}

static void test_sample_payload(void **state)
{
    (void)state;
    size_t len;
    uint8_t *pb = read_payload("traces_512.pb", &len);
    struct processor_chain *c = chain(OTLP_TRACES, "[{\"kind\":\"sample\",\"ratio\":\"0.25\"}]");
    struct buf out;
    buf_init(&out, 64u << 20);
    struct otlp_counts n;
    assert_int_equal(processor_chain_run(c, pb, len, &out, &n), 0);
    /* The same decision for every span of a trace: the kept traces are whole. */
    struct arena a;
    arena_init(&a, 64u << 20);
    struct buf js;
    buf_init(&js, 64u << 20);
    assert_int_equal(otlp_pb_to_json(OTLP_TRACES, pb, len, &a, &js), 0);
    buf_terminate(&js);
    json_t *in = json_loads((const char *)js.data, 0, NULL);
    buf_reset(&js);
    arena_reset(&a);
    assert_int_equal(otlp_pb_to_json(OTLP_TRACES, out.data, out.len, &a, &js), 0);
    buf_terminate(&js);
    json_t *outj = json_loads((const char *)js.data, 0, NULL);
    json_t *per_in = json_object(), *per_out = json_object();
    json_t *pair[2] = {in, outj}, *maps[2] = {per_in, per_out};
    for (int k = 0; k < 2; k++) {
        size_t i, j, m;
        json_t *rs, *ss, *sp;
        json_array_foreach(json_object_get(pair[k], "resourceSpans"), i, rs)
        {
            json_array_foreach(json_object_get(rs, "scopeSpans"), j, ss)
            {
                json_array_foreach(json_object_get(ss, "spans"), m, sp)
                {
                    const char *t = json_string_value(json_object_get(sp, "traceId"));
                    json_int_t have = json_integer_value(json_object_get(maps[k], t));
                    json_object_set_new(maps[k], t, json_integer(have + 1));
                }
            }
        }
    }
    size_t kept_traces = 0;
    const char *t;
    json_t *cnt;
    json_object_foreach(per_out, t, cnt)
    {
        assert_int_equal(json_integer_value(cnt), json_integer_value(json_object_get(per_in, t)));
        uint8_t id[16];
        for (int b = 0; b < 16; b++) {
            unsigned v;
            sscanf(t + 2 * b, "%2x", &v);
            id[b] = (uint8_t)v;
        }
        assert_true(processor_sample_keep(id, 16, processor_sample_threshold(0.25)));
        kept_traces++;
    }
    /* 32 traces with random ids: about 8 kept; the exact set is fixed by the ids. */
    assert_true(kept_traces > 0 && kept_traces < 32);
    assert_int_equal(json_object_size(per_in), 32);
    struct processor_stats st;
    processor_chain_get_stats(c, &st);
    assert_int_equal(st.items_out + st.sampled_out_items, 512);
    assert_int_equal(st.items_out, n.items);
    json_decref(in);
    json_decref(outj);
    json_decref(per_in);
    json_decref(per_out);
    buf_cleanup(&js);
    buf_cleanup(&out);
    arena_cleanup(&a);
    processor_chain_free(c);
    free(pb);
}

/* ---- attributes ---------------------------------------------------------------------------- */

static void test_attributes(void **state)
{
    (void)state;
    struct processor_chain *c = chain(
        OTLP_TRACES,
        "[{\"kind\":\"attributes\",\"targets\":[\"span\",\"event\",\"resource\"],\"actions\":["
        "{\"key\":\"env\",\"action\":\"insert\",\"value\":\"prod\"},"
        "{\"key\":\"http.route\",\"action\":\"insert\",\"value\":\"/nope\"},"
        "{\"key\":\"url.path\",\"action\":\"update\",\"value\":\"/x\"},"
        "{\"key\":\"missing\",\"action\":\"update\",\"value\":\"no\"},"
        "{\"key\":\"team\",\"action\":\"upsert\",\"value\":42},"
        "{\"key\":\"service.name\",\"action\":\"hash\"},"
        "{\"key\":\"card\",\"action\":\"delete\"}],"
        "\"redact_keys\":[\"password\"],\"redact_values\":\"re:[0-9]{4} [0-9]{4}\"}]");
    struct otlp_counts n;
    json_t *root = run_json(c, TWO_TRACES, &n);
    assert_int_equal(n.items, 3);
    json_t *health = json_object_get(span_at(root, 0, 0, 0), "attributes");
    json_t *api = json_object_get(span_at(root, 0, 0, 2), "attributes");
    assert_string_equal(attr(health, "env"), "prod");
    assert_string_equal(attr(health, "http.route"), "/healthz"); /* insert: only when absent */
    assert_null(attr(health, "missing"));                        /* update: only when present */
    assert_string_equal(attr(health, "team"), "42");             /* upsert, an int */
    assert_string_equal(attr(api, "url.path"), "/x");
    assert_string_equal(attr(api, "password"), "****");
    assert_null(attr(api, "card"));
    json_t *ev = json_array_get(json_object_get(span_at(root, 0, 0, 2), "events"), 0);
    assert_string_equal(attr(json_object_get(ev, "attributes"), "password"), "****");
    json_t *res = json_object_get(
        json_object_get(json_array_get(json_object_get(root, "resourceSpans"), 0), "resource"),
        "attributes");
    /* sha256("shop") */
    assert_string_equal(attr(res, "service.name"),
                        "8d9001d32c6a703d95921a77115050f33dd823d3f1730bd35215dcbecad6dc20");
    json_decref(root);
    struct processor_stats st;
    processor_chain_get_stats(c, &st);
    assert_int_equal(st.redacted_values, 2);
    assert_int_equal(st.hashed_values, 1);
    processor_chain_free(c);

    /* Value redaction without the delete: the card number is matched by its value. */
    c = chain(OTLP_TRACES, "[{\"kind\":\"attributes\",\"redact_values\":[\"re:([0-9]{4} ){3}\"]}]");
    root = run_json(c, TWO_TRACES, &n);
    assert_string_equal(attr(json_object_get(span_at(root, 0, 0, 2), "attributes"), "card"),
                        "****");
    json_decref(root);
    processor_chain_free(c);
}

static void test_attributes_logs_metrics(void **state)
{
    (void)state;
    static const char logs[] =
        "{\"resourceLogs\":[{\"scopeLogs\":[{\"logRecords\":[{\"body\":{\"stringValue\":\"x\"},"
        "\"attributes\":[{\"key\":\"user.email\",\"value\":{\"stringValue\":\"a@b.c\"}}]}]}]}]}";
    struct processor_chain *c = chain(
        OTLP_LOGS, "[{\"kind\":\"attributes\",\"actions\":[{\"key\":\"user.email\",\"action\":"
                   "\"hash\"},{\"key\":\"k\",\"action\":\"upsert\",\"value\":true}]}]");
    struct otlp_counts n;
    json_t *root = run_json(c, logs, &n);
    json_t *lr = json_array_get(
        json_object_get(
            json_array_get(json_object_get(json_array_get(json_object_get(root, "resourceLogs"), 0),
                                           "scopeLogs"),
                           0),
            "logRecords"),
        0);
    /* sha256("a@b.c") */
    assert_string_equal(attr(json_object_get(lr, "attributes"), "user.email"),
                        "d648b243a3e817eaa3309e00e183483f2867baadf522099f0c2121770536b25a");
    json_decref(root);
    processor_chain_free(c);

    size_t len;
    uint8_t *pb = read_payload("metrics.pb", &len);
    c = chain(OTLP_METRICS, "[{\"kind\":\"attributes\",\"targets\":\"datapoint,resource\","
                            "\"actions\":[{\"key\":\"region\",\"action\":\"upsert\",\"value\":"
                            "\"eu\"}]}]");
    struct buf out;
    buf_init(&out, 64u << 20);
    struct otlp_counts in;
    assert_int_equal(otlp_scan(OTLP_METRICS, pb, len, &in, NULL), 0);
    assert_int_equal(processor_chain_run(c, pb, len, &out, &n), 0);
    assert_int_equal(n.items, in.items);
    struct arena a;
    arena_init(&a, 64u << 20);
    struct buf js;
    buf_init(&js, 64u << 20);
    assert_int_equal(otlp_pb_to_json(OTLP_METRICS, out.data, out.len, &a, &js), 0);
    buf_terminate(&js);
    /* Every data point and every resource carries the attribute. */
    size_t hits = 0;
    for (const char *p = (const char *)js.data; (p = strstr(p, "\"region\"")) != NULL; p++) {
        hits++;
    }
    assert_int_equal(hits, in.items + in.resources);
    buf_cleanup(&js);
    buf_cleanup(&out);
    arena_cleanup(&a);
    free(pb);
    processor_chain_free(c);
}

/* ---- limits -------------------------------------------------------------------------------- */

static void test_limits(void **state)
{
    (void)state;
    static const char in[] = "{\"resourceLogs\":[{\"scopeLogs\":[{\"logRecords\":[{\"attributes\":["
                             "{\"key\":\"a\",\"value\":{\"stringValue\":\"12345\"}},"
                             "{\"key\":\"b\",\"value\":{\"stringValue\":\"123456\"}},"
                             "{\"key\":\"c\",\"value\":{\"stringValue\":\"1234\\u00e9\"}},"
                             "{\"key\":\"d\",\"value\":{\"intValue\":\"7\"}}]}]}]}]}";
    struct processor_chain *c =
        chain(OTLP_LOGS, "[{\"kind\":\"limits\",\"max_value_length\":5,\"max_attributes\":3}]");
    struct otlp_counts n;
    json_t *root = run_json(c, in, &n);
    json_t *lr = json_array_get(
        json_object_get(
            json_array_get(json_object_get(json_array_get(json_object_get(root, "resourceLogs"), 0),
                                           "scopeLogs"),
                           0),
            "logRecords"),
        0);
    json_t *attrs = json_object_get(lr, "attributes");
    assert_int_equal(json_array_size(attrs), 3);
    assert_string_equal(attr(attrs, "a"), "12345"); /* exactly the limit: untouched */
    assert_string_equal(attr(attrs, "b"), "12345"); /* one past: cut */
    assert_string_equal(attr(attrs, "c"), "1234");  /* never half a UTF-8 sequence */
    assert_null(attr(attrs, "d"));
    assert_int_equal(json_integer_value(json_object_get(lr, "droppedAttributesCount")), 1);
    struct processor_stats st;
    processor_chain_get_stats(c, &st);
    assert_int_equal(st.truncated_values, 2);
    assert_int_equal(st.dropped_attributes, 1);
    json_decref(root);
    processor_chain_free(c);
}

/* ---- resource ------------------------------------------------------------------------------ */

static void test_resource(void **state)
{
    (void)state;
    struct processor_chain *c =
        chain(OTLP_TRACES, "[{\"kind\":\"resource\",\"user_uid\":\"u-42\",\"process\":true}]");
    struct otlp_counts n;
    json_t *root = run_json(c, TWO_TRACES, &n);
    json_t *res = json_object_get(
        json_object_get(json_array_get(json_object_get(root, "resourceSpans"), 0), "resource"),
        "attributes");
    assert_string_equal(attr(res, "datalayer.user_uid"), "u-42");
    assert_non_null(attr(res, "host.name"));
    assert_non_null(attr(res, "process.pid"));
    const char *id1 = attr(res, "service.instance.id");
    assert_non_null(id1);
    assert_int_equal(strlen(id1), 36);
    assert_int_equal(id1[14], '8');
    char keep[40];
    snprintf(keep, sizeof(keep), "%s", id1);
    json_decref(root);
    /* Stable: the same service on the same host gets the same id. */
    root = run_json(c, TWO_TRACES, &n);
    res = json_object_get(
        json_object_get(json_array_get(json_object_get(root, "resourceSpans"), 0), "resource"),
        "attributes");
    assert_string_equal(attr(res, "service.instance.id"), keep);
    json_decref(root);
    processor_chain_free(c);

    /* What the SDK set wins: the payload's resources keep their own host.name. */
    size_t len;
    uint8_t *pb = read_payload("traces_512.pb", &len);
    c = chain(OTLP_TRACES, "[{\"kind\":\"resource\"}]");
    struct buf out;
    buf_init(&out, 64u << 20);
    assert_int_equal(processor_chain_run(c, pb, len, &out, &n), 0);
    assert_int_equal(n.items, 512);
    assert_non_null(memmem(out.data, out.len, "host.name", 9));
    buf_cleanup(&out);
    free(pb);
    processor_chain_free(c);
}

static void test_container_id(void **state)
{
    (void)state;
    char id[65];
    static const char v1[] =
        "12:pids:/docker/3c6b2b2d2bb4b5a4ef0d4c0d9e1f0f5c3a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d\n"
        "0::/\n";
    assert_int_equal(processor_container_id_from(v1, sizeof(v1) - 1, id), 1);
    assert_string_equal(id, "3c6b2b2d2bb4b5a4ef0d4c0d9e1f0f5c3a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d");
    static const char v2[] = "0::/system.slice/docker-"
                             "aaaabbbbccccddddeeeeffff0000111122223333444455556666777788889999"
                             ".scope\n";
    assert_int_equal(processor_container_id_from(v2, sizeof(v2) - 1, id), 1);
    assert_int_equal(id[0], 'a');
    static const char none[] = "0::/user.slice/user-1000.slice/session-2.scope\n";
    assert_int_equal(processor_container_id_from(none, sizeof(none) - 1, id), 0);
    /* 63 or 65 hex characters are not a container id. */
    static const char off[] =
        "1:x:/docker/3c6b2b2d2bb4b5a4ef0d4c0d9e1f0f5c3a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4\n";
    assert_int_equal(processor_container_id_from(off, sizeof(off) - 1, id), 0);
}

/* ---- the real payloads, whole chains ------------------------------------------------------- */

static void test_payloads_roundtrip(void **state)
{
    (void)state;
    static const char *const files[OTLP_SIGNAL_COUNT] = {"traces_512.pb", "metrics.pb",
                                                         "logs_512.pb"};
    for (int s = 0; s < OTLP_SIGNAL_COUNT; s++) {
        size_t len;
        uint8_t *pb = read_payload(files[s], &len);
        struct processor_chain *c = chain((enum otlp_signal)s, "[]");
        struct buf out;
        buf_init(&out, 64u << 20);
        struct otlp_counts n, in;
        assert_int_equal(otlp_scan((enum otlp_signal)s, pb, len, &in, NULL), 0);
        assert_int_equal(processor_chain_run(c, pb, len, &out, &n), 0);
        /*
         * An empty chain changes nothing. The bytes may differ (the JS SDK writes some default
         * values that protobuf-c leaves out), so compare the OTLP/JSON of both.
         */
        assert_int_equal(n.items, in.items);
        struct arena a;
        arena_init(&a, 64u << 20);
        struct buf j1, j2;
        buf_init(&j1, 64u << 20);
        buf_init(&j2, 64u << 20);
        assert_int_equal(otlp_pb_to_json((enum otlp_signal)s, pb, len, &a, &j1), 0);
        arena_reset(&a);
        assert_int_equal(otlp_pb_to_json((enum otlp_signal)s, out.data, out.len, &a, &j2), 0);
        assert_int_equal(j1.len, j2.len);
        assert_memory_equal(j1.data, j2.data, j1.len);
        buf_cleanup(&j1);
        buf_cleanup(&j2);
        arena_cleanup(&a);
        /* Garbage is refused, and the chain still works after. */
        buf_reset(&out);
        assert_int_equal(processor_chain_run(c, pb, len - 1, &out, &n), DLOTEL_ERR_BAD_INPUT);
        assert_int_equal(processor_chain_run(c, pb, len, &out, &n), 0);
        buf_cleanup(&out);
        free(pb);
        processor_chain_free(c);
    }
}

/*
 * The pipeline runs chains on libuv's thread pool and reads their counters from the loop: two
 * threads running one chain take turns (the shared decode memory is not torn: every output is
 * the same as a lone run's), and counters read meanwhile only ever grow.
 */
struct chain_runner {
    struct processor_chain *c;
    const uint8_t *pb;
    size_t len;
    const struct buf *want;
    int runs, same;
};

static void chain_runner_main(void *arg)
{
    struct chain_runner *r = arg;
    struct buf out;
    buf_init(&out, 64u << 20);
    for (int i = 0; i < r->runs; i++) {
        struct otlp_counts n;
        buf_reset(&out);
        if (processor_chain_run(r->c, r->pb, r->len, &out, &n) == 0 && n.items == 512 &&
            out.len == r->want->len && memcmp(out.data, r->want->data, out.len) == 0) {
            r->same++;
        }
    }
    buf_cleanup(&out);
}

static void test_chain_threads(void **state)
{
    (void)state;
    size_t len;
    uint8_t *pb = read_payload("traces_512.pb", &len);
    struct processor_chain *c =
        chain(OTLP_TRACES, "[{\"kind\":\"attributes\",\"actions\":[{\"key\":\"team\",\"action\":"
                           "\"upsert\",\"value\":\"shop\"}]}]");
    struct buf want;
    buf_init(&want, 64u << 20);
    struct otlp_counts n;
    assert_int_equal(processor_chain_run(c, pb, len, &want, &n), 0);
    struct chain_runner r[2];
    uv_thread_t th[2];
    for (int i = 0; i < 2; i++) {
        r[i] = (struct chain_runner){c, pb, len, &want, 20, 0};
        assert_int_equal(uv_thread_create(&th[i], chain_runner_main, &r[i]), 0);
    }
    uint64_t last = 0;
    for (int i = 0; i < 200; i++) {
        struct processor_stats st;
        processor_chain_get_stats(c, &st);
        assert_true(st.requests >= last);
        assert_int_equal(st.items_in, st.requests * 512);
        last = st.requests;
    }
    for (int i = 0; i < 2; i++) {
        assert_int_equal(uv_thread_join(&th[i]), 0);
        assert_int_equal(r[i].same, 20);
    }
    struct processor_stats st;
    processor_chain_get_stats(c, &st);
    assert_int_equal(st.requests, 41);
    assert_int_equal(st.items_out, 41 * 512);
    buf_cleanup(&want);
    processor_chain_free(c);
    free(pb);
}

/* ---- benchmark ----------------------------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int bench(int rounds)
{
    size_t len;
    uint8_t *pb = read_payload("traces_512.pb", &len);
    static const char *const chains[] = {
        NULL,
        "[]",
        "[{\"kind\":\"attributes\",\"actions\":[{\"key\":\"deployment.environment\",\"action\":"
        "\"upsert\",\"value\":\"prod\"}]}]",
        "[{\"kind\":\"filter\"},{\"kind\":\"resource\"},{\"kind\":\"attributes\",\"actions\":[{"
        "\"key\":\"enduser.id\",\"action\":\"hash\"}],\"redact_keys\":\"password,*token*\"},"
        "{\"kind\":\"limits\",\"max_value_length\":256,\"max_attributes\":64}]",
    };
    static const char *const names[] = {"scan only (fast path)", "empty chain (decode+encode)",
                                        "one attributes processor (upsert)",
                                        "filter+resource+attributes(hash,redact)+limits"};
    struct buf out;
    buf_init(&out, 64u << 20);
    for (size_t k = 0; k < sizeof(chains) / sizeof(chains[0]); k++) {
        struct processor_chain *c = k > 0 ? chain(OTLP_TRACES, chains[k]) : NULL;
        struct otlp_counts n;
        double t0 = now_s();
        uint64_t items = 0;
        for (int i = 0; i < rounds; i++) {
            buf_reset(&out);
            int rc = c == NULL ? otlp_scan(OTLP_TRACES, pb, len, &n, NULL)
                               : processor_chain_run(c, pb, len, &out, &n);
            if (rc != 0) {
                fprintf(stderr, "run failed: %s\n", dlotel_strerror(rc));
                return 1;
            }
            items += n.items;
        }
        double dt = now_s() - t0;
        printf("%-50s %10.0f spans/s  %7.1f MB/s  (%d x %zu bytes)\n", names[k], (double)items / dt,
               (double)len * rounds / dt / 1e6, rounds, len);
        processor_chain_free(c);
    }
    buf_cleanup(&out);
    free(pb);
    return 0;
}

/*
 * The loop's view of the decode path: requests of traces_512.pb arrive every 10 ms (one
 * attributes processor) while a 1 ms timer stands for every other client of the loop. Measured:
 * the loop thread's CPU time per request (CLOCK_THREAD_CPUTIME_ID: what the loop spent working,
 * which a loaded machine does not inflate), its busy time per request (wall time less the time
 * it sat in epoll, from libuv's UV_METRICS_IDLE_TIME: includes time it waited for a core), and
 * how late the 1 ms timer fired (median, 99th percentile, worst). "on the loop" runs the chain in
 * the driver's callback and submits the result, which is what pipeline_submit() did before the
 * chains moved to the thread pool; "thread pool" is pipeline_set_processor() as the agent uses it.
 */
struct lbench {
    uv_loop_t loop;
    struct pipeline *p;
    struct processor_chain *c;
    int mode; /* 0: the chain on the loop; 1: on the thread pool; 2: no requests at all. */
    const uint8_t *pb;
    size_t len;
    struct otlp_counts counts;
    int total, submitted, answered, failed;
    uv_timer_t driver, beat;
    uint64_t last_beat_ns;
    uint64_t late_ns[8192];
    size_t beats;
    struct buf out;
};

static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int count_export(struct exporter *e, enum otlp_signal s, const uint8_t *pb, size_t len,
                        const struct otlp_counts *c)
{
    (void)e, (void)s, (void)pb, (void)len, (void)c;
    return 0;
}

static void count_destroy(struct exporter *e)
{
    free(e);
}

static const struct exporter_ops count_ops = {
    .kind = "count", .export = count_export, .destroy = count_destroy};

static int lbench_process(void *userdata, enum otlp_signal s, const uint8_t *pb, size_t len,
                          struct buf *out, struct otlp_counts *counts)
{
    (void)s;
    return processor_chain_run(userdata, pb, len, out, counts);
}

static void lbench_answered(void *userdata, int status, const char *detail)
{
    (void)detail;
    struct lbench *b = userdata;
    b->answered++;
    b->failed += status != 0;
    if (b->answered == b->total) {
        uv_close((uv_handle_t *)&b->driver, NULL);
        uv_close((uv_handle_t *)&b->beat, NULL);
    }
}

static void lbench_drive(uv_timer_t *t)
{
    struct lbench *b = t->data;
    if (b->submitted == b->total) {
        return;
    }
    b->submitted++;
    if (b->mode == 2) {
        lbench_answered(b, 0, NULL);
        return;
    }
    if (b->mode == 1) {
        pipeline_submit(b->p, OTLP_TRACES, b->pb, b->len, &b->counts, lbench_answered, b);
        return;
    }
    struct otlp_counts pc;
    buf_reset(&b->out);
    if (processor_chain_run(b->c, b->pb, b->len, &b->out, &pc) != 0) {
        lbench_answered(b, DLOTEL_ERR_BAD_INPUT, NULL);
        return;
    }
    pipeline_submit(b->p, OTLP_TRACES, b->out.data, b->out.len, &pc, lbench_answered, b);
}

static void lbench_beat(uv_timer_t *t)
{
    struct lbench *b = t->data;
    uint64_t now = uv_hrtime();
    if (b->last_beat_ns != 0 && b->beats < sizeof(b->late_ns) / sizeof(b->late_ns[0])) {
        uint64_t gap = now - b->last_beat_ns;
        b->late_ns[b->beats++] = gap > 1000000 ? gap - 1000000 : 0;
    }
    b->last_beat_ns = now;
}

static int bench_loop(int rounds)
{
    size_t len;
    uint8_t *pb = read_payload("traces_512.pb", &len);
    const char *attrs =
        "[{\"kind\":\"attributes\",\"actions\":[{\"key\":\"deployment.environment\","
        "\"action\":\"upsert\",\"value\":\"prod\"}]}]";
    static const char *const names[] = {"chain on the loop (before)",
                                        "chain on the thread pool (now)",
                                        "no requests (the 1 ms timer alone)"};
    for (int mode = 0; mode < 3; mode++) {
        struct lbench *b = calloc(1, sizeof(*b));
        assert_non_null(b);
        b->mode = mode;
        b->pb = pb;
        b->len = len;
        b->total = rounds;
        assert_int_equal(otlp_scan(OTLP_TRACES, pb, len, &b->counts, NULL), 0);
        b->c = chain(OTLP_TRACES, attrs);
        buf_init(&b->out, 64u << 20);
        uv_loop_init(&b->loop);
        uv_loop_configure(&b->loop, UV_METRICS_IDLE_TIME);
        assert_int_equal(pipeline_new_on_loop(&b->p, &b->loop, NULL), 0);
        struct exporter *e = calloc(1, sizeof(*e));
        assert_non_null(e);
        e->ops = &count_ops;
        assert_int_equal(pipeline_add_exporter(b->p, OTLP_TRACES, e), 0);
        if (b->mode == 1) {
            pipeline_set_processor(b->p, OTLP_TRACES, lbench_process, b->c);
        }
        uv_timer_init(&b->loop, &b->driver);
        uv_timer_init(&b->loop, &b->beat);
        b->driver.data = b->beat.data = b;
        uv_timer_start(&b->driver, lbench_drive, 10, 10);
        uv_timer_start(&b->beat, lbench_beat, 1, 1);
        uint64_t t0 = uv_hrtime();
        uint64_t cpu0 = thread_cpu_ns();
        uint64_t idle0 = uv_metrics_idle_time(&b->loop);
        uv_run(&b->loop, UV_RUN_DEFAULT);
        uint64_t cpu = thread_cpu_ns() - cpu0;
        uint64_t wall = uv_hrtime() - t0;
        uint64_t busy = wall - (uv_metrics_idle_time(&b->loop) - idle0);
        qsort(b->late_ns, b->beats, sizeof(b->late_ns[0]), cmp_u64);
        size_t nb = b->beats > 0 ? b->beats : 1;
        printf("%-36s per request: loop CPU %6.3f ms, loop busy %6.3f ms; 1 ms timer late: "
               "median %6.3f, p99 %6.3f, max %6.3f ms (%d requests, %d failed)\n",
               names[mode], (double)cpu / rounds / 1e6, (double)busy / rounds / 1e6,
               (double)b->late_ns[nb / 2] / 1e6, (double)b->late_ns[nb * 99 / 100] / 1e6,
               (double)b->late_ns[nb - 1] / 1e6, b->answered, b->failed);
        pipeline_free(b->p);
        uv_run(&b->loop, UV_RUN_DEFAULT);
        uv_loop_close(&b->loop);
        processor_chain_free(b->c);
        buf_cleanup(&b->out);
        free(b);
    }
    free(pb);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "--bench") == 0) {
        return bench(argc >= 3 ? (int)strtol(argv[2], NULL, 10) : 200);
    }
    if (argc >= 2 && strcmp(argv[1], "--bench-loop") == 0) {
        int n = argc >= 3 ? (int)strtol(argv[2], NULL, 10) : 0;
        return bench_loop(n > 0 ? n : 100);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_patterns),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_config_yaml),
        cmocka_unit_test(test_filter_urls),
        cmocka_unit_test(test_filter_conditions),
        cmocka_unit_test(test_sample_decision),
        cmocka_unit_test(test_sample_payload),
        cmocka_unit_test(test_attributes),
        cmocka_unit_test(test_attributes_logs_metrics),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_resource),
        cmocka_unit_test(test_container_id),
        cmocka_unit_test(test_payloads_roundtrip),
        cmocka_unit_test(test_chain_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
