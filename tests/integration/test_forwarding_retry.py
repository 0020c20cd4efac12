"""Forwarding when the upstream says no (issue 3, DESIGN.md section 4): every retry case end to
end, against upstreams that answer with the real protocols' statuses. Retryable answers (HTTP
429 with Retry-After, 502, 503, 504; gRPC UNAVAILABLE, RESOURCE_EXHAUSTED with RetryInfo;
timeouts, refused and dropped connections) end with the batch delivered exactly once; permanent
ones (HTTP 400, 413; gRPC RESOURCE_EXHAUSTED without RetryInfo, INVALID_ARGUMENT) drop it,
counted in /metrics, and the agent carries on. Retry intervals are 100ms..500ms here.
"""

import time

import pytest

import fwdlib
import itlib
import upstreams

N = 20  # spans per test batch


@pytest.fixture
def cleanup():
    things = []
    yield things
    for t in reversed(things):
        if isinstance(t, itlib.Agent):
            if t.alive():
                t.stop()
        else:
            t.close()


def start(tmp_path, cleanup, kind, up, extra=()):
    url = up.url()
    args = fwdlib.exporter_sets("up", kind, url, extra=list(extra)) + ["--batch-timeout", "20ms"]
    a = fwdlib.FwdAgent(tmp_path, args)
    cleanup.append(a)
    return a.start()


def check_retried(agent, up, attempts, signal_name="traces"):
    """The batch was delivered exactly once after |attempts| - 1 retryable failures."""
    up.wait(lambda u: len(u.delivered(signal_name)) >= 1, timeout=20, what="delivery")
    time.sleep(0.3)  # nothing more may come
    assert fwdlib.delivered_seqs(up, signal_name) == list(range(1, N + 1))
    assert len(up.all()) == attempts, up.all()
    m = agent.metrics()
    assert fwdlib.metric_sum(m, "dlotel_exporter_sent_items_total", exporter="up",
                             signal=signal_name) == N
    assert fwdlib.metric_sum(m, "dlotel_exporter_retried_batches_total", exporter="up",
                             signal=signal_name) == attempts - 1
    assert fwdlib.metric_sum(m, "dlotel_exporter_dropped_items_total", exporter="up") == 0
    assert fwdlib.metric_sum(m, "dlotel_exporter_failed_items_total", exporter="up") == 0
    agent.wait_health("ok")


def check_dropped(agent, up, why):
    """The batch was refused for good: one attempt, counted as failed and dropped (permanent),
    logged with the upstream's answer; the next batch goes through."""
    agent.wait_metric("dlotel_exporter_failed_items_total", lambda v: v == N, exporter="up",
                      signal="traces")
    time.sleep(0.5)  # no retry may follow
    assert len(up.all()) == 1, up.all()
    assert up.delivered() == []
    m = agent.metrics()
    assert fwdlib.metric_sum(m, "dlotel_exporter_dropped_items_total", exporter="up",
                             reason="permanent") == N
    assert fwdlib.metric_sum(m, "dlotel_exporter_dropped_items_total", exporter="up") == N
    assert fwdlib.metric_sum(m, "dlotel_exporter_retried_batches_total", exporter="up") == 0
    assert fwdlib.metric_sum(m, "dlotel_exporter_sent_items_total", exporter="up") == 0
    h = agent.healthz()
    assert h["status"] == "degraded" and why in h["exporters"]["up"]["traces"]["last_error"], h
    assert why in itlib.tail(agent.log_path)
    # The agent carries on.
    assert fwdlib.http_post(agent.http_port, "traces", fwdlib.numbered_spans(N + 1, N))[0] == 200
    up.wait(lambda u: fwdlib.delivered_seqs(u, "traces") == list(range(N + 1, 2 * N + 1)),
            timeout=10, what="the next batch")
    agent.wait_health("ok")


def send_batch(agent):
    assert fwdlib.http_post(agent.http_port, "traces", fwdlib.numbered_spans(1, N))[0] == 200


# ---------- OTLP/HTTP ----------

@pytest.mark.parametrize("status,times", [(502, 1), (503, 2), (504, 1)])
def test_http_gateway_errors_are_retried(tmp_path, cleanup, status, times):
    up = upstreams.HttpUpstream()
    cleanup.append(up)
    up.push(*[{"status": status, "body": b"upstream trouble"}] * times)
    agent = start(tmp_path, cleanup, "otlp_http", up)
    send_batch(agent)
    check_retried(agent, up, times + 1)


def test_http_429_waits_for_retry_after(tmp_path, cleanup):
    up = upstreams.HttpUpstream()
    cleanup.append(up)
    up.push({"status": 429, "headers": {"Retry-After": "1"}})
    agent = start(tmp_path, cleanup, "otlp_http", up)
    send_batch(agent)
    check_retried(agent, up, 2)
    first, second = up.all()
    # The backoff here is 100-500 ms: only Retry-After explains a one-second wait.
    assert second.time - first.time >= 0.9, second.time - first.time


