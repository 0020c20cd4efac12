/*
 * dlotel: the Datalayer OpenTelemetry agent.
 *
 * This is the only public header. Every function returns an int from enum dlotel_error (0 on
 * success, a negative code on failure) unless it says otherwise; handles are opaque so that the
 * ABI stays stable and binds cleanly from Python's ctypes.
 */
#ifndef DLOTEL_H
#define DLOTEL_H

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && defined(DLOTEL_BUILDING_LIBRARY)
#define DLOTEL_EXTERN __attribute__((visibility("default")))
#else
#define DLOTEL_EXTERN
#endif

#define DLOTEL_VERSION "0.1.0"

/*
 * Error codes. Append-only: a code keeps its number forever, because scripts and bindings
 * compare against the numbers.
 */
enum dlotel_error {
    DLOTEL_OK = 0,
    /* Memory allocation failed. */
    DLOTEL_ERR_NOMEM = -1,
    /* A caller passed an argument the function does not accept. */
    DLOTEL_ERR_INVALID_ARG = -2,
    /* Input bytes are malformed (protobuf, JSON, HTTP, gRPC framing, compressed stream). */
    DLOTEL_ERR_BAD_INPUT = -3,
    /* Input passed a size limit (body, message, decompressed size, buffer maximum). */
    DLOTEL_ERR_TOO_LARGE = -4,
    /* The input asks for something not supported (content type, encoding, method). */
    DLOTEL_ERR_UNSUPPORTED = -5,
    /* A system call failed; the detail string names it. */
    DLOTEL_ERR_IO = -6,
    /* A listen address is taken by another program. */
    DLOTEL_ERR_ADDR_IN_USE = -7,
    /* A queue or buffer is full; the caller sheds or flushes first. */
    DLOTEL_ERR_FULL = -8,
    /* A named thing (path, service, file, key) does not exist. */
    DLOTEL_ERR_NOT_FOUND = -9,
    /* An operation did not finish within its time limit. */
    DLOTEL_ERR_TIMEOUT = -10,
    /* An invariant broke inside dlotel: a bug, please report it. */
    DLOTEL_ERR_INTERNAL = -11,
    /* The configuration is invalid; the detail string says which key and why. */
    DLOTEL_ERR_CONFIG = -12,
    /* The object was closed or is shutting down. */
    DLOTEL_ERR_CLOSED = -13,
    /* A shared module (the DuckDB sink) could not be loaded. */
    DLOTEL_ERR_MODULE = -14,
};

/*
 * Returns a static, human-readable string for |code|. Never NULL: an unknown code gives
 * "unknown error".
 */
DLOTEL_EXTERN const char *dlotel_strerror(int code);

/* Returns the library's version string, DLOTEL_VERSION at build time. Never NULL. */
DLOTEL_EXTERN const char *dlotel_version(void);

#ifdef __cplusplus
}
#endif

#endif /* DLOTEL_H */
