/*
 * Fuzz target: the query API's URL parsing (agent/api/api_params.c). The input is a request
 * target; every parameter value is also fed to the time, duration, number and cursor parsers.
 * Must never crash or read out of bounds; what parses must round-trip where a format allows it
 * (a cursor re-encoded decodes to the same key; a parsed time formats and parses back).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_params.h"
#include "dlotel.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 64 * 1024) {
        return 0;
    }
    char *target = malloc(size + 1);
    if (target == NULL) {
        return 0;
    }
    memcpy(target, data, size);
    target[size] = '\0';
    char path[2048];
    char why[80];
    struct api_params p;
    if (api_params_parse(target, path, sizeof(path), &p, why, sizeof(why)) == 0) {
        if (p.n > API_PARAMS_MAX) {
            abort();
        }
        for (size_t i = 0; i < p.n; i++) {
            const char *v = p.items[i].value;
            if (strlen(v) > API_PARAM_VALUE_MAX || strlen(p.items[i].name) > API_PARAM_NAME_MAX) {
                abort();
            }
            int64_t ns, back;
            if (api_parse_time(v, &ns) == 0) {
                char t[40];
                api_format_time(ns, t, sizeof(t));
                if (api_parse_time(t, &back) != 0 || back != ns) {
                    abort();
                }
            }
            if (api_parse_duration(v, &ns) == 0 && ns <= 0) {
                abort();
            }
            uint64_t u;
            double d;
            (void)api_parse_uint(v, UINT64_MAX, &u);
            (void)api_parse_double(v, &d);
            char id[65];
            if (api_cursor_decode(v, &ns, id, sizeof(id)) == 0) {
                char c[API_CURSOR_MAX];
                char id2[65];
                api_cursor_encode(ns, id, c, sizeof(c));
                if (api_cursor_decode(c, &back, id2, sizeof(id2)) != 0 || back != ns ||
                    strcmp(id, id2) != 0) {
                    abort();
                }
            }
        }
        api_params_cleanup(&p);
    }
    free(target);
    return 0;
}
