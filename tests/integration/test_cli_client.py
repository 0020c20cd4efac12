"""The client commands of `dlotel` (issue 6, DESIGN.md section 7) against a real `dlotel serve`
holding real data: the JS SDK's payloads posted to its OTLP/HTTP port, then every command run as
a user runs it (fresh HOME, no DATALAYER_* in the environment, --url from the ready file). Each
table is checked against the REST answer the command is made from, --json against that answer
byte for byte, and the exit codes against what docs/cli.md promises.

The issue's "done when": `dlotel serve`, then `dlotel smoke-test` passes and `dlotel traces`
lists the smoke trace. Against a server that answers 200 but stores nothing, smoke-test fails.
"""

import http.server
import json
import os
import re
import socket
import subprocess
import threading
import time

import pytest
import requests

import itlib

CLI_TIMEOUT = 120
JWT_SECRET = "cli-test-secret-0123456789abcdef0123456789"  # only ever in the environment


def clean_env(home, **extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DATALAYER_", "XDG_", "OTEL_", "COLUMNS"))}
    env["HOME"] = str(home)
    env.update(extra)
    return env


class Serve(itlib.Agent):
    """`dlotel serve` with its API on a free port and its data in the test's directory."""

    def __init__(self, workdir, home, env_extra=None):
        super().__init__(workdir, env=clean_env(home, **(env_extra or {})),
                         extra_args=["--set", "api.port=0", "--set", "api.host=127.0.0.1",
                                     "--set", f"sink.data_dir={workdir}/data"])
        self.command = "serve"

    def exporter_args(self):
        return []

    def start(self):
        super().start()
        with open(self.ready_path) as f:
            ready = json.load(f)
        assert "api_port" in ready, f"the ready file has no api_port: {ready}"
        self.api_port = int(ready["api_port"])
        return self

    @property
    def api(self):
        return f"http://127.0.0.1:{self.api_port}/api/otel/v1"

    @property
    def url(self):
        # No path on purpose: the CLI adds /api/otel/v1, as users type it.
        return f"http://127.0.0.1:{self.api_port}"


def run_cli(args, home, url=None, env_extra=None, timeout=CLI_TIMEOUT):
    cmd = [itlib.dlotel_bin()] + list(args)
    if url is not None:
        cmd += ["--url", url]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                       env=clean_env(home, **(env_extra or {})), stdin=subprocess.DEVNULL)
    out, err = p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
    for marker in itlib.CRASH_MARKERS:
        assert marker not in err, f"dlotel {' '.join(args)} reported {marker}:\n{err}"
    return p.returncode, out, err


def cli_ok(args, home, url, **kw):
    rc, out, err = run_cli(args, home, url, **kw)
    assert rc == 0, f"dlotel {' '.join(args)} exited {rc}:\nstdout:\n{out}\nstderr:\n{err}"
    return out, err


def rest(serve, method, path, **kw):
    r = requests.request(method, serve.api + path, timeout=60, **kw)
    assert r.status_code == 200, f"{method} {path}: {r.status_code} {r.text[:500]}"
    return r


def lines(text):
    return [ln for ln in text.splitlines() if ln.strip()]


def cell(v):
    """How a table shows a JSON value (client_json_text, control characters as spaces)."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.15g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"), ensure_ascii=False)
    return re.sub(r"[\x00-\x1f\x7f]", " ", str(v))


def fmt_ms(ms):
    if ms < 1000:
        return f"{ms:.2f}ms"
    if ms < 60000:
        return f"{ms / 1000:.2f}s"
    return f"{ms / 60000:.1f}m"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One serve for the read-only checks, loaded with the JS SDK's payloads."""
    work = tmp_path_factory.mktemp("serve")
    home = tmp_path_factory.mktemp("home")
    serve = Serve(work, home).start()
    try:
        for signal, name in (("traces", "traces_512.pb"), ("logs", "logs_512.pb"),
                             ("metrics", "metrics.pb")):
            r = requests.post(f"{serve.http_url}/v1/{signal}", data=itlib.payload(name),
                              headers={"Content-Type": "application/x-protobuf"}, timeout=60)
            assert r.status_code == 200, f"{signal}: {r.status_code} {r.content[:300]!r}"
        yield serve, home
    finally:
        serve.stop()


