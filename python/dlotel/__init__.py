"""dlotel: the Datalayer OpenTelemetry agent, embedded.

    import dlotel
    dlotel.start()          # configured from the environment (DATALAYER_*)

starts one agent daemon per user and host (or attaches to the one already running): it listens
where OpenTelemetry SDKs export by default, OTLP/gRPC on localhost:4317 and OTLP/HTTP on
localhost:4318, batches, and forwards to the Datalayer collector or any OTLP endpoint. Every
process that calls start() (gunicorn workers, notebooks) shares that one daemon.

Typed configuration, overriding the environment, in the shape of rotel's package:

    agent = dlotel.Agent(
        exporters={"up": dlotel.Config.otlp_exporter(endpoint="https://collector.example.com",
                                                     headers={"Authorization": "Bearer ..."})},
        batch_timeout=1.0,
    )
    agent.start()
    ...
    agent.flush(timeout=5)       # send what the daemon holds
    agent.status()               # queue depth, drops, last export error, upstream reachable
    agent.stop()                 # detach; the daemon keeps serving the other processes

Failures raise DlotelError (or a subclass) carrying the daemon's own message. The library's log
lines go to logging.getLogger("dlotel"). OTEL_SDK_DISABLED=true turns it all off: start()
returns an agent that is not running.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
import weakref
from typing import Any, Dict, List, Optional, Sequence

from . import _native
from .config import Config

__all__ = [
    "Agent", "Config", "DlotelError", "ConfigError", "ConfigMismatchError", "AddressInUseError",
    "DaemonError", "ClosedError", "AgentTimeoutError", "start", "flush", "status", "stop",
    "query", "version", "agent",
]

__version__ = "0.1.0"

logger = logging.getLogger("dlotel")


class DlotelError(Exception):
    """A dlotel call failed. `code` is the C library's enum dlotel_error value; `message` the
    detail (for a daemon that would not start, its own words)."""

    def __init__(self, code: int, message: str):
        self.code = code
        self.message = message
        super().__init__(message)


class ConfigError(DlotelError, ValueError):
    """The configuration is invalid (every problem, one per line)."""


class ConfigMismatchError(DlotelError):
    """A dlotel daemon already runs for this user with a different configuration."""


class AddressInUseError(DlotelError, OSError):
    """A port the daemon needs is held by another program (the message names it)."""


class DaemonError(DlotelError):
    """The daemon could not be spawned, or died while starting (the message quotes its log)."""


class ClosedError(DlotelError):
    """The agent was stopped, or its daemon is gone."""


class AgentTimeoutError(DlotelError, TimeoutError):
    """An operation did not finish in time (flush: the message says what is left)."""


_ERRORS = {
    _native.ERR_CONFIG: ConfigError,
    _native.ERR_CONFIG_MISMATCH: ConfigMismatchError,
    _native.ERR_ADDR_IN_USE: AddressInUseError,
    _native.ERR_DAEMON: DaemonError,
    _native.ERR_CLOSED: ClosedError,
    _native.ERR_TIMEOUT: AgentTimeoutError,
}


def _error(code: int) -> DlotelError:
    detail = _native.last_error()
    message = detail or _native.strerror(code)
    return _ERRORS.get(code, DlotelError)(code, message)


def version() -> str:
    """The version of the loaded libdlotel."""
    return _native.lib().dlotel_version().decode()


# Agents alive in this process, so that a forked child can drop the ones it inherited.
_agents: "weakref.WeakSet[Agent]" = weakref.WeakSet()


class Agent:
    """This process's attachment to the dlotel daemon.

    Options (all optional; None leaves the environment's value): `enabled`,
    `otlp_grpc_endpoint`, `otlp_http_endpoint` ("host:port", port 0 picks a free one),
    `exporter` or `exporters` ({name: Config.otlp_exporter(...)}), `exporters_traces`,
    `exporters_metrics`, `exporters_logs`, `batch_max_size`, `batch_max_bytes`,
    `batch_timeout`, `log_file`, `log_format`, `log_level`, `debug_log`, `sink`, `data_dir`,
    `upstream_url`, `run_url`, `api_key`, `admin_endpoint`, `shutdown_timeout`, `state_dir`,
    `runtime_dir`, `daemon_path`, `start_timeout`, `exit_when_unused` (True, False, or a grace
    in seconds: the daemon drains and exits once no process is attached), and `settings`, a
    dict of raw dotted keys (docs/configuration.md). `env=False` ignores the environment.
    """

    def __init__(self, *, env: bool = True, **options: Any):
        self._settings = Config.settings(**options)
        self._env = env
        self._handle: Optional[int] = None
        self._lock = threading.RLock()
        self._owner_pid = os.getpid()
        self.enabled = True
        self.pid: Optional[int] = None
        self.grpc_port: Optional[int] = None
        self.http_port: Optional[int] = None
        self.spawned = False
        _agents.add(self)

    # ---- lifetime -------------------------------------------------------------------------

    def start(self) -> "Agent":
        """Starts the daemon or attaches to the running one; returns self. Blocks until the
        daemon listens (at most launcher.start_timeout, 15 s by default). Raises DlotelError;
        when the agent is disabled (OTEL_SDK_DISABLED=true), returns self with
        `enabled == False` and nothing running."""
        lib = _native.lib()
        with self._lock:
            if self._handle is not None:
                return self
            cfg = ctypes.c_void_p()
            new = lib.dlotel_config_new_from_env if self._env else lib.dlotel_config_new
            rv = new(ctypes.byref(cfg))
            if rv != 0:
                raise _error(rv)
            try:
                for key, value in self._settings:
                    rv = lib.dlotel_config_set(cfg, key.encode(), value.encode())
                    if rv != 0:
                        raise _error(rv)
                handle = ctypes.c_void_p()
                rv = lib.dlotel_agent_start(ctypes.byref(handle), cfg)
            finally:
                lib.dlotel_config_free(cfg)
            if rv == _native.ERR_DISABLED:
                self.enabled = False
                logger.info("%s", _native.last_error())
                return self
            if rv != 0:
                raise _error(rv)
            self.enabled = True
            self._handle = handle.value
            self._owner_pid = os.getpid()
            self.pid = lib.dlotel_agent_daemon_pid(self._handle)
            self.grpc_port = lib.dlotel_agent_port(self._handle, _native.PORT_GRPC)
            self.http_port = lib.dlotel_agent_port(self._handle, _native.PORT_HTTP)
            self.spawned = bool(lib.dlotel_agent_spawned(self._handle))
            return self

    @property
    def running(self) -> bool:
        """Attached (the daemon may still have died since: status() tells)."""
        return self._handle is not None

    @property
    def http_endpoint(self) -> Optional[str]:
        """http://127.0.0.1:<port>, for an SDK exporter's endpoint (OTLP/HTTP)."""
        return f"http://127.0.0.1:{self.http_port}" if self.http_port else None

    @property
    def grpc_endpoint(self) -> Optional[str]:
        """http://127.0.0.1:<port>, for an SDK exporter's endpoint (OTLP/gRPC)."""
        return f"http://127.0.0.1:{self.grpc_port}" if self.grpc_port else None

    def _require(self) -> int:
        if self._handle is None:
            if not self.enabled:
                raise ClosedError(_native.ERR_CLOSED, "dlotel is disabled (OTEL_SDK_DISABLED)")
            raise ClosedError(_native.ERR_CLOSED, "the agent is not started")
        return self._handle

    def flush(self, timeout: float = 5.0) -> None:
        """Asks the daemon to send everything it holds and waits until its queues are empty,
        for at most `timeout` seconds. Flush the OpenTelemetry SDK first (its batch processor
        holds data in this process). Raises AgentTimeoutError with what is left and the last
        export error. A disabled agent returns at once."""
        if not self.enabled:
            return
        ms = int(max(0.0, min(float(timeout), 3600.0)) * 1000)
        with self._lock:
            rv = _native.lib().dlotel_agent_flush(self._require(), ms)
        if rv != 0:
            raise _error(rv)

    def status(self) -> Dict[str, Any]:
        """The daemon's status: `queue_depth` (items waiting to be sent), `dropped`,
        `last_export_error` (None or {exporter, signal, message, time_unix_nano}),
        `upstream_reachable` (True, False, or None before any export), `users` (attached
        processes), `pid`, ports, and per exporter counters under `exporters`."""
        if not self.enabled:
            return {"enabled": False}
        lib = _native.lib()
        out = ctypes.c_void_p()
        with self._lock:
            rv = lib.dlotel_agent_status(self._require(), ctypes.byref(out))
        if rv != 0:
            raise _error(rv)
        try:
            text = ctypes.string_at(out.value).decode("utf-8")
        finally:
            lib.dlotel_free(out)
        st = json.loads(text)
        st["enabled"] = True
        st["queue_depth"] = st.get("queue_items", 0)
        st["dropped"] = st.get("dropped_items", 0)
        return st

    def stop(self, daemon: bool = False) -> None:
        """Detaches this process: the daemon keeps serving the others (and, with
        exit_when_unused, exits once none is left). `daemon=True` stops the daemon itself,
        whoever uses it, after it drains its queues, and waits for it to exit."""
        with self._lock:
            if self._handle is None:
                return
            lib = _native.lib()
            rv = lib.dlotel_agent_stop(self._handle, _native.STOP_DAEMON if daemon else 0)
            err = _error(rv) if rv != 0 else None
            lib.dlotel_agent_free(self._handle)
            self._handle = None
        if err is not None:
            raise err

    def _forget_after_fork(self) -> None:
        # In a forked child the connection belongs to the parent: drop our copy, quietly.
        if self._handle is not None and self._owner_pid != os.getpid():
            lib = _native.lib()
            lib.dlotel_agent_stop(self._handle, 0)  # Closes the inherited socket only.
            lib.dlotel_agent_free(self._handle)
            self._handle = None
        self._lock = threading.RLock()

    def __enter__(self) -> "Agent":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self):
        handle = getattr(self, "_handle", None)
        if handle is not None and _native._lib is not None:
            try:
                if self._owner_pid == os.getpid():
                    _native._lib.dlotel_agent_free(handle)
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass

    def __repr__(self) -> str:
        if not self.enabled:
            return "<dlotel.Agent disabled>"
        if self._handle is None:
            return "<dlotel.Agent not started>"
        return (f"<dlotel.Agent daemon pid {self.pid}, grpc :{self.grpc_port}, "
                f"http :{self.http_port}>")


