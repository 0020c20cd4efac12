"""Processors (issue 9) in a real `dlotel agent`: requests made by the OpenTelemetry JS SDK
(DLOTEL_PAYLOADS_DIR, and js/send.js live) go through each processor kind, configured the three
ways a user can (YAML file, environment JSON, flag JSON), and what the file exporter wrote is
checked item by item.
"""

import copy
import hashlib
import json
import os
import subprocess
import urllib.request

import pytest

import itlib


def post(agent, signal, body, content_type="application/x-protobuf"):
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        content_type = "application/json"
    req = urllib.request.Request(f"{agent.http_url}/v1/{signal}", data=body, method="POST",
                                 headers={"Content-Type": content_type})
    with urllib.request.urlopen(req, timeout=20) as r:
        return r.status, r.read()


def start(tmp_path, yaml=None, env_extra=None, args=()):
    extra = list(args)
    if yaml is not None:
        cfg = tmp_path / "agent.yaml"
        cfg.write_text(yaml)
        extra += ["--config", str(cfg)]
    env = dict(os.environ)
    env.update(env_extra or {})
    return itlib.Agent(tmp_path, extra_args=extra, env=env).start()


def span_list(reqs):
    return [sp for _, _, sp in itlib.spans_of(reqs)]


def traces_json():
    return json.loads(itlib.payload("traces_512.json"))


def stop_and_read(agent):
    agent.stop()
    return agent.requests()