# ---------- read commands: tables from the REST answers, --json equal to them ----------

def test_traces_table_matches_rest(served):
    serve, home = served
    want = rest(serve, "GET", "/traces/", params={"limit": 10}).json()
    assert want["count"] == 10, want
    out, _ = cli_ok(["traces", "--limit", "10"], home, serve.url)
    rows = lines(out)
    assert rows[0].split() == ["TRACE", "ID", "ROOT", "SPAN", "SERVICE", "START", "DURATION",
                               "SPANS", "ERRORS"]
    assert len(rows) == 11, out
    for line, t in zip(rows[1:], want["data"]):  # newest first, as the API sorts
        assert line.startswith(t["trace_id"] + "  "), (line, t)
        for v in (t["span_name"], t["service_name"], t["start_time"], fmt_ms(t["duration_ms"])):
            assert v in line, (v, line)
        assert line.split()[-2:] == [str(t["span_count"]), str(t["error_count"])], line


def test_traces_filters_reach_the_api(served):
    serve, home = served
    svc = rest(serve, "GET", "/services").json()["data"][0]
    want = rest(serve, "GET", "/traces/", params={"service_name": svc, "status": "ERROR",
                                                  "min_duration_ms": 1}).json()
    out, _ = cli_ok(["traces", "--service", svc, "--status", "error", "--min-duration", "1ms",
                     "--json"], home, serve.url)
    assert json.loads(out) == want
    # The payloads are from 2026-01-01: nothing of them is in the last 15 minutes.
    out, err = cli_ok(["traces", "--since", "15m"], home, serve.url)
    assert len(lines(out)) == 1 and "no trace matches" in err, out


def test_trace_tree(served):
    serve, home = served
    traces = rest(serve, "GET", "/traces/", params={"limit": 100}).json()["data"]
    t = max(traces, key=lambda x: x["span_count"])
    assert t["span_count"] > 2
    spans = rest(serve, "GET", f"/traces/{t['trace_id']}").json()["data"]
    by_id = {s["span_id"]: s for s in spans}
    kids = {}
    roots = []
    for s in spans:
        if s.get("parent_span_id") and s["parent_span_id"] in by_id:
            kids.setdefault(s["parent_span_id"], []).append(s)
        else:
            roots.append(s)
    expected = []

    def walk(s, depth):
        expected.append(("  " * depth + s["span_name"], s))
        for k in kids.get(s["span_id"], []):
            walk(k, depth + 1)
    for r in roots:
        walk(r, 0)

    out, _ = cli_ok(["traces", t["trace_id"].upper()], home, serve.url)
    rows = out.splitlines()
    assert rows[0] == f"trace {t['trace_id']}: {len(spans)} spans"
    assert rows[1].split() == ["SPAN", "SERVICE", "DURATION", "STATUS"]
    assert len(rows) == 2 + len(spans)
    assert any(d.startswith("  ") for d, _ in expected), "the trace should have nesting"
    for line, (name, s) in zip(rows[2:], expected):
        assert line.startswith(name + " ") or line == name, (line, name)
        assert s["service_name"] in line and s["status_code"] in line, (line, s)

    out, _ = cli_ok(["traces", t["trace_id"], "--json"], home, serve.url)
    assert json.loads(out) == rest(serve, "GET", f"/traces/{t['trace_id']}").json()

    rc, out, err = run_cli(["traces", "0" * 31 + "1"], home, serve.url)
    assert rc == 1 and len(lines(err)) == 1 and out == "", (rc, out, err)
    rc, _, err = run_cli(["traces", "not-a-trace-id"], home, serve.url)
    assert rc == 2 and "32 hex digits" in err


