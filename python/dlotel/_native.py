"""ctypes bindings of libdlotel (include/dlotel.h). Private: use the `dlotel` package.

The library is looked for, in order: $DLOTEL_LIBRARY (a path), the copy shipped in this package
(dlotel/_bin/libdlotel.so, next to the `dlotel` daemon it starts), build/lib/libdlotel.so when
the package runs from a source checkout, then the system's (`libdlotel.so.0` through the dynamic
loader).
"""

import ctypes
import ctypes.util
import logging
import os
import threading

_HERE = os.path.dirname(os.path.abspath(__file__))
BIN_DIR = os.path.join(_HERE, "_bin")

# enum dlotel_error (include/dlotel.h). Append-only, like the C enum.
OK = 0
ERR_NOMEM = -1
ERR_INVALID_ARG = -2
ERR_BAD_INPUT = -3
ERR_TOO_LARGE = -4
ERR_UNSUPPORTED = -5
ERR_IO = -6
ERR_ADDR_IN_USE = -7
ERR_FULL = -8
ERR_NOT_FOUND = -9
ERR_TIMEOUT = -10
ERR_INTERNAL = -11
ERR_CONFIG = -12
ERR_CLOSED = -13
ERR_MODULE = -14
ERR_CONFIG_MISMATCH = -15
ERR_DISABLED = -16
ERR_DAEMON = -17

PORT_GRPC = 0
PORT_HTTP = 1
STOP_DAEMON = 1

# enum dlotel_log_level -> logging levels.
_LOG_LEVELS = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: logging.DEBUG}

LOG_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)

_lib = None
_lib_lock = threading.Lock()
_log_callback = None  # Kept referenced for as long as the library may call it.
logger = logging.getLogger("dlotel")


def _candidates():
    env = os.environ.get("DLOTEL_LIBRARY")
    if env:
        yield env
    yield os.path.join(BIN_DIR, "libdlotel.so")
    # Run from a source checkout (python/dlotel) after `cmake -S . -B build && cmake --build
    # build`: the library of that build, which finds its daemon in build/bin.
    repo = os.path.dirname(os.path.dirname(_HERE))
    if os.path.exists(os.path.join(repo, "include", "dlotel.h")):
        yield os.path.join(repo, "build", "lib", "libdlotel.so")
    yield "libdlotel.so.0"
    found = ctypes.util.find_library("dlotel")
    if found:
        yield found


def _on_log(level, message, _user_data):
    try:
        logger.log(_LOG_LEVELS.get(level, logging.INFO), "%s",
                   message.decode("utf-8", "replace"))
    except Exception:  # noqa: BLE001 - never let a logging failure unwind through C
        pass


def _declare(lib):
    vp = ctypes.c_void_p
    pvp = ctypes.POINTER(ctypes.c_void_p)
    ci = ctypes.c_int
    cs = ctypes.c_char_p
    protos = {
        "dlotel_strerror": (cs, [ci]),
        "dlotel_version": (cs, []),
        "dlotel_last_error": (cs, []),
        "dlotel_free": (None, [vp]),
        "dlotel_set_log_callback": (None, [LOG_CALLBACK, vp]),
        "dlotel_config_new_from_env": (ci, [pvp]),
        "dlotel_config_new": (ci, [pvp]),
        "dlotel_config_set": (ci, [vp, cs, cs]),
        "dlotel_config_free": (None, [vp]),
        "dlotel_agent_start": (ci, [pvp, vp]),
        "dlotel_agent_flush": (ci, [vp, ci]),
        "dlotel_agent_status": (ci, [vp, pvp]),
        "dlotel_agent_port": (ci, [vp, ci]),
        "dlotel_agent_daemon_pid": (ci, [vp]),
        "dlotel_agent_spawned": (ci, [vp]),
        "dlotel_agent_stop": (ci, [vp, ctypes.c_uint]),
        "dlotel_agent_free": (None, [vp]),
    }
    for name, (res, args) in protos.items():
        fn = getattr(lib, name)
        fn.restype = res
        fn.argtypes = args


def lib():
    """The loaded library, loaded on first use, with its log lines going to logging."""
    global _lib, _log_callback
    with _lib_lock:
        if _lib is not None:
            return _lib
        errors = []
        for path in _candidates():
            if os.path.isabs(path) and not os.path.exists(path):
                continue
            try:
                loaded = ctypes.CDLL(path)
                _declare(loaded)
            except (OSError, AttributeError) as e:
                errors.append(f"{path}: {e}")
                continue
            _log_callback = LOG_CALLBACK(_on_log)
            loaded.dlotel_set_log_callback(_log_callback, None)
            _lib = loaded
            return _lib
        raise OSError("cannot load libdlotel: " + ("; ".join(errors) or
                      f"no libdlotel.so in {BIN_DIR} or on the system (build the C project with "
                      "CMake, then `pip install ./python`, or set DLOTEL_LIBRARY)"))


def last_error():
    msg = lib().dlotel_last_error()
    return msg.decode("utf-8", "replace") if msg else ""


def strerror(code):
    return lib().dlotel_strerror(code).decode("utf-8", "replace")
