"""Forwarding (issue 3): `dlotel agent` takes OTLP on every receiver transport and delivers it to
upstreams we control that speak the real protocols (Python http.server for OTLP/HTTP, grpcio for
OTLP/gRPC, a second dlotel for gRPC with zstd, which grpcio does not speak), exactly as sent.

Also the command line around it: the default upstream from DATALAYER_RUN_URL and
DATALAYER_API_KEY with an OpenTelemetry SDK app ("done when"), `dlotel config --print/--check`,
SIGUSR1, SIGTERM, the admin endpoint, splitting, isolation of a stalled exporter, the log file.
"""

import collections
import json
import os
import signal
import subprocess
import time

import pytest

import fwdlib
import itlib
import upstreams

PAYLOAD = {s: (itlib.payload(f + ".pb"), itlib.payload(f + ".json"))
           for s, f in (("traces", "traces_512"), ("logs", "logs_512"), ("metrics", "metrics"))}


@pytest.fixture
def cleanup():
    """Closes upstreams and stops agents registered with it, agents first."""
    things = []
    yield things
    for t in reversed(things):
        try:
            if isinstance(t, itlib.Agent):
                if t.alive():
                    t.stop()
            else:
                t.close()
        except Exception:  # noqa: BLE001 - teardown must reach every item
            if isinstance(t, itlib.Agent):
                t.kill()
            raise


def start_agent(tmp_path, name, args, cleanup, env=None, cls=fwdlib.FwdAgent):
    d = tmp_path / name
    d.mkdir()
    a = cls(d, args, env=env)
    cleanup.append(a)
    return a.start()


# ---------- delivered == sent, every transport pair and compression ----------