def test_logs_table_and_width(served):
    serve, home = served
    want = rest(serve, "GET", "/logs/", params={"limit": 20}).json()["data"]
    assert len(want) == 20
    out, _ = cli_ok(["logs", "--limit", "20"], home, serve.url, env_extra={"COLUMNS": "1000"})
    rows = out.splitlines()
    assert rows[0].split() == ["TIME", "SEVERITY", "SERVICE", "BODY"]
    for line, r in zip(rows[1:], want):
        assert line.startswith(r["timestamp"]), (line, r)
        assert r["service_name"] in line
        assert line.rstrip().endswith(cell(r["body"]).rstrip()), (line, r["body"])
    # Sized to the terminal: no line passes COLUMNS, bodies are cut with "...".
    out, _ = cli_ok(["logs", "--limit", "20"], home, serve.url, env_extra={"COLUMNS": "70"})
    assert all(len(ln) <= 70 for ln in out.splitlines()), out
    assert "..." in out

    tid = next(r["trace_id"] for r in want if r.get("trace_id"))
    want = rest(serve, "GET", "/logs/", params={"trace_id": tid}).json()
    out, _ = cli_ok(["logs", "--trace-id", tid, "--json"], home, serve.url)
    assert json.loads(out) == want and want["count"] >= 1
    sev = want["data"][0]["severity_text"] or str(want["data"][0]["severity_number"])
    out, _ = cli_ok(["logs", "--severity", sev, "--limit", "5"], home, serve.url)
    assert all(sev in ln for ln in lines(out)[1:]), out


def test_metrics_names_points_series(served):
    serve, home = served
    names = rest(serve, "GET", "/metrics/names").json()
    out, _ = cli_ok(["metrics"], home, serve.url)
    rows = lines(out)
    assert rows[0].split() == ["NAME", "TYPE", "UNIT", "POINTS"]
    assert len(rows) == 1 + names["count"] and names["count"] >= 3
    for m in names["data"]:
        line = next(ln for ln in rows if ln.split()[0] == m["metric_name"])
        assert m["metric_type"] in line and line.split()[-1] == str(m["count"]), line
    out, _ = cli_ok(["metrics", "--json"], home, serve.url)
    assert json.loads(out) == names

    name = next(m["metric_name"] for m in names["data"] if m["metric_type"] in ("gauge", "sum"))
    points = rest(serve, "GET", "/metrics/", params={"name": name}).json()
    out, _ = cli_ok(["metrics", name], home, serve.url)
    rows = lines(out)
    assert rows[0].split() == ["TIME", "SERVICE", "VALUE", "ATTRIBUTES"]
    assert len(rows) == 1 + points["count"] and points["count"] >= 1
    for line, p in zip(rows[1:], points["data"]):
        assert line.startswith(p["timestamp"]) and cell(p["value"]) in line, (line, p)

    series = rest(serve, "GET", "/metrics/query",
                  params={"name": name, "step": "3600s", "agg": "max",
                          "start": "2025-12-31T00:00:00Z"}).json()
    out, _ = cli_ok(["metrics", name, "--step", "3600s", "--agg", "max", "--start",
                     "2025-12-31T00:00:00Z"], home, serve.url)
    rows = lines(out)
    assert rows[0] == f"{name}: max per 3600s", out
    assert len(rows) == 2 + series["count"] and series["count"] >= 1
    for line, p in zip(rows[2:], series["data"]):
        assert line.split() == [p["time"], cell(p["value"])], (line, p)


