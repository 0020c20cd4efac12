"""The OpenTelemetry JS SDK and its OTLP exporters (gRPC, HTTP/protobuf, HTTP/JSON) send traces,
metrics and logs to a real `dlotel agent`; everything the app sent must reach the file exporter
exactly as sent: ids, parentage, names, kinds, timestamps, typed attributes, events, links,
status, resource, metric points and log records with their trace context.

js/send.js is the app. It prints a manifest of what it emitted (ids are the SDK's own) and exits
non-zero when any exporter reported a failure.
"""

import json
import os
import subprocess

import pytest

import itlib

SEND_TIMEOUT = 90

CASES = [
    ("grpc", "none"),
    ("http/protobuf", "none"),
    ("http/json", "none"),
    ("grpc", "gzip"),
    ("http/protobuf", "gzip"),
    ("http/json", "gzip"),
]


def run_send(agent, protocol, compression, run_id):
    port = agent.grpc_port if protocol == "grpc" else agent.http_port
    cmd = ["node", os.path.join(itlib.JS_DIR, "send.js"), "--protocol", protocol,
           "--endpoint", f"http://127.0.0.1:{port}", "--run-id", run_id,
           "--compression", compression, "--timeout-ms", "10000"]
    try:
        p = subprocess.run(cmd, cwd=itlib.JS_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=SEND_TIMEOUT, preexec_fn=itlib._die_with_parent)
    except subprocess.TimeoutExpired:
        pytest.fail(f"send.js did not finish in {SEND_TIMEOUT}s; agent log:\n"
                    f"{itlib.tail(agent.log_path)}")
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode == 0, (
        f"the OpenTelemetry SDK reported export failures against dlotel ({protocol}, "
        f"{compression}):\n{err[-6000:]}\n--- agent log:\n{itlib.tail(agent.log_path)}")
    return json.loads(p.stdout)


def ours(resource, run_id):
    a = itlib.attrs(resource.get("attributes"))
    return a.get("dlotel.test.run_id") == {"type": "string", "value": run_id}


def received(agent, manifest):
    run_id = manifest["runId"]
    reqs = agent.requests()
    spans = [(r, s, sp) for r, s, sp in itlib.spans_of(reqs) if ours(r.get("resource", {}), run_id)]
    logs = [(r, s, lr) for r, s, lr in itlib.logs_of(reqs) if ours(r.get("resource", {}), run_id)]
    metrics = [(r, s, m) for r, s, m in itlib.metrics_of(reqs) if ours(r.get("resource", {}), run_id)]
    return spans, logs, metrics


def all_arrived(agent, manifest):
    spans, logs, metrics = received(agent, manifest)
    names = {m["name"] for _, _, m in metrics}
    return (len(spans) >= len(manifest["spans"]) and len(logs) >= len(manifest["logs"]) and
            all(m["name"] in names for m in manifest["metrics"]))


def expect_attrs(got_kvs, want, what):
    got = itlib.attrs(got_kvs)
    want = {k: itlib.norm_typed(v) for k, v in want.items()}
    assert got == want, f"{what}: attributes differ\n got: {got}\n want: {want}"


def check_resource_and_scope(resource, scope, manifest, what):
    got = itlib.attrs(resource.get("attributes"))
    for k, v in manifest["resource"].items():
        assert got.get(k) == itlib.norm_typed(v), f"{what}: resource attribute {k}: {got.get(k)}"
    assert scope.get("scope", {}).get("name") == manifest["scope"]["name"], (what, scope)
    assert scope.get("scope", {}).get("version") == manifest["scope"]["version"], (what, scope)


