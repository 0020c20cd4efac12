/*
 * Logging. Each line names its component ("otlp_http", "grpc", "file") so that people can grep
 * one part of the agent. The macros check the level before the arguments are formatted.
 */
#ifndef DLOTEL_CORE_LOG_H
#define DLOTEL_CORE_LOG_H

#include <stdio.h>

enum log_level {
    LOG_LEVEL_ERROR = 0,
    LOG_LEVEL_WARN = 1,
    LOG_LEVEL_INFO = 2,
    LOG_LEVEL_DEBUG = 3,
};

extern enum log_level log_level_current;

/* Sets the most verbose level written. */
void log_set_level(enum log_level level);

/* Parses "error", "warn", "info" or "debug". Returns 0 or DLOTEL_ERR_INVALID_ARG. */
int log_level_parse(const char *name, enum log_level *out);

/* Sends lines to |f| (stderr when NULL). The caller keeps ownership of |f|. */
void log_set_file(FILE *f);

/* Writes one line: time, level, component, message. Thread-safe. */
void log_write(enum log_level level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define DLOG(level, component, ...)                                                                \
    do {                                                                                           \
        if ((level) <= log_level_current) {                                                        \
            log_write((level), (component), __VA_ARGS__);                                          \
        }                                                                                          \
    } while (0)

#define log_error(component, ...) DLOG(LOG_LEVEL_ERROR, component, __VA_ARGS__)
#define log_warn(component, ...)  DLOG(LOG_LEVEL_WARN, component, __VA_ARGS__)
#define log_info(component, ...)  DLOG(LOG_LEVEL_INFO, component, __VA_ARGS__)
#define log_debug(component, ...) DLOG(LOG_LEVEL_DEBUG, component, __VA_ARGS__)

#endif