def test_query_services_stats(served):
    serve, home = served
    sql = "SELECT service_name, count(*) AS n FROM spans GROUP BY 1 ORDER BY 1"
    want = rest(serve, "POST", "/query/", json={"sql": sql}).json()
    out, err = cli_ok(["query", sql], home, serve.url)
    rows = lines(out)
    assert rows[0].split() == want["columns"] == ["service_name", "n"]
    assert [ln.split() for ln in rows[1:]] == [[r["service_name"], str(r["n"])]
                                               for r in want["data"]]
    assert sum(r["n"] for r in want["data"]) == 512
    assert f"({len(want['data'])} rows)" in err
    out, _ = cli_ok(["query", sql, "--json"], home, serve.url)
    assert json.loads(out) == want

    # Bound parameters, in order.
    svc = want["data"][0]["service_name"]
    out, _ = cli_ok(["query", "SELECT count(*) AS n FROM spans WHERE service_name = $1",
                     "--param", svc], home, serve.url)
    assert [ln.split() for ln in lines(out)] == [["n"], [str(want["data"][0]["n"])]]

    services = rest(serve, "GET", "/services").json()
    out, _ = cli_ok(["services"], home, serve.url)
    assert lines(out) == services["data"] and len(services["data"]) >= 3
    out, _ = cli_ok(["services", "--json"], home, serve.url)
    assert json.loads(out) == services

    stats = rest(serve, "GET", "/stats").json()
    out, _ = cli_ok(["stats"], home, serve.url)
    rows = lines(out)
    assert rows[0].split() == ["TABLE", "ROWS", "HOT", "ROWS", "FILES", "SIZE"]
    for table, n in (("spans", 512), ("logs", 512)):
        line = next(ln for ln in rows if ln.split()[0] == table)
        assert line.split()[1] == str(n), line
        t = stats["tables"][table]
        rows_of = t.get("rows", t.get("hot_rows", 0) + t.get("file_rows", 0))
        assert rows_of == n
    assert re.search(r"\d B|KiB|MiB", out)
    out, _ = cli_ok(["stats", "--json"], home, serve.url)
    got = json.loads(out)
    assert got["tables"] == rest(serve, "GET", "/stats").json()["tables"]


