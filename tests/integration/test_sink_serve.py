"""Real OTLP clients against the receivers with the sink exporter (issue 5): what an app sends is
in SQL as soon as the client has its 200, and in Parquet after a flush; a kill -9 loses nothing
that was acknowledged.

`sink_tool DATA serve` (tests/sink_tool.c) runs the daemon's own receivers and pipeline with
exporter_sink_new(), which is what `dlotel serve` wires; it answers SQL typed on its stdin. The
clients are the OpenTelemetry JS SDK (tests/integration/js/send.js: gRPC, HTTP/protobuf,
HTTP/JSON) and Python requests.
"""

import json
import math
import os
import signal
import subprocess
import threading
import time

import pytest

import itlib

TOOL = os.environ.get("DLOTEL_SINK_TOOL")
READER = os.environ.get("DLOTEL_SINK_READER")

pytestmark = pytest.mark.skipif(not TOOL or not READER,
                                reason="DLOTEL_SINK_TOOL and DLOTEL_SINK_READER are not set "
                                       "(run through ctest)")

SEND_TIMEOUT = 90


class Serve:
    def __init__(self, data, workdir, opts=()):
        self.data = str(data)
        self.ready = os.path.join(str(workdir), "ready.json")
        self.log_path = os.path.join(str(workdir), "serve.log")
        self.opts = list(opts)
        self.lock = threading.Lock()

    def start(self):
        if os.path.exists(self.ready):
            os.unlink(self.ready)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [TOOL, *self.opts, self.data, "serve", "--ready-file", self.ready],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
            preexec_fn=itlib._die_with_parent)
        deadline = time.monotonic() + itlib.READY_TIMEOUT
        while not os.path.exists(self.ready):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"serve did not start:\n{itlib.tail(self.log_path)}")
            time.sleep(0.02)
        with open(self.ready) as f:
            r = json.load(f)
        self.http_port, self.grpc_port = r["http_port"], r["grpc_port"]
        return self

    def cmd(self, line):
        with self.lock:
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()
            out = self.proc.stdout.readline()
        assert out, f"serve died:\n{itlib.tail(self.log_path)}"
        return json.loads(out)

    def sql(self, query):
        answer = self.cmd("query " + " ".join(query.split()))
        assert answer["success"], answer
        return answer["data"]

    def stop(self):
        self.proc.stdin.close()
        rc = self.proc.wait(timeout=60)
        self.log.close()
        assert rc == 0, itlib.tail(self.log_path)

    def kill(self):
        self.proc.kill()
        self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture
def serve(tmp_path):
    s = Serve(tmp_path / "data", tmp_path, opts=["--retention-days", "0"]).start()
    yield s
    if s.proc.poll() is None:
        s.stop()


def read_parquet(data, query):
    p = subprocess.run([READER, str(data), query], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=120)
    assert p.returncode == 0, p.stderr.decode()
    return [json.loads(line) for line in p.stdout.decode().splitlines() if line]


# ---- the JS SDK ------------------------------------------------------------------------------

def typed_json(t):
    """send.js's {type, value} as the JSON value the sink writes in events and links."""
    if t["type"] == "int":
        return int(t["value"])
    if t["type"] == "array":
        return [typed_json(x) for x in t["value"]]
    if t["type"] == "kvlist":
        return {k: typed_json(v) for k, v in t["value"].items()}
    return t["value"]


def check_map_value(got, t, where):
    """A MAP(VARCHAR, VARCHAR) value against send.js's typed value."""
    if t["type"] == "string":
        assert got == t["value"], where
    elif t["type"] == "int":
        assert got == str(int(t["value"])), where
    elif t["type"] == "bool":
        assert got == ("true" if t["value"] else "false"), where
    elif t["type"] == "double":
        assert float(got) == t["value"], where
    else:
        assert json.loads(got) == typed_json(t), where


def run_send(serve, protocol, run_id):
    port = serve.grpc_port if protocol == "grpc" else serve.http_port
    cmd = ["node", os.path.join(itlib.JS_DIR, "send.js"), "--protocol", protocol,
           "--endpoint", f"http://127.0.0.1:{port}", "--run-id", run_id, "--timeout-ms", "20000"]
    p = subprocess.run(cmd, cwd=itlib.JS_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=SEND_TIMEOUT, preexec_fn=itlib._die_with_parent)
    assert p.returncode == 0, (p.stderr.decode()[-3000:], itlib.tail(serve.log_path))
    return json.loads(p.stdout)