def test_filter_drops_whole_health_traces(tmp_path):
    """Default exclude list: a trace whose server span is a health check goes, children too."""
    agent = start(tmp_path, yaml="processors_traces:\n  - kind: filter\n")
    try:
        req = traces_json()
        spans = [sp for rs in req["resourceSpans"] for ss in rs["scopeSpans"] for sp in ss["spans"]]
        routed = [sp for sp in spans if any(a["key"] == "http.route" for a in sp["attributes"])]
        health = {sp["traceId"] for sp in routed[:3]}
        assert len(health) == 3
        for sp in routed:
            if sp["traceId"] in health:
                for a in sp["attributes"]:
                    if a["key"] == "http.route":
                        a["value"] = {"stringValue": "/healthz"}
                    if a["key"] == "url.path":
                        a["value"] = {"stringValue": "/healthz"}
        dropped = sum(1 for sp in spans if sp["traceId"] in health)
        assert dropped > 3  # the health traces have child spans without a route
        assert post(agent, "traces", req)[0] == 200
        # A request of health checks only is accepted and nothing is exported.
        only = copy.deepcopy(req)
        for rs in only["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                ss["spans"] = [sp for sp in ss["spans"] if sp["traceId"] in health]
        assert post(agent, "traces", only)[0] == 200
        reqs = agent.wait_requests(lambda r: len(span_list(r)) >= 512 - dropped,
                                   what="the filtered traces")
        # The admin port counts what the filter took, per signal.
        text = urllib.request.urlopen(f"http://127.0.0.1:{agent.admin_port}/metrics",
                                      timeout=10).read().decode()
        want = {f'dlotel_processor_items_total{{signal="traces",outcome="filtered"}} {2 * dropped}',
                f'dlotel_processor_items_total{{signal="traces",outcome="in"}} '
                f'{512 + dropped}'}
        assert want <= set(text.splitlines()), text
        assert "dlotel_processor_pending_requests 0" in text.splitlines(), text
        reqs = stop_and_read(agent)
        got = span_list(reqs)
        assert len(got) == 512 - dropped
        assert not {itlib.hexid(sp["traceId"]) for sp in got} & health
    finally:
        agent.kill()


def test_filter_include_list_wins(tmp_path):
    yaml = ("processors_traces:\n  - kind: filter\n    include_urls: \"^/api/(cart|checkout)$\"\n"
            "    exclude_urls: \"/api/cart\"\n")
    agent = start(tmp_path, yaml=yaml)
    try:
        req = traces_json()
        spans = [sp for rs in req["resourceSpans"] for ss in rs["scopeSpans"] for sp in ss["spans"]]

        def route(sp):
            for a in sp["attributes"]:
                if a["key"] in ("http.route", "url.path"):
                    return a["value"]["stringValue"]
            return None

        # Judged: where a request enters a service (a root or a SERVER span) with a URL.
        judged = [sp for sp in spans if route(sp) is not None and
                  (not sp.get("parentSpanId") or sp.get("kind") == 2)]
        good = {sp["traceId"] for sp in judged if route(sp) in ("/api/cart", "/api/checkout")}
        bad = {sp["traceId"] for sp in judged} - good
        want = sum(1 for sp in spans if sp["traceId"] not in bad)
        assert 0 < want < 512
        assert post(agent, "traces", itlib.payload("traces_512.pb"))[0] == 200
        agent.wait_requests(lambda r: len(span_list(r)) >= want, what="included traces")
        got = span_list(stop_and_read(agent))
        assert len(got) == want
        assert any(route(sp) == "/api/cart" for sp in got)  # the include list won
    finally:
        agent.kill()


def test_sample_by_trace_id_env(tmp_path):
    """ratio 0.25 from the environment (JSON); the decision is the spec's, per trace id."""
    chain = json.dumps([{"kind": "sample", "ratio": "0.25"}])
    agent = start(tmp_path, env_extra={"DATALAYER_OTEL_AGENT_PROCESSORS_TRACES": chain})
    try:
        spans = [sp for rs in traces_json()["resourceSpans"] for ss in rs["scopeSpans"]
                 for sp in ss["spans"]]
        threshold = round((1 - 0.25) * 2 ** 56)
        keep = {sp["traceId"] for sp in spans if int(sp["traceId"][18:], 16) >= threshold}
        want = sum(1 for sp in spans if sp["traceId"] in keep)
        assert 0 < want < 512
        body = itlib.payload("traces_512.pb")
        assert post(agent, "traces", body)[0] == 200
        agent.wait_requests(lambda r: len(span_list(r)) >= want, what="sampled spans")
        got = span_list(stop_and_read(agent))
        assert len(got) == want
        assert {itlib.hexid(sp["traceId"]) for sp in got} == keep
    finally:
        agent.kill()
    # A second agent (another host, say) makes the same decisions.
    other = tmp_path / "other"
    other.mkdir()
    agent2 = start(other, env_extra={"DATALAYER_OTEL_AGENT_PROCESSORS_TRACES": chain})
    try:
        assert post(agent2, "traces", body)[0] == 200
        agent2.wait_requests(lambda r: len(span_list(r)) >= want, what="sampled spans")
        assert {itlib.hexid(sp["traceId"]) for sp in span_list(stop_and_read(agent2))} == keep
    finally:
        agent2.kill()


def test_attributes_and_redaction(tmp_path):
    yaml = """
processors_traces:
  - kind: attributes
    targets: [span, event, resource]
    actions:
      - {key: deployment.environment, action: upsert, value: prod}
      - {key: enduser.id, action: hash}
      - {key: client.address, action: delete}
      - {key: server.port, action: update, value: 8443}
    redact_keys: ["user_agent.*", "re:request\\\\.header"]
    redact_values: ["re:SELECT .* FROM users"]
"""
    agent = start(tmp_path, yaml=yaml)
    try:
        src = traces_json()
        by_id = {sp["spanId"]: sp for rs in src["resourceSpans"] for ss in rs["scopeSpans"]
                 for sp in ss["spans"]}
        assert post(agent, "traces", itlib.payload("traces_512.pb"))[0] == 200
        agent.wait_requests(lambda r: len(span_list(r)) >= 512, what="spans")
        reqs = stop_and_read(agent)
        redacted = 0
        for rs, _, sp in itlib.spans_of(reqs):
            a = itlib.attrs(sp.get("attributes"))
            orig = itlib.attrs(by_id[itlib.hexid(sp["spanId"])]["attributes"])
            assert a["deployment.environment"] == {"type": "string", "value": "prod"}
            assert "client.address" not in a
            if "enduser.id" in orig:
                h = hashlib.sha256(orig["enduser.id"]["value"].encode()).hexdigest()
                assert a["enduser.id"] == {"type": "string", "value": h}
            if "server.port" in orig:
                assert a["server.port"] == {"type": "int", "value": "8443"}
            else:
                assert "server.port" not in a
            if "user_agent.original" in orig:
                assert a["user_agent.original"]["value"] == "****"
            q = orig.get("db.query.text", {}).get("value", "")
            if "FROM users" in q and q.startswith("SELECT"):
                assert a["db.query.text"]["value"] == "****"
                redacted += 1
            for ev in sp.get("events") or []:
                ea = itlib.attrs(ev.get("attributes"))
                for k, v in ea.items():
                    if "request.header" in k:
                        assert v["value"] == "****", (k, v)
                assert ea["deployment.environment"]["value"] == "prod"
            ra = itlib.attrs(rs["resource"]["attributes"])
            assert ra["deployment.environment"]["value"] == "prod"
    finally:
        agent.kill()


def test_resource_and_limits_on_logs_flag(tmp_path):
    """Logs from a flag (JSON): resource enrichment and value/count limits with counting."""
    chain = json.dumps([
        {"kind": "resource", "user_uid": "user-77"},
        {"kind": "limits", "max_value_length": 16, "max_attributes": 2},
    ])
    agent = start(tmp_path, args=["--processors-logs", chain])
    try:
        src = json.loads(itlib.payload("logs_512.json"))
        assert post(agent, "logs", itlib.payload("logs_512.pb"))[0] == 200
        agent.wait_requests(lambda r: sum(1 for _ in itlib.logs_of(r)) >= 512, what="logs")
        reqs = stop_and_read(agent)
        orig = [lr for rl in src["resourceLogs"] for sl in rl["scopeLogs"]
                for lr in sl["logRecords"]]
        got = list(itlib.logs_of(reqs))
        assert len(got) == 512
        for (rl, _, lr), o in zip(got, orig):
            ra = itlib.attrs(rl["resource"]["attributes"])
            assert ra["datalayer.user_uid"]["value"] == "user-77"
            assert "host.name" in ra and "service.instance.id" in ra
            attrs = lr.get("attributes") or []
            assert len(attrs) == min(2, len(o.get("attributes") or []))
            extra = max(0, len(o.get("attributes") or []) - 2)
            assert int(lr.get("droppedAttributesCount", 0)) == \
                int(o.get("droppedAttributesCount", 0)) + extra
            for kv in attrs:
                v = itlib.any_value(kv["value"])
                if v["type"] == "string":
                    assert len(v["value"].encode()) <= 16
    finally:
        agent.kill()


def test_filter_metrics_points(tmp_path):
    src = json.loads(itlib.payload("metrics.json"))
    names = [m["name"] for rm in src["resourceMetrics"] for sm in rm["scopeMetrics"]
             for m in sm["metrics"]]
    victim = names[0]
    yaml = f"processors_metrics:\n  - kind: filter\n    drop:\n      - name: \"{victim}\"\n"
    agent = start(tmp_path, yaml=yaml)
    try:
        assert post(agent, "metrics", itlib.payload("metrics.pb"))[0] == 200
        want = {n for n in names if n != victim}
        agent.wait_requests(lambda r: {m["name"] for _, _, m in itlib.metrics_of(r)} >= want,
                            what="metrics")
        got = {m["name"] for _, _, m in itlib.metrics_of(stop_and_read(agent))}
        assert got == want
    finally:
        agent.kill()


@pytest.mark.parametrize("chain,needle", [
    ('[{"kind":"filtr"}]', "processors_traces[0].kind: 'filtr' is not a processor kind"),
    ('[{"kind":"sample","ratio":2}]', "processors_traces[0].ratio: '2' is not a number from 0"),
    ('[{"kind":"filter","exclude_urls":"^(/x"}]',
     "processors_traces[0].exclude_urls: bad regular expression"),
    ('{"kind":"filter"}', "processors_traces: expected a list of processors"),
])
def test_bad_processor_config_refused(tmp_path, chain, needle):
    args = [itlib.dlotel_bin(), "agent", "--grpc-endpoint", "127.0.0.1:0", "--http-endpoint",
            "127.0.0.1:0", "--admin-endpoint", "127.0.0.1:0", "--state-dir",
            str(tmp_path / "state"), "--exporter", "file", "--file-path", str(tmp_path / "o"),
            "--processors-traces", chain]
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30,
                       preexec_fn=itlib._die_with_parent)
    out = p.stdout.decode("utf-8", "replace")
    assert p.returncode == 2, out
    assert needle in out, out