# ---- the process-wide agent of dlotel.start() -------------------------------------------------

_default: Optional[Agent] = None
_default_lock = threading.Lock()


def start(**options: Any) -> Agent:
    """Starts (or attaches to) the daemon, configured from the environment plus `options`
    (those of Agent), and makes it this process's agent. Calling it again returns the same
    agent while its daemon lives; if the daemon died, a new one is started. Raises DlotelError
    with the daemon's message."""
    global _default
    with _default_lock:
        if _default is not None and _default.running and _default._owner_pid == os.getpid():
            try:
                _default.status()
                return _default
            except ClosedError:
                logger.warning("the dlotel daemon (pid %s) is gone; starting a new one",
                               _default.pid)
                _default.stop()
        a = Agent(**options)
        a.start()
        _default = a
        return a


def agent() -> Optional[Agent]:
    """This process's agent from start(), or None."""
    return _default


def _default_or_raise() -> Agent:
    if _default is None:
        raise ClosedError(_native.ERR_CLOSED, "dlotel.start() was not called")
    return _default


def flush(timeout: float = 5.0) -> None:
    """flush() of the agent from start()."""
    _default_or_raise().flush(timeout)


def status() -> Dict[str, Any]:
    """status() of the agent from start()."""
    return _default_or_raise().status()