@pytest.mark.skipif(not os.path.isdir(os.path.join(itlib.JS_DIR, "node_modules")),
                    reason="the JS SDK is not installed (npm ci in tests/integration/js)")
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf", "http/json"])
def test_sdk_to_sql_and_parquet(serve, protocol):
    run = f"run-{protocol.replace('/', '-')}"
    m = run_send(serve, protocol, run)
    where = f"resource_attributes['dlotel.test.run_id'] = '{run}'"

    # Right after the SDK's exports returned: no flush, the rows are there.
    spans = {r["span_id"]: r for r in serve.sql(
        f"SELECT span_id, trace_id, parent_span_id, span_name, span_kind, service_name, "
        f"start_time_unix_nano, end_time_unix_nano, duration_ns, status_code, status_message, "
        f"scope_name, scope_version, attributes, events, links FROM spans WHERE {where}")}
    assert len(spans) == len(m["spans"])
    for s in m["spans"]:
        r = spans[s["spanId"]]
        w = f"span {s['name']}"
        assert r["trace_id"] == s["traceId"], w
        assert r["parent_span_id"] == (s["parentSpanId"] or None), w
        assert r["span_name"] == s["name"], w
        assert r["span_kind"] == s["kindName"], w
        assert r["service_name"] == "dlotel-it-send", w
        assert r["scope_name"] == m["scope"]["name"] and r["scope_version"] == m["scope"]["version"]
        assert r["start_time_unix_nano"] == int(s["startTimeUnixNano"]), w
        assert r["end_time_unix_nano"] == int(s["endTimeUnixNano"]), w
        assert r["duration_ns"] == int(s["endTimeUnixNano"]) - int(s["startTimeUnixNano"]), w
        assert r["status_code"] == ["UNSET", "OK", "ERROR"][s["status"]["code"]], w
        assert r["status_message"] == (s["status"]["message"] or None), w
        assert set(r["attributes"]) == set(s["attributes"]), w
        for k, t in s["attributes"].items():
            check_map_value(r["attributes"][k], t, f"{w} attribute {k}")
        assert len(r["events"]) == len(s["events"]), w
        for got, want in zip(r["events"], s["events"]):
            assert got["name"] == want["name"]
            assert got["time_unix_nano"] == int(want["timeUnixNano"])
            assert got["attributes"] == {k: typed_json(t) for k, t in want["attributes"].items()}
        assert len(r["links"]) == len(s["links"]), w
        for got, want in zip(r["links"], s["links"]):
            assert got["trace_id"] == want["traceId"] and got["span_id"] == want["spanId"]
            assert got["attributes"] == {k: typed_json(t) for k, t in want["attributes"].items()}

    logs = serve.sql(f"SELECT timestamp_unix_nano AS t, severity_number AS sn, severity_text AS "
                     f"st, body, trace_id, span_id, attributes FROM logs WHERE {where} ORDER BY t")
    want_logs = sorted(m["logs"], key=lambda x: int(x["timeUnixNano"]))
    assert len(logs) == len(want_logs)
    for got, want in zip(logs, want_logs):
        assert got["t"] == int(want["timeUnixNano"])
        assert got["sn"] == want["severityNumber"] and got["st"] == want["severityText"]
        if want["body"]["type"] == "string":
            assert got["body"] == want["body"]["value"]
        else:
            assert json.loads(got["body"]) == typed_json(want["body"])
        assert got["trace_id"] == (want["traceId"] or None)
        assert got["span_id"] == (want["spanId"] or None)
        for k, t in want["attributes"].items():
            check_map_value(got["attributes"][k], t, f"log attribute {k}")

    for metric in m["metrics"]:
        rows = serve.sql(f"SELECT metric_type, metric_unit, is_monotonic, \"value\", \"count\", "
                         f"\"sum\", \"min\", \"max\", bucket_counts, explicit_bounds, attributes "
                         f"FROM metrics WHERE {where} AND metric_name = '{metric['name']}'")
        assert rows, metric["name"]
        assert {r["metric_type"] for r in rows} == {metric["type"]}
        assert {r["metric_unit"] for r in rows} == {metric["unit"]}
        for p in metric["points"]:
            match = [r for r in rows if all(r["attributes"].get(k) == t["value"]
                                            for k, t in p["attributes"].items())]
            assert match, (metric["name"], p)
            r = match[-1]  # Cumulative points: the last export holds the totals.
            if metric["type"] in ("sum", "gauge"):
                assert math.isclose(r["value"], p["value"]), (metric["name"], r, p)
                if metric["type"] == "sum":
                    assert r["is_monotonic"] == metric["monotonic"]
            else:
                assert r["count"] == p["count"] and math.isclose(r["sum"], p["sum"])
                assert r["min"] == p["min"] and r["max"] == p["max"]
                assert r["explicit_bounds"] == p["explicitBounds"]
                assert r["bucket_counts"] == p["bucketCounts"]

    # After a flush the same rows are in Parquet, for any hive-partitioned reader.
    assert serve.cmd("flush")["success"]
    n = read_parquet(serve.data, f"SELECT count(*) AS n FROM spans WHERE {where}")
    assert n == [{"n": len(m["spans"])}]
    n = read_parquet(serve.data, f"SELECT count(*) AS n FROM logs WHERE {where}")
    assert n == [{"n": len(m["logs"])}]
    assert serve.sql(f"SELECT count(*) AS n FROM spans WHERE {where}") == [{"n": len(m["spans"])}]