def check_spans(spans, manifest):
    by_id = {}
    for r, s, sp in spans:
        key = (itlib.hexid(sp.get("traceId")), itlib.hexid(sp.get("spanId")))
        by_id.setdefault(key, []).append((r, s, sp))
    assert len(spans) == len(manifest["spans"]), (
        f"{len(spans)} spans arrived, the app sent {len(manifest['spans'])}")
    for want in manifest["spans"]:
        key = (want["traceId"], want["spanId"])
        got = by_id.get(key, [])
        assert len(got) == 1, f"span {want['name']} {key} arrived {len(got)} times"
        r, s, sp = got[0]
        what = f"span {want['name']} {key}"
        check_resource_and_scope(r.get("resource", {}), s, manifest, what)
        assert sp.get("name") == want["name"], what
        assert sp.get("kind", 0) == want["kind"], f"{what}: kind {sp.get('kind')} != {want['kind']}"
        assert itlib.hexid(sp.get("parentSpanId")) == want["parentSpanId"], (
            f"{what}: parent {sp.get('parentSpanId')!r} != {want['parentSpanId']!r}")
        start, end = itlib.u64(sp.get("startTimeUnixNano")), itlib.u64(sp.get("endTimeUnixNano"))
        assert start > 0 and end >= start, f"{what}: start {start} end {end}"
        assert start == int(want["startTimeUnixNano"]), f"{what}: start {start}"
        assert end == int(want["endTimeUnixNano"]), f"{what}: end {end}"
        expect_attrs(sp.get("attributes"), want["attributes"], what)

        events = sp.get("events") or []
        assert len(events) == len(want["events"]), f"{what}: events {events}"
        for ge, we in zip(events, want["events"]):
            assert ge.get("name") == we["name"], f"{what}: event {ge}"
            assert itlib.u64(ge.get("timeUnixNano")) == int(we["timeUnixNano"]), f"{what}: {ge}"
            expect_attrs(ge.get("attributes"), we["attributes"], f"{what} event {we['name']}")

        links = sp.get("links") or []
        assert len(links) == len(want["links"]), f"{what}: links {links}"
        for gl, wl in zip(links, want["links"]):
            assert itlib.hexid(gl.get("traceId")) == wl["traceId"], f"{what}: link {gl}"
            assert itlib.hexid(gl.get("spanId")) == wl["spanId"], f"{what}: link {gl}"
            expect_attrs(gl.get("attributes"), wl["attributes"], f"{what} link")

        status = sp.get("status") or {}
        assert status.get("code", 0) == want["status"]["code"], f"{what}: status {status}"
        assert (status.get("message") or "") == want["status"]["message"], f"{what}: {status}"

    # Parentage holds inside the trace: every parent span id is a span of the same trace.
    ids = {(s["traceId"], s["spanId"]) for s in manifest["spans"]}
    for s in manifest["spans"]:
        if s["parentSpanId"]:
            assert (s["traceId"], s["parentSpanId"]) in ids, s


def check_logs(logs, spans, manifest):
    assert len(logs) == len(manifest["logs"]), (
        f"{len(logs)} log records arrived, the app sent {len(manifest['logs'])}")
    by_index = {}
    for r, s, lr in logs:
        idx = itlib.attrs(lr.get("attributes")).get("log.index", {}).get("value")
        by_index.setdefault(idx, []).append((r, s, lr))
    span_ids = {(itlib.hexid(sp.get("traceId")), itlib.hexid(sp.get("spanId"))) for _, _, sp in spans}
    for want in manifest["logs"]:
        idx = want["attributes"]["log.index"]["value"]
        got = by_index.get(idx, [])
        assert len(got) == 1, f"log record {idx} arrived {len(got)} times"
        r, s, lr = got[0]
        what = f"log record {idx} ({want['severityText']})"
        check_resource_and_scope(r.get("resource", {}), s, manifest, what)
        assert itlib.any_value(lr.get("body")) == itlib.norm_typed(want["body"]), (
            f"{what}: body {lr.get('body')}")
        assert lr.get("severityNumber", 0) == want["severityNumber"], f"{what}: {lr}"
        assert lr.get("severityText", "") == want["severityText"], f"{what}: {lr}"
        assert itlib.u64(lr.get("timeUnixNano")) == int(want["timeUnixNano"]), f"{what}: {lr}"
        assert itlib.u64(lr.get("observedTimeUnixNano")) > 0, f"{what}: no observed time: {lr}"
        expect_attrs(lr.get("attributes"), want["attributes"], what)
        assert itlib.hexid(lr.get("traceId")) == want["traceId"], f"{what}: trace id {lr}"
        assert itlib.hexid(lr.get("spanId")) == want["spanId"], f"{what}: span id {lr}"
        if want["spanId"]:
            # The record names the span it was emitted in, and that span arrived too.
            assert (want["traceId"], want["spanId"]) in span_ids, what


