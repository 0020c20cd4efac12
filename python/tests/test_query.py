"""dlotel.query(): where it finds the API, what it sends, and how it fails. Pure Python, no
libdlotel needed. Against a real `dlotel serve` it is tested in
tests/integration/test_cli_client.py (test_python_query_against_serve).

    /usr/bin/python3 -m pytest python/tests/test_query.py
"""

import http.server
import json
import os
import socket
import sys
import threading

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import dlotel  # noqa: E402


@pytest.fixture
def env(monkeypatch):
    for k in list(os.environ):
        if k.startswith("DATALAYER_"):
            monkeypatch.delenv(k)
    return monkeypatch


def test_api_base_resolution(env):
    assert dlotel._api_base(None) == "http://localhost:7800/api/otel/v1"
    env.setenv("DATALAYER_OTEL_PORT", "7801")
    assert dlotel._api_base(None) == "http://localhost:7801/api/otel/v1"
    env.setenv("DATALAYER_RUN_URL", "https://prod1.datalayer.run/")
    assert dlotel._api_base(None) == "https://prod1.datalayer.run/api/otel/v1"
    env.setenv("DATALAYER_OTEL_URL", "http://otel:9/custom/")
    assert dlotel._api_base(None) == "http://otel:9/custom"
    assert dlotel._api_base("127.0.0.1:5") == "http://127.0.0.1:5/api/otel/v1"
    with pytest.raises(ValueError):
        dlotel._api_base("ftp://x/")


class Recorder(http.server.ThreadingHTTPServer):
    """A real HTTP server that answers POST /api/otel/v1/query/ with a fixed status and body and
    keeps what it was sent."""

    daemon_threads = True

    def __init__(self, status, answer):
        self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(h):
                body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
                self.seen.append((h.path, dict(h.headers), json.loads(body)))
                data = json.dumps(answer).encode()
                h.send_response(status)
                h.send_header("Content-Type", "application/json")
                h.send_header("Content-Length", str(len(data)))
                h.end_headers()
                h.wfile.write(data)

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self):
        self.shutdown()
        self.server_close()


def test_rows_as_dicts_with_columns(env):
    answer = {"success": True, "columns": ["service_name", "n"],
              "data": [{"service_name": "a", "n": 3}, {"service_name": "b", "n": 1}],
              "count": 2, "truncated": True}
    srv = Recorder(200, answer)
    try:
        env.setenv("DATALAYER_API_KEY", "k-123")
        rows = dlotel.query("SELECT service_name, count(*) AS n FROM spans WHERE x = $1 "
                            "AND y = $2", [7, None], url=srv.url)
        assert rows == answer["data"]
        assert rows.columns == ["service_name", "n"] and rows.truncated is True
        path, headers, body = srv.seen[0]
        assert path == "/api/otel/v1/query/"
        assert body == {"sql": "SELECT service_name, count(*) AS n FROM spans WHERE x = $1 "
                               "AND y = $2", "params": ["7", None]}
        assert headers["Authorization"] == "Bearer k-123"
        assert headers["Content-Type"] == "application/json"
    finally:
        srv.close()


def test_server_error_raises_with_its_sentence(env):
    srv = Recorder(400, {"success": False, "error": "Parser Error: syntax error at \"SELEC\""})
    try:
        with pytest.raises(dlotel.QueryError) as e:
            dlotel.query("SELEC 1", url=srv.url)
        assert e.value.status == 400
        assert str(e.value) == "Parser Error: syntax error at \"SELEC\""
        assert isinstance(e.value, dlotel.DlotelError)
    finally:
        srv.close()


def test_unreachable_says_where(env):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(dlotel.QueryError) as e:
        dlotel.query("SELECT 1", url=f"http://127.0.0.1:{port}", timeout=5)
    assert e.value.status == 0
    assert f"127.0.0.1:{port}/api/otel/v1" in str(e.value) and "dlotel serve" in str(e.value)


def test_empty_sql_is_a_value_error(env):
    with pytest.raises(ValueError):
        dlotel.query("  ")
