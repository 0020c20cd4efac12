"""The typed configuration: Python options -> the agent's dotted keys (docs/configuration.md).

It mirrors the shape of rotel's Python package: one `exporter`, or an `exporters` dict of named
exporters built with `Config.otlp_exporter(...)` and friends, routed per signal with
`exporters_traces`, `exporters_metrics` and `exporters_logs`, processor chains per signal
(`processors_traces`, ... built with `Config.filter_processor(...)` and friends; see
docs/processors.md), plus batch and log options. Each
option becomes a `key=value` setting handed to `dlotel_config_set()`, which ranks above the
environment and the YAML file; options left at None leave the environment's value alone.
"""

from __future__ import annotations

import json
import numbers
from typing import Dict, Iterable, List, Mapping, Optional, Tuple, Union

Duration = Union[str, int, float]  # "200ms", or seconds
Size = Union[str, int]  # "4MiB", or bytes

# Option -> key, for options that map one to one.
_SIMPLE = {
    "enabled": "enabled",
    "otlp_grpc_endpoint": "receivers.grpc_endpoint",
    "otlp_http_endpoint": "receivers.http_endpoint",
    "grpc_max_message_size": "receivers.grpc_max_message_size",
    "http_max_body_size": "receivers.http_max_body_size",
    "batch_max_size": "batch.max_size",
    "batch_max_bytes": "batch.max_bytes",
    "batch_timeout": "batch.timeout",
    "queue_memory_max_bytes": "queue.memory_max_bytes",
    "log_file": "log.file",
    "log_format": "log.format",
    "log_level": "log.level",
    "log_max_size": "log.max_size",
    "sink": "sink.enabled",
    "data_dir": "sink.data_dir",
    "upstream_url": "upstream.otlp_url",
    "run_url": "upstream.run_url",
    "api_key": "upstream.api_key",
    "admin_endpoint": "admin.endpoint",
    "shutdown_timeout": "shutdown_timeout",
    "state_dir": "state_dir",
    "runtime_dir": "launcher.runtime_dir",
    "daemon_path": "launcher.daemon_path",
    "start_timeout": "launcher.start_timeout",
}

_DURATIONS = {"batch_timeout", "shutdown_timeout", "start_timeout"}

# OTLP exporter option -> key under exporters.<name>.
_OTLP_KEYS = {
    "endpoint": "endpoint",
    "compression": "compression",
    "request_timeout": "request_timeout",
    "retry_enabled": "retry.enabled",
    "retry_initial_backoff": "retry.initial_interval",
    "retry_max_backoff": "retry.max_interval",
    "retry_max_elapsed_time": "retry.max_elapsed_time",
    "tls_cert_file": "tls.cert_file",
    "tls_key_file": "tls.key_file",
    "tls_ca_file": "tls.ca_file",
    "tls_skip_verify": "tls.insecure_skip_verify",
    "disk_queue": "disk_queue.enabled",
    "disk_queue_path": "disk_queue.path",
    "disk_queue_max_bytes": "disk_queue.max_bytes",
    "disk_queue_fsync": "disk_queue.fsync",
    "memory_queue_max_bytes": "memory_queue_max_bytes",
}
_OTLP_DURATIONS = {"request_timeout", "retry_initial_backoff", "retry_max_backoff",
                   "retry_max_elapsed_time"}

_SIGNALS = ("traces", "metrics", "logs")


def duration(value: Duration) -> str:
    """A duration as the agent reads it: strings pass through, numbers are seconds."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"expected a duration (\"5s\" or seconds), got {value!r}")
    if value < 0:
        raise ValueError(f"a duration cannot be negative: {value!r}")
    us = round(float(value) * 1_000_000)
    if us % 1000 == 0:
        return f"{us // 1000}ms"
    return f"{us}us"


def text(value) -> str:
    """A scalar as the agent reads it: booleans as true/false, lists comma-separated."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(text(v) for v in value)
    return str(value)