def test_delivered_equals_sent_for_every_transport_pair(tmp_path, cleanup):
    """Receivers {grpc, http/protobuf, http/json} x exporters {otlp_http, otlp_grpc} x
    compression {none, gzip, zstd}: one agent with six exporters, each to its own upstream (or
    its own path / metadata on a shared one), gets the three real payloads (traces, logs,
    metrics) over each receiver transport. Every exporter must deliver every span, log record
    and metric point three times, with ids and typed attributes as sent, compressed as asked."""
    http_up = upstreams.HttpUpstream()
    cleanup.append(http_up)
    grpc_up = upstreams.GrpcUpstream()
    cleanup.append(grpc_up)
    # grpcio has no zstd: a second dlotel is the gRPC upstream for that one.
    zstd_up = start_agent(tmp_path, "zstd-upstream", [], cleanup, cls=fwdlib.UpstreamAgent)

    args = []
    for comp in ("none", "gzip", "zstd"):
        args += fwdlib.exporter_sets(f"h_{comp}", "otlp_http", http_up.url(f"/h_{comp}"), comp)
    for comp in ("none", "gzip"):
        args += fwdlib.exporter_sets(f"g_{comp}", "otlp_grpc", grpc_up.url(), comp,
                                     extra=[f"headers.x-exporter=g_{comp}"])
    args += fwdlib.exporter_sets("g_zstd", "otlp_grpc", f"http://127.0.0.1:{zstd_up.grpc_port}",
                                 "zstd")
    agent = start_agent(tmp_path, "agent", args, cleanup)

    grpc_client = fwdlib.GrpcClient(agent.grpc_port)
    try:
        for transport in ("grpc", "http/protobuf", "http/json"):
            for sig, (pb, js) in PAYLOAD.items():
                fwdlib.send(agent, transport, sig, pb=pb, js=js, grpc_client=grpc_client)
    finally:
        grpc_client.close()

    expected = {sig: collections.Counter(upstreams.canonical(sig, pb) * 3)
                for sig, (pb, _) in PAYLOAD.items()}
    n_items = {sig: sum(c.values()) for sig, c in expected.items()}
    n_points = {"traces": 512 * 3, "logs": 512 * 3,
                "metrics": upstreams.count_items("metrics", PAYLOAD["metrics"][0]) * 3}

    # otlp_http: by path prefix, each with its Content-Encoding.
    for comp in ("none", "gzip", "zstd"):
        prefix = f"/h_{comp}/v1/"
        for sig in PAYLOAD:
            http_up.wait(lambda u: sum(upstreams.count_items(sig, r.body) for r in u.delivered(sig)
                                       if r.path.startswith(prefix)) >= n_points[sig],
                         timeout=30, what=f"{sig} at h_{comp}")
            recs = [r for r in http_up.delivered(sig) if r.path == prefix + sig]
            got = collections.Counter(x for r in recs for x in upstreams.canonical(sig, r.body))
            assert got == expected[sig], f"h_{comp} {sig}: delivered differs from sent"
            for r in recs:
                want = None if comp == "none" else comp
                assert r.headers.get("content-encoding") == want, (comp, r.headers)
                assert r.headers.get("content-type") == "application/x-protobuf", r.headers
                if comp != "none":
                    assert len(r.raw) < len(r.body) / 2, "the body was labelled, not compressed"

    # otlp_grpc to grpcio: by the x-exporter metadata each exporter adds.
    for comp in ("none", "gzip"):
        for sig in PAYLOAD:
            grpc_up.wait(lambda u: sum(upstreams.count_items(sig, r.body) for r in u.delivered(sig)
                                       if r.headers.get("x-exporter") == f"g_{comp}")
                         >= n_points[sig], timeout=30, what=f"{sig} at g_{comp}")
            recs = [r for r in grpc_up.delivered(sig) if r.headers.get("x-exporter") == f"g_{comp}"]
            got = collections.Counter(x for r in recs for x in upstreams.canonical(sig, r.body))
            assert got == expected[sig], f"g_{comp} {sig}: delivered differs from sent"

    # otlp_grpc with zstd to the second dlotel, which writes OTLP/JSON.
    zstd_up.wait_requests(
        lambda reqs: all(len(upstreams.canonical_json(s, reqs)) >= n_items[s] for s in PAYLOAD),
        timeout=30, what="everything at the zstd upstream")
    reqs = zstd_up.requests()
    for sig in PAYLOAD:
        got = collections.Counter(upstreams.canonical_json(sig, reqs))
        assert got == expected[sig], f"g_zstd {sig}: delivered differs from sent"
    # It really was zstd: the upstream dlotel received far fewer bytes than it decoded.
    up_m = zstd_up.metrics()
    wire = fwdlib.metric_sum(up_m, "dlotel_receiver_bytes_total", receiver="otlp_grpc",
                             outcome="accepted")
    plain = 3 * sum(len(pb) for pb, _ in PAYLOAD.values())
    assert 0 < wire < plain / 2, (wire, plain)

    # The agent's own counters agree.
    m = agent.metrics()
    for sig in PAYLOAD:
        assert fwdlib.metric_sum(m, "dlotel_receiver_items_total", receiver="otlp_grpc",
                                 signal=sig, outcome="accepted") == n_points[sig] / 3
        assert fwdlib.metric_sum(m, "dlotel_receiver_items_total", receiver="otlp_http",
                                 signal=sig, outcome="accepted") == 2 * n_points[sig] / 3
        for e in ("h_none", "h_gzip", "h_zstd", "g_none", "g_gzip", "g_zstd"):
            agent.wait_metric("dlotel_exporter_sent_items_total", lambda v: v == n_points[sig],
                              exporter=e, signal=sig)
            assert fwdlib.metric_sum(m, "dlotel_exporter_dropped_items_total", exporter=e) == 0
    agent.wait_health("ok")


# ---------- the default upstream, as a new user gets it ----------

