"""The typed configuration: Python options -> the agent's keys, and the library checking them.

    DLOTEL_LIBRARY=build/lib/libdlotel.so /usr/bin/python3 -m pytest python/tests
"""

import ctypes
import os
import socket
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import dlotel  # noqa: E402
from dlotel import _native  # noqa: E402
from dlotel.config import Config, duration, exporter_names  # noqa: E402


def test_rotel_shaped_options_map_to_keys():
    s = Config.settings(
        exporters={
            "up": Config.otlp_exporter(endpoint="https://c.example.com", protocol="grpc",
                                       headers={"Authorization": "Bearer a,b", "x-team": "t"},
                                       compression="zstd", request_timeout=2.5,
                                       retry_initial_backoff="1s", retry_max_backoff=30,
                                       retry_max_elapsed_time="5m", tls_ca_file="/ca.pem",
                                       tls_skip_verify=False),
            "f": Config.file_exporter(path="/tmp/out.jsonl"),
        },
        exporters_traces=["up", "f"], exporters_metrics=["up"], exporters_logs=[],
        batch_max_size=100, batch_timeout=0.2, otlp_http_endpoint="127.0.0.1:0",
        exit_when_unused=True, sink=False,
    )
    d = dict(s)
    assert d["exporters.up.type"] == "otlp_grpc"
    assert d["exporters.up.endpoint"] == "https://c.example.com"
    # One header a key: values keep their commas.
    assert d["exporters.up.headers.Authorization"] == "Bearer a,b"
    assert d["exporters.up.headers.x-team"] == "t"
    assert d["exporters.up.compression"] == "zstd"
    assert d["exporters.up.request_timeout"] == "2500ms"
    assert d["exporters.up.retry.initial_interval"] == "1s"
    assert d["exporters.up.retry.max_interval"] == "30000ms"
    assert d["exporters.up.retry.max_elapsed_time"] == "5m"
    assert d["exporters.up.tls.ca_file"] == "/ca.pem"
    assert d["exporters.up.tls.insecure_skip_verify"] == "false"
    assert d["exporters.f.type"] == "file" and d["exporters.f.path"] == "/tmp/out.jsonl"
    assert d["exporters_traces"] == "up,f" and d["exporters_metrics"] == "up"
    assert d["exporters_logs"] == ""  # An empty list drops the signal.
    assert d["batch.max_size"] == "100" and d["batch.timeout"] == "200ms"
    assert d["receivers.http_endpoint"] == "127.0.0.1:0"
    assert d["launcher.exit_when_unused"] == "5s"
    assert d["sink.enabled"] == "false"
    assert exporter_names(s) == {"up": "otlp_grpc", "f": "file"}


def test_single_exporter_and_unset_options():
    s = Config.settings(exporter=Config.otlp_exporter(endpoint="http://x:4318"),
                        batch_timeout=None, exit_when_unused=False)
    assert dict(s) == {"exporters.default.type": "otlp_http",
                       "exporters.default.endpoint": "http://x:4318",
                       "launcher.exit_when_unused": "off"}
    assert Config.settings() == []


def test_refusals():
    with pytest.raises(TypeError, match="unknown option 'batch_timout'"):
        Config.settings(batch_timout=1)
    with pytest.raises(ValueError, match="protocol must be"):
        Config.settings(exporter=Config.otlp_exporter(protocol="udp"))
    with pytest.raises(ValueError, match="per-signal endpoints"):
        Config.settings(exporter={"_type": "otlp", "traces": {"endpoint": "x"}})
    with pytest.raises(TypeError, match="build it with Config"):
        Config.settings(exporters={"up": {"endpoint": "x"}})
    with pytest.raises(TypeError, match="list of exporter names"):
        Config.settings(exporters_traces="up")
    with pytest.raises(ValueError, match="needs exporter= or exporters="):
        Config.settings(debug_log=["traces"])
    with pytest.raises(ValueError, match="negative"):
        duration(-1)