class Config:
    """Builders for exporter definitions, and the options -> settings mapping.

    >>> Config.otlp_exporter(endpoint="https://collector.example.com", protocol="grpc")
    {'endpoint': 'https://collector.example.com', 'protocol': 'grpc', '_type': 'otlp'}
    """

    @staticmethod
    def otlp_exporter(*, endpoint: Optional[str] = None, protocol: Optional[str] = None,
                      headers: Optional[Mapping[str, str]] = None,
                      compression: Optional[str] = None,
                      request_timeout: Optional[Duration] = None,
                      retry_enabled: Optional[bool] = None,
                      retry_initial_backoff: Optional[Duration] = None,
                      retry_max_backoff: Optional[Duration] = None,
                      retry_max_elapsed_time: Optional[Duration] = None,
                      tls_cert_file: Optional[str] = None, tls_key_file: Optional[str] = None,
                      tls_ca_file: Optional[str] = None, tls_skip_verify: Optional[bool] = None,
                      disk_queue: Optional[bool] = None, disk_queue_path: Optional[str] = None,
                      disk_queue_max_bytes: Optional[Size] = None,
                      disk_queue_fsync: Optional[str] = None,
                      memory_queue_max_bytes: Optional[Size] = None) -> dict:
        """An OTLP exporter: `protocol` is "http" (default, OTLP/HTTP protobuf; `endpoint` is
        the base that /v1/traces etc. are appended to) or "grpc" (`endpoint` is
        http(s)://host:port). Durations are strings ("10s") or seconds."""
        opts = {k: v for k, v in locals().items() if v is not None}
        opts["_type"] = "otlp"
        return opts

    @staticmethod
    def file_exporter(*, path: str) -> dict:
        """Appends every request as one line of OTLP/JSON to `path` (for debugging, tests)."""
        return {"_type": "file", "path": path}

    @staticmethod
    def debug_exporter(*, verbosity: Optional[str] = None) -> dict:
        """Writes every request to the daemon's log: "summary" (one line) or "detailed"."""
        opts = {"_type": "debug"}
        if verbosity is not None:
            opts["verbosity"] = verbosity
        return opts

    @staticmethod
    def sink_exporter() -> dict:
        """Stores telemetry in the daemon's own sink (DuckDB + Parquet) and serves the query
        API."""
        return {"_type": "sink"}

    # ---- processors (docs/processors.md): each returns one item of a processors_* list ----

    @staticmethod
    def filter_processor(*, include_urls: Optional[Union[str, List[str]]] = None,
                         exclude_urls: Optional[Union[str, List[str]]] = None,
                         drop: Optional[List[Mapping]] = None) -> dict:
        """Drops items. For traces, URL lists (comma-separated or a list of patterns: exact
        "/health", prefix "/api/*", regex "^/api/v[0-9]+/.*") judge http.route / url.path of
        the spans where requests enter a service; an include list wins; `exclude_urls=""`
        clears the default list (health checks, /metrics, API docs, favicon). `drop` is a list
        of conditions such as {"name": "^GET /internal"}, {"service": "noisy"},
        {"attribute": "http.method", "value": "OPTIONS"}, {"severity_below": "WARN"}."""
        return _processor("filter", include_urls=include_urls, exclude_urls=exclude_urls,
                          drop=drop)

    @staticmethod
    def sample_processor(*, ratio: Union[float, str]) -> dict:
        """Keeps `ratio` (0 to 1, like OTEL_TRACES_SAMPLER_ARG) of the traces, decided by trace
        id so every agent agrees and a trace is never split (traces and logs)."""
        return _processor("sample", ratio=ratio)

    @staticmethod
    def attributes_processor(*, actions: Optional[List[Mapping]] = None,
                             redact_keys: Optional[Union[str, List[str]]] = None,
                             redact_values: Optional[Union[str, List[str]]] = None,
                             targets: Optional[List[str]] = None) -> dict:
        """Actions {"key", "action": insert|update|upsert|delete|hash, "value"} as in the
        OpenTelemetry collector, then redaction ("****") of values whose key or string value
        matches a pattern; `targets` among resource, span, event, link, log, datapoint."""
        return _processor("attributes", actions=actions, redact_keys=redact_keys,
                          redact_values=redact_values, targets=targets)

    @staticmethod
    def resource_processor(*, user_uid: Optional[str] = None, host_name: Optional[bool] = None,
                           container_id: Optional[bool] = None, process: Optional[bool] = None,
                           service_instance_id: Optional[bool] = None) -> dict:
        """Adds host.name, container.id and service.instance.id (with process=True also the
        agent's process.pid) to resources that lack them, and datalayer.user_uid when given."""
        return _processor("resource", user_uid=user_uid, host_name=host_name,
                          container_id=container_id, process=process,
                          service_instance_id=service_instance_id)

    @staticmethod
    def limits_processor(*, max_value_length: Optional[int] = None,
                         max_attributes: Optional[int] = None,
                         targets: Optional[List[str]] = None) -> dict:
        """Cuts string values to `max_value_length` bytes and keeps at most `max_attributes`
        attributes per set, counting what was dropped."""
        return _processor("limits", max_value_length=max_value_length,
                          max_attributes=max_attributes, targets=targets)

    @staticmethod
    def settings(**options) -> List[Tuple[str, str]]:
        """The (key, value) settings for the options of `dlotel.Agent(...)`. Raises TypeError
        for an unknown option and ValueError for a value this layer can already refuse; the
        agent checks every value again."""
        out: List[Tuple[str, str]] = []
        options = {k: v for k, v in options.items() if v is not None}
        exporter = options.pop("exporter", None)
        exporters = dict(options.pop("exporters", None) or {})
        if exporter is not None:
            if "default" in exporters:
                raise ValueError("give either exporter= or an exporter named 'default' in "
                                 "exporters=, not both")
            exporters["default"] = exporter
        for name, ex in exporters.items():
            out.extend(_exporter_settings(name, ex))
        routing = {}
        for sig in _SIGNALS:
            names = options.pop(f"exporters_{sig}", None)
            if names is not None:
                if isinstance(names, str):
                    raise TypeError(f"exporters_{sig} must be a list of exporter names")
                routing[sig] = list(names)
                out.append((f"exporters_{sig}", ",".join(names)))
        for sig in _SIGNALS:
            chain = options.pop(f"processors_{sig}", None)
            if chain is not None:
                if isinstance(chain, (str, Mapping)) or not all(
                        isinstance(p, Mapping) and "kind" in p for p in chain):
                    raise TypeError(f"processors_{sig} must be a list of processors built with "
                                    "Config.filter_processor(...) and friends")
                out.append((f"processors_{sig}", json.dumps([dict(p) for p in chain])))
        debug_log = options.pop("debug_log", None)
        if debug_log is not None:
            out.extend(_debug_log_settings(debug_log, list(exporters), routing))
        exit_when_unused = options.pop("exit_when_unused", None)
        if exit_when_unused is not None:
            if exit_when_unused is False:
                value = "off"
            elif exit_when_unused is True:
                value = "5s"
            else:
                value = duration(exit_when_unused)
            out.append(("launcher.exit_when_unused", value))
        raw = options.pop("settings", None) or {}
        for key, value in options.items():
            if key not in _SIMPLE:
                raise TypeError(f"unknown option {key!r} (options: "
                                f"{', '.join(sorted(list(_SIMPLE) + _OTHER_OPTIONS))})")
            out.append((_SIMPLE[key], duration(value) if key in _DURATIONS else text(value)))
        for key, value in dict(raw).items():
            out.append((str(key), text(value)))
        return out