def new_user_env(tmp_path, run_url, api_key):
    """Only DATALAYER_RUN_URL and DATALAYER_API_KEY, and a fresh HOME (so the default state
    directory is the new user's, not the developer's)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in upstreams.env_without_datalayer().items()
           if not k.startswith("XDG_")}
    env.update({"HOME": str(home), "DATALAYER_RUN_URL": run_url, "DATALAYER_API_KEY": api_key})
    return env


def test_new_user_sdk_app_reaches_the_platform(tmp_path, cleanup, run_id, node_modules):
    """DESIGN.md section 3 and issue 3's "done when": with only DATALAYER_RUN_URL and
    DATALAYER_API_KEY set, `dlotel agent` forwards an OpenTelemetry SDK app's telemetry to
    $DATALAYER_RUN_URL/api/otel/v1/otlp/v1/{traces,metrics,logs} with the key as a Bearer
    token, gzip-compressed by default."""
    up = upstreams.HttpUpstream()
    cleanup.append(up)
    key = "dl-key-" + run_id
    env = new_user_env(tmp_path, up.url(), key)
    p = subprocess.Popen(
        [itlib.dlotel_bin(), "agent", "--grpc-endpoint", "127.0.0.1:0", "--http-endpoint",
         "127.0.0.1:0", "--admin-endpoint", "127.0.0.1:0", "--ready-file",
         str(tmp_path / "ready.json")], env=env, stdout=open(tmp_path / "agent.log", "wb"),
        stderr=subprocess.STDOUT, preexec_fn=itlib._die_with_parent)
    try:
        deadline = time.monotonic() + itlib.READY_TIMEOUT
        while not (tmp_path / "ready.json").exists():
            assert p.poll() is None, itlib.tail(tmp_path / "agent.log")
            assert time.monotonic() < deadline, itlib.tail(tmp_path / "agent.log")
            time.sleep(0.02)
        ready = json.loads((tmp_path / "ready.json").read_text())
        cmd = ["node", os.path.join(itlib.JS_DIR, "send.js"), "--protocol", "http/protobuf",
               "--endpoint", f"http://127.0.0.1:{ready['http_port']}", "--run-id", run_id]
        s = subprocess.run(cmd, cwd=itlib.JS_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=90, preexec_fn=itlib._die_with_parent)
        assert s.returncode == 0, s.stderr.decode()[-4000:]
        manifest = json.loads(s.stdout)
        want_spans = {(sp["traceId"], sp["spanId"]) for sp in manifest["spans"]}
        want_logs = len(manifest["logs"])

        def arrived(u):
            got = {upstreams.span_key(x) for r in u.delivered("traces") for x in
                   upstreams.spans(r.body)}
            nlogs = sum(len(upstreams.logs(r.body)) for r in u.delivered("logs"))
            return want_spans <= got and nlogs >= want_logs and u.delivered("metrics")

        up.wait(arrived, timeout=30, what="the SDK app's spans, logs and metrics")
        for r in up.delivered():
            assert r.path == f"/api/otel/v1/otlp/v1/{r.signal}", r.path
            assert r.headers.get("authorization") == f"Bearer {key}", "no Bearer token"
            assert r.headers.get("content-encoding") == "gzip", r.headers
        got_spans = [x for r in up.delivered("traces") for x in upstreams.spans(r.body)]
        by_id = {upstreams.span_key(x): x for x in got_spans}
        for sp in manifest["spans"]:
            g = by_id[(sp["traceId"], sp["spanId"])]
            assert g["name"] == sp["name"] and g["parentSpanId"] == sp["parentSpanId"], (g, sp)
            want_attrs = {k: itlib.norm_typed(v) for k, v in sp["attributes"].items()}
            assert g["attributes"] == want_attrs, (g["attributes"], want_attrs)
        # The key is never in the log.
        log = (tmp_path / "agent.log").read_bytes()
        assert key.encode() not in log
        # The default disk queue lives under the new user's state directory.
        assert (tmp_path / "home" / ".local" / "state" / "dlotel" / "queue" / "datalayer").is_dir()
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=15) == 0, itlib.tail(tmp_path / "agent.log")


# ---------- the command line ----------

def test_config_print_masks_secrets_and_check_reports_everything(tmp_path):
    env = new_user_env(tmp_path, "https://prod1.datalayer.run", "s3cr3t-api-key")
    env["DATALAYER_OTEL_AGENT_EXPORTER_UP_TYPE"] = "otlp_grpc"
    env["DATALAYER_OTEL_AGENT_EXPORTER_UP_ENDPOINT"] = "http://collector.example:4317"
    env["DATALAYER_OTEL_AGENT_EXPORTER_UP_HEADERS"] = (
        "authorization=Bearer tok3n-value,x-tenant=acme")
    rc, out, err = fwdlib.run(["config", "--print"], env=env)
    assert rc == 0, err
    assert "s3cr3t-api-key" not in out + err and "tok3n-value" not in out + err
    assert "***" in out
    assert "acme" in out and "http://collector.example:4317" in out
    assert "env DATALAYER_RUN_URL" in out

    # Only the default upstream: its Authorization header is masked too.
    env2 = new_user_env(tmp_path, "https://prod1.datalayer.run", "s3cr3t-api-key")
    rc, out, err = fwdlib.run(["config", "--print", "--grpc-endpoint", "127.0.0.1:0"], env=env2)
    assert rc == 0, err
    assert "s3cr3t-api-key" not in out
    assert "https://prod1.datalayer.run/api/otel/v1/otlp" in out
    assert '"127.0.0.1:0"' in out and "# flag" in out

    rc, out, err = fwdlib.run(["config", "--check"], env=env2)
    assert rc == 0 and "configuration OK" in err, (rc, err)

    # Every problem at once, exit 2, and the agent refuses to start with the same inputs.
    bad = ["--set", "exporters.datalayer.compression=brotli", "--set", "batch.timout=1s",
           "--batch-max-size", "0"]
    rc, out, err = fwdlib.run(["config", "--check"] + bad, env=env2)
    assert rc == 2, (rc, err)
    assert "brotli" in err and "timout" in err and "did you mean" in err and "max_size" in err, err
    rc, out, err = fwdlib.run(["agent", "--grpc-endpoint", "127.0.0.1:0", "--http-endpoint",
                               "127.0.0.1:0", "--admin-endpoint", "127.0.0.1:0"] + bad, env=env2)
    assert rc == 2 and "brotli" in err and "nothing was started" in err, (rc, err)

    # An upstream that is the agent itself is refused.
    env3 = upstreams.env_without_datalayer()
    env3["HOME"] = str(tmp_path)
    env3["DATALAYER_OTLP_URL"] = "http://localhost:4318"
    rc, out, err = fwdlib.run(["config", "--check"], env=env3)
    assert rc == 2 and "4318" in err, (rc, err)

    # Nothing to send to: says what to set.
    env4 = upstreams.env_without_datalayer()
    env4["HOME"] = str(tmp_path)
    rc, out, err = fwdlib.run(["agent"], env=env4)
    assert rc == 2 and "DATALAYER_RUN_URL" in err, (rc, err)

    # Usage errors are 2 as well; help and version are 0.
    assert fwdlib.run(["agent", "--no-such-flag"])[0] == 2
    assert fwdlib.run(["config"])[0] == 2
    rc, out, _ = fwdlib.run(["help"])
    assert rc == 0 and "--batch-timeout" in out and "config --print" in out
    rc, out, _ = fwdlib.run(["version"])
    assert rc == 0 and out.startswith("dlotel ")
    rc, out, _ = fwdlib.run(["serve", "--help"])
    assert rc == 0, out


def test_disabled_agent_exits_0_without_listening(tmp_path):
    for var, value in (("OTEL_SDK_DISABLED", "true"), ("DATALAYER_OTEL_AGENT_ENABLED", "false")):
        env = new_user_env(tmp_path, "https://prod1.datalayer.run", "k")
        env[var] = value
        ready = tmp_path / "ready.json"
        rc, out, err = fwdlib.run(["agent", "--ready-file", str(ready)], env=env, timeout=10)
        assert rc == 0, err
        assert "disabled" in err and not ready.exists()


def test_agent_with_sink_forwards_and_stores(tmp_path, cleanup):
    """`dlotel agent --sink` beside an upstream exporter: the same spans go upstream and into the
    local store, and the client's 200 comes after the sink's commit."""
    up = upstreams.HttpUpstream()
    cleanup.append(up)
    args = fwdlib.exporter_sets("up", "otlp_http", up.url()) + [
        "--sink", "--set", f"sink.data_dir={tmp_path / 'data'}"]
    agent = start_agent(tmp_path, "agent", args, cleanup)
    status, _, _ = fwdlib.http_post(agent.http_port, "traces", fwdlib.numbered_spans(1, 25))
    assert status == 200
    # Acknowledged means committed: the sink's count is there as soon as the 200 is.
    assert agent.metric("dlotel_exporter_sent_items_total", exporter="sink", signal="traces") == 25
    up.wait_items("traces", 25, timeout=10)
    assert fwdlib.delivered_seqs(up, "traces") == list(range(1, 26))
    assert "libduckdb" in open(f"/proc/{agent.proc.pid}/maps").read()


# ---------- signals ----------

def test_sigusr1_flushes_a_partial_batch(tmp_path, cleanup):
    up = upstreams.HttpUpstream()
    cleanup.append(up)
    args = fwdlib.exporter_sets("up", "otlp_http", up.url()) + ["--batch-timeout", "1h"]
    agent = start_agent(tmp_path, "agent", args, cleanup)
    status, _, _ = fwdlib.http_post(agent.http_port, "traces", fwdlib.numbered_spans(1, 10))
    assert status == 200
    time.sleep(1.0)
    assert up.delivered() == [], "a batch went out before batch.timeout without a flush"
    t0 = time.monotonic()
    agent.signal(signal.SIGUSR1)
    up.wait_items("traces", 10, timeout=5)
    assert time.monotonic() - t0 < 3
    assert fwdlib.delivered_seqs(up, "traces") == list(range(1, 11))
    assert agent.alive()


def test_sigterm_sends_what_is_queued_then_exits_0(tmp_path, cleanup):
    """A partial batch waiting for batch.timeout (1h) is sent by the drain, before exit."""
    up = upstreams.HttpUpstream()
    cleanup.append(up)
    args = fwdlib.exporter_sets("up", "otlp_http", up.url()) + ["--batch-timeout", "1h"]
    agent = start_agent(tmp_path, "agent", args, cleanup)
    for i in range(5):
        assert fwdlib.http_post(agent.http_port, "traces",
                                fwdlib.numbered_spans(1 + 100 * i, 100))[0] == 200
    assert up.delivered() == []
    t0 = time.monotonic()
    agent.stop()
    assert time.monotonic() - t0 < 5
    assert sorted(fwdlib.delivered_seqs(up, "traces")) == list(range(1, 501))
    log = itlib.tail(agent.log_path)
    assert "drained: every queue is empty" in log, log


def test_sigterm_drain_is_bounded_by_shutdown_timeout(tmp_path, cleanup):
    """The upstream accepts connections and never answers: the drain gives up after
    shutdown_timeout and the agent exits 0, keeping the batch on disk. A second SIGTERM while
    draining exits at once."""
    up = upstreams.HttpUpstream()
    cleanup.append(up)
    up.stall()
    args = fwdlib.exporter_sets("up", "otlp_http", up.url(), extra=["request_timeout=60s"])
    agent = start_agent(tmp_path, "agent", args + ["--shutdown-timeout", "1s"], cleanup)
    assert fwdlib.http_post(agent.http_port, "traces", fwdlib.numbered_spans(1, 50))[0] == 200
    up.wait(lambda u: len(u.all()) >= 1, timeout=10, what="the stalled attempt")
    t0 = time.monotonic()
    agent.stop()  # asserts exit code 0 and a clean log
    took = time.monotonic() - t0
    assert 0.9 < took < 4.0, f"drain took {took:.2f}s with shutdown_timeout 1s"
    assert "shutdown_timeout (1000 ms) passed" in itlib.tail(agent.log_path)

    # Second run on the same queue: a second SIGTERM cuts the drain short.
    agent2 = fwdlib.FwdAgent(agent.workdir, args + ["--shutdown-timeout", "30s"])
    cleanup.append(agent2)
    agent2.start()
    up.wait(lambda u: len(u.all()) >= 2, timeout=10, what="the recovered batch's attempt")
    agent2.signal(signal.SIGTERM)
    time.sleep(0.3)
    assert agent2.alive(), "the first SIGTERM must drain, not exit"
    t0 = time.monotonic()
    agent2.signal(signal.SIGTERM)
    rc = agent2.proc.wait(timeout=5)
    agent2.returncode = rc
    agent2.log.close()
    assert time.monotonic() - t0 < 2
    assert rc == 1, rc
    assert "second SIGTERM while draining" in itlib.tail(agent2.log_path)

    # What was acknowledged is still on disk: a third run delivers it once the upstream answers.
    up.stall(False)
    agent3 = fwdlib.FwdAgent(agent.workdir, args)
    cleanup.append(agent3)
    agent3.start()
    up.wait(lambda u: sorted(fwdlib.delivered_seqs(u, "traces")) == list(range(1, 51)),
            timeout=15, what="the 50 spans")


# ---------- admin endpoint ----------

def test_admin_endpoint(tmp_path, cleanup):
    up = upstreams.HttpUpstream()
    cleanup.append(up)
    agent = start_agent(tmp_path, "agent", fwdlib.exporter_sets("up", "otlp_http", up.url()),
                        cleanup)
    status, headers, body = agent.admin_get("/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = fwdlib.parse_prometheus(body.decode())  # checks HELP/TYPE and syntax
    names = {n for n, _, _ in samples}
    for want in ("dlotel_build_info", "dlotel_process_resident_memory_bytes",
                 "dlotel_receiver_requests_total", "dlotel_receiver_items_total",
                 "dlotel_exporter_sent_items_total", "dlotel_exporter_failed_items_total",
                 "dlotel_exporter_retried_batches_total", "dlotel_exporter_dropped_items_total",
                 "dlotel_exporter_rejected_items_total", "dlotel_exporter_queue_items",
                 "dlotel_exporter_queue_bytes", "dlotel_exporter_disk_bytes",
                 "dlotel_exporter_in_flight_batches"):
        assert want in names, want
    version = fwdlib.run(["version"])[1].split()[1]
    assert fwdlib.metric_sum(samples, "dlotel_build_info", version=version) == 1
    assert fwdlib.metric_sum(samples, "dlotel_process_resident_memory_bytes") > 1 << 20
    assert agent.admin_get("/nope")[0] == 404
    assert agent.admin_get("/metrics", method="POST")[0] == 405
    assert agent.admin_get("/healthz", method="DELETE")[0] == 405
    h = agent.healthz()
    assert h["status"] == "ok" and h["version"] and h["uptime_s"] >= 0
    assert set(h["receivers"]) == {"otlp_grpc", "otlp_http"}
    assert set(h["exporters"]["up"]) >= {"traces", "metrics", "logs", "kind", "queue"}

    # A refused request is counted by reason; a permanent upstream failure makes it degraded.
    assert fwdlib.http_post(agent.http_port, "traces", b"\xff\xff")[0] == 400
    up.push({"status": 400, "body": b""})
    assert fwdlib.http_post(agent.http_port, "traces", fwdlib.numbered_spans(1, 3))[0] == 200
    agent.wait_metric("dlotel_exporter_failed_items_total", lambda v: v == 3, exporter="up",
                      signal="traces")
    assert agent.metric("dlotel_receiver_requests_total", receiver="otlp_http", signal="traces",
                        outcome="invalid") == 1
    h = agent.healthz()
    assert h["status"] == "degraded", h
    t = h["exporters"]["up"]["traces"]
    assert t["upstream_reachable"] is False and "400" in t["last_error"], t
    assert fwdlib.http_post(agent.http_port, "traces", fwdlib.numbered_spans(4, 3))[0] == 200
    up.wait_items("traces", 3, timeout=10)
    agent.wait_metric("dlotel_exporter_sent_items_total", lambda v: v == 3, exporter="up",
                      signal="traces")
    h = agent.healthz()
    assert h["status"] == "ok" and h["exporters"]["up"]["traces"]["upstream_reachable"] is True


# ---------- splits, isolation ----------

@pytest.mark.parametrize("queue", ["disk", "memory"])
def test_20mib_request_is_split_and_arrives_complete(tmp_path, cleanup, queue):
    """A 20 MiB request with batch.max_bytes 1MiB: every span arrives, in batches of at most
    1 MiB, for a disk queue (split when read back) and a memory queue (split at submit)."""
    up = upstreams.HttpUpstream()
    cleanup.append(up)
    extra = ["disk_queue.enabled=false"] if queue == "memory" else []
    args = fwdlib.exporter_sets("up", "otlp_http", up.url(), extra=extra) + [
        "--batch-max-bytes", "1MiB", "--set", "queue.memory_max_bytes=256MiB", "--set",
        "exporters.up.memory_queue_max_bytes=128MiB"]
    agent = start_agent(tmp_path, "agent", args, cleanup)
    n = 19000
    body = fwdlib.numbered_spans(1, n, pad=1000)
    assert 19 * itlib.MiB < len(body) <= itlib.HTTP_BODY_LIMIT, len(body)
    status, _, resp = fwdlib.http_post(agent.http_port, "traces", body)
    assert status == 200, resp
    up.wait_items("traces", n, timeout=60)
    recs = up.delivered("traces")
    assert len(recs) >= 20
    assert all(len(r.body) <= itlib.MiB for r in recs), max(len(r.body) for r in recs)
    got = fwdlib.delivered_seqs(up, "traces")
    assert sorted(got) == list(range(1, n + 1))
    fwdlib.assert_in_order(up, "traces")


def test_stalled_exporter_does_not_delay_another(tmp_path, cleanup):
    """Exporter `slow` talks to an upstream that accepts and never answers; exporter `fast`
    keeps delivering every request within a second, and the receivers keep answering at once."""
    slow = upstreams.HttpUpstream()
    cleanup.append(slow)
    slow.stall()
    fast = upstreams.HttpUpstream()
    cleanup.append(fast)
    args = (fwdlib.exporter_sets("slow", "otlp_http", slow.url(), extra=["request_timeout=60s"]) +
            fwdlib.exporter_sets("fast", "otlp_http", fast.url()) + ["--batch-timeout", "50ms"])
    agent = start_agent(tmp_path, "agent", args, cleanup)
    worst = 0.0
    for i in range(10):
        t0 = time.monotonic()
        assert fwdlib.http_post(agent.http_port, "traces",
                                fwdlib.numbered_spans(1 + 10 * i, 10))[0] == 200
        assert time.monotonic() - t0 < 0.5, "the receiver waited for an exporter"
        fast.wait_items("traces", 10 * (i + 1), timeout=5)
        worst = max(worst, time.monotonic() - t0)
        time.sleep(0.1)
    assert worst < 1.5, f"fast exporter took {worst:.2f}s while the other was stalled"
    assert sorted(fwdlib.delivered_seqs(fast, "traces")) == list(range(1, 101))
    assert slow.delivered() == [] and len(slow.all()) >= 1
    assert agent.metric("dlotel_exporter_in_flight_batches", exporter="slow") >= 1
    slow.stall(False)


# ---------- logging ----------

def test_log_file_json_rotation_and_no_secrets(tmp_path, cleanup):
    up = upstreams.HttpUpstream()
    cleanup.append(up)
    log_file = tmp_path / "agent-json.log"
    secret = "Bearer n0t-in-the-log"
    args = fwdlib.exporter_sets("up", "otlp_http", up.url(),
                                extra=[f"headers.authorization={secret}"]) + [
        "--log-file", str(log_file), "--log-format", "json", "--log-level", "debug",
        "--set", "log.max_size=64KiB"]
    agent = start_agent(tmp_path, "agent", args, cleanup)
    pb = fwdlib.numbered_spans(1, 5)
    for _ in range(1000):
        assert fwdlib.http_post(agent.http_port, "traces", pb)[0] == 200
    up.wait_items("traces", 5000, timeout=30)
    agent.stop()
    rotated = tmp_path / "agent-json.log.1"
    assert rotated.exists(), "the log was not rotated at log.max_size"
    for f in (rotated, log_file):
        data = f.read_bytes()
        assert len(data) <= 64 * 1024 + 4096, (f, len(data))
        assert b"n0t-in-the-log" not in data
        for line in data.decode().splitlines():
            rec = json.loads(line)
            assert set(rec) >= {"time", "level", "message"}, rec
    assert up.delivered()[0].headers.get("authorization") == secret


def test_receiver_limits_come_from_the_configuration(tmp_path, cleanup):
    """receivers.grpc_max_message_size and receivers.http_max_body_size are the receivers'
    limits, below and above the defaults (4 MiB, 20 MiB), counted as too_large when passed."""
    up = upstreams.HttpUpstream()
    cleanup.append(up)
    args = fwdlib.exporter_sets("up", "otlp_http", up.url()) + [
        "--set", "receivers.grpc_max_message_size=6MiB",
        "--set", "receivers.http_max_body_size=64KiB"]
    agent = start_agent(tmp_path, "agent", args, cleanup)
    small = fwdlib.numbered_spans(1, 10)
    big_http = fwdlib.numbered_spans(100, 100, pad=1000)  # ~100 KiB
    status, _, body = fwdlib.http_post(agent.http_port, "traces", big_http)
    assert status == 413, status
    assert b"65536" in body, body
    assert fwdlib.http_post(agent.http_port, "traces", small)[0] == 200
    # 5 MiB over gRPC: past the default 4 MiB, within the configured 6 MiB.
    big_grpc = fwdlib.numbered_spans(1000, 5000, pad=1000)
    assert 4 * itlib.MiB < len(big_grpc) < 6 * itlib.MiB
    c = fwdlib.GrpcClient(agent.grpc_port)
    try:
        c.export("traces", big_grpc)
        with pytest.raises(Exception) as e:
            c.export("traces", fwdlib.numbered_spans(1, 6500, pad=1000))
        assert e.value.code().name == "RESOURCE_EXHAUSTED", e.value
        assert "6291456" in e.value.details(), e.value.details()
    finally:
        c.close()
    up.wait_items("traces", 5010, timeout=30)
    m = agent.metrics()
    assert fwdlib.metric_sum(m, "dlotel_receiver_requests_total", receiver="otlp_http",
                             outcome="too_large") == 1
    assert fwdlib.metric_sum(m, "dlotel_receiver_requests_total", receiver="otlp_grpc",
                             outcome="too_large") == 1


def test_two_agents_never_share_a_disk_queue(tmp_path, cleanup):
    up = upstreams.HttpUpstream()
    cleanup.append(up)
    args = fwdlib.exporter_sets("up", "otlp_http", up.url())
    first = start_agent(tmp_path, "agent", args, cleanup)
    rc, out, err = fwdlib.run(["agent", "--grpc-endpoint", "127.0.0.1:0", "--http-endpoint",
                               "127.0.0.1:0", "--admin-endpoint", "127.0.0.1:0", "--state-dir",
                               first.state_dir] + args, timeout=20)
    assert rc == 1, (rc, err)
    assert "in use by another dlotel agent" in err and f"pid {first.proc.pid}" in err, err
    first.assert_alive()