def point_value(dp):
    if "asInt" in dp:
        return int(dp["asInt"])
    if "asDouble" in dp:
        return float(dp["asDouble"])
    raise AssertionError(f"data point without a value: {dp}")


def check_metrics(metrics, manifest):
    exports = manifest["exported"]["metricExports"]
    for want in manifest["metrics"]:
        got = [(r, s, m) for r, s, m in metrics if m.get("name") == want["name"]]
        # Every successful SDK export carried every (cumulative) metric once.
        assert len(got) == exports, (
            f"metric {want['name']} arrived {len(got)} times, the SDK exported {exports} times")
        for r, s, m in got:
            what = f"metric {want['name']}"
            check_resource_and_scope(r.get("resource", {}), s, manifest, what)
            assert m.get("unit", "") == want["unit"], f"{what}: unit {m.get('unit')}"
            if "description" in want:
                assert m.get("description", "") == want["description"], what
            data = m.get(want["type"])
            assert data is not None, f"{what}: no '{want['type']}' data in {list(m)}"
            if want["type"] == "sum":
                assert data.get("isMonotonic", False) == want["monotonic"], f"{what}: {data}"
                assert data.get("aggregationTemporality", 0) == 2, f"{what}: not cumulative"
            if want["type"] == "histogram":
                assert data.get("aggregationTemporality", 0) == 2, f"{what}: not cumulative"
            points = data.get("dataPoints") or []
            assert len(points) == len(want["points"]), f"{what}: points {points}"
            by_attrs = {json.dumps(itlib.attrs(p.get("attributes")), sort_keys=True): p
                        for p in points}
            for wp in want["points"]:
                key = json.dumps({k: itlib.norm_typed(v) for k, v in wp["attributes"].items()},
                                 sort_keys=True)
                assert key in by_attrs, f"{what}: no point with attributes {key} in {points}"
                p = by_attrs[key]
                assert itlib.u64(p.get("timeUnixNano")) > 0, f"{what}: no time: {p}"
                if want["type"] != "gauge":
                    assert 0 < itlib.u64(p.get("startTimeUnixNano")) <= itlib.u64(
                        p.get("timeUnixNano")), f"{what}: start time {p}"
                if want["type"] == "histogram":
                    assert int(p.get("count", 0)) == wp["count"], f"{what}: count {p}"
                    assert float(p.get("sum")) == pytest.approx(wp["sum"]), f"{what}: sum {p}"
                    assert float(p.get("min")) == wp["min"], f"{what}: min {p}"
                    assert float(p.get("max")) == wp["max"], f"{what}: max {p}"
                    assert [float(b) for b in p.get("explicitBounds") or []] == [
                        float(b) for b in wp["explicitBounds"]], f"{what}: bounds {p}"
                    assert [int(c) for c in p.get("bucketCounts") or []] == wp["bucketCounts"], (
                        f"{what}: buckets {p}")
                else:
                    assert point_value(p) == pytest.approx(wp["value"]), f"{what}: value {p}"


@pytest.mark.parametrize("protocol,compression", CASES,
                         ids=[f"{p.replace('/', '-')}-{c}" for p, c in CASES])
def test_sdk_interop(node_modules, agent, run_id, protocol, compression):
    manifest = run_send(agent, protocol, compression, run_id)
    assert manifest["exported"]["spans"] == len(manifest["spans"]) > 10
    assert manifest["exported"]["logs"] == len(manifest["logs"]) > 3
    assert manifest["exported"]["metricExports"] >= 1

    # The agent answered 200 already; the file exporter may write a moment later.
    agent.wait_requests(lambda _: all_arrived(agent, manifest), timeout=15,
                        what=f"everything send.js sent over {protocol}")
    # Stop first (SIGTERM must exit 0 and flush), then check the complete output, so that a
    # duplicate written late is caught too.
    agent.stop()
    spans, logs, metrics = received(agent, manifest)
    check_spans(spans, manifest)
    check_logs(logs, spans, manifest)
    check_metrics(metrics, manifest)