_OTHER_OPTIONS = ["exporter", "exporters", "exporters_traces", "exporters_metrics",
                  "exporters_logs", "processors_traces", "processors_metrics",
                  "processors_logs", "debug_log", "exit_when_unused", "settings"]


def _processor(kind: str, **opts) -> dict:
    out = {"kind": kind}
    out.update({k: v for k, v in opts.items() if v is not None})
    return out


def _exporter_settings(name: str, ex: Mapping) -> Iterable[Tuple[str, str]]:
    if not isinstance(ex, Mapping) or "_type" not in ex:
        raise TypeError(f"exporter {name!r}: build it with Config.otlp_exporter(...), "
                        "Config.file_exporter(...), Config.debug_exporter() or "
                        "Config.sink_exporter()")
    ex = dict(ex)
    kind = ex.pop("_type")
    pfx = f"exporters.{name}."
    if kind == "otlp":
        protocol = (ex.pop("protocol", None) or "http").lower()
        if protocol not in ("http", "grpc"):
            raise ValueError(f"exporter {name!r}: protocol must be 'http' or 'grpc', got "
                             f"{protocol!r}")
        yield pfx + "type", "otlp_" + protocol
        headers = ex.pop("headers", None) or {}
        for key, value in ex.items():
            if key in _SIGNALS:
                raise ValueError(f"exporter {name!r}: per-signal endpoints ({key}=) are not "
                                 "supported; define one exporter per signal and route them with "
                                 "exporters_traces / exporters_metrics / exporters_logs")
            if key not in _OTLP_KEYS:
                raise TypeError(f"exporter {name!r}: unknown option {key!r}")
            yield pfx + _OTLP_KEYS[key], duration(value) if key in _OTLP_DURATIONS else text(value)
        for hname, hvalue in dict(headers).items():
            yield pfx + "headers." + str(hname), str(hvalue)
    elif kind in ("file", "debug", "sink"):
        yield pfx + "type", kind
        for key, value in ex.items():
            yield pfx + key, text(value)
    else:
        raise ValueError(f"exporter {name!r}: unknown exporter type {kind!r}")


def _debug_log_settings(debug_log, exporter_names, routing) -> Iterable[Tuple[str, str]]:
    """debug_log=True logs at debug level; a list of signals also logs those signals' requests
    through a `debug` exporter, which needs the other exporters named here (adding an exporter
    turns off the default upstream exporter the agent makes when none is configured)."""
    if isinstance(debug_log, bool):
        if debug_log:
            yield "log.level", "debug"
        return
    signals = [debug_log] if isinstance(debug_log, str) else list(debug_log)
    for s in signals:
        if s not in _SIGNALS:
            raise ValueError(f"debug_log: unknown signal {s!r} (traces, metrics, logs)")
    if not signals:
        return
    if not exporter_names:
        raise ValueError("debug_log with signals needs exporter= or exporters=: an extra debug "
                         "exporter would replace the default upstream; use debug_log=True for "
                         "a debug-level log instead")
    if "debug" in exporter_names:
        raise ValueError("debug_log with signals adds an exporter named 'debug'; that name is "
                         "taken")
    yield "exporters.debug.type", "debug"
    for sig in _SIGNALS:
        routed = routing.get(sig)
        names = list(routed) if routed is not None else list(exporter_names)
        if sig in signals:
            names.append("debug")
        yield f"exporters_{sig}", ",".join(names)


def exporter_names(settings: Iterable[Tuple[str, str]]) -> Dict[str, str]:
    """{name: type} of the exporters the settings define (for messages and tests)."""
    out = {}
    for key, value in settings:
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == "exporters" and parts[2] == "type":
            out[parts[1]] = value
    return out
