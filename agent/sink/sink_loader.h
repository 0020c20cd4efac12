/*
 * Finds and loads libdlotel_sink.so, the DuckDB sink module (sink_module.h).
 *
 * The loader is a small static library that the daemon links; it does not link DuckDB, so a
 * process that never configures a sink never maps libduckdb (DESIGN.md section 2, footprint
 * rule). The module is opened with RTLD_NOW | RTLD_LOCAL: every symbol is resolved at load time,
 * so a broken install fails here with a clear message instead of later in the middle of a write,
 * and DuckDB's many symbols stay out of the process's global namespace.
 */
#ifndef DLOTEL_SINK_LOADER_H
#define DLOTEL_SINK_LOADER_H

#include <stddef.h>

#include "sink/sink_module.h"

/* Environment variable naming the module file; it wins over the default search. */
#define SINK_MODULE_ENV "DLOTEL_SINK_MODULE"

struct sink_loader;

/*
 * Writes the path the loader would open into |out| (size |len|), in this order:
 *   1. $DLOTEL_SINK_MODULE, when set and not empty (used as given, even if it does not exist, so
 *      that a wrong setting fails loudly instead of silently loading another module);
 *   2. <directory of /proc/self/exe>/../lib/libdlotel_sink.so, the installed layout
 *      (bin/dlotel next to lib/);
 *   3. <directory of /proc/self/exe>/libdlotel_sink.so, a module copied next to the binary.
 * Of 2 and 3 the first that exists wins; when neither exists, 2 is written, so that the error
 * from sink_loader_open names the main expected place.
 *
 * Returns 0; DLOTEL_ERR_INVALID_ARG when |out| is NULL or |len| 0; DLOTEL_ERR_TOO_LARGE when the
 * path does not fit; DLOTEL_ERR_IO when /proc/self/exe cannot be read.
 */
int sink_loader_find(char *out, size_t len);

/*
 * Loads the module at |path| (NULL: the path sink_loader_find gives), resolves its entry point
 * and checks its ABI version. On success stores a new loader in |*out|; the caller frees it with
 * sink_loader_free.
 *
 * On failure |*out| is untouched and, when |detail| is not NULL, a sentence for humans is
 * written to |detail| (size |detail_len|): the path and the dlopen/dlsym error text, or the two
 * ABI versions.
 *
 * Returns 0; DLOTEL_ERR_MODULE when the file cannot be loaded, lacks the entry point, or was built
 * for another ABI; DLOTEL_ERR_INVALID_ARG when |out| is NULL; DLOTEL_ERR_NOMEM; or the codes of
 * sink_loader_find.
 */
int sink_loader_open(struct sink_loader **out, const char *path, char *detail, size_t detail_len);

/* The module's callback table, valid until sink_loader_free. Never NULL for an open loader. */
const struct sink_module_api *sink_loader_api(const struct sink_loader *l);

/* The path the module was loaded from, owned by |l|. */
const char *sink_loader_path(const struct sink_loader *l);

/*
 * Unloads the module. The caller must have stopped every use of the table first: after this its
 * function pointers dangle. NULL is a no-op.
 */
void sink_loader_free(struct sink_loader *l);

#endif