def test_flush_then_stats(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    serve = Serve(tmp_path, home).start()
    try:
        r = requests.post(f"{serve.http_url}/v1/traces", data=itlib.payload("traces_512.pb"),
                          headers={"Content-Type": "application/x-protobuf"}, timeout=60)
        assert r.status_code == 200
        out, _ = cli_ok(["flush"], home, serve.url)
        first = out.splitlines()[0]
        assert first.startswith("flushed to Parquet:") and "spans 512 rows" in first, out
        t = rest(serve, "GET", "/stats").json()["tables"]["spans"]
        assert t["files"] >= 1 and t["hot_rows"] == 0, t
        line = next(ln for ln in lines(out) if ln.split()[0] == "spans")
        assert line.split()[1:4] == ["512", "0", str(t["files"])], line
        # Nothing left: a second flush writes nothing and says so.
        out, _ = cli_ok(["flush"], home, serve.url)
        assert "spans 0 rows" in out.splitlines()[0], out
        out, _ = cli_ok(["flush", "--json"], home, serve.url)
        assert json.loads(out)["success"] is True
    finally:
        serve.stop()


# ---------- exit codes ----------

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_cannot_connect_is_exit_3(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["traces"], ["query", "SELECT 1"], ["smoke-test", "--timeout", "5s"]):
        rc, out, err = run_cli(args, tmp_path, url)
        assert rc == 3, (args, rc, out, err)
        assert f"{url}/api/otel/v1" in err and "dlotel serve" in err, err
    # The environment is where the URL comes from without --url, with or without a path.
    rc, _, err = run_cli(["services"], tmp_path, env_extra={"DATALAYER_OTEL_URL": url + "/x"})
    assert rc == 3 and f"{url}/x" in err and "/api/otel/v1" not in err, err
    rc, _, err = run_cli(["services"], tmp_path, env_extra={"DATALAYER_RUN_URL": url})
    assert rc == 3 and f"{url}/api/otel/v1" in err, err


def test_usage_errors_are_exit_2(tmp_path):
    for args in (["query"], ["traces", "--bogus"], ["logs", "--limit", "0"],
                 ["logs", "--limit", "10001"], ["stats", "x"], ["traces", "--status", "meh"],
                 ["metrics", "--agg", "max"], ["services", "--url", "ftp://x"],
                 ["logs", "--since", "1h", "--start", "0"], ["nosuchcommand"]):
        rc, out, err = run_cli(args, tmp_path)
        assert rc == 2, (args, rc, out, err)
        assert len(lines(err)) == 1 and err.startswith("dlotel: "), (args, err)
    rc, out, _ = run_cli(["help"], tmp_path)
    assert rc == 0
    for c in ("traces [ID]", "logs", "metrics [NAME]", "query SQL", "services", "stats", "flush",
              "smoke-test", "serve", "status", "stop", "version"):
        assert c in out, c


def test_bad_sql_is_exit_1_with_the_server_sentence(served):
    serve, home = served
    r = requests.post(serve.api + "/query/", json={"sql": "SELEC nope"}, timeout=60)
    assert r.status_code == 400
    rc, out, err = run_cli(["query", "SELEC nope"], home, serve.url)
    assert rc == 1 and out == "", (rc, out, err)
    # One line, DuckDB's multi-line message (SQL and caret) joined by spaces.
    assert len(lines(err)) == 1 and " ".join(r.json()["error"].split()) in err, err
    # Refused SQL is a 403: exit 4, the server's reason on the one line.
    r403 = requests.post(serve.api + "/query/", json={"sql": "DELETE FROM spans"}, timeout=60)
    assert r403.status_code == 403
    rc, out, err = run_cli(["query", "DELETE FROM spans"], home, serve.url)
    assert rc == 4 and out == "" and len(lines(err)) == 1, (rc, out, err)
    assert "403" in err and r403.json()["error"] in err, err
    # --json: the server's error answer on stdout, the same exit code.
    rc, out, err = run_cli(["query", "SELEC nope", "--json"], home, serve.url)
    assert rc == 1 and json.loads(out) == r.json()


def make_jwt(secret, **claims):
    import jwt  # python3-jwt (Debian)
    claims.setdefault("exp", int(time.time()) + 600)
    token = jwt.encode(claims, secret, algorithm="HS256")
    return token.decode() if isinstance(token, bytes) else token


def test_auth_refused_is_exit_4_and_the_token_is_never_printed(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    serve = Serve(tmp_path, home, env_extra={"DATALAYER_JWT_SECRET": JWT_SECRET}).start()
    try:
        r = requests.get(serve.api + "/services", timeout=30)
        assert r.status_code == 401, r.text
        rc, out, err = run_cli(["services"], home, serve.url)
        assert rc == 4 and "401" in err and len(lines(err)) == 1, (rc, out, err)
        bad = make_jwt("another-secret-0123456789abcdef0123456", sub="u1")
        rc, out, err = run_cli(["traces", "--token", bad], home, serve.url)
        assert rc == 4 and bad not in out + err, (rc, out, err)
        # A good token from the environment (preferred) or --token works.
        good = make_jwt(JWT_SECRET, sub="u1", roles=["admin"])
        out, err = cli_ok(["services"], home, serve.url, env_extra={"DATALAYER_API_KEY": good})
        assert good not in out + err
        cli_ok(["stats", "--token", good], home, serve.url)
        out, err = cli_ok(["smoke-test", "--timeout", "60s"], home, serve.url,
                          env_extra={"DATALAYER_API_KEY": good})
        assert good not in out + err and "PASS" in out, out
    finally:
        serve.stop()


# ---------- smoke-test: the "done when" ----------

SMOKE_CHECKS = ("send traces", "send logs", "send metrics", "trace", "trace list", "log",
                "metric", "sql", "services")


def test_serve_then_smoke_test_then_traces(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    serve = Serve(tmp_path, home).start()
    try:
        out, err = cli_ok(["smoke-test"], home, serve.url)
        m = re.search(r"service (dlotel-smoke-[0-9a-f]{8}), trace ([0-9a-f]{32})", out)
        assert m, out
        service, trace_id = m.groups()
        status = {}
        for line in out.splitlines()[1:-1]:
            word, _, rest_ = line.partition("  ")
            status[rest_.strip().split(":")[0]] = word.strip()
        assert {c: status.get(c) for c in SMOKE_CHECKS} == {c: "ok" for c in SMOKE_CHECKS}, out
        assert out.splitlines()[-1] == "PASS: 6 of 6 checks passed"

        # What a user types next: the smoke trace is listed, newest first, with its two spans.
        out, _ = cli_ok(["traces"], home, serve.url)
        first = lines(out)[1]
        assert first.startswith(trace_id) and "smoke-root" in first and service in first, out
        assert first.split()[-2:] == ["2", "0"], first
        out, _ = cli_ok(["traces", "--since", "15m", "--service", service], home, serve.url)
        assert len(lines(out)) == 2 and trace_id in out
        out, _ = cli_ok(["traces", trace_id], home, serve.url)
        assert [ln.split()[0] for ln in out.splitlines()[2:]] == ["smoke-root", "smoke-child"]
        assert out.splitlines()[3].startswith("  smoke-child")
        out, _ = cli_ok(["logs", "--trace-id", trace_id], home, serve.url)
        assert f"dlotel smoke test {trace_id}" in out and "INFO" in out
        out, _ = cli_ok(["services"], home, serve.url)
        assert service in lines(out)
        # Every run is its own trace and service.
        out2, _ = cli_ok(["smoke-test"], home, serve.url)
        assert trace_id not in out2 and service not in out2
    finally:
        serve.stop()


class NullAPI(http.server.ThreadingHTTPServer):
    """An HTTP server that accepts everything with 200 and stores nothing: what smoke-test must
    catch (a proxy or a misconfigured route that swallows the data)."""

    daemon_threads = True

    def __init__(self):
        self.requests = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def answer(h, body):
                data = json.dumps(body).encode()
                h.send_response(200)
                h.send_header("Content-Type", "application/json")
                h.send_header("Content-Length", str(len(data)))
                h.end_headers()
                h.wfile.write(data)

            def do_GET(h):
                self.requests.append(("GET", h.path, h.headers.get("Authorization")))
                h.answer({"data": [], "count": 0, "next_cursor": None})

            def do_POST(h):
                n = int(h.headers.get("Content-Length") or 0)
                body = h.rfile.read(n)
                self.requests.append(("POST", h.path, h.headers.get("Content-Type"), len(body)))
                if h.path.split("?")[0].endswith("/query/"):
                    h.answer({"success": True, "columns": ["n"], "data": [{"n": 0}], "count": 1,
                              "truncated": False})
                else:
                    h.answer({})

        super().__init__(("127.0.0.1", 0), Handler)


def test_smoke_test_fails_against_a_server_that_stores_nothing(tmp_path):
    srv = NullAPI()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        started = time.monotonic()
        rc, out, err = run_cli(["smoke-test", "--timeout", "3s", "--token", "tok-xyz"],
                               tmp_path, url)
        took = time.monotonic() - started
        assert rc == 1, (rc, out, err)
        assert 2.5 < took < 30, took
        assert "tok-xyz" not in out + err
        assert "ok    send traces" in out and "ok    send metrics" in out, out
        for check in ("trace", "trace list", "log", "metric", "sql", "services"):
            assert re.search(rf"^FAIL  {check}: ", out, re.M), (check, out)
        assert "FAIL  sql: n = 0" in out and "FAIL  trace: 0 spans" in out, out
        assert out.splitlines()[-1] == "FAIL: 0 of 6 checks passed"
        # OTLP went as protobuf to <base>/otlp/v1/..., with the bearer token.
        posts = {r[1]: r for r in srv.requests if r[0] == "POST"}
        for sig in ("traces", "logs", "metrics"):
            r = posts[f"/api/otel/v1/otlp/v1/{sig}"]
            assert r[2] == "application/x-protobuf" and r[3] > 50, r
        assert all(r[2] == "Bearer tok-xyz" for r in srv.requests if r[0] == "GET")
    finally:
        srv.shutdown()
        srv.server_close()


# ---------- dlotel.query() in the Python package, against the same serve ----------

def test_python_query_against_serve(served):
    serve, _ = served
    import sys
    sys.path.insert(0, os.path.join(itlib.HERE, "..", "..", "python"))
    import dlotel
    rows = dlotel.query("SELECT service_name, count(*) AS n FROM spans GROUP BY 1 ORDER BY 1",
                        url=serve.url)
    want = rest(serve, "POST", "/query/", json={
        "sql": "SELECT service_name, count(*) AS n FROM spans GROUP BY 1 ORDER BY 1"}).json()
    assert rows == want["data"] and rows.columns == ["service_name", "n"]
    assert sum(r["n"] for r in rows) == 512
    svc = rows[0]["service_name"]
    one = dlotel.query("SELECT count(*) AS n FROM logs WHERE service_name = $1", [svc],
                       url=serve.url)
    assert one == rest(serve, "POST", "/query/", json={
        "sql": "SELECT count(*) AS n FROM logs WHERE service_name = $1",
        "params": [svc]}).json()["data"]
    with pytest.raises(dlotel.QueryError) as e:
        dlotel.query("SELEC nope", url=serve.url)
    assert e.value.status == 400 and e.value.message
    # Through the environment, as an app in sink mode would find a `dlotel serve`.
    os.environ["DATALAYER_OTEL_URL"] = serve.url
    try:
        assert dlotel.query("SELECT count(*) AS n FROM spans") == [{"n": 512}]
    finally:
        del os.environ["DATALAYER_OTEL_URL"]


# ---------- the answer size limit, at its boundary ----------

BODY_MAX = 256 << 20  # CLIENT_BODY_MAX in agent/cli/client.h


class PaddedAPI(http.server.ThreadingHTTPServer):
    """Answers GET /services with a valid JSON object padded with whitespace to exactly
    |size| bytes, streamed in 1 MiB writes so the test never holds it."""

    daemon_threads = True

    def __init__(self, size):
        head = b'{"data":["padded"],"count":1'
        tail = b"}"

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(h):
                h.send_response(200)
                h.send_header("Content-Type", "application/json")
                h.send_header("Content-Length", str(size))
                h.end_headers()
                try:
                    h.wfile.write(head)
                    left = size - len(head) - len(tail)
                    chunk = b" " * (1 << 20)
                    while left > 0:
                        n = min(left, len(chunk))
                        h.wfile.write(chunk[:n])
                        left -= n
                    h.wfile.write(tail)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading at its limit

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.mark.parametrize("size,ok", [(BODY_MAX, True), (BODY_MAX + 1, False)])
def test_answer_size_limit(tmp_path, size, ok):
    srv = PaddedAPI(size)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        rc, out, err = run_cli(["services"], tmp_path, url)
        if ok:
            assert rc == 0 and lines(out) == ["padded"], (rc, out, err[-500:])
        else:
            assert rc == 1 and out == "" and "larger than 256 MiB" in err, (rc, out, err)
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_server_that_never_answers_times_out_with_exit_1(tmp_path):
    # The kernel completes the handshake from the backlog; nothing ever reads or answers.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    try:
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        started = time.monotonic()
        rc, out, err = run_cli(["stats", "--timeout", "1s"], tmp_path, url)
        took = time.monotonic() - started
        assert rc == 1 and out == "", (rc, out, err)
        assert "timed out" in err.lower() and url in err and len(lines(err)) == 1, err
        assert 0.9 < took < 15, took
    finally:
        s.close()