def test_debug_log():
    assert dict(Config.settings(debug_log=True)) == {"log.level": "debug"}
    s = dict(Config.settings(exporters={"up": Config.otlp_exporter(endpoint="http://u")},
                             exporters_metrics=[], debug_log=["traces", "logs"]))
    assert s["exporters.debug.type"] == "debug"
    assert s["exporters_traces"] == "up,debug"
    assert s["exporters_metrics"] == ""  # The user's routing stays.
    assert s["exporters_logs"] == "up,debug"


def test_durations():
    assert duration("1m30s") == "1m30s"
    assert duration(0) == "0ms"
    assert duration(1) == "1000ms"
    assert duration(0.0005) == "500us"
    with pytest.raises(TypeError):
        duration(True)


def test_library_checks_every_key():
    """dlotel_config_set() checks a key and its value at once, with the config room's words."""
    lib = _native.lib()
    cfg = ctypes.c_void_p()
    assert lib.dlotel_config_new(ctypes.byref(cfg)) == 0
    try:
        assert lib.dlotel_config_set(cfg, b"batch.timeout", b"1s") == 0
        assert lib.dlotel_config_set(cfg, b"exporters.up.headers.Authorization", b"Bearer x") == 0
        assert lib.dlotel_config_set(cfg, b"batch.timout", b"1s") == _native.ERR_CONFIG
        assert "did you mean" in _native.last_error()
        assert lib.dlotel_config_set(cfg, b"batch.timeout", b"soon") == _native.ERR_CONFIG
        assert "batch.timeout" in _native.last_error()
        assert lib.dlotel_config_set(cfg, b"launcher.exit_when_unused", b"30s") == 0
        assert lib.dlotel_config_set(cfg, b"launcher.exit_when_unused", b"sometimes") == \
            _native.ERR_CONFIG
        assert lib.dlotel_config_set(cfg, b"launcher.runtime_dir", b"relative") == \
            _native.ERR_CONFIG
        assert lib.dlotel_config_set(cfg, b"launcher.nope", b"1") == _native.ERR_CONFIG
        assert lib.dlotel_config_set(cfg, b"launcher.start_timeout", b"2s") == 0
        # A successful call clears the thread's detail string.
        assert _native.last_error() == ""
        assert lib.dlotel_config_set(None, b"a", b"b") == _native.ERR_INVALID_ARG
    finally:
        lib.dlotel_config_free(cfg)


def test_errors_and_version():
    assert dlotel.version() == "0.1.0"
    assert _native.strerror(_native.ERR_CONFIG_MISMATCH) != "unknown error"
    assert _native.strerror(_native.ERR_DISABLED) != "unknown error"
    assert _native.strerror(_native.ERR_DAEMON) != "unknown error"
    assert _native.strerror(-9999) == "unknown error"
    e = dlotel._ERRORS[_native.ERR_ADDR_IN_USE](_native.ERR_ADDR_IN_USE, "port 1 is in use")
    assert isinstance(e, dlotel.DlotelError) and isinstance(e, OSError)
    assert e.code == -7 and str(e) == "port 1 is in use"
    # query() with no API to answer: a QueryError that says where it looked (status 0).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once the socket is closed
    with pytest.raises(dlotel.QueryError) as ei:
        dlotel.query("select 1", url=f"http://127.0.0.1:{port}")
    assert ei.value.status == 0 and str(port) in str(ei.value)


def test_agent_not_started_and_module_level_calls():
    a = dlotel.Agent()
    assert not a.running and repr(a) == "<dlotel.Agent not started>"
    with pytest.raises(dlotel.ClosedError, match="not started"):
        a.flush()
    a.stop()  # Stopping what never started is fine.
    dlotel.stop()
    with pytest.raises(dlotel.ClosedError, match="dlotel.start"):
        dlotel.status()
