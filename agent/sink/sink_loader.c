/*
 * The sink module loader. See sink_loader.h for the search order and the reasons for
 * RTLD_NOW | RTLD_LOCAL. This file must never include duckdb.h or call into DuckDB directly: it
 * is linked into the forwarding agent, which must stay free of libduckdb.
 */
#include <dlfcn.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dlotel.h"
#include "sink/sink_loader.h"

struct sink_loader {
    void *handle;
    const struct sink_module_api *api;
    char path[PATH_MAX];
};

static void set_detail(char *detail, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_detail(char *detail, size_t len, const char *fmt, ...)
{
    if (detail == NULL || len == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    /* Truncation is acceptable: the detail is for people, and it stays NUL-terminated. */
    int w = vsnprintf(detail, len, fmt, ap);
    va_end(ap);
    (void)w;
}

static int file_exists(const char *path)
{
    return access(path, F_OK) == 0;
}

int sink_loader_find(char *out, size_t len)
{
    if (out == NULL || len == 0) {
        return DLOTEL_ERR_INVALID_ARG;
    }

    const char *env = getenv(SINK_MODULE_ENV);
    if (env != NULL && env[0] != '\0') {
        int w = snprintf(out, len, "%s", env);
        return (w < 0 || (size_t)w >= len) ? DLOTEL_ERR_TOO_LARGE : 0;
    }

    /* readlink does not NUL-terminate, and a result that fills the buffer may be truncated. */
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe));
    if (n <= 0 || (size_t)n >= sizeof(exe)) {
        return DLOTEL_ERR_IO;
    }
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash == NULL) {
        return DLOTEL_ERR_IO;
    }
    *slash = '\0';

    char installed[PATH_MAX];
    char beside[PATH_MAX];
    int w1 = snprintf(installed, sizeof(installed), "%s/../lib/%s", exe, SINK_MODULE_FILENAME);
    int w2 = snprintf(beside, sizeof(beside), "%s/%s", exe, SINK_MODULE_FILENAME);
    if (w1 < 0 || (size_t)w1 >= sizeof(installed) || w2 < 0 || (size_t)w2 >= sizeof(beside)) {
        return DLOTEL_ERR_TOO_LARGE;
    }
    const char *pick = installed;
    if (!file_exists(installed) && file_exists(beside)) {
        pick = beside;
    }
    int w = snprintf(out, len, "%s", pick);
    return (w < 0 || (size_t)w >= len) ? DLOTEL_ERR_TOO_LARGE : 0;
}

int sink_loader_open(struct sink_loader **out, const char *path, char *detail, size_t detail_len)
{
    if (out == NULL) {
        set_detail(detail, detail_len, "sink_loader_open: no output pointer");
        return DLOTEL_ERR_INVALID_ARG;
    }

    struct sink_loader *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        set_detail(detail, detail_len, "out of memory loading the sink module");
        return DLOTEL_ERR_NOMEM;
    }

    int rv;
    if (path == NULL) {
        rv = sink_loader_find(l->path, sizeof(l->path));
        if (rv != 0) {
            set_detail(detail, detail_len,
                       "cannot work out where the sink module is (/proc/self/exe unreadable or "
                       "path too long); set " SINK_MODULE_ENV);
            goto fail_path;
        }
    } else {
        int w = snprintf(l->path, sizeof(l->path), "%s", path);
        if (w < 0 || (size_t)w >= sizeof(l->path)) {
            set_detail(detail, detail_len, "sink module path is too long");
            rv = DLOTEL_ERR_TOO_LARGE;
            goto fail_path;
        }
    }

    /* Clear any stale error so that the dlerror() below describes this call. */
    (void)dlerror();
    l->handle = dlopen(l->path, RTLD_NOW | RTLD_LOCAL);
    if (l->handle == NULL) {
        const char *e = dlerror();
        set_detail(detail, detail_len,
                   "cannot load the sink module %s: %s (set " SINK_MODULE_ENV
                   " to the module's path, or install it in lib/ beside bin/)",
                   l->path, e != NULL ? e : "unknown dlopen error");
        rv = DLOTEL_ERR_MODULE;
        goto fail_path;
    }

    (void)dlerror();
    /*
     * ISO C does not allow converting a void * to a function pointer, POSIX requires it to work;
     * going through memcpy keeps -Wpedantic quiet without a cast that hides the size.
     */
    void *sym = dlsym(l->handle, SINK_MODULE_ENTRY);
    const char *e = dlerror();
    if (sym == NULL || e != NULL) {
        set_detail(detail, detail_len, "%s is not a dlotel sink module: %s", l->path,
                   e != NULL ? e : "entry point " SINK_MODULE_ENTRY " is NULL");
        rv = DLOTEL_ERR_MODULE;
        goto fail_module;
    }
    sink_module_entry_fn entry;
    memcpy(&entry, &sym, sizeof(entry));

    const struct sink_module_api *api = entry();
    if (api == NULL) {
        set_detail(detail, detail_len, "sink module %s returned no API table", l->path);
        rv = DLOTEL_ERR_MODULE;
        goto fail_module;
    }
    if (api->abi_version != SINK_MODULE_ABI_VERSION ||
        api->struct_size != (uint32_t)sizeof(struct sink_module_api)) {
        set_detail(detail, detail_len,
                   "sink module %s has ABI version %u (table size %u), this dlotel needs %u "
                   "(size %u): the module comes from another build",
                   l->path, (unsigned)api->abi_version, (unsigned)api->struct_size,
                   (unsigned)SINK_MODULE_ABI_VERSION, (unsigned)sizeof(struct sink_module_api));
        rv = DLOTEL_ERR_MODULE;
        goto fail_module;
    }
    if (api->probe == NULL || api->open == NULL || api->close == NULL || api->append == NULL ||
        api->flush == NULL || api->request_flush == NULL || api->maintain == NULL ||
        api->query == NULL || api->stats == NULL) {
        set_detail(detail, detail_len, "sink module %s lacks a callback", l->path);
        rv = DLOTEL_ERR_MODULE;
        goto fail_module;
    }
    l->api = api;
    *out = l;
    return 0;

fail_module:
    dlclose(l->handle);
fail_path:
    free(l);
    return rv;
}

const struct sink_module_api *sink_loader_api(const struct sink_loader *l)
{
    return l->api;
}

const char *sink_loader_path(const struct sink_loader *l)
{
    return l->path;
}

void sink_loader_free(struct sink_loader *l)
{
    if (l == NULL) {
        return;
    }
    dlclose(l->handle);
    free(l);
}