# ---- plain HTTP --------------------------------------------------------------------------------

def test_http_visible_at_once(serve):
    import requests
    body = itlib.payload("traces_512.pb")
    url = f"http://127.0.0.1:{serve.http_port}/v1/traces"
    for i in range(3):
        r = requests.post(url, data=body, headers={"Content-Type": "application/x-protobuf"},
                          timeout=30)
        assert r.status_code == 200, r.text
        # The 200 came after the commit: the SQL that follows finds every row.
        assert serve.sql("SELECT count(*) AS n FROM spans") == [{"n": 512 * (i + 1)}]
    # A body that does not parse is refused and stores nothing.
    r = requests.post(url, data=b"\x0a\x05\x01", headers={"Content-Type": "application/x-protobuf"},
                      timeout=30)
    assert r.status_code == 400
    assert serve.sql("SELECT count(*) AS n FROM spans") == [{"n": 1536}]


def one_span_request(i):
    """OTLP/JSON with one span whose resource carries datalayer.user_uid = h<i>."""
    return json.dumps({"resourceSpans": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "killed"}},
            {"key": "datalayer.user_uid", "value": {"stringValue": f"h{i}"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": f"{i + 1:032x}", "spanId": f"{i + 1:016x}", "name": f"req {i}",
            "startTimeUnixNano": str(1767225600000000000 + i),
            "endTimeUnixNano": str(1767225600000000000 + i + 1000)}]}]}]})


def test_kill9_serve_loses_nothing_acknowledged(tmp_path):
    import requests
    data = tmp_path / "data"
    s = Serve(data, tmp_path, opts=["--retention-days", "0", "--rows-per-file", "50"]).start()
    url = f"http://127.0.0.1:{s.http_port}/v1/traces"
    acked = []
    sent = [0]
    stop = threading.Event()

    def client(first):
        i = first
        sess = requests.Session()
        while not stop.is_set():
            sent[0] = max(sent[0], i + 1)
            try:
                r = sess.post(url, data=one_span_request(i), timeout=10,
                              headers={"Content-Type": "application/json"})
            except requests.RequestException:
                return
            if r.status_code == 200:
                acked.append(i)
            i += 4

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acked) < 300 and time.monotonic() < deadline:
        time.sleep(0.01)
    s.kill()  # SIGKILL, mid-stream: some requests are in the middle of their commit.
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert len(acked) >= 300, itlib.tail(s.log_path)

    # Restarted: recovery, then every acknowledged request's span is there exactly once.
    p = subprocess.run([TOOL, "--retention-days", "0", str(data), "query",
                        "SELECT user_uid AS u, count(*) AS n FROM spans GROUP BY ALL", "--admin",
                        "--cap", "1000000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=120)
    assert p.returncode == 0, p.stderr.decode()
    counts = {r["u"]: r["n"] for r in json.loads(p.stdout)["data"]}
    assert all(n == 1 for n in counts.values()), {u: n for u, n in counts.items() if n != 1}
    lost = [i for i in acked if f"h{i}" not in counts]
    assert not lost, f"acknowledged but lost: {lost[:20]}"
    assert all(int(u[1:]) < sent[0] + 4 for u in counts)
