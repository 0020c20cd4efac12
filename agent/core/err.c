#include "dlotel.h"

const char *dlotel_strerror(int code)
{
    switch (code) {
    case DLOTEL_OK:
        return "success";
    case DLOTEL_ERR_NOMEM:
        return "out of memory";
    case DLOTEL_ERR_INVALID_ARG:
        return "invalid argument";
    case DLOTEL_ERR_BAD_INPUT:
        return "malformed input";
    case DLOTEL_ERR_TOO_LARGE:
        return "too large";
    case DLOTEL_ERR_UNSUPPORTED:
        return "not supported";
    case DLOTEL_ERR_IO:
        return "input/output error";
    case DLOTEL_ERR_ADDR_IN_USE:
        return "address already in use";
    case DLOTEL_ERR_FULL:
        return "queue full";
    case DLOTEL_ERR_NOT_FOUND:
        return "not found";
    case DLOTEL_ERR_TIMEOUT:
        return "timed out";
    case DLOTEL_ERR_INTERNAL:
        return "internal error";
    case DLOTEL_ERR_CONFIG:
        return "invalid configuration";
    case DLOTEL_ERR_CLOSED:
        return "closed";
    case DLOTEL_ERR_MODULE:
        return "cannot load module";
    case DLOTEL_ERR_CONFIG_MISMATCH:
        return "a daemon with a different configuration is running";
    case DLOTEL_ERR_DISABLED:
        return "disabled by configuration";
    case DLOTEL_ERR_DAEMON:
        return "the agent daemon failed to start";
    }
    return "unknown error";
}

const char *dlotel_version(void)
{
    return DLOTEL_VERSION;
}