def stop(daemon: bool = False) -> None:
    """stop() of the agent from start(); a no-op when there is none."""
    global _default
    with _default_lock:
        a, _default = _default, None
    if a is not None:
        a.stop(daemon=daemon)


# ---- query(): SQL over the local sink's query API ---------------------------------------------

_API_PREFIX = "/api/otel/v1"


class QueryError(DlotelError):
    """query() failed: `status` is the HTTP status (0 when the API could not be reached) and
    `message` the server's own sentence (or why nothing answered); `url` is where it asked."""

    def __init__(self, message: str, status: int = 0, url: str = ""):
        code = _native.ERR_CLOSED if status == 0 else _native.ERR_BAD_INPUT
        super().__init__(code, message)
        self.status = status
        self.url = url


class QueryResult(list):
    """The rows of a query, a list of dicts (column -> value), with the answer's `columns` (in
    order) and `truncated` (True when the server's row cap cut the answer)."""

    columns: List[str]
    truncated: bool


def _api_base(url: Optional[str]) -> str:
    """The query API's base URL: `url`, else the API of this process's agent when its status
    reports one ("api_port") or its settings name one (api.port), else $DATALAYER_OTEL_URL, $DATALAYER_OTEL_RUN_URL or
    $DATALAYER_RUN_URL, else http://localhost:$DATALAYER_OTEL_PORT (7800). A URL with no path
    gets /api/otel/v1, as in the `dlotel` command's --url."""
    if not url:
        a = _default
        if a is not None and a.running:
            try:
                port = a.status().get("api_port")
            except (DlotelError, OSError):
                port = None
            if not port:
                # A daemon without a sink reports no API: try the port it was given.
                given = dict(a._settings).get("api.port")
                port = given if given and str(given) != "0" else None
            if port:
                url = f"http://127.0.0.1:{int(port)}"
    if not url:
        for name in ("DATALAYER_OTEL_URL", "DATALAYER_OTEL_RUN_URL", "DATALAYER_RUN_URL"):
            if os.environ.get(name):
                url = os.environ[name]
                break
    if not url:
        url = f"http://localhost:{os.environ.get('DATALAYER_OTEL_PORT') or 7800}"
    if "://" not in url:
        url = "http://" + url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {url!r}")
    path = parts.path.rstrip("/") or _API_PREFIX
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def query(sql: str, params: Optional[Sequence[Any]] = None, *, url: Optional[str] = None,
          token: Optional[str] = None, timeout: float = 30.0) -> "QueryResult":
    """Runs one SELECT over the sink's `spans`, `logs` and `metrics` tables and returns the
    rows as a list of dicts, columns in the answer's order:

        dlotel.query("SELECT service_name, count(*) AS n FROM spans GROUP BY 1")
        dlotel.query("SELECT * FROM logs WHERE trace_id = $1", [trace_id])

    The API is the one of this process's agent (dlotel.start() in sink mode), or the one the
    environment names (see _api_base); `url` overrides. `params` bind $1, $2... (sent as text).
    `token` (else $DATALAYER_API_KEY) is sent as a bearer token. Raises QueryError with the
    server's message (refused or bad SQL, timeout) or why it could not be reached."""
    if not isinstance(sql, str) or not sql.strip():
        raise ValueError("query() needs the SQL text")
    base = _api_base(url)
    body: Dict[str, Any] = {"sql": sql}
    if params is not None:
        body["params"] = [None if p is None else str(p) for p in params]
    headers = {"Content-Type": "application/json", "Accept": "application/json",
               "User-Agent": f"dlotel-python/{__version__}"}
    token = token or os.environ.get("DATALAYER_API_KEY")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    target = base + "/query/"
    req = urllib.request.Request(target, data=json.dumps(body).encode("utf-8"),
                                 headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            message = json.loads(raw.decode("utf-8", "replace")).get("error")
        except (ValueError, AttributeError):
            message = None
        if not message:
            message = f"{target} answered HTTP {e.code}"
        raise QueryError(message, e.code, target) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise QueryError(f"cannot reach the dlotel query API at {base} ({reason}); is a sink "
                         f"running (dlotel serve, or dlotel.start(sink=True))?", 0,
                         target) from None
    try:
        answer = json.loads(raw.decode("utf-8"))
    except ValueError:
        raise QueryError(f"{target} answered something that is not JSON", 200, target) from None
    if not isinstance(answer, dict) or answer.get("success") is False:
        message = answer.get("error") if isinstance(answer, dict) else None
        raise QueryError(message or "the query failed", 200, target)
    out = QueryResult(answer.get("data") or [])
    out.columns = list(answer.get("columns") or [])
    out.truncated = bool(answer.get("truncated"))
    return out


def _after_fork_in_child() -> None:
    global _default, _default_lock
    _default_lock = threading.Lock()
    for a in list(_agents):
        a._forget_after_fork()
    _default = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
