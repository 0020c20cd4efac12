/*
 * An exporter is a table of callbacks plus its own state. One file per exporter kind.
 */
#ifndef DLOTEL_EXPORTER_H
#define DLOTEL_EXPORTER_H

#include <stddef.h>
#include <stdint.h>

#include "otlp/otlp.h"

struct exporter;

struct exporter_ops {
    const char *kind; /* "debug", "file", ... */
    /*
     * Takes one validated request for signal |s|; |pb| is borrowed for the call. Returns 0 or a
     * dlotel_error.
     */
    int (*export)(struct exporter *e, enum otlp_signal s, const uint8_t *pb, size_t len,
                  const struct otlp_counts *counts);
    void (*flush)(struct exporter *e);
    void (*destroy)(struct exporter *e); /* Frees the exporter's own state and |e|. */
};

struct exporter {
    const struct exporter_ops *ops;
    int refs; /* Owned by the pipeline; one per signal it is attached to. */
};

enum debug_verbosity {
    DEBUG_SUMMARY = 0,  /* One line per request: signal, resources, items, bytes. */
    DEBUG_DETAILED = 1, /* The whole request as OTLP/JSON. */
};

/* The debug exporter: writes to the log. Returns 0 or DLOTEL_ERR_NOMEM. */
int exporter_debug_new(struct exporter **out, enum debug_verbosity v);

/*
 * The file exporter: appends each request as one line of OTLP/JSON to |path| (created 0600 if
 * missing), flushed after each line so that a reader sees whole lines. Returns 0, DLOTEL_ERR_IO
 * (cannot open) or DLOTEL_ERR_NOMEM.
 */
int exporter_file_new(struct exporter **out, const char *path);

#endif