def test_js_sdk_live_through_processors(tmp_path):
    """The OpenTelemetry JS SDK exporting live (http/protobuf) through a chain: every span
    arrives with the inserted attribute, and the SDK sees no export failure."""
    yaml = ("processors_traces:\n  - kind: attributes\n    actions:\n"
            "      - {key: dlotel.processed, action: insert, value: true}\n"
            "processors_logs:\n  - kind: resource\n    user_uid: js-user\n")
    agent = start(tmp_path, yaml=yaml)
    try:
        cmd = ["node", os.path.join(itlib.JS_DIR, "send.js"), "--protocol", "http/protobuf",
               "--endpoint", f"http://127.0.0.1:{agent.http_port}", "--run-id", "proc",
               "--compression", "gzip", "--timeout-ms", "10000"]
        p = subprocess.run(cmd, cwd=itlib.JS_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=90, preexec_fn=itlib._die_with_parent)
        assert p.returncode == 0, p.stderr.decode()[-4000:]
        manifest = json.loads(p.stdout)
        n_spans, n_logs = len(manifest["spans"]), len(manifest["logs"])
        agent.wait_requests(lambda r: len(span_list(r)) >= n_spans and
                            sum(1 for _ in itlib.logs_of(r)) >= n_logs, what="the app's data")
        reqs = stop_and_read(agent)
        spans = span_list(reqs)
        assert len(spans) == n_spans
        for sp in spans:
            assert itlib.attrs(sp["attributes"])["dlotel.processed"] == \
                {"type": "bool", "value": True}
        for rl, _, _ in itlib.logs_of(reqs):
            assert itlib.attrs(rl["resource"]["attributes"])["datalayer.user_uid"]["value"] == \
                "js-user"
    finally:
        agent.kill()


def test_python_typed_config(tmp_path):
    """dlotel.Config's processor builders produce settings the real agent takes (--set)."""
    import sys
    sys.path.insert(0, os.path.join(itlib.HERE, "..", "..", "python"))
    from dlotel.config import Config
    settings = Config.settings(processors_traces=[
        Config.filter_processor(exclude_urls=""),
        Config.attributes_processor(actions=[{"key": "via", "action": "insert",
                                              "value": "python"}]),
        Config.limits_processor(max_attributes=3),
    ])
    args = []
    for k, v in settings:
        args += ["--set", f"{k}={v}"]
    agent = start(tmp_path, args=args)
    try:
        assert post(agent, "traces", itlib.payload("traces_512.pb"))[0] == 200
        agent.wait_requests(lambda r: len(span_list(r)) >= 512, what="spans")
        for sp in span_list(stop_and_read(agent)):
            a = itlib.attrs(sp["attributes"])
            assert len(a) <= 3
    finally:
        agent.kill()
    with pytest.raises(TypeError):
        Config.settings(processors_traces="filter")
