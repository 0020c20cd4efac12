/*
 * A stand-in for libdlotel_sink.so from another build: it exports the real entry point but
 * reports a different ABI version. test_sink_module checks that the loader refuses it before
 * calling anything in the table.
 */
#include <stddef.h>

#include "dlotel.h"
#include "sink/sink_module.h"

static int probe(char *out, size_t len)
{
    (void)out;
    (void)len;
    /* Never reached when the loader works: it must reject the table first. */
    return DLOTEL_ERR_INTERNAL;
}

static const struct sink_module_api api = {
    .abi_version = SINK_MODULE_ABI_VERSION + 1000u,
    .struct_size = (uint32_t)sizeof(struct sink_module_api),
    .name = "dlotel_sink_badabi",
    .probe = probe,
};

__attribute__((visibility("default"))) const struct sink_module_api *dlotel_sink_module_api(void);

const struct sink_module_api *dlotel_sink_module_api(void)
{
    return &api;
}
