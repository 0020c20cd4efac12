"""The query API (DESIGN.md section 6, docs/api.md) against a real `dlotel serve`: every endpoint,
filters, time windows, keyset pagination, JWT and API-key auth with tokens minted by python3-jwt,
per-user isolation, CORS, OTLP ingest on the API port, and the refusal of an open non-loopback
bind. Data goes in through the real OTLP/HTTP receiver and through the API's own ingest, with the
OpenTelemetry JS SDK's payloads and small requests built here.

Secrets reach the daemon in a 0600 config file, never in argv or its environment.
"""

import base64
import gzip
import http.client
import json
import os
import socket
import subprocess
import time

import jwt
import pytest
import requests

import itlib

SECRET = "api-test-secret-6c1f0b2e9a7d4c35"
ISSUER = "https://iam.test.example"
IAM_KEY = "iam-admin-key-0f9e8d7c6b5a4938"
T0 = 1767225600 * 10**9  # 2026-01-01T00:00:00Z
N_ALICE_TRACES = 23


class Serve(itlib.Agent):
    """`dlotel serve` with the query API on a free port and the settings given as YAML."""

    def __init__(self, workdir, settings=None, extra_args=()):
        home = os.path.join(str(workdir), "home")
        os.makedirs(home, exist_ok=True)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("DATALAYER_", "XDG_", "OTEL_"))}
        env["HOME"] = home
        args = ["--set", "api.port=0", "--set", f"sink.data_dir={workdir}/data"]
        if settings:
            path = os.path.join(str(workdir), "config.yaml")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(settings)
            args += ["--config", path]
        super().__init__(workdir, extra_args=args + list(extra_args), env=env)
        self.command = "serve"
        self.api_port = None

    def exporter_args(self):
        return []

    def start(self):
        super().start()
        with open(self.ready_path) as f:
            self.api_port = int(json.load(f)["api_port"])
        return self

    @property
    def base(self):
        return f"http://127.0.0.1:{self.api_port}/api/otel/v1"


AUTH_SETTINGS = f"""
api:
  jwt_secret: "{SECRET}"
  jwt_issuer: "{ISSUER}"
  iam_api_key: "{IAM_KEY}"
  cors_origin: "https://app.example"
"""


def token(sub=None, uid=None, roles=None, exp_in=600, iss=ISSUER, key=SECRET, alg="HS256",
          **extra):
    claims = {"exp": int(time.time()) + exp_in, "iss": iss, **extra}
    if sub:
        claims["sub"] = sub
    if uid:
        claims["user"] = {"uid": uid}
    if roles:
        claims["roles"] = roles
    if iss is None:
        del claims["iss"]
    return jwt.encode(claims, key, algorithm=alg)


def hdr(tok):
    return {"Authorization": f"Bearer {tok}"}


ALICE = hdr(token(sub="alice"))
BOB = hdr(token(uid="bob", sub="not-bob"))
ADMIN_JWT = hdr(token(sub="root", roles=["platform_admin"]))
ADMIN_KEY = hdr(IAM_KEY)


# ---------- requests built here ----------

def kv(k, v):
    return {"key": k, "value": {"stringValue": v}}


def span(trace_id, span_id, name, start, dur_ms, parent="", status=0, attrs=None):
    return {"traceId": trace_id, "spanId": span_id, "parentSpanId": parent, "name": name,
            "kind": 2, "startTimeUnixNano": str(start),
            "endTimeUnixNano": str(start + dur_ms * 10**6),
            "attributes": [kv(k, v) for k, v in (attrs or {}).items()],
            "status": {"code": status}}


def traces_request(groups):
    """|groups|: [(service, user or None, [span, ...])]."""
    rs = []
    for service, user, spans in groups:
        attrs = [kv("service.name", service)]
        if user:
            attrs.append(kv("datalayer.user_uid", user))
        rs.append({"resource": {"attributes": attrs},
                   "scopeSpans": [{"scope": {"name": "test"}, "spans": spans}]})
    return {"resourceSpans": rs}


def logs_request(service, user, records):
    attrs = [kv("service.name", service)] + ([kv("datalayer.user_uid", user)] if user else [])
    return {"resourceLogs": [{"resource": {"attributes": attrs}, "scopeLogs": [{
        "scope": {"name": "test"},
        "logRecords": [{"timeUnixNano": str(t), "observedTimeUnixNano": str(t),
                        "severityNumber": sev, "severityText": text,
                        "body": {"stringValue": body}, "traceId": tid, "spanId": sid}
                       for t, sev, text, body, tid, sid in records]}]}]}