@pytest.mark.parametrize("status", [400, 413])
def test_http_permanent_errors_drop_the_batch(tmp_path, cleanup, status):
    up = upstreams.HttpUpstream()
    cleanup.append(up)
    up.push({"status": status})
    agent = start(tmp_path, cleanup, "otlp_http", up)
    send_batch(agent)
    check_dropped(agent, up, str(status))


def test_http_timeout_is_retried(tmp_path, cleanup):
    up = upstreams.HttpUpstream()
    cleanup.append(up)
    up.push({"stall": True})
    agent = start(tmp_path, cleanup, "otlp_http", up, extra=["request_timeout=500ms"])
    send_batch(agent)
    check_retried(agent, up, 2)


def test_http_connection_closed_without_answer_is_retried(tmp_path, cleanup):
    up = upstreams.HttpUpstream()
    cleanup.append(up)
    up.push({"close": True})
    agent = start(tmp_path, cleanup, "otlp_http", up)
    send_batch(agent)
    check_retried(agent, up, 2)


@pytest.mark.parametrize("kind", ["otlp_http", "otlp_grpc"])
def test_connection_refused_is_retried_until_the_upstream_listens(tmp_path, cleanup, kind):
    up = upstreams.HttpUpstream() if kind == "otlp_http" else upstreams.GrpcUpstream()
    cleanup.append(up)
    up.down()
    agent = start(tmp_path, cleanup, kind, up)
    send_batch(agent)
    agent.wait_metric("dlotel_exporter_retried_batches_total", lambda v: v >= 2, exporter="up",
                      signal="traces")
    h = agent.healthz()
    assert h["status"] == "degraded", h
    assert h["exporters"]["up"]["traces"]["upstream_reachable"] is False, h
    up.up()
    up.wait(lambda u: len(u.delivered("traces")) >= 1, timeout=20, what="delivery")
    time.sleep(0.3)
    assert fwdlib.delivered_seqs(up, "traces") == list(range(1, N + 1))
    agent.wait_metric("dlotel_exporter_sent_items_total", lambda v: v == N, exporter="up")
    assert agent.metric("dlotel_exporter_dropped_items_total", exporter="up") == 0
    agent.wait_health("ok")


def test_http_partial_success_is_counted_as_rejected(tmp_path, cleanup):
    up = upstreams.HttpUpstream()
    cleanup.append(up)
    # ExportTraceServiceResponse { partial_success { rejected_spans: 3, error_message } }
    ps = itlib.field_varint(1, 3) + itlib.field_bytes(2, b"3 spans had no name")
    up.push({"status": 200, "body": itlib.field_bytes(1, ps)})
    agent = start(tmp_path, cleanup, "otlp_http", up)
    send_batch(agent)
    agent.wait_metric("dlotel_exporter_rejected_items_total", lambda v: v == 3, exporter="up",
                      signal="traces")
    assert agent.metric("dlotel_exporter_sent_items_total", exporter="up", signal="traces") == N
    assert agent.metric("dlotel_exporter_retried_batches_total", exporter="up") == 0
    assert len(up.all()) == 1


# ---------- OTLP/gRPC ----------

def test_grpc_unavailable_is_retried(tmp_path, cleanup):
    up = upstreams.GrpcUpstream()
    cleanup.append(up)
    up.push({"code": "UNAVAILABLE"}, {"code": "UNAVAILABLE"})
    agent = start(tmp_path, cleanup, "otlp_grpc", up)
    send_batch(agent)
    check_retried(agent, up, 3)


def test_grpc_resource_exhausted_with_retry_info_waits_and_retries(tmp_path, cleanup):
    up = upstreams.GrpcUpstream()
    cleanup.append(up)
    up.push({"code": "RESOURCE_EXHAUSTED", "retry_delay": 1.0, "details": "slow down"})
    agent = start(tmp_path, cleanup, "otlp_grpc", up)
    send_batch(agent)
    check_retried(agent, up, 2)
    first, second = up.all()
    assert second.time - first.time >= 0.9, second.time - first.time


@pytest.mark.parametrize("code", ["RESOURCE_EXHAUSTED", "INVALID_ARGUMENT"])
def test_grpc_permanent_errors_drop_the_batch(tmp_path, cleanup, code):
    """RESOURCE_EXHAUSTED without RetryInfo is not retryable (OTLP specification)."""
    up = upstreams.GrpcUpstream()
    cleanup.append(up)
    up.push({"code": code, "details": f"scripted {code}"})
    agent = start(tmp_path, cleanup, "otlp_grpc", up)
    send_batch(agent)
    check_dropped(agent, up, f"scripted {code}")


def test_grpc_deadline_is_retried(tmp_path, cleanup):
    up = upstreams.GrpcUpstream()
    cleanup.append(up)
    up.push({"stall": True})
    agent = start(tmp_path, cleanup, "otlp_grpc", up, extra=["request_timeout=500ms"])
    send_batch(agent)
    check_retried(agent, up, 2)
