/*
 * The DuckDB sink as a shared module (DESIGN.md section 2, footprint rule).
 *
 * Everything that touches DuckDB lives in libdlotel_sink.so, which the daemon loads with dlopen
 * only when a sink is configured; the forwarding agent never maps the 64 MB libduckdb. The module
 * exports exactly one symbol, SINK_MODULE_ENTRY, a function returning a static table of
 * callbacks. The table starts with its ABI version so that a module from another build is refused
 * before any of its callbacks run.
 *
 * This header is shared by the module and by its loader (sink_loader.h); it must not include
 * duckdb.h, because the loader's users must not depend on DuckDB's headers either.
 */
#ifndef DLOTEL_SINK_MODULE_H
#define DLOTEL_SINK_MODULE_H

#include <stddef.h>
#include <stdint.h>

/*
 * Bumped whenever struct sink_module_api changes in any way (new member, new meaning). A module
 * and a loader agree only when the numbers are equal: there is no "compatible" range, since both
 * are built from the same tree.
 */
#define SINK_MODULE_ABI_VERSION 1u

/* The name of the module's only exported symbol, of type sink_module_entry_fn. */
#define SINK_MODULE_ENTRY "dlotel_sink_module_api"

/* The file name the loader looks for when no path is given. */
#define SINK_MODULE_FILENAME "libdlotel_sink.so"

struct sink_module_api {
    /* SINK_MODULE_ABI_VERSION of the build that made the module. Always the first member. */
    uint32_t abi_version;
    /* sizeof(struct sink_module_api) in the module's build, a second guard against a mismatch. */
    uint32_t struct_size;
    /* "dlotel_sink", for log lines. */
    const char *name;
    /*
     * Checks that DuckDB works inside this process: opens an in-memory database, runs
     * SELECT 42, and closes it again.
     *
     * On success returns the value the query produced (42) and writes DuckDB's library version
     * (for example "v1.4.4") to |out|, NUL-terminated and truncated to |len|. On failure returns
     * DLOTEL_ERR_MODULE (DuckDB refused to open or to run the query) or DLOTEL_ERR_INVALID_ARG
     * (|out| NULL or |len| 0) and writes DuckDB's error text to |out| when there is room.
     */
    int (*probe)(char *out, size_t len);
};

typedef const struct sink_module_api *(*sink_module_entry_fn)(void);

#endif
