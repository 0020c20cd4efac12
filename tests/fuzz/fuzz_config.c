/*
 * Fuzz target: YAML bytes -> config load + finalize + print + hash. When a configuration is
 * valid, its unmasked print must load back to the same hash: the launcher relies on that when
 * it hands the effective configuration to the daemon as a file.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "config/config.h"

static char *fuzz_env[] = {
    "HOME=/tmp/dlotel-fuzz-home",
    "DATALAYER_API_KEY=fuzz-key",
    "DATALAYER_RUN_URL=https://run.example.com/",
    NULL,
};

static uint64_t load(const char *data, size_t size, struct buf *print_out, int *rv_out)
{
    struct config *cfg;
    struct config_errors errs;
    config_errors_init(&errs);
    uint64_t h = 0;
    if (config_new(&cfg) != 0) {
        abort();
    }
    config_load_env(cfg, fuzz_env, &errs);
    int rv = config_load_yaml_string(cfg, data, size, "fuzz.yaml", &errs);
    int frv = config_finalize(cfg, &errs);
    *rv_out = rv != 0 ? rv : frv;
    struct buf text;
    buf_init(&text, 1u << 24);
    config_print(cfg, &text, true);
    config_errors_format(&errs, &text, true);
    buf_cleanup(&text);
    if (*rv_out == 0) {
        h = config_hash(cfg);
        if (print_out != NULL && config_print(cfg, print_out, false) != 0) {
            abort();
        }
    }
    config_free(cfg);
    config_errors_cleanup(&errs);
    return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct buf printed;
    buf_init(&printed, 1u << 24);
    int rv;
    uint64_t h1 = load((const char *)data, size, &printed, &rv);
    if (rv == 0) {
        int rv2;
        uint64_t h2 = load((const char *)printed.data, printed.len, NULL, &rv2);
        if (rv2 != 0 || h1 != h2) {
            fprintf(stderr, "round trip changed the configuration (rv %d):\n%.*s\n", rv2,
                    (int)printed.len, (const char *)printed.data);
            abort();
        }
    }
    buf_cleanup(&printed);
    return 0;
}