def gauge_request(service, user, name, points):
    attrs = [kv("service.name", service)] + ([kv("datalayer.user_uid", user)] if user else [])
    return {"resourceMetrics": [{"resource": {"attributes": attrs}, "scopeMetrics": [{
        "scope": {"name": "test"},
        "metrics": [{"name": name, "unit": "1", "gauge": {"dataPoints": [
            {"timeUnixNano": str(t), "asDouble": v} for t, v in points]}}]}]}]}


def tid(prefix, i):
    return f"{prefix}{i:030x}"[:32]


def sid(i):
    return f"{i:016x}"


def post_receiver(agent, signal, body):
    r = requests.post(f"{agent.http_url}/v1/{signal}", data=json.dumps(body),
                      headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 200, r.text


def alice_trace(i):
    """Trace i of alice: a root in svc-a and a child in svc-b, 1 s apart from the next trace;
    every 5th has an error in the child; durations 10 + i ms."""
    t = tid("a1", i)
    start = T0 + i * 10**9
    root = span(t, sid(1000 + i), "GET /orders", start, 10 + i,
                attrs={"http.route": "/orders", "k": f"v{i % 3}"})
    child = span(t, sid(2000 + i), "SELECT orders", start + 10**6, 5, parent=sid(1000 + i),
                 status=2 if i % 5 == 0 else 1)
    return [("svc-a", "alice", [root]), ("svc-b", "alice", [child])]


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    work = tmp_path_factory.mktemp("api")
    serve = Serve(work, AUTH_SETTINGS).start()
    try:
        for i in range(N_ALICE_TRACES):
            post_receiver(serve, "traces", traces_request(alice_trace(i)))
        # Bob: one trace with a root that is not the first span, and his own service.
        b = tid("b0", 1)
        post_receiver(serve, "traces", traces_request([("svc-bob", "bob", [
            span(b, sid(2), "child first", T0 + 5 * 10**9, 3, parent=sid(1)),
            span(b, sid(1), "bob root", T0 + 5 * 10**9 + 10**6, 50),
        ])]))
        recs = [(T0 + k * 10**8, sev, text, f"message {k} {'slow query' if k % 4 == 0 else 'ok'}",
                 tid("a1", k % 3), sid(1000 + k % 3))
                for k, (sev, text) in enumerate([(9, "INFO"), (13, "WARN"), (17, "ERROR"),
                                                 (5, "DEBUG")] * 6)]
        post_receiver(serve, "logs", logs_request("svc-a", "alice", recs))
        post_receiver(serve, "logs", logs_request("svc-bob", "bob", [
            (T0, 17, "ERROR", "bob's secret log", tid("b0", 1), sid(1))]))
        post_receiver(serve, "metrics", gauge_request("svc-a", "alice", "queue.depth", [
            (T0 + k * 15 * 10**9, float(k)) for k in range(12)]))
        post_receiver(serve, "metrics", gauge_request("svc-bob", "bob", "bob.metric", [
            (T0, 1.0)]))
        yield serve
    finally:
        serve.stop()


def get(api, path, headers=ALICE, **params):
    return requests.get(api.base + path, headers=headers, params=params, timeout=60)


def ok(r):
    assert r.status_code == 200, f"{r.status_code} {r.text[:500]}"
    assert r.headers["Content-Type"].startswith("application/json")
    return r.json()


def err(r, status, *words):
    assert r.status_code == status, f"{r.status_code} {r.text[:500]}"
    body = r.json()
    assert body["success"] is False and body["error"], body
    for w in words:
        assert w in body["error"], body
    return body


# ---------- open endpoints, docs ----------

def test_ping_version_openapi_docs(api):
    assert ok(requests.get(api.base + "/ping", timeout=10)) == {"status": "ok"}
    v = ok(requests.get(api.base + "/version/", timeout=10))
    assert v["name"] == "dlotel" and v["version"].count(".") == 2
    doc = ok(requests.get(api.base + "/openapi.json", timeout=10))
    assert doc["openapi"].startswith("3.1")
    for p in ["/ping", "/version", "/traces/", "/traces/{trace_id}", "/traces/services/list",
              "/services", "/logs/", "/metrics/", "/metrics/names", "/metrics/query", "/query/",
              "/query/sql", "/stats", "/flush", "/system/", "/system/stats", "/system/sql",
              "/otlp/v1/{signal}", "/ws", "/openapi.json", "/docs"]:
        assert p in doc["paths"], p
    page = requests.get(api.base + "/docs", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    # Self-contained: no script or style from elsewhere.
    assert "<script src" not in page.text and "http://" not in page.text
    assert "https://" not in page.text and "openapi.json" in page.text


# ---------- auth ----------

def test_401_for_missing_or_refused_tokens(api):
    none_alg = (base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=") + b"." +
                base64.urlsafe_b64encode(json.dumps(
                    {"sub": "alice", "iss": ISSUER, "roles": ["admin"],
                     "exp": int(time.time()) + 600}).encode()).rstrip(b"=") + b".").decode()
    cases = {
        "no header": {},
        "not bearer": {"Authorization": "Basic YWxpY2U6eA=="},
        "bad signature": hdr(token(sub="alice", key="not-the-secret")),
        "expired": hdr(token(sub="alice", exp_in=-5)),
        "wrong issuer": hdr(token(sub="alice", iss="https://evil.example")),
        "no issuer": hdr(token(sub="alice", iss=None)),
        "alg none": hdr(none_alg),
        "other alg": hdr(token(sub="alice", alg="HS512")),
        "not before": hdr(token(sub="alice", nbf=int(time.time()) + 3600)),
        "garbage": hdr("x.y.z"),
        "near key": hdr(IAM_KEY[:-1]),
    }
    for name, h in cases.items():
        r = get(api, "/traces/", headers=h)
        assert r.status_code == 401, (name, r.status_code, r.text)
        assert r.headers["WWW-Authenticate"].startswith("Bearer"), name
        assert r.json()["success"] is False, name
        # The token never comes back in the answer.
        if "Authorization" in h:
            assert h["Authorization"].split()[-1] not in r.text, name
    # The same request with a good token works, and the daemon still serves.
    ok(get(api, "/traces/"))
    log = itlib.tail(api.log_path, 1 << 20)
    assert SECRET not in log and IAM_KEY not in log and none_alg not in log


def test_403_for_users_on_system_and_for_refused_sql(api):
    for path in ["/system/", "/system/stats"]:
        err(get(api, path), 403, "administrators")
    r = requests.post(api.base + "/system/sql", headers=ALICE, json={"sql": "SELECT 1"},
                      timeout=30)
    err(r, 403)
    for sql in ["SELECT * FROM read_csv('/etc/passwd')", "SELECT * FROM main.spans_all",
                "SELECT current_setting('memory_limit')", "DELETE FROM spans",
                "SELECT 1; SELECT 2"]:
        r = requests.post(api.base + "/query/", headers=ALICE, json={"sql": sql}, timeout=30)
        assert r.status_code in (400, 403), (sql, r.status_code, r.text)
        assert r.json()["success"] is False
    err(requests.post(api.base + "/query/", headers=ALICE, json={"sql": "SELEC 1"}, timeout=30),
        400)
    err(requests.post(api.base + "/query/", headers=ALICE, data="not json", timeout=30), 400,
        "sql")


def test_admins(api):
    for h in (ADMIN_KEY, ADMIN_JWT):
        s = ok(get(api, "/system/", headers=h))
        assert s["process"]["pid"] == api.proc.pid
        assert s["process"]["rss_bytes"] > 1 << 20
        assert s["process"]["version"] == ok(get(api, "/version"))["version"]
        assert s["disk"]["used_bytes"] > 0 and s["disk"]["filesystem_free_bytes"] > 0
        assert s["tables"]["spans"]["rows"] >= 2 * N_ALICE_TRACES + 2
        assert ok(get(api, "/system/stats", headers=h))["process"]["pid"] == api.proc.pid
    # Unscoped SQL sees both users.
    r = requests.post(api.base + "/system/sql", headers=ADMIN_KEY, timeout=30, json={
        "sql": "SELECT user_uid, count(*) AS n FROM spans WHERE user_uid IN ('alice', 'bob') "
               "GROUP BY 1 ORDER BY 1"})
    assert ok(r)["data"] == [{"user_uid": "alice", "n": 2 * N_ALICE_TRACES},
                             {"user_uid": "bob", "n": 2}]


# ---------- traces ----------

def all_traces(api, headers=ALICE, **params):
    return ok(get(api, "/traces/", headers=headers, limit=10000, **params))["data"]


def test_traces_rows(api):
    body = ok(get(api, "/traces/", limit=5))
    assert body["count"] == 5 and len(body["data"]) == 5 and body["next_cursor"]
    rows = all_traces(api)
    assert len(rows) == N_ALICE_TRACES
    assert [r["trace_id"] for r in rows] == [tid("a1", i) for i in reversed(range(N_ALICE_TRACES))]
    r7 = next(r for r in rows if r["trace_id"] == tid("a1", 7))
    assert r7["span_id"] == sid(1007) and r7["span_name"] == "GET /orders"
    assert r7["service_name"] == "svc-a" and r7["status_code"] == "UNSET"
    assert r7["span_count"] == 2 and r7["error_count"] == 0
    assert r7["services"] == ["svc-a", "svc-b"]
    assert r7["start_time_unix_nano"] == T0 + 7 * 10**9
    assert r7["start_time"] == "2026-01-01T00:00:07Z"
    assert r7["end_time"] == "2026-01-01T00:00:07.017Z"
    assert r7["duration_ms"] == 17
    assert next(r for r in rows if r["trace_id"] == tid("a1", 10))["error_count"] == 1
    # Bob's root is the span without a parent, though it started later.
    bob = all_traces(api, headers=BOB)
    assert [(b["span_name"], b["span_count"]) for b in bob] == [("bob root", 2)]


def test_traces_filters_and_windows(api):
    ids = lambda rows: sorted(r["trace_id"] for r in rows)
    errors = all_traces(api, status="ERROR")
    assert ids(errors) == sorted(tid("a1", i) for i in range(0, N_ALICE_TRACES, 5))
    assert len(all_traces(api, status="UNSET")) == N_ALICE_TRACES - len(errors)
    assert all_traces(api, status="OK") == []
    assert len(all_traces(api, service_name="svc-b")) == N_ALICE_TRACES
    assert all_traces(api, service_name="svc-bob") == []  # bob's service, alice's eyes
    assert len(all_traces(api, span_name="SELECT orders")) == N_ALICE_TRACES
    assert ids(all_traces(api, **{"attr.k": "v1"})) == sorted(
        tid("a1", i) for i in range(N_ALICE_TRACES) if i % 3 == 1)
    assert ids(all_traces(api, **{"attr.k": "v1", "attr.http.route": "/orders"})) == ids(
        all_traces(api, **{"attr.k": "v1"}))
    assert all_traces(api, **{"attr.k": "v1", "attr.http.route": "/other"}) == []
    # Durations are 10 + i ms.
    assert ids(all_traces(api, min_duration_ms=25, max_duration_ms=27.5)) == sorted(
        tid("a1", i) for i in (15, 16, 17))
    # Windows: [start, end) on the trace's start, RFC 3339 with an offset, or epoch numbers.
    w = all_traces(api, start="2026-01-01T01:00:03+01:00", end=str((T0 + 6 * 10**9) // 10**6))
    assert ids(w) == sorted(tid("a1", i) for i in (3, 4, 5))
    assert ids(all_traces(api, start=str(T0 // 10**9 + 20))) == sorted(
        tid("a1", i) for i in (20, 21, 22))
    assert ids(all_traces(api, end=str(T0 + 2 * 10**9))) == sorted(tid("a1", i) for i in (0, 1))
    # Bad parameters: 400 naming them.
    for params, name in [({"limit": "0"}, "limit"), ({"limit": "10001"}, "limit"),
                         ({"limit": "ten"}, "limit"), ({"start": "yesterday"}, "start"),
                         ({"end": "2026-13-01T00:00:00Z"}, "end"), ({"status": "FAIL"}, "status"),
                         ({"min_duration_ms": "-1"}, "min_duration_ms"),
                         ({"cursor": "!!"}, "cursor"), ({"cursor": "MTIz"}, "cursor"),
                         ({"start": "2026-01-02", "end": "2026-01-01"}, "end")]:
        err(get(api, "/traces/", **params), 400, name)
    assert len(ok(get(api, "/traces/", limit="10000"))["data"]) == N_ALICE_TRACES


def test_traces_pagination_two_pages_then_inserts(api):
    everything = [r["trace_id"] for r in all_traces(api)]
    p1 = ok(get(api, "/traces/", limit=10))
    p2 = ok(get(api, "/traces", limit=10, cursor=p1["next_cursor"]))
    p3 = ok(get(api, "/traces", limit=10, cursor=p2["next_cursor"]))
    pages = [[r["trace_id"] for r in p["data"]] for p in (p1, p2, p3)]
    assert [len(p) for p in pages] == [10, 10, N_ALICE_TRACES - 20]
    assert p3["next_cursor"] is None
    assert sum(pages, []) == everything  # no overlap, no gap, same order
    # A trace newer than everything arrives: the second page, asked again, is unchanged.
    fresh = alice_trace(100)
    post_receiver(api, "traces", traces_request(fresh))
    again = ok(get(api, "/traces/", limit=10, cursor=p1["next_cursor"]))
    assert [r["trace_id"] for r in again["data"]] == pages[1]
    assert all_traces(api)[0]["trace_id"] == tid("a1", 100)
    # Exactly one page's worth: no next page.
    n = len(all_traces(api))
    assert ok(get(api, "/traces/", limit=n))["next_cursor"] is None
    assert ok(get(api, "/traces/", limit=n - 1))["next_cursor"] is not None


def test_trace_detail(api):
    t = tid("a1", 10)
    body = ok(get(api, f"/traces/{t}"))
    assert body["trace_id"] == t and body["count"] == 2
    assert [s["span_id"] for s in body["data"]] == [sid(1010), sid(2010)]
    assert body["data"][1]["parent_span_id"] == sid(1010)
    assert body["data"][1]["status_code"] == "ERROR"
    assert body["data"][0]["attributes"]["http.route"] == "/orders"
    assert ok(get(api, f"/traces/{t.upper()}/"))["count"] == 2
    err(get(api, f"/traces/{'f' * 32}"), 404)
    # Bob's trace does not exist for alice.
    err(get(api, f"/traces/{tid('b0', 1)}"), 404)
    assert ok(get(api, f"/traces/{tid('b0', 1)}", headers=BOB))["count"] == 2
    err(get(api, "/traces/not-hex"), 400, "trace id")


def test_services(api):
    for path in ("/services", "/traces/services/list/"):
        assert ok(get(api, path)) == {"data": ["svc-a", "svc-b"], "count": 2}
        assert ok(get(api, path, headers=BOB))["data"] == ["svc-bob"]


# ---------- logs and metrics ----------

def test_logs(api):
    body = ok(get(api, "/logs/"))
    assert body["count"] == 24 and body["next_cursor"] is None
    ts = [r["timestamp_unix_nano"] for r in body["data"]]
    assert ts == sorted(ts, reverse=True)
    assert all(r["user_uid"] == "alice" for r in body["data"])
    assert len(ok(get(api, "/logs", severity="error"))["data"]) == 6
    assert len(ok(get(api, "/logs", severity="warn"))["data"]) == 12  # WARN and ERROR
    assert len(ok(get(api, "/logs", severity="13"))["data"]) == 12
    assert len(ok(get(api, "/logs", q="SLOW QUERY"))["data"]) == 6
    assert len(ok(get(api, "/logs", trace_id=tid("a1", 1)))["data"]) == 8
    # A level name is a minimum: INFO and above, so DEBUG is left out.
    assert len(ok(get(api, "/logs", span_id=sid(1002), severity="INFO"))["data"]) == 6
    assert len(ok(get(api, "/logs", start=str(T0 + 10**9), end=str(T0 + 2 * 10**9)))[
        "data"]) == 10
    assert ok(get(api, "/logs", service_name="svc-bob"))["data"] == []
    # Two pages, no overlap, no gap.
    p1 = ok(get(api, "/logs", limit=15))
    p2 = ok(get(api, "/logs", limit=15, cursor=p1["next_cursor"]))
    assert p1["count"] == 15 and p2["count"] == 9 and p2["next_cursor"] is None
    key = lambda r: (r["timestamp_unix_nano"], r["body"])
    assert [key(r) for r in p1["data"] + p2["data"]] == [key(r) for r in body["data"]]
    bob = ok(get(api, "/logs", headers=BOB))
    assert [r["body"] for r in bob["data"]] == ["bob's secret log"]
    err(get(api, "/logs", trace_id="xyz"), 400, "trace_id")


def test_metrics(api):
    body = ok(get(api, "/metrics/"))
    assert body["count"] == 12
    assert [r["value"] for r in body["data"]] == [float(k) for k in reversed(range(12))]
    assert ok(get(api, "/metrics", name="nope"))["data"] == []
    p1 = ok(get(api, "/metrics", limit=7))
    p2 = ok(get(api, "/metrics", limit=7, cursor=p1["next_cursor"]))
    assert [r["value"] for r in p1["data"] + p2["data"]] == [r["value"] for r in body["data"]]
    names = ok(get(api, "/metrics/names"))
    assert names == {"data": [{"metric_name": "queue.depth", "metric_type": "gauge",
                               "metric_unit": "1", "count": 12}], "count": 1}
    # 12 points 15 s apart: one minute holds 4.
    q = ok(get(api, "/metrics/query", name="queue.depth", step="1m", agg="sum"))
    assert q["name"] == "queue.depth" and q["step_seconds"] == 60 and q["agg"] == "sum"
    assert q["data"] == [{"time": "2026-01-01T00:00:00Z", "value": 6.0},
                         {"time": "2026-01-01T00:01:00Z", "value": 22.0},
                         {"time": "2026-01-01T00:02:00Z", "value": 38.0}]
    q = ok(get(api, "/metrics/query", name="queue.depth", step="30", agg="max",
               start="2026-01-01T00:01:00Z"))
    assert [p["value"] for p in q["data"]] == [5.0, 7.0, 9.0, 11.0]
    assert ok(get(api, "/metrics/query", name="queue.depth"))["agg"] == "avg"
    assert ok(get(api, "/metrics/query", name="queue.depth", agg="count"))["data"][0][
        "value"] == 4
    err(get(api, "/metrics/query"), 400, "name")
    err(get(api, "/metrics/query", name="queue.depth", agg="median"), 400, "agg")
    err(get(api, "/metrics/query", name="queue.depth", step="0s"), 400, "step")
    assert ok(get(api, "/metrics/names", headers=BOB))["data"][0]["metric_name"] == "bob.metric"


# ---------- SQL, stats, flush ----------

def test_sql_scoped_and_bound(api):
    for path in ("/query/", "/query/sql"):
        r = requests.post(api.base + path, headers=ALICE, timeout=30, json={
            "sql": "SELECT count(*) AS n FROM spans WHERE service_name = $1 AND $2",
            "params": ["svc-b", True]})
        body = ok(r)
        assert body["success"] is True and body["columns"] == ["n"]
        assert body["data"][0]["n"] >= N_ALICE_TRACES and body["truncated"] is False
    # A parameter is a value, never SQL.
    r = requests.post(api.base + "/query/", headers=ALICE, timeout=30, json={
        "sql": "SELECT count(*) AS n FROM spans WHERE service_name = $1",
        "params": ["x' OR '1'='1"]})
    assert ok(r)["data"] == [{"n": 0}]
    r = requests.post(api.base + "/query/", headers=BOB, timeout=30,
                      json={"sql": "SELECT DISTINCT user_uid FROM spans"})
    assert ok(r)["data"] == [{"user_uid": "bob"}]


def test_stats_and_flush(api):
    s = ok(get(api, "/stats"))
    assert s["tables"]["spans"]["rows"] >= 2 * N_ALICE_TRACES
    assert s["tables"]["logs"]["rows"] == 24 and s["tables"]["metrics"]["rows"] == 12
    assert s["stream_clients"] == 0 and s["stream_dropped"] == 0 and s["disk_bytes"] > 0
    assert ok(get(api, "/stats", headers=BOB))["tables"]["logs"]["rows"] == 1
    f = requests.post(api.base + "/flush", headers=ALICE, timeout=60)
    body = ok(f)
    assert body["success"] is True
    assert body["stats"]["tables"]["spans"]["files"] >= 1
    assert body["stats"]["tables"]["spans"]["hot_rows"] == 0
    # Flushed rows are still found.
    assert len(all_traces(api)) >= N_ALICE_TRACES


# ---------- HTTP behaviour ----------

def test_cors_methods_and_unknown_paths(api):
    r = get(api, "/traces/")
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
    r = get(api, "/traces/", headers={})
    assert r.status_code == 401 and r.headers["Access-Control-Allow-Origin"] == "https://app.example"
    pre = requests.options(api.base + "/query/", timeout=10, headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert pre.status_code == 204
    assert pre.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "POST" in pre.headers["Access-Control-Allow-Methods"]
    assert "authorization" in pre.headers["Access-Control-Allow-Headers"].lower()
    r = requests.post(api.base + "/traces/", headers=ALICE, timeout=10)
    assert r.status_code == 405 and r.headers["Allow"] == "GET"
    r = requests.get(api.base + "/query/", headers=ALICE, timeout=10)
    assert r.status_code == 405 and r.headers["Allow"] == "POST"
    err(get(api, "/nothing/here"), 404)
    r = requests.get(f"http://127.0.0.1:{api.api_port}/elsewhere", timeout=10)
    assert r.status_code == 404
    # A malformed escape, sent as is (requests would re-quote it).
    conn = http.client.HTTPConnection("127.0.0.1", api.api_port, timeout=10)
    conn.request("GET", "/api/otel/v1/traces/?limit=5&bad%zz=1", headers=ALICE)
    resp = conn.getresponse()
    body = json.loads(resp.read())
    conn.close()
    assert resp.status == 400 and "bad" in body["error"], body


# ---------- ingest on the API port ----------

def count(api, headers, sql):
    r = requests.post(api.base + "/query/", headers=headers, json={"sql": sql}, timeout=30)
    return ok(r)["data"][0]["n"]


def test_ingest_with_tokens_is_scoped(api):
    url = api.base + "/otlp/v1/traces"
    pb = itlib.payload("traces_512.pb")
    r = requests.post(url, data=pb, headers={"Content-Type": "application/x-protobuf"},
                      timeout=30)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    before_bob = count(api, BOB, "SELECT count(*) AS n FROM spans")
    r = requests.post(url, data=pb, timeout=30,
                      headers={"Content-Type": "application/x-protobuf", **ALICE})
    assert r.status_code == 200, r.content
    assert r.headers["Content-Type"] == "application/x-protobuf"
    # Visible at once to alice, under her user, never to bob.
    assert count(api, ALICE, "SELECT count(*) AS n FROM spans WHERE service_name = 'frontend'") \
        == 128
    assert count(api, BOB, "SELECT count(*) AS n FROM spans") == before_bob
    assert "frontend" in ok(get(api, "/services"))["data"]
    assert "frontend" not in ok(get(api, "/services", headers=BOB))["data"]
    # OTLP/JSON, gzip, with bob's token: his rows.
    logs = gzip.compress(itlib.payload("logs_512.json"))
    r = requests.post(api.base + "/otlp/v1/logs/", data=logs, timeout=30, headers={
        "Content-Type": "application/json", "Content-Encoding": "gzip", **BOB})
    assert r.status_code == 200 and r.json() == {}
    assert count(api, BOB, "SELECT count(*) AS n FROM logs") == 513
    assert count(api, ALICE, "SELECT count(*) AS n FROM logs") == 24
    # The receiver's own answers: 415, 400 with a google.rpc.Status, 405, 404.
    r = requests.post(url, data=b"x", headers={"Content-Type": "text/plain", **ALICE}, timeout=10)
    assert r.status_code == 415
    r = requests.post(url, data=b"{not json", timeout=10,
                      headers={"Content-Type": "application/json", **ALICE})
    assert r.status_code == 400 and "invalid OTLP/JSON" in r.json()["message"]
    r = requests.post(url, data=b"x", timeout=10,
                      headers={"Content-Type": "application/json", "Content-Encoding": "br",
                               **ALICE})
    assert r.status_code == 415
    assert requests.get(url, headers=ALICE, timeout=10).status_code == 405
    r = requests.post(api.base + "/otlp/v1/profiles", data=pb, headers=ALICE, timeout=10)
    assert r.status_code == 404
    # A bad token is refused with an OTLP status the SDK can log.
    r = requests.post(url, data=b"{}", timeout=10, headers={
        "Content-Type": "application/json", **hdr(token(sub="alice", exp_in=-1))})
    assert r.status_code == 401 and r.json()["code"] == 16


def test_two_users_isolated_everywhere(api):
    a_t = {r["trace_id"] for r in all_traces(api)}
    b_t = {r["trace_id"] for r in all_traces(api, headers=BOB)}
    assert a_t and b_t and not (a_t & b_t)
    a_l = {r["body"] for r in ok(get(api, "/logs", limit=10000))["data"]}
    assert "bob's secret log" not in a_l
    assert all(r["metric_name"] != "bob.metric"
               for r in ok(get(api, "/metrics", limit=10000))["data"])


# ---------- other configurations ----------

def test_auth_off_on_loopback_everyone_is_admin(tmp_path):
    serve = Serve(tmp_path).start()
    try:
        r = requests.post(serve.base + "/otlp/v1/traces", data=json.dumps(traces_request(
            [("svc-x", "carol", [span(tid("c0", 1), sid(1), "x", T0, 1)])])),
            headers={"Content-Type": "application/json"}, timeout=30)
        assert r.status_code == 200, r.text
        # Rows keep their own datalayer.user_uid; an open API sees every user.
        rows = ok(requests.get(serve.base + "/traces/", timeout=30))["data"]
        assert [r["service_name"] for r in rows] == ["svc-x"]
        s = ok(requests.get(serve.base + "/system/", timeout=30))
        assert s["process"]["pid"] == serve.proc.pid
        r = requests.post(serve.base + "/system/sql", timeout=30,
                          json={"sql": "SELECT user_uid FROM spans"})
        assert ok(r)["data"] == [{"user_uid": "carol"}]
    finally:
        serve.stop()


def test_ingest_without_token_when_allowed(tmp_path):
    serve = Serve(tmp_path, AUTH_SETTINGS + "  ingest_auth: false\n").start()
    try:
        r = requests.post(serve.base + "/otlp/v1/traces", data=json.dumps(traces_request(
            [("svc-y", "dave", [span(tid("d0", 1), sid(1), "y", T0, 1)])])),
            headers={"Content-Type": "application/json"}, timeout=30)
        assert r.status_code == 200, r.text
        # Anonymous rows keep the resource's user: dave sees them.
        dave = hdr(token(sub="dave"))
        assert [r["service_name"] for r in ok(requests.get(
            serve.base + "/traces/", headers=dave, timeout=30))["data"]] == ["svc-y"]
        # Queries still need a token.
        assert requests.get(serve.base + "/traces/", timeout=30).status_code == 401
    finally:
        serve.stop()


def non_loopback_address():
    """An address of this machine that is not loopback, or None."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))  # no packet is sent for UDP connect
        addr = s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()
    return None if addr.startswith("127.") else addr


def test_non_loopback_bind_needs_a_secret(tmp_path):
    serve = Serve(tmp_path, extra_args=["--set", "api.host=0.0.0.0"])
    with pytest.raises(AssertionError) as e:
        serve.start()
    assert "api.allow_unauthenticated" in str(e.value)
    assert serve.proc.returncode != 0
    # Asked for explicitly, it starts.
    serve = Serve(tmp_path, extra_args=["--set", "api.host=0.0.0.0",
                                        "--set", "api.allow_unauthenticated=true"]).start()
    try:
        assert ok(requests.get(serve.base + "/ping", timeout=10)) == {"status": "ok"}
        addr = non_loopback_address()
        if addr:
            r = requests.get(f"http://{addr}:{serve.api_port}/api/otel/v1/ping", timeout=10)
            assert r.status_code == 200
    finally:
        serve.stop()


def test_ingest_body_limit_at_the_boundary(tmp_path):
    """The API's ingest takes receivers.http_max_body_size, before and after decompression."""
    serve = Serve(tmp_path, extra_args=["--set", "receivers.http_max_body_size=1KiB"]).start()
    try:
        url = serve.base + "/otlp/v1/traces"
        body = json.dumps(traces_request(
            [("svc-z", None, [span(tid("e0", 1), sid(1), "z", T0, 1)])])).encode()
        assert len(body) < 1024
        exact = body + b" " * (1024 - len(body))
        r = requests.post(url, data=exact, headers={"Content-Type": "application/json"},
                          timeout=30)
        assert r.status_code == 200, r.text
        r = requests.post(url, data=exact + b" ", headers={"Content-Type": "application/json"},
                          timeout=30)
        assert r.status_code == 413, r.text
        assert "1024" in r.json()["message"]
        # Small on the wire, too large once inflated.
        bomb = gzip.compress(exact + b" ")
        assert len(bomb) < 1024
        r = requests.post(url, data=bomb, timeout=30, headers={
            "Content-Type": "application/json", "Content-Encoding": "gzip"})
        assert r.status_code == 413, r.text
        r = requests.post(url, data=gzip.compress(exact), timeout=30, headers={
            "Content-Type": "application/json", "Content-Encoding": "gzip"})
        assert r.status_code == 200, r.text
        rows = ok(requests.get(serve.base + "/traces/", timeout=30))["data"]
        assert [r["trace_id"] for r in rows] == [tid("e0", 1)]
        assert rows[0]["span_count"] >= 1
    finally:
        serve.stop()
